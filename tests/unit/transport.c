#include "cf_test.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "confide/core.h"
#include "confide/io.h"
#include "confide/runtime.h"
#include "confide/transport.h"

extern char **environ;

static size_t make_frame(uint8_t *buf, const char *payload, uint64_t id, uint32_t aux)
{
    size_t n = strlen(payload);
    memcpy(buf + CF_FRAME_HDR_LEN, payload, n);
    cf_frame_hdr h = {.type = CF_FRAME_PARTIALS,
                      .sender = 2,
                      .count = 3,
                      .id = id,
                      .len = (uint32_t)n,
                      .aux = aux};
    cf_frame_seal(&h, buf);
    return CF_FRAME_HDR_LEN + n;
}

static void test_frame_roundtrip(void)
{
    uint8_t buf[256];
    char err[128];
    size_t n = make_frame(buf, "three partial sums", 0x0102030405060708ULL, 7);
    cf_frame_hdr h;
    CHECK_OK(cf_frame_open(buf, n, &h, err, sizeof(err)));
    CHECK_EQ(h.type, CF_FRAME_PARTIALS);
    CHECK_EQ(h.sender, 2);
    CHECK_EQ(h.count, 3);
    CHECK_EQ(h.id, 0x0102030405060708ULL);
    CHECK_EQ(h.aux, 7);
    CHECK_EQ(h.len, strlen("three partial sums"));
    CHECK(memcmp(buf + CF_FRAME_HDR_LEN, "three partial sums", h.len) == 0);
}

/* A frame altered anywhere, header or payload, is refused as a whole. */
static void test_frame_every_bit_flip_refused(void)
{
    uint8_t buf[256];
    char err[128];
    size_t n = make_frame(buf, "payload bytes", 42, 0);
    cf_frame_hdr h;
    size_t missed = 0;
    for (size_t i = 0; i < n * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        missed += cf_frame_open(buf, n, &h, err, sizeof(err)) == CF_OK;
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    CHECK_EQ(missed, 0);
    CHECK_OK(cf_frame_open(buf, n, &h, err, sizeof(err)));
}

static void test_frame_bad_lengths(void)
{
    uint8_t buf[256];
    char err[128];
    size_t n = make_frame(buf, "abc", 1, 0);
    cf_frame_hdr h;
    CHECK_EQ(cf_frame_open(buf, n - 1, &h, err, sizeof(err)), CF_E_CORRUPT); /* torn */
    CHECK(strstr(err, "length") != NULL);
    CHECK_EQ(cf_frame_open(buf, 10, &h, err, sizeof(err)), CF_E_CORRUPT);
    buf[4] = CF_FRAME_VERSION + 1;
    CHECK_EQ(cf_frame_open(buf, n, &h, err, sizeof(err)), CF_E_CORRUPT);
    CHECK(strstr(err, "version") != NULL);
}

/* ---- against a real nats-server with JetStream ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static pid_t start_server(int port, const char *store)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    char *argv[] = {"nats-server", "-js", "-a",          "127.0.0.1", "-p",
                    portbuf,       "-sd", (char *)store, NULL};
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, "nats-server", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

/* Starts nats-server with JetStream on a free port (skips when it is not installed, fails
 * under CI=true) and connects; *pid and store for server_stop. */
static cf_js *server_start(pid_t *pid, char *store, char *url, size_t url_size)
{
    if (system("command -v nats-server >/dev/null 2>&1") != 0) {
        const char *ci = getenv("CI");
        if (ci != NULL && strcmp(ci, "true") == 0) {
            fprintf(stderr, "nats-server missing (scripts/setup.sh installs it)\n");
            cf_test_failures++;
            return NULL;
        }
        printf("SKIP: nats-server not installed\n");
        exit(77);
    }
    if (mkdtemp(store) == NULL) {
        return NULL;
    }
    int port = free_port();
    *pid = port > 0 ? start_server(port, store) : -1;
    if (*pid <= 0) {
        return NULL;
    }
    char err[256];
    snprintf(url, url_size, "nats://127.0.0.1:%d", port);
    cf_js_opts o = {.servers = url, .name = "unit", .timeout_ms = 2000};
    cf_js *js = NULL;
    for (int i = 0; i < 100 && cf_js_connect(&js, &o, err, sizeof(err)) != CF_OK; i++) {
        usleep(50000); /* the server is starting */
    }
    return js;
}

static void server_stop(pid_t pid, const char *store)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", store);
    CHECK_EQ(system(cmd), 0);
}

static void test_jetstream_publish_dedup_resume(void)
{
    char store[] = "/tmp/cf-js-test-XXXXXX", url[64], err[256];
    pid_t pid = -1;
    cf_js *js = server_start(&pid, store, url, sizeof(url));
    REQUIRE(js != NULL);
    CHECK_OK(cf_js_ensure_stream(js, "T_SHARES_0", "t.shares.0", 1, 60, err, sizeof(err)));
    CHECK_OK(cf_js_ensure_stream(js, "T_SHARES_0", "t.shares.0", 1, 60, err, sizeof(err)));
    cf_frame_hdr h;
    bool found = true;
    CHECK_OK(cf_js_last(js, "T_SHARES_0", "t.shares.0", &h, &found, err, sizeof(err)));
    CHECK(!found);
    uint8_t buf[256];
    const char *ids[] = {"a", "b", "c", "b"}; /* the last repeats an id: dropped */
    for (int i = 0; i < 4; i++) {
        char payload[16];
        snprintf(payload, sizeof(payload), "frame %d", i);
        size_t n = make_frame(buf, payload, (uint64_t)i + 100, 0);
        bool dup = false;
        CHECK_OK(cf_js_publish(js, "t.shares.0", buf, n, ids[i], &dup, err, sizeof(err)));
        CHECK_EQ(dup, i == 3);
    }
    CHECK_OK(cf_js_last(js, "T_SHARES_0", "t.shares.0", &h, &found, err, sizeof(err)));
    CHECK(found);
    CHECK_EQ(h.id, 102);
    /* A receiver resuming after sequence 1 gets frames 2 and 3, then nothing. */
    cf_js_sub *sub = NULL;
    CHECK_OK(cf_js_subscribe(&sub, js, "T_SHARES_0", "t.shares.0", 2, 8, err, sizeof(err)));
    for (uint64_t want = 2; want <= 3 && sub != NULL; want++) {
        cf_js_msg m;
        CHECK_OK(cf_js_next(sub, &m, 2000));
        CHECK_EQ(m.stream_seq, want);
        CHECK_OK(cf_frame_open(m.data, m.len, &h, err, sizeof(err)));
        CHECK_EQ(h.id, 100 + want - 1);
        CHECK_OK(cf_js_ack(&m));
    }
    if (sub != NULL) {
        cf_js_msg m;
        CHECK_EQ(cf_js_next(sub, &m, 200), CF_E_FULL);
    }
    cf_js_unsubscribe(sub);
    cf_js_close(js);
    server_stop(pid, store);
}

/* Reads every message of @p subject in @p stream into one newline-joined buffer. */
static size_t read_stream(cf_js *js, const char *stream, const char *subject, char *out, size_t cap)
{
    char err[256];
    cf_js_sub *sub = NULL;
    size_t len = 0;
    if (cf_js_subscribe(&sub, js, stream, subject, 1, 1024, err, sizeof(err)) != CF_OK) {
        return 0;
    }
    cf_js_msg m;
    while (cf_js_next(sub, &m, 500) == CF_OK) {
        if (len + m.len + 1 < cap) {
            memcpy(out + len, m.data, m.len);
            len += m.len;
            out[len++] = '\n';
        }
        cf_js_ack(&m);
    }
    cf_js_unsubscribe(sub);
    out[len] = '\0';
    return len;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = malloc(1 << 20);
    *len = buf != NULL ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf != NULL) {
        buf[*len] = '\0';
    }
    return buf;
}

/* output.nats_subject: the released rows and alerts reach JetStream exactly as they reach
 * the files; a second run over the same input and output (a restart with nothing new)
 * publishes nothing twice. */
static void run_once(const char *url, const char *out, const char *csv, size_t csv_len)
{
    cf_config *c = NULL;
    cf_pipeline *p = NULL;
    char err[512];
    REQUIRE(cf_config_create(&c) == CF_OK);
    const char *kv[][2] = {{"output.dir", out},
                           {"nats.servers", url},
                           {"output.nats_subject", "t"},
                           {"min_count", "1"},
                           {"window.size_ms", "60000"},
                           {"rules.file", ""},
                           {"recovery.resume_any_input", "true"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        CHECK_OK(cf_config_set(c, kv[i][0], kv[i][1], err, sizeof(err)));
    }
    char rules[600];
    snprintf(rules, sizeof(rules), "%s/examples/rules.yaml", CF_SOURCE_DIR);
    CHECK_OK(cf_config_set(c, "rules.file", rules, err, sizeof(err)));
    if (cf_pipeline_create(&p, c, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "%s\n", err);
        cf_test_failures++;
        cf_config_destroy(c);
        return;
    }
    cf_pipeline_set_input_buffer(p, csv, csv_len);
    cf_summary sum;
    CHECK_OK(cf_pipeline_run(p, &sum, err, sizeof(err)));
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
}

static void test_nats_output_sink(void)
{
    char store[] = "/tmp/cf-js-test-XXXXXX", url[64], out[] = "/tmp/cf-sink-out-XXXXXX";
    pid_t pid = -1;
    cf_js *js = server_start(&pid, store, url, sizeof(url));
    REQUIRE(js != NULL);
    REQUIRE(mkdtemp(out) != NULL);
    /* 60 payments in 3 minutes at 2 merchants, amounts large enough to raise alerts */
    char *csv = malloc(1 << 16);
    REQUIRE(csv != NULL);
    size_t n = (size_t)snprintf(csv, 1 << 16, "%s", cf_csv_header());
    for (int i = 0; i < 60; i++) {
        n += (size_t)snprintf(csv + n, (1 << 16) - n,
                              "%d,2024-01-01T00:%02d:%02dZ,C%d,M%d,%d.00,EUR,PAYMENT,DE,ECOM,0,0\n",
                              i, i / 20, (i * 3) % 60, i % 7, i % 2, 100 + i * 50);
    }
    run_once(url, out, csv, n);
    run_once(url, out, csv, n); /* everything is already in the log: republishes nothing */
    char path[128];
    size_t flen = 0;
    snprintf(path, sizeof(path), "%s/results.ndjson", out);
    char *file = slurp(path, &flen);
    char *got = malloc(1 << 20);
    REQUIRE(file != NULL && got != NULL);
    size_t glen = read_stream(js, "CONFIDE_OUT", "t.results", got, 1 << 20);
    CHECK(flen > 0);
    CHECK_EQ(glen, flen);
    CHECK(strcmp(got, file) == 0);
    free(file);
    snprintf(path, sizeof(path), "%s/alerts.ndjson", out);
    file = slurp(path, &flen);
    REQUIRE(file != NULL);
    glen = read_stream(js, "CONFIDE_OUT", "t.alerts", got, 1 << 20);
    CHECK(flen > 0);
    CHECK_EQ(glen, flen);
    CHECK(strcmp(got, file) == 0);
    free(file);
    free(got);
    free(csv);
    cf_js_close(js);
    server_stop(pid, store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", out);
    CHECK_EQ(system(cmd), 0);
}

/* The ordered publisher's stored callback: records tags in the order it is called. */
typedef struct stored_log {
    uintptr_t tags[256];
    unsigned n, dropped;
} stored_log;

static void on_stored(void *ctx, void *tag, bool stored)
{
    stored_log *l = ctx;
    if (!stored) {
        l->dropped++;
    } else if (l->n < 256) {
        l->tags[l->n++] = (uintptr_t)tag;
    }
}

/* Frame ids of @p stream in stream order (-1 for a message that is no frame). */
static unsigned stream_ids(cf_js *js, const char *stream, const char *subject, long *ids,
                           unsigned cap)
{
    char err[256];
    cf_js_sub *sub = NULL;
    unsigned n = 0;
    if (cf_js_subscribe(&sub, js, stream, subject, 1, 1024, err, sizeof(err)) != CF_OK) {
        return 0;
    }
    cf_js_msg m;
    while (n < cap && cf_js_next(sub, &m, 500) == CF_OK) {
        cf_frame_hdr h;
        ids[n++] = cf_frame_open(m.data, m.len, &h, err, sizeof(err)) == CF_OK ? (long)h.id : -1;
        cf_js_ack(&m);
    }
    cf_js_unsubscribe(sub);
    return n;
}

static void pub_frames(cf_js_pub *p, unsigned from, unsigned to)
{
    char err[256], id[32];
    uint8_t buf[256];
    for (unsigned i = from; i < to; i++) {
        size_t n = make_frame(buf, "ordered", i, 0);
        snprintf(id, sizeof(id), "o%u", i);
        CHECK_OK(cf_js_pub_send(p, buf, n, id, (void *)(uintptr_t)(i + 1), err, sizeof(err)));
    }
}

/* Frames published asynchronously reach the stream once each and in order, also when
 * another message slips in between (every frame in flight after it is refused and sent
 * again after it) and when a restarted publisher sends frames the stream already has. */
static void test_jetstream_ordered_publisher(void)
{
    char store[] = "/tmp/cf-js-test-XXXXXX", url[64], err[256];
    pid_t pid = -1;
    cf_js *js = server_start(&pid, store, url, sizeof(url));
    REQUIRE(js != NULL);
    CHECK_OK(cf_js_ensure_stream(js, "T_ORD", "t.ord", 1, 60, err, sizeof(err)));
    stored_log log = {0};
    cf_js_pub *p = NULL;
    CHECK_OK(
        cf_js_pub_open(&p, js, "T_ORD", "t.ord", 4, 5000, on_stored, &log, NULL, err, sizeof(err)));
    REQUIRE(p != NULL);
    pub_frames(p, 0, 40);
    CHECK_OK(cf_js_pub_flush(p, err, sizeof(err)));
    CHECK_EQ(cf_js_pub_inflight(p), 0);
    /* Another message lands: the frames sent after it expect the stream to end elsewhere. */
    uint8_t buf[256];
    size_t n = make_frame(buf, "foreign", 1000, 0);
    CHECK_OK(cf_js_publish(js, "t.ord", buf, n, "foreign", NULL, err, sizeof(err)));
    pub_frames(p, 40, 80);
    CHECK_OK(cf_js_pub_flush(p, err, sizeof(err)));
    cf_js_pub_close(p);
    CHECK_EQ(log.n, 80);
    CHECK_EQ(log.dropped, 0);
    for (unsigned i = 0; i < log.n; i++) {
        CHECK_EQ(log.tags[i], i + 1);
    }
    /* A restarted publisher repeats its last 5 frames (duplicates) and goes on. */
    stored_log log2 = {0};
    CHECK_OK(cf_js_pub_open(&p, js, "T_ORD", "t.ord", 4, 5000, on_stored, &log2, NULL, err,
                            sizeof(err)));
    REQUIRE(p != NULL);
    pub_frames(p, 75, 100);
    CHECK_OK(cf_js_pub_flush(p, err, sizeof(err)));
    cf_js_pub_close(p);
    CHECK_EQ(log2.n, 25);
    long ids[256];
    unsigned got = stream_ids(js, "T_ORD", "t.ord", ids, 256);
    CHECK_EQ(got, 101);
    for (unsigned i = 0, want = 0; i < got; i++) {
        if (ids[i] == 1000) {
            CHECK_EQ(want, 40); /* where it came in: before all frames sent after it */
            continue;
        }
        CHECK_EQ(ids[i], (long)want);
        want++;
    }
    cf_js_close(js);
    server_stop(pid, store);
}

#include "cf_test_main.h"
