/*
 * Scaling policies: at the end of each decision interval a policy turns what it observed
 * (arrivals, completions, busy time, backlog, running and starting workers) into the number
 * of workers it wants. The same code drives the simulator (src/scale/sim.c) and, once the
 * distributed mode's rescale API exists, live worker pools.
 *
 *   static      a fixed size.
 *   reactive    utilization thresholds with a cooldown (what a CPU-based HPA does): above
 *               up_util the pool grows to cur * util / mid, below down_util it shrinks the
 *               same way (mid = the middle of the band), then no decision for cooldown_s.
 *   ds2         DS2 (Kalavri et al., OSDI 2018) as the Flink Kubernetes operator's autoscaler
 *               computes it: the true processing rate of one worker (events per busy second)
 *               and the arrival rate (plus the backlog to drain within catchup_s) give the
 *               parallelism that runs at target_util; a step is limited to max_up_factor and
 *               max_down_factor; metrics are ignored for stabilization_s after a rescale;
 *               scale-down waits down_delay_s and goes to the highest size wanted meanwhile.
 *   predictive  the forecaster's maximum over the start-up lead time plus `horizon` intervals
 *               (and never less than the rate seen now), plus the backlog to drain, divided
 *               by the measured per-worker rate at target_util; scale-up at once. Scale-down
 *               goes to the maximum over down_delay_s further, and only below
 *               (1 - down_hysteresis) x workers: the forecast replaces the timer.
 *
 * Per-worker capacity is measured, never configured: processed / busy_s of an interval is
 * the rate one worker sustains at the batch sizes of that interval. Batches grow with load
 * (a worker takes everything that waits), so a quiet interval understates what a worker
 * does under load; the estimate is the highest rate of the last RATE_WINDOW intervals that
 * had work (it can only understate the true capacity, never overstate it). Until a
 * measurement exists a policy keeps its size.
 * The start-up lead time is the last measured start-up delay (obs.startup_s), lead_s before.
 */
#include <math.h>
#include <string.h>

#include "scale_int.h"

#define RATE_WINDOW 30
#define FC_MAX 512

typedef enum { P_STATIC, P_REACTIVE, P_DS2, P_PREDICTIVE } pkind;

static const char *const policy_names[] = {"static", "reactive", "ds2", "predictive"};

struct cf_policy {
    pkind kind;
    cf_policy_opts o;
    cf_forecaster *fc;
    uint32_t target;
    bool have_target;
    double last_change_s;
    /* measured per-worker rate: a window of (processed, busy_s) */
    double win_proc[RATE_WINDOW];
    double win_busy[RATE_WINDOW];
    unsigned win_n, win_i;
    /* scale-down hold */
    bool down_pending;
    double down_since_s;
    uint32_t down_max;
};

const char *const *cf_policy_names(size_t *n)
{
    *n = sizeof(policy_names) / sizeof(policy_names[0]);
    return policy_names;
}

void cf_policy_opts_default(cf_policy_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->min_workers = 1;
    o->max_workers = 64;
    o->static_workers = 4;
    o->target_util = 0.7;
    o->up_util = 0.8;
    o->down_util = 0.4;
    o->cooldown_s = 120;
    o->max_up_factor = 4;
    o->max_down_factor = 0.5;
    o->stabilization_s = 60;
    o->down_delay_s = 300;
    o->catchup_s = 60;
    o->lead_s = 30;
    o->horizon = 1;
    o->down_hysteresis = 0.5;
}

cf_err cf_policy_create(cf_policy **out, const char *name, const cf_policy_opts *o,
                        cf_forecaster *fc, char *errstr, size_t errstr_size)
{
    CF_ASSERT(out != NULL && name != NULL);
    cf_policy_opts def;
    if (o == NULL) {
        cf_policy_opts_default(&def);
        o = &def;
    }
    size_t k = 0;
    while (k < sizeof(policy_names) / sizeof(policy_names[0]) && strcmp(policy_names[k], name)) {
        k++;
    }
    if (k == sizeof(policy_names) / sizeof(policy_names[0])) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "unknown policy '%s' (static, reactive, ds2, predictive)", name);
    }
    if (o->min_workers < 1 || o->max_workers < o->min_workers || o->max_workers > 100000) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "workers: 1 <= min (%u) <= max (%u) <= 100000", o->min_workers,
                          o->max_workers);
    }
    if (!(o->target_util > 0 && o->target_util <= 1) ||
        !(o->down_util >= 0 && o->down_util < o->up_util && o->up_util <= 1)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "utilization: 0 < target <= 1 and 0 <= down < up <= 1");
    }
    if (!(o->max_up_factor >= 1) || !(o->max_down_factor > 0 && o->max_down_factor <= 1) ||
        !(o->cooldown_s >= 0) || !(o->stabilization_s >= 0) || !(o->down_delay_s >= 0) ||
        !(o->catchup_s > 0) || !(o->lead_s >= 0) || o->horizon < 1 || o->horizon > 256 ||
        !(o->down_hysteresis >= 0 && o->down_hysteresis < 1)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "max_up_factor >= 1, 0 < max_down_factor <= 1, times >= 0, "
                          "catchup_s > 0, horizon 1..256, 0 <= down_hysteresis < 1");
    }
    if (k == P_PREDICTIVE && fc == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "predictive needs a forecaster");
    }
    cf_policy *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    p->kind = (pkind)k;
    p->o = *o;
    p->fc = k == P_PREDICTIVE ? fc : NULL;
    p->last_change_s = -INFINITY;
    *out = p;
    return CF_OK;
}

void cf_policy_destroy(cf_policy *p)
{
    cf_free(p);
}

const char *cf_policy_name(const cf_policy *p)
{
    return policy_names[p->kind];
}

static uint32_t clampw(const cf_policy *p, double w)
{
    if (!(w >= p->o.min_workers)) {
        return p->o.min_workers;
    }
    if (w >= p->o.max_workers) {
        return p->o.max_workers;
    }
    return (uint32_t)w;
}

/* Measured events per busy second of one worker; 0 until an interval had work. */
static double measure_rate(cf_policy *p, const cf_scale_obs *obs)
{
    if (obs->busy_s > 0 && obs->processed > 0) {
        p->win_proc[p->win_i] = obs->processed;
        p->win_busy[p->win_i] = obs->busy_s;
        p->win_i = (p->win_i + 1) % RATE_WINDOW;
        if (p->win_n < RATE_WINDOW) {
            p->win_n++;
        }
    }
    double best = 0;
    for (unsigned i = 0; i < p->win_n; i++) {
        double r = p->win_proc[i] / p->win_busy[i];
        best = r > best ? r : best;
    }
    return best;
}

/*
 * Applies a wanted size: up at once; down only after wanting less for down_delay_s, then to
 * the highest size wanted during that wait (so one quiet interval does not drain the pool).
 */
static uint32_t hold_down(cf_policy *p, uint32_t cur, uint32_t want, double now_s)
{
    if (want >= cur) {
        p->down_pending = false;
        return want;
    }
    if (!p->down_pending) {
        p->down_pending = true;
        p->down_since_s = now_s;
        p->down_max = want;
    } else if (want > p->down_max) {
        p->down_max = want;
    }
    if (now_s - p->down_since_s >= p->o.down_delay_s) {
        p->down_pending = false;
        return p->down_max;
    }
    return cur;
}

void cf_policy_decide(cf_policy *p, const cf_scale_obs *obs, cf_scale_decision *d)
{
    CF_ASSERT(p != NULL && obs != NULL && d != NULL);
    CF_ASSERT(obs->interval_s > 0);
    memset(d, 0, sizeof(*d));
    uint32_t cur = obs->ready + obs->starting;
    if (!p->have_target) {
        p->target = cur > 0 ? cur : p->o.min_workers;
        p->have_target = true;
    }
    cur = p->target;
    double rate = obs->arrived / obs->interval_s;
    double wr = measure_rate(p, obs);
    d->rate = rate;
    d->worker_rate = wr;
    uint32_t want = cur;
    switch (p->kind) {
    case P_STATIC:
        want = clampw(p, p->o.static_workers);
        break;
    case P_REACTIVE: {
        if (obs->now_s - p->last_change_s < p->o.cooldown_s || obs->ready == 0) {
            break;
        }
        double util = obs->busy_s / ((double)obs->ready * obs->interval_s);
        double mid = 0.5 * (p->o.up_util + p->o.down_util);
        if (util > p->o.up_util) {
            double w = ceil((double)cur * util / mid);
            want = clampw(p, w > cur + 1 ? w : cur + 1);
        } else if (util < p->o.down_util && cur > p->o.min_workers) {
            double w = ceil((double)cur * util / mid);
            want = clampw(p, w < cur - 1 ? w : cur - 1);
        }
        break;
    }
    case P_DS2: {
        if (obs->now_s - p->last_change_s < p->o.stabilization_s || wr <= 0) {
            break;
        }
        double need = (rate + obs->backlog / p->o.catchup_s) / (wr * p->o.target_util);
        double w = ceil(need - 1e-9);
        double hi = ceil((double)cur * p->o.max_up_factor);
        double lo = ceil((double)cur * p->o.max_down_factor);
        w = w > hi ? hi : (w < lo ? lo : w);
        want = hold_down(p, cur, clampw(p, w), obs->now_s);
        break;
    }
    case P_PREDICTIVE: {
        /* Rows of forecast: k = 0 is the interval now starting. A worker asked for now runs
         * from interval `lead` on, so scale-up looks at [0, lead + horizon); removing a
         * worker takes effect at once, so scale-down also looks down_delay further ahead:
         * the forecast itself is the hysteresis, no timer needed. */
        cf_forecaster_observe(p->fc, obs->arrived);
        double lead_s = obs->startup_s > 0 ? obs->startup_s : p->o.lead_s;
        size_t lead = (size_t)ceil(lead_s / obs->interval_s - 1e-9);
        size_t hup = lead + p->o.horizon;
        size_t hdn = hup + (size_t)ceil(p->o.down_delay_s / obs->interval_s - 1e-9);
        hup = hup > FC_MAX ? FC_MAX : hup;
        hdn = hdn > FC_MAX ? FC_MAX : hdn;
        double fc[FC_MAX];
        double up = obs->arrived, dn = obs->arrived; /* never below what arrives now */
        if (cf_forecaster_predict(p->fc, fc, hdn) == CF_OK) {
            for (size_t k = 0; k < hdn; k++) {
                up = k < hup && fc[k] > up ? fc[k] : up;
                dn = fc[k] > dn ? fc[k] : dn;
            }
        }
        d->forecast_rate = up / obs->interval_s;
        if (wr <= 0) {
            break;
        }
        double drain = obs->backlog / p->o.catchup_s;
        double cap = wr * p->o.target_util;
        uint32_t wup = clampw(p, ceil((up / obs->interval_s + drain) / cap - 1e-9));
        uint32_t wdn = clampw(p, ceil((dn / obs->interval_s + drain) / cap - 1e-9));
        if (wup > cur) {
            want = wup > wdn ? wup : wdn; /* straight to what scale-down would keep anyway */
        } else if (wdn < cur && (double)wdn <= (double)cur * (1 - p->o.down_hysteresis)) {
            want = wdn; /* below the hysteresis band: worth a rescale */
        }
        break;
    }
    }
    if (want != p->target) {
        p->target = want;
        p->last_change_s = obs->now_s;
    }
    d->workers = p->target;
}
