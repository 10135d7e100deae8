/**
 * @file runtime.h
 * @brief Configuration (one YAML file, every key with a default) and the embedded pipeline:
 * source -> decode -> process -> sink stages on their own threads, joined by bounded SPSC
 * rings carrying batches.
 */
#ifndef CONFIDE_RUNTIME_H
#define CONFIDE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "confide/core.h"
#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- configuration ---------------------------------------------------------------------- */

typedef struct cf_config cf_config;

/** A config with every key at its default. Returns owned (free with cf_config_destroy). */
cf_err cf_config_create(cf_config **out);
void cf_config_destroy(cf_config *c);
/**
 * Loads a YAML file over the current values. Nested mappings name keys with dots
 * ("input: {format: csv}" sets input.format). An unknown key or a bad value is an error
 * naming the key and its line (CF_E_INVAL).
 */
cf_err cf_config_load_file(cf_config *c, const char *path, char *errstr, size_t errstr_size);
/** Same, from a string (for tests and fuzzing); @p name appears in errors. */
cf_err cf_config_load_string(cf_config *c, const char *yaml, size_t len, const char *name,
                             char *errstr, size_t errstr_size);
/** Sets one key from text (command-line overrides). */
cf_err cf_config_set(cf_config *c, const char *key, const char *value, char *errstr,
                     size_t errstr_size);
/** Reads a key as text into buf. CF_E_NOTFOUND for an unknown key. */
cf_err cf_config_get(const cf_config *c, const char *key, char *buf, size_t size);
/** Writes the key reference (docs/CONFIG.md) as Markdown. */
void cf_config_write_doc(FILE *f);

/* ---- pipeline --------------------------------------------------------------------------- */

/** What a run did; counts reconcile: read == accepted + dead_lettered. */
typedef struct cf_summary {
    uint64_t read;          /* records read (a CSV header is not a record) */
    uint64_t accepted;      /* decoded into events */
    uint64_t dead_lettered; /* rejected with a reason, written to the dead-letter output */
    uint64_t batches;
    double elapsed_s;
    double events_per_s; /* accepted / elapsed */
    double cpu_s;
    int64_t p50_us, p99_us, p999_us, max_us; /* ingest -> sink latency */
    uint64_t source_blocked_ns;              /* time the source waited on a full pipeline */
    size_t peak_inflight_batches;            /* never above the configured pool */
    uint64_t alerts;                         /* compliance alerts written to alerts.ndjson */
    uint64_t late;                           /* events in late.ndjson (not counted in any result) */
    uint64_t windows;                        /* windows that released results */
    uint64_t results;                        /* (window, group) aggregates released */
    uint64_t suppressed;                     /* groups withheld because count < min_count */
    uint64_t integrity_alerts;               /* MAC failures and disagreeing parties */
    uint64_t audited;                        /* events appended to the audit log by this run */
    uint64_t audit_first_index;
    uint64_t resumed; /* events already in the audit log at start: not processed again */
    /* Batching at the gateway (added with issue 6; the JSON summary carries them too). */
    double batch_mean;       /* events per gateway batch */
    uint32_t batch_max_seen; /* largest gateway batch */
    uint32_t batch_target;   /* the controller's target at the end (fixed:N: N) */
    uint64_t batch_target_changes;
    /* Duplicate event ids (input.dedup_horizon_ms), part of dead_lettered. */
    uint64_t duplicates;
    /* Party workers (party.workers) at the end, and rescales applied (autoscale, API). */
    uint32_t workers;
    uint64_t rescales;
    /* Worker-seconds: workers per party integrated over the run's wall time (multiply by the
     * parties for threads); 0 without party workers (protect none). */
    double worker_s;
    /* Seconds of wall time, in 1 s buckets from the start, whose p99 end-to-end latency
     * (nearest rank, events delivered in the bucket) was above slo.p99_ms, or that delivered
     * nothing while an event waited past it; the last, partial bucket counts its length. */
    double slo_violation_s;
} cf_summary;

/**
 * A live view of a running pipeline for people (status line, progress), produced every
 * status.interval_ms by cf_pipeline_run's status thread. Never carries amounts or ids.
 */
typedef struct cf_run_status {
    double elapsed_s;
    uint64_t accepted; /* decoded so far */
    uint64_t dead_lettered;
    uint64_t committed;    /* through the gateway (rules, audit, protection) */
    double events_per_s;   /* committed per second over the last interval */
    int64_t p99_us;        /* live p99 over the last second (0: none yet) */
    double batch_mean;     /* events per gateway batch over the last interval (0: none) */
    uint32_t batch_target; /* the controller's current target */
    size_t queue_decode;   /* chunks waiting for the decode stage */
    size_t queue_gateway;  /* batches waiting for the gateway */
    size_t queue_sink;     /* batches waiting for the sink */
    uint64_t bytes_read;   /* input bytes read so far */
    uint64_t bytes_total;  /* input size when bounded (a regular file or a buffer), else 0 */
    bool final;            /* the last call, after every stage has finished */
} cf_run_status;

/**
 * Formats @p st as one human line without a newline ("12.0 s  20000 ev/s  p99 3.1 ms ...",
 * with a progress bar when bytes_total is known) into @p buf. Returns the length.
 */
size_t cf_run_status_format(const cf_run_status *st, char *buf, size_t size);

typedef struct cf_pipeline cf_pipeline;

/** Builds a pipeline from @p c (borrowed; copied). Returns owned (cf_pipeline_destroy). */
cf_err cf_pipeline_create(cf_pipeline **out, const cf_config *c, char *errstr, size_t errstr_size);
/** Reads input from memory instead of input.path (borrowed; must outlive the run). */
void cf_pipeline_set_input_buffer(cf_pipeline *p, const char *buf, size_t len);
/**
 * Test and benchmark hook, called on the sink thread for every batch after latency is
 * recorded (NULL: none). A slow hook exercises backpressure.
 */
void cf_pipeline_set_sink_hook(cf_pipeline *p, void (*hook)(void *opaque, const cf_batch *b),
                               void *opaque);
/**
 * Installs a status callback: cf_pipeline_run calls @p cb(@p opaque, status) from its own
 * status thread every status.interval_ms, and once more with final = true after the stages
 * have finished (before it returns). NULL: no status thread. Set before cf_pipeline_run.
 */
void cf_pipeline_set_status_cb(cf_pipeline *p, void (*cb)(void *opaque, const cf_run_status *st),
                               void *opaque);
/**
 * The pipeline's metrics registry (docs/metrics.md), borrowed: valid until
 * cf_pipeline_destroy. Safe to render (cf_metrics_expose, cf_metrics_snapshot_json) from any
 * thread while the pipeline runs, including from the status callback.
 */
struct cf_metrics *cf_pipeline_metrics(cf_pipeline *p);
/** The port the /metrics server is bound to (metrics.listen), or 0 when there is none. */
uint16_t cf_pipeline_metrics_port(const cf_pipeline *p);
/** Runs to the end of the input. Blocking. Fills *out. */
cf_err cf_pipeline_run(cf_pipeline *p, cf_summary *out, char *errstr, size_t errstr_size);
/** Asks the gateway to re-read the blocked-party lists (signal-safe: sets a flag). */
void cf_pipeline_reload(cf_pipeline *p);
/**
 * Asks for @p workers (1..16) party workers: at the gateway's next batch a checkpoint
 * marker moves the key groups and their window state to the new set of workers, with no
 * event lost, counted twice or reordered within its key (docs/runtime.md). Any thread.
 * CF_E_INVAL out of range; CF_E_STATE when the run has no parties (protect none).
 */
cf_err cf_pipeline_rescale(cf_pipeline *p, unsigned workers);
/** Asks a running pipeline to stop reading (signal-safe: sets a flag). */
void cf_pipeline_stop(cf_pipeline *p);
void cf_pipeline_destroy(cf_pipeline *p);

/* ---- distributed roles ------------------------------------------------------------------ */

/**
 * A distributed party or combiner (config key `role`; docs/distributed.md): consumes its
 * JetStream input until the gateway's end of input has passed through it, or until
 * cf_service_stop. The gateway itself is a cf_pipeline with role gateway.
 */
typedef struct cf_service cf_service;
cf_err cf_service_create(cf_service **out, const cf_config *c, char *errstr, size_t errstr_size);
/** Runs to the end of input (or a stop); *stopped tells which. The summary carries the
 *  combiner's windows, results, suppressed, late and integrity_alerts. */
cf_err cf_service_run(cf_service *sv, cf_summary *out, bool *stopped, char *errstr,
                      size_t errstr_size);
/** Stops at the next frame without flushing anything: the role's state file says where a
 *  restart resumes. Async-signal-safe. */
void cf_service_stop(cf_service *sv);
void cf_service_destroy(cf_service *sv);

/* ---- the distributed autoscaler (`confide autoscale`, docs/autoscaling.md) --------------- */

/**
 * Watches a distributed run through core NATS: the gateway's PREFIX.stats.gateway (events
 * accepted, workers per party) and every party-0 worker's PREFIX.stats.0.W (events taken,
 * busy time), and runs the autoscale.policy on them every autoscale.interval_ms, exactly as
 * the embedded autoscaler does. The caller starts worker processes and then asks the
 * gateway for the new count (cf_scaler_request); added processes wait on their streams
 * until the rescale marker activates them, retired ones end by themselves.
 */
typedef struct cf_scaler cf_scaler;
typedef struct cf_scaler_step {
    bool seen;            /**< the gateway reported in this interval */
    bool decided;         /**< false: the first interval only set the baselines */
    uint32_t ready;       /**< workers per party now (the gateway's) */
    uint32_t want;        /**< the policy's decision, clamped to autoscale.min/max_workers */
    double arrived_per_s; /**< events accepted per second in the interval */
    double worker_rate;   /**< events per busy worker-second (0: not measured) */
    double busy_fraction; /**< party 0's workers' busy time / (workers x interval) */
} cf_scaler_step;
cf_err cf_scaler_create(cf_scaler **out, const cf_config *c, char *errstr, size_t errstr_size);
/** Collects one interval's statistics and decides. */
cf_err cf_scaler_step_run(cf_scaler *a, cf_scaler_step *st, char *errstr, size_t errstr_size);
/** Asks the gateway (PREFIX.control.rescale) for @p workers per party; CF_E_STATE with the
 *  gateway's reason when it refuses. */
cf_err cf_scaler_request(cf_scaler *a, unsigned workers, char *errstr, size_t errstr_size);
/** One request to the gateway of the run @p c names (nats.*), as cf_scaler_request: for an
 *  orchestrator that starts the worker processes itself (confide autoscale --request N). */
cf_err cf_rescale_request(const cf_config *c, unsigned workers, char *errstr, size_t errstr_size);
/** Seconds since the gateway last reported (a finished run stops reporting). */
double cf_scaler_gateway_silent_s(const cf_scaler *a);
void cf_scaler_destroy(cf_scaler *a);

/** The --json summary object (one line, trailing newline) into buf. Returns length. */
size_t cf_summary_to_json(const cf_summary *s, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
