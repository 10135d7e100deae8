/*
 * Audit codecs: CRC32C, record headers, the canonical event encoding (the Merkle leaf data),
 * signed tree-head messages, and the record parser every reader uses.
 *
 * Design: the parser checks a record completely (magic, version, header CRC, length, record
 * CRC, payload layout) before anyone looks at its contents, so the rest of the module works
 * on records whose every length field is known to be consistent. Nothing here allocates;
 * nothing is shared between threads except the constant CRC table.
 */
#include <pthread.h>
#include <stdio.h>

#include <sodium.h>

#include "audit_int.h"

/* ---- record headers -------------------------------------------------------------------- */

void cf__audit_hdr_encode(const cf__audit_hdr *h, const uint8_t *payload,
                          uint8_t out[CF__AUDIT_HDR_LEN])
{
    cf__le32(out, CF__AUDIT_MAGIC);
    out[4] = CF__AUDIT_VERSION;
    out[5] = h->type;
    out[6] = 0;
    out[7] = 0;
    cf__le64(out + 8, h->index);
    cf__le32(out + 16, h->count);
    cf__le32(out + 20, h->payload_len);
    cf__le32(out + CF__AUDIT_HCRC_OFF, cf__audit_crc32c(0, out, CF__AUDIT_HCRC_OFF));
    cf__le32(out + CF__AUDIT_CRC_OFF, 0);
    if (payload != NULL) {
        cf__audit_hdr_seal(out, payload);
    }
}

void cf__audit_hdr_seal(uint8_t hdr[CF__AUDIT_HDR_LEN], const uint8_t *payload)
{
    uint32_t c = cf__audit_crc32c(0, hdr, CF__AUDIT_CRC_OFF);
    c = cf__audit_crc32c(c, payload, cf__rd32(hdr + 20));
    cf__le32(hdr + CF__AUDIT_CRC_OFF, c);
}

void cf__audit_hdr_decode(const uint8_t in[CF__AUDIT_HDR_LEN], cf__audit_hdr *h)
{
    h->magic = cf__rd32(in);
    h->version = in[4];
    h->type = in[5];
    h->flags = (uint16_t)(in[6] | in[7] << 8);
    h->index = cf__rd64(in + 8);
    h->count = cf__rd32(in + 16);
    h->payload_len = cf__rd32(in + 20);
    h->hdr_crc = cf__rd32(in + CF__AUDIT_HCRC_OFF);
    h->crc = cf__rd32(in + CF__AUDIT_CRC_OFF);
}

const char *cf__rec_status_text(cf__rec_status s)
{
    switch (s) {
    case CF__REC_OK:
        return "ok";
    case CF__REC_END:
        return "end of segment";
    case CF__REC_SHORT_HDR:
        return "truncated record header";
    case CF__REC_BAD_MAGIC:
        return "bad record magic";
    case CF__REC_BAD_HDR_CRC:
        return "record header CRC mismatch";
    case CF__REC_BAD_VERSION:
        return "unsupported record version";
    case CF__REC_BAD_TYPE:
        return "unknown record type or flags";
    case CF__REC_SHORT_PAYLOAD:
        return "truncated record payload";
    case CF__REC_BAD_CRC:
        return "record CRC mismatch";
    case CF__REC_BAD_LAYOUT:
        return "record payload inconsistent with its header";
    }
    return "unknown";
}

bool cf__audit_all_zero(const uint8_t *data, size_t len, size_t off)
{
    for (size_t i = off; i < len; i++) {
        if (data[i] != 0) {
            return false;
        }
    }
    return true;
}

static cf__rec_status parse_batch(cf__rec *r)
{
    const uint8_t *p = r->payload;
    size_t left = r->h.payload_len;
    if (r->h.count == 0 || r->h.count > CF_AUDIT_BATCH_MAX || left < CF__AUDIT_SEAL_PREFIX + 4) {
        return CF__REC_BAD_LAYOUT;
    }
    r->nonce = p;
    r->key_id = p + CF__AUDIT_NONCE_LEN;
    r->log_id = p + CF__AUDIT_LOGID_OFF;
    p += CF__AUDIT_SEAL_PREFIX;
    left -= CF__AUDIT_SEAL_PREFIX;
    size_t ct_len = cf__rd32(p);
    p += 4;
    left -= 4;
    if (ct_len < CF__AUDIT_TAG_LEN || ct_len > left) {
        return CF__REC_BAD_LAYOUT;
    }
    r->ct = p;
    r->ct_len = ct_len;
    p += ct_len;
    left -= ct_len;
    if (left < 4) {
        return CF__REC_BAD_LAYOUT;
    }
    size_t vlen = cf__rd32(p);
    p += 4;
    left -= 4;
    if (vlen > left || left - vlen < 4) {
        return CF__REC_BAD_LAYOUT;
    }
    size_t mlen = cf__rd32(p + vlen);
    if (mlen > CF_AUDIT_META_MAX ||
        left - vlen - 4 != mlen + 2 * (size_t)r->h.count * CF_AUDIT_HASH_LEN) {
        return CF__REC_BAD_LAYOUT;
    }
    r->meta = p + vlen + 4;
    r->meta_len = mlen;
    r->verdicts = p;
    r->verdicts_len = vlen;
    /* Every verdict entry must fit, and the entries must fill the region exactly. */
    size_t off = 0;
    for (uint32_t i = 0; i < r->h.count; i++) {
        if (vlen - off < 4) {
            return CF__REC_BAD_LAYOUT;
        }
        size_t l = cf__rd32(p + off);
        if (l > CF_AUDIT_VERDICT_MAX || l > vlen - off - 4) {
            return CF__REC_BAD_LAYOUT;
        }
        off += 4 + l;
    }
    if (off != vlen) {
        return CF__REC_BAD_LAYOUT;
    }
    r->leaves = r->meta + mlen;
    r->commits = r->leaves + (size_t)r->h.count * CF_AUDIT_HASH_LEN;
    return CF__REC_OK;
}

static const uint8_t loghdr_domain[8] = {'C', 'F', 'L', 'O', 'G', 0, 'v', '2'};

void cf__audit_loghdr_message(const cf__rec *r, uint8_t out[CF__AUDIT_LOGHDR_MSG_LEN])
{
    memcpy(out, r->hdr_bytes, CF__AUDIT_CRC_OFF);
    memcpy(out + CF__AUDIT_CRC_OFF, r->payload, CF__AUDIT_LOGHDR_SIGNED);
}

void cf__audit_loghdr_build(const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], int64_t created_us,
                            const uint8_t sign_kid[CF_KEY_ID_LEN],
                            const uint8_t data_kid[CF_KEY_ID_LEN], const uint8_t sk[64],
                            uint8_t *out)
{
    uint8_t *p = out + CF__AUDIT_HDR_LEN;
    memcpy(p, loghdr_domain, 8);
    memcpy(p + 8, log_id, CF_AUDIT_LOG_ID_LEN);
    cf__le64(p + 8 + CF_AUDIT_LOG_ID_LEN, (uint64_t)created_us);
    memcpy(p + 16 + CF_AUDIT_LOG_ID_LEN, sign_kid, CF_KEY_ID_LEN);
    memcpy(p + 16 + CF_AUDIT_LOG_ID_LEN + CF_KEY_ID_LEN, data_kid, CF_KEY_ID_LEN);
    cf__audit_hdr h = {.type = CF_AUDIT_REC_HEADER,
                       .index = 0,
                       .count = 0,
                       .payload_len = CF__AUDIT_LOGHDR_PAYLOAD};
    cf__audit_hdr_encode(&h, NULL, out);
    cf__rec view = {.hdr_bytes = out, .payload = p};
    uint8_t msg[CF__AUDIT_LOGHDR_MSG_LEN];
    cf__audit_loghdr_message(&view, msg);
    crypto_sign_detached(p + CF__AUDIT_LOGHDR_SIGNED, NULL, msg, sizeof(msg), sk);
    cf__audit_hdr_seal(out, p);
}

cf__rec_status cf__audit_rec_parse(const uint8_t *data, size_t len, size_t off, cf__rec *r)
{
    memset(r, 0, sizeof(*r));
    if (off == len) {
        return CF__REC_END;
    }
    if (len - off < CF__AUDIT_HDR_LEN) {
        return CF__REC_SHORT_HDR;
    }
    const uint8_t *hb = data + off;
    cf__audit_hdr_decode(hb, &r->h);
    r->hdr_bytes = hb;
    if (r->h.magic != CF__AUDIT_MAGIC) {
        return CF__REC_BAD_MAGIC;
    }
    if (cf__audit_crc32c(0, hb, CF__AUDIT_HCRC_OFF) != r->h.hdr_crc) {
        return CF__REC_BAD_HDR_CRC;
    }
    if (r->h.version != CF__AUDIT_VERSION) {
        return CF__REC_BAD_VERSION;
    }
    if (r->h.flags != 0 || r->h.type < CF_AUDIT_REC_BATCH || r->h.type > CF_AUDIT_REC_DEAD) {
        return CF__REC_BAD_TYPE;
    }
    if (r->h.payload_len > len - off - CF__AUDIT_HDR_LEN) {
        return CF__REC_SHORT_PAYLOAD;
    }
    r->payload = hb + CF__AUDIT_HDR_LEN;
    uint32_t c = cf__audit_crc32c(0, hb, CF__AUDIT_CRC_OFF);
    c = cf__audit_crc32c(c, r->payload, r->h.payload_len);
    if (c != r->h.crc) {
        return CF__REC_BAD_CRC;
    }
    switch (r->h.type) {
    case CF_AUDIT_REC_BATCH:
        return parse_batch(r);
    case CF_AUDIT_REC_DEAD:
        return cf__audit_parse_dead(r);
    case CF_AUDIT_REC_STH:
        if (r->h.count != 0 || r->h.payload_len != CF__AUDIT_STH_PAYLOAD) {
            return CF__REC_BAD_LAYOUT;
        }
        r->log_id = r->payload + 8 + 8 + CF_AUDIT_HASH_LEN + 8 + CF_KEY_ID_LEN;
        return CF__REC_OK;
    case CF_AUDIT_REC_HEADER:
        if (r->h.count != 0 || r->h.index != 0 || r->h.payload_len != CF__AUDIT_LOGHDR_PAYLOAD ||
            memcmp(r->payload, loghdr_domain, 8) != 0) {
            return CF__REC_BAD_LAYOUT;
        }
        r->log_id = r->payload + 8;
        r->created_us = (int64_t)cf__rd64(r->payload + 8 + CF_AUDIT_LOG_ID_LEN);
        r->sign_key_id = r->payload + 8 + CF_AUDIT_LOG_ID_LEN + 8;
        r->key_id = r->sign_key_id + CF_KEY_ID_LEN;
        r->hdr_sig = r->payload + CF__AUDIT_LOGHDR_SIGNED;
        return CF__REC_OK;
    default:
        if (r->h.count != 0 ||
            r->h.payload_len < CF__AUDIT_SEAL_PREFIX + CF__AUDIT_TAG_LEN + CF_AUDIT_SIG_LEN) {
            return CF__REC_BAD_LAYOUT;
        }
        r->nonce = r->payload;
        r->key_id = r->payload + CF__AUDIT_NONCE_LEN;
        r->log_id = r->payload + CF__AUDIT_LOGID_OFF;
        r->state_ct = r->payload + CF__AUDIT_SEAL_PREFIX;
        r->state_ct_len = r->h.payload_len - CF__AUDIT_SEAL_PREFIX - CF_AUDIT_SIG_LEN;
        r->ckpt_sig = r->state_ct + r->state_ct_len;
        return CF__REC_OK;
    }
}

size_t cf__audit_batch_ad(const uint8_t *hdr, const uint8_t *log_id, const uint8_t *meta,
                          size_t meta_len, uint8_t ad[CF__AUDIT_AD_MAX])
{
    CF_ASSERT(meta_len <= CF_AUDIT_META_MAX);
    memcpy(ad, hdr, CF__AUDIT_CRC_OFF);
    memcpy(ad + CF__AUDIT_CRC_OFF, log_id, CF_AUDIT_LOG_ID_LEN);
    if (meta_len > 0) {
        memcpy(ad + CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN, meta, meta_len);
    }
    return CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN + meta_len;
}

size_t cf__audit_ckpt_message(const cf__rec *r, uint64_t tree_size, const uint8_t *tree_root,
                              uint8_t out[CF__AUDIT_CKPT_MSG_MAX])
{
    static const uint8_t dom2[8] = {'C', 'F', 'C', 'K', 'P', 0, 'v', '2'};
    static const uint8_t dom3[8] = {'C', 'F', 'C', 'K', 'P', 0, 'v', '3'};
    memcpy(out, tree_root != NULL ? dom3 : dom2, 8);
    memcpy(out + 8, r->hdr_bytes, CF__AUDIT_CRC_OFF);
    size_t n = 8 + CF__AUDIT_CRC_OFF;
    memcpy(out + n, r->log_id, CF_AUDIT_LOG_ID_LEN);
    n += CF_AUDIT_LOG_ID_LEN;
    if (tree_root != NULL) {
        cf__le64(out + n, tree_size);
        memcpy(out + n + 8, tree_root, CF_AUDIT_HASH_LEN);
        n += 8 + CF_AUDIT_HASH_LEN;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, r->nonce, CF__AUDIT_NONCE_LEN + CF_KEY_ID_LEN);
    crypto_hash_sha256_update(&st, r->state_ct, r->state_ct_len);
    crypto_hash_sha256_final(&st, out + n);
    return n + CF_AUDIT_HASH_LEN;
}

cf_err cf__audit_batch_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                            size_t *pt_len)
{
    unsigned long long n = 0;
    uint8_t ad[CF__AUDIT_AD_MAX];
    size_t adl = cf__audit_batch_ad(r->hdr_bytes, r->log_id, r->meta, r->meta_len, ad);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &n, NULL, r->ct, r->ct_len, ad, adl,
                                                   r->nonce, key) != 0) {
        return CF_E_AUTH;
    }
    *pt_len = (size_t)n;
    return CF_OK;
}

cf_err cf__audit_state_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                            size_t *pt_len)
{
    unsigned long long n = 0;
    uint8_t ad[CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN];
    memcpy(ad, r->hdr_bytes, CF__AUDIT_CRC_OFF);
    memcpy(ad + CF__AUDIT_CRC_OFF, r->log_id, CF_AUDIT_LOG_ID_LEN);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &n, NULL, r->state_ct, r->state_ct_len, ad,
                                                   sizeof(ad), r->nonce, key) != 0) {
        return CF_E_AUTH;
    }
    *pt_len = (size_t)n;
    return CF_OK;
}

const char *cf__audit_open_failure(const char *what, const uint8_t rec_kid[CF_KEY_ID_LEN],
                                   const uint8_t key_id[CF_KEY_ID_LEN], char *buf, size_t size)
{
    if (memcmp(rec_kid, key_id, CF_KEY_ID_LEN) != 0) {
        char a[2 * CF_KEY_ID_LEN + 1], b[2 * CF_KEY_ID_LEN + 1];
        sodium_bin2hex(a, sizeof(a), rec_kid, CF_KEY_ID_LEN);
        sodium_bin2hex(b, sizeof(b), key_id, CF_KEY_ID_LEN);
        snprintf(buf, size, "%s: sealed under data key %s, not %s (wrong data key)", what, a, b);
    } else {
        snprintf(buf, size, "%s: no decryption under the record's own data key (tampered record)",
                 what);
    }
    return buf;
}

/* ---- canonical event encoding ---------------------------------------------------------- */

static size_t put_str(uint8_t *p, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap + 1);
    if (n > cap) {
        return 0;
    }
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return 1 + n;
}

size_t cf_audit_event_encode(const cf_event *ev, uint8_t *buf, size_t size)
{
    uint8_t tmp[CF_AUDIT_EVENT_ENC_MAX];
    uint8_t *p = tmp;
    *p++ = CF__AUDIT_EVENT_VERSION;
    cf__le64(p, ev->event_id);
    cf__le64(p + 8, (uint64_t)ev->ts_us);
    cf__le64(p + 16, (uint64_t)ev->amount_minor);
    cf__le64(p + 24, ev->seq);
    p += 32;
    *p++ = ev->type;
    *p++ = ev->channel;
    *p++ = (uint8_t)ev->fraud;
    *p++ = (uint8_t)ev->fraud_scenario;
    size_t n;
    if ((n = put_str(p, ev->account, CF_ID_MAX)) == 0) {
        return 0;
    }
    p += n;
    if ((n = put_str(p, ev->merchant, CF_ID_MAX)) == 0) {
        return 0;
    }
    p += n;
    if ((n = put_str(p, ev->currency, sizeof(ev->currency) - 1)) == 0) {
        return 0;
    }
    p += n;
    if ((n = put_str(p, ev->country, sizeof(ev->country) - 1)) == 0) {
        return 0;
    }
    p += n;
    size_t len = (size_t)(p - tmp);
    CF_ASSERT(len <= CF_AUDIT_EVENT_ENC_MAX);
    if (len > size) {
        return 0;
    }
    memcpy(buf, tmp, len);
    return len;
}

static size_t get_str(const uint8_t *p, size_t left, char *dst, size_t cap)
{
    if (left < 1 || p[0] > cap || (size_t)p[0] + 1 > left) {
        return 0;
    }
    memcpy(dst, p + 1, p[0]);
    dst[p[0]] = '\0';
    return 1 + (size_t)p[0];
}

size_t cf__audit_event_decode(const uint8_t *buf, size_t len, cf_event *ev)
{
    const uint8_t *p = buf;
    size_t left = len;
    if (left < 1 + 32 + 4 || p[0] != CF__AUDIT_EVENT_VERSION) {
        return 0;
    }
    memset(ev, 0, sizeof(*ev));
    ev->event_id = cf__rd64(p + 1);
    ev->ts_us = (int64_t)cf__rd64(p + 9);
    ev->amount_minor = (int64_t)cf__rd64(p + 17);
    ev->seq = cf__rd64(p + 25);
    ev->type = p[33];
    ev->channel = p[34];
    ev->fraud = (int8_t)p[35];
    ev->fraud_scenario = (int8_t)p[36];
    p += 37;
    left -= 37;
    size_t n;
    if ((n = get_str(p, left, ev->account, CF_ID_MAX)) == 0) {
        return 0;
    }
    p += n;
    left -= n;
    if ((n = get_str(p, left, ev->merchant, CF_ID_MAX)) == 0) {
        return 0;
    }
    p += n;
    left -= n;
    if ((n = get_str(p, left, ev->currency, sizeof(ev->currency) - 1)) == 0) {
        return 0;
    }
    p += n;
    left -= n;
    if ((n = get_str(p, left, ev->country, sizeof(ev->country) - 1)) == 0) {
        return 0;
    }
    p += n;
    return (size_t)(p - buf);
}

/* ---- signed tree heads: C2SP checkpoints and signed notes ----------------------------- */

static const uint8_t sth_domain[8] = {'C', 'F', 'S', 'T', 'H', 0, 'v', '2'};
static const char sig_dash[] = "\xe2\x80\x94 "; /* U+2014 EM DASH and a space */

void cf_audit_origin(const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], char out[48])
{
    char hex[2 * CF_AUDIT_LOG_ID_LEN + 1];
    sodium_bin2hex(hex, sizeof(hex), log_id, CF_AUDIT_LOG_ID_LEN);
    snprintf(out, 48, "confide.audit/%s", hex);
}

size_t cf_audit_sth_body(const cf_audit_sth *sth, char *out, size_t cap)
{
    char origin[48];
    char root[sodium_base64_ENCODED_LEN(CF_AUDIT_HASH_LEN, sodium_base64_VARIANT_ORIGINAL)];
    cf_audit_origin(sth->log_id, origin);
    sodium_bin2base64(root, sizeof(root), sth->root, CF_AUDIT_HASH_LEN,
                      sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(out, cap, "%s\n%llu\n%s\ntime %lld\n", origin,
                     (unsigned long long)sth->tree_size, root, (long long)sth->timestamp_us);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

cf_err cf_audit_sth_verify(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN])
{
    char body[256];
    size_t n = cf_audit_sth_body(sth, body, sizeof(body));
    if (n == 0 ||
        crypto_sign_verify_detached(sth->signature, (const uint8_t *)body, n, public_key) != 0) {
        return CF_E_CRYPTO;
    }
    return CF_OK;
}

void cf__audit_sth_sign(cf_audit_sth *sth, const uint8_t sk[CF__AUDIT_SK_LEN])
{
    char body[256];
    size_t n = cf_audit_sth_body(sth, body, sizeof(body));
    CF_ASSERT(n > 0);
    crypto_sign_detached(sth->signature, NULL, (const uint8_t *)body, n, sk);
}

void cf__audit_sth_payload(const cf_audit_sth *sth, uint8_t out[CF__AUDIT_STH_PAYLOAD])
{
    uint8_t *p = out;
    memcpy(p, sth_domain, 8);
    cf__le64(p + 8, sth->tree_size);
    memcpy(p + 16, sth->root, CF_AUDIT_HASH_LEN);
    cf__le64(p + 48, (uint64_t)sth->timestamp_us);
    memcpy(p + 56, sth->key_id, CF_KEY_ID_LEN);
    memcpy(p + 64, sth->log_id, CF_AUDIT_LOG_ID_LEN);
    memcpy(p + 80, sth->signature, CF_AUDIT_SIG_LEN);
}

void cf__audit_sth_parse(const uint8_t in[CF__AUDIT_STH_PAYLOAD], cf_audit_sth *sth,
                         bool *domain_ok)
{
    *domain_ok = memcmp(in, sth_domain, 8) == 0;
    sth->tree_size = cf__rd64(in + 8);
    memcpy(sth->root, in + 16, CF_AUDIT_HASH_LEN);
    sth->timestamp_us = (int64_t)cf__rd64(in + 48);
    memcpy(sth->key_id, in + 56, CF_KEY_ID_LEN);
    memcpy(sth->log_id, in + 64, CF_AUDIT_LOG_ID_LEN);
    memcpy(sth->signature, in + 80, CF_AUDIT_SIG_LEN);
}

void cf_audit_key_hash(const char *name, uint8_t alg, const uint8_t pk[CF_AUDIT_PK_LEN],
                       uint8_t out[4])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)name, strlen(name));
    crypto_hash_sha256_update(&st, (const uint8_t *)"\n", 1);
    crypto_hash_sha256_update(&st, &alg, 1);
    crypto_hash_sha256_update(&st, pk, CF_AUDIT_PK_LEN);
    crypto_hash_sha256_final(&st, h);
    memcpy(out, h, 4);
}

size_t cf_audit_sth_note(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN],
                         char *out, size_t cap)
{
    size_t n = cf_audit_sth_body(sth, out, cap);
    if (n == 0) {
        return 0;
    }
    char origin[48];
    uint8_t blob[4 + CF_AUDIT_SIG_LEN];
    char b64[sodium_base64_ENCODED_LEN(sizeof(blob), sodium_base64_VARIANT_ORIGINAL)];
    cf_audit_origin(sth->log_id, origin);
    cf_audit_key_hash(origin, 0x01, public_key, blob);
    memcpy(blob + 4, sth->signature, CF_AUDIT_SIG_LEN);
    sodium_bin2base64(b64, sizeof(b64), blob, sizeof(blob), sodium_base64_VARIANT_ORIGINAL);
    int m = snprintf(out + n, cap - n, "\n%s%s %s\n", sig_dash, origin, b64);
    return m > 0 && (size_t)m < cap - n ? n + (size_t)m : 0;
}

/* The message a witness signs: "cosignature/v1\ntime <t>\n" || checkpoint body. */
static size_t cosig_message(const cf_audit_sth *sth, uint64_t t, char *out, size_t cap)
{
    int n = snprintf(out, cap, "cosignature/v1\ntime %llu\n", (unsigned long long)t);
    size_t b = cf_audit_sth_body(sth, out + n, cap - (size_t)n);
    return b == 0 ? 0 : (size_t)n + b;
}

void cf_audit_cosign(const cf_audit_sth *sth, const char *name, const uint8_t sk[64],
                     uint64_t time_s, cf_audit_cosig *out)
{
    char msg[512];
    size_t n = cosig_message(sth, time_s, msg, sizeof(msg));
    CF_ASSERT(n > 0);
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", name);
    cf_audit_key_hash(name, 0x04, sk + 32, out->key_hash);
    out->time_s = time_s;
    crypto_sign_detached(out->signature, NULL, (const uint8_t *)msg, n, sk);
}

cf_err cf_audit_cosig_verify(const cf_audit_sth *sth, const cf_audit_cosig *c,
                             const uint8_t pk[CF_AUDIT_PK_LEN])
{
    char msg[512];
    uint8_t kh[4];
    cf_audit_key_hash(c->name, 0x04, pk, kh);
    size_t n = cosig_message(sth, c->time_s, msg, sizeof(msg));
    if (n == 0 || memcmp(kh, c->key_hash, 4) != 0 ||
        crypto_sign_verify_detached(c->signature, (const uint8_t *)msg, n, pk) != 0) {
        return CF_E_CRYPTO;
    }
    return CF_OK;
}

size_t cf_audit_cosig_line(const cf_audit_cosig *c, char *out, size_t len, size_t cap)
{
    uint8_t blob[4 + 8 + CF_AUDIT_SIG_LEN];
    char b64[sodium_base64_ENCODED_LEN(sizeof(blob), sodium_base64_VARIANT_ORIGINAL)];
    memcpy(blob, c->key_hash, 4);
    for (int i = 0; i < 8; i++) {
        blob[4 + i] = (uint8_t)(c->time_s >> (56 - 8 * i)); /* big-endian, as C2SP says */
    }
    memcpy(blob + 12, c->signature, CF_AUDIT_SIG_LEN);
    sodium_bin2base64(b64, sizeof(b64), blob, sizeof(blob), sodium_base64_VARIANT_ORIGINAL);
    int m = snprintf(out + len, cap - len, "%s%s %s\n", sig_dash, c->name, b64);
    return m > 0 && (size_t)m < cap - len ? len + (size_t)m : len;
}

/* Next line of text[*pos, len) into line (NUL-terminated, without the newline); false at the
 * end or when a line is too long or not newline-terminated. */
static bool next_line(const char *text, size_t len, size_t *pos, char *line, size_t cap)
{
    if (*pos >= len) {
        return false;
    }
    const char *nl = memchr(text + *pos, '\n', len - *pos);
    if (nl == NULL) {
        return false;
    }
    size_t n = (size_t)(nl - (text + *pos));
    if (n >= cap) {
        return false;
    }
    memcpy(line, text + *pos, n);
    line[n] = '\0';
    *pos += n + 1;
    return true;
}

static bool parse_dec(const char *s, const char *prefix, uint64_t *out)
{
    size_t pl = strlen(prefix);
    if (strncmp(s, prefix, pl) != 0 || s[pl] == '\0' || strlen(s + pl) > 19) {
        return false;
    }
    uint64_t v = 0;
    for (const char *p = s + pl; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

cf_err cf_audit_note_parse(const char *text, size_t len, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                           size_t *n_cosigs, char *errstr, size_t errstr_size)
{
    char line[256], origin[48];
    size_t pos = 0, nc = 0, bl = 0;
    uint64_t v = 0;
    memset(sth, 0, sizeof(*sth));
    if (!next_line(text, len, &pos, line, sizeof(line)) ||
        strncmp(line, "confide.audit/", 14) != 0 || strlen(line) != 14 + 32 ||
        sodium_hex2bin(sth->log_id, CF_AUDIT_LOG_ID_LEN, line + 14, 32, NULL, &bl, NULL) != 0) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "not a confide checkpoint: the first line must be the origin "
                          "confide.audit/<32 hex digits>");
    }
    if (!next_line(text, len, &pos, line, sizeof(line)) || !parse_dec(line, "", &v)) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size, "checkpoint: bad tree size line");
    }
    sth->tree_size = v;
    if (!next_line(text, len, &pos, line, sizeof(line)) ||
        sodium_base642bin(sth->root, CF_AUDIT_HASH_LEN, line, strlen(line), NULL, &bl, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bl != CF_AUDIT_HASH_LEN) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size, "checkpoint: bad root hash line");
    }
    if (!next_line(text, len, &pos, line, sizeof(line)) || !parse_dec(line, "time ", &v)) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size, "checkpoint: bad time line");
    }
    sth->timestamp_us = (int64_t)v;
    if (!next_line(text, len, &pos, line, sizeof(line)) || line[0] != '\0') {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "checkpoint: expected an empty line before the signatures");
    }
    cf_audit_origin(sth->log_id, origin);
    bool signed_by_log = false;
    while (next_line(text, len, &pos, line, sizeof(line))) {
        size_t dl = sizeof(sig_dash) - 1;
        char *sp = strncmp(line, sig_dash, dl) == 0 ? strchr(line + dl, ' ') : NULL;
        if (sp == NULL || (size_t)(sp - line - (ptrdiff_t)dl) >= sizeof(cosigs->name)) {
            return cf_err_set(CF_E_PARSE, errstr, errstr_size, "checkpoint: bad signature line");
        }
        *sp = '\0';
        const char *name = line + dl;
        uint8_t blob[4 + 8 + CF_AUDIT_SIG_LEN];
        if (sodium_base642bin(blob, sizeof(blob), sp + 1, strlen(sp + 1), NULL, &bl, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            return cf_err_set(CF_E_PARSE, errstr, errstr_size, "checkpoint: bad signature");
        }
        if (strcmp(name, origin) == 0 && bl == 4 + CF_AUDIT_SIG_LEN) {
            memcpy(sth->signature, blob + 4, CF_AUDIT_SIG_LEN);
            signed_by_log = true;
        } else if (bl == sizeof(blob) && cosigs != NULL && nc < CF_AUDIT_COSIG_MAX) {
            cf_audit_cosig *c = &cosigs[nc++];
            memset(c, 0, sizeof(*c));
            memcpy(c->name, name, strlen(name)); /* shorter than c->name: checked above */
            memcpy(c->key_hash, blob, 4);
            for (int i = 0; i < 8; i++) {
                c->time_s = (c->time_s << 8) | blob[4 + i];
            }
            memcpy(c->signature, blob + 12, CF_AUDIT_SIG_LEN);
        }
    }
    if (!signed_by_log) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "checkpoint: no signature line by the log (%s)", origin);
    }
    if (n_cosigs != NULL) {
        *n_cosigs = nc;
    }
    return CF_OK;
}

/* ---- tree_heads.ndjson lines ----------------------------------------------------------- */

size_t cf_audit_sth_json_line(const cf_audit_sth *sth, const uint8_t public_key[CF_AUDIT_PK_LEN],
                              char *out, size_t cap)
{
    char note[CF_AUDIT_NOTE_MAX], esc[2 * CF_AUDIT_NOTE_MAX];
    size_t nl = cf_audit_sth_note(sth, public_key, note, sizeof(note));
    if (nl == 0) {
        return 0;
    }
    size_t e = 0;
    for (size_t i = 0; i < nl; i++) { /* the note is ASCII and U+2014: only \n to escape */
        if (note[i] == '\n') {
            esc[e++] = '\\';
            esc[e++] = 'n';
        } else {
            esc[e++] = note[i];
        }
    }
    esc[e] = '\0';
    char root[2 * CF_AUDIT_HASH_LEN + 1], kid[2 * CF_KEY_ID_LEN + 1];
    char sig[2 * CF_AUDIT_SIG_LEN + 1], lid[2 * CF_AUDIT_LOG_ID_LEN + 1];
    sodium_bin2hex(root, sizeof(root), sth->root, sizeof(sth->root));
    sodium_bin2hex(kid, sizeof(kid), sth->key_id, sizeof(sth->key_id));
    sodium_bin2hex(sig, sizeof(sig), sth->signature, sizeof(sth->signature));
    sodium_bin2hex(lid, sizeof(lid), sth->log_id, sizeof(sth->log_id));
    int n = snprintf(out, cap,
                     "{\"tree_size\":%llu,\"root\":\"%s\",\"timestamp_us\":%lld,\"key_id\":\"%s\","
                     "\"log_id\":\"%s\",\"signature\":\"%s\",\"checkpoint\":\"%s\"}\n",
                     (unsigned long long)sth->tree_size, root, (long long)sth->timestamp_us, kid,
                     lid, sig, esc);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The last line of NDJSON text that starts with '{' (NULL when none); *end its end. */
static const char *last_json_line(const char *text, size_t len, const char **end)
{
    const char *last = NULL;
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        const char *e = nl != NULL ? nl : text + len;
        if (e > p && *p == '{') {
            last = p;
            *end = e;
        }
        p = e + 1;
    }
    return last;
}

/* The string value of "key" in one JSON line (no escapes but \n), unescaped into out. */
static bool json_str(const char *line, const char *end, const char *key, char *out, size_t cap,
                     size_t *olen)
{
    char pat[48];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    size_t pl = strlen(pat);
    const char *k = NULL;
    for (const char *p = line; p + pl <= end; p++) {
        if (memcmp(p, pat, pl) == 0) {
            k = p + pl;
            break;
        }
    }
    if (k == NULL) {
        return false;
    }
    size_t n = 0;
    for (const char *p = k; p < end && *p != '"'; p++) {
        if (n + 1 >= cap) {
            return false;
        }
        if (*p == '\\' && p + 1 < end && p[1] == 'n') {
            out[n++] = '\n';
            p++;
        } else if (*p == '\\') {
            return false; /* the writer escapes newlines only */
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *olen = n;
    return true;
}

cf_err cf_audit_head_parse(const char *text, size_t len, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                           size_t *n_cosigs, char *errstr, size_t errstr_size)
{
    if (len == 0 || text[0] != '{') {
        return cf_audit_note_parse(text, len, sth, cosigs, n_cosigs, errstr, errstr_size);
    }
    const char *end = NULL;
    const char *line = last_json_line(text, len, &end);
    char note[2 * CF_AUDIT_NOTE_MAX], kid[2 * CF_KEY_ID_LEN + 1];
    size_t nl = 0, kl = 0;
    if (line == NULL || !json_str(line, end, "checkpoint", note, sizeof(note), &nl)) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "no \"checkpoint\" in the last line (not a tree_heads.ndjson)");
    }
    cf_err err = cf_audit_note_parse(note, nl, sth, cosigs, n_cosigs, errstr, errstr_size);
    if (err == CF_OK && json_str(line, end, "key_id", kid, sizeof(kid), &kl) &&
        kl == 2 * CF_KEY_ID_LEN) {
        size_t bl = 0;
        if (sodium_hex2bin(sth->key_id, CF_KEY_ID_LEN, kid, kl, NULL, &bl, NULL) != 0) {
            memset(sth->key_id, 0, CF_KEY_ID_LEN);
        }
    }
    return err;
}
