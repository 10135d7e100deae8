/*
 * Output files of a run (results, alerts, late events, dead letters). Each is written to a
 * hidden temporary file and renamed into place when the run ends, so a reader never sees a
 * half-written file. Mode 0600: dead letters and alerts can carry raw input.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "outfile.h"

cf_err outfile_open(outfile *o, const char *dir, const char *name, char *errstr,
                    size_t errstr_size)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->path, sizeof(o->path), "%s/%s", dir, name);
    snprintf(o->tmp, sizeof(o->tmp), "%s/.%s.tmp", dir, name);
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
    if (bad || rename(o->tmp, o->path) != 0) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot finalize %s", o->path);
    }
    return CF_OK;
}

void outfile_abandon(outfile *o)
{
    if (o->f != NULL) {
        fclose(o->f);
        o->f = NULL;
        unlink(o->tmp);
    }
}
