/*
 * Event-time window operator (include/confide/window.h, docs/windows.md).
 *
 * Panes: state is kept per (pane, group key), where a pane is a slice of event time of
 * length gcd(size, slide) aligned to the epoch. Every window is a whole number of panes, so
 * an event updates exactly one entry whatever the number of sliding windows it belongs to;
 * a window's result is combined from its panes (value_ops.add) when it fires. For tumbling
 * windows a pane is the window; sliding windows combine each key's panes incrementally with
 * a two-stacks aggregate (see "sliding aggregation" below), O(1) adds per key and firing
 * instead of size/slide. Which windows have fired and which are purged follows from
 * the watermark alone (fired: end <= W; purged: end + lateness <= W), so no per-window flag
 * exists and a snapshot is just panes, entries and the watermark.
 *
 * State layout: entries are fixed-size records (header, key bytes, value bytes) in a flat
 * pool, indexed by an open-addressing table of 64-bit slots (32-bit hash fragment | entry
 * index + 1) with linear probing and backward-shift deletion, so the pool never moves an
 * entry while it lives and the index has no tombstones. Entries of a pane are chained
 * through `next`, so firing and purging touch only their own entries. Panes sit in an array
 * sorted by start.
 *
 * Bounds: pool and index double (amortized, never per event) up to the largest power of two
 * whose bytes fit memory_limit_bytes; past that, a new (pane, key) returns CF_E_LIMIT before
 * anything is changed. Panes are bounded by windows_max the same way.
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
#define INITIAL_KEYS 64u
#define FREE_MARK 0xFFFFu

typedef struct entry {
    int64_t start; /* pane start */
    uint64_t hash;
    uint64_t count;
    uint64_t first;
    uint64_t last;
    uint32_t next;    /* next entry of the same pane; free-list link when free */
    uint16_t key_len; /* FREE_MARK when the entry is free */
    uint16_t pad_;
    /* uint8_t key[key_max]; then the value at value_off */
} entry;

/* Sliding windows only: per-entry links into its key's list (ascending pane start) and the
 * suffix aggregate of the key's front stack (see "sliding aggregation" below); the
 * aggregate value follows at ext_off + sizeof(ext). */
typedef struct ext {
    uint32_t kr;    /* key record */
    uint32_t knext; /* next entry of the same key (later pane) */
    uint32_t kprev;
    uint32_t pad_;
    uint64_t count;
    uint64_t first;
    uint64_t last;
} ext;

/* Sliding windows only: one record per live key. Its entries in pane [a, m) form the front
 * stack (each holding the aggregate of itself and every later front entry), those in [m, b)
 * the back stack (aggregated in count/first/last and the value after the record); b is the
 * end of the last window queried, a its start. */
typedef struct krec {
    int64_t a;
    int64_t m;
    int64_t b;
    uint64_t kh;
    uint64_t count;
    uint64_t first;
    uint64_t last;
    uint32_t head; /* oldest entry; NIL marks a free record (next free in tail) */
    uint32_t tail;
    uint32_t fcur; /* first entry with start >= a */
    uint32_t bcur; /* first entry with start >= b */
    uint32_t pos;  /* index in the active array, NIL when not active */
    uint32_t pad_;
} krec;

typedef struct pane {
    int64_t start;
    uint32_t head;
    uint32_t n;
} pane;

struct cf_window {
    cf_window_conf conf;
    int64_t size;
    int64_t slide;
    int64_t pane; /* gcd(size, slide) */
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

    pane *panes;
    size_t npanes;
    size_t panes_cap;

    void *scratch; /* sort records of a firing window's entries, then their pointers */
    size_t scratch_bytes;
    void *acc; /* one value: a key's combination across panes */

    /* Sliding aggregation (sliding windows only; tumbling windows have one pane each). */
    bool sliding;
    size_t ext_off;
    size_t kstride;
    uint8_t *kpool;   /* kcap key records */
    uint64_t *kslots; /* key index, kmask + 1 slots */
    uint32_t kcap;
    uint32_t kmask;
    uint32_t nkeys; /* live key records */
    uint32_t kused;
    uint32_t kfree;
    uint32_t *act;  /* keys that may have entries in the next windows, in key order when clean */
    size_t nact;    /* at most kcap: tombstones are compacted before it would grow past */
    bool act_dirty; /* keys appended or removed since the last sort */

    int64_t wm;
    int64_t max_ts;
    bool have_ts;
    int64_t next_deadline; /* the watermark at which advance_to has work to do */
    int64_t last_activity_ns;
    uint64_t events_since_tick;
    cf_window_stats st;
};

/* ---- hashing ---------------------------------------------------------------------------- */

static inline uint64_t entry_hash(uint64_t keyhash, int64_t start)
{
    return cf_mix64(keyhash ^ ((uint64_t)start * 0xD6E8FEB86659FD93ULL));
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

/* Sliding windows: key records, their index and the active array. */
static size_t key_bytes(size_t keys, size_t kstride)
{
    return table_bytes(keys, kstride) + keys * sizeof(uint32_t);
}

static void slot_insert(uint64_t *slots, uint32_t mask, uint64_t hash, uint32_t idx)
{
    uint32_t pos = (uint32_t)hash & mask;
    while (slots[pos] != 0) {
        pos = (pos + 1) & mask;
    }
    slots[pos] = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
}

static void index_insert(cf_window *w, uint64_t hash, uint32_t idx)
{
    slot_insert(w->slots, w->slot_mask, hash, idx);
}

static inline ext *ent_ext(const cf_window *w, entry *e)
{
    return (ext *)(void *)((uint8_t *)e + w->ext_off);
}

static inline void *ext_val(ext *x)
{
    return x + 1;
}

static inline krec *kr_at(const cf_window *w, uint32_t i)
{
    return (krec *)(void *)(w->kpool + (size_t)i * w->kstride);
}

static inline void *kr_val(krec *k)
{
    return k + 1;
}

/* Doubles pool and index. The index is rebuilt from the windows' chains. */
static cf_err grow(cf_window *w)
{
    uint32_t ncap = w->cap == 0 ? INITIAL_ENTRIES : w->cap * 2;
    if (ncap > w->max_entries) {
        ncap = w->max_entries;
    }
    if (ncap <= w->cap || table_bytes(ncap, w->stride) + key_bytes(w->kcap, w->kstride) >
                              w->conf.memory_limit_bytes) {
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
    for (size_t i = 0; i < w->npanes; i++) {
        for (uint32_t k = w->panes[i].head; k != NIL; k = ent(w, k)->next) {
            index_insert(w, ent(w, k)->hash, k);
        }
    }
    w->st.state_bytes =
        table_bytes(ncap, w->stride) + w->panes_cap * sizeof(pane) + key_bytes(w->kcap, w->kstride);
    return CF_OK;
}

/* Sliding windows: doubles the key records and their index (a live key has at least one
 * entry, so never beyond the entries' bound). Entries and key records share the memory
 * limit: whichever would push the total past it is refused. */
static cf_err grow_keys(cf_window *w)
{
    uint32_t ncap = w->kcap == 0 ? INITIAL_KEYS : w->kcap * 2;
    if (ncap > w->max_entries) {
        ncap = w->max_entries;
    }
    if (ncap <= w->kcap ||
        table_bytes(w->cap, w->stride) + key_bytes(ncap, w->kstride) > w->conf.memory_limit_bytes) {
        return CF_E_LIMIT;
    }
    uint32_t *nact = cf_realloc(w->act, (size_t)ncap * sizeof(uint32_t));
    if (nact == NULL) {
        return CF_E_NOMEM;
    }
    w->act = nact; /* larger than needed until kcap follows: harmless */
    uint8_t *npool = state_alloc(w, (size_t)ncap * w->kstride);
    uint64_t *nslots = cf_calloc((size_t)ncap * 2, sizeof(uint64_t));
    if (npool == NULL || nslots == NULL) {
        state_free(w, npool, (size_t)ncap * w->kstride);
        cf_free(nslots);
        return CF_E_NOMEM;
    }
    if (w->kpool != NULL) {
        memcpy(npool, w->kpool, (size_t)w->kused * w->kstride);
    }
    state_free(w, w->kpool, (size_t)w->kcap * w->kstride);
    cf_free(w->kslots);
    w->st.state_bytes += key_bytes(ncap, w->kstride) - key_bytes(w->kcap, w->kstride);
    w->kpool = npool;
    w->kslots = nslots;
    w->kmask = ncap * 2 - 1;
    w->kcap = ncap;
    for (uint32_t k = 0; k < w->kused; k++) {
        krec *r = kr_at(w, k);
        if (r->head != NIL) {
            slot_insert(w->kslots, w->kmask, r->kh, k);
        }
    }
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

static void slot_remove(uint64_t *slots, uint32_t mask, uint64_t hash, uint32_t idx)
{
    uint32_t pos = (uint32_t)hash & mask;
    uint64_t want = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
    while (slots[pos] != want) {
        CF_DASSERT(slots[pos] != 0);
        pos = (pos + 1) & mask;
    }
    /* Backward-shift deletion: pull later members of the probe run into the hole. */
    uint32_t hole = pos;
    uint32_t j = pos;
    for (;;) {
        j = (j + 1) & mask;
        uint64_t s = slots[j];
        if (s == 0) {
            break;
        }
        uint32_t home = (uint32_t)(s >> 32) & mask;
        /* Move s into the hole when its home is not cyclically within (hole, j]. */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            slots[hole] = s;
            hole = j;
        }
    }
    slots[hole] = 0;
}

static void index_remove(cf_window *w, uint64_t hash, uint32_t idx)
{
    slot_remove(w->slots, w->slot_mask, hash, idx);
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

/* ---- panes and windows ------------------------------------------------------------------ */

static inline int64_t floor_mod(int64_t a, int64_t m)
{
    int64_t r = a % m;
    return r < 0 ? r + m : r;
}

static inline int64_t floor_to(int64_t a, int64_t m)
{
    return a - floor_mod(a, m);
}

/* Start of the first window (a multiple of slide) that contains time t. */
static inline int64_t first_win_containing(const cf_window *w, int64_t t)
{
    return floor_to(t - w->size, w->slide) + w->slide;
}

/* Start of the first window that has not fired at watermark wm (end > wm). */
static inline int64_t first_unfired(const cf_window *w, int64_t wm)
{
    return wm == INT64_MIN ? INT64_MIN : first_win_containing(w, wm);
}

/* A pane's state is needed until its last window (the one starting at or before it) is
 * purged. */
static inline int64_t pane_deadline(const cf_window *w, int64_t p)
{
    return floor_to(p, w->slide) + w->size + w->conf.lateness_us;
}

/* Index of the first pane with start >= t (npanes when none). */
static size_t lower_pane(const cf_window *w, int64_t t)
{
    size_t lo = 0, hi = w->npanes;
    if (hi > 0 && w->panes[hi - 1].start < t) {
        return hi; /* the common case: t after every pane */
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->panes[mid].start < t) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static ptrdiff_t find_pane(const cf_window *w, int64_t start)
{
    size_t i = lower_pane(w, start);
    return i < w->npanes && w->panes[i].start == start ? (ptrdiff_t)i : -1;
}

/* Earliest watermark at which advance_to has something to fire or purge. */
static void recompute_deadline(cf_window *w)
{
    int64_t d = INT64_MAX;
    if (w->npanes > 0) {
        d = pane_deadline(w, w->panes[0].start);
        int64_t u = first_unfired(w, w->wm);
        size_t i = lower_pane(w, u);
        if (i < w->npanes) {
            int64_t s = first_win_containing(w, w->panes[i].start);
            if (s < u) {
                s = u;
            }
            if (s + w->size < d) {
                d = s + w->size;
            }
        }
    }
    w->next_deadline = d;
}

static cf_err insert_pane(cf_window *w, int64_t start, size_t *at)
{
    if (w->npanes == w->panes_cap) {
        size_t ncap = w->panes_cap == 0 ? 16 : w->panes_cap * 2;
        if (ncap > w->conf.windows_max) {
            ncap = w->conf.windows_max;
        }
        if (ncap <= w->npanes) {
            return CF_E_LIMIT;
        }
        pane *n = cf_realloc(w->panes, ncap * sizeof(pane));
        if (n == NULL) {
            return CF_E_NOMEM;
        }
        w->panes = n;
        w->st.state_bytes += (ncap - w->panes_cap) * sizeof(pane);
        w->panes_cap = ncap;
    }
    size_t i = lower_pane(w, start);
    memmove(&w->panes[i + 1], &w->panes[i], (w->npanes - i) * sizeof(pane));
    w->panes[i] = (pane){.start = start, .head = NIL, .n = 0};
    w->npanes++;
    /* The new pane may bring a window to fire, or a purge, earlier than planned. */
    int64_t d = pane_deadline(w, start);
    int64_t s = first_win_containing(w, start);
    int64_t u = first_unfired(w, w->wm);
    if (s < u) {
        s = u;
    }
    if (s <= start && s + w->size < d) {
        d = s + w->size;
    }
    if (d < w->next_deadline) {
        w->next_deadline = d;
    }
    *at = i;
    return CF_OK;
}

static void emit(cf_window *w, int64_t start, const entry *e, const void *value, uint64_t count,
                 uint64_t first, uint64_t last, bool update)
{
    cf_window_result r = {
        .window_start_us = start,
        .window_end_us = start + w->size,
        .key = (const uint8_t *)(e + 1),
        .key_len = e->key_len,
        .value = value,
        .count = count,
        .first_index = first,
        .last_index = last,
        .update = update,
    };
    w->st.results++;
    if (update) {
        w->st.updates++;
    }
    w->conf.on_result(w->conf.opaque, &r);
}

/* Sorting compares 16-byte big-endian key prefixes held in the record itself, so the sort
 * touches the entries (scattered in the pool) only to break prefix ties. The order equals
 * bytewise key order with shorter keys first. */
typedef struct sortrec {
    uint64_t p0;
    uint64_t p1;
    entry *e;
} sortrec;

static inline uint64_t prefix_be(const uint8_t *k, size_t len, size_t off)
{
    uint64_t v = 0;
    for (size_t i = off; i < off + 8; i++) {
        v = (v << 8) | (i < len ? k[i] : 0);
    }
    return v;
}

static int cmp_entry(const entry *x, const entry *y)
{
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp((const uint8_t *)(x + 1), (const uint8_t *)(y + 1), n);
    if (c != 0) {
        return c;
    }
    if (x->key_len != y->key_len) {
        return (int)x->key_len - (int)y->key_len;
    }
    return x->start < y->start ? -1 : (x->start > y->start);
}

static int cmp_rec(const void *a, const void *b)
{
    const sortrec *x = a, *y = b;
    if (x->p0 != y->p0) {
        return x->p0 < y->p0 ? -1 : 1;
    }
    if (x->p1 != y->p1) {
        return x->p1 < y->p1 ? -1 : 1;
    }
    return cmp_entry(x->e, y->e);
}

static bool scratch_reserve(cf_window *w, size_t bytes)
{
    if (w->scratch_bytes >= bytes) {
        return true;
    }
    void *sc = cf_realloc(w->scratch, bytes);
    if (sc == NULL) {
        return false;
    }
    w->scratch = sc;
    w->scratch_bytes = bytes;
    return true;
}

static inline bool same_key(const entry *x, const entry *y)
{
    return x->key_len == y->key_len &&
           memcmp((const uint8_t *)(x + 1), (const uint8_t *)(y + 1), x->key_len) == 0;
}

/* Emits a run of entries of one key (sorted by pane) as one result of window @p s. */
static void emit_run(cf_window *w, int64_t s, entry **run, size_t n, bool update)
{
    if (n == 1) {
        entry *e = run[0];
        emit(w, s, e, ent_val(w, e), e->count, e->first, e->last, update);
        return;
    }
    uint64_t count = 0, first = UINT64_MAX, last = 0;
    w->conf.value.zero(w->acc);
    for (size_t i = 0; i < n; i++) {
        entry *e = run[i];
        count += e->count;
        first = e->first < first ? e->first : first;
        last = e->last > last ? e->last : last;
        if (w->conf.value.add(w->acc, ent_val(w, e)) != CF_OK) {
            w->st.value_errors++;
        }
    }
    emit(w, s, run[0], w->acc, count, first, last, update);
}

/* ---- sliding aggregation ---------------------------------------------------------------- */

/*
 * Sliding windows combine a key's panes incrementally instead of merging size/slide panes
 * per key at every firing. Each live key has a record and a list of its entries in pane
 * order. Windows fire in increasing start order, so the panes a key's result covers form a
 * range [a, b) whose ends only move forward: a two-stacks queue (no inverse needed). Entries
 * in [m, b) are summed into the record's back aggregate as b advances; when a passes m the
 * entries in [a, b) are turned into the front stack, each entry holding the aggregate of
 * itself and the later front entries, and m becomes b. A result is then the front aggregate
 * of the first entry at or after a plus the back aggregate: O(1) adds per key and firing,
 * amortized. An event for a pane already in the front stack (out of order) adds its value
 * to that entry's and the earlier front entries' aggregates (at most size/pane of them).
 * Entries before a are never read again by the aggregation (windows fire in order and a
 * only grows), so purging them needs only the cursors fixed. The records are derived data:
 * a snapshot holds panes and entries only and restore rebuilds them.
 */

static void agg_reset(cf_window *w, void *val, uint64_t *count, uint64_t *first, uint64_t *last)
{
    w->conf.value.zero(val);
    *count = 0;
    *first = UINT64_MAX;
    *last = 0;
}

static void agg_add(cf_window *w, void *val, uint64_t *count, uint64_t *first, uint64_t *last,
                    const void *v, uint64_t c, uint64_t f, uint64_t l)
{
    *count += c;
    *first = f < *first ? f : *first;
    *last = l > *last ? l : *last;
    if (w->conf.value.add(val, v) != CF_OK) {
        w->st.value_errors++;
    }
}

static uint32_t find_key(const cf_window *w, uint64_t kh, const uint8_t *key, size_t key_len)
{
    if (w->kslots == NULL) {
        return NIL;
    }
    uint32_t pos = (uint32_t)kh & w->kmask;
    uint64_t tag = (uint64_t)(uint32_t)kh << 32;
    for (;;) {
        uint64_t s = w->kslots[pos];
        if (s == 0) {
            return NIL;
        }
        if ((s & 0xFFFFFFFF00000000ULL) == tag) {
            uint32_t idx = (uint32_t)(s & 0xFFFFFFFFu) - 1;
            krec *r = kr_at(w, idx);
            entry *e = ent(w, r->head);
            if (r->kh == kh && e->key_len == key_len && memcmp(ent_key(e), key, key_len) == 0) {
                return idx;
            }
        }
        pos = (pos + 1) & w->kmask;
    }
}

/* Drops removed keys (NIL) from the active array, keeping its order. */
static void act_compact(cf_window *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nact; i++) {
        uint32_t ki = w->act[i];
        if (ki != NIL) {
            kr_at(w, ki)->pos = (uint32_t)n;
            w->act[n++] = ki;
        }
    }
    w->nact = n;
}

/* Room for one more key record and active key, reserved before an event changes anything. */
static cf_err act_reserve(cf_window *w)
{
    if (w->nkeys + 1 > w->kcap) {
        cf_err e = grow_keys(w);
        if (e != CF_OK) {
            return e;
        }
    }
    if (w->nact == w->kcap) {
        act_compact(w); /* then nact <= nkeys < kcap */
    }
    return CF_OK;
}

/* Links new entry @p idx (pane start set, value zero) into its key's list, creating the key
 * record when needed. Capacity (key records, active array) was reserved by the caller. */
static void key_attach(cf_window *w, uint32_t idx, uint64_t kh, const uint8_t *key, size_t key_len)
{
    entry *e = ent(w, idx);
    ext *x = ent_ext(w, e);
    uint32_t ki = find_key(w, kh, key, key_len);
    krec *r;
    if (ki == NIL) {
        if (w->kfree != NIL) {
            ki = w->kfree;
            w->kfree = kr_at(w, ki)->tail;
        } else {
            CF_ASSERT(w->kused < w->kcap);
            ki = w->kused++;
        }
        w->nkeys++;
        r = kr_at(w, ki);
        r->a = r->m = r->b = INT64_MIN;
        r->kh = kh;
        agg_reset(w, kr_val(r), &r->count, &r->first, &r->last);
        r->head = r->tail = idx;
        r->fcur = r->bcur = idx;
        r->pos = NIL;
        x->kr = ki;
        x->knext = x->kprev = NIL;
        slot_insert(w->kslots, w->kmask, kh, ki);
    } else {
        r = kr_at(w, ki);
        x->kr = ki;
        /* Insert in pane order; new panes are nearly always the key's latest. */
        uint32_t after = r->tail;
        while (after != NIL && ent(w, after)->start > e->start) {
            after = ent_ext(w, ent(w, after))->kprev;
        }
        uint32_t before = after == NIL ? r->head : ent_ext(w, ent(w, after))->knext;
        x->kprev = after;
        x->knext = before;
        if (after == NIL) {
            r->head = idx;
        } else {
            ent_ext(w, ent(w, after))->knext = idx;
        }
        if (before == NIL) {
            r->tail = idx;
        } else {
            ent_ext(w, ent(w, before))->kprev = idx;
        }
        if (e->start >= r->a && (r->fcur == NIL || ent(w, r->fcur)->start > e->start)) {
            r->fcur = idx;
        }
        if (e->start >= r->b && (r->bcur == NIL || ent(w, r->bcur)->start > e->start)) {
            r->bcur = idx;
        }
    }
    agg_reset(w, ext_val(x), &x->count, &x->first, &x->last);
    if (e->start >= r->a && e->start < r->m && x->knext != NIL) {
        /* Inside the front stack: start from the aggregate of the later front entries. */
        entry *nx = ent(w, x->knext);
        if (nx->start < r->m) {
            ext *y = ent_ext(w, nx);
            memcpy(ext_val(x), ext_val(y), w->conf.value.size);
            x->count = y->count;
            x->first = y->first;
            x->last = y->last;
        }
    }
    if (r->pos == NIL) {
        CF_ASSERT(w->nact < w->kcap);
        r->pos = (uint32_t)w->nact;
        w->act[w->nact++] = ki;
        w->act_dirty = true;
    }
}

/* Entry @p e received one event (@p v, seq): keeps its key's aggregates in step. */
static void key_update(cf_window *w, entry *e, const void *v, uint64_t seq)
{
    ext *x = ent_ext(w, e);
    krec *r = kr_at(w, x->kr);
    if (e->start >= r->b || e->start < r->a) {
        return; /* not yet in the aggregate, or in no window to come */
    }
    if (e->start >= r->m) {
        agg_add(w, kr_val(r), &r->count, &r->first, &r->last, v, 1, seq, seq);
        return;
    }
    for (;;) {
        agg_add(w, ext_val(x), &x->count, &x->first, &x->last, v, 1, seq, seq);
        if (x->kprev == NIL) {
            break;
        }
        entry *p = ent(w, x->kprev);
        if (p->start < r->a) {
            break;
        }
        x = ent_ext(w, p);
    }
}

/* Unlinks entry @p idx, the oldest of its key (purging goes in pane order). */
static void key_detach(cf_window *w, uint32_t idx)
{
    ext *x = ent_ext(w, ent(w, idx));
    krec *r = kr_at(w, x->kr);
    CF_DASSERT(r->head == idx);
    r->head = x->knext;
    if (r->fcur == idx) {
        r->fcur = x->knext;
    }
    if (r->bcur == idx) {
        r->bcur = x->knext;
    }
    if (r->head != NIL) {
        ent_ext(w, ent(w, r->head))->kprev = NIL;
        return;
    }
    slot_remove(w->kslots, w->kmask, r->kh, x->kr);
    if (r->pos != NIL) {
        w->act[r->pos] = NIL; /* compacted at the next firing; the order stays */
    }
    if (w->conf.secure_memory) {
        sodium_memzero(r, w->kstride);
    }
    r->head = NIL;
    r->tail = w->kfree;
    w->kfree = x->kr;
    w->nkeys--;
}

/* Moves key @p r's range to window [s, s + size) and emits its result when it has events. */
static void key_fire(cf_window *w, krec *r, int64_t s)
{
    int64_t end = s + w->size;
    if (r->b < end) {
        uint32_t k = r->bcur;
        while (k != NIL && ent(w, k)->start < end) {
            entry *e = ent(w, k);
            if (e->start >= r->m) {
                agg_add(w, kr_val(r), &r->count, &r->first, &r->last, ent_val(w, e), e->count,
                        e->first, e->last);
            }
            k = ent_ext(w, e)->knext;
        }
        r->bcur = k;
        r->b = end;
    }
    uint32_t f = r->fcur;
    while (f != NIL && ent(w, f)->start < s) {
        f = ent_ext(w, ent(w, f))->knext;
    }
    r->fcur = f;
    r->a = s;
    if (f == NIL || ent(w, f)->start >= r->m) {
        /* Front stack empty: the entries in [s, b) become the new front. */
        uint32_t k = r->bcur == NIL ? r->tail : ent_ext(w, ent(w, r->bcur))->kprev;
        ext *later = NULL;
        while (k != NIL && ent(w, k)->start >= s) {
            entry *e = ent(w, k);
            ext *x = ent_ext(w, e);
            memcpy(ext_val(x), ent_val(w, e), w->conf.value.size);
            x->count = e->count;
            x->first = e->first;
            x->last = e->last;
            if (later != NULL) {
                agg_add(w, ext_val(x), &x->count, &x->first, &x->last, ext_val(later), later->count,
                        later->first, later->last);
            }
            later = x;
            k = x->kprev;
        }
        r->m = r->b;
        agg_reset(w, kr_val(r), &r->count, &r->first, &r->last);
    }
    entry *head = ent(w, r->head);
    bool front = f != NIL && ent(w, f)->start < r->m;
    if (!front) {
        if (r->count > 0) {
            emit(w, s, head, kr_val(r), r->count, r->first, r->last, false);
        }
        return;
    }
    ext *x = ent_ext(w, ent(w, f));
    if (r->count == 0) {
        emit(w, s, head, ext_val(x), x->count, x->first, x->last, false);
        return;
    }
    uint64_t count = x->count, first = x->first, last = x->last;
    memcpy(w->acc, ext_val(x), w->conf.value.size);
    agg_add(w, w->acc, &count, &first, &last, kr_val(r), r->count, r->first, r->last);
    emit(w, s, head, w->acc, count, first, last, false);
}

/* Sorts the active keys by key bytes (the order results go out in) and drops removed ones. */
static bool act_sort(cf_window *w)
{
    act_compact(w);
    size_t n = w->nact;
    if (!scratch_reserve(w, n * sizeof(sortrec))) {
        return false;
    }
    sortrec *recs = w->scratch;
    for (size_t i = 0; i < n; i++) {
        entry *e = ent(w, kr_at(w, w->act[i])->head);
        recs[i].p0 = prefix_be(ent_key(e), e->key_len, 0);
        recs[i].p1 = prefix_be(ent_key(e), e->key_len, 8);
        recs[i].e = e;
    }
    qsort(recs, n, sizeof(sortrec), cmp_rec);
    for (size_t i = 0; i < n; i++) {
        uint32_t ki = ent_ext(w, recs[i].e)->kr;
        w->act[i] = ki;
        kr_at(w, ki)->pos = (uint32_t)i;
    }
    w->act_dirty = false;
    return true;
}

/* Fires sliding window [s, s + size) from the keys' running aggregates, in key order. Keys
 * with no entry at or after s leave the active set (they rejoin with their next entry). */
static void fire_sliding(cf_window *w, int64_t s)
{
    if (w->act_dirty) {
        (void)act_sort(w); /* without memory to sort, results go out in arrival order */
    }
    size_t n = 0;
    for (size_t i = 0; i < w->nact; i++) {
        uint32_t ki = w->act[i];
        if (ki == NIL) {
            continue;
        }
        krec *r = kr_at(w, ki);
        if (ent(w, r->tail)->start < s) {
            r->pos = NIL;
            continue;
        }
        key_fire(w, r, s);
        r->pos = (uint32_t)n;
        w->act[n++] = ki;
    }
    w->nact = n;
}

/* Fires window [s, s + size): its panes start at index i. Results go out in key order, so
 * output does not depend on arrival order. */
static void fire_window(cf_window *w, int64_t s, size_t i)
{
    size_t total = 0, j;
    for (j = i; j < w->npanes && w->panes[j].start < s + w->size; j++) {
        total += w->panes[j].n;
    }
    w->st.windows_fired++;
    if (total == 0) {
        return;
    }
    if (w->sliding) {
        fire_sliding(w, s);
        return;
    }
    if (!scratch_reserve(w, total * sizeof(sortrec))) {
        /* Without memory to sort, single-pane windows still go out (chain order);
         * multi-pane windows cannot be combined: count them as value errors. */
        if (j == i + 1) {
            for (uint32_t k = w->panes[i].head; k != NIL; k = ent(w, k)->next) {
                entry *e = ent(w, k);
                emit(w, s, e, ent_val(w, e), e->count, e->first, e->last, false);
            }
        } else {
            w->st.value_errors++;
        }
        return;
    }
    sortrec *recs = w->scratch;
    size_t n = 0;
    for (size_t p = i; p < j; p++) {
        for (uint32_t k = w->panes[p].head; k != NIL; k = ent(w, k)->next) {
            entry *e = ent(w, k);
            recs[n].p0 = prefix_be(ent_key(e), e->key_len, 0);
            recs[n].p1 = prefix_be(ent_key(e), e->key_len, 8);
            recs[n].e = e;
            n++;
        }
    }
    qsort(recs, n, sizeof(sortrec), cmp_rec);
    /* Compact to an array of entry pointers in place (slot i lies at or before record i). */
    entry **sorted = w->scratch;
    for (size_t k = 0; k < n; k++) {
        entry *e = recs[k].e;
        sorted[k] = e;
    }
    size_t a = 0;
    while (a < n) {
        size_t b = a + 1;
        while (b < n && same_key(sorted[a], sorted[b])) {
            b++;
        }
        emit_run(w, s, &sorted[a], b - a, false);
        a = b;
    }
}

/* Re-emits one key's result for a fired window after a late event (allowed lateness). */
static void emit_update(cf_window *w, int64_t s, uint64_t kh, const uint8_t *key, size_t key_len)
{
    entry *run[64];
    entry **r = run;
    size_t k = (size_t)(w->size / w->pane), n = 0;
    if (k > 64) {
        if (!scratch_reserve(w, k * sizeof(entry *))) {
            w->st.value_errors++;
            return;
        }
        r = w->scratch;
    }
    for (size_t i = lower_pane(w, s); i < w->npanes && w->panes[i].start < s + w->size; i++) {
        int64_t p = w->panes[i].start;
        uint32_t idx = find_entry(w, entry_hash(kh, p), p, key, key_len);
        if (idx != NIL) {
            r[n++] = ent(w, idx);
        }
    }
    if (n > 0) {
        emit_run(w, s, r, n, true);
    }
}

static void purge_panes(cf_window *w, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t k = w->panes[i].head;
        while (k != NIL) {
            entry *e = ent(w, k);
            uint32_t next = e->next;
            if (w->sliding) {
                key_detach(w, k);
            }
            index_remove(w, e->hash, k);
            free_entry(w, k);
            w->st.keys_live--;
            k = next;
        }
    }
    memmove(&w->panes[0], &w->panes[count], (w->npanes - count) * sizeof(pane));
    w->npanes -= count;
}

static void advance_to(cf_window *w, int64_t wm)
{
    if (wm <= w->wm) {
        return;
    }
    int64_t old = w->wm;
    w->wm = wm;
    if (wm < w->next_deadline) {
        return;
    }
    /* Fire every window with old < end <= wm that holds data, skipping empty stretches. */
    int64_t s = first_unfired(w, old);
    int64_t hi = first_unfired(w, wm);
    size_t i = lower_pane(w, s);
    while (i < w->npanes) {
        int64_t f = first_win_containing(w, w->panes[i].start);
        if (s < f) {
            s = f;
        }
        if (s >= hi) {
            break;
        }
        fire_window(w, s, i);
        s += w->slide;
        while (i < w->npanes && w->panes[i].start < s) {
            i++;
        }
    }
    size_t k = 0;
    while (k < w->npanes && pane_deadline(w, w->panes[k].start) <= wm) {
        k++;
    }
    if (k > 0) {
        purge_panes(w, k);
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
    int64_t ga = w->size, gb = w->slide;
    while (gb != 0) {
        int64_t t = ga % gb;
        ga = gb;
        gb = t;
    }
    w->pane = ga;
    size_t key_area = (sizeof(entry) + c->key_max + 7) & ~(size_t)7;
    size_t val_area = (c->value.size + 7) & ~(size_t)7;
    w->value_off = key_area;
    w->stride = key_area + val_area;
    w->sliding = w->slide < w->size;
    w->kfree = NIL;
    if (w->sliding) {
        w->ext_off = w->stride;
        w->stride += sizeof(ext) + val_area;
        w->kstride = sizeof(krec) + val_area;
    }
    /* The largest power-of-two entry count whose pool and index fit the limit. Sliding
     * windows' key records take their share when they grow (grow, grow_keys). */
    uint64_t max = 0;
    for (uint64_t n = 1; n <= ((uint64_t)1 << 30); n <<= 1) {
        size_t b = table_bytes(n, w->stride) + (w->sliding ? key_bytes(64, w->kstride) : 0);
        if (b > c->memory_limit_bytes) {
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
    w->acc = state_alloc(w, c->value.size);
    if (w->acc == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
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
    state_free(w, w->kpool, (size_t)w->kcap * w->kstride);
    cf_free(w->kslots);
    cf_free(w->act);
    cf_free(w->panes);
    state_free(w, w->acc, w->conf.value.size);
    cf_free(w->scratch);
    cf_free(w);
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
    /* The event's windows: starts s_first..s_last (step slide). Those whose end + lateness
     * has passed the watermark are gone (the oldest ones first). */
    int64_t s_first = first_win_containing(w, ts_us);
    int64_t s_last = floor_to(ts_us, w->slide);
    uint32_t total = (uint32_t)((s_last - s_first) / w->slide + 1);
    uint32_t dropped = 0;
    if (w->wm != INT64_MIN) {
        int64_t gone = w->wm - w->size - w->conf.lateness_us; /* s <= gone: purged */
        if (gone >= s_first) {
            int64_t g = floor_to(gone, w->slide);
            dropped = g >= s_last ? total : (uint32_t)((g - s_first) / w->slide + 1);
        }
    }
    cf_err ret = CF_OK;
    bool late_update = false;
    if (dropped < total) {
        uint64_t kh = cf_hash_bytes(key, key_len, w->seed);
        int64_t p = floor_to(ts_us, w->pane);
        uint64_t h = entry_hash(kh, p);
        ptrdiff_t pi = find_pane(w, p);
        uint32_t idx = pi >= 0 ? find_entry(w, h, p, key, key_len) : NIL;
        if (idx == NIL) {
            /* Capacity: refuse the event before changing anything. */
            if (w->st.keys_live >= w->max_entries || (pi < 0 && w->npanes >= w->conf.windows_max)) {
                w->st.limit_rejections++;
                return CF_E_LIMIT;
            }
            cf_err ge = CF_OK;
            if (w->st.keys_live + 1 > w->cap) {
                ge = grow(w);
            }
            if (ge == CF_OK && w->sliding) {
                ge = act_reserve(w); /* key record and active slot */
            }
            if (ge != CF_OK) {
                if (ge == CF_E_LIMIT) {
                    w->st.limit_rejections++;
                }
                return ge;
            }
            if (pi < 0) {
                size_t at;
                cf_err e = insert_pane(w, p, &at);
                if (e != CF_OK) {
                    return e;
                }
                pi = (ptrdiff_t)at;
            }
            pane *x = &w->panes[pi];
            idx = alloc_entry(w);
            entry *e = ent(w, idx);
            e->start = p;
            e->hash = h;
            e->count = 0;
            e->first = seq;
            e->last = seq;
            e->key_len = (uint16_t)key_len;
            if (key_len > 0) {
                memcpy(ent_key(e), key, key_len);
            }
            w->conf.value.zero(ent_val(w, e));
            e->next = x->head;
            x->head = idx;
            x->n++;
            index_insert(w, h, idx);
            w->st.keys_live++;
            if (w->sliding) {
                key_attach(w, idx, kh, key, key_len);
            }
        }
        entry *e = ent(w, idx);
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
        if (w->sliding) {
            key_update(w, e, value, seq);
        }
        /* Windows that already fired but are within allowed lateness: updated results. */
        for (int64_t s = s_first + (int64_t)dropped * w->slide; s <= s_last; s += w->slide) {
            if (w->wm == INT64_MIN || s + w->size > w->wm) {
                break; /* this and later windows have not fired yet */
            }
            late_update = true;
            emit_update(w, s, kh, key, key_len);
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
    /* No event time is below -2^62; a lower watermark means nothing and would overflow the
     * lateness arithmetic. */
    if (watermark_us >= -TS_LIMIT) {
        advance_to(w, watermark_us);
    }
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
    if (elapsed_us > TS_LIMIT / 2) {
        elapsed_us = TS_LIMIT / 2; /* keeps the watermark arithmetic far from overflow */
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
    out->windows_open = w->npanes;
    out->watermark_us = w->wm;
}

/* ---- snapshot --------------------------------------------------------------------------- */

/*
 * Layout (little-endian): "CFWSNAP2", size, slide, value_size u32, key_max u32, wm,
 * max_ts, have_ts u8, npanes u32, then per pane: start, n u32, and per entry: key_len u16,
 * key, count, first, last, value bytes; finally a 64-bit checksum of everything before it.
 * Values are copied byte for byte (the value type is plain bytes). Which windows fired is
 * implied by the watermark.
 */
static const uint8_t SNAP_MAGIC[8] = {'C', 'F', 'W', 'S', 'N', 'A', 'P', '2'};

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
    return cf_mix64(cf_hash_bytes(p, n, 0x636f6e666964655fULL) ^ n);
}

cf_err cf_window_snapshot(const cf_window *w, uint8_t **out, size_t *len)
{
    size_t vsz = w->conf.value.size;
    size_t n = 8 + 8 + 8 + 4 + 4 + 8 + 8 + 1 + 4 + 8;
    for (size_t i = 0; i < w->npanes; i++) {
        n += 8 + 4;
        for (uint32_t k = w->panes[i].head; k != NIL; k = ent(w, k)->next) {
            n += 2 + ent(w, k)->key_len + 8 + 8 + 8 + vsz;
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
    put_u32(&p, (uint32_t)w->npanes);
    for (size_t i = 0; i < w->npanes; i++) {
        const pane *x = &w->panes[i];
        put_u64(&p, (uint64_t)x->start);
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
    return cf_window_restore_filtered(w, buf, len, NULL, NULL, errstr, errstr_size);
}

cf_err cf_window_restore_filtered(cf_window *w, const uint8_t *buf, size_t len,
                                  cf_window_key_filter keep, void *opaque, char *errstr,
                                  size_t errstr_size)
{
    if (w->npanes != 0 || w->have_ts || w->wm != INT64_MIN) {
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
    uint32_t np = get_u32(&r);
    cf_err err = CF_OK;
    int64_t prev_start = INT64_MIN;
    if (wm != INT64_MIN && (wm < -TS_LIMIT || wm > (TS_LIMIT / 2) * 3)) {
        r.bad = wm != INT64_MAX; /* INT64_MAX: snapshot taken after a flush */
    }
    for (uint32_t i = 0; i < np && !r.bad; i++) {
        int64_t start = (int64_t)get_u64(&r);
        uint32_t ne = get_u32(&r);
        if (r.bad || start <= prev_start || start > TS_LIMIT || start < -TS_LIMIT - w->size ||
            floor_mod(start, w->pane) != 0) {
            r.bad = true;
            break;
        }
        prev_start = start;
        size_t at;
        err = insert_pane(w, start, &at);
        if (err != CF_OK) {
            cf_err_set(err, errstr, errstr_size, "window restore: %s", cf_strerror(err));
            goto fail;
        }
        for (uint32_t j = 0; j < ne; j++) {
            uint32_t kl = get_u8(&r);
            kl |= (uint32_t)get_u8(&r) << 8;
            const uint8_t *key = get_bytes(&r, kl);
            uint64_t count = get_u64(&r);
            uint64_t first = get_u64(&r);
            uint64_t last = get_u64(&r);
            const uint8_t *val = get_bytes(&r, vsz);
            if (r.bad || kl > w->conf.key_max) {
                r.bad = true;
                break;
            }
            if (keep != NULL && !keep(opaque, key, kl)) {
                continue; /* another worker's key group */
            }
            uint64_t h = entry_hash(cf_hash_bytes(key, kl, w->seed), start);
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
            if (w->sliding) {
                err = act_reserve(w);
                if (err != CF_OK) {
                    cf_err_set(err, errstr, errstr_size, "window restore: %s", cf_strerror(err));
                    goto fail;
                }
            }
            pane *x = &w->panes[at];
            uint32_t idx = alloc_entry(w);
            entry *e = ent(w, idx);
            e->start = start;
            e->hash = h;
            e->count = count;
            e->first = first;
            e->last = last;
            e->key_len = (uint16_t)kl;
            if (kl > 0) {
                memcpy(ent_key(e), key, kl);
            }
            memcpy(ent_val(w, e), val, vsz);
            e->next = x->head;
            x->head = idx;
            x->n++;
            index_insert(w, h, idx);
            w->st.keys_live++;
            if (w->sliding) {
                key_attach(w, idx, cf_hash_bytes(key, kl, w->seed), key, kl);
            }
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
    purge_panes(w, w->npanes);
    w->wm = INT64_MIN;
    w->have_ts = false;
    w->next_deadline = INT64_MAX;
    return err;
}

/* ---- snapshot merge --------------------------------------------------------------------- */

/* One snapshot being merged: its next pane and where that pane's entries lie. */
typedef struct merge_src {
    reader r;
    uint32_t panes_left;
    int64_t start;             /* of the current pane */
    uint32_t n;                /* its entries */
    const uint8_t *ents, *end; /* its entry bytes */
} merge_src;

/* Reads the next pane header of @p m and skips over its entries to find their extent. */
static bool merge_next_pane(merge_src *m, size_t vsz)
{
    if (m->panes_left == 0) {
        return false;
    }
    m->panes_left--;
    m->start = (int64_t)get_u64(&m->r);
    m->n = get_u32(&m->r);
    m->ents = m->r.p;
    for (uint32_t j = 0; j < m->n && !m->r.bad; j++) {
        uint32_t kl = get_u8(&m->r);
        kl |= (uint32_t)get_u8(&m->r) << 8;
        get_bytes(&m->r, kl + 24 + vsz);
    }
    m->end = m->r.p;
    return !m->r.bad;
}

cf_err cf_window_snapshot_merge(const uint8_t *const *bufs, const size_t *lens, unsigned n,
                                uint8_t **out, size_t *out_len, char *errstr, size_t errstr_size)
{
    merge_src *src = cf_calloc(n > 0 ? n : 1, sizeof(*src));
    uint8_t *buf = NULL;
    if (src == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "window merge: out of memory");
    }
    uint64_t shape[4] = {0};
    int64_t wm = INT64_MIN, max_ts = INT64_MIN;
    bool have_ts = false;
    size_t total = 8 + 8 + 8 + 4 + 4 + 8 + 8 + 1 + 4 + 8;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *b = bufs[i];
        size_t len = lens[i];
        uint64_t sum = 0;
        for (int j = 0; len >= 16 && j < 8; j++) {
            sum |= (uint64_t)b[len - 8 + (size_t)j] << (8 * j);
        }
        if (len < 16 || memcmp(b, SNAP_MAGIC, 8) != 0 || sum != snap_checksum(b, len - 8)) {
            cf_free(src);
            return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                              "window merge: snapshot %u is damaged", i);
        }
        reader *r = &src[i].r;
        *r = (reader){.p = b + 8, .end = b + len - 8, .bad = false};
        uint64_t sh[4] = {get_u64(r), get_u64(r), get_u32(r), get_u32(r)};
        if (i > 0 && memcmp(sh, shape, sizeof(sh)) != 0) {
            cf_free(src);
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "window merge: snapshots of different shapes");
        }
        memcpy(shape, sh, sizeof(sh));
        int64_t w = (int64_t)get_u64(r), m = (int64_t)get_u64(r);
        bool h = get_u8(r) != 0;
        src[i].panes_left = get_u32(r);
        /* The workers of one party all saw the same event-time progress; take the furthest
         * (an idle tick may have moved one of them on). */
        wm = w > wm ? w : wm;
        if (h && (!have_ts || m > max_ts)) {
            max_ts = m;
        }
        have_ts |= h;
        total += (size_t)(r->end - r->p); /* its pane headers and entries */
        if (r->bad) {
            cf_free(src);
            return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                              "window merge: snapshot %u is malformed", i);
        }
    }
    size_t vsz = (size_t)shape[2];
    bool bad = false;
    for (unsigned i = 0; i < n; i++) {
        if (!merge_next_pane(&src[i], vsz) && src[i].r.bad) {
            bad = true;
        }
    }
    buf = bad ? NULL : cf_malloc(total);
    if (buf == NULL) {
        cf_free(src);
        return cf_err_set(bad ? CF_E_CORRUPT : CF_E_NOMEM, errstr, errstr_size, "window merge: %s",
                          bad ? "malformed snapshot" : "out of memory");
    }
    uint8_t *p = buf;
    memcpy(p, SNAP_MAGIC, 8);
    p += 8;
    put_u64(&p, shape[0]);
    put_u64(&p, shape[1]);
    put_u32(&p, (uint32_t)shape[2]);
    put_u32(&p, (uint32_t)shape[3]);
    put_u64(&p, (uint64_t)wm);
    put_u64(&p, (uint64_t)max_ts);
    *p++ = have_ts ? 1 : 0;
    uint8_t *np_at = p;
    put_u32(&p, 0);
    uint32_t npanes = 0;
    /* Panes are in ascending start order in every snapshot: a k-way merge by start. */
    for (;;) {
        int64_t lo = INT64_MAX;
        bool any = false;
        for (unsigned i = 0; i < n; i++) {
            if (src[i].ents != NULL && (!any || src[i].start < lo)) {
                lo = src[i].start;
                any = true;
            }
        }
        if (!any) {
            break;
        }
        uint32_t ne = 0;
        uint8_t *hdr = p;
        put_u64(&p, (uint64_t)lo);
        put_u32(&p, 0);
        for (unsigned i = 0; i < n; i++) {
            if (src[i].ents == NULL || src[i].start != lo) {
                continue;
            }
            size_t sz = (size_t)(src[i].end - src[i].ents);
            CF_ASSERT((size_t)(p - buf) + sz <= total);
            memcpy(p, src[i].ents, sz);
            p += sz;
            ne += src[i].n;
            src[i].ents = NULL;
            if (!merge_next_pane(&src[i], vsz) && src[i].r.bad) {
                bad = true;
            }
        }
        uint8_t *q = hdr + 8;
        put_u32(&q, ne);
        npanes++;
    }
    for (unsigned i = 0; i < n; i++) {
        bad |= src[i].r.bad || src[i].r.p != src[i].r.end;
    }
    cf_free(src);
    if (bad) {
        cf_free(buf);
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "window merge: malformed snapshot");
    }
    put_u32(&np_at, npanes);
    put_u64(&p, snap_checksum(buf, (size_t)(p - buf)));
    *out = buf;
    *out_len = (size_t)(p - buf);
    return CF_OK;
}
