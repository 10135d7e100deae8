/*
 * Forecasters behind one interface: fit on a series, then observe true values one at a
 * time and forecast the next h from the history. The baselines are the honest yardstick
 * the LSTM has to beat (docs/autoscaling.md reports them side by side):
 *
 *   last      y(t+k) = y(t)
 *   seasonal  y(t+k) = y(t+k-m), one season m back (m configured or detected by
 *             autocorrelation on the training part; none detected: last value)
 *   ma        the mean of the last k values, k fitted on the training part (least squares
 *             over one-step forecasts, k in 2..48)
 *   hw        Holt-Winters, additive trend and season, alpha/beta/gamma fitted by grid
 *             search (least squares over one-step forecasts on the training part)
 *   lstm      src/scale/lstm.c
 *
 * History is a ring of the last hist_cap values (enough for the largest look-back of the
 * model); Holt-Winters keeps its level/trend/season state and updates it per observation.
 * Forecasts are clamped at 0: a negative arrival rate is never useful.
 *
 * Model files: "CFFCAST1", u32 format version, u32 model kind, the options, u32 integral
 * (1: forecasts below 0.5 are 0), u32 count and that many f64 parameters, then BLAKE2b-256
 * (libsodium) over all preceding bytes. Numbers are little-endian. Written to path.tmp, fsynced,
 * renamed.
 */
#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "scale_int.h"

#define FILE_MAGIC "CFFCAST1"
#define FILE_VERSION 1u
#define FILE_MAX_PARAMS 4000000u
#define SUM_BYTES 32u
#define MA_KS_N 11
static const uint32_t ma_ks[MA_KS_N] = {2, 3, 4, 6, 8, 12, 16, 24, 32, 40, 48};
#define SEASON_MAX 10000u
#define ACF_MIN 0.3

static const char *const model_names[] = {"last", "seasonal", "ma", "hw", "lstm"};
static const fc_kind model_kinds[] = {FC_LAST, FC_SEASONAL, FC_MA, FC_HW, FC_LSTM};
#define N_MODELS (sizeof(model_names) / sizeof(model_names[0]))

const char *const *cf_forecast_models(size_t *n)
{
    *n = N_MODELS;
    return model_names;
}

const char *cf_forecast_default_model(void)
{
    /* docs/autoscaling.md: Holt-Winters is the best or within a few percent of the best on
     * every trace measured; the LSTM misses the target on PaySim's sparse tail. */
    return "hw";
}

void cf_forecast_opts_default(cf_forecast_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->window = 24;
    o->horizon = 1;
    o->hidden = 16;
    o->layers = 1;
    o->season = 0;
    o->epochs_max = 60;
    o->patience = 8;
    o->batch = 32;
    o->epoch_max_samples = 2048;
    o->lr = 0.003;
    o->clip = 1.0;
    o->val_frac = 0.2;
    o->huber_delta = 0.1;
    o->seed = 1;
}

static cf_err check_opts(const cf_forecast_opts *o, char *errstr, size_t errstr_size)
{
    if (o->window < 2 || o->window > 512) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window %u outside 2..512", o->window);
    }
    if (o->horizon < 1 || o->horizon > 64) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "horizon %u outside 1..64", o->horizon);
    }
    if (o->hidden < 2 || o->hidden > 128) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "hidden %u outside 2..128", o->hidden);
    }
    if (o->layers < 1 || o->layers > 2) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "layers %u outside 1..2", o->layers);
    }
    if (o->season == 1 || o->season > SEASON_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "season %u: 0 (detect) or 2..%u points",
                          o->season, SEASON_MAX);
    }
    if (o->epochs_max < 1 || o->epochs_max > 100000 || o->patience < 1 || o->batch < 1 ||
        o->batch > 4096 || o->epoch_max_samples < 1) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "epochs 1..100000, patience >= 1, batch 1..4096, samples >= 1");
    }
    if (!(o->lr > 0 && o->lr < 1) || !(o->clip >= 0) || !(o->val_frac > 0 && o->val_frac < 0.9) ||
        !(o->huber_delta >= 0 && o->huber_delta <= 100)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "lr in (0, 1), clip >= 0, val_frac in (0, 0.9), huber_delta 0..100");
    }
    return CF_OK;
}

static size_t hist_need(const cf_forecaster *f)
{
    size_t need = 2;
    switch (f->kind) {
    case FC_SEASONAL:
    case FC_HW:
        need = 2 * (size_t)f->o.season + 2;
        break;
    case FC_MA:
        need = ma_ks[MA_KS_N - 1];
        break;
    case FC_LSTM:
        need = f->o.window;
        break;
    default:
        break;
    }
    return need < 2 ? 2 : need;
}

static cf_err alloc_state(cf_forecaster *f)
{
    size_t cap = hist_need(f);
    double *h = cf_calloc(cap, sizeof(double));
    double *s = cf_calloc(f->o.season > 0 ? f->o.season : 1, sizeof(double));
    if (h == NULL || s == NULL) {
        cf_free(h);
        cf_free(s);
        return CF_E_NOMEM;
    }
    cf_free(f->hist);
    cf_free(f->hw_season);
    f->hist = h;
    f->hist_cap = cap;
    f->hw_season = s;
    f->hist_n = 0;
    f->hw_ready = false;
    return CF_OK;
}

cf_err cf_forecaster_create(cf_forecaster **out, const char *model, const cf_forecast_opts *o,
                            char *errstr, size_t errstr_size)
{
    CF_ASSERT(out != NULL && model != NULL);
    cf_forecast_opts def;
    if (o == NULL) {
        cf_forecast_opts_default(&def);
        o = &def;
    }
    cf_err err = check_opts(o, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    size_t k = 0;
    while (k < N_MODELS && strcmp(model_names[k], model) != 0) {
        k++;
    }
    if (k == N_MODELS) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "unknown model '%s' (last, seasonal, ma, hw, lstm)", model);
    }
    cf_forecaster *f = cf_calloc(1, sizeof(*f));
    if (f == NULL) {
        return CF_E_NOMEM;
    }
    f->kind = model_kinds[k];
    f->o = *o;
    f->ma_k = ma_ks[0];
    err = alloc_state(f);
    if (err == CF_OK && f->kind == FC_LSTM) {
        err = cf__lstm_create(&f->rnn, o->window, o->horizon, o->hidden, o->layers);
    }
    if (err != CF_OK) {
        cf_forecaster_destroy(f);
        return err;
    }
    *out = f;
    return CF_OK;
}

void cf_forecaster_destroy(cf_forecaster *f)
{
    if (f == NULL) {
        return;
    }
    cf__lstm_destroy(f->rnn);
    cf_free(f->hist);
    cf_free(f->hw_season);
    cf_free(f);
}

const char *cf_forecaster_model(const cf_forecaster *f)
{
    for (size_t k = 0; k < N_MODELS; k++) {
        if (model_kinds[k] == f->kind) {
            return model_names[k];
        }
    }
    return "?";
}

const cf_forecast_opts *cf_forecaster_opts(const cf_forecaster *f)
{
    return &f->o;
}

/* ---- Holt-Winters -------------------------------------------------------------------------- */

typedef struct {
    double a, b, g;
    double level, trend;
    double *s; /* m entries */
    uint32_t m;
    uint64_t t; /* index of the next observation */
} hw_state;

/* Initialises from the first 2m values (m = 0: the first 2), as if they had been observed:
 * the next observation has index 2m. */
static void hw_init(hw_state *st, const double *y)
{
    uint32_t m = st->m;
    if (m == 0) {
        st->level = y[1];
        st->trend = y[1] - y[0];
        st->t = 2;
        return;
    }
    double s1 = 0, s2 = 0;
    for (uint32_t i = 0; i < m; i++) {
        s1 += y[i];
        s2 += y[m + i];
    }
    s1 /= m;
    s2 /= m;
    /* Each season's mean sits at its middle, (m - 1) / 2 steps from its start: the trend
     * is the slope between the two, the level is projected to the last point, and the
     * seasonal indices are the deviations from the trend line, averaged over both. */
    st->trend = (s2 - s1) / m;
    st->level = s2 + st->trend * (m - 1) / 2.0;
    for (uint32_t i = 0; i < m; i++) {
        double line = st->trend * ((double)i - (m - 1) / 2.0);
        st->s[i] = 0.5 * ((y[i] - s1 - line) + (y[m + i] - s2 - line));
    }
    st->t = 2 * (uint64_t)m;
}

static double hw_forecast(const hw_state *st, uint64_t k)
{
    double v = st->level + (double)k * st->trend;
    if (st->m > 0) {
        v += st->s[(st->t + k - 1) % st->m];
    }
    return v > 0 ? v : 0.0;
}

static void hw_update(hw_state *st, double y)
{
    double sold = st->m > 0 ? st->s[st->t % st->m] : 0.0;
    double lvl = st->a * (y - sold) + (1 - st->a) * (st->level + st->trend);
    st->trend = st->b * (lvl - st->level) + (1 - st->b) * st->trend;
    if (st->m > 0) {
        st->s[st->t % st->m] = st->g * (y - lvl) + (1 - st->g) * sold;
    }
    st->level = lvl;
    st->t++;
}

static size_t hw_init_len(uint32_t m)
{
    return m > 0 ? 2 * (size_t)m : 2;
}

/* Sum of squared one-step errors over y[init..n) for parameters a, b, g. */
static double hw_sse(const double *y, size_t n, uint32_t m, double a, double b, double g,
                     double *sbuf)
{
    hw_state st = {a, b, g, 0, 0, sbuf, m, 0};
    hw_init(&st, y);
    double sse = 0;
    for (size_t i = hw_init_len(m); i < n; i++) {
        double e = hw_forecast(&st, 1) - y[i];
        sse += e * e;
        hw_update(&st, y[i]);
    }
    return sse;
}

static cf_err hw_fit(cf_forecaster *f, const double *y, size_t n, char *errstr, size_t errstr_size)
{
    static const double as[] = {0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99};
    static const double bs[] = {0, 0.01, 0.03, 0.1, 0.2};
    static const double gs[] = {0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9};
    uint32_t m = f->o.season;
    if (n < hw_init_len(m) + 4) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "hw: %zu points, need at least %zu (two seasons of %u and 4 more)", n,
                          hw_init_len(m) + 4, m);
    }
    double best = INFINITY;
    f->hw_alpha = 0.5;
    f->hw_beta = 0;
    f->hw_gamma = 0.1;
    for (size_t ia = 0; ia < sizeof(as) / sizeof(as[0]); ia++) {
        for (size_t ib = 0; ib < sizeof(bs) / sizeof(bs[0]); ib++) {
            for (size_t ig = 0; ig < (m > 0 ? sizeof(gs) / sizeof(gs[0]) : 1); ig++) {
                double sse = hw_sse(y, n, m, as[ia], bs[ib], gs[ig], f->hw_season);
                if (sse < best) {
                    best = sse;
                    f->hw_alpha = as[ia];
                    f->hw_beta = bs[ib];
                    f->hw_gamma = m > 0 ? gs[ig] : 0;
                }
            }
        }
    }
    return CF_OK;
}

/* Rebuilds the Holt-Winters state from the history ring once it holds the init span. */
static void hw_observe(cf_forecaster *f, double y)
{
    uint32_t m = f->o.season;
    hw_state st = {f->hw_alpha, f->hw_beta,   f->hw_gamma, f->hw_level,
                   f->hw_trend, f->hw_season, m,           f->hist_n - 1};
    if (f->hw_ready) {
        hw_update(&st, y);
        f->hw_level = st.level;
        f->hw_trend = st.trend;
        return;
    }
    size_t L = hw_init_len(m);
    if (f->hist_n < L) {
        return;
    }
    /* hist_cap >= L and the history was reset before these L values, so the ring holds them
     * in order from index 0. */
    CF_ASSERT(f->hist_n == L && f->hist_cap >= L);
    hw_init(&st, f->hist);
    f->hw_level = st.level;
    f->hw_trend = st.trend;
    f->hw_ready = true;
}

/* ---- fit / observe / predict --------------------------------------------------------------- */

uint32_t cf_forecast_detect_season(const double *y, size_t n, uint32_t max_lag)
{
    if (n < 8) {
        return 0;
    }
    if (max_lag > n / 2) {
        max_lag = (uint32_t)(n / 2);
    }
    if (max_lag > SEASON_MAX) {
        max_lag = SEASON_MAX;
    }
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) {
        mean += y[i];
    }
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        var += (y[i] - mean) * (y[i] - mean);
    }
    if (!(var > 0) || max_lag < 3) {
        return 0;
    }
    double prev2 = 1, prev = 1;
    uint32_t best_lag = 0;
    double best = ACF_MIN;
    for (uint32_t lag = 1; lag <= max_lag + 1 && lag < n; lag++) {
        double c = 0;
        for (size_t i = lag; i < n; i++) {
            c += (y[i] - mean) * (y[i - lag] - mean);
        }
        double acf = c / var;
        /* prev is the acf at lag - 1: a local maximum when above both neighbours. */
        if (lag >= 3 && prev > prev2 && prev >= acf && prev > best) {
            best = prev;
            best_lag = lag - 1;
        }
        prev2 = prev;
        prev = acf;
    }
    return best_lag >= 2 ? best_lag : 0;
}

cf_err cf_forecaster_fit(cf_forecaster *f, const double *y, size_t n, char *errstr,
                         size_t errstr_size)
{
    CF_ASSERT(f != NULL && (y != NULL || n == 0));
    cf_err err = CF_OK;
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] >= 0) || !isfinite(y[i])) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "value %zu is negative or not finite", i);
        }
    }
    if (n < 2) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%zu points: need at least 2", n);
    }
    f->integral = true;
    for (size_t i = 0; i < n && f->integral; i++) {
        f->integral = y[i] == floor(y[i]);
    }
    if ((f->kind == FC_SEASONAL || f->kind == FC_HW) && f->o.season == 0) {
        /* Detect on the training part only; look at most a third of it back. */
        f->o.season =
            cf_forecast_detect_season(y, n, (uint32_t)(n / 3 < SEASON_MAX ? n / 3 : SEASON_MAX));
        err = alloc_state(f);
        if (err != CF_OK) {
            return err;
        }
    }
    switch (f->kind) {
    case FC_MA: {
        double best = INFINITY;
        for (size_t i = 0; i < MA_KS_N && ma_ks[i] < n; i++) {
            uint32_t k = ma_ks[i];
            double sum = 0, sse = 0;
            for (size_t t = 0; t < n; t++) {
                if (t >= k) {
                    double e = sum / k - y[t];
                    sse += e * e;
                    sum -= y[t - k];
                }
                sum += y[t];
            }
            /* Compare on the same points: those after the longest k tried. */
            sse /= (double)(n - k);
            if (sse < best) {
                best = sse;
                f->ma_k = k;
            }
        }
        break;
    }
    case FC_HW:
        err = hw_fit(f, y, n, errstr, errstr_size);
        break;
    case FC_LSTM:
        err = cf__lstm_train(f->rnn, &f->o, y, n, errstr, errstr_size);
        break;
    default:
        break;
    }
    if (err != CF_OK) {
        return err;
    }
    f->fitted = true;
    cf_forecaster_reset(f);
    for (size_t i = 0; i < n; i++) {
        cf_forecaster_observe(f, y[i]);
    }
    return CF_OK;
}

void cf_forecaster_reset(cf_forecaster *f)
{
    f->hist_n = 0;
    f->hw_ready = false;
    f->hw_level = 0;
    f->hw_trend = 0;
}

void cf_forecaster_observe(cf_forecaster *f, double y)
{
    if (!(y >= 0) || !isfinite(y)) {
        y = 0; /* a missing or broken measurement counts as no traffic */
    }
    f->hist[f->hist_n % f->hist_cap] = y;
    f->hist_n++;
    if (f->kind == FC_HW && f->fitted) {
        hw_observe(f, y);
    }
}

cf_err cf_forecaster_predict(cf_forecaster *f, double *out, size_t h)
{
    CF_ASSERT(f != NULL && out != NULL && h >= 1);
    if (!f->fitted) {
        return CF_E_STATE;
    }
    size_t have = f->hist_n < f->hist_cap ? (size_t)f->hist_n : f->hist_cap;
    double last = have > 0 ? cf__fc_back(f, 0) : 0.0;
    switch (f->kind) {
    case FC_LAST:
        for (size_t k = 0; k < h; k++) {
            out[k] = last;
        }
        break;
    case FC_SEASONAL: {
        uint32_t m = f->o.season;
        for (size_t k = 0; k < h; k++) {
            if (m >= 2 && have >= m) {
                /* y(t+1+k) = y(t+1+k - m * ceil((k+1)/m)) */
                size_t back = m - 1 - k % m;
                out[k] = cf__fc_back(f, back);
            } else {
                out[k] = last;
            }
        }
        break;
    }
    case FC_MA: {
        size_t k = f->ma_k < have ? f->ma_k : have;
        double s = 0;
        for (size_t i = 0; i < k; i++) {
            s += cf__fc_back(f, i);
        }
        double v = k > 0 ? s / (double)k : 0.0;
        for (size_t i = 0; i < h; i++) {
            out[i] = v;
        }
        break;
    }
    case FC_HW:
        if (!f->hw_ready) {
            for (size_t k = 0; k < h; k++) {
                out[k] = last;
            }
            break;
        }
        {
            hw_state st = {f->hw_alpha, f->hw_beta,   f->hw_gamma, f->hw_level,
                           f->hw_trend, f->hw_season, f->o.season, f->hist_n};
            for (size_t k = 0; k < h; k++) {
                out[k] = hw_forecast(&st, k + 1);
            }
        }
        break;
    case FC_LSTM: {
        double win[512];
        size_t w = have < f->o.window ? have : f->o.window;
        for (size_t i = 0; i < w; i++) {
            win[i] = cf__fc_back(f, w - 1 - i);
        }
        cf__lstm_predict(f->rnn, win, w, out, h);
        break;
    }
    }
    for (size_t k = 0; k < h; k++) {
        if (!(out[k] > 0) || (f->integral && out[k] < 0.5)) {
            out[k] = 0;
        }
    }
    return CF_OK;
}

void cf_forecaster_describe(const cf_forecaster *f, char *buf, size_t n)
{
    switch (f->kind) {
    case FC_LAST:
        snprintf(buf, n, "last");
        break;
    case FC_SEASONAL:
        if (f->o.season >= 2) {
            snprintf(buf, n, "seasonal season=%u", f->o.season);
        } else {
            snprintf(buf, n, "seasonal season=none (no season found: last value)");
        }
        break;
    case FC_MA:
        snprintf(buf, n, "ma k=%u", f->ma_k);
        break;
    case FC_HW:
        snprintf(buf, n, "hw alpha=%g beta=%g gamma=%g season=%u", f->hw_alpha, f->hw_beta,
                 f->hw_gamma, f->o.season);
        break;
    case FC_LSTM:
        snprintf(buf, n, "lstm window=%u horizon=%u hidden=%u layers=%u params=%zu seed=%llu",
                 f->o.window, f->o.horizon, f->o.hidden, f->o.layers,
                 f->rnn != NULL ? f->rnn->nparams : 0, (unsigned long long)f->o.seed);
        break;
    }
}

/* ---- scores and walk-forward --------------------------------------------------------------- */

void cf_forecast_score_of(const double *actual, const double *forecast, size_t n,
                          cf_forecast_score *s)
{
    double sm = 0, ae = 0, se = 0;
    for (size_t i = 0; i < n; i++) {
        double a = actual[i], f = forecast[i];
        double d = fabs(f - a);
        double den = fabs(a) + fabs(f);
        sm += den > 0 ? 2 * d / den : 0.0;
        ae += d;
        se += d * d;
    }
    s->n = n;
    s->smape = n > 0 ? 100.0 * sm / (double)n : 0.0;
    s->mae = n > 0 ? ae / (double)n : 0.0;
    s->rmse = n > 0 ? sqrt(se / (double)n) : 0.0;
}

cf_err cf_forecast_walk(cf_forecaster *f, const double *y, size_t n, size_t test_points, uint32_t h,
                        double *pred, cf_forecast_score *score)
{
    CF_ASSERT(f != NULL && y != NULL && score != NULL);
    if (h < 1 || test_points < 1 || test_points + h > n || h > 4096) {
        return CF_E_INVAL;
    }
    double *p = pred;
    double *own = NULL;
    double fc[4096];
    if (p == NULL) {
        own = cf_malloc(test_points * sizeof(double));
        if (own == NULL) {
            return CF_E_NOMEM;
        }
        p = own;
    }
    size_t first = n - test_points;
    /* The forecast for y[t] comes from the history y[0..t-h]: observe up to t-h, forecast
     * h ahead, keep the h-th value. */
    cf_forecaster_reset(f);
    for (size_t i = 0; i + h < first + 1; i++) {
        cf_forecaster_observe(f, y[i]);
    }
    cf_err err = CF_OK;
    for (size_t t = first; t < n; t++) {
        err = cf_forecaster_predict(f, fc, h);
        if (err != CF_OK) {
            break;
        }
        p[t - first] = fc[h - 1];
        cf_forecaster_observe(f, y[t + 1 - h]);
    }
    if (err == CF_OK) {
        cf_forecast_score_of(y + first, p, test_points, score);
    }
    cf_free(own);
    return err;
}

/* ---- model files --------------------------------------------------------------------------- */

typedef struct {
    unsigned char *b;
    size_t n, cap;
    bool oom;
} wbuf;

static void put(wbuf *w, const void *p, size_t n)
{
    if (w->oom) {
        return;
    }
    if (w->n + n > w->cap) {
        size_t nc = w->cap == 0 ? 4096 : w->cap;
        while (nc < w->n + n) {
            nc *= 2;
        }
        unsigned char *nb = cf_realloc(w->b, nc);
        if (nb == NULL) {
            w->oom = true;
            return;
        }
        w->b = nb;
        w->cap = nc;
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void put_u32(wbuf *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(w, b, 4);
}

static void put_u64(wbuf *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_f64(wbuf *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(w, v);
}

typedef struct {
    const unsigned char *b;
    size_t n, off;
    bool bad;
} rbuf;

static uint32_t get_u32(rbuf *r)
{
    if (r->off + 4 > r->n) {
        r->bad = true;
        return 0;
    }
    const unsigned char *p = r->b + r->off;
    r->off += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(rbuf *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}

static double get_f64(rbuf *r)
{
    uint64_t v = get_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static void put_opts(wbuf *w, const cf_forecast_opts *o)
{
    put_u32(w, o->window);
    put_u32(w, o->horizon);
    put_u32(w, o->hidden);
    put_u32(w, o->layers);
    put_u32(w, o->season);
    put_u32(w, o->epochs_max);
    put_u32(w, o->patience);
    put_u32(w, o->batch);
    put_u32(w, o->epoch_max_samples);
    put_f64(w, o->lr);
    put_f64(w, o->clip);
    put_f64(w, o->val_frac);
    put_f64(w, o->huber_delta);
    put_u64(w, o->seed);
}

static void get_opts(rbuf *r, cf_forecast_opts *o)
{
    o->window = get_u32(r);
    o->horizon = get_u32(r);
    o->hidden = get_u32(r);
    o->layers = get_u32(r);
    o->season = get_u32(r);
    o->epochs_max = get_u32(r);
    o->patience = get_u32(r);
    o->batch = get_u32(r);
    o->epoch_max_samples = get_u32(r);
    o->lr = get_f64(r);
    o->clip = get_f64(r);
    o->val_frac = get_f64(r);
    o->huber_delta = get_f64(r);
    o->seed = get_u64(r);
}

cf_err cf_forecaster_save(const cf_forecaster *f, const char *path, char *errstr,
                          size_t errstr_size)
{
    CF_ASSERT(f != NULL && path != NULL);
    if (!f->fitted) {
        return cf_err_set(CF_E_STATE, errstr, errstr_size, "model not fitted");
    }
    wbuf w = {0};
    put(&w, FILE_MAGIC, 8);
    put_u32(&w, FILE_VERSION);
    put_u32(&w, (uint32_t)f->kind);
    put_opts(&w, &f->o);
    put_u32(&w, f->integral ? 1u : 0u);
    switch (f->kind) {
    case FC_MA:
        put_u32(&w, 1);
        put_f64(&w, f->ma_k);
        break;
    case FC_HW:
        put_u32(&w, 3);
        put_f64(&w, f->hw_alpha);
        put_f64(&w, f->hw_beta);
        put_f64(&w, f->hw_gamma);
        break;
    case FC_LSTM:
        put_u32(&w, (uint32_t)(f->rnn->nparams + 2));
        put_f64(&w, f->rnn->mu);
        put_f64(&w, f->rnn->sd);
        for (size_t i = 0; i < f->rnn->nparams; i++) {
            put_f64(&w, f->rnn->p[i]);
        }
        break;
    default:
        put_u32(&w, 0);
        break;
    }
    unsigned char sum[SUM_BYTES];
    if (!w.oom) {
        crypto_generichash(sum, sizeof(sum), w.b, w.n, NULL, 0);
        put(&w, sum, sizeof(sum));
    }
    if (w.oom) {
        cf_free(w.b);
        return CF_E_NOMEM;
    }
    cf_err err = CF_OK;
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        cf_free(w.b);
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "path too long");
    }
    FILE *fp = fopen(tmp, "wb");
    if (fp == NULL) {
        err = cf_err_errno(errno, errstr, errstr_size, "cannot create %s", tmp);
        cf_free(w.b);
        return err;
    }
    bool ok = fwrite(w.b, 1, w.n, fp) == w.n && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int e = errno;
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        e = ok ? errno : e;
        unlink(tmp);
        err = cf_err_errno(e, errstr, errstr_size, "cannot write %s", path);
    }
    cf_free(w.b);
    return err;
}

cf_err cf_forecaster_load(cf_forecaster **out, const char *path, char *errstr, size_t errstr_size)
{
    CF_ASSERT(out != NULL && path != NULL);
    cf_err err = CF_OK;
    unsigned char *buf = NULL;
    cf_forecaster *f = NULL;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot open %s", path);
    }
    size_t cap = 8 + 8 + 80 + 4 + ((size_t)FILE_MAX_PARAMS + 2) * 8 + SUM_BYTES + 1;
    size_t n = 0;
    buf = cf_malloc(1 << 16);
    size_t bcap = 1 << 16;
    if (buf == NULL) {
        err = CF_E_NOMEM;
        goto out;
    }
    for (;;) {
        if (n == bcap) {
            if (bcap >= cap) {
                err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "%s: too large", path);
                goto out;
            }
            unsigned char *nb = cf_realloc(buf, bcap * 2);
            if (nb == NULL) {
                err = CF_E_NOMEM;
                goto out;
            }
            buf = nb;
            bcap *= 2;
        }
        size_t got = fread(buf + n, 1, bcap - n, fp);
        n += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(fp)) {
        err = cf_err_set(CF_E_IO, errstr, errstr_size, "%s: read error", path);
        goto out;
    }
    if (n < 8 + SUM_BYTES || memcmp(buf, FILE_MAGIC, 8) != 0) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                         "%s: not a confide forecast model (bad magic)", path);
        goto out;
    }
    unsigned char sum[SUM_BYTES];
    crypto_generichash(sum, sizeof(sum), buf, n - SUM_BYTES, NULL, 0);
    if (sodium_memcmp(sum, buf + n - SUM_BYTES, SUM_BYTES) != 0) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                         "%s: checksum mismatch (file damaged or truncated)", path);
        goto out;
    }
    rbuf r = {buf, n - SUM_BYTES, 8, false};
    uint32_t ver = get_u32(&r);
    uint32_t kind = get_u32(&r);
    if (ver != FILE_VERSION) {
        err =
            cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                       "%s: model format version %u, this build reads %u", path, ver, FILE_VERSION);
        goto out;
    }
    cf_forecast_opts o;
    get_opts(&r, &o);
    uint32_t integral = get_u32(&r);
    uint32_t np = get_u32(&r);
    size_t k = 0;
    while (k < N_MODELS && (uint32_t)model_kinds[k] != kind) {
        k++;
    }
    if (r.bad || k == N_MODELS || integral > 1 || np > FILE_MAX_PARAMS ||
        r.off + (size_t)np * 8 != r.n) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "%s: malformed model", path);
        goto out;
    }
    err = cf_forecaster_create(&f, model_names[k], &o, errstr, errstr_size);
    if (err != CF_OK) {
        err = err == CF_E_NOMEM ? err : CF_E_CORRUPT; /* options no build accepts */
        goto out;
    }
    bool ok = true;
    switch (f->kind) {
    case FC_MA: {
        double kk = np == 1 ? get_f64(&r) : 0;
        ok = np == 1 && kk >= 1 && kk <= 1000;
        f->ma_k = ok ? (uint32_t)kk : 2;
        break;
    }
    case FC_HW:
        ok = np == 3;
        if (ok) {
            f->hw_alpha = get_f64(&r);
            f->hw_beta = get_f64(&r);
            f->hw_gamma = get_f64(&r);
            ok = f->hw_alpha >= 0 && f->hw_alpha <= 1 && f->hw_beta >= 0 && f->hw_beta <= 1 &&
                 f->hw_gamma >= 0 && f->hw_gamma <= 1;
        }
        break;
    case FC_LSTM:
        ok = np == f->rnn->nparams + 2;
        if (ok) {
            f->rnn->mu = get_f64(&r);
            f->rnn->sd = get_f64(&r);
            for (size_t i = 0; i < f->rnn->nparams; i++) {
                f->rnn->p[i] = get_f64(&r);
                ok = ok && isfinite(f->rnn->p[i]);
            }
            ok = ok && isfinite(f->rnn->mu) && f->rnn->sd > 0 && isfinite(f->rnn->sd);
        }
        break;
    default:
        ok = np == 0;
        break;
    }
    if (!ok || r.bad) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "%s: parameters do not fit the model",
                         path);
        goto out;
    }
    f->fitted = true;
    f->integral = integral == 1;
    *out = f;
    f = NULL;
out:
    fclose(fp);
    cf_free(buf);
    cf_forecaster_destroy(f);
    return err;
}
