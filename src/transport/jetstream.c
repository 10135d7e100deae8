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

cf_err cf_js_stream_msgs(cf_js *j, const char *name, uint64_t *msgs, char *errstr,
                         size_t errstr_size)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, j->js, name, NULL, &jerr);
    if (s != NATS_OK) {
        return nats_fail_conn(j->nc, s, jerr, errstr, errstr_size, "stream info");
    }
    *msgs = si->State.Msgs;
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
