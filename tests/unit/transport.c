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

static void test_jetstream_publish_dedup_resume(void)
{
    if (system("command -v nats-server >/dev/null 2>&1") != 0) {
        const char *ci = getenv("CI");
        if (ci != NULL && strcmp(ci, "true") == 0) {
            fprintf(stderr, "nats-server missing (scripts/setup.sh installs it)\n");
            cf_test_failures++;
            return;
        }
        printf("SKIP: nats-server not installed\n");
        exit(77);
    }
    char store[] = "/tmp/cf-js-test-XXXXXX";
    REQUIRE(mkdtemp(store) != NULL);
    int port = free_port();
    REQUIRE(port > 0);
    pid_t pid = start_server(port, store);
    REQUIRE(pid > 0);
    char url[64], err[256];
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", port);
    cf_js_opts o = {.servers = url, .name = "unit", .timeout_ms = 2000};
    cf_js *js = NULL;
    for (int i = 0; i < 100 && cf_js_connect(&js, &o, err, sizeof(err)) != CF_OK; i++) {
        usleep(50000); /* the server is starting */
    }
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
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", store);
    CHECK_EQ(system(cmd), 0);
}

#include "cf_test_main.h"
