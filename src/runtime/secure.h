/*
 * Private to the runtime: the gateway's per-batch work (compliance, audit, protection) and
 * the aggregation parties and combiner that follow it. See secure.c for the design note.
 */
#ifndef CF_RUNTIME_SECURE_H
#define CF_RUNTIME_SECURE_H

#include "confide/audit.h"
#include "confide/core.h"
#include "confide/dedup.h"
#include "confide/rules.h"
#include "confide/transport.h"
#include "runtime_int.h"

typedef struct cf_secure cf_secure;

/** Which part of the pipeline this process runs (config key `role`). */
typedef enum {
    CF_ROLE_ALL = 0, /* embedded: gateway, parties and combiner as threads of one process */
    CF_ROLE_GATEWAY, /* distributed: rules, audit log, shares published to JetStream */
    CF_ROLE_PARTY,   /* distributed: one party's windows over its shares */
    CF_ROLE_COMBINER /* distributed: MAC-checked release of the parties' partial sums */
} cf_role;

/** What the gateway, parties and combiner did; read after cf_secure_join. */
typedef struct cf_secure_stats {
    uint64_t alerts;
    uint64_t late;
    uint64_t windows;
    uint64_t results;
    uint64_t suppressed; /* groups below min_count */
    uint64_t integrity_alerts;
    uint64_t audited;
    uint64_t audit_first_index;
    char keys_dir[CF_CONF_STR_MAX + 16];
    char audit_dir[CF_CONF_STR_MAX + 16];
    uint64_t resumed;      /* events already in the log at start (skipped from the input) */
    uint64_t rescales;     /* worker rescales applied by this run */
    unsigned workers;      /* workers per party at the end */
    uint64_t dead_audited; /* dead letters this run appended to the log */
    uint64_t dead_resumed; /* dead letters already in the log at start (not appended again) */
    double workers_mean;   /* workers per party, time-weighted over the run (0: none) */
} cf_secure_stats;

/**
 * Opens keys, rules, the audit log and output files and starts the party and combiner
 * threads. When the config asks for nothing (protect none, no rules, no audit) *out is NULL
 * and the pipeline passes batches straight through.
 */
cf_err cf_secure_create(cf_secure **out, const cf_config *c, char *errstr, size_t errstr_size);
/** Accepted input records to skip because the audit log already holds them (resume). */
uint64_t cf_secure_resume_skip(const cf_secure *s);
/** Rejected input records the audit log already holds as dead letters (resume): the first
 *  this many rejects of a resumed run are not appended again. */
uint64_t cf_secure_resume_dead(const cf_secure *s);
/** true when the gateway keeps an audit log (dead letters go into it). */
bool cf_secure_audits(const cf_secure *s);
/** A 64-bit hash of what the input said about @p ev (not its log index or ingest stamp). */
uint64_t cf_secure_event_fingerprint(const cf_event *ev);
/** The events the audit log already holds (resume_skip of them): *n of them in all; *out
 *  (owned, cf_free) the fingerprints of those from index @p from on (fp[i - from]); the ids of
 *  those before it go through the duplicate states @p d1 and @p d2 (either may be NULL). */
cf_err cf_secure_logged_fingerprints(const cf_config *c, uint64_t from, cf_dedup *d1, cf_dedup *d2,
                                     uint64_t **out, uint64_t *n, char *errstr, size_t errstr_size);
/** Gateway: rules, audit append (assigns ev.seq = log index), protection and hand-off to the
 *  parties. The batch may be forwarded only after CF_OK. @p dead (@p n_dead entries, may be
 *  0; borrowed) are the input records rejected since the previous batch: they go into the
 *  audit log before the batch's events, in the same write (b->n may then be 0).
 *  @locality gateway thread */
cf_err cf_secure_gateway(cf_secure *s, cf_batch *b, const cf_audit_dead *dead, uint32_t n_dead,
                         char *errstr, size_t errstr_size);

/** A rule that fired for an event of a batch: its alert is written at forward. */
typedef struct cf_secure_hit {
    uint32_t ev; /* index in the batch */
    cf_rule_hit hit;
} cf_secure_hit;

/** What the gateway's write step leaves for its forward step (group commit). Lives with the
 *  batch; reused from batch to batch; free with cf_secure_gwbatch_free. */
typedef struct cf_secure_gwbatch {
    bool audited;       /* an audit record was written: sth is its signed head */
    cf_audit_sth sth;   /* its head, published (tree_heads.ndjson) once durable */
    uint64_t ticket;    /* cf_audit_written right after it: cf_secure_gateway_durable */
    uint64_t end_index; /* the log index after the batch (its checkpoint index) */
    cf_secure_hit *hits;
    uint32_t n_hits, hits_cap;
} cf_secure_gwbatch;

void cf_secure_gwbatch_free(cf_secure_gwbatch *g);

/**
 * Group commit (the embedded pipeline): the gateway's work split in three, so that the audit
 * fsync of one group of batches overlaps the rules and the audit write of the next.
 * cf_secure_group_commit switches the audit log to group commit (before the first batch);
 * cf_secure_gateway_write (gateway thread) runs the rules (verdicts into the log; alerts are
 * kept for later) and writes the batch and its signed tree head to the log without syncing;
 * cf_secure_gateway_durable (commit thread) makes every batch written up to @p ticket durable
 * with one fdatasync; cf_secure_gateway_forward (commit thread, only after durable) writes the
 * batch's alerts and tree head, hands its shares to the parties and asks for checkpoints.
 * Checkpoint records are written by the write step (the log has one writer).
 * cf_secure_gateway is the three in a row.
 */
void cf_secure_group_commit(cf_secure *s);
cf_err cf_secure_gateway_write(cf_secure *s, cf_batch *b, const cf_audit_dead *dead,
                               uint32_t n_dead, cf_secure_gwbatch *g, char *errstr,
                               size_t errstr_size);
cf_err cf_secure_gateway_durable(cf_secure *s, uint64_t ticket, char *errstr, size_t errstr_size);
cf_err cf_secure_gateway_forward(cf_secure *s, cf_batch *b, const cf_secure_gwbatch *g,
                                 char *errstr, size_t errstr_size);
/** Re-reads the blocked-party lists (SIGHUP). @locality gateway thread */
void cf_secure_reload(cf_secure *s);
/** End of input: parties flush their windows, the combiner drains; joins every thread and
 *  finalizes the output files. */
cf_err cf_secure_finish(cf_secure *s, cf_secure_stats *st, char *errstr, size_t errstr_size);
void cf_secure_destroy(cf_secure *s);
/** Distributed party or combiner: runs until the input ends (the gateway's end-of-input
 *  frame has gone through) or cf_secure_stop; then call cf_secure_finish. */
void cf_secure_serve(cf_secure *s);
/** Asks a serving party or combiner to stop at the next frame boundary, without flushing
 *  windows (its state file says where a restart resumes). Async-signal-safe. */
void cf_secure_stop(cf_secure *s);
/**
 * Asks for @p workers workers per party (1..16): the gateway applies it at its next batch
 * with a checkpoint marker at which the workers hand their key groups over. Any thread.
 * CF_E_INVAL out of range, CF_E_STATE when this process runs no party workers.
 */
cf_err cf_secure_rescale(cf_secure *s, unsigned workers);

/** Connects with the nats.* settings of @p c (password file checked 0600), as @p name
 *  (inbox prefix _INBOX.name). distributed.c. */
cf_err cf__nats_connect(const cf_config *c, const char *name, cf_js **out, char *errstr,
                        size_t errstr_size);

#endif
