/*
 * The LSTM forecaster: a stacked LSTM (1-2 layers) over a window of W log-scaled,
 * normalised values, a dense layer from the top layer's last hidden state to the next H
 * values, trained by backpropagation through time with Adam, gradient clipping by global
 * norm and early stopping on a chronological validation split.
 *
 * Why log-scaled: arrival rates span orders of magnitude (PaySim's hours go from 0 to
 * 350,000) and errors that matter for provisioning are relative; log1p keeps zero hours
 * finite. The loss is Huber with a small delta (huber_delta, in normalised units): close to
 * the absolute error, so the network learns the conditional median of the log rate, which
 * is what SMAPE and MAE reward; on a series that is zero half the time (PaySim's late days)
 * a squared loss would aim between the zero and the busy mode and be wrong in both.
 *
 * Layout: one flat array of doubles holds every parameter, so Adam, clipping, checksums
 * and the gradient check see a vector. Gate weights are stored transposed (input-major,
 * [in][4 * hid]) so the forward pass is a sequence of axpy over contiguous rows, which the
 * compiler vectorizes without reassociating floating-point sums; the backward pass uses a
 * dot product with four accumulators. Per window: W steps x 4 hid (hid + 1) multiply-adds
 * forward (24 x 4,224 at the defaults).
 *
 * Determinism: weights and minibatch order come from splitmix64 seeded by the options;
 * nothing depends on time or threads, so a seed gives the same model, bit for bit, with
 * the same compiler and libm.
 *
 * Bounds: W <= 512, H <= 64, hid <= 128, layers <= 2; training memory is O(params + n).
 * Threads: one thread per model (the forward cache lives in the model).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scale_int.h"

#define NG 4u /* gates: input, forget, cell, output */
#define VAL_EVAL_MAX 1024u
#define TRAIN_BUDGET 1.2e11 /* multiply-adds over a whole training run */
#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8

static size_t in_dim(const cf__lstm *m, uint32_t l)
{
    return l == 0 ? 1 : m->hid;
}

static size_t layer_size(const cf__lstm *m, uint32_t l)
{
    return (size_t)NG * m->hid * (in_dim(m, l) + m->hid + 1);
}

static size_t layer_off(const cf__lstm *m, uint32_t l)
{
    size_t o = 0;
    for (uint32_t k = 0; k < l; k++) {
        o += layer_size(m, k);
    }
    return o;
}

/* Views into the flat parameter (or gradient) vector. */
typedef struct {
    double *wx; /* [in][NG hid] */
    double *wh; /* [hid][NG hid] */
    double *b;  /* [NG hid] */
} layer_view;

static layer_view view(const cf__lstm *m, double *base, uint32_t l)
{
    size_t gh = (size_t)NG * m->hid;
    double *p = base + layer_off(m, l);
    layer_view v = {p, p + in_dim(m, l) * gh, p + (in_dim(m, l) + m->hid) * gh};
    return v;
}

static double *out_w(const cf__lstm *m, double *base)
{
    return base + layer_off(m, m->layers);
}

/* Cache per (layer, step): NG hid gate activations, hid cell states, hid hidden states. */
static double *cache_at(const cf__lstm *m, uint32_t l, uint32_t t)
{
    return m->cache + ((size_t)l * m->W + t) * (NG + 2) * m->hid;
}

static inline double sigm(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* tanh through one exp: about three times faster than libm's tanh, exact to ~1e-16
 * absolute, and the forward and backward passes use the same function. */
static inline double tanh1(double x)
{
    return 1.0 - 2.0 / (exp(2.0 * x) + 1.0);
}

static inline void axpy(double *restrict y, double a, const double *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}

/*
 * y[0..m) += sum_k x[k] * A[k][0..m) for a row-major A of nk rows: eight outputs stay in
 * registers across all k, so the inner loop does one load per weight and no load/store of
 * y (an axpy per k would reload and store y nk times).
 */
static void gemv_acc(double *restrict y, const double *restrict x, const double *restrict A,
                     size_t nk, size_t m)
{
    size_t j = 0;
    for (; j + 8 <= m; j += 8) {
        double a0 = y[j], a1 = y[j + 1], a2 = y[j + 2], a3 = y[j + 3];
        double a4 = y[j + 4], a5 = y[j + 5], a6 = y[j + 6], a7 = y[j + 7];
        const double *r = A + j;
        for (size_t k = 0; k < nk; k++, r += m) {
            double xk = x[k];
            a0 += xk * r[0];
            a1 += xk * r[1];
            a2 += xk * r[2];
            a3 += xk * r[3];
            a4 += xk * r[4];
            a5 += xk * r[5];
            a6 += xk * r[6];
            a7 += xk * r[7];
        }
        y[j] = a0;
        y[j + 1] = a1;
        y[j + 2] = a2;
        y[j + 3] = a3;
        y[j + 4] = a4;
        y[j + 5] = a5;
        y[j + 6] = a6;
        y[j + 7] = a7;
    }
    for (; j < m; j++) {
        double a = y[j];
        for (size_t k = 0; k < nk; k++) {
            a += x[k] * A[k * m + j];
        }
        y[j] = a;
    }
}

static inline double dot(const double *restrict a, const double *restrict b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) {
        s0 += a[i] * b[i];
    }
    return (s0 + s1) + (s2 + s3);
}

cf_err cf__lstm_create(cf__lstm **out, uint32_t W, uint32_t H, uint32_t hid, uint32_t layers)
{
    CF_ASSERT(out != NULL);
    if (W < 1 || W > 512 || H < 1 || H > 64 || hid < 1 || hid > 128 || layers < 1 || layers > 2) {
        return CF_E_INVAL;
    }
    cf__lstm *m = cf_calloc(1, sizeof(*m));
    if (m == NULL) {
        return CF_E_NOMEM;
    }
    m->W = W;
    m->H = H;
    m->hid = hid;
    m->layers = layers;
    m->sd = 1;
    m->nparams = layer_off(m, layers) + (size_t)H * hid + H;
    m->p = cf_calloc(m->nparams, sizeof(double));
    m->cache = cf_calloc((size_t)layers * W * (NG + 2) * hid, sizeof(double));
    /* backward: two W x hid buffers, dh, dc, da (NG hid), dy (H), a window (W) and outputs (H) */
    m->tmp =
        cf_calloc(2 * (size_t)W * hid + 2 * hid + NG * hid + 2 * (size_t)H + W, sizeof(double));
    if (m->p == NULL || m->cache == NULL || m->tmp == NULL) {
        cf__lstm_destroy(m);
        return CF_E_NOMEM;
    }
    *out = m;
    return CF_OK;
}

void cf__lstm_destroy(cf__lstm *m)
{
    if (m == NULL) {
        return;
    }
    cf_free(m->p);
    cf_free(m->cache);
    cf_free(m->tmp);
    cf_free(m);
}

void cf__lstm_init(cf__lstm *m, cf__rng *r)
{
    size_t gh = (size_t)NG * m->hid;
    memset(m->p, 0, m->nparams * sizeof(double));
    for (uint32_t l = 0; l < m->layers; l++) {
        layer_view v = view(m, m->p, l);
        size_t nin = in_dim(m, l);
        double lim_x = sqrt(6.0 / (double)(nin + m->hid));
        double lim_h = sqrt(6.0 / (double)(2 * m->hid));
        for (size_t i = 0; i < nin * gh; i++) {
            v.wx[i] = (2 * cf__rng_unit(r) - 1) * lim_x;
        }
        for (size_t i = 0; i < (size_t)m->hid * gh; i++) {
            v.wh[i] = (2 * cf__rng_unit(r) - 1) * lim_h;
        }
        for (uint32_t j = 0; j < m->hid; j++) {
            v.b[m->hid + j] = 1.0; /* forget gate open at first: gradients flow back in time */
        }
    }
    double *wo = out_w(m, m->p);
    double lim_o = sqrt(6.0 / (double)(m->hid + m->H));
    for (size_t i = 0; i < (size_t)m->H * m->hid; i++) {
        wo[i] = (2 * cf__rng_unit(r) - 1) * lim_o;
    }
}

void cf__lstm_forward(cf__lstm *m, const double *x, double *y)
{
    const uint32_t hid = m->hid, W = m->W;
    const size_t gh = (size_t)NG * hid;
    for (uint32_t l = 0; l < m->layers; l++) {
        layer_view v = view(m, m->p, l);
        size_t nin = in_dim(m, l);
        for (uint32_t t = 0; t < W; t++) {
            double *a = cache_at(m, l, t);
            double *c = a + gh, *h = c + hid;
            const double *in = l == 0 ? x + t : cache_at(m, l - 1, t) + gh + hid;
            memcpy(a, v.b, gh * sizeof(double));
            gemv_acc(a, in, v.wx, nin, gh);
            const double *cp = NULL;
            if (t > 0) {
                const double *prev = cache_at(m, l, t - 1);
                cp = prev + gh;
                gemv_acc(a, prev + gh + hid, v.wh, hid, gh);
            }
            for (uint32_t j = 0; j < hid; j++) {
                double ig = sigm(a[j]);
                double fg = sigm(a[hid + j]);
                double gg = tanh1(a[2 * hid + j]);
                double og = sigm(a[3 * hid + j]);
                a[j] = ig;
                a[hid + j] = fg;
                a[2 * hid + j] = gg;
                a[3 * hid + j] = og;
                c[j] = ig * gg + (cp != NULL ? fg * cp[j] : 0.0);
                h[j] = og * tanh1(c[j]);
            }
        }
    }
    const double *htop = cache_at(m, m->layers - 1, W - 1) + gh + hid;
    const double *wo = out_w(m, m->p);
    const double *bo = wo + (size_t)m->H * hid;
    for (uint32_t k = 0; k < m->H; k++) {
        y[k] = bo[k] + dot(wo + (size_t)k * hid, htop, hid);
    }
}

/* Huber loss of one error (delta 0: half the squared error) and its derivative. */
static inline double err_loss(double delta, double e)
{
    double a = fabs(e);
    return delta <= 0 || a <= delta ? 0.5 * e * e : delta * (a - 0.5 * delta);
}

static inline double err_grad(double delta, double e)
{
    if (delta <= 0 || fabs(e) <= delta) {
        return e;
    }
    return e > 0 ? delta : -delta;
}

double cf__lstm_loss_grad(cf__lstm *m, const double *x, const double *target, double *grad)
{
    const uint32_t hid = m->hid, W = m->W, H = m->H;
    const size_t gh = (size_t)NG * hid;
    double *dh_in = m->tmp;               /* W x hid: gradient into h(l, t) from above */
    double *dx = dh_in + (size_t)W * hid; /* W x hid: gradient into the layer's inputs */
    double *dh = dx + (size_t)W * hid;
    double *dc = dh + hid;
    double *da = dc + hid;
    double *y = da + gh;
    double *dy = y + H;

    cf__lstm_forward(m, x, y);
    double loss = 0;
    for (uint32_t k = 0; k < H; k++) {
        double e = y[k] - target[k];
        loss += err_loss(m->huber, e) / H;
        dy[k] = err_grad(m->huber, e) / H;
    }
    const double *wo = out_w(m, m->p);
    double *gwo = out_w(m, grad);
    double *gbo = gwo + (size_t)H * hid;
    const double *htop = cache_at(m, m->layers - 1, W - 1) + gh + hid;
    memset(dh_in, 0, (size_t)W * hid * sizeof(double));
    for (uint32_t k = 0; k < H; k++) {
        axpy(gwo + (size_t)k * hid, dy[k], htop, hid);
        gbo[k] += dy[k];
        axpy(dh_in + (size_t)(W - 1) * hid, dy[k], wo + (size_t)k * hid, hid);
    }
    for (uint32_t l = m->layers; l-- > 0;) {
        layer_view v = view(m, m->p, l);
        layer_view g = view(m, grad, l);
        size_t nin = in_dim(m, l);
        memset(dh, 0, hid * sizeof(double));
        memset(dc, 0, hid * sizeof(double));
        if (l > 0) {
            memset(dx, 0, (size_t)W * hid * sizeof(double));
        }
        for (uint32_t t = W; t-- > 0;) {
            const double *a = cache_at(m, l, t);
            const double *c = a + gh;
            const double *cp = t > 0 ? cache_at(m, l, t - 1) + gh : NULL;
            const double *hp = t > 0 ? cache_at(m, l, t - 1) + gh + hid : NULL;
            const double *in = l == 0 ? x + t : cache_at(m, l - 1, t) + gh + hid;
            for (uint32_t j = 0; j < hid; j++) {
                double ig = a[j], fg = a[hid + j], gg = a[2 * hid + j], og = a[3 * hid + j];
                double dhj = dh[j] + dh_in[(size_t)t * hid + j];
                double tc = tanh1(c[j]);
                double dcj = dc[j] + dhj * og * (1 - tc * tc);
                da[j] = dcj * gg * ig * (1 - ig);
                da[hid + j] = cp != NULL ? dcj * cp[j] * fg * (1 - fg) : 0.0;
                da[2 * hid + j] = dcj * ig * (1 - gg * gg);
                da[3 * hid + j] = dhj * tc * og * (1 - og);
                dc[j] = dcj * fg;
            }
            axpy(g.b, 1.0, da, gh);
            for (size_t k = 0; k < nin; k++) {
                axpy(g.wx + k * gh, in[k], da, gh);
            }
            if (l > 0) {
                for (size_t k = 0; k < nin; k++) {
                    dx[(size_t)t * hid + k] = dot(v.wx + k * gh, da, gh);
                }
            }
            if (hp != NULL) {
                for (uint32_t k = 0; k < hid; k++) {
                    axpy(g.wh + (size_t)k * gh, hp[k], da, gh);
                    dh[k] = dot(v.wh + (size_t)k * gh, da, gh);
                }
            }
        }
        if (l > 0) {
            memcpy(dh_in, dx, (size_t)W * hid * sizeof(double));
        }
    }
    return loss;
}

/* Loss of one window without gradients. */
static double window_loss(cf__lstm *m, const double *x, const double *target)
{
    double *y = m->tmp + 2 * (size_t)m->W * m->hid + 2 * m->hid + NG * m->hid;
    cf__lstm_forward(m, x, y);
    double loss = 0;
    for (uint32_t k = 0; k < m->H; k++) {
        loss += err_loss(m->huber, y[k] - target[k]) / m->H;
    }
    return loss;
}

cf_err cf__lstm_train(cf__lstm *m, const cf_forecast_opts *o, const double *y, size_t n,
                      char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    double *z = NULL, *grad = NULL, *am = NULL, *av = NULL, *best = NULL;
    uint32_t *order = NULL;
    const size_t np = m->nparams;
    size_t S = n >= (size_t)m->W + m->H ? n - m->W - m->H + 1 : 0;
    size_t nval = 0;
    if (o->val_frac > 0) {
        nval = (size_t)llround((double)S * o->val_frac);
        if (nval < 1) {
            nval = 1;
        }
    }
    size_t ntr = S > nval + m->H ? S - nval - (m->H - 1) : 0;
    if (ntr < 4) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "lstm: %zu points are too few for window %u + horizon %u with a %.0f%% "
                          "validation split (need about %zu)",
                          n, m->W, m->H, o->val_frac * 100,
                          (size_t)((m->W + 2 * m->H + 4) / (1 - o->val_frac)) + 2);
    }
    z = cf_malloc(n * sizeof(double));
    grad = cf_calloc(np, sizeof(double));
    am = cf_calloc(np, sizeof(double));
    av = cf_calloc(np, sizeof(double));
    best = cf_malloc(np * sizeof(double));
    order = cf_malloc(ntr * sizeof(uint32_t));
    if (z == NULL || grad == NULL || am == NULL || av == NULL || best == NULL || order == NULL) {
        err = CF_E_NOMEM;
        goto out;
    }
    /* Normalisation over the training windows' span (the validation tail is excluded). */
    size_t span = ntr + m->W + m->H - 1;
    double mean = 0, var = 0;
    for (size_t i = 0; i < span; i++) {
        mean += log1p(y[i]);
    }
    mean /= (double)span;
    for (size_t i = 0; i < span; i++) {
        double d = log1p(y[i]) - mean;
        var += d * d;
    }
    double sd = sqrt(var / (double)span);
    m->mu = mean;
    m->sd = sd > 1e-6 ? sd : 1.0;
    for (size_t i = 0; i < n; i++) {
        z[i] = (log1p(y[i]) - m->mu) / m->sd;
    }
    m->huber = o->huber_delta;
    cf__rng rng = {o->seed ^ 0x5CA1EDF0CA57ULL};
    cf__lstm_init(m, &rng);
    memcpy(best, m->p, np * sizeof(double));
    for (size_t i = 0; i < ntr; i++) {
        order[i] = (uint32_t)i;
    }
    size_t val0 = S - nval;
    size_t vstride = nval > VAL_EVAL_MAX ? (nval + VAL_EVAL_MAX - 1) / VAL_EVAL_MAX : 1;
    double best_val = INFINITY;
    uint32_t bad = 0;
    uint64_t step = 0;
    size_t per_epoch = ntr < o->epoch_max_samples ? ntr : o->epoch_max_samples;
    /* A work budget: forward + backward cost about 3 x W x params multiply-adds a window;
     * big models see fewer windows per epoch so that any configuration trains in about
     * half a minute on one core here (the defaults are far below it). */
    double per_window = 3.0 * m->W * (double)m->nparams;
    double cap = TRAIN_BUDGET / ((double)o->epochs_max * per_window);
    if ((double)per_epoch > cap) {
        per_epoch = cap > (double)o->batch ? (size_t)cap : o->batch;
        per_epoch = per_epoch < ntr ? per_epoch : ntr;
    }
    for (uint32_t epoch = 0; epoch < o->epochs_max; epoch++) {
        for (size_t i = ntr; i > 1; i--) {
            size_t j = (size_t)cf__rng_below(&rng, i);
            uint32_t tmp = order[i - 1];
            order[i - 1] = order[j];
            order[j] = tmp;
        }
        for (size_t b0 = 0; b0 < per_epoch; b0 += o->batch) {
            size_t bn = per_epoch - b0 < o->batch ? per_epoch - b0 : o->batch;
            memset(grad, 0, np * sizeof(double));
            for (size_t s = 0; s < bn; s++) {
                size_t idx = order[b0 + s];
                cf__lstm_loss_grad(m, z + idx, z + idx + m->W, grad);
            }
            double norm2 = 0;
            for (size_t i = 0; i < np; i++) {
                grad[i] /= (double)bn;
                norm2 += grad[i] * grad[i];
            }
            double scale = 1.0;
            if (o->clip > 0 && norm2 > o->clip * o->clip) {
                scale = o->clip / sqrt(norm2);
            }
            step++;
            double c1 = 1.0 - pow(ADAM_B1, (double)step);
            double c2 = 1.0 - pow(ADAM_B2, (double)step);
            for (size_t i = 0; i < np; i++) {
                double gi = grad[i] * scale;
                am[i] = ADAM_B1 * am[i] + (1 - ADAM_B1) * gi;
                av[i] = ADAM_B2 * av[i] + (1 - ADAM_B2) * gi * gi;
                m->p[i] -= o->lr * (am[i] / c1) / (sqrt(av[i] / c2) + ADAM_EPS);
            }
        }
        double vl = 0;
        size_t vn = 0;
        for (size_t s = val0; s < S; s += vstride) {
            vl += window_loss(m, z + s, z + s + m->W);
            vn++;
        }
        vl /= (double)vn;
        if (!isfinite(vl)) {
            break; /* diverged: keep the best weights seen */
        }
        if (vl < best_val * (1 - 1e-4)) {
            best_val = vl;
            bad = 0;
            memcpy(best, m->p, np * sizeof(double));
        } else if (++bad >= o->patience) {
            break;
        }
    }
    memcpy(m->p, best, np * sizeof(double));
out:
    cf_free(z);
    cf_free(grad);
    cf_free(am);
    cf_free(av);
    cf_free(best);
    cf_free(order);
    return err;
}

void cf__lstm_predict(cf__lstm *m, const double *hist, size_t len, double *out, size_t h)
{
    const uint32_t W = m->W, H = m->H;
    double *yz = m->tmp + 2 * (size_t)W * m->hid + 2 * m->hid + NG * m->hid + 2 * (size_t)H;
    double *win = yz; /* W values, followed by nothing else in tmp */
    double yo[64];
    for (uint32_t i = 0; i < W; i++) {
        double v;
        if (len == 0) {
            v = 0.0;
        } else if (len >= W) {
            v = (log1p(hist[len - W + i]) - m->mu) / m->sd;
        } else {
            size_t k = i + len >= W ? i + len - W : 0;
            v = (log1p(hist[k]) - m->mu) / m->sd;
        }
        win[i] = v;
    }
    size_t done = 0;
    while (done < h) {
        cf__lstm_forward(m, win, yo);
        for (uint32_t k = 0; k < H && done < h; k++, done++) {
            double v = expm1(yo[k] * m->sd + m->mu);
            out[done] = v > 0 && isfinite(v) ? v : (v > 0 ? 1e300 : 0.0);
        }
        if (done < h) {
            /* Feed the forecasts back: slide the window by H. */
            if (H >= W) {
                memcpy(win, yo + (H - W), W * sizeof(double));
            } else {
                memmove(win, win + H, (W - H) * sizeof(double));
                memcpy(win + (W - H), yo, H * sizeof(double));
            }
        }
    }
}
