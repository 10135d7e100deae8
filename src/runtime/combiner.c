/*
 * The combiner (DESIGN.md section 2): takes the k parties' partial sums of a (window, group)
 * in lockstep (the parties see identical event sequences, so they emit identical sequences
 * of groups), checks the MAC, releases groups with count >= min_count to the results,
 * writes late records, raises integrity alerts (a failed MAC, disagreeing parties) and
 * assembles checkpoints. Group names come from the gateway through the dictionary ring.
 */
#include <time.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secure_int.h"

static cf_err pmap_put(pmap *m, dict_entry *e)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        pmap nm = {cf_calloc(ncap, sizeof(dict_entry *)), ncap, 0};
        if (nm.slots == NULL) {
            return CF_E_NOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i] != NULL) {
                pmap_put(&nm, m->slots[i]);
            }
        }
        cf_free(m->slots);
        *m = nm;
    }
    size_t i = key_hash(e->key) & (m->cap - 1);
    while (m->slots[i] != NULL) {
        i = (i + 1) & (m->cap - 1);
    }
    m->slots[i] = e;
    m->n++;
    return CF_OK;
}

static const dict_entry *pmap_get(const pmap *m, const uint8_t k[CF_SA_PSEUDO_LEN])
{
    if (m->cap == 0) {
        return NULL;
    }
    size_t i = key_hash(k) & (m->cap - 1);
    while (m->slots[i] != NULL) {
        if (memcmp(m->slots[i]->key, k, CF_SA_PSEUDO_LEN) == 0) {
            return m->slots[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

static void drain_dict(cf_secure *s)
{
    void *item;
    while (cf_ring_pop(s->dict, &item) == CF_OK) {
        if (pmap_put(&s->names, item) != CF_OK) {
            cf_free(item);
        }
    }
}

/*
 * Party @p i's next message from worker slot @p w, left in place (consume with c->i++);
 * NULL when none came within @p wait_ns (0: do not wait) or the lane ended (c->done).
 */
static const party_msg *peek_msg(cf_secure *s, unsigned i, unsigned w, int64_t wait_ns)
{
    party *pa = &s->parties[i][w];
    cursor *c = &s->cur[i][w];
    while (c->b == NULL || c->i == c->b->n) {
        if (c->done) {
            return NULL;
        }
        if (c->b != NULL) {
            cf_ring_push_wait(pa->out.free_ring, c->b);
            c->b = NULL;
        }
        void *item = NULL;
        cf_err err = wait_ns > 0
                         ? cf_ring_pop_until(pa->out.full_ring, &item, cf_now_ns() + wait_ns)
                         : cf_ring_pop(pa->out.full_ring, &item);
        if (err == CF_OK) {
            c->b = item;
            c->i = 0;
            continue;
        }
        c->done = err == CF_E_STATE;
        return NULL;
    }
    return &c->b->m[c->i];
}

static void integrity_alert_party(cf_secure *s, const party_msg *m, const char *what, int culprit)
{
    s->st.integrity_alerts++;
    if (s->m_integrity != NULL) {
        cf_counter_inc(s->m_integrity);
    }
    char start[40], end[40], line[512];
    cf_window_format_time(m->start_us, start, sizeof(start));
    cf_window_format_time(m->end_us, end, sizeof(end));
    char pseudo[2 * CF_SA_PSEUDO_LEN + 1];
    for (int i = 0; i < CF_SA_PSEUDO_LEN; i++) {
        snprintf(pseudo + 2 * i, 3, "%02x", m->key[i]);
    }
    char party_txt[16] = "null";
    if (culprit >= 0) {
        snprintf(party_txt, sizeof(party_txt), "%d", culprit);
    }
    int n = snprintf(line, sizeof(line),
                     "{\"kind\":\"integrity\",\"rule_id\":\"integrity\",\"window_start\":\"%s\","
                     "\"window_end\":\"%s\",\"pseudonym\":\"%s\",\"first_index\":%llu,"
                     "\"last_index\":%llu,\"party\":%s,\"details\":\"%s\"}\n",
                     start, end, pseudo, (unsigned long long)m->first, (unsigned long long)m->last,
                     party_txt, what);
    if (n > 0 && (size_t)n < sizeof(line)) {
        outfile_write(&s->alerts, line, (size_t)n);
        cf__sink_put(s, "alerts", line, (size_t)n);
    }
    CF_LOG(CF_LOG_ERROR, "combiner", "integrity alert: window %s..%s pseudonym %s party %s: %s",
           start, end, pseudo, party_txt, what);
}

static void integrity_alert(cf_secure *s, const party_msg *m, const char *what)
{
    integrity_alert_party(s, m, what, -1);
}

/*
 * After a MAC failure: which party lied? The audit log is the authority on which events a
 * group holds: read events [first, last] back, keep those of this pseudonym inside the
 * window, and let the secagg module regenerate every seeded party's expected partial sum
 * from those sequence numbers (cf_sa_combiner_attribute). Needs the gateway key (seeds),
 * which the embedded combiner shares with the gateway; -1 when it cannot tell.
 * Events of the window that went to the late output would make every party look wrong,
 * so a verdict is only given when exactly the accused party differs (checked inside).
 */
static int attribute(cf_secure *s, const party_msg *m, const cf_sa_vec *partials)
{
    if (s->auditor == NULL || s->st.audit_dir[0] == '\0') {
        return -1;
    }
    uint64_t *seqs = NULL;
    cf_sa_ctx *ctxs = NULL;
    size_t n = 0, cap = 0;
    int bad = -1;
    cf_audit_reader *rd = NULL;
    char err[256];
    if (cf_audit_reader_open(&rd, s->st.audit_dir, s->data_key, m->first, err, sizeof(err)) !=
        CF_OK) {
        return -1;
    }
    bool done = false;
    while (!done) {
        cf_audit_entry e;
        if (cf_audit_reader_next(rd, &e, err, sizeof(err)) != CF_OK) {
            break;
        }
        if (e.type != CF_AUDIT_REC_BATCH || e.events == NULL) {
            continue;
        }
        cf_sa_ctx ctx;
        if (!meta_ctx(&e, &ctx)) {
            done = true;
            n = 0;
            break;
        }
        for (uint32_t i = 0; i < e.count; i++) {
            cf_event cv; /* convert.to: grouped on the reporting currency */
            bool conv_ok;
            const cf_event *ev = fx_event(s->fx, &e.events[i], &cv, &conv_ok);
            if (ev->seq > m->last) {
                done = true;
                break;
            }
            uint8_t gk[CF_WINDOW_GROUP_KEY_MAX], p[CF_SA_PSEUDO_LEN];
            size_t gk_len = cf_window_group_key(s->group_mask, ev, gk, sizeof(gk));
            cf_sa_pseudonymize_nocache(s->attrib_pseudo, gk, gk_len, p);
            if (memcmp(p, m->key, CF_SA_PSEUDO_LEN) != 0 || ev->ts_us < m->start_us ||
                ev->ts_us >= m->end_us) {
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                uint64_t *ns = cf_realloc(seqs, cap * sizeof(*seqs));
                seqs = ns != NULL ? ns : seqs;
                cf_sa_ctx *nc = ns != NULL ? cf_realloc(ctxs, cap * sizeof(*ctxs)) : NULL;
                ctxs = nc != NULL ? nc : ctxs;
                if (nc == NULL) {
                    done = true;
                    n = 0;
                    break;
                }
            }
            ctxs[n] = ctx;
            seqs[n++] = ev->seq;
        }
    }
    cf_audit_reader_destroy(rd);
    if (n == m->count &&
        cf_sa_auditor_attribute(s->auditor, seqs, ctxs, n, partials, s->k, &bad) != CF_OK) {
        bad = -1;
    }
    if (n != m->count) {
        bad = -1; /* the log and the parties disagree on the group: no verdict on one party */
    }
    cf_free(seqs);
    cf_free(ctxs);
    return bad;
}

static void write_late(cf_secure *s, const party_msg *m)
{
    atomic_fetch_add(&s->late_count, 1);
    if (s->m_late != NULL) {
        cf_counter_inc(s->m_late);
    }
    cf__observe_late(s->ob, m->reason);
    char ts[40], wm[40], line[320];
    cf_window_format_time(m->start_us, ts, sizeof(ts));
    cf_window_format_time(m->end_us, wm, sizeof(wm));
    const char *reason = m->reason == 0
                             ? "state limit"
                             : cf_window_late_reason_name((cf_window_late_reason)m->reason);
    int n = snprintf(line, sizeof(line),
                     "{\"index\":%llu,\"ts\":\"%s\",\"watermark\":\"%s\",\"reason\":\"%s\"}\n",
                     (unsigned long long)m->first, ts, wm, reason);
    if (n > 0 && (size_t)n < sizeof(line)) {
        outfile_write(&s->late, line, (size_t)n);
        cf__sink_put(s, "late", line, (size_t)n);
        ressig_feed(&s->rsig, true, line, (size_t)n);
    }
}

static void free_snaps(const party_msg *const *msgs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (msgs[i]->snap != NULL) {
            sodium_memzero(msgs[i]->snap, msgs[i]->snap_len); /* shares */
            cf_free(msgs[i]->snap);
        }
        ((party_msg *)msgs[i])->snap = NULL;
    }
}

/* One state per party from its @p nw workers' snapshots (msgs[w * k + i]): into @p own
 * (owned copies) when there are several, else borrowed. False when one is missing. */
static bool party_states(cf_secure *s, const party_msg *const *msgs, unsigned nw,
                         uint8_t *own[CF_KEY_PARTIES_MAX], const uint8_t *snaps[CF_KEY_PARTIES_MAX],
                         size_t snap_len[CF_KEY_PARTIES_MAX])
{
    bool ok = true;
    for (unsigned i = 0; i < s->k; i++) {
        const uint8_t *parts[CF_WORKERS_MAX];
        size_t lens[CF_WORKERS_MAX];
        for (unsigned w = 0; w < nw; w++) {
            const party_msg *m = msgs[w * s->k + i];
            ok &= m->snap != NULL && m->first == msgs[0]->first;
            parts[w] = m->snap;
            lens[w] = m->snap_len;
        }
        own[i] = NULL;
        snaps[i] = parts[0];
        snap_len[i] = lens[0];
        char err[256];
        if (ok && nw > 1) {
            ok = cf_window_snapshot_merge(parts, lens, nw, &own[i], &snap_len[i], err,
                                          sizeof(err)) == CF_OK;
            snaps[i] = own[i];
        }
    }
    return ok;
}

/* Every worker of every party reached the marker (msgs[w * k + i], @p nw workers): the
 * results and late files hold exactly what events [0, index) produced. Make them durable
 * and send the gateway the blob to log. */
static void complete_checkpoint(cf_secure *s, const party_msg *const *msgs, unsigned nw)
{
    if (s->role == CF_ROLE_COMBINER) {
        cf__net_combiner_checkpoint(s, msgs, nw);
        return;
    }
    uint64_t results_len = 0, late_len = 0, sig_len = 0, sig_seq = 0;
    if (!cf__sink_flush(s)) {
        free_snaps(msgs, s->k * nw); /* a restart must publish those lines again */
        return;
    }
    /* The signed line covers exactly what this checkpoint records as released. */
    ressig_sign(&s->rsig, msgs[0]->first);
    bool ok = outfile_sync(&s->results, &results_len) == CF_OK &&
              outfile_sync(&s->late, &late_len) == CF_OK &&
              ressig_position(&s->rsig, &sig_len, &sig_seq) == CF_OK;
    const uint8_t *snaps[CF_KEY_PARTIES_MAX];
    size_t snap_len[CF_KEY_PARTIES_MAX];
    uint8_t *own[CF_KEY_PARTIES_MAX];
    ok &= party_states(s, msgs, nw, own, snaps, snap_len);
    ckpt_blob *b = ok ? cf_malloc(sizeof(*b)) : NULL;
    size_t total = 0;
    /* msgs[0]->count: the alerts length, start_us: the gateway's alert count at the marker */
    uint8_t *data = b != NULL
                        ? cf__ckpt_encode(s, msgs[0]->first, msgs[0]->count,
                                          (uint64_t)msgs[0]->start_us, results_len, late_len,
                                          sig_len, sig_seq, snaps, snap_len, s->k, NULL, 0, &total)
                        : NULL;
    free_snaps(msgs, s->k * nw);
    for (unsigned i = 0; i < s->k; i++) {
        if (own[i] != NULL) {
            sodium_memzero(own[i], snap_len[i]);
            cf_free(own[i]);
        }
    }
    if (data == NULL) {
        cf_free(b);
        CF_LOG(CF_LOG_WARN, "combiner", "checkpoint at %llu skipped",
               (unsigned long long)msgs[0]->first);
        return;
    }
    b->data = data;
    b->len = total;
    b->index = msgs[0]->first;
    cf_ring_push_wait(s->ckpt_ring, b);
}

static bool same_group(const party_msg *a, const party_msg *b)
{
    return a->type == b->type && a->start_us == b->start_us && a->end_us == b->end_us &&
           a->count == b->count && a->first == b->first && a->last == b->last &&
           memcmp(a->key, b->key, CF_SA_PSEUDO_LEN) == 0;
}

static void release(cf_secure *s, const party_msg *const *msgs)
{
    const party_msg *m = msgs[0];
    if (m->type == MSG_SUPPRESSED) {
        s->st.suppressed++; /* every party counted fewer than min_count events */
        cf__observe_result(s->ob, false);
        return;
    }
    cf_window_row row = {.window_start_us = m->start_us,
                         .window_end_us = m->end_us,
                         .first_index = m->first,
                         .last_index = m->last,
                         .sum_valid = true};
    if (s->mode == PROT_LSA) {
        cf_sa_vec partials[CF_KEY_PARTIES_MAX];
        for (unsigned i = 0; i < s->k; i++) {
            memcpy(&partials[i], msgs[i]->value, sizeof(cf_sa_vec));
        }
        cf_sa_result res;
        char err[256];
        cf_err e =
            cf_sa_combine(s->comb, m->start_us, m->key, partials, s->k, &res, err, sizeof(err));
        if (e == CF_E_AUTH) {
            integrity_alert_party(s, m,
                                  "MAC check failed: a party altered its partial sum; "
                                  "the aggregate is withheld",
                                  attribute(s, m, partials));
            return;
        }
        if (e != CF_OK) {
            integrity_alert(s, m, "aggregate cannot be decoded");
            return;
        }
        /* The parties counted min_count or more (smaller groups come as MSG_SUPPRESSED):
         * a verified count below it, or any other, means their counts were not honest. */
        if (!res.released || (uint64_t)res.v[CF_SA_C_COUNT] != m->count) {
            integrity_alert(s, m, "secure count disagrees with the parties' event count");
            return;
        }
        row.count = (uint64_t)res.v[CF_SA_C_COUNT];
        row.sum_valid =
            cf_sa_join_amount(res.v[CF_SA_C_AMOUNT], res.v[CF_SA_C_AMOUNT_HI], &row.sum_minor);
        row.verified = res.verified;
        row.key_epoch = res.epoch;
    } else {
        cf_window_plain v;
        memcpy(&v, m->value, sizeof(v));
        row.count = m->count;
        row.sum_minor = v.sum_minor;
        row.sum_valid = v.overflow == 0;
        row.verified = false;
    }
    const dict_entry *d = pmap_get(&s->names, m->key);
    if (d == NULL) {
        drain_dict(s);
        d = pmap_get(&s->names, m->key);
    }
    /* Distributed, names come on their own stream and may trail the partial sums a little. */
    for (int waited = 0; d == NULL && s->role == CF_ROLE_COMBINER && waited < 30000; waited++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        drain_dict(s);
        d = pmap_get(&s->names, m->key);
    }
    if (s->results_csv) {
        row.group_csv = d != NULL ? d->text : "\"?\"";
    } else {
        row.group_json = d != NULL ? d->text : "{}";
    }
    row.currency = d != NULL ? d->currency : "";
    char line[CF_WINDOW_GROUP_TEXT_MAX + 512];
    size_t n = s->results_csv ? cf_window_row_csv(&row, line, sizeof(line))
                              : cf_window_row_ndjson(&row, line, sizeof(line));
    outfile_write(&s->results, line, n);
    cf__sink_put(s, "results", line, n);
    ressig_feed(&s->rsig, false, line, n);
    s->st.results++;
    cf__observe_result(s->ob, true);
}

/* Window starts released so far, ascending, pruned to those a release can still name. */
typedef struct starts {
    int64_t *v;
    size_t n, cap;
} starts;

/* Counts a window once, whichever workers release groups of it and whatever updates come
 * later (allowed lateness). */
static void count_window(cf_secure *s, starts *st, int64_t start)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (st->v[mid] < start) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < st->n && st->v[lo] == start) {
        return;
    }
    s->st.windows++;
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 256;
        int64_t *nv = cf_realloc(st->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return; /* counted; a later update of it may count again */
        }
        st->v = nv;
        st->cap = ncap;
    }
    memmove(st->v + lo + 1, st->v + lo, (st->n - lo) * sizeof(*st->v));
    st->v[lo] = start;
    st->n++;
}

/* A worker releases windows in start order, updates only within size + lateness of the
 * newest it released: older starts can go once every slot is past them. */
static void prune_starts(cf_secure *s, starts *st, int64_t min_last)
{
    int64_t keep = s->conf.window_size_ms * 1000 + s->conf.window_lateness_ms * 1000;
    if (min_last == INT64_MIN || min_last - keep <= INT64_MIN / 2) {
        return;
    }
    size_t drop = 0;
    while (drop < st->n && st->v[drop] < min_last - keep) {
        drop++;
    }
    memmove(st->v, st->v + drop, (st->n - drop) * sizeof(*st->v));
    st->n -= drop;
}

/* The combiner's view of one worker slot: the k parties' workers there, in lockstep. */
typedef struct slot_view {
    int64_t last_start, last_end;
    bool at_barrier;
    bool ended;
} slot_view;

/*
 * Takes what slot @p w has ready (all k parties' next messages) until it stalls, ends or
 * reaches a checkpoint marker. Returns true when it took something.
 */
static bool drain_slot(cf_secure *s, unsigned w, slot_view *v, int64_t wait_ns, starts *seen)
{
    bool took = false;
    const party_msg *msgs[CF_KEY_PARTIES_MAX];
    while (!v->at_barrier && !v->ended) {
        unsigned ended = 0, missing = 0;
        for (unsigned i = 0; i < s->k; i++) {
            msgs[i] = peek_msg(s, i, w, took ? 0 : wait_ns);
            ended += msgs[i] == NULL && s->cur[i][w].done;
            missing += msgs[i] == NULL && !s->cur[i][w].done;
        }
        if (ended == s->k) {
            v->ended = true;
            break;
        }
        if (missing > 0) {
            break; /* not all k partials are here yet */
        }
        if (ended > 0) {
            /* Some party stopped early: its remaining groups can never be combined. */
            const party_msg *m = NULL;
            for (unsigned i = 0; i < s->k; i++) {
                if (msgs[i] != NULL) {
                    m = m != NULL ? m : msgs[i];
                    s->cur[i][w].i++;
                }
            }
            integrity_alert(s, m, "a party's stream ended early");
            took = true;
            continue;
        }
        took = true;
        bool agree = true;
        for (unsigned i = 1; i < s->k; i++) {
            agree &= same_group(msgs[0], msgs[i]);
        }
        if (!agree) {
            integrity_alert(s, msgs[0], "parties disagree on the window, group or events");
            free_snaps(msgs, s->k);
        } else if (msgs[0]->type == MSG_CKPT) {
            v->at_barrier = true; /* taken with every other slot's (the checkpoint barrier) */
            continue;
        } else if (msgs[0]->type == MSG_LATE) {
            write_late(s, msgs[0]);
        } else {
            if (msgs[0]->start_us != v->last_start || msgs[0]->end_us != v->last_end) {
                count_window(s, seen, msgs[0]->start_us);
                v->last_start = msgs[0]->start_us;
                v->last_end = msgs[0]->end_us;
            }
            release(s, msgs);
        }
        for (unsigned i = 0; i < s->k; i++) {
            s->cur[i][w].i++;
        }
    }
    return took;
}

/*
 * Every live slot is at a checkpoint marker: take the markers, complete the checkpoint
 * (unless it is a rescale barrier only) and follow a rescale to its new number of slots.
 */
static unsigned pass_barrier(cf_secure *s, slot_view *v, unsigned nw)
{
    const party_msg *msgs[CF_KEY_PARTIES_MAX * CF_WORKERS_MAX];
    unsigned n = 0;
    bool complete = true;
    for (unsigned w = 0; w < nw; w++) {
        complete &= !v[w].ended; /* a slot that ended early has no state to give */
        for (unsigned i = 0; i < s->k && v[w].at_barrier; i++) {
            msgs[n++] = &s->cur[i][w].b->m[s->cur[i][w].i++];
        }
        v[w].at_barrier = false;
    }
    unsigned to = msgs[0]->workers;
    if (msgs[0]->update || !complete) {
        free_snaps(msgs, n); /* a rescale barrier only */
    } else {
        complete_checkpoint(s, msgs, nw);
    }
    if (to == 0 || to == nw) {
        return nw;
    }
    if (s->role == CF_ROLE_COMBINER && to > nw && !cf__net_combiner_grow(s, to)) {
        atomic_store(&s->net_failed, true); /* reported; a restart resumes at the checkpoint */
        atomic_store(&s->net_stop, true);
        return nw;
    }
    /* Retired workers send nothing more; their lanes wait, empty, for a later rescale. */
    for (unsigned w = 0; w < CF_WORKERS_MAX; w++) {
        for (unsigned i = 0; i < s->k && w >= to; i++) {
            cursor *c = &s->cur[i][w];
            if (c->b != NULL && s->role == CF_ROLE_COMBINER) {
                /* distributed: where its stream goes on if the slot is activated again */
                s->start_seq[i * CF_WORKERS_MAX + w] = c->b->stream_seq + 1;
            }
            if (c->b != NULL) {
                cf_ring_push_wait(s->parties[i][w].out.free_ring, c->b);
            }
            *c = (cursor){0};
        }
        if (w >= nw) {
            v[w] = (slot_view){.last_start = INT64_MIN, .last_end = INT64_MIN};
        }
    }
    return to;
}

void *cf__combiner_main(void *arg)
{
    cf_secure *s = arg;
    cf_thread_low_latency();
    slot_view v[CF_WORKERS_MAX];
    for (unsigned w = 0; w < CF_WORKERS_MAX; w++) {
        v[w] = (slot_view){.last_start = INT64_MIN, .last_end = INT64_MIN};
    }
    starts seen = {0};
    unsigned nw = s->workers;
    for (;;) {
        if (atomic_load(&s->net_stop)) {
            break; /* distributed: stopped; the state file says where to resume */
        }
        bool took = false;
        unsigned ended = 0, barrier = 0;
        int64_t min_last = INT64_MAX;
        for (unsigned w = 0; w < nw; w++) {
            /* One slot: wait for it as the single worker always did. Several: poll them
             * and wait a little only when none had anything. */
            took |= drain_slot(s, w, &v[w], nw == 1 ? 1000000 : 0, &seen);
            ended += v[w].ended;
            barrier += v[w].at_barrier;
            min_last = v[w].last_start < min_last ? v[w].last_start : min_last;
        }
        if (seen.n > 4096) {
            prune_starts(s, &seen, min_last);
        }
        if (ended == nw) {
            break;
        }
        if (barrier > 0 && barrier + ended == nw) {
            nw = pass_barrier(s, v, nw);
            continue;
        }
        if (!took) {
            drain_dict(s); /* keeps the gateway moving while the parties are quiet */
            if (nw > 1) {
                struct timespec ns = {0, 100000};
                nanosleep(&ns, NULL);
            }
        }
    }
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < CF_WORKERS_MAX; w++) {
            if (s->cur[i][w].b != NULL) {
                cf_ring_push_wait(s->parties[i][w].out.free_ring, s->cur[i][w].b);
                s->cur[i][w].b = NULL;
            }
        }
    }
    drain_dict(s);
    cf_free(seen.v);
    atomic_store(&s->comb_done, true);
    return NULL;
}
