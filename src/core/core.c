/*
 * Library init, allocator, clocks, logging and assertions.
 *
 * The allocator indirection exists for tests: cf_alloc_fail_after(N) makes the Nth
 * allocation fail so out-of-memory paths are exercised for real.
 */
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "confide/core.h"

static atomic_int init_state; /* 0 never, 1 done, -1 failed */

cf_err cf_init(void)
{
    int s = atomic_load(&init_state);
    if (s == 1) {
        return CF_OK;
    }
    /* sodium_init is itself thread-safe and idempotent. */
    if (sodium_init() < 0) {
        atomic_store(&init_state, -1);
        return CF_E_CRYPTO;
    }
    atomic_store(&init_state, 1);
    return CF_OK;
}

/* ---- allocator ---- */

static long fail_countdown; /* 0: never fail */

static bool should_fail(void)
{
    if (fail_countdown > 0 && --fail_countdown == 0) {
        return true;
    }
    return false;
}

void cf_alloc_fail_after(long n)
{
    fail_countdown = n;
}

void *cf_malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n == 0 ? 1 : n);
}

void *cf_calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
}

void *cf_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n == 0 ? 1 : n);
}

void cf_free(void *p)
{
    free(p);
}

char *cf_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cf_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* ---- clocks ---- */

int64_t cf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cf_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double cf_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void cf_sleep_until_ns(int64_t deadline_ns)
{
    /* Absolute sleep: no drift from repeated relative sleeps, and no spinning, which would
     * take a core away from the stages on a small machine. Overshoot is bounded by the
     * thread's timer slack (see cf_thread_low_latency). */
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

void cf_thread_low_latency(void)
{
    /* The default 50 us timer slack would add up to 50 us to every short sleep. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
}

/* ---- logging ---- */

static cf_log_cb log_cb;
static void *log_opaque;
static cf_log_level log_max = CF_LOG_WARN;

void cf_log_set(cf_log_cb cb, void *opaque, cf_log_level max_level)
{
    log_cb = cb;
    log_opaque = opaque;
    log_max = max_level;
}

bool cf_log_enabled(cf_log_level lvl)
{
    return log_cb != NULL && lvl <= log_max;
}

void cf_log_write(cf_log_level lvl, const char *ctx, const char *fmt, ...)
{
    if (!cf_log_enabled(lvl)) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_cb(log_opaque, lvl, ctx, msg);
}

bool cf_appendf(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
    if (*off >= size) {
        return false;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, size - *off, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *off) {
        return false;
    }
    *off += (size_t)n;
    return true;
}

void cf__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "confide: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
