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
#include "opts.h"
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

int cf_cli_load_head(const char *cmd, const char *path, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                     size_t *n_cosigs)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    if (text == NULL) {
        fprintf(stderr, "confide audit %s: %s: %s\n", cmd, path, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    char err[256] = "";
    cf_err e = cf_audit_head_parse(text, len, sth, cosigs, n_cosigs, err, sizeof(err));
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

/* The log in @p dir as a prover over its leaves, with its newest signed head. */
static int load_prover(const char *cmd, const char *dir, uint64_t *n, cf_audit_prover **pv_out,
                       cf_audit_sth *newest, bool *has_newest)
{
    char err[512] = "";
    uint8_t *leaves = NULL;
    cf_audit_sth *sths = NULL;
    size_t ns = 0;
    cf_audit_prover *pv = NULL;
    cf_err e = cf_audit_load_leaves(dir, &leaves, n, &sths, &ns, err, sizeof(err));
    if (e == CF_OK) {
        e = cf_audit_prover_create(&pv, leaves, *n);
    }
    cf_free(leaves);
    if (e != CF_OK) {
        fprintf(stderr, "confide audit %s: %s\n", cmd, err[0] ? err : cf_strerror(e));
        cf_free(sths);
        return e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    *has_newest = ns > 0;
    if (ns > 0) {
        *newest = sths[ns - 1];
    }
    cf_free(sths);
    *pv_out = pv;
    return CF_EXIT_OK;
}

int cf_cli_check_trusted_head(const char *dir, const cf_audit_sth *head,
                              const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], bool json,
                              cf_cli_head_check *res)
{
    char want[48], have[48];
    memset(res, 0, sizeof(*res));
    cf_audit_origin(head->log_id, want);
    cf_audit_origin(log_id, have);
    if (memcmp(head->log_id, log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: the trusted head is of another log: it "
                "names the log %s, this log is %s\n",
                want, have);
        return CF_EXIT_INTEGRITY;
    }
    uint64_t n = 0;
    cf_audit_prover *pv = NULL;
    cf_audit_sth newest;
    bool has_newest = false;
    int rc = load_prover("verify", dir, &n, &pv, &newest, &has_newest);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    uint64_t m = head->tree_size;
    res->log_size = n;
    uint8_t root_n[CF_AUDIT_HASH_LEN], path[CF_AUDIT_PROOF_MAX * CF_AUDIT_HASH_LEN];
    size_t plen = 0;
    if (m > n) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: truncated: the trusted head covers %" PRIu64
                " events, the log holds %" PRIu64 " (%" PRIu64 " signed events are missing)\n",
                m, n, m - n);
        rc = CF_EXIT_INTEGRITY;
        goto done;
    }
    cf_audit_prover_root(pv, n, root_n);
    /* RFC 9162 2.1.4: the log of size n is an extension of the trusted tree of size m exactly
     * when PROOF(m, D[0:n]) connects the trusted root to the log's root. */
    bool consistent = false;
    if (m == 0) {
        consistent = true; /* the empty tree is a prefix of every tree */
    } else if (cf_audit_prover_consistency(pv, m, n, path, &plen) == CF_OK) {
        consistent = cf_audit_verify_consistency(m, n, head->root, root_n, path, plen) == CF_OK;
    }
    if (!consistent) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: fork: no consistency proof from the "
                "trusted head (size %" PRIu64 ") to this log (size %" PRIu64 "): the log's first "
                "%" PRIu64 " events do not hash to the trusted root (rewritten history)\n",
                m, n, m);
        rc = CF_EXIT_INTEGRITY;
        goto done;
    }
    res->ok = true;
    res->proof_len = plen;
    res->newest = has_newest && newest.tree_size == m &&
                  memcmp(newest.root, head->root, CF_AUDIT_HASH_LEN) == 0;
    if (!json) {
        printf("trusted head: size %" PRIu64 " of %s; consistency proof to this log's size %" PRIu64
               " verified (%zu hashes)\n",
               m, want, n, plen);
    }
done:
    cf_audit_prover_destroy(pv);
    return rc;
}

/* ---- witness ------------------------------------------------------------------------------ */

static const char witness_head[] =
    "usage: confide audit witness --state DIR [--key FILE] --log-pub FILE\n"
    "                             (--head FILE | --log DIR) [--log DIR | --proof FILE]\n"
    "                             [--name NAME]\n"
    "       confide audit witness --keygen --state DIR [--key FILE]\n\n"
    "A witness keeps, per log, the last tree head it accepted, and cosigns a newer head\n"
    "only when a consistency proof (RFC 9162) shows the log extends it (c2sp.org/\n"
    "tlog-witness, tlog-cosignature). Readers who require its cosignature (`confide\n"
    "audit verify --trusted-head STATE/<log id>.checkpoint --witness-pub WITNESS.pub`)\n"
    "detect a truncated or rewritten log even when its own key re-signed it.\n\n";
static const char witness_tail[] =
    "\nThe first head of a log is accepted on its signature alone (trust on first use).\n"
    "exit codes: 0 cosigned, 2 usage, 3 cannot read or write, 4 refused: inconsistent\n"
    "            head (truncation or fork), a head of another log, or a bad signature;\n"
    "            the witness's state is unchanged\n";

/* Writes @p text to @p path atomically (temporary file, fsync, rename, directory fsync). */
static int write_atomic(const char *dir, const char *path, const char *text, size_t len)
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
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* The newest head of the log in @p dir. */
static int newest_head(const char *dir, cf_audit_sth *out)
{
    uint64_t n = 0;
    cf_audit_prover *pv = NULL;
    bool has = false;
    int rc = load_prover("witness", dir, &n, &pv, out, &has);
    cf_audit_prover_destroy(pv);
    if (rc == CF_EXIT_OK && !has) {
        fprintf(stderr, "confide audit witness: %s: the log has no signed head yet\n", dir);
        rc = CF_EXIT_RUNTIME;
    }
    return rc;
}

/* Accepts @p head after @p prev when a consistency proof (from --proof, or computed from the
 * leaves of --log) connects the root the witness already cosigned to the new head's root. */
static int check_extension(const cf_audit_sth *prev, const cf_audit_sth *head, const char *log,
                           const char *proof_file)
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
    uint8_t path[CF_AUDIT_PROOF_MAX * CF_AUDIT_HASH_LEN];
    size_t plen = 0;
    int rc = CF_EXIT_OK;
    bool have_proof = false;
    if (proof_file != NULL) {
        uint64_t m = 0, n = 0;
        if ((rc = cf_cli_read_consistency("witness", proof_file, &m, &n, path, &plen)) !=
            CF_EXIT_OK) {
            return rc;
        }
        if (m != prev->tree_size || n != head->tree_size) {
            fprintf(stderr,
                    "confide audit witness: %s proves %" PRIu64 " -> %" PRIu64
                    ", the witness needs %" PRIu64 " -> %" PRIu64 "\n",
                    proof_file, m, n, prev->tree_size, head->tree_size);
            return CF_EXIT_USAGE;
        }
        have_proof = true;
    } else if (log != NULL) {
        uint64_t n = 0;
        cf_audit_prover *pv = NULL;
        cf_audit_sth newest;
        bool has = false;
        if ((rc = load_prover("witness", log, &n, &pv, &newest, &has)) != CF_EXIT_OK) {
            return rc;
        }
        /* The proof comes from the log's leaves; whatever the directory holds, it must
         * connect the root the witness already cosigned to the new head's root. */
        have_proof =
            head->tree_size <= n &&
            cf_audit_prover_consistency(pv, prev->tree_size, head->tree_size, path, &plen) == CF_OK;
        cf_audit_prover_destroy(pv);
    } else {
        fprintf(stderr,
                "confide audit witness: --log DIR or --proof FILE is needed to prove %" PRIu64
                " -> %" PRIu64 " consistent\n",
                prev->tree_size, head->tree_size);
        return CF_EXIT_USAGE;
    }
    if (!have_proof || prev->tree_size == 0 ||
        cf_audit_verify_consistency(prev->tree_size, head->tree_size, prev->root, head->root, path,
                                    plen) != CF_OK) {
        fprintf(stderr,
                "confide audit witness: refused: fork or truncation: no consistency proof from "
                "the accepted size %" PRIu64 " to %" PRIu64 "\n",
                prev->tree_size, head->tree_size);
        return CF_EXIT_INTEGRITY;
    }
    return CF_EXIT_OK;
}

/* FILE.key -> FILE.pub (else FILE + ".pub"). */
static void pub_path(const char *key, char *out, size_t cap)
{
    size_t n = strlen(key);
    if (n > 4 && strcmp(key + n - 4, ".key") == 0) {
        snprintf(out, cap, "%.*s.pub", (int)(n - 4), key);
    } else {
        snprintf(out, cap, "%s.pub", key);
    }
}

/* --keygen: STATE/witness.key, or FILE and its .pub (made in a fresh directory beside FILE,
 * then moved into place, never over an existing file). */
static int witness_keygen(const char *state, const char *key)
{
    char err[512] = "";
    if (mkdir(state, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "confide audit witness: create %s: %s\n", state, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    if (key == NULL) {
        if (cf_keys_generate_witness(state, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit witness: %s\n", err);
            return CF_EXIT_RUNTIME;
        }
        printf("witness keys written to %s/witness.key (0600) and %s/witness.pub\n", state, state);
        return CF_EXIT_OK;
    }
    char pub[4200], dir[4200], tmp[4300], a[4400], b[4400];
    pub_path(key, pub, sizeof(pub));
    if (access(key, F_OK) == 0 || access(pub, F_OK) == 0) {
        fprintf(stderr, "confide audit witness: %s or %s exists: not overwritten\n", key, pub);
        return CF_EXIT_RUNTIME;
    }
    snprintf(dir, sizeof(dir), "%s", key);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    snprintf(tmp, sizeof(tmp), "%s/.witness-keygen-XXXXXX", dir);
    if (mkdtemp(tmp) == NULL) {
        fprintf(stderr, "confide audit witness: %s: %s\n", dir, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    snprintf(a, sizeof(a), "%s/witness.key", tmp);
    snprintf(b, sizeof(b), "%s/witness.pub", tmp);
    int rc = CF_EXIT_OK;
    if (cf_keys_generate_witness(tmp, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit witness: %s\n", err);
        rc = CF_EXIT_RUNTIME;
    } else if (rename(a, key) != 0 || rename(b, pub) != 0) {
        fprintf(stderr, "confide audit witness: cannot move the keys into place: %s\n",
                strerror(errno));
        rc = CF_EXIT_RUNTIME;
    } else {
        printf("witness keys written to %s (0600) and %s\n", key, pub);
    }
    unlink(a);
    unlink(b);
    rmdir(tmp);
    return rc;
}

int cf_cli_witness(int argc, char **argv)
{
    const char *state = NULL, *log_pub = NULL, *head_file = NULL, *log = NULL, *key = NULL;
    const char *proof = NULL, *name = "confide-witness";
    bool keygen = false;
    const cli_opt opts[] = {
        {.name = "keygen",
         .type = CLI_FLAG,
         .flag = &keygen,
         .help = "write the witness key pair: FILE (0600) and FILE with .pub for\n"
                 ".key (default STATE/witness.key and STATE/witness.pub)"},
        {.name = "state",
         .type = CLI_STR,
         .str = &state,
         .arg = "DIR",
         .help = "the witness's directory: the last cosigned checkpoint of every\n"
                 "log, STATE/<log id>.checkpoint (created 0700 if needed)"},
        {.name = "key",
         .type = CLI_STR,
         .str = &key,
         .arg = "FILE",
         .help = "the witness's secret key (default STATE/witness.key)"},
        {.name = "log-pub",
         .type = CLI_STR,
         .str = &log_pub,
         .arg = "FILE",
         .help = "the log's signing.pub: heads it did not sign are refused"},
        {.name = "head",
         .type = CLI_STR,
         .str = &head_file,
         .arg = "FILE",
         .help = "the head to cosign: a checkpoint (as published with\n"
                 "audit.witness_dir) or a tree_heads.ndjson (its last line);\n"
                 "without it, the newest head of --log"},
        {.name = "log",
         .type = CLI_STR,
         .str = &log,
         .arg = "DIR",
         .help = "the log: the witness computes the consistency proof from its\n"
                 "last accepted head from the log's leaves"},
        {.name = "proof",
         .type = CLI_STR,
         .str = &proof,
         .arg = "FILE",
         .help = "or: a consistency proof from its last accepted size to the\n"
                 "head's size (`confide audit consistency DIR --from M --to N\n"
                 "--json`), checked against the roots the witness holds"},
        {.name = "name",
         .type = CLI_STR,
         .str = &name,
         .arg = "NAME",
         .help = "the witness's name in its cosignatures (default confide-witness)"},
    };
    static const cli_conflict conflicts[] = {
        {"keygen", "log-pub"}, {"keygen", "head"}, {"keygen", "log"},
        {"keygen", "proof"},   {"keygen", "name"},
    };
    cli_spec spec = {.prog = "confide audit witness",
                     .head = witness_head,
                     .tail = witness_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .conflicts = conflicts,
                     .n_conflicts = CLI_N(conflicts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char err[512] = "";
    if (state == NULL) {
        fprintf(stderr, "confide audit witness: --state DIR is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    if (keygen) {
        return witness_keygen(state, key);
    }
    if (log_pub == NULL || (head_file == NULL && log == NULL)) {
        fprintf(stderr, "confide audit witness: --log-pub and --head or --log are required\n");
        return CF_EXIT_USAGE;
    }
    if (strlen(name) == 0 || strlen(name) >= sizeof(((cf_audit_cosig *)0)->name) ||
        strpbrk(name, " \n+") != NULL) {
        fprintf(stderr, "confide audit witness: --name must be 1..63 characters without spaces "
                        "or '+'\n");
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
    char lid[2 * CF_AUDIT_LOG_ID_LEN + 1], path[4200];
    sodium_bin2hex(lid, sizeof(lid), head.log_id, CF_AUDIT_LOG_ID_LEN);
    if (cf_audit_sth_verify(&head, lpk) != CF_OK) {
        fprintf(stderr, "confide audit witness: refused: the head is not signed by %s\n", log_pub);
        return CF_EXIT_INTEGRITY;
    }
    if (log != NULL) {
        /* The log the proof comes from must be the log the head names. */
        cf_audit_reader *r = NULL;
        uint8_t have[CF_AUDIT_LOG_ID_LEN];
        if (cf_audit_reader_open(&r, log, NULL, 0, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit witness: %s\n", err);
            return CF_EXIT_RUNTIME;
        }
        bool has = cf_audit_reader_log_id(r, have);
        cf_audit_reader_destroy(r);
        if (!has || memcmp(have, head.log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
            char hx[2 * CF_AUDIT_LOG_ID_LEN + 1] = "(empty)";
            if (has) {
                sodium_bin2hex(hx, sizeof(hx), have, CF_AUDIT_LOG_ID_LEN);
            }
            fprintf(stderr,
                    "confide audit witness: refused: the head names the log %s, %s holds the "
                    "log %s\n",
                    lid, log, hx);
            return CF_EXIT_INTEGRITY;
        }
    }
    if (mkdir(state, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "confide audit witness: create %s: %s\n", state, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    cf_key *wk = NULL;
    cf_err ke = CF_OK;
    if (key == NULL) {
        ke = cf_key_load_kind(state, "witness.key", CF_KEY_KIND_WITNESS, &wk, err, sizeof(err));
    } else {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s", key);
        char *slash = strrchr(dir, '/');
        const char *base = key;
        if (slash != NULL) {
            *slash = '\0';
            base = slash + 1;
        } else {
            snprintf(dir, sizeof(dir), ".");
        }
        ke = cf_key_load_kind(dir, base, CF_KEY_KIND_WITNESS, &wk, err, sizeof(err));
    }
    if (ke != CF_OK) {
        fprintf(stderr, "confide audit witness: %s (create it with --keygen)\n", err);
        return CF_EXIT_RUNTIME;
    }
    snprintf(path, sizeof(path), "%s/%s.checkpoint", state, lid);
    cf_audit_sth prev;
    struct stat st;
    if (stat(path, &st) == 0) {
        if ((rc = cf_cli_load_head("witness", path, &prev, NULL, NULL)) != CF_EXIT_OK ||
            (rc = check_extension(&prev, &head, log, proof)) != CF_EXIT_OK) {
            cf_key_destroy(wk);
            return rc;
        }
        if (head.tree_size == prev.tree_size && head.timestamp_us < prev.timestamp_us) {
            head = prev; /* the same tree: keep the newer of the two heads */
        }
    }
    cf_audit_cosig c;
    cf_audit_cosign(&head, name, wk->bytes, (uint64_t)time(NULL), &c);
    cf_key_destroy(wk);
    char note[CF_AUDIT_NOTE_MAX];
    size_t n = cf_audit_sth_note(&head, lpk, note, sizeof(note));
    n = n > 0 ? cf_audit_cosig_line(&c, note, n, sizeof(note)) : 0;
    if (n == 0 || write_atomic(state, path, note, n) != 0) {
        fprintf(stderr, "confide audit witness: cannot write %s: %s\n", path, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    printf("cosigned %s size %" PRIu64 " -> %s\n", lid, head.tree_size, path);
    return CF_EXIT_OK;
}
