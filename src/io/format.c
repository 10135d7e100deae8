/*
 * Input formats, the decoder object and the field validation shared by every decoder.
 *
 * Purpose: each format-specific decoder only locates field values in a record (views into
 * the caller's bytes); cf__io_build_event then checks and converts them in one fixed order,
 * so CSV, NDJSON and the FDH adapter accept the same values and reject with the same
 * reasons (docs/schema.md). Reasons never quote ids or amounts from the record.
 *
 * Bounds: no allocation per record; unescaping goes into the event itself or into small
 * stack buffers, and anything longer than a field can legally be is rejected.
 * Threads: a decoder is used by one thread at a time; these helpers are reentrant.
 */
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "io_int.h"

/* ---- formats ---------------------------------------------------------------------------- */

cf_err cf_format_parse(const char *s, cf_format *out)
{
    if (s == NULL || out == NULL) {
        return CF_E_INVAL;
    }
    if (strcmp(s, "csv") == 0) {
        *out = CF_FMT_CSV;
    } else if (strcmp(s, "ndjson") == 0) {
        *out = CF_FMT_NDJSON;
    } else if (strcmp(s, "fdh") == 0) {
        *out = CF_FMT_FDH;
    } else {
        return CF_E_INVAL;
    }
    return CF_OK;
}

const char *cf_format_name(cf_format f)
{
    switch (f) {
    case CF_FMT_CSV:
        return "csv";
    case CF_FMT_NDJSON:
        return "ndjson";
    case CF_FMT_FDH:
        return "fdh";
    default:
        return NULL;
    }
}

/* ---- decoder object --------------------------------------------------------------------- */

cf_err cf_decoder_create(cf_decoder **out, cf_format fmt, char *errstr, size_t errstr_size)
{
    if (out == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "decoder: no output pointer");
    }
    *out = NULL;
    if (cf_format_name(fmt) == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "decoder: unknown format %d", (int)fmt);
    }
    cf_decoder *d = cf_calloc(1, sizeof(*d));
    if (d == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "decoder: out of memory");
    }
    d->fmt = fmt;
    d->hdr = HDR_EXPECTED;
    /* Build the currency and country tables now rather than on the first record. */
    (void)cf_currency_valid("EUR", 3);
    *out = d;
    return CF_OK;
}

void cf_decoder_destroy(cf_decoder *d)
{
    cf_free(d);
}

cf_decode_result cf_decoder_decode(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size)
{
    CF_ASSERT(d != NULL && rec != NULL && ev != NULL);
    if (reason != NULL && reason_size > 0) {
        reason[0] = '\0';
    }
    if (rec->too_long) {
        if (d->fmt != CF_FMT_NDJSON && d->hdr == HDR_EXPECTED) {
            /* The header itself: the next record must not be taken for it. */
            d->hdr = HDR_BAD;
            return cf__io_reject(reason, reason_size, "bad header: record too long");
        }
        return cf__io_reject(reason, reason_size, "record too long");
    }
    if (rec->data == NULL && rec->len != 0) {
        return cf__io_reject(reason, reason_size, "empty record");
    }
    switch (d->fmt) {
    case CF_FMT_CSV:
        return cf__io_decode_csv(d, rec, ev, reason, reason_size);
    case CF_FMT_NDJSON:
        return cf__io_decode_ndjson(d, rec, ev, reason, reason_size);
    case CF_FMT_FDH:
        return cf__io_decode_fdh(d, rec, ev, reason, reason_size);
    default:
        return cf__io_reject(reason, reason_size, "unknown format");
    }
}

cf_decode_result cf__io_reject(char *reason, size_t size, const char *fmt, ...)
{
    if (reason != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, size, fmt, ap);
        va_end(ap);
    }
    return CF_DECODE_REJECT;
}

/* ---- field names ------------------------------------------------------------------------ */

const char *const cf__io_field_names[F__COUNT] = {
    "event_id", "ts",   "account", "merchant", "amount", "amount_minor",
    "currency", "type", "country", "channel",  "fraud",  "fraud_scenario",
};

int cf__io_field_lookup(const char *s, size_t len)
{
    /* The first byte and the length pick at most one candidate. */
    int cand = -1;
    switch (len) {
    case 2:
        cand = F_TS;
        break;
    case 4:
        cand = F_TYPE;
        break;
    case 5:
        cand = F_FRAUD;
        break;
    case 6:
        cand = F_AMOUNT;
        break;
    case 7:
        cand = s[0] == 'a' ? F_ACCOUNT : s[0] == 'c' ? (s[2] == 'u' ? F_COUNTRY : F_CHANNEL) : -1;
        break;
    case 8:
        cand = s[0] == 'e' ? F_EVENT_ID : s[0] == 'm' ? F_MERCHANT : F_CURRENCY;
        break;
    case 12:
        cand = F_AMOUNT_MINOR;
        break;
    case 14:
        cand = F_FRAUD_SCENARIO;
        break;
    default:
        return -1;
    }
    if (cand < 0 || memcmp(s, cf__io_field_names[cand], len) != 0) {
        return -1;
    }
    return cand;
}

/* ---- numbers and timestamps ------------------------------------------------------------- */

bool cf__io_parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9) {
            return false;
        }
        if (v > (UINT64_MAX - d) / 10u) {
            return false;
        }
        v = v * 10u + d;
    }
    *out = v;
    return true;
}

bool cf__io_parse_i64(const char *s, size_t n, int64_t *out, bool *overflow)
{
    size_t i = 0;
    bool neg = false;
    *overflow = false;
    if (n > 0 && s[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == n) {
        return false;
    }
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9) {
            *overflow = false;
            return false;
        }
        if (v > (limit - d) / 10u) {
            *overflow = true;
        } else {
            v = v * 10u + d;
        }
    }
    if (*overflow) {
        return false;
    }
    *out = neg ? (v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static inline int dig(char c)
{
    unsigned d = (unsigned)(unsigned char)c - '0';
    return d <= 9 ? (int)d : -1;
}

/* Two digits at s, or -1. */
static inline int dig2(const char *s)
{
    int a = dig(s[0]), b = dig(s[1]);
    return (a < 0 || b < 0) ? -1 : a * 10 + b;
}

/*
 * Last valid RFC 3339 date seen by this thread ("YYYY-MM-DD") and its day number. It
 * starts all NUL, which no candidate matches (they have '-' at index 4).
 */
static _Thread_local struct {
    char date[10];
    int64_t days;
} ts_cache;

bool cf__io_parse_ts(const char *s, size_t n, int64_t *out)
{
    if (n == 0) {
        return false;
    }
    if (n < 5 || s[4] != '-') {
        /* Integer microseconds since the epoch. */
        bool ovf;
        int64_t v;
        if (!cf__io_parse_i64(s, n, &v, &ovf) || v < CF__IO_TS_MIN_US || v > CF__IO_TS_MAX_US) {
            return false;
        }
        *out = v;
        return true;
    }
    /* RFC 3339: YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+00:00) */
    if (n < 20 || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') {
        return false;
    }
    int hh = dig2(s + 11), mi = dig2(s + 14), ss = dig2(s + 17);
    if (hh < 0 || hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59) {
        return false;
    }
    int64_t days;
    if (memcmp(s, ts_cache.date, 10) == 0) {
        days = ts_cache.days; /* consecutive events mostly share their date */
    } else {
        int yh = dig2(s), yl = dig2(s + 2), mo = dig2(s + 5), dd = dig2(s + 8);
        if (yh < 0 || yl < 0 || mo < 1 || mo > 12 || dd < 1) {
            return false;
        }
        int64_t year = yh * 100 + yl;
        static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        int maxd = mdays[mo - 1] + (mo == 2 && leap ? 1 : 0);
        if (dd > maxd) {
            return false;
        }
        days = days_from_civil(year, (unsigned)mo, (unsigned)dd);
        memcpy(ts_cache.date, s, 10);
        ts_cache.days = days;
    }
    size_t i = 19;
    int64_t frac = 0;
    if (s[i] == '.') {
        i++;
        int nd = 0;
        while (i < n && dig(s[i]) >= 0) {
            if (nd == 6) {
                return false;
            }
            frac = frac * 10 + dig(s[i]);
            nd++;
            i++;
        }
        if (nd == 0) {
            return false;
        }
        for (; nd < 6; nd++) {
            frac *= 10;
        }
    }
    if (i + 1 == n && s[i] == 'Z') {
        /* UTC */
    } else if (i + 6 == n && memcmp(s + i, "+00:00", 6) == 0) {
        /* UTC written as an offset */
    } else {
        return false;
    }
    *out = ((days * 86400 + hh * 3600 + mi * 60 + ss) * 1000000) + frac;
    return true;
}

size_t cf__io_format_ts(int64_t ts_us, char buf[32])
{
    if (ts_us < CF__IO_TS_MIN_US || ts_us > CF__IO_TS_MAX_US) {
        buf[0] = '\0';
        return 0;
    }
    int64_t secs = ts_us / 1000000, us = ts_us % 1000000;
    if (us < 0) {
        us += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    char *p = buf;
    p[0] = (char)('0' + y / 1000);
    p[1] = (char)('0' + y / 100 % 10);
    p[2] = (char)('0' + y / 10 % 10);
    p[3] = (char)('0' + y % 10);
    p[4] = '-';
    p[5] = (char)('0' + m / 10);
    p[6] = (char)('0' + m % 10);
    p[7] = '-';
    p[8] = (char)('0' + d / 10);
    p[9] = (char)('0' + d % 10);
    p[10] = 'T';
    p[11] = (char)('0' + hh / 10);
    p[12] = (char)('0' + hh % 10);
    p[13] = ':';
    p[14] = (char)('0' + mi / 10);
    p[15] = (char)('0' + mi % 10);
    p[16] = ':';
    p[17] = (char)('0' + ss / 10);
    p[18] = (char)('0' + ss % 10);
    p[19] = '.';
    for (int k = 25; k >= 20; k--) {
        p[k] = (char)('0' + us % 10);
        us /= 10;
    }
    p[26] = 'Z';
    p[27] = '\0';
    return 27;
}

/* ---- JSON string unescaping ------------------------------------------------------------- */

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int h;
        if (c >= '0' && c <= '9') {
            h = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            h = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            h = c - 'A' + 10;
        } else {
            return -1;
        }
        v = v * 16 + h;
    }
    return v;
}

size_t cf__io_json_unescape(const char *p, size_t n, char *out, size_t cap, int *status)
{
    size_t o = 0;
    *status = 0;
    for (size_t i = 0; i < n;) {
        char tmp[4];
        size_t tn = 1;
        if (p[i] != '\\') {
            tmp[0] = p[i];
            i++;
        } else {
            if (i + 1 >= n) {
                *status = 2;
                return o;
            }
            char e = p[i + 1];
            i += 2;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                tmp[0] = e;
                break;
            case 'b':
                tmp[0] = '\b';
                break;
            case 'f':
                tmp[0] = '\f';
                break;
            case 'n':
                tmp[0] = '\n';
                break;
            case 'r':
                tmp[0] = '\r';
                break;
            case 't':
                tmp[0] = '\t';
                break;
            case 'u': {
                int cp = i + 4 <= n ? hex4(p + i) : -1;
                if (cp < 0) {
                    *status = 2;
                    return o;
                }
                i += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    *status = 2;
                    return o;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    int lo = (i + 6 <= n && p[i] == '\\' && p[i + 1] == 'u') ? hex4(p + i + 2) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        *status = 2;
                        return o;
                    }
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp < 0x80) {
                    tmp[0] = (char)cp;
                } else if (cp < 0x800) {
                    tmp[0] = (char)(0xC0 | (cp >> 6));
                    tmp[1] = (char)(0x80 | (cp & 0x3F));
                    tn = 2;
                } else if (cp < 0x10000) {
                    tmp[0] = (char)(0xE0 | (cp >> 12));
                    tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    tmp[2] = (char)(0x80 | (cp & 0x3F));
                    tn = 3;
                } else {
                    tmp[0] = (char)(0xF0 | (cp >> 18));
                    tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    tmp[3] = (char)(0x80 | (cp & 0x3F));
                    tn = 4;
                }
                break;
            }
            default:
                *status = 2;
                return o;
            }
        }
        if (o + tn > cap) {
            *status = 1;
            return o;
        }
        memcpy(out + o, tmp, tn);
        o += tn;
    }
    return o;
}

/* ---- building the event ----------------------------------------------------------------- */

#define SCRATCH_MAX 64 /* longest scalar text (numbers, codes, timestamps) after unescaping */

/*
 * Text of a scalar field. Returns 1 with *p and *n set, 0 when the value is absent or null or
 * empty (a missing field), -1 when it is of the wrong JSON type or longer than any valid
 * value of a scalar field can be.
 */
static int scalar_text(const cf__io_fval *v, char *scratch, const char **p, size_t *n)
{
    switch (v->kind) {
    case FV_ABSENT:
    case FV_NULL:
        return 0;
    case FV_STR:
    case FV_NUM:
        *p = v->p;
        *n = v->len;
        return v->len == 0 ? 0 : 1;
    case FV_CSV_ESC: {
        size_t o = 0;
        for (size_t i = 0; i < v->len; i++) {
            if (o == SCRATCH_MAX) {
                return -1;
            }
            scratch[o++] = v->p[i];
            if (v->p[i] == '"') {
                i++; /* "" is one quote */
            }
        }
        *p = scratch;
        *n = o;
        return o == 0 ? 0 : 1;
    }
    case FV_JSON_ESC: {
        int st;
        size_t o = cf__io_json_unescape(v->p, v->len, scratch, SCRATCH_MAX, &st);
        if (st != 0) {
            return -1;
        }
        *p = scratch;
        *n = o;
        return o == 0 ? 0 : 1;
    }
    default:
        return -1;
    }
}

/* Copies an id field into dst (CF_ID_MAX + 1 bytes). NULL on success, else the reason. */
static const char *id_field(const cf__io_fval *v, char *dst, size_t *outlen)
{
    size_t o = 0;
    switch (v->kind) {
    case FV_ABSENT:
    case FV_NULL:
        return "missing field";
    case FV_STR:
        if (v->len > CF_ID_MAX) {
            return "field too long";
        }
        memcpy(dst, v->p, v->len);
        o = v->len;
        break;
    case FV_CSV_ESC:
        for (size_t i = 0; i < v->len; i++) {
            if (o == CF_ID_MAX) {
                return "field too long";
            }
            dst[o++] = v->p[i];
            if (v->p[i] == '"') {
                i++;
            }
        }
        break;
    case FV_JSON_ESC: {
        int st;
        o = cf__io_json_unescape(v->p, v->len, dst, CF_ID_MAX, &st);
        if (st == 1) {
            return "field too long";
        }
        if (st != 0) {
            return "invalid utf-8";
        }
        break;
    }
    default:
        return "bad field type";
    }
    if (o == 0) {
        return "missing field";
    }
    dst[o] = '\0';
    /* One pass for both checks; ids are short, so a byte loop beats two library calls. */
    const unsigned char *u = (const unsigned char *)dst;
    for (size_t i = 0; i < o;) {
        if (u[i] == 0) {
            return "bad character";
        }
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = cf__io_utf8_seq(u + i, o - i);
        if (k == 0) {
            return "invalid utf-8";
        }
        i += k;
    }
    *outlen = o;
    return NULL;
}

static inline bool all_upper(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 'A' || p[i] > 'Z') {
            return false;
        }
    }
    return true;
}

/* fraud (max 1) and fraud_scenario (max 3): -1 when absent, else a single digit. */
static int small_flag(const cf__io_fval *v, char *scratch, int max, int8_t *out)
{
    if (v->kind == FV_TRUE || v->kind == FV_FALSE) {
        if (max != 1) {
            return -1;
        }
        *out = v->kind == FV_TRUE ? 1 : 0;
        return 0;
    }
    const char *p;
    size_t n;
    int r = scalar_text(v, scratch, &p, &n);
    if (r == 0) {
        *out = -1;
        return 0;
    }
    if (r < 0 || n != 1 || p[0] < '0' || p[0] > '0' + max) {
        return -1;
    }
    *out = (int8_t)(p[0] - '0');
    return 0;
}

cf_decode_result cf__io_build_event(const cf__io_fval v[F__COUNT], cf_event *ev, char *reason,
                                    size_t reason_size)
{
    char scratch[SCRATCH_MAX];
    const char *p = NULL;
    size_t n = 0;
    int r;
    size_t idlen;
    const char *why;

    ev->ingest_ns = 0;
    ev->seq = 0;

    /* event_id */
    r = scalar_text(&v[F_EVENT_ID], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: event_id");
    }
    if (r < 0 || !cf__io_parse_u64(p, n, &ev->event_id)) {
        return cf__io_reject(reason, reason_size, "bad number: event_id");
    }

    /* ts */
    r = scalar_text(&v[F_TS], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: ts");
    }
    if (r < 0 || !cf__io_parse_ts(p, n, &ev->ts_us)) {
        return cf__io_reject(reason, reason_size, "bad timestamp");
    }

    /* account, merchant */
    why = id_field(&v[F_ACCOUNT], ev->account, &idlen);
    if (why != NULL) {
        return cf__io_reject(reason, reason_size, "%s: account", why);
    }
    why = id_field(&v[F_MERCHANT], ev->merchant, &idlen);
    if (why != NULL) {
        return cf__io_reject(reason, reason_size, "%s: merchant", why);
    }

    /* currency (before the amount, whose exponent it gives) */
    r = scalar_text(&v[F_CURRENCY], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: currency");
    }
    int exponent = -1;
    if (r > 0 && n == 3) {
        memcpy(ev->currency, p, 3);
        ev->currency[3] = '\0';
        exponent = cf_currency_exponent(ev->currency);
    }
    if (exponent < 0) {
        if (r > 0 && n == 3 && all_upper(p, 3)) {
            return cf__io_reject(reason, reason_size, "unknown currency: %.3s", p);
        }
        return cf__io_reject(reason, reason_size, "unknown currency");
    }

    /* amount | amount_minor: exactly one */
    bool has_amount = v[F_AMOUNT].kind != FV_ABSENT && v[F_AMOUNT].kind != FV_NULL;
    bool has_minor = v[F_AMOUNT_MINOR].kind != FV_ABSENT && v[F_AMOUNT_MINOR].kind != FV_NULL;
    if (has_amount && has_minor) {
        return cf__io_reject(reason, reason_size, "both amount and amount_minor");
    }
    if (has_minor) {
        r = scalar_text(&v[F_AMOUNT_MINOR], scratch, &p, &n);
        if (r == 0) {
            return cf__io_reject(reason, reason_size, "missing field: amount_minor");
        }
        bool ovf = false;
        if (r < 0 || !cf__io_parse_i64(p, n, &ev->amount_minor, &ovf)) {
            return ovf ? cf__io_reject(reason, reason_size, "amount overflow")
                       : cf__io_reject(reason, reason_size, "bad number: amount_minor");
        }
    } else {
        r = scalar_text(&v[F_AMOUNT], scratch, &p, &n);
        if (r == 0) {
            return cf__io_reject(reason, reason_size, "missing field: amount");
        }
        if (r < 0) {
            return cf__io_reject(reason, reason_size, "bad number: amount");
        }
        cf_err e = cf_amount_parse(p, n, exponent, &ev->amount_minor);
        if (e == CF_E_OVERFLOW) {
            return cf__io_reject(reason, reason_size, "amount overflow");
        }
        if (e != CF_OK) {
            return cf__io_reject(reason, reason_size, "bad number: amount");
        }
    }

    /* type, country, channel */
    r = scalar_text(&v[F_TYPE], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: type");
    }
    cf_tx_type t;
    if (r < 0 || cf_tx_type_parse(p, n, &t) != CF_OK) {
        return cf__io_reject(reason, reason_size, "unknown type");
    }
    ev->type = (uint8_t)t;

    r = scalar_text(&v[F_COUNTRY], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: country");
    }
    if (r < 0 || !cf_country_valid(p, n)) {
        return cf__io_reject(reason, reason_size, "unknown country");
    }
    memcpy(ev->country, p, 2);
    ev->country[2] = '\0';

    r = scalar_text(&v[F_CHANNEL], scratch, &p, &n);
    if (r == 0) {
        return cf__io_reject(reason, reason_size, "missing field: channel");
    }
    cf_channel ch;
    if (r < 0 || cf_channel_parse(p, n, &ch) != CF_OK) {
        return cf__io_reject(reason, reason_size, "unknown channel");
    }
    ev->channel = (uint8_t)ch;

    /* ground truth, optional */
    if (small_flag(&v[F_FRAUD], scratch, 1, &ev->fraud) != 0) {
        return cf__io_reject(reason, reason_size, "bad number: fraud");
    }
    if (small_flag(&v[F_FRAUD_SCENARIO], scratch, 3, &ev->fraud_scenario) != 0) {
        return cf__io_reject(reason, reason_size, "bad number: fraud_scenario");
    }
    return CF_DECODE_EVENT;
}
