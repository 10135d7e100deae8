/*
 * Results encoding (NDJSON, CSV) and the atomically published results file.
 *
 * Encoders write into a caller buffer and return 0 when it is too small (never a partial
 * line). The file writer fsyncs the data, renames PATH.tmp over PATH and fsyncs the
 * directory, so a reader sees the old file or the complete new one, never a torn one.
 * No shared state: any thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "confide/core.h"
#include "confide/window.h"

size_t cf_window_format_time(int64_t us, char *buf, size_t size)
{
    int64_t sec = us / 1000000;
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    int n;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        n = snprintf(buf, size, "%" PRId64, us); /* outside RFC 3339: raw microseconds */
    } else if (frac == 0) {
        n = snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    } else {
        n = snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    }
    if (n < 0 || (size_t)n >= size) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return (size_t)n;
}

void cf_window_row_from_plain(const cf_window_result *r, const char *group, bool verified,
                              cf_window_row *row)
{
    const cf_window_plain *v = r->value;
    memset(row, 0, sizeof(*row)); /* optional fields (group_json, currency, ...) unset */
    row->window_start_us = r->window_start_us;
    row->window_end_us = r->window_end_us;
    row->group = group;
    row->count = r->count;
    row->sum_minor = v->overflow ? 0 : v->sum_minor;
    row->sum_valid = v->overflow == 0;
    row->verified = verified;
    row->first_index = r->first_index;
    row->last_index = r->last_index;
}

/* Appends s as a JSON string; false when it does not fit. */
static bool json_str(char *buf, size_t size, size_t *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (*o + 1 >= size) {
        return false;
    }
    buf[(*o)++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != 0; p++) {
        char esc[7];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            n = 6;
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (*o + n + 1 >= size) {
            return false;
        }
        memcpy(buf + *o, esc, n);
        *o += n;
    }
    if (*o + 1 >= size) {
        return false;
    }
    buf[(*o)++] = '"';
    buf[*o] = '\0';
    return true;
}

size_t cf_window_row_ndjson(const cf_window_row *row, char *buf, size_t size)
{
    char ts[40], te[40], sum[32];
    size_t o = 0;
    cf_window_format_time(row->window_start_us, ts, sizeof(ts));
    cf_window_format_time(row->window_end_us, te, sizeof(te));
    if (row->sum_valid) {
        snprintf(sum, sizeof(sum), "%" PRId64, row->sum_minor);
    } else {
        snprintf(sum, sizeof(sum), "null");
    }
    bool ok =
        cf_appendf(buf, size, &o, "{\"window_start\":\"%s\",\"window_end\":\"%s\",\"group\":", ts,
                   te) &&
        (row->group_json != NULL ? cf_appendf(buf, size, &o, "%s", row->group_json)
                                 : json_str(buf, size, &o, row->group != NULL ? row->group : "")) &&
        (row->currency == NULL ||
         (cf_appendf(buf, size, &o, ",\"currency\":") && json_str(buf, size, &o, row->currency))) &&
        cf_appendf(buf, size, &o,
                   ",\"count\":%" PRIu64
                   ",\"sum_minor\":%s,\"verified\":%s,\"first_index\":%" PRIu64
                   ",\"last_index\":%" PRIu64 "%s",
                   row->count, sum, row->verified ? "true" : "false", row->first_index,
                   row->last_index, row->sum_valid ? "" : ",\"error\":\"overflow\"") &&
        (row->key_epoch == 0 ||
         cf_appendf(buf, size, &o, ",\"key_epoch\":%" PRIu32, row->key_epoch)) &&
        cf_appendf(buf, size, &o, "}\n");
    if (!ok) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return o;
}

size_t cf_window_late_ndjson(const cf_window_late *l, const char *group, char *buf, size_t size)
{
    char ts[40], wm[40];
    size_t o = 0;
    cf_window_format_time(l->ts_us, ts, sizeof(ts));
    if (l->watermark_us == INT64_MIN) {
        snprintf(wm, sizeof(wm), "none");
    } else {
        cf_window_format_time(l->watermark_us, wm, sizeof(wm));
    }
    bool ok =
        cf_appendf(buf, size, &o,
                   "{\"seq\":%" PRIu64 ",\"ts\":\"%s\",\"watermark\":\"%s\",\"reason\":\"%s\","
                   "\"windows_dropped\":%" PRIu32 ",\"windows_total\":%" PRIu32,
                   l->seq, ts, wm, cf_window_late_reason_name(l->reason), l->windows_dropped,
                   l->windows_total);
    if (group != NULL) {
        ok = ok && cf_appendf(buf, size, &o, ",\"group\":") && json_str(buf, size, &o, group);
    }
    ok = ok && cf_appendf(buf, size, &o, "}\n");
    if (!ok) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return o;
}

const char *cf_window_csv_header(void)
{
    return "window_start,window_end,group,count,sum_minor,verified,first_index,last_index\n";
}

size_t cf_window_row_csv(const cf_window_row *row, char *buf, size_t size)
{
    char ts[40], te[40], sum[32];
    size_t o = 0;
    cf_window_format_time(row->window_start_us, ts, sizeof(ts));
    cf_window_format_time(row->window_end_us, te, sizeof(te));
    if (row->sum_valid) {
        snprintf(sum, sizeof(sum), "%" PRId64, row->sum_minor);
    } else {
        sum[0] = '\0'; /* empty field: overflow */
    }
    bool ok;
    if (row->group_csv != NULL) {
        /* one column per group field (the header comes from cf_window_csv_header_for) */
        ok = cf_appendf(buf, size, &o,
                        "%s,%s,%s,%" PRIu64 ",%s,%s,%" PRIu64 ",%" PRIu64 ",%" PRIu32 "\n", ts, te,
                        row->group_csv, row->count, sum, row->verified ? "true" : "false",
                        row->first_index, row->last_index, row->key_epoch);
    } else {
        ok = cf_appendf(buf, size, &o, "%s,%s,\"", ts, te);
        for (const char *p = row->group != NULL ? row->group : ""; ok && *p != '\0'; p++) {
            ok =
                *p == '"' ? cf_appendf(buf, size, &o, "\"\"") : cf_appendf(buf, size, &o, "%c", *p);
        }
        ok = ok &&
             cf_appendf(buf, size, &o, "\",%" PRIu64 ",%s,%s,%" PRIu64 ",%" PRIu64 "\n", row->count,
                        sum, row->verified ? "true" : "false", row->first_index, row->last_index);
    }
    if (!ok) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return o;
}

/* ---- atomically published file ---------------------------------------------------------- */

struct cf_window_file {
    FILE *f;
    char *path;
    char *tmp;
    bool failed;
    int saved_errno;
};

cf_err cf_window_file_open(cf_window_file **out, const char *path, const char *header, char *errstr,
                           size_t errstr_size)
{
    cf_err err;
    int fd = -1;
    cf_window_file *f = cf_calloc(1, sizeof(*f));
    if (f == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
    }
    size_t n = strlen(path);
    f->path = cf_strdup(path);
    f->tmp = cf_malloc(n + 5);
    if (f->path == NULL || f->tmp == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    memcpy(f->tmp, path, n);
    memcpy(f->tmp + n, ".tmp", 5);
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "open %s", f->tmp);
        goto fail;
    }
    f->f = fdopen(fd, "w");
    if (f->f == NULL) {
        err = cf_err_errno(errno, errstr, errstr_size, "fdopen %s", f->tmp);
        goto fail;
    }
    fd = -1;
    if (header != NULL) {
        err = cf_window_file_write(f, header, strlen(header));
        if (err != CF_OK) {
            cf_err_errno(f->saved_errno, errstr, errstr_size, "write %s", f->tmp);
            goto fail;
        }
    }
    *out = f;
    return CF_OK;
fail:
    if (fd >= 0) {
        close(fd);
    }
    cf_window_file_destroy(f);
    return err;
}

cf_err cf_window_file_write(cf_window_file *f, const char *data, size_t len)
{
    if (f->failed) {
        return CF_E_IO;
    }
    if (len > 0 && fwrite(data, 1, len, f->f) != len) {
        f->failed = true;
        f->saved_errno = errno;
        return CF_E_IO;
    }
    return CF_OK;
}

cf_err cf_window_file_commit(cf_window_file *f, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    if (f->failed) {
        err = cf_err_errno(f->saved_errno, errstr, errstr_size, "write %s", f->tmp);
        goto out;
    }
    if (fflush(f->f) != 0 || fsync(fileno(f->f)) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "flush %s", f->tmp);
        goto out;
    }
    FILE *fp = f->f;
    f->f = NULL;
    if (fclose(fp) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "close %s", f->tmp);
        goto out;
    }
    if (rename(f->tmp, f->path) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "rename %s", f->tmp);
        goto out;
    }
    /* Make the rename itself durable. */
    char *slash = strrchr(f->path, '/');
    char dir[4096];
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == f->path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - f->path), f->path);
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* some filesystems refuse fsync on directories; the data is safe */
        close(dfd);
    }
    cf_free(f->tmp);
    f->tmp = NULL; /* committed: nothing to remove */
out:
    cf_window_file_destroy(f);
    return err;
}

void cf_window_file_destroy(cf_window_file *f)
{
    if (f == NULL) {
        return;
    }
    if (f->f != NULL) {
        fclose(f->f);
    }
    if (f->tmp != NULL) {
        unlink(f->tmp);
    }
    cf_free(f->tmp);
    cf_free(f->path);
    cf_free(f);
}
