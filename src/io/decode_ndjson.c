/*
 * NDJSON decoding: one JSON object (RFC 8259) per record.
 *
 * Purpose: a single pass over the record that validates the JSON grammar and records
 * where the value of each known key lies; cf__io_build_event then converts them exactly
 * like CSV fields. Numbers stay text, so "amount":57.16 becomes 5716 minor units without
 * ever being a double. Unknown keys are skipped whatever their value (nested objects and
 * arrays included, validated, up to MAX_DEPTH levels); a repeated known key is rejected
 * because "last one wins" would let a record say two things. The whole record must be
 * valid UTF-8 and hold nothing but whitespace after the object.
 *
 * Bounds: recursion depth MAX_DEPTH; no allocation.
 * Threads: reentrant; the decoder object is not touched (NDJSON has no header).
 */
#include <string.h>

#include "io_int.h"

#define MAX_DEPTH 32
#define KEY_MAX 32 /* longer keys cannot be known ones: compared as unknown */

typedef struct {
    const char *p;
    const char *end;
    const char *err; /* first error, static text */
} jscan;

static inline void skip_ws(jscan *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
}

static inline bool fail(jscan *j, const char *why)
{
    if (j->err == NULL) {
        j->err = why;
    }
    return false;
}

static inline bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
/* High bit set in bytes equal to the byte in pat (the lowest flagged byte is exact). */
static inline uint64_t has_byte(uint64_t v, uint64_t pat)
{
    uint64_t x = v ^ pat;
    return (x - 0x0101010101010101u) & ~x & 0x8080808080808080u;
}
/* High bit set in bytes below 0x20 (the lowest flagged byte is exact). */
static inline uint64_t has_ctl(uint64_t v)
{
    return (v - 0x2020202020202020u) & ~v & 0x8080808080808080u;
}
#endif

/* At an opening quote: scans the string, sets its content view. */
static bool scan_string(jscan *j, cf__io_fval *fv)
{
    const char *p = j->p + 1;
    const char *start = p;
    bool esc = false;
    while (p < j->end) {
#ifdef SWAR
        /* Skip plain bytes eight at a time; stop at the first '"', '\\' or control byte. */
        if (j->end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t m =
                has_byte(w, 0x2222222222222222u) | has_byte(w, 0x5C5C5C5C5C5C5C5Cu) | has_ctl(w);
            if (m == 0) {
                p += 8;
                continue;
            }
            p += __builtin_ctzll(m) >> 3;
        }
#endif
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            fv->p = start;
            fv->len = (uint32_t)(p - start);
            fv->kind = esc ? FV_JSON_ESC : FV_STR;
            j->p = p + 1;
            return true;
        }
        if (c < 0x20) {
            return fail(j, "bad json: control character in string");
        }
        if (c == '\\') {
            esc = true;
            if (p + 1 >= j->end) {
                break;
            }
            char e = p[1];
            if (e == 'u') {
                if (p + 6 > j->end || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) ||
                    !is_hex(p[5])) {
                    return fail(j, "bad json: bad escape");
                }
                p += 6;
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' &&
                e != 't') {
                return fail(j, "bad json: bad escape");
            }
            p += 2;
            continue;
        }
        p++;
    }
    return fail(j, "bad json: unterminated string");
}

/* Scans a number; true when it follows the RFC 8259 grammar. j->p moves past its text. */
static bool scan_number(jscan *j, cf__io_fval *fv)
{
    const char *p = j->p;
    const char *start = p;
    while (p < j->end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
                          *p == 'e' || *p == 'E')) {
        p++;
    }
    j->p = p;
    fv->p = start;
    fv->len = (uint32_t)(p - start);
    fv->kind = FV_NUM;
    /* Grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    const char *q = start;
    if (q < p && *q == '-') {
        q++;
    }
    if (q >= p || *q < '0' || *q > '9') {
        return false;
    }
    if (*q == '0') {
        q++;
    } else {
        while (q < p && *q >= '0' && *q <= '9') {
            q++;
        }
    }
    if (q < p && *q == '.') {
        q++;
        const char *d = q;
        while (q < p && *q >= '0' && *q <= '9') {
            q++;
        }
        if (q == d) {
            return false;
        }
    }
    if (q < p && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < p && (*q == '+' || *q == '-')) {
            q++;
        }
        const char *d = q;
        while (q < p && *q >= '0' && *q <= '9') {
            q++;
        }
        if (q == d) {
            return false;
        }
    }
    return q == p;
}

static bool scan_value(jscan *j, cf__io_fval *fv, int depth);

/* At '{' or '[': validates the container. */
static bool scan_container(jscan *j, int depth)
{
    if (depth >= MAX_DEPTH) {
        return fail(j, "bad json: nested too deep");
    }
    char close = *j->p == '{' ? '}' : ']';
    bool obj = close == '}';
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return true;
    }
    for (;;) {
        cf__io_fval fv;
        if (obj) {
            if (j->p >= j->end || *j->p != '"') {
                return fail(j, "bad json: expected key");
            }
            if (!scan_string(j, &fv)) {
                return false;
            }
            skip_ws(j);
            if (j->p >= j->end || *j->p != ':') {
                return fail(j, "bad json: expected ':'");
            }
            j->p++;
            skip_ws(j);
        }
        if (!scan_value(j, &fv, depth + 1)) {
            return false;
        }
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            skip_ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return true;
        }
        return fail(j, obj ? "bad json: expected ',' or '}'" : "bad json: expected ',' or ']'");
    }
}

static bool scan_literal(jscan *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) {
        return fail(j, "bad json: bad literal");
    }
    j->p += n;
    return true;
}

static bool scan_value(jscan *j, cf__io_fval *fv, int depth)
{
    if (j->p >= j->end) {
        return fail(j, "bad json: expected value");
    }
    char c = *j->p;
    fv->p = j->p;
    fv->len = 0;
    switch (c) {
    case '"':
        return scan_string(j, fv);
    case '{':
    case '[':
        fv->kind = FV_NESTED;
        return scan_container(j, depth);
    case 't':
        fv->kind = FV_TRUE;
        return scan_literal(j, "true", 4);
    case 'f':
        fv->kind = FV_FALSE;
        return scan_literal(j, "false", 5);
    case 'n':
        fv->kind = FV_NULL;
        return scan_literal(j, "null", 4);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            if (!scan_number(j, fv)) {
                return fail(j, "bad json: bad number");
            }
            return true;
        }
        return fail(j, "bad json: unexpected character");
    }
}

/* Field id of a key given as a string view; keys with escapes are unescaped first. */
static int key_field(const cf__io_fval *k)
{
    if (k->kind == FV_STR) {
        return cf__io_field_lookup(k->p, k->len);
    }
    char buf[KEY_MAX];
    int st;
    size_t n = cf__io_json_unescape(k->p, k->len, buf, sizeof(buf), &st);
    if (st != 0) {
        return -1;
    }
    return cf__io_field_lookup(buf, n);
}

cf_decode_result cf__io_decode_ndjson(cf_decoder *d, const cf_record *rec, cf_event *ev,
                                      char *reason, size_t reason_size)
{
    (void)d;
    const char *p = rec->data;
    size_t n = rec->len;
    if (rec->offset == 0) {
        cf__io_strip_bom(&p, &n);
    }
    if (!cf_utf8_valid(p, n)) {
        return cf__io_reject(reason, reason_size, "invalid utf-8");
    }
    jscan j = {.p = p, .end = p + n, .err = NULL};
    cf__io_fval vals[F__COUNT];
    memset(vals, 0, sizeof(vals));

    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        return cf__io_reject(reason, reason_size, "bad json: not an object");
    }
    j.p++;
    skip_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        skip_ws(&j);
        if (j.p != j.end) {
            return cf__io_reject(reason, reason_size, "bad json: trailing data");
        }
        return cf__io_reject(reason, reason_size, "empty object");
    }
    for (;;) {
        cf__io_fval key;
        cf__io_fval val = {NULL, 0, FV_ABSENT};
        if (j.p >= j.end || *j.p != '"') {
            return cf__io_reject(reason, reason_size, "bad json: expected key");
        }
        if (!scan_string(&j, &key)) {
            return cf__io_reject(reason, reason_size, "%s", j.err);
        }
        skip_ws(&j);
        if (j.p >= j.end || *j.p != ':') {
            return cf__io_reject(reason, reason_size, "bad json: expected ':'");
        }
        j.p++;
        skip_ws(&j);
        int f = key_field(&key);
        if (!scan_value(&j, &val, 1)) {
            if (f >= 0 && val.kind == FV_NUM) {
                return cf__io_reject(reason, reason_size, "bad number: %s", cf__io_field_names[f]);
            }
            return cf__io_reject(reason, reason_size, "%s", j.err);
        }
        if (f >= 0) {
            if (vals[f].kind != FV_ABSENT) {
                return cf__io_reject(reason, reason_size, "duplicate key: %s",
                                     cf__io_field_names[f]);
            }
            vals[f] = val;
            if (val.kind == FV_NESTED) {
                return cf__io_reject(reason, reason_size, "bad field type: %s",
                                     cf__io_field_names[f]);
            }
        }
        skip_ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            skip_ws(&j);
            continue;
        }
        if (j.p < j.end && *j.p == '}') {
            j.p++;
            break;
        }
        return cf__io_reject(reason, reason_size, "bad json: expected ',' or '}'");
    }
    skip_ws(&j);
    if (j.p != j.end) {
        return cf__io_reject(reason, reason_size, "bad json: trailing data");
    }
    return cf__io_build_event(vals, ev, reason, reason_size);
}
