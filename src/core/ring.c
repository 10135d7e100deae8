/*
 * Bounded lock-free SPSC ring of pointers.
 *
 * One producer thread owns `head`, one consumer thread owns `tail`; each caches the other's
 * index so the common case touches one shared cache line. Capacity is fixed at creation:
 * a full ring is the backpressure signal, and nothing behind it buffers without bound.
 *
 * Blocking waits spin briefly, then sleep on a futex that the other side wakes when it
 * pushes (or pops, for a producer waiting for space). So an idle pipeline costs no CPU and
 * a waiting stage wakes as soon as there is work, instead of polling with short sleeps.
 * Lost wake-ups are ruled out Dekker-style: the waiter announces itself (seq_cst), re-checks
 * the ring, then sleeps only while the wake counter still has the value it read first; the
 * other side publishes its index, fences, and wakes when it sees a waiter.
 */
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "confide/core.h"

#define CACHELINE 64

struct cf_ring {
    _Alignas(CACHELINE) atomic_size_t head; /* next slot to write (producer) */
    size_t tail_cache;
    _Alignas(CACHELINE) atomic_size_t tail; /* next slot to read (consumer) */
    size_t head_cache;
    _Alignas(CACHELINE) atomic_bool closed;
    atomic_uint_fast64_t blocked_ns;
    atomic_uint data_seq;  /* bumped to wake a consumer waiting for items */
    atomic_uint space_seq; /* bumped to wake a producer waiting for space */
    atomic_int data_waiter;
    atomic_int space_waiter;
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
    atomic_init(&r->data_seq, 0);
    atomic_init(&r->space_seq, 0);
    atomic_init(&r->data_waiter, 0);
    atomic_init(&r->space_waiter, 0);
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

static void futex_wait(atomic_uint *addr, unsigned val, int64_t timeout_ns)
{
    struct timespec ts;
    struct timespec *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    /* EAGAIN (the counter moved), EINTR and ETIMEDOUT all mean: look at the ring again. */
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
}

/* Called after publishing an index: wakes the other side if it sleeps. */
static void wake(atomic_int *waiter, atomic_uint *seq)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiter, memory_order_relaxed) != 0) {
        atomic_store_explicit(waiter, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(seq, 1, memory_order_seq_cst);
        syscall(SYS_futex, (unsigned *)seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
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
    wake(&r->data_waiter, &r->data_seq);
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
    wake(&r->space_waiter, &r->space_seq);
    return CF_OK;
}

/* Polls before sleeping: ~1-2 us, enough to catch a partner that is about to publish, and
 * no system calls (sched_yield in this loop cost more CPU than all the real work). */
#define SPINS 32

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void cf_ring_push_wait(cf_ring *r, void *item)
{
    if (cf_ring_push(r, item) == CF_OK) {
        return;
    }
    int64_t t0 = cf_now_ns();
    for (unsigned spins = 0;; spins++) {
        if (spins < SPINS) {
            cpu_relax();
        } else {
            unsigned seq = atomic_load_explicit(&r->space_seq, memory_order_seq_cst);
            atomic_store_explicit(&r->space_waiter, 1, memory_order_seq_cst);
            if (cf_ring_push(r, item) == CF_OK) {
                atomic_store_explicit(&r->space_waiter, 0, memory_order_relaxed);
                break;
            }
            futex_wait(&r->space_seq, seq, -1);
        }
        if (cf_ring_push(r, item) == CF_OK) {
            break;
        }
    }
    atomic_fetch_add_explicit(&r->blocked_ns, (uint64_t)(cf_now_ns() - t0), memory_order_relaxed);
}

cf_err cf_ring_pop_until(cf_ring *r, void **item, int64_t deadline_ns)
{
    for (unsigned spins = 0; spins < SPINS; spins++) {
        cf_err e = cf_ring_pop(r, item);
        if (e != CF_E_EOF) {
            return e; /* CF_OK, or CF_E_STATE: closed and drained */
        }
        cpu_relax();
    }
    for (;;) {
        int64_t left = deadline_ns - cf_now_ns();
        if (left <= 0) {
            return CF_E_EOF;
        }
        unsigned seq = atomic_load_explicit(&r->data_seq, memory_order_seq_cst);
        atomic_store_explicit(&r->data_waiter, 1, memory_order_seq_cst);
        cf_err e = cf_ring_pop(r, item);
        if (e != CF_E_EOF) {
            atomic_store_explicit(&r->data_waiter, 0, memory_order_relaxed);
            return e;
        }
        futex_wait(&r->data_seq, seq, deadline_ns == INT64_MAX ? -1 : left);
        e = cf_ring_pop(r, item);
        if (e != CF_E_EOF) {
            return e;
        }
    }
}

cf_err cf_ring_pop_wait(cf_ring *r, void **item)
{
    cf_err e = cf_ring_pop_until(r, item, INT64_MAX);
    return e == CF_OK ? CF_OK : CF_E_EOF;
}

void cf_ring_close(cf_ring *r)
{
    atomic_store_explicit(&r->closed, true, memory_order_release);
    atomic_store_explicit(&r->data_waiter, 1, memory_order_relaxed); /* force the wake */
    wake(&r->data_waiter, &r->data_seq);
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
