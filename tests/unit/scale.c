#include "cf_test.h"

#include <math.h>

#include "confide/core.h"
#include "confide/scale.h"
#include "scale/scale_int.h"

/* ---- helpers ------------------------------------------------------------------------- */

static cf_trace *parse(const char *csv, char *err, size_t n)
{
    cf_trace *t = NULL;
    err[0] = '\0';
    if (cf_trace_parse(&t, csv, strlen(csv), "t.csv", 0, err, n) != CF_OK) {
        return NULL;
    }
    return t;
}

static bool contains(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

/* A daily-like periodic series with a little deterministic noise. */
static void periodic(double *y, size_t n, uint32_t m, double noise, uint64_t seed)
{
    cf__rng r = {seed};
    for (size_t i = 0; i < n; i++) {
        double ph = 2 * M_PI * (double)(i % m) / m;
        y[i] = 1000 + 800 * sin(ph) + noise * (2 * cf__rng_unit(&r) - 1);
    }
}

/* ---- traces -------------------------------------------------------------------------- */

static void test_trace_formats(void)
{
    char err[256];
    cf_trace *t = parse("ts,count\n2026-01-02T03:00:00Z,5\n2026-01-02T03:01:00Z,7\n"
                        "2026-01-02T03:02:00.000+00:00,9\n",
                        err, sizeof(err));
    REQUIRE(t != NULL);
    CHECK_EQ(cf_trace_len(t), 3);
    CHECK_EQ(cf_trace_interval_ms(t), 60000);
    CHECK(cf_trace_values(t)[2] == 9);
    char buf[48];
    cf_trace_format_ts(t, 1, buf, sizeof(buf));
    CHECK_STR(buf, "2026-01-02T03:01:00Z");
    cf_trace_destroy(t);

    /* space-separated UTC, an offset that moves the instant, and decimal counts */
    t = parse("time,rate\n2026-01-02 03:00:00,1.5\n2026-01-02T04:00:01+01:00,2\r\n", err,
              sizeof(err));
    REQUIRE(t != NULL);
    CHECK_EQ(cf_trace_len(t), 2);
    CHECK_EQ(cf_trace_interval_ms(t), 1000);
    CHECK(cf_trace_values(t)[0] == 1.5);
    cf_trace_destroy(t);

    /* epoch seconds, with gaps filled by zeros */
    t = parse("epoch,n\n1700000000,3\n1700000010,4\n1700000040,6\n", err, sizeof(err));
    REQUIRE(t != NULL);
    CHECK_EQ(cf_trace_len(t), 5);
    CHECK_EQ(cf_trace_filled(t), 2);
    CHECK(cf_trace_values(t)[2] == 0 && cf_trace_values(t)[4] == 6);
    CHECK_EQ(cf_trace_start_ms(t), INT64_C(1700000000000));
    cf_trace_destroy(t);

    /* `step` columns are hours (confide gen --shape trace:FILE), missing steps are zero */
    t = parse("step,count\n1,10\n2,20\n4,40\n", err, sizeof(err));
    REQUIRE(t != NULL);
    CHECK_EQ(cf_trace_len(t), 4);
    CHECK_EQ(cf_trace_interval_ms(t), 3600000);
    CHECK(cf_trace_values(t)[2] == 0);
    cf_trace_destroy(t);

    int64_t ms;
    CHECK_OK(cf_scale_parse_ts("1970-01-01T00:00:01.5Z", 22, &ms));
    CHECK_EQ(ms, 1500);
    CHECK_OK(cf_scale_parse_ts("2000-03-01T00:00:00Z", 20, &ms));
    CHECK_EQ(ms, INT64_C(951868800000));
    CHECK(cf_scale_parse_ts("2001-02-29T00:00:00Z", 20, &ms) != CF_OK);
    CHECK(cf_scale_parse_ts("2026-13-01 00:00:00", 19, &ms) != CF_OK);
}

static void test_trace_errors(void)
{
    char err[256];
    struct {
        const char *csv;
        const char *want;
    } cases[] = {
        {"", ":1: empty file"},
        {"2026-01-01T00:00:00Z,4\n2026-01-01T00:00:01Z,5\n", "must be a header"},
        {"ts,c\n2026-01-01T00:00:00Z,4\n2026-01-01T00:61:00Z,5\n", "t.csv:3: bad timestamp"},
        {"ts,c\n1000,4\nxyz,5\n", "t.csv:3: bad timestamp"},
        {"ts,c\n1000,4\n1001,-5\n", "t.csv:3: bad count"},
        {"ts,c\n1000,4\n1001,abc\n", "t.csv:3: bad count"},
        {"ts,c\n1000,4\n1002,1\n1001,2\n", "t.csv:4: timestamp is before the one on line 3"},
        {"ts,c\n1000,4\n1000,1\n", "t.csv:3: timestamp repeats"},
        {"ts,c\n1000,4\n1002,1\n1005,2\n", "t.csv:4: 3000 ms after the previous row"},
        {"ts,c\n1000,4\n", "at least 2"},
        {"ts,c\n1000\n1001,3\n", "t.csv:2: expected two columns"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cf_trace *t = parse(cases[i].csv, err, sizeof(err));
        CHECK(t == NULL);
        if (!contains(err, cases[i].want)) {
            fprintf(stderr, "case %zu: error '%s' lacks '%s'\n", i, err, cases[i].want);
            cf_test_failures++;
        }
        cf_trace_destroy(t);
    }
}

static void test_trace_arrivals(void)
{
    const char *dir = cf_test_tmpdir();
    char path[512], out[512], err[256];
    snprintf(path, sizeof(path), "%s/arr.csv", dir);
    snprintf(out, sizeof(out), "%s/rate.csv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "Time,Amount\n0,1\n0,2\n1,3\n4,4\n9,5\n9.5,6\n");
    fclose(f);
    cf_trace *t = NULL;
    REQUIRE(cf_trace_from_arrivals(&t, path, 1, 5, err, sizeof(err)) == CF_OK);
    CHECK_EQ(cf_trace_len(t), 2);
    CHECK(cf_trace_values(t)[0] == 4 && cf_trace_values(t)[1] == 2);
    /* written and read back as a trace */
    CHECK_OK(cf_trace_write(t, out, err, sizeof(err)));
    cf_trace *u = NULL;
    CHECK_OK(cf_trace_load(&u, out, 0, err, sizeof(err)));
    if (u != NULL) {
        CHECK_EQ(cf_trace_len(u), 2);
        CHECK_EQ(cf_trace_interval_ms(u), 5000);
        CHECK(cf_trace_values(u)[1] == 2);
    }
    cf_trace_destroy(u);
    cf_trace_destroy(t);
    CHECK(cf_trace_from_arrivals(&t, path, 3, 5, err, sizeof(err)) == CF_E_PARSE);
    CHECK(contains(err, "arr.csv:2: column 3"));
    unlink(path);
    unlink(out);
    rmdir(dir);
}

static void test_trace_paysim(void)
{
    const char *p = cf_test_shared("data/paysim/paysim_real_hourly_total_counts.csv");
    char err[256];
    cf_trace *t = NULL;
    REQUIRE(cf_trace_load(&t, p, 0, err, sizeof(err)) == CF_OK);
    CHECK_EQ(cf_trace_len(t), 718);
    CHECK_EQ(cf_trace_interval_ms(t), 3600000);
    CHECK(cf_trace_values(t)[0] == 33519);
    /* PaySim's days have a clear daily season */
    CHECK_EQ(cf_forecast_detect_season(cf_trace_values(t), 360, 120), 24);
    cf_trace_destroy(t);
}

/* ---- forecasters --------------------------------------------------------------------- */

static void test_lstm_gradient(void)
{
    /* Analytic BPTT gradients against central differences, on a 2-layer model. */
    for (uint32_t layers = 1; layers <= 2; layers++) {
        cf__lstm *m = NULL;
        REQUIRE(cf__lstm_create(&m, 5, 3, 4, layers) == CF_OK);
        cf__rng r = {42 + layers};
        cf__lstm_init(m, &r);
        m->huber = layers == 2 ? 0.3 : 0; /* squared error, then Huber */
        for (size_t i = 0; i < m->nparams; i++) {
            m->p[i] += 0.3 * (2 * cf__rng_unit(&r) - 1); /* away from the symmetric init */
        }
        double x[5], tg[3];
        for (int i = 0; i < 5; i++) {
            x[i] = 2 * cf__rng_unit(&r) - 1;
        }
        for (int i = 0; i < 3; i++) {
            tg[i] = 2 * cf__rng_unit(&r) - 1;
        }
        double *g = calloc(m->nparams, sizeof(double));
        REQUIRE(g != NULL);
        double loss = cf__lstm_loss_grad(m, x, tg, g);
        CHECK(loss > 0);
        double worst = 0;
        for (size_t i = 0; i < m->nparams; i++) {
            double keep = m->p[i], eps = 1e-6;
            double *scratch = calloc(m->nparams, sizeof(double));
            m->p[i] = keep + eps;
            double lp = cf__lstm_loss_grad(m, x, tg, scratch);
            m->p[i] = keep - eps;
            double lm = cf__lstm_loss_grad(m, x, tg, scratch);
            m->p[i] = keep;
            free(scratch);
            double num = (lp - lm) / (2 * eps);
            /* relative error; gradients below 1e-4 are judged against 1e-4 (central
             * differences with eps 1e-6 are good to about 1e-10 absolute) */
            double rel = fabs(num - g[i]) / fmax(1e-4, fabs(num) + fabs(g[i]));
            if (rel > worst) {
                worst = rel;
                if (rel > 1e-6) {
                    fprintf(stderr, "  param %zu: analytic %.10g numeric %.10g\n", i, g[i], num);
                }
            }
        }
        fprintf(stderr, "layers %u: %zu params, worst relative error %.2e\n", layers, m->nparams,
                worst);
        CHECK(worst < 1e-5);
        free(g);
        cf__lstm_destroy(m);
    }
}

static cf_forecast_opts small_lstm(void)
{
    cf_forecast_opts o;
    cf_forecast_opts_default(&o);
    o.window = 12;
    o.hidden = 8;
    o.epochs_max = 25;
    o.epoch_max_samples = 256;
    o.lr = 0.01;
    return o;
}

static void test_lstm_deterministic(void)
{
    double y[300];
    periodic(y, 300, 12, 50, 7);
    cf_forecast_opts o = small_lstm();
    char err[256];
    double fa[3], fb[3], fc[3];
    cf_forecaster *a = NULL, *b = NULL, *c = NULL;
    REQUIRE(cf_forecaster_create(&a, "lstm", &o, err, sizeof(err)) == CF_OK);
    REQUIRE(cf_forecaster_create(&b, "lstm", &o, err, sizeof(err)) == CF_OK);
    o.seed = 2;
    REQUIRE(cf_forecaster_create(&c, "lstm", &o, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(a, y, 300, err, sizeof(err)));
    CHECK_OK(cf_forecaster_fit(b, y, 300, err, sizeof(err)));
    CHECK_OK(cf_forecaster_fit(c, y, 300, err, sizeof(err)));
    CHECK_OK(cf_forecaster_predict(a, fa, 3));
    CHECK_OK(cf_forecaster_predict(b, fb, 3));
    CHECK_OK(cf_forecaster_predict(c, fc, 3));
    CHECK(memcmp(fa, fb, sizeof(fa)) == 0);
    CHECK(memcmp(a->rnn->p, b->rnn->p, a->rnn->nparams * sizeof(double)) == 0);
    CHECK(memcmp(a->rnn->p, c->rnn->p, a->rnn->nparams * sizeof(double)) != 0);
    cf_forecaster_destroy(a);
    cf_forecaster_destroy(b);
    cf_forecaster_destroy(c);
}

static void test_lstm_learns(void)
{
    /* On a smooth periodic series the trained LSTM must beat the last value clearly, and
     * its direct multi-step forecast must be sane. */
    enum { N = 400, TEST = 60 };
    double y[N];
    periodic(y, N, 12, 20, 3);
    cf_forecast_opts o = small_lstm();
    char err[256];
    cf_forecaster *l = NULL, *last = NULL;
    REQUIRE(cf_forecaster_create(&l, "lstm", &o, err, sizeof(err)) == CF_OK);
    REQUIRE(cf_forecaster_create(&last, "last", &o, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(l, y, N - TEST, err, sizeof(err)));
    CHECK_OK(cf_forecaster_fit(last, y, N - TEST, err, sizeof(err)));
    cf_forecast_score sl, sn;
    CHECK_OK(cf_forecast_walk(l, y, N, TEST, 1, NULL, &sl));
    CHECK_OK(cf_forecast_walk(last, y, N, TEST, 1, NULL, &sn));
    fprintf(stderr, "lstm smape %.2f, last %.2f\n", sl.smape, sn.smape);
    CHECK(sl.smape < 0.5 * sn.smape);
    double f[30];
    CHECK_OK(cf_forecaster_predict(l, f, 30)); /* beyond H: fed back */
    for (int k = 0; k < 30; k++) {
        CHECK(f[k] >= 0 && f[k] < 5000);
    }
    cf_forecaster_destroy(l);
    cf_forecaster_destroy(last);
}

static void test_lstm_too_short(void)
{
    double y[20] = {0};
    cf_forecast_opts o = small_lstm();
    char err[256];
    cf_forecaster *l = NULL;
    REQUIRE(cf_forecaster_create(&l, "lstm", &o, err, sizeof(err)) == CF_OK);
    CHECK(cf_forecaster_fit(l, y, 16, err, sizeof(err)) == CF_E_INVAL);
    CHECK(contains(err, "too few"));
    double f[1];
    CHECK(cf_forecaster_predict(l, f, 1) == CF_E_STATE);
    cf_forecaster_destroy(l);
    y[3] = -1;
    REQUIRE(cf_forecaster_create(&l, "last", &o, err, sizeof(err)) == CF_OK);
    CHECK(cf_forecaster_fit(l, y, 20, err, sizeof(err)) == CF_E_INVAL);
    cf_forecaster_destroy(l);
    CHECK(cf_forecaster_create(&l, "arima", &o, err, sizeof(err)) == CF_E_INVAL);
    o.layers = 3;
    CHECK(cf_forecaster_create(&l, "lstm", &o, err, sizeof(err)) == CF_E_INVAL);
}

static void test_baselines(void)
{
    enum { N = 240 };
    double y[N];
    char err[256];
    periodic(y, N, 24, 0, 1);
    cf_forecaster *f = NULL;
    double out[30];
    /* seasonal naive on an exact season: exact, and the season is found */
    REQUIRE(cf_forecaster_create(&f, "seasonal", NULL, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(f, y, N, err, sizeof(err)));
    CHECK_EQ(cf_forecaster_opts(f)->season, 24);
    CHECK_OK(cf_forecaster_predict(f, out, 30));
    for (int k = 0; k < 30; k++) {
        CHECK(fabs(out[k] - y[(N + k) % 24]) < 1e-9);
    }
    cf_forecaster_destroy(f);
    /* Holt-Winters on season + linear trend: near exact */
    double z[N];
    for (int i = 0; i < N; i++) {
        z[i] = y[i] + 5.0 * i;
    }
    REQUIRE(cf_forecaster_create(&f, "hw", NULL, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(f, z, N, err, sizeof(err)));
    CHECK_OK(cf_forecaster_predict(f, out, 24));
    for (int k = 0; k < 24; k++) {
        double want = y[(N + k) % 24] + 5.0 * (N + k);
        CHECK(fabs(out[k] - want) < 0.02 * want);
    }
    cf_forecaster_describe(f, err, sizeof(err));
    CHECK(contains(err, "season=24"));
    cf_forecaster_destroy(f);
    /* moving average: k fitted; on a constant-plus-alternation series the mean of an even
     * window is exact */
    for (int i = 0; i < N; i++) {
        z[i] = 100 + (i % 2 ? 10 : -10);
    }
    REQUIRE(cf_forecaster_create(&f, "ma", NULL, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(f, z, N, err, sizeof(err)));
    CHECK_OK(cf_forecaster_predict(f, out, 1));
    CHECK(fabs(out[0] - 100) < 1e-9);
    cf_forecaster_destroy(f);
    /* last value and walk-forward semantics: the forecast of y[t] h ahead is y[t-h] */
    REQUIRE(cf_forecaster_create(&f, "last", NULL, err, sizeof(err)) == CF_OK);
    CHECK_OK(cf_forecaster_fit(f, y, N - 20, err, sizeof(err)));
    double pred[20];
    cf_forecast_score s;
    CHECK_OK(cf_forecast_walk(f, y, N, 20, 3, pred, &s));
    for (int i = 0; i < 20; i++) {
        CHECK(pred[i] == y[N - 20 + i - 3]);
    }
    CHECK(cf_forecast_walk(f, y, N, N, 1, pred, &s) == CF_E_INVAL);
    cf_forecaster_destroy(f);
    /* no season in white noise */
    cf__rng r = {9};
    for (int i = 0; i < N; i++) {
        z[i] = cf__rng_unit(&r);
    }
    CHECK_EQ(cf_forecast_detect_season(z, N, 80), 0);
}

static void test_scores(void)
{
    double a[4] = {0, 10, 10, 0}, f[4] = {0, 10, 30, 5};
    cf_forecast_score s;
    cf_forecast_score_of(a, f, 4, &s);
    /* smape terms: 0 (0/0), 0, 2*20/40 = 1, 2*5/5 = 2 -> mean 0.75 = 75% */
    CHECK(fabs(s.smape - 75) < 1e-9);
    CHECK(fabs(s.mae - 25.0 / 4) < 1e-9);
    CHECK(fabs(s.rmse - sqrt(425.0 / 4)) < 1e-9);
}

static void test_model_file(void)
{
    const char *dir = cf_test_tmpdir();
    char path[512], err[256];
    snprintf(path, sizeof(path), "%s/m.bin", dir);
    double y[300];
    periodic(y, 300, 12, 30, 5);
    const char *models[] = {"lstm", "hw", "ma", "seasonal", "last"};
    for (size_t mi = 0; mi < 5; mi++) {
        cf_forecast_opts o = small_lstm();
        o.epochs_max = 3;
        cf_forecaster *f = NULL, *g = NULL;
        REQUIRE(cf_forecaster_create(&f, models[mi], &o, err, sizeof(err)) == CF_OK);
        CHECK_OK(cf_forecaster_fit(f, y, 250, err, sizeof(err)));
        CHECK_OK(cf_forecaster_save(f, path, err, sizeof(err)));
        REQUIRE(cf_forecaster_load(&g, path, err, sizeof(err)) == CF_OK);
        CHECK_STR(cf_forecaster_model(g), models[mi]);
        /* the loaded model, fed the same history, forecasts the same */
        for (int i = 0; i < 250; i++) {
            cf_forecaster_observe(g, y[i]);
        }
        double a[4], b[4];
        CHECK_OK(cf_forecaster_predict(f, a, 4));
        CHECK_OK(cf_forecaster_predict(g, b, 4));
        CHECK(memcmp(a, b, sizeof(a)) == 0);
        cf_forecaster_destroy(g);
        cf_forecaster_destroy(f);
    }
    /* one flipped bit anywhere, or a truncation, is caught */
    size_t len = 0;
    char *buf = cf_test_slurp(path, &len);
    REQUIRE(buf != NULL && len > 40);
    for (size_t at = 0; at < len; at += len / 7 + 1) {
        buf[at] ^= 0x10;
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        buf[at] ^= 0x10;
        cf_forecaster *g = NULL;
        cf_err e = cf_forecaster_load(&g, path, err, sizeof(err));
        CHECK(e == CF_E_CORRUPT);
        cf_forecaster_destroy(g);
    }
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len - 5, f);
    fclose(f);
    cf_forecaster *g = NULL;
    CHECK(cf_forecaster_load(&g, path, err, sizeof(err)) == CF_E_CORRUPT);
    free(buf);
    unlink(path);
    rmdir(dir);
}

/* ---- policies ------------------------------------------------------------------------- */

static cf_scale_obs obs_at(double t, double arrived, double processed, double busy, uint32_t ready)
{
    cf_scale_obs o = {t, 10, arrived, processed, busy, 0, 1, ready, 0, 0};
    return o;
}

static void test_policy_ds2(void)
{
    cf_policy_opts po;
    cf_policy_opts_default(&po);
    po.stabilization_s = 0;
    po.down_delay_s = 30;
    char err[256];
    cf_policy *p = NULL;
    REQUIRE(cf_policy_create(&p, "ds2", &po, NULL, err, sizeof(err)) == CF_OK);
    cf_scale_decision d;
    /* 4 workers, each busy 5 s of 10 processing 5,000 events: 1,000 events per busy second.
     * Arrivals 70,000 per 10 s = 7,000/s: 7,000 / (1,000 x 0.7) = 10 workers. */
    cf_scale_obs o = obs_at(10, 70000, 20000, 20, 4);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 10);
    CHECK(fabs(d.worker_rate - 1000) < 1e-9);
    /* a surge beyond max_up_factor (4) x 10 is capped at 40 */
    o = obs_at(20, 1e6, 20000, 20, 10);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 40);
    /* less load: waits down_delay_s, then goes to the highest size wanted meanwhile, and
     * never below max_down_factor (0.5) of the size */
    o = obs_at(30, 7000, 20000, 20, 40);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 40);
    o = obs_at(40, 14000, 20000, 20, 40);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 40);
    o = obs_at(60, 7000, 20000, 20, 40);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 20);
    cf_policy_destroy(p);
    po.max_workers = 0;
    CHECK(cf_policy_create(&p, "ds2", &po, NULL, err, sizeof(err)) == CF_E_INVAL);
    CHECK(cf_policy_create(&p, "magic", NULL, NULL, err, sizeof(err)) == CF_E_INVAL);
    CHECK(cf_policy_create(&p, "predictive", NULL, NULL, err, sizeof(err)) == CF_E_INVAL);
}

static void test_policy_reactive(void)
{
    cf_policy_opts po;
    cf_policy_opts_default(&po);
    po.cooldown_s = 25;
    char err[256];
    cf_policy *p = NULL;
    REQUIRE(cf_policy_create(&p, "reactive", &po, NULL, err, sizeof(err)) == CF_OK);
    cf_scale_decision d;
    /* saturated (util 1.0): grows by 1 / 0.6 */
    cf_scale_obs o = obs_at(10, 1e5, 1e4, 60, 6);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 10);
    /* cooldown: no change for 25 s even when idle */
    o = obs_at(20, 0, 0, 0, 10);
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 10);
    o = obs_at(40, 100, 100, 10, 10); /* util 0.1 */
    cf_policy_decide(p, &o, &d);
    CHECK_EQ(d.workers, 2);
    cf_policy_destroy(p);
}

static void test_policy_predictive(void)
{
    /* A periodic burst: 1,000 per interval, then 10,000 every 10th. Seasonal naive knows it;
     * the predictive policy provisions for the burst before it arrives (lead 2 intervals),
     * ds2 only after. */
    enum { N = 200 };
    double y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 10 == 9 ? 10000 : 1000;
    }
    char err[256];
    cf_forecaster *fc = NULL;
    REQUIRE(cf_forecaster_create(&fc, "seasonal", NULL, err, sizeof(err)) == CF_OK);
    REQUIRE(cf_forecaster_fit(fc, y, 100, err, sizeof(err)) == CF_OK);
    cf_policy_opts po;
    cf_policy_opts_default(&po);
    po.lead_s = 20;
    po.horizon = 1;
    po.down_delay_s = 0;
    po.down_hysteresis = 0;
    cf_policy *p = NULL;
    REQUIRE(cf_policy_create(&p, "predictive", &po, fc, err, sizeof(err)) == CF_OK);
    cf_scale_decision d;
    uint32_t before_burst = 0, calm = 0;
    for (int i = 100; i < 120; i++) {
        /* 1,000 events per busy second per worker */
        cf_scale_obs o = obs_at(10.0 * (i + 1), y[i], y[i], y[i] / 1000, 20);
        cf_policy_decide(p, &o, &d);
        if (i == 116) {
            before_burst = d.workers; /* decided 3 intervals before 119's burst */
        }
        if (i == 113) {
            calm = d.workers;
        }
    }
    /* burst: 10,000 per 10 s = 1,000/s; / (1,000 x 0.7) = 2 workers; calm: 100/s -> 1 */
    CHECK_EQ(before_burst, 2);
    CHECK_EQ(calm, 1);
    cf_policy_destroy(p);
    cf_forecaster_destroy(fc);
}

/* ---- simulator ------------------------------------------------------------------------ */

typedef struct {
    int ticks;
    double max_backlog;
} tick_acc;

static void on_tick(void *opaque, const cf_sim_tick *t)
{
    tick_acc *a = opaque;
    a->ticks++;
    if (t->backlog > a->max_backlog) {
        a->max_backlog = t->backlog;
    }
}

static void test_sim_mdc(void)
{
    /* Steady Poisson load on c workers with deterministic service (batch 1, no batch cost):
     * the mean wait must match the M/D/c formula. */
    struct {
        unsigned c;
        double rho;
    } cases[] = {{1, 0.7}, {4, 0.8}, {16, 0.9}};
    for (size_t k = 0; k < 3; k++) {
        double mu = 1000, lambda = cases[k].rho * cases[k].c * mu;
        enum { N = 100 };
        double counts[N];
        for (int i = 0; i < N; i++) {
            counts[i] = lambda;
        }
        cf_sim_opts so;
        cf_sim_opts_default(&so);
        so.worker_rate = mu;
        so.batch_cost_s = 0;
        so.batch_max = 1;
        so.initial_workers = cases[k].c;
        so.seed = 11 + k;
        cf_policy_opts po;
        cf_policy_opts_default(&po);
        po.static_workers = cases[k].c;
        cf_policy *p = NULL;
        char err[256];
        REQUIRE(cf_policy_create(&p, "static", &po, NULL, err, sizeof(err)) == CF_OK);
        cf_sim_result r;
        tick_acc acc = {0, 0};
        REQUIRE(cf_sim_run(counts, N, 1.0, &so, p, on_tick, &acc, &r, err, sizeof(err)) == CF_OK);
        double wait = r.mean_ms / 1e3 - 1.0 / mu;
        double want = cf_sim_mdc_wait_s(lambda, mu, cases[k].c);
        fprintf(stderr, "c=%u rho=%.1f: simulated wait %.4f ms, M/D/c %.4f ms, %llu events\n",
                cases[k].c, cases[k].rho, wait * 1e3, want * 1e3, (unsigned long long)r.events);
        CHECK(fabs(wait - want) < 0.1 * want);
        CHECK_EQ(acc.ticks, N);
        CHECK_EQ(r.rescales, 0);
        CHECK(fabs(r.worker_s - cases[k].c * N) < 1e-6);
        CHECK(fabs((double)r.events - lambda * N) < 5 * sqrt(lambda * N));
        cf_policy_destroy(p);
    }
    /* Erlang-C sanity: M/D/1 is half of M/M/1, rho/(2 mu (1 - rho)) */
    CHECK(fabs(cf_sim_mdc_wait_s(0.5, 1, 1) - 0.5) < 1e-12);
}

static void test_sim_accounting(void)
{
    /* Evenly spaced arrivals keep counts exact; an underprovisioned static pool violates
     * the SLO, and a generous one does not; the run is deterministic. */
    enum { N = 60 };
    double counts[N];
    for (int i = 0; i < N; i++) {
        counts[i] = i >= 20 && i < 30 ? 30000 : 5000; /* per 10 s */
    }
    cf_sim_opts so;
    cf_sim_opts_default(&so);
    so.poisson = false;
    so.worker_rate = 1000;
    so.startup_s = 5;
    so.initial_workers = 2;
    char err[256];
    double viol[2];
    for (int big = 0; big <= 1; big++) {
        cf_policy_opts po;
        cf_policy_opts_default(&po);
        po.static_workers = big ? 6 : 2;
        cf_policy *p = NULL;
        REQUIRE(cf_policy_create(&p, "static", &po, NULL, err, sizeof(err)) == CF_OK);
        cf_sim_result r, r2;
        REQUIRE(cf_sim_run(counts, N, 10, &so, p, NULL, NULL, &r, err, sizeof(err)) == CF_OK);
        cf_policy_destroy(p);
        REQUIRE(cf_policy_create(&p, "static", &po, NULL, err, sizeof(err)) == CF_OK);
        REQUIRE(cf_sim_run(counts, N, 10, &so, p, NULL, NULL, &r2, err, sizeof(err)) == CF_OK);
        cf_policy_destroy(p);
        CHECK_EQ(r.events, 50 * 5000 + 10 * 30000);
        CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
        viol[big] = r.slo_violation_s;
        fprintf(stderr, "static %d: violation %.0f s, p99 %.1f ms, worker_s %.0f\n", big ? 6 : 2,
                r.slo_violation_s, r.p99_ms, r.worker_s);
    }
    CHECK(viol[0] > 100); /* 3,000/s against 2 workers for 100 s */
    CHECK(viol[1] == 0);
    /* bad options are refused with a message */
    so.batch_cost_s = 1;
    cf_policy *p = NULL;
    REQUIRE(cf_policy_create(&p, "static", NULL, NULL, err, sizeof(err)) == CF_OK);
    cf_sim_result r;
    CHECK(cf_sim_run(counts, N, 10, &so, p, NULL, NULL, &r, err, sizeof(err)) == CF_E_INVAL);
    CHECK(contains(err, "batch_cost_s"));
    cf_policy_destroy(p);
}

static void test_sim_predictive_ahead(void)
{
    /* Periodic bursts longer than the start-up delay: the predictive policy (seasonal naive)
     * starts workers before each burst and misses the SLO far less than reactive and ds2. */
    enum { N = 240, TRAIN = 120 };
    double y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 20 >= 15 ? 40000 : 8000; /* per 10 s: 4,000/s bursts over 800/s */
    }
    char err[256];
    cf_sim_opts so;
    cf_sim_opts_default(&so);
    so.worker_rate = 1000;
    so.startup_s = 20;
    so.initial_workers = 2;
    double viol[3], cost[3];
    const char *names[3] = {"reactive", "ds2", "predictive"};
    for (int k = 0; k < 3; k++) {
        cf_forecaster *fc = NULL;
        REQUIRE(cf_forecaster_create(&fc, "seasonal", NULL, err, sizeof(err)) == CF_OK);
        REQUIRE(cf_forecaster_fit(fc, y, TRAIN, err, sizeof(err)) == CF_OK);
        cf_policy_opts po;
        cf_policy_opts_default(&po);
        po.cooldown_s = 30;
        po.stabilization_s = 20;
        po.down_delay_s = 30;
        cf_policy *p = NULL;
        REQUIRE(cf_policy_create(&p, names[k], &po, fc, err, sizeof(err)) == CF_OK);
        cf_sim_result r;
        REQUIRE(cf_sim_run(y + TRAIN, N - TRAIN, 10, &so, p, NULL, NULL, &r, err, sizeof(err)) ==
                CF_OK);
        viol[k] = r.slo_violation_s;
        cost[k] = r.worker_s;
        fprintf(stderr, "%-10s violation %6.0f s  worker_s %6.0f  rescales %u  p99 %.0f ms\n",
                names[k], r.slo_violation_s, r.worker_s, r.rescales, r.p99_ms);
        cf_policy_destroy(p);
        cf_forecaster_destroy(fc);
    }
    CHECK(viol[2] < 0.5 * viol[0]);
    CHECK(viol[2] < 0.5 * viol[1]);
    CHECK(cost[2] < 2 * cost[1]);
}

static void test_alloc_failures(void)
{
    /* Failing the Nth allocation anywhere in parse, fit (lstm), save/load and a simulation
     * returns CF_E_NOMEM (or the parse error that carries it) and leaks nothing (ASan). */
    const char *csv = "ts,count\n1000,4\n1001,5\n1002,6\n1003,7\n1005,8\n";
    double y[120];
    periodic(y, 120, 12, 10, 3);
    const char *dir = cf_test_tmpdir();
    char path[512], err[256];
    snprintf(path, sizeof(path), "%s/m.bin", dir);
    int failures_seen = 0;
    for (long nth = 1; nth <= 40; nth++) {
        cf_trace *t = NULL;
        cf_forecaster *f = NULL, *g = NULL;
        cf_policy *p = NULL;
        cf_forecast_opts o = small_lstm();
        o.epochs_max = 2;
        cf_alloc_fail_after(nth);
        cf_err e = cf_trace_parse(&t, csv, strlen(csv), "t", 0, err, sizeof(err));
        if (e == CF_OK) {
            e = cf_forecaster_create(&f, "lstm", &o, err, sizeof(err));
        }
        if (e == CF_OK) {
            e = cf_forecaster_fit(f, y, 120, err, sizeof(err));
        }
        if (e == CF_OK) {
            e = cf_forecaster_save(f, path, err, sizeof(err));
        }
        if (e == CF_OK) {
            e = cf_forecaster_load(&g, path, err, sizeof(err));
        }
        if (e == CF_OK) {
            e = cf_policy_create(&p, "predictive", NULL, g, err, sizeof(err));
        }
        if (e == CF_OK) {
            cf_sim_opts so;
            cf_sim_opts_default(&so);
            so.startup_s = 1;
            cf_sim_result r;
            e = cf_sim_run(y, 20, 1, &so, p, NULL, NULL, &r, err, sizeof(err));
        }
        cf_alloc_fail_after(0);
        if (e != CF_OK) {
            failures_seen++;
            CHECK(e == CF_E_NOMEM);
        }
        cf_policy_destroy(p);
        cf_forecaster_destroy(g);
        cf_forecaster_destroy(f);
        cf_trace_destroy(t);
    }
    CHECK(failures_seen >= 10);
    unlink(path);
    rmdir(dir);
}

#include "cf_test_main.h"
