/*
 * Tests for the micro-batching controller and the batcher. The controller runs against a
 * deterministic simulated stage (a single server whose batch cost is a + b*n, arrivals at a
 * piecewise-constant rate), so every assertion is about the model's decisions, not about
 * this machine's speed. The batcher runs on a real ring.
 */
#include "cf_test.h"

#include <math.h>
#include <pthread.h>

#include "confide/batch.h"
#include "confide/core.h"

static char errbuf[256];
#define EB errbuf, sizeof(errbuf)

/* ---- simulated stage ------------------------------------------------------------------------ */

typedef struct {
    double rate;  /* events per second */
    double dur_s; /* phase length */
} phase;

typedef struct {
    double a_ns, b_ns;  /* true costs */
    double noise;       /* relative service-time noise amplitude */
    double rate_jitter; /* relative arrival-rate jitter amplitude */
    uint64_t rng;
} sim_cfg;

typedef struct {
    uint32_t target_end[8]; /* target at the end of each phase */
    double settle_s[8];     /* time after phase start until the target stayed within 25% */
    double p99_ms_end[8];   /* live window p99 at the end of each phase */
    double model_ms_end[8]; /* modeled latency of the final target */
    double budget_ms;
    uint64_t changes_phase[8];
    uint64_t batches;
} sim_out;

static double urand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static void simulate(cf_batch_ctl *c, const phase *ph, int nph, sim_cfg *cfg, sim_out *out)
{
    memset(out, 0, sizeof(*out));
    int64_t t = INT64_C(1000000000); /* arrival clock (ns); starts at 1 s, stamps are > 0 */
    int64_t server_free = t;
    int64_t phase_start = t;
    for (int p = 0; p < nph; p++) {
        int64_t phase_end = phase_start + (int64_t)(ph[p].dur_s * 1e9);
        uint64_t changes0 = cf_batch_ctl_changes(c);
        uint32_t last_target = cf_batch_ctl_target(c);
        int64_t last_move = phase_start;
        while (t < phase_end) {
            double lam = ph[p].rate * (1.0 + cfg->rate_jitter * (2 * urand(&cfg->rng) - 1));
            uint32_t n = cf_batch_ctl_target(c);
            double linger = (double)cf_batch_ctl_linger_ns(c);
            double fill = (double)n / lam * 1e9;
            uint32_t size = n;
            /* Like the batcher: events already waiting (backlog while the server was busy)
             * are taken at once, up to the target; linger only applies to the rest. */
            double backlog_ns = (double)(server_free - t);
            if (backlog_ns >= fill) {
                /* the whole batch is already waiting */
            } else if (backlog_ns > 0 && !cf_batch_ctl_is_fixed(c) && fill > backlog_ns + linger) {
                fill = backlog_ns + linger;
                size = (uint32_t)(lam * fill / 1e9);
            } else if (!cf_batch_ctl_is_fixed(c) && fill > linger && backlog_ns <= 0) {
                fill = linger;
                size = (uint32_t)(lam * linger / 1e9);
                if (size < 1) {
                    size = 1;
                    fill = 1e9 / lam;
                }
            }
            int64_t first = t;
            int64_t last = t + (int64_t)fill;
            int64_t start = last > server_free ? last : server_free;
            double s = cfg->a_ns + cfg->b_ns * size;
            s *= 1.0 + cfg->noise * (2 * urand(&cfg->rng) - 1);
            int64_t end = start + (int64_t)s;
            server_free = end;
            cf_batch_ctl_observe(c, end, size, (uint64_t)size * 100, (int64_t)s, start - last,
                                 first, last);
            cf_batch_ctl_record_latency(c, end, (end - first) / 1000, 1);
            if (size > 1) {
                cf_batch_ctl_record_latency(c, end, (end - (first + last) / 2) / 1000, size - 1);
            }
            out->batches++;
            t = last + (int64_t)(1e9 / lam);
            uint32_t now_target = cf_batch_ctl_target(c);
            if (now_target != last_target) {
                double rel = fabs((double)now_target - last_target) / last_target;
                if (rel > 0.25) {
                    last_move = end;
                }
                last_target = now_target;
            }
        }
        out->target_end[p] = cf_batch_ctl_target(c);
        out->settle_s[p] = (double)(last_move - phase_start) / 1e9;
        out->changes_phase[p] = cf_batch_ctl_changes(c) - changes0;
        out->p99_ms_end[p] = (double)cf_batch_ctl_window_p99_us(c, server_free) / 1e3;
        out->model_ms_end[p] = cf_batch_ctl_modeled_latency_ns(c, out->target_end[p]) / 1e6;
        phase_start = t;
    }
    out->budget_ms = cf_batch_ctl_budget_ns(c) / 1e6;
}

/* n* = L a / (0.7 - L b), the documented utilization-target size. */
static double expected_n(double rate, double a_ns, double b_ns)
{
    double lam = rate / 1e9;
    return ceil(lam * a_ns / (0.7 - lam * b_ns));
}

static bool near(double got, double want, double lo, double hi)
{
    return got >= want * lo && got <= want * hi;
}

/* ---- cases ------------------------------------------------------------------------------------
 */

static void test_fit_converges(void)
{
    static const struct {
        double a, b;
    } truth[] = {{200000, 1000}, {50000, 300}, {1000000, 50}};
    for (size_t k = 0; k < sizeof(truth) / sizeof(truth[0]); k++) {
        cf_batch_ctl *c = NULL;
        REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 65536, 1 << 30, 50, EB) == CF_OK);
        static const uint32_t sizes[] = {10, 100, 1000, 50, 500, 3000, 7};
        uint64_t rng = 12345;
        int64_t now = INT64_C(1000000000);
        for (int i = 0; i < 400; i++) {
            uint32_t n = sizes[i % 7];
            double s = (truth[k].a + truth[k].b * n) * (1 + 0.02 * (2 * urand(&rng) - 1));
            now += (int64_t)s + 1000;
            cf_batch_ctl_observe(c, now, n, n * 100ULL, (int64_t)s, 0, 0, 0);
        }
        double a = 0;
        double b = 0;
        cf_batch_ctl_model(c, &a, &b, NULL, NULL);
        if (!near(a, truth[k].a, 0.9, 1.1) || !near(b, truth[k].b, 0.95, 1.05)) {
            fprintf(stderr, "fit %zu: a=%.0f (true %.0f) b=%.1f (true %.1f)\n", k, a, truth[k].a, b,
                    truth[k].b);
            cf_test_failures++;
        }
        cf_batch_ctl_destroy(c);
    }
}

static void test_step_load(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 65536, 1 << 30, 50, EB) == CF_OK);
    static const phase ph[] = {{50000, 3}, {1000000, 3}, {100000, 3}};
    sim_cfg cfg = {150000, 500, 0.05, 0.05, 99};
    sim_out o;
    simulate(c, ph, 3, &cfg, &o);
    for (int p = 0; p < 3; p++) {
        double want = expected_n(ph[p].rate, cfg.a_ns, cfg.b_ns);
        fprintf(stderr,
                "phase %d rate %.0f: target %u (model n* %.0f), settled after %.2f s, "
                "p99 %.2f ms, modeled %.2f ms, %llu changes\n",
                p, ph[p].rate, o.target_end[p], want, o.settle_s[p], o.p99_ms_end[p],
                o.model_ms_end[p], (unsigned long long)o.changes_phase[p]);
        /* The estimate includes noise; within -25%..+40% of the model's n*. */
        CHECK(near(o.target_end[p], want, 0.75, 1.4));
        /* Reacts to the step within a second, then stays put (within 25%). */
        CHECK(o.settle_s[p] <= 1.0);
        CHECK(o.changes_phase[p] <= 8);
        /* The chosen parameters keep modeled and simulated latency inside the budget. */
        CHECK(o.model_ms_end[p] <= o.budget_ms);
        CHECK(o.p99_ms_end[p] <= 200.0);
    }
    CHECK(o.target_end[1] > 10 * o.target_end[0]); /* grows with the load */
    CHECK(o.target_end[2] < o.target_end[1] / 10); /* and shrinks back */
    cf_batch_ctl_destroy(c);
}

/* An overload no size can sustain within the utilization target gets count_max. */
static void test_overload_uses_count_max(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 8192, 1 << 30, 50, EB) == CF_OK);
    static const phase ph[] = {{200000, 1}, {2000000, 2}};
    sim_cfg cfg = {100000, 400, 0.0, 0.0, 7}; /* 2M/s * 0.4 us = 0.8 > 0.7 */
    sim_out o;
    simulate(c, ph, 2, &cfg, &o);
    CHECK_EQ(o.target_end[1], 8192);
    cf_batch_ctl_destroy(c);
}

static void test_hysteresis(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 65536, 1 << 30, 50, EB) == CF_OK);
    static const phase ph[] = {{200000, 2}, {200000, 10}};
    sim_cfg cfg = {300000, 800, 0.3, 0.2, 4242}; /* noisy: +-30% service, +-20% rate */
    sim_out o;
    simulate(c, ph, 2, &cfg, &o);
    fprintf(stderr, "steady noisy input: %llu target changes in 10 s (%llu batches)\n",
            (unsigned long long)o.changes_phase[1], (unsigned long long)o.batches);
    /* At most about one change per dwell second. */
    CHECK(o.changes_phase[1] <= 10);
    double want = expected_n(200000, cfg.a_ns, cfg.b_ns);
    CHECK(near(o.target_end[1], want, 0.6, 1.6));
    cf_batch_ctl_destroy(c);
}

static void test_fixed_mode(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "fixed:64", 200, 4096, 1 << 20, 20, EB) == CF_OK);
    CHECK(cf_batch_ctl_is_fixed(c));
    CHECK_EQ(cf_batch_ctl_target(c), 64);
    CHECK_EQ(cf_batch_ctl_linger_ns(c), 20000000);
    static const phase ph[] = {{50000, 1}, {1000000, 1}, {1000, 1}};
    sim_cfg cfg = {150000, 500, 0.1, 0.1, 1};
    sim_out o;
    simulate(c, ph, 3, &cfg, &o);
    for (int p = 0; p < 3; p++) {
        CHECK_EQ(o.target_end[p], 64);
    }
    CHECK_EQ(cf_batch_ctl_changes(c), 0);
    CHECK_EQ(cf_batch_ctl_linger_ns(c), 20000000);
    cf_batch_ctl_destroy(c);

    static const char *const bad[] = {"fixed:0",  "fixed:",    "fixed:x", "fixed:4097",
                                      "fixed:-1", "fixed:12a", "adaptiv", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = NULL;
        CHECK_EQ(cf_batch_ctl_create(&c, bad[i], 200, 4096, 1 << 20, 20, EB), CF_E_INVAL);
        CHECK(c == NULL);
        CHECK(strstr(errbuf, "batch.mode") != NULL);
    }
    CHECK_EQ(cf_batch_ctl_create(&c, NULL, 0, 4096, 1 << 20, 20, EB), CF_E_INVAL);
    CHECK(strstr(errbuf, "slo.p99_ms") != NULL);
    CHECK_EQ(cf_batch_ctl_create(&c, NULL, 200, 0, 1 << 20, 20, EB), CF_E_INVAL);
    CHECK(strstr(errbuf, "batch.count_max") != NULL);
    CHECK_EQ(cf_batch_ctl_create(&c, NULL, 200, 10, 1 << 20, 70000, EB), CF_E_INVAL);
    CHECK(strstr(errbuf, "batch.linger_ms") != NULL);
    REQUIRE(cf_batch_ctl_create(&c, NULL, 200, 4096, 1 << 20, 20, EB) == CF_OK);
    CHECK(!cf_batch_ctl_is_fixed(c));
    CHECK_EQ(cf_batch_ctl_set_headroom(c, 1.0), CF_E_INVAL);
    CHECK_OK(cf_batch_ctl_set_headroom(c, 0.25));
    CHECK(cf_batch_ctl_budget_ns(c) == 150e6);
    cf_batch_ctl_destroy(c);
}

/* Large fixed costs (a = 30 ms, e.g. a slow disk): the model still keeps inside the budget. */
static void test_budget_large_fixed_cost(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 65536, 1 << 30, 100, EB) == CF_OK);
    static const phase ph[] = {{1000, 2}, {20000, 3}};
    sim_cfg cfg = {30000000, 2000, 0.05, 0.05, 77};
    sim_out o;
    simulate(c, ph, 2, &cfg, &o);
    for (int p = 0; p < 2; p++) {
        fprintf(stderr, "a=30ms phase %d: target %u modeled %.1f ms budget %.1f ms p99 %.1f ms\n",
                p, o.target_end[p], o.model_ms_end[p], o.budget_ms, o.p99_ms_end[p]);
        CHECK(o.model_ms_end[p] <= o.budget_ms);
        CHECK(o.p99_ms_end[p] <= 200.0);
    }
    /* The bytes bound caps the target: 100 bytes per event, 64 KiB -> at most 655. */
    cf_batch_ctl_destroy(c);
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 65536, 65536, 50, EB) == CF_OK);
    static const phase hi[] = {{2000000, 2}};
    sim_cfg cfg2 = {150000, 100, 0.0, 0.0, 3};
    simulate(c, hi, 1, &cfg2, &o);
    CHECK(o.target_end[0] <= 655);
    CHECK(o.target_end[0] >= 400);
    cf_batch_ctl_destroy(c);
}

static void test_latency_window(void)
{
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, NULL, 200, 4096, 1 << 20, 20, EB) == CF_OK);
    int64_t t0 = INT64_C(5000000000);
    CHECK_EQ(cf_batch_ctl_window_p99_us(c, t0), 0);
    cf_batch_ctl_record_latency(c, t0, 100000, 1000);
    CHECK_EQ(cf_batch_ctl_window_p99_us(c, t0 + 500000000), 100000);
    cf_batch_ctl_record_latency(c, t0 + 1500000000, 50, 100);
    /* The 100 ms slices older than one second have left the window. */
    CHECK_EQ(cf_batch_ctl_window_p99_us(c, t0 + 1500000000), 50);
    cf_batch_ctl_record_latency(c, t0 + 1600000000, 70, 100);
    CHECK_EQ(cf_batch_ctl_window_p99_us(c, t0 + 1600000000), 70);
    cf_batch_ctl_destroy(c);
}

/* ---- batcher ----------------------------------------------------------------------------------
 */

typedef struct {
    int released;
    uint64_t next_id;
    int order_errors;
} rel_state;

static void release_cb(void *opaque, cf_batch *in)
{
    rel_state *r = opaque;
    r->released++;
    cf_batch_destroy(in);
}

static cf_batch *input(uint64_t *id, uint32_t n)
{
    cf_batch *b = NULL;
    if (cf_batch_create(&b, n) != CF_OK) {
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        memset(&b->ev[i], 0, sizeof(b->ev[i]));
        b->ev[i].event_id = (*id)++;
        b->ev[i].ingest_ns = cf_now_ns();
    }
    b->n = n;
    return b;
}

static size_t hundred(const cf_event *ev)
{
    (void)ev;
    return 100;
}

static void test_batcher_bounds(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 64) == CF_OK);
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "fixed:10", 200, 64, 1 << 20, 1000, EB) == CF_OK);
    cf_batcher *b = NULL;
    REQUIRE(cf_batcher_create(&b, c, 64, 1 << 20, 1000) == CF_OK);
    uint64_t id = 1;
    /* 7 + 7 + 7 + 4 = 25 events in uneven input batches -> 10, 10, then 5 at close. */
    static const uint32_t sizes[] = {7, 7, 7, 4};
    for (int i = 0; i < 4; i++) {
        CHECK_OK(cf_ring_push(r, input(&id, sizes[i])));
    }
    cf_ring_close(r);
    rel_state rs = {0, 1, 0};
    cf_batch *out = NULL;
    uint32_t got[8];
    int nb = 0;
    uint64_t expect_id = 1;
    while (cf_batcher_next(b, r, &out, release_cb, &rs) == CF_OK) {
        REQUIRE(nb < 8);
        got[nb++] = out->n;
        for (uint32_t i = 0; i < out->n; i++) {
            if (out->ev[i].event_id != expect_id++) {
                rs.order_errors++;
            }
        }
        cf_batcher_done(b, out, cf_now_ns(), cf_now_ns());
    }
    CHECK_EQ(nb, 3);
    CHECK_EQ(got[0], 10);
    CHECK_EQ(got[1], 10);
    CHECK_EQ(got[2], 5);
    CHECK_EQ(rs.order_errors, 0);
    CHECK_EQ(rs.released, 4);
    CHECK_EQ(expect_id, 26);
    cf_batcher_destroy(b);
    cf_batch_ctl_destroy(c);
    cf_ring_destroy(r);

    /* Bytes bound: 100 bytes per event, 250 bytes max -> batches of 2. */
    REQUIRE(cf_ring_create(&r, 8) == CF_OK);
    REQUIRE(cf_batcher_create(&b, NULL, 64, 250, 1000) == CF_OK);
    cf_batcher_set_sizer(b, hundred);
    CHECK_OK(cf_ring_push(r, input(&id, 5)));
    cf_ring_close(r);
    nb = 0;
    while (cf_batcher_next(b, r, &out, release_cb, &rs) == CF_OK) {
        REQUIRE(nb < 8);
        got[nb++] = out->n;
        cf_batcher_done(b, out, 0, 0);
    }
    CHECK_EQ(nb, 3);
    CHECK_EQ(got[0], 2);
    CHECK_EQ(got[1], 2);
    CHECK_EQ(got[2], 1);
    cf_batcher_destroy(b);
    cf_ring_destroy(r);

    /* Shutdown before the ring is drained: the held input batch goes back, once. */
    REQUIRE(cf_ring_create(&r, 8) == CF_OK);
    REQUIRE(cf_batcher_create(&b, NULL, 4, 1 << 20, 1000) == CF_OK);
    CHECK_OK(cf_ring_push(r, input(&id, 10)));
    int before = rs.released;
    REQUIRE(cf_batcher_next(b, r, &out, release_cb, &rs) == CF_OK);
    CHECK_EQ(out->n, 4);
    cf_batcher_done(b, out, 0, 0);
    CHECK_EQ(cf_batcher_drop_input(b, release_cb, &rs), 6);
    CHECK_EQ(rs.released, before + 1);
    CHECK_EQ(cf_batcher_drop_input(b, release_cb, &rs), 0);
    CHECK_EQ(rs.released, before + 1);
    cf_batcher_destroy(b);
    cf_ring_destroy(r);
}

static void test_batcher_linger(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 8) == CF_OK);
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "fixed:100", 200, 1000, 1 << 20, 5, EB) == CF_OK);
    cf_batcher *b = NULL;
    REQUIRE(cf_batcher_create(&b, c, 1000, 1 << 20, 5) == CF_OK);
    uint64_t id = 1;
    CHECK_OK(cf_ring_push(r, input(&id, 3)));
    rel_state rs = {0, 1, 0};
    cf_batch *out = NULL;
    int64_t t0 = cf_now_ns();
    /* The ring stays open: only the linger deadline can release these 3 events. */
    CHECK_OK(cf_batcher_next(b, r, &out, release_cb, &rs));
    int64_t waited = cf_now_ns() - t0;
    REQUIRE(out != NULL);
    CHECK_EQ(out->n, 3);
    CHECK(waited >= 5000000); /* never before the deadline */
    CHECK_EQ(cf_batcher_pending(b), 0);
    cf_batcher_done(b, out, cf_now_ns(), cf_now_ns());
    cf_ring_close(r);
    CHECK_EQ(cf_batcher_next(b, r, &out, release_cb, &rs), CF_E_EOF);
    CHECK_EQ(rs.released, 1);
    cf_batcher_destroy(b);
    cf_batch_ctl_destroy(c);
    cf_ring_destroy(r);
}

/* Producer and batcher on two threads: every event comes out once, in order. */
typedef struct {
    cf_ring *r;
    uint64_t n_events;
} prod_arg;

static void *producer(void *arg)
{
    prod_arg *p = arg;
    uint64_t id = 1;
    uint64_t x = 5;
    while (id <= p->n_events) {
        uint32_t n = 1 + (uint32_t)(urand(&x) * 50);
        if (id + n - 1 > p->n_events) {
            n = (uint32_t)(p->n_events - id + 1);
        }
        cf_ring_push_wait(p->r, input(&id, n));
    }
    cf_ring_close(p->r);
    return NULL;
}

static void test_batcher_threads_adaptive(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 64) == CF_OK);
    cf_batch_ctl *c = NULL;
    REQUIRE(cf_batch_ctl_create(&c, "adaptive", 200, 512, 1 << 20, 2, EB) == CF_OK);
    cf_batcher *b = NULL;
    REQUIRE(cf_batcher_create(&b, c, 512, 1 << 20, 2) == CF_OK);
    prod_arg pa = {r, 200000};
    pthread_t t;
    pthread_create(&t, NULL, producer, &pa);
    rel_state rs = {0, 1, 0};
    cf_batch *out = NULL;
    uint64_t expect = 1;
    uint64_t batches = 0;
    while (cf_batcher_next(b, r, &out, release_cb, &rs) == CF_OK) {
        int64_t s = cf_now_ns();
        CHECK(out->n >= 1 && out->n <= 512);
        for (uint32_t i = 0; i < out->n; i++) {
            if (out->ev[i].event_id != expect++) {
                rs.order_errors++;
            }
        }
        cf_batcher_done(b, out, s, cf_now_ns());
        batches++;
    }
    pthread_join(t, NULL);
    CHECK_EQ(expect, 200001);
    CHECK_EQ(rs.order_errors, 0);
    CHECK(batches >= 1);
    CHECK(cf_batch_ctl_target(c) >= 1 && cf_batch_ctl_target(c) <= 512);
    cf_batcher_destroy(b);
    cf_batch_ctl_destroy(c);
    cf_ring_destroy(r);
}

static void test_alloc_failure(void)
{
    for (long n = 1; n <= 13; n++) {
        cf_batch_ctl *c = NULL;
        cf_alloc_fail_after(n);
        cf_err e = cf_batch_ctl_create(&c, NULL, 200, 64, 1 << 20, 5, EB);
        cf_alloc_fail_after(0);
        CHECK(e == CF_E_NOMEM || e == CF_OK);
        CHECK((e == CF_OK) == (c != NULL));
        cf_batch_ctl_destroy(c);
    }
}

#include "cf_test_main.h"
