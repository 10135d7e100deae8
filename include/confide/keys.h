/**
 * @file keys.h
 * @brief Key files: generation, loading with permission checks, key ids and epochs.
 *
 * A key directory (mode 0700) holds one file per key (mode 0600; public keys 0644):
 *   gateway.key     seeds of every party >= 1 and the MAC key alpha (gateway only)
 *   party-<i>.key   party i's seed (i >= 1) ; party-0 has no seed (it receives payloads)
 *   combiner.key    the MAC key alpha (combiner)
 *   pseudonym.key   BLAKE2b key for pseudonymizing group keys (gateway)
 *   data.key        XChaCha20-Poly1305 key for the audit log at rest (gateway, auditor)
 *   signing.key     Ed25519 secret key for tree heads and results (gateway, combiner)
 *   signing.pub     Ed25519 public key (anyone)
 * Every file records its kind, a key id (16 hex digits derived from the key material) and
 * an epoch, so keys can be rotated and results can name the epoch they were made under.
 */
#ifndef CONFIDE_KEYS_H
#define CONFIDE_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CF_KEY_ID_LEN 8

/** A loaded secret: bytes live in sodium_malloc memory and are wiped by cf_key_destroy. */
typedef struct cf_key {
    uint8_t *bytes; /* sodium_malloc'd */
    size_t len;
    uint8_t id[CF_KEY_ID_LEN];
    uint32_t epoch;
    char kind[32];
} cf_key;

/**
 * Creates DIR (0700) if needed and writes every key for @p parties parties (2..8) under
 * @p epoch. Refuses to overwrite existing key files (CF_E_STATE) unless @p force.
 */
cf_err cf_keys_generate(const char *dir, unsigned parties, uint32_t epoch, int force,
                        char *errstr, size_t errstr_size);
/**
 * Loads DIR/<name> (e.g. "signing.key"). Refuses a secret key file that is group- or
 * world-accessible (CF_E_PERM, errstr names the file and its mode) or of another kind.
 * Returns owned *out (free with cf_key_destroy).
 */
cf_err cf_key_load(const char *dir, const char *name, cf_key **out, char *errstr,
                   size_t errstr_size);
/** Wipes and frees. Accepts NULL. */
void cf_key_destroy(cf_key *k);
/** Key id as 16 lowercase hex digits plus NUL. */
void cf_key_id_hex(const uint8_t id[CF_KEY_ID_LEN], char out[2 * CF_KEY_ID_LEN + 1]);

#ifdef __cplusplus
}
#endif
#endif
