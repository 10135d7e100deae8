/*
 * Offline verification of an audit log directory (read only).
 *
 * One sequential pass over every segment: each record is CRC-checked by the shared parser;
 * batch indexes must be contiguous; with the data key every batch is decrypted (the AEAD tag
 * binds the events to the record header) and every event re-hashed with its verdict and
 * compared with the stored leaf hash; the stored leaf hashes feed an incremental frontier,
 * and every tree head must name exactly the current size, carry the recomputed root and a
 * valid Ed25519 signature, and never shrink. Because every head is checked against the root
 * of the same append-only leaf sequence, consecutive heads are consistent by construction
 * (no consistency proof is needed between them).
 *
 * Duplicates: a bounded open-addressing set of event ids (with the key) or of leaf-hash
 * prefixes (without). Memory is 16 bytes per entry at most, 1 << 24 entries by default;
 * past the bound the report says the check stopped.
 *
 * The report records the first bad record (segment, offset, index, reason) and the pass
 * continues where the damaged record's length can still be trusted, so the counts describe
 * the whole log. Cost per leaf: one node hash, plus with the key a decryption and a leaf hash.
 */
#include <stdio.h>

#include <sodium.h>

#include "audit_int.h"

typedef struct {
    uint64_t *slot;
    size_t cap; /* power of two */
    size_t used;
    size_t max;
    bool has_zero;
    bool bounded;
} idset;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static bool set_insert_raw(uint64_t *slot, size_t cap, uint64_t v)
{
    size_t i = (size_t)mix(v) & (cap - 1);
    while (slot[i] != 0) {
        if (slot[i] == v) {
            return false;
        }
        i = (i + 1) & (cap - 1);
    }
    slot[i] = v;
    return true;
}

/* Makes room for @p n more entries at load <= 1/2; false when the bound (or memory) says no,
 * after which the set stops taking entries. */
static bool set_reserve(idset *s, size_t n)
{
    if (s->bounded) {
        return false;
    }
    if ((s->used + n) * 2 <= s->cap) {
        return true;
    }
    if (s->used + n > s->max) {
        s->bounded = true;
        return false;
    }
    size_t ncap = s->cap ? s->cap : 65536;
    while ((s->used + n) * 2 > ncap) {
        ncap *= 2;
    }
    uint64_t *ns = cf_calloc(ncap, sizeof(*ns));
    if (ns == NULL) {
        s->bounded = true;
        return false;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slot[i] != 0) {
            set_insert_raw(ns, ncap, s->slot[i]);
        }
    }
    cf_free(s->slot);
    s->slot = ns;
    s->cap = ncap;
    return true;
}

/* Returns 1 when new, 0 when a duplicate (room was reserved). */
static int set_insert(idset *s, uint64_t v)
{
    if (v == 0) {
        if (s->has_zero) {
            return 0;
        }
        s->has_zero = true;
        return 1;
    }
    if (!set_insert_raw(s->slot, s->cap, v)) {
        return 0;
    }
    s->used++;
    return 1;
}

typedef struct {
    cf_audit_report *rep;
    const char *seg;
    cf__sha sha;
    cf__frontier f;
    bool tree_ok;        /* the frontier still mirrors the log (no missing batch) */
    uint64_t expected;   /* next batch index */
    uint64_t max_index;  /* highest event index + 1 named by a batch or head */
    uint64_t prev_sth;   /* size of the previous head */
    int64_t prev_sth_us; /* time of the previous head */
    uint32_t prev_epoch; /* key epoch of the previous head */
    bool has_prev_epoch;
    bool has_log_id;
    uint64_t bad_events; /* events in damaged records, failing re-hash, or duplicated */
    const char *last_batch_seg;
    size_t last_batch_off;
    uint64_t *keys; /* a batch's duplicate-check keys, CF_AUDIT_BATCH_MAX */
    idset ids;
    uint8_t *pt;
    size_t pt_cap;
} vstate;

/* Records the first bad record; @p alert says whether it is evidence of tampering or damage
 * (a CRC, a signature, a root, a gap) rather than a processing fault (a duplicate event id,
 * leaves not yet signed after a crash). */
static void flag_as(vstate *v, size_t off, uint64_t index, const char *why, bool alert)
{
    cf_audit_report *rep = v->rep;
    rep->alert |= alert;
    if (!rep->ok) {
        return;
    }
    rep->ok = false;
    snprintf(rep->bad_segment, sizeof(rep->bad_segment), "%s", v->seg);
    rep->bad_offset = off;
    rep->bad_index = index;
    snprintf(rep->bad_reason, sizeof(rep->bad_reason), "%s", why);
}

static void flag(vstate *v, size_t off, uint64_t index, const char *why)
{
    flag_as(v, off, index, why, true);
}

/* The data key a record names (by id) among the rotation keys, else the main one. */
static const cf_key *data_key_for(const cf_audit_verify_opts *o, const uint8_t *kid)
{
    for (size_t i = 0; i < o->n_more_data_keys; i++) {
        const cf_key *k = o->more_data_keys[i];
        if (k != NULL && k->len == CF__AUDIT_KEY_LEN && memcmp(k->id, kid, CF_KEY_ID_LEN) == 0) {
            return k;
        }
    }
    return o->data_key;
}

/* The signing key a record names by id, with its epoch; else the main key. */
static const uint8_t *public_key_epoch_for(const cf_audit_verify_opts *o, const uint8_t *kid,
                                           uint32_t *epoch)
{
    for (size_t i = 0; i < o->n_more_public_keys; i++) {
        if (memcmp(o->more_public_keys[i].id, kid, CF_KEY_ID_LEN) == 0) {
            *epoch = o->more_public_keys[i].epoch;
            return o->more_public_keys[i].key;
        }
    }
    *epoch = o->public_key_epoch;
    return o->public_key;
}

static const uint8_t *public_key_for(const cf_audit_verify_opts *o, const uint8_t *kid)
{
    uint32_t epoch;
    return public_key_epoch_for(o, kid, &epoch);
}

/* When the main key's id is known and a record names a signing key that is none of the keys
 * given, says so naming both ids (a wrong key directory, not tampering); else NULL. */
static const char *wrong_signing_key(const cf_audit_verify_opts *o, const char *what,
                                     const uint8_t *kid, char *buf, size_t size)
{
    if (o->public_key_id == NULL || memcmp(kid, o->public_key_id, CF_KEY_ID_LEN) == 0) {
        return NULL;
    }
    for (size_t i = 0; i < o->n_more_public_keys; i++) {
        if (memcmp(o->more_public_keys[i].id, kid, CF_KEY_ID_LEN) == 0) {
            return NULL;
        }
    }
    char a[2 * CF_KEY_ID_LEN + 1], b[2 * CF_KEY_ID_LEN + 1];
    sodium_bin2hex(a, sizeof(a), kid, CF_KEY_ID_LEN);
    sodium_bin2hex(b, sizeof(b), o->public_key_id, CF_KEY_ID_LEN);
    snprintf(buf, size, "%s: signed under signing key %s, not %s (wrong signing key)", what, a, b);
    return buf;
}

/* Every record names its log; the first one fixes the id the others must carry. */
static void check_log_id(vstate *v, const cf__rec *r, size_t off)
{
    cf_audit_report *rep = v->rep;
    if (!v->has_log_id) {
        memcpy(rep->log_id, r->log_id, CF_AUDIT_LOG_ID_LEN);
        rep->has_log_id = v->has_log_id = true;
    } else if (memcmp(rep->log_id, r->log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
        flag(v, off, r->h.index, "a record of another log (different log id)");
    }
}

/* A record holding the leaves [index, index + count): they must follow the leaves before. */
static void check_leaf_run(vstate *v, const cf__rec *r, size_t off, const char *gap_msg,
                           const char *dup_msg)
{
    cf_audit_report *rep = v->rep;
    uint64_t idx = r->h.index;
    uint32_t n = r->h.count;
    v->last_batch_seg = v->seg;
    v->last_batch_off = off;
    if (idx != v->expected) {
        if (idx > v->expected) {
            rep->gaps++;
            flag(v, off, idx, gap_msg);
        } else {
            rep->duplicates++;
            flag(v, off, idx, dup_msg);
        }
        v->tree_ok = false;
    }
    if (idx + n > v->max_index) {
        v->max_index = idx + n;
    }
    v->expected = idx + n;
    rep->leaves += n;
}

/* Room for a record's plaintext (the reused decryption buffer); false (flagged) when out of
 * memory. */
static bool grow_pt(vstate *v, const cf__rec *r, size_t off)
{
    if (v->pt_cap >= r->ct_len) {
        return true;
    }
    uint8_t *np = cf_realloc(v->pt, r->ct_len);
    if (np == NULL) {
        flag(v, off, r->h.index, "out of memory");
        return false;
    }
    v->pt = np;
    v->pt_cap = r->ct_len;
    return true;
}

typedef cf_err (*record_opener)(const cf__rec *r, const uint8_t *key, uint8_t *pt, size_t *pt_len);

/* Decrypts a batch or dead-letter record with the data key that sealed it: *dec is the
 * plaintext, or NULL (flagged, its leaves counted bad) when it does not open. False only when
 * out of memory. */
static bool open_record(vstate *v, const cf__rec *r, size_t off, const cf_audit_verify_opts *o,
                        record_opener open, const char *what, const uint8_t **dec, size_t *dec_len)
{
    if (!grow_pt(v, r, off)) {
        return false;
    }
    const cf_key *dk = data_key_for(o, r->key_id);
    if (open(r, dk->bytes, v->pt, dec_len) != CF_OK) {
        char why[160];
        flag(v, off, r->h.index, cf__audit_open_failure(what, r->key_id, dk->id, why, sizeof(why)));
        v->bad_events += r->h.count;
        return true;
    }
    *dec = v->pt;
    return true;
}

static void check_batch(vstate *v, const cf__rec *r, size_t off, const cf_audit_verify_opts *o)
{
    cf_audit_report *rep = v->rep;
    uint64_t idx = r->h.index;
    uint32_t n = r->h.count;
    check_leaf_run(v, r, off, "index gap: events before this batch are missing",
                   "batch repeats indexes of an earlier batch");
    rep->verdicts += n; /* the parser checked that every event has a verdict entry */

    size_t dec_len = 0;
    const uint8_t *dec = NULL;
    if (o->data_key != NULL &&
        !open_record(v, r, off, o, cf__audit_batch_open, "events", &dec, &dec_len)) {
        return;
    }
    const uint8_t *vcur = r->verdicts;
    size_t eoff = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *leaf = r->leaves + (size_t)i * CF_AUDIT_HASH_LEN;
        const uint8_t *commit = r->commits + (size_t)i * CF_AUDIT_HASH_LEN;
        cf_audit_bytes vd;
        cf__verdict_next(&vcur, &vd);
        uint64_t dup_key;
        memcpy(&dup_key, leaf, sizeof(dup_key));
        /* The verdict is bound to the leaf through its hash, with or without the data key:
         * a changed verdict changes the leaf, hence the signed root. */
        uint8_t h[CF_AUDIT_HASH_LEN];
        cf__audit_leaf_of(&v->sha, commit, vd.data, vd.len, h);
        if (memcmp(h, leaf, CF_AUDIT_HASH_LEN) != 0) {
            flag(v, off, idx + i, "stored leaf hash does not match the commitment and verdict");
            v->bad_events++;
        }
        if (dec != NULL) {
            cf_event ev;
            size_t e = dec_len - eoff > CF_AUDIT_SALT_LEN
                           ? cf__audit_event_decode(dec + eoff + CF_AUDIT_SALT_LEN,
                                                    dec_len - eoff - CF_AUDIT_SALT_LEN, &ev)
                           : 0;
            if (e == 0) {
                flag(v, off, idx + i, "malformed event encoding");
                v->bad_events += n - i;
                dec = NULL;
            } else {
                e += CF_AUDIT_SALT_LEN;
                cf__audit_commit(&v->sha, dec + eoff, e, h);
                if (memcmp(h, commit, CF_AUDIT_HASH_LEN) != 0) {
                    flag(v, off, idx + i, "stored commitment does not match the event");
                    v->bad_events++;
                } else {
                    rep->events++;
                }
                eoff += e;
                dup_key = ev.event_id;
            }
        }
        v->keys[i] = dup_key;
        if (v->tree_ok) {
            cf__frontier_append(&v->f, &v->sha, leaf);
        }
    }
    if (dec != NULL && eoff != dec_len) {
        flag(v, off, idx, "trailing bytes after the batch's events");
    }
    /* Duplicates, a batch at a time: the set is far larger than the caches, so the slots are
     * prefetched a few keys ahead (this halves the cost of the check). */
    if (!set_reserve(&v->ids, n)) {
        return;
    }
    size_t mask = v->ids.cap - 1;
    enum { AHEAD = 8 };
    for (uint32_t i = 0; i < n && i < AHEAD; i++) {
        __builtin_prefetch(&v->ids.slot[(size_t)mix(v->keys[i]) & mask]);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (i + AHEAD < n) {
            __builtin_prefetch(&v->ids.slot[(size_t)mix(v->keys[i + AHEAD]) & mask]);
        }
        if (set_insert(&v->ids, v->keys[i]) == 0) {
            rep->duplicates++;
            v->bad_events++;
            flag_as(v, off, idx + i,
                    o->data_key != NULL ? "duplicate event_id"
                                        : "duplicate leaf (same event twice)",
                    false);
        }
    }
}

/* A dead-letter record: a contiguous run of leaves like a batch; every leaf is checked
 * against its commitment and clear entry (position, reason), and with the data key the raw
 * records are decrypted and their commitments recomputed. No duplicate check: the same bad
 * line may well come twice. */
static void check_dead(vstate *v, const cf__rec *r, size_t off, const cf_audit_verify_opts *o)
{
    cf_audit_report *rep = v->rep;
    uint64_t idx = r->h.index;
    uint32_t n = r->h.count;
    check_leaf_run(v, r, off, "index gap: leaves before this dead-letter record are missing",
                   "dead-letter record repeats indexes of an earlier record");
    size_t dec_len = 0;
    const uint8_t *dec = NULL;
    if (o->data_key != NULL &&
        !open_record(v, r, off, o, cf__audit_dead_open, "dead letters", &dec, &dec_len)) {
        return;
    }
    const uint8_t *cur = r->info, *end = r->info + r->info_len;
    size_t eoff = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *leaf = r->leaves + (size_t)i * CF_AUDIT_HASH_LEN;
        const uint8_t *commit = r->commits + (size_t)i * CF_AUDIT_HASH_LEN;
        cf__dead_info d;
        bool good = cf__dead_info_next(&cur, end, &d); /* the parser checked the layout */
        uint8_t h[CF_AUDIT_HASH_LEN];
        if (good) {
            cf__audit_dead_leaf(&v->sha, commit, d.bytes, d.len, h);
            good = memcmp(h, leaf, CF_AUDIT_HASH_LEN) == 0;
        }
        if (!good) {
            flag(v, off, idx + i,
                 "stored dead-letter leaf does not match its commitment, position and reason");
            v->bad_events++;
        }
        if (dec != NULL) {
            const uint8_t *raw;
            size_t rl;
            size_t used = cf__dead_pt_next(dec + eoff, dec_len - eoff, &raw, &rl);
            if (used == 0) {
                flag(v, off, idx + i, "malformed dead-letter encoding");
                v->bad_events += n - i;
                dec = NULL;
            } else {
                cf__audit_dead_commit(&v->sha, dec + eoff, used, h);
                if (memcmp(h, commit, CF_AUDIT_HASH_LEN) != 0) {
                    flag(v, off, idx + i, "stored commitment does not match the dead letter");
                    v->bad_events++;
                    good = false;
                }
                eoff += used;
            }
        }
        if (good && (o->data_key == NULL || dec != NULL)) {
            rep->dead_letters++;
        }
        if (v->tree_ok) {
            cf__frontier_append(&v->f, &v->sha, leaf);
        }
    }
    if (dec != NULL && eoff != dec_len) {
        flag(v, off, idx, "trailing bytes after the dead letters");
    }
}

static void check_sth(vstate *v, const cf__rec *r, size_t off, const cf_audit_verify_opts *o)
{
    cf_audit_report *rep = v->rep;
    cf_audit_sth sth;
    bool dom;
    cf__audit_sth_parse(r->payload, &sth, &dom);
    const char *why = NULL;
    uint8_t root[CF_AUDIT_HASH_LEN];
    char wk[160];
    uint32_t epoch = 0;
    const uint8_t *pk = public_key_epoch_for(o, sth.key_id, &epoch);
    if (!dom) {
        why = "tree head with an unknown message format";
    } else if (sth.tree_size != r->h.index) {
        why = "tree head size differs from its record header";
    } else if (sth.tree_size < v->prev_sth) {
        why = "tree head smaller than the previous one (log not append-only)";
    } else if (sth.timestamp_us < v->prev_sth_us) {
        why = "tree head older than the previous one (timestamps must not go back)";
    } else if (pk != NULL &&
               (why = wrong_signing_key(o, "tree head", sth.key_id, wk, sizeof(wk))) != NULL) {
        /* named by wrong_signing_key */
    } else if (pk != NULL && cf_audit_sth_verify(&sth, pk) != CF_OK) {
        why = "tree head signature does not verify";
    } else if (pk != NULL && v->has_prev_epoch && epoch < v->prev_epoch) {
        why = "tree head signed under an older key epoch than the previous head (key epochs "
              "must not go back)";
    } else if (!v->tree_ok) {
        why = "tree head cannot be checked: leaves are missing before it";
    } else if (sth.tree_size != v->f.n) {
        why = "tree head size does not match the leaves before it";
    } else {
        cf__frontier_root(&v->f, &v->sha, root);
        if (memcmp(root, sth.root, CF_AUDIT_HASH_LEN) != 0) {
            why = "tree head root does not match the recomputed root";
        }
    }
    if (sth.tree_size > v->max_index) {
        v->max_index = sth.tree_size;
    }
    if (why != NULL) {
        rep->sth_invalid++;
        flag(v, off, sth.tree_size, why);
        return;
    }
    rep->sth_valid++;
    v->prev_sth = sth.tree_size;
    v->prev_sth_us = sth.timestamp_us;
    if (pk != NULL) {
        v->prev_epoch = epoch;
        v->has_prev_epoch = true;
    }
    if (sth.tree_size > rep->covered) {
        rep->covered = sth.tree_size;
    }
}

/* The log-header record: only as the very first record, signed by the log's key. */
static void check_header(vstate *v, const cf__rec *r, size_t off, bool first,
                         const cf_audit_verify_opts *o)
{
    if (!first) {
        flag(v, off, r->h.index, "a log header record after the start of the log");
        return;
    }
    v->rep->has_header = true;
    v->rep->created_us = r->created_us;
    const uint8_t *pk = public_key_for(o, r->sign_key_id);
    if (pk == NULL) {
        return;
    }
    char wk[160];
    if (wrong_signing_key(o, "log header", r->sign_key_id, wk, sizeof(wk)) != NULL) {
        flag(v, off, r->h.index, wk);
        return;
    }
    uint8_t msg[CF__AUDIT_LOGHDR_MSG_LEN];
    cf__audit_loghdr_message(r, msg);
    if (crypto_sign_verify_detached(r->hdr_sig, msg, sizeof(msg), pk) != 0) {
        flag(v, off, r->h.index, "log header signature does not verify");
    }
}

static void check_checkpoint(vstate *v, const cf__rec *r, size_t off, const cf_audit_verify_opts *o)
{
    v->rep->checkpoints++;
    if (r->h.index > v->expected) {
        flag(v, off, r->h.index, "checkpoint covers events the log does not hold");
    }
    if (o->public_key != NULL && v->tree_ok) {
        /* Chained to the leaves before it (logs with a header record), so a checkpoint
         * copied to another place in the log no longer verifies. */
        uint8_t msg[CF__AUDIT_CKPT_MSG_MAX], root[CF_AUDIT_HASH_LEN];
        cf__frontier_root(&v->f, &v->sha, root);
        size_t ml = cf__audit_ckpt_message(r, v->f.n, v->rep->has_header ? root : NULL, msg);
        bool good = crypto_sign_verify_detached(r->ckpt_sig, msg, ml, o->public_key) == 0;
        for (size_t i = 0; !good && i < o->n_more_public_keys; i++) {
            good =
                crypto_sign_verify_detached(r->ckpt_sig, msg, ml, o->more_public_keys[i].key) == 0;
        }
        if (!good) {
            flag(v, off, r->h.index, "checkpoint signature does not verify");
        }
    }
    if (o->data_key == NULL) {
        return;
    }
    if (v->pt_cap < r->state_ct_len) {
        uint8_t *np = cf_realloc(v->pt, r->state_ct_len);
        if (np == NULL) {
            flag(v, off, r->h.index, "out of memory");
            return;
        }
        v->pt = np;
        v->pt_cap = r->state_ct_len;
    }
    size_t len;
    const cf_key *dk = data_key_for(o, r->key_id);
    if (cf__audit_state_open(r, dk->bytes, v->pt, &len) != CF_OK) {
        char why[160];
        flag(v, off, r->h.index,
             cf__audit_open_failure("checkpoint", r->key_id, dk->id, why, sizeof(why)));
    }
}

cf_err cf_audit_verify(const char *dir, const cf_audit_verify_opts *opts, cf_audit_report *rep,
                       char *errstr, size_t errstr_size)
{
    cf_audit_verify_opts o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    memset(rep, 0, sizeof(*rep));
    rep->ok = true;
    if (o.data_key != NULL && o.data_key->len != CF__AUDIT_KEY_LEN) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "audit: data key has %zu bytes",
                          o.data_key->len);
    }
    vstate v;
    memset(&v, 0, sizeof(v));
    v.rep = rep;
    v.tree_ok = true;
    v.ids.max = o.dup_max ? o.dup_max : (UINT64_C(1) << 24);
    v.seg = "";
    cf__seglist sl = {0};
    cf__segmap m = {NULL, 0};
    cf_err err = cf__sha_init(&v.sha);
    if (err != CF_OK) {
        return cf_err_set(err, errstr, errstr_size, "audit: OpenSSL SHA-256 unavailable");
    }
    v.keys = cf_malloc(CF_AUDIT_BATCH_MAX * sizeof(*v.keys));
    if (v.keys == NULL) {
        err = CF_E_NOMEM;
        goto done;
    }
    err = cf__audit_list_segments(dir, &sl, errstr, errstr_size);
    if (err != CF_OK) {
        goto done;
    }
    rep->segments = sl.n;
    {
        uint8_t lid[CF_AUDIT_LOG_ID_LEN];
        bool has = false, header = false;
        err = cf__audit_peek(dir, &sl, lid, &has, &header, errstr, errstr_size);
        if (err != CF_OK) {
            goto done;
        }
    }
    for (size_t s = 0; s < sl.n; s++) {
        v.seg = sl.name[s];
        if (sl.first[s] != v.expected) {
            if (sl.first[s] > v.expected) {
                rep->gaps++;
            }
            flag(&v, 0, v.expected, "segment name does not continue the previous segment");
            v.tree_ok = false;
        }
        err = cf__segmap_open(dir, sl.name[s], &m, errstr, errstr_size);
        if (err != CF_OK) {
            goto done;
        }
        size_t off = 0;
        for (;;) {
            cf__rec r;
            cf__rec_status st = cf__audit_rec_parse(m.data, m.len, off, &r);
            if (st == CF__REC_END) {
                break;
            }
            if (st != CF__REC_OK && s + 1 == sl.n &&
                (st == CF__REC_SHORT_HDR || st == CF__REC_SHORT_PAYLOAD ||
                 cf__audit_all_zero(m.data, m.len, off))) {
                /* A crash while writing, not tampering: the header (CRC-checked) or the file
                 * simply ends early. A flipped byte never looks like this. */
                flag_as(&v, off, v.expected,
                        "torn tail: the last record is incomplete (the writer stopped while "
                        "writing it; opening the log for writing cuts it)",
                        false);
                break;
            }
            if (st != CF__REC_OK) {
                /* With a sound header the record's extent is known: skip it and go on. */
                bool skippable = st == CF__REC_BAD_CRC || st == CF__REC_BAD_LAYOUT;
                uint64_t idx = skippable ? r.h.index : v.expected;
                if (skippable &&
                    (r.h.type == CF_AUDIT_REC_BATCH || r.h.type == CF_AUDIT_REC_DEAD)) {
                    v.tree_ok = false;
                    v.bad_events += r.h.count;
                    if (r.h.index + r.h.count > v.max_index) {
                        v.max_index = r.h.index + r.h.count;
                    }
                    v.expected = r.h.index + r.h.count;
                } else if (skippable && r.h.type == CF_AUDIT_REC_STH) {
                    rep->sth_invalid++;
                }
                flag(&v, off, idx, cf__rec_status_text(st));
                if (!skippable) {
                    break;
                }
                rep->records++;
                off += CF__AUDIT_HDR_LEN + r.h.payload_len;
                continue;
            }
            rep->records++;
            check_log_id(&v, &r, off);
            switch ((cf_audit_rec_type)r.h.type) {
            case CF_AUDIT_REC_BATCH:
                check_batch(&v, &r, off, &o);
                break;
            case CF_AUDIT_REC_DEAD:
                check_dead(&v, &r, off, &o);
                break;
            case CF_AUDIT_REC_STH:
                check_sth(&v, &r, off, &o);
                break;
            case CF_AUDIT_REC_CHECKPOINT:
                check_checkpoint(&v, &r, off, &o);
                break;
            case CF_AUDIT_REC_HEADER:
                check_header(&v, &r, off, s == 0 && off == 0, &o);
                break;
            }
            off += CF__AUDIT_HDR_LEN + r.h.payload_len;
        }
        cf__segmap_close(&m);
    }
    if (v.max_index < v.expected) {
        v.max_index = v.expected;
    }
    if (rep->ok && rep->covered < v.max_index) {
        v.seg = v.last_batch_seg;
        flag_as(&v, v.last_batch_off, rep->covered,
                "the last events are not covered by a signed tree head (reopen the log to sign)",
                false);
    }
    rep->decrypted = o.data_key != NULL;
    rep->dup_check_bounded = v.ids.bounded;
    /* Complete: covered by a valid signed head, and (with the key) decrypted, re-hashed and
     * not a duplicate. */
    uint64_t good = rep->covered > v.bad_events ? rep->covered - v.bad_events : 0;
    rep->completeness = v.max_index == 0 ? 1.0 : (double)good / (double)v.max_index;
    err = rep->ok ? CF_OK : CF_E_CORRUPT;
done:
    cf__segmap_close(&m);
    cf__seglist_free(&sl);
    cf__sha_free(&v.sha);
    if (v.pt != NULL) {
        sodium_memzero(v.pt, v.pt_cap);
    }
    cf_free(v.pt);
    cf_free(v.ids.slot);
    cf_free(v.keys);
    return err;
}
