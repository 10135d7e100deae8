/*
 * Group keys for the window operator: the selected fields of a plaintext cf_event, each
 * followed by a 0x00 byte. Ids are NUL-terminated strings, so they cannot contain 0x00 and
 * the encoding is injective. Bounded by CF_WINDOW_GROUP_KEY_MAX; no allocation; any thread.
 */
#include <stdbool.h>
#include <string.h>

#include "confide/window.h"

static const struct {
    const char *name;
    unsigned bit;
} fields[] = {
    {"merchant", CF_GROUP_MERCHANT}, {"account", CF_GROUP_ACCOUNT}, {"country", CF_GROUP_COUNTRY},
    {"channel", CF_GROUP_CHANNEL},   {"type", CF_GROUP_TYPE},       {"currency", CF_GROUP_CURRENCY},
};

cf_err cf_window_group_parse(const char *s, unsigned *mask, char *errstr, size_t errstr_size)
{
    unsigned m = 0;
    const char *p = s;
    if (strcmp(s, "none") == 0) {
        *mask = 0;
        return CF_OK;
    }
    while (*p != '\0') {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        const char *q = p;
        while (*q != '\0' && *q != ',' && *q != ' ') {
            q++;
        }
        size_t n = (size_t)(q - p);
        bool found = false;
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (strlen(fields[i].name) == n && memcmp(fields[i].name, p, n) == 0) {
                if (m & fields[i].bit) {
                    return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                      "group_by: field '%.*s' listed twice", (int)n, p);
                }
                m |= fields[i].bit;
                found = true;
            }
        }
        if (!found) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "group_by: unknown field '%.*s' (expected merchant, account, "
                              "country, channel, type or currency)",
                              (int)(n > 32 ? 32 : n), p);
        }
        p = q;
    }
    *mask = m;
    return CF_OK;
}

static bool put(uint8_t *buf, size_t size, size_t *at, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (*at + n + 1 > size) {
        return false;
    }
    memcpy(buf + *at, s, n);
    buf[*at + n] = 0;
    *at += n + 1;
    return true;
}

size_t cf_window_group_key(unsigned mask, const cf_event *ev, uint8_t *buf, size_t size)
{
    size_t at = 0;
    bool ok = true;
    if (mask & CF_GROUP_MERCHANT) {
        ok = ok && put(buf, size, &at, ev->merchant, CF_ID_MAX);
    }
    if (mask & CF_GROUP_ACCOUNT) {
        ok = ok && put(buf, size, &at, ev->account, CF_ID_MAX);
    }
    if (mask & CF_GROUP_COUNTRY) {
        ok = ok && put(buf, size, &at, ev->country, 2);
    }
    if (mask & CF_GROUP_CHANNEL) {
        const char *n = cf_channel_name((cf_channel)ev->channel);
        n = n != NULL ? n : "?";
        ok = ok && put(buf, size, &at, n, 16);
    }
    if (mask & CF_GROUP_TYPE) {
        const char *n = cf_tx_type_name((cf_tx_type)ev->type);
        n = n != NULL ? n : "?";
        ok = ok && put(buf, size, &at, n, 16);
    }
    if (mask & CF_GROUP_CURRENCY) {
        ok = ok && put(buf, size, &at, ev->currency, 3);
    }
    return ok ? at : 0;
}

size_t cf_window_group_text(const uint8_t *key, size_t len, char *buf, size_t size)
{
    if (size == 0) {
        return 0;
    }
    size_t o = 0;
    if (len == 0) {
        buf[0] = '*';
        o = size > 1 ? 1 : 0;
        buf[o] = '\0';
        return o;
    }
    size_t end = len;
    if (key[len - 1] == 0) {
        end = len - 1; /* the last field's terminator */
    }
    for (size_t i = 0; i < end && o + 1 < size; i++) {
        buf[o++] = key[i] == 0 ? '|' : (char)key[i];
    }
    buf[o] = '\0';
    return o;
}

/* Calls @p fn for each field of a key built with @p mask: its name and its value bytes. */
typedef bool (*field_fn)(void *opaque, const char *name, const uint8_t *v, size_t n);
static bool each_field(unsigned mask, const uint8_t *key, size_t len, field_fn fn, void *opaque)
{
    size_t at = 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if ((mask & fields[i].bit) == 0) {
            continue;
        }
        const uint8_t *z = at < len ? memchr(key + at, 0, len - at) : NULL;
        if (z == NULL) {
            return false;
        }
        size_t n = (size_t)(z - (key + at));
        if (!fn(opaque, fields[i].name, key + at, n)) {
            return false;
        }
        at += n + 1;
    }
    return true;
}

typedef struct out {
    char *buf;
    size_t size, o;
    bool first;
} out;

static bool emit(out *w, const char *s, size_t n)
{
    if (w->o + n + 1 > w->size) {
        return false;
    }
    memcpy(w->buf + w->o, s, n);
    w->o += n;
    w->buf[w->o] = '\0';
    return true;
}

static bool json_member(void *opaque, const char *name, const uint8_t *v, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    out *w = opaque;
    bool ok = emit(w, w->first ? "\"" : ",\"", w->first ? 1 : 2) && emit(w, name, strlen(name)) &&
              emit(w, "\":\"", 3);
    w->first = false;
    for (size_t i = 0; ok && i < n; i++) {
        uint8_t c = v[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ok = emit(w, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ok = emit(w, e, 6);
        } else {
            ok = emit(w, (const char *)&c, 1); /* ids are valid UTF-8: bytes pass through */
        }
    }
    return ok && emit(w, "\"", 1);
}

size_t cf_window_group_json(unsigned mask, const uint8_t *key, size_t len, char *buf, size_t size)
{
    out w = {buf, size, 0, true};
    bool ok = emit(&w, "{", 1) && each_field(mask, key, len, json_member, &w) && emit(&w, "}", 1);
    return ok ? w.o : 0;
}

static bool csv_field(void *opaque, const char *name, const uint8_t *v, size_t n)
{
    (void)name;
    out *w = opaque;
    bool ok = emit(w, w->first ? "\"" : ",\"", w->first ? 1 : 2);
    w->first = false;
    for (size_t i = 0; ok && i < n; i++) {
        ok = v[i] == '"' ? emit(w, "\"\"", 2) : emit(w, (const char *)&v[i], 1);
    }
    return ok && emit(w, "\"", 1);
}

size_t cf_window_group_csv(unsigned mask, const uint8_t *key, size_t len, char *buf, size_t size)
{
    out w = {buf, size, 0, true};
    if (size > 0) {
        buf[0] = '\0';
    }
    return each_field(mask, key, len, csv_field, &w) ? w.o : 0;
}

static bool currency_of(void *opaque, const char *name, const uint8_t *v, size_t n)
{
    if (strcmp(name, "currency") == 0 && n < 4) {
        memcpy(opaque, v, n);
        ((char *)opaque)[n] = '\0';
    }
    return true;
}

void cf_window_group_currency(unsigned mask, const uint8_t *key, size_t len, char cur[4])
{
    cur[0] = '\0';
    each_field(mask, key, len, currency_of, cur);
}

size_t cf_window_csv_header_for(unsigned mask, char *buf, size_t size)
{
    out w = {buf, size, 0, true};
    bool ok = emit(&w, "window_start,window_end", 23);
    for (size_t i = 0; ok && i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (mask & fields[i].bit) {
            ok = emit(&w, ",", 1) && emit(&w, fields[i].name, strlen(fields[i].name));
        }
    }
    const char *tail = ",count,sum_minor,verified,first_index,last_index,key_epoch\n";
    ok = ok && emit(&w, tail, strlen(tail));
    return ok ? w.o : 0;
}
