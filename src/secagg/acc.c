/*
 * A standalone party-side accumulator: partial sums of shares per (window, pseudonym).
 *
 * The runtime uses the generic window operator with cf_sa_vec as its value; this table is
 * for tests, benchmarks and tools. Open addressing with linear probing over a fixed,
 * preallocated table (sodium_malloc, since it holds aggregation shares); at most 3/4 of the
 * slots are used, a new group beyond that is CF_E_LIMIT. Pseudonyms are uniformly random,
 * so their first bytes are a good hash. One instance per thread.
 */
#include <sodium.h>
#include <string.h>

#include "confide/core.h"
#include "confide/secagg.h"

typedef struct slot {
    uint64_t window;
    uint8_t key[CF_SA_PSEUDO_LEN];
    uint64_t used;
    cf_sa_vec sum;
} slot;

struct cf_sa_acc {
    slot *tab;
    size_t cap, mask, size, limit;
};

cf_err cf_sa_acc_create(cf_sa_acc **out, size_t capacity)
{
    CF_ASSERT(out != NULL);
    *out = NULL;
    if (cf_init() != CF_OK) {
        return CF_E_CRYPTO;
    }
    if (capacity == 0 || capacity > ((size_t)1 << 26)) {
        return CF_E_INVAL;
    }
    size_t cap = 16;
    while (cap * 3 / 4 < capacity) {
        cap <<= 1;
    }
    cf_sa_acc *a = cf_calloc(1, sizeof(*a));
    if (a == NULL) {
        return CF_E_NOMEM;
    }
    a->tab = sodium_malloc(cap * sizeof(slot));
    if (a->tab == NULL) {
        cf_free(a);
        return CF_E_NOMEM;
    }
    memset(a->tab, 0, cap * sizeof(slot));
    a->cap = cap;
    a->mask = cap - 1;
    a->limit = cap * 3 / 4;
    *out = a;
    return CF_OK;
}

void cf_sa_acc_destroy(cf_sa_acc *a)
{
    if (a == NULL) {
        return;
    }
    sodium_memzero(a->tab, a->cap * sizeof(slot));
    sodium_free(a->tab);
    cf_free(a);
}

static size_t hash(uint64_t window, const uint8_t key[16])
{
    uint64_t k;
    memcpy(&k, key, sizeof(k));
    uint64_t h = k ^ (window * UINT64_C(0x9e3779b97f4a7c15));
    h ^= h >> 31;
    return (size_t)h;
}

static slot *find(const cf_sa_acc *a, uint64_t window, const uint8_t key[16])
{
    for (size_t i = hash(window, key) & a->mask;; i = (i + 1) & a->mask) {
        slot *s = &a->tab[i];
        if (!s->used || (s->window == window && memcmp(s->key, key, CF_SA_PSEUDO_LEN) == 0)) {
            return s;
        }
    }
}

cf_err cf_sa_acc_add(cf_sa_acc *a, uint64_t window_id, const uint8_t key[16],
                     const cf_sa_vec *share)
{
    slot *s = find(a, window_id, key);
    if (!s->used) {
        if (a->size >= a->limit) {
            return CF_E_LIMIT;
        }
        s->used = 1;
        s->window = window_id;
        memcpy(s->key, key, CF_SA_PSEUDO_LEN);
        cf_sa_vec_zero(&s->sum);
        a->size++;
    }
    cf_sa_vec_add(&s->sum, share);
    return CF_OK;
}

cf_err cf_sa_acc_get(const cf_sa_acc *a, uint64_t window_id, const uint8_t key[16], cf_sa_vec *out)
{
    const slot *s = find(a, window_id, key);
    if (!s->used) {
        return CF_E_NOTFOUND;
    }
    *out = s->sum;
    return CF_OK;
}

size_t cf_sa_acc_size(const cf_sa_acc *a)
{
    return a->size;
}

void cf_sa_acc_foreach(const cf_sa_acc *a,
                       void (*cb)(void *opaque, uint64_t window_id, const uint8_t key[16],
                                  const cf_sa_vec *sum),
                       void *opaque)
{
    for (size_t i = 0; i < a->cap; i++) {
        if (a->tab[i].used) {
            cb(opaque, a->tab[i].window, a->tab[i].key, &a->tab[i].sum);
        }
    }
}

void cf_sa_acc_clear(cf_sa_acc *a)
{
    sodium_memzero(a->tab, a->cap * sizeof(slot));
    a->size = 0;
}
