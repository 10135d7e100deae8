/*
 * Rate traces: a regular series of counts per interval, read from CSV.
 *
 * A trace file is small (hourly counts for a month are 720 rows; a day of 1 s counts is
 * 86,400), so it is read whole into memory, parsed in one pass into (timestamp, count)
 * pairs, and then laid out on a regular grid whose interval is the smallest difference
 * between consecutive timestamps. Every other difference must be a multiple of it: the
 * intervals in between were absent from the file and count zero (a source that writes a row
 * only when something happened). Anything else (a timestamp that goes backwards, repeats,
 * or falls off the grid) is an error naming the line, because guessing would move traffic
 * in time and mislead a forecaster.
 *
 * Bounds: CF_TRACE_POINTS_MAX points after filling; lines up to LINE_MAX bytes.
 * Ownership: the caller owns a trace; it holds one array of doubles.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scale_int.h"

#define LINE_MAX_BYTES 4096
#define FILE_MAX_BYTES (1024u * 1024u * 1024u)
#define INTERVAL_MIN_MS 1
#define INTERVAL_MAX_MS INT64_C(86400000)

struct cf_trace {
    double *v;
    size_t n;
    int64_t start_ms;
    int64_t interval_ms;
    size_t filled;
};

/* ---- timestamps ---------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static bool digits(const char *s, size_t len, size_t at, size_t k, int64_t *out)
{
    if (at + k > len) {
        return false;
    }
    int64_t v = 0;
    for (size_t i = 0; i < k; i++) {
        char c = s[at + i];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (c - '0');
    }
    *out = v;
    return true;
}

/* Fraction digits after a '.', as milliseconds rounded half up; *at moves past them. */
static bool fraction_ms(const char *s, size_t len, size_t *at, int64_t *ms)
{
    size_t i = *at;
    int64_t scaled = 0; /* in units of 1e-4 s, one guard digit */
    int nd = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (nd < 4) {
            scaled = scaled * 10 + (s[i] - '0');
        }
        nd++;
        i++;
    }
    if (nd == 0) {
        return false;
    }
    for (int k = nd; k < 4; k++) {
        scaled *= 10;
    }
    *ms = (scaled + 5) / 10;
    *at = i;
    return true;
}

cf_err cf_scale_parse_ts(const char *s, size_t len, int64_t *ms_out)
{
    while (len > 0 && (s[0] == ' ' || s[0] == '"')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '"')) {
        len--;
    }
    if (len == 0) {
        return CF_E_PARSE;
    }
    /* Epoch seconds: [-]digits[.digits] */
    size_t i = 0;
    bool neg = false;
    if (s[0] == '-') {
        neg = true;
        i = 1;
    }
    size_t d0 = i;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    if (i > d0 && (i == len || s[i] == '.') && !(i - d0 == 4 && i < len && s[i] == '-')) {
        if (i - d0 > 12) {
            return CF_E_PARSE; /* beyond year 33000: not a timestamp */
        }
        int64_t sec = 0;
        for (size_t k = d0; k < i; k++) {
            sec = sec * 10 + (s[k] - '0');
        }
        int64_t ms = 0;
        if (i < len) {
            i++;
            if (!fraction_ms(s, len, &i, &ms) || i != len) {
                return CF_E_PARSE;
            }
        }
        int64_t v = sec * 1000 + ms;
        *ms_out = neg ? -v : v;
        return CF_OK;
    }
    /* YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|+hh:mm|-hh:mm] */
    int64_t y, mo, d, h, mi, sec;
    if (neg || !digits(s, len, 0, 4, &y) || len < 19 || s[4] != '-' || !digits(s, len, 5, 2, &mo) ||
        s[7] != '-' || !digits(s, len, 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, len, 11, 2, &h) ||
        s[13] != ':' || !digits(s, len, 14, 2, &mi) || s[16] != ':' ||
        !digits(s, len, 17, 2, &sec)) {
        return CF_E_PARSE;
    }
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60) {
        return CF_E_PARSE;
    }
    if (sec == 60) {
        sec = 59; /* a leap second folds onto the second before it */
    }
    i = 19;
    int64_t ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        if (!fraction_ms(s, len, &i, &ms)) {
            return CF_E_PARSE;
        }
    }
    int64_t off_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int64_t oh, om;
        if (!digits(s, len, i + 1, 2, &oh) || i + 3 >= len || s[i + 3] != ':' ||
            !digits(s, len, i + 4, 2, &om) || oh > 23 || om > 59) {
            return CF_E_PARSE;
        }
        off_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
        i += 6;
    }
    if (i != len) {
        return CF_E_PARSE;
    }
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t t = ((days * 24 + h) * 60 + mi) * 60 + sec - off_min * 60;
    *ms_out = t * 1000 + ms;
    return CF_OK;
}

/* ---- CSV reading --------------------------------------------------------------------------- */

static cf_err slurp(const char *path, char **buf_out, size_t *len_out, char *errstr,
                    size_t errstr_size)
{
    cf_err err = CF_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot open %s", path);
    }
    size_t cap = 1 << 16, len = 0;
    buf = cf_malloc(cap + 1);
    if (buf == NULL) {
        err = CF_E_NOMEM;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= FILE_MAX_BYTES) {
                err = cf_err_set(CF_E_LIMIT, errstr, errstr_size, "%s: larger than %u bytes", path,
                                 FILE_MAX_BYTES);
                goto out;
            }
            char *nb = cf_realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                err = CF_E_NOMEM;
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                err = cf_err_set(CF_E_IO, errstr, errstr_size, "%s: read error", path);
                goto out;
            }
            break;
        }
    }
    buf[len] = '\0';
    *buf_out = buf;
    *len_out = len;
    buf = NULL;
out:
    cf_free(buf);
    fclose(f);
    return err;
}

/* Splits the next line off [*p, end): returns its start and length (without CR LF). */
static bool next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end) {
        return false;
    }
    const char *s = *p;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl != NULL ? nl : end;
    *p = nl != NULL ? nl + 1 : end;
    size_t l = (size_t)(e - s);
    if (l > 0 && s[l - 1] == '\r') {
        l--;
    }
    *line = s;
    *len = l;
    return true;
}

/* The @p col-th (0-based) comma-separated field of a line. */
static bool field(const char *line, size_t len, unsigned col, const char **f, size_t *flen)
{
    size_t start = 0;
    for (unsigned c = 0;; c++) {
        size_t e = start;
        while (e < len && line[e] != ',') {
            e++;
        }
        if (c == col) {
            *f = line + start;
            *flen = e - start;
            return true;
        }
        if (e >= len) {
            return false;
        }
        start = e + 1;
    }
}

static bool blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (line[i] != ' ' && line[i] != '\t') {
            return false;
        }
    }
    return true;
}

static bool parse_count(const char *s, size_t len, double *out)
{
    char tmp[64];
    while (len > 0 && (s[0] == ' ' || s[0] == '"')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '"')) {
        len--;
    }
    if (len == 0 || len >= sizeof(tmp)) {
        return false;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        char c = tmp[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
            return false;
        }
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(tmp, &end);
    if (end != tmp + len || errno != 0 || !isfinite(v) || v < 0) {
        return false;
    }
    *out = v;
    return true;
}

typedef struct {
    int64_t *ts;
    double *v;
    uint64_t *line;
    size_t n, cap;
} rows;

static cf_err rows_push(rows *r, int64_t ts, double v, uint64_t line)
{
    if (r->n == r->cap) {
        size_t nc = r->cap == 0 ? 1024 : r->cap * 2;
        int64_t *nt = cf_realloc(r->ts, nc * sizeof(*nt));
        if (nt == NULL) {
            return CF_E_NOMEM;
        }
        r->ts = nt;
        double *nv = cf_realloc(r->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return CF_E_NOMEM;
        }
        r->v = nv;
        uint64_t *nl = cf_realloc(r->line, nc * sizeof(*nl));
        if (nl == NULL) {
            return CF_E_NOMEM;
        }
        r->line = nl;
        r->cap = nc;
    }
    r->ts[r->n] = ts;
    r->v[r->n] = v;
    r->line[r->n] = line;
    r->n++;
    return CF_OK;
}

static void rows_free(rows *r)
{
    cf_free(r->ts);
    cf_free(r->v);
    cf_free(r->line);
}

static cf_err trace_alloc(cf_trace **out, size_t n, int64_t start_ms, int64_t interval_ms)
{
    cf_trace *t = cf_calloc(1, sizeof(*t));
    if (t == NULL) {
        return CF_E_NOMEM;
    }
    t->v = cf_calloc(n > 0 ? n : 1, sizeof(double));
    if (t->v == NULL) {
        cf_free(t);
        return CF_E_NOMEM;
    }
    t->n = n;
    t->start_ms = start_ms;
    t->interval_ms = interval_ms;
    *out = t;
    return CF_OK;
}

cf_err cf_trace_parse(cf_trace **out, const char *buf, size_t len, const char *name, double step_s,
                      char *errstr, size_t errstr_size)
{
    CF_ASSERT(out != NULL && (buf != NULL || len == 0));
    cf_err err = CF_OK;
    rows r = {0};
    cf_trace *t = NULL;
    const char *p = buf, *end = buf + len;
    const char *line;
    size_t ll;
    uint64_t line_no = 0;
    bool step_mode = false;
    if (name == NULL) {
        name = "trace";
    }
    if (step_s <= 0) {
        step_s = 3600;
    }
    /* Header: required, its first column name decides between timestamps and steps. */
    if (!next_line(&p, end, &line, &ll) || blank(line, ll)) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                         "%s:1: empty file: a header line (e.g. ts,count) comes first", name);
        goto out;
    }
    line_no = 1;
    {
        const char *h;
        size_t hl;
        field(line, ll, 0, &h, &hl);
        while (hl > 0 && (*h == ' ' || *h == '"')) {
            h++;
            hl--;
        }
        while (hl > 0 && (h[hl - 1] == ' ' || h[hl - 1] == '"')) {
            hl--;
        }
        step_mode = hl == 4 && strncmp(h, "step", 4) == 0;
        int64_t probe;
        if (cf_scale_parse_ts(h, hl, &probe) == CF_OK) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:1: the first line must be a header (e.g. ts,count), "
                             "found a timestamp",
                             name);
            goto out;
        }
    }
    while (next_line(&p, end, &line, &ll)) {
        line_no++;
        if (blank(line, ll)) {
            continue;
        }
        if (ll > LINE_MAX_BYTES) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s:%llu: line longer than %d bytes",
                             name, (unsigned long long)line_no, LINE_MAX_BYTES);
            goto out;
        }
        const char *f0, *f1;
        size_t l0, l1;
        field(line, ll, 0, &f0, &l0);
        if (!field(line, ll, 1, &f1, &l1)) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: expected two columns, timestamp and count", name,
                             (unsigned long long)line_no);
            goto out;
        }
        int64_t ts;
        if (step_mode) {
            int64_t step_ms;
            if (cf_scale_parse_ts(f0, l0, &step_ms) != CF_OK || step_ms % 1000 != 0 ||
                step_ms < 0) {
                err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                 "%s:%llu: step '%.*s' is not a non-negative integer", name,
                                 (unsigned long long)line_no, (int)(l0 < 40 ? l0 : 40), f0);
                goto out;
            }
            double tsd = (double)(step_ms / 1000) * step_s * 1000.0;
            if (tsd > 9e15) {
                err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s:%llu: step too large", name,
                                 (unsigned long long)line_no);
                goto out;
            }
            ts = (int64_t)llround(tsd);
        } else if (cf_scale_parse_ts(f0, l0, &ts) != CF_OK) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: bad timestamp '%.*s' (RFC 3339, 'YYYY-MM-DD HH:MM:SS' "
                             "UTC, or epoch seconds)",
                             name, (unsigned long long)line_no, (int)(l0 < 40 ? l0 : 40), f0);
            goto out;
        }
        double v;
        if (!parse_count(f1, l1, &v)) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: bad count '%.*s' (a non-negative number)", name,
                             (unsigned long long)line_no, (int)(l1 < 40 ? l1 : 40), f1);
            goto out;
        }
        if (r.n > 0 && ts <= r.ts[r.n - 1]) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: timestamp %s the one on line %llu (rows must be in "
                             "increasing time order)",
                             name, (unsigned long long)line_no,
                             ts == r.ts[r.n - 1] ? "repeats" : "is before",
                             (unsigned long long)r.line[r.n - 1]);
            goto out;
        }
        if (r.n >= CF_TRACE_POINTS_MAX) {
            err = cf_err_set(CF_E_LIMIT, errstr, errstr_size, "%s:%llu: more than %u rows", name,
                             (unsigned long long)line_no, CF_TRACE_POINTS_MAX);
            goto out;
        }
        err = rows_push(&r, ts, v, line_no);
        if (err != CF_OK) {
            goto out;
        }
    }
    if (r.n < 2) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                         "%s: %zu data row(s): a trace needs at least 2 to have an interval", name,
                         r.n);
        goto out;
    }
    int64_t iv = INT64_MAX;
    for (size_t i = 1; i < r.n; i++) {
        int64_t d = r.ts[i] - r.ts[i - 1];
        if (d < iv) {
            iv = d;
        }
    }
    if (iv < INTERVAL_MIN_MS || iv > INTERVAL_MAX_MS) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                         "%s: interval %lld ms outside 1 ms .. 1 day", name, (long long)iv);
        goto out;
    }
    for (size_t i = 1; i < r.n; i++) {
        int64_t d = r.ts[i] - r.ts[i - 1];
        if (d % iv != 0) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: %lld ms after the previous row, not a multiple of the "
                             "trace's interval (%lld ms): the series is not regular",
                             name, (unsigned long long)r.line[i], (long long)d, (long long)iv);
            goto out;
        }
    }
    int64_t span = (r.ts[r.n - 1] - r.ts[0]) / iv + 1;
    if (span > (int64_t)CF_TRACE_POINTS_MAX) {
        err = cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                         "%s: %lld intervals once gaps are filled, more than %u", name,
                         (long long)span, CF_TRACE_POINTS_MAX);
        goto out;
    }
    err = trace_alloc(&t, (size_t)span, r.ts[0], iv);
    if (err != CF_OK) {
        goto out;
    }
    for (size_t i = 0; i < r.n; i++) {
        t->v[(r.ts[i] - r.ts[0]) / iv] = r.v[i];
    }
    t->filled = (size_t)span - r.n;
    *out = t;
    t = NULL;
out:
    rows_free(&r);
    cf_trace_destroy(t);
    return err;
}

cf_err cf_trace_load(cf_trace **out, const char *path, double step_s, char *errstr,
                     size_t errstr_size)
{
    char *buf = NULL;
    size_t len = 0;
    cf_err err = slurp(path, &buf, &len, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    err = cf_trace_parse(out, buf, len, path, step_s, errstr, errstr_size);
    cf_free(buf);
    return err;
}

cf_err cf_trace_from_arrivals(cf_trace **out, const char *path, unsigned column, double interval_s,
                              char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    char *buf = NULL;
    size_t len = 0;
    double *cnt = NULL;
    size_t n = 0, cap = 0;
    int64_t start = 0;
    bool have = false;
    if (column < 1 || !(interval_s >= 0.001 && interval_s <= 86400)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "arrivals: column must be >= 1 and the interval 0.001..86400 s");
    }
    int64_t iv = (int64_t)llround(interval_s * 1000.0);
    err = slurp(path, &buf, &len, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    const char *p = buf, *end = buf + len, *line;
    size_t ll;
    uint64_t line_no = 0;
    if (!next_line(&p, end, &line, &ll)) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s:1: empty file", path);
        goto out;
    }
    line_no = 1; /* the header */
    while (next_line(&p, end, &line, &ll)) {
        line_no++;
        if (blank(line, ll)) {
            continue;
        }
        const char *f;
        size_t fl;
        int64_t ts;
        if (!field(line, ll, column - 1, &f, &fl) || cf_scale_parse_ts(f, fl, &ts) != CF_OK) {
            err =
                cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s:%llu: column %u is not a timestamp",
                           path, (unsigned long long)line_no, column);
            goto out;
        }
        if (!have) {
            start = (ts >= 0 ? ts / iv : -((-ts + iv - 1) / iv)) * iv;
            have = true;
        }
        if (ts < start) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                             "%s:%llu: event before the first interval (arrivals must be "
                             "roughly in time order)",
                             path, (unsigned long long)line_no);
            goto out;
        }
        int64_t bin = (ts - start) / iv;
        if (bin >= (int64_t)CF_TRACE_POINTS_MAX) {
            err = cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                             "%s:%llu: more than %u intervals after the first event", path,
                             (unsigned long long)line_no, CF_TRACE_POINTS_MAX);
            goto out;
        }
        if ((size_t)bin >= cap) {
            size_t nc = cap == 0 ? 1024 : cap;
            while (nc <= (size_t)bin) {
                nc *= 2;
            }
            double *nb = cf_realloc(cnt, nc * sizeof(*nb));
            if (nb == NULL) {
                err = CF_E_NOMEM;
                goto out;
            }
            memset(nb + cap, 0, (nc - cap) * sizeof(*nb));
            cnt = nb;
            cap = nc;
        }
        cnt[bin] += 1;
        if ((size_t)bin + 1 > n) {
            n = (size_t)bin + 1;
        }
    }
    if (n < 2) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                         "%s: the events span fewer than 2 intervals of %g s", path, interval_s);
        goto out;
    }
    err = cf_trace_create(out, cnt, n, start, iv);
out:
    cf_free(cnt);
    cf_free(buf);
    return err;
}

cf_err cf_trace_create(cf_trace **out, const double *values, size_t n, int64_t start_ms,
                       int64_t interval_ms)
{
    CF_ASSERT(out != NULL && (values != NULL || n == 0));
    if (interval_ms < INTERVAL_MIN_MS || interval_ms > INTERVAL_MAX_MS || n > CF_TRACE_POINTS_MAX) {
        return CF_E_INVAL;
    }
    cf_trace *t;
    cf_err err = trace_alloc(&t, n, start_ms, interval_ms);
    if (err != CF_OK) {
        return err;
    }
    if (n > 0) {
        memcpy(t->v, values, n * sizeof(double));
    }
    *out = t;
    return CF_OK;
}

void cf_trace_destroy(cf_trace *t)
{
    if (t == NULL) {
        return;
    }
    cf_free(t->v);
    cf_free(t);
}

size_t cf_trace_len(const cf_trace *t)
{
    return t->n;
}

const double *cf_trace_values(const cf_trace *t)
{
    return t->v;
}

int64_t cf_trace_start_ms(const cf_trace *t)
{
    return t->start_ms;
}

int64_t cf_trace_interval_ms(const cf_trace *t)
{
    return t->interval_ms;
}

size_t cf_trace_filled(const cf_trace *t)
{
    return t->filled;
}

void cf_trace_format_ts(const cf_trace *t, size_t i, char *buf, size_t n)
{
    int64_t ms = t->start_ms + (int64_t)i * t->interval_ms;
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int64_t frac = ms - sec * 1000;
    int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
    int64_t rem = sec - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (frac != 0) {
        snprintf(buf, n, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
                 (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
    } else {
        snprintf(buf, n, "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m, d, (int)(rem / 3600),
                 (int)(rem / 60 % 60), (int)(rem % 60));
    }
}

cf_err cf_trace_write(const cf_trace *t, const char *path, char *errstr, size_t errstr_size)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "path too long");
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot create %s", tmp);
    }
    fprintf(f, "ts,count\n");
    char ts[48];
    for (size_t i = 0; i < t->n; i++) {
        cf_trace_format_ts(t, i, ts, sizeof(ts));
        fprintf(f, "%s,%.17g\n", ts, t->v[i]);
    }
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        e = ok ? errno : e;
        unlink(tmp);
        return cf_err_errno(e, errstr, errstr_size, "cannot write %s", path);
    }
    return CF_OK;
}

void cf_trace_add_noise(cf_trace *t, uint64_t seed)
{
    cf__rng r = {seed};
    for (size_t i = 0; i < t->n; i++) {
        t->v[i] = cf__rng_poisson(&r, t->v[i]);
    }
}

/* ---- PRNG helpers -------------------------------------------------------------------------- */

double cf__rng_poisson(cf__rng *r, double mean)
{
    if (!(mean > 0)) {
        return 0;
    }
    if (mean < 30) {
        double l = exp(-mean), p = 1.0;
        double k = 0;
        for (;;) {
            p *= cf__rng_unit(r);
            if (p <= l) {
                return k;
            }
            k += 1;
        }
    }
    /* PTRS: transformed rejection with squeeze (Hormann, 1993). */
    double slam = sqrt(mean), loglam = log(mean);
    double b = 0.931 + 2.53 * slam;
    double a = -0.059 + 0.02483 * b;
    double invalpha = 1.1239 + 1.1328 / (b - 3.4);
    double vr = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
        double u = cf__rng_unit(r) - 0.5;
        double v = cf__rng_unit(r);
        double us = 0.5 - fabs(u);
        double k = floor((2 * a / us + b) * u + mean + 0.43);
        if (us >= 0.07 && v <= vr) {
            return k;
        }
        if (k < 0 || (us < 0.013 && v > us)) {
            continue;
        }
        if (log(v) + log(invalpha) - log(a / (us * us) + b) <= -mean + k * loglam - lgamma(k + 1)) {
            return k;
        }
    }
}
