/* Private to src/scale: the forecaster object, the LSTM internals the gradient test needs,
 * and a small deterministic PRNG (splitmix64) shared by training, traces and the simulator. */
#ifndef CONFIDE_SCALE_INT_H
#define CONFIDE_SCALE_INT_H

#include <math.h>
#include <stdint.h>

#include "confide/core.h"
#include "confide/scale.h"

/* ---- PRNG ---------------------------------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014): a full-period 64-bit generator, good enough for
 * weight init, minibatch order and simulated arrivals, and trivially reproducible. */
typedef struct {
    uint64_t s;
} cf__rng;

static inline uint64_t cf__rng_next(cf__rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double cf__rng_unit(cf__rng *r)
{
    return (double)(cf__rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n), 1 <= n < 2^32 (multiply-shift; bias below 2^-32). */
static inline uint64_t cf__rng_below(cf__rng *r, uint64_t n)
{
    return ((cf__rng_next(r) >> 32) * n) >> 32;
}

/* Exponential with rate 1. */
static inline double cf__rng_exp(cf__rng *r)
{
    return -log1p(-cf__rng_unit(r));
}

/* Poisson(mean): Knuth's method below 30, else the PTRS transformed rejection (Hormann 1993). */
double cf__rng_poisson(cf__rng *r, double mean);

/* ---- forecasters --------------------------------------------------------------------------- */

typedef struct cf__lstm cf__lstm;

typedef enum { FC_LAST, FC_SEASONAL, FC_MA, FC_HW, FC_LSTM } fc_kind;

struct cf_forecaster {
    fc_kind kind;
    cf_forecast_opts o;
    bool fitted;
    /* History: the last hist_cap true values, a ring; hist_n counts all observed. */
    double *hist;
    size_t hist_cap;
    uint64_t hist_n;
    /* ma */
    uint32_t ma_k;
    /* hw: additive Holt-Winters (season 0: Holt's linear trend) */
    double hw_alpha, hw_beta, hw_gamma;
    double hw_level, hw_trend;
    double *hw_season; /* o.season entries */
    bool hw_ready;
    /* lstm */
    cf__lstm *rnn;
    /* every fitted value was a whole number: a forecast below half an event is 0 */
    bool integral;
};

/* The i-th most recent observed value (i = 0: the last); requires i < min(hist_n, hist_cap). */
static inline double cf__fc_back(const cf_forecaster *f, size_t i)
{
    return f->hist[(size_t)((f->hist_n - 1 - i) % f->hist_cap)];
}

/* ---- LSTM ---------------------------------------------------------------------------------- */

/*
 * A recurrent forecaster: `layers` LSTM layers of `hidden` units read a window of
 * W normalised values z = (log1p(y) - mu) / sd, one per step, and a dense layer maps the
 * last hidden state of the top layer to H outputs (the next H values of z). Parameters are
 * one flat array of doubles so that Adam, clipping, checksums and the gradient check treat
 * them uniformly.
 */
struct cf__lstm {
    uint32_t W, H, hid, layers;
    size_t nparams;
    double *p; /* parameters */
    double mu, sd;
    double huber; /* loss: Huber delta in normalised units; 0: squared error */
    /* scratch, sized at create: forward cache and backward temporaries */
    double *cache;
    double *tmp;
};

cf_err cf__lstm_create(cf__lstm **out, uint32_t W, uint32_t H, uint32_t hid, uint32_t layers);
void cf__lstm_destroy(cf__lstm *m);
/* Glorot-uniform weights, zero biases, forget-gate bias 1 (LSTM). */
void cf__lstm_init(cf__lstm *m, cf__rng *r);
/* Forward pass over x[0..W) (normalised); writes H outputs to y. Uses m->cache. */
void cf__lstm_forward(cf__lstm *m, const double *x, double *y);
/*
 * Loss mean_k huber(y_k - target_k) of one window (m->huber 0: half the squared error); adds d loss
 * / d p into grad (nparams entries). Returns the loss.
 */
double cf__lstm_loss_grad(cf__lstm *m, const double *x, const double *target, double *grad);
/* Trains on y[0..n) (raw counts): normalisation, BPTT, Adam, clipping, early stopping. */
cf_err cf__lstm_train(cf__lstm *m, const cf_forecast_opts *o, const double *y, size_t n,
                      char *errstr, size_t errstr_size);
/* Forecast of the next h raw values from the last `len` raw values hist (oldest first). */
void cf__lstm_predict(cf__lstm *m, const double *hist, size_t len, double *out, size_t h);

#endif
