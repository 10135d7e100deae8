/*
 * Keyed pseudonyms for group keys with a bounded cache.
 *
 * pseudonym = BLAKE2b-128(key = pseudonym.key, message = group key bytes). Parties group by
 * pseudonym without learning identities; the gateway alone holds the key.
 *
 * Hashing with BLAKE2b costs a few hundred ns per id; merchant populations repeat heavily,
 * so a fixed-size cache maps recently seen ids to their pseudonyms. The table is open
 * addressing over a probe window of PROBE slots starting at SipHash(id) (keyed per instance,
 * so an adversary choosing merchant ids cannot aim for collisions). Replacement is clock
 * (second chance) inside the window: a hit sets the entry's reference bit, a miss with a
 * full window evicts the first entry whose bit is clear, clearing bits as it passes. Memory
 * is bounded by slots * sizeof(entry), allocated once. The cache holds plaintext ids (the
 * gateway sees them anyway) and is wiped on destroy. One instance per thread.
 */
#include <sodium.h>
#include <string.h>

#include "confide/core.h"
#include "confide/secagg.h"

#define PROBE 8
#define SLOTS_DEFAULT 16384
#define SLOTS_MIN 64

typedef struct entry {
    uint64_t h;
    uint16_t len;
    uint8_t used;
    uint8_t ref;
    uint8_t ps[CF_SA_PSEUDO_LEN];
    uint8_t id[CF_SA_PSEUDO_ID_MAX];
} entry;

typedef struct secrets {
    uint8_t key[CF_KEY_SYM_LEN];
    uint8_t sip[crypto_shorthash_KEYBYTES];
} secrets;

struct cf_sa_pseudo {
    secrets *sec; /* sodium_malloc */
    entry *tab;
    size_t slots, mask, entries;
    unsigned hand;
    uint64_t hits, misses, evictions;
};

cf_err cf_sa_pseudo_create(cf_sa_pseudo **out, const cf_key *pseudo_key, size_t cache_slots,
                           char *errstr, size_t errstr_size)
{
    cf_sa_pseudo *ps = NULL;
    cf_err err = CF_OK;
    CF_ASSERT(out != NULL);
    *out = NULL;
    if (cf_init() != CF_OK) {
        return CF_E_CRYPTO;
    }
    if (pseudo_key == NULL || strcmp(pseudo_key->kind, CF_KEY_KIND_PSEUDONYM) != 0 ||
        pseudo_key->len != CF_KEY_SYM_LEN) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "a pseudonym key (pseudonym.key) is required, got %s",
                          pseudo_key == NULL ? "none" : pseudo_key->kind);
    }
    size_t slots = cache_slots == 0 ? SLOTS_DEFAULT : cache_slots;
    if (slots > ((size_t)1 << 24)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "pseudonym cache of %zu slots is too large (max 16777216)", slots);
    }
    size_t s = SLOTS_MIN;
    while (s < slots) {
        s <<= 1;
    }
    ps = cf_calloc(1, sizeof(*ps));
    if (ps == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    ps->sec = sodium_malloc(sizeof(secrets));
    ps->tab = cf_calloc(s, sizeof(entry));
    if (ps->sec == NULL || ps->tab == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    memcpy(ps->sec->key, pseudo_key->bytes, CF_KEY_SYM_LEN);
    randombytes_buf(ps->sec->sip, sizeof(ps->sec->sip));
    ps->slots = s;
    ps->mask = s - 1;
    *out = ps;
    return CF_OK;
fail:
    cf_sa_pseudo_destroy(ps);
    return err;
}

void cf_sa_pseudo_destroy(cf_sa_pseudo *ps)
{
    if (ps == NULL) {
        return;
    }
    if (ps->sec != NULL) {
        sodium_memzero(ps->sec, sizeof(secrets));
        sodium_free(ps->sec);
    }
    if (ps->tab != NULL) {
        sodium_memzero(ps->tab, ps->slots * sizeof(entry));
        cf_free(ps->tab);
    }
    cf_free(ps);
}

void cf_sa_pseudonymize_nocache(const cf_sa_pseudo *ps, const void *id, size_t len,
                                uint8_t out[CF_SA_PSEUDO_LEN])
{
    crypto_generichash(out, CF_SA_PSEUDO_LEN, id, len, ps->sec->key, CF_KEY_SYM_LEN);
}

void cf_sa_pseudonymize(cf_sa_pseudo *ps, const void *id, size_t len, uint8_t out[CF_SA_PSEUDO_LEN])
{
    if (len > CF_SA_PSEUDO_ID_MAX) {
        ps->misses++;
        cf_sa_pseudonymize_nocache(ps, id, len, out);
        return;
    }
    uint64_t h;
    crypto_shorthash((uint8_t *)&h, id, len, ps->sec->sip);
    size_t base = (size_t)h & ps->mask;
    entry *free_slot = NULL;
    for (unsigned i = 0; i < PROBE; i++) {
        entry *e = &ps->tab[(base + i) & ps->mask];
        if (!e->used) {
            if (free_slot == NULL) {
                free_slot = e;
            }
            continue;
        }
        if (e->h == h && e->len == len && memcmp(e->id, id, len) == 0) {
            e->ref = 1;
            memcpy(out, e->ps, CF_SA_PSEUDO_LEN);
            ps->hits++;
            return;
        }
    }
    ps->misses++;
    cf_sa_pseudonymize_nocache(ps, id, len, out);
    entry *victim = free_slot;
    if (victim == NULL) {
        /* clock inside the probe window: second chance for referenced entries */
        for (unsigned i = 0; i < 2 * PROBE; i++) {
            entry *e = &ps->tab[(base + (ps->hand + i) % PROBE) & ps->mask];
            if (e->ref == 0) {
                victim = e;
                break;
            }
            e->ref = 0;
        }
        CF_ASSERT(victim != NULL); /* the second lap finds a cleared bit */
        ps->hand = (ps->hand + 1) % PROBE;
        ps->evictions++;
    } else {
        ps->entries++;
    }
    victim->used = 1;
    victim->ref = 0;
    victim->h = h;
    victim->len = (uint16_t)len;
    memcpy(victim->id, id, len);
    memcpy(victim->ps, out, CF_SA_PSEUDO_LEN);
}

void cf_sa_pseudo_stats_get(const cf_sa_pseudo *ps, cf_sa_pseudo_stats *st)
{
    st->hits = ps->hits;
    st->misses = ps->misses;
    st->evictions = ps->evictions;
    st->entries = ps->entries;
    st->slots = ps->slots;
}
