/**
 * @file transport.h
 * @brief Frames between the roles of a distributed run, carried by NATS JetStream.
 *
 * The roles (gateway, parties, combiner: DESIGN.md section 2) exchange batches as frames:
 * a fixed header (magic, version, type, sender, batch id, payload length, CRC32C of header
 * and payload) and a payload the runtime defines. Embedded runs hand the same batches over
 * in-process rings; distributed runs seal them into frames and publish them to JetStream
 * streams, one stream per (kind, party) so that subject permissions can give every role
 * exactly what it needs (docs/distributed.md).
 *
 * Delivery model (why not pull consumers): libnats 3.4.1 overflows a heap array in
 * natsSubscription_Fetch when messages of an earlier pull are pending, so receivers use a
 * push consumer (js_SubscribeSync) starting at an explicit stream sequence, with explicit
 * acks and MaxAckPending for flow control. Durability and exactly-once do not rest on the
 * acks: every receiver checkpoints the stream sequence it has consumed together with its
 * state (as Flink does with source offsets) and resumes after it; every sender derives its
 * message ids (Nats-Msg-Id) from its input position, so a replay after a crash publishes the
 * same ids and the stream drops the copies within its duplicate window.
 */
#ifndef CONFIDE_TRANSPORT_H
#define CONFIDE_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- frames ---- */

#define CF_FRAME_MAGIC 0x54464643u /* "CFFT" little-endian */
#define CF_FRAME_VERSION                                                                           \
    3 /* 2: varint deltas in shares and partials (distributed.c); 3:                               \
         partials carry key and shares only where they have them */
#define CF_FRAME_HDR_LEN 32

/** What a frame carries (the runtime defines each payload). */
typedef enum {
    CF_FRAME_SHARES = 1,   /* gateway -> party: events' shares (or a checkpoint marker) */
    CF_FRAME_PARTIALS = 2, /* party -> combiner: partial window sums, late events, markers */
    CF_FRAME_GROUPS = 3,   /* gateway -> combiner: display names of pseudonymous groups */
    CF_FRAME_END = 4,      /* end of a finite input: flush */
    CF_FRAME_STATE = 5     /* party worker -> its party's workers: window state at a rescale */
} cf_frame_type;

typedef struct cf_frame_hdr {
    uint8_t type;   /* cf_frame_type */
    uint8_t sender; /* party index for shares/partials, 0 otherwise */
    uint32_t count; /* records in the payload */
    uint64_t id;    /* batch id: the sender's input position (deterministic on replay) */
    uint32_t len;   /* payload bytes */
    uint32_t aux;   /* partials: which output batch of input frame `id` */
} cf_frame_hdr;

/** Writes the header of a frame whose payload (h->len bytes) is at out + CF_FRAME_HDR_LEN. */
void cf_frame_seal(const cf_frame_hdr *h, uint8_t *out);
/** Checks magic, version, lengths and CRC of @p len bytes; fills @p h. CF_E_CORRUPT (with
 *  the reason in @p errstr) when anything is off. */
cf_err cf_frame_open(const uint8_t *data, size_t len, cf_frame_hdr *h, char *errstr,
                     size_t errstr_size);

/* ---- JetStream ---- */

/** How to reach the NATS servers and who we are. Strings may be empty (not NULL). */
typedef struct cf_js_opts {
    const char *servers; /* "nats://127.0.0.1:4222[,nats://...]" */
    const char *user;    /* per-role user (docs/distributed.md) */
    const char *password;
    const char *ca_file;   /* TLS: CA that signed the servers' certificates */
    const char *cert_file; /* TLS client certificate and key (optional) */
    const char *key_file;
    const char *name;         /* connection name, e.g. "confide-party-1" */
    const char *inbox_prefix; /* replies and push deliveries ("_INBOX.confide-party-1"): a
                                 role may subscribe to its own inboxes only */
    int64_t timeout_ms;
} cf_js_opts;

typedef struct cf_js cf_js;
typedef struct cf_js_sub cf_js_sub;

/** One received message; release it with cf_js_ack (after the receiver committed) or
 *  cf_js_release. */
typedef struct cf_js_msg {
    const uint8_t *data;
    size_t len;
    uint64_t stream_seq;
    uint64_t deliveries; /* > 1: a redelivery */
    void *impl;
} cf_js_msg;

cf_err cf_js_connect(cf_js **out, const cf_js_opts *o, char *errstr, size_t errstr_size);
void cf_js_close(cf_js *js);

/** Creates stream @p name over @p subject if missing (idempotent), file storage, @p replicas
 *  copies, message ids remembered for @p dup_window_s seconds. */
cf_err cf_js_ensure_stream(cf_js *js, const char *name, const char *subject, int replicas,
                           int64_t dup_window_s, char *errstr, size_t errstr_size);
/** What stream @p name holds now. */
typedef struct cf_js_stream_st {
    uint64_t msgs;
    uint64_t bytes;               /* as the server counts them: headers and subjects included */
    uint64_t first_seq, last_seq; /* first > last: empty */
} cf_js_stream_st;
cf_err cf_js_stream_state(cf_js *js, const char *name, cf_js_stream_st *out, char *errstr,
                          size_t errstr_size);
/** The header of the last frame on @p subject in stream @p name; *found false when there is
 *  none. A sender that restarts uses it to skip what it already published. */
cf_err cf_js_last(cf_js *js, const char *name, const char *subject, cf_frame_hdr *h, bool *found,
                  char *errstr, size_t errstr_size);

/** Publishes and waits for the stream's acknowledgement. @p msg_id de-duplicates (NULL: none).
 *  *duplicate (when not NULL) tells whether the stream already had that id. */
cf_err cf_js_publish(cf_js *js, const char *subject, const void *data, size_t len,
                     const char *msg_id, bool *duplicate, char *errstr, size_t errstr_size);

/** Publishes without waiting (at most 4096 in flight); failures are counted for cf_js_flush.
 *  For sinks whose every message has an id derived from its content, so that a replay
 *  after a crash publishes nothing twice. */
cf_err cf_js_publish_async(cf_js *js, const char *subject, const void *data, size_t len,
                           const char *msg_id);
/** Waits until every asynchronous publish is acknowledged: CF_OK, or CF_E_TRANSPORT with
 *  *failed (when not NULL) the number refused or timed out since the last flush. */
cf_err cf_js_flush(cf_js *js, uint64_t *failed);
/** An ordered asynchronous publisher: the frames of one stream that this process alone
 *  publishes to (one subject), up to @p window of them in flight. Each frame names the stream
 *  sequence it must follow (Nats-Expected-Last-Sequence), so the stream can only ever hold a
 *  prefix of the frames in the order they were sent, whatever fails: a frame refused or
 *  unanswered makes every later one refused too; the publisher then takes back what is in
 *  flight, asks the stream for its last message and sends again from the frame after it
 *  (its message id names it), retrying for @p retry_ms. @p stored is called from the
 *  caller's thread, in order, once per frame: with true when the stream holds it, with
 *  false for frames abandoned at cf_js_pub_close. @p stop (may be NULL) ends waits. */
typedef struct cf_js_pub cf_js_pub;
typedef void (*cf_js_stored_fn)(void *ctx, void *tag, bool stored);
cf_err cf_js_pub_open(cf_js_pub **out, cf_js *js, const char *stream, const char *subject,
                      unsigned window, int64_t retry_ms, cf_js_stored_fn stored, void *ctx,
                      const atomic_bool *stop, char *errstr, size_t errstr_size);
/** Queues a copy of @p len bytes under message id @p msg_id (unique within the stream's
 *  duplicate window) and publishes it; waits while @p window frames are in flight. */
cf_err cf_js_pub_send(cf_js_pub *p, const void *data, size_t len, const char *msg_id, void *tag,
                      char *errstr, size_t errstr_size);
/** Waits until the stream holds every frame sent. */
cf_err cf_js_pub_flush(cf_js_pub *p, char *errstr, size_t errstr_size);
/** Frames sent and not yet known stored (0 when the oldest failed: send or flush next).
 *  Hands back what the stream acknowledged meanwhile (the stored callback). */
unsigned cf_js_pub_inflight(cf_js_pub *p);
/** Abandons what is in flight (stored(ctx, tag, false) for each) and frees @p p. */
void cf_js_pub_close(cf_js_pub *p);

/** Consumes @p subject of stream @p stream from sequence @p start_seq (1 = the beginning),
 *  explicit acks, at most @p max_ack_pending unacknowledged. */
cf_err cf_js_subscribe(cf_js_sub **out, cf_js *js, const char *stream, const char *subject,
                       uint64_t start_seq, int max_ack_pending, char *errstr, size_t errstr_size);
/** The next message, waiting up to @p timeout_ms: CF_OK, CF_E_FULL on timeout (nothing yet),
 *  CF_E_TRANSPORT when the connection is gone for good. */
cf_err cf_js_next(cf_js_sub *s, cf_js_msg *m, int64_t timeout_ms);
/** Whether the subscription's consumer still answers. Ephemeral consumers live on one node;
 *  when it is lost (a cluster node stopped) nothing arrives and nothing fails: a receiver
 *  that has waited a while asks, and resubscribes after its last sequence when it is gone. */
bool cf_js_alive(cf_js_sub *s);
cf_err cf_js_ack(cf_js_msg *m);
void cf_js_release(cf_js_msg *m);
void cf_js_unsubscribe(cf_js_sub *s);

/* ---- core NATS (no stream: control requests and live statistics) ---- */

/** Subscribes to core NATS @p subject; read with cf_js_next (stream_seq 0), no acks. */
cf_err cf_nats_subscribe(cf_js_sub **out, cf_js *js, const char *subject, char *errstr,
                         size_t errstr_size);
/** The subject a message came on. */
const char *cf_js_msg_subject(const cf_js_msg *m);
/** Publishes without persistence or acknowledgement. */
cf_err cf_nats_publish(cf_js *js, const char *subject, const void *data, size_t len);
/** Answers request @p m (its reply subject) and releases it. */
cf_err cf_nats_respond(cf_js *js, cf_js_msg *m, const void *data, size_t len);
/** A request: the answer as text in @p reply (NUL-terminated, cut to fit). */
cf_err cf_nats_request(cf_js *js, const char *subject, const void *data, size_t len, char *reply,
                       size_t reply_size, int64_t timeout_ms, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif

#endif
