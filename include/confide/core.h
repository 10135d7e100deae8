/**
 * @file core.h
 * @brief Core services every module uses: library init, allocator, clocks, logging,
 * bounded SPSC rings, event batches and the log-linear latency histogram.
 */
#ifndef CONFIDE_CORE_H
#define CONFIDE_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/event.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- library ---------------------------------------------------------------------------- */

/** Initializes libsodium and library globals. Idempotent, thread-safe. */
cf_err cf_init(void);

/* ---- allocator -------------------------------------------------------------------------- */

/* All allocation goes through these so tests can fail the Nth call. */
void *cf_malloc(size_t n);
void *cf_calloc(size_t count, size_t size);
void *cf_realloc(void *p, size_t n);
void cf_free(void *p);
char *cf_strdup(const char *s);
/** Test hook: the Nth allocation from now (1-based) fails; 0 disables. Not thread-safe. */
void cf_alloc_fail_after(long n);

/* ---- clocks ----------------------------------------------------------------------------- */

/** Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
int64_t cf_now_ns(void);
/** Wall clock in microseconds since the epoch (CLOCK_REALTIME). */
int64_t cf_wall_us(void);
/** CRC32C (Castagnoli) of @p data continuing @p crc (0 to start): audit records and
 *  transport frames. */
uint32_t cf_crc32c(uint32_t crc, const void *data, size_t len);
/** Process CPU time (user + system) in seconds. */
double cf_cpu_s(void);
/** Sleeps until the monotonic clock reaches @p deadline_ns (returns at once if past). */
void cf_sleep_until_ns(int64_t deadline_ns);
/** Lowers the calling thread's timer slack so short sleeps wake on time (Linux). */
void cf_thread_low_latency(void);

/* ---- logging ---------------------------------------------------------------------------- */

typedef enum { CF_LOG_ERROR = 0, CF_LOG_WARN, CF_LOG_INFO, CF_LOG_DEBUG } cf_log_level;
/** Application log callback. Messages never carry amounts, account ids or keys. */
typedef void (*cf_log_cb)(void *opaque, cf_log_level lvl, const char *ctx, const char *msg);
/** Installs the process-wide log sink (NULL: drop). The library never prints by itself. */
void cf_log_set(cf_log_cb cb, void *opaque, cf_log_level max_level);
bool cf_log_enabled(cf_log_level lvl);
void cf_log_write(cf_log_level lvl, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define CF_LOG(lvl, ctx, ...)                                                                      \
    do {                                                                                           \
        if (cf_log_enabled(lvl)) {                                                                 \
            cf_log_write(lvl, ctx, __VA_ARGS__);                                                   \
        }                                                                                          \
    } while (0)

/* ---- assertions ------------------------------------------------------------------------- */

void cf__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
/* Programmer errors only; stays on in release builds. */
#define CF_ASSERT(e) ((e) ? (void)0 : cf__assert_fail(#e, __FILE__, __LINE__))
#ifdef NDEBUG
#define CF_DASSERT(e) ((void)0)
#else
#define CF_DASSERT(e) CF_ASSERT(e)
#endif

/* ---- text ------------------------------------------------------------------------------- */

/**
 * Appends printf output at buf + *off. Returns false (and leaves *off) when it would not fit
 * in @p size: encoders build a line piece by piece and give up on the first piece that fails.
 */
bool cf_appendf(char *buf, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- hashing (internal tables; not cryptographic) ---------------------------------------- */

/** Finalizer of MurmurHash3 (fmix64): spreads every input bit over the output. */
static inline uint64_t cf_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/** Fast multiplicative hash of @p n bytes with a per-table @p seed (not collision-resistant:
 *  callers keep seeds private or tolerate chains). Finish with cf_mix64 for a well-mixed value. */
static inline uint64_t cf_hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = (const uint8_t *)data;
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t v = 0;
        __builtin_memcpy(&v, p, n);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    return h;
}

/* ---- SPSC ring -------------------------------------------------------------------------- */

/**
 * Bounded lock-free single-producer single-consumer ring of pointers. A full ring returns
 * CF_E_FULL (the backpressure signal); the blocking helpers spin briefly, then sleep on a
 * futex that the other side wakes (no polling while idle).
 */
typedef struct cf_ring cf_ring;
/** @p capacity is rounded up to a power of two (>= 2). Returns owned (free with cf_ring_destroy).
 */
cf_err cf_ring_create(cf_ring **out, size_t capacity);
void cf_ring_destroy(cf_ring *r);
/** Producer side. CF_E_FULL when full. @locality producer thread */
cf_err cf_ring_push(cf_ring *r, void *item);
/** Consumer side. CF_E_EOF when empty (and not closed), CF_E_STATE when empty and closed. */
cf_err cf_ring_pop(cf_ring *r, void **item);
/** Blocks while full (backpressure). Counts the time spent blocked. @locality producer */
void cf_ring_push_wait(cf_ring *r, void *item);
/** Blocks until an item arrives (CF_OK) or the ring is closed and drained (CF_E_EOF). */
cf_err cf_ring_pop_wait(cf_ring *r, void **item);
/**
 * Waits for an item until the monotonic clock reaches @p deadline_ns (INT64_MAX: forever):
 * CF_OK, CF_E_EOF when the deadline passed with nothing to pop, CF_E_STATE when the ring is
 * closed and drained. Sleeps on a futex the producer wakes: no polling. @locality consumer
 */
cf_err cf_ring_pop_until(cf_ring *r, void **item, int64_t deadline_ns);
/** Producer marks the end of the stream. */
void cf_ring_close(cf_ring *r);
size_t cf_ring_size(const cf_ring *r);
size_t cf_ring_capacity(const cf_ring *r);
/** Nanoseconds the producer spent blocked on a full ring. */
uint64_t cf_ring_blocked_ns(const cf_ring *r);

/* ---- event batches ---------------------------------------------------------------------- */

/** A batch of events moving between stages; owned by exactly one stage at a time. */
typedef struct cf_batch {
    uint32_t n;
    uint32_t cap;
    cf_event *ev;
} cf_batch;
cf_err cf_batch_create(cf_batch **out, uint32_t cap);
void cf_batch_destroy(cf_batch *b);

/* ---- latency histogram ------------------------------------------------------------------ */

/**
 * Log-linear (HDR-style) histogram of non-negative integer values (microseconds by
 * convention) from 1 to 3,600,000,000 (1 h) with relative error <= 0.1% (3 significant
 * digits). Values below 1 count as 1 for bucketing, values above the range are clamped
 * (and counted in cf_hist_overflow). min, max, count and sum are exact.
 * Percentiles use the nearest-rank rule (rank = ceil(p*N/100) computed exactly) and return
 * the highest value equivalent to the bucket holding that rank, capped at the exact max.
 * Not thread-safe; merge per-thread histograms with cf_hist_merge.
 */
typedef struct cf_hist cf_hist;
cf_err cf_hist_create(cf_hist **out);
void cf_hist_destroy(cf_hist *h);
void cf_hist_reset(cf_hist *h);
void cf_hist_record(cf_hist *h, int64_t value);
void cf_hist_record_n(cf_hist *h, int64_t value, uint64_t count);
/** Adds @p src into @p dst. */
void cf_hist_merge(cf_hist *dst, const cf_hist *src);
uint64_t cf_hist_count(const cf_hist *h);
int64_t cf_hist_min(const cf_hist *h); /* 0 when empty */
int64_t cf_hist_max(const cf_hist *h); /* 0 when empty */
/** Exact sum of recorded (unclamped) values; saturates at INT64_MAX. */
int64_t cf_hist_sum(const cf_hist *h);
uint64_t cf_hist_overflow(const cf_hist *h);
/**
 * Value at percentile p = num/den percent (p99.9 = 999/10), nearest rank, exact rank
 * arithmetic. p = 0 returns the minimum. 0 when empty.
 */
int64_t cf_hist_percentile(const cf_hist *h, uint64_t num, uint64_t den);
/** Convenience: percentile given as a decimal string ("99.9"). CF_E_INVAL when malformed. */
cf_err cf_hist_percentile_str(const cf_hist *h, const char *p, int64_t *out);
/** Iterates non-empty buckets in ascending order: calls cb(upper_bound_value, count). */
void cf_hist_foreach(const cf_hist *h, void (*cb)(void *opaque, int64_t upper, uint64_t count),
                     void *opaque);

#ifdef __cplusplus
}
#endif
#endif
