/*
 * confide bench autoscale: the scaling policies (src/scale/policy.c) replaying a rate trace
 * in the discrete-event cluster simulator (src/scale/sim.c), side by side.
 *
 * The trace is split: the forecaster of the predictive policy is fitted on the first
 * --train-points intervals (default half), and every policy replays the rest, so the
 * forecaster never sees the intervals it is judged on (it observes each one only after it
 * has happened, as a live system would). One decision per trace interval; an interval lasts
 * interval / --compress simulated seconds. Per-worker capacity is the simulator's ground
 * truth (--worker-rate); the policies only see busy time and completions.
 *
 * Output: a table, or with --json [{"policy","slo_violation_s","p99_ms","worker_s",
 * "rescales"}]; and per policy a PNG timeline (rate, forecast, workers, p99) drawn by
 * gnuplot into --plot-dir (default bench/results; 'none' to skip).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "confide/core.h"
#include "confide/runtime.h"
#include "confide/scale.h"
#include "opts.h"

#define PROG "confide bench autoscale"
#define MAX_POLICIES 8

static const char autoscale_head[] =
    "usage: confide bench autoscale --trace FILE [--json] [--policies LIST]\n"
    "         [--compress X] [--worker-rate N] [--startup-s S] [--slo-ms MS]\n"
    "         [--batch-max N] [--batch-cost-ms MS] [--max-workers N]\n"
    "         [--static-workers N] [--forecaster NAME] [--train-points N]\n"
    "         [--replay-points N] [--hysteresis X] [--target-util X]\n"
    "         [--horizon N] [--down-delay-s S] [--cooldown-s S] [--seed S]\n"
    "         [--step-s S] [--plot-dir DIR|none]\n"
    "       confide bench autoscale --live --trace FILE [--speedup X] [--json]\n"
    "         [--worker-delay-us US] [--peak-workers N] [--keep-dir DIR] [...]\n\n"
    "Replays a rate trace (the format of `confide forecast`) through a simulated pool of\n"
    "workers under each policy and reports seconds in SLO violation, p99 latency,\n"
    "worker-seconds and rescale actions. docs/autoscaling.md explains the model.\n"
    "With --live, each policy drives the real pipeline instead: confide run in process\n"
    "with autoscale.policy, its input paced along the compressed trace.\n\n";

typedef struct {
    cf_sim_tick *t;
    size_t n, cap;
} timeline;

static void on_tick(void *opaque, const cf_sim_tick *t)
{
    timeline *tl = opaque;
    if (tl->n == tl->cap) {
        size_t nc = tl->cap ? tl->cap * 2 : 256;
        cf_sim_tick *nt = realloc(tl->t, nc * sizeof(*nt));
        if (nt == NULL) {
            return; /* the plot loses points; the results do not */
        }
        tl->t = nt;
        tl->cap = nc;
    }
    tl->t[tl->n++] = *t;
}

static int plot(const char *file, const char *title, const timeline *tl, double slo_ms)
{
    FILE *g = popen("gnuplot", "w");
    if (g == NULL) {
        return -1;
    }
    fprintf(g, "$d << EOD\n");
    for (size_t i = 0; i < tl->n; i++) {
        const cf_sim_tick *t = &tl->t[i];
        fprintf(g, "%.3f %.3f %.3f %u %u %.3f\n", t->t_s, t->rate, t->forecast_rate, t->workers,
                t->target, t->p99_ms > 0 ? t->p99_ms : 0.001);
    }
    fprintf(g, "EOD\n");
    fprintf(g, "set terminal pngcairo noenhanced size 1200,900 font ',10'\nset output '%s'\n",
            file);
    fprintf(g, "set multiplot layout 3,1 title '%s'\n", title);
    fprintf(g, "set grid\nset key outside right\nset xlabel 'simulated time (s)'\n");
    fprintf(g, "set ylabel 'events/s'\nplot $d using 1:2 with lines lw 2 title 'arrival rate', "
               "$d using 1:($3>0?$3:1/0) with lines dt 2 lw 2 title 'provisioned-for "
               "forecast'\n");
    fprintf(g, "set yrange [0:*]\nset ylabel 'workers'\nplot $d using 1:4 with steps lw 2 "
               "title 'running', $d using 1:5 with steps dt 2 title 'target'\nset autoscale y\n");
    fprintf(g,
            "set logscale y\nset ylabel 'p99 per interval (ms)'\nplot $d using 1:6 with lines "
            "lw 2 title 'p99', %g with lines dt 2 lc rgb 'red' title 'SLO'\n",
            slo_ms);
    fprintf(g, "unset multiplot\n");
    return pclose(g) == 0 ? 0 : -1;
}

static int split_list(const char *s, char out[][32], int max)
{
    int n = 0;
    while (*s != '\0' && n < max) {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= 32) {
            return -1;
        }
        memcpy(out[n], s, len);
        out[n][len] = '\0';
        n++;
        s += len;
        if (*s == ',') {
            s++;
        }
    }
    return *s == '\0' ? n : -1;
}

/* ---- --live: the real pipeline, paced along the trace --------------------------------------- */

typedef struct live_opts {
    double interval_s;   /* one trace interval in wall time */
    double delay_us;     /* debug.worker_delay_us */
    double peak_workers; /* busy workers the replayed peak needs */
    double slo_ms;
    uint32_t max_workers, static_workers, initial_workers;
    double target_util;
    const char *forecaster;
    uint64_t seed;
    const char *keep; /* keep the run directories here (NULL: a temporary one, removed) */
} live_opts;

static int write_counts(const char *path, const double *c, size_t n)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    bool ok = fputs("step,count\n", f) >= 0;
    for (size_t i = 0; i < n && ok; i++) {
        ok = fprintf(f, "%zu,%.0f\n", i + 1, c[i]) > 0;
    }
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int set_conf(cf_config *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_conf(cf_config *c, const char *key, const char *fmt, ...)
{
    char v[1200], err[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof(v), fmt, ap);
    va_end(ap);
    if (cf_config_set(c, key, v, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": %s=%s: %s\n", key, v, err);
        return -1;
    }
    return 0;
}

/* One policy: confide run in process, its input paced along replay.csv. */
static int live_run(const char *dir, const char *policy, const live_opts *lo, double mean_rate,
                    const char *buf, size_t len, cf_summary *sum)
{
    char out[1100], err[512] = "";
    snprintf(out, sizeof(out), "%s/%s", dir, policy);
    cf_config *c = NULL;
    cf_pipeline *p = NULL;
    int rc = -1;
    long long interval_ms = llround(lo->interval_s * 1e3);
    bool stat = strcmp(policy, "static") == 0;
    if (cf_config_create(&c) != CF_OK || set_conf(c, "output.dir", "%s", out) ||
        set_conf(c, "audit.fsync", "none") || set_conf(c, "window.group_by", "merchant") ||
        set_conf(c, "window.size_ms", "60000") ||
        set_conf(c, "input.shape", "trace:%s/replay.csv", dir) ||
        set_conf(c, "input.rate", "%.6f", mean_rate) ||
        set_conf(c, "input.speedup", "%.9g", 3600.0 / lo->interval_s) ||
        set_conf(c, "batch.mode", "fixed:256") || set_conf(c, "batch.linger_ms", "20") ||
        set_conf(c, "slo.p99_ms", "%.0f", lo->slo_ms) ||
        set_conf(c, "debug.worker_delay_us", "%.0f", lo->delay_us) ||
        set_conf(c, "party.workers", "%u", stat ? lo->static_workers : lo->initial_workers) ||
        set_conf(c, "autoscale.policy", "%s", policy) ||
        set_conf(c, "autoscale.interval_ms", "%lld", interval_ms) ||
        set_conf(c, "autoscale.cooldown_ms", "%lld", 3 * interval_ms) ||
        set_conf(c, "autoscale.target_util", "%.0f", lo->target_util * 100) ||
        set_conf(c, "autoscale.max_workers", "%u", stat ? lo->static_workers : lo->max_workers) ||
        (strcmp(policy, "predictive") == 0 && set_conf(c, "autoscale.model", "%s/model", dir))) {
        goto done;
    }
    if (cf_pipeline_create(&p, c, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": %s: %s\n", policy, err);
        goto done;
    }
    cf_pipeline_set_input_buffer(p, buf, len);
    if (cf_pipeline_run(p, sum, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": %s: %s\n", policy, err);
        goto done;
    }
    rc = 0;
done:
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    return rc;
}

static int live_bench(const char *trace, const double *y, size_t train, size_t n, char names[][32],
                      int np, const live_opts *lo0, bool json)
{
    live_opts lo = *lo0;
    int rc = CF_EXIT_RUNTIME;
    char dir[1024] = "", cmd[1200], err[512];
    cf_summary rows[MAX_POLICIES];
    memset(rows, 0, sizeof(rows));
    double *c = calloc(n, sizeof(*c));
    char *buf = NULL;
    cf_forecaster *fc = NULL;
    if (c == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        return CF_EXIT_RUNTIME;
    }
    if (lo.keep != NULL) {
        snprintf(dir, sizeof(dir), "%s", lo.keep);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, PROG ": mkdir %s: %s\n", dir, strerror(errno));
            goto out;
        }
    } else {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/confide-live-XXXXXX", t != NULL ? t : "/tmp");
        if (mkdtemp(dir) == NULL) {
            fprintf(stderr, PROG ": mkdtemp: %s\n", strerror(errno));
            goto out;
        }
    }
    /* Scale the counts so that the replayed peak interval needs peak_workers busy workers,
     * each worth 1e6 / delay_us events/s; round to whole events. */
    double peak = 0, total = 0;
    for (size_t i = train; i < n; i++) {
        peak = y[i] > peak ? y[i] : peak;
    }
    double worker_rate = 1e6 / lo.delay_us;
    double scale = peak > 0 ? lo.peak_workers * worker_rate * lo.interval_s / peak : 0;
    for (size_t i = 0; i < n; i++) {
        c[i] = round(y[i] * scale);
        total += i >= train ? c[i] : 0;
    }
    if (total < 1) {
        fprintf(stderr, PROG ": the replayed part of %s has no events\n", trace);
        rc = CF_EXIT_USAGE;
        goto out;
    }
    double peak_rate = lo.peak_workers * worker_rate;
    double mean_rate = total / ((double)(n - train) * lo.interval_s);
    double first_rate = c[train] / lo.interval_s;
    lo.static_workers = (uint32_t)ceil(peak_rate / (worker_rate * lo.target_util));
    lo.static_workers = lo.static_workers > lo.max_workers ? lo.max_workers : lo.static_workers;
    lo.initial_workers = (uint32_t)ceil(first_rate / (worker_rate * lo.target_util));
    lo.initial_workers = lo.initial_workers < 1 ? 1 : lo.initial_workers;
    lo.initial_workers = lo.initial_workers > lo.max_workers ? lo.max_workers : lo.initial_workers;
    char path[1100];
    snprintf(path, sizeof(path), "%s/replay.csv", dir);
    if (write_counts(path, c + train, n - train) != 0) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/train.csv", dir);
    if (write_counts(path, c, train) != 0) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    /* The predictive policy's model: what `confide forecast train --trace train.csv --model
     * F --out model` makes, over events per decision interval. */
    for (int k = 0; k < np; k++) {
        if (strcmp(names[k], "predictive") != 0) {
            continue;
        }
        cf_forecast_opts fo;
        cf_forecast_opts_default(&fo);
        snprintf(path, sizeof(path), "%s/model", dir);
        if (cf_forecaster_create(&fc, lo.forecaster, &fo, err, sizeof(err)) != CF_OK ||
            cf_forecaster_fit(fc, c, train, err, sizeof(err)) != CF_OK ||
            cf_forecaster_save(fc, path, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, PROG ": forecaster %s: %s\n", lo.forecaster, err);
            rc = CF_EXIT_USAGE;
            goto out;
        }
    }
    size_t len = 0;
    buf = cf_bench_gen_csv(PROG, (uint64_t)total, 20000, 40000, lo.seed, &len);
    if (buf == NULL) {
        goto out;
    }
    if (!json) {
        char desc[256] = "";
        if (fc != NULL) {
            cf_forecaster_describe(fc, desc, sizeof(desc));
        }
        printf("live: trace %s: replaying %zu of %zu intervals (forecaster fitted on the first "
               "%zu), %.3f wall s each: %.0f s per policy\n",
               trace, n - train, n, train, lo.interval_s, (double)(n - train) * lo.interval_s);
        printf("live: %.0f events (mean %.0f/s, peak %.0f/s = %.1f busy workers), worker hold "
               "%.0f us/event (%.0f events/s per worker), SLO p99 %.0f ms, workers 1..%u, "
               "static %u, start %u%s%s\n",
               total, mean_rate, peak_rate, lo.peak_workers, lo.delay_us, worker_rate, lo.slo_ms,
               lo.max_workers, lo.static_workers, lo.initial_workers, desc[0] ? ", model " : "",
               desc);
        printf("%-11s %15s %10s %10s %11s %9s %11s %9s %9s\n", "policy", "slo_violation_s",
               "p99_ms", "p50_ms", "worker_s", "mean_w", "rescales", "events", "wall_s");
        fflush(stdout);
    }
    for (int k = 0; k < np; k++) {
        if (live_run(dir, names[k], &lo, mean_rate, buf, len, &rows[k]) != 0) {
            goto out;
        }
        const cf_summary *s = &rows[k];
        if (!json) {
            printf("%-11s %15.1f %10.1f %10.1f %11.1f %9.2f %11llu %9llu %9.1f\n", names[k],
                   s->slo_violation_s, (double)s->p99_us / 1e3, (double)s->p50_us / 1e3,
                   s->worker_s, s->elapsed_s > 0 ? s->worker_s / s->elapsed_s : 0,
                   (unsigned long long)s->rescales, (unsigned long long)s->accepted, s->elapsed_s);
            fflush(stdout);
        }
    }
    if (json) {
        printf("[");
        for (int k = 0; k < np; k++) {
            const cf_summary *s = &rows[k];
            printf("%s{\"policy\":\"%s\",\"slo_violation_s\":%.1f,\"p99_ms\":%.3f,"
                   "\"worker_s\":%.1f,\"rescales\":%llu}",
                   k ? "," : "", names[k], s->slo_violation_s, (double)s->p99_us / 1e3, s->worker_s,
                   (unsigned long long)s->rescales);
        }
        printf("]\n");
    }
    rc = CF_EXIT_OK;
out:
    if (lo.keep == NULL && dir[0] != '\0' && strstr(dir, "confide-live-") != NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, PROG ": could not remove %s\n", dir);
        }
    }
    cf_forecaster_destroy(fc);
    free(buf);
    free(c);
    return rc;
}

int cf_bench_autoscale(int argc, char **argv)
{
    const char *trace = NULL, *policies = "static,reactive,ds2,predictive";
    /* Seasonal naive, not the most accurate model on average (Holt-Winters): it repeats the
     * last season's peaks instead of smoothing them, which is what provisioning needs; it
     * gave the fewest SLO violations on every trace in docs/autoscaling.md. */
    const char *forecaster = "seasonal", *plot_dir = "bench/results";
    bool json = false, wr_given = false, bc_given = false, sw_given = false, tp_given = false;
    bool dd_given = false, cd_given = false, live = false, sp_given = false;
    double speedup = 0, delay_us = 1000, peak_workers = 10;
    const char *keep_dir = NULL;
    double step_s = 3600, batch_cost_ms = 0, down_delay_s = 0, cooldown_s = 0;
    uint32_t train_points = 0, static_workers = 0, replay_points = 0;
    cf_sim_opts so;
    cf_sim_opts_default(&so);
    so.startup_s = 20;
    cf_policy_opts po;
    cf_policy_opts_default(&po);
    const cli_opt opts[] = {
        {.name = "trace", .type = CLI_STR, .str = &trace, .arg = "FILE", .help = "the rate trace"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "[{\"policy\",\"slo_violation_s\",\"p99_ms\",\"worker_s\",\"rescales\"}]"},
        {.name = "policies",
         .type = CLI_STR,
         .str = &policies,
         .arg = "LIST",
         .help = "default static,reactive,ds2,predictive"},
        {.name = "compress",
         .type = CLI_DBL,
         .dbl = &so.compress,
         .arg = "X",
         .min = 1e-6,
         .max = 1e9,
         .help = "an interval lasts interval/X simulated s (default 1)"},
        {.name = "worker-rate",
         .type = CLI_DBL,
         .dbl = &so.worker_rate,
         .arg = "N",
         .min = 1e-6,
         .max = 1e12,
         .given = &wr_given,
         .help = "events/s a worker completes with full batches (default: the\n"
                 "replayed peak rate / 32, so the peak needs 32 busy workers)"},
        {.name = "startup-s",
         .type = CLI_DBL,
         .dbl = &so.startup_s,
         .arg = "S",
         .min = 0,
         .max = 1e7,
         .help = "worker start-up delay (default 20)"},
        {.name = "slo-ms",
         .type = CLI_DBL,
         .dbl = &so.slo_ms,
         .arg = "MS",
         .min = 0.001,
         .max = 3.6e6,
         .help = "p99 latency SLO, judged per 1 s slice (default 500)"},
        {.name = "batch-max",
         .type = CLI_U32,
         .u32 = &so.batch_max,
         .arg = "N",
         .min = 1,
         .max = 1e7,
         .help = "events per batch at most (default 256)"},
        {.name = "batch-cost-ms",
         .type = CLI_DBL,
         .dbl = &batch_cost_ms,
         .arg = "MS",
         .min = 0,
         .max = 1e7,
         .given = &bc_given,
         .help = "fixed cost per batch (default: half an event's cost)"},
        {.name = "max-workers",
         .type = CLI_U32,
         .u32 = &po.max_workers,
         .arg = "N",
         .min = 1,
         .max = 100000,
         .help = "pool limit for every policy (default 64)"},
        {.name = "static-workers",
         .type = CLI_U32,
         .u32 = &static_workers,
         .arg = "N",
         .min = 1,
         .max = 100000,
         .given = &sw_given,
         .help = "static's size (default: enough for the replayed peak at\n"
                 "70% utilization, capped at --max-workers)"},
        {.name = "forecaster",
         .type = CLI_STR,
         .str = &forecaster,
         .arg = "NAME",
         .help = "predictive's model: last, seasonal, ma, hw, lstm (default seasonal)"},
        {.name = "train-points",
         .type = CLI_U32,
         .u32 = &train_points,
         .arg = "N",
         .min = 1,
         .max = 1e7,
         .given = &tp_given,
         .help = "intervals the forecaster is fitted on (default half)"},
        {.name = "replay-points",
         .type = CLI_U32,
         .u32 = &replay_points,
         .arg = "N",
         .min = 1,
         .max = 1e7,
         .help = "intervals replayed after those (default: all the rest)"},
        {.name = "horizon",
         .type = CLI_U32,
         .u32 = &po.horizon,
         .arg = "N",
         .min = 1,
         .max = 256,
         .help = "predictive: intervals beyond the lead time (default 1)"},
        {.name = "hysteresis",
         .type = CLI_DBL,
         .dbl = &po.down_hysteresis,
         .arg = "X",
         .min = 0,
         .max = 0.99,
         .help = "predictive: scale down only to <= (1 - X) x workers (0.5)"},
        {.name = "target-util",
         .type = CLI_DBL,
         .dbl = &po.target_util,
         .arg = "X",
         .min = 0.05,
         .max = 1,
         .help = "ds2 and predictive utilization target (default 0.7)"},
        {.name = "down-delay-s",
         .type = CLI_DBL,
         .dbl = &down_delay_s,
         .arg = "S",
         .min = 0,
         .max = 1e9,
         .given = &dd_given,
         .help = "ds2: scale-down delay; predictive: how much further ahead it\n"
                 "looks before scaling down (default 3 intervals)"},
        {.name = "cooldown-s",
         .type = CLI_DBL,
         .dbl = &cooldown_s,
         .arg = "S",
         .min = 0,
         .max = 1e9,
         .given = &cd_given,
         .help = "reactive cooldown (default 3 intervals)"},
        {.name = "seed",
         .type = CLI_U64,
         .u64 = &so.seed,
         .arg = "S",
         .help = "Poisson arrivals (default 1)"},
        {.name = "step-s",
         .type = CLI_DBL,
         .dbl = &step_s,
         .arg = "S",
         .min = 0.001,
         .max = 86400,
         .help = "seconds per step of a 'step' trace column (default 3600)"},
        {.name = "live",
         .type = CLI_FLAG,
         .flag = &live,
         .help = "run the real pipeline (confide run in process) per policy, its\n"
                 "input paced along the compressed trace (docs/autoscaling.md);\n"
                 "the simulator's --compress, --worker-rate, --startup-s,\n"
                 "--batch-*, --static-workers and policy tuning are not used"},
        {.name = "speedup",
         .type = CLI_DBL,
         .dbl = &speedup,
         .arg = "X",
         .min = 1e-6,
         .max = 1e9,
         .given = &sp_given,
         .help = "--live: a trace interval lasts interval/X wall s (default:\n"
                 "0.5 s per interval)"},
        {.name = "worker-delay-us",
         .type = CLI_DBL,
         .dbl = &delay_us,
         .arg = "US",
         .min = 1,
         .max = 1e6,
         .help = "--live: each party worker holds every event this long\n"
                 "(debug.worker_delay_us; default 1000)"},
        {.name = "peak-workers",
         .type = CLI_DBL,
         .dbl = &peak_workers,
         .arg = "N",
         .min = 0.1,
         .max = 16,
         .help = "--live: busy workers the replayed peak needs (default 10)"},
        {.name = "keep-dir",
         .type = CLI_STR,
         .str = &keep_dir,
         .arg = "DIR",
         .help = "--live: keep the traces, model and run outputs here"},
        {.name = "plot-dir",
         .type = CLI_STR,
         .str = &plot_dir,
         .arg = "DIR",
         .help = "PNG timelines autoscale-<trace>-<policy>.png (default\n"
                 "bench/results; 'none' to skip; needs gnuplot)"},
    };
    cli_spec spec = {.prog = PROG, .head = autoscale_head, .opts = opts, .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (trace == NULL) {
        fprintf(stderr, PROG ": --trace FILE is required\n");
        return CF_EXIT_USAGE;
    }
    char names[MAX_POLICIES][32];
    int np = split_list(policies, names, MAX_POLICIES);
    if (np <= 0) {
        fprintf(stderr, PROG ": bad --policies list\n");
        return CF_EXIT_USAGE;
    }
    char err[512];
    int rc = CF_EXIT_OK;
    cf_trace *t = NULL;
    cf_sim_result res[MAX_POLICIES];
    timeline tl[MAX_POLICIES];
    memset(tl, 0, sizeof(tl));
    if (cf_trace_load(&t, trace, step_s, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": %s\n", err);
        return CF_EXIT_USAGE;
    }
    const double *y = cf_trace_values(t);
    size_t n = cf_trace_len(t);
    size_t train = tp_given ? train_points : n / 2;
    if (replay_points > 0 && train + replay_points < n) {
        n = train + replay_points; /* the intervals after those are not replayed */
    }
    if (train < 2 || train + 2 > n) {
        fprintf(stderr, PROG ": %zu points: cannot fit on %zu and replay the rest\n", n, train);
        cf_trace_destroy(t);
        return CF_EXIT_USAGE;
    }
    double interval_s = (double)cf_trace_interval_ms(t) / 1e3;
    if (live) {
        live_opts lo = {
            .interval_s = sp_given ? interval_s / speedup : 0.5,
            .delay_us = delay_us,
            .peak_workers = peak_workers,
            .slo_ms = so.slo_ms,
            .max_workers = po.max_workers > 16 ? 16 : po.max_workers,
            .target_util = po.target_util,
            .forecaster = forecaster,
            .seed = so.seed,
            .keep = keep_dir,
        };
        lo.interval_s = round(lo.interval_s * 1e3) / 1e3; /* autoscale.interval_ms */
        if (lo.interval_s < 0.05 || lo.interval_s > 3600) {
            fprintf(stderr,
                    PROG ": --live: an interval would last %.3f s; --speedup must make it "
                         "0.05..3600 s\n",
                    lo.interval_s);
            cf_trace_destroy(t);
            return CF_EXIT_USAGE;
        }
        rc = live_bench(trace, y, train, n, names, np, &lo, json);
        cf_trace_destroy(t);
        return rc;
    }
    double row_s = interval_s / so.compress;
    double peak = 0;
    for (size_t i = train; i < n; i++) {
        peak = y[i] > peak ? y[i] : peak;
    }
    double peak_rate = peak / row_s;
    if (!wr_given) {
        so.worker_rate = peak_rate > 0 ? peak_rate / 32 : 1;
    }
    so.batch_cost_s = bc_given ? batch_cost_ms / 1e3 : 0.5 / so.worker_rate;
    po.static_workers =
        sw_given ? static_workers : (uint32_t)ceil(peak_rate / (so.worker_rate * po.target_util));
    if (po.static_workers < 1) {
        po.static_workers = 1;
    }
    if (po.static_workers > po.max_workers) {
        po.static_workers = po.max_workers;
    }
    po.down_delay_s = dd_given ? down_delay_s : 3 * row_s;
    po.cooldown_s = cd_given ? cooldown_s : 3 * row_s;
    po.stabilization_s = row_s;
    po.lead_s = so.startup_s;
    /* Every policy starts sized for the first replayed interval at the target utilization. */
    double first_rate = y[train] / row_s;
    so.initial_workers = (uint32_t)ceil(first_rate / (so.worker_rate * po.target_util));
    if (so.initial_workers < po.min_workers) {
        so.initial_workers = po.min_workers;
    }
    if (so.initial_workers > po.max_workers) {
        so.initial_workers = po.max_workers;
    }
    char base[256];
    const char *slash = strrchr(trace, '/');
    snprintf(base, sizeof(base), "%s", slash != NULL ? slash + 1 : trace);
    char *dot = strrchr(base, '.');
    if (dot != NULL) {
        *dot = '\0';
    }
    for (int k = 0; k < np; k++) {
        cf_forecaster *fc = NULL;
        cf_policy *p = NULL;
        if (strcmp(names[k], "predictive") == 0) {
            cf_forecast_opts fo;
            cf_forecast_opts_default(&fo);
            if (cf_forecaster_create(&fc, forecaster, &fo, err, sizeof(err)) != CF_OK ||
                cf_forecaster_fit(fc, y, train, err, sizeof(err)) != CF_OK) {
                fprintf(stderr, PROG ": forecaster %s: %s\n", forecaster, err);
                cf_forecaster_destroy(fc);
                rc = CF_EXIT_USAGE;
                goto out;
            }
        }
        if (cf_policy_create(&p, names[k], &po, fc, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, PROG ": %s\n", err);
            cf_forecaster_destroy(fc);
            rc = CF_EXIT_USAGE;
            goto out;
        }
        cf_sim_opts run = so;
        if (strcmp(names[k], "static") == 0) {
            run.initial_workers = po.static_workers; /* static never rescales */
        }
        cf_err e = cf_sim_run(y + train, n - train, interval_s, &run, p, on_tick, &tl[k], &res[k],
                              err, sizeof(err));
        cf_policy_destroy(p);
        cf_forecaster_destroy(fc);
        if (e != CF_OK) {
            fprintf(stderr, PROG ": %s\n", err);
            rc = e == CF_E_INVAL || e == CF_E_LIMIT ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
            goto out;
        }
    }
    if (json) {
        printf("[");
        for (int k = 0; k < np; k++) {
            printf("%s{\"policy\":\"%s\",\"slo_violation_s\":%.1f,\"p99_ms\":%.3f,"
                   "\"worker_s\":%.1f,\"rescales\":%u}",
                   k ? "," : "", names[k], res[k].slo_violation_s, res[k].p99_ms, res[k].worker_s,
                   res[k].rescales);
        }
        printf("]\n");
    } else {
        printf("trace %s: replaying %zu of %zu intervals (forecaster fitted on the first %zu), "
               "%.3f simulated s each; %.0f simulated s\n",
               trace, n - train, n, train, row_s, (double)(n - train) * row_s);
        printf("worker %.1f events/s at full batches (batch <= %u, %.3f ms per batch), "
               "start-up %.0f s, SLO p99 %.0f ms, workers %u..%u, static %u, forecaster %s\n",
               so.worker_rate, so.batch_max, so.batch_cost_s * 1e3, so.startup_s, so.slo_ms,
               po.min_workers, po.max_workers, po.static_workers, forecaster);
        printf("%-11s %15s %10s %10s %11s %9s %9s %11s %9s\n", "policy", "slo_violation_s",
               "p99_ms", "mean_ms", "worker_s", "mean_w", "max_w", "rescales", "dropped");
        for (int k = 0; k < np; k++) {
            printf("%-11s %15.1f %10.1f %10.2f %11.1f %9.2f %9u %11u %9llu\n", names[k],
                   res[k].slo_violation_s, res[k].p99_ms, res[k].mean_ms, res[k].worker_s,
                   res[k].duration_s > 0 ? res[k].worker_s / res[k].duration_s : 0,
                   res[k].max_workers, res[k].rescales, (unsigned long long)res[k].dropped);
        }
    }
    if (strcmp(plot_dir, "none") != 0) {
        if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
            fprintf(stderr, PROG ": gnuplot not installed, no plots\n");
        } else {
            for (int k = 0; k < np; k++) {
                char file[1024], title[1400];
                snprintf(file, sizeof(file), "%s/autoscale-%s-%s.png", plot_dir, base, names[k]);
                snprintf(title, sizeof(title),
                         "confide bench autoscale: %s, policy %s (violation %.0f s, "
                         "%.0f worker-s, %u rescales)",
                         base, names[k], res[k].slo_violation_s, res[k].worker_s, res[k].rescales);
                for (char *c = title; *c != '\0'; c++) {
                    if (*c == '\'') {
                        *c = ' ';
                    }
                }
                if (strchr(file, '\'') != NULL || plot(file, title, &tl[k], so.slo_ms) != 0) {
                    fprintf(stderr, PROG ": gnuplot failed to write %s\n", file);
                } else if (!json) {
                    printf("plot: %s\n", file);
                }
            }
        }
    }
out:
    for (int k = 0; k < MAX_POLICIES; k++) {
        free(tl[k].t);
    }
    cf_trace_destroy(t);
    return rc;
}
