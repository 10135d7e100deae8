/*
 * Private to the runtime: the combiner's signatures over what it releases (docs/audit.md,
 * "Signed results"). Every checkpoint and the end of the run append one line to
 * OUT/results.sig.ndjson, signed with results.key (the combiner's own key, never the log's):
 *
 *   {"seq":N,"log_id":"<hex>","events_through":E,"results_to":B,"results_sha256":"<hex>",
 *    "late_to":B,"late_sha256":"<hex>","key_id":"<hex>","params":{...},"sig":"<base64>"}
 *
 * results_sha256 is the SHA-256 of results.ndjson's first results_to bytes (likewise late),
 * so the last line covers every released row: a changed, dropped, added or reordered byte
 * fails. The signature is Ed25519 over the line up to ',"sig":' followed by '}'. params names
 * what the rows depend on (windows, grouping, min_count), so `confide audit verify-results`
 * can recompute them from the audit log and compare.
 */
#ifndef CF_RUNTIME_RESSIG_H
#define CF_RUNTIME_RESSIG_H

#include <sodium.h>
#include <stdint.h>

#include "confide/err.h"
#include "outfile.h"

typedef struct ressig {
    bool on;
    uint8_t *sk; /* sodium_malloc, 64 */
    uint8_t key_id[8];
    uint8_t log_id[16];
    char params[512]; /* the JSON object */
    crypto_hash_sha256_state results, late;
    uint64_t results_len, late_len, seq;
    outfile out;
} ressig;

/** Loads KEYS/results.key and opens OUT/results.sig.ndjson (cut to @p sig_len when
 *  resuming, @p resume true); the running digests start over the outputs' current prefixes
 *  (@p results_path and @p late_path, of @p results_len and @p late_len bytes). */
cf_err ressig_open(ressig *r, const char *keys_dir, const char *out_dir, const uint8_t log_id[16],
                   const char *params, bool resume, uint64_t sig_len, uint64_t seq,
                   const char *results_path, uint64_t results_len, const char *late_path,
                   uint64_t late_len, char *errstr, size_t errstr_size);
/** Feeds bytes appended to results (late = false) or late (late = true). */
void ressig_feed(ressig *r, bool late, const char *data, size_t len);
/** Appends a signed line covering everything fed so far and events [0, events_through). */
void ressig_sign(ressig *r, uint64_t events_through);
/** Length and sequence of results.sig.ndjson so far (for the checkpoint). */
cf_err ressig_position(ressig *r, uint64_t *len, uint64_t *seq);
cf_err ressig_commit(ressig *r, char *errstr, size_t errstr_size);

void ressig_close(ressig *r);

#endif
