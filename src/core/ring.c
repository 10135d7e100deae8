/*
 * Bounded lock-free SPSC ring of pointers.
 *
 * One producer thread owns `head`, one consumer thread owns `tail`; each caches the other's
 * index so the common case touches one shared cache line. Capacity is fixed at creation:
 * a full ring is the backpressure signal, and nothing behind it buffers without bound.
 * Blocking waits spin briefly, then yield, then sleep in growing steps up to 50 us, which
 * keeps an idle pipeline from burning both cores while adding at most ~50 us per hop.
 */
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "confide/core.h"

#define CACHELINE 64

struct cf_ring {
    _Alignas(CACHELINE) atomic_size_t head; /* next slot to write (producer) */
    size_t tail_cache;
    _Alignas(CACHELINE) atomic_size_t tail; /* next slot to read (consumer) */
    size_t head_cache;
    _Alignas(CACHELINE) atomic_bool closed;
    atomic_uint_fast64_t blocked_ns;
    size_t mask;
    void **slots;
};

cf_err cf_ring_create(cf_ring **out, size_t capacity)
{
    size_t cap = 2;
    while (cap < capacity) {
        cap <<= 1;
    }
    cf_ring *r = cf_calloc(1, sizeof(*r));
    if (r == NULL) {
        return CF_E_NOMEM;
    }
    r->slots = cf_calloc(cap, sizeof(void *));
    if (r->slots == NULL) {
        cf_free(r);
        return CF_E_NOMEM;
    }
    r->mask = cap - 1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->closed, false);
    atomic_init(&r->blocked_ns, 0);
    *out = r;
    return CF_OK;
}

void cf_ring_destroy(cf_ring *r)
{
    if (r == NULL) {
        return;
    }
    cf_free(r->slots);
    cf_free(r);
}

cf_err cf_ring_push(cf_ring *r, void *item)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (head - r->tail_cache > r->mask) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head - r->tail_cache > r->mask) {
            return CF_E_FULL;
        }
    }
    r->slots[head & r->mask] = item;
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
    return CF_OK;
}

cf_err cf_ring_pop(cf_ring *r, void **item)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (tail == r->head_cache) {
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        if (tail == r->head_cache) {
            if (atomic_load_explicit(&r->closed, memory_order_acquire)) {
                /* Re-check: the producer may have pushed just before closing. */
                r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
                if (tail == r->head_cache) {
                    return CF_E_STATE;
                }
            } else {
                return CF_E_EOF;
            }
        }
    }
    *item = r->slots[tail & r->mask];
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
    return CF_OK;
}

static void backoff(unsigned *spins)
{
    unsigned s = (*spins)++;
    if (s < 64) {
        return;
    }
    if (s < 128) {
        sched_yield();
        return;
    }
    long us = (long)(s - 127) * 5;
    if (us > 50) {
        us = 50;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL);
}

void cf_ring_push_wait(cf_ring *r, void *item)
{
    if (cf_ring_push(r, item) == CF_OK) {
        return;
    }
    int64_t t0 = cf_now_ns();
    unsigned spins = 0;
    while (cf_ring_push(r, item) != CF_OK) {
        backoff(&spins);
    }
    atomic_fetch_add_explicit(&r->blocked_ns, (uint64_t)(cf_now_ns() - t0), memory_order_relaxed);
}

cf_err cf_ring_pop_wait(cf_ring *r, void **item)
{
    unsigned spins = 0;
    for (;;) {
        cf_err e = cf_ring_pop(r, item);
        if (e == CF_OK) {
            return CF_OK;
        }
        if (e == CF_E_STATE) {
            return CF_E_EOF;
        }
        backoff(&spins);
    }
}

void cf_ring_close(cf_ring *r)
{
    atomic_store_explicit(&r->closed, true, memory_order_release);
}

size_t cf_ring_size(const cf_ring *r)
{
    size_t h = atomic_load_explicit(&((cf_ring *)r)->head, memory_order_acquire);
    size_t t = atomic_load_explicit(&((cf_ring *)r)->tail, memory_order_acquire);
    return h - t;
}

size_t cf_ring_capacity(const cf_ring *r)
{
    return r->mask + 1;
}

uint64_t cf_ring_blocked_ns(const cf_ring *r)
{
    return atomic_load_explicit(&((cf_ring *)r)->blocked_ns, memory_order_relaxed);
}

cf_err cf_batch_create(cf_batch **out, uint32_t cap)
{
    cf_batch *b = cf_calloc(1, sizeof(*b));
    if (b == NULL) {
        return CF_E_NOMEM;
    }
    b->ev = cf_calloc(cap, sizeof(cf_event));
    if (b->ev == NULL) {
        cf_free(b);
        return CF_E_NOMEM;
    }
    b->cap = cap;
    *out = b;
    return CF_OK;
}

void cf_batch_destroy(cf_batch *b)
{
    if (b == NULL) {
        return;
    }
    cf_free(b->ev);
    cf_free(b);
}
