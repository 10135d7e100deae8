/*
 * Duplicate event_id detection (include/confide/dedup.h for the contract).
 *
 * Design: the remembered ids live in a ring of entries in acceptance order, each the 128-bit
 * keyed hash of an id and the event time it was accepted at; an open-addressing hash table
 * (linear probing, load <= 3/4) maps a hash to its ring position. A table slot holds the
 * ring index and 32 bits of the hash (the tag, which also gives the slot's home), so probing,
 * removal and rebuilding never read the ring except to confirm a match: a check costs one
 * keyed hash and about one cache miss. Both are allocated at create for the capacity and
 * never reallocated, so a check never mallocs. The memory is zeroed lazily by the OS (calloc
 * of whole pages), and the table uses only a prefix of its slots, doubled (rebuilt from the
 * ring) when the ids remembered would load it beyond 3/4: a run touches memory in proportion
 * to the ids it remembers, not to the cap. A rebuild costs one insertion per remembered id,
 * so amortized a constant per check.
 *
 * The hash: SipHash-2-4 with 128-bit output (libsodium crypto_shorthash_siphashx24), keyed
 * with a 128-bit subkey derived from the caller's 32-byte secret by keyed BLAKE2b. SipHash is
 * a PRF made for exactly this (short keys of hash tables, keyed so that nobody without the
 * key can predict or collide them); keyed BLAKE2b of an 8-byte id costs two compressions,
 * about 20x SipHash here (bench numbers in docs/runtime.md), and would double the decode
 * stage's CPU per event.
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
#define RING_MIN 1024  /* ring entries in use at first */
#define SUBKEY_LEN crypto_shorthash_siphashx24_KEYBYTES

typedef struct entry {
    uint8_t h[CF_DEDUP_HASH_LEN];
    int64_t t; /* event time accepted at; DEAD: replaced, skip at the head */
} entry;

struct cf_dedup {
    uint8_t *key; /* sodium_malloc: SUBKEY_LEN bytes */
    int64_t horizon_us;
    int64_t newest_us;
    uint32_t cap;
    entry *ring;
    uint32_t rsize;     /* ring entries in use: grows up to cap as ids are remembered */
    uint32_t head;      /* ring index of the earliest entry */
    uint32_t count;     /* ring entries from head on, DEAD ones included (<= rsize) */
    uint64_t live;      /* entries in the table (ring entries not DEAD) */
    uint64_t *slot;     /* 0 empty, else tag << 32 | (ring index + 1) */
    uint64_t mask;      /* slots in use - 1: grows with live up to slots_max */
    uint64_t slots_max; /* allocated */
    uint64_t duplicates, expired, evicted_full;
    bool full_reported;
};

/* 32 bits of the hash: stored in the slot, and its low bits are the slot's home. */
static uint32_t tag_of(const uint8_t h[CF_DEDUP_HASH_LEN])
{
    uint32_t x;
    memcpy(&x, h, sizeof(x)); /* a keyed hash: any bits of it are uniform */
    return x;
}

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

static uint64_t bytes_for(uint64_t cap)
{
    return cap * sizeof(entry) + slots_for(cap) * sizeof(uint64_t);
}

uint64_t cf_dedup_capacity_for_bytes(uint64_t bytes)
{
    /* The most ids over the table sizes that fit: each size allows at most 3/4 of its slots
     * and what the rest of the memory holds in entries. */
    uint64_t best = 0;
    for (uint64_t slots = 4; slots * sizeof(uint64_t) < bytes && slots <= (UINT64_C(1) << 31);
         slots *= 2) {
        uint64_t cap = (bytes - slots * sizeof(uint64_t)) / sizeof(entry);
        if (cap > slots / 4 * 3) {
            cap = slots / 4 * 3;
        }
        if (cap > CF_DEDUP_CAPACITY_MAX) {
            cap = CF_DEDUP_CAPACITY_MAX;
        }
        if (cap > best && bytes_for(cap) <= bytes) {
            best = cap;
        }
    }
    return best;
}

cf_err cf_dedup_create(cf_dedup **out, int64_t horizon_us, uint64_t capacity,
                       const uint8_t key[CF_DEDUP_KEY_LEN], char *errstr, size_t errstr_size)
{
    cf_err err;
    uint8_t secret[CF_DEDUP_KEY_LEN];
    static const uint8_t ctx[] = "confide dedup: siphashx24 subkey";
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
    d->cap = (uint32_t)capacity;
    d->slots_max = slots;
    d->rsize = d->cap < RING_MIN ? d->cap : RING_MIN;
    d->mask = (slots < TABLE_MIN ? slots : TABLE_MIN) - 1;
    d->key = sodium_malloc(SUBKEY_LEN);
    d->ring = cf_calloc((size_t)capacity, sizeof(entry));
    d->slot = cf_calloc((size_t)slots, sizeof(uint64_t));
    if (d->key == NULL || d->ring == NULL || d->slot == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size,
                         "cannot allocate the dedup state for %llu ids",
                         (unsigned long long)capacity);
        goto fail;
    }
    if (key != NULL) {
        memcpy(secret, key, sizeof(secret));
    } else {
        randombytes_buf(secret, sizeof(secret));
    }
    int rc = crypto_generichash_blake2b(d->key, SUBKEY_LEN, ctx, sizeof(ctx) - 1, secret,
                                        sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
    CF_ASSERT(rc == 0); /* fixed, valid lengths */
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
    int rc = crypto_shorthash_siphashx24(out, le, sizeof(le), d->key);
    CF_ASSERT(rc == 0);
}

/* The slot holding @p h, or -1. */
static int64_t find(const cf_dedup *d, const uint8_t h[CF_DEDUP_HASH_LEN])
{
    uint32_t tag = tag_of(h);
    for (uint64_t i = tag & d->mask;; i = (i + 1) & d->mask) {
        uint64_t v = d->slot[i];
        if (v == 0) {
            return -1;
        }
        if ((uint32_t)(v >> 32) == tag &&
            memcmp(d->ring[(uint32_t)v - 1].h, h, CF_DEDUP_HASH_LEN) == 0) {
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
        uint64_t v = d->slot[j];
        if (v == 0) {
            break;
        }
        uint64_t k = (v >> 32) & d->mask;
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
    uint32_t tag = tag_of(d->ring[idx].h);
    uint64_t want = (uint64_t)tag << 32 | (uint64_t)(idx + 1);
    for (uint64_t i = tag & d->mask;; i = (i + 1) & d->mask) {
        CF_ASSERT(d->slot[i] != 0); /* a live ring entry is always in the table */
        if (d->slot[i] == want) {
            table_delete(d, i);
            break;
        }
    }
    d->ring[idx].t = DEAD;
    d->live--;
}

static void table_insert(cf_dedup *d, uint32_t idx)
{
    uint32_t tag = tag_of(d->ring[idx].h);
    uint64_t i = tag & d->mask;
    while (d->slot[i] != 0) {
        i = (i + 1) & d->mask;
    }
    d->slot[i] = (uint64_t)tag << 32 | (uint64_t)(idx + 1);
}

/* Drops the ring's head entry (already forgotten or DEAD). */
static void pop_head(cf_dedup *d)
{
    d->head = d->head + 1 == d->rsize ? 0 : d->head + 1;
    d->count--;
}

/* Refills the table (its slots in use) from the ring. */
static void rebuild(cf_dedup *d)
{
    memset(d->slot, 0, (size_t)(d->mask + 1) * sizeof(uint64_t));
    uint32_t idx = d->head;
    for (uint32_t n = 0; n < d->count; n++) {
        if (d->ring[idx].t != DEAD) {
            table_insert(d, idx);
        }
        idx = idx + 1 == d->rsize ? 0 : idx + 1;
    }
}

/* Before adding an entry: a full ring below the cap doubles (the entries from head to the
 * old end move to the new end, so the ring stays in acceptance order), and the table's slots
 * in use double when one more id would load them beyond 3/4. Either rebuilds the table. So
 * the memory touched follows the ids remembered, not the cap; and the ring cycles within
 * what it needs, which the caches hold, instead of through all of it. */
static void maybe_grow(cf_dedup *d)
{
    bool moved = false;
    if (d->count == d->rsize && d->rsize < d->cap) {
        uint32_t old = d->rsize;
        d->rsize = old > d->cap / 2 ? d->cap : 2 * old;
        if (d->head > 0) {
            uint32_t n = old - d->head;
            memmove(&d->ring[d->rsize - n], &d->ring[d->head], (size_t)n * sizeof(entry));
            d->head = d->rsize - n;
            moved = true;
        }
    }
    uint64_t slots = d->mask + 1;
    if ((d->live + 1) * 4 > slots * 3 && slots < d->slots_max) {
        d->mask = 2 * slots - 1;
        moved = true;
    }
    if (moved) {
        rebuild(d);
    }
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
    while (d->count > 0) {
        entry *e = &d->ring[d->head];
        if (e->t != DEAD) {
            if (e->t >= c) {
                break;
            }
            forget(d, d->head);
            d->expired++;
        }
        pop_head(d);
    }
}

bool cf_dedup_contains(const cf_dedup *d, uint64_t event_id)
{
    uint8_t h[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(d, event_id, h);
    int64_t s = find(d, h);
    return s >= 0 && d->ring[(uint32_t)d->slot[s] - 1].t >= cutoff(d);
}

cf_dedup_result cf_dedup_check(cf_dedup *d, uint64_t event_id, int64_t ts_us)
{
    uint8_t h[CF_DEDUP_HASH_LEN];
    cf_dedup_hash(d, event_id, h);
    int64_t s = find(d, h);
    if (s >= 0) {
        uint32_t idx = (uint32_t)d->slot[s] - 1;
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
    maybe_grow(d); /* before the new entry is in the ring: the rebuild must not see it */
    while (d->count == d->rsize) { /* the ring is at the cap */
        if (d->ring[d->head].t != DEAD) {
            if (!d->full_reported) {
                d->full_reported = true;
                CF_LOG(CF_LOG_WARN, "dedup",
                       "the duplicate event_id state is full (%llu ids, input.dedup_memory_mb): "
                       "the oldest ids are forgotten before the horizon, and a repeat of one "
                       "of them is no longer caught",
                       (unsigned long long)d->cap);
            }
            forget(d, d->head);
            d->evicted_full++;
        }
        pop_head(d);
    }
    uint64_t tail = (uint64_t)d->head + d->count;
    uint32_t idx = (uint32_t)(tail >= d->rsize ? tail - d->rsize : tail);
    memcpy(d->ring[idx].h, h, CF_DEDUP_HASH_LEN);
    d->ring[idx].t = ts_us;
    d->count++;
    table_insert(d, idx);
    d->live++;
    CF_DASSERT(d->live <= d->count && d->count <= d->rsize && d->rsize <= d->cap);
    return CF_DEDUP_NEW;
}

void cf_dedup_set_quiet(cf_dedup *d)
{
    d->full_reported = true;
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
    return (uint64_t)d->cap * sizeof(entry) + d->slots_max * sizeof(uint64_t);
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
