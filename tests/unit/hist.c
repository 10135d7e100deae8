/*
 * Tests for the log-linear latency histogram (src/core/hist.c) against
 * ../shared/vectors/latency-percentiles: every input set of expected_percentiles.json, the
 * 10,000-sample file, the HdrHistogram_c raw and corrected scenarios, merge and clamping.
 * A small JSON reader below turns the vector files into a tree.
 */
#include "cf_test.h"

#include <ctype.h>

#include "confide/core.h"

/* ---- minimal JSON tree (test-only; input is trusted vector data) ------------------------- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jnode {
    jtype type;
    char *key; /* member name when inside an object */
    char *str; /* J_STR: unescaped text; J_NUM: literal text */
    int boolean;
    struct jnode *child; /* first element/member */
    struct jnode *next;  /* next sibling */
} jnode;

typedef struct {
    const char *p;
    int err;
} jparser;

static void jws(jparser *jp)
{
    while (*jp->p != '\0' && isspace((unsigned char)*jp->p)) {
        jp->p++;
    }
}

static char *jstring(jparser *jp)
{
    /* Called with jp->p at the opening quote. Handles the escapes the vectors use. */
    jp->p++;
    size_t cap = 64;
    size_t n = 0;
    char *out = malloc(cap);
    while (*jp->p != '"') {
        if (*jp->p == '\0') {
            jp->err = 1;
            break;
        }
        char c = *jp->p++;
        if (c == '\\') {
            char e = *jp->p++;
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'u':
                /* Non-ASCII escapes are not needed to read numbers; keep a placeholder. */
                for (int i = 0; i < 4 && *jp->p != '\0'; i++) {
                    jp->p++;
                }
                c = '?';
                break;
            default:
                c = e;
                break;
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            out = realloc(out, cap);
        }
        out[n++] = c;
    }
    if (*jp->p == '"') {
        jp->p++;
    }
    out[n] = '\0';
    return out;
}

static jnode *jvalue(jparser *jp);

static jnode *jnew(jtype t)
{
    jnode *n = calloc(1, sizeof(*n));
    n->type = t;
    return n;
}

static jnode *jvalue(jparser *jp)
{
    jws(jp);
    char c = *jp->p;
    if (c == '{' || c == '[') {
        jnode *n = jnew(c == '{' ? J_OBJ : J_ARR);
        char close = c == '{' ? '}' : ']';
        jp->p++;
        jnode **tail = &n->child;
        jws(jp);
        if (*jp->p == close) {
            jp->p++;
            return n;
        }
        for (;;) {
            char *key = NULL;
            if (n->type == J_OBJ) {
                jws(jp);
                if (*jp->p != '"') {
                    jp->err = 1;
                    return n;
                }
                key = jstring(jp);
                jws(jp);
                if (*jp->p++ != ':') {
                    jp->err = 1;
                    free(key);
                    return n;
                }
            }
            jnode *v = jvalue(jp);
            v->key = key;
            *tail = v;
            tail = &v->next;
            if (jp->err) {
                return n;
            }
            jws(jp);
            if (*jp->p == ',') {
                jp->p++;
                continue;
            }
            if (*jp->p == close) {
                jp->p++;
                return n;
            }
            jp->err = 1;
            return n;
        }
    }
    if (c == '"') {
        jnode *n = jnew(J_STR);
        n->str = jstring(jp);
        return n;
    }
    if (strncmp(jp->p, "true", 4) == 0 || strncmp(jp->p, "false", 5) == 0) {
        jnode *n = jnew(J_BOOL);
        n->boolean = c == 't';
        jp->p += c == 't' ? 4 : 5;
        return n;
    }
    if (strncmp(jp->p, "null", 4) == 0) {
        jp->p += 4;
        return jnew(J_NULL);
    }
    const char *start = jp->p;
    while (*jp->p != '\0' && strchr("+-0123456789.eE", *jp->p) != NULL) {
        jp->p++;
    }
    if (jp->p == start) {
        jp->err = 1;
        return jnew(J_NULL);
    }
    jnode *n = jnew(J_NUM);
    n->str = strndup(start, (size_t)(jp->p - start));
    return n;
}

static void jfree(jnode *n)
{
    while (n != NULL) {
        jnode *next = n->next;
        jfree(n->child);
        free(n->key);
        free(n->str);
        free(n);
        n = next;
    }
}

static jnode *jparse(const char *text)
{
    jparser jp = {text, 0};
    jnode *root = jvalue(&jp);
    jws(&jp);
    if (jp.err || *jp.p != '\0') {
        jfree(root);
        return NULL;
    }
    return root;
}

static jnode *jget(const jnode *obj, const char *key)
{
    if (obj == NULL || obj->type != J_OBJ) {
        return NULL;
    }
    for (jnode *m = obj->child; m != NULL; m = m->next) {
        if (strcmp(m->key, key) == 0) {
            return m;
        }
    }
    return NULL;
}

/* Exact integer value of a JSON number literal; -1 (and a failed check) when not an integer. */
static long long jint(const jnode *n)
{
    if (n == NULL || n->type != J_NUM || strpbrk(n->str, ".eE") != NULL) {
        fprintf(stderr, "expected an integer JSON number\n");
        cf_test_failures++;
        return -1;
    }
    return strtoll(n->str, NULL, 10);
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* HdrHistogram's record_corrected_value: v, then v - I, v - 2I, ... while >= I. */
static void record_corrected(cf_hist *h, int64_t v, int64_t interval)
{
    cf_hist_record(h, v);
    if (interval <= 0 || v <= interval) {
        return;
    }
    for (int64_t missing = v - interval; missing >= interval; missing -= interval) {
        cf_hist_record(h, missing);
    }
}

static cf_hist *load_10k(void)
{
    const char *path = cf_test_shared("vectors/latency-percentiles/latencies_us_10000.txt");
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    cf_hist *h = NULL;
    if (cf_hist_create(&h) != CF_OK) {
        fclose(f);
        return NULL;
    }
    long long v;
    while (fscanf(f, "%lld", &v) == 1) {
        cf_hist_record(h, v);
    }
    fclose(f);
    return h;
}

/* Fills @p h from a set's input description; false when the description is not understood. */
static bool fill_set(cf_hist *h, const jnode *set)
{
    const jnode *input = jget(set, "input");
    if (input != NULL && input->type == J_STR) {
        cf_hist *f = load_10k();
        if (f == NULL || strstr(input->str, "latencies_us_10000.txt") == NULL) {
            cf_hist_destroy(f);
            return false;
        }
        cf_hist_merge(h, f);
        cf_hist_destroy(f);
        return true;
    }
    if (input != NULL && input->type == J_ARR) {
        for (const jnode *e = input->child; e != NULL; e = e->next) {
            cf_hist_record(h, jint(e));
        }
        return true;
    }
    const jnode *runs = jget(set, "input_runs");
    if (runs == NULL || runs->type != J_ARR) {
        return false;
    }
    for (const jnode *run = runs->child; run != NULL; run = run->next) {
        const jnode *val = run->child;
        const jnode *times = val != NULL ? val->next : NULL;
        if (val == NULL || times == NULL) {
            return false;
        }
        if (val->type == J_STR) {
            long long step = 0;
            long long kmax = 0;
            if (sscanf(val->str, "%lld*k for k=1..%lld", &step, &kmax) != 2) {
                return false;
            }
            for (long long k = 1; k <= kmax; k++) {
                cf_hist_record_n(h, step * k, (uint64_t)jint(times));
            }
        } else {
            cf_hist_record_n(h, jint(val), (uint64_t)jint(times));
        }
    }
    return true;
}

/* exact <= v <= exact * 1.001, in integers. */
static bool within_hdr(int64_t v, int64_t exact)
{
    return v >= exact && v * 1000 <= exact * 1001;
}

static jnode *load_json(const char *rel)
{
    char *text = cf_test_slurp(cf_test_shared(rel), NULL);
    if (text == NULL) {
        return NULL;
    }
    jnode *root = jparse(text);
    free(text);
    return root;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_expected_sets(void)
{
    jnode *root = load_json("vectors/latency-percentiles/expected_percentiles.json");
    REQUIRE(root != NULL);
    const jnode *sets = jget(root, "sets");
    REQUIRE(sets != NULL && sets->type == J_OBJ);
    int nsets = 0;
    for (const jnode *set = sets->child; set != NULL; set = set->next) {
        cf_hist *h = NULL;
        REQUIRE(cf_hist_create(&h) == CF_OK);
        bool filled = fill_set(h, set);
        if (!filled) {
            fprintf(stderr, "set %s: input not understood\n", set->key);
        }
        CHECK(filled);
        const jnode *exp = jget(set, "expected");
        CHECK_EQ(cf_hist_count(h), jint(jget(exp, "count")));
        CHECK_EQ(cf_hist_min(h), jint(jget(exp, "min")));
        CHECK_EQ(cf_hist_max(h), jint(jget(exp, "max")));
        CHECK_EQ(cf_hist_sum(h), jint(jget(exp, "sum")));
        CHECK_EQ(cf_hist_overflow(h), 0);
        const jnode *pcts = jget(exp, "percentiles");
        REQUIRE(pcts != NULL);
        int np = 0;
        for (const jnode *p = pcts->child; p != NULL; p = p->next) {
            int64_t v = -1;
            CHECK_OK(cf_hist_percentile_str(h, p->key, &v));
            long long exact = jint(jget(p, "value"));
            if (!within_hdr(v, exact)) {
                fprintf(stderr, "set %s p%s: got %lld, exact %lld\n", set->key, p->key,
                        (long long)v, exact);
                cf_test_failures++;
            }
            np++;
        }
        CHECK_EQ(np, 14);
        cf_hist_destroy(h);
        nsets++;
    }
    CHECK_EQ(nsets, 8);
    jfree(root);
}

/* The 10k file: the README's key values, and the same slots as HdrHistogram Java 2.1.11. */
static void test_latencies_10k(void)
{
    cf_hist *h = load_10k();
    REQUIRE(h != NULL);
    CHECK_EQ(cf_hist_count(h), 10000);
    CHECK_EQ(cf_hist_sum(h), 13318663);
    CHECK_EQ(cf_hist_min(h), 1);
    CHECK_EQ(cf_hist_max(h), 3600000);
    static const struct {
        uint64_t num, den;
        int64_t exact, hdr_java;
    } want[] = {
        {50, 1, 250, 250},
        {90, 1, 400, 400},
        {99, 1, 8292, 8295},
        {999, 10, 48435, 48447},
        {9999, 100, 1972322, 1973247},
        {995, 10, 29968, 29983},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int64_t v = cf_hist_percentile(h, want[i].num, want[i].den);
        CHECK(within_hdr(v, want[i].exact));
        /* Same layout as HDR with 3 significant digits: the highest equivalent value agrees. */
        CHECK_EQ(v, want[i].hdr_java);
    }
    /* p100 and p99.999 are capped at the exact max (HDR Java reports 3600383). */
    CHECK_EQ(cf_hist_percentile(h, 100, 1), 3600000);
    CHECK_EQ(cf_hist_percentile(h, 99999, 1000), 3600000);
    CHECK_EQ(cf_hist_percentile(h, 0, 1), 1);
    cf_hist_destroy(h);
}

/* Boundary ranks where binary floating point picks the wrong sample. */
static void test_exact_rank(void)
{
    cf_hist *h = NULL;
    REQUIRE(cf_hist_create(&h) == CF_OK);
    for (int64_t v = 1; v <= 1000; v++) {
        cf_hist_record(h, v);
    }
    /* ceil(99.9/100.0*1000) is 1000 in doubles; the exact rank is 999. */
    CHECK_EQ(cf_hist_percentile(h, 999, 10), 999);
    int64_t v = 0;
    CHECK_OK(cf_hist_percentile_str(h, "99.9", &v));
    CHECK_EQ(v, 999);
    CHECK_OK(cf_hist_percentile_str(h, "0.1", &v));
    CHECK_EQ(v, 1);
    CHECK_OK(cf_hist_percentile_str(h, "100", &v));
    CHECK_EQ(v, 1000);
    CHECK_EQ(cf_hist_percentile_str(h, "", &v), CF_E_INVAL);
    CHECK_EQ(cf_hist_percentile_str(h, "99.", &v), CF_E_INVAL);
    CHECK_EQ(cf_hist_percentile_str(h, "100.1", &v), CF_E_INVAL);
    CHECK_EQ(cf_hist_percentile_str(h, "-1", &v), CF_E_INVAL);
    CHECK_EQ(cf_hist_percentile_str(h, "5x", &v), CF_E_INVAL);
    cf_hist_reset(h);
    /* 9990 samples of 1000 then 10 of 2000: rank 9990 (exact) is 1000, rank 9991 is 2000. */
    cf_hist_record_n(h, 1000, 9990);
    cf_hist_record_n(h, 2000, 10);
    CHECK_EQ(cf_hist_percentile(h, 999, 10), 1000);
    CHECK_EQ(cf_hist_percentile(h, 9991, 100), 2000);
    cf_hist_destroy(h);
}

static void test_hdr_c_scenarios(void)
{
    jnode *root = load_json("vectors/latency-percentiles/hdr_c_reference_scenarios.json");
    REQUIRE(root != NULL);
    const jnode *scen = jget(root, "scenarios");
    REQUIRE(scen != NULL && scen->type == J_ARR);
    int done = 0;
    for (const jnode *s = scen->child; s != NULL; s = s->next) {
        const char *name = jget(s, "name")->str;
        if (strcmp(name, "raw") != 0 && strcmp(name, "corrected") != 0) {
            continue; /* large_values needs HdrHistogram_c rounding; layout etc. are HDR-only */
        }
        const jnode *init = jget(s, "init");
        CHECK_EQ(jint(jget(init, "lowest")), 1);
        CHECK_EQ(jint(jget(init, "highest")), 3600000000LL);
        CHECK_EQ(jint(jget(init, "significant_figures")), 3);
        cf_hist *h = NULL;
        REQUIRE(cf_hist_create(&h) == CF_OK);
        const jnode *rec = jget(s, "record");
        bool corrected = rec == NULL;
        if (corrected) {
            rec = jget(s, "record_corrected");
        }
        REQUIRE(rec != NULL);
        for (const jnode *r = rec->child; r != NULL; r = r->next) {
            long long v = jint(jget(r, "value"));
            long long times = jint(jget(r, "times"));
            for (long long t = 0; t < times; t++) {
                if (corrected) {
                    record_corrected(h, v, jint(jget(r, "expected_interval")));
                } else {
                    cf_hist_record(h, v);
                }
            }
        }
        const jnode *exp = jget(s, "expect");
        CHECK_EQ(cf_hist_count(h), jint(jget(exp, "total_count")));
        CHECK_EQ(cf_hist_min(h), jint(jget(exp, "min")));
        CHECK(within_hdr(cf_hist_max(h), jint(jget(exp, "max_equivalent_to"))));
        int np = 0;
        for (const jnode *p = jget(exp, "value_at_percentile")->child; p != NULL; p = p->next) {
            int64_t v = -1;
            CHECK_OK(cf_hist_percentile_str(h, p->key, &v));
            long long want = jint(p);
            /* compare_percentile(actual, expected, 0.001) */
            long long diff = v > want ? v - want : want - v;
            if (diff * 1000 > want) {
                fprintf(stderr, "scenario %s p%s: got %lld want %lld\n", name, p->key, (long long)v,
                        want);
                cf_test_failures++;
            }
            np++;
        }
        CHECK(np >= 5);
        cf_hist_destroy(h);
        done++;
    }
    CHECK_EQ(done, 2);
    jfree(root);
}

static void test_merge(void)
{
    cf_hist *all = load_10k();
    REQUIRE(all != NULL);
    const char *path = cf_test_shared("vectors/latency-percentiles/latencies_us_10000.txt");
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    cf_hist *part[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        REQUIRE(cf_hist_create(&part[i]) == CF_OK);
    }
    long long v;
    int n = 0;
    while (fscanf(f, "%lld", &v) == 1) {
        cf_hist_record(part[n++ % 3], v);
    }
    fclose(f);
    cf_hist *m = NULL;
    REQUIRE(cf_hist_create(&m) == CF_OK);
    cf_hist_merge(m, part[2]);
    cf_hist_merge(m, part[0]);
    cf_hist_merge(m, part[1]);
    CHECK_EQ(cf_hist_count(m), cf_hist_count(all));
    CHECK_EQ(cf_hist_sum(m), cf_hist_sum(all));
    CHECK_EQ(cf_hist_min(m), cf_hist_min(all));
    CHECK_EQ(cf_hist_max(m), cf_hist_max(all));
    static const uint64_t nums[][2] = {{0, 1},    {1, 1},      {50, 1},       {90, 1}, {99, 1},
                                       {999, 10}, {9999, 100}, {99999, 1000}, {100, 1}};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        CHECK_EQ(cf_hist_percentile(m, nums[i][0], nums[i][1]),
                 cf_hist_percentile(all, nums[i][0], nums[i][1]));
    }
    /* Merging an empty histogram changes nothing; merging into an empty one copies. */
    cf_hist *empty = NULL;
    REQUIRE(cf_hist_create(&empty) == CF_OK);
    cf_hist_merge(m, empty);
    CHECK_EQ(cf_hist_count(m), 10000);
    cf_hist_merge(empty, part[1]);
    CHECK_EQ(cf_hist_count(empty), cf_hist_count(part[1]));
    CHECK_EQ(cf_hist_min(empty), cf_hist_min(part[1]));
    cf_hist_destroy(empty);
    for (int i = 0; i < 3; i++) {
        cf_hist_destroy(part[i]);
    }
    cf_hist_destroy(m);
    cf_hist_destroy(all);
}

static void collect(void *opaque, int64_t upper, uint64_t count)
{
    int64_t *acc = opaque;
    acc[0] += (int64_t)count;
    acc[1] = upper;
}

static void test_out_of_range(void)
{
    cf_hist *h = NULL;
    REQUIRE(cf_hist_create(&h) == CF_OK);
    CHECK_EQ(cf_hist_percentile(h, 99, 1), 0); /* empty */
    CHECK_EQ(cf_hist_min(h), 0);
    CHECK_EQ(cf_hist_max(h), 0);
    cf_hist_record(h, 3600000000LL); /* the top of the range is accepted */
    CHECK_EQ(cf_hist_overflow(h), 0);
    cf_hist_record(h, 3600000001LL);
    cf_hist_record_n(h, INT64_C(1) << 40, 2);
    CHECK_EQ(cf_hist_overflow(h), 3);
    CHECK_EQ(cf_hist_count(h), 4);
    CHECK_EQ(cf_hist_max(h), INT64_C(1) << 40); /* exact, not clamped */
    CHECK_EQ(cf_hist_sum(h), 3600000000LL + 3600000001LL + (INT64_C(2) << 40));
    /* Below the range: 0 and negatives bucket as 1, count, and keep min exact at 0. */
    cf_hist_record(h, 0);
    cf_hist_record(h, -5);
    CHECK_EQ(cf_hist_count(h), 6);
    CHECK_EQ(cf_hist_min(h), 0);
    CHECK_EQ(cf_hist_percentile(h, 1, 1), 1); /* rank 1 sits in the slot of 1 */
    int64_t acc[2] = {0, 0};
    cf_hist_foreach(h, collect, acc);
    CHECK_EQ(acc[0], 6);
    CHECK(acc[1] >= 3600000000LL && acc[1] <= 3600000000LL * 1001 / 1000);
    /* Sum saturates instead of wrapping. */
    cf_hist_record_n(h, INT64_MAX / 2, 4);
    CHECK_EQ(cf_hist_sum(h), INT64_MAX);
    cf_hist_reset(h);
    CHECK_EQ(cf_hist_count(h), 0);
    CHECK_EQ(cf_hist_overflow(h), 0);
    CHECK_EQ(cf_hist_sum(h), 0);
    cf_hist_record(h, 7);
    CHECK_EQ(cf_hist_percentile(h, 50, 1), 7);
    cf_hist_destroy(h);
}

/* Every value up to the range keeps relative error <= 0.1% and never under-reports. */
static void test_relative_error(void)
{
    cf_hist *h = NULL;
    REQUIRE(cf_hist_create(&h) == CF_OK);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t v = (1 + (int64_t)(x % 3600000000ULL)) >> (x >> 59);
        if (v < 1) {
            v = 1;
        }
        cf_hist_reset(h);
        cf_hist_record(h, v);
        cf_hist_record(h, 3600000000LL); /* so the cap at max does not hide the slot value */
        int64_t got = cf_hist_percentile(h, 50, 1);
        if (!within_hdr(got, v)) {
            fprintf(stderr, "value %lld reported as %lld\n", (long long)v, (long long)got);
            cf_test_failures++;
            break;
        }
    }
    cf_hist_destroy(h);
}

static void test_alloc_failure(void)
{
    cf_hist *h = (cf_hist *)1;
    cf_alloc_fail_after(1);
    CHECK_EQ(cf_hist_create(&h), CF_E_NOMEM);
    CHECK(h == NULL);
    cf_alloc_fail_after(0);
}

#include "cf_test_main.h"
