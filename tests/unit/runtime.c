#include <sys/resource.h>
#include <time.h>

#include "cf_test.h"
#include "confide/io.h"
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
        cf_err e = cf_config_load_string(c, cases[i][0], strlen(cases[i][0]), "t.yaml", err,
                                         sizeof(err));
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
    cf_summary s = {.read = 10, .accepted = 7, .dead_lettered = 3, .elapsed_s = 0.5,
                    .events_per_s = 14, .p50_us = 5, .p99_us = 9, .p999_us = 10, .max_us = 11,
                    .cpu_s = 0.25};
    char buf[512];
    size_t n = cf_summary_to_json(&s, buf, sizeof(buf));
    CHECK(n > 0 && buf[n - 1] == '\n');
    CHECK(strstr(buf, "\"read\":10,\"accepted\":7,\"dead_lettered\":3") != NULL);
    CHECK(strstr(buf, "\"latency_us\":{\"p50\":5,\"p99\":9,\"p999\":10,\"max\":11}") != NULL);
    CHECK_EQ(cf_summary_to_json(&s, buf, 10), 0);
}

#include "cf_test_main.h"
