/* secagg internals shared between the files of the module. */
#ifndef CF_SECAGG_INT_H
#define CF_SECAGG_INT_H

#include <stdint.h>

#include "confide/keys.h"
#include "confide/secagg.h"

#include <stdbool.h>

/*
 * Share derivation of a seeded party (lsa.c). Events are taken in groups of CF_SA_BATCH
 * consecutive sequence numbers; one ChaCha20 call per group (nonce "cfsb" || seq / BATCH)
 * yields 2 * dim words per event, so in-order processing costs one keystream call per
 * CF_SA_BATCH events. An event any of whose words is rejected (a 61-bit word equal to p,
 * probability about 2^-58) is derived instead from its own nonce "cfsr" || seq.
 */
#define CF_SA_BATCH 32
typedef struct cf__sa_stream {
    uint8_t seed[CF_KEY_SEED_LEN];
    unsigned dim;
    bool valid;
    uint64_t group;
    uint64_t words[CF_SA_BATCH * 2 * CF_SA_DIM_MAX];
} cf__sa_stream;
void cf__sa_stream_init(cf__sa_stream *s, const uint8_t seed[CF_KEY_SEED_LEN], unsigned dim);
void cf__sa_stream_share(cf__sa_stream *s, uint64_t seq, cf_sa_vec *out);
/* Stateless form (tests, one-off derivations). */
void cf__sa_prg(const uint8_t seed[CF_KEY_SEED_LEN], uint64_t seq, unsigned dim, cf_sa_vec *out);

#include <gmp.h>

/* Paillier internals used by the protector (paillier.c). */
cf_err cf__paillier_encrypt_mpz(cf_paillier *pk, const mpz_t m, mpz_t c);
cf_err cf__paillier_decrypt_mpz(cf_paillier *pk, const mpz_t c, mpz_t m);
void cf__paillier_mulmod(cf_paillier *pk, mpz_t acc, const mpz_t c);
void cf__paillier_import(mpz_t x, const uint8_t *buf, size_t len);
void cf__paillier_export(const mpz_t x, uint8_t *buf, size_t len);

#endif
