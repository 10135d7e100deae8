/* Private to the runtime: output files written in place, readable during the run, made
 * durable at every checkpoint and cut back to it by recovery (outfile.c). */
#ifndef CF_RUNTIME_OUTFILE_H
#define CF_RUNTIME_OUTFILE_H

#include <stdint.h>
#include <stdio.h>

#include "confide/err.h"

typedef struct outfile {
    FILE *f;
    char tmp[1100]; /* the file being written (the same as path) */
    char path[1100];
} outfile;

/** Creates DIR/NAME empty, mode 0600 (outputs can carry raw records). */
cf_err outfile_open(outfile *o, const char *dir, const char *name, char *errstr,
                    size_t errstr_size);
/**
 * Crash recovery: reopens DIR/NAME and cuts it to @p len bytes, the length recorded at the
 * last checkpoint.
 * A missing or shorter file is CF_E_CORRUPT: the outputs do not match the audit log.
 */
cf_err outfile_resume(outfile *o, const char *dir, const char *name, uint64_t len, char *errstr,
                      size_t errstr_size);
/** Makes everything written so far durable; *len receives the file's length. */
cf_err outfile_sync(outfile *o, uint64_t *len);
/** Appends @p len bytes; a no-op for a file that was never opened. */
void outfile_write(outfile *o, const char *data, size_t len);
/** Flush, fsync and close. A no-op for a file that was never opened. */
cf_err outfile_commit(outfile *o, char *errstr, size_t errstr_size);
/** Closes without syncing (the file stays: recovery cuts it back to its checkpoint). */
void outfile_abandon(outfile *o);

#endif
