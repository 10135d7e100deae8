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

#include "confide/audit.h"
#include "confide/batch.h"
#include "confide/metrics.h"
#include "confide/runtime.h"
#include "secure.h"

#define OB_REASONS 32                /* distinct dead-letter reason labels; more go to "other" */
#define OB_QUEUES 3                  /* source_to_decode, decode_to_gateway, gateway_to_sink */
#define CF_OBSERVE_CONSOLE_VERSION 1 /* /api/status schema (docs/metrics.md) */
#define OB_HISTORY 600    /* console samples kept: 10 minutes at status.interval_ms 1000 */
#define OB_LATE_REASONS 3 /* 0 state limit, then cf_window_late_reason */
#define OB_BUCKETS 65     /* latency buckets + +Inf (cf_metrics_latency_buckets_us_n + 1 <= 65) */

/* One console sample: the rates and gauges of one status interval (NaN: nothing measured). */
typedef struct ob_sample {
    int64_t ts_us; /* wall clock at the end of the interval */
    double events_per_s;
    double p50_ms, p99_ms, p999_ms; /* latency of the events delivered in the interval */
    double batch_mean;              /* events per gateway batch in the interval */
    double batch_target;
    double queued;          /* items in every ring, summed */
    double watermark_lag_s; /* NaN before the first watermark */
} ob_sample;

/* What the console (/api/status) shows besides the registry; under con_mu. */
typedef struct ob_console {
    pthread_mutex_t mu;
    bool mu_ok;
    int state;            /* 0 starting, 1 running, 2 finished, 3 failed */
    int64_t t_end_ns;     /* when the run ended (0: running) */
    int64_t t0_ns;        /* when the run started (0: not yet) */
    double interval_s;    /* the sampling interval */
    uint64_t bytes_total; /* a bounded input's size (0: a stream) */
    ob_sample hist[OB_HISTORY];
    size_t hist_n, hist_next;
    bool head_set;
    cf_audit_sth head;  /* the last signed tree head */
    char summary[1024]; /* the --json summary once the run ended ("" before) */
    char error[256];    /* why the run failed (no ids or amounts: cf_err text only) */
    /* run settings shown on the page (set once by cf__observe_configure) */
    char protect[16];
    char batch_mode[32];
    int64_t slo_p99_ms;
    int64_t queue_capacity;
    int64_t min_count;
    int64_t parties;
    bool rules, audit, paced;
    /* the status thread's previous readings (status thread only) */
    uint64_t prev_lat[OB_BUCKETS];
    uint64_t prev_committed, prev_batches;
    int64_t prev_batch_sum, prev_ns;
} ob_console;

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

    /* Registered by secure.c through cf__observe_secure_metrics (NULL when not in use). */
    cf_counter *results_released, *results_withheld;
    cf_counter *late_reason[OB_LATE_REASONS];
    cf_gauge *audit_tree_size, *audit_head_ts;

    ob_console con; /* the console's own state (/api/status) */

    /* slo.p99_ms judged per 1 s of wall time since t0_ns (sink thread; read after it ends) */
    int64_t slo_us;
    int64_t slo_sec;           /* the bucket being filled */
    uint64_t slo_n, slo_over;  /* events delivered in it, of which above slo_us */
    uint64_t slo_bad;          /* closed buckets that violated */
    cf_counter *slo_violation; /* confide_slo_violation_seconds_total */
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
/** Seconds in SLO violation (cf_summary.slo_violation_s) up to @p now_ns, once the sink
 *  has ended. */
double cf__observe_slo_seconds(cf_observe *o, int64_t now_ns);
/** Starts the status thread when a callback is installed. */
cf_err cf__observe_status_start(cf_observe *o);
/** Stops it after one final callback. Idempotent. */
void cf__observe_status_stop(cf_observe *o);

/* ---- the console (/api/status, docs/metrics.md) ---- */

struct cf_config;
/** Copies the run settings the console shows, sets the sampling interval and installs the
 *  /api/status renderer. Before cf__observe_serve. */
void cf__observe_configure(cf_observe *o, const struct cf_config *c);
/** The run ended: keeps the summary (and @p err's text when it failed) for /api/status. */
void cf__observe_finish(cf_observe *o, const cf_summary *s, cf_err err, const char *errstr);
/**
 * Registers the secure stage's extra series: results released/withheld and late events by
 * reason when @p windows, the audit tree size and signed-head gauges when @p audit (the head
 * of an existing log in @p last, may be NULL). secure.c, before its threads start.
 */
cf_err cf__observe_secure_metrics(cf_observe *o, bool windows, bool audit, const cf_audit_sth *last,
                                  char *errstr, size_t errstr_size);
/** A new signed tree head (gateway thread, once per batch): gauges and the console. */
void cf__observe_audit_head(cf_observe *o, const cf_audit_sth *sth);
/** One late event: @p reason 0 state limit, else cf_window_late_reason. Combiner thread. */
void cf__observe_late(cf_observe *o, uint32_t reason);
/** One group released (true) or withheld below min_count (false). Combiner thread. */
void cf__observe_result(cf_observe *o, bool released);
/** Renders /api/status (cf_metrics_status_cb). */
cf_err cf__observe_status_json(void *opaque, char **out, size_t *len);

/**
 * cf_secure_create with the gateway's, parties' and combiner's metrics registered in @p m
 * (alerts by rule, integrity alerts, late events, watermark gauges, party queue depths,
 * parallelism, results, audit head) before their threads start. @p ob NULL: as
 * cf_secure_create. secure.c.
 */
cf_err cf__secure_create_observed(cf_secure **out, const cf_config *c, cf_observe *ob, char *errstr,
                                  size_t errstr_size);

#endif
