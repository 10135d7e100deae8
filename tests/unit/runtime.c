#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cf_test.h"
#include "confide/audit.h"
#include "confide/io.h"
#include "confide/keys.h"
#include "confide/metrics.h"
#include "confide/runtime.h"

static cf_config *conf_new(void)
{
    cf_config *c = NULL;
    CF_ASSERT(cf_config_create(&c) == CF_OK);
    return c;
}

static void test_config_defaults(void)
{
    cf_config *c = conf_new();
    char buf[64];
    CHECK_OK(cf_config_get(c, "input.format", buf, sizeof(buf)));
    CHECK_STR(buf, "csv");
    CHECK_OK(cf_config_get(c, "slo.p99_ms", buf, sizeof(buf)));
    CHECK_STR(buf, "200");
    CHECK_EQ(cf_config_get(c, "no.such", buf, sizeof(buf)), CF_E_NOTFOUND);
    cf_config_destroy(c);
}

static void test_config_nested_yaml(void)
{
    cf_config *c = conf_new();
    const char *y = "input:\n  format: ndjson\n  rate: 5000\npipeline:\n  batch_max: 16\n";
    char err[256] = "";
    CHECK_OK(cf_config_load_string(c, y, strlen(y), "t.yaml", err, sizeof(err)));
    char buf[64];
    cf_config_get(c, "input.format", buf, sizeof(buf));
    CHECK_STR(buf, "ndjson");
    cf_config_get(c, "input.rate", buf, sizeof(buf));
    CHECK_STR(buf, "5000");
    cf_config_get(c, "pipeline.batch_max", buf, sizeof(buf));
    CHECK_STR(buf, "16");
    cf_config_destroy(c);
}

static void test_config_unknown_key_names_line(void)
{
    cf_config *c = conf_new();
    const char *y = "input:\n  format: csv\n  colour: blue\n";
    char err[256] = "";
    CHECK_EQ(cf_config_load_string(c, y, strlen(y), "t.yaml", err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "input.colour") != NULL);
    CHECK(strstr(err, "t.yaml:3") != NULL);
    cf_config_destroy(c);
}

static void test_config_bad_value_names_key_and_line(void)
{
    cf_config *c = conf_new();
    const char *cases[][3] = {
        {"pipeline:\n  batch_max: 0\n", "pipeline.batch_max", "line 2"},
        {"input:\n  format: xml\n", "input.format", "line 2"},
        {"\n\ninput:\n  rate: fast\n", "input.rate", "line 4"},
        {"slo:\n  p99_ms: 12abc\n", "slo.p99_ms", "line 2"},
        {"input: [1, 2\n", "t.yaml", "YAML error"},
        {"- a\n- b\n", "t.yaml", "mapping"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        cf_err e =
            cf_config_load_string(c, cases[i][0], strlen(cases[i][0]), "t.yaml", err, sizeof(err));
        CHECK_EQ(e, CF_E_INVAL);
        CHECK(strstr(err, cases[i][1]) != NULL);
        CHECK(strstr(err, cases[i][2]) != NULL);
        if (strstr(err, cases[i][1]) == NULL || strstr(err, cases[i][2]) == NULL) {
            fprintf(stderr, "  got: %s\n", err);
        }
    }
    cf_config_destroy(c);
}

static void test_config_set_override(void)
{
    cf_config *c = conf_new();
    char err[256] = "";
    CHECK_OK(cf_config_set(c, "output.dir", "/tmp/x", err, sizeof(err)));
    CHECK_EQ(cf_config_set(c, "output.nope", "1", err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "output.nope") != NULL);
    CHECK_EQ(cf_config_set(c, "pipeline.ring_batches", "1", err, sizeof(err)), CF_E_INVAL);
    cf_config_destroy(c);
}

/* A CSV document with @p good valid rows and every @p bad_every-th row malformed. */
static char *make_csv(int rows, int bad_every, int *good, int *bad)
{
    size_t cap = (size_t)rows * 160 + 256;
    char *buf = malloc(cap);
    size_t n = (size_t)snprintf(buf, cap, "%s", cf_csv_header());
    *good = *bad = 0;
    for (int i = 0; i < rows; i++) {
        if (bad_every > 0 && i % bad_every == bad_every - 1) {
            static const char *const bads[] = {
                ",2024-01-01T00:00:00Z,A1,M1,1.00,XXX,PAYMENT,DE,POS,,\n",
                ",not-a-time,A1,M1,1.00,EUR,PAYMENT,DE,POS,,\n",
                ",2024-01-01T00:00:00Z,A1,M1,abc,EUR,PAYMENT,DE,POS,,\n",
                ",2024-01-01T00:00:00Z,A1,M1,99999999999999999999,EUR,PAYMENT,DE,POS,,\n",
                ",2024-01-01T00:00:00Z,A1\n",
            };
            n += (size_t)snprintf(buf + n, cap - n, "%d%s", i, bads[(i / bad_every) % 5]);
            (*bad)++;
        } else {
            n += (size_t)snprintf(buf + n, cap - n,
                                  "%d,2024-01-01T00:%02d:%02dZ,A%d,M%d,%d.%02d,EUR,PAYMENT,DE,"
                                  "POS,,\n",
                                  i, (i / 60) % 60, i % 60, i % 97, i % 13, i % 500, i % 100);
            (*good)++;
        }
    }
    buf[n] = '\0';
    return buf;
}

static cf_pipeline *pipe_new(cf_config *c)
{
    cf_pipeline *p = NULL;
    char err[256] = "";
    cf_err e = cf_pipeline_create(&p, c, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "pipeline_create: %s\n", err);
    }
    return p;
}

static void test_pipeline_reconciles_counts(void)
{
    int good, bad;
    char *csv = make_csv(20000, 7, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "pipeline.batch_max", "100", err, sizeof(err));
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    CHECK_EQ(s.read, 20000);
    CHECK_EQ(s.accepted, good);
    CHECK_EQ(s.dead_lettered, bad);
    CHECK_EQ(s.read, s.accepted + s.dead_lettered);
    CHECK(s.p50_us >= 1);
    CHECK(s.max_us >= s.p99_us && s.p99_us >= s.p50_us);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    free(csv);
}

static void test_pipeline_dead_letter_file(void)
{
    int good, bad;
    char *csv = make_csv(1000, 10, &good, &bad);
    const char *dir = cf_test_tmpdir();
    cf_config *c = conf_new();
    char err[256];
    CHECK_OK(cf_config_set(c, "output.dir", dir, err, sizeof(err)));
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    char path[512];
    snprintf(path, sizeof(path), "%s/dead_letter.ndjson", dir);
    size_t len = 0;
    char *dl = cf_test_slurp(path, &len);
    REQUIRE(dl != NULL);
    int lines = 0;
    for (size_t i = 0; i < len; i++) {
        lines += dl[i] == '\n';
    }
    CHECK_EQ(lines, bad);
    CHECK(strstr(dl, "\"reason\":\"unknown currency") != NULL);
    CHECK(strstr(dl, "\"line\":11") != NULL); /* row 9 is bad; the header is line 1 */
    /* private by default: position and reason, never the record's ids or amounts */
    CHECK(strstr(dl, "\"raw\"") == NULL);
    CHECK(strstr(dl, "EUR") == NULL && strstr(dl, ",A1,") == NULL);
    free(dl);
    cf_pipeline_destroy(p);
    CHECK_OK(cf_config_set(c, "output.dead_letter_raw", "true", err, sizeof(err)));
    char dir2[400];
    snprintf(dir2, sizeof(dir2), "%s/raw", dir);
    CHECK_OK(cf_config_set(c, "output.dir", dir2, err, sizeof(err)));
    snprintf(path, sizeof(path), "%s/dead_letter.ndjson", dir2);
    p = pipe_new(c);
    REQUIRE(p != NULL);
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    dl = cf_test_slurp(path, &len);
    REQUIRE(dl != NULL);
    CHECK(strstr(dl, "\"raw\":") != NULL); /* asked for: the raw bytes are there */
    free(dl);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    free(csv);
}

static void slow_sink(void *opaque, const cf_batch *b)
{
    (void)b;
    (*(int *)opaque)++;
    struct timespec ts = {0, 200000}; /* 0.2 ms per batch: far slower than decode */
    nanosleep(&ts, NULL);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_pipeline_backpressure_bounded(void)
{
    int good, bad;
    char *csv = make_csv(200000, 0, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "pipeline.batch_max", "64", err, sizeof(err));
    cf_config_set(c, "pipeline.ring_batches", "8", err, sizeof(err));
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    long rss_before = max_rss_kb();
    int calls = 0;
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_pipeline_set_sink_hook(p, slow_sink, &calls);
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    CHECK_EQ(s.accepted, 200000);
    /* The slow sink must have pushed back on the source... */
    CHECK(s.source_blocked_ns > 0);
    /* ...while never more batches were in flight than the pool holds (2 rings x 8). */
    CHECK(s.peak_inflight_batches <= 16);
    /* 200k events are ~40 MB as cf_event; the bounded pipeline must not hold them all. */
    CHECK(max_rss_kb() - rss_before < 20 * 1024);
    CHECK(calls >= 200000 / 64);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    free(csv);
}

static void test_pipeline_fdh_sample(void)
{
    const char *path = cf_test_shared("data/fdh/fdh_sample_1day_2018-04-01.csv");
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "input.path", path, err, sizeof(err));
    cf_config_set(c, "input.format", "fdh", err, sizeof(err));
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    CHECK_EQ(s.read, 9488);
    CHECK_EQ(s.accepted, 9488);
    CHECK_EQ(s.dead_lettered, 0);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
}

static void test_pipeline_summary_json(void)
{
    cf_summary s = {.read = 10,
                    .accepted = 7,
                    .dead_lettered = 3,
                    .elapsed_s = 0.5,
                    .events_per_s = 14,
                    .p50_us = 5,
                    .p99_us = 9,
                    .p999_us = 10,
                    .max_us = 11,
                    .cpu_s = 0.25};
    char buf[512];
    size_t n = cf_summary_to_json(&s, buf, sizeof(buf));
    CHECK(n > 0 && buf[n - 1] == '\n');
    CHECK(strstr(buf, "\"read\":10,\"accepted\":7,\"dead_lettered\":3") != NULL);
    CHECK(strstr(buf, "\"latency_us\":{\"p50\":5,\"p99\":9,\"p999\":10,\"max\":11}") != NULL);
    CHECK_EQ(cf_summary_to_json(&s, buf, 10), 0);
}

static void test_config_batch_keys(void)
{
    cf_config *c = conf_new();
    char buf[64], err[256] = "";
    CHECK_OK(cf_config_get(c, "batch.mode", buf, sizeof(buf)));
    CHECK_STR(buf, "adaptive");
    CHECK_OK(cf_config_get(c, "batch.linger_ms", buf, sizeof(buf)));
    CHECK_STR(buf, "5");
    CHECK_OK(cf_config_get(c, "metrics.listen", buf, sizeof(buf)));
    CHECK_STR(buf, "");
    CHECK_OK(cf_config_set(c, "batch.mode", "fixed:16", err, sizeof(err)));
    const char *bad[] = {"fixed:0", "fixed:", "fixed:x", "fixed:-1", "adaptiv", "fixed:1x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_EQ(cf_config_set(c, "batch.mode", bad[i], err, sizeof(err)), CF_E_INVAL);
        CHECK(strstr(err, "batch.mode") != NULL);
    }
    const char *y = "batch:\n  mode: fixed:9\n  linger_ms: -1\n";
    CHECK_EQ(cf_config_load_string(c, y, strlen(y), "t.yaml", err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "batch.linger_ms") != NULL && strstr(err, "line 3") != NULL);
    /* fixed:N beyond batch.count_max, and count_max beyond the buffers: refused at build. */
    cf_pipeline *p = NULL;
    cf_config_set(c, "pipeline.batch_max", "64", err, sizeof(err));
    cf_config_set(c, "batch.mode", "fixed:65", err, sizeof(err));
    CHECK_EQ(cf_pipeline_create(&p, c, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "batch.mode") != NULL);
    cf_config_set(c, "batch.mode", "adaptive", err, sizeof(err));
    cf_config_set(c, "batch.count_max", "128", err, sizeof(err));
    CHECK_EQ(cf_pipeline_create(&p, c, err, sizeof(err)), CF_E_INVAL);
    CHECK(strstr(err, "batch.count_max") != NULL && strstr(err, "pipeline.batch_max") != NULL);
    CHECK(p == NULL);
    cf_config_destroy(c);
}

/* What the sink saw: batch sizes in order, and the oldest event's latency per batch. */
typedef struct batch_log {
    uint32_t *sizes;
    size_t n, cap;
    uint64_t events;
    int64_t max_oldest_ns;
} batch_log;

static void log_batches(void *opaque, const cf_batch *b)
{
    batch_log *l = opaque;
    if (l->n < l->cap) {
        l->sizes[l->n] = b->n;
    }
    l->n++;
    l->events += b->n;
    if (b->n > 0) {
        int64_t oldest = cf_now_ns() - b->ev[0].ingest_ns;
        l->max_oldest_ns = oldest > l->max_oldest_ns ? oldest : l->max_oldest_ns;
    }
}

static void run_logged(cf_config *c, const char *csv, batch_log *l, cf_summary *s)
{
    memset(l, 0, sizeof(*l));
    l->cap = 1u << 20;
    l->sizes = malloc(l->cap * sizeof(uint32_t));
    char err[256] = "";
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_pipeline_set_sink_hook(p, log_batches, l);
    CHECK_OK(cf_pipeline_run(p, s, err, sizeof(err)));
    cf_pipeline_destroy(p);
}

static void test_batch_fixed_exact(void)
{
    int good, bad;
    char *csv = make_csv(20000, 11, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "pipeline.batch_max", "64", err, sizeof(err));
    cf_config_set(c, "batch.mode", "fixed:37", err, sizeof(err));
    /* No linger cut in an unpaced in-memory run: only the end of input may be short. */
    cf_config_set(c, "batch.linger_ms", "60000", err, sizeof(err));
    batch_log l;
    cf_summary s;
    run_logged(c, csv, &l, &s);
    CHECK_EQ(l.events, (uint64_t)good);
    CHECK_EQ(s.accepted, (uint64_t)good);
    REQUIRE(l.n > 1 && l.n <= l.cap);
    size_t off = 0;
    for (size_t i = 0; i + 1 < l.n; i++) {
        off += l.sizes[i] != 37;
    }
    CHECK_EQ(off, 0);
    CHECK(l.sizes[l.n - 1] >= 1 && l.sizes[l.n - 1] <= 37);
    CHECK_EQ(l.n, ((size_t)good + 36) / 37);
    CHECK_EQ(s.batch_target, 37);
    CHECK_EQ(s.batch_target_changes, 0);
    CHECK_EQ(s.batch_max_seen, 37);
    free(l.sizes);
    cf_config_destroy(c);
    free(csv);
}

static void test_batch_bytes_bound(void)
{
    int good, bad;
    char *csv = make_csv(3000, 0, &good, &bad);
    /* Record lengths without the newline, as the splitter hands them on. */
    size_t min_len = SIZE_MAX, max_len = 0;
    const char *line = strchr(csv, '\n') + 1; /* after the header */
    while (*line != '\0') {
        const char *nl = strchr(line, '\n');
        size_t len = (size_t)(nl - line);
        min_len = len < min_len ? len : min_len;
        max_len = len > max_len ? len : max_len;
        line = nl + 1;
    }
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "batch.mode", "fixed:1000", err, sizeof(err));
    cf_config_set(c, "batch.linger_ms", "60000", err, sizeof(err));
    cf_config_set(c, "batch.bytes_max", "1024", err, sizeof(err));
    batch_log l;
    cf_summary s;
    run_logged(c, csv, &l, &s);
    CHECK_EQ(l.events, 3000);
    /* Every batch stays within 1024 bytes of records and, but for the last, is full to
     * within one record. */
    size_t off = 0;
    for (size_t i = 0; i < l.n; i++) {
        off += l.sizes[i] > 1024 / min_len;
        off += i + 1 < l.n && l.sizes[i] + 1 < 1024 / max_len;
    }
    CHECK_EQ(off, 0);
    CHECK(s.batch_max_seen <= 1024 / min_len);
    free(l.sizes);
    cf_config_destroy(c);
    free(csv);
}

static double mean_size(const batch_log *l)
{
    return l->n > 0 ? (double)l->events / (double)l->n : 0;
}

static void test_batch_adaptive_follows_load(void)
{
    int good, bad;
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "protect", "plain", err, sizeof(err));
    /* Light: 1500 events paced at 3000/s. */
    char *light = make_csv(1500, 0, &good, &bad);
    cf_config_set(c, "input.rate", "3000", err, sizeof(err));
    batch_log l1, l2;
    cf_summary s1, s2;
    run_logged(c, light, &l1, &s1);
    /* Heavy: 100k events at once. */
    char *heavy = make_csv(100000, 0, &good, &bad);
    cf_config_set(c, "input.rate", "0", err, sizeof(err));
    run_logged(c, heavy, &l2, &s2);
    CHECK_EQ(l1.events, 1500);
    CHECK_EQ(l2.events, 100000);
    fprintf(stderr,
            "  light: %zu batches, mean %.1f (target %u); heavy: %zu batches, mean %.1f "
            "(target %u)\n",
            l1.n, mean_size(&l1), s1.batch_target, l2.n, mean_size(&l2), s2.batch_target);
    /* Small batches when events trickle in, large ones under a flood. */
    CHECK(mean_size(&l1) * 4 < mean_size(&l2));
    CHECK(s1.batch_target * 4 <= s2.batch_target || s2.batch_max_seen >= 4 * s1.batch_max_seen);
    free(l1.sizes);
    free(l2.sizes);
    cf_config_destroy(c);
    free(light);
    free(heavy);
}

static void test_batch_linger_bound(void)
{
    int good, bad;
    char *csv = make_csv(300, 0, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "protect", "none", err, sizeof(err));
    /* Batches that can never fill at 300 events/s: only the linger lets them go. */
    cf_config_set(c, "batch.mode", "fixed:1000", err, sizeof(err));
    cf_config_set(c, "batch.linger_ms", "20", err, sizeof(err));
    cf_config_set(c, "input.rate", "300", err, sizeof(err));
    batch_log l;
    cf_summary s;
    run_logged(c, csv, &l, &s);
    CHECK_EQ(l.events, 300);
    fprintf(stderr, "  %zu batches, mean %.1f, oldest event waited at most %.1f ms\n", l.n,
            mean_size(&l), (double)l.max_oldest_ns / 1e6);
    /* The linger cut the batches (about 6 events each at 300/s and 20 ms)... */
    CHECK(l.n >= 300 / 30);
    CHECK(s.batch_max_seen < 100);
    /* ...and no event waited much beyond it (generous slack for a shared machine). */
    CHECK(l.max_oldest_ns < (20 + 300) * INT64_C(1000000));
    free(l.sizes);
    cf_config_destroy(c);
    free(csv);
}

/* The value of the sample line that starts with @p name_labels (UINT64_MAX: none). */
static uint64_t series(const char *text, const char *name_labels)
{
    size_t n = strlen(name_labels);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n')) {
        p += *p == '\n';
        if (strncmp(p, name_labels, n) == 0) {
            return strtoull(p + n, NULL, 10);
        }
    }
    return UINT64_MAX;
}

static void test_metrics_reconcile(void)
{
    int good, bad;
    char *csv = make_csv(5000, 7, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    CHECK_EQ(cf_pipeline_metrics_port(p), 0); /* no metrics.listen: no server */
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(cf_metrics_expose(cf_pipeline_metrics(p), &text, &len));
    REQUIRE(text != NULL);
    CHECK_EQ(series(text, "confide_events_total{stage=\"decode\",outcome=\"accepted\"} "),
             s.accepted);
    CHECK_EQ(series(text, "confide_events_total{stage=\"decode\",outcome=\"dead_lettered\"} "),
             s.dead_lettered);
    CHECK_EQ(series(text, "confide_events_total{stage=\"gateway\",outcome=\"committed\"} "),
             s.accepted);
    CHECK_EQ(series(text, "confide_events_total{stage=\"sink\",outcome=\"delivered\"} "),
             s.accepted);
    CHECK_EQ(series(text, "confide_event_latency_seconds_count "), s.accepted);
    CHECK_EQ(series(text, "confide_batch_size_count{stage=\"gateway\"} "), s.batches);
    CHECK_EQ(series(text, "confide_parallelism "), 2);
    /* Reasons are bounded labels: the decoder's reason up to ':', never the bad value. */
    CHECK(series(text, "confide_dead_letters_total{reason=\"unknown_currency\"} ") > 0);
    CHECK(series(text, "confide_dead_letters_total{reason=\"bad_timestamp\"} ") > 0);
    CHECK(strstr(text, "XXX") == NULL);
    uint64_t dl = 0;
    for (const char *q = text; (q = strstr(q, "\nconfide_dead_letters_total{")) != NULL; q++) {
        const char *sp = strchr(q, ' ');
        dl += strtoull(sp + 1, NULL, 10);
    }
    CHECK_EQ(dl, s.dead_lettered);
    CHECK(strstr(text, "confide_queue_depth{queue=\"decode_to_gateway\"}") != NULL);
    CHECK(strstr(text, "confide_queue_depth{queue=\"gateway_to_party1\"}") != NULL);
    /* The histogram's +Inf bucket holds every event; buckets are cumulative. */
    CHECK_EQ(series(text, "confide_event_latency_seconds_bucket{le=\"+Inf\"} "), s.accepted);
    cf_free(text);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    free(csv);
}

/* Status callback: counts calls, remembers the last (final) one. */
typedef struct status_log {
    int calls, finals;
    cf_run_status last;
} status_log;

static void on_status(void *opaque, const cf_run_status *st)
{
    status_log *l = opaque;
    l->calls++;
    l->finals += st->final;
    l->last = *st;
}

static void test_status_and_metrics_server(void)
{
    int good, bad;
    char *csv = make_csv(600, 0, &good, &bad);
    cf_config *c = conf_new();
    char err[256];
    cf_config_set(c, "protect", "none", err, sizeof(err));
    cf_config_set(c, "input.rate", "2000", err, sizeof(err));
    cf_config_set(c, "status.interval_ms", "50", err, sizeof(err));
    cf_config_set(c, "metrics.listen", "127.0.0.1:0", err, sizeof(err));
    cf_pipeline *p = pipe_new(c);
    REQUIRE(p != NULL);
    CHECK(cf_pipeline_metrics_port(p) != 0);
    status_log sl = {0};
    cf_pipeline_set_status_cb(p, on_status, &sl);
    cf_pipeline_set_input_buffer(p, csv, strlen(csv));
    cf_summary s;
    CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
    CHECK(sl.calls >= 2); /* a 0.3 s run at 50 ms: several lines, then the final one */
    CHECK_EQ(sl.finals, 1);
    CHECK(sl.last.final);
    CHECK_EQ(sl.last.committed, 600);
    CHECK_EQ(sl.last.accepted, 600);
    CHECK_EQ(sl.last.bytes_total, strlen(csv));
    CHECK_EQ(sl.last.bytes_read, strlen(csv));
    char line[512];
    size_t n = cf_run_status_format(&sl.last, line, sizeof(line));
    CHECK(n > 0 && n == strlen(line) && strchr(line, '\n') == NULL);
    CHECK(strstr(line, "ev/s") != NULL && strstr(line, "100%") != NULL);
    CHECK(cf_run_status_format(&sl.last, line, 8) == 7);
    cf_pipeline_destroy(p);
    /* A bad address is an error naming the key. */
    cf_config_set(c, "metrics.listen", "not an address", err, sizeof(err));
    cf_pipeline *q = NULL;
    CHECK(cf_pipeline_create(&q, c, err, sizeof(err)) != CF_OK);
    CHECK(strstr(err, "metrics.listen") != NULL);
    cf_config_destroy(c);
    free(csv);
}

/* The mask context (meta entry 1: log id || run id) of every batch of the log in @p dir. */
static size_t batch_contexts(const char *dir, uint8_t ctx[][32], size_t max)
{
    cf_audit_reader *rd = NULL;
    char err[256];
    size_t n = 0;
    if (cf_audit_reader_open(&rd, dir, NULL, 0, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "reader: %s\n", err);
        return 0;
    }
    cf_audit_entry e;
    while (n < max && cf_audit_reader_next(rd, &e, err, sizeof(err)) == CF_OK) {
        if (e.type == CF_AUDIT_REC_BATCH) {
            CHECK(e.meta_len >= 34 && e.meta[0] == 1 && e.meta[1] == 32);
            if (e.meta_len >= 34) {
                memcpy(ctx[n++], e.meta + 2, 32);
            }
        }
    }
    cf_audit_reader_destroy(rd);
    return n;
}

/* Two runs sharing one key directory (one audit log per day, say) must never share a mask:
 * each log gets its own random id and each run its own run id, recorded with every batch. */
static void test_masks_bound_to_log_and_run(void)
{
    int good, bad;
    char *csv = make_csv(3000, 0, &good, &bad);
    const char *root = cf_test_tmpdir();
    char keys[512], out[2][512], audit[2][512], err[256];
    snprintf(keys, sizeof(keys), "%s/keys", root);
    REQUIRE(cf_keys_generate(keys, 2, 1, 0, err, sizeof(err)) == CF_OK);
    static uint8_t ctx[2][64][32];
    size_t n[2];
    for (int r = 0; r < 2; r++) {
        snprintf(out[r], sizeof(out[r]), "%s/run%d", root, r);
        snprintf(audit[r], sizeof(audit[r]), "%s/audit", out[r]);
        cf_config *c = conf_new();
        CHECK_OK(cf_config_set(c, "output.dir", out[r], err, sizeof(err)));
        CHECK_OK(cf_config_set(c, "keys.dir", keys, err, sizeof(err)));
        CHECK_OK(cf_config_set(c, "batch.mode", "fixed:500", err, sizeof(err)));
        cf_pipeline *p = pipe_new(c);
        REQUIRE(p != NULL);
        cf_pipeline_set_input_buffer(p, csv, strlen(csv));
        cf_summary s;
        CHECK_OK(cf_pipeline_run(p, &s, err, sizeof(err)));
        cf_pipeline_destroy(p);
        cf_config_destroy(c);
        n[r] = batch_contexts(audit[r], ctx[r], 64);
        CHECK(n[r] >= 2);
        for (size_t b = 1; b < n[r]; b++) { /* one log id and one run id per run */
            CHECK(memcmp(ctx[r][b], ctx[r][0], 32) == 0);
        }
    }
    CHECK(memcmp(ctx[0][0], ctx[1][0], 16) != 0);           /* log ids differ */
    CHECK(memcmp(ctx[0][0] + 16, ctx[1][0] + 16, 16) != 0); /* run ids differ */
    free(csv);
}

/* output.postgres: settings that would leak the password or cannot be exactly once are
 * refused before anything is created; a database that is down is a clear error naming the
 * sink, not a crash (no server needed: nothing listens on port 1). */
static void test_pg_sink_refusals(void)
{
    const char *root = cf_test_tmpdir();
    char out[400], err[512] = "", pwf[400];
    snprintf(out, sizeof(out), "%s/out", root);
    struct {
        const char *conninfo, *key, *value, *says;
    } bad[] = {
        {"host=127.0.0.1 user=u password=hunter2 dbname=d", NULL, NULL, "holds a password"},
        {"postgresql://u:hunter2@127.0.0.1/d", NULL, NULL, "holds a password"},
        {"host=127.0.0.1 dbname=d", "output.results_format", "csv", "results_format: ndjson"},
        {"host=127.0.0.1 dbname=d", "audit.enabled", "false", "the audit log"},
        {"host=127.0.0.1 dbname=d", "output.postgres.schema", "Pay-Ments", "lower-case"},
        {"host=127.0.0.1 dbname=d", "output.postgres.table_prefix", "x;drop", "lower-case"},
        {"host=127.0.0.1 dbname=d", "output.dir", "", "needs output.dir"},
        {"host=127.0.0.1 dbname='d", NULL, NULL, "not a libpq connection string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cf_config *c = conf_new();
        CHECK_OK(cf_config_set(c, "output.dir", out, err, sizeof(err)));
        CHECK_OK(cf_config_set(c, "output.postgres.conninfo", bad[i].conninfo, err, sizeof(err)));
        if (bad[i].key != NULL) {
            CHECK_OK(cf_config_set(c, bad[i].key, bad[i].value, err, sizeof(err)));
        }
        cf_pipeline *p = NULL;
        err[0] = '\0';
        CHECK_EQ(cf_pipeline_create(&p, c, err, sizeof(err)), CF_E_INVAL);
        CHECK(strstr(err, bad[i].says) != NULL);
        CHECK(strstr(err, "hunter2") == NULL);
        CHECK(access(out, F_OK) != 0); /* refused before the output directory exists */
        cf_pipeline_destroy(p);
        cf_config_destroy(c);
    }
    /* a password file others can read */
    snprintf(pwf, sizeof(pwf), "%s/pw", root);
    FILE *f = fopen(pwf, "w");
    REQUIRE(f != NULL);
    fputs("hunter2\n", f);
    fclose(f);
    chmod(pwf, 0644);
    cf_config *c = conf_new();
    CHECK_OK(cf_config_set(c, "output.dir", out, err, sizeof(err)));
    CHECK_OK(cf_config_set(c, "output.postgres.conninfo",
                           "host=127.0.0.1 port=1 dbname=d user=u connect_timeout=5", err,
                           sizeof(err)));
    CHECK_OK(cf_config_set(c, "output.postgres.password_file", pwf, err, sizeof(err)));
    cf_pipeline *p = NULL;
    CHECK_EQ(cf_pipeline_create(&p, c, err, sizeof(err)), CF_E_PERM);
    CHECK(strstr(err, "output.postgres.password_file") != NULL);
    cf_pipeline_destroy(p);
    /* 0600, but the database is down */
    chmod(pwf, 0600);
    p = NULL;
    cf_err e = cf_pipeline_create(&p, c, err, sizeof(err));
    CHECK(e == CF_E_TRANSPORT);
    CHECK(strstr(err, "output.postgres: cannot connect to the database") != NULL);
    CHECK(strstr(err, "hunter2") == NULL);
    CHECK(p == NULL);
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
}

#include "cf_test_main.h"
