/*
 * Open-loop arrival schedules for load generation: when is event i due, in ns from the start.
 *
 * Every schedule is a cumulative arrival function L(t) (expected events by time t) and
 * event i (0-based) is due at the t with L(t) = i. Computing each time from the event's
 * index, never by adding rounded intervals, keeps a long run free of drift: event one
 * million of a steady 1000/s schedule is due at exactly 1000 s. Shapes:
 *   steady   L(t) = R t
 *   diurnal  rate R (1 + 0.8 sin(2 pi t / P)), P = 86400 / speedup s; mean R over a period
 *   burst    cycles of 10 s: 9 s at b, then 1 s at 10 b, b = R / 1.9 so the mean is R
 *   trace    a CSV "step,count" of hourly counts; each hour lasts 3600 / speedup s and
 *            holds count events (rate 0) or count scaled so the trace's mean rate is R.
 *            Missing steps are zero hours; the trace repeats when it ends.
 * Rates are doubles (they are not money); times are rounded to whole ns once, and the
 * result is clamped to be non-decreasing.
 *
 * Bounds: a trace holds at most TRACE_ROWS_MAX hours (8 B each). Threads: one thread at a
 * time per pacer. Ownership: the caller owns the pacer; the trace file is read and closed
 * in cf_pacer_create.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confide/core.h"
#include "confide/io.h"

#define RATE_MAX 1e9 /* one event per ns */
#define SPEEDUP_MAX 1e9
#define TRACE_ROWS_MAX 1000000u
#define TRACE_LINE_MAX 256
#define TRACE_COUNT_MAX INT64_C(1000000000000)

typedef enum { SHAPE_STEADY, SHAPE_DIURNAL, SHAPE_BURST, SHAPE_TRACE } shape_kind;

struct cf_pacer {
    shape_kind kind;
    double rate;
    double speedup;
    uint64_t i;      /* index of the next event */
    int64_t last_ns; /* last time handed out */
    double t_prev;   /* diurnal: last solution, the lower bound for the next one */
    double period_s; /* diurnal */
    /* trace */
    double *cum; /* cum[h] = expected events before hour h; rows + 1 entries */
    size_t rows;
    double hour_s;
};

/* Seconds -> ns, rounded once. */
static int64_t to_ns(long double t_s)
{
    long double ns = t_s * 1e9L;
    if (ns >= (long double)INT64_MAX) {
        return INT64_MAX;
    }
    return (int64_t)llroundl(ns);
}

static cf_err load_trace(cf_pacer *p, const char *path, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    size_t cap = 0;
    uint64_t line_no = 0;
    int64_t prev_step = 0;
    bool have_step = false;
    char line[TRACE_LINE_MAX + 2];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "pacer: cannot open trace %s", path);
    }
    /* Counts are accumulated as per-hour values first; cum[] is built at the end. */
    while (fgets(line, sizeof(line), f) != NULL) {
        line_no++;
        size_t len = strlen(line);
        if (len > TRACE_LINE_MAX || (len == TRACE_LINE_MAX && line[len - 1] != '\n')) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "pacer: trace %s:%llu: line longer than %d bytes", path,
                             (unsigned long long)line_no, TRACE_LINE_MAX);
            goto done;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (len == 0) {
            continue;
        }
        if (line_no == 1) {
            if (strchr(line, ',') == NULL || (line[0] >= '0' && line[0] <= '9')) {
                err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                 "pacer: trace %s:1: expected a header \"step,count\"", path);
                goto done;
            }
            continue; /* header */
        }
        char *end = NULL;
        errno = 0;
        long long step = strtoll(line, &end, 10);
        if (end == line || *end != ',' || errno != 0 || step < 0) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "pacer: trace %s:%llu: bad step (expected \"step,count\")", path,
                             (unsigned long long)line_no);
            goto done;
        }
        char *cstart = end + 1;
        errno = 0;
        long long count = strtoll(cstart, &end, 10);
        if (end == cstart || *end != '\0' || errno != 0 || count < 0 || count > TRACE_COUNT_MAX) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "pacer: trace %s:%llu: bad count (expected an integer 0..%lld)", path,
                             (unsigned long long)line_no, (long long)TRACE_COUNT_MAX);
            goto done;
        }
        if (have_step && step <= prev_step) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "pacer: trace %s:%llu: steps must increase", path,
                             (unsigned long long)line_no);
            goto done;
        }
        /* A gap in the steps is that many hours without events. */
        uint64_t gap = have_step ? (uint64_t)(step - prev_step) - 1 : 0;
        if (p->rows + gap + 1 > TRACE_ROWS_MAX) {
            err = cf_err_set(CF_E_LIMIT, errstr, errstr_size, "pacer: trace %s: more than %u hours",
                             path, TRACE_ROWS_MAX);
            goto done;
        }
        while (p->rows + gap + 2 > cap) {
            size_t ncap = cap == 0 ? 1024 : cap * 2;
            double *nc = cf_realloc(p->cum, ncap * sizeof(*nc));
            if (nc == NULL) {
                err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "pacer: out of memory");
                goto done;
            }
            p->cum = nc;
            cap = ncap;
        }
        for (uint64_t k = 0; k < gap; k++) {
            p->cum[p->rows++] = 0;
        }
        p->cum[p->rows++] = (double)count;
        prev_step = step;
        have_step = true;
    }
    if (ferror(f)) {
        err = cf_err_errno(errno, errstr, errstr_size, "pacer: cannot read trace %s", path);
        goto done;
    }
    if (p->rows == 0) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "pacer: trace %s has no rows", path);
        goto done;
    }
    double total = 0;
    for (size_t h = 0; h < p->rows; h++) {
        total += p->cum[h];
    }
    if (total <= 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "pacer: trace %s has no events (every count is 0)", path);
        goto done;
    }
    /* rate 0: the trace's own counts. Otherwise scale every hour by the same factor so the
     * mean rate over the trace is exactly `rate`. */
    double scale = 1.0;
    p->hour_s = 3600.0 / p->speedup;
    if (p->rate > 0) {
        scale = p->rate * p->hour_s * (double)p->rows / total;
    }
    double acc = 0;
    for (size_t h = 0; h < p->rows; h++) {
        double c = p->cum[h] * scale;
        p->cum[h] = acc;
        acc += c;
    }
    p->cum[p->rows] = acc;
done:
    fclose(f);
    return err;
}

cf_err cf_pacer_create(cf_pacer **out, const char *shape, double rate, double speedup, char *errstr,
                       size_t errstr_size)
{
    cf_err err;
    CF_ASSERT(out != NULL);
    *out = NULL;
    if (shape == NULL) {
        shape = "steady";
    }
    cf_pacer *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "pacer: out of memory");
    }
    p->rate = rate;
    p->speedup = speedup;
    p->last_ns = 0;
    if (!(speedup > 0 && speedup <= SPEEDUP_MAX)) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "pacer: speedup must be in (0, %g] (got %g)", SPEEDUP_MAX, speedup);
        goto fail;
    }
    if (strcmp(shape, "steady") == 0) {
        p->kind = SHAPE_STEADY;
    } else if (strcmp(shape, "diurnal") == 0) {
        p->kind = SHAPE_DIURNAL;
        p->period_s = 86400.0 / speedup;
    } else if (strcmp(shape, "burst") == 0) {
        p->kind = SHAPE_BURST;
    } else if (strncmp(shape, "trace:", 6) == 0) {
        p->kind = SHAPE_TRACE;
    } else {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "pacer: unknown shape '%s' (expected steady, diurnal, burst or "
                         "trace:FILE)",
                         shape);
        goto fail;
    }
    if (p->kind == SHAPE_TRACE) {
        if (!(rate >= 0 && rate <= RATE_MAX)) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "pacer: rate must be in [0, %g] for a trace (got %g)", RATE_MAX, rate);
            goto fail;
        }
        if (shape[6] == '\0') {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "pacer: shape 'trace:' needs a file name (trace:FILE)");
            goto fail;
        }
        err = load_trace(p, shape + 6, errstr, errstr_size);
        if (err != CF_OK) {
            goto fail;
        }
    } else if (!(rate > 0 && rate <= RATE_MAX)) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "pacer: rate must be in (0, %g] events/s for shape %s (got %g)", RATE_MAX,
                         shape, rate);
        goto fail;
    }
    *out = p;
    return CF_OK;
fail:
    cf_pacer_destroy(p);
    return err;
}

void cf_pacer_destroy(cf_pacer *p)
{
    if (p == NULL) {
        return;
    }
    cf_free(p->cum);
    cf_free(p);
}

/* Diurnal: solve R (t + A (1 - cos(w t))) = i for t >= t_prev, A = 0.8 / w. The rate is at
 * least 0.2 R, which bounds the answer; Newton steps that leave the bracket bisect. */
static double diurnal_time(cf_pacer *p, double i)
{
    double w = 2.0 * M_PI / p->period_s;
    double a = 0.8 / w;
    double r = p->rate;
    double lo = p->t_prev;
    double f_lo = r * (lo + a * (1 - cos(w * lo))) - i;
    if (f_lo >= 0) {
        return lo;
    }
    double hi = lo + (-f_lo) / (0.2 * r);
    double t = lo + (-f_lo) / r;
    if (t > hi) {
        t = hi;
    }
    for (int it = 0; it < 100; it++) {
        double f = r * (t + a * (1 - cos(w * t))) - i;
        if (f > 0) {
            hi = t;
        } else {
            lo = t;
        }
        double d = r * (1 + 0.8 * sin(w * t));
        double nt = t - f / d;
        if (!(nt > lo && nt < hi)) {
            nt = 0.5 * (lo + hi);
        }
        if (fabs(nt - t) <= 1e-12 * (1 + t) || hi - lo <= 1e-12 * (1 + t)) {
            t = nt;
            break;
        }
        t = nt;
    }
    return t;
}

static long double trace_time(const cf_pacer *p, uint64_t i)
{
    double total = p->cum[p->rows];
    long double cyc = floorl((long double)i / total);
    double j = (double)((long double)i - cyc * total);
    if (j >= total) {
        j = 0; /* rounding at the cycle edge */
        cyc += 1;
    }
    /* The last hour h with cum[h] <= j: it holds event j (a zero hour has cum[h] ==
     * cum[h + 1] and is passed over). */
    size_t lo = 0, hi = p->rows; /* cum[lo] <= j < cum[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->cum[mid] <= j) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    double e = p->cum[lo + 1] - p->cum[lo];
    long double in_hour = e > 0 ? (long double)(j - p->cum[lo]) / e : 0;
    return (cyc * (long double)p->rows + (long double)lo + in_hour) * (long double)p->hour_s;
}

int64_t cf_pacer_next_ns(cf_pacer *p)
{
    CF_ASSERT(p != NULL);
    uint64_t i = p->i++;
    long double t_s = 0;
    switch (p->kind) {
    case SHAPE_STEADY:
        t_s = (long double)i / (long double)p->rate;
        break;
    case SHAPE_DIURNAL:
        p->t_prev = diurnal_time(p, (double)i);
        t_s = p->t_prev;
        break;
    case SHAPE_BURST: {
        long double b = (long double)p->rate / 1.9L;
        long double per_cycle = 19.0L * b; /* 9 s at b + 1 s at 10 b = 10 rate */
        long double k = floorl((long double)i / per_cycle);
        long double rem = (long double)i - k * per_cycle;
        if (rem < 9.0L * b) {
            t_s = 10.0L * k + rem / b;
        } else {
            t_s = 10.0L * k + 9.0L + (rem - 9.0L * b) / (10.0L * b);
        }
        break;
    }
    case SHAPE_TRACE:
        t_s = trace_time(p, i);
        break;
    }
    int64_t ns = to_ns(t_s);
    if (ns < p->last_ns) {
        ns = p->last_ns;
    }
    p->last_ns = ns;
    return ns;
}
