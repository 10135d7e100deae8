/* secagg internals shared between the files of the module. */
#ifndef CF_SECAGG_INT_H
#define CF_SECAGG_INT_H

#include <stdint.h>

#include "confide/keys.h"
#include "confide/secagg.h"

#include <stdbool.h>

/*
 * Share derivation of a seeded party (lsa.c). The ChaCha20 key is the mask key
 * BLAKE2b-256(key = seed, "confide-mask-v2" || log id || run id), so a mask is unique to
 * (seed, log, run, seq). Events are taken in groups of CF_SA_BATCH consecutive sequence
 * numbers; one ChaCha20 call per group (nonce "cfsb" || seq / BATCH) yields 2 * dim words
 * per event, so in-order processing costs one keystream call per CF_SA_BATCH events. An
 * event any of whose words is rejected (a 61-bit word equal to p, probability about 2^-58)
 * is derived instead from its own nonce "cfsr" || seq.
 */
#define CF_SA_BATCH 32
typedef struct cf__sa_stream {
    uint8_t seed[CF_KEY_SEED_LEN];
    uint8_t key[CF_KEY_SEED_LEN]; /* mask key of the bound context */
    cf_sa_ctx ctx;
    bool bound;
    unsigned dim;
    bool valid;
    uint64_t group;
    uint64_t words[CF_SA_BATCH * 2 * CF_SA_DIM_MAX];
} cf__sa_stream;
void cf__sa_stream_init(cf__sa_stream *s, const uint8_t seed[CF_KEY_SEED_LEN], unsigned dim);
void cf__sa_stream_bind(cf__sa_stream *s, const cf_sa_ctx *ctx);
void cf__sa_stream_share(cf__sa_stream *s, uint64_t seq, cf_sa_vec *out);
/* Stateless form (tests, one-off derivations). */
void cf__sa_prg(const uint8_t seed[CF_KEY_SEED_LEN], const cf_sa_ctx *ctx, uint64_t seq,
                unsigned dim, cf_sa_vec *out);

/*
 * Per-period MAC keys: alpha(epoch, period) = the first 61-bit word of
 * BLAKE2b-512(key = master, "confide-mac-v2" || epoch || period) that is in [1, p), with a
 * one-entry cache (events and windows arrive in time order, so the period rarely changes).
 */
typedef struct cf__sa_mac {
    uint8_t master[CF_KEY_MAC_LEN];
    uint32_t epoch;
    int64_t period_us; /* 0: one alpha per epoch */
    bool valid;
    int64_t period;
    uint64_t alpha;
} cf__sa_mac;
uint64_t cf__sa_alpha(cf__sa_mac *m, int64_t ts_us);

#include <gmp.h>

/* Paillier internals used by the protector (paillier.c). */
cf_err cf__paillier_encrypt_mpz(cf_paillier *pk, const mpz_t m, mpz_t c);
cf_err cf__paillier_decrypt_mpz(cf_paillier *pk, const mpz_t c, mpz_t m);
void cf__paillier_mulmod(cf_paillier *pk, mpz_t acc, const mpz_t c);
void cf__paillier_import(mpz_t x, const uint8_t *buf, size_t len);
void cf__paillier_export(const mpz_t x, uint8_t *buf, size_t len);

#endif
