/*
 * Keyed rule state: a flat pool of fixed-size entries (header, key, payload) indexed by an
 * open-addressing table (linear probing, backward-shift deletion, no tombstones) and chained
 * in least-recently-updated order. Bounds: at most max_keys entries; the pool doubles up to
 * that (amortized; never per event) and the oldest entry is evicted at the limit. Time bound:
 * entries untouched for longer than the rule's period are expired from the LRU tail a few at
 * a time on each access, so cleanup cost stays O(1) per event. The hash is a seeded
 * multiply-xor hash (not cryptographic), seeded per store. One thread per store.
 */
#include <sodium.h>
#include <string.h>

#include "rules_int.h"

typedef struct kent {
    uint64_t hash;
    int64_t last_ts;
    uint32_t prev;
    uint32_t next; /* LRU links; free-list link when free */
    uint16_t key_len;
    uint8_t key[CF__RULES_KEY_MAX];
    /* payload follows, 8-aligned */
} kent;

#define PAYLOAD_OFF ((sizeof(kent) + 7) & ~(size_t)7)
#define EXPIRE_PER_CALL 4
#define INITIAL_KEYS 256u

static bool grow(cf__kstore *s);

static inline kent *at(const cf__kstore *s, uint32_t i)
{
    return (kent *)(void *)(s->pool + (size_t)i * s->stride);
}

cf_err cf__kstore_init(cf__kstore *s, size_t payload_size, uint32_t max_keys)
{
    memset(s, 0, sizeof(*s));
    s->payload_size = payload_size;
    s->stride = PAYLOAD_OFF + ((payload_size + 7) & ~(size_t)7);
    s->max_keys = max_keys;
    s->free_head = CF__RULES_NIL;
    s->lru_head = CF__RULES_NIL;
    s->lru_tail = CF__RULES_NIL;
    randombytes_buf(&s->seed, sizeof(s->seed));
    /* Preallocate a first block so a full store always has an entry to evict. */
    return grow(s) ? CF_OK : CF_E_NOMEM;
}

void cf__kstore_free(cf__kstore *s)
{
    cf_free(s->pool);
    cf_free(s->slots);
    s->pool = NULL;
    s->slots = NULL;
}

size_t cf__kstore_bytes(const cf__kstore *s)
{
    return (size_t)s->cap * s->stride + (s->slots != NULL ? (size_t)(s->slot_mask + 1) * 8 : 0);
}

static void index_insert(cf__kstore *s, uint64_t hash, uint32_t idx)
{
    uint32_t pos = (uint32_t)hash & s->slot_mask;
    while (s->slots[pos] != 0) {
        pos = (pos + 1) & s->slot_mask;
    }
    s->slots[pos] = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
}

static void index_remove(cf__kstore *s, uint64_t hash, uint32_t idx)
{
    uint32_t mask = s->slot_mask;
    uint32_t pos = (uint32_t)hash & mask;
    uint64_t want = ((uint64_t)(uint32_t)hash << 32) | ((uint64_t)idx + 1);
    while (s->slots[pos] != want) {
        pos = (pos + 1) & mask;
    }
    uint32_t hole = pos;
    uint32_t j = pos;
    for (;;) {
        j = (j + 1) & mask;
        uint64_t v = s->slots[j];
        if (v == 0) {
            break;
        }
        uint32_t home = (uint32_t)(v >> 32) & mask;
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            s->slots[hole] = v;
            hole = j;
        }
    }
    s->slots[hole] = 0;
}

static bool grow(cf__kstore *s)
{
    uint32_t ncap = s->cap == 0 ? INITIAL_KEYS : s->cap * 2;
    if (ncap > s->max_keys) {
        ncap = s->max_keys;
    }
    if (ncap <= s->cap) {
        return false;
    }
    uint32_t nslots = 2;
    while (nslots < ncap * 2) {
        nslots <<= 1;
    }
    uint8_t *npool = cf_realloc(s->pool, (size_t)ncap * s->stride);
    if (npool == NULL) {
        return false;
    }
    s->pool = npool;
    uint64_t *sl = cf_calloc(nslots, sizeof(uint64_t));
    if (sl == NULL) {
        /* Keep the old index: the pool grew but only `cap` entries are used. */
        return false;
    }
    cf_free(s->slots);
    s->slots = sl;
    s->slot_mask = nslots - 1;
    s->cap = ncap;
    for (uint32_t k = s->lru_head; k != CF__RULES_NIL; k = at(s, k)->next) {
        index_insert(s, at(s, k)->hash, k);
    }
    return true;
}

static void lru_unlink(cf__kstore *s, uint32_t i)
{
    kent *e = at(s, i);
    if (e->prev != CF__RULES_NIL) {
        at(s, e->prev)->next = e->next;
    } else {
        s->lru_head = e->next;
    }
    if (e->next != CF__RULES_NIL) {
        at(s, e->next)->prev = e->prev;
    } else {
        s->lru_tail = e->prev;
    }
}

static void lru_push_front(cf__kstore *s, uint32_t i)
{
    kent *e = at(s, i);
    e->prev = CF__RULES_NIL;
    e->next = s->lru_head;
    if (s->lru_head != CF__RULES_NIL) {
        at(s, s->lru_head)->prev = i;
    } else {
        s->lru_tail = i;
    }
    s->lru_head = i;
}

static void remove_entry(cf__kstore *s, uint32_t i)
{
    kent *e = at(s, i);
    lru_unlink(s, i);
    index_remove(s, e->hash, i);
    e->next = s->free_head;
    s->free_head = i;
    s->live--;
}

void *cf__kstore_get(cf__kstore *s, const uint8_t *key, size_t len, int64_t ts, int64_t ttl_us,
                     bool *created)
{
    CF_DASSERT(len <= CF__RULES_KEY_MAX);
    /* Time bound: drop a few keys not updated within the period. */
    for (int k = 0; k < EXPIRE_PER_CALL && s->lru_tail != CF__RULES_NIL; k++) {
        kent *t = at(s, s->lru_tail);
        if (t->last_ts >= ts - ttl_us) {
            break;
        }
        remove_entry(s, s->lru_tail);
        s->expired++;
    }
    uint64_t h = cf_mix64(cf_hash_bytes(key, len, s->seed));
    if (s->slots != NULL) {
        uint32_t pos = (uint32_t)h & s->slot_mask;
        uint64_t tag = (uint64_t)(uint32_t)h << 32;
        for (;;) {
            uint64_t v = s->slots[pos];
            if (v == 0) {
                break;
            }
            if ((v & 0xFFFFFFFF00000000ULL) == tag) {
                uint32_t i = (uint32_t)(v & 0xFFFFFFFFu) - 1;
                kent *e = at(s, i);
                if (e->key_len == len && memcmp(e->key, key, len) == 0) {
                    if (s->lru_head != i) {
                        lru_unlink(s, i);
                        lru_push_front(s, i);
                    }
                    if (ts > e->last_ts) {
                        e->last_ts = ts;
                    }
                    *created = false;
                    return (uint8_t *)e + PAYLOAD_OFF;
                }
            }
            pos = (pos + 1) & s->slot_mask;
        }
    }
    /* New key: make room (memory bound), then insert. */
    if (s->live >= s->max_keys ||
        (s->free_head == CF__RULES_NIL && s->used == s->cap && !grow(s))) {
        CF_ASSERT(s->lru_tail != CF__RULES_NIL); /* max_keys >= 1 and the store is full */
        remove_entry(s, s->lru_tail);
        s->evictions++;
    }
    uint32_t i;
    if (s->free_head != CF__RULES_NIL) {
        i = s->free_head;
        s->free_head = at(s, i)->next;
    } else {
        i = s->used++;
    }
    kent *e = at(s, i);
    e->hash = h;
    e->last_ts = ts;
    e->key_len = (uint16_t)len;
    memcpy(e->key, key, len);
    memset((uint8_t *)e + PAYLOAD_OFF, 0, s->payload_size);
    index_insert(s, h, i);
    lru_push_front(s, i);
    s->live++;
    *created = true;
    return (uint8_t *)e + PAYLOAD_OFF;
}
