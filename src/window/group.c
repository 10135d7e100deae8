/*
 * Group keys for the window operator: the selected fields of a plaintext cf_event, each
 * followed by a 0x00 byte. Ids are NUL-terminated strings, so they cannot contain 0x00 and
 * the encoding is injective. Bounded by CF_WINDOW_GROUP_KEY_MAX; no allocation; any thread.
 */
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
