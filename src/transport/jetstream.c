/*
 * JetStream through libnats 3.4.1 (Debian 12). Only calls that are safe in that version:
 * js_Publish (synchronous, waits for the stream's ack), js_SubscribeSync push consumers with
 * explicit acks and MaxAckPending, js_GetLastMsg, js_GetStreamInfo/js_AddStream. Never
 * natsSubscription_Fetch/FetchRequest (heap overflow when an earlier pull's messages are
 * pending, fixed upstream in 3.8.3).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>
#include <pthread.h>
#include <sodium.h>

#include "confide/core.h"
#include "confide/transport.h"

struct cf_js {
    natsConnection *nc;
    jsCtx *js;
    int64_t timeout_ms;
    atomic_uint_fast64_t async_failed; /* asynchronous publishes the stream refused */
};

static void on_async_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae;
    cf_js *j = closure;
    atomic_fetch_add(&j->async_failed, 1);
}

struct cf_js_sub {
    natsSubscription *sub;
};

/* libnats keeps library-wide threads and memory for the life of the process. nats_Close()
 * is deliberately never called: with TLS in use, libnats 3.4.1 tears down OpenSSL state that
 * OPENSSL_cleanup() then frees again at exit (a segfault after a successful run). */
static cf_err nats_fail_conn(natsConnection *nc, natsStatus s, jsErrCode jerr, char *errstr,
                             size_t errstr_size, const char *what)
{
    const char *last = nats_GetLastError(NULL);
    const char *conn_err = NULL;
    /* A subject this role may not use gets no reply, only an asynchronous -ERR on the
     * connection: name it rather than report a bare timeout. */
    if (nc != NULL && natsConnection_GetLastError(nc, &conn_err) != NATS_OK && conn_err != NULL &&
        strstr(conn_err, "Permissions Violation") != NULL) {
        return cf_err_set(CF_E_PERM, errstr, errstr_size, "%s: refused by the server: %s", what,
                          conn_err);
    }
    if (jerr != 0) {
        return cf_err_set(CF_E_TRANSPORT, errstr, errstr_size, "%s: %s (JetStream error %d)", what,
                          natsStatus_GetText(s), (int)jerr);
    }
    return cf_err_set(s == NATS_NOT_PERMITTED || s == NATS_CONNECTION_AUTH_FAILED ? CF_E_PERM
                                                                                  : CF_E_TRANSPORT,
                      errstr, errstr_size, "%s: %s%s%s", what, natsStatus_GetText(s),
                      last != NULL && last[0] != '\0' ? ": " : "", last != NULL ? last : "");
}

static cf_err nats_fail(natsStatus s, jsErrCode jerr, char *errstr, size_t errstr_size,
                        const char *what)
{
    return nats_fail_conn(NULL, s, jerr, errstr, errstr_size, what);
}

/* "url1,url2,..." -> natsOptions_SetServers (SetURL takes one URL in libnats 3.4.1). */
static natsStatus set_servers(natsOptions *no, const char *list)
{
    char buf[1024];
    const char *urls[16];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t != NULL && n < 16;
         t = strtok_r(NULL, ", ", &save)) {
        urls[n++] = t;
    }
    return n > 0 ? natsOptions_SetServers(no, urls, n) : NATS_INVALID_ARG;
}

static natsStatus set_options(natsOptions *no, const cf_js_opts *o)
{
    natsStatus s = set_servers(no, o->servers);
    if (s == NATS_OK) {
        /* Every server in the list, in order: a cluster node that is down is skipped. */
        s = natsOptions_SetNoRandomize(no, false);
    }
    if (s == NATS_OK && o->name != NULL && o->name[0] != '\0') {
        s = natsOptions_SetName(no, o->name);
    }
    if (s == NATS_OK && o->inbox_prefix != NULL && o->inbox_prefix[0] != '\0') {
        s = natsOptions_SetCustomInboxPrefix(no, o->inbox_prefix);
    }
    if (s == NATS_OK && o->user != NULL && o->user[0] != '\0') {
        s = natsOptions_SetUserInfo(no, o->user, o->password != NULL ? o->password : "");
    }
    if (s == NATS_OK && o->ca_file != NULL && o->ca_file[0] != '\0') {
        s = natsOptions_SetSecure(no, true);
        if (s == NATS_OK) {
            s = natsOptions_LoadCATrustedCertificates(no, o->ca_file);
        }
    }
    if (s == NATS_OK && o->cert_file != NULL && o->cert_file[0] != '\0') {
        s = natsOptions_LoadCertificatesChain(no, o->cert_file, o->key_file);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(no, o->timeout_ms > 0 ? o->timeout_ms : 5000);
    }
    if (s == NATS_OK) {
        /* A cluster node that goes away is survived by reconnecting to another. */
        s = natsOptions_SetMaxReconnect(no, 120);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectWait(no, 250);
    }
    return s;
}

cf_err cf_js_connect(cf_js **out, const cf_js_opts *o, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (o->servers == NULL || o->servers[0] == '\0') {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "nats.servers: no server given");
    }
    cf_js *j = cf_calloc(1, sizeof(*j));
    if (j == NULL) {
        return CF_E_NOMEM;
    }
    j->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK) {
        s = set_options(no, o);
    }
    cf_err err = CF_OK;
    if (s != NATS_OK) {
        err = nats_fail(s, 0, errstr, errstr_size, "nats options (TLS files?)");
        goto fail;
    }
    s = natsConnection_Connect(&j->nc, no);
    if (s != NATS_OK) {
        err = nats_fail(s, 0, errstr, errstr_size, "cannot connect to the NATS servers");
        goto fail;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = j->timeout_ms;
    jo.PublishAsync.MaxPending = 4096;
    /* with MaxPending unacknowledged, js_PublishAsync waits this long for acks and then fails:
     * libnats' 200 ms is shorter than a busy server's ack delay (confide gen --nats failed
     * past a few 100k messages); back-pressure, not an error, up to the request timeout */
    jo.PublishAsync.StallWait = j->timeout_ms > 0 ? j->timeout_ms : 5000;
    jo.PublishAsync.ErrHandler = on_async_error;
    jo.PublishAsync.ErrHandlerClosure = j;
    if ((s = natsConnection_JetStream(&j->js, j->nc, &jo)) != NATS_OK) {
        err = nats_fail(s, 0, errstr, errstr_size, "no JetStream context");
        goto fail;
    }
    natsOptions_Destroy(no);
    *out = j;
    return CF_OK;
fail:
    natsOptions_Destroy(no);
    cf_js_close(j);
    return err;
}

void cf_js_close(cf_js *j)
{
    if (j == NULL) {
        return;
    }
    jsCtx_Destroy(j->js);
    if (j->nc != NULL) {
        natsConnection_FlushTimeout(j->nc, 1000);
        natsConnection_Close(j->nc);
        natsConnection_Destroy(j->nc);
    }
    cf_free(j);
}

cf_err cf_js_ensure_stream(cf_js *j, const char *name, const char *subject, int replicas,
                           int64_t dup_window_s, char *errstr, size_t errstr_size)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, j->js, name, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return CF_OK;
    }
    if (s != NATS_NOT_FOUND) {
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, "stream info");
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = replicas > 0 ? replicas : 1;
    cfg.Duplicates = dup_window_s * 1000000000LL;
    jerr = 0;
    s = js_AddStream(&si, j->js, &cfg, NULL, &jerr);
    if (s == NATS_OK || jerr == JSStreamNameExistErr) {
        jsStreamInfo_Destroy(si); /* created, or by another role at the same time */
        if (s != NATS_OK) {
            /* nats-server 2.9.10 lists a stream before its store exists, and a request on it
             * then (a message get, as a restarted sender makes) crashes the server: give the
             * other role's creation time to finish. */
            struct timespec ts = {0, 500000000};
            nanosleep(&ts, NULL);
        }
        return CF_OK;
    }
    char what[160];
    snprintf(what, sizeof(what), "cannot create stream %s", name);
    return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, what);
}

cf_err cf_js_stream_state(cf_js *j, const char *name, cf_js_stream_st *out, char *errstr,
                          size_t errstr_size)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, j->js, name, NULL, &jerr);
    if (s != NATS_OK) {
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, "stream info");
    }
    *out = (cf_js_stream_st){.msgs = si->State.Msgs,
                             .bytes = si->State.Bytes,
                             .first_seq = si->State.FirstSeq,
                             .last_seq = si->State.LastSeq};
    jsStreamInfo_Destroy(si);
    return CF_OK;
}

cf_err cf_js_last(cf_js *j, const char *name, const char *subject, cf_frame_hdr *h, bool *found,
                  char *errstr, size_t errstr_size)
{
    *found = false;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, j->js, name, subject, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        return CF_OK;
    }
    if (s != NATS_OK) {
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, "last message");
    }
    cf_err err = cf_frame_open((const uint8_t *)natsMsg_GetData(m),
                               (size_t)natsMsg_GetDataLength(m), h, errstr, errstr_size);
    *found = err == CF_OK;
    natsMsg_Destroy(m);
    return err;
}

cf_err cf_js_publish(cf_js *j, const char *subject, const void *data, size_t len,
                     const char *msg_id, bool *duplicate, char *errstr, size_t errstr_size)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = j->timeout_ms;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&pa, j->js, subject, data, (int)len, &po, &jerr);
    if (s != NATS_OK) {
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, "publish");
    }
    if (duplicate != NULL) {
        *duplicate = pa->Duplicate;
    }
    jsPubAck_Destroy(pa);
    return CF_OK;
}

cf_err cf_js_publish_async(cf_js *j, const char *subject, const void *data, size_t len,
                           const char *msg_id)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    natsStatus s = js_PublishAsync(j->js, subject, data, (int)len, &po);
    if (s != NATS_OK) {
        atomic_fetch_add(&j->async_failed, 1);
        return CF_E_TRANSPORT;
    }
    return CF_OK;
}

cf_err cf_js_flush(cf_js *j, uint64_t *failed)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = j->timeout_ms;
    natsStatus s = js_PublishAsyncComplete(j->js, &po);
    uint64_t f = atomic_exchange(&j->async_failed, 0);
    if (failed != NULL) {
        *failed = f;
    }
    return s == NATS_OK && f == 0 ? CF_OK : CF_E_TRANSPORT;
}

cf_err cf_js_subscribe(cf_js_sub **out, cf_js *j, const char *stream, const char *subject,
                       uint64_t start_seq, int max_ack_pending, char *errstr, size_t errstr_size)
{
    *out = NULL;
    cf_js_sub *cs = cf_calloc(1, sizeof(*cs));
    if (cs == NULL) {
        return CF_E_NOMEM;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.ManualAck = true;
    so.Config.DeliverPolicy = start_seq > 1 ? js_DeliverByStartSequence : js_DeliverAll;
    so.Config.OptStartSeq = start_seq > 1 ? start_seq : 0;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.MaxAckPending = max_ack_pending > 0 ? max_ack_pending : 256;
    so.Config.AckWait = 30LL * 1000000000LL;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&cs->sub, j->js, subject, NULL, &so, &jerr);
    if (s != NATS_OK) {
        cf_free(cs);
        char what[200];
        snprintf(what, sizeof(what), "cannot consume %s", subject);
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, what);
    }
    /* MaxAckPending bounds what is in flight; let the client buffer all of it. */
    natsSubscription_SetPendingLimits(cs->sub, -1, -1);
    *out = cs;
    return CF_OK;
}

cf_err cf_js_next(cf_js_sub *cs, cf_js_msg *out, int64_t timeout_ms)
{
    memset(out, 0, sizeof(*out));
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, cs->sub, timeout_ms);
    if (s == NATS_TIMEOUT) {
        return CF_E_FULL;
    }
    if (s != NATS_OK) {
        return CF_E_TRANSPORT;
    }
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, m) == NATS_OK) {
        out->stream_seq = md->Sequence.Stream;
        out->deliveries = md->NumDelivered;
        jsMsgMetaData_Destroy(md);
    }
    out->data = (const uint8_t *)natsMsg_GetData(m);
    out->len = (size_t)natsMsg_GetDataLength(m);
    out->impl = m;
    return CF_OK;
}

bool cf_js_alive(cf_js_sub *cs)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_GetConsumerInfo(&ci, cs->sub, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    return s == NATS_OK;
}

cf_err cf_js_ack(cf_js_msg *m)
{
    natsStatus s = natsMsg_Ack(m->impl, NULL);
    cf_js_release(m);
    return s == NATS_OK ? CF_OK : CF_E_TRANSPORT;
}

void cf_js_release(cf_js_msg *m)
{
    natsMsg_Destroy(m->impl);
    m->impl = NULL;
    m->data = NULL;
}

void cf_js_unsubscribe(cf_js_sub *cs)
{
    if (cs == NULL) {
        return;
    }
    natsSubscription_Unsubscribe(cs->sub); /* removes the ephemeral consumer */
    natsSubscription_Destroy(cs->sub);
    cf_free(cs);
}

/* ---- core NATS: control requests and live statistics (not persisted) ---- */

cf_err cf_nats_subscribe(cf_js_sub **out, cf_js *j, const char *subject, char *errstr,
                         size_t errstr_size)
{
    *out = NULL;
    cf_js_sub *cs = cf_calloc(1, sizeof(*cs));
    if (cs == NULL) {
        return CF_E_NOMEM;
    }
    natsStatus s = natsConnection_SubscribeSync(&cs->sub, j->nc, subject);
    if (s != NATS_OK) {
        cf_free(cs);
        char what[200];
        snprintf(what, sizeof(what), "cannot subscribe to %s", subject);
        return nats_fail_conn(j->nc, s, 0, errstr, errstr_size, what);
    }
    *out = cs;
    return CF_OK;
}

cf_err cf_nats_publish(cf_js *j, const char *subject, const void *data, size_t len)
{
    natsStatus s = natsConnection_Publish(j->nc, subject, data, (int)len);
    return s == NATS_OK ? CF_OK : CF_E_TRANSPORT;
}

cf_err cf_nats_respond(cf_js *j, cf_js_msg *m, const void *data, size_t len)
{
    const char *reply = natsMsg_GetReply(m->impl);
    cf_err e = reply != NULL && reply[0] != '\0' ? cf_nats_publish(j, reply, data, len) : CF_OK;
    cf_js_release(m);
    return e;
}

cf_err cf_nats_request(cf_js *j, const char *subject, const void *data, size_t len, char *reply,
                       size_t reply_size, int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    natsMsg *m = NULL;
    natsStatus s = natsConnection_Request(&m, j->nc, subject, data, (int)len, timeout_ms);
    if (s != NATS_OK) {
        char what[200];
        snprintf(what, sizeof(what), "no answer on %s", subject);
        return nats_fail_conn(j->nc, s, 0, errstr, errstr_size, what);
    }
    int n = natsMsg_GetDataLength(m);
    size_t c = n < 0 ? 0 : (size_t)n < reply_size ? (size_t)n : reply_size - 1;
    memcpy(reply, natsMsg_GetData(m), c);
    reply[c] = '\0';
    natsMsg_Destroy(m);
    return CF_OK;
}

const char *cf_js_msg_subject(const cf_js_msg *m)
{
    const char *s = m->impl != NULL ? natsMsg_GetSubject(m->impl) : NULL;
    return s != NULL ? s : "";
}

/* ---- ordered asynchronous publisher ----
 * Frames in flight sit in a ring, oldest first; the ack handler (a libnats thread) marks
 * them stored or refused, the caller's thread hands them back in order. Every frame names
 * what the stream must end with before it: the sequence (Nats-Expected-Last-Sequence) and
 * the previous frame's message id (Nats-Expected-Last-Msg-Id; nats-server checks both after
 * de-duplication, in order, also in a cluster). A frame is thus stored only if the one
 * before it is the stream's last message: the stream holds a prefix of what was sent, in
 * order, even if some other message slips in (the sequence alone would let a later frame
 * take a refused one's place). The server keeps the last message id in memory only, so the
 * first frame after opening or recovering names the sequence alone; the first frame on an
 * empty stream cannot name anything (0 means no check) and goes synchronously. */

enum { PUB_FREE, PUB_FLIGHT, PUB_STORED, PUB_REFUSED };

typedef struct pub_entry {
    uint8_t *data;
    size_t len, cap;
    char msg_id[160];
    void *tag;
    int state;
    int64_t sent_ns;
} pub_entry;

struct cf_js_pub {
    cf_js *j;
    jsCtx *js;
    char stream[128], subject[256];
    pub_entry *e;
    unsigned cap, head, n;
    uint64_t last_seq; /* where the stream ends once every frame in flight is stored */
    char last_id[160]; /* and the message id it ends with */
    bool chain;        /* the server knows last_id: the next frame may name it */
    int64_t retry_ns, timeout_ns;
    cf_js_stored_fn fn;
    void *ctx;
    const atomic_bool *stop;
    bool async; /* js_PublishAsyncGetPendingList crashes before the first async publish */
    bool dup;   /* a frame the stream already had: those after it are refused, silently resent */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

#define PUB_ACK_TIMEOUT_MS 5000
#define PUB_WAIT_NS 20000000

static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae;
    cf_js_pub *p = closure;
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != NULL) {
        pthread_mutex_lock(&p->mu);
        for (unsigned k = 0; k < p->n; k++) {
            pub_entry *e = &p->e[(p->head + k) % p->cap];
            if (e->state == PUB_FLIGHT && strcmp(e->msg_id, id) == 0) {
                e->state = pa != NULL ? PUB_STORED : PUB_REFUSED;
                p->dup |= pa != NULL && pa->Duplicate;
                break;
            }
        }
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    natsMsg_Destroy(msg);
}

static bool pub_stopped(const cf_js_pub *p)
{
    return p->stop != NULL && atomic_load(p->stop);
}

/* The last message of the stream: its sequence (0: none) and message id. */
static cf_err pub_last(cf_js_pub *p, uint64_t *seq, char *id, size_t id_size, char *errstr,
                       size_t errstr_size)
{
    *seq = 0;
    id[0] = '\0';
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, p->j->js, p->stream, p->subject, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        return CF_OK;
    }
    if (s != NATS_OK) {
        return nats_fail_conn(p->j->nc, s, jerr, errstr, errstr_size, "last message");
    }
    const char *v = NULL;
    *seq = natsMsg_GetSequence(m);
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v != NULL) {
        snprintf(id, id_size, "%s", v);
    }
    natsMsg_Destroy(m);
    return CF_OK;
}

/* Publishes entry @p e after everything sent before it. */
static void pub_submit(cf_js_pub *p, pub_entry *e)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, p->subject, NULL, (const char *)e->data, (int)e->len);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = e->msg_id;
    po.MaxWait = PUB_ACK_TIMEOUT_MS;
    e->sent_ns = cf_now_ns();
    if (s == NATS_OK && p->last_seq == 0) {
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        s = js_PublishMsg(&pa, p->js, m, &po, &jerr);
        pthread_mutex_lock(&p->mu);
        e->state = s == NATS_OK ? PUB_STORED : PUB_REFUSED;
        p->last_seq = s == NATS_OK ? pa->Sequence : 0;
        p->chain = s == NATS_OK;
        pthread_mutex_unlock(&p->mu);
        jsPubAck_Destroy(pa);
    } else if (s == NATS_OK) {
        po.ExpectLastSeq = p->last_seq;
        po.ExpectLastMsgId = p->chain ? p->last_id : NULL;
        pthread_mutex_lock(&p->mu);
        e->state = PUB_FLIGHT; /* before the ack can arrive */
        pthread_mutex_unlock(&p->mu);
        p->async = true;
        s = js_PublishMsgAsync(p->js, &m, &po);
        if (s != NATS_OK) {
            pthread_mutex_lock(&p->mu);
            e->state = PUB_REFUSED;
            pthread_mutex_unlock(&p->mu);
        }
        p->last_seq++;
        p->chain = true;
    } else {
        e->state = PUB_REFUSED;
    }
    snprintf(p->last_id, sizeof(p->last_id), "%s", e->msg_id);
    natsMsg_Destroy(m);
}

/* Hands back the stored frames at the head, in order. True when the head failed (refused,
 * or unanswered for PUB_ACK_TIMEOUT_MS). */
static bool pub_reap(cf_js_pub *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->n > 0 && p->e[p->head].state == PUB_STORED) {
        pub_entry *e = &p->e[p->head];
        e->state = PUB_FREE;
        void *tag = e->tag;
        p->head = (p->head + 1) % p->cap;
        p->n--;
        pthread_mutex_unlock(&p->mu);
        if (p->fn != NULL) {
            p->fn(p->ctx, tag, true);
        }
        pthread_mutex_lock(&p->mu);
    }
    const pub_entry *h = p->n > 0 ? &p->e[p->head] : NULL;
    bool failed = h != NULL && (h->state == PUB_REFUSED ||
                                (h->state == PUB_FLIGHT &&
                                 cf_now_ns() - h->sent_ns > (int64_t)PUB_ACK_TIMEOUT_MS * 1000000));
    pthread_mutex_unlock(&p->mu);
    return failed;
}

/* After a failure: take back what is in flight, find where the stream ends and send again
 * from the first frame it does not hold. */
static cf_err pub_recover(cf_js_pub *p, char *errstr, size_t errstr_size)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 500;
    natsMsgList pending = {0};
    if (p->async) {
        js_PublishAsyncComplete(p->js, &po); /* late acks still count */
        if (js_PublishAsyncGetPendingList(&pending, p->js) == NATS_OK) {
            natsMsgList_Destroy(&pending); /* their acks, if any come, are dropped */
        }
    }
    pub_reap(p);
    uint64_t seq = 0;
    char last[160];
    cf_err err = pub_last(p, &seq, last, sizeof(last), errstr, errstr_size);
    if (err != CF_OK) {
        pthread_mutex_lock(&p->mu);
        for (unsigned k = 0; k < p->n; k++) {
            p->e[(p->head + k) % p->cap].state = PUB_REFUSED;
        }
        pthread_mutex_unlock(&p->mu);
        return err;
    }
    /* The stream holds a prefix of the frames: up to the one its last message names. */
    pthread_mutex_lock(&p->mu);
    for (unsigned k = 0; k < p->n; k++) {
        pub_entry *e = &p->e[(p->head + k) % p->cap];
        e->state = PUB_REFUSED;
        if (last[0] != '\0' && strcmp(e->msg_id, last) == 0) {
            for (unsigned q = 0; q <= k; q++) {
                p->e[(p->head + q) % p->cap].state = PUB_STORED;
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    pub_reap(p);
    p->last_seq = seq;
    snprintf(p->last_id, sizeof(p->last_id), "%s", last);
    p->chain = false;
    for (unsigned k = 0; k < p->n; k++) {
        pub_submit(p, &p->e[(p->head + k) % p->cap]);
    }
    return CF_OK;
}

/* Reaps; on a failure recovers, for up to retry_ns without progress. */
static cf_err pub_progress(cf_js_pub *p, int64_t *give_up, char *errstr, size_t errstr_size)
{
    for (int attempt = 0; pub_reap(p); attempt++) {
        if (pub_stopped(p)) {
            return cf_err_set(CF_E_STATE, errstr, errstr_size, "stopped");
        }
        if (*give_up == 0) {
            *give_up = cf_now_ns() + p->retry_ns;
            pthread_mutex_lock(&p->mu);
            bool dup = p->dup;
            p->dup = false;
            pthread_mutex_unlock(&p->mu);
            if (!dup) {
                CF_LOG(CF_LOG_WARN, "transport", "publish to %s failed; sending again", p->subject);
            }
        }
        cf_err err = pub_recover(p, errstr, errstr_size);
        if (err == CF_OK && !pub_reap(p)) {
            break;
        }
        if (cf_now_ns() > *give_up) {
            if (err == CF_OK) {
                err = cf_err_set(CF_E_TRANSPORT, errstr, errstr_size,
                                 "publish to %s: no acknowledgement", p->subject);
            }
            return err;
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        (void)attempt;
    }
    return CF_OK;
}

static void pub_wait(cf_js_pub *p)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += PUB_WAIT_NS;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    if (p->n > 0 && p->e[p->head].state == PUB_FLIGHT) {
        pthread_cond_timedwait(&p->cv, &p->mu, &until);
    }
    pthread_mutex_unlock(&p->mu);
}

cf_err cf_js_pub_open(cf_js_pub **out, cf_js *j, const char *stream, const char *subject,
                      unsigned window, int64_t retry_ms, cf_js_stored_fn stored, void *ctx,
                      const atomic_bool *stop, char *errstr, size_t errstr_size)
{
    *out = NULL;
    cf_js_pub *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    p->cap = window > 0 ? window : 1;
    p->e = cf_calloc(p->cap, sizeof(*p->e));
    if (p->e == NULL) {
        cf_free(p);
        return CF_E_NOMEM;
    }
    p->j = j;
    snprintf(p->stream, sizeof(p->stream), "%s", stream);
    snprintf(p->subject, sizeof(p->subject), "%s", subject);
    p->retry_ns = (retry_ms > 0 ? retry_ms : 60000) * 1000000LL;
    p->fn = stored;
    p->ctx = ctx;
    p->stop = stop;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = j->timeout_ms;
    jo.PublishAsync.MaxPending = 2 * (int64_t)p->cap + 2; /* never stalls: the ring bounds it */
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = p;
    natsStatus s = natsConnection_JetStream(&p->js, j->nc, &jo);
    cf_err err = s == NATS_OK ? pub_last(p, &p->last_seq, p->last_id, sizeof(p->last_id), errstr,
                                         errstr_size)
                              : nats_fail(s, 0, errstr, errstr_size, "no JetStream context");
    if (err != CF_OK) {
        cf_js_pub_close(p);
        return err;
    }
    *out = p;
    return CF_OK;
}

cf_err cf_js_pub_send(cf_js_pub *p, const void *data, size_t len, const char *msg_id, void *tag,
                      char *errstr, size_t errstr_size)
{
    int64_t give_up = 0;
    for (;;) {
        cf_err err = pub_progress(p, &give_up, errstr, errstr_size);
        if (err != CF_OK) {
            return err;
        }
        if (p->n < p->cap) {
            break;
        }
        if (pub_stopped(p)) {
            return cf_err_set(CF_E_STATE, errstr, errstr_size, "stopped");
        }
        pub_wait(p);
    }
    pub_entry *e = &p->e[(p->head + p->n) % p->cap];
    if (e->cap < len) {
        uint8_t *d = cf_realloc(e->data, len);
        if (d == NULL) {
            return CF_E_NOMEM;
        }
        e->data = d;
        e->cap = len;
    }
    memcpy(e->data, data, len);
    e->len = len;
    snprintf(e->msg_id, sizeof(e->msg_id), "%s", msg_id);
    e->tag = tag;
    pthread_mutex_lock(&p->mu);
    e->state = PUB_FLIGHT;
    p->n++;
    pthread_mutex_unlock(&p->mu);
    pub_submit(p, e);
    pub_reap(p);
    return CF_OK;
}

cf_err cf_js_pub_flush(cf_js_pub *p, char *errstr, size_t errstr_size)
{
    int64_t give_up = 0;
    for (;;) {
        cf_err err = pub_progress(p, &give_up, errstr, errstr_size);
        if (err != CF_OK || p->n == 0) {
            return err;
        }
        if (pub_stopped(p)) {
            return cf_err_set(CF_E_STATE, errstr, errstr_size, "stopped");
        }
        pub_wait(p);
    }
}

unsigned cf_js_pub_inflight(cf_js_pub *p)
{
    if (p == NULL || pub_reap(p)) {
        return 0; /* a failure: the next send or flush recovers */
    }
    return p->n;
}

void cf_js_pub_close(cf_js_pub *p)
{
    if (p == NULL) {
        return;
    }
    if (p->js != NULL && p->async) {
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, p->js) == NATS_OK) {
            natsMsgList_Destroy(&pending);
        }
    }
    /* No more acks can reach the entries: the pending list is gone. */
    pthread_mutex_lock(&p->mu);
    unsigned n = p->n;
    pthread_mutex_unlock(&p->mu);
    for (unsigned k = 0; k < n; k++) {
        pub_entry *e = &p->e[(p->head + k) % p->cap];
        if (p->fn != NULL) {
            p->fn(p->ctx, e->tag, e->state == PUB_STORED);
        }
    }
    jsCtx_Destroy(p->js);
    for (unsigned k = 0; k < p->cap; k++) {
        if (p->e[k].data != NULL) {
            sodium_memzero(p->e[k].data, p->e[k].cap);
        }
        cf_free(p->e[k].data);
    }
    cf_free(p->e);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    cf_free(p);
}
