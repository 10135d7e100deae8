#include "cf_test.h"

#include <sys/stat.h>

#include "confide/core.h"
#include "confide/window.h"

/* ---- a result collector ---------------------------------------------------------------- */

typedef struct res {
    int64_t start, end;
    uint8_t key[64];
    size_t key_len;
    int64_t v[3]; /* plain: sum, overflow; custom: three components */
    uint64_t count, first, last;
    bool update;
} res;

typedef struct coll {
    res *r;
    size_t n, cap;
    size_t vsize;
    uint64_t late_n;
    cf_window_late last_late;
} coll;

static void on_result(void *opaque, const cf_window_result *r)
{
    coll *c = opaque;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->r = realloc(c->r, c->cap * sizeof(res));
        if (c->r == NULL) {
            abort();
        }
    }
    res *x = &c->r[c->n++];
    memset(x, 0, sizeof(*x));
    x->start = r->window_start_us;
    x->end = r->window_end_us;
    x->key_len = r->key_len < 64 ? r->key_len : 64;
    memcpy(x->key, r->key, x->key_len);
    memcpy(x->v, r->value, c->vsize);
    x->count = r->count;
    x->first = r->first_index;
    x->last = r->last_index;
    x->update = r->update;
}

static void on_late(void *opaque, const cf_window_late *l)
{
    coll *c = opaque;
    c->late_n++;
    c->last_late = *l;
}

static int cmp_res(const void *a, const void *b)
{
    const res *x = a, *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0) {
        return c;
    }
    return (int)x->key_len - (int)y->key_len;
}

static int cmp_res_order(const void *a, const void *b)
{
    int c = cmp_res(a, b);
    if (c != 0) {
        return c;
    }
    const res *x = a, *y = b;
    return x->v[2] < y->v[2] ? -1 : (x->v[2] > y->v[2]);
}

static bool same_results(coll *a, coll *b)
{
    if (a->n != b->n) {
        fprintf(stderr, "result counts differ: %zu vs %zu\n", a->n, b->n);
        return false;
    }
    qsort(a->r, a->n, sizeof(res), cmp_res);
    qsort(b->r, b->n, sizeof(res), cmp_res);
    for (size_t i = 0; i < a->n; i++) {
        res *x = &a->r[i], *y = &b->r[i];
        if (x->start != y->start || x->end != y->end || x->key_len != y->key_len ||
            memcmp(x->key, y->key, x->key_len) != 0 || memcmp(x->v, y->v, sizeof(x->v)) != 0 ||
            x->count != y->count || x->first != y->first || x->last != y->last) {
            fprintf(stderr, "result %zu differs\n", i);
            return false;
        }
    }
    return true;
}

static bool mk_secure; /* mk() creates operators with secure_memory */

static cf_window *mk(coll *c, int64_t size, int64_t slide, int64_t delay, int64_t lateness)
{
    cf_window_conf conf;
    cf_window_conf_default(&conf);
    conf.secure_memory = mk_secure;
    conf.size_us = size;
    conf.slide_us = slide;
    conf.max_delay_us = delay;
    conf.lateness_us = lateness;
    conf.value = cf_window_plain_ops;
    conf.on_result = on_result;
    conf.on_late = on_late;
    conf.opaque = c;
    memset(c, 0, sizeof(*c));
    c->vsize = sizeof(cf_window_plain);
    cf_window *w = NULL;
    char err[256];
    if (cf_window_create(&w, &conf, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "create: %s\n", err);
        return NULL;
    }
    return w;
}

static cf_err add(cf_window *w, const char *key, int64_t ts, uint64_t seq, int64_t amount)
{
    cf_window_plain v = {.sum_minor = amount, .overflow = 0};
    return cf_window_add(w, (const uint8_t *)key, strlen(key), ts, seq, &v);
}

static res *find(coll *c, int64_t start, const char *key)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->r[i].start == start && c->r[i].key_len == strlen(key) &&
            memcmp(c->r[i].key, key, c->r[i].key_len) == 0) {
            return &c->r[i];
        }
    }
    return NULL;
}

#define S 1000000LL /* one second in us */

static void test_tumbling_basic(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 0, 0);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "a", 1 * S, 1, 100));
    CHECK_OK(add(w, "b", 2 * S, 2, 5));
    CHECK_OK(add(w, "a", 3 * S, 3, 200));
    CHECK_EQ(c.n, 0);
    CHECK_OK(add(w, "a", 11 * S, 4, 7)); /* watermark 11 s: window [0,10) fires */
    CHECK_EQ(c.n, 2);
    /* Emitted in key order within the window. */
    CHECK_EQ(c.r[0].key[0], 'a');
    CHECK_EQ(c.r[0].v[0], 300);
    CHECK_EQ(c.r[0].count, 2);
    CHECK_EQ(c.r[0].first, 1);
    CHECK_EQ(c.r[0].last, 3);
    CHECK_EQ(c.r[0].end, 10 * S);
    CHECK_EQ(c.r[1].key[0], 'b');
    CHECK_EQ(c.r[1].v[0], 5);
    cf_window_flush(w);
    CHECK_EQ(c.n, 3);
    CHECK_EQ(c.r[2].start, 10 * S);
    CHECK_EQ(c.r[2].v[0], 7);
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.events, 4);
    CHECK_EQ(st.results, 3);
    CHECK_EQ(st.keys_live, 0);
    CHECK_EQ(st.windows_open, 0);
    cf_window_destroy(w);
    free(c.r);
}

static void test_boundary_end_goes_next(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 100 * S, 0);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "k", 10 * S, 1, 1));     /* exactly at end of [0,10): next window */
    CHECK_OK(add(w, "k", 10 * S - 1, 2, 2)); /* last microsecond of [0,10) */
    CHECK_OK(add(w, "k", 0, 3, 4));          /* first microsecond of [0,10) */
    CHECK_OK(add(w, "k", -1, 4, 8));         /* negative time: [-10 s, 0) */
    cf_window_flush(w);
    REQUIRE(c.n == 3);
    res *a = find(&c, -10 * S, "k");
    res *b = find(&c, 0, "k");
    res *d = find(&c, 10 * S, "k");
    REQUIRE(a != NULL && b != NULL && d != NULL);
    CHECK_EQ(a->v[0], 8);
    CHECK_EQ(b->v[0], 6);
    CHECK_EQ(b->count, 2);
    CHECK_EQ(d->v[0], 1);
    CHECK_EQ(d->end, 20 * S);
    /* Firing happens when the watermark reaches the end exactly. */
    coll c2;
    cf_window *w2 = mk(&c2, 10 * S, 0, 0, 0);
    REQUIRE(w2 != NULL);
    CHECK_OK(add(w2, "k", 5 * S, 1, 1));
    cf_window_advance(w2, 10 * S - 1);
    CHECK_EQ(c2.n, 0);
    cf_window_advance(w2, 10 * S);
    CHECK_EQ(c2.n, 1);
    cf_window_destroy(w2);
    free(c2.r);
    cf_window_destroy(w);
    free(c.r);
}

static void test_sliding_membership(void)
{
    coll c;
    cf_window *w = mk(&c, 30 * S, 10 * S, 0, 0);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "k", 25 * S, 1, 1)); /* [0,30) [10,40) [20,50) */
    CHECK_OK(add(w, "k", 30 * S, 2, 2)); /* [10,40) [20,50) [30,60) */
    cf_window_flush(w);
    CHECK_EQ(c.n, 4);
    res *r0 = find(&c, 0, "k"), *r1 = find(&c, 10 * S, "k"), *r2 = find(&c, 20 * S, "k"),
        *r3 = find(&c, 30 * S, "k");
    REQUIRE(r0 && r1 && r2 && r3);
    CHECK_EQ(r0->v[0], 1);
    CHECK_EQ(r1->v[0], 3);
    CHECK_EQ(r2->v[0], 3);
    CHECK_EQ(r3->v[0], 2);
    CHECK_EQ(r3->end, 60 * S);
    /* Every event is in size/slide windows: total count = events * 3. */
    uint64_t total = 0;
    for (size_t i = 0; i < c.n; i++) {
        total += c.r[i].count;
    }
    CHECK_EQ(total, 6);
    /* A slide that does not divide the size: ts=5 s, size 10, slide 4 -> starts -4, 0, 4. */
    coll c2;
    cf_window *w2 = mk(&c2, 10 * S, 4 * S, 0, 0);
    REQUIRE(w2 != NULL);
    CHECK_OK(add(w2, "k", 5 * S, 1, 1));
    cf_window_flush(w2);
    CHECK_EQ(c2.n, 3);
    CHECK(find(&c2, -4 * S, "k") != NULL);
    CHECK(find(&c2, 0, "k") != NULL);
    CHECK(find(&c2, 4 * S, "k") != NULL);
    cf_window_destroy(w2);
    free(c2.r);
    cf_window_destroy(w);
    free(c.r);
}

/* A deterministic PRNG so failures reproduce. */
static uint64_t rng_state = 0x12345678;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct tev {
    int64_t ts;
    uint64_t seq;
    int64_t amount;
    char key[8];
    int64_t arrive;
} tev;

static int cmp_arrive(const void *a, const void *b)
{
    const tev *x = a, *y = b;
    if (x->arrive != y->arrive) {
        return x->arrive < y->arrive ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Events in time order, then an arrival order in which each is at most `delay` late. */
static tev *make_stream(size_t n, int64_t delay, bool shuffle)
{
    tev *e = calloc(n, sizeof(tev));
    int64_t t = 0;
    for (size_t i = 0; i < n; i++) {
        t += (int64_t)(rnd() % (2 * S));
        e[i].ts = t;
        e[i].seq = i + 1;
        e[i].amount = (int64_t)(rnd() % 100000) - 1000;
        snprintf(e[i].key, sizeof(e[i].key), "k%u", (unsigned)(rnd() % 17));
        int64_t jitter = (int64_t)(rnd() % (uint64_t)(delay + 1)); /* drawn either way */
        e[i].arrive = shuffle ? t + jitter : t;
    }
    qsort(e, n, sizeof(tev), cmp_arrive);
    return e;
}

static void run_stream(cf_window *w, const tev *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        add(w, e[i].key, e[i].ts, e[i].seq, e[i].amount);
    }
    cf_window_flush(w);
}

static void test_shuffled_equals_sorted(void)
{
    const size_t n = 20000;
    const int64_t delay = 90 * S;
    int64_t shapes[3][2] = {{60 * S, 0}, {60 * S, 20 * S}, {45 * S, 10 * S}};
    for (int s = 0; s < 3; s++) {
        rng_state = 777;
        tev *sorted = make_stream(n, delay, false);
        rng_state = 777;
        tev *shuf = make_stream(n, delay, true);
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) {
            moved += sorted[i].seq != shuf[i].seq;
        }
        CHECK(moved > n / 2); /* the shuffle really reorders */
        coll a, b;
        cf_window *wa = mk(&a, shapes[s][0], shapes[s][1], delay, 0);
        cf_window *wb = mk(&b, shapes[s][0], shapes[s][1], delay, 0);
        REQUIRE(wa != NULL && wb != NULL);
        run_stream(wa, sorted, n);
        run_stream(wb, shuf, n);
        cf_window_stats sa, sb;
        cf_window_stats_get(wa, &sa);
        cf_window_stats_get(wb, &sb);
        CHECK_EQ(sa.late_events, 0);
        CHECK_EQ(sb.late_events, 0);
        CHECK(a.n > 100);
        if (!same_results(&a, &b)) {
            fprintf(stderr, "shape %d differs\n", s);
            CHECK(0);
        }
        /* With too small a max_delay the same shuffle produces late events. */
        coll d;
        cf_window *wd = mk(&d, shapes[s][0], shapes[s][1], 0, 0);
        REQUIRE(wd != NULL);
        run_stream(wd, shuf, n);
        cf_window_stats sd;
        cf_window_stats_get(wd, &sd);
        CHECK(sd.late_events > 0);
        CHECK_EQ(d.late_n, sd.late_events);
        cf_window_destroy(wa);
        cf_window_destroy(wb);
        cf_window_destroy(wd);
        free(a.r);
        free(b.r);
        free(d.r);
        free(sorted);
        free(shuf);
    }
}

/* Sliding windows against a brute-force reference: one row per (event, window), sorted and
 * summed; the operator sees the stream shuffled within max_delay. */
typedef struct brow {
    int64_t start;
    char key[8];
    int64_t sum;
    uint64_t count, first, last;
} brow;

static int cmp_brow(const void *a, const void *b)
{
    const brow *x = a, *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

static void test_sliding_differential(void)
{
    const size_t n = 6000;
    const int64_t delay = 40 * S;
    int64_t shapes[3][2] = {{60 * S, 20 * S}, {45 * S, 10 * S}, {30 * S, 30 * S}};
    for (int sh = 0; sh < 3; sh++) {
        int64_t size = shapes[sh][0], slide = shapes[sh][1];
        rng_state = 31337 + (uint64_t)sh;
        tev *ev = make_stream(n, delay, true);
        size_t cap = n * (size_t)(size / slide + 2), m = 0;
        brow *rows = malloc(cap * sizeof(brow));
        for (size_t i = 0; i < n; i++) {
            int64_t r = ev[i].ts % slide;
            int64_t last = ev[i].ts - (r < 0 ? r + slide : r);
            for (int64_t st = last; st > ev[i].ts - size; st -= slide) {
                brow *b = &rows[m++];
                b->start = st;
                strcpy(b->key, ev[i].key);
                b->sum = ev[i].amount;
                b->count = 1;
                b->first = b->last = ev[i].seq;
            }
        }
        qsort(rows, m, sizeof(brow), cmp_brow);
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            if (k > 0 && cmp_brow(&rows[k - 1], &rows[i]) == 0) {
                brow *b = &rows[k - 1];
                b->sum += rows[i].sum;
                b->count++;
                b->first = rows[i].first < b->first ? rows[i].first : b->first;
                b->last = rows[i].last > b->last ? rows[i].last : b->last;
            } else {
                rows[k++] = rows[i];
            }
        }
        coll c;
        cf_window *w = mk(&c, size, slide, delay, 0);
        REQUIRE(w != NULL);
        run_stream(w, ev, n);
        CHECK_EQ(c.n, k);
        qsort(c.r, c.n, sizeof(res), cmp_res);
        size_t bad = 0;
        for (size_t i = 0; i < k && i < c.n; i++) {
            res *x = &c.r[i];
            if (x->start != rows[i].start || x->end != rows[i].start + size ||
                x->key_len != strlen(rows[i].key) || memcmp(x->key, rows[i].key, x->key_len) != 0 ||
                x->v[0] != rows[i].sum || x->count != rows[i].count || x->first != rows[i].first ||
                x->last != rows[i].last) {
                bad++;
            }
        }
        CHECK_EQ(bad, 0);
        cf_window_stats st;
        cf_window_stats_get(w, &st);
        CHECK_EQ(st.late_events, 0);
        cf_window_destroy(w);
        free(c.r);

        /* A watermark too eager for the disorder, but lateness covering it: windows fire
         * early and late events re-emit updates; the last result per (window, key) must
         * equal the reference. */
        w = mk(&c, size, slide, delay / 8, delay);
        REQUIRE(w != NULL);
        run_stream(w, ev, n);
        cf_window_stats_get(w, &st);
        CHECK_EQ(st.late_events, 0);
        CHECK(st.late_updates > 0);
        /* Keep the last emission of each (window, key): a stable sort by key, then runs. */
        for (size_t i = 0; i < c.n; i++) {
            c.r[i].v[2] = (int64_t)i; /* emission order (plain values use v[0], v[1]) */
        }
        qsort(c.r, c.n, sizeof(res), cmp_res_order);
        size_t u = 0;
        for (size_t i = 0; i < c.n; i++) {
            if (i + 1 < c.n && cmp_res(&c.r[i], &c.r[i + 1]) == 0) {
                continue;
            }
            c.r[u++] = c.r[i];
        }
        CHECK_EQ(u, k);
        bad = 0;
        for (size_t i = 0; i < k && i < u; i++) {
            res *x = &c.r[i];
            if (x->start != rows[i].start || x->v[0] != rows[i].sum || x->count != rows[i].count ||
                x->first != rows[i].first || x->last != rows[i].last) {
                bad++;
            }
        }
        CHECK_EQ(bad, 0);
        cf_window_destroy(w);
        free(c.r);
        free(rows);
        free(ev);
    }
}

static void test_late_within_lateness_updates(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 0, 5 * S);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "a", 1 * S, 1, 10));
    CHECK_OK(add(w, "a", 12 * S, 2, 1)); /* wm 12: [0,10) fires */
    REQUIRE(c.n == 1);
    CHECK(!c.r[0].update);
    CHECK_EQ(c.r[0].v[0], 10);
    CHECK_OK(add(w, "a", 3 * S, 3, 5)); /* late, within lateness: updated result */
    REQUIRE(c.n == 2);
    CHECK(c.r[1].update);
    CHECK_EQ(c.r[1].start, 0);
    CHECK_EQ(c.r[1].v[0], 15);
    CHECK_EQ(c.r[1].count, 2);
    CHECK_EQ(c.r[1].first, 1);
    CHECK_EQ(c.r[1].last, 3);
    CHECK_OK(add(w, "b", 4 * S, 4, 7)); /* a new key in a fired window */
    REQUIRE(c.n == 3);
    CHECK(c.r[2].update);
    CHECK_EQ(c.r[2].key[0], 'b');
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.late_updates, 2);
    CHECK_EQ(st.updates, 2);
    CHECK_EQ(st.late_events, 0);
    CHECK_EQ(c.late_n, 0);
    cf_window_destroy(w);
    free(c.r);
}

static void test_late_beyond_lateness_side_output(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 0, 5 * S);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "a", 1 * S, 1, 10));
    CHECK_OK(add(w, "a", 15 * S, 2, 1)); /* wm 15 = end + lateness: [0,10) purged */
    CHECK_OK(add(w, "a", 4 * S, 3, 5));
    CHECK_EQ(c.late_n, 1);
    CHECK_EQ(c.last_late.seq, 3);
    CHECK_EQ(c.last_late.ts_us, 4 * S);
    CHECK_EQ(c.last_late.reason, CF_WINDOW_LATE_BEYOND_LATENESS);
    CHECK_EQ(c.last_late.windows_dropped, 1);
    CHECK_EQ(c.last_late.watermark_us, 15 * S);
    CHECK_STR(cf_window_late_reason_name(c.last_late.reason), "beyond allowed lateness");
    char line[512];
    size_t ln = cf_window_late_ndjson(&c.last_late, "a", line, sizeof(line));
    CHECK_EQ(ln, strlen(line));
    CHECK_STR(line, "{\"seq\":3,\"ts\":\"1970-01-01T00:00:04Z\",\"watermark\":"
                    "\"1970-01-01T00:00:15Z\",\"reason\":\"beyond allowed lateness\","
                    "\"windows_dropped\":1,\"windows_total\":1,\"group\":\"a\"}\n");
    CHECK_EQ(cf_window_late_ndjson(&c.last_late, NULL, line, 40), 0);
    CHECK(cf_window_late_ndjson(&c.last_late, NULL, line, sizeof(line)) > 0);
    CHECK(strstr(line, "group") == NULL);
    cf_window_flush(w);
    /* The late event is in no result: [0,10) still sums to 10. */
    res *r = find(&c, 0, "a");
    REQUIRE(r != NULL);
    CHECK_EQ(r->v[0], 10);
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.late_events, 1);
    CHECK_EQ(st.events, 3);
    cf_window_destroy(w);
    free(c.r);

    /* Sliding: some of the event's windows purged, the others updated -> partial. */
    cf_window *s = mk(&c, 20 * S, 10 * S, 0, 0);
    REQUIRE(s != NULL);
    CHECK_OK(add(s, "a", 21 * S, 1, 1)); /* wm 21: [0,20) fired and purged */
    CHECK_OK(add(s, "a", 15 * S, 2, 1)); /* in [0,20) (gone) and [10,30) (open) */
    CHECK_EQ(c.late_n, 1);
    CHECK_EQ(c.last_late.reason, CF_WINDOW_LATE_PARTIAL);
    CHECK_EQ(c.last_late.windows_dropped, 1);
    CHECK_EQ(c.last_late.windows_total, 2);
    cf_window_flush(s);
    res *r2 = find(&c, 10 * S, "a");
    REQUIRE(r2 != NULL);
    CHECK_EQ(r2->count, 2);
    cf_window_destroy(s);
    free(c.r);
}

static void test_idle_source_closes(void)
{
    coll c;
    cf_window_conf conf;
    cf_window_conf_default(&conf);
    conf.size_us = 60 * S;
    conf.max_delay_us = 5 * S;
    conf.idle_timeout_ns = 1000000000LL;
    conf.value = cf_window_plain_ops;
    conf.on_result = on_result;
    conf.opaque = &c;
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(cf_window_plain);
    cf_window *w = NULL;
    REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
    const int64_t t0 = 1000000000000LL; /* the test's processing clock, ns */
    CHECK_OK(add(w, "a", 10 * S, 1, 1));
    CHECK_OK(add(w, "a", 20 * S, 2, 2));
    CHECK(!cf_window_tick(w, t0));               /* activity since the last tick */
    CHECK(!cf_window_tick(w, t0 + 500000000LL)); /* idle 0.5 s < timeout */
    CHECK_EQ(cf_window_watermark(w), 15 * S);
    CHECK(cf_window_tick(w, t0 + 2000000000LL)); /* idle 2 s: wm = 20 - 5 + 2 = 17 s */
    CHECK_EQ(cf_window_watermark(w), 17 * S);
    CHECK_EQ(c.n, 0);
    CHECK(cf_window_tick(w, t0 + 50000000000LL)); /* idle 50 s: wm 65 s >= 60 s */
    REQUIRE(c.n == 1);
    CHECK_EQ(c.r[0].v[0], 3);
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.idle_advances, 2);
    /* New input resets idleness; the watermark never moves back. */
    CHECK_OK(add(w, "a", 30 * S, 3, 1)); /* ts 30 < wm 65: window [0,60) purged: late */
    CHECK_EQ(st.late_events, 0);
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.late_events, 1);
    CHECK(!cf_window_tick(w, t0 + 51000000000LL));
    CHECK_EQ(cf_window_watermark(w), 65 * S);
    /* Without idle handling the watermark stays put. */
    coll c2;
    cf_window *w2 = mk(&c2, 60 * S, 0, 0, 0);
    REQUIRE(w2 != NULL);
    CHECK_OK(add(w2, "a", 10 * S, 1, 1));
    CHECK(!cf_window_tick(w2, t0));
    CHECK(!cf_window_tick(w2, t0 + 100000000000LL));
    CHECK_EQ(c2.n, 0);
    cf_window_destroy(w2);
    free(c2.r);
    cf_window_destroy(w);
    free(c.r);
}

static void test_memory_limit_backpressure(void)
{
    coll c;
    cf_window_conf conf;
    cf_window_conf_default(&conf);
    conf.size_us = 10 * S;
    conf.value = cf_window_plain_ops;
    conf.on_result = on_result;
    conf.opaque = &c;
    conf.memory_limit_bytes = 64 * 1024;
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(cf_window_plain);
    cf_window *w = NULL;
    REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    uint64_t max = st.keys_max;
    CHECK(max >= 64);
    CHECK(max * st.entry_bytes <= conf.memory_limit_bytes);
    char key[32];
    uint64_t i = 0;
    cf_err e = CF_OK;
    for (; i < 100000 && e == CF_OK; i++) {
        snprintf(key, sizeof(key), "key-%" PRIu64, i);
        e = add(w, key, 1 * S, i, 1);
    }
    CHECK_EQ(e, CF_E_LIMIT);
    CHECK(cf_err_is_retriable(e));
    CHECK_EQ(i - 1, max); /* exactly keys_max keys fit */
    /* Existing keys still aggregate at the limit; new ones keep being refused. */
    CHECK_OK(add(w, "key-0", 2 * S, 999999, 5));
    CHECK_EQ(add(w, "new-key", 2 * S, 1000000, 5), CF_E_LIMIT);
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.limit_rejections, 2);
    CHECK_EQ(st.keys_live, max);
    CHECK(st.state_bytes <= conf.memory_limit_bytes + 4096);
    /* Once the window closes its state is released and new keys fit again. */
    cf_window_advance(w, 10 * S);
    CHECK_EQ(c.n, max);
    CHECK_OK(add(w, "new-key", 12 * S, 1000001, 5));
    cf_window_destroy(w);
    free(c.r);

    /* The open-window bound works the same way. */
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(cf_window_plain);
    conf.memory_limit_bytes = 1 << 20;
    conf.windows_max = 3;
    conf.max_delay_us = 1000 * S;
    REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
    CHECK_OK(add(w, "a", 0, 1, 1));
    CHECK_OK(add(w, "a", 10 * S, 2, 1));
    CHECK_OK(add(w, "a", 20 * S, 3, 1));
    CHECK_EQ(add(w, "a", 30 * S, 4, 1), CF_E_LIMIT);
    CHECK_OK(add(w, "b", 25 * S, 5, 1)); /* an open window still accepts new keys */
    cf_window_advance(w, 10 * S);
    CHECK_OK(add(w, "a", 30 * S, 4, 1));
    cf_window_flush(w);
    CHECK_EQ(c.n, 5);
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.limit_rejections, 1);
    cf_window_destroy(w);
    free(c.r);
    conf.windows_max = 65536;
    conf.max_delay_us = 0;

    /* Allocation failures while growing are reported, never fatal. */
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(cf_window_plain);
    conf.memory_limit_bytes = 8 << 20;
    REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
    cf_alloc_fail_after(1);
    CHECK_EQ(add(w, "x", 1 * S, 1, 1), CF_E_NOMEM);
    cf_alloc_fail_after(0);
    CHECK_OK(add(w, "x", 1 * S, 1, 1));
    cf_window_flush(w);
    CHECK_EQ(c.n, 1);
    cf_window_destroy(w);
    free(c.r);
}

static void test_snapshot_restore_midstream(void)
{
    const size_t n = 20000;
    const int64_t delay = 30 * S;
    rng_state = 4242;
    tev *ev = make_stream(n, delay, true);
    int64_t shapes[2][2] = {{60 * S, 0}, {60 * S, 15 * S}};
    for (int s = 0; s < 2; s++) {
        coll a, b;
        cf_window *wa = mk(&a, shapes[s][0], shapes[s][1], delay, 20 * S);
        REQUIRE(wa != NULL);
        run_stream(wa, ev, n);

        cf_window *wb = mk(&b, shapes[s][0], shapes[s][1], delay, 20 * S);
        REQUIRE(wb != NULL);
        size_t half = n / 2 + 17;
        for (size_t i = 0; i < half; i++) {
            add(wb, ev[i].key, ev[i].ts, ev[i].seq, ev[i].amount);
        }
        uint8_t *snap = NULL;
        size_t len = 0;
        CHECK_OK(cf_window_snapshot(wb, &snap, &len));
        cf_window_destroy(wb);
        /* A new operator (as after a crash) continues from the snapshot; b's collector
         * keeps what was emitted before the snapshot. */
        cf_window_conf conf;
        cf_window_conf_default(&conf);
        conf.size_us = shapes[s][0];
        conf.slide_us = shapes[s][1];
        conf.max_delay_us = delay;
        conf.lateness_us = 20 * S;
        conf.value = cf_window_plain_ops;
        conf.on_result = on_result;
        conf.on_late = on_late;
        conf.opaque = &b;
        char err[256];
        REQUIRE(cf_window_create(&wb, &conf, err, sizeof(err)) == CF_OK);
        CHECK_OK(cf_window_restore(wb, snap, len, err, sizeof(err)));
        CHECK_EQ(cf_window_restore(wb, snap, len, err, sizeof(err)), CF_E_STATE);
        for (size_t i = half; i < n; i++) {
            add(wb, ev[i].key, ev[i].ts, ev[i].seq, ev[i].amount);
        }
        cf_window_flush(wb);
        CHECK(a.n > 100);
        CHECK(same_results(&a, &b));
        free(snap);
        cf_window_destroy(wa);
        cf_window_destroy(wb);
        free(a.r);
        free(b.r);
    }
    free(ev);
}

/* Which of @p n workers owns @p key (the runtime hashes pseudonyms into key groups). */
static unsigned owner(const uint8_t *key, size_t len, unsigned n)
{
    return (unsigned)(cf_hash_bytes(key, len, 7) % n);
}

typedef struct shard {
    unsigned index, n;
} shard;

static bool keep_mine(void *opaque, const uint8_t *key, size_t len)
{
    const shard *sh = opaque;
    return owner(key, len, sh->n) == sh->index;
}

/*
 * Key-partitioned workers give the results of one operator: each worker sees only its keys
 * but is advanced to the watermark the whole stream had before each of its events; midway
 * the 3 workers' snapshots are merged and split over 2 new workers (a rescale), which go on.
 */
static void test_sharded_rescale_equals_single(void)
{
    const size_t n = 20000;
    const int64_t delay = 30 * S;
    rng_state = 99;
    tev *ev = make_stream(n, 6 * delay, true); /* more disorder than allowed: late events */
    coll a, b = {0};
    cf_window *wa = mk(&a, 60 * S, 15 * S, delay, 20 * S);
    REQUIRE(wa != NULL);
    run_stream(wa, ev, n);

    cf_window *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = mk(&b, 60 * S, 15 * S, delay, 20 * S);
        REQUIRE(w[i] != NULL);
    }
    unsigned nw = 3;
    int64_t max_ts = INT64_MIN;
    size_t cut = n / 3 + 5;
    for (size_t i = 0; i < n; i++) {
        if (i == cut) {
            uint8_t *snaps[3];
            size_t lens[3];
            for (unsigned j = 0; j < nw; j++) {
                REQUIRE(cf_window_snapshot(w[j], &snaps[j], &lens[j]) == CF_OK);
                cf_window_destroy(w[j]);
            }
            uint8_t *merged = NULL;
            size_t mlen = 0;
            char err[256];
            REQUIRE(cf_window_snapshot_merge((const uint8_t *const *)snaps, lens, nw, &merged,
                                             &mlen, err, sizeof(err)) == CF_OK);
            snaps[1][lens[1] / 2] ^= 1;
            CHECK_EQ(cf_window_snapshot_merge((const uint8_t *const *)snaps, lens, nw, &merged,
                                              &mlen, err, sizeof(err)),
                     CF_E_CORRUPT);
            nw = 2;
            for (unsigned j = 0; j < nw; j++) {
                coll keep = b; /* mk() resets the collector */
                w[j] = mk(&b, 60 * S, 15 * S, delay, 20 * S);
                b = keep;
                REQUIRE(w[j] != NULL);
                shard sh = {j, nw};
                REQUIRE(cf_window_restore_filtered(w[j], merged, mlen, keep_mine, &sh, err,
                                                   sizeof(err)) == CF_OK);
            }
            for (int j = 0; j < 3; j++) {
                free(snaps[j]);
            }
            free(merged);
        }
        const tev *e = &ev[i];
        unsigned o = owner((const uint8_t *)e->key, strlen(e->key), nw);
        if (max_ts != INT64_MIN) {
            cf_window_advance(w[o], max_ts - delay);
        }
        add(w[o], e->key, e->ts, e->seq, e->amount);
        max_ts = e->ts > max_ts ? e->ts : max_ts;
    }
    for (unsigned j = 0; j < nw; j++) {
        cf_window_flush(w[j]);
        cf_window_destroy(w[j]);
    }
    CHECK(a.n > 100);
    CHECK(a.late_n > 0);
    CHECK_EQ(a.late_n, b.late_n);
    CHECK(same_results(&a, &b));
    cf_window_destroy(wa);
    free(a.r);
    free(b.r);
    free(ev);
}

static void test_snapshot_corrupt_rejected(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 0, 0);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "a", 1 * S, 1, 1));
    CHECK_OK(add(w, "b", 2 * S, 2, 1));
    uint8_t *snap = NULL;
    size_t len = 0;
    REQUIRE(cf_window_snapshot(w, &snap, &len) == CF_OK);
    char err[256];
    for (size_t i = 0; i < len; i += 7) {
        coll c2;
        cf_window *w2 = mk(&c2, 10 * S, 0, 0, 0);
        REQUIRE(w2 != NULL);
        snap[i] ^= 0x40;
        cf_err e = cf_window_restore(w2, snap, len, err, sizeof(err));
        CHECK(e == CF_E_CORRUPT || e == CF_E_INVAL);
        snap[i] ^= 0x40;
        CHECK_EQ(cf_window_restore(w2, snap, len - 1, err, sizeof(err)), CF_E_CORRUPT);
        /* Still usable after a failed restore. */
        CHECK_OK(cf_window_restore(w2, snap, len, err, sizeof(err)));
        cf_window_flush(w2);
        CHECK_EQ(c2.n, 2);
        cf_window_destroy(w2);
        free(c2.r);
    }
    /* A different shape is refused. */
    coll c3;
    cf_window *w3 = mk(&c3, 20 * S, 0, 0, 0);
    REQUIRE(w3 != NULL);
    CHECK_EQ(cf_window_restore(w3, snap, len, err, sizeof(err)), CF_E_INVAL);
    cf_window_destroy(w3);
    free(snap);
    cf_window_destroy(w);
    free(c.r);
}

/* A custom three-component value: (sum, sum of squares, max). */
typedef struct tri {
    int64_t sum, sq, max;
} tri;

static void tri_zero(void *d)
{
    tri *t = d;
    t->sum = 0;
    t->sq = 0;
    t->max = INT64_MIN;
}

static cf_err tri_add(void *d, const void *s)
{
    tri *t = d;
    const tri *x = s;
    t->sum += x->sum;
    t->sq += x->sq;
    if (x->max > t->max) {
        t->max = x->max;
    }
    return CF_OK;
}

static void test_custom_value_type(void)
{
    coll c;
    cf_window_conf conf;
    cf_window_conf_default(&conf);
    conf.size_us = 10 * S;
    conf.slide_us = 5 * S;
    conf.value = (cf_window_value_ops){.size = sizeof(tri), .zero = tri_zero, .add = tri_add};
    conf.on_result = on_result;
    conf.opaque = &c;
    conf.key_max = 16;
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(tri);
    cf_window *w = NULL;
    REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
    uint8_t pseud[16];
    memset(pseud, 0xAB, sizeof(pseud)); /* a 16-byte binary key, as parties use */
    int64_t xs[] = {3, -4, 10, 7};
    for (int i = 0; i < 4; i++) {
        tri v = {xs[i], xs[i] * xs[i], xs[i]};
        CHECK_OK(cf_window_add(w, pseud, sizeof(pseud), 6 * S + i, (uint64_t)i + 10, &v));
    }
    uint8_t longkey[17] = {0};
    tri v0 = {1, 1, 1};
    CHECK_EQ(cf_window_add(w, longkey, sizeof(longkey), 6 * S, 1, &v0), CF_E_INVAL);
    cf_window_flush(w);
    REQUIRE(c.n == 2); /* [0,10) and [5,15) */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(c.r[i].v[0], 16);
        CHECK_EQ(c.r[i].v[1], 9 + 16 + 100 + 49);
        CHECK_EQ(c.r[i].v[2], 10);
        CHECK_EQ(c.r[i].count, 4);
        CHECK_EQ(c.r[i].first, 10);
        CHECK_EQ(c.r[i].last, 13);
        CHECK_EQ(c.r[i].key_len, 16);
    }
    cf_window_destroy(w);
    free(c.r);
}

static void test_plain_overflow_reported(void)
{
    coll c;
    cf_window *w = mk(&c, 10 * S, 0, 0, 0);
    REQUIRE(w != NULL);
    CHECK_OK(add(w, "a", 1 * S, 1, INT64_MAX - 5));
    CHECK_EQ(add(w, "a", 2 * S, 2, 10), CF_E_OVERFLOW);
    CHECK_OK(add(w, "a", 3 * S, 3, 1)); /* reported once; the sum stays marked */
    CHECK_OK(add(w, "b", 3 * S, 4, -7));
    cf_window_flush(w);
    REQUIRE(c.n == 2);
    res *a = find(&c, 0, "a");
    REQUIRE(a != NULL);
    CHECK_EQ(a->v[1], 1); /* overflow flag */
    CHECK_EQ(a->count, 3);
    cf_window_result r = {.window_start_us = 0,
                          .window_end_us = 10 * S,
                          .value = a->v,
                          .count = 3,
                          .first_index = 1,
                          .last_index = 3};
    cf_window_row row;
    cf_window_row_from_plain(&r, "a", false, &row);
    CHECK(!row.sum_valid);
    char line[512];
    CHECK(cf_window_row_ndjson(&row, line, sizeof(line)) > 0);
    CHECK(strstr(line, "\"sum_minor\":null") != NULL);
    CHECK(strstr(line, "\"error\":\"overflow\"") != NULL);
    CHECK_EQ(find(&c, 0, "b")->v[0], -7);
    cf_window_stats st;
    cf_window_stats_get(w, &st);
    CHECK_EQ(st.value_errors, 1);
    cf_window_destroy(w);
    free(c.r);
}

static void test_group_key_builder(void)
{
    cf_event ev;
    memset(&ev, 0, sizeof(ev));
    strcpy(ev.account, "acct-1");
    strcpy(ev.merchant, "m42");
    strcpy(ev.country, "FR");
    strcpy(ev.currency, "EUR");
    ev.type = CF_TX_PAYMENT;
    ev.channel = CF_CH_ECOM;
    unsigned mask = 0;
    char err[256];
    CHECK_OK(cf_window_group_parse("merchant", &mask, err, sizeof(err)));
    CHECK_EQ(mask, CF_GROUP_MERCHANT);
    CHECK_OK(cf_window_group_parse("country, merchant,channel", &mask, err, sizeof(err)));
    CHECK_EQ(mask, CF_GROUP_MERCHANT | CF_GROUP_COUNTRY | CF_GROUP_CHANNEL);
    CHECK_EQ(cf_window_group_parse("merchant,shoe", &mask, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "shoe") != NULL);
    CHECK_EQ(cf_window_group_parse("type,type", &mask, err, sizeof(err)), CF_E_INVAL);
    CHECK_OK(cf_window_group_parse("none", &mask, err, sizeof(err)));
    CHECK_EQ(mask, 0);

    uint8_t key[CF_WINDOW_GROUP_KEY_MAX];
    char text[256];
    size_t n = cf_window_group_key(CF_GROUP_MERCHANT | CF_GROUP_COUNTRY | CF_GROUP_CHANNEL, &ev,
                                   key, sizeof(key));
    CHECK_EQ(n, 4 + 3 + 5);
    CHECK(memcmp(key, "m42\0FR\0ECOM\0", 12) == 0);
    cf_window_group_text(key, n, text, sizeof(text));
    CHECK_STR(text, "m42|FR|ECOM");
    n = cf_window_group_key(CF_GROUP_ALL, &ev, key, sizeof(key));
    cf_window_group_text(key, n, text, sizeof(text));
    CHECK_STR(text, "m42|acct-1|FR|ECOM|PAYMENT|EUR");
    CHECK_EQ(cf_window_group_key(CF_GROUP_ALL, &ev, key, 5), 0);
    n = cf_window_group_key(0, &ev, key, sizeof(key));
    CHECK_EQ(n, 0);
    cf_window_group_text(key, 0, text, sizeof(text));
    CHECK_STR(text, "*");
    /* Injective: ("ab","c") and ("a","bc") differ. */
    cf_event e2 = ev;
    strcpy(ev.merchant, "ab");
    strcpy(ev.account, "c");
    strcpy(e2.merchant, "a");
    strcpy(e2.account, "bc");
    uint8_t k2[CF_WINDOW_GROUP_KEY_MAX];
    size_t n1 = cf_window_group_key(CF_GROUP_MERCHANT | CF_GROUP_ACCOUNT, &ev, key, sizeof(key));
    size_t n2 = cf_window_group_key(CF_GROUP_MERCHANT | CF_GROUP_ACCOUNT, &e2, k2, sizeof(k2));
    CHECK(n1 == n2 && memcmp(key, k2, n1) != 0);
    /* A maximal event fits CF_WINDOW_GROUP_KEY_MAX. */
    memset(ev.merchant, 'x', CF_ID_MAX);
    memset(ev.account, 'y', CF_ID_MAX);
    CHECK(cf_window_group_key(CF_GROUP_ALL, &ev, key, sizeof(key)) > 0);
}

static void test_encoders(void)
{
    cf_window_row row = {.window_start_us = 1522540800LL * S,
                         .window_end_us = 1522544400LL * S,
                         .group = "m\"1",
                         .count = 3,
                         .sum_minor = -12345,
                         .sum_valid = true,
                         .verified = true,
                         .first_index = 7,
                         .last_index = 99};
    char buf[512];
    size_t n = cf_window_row_ndjson(&row, buf, sizeof(buf));
    CHECK_EQ(n, strlen(buf));
    CHECK_STR(buf, "{\"window_start\":\"2018-04-01T00:00:00Z\",\"window_end\":"
                   "\"2018-04-01T01:00:00Z\",\"group\":\"m\\\"1\",\"count\":3,\"sum_minor\":-12345,"
                   "\"verified\":true,\"first_index\":7,\"last_index\":99}\n");
    CHECK_EQ(cf_window_row_ndjson(&row, buf, 40), 0);
    n = cf_window_row_csv(&row, buf, sizeof(buf));
    CHECK_STR(buf, "2018-04-01T00:00:00Z,2018-04-01T01:00:00Z,\"m\"\"1\",3,-12345,true,7,99\n");
    CHECK_EQ(n, strlen(buf));
    CHECK_EQ(cf_window_row_csv(&row, buf, 30), 0);
    CHECK_STR(cf_window_csv_header(),
              "window_start,window_end,group,count,sum_minor,verified,first_index,last_index\n");
    cf_window_format_time(1522540800LL * S + 250000, buf, sizeof(buf));
    CHECK_STR(buf, "2018-04-01T00:00:00.250000Z");
    cf_window_format_time(-1, buf, sizeof(buf));
    CHECK_STR(buf, "1969-12-31T23:59:59.999999Z");
}

static void test_results_file_atomic(void)
{
    const char *dir = cf_test_tmpdir();
    char path[512], tmp[520];
    snprintf(path, sizeof(path), "%s/results.csv", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    char err[256];
    cf_window_file *f = NULL;
    REQUIRE(cf_window_file_open(&f, path, cf_window_csv_header(), err, sizeof(err)) == CF_OK);
    CHECK(access(tmp, F_OK) == 0);
    CHECK(access(path, F_OK) != 0); /* not visible before commit */
    CHECK_OK(cf_window_file_write(f, "a\n", 2));
    CHECK_OK(cf_window_file_commit(f, err, sizeof(err)));
    CHECK(access(tmp, F_OK) != 0);
    size_t len = 0;
    char *data = cf_test_slurp(path, &len);
    REQUIRE(data != NULL);
    CHECK_EQ(len, strlen(cf_window_csv_header()) + 2);
    free(data);
    /* Abandoned: the old file stays intact and the .tmp disappears. */
    REQUIRE(cf_window_file_open(&f, path, NULL, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_window_file_write(f, "partial", 7));
    cf_window_file_destroy(f);
    CHECK(access(tmp, F_OK) != 0);
    data = cf_test_slurp(path, &len);
    REQUIRE(data != NULL);
    CHECK(strncmp(data, "window_start", 12) == 0);
    free(data);
    /* An unwritable location names the file. */
    char bad[600];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/r.ndjson", dir);
    CHECK_EQ(cf_window_file_open(&f, bad, NULL, err, sizeof(err)), CF_E_NOTFOUND);
    CHECK(strstr(err, "r.ndjson.tmp") != NULL);
    unlink(path);
    rmdir(dir);
}

static void test_conf_errors(void)
{
    coll c;
    cf_window_conf conf;
    char err[256];
    cf_window *w = NULL;
    cf_window_conf_default(&conf);
    conf.value = cf_window_plain_ops;
    conf.on_result = on_result;
    conf.opaque = &c;
    CHECK_EQ(cf_window_create(&w, &conf, err, sizeof(err)), CF_E_INVAL); /* no size */
    CHECK(strstr(err, "size") != NULL);
    conf.size_us = 10;
    conf.slide_us = 11;
    CHECK_EQ(cf_window_create(&w, &conf, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "slide") != NULL);
    conf.slide_us = 0;
    conf.memory_limit_bytes = 100;
    CHECK_EQ(cf_window_create(&w, &conf, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "memory_limit") != NULL);
    conf.memory_limit_bytes = 1 << 20;
    conf.value.add = NULL;
    CHECK_EQ(cf_window_create(&w, &conf, err, sizeof(err)), CF_E_INVAL);
    conf.value = cf_window_plain_ops;
    conf.secure_memory = true;
    REQUIRE(cf_window_create(&w, &conf, err, sizeof(err)) == CF_OK);
    memset(&c, 0, sizeof(c));
    c.vsize = sizeof(cf_window_plain);
    for (int i = 0; i < 3000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        CHECK_OK(add(w, k, i % 10, (uint64_t)i, 1));
    }
    CHECK_EQ(add(w, "x", (int64_t)1 << 62 | 1, 1, 1), CF_E_INVAL);
    cf_window_flush(w);
    CHECK_EQ(c.n, 3000);
    cf_window_destroy(w);
    cf_window_destroy(NULL);
    free(c.r);
}

/* ---- differential test on the Fraud-Detection-Handbook sample --------------------------- */

typedef struct fev {
    int64_t ts_us;
    int64_t amount;
    uint64_t seq;
    char merchant[16];
} fev;

/* tx_id,ts,customer_id,terminal_id,amount,fraud,fraud_scenario -- trivial parsing. */
static fev *load_fdh(const char *path, size_t *n_out)
{
    char *data = cf_test_slurp(path, NULL);
    if (data == NULL) {
        return NULL;
    }
    size_t cap = 1024, n = 0;
    fev *v = malloc(cap * sizeof(fev));
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] < '0' || line[0] > '9') {
            continue; /* header */
        }
        unsigned long long id, cust, term;
        long long ts;
        char amt[32];
        if (sscanf(line, "%llu,%lld,%llu,%llu,%31[^,]", &id, &ts, &cust, &term, amt) != 5) {
            continue;
        }
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(fev));
        }
        char *dot = strchr(amt, '.');
        int64_t units = atoll(amt), cents = 0;
        if (dot != NULL) {
            cents = (dot[1] - '0') * 10 + (dot[2] ? dot[2] - '0' : 0);
        }
        v[n].ts_us = ts * S;
        v[n].amount = units * 100 + cents;
        v[n].seq = id;
        snprintf(v[n].merchant, sizeof(v[n].merchant), "%llu", term);
        n++;
    }
    free(data);
    *n_out = n;
    return v;
}

typedef struct refrow {
    int64_t start;
    char merchant[16];
    int64_t sum;
    uint64_t count, first, last;
} refrow;

static int cmp_ref(const void *a, const void *b)
{
    const refrow *x = a, *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    return strcmp(x->merchant, y->merchant);
}

static void test_fdh_differential(void)
{
    const char *path = cf_test_shared("data/fdh/fdh_sample_7days_2018-04-01.csv");
    size_t n = 0;
    fev *ev = load_fdh(path, &n);
    REQUIRE(ev != NULL);
    CHECK_EQ(n, 66976);
    const int64_t H = 3600 * S;

    /* Reference: one row per event keyed (hour, merchant), sorted, then summed by run. */
    refrow *rows = malloc(n * sizeof(refrow));
    for (size_t i = 0; i < n; i++) {
        rows[i].start = ev[i].ts_us - ev[i].ts_us % H;
        strcpy(rows[i].merchant, ev[i].merchant);
        rows[i].sum = ev[i].amount;
        rows[i].count = 1;
        rows[i].first = rows[i].last = ev[i].seq;
    }
    qsort(rows, n, sizeof(refrow), cmp_ref);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && cmp_ref(&rows[m - 1], &rows[i]) == 0) {
            rows[m - 1].sum += rows[i].sum;
            rows[m - 1].count++;
            rows[m - 1].first =
                rows[i].first < rows[m - 1].first ? rows[i].first : rows[m - 1].first;
            rows[m - 1].last = rows[i].last > rows[m - 1].last ? rows[i].last : rows[m - 1].last;
        } else {
            rows[m++] = rows[i];
        }
    }

    /* Sorted input, then the same input shuffled within 10 minutes. */
    for (int pass = 0; pass < 2; pass++) {
        const int64_t delay = pass == 0 ? 0 : 600 * S;
        tev *order = malloc(n * sizeof(tev));
        rng_state = 99;
        for (size_t i = 0; i < n; i++) {
            order[i].seq = i;
            order[i].arrive = ev[i].ts_us + (pass == 0 ? 0 : (int64_t)(rnd() % (uint64_t)delay));
        }
        qsort(order, n, sizeof(tev), cmp_arrive);
        coll c;
        cf_window *w = mk(&c, H, 0, delay, 0);
        REQUIRE(w != NULL);
        uint8_t key[CF_WINDOW_GROUP_KEY_MAX];
        for (size_t j = 0; j < n; j++) {
            const fev *e = &ev[order[j].seq];
            cf_event ce;
            memset(&ce, 0, sizeof(ce));
            strcpy(ce.merchant, e->merchant);
            size_t kl = cf_window_group_key(CF_GROUP_MERCHANT, &ce, key, sizeof(key));
            cf_window_plain v = {.sum_minor = e->amount, .overflow = 0};
            CHECK_OK(cf_window_add(w, key, kl, e->ts_us, e->seq, &v));
        }
        cf_window_flush(w);
        cf_window_stats st;
        cf_window_stats_get(w, &st);
        CHECK_EQ(st.late_events, 0);
        CHECK_EQ(c.n, m);
        qsort(c.r, c.n, sizeof(res), cmp_res);
        size_t mismatches = 0;
        for (size_t i = 0; i < m && i < c.n; i++) {
            char text[64];
            cf_window_group_text(c.r[i].key, c.r[i].key_len, text, sizeof(text));
            if (c.r[i].start != rows[i].start || strcmp(text, rows[i].merchant) != 0 ||
                c.r[i].v[0] != rows[i].sum || c.r[i].count != rows[i].count ||
                c.r[i].first != rows[i].first || c.r[i].last != rows[i].last ||
                c.r[i].end != rows[i].start + H) {
                mismatches++;
            }
        }
        CHECK_EQ(mismatches, 0);
        fprintf(stderr,
                "fdh differential (max_delay %llds): %zu events, %zu (hour, merchant) "
                "results, %zu mismatches\n",
                (long long)(delay / S), n, c.n, mismatches);
        cf_window_destroy(w);
        free(c.r);
        free(order);
    }
    free(rows);
    free(ev);
}

/* ---- randomized sliding windows against a brute-force reference ------------------------ */

/*
 * The reference keeps every applied event with the range of window starts it counts in and
 * recomputes each result from scratch; it follows the documented semantics step by step
 * (late updates in window order, then the watermark; windows fire in start order and keys
 * in byte order), so the operator's emission sequence must match it exactly: values,
 * counts, first/last indices and update flags, including across a snapshot/restore.
 */

#define RK 7
static const char *const rkeys[RK] = {
    "b", "a", "ab", "k12", "", "0123456789abcdefXYZ2", "0123456789abcdefXYZ1",
};

typedef struct rev {
    int key;
    int64_t ts;
    uint64_t seq;
    int64_t amt;
    int64_t s_from, s_last;
} rev;

typedef struct rref {
    int64_t size, slide, delay, lateness;
    int64_t wm, max_ts;
    bool have_ts;
    rev *ev;
    size_t nev;
    res *out;
    size_t nout, cap;
    uint64_t late;
    int order[RK]; /* key indices in byte order */
} rref;

static int64_t rfloor(int64_t a, int64_t m)
{
    int64_t r = a % m;
    return a - (r < 0 ? r + m : r);
}

static void rref_emit(rref *f, int64_t s, int k, bool update)
{
    int64_t sum = 0;
    uint64_t count = 0, first = UINT64_MAX, last = 0;
    for (size_t i = 0; i < f->nev; i++) {
        rev *e = &f->ev[i];
        if (e->key == k && e->s_from <= s && s <= e->s_last) {
            sum += e->amt;
            count++;
            first = e->seq < first ? e->seq : first;
            last = e->seq > last ? e->seq : last;
        }
    }
    if (count == 0) {
        return;
    }
    if (f->nout == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 1024;
        f->out = realloc(f->out, f->cap * sizeof(res));
        if (f->out == NULL) {
            abort();
        }
    }
    res *x = &f->out[f->nout++];
    memset(x, 0, sizeof(*x));
    x->start = s;
    x->end = s + f->size;
    x->key_len = strlen(rkeys[k]);
    memcpy(x->key, rkeys[k], x->key_len);
    x->v[0] = sum;
    x->count = count;
    x->first = first;
    x->last = last;
    x->update = update;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : (x > y);
}

static void rref_advance(rref *f, int64_t nw)
{
    if (nw <= f->wm) {
        return;
    }
    int64_t old = f->wm;
    f->wm = nw;
    size_t cap = 0, n = 0;
    for (size_t i = 0; i < f->nev; i++) {
        cap += (size_t)((f->ev[i].s_last - f->ev[i].s_from) / f->slide + 1);
    }
    int64_t *st = malloc((cap + 1) * sizeof(int64_t));
    for (size_t i = 0; i < f->nev; i++) {
        for (int64_t s = f->ev[i].s_from; s <= f->ev[i].s_last; s += f->slide) {
            if (s + f->size > old && s + f->size <= nw) {
                st[n++] = s;
            }
        }
    }
    qsort(st, n, sizeof(int64_t), cmp_i64);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && st[i] == st[i - 1]) {
            continue;
        }
        for (int k = 0; k < RK; k++) {
            rref_emit(f, st[i], f->order[k], false);
        }
    }
    free(st);
}

static void rref_add(rref *f, int k, int64_t ts, uint64_t seq, int64_t amt)
{
    int64_t s_first = rfloor(ts - f->size, f->slide) + f->slide;
    int64_t s_last = rfloor(ts, f->slide);
    int64_t total = (s_last - s_first) / f->slide + 1, dropped = 0;
    if (f->wm != INT64_MIN) {
        int64_t gone = f->wm - f->size - f->lateness;
        if (gone >= s_first) {
            int64_t g = rfloor(gone, f->slide);
            dropped = g >= s_last ? total : (g - s_first) / f->slide + 1;
        }
    }
    if (dropped < total) {
        rev *e = &f->ev[f->nev++];
        *e = (rev){k, ts, seq, amt, s_first + dropped * f->slide, s_last};
        for (int64_t s = e->s_from; s <= s_last; s += f->slide) {
            if (f->wm == INT64_MIN || s + f->size > f->wm) {
                break;
            }
            rref_emit(f, s, k, true);
        }
    }
    if (dropped > 0) {
        f->late++;
    }
    if (!f->have_ts || ts > f->max_ts) {
        f->max_ts = ts;
        f->have_ts = true;
        rref_advance(f, ts - f->delay);
    }
}

static int cmp_keyidx(const void *a, const void *b)
{
    const char *x = rkeys[*(const int *)a], *y = rkeys[*(const int *)b];
    size_t lx = strlen(x), ly = strlen(y), n = lx < ly ? lx : ly;
    int c = memcmp(x, y, n);
    return c != 0 ? c : (int)lx - (int)ly;
}

static bool same_sequence(const coll *c, const rref *f)
{
    if (c->n != f->nout) {
        fprintf(stderr, "emitted %zu results, reference %zu\n", c->n, f->nout);
    }
    for (size_t i = 0; i < c->n && i < f->nout; i++) {
        const res *x = &c->r[i], *y = &f->out[i];
        if (x->start != y->start || x->end != y->end || x->key_len != y->key_len ||
            memcmp(x->key, y->key, x->key_len) != 0 || x->v[0] != y->v[0] || x->v[1] != 0 ||
            x->count != y->count || x->first != y->first || x->last != y->last ||
            x->update != y->update) {
            fprintf(stderr,
                    "result %zu: got [%" PRId64 ",+) %.*s sum %" PRId64 " count %" PRIu64
                    " upd %d; want [%" PRId64 ",+) %.*s sum %" PRId64 " count %" PRIu64 " upd %d\n",
                    i, x->start, (int)x->key_len, (const char *)x->key, x->v[0], x->count,
                    (int)x->update, y->start, (int)y->key_len, (const char *)y->key, y->v[0],
                    y->count, (int)y->update);
            return false;
        }
    }
    return c->n == f->nout;
}

static void test_sliding_random_reference(void)
{
    const int trials = 300;
    const size_t n = 300;
    int failures = 0;
    rng_state = 0x5eed5eedULL;
    for (int t = 0; t < trials && failures == 0; t++) {
        rref f;
        memset(&f, 0, sizeof(f));
        f.slide = (int64_t)(rnd() % 7 + 1) * 10;
        f.size = f.slide * (int64_t)(rnd() % 12 + 1) + (t % 3 == 0 ? (int64_t)(rnd() % 10) : 0);
        f.delay = (int64_t)(rnd() % (uint64_t)(3 * f.size + 1));
        f.lateness = t % 4 == 0 ? 0 : (int64_t)(rnd() % (uint64_t)(2 * f.size + 1));
        f.wm = INT64_MIN;
        f.ev = malloc(n * sizeof(rev));
        for (int k = 0; k < RK; k++) {
            f.order[k] = k;
        }
        qsort(f.order, RK, sizeof(int), cmp_keyidx);
        coll c, c2;
        memset(&c2, 0, sizeof(c2));
        mk_secure = t % 10 == 9;
        cf_window *w = mk(&c, f.size, f.slide == f.size ? 0 : f.slide, f.delay, f.lateness);
        REQUIRE(w != NULL);
        int64_t clock = (int64_t)(rnd() % 1000) - 500; /* negative times too */
        size_t snap_at = (size_t)(rnd() % n);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rnd();
            if (r % 50 == 0) {
                clock += (int64_t)(rnd() % (uint64_t)(4 * f.size)); /* a gap */
            } else {
                clock += (int64_t)(rnd() % 7);
            }
            int64_t jitter = (int64_t)(rnd() % (uint64_t)(f.delay + f.lateness + f.size + 1));
            int64_t ts = clock - (r % 3 == 0 ? jitter : 0);
            int k = (int)(rnd() % RK);
            int64_t amt = (int64_t)(rnd() % 2001) - 1000;
            cf_window_plain v = {.sum_minor = amt, .overflow = 0};
            CHECK_OK(cf_window_add(w, (const uint8_t *)rkeys[k], strlen(rkeys[k]), ts, i + 1, &v));
            rref_add(&f, k, ts, i + 1, amt);
            if (r % 37 == 1) {
                int64_t x = clock - (int64_t)(rnd() % (uint64_t)(f.size + 1));
                cf_window_advance(w, x);
                rref_advance(&f, x);
            }
            if (i == snap_at) {
                /* Continue on a restored operator; its results go to c2. */
                uint8_t *buf = NULL;
                size_t len = 0;
                CHECK_OK(cf_window_snapshot(w, &buf, &len));
                cf_window *w2 =
                    mk(&c2, f.size, f.slide == f.size ? 0 : f.slide, f.delay, f.lateness);
                REQUIRE(w2 != NULL);
                CHECK_OK(cf_window_restore(w2, buf, len, NULL, 0));
                cf_free(buf);
                cf_window_destroy(w);
                w = w2;
            }
        }
        cf_window_flush(w);
        rref_advance(&f, INT64_MAX);
        for (size_t j = 0; j < c2.n; j++) {
            on_result(&c, &(cf_window_result){.window_start_us = c2.r[j].start,
                                              .window_end_us = c2.r[j].end,
                                              .key = c2.r[j].key,
                                              .key_len = c2.r[j].key_len,
                                              .value = c2.r[j].v,
                                              .count = c2.r[j].count,
                                              .first_index = c2.r[j].first,
                                              .last_index = c2.r[j].last,
                                              .update = c2.r[j].update});
        }
        cf_window_stats st;
        cf_window_stats_get(w, &st);
        /* Stats restart with the restored operator: late events before it count in c. */
        if (!same_sequence(&c, &f) || c.late_n + c2.late_n != f.late) {
            fprintf(stderr,
                    "trial %d: size %" PRId64 " slide %" PRId64 " delay %" PRId64
                    " lateness %" PRId64 " late %" PRIu64 "/%" PRIu64 "\n",
                    t, f.size, f.slide, f.delay, f.lateness, c.late_n + c2.late_n, f.late);
            failures++;
        }
        (void)st;
        cf_window_destroy(w);
        free(c.r);
        free(c2.r);
        free(f.ev);
        free(f.out);
    }
    mk_secure = false;
    CHECK_EQ(failures, 0);
}

/* Sliding windows share the memory limit between entries and per-key records: distinct keys
 * are refused with CF_E_LIMIT (counted, nothing changed) before the limit is passed, and fit
 * again once windows close. */
static void test_sliding_memory_limit(void)
{
    const size_t limits[] = {64 * 1024, 256 * 1024, 1 << 20};
    for (size_t li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
        coll c;
        cf_window_conf conf;
        cf_window_conf_default(&conf);
        conf.size_us = 10 * S;
        conf.slide_us = 2 * S;
        conf.max_delay_us = 100 * S; /* nothing fires while filling */
        conf.value = cf_window_plain_ops;
        conf.on_result = on_result;
        conf.opaque = &c;
        conf.memory_limit_bytes = limits[li];
        memset(&c, 0, sizeof(c));
        c.vsize = sizeof(cf_window_plain);
        cf_window *w = NULL;
        REQUIRE(cf_window_create(&w, &conf, NULL, 0) == CF_OK);
        char key[32];
        uint64_t i = 0;
        cf_err e = CF_OK;
        /* Two panes per key, so entries and key records both grow. */
        for (; i < 100000 && e == CF_OK; i++) {
            snprintf(key, sizeof(key), "key-%" PRIu64, i);
            e = add(w, key, 1 * S, 2 * i, 1);
            if (e == CF_OK) {
                e = add(w, key, 3 * S, 2 * i + 1, 2);
            }
        }
        CHECK_EQ(e, CF_E_LIMIT);
        uint64_t fit = i - 1;
        CHECK(fit >= 32);
        cf_window_stats st;
        cf_window_stats_get(w, &st);
        CHECK_EQ(st.limit_rejections, 1);
        CHECK(st.state_bytes <= conf.memory_limit_bytes + 4096);
        CHECK(st.keys_live <= st.keys_max);
        CHECK_OK(add(w, "key-0", 3 * S, 999999, 5)); /* existing entries still aggregate */
        /* Pane 1 s is in windows -8..0, pane 3 s in -6..2 (starts in s): a fitted key has
         * 6 results holding 1 (window -8), 3 (-6..0) or 2 (window 2); the refused key's
         * first event may have fitted (5 results of 1). */
        cf_window_advance(w, 20 * S);
        cf_window_stats_get(w, &st);
        CHECK_EQ(st.keys_live, 0);
        size_t bad = 0, partial = 0;
        snprintf(key, sizeof(key), "key-%" PRIu64, fit);
        for (size_t r = 0; r < c.n; r++) {
            int64_t s0 = c.r[r].start;
            int64_t want = s0 == -8 * S ? 1 : (s0 == 2 * S ? 2 : 3);
            if (c.r[r].key_len == 5 && memcmp(c.r[r].key, "key-0", 5) == 0 && s0 >= -6 * S) {
                want += 5;
            }
            if (c.r[r].key_len == strlen(key) && memcmp(c.r[r].key, key, strlen(key)) == 0) {
                want = 1;
                partial++;
            }
            bad += c.r[r].v[0] != want;
        }
        CHECK_EQ(bad, 0);
        CHECK(partial == 0 || partial == 5);
        CHECK_EQ(c.n, fit * 6 + partial);
        CHECK_OK(add(w, "new-key", 22 * S, 1000001, 5));
        cf_window_destroy(w);
        free(c.r);
    }
}

#include "cf_test_main.h"
