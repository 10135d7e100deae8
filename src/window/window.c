/*
 * Event-time window operator (include/confide/window.h, docs/windows.md).
 *
 * State: one entry per (window start, group key) in a flat pool of fixed-size records
 * (header, key bytes, value bytes), indexed by an open-addressing table of 64-bit slots
 * (32-bit hash fragment | entry index + 1) with linear probing and backward-shift deletion,
 * so the pool never moves an entry while it lives and the index never holds tombstones.
 * Entries of one window are chained through their `next` field, so firing and purging a
 * window touch only its own entries. Open windows sit in an array sorted by start; the
 * newest are at the end, where nearly every event lands.
 *
 * Bounds: pool and index double (amortized, never per event) up to the largest power of two
 * whose bytes fit memory_limit_bytes; past that, a new (window, key) returns CF_E_LIMIT
 * before anything is changed. Open windows are bounded by windows_max the same way.
 *
 * The key hash is a keyed multiply-xor hash (not cryptographic); its seed is random per
 * instance so crafted account ids cannot target one probe chain across runs.
 *
 * Threads: an instance belongs to one thread. Callbacks run on that thread and must not
 * call back into the operator. Ownership: keys and values passed in are borrowed and copied.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "confide/core.h"
#include "confide/window.h"

#define NIL UINT32_MAX
#define TS_LIMIT ((int64_t)1 << 62)
#define SPAN_LIMIT ((int64_t)1000000000000000) /* 1e15 us, ~31 years */
#define INITIAL_ENTRIES 1024u
#define FREE_MARK 0xFFFFu

typedef struct entry {
    int64_t start;
    uint64_t hash;
    uint64_t count;
    uint64_t first;
    uint64_t last;
    uint32_t next;    /* next entry of the same window; free-list link when free */
    uint16_t key_len; /* FREE_MARK when the entry is free */
    uint8_t dirty;
    uint8_t pad_;
    /* uint8_t key[key_max]; then the value at value_off */
} entry;

typedef struct win {
    int64_t start;
    uint32_t head;
    uint32_t n;
    uint8_t fired;
} win;

struct cf_window {
    cf_window_conf conf;
    int64_t size;
    int64_t slide;
    size_t stride;
    size_t value_off;
    uint64_t seed;

    uint8_t *pool;
    uint32_t cap;  /* entries allocated */
    uint32_t used; /* high-water mark of entries handed out */
    uint32_t free_head;
    uint32_t max_entries; /* what memory_limit_bytes allows */
    uint64_t *slots;
    uint32_t slot_mask;

    win *wins;
    size_t nwins;
    size_t wins_cap;

    entry **scratch; /* for sorting a window's entries when it fires */
    size_t scratch_cap;

    int64_t wm;
    int64_t max_ts;
    bool have_ts;
    int64_t next_deadline; /* smallest end (unfired) or end + lateness (fired) */
    int64_t last_activity_ns;
    uint64_t events_since_tick;
    cf_window_stats st;
};

/* ---- hashing ---------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t hash_key(const uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t v = 0;
        memcpy(&v, p, n);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    return h;
}

static inline uint64_t entry_hash(uint64_t keyhash, int64_t start)
{
    return mix64(keyhash ^ ((uint64_t)start * 0xD6E8FEB86659FD93ULL));
}

/* ---- pool ------------------------------------------------------------------------------- */

static inline entry *ent(const cf_window *w, uint32_t i)
{
    return (entry *)(void *)(w->pool + (size_t)i * w->stride);
}

static inline uint8_t *ent_key(entry *e)
{
    return (uint8_t *)(e + 1);
}

static inline void *ent_val(const cf_window *w, entry *e)
{
    return (uint8_t *)e + w->value_off;
}

static void *state_alloc(const cf_window *w, size_t n)
{
    if (w->conf.secure_memory) {
        void *p = sodium_malloc(n);
        if (p != NULL) {
            memset(p, 0, n);
        }
        return p;
    }
    return cf_calloc(1, n);
}

static void state_free(const cf_window *w, void *p, size_t n)
{
    if (p == NULL) {
        return;
    }
    if (w->conf.secure_memory) {
        (void)n;
        sodium_free(p); /* wipes before unmapping */
        return;
    }
    cf_free(p);
}

static size_t table_bytes(size_t entries, size_t stride)
{
    return entries * stride + 2 * entries * sizeof(uint64_t);
}

static void index_insert(cf_window *w, uint64_t hash, uint32_t idx)
{
    uint32_t pos = (uint32_t)hash & w->slot_mask;
    while (w->slots[pos] != 0) {
        pos = (pos + 1) & w->slot_mask;
    }
    w->slots[pos] = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
}

/* Doubles pool and index. The index is rebuilt from the windows' chains. */
static cf_err grow(cf_window *w)
{
    uint32_t ncap = w->cap == 0 ? INITIAL_ENTRIES : w->cap * 2;
    if (ncap > w->max_entries) {
        ncap = w->max_entries;
    }
    if (ncap <= w->cap) {
        return CF_E_LIMIT;
    }
    uint8_t *npool = state_alloc(w, (size_t)ncap * w->stride);
    uint64_t *nslots = cf_calloc((size_t)ncap * 2, sizeof(uint64_t));
    if (npool == NULL || nslots == NULL) {
        state_free(w, npool, (size_t)ncap * w->stride);
        cf_free(nslots);
        return CF_E_NOMEM;
    }
    if (w->pool != NULL) {
        memcpy(npool, w->pool, (size_t)w->used * w->stride);
    }
    state_free(w, w->pool, (size_t)w->cap * w->stride);
    cf_free(w->slots);
    w->pool = npool;
    w->slots = nslots;
    w->slot_mask = ncap * 2 - 1;
    w->cap = ncap;
    for (size_t i = 0; i < w->nwins; i++) {
        for (uint32_t k = w->wins[i].head; k != NIL; k = ent(w, k)->next) {
            index_insert(w, ent(w, k)->hash, k);
        }
    }
    w->st.state_bytes = table_bytes(ncap, w->stride) + w->wins_cap * sizeof(win);
    return CF_OK;
}

static uint32_t find_entry(const cf_window *w, uint64_t hash, int64_t start, const uint8_t *key,
                           size_t key_len)
{
    if (w->slots == NULL) {
        return NIL;
    }
    uint32_t pos = (uint32_t)hash & w->slot_mask;
    uint64_t tag = (uint64_t)(uint32_t)hash << 32;
    for (;;) {
        uint64_t s = w->slots[pos];
        if (s == 0) {
            return NIL;
        }
        if ((s & 0xFFFFFFFF00000000ULL) == tag) {
            uint32_t idx = (uint32_t)(s & 0xFFFFFFFFu) - 1;
            entry *e = ent(w, idx);
            if (e->start == start && e->key_len == key_len &&
                memcmp(ent_key(e), key, key_len) == 0) {
                return idx;
            }
        }
        pos = (pos + 1) & w->slot_mask;
    }
}

static void index_remove(cf_window *w, uint64_t hash, uint32_t idx)
{
    uint32_t mask = w->slot_mask;
    uint32_t pos = (uint32_t)hash & mask;
    uint64_t want = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
    while (w->slots[pos] != want) {
        CF_DASSERT(w->slots[pos] != 0);
        pos = (pos + 1) & mask;
    }
    /* Backward-shift deletion: pull later members of the probe run into the hole. */
    uint32_t hole = pos;
    uint32_t j = pos;
    for (;;) {
        j = (j + 1) & mask;
        uint64_t s = w->slots[j];
        if (s == 0) {
            break;
        }
        uint32_t home = (uint32_t)(s >> 32) & mask;
        /* Move s into the hole when its home is not cyclically within (hole, j]. */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            w->slots[hole] = s;
            hole = j;
        }
    }
    w->slots[hole] = 0;
}

static uint32_t alloc_entry(cf_window *w)
{
    uint32_t idx;
    if (w->free_head != NIL) {
        idx = w->free_head;
        w->free_head = ent(w, idx)->next;
    } else {
        CF_ASSERT(w->used < w->cap);
        idx = w->used++;
    }
    return idx;
}

static void free_entry(cf_window *w, uint32_t idx)
{
    entry *e = ent(w, idx);
    if (w->conf.secure_memory) {
        sodium_memzero(e, w->stride);
    }
    e->key_len = FREE_MARK;
    e->next = w->free_head;
    w->free_head = idx;
}

/* ---- windows ---------------------------------------------------------------------------- */

static inline int64_t win_end(const cf_window *w, const win *x)
{
    return x->start + w->size;
}

static inline int64_t win_deadline(const cf_window *w, const win *x)
{
    return x->fired ? win_end(w, x) + w->conf.lateness_us : win_end(w, x);
}

static void recompute_deadline(cf_window *w)
{
    int64_t d = INT64_MAX;
    for (size_t i = 0; i < w->nwins; i++) {
        int64_t x = win_deadline(w, &w->wins[i]);
        if (x < d) {
            d = x;
        }
        if (!w->wins[i].fired) {
            break; /* later windows end later */
        }
    }
    w->next_deadline = d;
}

/* Index of the window with @p start, or -1. Searches from the newest end. */
static ptrdiff_t find_win(const cf_window *w, int64_t start)
{
    for (size_t i = w->nwins; i > 0; i--) {
        if (w->wins[i - 1].start == start) {
            return (ptrdiff_t)(i - 1);
        }
        if (w->wins[i - 1].start < start) {
            return -1;
        }
    }
    return -1;
}

static cf_err insert_win(cf_window *w, int64_t start, size_t *at)
{
    if (w->nwins == w->wins_cap) {
        size_t ncap = w->wins_cap == 0 ? 16 : w->wins_cap * 2;
        if (ncap > w->conf.windows_max) {
            ncap = w->conf.windows_max;
        }
        if (ncap <= w->nwins) {
            return CF_E_LIMIT;
        }
        win *n = cf_realloc(w->wins, ncap * sizeof(win));
        if (n == NULL) {
            return CF_E_NOMEM;
        }
        w->wins = n;
        w->st.state_bytes += (ncap - w->wins_cap) * sizeof(win);
        w->wins_cap = ncap;
    }
    size_t i = w->nwins;
    while (i > 0 && w->wins[i - 1].start > start) {
        i--;
    }
    memmove(&w->wins[i + 1], &w->wins[i], (w->nwins - i) * sizeof(win));
    /* A window first seen after the watermark passed its end (an event within allowed
     * lateness for a window that had no events) counts as fired: its results go out at once
     * as updates instead of waiting for the next watermark move. */
    bool late = start + w->size <= w->wm;
    w->wins[i] = (win){.start = start, .head = NIL, .n = 0, .fired = late ? 1 : 0};
    w->nwins++;
    if (late) {
        w->st.windows_fired++;
    }
    if (win_deadline(w, &w->wins[i]) < w->next_deadline) {
        w->next_deadline = win_deadline(w, &w->wins[i]);
    }
    *at = i;
    return CF_OK;
}

static void emit_entry(cf_window *w, int64_t start, entry *e, bool update)
{
    cf_window_result r = {
        .window_start_us = start,
        .window_end_us = start + w->size,
        .key = ent_key(e),
        .key_len = e->key_len,
        .value = ent_val(w, e),
        .count = e->count,
        .first_index = e->first,
        .last_index = e->last,
        .update = update,
    };
    e->dirty = 0;
    w->st.results++;
    if (update) {
        w->st.updates++;
    }
    w->conf.on_result(w->conf.opaque, &r);
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a;
    const entry *y = *(const entry *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp((const uint8_t *)(x + 1), (const uint8_t *)(y + 1), n);
    if (c != 0) {
        return c;
    }
    return (int)x->key_len - (int)y->key_len;
}

/* Emits a window's entries in key order, so output does not depend on arrival order. */
static void fire_win(cf_window *w, win *x)
{
    size_t n = 0;
    if (x->n > 0 && w->scratch_cap < x->n) {
        entry **s = cf_realloc(w->scratch, (size_t)x->n * sizeof(*s));
        if (s != NULL) {
            w->scratch = s;
            w->scratch_cap = x->n;
        }
    }
    if (w->scratch_cap >= x->n) {
        for (uint32_t k = x->head; k != NIL; k = ent(w, k)->next) {
            w->scratch[n++] = ent(w, k);
        }
        qsort(w->scratch, n, sizeof(*w->scratch), cmp_entry);
        for (size_t i = 0; i < n; i++) {
            emit_entry(w, x->start, w->scratch[i], false);
        }
    } else {
        /* No memory to sort: emit in chain order rather than lose or delay results. */
        for (uint32_t k = x->head; k != NIL; k = ent(w, k)->next) {
            emit_entry(w, x->start, ent(w, k), false);
        }
    }
    x->fired = 1;
    w->st.windows_fired++;
}

static void purge_win(cf_window *w, size_t i)
{
    win *x = &w->wins[i];
    uint32_t k = x->head;
    while (k != NIL) {
        entry *e = ent(w, k);
        uint32_t next = e->next;
        index_remove(w, e->hash, k);
        free_entry(w, k);
        w->st.keys_live--;
        k = next;
    }
    memmove(&w->wins[i], &w->wins[i + 1], (w->nwins - i - 1) * sizeof(win));
    w->nwins--;
}

static void advance_to(cf_window *w, int64_t wm)
{
    if (wm <= w->wm) {
        return;
    }
    w->wm = wm;
    if (wm < w->next_deadline) {
        return;
    }
    size_t i = 0;
    while (i < w->nwins) {
        win *x = &w->wins[i];
        int64_t end = win_end(w, x);
        if (end > wm) {
            break;
        }
        if (!x->fired) {
            fire_win(w, x);
        }
        if (end + w->conf.lateness_us <= wm) {
            purge_win(w, i);
        } else {
            i++;
        }
    }
    recompute_deadline(w);
}

/* ---- public API ------------------------------------------------------------------------- */

void cf_window_conf_default(cf_window_conf *c)
{
    memset(c, 0, sizeof(*c));
    c->key_max = 64;
    c->memory_limit_bytes = (size_t)256 << 20;
    c->windows_max = 65536;
}

static cf_err wplain_add(void *dst, const void *src)
{
    cf_window_plain *d = dst;
    const cf_window_plain *s = src;
    if (d->overflow != 0) {
        return CF_OK; /* already reported once for this sum */
    }
    if (s->overflow != 0 || !cf_add_i64(d->sum_minor, s->sum_minor, &d->sum_minor)) {
        d->overflow = 1;
        d->sum_minor = 0;
        return CF_E_OVERFLOW;
    }
    return CF_OK;
}

static void wplain_zero(void *dst)
{
    memset(dst, 0, sizeof(cf_window_plain));
}

const cf_window_value_ops cf_window_plain_ops = {
    .size = sizeof(cf_window_plain),
    .zero = wplain_zero,
    .add = wplain_add,
};

const char *cf_window_late_reason_name(cf_window_late_reason r)
{
    switch (r) {
    case CF_WINDOW_LATE_BEYOND_LATENESS:
        return "beyond allowed lateness";
    case CF_WINDOW_LATE_PARTIAL:
        return "beyond allowed lateness for some sliding windows";
    }
    return "unknown";
}

cf_err cf_window_create(cf_window **out, const cf_window_conf *conf, char *errstr,
                        size_t errstr_size)
{
    cf_window *w = NULL;
    cf_err err;
    const cf_window_conf *c = conf;
    CF_ASSERT(out != NULL && conf != NULL);
    *out = NULL;
    if (c->size_us <= 0 || c->size_us > SPAN_LIMIT) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window size must be in 1..1e15 us");
    }
    if (c->slide_us < 0 || c->slide_us > c->size_us) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "window slide must be 0 (tumbling) or in 1..size");
    }
    if (c->max_delay_us < 0 || c->max_delay_us > SPAN_LIMIT) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "window max_delay must be in 0..1e15 us");
    }
    if (c->lateness_us < 0 || c->lateness_us > SPAN_LIMIT) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window lateness must be in 0..1e15 us");
    }
    if (c->idle_timeout_ns < 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window idle_timeout must be >= 0");
    }
    if (c->key_max == 0 || c->key_max > CF_WINDOW_KEY_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window key_max must be in 1..%d",
                          CF_WINDOW_KEY_MAX);
    }
    if (c->value.size == 0 || c->value.size > 256 || c->value.zero == NULL ||
        c->value.add == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "window value descriptor needs size 1..256, zero and add");
    }
    if (c->on_result == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window needs a result callback");
    }
    if (c->windows_max < 1 || c->windows_max > ((size_t)1 << 24)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "window windows_max must be in 1..2^24");
    }
    if (c->secure_memory && cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    w = cf_calloc(1, sizeof(*w));
    if (w == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    w->conf = *c;
    w->size = c->size_us;
    w->slide = c->slide_us == 0 ? c->size_us : c->slide_us;
    size_t key_area = (sizeof(entry) + c->key_max + 7) & ~(size_t)7;
    w->value_off = key_area;
    w->stride = key_area + ((c->value.size + 7) & ~(size_t)7);
    /* The largest power-of-two entry count whose pool and index fit the limit. */
    uint64_t max = 0;
    for (uint64_t n = 1; n <= ((uint64_t)1 << 30); n <<= 1) {
        if (table_bytes(n, w->stride) > c->memory_limit_bytes) {
            break;
        }
        max = n;
    }
    if (max < 64) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "window memory_limit_bytes %zu holds fewer than 64 keys (%zu bytes each)",
                         c->memory_limit_bytes, w->stride + 2 * sizeof(uint64_t));
        goto fail;
    }
    w->max_entries = (uint32_t)max;
    w->free_head = NIL;
    randombytes_buf(&w->seed, sizeof(w->seed));
    w->wm = INT64_MIN;
    w->next_deadline = INT64_MAX;
    w->last_activity_ns = INT64_MIN;
    w->st.keys_max = max;
    w->st.entry_bytes = w->stride + 2 * sizeof(uint64_t);
    *out = w;
    return CF_OK;
fail:
    cf_free(w);
    return err;
}

void cf_window_destroy(cf_window *w)
{
    if (w == NULL) {
        return;
    }
    state_free(w, w->pool, (size_t)w->cap * w->stride);
    cf_free(w->slots);
    cf_free(w->wins);
    cf_free(w->scratch);
    cf_free(w);
}

static inline int64_t floor_mod(int64_t a, int64_t m)
{
    int64_t r = a % m;
    return r < 0 ? r + m : r;
}

cf_err cf_window_add(cf_window *w, const uint8_t *key, size_t key_len, int64_t ts_us, uint64_t seq,
                     const void *value)
{
    CF_DASSERT(w != NULL && value != NULL);
    if (key_len > w->conf.key_max || (key == NULL && key_len > 0) || ts_us > TS_LIMIT ||
        ts_us < -TS_LIMIT) {
        return CF_E_INVAL;
    }
    static const uint8_t empty_key[1] = {0};
    if (key == NULL) {
        key = empty_key;
    }
    uint64_t kh = hash_key(key, key_len, w->seed);
    int64_t last_start = ts_us - floor_mod(ts_us, w->slide);
    int64_t lateness = w->conf.lateness_us;
    uint32_t total = 0;
    uint32_t dropped = 0;
    uint32_t live = 0;
    int64_t first_live = INT64_MAX;

    /* Pass 1: classify the event's windows; oldest first. */
    int64_t s0 = last_start;
    while (s0 - w->slide > ts_us - w->size) {
        s0 -= w->slide;
    }
    for (int64_t s = s0; s <= last_start; s += w->slide) {
        total++;
        if (s + w->size + lateness <= w->wm) {
            dropped++;
        } else {
            if (first_live == INT64_MAX) {
                first_live = s;
            }
            live++;
        }
    }

    /* Capacity: refuse the whole event before changing anything. The exact count of new
     * entries is only needed near a limit; elsewhere `live` is a safe upper bound. */
    if (live > 0) {
        if (w->st.keys_live + live > w->max_entries || w->nwins + live > w->conf.windows_max) {
            uint64_t need = 0;
            uint32_t need_wins = 0;
            for (int64_t s = first_live; s <= last_start; s += w->slide) {
                if (find_win(w, s) < 0) {
                    need_wins++;
                    need++;
                } else if (find_entry(w, entry_hash(kh, s), s, key, key_len) == NIL) {
                    need++;
                }
            }
            if (w->st.keys_live + need > w->max_entries ||
                w->nwins + need_wins > w->conf.windows_max) {
                w->st.limit_rejections++;
                return CF_E_LIMIT;
            }
        }
        while (w->st.keys_live + live > w->cap && w->cap < w->max_entries) {
            cf_err e = grow(w);
            if (e != CF_OK) {
                return e;
            }
        }
    }

    /* Sliding windows touch size/slide entries at unrelated places in the table: issue
     * the index loads for all of them first so the cache misses overlap. */
    if (live > 1 && w->slots != NULL) {
        for (int64_t s = first_live; s <= last_start; s += w->slide) {
            __builtin_prefetch(&w->slots[(uint32_t)entry_hash(kh, s) & w->slot_mask]);
        }
    }
    cf_err ret = CF_OK;
    bool late_update = false;
    for (int64_t s = first_live; live > 0 && s <= last_start; s += w->slide) {
        uint64_t h = entry_hash(kh, s);
        ptrdiff_t wi = find_win(w, s);
        uint32_t idx = NIL;
        if (wi < 0) {
            size_t at;
            cf_err e = insert_win(w, s, &at);
            if (e != CF_OK) {
                return e; /* only on allocation failure: pass 1 checked the bound */
            }
            wi = (ptrdiff_t)at;
        } else {
            idx = find_entry(w, h, s, key, key_len);
        }
        win *x = &w->wins[wi];
        entry *e;
        if (idx == NIL) {
            idx = alloc_entry(w);
            e = ent(w, idx);
            e->start = s;
            e->hash = h;
            e->count = 0;
            e->first = seq;
            e->last = seq;
            e->key_len = (uint16_t)key_len;
            e->dirty = 0;
            if (key_len > 0) {
                memcpy(ent_key(e), key, key_len);
            }
            w->conf.value.zero(ent_val(w, e));
            e->next = x->head;
            x->head = idx;
            x->n++;
            index_insert(w, h, idx);
            w->st.keys_live++;
        } else {
            e = ent(w, idx);
        }
        e->count++;
        if (seq < e->first) {
            e->first = seq;
        }
        if (seq > e->last) {
            e->last = seq;
        }
        cf_err ve = w->conf.value.add(ent_val(w, e), value);
        if (ve != CF_OK) {
            w->st.value_errors++;
            ret = ve;
        }
        e->dirty = 1;
        if (x->fired) {
            late_update = true;
            emit_entry(w, s, e, true);
        }
    }
    w->st.events++;
    w->events_since_tick++;
    if (late_update) {
        w->st.late_updates++;
    }
    if (dropped > 0) {
        w->st.late_events++;
        if (w->conf.on_late != NULL) {
            cf_window_late l = {
                .ts_us = ts_us,
                .seq = seq,
                .key = key,
                .key_len = key_len,
                .watermark_us = w->wm,
                .windows_dropped = dropped,
                .windows_total = total,
                .reason =
                    dropped == total ? CF_WINDOW_LATE_BEYOND_LATENESS : CF_WINDOW_LATE_PARTIAL,
            };
            w->conf.on_late(w->conf.opaque, &l);
        }
    }
    if (!w->have_ts || ts_us > w->max_ts) {
        w->max_ts = ts_us;
        w->have_ts = true;
        advance_to(w, ts_us - w->conf.max_delay_us);
    }
    return ret;
}

void cf_window_advance(cf_window *w, int64_t watermark_us)
{
    advance_to(w, watermark_us);
}

bool cf_window_tick(cf_window *w, int64_t now_ns)
{
    if (w->conf.idle_timeout_ns == 0) {
        return false;
    }
    if (w->events_since_tick > 0 || w->last_activity_ns == INT64_MIN) {
        w->events_since_tick = 0;
        w->last_activity_ns = now_ns;
        return false;
    }
    int64_t idle = now_ns - w->last_activity_ns;
    if (idle < w->conf.idle_timeout_ns || !w->have_ts) {
        return false;
    }
    int64_t elapsed_us = idle / 1000;
    if (elapsed_us > TS_LIMIT) {
        elapsed_us = TS_LIMIT;
    }
    int64_t target = w->max_ts - w->conf.max_delay_us + elapsed_us;
    if (target <= w->wm) {
        return false;
    }
    w->st.idle_advances++;
    advance_to(w, target);
    return true;
}

void cf_window_flush(cf_window *w)
{
    advance_to(w, INT64_MAX);
}

int64_t cf_window_watermark(const cf_window *w)
{
    return w->wm;
}

void cf_window_stats_get(const cf_window *w, cf_window_stats *out)
{
    *out = w->st;
    out->windows_open = w->nwins;
    out->watermark_us = w->wm;
}

/* ---- snapshot --------------------------------------------------------------------------- */

/*
 * Layout (little-endian): "CFWSNAP1", size, slide, value_size u32, key_max u32, wm,
 * max_ts, have_ts u8, nwins u32, then per window: start, fired u8, n u32, and per entry:
 * key_len u16, key, count, first, last, dirty u8, value bytes; finally a 64-bit checksum of
 * everything before it. Values are copied byte for byte (the value type is plain bytes).
 */
static const uint8_t SNAP_MAGIC[8] = {'C', 'F', 'W', 'S', 'N', 'A', 'P', '1'};

static void put_u64(uint8_t **p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        (*p)[i] = (uint8_t)(v >> (8 * i));
    }
    *p += 8;
}

static void put_u32(uint8_t **p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        (*p)[i] = (uint8_t)(v >> (8 * i));
    }
    *p += 4;
}

static uint64_t snap_checksum(const uint8_t *p, size_t n)
{
    return mix64(hash_key(p, n, 0x636f6e666964655fULL) ^ n);
}

cf_err cf_window_snapshot(const cf_window *w, uint8_t **out, size_t *len)
{
    size_t vsz = w->conf.value.size;
    size_t n = 8 + 8 + 8 + 4 + 4 + 8 + 8 + 1 + 4 + 8;
    for (size_t i = 0; i < w->nwins; i++) {
        n += 8 + 1 + 4;
        for (uint32_t k = w->wins[i].head; k != NIL; k = ent(w, k)->next) {
            n += 2 + ent(w, k)->key_len + 8 + 8 + 8 + 1 + vsz;
        }
    }
    uint8_t *buf = cf_malloc(n);
    if (buf == NULL) {
        return CF_E_NOMEM;
    }
    uint8_t *p = buf;
    memcpy(p, SNAP_MAGIC, 8);
    p += 8;
    put_u64(&p, (uint64_t)w->size);
    put_u64(&p, (uint64_t)w->slide);
    put_u32(&p, (uint32_t)vsz);
    put_u32(&p, (uint32_t)w->conf.key_max);
    put_u64(&p, (uint64_t)w->wm);
    put_u64(&p, (uint64_t)w->max_ts);
    *p++ = w->have_ts ? 1 : 0;
    put_u32(&p, (uint32_t)w->nwins);
    for (size_t i = 0; i < w->nwins; i++) {
        const win *x = &w->wins[i];
        put_u64(&p, (uint64_t)x->start);
        *p++ = x->fired;
        put_u32(&p, x->n);
        for (uint32_t k = x->head; k != NIL; k = ent(w, k)->next) {
            entry *e = ent(w, k);
            *p++ = (uint8_t)(e->key_len & 0xFF);
            *p++ = (uint8_t)(e->key_len >> 8);
            memcpy(p, ent_key(e), e->key_len);
            p += e->key_len;
            put_u64(&p, e->count);
            put_u64(&p, e->first);
            put_u64(&p, e->last);
            *p++ = e->dirty;
            memcpy(p, ent_val(w, e), vsz);
            p += vsz;
        }
    }
    put_u64(&p, snap_checksum(buf, (size_t)(p - buf)));
    CF_ASSERT((size_t)(p - buf) == n);
    *out = buf;
    *len = n;
    return CF_OK;
}

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
} reader;

static uint64_t get_u64(reader *r)
{
    if (r->end - r->p < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)r->p[i] << (8 * i);
    }
    r->p += 8;
    return v;
}

static uint32_t get_u32(reader *r)
{
    if (r->end - r->p < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)r->p[i] << (8 * i);
    }
    r->p += 4;
    return v;
}

static uint8_t get_u8(reader *r)
{
    if (r->p >= r->end) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static const uint8_t *get_bytes(reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

cf_err cf_window_restore(cf_window *w, const uint8_t *buf, size_t len, char *errstr,
                         size_t errstr_size)
{
    if (w->nwins != 0 || w->have_ts || w->wm != INT64_MIN) {
        return cf_err_set(CF_E_STATE, errstr, errstr_size,
                          "window restore needs a freshly created operator");
    }
    if (len < 8 + 8 || memcmp(buf, SNAP_MAGIC, 8) != 0) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "window snapshot: bad magic");
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) {
        sum |= (uint64_t)buf[len - 8 + (size_t)i] << (8 * i);
    }
    if (sum != snap_checksum(buf, len - 8)) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "window snapshot: bad checksum");
    }
    reader r = {.p = buf + 8, .end = buf + len - 8, .bad = false};
    int64_t size = (int64_t)get_u64(&r);
    int64_t slide = (int64_t)get_u64(&r);
    uint32_t vsz = get_u32(&r);
    uint32_t key_max = get_u32(&r);
    if (r.bad || size != w->size || slide != w->slide || vsz != w->conf.value.size ||
        key_max > w->conf.key_max) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "window snapshot has another shape (size, slide, value size or key_max)");
    }
    int64_t wm = (int64_t)get_u64(&r);
    int64_t max_ts = (int64_t)get_u64(&r);
    uint8_t have_ts = get_u8(&r);
    uint32_t nw = get_u32(&r);
    cf_err err = CF_OK;
    int64_t prev_start = INT64_MIN;
    for (uint32_t i = 0; i < nw && !r.bad; i++) {
        int64_t start = (int64_t)get_u64(&r);
        uint8_t fired = get_u8(&r);
        uint32_t ne = get_u32(&r);
        if (r.bad || start <= prev_start || start > TS_LIMIT || start < -TS_LIMIT - w->size) {
            r.bad = true;
            break;
        }
        prev_start = start;
        size_t at;
        err = insert_win(w, start, &at);
        if (err != CF_OK) {
            goto fail;
        }
        w->wins[at].fired = fired ? 1 : 0;
        for (uint32_t j = 0; j < ne; j++) {
            uint32_t kl = get_u8(&r);
            kl |= (uint32_t)get_u8(&r) << 8;
            const uint8_t *key = get_bytes(&r, kl);
            uint64_t count = get_u64(&r);
            uint64_t first = get_u64(&r);
            uint64_t last = get_u64(&r);
            uint8_t dirty = get_u8(&r);
            const uint8_t *val = get_bytes(&r, vsz);
            if (r.bad || kl > w->conf.key_max) {
                r.bad = true;
                break;
            }
            uint64_t h = entry_hash(hash_key(key, kl, w->seed), start);
            if (find_entry(w, h, start, key, kl) != NIL) {
                r.bad = true;
                break;
            }
            if (w->st.keys_live + 1 > w->max_entries) {
                err = cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                                 "window snapshot does not fit memory_limit_bytes");
                goto fail;
            }
            if (w->st.keys_live + 1 > w->cap) {
                err = grow(w);
                if (err != CF_OK) {
                    cf_err_set(err, errstr, errstr_size, "window restore: %s", cf_strerror(err));
                    goto fail;
                }
            }
            win *x = &w->wins[at];
            uint32_t idx = alloc_entry(w);
            entry *e = ent(w, idx);
            e->start = start;
            e->hash = h;
            e->count = count;
            e->first = first;
            e->last = last;
            e->key_len = (uint16_t)kl;
            e->dirty = dirty ? 1 : 0;
            if (kl > 0) {
                memcpy(ent_key(e), key, kl);
            }
            memcpy(ent_val(w, e), val, vsz);
            e->next = x->head;
            x->head = idx;
            x->n++;
            index_insert(w, h, idx);
            w->st.keys_live++;
        }
    }
    if (r.bad || r.p != r.end) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "window snapshot: malformed body");
        goto fail;
    }
    w->wm = wm;
    w->max_ts = max_ts;
    w->have_ts = have_ts != 0;
    recompute_deadline(w);
    return CF_OK;
fail:
    /* Leave the operator empty and usable. */
    while (w->nwins > 0) {
        purge_win(w, w->nwins - 1);
    }
    w->wm = INT64_MIN;
    w->have_ts = false;
    w->next_deadline = INT64_MAX;
    return err;
}
