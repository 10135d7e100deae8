/*
 * Tests for the metrics registry, the Prometheus exposition, the JSON snapshot and the HTTP
 * endpoint. The ../shared/vectors/prometheus samples serve three ways: valid samples are
 * rebuilt with the registry and must come out byte for byte; every name promtool lints is
 * refused at registration; and the samples promtool does not flag (duplicate series, no
 * +Inf bucket, negative counter) must be caught by the semantic checker below, which is
 * then applied to our own output. A live scrape goes through a plain socket and promtool.
 */
#include "cf_test.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "confide/core.h"
#include "confide/metrics.h"

static char errbuf[256];
#define EB errbuf, sizeof(errbuf)

static char *expose(cf_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    if (cf_metrics_expose(m, &text, &len) != CF_OK) {
        return NULL;
    }
    if (strlen(text) != len) {
        cf_test_failures++;
    }
    return text;
}

/* ---- a semantic checker for what promtool does not verify -------------------------------- */

typedef struct {
    char base[1024];
    double last;
    double inf;
    bool has_inf;
} hist_track;

/* Returns the number of problems found in an exposition text (and prints them). */
static int semantic_check(const char *text)
{
    int problems = 0;
    char *copy = strdup(text);
    size_t nkeys = 0;
    char **keys = calloc(4096, sizeof(char *));
    hist_track *hs = calloc(256, sizeof(hist_track));
    size_t nh = 0;
    char types[64][2][128];
    size_t ntypes = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# TYPE ", 7) == 0 && ntypes < 64) {
            sscanf(line + 7, "%127s %127s", types[ntypes][0], types[ntypes][1]);
            ntypes++;
            continue;
        }
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        /* Series key: the name plus its label set (quotes and escapes respected). */
        const char *p = line;
        while (*p != '\0' && *p != '{' && *p != ' ') {
            p++;
        }
        if (*p == '{') {
            bool inq = false;
            for (p++; *p != '\0'; p++) {
                if (inq && *p == '\\') {
                    p++;
                    continue;
                }
                if (*p == '"') {
                    inq = !inq;
                } else if (!inq && *p == '}') {
                    p++;
                    break;
                }
            }
        }
        size_t klen = (size_t)(p - line);
        char key[512];
        snprintf(key, sizeof(key), "%.*s", (int)klen, line);
        double value = strtod(p, NULL);
        for (size_t i = 0; i < nkeys; i++) {
            if (strcmp(keys[i], key) == 0) {
                fprintf(stderr, "semantic: duplicate series %s\n", key);
                problems++;
            }
        }
        if (nkeys < 4096) {
            keys[nkeys++] = strdup(key);
        }
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(key, "{"), key);
        const char *type = "untyped";
        char fam[256];
        snprintf(fam, sizeof(fam), "%s", name);
        for (size_t t = 0; t < ntypes; t++) {
            size_t fl = strlen(types[t][0]);
            if (strncmp(name, types[t][0], fl) == 0 &&
                (name[fl] == '\0' || strcmp(name + fl, "_bucket") == 0 ||
                 strcmp(name + fl, "_count") == 0 || strcmp(name + fl, "_sum") == 0)) {
                type = types[t][1];
                snprintf(fam, sizeof(fam), "%s", types[t][0]);
            }
        }
        if (strcmp(type, "counter") == 0 && !(value >= 0)) {
            fprintf(stderr, "semantic: negative counter %s\n", key);
            problems++;
        }
        if (strcmp(type, "histogram") != 0) {
            continue;
        }
        /* Base label set without le, so buckets, _sum and _count of one series meet. */
        char base[1024];
        const char *labels = strchr(key, '{');
        char lab[512] = "";
        if (labels != NULL) {
            snprintf(lab, sizeof(lab), "%s", labels);
            char *le = strstr(lab, "le=\"");
            if (le != NULL) {
                char *end = strchr(le + 4, '"');
                size_t cut_from = (size_t)(le - lab);
                if (cut_from > 1 && lab[cut_from - 1] == ',') {
                    cut_from--;
                }
                memmove(lab + cut_from, end + 1, strlen(end + 1) + 1);
                if (strcmp(lab, "{}") == 0) {
                    lab[0] = '\0';
                }
            }
        }
        snprintf(base, sizeof(base), "%s%s", fam, lab);
        hist_track *h = NULL;
        for (size_t i = 0; i < nh; i++) {
            if (strcmp(hs[i].base, base) == 0) {
                h = &hs[i];
            }
        }
        if (h == NULL && nh < 256) {
            h = &hs[nh++];
            snprintf(h->base, sizeof(h->base), "%s", base);
            h->last = 0;
        }
        if (h == NULL) {
            continue;
        }
        const char *suffix = name + strlen(fam);
        if (strcmp(suffix, "_bucket") == 0) {
            if (value < h->last) {
                fprintf(stderr, "semantic: decreasing bucket %s\n", key);
                problems++;
            }
            h->last = value;
            if (strstr(key, "le=\"+Inf\"") != NULL) {
                h->has_inf = true;
                h->inf = value;
            }
        } else if (strcmp(suffix, "_count") == 0) {
            if (!h->has_inf) {
                fprintf(stderr, "semantic: histogram %s has no +Inf bucket\n", base);
                problems++;
            } else if (h->inf != value) {
                fprintf(stderr, "semantic: %s +Inf %g != _count %g\n", base, h->inf, value);
                problems++;
            }
        }
    }
    for (size_t i = 0; i < nkeys; i++) {
        free(keys[i]);
    }
    free(keys);
    free(hs);
    free(copy);
    return problems;
}

static char *sample(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "vectors/prometheus/samples/%s", name);
    return cf_test_slurp(cf_test_shared(rel), NULL);
}

/* ---- exposition ---------------------------------------------------------------------------- */

static void test_counter_gauge_exposition(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_counter *acc = NULL;
    cf_counter *rej = NULL;
    cf_label l1[] = {{"stage", "decode"}, {"outcome", "accepted"}};
    cf_label l2[] = {{"stage", "decode"}, {"outcome", "dead_lettered"}};
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "Events by stage and outcome.", l1, 2,
                                &acc, EB));
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "Events by stage and outcome.", l2, 2,
                                &rej, EB));
    REQUIRE(acc != NULL && rej != NULL && acc != rej);
    cf_counter *again = NULL;
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "Events by stage and outcome.", l1, 2,
                                &again, EB));
    CHECK(again == acc);
    cf_counter_add(acc, 1000);
    cf_counter_inc(acc);
    cf_counter_inc(rej);
    cf_gauge *par = NULL;
    CHECK_OK(cf_metrics_gauge(m, CF_METRIC_PARALLELISM, "Worker threads.", NULL, 0, &par, EB));
    cf_gauge_set(par, 4);
    cf_gauge_add(par, -1);
    cf_gauge *lag = NULL;
    CHECK_OK(cf_metrics_gauge(m, CF_METRIC_WATERMARK_LAG, "Watermark lag.", NULL, 0, &lag, EB));
    cf_gauge_set(lag, 0.25);
    CHECK(cf_counter_value(acc) == 1001);
    CHECK(cf_gauge_value(par) == 3.0);
    char *text = expose(m);
    REQUIRE(text != NULL);
    const char *want = "# HELP confide_events_total Events by stage and outcome.\n"
                       "# TYPE confide_events_total counter\n"
                       "confide_events_total{stage=\"decode\",outcome=\"accepted\"} 1001\n"
                       "confide_events_total{stage=\"decode\",outcome=\"dead_lettered\"} 1\n"
                       "# HELP confide_parallelism Worker threads.\n"
                       "# TYPE confide_parallelism gauge\n"
                       "confide_parallelism 3\n"
                       "# HELP confide_watermark_lag_seconds Watermark lag.\n"
                       "# TYPE confide_watermark_lag_seconds gauge\n"
                       "confide_watermark_lag_seconds 0.25\n";
    CHECK_STR(text, want);
    CHECK_EQ(semantic_check(text), 0);
    free(text);
    cf_metrics_destroy(m);
}

static void test_histogram_exposition(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    static const int64_t bounds_us[] = {1000, 2500, 100000};
    cf_histogram *h = NULL;
    cf_label l[] = {{"stage", "audit"}};
    CHECK_OK(cf_metrics_histogram(m, CF_METRIC_BATCH_SERVICE, "Batch service time.", bounds_us, 3,
                                  -6, l, 1, &h, EB));
    REQUIRE(h != NULL);
    cf_histogram_observe(h, 1000); /* le is inclusive: first bucket */
    cf_histogram_observe(h, 1001); /* second */
    cf_histogram_observe_n(h, 50000, 3);
    cf_histogram_observe(h, 7000000); /* +Inf only */
    cf_histogram_observe(h, -5);      /* clamps to 0 */
    CHECK_EQ(cf_histogram_count(h), 7);
    CHECK_EQ(cf_histogram_sum(h), 1000 + 1001 + 150000 + 7000000);
    char *text = expose(m);
    REQUIRE(text != NULL);
    const char *want = "# HELP confide_batch_service_seconds Batch service time.\n"
                       "# TYPE confide_batch_service_seconds histogram\n"
                       "confide_batch_service_seconds_bucket{stage=\"audit\",le=\"0.001\"} 2\n"
                       "confide_batch_service_seconds_bucket{stage=\"audit\",le=\"0.0025\"} 3\n"
                       "confide_batch_service_seconds_bucket{stage=\"audit\",le=\"0.1\"} 6\n"
                       "confide_batch_service_seconds_bucket{stage=\"audit\",le=\"+Inf\"} 7\n"
                       "confide_batch_service_seconds_sum{stage=\"audit\"} 7.152001\n"
                       "confide_batch_service_seconds_count{stage=\"audit\"} 7\n";
    CHECK_STR(text, want);
    CHECK_EQ(semantic_check(text), 0);
    free(text);
    /* Same family, different buckets: refused. */
    static const int64_t other[] = {1, 2};
    cf_histogram *h2 = NULL;
    CHECK_EQ(cf_metrics_histogram(m, CF_METRIC_BATCH_SERVICE, "Batch service time.", other, 2, -6,
                                  l, 1, &h2, EB),
             CF_E_INVAL);
    /* Bad bounds. */
    static const int64_t unsorted[] = {5, 5};
    CHECK_EQ(cf_metrics_histogram(m, CF_METRIC_BATCH_SIZE, "Batch size.", unsorted, 2, 0, NULL, 0,
                                  &h2, EB),
             CF_E_INVAL);
    cf_metrics_destroy(m);
}

static void test_label_escaping(void)
{
    /* The sample escapes_ok.prom, rebuilt: help and label values need escaping. */
    char *want = sample("escapes_ok.prom");
    REQUIRE(want != NULL);
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_label l[] = {{"path", "C:\\tmp"}, {"quote", "say \"hi\""}, {"nl", "a\nb"}};
    cf_counter *c = NULL;
    CHECK_OK(cf_metrics_counter(m, "esc_total", "Help with backslash \\ and newline \n escapes.", l,
                                3, &c, EB));
    REQUIRE(c != NULL);
    cf_counter_inc(c);
    char *text = expose(m);
    REQUIRE(text != NULL);
    CHECK_STR(text, want);
    free(text);
    free(want);
    cf_metrics_destroy(m);
}

/* good.prom, histogram_labels_ok.prom and info.prom rebuilt with the registry, byte for byte. */
static void test_prometheus_samples_rebuilt(void)
{
    char *good = sample("good.prom");
    char *hl = sample("histogram_labels_ok.prom");
    char *info = sample("info.prom");
    REQUIRE(good != NULL && hl != NULL && info != NULL);

    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_counter *ok = NULL;
    cf_counter *rej = NULL;
    cf_label lok[] = {{"outcome", "ok"}};
    cf_label lrej[] = {{"outcome", "rejected"}};
    const char *help = "Total number of payment events processed.";
    CHECK_OK(cf_metrics_counter(m, "payments_processed_total", help, lok, 1, &ok, EB));
    CHECK_OK(cf_metrics_counter(m, "payments_processed_total", help, lrej, 1, &rej, EB));
    REQUIRE(ok != NULL && rej != NULL);
    cf_counter_add(ok, 1027);
    cf_counter_add(rej, 3);
    static const int64_t b_us[] = {5000, 10000};
    cf_histogram *lat = NULL;
    CHECK_OK(cf_metrics_histogram(m, "payment_latency_seconds", "Latency of payment processing.",
                                  b_us, 2, -6, NULL, 0, &lat, EB));
    REQUIRE(lat != NULL);
    /* 24054 <= 5 ms, 9390 in (5, 10] ms, 110876 above; sum exactly 53423 s. */
    cf_histogram_observe_n(lat, 1000, 24054);
    cf_histogram_observe_n(lat, 6000, 9390);
    int64_t rest = INT64_C(53423000000) - 24054 * 1000 - 9390 * 6000;
    int64_t q = rest / 110876;
    cf_histogram_observe_n(lat, q, 110875);
    cf_histogram_observe(lat, rest - q * 110875);
    char *text = expose(m);
    REQUIRE(text != NULL);
    CHECK_STR(text, good);
    CHECK_EQ(semantic_check(text), 0);
    free(text);
    cf_metrics_destroy(m);

    REQUIRE(cf_metrics_create(&m) == CF_OK);
    static const int64_t b_tenths[] = {1, 10};
    cf_label p0[] = {{"partition", "0"}};
    cf_label p1[] = {{"partition", "1"}};
    cf_histogram *h0 = NULL;
    cf_histogram *h1 = NULL;
    CHECK_OK(cf_metrics_histogram(m, "stream_lag_seconds", "Consumer lag.", b_tenths, 2, -1, p0, 1,
                                  &h0, EB));
    CHECK_OK(cf_metrics_histogram(m, "stream_lag_seconds", "Consumer lag.", b_tenths, 2, -1, p1, 1,
                                  &h1, EB));
    REQUIRE(h0 != NULL && h1 != NULL);
    cf_histogram_observe_n(h0, 0, 3);
    cf_histogram_observe_n(h0, 10, 2);
    cf_histogram_observe(h0, 22);
    text = expose(m);
    REQUIRE(text != NULL);
    CHECK_STR(text, hl);
    free(text);
    cf_metrics_destroy(m);

    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_label v[] = {{"version", "1.0"}};
    cf_gauge *g = NULL;
    CHECK_OK(cf_metrics_gauge(m, "e_info", "E.", v, 1, &g, EB));
    REQUIRE(g != NULL);
    cf_gauge_set(g, 1);
    text = expose(m);
    REQUIRE(text != NULL);
    CHECK_STR(text, info);
    free(text);
    cf_metrics_destroy(m);
    free(good);
    free(hl);
    free(info);
}

/* Every metric promtool lints in the samples is refused at registration. */
static void test_promtool_lints_refused(void)
{
    char *json = cf_test_slurp(cf_test_shared("vectors/prometheus/expected_promtool.json"), NULL);
    REQUIRE(json != NULL);
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    /* name, TYPE in its sample (untyped: try both), HELP in its sample ("" when none). */
    static const struct {
        const char *name;
        const char *type;
        const char *help;
    } linted[] = {
        {"paymentsProcessed_total", "counter", ""},
        {"paymentsProcessed_total", "counter", "x"},
        {"payments_processed", "counter", ""},
        {"payments_processed", "counter", "x"},
        {"g_bytes_total", "gauge", "x"},
        {"g_bytes_total", "counter", ""},
        {"payment_latency_milliseconds", "gauge", "Latency."},
        {"d_seconds_total", "gauge", "D2."},
        {"b_kilobytes", "gauge", "B."},
    };
    for (size_t i = 0; i < sizeof(linted) / sizeof(linted[0]); i++) {
        /* The finding is in the reference output: the list above is not invented. */
        CHECK(strstr(json, linted[i].name) != NULL);
        cf_err e;
        if (strcmp(linted[i].type, "counter") == 0) {
            cf_counter *c = NULL;
            e = cf_metrics_counter(m, linted[i].name, linted[i].help, NULL, 0, &c, EB);
        } else {
            cf_gauge *g = NULL;
            e = cf_metrics_gauge(m, linted[i].name, linted[i].help, NULL, 0, &g, EB);
        }
        if (e != CF_E_INVAL) {
            fprintf(stderr, "%s (%s) was accepted\n", linted[i].name, linted[i].type);
            cf_test_failures++;
        }
    }
    /* Parser errors promtool reports: reserved and camelCase label names, names with digits. */
    cf_gauge *g = NULL;
    cf_label reserved[] = {{"__name__", "x"}};
    CHECK_EQ(cf_metrics_gauge(m, "r_ratio", "R.", reserved, 1, &g, EB), CF_E_INVAL);
    cf_label camel[] = {{"Le", "x"}};
    CHECK_EQ(cf_metrics_gauge(m, "r_ratio", "R.", camel, 1, &g, EB), CF_E_INVAL);
    cf_label res2[] = {{"__reserved", "y"}};
    CHECK_EQ(cf_metrics_gauge(m, "r_ratio", "R.", res2, 1, &g, EB), CF_E_INVAL);
    cf_label le[] = {{"le", "1"}};
    CHECK_EQ(cf_metrics_gauge(m, "r_ratio", "R.", le, 1, &g, EB), CF_E_INVAL);
    CHECK_EQ(cf_metrics_gauge(m, "1abc", "R.", NULL, 0, &g, EB), CF_E_INVAL);
    CHECK_EQ(cf_metrics_gauge(m, "a:b", "R.", NULL, 0, &g, EB), CF_E_INVAL);
    CHECK_EQ(cf_metrics_gauge(m, "latency_ms", "R.", NULL, 0, &g, EB), CF_E_INVAL);
    CHECK_EQ(cf_metrics_gauge(m, "queue_gauge", "R.", NULL, 0, &g, EB), CF_E_INVAL);
    /* Not flagged by promtool, and accepted: _celsius, _percent, _ratio, _info. */
    CHECK_OK(cf_metrics_gauge(m, "w_celsius", "W.", NULL, 0, &g, EB));
    CHECK_OK(cf_metrics_gauge(m, "v_percent", "V.", NULL, 0, &g, EB));
    CHECK_OK(cf_metrics_gauge(m, "r_ratio", "R.", NULL, 0, &g, EB));
    /* A family keeps its type, help and label names. */
    cf_counter *c = NULL;
    CHECK_EQ(cf_metrics_counter(m, "w_celsius", "W.", NULL, 0, &c, EB), CF_E_INVAL);
    CHECK_EQ(cf_metrics_gauge(m, "w_celsius", "Other help.", NULL, 0, &g, EB), CF_E_INVAL);
    cf_label q[] = {{"queue", "a"}};
    CHECK_EQ(cf_metrics_gauge(m, "w_celsius", "W.", q, 1, &g, EB), CF_E_INVAL);
    CHECK(strstr(errbuf, "w_celsius") != NULL);
    free(json);
    cf_metrics_destroy(m);
}

/* The semantic checker catches what promtool lets through, and passes clean samples. */
static void test_semantic_checker(void)
{
    static const struct {
        const char *file;
        int bad;
    } cases[] = {
        {"bad_duplicate_series.prom", 1}, {"bad_hist_noinf.prom", 1},
        {"negative_counter.prom", 1},     {"good.prom", 0},
        {"histogram_labels_ok.prom", 0},  {"escapes_ok.prom", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = sample(cases[i].file);
        REQUIRE(t != NULL);
        int found = semantic_check(t);
        if ((found > 0) != (cases[i].bad != 0)) {
            fprintf(stderr, "%s: %d problems found\n", cases[i].file, found);
            cf_test_failures++;
        }
        free(t);
    }
}

static double ring_depth(void *opaque)
{
    return (double)*(int *)opaque;
}

/* The full confide catalogue, as the runtime registers it (docs/metrics.md). */
static cf_metrics *catalogue(int *depth)
{
    cf_metrics *m = NULL;
    if (cf_metrics_create(&m) != CF_OK) {
        return NULL;
    }
    cf_counter *c = NULL;
    cf_gauge *g = NULL;
    cf_histogram *h = NULL;
    static const char *const stages[] = {"decode", "screen", "audit", "protect"};
    for (size_t i = 0; i < 4; i++) {
        cf_label l[] = {{"stage", stages[i]}, {"outcome", "accepted"}};
        CHECK_OK(cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "Events by stage and outcome.", l, 2,
                                    &c, EB));
        cf_counter_add(c, 100 * (i + 1));
        cf_label b[] = {{"stage", stages[i]}};
        CHECK_OK(cf_metrics_histogram(m, CF_METRIC_BATCH_SIZE, "Events per batch.",
                                      cf_metrics_size_buckets, cf_metrics_size_buckets_n, 0, b, 1,
                                      &h, EB));
        cf_histogram_observe(h, 300);
        CHECK_OK(cf_metrics_histogram(m, CF_METRIC_BATCH_SERVICE, "Batch service time.",
                                      cf_metrics_latency_buckets_us,
                                      cf_metrics_latency_buckets_us_n, -6, b, 1, &h, EB));
        cf_histogram_observe(h, 1234);
        CHECK_OK(cf_metrics_gauge(m, CF_METRIC_BATCH_TARGET, "Batch target size.", b, 1, &g, EB));
        cf_gauge_set(g, 512);
    }
    cf_label dl[] = {{"reason", "bad \"amount\"\\overflow\n"}};
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_DEAD_LETTERS_TOTAL, "Dead letters by reason.", dl, 1,
                                &c, EB));
    cf_counter_inc(c);
    cf_label al[] = {{"rule", "large_amount"}};
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_ALERTS_TOTAL, "Alerts by rule.", al, 1, &c, EB));
    CHECK_OK(cf_metrics_histogram(m, CF_METRIC_EVENT_LATENCY, "Ingest to commit latency.",
                                  cf_metrics_latency_buckets_us, cf_metrics_latency_buckets_us_n,
                                  -6, NULL, 0, &h, EB));
    for (int64_t v = 50; v < 20000000; v = v * 3 / 2 + 1) {
        cf_histogram_observe(h, v);
    }
    cf_label q[] = {{"queue", "decode_to_screen"}};
    CHECK_OK(cf_metrics_gauge_fn(m, CF_METRIC_QUEUE_DEPTH, "Items queued.", q, 1, ring_depth, depth,
                                 EB));
    CHECK_EQ(
        cf_metrics_gauge_fn(m, CF_METRIC_QUEUE_DEPTH, "Items queued.", q, 1, ring_depth, depth, EB),
        CF_E_INVAL);
    CHECK_OK(cf_metrics_gauge(m, CF_METRIC_PARALLELISM, "Worker threads.", NULL, 0, &g, EB));
    cf_gauge_set(g, 2);
    CHECK_OK(
        cf_metrics_gauge(m, CF_METRIC_WATERMARK_LAG, "Event-time watermark lag.", NULL, 0, &g, EB));
    cf_gauge_set(g, 1.5);
    return m;
}

static void test_catalogue_semantics(void)
{
    int depth = 17;
    cf_metrics *m = catalogue(&depth);
    REQUIRE(m != NULL);
    char *text = expose(m);
    REQUIRE(text != NULL);
    CHECK_EQ(semantic_check(text), 0);
    CHECK(strstr(text, "confide_queue_depth{queue=\"decode_to_screen\"} 17\n") != NULL);
    CHECK(strstr(text, "reason=\"bad \\\"amount\\\"\\\\overflow\\n\"} 1\n") != NULL);
    CHECK(strstr(text, "confide_event_latency_seconds_bucket{le=\"0.0001\"}") != NULL);
    CHECK(strstr(text, "confide_batch_size_bucket{stage=\"audit\",le=\"65536\"} 1\n") != NULL);
    CHECK(text[strlen(text) - 1] == '\n');
    free(text);
    cf_metrics_destroy(m);
}

/* ---- JSON snapshot ------------------------------------------------------------------------ */

/* A strict JSON syntax check (values, nesting, string escapes). Returns the end or NULL. */
static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
        p++;
    }
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"') {
        return NULL;
    }
    while (*p != '"') {
        if ((unsigned char)*p < 0x20) {
            return NULL;
        }
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (!isxdigit((unsigned char)p[i])) {
                        return NULL;
                    }
                }
                p += 4;
            } else if (strchr("\"\\/bfnrt", *p) == NULL) {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *json_value(const char *p, int depth)
{
    p = json_ws(p);
    if (depth > 64) {
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';
        p = json_ws(p + 1);
        if (*p == close) {
            return p + 1;
        }
        for (;;) {
            if (obj) {
                p = json_string(json_ws(p));
                if (p == NULL) {
                    return NULL;
                }
                p = json_ws(p);
                if (*p++ != ':') {
                    return NULL;
                }
            }
            p = json_value(p, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = json_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            return *p == close ? p + 1 : NULL;
        }
    }
    if (*p == '"') {
        return json_string(p);
    }
    if (strncmp(p, "null", 4) == 0 || strncmp(p, "true", 4) == 0) {
        return p + 4;
    }
    if (strncmp(p, "false", 5) == 0) {
        return p + 5;
    }
    char *end = NULL;
    if (*p != '-' && !isdigit((unsigned char)*p)) {
        return NULL;
    }
    strtod(p, &end);
    return end == p ? NULL : end;
}

static bool json_valid(const char *s)
{
    const char *e = json_value(s, 0);
    return e != NULL && *json_ws(e) == '\0';
}

static void test_snapshot_json(void)
{
    int depth = 3;
    cf_metrics *m = catalogue(&depth);
    REQUIRE(m != NULL);
    cf_gauge *nan = NULL;
    CHECK_OK(cf_metrics_gauge(m, "confide_nan_ratio", "Not a number.", NULL, 0, &nan, EB));
    cf_gauge_set(nan, NAN);
    char *js = NULL;
    size_t len = 0;
    CHECK_OK(cf_metrics_snapshot_json(m, &js, &len));
    REQUIRE(js != NULL);
    CHECK_EQ(strlen(js), len);
    CHECK(json_valid(js));
    CHECK(strchr(js, '\n') == NULL); /* one line, for --stats-json */
    CHECK(strncmp(js, "{\"schema\":\"confide.stats\",\"version\":1,", 38) == 0);
    CHECK(strstr(js, "\"confide_events_total\":{\"type\":\"counter\",\"series\":[{\"labels\":"
                     "{\"stage\":\"decode\",\"outcome\":\"accepted\"},\"value\":100}") != NULL);
    CHECK(strstr(js, "\"confide_queue_depth\":{\"type\":\"gauge\",\"series\":[{\"labels\":"
                     "{\"queue\":\"decode_to_screen\"},\"value\":3}]}") != NULL);
    CHECK(strstr(js, "\"confide_nan_ratio\":{\"type\":\"gauge\",\"series\":[{\"labels\":{},"
                     "\"value\":null}]}") != NULL);
    CHECK(strstr(js, "\"count\":1,\"sum\":0.001234,\"buckets\":[{\"le\":0.0001,\"count\":0}") !=
          NULL);
    CHECK(strstr(js, "\"reason\":\"bad \\\"amount\\\"\\\\overflow\\u000a\"") != NULL);
    free(js);
    cf_metrics_destroy(m);
    /* The validator itself rejects broken JSON. */
    CHECK(!json_valid("{\"a\":}"));
    CHECK(!json_valid("{\"a\":1,}"));
    CHECK(!json_valid("{\"a\":\"x\ny\"}"));
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

/* GET @p path from 127.0.0.1:@p port with a plain socket; returns the raw response (free). */
static char *http_get(uint16_t port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return NULL;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n",
                     path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 65536;
    size_t len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* Splits a response: returns the status code, *body points into @p resp. Handles chunked. */
static int http_parse(char *resp, char **headers, char **body)
{
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        return -1;
    }
    char *sep = strstr(resp, "\r\n\r\n");
    if (sep == NULL) {
        return -1;
    }
    *sep = '\0';
    *headers = resp;
    *body = sep + 4;
    if (strstr(resp, "chunked") != NULL) {
        /* De-chunk in place. */
        char *in = *body;
        char *out = *body;
        for (;;) {
            char *end = NULL;
            long sz = strtol(in, &end, 16);
            if (end == in || sz <= 0) {
                break;
            }
            in = strstr(end, "\r\n") + 2;
            memmove(out, in, (size_t)sz);
            out += sz;
            in += sz + 2;
        }
        *out = '\0';
    }
    return status;
}

static bool unhealthy(void *opaque, char *detail, size_t detail_size)
{
    snprintf(detail, detail_size, "%s", (const char *)opaque);
    return false;
}

static void test_http_scrape(void)
{
    int depth = 5;
    cf_metrics *m = catalogue(&depth);
    REQUIRE(m != NULL);
    cf_metrics_server *srv = NULL;
    uint16_t port = 0;
    CHECK_OK(cf_metrics_serve(m, "127.0.0.1:0", &srv, &port, EB));
    REQUIRE(srv != NULL && port != 0);

    char *resp = http_get(port, "/metrics");
    REQUIRE(resp != NULL);
    char *hdr = NULL;
    char *body = NULL;
    CHECK_EQ(http_parse(resp, &hdr, &body), 200);
    CHECK(strstr(hdr, "text/plain; version=0.0.4") != NULL);
    char *direct = expose(m);
    REQUIRE(direct != NULL);
    CHECK_STR(body, direct);
    CHECK_EQ(semantic_check(body), 0);
    free(direct);
    free(resp);

    resp = http_get(port, "/healthz");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 200);
    CHECK(strstr(hdr, "application/json") != NULL);
    CHECK(strncmp(body, "{\"status\":\"ok\",\"uptime_s\":", 25) == 0);
    CHECK(json_valid(body));
    free(resp);

    cf_metrics_set_health(m, unhealthy, "sink stalled");
    resp = http_get(port, "/healthz");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 503);
    CHECK(strstr(body, "\"detail\":\"sink stalled\"") != NULL);
    free(resp);

    resp = http_get(port, "/nope");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 404);
    free(resp);

    /* A second server cannot take the same port; the error names the address. */
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    cf_metrics_server *dup = NULL;
    CHECK_EQ(cf_metrics_serve(m, addr, &dup, NULL, EB), CF_E_IO);
    CHECK(dup == NULL);
    CHECK(strstr(errbuf, addr) != NULL);
    cf_metrics_server_stop(srv);
    /* Stopped means closed. */
    CHECK(http_get(port, "/metrics") == NULL);
    cf_metrics_destroy(m);
}

static void test_bad_addresses(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    static const char *const bad[] = {
        "",          "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:99999", "127.0.0.1:12a",
        "[::1:9464", "a:b:c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cf_metrics_server *s = NULL;
        cf_err e = cf_metrics_serve(m, bad[i], &s, NULL, EB);
        if (e != CF_E_INVAL) {
            fprintf(stderr, "address '%s' gave %s\n", bad[i], cf_err_name(e));
            cf_test_failures++;
        }
        CHECK(s == NULL);
    }
    cf_metrics_server_stop(NULL);
    cf_metrics_destroy(m);
}

static void test_promtool_live(void)
{
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0) {
        const char *ci = getenv("CI");
        if (ci != NULL && strcmp(ci, "true") == 0) {
            fprintf(stderr,
                    "FAIL: %s missing under CI=true (scripts/setup.sh installs the "
                    "Debian package prometheus)\n",
                    promtool);
            cf_test_failures++;
            return;
        }
        fprintf(stderr, "SKIP: %s not installed\n", promtool);
        exit(CF_TEST_SKIP);
    }
    int depth = 9;
    cf_metrics *m = catalogue(&depth);
    REQUIRE(m != NULL);
    cf_metrics_server *srv = NULL;
    uint16_t port = 0;
    CHECK_OK(cf_metrics_serve(m, "localhost:0", &srv, &port, EB));
    REQUIRE(srv != NULL);
    char *resp = http_get(port, "/metrics");
    REQUIRE(resp != NULL);
    char *hdr = NULL;
    char *body = NULL;
    CHECK_EQ(http_parse(resp, &hdr, &body), 200);
    const char *dir = cf_test_tmpdir();
    char in[512];
    char err[512];
    snprintf(in, sizeof(in), "%s/scrape.prom", dir);
    snprintf(err, sizeof(err), "%s/promtool.err", dir);
    FILE *f = fopen(in, "w");
    REQUIRE(f != NULL);
    fputs(body, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s check metrics < %s > %s 2>&1", promtool, in, err);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    char *out = cf_test_slurp(err, NULL);
    REQUIRE(out != NULL);
    if (out[0] != '\0') {
        fprintf(stderr, "promtool said:\n%s", out);
        cf_test_failures++;
    }
    free(out);
    /* The checker is live: a linted exposition makes it fail with exit 3. */
    f = fopen(in, "w");
    REQUIRE(f != NULL);
    fputs("# TYPE payments_processed counter\npayments_processed 5\n", f);
    fclose(f);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 3);
    unlink(in);
    unlink(err);
    rmdir(dir);
    free(resp);
    cf_metrics_server_stop(srv);
    cf_metrics_destroy(m);
}

/* ---- concurrency ---------------------------------------------------------------------------- */

#define PER_THREAD 500000

typedef struct {
    cf_counter *c;
    cf_histogram *h;
    cf_gauge *g;
} shared_handles;

static void *hammer(void *arg)
{
    shared_handles *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        cf_counter_inc(s->c);
        cf_histogram_observe(s->h, i % 7);
        cf_gauge_add(s->g, 1.0);
    }
    return NULL;
}

static void test_concurrent_updates(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    shared_handles s = {NULL, NULL, NULL};
    static const int64_t b[] = {1, 3, 5};
    CHECK_OK(cf_metrics_counter(m, "hammer_total", "Hammered.", NULL, 0, &s.c, EB));
    CHECK_OK(cf_metrics_histogram(m, "hammer_size", "Hammered.", b, 3, 0, NULL, 0, &s.h, EB));
    CHECK_OK(cf_metrics_gauge(m, "hammer_level", "Hammered.", NULL, 0, &s.g, EB));
    REQUIRE(s.c != NULL && s.h != NULL && s.g != NULL);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, hammer, &s);
    }
    /* Scrape while they run: every intermediate exposition is consistent. */
    for (int i = 0; i < 20; i++) {
        char *text = expose(m);
        REQUIRE(text != NULL);
        CHECK_EQ(semantic_check(text), 0);
        free(text);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ(cf_counter_value(s.c), 2 * PER_THREAD);
    CHECK_EQ(cf_histogram_count(s.h), 2 * PER_THREAD);
    /* sum of i % 7 over 0..N-1, twice */
    int64_t per = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        per += i % 7;
    }
    CHECK_EQ(cf_histogram_sum(s.h), 2 * per);
    CHECK(cf_gauge_value(s.g) == 2.0 * PER_THREAD);
    cf_metrics_destroy(m);
}

static void test_alloc_failure(void)
{
    /* Every allocation in create + register + expose failing in turn is reported, no leak. */
    for (long n = 1; n <= 12; n++) {
        cf_metrics *m = NULL;
        cf_alloc_fail_after(n);
        cf_err e = cf_metrics_create(&m);
        if (e == CF_OK) {
            cf_label l[] = {{"stage", "x"}};
            cf_counter *c = NULL;
            e = cf_metrics_counter(m, "a_total", "A.", l, 1, &c, EB);
            if (e == CF_OK) {
                char *t = NULL;
                e = cf_metrics_expose(m, &t, NULL);
                cf_free(t);
            }
        }
        CHECK(e == CF_OK || e == CF_E_NOMEM);
        cf_alloc_fail_after(0);
        cf_metrics_destroy(m);
    }
}

/* ---- reading back, and the console endpoints ---- */

typedef struct visit_acc {
    char text[512];
    double sum;
    int n;
} visit_acc;

static void visit_cb(void *opaque, const cf_label *labels, size_t nlabels, double value)
{
    visit_acc *a = opaque;
    size_t len = strlen(a->text);
    for (size_t i = 0; i < nlabels; i++) {
        len += (size_t)snprintf(a->text + len, sizeof(a->text) - len, "%s=%s,", labels[i].name,
                                labels[i].value);
    }
    snprintf(a->text + len, sizeof(a->text) - len, "%g;", value);
    a->sum += value;
    a->n++;
}

static void test_visit_and_buckets(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_counter *a = NULL, *b = NULL;
    cf_label la[] = {{"rule", "big"}};
    cf_label lb[] = {{"rule", "velocity"}};
    CHECK_OK(cf_metrics_counter(m, "x_alerts_total", "A.", la, 1, &a, EB));
    CHECK_OK(cf_metrics_counter(m, "x_alerts_total", "A.", lb, 1, &b, EB));
    cf_counter_add(a, 3);
    cf_counter_add(b, 40);
    visit_acc acc = {{0}, 0, 0};
    CHECK_OK(cf_metrics_visit(m, "x_alerts_total", visit_cb, &acc));
    /* registration order, labels as registered, exact values */
    CHECK_STR(acc.text, "rule=big,3;rule=velocity,40;");
    CHECK_EQ(acc.n, 2);
    visit_acc none = {{0}, 0, 0};
    CHECK_EQ(cf_metrics_visit(m, "x_missing_total", visit_cb, &none), CF_E_NOTFOUND);
    CHECK_EQ(none.n, 0);

    /* histograms: the visit gives the count; bucket counts are per bucket, +Inf last */
    static const int64_t bounds[] = {10, 100, 1000};
    cf_histogram *h = NULL;
    CHECK_OK(cf_metrics_histogram(m, "x_wait_seconds", "W.", bounds, 3, -6, NULL, 0, &h, EB));
    cf_histogram_observe(h, 5);
    cf_histogram_observe(h, 10); /* le: on the bound counts in that bucket */
    cf_histogram_observe_n(h, 500, 4);
    cf_histogram_observe(h, 5000);
    uint64_t c[8];
    CHECK_EQ(cf_histogram_bucket_counts(h, c, 8), 4u);
    CHECK_EQ(c[0], 2u);
    CHECK_EQ(c[1], 0u);
    CHECK_EQ(c[2], 4u);
    CHECK_EQ(c[3], 1u);
    uint64_t two[2] = {99, 99};
    CHECK_EQ(cf_histogram_bucket_counts(h, two, 1), 4u); /* never writes past n */
    CHECK_EQ(two[1], 99u);
    visit_acc hv = {{0}, 0, 0};
    CHECK_OK(cf_metrics_visit(m, "x_wait_seconds", visit_cb, &hv));
    CHECK(hv.sum == 7.0);
    cf_metrics_destroy(m);
}

static int status_calls;

static cf_err status_json(void *opaque, char **out, size_t *len)
{
    cf_metrics *m = opaque;
    visit_acc acc = {{0}, 0, 0};
    /* the renderer runs outside the registry lock: reading the registry back must work */
    cf_metrics_visit(m, CF_METRIC_EVENTS_TOTAL, visit_cb, &acc);
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "{\"events\":%g,\"calls\":%d}", acc.sum, ++status_calls);
    *out = cf_malloc((size_t)n + 1);
    if (*out == NULL) {
        return CF_E_NOMEM;
    }
    memcpy(*out, buf, (size_t)n + 1);
    *len = (size_t)n;
    return CF_OK;
}

static cf_err status_fails(void *opaque, char **out, size_t *len)
{
    (void)opaque;
    (void)out;
    (void)len;
    return CF_E_NOMEM;
}

static void test_console_endpoints(void)
{
    cf_metrics *m = NULL;
    REQUIRE(cf_metrics_create(&m) == CF_OK);
    cf_counter *c = NULL;
    cf_label l[] = {{"stage", "decode"}, {"outcome", "accepted"}};
    CHECK_OK(cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "E.", l, 2, &c, EB));
    cf_counter_add(c, 42);
    cf_metrics_server *srv = NULL;
    uint16_t port = 0;
    CHECK_OK(cf_metrics_serve(m, "127.0.0.1:0", &srv, &port, EB));
    REQUIRE(srv != NULL);
    char *hdr = NULL, *body = NULL;

    /* no renderer yet: 404 with a JSON reason */
    char *resp = http_get(port, "/api/status");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 404);
    CHECK(json_valid(body));
    free(resp);

    cf_metrics_set_status(m, status_json, m);
    resp = http_get(port, "/api/status");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 200);
    CHECK(strstr(hdr, "application/json") != NULL);
    CHECK(strstr(hdr, "no-store") != NULL);
    CHECK_STR(body, "{\"events\":42,\"calls\":1}");
    free(resp);

    cf_metrics_set_status(m, status_fails, NULL);
    resp = http_get(port, "/api/status");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 500);
    free(resp);

    /* the page: embedded, HTML, locked to its own origin, no external resources */
    for (int i = 0; i < 2; i++) {
        resp = http_get(port, i == 0 ? "/" : "/index.html");
        REQUIRE(resp != NULL);
        CHECK_EQ(http_parse(resp, &hdr, &body), 200);
        CHECK(strstr(hdr, "text/html; charset=utf-8") != NULL);
        CHECK(strstr(hdr, "Content-Security-Policy: default-src 'none'") != NULL);
        CHECK(strstr(hdr, "connect-src 'self'") != NULL);
        CHECK(strstr(hdr, "X-Content-Type-Options: nosniff") != NULL);
        CHECK(strncmp(body, "<!doctype html>", 15) == 0);
        CHECK(strstr(body, "/api/status") != NULL);
        CHECK(strstr(body, "</html>") != NULL);
        CHECK(strstr(body, "http://") == NULL && strstr(body, "https://") == NULL);
        CHECK(strstr(body, " src=") == NULL && strstr(body, " href=") == NULL);
        free(resp);
    }
    resp = http_get(port, "/api/other");
    REQUIRE(resp != NULL);
    CHECK_EQ(http_parse(resp, &hdr, &body), 404);
    free(resp);
    cf_metrics_server_stop(srv);
    cf_metrics_destroy(m);
}

#include "cf_test_main.h"
