/*
 * Dead-letter records (type 5): rejected input records kept in the audit log.
 *
 * Design: a rejected record (malformed, a duplicate event_id, out of range, ...) is a leaf of
 * the Merkle tree like an event, so the log itself proves read = accepted + dead-lettered and
 * `confide audit verify` covers it. Where it was and why (source, line, offset, reason) are
 * in clear, as a verdict is, and bound to the leaf through their hash: an auditor without
 * the data key counts dead letters by reason and checks them against the signed root. The
 * raw bytes can hold account and merchant ids and amounts, so they are encrypted under the
 * data key with a per-entry salt, exactly as events are. Domain separation: the commitment,
 * the leaf and the AEAD additional data all carry the tag "CFDEAD\0\1", and the leaf's input
 * has another length than an event leaf's, so no dead letter can pass for an event.
 * Nothing here allocates. Threads: reentrant.
 */
#include <sodium.h>

#include "audit_int.h"

const uint8_t cf__audit_dead_domain[CF__AUDIT_DEAD_DOMAIN_LEN] = {'C', 'F', 'D', 'E',
                                                                  'A', 'D', 0,   1};

static size_t text_len(const char *s)
{
    if (s == NULL) {
        return 0;
    }
    size_t n = strlen(s);
    return n > CF_AUDIT_DEAD_TEXT_MAX ? CF_AUDIT_DEAD_TEXT_MAX : n;
}

size_t cf__dead_info_encode(const cf_audit_dead *d, uint8_t *out)
{
    size_t rl = text_len(d->reason), sl = text_len(d->source);
    cf__le64(out, d->line);
    cf__le64(out + 8, d->offset);
    out[16] = d->raw_truncated ? 1 : 0;
    out[17] = (uint8_t)rl;
    if (rl > 0) {
        memcpy(out + 18, d->reason, rl);
    }
    out[18 + rl] = (uint8_t)sl;
    if (sl > 0) {
        memcpy(out + 19 + rl, d->source, sl);
    }
    return CF__AUDIT_DEAD_INFO_FIXED + rl + sl;
}

bool cf__dead_info_next(const uint8_t **cur, const uint8_t *end, cf__dead_info *d)
{
    const uint8_t *p = *cur;
    if (end < p || (size_t)(end - p) < CF__AUDIT_DEAD_INFO_FIXED) {
        return false;
    }
    size_t left = (size_t)(end - p);
    d->line = cf__rd64(p);
    d->offset = cf__rd64(p + 8);
    if (p[16] > 1) {
        return false;
    }
    d->truncated = p[16] == 1;
    d->reason_len = p[17];
    if (left < CF__AUDIT_DEAD_INFO_FIXED + d->reason_len) {
        return false;
    }
    d->reason = (const char *)p + 18;
    d->source_len = p[18 + d->reason_len];
    d->len = CF__AUDIT_DEAD_INFO_FIXED + d->reason_len + d->source_len;
    if (left < d->len) {
        return false;
    }
    d->source = (const char *)p + 19 + d->reason_len;
    d->bytes = p;
    *cur = p + d->len;
    return true;
}

size_t cf__dead_pt_next(const uint8_t *pt, size_t left, const uint8_t **raw, size_t *raw_len)
{
    if (left < CF__AUDIT_DEAD_PT_FIXED) {
        return 0;
    }
    size_t n = cf__rd32(pt + CF_AUDIT_SALT_LEN);
    if (n > CF_AUDIT_DEAD_RAW_MAX || left - CF__AUDIT_DEAD_PT_FIXED < n) {
        return 0;
    }
    *raw = pt + CF__AUDIT_DEAD_PT_FIXED;
    *raw_len = n;
    return CF__AUDIT_DEAD_PT_FIXED + n;
}

void cf__audit_dead_commit(cf__sha *s, const uint8_t *entry, size_t len,
                           uint8_t out[CF_AUDIT_HASH_LEN])
{
    unsigned int n = 0;
    int ok = EVP_DigestInit_ex(s->ctx, s->md, NULL) &&
             EVP_DigestUpdate(s->ctx, cf__audit_dead_domain, CF__AUDIT_DEAD_DOMAIN_LEN) &&
             EVP_DigestUpdate(s->ctx, entry, len) && EVP_DigestFinal_ex(s->ctx, out, &n);
    CF_ASSERT(ok && n == CF_AUDIT_HASH_LEN);
}

void cf__audit_dead_leaf(cf__sha *s, const uint8_t commit[CF_AUDIT_HASH_LEN], const uint8_t *info,
                         size_t info_len, uint8_t out[CF_AUDIT_HASH_LEN])
{
    uint8_t ih[CF_AUDIT_HASH_LEN];
    cf__audit_commit(s, info, info_len, ih);
    cf__sha_leaf2(s, cf__audit_dead_domain, CF__AUDIT_DEAD_DOMAIN_LEN, commit, CF_AUDIT_HASH_LEN,
                  ih, sizeof(ih), out);
}

void cf__audit_dead_ad(const uint8_t *hdr, const uint8_t *log_id, const uint8_t *info,
                       size_t info_len, uint8_t ad[CF__AUDIT_DEAD_AD_LEN])
{
    memcpy(ad, hdr, CF__AUDIT_CRC_OFF);
    memcpy(ad + CF__AUDIT_CRC_OFF, log_id, CF_AUDIT_LOG_ID_LEN);
    memcpy(ad + CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN, cf__audit_dead_domain,
           CF__AUDIT_DEAD_DOMAIN_LEN);
    crypto_hash_sha256(ad + CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN + CF__AUDIT_DEAD_DOMAIN_LEN,
                       info, info_len);
}

cf__rec_status cf__audit_parse_dead(cf__rec *r)
{
    const uint8_t *p = r->payload;
    size_t left = r->h.payload_len;
    uint32_t n = r->h.count;
    if (n == 0 || n > CF_AUDIT_BATCH_MAX || left < CF__AUDIT_SEAL_PREFIX + 4) {
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
    if (ct_len < CF__AUDIT_TAG_LEN + (size_t)n * CF__AUDIT_DEAD_PT_FIXED || ct_len > left) {
        return CF__REC_BAD_LAYOUT;
    }
    r->ct = p;
    r->ct_len = ct_len;
    p += ct_len;
    left -= ct_len;
    if (left < 4) {
        return CF__REC_BAD_LAYOUT;
    }
    size_t ilen = cf__rd32(p);
    p += 4;
    left -= 4;
    if (ilen > left || left - ilen != 2 * (size_t)n * CF_AUDIT_HASH_LEN) {
        return CF__REC_BAD_LAYOUT;
    }
    /* Every entry must parse, and the entries must fill the region exactly. */
    const uint8_t *cur = p, *end = p + ilen;
    for (uint32_t i = 0; i < n; i++) {
        cf__dead_info d;
        if (!cf__dead_info_next(&cur, end, &d)) {
            return CF__REC_BAD_LAYOUT;
        }
    }
    if (cur != end) {
        return CF__REC_BAD_LAYOUT;
    }
    r->info = p;
    r->info_len = ilen;
    r->leaves = p + ilen;
    r->commits = r->leaves + (size_t)n * CF_AUDIT_HASH_LEN;
    return CF__REC_OK;
}

cf_err cf__audit_dead_open(const cf__rec *r, const uint8_t key[CF__AUDIT_KEY_LEN], uint8_t *pt,
                           size_t *pt_len)
{
    uint8_t ad[CF__AUDIT_DEAD_AD_LEN];
    cf__audit_dead_ad(r->hdr_bytes, r->log_id, r->info, r->info_len, ad);
    unsigned long long n = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &n, NULL, r->ct, r->ct_len, ad, sizeof(ad),
                                                   r->nonce, key) != 0) {
        return CF_E_AUTH;
    }
    *pt_len = (size_t)n;
    return CF_OK;
}
