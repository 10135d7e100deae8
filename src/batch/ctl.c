/*
 * Adaptive micro-batching controller (docs/batching.md).
 *
 * Model: a batch of n events costs S(n) = a + b*n to process (a: signing, fsync, publish;
 * b: hashing, encryption, copying). Events arrive at rate L. The oldest event of a batch
 * waits for the batch to fill (n/L), for any backlog ahead of it (q) and for the service,
 * so its latency is  T(n) = n/L + q + a + b*n.  One stage serves batches one after another,
 * so it is busy a fraction  rho(n) = L*(a/n + b)  of the time; rho >= 1 means an unbounded
 * queue. The controller picks the smallest n that keeps rho at a target utilization (0.7):
 * the lowest-latency size that still leaves 30% spare capacity for bursts; it grows with
 * the load, so fixed costs are amortized exactly as much as the load requires. If that n
 * would break the budget B = slo * (1 - headroom), it trades spare capacity (down to 95%
 * busy) for latency. If even L*b >= 0.7 the stage is overloaded and gets count_max, the
 * size with the highest throughput. While a backlog builds (more input already waiting
 * than fits in a batch, for longer than B/10) the size at least doubles per batch.
 *
 * Estimation: (a, b) by exponentially weighted least squares over (n, S) pairs (forgetting
 * factor 0.98 per batch; samples beyond 3x the prediction are clipped, since a stall on a
 * shared disk is not the cost model; until sizes vary, the whole cost counts as fixed,
 * whose iteration converges on the same n*). L from the events' ingest stamps in 100 ms
 * slices, smoothed, with a jump when a slice or a single large batch shows a 2x change (a
 * step is seen within milliseconds). q is the smoothed wait of a batch's newest event when
 * input was backed up. The live p99 over a sliding window of ten 100 ms cf_hist slices is
 * compared with the model's T(target); the excess (smoothed) shortens the linger.
 *
 * Hysteresis: the target grows at once when the new value is more than 25% larger; it
 * shrinks by more than 25% only after a 250 ms dwell and by at most 8x per step; moves of
 * 10-25% wait for a 1 s dwell; smaller ones are ignored. A noisy but steady input therefore
 * changes the target at most about once a second.
 *
 * Threads: everything but cf_batch_ctl_record_latency and the window p99 runs on the owner
 * (stage) thread without locks; the latency window has its own mutex because the sink
 * thread feeds it. Memory: 11 histograms (about 2 MiB) allocated at create, none later.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confide/batch.h"
#include "confide/core.h"
#include "confide/metrics.h"

#define NSLICES 10
#define SLICE_NS INT64_C(100000000)
#define RATE_SLICE_NS INT64_C(100000000)
#define FORGET 0.98
#define UTIL_TARGET 0.7
#define UTIL_EDGE 0.95
#define HYST_JUMP 0.25
#define HYST_DWELL 0.10
#define DWELL_NS INT64_C(1000000000)
#define SHRINK_DWELL_NS INT64_C(250000000)
#define SHRINK_MAX 8.0
#define OUTLIER 3.0
#define P99_REFRESH_NS INT64_C(50000000)
#define INITIAL_TARGET 1

struct cf_batch_ctl {
    bool fixed;
    uint32_t count_max;
    uint64_t bytes_max;
    int64_t linger_max_ns;
    double slo_ns;
    double headroom;

    /* weighted least squares sums over (n, service_ns) */
    double w0, wn, wt, wnn, wnt;
    double a_ns;
    double b_ns;
    bool have_fit;
    bool have_slope;
    double bytes_per_event;

    /* arrival rate */
    double rate;
    int64_t rslice_start;
    uint64_t rslice_events;

    double q_ns;      /* smoothed backlog wait */
    double excess_ns; /* smoothed live p99 minus the model's prediction (>= 0) */

    uint32_t target;
    int64_t linger_ns;
    int64_t last_change_ns;
    uint64_t changes;
    cf_gauge *gauge;

    pthread_mutex_t lock; /* guards the latency window below */
    cf_hist *slices[NSLICES];
    int64_t slice_epoch[NSLICES];
    cf_hist *scratch;
    int64_t p99_us;
    int64_t p99_at_ns;
};

static cf_err parse_mode(const char *mode, uint32_t count_max, bool *fixed, uint32_t *n,
                         char *errstr, size_t errstr_size)
{
    if (mode == NULL || strcmp(mode, "adaptive") == 0) {
        *fixed = false;
        *n = 0;
        return CF_OK;
    }
    if (strncmp(mode, "fixed:", 6) == 0) {
        char *end = NULL;
        const char *s = mode + 6;
        unsigned long v = (*s >= '0' && *s <= '9') ? strtoul(s, &end, 10) : 0;
        if (end != NULL && *end == '\0' && v >= 1 && v <= count_max) {
            *fixed = true;
            *n = (uint32_t)v;
            return CF_OK;
        }
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "batch.mode '%s': N must be an integer in 1..batch.count_max (%u)", mode,
                          count_max);
    }
    return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                      "batch.mode '%s': expected 'adaptive' or 'fixed:N'", mode);
}

cf_err cf_batch_ctl_create(cf_batch_ctl **out, const char *mode, uint32_t slo_p99_ms,
                           uint32_t count_max, uint64_t bytes_max, uint32_t linger_ms, char *errstr,
                           size_t errstr_size)
{
    CF_ASSERT(out != NULL);
    *out = NULL;
    if (slo_p99_ms < 1 || slo_p99_ms > 3600000) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "slo.p99_ms %u: must be in 1..3600000",
                          slo_p99_ms);
    }
    if (count_max < 1 || count_max > (1u << 24)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "batch.count_max %u: must be in 1..16777216", count_max);
    }
    if (bytes_max < 1) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "batch.bytes_max: must be >= 1");
    }
    if (linger_ms > 60000) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "batch.linger_ms %u: must be in 0..60000", linger_ms);
    }
    bool fixed = false;
    uint32_t n = 0;
    cf_err err = parse_mode(mode, count_max, &fixed, &n, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    cf_batch_ctl *c = cf_calloc(1, sizeof(*c));
    if (c == NULL) {
        return CF_E_NOMEM;
    }
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        cf_free(c);
        return CF_E_NOMEM;
    }
    for (int i = 0; i < NSLICES; i++) {
        c->slice_epoch[i] = -1;
        if (cf_hist_create(&c->slices[i]) != CF_OK) {
            err = CF_E_NOMEM;
            goto fail;
        }
    }
    if (cf_hist_create(&c->scratch) != CF_OK) {
        err = CF_E_NOMEM;
        goto fail;
    }
    c->fixed = fixed;
    c->count_max = count_max;
    c->bytes_max = bytes_max;
    c->linger_max_ns = (int64_t)linger_ms * 1000000;
    c->slo_ns = (double)slo_p99_ms * 1e6;
    c->headroom = 0.5;
    c->bytes_per_event = 0;
    if (fixed) {
        c->target = n;
        c->linger_ns = c->linger_max_ns;
    } else {
        c->target = count_max < INITIAL_TARGET ? count_max : INITIAL_TARGET;
        c->linger_ns = c->linger_max_ns < 1000000 ? c->linger_max_ns : 1000000;
    }
    c->p99_at_ns = 0; /* never refreshed */
    *out = c;
    return CF_OK;
fail:
    cf_batch_ctl_destroy(c);
    return err;
}

void cf_batch_ctl_destroy(cf_batch_ctl *c)
{
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < NSLICES; i++) {
        cf_hist_destroy(c->slices[i]);
    }
    cf_hist_destroy(c->scratch);
    pthread_mutex_destroy(&c->lock);
    cf_free(c);
}

cf_err cf_batch_ctl_set_headroom(cf_batch_ctl *c, double headroom)
{
    if (!(headroom >= 0.0 && headroom < 1.0)) {
        return CF_E_INVAL;
    }
    c->headroom = headroom;
    return CF_OK;
}

void cf_batch_ctl_set_gauge(cf_batch_ctl *c, cf_gauge *target)
{
    c->gauge = target;
    if (target != NULL) {
        cf_gauge_set(target, (double)c->target);
    }
}

uint32_t cf_batch_ctl_target(const cf_batch_ctl *c)
{
    return c->target;
}

int64_t cf_batch_ctl_linger_ns(const cf_batch_ctl *c)
{
    return c->linger_ns;
}

bool cf_batch_ctl_is_fixed(const cf_batch_ctl *c)
{
    return c->fixed;
}

uint64_t cf_batch_ctl_changes(const cf_batch_ctl *c)
{
    return c->changes;
}

double cf_batch_ctl_budget_ns(const cf_batch_ctl *c)
{
    return c->slo_ns * (1.0 - c->headroom);
}

void cf_batch_ctl_model(const cf_batch_ctl *c, double *fixed_ns, double *per_event_ns,
                        double *rate_per_s, double *queue_ns)
{
    if (fixed_ns != NULL) {
        *fixed_ns = c->a_ns;
    }
    if (per_event_ns != NULL) {
        *per_event_ns = c->b_ns;
    }
    if (rate_per_s != NULL) {
        *rate_per_s = c->rate;
    }
    if (queue_ns != NULL) {
        *queue_ns = c->q_ns;
    }
}

double cf_batch_ctl_modeled_latency_ns(const cf_batch_ctl *c, uint32_t n)
{
    double fill = c->rate > 0 ? (double)n / c->rate * 1e9 : 0.0;
    if (fill > (double)c->linger_ns && !c->fixed) {
        fill = (double)c->linger_ns; /* the batch leaves at linger even when not full */
    }
    return fill + c->q_ns + c->a_ns + c->b_ns * (double)n;
}

/* ---- latency window ------------------------------------------------------------------------ */

void cf_batch_ctl_record_latency(cf_batch_ctl *c, int64_t now_ns, int64_t latency_us,
                                 uint64_t count)
{
    int64_t epoch = now_ns / SLICE_NS;
    int i = (int)(epoch % NSLICES);
    pthread_mutex_lock(&c->lock);
    if (c->slice_epoch[i] != epoch) {
        cf_hist_reset(c->slices[i]);
        c->slice_epoch[i] = epoch;
    }
    cf_hist_record_n(c->slices[i], latency_us, count);
    pthread_mutex_unlock(&c->lock);
}

int64_t cf_batch_ctl_window_p99_us(cf_batch_ctl *c, int64_t now_ns)
{
    int64_t epoch = now_ns / SLICE_NS;
    pthread_mutex_lock(&c->lock);
    cf_hist_reset(c->scratch);
    for (int i = 0; i < NSLICES; i++) {
        if (c->slice_epoch[i] >= 0 && epoch - c->slice_epoch[i] < NSLICES) {
            cf_hist_merge(c->scratch, c->slices[i]);
        }
    }
    int64_t p = cf_hist_percentile(c->scratch, 99, 1);
    pthread_mutex_unlock(&c->lock);
    return p;
}

/* ---- estimation ---------------------------------------------------------------------------- */

static void update_fit(cf_batch_ctl *c, double n, double t)
{
    c->w0 = c->w0 * FORGET + 1.0;
    c->wn = c->wn * FORGET + n;
    c->wt = c->wt * FORGET + t;
    c->wnn = c->wnn * FORGET + n * n;
    c->wnt = c->wnt * FORGET + n * t;
    double mn = c->wn / c->w0;
    double mt = c->wt / c->w0;
    double var = c->wnn / c->w0 - mn * mn;
    double cov = c->wnt / c->w0 - mn * mt;
    /* The slope is identifiable only when sizes vary (coefficient of variation >= 10%). */
    if (var > 0.25 && var >= 0.01 * mn * mn) {
        double b = cov / var;
        double a = mt - b * mn;
        if (b < 0) {
            b = 0;
            a = mt;
        }
        if (a < 0) {
            a = 0;
            b = mt / mn;
        }
        c->a_ns = a;
        c->b_ns = b;
        c->have_slope = true;
    } else if (c->have_slope) {
        /* Keep the known slope; re-centre the intercept on the recent batches. */
        double a = mt - c->b_ns * mn;
        if (a < 0) {
            a = 0;
            c->b_ns = mt / mn;
        }
        c->a_ns = a;
    } else {
        /* No size variety yet: treat the whole cost as fixed. The size this suggests,
         * L * S(n) / 0.7, is then re-measured at the new size, and that iteration converges
         * on the same n* the full model gives (its fixed point), while sizes start to vary. */
        c->a_ns = mt;
        c->b_ns = 0;
    }
    c->have_fit = true;
}

static void update_rate(cf_batch_ctl *c, int64_t stamp_ns, int64_t first_ns, uint32_t size)
{
    if (c->rslice_start == 0) {
        /* First batch: the slice starts at its first event, which it then counts. */
        c->rslice_start = first_ns > 0 && first_ns <= stamp_ns ? first_ns : stamp_ns;
        c->rslice_events = 0;
    }
    c->rslice_events += size;
    /* A batch of many events carries its own arrival spacing in its stamps; when it shows a
     * rate off by 2x, the load has stepped: believe it at once instead of waiting for the
     * slice to close (this is what makes a step visible within milliseconds). */
    if (c->rate > 0 && size >= 16 && first_ns > 0 && stamp_ns > first_ns) {
        double batch_rate = (double)(size - 1) * 1e9 / (double)(stamp_ns - first_ns);
        if (batch_rate > 2.0 * c->rate || batch_rate < 0.5 * c->rate) {
            c->rate = batch_rate;
            c->rslice_start = stamp_ns;
            c->rslice_events = 0;
            return;
        }
    }
    int64_t dt = stamp_ns - c->rslice_start;
    if (dt <= 0) {
        return;
    }
    double inst = (double)c->rslice_events * 1e9 / (double)dt;
    bool jump =
        c->rate > 0 && dt >= RATE_SLICE_NS / 5 && (inst > 2.0 * c->rate || inst < 0.5 * c->rate);
    if (dt >= RATE_SLICE_NS || jump || c->rate == 0) {
        if (c->rate == 0 || jump) {
            c->rate = inst;
        } else {
            c->rate = 0.5 * c->rate + 0.5 * inst;
        }
        c->rslice_start = stamp_ns;
        c->rslice_events = 0;
    }
}

static uint32_t clamp_n(const cf_batch_ctl *c, double n)
{
    double cap = (double)c->count_max;
    if (c->bytes_per_event > 0) {
        double by = floor((double)c->bytes_max / c->bytes_per_event);
        if (by < cap) {
            cap = by < 1 ? 1 : by;
        }
    }
    if (!(n >= 1)) {
        n = 1;
    }
    if (n > cap) {
        n = cap;
    }
    return (uint32_t)n;
}

/* The size the model asks for at the current estimates (before hysteresis). */
static uint32_t desired(const cf_batch_ctl *c)
{
    double lam = c->rate / 1e9; /* events per ns */
    double a = c->a_ns;
    double b = c->b_ns;
    double q = c->q_ns;
    double budget = cf_batch_ctl_budget_ns(c);
    double n;
    if (lam * b >= UTIL_TARGET) {
        n = (double)c->count_max; /* overloaded: the highest-throughput size */
    } else {
        n = ceil(lam * a / (UTIL_TARGET - lam * b));
        /* Largest size whose oldest event still meets the budget. When the utilization
         * target would overshoot it, give up spare capacity (up to 95% busy) before giving
         * up the budget; below 95% the queue itself would eat the budget. */
        double n_budget = floor((budget - a - q) / (1.0 / lam + b));
        if (n > n_budget) {
            double n_edge = lam * b < UTIL_EDGE ? ceil(lam * a / (UTIL_EDGE - lam * b)) : n;
            n = n_budget > n_edge ? n_budget : n_edge;
        }
    }
    /* Backlog: the newest event of recent batches waited a tenth of the budget or more,
     * so the queue in front of the stage is growing: at least double the size. */
    if (c->q_ns > 0.1 * budget && n < 2.0 * c->target) {
        n = 2.0 * c->target;
    }
    /* While a backlog is still being worked off (the newest events waited more than 2% of
     * the budget), never shrink: a smaller batch would only lengthen the queue. */
    if (c->q_ns > 0.02 * budget && n < c->target) {
        n = c->target;
    }
    return clamp_n(c, n);
}

static void decide(cf_batch_ctl *c, int64_t now_ns)
{
    if (c->fixed || !c->have_fit || c->rate <= 0) {
        return;
    }
    uint32_t n = desired(c);
    double cur = (double)c->target;
    double rel = fabs((double)n - cur) / cur;
    int64_t since = now_ns - c->last_change_ns;
    /* Grow at once on a big move (load arrives now); shrink on a big move only after a
     * short dwell (a lull of a few batches is not a load drop); small moves after 1 s. */
    bool big = rel > HYST_JUMP && (n > c->target || since >= SHRINK_DWELL_NS);
    bool small = rel > HYST_DWELL && since >= DWELL_NS;
    if (n != c->target && (big || small)) {
        /* Shrink at most 8x per step: a backlog that just cleared often returns when the
         * size collapses at once (stalls on a shared disk are bursty). */
        if ((double)n * SHRINK_MAX < cur) {
            n = (uint32_t)ceil(cur / SHRINK_MAX);
        }
        CF_LOG(CF_LOG_DEBUG, "batch",
               "target %u -> %u (rate %.0f/s, fixed %.0f ns, per event %.1f ns, backlog %.0f ns)",
               c->target, n, c->rate, c->a_ns, c->b_ns, c->q_ns);
        c->target = n;
        c->last_change_ns = now_ns;
        c->changes++;
        if (c->gauge != NULL) {
            cf_gauge_set(c->gauge, (double)n);
        }
    }
    /* Linger: about two fill times (so a slower stretch still fills the batch), never more
     * than the budget left after service and backlog, never more than batch.linger_ms. */
    double fill = (double)c->target / c->rate * 1e9;
    double left =
        cf_batch_ctl_budget_ns(c) - c->a_ns - c->b_ns * (double)c->target - c->q_ns - c->excess_ns;
    double linger = 2.0 * fill;
    if (linger > left) {
        linger = left;
    }
    if (linger > (double)c->linger_max_ns) {
        linger = (double)c->linger_max_ns;
    }
    if (linger < 0) {
        linger = 0;
    }
    c->linger_ns = (int64_t)linger;
}

void cf_batch_ctl_observe(cf_batch_ctl *c, int64_t now_ns, uint32_t size, uint64_t bytes,
                          int64_t service_ns, int64_t queue_ns, int64_t first_ingest_ns,
                          int64_t last_ingest_ns)
{
    CF_ASSERT(c != NULL);
    if (size == 0) {
        return;
    }
    if (service_ns < 0) {
        service_ns = 0;
    }
    if (queue_ns < 0) {
        queue_ns = 0;
    }
    /* A stall (a slow fsync behind someone else's I/O) is not the cost model: clip samples
     * beyond 3x the prediction so one outlier cannot swing the fit. */
    double t = (double)service_ns;
    if (c->have_fit) {
        double pred = c->a_ns + c->b_ns * (double)size;
        if (pred > 0 && t > OUTLIER * pred) {
            t = OUTLIER * pred;
        }
    }
    update_fit(c, (double)size, t);
    double bpe = (double)bytes / (double)size;
    c->bytes_per_event = c->bytes_per_event == 0 ? bpe : 0.9 * c->bytes_per_event + 0.1 * bpe;
    int64_t stamp = last_ingest_ns > 0 ? last_ingest_ns : now_ns;
    update_rate(c, stamp, first_ingest_ns > 0 ? first_ingest_ns : 0, size);
    c->q_ns = 0.8 * c->q_ns + 0.2 * (double)queue_ns;
    if (c->p99_at_ns == 0 || now_ns - c->p99_at_ns >= P99_REFRESH_NS) {
        c->p99_at_ns = now_ns;
        c->p99_us = cf_batch_ctl_window_p99_us(c, now_ns);
        double predicted = cf_batch_ctl_modeled_latency_ns(c, c->target);
        double excess = (double)c->p99_us * 1e3 - predicted;
        if (c->p99_us == 0 || excess < 0) {
            excess = 0;
        }
        c->excess_ns = 0.7 * c->excess_ns + 0.3 * excess;
    }
    decide(c, now_ns);
}
