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
                                &o->batch_linger, errstr, errstr_size))) {
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

void cf__observe_sink(cf_observe *o, cf_batch_ctl *ctl, const cf_batch *b, int64_t now_ns)
{
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
        cf_run_status st;
        sample(o, &st, false);
        o->status_cb(o->status_opaque, &st);
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

cf_err cf__observe_status_start(cf_observe *o)
{
    o->t0_ns = cf_now_ns();
    o->prev_ns = o->t0_ns;
    if (o->status_cb == NULL) {
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
    cf_run_status st;
    sample(o, &st, true);
    o->status_cb(o->status_opaque, &st);
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
