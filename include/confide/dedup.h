/**
 * @file dedup.h
 * @brief Duplicate event_id detection within an event-time horizon, in bounded memory.
 *
 * Upstream systems retry: the same payment can arrive twice. A cf_dedup remembers the
 * event_ids accepted within the last @c horizon_us of event time and answers, for each new
 * event, whether its id was already accepted. It never holds raw ids: each id is stored as
 * a 128-bit keyed hash (SipHash-2-4-128 under a subkey that keyed BLAKE2b derives from a
 * CF_DEDUP_KEY_LEN-byte secret the caller supplies; cf_dedup_hash), together with the event
 * time it was accepted at: 24 bytes per id plus its hash table slots, 43 bytes per id in all
 * (cf_dedup_capacity_for_bytes).
 *
 * Semantics (deterministic, a function of the sequence of calls only):
 * - newest = the largest event time accepted so far.
 * - An id is remembered from its acceptance until newest passes its event time by more than
 *   the horizon (t < newest - horizon), or until the memory cap forces it out.
 * - cf_dedup_check() of a remembered id is CF_DEDUP_DUPLICATE and changes nothing (the
 *   duplicate's event time does not move newest). Otherwise the event is accepted: its id is
 *   remembered (unless its own time is already beyond the horizon: nothing could repeat
 *   within it) and newest advances.
 * - Capacity: at most @c capacity ids. When an accepted id finds the memory full, the id
 *   accepted earliest is forgotten to make room (oldest-evicted), the event is accepted, and
 *   cf_dedup_evicted_full() counts it: a repeat of a forgotten id is no longer caught. The
 *   first such eviction is reported once through CF_LOG (warning).
 *
 * Memory is allocated once, at create; checks never allocate. Not thread-safe: one thread
 * (the decode stage) owns a cf_dedup.
 */
#ifndef CONFIDE_DEDUP_H
#define CONFIDE_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CF_DEDUP_KEY_LEN 32  /* the secret (keyed BLAKE2b derives the SipHash key from it) */
#define CF_DEDUP_HASH_LEN 16 /* 128-bit keyed hash of an event_id */
#define CF_DEDUP_CAPACITY_MAX (UINT64_C(1) << 30)

typedef struct cf_dedup cf_dedup;

typedef enum {
    CF_DEDUP_NEW = 0,       /* accepted (and remembered) */
    CF_DEDUP_DUPLICATE = 1, /* the id was accepted within the horizon: reject */
} cf_dedup_result;

/** The number of ids whose state (entries and hash table) fits in @p bytes (0 when none;
 *  at most CF_DEDUP_CAPACITY_MAX). */
uint64_t cf_dedup_capacity_for_bytes(uint64_t bytes);

/**
 * Creates an empty state for ids within @p horizon_us (> 0) of event time, remembering at
 * most @p capacity ids (1 .. CF_DEDUP_CAPACITY_MAX). @p key (borrowed, CF_DEDUP_KEY_LEN
 * bytes) keys the hash; NULL draws a random key that never leaves this state (enough when
 * the state is never persisted or shared: its decisions do not depend on the key). The key
 * is copied into guarded memory and wiped at destroy. Returns owned
 * (cf_dedup_destroy). CF_E_INVAL for a bad argument (errstr says which), CF_E_NOMEM.
 */
cf_err cf_dedup_create(cf_dedup **out, int64_t horizon_us, uint64_t capacity,
                       const uint8_t key[CF_DEDUP_KEY_LEN], char *errstr, size_t errstr_size);
/** Frees @p d and wipes its key. Accepts NULL. */
void cf_dedup_destroy(cf_dedup *d);

/** Never report the full state through CF_LOG (a second state that replays what another one
 *  reports, e.g. to check an input before a run that will report it itself). */
void cf_dedup_set_quiet(cf_dedup *d);
/** Checks @p event_id at event time @p ts_us; remembers it when it is new. @locality owner */
cf_dedup_result cf_dedup_check(cf_dedup *d, uint64_t event_id, int64_t ts_us);
/** True when @p event_id is remembered now (no side effect). */
bool cf_dedup_contains(const cf_dedup *d, uint64_t event_id);
/** The keyed hash of @p event_id as this state stores it (CF_DEDUP_HASH_LEN bytes):
 *  crypto_shorthash_siphashx24 of the id (8 bytes, little-endian) under the 16-byte subkey
 *  crypto_generichash_blake2b("confide dedup: siphashx24 subkey", key = the secret). */
void cf_dedup_hash(const cf_dedup *d, uint64_t event_id, uint8_t out[CF_DEDUP_HASH_LEN]);

/** Ids remembered now. */
uint64_t cf_dedup_size(const cf_dedup *d);
/** The most ids it can remember. */
uint64_t cf_dedup_capacity(const cf_dedup *d);
/** Bytes of memory it holds (entries and hash table), fixed at create. */
uint64_t cf_dedup_memory_bytes(const cf_dedup *d);
/** Duplicates found so far. */
uint64_t cf_dedup_duplicates(const cf_dedup *d);
/** Ids forgotten because the horizon passed them. */
uint64_t cf_dedup_expired(const cf_dedup *d);
/** Ids forgotten early because the memory was full (0 while the cap was never reached). */
uint64_t cf_dedup_evicted_full(const cf_dedup *d);
/** The newest event time accepted (INT64_MIN before the first). */
int64_t cf_dedup_newest_us(const cf_dedup *d);

#ifdef __cplusplus
}
#endif
#endif
