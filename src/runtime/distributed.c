/*
 * Distributed roles: the lanes of secure.c carried over NATS JetStream (docs/distributed.md).
 *
 *   gateway  --PREFIX.shares.I-->  party I  --PREFIX.partials.I-->  combiner
 *   gateway  --PREFIX.groups------------------------------------->  combiner
 *
 * The role code is secure.c's: the gateway still fills the parties' input lanes and the
 * parties still fill their output lanes; here, sender threads seal what arrives in a lane
 * into a frame and publish it, and receiver threads open frames into the lanes of the
 * process on the other side. One stream per (kind, party) lets subject permissions give
 * party I its own shares and nothing else.
 *
 * Exactly once, per role (the Flink model: positions checkpointed with the state):
 *  - Gateway: the audit log is durable before anything is published. A restart replays the
 *    log from its last checkpoint and republishes those batches under the same message ids
 *    (the batch's first log index), which the streams drop as duplicates.
 *  - Party I: at every checkpoint marker from the gateway it publishes everything before the
 *    marker, then writes OUT/party-I.state (window snapshot + the marker's stream sequence).
 *    A restart restores the snapshot and consumes again after the marker. Its windows see
 *    the same frames in the same order, so it emits the same batches under the same ids
 *    ("p<I>.<input seq>.<part>"), and the stream drops the copies.
 *  - Combiner: when every party's marker arrived (lockstep), results are synced and
 *    OUT/combiner.state records their lengths and each party stream's sequence; a restart
 *    cuts the outputs back and resumes after those sequences.
 * Acks are for flow control only (MaxAckPending); nothing relies on redelivery.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "secure_int.h"

#define RECV_WAIT_MS 200
#define PUBLISH_RETRY_S 60
#define GROUPS_PER_FRAME 512

/* ---- names ---- */

static void stream_name(const cf_secure *s, const char *kind, int i, char *out, size_t n)
{
    char up[64];
    size_t j = 0;
    for (; s->conf.nats_prefix[j] != '\0' && j + 1 < sizeof(up); j++) {
        char c = s->conf.nats_prefix[j];
        up[j] = (char)(c >= 'a' && c <= 'z' ? c - 32 : (c == '.' ? '_' : c));
    }
    up[j] = '\0';
    if (i < 0) {
        snprintf(out, n, "%s_%s", up, kind);
    } else {
        snprintf(out, n, "%s_%s_%d", up, kind, i);
    }
}

static void subject_name(const cf_secure *s, const char *kind, int i, char *out, size_t n)
{
    if (i < 0) {
        snprintf(out, n, "%s.%s", s->conf.nats_prefix, kind);
    } else {
        snprintf(out, n, "%s.%s.%d", s->conf.nats_prefix, kind, i);
    }
}

/* The stream and subject of party @p i's worker @p w (shares or partials): worker 0 has the
 * names above, worker W >= 1 its own stream, PREFIX.shares.I.W; the names do not depend on
 * how many workers there are, so a rescale only adds or idles streams. */
static void slot_names(const cf_secure *s, const char *kind, const char *subj_kind, unsigned i,
                       unsigned w, char *stream, char *subject, size_t n)
{
    stream_name(s, kind, (int)i, stream, n);
    subject_name(s, subj_kind, (int)i, subject, n);
    if (w > 0) {
        size_t ls = strlen(stream), lj = strlen(subject);
        snprintf(stream + ls, n - ls, "_%u", w);
        snprintf(subject + lj, n - lj, ".%u", w);
    }
}

/* Party I's rescale handovers: PREFIX.handover.I.<marker index>, read by party I only. */
static void handover_names(const cf_secure *s, uint64_t index, char *stream, char *subject,
                           size_t n)
{
    stream_name(s, "HANDOVER", (int)s->party_id, stream, n);
    subject_name(s, "handover", (int)s->party_id, subject, n);
    size_t l = strlen(subject);
    if (index == UINT64_MAX) {
        snprintf(subject + l, n - l, ".>");
    } else {
        snprintf(subject + l, n - l, ".%" PRIu64, index);
    }
}

/* Index of (party, worker) in start_seq, the combiner's state and s->net; the groups
 * thread comes after every slot. */
static unsigned slot_index(unsigned i, unsigned w)
{
    return i * CF_WORKERS_MAX + w;
}
#define GROUPS_THREAD (CF_KEY_PARTIES_MAX * CF_WORKERS_MAX)
#define CONTROL_THREAD (GROUPS_THREAD + 1)

/* ---- little-endian codec ---- */

typedef struct wbuf {
    uint8_t *p, *end;
} wbuf;

static void w8(wbuf *w, uint8_t v)
{
    *w->p++ = v;
}

static void w32(wbuf *w, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        *w->p++ = (uint8_t)(v >> (8 * i));
    }
}

static void w64(wbuf *w, uint64_t v)
{
    w32(w, (uint32_t)v);
    w32(w, (uint32_t)(v >> 32));
}

static void wbytes(wbuf *w, const void *d, size_t n)
{
    memcpy(w->p, d, n);
    w->p += n;
}

typedef struct rbuf {
    const uint8_t *p, *end;
    bool bad;
} rbuf;

static bool need(rbuf *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint8_t r8(rbuf *r)
{
    return need(r, 1) ? *r->p++ : 0;
}

static uint32_t r32(rbuf *r)
{
    uint32_t v = 0;
    if (need(r, 4)) {
        for (int i = 0; i < 4; i++) {
            v |= (uint32_t)r->p[i] << (8 * i);
        }
        r->p += 4;
    }
    return v;
}

static uint64_t r64(rbuf *r)
{
    uint64_t lo = r32(r);
    return lo | (uint64_t)r32(r) << 32;
}

static void rbytes(rbuf *r, void *d, size_t n)
{
    if (need(r, n)) {
        memcpy(d, r->p, n);
        r->p += n;
    } else {
        memset(d, 0, n);
    }
}

/* Varints (7 bits a byte, low first) and zigzag deltas: event times, log indexes and
 * window bounds move little from one item to the next, so a frame carries their
 * differences in 1-3 bytes instead of 8. Deltas wrap in uint64, so any value round-trips. */
#define VAR_MAX 10

static void wvar(wbuf *w, uint64_t v)
{
    while (v >= 0x80) {
        *w->p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *w->p++ = (uint8_t)v;
}

static void wdelta(wbuf *w, uint64_t v, uint64_t prev)
{
    uint64_t d = v - prev;
    wvar(w, (d << 1) ^ (0 - (d >> 63))); /* zigzag: small negative differences stay small */
}

static uint64_t rvar(rbuf *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (!need(r, 1)) {
            return 0;
        }
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            return v;
        }
    }
    r->bad = true; /* longer than 10 bytes */
    return 0;
}

static uint64_t rdelta(rbuf *r, uint64_t prev)
{
    uint64_t z = rvar(r);
    return prev + ((z >> 1) ^ (0 - (z & 1)));
}

/* ---- payloads ----
 * A shares or partials frame carries one or more of the sender's batches (sub-batches):
 * a sender that falls behind packs what has queued up into one frame, so the round trip
 * of a publish is paid per frame, not per batch. A checkpoint marker always ends a frame
 * (a receiver that resumes after that frame's sequence must not skip anything).
 * shares:   per sub-batch: u8 flags (1 marker, 2 sharded, 4 rescale, 8 activate, 16 barrier
 *           only) | log id 16 | run id 16 | u32 n |
 *           [sharded: stream max event time i64] |
 *           events: n x (key | ts Δ | seq Δ | [sharded: prior max ts Δ] |
 *                        [share 6 x u64, party 0 only])
 *           key: var d | [d = 0: pseudonym 16] (d >= 1: the pseudonym of the event d
 *                before in this sub-batch; frame version 3)
 *           marker: checkpoint index u64 | alerts length u64 | alerts u64 |
 *                   [rescale: workers before u8 | workers after u8]
 * partials: per sub-batch: input seq u64 | part u32 | u32 n |
 *           n x (type u8 (+ 128 update) | pseudonym 16 | start Δ | end - start Δ |
 *                count var | first Δ | last - first Δ | reason var (marker: workers
 *                after it) | value CF_SA_VALUE_SIZE)
 *           (var: a varint; Δ: a zigzag varint of the difference to the previous item's
 *           value, 0 before the first; frame version 2)
 * groups:   n x (pseudonym 16 | currency 4 | text length u16 | text)
 * end:      empty (the frame id is the sender's final position) */

/* The most an item can take (frames are sized by these bounds). */
#define SHARE_ITEM (VAR_MAX + CF_SA_PSEUDO_LEN + 2 * VAR_MAX)
#define MSG_ITEM (1 + CF_SA_PSEUDO_LEN + 5 * VAR_MAX + 5 + CF_SA_VALUE_SIZE)

#define SHARES_CKPT 1u
#define SHARES_SHARDED 2u /* the stream's event time rides along (party.workers > 1) */
#define SHARES_RESCALE 4u /* a marker that rescales the party (docs/distributed.md) */
#define SHARES_ACTIVATE 8u
#define SHARES_BARRIER 16u /* a rescale marker that is no checkpoint */
#define SHARES_FLAGS 31u

static size_t shares_size(const item_batch *b, unsigned to)
{
    size_t item = SHARE_ITEM + (to == 0 ? sizeof(cf_sa_vec) : 0) + (b->sharded ? VAR_MAX : 0);
    return 1 + 2 * CF_SA_ID_LEN + 4 +
           (b->ckpt ? 24 + (b->rescale_to != 0 ? 2 : 0)
                    : (b->sharded ? 8 : 0) + (size_t)b->n * item);
}

static void encode_shares(wbuf *w, const item_batch *b, unsigned to)
{
    bool rescale = b->ckpt && b->rescale_to != 0;
    w8(w,
       (uint8_t)((b->ckpt ? SHARES_CKPT : 0) | (!b->ckpt && b->sharded ? SHARES_SHARDED : 0) |
                 (rescale ? SHARES_RESCALE : 0) | (rescale && b->activate ? SHARES_ACTIVATE : 0) |
                 (rescale && b->barrier_only ? SHARES_BARRIER : 0)));
    wbytes(w, b->ctx.log_id, CF_SA_ID_LEN);
    wbytes(w, b->ctx.run_id, CF_SA_ID_LEN);
    w32(w, b->ckpt ? 0 : b->n);
    if (!b->ckpt && b->sharded) {
        w64(w, (uint64_t)b->max_us);
    }
    if (b->ckpt) {
        w64(w, b->ckpt_index);
        w64(w, b->ckpt_alerts_len);
        w64(w, b->ckpt_alerts);
        if (rescale) {
            w8(w, (uint8_t)b->rescale_from);
            w8(w, (uint8_t)b->rescale_to);
        }
        return;
    }
    uint64_t ts = 0, seq = 0, prior = 0;
    /* The last event of each pseudonym seen so far (index + 1; a miss sends the key again,
     * so the table's size bounds nothing but the saving). A coarse grouping repeats a few
     * keys all through a batch: 16 bytes become 1. */
    uint16_t last[1024] = {0};
    for (uint32_t i = 0; i < b->n; i++) {
        const party_item *it = &b->it[i];
        uint32_t h;
        memcpy(&h, it->key, sizeof(h)); /* pseudonyms are keyed hashes: uniform */
        uint16_t *slot = &last[h & 1023u];
        uint32_t prev = *slot;
        if (prev != 0 && i < 65535 && memcmp(b->it[prev - 1].key, it->key, CF_SA_PSEUDO_LEN) == 0) {
            wvar(w, i + 1 - prev);
        } else {
            wvar(w, 0);
            wbytes(w, it->key, CF_SA_PSEUDO_LEN);
        }
        if (i < 65535) {
            *slot = (uint16_t)(i + 1);
        }
        wdelta(w, (uint64_t)it->ts_us, ts);
        wdelta(w, it->seq, seq);
        ts = (uint64_t)it->ts_us;
        seq = it->seq;
        if (b->sharded) {
            wdelta(w, (uint64_t)it->prior_max_us, prior);
            prior = (uint64_t)it->prior_max_us;
        }
        if (to == 0) { /* parties >= 1 regenerate theirs from their seeds */
            for (int d = 0; d < CF_SA_DIM_MAX; d++) {
                w64(w, it->share.v[d]);
            }
            for (int d = 0; d < CF_SA_DIM_MAX; d++) {
                w64(w, it->share.mac[d]);
            }
        }
    }
}

/* One sub-batch of a shares frame into @p b. */
static bool decode_shares(rbuf *r, unsigned to, item_batch *b)
{
    uint8_t flags = r8(r);
    b->ckpt = (flags & SHARES_CKPT) != 0;
    b->sharded = (flags & SHARES_SHARDED) != 0;
    b->rescale_to = 0;
    b->rescale_from = 0;
    b->barrier_only = (flags & SHARES_BARRIER) != 0;
    b->activate = (flags & SHARES_ACTIVATE) != 0;
    rbytes(r, b->ctx.log_id, CF_SA_ID_LEN);
    rbytes(r, b->ctx.run_id, CF_SA_ID_LEN);
    uint32_t count = r32(r);
    b->max_us = b->sharded ? (int64_t)r64(r) : INT64_MIN;
    b->n = 0;
    bool rescale = (flags & SHARES_RESCALE) != 0;
    if (flags > SHARES_FLAGS || (b->ckpt && b->sharded) ||
        ((flags & (SHARES_ACTIVATE | SHARES_BARRIER)) != 0 && !rescale) || (rescale && !b->ckpt)) {
        return false;
    }
    if (b->ckpt) {
        b->ckpt_index = r64(r);
        b->ckpt_alerts_len = r64(r);
        b->ckpt_alerts = r64(r);
        if (rescale) {
            b->rescale_from = r8(r);
            b->rescale_to = r8(r);
        }
        bool counts =
            !rescale || (b->rescale_from >= 1 && b->rescale_to >= 1 &&
                         b->rescale_from <= CF_WORKERS_MAX && b->rescale_to <= CF_WORKERS_MAX);
        return !r->bad && count == 0 && counts;
    }
    if (count > b->cap) {
        return false; /* pipeline.batch_max differs between the roles */
    }
    uint64_t ts = 0, seq = 0, prior = 0;
    for (uint32_t i = 0; i < count && !r->bad; i++) {
        party_item *it = &b->it[i];
        uint64_t back = rvar(r);
        if (back == 0) {
            rbytes(r, it->key, CF_SA_PSEUDO_LEN);
        } else if (back <= i) {
            memcpy(it->key, b->it[i - back].key, CF_SA_PSEUDO_LEN);
        } else {
            return false;
        }
        it->ts_us = (int64_t)(ts = rdelta(r, ts));
        it->seq = seq = rdelta(r, seq);
        it->prior_max_us = b->sharded ? (int64_t)(prior = rdelta(r, prior)) : INT64_MIN;
        memset(&it->share, 0, sizeof(it->share));
        if (to == 0) {
            for (int k = 0; k < CF_SA_DIM_MAX; k++) {
                it->share.v[k] = r64(r);
            }
            for (int k = 0; k < CF_SA_DIM_MAX; k++) {
                it->share.mac[k] = r64(r);
            }
        }
    }
    b->n = count;
    return !r->bad;
}

static size_t msgs_size(const msg_batch *b)
{
    return 16 + (size_t)b->n * MSG_ITEM;
}

static void encode_msgs(wbuf *w, const msg_batch *b)
{
    w64(w, b->src_seq);
    w32(w, b->part);
    w32(w, b->n);
    uint64_t start = 0, first = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        const party_msg *m = &b->m[i];
        w8(w, (uint8_t)(m->type | (m->update ? 0x80 : 0)));
        if (m->type != MSG_SUPPRESSED) {
            wbytes(w, m->key, CF_SA_PSEUDO_LEN);
        }
        wdelta(w, (uint64_t)m->start_us, start);
        wdelta(w, (uint64_t)m->end_us, (uint64_t)m->start_us);
        wvar(w, m->count);
        wdelta(w, m->first, first);
        wdelta(w, m->last, m->first);
        start = (uint64_t)m->start_us;
        first = m->first;
        /* a marker's reason field carries the workers after it (a rescale; 0: unchanged) */
        wvar(w, m->type == MSG_CKPT ? m->workers : m->reason);
        if (m->type == MSG_RESULT) {
            wbytes(w, m->value, CF_SA_VALUE_SIZE);
        }
    }
}

/* One sub-batch of a partials frame into @p b. */
static bool decode_msgs(rbuf *r, msg_batch *b)
{
    b->src_seq = r64(r);
    b->part = r32(r);
    uint32_t count = r32(r);
    if (r->bad || count > b->cap) {
        return false;
    }
    uint64_t start = 0, first = 0;
    for (uint32_t i = 0; i < count && !r->bad; i++) {
        party_msg *m = &b->m[i];
        memset(m, 0, sizeof(*m));
        uint8_t t = r8(r);
        m->type = t & 0x7f;
        m->update = (t & 0x80) != 0;
        if (m->type != MSG_SUPPRESSED) {
            rbytes(r, m->key, CF_SA_PSEUDO_LEN);
        }
        m->start_us = (int64_t)(start = rdelta(r, start));
        m->end_us = (int64_t)rdelta(r, start);
        m->count = rvar(r);
        m->first = first = rdelta(r, first);
        m->last = rdelta(r, first);
        uint64_t reason = rvar(r);
        if (reason > UINT32_MAX) {
            return false;
        }
        m->reason = (uint32_t)reason;
        if (m->type == MSG_RESULT) {
            rbytes(r, m->value, CF_SA_VALUE_SIZE);
        }
        if (m->type < MSG_RESULT || m->type > MSG_SUPPRESSED) {
            return false;
        }
        if (m->type == MSG_CKPT) {
            m->workers = m->reason;
            m->reason = 0;
            if (m->workers > CF_WORKERS_MAX) {
                return false;
            }
        }
    }
    b->n = count;
    return !r->bad;
}

/* ---- sending ---- */

static void net_fail(cf_secure *s, const char *what, const char *err)
{
    if (!atomic_exchange(&s->net_failed, true)) {
        CF_LOG(CF_LOG_ERROR, "distributed", "%s: %s", what, err);
    }
}

/* Publishes, retrying while the cluster is unreachable (a node restarting, a leader
 * election) for up to PUBLISH_RETRY_S seconds. */
static bool publish(cf_secure *s, const char *subject, const uint8_t *frame, size_t len,
                    const char *msg_id)
{
    char err[256];
    int64_t give_up = cf_now_ns() + (int64_t)PUBLISH_RETRY_S * 1000000000LL;
    for (int attempt = 0;; attempt++) {
        cf_err e = cf_js_publish(s->js, subject, frame, len, msg_id, NULL, err, sizeof(err));
        if (e == CF_OK) {
            return true;
        }
        if (e != CF_E_TRANSPORT || cf_now_ns() > give_up || atomic_load(&s->net_stop)) {
            net_fail(s, "cannot publish a frame", err);
            return false;
        }
        if (attempt == 0) {
            CF_LOG(CF_LOG_WARN, "distributed", "publish to %s failed (%s); retrying", subject, err);
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}

/* Frames in flight per stream (cf_js_pub): a sender does not wait for each frame's ack, yet
 * the stream holds its frames in order whatever fails. */
#define PUB_WINDOW 8
/* Frames in flight above which a sender keeps filling its frame rather than sending a
 * small one: the time an ack takes batches what arrives meanwhile, as a synchronous
 * publish did, while full frames still go out back to back. */
#define PUB_HOLD 1
#define HOLD_WAIT_NS 1000000

/* Whether a sender keeps filling the frame it holds (its first batch came at @p since):
 * while a frame is in flight, and for nats.linger_ms. */
static bool lingering(const cf_secure *s, cf_js_pub *p, int64_t since)
{
    return cf_js_pub_inflight(p) >= PUB_HOLD ||
           cf_now_ns() - since < s->conf.nats_linger_ms * 1000000;
}

/* How long a sender waits for its lane: long when it holds nothing, briefly while it
 * holds a frame back, not at all when it would send what it holds anyway. */
static int64_t sender_wait(const cf_secure *s, cf_js_pub *p, unsigned held, int64_t since)
{
    if (held == 0) {
        return 100000000;
    }
    int64_t left = since + s->conf.nats_linger_ms * 1000000 - cf_now_ns();
    int64_t wait = cf_js_pub_inflight(p) >= PUB_HOLD ? HOLD_WAIT_NS : 0;
    return left > wait ? left : wait;
}

static cf_js_pub *pub_open(cf_secure *s, const char *stream, const char *subject,
                           cf_js_stored_fn stored)
{
    char err[256];
    cf_js_pub *p = NULL;
    int64_t give_up = cf_now_ns() + (int64_t)PUBLISH_RETRY_S * 1000000000LL;
    while (cf_js_pub_open(&p, s->js, stream, subject, PUB_WINDOW, PUBLISH_RETRY_S * 1000LL, stored,
                          s, &s->net_stop, err, sizeof(err)) == CF_E_TRANSPORT &&
           cf_now_ns() < give_up && !atomic_load(&s->net_stop)) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    if (p == NULL) {
        net_fail(s, "cannot publish frames", err);
    }
    return p;
}

static bool pub_send(cf_secure *s, cf_js_pub *p, const uint8_t *frame, size_t len,
                     const char *msg_id, void *tag)
{
    char err[256];
    cf_err e =
        p != NULL ? cf_js_pub_send(p, frame, len, msg_id, tag, err, sizeof(err)) : CF_E_STATE;
    if (e != CF_OK && p != NULL && !atomic_load(&s->net_stop)) {
        net_fail(s, "cannot publish a frame", err);
    }
    return e == CF_OK;
}

static bool pub_flush(cf_secure *s, cf_js_pub *p)
{
    char err[256];
    cf_err e = p != NULL ? cf_js_pub_flush(p, err, sizeof(err)) : CF_E_STATE;
    if (e != CF_OK && p != NULL && !atomic_load(&s->net_stop)) {
        net_fail(s, "cannot publish a frame", err);
    }
    return e == CF_OK;
}

static bool publish_end(cf_secure *s, cf_js_pub *p, uint8_t sender, uint64_t id, const char *msg_id)
{
    uint8_t frame[CF_FRAME_HDR_LEN];
    cf_frame_hdr h = {.type = CF_FRAME_END, .sender = sender, .id = id};
    cf_frame_seal(&h, frame);
    return pub_send(s, p, frame, sizeof(frame), msg_id, NULL) && pub_flush(s, p);
}

/* A restarted gateway replays its log from the last checkpoint: what party @p i's stream
 * already holds is not published again (message ids would catch it too, but only within
 * the stream's duplicate window). */
static bool already_sent(const cf_secure *s, unsigned i, unsigned w, const item_batch *b)
{
    if (!s->has_floor[i][w]) {
        return false;
    }
    if (b->ckpt) {
        return b->ckpt_index <= s->mk_floor[i][w];
    }
    return b->n > 0 && b->it[b->n - 1].seq < s->ev_floor[i][w];
}

#define FRAME_BATCHES 16
/* under nats-server's default max_payload (1 MiB) with the headers (message ids) */
#define FRAME_BYTES (1000 * 1024)

/* Pops the next item: waits up to @p wait_ns, or only takes what is there (0). */
static void *lane_next(cf_ring *r, int64_t wait_ns, bool *closed)
{
    void *item = NULL;
    cf_err err =
        wait_ns > 0 ? cf_ring_pop_until(r, &item, cf_now_ns() + wait_ns) : cf_ring_pop(r, &item);
    *closed = err == CF_E_STATE;
    return err == CF_OK ? item : NULL;
}

static bool send_shares(cf_secure *s, unsigned i, unsigned wk, cf_js_pub *p, uint8_t *frame,
                        item_batch **held, unsigned nh)
{
    wbuf w = {frame + CF_FRAME_HDR_LEN, NULL};
    uint32_t events = 0;
    const item_batch *f = held[0];
    uint64_t id = f->ckpt ? f->ckpt_index : f->it[0].seq;
    uint64_t end = id; /* one past the last event's log index */
    for (unsigned j = 0; j < nh; j++) {
        encode_shares(&w, held[j], i);
        events += held[j]->ckpt ? 0 : held[j]->n;
        if (!held[j]->ckpt && held[j]->n > 0) {
            end = held[j]->it[held[j]->n - 1].seq + 1;
        }
    }
    const item_batch *last = held[nh - 1];
    bool marker_last = last->ckpt;
    if (marker_last && last->ckpt_index > end) {
        /* The span reaches the marker: a restarted gateway must not send it again, and the
         * log indexes between this stream's last event and it went to other workers. */
        end = last->ckpt_index;
    }
    /* Two markers at one index (a checkpoint, then a rescale without one) need two ids. */
    char kind = !marker_last ? 'e' : !last->barrier_only ? 'm' : last->activate ? 'a' : 'r';
    /* count: the span of log indexes [id, id + count) the frame's events reach, which a
     * restarted gateway reads back as what the stream holds (load_floors). Dead letters
     * take log indexes too, so the span can exceed the events. */
    cf_frame_hdr h = {.type = CF_FRAME_SHARES,
                      .sender = (uint8_t)i,
                      .count = (uint32_t)(end - id),
                      .id = id,
                      .len = (uint32_t)(w.p - frame - CF_FRAME_HDR_LEN),
                      .aux = marker_last ? 1u : 0u};
    cf_frame_seal(&h, frame);
    char msg_id[128];
    snprintf(msg_id, sizeof(msg_id), "%s.s%u.%u.%" PRIu64 ".%u.%c", s->log_hex, i, wk, id, events,
             kind);
    return pub_send(s, p, frame, CF_FRAME_HDR_LEN + h.len, msg_id, NULL);
}

/* Gateway: the lane of party I's worker W -> PREFIX.shares.I (.W); then an end-of-input
 * frame. */
static void *gateway_sender(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    unsigned i = nt->i, wk = nt->w;
    lane *l = &s->parties[i][wk].in;
    char stream[128], subject[128], msg_id[96];
    slot_names(s, "SHARES", "shares", i, wk, stream, subject, sizeof(subject));
    uint8_t *frame = cf_malloc(CF_FRAME_HDR_LEN + FRAME_BYTES);
    cf_js_pub *pub = frame != NULL ? pub_open(s, stream, subject, NULL) : NULL;
    bool ok = pub != NULL, closed = false;
    item_batch *held[FRAME_BATCHES];
    unsigned nh = 0;
    size_t bytes = 0;
    int64_t since = 0;
    while (!closed || nh > 0) {
        item_batch *b =
            closed ? NULL : lane_next(l->full_ring, sender_wait(s, pub, nh, since), &closed);
        bool fits = b != NULL && nh < FRAME_BATCHES && bytes + shares_size(b, i) <= FRAME_BYTES;
        bool hold = b == NULL && !closed && nh > 0 && nh < FRAME_BATCHES && !held[nh - 1]->ckpt &&
                    lingering(s, pub, since);
        if (nh > 0 && !hold && (b == NULL || !fits || held[nh - 1]->ckpt)) {
            if (ok && !atomic_load(&s->net_failed)) {
                ok = send_shares(s, i, wk, pub, frame, held, nh);
            }
            for (unsigned j = 0; j < nh; j++) {
                cf_ring_push_wait(l->free_ring, held[j]);
            }
            nh = 0;
            bytes = 0;
        }
        if (b == NULL) {
            continue;
        }
        /* A worker none of whose keys had events in a batch: its windows close with its
         * next events (each carries the stream's event time) or the end of input, with the
         * same results; not worth a frame. */
        bool empty = !b->ckpt && b->n == 0;
        if (empty || already_sent(s, i, wk, b) || shares_size(b, i) > FRAME_BYTES) {
            if (!empty && !already_sent(s, i, wk, b)) {
                net_fail(s, "shares", "a batch is larger than a frame: lower pipeline.batch_max");
            }
            cf_ring_push_wait(l->free_ring, b);
            continue;
        }
        since = nh == 0 ? cf_now_ns() : since;
        held[nh++] = b;
        bytes += shares_size(b, i);
    }
    if (ok && !atomic_load(&s->net_failed) && !atomic_load(&s->net_stop)) {
        snprintf(msg_id, sizeof(msg_id), "%s.s%u.%u.end%" PRIu64, s->log_hex, i, wk, s->end_index);
        publish_end(s, pub, (uint8_t)i, s->end_index, msg_id);
    }
    cf_js_pub_close(pub);
    cf_free(frame);
    return NULL;
}

/* ---- control and live statistics (core NATS; `confide autoscale`, docs/autoscaling.md) ---- */

#define STATS_PERIOD_NS 1000000000LL

/* Party I's worker W: PREFIX.stats.I.W "processed N busy_ns N workers N" (its totals). */
static void party_stats(cf_secure *s, int64_t *next)
{
    int64_t now = cf_now_ns();
    if (now < *next) {
        return;
    }
    *next = now + STATS_PERIOD_NS;
    const party *pa = &s->parties[s->party_id][0];
    char subject[160], line[160];
    subject_name(s, "stats", (int)s->party_id, subject, sizeof(subject));
    size_t l = strlen(subject);
    snprintf(subject + l, sizeof(subject) - l, ".%u", s->worker_id);
    int n = snprintf(line, sizeof(line), "processed %" PRIu64 " busy_ns %" PRIu64 " workers %u",
                     (uint64_t)atomic_load(&pa->processed), (uint64_t)atomic_load(&pa->busy_ns),
                     s->dnworkers);
    cf_nats_publish(s->js, subject, line, (size_t)n);
}

/* Gateway: rescale requests on PREFIX.control.rescale (payload: the workers per party; the
 * answer "ok N" or the reason it was refused), and PREFIX.stats.gateway once a second:
 * "accepted N workers N". */
static void *gateway_control(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    char subject[160], stats[160], err[256], line[160];
    subject_name(s, "control.rescale", -1, subject, sizeof(subject));
    subject_name(s, "stats.gateway", -1, stats, sizeof(stats));
    cf_js_sub *sub = NULL;
    if (cf_nats_subscribe(&sub, s->js, subject, err, sizeof(err)) != CF_OK) {
        CF_LOG(CF_LOG_WARN, "distributed", "no rescale requests: %s", err);
    }
    int64_t next = 0;
    while (!atomic_load(&s->net_stop) && !atomic_load(&s->ctl_stop)) {
        cf_js_msg m;
        if (sub == NULL || cf_js_next(sub, &m, RECV_WAIT_MS) != CF_OK) {
            if (sub == NULL) {
                struct timespec ts = {0, RECV_WAIT_MS * 1000000L};
                nanosleep(&ts, NULL);
            }
        } else {
            unsigned want = 0;
            char req[16];
            size_t n = m.len < sizeof(req) - 1 ? m.len : sizeof(req) - 1;
            memcpy(req, m.data, n);
            req[n] = '\0';
            bool number = sscanf(req, "%u", &want) == 1;
            cf_err e = number ? cf_secure_rescale(s, want) : CF_E_INVAL;
            int len = e == CF_OK ? snprintf(line, sizeof(line), "ok %u", want)
                                 : snprintf(line, sizeof(line), "refused: %s",
                                            e == CF_E_INVAL ? "workers must be 1..16"
                                                            : "no party workers to rescale");
            if (e == CF_OK) {
                CF_LOG(CF_LOG_INFO, "distributed", "rescale to %u workers per party requested",
                       want);
            }
            cf_nats_respond(s->js, &m, line, (size_t)len);
        }
        int64_t now = cf_now_ns();
        if (now >= next) {
            next = now + STATS_PERIOD_NS;
            int n = snprintf(line, sizeof(line), "accepted %" PRIu64 " workers %u",
                             (uint64_t)atomic_load(&s->gw_events), atomic_load(&s->cur_workers));
            cf_nats_publish(s->js, stats, line, (size_t)n);
        }
    }
    cf_js_unsubscribe(sub);
    return NULL;
}

/* The combiner signs what it releases (results.sig.ndjson) for the log it came from: a
 * GROUPS frame with aux GROUPS_HELLO names the log (payload: its id), one with GROUPS_END
 * the log index the input ended at (id), so its last signature covers every event. */
#define GROUPS_HELLO 1u
#define GROUPS_END 2u

static void publish_groups_meta(cf_secure *s, cf_js_pub *p, uint32_t aux, uint64_t id)
{
    uint8_t frame[CF_FRAME_HDR_LEN + CF_SA_ID_LEN];
    size_t len = aux == GROUPS_HELLO ? CF_SA_ID_LEN : 0;
    memcpy(frame + CF_FRAME_HDR_LEN, s->ctx.log_id, CF_SA_ID_LEN);
    cf_frame_hdr h = {.type = CF_FRAME_GROUPS, .id = id, .len = (uint32_t)len, .aux = aux};
    cf_frame_seal(&h, frame);
    char msg_id[96];
    snprintf(msg_id, sizeof(msg_id), "%s.g%u.%" PRIu64, s->log_hex, aux, id);
    pub_send(s, p, frame, CF_FRAME_HDR_LEN + len, msg_id, NULL);
}

/* Names wait up to this long for more to share their frame: the combiner needs a group's
 * name only when it releases one of its windows, long after its first event. */
#define GROUPS_LINGER_NS 20000000

/* Gateway: group names -> PREFIX.groups (only the combiner may read it). */
static void *groups_sender(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    char stream[128], subject[128];
    stream_name(s, "GROUPS", -1, stream, sizeof(stream));
    subject_name(s, "groups", -1, subject, sizeof(subject));
    /* an entry: pseudonym, currency, length, text (never longer than a group's text) */
    const size_t entry_max = CF_SA_PSEUDO_LEN + 6 + CF_WINDOW_GROUP_TEXT_MAX;
    uint8_t *frame = cf_malloc(CF_FRAME_HDR_LEN + FRAME_BYTES);
    cf_js_pub *pub = frame != NULL ? pub_open(s, stream, subject, NULL) : NULL;
    if (frame == NULL) {
        net_fail(s, "groups", "out of memory");
    }
    publish_groups_meta(s, pub, GROUPS_HELLO, 0);
    bool closed = false;
    wbuf w = {frame != NULL ? frame + CF_FRAME_HDR_LEN : NULL, NULL};
    uint32_t n = 0;
    int64_t since = 0; /* when the frame's first name came */
    while (!closed || n > 0) {
        void *item = NULL;
        int64_t linger = since + GROUPS_LINGER_NS - cf_now_ns();
        int64_t wait = n == 0 ? 100000000 : (linger > 0 ? linger : 0);
        if (n > 0 && wait == 0 && cf_js_pub_inflight(pub) >= PUB_HOLD) {
            wait = HOLD_WAIT_NS;
        }
        cf_err err = closed ? CF_E_STATE
                            : (wait > 0 ? cf_ring_pop_until(s->dict, &item, cf_now_ns() + wait)
                                        : cf_ring_pop(s->dict, &item));
        closed = err == CF_E_STATE;
        if (item != NULL) {
            dict_entry *d = item;
            if (w.p != NULL) {
                size_t tl = strlen(d->text);
                tl = tl > CF_WINDOW_GROUP_TEXT_MAX ? CF_WINDOW_GROUP_TEXT_MAX : tl;
                wbytes(&w, d->key, CF_SA_PSEUDO_LEN);
                wbytes(&w, d->currency, 4);
                w8(&w, (uint8_t)(tl & 0xff));
                w8(&w, (uint8_t)(tl >> 8));
                wbytes(&w, d->text, tl);
                since = n++ == 0 ? cf_now_ns() : since;
            }
            cf_free(d);
        }
        size_t used = w.p != NULL ? (size_t)(w.p - frame - CF_FRAME_HDR_LEN) : 0;
        bool full = n >= GROUPS_PER_FRAME || used + entry_max > FRAME_BYTES;
        bool hold = !closed &&
                    (cf_now_ns() - since < GROUPS_LINGER_NS || cf_js_pub_inflight(pub) >= PUB_HOLD);
        if (n == 0 || (item != NULL && !full) || (item == NULL && !full && hold)) {
            continue;
        }
        if (!atomic_load(&s->net_failed)) {
            cf_frame_hdr h = {.type = CF_FRAME_GROUPS, .count = n, .id = 0, .len = (uint32_t)used};
            cf_frame_seal(&h, frame);
            /* Names are idempotent: the id is the content's, so a copy after a restart is
             * dropped and new names never are. */
            uint8_t hash[16];
            char msg_id[128];
            int k = snprintf(msg_id, sizeof(msg_id), "%s.n", s->log_hex);
            crypto_generichash(hash, sizeof(hash), frame + CF_FRAME_HDR_LEN, used, NULL, 0);
            sodium_bin2hex(msg_id + k, sizeof(msg_id) - (size_t)k, hash, sizeof(hash));
            pub_send(s, pub, frame, CF_FRAME_HDR_LEN + used, msg_id, NULL);
        }
        w.p = frame + CF_FRAME_HDR_LEN;
        n = 0;
    }
    if (!atomic_load(&s->net_failed) && !atomic_load(&s->net_stop)) {
        publish_groups_meta(s, pub, GROUPS_END, s->end_index);
        pub_flush(s, pub);
    }
    cf_js_pub_close(pub);
    cf_free(frame);
    return NULL;
}

/* ---- state files ---- */

static void state_path(const cf_secure *s, char *out, size_t n)
{
    if (s->role == CF_ROLE_PARTY && s->worker_id > 0) {
        snprintf(out, n, "%s/party-%u-%u.state", s->conf.output_dir, s->party_id, s->worker_id);
    } else if (s->role == CF_ROLE_PARTY) {
        snprintf(out, n, "%s/party-%u.state", s->conf.output_dir, s->party_id);
    } else {
        snprintf(out, n, "%s/combiner.state", s->conf.output_dir);
    }
}

/* Replaces the state file atomically and durably (tmp, fsync, rename, fsync dir); 0600:
 * a party's snapshot holds its shares. */
static bool write_state(const cf_secure *s, const uint8_t *data, size_t len)
{
    char path[CF_CONF_STR_MAX + 64], tmp[CF_CONF_STR_MAX + 80];
    state_path(s, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return false;
    }
    bool ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    int dfd = open(s->conf.output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return true;
}

static cf_err read_state(cf_secure *s, resume_state *r, char *errstr, size_t errstr_size)
{
    char path[CF_CONF_STR_MAX + 64];
    state_path(s, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? CF_OK
                               : cf_err_errno(errno, errstr, errstr_size, "cannot open %s", path);
    }
    struct stat st;
    cf_err err = CF_OK;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > (off_t)1 << 34) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "%s: unreadable", path);
    } else if ((r->blob = cf_malloc((size_t)st.st_size)) == NULL) {
        err = CF_E_NOMEM;
    } else if (read(fd, r->blob, (size_t)st.st_size) != (ssize_t)st.st_size) {
        err = cf_err_errno(errno, errstr, errstr_size, "cannot read %s", path);
    } else {
        err = cf__ckpt_parse(r, (size_t)st.st_size, errstr, errstr_size);
    }
    close(fd);
    if (err != CF_OK) {
        cf_free(r->blob);
        r->blob = NULL;
    }
    return err;
}

/* ---- receiving ---- */

#define STALL_CHECK_MS 3000

/* One stream read in sequence order from a position: every stream has one subject and
 * drops nothing, so its sequences are consecutive. A redelivery (an ack lost with a node)
 * is below the position and dropped; a gap or a consumer lost with its node means
 * resubscribing at the position. */
typedef struct receiver {
    cf_secure *s;
    char stream[128], subject[128];
    cf_js_sub *sub;
    uint64_t next_seq;
    int64_t idle_ns;
} receiver;

/* Frames a receiver holds unacknowledged. nats-server drops deliveries to a client with more
 * than max_pending (64 MiB by default) on its socket ("Slow Consumer Detected"), and a
 * dropped frame comes again only after AckWait (30 s): a receiver catching up a backlog of
 * frames of up to FRAME_BYTES must not ask for more than fits (48 MiB here). */
static int frames_pending(const cf_secure *s)
{
    /* the combiner reads every party worker's partials and the group names on one
     * connection: the bound is the connection's */
    int64_t streams =
        s->role == CF_ROLE_COMBINER ? (int64_t)s->k * (s->dworkers ? s->dworkers : 1) + 1 : 1;
    int64_t most = 48 * 1024 * 1024 / FRAME_BYTES / streams;
    most = most < 2 ? 2 : most;
    return (int)(s->conf.nats_max_ack_pending < most ? s->conf.nats_max_ack_pending : most);
}

static cf_err recv_open(receiver *r, const char *stream, const char *subject, uint64_t start_seq,
                        char *err, size_t errsz)
{
    snprintf(r->stream, sizeof(r->stream), "%s", stream);
    snprintf(r->subject, sizeof(r->subject), "%s", subject);
    r->next_seq = start_seq > 0 ? start_seq : 1;
    r->idle_ns = 0;
    /* A cluster electing a leader (a node just stopped or back) does not answer for a
     * while: ask again for a minute, as a resubscription does; a refusal is final. */
    cf_err e = CF_E_TRANSPORT;
    for (int attempt = 0; e == CF_E_TRANSPORT && attempt <= 240 && !atomic_load(&r->s->net_stop);
         attempt++) {
        if (attempt > 0) {
            struct timespec ts = {0, 250000000};
            nanosleep(&ts, NULL);
        }
        e = cf_js_subscribe(&r->sub, r->s->js, r->stream, r->subject, r->next_seq,
                            frames_pending(r->s), err, errsz);
        if (e == CF_E_TRANSPORT && attempt == 0) {
            CF_LOG(CF_LOG_WARN, "distributed", "%s: %s; asking again", r->stream, err);
        }
    }
    if (e == CF_OK) { /* operators (and confide bench distributed) see the role is ready */
        CF_LOG(CF_LOG_INFO, "distributed", "reading %s from sequence %" PRIu64, r->stream,
               r->next_seq);
    }
    return e;
}

static void recv_resubscribe(receiver *r, const char *why)
{
    char err[256];
    CF_LOG(CF_LOG_WARN, "distributed", "%s: %s; consuming again from sequence %" PRIu64, r->stream,
           why, r->next_seq);
    cf_js_unsubscribe(r->sub);
    r->sub = NULL;
    for (int attempt = 0; !atomic_load(&r->s->net_stop); attempt++) {
        if (cf_js_subscribe(&r->sub, r->s->js, r->stream, r->subject, r->next_seq,
                            frames_pending(r->s), err, sizeof(err)) == CF_OK) {
            return;
        }
        if (attempt == 240) { /* a minute */
            net_fail(r->s, r->stream, err);
            return;
        }
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
    }
}

/* The next message in sequence: CF_OK, CF_E_FULL (nothing yet), CF_E_TRANSPORT (gave up). */
static cf_err recv_next(receiver *r, cf_js_msg *m)
{
    if (r->sub == NULL) {
        return CF_E_TRANSPORT;
    }
    cf_err e = cf_js_next(r->sub, m, RECV_WAIT_MS);
    if (e == CF_E_FULL) {
        r->idle_ns += (int64_t)RECV_WAIT_MS * 1000000;
        if (r->idle_ns >= (int64_t)STALL_CHECK_MS * 1000000) {
            r->idle_ns = 0;
            if (!cf_js_alive(r->sub)) {
                recv_resubscribe(r, "its consumer is gone (a server node lost?)");
            }
        }
        return CF_E_FULL;
    }
    if (e != CF_OK) {
        recv_resubscribe(r, "connection lost");
        return CF_E_FULL;
    }
    r->idle_ns = 0;
    if (m->stream_seq < r->next_seq) {
        cf_js_ack(m); /* a redelivery of what was already taken */
        return CF_E_FULL;
    }
    if (m->stream_seq > r->next_seq) {
        cf_js_release(m);
        recv_resubscribe(r, "a gap in the sequence");
        return CF_E_FULL;
    }
    r->next_seq++;
    return CF_OK;
}

static void recv_close(receiver *r)
{
    cf_js_unsubscribe(r->sub);
    r->sub = NULL;
}

/* ---- party ---- */

/* PREFIX.shares.I -> the party's input lane, from the sequence after its checkpoint. */
static void *party_receiver(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    party *pa = &s->parties[s->party_id][0];
    char err[256], stream[128], subject[128];
    receiver rc = {.s = s};
    slot_names(s, "SHARES", "shares", s->party_id, s->worker_id, stream, subject, sizeof(stream));
    if (recv_open(&rc, stream, subject, s->start_seq[0], err, sizeof(err)) != CF_OK) {
        net_fail(s, "party input", err);
        cf_ring_close(pa->in.full_ring);
        return NULL;
    }
    int64_t stats_next = 0;
    while (!atomic_load(&s->net_stop) && !atomic_load(&s->retired)) {
        party_stats(s, &stats_next);
        cf_js_msg m;
        cf_err e = recv_next(&rc, &m);
        if (e == CF_E_FULL) {
            continue;
        }
        if (e != CF_OK) {
            break;
        }
        cf_frame_hdr h;
        if (cf_frame_open(m.data, m.len, &h, err, sizeof(err)) != CF_OK ||
            (h.type != CF_FRAME_SHARES && h.type != CF_FRAME_END) || h.sender != s->party_id) {
            char what[200];
            snprintf(what, sizeof(what), "frame at %s sequence %" PRIu64 " refused", rc.stream,
                     m.stream_seq);
            net_fail(s, what, h.sender != s->party_id ? "another party's frame" : err);
            cf_js_release(&m);
            break;
        }
        if (h.type == CF_FRAME_END) {
            void *item = NULL;
            cf_ring_pop_wait(pa->in.free_ring, &item);
            item_batch *b = item;
            b->src_seq = m.stream_seq;
            b->n = 0;
            b->ckpt = false;
            cf_ring_push_wait(pa->in.full_ring, b); /* empty: names the final flush's input */
            cf_js_ack(&m);
            break;
        }
        rbuf r = {m.data + CF_FRAME_HDR_LEN, m.data + m.len, false};
        bool good = true;
        while (good && r.p < r.end) {
            void *item = NULL;
            cf_ring_pop_wait(pa->in.free_ring, &item);
            item_batch *b = item;
            b->src_seq = m.stream_seq;
            good = decode_shares(&r, s->party_id, b);
            cf_ring_push_wait(good ? pa->in.full_ring : pa->in.free_ring, b);
        }
        if (!good) {
            net_fail(s, "shares frame", "malformed payload (do all roles use one config?)");
            cf_js_release(&m);
            break;
        }
        cf_js_ack(&m);
    }
    if (atomic_load(&s->net_failed)) {
        atomic_store(&s->net_stop, true); /* no flush of windows that missed input */
    }
    cf_ring_close(pa->in.full_ring);
    recv_close(&rc);
    return NULL;
}

/* A party's state file ends with the stream sequence of the frame it reflects and the
 * party's workers at that point. */
#define PARTY_TAIL 12
static void party_tail(uint8_t tail[PARTY_TAIL], uint64_t seq, uint32_t nworkers)
{
    for (int j = 0; j < 8; j++) {
        tail[j] = (uint8_t)(seq >> (8 * j));
    }
    for (int j = 0; j < 4; j++) {
        tail[8 + j] = (uint8_t)(nworkers >> (8 * j));
    }
}

/* A state file to write once the frame that carries its marker is in the stream. */
typedef struct party_state {
    uint8_t *blob;
    size_t len;
    uint64_t index;
} party_state;

static void party_state_write(cf_secure *s, party_state *ps, bool stored)
{
    if (ps == NULL) {
        return;
    }
    if (stored && (ps->blob == NULL || !write_state(s, ps->blob, ps->len))) {
        CF_LOG(CF_LOG_WARN, "party", "checkpoint at %llu not written: a restart replays more",
               (unsigned long long)ps->index);
    }
    if (ps->blob != NULL) {
        sodium_memzero(ps->blob, ps->len); /* the window snapshot: shares */
    }
    cf_free(ps->blob);
    cf_free(ps);
}

/* The ordered publisher's callback: the frame with this state's marker is stored. */
static void party_stored(void *ctx, void *tag, bool stored)
{
    party_state_write(ctx, tag, stored);
}

/* The state file of batch @p b's checkpoint marker (NULL when it has none), into @p prev's
 * place when there is one (a later checkpoint supersedes it). */
static party_state *party_state_take(cf_secure *s, const msg_batch *b, party_state *prev)
{
    party_state *ps = prev;
    for (uint32_t i = 0; i < b->n; i++) {
        party_msg *m = &b->m[i];
        if (m->type != MSG_CKPT || m->snap == NULL || m->workers != 0) {
            /* At a rescale marker the state changes hands after the snapshot: a restart
             * replays from the checkpoint before it and hands over again. */
            continue;
        }
        uint8_t tail[PARTY_TAIL];
        party_tail(tail, b->src_seq, m->reason);
        const uint8_t *snaps[1] = {m->snap};
        size_t lens[1] = {m->snap_len}, len = 0;
        uint8_t *blob = cf__ckpt_encode(s, m->first, 0, 0, 0, 0, 0, 0, snaps, lens, 1, tail,
                                        sizeof(tail), &len);
        sodium_memzero(m->snap, m->snap_len);
        cf_free(m->snap);
        m->snap = NULL;
        if (ps == NULL && (ps = cf_calloc(1, sizeof(*ps))) == NULL) {
            if (blob != NULL) {
                sodium_memzero(blob, len);
            }
            cf_free(blob);
            CF_LOG(CF_LOG_WARN, "party", "checkpoint at %llu not written: a restart replays more",
                   (unsigned long long)m->first);
            continue;
        }
        if (ps->blob != NULL) {
            sodium_memzero(ps->blob, ps->len);
            cf_free(ps->blob);
        }
        ps->blob = blob;
        ps->len = len;
        ps->index = m->first;
    }
    return ps;
}

/* A batch published before a crash whose state file may not be: write it now. */
static void party_commit(cf_secure *s, const msg_batch *b)
{
    party_state_write(s, party_state_take(s, b, NULL), true);
}

static void drop_snaps(msg_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->m[i].snap != NULL) {
            sodium_memzero(b->m[i].snap, b->m[i].snap_len);
            cf_free(b->m[i].snap);
            b->m[i].snap = NULL;
        }
    }
}

static bool has_marker(const msg_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->m[i].type == MSG_CKPT) {
            return true;
        }
    }
    return false;
}

/* One frame of the held batches; their checkpoints are committed once it is in the stream
 * (party_stored). */
static bool send_partials(cf_secure *s, cf_js_pub *p, uint8_t *frame, msg_batch **held, unsigned nh)
{
    wbuf w = {frame + CF_FRAME_HDR_LEN, NULL};
    uint32_t msgs = 0;
    for (unsigned j = 0; j < nh; j++) {
        encode_msgs(&w, held[j]);
        msgs += held[j]->n;
    }
    const msg_batch *f = held[0], *l = held[nh - 1];
    /* The header names the last batch: a restarted party skips up to it (load_floors). */
    cf_frame_hdr h = {.type = CF_FRAME_PARTIALS,
                      .sender = (uint8_t)s->party_id,
                      .count = msgs,
                      .id = l->src_seq,
                      .len = (uint32_t)(w.p - frame - CF_FRAME_HDR_LEN),
                      .aux = l->part};
    cf_frame_seal(&h, frame);
    char msg_id[128];
    snprintf(msg_id, sizeof(msg_id), "p%u.%u.%" PRIu64 ".%u-%" PRIu64 ".%u", s->party_id,
             s->worker_id, f->src_seq, f->part, l->src_seq, l->part);
    party_state *ps = NULL;
    for (unsigned j = 0; j < nh; j++) {
        ps = party_state_take(s, held[j], ps);
    }
    if (!pub_send(s, p, frame, CF_FRAME_HDR_LEN + h.len, msg_id, ps)) {
        party_state_write(s, ps, false);
        return false;
    }
    return true;
}

/* The party's output lane -> PREFIX.partials.I; then an end-of-input frame. */
static void *party_sender(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    party *pa = &s->parties[s->party_id][0];
    char stream[128], subject[128], msg_id[80];
    slot_names(s, "PARTIALS", "partials", s->party_id, s->worker_id, stream, subject,
               sizeof(stream));
    uint8_t *frame = cf_malloc(CF_FRAME_HDR_LEN + FRAME_BYTES);
    cf_js_pub *pub = frame != NULL ? pub_open(s, stream, subject, party_stored) : NULL;
    bool ok = pub != NULL && 16 + (size_t)s->conf.pipeline_batch_max * MSG_ITEM <= FRAME_BYTES,
         closed = false;
    if (frame != NULL && !ok) {
        net_fail(s, "partials", "pipeline.batch_max is too large for a frame (at most 8192)");
    }
    msg_batch *held[FRAME_BATCHES];
    unsigned nh = 0;
    size_t bytes = 0;
    int64_t since = 0;
    while (!closed || nh > 0) {
        msg_batch *b =
            closed ? NULL : lane_next(pa->out.full_ring, sender_wait(s, pub, nh, since), &closed);
        bool fits = b != NULL && nh < FRAME_BATCHES && bytes + msgs_size(b) <= FRAME_BYTES;
        bool hold = b == NULL && !closed && nh > 0 && nh < FRAME_BATCHES &&
                    !has_marker(held[nh - 1]) && lingering(s, pub, since);
        if (nh > 0 && !hold && (b == NULL || !fits || has_marker(held[nh - 1]))) {
            if (ok && !atomic_load(&s->net_stop)) {
                ok = send_partials(s, pub, frame, held, nh);
            }
            for (unsigned j = 0; j < nh; j++) {
                drop_snaps(held[j]);
                cf_ring_push_wait(pa->out.free_ring, held[j]);
            }
            nh = 0;
            bytes = 0;
        }
        if (b == NULL) {
            continue;
        }
        bool sent = s->has_out_floor && (b->src_seq < s->out_seq ||
                                         (b->src_seq == s->out_seq && b->part <= s->out_part));
        if (sent || !ok || atomic_load(&s->net_stop)) {
            if (sent && ok && !atomic_load(&s->net_stop)) {
                party_commit(s, b); /* published before a crash; its state file may not be */
            }
            drop_snaps(b);
            cf_ring_push_wait(pa->out.free_ring, b);
            continue;
        }
        since = nh == 0 ? cf_now_ns() : since;
        held[nh++] = b;
        bytes += msgs_size(b);
    }
    if (ok && !atomic_load(&s->net_stop) && !atomic_load(&s->net_failed) &&
        !atomic_load(&s->retired)) { /* a retired worker's slot may be activated again */
        snprintf(msg_id, sizeof(msg_id), "p%u.%u.end%" PRIu64, s->party_id, s->worker_id,
                 pa->cur_src_seq);
        publish_end(s, pub, (uint8_t)s->party_id, pa->cur_src_seq, msg_id);
    } else if (ok && !atomic_load(&s->net_stop) && !atomic_load(&s->net_failed)) {
        pub_flush(s, pub); /* the frames in flight and their state files */
    }
    cf_js_pub_close(pub);
    cf_free(frame);
    return NULL;
}

/* ---- rescaling a distributed party (docs/distributed.md, "Rescaling worker processes") ----
 * At a rescale marker every worker of the party publishes its window state on
 * PREFIX.handover.I.<marker index> (party I's own stream, in chunks under a frame each);
 * every worker that stays, and every worker the marker activates, reads all of them there,
 * merges them and keeps its own key groups. A worker that restarts replays the marker and
 * publishes the same chunks again: message ids drop them within the duplicate window, and
 * a reader takes the first copy of each chunk after it. */

#define HANDOVER_CHUNK (512 * 1024)
#define HANDOVER_HDR 20 /* worker u32 | chunk u32 | chunks u32 | total length u64 */
#define HANDOVER_WAIT_S 600

static void put32(uint8_t *p, uint32_t v)
{
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(v >> (8 * j));
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool handover_publish(cf_secure *s, uint64_t index, const uint8_t *snap, size_t len)
{
    char stream[128], subject[128], msg_id[96];
    handover_names(s, index, stream, subject, sizeof(stream));
    uint32_t chunks = len == 0 ? 1 : (uint32_t)((len + HANDOVER_CHUNK - 1) / HANDOVER_CHUNK);
    uint8_t *frame = cf_malloc(CF_FRAME_HDR_LEN + HANDOVER_HDR + HANDOVER_CHUNK);
    bool ok = frame != NULL;
    for (uint32_t c = 0; ok && c < chunks; c++) {
        size_t off = (size_t)c * HANDOVER_CHUNK,
               n = len - off < HANDOVER_CHUNK ? len - off : HANDOVER_CHUNK;
        uint8_t *p = frame + CF_FRAME_HDR_LEN;
        put32(p, s->worker_id);
        put32(p + 4, c);
        put32(p + 8, chunks);
        put32(p + 12, (uint32_t)len);
        put32(p + 16, (uint32_t)((uint64_t)len >> 32));
        memcpy(p + HANDOVER_HDR, snap + off, n);
        cf_frame_hdr h = {.type = CF_FRAME_STATE,
                          .sender = (uint8_t)s->party_id,
                          .count = c,
                          .id = index,
                          .len = (uint32_t)(HANDOVER_HDR + n),
                          .aux = s->worker_id};
        cf_frame_seal(&h, frame);
        snprintf(msg_id, sizeof(msg_id), "h%u.%u.%" PRIu64 ".%u", s->party_id, s->worker_id, index,
                 c);
        ok = publish(s, subject, frame, CF_FRAME_HDR_LEN + h.len, msg_id);
        sodium_memzero(p + HANDOVER_HDR, n);
    }
    cf_free(frame);
    return ok;
}

typedef struct handover_buf {
    uint8_t *data;
    size_t len;
    uint32_t chunks, got;
    uint8_t *have; /* by chunk */
} handover_buf;

/* One chunk into its worker's buffer; false when the frame is not a chunk of this handover. */
static bool handover_take(cf_secure *s, uint64_t index, unsigned from, handover_buf *b,
                          const cf_js_msg *m, unsigned *complete)
{
    char err[128];
    cf_frame_hdr h;
    if (cf_frame_open(m->data, m->len, &h, err, sizeof(err)) != CF_OK || h.type != CF_FRAME_STATE ||
        h.sender != s->party_id || h.id != index || h.len < HANDOVER_HDR) {
        return false;
    }
    const uint8_t *p = m->data + CF_FRAME_HDR_LEN;
    uint32_t w = get32(p), c = get32(p + 4), chunks = get32(p + 8);
    uint64_t total = (uint64_t)get32(p + 12) | (uint64_t)get32(p + 16) << 32;
    size_t n = h.len - HANDOVER_HDR;
    if (w >= from || chunks == 0 || c >= chunks || total > (uint64_t)chunks * HANDOVER_CHUNK ||
        (size_t)c * HANDOVER_CHUNK + n > total) {
        return false;
    }
    handover_buf *hb = &b[w];
    if (hb->have == NULL) {
        hb->data = cf_malloc(total > 0 ? total : 1);
        hb->have = cf_calloc(chunks, 1);
        if (hb->data == NULL || hb->have == NULL) {
            return false;
        }
        hb->len = total;
        hb->chunks = chunks;
    }
    if (hb->chunks != chunks || hb->len != total) {
        return false;
    }
    if (!hb->have[c]) {
        memcpy(hb->data + (size_t)c * HANDOVER_CHUNK, p + HANDOVER_HDR, n);
        hb->have[c] = 1;
        *complete += ++hb->got == chunks;
    }
    return true;
}

/* Waits until the states of all @p from workers at marker @p index are in @p b. */
static bool handover_gather(cf_secure *s, uint64_t index, unsigned from, handover_buf *b)
{
    char stream[128], subject[128], err[256];
    handover_names(s, index, stream, subject, sizeof(stream));
    cf_js_sub *sub = NULL;
    if (cf_js_subscribe(&sub, s->js, stream, subject, 1, 256, err, sizeof(err)) != CF_OK) {
        net_fail(s, "rescale handover", err);
        return false;
    }
    unsigned complete = 0;
    int64_t give_up = cf_now_ns() + (int64_t)HANDOVER_WAIT_S * 1000000000LL;
    bool ok = true;
    while (ok && complete < from) {
        cf_js_msg m;
        cf_err e = cf_js_next(sub, &m, RECV_WAIT_MS);
        if (atomic_load(&s->net_stop) || e == CF_E_TRANSPORT || cf_now_ns() > give_up) {
            net_fail(s, "rescale handover",
                     e == CF_E_TRANSPORT ? "connection lost"
                                         : "the other workers' states did not arrive");
            ok = false;
        } else if (e == CF_OK) {
            ok = handover_take(s, index, from, b, &m, &complete);
            if (!ok) {
                net_fail(s, "rescale handover", "a state chunk was refused (one config for all?)");
            }
            cf_js_ack(&m);
        }
    }
    cf_js_unsubscribe(sub);
    return ok;
}

typedef struct slot_owner {
    unsigned w, n;
} slot_owner;

static bool owns_slot(void *opaque, const uint8_t *key, size_t len)
{
    const slot_owner *o = opaque;
    return len == CF_SA_PSEUDO_LEN && key_owner(key, o->n) == o->w;
}

/* Takes this worker's key groups among @p to workers from the @p from states in @p b. */
static bool handover_restore(party *pa, handover_buf *b, unsigned from, unsigned to)
{
    char err[256];
    const uint8_t *bufs[CF_WORKERS_MAX];
    size_t lens[CF_WORKERS_MAX];
    for (unsigned w = 0; w < from; w++) {
        bufs[w] = b[w].data;
        lens[w] = b[w].len;
    }
    uint8_t *merged = NULL;
    size_t merged_len = 0;
    slot_owner o = {pa->s->worker_id, to};
    cf_window_destroy(pa->win);
    pa->win = NULL;
    cf_err e = cf_window_snapshot_merge(bufs, lens, from, &merged, &merged_len, err, sizeof(err));
    if (e == CF_OK && (e = cf__party_open_window(pa, err, sizeof(err))) == CF_OK) {
        e = cf_window_restore_filtered(pa->win, merged, merged_len, owns_slot, &o, err,
                                       sizeof(err));
    }
    if (merged != NULL) {
        sodium_memzero(merged, merged_len);
        cf_free(merged);
    }
    if (e != CF_OK) {
        net_fail(pa->s, "rescale handover", err);
    }
    return e == CF_OK;
}

bool cf__net_party_rescale(party *pa, unsigned from, unsigned to, uint64_t index, bool activate)
{
    cf_secure *s = pa->s;
    handover_buf b[CF_WORKERS_MAX];
    memset(b, 0, sizeof(b));
    bool ok = true;
    if (!activate) {
        uint8_t *snap = NULL;
        size_t len = 0;
        ok = cf_window_snapshot(pa->win, &snap, &len) == CF_OK &&
             handover_publish(s, index, snap, len);
        if (snap != NULL) {
            sodium_memzero(snap, len);
            cf_free(snap);
        }
    }
    bool stays = s->worker_id < to;
    /* a retiring worker only gives: the others take its key groups */
    ok = ok && (!stays || handover_gather(s, index, from, b));
    ok = ok && (!stays || handover_restore(pa, b, from, to));
    for (unsigned w = 0; w < from; w++) {
        if (b[w].data != NULL) {
            sodium_memzero(b[w].data, b[w].len);
        }
        cf_free(b[w].data);
        cf_free(b[w].have);
    }
    if (!ok) {
        atomic_store(&s->net_stop, true); /* a restart replays the marker */
        return false;
    }
    CF_LOG(CF_LOG_INFO, "party", "party %u worker %u: %s at index %llu (%u -> %u workers)",
           s->party_id, s->worker_id, stays ? (activate ? "activated" : "rescaled") : "retired",
           (unsigned long long)index, from, to);
    s->dnworkers = to;
    if (!stays) {
        cf_window_destroy(pa->win);
        pa->win = NULL;
        s->retire_seq = pa->cur_src_seq;
        s->retire_index = index;
        atomic_store(&s->retired, true);
    }
    return stays;
}

/* A retired worker's state file: no windows, and its stream's position after the marker, so
 * that a process started for the slot later waits there for the marker that activates it. */
static void write_retired_state(cf_secure *s)
{
    char err[256];
    cf_window *w = NULL;
    cf_window_conf wc = s->wconf;
    uint8_t *snap = NULL, *blob = NULL;
    size_t snap_len = 0, len = 0;
    uint8_t tail[PARTY_TAIL];
    party_tail(tail, s->retire_seq, s->dnworkers);
    if (cf_window_create(&w, &wc, err, sizeof(err)) == CF_OK &&
        cf_window_snapshot(w, &snap, &snap_len) == CF_OK) {
        const uint8_t *snaps[1] = {snap};
        size_t lens[1] = {snap_len};
        blob = cf__ckpt_encode(s, s->retire_index, 0, 0, 0, 0, 0, 0, snaps, lens, 1, tail,
                               sizeof(tail), &len);
    }
    if (blob == NULL || !write_state(s, blob, len)) {
        CF_LOG(CF_LOG_WARN, "party",
               "retired worker's state not written: a process started for "
               "its slot replays its stream from the last checkpoint");
    }
    cf_free(blob);
    cf_free(snap);
    cf_window_destroy(w);
}

/* ---- combiner ---- */

/* PREFIX.partials.I -> party I's output lane at the combiner. */
static void *combiner_receiver(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    unsigned i = nt->i, wk = nt->w;
    lane *l = &s->parties[i][wk].out;
    char err[256], stream[128], subject[128];
    receiver rc = {.s = s};
    slot_names(s, "PARTIALS", "partials", i, wk, stream, subject, sizeof(stream));
    if (recv_open(&rc, stream, subject, s->start_seq[slot_index(i, wk)], err, sizeof(err)) !=
        CF_OK) {
        net_fail(s, "combiner input", err);
        atomic_store(&s->net_stop, true);
        cf_ring_close(l->full_ring);
        return NULL;
    }
    /* A retired worker's stream ends without an end frame: its receiver stops with the
     * combiner. */
    while (!atomic_load(&s->net_stop) && !atomic_load(&s->comb_done)) {
        cf_js_msg m;
        cf_err e = recv_next(&rc, &m);
        if (e == CF_E_FULL) {
            continue;
        }
        cf_frame_hdr h;
        if (e != CF_OK || cf_frame_open(m.data, m.len, &h, err, sizeof(err)) != CF_OK ||
            (h.type != CF_FRAME_PARTIALS && h.type != CF_FRAME_END) || h.sender != i) {
            net_fail(s, "combiner input", e != CF_OK ? "connection lost" : "frame refused");
            if (e == CF_OK) {
                cf_js_release(&m);
            }
            atomic_store(&s->net_stop, true);
            break;
        }
        if (h.type == CF_FRAME_END) {
            cf_js_ack(&m);
            break;
        }
        rbuf r = {m.data + CF_FRAME_HDR_LEN, m.data + m.len, false};
        bool good = true;
        while (good && r.p < r.end) {
            void *item = NULL;
            cf_ring_pop_wait(l->free_ring, &item);
            msg_batch *b = item;
            b->stream_seq = m.stream_seq;
            good = decode_msgs(&r, b);
            cf_ring_push_wait(good ? l->full_ring : l->free_ring, b);
        }
        if (!good) {
            net_fail(s, "partials frame", "malformed payload (do all roles use one config?)");
            cf_js_release(&m);
            atomic_store(&s->net_stop, true);
            break;
        }
        cf_js_ack(&m);
    }
    cf_ring_close(l->full_ring);
    recv_close(&rc);
    return NULL;
}

/* PREFIX.groups -> the combiner's dictionary ring, from the beginning every time (names
 * are small and a restarted combiner needs all of them). */
static void *groups_receiver(void *arg)
{
    struct net_thread *nt = arg;
    cf_secure *s = nt->s;
    char err[256];
    receiver rc = {.s = s};
    char stream[128], subject[128];
    stream_name(s, "GROUPS", -1, stream, sizeof(stream));
    subject_name(s, "groups", -1, subject, sizeof(subject));
    if (recv_open(&rc, stream, subject, 1, err, sizeof(err)) != CF_OK) {
        net_fail(s, "group names", err);
        return NULL;
    }
    while (!atomic_load(&s->groups_stop) && !atomic_load(&s->net_stop)) {
        cf_js_msg m;
        cf_err e = recv_next(&rc, &m);
        if (e == CF_E_FULL) {
            continue;
        }
        cf_frame_hdr h;
        if (e != CF_OK || cf_frame_open(m.data, m.len, &h, err, sizeof(err)) != CF_OK ||
            h.type != CF_FRAME_GROUPS) {
            net_fail(s, "group names", e != CF_OK ? "connection lost" : "frame refused");
            if (e == CF_OK) {
                cf_js_release(&m);
            }
            break;
        }
        if (h.aux == GROUPS_HELLO && h.len == CF_SA_ID_LEN) {
            memcpy(s->comb_log_id, m.data + CF_FRAME_HDR_LEN, CF_SA_ID_LEN);
            atomic_store(&s->comb_have_log, true);
        } else if (h.aux == GROUPS_END) {
            atomic_store(&s->comb_end_index, h.id);
            atomic_store(&s->comb_have_end, true);
        }
        rbuf r = {m.data + CF_FRAME_HDR_LEN, m.data + m.len, false};
        for (uint32_t i = 0; i < h.count && !r.bad; i++) {
            uint8_t key[CF_SA_PSEUDO_LEN];
            char cur[4];
            rbytes(&r, key, sizeof(key));
            rbytes(&r, cur, sizeof(cur));
            size_t tl = r8(&r);
            tl |= (size_t)r8(&r) << 8;
            if (!need(&r, tl)) {
                break;
            }
            dict_entry *d = cf_malloc(sizeof(*d) + tl + 1);
            if (d == NULL) {
                r.bad = true;
                break;
            }
            memcpy(d->key, key, sizeof(key));
            memcpy(d->currency, cur, sizeof(cur));
            d->currency[3] = '\0';
            memcpy(d->text, r.p, tl);
            d->text[tl] = '\0';
            r.p += tl;
            cf_ring_push_wait(s->dict, d);
        }
        if (r.bad) {
            net_fail(s, "group names", "malformed frame");
        }
        cf_js_ack(&m);
    }
    recv_close(&rc);
    return NULL;
}

bool cf__net_combiner_signer(cf_secure *s)
{
    static atomic_bool warned;
    if (s->rsig.on) {
        return true;
    }
    if (!atomic_load(&s->comb_have_log)) {
        return false; /* the gateway's hello has not been read yet */
    }
    uint64_t rl = 0, ll = 0;
    char err[256], params[sizeof(s->rsig.params)];
    snprintf(params, sizeof(params), "%s", s->rsig.params);
    cf_err e = outfile_sync(&s->results, &rl);
    if (e == CF_OK) {
        e = outfile_sync(&s->late, &ll);
    }
    if (e == CF_OK) {
        bool resume = s->comb_resumed && s->comb_sig_len > 0;
        e = ressig_open(&s->rsig, s->st.keys_dir, s->conf.output_dir, s->comb_log_id, params,
                        resume, resume ? s->comb_sig_len : 0, resume ? s->comb_sig_seq : 0,
                        s->results.tmp, rl, s->late.tmp, ll, err, sizeof(err));
    } else {
        snprintf(err, sizeof(err), "cannot sync the outputs");
    }
    if (e != CF_OK && !atomic_exchange(&warned, true)) {
        CF_LOG(CF_LOG_ERROR, "combiner", "results are not signed: %s", err);
    }
    return e == CF_OK;
}

/* The combiner's state file ends with the workers per party after the checkpoint (u32) and
 * the read position of every slot (i * CF_WORKERS_MAX + w): a slot that is idle now keeps
 * where its retired worker's stream ended, for a later rescale that activates it again. */
#define COMB_TAIL(k) (4 + 8 * (size_t)(k)*CF_WORKERS_MAX)

void cf__net_combiner_checkpoint(cf_secure *s, const party_msg *const *msgs, unsigned nw)
{
    uint64_t results_len = 0, late_len = 0, alerts_len = 0, sig_len = 0, sig_seq = 0;
    uint8_t tail[COMB_TAIL(CF_KEY_PARTIES_MAX)];
    unsigned after = msgs[0]->workers != 0 ? msgs[0]->workers : nw;
    if (cf__net_combiner_signer(s)) {
        ressig_sign(&s->rsig, msgs[0]->first); /* covers what this checkpoint records */
    }
    bool ok = cf__sink_flush(s) && outfile_sync(&s->results, &results_len) == CF_OK &&
              outfile_sync(&s->late, &late_len) == CF_OK &&
              outfile_sync(&s->alerts, &alerts_len) == CF_OK &&
              ressig_position(&s->rsig, &sig_len, &sig_seq) == CF_OK;
    for (int j = 0; j < 4; j++) {
        tail[j] = (uint8_t)(after >> (8 * j));
    }
    for (unsigned w = 0; w < CF_WORKERS_MAX && ok; w++) {
        for (unsigned i = 0; i < s->k && ok; i++) {
            const cursor *c = &s->cur[i][w];
            unsigned x = slot_index(i, w);
            uint64_t pos = s->start_seq[x] - 1; /* an idle slot: where it stopped */
            if (w < nw) {
                /* A marker travels alone in its batch: resuming after that batch loses
                 * nothing. msgs holds every slot's marker, worker by worker (combiner.c). */
                ok = c->b != NULL && c->i == c->b->n && msgs[w * s->k + i]->first == msgs[0]->first;
                pos = ok ? c->b->stream_seq : 0;
            }
            for (int j = 0; ok && j < 8; j++) {
                tail[4 + 8 * x + (unsigned)j] = (uint8_t)(pos >> (8 * j));
            }
        }
    }
    size_t len = 0;
    uint8_t *blob =
        ok ? cf__ckpt_encode(s, msgs[0]->first, alerts_len, s->st.alerts, results_len, late_len,
                             sig_len, sig_seq, NULL, NULL, 0, tail, COMB_TAIL(s->k), &len)
           : NULL;
    if (blob == NULL || !write_state(s, blob, len)) {
        CF_LOG(CF_LOG_WARN, "combiner", "checkpoint at %llu skipped",
               (unsigned long long)msgs[0]->first);
    }
    cf_free(blob);
}

/* ---- lifecycle ---- */

static cf_err ensure(cf_secure *s, const char *stream, const char *subject, char *errstr,
                     size_t errstr_size)
{
    return cf_js_ensure_stream(s->js, stream, subject, (int)s->conf.nats_replicas,
                               s->conf.nats_duplicate_window_s, errstr, errstr_size);
}

/* ensure, asking again for a while when the cluster does not answer (a rescale while a
 * node restarts or the machine is busy). */
static cf_err ensure_patient(cf_secure *s, const char *stream, const char *subject, char *errstr,
                             size_t errstr_size)
{
    cf_err err = CF_E_TRANSPORT;
    for (int attempt = 0; attempt <= 60 && err == CF_E_TRANSPORT && !atomic_load(&s->net_stop);
         attempt++) {
        if (attempt > 0) {
            struct timespec ts = {0, 250000000};
            nanosleep(&ts, NULL);
        }
        err = ensure(s, stream, subject, errstr, errstr_size);
    }
    return err;
}

static cf_err ensure_handover(cf_secure *s, char *errstr, size_t errstr_size)
{
    char stream[128], subject[128];
    handover_names(s, UINT64_MAX, stream, subject, sizeof(stream));
    return ensure(s, stream, subject, errstr, errstr_size);
}

static cf_err ensure_streams(cf_secure *s, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    char stream[128], subject[128];
    /* a party worker's own slot, also one beyond party.workers (a standby) */
    unsigned slots =
        s->role == CF_ROLE_PARTY && s->worker_id >= s->dworkers ? s->worker_id + 1 : s->dworkers;
    for (unsigned i = 0; i < s->k && err == CF_OK; i++) {
        for (unsigned w = 0; w < slots && err == CF_OK; w++) {
            bool mine = s->role == CF_ROLE_PARTY && s->party_id == i && s->worker_id == w;
            if (s->role == CF_ROLE_GATEWAY || mine) {
                slot_names(s, "SHARES", "shares", i, w, stream, subject, sizeof(stream));
                err = ensure(s, stream, subject, errstr, errstr_size);
            }
            if (err == CF_OK && (s->role == CF_ROLE_COMBINER || mine)) {
                slot_names(s, "PARTIALS", "partials", i, w, stream, subject, sizeof(stream));
                err = ensure(s, stream, subject, errstr, errstr_size);
            }
        }
    }
    if (err == CF_OK && s->role == CF_ROLE_PARTY) {
        err = ensure_handover(s, errstr, errstr_size);
    }
    if (err == CF_OK && s->role != CF_ROLE_PARTY) {
        stream_name(s, "GROUPS", -1, stream, sizeof(stream));
        subject_name(s, "groups", -1, subject, sizeof(subject));
        err = ensure(s, stream, subject, errstr, errstr_size);
    }
    return err;
}

/* What party @p i's worker @p w's shares stream already holds (see already_sent). */
static cf_err load_floor(cf_secure *s, unsigned i, unsigned w, char *errstr, size_t errstr_size)
{
    char stream[128], subject[128];
    cf_frame_hdr h;
    bool found = false;
    slot_names(s, "SHARES", "shares", i, w, stream, subject, sizeof(stream));
    cf_err err = cf_js_last(s->js, stream, subject, &h, &found, errstr, errstr_size);
    if (err != CF_OK || !found) {
        return err;
    }
    s->has_floor[i][w] = true;
    /* A shares frame holds the events [id, id + count), and a marker at its end when aux is
     * set (markers end frames); an end frame's id is the final index. */
    bool shares = h.type == CF_FRAME_SHARES;
    s->ev_floor[i][w] = shares ? h.id + h.count : h.id;
    s->mk_floor[i][w] = shares && h.aux == 0 ? h.id : s->ev_floor[i][w];
    return CF_OK;
}

/* What this role's output streams already hold (see already_sent). */
static cf_err load_floors(cf_secure *s, char *errstr, size_t errstr_size)
{
    char stream[128], subject[128];
    cf_frame_hdr h;
    bool found = false;
    cf_err err = CF_OK;
    if (s->role == CF_ROLE_GATEWAY) {
        sodium_bin2hex(s->log_hex, sizeof(s->log_hex), s->ctx.log_id, sizeof(s->ctx.log_id));
        for (unsigned x = 0; x < s->k * s->dworkers && err == CF_OK; x++) {
            err = load_floor(s, x / s->dworkers, x % s->dworkers, errstr, errstr_size);
        }
        return err;
    }
    if (s->role == CF_ROLE_PARTY) {
        slot_names(s, "PARTIALS", "partials", s->party_id, s->worker_id, stream, subject,
                   sizeof(stream));
        err = cf_js_last(s->js, stream, subject, &h, &found, errstr, errstr_size);
        if (err == CF_OK && found) {
            s->has_out_floor = true;
            s->out_seq = h.id;
            s->out_part = h.type == CF_FRAME_END ? UINT32_MAX : h.aux;
        }
    }
    return err;
}

cf_err cf__net_open(cf_secure *s, resume_state *r, char *errstr, size_t errstr_size)
{
    const cf_config *c = &s->conf;
    char name[64];
    snprintf(name, sizeof(name), "confide-%s", c->role);
    if (s->role == CF_ROLE_PARTY) {
        snprintf(name, sizeof(name), "confide-party-%u", s->party_id); /* its inbox prefix */
    }
    cf_err err = cf__nats_connect(c, name, &s->js, errstr, errstr_size);
    /* A cluster that is still electing leaders (just started, or a node restarting) does
     * not answer at once: keep asking for a while before giving up. */
    for (int attempt = 0; err == CF_OK; attempt++) {
        err = ensure_streams(s, errstr, errstr_size);
        if (err == CF_OK) {
            err = load_floors(s, errstr, errstr_size);
        }
        if (err != CF_E_TRANSPORT || attempt == 60) {
            break;
        }
        err = CF_OK;
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
    }
    if (err != CF_OK || s->role == CF_ROLE_GATEWAY) {
        return err;
    }
    for (unsigned i = 0; i < sizeof(s->start_seq) / sizeof(s->start_seq[0]); i++) {
        s->start_seq[i] = 1;
    }
    if ((err = read_state(s, r, errstr, errstr_size)) != CF_OK || r->blob == NULL) {
        return err;
    }
    bool is_party = s->role == CF_ROLE_PARTY;
    size_t want = is_party ? PARTY_TAIL : COMB_TAIL(s->k);
    uint32_t nw = 0;
    const uint8_t *t = r->tail + (is_party ? 8 : 0);
    for (int j = 0; r->tail_len == want && j < 4; j++) {
        nw |= (uint32_t)t[j] << (8 * j);
    }
    if (r->tail_len != want || r->k != (is_party ? 1u : 0u) || nw < 1 || nw > CF_WORKERS_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "%s/%s.state was written for another number of parties", c->output_dir,
                          is_party ? "party-N" : "combiner");
    }
    const uint8_t *seqs = is_party ? r->tail : r->tail + 4;
    for (unsigned x = 0; x < (is_party ? 1u : s->k * CF_WORKERS_MAX); x++) {
        uint64_t seq = 0;
        for (int j = 0; j < 8; j++) {
            seq |= (uint64_t)seqs[8 * x + (unsigned)j] << (8 * j);
        }
        s->start_seq[x] = seq + 1;
    }
    if (is_party) {
        s->dnworkers = nw;
    } else {
        s->workers = s->dworkers = nw; /* the slots in use after the checkpoint */
    }
    CF_LOG(CF_LOG_INFO, s->role == CF_ROLE_PARTY ? "party" : "combiner",
           "resuming from the checkpoint at event %llu", (unsigned long long)r->index);
    return CF_OK;
}

static bool spawn(cf_secure *s, unsigned slot, unsigned i, unsigned w, void *(*fn)(void *))
{
    struct net_thread *nt = &s->net[slot];
    nt->s = s;
    nt->i = i;
    nt->w = w;
    nt->running = pthread_create(&nt->t, NULL, fn, nt) == 0;
    return nt->running;
}

static void join(cf_secure *s, unsigned slot)
{
    if (s->net[slot].running) {
        pthread_join(s->net[slot].t, NULL);
        s->net[slot].running = false;
    }
}

/* Starts @p fn for every party's workers [from, to). */
static bool spawn_slots(cf_secure *s, unsigned from, unsigned to, void *(*fn)(void *))
{
    bool ok = true;
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = from; w < to; w++) {
            ok &= spawn(s, slot_index(i, w), i, w, fn);
        }
    }
    return ok;
}

static void join_slots(cf_secure *s)
{
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->dworkers; w++) {
            join(s, slot_index(i, w));
        }
    }
}

bool cf__net_start(cf_secure *s)
{
    switch (s->role) {
    case CF_ROLE_GATEWAY:
        return spawn_slots(s, 0, s->dworkers, gateway_sender) &&
               spawn(s, GROUPS_THREAD, 0, 0, groups_sender) &&
               spawn(s, CONTROL_THREAD, 0, 0, gateway_control);
    case CF_ROLE_PARTY:
        return spawn(s, 0, 0, 0, party_receiver) && spawn(s, 1, 0, 0, party_sender);
    case CF_ROLE_COMBINER:
        return spawn_slots(s, 0, s->dworkers, combiner_receiver) &&
               spawn(s, GROUPS_THREAD, 0, 0, groups_receiver);
    default:
        return true;
    }
}

cf_err cf__net_gateway_floors(cf_secure *s, unsigned to, char *errstr, size_t errstr_size)
{
    char stream[128], subject[128];
    cf_err err = CF_OK;
    for (unsigned w = s->dworkers; w < to && err == CF_OK; w++) {
        for (unsigned i = 0; i < s->k && err == CF_OK; i++) {
            slot_names(s, "SHARES", "shares", i, w, stream, subject, sizeof(stream));
            if ((err = ensure_patient(s, stream, subject, errstr, errstr_size)) == CF_OK) {
                err = load_floor(s, i, w, errstr, errstr_size);
            }
        }
    }
    return err;
}

bool cf__net_gateway_grow(cf_secure *s, unsigned to)
{
    char err[256], stream[128], subject[128];
    for (unsigned w = s->dworkers; w < to; w++) {
        for (unsigned i = 0; i < s->k; i++) {
            slot_names(s, "SHARES", "shares", i, w, stream, subject, sizeof(stream));
            /* A stream added live holds nothing of this process's; replaying, it may. */
            if (ensure_patient(s, stream, subject, err, sizeof(err)) != CF_OK ||
                (s->replaying && load_floor(s, i, w, err, sizeof(err)) != CF_OK)) {
                net_fail(s, stream, err);
                return false;
            }
        }
    }
    bool ok = to <= s->dworkers || spawn_slots(s, s->dworkers, to, gateway_sender);
    s->dworkers = to > s->dworkers ? to : s->dworkers;
    return ok;
}

bool cf__net_combiner_grow(cf_secure *s, unsigned to)
{
    char err[256], stream[128], subject[128];
    for (unsigned w = s->dworkers; w < to; w++) {
        for (unsigned i = 0; i < s->k; i++) {
            slot_names(s, "PARTIALS", "partials", i, w, stream, subject, sizeof(stream));
            if (cf__worker_lanes(s, i, w) != CF_OK) {
                net_fail(s, stream, "no memory for an added worker's queue");
                return false;
            }
            if (ensure_patient(s, stream, subject, err, sizeof(err)) != CF_OK) {
                net_fail(s, stream, err);
                return false;
            }
        }
    }
    bool ok = to <= s->dworkers || spawn_slots(s, s->dworkers, to, combiner_receiver);
    s->dworkers = to > s->dworkers ? to : s->dworkers;
    return ok;
}

void cf__net_wait(cf_secure *s)
{
    if (s->role == CF_ROLE_PARTY) {
        join(s, 0); /* the input ended (or stop) */
    } else if (s->role == CF_ROLE_COMBINER) {
        /* The combiner thread first: it adds receivers at rescales, until it is done. */
        if (s->comb_started) {
            pthread_join(s->comb_thread, NULL);
            s->comb_started = false;
        }
        join_slots(s);
    }
}

void cf__net_join(cf_secure *s)
{
    switch (s->role) {
    case CF_ROLE_GATEWAY:
        for (unsigned i = 0; i < s->k; i++) {
            for (unsigned w = 0; w < s->dworkers; w++) {
                lane *l = &s->parties[i][w].in;
                if (l->full_ring != NULL) {
                    cf_ring_close(l->full_ring);
                }
            }
        }
        join_slots(s);
        if (s->dict != NULL) {
            cf_ring_close(s->dict);
        }
        join(s, GROUPS_THREAD);
        atomic_store(&s->ctl_stop, true);
        join(s, CONTROL_THREAD);
        break;
    case CF_ROLE_PARTY: {
        party *pa = &s->parties[s->party_id][0];
        join(s, 0); /* ends at the end-of-input frame, a failure, a stop or retirement */
        if (pa->in.full_ring != NULL) {
            cf_ring_close(pa->in.full_ring);
        }
        if (pa->started) {
            pthread_join(pa->thread, NULL);
            pa->started = false;
        }
        join(s, 1);
        if (atomic_load(&s->retired) && !atomic_load(&s->net_stop)) {
            write_retired_state(s);
        }
        break;
    }
    case CF_ROLE_COMBINER:
        if (s->comb_started) {
            /* before the receivers: those of retired workers stop when it is done */
            pthread_join(s->comb_thread, NULL);
            s->comb_started = false;
        }
        join_slots(s);
        /* The gateway's end frame on the groups stream follows its last names: wait a while
         * for it (the last signature covers every event up to it). */
        for (int i = 0; i < 300 && !atomic_load(&s->comb_have_end) && !atomic_load(&s->net_stop) &&
                        !atomic_load(&s->net_failed);
             i++) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
        atomic_store(&s->groups_stop, true);
        join(s, GROUPS_THREAD); /* the groups receiver */
        break;
    default:
        break;
    }
}

void cf__net_close(cf_secure *s)
{
    cf_js_close(s->js);
    s->js = NULL;
}

/* ---- output sink: the output lines on JetStream ---- */

cf_err cf__sink_open(cf_secure *s, char *errstr, size_t errstr_size)
{
    const cf_config *c = &s->conf;
    if (c->output_nats_subject[0] == '\0' || s->role == CF_ROLE_PARTY) {
        return CF_OK;
    }
    cf_err err = CF_OK;
    if (s->js != NULL) {
        s->sink_js = s->js;
    } else {
        err = cf__nats_connect(c, "confide-run", &s->sink_js, errstr, errstr_size);
        s->sink_own = err == CF_OK;
    }
    char stream[128], subject[256];
    stream_name(s, "OUT", -1, stream, sizeof(stream));
    snprintf(subject, sizeof(subject), "%s.>", c->output_nats_subject);
    if (err == CF_OK) {
        err = cf_js_ensure_stream(s->sink_js, stream, subject, (int)c->nats_replicas,
                                  c->nats_duplicate_window_s, errstr, errstr_size);
    }
    if (err != CF_OK) {
        cf__sink_close(s);
    }
    return err;
}

void cf__sink_put(cf_secure *s, const char *kind, const char *line, size_t len)
{
    if (s->sink_js == NULL || len == 0) {
        return;
    }
    if (line[len - 1] == '\n') {
        len--;
    }
    uint8_t h[16];
    char id[64], subject[200];
    crypto_generichash(h, sizeof(h), (const uint8_t *)line, len, NULL, 0);
    int n = snprintf(id, sizeof(id), "%s.", kind);
    sodium_bin2hex(id + n, sizeof(id) - (size_t)n, h, sizeof(h));
    snprintf(subject, sizeof(subject), "%s.%s", s->conf.output_nats_subject, kind);
    if (cf_js_publish_async(s->sink_js, subject, line, len, id) != CF_OK) {
        atomic_store(&s->sink_failed, true);
    }
}

bool cf__sink_flush(cf_secure *s)
{
    uint64_t failed = 0;
    if (s->sink_js == NULL) {
        return true;
    }
    if (cf_js_flush(s->sink_js, &failed) != CF_OK || atomic_load(&s->sink_failed)) {
        if (!atomic_exchange(&s->sink_failed, true)) {
            CF_LOG(CF_LOG_ERROR, "sink",
                   "%llu output lines were not accepted by JetStream (output.nats_subject); "
                   "the files have them",
                   (unsigned long long)failed);
        }
        return false;
    }
    return true;
}

void cf__sink_close(cf_secure *s)
{
    if (s->sink_own) {
        cf_js_close(s->sink_js);
    }
    s->sink_js = NULL;
    s->sink_own = false;
}

cf_err cf__nats_connect(const cf_config *c, const char *name, cf_js **out, char *errstr,
                        size_t errstr_size)
{
    char password[256], inbox[96];
    cf_err err = cf__read_password_file("nats.password_file", c->nats_password_file, password,
                                        sizeof(password), errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    snprintf(inbox, sizeof(inbox), "_INBOX.%s", name);
    cf_js_opts o = {.servers = c->nats_servers,
                    .user = c->nats_user,
                    .password = password,
                    .ca_file = c->nats_ca_file,
                    .cert_file = c->nats_cert_file,
                    .key_file = c->nats_key_file,
                    .name = name,
                    .inbox_prefix = inbox,
                    .timeout_ms = 5000};
    err = cf_js_connect(out, &o, errstr, errstr_size);
    sodium_memzero(password, sizeof(password));
    return err;
}
