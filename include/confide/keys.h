/**
 * @file keys.h
 * @brief Key files: generation, loading with permission checks, key ids and epochs.
 *
 * A key directory (mode 0700) holds one file per key (mode 0600; public keys 0644):
 *   gateway.key     the MAC master secret and the seeds of every party >= 1 (gateway only)
 *   party-<i>.key   party i's seed (i >= 1) ; party-0 has no seed (it receives payloads)
 *   combiner.key    the MAC master secret (combiner)
 *   auditor.key     the seeds of every party >= 1, no MAC secret (auditor: attributes a
 *                   failed MAC to a party, cannot mint an aggregate whose MAC verifies)
 *   pseudonym.key   BLAKE2b key for pseudonymizing group keys (gateway)
 *   data.key        XChaCha20-Poly1305 key for the audit log at rest (gateway, auditor)
 *   signing.key     Ed25519 secret key for the log's tree heads (gateway)
 *   signing.pub     its public key (anyone)
 *   results.key     Ed25519 secret key signing released results (combiner only)
 *   results.pub     its public key (anyone)
 * Every file records its kind, a random key id (16 hex digits, drawn when the key is made,
 * so that it says nothing about the key), an epoch, so keys can be rotated and results can
 * name the epoch they were made under, and a check of the material (file only).
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
    uint32_t parties; /* gateway, combiner, auditor and party keys: k; others 0 */
    char kind[32];
} cf_key;

/**
 * Creates DIR (0700) if needed and writes every key for @p parties parties (2..8) under
 * @p epoch. Refuses to overwrite existing key files (CF_E_STATE) unless @p force.
 */
cf_err cf_keys_generate(const char *dir, unsigned parties, uint32_t epoch, int force, char *errstr,
                        size_t errstr_size);
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

/* ---- sizes, kinds and layouts (additions; the API above is unchanged) ------------------- */

#define CF_KEY_SEED_LEN 32    /* party seed (ChaCha20 key) */
#define CF_KEY_MAC_LEN 32     /* MAC master secret: the PRF key of every per-window alpha */
#define CF_KEY_SYM_LEN 32     /* data.key (XChaCha20-Poly1305), pseudonym.key (BLAKE2b key) */
#define CF_KEY_SIGN_SK_LEN 64 /* libsodium Ed25519 secret key (seed || public key) */
#define CF_KEY_SIGN_PK_LEN 32
#define CF_KEY_PARTIES_MIN 2
#define CF_KEY_PARTIES_MAX 8

/*
 * Kinds recorded in key files. The file name fixes the kind cf_key_load expects:
 * gateway.key "gateway", party-<i>.key "party", combiner.key "combiner", auditor.key
 * "auditor", pseudonym.key "pseudonym", data.key "data", signing.key "signing", signing.pub
 * "signing-public", results.key "results", results.pub "results-public".
 *
 * Secret layouts (cf_key.bytes):
 *   gateway:           MAC master (32) || seed of party 1 || ... || seed of party k-1
 *   combiner:          MAC master (32) only -- no seeds, so that a combiner colluding
 *                      with party 0 still learns nothing per event (docs/security.md)
 *   auditor:           seed of party 1 || ... || seed of party k-1 -- no MAC master
 *   party:             the party's 32-byte seed
 *   pseudonym, data:   32 bytes
 *   signing, results:  64-byte Ed25519 secret key; *-public: 32-byte public key
 * A key pair (signing.key/signing.pub, results.key/results.pub) shares one id.
 */
#define CF_KEY_KIND_GATEWAY "gateway"
#define CF_KEY_KIND_PARTY "party"
#define CF_KEY_KIND_COMBINER "combiner"
#define CF_KEY_KIND_PSEUDONYM "pseudonym"
#define CF_KEY_KIND_DATA "data"
#define CF_KEY_KIND_SIGNING "signing"
#define CF_KEY_KIND_SIGNING_PUB "signing-public"
#define CF_KEY_KIND_AUDITOR "auditor"
#define CF_KEY_KIND_RESULTS "results"
#define CF_KEY_KIND_RESULTS_PUB "results-public"
#define CF_KEY_KIND_WITNESS "witness"
#define CF_KEY_KIND_WITNESS_PUB "witness-public"

/** Writes DIR/witness.key and DIR/witness.pub (an Ed25519 pair for `confide audit witness`;
 *  DIR is created 0700). Refuses to overwrite an existing witness.key (CF_E_STATE). */
cf_err cf_keys_generate_witness(const char *dir, char *errstr, size_t errstr_size);

/**
 * Loads DIR/<name> and requires its kind to be @p kind (for files with other names, e.g. a
 * key kept outside the standard layout). Same checks and ownership as cf_key_load.
 */
cf_err cf_key_load_kind(const char *dir, const char *name, const char *kind, cf_key **out,
                        char *errstr, size_t errstr_size);
/** Loads DIR/party-<party>.key (1 <= party < 8) and checks the party index recorded in it. */
cf_err cf_key_load_party(const char *dir, unsigned party, cf_key **out, char *errstr,
                         size_t errstr_size);
/**
 * Loads the Ed25519 public key from DIR/signing.pub (refused when group- or world-writable).
 * @p id and @p epoch may be NULL.
 */
cf_err cf_key_load_signing_pub(const char *dir, uint8_t pk[CF_KEY_SIGN_PK_LEN],
                               uint8_t id[CF_KEY_ID_LEN], uint32_t *epoch, char *errstr,
                               size_t errstr_size);
/** Number of parties k of a gateway or auditor key (the keys holding seeds); 0 for other
 *  kinds. Borrows @p k. */
unsigned cf_key_parties(const cf_key *k);
/** The MAC master secret (CF_KEY_MAC_LEN bytes) of a gateway or combiner key; NULL for
 *  other kinds. Borrowed from @p k. */
const uint8_t *cf_key_mac_master(const cf_key *k);
/** Seed of party @p party (1..k-1) inside a gateway or auditor key, or of a party key
 *  (@p party ignored); NULL when absent. Borrowed from @p k. */
const uint8_t *cf_key_seed(const cf_key *k, unsigned party);

#ifdef __cplusplus
}
#endif
#endif
