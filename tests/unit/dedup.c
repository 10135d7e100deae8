#include "cf_test.h"

#include <sodium.h>

#include "confide/core.h"
#include "confide/dedup.h"
#include "confide/metrics.h"
#include "confide/runtime.h"

static const uint8_t key1[CF_DEDUP_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t key2[CF_DEDUP_KEY_LEN] = {9, 2, 3, 4, 5, 6, 7, 8};

static cf_dedup *make(int64_t horizon_us, uint64_t cap)
{
    cf_dedup *d = NULL;
    char err[128];
    if (cf_init() != CF_OK ||
        cf_dedup_create(&d, horizon_us, cap, key1, err, sizeof(err)) != CF_OK) {
        return NULL;
    }
    return d;
}

/* The stored hash is SipHash-2-4-128 of the id (8 bytes, little-endian) under a subkey that
 * keyed BLAKE2b derives from the secret: the state never holds the id itself, and another
 * secret gives other hashes. */
static void test_hash_keyed(void)
{
    cf_dedup *a = make(1000, 16);
    cf_dedup *b = NULL;
    char err[128];
    REQUIRE(a != NULL);
    REQUIRE(cf_dedup_create(&b, 1000, 16, key2, err, sizeof(err)) == CF_OK);
    uint64_t id = UINT64_C(0x1122334455667788);
    uint8_t ha[CF_DEDUP_HASH_LEN], ha2[CF_DEDUP_HASH_LEN], hb[CF_DEDUP_HASH_LEN];
    uint8_t want[CF_DEDUP_HASH_LEN], other[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(a, id, ha);
    cf_dedup_hash(a, id, ha2);
    cf_dedup_hash(b, id, hb);
    cf_dedup_hash(a, id + 1, other);
    const uint8_t le[8] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    static const char ctx[] = "confide dedup: siphashx24 subkey";
    uint8_t sub[crypto_shorthash_siphashx24_KEYBYTES];
    REQUIRE(crypto_generichash_blake2b(sub, sizeof(sub), (const uint8_t *)ctx, sizeof(ctx) - 1,
                                       key1, sizeof(key1)) == 0);
    REQUIRE(crypto_shorthash_siphashx24(want, le, 8, sub) == 0);
    CHECK(memcmp(ha, want, sizeof(ha)) == 0);
    CHECK(memcmp(ha, ha2, sizeof(ha)) == 0);
    CHECK(memcmp(ha, hb, sizeof(ha)) != 0);
    CHECK(memcmp(ha, other, sizeof(ha)) != 0);
    /* the secret itself is not the SipHash key (it is only used through the derivation) */
    uint8_t direct[CF_DEDUP_HASH_LEN];
    REQUIRE(crypto_shorthash_siphashx24(direct, le, 8, key1) == 0);
    CHECK(memcmp(ha, direct, sizeof(ha)) != 0);
    /* the same decisions with either key */
    CHECK_EQ(cf_dedup_check(a, id, 5), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(b, id, 5), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(a, id, 5), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(b, id, 5), CF_DEDUP_DUPLICATE);
    cf_dedup_destroy(a);
    cf_dedup_destroy(b);
    /* a random key (NULL): other hashes, the same decisions */
    cf_dedup *r = NULL;
    REQUIRE(cf_dedup_create(&r, 1000, 16, NULL, err, sizeof(err)) == CF_OK);
    uint8_t hr[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(r, id, hr);
    CHECK(memcmp(hr, ha, sizeof(hr)) != 0);
    CHECK_EQ(cf_dedup_check(r, id, 5), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(r, id, 5), CF_DEDUP_DUPLICATE);
    cf_dedup_destroy(r);
}

static void test_duplicate_basic(void)
{
    cf_dedup *d = make(1000, 16);
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_newest_us(d), INT64_MIN);
    CHECK_EQ(cf_dedup_check(d, 1, 100), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 1, 100), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(d, 2, 100), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 1, 150), CF_DEDUP_DUPLICATE); /* a retry with another time */
    CHECK_EQ(cf_dedup_check(d, 0, 100), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, UINT64_MAX, 100), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, UINT64_MAX, 100), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_size(d), 4);
    CHECK_EQ(cf_dedup_duplicates(d), 3);
    CHECK(cf_dedup_contains(d, 2));
    CHECK(!cf_dedup_contains(d, 3));
    CHECK_EQ(cf_dedup_evicted_full(d), 0);
    cf_dedup_destroy(d);
}

/* An id is remembered while newest - horizon <= its time: exactly at the horizon it still
 * is, one microsecond later it is forgotten and its repeat is accepted. */
static void test_horizon_boundary(void)
{
    cf_dedup *d = make(1000, 16);
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_check(d, 1, 0), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 1000), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 1, 1000), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_size(d), 2);
    CHECK_EQ(cf_dedup_check(d, 3, 1001), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_size(d), 2); /* id 1 reclaimed */
    CHECK_EQ(cf_dedup_expired(d), 1);
    CHECK(!cf_dedup_contains(d, 1));
    CHECK_EQ(cf_dedup_check(d, 1, 1001), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 1, 1001), CF_DEDUP_DUPLICATE);
    /* a jump far ahead forgets everything before it */
    CHECK_EQ(cf_dedup_check(d, 9, 1000000), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_size(d), 1);
    CHECK_EQ(cf_dedup_check(d, 2, 1000000), CF_DEDUP_NEW);
    cf_dedup_destroy(d);
}

/* A duplicate changes nothing: a retry stamped far in the future must not move the
 * horizon and make the state forget ids that are still within it. */
static void test_duplicate_does_not_advance(void)
{
    cf_dedup *d = make(1000, 16);
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_check(d, 1, 0), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 0), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 1, INT64_C(1) << 50), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_newest_us(d), 0);
    CHECK_EQ(cf_dedup_check(d, 2, 0), CF_DEDUP_DUPLICATE);
    /* extreme times do not overflow the horizon arithmetic */
    CHECK_EQ(cf_dedup_check(d, 3, INT64_MIN), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 4, INT64_MAX), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 4, INT64_MAX), CF_DEDUP_DUPLICATE);
    CHECK(!cf_dedup_contains(d, 1));
    cf_dedup_destroy(d);
}

/* Out of event-time order: an id behind a newer head is past the horizon before it is
 * reclaimed; lookups still treat it as forgotten, and its return replaces it. */
static void test_out_of_order(void)
{
    cf_dedup *d = make(100, 16);
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_check(d, 1, 1000), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 950), CF_DEDUP_NEW); /* 50 us late: within the horizon */
    CHECK_EQ(cf_dedup_check(d, 2, 950), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(d, 3, 1099), CF_DEDUP_NEW); /* cutoff 999: 2 is past it, 1 not */
    CHECK(cf_dedup_contains(d, 1));
    CHECK(!cf_dedup_contains(d, 2));
    CHECK_EQ(cf_dedup_size(d), 3); /* 2 still waits behind 1 */
    CHECK_EQ(cf_dedup_check(d, 2, 1050), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_size(d), 3); /* replaced, not doubled */
    CHECK_EQ(cf_dedup_check(d, 2, 1050), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(d, 5, 1200), CF_DEDUP_NEW); /* cutoff 1100: all but 5 go */
    CHECK_EQ(cf_dedup_size(d), 1);
    CHECK(!cf_dedup_contains(d, 1));
    CHECK(!cf_dedup_contains(d, 2));
    CHECK(!cf_dedup_contains(d, 3));
    cf_dedup_destroy(d);
}

/* An event already beyond the horizon when it arrives is accepted but not remembered. */
static void test_late_beyond_horizon(void)
{
    cf_dedup *d = make(100, 16);
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_check(d, 1, 1000), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 899), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_size(d), 1);
    CHECK_EQ(cf_dedup_check(d, 2, 899), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_newest_us(d), 1000);
    cf_dedup_destroy(d);
}

/* The memory cap: the id accepted earliest is forgotten to make room, counted once per id;
 * acceptance never stops. */
static void test_cap_oldest_evicted(void)
{
    cf_dedup *d = make(INT64_C(1) << 40, 4);
    REQUIRE(d != NULL);
    for (uint64_t id = 1; id <= 4; id++) {
        CHECK_EQ(cf_dedup_check(d, id, 10), CF_DEDUP_NEW);
    }
    CHECK_EQ(cf_dedup_size(d), 4);
    CHECK_EQ(cf_dedup_evicted_full(d), 0);
    CHECK_EQ(cf_dedup_check(d, 5, 10), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_evicted_full(d), 1);
    CHECK_EQ(cf_dedup_size(d), 4);
    CHECK(!cf_dedup_contains(d, 1));
    for (uint64_t id = 2; id <= 5; id++) {
        CHECK_EQ(cf_dedup_check(d, id, 10), CF_DEDUP_DUPLICATE);
    }
    CHECK_EQ(cf_dedup_check(d, 1, 10), CF_DEDUP_NEW); /* forgotten: accepted again */
    CHECK_EQ(cf_dedup_evicted_full(d), 2);            /* and 2 made room for it */
    CHECK(!cf_dedup_contains(d, 2));
    for (uint64_t id = 100; id < 1100; id++) {
        CHECK_EQ(cf_dedup_check(d, id, 10), CF_DEDUP_NEW);
    }
    CHECK_EQ(cf_dedup_size(d), 4);
    CHECK_EQ(cf_dedup_evicted_full(d), 1002);
    CHECK_EQ(cf_dedup_check(d, 1099, 10), CF_DEDUP_DUPLICATE);
    cf_dedup_destroy(d);
}

/* The ring and the table grow from their first size up to a cap that is not a power of two,
 * with expiries wrapping the ring in between; then the cap holds. */
static void test_cap_after_growth(void)
{
    cf_dedup *d = make(1000, 3000);
    REQUIRE(d != NULL);
    for (uint64_t id = 1; id <= 1500; id++) { /* 1000 us apart: each forgets the one before */
        CHECK_EQ(cf_dedup_check(d, id, (int64_t)id * 1001), CF_DEDUP_NEW);
    }
    CHECK_EQ(cf_dedup_size(d), 1);
    for (uint64_t id = 10001; id <= 15000; id++) {
        CHECK_EQ(cf_dedup_check(d, id, 1501 * 1001), CF_DEDUP_NEW);
    }
    CHECK_EQ(cf_dedup_size(d), 3000);
    CHECK_EQ(cf_dedup_evicted_full(d), 2000); /* 10001..12000 (1500 expired first) */
    uint64_t missing = 0, wrong = 0;
    for (uint64_t id = 10001; id <= 15000; id++) {
        bool want = id > 12000;
        missing += want && !cf_dedup_contains(d, id);
        wrong += !want && cf_dedup_contains(d, id);
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(cf_dedup_check(d, 14000, 0), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(d, 11000, 1501 * 1001), CF_DEDUP_NEW);
    cf_dedup_destroy(d);
}

/* Ids past the horizon make room before anything is evicted early. */
static void test_cap_expired_first(void)
{
    cf_dedup *d = make(100, 4);
    REQUIRE(d != NULL);
    for (uint64_t id = 1; id <= 4; id++) {
        CHECK_EQ(cf_dedup_check(d, id, (int64_t)id), CF_DEDUP_NEW);
    }
    CHECK_EQ(cf_dedup_check(d, 5, 102), CF_DEDUP_NEW); /* 1 is past the horizon: no eviction */
    CHECK_EQ(cf_dedup_evicted_full(d), 0);
    CHECK_EQ(cf_dedup_expired(d), 1);
    CHECK_EQ(cf_dedup_check(d, 2, 2), CF_DEDUP_DUPLICATE);
    cf_dedup_destroy(d);
}

/* Against a naive model of the contract (every accepted id with its time in a list), with
 * few distinct ids so that repeats, expiries and table clusters are frequent. */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void run_model(int N, int IDS, int64_t horizon, uint64_t cap, uint64_t min_dups)
{
    cf_dedup *d = make(horizon, cap); /* never full: the model has no cap */
    REQUIRE(d != NULL);
    int64_t *last = malloc((size_t)IDS * sizeof(int64_t)); /* remembered time per id */
    REQUIRE(last != NULL);
    for (int i = 0; i < IDS; i++) {
        last[i] = INT64_MIN;
    }
    int64_t newest = INT64_MIN, clock = 0;
    uint64_t dups = 0, mismatches = 0;
    for (int i = 0; i < N; i++) {
        clock += (int64_t)(rnd() % 40);
        int64_t ts = clock - (int64_t)(rnd() % 3000); /* out of order by up to 3 ms */
        uint64_t id = rnd() % IDS;
        int64_t cut = newest == INT64_MIN ? INT64_MIN : newest - horizon;
        bool want_dup = last[id] != INT64_MIN && last[id] >= cut;
        cf_dedup_result got = cf_dedup_check(d, id * UINT64_C(0x9E3779B97F4A7C15), ts);
        if ((got == CF_DEDUP_DUPLICATE) != want_dup) {
            mismatches++;
        }
        if (want_dup) {
            dups++;
            continue;
        }
        if (ts > newest) {
            newest = ts;
        }
        last[id] = ts >= newest - horizon ? ts : INT64_MIN;
    }
    CHECK_EQ(mismatches, 0);
    CHECK_EQ(cf_dedup_duplicates(d), dups);
    CHECK(dups >= min_dups); /* the case exercises repeats */
    uint64_t live = 0;
    for (int i = 0; i < IDS; i++) {
        if (last[i] != INT64_MIN && last[i] >= newest - horizon) {
            live++;
            CHECK(cf_dedup_contains(d, (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15)));
        }
    }
    CHECK(cf_dedup_size(d) >= live); /* plus out-of-order ids not reclaimed yet */
    CHECK(cf_dedup_expired(d) > 0);
    CHECK_EQ(cf_dedup_evicted_full(d), 0);
    free(last);
    cf_dedup_destroy(d);
}

static void test_model_random(void)
{
    run_model(60000, 700, 5000, 8192, 6000);
}

/* Many ids: the table doubles (rebuilt from the ring) several times while ids also expire
 * and repeat. */
static void test_model_growth(void)
{
    run_model(300000, 200000, 3000000, 400000, 20000);
}

static void test_create_invalid(void)
{
    cf_dedup *d = NULL;
    char err[128] = "";
    REQUIRE(cf_init() == CF_OK);
    CHECK_EQ(cf_dedup_create(&d, 0, 16, key1, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "horizon") != NULL);
    CHECK_EQ(cf_dedup_create(&d, -5, 16, key1, err, sizeof(err)), CF_E_INVAL);
    CHECK_EQ(cf_dedup_create(&d, 10, 0, key1, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "capacity") != NULL);
    CHECK_EQ(cf_dedup_create(&d, 10, CF_DEDUP_CAPACITY_MAX + 1, key1, err, sizeof(err)),
             CF_E_INVAL);
    CHECK(d == NULL);
    CHECK_OK(cf_dedup_create(&d, 10, 1, key1, err, sizeof(err)));
    REQUIRE(d != NULL);
    CHECK_EQ(cf_dedup_check(d, 1, 0), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 0), CF_DEDUP_NEW);
    CHECK_EQ(cf_dedup_check(d, 2, 0), CF_DEDUP_DUPLICATE);
    CHECK_EQ(cf_dedup_check(d, 1, 0), CF_DEDUP_NEW);
    cf_dedup_destroy(d);
    cf_dedup_destroy(NULL);
}

static void test_capacity_for_bytes(void)
{
    CHECK_EQ(cf_dedup_capacity_for_bytes(0), 0);
    CHECK_EQ(cf_dedup_capacity_for_bytes(20), 0);
    CHECK(cf_dedup_capacity_for_bytes(64) >= 1);
    uint64_t mb64 = UINT64_C(64) << 20;
    CHECK_EQ(cf_dedup_capacity_for_bytes(mb64), UINT64_C(1572864)); /* 42.7 bytes per id */
    for (uint64_t b = 64; b < (UINT64_C(1) << 34); b = b * 3 / 2 + 7) {
        uint64_t cap = cf_dedup_capacity_for_bytes(b);
        CHECK(cap >= 1);
        CHECK(cap <= CF_DEDUP_CAPACITY_MAX);
        CHECK(cap * 24 <= b);
        if (b >= 4096 && cap < CF_DEDUP_CAPACITY_MAX) {
            CHECK(cap * 64 >= b); /* at most 64 bytes per id */
        }
    }
    cf_dedup *d = make(10, cf_dedup_capacity_for_bytes(UINT64_C(1) << 20));
    REQUIRE(d != NULL);
    CHECK(cf_dedup_memory_bytes(d) <= (UINT64_C(1) << 20));
    CHECK(cf_dedup_memory_bytes(d) >= (UINT64_C(1) << 19));
    cf_dedup_destroy(d);
}

static void test_alloc_failure(void)
{
    REQUIRE(cf_init() == CF_OK);
    int ok_at = -1;
    for (long nth = 1; nth < 10 && ok_at < 0; nth++) {
        cf_dedup *d = NULL;
        char err[128];
        cf_alloc_fail_after(nth);
        cf_err rc = cf_dedup_create(&d, 10, 100, key1, err, sizeof(err));
        cf_alloc_fail_after(0);
        if (rc == CF_OK) {
            ok_at = (int)nth;
            CHECK_EQ(cf_dedup_check(d, 1, 0), CF_DEDUP_NEW);
        } else {
            CHECK_EQ(rc, CF_E_NOMEM);
            CHECK(d == NULL);
        }
        cf_dedup_destroy(d);
    }
    CHECK(ok_at > 1); /* at least one failure was injected and handled */
}

/* ---- in the pipeline ---- */

typedef struct seen {
    uint64_t n, repeats;
    uint8_t *hit; /* per event_id */
} seen;

static void sink_ids(void *opaque, const cf_batch *b)
{
    seen *s = opaque;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t id = b->ev[i].event_id;
        s->repeats += s->hit[id];
        s->hit[id] = 1;
        s->n++;
    }
}

/* 5000 events, every 7th sent again 3 records later: the sink never sees an id twice, the
 * counts reconcile, and the metrics count the duplicates. With the horizon at 0 the repeats
 * pass as before. */
static void run_pipeline(const char *horizon, bool want_dedup)
{
    enum { N = 5000 };
    size_t cap = (size_t)N * 2 * 96 + 128, len = 0;
    char *csv = malloc(cap);
    REQUIRE(csv != NULL);
    len += (size_t)snprintf(csv + len, cap - len,
                            "event_id,ts,account,merchant,amount,currency,type,country,channel,"
                            "fraud,fraud_scenario\n");
    int reps = 0;
    for (int i = 0; i < N; i++) {
        int ids[2] = {i, i - 3};
        for (int k = 0; k < (i >= 3 && (i - 3) % 7 == 0 ? 2 : 1); k++) {
            int id = ids[k];
            len += (size_t)snprintf(csv + len, cap - len,
                                    "%d,2018-04-01T%02d:%02d:%02dZ,C%d,T%d,%d.00,EUR,PAYMENT,BE,"
                                    "POS,0,0\n",
                                    id, id / 3600 % 24, id / 60 % 60, id % 60, id % 50, id % 70,
                                    1 + id % 90);
            reps += k;
        }
    }
    cf_config *c = NULL;
    char err[256] = "";
    REQUIRE(cf_config_create(&c) == CF_OK);
    CHECK_OK(cf_config_set(c, "protect", "none", err, sizeof(err)));
    CHECK_OK(cf_config_set(c, "audit.enabled", "false", err, sizeof(err)));
    CHECK_OK(cf_config_set(c, "input.dedup_horizon_ms", horizon, err, sizeof(err)));
    cf_pipeline *p = NULL;
    CHECK_OK(cf_pipeline_create(&p, c, err, sizeof(err)));
    REQUIRE(p != NULL);
    seen sn = {.hit = calloc(N, 1)};
    REQUIRE(sn.hit != NULL);
    cf_pipeline_set_input_buffer(p, csv, len);
    cf_pipeline_set_sink_hook(p, sink_ids, &sn);
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    CHECK_EQ(s.read, N + reps);
    CHECK_EQ(s.read, s.accepted + s.dead_lettered);
    CHECK(reps > 600);
    char *text = NULL;
    size_t tlen = 0;
    CHECK_OK(cf_metrics_expose(cf_pipeline_metrics(p), &text, &tlen));
    REQUIRE(text != NULL);
    char want[128];
    if (want_dedup) {
        CHECK_EQ(s.accepted, N);
        CHECK_EQ(s.dead_lettered, reps);
        CHECK_EQ(s.duplicates, reps);
        CHECK_EQ(sn.n, N);
        CHECK_EQ(sn.repeats, 0);
        snprintf(want, sizeof(want), "\nconfide_dedup_duplicates_total %d\n", reps);
        CHECK(strstr(text, want) != NULL);
        snprintf(want, sizeof(want),
                 "\nconfide_dead_letters_total{reason=\"duplicate_event_id\"} %d\n", reps);
        CHECK(strstr(text, want) != NULL);
        CHECK(strstr(text, "\nconfide_dedup_ids 5000\n") != NULL); /* all within 24 h */
        CHECK(strstr(text, "\nconfide_dedup_full 0\n") != NULL);
        CHECK(strstr(text, "\nconfide_dedup_evicted_total 0\n") != NULL);
        CHECK(strstr(text, "\nconfide_dedup_capacity_ids 1572864\n") != NULL);
    } else {
        CHECK_EQ(s.accepted, N + reps);
        CHECK_EQ(s.duplicates, 0);
        CHECK_EQ(sn.repeats, reps); /* what happened before: counted twice */
        CHECK(strstr(text, "confide_dedup_") == NULL);
    }
    cf_free(text);
    free(sn.hit);
    free(csv);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
}

static void test_pipeline_rejects_repeats(void)
{
    run_pipeline("86400000", true);
}

static void test_pipeline_off(void)
{
    run_pipeline("0", false);
}

#include "cf_test_main.h"
