/*
 * Segment files: listing a log directory and mapping a segment read-only.
 *
 * A segment is named by the index of the first event it holds, as 20 decimal digits plus
 * ".seg", so lexical and numeric order agree. Other files in the directory (signing.pub, a
 * README) are ignored. Readers map whole segments (they are size-bounded, 64 MiB by default);
 * an empty file maps to a NULL/0 view. Nothing here is shared between threads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_int.h"

void cf__audit_seg_name(uint64_t first, char out[32])
{
    snprintf(out, 32, "%020llu%s", (unsigned long long)first, CF__AUDIT_SEG_SUFFIX);
}

static bool parse_seg_name(const char *name, uint64_t *first)
{
    if (strlen(name) != CF__AUDIT_SEG_NAME_LEN || strcmp(name + 20, CF__AUDIT_SEG_SUFFIX) != 0) {
        return false;
    }
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return false;
        }
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *first = v;
    return true;
}

void cf__seglist_free(cf__seglist *l)
{
    cf_free(l->first);
    cf_free(l->name);
    memset(l, 0, sizeof(*l));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

cf_err cf__audit_list_segments(const char *dir, cf__seglist *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    DIR *d = opendir(dir);
    if (d == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "audit log directory %s", dir);
    }
    size_t cap = 0;
    uint64_t *firsts = NULL;
    cf_err err = CF_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t first;
        if (!parse_seg_name(de->d_name, &first)) {
            continue;
        }
        if (out->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            uint64_t *nf = cf_realloc(firsts, ncap * sizeof(*nf));
            if (nf == NULL) {
                err = CF_E_NOMEM;
                goto done;
            }
            firsts = nf;
            cap = ncap;
        }
        firsts[out->n++] = first;
    }
    if (out->n > 0) {
        qsort(firsts, out->n, sizeof(*firsts), cmp_u64);
        out->name = cf_calloc(out->n, sizeof(*out->name));
        if (out->name == NULL) {
            err = CF_E_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < out->n; i++) {
            cf__audit_seg_name(firsts[i], out->name[i]);
        }
    }
    out->first = firsts;
    firsts = NULL;
done:
    closedir(d);
    cf_free(firsts);
    if (err != CF_OK) {
        cf__seglist_free(out);
    }
    return err;
}

cf_err cf__segmap_open(const char *dir, const char *name, cf__segmap *m, char *errstr,
                       size_t errstr_size)
{
    char path[4096];
    m->data = NULL;
    m->len = 0;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "path too long: %s", dir);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "open %s", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        cf_err e = cf_err_errno(errno, errstr, errstr_size, "stat %s", path);
        close(fd);
        return e;
    }
    if (st.st_size > 0) {
        /* MAP_POPULATE: readers go through the whole segment once, so fault it in one go. */
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            cf_err e = cf_err_errno(errno, errstr, errstr_size, "mmap %s", path);
            close(fd);
            return e;
        }
        m->data = p;
        m->len = (size_t)st.st_size;
    }
    close(fd);
    return CF_OK;
}

void cf__segmap_close(cf__segmap *m)
{
    if (m->data != NULL) {
        munmap((void *)m->data, m->len);
    }
    m->data = NULL;
    m->len = 0;
}

/* Offset of the log id in the payload of a record of each type (docs/audit.md). */
static size_t log_id_offset(uint8_t type)
{
    switch (type) {
    case CF_AUDIT_REC_STH:
        return 8 + 8 + CF_AUDIT_HASH_LEN + 8 + CF_KEY_ID_LEN;
    case CF_AUDIT_REC_HEADER:
        return 8;
    default: /* batch, checkpoint: nonce || data key id || log id */
        return CF__AUDIT_LOGID_OFF;
    }
}

cf_err cf__audit_peek(const char *dir, const cf__seglist *sl, uint8_t log_id[CF_AUDIT_LOG_ID_LEN],
                      bool *has, bool *header, char *errstr, size_t errstr_size)
{
    *has = false;
    *header = false;
    if (sl->n == 0) {
        return CF_OK;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, sl->name[0]) >= sizeof(path)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "path too long: %s", dir);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "open %s", path);
    }
    uint8_t buf[CF__AUDIT_HDR_LEN + CF__AUDIT_LOGHDR_PAYLOAD];
    ssize_t got = pread(fd, buf, sizeof(buf), 0);
    cf_err err = CF_OK;
    if (got < 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "read %s", path);
        goto done;
    }
    if (got < CF__AUDIT_HDR_LEN) {
        goto done; /* empty, or a torn first record: the scan that follows says which */
    }
    cf__audit_hdr h;
    cf__audit_hdr_decode(buf, &h);
    if (h.magic != CF__AUDIT_MAGIC || cf__audit_crc32c(0, buf, CF__AUDIT_HCRC_OFF) != h.hdr_crc) {
        goto done; /* damage: reported by the scan with its segment and offset */
    }
    if (h.version != CF__AUDIT_VERSION) {
        err = cf_err_set(
            CF_E_STATE, errstr, errstr_size,
            "audit log %s is in format version %u; this confide reads version %u only (log ids, "
            "salted leaves, C2SP tree heads): verify it with the confide release that wrote it, "
            "and start a new audit log directory",
            dir, (unsigned)h.version, (unsigned)CF__AUDIT_VERSION);
        goto done;
    }
    if (h.type == CF_AUDIT_REC_HEADER) {
        cf__rec r;
        if ((size_t)got == sizeof(buf) &&
            cf__audit_rec_parse(buf, sizeof(buf), 0, &r) == CF__REC_OK) {
            memcpy(log_id, r.log_id, CF_AUDIT_LOG_ID_LEN);
            *has = *header = true;
        }
        goto done;
    }
    /* A log written before header records: the id its first record carries (every later
     * record is compared with it, the first one included). */
    size_t lo = log_id_offset(h.type);
    if (h.payload_len >= lo + CF_AUDIT_LOG_ID_LEN &&
        pread(fd, log_id, CF_AUDIT_LOG_ID_LEN, (off_t)(CF__AUDIT_HDR_LEN + lo)) ==
            CF_AUDIT_LOG_ID_LEN) {
        *has = true;
    }
done:
    close(fd);
    return err;
}
