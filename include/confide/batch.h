/**
 * @file batch.h
 * @brief Adaptive micro-batching: the controller that picks batch size and linger time to
 * keep latency inside the SLO while amortizing per-batch costs, and the batcher that forms
 * batches from a ring under the count / bytes / linger bounds. Design: docs/batching.md.
 *
 * One controller and one batcher per batching stage, both owned by the stage thread:
 *
 *     cf_batch_ctl *ctl;  cf_batch_ctl_create(&ctl, "adaptive", 200, 4096, 1 << 20, 50, err, n);
 *     cf_batcher *b;      cf_batcher_create(&b, ctl, 4096, 1 << 20, 50);
 *     cf_batch *out;
 *     while (cf_batcher_next(b, in_ring, &out, release_input, pool) == CF_OK) {
 *         int64_t t0 = cf_now_ns();
 *         ... sign, hash, write, fsync: the per-batch work ...
 *         cf_batcher_done(b, out, t0, cf_now_ns());  (feeds the controller, recycles out)
 *     }
 *
 * The sink (any thread) feeds end-to-end latencies with cf_batch_ctl_record_latency.
 */
#ifndef CONFIDE_BATCH_H
#define CONFIDE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/core.h"
#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_gauge cf_gauge; /* confide/metrics.h */

/* ---- controller --------------------------------------------------------------------------- */

typedef struct cf_batch_ctl cf_batch_ctl;

/**
 * Creates a controller.
 * @param mode        "adaptive" (default when NULL) or "fixed:N" (1 <= N <= count_max).
 * @param slo_p99_ms  latency SLO (config slo.p99_ms, default 200); 1..3,600,000.
 * @param count_max   batch.count_max (>= 1); @param bytes_max batch.bytes_max (>= 1);
 * @param linger_ms   batch.linger_ms: the most a batch may wait to fill (0..60000).
 * CF_E_INVAL with a message naming the bad value. Returns owned (cf_batch_ctl_destroy).
 */
cf_err cf_batch_ctl_create(cf_batch_ctl **out, const char *mode, uint32_t slo_p99_ms,
                           uint32_t count_max, uint64_t bytes_max, uint32_t linger_ms, char *errstr,
                           size_t errstr_size);
void cf_batch_ctl_destroy(cf_batch_ctl *c);

/** Fraction of the SLO kept as headroom (default 0.5: the model aims at 100 ms of 200). */
cf_err cf_batch_ctl_set_headroom(cf_batch_ctl *c, double headroom);
/** Publishes the target size to @p target (borrowed; may be NULL) on every change. */
void cf_batch_ctl_set_gauge(cf_batch_ctl *c, cf_gauge *target);

/**
 * Feeds one completed batch. @p now_ns monotonic time at completion; @p size events and
 * @p bytes; @p service_ns the time spent processing it; @p queue_ns how long its newest
 * event waited between arriving and service start (backlog); @p first_ingest_ns and
 * @p last_ingest_ns the ingest stamps of its first and last event (0 when unknown: the
 * arrival rate is then taken from completion times). Updates the fit, the arrival rate and,
 * subject to hysteresis, the target. @locality owner thread
 */
void cf_batch_ctl_observe(cf_batch_ctl *c, int64_t now_ns, uint32_t size, uint64_t bytes,
                          int64_t service_ns, int64_t queue_ns, int64_t first_ingest_ns,
                          int64_t last_ingest_ns);

/**
 * Records @p count end-to-end latencies of @p latency_us into the sliding window (10 slices
 * of 100 ms) the controller reads its live p99 from. @locality any thread @locks ctl mutex
 */
void cf_batch_ctl_record_latency(cf_batch_ctl *c, int64_t now_ns, int64_t latency_us,
                                 uint64_t count);

/** Current target batch size (events). @locality owner thread */
uint32_t cf_batch_ctl_target(const cf_batch_ctl *c);
/** Current linger: how long an open batch may wait for more events. */
int64_t cf_batch_ctl_linger_ns(const cf_batch_ctl *c);
/** True in fixed:N mode. */
bool cf_batch_ctl_is_fixed(const cf_batch_ctl *c);
/** Number of target changes so far (hysteresis diagnostics). */
uint64_t cf_batch_ctl_changes(const cf_batch_ctl *c);

/** Model state, for tests, status lines and docs. Any out-pointer may be NULL. */
void cf_batch_ctl_model(const cf_batch_ctl *c, double *fixed_ns, double *per_event_ns,
                        double *rate_per_s, double *queue_ns);
/** p99 of the last second of recorded latencies, microseconds (0 when none). @locks mutex */
int64_t cf_batch_ctl_window_p99_us(cf_batch_ctl *c, int64_t now_ns);
/** Modeled worst-event latency of a batch of @p n at the current estimates (ns). */
double cf_batch_ctl_modeled_latency_ns(const cf_batch_ctl *c, uint32_t n);
/** The latency budget the model aims at: slo * (1 - headroom), in ns. */
double cf_batch_ctl_budget_ns(const cf_batch_ctl *c);

/* ---- batcher ------------------------------------------------------------------------------ */

typedef struct cf_batcher cf_batcher;

/**
 * Creates a batcher that copies events from input batches into output batches of the
 * controller's target size, emitting when the count target, @p bytes_max or the linger time
 * is reached. @p ctl is borrowed and may be NULL (then the bounds alone decide: count_max,
 * bytes_max, linger_ms). Output batches come from an internal pool of 4 (no malloc on the
 * hot path once warm). Returns owned (cf_batcher_destroy).
 */
cf_err cf_batcher_create(cf_batcher **out, cf_batch_ctl *ctl, uint32_t count_max,
                         uint64_t bytes_max, uint32_t linger_ms);
/**
 * Frees the batcher, its pool and its open batch (events not yet emitted are lost). An input
 * batch it still holds is not freed: it belongs to the ring's producer; hand it back first
 * with cf_batcher_drop_input (nothing is held after cf_batcher_next returned CF_E_EOF).
 * NULL ok.
 */
void cf_batcher_destroy(cf_batcher *b);

/**
 * Gives a partially consumed input batch back through @p release (for shutdown before the
 * ring is drained). Returns the number of its events that were never copied (dropped).
 */
uint32_t cf_batcher_drop_input(cf_batcher *b, void (*release)(void *opaque, cf_batch *in_batch),
                               void *opaque);

/** Bytes an event counts for against bytes_max (default: sizeof(cf_event)). */
void cf_batcher_set_sizer(cf_batcher *b, size_t (*event_bytes)(const cf_event *ev));

/**
 * Pops input batches (cf_batch *) from @p in and fills the open output batch until it is
 * due; then hands it over in *out (owned by the caller until cf_batcher_done). Every input
 * batch fully copied is passed to @p release(@p opaque, batch) (e.g. back to a free ring).
 * Waits (spin, yield, short sleeps) while the ring is empty and the batch is not yet due.
 * Returns CF_OK with a non-empty batch, or CF_E_EOF once the ring is closed and drained.
 * @locality the ring's consumer thread
 */
cf_err cf_batcher_next(cf_batcher *b, cf_ring *in, cf_batch **out,
                       void (*release)(void *opaque, cf_batch *in_batch), void *opaque);

/**
 * Reports that @p batch (from cf_batcher_next) was processed from @p start_ns to @p end_ns:
 * feeds the controller (size, bytes, service time, backlog, ingest stamps) and takes the
 * batch back into the pool. Takes ownership of @p batch.
 */
void cf_batcher_done(cf_batcher *b, cf_batch *batch, int64_t start_ns, int64_t end_ns);

/** Events in the open (not yet emitted) batch. */
uint32_t cf_batcher_pending(const cf_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
