#include "cf_test.h"

#include <math.h>

#include "confide/core.h"
#include "confide/io.h"
#include "io/gen_int.h"

#define DAY_US INT64_C(86400000000)

/* ---- helpers ------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * UINT64_C(0x100000001B3);
    }
    return h;
}

static uint64_t hash_event(uint64_t h, const cf_event *e)
{
    h = fnv(h, &e->event_id, sizeof(e->event_id));
    h = fnv(h, &e->ts_us, sizeof(e->ts_us));
    h = fnv(h, &e->amount_minor, sizeof(e->amount_minor));
    h = fnv(h, e->account, strlen(e->account));
    h = fnv(h, e->merchant, strlen(e->merchant));
    h = fnv(h, e->currency, 3);
    h = fnv(h, e->country, 2);
    h = fnv(h, &e->type, 1);
    h = fnv(h, &e->channel, 1);
    h = fnv(h, &e->fraud, 1);
    h = fnv(h, &e->fraud_scenario, 1);
    return h;
}

/* Hash of the whole stream; also returns the event count. */
static uint64_t stream_hash(const cf_gen_opts *o, uint64_t *count)
{
    cf_gen *g = NULL;
    char err[256];
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    *count = 0;
    if (cf_gen_create(&g, o, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cf_gen_create: %s\n", err);
        return 0;
    }
    cf_event e;
    while (cf_gen_next(g, &e) == CF_OK) {
        h = hash_event(h, &e);
        (*count)++;
    }
    cf_gen_destroy(g);
    return h;
}

static uint32_t id_of(const char *s)
{
    return (uint32_t)strtoul(s + 1, NULL, 10);
}

static int64_t abs64(int64_t v)
{
    return v < 0 ? -v : v;
}

/* All events of one run, in a growing array (test code: plain malloc). */
typedef struct {
    cf_event *ev;
    size_t n, cap;
} evlist;

static bool collect(const cf_gen_opts *o, evlist *l)
{
    cf_gen *g = NULL;
    char err[256];
    memset(l, 0, sizeof(*l));
    if (cf_gen_create(&g, o, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cf_gen_create: %s\n", err);
        return false;
    }
    cf_event e;
    cf_err rc;
    while ((rc = cf_gen_next(g, &e)) == CF_OK) {
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 4096;
            l->ev = realloc(l->ev, l->cap * sizeof(*l->ev));
            if (l->ev == NULL) {
                cf_gen_destroy(g);
                return false;
            }
        }
        l->ev[l->n++] = e;
    }
    cf_gen_destroy(g);
    return rc == CF_E_EOF;
}

/* ---- generator ----------------------------------------------------------------------- */

static void test_gen_determinism(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 300;
    o.terminals = 600;
    o.days = 3;
    o.seed = 42;
    uint64_t n1, n2, n3;
    uint64_t h1 = stream_hash(&o, &n1);
    uint64_t h2 = stream_hash(&o, &n2);
    CHECK(n1 > 1000);
    CHECK_EQ(n1, n2);
    CHECK(h1 == h2);
    o.seed = 43;
    uint64_t h3 = stream_hash(&o, &n3);
    CHECK(h3 != h1);
    /* A longer run starts with the same days: the stream does not depend on its length. */
    o.seed = 42;
    o.days = 1;
    uint64_t n_day1;
    (void)stream_hash(&o, &n_day1);
    o.days = 2;
    cf_gen *g = NULL;
    REQUIRE(cf_gen_create(&g, &o, NULL, 0) == CF_OK);
    cf_event e;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (uint64_t i = 0; i < n_day1; i++) {
        REQUIRE(cf_gen_next(g, &e) == CF_OK);
        h = hash_event(h, &e);
    }
    cf_gen_destroy(g);
    o.days = 1;
    uint64_t n_again;
    CHECK(h == stream_hash(&o, &n_again));
}

static void test_gen_time_order(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 400;
    o.terminals = 800;
    o.days = 4;
    o.start_us = INT64_C(1700000000) / 86400 * 86400 * 1000000;
    evlist l;
    REQUIRE(collect(&o, &l));
    REQUIRE(l.n > 2000);
    uint64_t per_day[4] = {0}, last_us = 0;
    for (size_t i = 0; i < l.n; i++) {
        const cf_event *e = &l.ev[i];
        CHECK_EQ(e->event_id, i);
        if (i > 0 && e->ts_us < l.ev[i - 1].ts_us) {
            CHECK(e->ts_us >= l.ev[i - 1].ts_us);
            break;
        }
        REQUIRE(e->ts_us >= o.start_us && e->ts_us < o.start_us + 4 * DAY_US);
        per_day[(e->ts_us - o.start_us) / DAY_US]++;
        /* Times past midnight are dropped (as in the handbook), not piled onto 23:59:59. */
        last_us += (e->ts_us - o.start_us) % DAY_US >= DAY_US - 1000000;
        CHECK(e->account[0] == 'C' && id_of(e->account) < o.customers);
        CHECK(e->merchant[0] == 'T' && id_of(e->merchant) < o.terminals);
        CHECK(cf_currency_valid(e->currency, 3));
        CHECK(cf_currency_exponent(e->currency) == 2);
        CHECK(cf_country_valid(e->country, 2));
        CHECK(e->fraud == 0 || e->fraud == 1);
        CHECK(e->fraud_scenario >= 0 && e->fraud_scenario <= 3);
        CHECK((e->fraud == 1) == (e->fraud_scenario != 0));
        switch (e->channel) {
        case CF_CH_ATM:
            CHECK_EQ(e->type, CF_TX_CASH_OUT);
            break;
        case CF_CH_P2P:
            CHECK_EQ(e->type, CF_TX_TRANSFER);
            break;
        case CF_CH_POS:
        case CF_CH_ECOM:
            CHECK(e->type == CF_TX_PAYMENT || e->type == CF_TX_REFUND);
            break;
        default:
            CHECK(!"unexpected channel");
        }
        CHECK(e->type == CF_TX_REFUND ? e->amount_minor <= 0 : e->amount_minor >= 0);
    }
    for (int d = 0; d < 4; d++) {
        CHECK(per_day[d] > 0);
    }
    CHECK(last_us <= 2);
    free(l.ev);
}

/* Per-customer counts and amounts match each hidden profile (chapter 3.2's distributions). */
static void test_gen_customer_stats(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 200;
    o.terminals = 2000;
    o.days = 40;
    o.seed = 7;
    cf_gen *g = NULL;
    REQUIRE(cf_gen_create(&g, &o, NULL, 0) == CF_OK);
    static uint64_t cnt[200];
    static double sum[200], sum2[200];
    memset(cnt, 0, sizeof(cnt));
    memset(sum, 0, sizeof(sum));
    memset(sum2, 0, sizeof(sum2));
    cf_event e;
    uint64_t n = 0, whole_units = 0;
    while (cf_gen_next(g, &e) == CF_OK) {
        n++;
        whole_units += e.amount_minor % 100 == 0;
        if (e.fraud_scenario == 3) {
            continue; /* amount was multiplied by 5 */
        }
        uint32_t c = id_of(e.account);
        REQUIRE(c < 200);
        double a = (double)abs64(e.amount_minor) / 100.0;
        cnt[c]++;
        sum[c] += a;
        sum2[c] += a * a;
    }
    /* Cents are kept: only about 1 amount in 100 is a whole number of units. */
    CHECK(whole_units * 20 < n);
    int checked = 0;
    for (uint32_t c = 0; c < 200; c++) {
        cf__gen_customer p;
        REQUIRE(cf__gen_customer_get(g, c, &p) == CF_OK);
        CHECK(p.mean_amount >= 5 && p.mean_amount <= 100);
        CHECK(fabs(p.std_amount - p.mean_amount / 2) < 1e-9);
        CHECK(p.mean_nb_tx_per_day >= 0 && p.mean_nb_tx_per_day <= 4);
        /* Expected count: Poisson(lambda) a day, 96.9% of times inside the day. */
        double expect = p.mean_nb_tx_per_day * o.days * 0.9693;
        if (p.n_terminals == 0) {
            CHECK_EQ(cnt[c], 0);
            continue;
        }
        CHECK(fabs((double)cnt[c] - expect) <= 5 * sqrt(expect) + 3);
        if (cnt[c] < 30) {
            continue;
        }
        double m = sum[c] / (double)cnt[c];
        double sd = sqrt(sum2[c] / (double)cnt[c] - m * m);
        /* The normal is redrawn uniformly below 0, which moves the mean up by about 1%. */
        CHECK(fabs(m - p.mean_amount) <=
              5 * p.std_amount / sqrt((double)cnt[c]) + 0.03 * p.mean_amount);
        CHECK(sd > 0.35 * p.mean_amount && sd < 0.65 * p.mean_amount);
        checked++;
    }
    CHECK(checked > 100);
    CHECK_EQ(cf__gen_customer_get(g, 200, &(cf__gen_customer){0}), CF_E_INVAL);
    cf_gen_destroy(g);
}

/* The three handbook fraud scenarios, on the handbook's own size. */
static void test_gen_fraud_scenarios(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.days = 21;
    o.seed = 3;
    evlist l;
    REQUIRE(collect(&o, &l));
    REQUIRE(l.n > 150000);
    uint64_t by[4] = {0};
    uint64_t big = 0, edge = 0;
    /* first_s2[t]: day of the first scenario-2 event at terminal t (+1), 0 none */
    uint32_t *first_s2 = calloc(o.terminals, sizeof(*first_s2));
    uint32_t *first_s3 = calloc(o.customers, sizeof(*first_s3));
    REQUIRE(first_s2 != NULL && first_s3 != NULL);
    uint32_t n_s2_terms = 0, n_s3_custs = 0;
    for (size_t i = 0; i < l.n; i++) {
        const cf_event *e = &l.ev[i];
        by[e->fraud_scenario]++;
        int64_t a = abs64(e->amount_minor);
        uint32_t day = (uint32_t)((e->ts_us - o.start_us) / DAY_US);
        if (e->fraud_scenario == 0 || e->fraud_scenario == 1) {
            /* Scenario 1 is exactly "amount > 220" wherever 2 and 3 did not overwrite it. */
            CHECK((e->fraud_scenario == 1) == (a > 22000));
            big += a > 22000;
            edge += a > 21900 && a <= 22100;
        }
        if (e->fraud_scenario == 2) {
            uint32_t t = id_of(e->merchant);
            if (first_s2[t] == 0) {
                first_s2[t] = day + 1;
                n_s2_terms++;
            }
        }
        if (e->fraud_scenario == 3) {
            CHECK_EQ(a % 5, 0); /* amount x 5 */
            uint32_t c = id_of(e->account);
            if (first_s3[c] == 0) {
                first_s3[c] = day + 1;
                n_s3_custs++;
            }
        }
    }
    CHECK_EQ(big, by[1]);
    CHECK(edge >= 3); /* the threshold itself is exercised */
    /* 2 terminals and 3 customers a day at most. */
    CHECK(n_s2_terms >= 1 && n_s2_terms <= 2 * o.days);
    CHECK(n_s3_custs >= 1 && n_s3_custs <= 3 * o.days);
    /* Once a terminal shows scenario 2, all of its transactions for the rest of the (28-day)
     * window are fraud; a compromised customer's transactions are about 1/3 scenario 3. */
    uint64_t s3_window = 0, s3_marked = 0;
    for (size_t i = 0; i < l.n; i++) {
        const cf_event *e = &l.ev[i];
        uint32_t day = (uint32_t)((e->ts_us - o.start_us) / DAY_US);
        uint32_t t = id_of(e->merchant), c = id_of(e->account);
        if (first_s2[t] != 0 && day + 1 >= first_s2[t]) {
            CHECK(e->fraud_scenario == 2 || e->fraud_scenario == 3);
        }
        /* The customer was drawn on or before its first scenario-3 day; the 14-day window
         * almost always still runs 10 days later. */
        if (first_s3[c] != 0 && day + 1 >= first_s3[c] && day + 1 < first_s3[c] + 10) {
            s3_window++;
            s3_marked += e->fraud_scenario == 3;
        }
    }
    double share3 = (double)s3_marked / (double)s3_window;
    fprintf(stderr, "scenario 3: %llu of %llu in windows (%.3f)\n", (unsigned long long)s3_marked,
            (unsigned long long)s3_window, share3);
    CHECK(share3 > 0.27 && share3 < 0.40);
    /* The handbook's first week has 0.20% fraud (27 / 44 / 66 by scenario, of 66,976); its
     * 183 days average about 0.8% once scenario 2 has built up. */
    double fraud = (double)(by[1] + by[2] + by[3]) / (double)l.n;
    CHECK(fraud > 0.002 && fraud < 0.012);
    CHECK(by[1] > 0 && by[2] > 0 && by[3] > 0);
    fprintf(stderr, "events %zu s1 %llu s2 %llu s3 %llu (%.3f%%)\n", l.n, (unsigned long long)by[1],
            (unsigned long long)by[2], (unsigned long long)by[3], 100 * fraud);
    free(first_s2);
    free(first_s3);
    free(l.ev);
}

/* Our statistics against the handbook's own 7-day sample (numpy seed 0, 5000 x 10000). */
static void test_gen_vs_handbook(void)
{
    const char *path = cf_test_shared("data/fdh/fdh_sample_7days_2018-04-01.csv");
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char line[256];
    uint64_t n_ref = 0, fr_ref = 0;
    double sum_ref = 0;
    REQUIRE(fgets(line, sizeof(line), f) != NULL); /* header */
    while (fgets(line, sizeof(line), f) != NULL) {
        /* tx_id,ts,customer_id,terminal_id,amount,fraud,fraud_scenario */
        char *p = line;
        for (int k = 0; k < 4 && p != NULL; k++) {
            p = strchr(p, ',');
            p = p ? p + 1 : NULL;
        }
        REQUIRE(p != NULL);
        char *q = NULL;
        sum_ref += strtod(p, &q);
        REQUIRE(q != NULL && *q == ',');
        fr_ref += q[1] == '1';
        n_ref++;
    }
    fclose(f);
    CHECK_EQ(n_ref, 66976);

    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.days = 7;
    cf_gen *g = NULL;
    REQUIRE(cf_gen_create(&g, &o, NULL, 0) == CF_OK);
    cf_event e;
    uint64_t n = 0, fr = 0;
    double sum = 0;
    while (cf_gen_next(g, &e) == CF_OK) {
        n++;
        fr += e.fraud == 1;
        sum += (double)abs64(e.amount_minor) / 100.0;
    }
    cf_gen_destroy(g);
    double tpd_ref = (double)n_ref / 7, tpd = (double)n / 7;
    double mean_ref = sum_ref / (double)n_ref, mean = sum / (double)n;
    fprintf(stderr,
            "tx/day ours %.1f handbook %.1f; mean ours %.2f handbook %.2f; "
            "fraud ours %.3f%% handbook %.3f%%\n",
            tpd, tpd_ref, mean, mean_ref, 100.0 * (double)fr / (double)n,
            100.0 * (double)fr_ref / (double)n_ref);
    CHECK(fabs(tpd - tpd_ref) <= 0.15 * tpd_ref);
    CHECK(fabs(mean - mean_ref) <= 0.15 * mean_ref);
    /* Fraud in week one depends on which terminals were drawn: within a factor of 3. */
    double fr_rate = (double)fr / (double)n, fr_rate_ref = (double)fr_ref / (double)n_ref;
    CHECK(fr_rate > fr_rate_ref / 3 && fr_rate < fr_rate_ref * 3);
}

static void test_gen_attributes(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 2000;
    o.terminals = 4000;
    o.days = 2;
    evlist l;
    REQUIRE(collect(&o, &l));
    uint64_t eur = 0, be = 0, ch[CF_CH__COUNT] = {0}, refund = 0;
    for (size_t i = 0; i < l.n; i++) {
        eur += strcmp(l.ev[i].currency, "EUR") == 0;
        be += strcmp(l.ev[i].country, "BE") == 0;
        ch[l.ev[i].channel]++;
        refund += l.ev[i].type == CF_TX_REFUND;
    }
    double n = (double)l.n;
    CHECK(eur / n > 0.85 && eur / n < 0.97);
    CHECK(be / n > 0.90 && be / n < 0.98);
    CHECK(ch[CF_CH_POS] / n > 0.55 && ch[CF_CH_POS] / n < 0.70);
    CHECK(ch[CF_CH_ECOM] / n > 0.22 && ch[CF_CH_ECOM] / n < 0.34);
    CHECK(ch[CF_CH_ATM] / n > 0.04 && ch[CF_CH_ATM] / n < 0.10);
    CHECK(ch[CF_CH_P2P] / n > 0.01 && ch[CF_CH_P2P] / n < 0.05);
    CHECK(refund > 0 && refund / n < 0.02);
    /* The country is a property of the terminal. */
    cf_gen *g = NULL;
    REQUIRE(cf_gen_create(&g, &o, NULL, 0) == CF_OK);
    for (size_t i = 0; i < l.n; i += 97) {
        char cc[3];
        REQUIRE(cf__gen_terminal_country(g, id_of(l.ev[i].merchant), cc) == CF_OK);
        CHECK_STR(cc, l.ev[i].country);
    }
    cf_gen_destroy(g);
    free(l.ev);
}

static void test_gen_bad_options(void)
{
    cf_gen_opts o;
    cf_gen *g = NULL;
    char err[256];
    cf_gen_opts_default(&o);
    o.customers = 0;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    CHECK(g == NULL);
    CHECK(strstr(err, "customers") != NULL);
    cf_gen_opts_default(&o);
    o.terminals = 0;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "terminals") != NULL);
    cf_gen_opts_default(&o);
    o.days = 0;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "days") != NULL);
    cf_gen_opts_default(&o);
    o.radius = -1;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "radius") != NULL);
    o.radius = NAN;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    cf_gen_opts_default(&o);
    o.customers = 10000000;
    o.terminals = 10000000;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_LIMIT); /* 7.9e11 links */
    CHECK(strstr(err, "links") != NULL);
    CHECK(g == NULL);
    cf_gen_opts_default(&o);
    o.start_us = INT64_MAX - 10;
    CHECK_EQ(cf_gen_create(&g, &o, err, sizeof(err)), CF_E_INVAL);
    /* A tiny world still works: one customer, one terminal far away (or near). */
    cf_gen_opts_default(&o);
    o.customers = 1;
    o.terminals = 1;
    o.radius = 200;
    o.days = 30;
    REQUIRE(cf_gen_create(&g, &o, err, sizeof(err)) == CF_OK);
    cf_event e;
    cf_err rc;
    while ((rc = cf_gen_next(g, &e)) == CF_OK) {
        CHECK_STR(e.merchant, "T0");
    }
    CHECK_EQ(rc, CF_E_EOF);
    CHECK_EQ(cf_gen_next(g, &e), CF_E_EOF);
    cf_gen_destroy(g);
    cf_gen_destroy(NULL);
}

static void test_gen_alloc_failure(void)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 50;
    o.terminals = 100;
    int failed = 0;
    for (long n = 1; n <= 12; n++) {
        cf_gen *g = NULL;
        cf_alloc_fail_after(n);
        cf_err rc = cf_gen_create(&g, &o, NULL, 0);
        cf_alloc_fail_after(0);
        if (rc == CF_OK) {
            cf_gen_destroy(g);
            break;
        }
        CHECK_EQ(rc, CF_E_NOMEM);
        CHECK(g == NULL);
        failed++;
    }
    CHECK(failed >= 5);
    /* The pacer's trace loader. */
    const char *dir = cf_test_tmpdir();
    char path[512], shape[600];
    snprintf(path, sizeof(path), "%s/t.csv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("step,count\n1,5\n2,7\n", f);
    fclose(f);
    snprintf(shape, sizeof(shape), "trace:%s", path);
    for (long k = 1; k <= 3; k++) {
        cf_pacer *p = NULL;
        cf_alloc_fail_after(k);
        cf_err prc = cf_pacer_create(&p, shape, 0, 1, NULL, 0);
        cf_alloc_fail_after(0);
        if (prc == CF_OK) {
            cf_pacer_destroy(p);
            break;
        }
        CHECK_EQ(prc, CF_E_NOMEM);
        CHECK(p == NULL);
    }
    unlink(path);
    rmdir(dir);
}

/* Generated events survive the canonical encoders and decoders unchanged (the contract
 * between `confide gen` and `confide run`). */
static void roundtrip(cf_format fmt)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.customers = 500;
    o.terminals = 1000;
    o.days = 2;
    cf_gen *g = NULL;
    cf_decoder *d = NULL;
    char err[256], reason[256];
    static char buf[8192];
    REQUIRE(cf_gen_create(&g, &o, err, sizeof(err)) == CF_OK);
    REQUIRE(cf_decoder_create(&d, fmt, err, sizeof(err)) == CF_OK);
    cf_record rec;
    memset(&rec, 0, sizeof(rec));
    if (fmt == CF_FMT_CSV) {
        const char *h = cf_csv_header();
        rec.data = h;
        rec.len = strlen(h) - 1;
        rec.line = 1;
        cf_event tmp;
        CHECK_EQ(cf_decoder_decode(d, &rec, &tmp, reason, sizeof(reason)), CF_DECODE_SKIP);
    }
    cf_event e, back;
    uint64_t n = 0, bad = 0;
    while (cf_gen_next(g, &e) == CF_OK) {
        size_t len = fmt == CF_FMT_CSV ? cf_event_to_csv(&e, buf, sizeof(buf))
                                       : cf_event_to_ndjson(&e, buf, sizeof(buf));
        REQUIRE(len > 1 && buf[len - 1] == '\n');
        rec.data = buf;
        rec.len = len - 1;
        rec.line = n + 2;
        memset(&back, 0, sizeof(back));
        cf_decode_result r = cf_decoder_decode(d, &rec, &back, reason, sizeof(reason));
        bool same = r == CF_DECODE_EVENT && back.event_id == e.event_id && back.ts_us == e.ts_us &&
                    back.amount_minor == e.amount_minor && strcmp(back.account, e.account) == 0 &&
                    strcmp(back.merchant, e.merchant) == 0 &&
                    strcmp(back.currency, e.currency) == 0 &&
                    strcmp(back.country, e.country) == 0 && back.type == e.type &&
                    back.channel == e.channel && back.fraud == e.fraud &&
                    back.fraud_scenario == e.fraud_scenario;
        if (!same && bad++ < 3) {
            fprintf(stderr, "%s event %llu differs after decoding (%s): %.*s\n",
                    cf_format_name(fmt), (unsigned long long)e.event_id,
                    r == CF_DECODE_REJECT ? reason : "fields", (int)rec.len, buf);
        }
        n++;
    }
    CHECK(n > 1000);
    CHECK_EQ(bad, 0);
    cf_decoder_destroy(d);
    cf_gen_destroy(g);
}

static void test_gen_roundtrip_csv(void)
{
    roundtrip(CF_FMT_CSV);
}

static void test_gen_roundtrip_ndjson(void)
{
    roundtrip(CF_FMT_NDJSON);
}

/* ---- pacer --------------------------------------------------------------------------- */

static void test_pacer_steady_exact(void)
{
    const double rates[] = {1000.0, 7777.7, 3.0, 250000.0};
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        cf_pacer *p = NULL;
        REQUIRE(cf_pacer_create(&p, "steady", rates[r], 1.0, NULL, 0) == CF_OK);
        int64_t prev = -1;
        int bad = 0;
        for (uint64_t i = 0; i < 2000000; i++) {
            int64_t ns = cf_pacer_next_ns(p);
            long double want = (long double)i * 1e9L / (long double)rates[r];
            if (fabsl((long double)ns - want) > 1.0L || ns < prev) {
                bad++;
            }
            prev = ns;
        }
        CHECK_EQ(bad, 0);
        cf_pacer_destroy(p);
    }
    cf_pacer *p = NULL;
    REQUIRE(cf_pacer_create(&p, NULL, 1000.0, 1.0, NULL, 0) == CF_OK); /* default steady */
    CHECK_EQ(cf_pacer_next_ns(p), 0);
    CHECK_EQ(cf_pacer_next_ns(p), 1000000);
    cf_pacer_destroy(p);
}

/* Number of events due strictly before @p until_ns (consumes the pacer). */
static uint64_t due_before(cf_pacer *p, int64_t until_ns, int64_t *prev, bool *monotone)
{
    uint64_t n = 0;
    for (;;) {
        int64_t ns = cf_pacer_next_ns(p);
        if (ns < *prev) {
            *monotone = false;
        }
        *prev = ns;
        if (ns >= until_ns) {
            return n;
        }
        n++;
    }
}

static void test_pacer_diurnal(void)
{
    /* speedup 86400: the day lasts one second. Rate 10,000/s. */
    cf_pacer *p = NULL;
    REQUIRE(cf_pacer_create(&p, "diurnal", 10000.0, 86400.0, NULL, 0) == CF_OK);
    int64_t prev = 0;
    bool mono = true;
    /* First half: R (P/2 + 0.8 P / pi) = 5000 + 2546.5 events. */
    uint64_t half = due_before(p, 500000000, &prev, &mono);
    cf_pacer_destroy(p);
    REQUIRE(cf_pacer_create(&p, "diurnal", 10000.0, 86400.0, NULL, 0) == CF_OK);
    prev = 0;
    uint64_t three = due_before(p, 3000000000, &prev, &mono);
    cf_pacer_destroy(p);
    CHECK(mono);
    CHECK(llabs((long long)half - 7546) <= 2);
    CHECK(llabs((long long)three - 30000) <= 2); /* mean rate over whole periods */
}

static void test_pacer_burst(void)
{
    cf_pacer *p = NULL;
    REQUIRE(cf_pacer_create(&p, "burst", 1000.0, 1.0, NULL, 0) == CF_OK);
    int64_t prev = 0;
    bool mono = true;
    /* 9 s at 526.3/s then 1 s at 5263/s: 4736.8 events before the burst. */
    uint64_t before = due_before(p, 9000000000, &prev, &mono);
    cf_pacer_destroy(p);
    CHECK(llabs((long long)before - 4737) <= 1);
    REQUIRE(cf_pacer_create(&p, "burst", 1000.0, 1.0, NULL, 0) == CF_OK);
    prev = 0;
    uint64_t cycle3 = due_before(p, 30000000000, &prev, &mono);
    cf_pacer_destroy(p);
    CHECK(mono);
    CHECK(llabs((long long)cycle3 - 30000) <= 1);
    /* The burst second holds 10x the base rate: about 5263 events. */
    CHECK(llabs((long long)(10000 - before) - 5263) <= 2);
}

static void test_pacer_trace(void)
{
    const char *path = cf_test_shared("data/paysim/paysim_real_hourly_total_counts.csv");
    char shape[4200];
    snprintf(shape, sizeof(shape), "trace:%s", path);
    /* Read the counts ourselves. */
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char line[128];
    static long long counts[1000];
    size_t rows = 0;
    REQUIRE(fgets(line, sizeof(line), f) != NULL);
    while (rows < 1000 && fgets(line, sizeof(line), f) != NULL) {
        char *c = strchr(line, ',');
        REQUIRE(c != NULL);
        counts[rows++] = atoll(c + 1);
    }
    fclose(f);
    REQUIRE(rows == 718);
    /* rate 0, speedup 3600: hour h lasts 1 s and holds exactly counts[h] events. */
    cf_pacer *p = NULL;
    char err[512];
    REQUIRE(cf_pacer_create(&p, shape, 0.0, 3600.0, err, sizeof(err)) == CF_OK);
    int64_t prev = 0;
    bool mono = true;
    enum { K = 30 };
    static uint64_t per_hour[K];
    memset(per_hour, 0, sizeof(per_hour));
    for (;;) {
        int64_t ns = cf_pacer_next_ns(p);
        mono = mono && ns >= prev;
        prev = ns;
        if (ns >= (int64_t)K * 1000000000) {
            break;
        }
        per_hour[ns / 1000000000]++;
    }
    long long sum = 0, got = 0;
    for (int h = 0; h < K; h++) {
        CHECK_EQ(per_hour[h], counts[h]); /* zero hours stay empty, time still advances */
        sum += counts[h];
        got += (long long)per_hour[h];
    }
    CHECK_EQ(got, sum);
    CHECK(counts[3] == 0); /* the file does have empty hours */
    cf_pacer_destroy(p);
    CHECK(mono);
    /* Scaled: mean rate 50/s over the whole trace (718 s at speedup 3600). */
    REQUIRE(cf_pacer_create(&p, shape, 50.0, 3600.0, err, sizeof(err)) == CF_OK);
    prev = 0;
    uint64_t all = due_before(p, INT64_C(718) * 1000000000, &prev, &mono);
    CHECK(llabs((long long)all - 718 * 50) <= 1);
    /* The trace repeats: the next event is at the start of the second pass. */
    CHECK(prev >= INT64_C(718) * 1000000000 && prev < INT64_C(719) * 1000000000);
    cf_pacer_destroy(p);
}

static void test_pacer_errors(void)
{
    cf_pacer *p = NULL;
    char err[512];
    CHECK_EQ(cf_pacer_create(&p, "square", 100, 1, err, sizeof(err)), CF_E_INVAL);
    CHECK(p == NULL);
    CHECK(strstr(err, "unknown shape 'square'") != NULL);
    CHECK_EQ(cf_pacer_create(&p, "steady", 0, 1, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "rate") != NULL);
    CHECK_EQ(cf_pacer_create(&p, "steady", 100, 0, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "speedup") != NULL);
    CHECK_EQ(cf_pacer_create(&p, "diurnal", NAN, 1, err, sizeof(err)), CF_E_INVAL);
    CHECK_EQ(cf_pacer_create(&p, "trace:", 0, 1, err, sizeof(err)), CF_E_INVAL);
    CHECK(cf_pacer_create(&p, "trace:/nonexistent/trace.csv", 0, 1, err, sizeof(err)) != CF_OK);
    CHECK(strstr(err, "/nonexistent/trace.csv") != NULL);

    const char *dir = cf_test_tmpdir();
    char path[512], shape[600];
    const struct {
        const char *text;
        cf_err rc;
        const char *msg;
    } bad[] = {
        {"step,count\n1,10\n2,abc\n", CF_E_PARSE, ":3: bad count"},
        {"step,count\n1,10\n1,5\n", CF_E_PARSE, ":3: steps must increase"},
        {"step,count\n1,-4\n", CF_E_PARSE, ":2: bad count"},
        {"step,count\nx,4\n", CF_E_PARSE, ":2: bad step"},
        {"1,10\n2,20\n", CF_E_PARSE, ":1: expected a header"},
        {"step,count\n", CF_E_PARSE, "no rows"},
        {"step,count\n1,0\n2,0\n", CF_E_INVAL, "no events"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(path, sizeof(path), "%s/t%zu.csv", dir, i);
        FILE *f = fopen(path, "w");
        REQUIRE(f != NULL);
        fputs(bad[i].text, f);
        fclose(f);
        snprintf(shape, sizeof(shape), "trace:%s", path);
        err[0] = '\0';
        CHECK_EQ(cf_pacer_create(&p, shape, 0, 1, err, sizeof(err)), bad[i].rc);
        if (strstr(err, bad[i].msg) == NULL) {
            fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, err, bad[i].msg);
            CHECK(!"error text");
        }
        CHECK(strstr(err, path) != NULL);
        unlink(path);
    }
    /* Gaps in steps are zero hours: 1,10 then 3,10 at speedup 3600 (1 s per hour). */
    snprintf(path, sizeof(path), "%s/gap.csv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("step,count\r\n1,10\r\n3,10\r\n", f);
    fclose(f);
    snprintf(shape, sizeof(shape), "trace:%s", path);
    REQUIRE(cf_pacer_create(&p, shape, 0, 3600, err, sizeof(err)) == CF_OK);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(cf_pacer_next_ns(p), (int64_t)i * 100000000);
    }
    CHECK_EQ(cf_pacer_next_ns(p), 2000000000);
    cf_pacer_destroy(p);
    unlink(path);
    rmdir(dir);
}

#include "cf_test_main.h"
