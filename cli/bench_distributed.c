/*
 * confide bench distributed: the distributed pipeline as a user deploys it -- nats-server
 * (1 node, then a 3-node cluster with R3 streams), `confide party` x K, `confide combine`
 * and `confide gateway` as separate processes on this machine -- and, in the same run, the
 * raw JetStream rate of the same traffic (the messages and bytes the run wrote to each stream,
 * published with acks, then consumed with acks).
 *
 * Per configuration: events/s end to end (gateway start to the combiner's exit, so every
 * released aggregate is on disk), the gateway's ingest-to-committed latency p50/p99 (its
 * events are in the audit log and queued for publishing; JetStream's time is in the end to
 * end rate, not in this percentile), and CPU us/event over every process including the
 * servers. Optional paced run (--rate) for latency at the paper's 89,000 events/s.
 * No servers without TLS or users here: this measures the data path (the tests cover the
 * secured setup). No assertion on speed: this is a measurement.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/core.h"
#include "confide/transport.h"

extern char **environ;

typedef struct cfg {
    const char *dir;
    const char *self;
    int parties;
    int workers;          /* worker processes per party (party.workers) */
    const char *group_by; /* window.group_by */
    uint64_t events;
    int base_port;
    const pid_t *servers; /* their CPU is counted too */
    int nservers;
} cfg;

typedef struct result {
    const char *group_by;
    int nodes;
    int workers;
    double rate; /* 0: unpaced */
    double events_per_s, p50_ms, p99_ms, cpu_us;
    /* CPU seconds by role over the run: gateway, parties (all), combiner, nats-server(s) */
    double cpu_gateway_s, cpu_parties_s, cpu_combiner_s, cpu_servers_s;
    double raw_pub_per_s, raw_cons_per_s, raw_events_per_s;
    double ready_s; /* until every receiver read its streams (not timed) */
    uint64_t events;
    uint64_t msgs, bytes; /* what the roles wrote to JetStream (frames, as stored) */
    uint64_t raw_msgs;    /* messages the raw rate sent (those of the unpaced run) */
    double completeness;  /* `confide audit verify` on the gateway's log; -1: not verified */
    bool ok;
} result;

static const char bench_distributed_head[] =
    "usage: confide bench distributed [--events N] [--parties K] [--workers W] [--rate R]\n"
    "                                 [--nodes LIST] [--group-by FIELDS] [--quick] [--json]\n\n"
    "Runs nats-server, the parties, the combiner and the gateway as separate\n"
    "processes on this machine (1 node, then a 3-node R3 cluster) and measures the\n"
    "end-to-end rate, the gateway's latency and CPU per event, next to the raw\n"
    "JetStream rate of the same traffic (as many messages of the same sizes on as many\n"
    "streams as the run wrote), measured in the same run. The clock\n"
    "starts with the gateway, once every party and the combiner reads its streams.\n\n";
static const char bench_distributed_tail[] =
    "Needs nats-server on PATH (scripts/setup.sh installs it).\n";

static pid_t spawn(char *const argv[], const char *out_path)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        pid = -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/* Waits for @p pid; adds the CPU seconds it used to *cpu when not NULL. */
static int wait_cpu(pid_t pid, double *cpu)
{
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
    }
    if (cpu != NULL) {
        *cpu += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int wait_ok(pid_t pid)
{
    return wait_cpu(pid, NULL);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

static int start_servers(const cfg *c, int nodes, pid_t *pids, char *urls, size_t urls_size)
{
    urls[0] = '\0';
    for (int n = 0; n < nodes; n++) {
        char port[16], store[600], name[16], cluster[64], routes[256], log[600];
        int p = c->base_port + n;
        snprintf(port, sizeof(port), "%d", p);
        snprintf(store, sizeof(store), "%s/store-%d-%d", c->dir, nodes, n);
        snprintf(name, sizeof(name), "n%d", n);
        snprintf(cluster, sizeof(cluster), "nats://127.0.0.1:%d", c->base_port + 100 + n);
        routes[0] = '\0';
        for (int m = 0; m < nodes; m++) {
            if (m != n) {
                size_t l = strlen(routes);
                snprintf(routes + l, sizeof(routes) - l, "%snats://127.0.0.1:%d", l > 0 ? "," : "",
                         c->base_port + 100 + m);
            }
        }
        snprintf(log, sizeof(log), "%s/nats-%d-%d.log", c->dir, nodes, n);
        char *one[] = {"nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", store, NULL};
        char *many[] = {"nats-server", "-js",   "-a",       "127.0.0.1", "-p",
                        port,          "-sd",   store,      "-n",        name,
                        "--cluster",   cluster, "--routes", routes,      "--cluster_name",
                        "confide",     NULL};
        pids[n] = spawn(nodes == 1 ? one : many, log);
        if (pids[n] < 0) {
            return -1;
        }
        size_t l = strlen(urls);
        snprintf(urls + l, urls_size - l, "%snats://127.0.0.1:%d", l > 0 ? "," : "", p);
    }
    for (int n = 0; n < nodes; n++) {
        int tries = 0;
        while (!port_open(c->base_port + n) && tries++ < 100) {
            usleep(50000);
        }
    }
    return 0;
}

static void stop_servers(pid_t *pids, int nodes)
{
    for (int n = 0; n < nodes; n++) {
        if (pids[n] > 0) {
            kill(pids[n], SIGTERM);
            wait_ok(pids[n]);
        }
    }
}

static double json_num(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(buf, pat);
    return p != NULL ? strtod(p + strlen(pat), NULL) : -1;
}

static double cpu_children(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds a live process has used so far (utime + stime from /proc). */
static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double servers_cpu(const cfg *c)
{
    double t = 0;
    for (int i = 0; i < c->nservers; i++) {
        t += proc_cpu(c->servers[i]);
    }
    return t;
}

/* How many lines of @p path say a stream is being read (the roles log it at INFO). */
static int reading_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0;
    char line[1024];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, "] reading ") != NULL || strstr(line, ": reading ") != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

/* Waits (up to a minute) until each party worker reads its shares stream and the combiner
 * (the last log) reads every party worker's partials. */
static void wait_ready(char logs[][600], int np, int party_workers)
{
    for (int tries = 0; tries < 600; tries++) {
        int ready = 0;
        for (int i = 0; i < np; i++) {
            ready += reading_lines(logs[i]) >= (i < np - 1 ? 1 : party_workers);
        }
        if (ready == np) {
            return;
        }
        usleep(100000);
    }
    fprintf(stderr, "bench distributed: the receivers were not all reading after a minute\n");
}

/* One pipeline run on fresh streams: parties, combiner, then the gateway. */
static bool run_pipeline(const cfg *c, int nodes, double rate, const char *urls, result *r)
{
    char conf[600], input[600], keys[600], tag[32];
    snprintf(tag, sizeof(tag), "n%d-r%.0f", nodes, rate);
    snprintf(conf, sizeof(conf), "%s/%s.yaml", c->dir, tag);
    snprintf(input, sizeof(input), "%s/input.csv", c->dir);
    snprintf(keys, sizeof(keys), "%s/keys", c->dir);
    FILE *f = fopen(conf, "w");
    if (f == NULL) {
        return false;
    }
    fprintf(f,
            "protect: lsa\nparties: %d\nparty:\n  workers: %d\nwindow:\n  size_ms: 600000\n"
            "  group_by: %s\naudit:\n  fsync: batch\nnats:\n  servers: %s\n  replicas: %d\n"
            "  prefix: b%s\n",
            c->parties, c->workers, c->group_by, urls, nodes,
            nodes == 1 ? (rate > 0 ? "p" : "u") : "c");
    fclose(f);
    char self[600];
    snprintf(self, sizeof(self), "%s", c->self);
    enum { ROLES_MAX = 8 * 16 + 1 };
    pid_t pids[ROLES_MAX];
    int np = 0;
    static char outs[ROLES_MAX][600], logs[ROLES_MAX][600], ids[ROLES_MAX][16], wks[ROLES_MAX][16];
    for (int x = 0; x < c->parties * c->workers; x++) {
        int i = x / c->workers, w = x % c->workers;
        snprintf(outs[np], sizeof(outs[np]), "%s/%s-p%dw%d", c->dir, tag, i, w);
        snprintf(logs[np], sizeof(logs[np]), "%s/%s-p%dw%d.log", c->dir, tag, i, w);
        snprintf(ids[np], sizeof(ids[np]), "%d", i);
        snprintf(wks[np], sizeof(wks[np]), "%d", w);
        char *argv[] = {self,    "party", "--config", conf,     "--id", ids[np], "--worker",
                        wks[np], "--out", outs[np],   "--keys", keys,   NULL};
        pids[np] = spawn(argv, logs[np]);
        np++;
    }
    snprintf(outs[np], sizeof(outs[np]), "%s/%s-c", c->dir, tag);
    snprintf(logs[np], sizeof(logs[np]), "%s/%s-c.log", c->dir, tag);
    char *cargv[] = {self,     "combine", "--config", conf,     "--out",
                     outs[np], "--keys",  keys,       "--json", NULL};
    pids[np] = spawn(cargv, logs[np]);
    np++;
    /* Not timed: the receivers create their streams and consumers (an R3 stream elects its
     * leader first, seconds on a fresh cluster); the run starts once every one reads. */
    int64_t ready0 = cf_now_ns();
    wait_ready(logs, np, c->parties * c->workers);
    r->ready_s = (double)(cf_now_ns() - ready0) / 1e9;
    char gout[600], glog[600], ratebuf[32];
    snprintf(gout, sizeof(gout), "%s/%s-g", c->dir, tag);
    snprintf(glog, sizeof(glog), "%s/%s-g.json", c->dir, tag);
    snprintf(ratebuf, sizeof(ratebuf), "%.0f", rate);
    char *gargv[] = {self,          "gateway", "--config", conf,     "--input",
                     input,         "--out",   gout,       "--keys", keys,
                     "--no-status", "--json",  "--rate",   ratebuf,  NULL};
    double cpu0 = cpu_children(), srv0 = servers_cpu(c);
    int64_t t0 = cf_now_ns();
    pid_t g = spawn(gargv, glog);
    r->cpu_gateway_s = r->cpu_parties_s = r->cpu_combiner_s = 0;
    bool ok = g > 0 && wait_cpu(g, &r->cpu_gateway_s) == 0;
    for (int i = 0; i < np; i++) {
        ok &= pids[i] > 0 &&
              wait_cpu(pids[i], i < np - 1 ? &r->cpu_parties_s : &r->cpu_combiner_s) == 0;
    }
    double wall = (double)(cf_now_ns() - t0) / 1e9;
    r->cpu_servers_s = servers_cpu(c) - srv0;
    r->nodes = nodes;
    r->group_by = c->group_by;
    r->events = c->events;
    r->workers = c->workers;
    r->rate = rate;
    r->events_per_s = (double)c->events / wall;
    r->p50_ms = json_num(glog, "p50") / 1e3;
    r->p99_ms = json_num(glog, "p99") / 1e3;
    r->cpu_us = (cpu_children() - cpu0 + r->cpu_servers_s) * 1e6 / (double)c->events;
    r->completeness = -1;
    if (ok) {
        /* Every event in the log exactly once, verified as an auditor would. */
        char audit[700], vjson[700];
        snprintf(audit, sizeof(audit), "%s/audit", gout);
        snprintf(vjson, sizeof(vjson), "%s/%s-verify.json", c->dir, tag);
        char *vargv[] = {self, "audit", "verify", audit, "--keys", keys, "--json", NULL};
        if (wait_ok(spawn(vargv, vjson)) == 0) {
            r->completeness = json_num(vjson, "completeness");
        }
    }
    r->ok = ok;
    if (!ok) {
        fprintf(stderr, "bench distributed: a role failed (logs in %s)\n", c->dir);
    }
    return ok;
}

/* What the unpaced run's roles wrote: every stream of its prefix (each party worker's
 * shares and partials, the group names), as messages and bytes. */
#define TRAFFIC_MAX (2 * 8 * 16 + 1)
typedef struct traffic {
    int n;
    uint64_t msgs[TRAFFIC_MAX], bytes[TRAFFIC_MAX];
} traffic;

static void run_traffic(const cfg *c, const char *urls, const char *prefix, traffic *t)
{
    char err[256];
    cf_js *js = NULL;
    cf_js_opts o = {.servers = urls, .name = "bench-traffic", .timeout_ms = 5000};
    t->n = 0;
    if (cf_js_connect(&js, &o, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "bench distributed: traffic: %s\n", err);
        return;
    }
    for (int x = 0; x <= 2 * c->parties * c->workers && t->n < TRAFFIC_MAX; x++) {
        char name[64];
        int i = (x / 2) / c->workers, w = (x / 2) % c->workers;
        if (x == 2 * c->parties * c->workers) {
            snprintf(name, sizeof(name), "%s_GROUPS", prefix);
        } else {
            snprintf(name, sizeof(name), "%s_%s_%d", prefix, x % 2 ? "PARTIALS" : "SHARES", i);
            if (w > 0) {
                snprintf(name + strlen(name), sizeof(name) - strlen(name), "_%d", w);
            }
        }
        cf_js_stream_st st;
        if (cf_js_stream_state(js, name, &st, err, sizeof(err)) == CF_OK && st.msgs > 0) {
            t->msgs[t->n] = st.msgs;
            t->bytes[t->n] = st.bytes;
            t->n++;
        }
    }
    cf_js_close(js);
}

static void wrote(const traffic *t, result *r)
{
    r->msgs = r->bytes = 0;
    for (int j = 0; j < t->n; j++) {
        r->msgs += t->msgs[j];
        r->bytes += t->bytes[j];
    }
}

/* The raw JetStream rate of the same traffic: as many messages of the same mean size on as
 * many streams as the run wrote (@p t), published with acks through the roles' ordered
 * asynchronous publisher (the same window), then consumed back with acks. Events per
 * second = the run's events over publish + consume time: what the transport alone takes to
 * move what the pipeline moved. */
static void raw_rate(const char *urls, int nodes, uint64_t events, const traffic *t, result *r)
{
    char err[256] = "no traffic recorded";
    cf_js *js = NULL;
    cf_js_opts o = {.servers = urls, .name = "bench-raw", .timeout_ms = 5000};
    cf_js_pub *pub[TRAFFIC_MAX] = {0};
    uint8_t *frame[TRAFFIC_MAX] = {0};
    size_t len[TRAFFIC_MAX];
    char subj[TRAFFIC_MAX][32], stream[TRAFFIC_MAX][32];
    bool ok = t->n > 0 && cf_js_connect(&js, &o, err, sizeof(err)) == CF_OK;
    uint64_t total = 0, most = 0;
    for (int j = 0; ok && j < t->n; j++) {
        snprintf(stream[j], sizeof(stream[j]), "RAW%d_%d", nodes, j);
        snprintf(subj[j], sizeof(subj[j]), "raw%d.%d", nodes, j);
        uint64_t mean = t->bytes[j] / t->msgs[j];
        len[j] = mean > CF_FRAME_HDR_LEN ? (size_t)mean : CF_FRAME_HDR_LEN;
        frame[j] = calloc(1, len[j]);
        ok = frame[j] != NULL &&
             cf_js_ensure_stream(js, stream[j], subj[j], nodes, 60, err, sizeof(err)) == CF_OK &&
             cf_js_pub_open(&pub[j], js, stream[j], subj[j], 8, 60000, NULL, NULL, NULL, err,
                            sizeof(err)) == CF_OK;
        total += t->msgs[j];
        most = t->msgs[j] > most ? t->msgs[j] : most;
    }
    int64_t t0 = cf_now_ns();
    /* round robin, as the roles publish side by side */
    for (uint64_t k = 0; ok && k < most; k++) {
        for (int j = 0; ok && j < t->n; j++) {
            if (k >= t->msgs[j]) {
                continue;
            }
            cf_frame_hdr h = {.type = CF_FRAME_SHARES,
                              .count = 1,
                              .id = k,
                              .len = (uint32_t)(len[j] - CF_FRAME_HDR_LEN)};
            cf_frame_seal(&h, frame[j]);
            char id[32];
            snprintf(id, sizeof(id), "r%llu", (unsigned long long)k);
            ok = cf_js_pub_send(pub[j], frame[j], len[j], id, NULL, err, sizeof(err)) == CF_OK;
        }
    }
    for (int j = 0; j < t->n; j++) {
        if (pub[j] != NULL && ok) {
            ok = cf_js_pub_flush(pub[j], err, sizeof(err)) == CF_OK;
        }
        cf_js_pub_close(pub[j]);
        free(frame[j]);
    }
    double tpub = (double)(cf_now_ns() - t0) / 1e9;
    uint64_t got = 0;
    t0 = cf_now_ns();
    for (int j = 0; ok && j < t->n; j++) {
        cf_js_sub *sub = NULL;
        /* in flight below nats-server's 64 MiB max_pending per client, as the roles keep */
        int pending = (int)(32 * 1024 * 1024 / len[j]);
        pending = pending < 1 ? 1 : pending > 256 ? 256 : pending;
        if (cf_js_subscribe(&sub, js, stream[j], subj[j], 1, pending, err, sizeof(err)) != CF_OK) {
            ok = false;
            break;
        }
        cf_js_msg m;
        for (uint64_t k = 0; k < t->msgs[j] && cf_js_next(sub, &m, 2000) == CF_OK; k++) {
            cf_frame_hdr h;
            got += cf_frame_open(m.data, m.len, &h, err, sizeof(err)) == CF_OK;
            cf_js_ack(&m);
        }
        cf_js_unsubscribe(sub);
    }
    double tcons = (double)(cf_now_ns() - t0) / 1e9;
    if (!ok) {
        fprintf(stderr, "bench distributed: raw: %s\n", err);
    } else if (got != total) {
        fprintf(stderr, "bench distributed: raw: read back %llu of %llu messages\n",
                (unsigned long long)got, (unsigned long long)total);
    }
    cf_js_close(js);
    r->raw_msgs = total;
    double ev = (double)events;
    r->raw_pub_per_s = ok ? ev / tpub : 0;
    r->raw_cons_per_s = ok && got == total ? ev / tcons : 0;
    r->raw_events_per_s = ok && got == total ? ev / (tpub + tcons) : 0;
}

static void print(const result *r, bool json, bool first)
{
    double ratio = r->raw_events_per_s > 0 ? r->events_per_s / r->raw_events_per_s : 0;
    if (json) {
        printf("%s{\"group_by\":\"%s\",\"nodes\":%d,\"workers\":%d,\"rate\":%.0f,\"ok\":%s,"
               "\"events_per_s\":%.0f,\"p50_"
               "ms\":%.3f,"
               "\"p99_ms\":%.3f,\"cpu_us_per_event\":%.2f,\"raw_publish_events_per_s\":%.0f,"
               "\"raw_consume_events_per_s\":%.0f,\"raw_events_per_s\":%.0f,\"raw_msgs\":%llu,"
               "\"msgs\":%llu,\"bytes_per_event\":%.1f,"
               "\"vs_raw\":%.3f,\"completeness\":%.6f,\"ready_s\":%.2f,\"cpu_s\":{\"gateway\":%.3f,"
               "\"parties\":%.3f,\"combiner\":%.3f,\"nats_server\":%.3f}}",
               first ? "[" : ",\n ", r->group_by != NULL ? r->group_by : "", r->nodes, r->workers,
               r->rate, r->ok ? "true" : "false", r->events_per_s, r->p50_ms, r->p99_ms, r->cpu_us,
               r->raw_pub_per_s, r->raw_cons_per_s, r->raw_events_per_s,
               (unsigned long long)r->raw_msgs, (unsigned long long)r->msgs,
               r->events > 0 ? (double)r->bytes / (double)r->events : 0, ratio, r->completeness,
               r->ready_s, r->cpu_gateway_s, r->cpu_parties_s, r->cpu_combiner_s, r->cpu_servers_s);
    } else {
        printf("nodes %d workers %d %-10s %9.0f events/s  gateway p50 %7.3f ms p99 %7.3f ms  cpu "
               "%6.2f "
               "us/event  raw JetStream %9.0f events/s (pub %0.f, consume %.0f)  %.2fx raw  "
               "completeness %.6f  receivers ready after %.2f s (not timed)\n  cpu s: gateway "
               "%.3f, parties %.3f, combiner %.3f, nats-server %.3f\n",
               r->nodes, r->workers, r->rate > 0 ? "paced" : "unpaced", r->events_per_s, r->p50_ms,
               r->p99_ms, r->cpu_us, r->raw_events_per_s, r->raw_pub_per_s, r->raw_cons_per_s,
               ratio, r->completeness, r->ready_s, r->cpu_gateway_s, r->cpu_parties_s,
               r->cpu_combiner_s, r->cpu_servers_s);
    }
}

int cf_bench_distributed(int argc, char **argv)
{
    uint64_t events = 2000000;
    double rate = 89000, paced_s = 5;
    int parties = 2;
    bool json = false, quick = false, want1 = true, want3 = true, keep = false;
    uint32_t nparties = 2, nworkers = 1;
    const char *nodes_s = "1,3";
    const char *group_by = "country,channel";
    const cli_opt opts[] = {
        {.name = "events",
         .type = CLI_U64,
         .u64 = &events,
         .arg = "N",
         .help = "events per unpaced run (default 2000000: at 500000 the roles' start\n"
                 "and drain are a quarter of a one-second run)"},
        {.name = "parties",
         .type = CLI_U32,
         .u32 = &nparties,
         .arg = "K",
         .help = "aggregation parties (default 2)"},
        {.name = "workers",
         .type = CLI_U32,
         .u32 = &nworkers,
         .min = 1,
         .max = 16,
         .arg = "W",
         .help = "worker processes per party, by key group (default 1)"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &rate,
         .arg = "R",
         .help = "also a paced run at R events/s on 1 node (default 89000; 0: none)"},
        {.name = "nodes",
         .type = CLI_STR,
         .str = &nodes_s,
         .arg = "LIST",
         .help = "cluster sizes to run, 1 and/or 3 (default 1,3)"},
        {.name = "group-by",
         .type = CLI_STR,
         .str = &group_by,
         .arg = "FIELDS",
         .help = "window.group_by of the run (default country,channel, as examples/confide.yaml;\n"
                 "merchant: about one group per event, nearly all below min_count)"},
        {.name = "quick",
         .type = CLI_FLAG,
         .flag = &quick,
         .help = "100000 events, paced 2 s (a smoke test)"},
        {.name = "keep",
         .type = CLI_FLAG,
         .flag = &keep,
         .help = "keep the run's directory under /tmp"},
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON array on stdout"},
    };
    cli_spec spec = {.prog = "confide bench distributed",
                     .head = bench_distributed_head,
                     .tail = bench_distributed_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    parties = nparties > 8 ? 9 : (int)nparties;
    want1 = strchr(nodes_s, '1') != NULL;
    want3 = strchr(nodes_s, '3') != NULL;
    if (quick) {
        events = 100000;
        paced_s = 2;
    }
    if (parties < 2 || parties > 8 || events < 1000 || group_by[0] == '\0' ||
        strspn(group_by, "abcdefghijklmnopqrstuvwxyz_,") != strlen(group_by)) {
        fprintf(stderr, "bench distributed: --parties 2..8, --events >= 1000, --group-by "
                        "field names separated by commas\n");
        return CF_EXIT_USAGE;
    }
    if (system("command -v nats-server >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench distributed: nats-server not found (bash scripts/setup.sh)\n");
        return CF_EXIT_RUNTIME;
    }
    char dir[] = "/tmp/confide-bench-dist-XXXXXX", self[512];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (mkdtemp(dir) == NULL || sl <= 0) {
        return CF_EXIT_RUNTIME;
    }
    self[sl] = '\0';
    srand((unsigned)(cf_now_ns() ^ getpid()));
    cfg c = {.dir = dir,
             .self = self,
             .parties = parties,
             .workers = (int)nworkers,
             .group_by = group_by,
             .events = events,
             .base_port = 20000 + rand() % 20000};
    char input[600], keys[600], count[32], pcount[8], log[600];
    snprintf(input, sizeof(input), "%s/input.csv", dir);
    snprintf(keys, sizeof(keys), "%s/keys", dir);
    snprintf(count, sizeof(count), "%llu", (unsigned long long)events);
    snprintf(pcount, sizeof(pcount), "%d", parties);
    snprintf(log, sizeof(log), "%s/setup.log", dir);
    char *gen[] = {self,          "gen",   "--count", count, "--customers", "20000",
                   "--terminals", "40000", "--out",   input, "--quiet",     NULL};
    char *kg[] = {self, "keygen", "--dir", keys, "--parties", pcount, NULL};
    if (wait_ok(spawn(gen, log)) != 0 || wait_ok(spawn(kg, log)) != 0) {
        fprintf(stderr, "bench distributed: cannot generate the input (%s)\n", log);
        return CF_EXIT_RUNTIME;
    }
    result res[4];
    int nres = 0;
    int sizes[2] = {want1 ? 1 : 0, want3 ? 3 : 0};
    for (int s = 0; s < 2; s++) {
        int nodes = sizes[s];
        if (nodes == 0) {
            continue;
        }
        pid_t spids[3] = {0};
        char urls[256];
        c.servers = spids;
        c.nservers = nodes;
        if (start_servers(&c, nodes, spids, urls, sizeof(urls)) != 0) {
            fprintf(stderr, "bench distributed: cannot start nats-server\n");
            break;
        }
        if (!json) {
            fprintf(stderr, "bench distributed: %d node(s), %llu events, %d parties...\n", nodes,
                    (unsigned long long)events, parties);
        }
        result r = {0};
        run_pipeline(&c, nodes, 0, urls, &r);
        traffic tr;
        run_traffic(&c, urls, nodes == 1 ? "BU" : "BC", &tr);
        wrote(&tr, &r);
        result paced = {0};
        bool do_paced = nodes == 1 && rate > 0;
        if (do_paced) {
            cfg pc = c;
            pc.events = (uint64_t)(rate * paced_s) < events ? (uint64_t)(rate * paced_s) : events;
            char *pgen[] = {self,          "gen",   "--count", count, "--customers", "20000",
                            "--terminals", "40000", "--out",   input, "--quiet",     NULL};
            snprintf(count, sizeof(count), "%llu", (unsigned long long)pc.events);
            wait_ok(spawn(pgen, log));
            run_pipeline(&pc, nodes, rate, urls, &paced);
            traffic ptr;
            run_traffic(&pc, urls, "BP", &ptr);
            wrote(&ptr, &paced);
            snprintf(count, sizeof(count), "%llu", (unsigned long long)events);
            wait_ok(spawn(gen, log));
        }
        raw_rate(urls, nodes, events, &tr, &r);
        stop_servers(spids, nodes);
        paced.raw_pub_per_s = r.raw_pub_per_s;
        paced.raw_cons_per_s = r.raw_cons_per_s;
        paced.raw_events_per_s = r.raw_events_per_s;
        paced.raw_msgs = r.raw_msgs;
        res[nres++] = r;
        if (do_paced) {
            res[nres++] = paced;
        }
    }
    for (int i = 0; i < nres; i++) {
        print(&res[i], json, i == 0);
    }
    if (json && nres > 0) {
        printf("]\n");
    }
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (keep) {
        fprintf(stderr, "bench distributed: logs and outputs kept in %s\n", dir);
    } else if (system(cmd) != 0) {
        fprintf(stderr, "bench distributed: could not remove %s\n", dir);
    }
    return nres > 0 && res[0].ok ? CF_EXIT_OK : CF_EXIT_RUNTIME;
}
