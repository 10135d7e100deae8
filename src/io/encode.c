/*
 * Canonical encoders: CSV and NDJSON lines for a cf_event, and JSON string quoting.
 *
 * Purpose: the inverse of the decoders (docs/schema.md). ts is written as RFC 3339 UTC with
 * microseconds, the amount as a decimal with the currency's exponent, CSV fields are quoted
 * when they hold ',', '"', CR or LF. decode(encode(ev)) == ev for every valid event, which
 * the unit tests check on awkward ids.
 *
 * Bounds: writes only within the caller's buffer; returns 0 (and writes an empty string)
 * when it is too small or the event cannot be encoded (unknown currency, type or channel,
 * ts outside years 0000..9999). Threads: reentrant.
 */
#include <string.h>

#include "io_int.h"

typedef struct {
    char *p;
    char *end; /* one byte is kept for the NUL */
    bool ovf;
} wbuf;

static inline void put(wbuf *w, const char *s, size_t n)
{
    if (w->ovf || (size_t)(w->end - w->p) < n) {
        w->ovf = true;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static inline void putc1(wbuf *w, char c)
{
    if (w->ovf || w->p >= w->end) {
        w->ovf = true;
        return;
    }
    *w->p++ = c;
}

static void put_u64(wbuf *w, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n] = (char)('0' + v % 10u);
        v /= 10u;
        n++;
    } while (v != 0);
    put(w, tmp + sizeof(tmp) - n, n);
}

static void put_json_string(wbuf *w, const char *s, size_t n)
{
    putc1(w, '"');
    if (w->ovf) {
        return;
    }
    size_t consumed = 0;
    size_t wrote = cf__io_json_escape(s, n, w->p, (size_t)(w->end - w->p), &consumed);
    w->p += wrote;
    if (consumed < n) {
        w->ovf = true;
        return;
    }
    putc1(w, '"');
}

static void put_csv_field(wbuf *w, const char *s, size_t n)
{
    bool quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        char c = s[i];
        quote = c == ',' || c == '"' || c == '\r' || c == '\n';
    }
    if (!quote) {
        put(w, s, n);
        return;
    }
    putc1(w, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            putc1(w, '"');
        }
        putc1(w, s[i]);
    }
    putc1(w, '"');
}

static size_t finish(wbuf *w, char *buf, size_t size)
{
    if (w->ovf) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    *w->p = '\0';
    return (size_t)(w->p - buf);
}

/* The parts of an event every encoder needs; false when it cannot be encoded. */
typedef struct {
    char ts[32];
    char amount[48];
    size_t ts_len, amount_len;
    const char *type, *channel;
} parts;

static bool event_parts(const cf_event *ev, parts *pt)
{
    int exp = cf_currency_exponent(ev->currency);
    pt->type = cf_tx_type_name((cf_tx_type)ev->type);
    pt->channel = cf_channel_name((cf_channel)ev->channel);
    if (exp < 0 || pt->type == NULL || pt->channel == NULL ||
        !cf_country_valid(ev->country, strnlen(ev->country, sizeof(ev->country)))) {
        return false;
    }
    pt->ts_len = cf__io_format_ts(ev->ts_us, pt->ts);
    pt->amount_len = cf_amount_format(ev->amount_minor, exp, pt->amount, sizeof(pt->amount));
    return pt->ts_len > 0 && pt->amount_len > 0;
}

const char *cf_csv_header(void)
{
    return "event_id,ts,account,merchant,amount,currency,type,country,channel,fraud,"
           "fraud_scenario\n";
}

size_t cf_event_to_csv(const cf_event *ev, char *buf, size_t size)
{
    if (buf == NULL || size == 0) {
        return 0;
    }
    wbuf w = {buf, buf + size - 1, false};
    parts pt;
    if (ev == NULL || !event_parts(ev, &pt)) {
        w.ovf = true;
        return finish(&w, buf, size);
    }
    put_u64(&w, ev->event_id);
    putc1(&w, ',');
    put(&w, pt.ts, pt.ts_len);
    putc1(&w, ',');
    put_csv_field(&w, ev->account, strnlen(ev->account, sizeof(ev->account)));
    putc1(&w, ',');
    put_csv_field(&w, ev->merchant, strnlen(ev->merchant, sizeof(ev->merchant)));
    putc1(&w, ',');
    put(&w, pt.amount, pt.amount_len);
    putc1(&w, ',');
    put(&w, ev->currency, 3);
    putc1(&w, ',');
    put(&w, pt.type, strlen(pt.type));
    putc1(&w, ',');
    put(&w, ev->country, 2);
    putc1(&w, ',');
    put(&w, pt.channel, strlen(pt.channel));
    putc1(&w, ',');
    if (ev->fraud >= 0) {
        put_u64(&w, (uint64_t)ev->fraud);
    }
    putc1(&w, ',');
    if (ev->fraud_scenario >= 0) {
        put_u64(&w, (uint64_t)ev->fraud_scenario);
    }
    putc1(&w, '\n');
    return finish(&w, buf, size);
}

size_t cf_event_to_ndjson(const cf_event *ev, char *buf, size_t size)
{
    if (buf == NULL || size == 0) {
        return 0;
    }
    wbuf w = {buf, buf + size - 1, false};
    parts pt;
    if (ev == NULL || !event_parts(ev, &pt)) {
        w.ovf = true;
        return finish(&w, buf, size);
    }
    put(&w, "{\"event_id\":", 12);
    put_u64(&w, ev->event_id);
    put(&w, ",\"ts\":\"", 7);
    put(&w, pt.ts, pt.ts_len);
    put(&w, "\",\"account\":", 12);
    put_json_string(&w, ev->account, strnlen(ev->account, sizeof(ev->account)));
    put(&w, ",\"merchant\":", 12);
    put_json_string(&w, ev->merchant, strnlen(ev->merchant, sizeof(ev->merchant)));
    put(&w, ",\"amount\":", 10);
    put(&w, pt.amount, pt.amount_len);
    put(&w, ",\"currency\":\"", 13);
    put(&w, ev->currency, 3);
    put(&w, "\",\"type\":\"", 10);
    put(&w, pt.type, strlen(pt.type));
    put(&w, "\",\"country\":\"", 13);
    put(&w, ev->country, 2);
    put(&w, "\",\"channel\":\"", 13);
    put(&w, pt.channel, strlen(pt.channel));
    putc1(&w, '"');
    if (ev->fraud >= 0) {
        put(&w, ",\"fraud\":", 9);
        put_u64(&w, (uint64_t)ev->fraud);
    }
    if (ev->fraud_scenario >= 0) {
        put(&w, ",\"fraud_scenario\":", 18);
        put_u64(&w, (uint64_t)ev->fraud_scenario);
    }
    put(&w, "}\n", 2);
    return finish(&w, buf, size);
}

/* ---- JSON strings ----------------------------------------------------------------------- */

size_t cf__io_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (len <= need || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t k = 2; k <= need; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return need + 1;
}

size_t cf__io_json_escape(const char *str, size_t len, char *out, size_t cap, size_t *consumed)
{
    static const char hexd[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t o = 0, i = 0;
    while (i < len) {
        unsigned c = s[i];
        char tmp[6];
        const char *src = tmp;
        size_t tn, in = 1;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            if (o == cap) {
                break;
            }
            out[o++] = (char)c;
            i++;
            continue;
        }
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tn = 2;
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            tmp[0] = '\\';
            tmp[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            tn = 2;
        } else if (c >= 0x80 && (in = cf__io_utf8_seq(s + i, len - i)) > 0) {
            src = (const char *)s + i;
            tn = in;
        } else {
            /* A control byte or a byte that is not part of valid UTF-8. */
            in = 1;
            tmp[0] = '\\';
            tmp[1] = 'u';
            tmp[2] = '0';
            tmp[3] = '0';
            tmp[4] = hexd[c >> 4];
            tmp[5] = hexd[c & 15];
            tn = 6;
        }
        if (cap - o < tn) {
            break;
        }
        memcpy(out + o, src, tn);
        o += tn;
        i += in;
    }
    *consumed = i;
    return o;
}

size_t cf_json_quote(const char *s, size_t len, char *buf, size_t size)
{
    if (buf == NULL || size < 3) {
        if (buf != NULL && size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    size_t consumed;
    buf[0] = '"';
    size_t n = 1 + cf__io_json_escape(s == NULL ? "" : s, s == NULL ? 0 : len, buf + 1, size - 3,
                                      &consumed);
    buf[n++] = '"';
    buf[n] = '\0';
    return n;
}
