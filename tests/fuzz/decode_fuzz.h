/*
 * Shared body of the decoder fuzz targets (fuzz_csv.c, fuzz_ndjson.c).
 *
 * Oracles, beyond "no crash, no sanitizer report":
 * - splitting the input whole and in 7-byte pieces through a bounded buffer gives the same
 *   records (boundaries, line numbers, offsets, too_long flags);
 * - every reject has a non-empty reason and a dead-letter line that is valid UTF-8;
 * - every accepted event re-encodes to the canonical format and decodes to the same event.
 */
#ifndef CF_DECODE_FUZZ_H
#define CF_DECODE_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "confide/io.h"

#define LINE_MAX_FUZZ 200 /* small, so over-long records are reached */
#define MAX_RECS 4096

typedef struct {
    uint64_t line, offset;
    size_t len;
    uint32_t hash;
    bool too_long;
} rec_sig;

static uint32_t fnv(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    }
    return h;
}

static void check(bool ok)
{
    if (!ok) {
        __builtin_trap();
    }
}

static bool same_event(const cf_event *a, const cf_event *b)
{
    return a->event_id == b->event_id && a->ts_us == b->ts_us &&
           a->amount_minor == b->amount_minor && strcmp(a->account, b->account) == 0 &&
           strcmp(a->merchant, b->merchant) == 0 && strcmp(a->currency, b->currency) == 0 &&
           strcmp(a->country, b->country) == 0 && a->type == b->type && a->channel == b->channel &&
           a->fraud == b->fraud && a->fraud_scenario == b->fraud_scenario;
}

/* What one fuzz target exercises: how it splits, which decoders it runs, and the canonical
 * format accepted events must round-trip through. */
typedef struct decode_fuzz_spec {
    cf_format split;
    cf_format decoders[2];
    int n_decoders;
    cf_format canon;
    size_t (*encode)(const cf_event *ev, char *buf, size_t size);
} decode_fuzz_spec;

/* Decodes one record with @p d; checks the result's invariants. */
static void decode_check(const decode_fuzz_spec *spec, cf_decoder *d, cf_decoder *canon,
                         const cf_record *rec)
{
    cf_event ev;
    char reason[160] = "";
    cf_decode_result r = cf_decoder_decode(d, rec, &ev, reason, sizeof(reason));
    if (r == CF_DECODE_REJECT) {
        check(reason[0] != '\0');
        char dl[CF_DEADLETTER_RAW_MAX * 6 + 512];
        size_t n = cf_deadletter_format("fuzz", rec, reason, dl, sizeof(dl));
        check(n > 0 && cf_utf8_valid(dl, n) && dl[n - 1] == '\n');
    } else if (r == CF_DECODE_EVENT) {
        char line[2048]; /* ids of 64 control bytes escape to 6 x 64 bytes each */
        size_t n = spec->encode(&ev, line, sizeof(line));
        check(n > 1);
        cf_record back = {.data = line, .len = n - 1, .line = 1, .offset = 0, .too_long = false};
        cf_event ev2;
        check(cf_decoder_decode(canon, &back, &ev2, reason, sizeof(reason)) == CF_DECODE_EVENT);
        check(same_event(&ev, &ev2));
    }
}

/*
 * Splits the input through a buffer of LINE_MAX_FUZZ + 2 bytes fed @p chunk at a time, or
 * with @p chunk 0 straight from the input (as the pipeline does for in-memory input).
 */
static size_t split_sigs(const decode_fuzz_spec *spec, const uint8_t *data, size_t size,
                         size_t chunk, rec_sig *sigs, cf_decoder *const *decs, cf_decoder *canon)
{
    cf_splitter *sp = NULL;
    if (cf_splitter_create(&sp, spec->split, LINE_MAX_FUZZ) != CF_OK) {
        return 0;
    }
    char small[LINE_MAX_FUZZ + 2];
    char *buf = small;
    size_t cap = sizeof(small);
    if (chunk == 0) {
        buf = malloc(size > 0 ? size : 1);
        if (buf == NULL) {
            cf_splitter_destroy(sp);
            return 0;
        }
        cap = size > 0 ? size : 1;
        chunk = cap;
    }
    size_t have = 0, fed = 0, nsig = 0;
    for (;;) {
        size_t n = size - fed;
        if (n > chunk) {
            n = chunk;
        }
        if (n > cap - have) {
            n = cap - have;
        }
        if (n > 0) {
            memcpy(buf + have, data + fed, n);
        }
        have += n;
        fed += n;
        bool eof = fed == size;
        size_t pos = 0;
        for (;;) {
            cf_record rec;
            size_t used = 0;
            cf_err e = cf_splitter_next(sp, buf + pos, have - pos, eof, &rec, &used);
            check(used <= have - pos);
            if (e == CF_OK) {
                check(rec.len > 0 && rec.len <= LINE_MAX_FUZZ);
                check(rec.data >= buf + pos && rec.data + rec.len <= buf + have);
                if (nsig < MAX_RECS) {
                    sigs[nsig] = (rec_sig){rec.line, rec.offset, rec.len, fnv(rec.data, rec.len),
                                           rec.too_long};
                }
                nsig++;
                for (int d = 0; decs != NULL && d < spec->n_decoders; d++) {
                    decode_check(spec, decs[d], canon, &rec);
                }
            }
            pos += used;
            if (e != CF_OK) {
                break;
            }
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (eof) {
            break;
        }
        /* A full buffer must always yield progress. */
        check(have < cap);
    }
    if (buf != small) {
        free(buf);
    }
    cf_splitter_destroy(sp);
    return nsig;
}

static int decode_fuzz_run(const decode_fuzz_spec *spec, const uint8_t *data, size_t size)
{
    static rec_sig a[MAX_RECS], b[MAX_RECS];
    cf_decoder *decs[2] = {NULL, NULL}, *canon = NULL;
    char err[128];
    for (int d = 0; d < spec->n_decoders; d++) {
        if (cf_decoder_create(&decs[d], spec->decoders[d], err, sizeof(err)) != CF_OK) {
            goto done;
        }
    }
    if (cf_decoder_create(&canon, spec->canon, err, sizeof(err)) != CF_OK) {
        goto done;
    }
    if (spec->canon == CF_FMT_CSV) {
        cf_record hdr = {.data = cf_csv_header(), .len = strlen(cf_csv_header()) - 1};
        cf_event ev;
        check(cf_decoder_decode(canon, &hdr, &ev, err, sizeof(err)) == CF_DECODE_SKIP);
    }
    size_t na = split_sigs(spec, data, size, 0, a, decs, canon);
    size_t nb = split_sigs(spec, data, size, 7, b, NULL, NULL);
    check(na == nb);
    for (size_t i = 0; i < na && i < MAX_RECS; i++) {
        check(a[i].line == b[i].line && a[i].offset == b[i].offset && a[i].len == b[i].len &&
              a[i].hash == b[i].hash && a[i].too_long == b[i].too_long);
    }
    nb = split_sigs(spec, data, size, size > 0 ? size : 1, b, NULL, NULL);
    check(na == nb);
done:
    for (int d = 0; d < 2; d++) {
        cf_decoder_destroy(decs[d]);
    }
    cf_decoder_destroy(canon);
    return 0;
}

#endif
