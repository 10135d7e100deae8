/*
 * Exchange rates for the opt-in conversion to one reporting currency (convert.to,
 * convert.rates_file; docs/schema.md, Conversion).
 *
 * Purpose: a rates file (CSV: from_currency, to_currency, rate, valid_from, valid_to) is
 * loaded once into a table sorted by (currency, valid_from); cf_fx_find picks the row whose
 * half-open period [valid_from, valid_to) holds an event's time, and cf_fx_convert turns
 * minor units of one currency into minor units of the target exactly: the rate is kept as the
 * decimal text wrote it (num / 10^scale), the product is formed in 128-bit integers with every
 * step overflow-checked, and the quotient is rounded half to even at the target's minor unit
 * (ISO 4217 exponents from cf_currency_exponent). No floating point anywhere.
 *
 * Bounds: the file is at most 64 MiB; a rate has at most 18 significant digits, so
 * |amount| x num < 2^123 and only the scaling by 10^(e_to - e_from) can overflow (checked).
 * Threads: a loaded table is read-only; lookups are reentrant.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "confide/core.h"
#include "io_int.h"

#define RATES_FILE_MAX (64u << 20)

__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 i128;

struct cf_fx {
    char target[4];
    cf_fx_rate *rows; /* sorted by (from, valid_from) */
    size_t n;
    cf_fx_rate identity;
    uint8_t digest[32];
};

static const u128 pow10_u128[23] = {
    1ULL,
    10ULL,
    100ULL,
    1000ULL,
    10000ULL,
    100000ULL,
    1000000ULL,
    10000000ULL,
    100000000ULL,
    1000000000ULL,
    10000000000ULL,
    100000000000ULL,
    1000000000000ULL,
    10000000000000ULL,
    100000000000000ULL,
    1000000000000000ULL,
    10000000000000000ULL,
    100000000000000000ULL,
    1000000000000000000ULL,
    (u128)1000000000000000000ULL * 10u,
    (u128)1000000000000000000ULL * 100u,
    (u128)1000000000000000000ULL * 1000u,
    (u128)1000000000000000000ULL * 10000u,
};

cf_err cf_fx_convert(const cf_fx_rate *r, int64_t amount_minor, int64_t *out)
{
    int ef = cf_currency_exponent(r->from), et = cf_currency_exponent(r->to);
    if (ef < 0 || et < 0 || r->scale > 18 || r->num == 0) {
        return CF_E_INVAL;
    }
    bool neg = amount_minor < 0;
    u128 m = neg ? (u128)(-(i128)amount_minor) : (u128)amount_minor;
    u128 n, d = pow10_u128[r->scale];
    if (__builtin_mul_overflow(m, (u128)r->num, &n)) {
        return CF_E_OVERFLOW;
    }
    if (et > ef && __builtin_mul_overflow(n, pow10_u128[et - ef], &n)) {
        return CF_E_OVERFLOW;
    }
    if (ef > et) {
        d *= pow10_u128[ef - et]; /* at most 10^22: fits */
    }
    u128 q = n / d, rem = n % d;
    /* Half to even on the magnitude (symmetric: -x rounds like x). rem < d <= 10^22, so
     * 2 * rem cannot overflow. */
    if (2 * rem > d || (2 * rem == d && (q & 1) != 0)) {
        q++;
    }
    u128 lim = neg ? (u128)1 << 63 : ((u128)1 << 63) - 1;
    if (q > lim) {
        return CF_E_OVERFLOW;
    }
    *out = neg ? (int64_t)(-(i128)q) : (int64_t)q;
    return CF_OK;
}

static int rate_cmp(const void *a, const void *b)
{
    const cf_fx_rate *x = a, *y = b;
    int c = memcmp(x->from, y->from, 3);
    if (c != 0) {
        return c;
    }
    return x->valid_from_us < y->valid_from_us ? -1 : x->valid_from_us > y->valid_from_us;
}

const cf_fx_rate *cf_fx_find(const cf_fx *fx, const char *currency, int64_t ts_us)
{
    if (strncmp(currency, fx->target, 4) == 0) {
        return &fx->identity;
    }
    /* The last row of this currency starting at or before ts_us. */
    size_t lo = 0, hi = fx->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const cf_fx_rate *r = &fx->rows[mid];
        int c = memcmp(r->from, currency, 3);
        if (c < 0 || (c == 0 && r->valid_from_us <= ts_us)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NULL;
    }
    const cf_fx_rate *r = &fx->rows[lo - 1];
    if (memcmp(r->from, currency, 3) != 0 || ts_us >= r->valid_to_us) {
        return NULL;
    }
    return r;
}

const char *cf_fx_target(const cf_fx *fx)
{
    return fx->target;
}

size_t cf_fx_count(const cf_fx *fx)
{
    return fx->n;
}

void cf_fx_digest(const cf_fx *fx, uint8_t out[32])
{
    memcpy(out, fx->digest, 32);
}

void cf_fx_destroy(cf_fx *fx)
{
    if (fx == NULL) {
        return;
    }
    cf_free(fx->rows);
    cf_free(fx);
}

size_t cf_fx_no_rate_reason(const char *currency, int64_t ts_us, char *buf, size_t size)
{
    char ts[32];
    cf__io_format_ts(ts_us, ts);
    int n = snprintf(buf, size, "no rate for %.3s at %s", currency, ts);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

void cf_fx_rate_encode(const cf_fx_rate *r, uint8_t out[CF_FX_RATE_ENC_LEN])
{
    memcpy(out, r->from, 3);
    memcpy(out + 3, r->to, 3);
    for (int i = 0; i < 8; i++) {
        out[6 + i] = (uint8_t)(r->num >> (8 * i));
        out[15 + i] = (uint8_t)((uint64_t)r->valid_from_us >> (8 * i));
        out[23 + i] = (uint8_t)((uint64_t)r->valid_to_us >> (8 * i));
    }
    out[14] = r->scale;
}

bool cf_fx_rate_decode(const uint8_t in[CF_FX_RATE_ENC_LEN], cf_fx_rate *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->from, in, 3);
    memcpy(r->to, in + 3, 3);
    uint64_t f = 0, t = 0;
    for (int i = 7; i >= 0; i--) {
        r->num = r->num << 8 | in[6 + i];
        f = f << 8 | in[15 + i];
        t = t << 8 | in[23 + i];
    }
    r->scale = in[14];
    r->valid_from_us = (int64_t)f;
    r->valid_to_us = (int64_t)t;
    return cf_currency_exponent(r->from) >= 0 && cf_currency_exponent(r->to) >= 0 && r->num > 0 &&
           r->scale <= 18 && r->valid_from_us < r->valid_to_us;
}

/* ---- the rates file ------------------------------------------------------------------------ */

enum { COL_FROM, COL_TO, COL_RATE, COL_VFROM, COL_VTO, COL_N };
static const char *const col_names[COL_N] = {"from_currency", "to_currency", "rate", "valid_from",
                                             "valid_to"};

/* An exact positive decimal: digits, optionally '.' and digits; at most 18 significant. */
static bool parse_rate(const char *s, size_t n, uint64_t *num, uint8_t *scale)
{
    uint64_t v = 0;
    unsigned digits = 0, frac = 0;
    bool dot = false, any = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && !dot && any) {
            dot = true;
            continue;
        }
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        any = true;
        if (dot) {
            frac++;
        }
        if (v == 0 && s[i] == '0') {
            continue; /* leading zeros are not significant */
        }
        if (++digits > 18) {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (!any || (dot && s[n - 1] == '.') || frac > 18 || v == 0) {
        return false;
    }
    *num = v;
    *scale = (uint8_t)frac;
    return true;
}

static bool currency_ok(const char *s, size_t n)
{
    char code[4] = {0};
    if (n != 3) {
        return false;
    }
    memcpy(code, s, 3);
    return cf_currency_valid(s, n) && cf_currency_exponent(code) >= 0;
}

/* Splits @p line (no newline) at commas into at most 64 fields. */
static size_t split_fields(const char *line, size_t len, const char **f, size_t *fl)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len && n < 64; i++) {
        if (i == len || line[i] == ',') {
            f[n] = line + start;
            fl[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    return n;
}

cf_err cf_fx_parse(cf_fx **out, const char *name, const char *text, size_t len, const char *to,
                   char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (to == NULL || !currency_ok(to, strlen(to))) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "convert.to: '%s' is not an ISO 4217 currency code", to ? to : "");
    }
    cf_fx *fx = cf_calloc(1, sizeof(*fx));
    if (fx == NULL) {
        return CF_E_NOMEM;
    }
    memcpy(fx->target, to, 3);
    memcpy(fx->identity.from, to, 3);
    memcpy(fx->identity.to, to, 3);
    fx->identity.num = 1;
    fx->identity.valid_from_us = INT64_MIN;
    fx->identity.valid_to_us = INT64_MAX;
    crypto_hash_sha256(fx->digest, (const unsigned char *)text, len);
    cf_err err = CF_OK;
    size_t cap = 0;
    int col[COL_N];
    bool have_header = false;
    size_t pos = 0;
    uint32_t line_no = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        pos = 3; /* a UTF-8 byte-order mark */
    }
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl != NULL ? (size_t)(nl - (text + pos)) : len - pos;
        const char *line = text + pos;
        pos += ll + (nl != NULL);
        line_no++;
        if (ll > 0 && line[ll - 1] == '\r') {
            ll--;
        }
        if (ll == 0) {
            continue;
        }
        if (memchr(line, '"', ll) != NULL) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: quoted fields are not supported in a rates file", name,
                             line_no);
            goto fail;
        }
        const char *f[64];
        size_t fl[64];
        size_t nf = split_fields(line, ll, f, fl);
        if (!have_header) {
            for (int c = 0; c < COL_N; c++) {
                col[c] = -1;
                for (size_t i = 0; i < nf; i++) {
                    if (fl[i] == strlen(col_names[c]) && memcmp(f[i], col_names[c], fl[i]) == 0) {
                        if (col[c] >= 0) {
                            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                             "%s line %u: bad header: duplicate column %s", name,
                                             line_no, col_names[c]);
                            goto fail;
                        }
                        col[c] = (int)i;
                    }
                }
                if (col[c] < 0) {
                    err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                     "%s line %u: bad header: no column %s (want "
                                     "from_currency,to_currency,rate,valid_from,valid_to)",
                                     name, line_no, col_names[c]);
                    goto fail;
                }
            }
            have_header = true;
            continue;
        }
        size_t need = 0;
        for (int c = 0; c < COL_N; c++) {
            need = (size_t)col[c] + 1 > need ? (size_t)col[c] + 1 : need;
        }
        if (nf < need) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: too few fields", name,
                             line_no);
            goto fail;
        }
        const char *tv = f[col[COL_TO]];
        size_t tl = fl[col[COL_TO]];
        if (!currency_ok(tv, tl)) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: to_currency '%.*s' is not an ISO 4217 code", name,
                             line_no, (int)(tl > 16 ? 16 : tl), tv);
            goto fail;
        }
        if (memcmp(tv, fx->target, 3) != 0) {
            continue; /* a rate to another currency: not ours */
        }
        cf_fx_rate r;
        memset(&r, 0, sizeof(r));
        r.line = line_no;
        memcpy(r.to, fx->target, 3);
        const char *fv = f[col[COL_FROM]];
        size_t fvl = fl[col[COL_FROM]];
        if (!currency_ok(fv, fvl)) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: from_currency '%.*s' is not an ISO 4217 code", name,
                             line_no, (int)(fvl > 16 ? 16 : fvl), fv);
            goto fail;
        }
        memcpy(r.from, fv, 3);
        if (memcmp(r.from, r.to, 3) == 0) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: from_currency equals to_currency (amounts in %s are "
                             "taken as they are)",
                             name, line_no, fx->target);
            goto fail;
        }
        if (!parse_rate(f[col[COL_RATE]], fl[col[COL_RATE]], &r.num, &r.scale)) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: rate '%.*s' is not an exact positive decimal (digits, "
                             "an optional '.', at most 18 significant digits)",
                             name, line_no, (int)(fl[col[COL_RATE]] > 32 ? 32 : fl[col[COL_RATE]]),
                             f[col[COL_RATE]]);
            goto fail;
        }
        if (!cf__io_parse_ts(f[col[COL_VFROM]], fl[col[COL_VFROM]], &r.valid_from_us) ||
            fl[col[COL_VFROM]] < 20) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: valid_from is not an RFC 3339 UTC time", name, line_no);
            goto fail;
        }
        if (fl[col[COL_VTO]] == 0) {
            r.valid_to_us = INT64_MAX;
        } else if (!cf__io_parse_ts(f[col[COL_VTO]], fl[col[COL_VTO]], &r.valid_to_us) ||
                   fl[col[COL_VTO]] < 20) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: valid_to is not an RFC 3339 UTC time (or empty)", name,
                             line_no);
            goto fail;
        }
        if (r.valid_to_us <= r.valid_from_us) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: valid_to is not after valid_from", name, line_no);
            goto fail;
        }
        if (fx->n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            cf_fx_rate *nr = cf_realloc(fx->rows, ncap * sizeof(*nr));
            if (nr == NULL) {
                err = CF_E_NOMEM;
                goto fail;
            }
            fx->rows = nr;
            cap = ncap;
        }
        fx->rows[fx->n++] = r;
    }
    if (!have_header) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line 1: no header", name);
        goto fail;
    }
    if (fx->n > 1) {
        qsort(fx->rows, fx->n, sizeof(*fx->rows), rate_cmp);
    }
    for (size_t i = 1; i < fx->n; i++) {
        const cf_fx_rate *a = &fx->rows[i - 1], *b = &fx->rows[i];
        if (memcmp(a->from, b->from, 3) == 0 && a->valid_to_us > b->valid_from_us) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s line %u: the period of this %.3s rate overlaps line %u's", name,
                             a->line > b->line ? a->line : b->line, b->from,
                             a->line > b->line ? b->line : a->line);
            goto fail;
        }
    }
    *out = fx;
    return CF_OK;
fail:
    cf_fx_destroy(fx);
    return err;
}

cf_err cf_fx_load(cf_fx **out, const char *path, const char *to, char *errstr, size_t errstr_size)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "convert.rates_file: cannot open %s", path);
    }
    char *buf = cf_malloc(RATES_FILE_MAX + 1);
    size_t len = buf != NULL ? fread(buf, 1, RATES_FILE_MAX + 1, f) : 0;
    bool bad = buf == NULL || ferror(f);
    fclose(f);
    cf_err err;
    if (bad) {
        err = cf_err_set(buf == NULL ? CF_E_NOMEM : CF_E_IO, errstr, errstr_size,
                         "convert.rates_file: cannot read %s", path);
    } else if (len > RATES_FILE_MAX) {
        err = cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                         "convert.rates_file: %s is larger than 64 MiB", path);
    } else {
        err = cf_fx_parse(out, path, buf, len, to, errstr, errstr_size);
    }
    cf_free(buf);
    return err;
}
