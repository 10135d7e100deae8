/*
 * Private to the audit module: the on-disk record format, CRC32C, little-endian helpers,
 * the SHA-256 context wrapper and the segment scanner shared by the writer, the reader and
 * the verifier. docs/audit.md is the normative description of the formats.
 */
#ifndef CF_AUDIT_INT_H
#define CF_AUDIT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "confide/audit.h"
#include "confide/core.h"

/* Record header, 32 bytes, little-endian:
 *   0 magic u32 "CFAR"   4 version u8   5 type u8   6 flags u16 (0)
 *   8 index u64          16 count u32   20 payload_len u32
 *  24 hdr_crc u32 = crc32c(bytes 0..24)   28 crc u32 = crc32c(bytes 0..28 || payload)
 * The header CRC lets recovery tell a torn payload (intact header, short file) from a damaged
 * length field. The AEAD additional data is bytes 0..28. */
#define CF__AUDIT_MAGIC 0x52414643u /* "CFAR" little-endian */
#define CF__AUDIT_VERSION 2 /* 2: log ids, salted commitments, C2SP heads, signed checkpoints */
#define CF__AUDIT_HDR_LEN 32
#define CF__AUDIT_HCRC_OFF 24
#define CF__AUDIT_CRC_OFF 28
#define CF__AUDIT_NONCE_LEN 24
#define CF__AUDIT_TAG_LEN 16
/* Sealed payloads start with nonce(24) || data key id(8) || log id(16). */
#define CF__AUDIT_SEAL_PREFIX (CF__AUDIT_NONCE_LEN + CF_KEY_ID_LEN + CF_AUDIT_LOG_ID_LEN)
#define CF__AUDIT_LOGID_OFF (CF__AUDIT_NONCE_LEN + CF_KEY_ID_LEN)
#define CF__AUDIT_KEY_LEN 32
#define CF__AUDIT_SK_LEN 64
/* STH payload: "CFSTH\0v2" || size u64 || root || time i64 || key id || log id || sig */
#define CF__AUDIT_STH_PAYLOAD                                                                      \
    (8 + 8 + CF_AUDIT_HASH_LEN + 8 + CF_KEY_ID_LEN + CF_AUDIT_LOG_ID_LEN + CF_AUDIT_SIG_LEN)
/* Log-header payload (type 4, the first record of a log):
 *   "CFLOG\0v2" || log id || created_us i64 || signing key id || data key id || signature
 * signature = Ed25519 by the log's signing key over header bytes 0..28 || payload[0..48). */
#define CF__AUDIT_LOGHDR_SIGNED 48
#define CF__AUDIT_LOGHDR_PAYLOAD (CF__AUDIT_LOGHDR_SIGNED + CF_AUDIT_SIG_LEN)
#define CF__AUDIT_LOGHDR_MSG_LEN (CF__AUDIT_CRC_OFF + CF__AUDIT_LOGHDR_SIGNED)
#define CF__AUDIT_PAYLOAD_MAX (1u << 30)
#define CF__AUDIT_SEG_SUFFIX ".seg"
#define CF__AUDIT_SEG_NAME_LEN 24 /* 20 digits + ".seg" */
#define CF__AUDIT_EVENT_VERSION 1

typedef struct {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t index;
    uint32_t count;
    uint32_t payload_len;
    uint32_t hdr_crc;
    uint32_t crc;
} cf__audit_hdr;

static inline void cf__le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void cf__le64(uint8_t *p, uint64_t v)
{
    cf__le32(p, (uint32_t)v);
    cf__le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t cf__rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t cf__rd64(const uint8_t *p)
{
    return (uint64_t)cf__rd32(p) | (uint64_t)cf__rd32(p + 4) << 32;
}

/* CRC32C (Castagnoli), hardware SSE4.2 when available. crc starts at 0. */
#define cf__audit_crc32c cf_crc32c /* core */

/* Encodes @p h with its header CRC (h->hdr_crc and h->crc are ignored). With a @p payload
 * (h->payload_len bytes) the record CRC too; with NULL the record CRC is left 0 for a later
 * cf__audit_hdr_seal (bytes 0..28, the AEAD additional data, are final either way). */
void cf__audit_hdr_encode(const cf__audit_hdr *h, const uint8_t *payload,
                          uint8_t out[CF__AUDIT_HDR_LEN]);
void cf__audit_hdr_seal(uint8_t hdr[CF__AUDIT_HDR_LEN], const uint8_t *payload);
void cf__audit_hdr_decode(const uint8_t in[CF__AUDIT_HDR_LEN], cf__audit_hdr *h);

/* A reusable SHA-256 context: one EVP_MD_CTX, reinitialized per hash. */
typedef struct {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    bool has_empty;
    uint8_t empty[CF_AUDIT_HASH_LEN]; /* SHA-256 of no bytes: most events have no verdict */
} cf__sha;
cf_err cf__sha_init(cf__sha *s);
void cf__sha_free(cf__sha *s);
void cf__sha_leaf2(cf__sha *s, const void *a, size_t alen, const void *b, size_t blen,
                   const void *c, size_t clen, uint8_t out[CF_AUDIT_HASH_LEN]);
void cf__sha_node(cf__sha *s, const uint8_t l[CF_AUDIT_HASH_LEN],
                  const uint8_t r[CF_AUDIT_HASH_LEN], uint8_t out[CF_AUDIT_HASH_LEN]);

/* Incremental frontier embedded in the writer and the verifier (no allocation). */
typedef struct {
    uint64_t n;
    uint8_t h[64][CF_AUDIT_HASH_LEN]; /* h[k] valid when bit k of n is set */
} cf__frontier;
void cf__frontier_append(cf__frontier *f, cf__sha *s, const uint8_t leaf[CF_AUDIT_HASH_LEN]);
void cf__frontier_root(const cf__frontier *f, cf__sha *s, uint8_t out[CF_AUDIT_HASH_LEN]);

/* commit = SHA-256(salt || canonical event bytes) (the plaintext holds salt || event). */
void cf__audit_commit(cf__sha *s, const uint8_t *salted, size_t len,
                      uint8_t out[CF_AUDIT_HASH_LEN]);
/* leaf = SHA-256(0x00 || commit || SHA-256(verdict)). */
void cf__audit_leaf_of(cf__sha *s, const uint8_t commit[CF_AUDIT_HASH_LEN], const void *verdict,
                       size_t verdict_len, uint8_t out[CF_AUDIT_HASH_LEN]);
/* Decodes canonical event bytes; returns bytes consumed or 0 when malformed. */
size_t cf__audit_event_decode(const uint8_t *buf, size_t len, cf_event *ev);

void cf__audit_sth_payload(const cf_audit_sth *sth, uint8_t out[CF__AUDIT_STH_PAYLOAD]);
/* Signs the checkpoint body of @p sth (every field but the signature set). */
void cf__audit_sth_sign(cf_audit_sth *sth, const uint8_t sk[CF__AUDIT_SK_LEN]);
void cf__audit_sth_parse(const uint8_t in[CF__AUDIT_STH_PAYLOAD], cf_audit_sth *sth,
                         bool *domain_ok);

/* ---- segments -------------------------------------------------------------------------- */

/* Sorted list of segment files in a directory. */
typedef struct {
    size_t n;
    uint64_t *first;  /* first index, from the name */
    char (*name)[32]; /* file name */
} cf__seglist;
cf_err cf__audit_list_segments(const char *dir, cf__seglist *out, char *errstr, size_t errstr_size);
void cf__seglist_free(cf__seglist *l);
void cf__audit_seg_name(uint64_t first, char out[32]);

/* A segment mapped read-only. */
typedef struct {
    const uint8_t *data;
    size_t len;
} cf__segmap;
cf_err cf__segmap_open(const char *dir, const char *name, cf__segmap *m, char *errstr,
                       size_t errstr_size);
void cf__segmap_close(cf__segmap *m);

/* Result of checking the record at an offset. */
typedef enum {
    CF__REC_OK = 0,
    CF__REC_END,       /* offset == len */
    CF__REC_SHORT_HDR, /* fewer than 32 bytes left */
    CF__REC_BAD_MAGIC,
    CF__REC_BAD_HDR_CRC,
    CF__REC_BAD_VERSION,
    CF__REC_BAD_TYPE,
    CF__REC_SHORT_PAYLOAD, /* payload runs past the end of the file */
    CF__REC_BAD_CRC,
    CF__REC_BAD_LAYOUT /* CRC fine but the payload is inconsistent with the header */
} cf__rec_status;
const char *cf__rec_status_text(cf__rec_status s);

/* Parsed view of a record inside a mapped segment (all pointers into the map). */
typedef struct {
    cf__audit_hdr h;
    const uint8_t *hdr_bytes;
    const uint8_t *payload;
    /* batch and checkpoint */
    const uint8_t *nonce;
    const uint8_t *key_id; /* id of the data key that sealed the record */
    /* batch */
    const uint8_t *ct;
    size_t ct_len;
    const uint8_t *verdicts; /* count x (u32 len, bytes) */
    size_t verdicts_len;
    const uint8_t *meta; /* caller's batch metadata (e.g. source position) */
    size_t meta_len;
    const uint8_t *leaves;  /* count x 32 */
    const uint8_t *commits; /* count x 32 */
    const uint8_t *log_id;  /* every record type */
    /* checkpoint */
    const uint8_t *state_ct; /* ciphertext (state + tag) */
    size_t state_ct_len;
    const uint8_t *ckpt_sig; /* Ed25519 by the log's signing key (cf__audit_ckpt_message) */
    /* dead letters (ct, ct_len, leaves, commits, nonce, key_id as for a batch) */
    const uint8_t *info; /* count x clear entry (cf__dead_info_next) */
    size_t info_len;
    /* log header */
    int64_t created_us;
    const uint8_t *sign_key_id; /* signing key of the log when it was created */
    const uint8_t *hdr_sig;     /* Ed25519 over cf__audit_loghdr_message */
} cf__rec;
/* Checks CRC and layout of the record at @p off. */
cf__rec_status cf__audit_rec_parse(const uint8_t *data, size_t len, size_t off, cf__rec *r);
/* What the log's signing key signs for a log-header record. */
void cf__audit_loghdr_message(const cf__rec *r, uint8_t out[CF__AUDIT_LOGHDR_MSG_LEN]);
/* Encodes a log-header record (CF__AUDIT_HDR_LEN + CF__AUDIT_LOGHDR_PAYLOAD bytes) into @p out,
 * signed with @p sk. */
void cf__audit_loghdr_build(const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], int64_t created_us,
                            const uint8_t sign_kid[CF_KEY_ID_LEN],
                            const uint8_t data_kid[CF_KEY_ID_LEN], const uint8_t sk[64],
                            uint8_t *out);

/* What the first record of a log says, read without mapping the segment: its log id (from
 * the log-header record, or for a log written before header records from its first record),
 * whether it is a header record. CF_E_STATE with a clear message when the log was written in
 * another format version; *has false for a log with no record yet. */
cf_err cf__audit_peek(const char *dir, const cf__seglist *sl, uint8_t log_id[CF_AUDIT_LOG_ID_LEN],
                      bool *has, bool *header, char *errstr, size_t errstr_size);

/* True when every byte of data[off, len) is zero (a crash-extended but unwritten tail). */
bool cf__audit_all_zero(const uint8_t *data, size_t len, size_t off);

/* The AEAD additional data of a batch: header bytes 0..28 || log id || meta. */
#define CF__AUDIT_AD_MAX (CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN + CF_AUDIT_META_MAX)
size_t cf__audit_batch_ad(const uint8_t *hdr, const uint8_t *log_id, const uint8_t *meta,
                          size_t meta_len, uint8_t ad[CF__AUDIT_AD_MAX]);
/* What the log's signing key signs for a checkpoint record, chained into the tree:
 *   "CFCKP\0v3" || header bytes 0..28 (type, index) || log id || tree size u64 || root ||
 *   SHA-256(nonce || key id || state ciphertext)
 * where tree size and root are those of the leaves before the record. So a checkpoint
 * cannot be replaced, moved to another index or place in the log (replayed later), or taken
 * from another log without the signing key. Logs without a log-header record (written
 * before it existed) sign the unchained form ("CFCKP\0v2", no tree size or root):
 * @p tree_root NULL. Returns the message length. */
#define CF__AUDIT_CKPT_MSG_MAX                                                                     \
    (8 + CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN + 8 + 2 * CF_AUDIT_HASH_LEN)
size_t cf__audit_ckpt_message(const cf__rec *r, uint64_t tree_size, const uint8_t *tree_root,
                              uint8_t out[CF__AUDIT_CKPT_MSG_MAX]);
/* Opens a batch's ciphertext into @p pt (capacity >= r->ct_len); *pt_len = plaintext bytes.
 * CF_E_AUTH when the tag does not verify (wrong key or tampering). */
cf_err cf__audit_batch_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                            size_t *pt_len);
/* Opens a checkpoint state the same way. */
cf_err cf__audit_state_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                            size_t *pt_len);
/* Why a sealed record does not open: names both key ids when they differ (wrong key), else
 * says the record was altered. Writes into @p buf and returns it. */
const char *cf__audit_open_failure(const char *what, const uint8_t rec_kid[CF_KEY_ID_LEN],
                                   const uint8_t key_id[CF_KEY_ID_LEN], char *buf, size_t size);
/* Walks a verdict region: returns the verdict at the cursor and advances it. */
static inline void cf__verdict_next(const uint8_t **cur, cf_audit_bytes *v)
{
    uint32_t len = cf__rd32(*cur);
    v->data = *cur + 4;
    v->len = len;
    *cur += 4 + (size_t)len;
}

/* ---- dead-letter records (type 5, dead.c) ---------------------------------------------- */

/* Payload: nonce(24) || data key id(8) || log id(16) || ct_len u32 || ct || info_len u32 ||
 * info || leaf[count][32] || commit[count][32]
 *   info, per entry, in clear: line u64 | offset u64 | flags u8 (bit 0: raw truncated) |
 *         reason_len u8 | reason | source_len u8 | source
 *   plaintext, per entry: salt[16] | raw_len u32 | raw
 *   commit = SHA-256("CFDEAD\0\1" || salt || raw_len || raw)
 *   leaf   = SHA-256(0x00 || "CFDEAD\0\1" || commit || SHA-256(info entry))
 *   AEAD additional data = header bytes 0..28 || log id || "CFDEAD\0\1" || SHA-256(info)
 * The leaf's input (73 bytes) can never equal an event leaf's (65 bytes), and the domain tag
 * separates the commitments and the additional data from those of batches. */
#define CF__AUDIT_DEAD_DOMAIN_LEN 8
extern const uint8_t cf__audit_dead_domain[CF__AUDIT_DEAD_DOMAIN_LEN];
#define CF__AUDIT_DEAD_INFO_FIXED 19 /* line, offset, flags, two length bytes */
#define CF__AUDIT_DEAD_INFO_MAX (CF__AUDIT_DEAD_INFO_FIXED + 2 * CF_AUDIT_DEAD_TEXT_MAX)
#define CF__AUDIT_DEAD_PT_FIXED (CF_AUDIT_SALT_LEN + 4)
#define CF__AUDIT_DEAD_AD_LEN                                                                      \
    (CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN + CF__AUDIT_DEAD_DOMAIN_LEN + CF_AUDIT_HASH_LEN)

/* One clear entry of a dead-letter record's info region. */
typedef struct {
    uint64_t line, offset;
    bool truncated;
    const char *reason; /* not NUL-terminated */
    size_t reason_len;
    const char *source; /* not NUL-terminated */
    size_t source_len;
    const uint8_t *bytes; /* the whole entry, as hashed into the leaf */
    size_t len;
} cf__dead_info;
/* Reads the entry at *cur (advances it); false when it runs past @p end or is malformed. */
bool cf__dead_info_next(const uint8_t **cur, const uint8_t *end, cf__dead_info *d);
/* Encodes the clear entry of @p d into @p out (room for CF__AUDIT_DEAD_INFO_MAX); returns
 * its length. Reason and source are cut at CF_AUDIT_DEAD_TEXT_MAX bytes. */
size_t cf__dead_info_encode(const cf_audit_dead *d, uint8_t *out);
/* Reads one plaintext entry (salt || raw_len || raw) at @p pt; returns its length, or 0
 * when it does not fit in @p left. */
size_t cf__dead_pt_next(const uint8_t *pt, size_t left, const uint8_t **raw, size_t *raw_len);
void cf__audit_dead_commit(cf__sha *s, const uint8_t *entry, size_t len,
                           uint8_t out[CF_AUDIT_HASH_LEN]);
void cf__audit_dead_leaf(cf__sha *s, const uint8_t commit[CF_AUDIT_HASH_LEN], const uint8_t *info,
                         size_t info_len, uint8_t out[CF_AUDIT_HASH_LEN]);
void cf__audit_dead_ad(const uint8_t *hdr, const uint8_t *log_id, const uint8_t *info,
                       size_t info_len, uint8_t ad[CF__AUDIT_DEAD_AD_LEN]);
cf__rec_status cf__audit_parse_dead(cf__rec *r);
/* Opens a dead-letter record's ciphertext into @p pt (capacity >= r->ct_len). CF_E_AUTH when
 * the tag does not verify. */
cf_err cf__audit_dead_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                           size_t *pt_len);

/* fdatasync calls made by the writer and cf_audit_commit so far (tests: one per group). */
uint64_t cf__audit_sync_count(const cf_audit_log *log);

#endif
