/**
 * @file audit.h
 * @brief The audit log: a write-ahead log of encrypted events that are the leaves of an
 * RFC 9162 Merkle tree (SHA-256), with Ed25519 signed tree heads after every batch,
 * checkpoint records for crash recovery, inclusion and consistency proofs, and an offline
 * verifier. Formats and the crash-recovery contract: docs/audit.md.
 *
 * Three layers, usable separately:
 *  - Merkle primitives (cf_audit_leaf_hash ... cf_audit_verify_consistency), pure functions
 *    over 32-byte hashes; cf_audit_tree is the incremental O(log n) frontier and
 *    cf_audit_prover answers PATH/PROOF queries from a flat array of leaf hashes.
 *  - The log writer (cf_audit_log): append a batch (returns its signed tree head once the
 *    batch is durable under the fsync policy), write checkpoints, recover on open.
 *  - Readers: cf_audit_reader iterates records (decrypting with the data key), and
 *    cf_audit_verify checks a whole log directory.
 *
 * Threads: every object is used by one thread at a time. Different objects are independent.
 */
#ifndef CONFIDE_AUDIT_H
#define CONFIDE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/event.h"
#include "confide/keys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CF_AUDIT_HASH_LEN 32
#define CF_AUDIT_SIG_LEN 64
#define CF_AUDIT_PK_LEN 32
/** Longest proof: one hash per tree level (sizes are below 2^64). */
#define CF_AUDIT_PROOF_MAX 64
/** Bytes of a log id: random, drawn when the log is created, carried by every record. */
#define CF_AUDIT_LOG_ID_LEN 16
/** Per-event salt inside the ciphertext; the leaf commits to salt || event. */
#define CF_AUDIT_SALT_LEN 16
/** Longest checkpoint note text (cf_audit_sth_note), signature lines included. */
#define CF_AUDIT_NOTE_MAX 1024
/** Longest verdict of one event, bytes. */
#define CF_AUDIT_VERDICT_MAX 65535u
/** Most events in one batch record. */
#define CF_AUDIT_BATCH_MAX 65536u
/** Largest per-batch metadata (cf_audit_append's @p meta), bytes. */
#define CF_AUDIT_META_MAX 4096u
/** Largest checkpoint state, bytes. */
#define CF_AUDIT_STATE_MAX (256u << 20)

/* ---- Merkle primitives (RFC 9162 section 2.1) ------------------------------------------- */

/** SHA-256(0x00 || data). */
void cf_audit_leaf_hash(const void *data, size_t len, uint8_t out[CF_AUDIT_HASH_LEN]);
/** SHA-256(0x01 || left || right); left and right are raw byte strings of any length. */
void cf_audit_node_hash_raw(const void *left, size_t left_len, const void *right, size_t right_len,
                            uint8_t out[CF_AUDIT_HASH_LEN]);
/** SHA-256(0x01 || left || right) of two hashes. @p out may alias either input. */
void cf_audit_node_hash(const uint8_t left[CF_AUDIT_HASH_LEN],
                        const uint8_t right[CF_AUDIT_HASH_LEN], uint8_t out[CF_AUDIT_HASH_LEN]);
/** The root of the empty tree, SHA-256(""). */
void cf_audit_empty_root(uint8_t out[CF_AUDIT_HASH_LEN]);

/**
 * Incremental Merkle tree: keeps only the frontier (the roots of the perfect subtrees of the
 * binary decomposition of the size, at most 64 hashes), so an append costs amortized one node
 * hash and the root at the current size costs at most 63. Never stores leaves.
 */
typedef struct cf_audit_tree cf_audit_tree;
/** Returns owned (free with cf_audit_tree_destroy). */
cf_err cf_audit_tree_create(cf_audit_tree **out);
void cf_audit_tree_destroy(cf_audit_tree *t);
/** Appends one leaf hash. CF_E_OVERFLOW when the tree already has 2^63 leaves. */
cf_err cf_audit_tree_append(cf_audit_tree *t, const uint8_t leaf_hash[CF_AUDIT_HASH_LEN]);
uint64_t cf_audit_tree_size(const cf_audit_tree *t);
/** MTH of all leaves appended so far (cf_audit_empty_root when empty). */
void cf_audit_tree_root(const cf_audit_tree *t, uint8_t out[CF_AUDIT_HASH_LEN]);

/**
 * Proof generator over a flat array of n leaf hashes (32 bytes each). It builds a cache of
 * every perfect aligned subtree (2n hashes of memory in total, n node hashes of work), after
 * which a root at any size, an inclusion proof and a consistency proof each cost O(log^2 n)
 * node hashes at most.
 */
typedef struct cf_audit_prover cf_audit_prover;
/** Copies @p leaves (borrowed, n * 32 bytes). Returns owned (free with cf_audit_prover_destroy). */
cf_err cf_audit_prover_create(cf_audit_prover **out, const uint8_t *leaves, uint64_t n);
void cf_audit_prover_destroy(cf_audit_prover *p);
uint64_t cf_audit_prover_size(const cf_audit_prover *p);
/** The leaf hash at @p index. CF_E_INVAL when index >= size. */
cf_err cf_audit_prover_leaf(const cf_audit_prover *p, uint64_t index,
                            uint8_t out[CF_AUDIT_HASH_LEN]);
/** MTH(D[0:size]). CF_E_INVAL when size exceeds the leaves held. */
cf_err cf_audit_prover_root(const cf_audit_prover *p, uint64_t size,
                            uint8_t out[CF_AUDIT_HASH_LEN]);
/**
 * RFC 9162 2.1.3.1 PATH(index, D[0:size]) into @p path (room for CF_AUDIT_PROOF_MAX hashes of
 * 32 bytes, back to back), nearest the leaf first; *path_len counts hashes.
 * CF_E_INVAL unless index < size <= leaves held.
 */
cf_err cf_audit_prover_inclusion(const cf_audit_prover *p, uint64_t index, uint64_t size,
                                 uint8_t *path, size_t *path_len);
/**
 * RFC 9162 2.1.4.1 PROOF(m, D[0:n]); empty when m == n. CF_E_INVAL unless 0 < m <= n <= leaves.
 */
cf_err cf_audit_prover_consistency(const cf_audit_prover *p, uint64_t m, uint64_t n, uint8_t *path,
                                   size_t *path_len);

/**
 * RFC 9162 2.1.3.2: CF_OK when @p path proves @p leaf_hash at @p index in the tree of
 * @p size leaves with @p root; CF_E_CORRUPT when it does not; CF_E_INVAL when index >= size.
 */
cf_err cf_audit_verify_inclusion(uint64_t index, uint64_t size,
                                 const uint8_t leaf_hash[CF_AUDIT_HASH_LEN], const uint8_t *path,
                                 size_t path_len, const uint8_t root[CF_AUDIT_HASH_LEN]);
/**
 * RFC 9162 2.1.4.2: CF_OK when @p path proves the tree of size @p m with @p root_m is a prefix
 * of the tree of size @p n with @p root_n. When m == n the path must be empty and the roots
 * equal. CF_E_INVAL when m == 0 or m > n (no proof from the empty tree), CF_E_CORRUPT otherwise.
 */
cf_err cf_audit_verify_consistency(uint64_t m, uint64_t n, const uint8_t root_m[CF_AUDIT_HASH_LEN],
                                   const uint8_t root_n[CF_AUDIT_HASH_LEN], const uint8_t *path,
                                   size_t path_len);

/* ---- signed tree heads ------------------------------------------------------------------- */

/** A signed tree head. Plain data. */
typedef struct cf_audit_sth {
    uint64_t tree_size;
    uint8_t root[CF_AUDIT_HASH_LEN];
    int64_t timestamp_us; /* wall clock when signed, microseconds since the epoch */
    uint8_t key_id[CF_KEY_ID_LEN];
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN]; /* names the log (the checkpoint's origin) */
    uint8_t signature[CF_AUDIT_SIG_LEN]; /* Ed25519 over the checkpoint body */
} cf_audit_sth;

/**
 * The signed message is the body of a C2SP checkpoint (c2sp.org/tlog-checkpoint):
 *   confide.audit/<32 hex digits of the log id>\n   (the origin: names the log)
 *   <tree size, decimal>\n
 *   <root hash, base64>\n
 *   time <timestamp_us, decimal>\n                   (extension line)
 * Writes the text into @p out (NUL-terminated) and returns its length (0 when it does not
 * fit). A head of one log can never pass for a head of another.
 */
size_t cf_audit_sth_body(const cf_audit_sth *sth, char *out, size_t cap);
/** The origin line without its newline ("confide.audit/<hex>"), NUL-terminated (48 bytes). */
void cf_audit_origin(const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], char out[48]);
/** CF_OK when the signature verifies under @p public_key, CF_E_CRYPTO otherwise. */
cf_err cf_audit_sth_verify(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN]);
/**
 * The head as a C2SP signed note: the body, an empty line and the signature line
 * "\u2014 <origin> <base64(key hash (4) || signature (64))>", key hash = the first 4 bytes
 * of SHA-256(origin || "\n" || 0x01 || public key). Returns the length (0: too small).
 */
size_t cf_audit_sth_note(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN],
                         char *out, size_t cap);

/** A witness cosignature (c2sp.org/tlog-cosignature): Ed25519 by the witness over
 *  "cosignature/v1\ntime <t>\n" || checkpoint body. */
typedef struct cf_audit_cosig {
    char name[64];
    uint8_t key_hash[4];
    uint64_t time_s;
    uint8_t signature[CF_AUDIT_SIG_LEN];
} cf_audit_cosig;
#define CF_AUDIT_COSIG_MAX 8
/**
 * Parses a signed note (a checkpoint written by cf_audit_sth_note, possibly followed by
 * witness cosignature lines). Fills @p sth (its signature from the line whose name is the
 * origin; key_id is left zero) and up to CF_AUDIT_COSIG_MAX cosignatures. CF_E_PARSE with a
 * reason in errstr when the text is not a confide checkpoint.
 */
cf_err cf_audit_note_parse(const char *text, size_t len, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                           size_t *n_cosigs, char *errstr, size_t errstr_size);
/** Key hash of a signer or witness: SHA-256(name || "\n" || alg || pk)[0..4). */
void cf_audit_key_hash(const char *name, uint8_t alg, const uint8_t pk[CF_AUDIT_PK_LEN],
                       uint8_t out[4]);
/** Cosigns @p sth at @p time_s with the witness secret key (64 bytes) named @p name. */
void cf_audit_cosign(const cf_audit_sth *sth, const char *name, const uint8_t sk[64],
                     uint64_t time_s, cf_audit_cosig *out);
/** CF_OK when @p c is a valid cosignature of @p sth by (@p name, @p pk). */
cf_err cf_audit_cosig_verify(const cf_audit_sth *sth, const cf_audit_cosig *c,
                             const uint8_t pk[CF_AUDIT_PK_LEN]);
/** Appends the cosignature line of @p c to @p out (at @p len); returns the new length. */
size_t cf_audit_cosig_line(const cf_audit_cosig *c, char *out, size_t len, size_t cap);

/** Longest line of cf_audit_sth_json_line, newline included. */
#define CF_AUDIT_HEAD_LINE_MAX 4096
/**
 * One line of OUT/tree_heads.ndjson for @p sth (what the runtime writes after every batch):
 *   {"tree_size":N,"root":"hex","timestamp_us":T,"key_id":"hex","log_id":"hex",
 *    "signature":"hex","checkpoint":"<the signed note of cf_audit_sth_note, \n escaped>"}\n
 * Returns its length (0 when @p cap is too small; CF_AUDIT_HEAD_LINE_MAX always suffices).
 */
size_t cf_audit_sth_json_line(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN],
                              char *out, size_t cap);
/**
 * A head kept outside the log: a signed note (cf_audit_note_parse), or tree_heads.ndjson text
 * whose last line's "checkpoint" is used (key_id then comes from that line). Same outputs
 * and errors as cf_audit_note_parse.
 */
cf_err cf_audit_head_parse(const char *text, size_t len, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                           size_t *n_cosigs, char *errstr, size_t errstr_size);

/* ---- canonical leaf data ----------------------------------------------------------------- */

/** Longest canonical event encoding (cf_audit_event_encode), bytes. */
#define CF_AUDIT_EVENT_ENC_MAX (1 + 8 * 4 + 4 + 2 * (1 + CF_ID_MAX) + (1 + 3) + (1 + 2))
/**
 * Canonical event bytes (docs/audit.md): every field of @p ev except ingest_ns, fixed
 * little-endian widths, strings length-prefixed. Returns the length written, or 0 when @p size
 * is too small or a string field is not NUL-terminated within its array.
 */
size_t cf_audit_event_encode(const cf_event *ev, uint8_t *buf, size_t size);
/**
 * Leaf hash of an event with its verdict and salt: SHA-256(0x00 || commit || SHA-256(verdict))
 * with commit = SHA-256(salt || event bytes). The salt (random per event, kept only inside
 * the ciphertext) makes the commitment hiding: a leaf no longer lets anyone who can guess an
 * event's other fields find its amount by trying every value. The commitment is stored in
 * clear beside the leaf, so the verdict is authenticated by the signed root without the data
 * key.
 */
cf_err cf_audit_event_leaf_hash(const cf_event *ev, const uint8_t salt[CF_AUDIT_SALT_LEN],
                                const void *verdict, size_t verdict_len,
                                uint8_t out[CF_AUDIT_HASH_LEN]);

/* ---- dead letters ------------------------------------------------------------------------ */

/** Longest raw record kept in a dead-letter entry; longer ones are cut (raw_truncated). */
#define CF_AUDIT_DEAD_RAW_MAX (256u << 10)
/** Longest reason and source name kept in a dead-letter entry, bytes (cut beyond). */
#define CF_AUDIT_DEAD_TEXT_MAX 255u

/**
 * A rejected input record kept in the audit log (record type 5, docs/audit.md 2.5): where it
 * was (source, line, offset) and why (reason) in clear and authenticated by its leaf, its raw
 * bytes encrypted under the data key like events. Every dead letter is a leaf of the Merkle
 * tree with its own log index, so the log proves read = accepted + dead-lettered.
 * Writing: every pointer is borrowed for the call. Reading (cf_audit_entry.dead): borrowed
 * until the next cf_audit_reader_next; raw is NULL without the data key.
 */
typedef struct cf_audit_dead {
    const char *source; /* NUL-terminated, may be NULL (""): the input's name */
    uint64_t line;      /* 1-based line of the record's start (0: unknown) */
    uint64_t offset;    /* byte offset of the record's first byte */
    const char *reason; /* NUL-terminated, may be NULL (""); never holds record contents */
    const void *raw;    /* the record as read */
    size_t raw_len;
    bool raw_truncated; /* the record was longer than the bytes kept */
    /* writing only: how many of the appended batch's events precede it in the input
     * (0..n, non-decreasing along the array): the log keeps input order */
    uint32_t before;
} cf_audit_dead;

/* ---- the log writer ---------------------------------------------------------------------- */

typedef enum {
    CF_AUDIT_FSYNC_BATCH = 0, /* fdatasync before cf_audit_append/cf_audit_checkpoint return */
    CF_AUDIT_FSYNC_INTERVAL,  /* fdatasync when fsync_interval_ms passed since the last one */
    CF_AUDIT_FSYNC_NONE       /* never (benchmarks only: a crash may lose acknowledged events) */
} cf_audit_fsync;

/** Writer options; initialize with cf_audit_opts_default. */
typedef struct cf_audit_opts {
    uint64_t segment_bytes_max; /* roll to a new segment beyond this; default 64 MiB */
    cf_audit_fsync fsync;       /* default CF_AUDIT_FSYNC_BATCH */
    uint32_t fsync_interval_ms; /* for CF_AUDIT_FSYNC_INTERVAL; default 100 */
} cf_audit_opts;
void cf_audit_opts_default(cf_audit_opts *o);
/** Parses "batch" | "none" | "interval:MS" (MS 1..600000) into @p o. CF_E_INVAL otherwise. */
cf_err cf_audit_fsync_parse(const char *s, cf_audit_opts *o, char *errstr, size_t errstr_size);

/** What opening an existing log found. Plain data. */
typedef struct cf_audit_recovery {
    uint64_t next_index;        /* index the next appended event gets (= leaves in the log) */
    uint64_t segments;          /* segment files found */
    bool truncated;             /* a torn tail was cut off */
    char truncated_segment[64]; /* file name (no directory) of the torn segment */
    uint64_t truncated_offset;  /* byte offset where the torn record started (new file size) */
    uint64_t truncated_bytes;   /* bytes removed */
    bool has_sth;               /* a tree head exists (after open there always is one if n > 0) */
    cf_audit_sth last_sth;
    bool resigned; /* open appended a tree head for leaves no head covered */
    bool has_checkpoint;
    uint64_t checkpoint_index; /* the last checkpoint covers events [0, checkpoint_index) */
    /* leaves of dead-letter records (cf_audit_append_dead); next_index - dead_letters are
     * events */
    uint64_t dead_letters;
} cf_audit_recovery;

/** An open log for appending. */
typedef struct cf_audit_log cf_audit_log;

/** Opaque per-event verdict bytes (e.g. the ids of the rules that fired). Borrowed. */
typedef struct cf_audit_bytes {
    const void *data;
    size_t len;
} cf_audit_bytes;

/**
 * Opens (creating DIR 0700 if needed) the log in @p dir with the keys in @p keys_dir:
 * data.key (XChaCha20-Poly1305) and signing.key (Ed25519, 64 bytes). Scans every segment,
 * verifies every record's CRC, truncates a torn tail of the last segment (reported in
 * @p rec, may be NULL), rebuilds the Merkle frontier, and appends a tree head when the last
 * leaves are not covered by one. A new log (no record yet) gets a random log id and starts
 * with its signed log-header record, durable before this returns; an existing log's id is
 * reloaded from it. A damaged record that is not a torn tail is CF_E_CORRUPT (errstr names
 * segment, offset and reason): run `confide audit verify`. A log of another format version
 * is CF_E_STATE (errstr names the version). Copies
 * KEYDIR/signing.pub into @p dir when it is not there yet. Cost: one sequential read of the
 * log (about 0.15 s per million events here). One writer per directory (flock): a second
 * open fails with CF_E_STATE.
 * @p opts may be NULL for the defaults. Returns owned *out (free with cf_audit_close).
 */
cf_err cf_audit_open(cf_audit_log **out, const char *dir, const char *keys_dir,
                     const cf_audit_opts *opts, cf_audit_recovery *rec, char *errstr,
                     size_t errstr_size);
/** As cf_audit_open with keys already loaded (borrowed; copied into sodium memory). */
cf_err cf_audit_open_keys(cf_audit_log **out, const char *dir, const cf_key *data_key,
                          const cf_key *signing_key, const cf_audit_opts *opts,
                          cf_audit_recovery *rec, char *errstr, size_t errstr_size);
/** Syncs (whatever the policy), closes and frees. Accepts NULL. Returns the sync result. */
cf_err cf_audit_close(cf_audit_log *log);

/** Index the next appended event gets. */
uint64_t cf_audit_next_index(const cf_audit_log *log);
/** The log's id (random, drawn when the log was created and stored in its log-header
 *  record; every record carries it and every AEAD tag binds it). */
void cf_audit_log_id(const cf_audit_log *log, uint8_t out[CF_AUDIT_LOG_ID_LEN]);

/**
 * Appends a batch of @p n (1..CF_AUDIT_BATCH_MAX) events with their verdicts (@p verdicts
 * may be NULL: every verdict empty) as one batch record followed by a tree-head record, and
 * makes them durable as the fsync policy says, before returning. Events get the indexes
 * [*first_index, *first_index + n). The caller may forward the events only after CF_OK.
 * @p sth_out (may be NULL) receives the signed tree head of the tree including the batch.
 * On an I/O error the log is left unusable (CF_E_STATE afterwards): reopen it, which cuts
 * any partial record.  @locality one writer thread
 */
cf_err cf_audit_append(cf_audit_log *log, const cf_event *events, uint32_t n,
                       const cf_audit_bytes *verdicts, uint64_t *first_index,
                       cf_audit_sth *sth_out);
/** What the last failed write or sync of @p log was, with the OS's reason and the segment
 *  ("No space left on device (DIR/SEG)"), into @p buf. */
const char *cf_audit_last_error(const cf_audit_log *log, char *buf, size_t size);
/**
 * cf_audit_append with batch metadata: @p meta (may be NULL; at most CF_AUDIT_META_MAX
 * bytes, borrowed) is stored with the batch in clear and authenticated together with the
 * events (AEAD additional data). The runtime records there where in its sources the batch
 * ends (file offsets, stream sequences), so that after a crash it knows where to resume
 * reading: the reader returns it with each batch (cf_audit_entry.meta).
 */
cf_err cf_audit_append_meta(cf_audit_log *log, const cf_event *events, uint32_t n,
                            const cf_audit_bytes *verdicts, const cf_audit_bytes *meta,
                            uint64_t *first_index, cf_audit_sth *sth_out);

/**
 * cf_audit_append_meta with dead letters: @p n events (0..CF_AUDIT_BATCH_MAX; @p events may be
 * NULL when 0) and @p n_dead rejected input records (0..CF_AUDIT_BATCH_MAX; at least one of
 * the two non-zero) in input order: each dead letter goes before the event its `before`
 * names, so the log alternates batch records (with @p verdicts and @p meta each) and
 * dead-letter records, and every leaf's index is its position among the records read. Then
 * one tree head; all in one write, durable under the fsync policy before returning. Event i
 * gets index *first_index + i + (the dead letters with before <= i): set ev.seq to it.
 * *first_index (may be NULL) is the index of the first leaf written. CF_E_INVAL for a bad
 * argument (nothing is written).  @locality one writer thread
 */
cf_err cf_audit_append_dead(cf_audit_log *log, const cf_audit_dead *dead, uint32_t n_dead,
                            const cf_event *events, uint32_t n, const cf_audit_bytes *verdicts,
                            const cf_audit_bytes *meta, uint64_t *first_index,
                            cf_audit_sth *sth_out);

/**
 * Writes a checkpoint: opaque operator/window @p state (encrypted with the data key) that
 * reflects exactly the events [0, @p index). index <= cf_audit_next_index. Durable under the
 * fsync policy before returning.
 */
cf_err cf_audit_checkpoint(cf_audit_log *log, uint64_t index, const void *state, size_t len);

/**
 * The last checkpoint of the log (the one written last). *state returns owned (free with
 * cf_free; NULL when len is 0). CF_E_NOTFOUND when the log has none; CF_E_CORRUPT when its
 * signature does not chain it to the leaves before it (replayed, moved or forged);
 * CF_E_AUTH when it does not decrypt (errstr names the key ids).
 */
cf_err cf_audit_last_checkpoint(cf_audit_log *log, uint64_t *index, void **state, size_t *len,
                                char *errstr, size_t errstr_size);

/** Flushes to stable storage now (fdatasync), whatever the policy. */
cf_err cf_audit_sync(cf_audit_log *log);

/**
 * Group commit. With @p on, cf_audit_append_dead (and its wrappers) no longer sync under the
 * fsync policy: each append leaves a ticket (cf_audit_written right after it) and
 * cf_audit_commit(ticket), which may run on another thread while the writer keeps appending,
 * applies the policy to everything written up to at least that ticket, with one fdatasync
 * for all the appends before it. Checkpoints still sync before they return. Set before the
 * first append; a failed commit makes every later call fail (CF_E_STATE).
 */
void cf_audit_set_group_commit(cf_audit_log *log, bool on);
/** Bytes written so far (the ticket of the last append). Any thread. */
uint64_t cf_audit_written(const cf_audit_log *log);
/**
 * Makes every record written up to @p ticket durable per the fsync policy (batch: one
 * fdatasync unless an earlier commit covered it; interval: at most one per interval; none:
 * nothing). Any thread; a no-op when group commit is off (appends synced themselves).
 */
cf_err cf_audit_commit(cf_audit_log *log, uint64_t ticket);
/** true when the record(s) up to @p ticket are as durable as the fsync policy asks (always
 *  for none and interval, and when group commit is off). Any thread. */
bool cf_audit_is_durable(const cf_audit_log *log, uint64_t ticket);

/** Last signed tree head (CF_E_NOTFOUND for an empty log). */
cf_err cf_audit_last_sth(const cf_audit_log *log, cf_audit_sth *out);

/* ---- reading ----------------------------------------------------------------------------- */

typedef enum {
    CF_AUDIT_REC_BATCH = 1,
    CF_AUDIT_REC_STH = 2,
    CF_AUDIT_REC_CHECKPOINT = 3,
    /* The first record of a log, written when it is created: its id, creation time and key
     * ids, signed. Readers consume it (cf_audit_reader_log_id) and never return it. */
    CF_AUDIT_REC_HEADER = 4,
    /* Rejected input records (cf_audit_append_dead): leaves of the tree, never events. */
    CF_AUDIT_REC_DEAD = 5
} cf_audit_rec_type;

/** One record as the reader returns it. Every pointer is borrowed until the next call. */
typedef struct cf_audit_entry {
    cf_audit_rec_type type;
    const char *segment; /* file name, no directory */
    uint64_t offset;     /* byte offset of the record in its segment */
    /* batch: events [index, index + count) (trimmed to from_index); dead: dead letters
     * [index, index + count) (trimmed alike); sth: tree size; checkpoint: the index the state
     * covers */
    uint64_t index;
    uint32_t count;
    const cf_event *events;              /* batch with a data key; NULL without one */
    const cf_audit_bytes *verdicts;      /* batch: count verdicts */
    const uint8_t *leaf_hashes;          /* batch: count * 32 bytes as stored */
    const uint8_t *commits;              /* batch: count * 32 bytes, SHA-256(salt || event) */
    const uint8_t *salts;                /* batch with a data key: count * CF_AUDIT_SALT_LEN */
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN]; /* every record names its log */
    const uint8_t *meta;                 /* batch: the caller's metadata (not trimmed) */
    size_t meta_len;
    cf_audit_sth sth;     /* sth */
    const uint8_t *state; /* checkpoint with a data key: decrypted state */
    size_t state_len;
    /* dead: count entries (raw NULL without a data key); leaf_hashes and commits as for a
     * batch */
    const cf_audit_dead *dead;
} cf_audit_entry;

typedef struct cf_audit_reader cf_audit_reader;
/**
 * Opens a reader over the log in @p dir. @p data_key (borrowed, may be NULL) decrypts
 * events and checkpoint states. Batch records wholly before @p from_index are skipped and a
 * batch straddling it is trimmed so its first event is @p from_index; tree heads and
 * checkpoints are returned in log order after that point. Returns owned (free with
 * cf_audit_reader_destroy).
 */
cf_err cf_audit_reader_open(cf_audit_reader **out, const char *dir, const cf_key *data_key,
                            uint64_t from_index, char *errstr, size_t errstr_size);
void cf_audit_reader_destroy(cf_audit_reader *r);
/**
 * The id of the log being read (known from open on: read from its log-header record, or for
 * a log written before header records from its first record). false for a log with no record
 * yet. Every record the reader returns carries this id (others are CF_E_CORRUPT).
 */
bool cf_audit_reader_log_id(const cf_audit_reader *r, uint8_t out[CF_AUDIT_LOG_ID_LEN]);
/** true when the log starts with a log-header record (logs written since header records). */
bool cf_audit_reader_has_header(const cf_audit_reader *r);
/**
 * Next record. CF_E_EOF after the last one; an incomplete last record of the last segment
 * (being written right now, or torn by a crash) also ends the iteration. CF_E_CORRUPT
 * (errstr names segment, offset, index, reason) for a bad CRC, a failed decryption or any
 * other damage.
 */
cf_err cf_audit_reader_next(cf_audit_reader *r, cf_audit_entry *e, char *errstr,
                            size_t errstr_size);

/**
 * Loads every leaf hash of the log (CRC-checked) into one array: *leaves returns owned
 * (free with cf_free), 32 * *n bytes. Also returns the signed heads (owned, cf_free) when
 * @p sths is not NULL. Memory: 32 bytes per event plus 120 per head.
 */
cf_err cf_audit_load_leaves(const char *dir, uint8_t **leaves, uint64_t *n, cf_audit_sth **sths,
                            size_t *n_sths, char *errstr, size_t errstr_size);

/* ---- verification ------------------------------------------------------------------------ */

/** Result of cf_audit_verify. Plain data. */
typedef struct cf_audit_report {
    uint64_t events;     /* events decrypted and re-hashed (0 without a data key) */
    uint64_t leaves;     /* leaf hashes in the log: events and dead letters */
    uint64_t verdicts;   /* verdicts present */
    uint64_t gaps;       /* missing index ranges between batch records */
    uint64_t duplicates; /* repeated event_id (with a data key) or repeated leaf hash */
    uint64_t sth_valid;
    uint64_t sth_invalid;
    uint64_t checkpoints;
    uint64_t records;
    uint64_t segments;
    uint64_t covered;       /* leaves covered by a valid signed head with the right root */
    double completeness;    /* covered leaves with a verdict / leaves; 1.0 for an empty log */
    bool decrypted;         /* events were decrypted and re-hashed */
    bool dup_check_bounded; /* the duplicate set hit its bound: later events were not checked */
    bool ok;
    bool has_log_id;                     /* the log has a record */
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN]; /* the id every record carries */
    bool has_header;                     /* the log starts with its log-header record */
    int64_t created_us;                  /* from the header: when the log was created */
    /* evidence of tampering or damage (CRC, signature, root, gap, decryption) was found, as
     * opposed to processing faults only (duplicate event ids, unsigned tail after a crash) */
    bool alert;
    /* the first bad record (when !ok) */
    char bad_segment[64];
    uint64_t bad_offset;
    uint64_t bad_index;
    char bad_reason[160];
    /* dead letters (record type 5) whose leaf matched their commitment and reason, and with
     * the data key whose raw record decrypted and re-hashed; leaves counts them too */
    uint64_t dead_letters;
} cf_audit_report;

/** An Ed25519 public key with its key id (keys.h), for verifying across key rotations. */
typedef struct cf_audit_pubkey {
    uint8_t key[CF_AUDIT_PK_LEN];
    uint8_t id[CF_KEY_ID_LEN];
    uint32_t epoch; /* the key file's epoch: heads must not go back to an older epoch */
} cf_audit_pubkey;

/** Verification options; zero-initialize, then set. */
typedef struct cf_audit_verify_opts {
    const cf_key *data_key;    /* borrowed; NULL: check stored leaf hashes only */
    const uint8_t *public_key; /* borrowed, 32 bytes; NULL: signatures are not checked */
    /* borrowed, CF_KEY_ID_LEN bytes, may be NULL: the main key's id; with it, a record signed
     * under a key that is none of those given is reported as "(wrong signing key)" naming
     * both ids, instead of as a bad signature */
    const uint8_t *public_key_id;
    uint32_t public_key_epoch; /* epoch of the main key (heads' key epochs never go back) */
    uint64_t dup_max;          /* duplicate set bound (entries); 0: 1 << 24 */
    /* Key rotation (borrowed, may be NULL/0): a record sealed under a data key, or a head
     * signed under a signing key, whose id matches one of these uses it; anything else uses
     * data_key / public_key. */
    const cf_key *const *more_data_keys;
    size_t n_more_data_keys;
    const cf_audit_pubkey *more_public_keys;
    size_t n_more_public_keys;
} cf_audit_verify_opts;

/**
 * Verifies the log in @p dir (read only): every CRC; with a data key decrypts and re-hashes
 * every event and compares with the stored leaf hash; recomputes the root at every tree
 * head and checks its signature; checks heads only grow, batch indexes are contiguous and
 * event ids (or, without a key, leaf hashes) are unique. CF_OK when everything holds;
 * CF_E_CORRUPT when something does not (@p rep names the first bad record; it is filled in
 * either case); other codes for I/O errors (errstr).
 */
cf_err cf_audit_verify(const char *dir, const cf_audit_verify_opts *opts, cf_audit_report *rep,
                       char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif
