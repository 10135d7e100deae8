/*
 * CSV decoding (RFC 4180), header-driven.
 *
 * Purpose: the first record is the header; it is turned once into a column map (column ->
 * canonical field, or ignored), so each data record costs one pass over its bytes that
 * records where each wanted field starts and ends, then cf__io_build_event. Quoted fields
 * may hold commas, newlines and "" escapes; a quote anywhere else, or text after a closing
 * quote, is "bad quote". A header that is malformed, lacks a required column or repeats
 * one is itself rejected ("bad header: ...") and so is every record after it ("no valid
 * header"): guessing a column layout would misattribute amounts.
 *
 * Bounds: at most CF__IO_COLS_MAX columns; no allocation per record.
 * Threads: one decoder per thread.
 */
#include <string.h>

#include "io_int.h"

void cf__io_strip_bom(const char **p, size_t *n)
{
    if (*n >= 3 && memcmp(*p, "\xEF\xBB\xBF", 3) == 0) {
        *p += 3;
        *n -= 3;
    }
}

const char *cf__io_csv_status_reason(cf__io_csv_status st)
{
    switch (st) {
    case CSV_TOO_MANY:
        return "too many fields";
    case CSV_TOO_FEW:
        return "too few fields";
    case CSV_BAD_QUOTE:
        return "bad quote";
    case CSV_UNTERMINATED:
        return "unterminated quote";
    default:
        return "ok";
    }
}

/* Bytes of v equal to the byte repeated in pat get their high bit set (the lowest exactly). */
static inline uint64_t has_byte(uint64_t v, uint64_t pat)
{
    uint64_t x = v ^ pat;
    return (x - 0x0101010101010101u) & ~x & 0x8080808080808080u;
}

/*
 * Reads one field starting at *pp. On success *pp points at the ',' after it or at end,
 * and *fv describes its content.
 */
static inline cf__io_csv_status csv_field(const char **pp, const char *end, cf__io_fval *fv)
{
    const char *p = *pp;
    if (p < end && *p == '"') {
        const char *start = p + 1;
        const char *q = start;
        bool esc = false;
        for (;;) {
            q = memchr(q, '"', (size_t)(end - q));
            if (q == NULL) {
                return CSV_UNTERMINATED;
            }
            if (q + 1 < end && q[1] == '"') {
                esc = true;
                q += 2;
                continue;
            }
            break;
        }
        fv->p = start;
        fv->len = (uint32_t)(q - start);
        fv->kind = esc ? FV_CSV_ESC : FV_STR;
        p = q + 1;
        if (p < end && *p != ',') {
            return CSV_BAD_QUOTE;
        }
        *pp = p;
        return CSV_OK;
    }
    const char *start = p;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Eight bytes at a time: the lowest flagged byte is the first ',' or '"'. */
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t m = has_byte(w, 0x2C2C2C2C2C2C2C2Cu) | has_byte(w, 0x2222222222222222u);
        if (m != 0) {
            p += __builtin_ctzll(m) >> 3;
            goto stop;
        }
        p += 8;
    }
#endif
    while (p < end && *p != ',' && *p != '"') {
        p++;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
stop:
#endif
    if (p < end && *p == '"') {
        return CSV_BAD_QUOTE;
    }
    fv->p = start;
    fv->len = (uint32_t)(p - start);
    fv->kind = FV_STR;
    *pp = p;
    return CSV_OK;
}

cf__io_csv_status cf__io_csv_columns(const char *p, size_t n, cf__io_fval *cols, uint32_t max,
                                     uint32_t *ncols)
{
    const char *end = p + n;
    uint32_t k = 0;
    for (;;) {
        cf__io_fval fv;
        cf__io_csv_status st = csv_field(&p, end, &fv);
        if (st != CSV_OK) {
            return st;
        }
        if (k == max) {
            return CSV_TOO_MANY;
        }
        cols[k++] = fv;
        if (p >= end) {
            break;
        }
        p++; /* the ',' */
    }
    *ncols = k;
    return CSV_OK;
}

cf__io_csv_status cf__io_csv_fields(const char *p, size_t n, const uint8_t *map, uint32_t ncols,
                                    cf__io_fval *vals)
{
    const char *end = p + n;
    uint32_t k = 0;
    for (;;) {
        cf__io_fval fv;
        cf__io_csv_status st = csv_field(&p, end, &fv);
        if (st != CSV_OK) {
            return st;
        }
        if (k == ncols) {
            return CSV_TOO_MANY;
        }
        if (map[k] != CF__IO_COL_IGNORE) {
            vals[map[k]] = fv;
        }
        k++;
        if (p >= end) {
            break;
        }
        p++;
    }
    return k == ncols ? CSV_OK : CSV_TOO_FEW;
}

static cf_decode_result csv_header(cf_decoder *d, const cf_record *rec, char *reason,
                                   size_t reason_size)
{
    static const uint8_t required[] = {F_EVENT_ID, F_TS,   F_ACCOUNT, F_MERCHANT,
                                       F_CURRENCY, F_TYPE, F_COUNTRY, F_CHANNEL};
    cf__io_fval cols[CF__IO_COLS_MAX];
    uint32_t ncols = 0;
    const char *p = rec->data;
    size_t n = rec->len;
    bool seen[F__COUNT] = {false};

    d->hdr = HDR_BAD;
    cf__io_strip_bom(&p, &n);
    cf__io_csv_status st = cf__io_csv_columns(p, n, cols, CF__IO_COLS_MAX, &ncols);
    if (st == CSV_TOO_MANY) {
        return cf__io_reject(reason, reason_size, "bad header: more than %d columns",
                             CF__IO_COLS_MAX);
    }
    if (st != CSV_OK) {
        return cf__io_reject(reason, reason_size, "bad header: %s", cf__io_csv_status_reason(st));
    }
    for (uint32_t i = 0; i < ncols; i++) {
        int f = cols[i].kind == FV_STR ? cf__io_field_lookup(cols[i].p, cols[i].len) : -1;
        if (f < 0) {
            d->col[i] = CF__IO_COL_IGNORE;
            continue;
        }
        if (seen[f]) {
            return cf__io_reject(reason, reason_size, "bad header: duplicate column: %s",
                                 cf__io_field_names[f]);
        }
        seen[f] = true;
        d->col[i] = (uint8_t)f;
    }
    for (size_t i = 0; i < sizeof(required); i++) {
        if (!seen[required[i]]) {
            return cf__io_reject(reason, reason_size, "bad header: missing column: %s",
                                 cf__io_field_names[required[i]]);
        }
    }
    if (seen[F_AMOUNT] && seen[F_AMOUNT_MINOR]) {
        return cf__io_reject(reason, reason_size, "bad header: both amount and amount_minor");
    }
    if (!seen[F_AMOUNT] && !seen[F_AMOUNT_MINOR]) {
        return cf__io_reject(reason, reason_size, "bad header: missing column: amount");
    }
    d->ncols = ncols;
    d->hdr = HDR_OK;
    return CF_DECODE_SKIP;
}

cf_decode_result cf__io_decode_csv(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size)
{
    if (d->hdr != HDR_OK) {
        if (d->hdr == HDR_EXPECTED) {
            return csv_header(d, rec, reason, reason_size);
        }
        return cf__io_reject(reason, reason_size, "no valid header");
    }
    cf__io_fval vals[F__COUNT];
    memset(vals, 0, sizeof(vals));
    cf__io_csv_status st = cf__io_csv_fields(rec->data, rec->len, d->col, d->ncols, vals);
    if (st != CSV_OK) {
        return cf__io_reject(reason, reason_size, "%s", cf__io_csv_status_reason(st));
    }
    return cf__io_build_event(vals, ev, reason, reason_size);
}
