/*
 * confide gen: synthetic payment transactions from the Fraud-Detection-Handbook simulator
 * (src/io/gen.c), written as canonical CSV or NDJSON.
 *
 * Without --rate it writes as fast as it can through a 1 MiB buffer. With --rate (or a
 * trace shape) it is an open-loop load generator: each line is released at its scheduled
 * time from the pacer (src/io/pacer.c), whatever the reader does (a slow reader does not
 * slow the schedule; the generator catches up as fast as it can). Lines due within the same
 * millisecond share one write(2), released when the last of them is due: no line is written
 * early or more than 1 ms late, and high rates cost neither a system call nor a sleep per
 * event. --out FILE writes FILE.tmp and renames it
 * into place once complete (after fsync), so a reader never sees a partial file.
 *
 * SIGINT/SIGTERM stop generation cleanly: stdout gets what was generated so far (a load
 * test is normally ended this way); an --out file is not created (its .tmp is removed).
 * Long waits (empty trace hours) sleep in slices so a signal is seen within 100 ms.
 *
 * The summary on stderr carries counts only, never amounts or ids.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/transport.h"

#define GEN_DAYS_MAX_N 36500
#define GEN_DAYS_MAX 36500u
#define OUT_BUF_SIZE (1u << 20)
#define LINE_RESERVE 8192u /* room for one encoded event (CF_RECORD_MAX and more) */
#define FLUSH_EVERY_NS INT64_C(1000000)
#define DAY_US INT64_C(86400000000)

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Sleeps until @p due_ns, in slices of at most 100 ms so that a stop signal is noticed. */
static void sleep_until(int64_t due_ns)
{
    for (;;) {
        int64_t left = due_ns - cf_now_ns();
        if (stop_signal != 0 || left <= 0) {
            return;
        }
        if (left <= INT64_C(100000000)) {
            cf_sleep_until_ns(due_ns);
            return;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
        nanosleep(&ts, NULL);
    }
}

typedef struct gen_args {
    cf_gen_opts gen;
    bool days_given;
    cf_format fmt;
    const char *out;
    double rate;
    bool rate_given;
    const char *shape;
    double speedup;
    uint64_t count; /* 0: no limit */
    bool quiet;
    const char *nats;         /* --nats SUBJECT: publish each line as a JetStream message */
    const char *nats_servers; /* --nats-servers URLS */
    const char *nats_stream;  /* --nats-stream NAME */
    const char *nats_ca, *nats_user, *nats_password_file;
} gen_args;

#define STR_(x) #x
#define STR(x) STR_(x)

static const char gen_head[] =
    "usage: confide gen [options]\n\n"
    "Generates card transactions with the Fraud-Detection-Handbook simulator (Le Borgne\n"
    "et al. 2022, chapter 3.2): customers and terminals on a 100x100 grid, Poisson\n"
    "daily counts, normal amounts and times, and fraud scenarios 1 (amount > 220),\n"
    "2 (compromised terminals, 28 days) and 3 (compromised customers, 14 days, x5\n"
    "amounts), plus currency, country, channel and type. Ground truth is kept in the\n"
    "fraud and fraud_scenario fields. Events come out in event-time order.\n\n";
static const char gen_tail[] =
    "\nWithout --rate (and without a trace) lines are written as fast as possible.\n"
    "Examples:\n"
    "  confide gen --days 7 --out week.csv\n"
    "  confide gen --count 1000000 --rate 50000 --shape burst | consumer\n"
    "  confide gen --count 5000000 --shape trace:hourly.csv --speedup 3600 | consumer\n\n"
    "Exit codes: 0 ok, 2 usage error, 3 runtime error (I/O, memory).\n";

static int bad_value(const char *opt, const char *v, const char *want, char *err, size_t size)
{
    snprintf(err, size, "bad value '%s' for %s (expected %s)", v, opt, want);
    return -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* --start DATE */
static int parse_date(void *opaque, const char *v, char *err, size_t size)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    gen_args *a = opaque;
    unsigned y, m, d;
    char tail;
    if (strlen(v) != 10 || v[4] != '-' || v[7] != '-' ||
        sscanf(v, "%4u-%2u-%2u%c", &y, &m, &d, &tail) != 3 || y < 1970 || y > 9999 || m < 1 ||
        m > 12 || d < 1) {
        return bad_value("--start", v, "a date YYYY-MM-DD from 1970", err, size);
    }
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap)) {
        return bad_value("--start", v, "a valid calendar date", err, size);
    }
    a->gen.start_us = days_from_civil(y, m, d) * DAY_US;
    return 0;
}

/* --format csv|ndjson */
static int parse_format(void *opaque, const char *v, char *err, size_t size)
{
    gen_args *a = opaque;
    if (strcmp(v, "csv") == 0) {
        a->fmt = CF_FMT_CSV;
    } else if (strcmp(v, "ndjson") == 0) {
        a->fmt = CF_FMT_NDJSON;
    } else {
        return bad_value("--format", v, "csv or ndjson", err, size);
    }
    return 0;
}

static int parse_args(int argc, char **argv, gen_args *a)
{
    cf_gen_opts_default(&a->gen);
    a->fmt = CF_FMT_CSV;
    a->speedup = 1.0;
    const cli_opt opts[] = {
        {.name = "seed",
         .type = CLI_U64,
         .u64 = &a->gen.seed,
         .arg = "N",
         .help = "PRNG seed (default 1); same seed, same stream"},
        {.name = "customers",
         .type = CLI_U32,
         .u32 = &a->gen.customers,
         .arg = "N",
         .min = 1,
         .max = 10000000,
         .help = "customers (default 5000)"},
        {.name = "terminals",
         .type = CLI_U32,
         .u32 = &a->gen.terminals,
         .arg = "N",
         .min = 1,
         .max = 10000000,
         .help = "terminals (default 10000)"},
        {.name = "days",
         .type = CLI_U32,
         .u32 = &a->gen.days,
         .arg = "N",
         .min = 1,
         .max = GEN_DAYS_MAX,
         .given = &a->days_given,
         .help = "days to simulate (default 1; " STR(GEN_DAYS_MAX_N) " with --count)"},
        {.name = "start",
         .type = CLI_FN,
         .fn = parse_date,
         .arg = "DATE",
         .help = "first day, YYYY-MM-DD, UTC (default 2018-04-01)"},
        {.name = "format",
         .type = CLI_FN,
         .fn = parse_format,
         .arg = "F",
         .help = "csv | ndjson (default csv)"},
        {.name = "nats",
         .type = CLI_STR,
         .str = &a->nats,
         .arg = "SUBJECT",
         .help = "publish each line as one JetStream message on SUBJECT (the\n"
                 "CSV header first) instead of writing it; with\n"
                 "--nats-servers URLS (default nats://127.0.0.1:4222),\n"
                 "--nats-stream NAME (default CONFIDE_IN, created if missing),\n"
                 "--nats-ca FILE, --nats-user U, --nats-password-file F\n"
                 "(confide gateway --set input.nats_subject=SUBJECT reads it)"},
        {.name = "nats-servers",
         .type = CLI_STR,
         .str = &a->nats_servers,
         .arg = "URLS",
         .help = "NATS servers for --nats"},
        {.name = "nats-stream",
         .type = CLI_STR,
         .str = &a->nats_stream,
         .arg = "NAME",
         .help = "JetStream stream for --nats"},
        {.name = "nats-ca",
         .type = CLI_STR,
         .str = &a->nats_ca,
         .arg = "FILE",
         .help = "CA certificate for --nats over TLS"},
        {.name = "nats-user",
         .type = CLI_STR,
         .str = &a->nats_user,
         .arg = "U",
         .help = "NATS user for --nats"},
        {.name = "nats-password-file",
         .type = CLI_STR,
         .str = &a->nats_password_file,
         .arg = "F",
         .help = "its password, mode 0600"},
        {.name = "out",
         .type = CLI_STR,
         .str = &a->out,
         .arg = "FILE",
         .help = "write FILE (via FILE.tmp, renamed when complete);\ndefault stdout"},
        {.name = "count",
         .type = CLI_U64,
         .u64 = &a->count,
         .arg = "N",
         .min = 1,
         .max = 18446744073709551615.0,
         .help = "stop after N events"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &a->rate,
         .arg = "N",
         .min = 1e-9,
         .max = 1e9,
         .given = &a->rate_given,
         .help = "write at N events/s on average, open loop (load tests)"},
        {.name = "shape",
         .type = CLI_STR,
         .str = &a->shape,
         .arg = "S",
         .help = "steady | diurnal | burst | trace:FILE (default steady)\n"
                 "  diurnal: rate*(1 + 0.8 sin(2 pi t/P)), P = 86400/speedup s\n"
                 "  burst:   10x bursts of 1 s every 10 s, mean kept at rate\n"
                 "  trace:   CSV \"step,count\", one hour per row compressed by\n"
                 "           speedup; counts as given, or scaled to --rate"},
        {.name = "speedup",
         .type = CLI_DBL,
         .dbl = &a->speedup,
         .arg = "X",
         .min = 1e-9,
         .max = 1e9,
         .help = "time compression for diurnal and trace (default 1)"},
        {.name = "quiet",
         .short_name = 'q',
         .type = CLI_FLAG,
         .flag = &a->quiet,
         .help = "no summary line on stderr"},
    };
    static const cli_conflict conflicts[] = {{"nats", "out"}};
    cli_spec spec = {.prog = "confide gen",
                     .head = gen_head,
                     .tail = gen_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .conflicts = conflicts,
                     .n_conflicts = CLI_N(conflicts),
                     .ctx = a};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    if (a->shape != NULL && !a->rate_given && strncmp(a->shape, "trace:", 6) != 0) {
        fprintf(stderr, "confide gen: --shape %s needs --rate (only a trace has its own rate)\n",
                a->shape);
        return CF_EXIT_USAGE;
    }
    if (a->count > 0 && !a->days_given) {
        a->gen.days = GEN_DAYS_MAX; /* --count decides when to stop */
    }
    return CLI_CONTINUE;
}

/* Writes everything or fails; errors are reported here, once. */
static int write_all(int fd, const char *what, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "confide gen: cannot write %s: %s\n", what, strerror(errno));
            return CF_EXIT_RUNTIME;
        }
        buf += n;
        len -= (size_t)n;
    }
    return CF_EXIT_OK;
}

/* The output buffer and what it holds: events count as written only once flushed, so the
 * summary never claims lines an interrupt kept from being released. */
typedef struct out_buf {
    cf_js *js;           /* --nats: one message per line instead of writes */
    const char *subject; /* its subject */
    uint64_t msg_no;     /* lines published, for their message ids */
    uint64_t seed;
    int fd;
    const char *what;
    char *buf;
    size_t used;
    uint64_t pend, pend_scen[4]; /* events in buf */
    uint64_t events, scen[4];    /* events written */
} out_buf;

/* --nats: every line of the buffer as one message, published without waiting for each ack
 * (checked by cf_js_flush); the ids (seed and line number) make a rerun add nothing. */
static int publish_lines(out_buf *o)
{
    const char *p = o->buf, *end = o->buf + o->used;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        char id[64];
        snprintf(id, sizeof(id), "gen.%llu.%llu", (unsigned long long)o->seed,
                 (unsigned long long)o->msg_no++);
        if (cf_js_publish_async(o->js, o->subject, p, len, id) != CF_OK) {
            fprintf(stderr, "confide gen: cannot publish to %s\n", o->subject);
            return CF_EXIT_RUNTIME;
        }
        p += len + (nl != NULL);
    }
    return CF_EXIT_OK;
}

static int out_flush(out_buf *o)
{
    if (o->used > 0) {
        int rc = o->js != NULL ? publish_lines(o) : write_all(o->fd, o->what, o->buf, o->used);
        if (rc != CF_EXIT_OK) {
            return rc;
        }
        o->used = 0;
    }
    o->events += o->pend;
    for (int k = 0; k < 4; k++) {
        o->scen[k] += o->pend_scen[k];
        o->pend_scen[k] = 0;
    }
    o->pend = 0;
    return CF_EXIT_OK;
}

static void out_drop(out_buf *o)
{
    o->used = 0;
    o->pend = 0;
    memset(o->pend_scen, 0, sizeof(o->pend_scen));
}

/* fsync of the directory holding @p path, so the rename itself is durable. */
static void sync_parent(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* --nats: the connection and the stream (created if missing) the lines go to. */
static int nats_open(const gen_args *a, cf_js **js)
{
    char password[256] = "", err[512];
    if (a->nats_password_file != NULL) {
        struct stat st;
        FILE *f = fopen(a->nats_password_file, "r");
        if (f == NULL || fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0) {
            fprintf(stderr, "confide gen: --nats-password-file %s: %s\n", a->nats_password_file,
                    f == NULL ? strerror(errno) : "readable by others: chmod 600 it");
            if (f != NULL) {
                fclose(f);
            }
            return CF_EXIT_USAGE;
        }
        if (fgets(password, sizeof(password), f) == NULL) {
            password[0] = '\0';
        }
        fclose(f);
        password[strcspn(password, "\r\n")] = '\0';
    }
    cf_js_opts o = {.servers = a->nats_servers != NULL ? a->nats_servers : "nats://127.0.0.1:4222",
                    .user = a->nats_user,
                    .password = password,
                    .ca_file = a->nats_ca,
                    .name = "confide-gen",
                    .inbox_prefix = "_INBOX.confide-gen",
                    .timeout_ms = 5000};
    cf_err e = cf_js_connect(js, &o, err, sizeof(err));
    memset(password, 0, sizeof(password));
    if (e == CF_OK) {
        e = cf_js_ensure_stream(*js, a->nats_stream != NULL ? a->nats_stream : "CONFIDE_IN",
                                a->nats, 1, 3600, err, sizeof(err));
    }
    if (e != CF_OK) {
        fprintf(stderr, "confide gen: --nats %s: %s\n", a->nats, err);
        return CF_EXIT_RUNTIME;
    }
    return CF_EXIT_OK;
}

static int gen_main(int argc, char **argv)
{
    gen_args a;
    memset(&a, 0, sizeof(a));
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    char errstr[512];
    cf_gen *g = NULL;
    cf_pacer *pacer = NULL;
    char *buf = NULL;
    char tmp_path[PATH_MAX];
    int fd = -1;
    bool tmp_created = false;
    cf_js *js = NULL;
    const char *what = a.out != NULL ? a.out : "stdout";

    cf_err err = cf_gen_create(&g, &a.gen, errstr, sizeof(errstr));
    if (err != CF_OK) {
        fprintf(stderr, "confide %s\n", errstr);
        rc = err == CF_E_INVAL || err == CF_E_LIMIT ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
        goto done;
    }
    bool paced = a.rate_given || (a.shape != NULL && strncmp(a.shape, "trace:", 6) == 0);
    if (paced) {
        err = cf_pacer_create(&pacer, a.shape != NULL ? a.shape : "steady",
                              a.rate_given ? a.rate : 0.0, a.speedup, errstr, sizeof(errstr));
        if (err != CF_OK) {
            fprintf(stderr, "confide gen: --shape: %s\n", errstr);
            rc = err == CF_E_NOMEM ? CF_EXIT_RUNTIME : CF_EXIT_USAGE;
            goto done;
        }
    }
    buf = cf_malloc(OUT_BUF_SIZE);
    if (buf == NULL) {
        fprintf(stderr, "confide gen: out of memory\n");
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    if (a.out != NULL) {
        int n = snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", a.out);
        if (n < 0 || (size_t)n >= sizeof(tmp_path)) {
            fprintf(stderr, "confide gen: --out path too long\n");
            rc = CF_EXIT_USAGE;
            goto done;
        }
        fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "confide gen: cannot create %s: %s\n", tmp_path, strerror(errno));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        tmp_created = true;
    } else {
        fd = STDOUT_FILENO;
    }

    out_buf o = {.fd = fd, .what = what, .buf = buf, .subject = a.nats, .seed = a.gen.seed};
    if (a.nats != NULL && (rc = nats_open(&a, &js)) != CF_EXIT_OK) {
        goto done;
    }
    o.js = js;
    cf_js_stream_st st = {0};
    char serr[256];
    if (js != NULL && a.fmt == CF_FMT_CSV &&
        cf_js_stream_state(js, a.nats_stream != NULL ? a.nats_stream : "CONFIDE_IN", &st, serr,
                           sizeof(serr)) != CF_OK) {
        st.msgs = 0;
    }
    uint64_t held = st.msgs;
    if (a.fmt == CF_FMT_CSV && held == 0) { /* a stream with messages has its header */
        const char *h = cf_csv_header();
        o.used = strlen(h);
        memcpy(buf, h, o.used);
    }
    bool progress = !a.quiet && isatty(STDERR_FILENO);
    int64_t t0 = cf_now_ns();
    int64_t oldest_due = t0, last_due = t0, last_progress = t0;
    cf_event ev;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while ((a.count == 0 || o.events + o.pend < a.count) && stop_signal == 0) {
        err = cf_gen_next(g, &ev);
        if (err == CF_E_EOF) {
            break;
        }
        if (err != CF_OK) {
            fprintf(stderr, "confide gen: generator: %s\n", cf_strerror(err));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        if (paced) {
            /* Lines due within one millisecond form a batch. A batch is written once its last
             * line is due (never early), so a line is at most FLUSH_EVERY_NS late and the
             * process sleeps at most once a millisecond instead of once an event. */
            int64_t due = t0 + cf_pacer_next_ns(pacer);
            if (o.used > 0 &&
                (due - oldest_due >= FLUSH_EVERY_NS || OUT_BUF_SIZE - o.used < LINE_RESERVE)) {
                sleep_until(last_due);
                if (stop_signal != 0) {
                    break;
                }
                rc = out_flush(&o);
                if (rc != CF_EXIT_OK) {
                    goto done;
                }
            }
            if (o.used == 0) {
                oldest_due = due;
            }
            last_due = due;
            ev.ingest_ns = due;
        } else if (OUT_BUF_SIZE - o.used < LINE_RESERVE) {
            rc = out_flush(&o);
            if (rc != CF_EXIT_OK) {
                goto done;
            }
        }
        size_t n = a.fmt == CF_FMT_CSV
                       ? cf_event_to_csv(&ev, buf + o.used, OUT_BUF_SIZE - o.used)
                       : cf_event_to_ndjson(&ev, buf + o.used, OUT_BUF_SIZE - o.used);
        if (n == 0) {
            fprintf(stderr, "confide gen: event %llu does not encode\n",
                    (unsigned long long)ev.event_id);
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        o.used += n;
        o.pend++;
        if (ev.fraud_scenario >= 0 && ev.fraud_scenario <= 3) {
            o.pend_scen[ev.fraud_scenario]++;
        }
        if (progress && ((o.events + o.pend) & 0xffff) == 0) {
            int64_t now = cf_now_ns();
            if (now - last_progress >= INT64_C(1000000000)) {
                last_progress = now;
                fprintf(stderr, "\rconfide gen: %llu events, day %lld of %u ",
                        (unsigned long long)(o.events + o.pend),
                        (long long)((ev.ts_us - a.gen.start_us) / DAY_US + 1), a.gen.days);
            }
        }
    }
    if (stop_signal != 0 && a.out != NULL) {
        fprintf(stderr, "confide gen: interrupted after %llu events; %s not written\n",
                (unsigned long long)(o.events + o.pend), a.out);
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    if (paced) {
        if (stop_signal == 0) {
            sleep_until(last_due);
        }
        if (cf_now_ns() < last_due) {
            out_drop(&o); /* interrupted: lines not yet due are never released */
        }
    }
    rc = out_flush(&o);
    if (rc != CF_EXIT_OK) {
        goto done;
    }
    uint64_t refused = 0;
    if (js != NULL && cf_js_flush(js, &refused) != CF_OK) {
        fprintf(stderr, "confide gen: JetStream did not acknowledge %llu of the messages\n",
                (unsigned long long)refused);
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    if (a.out != NULL) {
        if (fsync(fd) != 0) {
            fprintf(stderr, "confide gen: cannot sync %s: %s\n", tmp_path, strerror(errno));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        int cfd = fd;
        fd = -1;
        if (close(cfd) != 0) {
            fprintf(stderr, "confide gen: cannot close %s: %s\n", tmp_path, strerror(errno));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        if (rename(tmp_path, a.out) != 0) {
            fprintf(stderr, "confide gen: cannot rename %s to %s: %s\n", tmp_path, a.out,
                    strerror(errno));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        tmp_created = false;
        sync_parent(a.out);
    }
    double secs = (double)(cf_now_ns() - t0) / 1e9;
    if (progress) {
        fprintf(stderr, "\r%60s\r", "");
    }
    if (!a.quiet) {
        fprintf(stderr,
                "confide gen: %llu events, fraud %llu (scenario 1: %llu, 2: %llu, 3: %llu), "
                "%.3f s, %.0f events/s%s\n",
                (unsigned long long)o.events,
                (unsigned long long)(o.scen[1] + o.scen[2] + o.scen[3]),
                (unsigned long long)o.scen[1], (unsigned long long)o.scen[2],
                (unsigned long long)o.scen[3], secs, secs > 0 ? (double)o.events / secs : 0.0,
                stop_signal != 0 ? " (interrupted)" : "");
    }
    rc = CF_EXIT_OK;
done:
    cf_js_close(js);
    if (fd >= 0 && fd != STDOUT_FILENO) {
        close(fd);
    }
    if (tmp_created) {
        unlink(tmp_path);
    }
    cf_free(buf);
    cf_pacer_destroy(pacer);
    cf_gen_destroy(g);
    return rc;
}

const cf_command cf_cmd_gen = {"gen", "generate synthetic card transactions (FDH simulator)",
                               gen_main};
