/*
 * Reading an audit log: the record iterator used for replay (cf_audit_reader), the leaf
 * loader used for proofs (cf_audit_load_leaves).
 *
 * Readers never modify the log. They map one segment at a time, check each record with the
 * shared parser before using it, and report the first damaged record by segment, offset and
 * index. An incomplete last record of the last segment ends the iteration instead: it is
 * being written (readers may run beside the writer) or was torn by a crash (then recovery
 * cuts it and verify reports it). Decrypted events live in buffers owned by the reader and reused
 * for every batch; they are borrowed by the caller until the next call. One thread per reader.
 */
#include <sodium.h>

#include "audit_int.h"

struct cf_audit_reader {
    char *dir;
    cf__seglist sl;
    size_t seg;
    bool mapped;
    cf__segmap m;
    size_t off;
    const uint8_t *key; /* borrowed from the caller's cf_key */
    uint8_t key_id[CF_KEY_ID_LEN];
    uint64_t from;
    bool started;
    uint64_t next_index; /* expected index of the next batch */
    bool has_log_id;
    bool has_header;
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN]; /* of the first record: every other must match */
    cf_event *ev;
    size_t ev_cap;
    cf_audit_bytes *vd;
    size_t vd_cap;
    uint8_t *salt; /* CF_AUDIT_SALT_LEN per event of the current batch */
    size_t salt_cap;
    uint8_t *pt;
    size_t pt_cap;
    cf_audit_dead *dd; /* the current dead-letter record's entries */
    size_t dd_cap;
    char *dtext; /* their reasons and sources, NUL-terminated */
    size_t dtext_cap;
};

void cf_audit_reader_destroy(cf_audit_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->mapped) {
        cf__segmap_close(&r->m);
    }
    cf__seglist_free(&r->sl);
    if (r->pt != NULL) {
        sodium_memzero(r->pt, r->pt_cap);
    }
    if (r->ev != NULL) {
        sodium_memzero(r->ev, r->ev_cap * sizeof(*r->ev));
    }
    cf_free(r->pt);
    cf_free(r->ev);
    cf_free(r->vd);
    cf_free(r->salt);
    cf_free(r->dd);
    cf_free(r->dtext);
    cf_free(r->dir);
    cf_free(r);
}

cf_err cf_audit_reader_open(cf_audit_reader **out, const char *dir, const cf_key *data_key,
                            uint64_t from_index, char *errstr, size_t errstr_size)
{
    if (data_key != NULL && data_key->len != CF__AUDIT_KEY_LEN) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "audit: data key has %zu bytes",
                          data_key->len);
    }
    cf_audit_reader *r = cf_calloc(1, sizeof(*r));
    if (r == NULL) {
        return CF_E_NOMEM;
    }
    cf_err err = CF_OK;
    r->dir = cf_strdup(dir);
    if (r->dir == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    err = cf__audit_list_segments(dir, &r->sl, errstr, errstr_size);
    if (err != CF_OK) {
        goto fail;
    }
    err =
        cf__audit_peek(dir, &r->sl, r->log_id, &r->has_log_id, &r->has_header, errstr, errstr_size);
    if (err != CF_OK) {
        goto fail;
    }
    r->key = data_key != NULL ? data_key->bytes : NULL;
    if (data_key != NULL) {
        memcpy(r->key_id, data_key->id, CF_KEY_ID_LEN);
    }
    r->from = from_index;
    r->started = from_index == 0;
    /* Skip whole segments that end before from_index (the next one starts at or before it). */
    while (r->seg + 1 < r->sl.n && r->sl.first[r->seg + 1] <= from_index) {
        r->seg++;
    }
    r->next_index = r->sl.n > 0 ? r->sl.first[r->seg] : 0;
    *out = r;
    return CF_OK;
fail:
    cf_audit_reader_destroy(r);
    return err;
}

static cf_err grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return CF_OK;
    }
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need) {
        ncap *= 2;
    }
    void *np = cf_realloc(*p, ncap * elem);
    if (np == NULL) {
        return CF_E_NOMEM;
    }
    *p = np;
    *cap = ncap;
    return CF_OK;
}

static cf_err bad(cf_audit_reader *r, uint64_t index, const char *why, char *errstr,
                  size_t errstr_size)
{
    return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                      "audit log %s: segment %s offset %zu index %llu: %s", r->dir,
                      r->sl.name[r->seg], r->off, (unsigned long long)index, why);
}

/* Decrypts and decodes a batch into r->ev; fills r->vd. */
static cf_err load_batch(cf_audit_reader *r, const cf__rec *rec, char *errstr, size_t errstr_size)
{
    uint32_t n = rec->h.count;
    cf_err err = grow((void **)&r->vd, &r->vd_cap, n, sizeof(*r->vd));
    if (err != CF_OK) {
        return err;
    }
    const uint8_t *cur = rec->verdicts;
    for (uint32_t i = 0; i < n; i++) {
        cf__verdict_next(&cur, &r->vd[i]);
    }
    if (r->key == NULL) {
        return CF_OK;
    }
    err = grow((void **)&r->ev, &r->ev_cap, n, sizeof(*r->ev));
    if (err == CF_OK) {
        err = grow((void **)&r->salt, &r->salt_cap, (size_t)n * CF_AUDIT_SALT_LEN, 1);
    }
    if (err == CF_OK) {
        err = grow((void **)&r->pt, &r->pt_cap, rec->ct_len, 1);
    }
    if (err != CF_OK) {
        return err;
    }
    size_t pt_len = 0;
    if (cf__audit_batch_open(rec, r->key, r->pt, &pt_len) != CF_OK) {
        char why[160];
        return bad(r, rec->h.index,
                   cf__audit_open_failure("events", rec->key_id, r->key_id, why, sizeof(why)),
                   errstr, errstr_size);
    }
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t e = pt_len - off > CF_AUDIT_SALT_LEN
                       ? cf__audit_event_decode(r->pt + off + CF_AUDIT_SALT_LEN,
                                                pt_len - off - CF_AUDIT_SALT_LEN, &r->ev[i])
                       : 0;
        if (e == 0) {
            return bad(r, rec->h.index + i, "malformed event encoding", errstr, errstr_size);
        }
        memcpy(r->salt + (size_t)i * CF_AUDIT_SALT_LEN, r->pt + off, CF_AUDIT_SALT_LEN);
        off += CF_AUDIT_SALT_LEN + e;
    }
    if (off != pt_len) {
        return bad(r, rec->h.index, "trailing bytes after the batch's events", errstr, errstr_size);
    }
    return CF_OK;
}

/* Fills r->dd from a dead-letter record: position and reason always, the raw record
 * decrypted when the reader has the data key. */
static cf_err load_dead(cf_audit_reader *r, const cf__rec *rec, char *errstr, size_t errstr_size)
{
    uint32_t n = rec->h.count;
    cf_err err = grow((void **)&r->dd, &r->dd_cap, n, sizeof(*r->dd));
    if (err == CF_OK) {
        err = grow((void **)&r->dtext, &r->dtext_cap, rec->info_len + 2 * (size_t)n, 1);
    }
    if (err == CF_OK && r->key != NULL) {
        err = grow((void **)&r->pt, &r->pt_cap, rec->ct_len, 1);
    }
    if (err != CF_OK) {
        return err;
    }
    size_t pt_len = 0;
    if (r->key != NULL && cf__audit_dead_open(rec, r->key, r->pt, &pt_len) != CF_OK) {
        char why[160];
        return bad(r, rec->h.index,
                   cf__audit_open_failure("dead letters", rec->key_id, r->key_id, why, sizeof(why)),
                   errstr, errstr_size);
    }
    const uint8_t *cur = rec->info, *end = rec->info + rec->info_len;
    char *t = r->dtext;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        cf__dead_info d;
        if (!cf__dead_info_next(&cur, end, &d)) { /* the parser checked every entry */
            return bad(r, rec->h.index + i, "malformed dead-letter entry", errstr, errstr_size);
        }
        cf_audit_dead *o = &r->dd[i];
        memset(o, 0, sizeof(*o));
        o->line = d.line;
        o->offset = d.offset;
        o->raw_truncated = d.truncated;
        memcpy(t, d.reason, d.reason_len);
        t[d.reason_len] = '\0';
        o->reason = t;
        t += d.reason_len + 1;
        memcpy(t, d.source, d.source_len);
        t[d.source_len] = '\0';
        o->source = t;
        t += d.source_len + 1;
        if (r->key != NULL) {
            const uint8_t *raw = NULL;
            size_t rl = 0;
            size_t used = cf__dead_pt_next(r->pt + off, pt_len - off, &raw, &rl);
            if (used == 0) {
                return bad(r, rec->h.index + i, "malformed dead-letter encoding", errstr,
                           errstr_size);
            }
            o->raw = raw;
            o->raw_len = rl;
            off += used;
        }
    }
    if (r->key != NULL && off != pt_len) {
        return bad(r, rec->h.index, "trailing bytes after the dead letters", errstr, errstr_size);
    }
    return CF_OK;
}

cf_err cf_audit_reader_next(cf_audit_reader *r, cf_audit_entry *e, char *errstr, size_t errstr_size)
{
    for (;;) {
        if (r->seg >= r->sl.n) {
            return CF_E_EOF;
        }
        if (!r->mapped) {
            cf_err err = cf__segmap_open(r->dir, r->sl.name[r->seg], &r->m, errstr, errstr_size);
            if (err != CF_OK) {
                return err;
            }
            r->mapped = true;
            r->off = 0;
        }
        cf__rec rec;
        cf__rec_status st = cf__audit_rec_parse(r->m.data, r->m.len, r->off, &rec);
        if (st == CF__REC_END) {
            cf__segmap_close(&r->m);
            r->mapped = false;
            r->seg++;
            continue;
        }
        if (st != CF__REC_OK && r->seg + 1 == r->sl.n &&
            (st == CF__REC_SHORT_HDR || st == CF__REC_SHORT_PAYLOAD ||
             cf__audit_all_zero(r->m.data, r->m.len, r->off))) {
            /* An incomplete last record: a writer is appending it right now, or crashed
             * while doing so (recovery cuts it). Either way the log ends here for now. */
            cf__segmap_close(&r->m);
            r->mapped = false;
            r->seg = r->sl.n;
            return CF_E_EOF;
        }
        if (st != CF__REC_OK) {
            return bad(r, r->next_index, cf__rec_status_text(st), errstr, errstr_size);
        }
        if (r->has_log_id && memcmp(rec.log_id, r->log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
            return bad(r, rec.h.index, "a record of another log (different log id)", errstr,
                       errstr_size);
        }
        memcpy(r->log_id, rec.log_id, CF_AUDIT_LOG_ID_LEN);
        r->has_log_id = true;
        size_t rec_off = r->off;
        size_t next_off = r->off + CF__AUDIT_HDR_LEN + rec.h.payload_len;
        memset(e, 0, sizeof(*e));
        e->type = (cf_audit_rec_type)rec.h.type;
        e->segment = r->sl.name[r->seg];
        e->offset = rec_off;
        e->index = rec.h.index;
        memcpy(e->log_id, rec.log_id, CF_AUDIT_LOG_ID_LEN);
        if (rec.h.type == CF_AUDIT_REC_HEADER) {
            if (r->seg != 0 || rec_off != 0) {
                return bad(r, rec.h.index, "a log header record after the start of the log", errstr,
                           errstr_size);
            }
            r->off = next_off; /* consumed: its id is cf_audit_reader_log_id */
            continue;
        }
        if (rec.h.type == CF_AUDIT_REC_BATCH) {
            if (rec.h.index != r->next_index) {
                return bad(r, rec.h.index, "batch index is not contiguous with the previous one",
                           errstr, errstr_size);
            }
            r->next_index = rec.h.index + rec.h.count;
            if (!r->started && rec.h.index + rec.h.count <= r->from) {
                r->off = next_off;
                continue;
            }
            r->started = true;
            cf_err err = load_batch(r, &rec, errstr, errstr_size);
            if (err != CF_OK) {
                return err;
            }
            uint32_t skip = r->from > rec.h.index ? (uint32_t)(r->from - rec.h.index) : 0;
            e->index = rec.h.index + skip;
            e->count = rec.h.count - skip;
            e->events = r->key != NULL ? r->ev + skip : NULL;
            e->verdicts = r->vd + skip;
            e->leaf_hashes = rec.leaves + (size_t)skip * CF_AUDIT_HASH_LEN;
            e->commits = rec.commits + (size_t)skip * CF_AUDIT_HASH_LEN;
            e->salts = r->key != NULL ? r->salt + (size_t)skip * CF_AUDIT_SALT_LEN : NULL;
            e->meta = rec.meta;
            e->meta_len = rec.meta_len;
        } else if (rec.h.type == CF_AUDIT_REC_DEAD) {
            if (rec.h.index != r->next_index) {
                return bad(r, rec.h.index,
                           "dead-letter index is not contiguous with the previous record", errstr,
                           errstr_size);
            }
            r->next_index = rec.h.index + rec.h.count;
            if (!r->started && rec.h.index + rec.h.count <= r->from) {
                r->off = next_off;
                continue;
            }
            r->started = true;
            cf_err err = load_dead(r, &rec, errstr, errstr_size);
            if (err != CF_OK) {
                return err;
            }
            uint32_t skip = r->from > rec.h.index ? (uint32_t)(r->from - rec.h.index) : 0;
            e->index = rec.h.index + skip;
            e->count = rec.h.count - skip;
            e->dead = r->dd + skip;
            e->leaf_hashes = rec.leaves + (size_t)skip * CF_AUDIT_HASH_LEN;
            e->commits = rec.commits + (size_t)skip * CF_AUDIT_HASH_LEN;
        } else if (!r->started) {
            r->off = next_off;
            continue;
        } else if (rec.h.type == CF_AUDIT_REC_STH) {
            bool dom;
            cf__audit_sth_parse(rec.payload, &e->sth, &dom);
            if (!dom) {
                return bad(r, rec.h.index, "tree head with an unknown message format", errstr,
                           errstr_size);
            }
        } else if (r->key != NULL) {
            cf_err err = grow((void **)&r->pt, &r->pt_cap, rec.state_ct_len, 1);
            if (err != CF_OK) {
                return err;
            }
            size_t len = 0;
            if (cf__audit_state_open(&rec, r->key, r->pt, &len) != CF_OK) {
                char why[160];
                return bad(
                    r, rec.h.index,
                    cf__audit_open_failure("checkpoint", rec.key_id, r->key_id, why, sizeof(why)),
                    errstr, errstr_size);
            }
            e->state = r->pt;
            e->state_len = len;
        }
        r->off = next_off;
        return CF_OK;
    }
}

bool cf_audit_reader_log_id(const cf_audit_reader *r, uint8_t out[CF_AUDIT_LOG_ID_LEN])
{
    if (!r->has_log_id) {
        return false;
    }
    memcpy(out, r->log_id, CF_AUDIT_LOG_ID_LEN);
    return true;
}

bool cf_audit_reader_has_header(const cf_audit_reader *r)
{
    return r->has_header;
}

cf_err cf_audit_load_leaves(const char *dir, uint8_t **leaves_out, uint64_t *n_out,
                            cf_audit_sth **sths_out, size_t *n_sths_out, char *errstr,
                            size_t errstr_size)
{
    cf_audit_reader *r = NULL;
    uint8_t *leaves = NULL;
    size_t cap = 0;
    uint64_t n = 0;
    cf_audit_sth *sths = NULL;
    size_t scap = 0, ns = 0;
    cf_err err = cf_audit_reader_open(&r, dir, NULL, 0, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    cf_audit_entry e;
    while ((err = cf_audit_reader_next(r, &e, errstr, errstr_size)) == CF_OK) {
        if (e.type == CF_AUDIT_REC_BATCH || e.type == CF_AUDIT_REC_DEAD) {
            err = grow((void **)&leaves, &cap, (size_t)(n + e.count) * CF_AUDIT_HASH_LEN, 1);
            if (err != CF_OK) {
                goto done;
            }
            memcpy(leaves + (size_t)n * CF_AUDIT_HASH_LEN, e.leaf_hashes,
                   (size_t)e.count * CF_AUDIT_HASH_LEN);
            n += e.count;
        } else if (e.type == CF_AUDIT_REC_STH && sths_out != NULL) {
            err = grow((void **)&sths, &scap, ns + 1, sizeof(*sths));
            if (err != CF_OK) {
                goto done;
            }
            sths[ns++] = e.sth;
        }
    }
    if (err != CF_E_EOF) {
        goto done;
    }
    err = CF_OK;
    *leaves_out = leaves;
    *n_out = n;
    leaves = NULL;
    if (sths_out != NULL) {
        *sths_out = sths;
        *n_sths_out = ns;
        sths = NULL;
    }
done:
    cf_free(leaves);
    cf_free(sths);
    cf_audit_reader_destroy(r);
    return err;
}
