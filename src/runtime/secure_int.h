/*
 * Private to the runtime: what the gateway, parties and combiner hand each other,
 * and the state of a run. distributed.c carries the same batches between processes over
 * JetStream (frames, docs/distributed.md); embedded runs hand them over in-process rings.
 */
#ifndef CF_RUNTIME_SECURE_INT_H
#define CF_RUNTIME_SECURE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "confide/audit.h"
#include "confide/io.h"
#include "confide/keys.h"
#include "confide/metrics.h"
#include "confide/rules.h"
#include "confide/scale.h"
#include "confide/secagg.h"
#include "confide/transport.h"
#include "confide/window.h"
#include "observe.h"
#include "outfile.h"
#include "pgsink.h"
#include "ressig.h"
#include "secure.h"

#define DICT_RING 65536

/* Key partitioning (party.workers, docs/runtime.md): a pseudonym's key group is fixed; a
 * party's W workers own contiguous ranges of the groups, so a rescale moves whole groups. */
#define CF_WORKERS_MAX 16
#define CF_KEY_GROUPS 128

typedef enum { PROT_NONE, PROT_PLAIN, PROT_LSA } prot_mode;

/* One event as a party receives it. share is only filled for party 0 (lsa: value and MAC
 * shares; plain: the amount in share.v[1]); parties >= 1 regenerate theirs from the seed. */
typedef struct party_item {
    uint8_t key[CF_SA_PSEUDO_LEN];
    int64_t ts_us;
    uint64_t seq;
    /* Sharded runs: the largest event time of the whole stream before this event; the
     * worker advances its watermark to it first, so lateness is decided as if one worker
     * saw every event. */
    int64_t prior_max_us;
    cf_sa_vec share;
} party_item;

typedef struct item_batch {
    uint32_t n, cap;
    party_item *it;
    cf_sa_ctx ctx; /* what the masks of these events are bound to (log id, run id) */
    /* A checkpoint marker (n == 0): snapshot the state that reflects events [0, ckpt_index) */
    bool ckpt;
    uint64_t ckpt_index;
    uint64_t ckpt_alerts_len;
    uint64_t ckpt_alerts; /* the gateway's alert counter at the marker */
    uint64_t src_seq;     /* distributed party: stream sequence of the frame it came in */
    bool sharded;         /* the party has several workers: use prior_max_us and max_us */
    int64_t max_us;       /* the largest event time of the stream after this batch */
    uint32_t rescale_to;  /* a marker that also rescales the party to this many workers */
    bool barrier_only;    /* a rescale marker that is no checkpoint (nothing to log) */
    /* Distributed: the workers before the rescale, and whether this marker activates a
     * worker process added by it (it takes its key groups from the others' handover). */
    uint32_t rescale_from;
    bool activate;
} item_batch;

/* MSG_SUPPRESSED: a group below min_count (window, count, indexes; no key, no value) */
typedef enum { MSG_RESULT = 1, MSG_LATE = 2, MSG_CKPT = 3, MSG_SUPPRESSED = 4 } msg_type;

typedef struct party_msg {
    uint8_t type;
    bool update;
    uint8_t key[CF_SA_PSEUDO_LEN];
    int64_t start_us, end_us; /* MSG_LATE: start_us = event ts, end_us = watermark */
    uint64_t count;
    uint64_t first, last; /* MSG_LATE: first = seq */
    uint32_t reason;      /* MSG_LATE: 0 = state limit, else cf_window_late_reason */
    uint8_t value[CF_SA_VALUE_SIZE];
    /* MSG_CKPT: first = checkpoint index, count = alerts length; snapshot owned by the msg;
     * workers: the party's workers after the marker (a rescale), 0 when unchanged;
     * update: a rescale barrier that is no checkpoint (no snapshot);
     * reason: the party's workers while it was taken (a distributed party's state file) */
    uint8_t *snap;
    size_t snap_len;
    uint32_t workers;
} party_msg;

typedef struct msg_batch {
    uint32_t n, cap;
    party_msg *m;
    /* distributed: the input frame (stream sequence) whose processing produced this batch,
     * and which of its output batches it is: the batch's message id, the same on replay */
    uint64_t src_seq;
    uint32_t part;
    uint64_t stream_seq; /* combiner: where it sits in the party's stream */
} msg_batch;

/* A group's display form, sized to fit (one per distinct group). */
typedef struct dict_entry {
    uint8_t key[CF_SA_PSEUDO_LEN];
    char currency[4];
    char text[]; /* the group as a JSON object (NDJSON results) or CSV fields (CSV results) */
} dict_entry;

/* A pool of batches with a free ring (consumer -> producer) and a full ring. */
typedef struct lane {
    void **items;
    size_t n;
    cf_ring *free_ring, *full_ring;
} lane;

/* One worker of a party: the key groups it owns, their windows, its lanes and thread. */
typedef struct party {
    struct cf_secure *s;
    unsigned index;    /* the party */
    unsigned worker;   /* its slot among the party's workers */
    unsigned nworkers; /* workers of the party while this one runs (key group ownership) */
    pthread_t thread;
    bool started;
    lane in;  /* gateway -> party: item_batch */
    lane out; /* party -> combiner: msg_batch */
    cf_sa_party *sa;
    cf_window *win;
    msg_batch *cur_out;
    uint64_t cur_src_seq; /* distributed: the input frame being processed */
    uint32_t part;        /* output batches produced from it so far */
    bool tampered;
    bool hid; /* debug.hide_party done */
    uint64_t limit_hits;
    /* What the autoscaler measures (DS2's true processing rate): events taken and the time
     * spent on them; this worker writes, the autoscaler reads. */
    atomic_uint_fast64_t processed, busy_ns;
} party;

/* Where a party's workers meet at a rescale marker: each leaves its window snapshot, the
 * last one merges them and starts added workers; every worker that stays (or starts) then
 * takes its key groups from the merged state. */
typedef struct rescale_xchg {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned deposited;
    uint8_t *snaps[CF_WORKERS_MAX];
    size_t lens[CF_WORKERS_MAX];
    uint8_t *merged; /* shares: wiped when the last worker restored from it */
    size_t merged_len;
    unsigned restores_left;
    uint64_t gen;
} rescale_xchg;

/* A set of 16-byte pseudonyms (gateway: which groups the combiner already knows). */
typedef struct pset {
    uint8_t (*keys)[CF_SA_PSEUDO_LEN];
    uint8_t *used;
    size_t cap, n;
} pset;

/* A combiner's read position in one party's stream of messages. */
typedef struct cursor {
    msg_batch *b;
    uint32_t i;
    bool done;
} cursor;

/* Pseudonym -> dictionary entry (combiner). */
typedef struct pmap {
    dict_entry **slots;
    size_t cap, n;
} pmap;

struct cf_secure {
    cf_config conf;
    cf_role role;
    unsigned party_id; /* CF_ROLE_PARTY: which party this process is */
    prot_mode mode;
    unsigned k;
    unsigned group_mask;
    cf_sa_opts sa_opts;

    cf_key *gw_key, *comb_key, *pseudo_key;
    cf_key *party_keys[CF_KEY_PARTIES_MAX]; /* seeds of parties >= 1: workers added later */
    cf_sa_gateway *gw;
    cf_sa_pseudo *pseudo;
    cf_sa_combiner *comb;
    cf_sa_auditor *auditor;      /* from auditor.key: regenerates seeded partials */
    cf_sa_pseudo *attrib_pseudo; /* the combiner thread's own pseudonymizer */
    cf_fx *fx; /* convert.to: amounts and group currency in the reporting currency (read-only) */
    cf_sa_ctx ctx;    /* this run's mask context: log id and a fresh run id */
    cf_key *data_key; /* to read the audit log back for attribution */
    cf_rules *rules;
    cf_audit_log *audit;
    outfile alerts, results, late;
    ressig rsig; /* the combiner's signatures over results and late records */

    party parties[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX];
    unsigned workers;                 /* gateway: the workers per party events go to now */
    atomic_uint want_workers;         /* cf_secure_rescale: applied at the gateway's next batch */
    int64_t gw_max_ts;                /* gateway: the largest event time sent so far */
    atomic_uint_fast64_t gw_events;   /* gateway: events accepted (the log index without a log) */
    atomic_uint cur_workers;          /* s->workers for other threads (the autoscaler) */
    int64_t wk_t0_ns, wk_t_ns;        /* worker-seconds: since, and s->workers since (gateway) */
    double wk_ns;                     /* workers x ns up to wk_t_ns */
    struct cf_autoscaler *autoscaler; /* autoscale.policy: its thread (autoscale.c) */
    rescale_xchg xchg[CF_KEY_PARTIES_MAX];
    cf_window_conf wconf; /* how every worker's windows are made */
    struct rescale_plan { /* debug.rescale_at: (log index, workers) steps for tests */
        uint64_t at;
        unsigned to;
    } plan[8];
    unsigned nplan, plan_next;
    /* Distributed gateway: the rescales it made (OUT/rescales.log, written before their
     * markers go out), made again at the same log indexes when a restart replays the log,
     * so every stream gets the same markers and events the same workers. */
    struct redo_rescale {
        uint64_t at;
        unsigned to;
        bool barrier; /* a marker that was no checkpoint */
    } redo[256];
    unsigned nredo, redo_next;
    bool replaying;
    cf_ring *dict;
    pset announced;
    pmap names;
    pthread_t comb_thread;
    bool comb_started;

    /* gateway scratch */
    uint8_t *verdict_buf;
    cf_audit_bytes *verdicts;
    size_t scratch_cap;

    cf_secure_stats st;
    atomic_uint_fast64_t late_count;
    cf_ring *ckpt_ring;       /* combiner -> gateway: checkpoint blobs to write */
    uint64_t last_ckpt_index; /* gateway: index of the last checkpoint requested */
    uint64_t resume_index;    /* leaves already in the log when the run started */
    uint64_t resume_events;   /* of those, events (accepted input records to skip) */
    uint64_t resume_dead;     /* of those, dead letters (rejected input records to skip) */

    /* Group commit (cf_secure_group_commit, pipeline.c): the log syncs in groups. */
    bool group_commit;
    cf_secure_gwbatch gw_sync; /* cf_secure_gateway's (one batch at a time) */
    bool ephemeral_keys;
    int heads_fd; /* OUT/tree_heads.ndjson, -1 when there is no output directory */
    uint8_t sign_pk[CF_KEY_SIGN_PK_LEN]; /* the log's signing key: names it in checkpoints */
    bool witness_warned;
    bool results_csv; /* output.results_format: csv */

    /* Metrics (observe.h): registered before the threads start; NULL when not observed. */
    cf_counter *m_alerts[CF_RULES_MAX]; /* by rule index */
    cf_counter *m_integrity, *m_late;
    cf_gauge *m_watermark, *m_watermark_lag; /* party 0 updates them */
    cf_gauge *m_workers;                     /* gateway: workers per party */
    cf_observe *ob; /* results, late reasons, audit head (observe.c); NULL: not observed */

    /* Distributed roles (distributed.c): the JetStream connection and the threads that
     * carry batches between the lanes above and the streams. */
    cf_js *js;
    struct net_thread {
        struct cf_secure *s;
        unsigned i;
        unsigned w; /* the worker slot of party i whose stream this thread carries */
        pthread_t t;
        bool running;
    } net[CF_KEY_PARTIES_MAX * CF_WORKERS_MAX + 2];
    unsigned dworkers;       /* distributed: worker processes per party (party.workers) */
    unsigned worker_id;      /* distributed party: which of them this process is (party.worker) */
    unsigned dnworkers;      /* distributed party: the party's workers now (rescales change it) */
    atomic_bool retired;     /* distributed party: a rescale took its key groups away */
    uint64_t retire_seq;     /* ... at the shares frame of this stream sequence */
    uint64_t retire_index;   /* ... at the marker of this log index */
    atomic_bool comb_done;   /* combiner: released everything; idle receivers may stop */
    atomic_bool ctl_stop;    /* gateway: its control thread ends (the input was published) */
    atomic_bool net_stop;    /* stop without flushing (cf_secure_stop) */
    atomic_bool groups_stop; /* combiner: every party's stream ended */
    atomic_bool net_failed;  /* a frame could not be sent or read: the run fails */
    cursor cur[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX]; /* combiner: read positions */
    uint64_t start_seq[CF_KEY_PARTIES_MAX * CF_WORKERS_MAX + 1];
    /* by i * dworkers + w */ /* party/combiner: resume at these sequences */
    uint64_t end_index;       /* gateway: events in the log when the input ended */
    /* What a restarted sender already published (from its streams' last frames): the
     * gateway skips events below ev_floor and markers at or below mk_floor; a party skips
     * output batches at or before (out_seq, out_part). */
    uint64_t ev_floor[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX],
        mk_floor[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX];
    bool has_floor[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX];
    uint64_t out_seq;
    uint32_t out_part;
    bool has_out_floor;
    char log_hex[2 * CF_SA_ID_LEN + 1]; /* gateway: the log id in message ids */
    /* output.nats_subject: the output lines also go to JetStream (natssink in
     * distributed.c); sink_js is s->js in a distributed role, its own connection embedded */
    /* Combiner: the gateway's log (its hello) and where its input ended, for the signatures
     * over results (ressig); written by the groups receiver, read by the combiner. */
    uint8_t comb_log_id[CF_SA_ID_LEN];
    atomic_bool comb_have_log, comb_have_end;
    atomic_uint_fast64_t comb_end_index;
    uint64_t comb_sig_len, comb_sig_seq; /* restored from the state file */
    bool comb_resumed;
    cf_js *sink_js;
    bool sink_own;
    atomic_bool sink_failed;
    pgsink *pg; /* output.postgres: the tables follow the files (pgsink.c); NULL: off */
};

/* ---- shared by the roles (gateway.c, party.c, combiner.c, distributed.c) ---- */

/*
 * Batch metadata in the audit log: entries of (type u8, length u8, value). META_MASK_CTX
 * records the mask context (log id || run id) the batch's shares were made under, so a
 * replay after a crash derives the very masks the parties already summed, and attribution
 * regenerates the right partials; events protected after a restart get the new run's id,
 * so an index re-assigned to another event never gets the mask of the first.
 */
enum { META_MASK_CTX = 1, META_FX_RATE = 2 };
#define META_MAX 64
/* META_FX_RATE (convert.to): one entry per distinct rate the batch's events were converted
 * with (cf_fx_rate_encode), so the log itself says how every released sum was formed. */
#define META_FX_MAX ((CF_AUDIT_META_MAX - META_MAX) / (2 + CF_FX_RATE_ENC_LEN))

static inline size_t meta_encode(const cf_sa_ctx *ctx, uint8_t buf[META_MAX])
{
    buf[0] = META_MASK_CTX;
    buf[1] = (uint8_t)sizeof(*ctx);
    memcpy(buf + 2, ctx, sizeof(*ctx));
    return 2 + sizeof(*ctx);
}

static inline bool meta_ctx(const cf_audit_entry *e, cf_sa_ctx *out)
{
    const uint8_t *p = e->meta, *end = e->meta + e->meta_len;
    while (p != NULL && end - p >= 2 && end - p >= 2 + p[1]) {
        if (p[0] == META_MASK_CTX && p[1] == sizeof(*out)) {
            memcpy(out, p + 2, sizeof(*out));
            return true;
        }
        p += 2 + p[1];
    }
    return false;
}

/* An event as the windows see it under convert.to: the amount in the reporting currency
 * and that currency in the group key. The gateway dead-letters events without a rate, so
 * @p ev always converts (false would be a bug). @p fx NULL: @p ev itself. */
static inline const cf_event *fx_event(const cf_fx *fx, const cf_event *ev, cf_event *tmp, bool *ok)
{
    *ok = true;
    if (fx == NULL) {
        return ev;
    }
    *tmp = *ev;
    const cf_fx_rate *r = cf_fx_find(fx, ev->currency, ev->ts_us);
    *ok = r != NULL && cf_fx_convert(r, ev->amount_minor, &tmp->amount_minor) == CF_OK;
    memcpy(tmp->currency, cf_fx_target(fx), 4);
    return tmp;
}

static inline uint64_t key_hash(const uint8_t k[CF_SA_PSEUDO_LEN])
{
    uint64_t h;
    memcpy(&h, k, sizeof(h)); /* pseudonyms are keyed hashes: already uniform */
    return h;
}

/* The key group of a pseudonym (bytes 8..15: bytes 0..7 index hash tables). */
static inline unsigned key_group(const uint8_t k[CF_SA_PSEUDO_LEN])
{
    uint64_t h;
    memcpy(&h, k + 8, sizeof(h));
    return (unsigned)(h % CF_KEY_GROUPS);
}

/* Which of @p n workers owns the key group of @p k: contiguous ranges of groups. */
static inline unsigned key_owner(const uint8_t k[CF_SA_PSEUDO_LEN], unsigned n)
{
    return n <= 1 ? 0 : key_group(k) * n / CF_KEY_GROUPS;
}

static inline void *lane_take(lane *l)
{
    void *b = NULL;
    cf_err err = cf_ring_pop_wait(l->free_ring, &b);
    CF_ASSERT(err == CF_OK);
    return b;
}

/* An empty batch of events for a party (gateway side). */
static inline item_batch *take_items(lane *l)
{
    item_batch *b = lane_take(l);
    b->n = 0;
    b->ckpt = false;
    b->sharded = false;
    b->max_us = INT64_MIN;
    b->rescale_to = 0;
    b->barrier_only = false;
    b->rescale_from = 0;
    b->activate = false;
    return b;
}

/* An empty batch of messages for the combiner (party side). */
static inline msg_batch *take_msgs(lane *l)
{
    msg_batch *b = lane_take(l);
    b->n = 0;
    return b;
}

typedef struct ckpt_blob {
    uint8_t *data;
    size_t len;
    uint64_t index;
} ckpt_blob;

/* party.c */
extern const cf_window_value_ops cf__lsa_value_ops;
void cf__party_on_result(void *opaque, const cf_window_result *r);
void cf__party_on_late(void *opaque, const cf_window_late *l);
void *cf__party_main(void *arg);
/* Creates the windows of worker @p pa (s->wconf). */
cf_err cf__party_open_window(party *pa, char *errstr, size_t errstr_size);
/* Restores worker @p pa's key groups from a party's (merged) snapshot. */
cf_err cf__party_restore(party *pa, const uint8_t *snap, size_t len, char *errstr,
                         size_t errstr_size);
/* Allocates the lanes of worker slot @p w of party @p i (idempotent). */
cf_err cf__worker_lanes(cf_secure *s, unsigned i, unsigned w);

/* gateway.c: the gateway's per-batch steps that recovery (secure.c) replays too */
void cf__gateway_count_alert(cf_secure *s, const cf_rule_hit *hit);
cf_err cf__gateway_announce(cf_secure *s, const cf_event *ev, uint8_t *pseudo);
cf_err cf__gateway_protect(cf_secure *s, const cf_event *events, uint32_t n, const cf_sa_ctx *ctx,
                           char *errstr, size_t errstr_size);
void cf__gateway_markers(cf_secure *s, uint64_t index, uint64_t alerts_len, uint64_t alerts);
void cf__gateway_checkpoints(cf_secure *s);
cf_err cf__gateway_load_rescales(cf_secure *s, char *errstr, size_t errstr_size);
bool cf__gateway_redo_rescales(cf_secure *s, uint64_t index, bool ckpt);

/* autoscale.c: autoscale.policy drives cf_secure_rescale from the workers' busy time. */
cf_err cf__autoscale_start(cf_secure *s, char *errstr, size_t errstr_size);
void cf__autoscale_stop(cf_secure *s);
/* The policy autoscale.* describes (and its forecaster for predictive, else NULL); the
 * embedded autoscaler and `confide autoscale` (scaler.c) share it. */
cf_err cf__autoscale_policy(const cf_config *c, cf_policy **policy, cf_forecaster **fc,
                            char *errstr, size_t errstr_size);
/** debug.worker_delay_us: holds the calling party worker n x that long (a sleep). */
void cf__autoscale_worker_delay(const cf_secure *s, uint32_t n);

/* combiner.c */
void *cf__combiner_main(void *arg);

/* ---- checkpoint blobs (checkpoint.c) ---- */

/* What a checkpoint recorded (the audit log's for the gateway, the state files' for a
 * distributed party or combiner). */
typedef struct resume_state {
    uint64_t index; /* events [0, index) are reflected in the state below */
    uint64_t alerts_len, results_len, late_len, sig_len, sig_seq;
    uint64_t alerts, results, windows, suppressed, late, integrity_alerts;
    uint32_t k;
    const uint8_t *snaps[CF_KEY_PARTIES_MAX];
    size_t snap_len[CF_KEY_PARTIES_MAX];
    const uint8_t *tail; /* bytes after the snapshots (distributed: stream positions) */
    size_t tail_len;
    void *blob;            /* owned */
    bool blob_index_known; /* index was set by the container (the audit log): must match */
} resume_state;

/* Encodes the state of @p s at a checkpoint: @p snaps of @p nsnap parties, @p tail appended.
 * Returns an owned buffer (cf_free) of *len bytes, NULL when out of memory. */
uint8_t *cf__ckpt_encode(cf_secure *s, uint64_t index, uint64_t alerts_len, uint64_t alerts,
                         uint64_t results_len, uint64_t late_len, uint64_t sig_len,
                         uint64_t sig_seq, const uint8_t *const *snaps, const size_t *snap_len,
                         unsigned nsnap, const uint8_t *tail, size_t tail_len, size_t *len);
/* Parses r->blob (@p len bytes) into @p r. */
cf_err cf__ckpt_parse(resume_state *r, size_t len, char *errstr, size_t errstr_size);

/* ---- distributed.c ---- */

/* Connects and creates this role's streams; for a party or combiner, loads its state file
 * into @p r (r->blob NULL when it starts fresh) and sets start_seq. */
cf_err cf__net_open(cf_secure *s, resume_state *r, char *errstr, size_t errstr_size);
/* Starts the threads that carry this role's lanes to and from JetStream. */
bool cf__net_start(cf_secure *s);
/* Gateway: after the party lanes are closed, waits until everything queued is published
 * (then an end-of-input frame). Party/combiner: waits until the input ended. Idempotent. */
void cf__net_join(cf_secure *s);
void cf__net_close(cf_secure *s);
/* Combiner: every party's @p nw workers reached a checkpoint marker; make results durable
 * and record the read positions (state file). */
void cf__net_combiner_checkpoint(cf_secure *s, const party_msg *const *msgs, unsigned nw);
/* Combiner: opens the signer over results once the gateway's hello named the log (true when
 * it is open). @locality combiner thread, or after it ended */
bool cf__net_combiner_signer(cf_secure *s);
/* Gateway: streams and senders for workers [dworkers, @p to) of every party (a rescale
 * beyond the slots it had). @locality gateway thread */
bool cf__net_gateway_grow(cf_secure *s, unsigned to);
/* Gateway restarting after rescales: what the streams of workers [dworkers, @p to) hold,
 * before its log is replayed (no senders yet). */
cf_err cf__net_gateway_floors(cf_secure *s, unsigned to, char *errstr, size_t errstr_size);
/* Combiner: receivers for the added slots of a rescale. @locality combiner thread */
bool cf__net_combiner_grow(cf_secure *s, unsigned to);
/* A distributed party worker at a rescale marker (@p activate: the marker that starts an
 * added worker): hands its window state to the party's other workers through JetStream and
 * takes its key groups among @p to workers from all @p from states. Returns false when this
 * worker retires. @locality party worker thread */
bool cf__net_party_rescale(party *pa, unsigned from, unsigned to, uint64_t index, bool activate);
/* A distributed party or combiner: block until its input ended (or stop was asked). */
void cf__net_wait(cf_secure *s);
/* output.nats_subject: connect (embedded) and create the output stream. */
cf_err cf__sink_open(cf_secure *s, char *errstr, size_t errstr_size);
/* Publishes one output line (kind: results, late, alerts) without waiting; no-op when off. */
void cf__sink_put(cf_secure *s, const char *kind, const char *line, size_t len);
/* Waits for every line published so far (at checkpoints and the end); false on a refusal. */
bool cf__sink_flush(cf_secure *s);
void cf__sink_close(cf_secure *s);

#endif
