/*
 * An aggregation party (DESIGN.md section 2): event-time windows over its shares. It sees
 * pseudonyms, event times, log indexes and, for party 0, value and MAC shares (parties >= 1
 * regenerate theirs from their seeds); it emits partial sums per (window, pseudonym), late
 * records and, at the gateway's checkpoint markers, its window snapshot. It reads one lane
 * and writes one lane: embedded, the gateway and the combiner are at their other ends;
 * distributed, distributed.c carries them to and from JetStream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secure_int.h"

static cf_err lsa_add(void *dst, const void *src)
{
    cf_sa_vec_add(dst, src);
    return CF_OK;
}

const cf_window_value_ops cf__lsa_value_ops = {
    .size = sizeof(cf_sa_vec), .zero = cf_sa_vec_zero, .add = lsa_add};

static party_msg *party_next_msg(party *pa)
{
    if (pa->cur_out != NULL && pa->cur_out->n == pa->cur_out->cap) {
        cf_ring_push_wait(pa->out.full_ring, pa->cur_out);
        pa->cur_out = NULL;
    }
    if (pa->cur_out == NULL) {
        pa->cur_out = take_msgs(&pa->out);
        pa->cur_out->src_seq = pa->cur_src_seq;
        pa->cur_out->part = pa->part++;
    }
    party_msg *m = &pa->cur_out->m[pa->cur_out->n++];
    memset(m, 0, sizeof(*m));
    return m;
}

static void party_flush_out(party *pa)
{
    if (pa->cur_out != NULL && pa->cur_out->n > 0) {
        cf_ring_push_wait(pa->out.full_ring, pa->cur_out);
        pa->cur_out = NULL;
    }
}

void cf__party_on_result(void *opaque, const cf_window_result *r)
{
    party *pa = opaque;
    party_msg *m = party_next_msg(pa);
    m->update = r->update;
    m->start_us = r->window_start_us;
    m->end_us = r->window_end_us;
    m->count = r->count;
    m->first = r->first_index;
    m->last = r->last_index;
    /*
     * A group below min_count leaves as a bare record: window, count and event indexes, no
     * pseudonym and no shares. The count is the party's own (it sees every event of its
     * keys), the combiner would withhold the group anyway, and it still compares the k
     * parties' records in lockstep: one party alone cannot hide a group (its count would
     * disagree) nor release one. The combiner so learns neither which groups were small nor
     * their sums, and the bytes per group drop from about 90 to 15 (most groups of a fine
     * grouping are small). debug.hide_party: a dishonest party calls its first large group
     * small.
     */
    bool hide = (int64_t)pa->index == pa->s->conf.debug_hide_party && pa->worker == 0 && !pa->hid;
    if (r->count < (uint64_t)pa->s->conf.min_count || hide) {
        pa->hid |= hide;
        m->type = MSG_SUPPRESSED;
        return;
    }
    m->type = MSG_RESULT;
    CF_ASSERT(r->key_len == CF_SA_PSEUDO_LEN);
    memcpy(m->key, r->key, CF_SA_PSEUDO_LEN);
    size_t vs = pa->s->mode == PROT_LSA ? sizeof(cf_sa_vec) : sizeof(cf_window_plain);
    memcpy(m->value, r->value, vs);
    if ((int64_t)pa->index == pa->s->conf.debug_tamper_party && pa->worker == 0 && !pa->tampered &&
        pa->s->mode == PROT_LSA) {
        /* Fault injection (debug.tamper_party): a dishonest party shifts its partial sum. */
        cf_sa_vec v;
        memcpy(&v, m->value, sizeof(v));
        v.v[CF_SA_C_AMOUNT] = cf_sa_fadd(v.v[CF_SA_C_AMOUNT], 100);
        memcpy(m->value, &v, sizeof(v));
        pa->tampered = true;
    }
}

static void emit_late(party *pa, int64_t ts_us, uint64_t seq, const uint8_t *key,
                      int64_t watermark_us, uint32_t reason)
{
    party_msg *m = party_next_msg(pa);
    m->type = MSG_LATE;
    memcpy(m->key, key, CF_SA_PSEUDO_LEN);
    m->start_us = ts_us;
    m->end_us = watermark_us;
    m->first = m->last = seq;
    m->reason = reason;
}

void cf__party_on_late(void *opaque, const cf_window_late *l)
{
    party *pa = opaque;
    emit_late(pa, l->ts_us, l->seq, l->key, l->watermark_us, (uint32_t)l->reason);
}

static void party_absorb(party *pa, const item_batch *b)
{
    if (pa->s->mode == PROT_LSA && b->n > 0) {
        cf_sa_party_bind(pa->sa, &b->ctx);
    }
    int64_t delay = pa->s->wconf.max_delay_us;
    for (uint32_t i = 0; i < b->n; i++) {
        const party_item *it = &b->it[i];
        if (b->sharded && it->prior_max_us != INT64_MIN) {
            cf_window_advance(pa->win, it->prior_max_us - delay);
        }
        uint8_t value[CF_SA_VALUE_SIZE];
        if (pa->s->mode == PROT_LSA) {
            cf_sa_party_share(pa->sa, it->seq, pa->index == 0 ? &it->share : NULL,
                              (cf_sa_vec *)(void *)value);
        } else {
            cf_window_plain v = {.sum_minor = (int64_t)it->share.v[CF_SA_C_AMOUNT]};
            memcpy(value, &v, sizeof(v));
        }
        cf_err err = cf_window_add(pa->win, it->key, CF_SA_PSEUDO_LEN, it->ts_us, it->seq, value);
        if (err == CF_E_LIMIT) {
            /* State is full. Blocking here would not help: only newer events move the
             * watermark that frees state, and they queue behind this one. So the event goes
             * to the late output (reason "state limit"), counted, never dropped silently. */
            if (pa->limit_hits++ == 0 && pa->index == 0) {
                CF_LOG(CF_LOG_WARN, "window",
                       "window state reached window.memory_mb: events go to late.ndjson with "
                       "reason \"state limit\" until windows close");
            }
            emit_late(pa, it->ts_us, it->seq, it->key, cf_window_watermark(pa->win), 0);
        }
    }
    if (b->sharded && b->max_us != INT64_MIN) {
        /* Windows close when the stream's event time passes them, also in a worker none of
         * whose keys had events in this batch. */
        cf_window_advance(pa->win, b->max_us - delay);
    }
}

/* Snapshots the window state at a checkpoint marker and hands it to the combiner, behind
 * every result the events before the marker produced. */
static void party_checkpoint(party *pa, const item_batch *ib)
{
    party_msg *m = party_next_msg(pa);
    m->type = MSG_CKPT;
    m->first = m->last = ib->ckpt_index;
    m->count = ib->ckpt_alerts_len;
    m->start_us = (int64_t)ib->ckpt_alerts;
    m->workers = ib->rescale_to;
    m->update = ib->barrier_only;
    m->reason = pa->s->role == CF_ROLE_PARTY ? pa->s->dnworkers : pa->nworkers;
    if (ib->barrier_only) {
        return;
    }
    if (cf_window_snapshot(pa->win, &m->snap, &m->snap_len) != CF_OK) {
        m->snap = NULL; /* the combiner skips a checkpoint it cannot complete */
        m->snap_len = 0;
    }
}

/* ---- workers and rescaling ---- */

cf_err cf__party_open_window(party *pa, char *errstr, size_t errstr_size)
{
    cf_window_conf wc = pa->s->wconf;
    wc.opaque = pa;
    return cf_window_create(&pa->win, &wc, errstr, errstr_size);
}

static bool owns_key(void *opaque, const uint8_t *key, size_t len)
{
    const party *pa = opaque;
    return len == CF_SA_PSEUDO_LEN && key_owner(key, pa->nworkers) == pa->worker;
}

cf_err cf__party_restore(party *pa, const uint8_t *snap, size_t len, char *errstr,
                         size_t errstr_size)
{
    return cf_window_restore_filtered(pa->win, snap, len, owns_key, pa, errstr, errstr_size);
}

static void wipe_free(uint8_t *p, size_t len)
{
    if (p != NULL) {
        sodium_memzero(p, len);
        cf_free(p);
    }
}

/* The last worker at a rescale marker: one state from all, and threads for added slots. */
static void rescale_coordinate(party *pa, rescale_xchg *x, unsigned from, unsigned to)
{
    cf_secure *s = pa->s;
    char err[256];
    cf_err e = cf_window_snapshot_merge((const uint8_t *const *)x->snaps, x->lens, from, &x->merged,
                                        &x->merged_len, err, sizeof(err));
    for (unsigned w = 0; w < from; w++) {
        wipe_free(x->snaps[w], x->lens[w]);
        x->snaps[w] = NULL;
    }
    if (e != CF_OK) {
        /* Every worker left its snapshot, so only memory can be missing here; the workers
         * cannot go on with key groups nobody owns. */
        CF_LOG(CF_LOG_ERROR, "party", "party %u cannot rescale: %s", pa->index, err);
        abort();
    }
    x->restores_left = to;
    for (unsigned w = from; w < to; w++) {
        party *nw = &s->parties[pa->index][w];
        if (nw->started) {
            pthread_join(nw->thread, NULL); /* retired by an earlier rescale */
            nw->started = false;
        }
        nw->nworkers = to;
        nw->cur_out = NULL;
        if (pthread_create(&nw->thread, NULL, cf__party_main, nw) != 0) {
            CF_LOG(CF_LOG_ERROR, "party", "party %u cannot start worker %u", pa->index, w);
            abort();
        }
        nw->started = true;
    }
    x->deposited = 0;
    x->gen++;
    pthread_cond_broadcast(&x->cv);
}

/* Takes this worker's key groups from the merged state (a worker that stays or starts). */
static void rescale_take(party *pa, rescale_xchg *x)
{
    char err[256];
    cf_window_destroy(pa->win);
    pa->win = NULL;
    if (cf__party_open_window(pa, err, sizeof(err)) != CF_OK ||
        cf__party_restore(pa, x->merged, x->merged_len, err, sizeof(err)) != CF_OK) {
        CF_LOG(CF_LOG_ERROR, "party", "party %u worker %u cannot take its state: %s", pa->index,
               pa->worker, err);
        abort();
    }
    pthread_mutex_lock(&x->mu);
    if (--x->restores_left == 0) {
        wipe_free(x->merged, x->merged_len);
        x->merged = NULL;
    }
    pthread_mutex_unlock(&x->mu);
}

/*
 * A rescale marker: the snapshot already went to the combiner (party_checkpoint); the
 * workers now hand their state over to the new set. Returns false when this worker retires.
 */
static bool party_rescale(party *pa, unsigned to)
{
    rescale_xchg *x = &pa->s->xchg[pa->index];
    unsigned from = pa->nworkers;
    uint8_t *snap = NULL;
    size_t len = 0;
    if (cf_window_snapshot(pa->win, &snap, &len) != CF_OK) {
        CF_LOG(CF_LOG_ERROR, "party", "party %u worker %u: no memory to rescale", pa->index,
               pa->worker);
        abort();
    }
    pthread_mutex_lock(&x->mu);
    x->snaps[pa->worker] = snap;
    x->lens[pa->worker] = len;
    uint64_t gen = x->gen;
    if (++x->deposited == from) {
        rescale_coordinate(pa, x, from, to);
    }
    while (x->gen == gen) {
        pthread_cond_wait(&x->cv, &x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    pa->nworkers = to;
    if (pa->worker >= to) {
        cf_window_destroy(pa->win);
        pa->win = NULL;
        return false;
    }
    rescale_take(pa, x);
    return true;
}

/* Event-time progress for operators: the watermark and how far it trails the wall clock
 * (replayed historical data shows a large, steady lag). Once per batch, party 0 only. */
static void watermark_gauges(party *pa)
{
    int64_t wm = cf_window_watermark(pa->win);
    if (wm > 0) {
        cf_gauge_set(pa->s->m_watermark, (double)wm / 1e6);
        cf_gauge_set(pa->s->m_watermark_lag, (double)(cf_wall_us() - wm) / 1e6);
    }
}

void *cf__party_main(void *arg)
{
    party *pa = arg;
    cf_thread_low_latency();
    if (pa->win == NULL) {
        rescale_take(pa, &pa->s->xchg[pa->index]); /* a worker added by a rescale */
    }
    /* With idle handling on, wake up often enough to advance the watermark on time. */
    int64_t idle_ns = pa->s->conf.window_idle_timeout_ms * 1000000;
    int64_t wait_ns = idle_ns > 0 ? (idle_ns / 4 > 1000000 ? idle_ns / 4 : 1000000) : 100000000;
    for (;;) {
        void *item = NULL;
        cf_err err = cf_ring_pop_until(pa->in.full_ring, &item, cf_now_ns() + wait_ns);
        if (err == CF_OK) {
            item_batch *ib = item;
            int64_t t0 = cf_now_ns();
            if (ib->src_seq != pa->cur_src_seq) { /* a frame may carry several batches */
                pa->cur_src_seq = ib->src_seq;
                pa->part = 0;
            }
            party_absorb(pa, ib);
            cf__autoscale_worker_delay(pa->s, ib->n);
            if (pa->index == 0 && pa->worker == 0 && pa->s->m_watermark != NULL) {
                watermark_gauges(pa);
            }
            if (ib->ckpt && !ib->activate) {
                party_checkpoint(pa, ib);
            }
            unsigned rescale_to = ib->ckpt ? ib->rescale_to : 0, from = ib->rescale_from;
            uint64_t index = ib->ckpt_index;
            bool activate = ib->activate;
            uint32_t n = ib->n;
            cf_ring_push_wait(pa->in.free_ring, item);
            party_flush_out(pa);
            atomic_fetch_add_explicit(&pa->processed, n, memory_order_relaxed);
            atomic_fetch_add_explicit(&pa->busy_ns, (uint64_t)(cf_now_ns() - t0),
                                      memory_order_relaxed);
            if (rescale_to != 0 && pa->s->role == CF_ROLE_PARTY &&
                !cf__net_party_rescale(pa, from, rescale_to, index, activate)) {
                break; /* retired: its key groups went to the other processes */
            }
            if (rescale_to != 0 && pa->s->role != CF_ROLE_PARTY && !party_rescale(pa, rescale_to)) {
                return NULL; /* retired: its key groups went to the others */
            }
            continue;
        }
        if (err == CF_E_STATE) {
            break; /* closed and drained */
        }
        /* Idle: let processing time advance the watermark (window.idle_timeout_ms). */
        if (cf_window_tick(pa->win, cf_now_ns())) {
            party_flush_out(pa);
        }
    }
    if (!atomic_load(&pa->s->net_stop) && pa->win != NULL) {
        cf_window_flush(pa->win); /* end of input, not a stop: every window is complete */
    }
    party_flush_out(pa);
    cf_ring_close(pa->out.full_ring);
    return NULL;
}
