#include "cf_test.h"

#include <math.h>
#include <sodium.h>

#include "confide/core.h"
#include "confide/keys.h"
#include "confide/secagg.h"
#include "secagg/secagg_int.h"

static char errbuf[512];
/* The context masks are bound to (an audit log id and a gateway run id). */
static cf_sa_ctx test_ctx = {.log_id = {1, 2, 3}, .run_id = {4, 5, 6}};

/* The amount of a result: its limbs joined (0 when the sum does not fit an int64). */
static int64_t res_amount(const cf_sa_result *res)
{
    int64_t a = 0;
    return cf_sa_join_amount(res->v[CF_SA_C_AMOUNT], res->v[CF_SA_C_AMOUNT_HI], &a) ? a : 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct keyset {
    cf_key *gw, *comb, *aud, *pseudo, *party[CF_KEY_PARTIES_MAX];
} keyset;

static int keyset_make(keyset *ks, unsigned k)
{
    memset(ks, 0, sizeof(*ks));
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/keys", cf_test_tmpdir());
    if (cf_keys_generate(dir, k, 1, 0, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_key_load(dir, "gateway.key", &ks->gw, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_key_load(dir, "combiner.key", &ks->comb, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_key_load(dir, "auditor.key", &ks->aud, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_key_load(dir, "pseudonym.key", &ks->pseudo, errbuf, sizeof(errbuf)) != CF_OK) {
        fprintf(stderr, "keys: %s\n", errbuf);
        return -1;
    }
    for (unsigned i = 1; i < k; i++) {
        if (cf_key_load_party(dir, i, &ks->party[i], errbuf, sizeof(errbuf)) != CF_OK) {
            return -1;
        }
    }
    return 0;
}

static void keyset_free(keyset *ks)
{
    cf_key_destroy(ks->gw);
    cf_key_destroy(ks->comb);
    cf_key_destroy(ks->aud);
    cf_key_destroy(ks->pseudo);
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        cf_key_destroy(ks->party[i]);
    }
}

static cf_sa_opts opts_k(unsigned k)
{
    cf_sa_opts o;
    cf_sa_opts_default(&o);
    o.parties = k;
    return o;
}

/* A full LSA deployment in one struct: gateway, k parties, combiner. */
typedef struct rig {
    keyset ks;
    cf_sa_opts o;
    cf_sa_gateway *gw;
    cf_sa_party *party[CF_KEY_PARTIES_MAX];
    cf_sa_combiner *comb;
    cf_sa_auditor *attr; /* from auditor.key: can attribute */
} rig;

static int rig_make(rig *r, const cf_sa_opts *o)
{
    memset(r, 0, sizeof(*r));
    r->o = *o;
    if (keyset_make(&r->ks, o->parties) != 0 ||
        cf_sa_gateway_create(&r->gw, r->ks.gw, o, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_sa_combiner_create(&r->comb, r->ks.comb, o, errbuf, sizeof(errbuf)) != CF_OK ||
        cf_sa_auditor_create(&r->attr, r->ks.aud, o, errbuf, sizeof(errbuf)) != CF_OK) {
        fprintf(stderr, "rig: %s\n", errbuf);
        return -1;
    }
    cf_sa_gateway_bind(r->gw, &test_ctx);
    for (unsigned i = 0; i < o->parties; i++) {
        if (cf_sa_party_create(&r->party[i], i, r->ks.party[i], o, errbuf, sizeof(errbuf)) !=
            CF_OK) {
            fprintf(stderr, "rig: %s\n", errbuf);
            return -1;
        }
        cf_sa_party_bind(r->party[i], &test_ctx);
    }
    return 0;
}

static void rig_free(rig *r)
{
    cf_sa_gateway_destroy(r->gw);
    cf_sa_combiner_destroy(r->comb);
    cf_sa_auditor_destroy(r->attr);
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        cf_sa_party_destroy(r->party[i]);
    }
    keyset_free(&r->ks);
}

static uint64_t rnd64(void)
{
    uint64_t x;
    randombytes_buf(&x, sizeof(x));
    return x;
}

/* Chi-square of counts against a uniform expectation. */
static double chi2_uniform(const uint64_t *bins, unsigned nb, uint64_t total)
{
    double e = (double)total / nb, s = 0;
    for (unsigned i = 0; i < nb; i++) {
        double d = (double)bins[i] - e;
        s += d * d / e;
    }
    return s;
}

/* Two-sample chi-square (equal sample sizes): sum (a-b)^2 / (a+b). */
static double chi2_two(const uint64_t *a, const uint64_t *b, unsigned nb)
{
    double s = 0;
    for (unsigned i = 0; i < nb; i++) {
        double t = (double)a[i] + (double)b[i];
        if (t > 0) {
            double d = (double)a[i] - (double)b[i];
            s += d * d / t;
        }
    }
    return s;
}

/* 63 degrees of freedom: mean 63, sd 11.2; 130 is about 6 sd (p < 1e-6). */
#define CHI2_63_LIMIT 130.0
#define NBINS 64
static unsigned bin_of(uint64_t x)
{
    return (unsigned)(x >> 55); /* top 6 of 61 bits */
}

/* ---- field ---------------------------------------------------------------------------------- */

static void test_field_arith(void)
{
    __extension__ typedef unsigned __int128 u128;
    for (int i = 0; i < 100000; i++) {
        uint64_t a = rnd64() % CF_SA_P, b = rnd64() % CF_SA_P;
        if (i == 0) {
            a = b = CF_SA_P - 1;
        }
        uint64_t want = (uint64_t)(((u128)a * b) % CF_SA_P);
        if (cf_sa_fmul(a, b) != want || cf_sa_fadd(a, b) != (a + b) % CF_SA_P ||
            cf_sa_fsub(a, b) != (a + CF_SA_P - b) % CF_SA_P) {
            CHECK(!"field op mismatch");
            break;
        }
    }
    uint64_t x;
    CHECK_OK(cf_sa_encode(0, &x));
    CHECK_EQ(x, 0);
    CHECK_OK(cf_sa_encode(-1, &x));
    CHECK(x == CF_SA_P - 1);
    CHECK_EQ(cf_sa_decode(x), -1);
    CHECK_OK(cf_sa_encode(CF_SA_ABS_MAX, &x));
    CHECK_EQ(cf_sa_decode(x), CF_SA_ABS_MAX);
    CHECK_OK(cf_sa_encode(-CF_SA_ABS_MAX, &x));
    CHECK_EQ(cf_sa_decode(x), -CF_SA_ABS_MAX);
    CHECK_EQ(cf_sa_encode(CF_SA_ABS_MAX + 1, &x), CF_E_OVERFLOW);
    CHECK_EQ(cf_sa_encode(-CF_SA_ABS_MAX - 1, &x), CF_E_OVERFLOW);
    CHECK_EQ(cf_sa_encode(INT64_MAX, &x), CF_E_OVERFLOW);
    CHECK_EQ(cf_sa_encode(INT64_MIN, &x), CF_E_OVERFLOW);
    /* an amount travels as count, low limb and high limb: any int64 fits, exactly */
    int64_t vals[CF_SA_DIM_MAX];
    const int64_t amounts[] = {
        -250, 0, 1, INT64_MAX, INT64_MIN, INT64_C(1) << 40, -(INT64_C(1) << 32)};
    for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
        CHECK_OK(cf_sa_event_values(amounts[i], CF_SA_DIM_DEFAULT, vals));
        CHECK_EQ(vals[CF_SA_C_COUNT], 1);
        CHECK(vals[CF_SA_C_AMOUNT] >= 0 && vals[CF_SA_C_AMOUNT] <= (int64_t)UINT32_MAX);
        CHECK(vals[CF_SA_C_AMOUNT_HI] >= INT32_MIN && vals[CF_SA_C_AMOUNT_HI] <= INT32_MAX);
        int64_t back = 0;
        CHECK(cf_sa_join_amount(vals[CF_SA_C_AMOUNT], vals[CF_SA_C_AMOUNT_HI], &back));
        CHECK_EQ(back, amounts[i]);
    }
    int64_t j = 0;
    /* two INT64_MAX in one window: the exact sum does not fit an int64, and says so */
    CHECK(!cf_sa_join_amount(2 * (int64_t)UINT32_MAX, 2 * (int64_t)INT32_MAX, &j));
    CHECK(!cf_sa_join_amount(0, 2 * (int64_t)INT32_MIN, &j));
}

/* ---- shares ------------------------------------------------------------------------------- */

/* alpha of the gateway key for event time 0 (one alpha per epoch: mac_period_us 0). */
static uint64_t alpha_of(const cf_key *k, int64_t period_us, int64_t ts_us)
{
    cf__sa_mac m;
    memset(&m, 0, sizeof(m));
    memcpy(m.master, cf_key_mac_master(k), CF_KEY_MAC_LEN);
    m.epoch = k->epoch;
    m.period_us = period_us;
    return cf__sa_alpha(&m, ts_us);
}

static void test_shares_sum_to_value(void)
{
    REQUIRE(cf_init() == CF_OK);
    for (unsigned k = 2; k <= 8; k++) {
        cf_sa_opts o = opts_k(k);
        rig r;
        REQUIRE(rig_make(&r, &o) == 0);
        uint64_t alpha = alpha_of(r.ks.gw, 0, 0);
        CHECK(alpha != 0 && alpha < CF_SA_P);
        const int64_t edge[] = {0,
                                1,
                                -1,
                                5716,
                                -5716,
                                CF_SA_ABS_MAX,
                                -CF_SA_ABS_MAX,
                                INT64_MAX,
                                INT64_MIN,
                                INT64_C(1) << 40,
                                -(INT64_C(1) << 40)};
        size_t ne = sizeof(edge) / sizeof(edge[0]);
        for (size_t t = 0; t < ne + 200; t++) {
            int64_t amount = t < ne ? edge[t] : (int64_t)rnd64();
            int64_t vals[CF_SA_DIM_MAX];
            REQUIRE(cf_sa_event_values(amount, CF_SA_DIM_DEFAULT, vals) == CF_OK);
            uint64_t seq = rnd64();
            cf_sa_vec s0, tot;
            REQUIRE(cf_sa_gateway_split(r.gw, 0, seq, vals, &s0) == CF_OK);
            cf_sa_vec_zero(&tot);
            for (unsigned i = 0; i < k; i++) {
                cf_sa_vec si;
                cf_sa_party_share(r.party[i], seq, &s0, &si);
                cf_sa_vec_add(&tot, &si);
            }
            int64_t back = 0;
            CHECK_EQ(cf_sa_decode(tot.v[0]), 1);
            CHECK(cf_sa_join_amount((int64_t)tot.v[1], cf_sa_decode(tot.v[2]), &back));
            CHECK_EQ(back, amount);
            for (unsigned c = 0; c < CF_SA_DIM_DEFAULT; c++) {
                CHECK(tot.mac[c] == cf_sa_fmul(alpha, tot.v[c]));
            }
        }
        rig_free(&r);
    }
}

/* The MAC key is per period: a different window gets an unrelated alpha, derived from the
 * master (the combiner recomputes it), so an alpha leaked in one window forges nothing in
 * another. */
static void test_alpha_per_window(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(2);
    o.min_count = 1;
    o.mac_period_us = 60000000; /* one-minute tumbling windows */
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    uint64_t a0 = alpha_of(r.ks.gw, o.mac_period_us, 0);
    uint64_t a0b = alpha_of(r.ks.gw, o.mac_period_us, 59999999);
    uint64_t a1 = alpha_of(r.ks.gw, o.mac_period_us, 60000000);
    uint64_t am = alpha_of(r.ks.gw, o.mac_period_us, -1);
    CHECK(a0 == a0b);
    CHECK(a0 != a1 && a0 != am && a1 != am);
    CHECK(alpha_of(r.ks.comb, o.mac_period_us, 61000000) == a1); /* combiner derives the same */
    /* Events of window 1 (t = 60..120 s) verify under window 1's alpha only. */
    uint64_t seqs[4] = {1, 2, 3, 4};
    cf_sa_vec s0[4], part[2];
    for (int e = 0; e < 4; e++) {
        int64_t vals[CF_SA_DIM_MAX];
        cf_sa_event_values(100 * (e + 1), CF_SA_DIM_DEFAULT, vals);
        REQUIRE(cf_sa_gateway_split(r.gw, 60000000 + e * 1000, seqs[e], vals, &s0[e]) == CF_OK);
    }
    for (unsigned i = 0; i < 2; i++) {
        cf_sa_vec_zero(&part[i]);
        cf_sa_party_sum(r.party[i], seqs, 4, i == 0 ? s0 : NULL, &part[i]);
    }
    uint8_t key[16] = {3};
    cf_sa_result res;
    CHECK_OK(cf_sa_combine(r.comb, 60000000, key, part, 2, &res, errbuf, sizeof(errbuf)));
    CHECK(res.verified);
    CHECK_EQ(res_amount(&res), 1000);
    CHECK_EQ(cf_sa_combine(r.comb, 0, key, part, 2, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    /* A forger who knows window 0's alpha shifts window 1's sum: caught. */
    cf_sa_vec bad[2];
    memcpy(bad, part, sizeof(bad));
    bad[0].v[1] = cf_sa_fadd(bad[0].v[1], 500);
    bad[0].mac[1] = cf_sa_fadd(bad[0].mac[1], cf_sa_fmul(a0, 500));
    CHECK_EQ(cf_sa_combine(r.comb, 60000000, key, bad, 2, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    /* ... while with the right window's alpha the same forgery would pass: the test has teeth */
    bad[0].mac[1] = cf_sa_fadd(part[0].mac[1], cf_sa_fmul(a1, 500));
    CHECK_OK(cf_sa_combine(r.comb, 60000000, key, bad, 2, &res, errbuf, sizeof(errbuf)));
    rig_free(&r);
}

/*
 * The attack of the security review: a mask reused for two events gives party 0 both
 * v - r, v' - r and alpha v - m, alpha v' - m, hence alpha = (dmac) / (dv). Masks are bound
 * to (log id, run id, seq): the same seq under another log or another run gets an unrelated
 * mask, and the attack recovers nothing. Under one context (a replay) the masks repeat,
 * which recovery needs. The check below recovers alpha under a shared context, proving the
 * attack real, and fails to under distinct contexts.
 */
static bool recovers_alpha(rig *r, const cf_sa_ctx *c1, const cf_sa_ctx *c2, uint64_t alpha)
{
    int64_t v1[CF_SA_DIM_MAX], v2[CF_SA_DIM_MAX];
    cf_sa_event_values(1000, CF_SA_DIM_DEFAULT, v1);
    cf_sa_event_values(4000, CF_SA_DIM_DEFAULT, v2);
    cf_sa_vec a, b;
    cf_sa_gateway_bind(r->gw, c1);
    CHECK_OK(cf_sa_gateway_split(r->gw, 0, 42, v1, &a));
    cf_sa_gateway_bind(r->gw, c2);
    CHECK_OK(cf_sa_gateway_split(r->gw, 0, 42, v2, &b));
    cf_sa_gateway_bind(r->gw, &test_ctx);
    /* party 0: dv = v - v' (known when the masks cancel), alpha = dmac / dv */
    uint64_t dv = cf_sa_fsub(a.v[1], b.v[1]), dmac = cf_sa_fsub(a.mac[1], b.mac[1]);
    uint64_t want_dv;
    cf_sa_encode(1000 - 4000, &want_dv);
    return dv == want_dv && dmac == cf_sa_fmul(alpha, dv);
}

static void test_masks_never_repeat(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(2);
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    uint64_t alpha = alpha_of(r.ks.gw, 0, 0);
    cf_sa_ctx other_run = test_ctx, other_log = test_ctx;
    other_run.run_id[15] ^= 1;
    other_log.log_id[0] ^= 0x80;
    CHECK(recovers_alpha(&r, &test_ctx, &test_ctx, alpha)); /* the attack, when masks repeat */
    CHECK(!recovers_alpha(&r, &test_ctx, &other_run, alpha));
    CHECK(!recovers_alpha(&r, &test_ctx, &other_log, alpha));
    /* parties bound to the same context derive the gateway's masks (a replay is exact) */
    int64_t vals[CF_SA_DIM_MAX];
    cf_sa_event_values(777, CF_SA_DIM_DEFAULT, vals);
    cf_sa_vec s0, s1, s1b;
    cf_sa_gateway_bind(r.gw, &other_run);
    REQUIRE(cf_sa_gateway_split(r.gw, 0, 9, vals, &s0) == CF_OK);
    cf_sa_party_bind(r.party[1], &other_run);
    cf_sa_party_share(r.party[1], 9, NULL, &s1);
    cf_sa_party_bind(r.party[1], &test_ctx);
    cf_sa_party_share(r.party[1], 9, NULL, &s1b);
    CHECK(memcmp(&s1, &s1b, sizeof(s1)) != 0);
    cf_sa_vec tot = s0;
    cf_sa_vec_add(&tot, &s1);
    CHECK_EQ(cf_sa_decode(tot.v[1]), 777);
    rig_free(&r);
}

/* Deliberately broken splitter for the uniformity test: 60-bit masks instead of 61. */
static uint64_t biased_share0(uint64_t v, const uint8_t seed[32], uint64_t seq)
{
    cf_sa_vec r;
    cf__sa_prg(seed, &test_ctx, seq, 3, &r);
    return cf_sa_fsub(v, r.v[1] & ((UINT64_C(1) << 60) - 1));
}

static void test_remaining_share_uniform(void)
{
    REQUIRE(cf_init() == CF_OK);
    /* k = 3, the same amount for every event: with the shares of parties 1 and 2 fixed by
     * their seeds, party 0's share must still be uniform over Z_p, and so must each seeded
     * party's share (any k - 1 shares are independent of the value). */
    cf_sa_opts o = opts_k(3);
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    enum { N = 64000 };
    uint64_t b0[NBINS] = {0}, b1[NBINS] = {0}, bbad[NBINS] = {0};
    int64_t vals[CF_SA_DIM_MAX];
    REQUIRE(cf_sa_event_values(123456, CF_SA_DIM_DEFAULT, vals) == CF_OK);
    uint64_t enc;
    REQUIRE(cf_sa_encode(123456, &enc) == CF_OK);
    for (uint64_t seq = 0; seq < N; seq++) {
        cf_sa_vec s0, s1;
        REQUIRE(cf_sa_gateway_split(r.gw, 0, seq, vals, &s0) == CF_OK);
        cf_sa_party_share(r.party[1], seq, NULL, &s1);
        b0[bin_of(s0.v[1])]++;
        b1[bin_of(s1.v[1])]++;
        bbad[bin_of(biased_share0(enc, cf_key_seed(r.ks.gw, 1), seq))]++;
    }
    double c0 = chi2_uniform(b0, NBINS, N), c1 = chi2_uniform(b1, NBINS, N);
    double cbad = chi2_uniform(bbad, NBINS, N);
    fprintf(stderr, "chi2 party0=%.1f party1=%.1f biased=%.1f (limit %.0f)\n", c0, c1, cbad,
            CHI2_63_LIMIT);
    CHECK(c0 < CHI2_63_LIMIT);
    CHECK(c1 < CHI2_63_LIMIT);
    CHECK(cbad > CHI2_63_LIMIT); /* the test has teeth */
    rig_free(&r);
}

/* Party 0's inputs for amounts[e] over N events, binned. */
static void party0_bins(const int64_t *amounts, size_t n, uint64_t bins_v[NBINS],
                        uint64_t bins_m[NBINS], bool plain)
{
    cf_sa_opts o = opts_k(2);
    rig r;
    if (rig_make(&r, &o) != 0) {
        return;
    }
    for (size_t e = 0; e < n; e++) {
        int64_t vals[CF_SA_DIM_MAX];
        cf_sa_vec s0;
        if (cf_sa_event_values(amounts[e], CF_SA_DIM_DEFAULT, vals) != CF_OK ||
            cf_sa_gateway_split(r.gw, 0, e, vals, &s0) != CF_OK) {
            CHECK(!"split failed");
            break;
        }
        if (plain) {
            uint64_t x;
            cf_sa_encode(amounts[e], &x);
            bins_v[bin_of(x)]++;
        } else {
            bins_v[bin_of(s0.v[1])]++;
            bins_m[bin_of(s0.mac[1])]++;
        }
    }
    rig_free(&r);
}

static void test_party_view_independent(void)
{
    REQUIRE(cf_init() == CF_OK);
    enum { N = 32000 };
    static int64_t small[N], large[N];
    for (size_t e = 0; e < N; e++) {
        small[e] = (int64_t)(e % 1000) + 1;                            /* cents */
        large[e] = -((INT64_C(1) << 36) - (int64_t)(e % 1000) * 7919); /* huge refunds */
    }
    /* run A: small amounts, run B: the amounts swapped for very different ones, each with
     * fresh keys. Party 0's value and MAC shares must look the same. */
    uint64_t av[NBINS] = {0}, am[NBINS] = {0}, bv[NBINS] = {0}, bm[NBINS] = {0};
    party0_bins(small, N, av, am, false);
    party0_bins(large, N, bv, bm, false);
    double cv = chi2_two(av, bv, NBINS), cm = chi2_two(am, bm, NBINS);
    /* the same statistic on unprotected values separates the runs */
    uint64_t pa[NBINS] = {0}, pb[NBINS] = {0}, dummy[NBINS] = {0};
    party0_bins(small, N, pa, dummy, true);
    party0_bins(large, N, pb, dummy, true);
    double cp = chi2_two(pa, pb, NBINS);
    fprintf(stderr, "two-sample chi2 value=%.1f mac=%.1f plain=%.1f (limit %.0f)\n", cv, cm, cp,
            CHI2_63_LIMIT);
    CHECK(cv < CHI2_63_LIMIT);
    CHECK(cm < CHI2_63_LIMIT);
    CHECK(cp > CHI2_63_LIMIT);
    CHECK(chi2_uniform(av, NBINS, N) < CHI2_63_LIMIT);
}

/* ---- combine ------------------------------------------------------------------------------ */

typedef struct group {
    uint64_t seqs[64];
    size_t n;
    int64_t sum;
} group;

/* Runs n events of one group through every party; partials[i] = party i's sum. */
static void run_group(rig *r, group *g, cf_sa_vec *partials)
{
    static cf_sa_vec s0[64];
    for (size_t e = 0; e < g->n; e++) {
        int64_t vals[CF_SA_DIM_MAX];
        int64_t amount = (int64_t)(rnd64() % 200000) - 20000;
        cf_sa_event_values(amount, r->o.dim, vals);
        g->seqs[e] = 1000 + e * 3;
        cf_sa_gateway_split(r->gw, 0, g->seqs[e], vals, &s0[e]);
        g->sum += amount;
    }
    for (unsigned i = 0; i < r->o.parties; i++) {
        cf_sa_vec_zero(&partials[i]);
        cf_sa_party_sum(r->party[i], g->seqs, g->n, i == 0 ? s0 : NULL, &partials[i]);
    }
}

static void test_tamper_detected(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(3);
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    group g = {.n = 40};
    cf_sa_vec part[3], bad[3];
    uint8_t key[16] = {0xab, 0xcd};
    run_group(&r, &g, part);
    cf_sa_result res;
    CHECK_OK(cf_sa_combine(r.comb, 7, key, part, 3, &res, errbuf, sizeof(errbuf)));
    CHECK(res.verified && res.released);
    CHECK_EQ(res.v[0], 40);
    CHECK_EQ(res_amount(&res), g.sum);
    CHECK_EQ(res.epoch, 1);
    int who = 9;
    cf_sa_ctx ctxs[64];
    for (size_t e = 0; e < g.n; e++) {
        ctxs[e] = test_ctx;
    }
    /* the auditor's key holds seeds only: it cannot be a combiner (no MAC master) */
    cf_sa_combiner *minted = NULL;
    CHECK_EQ(cf_sa_combiner_create(&minted, r.ks.aud, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(minted == NULL);
    for (unsigned victim = 0; victim < 3; victim++) {
        for (unsigned comp = 0; comp < 2; comp++) {
            memcpy(bad, part, sizeof(bad));
            bad[victim].v[comp] = cf_sa_fadd(bad[victim].v[comp], 1); /* one value flipped */
            errbuf[0] = '\0';
            CHECK_EQ(cf_sa_combine(r.comb, 7, key, bad, 3, &res, errbuf, sizeof(errbuf)),
                     CF_E_AUTH);
            CHECK(!res.verified && !res.released);
            CHECK(res.v[0] == 0 && res_amount(&res) == 0); /* nothing released */
            CHECK(strstr(errbuf, "window 7") != NULL);
            CHECK(strstr(errbuf, "abcd") != NULL);
            CHECK(strstr(errbuf, comp == 0 ? "count" : "amount") != NULL);
            CHECK_OK(cf_sa_auditor_attribute(r.attr, g.seqs, ctxs, g.n, bad, 3, &who));
            CHECK_EQ(who, (int)victim);
        }
    }
    /* an attacker who shifts the MAC share too, by a guess of alpha * e, is still caught */
    memcpy(bad, part, sizeof(bad));
    bad[1].v[1] = cf_sa_fadd(bad[1].v[1], 1000);
    bad[1].mac[1] = cf_sa_fadd(bad[1].mac[1], cf_sa_fmul(12345, 1000));
    CHECK_EQ(cf_sa_combine(r.comb, 7, key, bad, 3, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    /* a MAC-only alteration too */
    memcpy(bad, part, sizeof(bad));
    bad[0].mac[0] ^= 1;
    CHECK_EQ(cf_sa_combine(r.comb, 7, key, bad, 3, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    /* a dropped event at one party */
    memcpy(bad, part, sizeof(bad));
    cf_sa_vec_zero(&bad[2]);
    cf_sa_party_sum(r.party[2], g.seqs, g.n - 1, NULL, &bad[2]);
    CHECK_EQ(cf_sa_combine(r.comb, 7, key, bad, 3, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    CHECK_OK(cf_sa_auditor_attribute(r.attr, g.seqs, ctxs, g.n, bad, 3, &who));
    CHECK_EQ(who, 2);
    CHECK_EQ(cf_sa_combine(r.comb, 7, key, part, 2, &res, errbuf, sizeof(errbuf)), CF_E_INVAL);
    rig_free(&r);
}

static void test_wrong_mac_key(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(2);
    rig r, other;
    REQUIRE(rig_make(&r, &o) == 0);
    REQUIRE(rig_make(&other, &o) == 0);
    group g = {.n = 10};
    cf_sa_vec part[2];
    uint8_t key[16] = {1};
    run_group(&r, &g, part);
    cf_sa_result res;
    CHECK_EQ(cf_sa_combine(other.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    CHECK(!res.released);
    CHECK_OK(cf_sa_combine(r.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)));
    /* keys of the wrong shape are refused at creation */
    cf_sa_combiner *c = NULL;
    CHECK_EQ(cf_sa_combiner_create(&c, r.ks.pseudo, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK_EQ(cf_sa_combiner_create(&c, r.ks.aud, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    cf_sa_opts o3 = opts_k(3);
    cf_sa_gateway *gw = NULL;
    CHECK_EQ(cf_sa_gateway_create(&gw, r.ks.gw, &o3, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(strstr(errbuf, "--parties 3") != NULL);
    CHECK_EQ(cf_sa_gateway_create(&gw, r.ks.comb, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(gw == NULL);
    cf_sa_party *p = NULL;
    CHECK_EQ(cf_sa_party_create(&p, 1, NULL, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK_EQ(cf_sa_party_create(&p, 2, r.ks.gw, &o, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(c == NULL && p == NULL);
    /* a party using another deployment's seed breaks the sums: detected */
    cf_sa_party *wrong = NULL;
    REQUIRE(cf_sa_party_create(&wrong, 1, other.ks.party[1], &o, errbuf, sizeof(errbuf)) == CF_OK);
    cf_sa_party_bind(wrong, &test_ctx);
    cf_sa_vec_zero(&part[1]);
    cf_sa_party_sum(wrong, g.seqs, g.n, NULL, &part[1]);
    CHECK_EQ(cf_sa_combine(r.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)), CF_E_AUTH);
    cf_sa_party_destroy(wrong);
    rig_free(&r);
    rig_free(&other);
}

static void test_min_count_and_overflow(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(2);
    o.min_count = 5;
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    group g = {.n = 4};
    cf_sa_vec part[2];
    uint8_t key[16] = {2};
    run_group(&r, &g, part);
    cf_sa_result res;
    CHECK_OK(cf_sa_combine(r.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)));
    CHECK(res.verified && !res.released);
    CHECK(res.v[0] == 0 && res_amount(&res) == 0);
    rig_free(&r);

    /* the largest amounts are exact: INT64_MIN and INT64_MAX + 1 in one window sum to 0 */
    o = opts_k(2);
    o.min_count = 1;
    REQUIRE(rig_make(&r, &o) == 0);
    const int64_t big[3] = {INT64_MIN, INT64_MAX, 1};
    cf_sa_vec s3[3];
    uint64_t seq3[3] = {5, 6, 7};
    int64_t vals[CF_SA_DIM_MAX];
    for (int e = 0; e < 3; e++) {
        REQUIRE(cf_sa_event_values(big[e], CF_SA_DIM_DEFAULT, vals) == CF_OK);
        REQUIRE(cf_sa_gateway_split(r.gw, 0, seq3[e], vals, &s3[e]) == CF_OK);
    }
    for (unsigned i = 0; i < 2; i++) {
        cf_sa_vec_zero(&part[i]);
        cf_sa_party_sum(r.party[i], seq3, 3, i == 0 ? s3 : NULL, &part[i]);
    }
    CHECK_OK(cf_sa_combine(r.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)));
    CHECK_EQ(res.v[0], 3);
    int64_t sum = -1;
    CHECK(cf_sa_join_amount(res.v[CF_SA_C_AMOUNT], res.v[CF_SA_C_AMOUNT_HI], &sum));
    CHECK_EQ(sum, 0);
    /* two INT64_MAX: exact in the field, beyond an int64 when joined (reported, not wrapped) */
    uint64_t seq2[2] = {8, 9};
    for (int e = 0; e < 2; e++) {
        REQUIRE(cf_sa_event_values(INT64_MAX, CF_SA_DIM_DEFAULT, vals) == CF_OK);
        REQUIRE(cf_sa_gateway_split(r.gw, 0, seq2[e], vals, &s3[e]) == CF_OK);
    }
    for (unsigned i = 0; i < 2; i++) {
        cf_sa_vec_zero(&part[i]);
        cf_sa_party_sum(r.party[i], seq2, 2, i == 0 ? s3 : NULL, &part[i]);
    }
    CHECK_OK(cf_sa_combine(r.comb, 1, key, part, 2, &res, errbuf, sizeof(errbuf)));
    CHECK(!cf_sa_join_amount(res.v[CF_SA_C_AMOUNT], res.v[CF_SA_C_AMOUNT_HI], &sum));
    /* a count beyond CF_SA_COUNT_MAX cannot be decoded exactly and is refused */
    cf_sa_vec huge[2];
    cf_sa_vec_zero(&huge[0]);
    cf_sa_vec_zero(&huge[1]);
    uint64_t alpha = alpha_of(r.ks.gw, 0, 0);
    huge[0].v[0] = CF_SA_COUNT_MAX + 1;
    huge[0].mac[0] = cf_sa_fmul(alpha, huge[0].v[0]);
    CHECK_EQ(cf_sa_combine(r.comb, 1, key, huge, 2, &res, errbuf, sizeof(errbuf)), CF_E_OVERFLOW);
    rig_free(&r);
}

/* Parses "57.16" into 5716 (the FDH amounts have at most 2 decimals). */
static int64_t parse_cents(const char *s, const char *end)
{
    int64_t v = 0;
    int frac = -1;
    for (; s < end; s++) {
        if (*s == '.') {
            frac = 0;
            continue;
        }
        v = v * 10 + (*s - '0');
        if (frac >= 0) {
            frac++;
        }
    }
    for (frac = frac < 0 ? 0 : frac; frac < 2; frac++) {
        v *= 10;
    }
    return v;
}

typedef struct plain_sum {
    uint64_t window;
    uint8_t key[16];
    int64_t count, sum;
} plain_sum;

static void test_combine_many_exact(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *path = cf_test_shared("data/fdh/fdh_sample_1day_2018-04-01.csv");
    char *csv = cf_test_slurp(path, NULL);
    REQUIRE(csv != NULL);
    cf_sa_opts o = opts_k(3);
    o.min_count = 1;
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    cf_sa_pseudo *ps = NULL;
    REQUIRE(cf_sa_pseudo_create(&ps, r.ks.pseudo, 1024, errbuf, sizeof(errbuf)) == CF_OK);
    cf_sa_acc *acc[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        REQUIRE(cf_sa_acc_create(&acc[i], 16384) == CF_OK);
    }
    enum { MAXG = 16384 };
    plain_sum *ref = calloc(MAXG, sizeof(*ref));
    size_t nref = 0, nev = 0;
    char *line = strchr(csv, '\n');
    REQUIRE(line != NULL);
    line++;
    while (*line != '\0') {
        char *nl = strchr(line, '\n');
        char *f[7];
        int nf = 0;
        f[nf++] = line;
        for (char *c = line; c < (nl != NULL ? nl : line + strlen(line)) && nf < 7; c++) {
            if (*c == ',') {
                f[nf++] = c + 1;
            }
        }
        if (nf < 6) {
            break;
        }
        int64_t ts = strtoll(f[1], NULL, 10);
        int64_t amount = parse_cents(f[4], f[5] - 1);
        if (nev % 17 == 0) {
            amount = -amount; /* some refunds */
        }
        uint64_t window = (uint64_t)(ts / 21600); /* 6-hour windows */
        uint8_t key[16];
        /* group by terminal prefix (about 100 groups of ~20 events per window) */
        size_t idlen = (size_t)(f[4] - 1 - f[3]);
        cf_sa_pseudonymize(ps, f[3], idlen < 2 ? idlen : 2, key);
        /* plaintext reference */
        size_t gi = 0;
        while (gi < nref && !(ref[gi].window == window && memcmp(ref[gi].key, key, 16) == 0)) {
            gi++;
        }
        if (gi == nref) {
            REQUIRE(nref < MAXG);
            ref[nref].window = window;
            memcpy(ref[nref].key, key, 16);
            nref++;
        }
        ref[gi].count++;
        ref[gi].sum += amount;
        /* protected path */
        uint64_t seq = nev;
        int64_t vals[CF_SA_DIM_MAX];
        cf_sa_vec s0, sh;
        REQUIRE(cf_sa_event_values(amount, CF_SA_DIM_DEFAULT, vals) == CF_OK);
        REQUIRE(cf_sa_gateway_split(r.gw, 0, seq, vals, &s0) == CF_OK);
        for (unsigned i = 0; i < 3; i++) {
            cf_sa_party_share(r.party[i], seq, i == 0 ? &s0 : NULL, &sh);
            REQUIRE(cf_sa_acc_add(acc[i], window, key, &sh) == CF_OK);
        }
        nev++;
        if (nl == NULL) {
            break;
        }
        line = nl + 1;
    }
    CHECK(nev > 9000);
    CHECK_EQ(cf_sa_acc_size(acc[0]), nref);
    size_t ok = 0;
    int64_t total = 0, ref_total = 0;
    for (size_t gi = 0; gi < nref; gi++) {
        cf_sa_vec part[3];
        for (int i = 0; i < 3; i++) {
            REQUIRE(cf_sa_acc_get(acc[i], ref[gi].window, ref[gi].key, &part[i]) == CF_OK);
        }
        cf_sa_result res;
        if (cf_sa_combine(r.comb, ref[gi].window, ref[gi].key, part, 3, &res, errbuf,
                          sizeof(errbuf)) == CF_OK &&
            res.verified && res.released && res.v[0] == ref[gi].count &&
            res_amount(&res) == ref[gi].sum) {
            ok++;
            total += res_amount(&res);
        }
        ref_total += ref[gi].sum;
    }
    CHECK_EQ(ok, nref);
    CHECK_EQ(total, ref_total);
    fprintf(stderr, "%zu events, %zu groups, all exact\n", nev, nref);
    uint8_t nokey[16] = {0};
    cf_sa_vec tmp;
    CHECK_EQ(cf_sa_acc_get(acc[0], 0, nokey, &tmp), CF_E_NOTFOUND);
    for (int i = 0; i < 3; i++) {
        cf_sa_acc_destroy(acc[i]);
    }
    cf_sa_pseudo_destroy(ps);
    rig_free(&r);
    free(ref);
    free(csv);
}

static void test_acc_limit(void)
{
    cf_sa_acc *a = NULL;
    REQUIRE(cf_sa_acc_create(&a, 10) == CF_OK);
    cf_sa_vec one;
    cf_sa_vec_zero(&one);
    one.v[0] = 1;
    uint8_t key[16] = {0};
    cf_err last = CF_OK;
    size_t added = 0;
    for (uint64_t w = 0; w < 1000 && last == CF_OK; w++) {
        last = cf_sa_acc_add(a, w, key, &one);
        added += last == CF_OK;
    }
    CHECK_EQ(last, CF_E_LIMIT);
    CHECK(added >= 10);
    CHECK_EQ(cf_sa_acc_size(a), added);
    CHECK_OK(cf_sa_acc_add(a, 0, key, &one)); /* existing groups still accept events */
    cf_sa_vec got;
    CHECK_OK(cf_sa_acc_get(a, 0, key, &got));
    CHECK_EQ(got.v[0], 2);
    cf_sa_acc_clear(a);
    CHECK_EQ(cf_sa_acc_size(a), 0);
    cf_sa_acc_destroy(a);
    cf_sa_acc_destroy(NULL);
}

/* ---- pseudonyms --------------------------------------------------------------------------- */

static void test_pseudonym_cache(void)
{
    REQUIRE(cf_init() == CF_OK);
    keyset ks;
    REQUIRE(keyset_make(&ks, 2) == 0);
    cf_sa_pseudo *ps = NULL;
    REQUIRE(cf_sa_pseudo_create(&ps, ks.pseudo, 100, errbuf, sizeof(errbuf)) == CF_OK);
    cf_sa_pseudo_stats st;
    cf_sa_pseudo_stats_get(ps, &st);
    CHECK_EQ(st.slots, 128);
    /* 5000 distinct ids, skewed repeats: every answer equals the uncached hash */
    size_t mismatches = 0;
    for (int round = 0; round < 20000; round++) {
        char id[32];
        unsigned x = (unsigned)(rnd64() % 5000);
        if (round % 2 == 0) {
            x %= 40; /* a few busy merchants */
        }
        int n = snprintf(id, sizeof(id), "merchant-%u", x);
        uint8_t a[16], b[16];
        cf_sa_pseudonymize(ps, id, (size_t)n, a);
        cf_sa_pseudonymize_nocache(ps, id, (size_t)n, b);
        mismatches += memcmp(a, b, 16) != 0;
    }
    CHECK_EQ(mismatches, 0);
    cf_sa_pseudo_stats_get(ps, &st);
    CHECK(st.entries <= st.slots);
    CHECK(st.evictions > 0);
    CHECK(st.hits > 5000); /* the busy merchants stay cached */
    CHECK_EQ(st.hits + st.misses, 20000);
    /* the pseudonym is keyed BLAKE2b-128 */
    uint8_t want[16], got[16];
    crypto_generichash(want, 16, (const uint8_t *)"M1", 2, ks.pseudo->bytes, 32);
    cf_sa_pseudonymize(ps, "M1", 2, got);
    CHECK(memcmp(want, got, 16) == 0);
    cf_sa_pseudonymize(ps, "M1", 2, got);
    CHECK(memcmp(want, got, 16) == 0);
    /* different keys, different pseudonyms; long ids bypass the cache but still work */
    cf_sa_pseudonymize(ps, "M2", 2, got);
    CHECK(memcmp(want, got, 16) != 0);
    char longid[400];
    memset(longid, 'x', sizeof(longid));
    cf_sa_pseudonymize(ps, longid, sizeof(longid), got);
    cf_sa_pseudonymize_nocache(ps, longid, sizeof(longid), want);
    CHECK(memcmp(want, got, 16) == 0);
    cf_sa_pseudo *bad = NULL;
    CHECK_EQ(cf_sa_pseudo_create(&bad, ks.gw, 0, errbuf, sizeof(errbuf)), CF_E_INVAL);
    cf_sa_pseudo_destroy(ps);
    keyset_free(&ks);
}

/* ---- Paillier vectors --------------------------------------------------------------------- */

/* Minimal JSON scanning for the vector file: string values of flat objects in an array. */
typedef struct kv {
    int n;
    char key[24][24];
    char *val[24];
} kv;

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
        p++;
    }
    return p;
}

/* p at '"': returns a malloc'd copy (no escapes in this file) and advances past it. */
static char *jstr(const char **pp)
{
    const char *p = *pp + 1;
    const char *e = p;
    while (*e != '\0' && *e != '"') {
        e += (*e == '\\' && e[1] != '\0') ? 2 : 1;
    }
    char *s = malloc((size_t)(e - p) + 1);
    memcpy(s, p, (size_t)(e - p));
    s[e - p] = '\0';
    *pp = *e == '"' ? e + 1 : e;
    return s;
}

static const char *skip_value(const char *p)
{
    p = ws(p);
    if (*p == '"') {
        free(jstr(&p));
        return p;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p != '\0'; p++) {
            if (*p == '"') {
                free(jstr(&p));
                p--;
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
        }
        return p;
    }
    while (*p != '\0' && *p != ',' && *p != '}' && *p != ']') {
        p++;
    }
    return p;
}

/* Finds "name": [ and calls fn for each object element. Returns the element count. */
static int each_record(const char *json, const char *name, void (*fn)(const kv *, void *),
                       void *arg)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", name);
    const char *p = json;
    while ((p = strstr(p, pat)) != NULL) {
        const char *q = ws(p + strlen(pat));
        if (*q == ':' && *ws(q + 1) == '[') {
            p = ws(q + 1) + 1;
            break;
        }
        p++;
    }
    if (p == NULL) {
        return -1;
    }
    int count = 0;
    for (;;) {
        p = ws(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '{') {
            break;
        }
        p++;
        kv rec = {0};
        for (;;) {
            p = ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p != '"') {
                break;
            }
            char *k = jstr(&p);
            p = ws(p);
            if (*p == ':') {
                p = ws(p + 1);
            }
            if (*p == '"' && rec.n < 24) {
                snprintf(rec.key[rec.n], sizeof(rec.key[0]), "%s", k);
                rec.val[rec.n++] = jstr(&p);
            } else {
                p = skip_value(p);
            }
            free(k);
        }
        if (*p == '}') {
            p++;
        }
        fn(&rec, arg);
        for (int i = 0; i < rec.n; i++) {
            free(rec.val[i]);
        }
        count++;
    }
    return count;
}

static const char *get(const kv *r, const char *k)
{
    for (int i = 0; i < r->n; i++) {
        if (strcmp(r->key[i], k) == 0) {
            return r->val[i];
        }
    }
    return "";
}

/* Compares hex integers ignoring leading zeros and case. */
static bool hex_eq(const char *a, const char *b)
{
    while (*a == '0' && a[1] != '\0') {
        a++;
    }
    while (*b == '0' && b[1] != '\0') {
        b++;
    }
    return strcasecmp(a, b) == 0;
}

static char big[2100];
static int pass_count;

static void check_full_key(const kv *r, void *arg)
{
    (void)arg;
    cf_paillier *pk = NULL;
    if (cf_paillier_from_pq_hex(&pk, get(r, "p"), get(r, "q"), errbuf, sizeof(errbuf)) != CF_OK) {
        CHECK(!"full_key: key rejected");
        return;
    }
    bool ok = true;
    const char *names[] = {"n", "g", "lambda", "mu", "crt_lp", "crt_lq", "crt_mp", "crt_mq"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ok &= cf_paillier_param_hex(pk, names[i], big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, names[i]));
    }
    for (int crt = 0; crt < 2; crt++) {
        cf_paillier_set_crt_encrypt(pk, crt != 0);
        ok &= cf_paillier_encrypt_hex(pk, get(r, "m"), get(r, "r"), big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "c"));
        ok &= cf_paillier_decrypt_hex(pk, get(r, "c"), crt != 0, big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "m"));
    }
    for (int eng = CF_PAILLIER_OPENSSL; eng <= CF_PAILLIER_GMP; eng++) {
        cf_paillier_set_engine(pk, (cf_paillier_engine)eng);
        ok &= cf_paillier_encrypt_hex(pk, get(r, "m"), get(r, "r"), big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "c"));
        ok &= cf_paillier_decrypt_hex(pk, get(r, "c"), true, big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "m"));
    }
    if (!ok) {
        fprintf(stderr, "full_key %s failed\n", get(r, "id"));
    }
    CHECK(ok);
    pass_count += ok;
    /* negative checks: m >= n, r = 0, r = n, c >= n^2 */
    char nhex[600];
    REQUIRE(cf_paillier_param_hex(pk, "n", nhex, sizeof(nhex)) == CF_OK);
    CHECK_EQ(cf_paillier_encrypt_hex(pk, nhex, get(r, "r"), big, sizeof(big)), CF_E_INVAL);
    CHECK_EQ(cf_paillier_encrypt_hex(pk, get(r, "m"), "0", big, sizeof(big)), CF_E_INVAL);
    CHECK_EQ(cf_paillier_encrypt_hex(pk, get(r, "m"), nhex, big, sizeof(big)), CF_E_INVAL);
    CHECK_EQ(cf_paillier_encrypt_hex(pk, get(r, "m"), get(r, "p"), big, sizeof(big)), CF_E_INVAL);
    char n2[1200];
    snprintf(n2, sizeof(n2), "%s%s", nhex, nhex); /* > n^2 ... has 2x digits */
    snprintf(n2, sizeof(n2), "1%0*d", (int)(2 * strlen(nhex)), 0);
    CHECK_EQ(cf_paillier_decrypt_hex(pk, n2, true, big, sizeof(big)), CF_E_INVAL);
    cf_paillier_destroy(pk);
}

static void check_public(const kv *r, void *arg)
{
    (void)arg;
    cf_paillier *pk = NULL;
    REQUIRE(cf_paillier_from_n_hex(&pk, get(r, "n"), errbuf, sizeof(errbuf)) == CF_OK);
    bool ok = cf_paillier_encrypt_hex(pk, get(r, "m"), get(r, "r"), big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "c"));
    ok &= cf_paillier_param_hex(pk, "g", big, sizeof(big)) == CF_OK && hex_eq(big, get(r, "g"));
    CHECK(ok);
    pass_count += ok;
    CHECK_EQ(cf_paillier_decrypt_hex(pk, get(r, "c"), true, big, sizeof(big)), CF_E_INVAL);
    cf_paillier_destroy(pk);
}

static void check_add(const kv *r, void *arg)
{
    (void)arg;
    cf_paillier *pk = NULL;
    REQUIRE(cf_paillier_from_n_hex(&pk, get(r, "n"), errbuf, sizeof(errbuf)) == CF_OK);
    bool ok = cf_paillier_add_hex(pk, get(r, "c1"), get(r, "c2"), big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "c"));
    CHECK(ok);
    pass_count += ok;
    cf_paillier_destroy(pk);
}

static void check_mult(const kv *r, void *arg)
{
    (void)arg;
    cf_paillier *pk = NULL;
    REQUIRE(cf_paillier_from_n_hex(&pk, get(r, "n"), errbuf, sizeof(errbuf)) == CF_OK);
    bool ok = cf_paillier_mult_hex(pk, get(r, "c1"), get(r, "k"), big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, "c"));
    CHECK(ok);
    pass_count += ok;
    cf_paillier_destroy(pk);
}

static void check_keygen(const kv *r, void *arg)
{
    (void)arg;
    cf_paillier *pk = NULL;
    REQUIRE(cf_paillier_from_pq_hex(&pk, get(r, "p"), get(r, "q"), errbuf, sizeof(errbuf)) ==
            CF_OK);
    bool ok = true;
    const char *names[] = {"n", "g", "crt_lp", "crt_lq", "crt_mp", "crt_mq"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ok &= cf_paillier_param_hex(pk, names[i], big, sizeof(big)) == CF_OK &&
              hex_eq(big, get(r, names[i]));
    }
    CHECK(ok);
    pass_count += ok;
    cf_paillier_destroy(pk);
}

static void test_paillier_vectors(void)
{
    const char *path = cf_test_shared("vectors/paillier/paillier_kat.json");
    char *json = cf_test_slurp(path, NULL);
    REQUIRE(json != NULL);
    pass_count = 0;
    CHECK_EQ(each_record(json, "full_key", check_full_key, NULL), 10);
    CHECK_EQ(pass_count, 10);
    pass_count = 0;
    CHECK_EQ(each_record(json, "public_encrypt", check_public, NULL), 11);
    CHECK_EQ(pass_count, 11);
    pass_count = 0;
    CHECK_EQ(each_record(json, "add", check_add, NULL), 100);
    CHECK_EQ(pass_count, 100);
    pass_count = 0;
    CHECK_EQ(each_record(json, "mult", check_mult, NULL), 11);
    CHECK_EQ(pass_count, 11);
    pass_count = 0;
    CHECK_EQ(each_record(json, "keygen", check_keygen, NULL), 10);
    CHECK_EQ(pass_count, 10);
    free(json);
}

static void test_paillier_roundtrip(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_paillier *pk = NULL;
    REQUIRE(cf_paillier_keygen(&pk, 1024, errbuf, sizeof(errbuf)) == CF_OK);
    char nhex[600];
    REQUIRE(cf_paillier_param_hex(pk, "n", nhex, sizeof(nhex)) == CF_OK);
    CHECK_EQ(strlen(nhex), 256); /* exactly 1024 bits */
    size_t ctb = cf_paillier_ct_bytes(pk);
    CHECK_EQ(ctb, 256);
    REQUIRE(cf_paillier_pool_start(pk, 4) == CF_OK);
    uint8_t ct[256];
    int64_t want = 0;
    const int64_t vals[] = {5, -7, 1000000, INT64_C(-5000000000), 0, 42, -1, 3};
    mpz_t acc, c, m, n;
    mpz_inits(acc, c, m, n, NULL);
    mpz_set_ui(acc, 1);
    mpz_set_str(n, nhex, 16);
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        REQUIRE(cf_paillier_encrypt_i64(pk, vals[i], ct) == CF_OK);
        cf__paillier_import(c, ct, ctb);
        cf__paillier_mulmod(pk, acc, c);
        want += vals[i];
    }
    CHECK_OK(cf__paillier_decrypt_mpz(pk, acc, m));
    /* want < 0: the plaintext is n - |want| */
    mpz_sub(m, n, m);
    CHECK(want < 0 && mpz_cmp_ui(m, (unsigned long)(-want)) == 0);
    /* the lambda/mu path agrees with the CRT path */
    char ah[600], m1[600], m2[600];
    mpz_get_str(ah, 16, acc);
    CHECK_OK(cf_paillier_decrypt_hex(pk, ah, true, m1, sizeof(m1)));
    CHECK_OK(cf_paillier_decrypt_hex(pk, ah, false, m2, sizeof(m2)));
    CHECK(hex_eq(m1, m2));
    mpz_clears(acc, c, m, n, NULL);
    uint64_t from_pool = 0, inl = 0;
    cf_paillier_pool_stats(pk, &from_pool, &inl);
    CHECK_EQ(from_pool + inl, 8);
    cf_paillier_pool_stop(pk);
    cf_paillier_destroy(pk);
    CHECK_EQ(cf_paillier_keygen(&pk, 100, errbuf, sizeof(errbuf)), CF_E_INVAL);
}

/* ---- protectors --------------------------------------------------------------------------- */

static void test_protectors_agree(void)
{
    REQUIRE(cf_init() == CF_OK);
    keyset ks;
    REQUIRE(keyset_make(&ks, 2) == 0);
    cf_protect_conf conf;
    memset(&conf, 0, sizeof(conf));
    cf_sa_opts_default(&conf.sa);
    conf.gateway_key = ks.gw;
    conf.combiner_key = ks.comb;
    conf.ctx = &test_ctx;
    conf.paillier_bits = 1024;
    const char *names[] = {"plain", "lsa", "paillier"};
    enum { N = 60 };
    int64_t amounts[N];
    int64_t sum = 0;
    for (int e = 0; e < N; e++) {
        amounts[e] = (int64_t)(rnd64() % 100000) - 30000;
        sum += amounts[e];
    }
    for (int t = 0; t < 3; t++) {
        const cf_protector_ops *ops = cf_protector_find(names[t]);
        REQUIRE(ops != NULL);
        CHECK_EQ(ops->abi_version, CF_PROTECT_ABI);
        void *st = NULL;
        REQUIRE(ops->create(&st, &conf, errbuf, sizeof(errbuf)) == CF_OK);
        unsigned k = ops->parties(st);
        size_t accsz = ops->acc_size(st);
        uint8_t *accs[CF_KEY_PARTIES_MAX], *pay[CF_KEY_PARTIES_MAX];
        for (unsigned i = 0; i < k; i++) {
            accs[i] = malloc(accsz);
            pay[i] = malloc(ops->payload_size(st, i) + 1);
            ops->acc_zero(st, accs[i]);
        }
        CHECK_EQ(k, t == 1 ? 2 : 1);
        CHECK_EQ(ops->payload_size(st, 1), 0);
        for (int e = 0; e < N; e++) {
            int64_t vals[CF_SA_DIM_MAX];
            cf_sa_event_values(amounts[e], CF_SA_DIM_DEFAULT, vals);
            REQUIRE(ops->protect(st, (uint64_t)e + 77, vals, pay) == CF_OK);
            for (unsigned i = 0; i < k; i++) {
                REQUIRE(ops->absorb(st, i, (uint64_t)e + 77, pay[i], accs[i]) == CF_OK);
            }
        }
        cf_sa_result res;
        uint8_t key[16] = {0};
        CHECK_OK(ops->combine(st, 3, key, (const void *const *)accs, &res, errbuf, sizeof(errbuf)));
        CHECK(res.released);
        CHECK_EQ(res.v[0], N);
        CHECK_EQ(res_amount(&res), sum);
        CHECK(res.verified == (t == 1));
        if (t == 1) {
            accs[1][3] ^= 0x10; /* tamper with party 1's accumulator */
            CHECK_EQ(
                ops->combine(st, 3, key, (const void *const *)accs, &res, errbuf, sizeof(errbuf)),
                CF_E_AUTH);
            CHECK(!res.released);
        }
        for (unsigned i = 0; i < k; i++) {
            free(accs[i]);
            free(pay[i]);
        }
        ops->destroy(st);
    }
    CHECK(cf_protector_find("tee") == NULL);
    keyset_free(&ks);
}

/* Distributed mode: gateway, party 0, party 2 and the combiner as separate instances, each
 * with only its own key, wired through the payload bytes. */
static void test_protector_roles_split(void)
{
    REQUIRE(cf_init() == CF_OK);
    keyset ks;
    REQUIRE(keyset_make(&ks, 3) == 0);
    const cf_protector_ops *ops = cf_protector_find("lsa");
    REQUIRE(ops != NULL);
    cf_protect_conf base;
    memset(&base, 0, sizeof(base));
    cf_sa_opts_default(&base.sa);
    base.sa.parties = 3;
    base.ctx = &test_ctx;
    cf_protect_conf cg = base, cp = base, cc = base, c1 = base;
    cg.gateway_key = ks.gw;
    cp.party_key = ks.party[2];
    cp.party_index = 2;
    cc.combiner_key = ks.comb;
    c1.party_key = ks.party[1];
    c1.party_index = 1;
    void *gw = NULL, *p2 = NULL, *comb = NULL, *p1 = NULL;
    REQUIRE(ops->create(&gw, &cg, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(ops->create(&p2, &cp, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(ops->create(&p1, &c1, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(ops->create(&comb, &cc, errbuf, sizeof(errbuf)) == CF_OK);
    uint8_t acc[3][sizeof(cf_sa_vec)];
    for (int i = 0; i < 3; i++) {
        ops->acc_zero(p2, acc[i]);
    }
    uint8_t p0[64], none[1];
    uint8_t *pay[3] = {p0, none, none};
    int64_t sum = 0;
    for (uint64_t seq = 500; seq < 600; seq++) {
        int64_t vals[CF_SA_DIM_MAX];
        int64_t amount = (int64_t)(seq * 37 % 1000) - 300;
        sum += amount;
        cf_sa_event_values(amount, CF_SA_DIM_DEFAULT, vals);
        REQUIRE(ops->protect(gw, seq, vals, pay) == CF_OK);
        /* party 0 runs anywhere (no key); parties 1 and 2 need their own instance */
        REQUIRE(ops->absorb(p2, 0, seq, p0, acc[0]) == CF_OK);
        REQUIRE(ops->absorb(p1, 1, seq, none, acc[1]) == CF_OK);
        REQUIRE(ops->absorb(p2, 2, seq, none, acc[2]) == CF_OK);
    }
    /* an instance without a party's seed cannot play that party */
    CHECK_EQ(ops->absorb(p2, 1, 1, none, acc[1]), CF_E_STATE);
    /* the combiner cannot protect, the party cannot combine */
    CHECK_EQ(ops->protect(comb, 1, (const int64_t[3]){1, 1, 0}, pay), CF_E_STATE);
    const void *accs[3] = {acc[0], acc[1], acc[2]};
    cf_sa_result res;
    CHECK_EQ(ops->combine(p2, 9, acc[0], accs, &res, errbuf, sizeof(errbuf)), CF_E_STATE);
    CHECK_OK(ops->combine(comb, 9, acc[0], accs, &res, errbuf, sizeof(errbuf)));
    CHECK(res.verified && res.released);
    CHECK_EQ(res.v[0], 100);
    CHECK_EQ(res_amount(&res), sum);
    /* a corrupt payload (a value >= p) is refused by party 0 */
    memset(p0, 0xff, sizeof(p0));
    CHECK_EQ(ops->absorb(p2, 0, 1, p0, acc[0]), CF_E_CORRUPT);
    ops->destroy(gw);
    ops->destroy(p2);
    ops->destroy(p1);
    ops->destroy(comb);
    keyset_free(&ks);
}

static size_t key_merchant_country(void *opaque, const cf_event *ev, char *buf, size_t size)
{
    (void)opaque;
    int n = snprintf(buf, size, "%s|%s", ev->merchant, ev->country);
    return n < 0 ? size + 1 : (size_t)n;
}

/* The pipeline-shaped API: a batch of cf_event through gateway, k parties, combiner. */
static void test_event_batch_pipeline(void)
{
    REQUIRE(cf_init() == CF_OK);
    cf_sa_opts o = opts_k(3);
    o.min_count = 1;
    rig r;
    REQUIRE(rig_make(&r, &o) == 0);
    cf_sa_pseudo *ps = NULL;
    REQUIRE(cf_sa_pseudo_create(&ps, r.ks.pseudo, 0, errbuf, sizeof(errbuf)) == CF_OK);
    enum { N = 500 };
    static cf_event ev[N];
    static cf_sa_payload0 p0[N];
    static cf_sa_meta meta[N];
    static cf_sa_vec sh[N];
    int64_t want[4] = {0}, cnt[4] = {0};
    for (int e = 0; e < N; e++) {
        memset(&ev[e], 0, sizeof(ev[e]));
        ev[e].seq = 10000 + (uint64_t)e;
        ev[e].ts_us = 1000000 * (int64_t)e;
        ev[e].amount_minor = (e % 9 == 0 ? -1 : 1) * (100 + e);
        snprintf(ev[e].merchant, sizeof(ev[e].merchant), "M%d", e % 2);
        snprintf(ev[e].country, sizeof(ev[e].country), "%s", e % 3 == 0 ? "DE" : "FR");
        int g = (e % 2) * 2 + (e % 3 == 0 ? 0 : 1);
        want[g] += ev[e].amount_minor;
        cnt[g]++;
    }
    size_t bad = 99;
    REQUIRE(cf_sa_gateway_protect_events(r.gw, ps, ev, N, key_merchant_country, NULL, p0, meta,
                                         &bad) == CF_OK);
    /* metadata only for parties >= 1; party 0's copy carries the same metadata */
    CHECK(memcmp(&p0[7].meta, &meta[7], sizeof(meta[7])) == 0);
    CHECK_EQ(meta[7].seq, 10007);
    CHECK_EQ(meta[7].ts_us, 7000000);
    cf_sa_acc *acc[3];
    for (unsigned i = 0; i < 3; i++) {
        REQUIRE(cf_sa_acc_create(&acc[i], 64) == CF_OK);
        cf_sa_party_shares(r.party[i], i == 0 ? p0 : NULL, i == 0 ? NULL : meta, N, sh);
        for (int e = 0; e < N; e++) {
            /* one window per 100 s of event time */
            REQUIRE(cf_sa_acc_add(acc[i], (uint64_t)(meta[e].ts_us / 100000000), meta[e].key,
                                  &sh[e]) == CF_OK);
        }
    }
    /* 4 groups x 5 windows; totals per group must match */
    CHECK_EQ(cf_sa_acc_size(acc[0]), 20);
    int64_t got[4] = {0}, gotc[4] = {0};
    bool seen[5][4] = {{false}};
    for (int e = 0; e < N; e++) {
        uint64_t w = (uint64_t)(meta[e].ts_us / 100000000);
        int g = (e % 2) * 2 + (e % 3 == 0 ? 0 : 1);
        if (seen[w][g]) {
            continue; /* combine each (window, group) once */
        }
        seen[w][g] = true;
        cf_sa_vec part[3];
        for (unsigned i = 0; i < 3; i++) {
            REQUIRE(cf_sa_acc_get(acc[i], w, meta[e].key, &part[i]) == CF_OK);
        }
        cf_sa_result res;
        REQUIRE(cf_sa_combine(r.comb, w, meta[e].key, part, 3, &res, errbuf, sizeof(errbuf)) ==
                CF_OK);
        CHECK(res.verified && res.released);
        got[g] += res_amount(&res);
        gotc[g] += res.v[0];
    }
    for (int g = 0; g < 4; g++) {
        CHECK_EQ(got[g], want[g]);
        CHECK_EQ(gotc[g], cnt[g]);
    }
    /* the largest amount is protected like any other (no range to fall out of) */
    ev[42].amount_minor = INT64_MAX;
    CHECK_OK(cf_sa_gateway_protect_events(r.gw, ps, ev, N, NULL, NULL, p0, meta, &bad));
    for (unsigned i = 0; i < 3; i++) {
        cf_sa_acc_destroy(acc[i]);
    }
    cf_sa_pseudo_destroy(ps);
    rig_free(&r);
}

static void test_alloc_failure(void)
{
    REQUIRE(cf_init() == CF_OK);
    keyset ks;
    REQUIRE(keyset_make(&ks, 2) == 0);
    cf_sa_acc *a = (cf_sa_acc *)1;
    cf_alloc_fail_after(1); /* its one cf_ allocation; the table is sodium_malloc'd */
    CHECK_EQ(cf_sa_acc_create(&a, 100), CF_E_NOMEM);
    CHECK(a == NULL);
    for (long n = 1; n <= 2; n++) {
        cf_sa_pseudo *ps = (cf_sa_pseudo *)1;
        cf_alloc_fail_after(n);
        CHECK_EQ(cf_sa_pseudo_create(&ps, ks.pseudo, 0, errbuf, sizeof(errbuf)), CF_E_NOMEM);
        CHECK(ps == NULL);
    }
    cf_alloc_fail_after(1);
    cf_paillier *pk = (cf_paillier *)1;
    CHECK_EQ(cf_paillier_from_n_hex(&pk, "ff", errbuf, sizeof(errbuf)), CF_E_NOMEM);
    CHECK(pk == NULL);
    cf_alloc_fail_after(0);
    keyset_free(&ks);
}

#include "cf_test_main.h"
