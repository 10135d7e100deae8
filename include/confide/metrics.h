/**
 * @file metrics.h
 * @brief Metrics registry (counters, gauges, histograms with labels), the Prometheus text
 * exposition, a versioned JSON stats snapshot, and an HTTP endpoint (/metrics, /healthz).
 *
 * Usage by the runtime:
 *
 *     cf_metrics *m;  cf_metrics_create(&m);
 *     cf_counter *ok;
 *     cf_label l[] = {{"stage", "decode"}, {"outcome", "accepted"}};
 *     cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL, "Events by stage and outcome.", l, 2, &ok);
 *     ... pipeline threads: cf_counter_add(ok, batch->n);          (lock-free, no allocation)
 *     cf_metrics_server *srv; uint16_t port;
 *     cf_metrics_serve(m, "127.0.0.1:9464", &srv, &port, errstr, sizeof(errstr));
 *     ... cf_metrics_server_stop(srv); cf_metrics_destroy(m);
 *
 * Registration (cf_metrics_counter/gauge/histogram) takes the registry lock and allocates:
 * do it at setup and keep the returned series handle. Updates through a handle are C11
 * atomics (relaxed) on the handle's own memory: no lock, no allocation, safe from any thread.
 * Handles stay valid until cf_metrics_destroy. Scrapes (exposition, JSON) take the registry
 * lock only against registration, never against updates.
 *
 * Names are checked at registration against the Prometheus conventions promtool lints:
 * snake_case, counters end in `_total` and nothing else does, base units (seconds, bytes)
 * rather than milli-/micro-/kilo-units; label names are not reserved (`__*`, `le` on
 * histograms). A bad name is CF_E_INVAL with the reason in errstr.
 */
#ifndef CONFIDE_METRICS_H
#define CONFIDE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the metric names confide exports (docs/metrics.md) ---------------------------------- */

#define CF_METRIC_EVENTS_TOTAL "confide_events_total"             /* counter {stage,outcome} */
#define CF_METRIC_DEAD_LETTERS_TOTAL "confide_dead_letters_total" /* counter {reason} */
#define CF_METRIC_ALERTS_TOTAL "confide_alerts_total"             /* counter {rule} */
#define CF_METRIC_EVENT_LATENCY "confide_event_latency_seconds"   /* histogram */
#define CF_METRIC_BATCH_SIZE "confide_batch_size"                 /* histogram {stage} */
#define CF_METRIC_BATCH_SERVICE "confide_batch_service_seconds"   /* histogram {stage} */
#define CF_METRIC_QUEUE_DEPTH "confide_queue_depth"               /* gauge {queue} */
#define CF_METRIC_PARALLELISM "confide_parallelism"               /* gauge */
#define CF_METRIC_BATCH_TARGET "confide_batch_target"             /* gauge {stage} */
#define CF_METRIC_WATERMARK_LAG "confide_watermark_lag_seconds"   /* gauge */
#define CF_METRIC_INTEGRITY_ALERTS_TOTAL "confide_integrity_alerts_total" /* counter */
#define CF_METRIC_RESULTS_TOTAL "confide_results_total"                   /* counter {outcome} */
#define CF_METRIC_LATE_EVENTS_TOTAL "confide_late_events_total"           /* counter {reason} */
#define CF_METRIC_AUDIT_TREE_SIZE "confide_audit_tree_size"               /* gauge */
#define CF_METRIC_AUDIT_HEAD_TIMESTAMP "confide_audit_signed_head_timestamp_seconds" /* gauge */
#define CF_METRIC_AUDIT_HEAD_AGE "confide_audit_signed_head_age_seconds"             /* gauge */

/** Default buckets for latencies recorded in microseconds (unit_exp -6: exposed in seconds):
 *  100 us .. 10 s, roughly 1-2.5-5 per decade. */
extern const int64_t cf_metrics_latency_buckets_us[];
extern const size_t cf_metrics_latency_buckets_us_n;
/** Default buckets for batch sizes (events, unit_exp 0): 1, 2, 4, ... 65536. */
extern const int64_t cf_metrics_size_buckets[];
extern const size_t cf_metrics_size_buckets_n;

/* ---- registry ---------------------------------------------------------------------------- */

typedef struct cf_metrics cf_metrics;
typedef struct cf_counter cf_counter;
typedef struct cf_gauge cf_gauge;
typedef struct cf_histogram cf_histogram;
typedef struct cf_metrics_server cf_metrics_server;

/** One label: both strings borrowed for the call (copied by the registry). */
typedef struct cf_label {
    const char *name;
    const char *value;
} cf_label;

/** Creates an empty registry. Returns owned (free with cf_metrics_destroy). */
cf_err cf_metrics_create(cf_metrics **out);
/** Frees the registry and every series handle it gave out. Stop any server first. NULL ok. */
void cf_metrics_destroy(cf_metrics *m);

/**
 * Registers (or finds) the counter series @p name{labels}. Calling again with the same name
 * and label values returns the same handle. Every series of a family must use the same label
 * names in the same order and the same help text. @p labels may be NULL when @p nlabels is 0.
 * *out is borrowed from the registry (valid until cf_metrics_destroy).
 * @locks registry lock  @locality any thread, setup time (allocates)
 */
cf_err cf_metrics_counter(cf_metrics *m, const char *name, const char *help, const cf_label *labels,
                          size_t nlabels, cf_counter **out, char *errstr, size_t errstr_size);

/** Registers (or finds) a gauge series; same rules as cf_metrics_counter. */
cf_err cf_metrics_gauge(cf_metrics *m, const char *name, const char *help, const cf_label *labels,
                        size_t nlabels, cf_gauge **out, char *errstr, size_t errstr_size);

/**
 * Registers a gauge whose value is read by calling @p fn(@p opaque) at every scrape (for
 * example a ring's depth). @p fn runs on the scraping thread with the registry lock held: it
 * must be cheap and thread-safe, and @p opaque must outlive the registry.
 */
cf_err cf_metrics_gauge_fn(cf_metrics *m, const char *name, const char *help,
                           const cf_label *labels, size_t nlabels, double (*fn)(void *opaque),
                           void *opaque, char *errstr, size_t errstr_size);

/**
 * Registers (or finds) a histogram series with fixed cumulative buckets. Observations are
 * integers in a native unit (microseconds, nanoseconds, events); @p unit_exp is the power of
 * ten converting them to the exposed base unit (-6 for microseconds exposed as seconds, -9
 * for nanoseconds, 0 for counts). @p bounds (borrowed, copied) are the upper bounds in the
 * native unit, strictly increasing, at most 64; the +Inf bucket is implicit. Every series of
 * a family must use the same bounds and unit.
 */
cf_err cf_metrics_histogram(cf_metrics *m, const char *name, const char *help,
                            const int64_t *bounds, size_t nbounds, int unit_exp,
                            const cf_label *labels, size_t nlabels, cf_histogram **out,
                            char *errstr, size_t errstr_size);

/* ---- hot path (lock-free, allocation-free, any thread) ------------------------------------ */

void cf_counter_add(cf_counter *c, uint64_t n);
void cf_counter_inc(cf_counter *c);
uint64_t cf_counter_value(const cf_counter *c);

void cf_gauge_set(cf_gauge *g, double v);
void cf_gauge_add(cf_gauge *g, double delta);
double cf_gauge_value(const cf_gauge *g);

/** Records one observation in the histogram's native unit. Negative values count as 0. */
void cf_histogram_observe(cf_histogram *h, int64_t v);
/** Records @p n observations of the same value (a batch of events with one latency). */
void cf_histogram_observe_n(cf_histogram *h, int64_t v, uint64_t n);
uint64_t cf_histogram_count(const cf_histogram *h);
/** Sum of observations in the native unit (saturating). */
int64_t cf_histogram_sum(const cf_histogram *h);

/**
 * Per-bucket (not cumulative) observation counts of @p h into @p counts, at most @p n entries,
 * the +Inf bucket last. Returns the number of buckets (bounds + 1), which may exceed @p n.
 * Lock-free; the counts are each exact but not a consistent snapshot of one instant.
 */
size_t cf_histogram_bucket_counts(const cf_histogram *h, uint64_t *counts, size_t n);

/* ---- reading back ------------------------------------------------------------------------- */

/** Called once per series of a family: its labels (borrowed for the call) and its value
 *  (counters and gauges: the value; histograms: the observation count). */
typedef void (*cf_metrics_visit_cb)(void *opaque, const cf_label *labels, size_t nlabels,
                                    double value);

/**
 * Calls @p cb for every series of the family @p name, in registration order, with the
 * registry lock held (@p cb must not call back into the registry). CF_E_NOTFOUND when no
 * such family is registered. @locks registry lock
 */
cf_err cf_metrics_visit(cf_metrics *m, const char *name, cf_metrics_visit_cb cb, void *opaque);

/* ---- output ------------------------------------------------------------------------------- */

/**
 * Renders the registry in the Prometheus text exposition format 0.0.4 (HELP and TYPE per
 * family, label values escaped, histograms as cumulative _bucket{le} + _sum + _count, a
 * trailing newline). *out returns owned (free with cf_free), NUL-terminated, *len without
 * the NUL. @locks registry lock
 */
cf_err cf_metrics_expose(cf_metrics *m, char **out, size_t *len);

/** Version of the JSON stats snapshot schema (docs/metrics.md). */
#define CF_METRICS_STATS_VERSION 1

/**
 * Renders a one-line JSON snapshot of the whole registry (no newline), schema
 * docs/metrics.md: {"schema":"confide.stats","version":1,"ts_us":..,"uptime_s":..,
 * "metrics":{name:{"type":..,"series":[...]}}}. *out returns owned (free with cf_free).
 */
cf_err cf_metrics_snapshot_json(cf_metrics *m, char **out, size_t *len);

/** Seconds since the registry was created (monotonic). */
double cf_metrics_uptime_s(const cf_metrics *m);

/* ---- HTTP endpoint ------------------------------------------------------------------------ */

/**
 * Health callback for /healthz: returns true when healthy; may write a short reason (no
 * secrets) into @p detail. Runs on the HTTP thread.
 */
typedef bool (*cf_metrics_health_cb)(void *opaque, char *detail, size_t detail_size);

/** Installs the /healthz callback (NULL: always healthy). @locks registry lock */
void cf_metrics_set_health(cf_metrics *m, cf_metrics_health_cb cb, void *opaque);

/**
 * Renderer of GET /api/status, the JSON the console page polls (docs/metrics.md): writes an
 * owned (cf_malloc) buffer into *out and its length into *len. Runs on the HTTP thread
 * without the registry lock (it may call cf_metrics_visit); @p opaque must outlive the
 * server. It must never put amounts, account or merchant ids into the document.
 */
typedef cf_err (*cf_metrics_status_cb)(void *opaque, char **out, size_t *len);

/** Installs the /api/status renderer (NULL: /api/status answers 404). @locks registry lock */
void cf_metrics_set_status(cf_metrics *m, cf_metrics_status_cb cb, void *opaque);

/**
 * Starts an HTTP server (libmicrohttpd, its own thread) on @p addr ("HOST:PORT", "[v6]:PORT";
 * HOST a numeric address or a resolvable name, PORT 0 picks a free port) serving
 * GET /metrics (text/plain; version=0.0.4), GET /healthz (200 {"status":"ok",
 * "uptime_s":X}, or 503 {"status":"unhealthy",...}), GET / (the console: one self-contained
 * HTML page embedded in the binary, no external resources) and GET /api/status (the JSON
 * from cf_metrics_set_status's renderer). Borrows @p m, which must outlive the
 * server. *out returns owned (stop with cf_metrics_server_stop); *port_out (may be NULL)
 * receives the bound port. CF_E_INVAL for a malformed address, CF_E_IO when binding fails.
 */
cf_err cf_metrics_serve(cf_metrics *m, const char *addr, cf_metrics_server **out,
                        uint16_t *port_out, char *errstr, size_t errstr_size);

/** Stops the server: closes the socket, waits for in-flight requests, frees. NULL ok. */
void cf_metrics_server_stop(cf_metrics_server *s);

#ifdef __cplusplus
}
#endif
#endif
