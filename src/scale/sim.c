/*
 * A discrete-event simulator of a worker pool fed by a rate trace, sized by a policy
 * (src/scale/policy.c, the same code a live pool would run).
 *
 * Model: events arrive (Poisson at each interval's rate, or evenly spaced) into one FIFO
 * queue. An idle running worker takes every waiting event up to batch_max and needs
 * batch_cost_s + n * event_cost_s for them, where event_cost_s makes a full batch run at
 * worker_rate events/s: small batches pay the per-batch cost more often, as the real
 * pipeline does (audit signatures, fsync). A started worker becomes ready after startup_s;
 * a stopped worker leaves at once when idle or starting, and after its batch when busy.
 * At the end of each trace interval the policy observes the interval (arrivals, completed
 * events, busy time, backlog, p99, running and starting workers, the last start-up delay)
 * and sets the size. After the last interval no more events arrive and the queue drains
 * (no more decisions; worker-seconds stop counting at the end of the trace).
 *
 * SLO accounting: time is cut into slo_window_s slices; a slice violates the SLO when the
 * p99 (nearest rank) of the events completed in it exceeds slo_ms, or when an event was
 * waiting longer than slo_ms during it (a stalled queue completes nothing but still
 * violates). Events refused by a full queue count as an hour of latency.
 *
 * Everything is O(1) per event apart from the worker heap (log workers). Bounds: queue_max
 * events (8 bytes each), SLICES_MAX slices, WORKERS_MAX workers. Single-threaded;
 * deterministic for a seed.
 */
#include <math.h>
#include <string.h>

#include "scale_int.h"

#define SLICES_MAX 50000000u
#define WORKERS_MAX 100000u
#define DROP_LAT_S 3600.0
#define MH_BUCKETS 1024

enum { W_FREE = 0, W_START, W_IDLE, W_BUSY, W_DRAIN };

typedef struct {
    double t;
    uint32_t id;
    uint32_t gen;
} hent;

typedef struct {
    uint8_t state;
    uint32_t gen;
    double t_req; /* start requested */
} worker;

/* Small log-bucketed histogram of microseconds (16 sub-buckets per power of two, ~6%). */
typedef struct {
    uint32_t c[MH_BUCKETS];
    uint64_t n;
} minihist;

static unsigned mh_index(uint64_t us)
{
    if (us < 16) {
        return (unsigned)us;
    }
    unsigned b = 63u - (unsigned)__builtin_clzll(us);
    unsigned sub = (unsigned)(us >> (b - 4)) & 15u;
    unsigned i = (b - 3) * 16 + sub;
    return i < MH_BUCKETS ? i : MH_BUCKETS - 1;
}

static double mh_upper_us(unsigned i)
{
    if (i < 16) {
        return (double)i;
    }
    unsigned b = i / 16 + 3, sub = i % 16;
    return (double)(((uint64_t)(16 + sub + 1) << (b - 4)) - 1);
}

static double mh_p99_ms(const minihist *h)
{
    if (h->n == 0) {
        return 0;
    }
    uint64_t rank = (h->n * 99 + 99) / 100, seen = 0;
    for (unsigned i = 0; i < MH_BUCKETS; i++) {
        seen += h->c[i];
        if (seen >= rank) {
            return mh_upper_us(i) / 1e3;
        }
    }
    return mh_upper_us(MH_BUCKETS - 1) / 1e3;
}

typedef struct {
    const cf_sim_opts *o;
    double event_cost_s;
    /* queue of arrival times */
    double *q;
    size_t qcap, qhead, qlen;
    /* workers */
    worker *w;
    size_t wn, wcap;
    uint32_t *idle;
    size_t nidle, idlecap;
    uint32_t *freeslots;
    size_t nfree;
    hent *heap;
    size_t hn, hcap;
    uint32_t n_start, n_busy, n_drain;
    double startup_last;
    /* cost */
    double prov_last_t, worker_s, cost_end_t;
    uint32_t max_prov;
    /* per interval */
    double tk_arrived, tk_processed, tk_busy;
    minihist tk;
    /* slices */
    uint32_t *sl_n, *sl_over;
    int32_t *sl_mark;
    size_t nsl;
    double slice_s;
    /* totals */
    cf_hist *all;
    double lat_sum;
    uint64_t events, dropped, completed;
    bool oom;
} sim;

static uint32_t prov(const sim *s)
{
    return s->n_start + (uint32_t)s->nidle + s->n_busy + s->n_drain;
}

static void cost_to(sim *s, double t)
{
    double te = t < s->cost_end_t ? t : s->cost_end_t;
    if (te > s->prov_last_t) {
        s->worker_s += (double)prov(s) * (te - s->prov_last_t);
        s->prov_last_t = te;
    }
}

/* ---- heap of worker events (ready or free), lazy deletion by generation --------------- */

static bool heap_push(sim *s, double t, uint32_t id)
{
    if (s->hn == s->hcap) {
        size_t nc = s->hcap ? s->hcap * 2 : 64;
        hent *nh = cf_realloc(s->heap, nc * sizeof(*nh));
        if (nh == NULL) {
            return false;
        }
        s->heap = nh;
        s->hcap = nc;
    }
    size_t i = s->hn++;
    hent e = {t, id, s->w[id].gen};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p].t <= t) {
            break;
        }
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return true;
}

static void heap_pop(sim *s)
{
    hent last = s->heap[--s->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->hn) {
            break;
        }
        if (c + 1 < s->hn && s->heap[c + 1].t < s->heap[c].t) {
            c++;
        }
        if (s->heap[c].t >= last.t) {
            break;
        }
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->hn > 0) {
        s->heap[i] = last;
    }
}

/* Drops stale entries from the top; returns the next live event time (INFINITY: none). */
static double heap_top(sim *s)
{
    while (s->hn > 0) {
        hent *e = &s->heap[0];
        if (e->gen == s->w[e->id].gen &&
            (s->w[e->id].state == W_START || s->w[e->id].state == W_BUSY ||
             s->w[e->id].state == W_DRAIN)) {
            return e->t;
        }
        heap_pop(s);
    }
    return INFINITY;
}

/* ---- workers ------------------------------------------------------------------------------ */

static bool idle_push(sim *s, uint32_t id)
{
    if (s->nidle == s->idlecap) {
        size_t nc = s->idlecap ? s->idlecap * 2 : 64;
        uint32_t *ni = cf_realloc(s->idle, nc * sizeof(*ni));
        if (ni == NULL) {
            return false;
        }
        s->idle = ni;
        s->idlecap = nc;
    }
    s->idle[s->nidle++] = id;
    s->w[id].state = W_IDLE;
    return true;
}

static bool slot_new(sim *s, uint32_t *id)
{
    if (s->nfree > 0) {
        *id = s->freeslots[--s->nfree];
        return true;
    }
    if (s->wn == s->wcap) {
        size_t nc = s->wcap ? s->wcap * 2 : 64;
        if (nc > WORKERS_MAX) {
            nc = WORKERS_MAX;
        }
        if (s->wn == nc) {
            return false;
        }
        worker *nw = cf_realloc(s->w, nc * sizeof(*nw));
        uint32_t *nf = nw != NULL ? cf_realloc(s->freeslots, nc * sizeof(*nf)) : NULL;
        if (nw != NULL) {
            s->w = nw;
        }
        if (nf == NULL) {
            return false;
        }
        s->freeslots = nf;
        s->wcap = nc;
    }
    *id = (uint32_t)s->wn++;
    memset(&s->w[*id], 0, sizeof(worker));
    return true;
}

static void slot_free(sim *s, uint32_t id)
{
    s->w[id].state = W_FREE;
    s->w[id].gen++;
    s->freeslots[s->nfree++] = id;
}

/* ---- latency accounting -------------------------------------------------------------------- */

static size_t slice_of(const sim *s, double t)
{
    double k = floor(t / s->slice_s);
    if (!(k >= 0)) {
        return 0;
    }
    return k >= (double)(s->nsl - 1) ? s->nsl - 1 : (size_t)k;
}

static void record(sim *s, double lat_s, size_t slice)
{
    int64_t us = (int64_t)llround(lat_s * 1e6);
    if (us < 1) {
        us = 1;
    }
    cf_hist_record(s->all, us);
    s->tk.c[mh_index((uint64_t)us)]++;
    s->tk.n++;
    s->lat_sum += lat_s;
    s->sl_n[slice]++;
    if (lat_s * 1e3 > s->o->slo_ms) {
        s->sl_over[slice]++;
    }
}

/* Marks the slices during which an event that arrived at a0 was waiting past the SLO. */
static void mark_stale(sim *s, double a0, double done)
{
    double from = a0 + s->o->slo_ms / 1e3;
    if (done <= from) {
        return;
    }
    size_t s0 = slice_of(s, from), s1 = slice_of(s, done);
    if (s1 > s0) {
        s->sl_mark[s0]++;
        s->sl_mark[s1]--;
    }
}

static void dispatch(sim *s, double t)
{
    while (s->nidle > 0 && s->qlen > 0) {
        uint32_t id = s->idle[--s->nidle];
        size_t n = s->qlen < s->o->batch_max ? s->qlen : s->o->batch_max;
        double service = s->o->batch_cost_s + (double)n * s->event_cost_s;
        double done = t + service;
        size_t slice = slice_of(s, done);
        mark_stale(s, s->q[s->qhead], done);
        for (size_t k = 0; k < n; k++) {
            record(s, done - s->q[s->qhead], slice);
            s->qhead = s->qhead + 1 == s->qcap ? 0 : s->qhead + 1;
        }
        s->qlen -= n;
        s->completed += n;
        s->tk_processed += (double)n;
        s->tk_busy += service;
        s->w[id].state = W_BUSY;
        s->n_busy++;
        if (!heap_push(s, done, id)) {
            s->oom = true;
            return;
        }
    }
}

static bool enqueue(sim *s, double t)
{
    if (s->qlen == s->qcap) {
        if (s->qcap >= s->o->queue_max) {
            return false;
        }
        size_t nc = s->qcap ? s->qcap * 2 : 4096;
        if (nc > s->o->queue_max) {
            nc = (size_t)s->o->queue_max;
        }
        double *nq = cf_malloc(nc * sizeof(double));
        if (nq == NULL) {
            s->oom = true;
            return false;
        }
        for (size_t i = 0; i < s->qlen; i++) {
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        }
        cf_free(s->q);
        s->q = nq;
        s->qcap = nc;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = t;
    s->qlen++;
    return true;
}

/* Moves the pool towards @p target workers (starting, running and draining count). */
static void resize(sim *s, double t, uint32_t target)
{
    cost_to(s, t);
    /* A draining worker is still up: keeping it is cheaper than starting another. */
    for (size_t i = 0; i < s->wn && prov(s) - s->n_drain < target && s->n_drain > 0; i++) {
        if (s->w[i].state == W_DRAIN) {
            s->w[i].state = W_BUSY;
            s->n_drain--;
            s->n_busy++;
        }
    }
    while (prov(s) - s->n_drain < target) {
        uint32_t id;
        if (!slot_new(s, &id)) {
            s->oom = true;
            return;
        }
        s->w[id].state = W_START;
        s->w[id].t_req = t;
        s->n_start++;
        if (!heap_push(s, t + s->o->startup_s, id)) {
            s->oom = true;
            return;
        }
    }
    while (prov(s) - s->n_drain > target) {
        /* Cancel the most recently requested starting worker, else stop an idle one, else
         * let a busy one finish its batch. */
        uint32_t pick = UINT32_MAX;
        for (size_t i = 0; i < s->wn && s->n_start > 0; i++) {
            if (s->w[i].state == W_START &&
                (pick == UINT32_MAX || s->w[i].t_req >= s->w[pick].t_req)) {
                pick = (uint32_t)i;
            }
        }
        if (pick != UINT32_MAX) {
            s->n_start--;
            slot_free(s, pick);
        } else if (s->nidle > 0) {
            slot_free(s, s->idle[--s->nidle]);
        } else {
            for (size_t i = 0; i < s->wn; i++) {
                if (s->w[i].state == W_BUSY) {
                    s->w[i].state = W_DRAIN;
                    s->n_busy--;
                    s->n_drain++;
                    break;
                }
            }
        }
    }
    if (prov(s) > s->max_prov) {
        s->max_prov = prov(s);
    }
}

/* A worker's ready or free event at time t. */
static void worker_event(sim *s, double t, uint32_t id)
{
    worker *w = &s->w[id];
    cost_to(s, t);
    if (w->state == W_START) {
        s->n_start--;
        s->startup_last = t - w->t_req;
        if (!idle_push(s, id)) {
            s->oom = true;
        }
    } else if (w->state == W_BUSY) {
        s->n_busy--;
        if (!idle_push(s, id)) {
            s->oom = true;
        }
    } else if (w->state == W_DRAIN) {
        s->n_drain--;
        slot_free(s, id);
    }
}

/* ---- arrivals ------------------------------------------------------------------------------ */

typedef struct {
    const double *counts;
    size_t n;
    double row_s;
    size_t row;
    double t;
    cf__rng rng;
    bool poisson;
    /* even spacing */
    double carry;
    uint64_t k, m;
} arrivals;

static double next_arrival(arrivals *a)
{
    while (a->row < a->n) {
        double row_start = (double)a->row * a->row_s;
        double row_end = (double)(a->row + 1) * a->row_s;
        double c = a->counts[a->row] > 0 ? a->counts[a->row] : 0;
        if (a->poisson) {
            if (c > 0) {
                double cand =
                    (a->t > row_start ? a->t : row_start) + cf__rng_exp(&a->rng) * a->row_s / c;
                if (cand < row_end) {
                    a->t = cand;
                    return cand;
                }
            }
        } else {
            if (a->k == 0 && a->m == 0) {
                double want = c + a->carry;
                a->m = (uint64_t)floor(want);
                a->carry = want - (double)a->m;
            }
            if (a->k < a->m) {
                double t = row_start + ((double)a->k + 0.5) * a->row_s / (double)a->m;
                a->k++;
                return t;
            }
            a->k = 0;
            a->m = 0;
        }
        a->row++;
        a->t = row_end;
    }
    return INFINITY;
}

/* ---- run ----------------------------------------------------------------------------------- */

void cf_sim_opts_default(cf_sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->compress = 1;
    o->worker_rate = 1000;
    o->batch_cost_s = 0.0005;
    o->batch_max = 256;
    o->startup_s = 30;
    o->slo_ms = 500;
    o->slo_window_s = 1;
    o->initial_workers = 1;
    o->poisson = true;
    o->seed = 1;
    o->queue_max = 50000000;
}

static void sim_free(sim *s)
{
    cf_free(s->q);
    cf_free(s->w);
    cf_free(s->idle);
    cf_free(s->freeslots);
    cf_free(s->heap);
    cf_free(s->sl_n);
    cf_free(s->sl_over);
    cf_free(s->sl_mark);
    cf_hist_destroy(s->all);
}

cf_err cf_sim_run(const double *counts, size_t n, double interval_s, const cf_sim_opts *o,
                  cf_policy *p, cf_sim_tick_cb cb, void *opaque, cf_sim_result *res, char *errstr,
                  size_t errstr_size)
{
    CF_ASSERT(counts != NULL && o != NULL && p != NULL && res != NULL);
    cf_err err = CF_OK;
    sim s;
    memset(&s, 0, sizeof(s));
    memset(res, 0, sizeof(*res));
    s.o = o;
    if (n < 1 || !(interval_s > 0) || !(o->compress > 0)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "sim: need >= 1 interval, interval_s > 0, compress > 0");
    }
    if (!(o->worker_rate > 0) || !(o->batch_cost_s >= 0) || o->batch_max < 1 ||
        !(o->startup_s >= 0) || !(o->slo_ms > 0) || !(o->slo_window_s > 0) ||
        o->initial_workers < 1 || o->initial_workers > WORKERS_MAX || o->queue_max < 1) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "sim: worker_rate > 0, batch_cost_s >= 0, batch_max >= 1, "
                          "startup_s >= 0, slo_ms > 0, slo_window_s > 0, initial workers "
                          "1..%u, queue_max >= 1",
                          WORKERS_MAX);
    }
    s.event_cost_s = 1.0 / o->worker_rate - o->batch_cost_s / o->batch_max;
    if (!(s.event_cost_s > 0)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "sim: batch_cost_s %g is more than a full batch of %u takes at %g "
                          "events/s",
                          o->batch_cost_s, o->batch_max, o->worker_rate);
    }
    double row_s = interval_s / o->compress;
    double end_s = (double)n * row_s;
    for (size_t i = 0; i < n; i++) {
        if (!(counts[i] >= 0) || !isfinite(counts[i])) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "sim: count %zu is invalid", i);
        }
    }
    /* Slices cover the trace and a drain of up to twice its length (later is clamped). */
    double nsl = ceil(3 * end_s / o->slo_window_s) + 2;
    if (nsl > SLICES_MAX) {
        return cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                          "sim: %.0f SLO slices of %g s, more than %u: raise --compress or "
                          "the slice",
                          nsl, o->slo_window_s, SLICES_MAX);
    }
    s.nsl = (size_t)nsl;
    s.slice_s = o->slo_window_s;
    s.cost_end_t = end_s;
    s.sl_n = cf_calloc(s.nsl, sizeof(uint32_t));
    s.sl_over = cf_calloc(s.nsl, sizeof(uint32_t));
    s.sl_mark = cf_calloc(s.nsl + 1, sizeof(int32_t));
    if (s.sl_n == NULL || s.sl_over == NULL || s.sl_mark == NULL) {
        err = CF_E_NOMEM;
        goto out;
    }
    err = cf_hist_create(&s.all);
    if (err != CF_OK) {
        goto out;
    }
    for (uint32_t i = 0; i < o->initial_workers; i++) {
        uint32_t id;
        if (!slot_new(&s, &id) || !idle_push(&s, id)) {
            err = CF_E_NOMEM;
            goto out;
        }
    }
    s.max_prov = prov(&s);
    arrivals a = {counts, n, row_s, 0, 0, {o->seed}, o->poisson, 0, 0, 0};
    double next_arr = next_arrival(&a);
    size_t row = 0;
    double tick_t = row_s;
    double last_tick = 0;
    while (!s.oom) {
        double tw = heap_top(&s);
        double tt = row < n ? tick_t : INFINITY;
        if (tw == INFINITY && next_arr == INFINITY && tt == INFINITY) {
            break;
        }
        if (tw <= next_arr && tw <= tt) {
            uint32_t id = s.heap[0].id;
            heap_pop(&s);
            worker_event(&s, tw, id);
            dispatch(&s, tw);
        } else if (next_arr <= tt) {
            double t = next_arr;
            s.events++;
            s.tk_arrived += 1;
            if (!enqueue(&s, t)) {
                if (s.oom) {
                    break;
                }
                s.dropped++;
                size_t sl = slice_of(&s, t);
                record(&s, DROP_LAT_S, sl);
            } else {
                dispatch(&s, t);
            }
            next_arr = next_arrival(&a);
        } else {
            double t = tt;
            cf_scale_obs obs = {
                .now_s = t,
                .interval_s = t - last_tick,
                .arrived = s.tk_arrived,
                .processed = s.tk_processed,
                .busy_s = s.tk_busy,
                .backlog = (double)s.qlen,
                .p99_ms = mh_p99_ms(&s.tk),
                .ready = (uint32_t)s.nidle + s.n_busy + s.n_drain,
                .starting = s.n_start,
                .startup_s = s.startup_last,
            };
            cf_scale_decision d;
            cf_policy_decide(p, &obs, &d);
            uint32_t before = prov(&s) - s.n_drain;
            if (d.workers != before) {
                res->rescales++;
            }
            resize(&s, t, d.workers);
            dispatch(&s, t);
            if (cb != NULL) {
                cf_sim_tick tk = {t,
                                  obs.arrived / obs.interval_s,
                                  d.forecast_rate,
                                  (uint32_t)s.nidle + s.n_busy + s.n_drain,
                                  d.workers,
                                  obs.p99_ms,
                                  (double)s.qlen};
                cb(opaque, &tk);
            }
            s.tk_arrived = s.tk_processed = s.tk_busy = 0;
            memset(&s.tk, 0, sizeof(s.tk));
            last_tick = t;
            row++;
            tick_t = (double)(row + 1) * row_s;
        }
    }
    if (s.oom) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "sim: out of memory");
        goto out;
    }
    cost_to(&s, end_s);
    /* Slices: p99 over the SLO, or an event waiting past it. */
    double viol = 0;
    int64_t stale = 0;
    for (size_t i = 0; i < s.nsl; i++) {
        stale += s.sl_mark[i];
        uint32_t tot = s.sl_n[i];
        uint64_t within = tot - s.sl_over[i];
        bool bad = stale > 0 || (tot > 0 && within < ((uint64_t)tot * 99 + 99) / 100);
        if (bad) {
            viol += s.slice_s;
        }
    }
    res->slo_violation_s = viol;
    res->p99_ms = (double)cf_hist_percentile(s.all, 99, 1) / 1e3;
    uint64_t cnt = cf_hist_count(s.all);
    res->mean_ms = cnt > 0 ? s.lat_sum / (double)cnt * 1e3 : 0;
    res->worker_s = s.worker_s;
    res->events = s.events;
    res->dropped = s.dropped;
    res->duration_s = end_s;
    res->max_workers = s.max_prov;
out:
    sim_free(&s);
    return err;
}

double cf_sim_mdc_wait_s(double lambda, double mu, unsigned c)
{
    if (!(lambda > 0) || !(mu > 0) || c < 1) {
        return 0;
    }
    double a = lambda / mu, rho = a / c;
    if (rho >= 1) {
        return INFINITY;
    }
    /* Erlang C, with terms built incrementally to stay finite for large c. */
    double term = 1, sum = 1;
    for (unsigned k = 1; k < c; k++) {
        term *= a / k;
        sum += term;
    }
    double last = term * a / c / (1 - rho);
    double pw = last / (sum + last);
    double wq_mmc = pw / (c * mu - lambda);
    double corr = 1 + (1 - rho) * (c - 1) * (sqrt(4.0 + 5.0 * c) - 2) / (16 * rho * c);
    return 0.5 * corr * wq_mmc;
}
