/*
 * confide bench batching: adaptive vs fixed micro-batching under a step load.
 *
 * A generator thread paces events open-loop through a step of arrival rates (default
 * 50k -> 1M -> 100k events/s, 4 s each); every event carries its scheduled send time, so
 * latency counts from when it should have been sent and backpressure cannot hide queueing
 * (coordinated omission). One stage thread takes input batches from a bounded ring through
 * the batcher (src/batch) and does, per output batch, what the audit log does: a SHA-256
 * leaf hash per event, SHA-256 over the leaves, an Ed25519 signature of that digest
 * (libsodium), one pwrite of the records plus the signature and one fdatasync to a file in
 * --dir. Modes: fixed:1, fixed:4096 and adaptive (the controller), one run each.
 *
 * Honesty rules: events the generator could not even emit before its phase ended (the ring
 * stayed full) are "shed" and enter that phase's latency histogram with their lower-bound
 * latency (phase end - scheduled time); events still queued 1 s after the last phase are
 * "unfinished" and enter with (discard time - scheduled time). p99 is therefore never
 * flattered by dropping the slow events.
 *
 * Output: one JSON object {"runs":[{"mode","phase","events_per_s","p99_ms",
 * "slo_violation_s","cpu_s",...}],...} with --json, a table otherwise; and a PNG plot of
 * rate, batch size and p99 over time (gnuplot, when installed). events_per_s counts events
 * completed within the phase's wall interval; slo_violation_s counts 100 ms slices whose
 * p99 (by completion time) broke the SLO; cpu_s is the stage thread's CPU time in the
 * phase (what the batching mode costs), process_cpu_s adds the generator.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/batch.h"
#include "confide/core.h"

#define MAX_PHASES 8
#define MAX_MODES 6
#define SLICE_NS INT64_C(100000000)
#define MAX_SLICES 2048
#define IN_BATCH 64  /* events per generator batch */
#define IN_RING 1024 /* generator batches in flight (64k events) */
#define RECORD 64    /* bytes written per event */
#define FILE_WRAP (64u << 20)
#define DRAIN_NS INT64_C(1000000000)
#define TICK_NS INT64_C(1000000)

typedef struct {
    double rate;
    char name[16];
} phase_def;

typedef struct {
    uint64_t events;
    uint64_t batches;
    uint32_t target;
    int64_t p99_us; /* -1: no completion in this slice */
} slice;

typedef struct {
    /* configuration */
    const char *mode;
    int nph;
    const phase_def *ph;
    int64_t phase_ns;
    uint32_t slo_ms;
    uint32_t count_max;
    uint32_t linger_ms;
    const char *dir;

    /* shared */
    cf_ring *in;
    cf_ring *freelist;
    cf_batch *pool[IN_RING + 8];
    int64_t t0;
    atomic_int_fast64_t abort_at;

    /* generator side */
    uint64_t generated[MAX_PHASES];
    uint64_t shed[MAX_PHASES];
    double cpu_at[MAX_PHASES + 1];       /* process CPU at phase boundaries */
    double stage_cpu_at[MAX_PHASES + 1]; /* the stage thread's CPU at phase boundaries */
    int next_mark;
    cf_hist *shed_hist[MAX_PHASES];

    /* stage side */
    cf_hist *lat[MAX_PHASES];
    uint64_t completed_in[MAX_PHASES];
    uint64_t batches_in[MAX_PHASES];
    uint64_t unfinished;
    slice sl[MAX_SLICES];
    int nslices;
    cf_hist *slice_hist;
    int cur_slice;
    int fd;
    off_t off;
    unsigned char *wbuf;
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char *sk;
    cf_batch_ctl *ctl;
    cf_batcher *bt;
    int stage_error;
} run_state;

typedef struct {
    char mode[32];
    char phase[16];
    double offered;
    double events_per_s;
    double p99_ms;
    double slo_violation_s;
    double cpu_s;
    double process_cpu_s;
    uint64_t shed;
    uint64_t unfinished;
    double mean_batch;
} result;

static const char bench_batching_head[] =
    "usage: confide bench batching [--json] [--plot FILE] [--phase-s S] [--rates R,R,..]\n"
    "                              [--modes M,M,..] [--slo-ms MS] [--count-max N]\n"
    "                              [--linger-ms MS] [--dir DIR]\n\n"
    "Paces a step load through one real stage (per batch: SHA-256 per event and over the\n"
    "batch, Ed25519 signature, write + fdatasync) under each batching mode and reports,\n"
    "per mode and phase, throughput, p99 latency, seconds in SLO violation and CPU.\n\n";

static void phase_name(double rate, char *out, size_t n)
{
    if (rate >= 1e6 && fmod(rate, 1e6) == 0) {
        snprintf(out, n, "%.0fM", rate / 1e6);
    } else if (rate >= 1e3 && fmod(rate, 1e3) == 0) {
        snprintf(out, n, "%.0fk", rate / 1e3);
    } else {
        snprintf(out, n, "%.0f", rate);
    }
}

static int phase_of(const run_state *rs, int64_t t_ns)
{
    if (t_ns < rs->t0) {
        return 0;
    }
    int64_t p = (t_ns - rs->t0) / rs->phase_ns;
    return p >= rs->nph ? rs->nph - 1 : (int)p;
}

/* ---- generator ------------------------------------------------------------------------------ */

static cf_batch *get_free(run_state *rs)
{
    void *p = NULL;
    unsigned spins = 0;
    while (cf_ring_pop(rs->freelist, &p) != CF_OK) {
        if (++spins > 64) {
            cf_sleep_until_ns(cf_now_ns() + 20000);
        }
    }
    return p;
}

/* Records the events of [sched, end) at @p interval that were never emitted, with their
 * lower-bound latency end - scheduled, in 1 ms chunks. */
static uint64_t shed_rest(run_state *rs, int p, int64_t ps, uint64_t k, double interval, int64_t pe)
{
    uint64_t total = 0;
    for (;;) {
        int64_t sched = ps + (int64_t)((double)k * interval);
        if (sched >= pe) {
            break;
        }
        uint64_t kend = k + (uint64_t)(1e6 / interval) + 1;
        int64_t send = ps + (int64_t)((double)kend * interval);
        if (send > pe) {
            kend = (uint64_t)ceil((double)(pe - ps) / interval);
            send = pe;
        }
        if (kend <= k) {
            break;
        }
        cf_hist_record_n(rs->shed_hist[p], (pe - sched) / 1000, kend - k);
        total += kend - k;
        k = kend;
    }
    return total;
}

static void *generator(void *arg)
{
    run_state *rs = arg;
    uint64_t id = 1;
    for (int p = 0; p < rs->nph; p++) {
        int64_t ps = rs->t0 + (int64_t)p * rs->phase_ns;
        int64_t pe = ps + rs->phase_ns;
        double interval = 1e9 / rs->ph[p].rate;
        cf_sleep_until_ns(ps);
        rs->cpu_at[p] = cf_cpu_s();
        uint64_t k = 0;
        for (;;) {
            int64_t sched = ps + (int64_t)((double)k * interval);
            if (sched >= pe) {
                break;
            }
            int64_t now = cf_now_ns();
            if (now >= pe) {
                rs->shed[p] += shed_rest(rs, p, ps, k, interval, pe);
                break;
            }
            if (sched > now) {
                /* Tick at 1 ms: everything due is emitted at once, stamped with its own
                 * scheduled time, so the tick adds at most 1 ms to every mode's latency and
                 * the generator does not burn a core spinning between events. */
                int64_t wake = sched > now + TICK_NS ? sched : now + TICK_NS;
                cf_sleep_until_ns(wake < pe ? wake : pe);
                continue;
            }
            cf_batch *b = get_free(rs);
            b->n = 0;
            while (b->n < IN_BATCH) {
                sched = ps + (int64_t)((double)k * interval);
                if (sched > now || sched >= pe) {
                    break;
                }
                cf_event *ev = &b->ev[b->n++];
                ev->event_id = id;
                ev->seq = id;
                ev->ts_us = sched / 1000;
                ev->amount_minor = (int64_t)(id * 7919 % 100000);
                ev->ingest_ns = sched;
                id++;
                k++;
            }
            rs->generated[p] += b->n;
            cf_ring_push_wait(rs->in, b);
        }
    }
    cf_sleep_until_ns(rs->t0 + (int64_t)rs->nph * rs->phase_ns);
    rs->cpu_at[rs->nph] = cf_cpu_s();
    atomic_store(&rs->abort_at, cf_now_ns() + DRAIN_NS);
    cf_ring_close(rs->in);
    return NULL;
}

/* ---- stage --------------------------------------------------------------------------------------
 */

static void release_input(void *opaque, cf_batch *b)
{
    run_state *rs = opaque;
    b->n = 0;
    /* The free list holds every batch, so it cannot be full. */
    cf_err e = cf_ring_push(rs->freelist, b);
    CF_ASSERT(e == CF_OK);
}

/* The audit log's per-batch work: leaf hashes, batch digest, signature, write, fdatasync. */
static int process(run_state *rs, const cf_batch *b)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    unsigned char *w = rs->wbuf;
    for (uint32_t i = 0; i < b->n; i++) {
        const cf_event *ev = &b->ev[i];
        unsigned char leaf_in[33];
        leaf_in[0] = 0x00; /* RFC 9162 leaf prefix */
        memcpy(leaf_in + 1, &ev->event_id, 8);
        memcpy(leaf_in + 9, &ev->ts_us, 8);
        memcpy(leaf_in + 17, &ev->amount_minor, 8);
        memcpy(leaf_in + 25, &ev->seq, 8);
        memcpy(w, leaf_in + 1, 32);
        crypto_hash_sha256(w + 32, leaf_in, sizeof(leaf_in));
        crypto_hash_sha256_update(&st, w + 32, 32);
        w += RECORD;
    }
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    crypto_sign_detached(w, NULL, digest, sizeof(digest), rs->sk);
    w += crypto_sign_BYTES;
    size_t len = (size_t)(w - rs->wbuf);
    if ((uint64_t)rs->off + len > FILE_WRAP) {
        rs->off = 0;
    }
    if (pwrite(rs->fd, rs->wbuf, len, rs->off) != (ssize_t)len || fdatasync(rs->fd) != 0) {
        return -1;
    }
    rs->off += (off_t)len;
    return 0;
}

static void close_slice(run_state *rs)
{
    if (rs->cur_slice >= 0 && rs->cur_slice < MAX_SLICES) {
        rs->sl[rs->cur_slice].p99_us =
            cf_hist_count(rs->slice_hist) > 0 ? cf_hist_percentile(rs->slice_hist, 99, 1) : -1;
    }
    cf_hist_reset(rs->slice_hist);
}

static void account(run_state *rs, const cf_batch *b, int64_t end)
{
    int s = (int)((end - rs->t0) / SLICE_NS);
    if (end < rs->t0) {
        s = 0;
    }
    if (s != rs->cur_slice) {
        close_slice(rs);
        rs->cur_slice = s;
    }
    int64_t oldest = 0;
    int64_t sum = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        int64_t lat = (end - b->ev[i].ingest_ns) / 1000;
        cf_hist_record(rs->lat[phase_of(rs, b->ev[i].ingest_ns)], lat);
        cf_hist_record(rs->slice_hist, lat);
        sum += lat;
        if (lat > oldest) {
            oldest = lat;
        }
    }
    /* The controller's window: the oldest event exactly, the rest at their mean. */
    cf_batch_ctl_record_latency(rs->ctl, end, oldest, 1);
    if (b->n > 1) {
        cf_batch_ctl_record_latency(rs->ctl, end, (sum - oldest) / (b->n - 1), b->n - 1);
    }
    if (s >= 0 && s < MAX_SLICES) {
        rs->sl[s].events += b->n;
        rs->sl[s].batches++;
        rs->sl[s].target = cf_batch_ctl_target(rs->ctl);
        if (s + 1 > rs->nslices) {
            rs->nslices = s + 1;
        }
    }
    int64_t phase_end = rs->t0 + (int64_t)rs->nph * rs->phase_ns;
    if (end >= rs->t0 && end < phase_end) {
        int p = phase_of(rs, end);
        rs->completed_in[p] += b->n;
        rs->batches_in[p]++;
    }
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Samples the stage thread's CPU time at each phase boundary it has passed. */
static void mark_phases(run_state *rs, bool all)
{
    int64_t now = cf_now_ns();
    while (rs->next_mark <= rs->nph &&
           (all || now >= rs->t0 + (int64_t)rs->next_mark * rs->phase_ns)) {
        rs->stage_cpu_at[rs->next_mark++] = thread_cpu_s();
    }
}

static void *stage(void *arg)
{
    run_state *rs = arg;
    cf_batch *out = NULL;
    mark_phases(rs, false);
    while (cf_batcher_next(rs->bt, rs->in, &out, release_input, rs) == CF_OK) {
        mark_phases(rs, false);
        int64_t start = cf_now_ns();
        int64_t abort_at = atomic_load(&rs->abort_at);
        if (abort_at != 0 && start > abort_at) {
            for (uint32_t i = 0; i < out->n; i++) {
                cf_hist_record(rs->lat[phase_of(rs, out->ev[i].ingest_ns)],
                               (start - out->ev[i].ingest_ns) / 1000);
            }
            rs->unfinished += out->n;
            out->n = 0;
            cf_batcher_done(rs->bt, out, start, start);
            continue;
        }
        if (process(rs, out) != 0) {
            rs->stage_error = 1;
        }
        int64_t end = cf_now_ns();
        account(rs, out, end);
        cf_batcher_done(rs->bt, out, start, end);
    }
    mark_phases(rs, true);
    close_slice(rs);
    return NULL;
}

/* ---- one run
 * -------------------------------------------------------------------------------------- */

static void free_run(run_state *rs)
{
    for (int p = 0; p < MAX_PHASES; p++) {
        cf_hist_destroy(rs->lat[p]);
        cf_hist_destroy(rs->shed_hist[p]);
    }
    cf_hist_destroy(rs->slice_hist);
    for (size_t i = 0; i < sizeof(rs->pool) / sizeof(rs->pool[0]); i++) {
        cf_batch_destroy(rs->pool[i]);
    }
    cf_ring_destroy(rs->in);
    cf_ring_destroy(rs->freelist);
    cf_batcher_destroy(rs->bt);
    cf_batch_ctl_destroy(rs->ctl);
    if (rs->sk != NULL) {
        sodium_free(rs->sk);
    }
    free(rs->wbuf);
    if (rs->fd >= 0) {
        close(rs->fd);
    }
}

static int run_mode(run_state *rs, result *res, char *err, size_t errn)
{
    int rc = -1;
    char path[4096];
    snprintf(path, sizeof(path), "%s/confide-bench-batching-XXXXXX", rs->dir);
    rs->fd = mkstemp(path);
    if (rs->fd < 0) {
        snprintf(err, errn, "cannot create a file in --dir %s", rs->dir);
        return -1;
    }
    unlink(path);
    rs->cur_slice = -1;
    rs->wbuf = malloc((size_t)rs->count_max * RECORD + crypto_sign_BYTES);
    rs->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (rs->wbuf == NULL || rs->sk == NULL) {
        snprintf(err, errn, "out of memory");
        goto done;
    }
    crypto_sign_keypair(rs->pk, rs->sk);
    if (cf_batch_ctl_create(&rs->ctl, rs->mode, rs->slo_ms, rs->count_max, UINT64_MAX,
                            rs->linger_ms, err, errn) != CF_OK ||
        cf_batcher_create(&rs->bt, rs->ctl, rs->count_max, UINT64_MAX, rs->linger_ms) != CF_OK) {
        goto done;
    }
    if (cf_ring_create(&rs->in, IN_RING) != CF_OK ||
        cf_ring_create(&rs->freelist, IN_RING * 2) != CF_OK ||
        cf_hist_create(&rs->slice_hist) != CF_OK) {
        snprintf(err, errn, "out of memory");
        goto done;
    }
    for (int p = 0; p < rs->nph; p++) {
        if (cf_hist_create(&rs->lat[p]) != CF_OK || cf_hist_create(&rs->shed_hist[p]) != CF_OK) {
            snprintf(err, errn, "out of memory");
            goto done;
        }
    }
    for (int i = 0; i < IN_RING; i++) {
        if (cf_batch_create(&rs->pool[i], IN_BATCH) != CF_OK) {
            snprintf(err, errn, "out of memory");
            goto done;
        }
        memset(rs->pool[i]->ev, 0, sizeof(cf_event) * IN_BATCH);
        cf_ring_push(rs->freelist, rs->pool[i]);
    }
    rs->t0 = cf_now_ns() + 20000000;
    pthread_t tg;
    pthread_t ts;
    pthread_create(&ts, NULL, stage, rs);
    pthread_create(&tg, NULL, generator, rs);
    pthread_join(tg, NULL);
    pthread_join(ts, NULL);
    if (rs->stage_error) {
        snprintf(err, errn, "write or fdatasync failed in --dir %s", rs->dir);
        goto done;
    }
    double phase_s = (double)rs->phase_ns / 1e9;
    int64_t slo_us = (int64_t)rs->slo_ms * 1000;
    for (int p = 0; p < rs->nph; p++) {
        result *r = &res[p];
        snprintf(r->mode, sizeof(r->mode), "%s", rs->mode);
        snprintf(r->phase, sizeof(r->phase), "%s", rs->ph[p].name);
        r->offered = rs->ph[p].rate;
        r->events_per_s = (double)rs->completed_in[p] / phase_s;
        cf_hist_merge(rs->lat[p], rs->shed_hist[p]);
        r->p99_ms = (double)cf_hist_percentile(rs->lat[p], 99, 1) / 1e3;
        r->cpu_s = rs->stage_cpu_at[p + 1] - rs->stage_cpu_at[p];
        r->process_cpu_s = rs->cpu_at[p + 1] - rs->cpu_at[p];
        r->shed = rs->shed[p];
        r->mean_batch =
            rs->batches_in[p] > 0 ? (double)rs->completed_in[p] / (double)rs->batches_in[p] : 0;
        /* 100 ms slices of this phase whose p99 broke the SLO; a slice without completions
         * keeps the state of the one before (a stall continues a violation). */
        int s0 = (int)((int64_t)p * rs->phase_ns / SLICE_NS);
        int s1 = (int)((int64_t)(p + 1) * rs->phase_ns / SLICE_NS);
        bool viol = false;
        int nviol = 0;
        for (int s = s0; s < s1 && s < MAX_SLICES; s++) {
            if (rs->sl[s].batches > 0) {
                viol = rs->sl[s].p99_us > slo_us;
            }
            nviol += viol ? 1 : 0;
        }
        r->slo_violation_s = nviol * (double)SLICE_NS / 1e9;
    }
    rc = 0;
done:
    return rc;
}

/* ---- plot
 * ------------------------------------------------------------------------------------------- */

static void write_block(FILE *g, int m, const char *mode, const run_state *rs)
{
    fprintf(g, "$m%d << EOD\n", m);
    for (int s = 0; s < rs->nslices && s < MAX_SLICES; s++) {
        const slice *x = &rs->sl[s];
        double t = (double)s * (double)SLICE_NS / 1e9;
        int p = (int)((int64_t)s * SLICE_NS / rs->phase_ns);
        double offered = p < rs->nph ? rs->ph[p].rate : 0;
        double mean = x->batches > 0 ? (double)x->events / (double)x->batches : NAN;
        fprintf(g, "%.2f %.0f %.0f %.2f %.3f\n", t, offered, (double)x->events * 10.0,
                x->batches > 0 ? mean : 0.0, x->p99_us >= 0 ? (double)x->p99_us / 1e3 : 0.0);
    }
    fprintf(g, "EOD\n# %s\n", mode);
}

static int plot(const char *file, run_state *runs, int nmodes, uint32_t slo_ms)
{
    if (access("/usr/bin/gnuplot", X_OK) != 0 && system("command -v gnuplot >/dev/null") != 0) {
        fprintf(stderr, "bench batching: gnuplot not installed, no plot\n");
        return 0;
    }
    FILE *g = popen("gnuplot", "w");
    if (g == NULL) {
        return -1;
    }
    for (int m = 0; m < nmodes; m++) {
        write_block(g, m, runs[m].mode, &runs[m]);
    }
    fprintf(g, "set terminal pngcairo size 1200,1000 font ',10'\nset output '%s'\n", file);
    fprintf(g, "set multiplot layout 3,1 title 'confide bench batching: step load, one stage "
               "(SHA-256 + Ed25519 + write + fdatasync per batch)'\n");
    fprintf(g, "set grid\nset key outside right\nset xlabel 'time (s)'\n");
    const char *const panels[3][3] = {
        {"completed events/s (dashed: offered)", "3", "set logscale y"},
        {"mean batch size (events)", "4", "set logscale y"},
        {"p99 latency per 100 ms (ms)", "5", "set logscale y"},
    };
    for (int pnl = 0; pnl < 3; pnl++) {
        fprintf(g, "%s\nset ylabel '%s'\n", panels[pnl][2], panels[pnl][0]);
        fprintf(g, "plot ");
        for (int m = 0; m < nmodes; m++) {
            fprintf(g, "%s$m%d using 1:($%s>0?$%s:1/0) with lines lw 2 title '%s'", m ? ", " : "",
                    m, panels[pnl][1], panels[pnl][1], runs[m].mode);
        }
        if (pnl == 0) {
            fprintf(g, ", $m0 using 1:2 with lines dt 2 lc rgb 'black' title 'offered'");
        }
        if (pnl == 2) {
            fprintf(g, ", %u with lines dt 2 lc rgb 'red' title 'SLO'", slo_ms);
        }
        fprintf(g, "\n");
    }
    fprintf(g, "unset multiplot\n");
    int rc = pclose(g);
    return rc == 0 ? 0 : -1;
}

/* ---- main
 * ------------------------------------------------------------------------------------------- */

static int parse_list(const char *s, char out[][32], int max)
{
    int n = 0;
    const char *p = s;
    while (*p != '\0' && n < max) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= 32) {
            return -1;
        }
        memcpy(out[n], p, len);
        out[n][len] = '\0';
        n++;
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return *p == '\0' ? n : -1;
}

int cf_bench_batching(int argc, char **argv)
{
    bool json = false;
    const char *plot_file = "bench/results/batching.png";
    double phase_s = 4;
    const char *rates_s = "50000,1000000,100000";
    const char *modes_s = "fixed:1,fixed:4096,adaptive";
    uint32_t slo_ms = 200;
    uint32_t count_max = 16384;
    uint32_t linger_ms = 50;
    const char *dir = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    const cli_opt opts[] = {
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "one JSON object on stdout: {\"runs\":[...],...}"},
        {.name = "plot",
         .type = CLI_STR,
         .str = &plot_file,
         .arg = "FILE",
         .help = "PNG of rate, batch size and p99 over time (default\n"
                 "bench/results/batching.png; needs gnuplot; 'none' to skip)"},
        {.name = "phase-s",
         .type = CLI_DBL,
         .dbl = &phase_s,
         .arg = "S",
         .min = 0.5,
         .max = 60,
         .help = "seconds per phase (default 4)"},
        {.name = "rates",
         .type = CLI_STR,
         .str = &rates_s,
         .arg = "LIST",
         .help = "events/s per phase (default 50000,1000000,100000)"},
        {.name = "modes",
         .type = CLI_STR,
         .str = &modes_s,
         .arg = "LIST",
         .help = "batching modes (default fixed:1,fixed:4096,adaptive)"},
        {.name = "slo-ms",
         .type = CLI_U32,
         .u32 = &slo_ms,
         .arg = "MS",
         .min = 1,
         .max = 3600000,
         .help = "p99 SLO (default 200)"},
        {.name = "count-max",
         .type = CLI_U32,
         .u32 = &count_max,
         .arg = "N",
         .min = 1,
         .max = 1u << 20,
         .help = "batch.count_max (default 16384)"},
        {.name = "linger-ms",
         .type = CLI_U32,
         .u32 = &linger_ms,
         .arg = "MS",
         .min = 0,
         .max = 60000,
         .help = "batch.linger_ms (default 50)"},
        {.name = "dir",
         .type = CLI_STR,
         .str = &dir,
         .arg = "DIR",
         .help = "where the fdatasync'd file goes (default $TMPDIR or /tmp)"},
    };
    cli_spec spec = {.prog = "confide bench batching",
                     .head = bench_batching_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char rate_items[MAX_PHASES][32];
    char mode_items[MAX_MODES][32];
    int nph = parse_list(rates_s, rate_items, MAX_PHASES);
    int nmodes = parse_list(modes_s, mode_items, MAX_MODES);
    if (nph <= 0) {
        fprintf(stderr, "confide bench batching: bad --rates '%s'\n", rates_s);
        return CF_EXIT_USAGE;
    }
    if (nmodes <= 0) {
        fprintf(stderr, "confide bench batching: bad --modes '%s'\n", modes_s);
        return CF_EXIT_USAGE;
    }
    phase_def ph[MAX_PHASES];
    for (int p = 0; p < nph; p++) {
        char *end = NULL;
        ph[p].rate = strtod(rate_items[p], &end);
        if (end == rate_items[p] || *end != '\0' || !(ph[p].rate >= 1 && ph[p].rate <= 1e8)) {
            fprintf(stderr, "confide bench batching: bad rate '%s' in --rates\n", rate_items[p]);
            return CF_EXIT_USAGE;
        }
        phase_name(ph[p].rate, ph[p].name, sizeof(ph[p].name));
    }
    if (cf_init() != CF_OK) {
        fprintf(stderr, "confide bench batching: cannot initialize libsodium\n");
        return CF_EXIT_RUNTIME;
    }
    run_state *runs = calloc((size_t)nmodes, sizeof(run_state));
    result *res = calloc((size_t)nmodes * (size_t)nph, sizeof(result));
    if (runs == NULL || res == NULL) {
        free(runs);
        free(res);
        fprintf(stderr, "confide bench batching: out of memory\n");
        return CF_EXIT_RUNTIME;
    }
    int rc = CF_EXIT_OK;
    for (int m = 0; m < nmodes; m++) {
        run_state *rs = &runs[m];
        rs->mode = mode_items[m];
        rs->nph = nph;
        rs->ph = ph;
        rs->phase_ns = (int64_t)(phase_s * 1e9);
        rs->slo_ms = slo_ms;
        rs->count_max = count_max;
        rs->linger_ms = linger_ms;
        rs->dir = dir;
        rs->fd = -1;
        char err[256] = "";
        if (!json) {
            fprintf(stderr, "bench batching: mode %s ...\n", rs->mode);
        }
        if (run_mode(rs, &res[(size_t)m * (size_t)nph], err, sizeof(err)) != 0) {
            fprintf(stderr, "confide bench batching: mode %s: %s\n", rs->mode, err);
            rc = strstr(err, "mode") != NULL || strstr(err, "batch.") != NULL ? CF_EXIT_USAGE
                                                                              : CF_EXIT_RUNTIME;
            nmodes = m;
            break;
        }
        res[(size_t)m * (size_t)nph + (size_t)nph - 1].unfinished = rs->unfinished;
    }
    if (rc == CF_EXIT_OK && plot_file != NULL && strcmp(plot_file, "none") != 0) {
        if (plot(plot_file, runs, nmodes, slo_ms) != 0) {
            fprintf(stderr, "bench batching: gnuplot failed to write %s\n", plot_file);
        }
    }
    if (rc == CF_EXIT_OK) {
        if (json) {
            printf("{\"bench\":\"batching\",\"slo_ms\":%u,\"phase_s\":%g,\"count_max\":%u,"
                   "\"linger_ms\":%u,\"runs\":[",
                   slo_ms, phase_s, count_max, linger_ms);
        } else {
            printf("%-12s %-6s %10s %12s %10s %8s %7s %10s %10s %9s\n", "mode", "phase",
                   "offered/s", "events/s", "p99_ms", "viol_s", "cpu_s", "shed", "unfinished",
                   "mean_bat");
        }
        for (int i = 0; i < nmodes * nph; i++) {
            const result *r = &res[i];
            if (json) {
                printf("%s{\"mode\":\"%s\",\"phase\":\"%s\",\"offered_per_s\":%.0f,"
                       "\"events_per_s\":%.0f,\"p99_ms\":%.3f,\"slo_violation_s\":%.1f,"
                       "\"cpu_s\":%.3f,\"process_cpu_s\":%.3f,\"shed\":%" PRIu64
                       ",\"unfinished\":%" PRIu64 ",\"mean_batch\":%.1f}",
                       i ? "," : "", r->mode, r->phase, r->offered, r->events_per_s, r->p99_ms,
                       r->slo_violation_s, r->cpu_s, r->process_cpu_s, r->shed, r->unfinished,
                       r->mean_batch);
            } else {
                printf("%-12s %-6s %10.0f %12.0f %10.3f %8.1f %7.3f %10" PRIu64 " %10" PRIu64
                       " %9.1f\n",
                       r->mode, r->phase, r->offered, r->events_per_s, r->p99_ms,
                       r->slo_violation_s, r->cpu_s, r->shed, r->unfinished, r->mean_batch);
            }
        }
        if (json) {
            printf("],\"plot\":");
            if (plot_file != NULL && strcmp(plot_file, "none") != 0 &&
                access(plot_file, R_OK) == 0) {
                printf("\"%s\"}\n", plot_file);
            } else {
                printf("null}\n");
            }
        }
    }
    for (int m = 0; m < nmodes + (rc == CF_EXIT_OK ? 0 : 1); m++) {
        free_run(&runs[m]);
    }
    free(runs);
    free(res);
    return rc;
}
