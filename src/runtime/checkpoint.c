/*
 * Checkpoint blobs: what a checkpoint records of a run (positions in the outputs, counters,
 * window snapshots, and for distributed roles their stream positions), encoded the same way
 * whether it goes into the audit log (embedded, gateway) or a role's state file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secure_int.h"

/* Checkpoint blob (encrypted at rest by the audit log):
 *   "CFCK" u32 version (2) | u64 index, alerts_len, results_len, late_len, sig_len, sig_seq |
 *   u64 alerts, results, windows, suppressed, late, integrity_alerts |
 *   u32 k | k x (u64 len | window snapshot bytes)                     (little-endian) */
#define CKPT_MAGIC 0x4b434643u /* "CFCK" */
#define CKPT_HEADER (8 + 6 * 8 + 6 * 8 + 4)

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static const uint8_t *get64(const uint8_t *p, uint64_t *v)
{
    *v = 0;
    for (int i = 0; i < 8; i++) {
        *v |= (uint64_t)p[i] << (8 * i);
    }
    return p + 8;
}

uint8_t *cf__ckpt_encode(cf_secure *s, uint64_t index, uint64_t alerts_len, uint64_t alerts,
                         uint64_t results_len, uint64_t late_len, uint64_t sig_len,
                         uint64_t sig_seq, const uint8_t *const *snaps, const size_t *snap_len,
                         unsigned nsnap, const uint8_t *tail, size_t tail_len, size_t *len)
{
    size_t total = CKPT_HEADER + tail_len;
    for (unsigned i = 0; i < nsnap; i++) {
        total += 8 + snap_len[i];
    }
    uint8_t *data = cf_malloc(total);
    if (data == NULL) {
        return NULL;
    }
    uint8_t *p = data;
    uint32_t magic = CKPT_MAGIC, version = 2;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &version, 4);
    p += 8;
    p = put64(p, index);
    p = put64(p, alerts_len);
    p = put64(p, results_len);
    p = put64(p, late_len);
    p = put64(p, sig_len);
    p = put64(p, sig_seq);
    p = put64(p, alerts);
    p = put64(p, s->st.results);
    p = put64(p, s->st.windows);
    p = put64(p, s->st.suppressed);
    p = put64(p, atomic_load(&s->late_count));
    p = put64(p, s->st.integrity_alerts);
    uint32_t k = nsnap;
    memcpy(p, &k, 4);
    p += 4;
    for (unsigned i = 0; i < nsnap; i++) {
        p = put64(p, snap_len[i]);
        memcpy(p, snaps[i], snap_len[i]);
        p += snap_len[i];
    }
    if (tail_len > 0) {
        memcpy(p, tail, tail_len);
    }
    *len = total;
    return data;
}

cf_err cf__ckpt_parse(resume_state *r, size_t len, char *errstr, size_t errstr_size)
{
    const uint8_t *p = r->blob, *end = p + len;
    uint32_t magic, version;
    if (len < CKPT_HEADER) {
        goto bad;
    }
    memcpy(&magic, p, 4);
    memcpy(&version, p + 4, 4);
    if (magic != CKPT_MAGIC || version != 2) {
        goto bad;
    }
    uint64_t index;
    p = get64(p + 8, &index);
    if (r->blob_index_known && index != r->index) {
        goto bad;
    }
    r->index = index;
    p = get64(p, &r->alerts_len);
    p = get64(p, &r->results_len);
    p = get64(p, &r->late_len);
    p = get64(p, &r->sig_len);
    p = get64(p, &r->sig_seq);
    p = get64(p, &r->alerts);
    p = get64(p, &r->results);
    p = get64(p, &r->windows);
    p = get64(p, &r->suppressed);
    p = get64(p, &r->late);
    p = get64(p, &r->integrity_alerts);
    memcpy(&r->k, p, 4);
    p += 4;
    if (r->k > CF_KEY_PARTIES_MAX) {
        goto bad;
    }
    for (uint32_t i = 0; i < r->k; i++) {
        uint64_t n;
        if ((size_t)(end - p) < 8) {
            goto bad;
        }
        p = get64(p, &n);
        if ((uint64_t)(end - p) < n) {
            goto bad;
        }
        r->snaps[i] = p;
        r->snap_len[i] = (size_t)n;
        p += n;
    }
    r->tail = p;
    r->tail_len = (size_t)(end - p);
    return CF_OK;
bad:
    return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "the last checkpoint is malformed");
}
