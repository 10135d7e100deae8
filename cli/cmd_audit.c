/*
 * confide audit: verify, prove, consistency, verify-proof, show, dead-letters and append
 * (docs/audit.md).
 *
 * Auditor-facing: every subcommand reads the log read-only except `append`, which archives
 * an input file into a log (the same writer `confide run` uses). Output never contains event
 * contents: counts, indexes, hashes, signatures. Exit codes: 0 ok, 1 a check failed without
 * evidence of tampering (duplicate event ids, unsigned tail), 2 usage, 3 runtime (I/O, keys),
 * 4 integrity alert (a CRC, root, signature, gap or decryption failure; a proof that does
 * not verify).
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
#include "cli.h"
#include "opts.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/keys.h"

#define H CF_AUDIT_HASH_LEN

/* ---- small helpers ------------------------------------------------------------------------ */

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] == '\0' || s[0] == '-' || *end != '\0' || errno != 0) {
        return false;
    }
    *out = v;
    return true;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, p, n);
}

static void print_hash(FILE *f, const uint8_t h[H])
{
    char x[2 * H + 1];
    hex(h, H, x);
    fprintf(f, "\"%s\"", x);
}

static void print_path(FILE *f, const uint8_t *path, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            fputc(',', f);
        }
        print_hash(f, path + i * H);
    }
    fputc(']', f);
}

static void print_sth_json(FILE *f, const cf_audit_sth *s)
{
    char kid[2 * CF_KEY_ID_LEN + 1], sig[2 * CF_AUDIT_SIG_LEN + 1];
    char lid[2 * CF_AUDIT_LOG_ID_LEN + 1];
    hex(s->key_id, CF_KEY_ID_LEN, kid);
    hex(s->signature, CF_AUDIT_SIG_LEN, sig);
    hex(s->log_id, CF_AUDIT_LOG_ID_LEN, lid);
    fprintf(f, "{\"tree_size\":%" PRIu64 ",\"root\":", s->tree_size);
    print_hash(f, s->root);
    fprintf(f,
            ",\"timestamp_us\":%" PRId64
            ",\"key_id\":\"%s\",\"log_id\":\"%s\",\"signature\":\"%s\"}",
            s->timestamp_us, kid, lid, sig);
}

static void fmt_time(int64_t us, char *buf, size_t size)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The public key: KEYDIR/signing.pub when given, else the copy in the log directory. */
static int load_pub(const char *cmd, const char *keys, const char *log_dir, uint8_t pk[32],
                    bool quiet, cf_audit_pubkey *key)
{
    char err[512] = "";
    const char *from = keys != NULL ? keys : log_dir;
    if (from == NULL) {
        fprintf(stderr, "confide audit %s: no public key: pass --keys KEYDIR\n", cmd);
        return CF_EXIT_USAGE;
    }
    cf_audit_pubkey tmp;
    if (key == NULL) {
        key = &tmp;
    }
    if (cf_key_load_signing_pub(from, pk, key->id, &key->epoch, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit %s: %s%s\n", cmd, err,
                keys == NULL ? " (pass --keys KEYDIR with the signer's signing.pub)" : "");
        return CF_EXIT_RUNTIME;
    }
    if (keys == NULL && !quiet) {
        fprintf(stderr,
                "confide audit %s: note: checking signatures against %s/signing.pub stored with "
                "the log; pin the signer's key with --keys KEYDIR\n",
                cmd, log_dir);
    }
    return CF_EXIT_OK;
}

/* ---- verify -------------------------------------------------------------------------------- */

static const char verify_head[] =
    "usage: confide audit verify DIR [--keys KEYDIR | --pubkey FILE] [--old-keys KEYDIR]...\n"
    "                            [--trusted-head FILE [--witness-pub FILE]] [--strict]\n"
    "                            [--json]\n\n"
    "Checks the audit log in DIR: every record's CRC; with KEYDIR/data.key it decrypts\n"
    "and re-hashes every event and compares it with its stored leaf hash (without it,\n"
    "the stored leaf hashes are checked against the roots); recomputes the root at every\n"
    "signed tree head and checks its Ed25519 signature (KEYDIR/signing.pub, else the\n"
    "copy in DIR); checks heads only grow, indexes have no gaps and event ids no\n"
    "duplicates.\n\n"
    "A log's own heads prove nothing against whoever can rewrite its directory: pass a\n"
    "head kept elsewhere with --trusted-head (the last line of the run's\n"
    "tree_heads.ndjson, or a witness's cosigned checkpoint) and the log must be a\n"
    "consistent extension of it, or verify names the truncation or fork.\n\n"
    "options:\n";
static const char verify_tail[] =
    "\nevents counts events decrypted and re-hashed (null without data.key: contents not\n"
    "checked). Verdicts are checked against the signed roots with or without data.key.\n"
    "exit codes: 0 verified; 1 duplicates, an unsigned tail or (--strict) no pinned key;\n"
    "            3 cannot read the log or keys, or the wrong data key; 4 integrity alert\n"
    "            (names the first bad record: segment, byte offset, index, reason; or\n"
    "            the truncation or fork against the trusted head)\n";

static void print_completeness(FILE *f, double c)
{
    if (c >= 1.0) {
        fprintf(f, "1.0");
    } else {
        fprintf(f, "%.6f", c);
    }
}

static int cmd_verify(int argc, char **argv)
{
    const char *dir = NULL, *keys = NULL, *pubkey = NULL, *trusted = NULL, *witness = NULL;
    const char *older[8];
    size_t n_older = 0;
    bool json = false, strict = false;
    cli_list old_keys = {.v = older, .max = sizeof(older) / sizeof(older[0])};
    const cli_opt opts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &keys,
         .arg = "KEYDIR",
         .help = "key directory with signing.pub and, for contents, data.key"},
        {.name = "pubkey",
         .type = CLI_STR,
         .str = &pubkey,
         .arg = "FILE",
         .help = "pin the log's signing.pub (without --keys or --pubkey the key\n"
                 "stored in DIR is used and the result is unauthenticated)"},
        {.name = "trusted-head",
         .type = CLI_STR,
         .str = &trusted,
         .arg = "FILE",
         .help = "a checkpoint, or a tree_heads.ndjson (its last line)"},
        {.name = "witness-pub",
         .type = CLI_STR,
         .str = &witness,
         .arg = "FILE",
         .help = "require a valid cosignature by the witness with this\n"
                 "witness.pub on the trusted head, and that head to be the log's\n"
                 "newest (else exit 1: newer heads are not witnessed yet)"},
        {.name = "strict",
         .type = CLI_FLAG,
         .flag = &strict,
         .help = "an unauthenticated result (no pinned key) fails (exit 1)"},
        {.name = "old-keys",
         .type = CLI_LIST,
         .list = &old_keys,
         .arg = "KEYDIR",
         .help = "keys of an earlier epoch (rotation; repeatable, up to 8):\n"
                 "records name the key id they were sealed or signed under"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "print {\"events\":N,\"leaves\":N,\"verdicts\":N,\"gaps\":N,\n"
                 "\"duplicates\":N,\"sth_valid\":N,\"sth_invalid\":N,\"completeness\":X,...}"},
    };
    cli_spec spec = {.prog = "confide audit verify",
                     .head = verify_head,
                     .tail = verify_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    n_older = old_keys.n;
    if (dir == NULL) {
        fprintf(stderr, "confide audit verify: DIR is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "confide audit verify: %s is not a directory\n", dir);
        return CF_EXIT_RUNTIME;
    }
    if (witness != NULL && trusted == NULL) {
        fprintf(stderr, "confide audit verify: --witness-pub needs --trusted-head\n");
        return CF_EXIT_USAGE;
    }
    uint8_t pk[32];
    bool pinned = keys != NULL || pubkey != NULL;
    cf_audit_pubkey main_key;
    memset(&main_key, 0, sizeof(main_key));
    int rc = pubkey != NULL
                 ? cf_cli_load_pub_file("verify", pubkey, CF_KEY_KIND_SIGNING_PUB, pk, &main_key)
                 : load_pub("verify", keys, dir, pk, true, &main_key);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (!pinned) {
        fprintf(stderr, "confide audit verify: UNAUTHENTICATED: the signing key is the copy stored "
                        "in the log directory, which whoever rewrites the log can replace; pin "
                        "it with --keys KEYDIR or --pubkey FILE\n");
    }
    cf_audit_sth head;
    cf_audit_cosig cosigs[CF_AUDIT_COSIG_MAX];
    size_t n_cosigs = 0;
    if (trusted != NULL) {
        if ((rc = cf_cli_load_head("verify", trusted, &head, cosigs, &n_cosigs)) != CF_EXIT_OK) {
            return rc;
        }
        if (cf_audit_sth_verify(&head, pk) != CF_OK) {
            fprintf(stderr,
                    "confide audit verify: INTEGRITY ALERT: the trusted head %s is not "
                    "signed by the log's key\n",
                    trusted);
            return CF_EXIT_INTEGRITY;
        }
        if (witness != NULL) {
            uint8_t wpk[CF_AUDIT_PK_LEN];
            if ((rc = cf_cli_load_pub_file("verify", witness, CF_KEY_KIND_WITNESS_PUB, wpk,
                                           NULL)) != CF_EXIT_OK) {
                return rc;
            }
            bool cosigned = false;
            for (size_t i = 0; i < n_cosigs && !cosigned; i++) {
                cosigned = cf_audit_cosig_verify(&head, &cosigs[i], wpk) == CF_OK;
            }
            if (!cosigned) {
                fprintf(stderr,
                        "confide audit verify: INTEGRITY ALERT: the trusted head carries "
                        "no valid cosignature by the witness %s\n",
                        witness);
                return CF_EXIT_INTEGRITY;
            }
        }
    }
    char err[512] = "";
    cf_key *dk = NULL;
    if (keys != NULL) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/data.key", keys);
        if (access(p, F_OK) == 0) {
            if (cf_key_load(keys, "data.key", &dk, err, sizeof(err)) != CF_OK) {
                fprintf(stderr, "confide audit verify: %s\n", err);
                return CF_EXIT_RUNTIME;
            }
        }
    }
    if (dk == NULL) {
        fprintf(stderr, "confide audit verify: note: no data.key: checking leaf hashes and roots "
                        "only, not event contents\n");
    }
    /* Keys of earlier epochs: their signing.pub (and data.key, when present and readable). */
    cf_audit_pubkey old_pub[8];
    cf_key *old_data[8] = {NULL};
    size_t n_old_data = 0;
    for (size_t i = 0; i < n_older; i++) {
        if (cf_key_load_signing_pub(older[i], old_pub[i].key, old_pub[i].id, &old_pub[i].epoch, err,
                                    sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit verify: --old-keys: %s\n", err);
            rc = CF_EXIT_RUNTIME;
            goto out;
        }
        char p[4096];
        snprintf(p, sizeof(p), "%s/data.key", older[i]);
        if (dk != NULL && access(p, F_OK) == 0) {
            if (cf_key_load(older[i], "data.key", &old_data[n_old_data], err, sizeof(err)) !=
                CF_OK) {
                fprintf(stderr, "confide audit verify: --old-keys: %s\n", err);
                rc = CF_EXIT_RUNTIME;
                goto out;
            }
            n_old_data++;
        }
    }
    cf_audit_verify_opts vo = {.data_key = dk,
                               .public_key = pk,
                               .public_key_id = main_key.id,
                               .public_key_epoch = main_key.epoch,
                               .more_data_keys = (const cf_key *const *)old_data,
                               .n_more_data_keys = n_old_data,
                               .more_public_keys = old_pub,
                               .n_more_public_keys = n_older};
    cf_audit_report rep;
    cf_err e = cf_audit_verify(dir, &vo, &rep, err, sizeof(err));
out:
    cf_key_destroy(dk);
    for (size_t i = 0; i < n_old_data; i++) {
        cf_key_destroy(old_data[i]);
    }
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (e != CF_OK && e != CF_E_CORRUPT) {
        fprintf(stderr, "confide audit verify: %s\n", err[0] ? err : cf_strerror(e));
        return CF_EXIT_RUNTIME;
    }
    if (!rep.ok && (strstr(rep.bad_reason, "(wrong data key)") != NULL ||
                    strstr(rep.bad_reason, "(wrong signing key)") != NULL)) {
        /* Not tampering: the records were sealed under another data key. */
        fprintf(stderr, "confide audit verify: wrong key: %s (segment %s offset %" PRIu64 ")\n",
                rep.bad_reason, rep.bad_segment, rep.bad_offset);
        return CF_EXIT_RUNTIME;
    }
    cf_cli_head_check hc = {.ok = trusted == NULL};
    int head_rc = CF_EXIT_OK;
    if (trusted != NULL && rep.has_log_id) {
        head_rc = cf_cli_check_trusted_head(dir, &head, rep.log_id, json, &hc);
    } else if (trusted != NULL) {
        fprintf(stderr,
                "confide audit verify: INTEGRITY ALERT: truncated: the log is empty, the "
                "trusted head covers %" PRIu64 " events\n",
                head.tree_size);
        head_rc = CF_EXIT_INTEGRITY;
    }
    if (head_rc != CF_EXIT_OK && head_rc != CF_EXIT_INTEGRITY) {
        return head_rc;
    }
    char lid[2 * CF_AUDIT_LOG_ID_LEN + 1] = "";
    if (rep.has_log_id) {
        hex(rep.log_id, CF_AUDIT_LOG_ID_LEN, lid);
    }
    if (json) {
        char events[24] = "null";
        if (rep.decrypted) {
            snprintf(events, sizeof(events), "%" PRIu64, rep.events);
        }
        printf("{\"events\":%s,\"leaves\":%" PRIu64 ",\"dead_letters\":%" PRIu64
               ",\"verdicts\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"duplicates\":%" PRIu64
               ",\"sth_valid\":%" PRIu64 ",\"sth_invalid\":%" PRIu64
               ",\"log_id\":\"%s\",\"authenticated\":%s,\"trusted_head\":%s,\"completeness\":",
               events, rep.leaves, rep.dead_letters, rep.verdicts, rep.gaps, rep.duplicates,
               rep.sth_valid, rep.sth_invalid, lid, pinned ? "true" : "false",
               trusted == NULL ? "null"
               : hc.ok         ? "true"
                               : "false");
        print_completeness(stdout, rep.completeness);
        printf(",\"decrypted\":%s,\"checkpoints\":%" PRIu64 ",\"segments\":%" PRIu64
               ",\"header\":%s,\"ok\":%s",
               rep.decrypted ? "true" : "false", rep.checkpoints, rep.segments,
               rep.has_header ? "true" : "false", rep.ok ? "true" : "false");
        if (trusted != NULL) {
            printf(",\"trusted_size\":%" PRIu64 ",\"consistency_proof_hashes\":%zu"
                   ",\"witnessed\":%s",
                   head.tree_size, hc.proof_len,
                   witness == NULL      ? "null"
                   : hc.ok && hc.newest ? "true"
                                        : "false");
        }
        if (!rep.ok) {
            char reason[400];
            cf_json_quote(rep.bad_reason, strlen(rep.bad_reason), reason, sizeof(reason));
            printf(",\"first_bad\":{\"segment\":\"%s\",\"offset\":%" PRIu64 ",\"index\":%" PRIu64
                   ",\"reason\":%s}",
                   rep.bad_segment, rep.bad_offset, rep.bad_index, reason);
        }
        printf("}\n");
    } else {
        char events[48] = "contents not checked (no data.key)";
        if (rep.decrypted) {
            snprintf(events, sizeof(events), "%" PRIu64 " events re-hashed", rep.events);
        }
        printf("%s: log %s, %" PRIu64 " leaves, %s, %" PRIu64 " dead letters, %" PRIu64
               " verdicts, %" PRIu64 " signed heads valid, %" PRIu64 " invalid, %" PRIu64
               " gaps, %" PRIu64 " duplicates, %" PRIu64 " checkpoints, completeness ",
               dir, lid[0] ? lid : "(empty)", rep.leaves, events, rep.dead_letters, rep.verdicts,
               rep.sth_valid, rep.sth_invalid, rep.gaps, rep.duplicates, rep.checkpoints);
        print_completeness(stdout, rep.completeness);
        printf("\n");
    }
    if (rep.dup_check_bounded) {
        fprintf(stderr, "confide audit verify: note: the duplicate check reached its bound and "
                        "did not cover the whole log\n");
    }
    if (head_rc != CF_EXIT_OK) {
        return head_rc;
    }
    if (witness != NULL && hc.ok && !hc.newest) {
        /* The witness vouches for a prefix only: the newer heads may still be rewritten. */
        fprintf(stderr,
                "confide audit verify: check failed: the newest head of the log is not "
                "witnessed: the witness cosigned size %" PRIu64 ", the log has %" PRIu64
                " events (run the witness, then verify again)\n",
                head.tree_size, hc.log_size);
        return CF_EXIT_FAIL;
    }
    if (rep.ok) {
        if (!pinned && strict) {
            fprintf(stderr, "confide audit verify: --strict: unauthenticated result (no pinned "
                            "key)\n");
            return CF_EXIT_FAIL;
        }
        if (!json) {
            printf("verified: OK%s\n", pinned ? "" : " (unauthenticated: no pinned key)");
        }
        return CF_EXIT_OK;
    }
    fprintf(stderr,
            "confide audit verify: %s: first bad record: segment %s offset %" PRIu64
            " index %" PRIu64 ": %s\n",
            rep.alert ? "INTEGRITY ALERT" : "check failed", rep.bad_segment, rep.bad_offset,
            rep.bad_index, rep.bad_reason);
    return rep.alert ? CF_EXIT_INTEGRITY : CF_EXIT_FAIL;
}

/* ---- prove / consistency ------------------------------------------------------------------- */

typedef struct {
    uint8_t *leaves;
    uint64_t n;
    cf_audit_sth *sths;
    size_t ns;
    cf_audit_prover *pv;
} loaded;

static void loaded_free(loaded *l)
{
    cf_audit_prover_destroy(l->pv);
    cf_free(l->leaves);
    cf_free(l->sths);
}

static int load_log(const char *cmd, const char *dir, loaded *l)
{
    char err[512] = "";
    memset(l, 0, sizeof(*l));
    cf_err e = cf_audit_load_leaves(dir, &l->leaves, &l->n, &l->sths, &l->ns, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "confide audit %s: %s\n", cmd, err[0] ? err : cf_strerror(e));
        return e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    e = cf_audit_prover_create(&l->pv, l->leaves, l->n);
    if (e != CF_OK) {
        fprintf(stderr, "confide audit %s: %s\n", cmd, cf_strerror(e));
        loaded_free(l);
        return CF_EXIT_RUNTIME;
    }
    return CF_EXIT_OK;
}

static const cf_audit_sth *sth_of_size(const loaded *l, uint64_t size)
{
    for (size_t i = l->ns; i > 0; i--) {
        if (l->sths[i - 1].tree_size == size) {
            return &l->sths[i - 1];
        }
    }
    return NULL;
}

static const char prove_head[] =
    "usage: confide audit prove DIR --index I [--size N] [--json]\n\n"
    "Prints the RFC 9162 inclusion proof of leaf I in the tree of the first N leaves\n"
    "(default: the size of the last signed tree head), with the signed head of that\n"
    "size when the log has one (\"sth\"). Check it with `confide audit verify-proof`.\n\n"
    "options:\n";

static int cmd_prove(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t index = 0, size = 0;
    bool have_index = false, have_size = false, json = false;
    const cli_opt opts[] = {
        {.name = "index",
         .type = CLI_U64,
         .u64 = &index,
         .arg = "I",
         .given = &have_index,
         .help = "leaf (event) index, 0-based"},
        {.name = "size",
         .type = CLI_U64,
         .u64 = &size,
         .arg = "N",
         .given = &have_size,
         .help = "tree size, I < N <= leaves in the log"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "{\"leaf_index\":I,\"tree_size\":N,\"leaf_hash\":\"hex\",\"root\":\"hex\",\n"
                 "\"path\":[\"hex\",...],\"sth\":{...}}"},
    };
    cli_spec spec = {.prog = "confide audit prove",
                     .head = prove_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL || !have_index) {
        fprintf(stderr, "confide audit prove: %s is required (see --help)\n",
                dir == NULL ? "DIR" : "--index");
        return CF_EXIT_USAGE;
    }
    loaded l;
    int rc = load_log("prove", dir, &l);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (!have_size) {
        size = l.ns > 0 ? l.sths[l.ns - 1].tree_size : l.n;
    }
    uint8_t path[CF_AUDIT_PROOF_MAX * H], root[H], leaf[H];
    size_t plen = 0;
    if (index >= size || size > l.n) {
        fprintf(stderr,
                "confide audit prove: need --index < --size <= %" PRIu64
                " (the log's leaves); got index %" PRIu64 ", size %" PRIu64 "\n",
                l.n, index, size);
        loaded_free(&l);
        return CF_EXIT_USAGE;
    }
    CF_ASSERT(cf_audit_prover_inclusion(l.pv, index, size, path, &plen) == CF_OK);
    CF_ASSERT(cf_audit_prover_root(l.pv, size, root) == CF_OK);
    CF_ASSERT(cf_audit_prover_leaf(l.pv, index, leaf) == CF_OK);
    const cf_audit_sth *sth = sth_of_size(&l, size);
    if (json) {
        printf("{\"leaf_index\":%" PRIu64 ",\"tree_size\":%" PRIu64 ",\"leaf_hash\":", index, size);
        print_hash(stdout, leaf);
        printf(",\"root\":");
        print_hash(stdout, root);
        printf(",\"path\":");
        print_path(stdout, path, plen);
        if (sth != NULL) {
            printf(",\"sth\":");
            print_sth_json(stdout, sth);
        }
        printf("}\n");
    } else {
        char x[2 * H + 1];
        hex(leaf, H, x);
        printf("leaf %" PRIu64 " of %" PRIu64 "\nleaf_hash %s\n", index, size, x);
        hex(root, H, x);
        printf("root      %s%s\npath (%zu):\n", x, sth ? " (signed head)" : " (no signed head)",
               plen);
        for (size_t i = 0; i < plen; i++) {
            hex(path + i * H, H, x);
            printf("  %s\n", x);
        }
    }
    loaded_free(&l);
    return CF_EXIT_OK;
}

static const char consistency_head[] =
    "usage: confide audit consistency DIR --from M --to N [--json]\n\n"
    "Prints the RFC 9162 consistency proof that the tree of the first M leaves is a\n"
    "prefix of the tree of the first N (0 < M <= N <= leaves), with the signed heads\n"
    "of those sizes when the log has them (\"sth_from\", \"sth_to\").\n\n"
    "options:\n";

static int cmd_consistency(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t m = 0, n = 0;
    bool have_m = false, have_n = false, json = false;
    const cli_opt opts[] = {
        {.name = "from",
         .type = CLI_U64,
         .u64 = &m,
         .arg = "M",
         .given = &have_m,
         .help = "older tree size"},
        {.name = "to",
         .type = CLI_U64,
         .u64 = &n,
         .arg = "N",
         .given = &have_n,
         .help = "newer tree size (default: the last signed head)"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "{\"from\":M,\"to\":N,\"root_from\":\"hex\",\"root_to\":\"hex\","
                 "\"path\":[...]}"},
    };
    cli_spec spec = {.prog = "confide audit consistency",
                     .head = consistency_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL || !have_m) {
        fprintf(stderr, "confide audit consistency: %s is required (see --help)\n",
                dir == NULL ? "DIR" : "--from");
        return CF_EXIT_USAGE;
    }
    loaded l;
    int rc = load_log("consistency", dir, &l);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    if (!have_n) {
        n = l.ns > 0 ? l.sths[l.ns - 1].tree_size : l.n;
    }
    if (m == 0 || m > n || n > l.n) {
        fprintf(stderr,
                "confide audit consistency: need 0 < --from <= --to <= %" PRIu64
                " (the log's leaves); got %" PRIu64 " and %" PRIu64 "\n",
                l.n, m, n);
        loaded_free(&l);
        return CF_EXIT_USAGE;
    }
    uint8_t path[CF_AUDIT_PROOF_MAX * H], r1[H], r2[H];
    size_t plen = 0;
    CF_ASSERT(cf_audit_prover_consistency(l.pv, m, n, path, &plen) == CF_OK);
    CF_ASSERT(cf_audit_prover_root(l.pv, m, r1) == CF_OK);
    CF_ASSERT(cf_audit_prover_root(l.pv, n, r2) == CF_OK);
    const cf_audit_sth *s1 = sth_of_size(&l, m), *s2 = sth_of_size(&l, n);
    if (json) {
        printf("{\"from\":%" PRIu64 ",\"to\":%" PRIu64 ",\"root_from\":", m, n);
        print_hash(stdout, r1);
        printf(",\"root_to\":");
        print_hash(stdout, r2);
        printf(",\"path\":");
        print_path(stdout, path, plen);
        if (s1 != NULL) {
            printf(",\"sth_from\":");
            print_sth_json(stdout, s1);
        }
        if (s2 != NULL) {
            printf(",\"sth_to\":");
            print_sth_json(stdout, s2);
        }
        printf("}\n");
    } else {
        char x[2 * H + 1];
        hex(r1, H, x);
        printf("from %" PRIu64 " root %s\n", m, x);
        hex(r2, H, x);
        printf("to   %" PRIu64 " root %s\npath (%zu):\n", n, x, plen);
        for (size_t i = 0; i < plen; i++) {
            hex(path + i * H, H, x);
            printf("  %s\n", x);
        }
    }
    loaded_free(&l);
    return CF_EXIT_OK;
}

/* ---- verify-proof: a strict little JSON reader for our own proof files ----------------- */

typedef struct {
    const char *p;
    const char *end;
} jtext;

static const char *jkey(const jtext *t, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    size_t pl = strlen(pat);
    int depth = 0;
    for (const char *p = t->p; p + pl <= t->end; p++) {
        if (*p == '{') {
            depth++;
        } else if (*p == '}') {
            depth--;
        } else if (*p == '"') {
            if (depth == 1 && (size_t)(t->end - p) >= pl && memcmp(p, pat, pl) == 0) {
                const char *v = p + pl;
                while (v < t->end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) {
                    v++;
                }
                if (v < t->end && *v == ':') {
                    v++;
                    while (v < t->end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) {
                        v++;
                    }
                    return v;
                }
            }
            /* skip the string */
            for (p++; p < t->end && *p != '"'; p++) {
                if (*p == '\\') {
                    p++;
                }
            }
        }
    }
    return NULL;
}

static bool jnum(const jtext *t, const char *key, uint64_t *out)
{
    const char *v = jkey(t, key);
    if (v == NULL || *v < '0' || *v > '9') {
        return false;
    }
    char buf[32];
    size_t n = 0;
    while (v < t->end && *v >= '0' && *v <= '9' && n + 1 < sizeof(buf)) {
        buf[n++] = *v++;
    }
    buf[n] = '\0';
    return parse_u64(buf, out);
}

/* A quoted hex string of exactly @p len bytes at v. Returns the char after it or NULL. */
static const char *jhex_at(const jtext *t, const char *v, uint8_t *out, size_t len)
{
    if (v == NULL || v >= t->end || *v != '"') {
        return NULL;
    }
    const char *q = memchr(v + 1, '"', (size_t)(t->end - v - 1));
    if (q == NULL || (size_t)(q - v - 1) != 2 * len) {
        return NULL;
    }
    size_t got = 0;
    if (sodium_hex2bin(out, len, v + 1, 2 * len, NULL, &got, NULL) != 0 || got != len) {
        return NULL;
    }
    return q + 1;
}

static bool jhash(const jtext *t, const char *key, uint8_t out[H])
{
    return jhex_at(t, jkey(t, key), out, H) != NULL;
}

static bool jpath(const jtext *t, const char *key, uint8_t *path, size_t *n)
{
    const char *v = jkey(t, key);
    if (v == NULL || *v != '[') {
        return false;
    }
    v++;
    *n = 0;
    for (;;) {
        while (v < t->end && (*v == ' ' || *v == ',' || *v == '\n' || *v == '\t' || *v == '\r')) {
            v++;
        }
        if (v < t->end && *v == ']') {
            return true;
        }
        if (*n >= CF_AUDIT_PROOF_MAX) {
            return false;
        }
        v = jhex_at(t, v, path + *n * H, H);
        if (v == NULL) {
            return false;
        }
        (*n)++;
    }
}

/* An "sth" object inside the proof file. */
static bool jsth(const jtext *t, const char *key, cf_audit_sth *s)
{
    const char *v = jkey(t, key);
    if (v == NULL || *v != '{') {
        return false;
    }
    const char *e = memchr(v, '}', (size_t)(t->end - v));
    if (e == NULL) {
        return false;
    }
    jtext o = {v, e + 1};
    uint64_t ts = 0;
    memset(s, 0, sizeof(*s));
    if (!jnum(&o, "tree_size", &s->tree_size) || !jhash(&o, "root", s->root) ||
        !jnum(&o, "timestamp_us", &ts) ||
        jhex_at(&o, jkey(&o, "key_id"), s->key_id, CF_KEY_ID_LEN) == NULL ||
        jhex_at(&o, jkey(&o, "log_id"), s->log_id, CF_AUDIT_LOG_ID_LEN) == NULL ||
        jhex_at(&o, jkey(&o, "signature"), s->signature, CF_AUDIT_SIG_LEN) == NULL) {
        return false;
    }
    s->timestamp_us = (int64_t)ts;
    return true;
}

static const char verify_proof_head[] =
    "usage: confide audit verify-proof FILE [--keys KEYDIR] [--log DIR]\n\n"
    "Checks a proof written by `confide audit prove --json` or `confide audit\n"
    "consistency --json` offline (FILE - reads stdin): recomputes the root(s) from the\n"
    "leaf hash and path (RFC 9162 2.1.3.2 / 2.1.4.2) and compares. With --keys (or\n"
    "--log), it also checks that the root is the one in a signed tree head of that size:\n"
    "the head in the proof file, or else the log's, under KEYDIR/signing.pub (or the\n"
    "copy in the log directory).\n\n"
    "options:\n";
static const char verify_proof_tail[] =
    "\nexit codes: 0 valid, 2 usage or malformed file, 3 cannot read, 4 proof or head\n"
    "            does not verify\n";

/* Checks that @p root of @p size is signed: by the head embedded in the file, else the log's. */
static int check_signed(const char *what, uint64_t size, const uint8_t root[H],
                        const cf_audit_sth *embedded, const loaded *l, const uint8_t pk[32])
{
    const cf_audit_sth *s = embedded;
    if (s == NULL && l != NULL) {
        s = sth_of_size(l, size);
    }
    if (s == NULL) {
        fprintf(stderr,
                "confide audit verify-proof: no signed tree head of size %" PRIu64 " for %s\n",
                size, what);
        return CF_EXIT_FAIL;
    }
    if (s->tree_size != size || memcmp(s->root, root, H) != 0) {
        fprintf(stderr,
                "confide audit verify-proof: %s root differs from the signed head of size "
                "%" PRIu64 "\n",
                what, size);
        return CF_EXIT_INTEGRITY;
    }
    if (cf_audit_sth_verify(s, pk) != CF_OK) {
        fprintf(stderr,
                "confide audit verify-proof: signature of the tree head of size %" PRIu64
                " does not verify\n",
                size);
        return CF_EXIT_INTEGRITY;
    }
    return CF_EXIT_OK;
}

static int cmd_verify_proof(int argc, char **argv)
{
    const char *file = NULL, *keys = NULL, *log_dir = NULL;
    const cli_opt opts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &keys,
         .arg = "KEYDIR",
         .help = "directory with the signer's signing.pub"},
        {.name = "log",
         .type = CLI_STR,
         .str = &log_dir,
         .arg = "DIR",
         .help = "audit log to take the signed heads from"},
    };
    cli_spec spec = {.prog = "confide audit verify-proof",
                     .head = verify_proof_head,
                     .tail = verify_proof_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &file,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (file == NULL) {
        fprintf(stderr, "confide audit verify-proof: FILE is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "confide audit verify-proof: %s: %s\n", file, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    bool too_big = !feof(f) && len == sizeof(buf) - 1;
    if (f != stdin) {
        fclose(f);
    }
    if (too_big) {
        fprintf(stderr, "confide audit verify-proof: %s: larger than a proof can be\n", file);
        return CF_EXIT_USAGE;
    }
    buf[len] = '\0';
    const char *open = memchr(buf, '{', len);
    jtext t = {open != NULL ? open : buf, buf + len};
    uint8_t path[CF_AUDIT_PROOF_MAX * H];
    size_t plen = 0;
    bool inclusion = jkey(&t, "leaf_index") != NULL;
    int rc = CF_EXIT_OK;
    uint8_t pk[32];
    loaded l;
    bool have_log = false;
    if (keys != NULL || log_dir != NULL) {
        if ((rc = load_pub("verify-proof", keys, log_dir, pk, false, NULL)) != CF_EXIT_OK) {
            return rc;
        }
        if (log_dir != NULL) {
            if ((rc = load_log("verify-proof", log_dir, &l)) != CF_EXIT_OK) {
                return rc;
            }
            have_log = true;
        }
    }
    if (inclusion) {
        uint64_t idx, size;
        uint8_t leaf[H], root[H];
        cf_audit_sth sth;
        if (!jnum(&t, "leaf_index", &idx) || !jnum(&t, "tree_size", &size) ||
            !jhash(&t, "leaf_hash", leaf) || !jhash(&t, "root", root) ||
            !jpath(&t, "path", path, &plen)) {
            fprintf(stderr,
                    "confide audit verify-proof: %s: not an inclusion proof (needs "
                    "leaf_index, tree_size, leaf_hash, root, path of 32-byte hex "
                    "hashes)\n",
                    file);
            rc = CF_EXIT_USAGE;
            goto done;
        }
        bool has_sth = jsth(&t, "sth", &sth);
        if (cf_audit_verify_inclusion(idx, size, leaf, path, plen, root) != CF_OK) {
            printf("inclusion proof of leaf %" PRIu64 " in tree %" PRIu64 ": INVALID\n", idx, size);
            rc = CF_EXIT_INTEGRITY;
            goto done;
        }
        if (keys != NULL || log_dir != NULL) {
            rc = check_signed("the proof's", size, root, has_sth ? &sth : NULL,
                              have_log ? &l : NULL, pk);
            if (rc != CF_EXIT_OK) {
                goto done;
            }
        }
        printf("inclusion proof of leaf %" PRIu64 " in tree %" PRIu64 ": valid%s\n", idx, size,
               (keys != NULL || log_dir != NULL) ? ", root signed" : "");
    } else {
        uint64_t m, n;
        uint8_t r1[H], r2[H];
        cf_audit_sth s1, s2;
        if (!jnum(&t, "from", &m) || !jnum(&t, "to", &n) || !jhash(&t, "root_from", r1) ||
            !jhash(&t, "root_to", r2) || !jpath(&t, "path", path, &plen)) {
            fprintf(stderr,
                    "confide audit verify-proof: %s: not an inclusion or consistency "
                    "proof (needs from, to, root_from, root_to, path, or leaf_index, "
                    "tree_size, leaf_hash, root, path)\n",
                    file);
            rc = CF_EXIT_USAGE;
            goto done;
        }
        bool h1 = jsth(&t, "sth_from", &s1), h2 = jsth(&t, "sth_to", &s2);
        if (cf_audit_verify_consistency(m, n, r1, r2, path, plen) != CF_OK) {
            printf("consistency proof %" PRIu64 " -> %" PRIu64 ": INVALID\n", m, n);
            rc = CF_EXIT_INTEGRITY;
            goto done;
        }
        if (keys != NULL || log_dir != NULL) {
            rc = check_signed("root_from", m, r1, h1 ? &s1 : NULL, have_log ? &l : NULL, pk);
            if (rc == CF_EXIT_OK) {
                rc = check_signed("root_to", n, r2, h2 ? &s2 : NULL, have_log ? &l : NULL, pk);
            }
            if (rc != CF_EXIT_OK) {
                goto done;
            }
        }
        printf("consistency proof %" PRIu64 " -> %" PRIu64 ": valid%s\n", m, n,
               (keys != NULL || log_dir != NULL) ? ", both roots signed" : "");
    }
done:
    if (have_log) {
        loaded_free(&l);
    }
    return rc;
}

int cf_cli_read_consistency(const char *cmd, const char *file, uint64_t *m, uint64_t *n,
                            uint8_t *path, size_t *plen)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "confide audit %s: %s: %s\n", cmd, file, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    const char *open = memchr(buf, '{', len);
    jtext t = {open != NULL ? open : buf, buf + len};
    if (!jnum(&t, "from", m) || !jnum(&t, "to", n) || !jpath(&t, "path", path, plen)) {
        fprintf(stderr,
                "confide audit %s: %s: not a consistency proof (`confide audit consistency "
                "--json`: from, to, path)\n",
                cmd, file);
        return CF_EXIT_USAGE;
    }
    return CF_EXIT_OK;
}

/* ---- show ---------------------------------------------------------------------------------- */

static const char show_head[] =
    "usage: confide audit show DIR [--json]\n\n"
    "Lists the segments of the log (name, bytes, records, events), the number of\n"
    "signed heads and checkpoints, and the last signed tree head. Never prints event\n"
    "contents and needs no keys.\n\n"
    "options:\n";

static int cmd_show(int argc, char **argv)
{
    const char *dir = NULL;
    bool json = false;
    const cli_opt opts[] = {
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON object"},
    };
    cli_spec spec = {.prog = "confide audit show",
                     .head = show_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL) {
        fprintf(stderr, "confide audit show: DIR is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    char err[512] = "";
    cf_audit_reader *r = NULL;
    cf_err e = cf_audit_reader_open(&r, dir, NULL, 0, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "confide audit show: %s\n", err[0] ? err : cf_strerror(e));
        return CF_EXIT_RUNTIME;
    }
    typedef struct {
        char name[32];
        uint64_t records, events, first;
    } seginfo;
    seginfo *segs = NULL;
    size_t nseg = 0, cap = 0;
    uint64_t events = 0, dead = 0, heads = 0, ckpts = 0, last_ckpt = 0;
    bool have_sth = false;
    cf_audit_sth last;
    cf_audit_entry en;
    int rc = CF_EXIT_OK;
    while ((e = cf_audit_reader_next(r, &en, err, sizeof(err))) == CF_OK) {
        if (nseg == 0 || strcmp(segs[nseg - 1].name, en.segment) != 0) {
            if (nseg == cap) {
                cap = cap ? cap * 2 : 16;
                seginfo *ns = cf_realloc(segs, cap * sizeof(*ns));
                if (ns == NULL) {
                    rc = CF_EXIT_RUNTIME;
                    goto done;
                }
                segs = ns;
            }
            memset(&segs[nseg], 0, sizeof(segs[nseg]));
            snprintf(segs[nseg].name, sizeof(segs[nseg].name), "%s", en.segment);
            segs[nseg].first = strtoull(en.segment, NULL, 10);
            nseg++;
        }
        segs[nseg - 1].records++;
        if (en.type == CF_AUDIT_REC_BATCH) {
            segs[nseg - 1].events += en.count;
            events += en.count;
        } else if (en.type == CF_AUDIT_REC_DEAD) {
            dead += en.count; /* rejected input records: leaves, not events */
        } else if (en.type == CF_AUDIT_REC_STH) {
            heads++;
            last = en.sth;
            have_sth = true;
        } else {
            ckpts++;
            last_ckpt = en.index;
        }
    }
    if (e != CF_E_EOF) {
        fprintf(stderr, "confide audit show: %s\n", err);
        rc = CF_EXIT_INTEGRITY;
        goto done;
    }
    uint8_t lid_b[CF_AUDIT_LOG_ID_LEN];
    char lidhex[2 * CF_AUDIT_LOG_ID_LEN + 1] = "", lid[2 * CF_AUDIT_LOG_ID_LEN + 3] = "null";
    bool has_lid = cf_audit_reader_log_id(r, lid_b);
    if (has_lid) {
        hex(lid_b, CF_AUDIT_LOG_ID_LEN, lidhex);
        snprintf(lid, sizeof(lid), "\"%s\"", lidhex);
    }
    bool header = cf_audit_reader_has_header(r);
    if (header && nseg > 0 && segs[0].first == 0) {
        segs[0].records++; /* the log-header record, which the reader consumes */
    }
    if (json) {
        printf("{\"dir\":");
        char q[8192];
        cf_json_quote(dir, strlen(dir), q, sizeof(q));
        printf("%s,\"log_id\":%s,\"header\":%s,\"segments\":[", q, lid, header ? "true" : "false");
    } else {
        printf("audit log %s\nlog id %s%s\n%-26s %12s %8s %10s\n", dir,
               has_lid ? lidhex : "(none yet)",
               has_lid && !header ? " (no log-header record: written before header records)" : "",
               "segment", "bytes", "records", "events");
    }
    for (size_t i = 0; i < nseg; i++) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, segs[i].name);
        long long bytes = stat(p, &st) == 0 ? (long long)st.st_size : -1;
        if (json) {
            printf("%s{\"name\":\"%s\",\"first_index\":%" PRIu64
                   ",\"bytes\":%lld,\"records\":%" PRIu64 ",\"events\":%" PRIu64 "}",
                   i ? "," : "", segs[i].name, segs[i].first, bytes, segs[i].records,
                   segs[i].events);
        } else {
            printf("%-26s %12lld %8" PRIu64 " %10" PRIu64 "\n", segs[i].name, bytes,
                   segs[i].records, segs[i].events);
        }
    }
    if (json) {
        printf("],\"events\":%" PRIu64 ",\"dead_letters\":%" PRIu64 ",\"tree_heads\":%" PRIu64
               ",\"checkpoints\":%" PRIu64,
               events, dead, heads, ckpts);
        if (ckpts > 0) {
            printf(",\"last_checkpoint_index\":%" PRIu64, last_ckpt);
        }
        if (have_sth) {
            printf(",\"last_sth\":");
            print_sth_json(stdout, &last);
        }
        printf("}\n");
    } else {
        printf("events %" PRIu64 ", dead letters %" PRIu64 ", signed tree heads %" PRIu64
               ", checkpoints %" PRIu64 "\n",
               events, dead, heads, ckpts);
        if (ckpts > 0) {
            printf("last checkpoint covers events [0, %" PRIu64 ")\n", last_ckpt);
        }
        if (have_sth) {
            char x[2 * H + 1], kid[2 * CF_KEY_ID_LEN + 1], ts[64];
            hex(last.root, H, x);
            cf_key_id_hex(last.key_id, kid);
            fmt_time(last.timestamp_us, ts, sizeof(ts));
            printf("last signed head: size %" PRIu64 " root %s\n  signed %s by key %s\n",
                   last.tree_size, x, ts, kid);
        } else {
            printf("no signed tree head (empty log)\n");
        }
    }
done:
    cf_free(segs);
    cf_audit_reader_destroy(r);
    return rc;
}

/* ---- dead-letters --------------------------------------------------------------------------- */

static const char dead_letters_head[] =
    "usage: confide audit dead-letters DIR [--keys KEYDIR]\n\n"
    "Lists the rejected input records the audit log holds (record type 5, docs/audit.md\n"
    "2.5), in input order, one JSON object per line:\n"
    "  {\"index\":I,\"source\":S,\"line\":N,\"offset\":N,\"reason\":S,\"raw\":S,"
    "\"raw_truncated\":B}\n"
    "with the raw record as read (bytes that are not UTF-8 as \\u00XX), decrypted with\n"
    "KEYDIR/data.key. Without --keys (or without data.key there) \"raw\" is null:\n"
    "positions and reasons are in clear in the log. The raw records can hold account and\n"
    "merchant ids and amounts: treat the output like the input. `confide audit verify`\n"
    "proves that these records are in the signed tree.\n\n"
    "exit codes: 0 ok, 2 usage, 3 cannot read the log or the key, 4 damaged log\n\n"
    "options:\n";

static int print_dead_entries(const cf_audit_entry *en, char **buf, size_t *cap)
{
    for (uint32_t i = 0; i < en->count; i++) {
        const cf_audit_dead *d = &en->dead[i];
        size_t need = 6 * (d->raw_len + 2 * CF_AUDIT_DEAD_TEXT_MAX) + 64;
        if (need > *cap) {
            char *nb = cf_realloc(*buf, need);
            if (nb == NULL) {
                return CF_EXIT_RUNTIME;
            }
            *buf = nb;
            *cap = need;
        }
        char *q = *buf;
        printf("{\"index\":%" PRIu64 ",\"source\":", en->index + i);
        cf_json_quote(d->source, strlen(d->source), q, *cap);
        fputs(q, stdout);
        printf(",\"line\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"reason\":", d->line, d->offset);
        cf_json_quote(d->reason, strlen(d->reason), q, *cap);
        fputs(q, stdout);
        fputs(",\"raw\":", stdout);
        if (d->raw != NULL) {
            cf_json_quote(d->raw, d->raw_len, q, *cap);
            fputs(q, stdout);
        } else {
            fputs("null", stdout);
        }
        printf(",\"raw_truncated\":%s}\n", d->raw_truncated ? "true" : "false");
    }
    return CF_EXIT_OK;
}

static int cmd_dead_letters(int argc, char **argv)
{
    const char *dir = NULL, *keys = NULL;
    const cli_opt opts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &keys,
         .arg = "KEYDIR",
         .help = "key directory holding data.key (for the raw records)"},
    };
    cli_spec spec = {.prog = "confide audit dead-letters",
                     .head = dead_letters_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL) {
        fprintf(stderr, "confide audit dead-letters: DIR is required (see --help)\n");
        return CF_EXIT_USAGE;
    }
    char err[512] = "";
    cf_key *dk = NULL;
    if (keys != NULL) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/data.key", keys);
        if (access(p, F_OK) != 0) {
            fprintf(stderr, "confide audit dead-letters: note: no %s: positions and reasons only\n",
                    p);
        } else if (cf_key_load(keys, "data.key", &dk, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit dead-letters: %s\n", err);
            return CF_EXIT_RUNTIME;
        }
    }
    cf_audit_reader *r = NULL;
    cf_err e = cf_audit_reader_open(&r, dir, dk, 0, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "confide audit dead-letters: %s\n", err[0] ? err : cf_strerror(e));
        cf_key_destroy(dk);
        return CF_EXIT_RUNTIME;
    }
    int rc = CF_EXIT_OK;
    char *buf = NULL;
    size_t cap = 0;
    cf_audit_entry en;
    while (rc == CF_EXIT_OK && (e = cf_audit_reader_next(r, &en, err, sizeof(err))) == CF_OK) {
        if (en.type == CF_AUDIT_REC_DEAD) {
            rc = print_dead_entries(&en, &buf, &cap);
        }
    }
    if (rc == CF_EXIT_OK && e != CF_E_EOF) {
        fprintf(stderr, "confide audit dead-letters: %s\n", err);
        rc = e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    if (fflush(stdout) != 0 && rc == CF_EXIT_OK) {
        rc = CF_EXIT_RUNTIME;
    }
    if (buf != NULL) {
        sodium_memzero(buf, cap); /* raw records */
    }
    cf_free(buf);
    cf_audit_reader_destroy(r);
    cf_key_destroy(dk);
    return rc;
}

/* ---- append -------------------------------------------------------------------------------- */

static const char append_head[] =
    "usage: confide audit append DIR --keys KEYDIR --input FILE [--format F]\n"
    "                            [--batch N] [--fsync P] [--segment-mb S]\n\n"
    "Archives an input file into the audit log in DIR (created if needed): decodes it,\n"
    "appends the accepted events in batches, each followed by a signed tree head, and\n"
    "prints the index range and the last head. Each event's seq is set to its log index;\n"
    "verdicts are empty (no compliance rules run here). Rejected records are counted,\n"
    "never printed. Uses KEYDIR/data.key and KEYDIR/signing.key.\n\n"
    "options:\n";
static const char append_tail[] =
    "\nexit codes: 0 ok, 2 usage, 3 I/O or keys, 4 the existing log is damaged\n";

static cf_format guess_format(const char *path)
{
    size_t n = strlen(path);
    if (n >= 7 && strcmp(path + n - 7, ".ndjson") == 0) {
        return CF_FMT_NDJSON;
    }
    if (strstr(path, "fdh") != NULL) {
        return CF_FMT_FDH;
    }
    return CF_FMT_CSV;
}

typedef struct {
    cf_audit_log *log;
    cf_event *ev;
    uint32_t n, cap;
    uint64_t appended, rejected, first;
    bool have_first;
    cf_audit_sth sth;
} appender;

static cf_err flush_batch(appender *a)
{
    if (a->n == 0) {
        return CF_OK;
    }
    uint64_t base = cf_audit_next_index(a->log);
    for (uint32_t i = 0; i < a->n; i++) {
        a->ev[i].seq = base + i;
    }
    uint64_t first = 0;
    cf_err e = cf_audit_append(a->log, a->ev, a->n, NULL, &first, &a->sth);
    if (e != CF_OK) {
        return e;
    }
    if (!a->have_first) {
        a->first = first;
        a->have_first = true;
    }
    a->appended += a->n;
    a->n = 0;
    return CF_OK;
}

static int cmd_append(int argc, char **argv)
{
    const char *dir = NULL, *keys = NULL, *input = NULL, *fmt_s = NULL, *fsync_s = NULL;
    uint64_t batch = 1024, seg_mb = 64;
    const cli_opt copts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &keys,
         .arg = "KEYDIR",
         .help = "key directory (confide keygen)"},
        {.name = "input",
         .type = CLI_STR,
         .str = &input,
         .arg = "FILE",
         .help = "input file (- for stdin)"},
        {.name = "format",
         .type = CLI_STR,
         .str = &fmt_s,
         .arg = "F",
         .help = "csv | ndjson | fdh (default: from the file name, else csv)"},
        {.name = "batch",
         .type = CLI_U64,
         .u64 = &batch,
         .arg = "N",
         .help = "events per batch record, 1..65536 (default 1024)"},
        {.name = "fsync",
         .type = CLI_STR,
         .str = &fsync_s,
         .arg = "P",
         .help = "batch | interval:MS | none (default batch)"},
        {.name = "segment-mb",
         .type = CLI_U64,
         .u64 = &seg_mb,
         .arg = "S",
         .help = "segment size bound in MiB (default 64)"},
    };
    cli_spec spec = {.prog = "confide audit append",
                     .head = append_head,
                     .tail = append_tail,
                     .opts = copts,
                     .n_opts = CLI_N(copts),
                     .pos = &dir,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL || keys == NULL || input == NULL) {
        fprintf(stderr, "confide audit append: %s is required (see --help)\n",
                dir == NULL    ? "DIR"
                : keys == NULL ? "--keys"
                               : "--input");
        return CF_EXIT_USAGE;
    }
    if (batch < 1 || batch > CF_AUDIT_BATCH_MAX) {
        fprintf(stderr, "confide audit append: --batch must be 1..%u\n", CF_AUDIT_BATCH_MAX);
        return CF_EXIT_USAGE;
    }
    if (seg_mb < 1 || seg_mb > 4096) {
        fprintf(stderr, "confide audit append: --segment-mb must be 1..4096\n");
        return CF_EXIT_USAGE;
    }
    char err[512] = "";
    cf_audit_opts opts;
    cf_audit_opts_default(&opts);
    opts.segment_bytes_max = seg_mb << 20;
    if (fsync_s != NULL && cf_audit_fsync_parse(fsync_s, &opts, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit append: --fsync: %s\n", err);
        return CF_EXIT_USAGE;
    }
    if (opts.fsync == CF_AUDIT_FSYNC_NONE) {
        fprintf(stderr, "confide audit append: warning: --fsync none: a crash may lose events "
                        "(benchmarks only)\n");
    }
    cf_format fmt = guess_format(input);
    if (fmt_s != NULL && cf_format_parse(fmt_s, &fmt) != CF_OK) {
        fprintf(stderr, "confide audit append: --format must be csv, ndjson or fdh (got '%s')\n",
                fmt_s);
        return CF_EXIT_USAGE;
    }

    int rc = CF_EXIT_OK;
    int fd = -1;
    char *buf = NULL;
    cf_splitter *sp = NULL;
    cf_decoder *dec = NULL;
    appender a;
    memset(&a, 0, sizeof(a));
    cf_audit_recovery rec;
    cf_err e = cf_audit_open(&a.log, dir, keys, &opts, &rec, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "confide audit append: %s\n", err[0] ? err : cf_strerror(e));
        return e == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    if (rec.truncated) {
        fprintf(stderr,
                "confide audit append: recovered: cut a torn tail of %" PRIu64
                " bytes at %s offset %" PRIu64 "\n",
                rec.truncated_bytes, rec.truncated_segment, rec.truncated_offset);
    }
    fd = strcmp(input, "-") == 0 ? 0 : open(input, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "confide audit append: %s: %s\n", input, strerror(errno));
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    a.cap = (uint32_t)batch;
    a.ev = cf_calloc(a.cap, sizeof(*a.ev));
    enum { BUF = 1 << 20 };
    buf = cf_malloc(BUF);
    if (a.ev == NULL || buf == NULL || cf_splitter_create(&sp, fmt, 0) != CF_OK ||
        cf_decoder_create(&dec, fmt, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit append: cannot set up the decoder: %s\n",
                err[0] ? err : "out of memory");
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    size_t have = 0;
    bool eof = false;
    while (!eof) {
        ssize_t got = read(fd, buf + have, BUF - have);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "confide audit append: read %s: %s\n", input, strerror(errno));
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        eof = got == 0;
        have += (size_t)got;
        size_t pos = 0;
        for (;;) {
            cf_record r;
            size_t used = 0;
            e = cf_splitter_next(sp, buf + pos, have - pos, eof, &r, &used);
            pos += used;
            if (e != CF_OK) {
                break;
            }
            char reason[160];
            cf_decode_result dr = cf_decoder_decode(dec, &r, &a.ev[a.n], reason, sizeof(reason));
            if (dr == CF_DECODE_REJECT) {
                a.rejected++;
            } else if (dr == CF_DECODE_EVENT && ++a.n == a.cap) {
                e = flush_batch(&a);
                if (e != CF_OK) {
                    fprintf(stderr, "confide audit append: append failed: %s\n", cf_strerror(e));
                    rc = CF_EXIT_RUNTIME;
                    goto done;
                }
            }
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (have == BUF) {
            /* The splitter skips over-long records itself; a full buffer cannot happen. */
            fprintf(stderr, "confide audit append: input record too long\n");
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
    }
    e = flush_batch(&a);
    if (e != CF_OK) {
        fprintf(stderr, "confide audit append: append failed: %s\n", cf_strerror(e));
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    if (a.appended == 0) {
        printf("appended 0 events (%" PRIu64 " rejected); log holds %" PRIu64 " events\n",
               a.rejected, cf_audit_next_index(a.log));
    } else {
        char x[2 * H + 1];
        hex(a.sth.root, H, x);
        printf("appended %" PRIu64 " events [%" PRIu64 ", %" PRIu64 ") from %s (%s), %" PRIu64
               " rejected\nsigned head: size %" PRIu64 " root %s\n",
               a.appended, a.first, a.first + a.appended, input, cf_format_name(fmt), a.rejected,
               a.sth.tree_size, x);
    }
done:
    if (a.log != NULL) {
        e = cf_audit_close(a.log);
        if (e != CF_OK && rc == CF_EXIT_OK) {
            fprintf(stderr, "confide audit append: closing the log: %s\n", cf_strerror(e));
            rc = CF_EXIT_RUNTIME;
        }
    }
    if (fd > 0) {
        close(fd);
    }
    cf_decoder_destroy(dec);
    cf_splitter_destroy(sp);
    cf_free(buf);
    cf_free(a.ev);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} sub;

static const sub subs[] = {
    {"verify", cmd_verify, "check CRCs, contents, roots, signatures, sequence"},
    {"witness", cf_cli_witness, "cosign consistent heads of a log"},
    {"verify-results", cf_cli_verify_results,
     "check released results: signatures, and a recomputation from the log"},
    {"prove", cmd_prove, "inclusion proof of one event"},
    {"consistency", cmd_consistency, "consistency proof between two sizes"},
    {"verify-proof", cmd_verify_proof, "check a proof file offline"},
    {"show", cmd_show, "segments, sizes, last signed head (no contents)"},
    {"dead-letters", cmd_dead_letters,
     "the rejected input records the log holds (raw with data.key)"},
    {"report", cf_cli_report, "an auditor's report (HTML or Markdown)"},
    {"append", cmd_append, "archive an input file into a log"},
};

static void audit_usage(FILE *f)
{
    fprintf(f, "usage: confide audit <subcommand> [options]   (confide audit <sub> --help)\n\n"
               "The audit log: encrypted events as leaves of an RFC 9162 Merkle tree with Ed25519\n"
               "signed tree heads (docs/audit.md).\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        fprintf(f, "  %-13s %s\n", subs[i].name, subs[i].summary);
    }
    fprintf(f, "\nexit codes: 0 ok, 1 check failed (no tampering evidence), 2 usage, 3 runtime,\n"
               "            4 integrity alert\n");
}

static int audit_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        audit_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CF_EXIT_USAGE : CF_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i].name) == 0) {
            return subs[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "confide audit: unknown subcommand '%s'\n", argv[1]);
    audit_usage(stderr);
    return CF_EXIT_USAGE;
}

const cf_command cf_cmd_audit = {"audit", "verify the audit log, prove inclusion and consistency",
                                 audit_main};
