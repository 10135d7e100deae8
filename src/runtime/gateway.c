/*
 * The trusted gateway's per-batch work (DESIGN.md sections 2-5): compliance rules on
 * plaintext, the audit record (durable before anything else happens to the batch),
 * pseudonyms and secret shares for the parties, group names for the combiner, checkpoint and
 * rescale markers, signed tree heads. secure.c opens, recovers and closes a run for any role;
 * party.c and combiner.c are the other roles.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "confide/audit.h"
#include "confide/metrics.h"
#include "confide/rules.h"
#include "confide/secagg.h"
#include "secure.h"
#include "secure_int.h"

static bool make_room(cf_secure *s, unsigned want);

static cf_err pset_insert(pset *p, const uint8_t k[CF_SA_PSEUDO_LEN], bool *added)
{
    if ((p->n + 1) * 2 > p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 1024;
        pset np = {cf_calloc(ncap, CF_SA_PSEUDO_LEN), cf_calloc(ncap, 1), ncap, 0};
        if (np.keys == NULL || np.used == NULL) {
            cf_free(np.keys);
            cf_free(np.used);
            return CF_E_NOMEM;
        }
        for (size_t i = 0; i < p->cap; i++) {
            if (p->used[i]) {
                bool dummy;
                pset_insert(&np, p->keys[i], &dummy);
            }
        }
        cf_free(p->keys);
        cf_free(p->used);
        *p = np;
    }
    size_t i = key_hash(k) & (p->cap - 1);
    while (p->used[i]) {
        if (memcmp(p->keys[i], k, CF_SA_PSEUDO_LEN) == 0) {
            *added = false;
            return CF_OK;
        }
        i = (i + 1) & (p->cap - 1);
    }
    p->used[i] = 1;
    memcpy(p->keys[i], k, CF_SA_PSEUDO_LEN);
    p->n++;
    *added = true;
    return CF_OK;
}

void cf__gateway_count_alert(cf_secure *s, const cf_rule_hit *hit)
{
    if (hit->rule < CF_RULES_MAX && s->m_alerts[hit->rule] != NULL) {
        cf_counter_inc(s->m_alerts[hit->rule]);
    }
}

static cf_err ensure_scratch(cf_secure *s, uint32_t n)
{
    if (n <= s->scratch_cap) {
        return CF_OK;
    }
    cf_free(s->verdict_buf);
    cf_free(s->verdicts);
    s->verdict_buf = cf_malloc((size_t)n * CF_VERDICT_ENCODED_MAX);
    s->verdicts = cf_calloc(n, sizeof(cf_audit_bytes));
    if (s->verdict_buf == NULL || s->verdicts == NULL) {
        s->scratch_cap = 0;
        return CF_E_NOMEM;
    }
    s->scratch_cap = n;
    return CF_OK;
}

void cf_secure_gwbatch_free(cf_secure_gwbatch *g)
{
    cf_free(g->hits);
    memset(g, 0, sizeof(*g));
}

static cf_err keep_hit(cf_secure_gwbatch *g, uint32_t ev, const cf_rule_hit *hit)
{
    if (g->n_hits == g->hits_cap) {
        uint32_t cap = g->hits_cap ? 2 * g->hits_cap : 64;
        cf_secure_hit *nh = cf_realloc(g->hits, (size_t)cap * sizeof(*nh));
        if (nh == NULL) {
            return CF_E_NOMEM;
        }
        g->hits = nh;
        g->hits_cap = cap;
    }
    g->hits[g->n_hits++] = (cf_secure_hit){.ev = ev, .hit = *hit};
    return CF_OK;
}

/* The rules over the batch: verdicts for the audit log; the hits are kept in @p g and their
 * alerts written once the batch is durable (write_alerts). */
static cf_err screen(cf_secure *s, cf_batch *b, cf_secure_gwbatch *g)
{
    static const uint8_t pass[2] = {1, 0}; /* cf_verdict_encode of "no hits" */
    g->n_hits = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        s->verdicts[i].data = pass;
        s->verdicts[i].len = sizeof(pass);
        if (s->rules == NULL) {
            continue;
        }
        cf_verdict v;
        cf_rules_eval(s->rules, &b->ev[i], &v);
        if (v.n == 0) {
            continue;
        }
        uint8_t *vb = s->verdict_buf + (size_t)i * CF_VERDICT_ENCODED_MAX;
        s->verdicts[i].data = vb;
        s->verdicts[i].len = cf_verdict_encode(s->rules, &v, vb, CF_VERDICT_ENCODED_MAX);
        for (uint32_t h = 0; h < v.n; h++) {
            if (keep_hit(g, i, &v.hits[h]) != CF_OK) {
                return CF_E_NOMEM;
            }
        }
    }
    return CF_OK;
}

/* The alerts of the hits screen kept, in event order. */
static void write_alerts(cf_secure *s, const cf_batch *b, const cf_secure_gwbatch *g)
{
    for (uint32_t k = 0; k < g->n_hits; k++) {
        const cf_secure_hit *h = &g->hits[k];
        char line[1024];
        size_t n = cf_rules_alert_ndjson(s->rules, &b->ev[h->ev], &h->hit, line, sizeof(line));
        outfile_write(&s->alerts, line, n);
        cf__sink_put(s, "alerts", line, n);
        s->st.alerts++;
        cf__gateway_count_alert(s, &h->hit);
    }
}

static cf_err announce(cf_secure *s, const uint8_t *gk, size_t gk_len,
                       const uint8_t pseudo[CF_SA_PSEUDO_LEN])
{
    bool added = false;
    cf_err err = pset_insert(&s->announced, pseudo, &added);
    if (err != CF_OK || !added) {
        return err;
    }
    char text[CF_WINDOW_GROUP_TEXT_MAX];
    size_t n = s->results_csv ? cf_window_group_csv(s->group_mask, gk, gk_len, text, sizeof(text))
                              : cf_window_group_json(s->group_mask, gk, gk_len, text, sizeof(text));
    dict_entry *d = cf_malloc(sizeof(*d) + n + 1);
    if (d == NULL) {
        return CF_E_NOMEM;
    }
    memcpy(d->key, pseudo, CF_SA_PSEUDO_LEN);
    memcpy(d->text, text, n);
    d->text[n] = '\0';
    cf_window_group_currency(s->group_mask, gk, gk_len, d->currency);
    cf_ring_push_wait(s->dict, d);
    return CF_OK;
}

/* The event's pseudonymous group key (into @p pseudo when not NULL); tells the combiner the
 * group's name the first time it is seen. */
cf_err cf__gateway_announce(cf_secure *s, const cf_event *ev, uint8_t *pseudo)
{
    cf_event cv;
    if (s->fx != NULL && strcmp(ev->currency, cf_fx_target(s->fx)) != 0) {
        cv = *ev; /* convert.to: the group's currency is the reporting currency */
        memcpy(cv.currency, cf_fx_target(s->fx), 4);
        ev = &cv;
    }
    uint8_t gk[CF_WINDOW_GROUP_KEY_MAX];
    uint8_t p[CF_SA_PSEUDO_LEN];
    size_t gk_len = cf_window_group_key(s->group_mask, ev, gk, sizeof(gk));
    cf_sa_pseudonymize(s->pseudo, gk, gk_len, pseudo != NULL ? pseudo : p);
    return announce(s, gk, gk_len, pseudo != NULL ? pseudo : p);
}

cf_err cf__gateway_protect(cf_secure *s, const cf_event *events, uint32_t n, const cf_sa_ctx *ctx,
                           char *errstr, size_t errstr_size)
{
    /* One batch per worker of every party, empty ones too: they carry the stream's event
     * time to workers none of whose keys had events, so their windows close on time. */
    item_batch *ib[CF_KEY_PARTIES_MAX][CF_WORKERS_MAX];
    unsigned nw = s->workers;
    for (unsigned p = 0; p < s->k; p++) {
        for (unsigned w = 0; w < nw; w++) {
            ib[p][w] = take_items(&s->parties[p][w].in);
            ib[p][w]->ctx = *ctx;
            ib[p][w]->sharded = nw > 1;
        }
    }
    if (s->mode == PROT_LSA) {
        cf_sa_gateway_bind(s->gw, ctx);
    }
    for (uint32_t i = 0; i < n; i++) {
        cf_event cv;
        bool ok;
        const cf_event *ev = fx_event(s->fx, &events[i], &cv, &ok);
        if (!ok) { /* the decode stage dead-letters these: a bug if we get here */
            return cf_err_set(CF_E_STATE, errstr, errstr_size, "event %llu has no %s rate",
                              (unsigned long long)ev->event_id, cf_fx_target(s->fx));
        }
        party_item it = {.ts_us = ev->ts_us, .seq = ev->seq, .prior_max_us = s->gw_max_ts};
        if (ev->ts_us > s->gw_max_ts) {
            s->gw_max_ts = ev->ts_us;
        }
        cf_err err = cf__gateway_announce(s, ev, it.key);
        if (err != CF_OK) {
            return cf_err_set(err, errstr, errstr_size, "out of memory for group names");
        }
        if (s->mode == PROT_LSA) {
            int64_t vals[CF_SA_DIM_MAX];
            if ((err = cf_sa_event_values(ev->amount_minor, s->sa_opts.dim, vals)) != CF_OK ||
                (err = cf_sa_gateway_split(s->gw, ev->ts_us, ev->seq, vals, &it.share)) != CF_OK) {
                /* every int64 amount has a share: a bug if we get here */
                return cf_err_set(err, errstr, errstr_size, "cannot split event %llu",
                                  (unsigned long long)ev->event_id);
            }
        } else {
            it.share.v[CF_SA_C_AMOUNT] = (uint64_t)ev->amount_minor;
        }
        unsigned w = key_owner(it.key, nw);
        ib[0][w]->it[ib[0][w]->n++] = it;
        memset(&it.share, 0, sizeof(it.share)); /* parties >= 1 get metadata only */
        for (unsigned p = 1; p < s->k; p++) {
            ib[p][w]->it[ib[p][w]->n++] = it;
        }
    }
    for (unsigned p = 0; p < s->k; p++) {
        for (unsigned w = 0; w < nw; w++) {
            ib[p][w]->max_us = s->gw_max_ts;
            cf_ring_push_wait(s->parties[p][w].in.full_ring, ib[p][w]);
        }
    }
    return CF_OK;
}

/* Hands the signed tree head of every batch to the sinks: tree_heads.ndjson lets whoever
 * consumes the results check them against the log (confide audit prove/verify-proof)
 * without access to it. Append-only; a restart appends the heads it signs. */
/* Hands the newest head to a witness: WITNESS_DIR/<log id>.checkpoint, replaced atomically
 * (a witness that reads it sees one whole note). Best effort: a witness that is down must not
 * stop the pipeline; it catches up with the newest head, which covers every earlier one. */
static void publish_head(cf_secure *s, const cf_audit_sth *sth, const char *note, size_t len)
{
    char lid[2 * CF_AUDIT_LOG_ID_LEN + 1], path[CF_CONF_STR_MAX + 64], tmp[CF_CONF_STR_MAX + 80];
    sodium_bin2hex(lid, sizeof(lid), sth->log_id, sizeof(sth->log_id));
    snprintf(path, sizeof(path), "%s/%s.checkpoint", s->conf.audit_witness_dir, lid);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write(fd, note, len) == (ssize_t)len;
    if (fd >= 0) {
        ok = close(fd) == 0 && ok;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (!s->witness_warned) {
            CF_LOG(CF_LOG_WARN, "audit", "cannot publish tree heads to %s: %s",
                   s->conf.audit_witness_dir, strerror(errno));
            s->witness_warned = true;
        }
    }
}

static void write_tree_head(cf_secure *s, const cf_audit_sth *sth)
{
    char note[CF_AUDIT_NOTE_MAX];
    size_t nl = cf_audit_sth_note(sth, s->sign_pk, note, sizeof(note));
    if (s->conf.audit_witness_dir[0] != '\0' && nl > 0) {
        publish_head(s, sth, note, nl);
    }
    if (s->heads_fd < 0) {
        return;
    }
    /* One line per head: the fields of the head and its C2SP signed note ("checkpoint"),
     * which `confide audit verify --trusted-head` and the witness read. */
    char line[CF_AUDIT_HEAD_LINE_MAX];
    size_t n = cf_audit_sth_json_line(sth, s->sign_pk, line, sizeof(line));
    if (n > 0 && write(s->heads_fd, line, n) != (ssize_t)n) {
        CF_LOG(CF_LOG_WARN, "audit", "cannot append to tree_heads.ndjson");
    }
}

/* Logs the checkpoints the combiner completed. @locality gateway thread */
void cf__gateway_checkpoints(cf_secure *s)
{
    void *item;
    while (s->ckpt_ring != NULL && cf_ring_pop(s->ckpt_ring, &item) == CF_OK) {
        ckpt_blob *b = item;
        if (s->audit != NULL && cf_audit_checkpoint(s->audit, b->index, b->data, b->len) != CF_OK) {
            CF_LOG(CF_LOG_WARN, "audit", "checkpoint at %llu could not be written",
                   (unsigned long long)b->index);
        } else if (s->pg != NULL) {
            resume_state r = {.blob = b->data}; /* durable: the tables may follow */
            if (cf__ckpt_parse(&r, b->len, NULL, 0) == CF_OK) {
                pgsink_pos pos = {b->index, {r.alerts_len, r.results_len, r.late_len}};
                pgsink_durable(s->pg, &pos);
            }
        }
        sodium_memzero(b->data, b->len); /* window state of the parties: shares */
        cf_free(b->data);
        cf_free(b);
    }
}

/* A checkpoint marker behind the last batch of every worker's lane; with @p rescale_to the
 * party's workers then become that many (events after it go to the new owners). */
static void send_markers_rescale(cf_secure *s, uint64_t index, uint64_t alerts_len, uint64_t alerts,
                                 unsigned rescale_to, bool barrier_only)
{
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->workers; w++) {
            item_batch *m = take_items(&s->parties[i][w].in);
            m->ckpt = true;
            m->ckpt_index = index;
            m->ckpt_alerts_len = alerts_len;
            m->ckpt_alerts = alerts;
            m->rescale_to = rescale_to;
            m->rescale_from = s->workers;
            m->barrier_only = barrier_only;
            cf_ring_push_wait(s->parties[i][w].in.full_ring, m);
        }
        /* Distributed, an added worker is a process that waits on its own stream: this
         * marker tells it where its key groups start (embedded, the last worker at the
         * marker starts its thread). */
        for (unsigned w = s->workers; w < rescale_to && s->role == CF_ROLE_GATEWAY; w++) {
            item_batch *m = take_items(&s->parties[i][w].in);
            m->ckpt = true;
            m->ckpt_index = index;
            m->rescale_to = rescale_to;
            m->rescale_from = s->workers;
            m->barrier_only = true;
            m->activate = true;
            cf_ring_push_wait(s->parties[i][w].in.full_ring, m);
        }
    }
    if (rescale_to != 0) {
        CF_LOG(CF_LOG_INFO, "party", "rescaling from %u to %u workers per party at index %llu",
               s->workers, rescale_to, (unsigned long long)index);
        int64_t now = cf_now_ns();
        s->wk_ns += (double)s->workers * (double)(now - s->wk_t_ns);
        s->wk_t_ns = now;
        s->workers = rescale_to;
        s->st.rescales++;
        atomic_store(&s->cur_workers, rescale_to);
        if (s->m_workers != NULL) {
            cf_gauge_set(s->m_workers, (double)rescale_to);
        }
    }
}

void cf__gateway_markers(cf_secure *s, uint64_t index, uint64_t alerts_len, uint64_t alerts)
{
    send_markers_rescale(s, index, alerts_len, alerts, 0, false);
}

/* The workers per party the gateway should move to now (0: keep): a cf_secure_rescale
 * request, or the next step of debug.rescale_at. @locality gateway thread */
static unsigned rescale_wanted(cf_secure *s, uint64_t index)
{
    unsigned want = atomic_exchange(&s->want_workers, 0);
    while (s->plan_next < s->nplan && index >= s->plan[s->plan_next].at) {
        want = s->plan[s->plan_next++].to;
    }
    bool parties = s->role == CF_ROLE_ALL || s->role == CF_ROLE_GATEWAY;
    if (want == 0 || want == s->workers || !parties || s->mode == PROT_NONE) {
        return 0;
    }
    return make_room(s, want) ? want : 0;
}

/* Lanes (and, distributed, streams and senders) for @p want workers per party. */
static bool make_room(cf_secure *s, unsigned want)
{
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = s->workers; w < want; w++) {
            if (cf__worker_lanes(s, i, w) != CF_OK) {
                CF_LOG(CF_LOG_ERROR, "party", "no memory for %u workers: staying at %u", want,
                       s->workers);
                return false;
            }
        }
    }
    if (s->role == CF_ROLE_GATEWAY && !cf__net_gateway_grow(s, want)) {
        CF_LOG(CF_LOG_ERROR, "party", "cannot add streams for %u workers: staying at %u", want,
               s->workers);
        return false;
    }
    return true;
}

static void rescales_path(const cf_secure *s, char *out, size_t n)
{
    snprintf(out, n, "%s/rescales.log", s->conf.output_dir);
}

/* Distributed gateway: the rescale is on disk before its markers go out (a restart makes
 * it again at the same index). False: it could not be written, so it is not made. */
static bool record_rescale(cf_secure *s, uint64_t index, unsigned to, bool barrier)
{
    if (s->role != CF_ROLE_GATEWAY || s->replaying) {
        return true;
    }
    char path[CF_CONF_STR_MAX + 32], line[64];
    rescales_path(s, path, sizeof(path));
    int n = snprintf(line, sizeof(line), "%llu %u %d\n", (unsigned long long)index, to, barrier);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, line, (size_t)n) == n && fdatasync(fd) == 0;
    if (fd >= 0) {
        ok = close(fd) == 0 && ok;
    }
    if (!ok) {
        CF_LOG(CF_LOG_ERROR, "party", "cannot record the rescale in %s: staying at %u workers",
               path, s->workers);
    }
    return ok;
}

/* A restarted distributed gateway: the rescales of the run so far, to make again while it
 * replays its log; a fresh log starts a fresh list. */
cf_err cf__gateway_load_rescales(cf_secure *s, char *errstr, size_t errstr_size)
{
    char path[CF_CONF_STR_MAX + 32];
    rescales_path(s, path, sizeof(path));
    if (s->role != CF_ROLE_GATEWAY) {
        return CF_OK;
    }
    if (s->resume_index == 0) {
        return unlink(path) == 0 || errno == ENOENT
                   ? CF_OK
                   : cf_err_errno(errno, errstr, errstr_size, "cannot remove %s", path);
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT ? CF_OK
                               : cf_err_errno(errno, errstr, errstr_size, "cannot open %s", path);
    }
    unsigned long long at;
    unsigned to;
    int barrier;
    cf_err err = CF_OK;
    while (err == CF_OK && fscanf(f, "%llu %u %d", &at, &to, &barrier) == 3) {
        if (s->nredo == sizeof(s->redo) / sizeof(s->redo[0]) || to < 1 || to > CF_WORKERS_MAX ||
            (s->nredo > 0 && at < s->redo[s->nredo - 1].at)) {
            err =
                cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                           "%s: line %u is not a rescale after the one before", path, s->nredo + 1);
            break;
        }
        s->redo[s->nredo++] = (struct redo_rescale){at, to, barrier != 0};
    }
    fclose(f);
    /* debug.rescale_at steps already made are not made twice */
    while (s->nredo > 0 && s->plan_next < s->nplan &&
           s->plan[s->plan_next].at <= s->redo[s->nredo - 1].at) {
        s->plan_next++;
    }
    return err;
}

/* Replaying: makes the recorded rescales at or before @p index again (their markers go
 * where the streams lack them; the senders skip the rest). With @p ckpt, @p index is a
 * checkpoint record's: a rescale recorded there travels in that checkpoint's marker, as
 * it did. Returns whether a marker at @p index was sent. */
bool cf__gateway_redo_rescales(cf_secure *s, uint64_t index, bool ckpt)
{
    bool sent = false;
    while (s->redo_next < s->nredo && s->redo[s->redo_next].at <= index) {
        const struct redo_rescale *r = &s->redo[s->redo_next];
        if (ckpt && r->at == index && r->barrier) {
            break; /* made after the checkpoint's own marker, before the next events */
        }
        s->redo_next++;
        if (r->to == s->workers || !make_room(s, r->to)) {
            continue;
        }
        sent |= r->at == index && ckpt;
        send_markers_rescale(s, r->at, 0, 0, r->to, r->barrier);
    }
    return sent;
}

cf_err cf_secure_rescale(cf_secure *s, unsigned workers)
{
    if (workers < 1 || workers > CF_WORKERS_MAX) {
        return CF_E_INVAL;
    }
    if ((s->role != CF_ROLE_ALL && s->role != CF_ROLE_GATEWAY) || s->mode == PROT_NONE) {
        return CF_E_STATE; /* no party workers, or no gateway that routes to them */
    }
    atomic_store(&s->want_workers, workers);
    return CF_OK;
}

/* Every audit.checkpoint_events events, asks for a checkpoint at the current log index:
 * with parties, a marker travels behind the last batch and the combiner assembles the
 * state; without, the gateway's own positions are all there is. @locality gateway thread */
static cf_err maybe_checkpoint(cf_secure *s, uint64_t index, char *errstr, size_t errstr_size)
{
    unsigned rescale_to = rescale_wanted(s, index);
    bool barrier = s->audit == NULL || index == s->last_ckpt_index;
    if (rescale_to != 0 && !record_rescale(s, index, rescale_to, barrier)) {
        rescale_to = 0;
    }
    if (rescale_to != 0 && barrier) {
        /* Nothing to log (or logged at this index already): the marker only rescales. */
        send_markers_rescale(s, index, 0, 0, rescale_to, true);
        return CF_OK;
    }
    if (s->audit == NULL || (rescale_to == 0 && (s->conf.audit_checkpoint_events == 0 ||
                                                 index - s->last_ckpt_index <
                                                     (uint64_t)s->conf.audit_checkpoint_events))) {
        return CF_OK;
    }
    s->last_ckpt_index = index;
    uint64_t alerts_len = 0;
    if (s->mode == PROT_NONE || s->role == CF_ROLE_GATEWAY) {
        if (!cf__sink_flush(s)) {
            return CF_OK; /* no checkpoint: a restart publishes the alerts since the last */
        }
    }
    if (outfile_sync(&s->alerts, &alerts_len) != CF_OK) {
        return cf_err_set(CF_E_IO, errstr, errstr_size, "cannot sync alerts.ndjson");
    }
    if (s->mode == PROT_NONE || s->role == CF_ROLE_GATEWAY) {
        /* The gateway's own positions; distributed parties and the combiner keep theirs in
         * their state files at the marker that follows. */
        size_t len = 0;
        uint8_t *blob = cf__ckpt_encode(s, index, alerts_len, s->st.alerts, 0, 0, 0, 0, NULL, NULL,
                                        0, NULL, 0, &len);
        if (s->group_commit && blob != NULL) {
            /* The log has one writer (the gateway's write step): it writes the checkpoint
             * with the next batch, as it writes the combiner's (write_checkpoints). */
            ckpt_blob *cb = cf_malloc(sizeof(*cb));
            if (cb == NULL) {
                cf_free(blob);
                return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "checkpoint: out of memory");
            }
            *cb = (ckpt_blob){.data = blob, .len = len, .index = index};
            cf_ring_push_wait(s->ckpt_ring, cb);
            if (s->mode == PROT_NONE) {
                return CF_OK;
            }
            goto markers;
        }
        cf_err err = blob != NULL ? cf_audit_checkpoint(s->audit, index, blob, len) : CF_E_NOMEM;
        cf_free(blob);
        if (err != CF_OK) {
            return cf_err_set(err, errstr, errstr_size, "checkpoint write failed");
        }
        pgsink_pos pos = {index, {alerts_len, 0, 0}};
        pgsink_durable(s->pg, &pos);
        if (s->mode == PROT_NONE) {
            return CF_OK;
        }
    }
markers:;
    /* Distributed, the gateway keeps its own positions (above) and a marker says only
     * where: a replayed marker must equal the original in every party's stream. */
    bool own = s->role == CF_ROLE_GATEWAY;
    send_markers_rescale(s, index, own ? 0 : alerts_len, own ? 0 : s->st.alerts, rescale_to, false);
    return CF_OK;
}

void cf_secure_reload(cf_secure *s)
{
    if (s->rules == NULL) {
        return;
    }
    char err[256];
    if (cf_rules_reload_lists(s->rules, err, sizeof(err)) != CF_OK) {
        CF_LOG(CF_LOG_ERROR, "rules", "list reload failed, keeping the old lists: %s", err);
    } else {
        CF_LOG(CF_LOG_INFO, "rules", "blocked-party lists reloaded");
    }
}

/* convert.to: appends a META_FX_RATE entry for every distinct rate the batch's events use
 * (not the identity), so the log records the rate each event was converted with. */
static cf_err meta_rates(cf_secure *s, const cf_batch *b, uint8_t *meta, size_t *len, char *errstr,
                         size_t errstr_size)
{
    const cf_fx_rate *used[META_FX_MAX];
    size_t n = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        const cf_fx_rate *r = cf_fx_find(s->fx, b->ev[i].currency, b->ev[i].ts_us);
        if (r == NULL || r->line == 0) {
            continue; /* the target itself (identity); no rate is dead-lettered before */
        }
        size_t k = 0;
        while (k < n && used[k] != r) {
            k++;
        }
        if (k < n) {
            continue;
        }
        if (n == META_FX_MAX) {
            return cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                              "a batch uses more than %d distinct exchange rates (the audit log "
                              "records each): lower pipeline.batch_max",
                              (int)META_FX_MAX);
        }
        used[n++] = r;
        meta[*len] = META_FX_RATE;
        meta[*len + 1] = CF_FX_RATE_ENC_LEN;
        cf_fx_rate_encode(r, meta + *len + 2);
        *len += 2 + CF_FX_RATE_ENC_LEN;
    }
    return CF_OK;
}

void cf_secure_group_commit(cf_secure *s)
{
    if (s->audit != NULL) {
        cf_audit_set_group_commit(s->audit, true);
    }
    s->group_commit = true;
}

cf_err cf_secure_gateway_write(cf_secure *s, cf_batch *b, const cf_audit_dead *dead,
                               uint32_t n_dead, cf_secure_gwbatch *g, char *errstr,
                               size_t errstr_size)
{
    g->audited = false;
    g->n_hits = 0;
    if (s->audit == NULL) {
        n_dead = 0; /* no log: the dead-letter file is all there is */
    }
    if (b->n == 0 && n_dead == 0) {
        return CF_OK;
    }
    if (atomic_load(&s->net_failed)) {
        return cf_err_set(CF_E_TRANSPORT, errstr, errstr_size,
                          "the JetStream transport failed (see the error above); a restart "
                          "resumes from the audit log");
    }
    if (pgsink_failed(s->pg, errstr, errstr_size)) {
        return CF_E_TRANSPORT; /* named in errstr; the files and the log are intact */
    }
    cf_err err = ensure_scratch(s, b->cap);
    if (err == CF_OK) {
        err = screen(s, b, g);
    }
    if (err != CF_OK) {
        return cf_err_set(err, errstr, errstr_size, "out of memory");
    }
    atomic_fetch_add_explicit(&s->gw_events, b->n, memory_order_relaxed);
    g->end_index = atomic_load(&s->gw_events);
    if (s->audit != NULL) {
        /* In input order: each dead letter takes the log index before the event it
         * precedes, so an event's seq (= its log index) is its position among the records
         * read, whatever the batching. */
        uint64_t idx = cf_audit_next_index(s->audit);
        uint64_t base = idx;
        for (uint32_t i = 0, j = 0; i < b->n; i++) {
            while (j < n_dead && dead[j].before <= i) {
                idx++;
                j++;
            }
            b->ev[i].seq = idx++;
        }
        uint64_t first = 0;
        uint8_t meta[CF_AUDIT_META_MAX];
        cf_audit_bytes mb = {.data = meta, .len = meta_encode(&s->ctx, meta)};
        if (s->fx != NULL &&
            (err = meta_rates(s, b, meta, &mb.len, errstr, errstr_size)) != CF_OK) {
            return err;
        }
        err = cf_audit_append_dead(s->audit, dead, n_dead, b->ev, b->n, s->verdicts, &mb, &first,
                                   &g->sth);
        if (err != CF_OK) {
            char why[CF_CONF_STR_MAX + 128];
            return cf_err_set(err, errstr, errstr_size, "audit log append failed: %s",
                              err == CF_E_IO ? cf_audit_last_error(s->audit, why, sizeof(why))
                                             : cf_strerror(err));
        }
        CF_ASSERT(first == base && cf_audit_next_index(s->audit) == base + b->n + n_dead);
        s->st.audited += b->n;
        s->st.dead_audited += n_dead;
        g->audited = true;
        g->ticket = cf_audit_written(s->audit);
        g->end_index = cf_audit_next_index(s->audit);
        if (s->group_commit) {
            cf__gateway_checkpoints(s); /* the log's one writer writes them */
        }
    }
    return CF_OK;
}

cf_err cf_secure_gateway_durable(cf_secure *s, uint64_t ticket, char *errstr, size_t errstr_size)
{
    if (s->audit == NULL) {
        return CF_OK;
    }
    cf_err err = cf_audit_commit(s->audit, ticket);
    if (err != CF_OK) {
        char why[CF_CONF_STR_MAX + 128];
        return cf_err_set(err, errstr, errstr_size, "audit log sync failed: %s",
                          cf_audit_last_error(s->audit, why, sizeof(why)));
    }
    return CF_OK;
}

cf_err cf_secure_gateway_forward(cf_secure *s, cf_batch *b, const cf_secure_gwbatch *g,
                                 char *errstr, size_t errstr_size)
{
    cf_err err;
    if (g->audited && !cf_audit_is_durable(s->audit, g->ticket)) {
        /* the guarantee: nothing is forwarded before its audit record is durable */
        return cf_err_set(CF_E_STATE, errstr, errstr_size,
                          "internal error: batch at log index %llu forwarded before it was "
                          "durable",
                          (unsigned long long)g->end_index);
    }
    write_alerts(s, b, g);
    if (g->audited) {
        write_tree_head(s, &g->sth);
        cf__observe_audit_head(s->ob, &g->sth);
    }
    if (b->n == 0) {
        return CF_OK; /* dead letters only: nothing to protect, no checkpoint due */
    }
    if (s->mode != PROT_NONE &&
        (err = cf__gateway_protect(s, b->ev, b->n, &s->ctx, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    if (!s->group_commit) {
        cf__gateway_checkpoints(s);
    }
    return maybe_checkpoint(s, g->end_index, errstr, errstr_size);
}

cf_err cf_secure_gateway(cf_secure *s, cf_batch *b, const cf_audit_dead *dead, uint32_t n_dead,
                         char *errstr, size_t errstr_size)
{
    cf_err err = cf_secure_gateway_write(s, b, dead, n_dead, &s->gw_sync, errstr, errstr_size);
    if (err == CF_OK && (b->n > 0 || s->gw_sync.audited)) {
        err = cf_secure_gateway_durable(s, s->gw_sync.ticket, errstr, errstr_size);
        if (err == CF_OK) {
            err = cf_secure_gateway_forward(s, b, &s->gw_sync, errstr, errstr_size);
        }
    }
    return err;
}
