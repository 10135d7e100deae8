/*
 * Dead-letter records: one NDJSON line per rejected input record.
 *
 * Purpose: {"source":S,"line":N,"offset":N,"reason":S,"raw":S,"raw_truncated":bool} so an
 * operator can find and replay what was refused. raw keeps at most CF_DEADLETTER_RAW_MAX
 * bytes of the record, cut on a character boundary; bytes that are not valid UTF-8 are
 * escaped, so the line is always valid JSON whatever the input was.
 *
 * Bounds: writes only within the caller's buffer; 0 when it does not fit whole (a buffer of
 * CF_DEADLETTER_RAW_MAX * 6 + 512 bytes fits any reason and a source path of ~100 bytes).
 * Threads: reentrant.
 */
#include <stdio.h>
#include <string.h>

#include "io_int.h"

/* Appends the quoted string; false when it does not fit. */
static bool put_quoted(char *buf, size_t size, size_t *o, const char *s, size_t n)
{
    if (*o + 2 > size) {
        return false;
    }
    buf[(*o)++] = '"';
    size_t consumed;
    *o += cf__io_json_escape(s, n, buf + *o, size - *o, &consumed);
    if (consumed < n || *o + 1 > size) {
        return false;
    }
    buf[(*o)++] = '"';
    return true;
}

static bool put_text(char *buf, size_t size, size_t *o, const char *s)
{
    size_t n = strlen(s);
    if (*o + n > size) {
        return false;
    }
    memcpy(buf + *o, s, n);
    *o += n;
    return true;
}

size_t cf_deadletter_format(const char *source, const cf_record *rec, const char *reason, char *buf,
                            size_t size)
{
    return cf_deadletter_format_ex(source, rec, reason, true, buf, size);
}

size_t cf_deadletter_format_ex(const char *source, const cf_record *rec, const char *reason,
                               bool with_raw, char *buf, size_t size)
{
    if (buf == NULL || size == 0) {
        return 0;
    }
    buf[0] = '\0';
    if (rec == NULL) {
        return 0;
    }
    const char *raw = rec->data != NULL ? rec->data : "";
    size_t raw_len = rec->data != NULL ? rec->len : 0;
    bool truncated = rec->too_long;
    if (raw_len > CF_DEADLETTER_RAW_MAX) {
        raw_len = CF_DEADLETTER_RAW_MAX;
        truncated = true;
        /* Do not cut a multi-byte character in two. */
        for (int k = 0; k < 3 && raw_len > 0 && ((unsigned char)raw[raw_len] & 0xC0) == 0x80; k++) {
            raw_len--;
        }
    }
    const size_t cap = size - 1; /* room for the NUL */
    size_t o = 0;
    char num[64];
    bool ok =
        put_text(buf, cap, &o, "{\"source\":") &&
        put_quoted(buf, cap, &o, source != NULL ? source : "", source != NULL ? strlen(source) : 0);
    if (ok) {
        snprintf(num, sizeof(num),
                 ",\"line\":%llu,\"offset\":%llu,\"reason\":", (unsigned long long)rec->line,
                 (unsigned long long)rec->offset);
        ok = put_text(buf, cap, &o, num) &&
             put_quoted(buf, cap, &o, reason != NULL ? reason : "",
                        reason != NULL ? strlen(reason) : 0) &&
             (with_raw
                  ? put_text(buf, cap, &o, ",\"raw\":") && put_quoted(buf, cap, &o, raw, raw_len) &&
                        put_text(buf, cap, &o,
                                 truncated ? ",\"raw_truncated\":true}\n"
                                           : ",\"raw_truncated\":false}\n")
                  : put_text(buf, cap, &o, "}\n"));
    }
    if (!ok) {
        buf[0] = '\0';
        return 0;
    }
    buf[o] = '\0';
    return o;
}
