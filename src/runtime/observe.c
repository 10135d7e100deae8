/*
 * What an operator and a person at the terminal see of a running pipeline: the metrics
 * registry (docs/metrics.md), the /metrics and /healthz server, and the status thread that
 * feeds the live status line, the progress bar and --stats-json.
 *
 * Hot path: every update is a relaxed atomic on a series handle registered at setup, and
 * the pipeline makes them per batch, not per event: the decode stage adds its counts once
 * per chunk, the gateway once per batch, the sink folds a batch's latencies into at most
 * one observation per histogram bucket (the bucket's mean, so bucket counts are exact and
 * the sum is exact up to rounding). Dead-letter reasons are registered when first seen
 * (the registry lock, a small allocation): they are rare and their labels are bounded
 * (the decoder's reason up to the first ':', at most OB_REASONS, then "other"), so ids or
 * values in a reason never become label values.
 *
 * Threads: the decode, gateway and sink threads update; the HTTP thread (libmicrohttpd)
 * renders; the status thread reads counters, ring depths and the controller's live p99
 * (which locks) and calls the status callback. The controller itself is owned by the
 * gateway thread: its target and linger reach the decode thread through two atomics here,
 * published after every cf_batch_ctl_observe.
 *
 * Memory: fixed after setup, except the first registration of each dead-letter reason.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "observe.h"

#define EV_HELP "Events that left a pipeline stage, by stage and outcome."

static cf_err counter(cf_observe *o, const char *stage, const char *outcome, cf_counter **out,
                      char *errstr, size_t errstr_size)
{
    cf_label l[] = {{"stage", stage}, {"outcome", outcome}};
    return cf_metrics_counter(o->m, CF_METRIC_EVENTS_TOTAL, EV_HELP, l, 2, out, errstr,
                              errstr_size);
}

static bool health(void *opaque, char *detail, size_t detail_size)
{
    cf_observe *o = opaque;
    if (atomic_load(&o->unhealthy)) {
        snprintf(detail, detail_size, "a pipeline stage failed; the run is stopping");
        return false;
    }
    return true;
}

cf_err cf__observe_create(cf_observe **out, char *errstr, size_t errstr_size)
{
    cf_err err;
    cf_observe *o = cf_calloc(1, sizeof(*o));
    if (o == NULL) {
        return CF_E_NOMEM;
    }
    if (pthread_mutex_init(&o->mu, NULL) != 0) {
        cf_free(o);
        return CF_E_NOMEM;
    }
    /* The status interval is measured on the monotonic clock: a wall-clock step must not
     * stall or flood the status line. */
    pthread_condattr_t ca;
    bool cv_ok = pthread_condattr_init(&ca) == 0;
    cv_ok = cv_ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
            pthread_cond_init(&o->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_ok) {
        pthread_mutex_destroy(&o->mu);
        cf_free(o);
        return CF_E_NOMEM;
    }
    o->con.mu_ok = pthread_mutex_init(&o->con.mu, NULL) == 0;
    if (!o->con.mu_ok) {
        err = CF_E_NOMEM;
        goto fail;
    }
    if ((err = cf_metrics_create(&o->m)) != CF_OK) {
        goto fail;
    }
    cf_label gw[] = {{"stage", "gateway"}};
    cf_label other[] = {{"reason", "other"}};
    if ((err = counter(o, "decode", "accepted", &o->decode_accepted, errstr, errstr_size)) ||
        (err = counter(o, "decode", "dead_lettered", &o->decode_dead, errstr, errstr_size)) ||
        (err = counter(o, "decode", "resumed", &o->decode_resumed, errstr, errstr_size)) ||
        (err = counter(o, "gateway", "committed", &o->gateway_committed, errstr, errstr_size)) ||
        (err = counter(o, "sink", "delivered", &o->sink_delivered, errstr, errstr_size)) ||
        (err = cf_metrics_counter(o->m, CF_METRIC_DEAD_LETTERS_TOTAL,
                                  "Records sent to the dead-letter output, by reason.", other, 1,
                                  &o->reason_other, errstr, errstr_size)) ||
        (err = cf_metrics_histogram(
             o->m, CF_METRIC_EVENT_LATENCY,
             "Event latency, ingest (or scheduled send time when paced) to the sink.",
             cf_metrics_latency_buckets_us, cf_metrics_latency_buckets_us_n, -6, NULL, 0,
             &o->latency, errstr, errstr_size)) ||
        (err = cf_metrics_histogram(o->m, CF_METRIC_BATCH_SIZE, "Events per batch.",
                                    cf_metrics_size_buckets, cf_metrics_size_buckets_n, 0, gw, 1,
                                    &o->batch_size, errstr, errstr_size)) ||
        (err = cf_metrics_histogram(
             o->m, CF_METRIC_BATCH_SERVICE,
             "Time to process one batch (rules, audit append and fsync, share split).",
             cf_metrics_latency_buckets_us, cf_metrics_latency_buckets_us_n, -6, gw, 1,
             &o->batch_service, errstr, errstr_size)) ||
        (err = cf_metrics_gauge(o->m, CF_METRIC_BATCH_TARGET,
                                "The batch size the controller aims for.", gw, 1, &o->batch_target,
                                errstr, errstr_size)) ||
        (err = cf_metrics_gauge(o->m, "confide_batch_linger_seconds",
                                "How long a partial batch may wait for more events.", gw, 1,
                                &o->batch_linger, errstr, errstr_size)) ||
        (err = cf_metrics_counter(o->m, "confide_slo_violation_seconds_total",
                                  "Whole seconds of wall time whose p99 event latency was above "
                                  "slo.p99_ms (or that delivered nothing while an event waited "
                                  "past it).",
                                  NULL, 0, &o->slo_violation, errstr, errstr_size))) {
        goto fail;
    }
    cf_metrics_set_health(o->m, health, o);
    *out = o;
    return CF_OK;
fail:
    cf__observe_destroy(o);
    return err;
}

void cf__observe_destroy(cf_observe *o)
{
    if (o == NULL) {
        return;
    }
    cf__observe_status_stop(o);
    cf_metrics_server_stop(o->srv);
    cf_metrics_destroy(o->m);
    if (o->con.mu_ok) {
        pthread_mutex_destroy(&o->con.mu);
    }
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    cf_free(o);
}

static double ring_depth(void *opaque)
{
    return (double)cf_ring_size(opaque);
}

cf_err cf__observe_queue(cf_observe *o, const char *name, cf_ring *ring, char *errstr,
                         size_t errstr_size)
{
    cf_label l[] = {{"queue", name}};
    return cf_metrics_gauge_fn(o->m, CF_METRIC_QUEUE_DEPTH,
                               "Items waiting in a bounded ring between two stages.", l, 1,
                               ring_depth, ring, errstr, errstr_size);
}

cf_err cf__observe_serve(cf_observe *o, const char *addr, char *errstr, size_t errstr_size)
{
    char e[256] = "";
    cf_err err = cf_metrics_serve(o->m, addr, &o->srv, &o->port, e, sizeof(e));
    if (err != CF_OK) {
        return cf_err_set(err, errstr, errstr_size, "metrics.listen '%s': %s", addr, e);
    }
    return CF_OK;
}

/* ---- hot path ---- */

void cf__observe_reason_label(const char *reason, char *out, size_t size)
{
    CF_ASSERT(size >= 2);
    size_t j = 0;
    bool sep = false;
    for (const char *p = reason; *p != '\0' && *p != ':' && j + 1 < size; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z') {
            ch = (char)(ch - 'A' + 'a');
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
            if (sep && j > 0) {
                out[j++] = '_';
                if (j + 1 >= size) {
                    break;
                }
            }
            out[j++] = ch;
            sep = false;
        } else {
            sep = true; /* spaces, quotes, dashes: one '_' between words */
        }
    }
    if (j == 0) {
        snprintf(out, size, "unknown");
        return;
    }
    out[j] = '\0';
}

void cf__observe_dead_letter(cf_observe *o, const char *reason)
{
    char label[sizeof(o->reasons[0].label)];
    cf__observe_reason_label(reason, label, sizeof(label));
    for (unsigned i = 0; i < o->nreasons; i++) {
        if (strcmp(o->reasons[i].label, label) == 0) {
            cf_counter_inc(o->reasons[i].c);
            return;
        }
    }
    cf_counter *c = NULL;
    if (o->nreasons < OB_REASONS) {
        cf_label l[] = {{"reason", label}};
        char e[128];
        if (cf_metrics_counter(o->m, CF_METRIC_DEAD_LETTERS_TOTAL,
                               "Records sent to the dead-letter output, by reason.", l, 1, &c, e,
                               sizeof(e)) == CF_OK) {
            ob_reason *r = &o->reasons[o->nreasons++];
            memcpy(r->label, label, sizeof(label));
            r->c = c;
        }
    }
    cf_counter_inc(c != NULL ? c : o->reason_other);
}

void cf__observe_batch(cf_observe *o, uint32_t n, int64_t service_ns)
{
    cf_histogram_observe(o->batch_size, n);
    cf_histogram_observe(o->batch_service, service_ns / 1000);
    cf_counter_add(o->gateway_committed, n);
}

/*
 * The SLO in 1 s buckets of wall time from the run's start. A bucket violates when the p99
 * (nearest rank) of the events delivered in it is above slo.p99_ms: with n events of which
 * `over` are above, p99 is the value of rank ceil(0.99 n), above the SLO exactly when over >
 * n - ceil(0.99 n). A bucket that delivered nothing violates when an event waited past the SLO
 * during it: the next batch's oldest event was due (ingest + SLO) before the bucket ended.
 */
static void slo_close(cf_observe *o, int64_t oldest_ingest_ns)
{
    bool bad;
    if (o->slo_n > 0) {
        uint64_t rank = (o->slo_n * 99 + 99) / 100;
        bad = o->slo_over > o->slo_n - rank;
    } else {
        int64_t end = o->t0_ns + (o->slo_sec + 1) * INT64_C(1000000000);
        bad = oldest_ingest_ns != INT64_MAX && oldest_ingest_ns + o->slo_us * 1000 < end;
    }
    if (bad) {
        o->slo_bad++;
        cf_counter_inc(o->slo_violation);
    }
    o->slo_sec++;
    o->slo_n = o->slo_over = 0;
}

static void slo_batch(cf_observe *o, const cf_batch *b, int64_t now_ns)
{
    if (o->slo_us <= 0 || o->t0_ns == 0 || b->n == 0) {
        return;
    }
    int64_t sec = (now_ns - o->t0_ns) / INT64_C(1000000000);
    int64_t oldest = INT64_MAX;
    for (uint32_t i = 0; i < b->n; i++) {
        oldest = b->ev[i].ingest_ns < oldest ? b->ev[i].ingest_ns : oldest;
    }
    while (o->slo_sec < sec) {
        slo_close(o, oldest);
    }
    for (uint32_t i = 0; i < b->n; i++) {
        o->slo_over += now_ns - b->ev[i].ingest_ns > o->slo_us * 1000;
    }
    o->slo_n += b->n;
}

double cf__observe_slo_seconds(cf_observe *o, int64_t now_ns)
{
    if (o->slo_us <= 0 || o->t0_ns == 0) {
        return 0;
    }
    int64_t sec = (now_ns - o->t0_ns) / INT64_C(1000000000);
    while (o->slo_sec < sec) {
        slo_close(o, INT64_MAX); /* nothing was waiting: every event was delivered */
    }
    double bad = (double)o->slo_bad;
    if (o->slo_n > 0) {
        uint64_t rank = (o->slo_n * 99 + 99) / 100;
        if (o->slo_over > o->slo_n - rank) {
            bad += (double)(now_ns - o->t0_ns - sec * INT64_C(1000000000)) / 1e9;
        }
    }
    return bad;
}

void cf__observe_sink(cf_observe *o, cf_batch_ctl *ctl, const cf_batch *b, int64_t now_ns)
{
    slo_batch(o, b, now_ns);
    enum { NB = 64 };
    uint64_t cnt[NB + 1];
    int64_t sum[NB + 1];
    const int64_t *bounds = cf_metrics_latency_buckets_us;
    size_t nb = cf_metrics_latency_buckets_us_n;
    CF_ASSERT(nb <= NB);
    memset(cnt, 0, sizeof(cnt[0]) * (nb + 1));
    memset(sum, 0, sizeof(sum[0]) * (nb + 1));
    int64_t oldest = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        int64_t us = (now_ns - b->ev[i].ingest_ns) / 1000;
        us = us < 1 ? 1 : us;
        oldest = us > oldest ? us : oldest;
        size_t lo = 0, hi = nb; /* first bound >= us; nb is +Inf */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (bounds[mid] >= us) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        cnt[lo]++;
        sum[lo] += us;
    }
    for (size_t j = 0; j <= nb; j++) {
        if (cnt[j] > 0) {
            /* The mean of values within a bucket lies in the bucket. */
            cf_histogram_observe_n(o->latency, sum[j] / (int64_t)cnt[j], cnt[j]);
        }
    }
    cf_counter_add(o->sink_delivered, b->n);
    if (ctl != NULL && b->n > 0) {
        /* The model's T(n) is the batch's worst event: feed that, once per batch. */
        cf_batch_ctl_record_latency(ctl, now_ns, oldest, b->n);
    }
}

/* ---- status thread ---- */

static void console_start(cf_observe *o);
static void console_tick(cf_observe *o);

static void sample(cf_observe *o, cf_run_status *st, bool final)
{
    int64_t now = cf_now_ns();
    memset(st, 0, sizeof(*st));
    st->final = final;
    st->elapsed_s = (double)(now - o->t0_ns) / 1e9;
    st->accepted = cf_counter_value(o->decode_accepted) + cf_counter_value(o->decode_resumed);
    st->dead_lettered = cf_counter_value(o->decode_dead);
    st->committed = cf_counter_value(o->gateway_committed);
    uint64_t batches = cf_histogram_count(o->batch_size);
    int64_t bsum = cf_histogram_sum(o->batch_size);
    double dt = (double)(now - o->prev_ns) / 1e9;
    if (final) {
        /* the whole run */
        dt = st->elapsed_s;
        o->prev_committed = 0;
        o->prev_batches = 0;
        o->prev_batch_sum = 0;
    }
    st->events_per_s = dt > 0 ? (double)(st->committed - o->prev_committed) / dt : 0;
    if (batches > o->prev_batches) {
        st->batch_mean = (double)(bsum - o->prev_batch_sum) / (double)(batches - o->prev_batches);
    }
    o->prev_committed = st->committed;
    o->prev_batches = batches;
    o->prev_batch_sum = bsum;
    o->prev_ns = now;
    st->p99_us = o->ctl != NULL ? cf_batch_ctl_window_p99_us(o->ctl, now) : 0;
    st->batch_target = atomic_load_explicit(&o->target, memory_order_relaxed);
    st->queue_decode = o->queue[0] != NULL ? cf_ring_size(o->queue[0]) : 0;
    st->queue_gateway = o->queue[1] != NULL ? cf_ring_size(o->queue[1]) : 0;
    st->queue_sink = o->queue[2] != NULL ? cf_ring_size(o->queue[2]) : 0;
    st->bytes_read = atomic_load_explicit(&o->bytes_read, memory_order_relaxed);
    st->bytes_total = o->bytes_total;
}

static void *status_main(void *arg)
{
    cf_observe *o = arg;
    pthread_mutex_lock(&o->mu);
    while (!o->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + o->interval_ns;
        ts.tv_sec = at / 1000000000;
        ts.tv_nsec = at % 1000000000;
        int rc = 0;
        while (!o->stop && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&o->cv, &o->mu, &ts);
        }
        if (o->stop) {
            break;
        }
        pthread_mutex_unlock(&o->mu);
        if (o->status_cb != NULL) {
            cf_run_status st;
            sample(o, &st, false);
            o->status_cb(o->status_opaque, &st);
        }
        if (o->srv != NULL) {
            console_tick(o);
        }
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

cf_err cf__observe_status_start(cf_observe *o)
{
    o->t0_ns = cf_now_ns();
    o->prev_ns = o->t0_ns;
    if (o->interval_ns <= 0) {
        o->interval_ns = INT64_C(1000000000);
    }
    console_start(o);
    if (o->status_cb == NULL && o->srv == NULL) {
        return CF_OK;
    }
    o->stop = false;
    if (pthread_create(&o->thread, NULL, status_main, o) != 0) {
        return CF_E_NOMEM;
    }
    o->thread_started = true;
    return CF_OK;
}

void cf__observe_status_stop(cf_observe *o)
{
    if (!o->thread_started) {
        return;
    }
    pthread_mutex_lock(&o->mu);
    o->stop = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    o->thread_started = false;
    if (o->srv != NULL) {
        console_tick(o); /* the last interval, after every stage has finished */
    }
    if (o->status_cb != NULL) {
        cf_run_status st;
        sample(o, &st, true);
        o->status_cb(o->status_opaque, &st);
    }
}

/* ---- the status line ---- */

size_t cf_run_status_format(const cf_run_status *st, char *buf, size_t size)
{
    if (size == 0) {
        return 0;
    }
    char p99[32];
    if (st->p99_us <= 0) {
        snprintf(p99, sizeof(p99), "-");
    } else if (st->p99_us < 10000) {
        snprintf(p99, sizeof(p99), "%.2f ms", (double)st->p99_us / 1000.0);
    } else {
        snprintf(p99, sizeof(p99), "%.0f ms", (double)st->p99_us / 1000.0);
    }
    int n = snprintf(buf, size,
                     "%6.1f s  %8.0f ev/s  p99 %s  batch %.1f (target %u)  queues %zu/%zu/%zu  "
                     "%llu ok %llu dead",
                     st->elapsed_s, st->events_per_s, p99, st->batch_mean, st->batch_target,
                     st->queue_decode, st->queue_gateway, st->queue_sink,
                     (unsigned long long)st->committed, (unsigned long long)st->dead_lettered);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    size_t len = (size_t)n < size ? (size_t)n : size - 1;
    if (st->bytes_total > 0 && len + 32 < size) {
        double frac = (double)st->bytes_read / (double)st->bytes_total;
        frac = frac > 1 ? 1 : frac;
        char bar[21];
        int fill = (int)(frac * 20.0 + 0.5);
        for (int i = 0; i < 20; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[20] = '\0';
        n = snprintf(buf + len, size - len, "  [%s] %3.0f%%", bar, frac * 100.0);
        if (n > 0) {
            len += (size_t)n < size - len ? (size_t)n : size - len - 1;
        }
    }
    return len;
}

/* ---- the console: /api/status ----
 *
 * The status thread adds one sample per interval to a ring of OB_HISTORY (rates, latency
 * quantiles of the interval from the latency histogram's bucket deltas, batching, queues,
 * watermark lag); the HTTP thread renders the JSON from the registry, that ring, the last
 * signed tree head and, once the run ended, its summary. Everything here is counts, rates,
 * rule ids, reasons and hashes: no amount, account or merchant id can reach the page. */

static void console_start(cf_observe *o)
{
    ob_console *c = &o->con;
    pthread_mutex_lock(&c->mu);
    c->state = 1;
    /* what the HTTP thread shows, handed over under the lock (set by the pipeline's thread) */
    c->t0_ns = o->t0_ns;
    c->interval_s = (double)o->interval_ns / 1e9;
    c->bytes_total = o->bytes_total;
    pthread_mutex_unlock(&c->mu);
    c->prev_ns = o->t0_ns;
    cf_histogram_bucket_counts(o->latency, c->prev_lat, OB_BUCKETS);
    c->prev_committed = cf_counter_value(o->gateway_committed);
    c->prev_batches = cf_histogram_count(o->batch_size);
    c->prev_batch_sum = cf_histogram_sum(o->batch_size);
}

/* The q-quantile of per-bucket counts @p d, interpolated linearly inside its bucket as
 * Prometheus' histogram_quantile does (the +Inf bucket answers the highest finite bound).
 * Milliseconds; NaN when there are no observations. */
static double bucket_quantile_ms(const uint64_t *d, size_t nb, const int64_t *bounds, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= nb; i++) {
        total += d[i];
    }
    if (total == 0) {
        return NAN;
    }
    double rank = q * (double)total;
    double cum = 0;
    for (size_t i = 0; i <= nb; i++) {
        if (d[i] == 0) {
            continue;
        }
        if (cum + (double)d[i] >= rank) {
            if (i == nb) {
                return (double)bounds[nb - 1] / 1000.0;
            }
            double lo = i == 0 ? 0 : (double)bounds[i - 1];
            double hi = (double)bounds[i];
            return (lo + (hi - lo) * (rank - cum) / (double)d[i]) / 1000.0;
        }
        cum += (double)d[i];
    }
    return (double)bounds[nb - 1] / 1000.0;
}

static void sum_cb(void *opaque, const cf_label *labels, size_t nlabels, double value)
{
    (void)labels;
    (void)nlabels;
    if (!isnan(value)) {
        *(double *)opaque += value;
    }
}

static double family_sum(cf_observe *o, const char *name, bool *found)
{
    double v = 0;
    bool f = cf_metrics_visit(o->m, name, sum_cb, &v) == CF_OK;
    if (found != NULL) {
        *found = f;
    }
    return v;
}

static void console_tick(cf_observe *o)
{
    ob_console *c = &o->con;
    int64_t now = cf_now_ns();
    ob_sample sm;
    sm.ts_us = cf_wall_us();
    double dt = (double)(now - c->prev_ns) / 1e9;
    uint64_t committed = cf_counter_value(o->gateway_committed);
    sm.events_per_s = dt > 0 ? (double)(committed - c->prev_committed) / dt : NAN;
    uint64_t cur[OB_BUCKETS], d[OB_BUCKETS];
    size_t nb = cf_metrics_latency_buckets_us_n;
    CF_ASSERT(nb + 1 <= OB_BUCKETS);
    cf_histogram_bucket_counts(o->latency, cur, OB_BUCKETS);
    for (size_t i = 0; i <= nb; i++) {
        d[i] = cur[i] - c->prev_lat[i];
        c->prev_lat[i] = cur[i];
    }
    sm.p50_ms = bucket_quantile_ms(d, nb, cf_metrics_latency_buckets_us, 0.50);
    sm.p99_ms = bucket_quantile_ms(d, nb, cf_metrics_latency_buckets_us, 0.99);
    sm.p999_ms = bucket_quantile_ms(d, nb, cf_metrics_latency_buckets_us, 0.999);
    uint64_t batches = cf_histogram_count(o->batch_size);
    int64_t bsum = cf_histogram_sum(o->batch_size);
    sm.batch_mean = batches > c->prev_batches
                        ? (double)(bsum - c->prev_batch_sum) / (double)(batches - c->prev_batches)
                        : NAN;
    sm.batch_target = (double)atomic_load_explicit(&o->target, memory_order_relaxed);
    sm.queued = family_sum(o, CF_METRIC_QUEUE_DEPTH, NULL);
    bool wm_found = false;
    double wm = family_sum(o, "confide_watermark_timestamp_seconds", &wm_found);
    sm.watermark_lag_s =
        wm_found && wm > 0 ? family_sum(o, CF_METRIC_WATERMARK_LAG, NULL) : (double)NAN;
    c->prev_ns = now;
    c->prev_committed = committed;
    c->prev_batches = batches;
    c->prev_batch_sum = bsum;
    pthread_mutex_lock(&c->mu);
    c->hist[c->hist_next] = sm;
    c->hist_next = (c->hist_next + 1) % OB_HISTORY;
    if (c->hist_n < OB_HISTORY) {
        c->hist_n++;
    }
    pthread_mutex_unlock(&c->mu);
}

void cf__observe_configure(cf_observe *o, const struct cf_config *c)
{
    ob_console *k = &o->con;
    snprintf(k->protect, sizeof(k->protect), "%s", c->protect);
    snprintf(k->batch_mode, sizeof(k->batch_mode), "%s", c->batch_mode);
    k->slo_p99_ms = c->slo_p99_ms;
    o->slo_us = c->slo_p99_ms * 1000;
    k->queue_capacity = c->pipeline_ring_batches;
    k->min_count = c->min_count;
    k->parties = strcmp(c->protect, "lsa") == 0 ? c->parties : strcmp(c->protect, "plain") == 0;
    k->rules = c->rules_file[0] != '\0';
    k->audit = c->audit_enabled && (c->output_dir[0] != '\0' || c->audit_dir[0] != '\0');
    k->paced = c->input_rate > 0;
    if (o->interval_ns <= 0) {
        o->interval_ns = c->status_interval_ms * INT64_C(1000000);
    }
    cf_metrics_set_status(o->m, cf__observe_status_json, o);
}

void cf__observe_finish(cf_observe *o, const cf_summary *s, cf_err err, const char *errstr)
{
    ob_console *c = &o->con;
    char js[1024];
    size_t n = cf_summary_to_json(s, js, sizeof(js));
    js[n] = '\0'; /* 0: did not fit (it always does: fixed fields) */
    while (n > 0 && js[n - 1] == '\n') {
        js[--n] = '\0';
    }
    pthread_mutex_lock(&c->mu);
    memcpy(c->summary, js, n + 1);
    c->state = err == CF_OK ? 2 : 3;
    c->t_end_ns = cf_now_ns();
    if (err != CF_OK) {
        /* the pipeline's errstr names paths and reasons, never record contents */
        snprintf(c->error, sizeof(c->error), "%s", errstr != NULL ? errstr : cf_strerror(err));
    }
    pthread_mutex_unlock(&c->mu);
}

static double head_age_s(void *opaque)
{
    cf_gauge *ts = opaque;
    double t = cf_gauge_value(ts);
    return t > 0 ? (double)cf_wall_us() / 1e6 - t : (double)NAN;
}

cf_err cf__observe_secure_metrics(cf_observe *o, bool windows, bool audit, const cf_audit_sth *last,
                                  char *errstr, size_t errstr_size)
{
    cf_err err;
    if (windows) {
        cf_label rel[] = {{"outcome", "released"}};
        cf_label wh[] = {{"outcome", "withheld"}};
        const char *help = "Aggregates (window, group) the combiner verified: released, or "
                           "withheld below min_count.";
        if ((err = cf_metrics_counter(o->m, CF_METRIC_RESULTS_TOTAL, help, rel, 1,
                                      &o->results_released, errstr, errstr_size)) != CF_OK ||
            (err = cf_metrics_counter(o->m, CF_METRIC_RESULTS_TOTAL, help, wh, 1,
                                      &o->results_withheld, errstr, errstr_size)) != CF_OK) {
            return err;
        }
        for (uint32_t r = 0; r < OB_LATE_REASONS; r++) {
            /* 0: window state full; then cf_window_late_reason */
            static const char *const names[OB_LATE_REASONS] = {"state_limit", "beyond_lateness",
                                                               "beyond_lateness_some_windows"};
            cf_label l[] = {{"reason", names[r]}};
            if ((err = cf_metrics_counter(o->m, CF_METRIC_LATE_EVENTS_TOTAL,
                                          "Events sent to the late output instead of a window, "
                                          "by reason.",
                                          l, 1, &o->late_reason[r], errstr, errstr_size)) !=
                CF_OK) {
                return err;
            }
        }
    }
    if (audit) {
        if ((err = cf_metrics_gauge(o->m, CF_METRIC_AUDIT_TREE_SIZE,
                                    "Leaves (events) in the audit log's Merkle tree at its last "
                                    "signed tree head.",
                                    NULL, 0, &o->audit_tree_size, errstr, errstr_size)) != CF_OK ||
            (err = cf_metrics_gauge(o->m, CF_METRIC_AUDIT_HEAD_TIMESTAMP,
                                    "When the audit log's last tree head was signed (Unix time).",
                                    NULL, 0, &o->audit_head_ts, errstr, errstr_size)) != CF_OK ||
            (err = cf_metrics_gauge_fn(o->m, CF_METRIC_AUDIT_HEAD_AGE,
                                       "Seconds since the audit log's last tree head was signed "
                                       "(NaN before the first).",
                                       NULL, 0, head_age_s, o->audit_head_ts, errstr,
                                       errstr_size)) != CF_OK) {
            return err;
        }
        if (last != NULL) {
            cf__observe_audit_head(o, last);
        }
    }
    return CF_OK;
}

void cf__observe_audit_head(cf_observe *o, const cf_audit_sth *sth)
{
    if (o == NULL || o->audit_tree_size == NULL) {
        return;
    }
    cf_gauge_set(o->audit_tree_size, (double)sth->tree_size);
    cf_gauge_set(o->audit_head_ts, (double)sth->timestamp_us / 1e6);
    pthread_mutex_lock(&o->con.mu);
    o->con.head = *sth;
    o->con.head_set = true;
    pthread_mutex_unlock(&o->con.mu);
}

void cf__observe_late(cf_observe *o, uint32_t reason)
{
    if (o != NULL && reason < OB_LATE_REASONS && o->late_reason[reason] != NULL) {
        cf_counter_inc(o->late_reason[reason]);
    }
}

void cf__observe_result(cf_observe *o, bool released)
{
    if (o == NULL) {
        return;
    }
    cf_counter *c = released ? o->results_released : o->results_withheld;
    if (c != NULL) {
        cf_counter_inc(c);
    }
}

/* A growable JSON text (the renderer's own: the metrics module keeps its buffer private). */
typedef struct jbuf {
    char *p;
    size_t len, cap;
    bool oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        char *np = cf_realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_puts(jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

static void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(jbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->oom = true; /* every caller formats short fields */
        return;
    }
    jb_put(b, tmp, (size_t)n);
}

static void jb_str(jbuf *b, const char *s)
{
    jb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            jb_put(b, e, 2);
        } else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') {
            jb_printf(b, "\\u%04x", *p); /* also keeps markup out of anything the page shows */
        } else {
            jb_put(b, (const char *)p, 1);
        }
    }
    jb_put(b, "\"", 1);
}

/* A number: integers exactly, others with 6 significant digits; NaN and infinities: null. */
static void jb_num(jbuf *b, double v)
{
    if (isnan(v) || isinf(v)) {
        jb_puts(b, "null");
    } else if (v == (double)(int64_t)v && v > -9e15 && v < 9e15) {
        jb_printf(b, "%" PRId64, (int64_t)v);
    } else {
        jb_printf(b, "%.6g", v);
    }
}

typedef struct visit_ctx {
    jbuf *b;
    const char *value_key;
    bool first;
} visit_ctx;

/* [{"<label>":"<value>",...,"<value_key>":N},...] */
static void visit_obj(void *opaque, const cf_label *labels, size_t nlabels, double value)
{
    visit_ctx *v = opaque;
    jb_puts(v->b, v->first ? "{" : ",{");
    v->first = false;
    for (size_t i = 0; i < nlabels; i++) {
        jb_str(v->b, labels[i].name);
        jb_put(v->b, ":", 1);
        jb_str(v->b, labels[i].value);
        jb_put(v->b, ",", 1);
    }
    jb_str(v->b, v->value_key);
    jb_put(v->b, ":", 1);
    jb_num(v->b, value);
    jb_put(v->b, "}", 1);
}

static void jb_family(jbuf *b, cf_observe *o, const char *key, const char *name,
                      const char *value_key)
{
    visit_ctx v = {b, value_key, true};
    jb_printf(b, ",\"%s\":[", key);
    cf_metrics_visit(o->m, name, visit_obj, &v);
    jb_put(b, "]", 1);
}

static void jb_hex(jbuf *b, const uint8_t *p, size_t n)
{
    char hex[2 * 64 + 1];
    CF_ASSERT(n <= 64);
    for (size_t i = 0; i < n; i++) {
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    }
    hex[2 * n] = '\0';
    jb_printf(b, "\"%s\"", hex);
}

static void jb_counter(jbuf *b, const char *key, const cf_counter *c)
{
    jb_printf(b, ",\"%s\":", key);
    if (c == NULL) {
        jb_puts(b, "null");
    } else {
        jb_printf(b, "%" PRIu64, cf_counter_value(c));
    }
}

cf_err cf__observe_status_json(void *opaque, char **out, size_t *len)
{
    static const char *const states[] = {"starting", "running", "finished", "failed"};
    cf_observe *o = opaque;
    ob_console *c = &o->con;
    jbuf b = {0};
    int64_t now_us = cf_wall_us();
    jb_printf(&b,
              "{\"schema\":\"confide.console\",\"version\":%d,\"ts_us\":%" PRId64
              ",\"uptime_s\":%.3f",
              CF_OBSERVE_CONSOLE_VERSION, now_us, cf_metrics_uptime_s(o->m));
    pthread_mutex_lock(&c->mu);
    int state = c->state;
    pthread_mutex_unlock(&c->mu);
    jb_printf(&b, ",\"state\":\"%s\"", states[state]);
    char detail[256] = "";
    bool healthy = !atomic_load(&o->unhealthy);
    if (!healthy) {
        snprintf(detail, sizeof(detail), "a pipeline stage failed; the run is stopping");
    }
    jb_printf(&b, ",\"health\":{\"ok\":%s,\"detail\":", healthy ? "true" : "false");
    jb_str(&b, detail);
    jb_puts(&b, "}");
    pthread_mutex_lock(&c->mu);
    int64_t t_end = c->t_end_ns, t0 = c->t0_ns;
    double interval_s = c->interval_s;
    uint64_t bytes_total = c->bytes_total;
    pthread_mutex_unlock(&c->mu);
    double elapsed = t0 > 0 ? (double)((t_end > 0 ? t_end : cf_now_ns()) - t0) / 1e9 : 0;
    jb_puts(&b, ",\"run\":{\"protect\":");
    jb_str(&b, c->protect);
    jb_printf(&b, ",\"parties\":%lld,\"batch_mode\":", (long long)c->parties);
    jb_str(&b, c->batch_mode);
    jb_printf(&b,
              ",\"slo_p99_ms\":%lld,\"min_count\":%lld,\"queue_capacity\":%lld,\"rules\":%s,"
              "\"audit\":%s,\"paced\":%s,\"interval_s\":%.3f,\"elapsed_s\":%.3f}",
              (long long)c->slo_p99_ms, (long long)c->min_count, (long long)c->queue_capacity,
              c->rules ? "true" : "false", c->audit ? "true" : "false", c->paced ? "true" : "false",
              interval_s, elapsed);

    /* totals since the process started (the registry's counters) */
    uint64_t batches = cf_histogram_count(o->batch_size);
    int64_t bsum = cf_histogram_sum(o->batch_size);
    bool have_late = false, have_int = false;
    double late = family_sum(o, CF_METRIC_LATE_EVENTS_TOTAL, &have_late);
    double integ = family_sum(o, CF_METRIC_INTEGRITY_ALERTS_TOTAL, &have_int);
    double alerts = family_sum(o, CF_METRIC_ALERTS_TOTAL, NULL);
    jb_puts(&b, ",\"totals\":{\"batches\":");
    jb_printf(&b, "%" PRIu64, batches);
    jb_counter(&b, "accepted", o->decode_accepted);
    jb_counter(&b, "dead_lettered", o->decode_dead);
    jb_counter(&b, "resumed", o->decode_resumed);
    jb_counter(&b, "committed", o->gateway_committed);
    jb_counter(&b, "delivered", o->sink_delivered);
    jb_puts(&b, ",\"alerts\":");
    jb_num(&b, alerts);
    jb_puts(&b, ",\"integrity_alerts\":");
    jb_num(&b, have_int ? integ : NAN);
    jb_puts(&b, ",\"late\":");
    jb_num(&b, have_late ? late : NAN);
    jb_counter(&b, "results_released", o->results_released);
    jb_counter(&b, "results_withheld", o->results_withheld);
    jb_puts(&b, "}");

    /* the batching controller and the stages */
    jb_puts(&b, ",\"batch\":{\"target\":");
    jb_printf(&b, "%u", (unsigned)atomic_load_explicit(&o->target, memory_order_relaxed));
    jb_puts(&b, ",\"linger_ms\":");
    jb_num(&b, (double)atomic_load_explicit(&o->linger_ns, memory_order_relaxed) / 1e6);
    jb_puts(&b, ",\"mean\":");
    jb_num(&b, batches > 0 ? (double)bsum / (double)batches : NAN);
    jb_puts(&b, ",\"live_p99_ms\":");
    jb_num(&b, o->ctl != NULL && state == 1
                   ? (double)cf_batch_ctl_window_p99_us(o->ctl, cf_now_ns()) / 1000.0
                   : NAN);
    jb_puts(&b, "}");
    jb_family(&b, o, "queues", CF_METRIC_QUEUE_DEPTH, "depth");
    bool have_par = false;
    double par = family_sum(o, CF_METRIC_PARALLELISM, &have_par);
    jb_puts(&b, ",\"parallelism\":");
    jb_num(&b, have_par ? par : NAN);
    bool have_wm = false;
    double wm = family_sum(o, "confide_watermark_timestamp_seconds", &have_wm);
    if (have_wm && wm > 0) {
        jb_puts(&b, ",\"watermark\":{\"timestamp_s\":");
        jb_num(&b, wm);
        jb_puts(&b, ",\"lag_s\":");
        jb_num(&b, family_sum(o, CF_METRIC_WATERMARK_LAG, NULL));
        jb_puts(&b, "}");
    } else {
        jb_puts(&b, ",\"watermark\":null");
    }
    jb_family(&b, o, "dead_letters", CF_METRIC_DEAD_LETTERS_TOTAL, "count");
    jb_family(&b, o, "alerts", CF_METRIC_ALERTS_TOTAL, "count");
    jb_family(&b, o, "late", CF_METRIC_LATE_EVENTS_TOTAL, "count");

    /* the audit log */
    pthread_mutex_lock(&c->mu);
    bool head_set = c->head_set;
    cf_audit_sth head = c->head;
    pthread_mutex_unlock(&c->mu);
    if (!c->audit) {
        jb_puts(&b, ",\"audit\":null");
    } else {
        jb_puts(&b, ",\"audit\":{\"tree_size\":");
        jb_num(&b, o->audit_tree_size != NULL ? cf_gauge_value(o->audit_tree_size) : NAN);
        if (head_set) {
            jb_printf(&b, ",\"head\":{\"tree_size\":%" PRIu64 ",\"timestamp_us\":%" PRId64,
                      head.tree_size, head.timestamp_us);
            jb_puts(&b, ",\"age_s\":");
            jb_num(&b, (double)(now_us - head.timestamp_us) / 1e6);
            jb_puts(&b, ",\"root\":");
            jb_hex(&b, head.root, sizeof(head.root));
            jb_puts(&b, ",\"key_id\":");
            jb_hex(&b, head.key_id, sizeof(head.key_id));
            jb_puts(&b, ",\"log_id\":");
            jb_hex(&b, head.log_id, sizeof(head.log_id));
            jb_puts(&b, "}}");
        } else {
            jb_puts(&b, ",\"head\":null}");
        }
    }

    /* a bounded input's progress */
    uint64_t rd = atomic_load_explicit(&o->bytes_read, memory_order_relaxed);
    if (bytes_total > 0) {
        double frac = (double)rd / (double)bytes_total;
        jb_printf(&b,
                  ",\"progress\":{\"bytes_read\":%" PRIu64 ",\"bytes_total\":%" PRIu64
                  ",\"fraction\":",
                  rd, bytes_total);
        jb_num(&b, frac > 1 ? 1 : frac);
        jb_puts(&b, "}");
    } else {
        jb_puts(&b, ",\"progress\":null");
    }

    /* history: oldest first, one array per series */
    static const char *const keys[] = {"ts_us",        "events_per_s", "p50_ms",
                                       "p99_ms",       "p999_ms",      "batch_mean",
                                       "batch_target", "queued",       "watermark_lag_s"};
    pthread_mutex_lock(&c->mu);
    size_t n = c->hist_n;
    size_t start = (c->hist_next + OB_HISTORY - n) % OB_HISTORY;
    jb_puts(&b, ",\"history\":{");
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        jb_printf(&b, "%s\"%s\":[", k > 0 ? "," : "", keys[k]);
        for (size_t i = 0; i < n; i++) {
            const ob_sample *sm = &c->hist[(start + i) % OB_HISTORY];
            double v = k == 0   ? (double)sm->ts_us
                       : k == 1 ? sm->events_per_s
                       : k == 2 ? sm->p50_ms
                       : k == 3 ? sm->p99_ms
                       : k == 4 ? sm->p999_ms
                       : k == 5 ? sm->batch_mean
                       : k == 6 ? sm->batch_target
                       : k == 7 ? sm->queued
                                : sm->watermark_lag_s;
            if (i > 0) {
                jb_put(&b, ",", 1);
            }
            if (k == 0) {
                jb_printf(&b, "%" PRId64, sm->ts_us);
            } else if (isnan(v) || isinf(v)) {
                jb_puts(&b, "null");
            } else {
                jb_printf(&b, "%.4g", v);
            }
        }
        jb_put(&b, "]", 1);
    }
    jb_puts(&b, "}");
    jb_puts(&b, ",\"summary\":");
    jb_puts(&b, c->summary[0] != '\0' ? c->summary : "null");
    jb_puts(&b, ",\"error\":");
    if (c->error[0] != '\0') {
        jb_str(&b, c->error);
    } else {
        jb_puts(&b, "null");
    }
    pthread_mutex_unlock(&c->mu);
    jb_puts(&b, "}\n");
    if (b.oom) {
        cf_free(b.p);
        return CF_E_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return CF_OK;
}
