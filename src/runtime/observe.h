/*
 * Private to the runtime: the pipeline's metrics (registration and hot-path helpers), the
 * /metrics server and the status thread. See observe.c for the design note.
 */
#ifndef CF_RUNTIME_OBSERVE_H
#define CF_RUNTIME_OBSERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "confide/batch.h"
#include "confide/metrics.h"
#include "confide/runtime.h"
#include "secure.h"

#define OB_REASONS 32 /* distinct dead-letter reason labels; more go to "other" */
#define OB_QUEUES 3   /* source_to_decode, decode_to_gateway, gateway_to_sink */

typedef struct ob_reason {
    char label[48];
    cf_counter *c;
} ob_reason;

typedef struct cf_observe {
    cf_metrics *m;
    cf_metrics_server *srv;
    uint16_t port;

    cf_counter *decode_accepted, *decode_dead, *decode_resumed, *gateway_committed;
    cf_counter *sink_delivered;
    cf_histogram *latency, *batch_size, *batch_service;
    cf_gauge *batch_target, *batch_linger;

    /* dead letters by reason: decode thread only */
    ob_reason reasons[OB_REASONS];
    unsigned nreasons;
    cf_counter *reason_other;

    /* published by the gateway thread (the controller's owner) for the decode thread */
    _Atomic uint32_t target;
    _Atomic int64_t linger_ns;

    /* what the status thread reads (set before the stages start) */
    cf_ring *queue[OB_QUEUES];
    cf_batch_ctl *ctl; /* only cf_batch_ctl_window_p99_us, which locks */
    atomic_uint_fast64_t bytes_read;
    uint64_t bytes_total;
    atomic_bool unhealthy;

    void (*status_cb)(void *opaque, const cf_run_status *st);
    void *status_opaque;
    int64_t interval_ns;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
    int64_t t0_ns;
    uint64_t prev_committed, prev_batches;
    int64_t prev_batch_sum, prev_ns;
} cf_observe;

/** Creates the registry and registers the pipeline's own series. */
cf_err cf__observe_create(cf_observe **out, char *errstr, size_t errstr_size);
/** Stops the server and the status thread, frees the registry. NULL ok. */
void cf__observe_destroy(cf_observe *o);
/** Registers confide_queue_depth{queue=name} read from @p ring at scrape time. */
cf_err cf__observe_queue(cf_observe *o, const char *name, cf_ring *ring, char *errstr,
                         size_t errstr_size);
/** Starts the /metrics server on @p addr. */
cf_err cf__observe_serve(cf_observe *o, const char *addr, char *errstr, size_t errstr_size);
/** Counts one dead letter under its bounded reason label. @locality decode thread */
void cf__observe_dead_letter(cf_observe *o, const char *reason);
/** Reduces a decoder reason to a bounded snake_case label (up to the first ':'). */
void cf__observe_reason_label(const char *reason, char *out, size_t size);
/** One gateway batch: size and service histograms, committed counter. */
void cf__observe_batch(cf_observe *o, uint32_t n, int64_t service_ns);
/** The sink's per-batch latency accounting: the histogram (per bucket, not per event) and
 *  the controller's live-p99 window (the batch's oldest event, for all of its events). */
void cf__observe_sink(cf_observe *o, cf_batch_ctl *ctl, const cf_batch *b, int64_t now_ns);
/** Starts the status thread when a callback is installed. */
cf_err cf__observe_status_start(cf_observe *o);
/** Stops it after one final callback. Idempotent. */
void cf__observe_status_stop(cf_observe *o);

/**
 * cf_secure_create with the gateway's, parties' and combiner's metrics registered in @p m
 * (alerts by rule, integrity alerts, late events, watermark gauges, party queue depths,
 * parallelism) before their threads start. @p m NULL: as cf_secure_create. secure.c.
 */
cf_err cf__secure_create_observed(cf_secure **out, const cf_config *c, cf_metrics *m, char *errstr,
                                  size_t errstr_size);

#endif
