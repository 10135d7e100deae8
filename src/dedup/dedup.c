/*
 * Duplicate event_id detection (include/confide/dedup.h for the contract).
 *
 * Design: the remembered ids live in a ring of entries in acceptance order, each the 128-bit
 * keyed BLAKE2b hash of an id and the event time it was accepted at; an open-addressing hash
 * table (linear probing, load <= 3/4) maps a hash to its ring position. Both are allocated
 * at create for the capacity and never reallocated, so a check costs one keyed hash, a probe
 * or two, and never a malloc. The memory is zeroed lazily by the OS (calloc of whole pages),
 * and the table uses only a prefix of its slots, doubled (and rebuilt from the ring) when
 * the ids remembered would load it beyond 3/4: a run touches memory in proportion to the ids
 * it remembers, not to input.dedup_memory_mb. A rebuild costs one insertion per remembered
 * id, so amortized a constant per check; the largest (64 MiB default) stalls the decode
 * stage once, for a fraction of a second, when 1.5 M ids are remembered.
 *
 * Forgetting: ids leave from the ring's head, the earliest accepted. After every acceptance
 * the head is forgotten while its event time has fallen behind newest - horizon. Events come
 * roughly in event-time order, so the head is roughly the oldest; an out-of-order id behind
 * a newer head waits its turn, and lookups compare its time with the horizon themselves, so
 * the answer never depends on when an id is reclaimed. When the ring is full the head is
 * forgotten early (oldest-evicted): acceptance never stops for lack of memory, and the
 * eviction is counted (cf_dedup_evicted_full) and reported once.
 *
 * Removal from a linear-probing table shifts later entries of the same cluster back
 * (Knuth's algorithm R), so no tombstones accumulate. An entry replaced while still in the
 * ring (its id expired out of order and came back) is marked dead (t = DEAD) and skipped
 * when it reaches the head.
 *
 * Secrets: the key lives in sodium_malloc memory and is wiped at destroy; the state holds
 * only keyed hashes, so a memory dump does not list the ids.
 */
#include <string.h>

#include <sodium.h>

#include "confide/core.h"
#include "confide/dedup.h"

#define DEAD INT64_MIN
#define TABLE_MIN 1024 /* slots in use at first */

typedef struct entry {
    uint8_t h[CF_DEDUP_HASH_LEN];
    int64_t t; /* event time accepted at; DEAD: replaced, skip at the head */
} entry;

struct cf_dedup {
    uint8_t *key; /* sodium_malloc */
    int64_t horizon_us;
    int64_t newest_us;
    uint64_t cap;
    entry *ring;
    uint64_t head, tail; /* absolute positions: ring[pos % cap]; tail - head <= cap */
    uint64_t live;       /* entries in the table (ring entries not DEAD) */
    uint32_t *slot;      /* 0 empty, else ring index + 1 */
    uint64_t mask;       /* slots in use - 1: grows with live up to slots_max */
    uint64_t slots_max;  /* allocated */
    uint64_t duplicates, expired, evicted_full;
    bool full_reported;
};

static uint64_t pow2_ceil(uint64_t x)
{
    uint64_t p = 1;
    while (p < x) {
        p <<= 1;
    }
    return p;
}

/* Table slots for @p cap ids: load at most 3/4. */
static uint64_t slots_for(uint64_t cap)
{
    uint64_t s = pow2_ceil(cap + (cap + 2) / 3);
    return s < 4 ? 4 : s;
}

uint64_t cf_dedup_capacity_for_bytes(uint64_t bytes)
{
    uint64_t slots = 4;
    while (slots * 2 * sizeof(uint32_t) <= bytes / 4 && slots < 2 * CF_DEDUP_CAPACITY_MAX) {
        slots *= 2; /* the table takes between 1/8 and 1/4 of the memory */
    }
    if (bytes < slots * sizeof(uint32_t) + sizeof(entry)) {
        return 0;
    }
    uint64_t cap = (bytes - slots * sizeof(uint32_t)) / sizeof(entry);
    if (cap > slots / 4 * 3) {
        cap = slots / 4 * 3;
    }
    if (cap > CF_DEDUP_CAPACITY_MAX) {
        cap = CF_DEDUP_CAPACITY_MAX;
    }
    CF_ASSERT(cap * sizeof(entry) + slots_for(cap) * sizeof(uint32_t) <= bytes);
    return cap;
}

cf_err cf_dedup_create(cf_dedup **out, int64_t horizon_us, uint64_t capacity,
                       const uint8_t key[CF_DEDUP_KEY_LEN], char *errstr, size_t errstr_size)
{
    cf_err err;
    *out = NULL;
    if (horizon_us <= 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "dedup horizon must be positive");
    }
    if (capacity < 1 || capacity > CF_DEDUP_CAPACITY_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "dedup capacity %llu ids: must be 1 .. %llu",
                          (unsigned long long)capacity, (unsigned long long)CF_DEDUP_CAPACITY_MAX);
    }
    if (cf_init() != CF_OK) { /* sodium_malloc needs sodium_init; idempotent */
        return cf_err_set(CF_E_STATE, errstr, errstr_size, "cannot initialize libsodium");
    }
    cf_dedup *d = cf_calloc(1, sizeof(*d));
    if (d == NULL) {
        return CF_E_NOMEM;
    }
    uint64_t slots = slots_for(capacity);
    d->horizon_us = horizon_us;
    d->newest_us = INT64_MIN;
    d->cap = capacity;
    d->slots_max = slots;
    d->mask = (slots < TABLE_MIN ? slots : TABLE_MIN) - 1;
    d->key = sodium_malloc(CF_DEDUP_KEY_LEN);
    d->ring = cf_calloc((size_t)capacity, sizeof(entry));
    d->slot = cf_calloc((size_t)slots, sizeof(uint32_t));
    if (d->key == NULL || d->ring == NULL || d->slot == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size,
                         "cannot allocate the dedup state for %llu ids",
                         (unsigned long long)capacity);
        goto fail;
    }
    if (key != NULL) {
        memcpy(d->key, key, CF_DEDUP_KEY_LEN);
    } else {
        randombytes_buf(d->key, CF_DEDUP_KEY_LEN);
    }
    *out = d;
    return CF_OK;
fail:
    cf_dedup_destroy(d);
    return err;
}

void cf_dedup_destroy(cf_dedup *d)
{
    if (d == NULL) {
        return;
    }
    if (d->key != NULL) {
        sodium_free(d->key); /* wipes */
    }
    cf_free(d->ring);
    cf_free(d->slot);
    cf_free(d);
}

void cf_dedup_hash(const cf_dedup *d, uint64_t event_id, uint8_t out[CF_DEDUP_HASH_LEN])
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++) {
        le[i] = (uint8_t)(event_id >> (8 * i));
    }
    int rc = crypto_generichash_blake2b(out, CF_DEDUP_HASH_LEN, le, sizeof(le), d->key,
                                        CF_DEDUP_KEY_LEN);
    CF_ASSERT(rc == 0); /* fixed, valid lengths */
}

static uint64_t home(const cf_dedup *d, const uint8_t h[CF_DEDUP_HASH_LEN])
{
    uint64_t x;
    memcpy(&x, h, sizeof(x)); /* a keyed hash: any 64 bits of it are uniform */
    return x & d->mask;
}

/* The slot holding @p h, or -1. */
static int64_t find(const cf_dedup *d, const uint8_t h[CF_DEDUP_HASH_LEN])
{
    for (uint64_t i = home(d, h);; i = (i + 1) & d->mask) {
        uint32_t v = d->slot[i];
        if (v == 0) {
            return -1;
        }
        if (memcmp(d->ring[v - 1].h, h, CF_DEDUP_HASH_LEN) == 0) {
            return (int64_t)i;
        }
    }
}

/* Empties slot @p i, moving later entries of its cluster back (no tombstones). */
static void table_delete(cf_dedup *d, uint64_t i)
{
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        uint32_t v = d->slot[j];
        if (v == 0) {
            break;
        }
        uint64_t k = home(d, d->ring[v - 1].h);
        /* the entry at j may stay when its home lies cyclically in (i, j] */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            d->slot[i] = v;
            i = j;
        }
    }
    d->slot[i] = 0;
}

/* Removes ring entry @p idx from the table and marks it DEAD. */
static void forget(cf_dedup *d, uint32_t idx)
{
    for (uint64_t i = home(d, d->ring[idx].h);; i = (i + 1) & d->mask) {
        CF_ASSERT(d->slot[i] != 0); /* a live ring entry is always in the table */
        if (d->slot[i] == idx + 1) {
            table_delete(d, i);
            break;
        }
    }
    d->ring[idx].t = DEAD;
    d->live--;
}

static int64_t cutoff(const cf_dedup *d)
{
    int64_t c;
    if (d->newest_us == INT64_MIN || __builtin_sub_overflow(d->newest_us, d->horizon_us, &c)) {
        return INT64_MIN + 1; /* nothing is beyond the horizon yet */
    }
    return c;
}

/* Forgets ids from the head while the horizon has passed them. */
static void expire(cf_dedup *d)
{
    int64_t c = cutoff(d);
    while (d->head < d->tail) {
        entry *e = &d->ring[d->head % d->cap];
        if (e->t != DEAD) {
            if (e->t >= c) {
                break;
            }
            forget(d, (uint32_t)(d->head % d->cap));
            d->expired++;
        }
        d->head++;
    }
}

static void table_insert(cf_dedup *d, uint32_t idx)
{
    uint64_t i = home(d, d->ring[idx].h);
    while (d->slot[i] != 0) {
        i = (i + 1) & d->mask;
    }
    d->slot[i] = idx + 1;
}

/* Doubles the slots in use when one more id would load them beyond 3/4, rebuilding the
 * table from the ring: the memory touched follows the ids remembered, not the cap. */
static void maybe_grow(cf_dedup *d)
{
    uint64_t slots = d->mask + 1;
    if ((d->live + 1) * 4 <= slots * 3 || slots == d->slots_max) {
        return;
    }
    slots *= 2;
    d->mask = slots - 1;
    memset(d->slot, 0, (size_t)slots * sizeof(uint32_t));
    for (uint64_t pos = d->head; pos < d->tail; pos++) {
        uint32_t idx = (uint32_t)(pos % d->cap);
        if (d->ring[idx].t != DEAD) {
            table_insert(d, idx);
        }
    }
}

bool cf_dedup_contains(const cf_dedup *d, uint64_t event_id)
{
    uint8_t h[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(d, event_id, h);
    int64_t s = find(d, h);
    return s >= 0 && d->ring[d->slot[s] - 1].t >= cutoff(d);
}

cf_dedup_result cf_dedup_check(cf_dedup *d, uint64_t event_id, int64_t ts_us)
{
    uint8_t h[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(d, event_id, h);
    int64_t s = find(d, h);
    if (s >= 0) {
        uint32_t idx = d->slot[s] - 1;
        if (d->ring[idx].t >= cutoff(d)) {
            d->duplicates++;
            return CF_DEDUP_DUPLICATE;
        }
        /* Beyond the horizon but not yet reclaimed (it came out of order): a new event. */
        forget(d, idx);
        d->expired++;
    }
    if (ts_us == DEAD) {
        ts_us = DEAD + 1;
    }
    if (ts_us > d->newest_us) {
        d->newest_us = ts_us;
    }
    expire(d);
    if (ts_us < cutoff(d)) {
        return CF_DEDUP_NEW; /* older than the horizon itself: nothing to remember */
    }
    while (d->tail - d->head == d->cap) {
        if (d->ring[d->head % d->cap].t != DEAD) {
            if (!d->full_reported) {
                d->full_reported = true;
                CF_LOG(CF_LOG_WARN, "dedup",
                       "the duplicate event_id state is full (%llu ids, input.dedup_memory_mb): "
                       "the oldest ids are forgotten before the horizon, and a repeat of one "
                       "of them is no longer caught",
                       (unsigned long long)d->cap);
            }
            forget(d, (uint32_t)(d->head % d->cap));
            d->evicted_full++;
        }
        d->head++;
    }
    maybe_grow(d); /* before the new entry is in the ring: the rebuild must not see it */
    uint32_t idx = (uint32_t)(d->tail % d->cap);
    memcpy(d->ring[idx].h, h, CF_DEDUP_HASH_LEN);
    d->ring[idx].t = ts_us;
    d->tail++;
    table_insert(d, idx);
    d->live++;
    CF_DASSERT(d->live <= d->cap);
    return CF_DEDUP_NEW;
}

uint64_t cf_dedup_size(const cf_dedup *d)
{
    return d->live;
}

uint64_t cf_dedup_capacity(const cf_dedup *d)
{
    return d->cap;
}

uint64_t cf_dedup_memory_bytes(const cf_dedup *d)
{
    return d->cap * sizeof(entry) + d->slots_max * sizeof(uint32_t);
}

uint64_t cf_dedup_duplicates(const cf_dedup *d)
{
    return d->duplicates;
}

uint64_t cf_dedup_expired(const cf_dedup *d)
{
    return d->expired;
}

uint64_t cf_dedup_evicted_full(const cf_dedup *d)
{
    return d->evicted_full;
}

int64_t cf_dedup_newest_us(const cf_dedup *d)
{
    return d->newest_us;
}
