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
    m->type = MSG_RESULT;
    m->update = r->update;
    CF_ASSERT(r->key_len == CF_SA_PSEUDO_LEN);
    memcpy(m->key, r->key, CF_SA_PSEUDO_LEN);
    m->start_us = r->window_start_us;
    m->end_us = r->window_end_us;
    m->count = r->count;
    m->first = r->first_index;
    m->last = r->last_index;
    size_t vs = pa->s->mode == PROT_LSA ? sizeof(cf_sa_vec) : sizeof(cf_window_plain);
    memcpy(m->value, r->value, vs);
    if ((int64_t)pa->index == pa->s->conf.debug_tamper_party && !pa->tampered &&
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
    for (uint32_t i = 0; i < b->n; i++) {
        const party_item *it = &b->it[i];
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
    if (cf_window_snapshot(pa->win, &m->snap, &m->snap_len) != CF_OK) {
        m->snap = NULL; /* the combiner skips a checkpoint it cannot complete */
        m->snap_len = 0;
    }
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
    /* With idle handling on, wake up often enough to advance the watermark on time. */
    int64_t idle_ns = pa->s->conf.window_idle_timeout_ms * 1000000;
    int64_t wait_ns = idle_ns > 0 ? (idle_ns / 4 > 1000000 ? idle_ns / 4 : 1000000) : 100000000;
    for (;;) {
        void *item = NULL;
        cf_err err = cf_ring_pop_until(pa->in.full_ring, &item, cf_now_ns() + wait_ns);
        if (err == CF_OK) {
            item_batch *ib = item;
            if (ib->src_seq != pa->cur_src_seq) { /* a frame may carry several batches */
                pa->cur_src_seq = ib->src_seq;
                pa->part = 0;
            }
            party_absorb(pa, ib);
            if (pa->index == 0 && pa->s->m_watermark != NULL) {
                watermark_gauges(pa);
            }
            if (ib->ckpt) {
                party_checkpoint(pa, ib);
            }
            cf_ring_push_wait(pa->in.free_ring, item);
            party_flush_out(pa);
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
    if (!atomic_load(&pa->s->net_stop)) {
        cf_window_flush(pa->win); /* end of input, not a stop: every window is complete */
    }
    party_flush_out(pa);
    cf_ring_close(pa->out.full_ring);
    return NULL;
}
