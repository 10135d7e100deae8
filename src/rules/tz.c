/*
 * Named time zones for business days (daily_aggregate's time_zone): the system's IANA tz
 * database (TZif files under /usr/share/zoneinfo, or $TZDIR; Debian package tzdata), read
 * once when the rules load. Why not localtime_r: TZ is process-global state, and rules run
 * on the gateway thread next to others. Lookup is a binary search over the UTC instants at
 * which the offset changes; no allocation after load.
 *
 * Bounds: the file is at most 1 MiB and 100,000 transitions. Instants after the last
 * transition keep its offset: Debian's files are "fat" (explicit transitions until 2037);
 * the POSIX rule in the file's footer is not evaluated.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

#define TZ_FILE_MAX (1u << 20)
#define TZ_TRANS_MAX 100000u

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* A zone name is letters, digits, '_', '-', '+' and '/' between components; no "..". */
static bool name_ok(const char *n)
{
    if (n[0] == '\0' || n[0] == '/' || strstr(n, "..") != NULL || strlen(n) > 64) {
        return false;
    }
    for (const char *p = n; *p != '\0'; p++) {
        char c = *p;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '+' || c == '/';
        if (!ok) {
            return false;
        }
    }
    return true;
}

cf_err cf__tz_load(const char *name, cf__tz *tz, char *errstr, size_t errstr_size)
{
    memset(tz, 0, sizeof(*tz));
    if (!name_ok(name)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "time_zone '%s' is not an IANA zone name like Europe/Berlin", name);
    }
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s",
             dir != NULL && dir[0] != '\0' ? dir : "/usr/share/zoneinfo", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "time_zone '%s': not in the tz database (%s: %s; install tzdata)", name,
                          path, strerror(errno));
    }
    uint8_t *b = cf_malloc(TZ_FILE_MAX);
    size_t len = b != NULL ? fread(b, 1, TZ_FILE_MAX, f) : 0;
    fclose(f);
    cf_err err = CF_OK;
    /* Version 1 block (32-bit times) first; from version 2 on, a second header and block
     * with 64-bit times follow, which is the one used. */
    if (b == NULL) {
        return CF_E_NOMEM;
    }
    if (len < 44 || memcmp(b, "TZif", 4) != 0 || b[4] < '2') {
        err = CF_E_PARSE;
        goto done;
    }
    size_t v1 = 44 + (size_t)be32(b + 32) * 5 + (size_t)be32(b + 36) * 6 + be32(b + 40) +
                (size_t)be32(b + 28) * 8 + be32(b + 24) + be32(b + 20);
    if (v1 + 44 > len || memcmp(b + v1, "TZif", 4) != 0) {
        err = CF_E_PARSE;
        goto done;
    }
    const uint8_t *h = b + v1;
    uint32_t timecnt = be32(h + 32), typecnt = be32(h + 36);
    const uint8_t *at = h + 44, *idx = at + (size_t)timecnt * 8, *types = idx + timecnt;
    if (timecnt > TZ_TRANS_MAX || typecnt == 0 || typecnt > 256 ||
        (size_t)(types - b) + (size_t)typecnt * 6 > len) {
        err = CF_E_PARSE;
        goto done;
    }
    tz->at = cf_calloc(timecnt + 1, sizeof(*tz->at));
    tz->off = cf_calloc(timecnt + 1, sizeof(*tz->off));
    if (tz->at == NULL || tz->off == NULL) {
        err = CF_E_NOMEM;
        goto done;
    }
    /* Before the first transition: the first standard-time type, as RFC 8536 says. */
    tz->off0 = (int32_t)be32(types);
    for (uint32_t i = 0; i < timecnt; i++) {
        if (idx[i] >= typecnt) {
            err = CF_E_PARSE;
            goto done;
        }
        tz->at[i] = be64(at + (size_t)i * 8);
        tz->off[i] = (int32_t)be32(types + (size_t)idx[i] * 6);
        if (i > 0 && tz->at[i] <= tz->at[i - 1]) {
            err = CF_E_PARSE;
            goto done;
        }
    }
    tz->n = timecnt;
done:
    cf_free(b);
    if (err != CF_OK) {
        cf__tz_free(tz);
        if (err == CF_E_PARSE) {
            return cf_err_set(err, errstr, errstr_size, "time_zone '%s': %s is not a TZif file",
                              name, path);
        }
    }
    return err;
}

int64_t cf__tz_offset_us(const cf__tz *tz, int64_t ts_us)
{
    int64_t t = ts_us >= 0 ? ts_us / 1000000 : -((-ts_us + 999999) / 1000000);
    if (tz->n == 0 || t < tz->at[0]) {
        return (int64_t)tz->off0 * 1000000;
    }
    size_t lo = 0, hi = tz->n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->at[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return (int64_t)tz->off[lo] * 1000000;
}

void cf__tz_free(cf__tz *tz)
{
    cf_free(tz->at);
    cf_free(tz->off);
    memset(tz, 0, sizeof(*tz));
}
