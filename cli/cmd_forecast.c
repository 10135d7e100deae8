/*
 * confide forecast: train, evaluate and use arrival-rate forecasters (src/scale) on any
 * rate trace, and make traces from arrivals or from the generator's shapes.
 *
 *   train    fits one model on a whole trace and writes a checksummed model file
 *   eval     walk-forward evaluation of one or all models on the last N points
 *   predict  the next steps from a model file and a trace's history
 *   trace    a rate trace from an arrivals CSV, or from `confide gen`'s --shape schedules
 *
 * Output: a table on stdout, or JSON with --json; errors on stderr, exit codes as in main.c.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opts.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/scale.h"
#include "scale_args.h"

#define PROG "confide forecast"
#define FC_STEPS_MAX 4096

/* The usage before the options; %s: the default model. */
static const char forecast_head[] =
    "usage: confide forecast train   --trace FILE --out MODEL [--model NAME] [options]\n"
    "       confide forecast eval    --trace FILE [--model NAME|all] [--test-points N]\n"
    "                                [--horizon H] [--predictions OUT.csv] [--json]\n"
    "                                [options]\n"
    "       confide forecast predict --load MODEL --trace FILE [--steps N] [--json]\n"
    "       confide forecast trace   --out FILE --interval-s S\n"
    "                                (--arrivals FILE [--column N] |\n"
    "                                 --shape steady|diurnal|burst --rate R --duration-s D\n"
    "                                 [--speedup X] [--noise poisson|none] [--seed S])\n\n"
    "Forecasts arrival rates: the next counts of a trace from its history. Models: last\n"
    "(last value), seasonal (one season back), ma (moving average), hw (Holt-Winters,\n"
    "additive), lstm (an LSTM trained by BPTT with Adam); default %s. Details and\n"
    "results: docs/autoscaling.md.\n\n"
    "A trace is a CSV with a header; column 1 a timestamp (RFC 3339, 'YYYY-MM-DD\n"
    "HH:MM:SS' UTC, or epoch seconds; a column named 'step' counts --step-s steps,\n"
    "default 3600), column 2 a count per interval. The interval is regular; absent\n"
    "intervals count zero.\n\n"
    "eval trains each model on everything before the last --test-points (default 100),\n"
    "then forecasts each of those points from the true history before it (--horizon H:\n"
    "H steps ahead, from the history up to H steps before). Prints model, smape (%%),\n"
    "mae, rmse, train_s (and, in the table, the fitted parameters and the time per\n"
    "forecast). --predictions writes one CSV for all models: model,ts,forecast,actual.\n\n"
    "options (trace options from --arrivals on):\n";
static const char forecast_tail[] = "\nexit codes: 0 ok, 2 usage or bad trace, 3 runtime error\n";

typedef struct {
    const char *trace;
    const char *model;
    const char *out;
    const char *predictions;
    const char *load;
    const char *arrivals;
    const char *shape;
    const char *noise;
    uint32_t test_points;
    uint32_t steps;
    uint32_t column;
    double step_s;
    double interval_s;
    double rate;
    double duration_s;
    double speedup;
    bool json;
    cf_forecast_opts fo;
} fargs;

static int parse(int argc, char **argv, fargs *a)
{
    cf_forecast_opts_default(&a->fo);
    a->test_points = 100;
    a->steps = 1;
    a->column = 1;
    a->step_s = 3600;
    a->speedup = 1;
    a->noise = "poisson";
    const cli_opt opts[] = {
        {.name = "trace",
         .type = CLI_STR,
         .str = &a->trace,
         .arg = "FILE",
         .help = "the rate trace"},
        {.name = "model",
         .type = CLI_STR,
         .str = &a->model,
         .arg = "NAME",
         .help = "last | seasonal | ma | hw | lstm (eval: also all, the default)"},
        {.name = "out",
         .type = CLI_STR,
         .str = &a->out,
         .arg = "FILE",
         .help = "train: the model file; trace: the trace written"},
        {.name = "load",
         .type = CLI_STR,
         .str = &a->load,
         .arg = "MODEL",
         .help = "predict: a model file written by train"},
        {.name = "test-points",
         .type = CLI_U32,
         .u32 = &a->test_points,
         .arg = "N",
         .min = 1,
         .max = 1e7,
         .help = "eval: points forecast at the end of the trace (default 100)"},
        {.name = "predictions",
         .type = CLI_STR,
         .str = &a->predictions,
         .arg = "OUT.csv",
         .help = "eval: every forecast as model,ts,forecast,actual"},
        {.name = "steps",
         .type = CLI_U32,
         .u32 = &a->steps,
         .arg = "N",
         .min = 1,
         .max = FC_STEPS_MAX,
         .help = "predict: steps to forecast (default 1)"},
        {.name = "window",
         .type = CLI_U32,
         .u32 = &a->fo.window,
         .arg = "W",
         .min = 2,
         .max = 512,
         .help = "lstm input points (default 24)"},
        {.name = "horizon",
         .type = CLI_U32,
         .u32 = &a->fo.horizon,
         .arg = "H",
         .min = 1,
         .max = 64,
         .help = "steps ahead (default 1); the lstm predicts H steps at once"},
        {.name = "hidden",
         .type = CLI_U32,
         .u32 = &a->fo.hidden,
         .arg = "N",
         .min = 2,
         .max = 128,
         .help = "lstm hidden units, 2..128 (default 16)"},
        {.name = "layers",
         .type = CLI_U32,
         .u32 = &a->fo.layers,
         .arg = "N",
         .min = 1,
         .max = 2,
         .help = "lstm layers, 1..2 (default 1)"},
        {.name = "epochs",
         .type = CLI_U32,
         .u32 = &a->fo.epochs_max,
         .arg = "N",
         .min = 1,
         .max = 100000,
         .help = "lstm epochs at most (default 60; early stopping on a 20%\n"
                 "validation split, patience 8)"},
        {.name = "lr",
         .type = CLI_DBL,
         .dbl = &a->fo.lr,
         .arg = "X",
         .min = 1e-6,
         .max = 0.5,
         .help = "Adam step size (default 0.003)"},
        {.name = "seed",
         .type = CLI_U64,
         .u64 = &a->fo.seed,
         .arg = "S",
         .help = "lstm weights and minibatch order (default 1)"},
        {.name = "season",
         .type = CLI_U32,
         .u32 = &a->fo.season,
         .arg = "N",
         .min = 2,
         .max = 10000,
         .help = "seasonal/hw season in points (default: detected)"},
        {.name = "step-s",
         .type = CLI_DBL,
         .dbl = &a->step_s,
         .arg = "S",
         .min = 0.001,
         .max = 86400,
         .help = "seconds per step of a 'step' column (default 3600)"},
        {.name = "json", .type = CLI_FLAG, .flag = &a->json, .help = "JSON on stdout"},
        {.name = "arrivals",
         .type = CLI_STR,
         .str = &a->arrivals,
         .arg = "FILE",
         .help = "a CSV with one row per event (e.g. ULB's Time column)"},
        {.name = "column",
         .type = CLI_U32,
         .u32 = &a->column,
         .arg = "N",
         .min = 1,
         .max = 1000,
         .help = "its timestamp column, 1-based (default 1)"},
        {.name = "interval-s",
         .type = CLI_DBL,
         .dbl = &a->interval_s,
         .arg = "S",
         .min = 0.001,
         .max = 86400,
         .help = "the trace's interval"},
        {.name = "shape",
         .type = CLI_STR,
         .str = &a->shape,
         .arg = "S",
         .help = "an arrival schedule of `confide gen --shape` (same code)"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &a->rate,
         .arg = "R",
         .min = 1e-6,
         .max = 1e9,
         .help = "mean events/s of the shape"},
        {.name = "duration-s",
         .type = CLI_DBL,
         .dbl = &a->duration_s,
         .arg = "D",
         .min = 0.001,
         .max = 1e9,
         .help = "length of the trace"},
        {.name = "speedup",
         .type = CLI_DBL,
         .dbl = &a->speedup,
         .arg = "X",
         .min = 1e-6,
         .max = 1e9,
         .help = "time compression of diurnal (period 86400/X s; default 1)"},
        {.name = "noise",
         .type = CLI_STR,
         .str = &a->noise,
         .arg = "N",
         .help = "poisson (default: each count drawn from Poisson(count), as\n"
                 "observed arrivals would be) or none (the exact schedule)"},
    };
    char head[sizeof(forecast_head) + 64];
    snprintf(head, sizeof(head), forecast_head, cf_forecast_default_model());
    cli_spec spec = {
        .prog = PROG, .head = head, .tail = forecast_tail, .opts = opts, .n_opts = CLI_N(opts)};
    return cli_parse(&spec, argc, argv);
}

static cf_trace *load_trace(const fargs *a)
{
    char err[512];
    cf_trace *t = NULL;
    if (a->trace == NULL) {
        fprintf(stderr, PROG ": --trace FILE is required\n");
        return NULL;
    }
    if (cf_trace_load(&t, a->trace, a->step_s, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": %s\n", err);
        return NULL;
    }
    return t;
}

/* ---- train ---------------------------------------------------------------------------------- */

static int cmd_train(const fargs *a)
{
    if (a->out == NULL) {
        fprintf(stderr, PROG " train: --out MODEL is required\n");
        return CF_EXIT_USAGE;
    }
    cf_trace *t = load_trace(a);
    if (t == NULL) {
        return CF_EXIT_USAGE;
    }
    int rc = CF_EXIT_OK;
    char err[512], desc[256];
    cf_forecaster *f = NULL;
    const char *model = a->model != NULL ? a->model : cf_forecast_default_model();
    if (cf_forecaster_create(&f, model, &a->fo, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG " train: %s\n", err);
        rc = CF_EXIT_USAGE;
        goto out;
    }
    int64_t t0 = cf_now_ns();
    if (cf_forecaster_fit(f, cf_trace_values(t), cf_trace_len(t), err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG " train: %s\n", err);
        rc = CF_EXIT_USAGE;
        goto out;
    }
    double train_s = (double)(cf_now_ns() - t0) / 1e9;
    if (cf_forecaster_save(f, a->out, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG " train: %s\n", err);
        rc = CF_EXIT_RUNTIME;
        goto out;
    }
    cf_forecaster_describe(f, desc, sizeof(desc));
    if (a->json) {
        printf("{\"model\":");
        sa_json_str(stdout, model);
        printf(",\"params\":");
        sa_json_str(stdout, desc);
        printf(",\"points\":%zu,\"train_s\":%.3f,\"out\":", cf_trace_len(t), train_s);
        sa_json_str(stdout, a->out);
        printf("}\n");
    } else {
        printf("trained %s on %zu points in %.3f s -> %s\n", desc, cf_trace_len(t), train_s,
               a->out);
    }
out:
    cf_forecaster_destroy(f);
    cf_trace_destroy(t);
    return rc;
}

/* ---- eval ----------------------------------------------------------------------------------- */

typedef struct {
    const char *model;
    cf_forecast_score s;
    double train_s;
    double predict_us;
    char desc[256];
    double *pred;
} eval_row;

static int cmd_eval(const fargs *a)
{
    cf_trace *t = load_trace(a);
    if (t == NULL) {
        return CF_EXIT_USAGE;
    }
    int rc = CF_EXIT_OK;
    char err[512];
    size_t nm = 0;
    const char *const *all = cf_forecast_models(&nm);
    const char *one[1] = {a->model};
    const char *const *models = all;
    if (a->model != NULL && strcmp(a->model, "all") != 0) {
        models = one;
        nm = 1;
    }
    eval_row *rows = calloc(nm, sizeof(*rows));
    const double *y = cf_trace_values(t);
    size_t n = cf_trace_len(t);
    uint32_t h = a->fo.horizon;
    size_t N = a->test_points;
    FILE *pf = NULL;
    if (rows == NULL) {
        rc = CF_EXIT_RUNTIME;
        goto out;
    }
    if (N + h >= n) {
        fprintf(stderr,
                PROG " eval: %zu points: too few for %zu test points %u step(s) ahead (lower "
                     "--test-points)\n",
                n, N, h);
        rc = CF_EXIT_USAGE;
        goto out;
    }
    for (size_t m = 0; m < nm; m++) {
        eval_row *r = &rows[m];
        cf_forecaster *f = NULL;
        r->model = models[m];
        r->pred = calloc(N, sizeof(double));
        if (r->pred == NULL) {
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        if (cf_forecaster_create(&f, models[m], &a->fo, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, PROG " eval: %s\n", err);
            rc = CF_EXIT_USAGE;
            goto out;
        }
        int64_t t0 = cf_now_ns();
        if (cf_forecaster_fit(f, y, n - N, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, PROG " eval: %s: %s\n", models[m], err);
            cf_forecaster_destroy(f);
            rc = CF_EXIT_USAGE;
            goto out;
        }
        int64_t t1 = cf_now_ns();
        r->train_s = (double)(t1 - t0) / 1e9;
        cf_forecaster_describe(f, r->desc, sizeof(r->desc));
        if (cf_forecast_walk(f, y, n, N, h, r->pred, &r->s) != CF_OK) {
            fprintf(stderr, PROG " eval: %s: walk-forward failed\n", models[m]);
            cf_forecaster_destroy(f);
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        /* Time per forecast, from the state after the walk (no observation in between). */
        double fc[64];
        r->predict_us = INFINITY;
        for (int rep = 0; rep < 5; rep++) { /* the fastest of 5 runs of 100: less noise */
            int64_t t2 = cf_now_ns();
            for (int k = 0; k < 100; k++) {
                cf_forecaster_predict(f, fc, h);
            }
            double us = (double)(cf_now_ns() - t2) / 1e3 / 100;
            r->predict_us = us < r->predict_us ? us : r->predict_us;
        }
        cf_forecaster_destroy(f);
    }
    if (a->predictions != NULL) {
        pf = fopen(a->predictions, "w");
        if (pf == NULL) {
            fprintf(stderr, PROG " eval: cannot write %s\n", a->predictions);
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        fprintf(pf, "model,ts,forecast,actual\n");
        char ts[48];
        for (size_t m = 0; m < nm; m++) {
            for (size_t i = 0; i < N; i++) {
                cf_trace_format_ts(t, n - N + i, ts, sizeof(ts));
                fprintf(pf, "%s,%s,%.6g,%.17g\n", rows[m].model, ts, rows[m].pred[i], y[n - N + i]);
            }
        }
        if (fclose(pf) != 0) {
            pf = NULL;
            fprintf(stderr, PROG " eval: write error on %s\n", a->predictions);
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        pf = NULL;
    }
    if (a->json) {
        printf("[");
        for (size_t m = 0; m < nm; m++) {
            printf(
                "%s{\"model\":\"%s\",\"smape\":%.4f,\"mae\":%.6g,\"rmse\":%.6g,\"train_s\":%.4f}",
                m ? "," : "", rows[m].model, rows[m].s.smape, rows[m].s.mae, rows[m].s.rmse,
                rows[m].train_s);
        }
        printf("]\n");
    } else {
        printf("trace %s: %zu points every %.3f s (%zu filled as zero); train %zu, test %zu, "
               "%u step(s) ahead\n",
               a->trace, n, (double)cf_trace_interval_ms(t) / 1e3, cf_trace_filled(t), n - N, N, h);
        printf("%-9s %9s %12s %12s %9s %11s  %s\n", "model", "smape_%", "mae", "rmse", "train_s",
               "predict_us", "fitted");
        for (size_t m = 0; m < nm; m++) {
            printf("%-9s %9.2f %12.5g %12.5g %9.3f %11.2f  %s\n", rows[m].model, rows[m].s.smape,
                   rows[m].s.mae, rows[m].s.rmse, rows[m].train_s, rows[m].predict_us,
                   rows[m].desc);
        }
    }
out:
    if (pf != NULL) {
        fclose(pf);
    }
    for (size_t m = 0; rows != NULL && m < nm; m++) {
        free(rows[m].pred);
    }
    free(rows);
    cf_trace_destroy(t);
    return rc;
}

/* ---- predict -------------------------------------------------------------------------------- */

static int cmd_predict(const fargs *a)
{
    if (a->load == NULL) {
        fprintf(stderr, PROG " predict: --load MODEL is required\n");
        return CF_EXIT_USAGE;
    }
    cf_trace *t = load_trace(a);
    if (t == NULL) {
        return CF_EXIT_USAGE;
    }
    int rc = CF_EXIT_OK;
    char err[512];
    cf_forecaster *f = NULL;
    double *fc = calloc(a->steps, sizeof(double));
    if (fc == NULL) {
        rc = CF_EXIT_RUNTIME;
        goto out;
    }
    if (cf_forecaster_load(&f, a->load, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG " predict: %s\n", err);
        rc = CF_EXIT_USAGE;
        goto out;
    }
    const double *y = cf_trace_values(t);
    size_t n = cf_trace_len(t);
    for (size_t i = 0; i < n; i++) {
        cf_forecaster_observe(f, y[i]);
    }
    cf_forecaster_predict(f, fc, a->steps);
    char ts[48];
    if (a->json) {
        printf("[");
    } else {
        printf("ts,forecast\n");
    }
    for (uint32_t k = 0; k < a->steps; k++) {
        cf_trace_format_ts(t, n + k, ts, sizeof(ts));
        if (a->json) {
            printf("%s{\"ts\":\"%s\",\"forecast\":%.6g}", k ? "," : "", ts, fc[k]);
        } else {
            printf("%s,%.6g\n", ts, fc[k]);
        }
    }
    if (a->json) {
        printf("]\n");
    }
out:
    free(fc);
    cf_forecaster_destroy(f);
    cf_trace_destroy(t);
    return rc;
}

/* ---- trace ---------------------------------------------------------------------------------- */

static int cmd_trace(const fargs *a)
{
    char err[512];
    cf_trace *t = NULL;
    double *cnt = NULL;
    cf_pacer *pc = NULL;
    int rc = CF_EXIT_OK;
    if (a->out == NULL || !(a->interval_s > 0)) {
        fprintf(stderr, PROG " trace: --out FILE and --interval-s S are required\n");
        return CF_EXIT_USAGE;
    }
    if ((a->arrivals != NULL) == (a->shape != NULL)) {
        fprintf(stderr, PROG " trace: give exactly one of --arrivals and --shape\n");
        return CF_EXIT_USAGE;
    }
    if (strcmp(a->noise, "poisson") != 0 && strcmp(a->noise, "none") != 0) {
        fprintf(stderr, PROG " trace: --noise is poisson or none\n");
        return CF_EXIT_USAGE;
    }
    if (a->arrivals != NULL) {
        if (cf_trace_from_arrivals(&t, a->arrivals, a->column, a->interval_s, err, sizeof(err)) !=
            CF_OK) {
            fprintf(stderr, PROG " trace: %s\n", err);
            return CF_EXIT_USAGE;
        }
    } else {
        if (!(a->rate > 0) || !(a->duration_s > 0)) {
            fprintf(stderr, PROG " trace: --shape needs --rate and --duration-s\n");
            return CF_EXIT_USAGE;
        }
        double bins = ceil(a->duration_s / a->interval_s - 1e-9);
        if (bins < 2 || bins > CF_TRACE_POINTS_MAX || a->rate * a->duration_s > 1e10) {
            fprintf(stderr,
                    PROG " trace: 2..%u intervals and at most 1e10 events (got %.0f, %.3g)\n",
                    CF_TRACE_POINTS_MAX, bins, a->rate * a->duration_s);
            return CF_EXIT_USAGE;
        }
        if (strncmp(a->shape, "trace:", 6) == 0 ||
            cf_pacer_create(&pc, a->shape, a->rate, a->speedup, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, PROG " trace: %s\n",
                    pc == NULL && strncmp(a->shape, "trace:", 6) == 0
                        ? "--shape is steady, diurnal or burst"
                        : err);
            return CF_EXIT_USAGE;
        }
        size_t nb = (size_t)bins;
        cnt = calloc(nb, sizeof(double));
        if (cnt == NULL) {
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        /* Count the schedule's events per interval: exactly what `confide gen --shape` would
         * release in each, without waiting for them. */
        int64_t iv_ns = (int64_t)llround(a->interval_s * 1e9);
        int64_t end_ns = (int64_t)llround((double)nb * a->interval_s * 1e9);
        for (;;) {
            int64_t tns = cf_pacer_next_ns(pc);
            if (tns >= end_ns) {
                break;
            }
            cnt[tns / iv_ns] += 1;
        }
        if (cf_trace_create(&t, cnt, nb, 0, (int64_t)llround(a->interval_s * 1000)) != CF_OK) {
            fprintf(stderr, PROG " trace: bad interval\n");
            rc = CF_EXIT_USAGE;
            goto out;
        }
        if (strcmp(a->noise, "poisson") == 0) {
            cf_trace_add_noise(t, a->fo.seed);
        }
    }
    if (cf_trace_write(t, a->out, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG " trace: %s\n", err);
        rc = CF_EXIT_RUNTIME;
        goto out;
    }
    double sum = 0;
    for (size_t i = 0; i < cf_trace_len(t); i++) {
        sum += cf_trace_values(t)[i];
    }
    fprintf(stderr, "trace: %zu intervals of %g s, %.0f events -> %s\n", cf_trace_len(t),
            (double)cf_trace_interval_ms(t) / 1e3, sum, a->out);
out:
    cf_pacer_destroy(pc);
    free(cnt);
    cf_trace_destroy(t);
    return rc;
}

static int forecast_main(int argc, char **argv)
{
    static const char *const subs[] = {"train", "eval", "predict", "trace"};
    const char *sub = argc >= 2 ? argv[1] : "";
    bool known = false;
    for (size_t i = 0; i < CLI_N(subs); i++) {
        known |= strcmp(sub, subs[i]) == 0;
    }
    fargs a;
    memset(&a, 0, sizeof(a));
    if (!known && sub[0] != '-') {
        if (argc < 2) {
            fprintf(stderr, PROG ": a subcommand is required (train, eval, predict, trace; "
                                 "see " PROG " --help)\n");
        } else {
            fprintf(stderr, PROG ": unknown subcommand '%s' (train, eval, predict, trace)\n", sub);
        }
        return CF_EXIT_USAGE;
    }
    /* The options are the same for every subcommand; without one, only --help is valid. */
    int rc = parse(known ? argc - 1 : argc, known ? argv + 1 : argv, &a);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    if (!known) {
        fprintf(stderr, PROG ": a subcommand is required (train, eval, predict, trace)\n");
        return CF_EXIT_USAGE;
    }
    if (strcmp(sub, "train") == 0) {
        return cmd_train(&a);
    }
    if (strcmp(sub, "eval") == 0) {
        return cmd_eval(&a);
    }
    if (strcmp(sub, "predict") == 0) {
        return cmd_predict(&a);
    }
    if (strcmp(sub, "trace") == 0) {
        return cmd_trace(&a);
    }
    fprintf(stderr, PROG ": unknown subcommand '%s' (train, eval, predict, trace)\n", sub);
    return CF_EXIT_USAGE;
}

const cf_command cf_cmd_forecast = {"forecast",
                                    "train and evaluate arrival-rate forecasters (lstm, "
                                    "baselines)",
                                    forecast_main};
