/*
 * confide run: builds the embedded pipeline from the config file and command-line
 * overrides and streams the input through it. Options map onto config keys, so everything
 * the command line can say, a config file can say too (see docs/CONFIG.md).
 *
 * For people: on a TTY, a one-line live status on stderr (rate, p99, batch size, queue
 * depths, a progress bar for files), cleared at the end; --stats-json prints the metrics
 * registry as one JSON line per status.interval_ms instead. Neither carries amounts or ids.
 */
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"
#include "confide/metrics.h"
#include "confide/runtime.h"

static cf_pipeline *volatile running;
static bool status_on_tty;                  /* a live status line may be on stderr's current line */
static volatile sig_atomic_t hold_released; /* metrics.hold: SIGINT/SIGTERM after the run */

static void on_signal(int sig)
{
    if (sig != SIGHUP) {
        hold_released = 1;
    }
    if (running == NULL) {
        return;
    }
    if (sig == SIGHUP) {
        cf_pipeline_reload(running);
    } else {
        cf_pipeline_stop(running);
    }
}

static void log_to_stderr(void *opaque, cf_log_level lvl, const char *ctx, const char *msg)
{
    (void)opaque;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    /* Over the status line, not appended to it; the next refresh redraws it below. */
    fprintf(stderr, "%sconfide: %s: %s: %s\n", status_on_tty ? "\r\033[K" : "", names[lvl], ctx,
            msg);
}

static const char run_head[] =
    "usage: confide run [options]\n\n"
    "Streams transactions through the embedded pipeline (source -> decode -> process ->\n"
    "sink) and prints a summary. Options override the config file.\n\n";
static const char run_tail[] =
    "\nOutputs (in --out DIR): results.ndjson, alerts.ndjson, late.ndjson,\n"
    "dead_letter.ndjson, audit/ (verify with confide audit verify), keys/.\n"
    "SIGHUP re-reads blocked-party lists; SIGINT/SIGTERM stop reading and drain.\n\n"
    "Exit codes: 0 ok, 2 usage or config error, 3 runtime error, 4 integrity alert.\n";

static const char gateway_head[] =
    "usage: confide gateway [confide run options]\n\n"
    "The trusted gateway of a distributed run: reads the input, screens every event\n"
    "against the rules (alerts.ndjson), appends it to the audit log, splits amounts\n"
    "into shares and publishes them to JetStream (PREFIX.shares.I for party I, group\n"
    "names to PREFIX.groups for the combiner). Takes every `confide run` option\n"
    "(confide run --help) and the nats.* keys, e.g.\n\n"
    "  confide gateway --config pipeline.yaml --input tx.csv --out gw --keys keys/gateway\n"
    "                  --nats nats://127.0.0.1:4222 --set nats.user=gateway\n\n"
    "Start the parties (confide party) and the combiner (confide combine) with the\n"
    "same config; they may start before or after the gateway. A gateway restarted\n"
    "into the same --out resumes from its audit log; nothing is published twice.\n\n"
    "options (those of confide run):\n";
static const char gateway_tail[] =
    "\nExit codes: 0 ok, 2 usage or config error, 3 runtime error (e.g. the NATS\n"
    "servers unreachable for 60 s).\n";

typedef struct run_flags {
    bool json;
    bool stats_json;
    bool no_status;
    bool fresh;
    bool resume;
    bool config_doc;
} run_flags;

#define CONF_OPT(n, a, k, h)                                                                       \
    {                                                                                              \
        .name = n, .type = CLI_CONF, .arg = a, .key = k, .help = h                                 \
    }

/* Parses the command line into @p conf and @p fl (config files first, so that options
 * override them wherever they appear). Returns CLI_CONTINUE or the exit code. */
static int parse_args(bool gateway, cf_config *conf, int argc, char **argv, run_flags *fl)
{
    const cli_opt opts[] = {
        {.name = "config",
         .type = CLI_CONF_FILE,
         .arg = "FILE",
         .flags = CLI_REPEAT | CLI_FIRST,
         .help = "YAML config (every key has a default; see docs/CONFIG.md)"},
        CONF_OPT("input", "FILE|-", "input.path",
                 "input file or - for stdin            (input.path)"),
        CONF_OPT("format", "F", "input.format",
                 "csv | ndjson | fdh                   (input.format)"),
        CONF_OPT("rate", "N", "input.rate", "pace open-loop at N events/s         (input.rate)"),
        CONF_OPT("shape", "S", "input.shape",
                 "steady | diurnal | burst | trace:FILE (input.shape)"),
        CONF_OPT("speedup", "X", "input.speedup",
                 "time compression for diurnal/trace   (input.speedup)"),
        CONF_OPT("out", "DIR", "output.dir",
                 "output directory: results, alerts, late, dead letters,\n"
                 "audit/ and keys/ unless set elsewhere (output.dir)"),
        CONF_OPT("rules", "FILE", "rules.file",
                 "compliance rules (YAML)              (rules.file)"),
        CONF_OPT("protect", "P", "protect", "lsa | plain | none                   (protect)"),
        CONF_OPT("parties", "K", "parties", "aggregation parties for lsa, 2..8    (parties)"),
        CONF_OPT("keys", "DIR", "keys.dir", "key directory (confide keygen)       (keys.dir)"),
        CONF_OPT("audit", "DIR", "audit.dir", "audit log directory                  (audit.dir)"),
        CONF_OPT("window-ms", "N", "window.size_ms",
                 "window length in ms                  (window.size_ms)"),
        CONF_OPT("group-by", "LIST", "window.group_by",
                 "e.g. merchant,country                (window.group_by)"),
        CONF_OPT("batch", "MODE", "batch.mode",
                 "adaptive | fixed:N                   (batch.mode)"),
        CONF_OPT("slo-ms", "N", "slo.p99_ms", "p99 latency objective in ms          (slo.p99_ms)"),
        CONF_OPT("workers", "N", "party.workers",
                 "workers per party, 1..16, by key group (party.workers)"),
        CONF_OPT("autoscale", "POLICY", "autoscale.policy",
                 "resize the workers while running: static | reactive |\n"
                 "ds2 | predictive (docs/autoscaling.md) (autoscale.policy)"),
        CONF_OPT("metrics", "HOST:PORT", "metrics.listen",
                 "serve the live console (/), /api/status, /metrics and\n"
                 "/healthz while running; port 0 picks a free port,\n"
                 "printed on stderr                    (metrics.listen)"),
        CONF_OPT("metrics-hold", NULL, "metrics.hold",
                 "after the run, keep serving them (final counts and the\n"
                 "summary) until SIGINT/SIGTERM        (metrics.hold)"),
        CONF_OPT("nats", "URLS", "nats.servers",
                 "NATS servers, comma-separated        (nats.servers)"),
        {.name = "stats-json",
         .type = CLI_FLAG,
         .flag = &fl->stats_json,
         .help = "print one JSON stats line (docs/metrics.md) on stderr per\nstatus.interval_ms"},
        {.name = "no-status",
         .type = CLI_FLAG,
         .flag = &fl->no_status,
         .help = "no live status line on a terminal"},
        {.name = "resume",
         .type = CLI_FLAG,
         .flag = &fl->resume,
         .help = "restart into an output whose audit log holds events even\n"
                 "when the input or config cannot be checked against it\n"
                 "(a stream); skips that many accepted records unchecked"},
        {.name = "fresh",
         .type = CLI_FLAG,
         .flag = &fl->fresh,
         .help = "keep an existing --out DIR aside (renamed DIR.prev-<time>)\n"
                 "and start a new one: new log, outputs and keys"},
        {.name = "set",
         .type = CLI_CONF,
         .arg = "KEY=VALUE",
         .flags = CLI_REPEAT,
         .help = "set any config key (repeatable)"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &fl->json,
         .help = "print exactly one JSON summary object on stdout"},
        {.name = "config-doc",
         .type = CLI_FLAG,
         .flag = &fl->config_doc,
         .help = "print the config key reference (Markdown) and exit"},
    };
    static const cli_conflict conflicts[] = {{"fresh", "resume"}};
    cli_spec spec = {.prog = gateway ? "confide gateway" : "confide run",
                     .head = gateway ? gateway_head : run_head,
                     .tail = gateway ? gateway_tail : run_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .conflicts = conflicts,
                     .n_conflicts = CLI_N(conflicts),
                     .conf = conf};
    int rc = cli_parse(&spec, argc, argv);
    char errstr[512];
    if (rc == CLI_CONTINUE && fl->resume &&
        cf_config_set(conf, "recovery.resume_any_input", "true", errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "%s: %s\n", spec.prog, errstr);
        rc = CF_EXIT_USAGE;
    }
    /* The gateway's role last, so that no --set role=... can change it. */
    if (rc == CLI_CONTINUE && gateway &&
        cf_config_set(conf, "role", "gateway", errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "%s: %s\n", spec.prog, errstr);
        rc = CF_EXIT_USAGE;
    }
    return rc;
}

static void print_human(const cf_summary *s)
{
    printf("confide run: read %llu records: %llu accepted, %llu dead-lettered\n",
           (unsigned long long)s->read, (unsigned long long)s->accepted,
           (unsigned long long)s->dead_lettered);
    printf("  %.3f s, %.0f events/s, cpu %.3f s\n", s->elapsed_s, s->events_per_s, s->cpu_s);
    printf("  latency (ingest -> committed): p50 %lld us, p99 %lld us, p99.9 %lld us, max %lld "
           "us\n",
           (long long)s->p50_us, (long long)s->p99_us, (long long)s->p999_us, (long long)s->max_us);
    printf("  %llu batches through the gateway, %.1f events each on average (largest %u, "
           "controller target %u, changed %llu times)\n",
           (unsigned long long)s->batches, s->batch_mean, s->batch_max_seen, s->batch_target,
           (unsigned long long)s->batch_target_changes);
    printf("  %llu alerts, %llu aggregates in %llu windows (%llu withheld below min_count), "
           "%llu late\n",
           (unsigned long long)s->alerts, (unsigned long long)s->results,
           (unsigned long long)s->windows, (unsigned long long)s->suppressed,
           (unsigned long long)s->late);
    if (s->audited > 0) {
        printf("  audit log: %llu events appended at index %llu\n", (unsigned long long)s->audited,
               (unsigned long long)s->audit_first_index);
    }
    if (s->integrity_alerts > 0) {
        printf("  INTEGRITY ALERTS: %llu (see alerts.ndjson)\n",
               (unsigned long long)s->integrity_alerts);
    }
}

typedef struct status_ctx {
    cf_pipeline *p;
    bool tty;
    bool stats_json;
} status_ctx;

/* Runs on the pipeline's status thread; stderr is only written from here while it runs. */
static void on_status(void *opaque, const cf_run_status *st)
{
    status_ctx *c = opaque;
    if (c->tty) {
        if (st->final) {
            fputs("\r\033[K", stderr); /* leave the terminal as it was */
        } else {
            char line[512];
            size_t n = cf_run_status_format(st, line, sizeof(line));
            struct winsize ws;
            if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && n >= ws.ws_col) {
                line[ws.ws_col - 1] = '\0'; /* never wrap: \r must return to this line */
            }
            fprintf(stderr, "\r\033[K%s", line);
        }
    }
    if (c->stats_json) {
        char *js = NULL;
        size_t n = 0;
        if (cf_metrics_snapshot_json(cf_pipeline_metrics(c->p), &js, &n) == CF_OK) {
            fwrite(js, 1, n, stderr);
            fputc('\n', stderr);
            cf_free(js);
        }
    }
    fflush(stderr);
}

/* "confide run: metrics at http://HOST:PORT/metrics" with the bound port (port 0). */
static void announce_metrics(const cf_config *conf, cf_pipeline *p)
{
    uint16_t port = cf_pipeline_metrics_port(p);
    char addr[600];
    if (port == 0 || cf_config_get(conf, "metrics.listen", addr, sizeof(addr)) != CF_OK) {
        return;
    }
    char *colon = strrchr(addr, ':');
    if (colon != NULL) {
        *colon = '\0';
    }
    fprintf(stderr, "confide run: metrics at http://%s:%u/metrics\n", addr, (unsigned)port);
    fprintf(stderr, "confide run: console at http://%s:%u/\n", addr, (unsigned)port);
    fflush(stderr);
}

/* metrics.hold: the run is over; the console and /metrics stay up (final counts and the
 * summary) until SIGINT or SIGTERM. */
static void hold_until_signal(const cf_config *conf, cf_pipeline *p)
{
    char hold[8] = "";
    if (p == NULL || cf_pipeline_metrics_port(p) == 0 ||
        cf_config_get(conf, "metrics.hold", hold, sizeof(hold)) != CF_OK ||
        strcmp(hold, "true") != 0) {
        return;
    }
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    fflush(stdout);
    fprintf(stderr,
            "confide run: finished; still serving port %u (metrics.hold) until SIGINT or "
            "SIGTERM\n",
            (unsigned)cf_pipeline_metrics_port(p));
    fflush(stderr);
    while (!hold_released) {
        sigsuspend(&old);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* --fresh: the existing output directory (its audit log, outputs and keys) is renamed
 * DIR.prev-<UTC time>, never deleted, so the next run starts a new log. */
static int keep_aside(cf_config *conf)
{
    char out[4096], dst[4200], ts[32];
    struct stat st;
    if (cf_config_get(conf, "output.dir", out, sizeof(out)) != CF_OK || out[0] == '\0') {
        fprintf(stderr, "confide run: --fresh needs --out DIR\n");
        return CF_EXIT_USAGE;
    }
    if (stat(out, &st) != 0) {
        return CF_EXIT_OK; /* nothing to keep aside */
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(dst, sizeof(dst), "%s.prev-%s", out, ts);
    if (rename(out, dst) != 0) {
        fprintf(stderr, "confide run: --fresh: cannot rename %s to %s: %s\n", out, dst,
                strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    fprintf(stderr, "confide run: --fresh: the previous output is kept in %s\n", dst);
    return CF_EXIT_OK;
}

int cf_cli_run(bool gateway, int argc, char **argv)
{
    const char *prog = gateway ? "confide gateway" : "confide run";
    cf_config *conf = NULL;
    cf_pipeline *p = NULL;
    char errstr[512] = "";
    run_flags fl = {0};
    int rc;
    cf_log_set(log_to_stderr, NULL, CF_LOG_WARN);
    if (cf_config_create(&conf) != CF_OK) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return CF_EXIT_RUNTIME;
    }
    rc = parse_args(gateway, conf, argc, argv, &fl);
    if (rc == CLI_CONTINUE && fl.config_doc) {
        cf_config_write_doc(stdout);
        rc = CF_EXIT_OK;
        goto done;
    }
    if (rc != CLI_CONTINUE) {
        goto done;
    }
    rc = CF_EXIT_OK;
    char outdir[8] = "x", auditdir[8] = "x";
    cf_config_get(conf, "output.dir", outdir, sizeof(outdir));
    cf_config_get(conf, "audit.dir", auditdir, sizeof(auditdir));
    if (rc == CF_EXIT_OK && outdir[0] == '\0' && auditdir[0] == '\0') {
        /* Not an error (a quick look at a file is legitimate), but nothing is kept. */
        fprintf(stderr, "confide run: warning: no --out DIR (output.dir): no audit log is "
                        "written and results, alerts and late records are discarded\n");
    }
    if (rc == CF_EXIT_OK && fl.fresh) {
        rc = keep_aside(conf);
    }
    if (rc != CF_EXIT_OK) {
        goto done;
    }
    if (cf_pipeline_create(&p, conf, errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "%s: %s\n", prog, errstr);
        rc = CF_EXIT_USAGE;
        goto done;
    }
    announce_metrics(conf, p);
    status_ctx sc = {.p = p,
                     .tty = !fl.no_status && !fl.stats_json && isatty(STDERR_FILENO),
                     .stats_json = fl.stats_json};
    if (sc.tty || sc.stats_json) {
        cf_pipeline_set_status_cb(p, on_status, &sc);
    }
    status_on_tty = sc.tty;
    running = p;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    cf_summary s;
    cf_err err = cf_pipeline_run(p, &s, errstr, sizeof(errstr));
    running = NULL;
    status_on_tty = false; /* the final status call cleared the line */
    if (err != CF_OK) {
        fprintf(stderr, "%s: %s\n", prog, errstr);
        rc = err == CF_E_INVAL ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
    } else if (s.integrity_alerts > 0) {
        rc = CF_EXIT_INTEGRITY;
    }
    if (fl.json) {
        char buf[1024];
        size_t n = cf_summary_to_json(&s, buf, sizeof(buf));
        fwrite(buf, 1, n, stdout);
    } else {
        print_human(&s);
    }
    hold_until_signal(conf, p);
done:
    cf_pipeline_destroy(p);
    cf_config_destroy(conf);
    return rc;
}

static int run_main(int argc, char **argv)
{
    return cf_cli_run(false, argc, argv);
}

const cf_command cf_cmd_run = {"run", "stream transactions through the pipeline", run_main};
