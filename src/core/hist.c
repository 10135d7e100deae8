/*
 * Log-linear (HDR-style) latency histogram.
 *
 * Layout: the HdrHistogram layout for lowest = 1, highest = 3,600,000,000 and 3 significant
 * digits: 2048 sub-buckets per power-of-two bucket (the lower half of every bucket after the
 * first is skipped because the previous bucket already covers it), 22 buckets, 23,552 counts.
 * A value v >= 2048 lands in a slot of width 2^b with v >= 1024 * 2^b, so reporting the
 * highest value of the slot overstates v by less than 1/1024 < 0.1%. Values below 2048 are
 * stored exactly.
 *
 * Bounds: fixed memory (about 184 KiB per histogram, one allocation at create), no
 * allocation afterwards, so recording never fails. Values above the range are clamped into
 * the top slot and counted in `overflow`; min, max, count and sum stay exact (negative
 * values, which only a clock bug produces, are treated as 0).
 *
 * Threads: none. A histogram is owned by one thread; readers on other threads merge copies
 * (cf_hist_merge) under their own synchronization.
 *
 * Percentiles: nearest rank, rank = ceil(num * N / (100 * den)) in 128-bit integer
 * arithmetic so that decimal percentiles such as 99.9 land on the right rank (binary floating
 * point does not: ceil(99.9 / 100.0 * 1000) == 1000, the exact answer is 999).
 */
#include <string.h>

#include "confide/core.h"

#define SUB_BUCKET_COUNT 2048
#define SUB_BUCKET_HALF 1024
#define SUB_BUCKET_HALF_MAG 10
#define SUB_BUCKET_MASK ((uint64_t)SUB_BUCKET_COUNT - 1)
#define BUCKET_COUNT 22
#define COUNTS_LEN ((BUCKET_COUNT + 1) * SUB_BUCKET_HALF) /* 23552, as HdrHistogram */
#define HIST_HIGHEST INT64_C(3600000000)

__extension__ typedef unsigned __int128 u128;

struct cf_hist {
    uint64_t count;
    uint64_t overflow;
    int64_t min;
    int64_t max;
    int64_t sum;
    int32_t lo_idx; /* lowest non-empty slot, COUNTS_LEN when empty */
    int32_t hi_idx; /* highest non-empty slot, -1 when empty */
    uint64_t counts[COUNTS_LEN];
};

static int32_t slot_of(uint64_t v)
{
    /* Position of the highest set bit of (v | mask) decides the bucket. */
    int bucket = 64 - __builtin_clzll(v | SUB_BUCKET_MASK) - (SUB_BUCKET_HALF_MAG + 1);
    uint64_t sub = v >> bucket;
    return (int32_t)(((int64_t)(bucket + 1) << SUB_BUCKET_HALF_MAG) +
                     ((int64_t)sub - SUB_BUCKET_HALF));
}

/* Highest value that maps to slot @p idx. */
static int64_t slot_highest(int32_t idx)
{
    int bucket = (idx >> SUB_BUCKET_HALF_MAG) - 1;
    int64_t sub = (idx & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
    if (bucket < 0) {
        sub -= SUB_BUCKET_HALF;
        bucket = 0;
    }
    int64_t lowest = sub << bucket;
    return lowest + ((int64_t)1 << bucket) - 1;
}

static void reset_fields(cf_hist *h)
{
    h->count = 0;
    h->overflow = 0;
    h->min = 0;
    h->max = 0;
    h->sum = 0;
    h->lo_idx = COUNTS_LEN;
    h->hi_idx = -1;
}

cf_err cf_hist_create(cf_hist **out)
{
    CF_ASSERT(out != NULL);
    cf_hist *h = cf_calloc(1, sizeof(*h));
    if (h == NULL) {
        *out = NULL;
        return CF_E_NOMEM;
    }
    reset_fields(h);
    *out = h;
    return CF_OK;
}

void cf_hist_destroy(cf_hist *h)
{
    cf_free(h);
}

void cf_hist_reset(cf_hist *h)
{
    CF_ASSERT(h != NULL);
    if (h->hi_idx >= 0) {
        memset(&h->counts[h->lo_idx], 0,
               (size_t)(h->hi_idx - h->lo_idx + 1) * sizeof(h->counts[0]));
    }
    reset_fields(h);
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        return INT64_MAX;
    }
    return r;
}

void cf_hist_record_n(cf_hist *h, int64_t value, uint64_t count)
{
    CF_ASSERT(h != NULL);
    if (count == 0) {
        return;
    }
    if (value < 0) {
        value = 0;
    }
    int64_t bucketed = value < 1 ? 1 : value;
    if (bucketed > HIST_HIGHEST) {
        bucketed = HIST_HIGHEST;
        h->overflow += count;
    }
    int32_t idx = slot_of((uint64_t)bucketed);
    CF_DASSERT(idx >= 0 && idx < COUNTS_LEN);
    h->counts[idx] += count;
    if (idx < h->lo_idx) {
        h->lo_idx = idx;
    }
    if (idx > h->hi_idx) {
        h->hi_idx = idx;
    }
    if (h->count == 0 || value < h->min) {
        h->min = value;
    }
    if (h->count == 0 || value > h->max) {
        h->max = value;
    }
    h->count += count;
    int64_t add;
    if (count > (uint64_t)INT64_MAX || __builtin_mul_overflow(value, (int64_t)count, &add)) {
        h->sum = INT64_MAX;
    } else {
        h->sum = sat_add(h->sum, add);
    }
}

void cf_hist_record(cf_hist *h, int64_t value)
{
    cf_hist_record_n(h, value, 1);
}

void cf_hist_merge(cf_hist *dst, const cf_hist *src)
{
    CF_ASSERT(dst != NULL && src != NULL);
    if (src->count == 0) {
        return;
    }
    for (int32_t i = src->lo_idx; i <= src->hi_idx; i++) {
        dst->counts[i] += src->counts[i];
    }
    if (src->lo_idx < dst->lo_idx) {
        dst->lo_idx = src->lo_idx;
    }
    if (src->hi_idx > dst->hi_idx) {
        dst->hi_idx = src->hi_idx;
    }
    if (dst->count == 0 || src->min < dst->min) {
        dst->min = src->min;
    }
    if (dst->count == 0 || src->max > dst->max) {
        dst->max = src->max;
    }
    dst->count += src->count;
    dst->overflow += src->overflow;
    dst->sum = sat_add(dst->sum, src->sum);
}

uint64_t cf_hist_count(const cf_hist *h)
{
    return h->count;
}

int64_t cf_hist_min(const cf_hist *h)
{
    return h->min;
}

int64_t cf_hist_max(const cf_hist *h)
{
    return h->max;
}

int64_t cf_hist_sum(const cf_hist *h)
{
    return h->sum;
}

uint64_t cf_hist_overflow(const cf_hist *h)
{
    return h->overflow;
}

int64_t cf_hist_percentile(const cf_hist *h, uint64_t num, uint64_t den)
{
    CF_ASSERT(h != NULL);
    CF_ASSERT(den > 0);
    if (h->count == 0) {
        return 0;
    }
    if (num == 0) {
        return h->min;
    }
    if (num / den >= 100) {
        num = 100;
        den = 1;
    }
    u128 prod = (u128)num * h->count;
    u128 div = (u128)100 * den;
    u128 r128 = (prod + div - 1) / div;
    uint64_t rank = r128 > h->count ? h->count : (uint64_t)r128;
    if (rank < 1) {
        rank = 1;
    }
    uint64_t cum = 0;
    int64_t v = h->max;
    for (int32_t i = h->lo_idx; i <= h->hi_idx; i++) {
        cum += h->counts[i];
        if (cum >= rank) {
            v = slot_highest(i);
            break;
        }
    }
    if (v > h->max) {
        v = h->max;
    }
    if (v < h->min) {
        v = h->min;
    }
    return v;
}

cf_err cf_hist_percentile_str(const cf_hist *h, const char *p, int64_t *out)
{
    CF_ASSERT(h != NULL && out != NULL);
    if (p == NULL || *p == '\0') {
        return CF_E_INVAL;
    }
    uint64_t num = 0;
    uint64_t den = 1;
    int int_digits = 0;
    int frac_digits = 0;
    const char *s = p;
    while (*s >= '0' && *s <= '9') {
        if (++int_digits > 3) {
            return CF_E_INVAL;
        }
        num = num * 10 + (uint64_t)(*s - '0');
        s++;
    }
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            if (++frac_digits > 12) {
                return CF_E_INVAL;
            }
            num = num * 10 + (uint64_t)(*s - '0');
            den *= 10;
            s++;
        }
        if (frac_digits == 0) {
            return CF_E_INVAL;
        }
    }
    if (*s != '\0' || int_digits == 0) {
        return CF_E_INVAL;
    }
    if (num > 100 * den) {
        return CF_E_INVAL;
    }
    *out = cf_hist_percentile(h, num, den);
    return CF_OK;
}

void cf_hist_foreach(const cf_hist *h, void (*cb)(void *opaque, int64_t upper, uint64_t count),
                     void *opaque)
{
    CF_ASSERT(h != NULL && cb != NULL);
    for (int32_t i = h->lo_idx; i <= h->hi_idx; i++) {
        if (h->counts[i] != 0) {
            cb(opaque, slot_highest(i), h->counts[i]);
        }
    }
}
