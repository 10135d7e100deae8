/*
 * Batcher: forms output batches from the input batches on a ring, bounded by count (the
 * controller's target, at most batch.count_max), bytes (batch.bytes_max) and linger time
 * (the controller's linger, at most batch.linger_ms, counted from the first event added).
 *
 * Order of checks: copy what is at hand; emit when full; otherwise pop more input, and only
 * when the ring is empty consider the linger deadline. So under backlog batches fill to the
 * target, and linger only ever delays a batch while nothing is waiting.
 *
 * Threads: the consumer thread of the input ring owns the batcher. Memory: output batches
 * of count_max events come from a small pool (4) and return to it in cf_batcher_done, so
 * the steady state allocates nothing. Input batches are never freed here: the caller's
 * release callback gets them back (typically a free-list ring to the producer).
 */
#include <sched.h>
#include <string.h>
#include <time.h>

#include "confide/batch.h"
#include "confide/core.h"

#define POOL 4

struct cf_batcher {
    cf_batch_ctl *ctl;
    uint32_t count_max;
    uint64_t bytes_max;
    int64_t linger_ns;
    size_t (*sizer)(const cf_event *ev);

    cf_batch *open;
    uint64_t open_bytes;
    int64_t open_first_ns;
    int64_t open_lag_ns;    /* how long the newest event sat in the ring before we saw it */
    int64_t emitted_lag_ns; /* open_lag_ns of the batch handed out last */
    bool emitted_backlog;   /* more input was waiting when it was handed out */

    cf_batch *pool[POOL];
    int npool;

    cf_batch *in;
    uint32_t in_pos;
};

cf_err cf_batcher_create(cf_batcher **out, cf_batch_ctl *ctl, uint32_t count_max,
                         uint64_t bytes_max, uint32_t linger_ms)
{
    CF_ASSERT(out != NULL);
    *out = NULL;
    if (count_max < 1 || bytes_max < 1 || linger_ms > 60000) {
        return CF_E_INVAL;
    }
    cf_batcher *b = cf_calloc(1, sizeof(*b));
    if (b == NULL) {
        return CF_E_NOMEM;
    }
    b->ctl = ctl;
    b->count_max = count_max;
    b->bytes_max = bytes_max;
    b->linger_ns = (int64_t)linger_ms * 1000000;
    *out = b;
    return CF_OK;
}

void cf_batcher_destroy(cf_batcher *b)
{
    if (b == NULL) {
        return;
    }
    for (int i = 0; i < b->npool; i++) {
        cf_batch_destroy(b->pool[i]);
    }
    cf_batch_destroy(b->open);
    cf_free(b);
}

uint32_t cf_batcher_drop_input(cf_batcher *b, void (*release)(void *opaque, cf_batch *in_batch),
                               void *opaque)
{
    CF_ASSERT(b != NULL);
    if (b->in == NULL) {
        return 0;
    }
    uint32_t dropped = b->in->n - b->in_pos;
    if (release != NULL) {
        release(opaque, b->in);
    }
    b->in = NULL;
    b->in_pos = 0;
    return dropped;
}

void cf_batcher_set_sizer(cf_batcher *b, size_t (*event_bytes)(const cf_event *ev))
{
    b->sizer = event_bytes;
}

uint32_t cf_batcher_pending(const cf_batcher *b)
{
    return b->open != NULL ? b->open->n : 0;
}

static size_t ev_bytes(const cf_batcher *b, const cf_event *ev)
{
    return b->sizer != NULL ? b->sizer(ev) : sizeof(cf_event);
}

static uint32_t target_of(const cf_batcher *b)
{
    uint32_t t = b->ctl != NULL ? cf_batch_ctl_target(b->ctl) : b->count_max;
    return t > b->count_max ? b->count_max : (t < 1 ? 1 : t);
}

static int64_t linger_of(const cf_batcher *b)
{
    int64_t l = b->ctl != NULL ? cf_batch_ctl_linger_ns(b->ctl) : b->linger_ns;
    return l > b->linger_ns ? b->linger_ns : l;
}

/* Copies from the held input batch; returns true when the open batch is full (count/bytes). */
static bool fill(cf_batcher *b, uint32_t target)
{
    uint32_t before = b->open->n;
    while (b->in != NULL && b->in_pos < b->in->n) {
        if (b->open->n >= target) {
            break;
        }
        const cf_event *ev = &b->in->ev[b->in_pos];
        size_t sz = ev_bytes(b, ev);
        /* An event larger than bytes_max still travels, alone. */
        if (b->open->n > 0 && b->open_bytes + sz > b->bytes_max) {
            return true;
        }
        if (b->open->n == 0) {
            b->open_first_ns = cf_now_ns();
        }
        b->open->ev[b->open->n++] = *ev;
        b->open_bytes += sz;
        b->in_pos++;
    }
    if (b->open->n > before) {
        int64_t ingest = b->open->ev[b->open->n - 1].ingest_ns;
        b->open_lag_ns = ingest > 0 ? cf_now_ns() - ingest : 0;
    }
    return b->open->n >= target || b->open_bytes >= b->bytes_max;
}

static void pause_briefly(unsigned *spins, int64_t deadline_ns)
{
    (*spins)++;
    if (*spins < 64) {
        return;
    }
    if (*spins < 128) {
        sched_yield();
        return;
    }
    /* Sleep in short steps, never past the linger deadline by more than the step. */
    int64_t step = 50000;
    int64_t now = cf_now_ns();
    if (deadline_ns != INT64_MAX && deadline_ns - now < step) {
        step = deadline_ns - now;
    }
    if (step > 0) {
        struct timespec ts = {0, (long)step};
        nanosleep(&ts, NULL);
    }
}

cf_err cf_batcher_next(cf_batcher *b, cf_ring *in, cf_batch **out,
                       void (*release)(void *opaque, cf_batch *in_batch), void *opaque)
{
    CF_ASSERT(b != NULL && in != NULL && out != NULL);
    *out = NULL;
    if (b->open == NULL) {
        if (b->npool > 0) {
            b->open = b->pool[--b->npool];
        } else if (cf_batch_create(&b->open, b->count_max) != CF_OK) {
            return CF_E_NOMEM;
        }
        b->open->n = 0;
        b->open_bytes = 0;
    }
    unsigned spins = 0;
    for (;;) {
        uint32_t target = target_of(b);
        bool full = fill(b, target);
        if (b->in != NULL && b->in_pos >= b->in->n) {
            if (release != NULL) {
                release(opaque, b->in);
            }
            b->in = NULL;
        }
        if (full) {
            break;
        }
        if (b->in != NULL) {
            continue;
        }
        void *item = NULL;
        cf_err e = cf_ring_pop(in, &item);
        if (e == CF_OK) {
            b->in = item;
            b->in_pos = 0;
            spins = 0;
            continue;
        }
        if (e == CF_E_STATE) { /* closed and drained */
            if (b->open->n > 0) {
                break;
            }
            return CF_E_EOF;
        }
        int64_t deadline = INT64_MAX;
        if (b->open->n > 0) {
            deadline = b->open_first_ns + linger_of(b);
            if (cf_now_ns() >= deadline) {
                break;
            }
        }
        pause_briefly(&spins, deadline);
    }
    *out = b->open;
    b->emitted_lag_ns = b->open_lag_ns;
    /* Whole input batches still queued behind the one being split: a real backlog. (The
     * rest of the split input batch is not: a count boundary almost always splits one.) */
    b->emitted_backlog = cf_ring_size(in) > 0;
    b->open = NULL;
    return CF_OK;
}

void cf_batcher_done(cf_batcher *b, cf_batch *batch, int64_t start_ns, int64_t end_ns)
{
    CF_ASSERT(b != NULL);
    if (batch == NULL) {
        return;
    }
    if (b->ctl != NULL && batch->n > 0) {
        uint64_t bytes = 0;
        if (b->sizer == NULL) {
            bytes = (uint64_t)batch->n * sizeof(cf_event);
        } else {
            for (uint32_t i = 0; i < batch->n; i++) {
                bytes += b->sizer(&batch->ev[i]);
            }
        }
        int64_t first = batch->ev[0].ingest_ns;
        int64_t last = batch->ev[batch->n - 1].ingest_ns;
        /* Backlog: only when more input was already waiting than fitted in the batch does
         * the newest event's ring wait measure a queue; otherwise that wait is just the
         * previous batch's service time, which the model already counts. */
        int64_t queue = b->emitted_backlog ? b->emitted_lag_ns : 0;
        cf_batch_ctl_observe(b->ctl, end_ns, batch->n, bytes, end_ns - start_ns, queue, first,
                             last);
    }
    batch->n = 0;
    if (batch->cap >= b->count_max && b->npool < POOL) {
        b->pool[b->npool++] = batch;
    } else {
        cf_batch_destroy(batch);
    }
}
