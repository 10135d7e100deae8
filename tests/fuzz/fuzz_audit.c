/*
 * Fuzzes the audit log reader, the verifier and open-with-recovery on arbitrary segment
 * bytes. The input becomes the first segment of a fresh log directory; keys are fixed (made
 * once per process) so that well-formed records from the corpus decrypt and verify.
 * Any input must give records or a named error, never a crash.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "confide/audit.h"
#include "confide/core.h"
#include "confide/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char keys[64];
static char dir[64];
static cf_key *data_key;

static void setup_once(void)
{
    if (keys[0] != '\0') {
        return;
    }
    cf_init();
    snprintf(keys, sizeof(keys), "/tmp/cf_fuzz_keys_XXXXXX");
    if (mkdtemp(keys) == NULL) {
        abort();
    }
    char err[256];
    /* mkdtemp made the directory 0700; generate into it. */
    if (cf_keys_generate(keys, 2, 1, 1, err, sizeof(err)) != CF_OK ||
        cf_key_load(keys, "data.key", &data_key, err, sizeof(err)) != CF_OK) {
        abort();
    }
    snprintf(dir, sizeof(dir), "/tmp/cf_fuzz_log_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    char seg[128];
    snprintf(seg, sizeof(seg), "%s/00000000000000000000.seg", dir);
    int fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return 0;
    }
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    close(fd);
    char err[512];

    cf_audit_reader *r = NULL;
    if (cf_audit_reader_open(&r, dir, data_key, 0, err, sizeof(err)) == CF_OK) {
        cf_audit_entry e;
        while (cf_audit_reader_next(r, &e, err, sizeof(err)) == CF_OK) {
        }
        cf_audit_reader_destroy(r);
    }

    cf_audit_verify_opts vo;
    memset(&vo, 0, sizeof(vo));
    vo.data_key = data_key;
    vo.dup_max = 4096;
    cf_audit_report rep;
    (void)cf_audit_verify(dir, &vo, &rep, err, sizeof(err));

    /* Open for appending: recovery truncates a torn tail and must never crash either. */
    cf_audit_opts o;
    cf_audit_opts_default(&o);
    o.fsync = CF_AUDIT_FSYNC_NONE;
    cf_audit_log *log = NULL;
    if (cf_audit_open(&log, dir, keys, &o, NULL, err, sizeof(err)) == CF_OK) {
        cf_audit_close(log);
    }
    /* Empty the directory for the next input (open may have added segments or a lock). */
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                char path[512];
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    return 0;
}
