/* secagg internals shared between the files of the module. */
#ifndef CF_SECAGG_INT_H
#define CF_SECAGG_INT_H

#include <stdint.h>

#include "confide/keys.h"
#include "confide/secagg.h"

/* The share vector of a seeded party for event @p seq (lsa.c). */
void cf__sa_prg(const uint8_t seed[CF_KEY_SEED_LEN], uint64_t seq, unsigned dim, cf_sa_vec *out);

#include <gmp.h>

/* Paillier internals used by the protector (paillier.c). */
cf_err cf__paillier_encrypt_mpz(cf_paillier *pk, const mpz_t m, mpz_t c);
cf_err cf__paillier_decrypt_mpz(cf_paillier *pk, const mpz_t c, mpz_t m);
void cf__paillier_mulmod(cf_paillier *pk, mpz_t acc, const mpz_t c);
void cf__paillier_import(mpz_t x, const uint8_t *buf, size_t len);
void cf__paillier_export(const mpz_t x, uint8_t *buf, size_t len);

#endif
