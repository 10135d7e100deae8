/*
 * Output files of a run (results, alerts, late events, dead letters), written in place and
 * readable while the run goes on: on a 24/7 stream there is no "end of the run" to wait
 * for. Every checkpoint flushes and syncs them (outfile_sync) and records their lengths in
 * the audit log; after a crash, recovery cuts them back to those lengths and the replay
 * writes the rest again, so a line is final once the checkpoint after it is durable (lines
 * past the last checkpoint can be cut and rewritten identically). Mode 0600: dead letters
 * and alerts can carry raw input.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"

cf_err outfile_open(outfile *o, const char *dir, const char *name, char *errstr, size_t errstr_size)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->path, sizeof(o->path), "%s/%s", dir, name);
    snprintf(o->tmp, sizeof(o->tmp), "%s", o->path);
    int fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot create %s", o->tmp);
    }
    o->f = fdopen(fd, "w");
    if (o->f == NULL) {
        close(fd);
        return cf_err_errno(errno, errstr, errstr_size, "cannot open %s", o->tmp);
    }
    return CF_OK;
}

cf_err outfile_resume(outfile *o, const char *dir, const char *name, uint64_t len, char *errstr,
                      size_t errstr_size)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->path, sizeof(o->path), "%s/%s", dir, name);
    snprintf(o->tmp, sizeof(o->tmp), "%s", o->path);
    struct stat st;
    int fd = open(o->tmp, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && len == 0) {
        return outfile_open(o, dir, name, errstr, errstr_size);
    }
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot reopen %s for recovery", o->tmp);
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < len) {
        close(fd);
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                          "%s is shorter than its checkpoint (%llu bytes): the outputs do not "
                          "match the audit log",
                          o->tmp, (unsigned long long)len);
    }
    if (ftruncate(fd, (off_t)len) != 0 || lseek(fd, 0, SEEK_END) < 0) {
        close(fd);
        return cf_err_errno(errno, errstr, errstr_size, "cannot cut %s", o->tmp);
    }
    o->f = fdopen(fd, "a");
    if (o->f == NULL) {
        close(fd);
        return cf_err_errno(errno, errstr, errstr_size, "cannot open %s", o->tmp);
    }
    return CF_OK;
}

cf_err outfile_sync(outfile *o, uint64_t *len)
{
    *len = 0;
    if (o->f == NULL) {
        return CF_OK;
    }
    if (fflush(o->f) != 0 || fdatasync(fileno(o->f)) != 0) {
        return CF_E_IO;
    }
    off_t end = lseek(fileno(o->f), 0, SEEK_END);
    if (end < 0) {
        return CF_E_IO;
    }
    *len = (uint64_t)end;
    return CF_OK;
}

void outfile_write(outfile *o, const char *data, size_t len)
{
    if (o->f != NULL) {
        fwrite(data, 1, len, o->f);
    }
}

cf_err outfile_commit(outfile *o, char *errstr, size_t errstr_size)
{
    if (o->f == NULL) {
        return CF_OK;
    }
    bool bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot finalize %s", o->path);
    }
    return CF_OK;
}

void outfile_abandon(outfile *o)
{
    /* Kept: what a failed run wrote is a prefix that recovery cuts back to its checkpoint. */
    if (o->f != NULL) {
        fclose(o->f);
        o->f = NULL;
    }
}
