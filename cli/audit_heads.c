/*
 * Signed tree heads outside the log: checking a log against a head kept elsewhere
 * (`confide audit verify --trusted-head`) and the witness (`confide audit witness`).
 *
 * Why: a log's own heads prove nothing against whoever can rewrite the log directory, since a
 * truncated or forked log re-signed with the same key verifies on its own. A head kept by
 * someone else (the last line of tree_heads.ndjson on the results side, or a witness's
 * cosigned checkpoint) pins what the log already said: the log must be a consistent extension
 * of it (RFC 9162 consistency), or it was cut or rewritten. A witness accepts a newer head
 * only as a consistent extension of the last one it cosigned, so a log that shows different
 * histories to different readers is caught by anyone who checks a cosignature.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_heads.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/keys.h"

#define NOTE_FILE_MAX (64 * 1024 * 1024)

/* Reads a whole file (at most NOTE_FILE_MAX bytes), NUL-terminated. Returns owned (free). */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (n + 1 >= cap) {
            char *nb = cap < NOTE_FILE_MAX ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        if (r == 0) {
            break;
        }
        n += r;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* tree_heads.ndjson: the "checkpoint" string of the last line, unescaped into @p out. */
static bool note_from_ndjson(const char *text, size_t len, char *out, size_t cap, size_t *olen)
{
    const char *last = NULL;
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        const char *end = nl != NULL ? nl : text + len;
        if (end > p && *p == '{') {
            last = p;
        }
        p = end + 1;
    }
    const char *k = last != NULL ? strstr(last, "\"checkpoint\":\"") : NULL;
    if (k == NULL) {
        return false;
    }
    size_t n = 0;
    for (const char *p = k + 14; *p != '\0' && *p != '"' && n + 1 < cap; p++) {
        if (*p == '\\' && p[1] == 'n') {
            out[n++] = '\n';
            p++;
        } else if (*p == '\\') {
            return false; /* the writer escapes newlines only */
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *olen = n;
    return true;
}

int cf_cli_load_head(const char *cmd, const char *path, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                     size_t *n_cosigs)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    if (text == NULL) {
        fprintf(stderr, "confide audit %s: %s: %s\n", cmd, path, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    char note[CF_AUDIT_NOTE_MAX * 2], err[256] = "";
    size_t nl = 0;
    const char *src = text;
    if (len > 0 && text[0] == '{') {
        if (!note_from_ndjson(text, len, note, sizeof(note), &nl)) {
            free(text);
            fprintf(stderr, "confide audit %s: %s: no \"checkpoint\" in its last line\n", cmd,
                    path);
            return CF_EXIT_USAGE;
        }
        src = note;
        len = nl;
    }
    cf_err e = cf_audit_note_parse(src, len, sth, cosigs, n_cosigs, err, sizeof(err));
    free(text);
    if (e != CF_OK) {
        fprintf(stderr, "confide audit %s: %s: %s\n", cmd, path, err);
        return CF_EXIT_USAGE;
    }
    return CF_EXIT_OK;
}

int cf_cli_load_pub_file(const char *cmd, const char *path, const char *kind,
                         uint8_t pk[CF_AUDIT_PK_LEN], cf_audit_pubkey *key)
{
    char dir[4096], err[512] = "";
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    const char *name = path;
    if (slash != NULL) {
        *slash = '\0';
        name = slash + 1;
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    cf_key *k = NULL;
    if (cf_key_load_kind(dir, name, kind, &k, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit %s: %s\n", cmd, err);
        return CF_EXIT_RUNTIME;
    }
    memcpy(pk, k->bytes, CF_AUDIT_PK_LEN);
    if (key != NULL) {
        memcpy(key->key, k->bytes, CF_AUDIT_PK_LEN);
        memcpy(key->id, k->id, CF_KEY_ID_LEN);
        key->epoch = k->epoch;
    }
    cf_key_destroy(k);
    return CF_EXIT_OK;
}

/* Root of the first @p size leaves of the log in @p dir; *n = the log's size. */
static int root_at(const char *cmd, const char *dir, uint64_t size, uint64_t *n,
                   uint8_t root[CF_AUDIT_HASH_LEN], cf_audit_prover **pv_out, uint8_t **leaves_out)
{
    char err[512] = "";
    uint8_t *leaves = NULL;
    cf_audit_prover *pv = NULL;
    cf_err e = cf_audit_load_leaves(dir, &leaves, n, NULL, NULL, err, sizeof(err));
    if (e == CF_OK) {
        e = cf_audit_prover_create(&pv, leaves, *n);
    }
    if (e != CF_OK) {
        fprintf(stderr, "confide audit %s: %s\n", cmd, err[0] ? err : cf_strerror(e));
        cf_free(leaves);
        return e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    if (size <= *n) {
        cf_audit_prover_root(pv, size, root);
    }
    *pv_out = pv;
    *leaves_out = leaves;
    return CF_EXIT_OK;
}

int cf_cli_check_trusted_head(const char *dir, const cf_audit_sth *head,
                              const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], bool json, bool *ok)
{
    char want[48], have[48];
    *ok = false;
    cf_audit_origin(head->log_id, want);
    cf_audit_origin(log_id, have);
    if (memcmp(head->log_id, log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: the trusted head names the log %s, this "
                "log is %s\n",
                want, have);
        return CF_EXIT_INTEGRITY;
    }
    uint64_t n = 0;
    uint8_t root[CF_AUDIT_HASH_LEN];
    cf_audit_prover *pv = NULL;
    uint8_t *leaves = NULL;
    int rc = root_at("verify", dir, head->tree_size, &n, root, &pv, &leaves);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (head->tree_size > n) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: truncated: the trusted head covers %" PRIu64
                " events, the log holds %" PRIu64 " (%" PRIu64 " signed events are missing)\n",
                head->tree_size, n, head->tree_size - n);
        rc = CF_EXIT_INTEGRITY;
    } else if (memcmp(root, head->root, CF_AUDIT_HASH_LEN) != 0) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: fork: the log's first %" PRIu64
                " events do not hash to the trusted head's root (rewritten history)\n",
                head->tree_size);
        rc = CF_EXIT_INTEGRITY;
    } else {
        *ok = true;
        if (!json) {
            printf("trusted head: size %" PRIu64 " of %s is a prefix of this log (size %" PRIu64
                   ")\n",
                   head->tree_size, want, n);
        }
    }
    cf_audit_prover_destroy(pv);
    cf_free(leaves);
    return rc;
}

/* ---- witness ------------------------------------------------------------------------------ */

void cf_cli_witness_usage(FILE *f)
{
    fprintf(f,
            "usage: confide audit witness --state DIR --log-pub FILE (--head FILE | --log DIR)\n"
            "                             [--log DIR] [--name NAME]\n"
            "       confide audit witness --keygen --state DIR\n\n"
            "A witness keeps, per log, the last tree head it accepted, and cosigns a newer head\n"
            "only when the log is a consistent extension of it (c2sp.org/tlog-witness,\n"
            "tlog-cosignature). Readers who require its cosignature (`confide audit verify\n"
            "--trusted-head STATE/<log id>.checkpoint --witness-pub STATE/witness.pub`) detect a\n"
            "truncated or rewritten log even when its own key re-signed it.\n\n"
            "  --keygen        write STATE/witness.key (0600) and STATE/witness.pub\n"
            "  --state DIR     the witness's directory: its key and the last cosigned\n"
            "                  checkpoint of every log, STATE/<log id>.checkpoint\n"
            "  --log-pub FILE  the log's signing.pub: heads it did not sign are refused\n"
            "  --head FILE     the head to cosign: a checkpoint (as published with\n"
            "                  audit.witness_dir) or a tree_heads.ndjson (its last line);\n"
            "                  without it, the newest head of --log\n"
            "  --log DIR       the log, for the consistency proof from the last accepted head\n"
            "  --name NAME     the witness's name in its cosignatures (default confide-witness)\n\n"
            "exit codes: 0 cosigned, 2 usage, 3 cannot read or write, 4 inconsistent head\n"
            "            (truncation or fork) or bad signature: refused, state unchanged\n");
}

/* Writes @p text to @p path atomically (temporary file, fsync, rename). */
static int write_atomic(const char *path, const char *text, size_t len)
{
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%.4200s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The newest head of the log in @p dir. */
static int newest_head(const char *dir, cf_audit_sth *out)
{
    char err[512] = "";
    uint8_t *leaves = NULL;
    uint64_t n = 0;
    cf_audit_sth *sths = NULL;
    size_t ns = 0;
    cf_err e = cf_audit_load_leaves(dir, &leaves, &n, &sths, &ns, err, sizeof(err));
    cf_free(leaves);
    if (e != CF_OK || ns == 0) {
        fprintf(stderr, "confide audit witness: %s\n",
                e != CF_OK ? err : "the log has no signed head yet");
        cf_free(sths);
        return e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    *out = sths[ns - 1];
    cf_free(sths);
    return CF_EXIT_OK;
}

/* Accepts @p head after @p prev when the log proves it a consistent extension. */
static int check_extension(const cf_audit_sth *prev, const cf_audit_sth *head, const char *log)
{
    if (head->tree_size < prev->tree_size) {
        fprintf(stderr,
                "confide audit witness: refused: truncation: the head has %" PRIu64
                " events, the last accepted one %" PRIu64 "\n",
                head->tree_size, prev->tree_size);
        return CF_EXIT_INTEGRITY;
    }
    if (head->tree_size == prev->tree_size) {
        if (memcmp(head->root, prev->root, CF_AUDIT_HASH_LEN) != 0) {
            fprintf(stderr,
                    "confide audit witness: refused: fork: two roots for size %" PRIu64 "\n",
                    head->tree_size);
            return CF_EXIT_INTEGRITY;
        }
        return CF_EXIT_OK;
    }
    if (log == NULL) {
        fprintf(stderr,
                "confide audit witness: --log DIR is needed to prove %" PRIu64 " -> %" PRIu64
                " consistent\n",
                prev->tree_size, head->tree_size);
        return CF_EXIT_USAGE;
    }
    uint64_t n = 0;
    uint8_t root[CF_AUDIT_HASH_LEN];
    cf_audit_prover *pv = NULL;
    uint8_t *leaves = NULL;
    int rc = root_at("witness", log, head->tree_size, &n, root, &pv, &leaves);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    uint8_t path[CF_AUDIT_PROOF_MAX * CF_AUDIT_HASH_LEN];
    size_t plen = 0;
    /* The proof comes from the log's leaves; it must connect the root the witness already
     * cosigned to the new head's root, whatever the log directory holds. */
    if (head->tree_size > n || prev->tree_size == 0 ||
        cf_audit_prover_consistency(pv, prev->tree_size, head->tree_size, path, &plen) != CF_OK ||
        cf_audit_verify_consistency(prev->tree_size, head->tree_size, prev->root, head->root, path,
                                    plen) != CF_OK) {
        fprintf(stderr,
                "confide audit witness: refused: fork or truncation: no consistency proof from "
                "the accepted size %" PRIu64 " to %" PRIu64 "\n",
                prev->tree_size, head->tree_size);
        rc = CF_EXIT_INTEGRITY;
    }
    cf_audit_prover_destroy(pv);
    cf_free(leaves);
    return rc;
}

int cf_cli_witness(int argc, char **argv)
{
    const char *state = NULL, *log_pub = NULL, *head_file = NULL, *log = NULL;
    const char *name = "confide-witness";
    bool keygen = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--state") == 0     ? &state
                            : strcmp(a, "--log-pub") == 0 ? &log_pub
                            : strcmp(a, "--head") == 0    ? &head_file
                            : strcmp(a, "--log") == 0     ? &log
                            : strcmp(a, "--name") == 0    ? &name
                                                          : NULL;
        if (strcmp(a, "--keygen") == 0) {
            keygen = true;
        } else if (slot != NULL && i + 1 < argc) {
            *slot = argv[++i];
        } else {
            fprintf(stderr, "confide audit witness: unexpected argument '%s' (see --help)\n", a);
            return CF_EXIT_USAGE;
        }
    }
    char err[512] = "";
    if (state == NULL) {
        fprintf(stderr, "confide audit witness: --state DIR is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    if (keygen) {
        if (cf_keys_generate_witness(state, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit witness: %s\n", err);
            return CF_EXIT_RUNTIME;
        }
        printf("witness keys written to %s/witness.key (0600) and %s/witness.pub\n", state, state);
        return CF_EXIT_OK;
    }
    if (log_pub == NULL || (head_file == NULL && log == NULL)) {
        fprintf(stderr, "confide audit witness: --log-pub and --head or --log are required\n");
        return CF_EXIT_USAGE;
    }
    uint8_t lpk[CF_AUDIT_PK_LEN];
    int rc = cf_cli_load_pub_file("witness", log_pub, CF_KEY_KIND_SIGNING_PUB, lpk, NULL);
    cf_audit_sth head;
    if (rc == CF_EXIT_OK) {
        rc = head_file != NULL ? cf_cli_load_head("witness", head_file, &head, NULL, NULL)
                               : newest_head(log, &head);
    }
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (cf_audit_sth_verify(&head, lpk) != CF_OK) {
        fprintf(stderr, "confide audit witness: refused: the head is not signed by %s\n", log_pub);
        return CF_EXIT_INTEGRITY;
    }
    cf_key *wk = NULL;
    if (cf_key_load_kind(state, "witness.key", CF_KEY_KIND_WITNESS, &wk, err, sizeof(err)) !=
        CF_OK) {
        fprintf(stderr, "confide audit witness: %s (create it with --keygen)\n", err);
        return CF_EXIT_RUNTIME;
    }
    char lid[2 * CF_AUDIT_LOG_ID_LEN + 1], path[4200];
    sodium_bin2hex(lid, sizeof(lid), head.log_id, CF_AUDIT_LOG_ID_LEN);
    snprintf(path, sizeof(path), "%s/%s.checkpoint", state, lid);
    cf_audit_sth prev;
    struct stat st;
    if (stat(path, &st) == 0) {
        if ((rc = cf_cli_load_head("witness", path, &prev, NULL, NULL)) != CF_EXIT_OK ||
            (rc = check_extension(&prev, &head, log)) != CF_EXIT_OK) {
            cf_key_destroy(wk);
            return rc;
        }
    }
    cf_audit_cosig c;
    cf_audit_cosign(&head, name, wk->bytes, (uint64_t)time(NULL), &c);
    cf_key_destroy(wk);
    char note[CF_AUDIT_NOTE_MAX];
    size_t n = cf_audit_sth_note(&head, lpk, note, sizeof(note));
    n = n > 0 ? cf_audit_cosig_line(&c, note, n, sizeof(note)) : 0;
    if (n == 0 || write_atomic(path, note, n) != 0) {
        fprintf(stderr, "confide audit witness: cannot write %s: %s\n", path, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    printf("cosigned %s size %" PRIu64 " -> %s\n", lid, head.tree_size, path);
    return CF_EXIT_OK;
}
