/*
 * confide keygen: writes a key directory (docs/security.md) and reports what it wrote:
 * file, kind, key id, epoch and mode -- never key material. Keys are read back after
 * writing, so a directory that would not load (modes, corruption) fails here, not at run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "opts.h"
#include "confide/keys.h"

static const char keygen_head[] =
    "usage: confide keygen --dir DIR --parties K [--epoch N] [--force]\n\n"
    "Writes the keys of one deployment with K aggregation parties (2..8) into DIR\n"
    "(created with mode 0700; secret files 0600, *.pub 0644):\n"
    "  gateway.key    MAC master secret and the seeds of parties 1..K-1 (gateway)\n"
    "  combiner.key   MAC master secret, to verify aggregates (combiner)\n"
    "  auditor.key    seeds of parties 1..K-1, to attribute a failed MAC (auditor)\n"
    "  party-<i>.key  seed of party i, i = 1..K-1 (party 0 needs no key)\n"
    "  pseudonym.key  BLAKE2b key for group-key pseudonyms (gateway)\n"
    "  data.key       XChaCha20-Poly1305 key of the audit log (gateway, auditor)\n"
    "  signing.key    Ed25519 key signing the log's tree heads (gateway)\n"
    "  signing.pub    its public key (anyone verifying the log)\n"
    "  results.key    Ed25519 key signing released results (combiner)\n"
    "  results.pub    its public key (anyone verifying results)\n"
    "Key ids are random: they identify a key and say nothing about it.\n\n"
    "options:\n";
static const char keygen_tail[] =
    "\nexit codes: 0 ok, 2 usage, 3 could not write or read back the keys\n";

/* Loads one written file back and prints its line of the report. */
static int report(const char *dir, const char *name)
{
    char err[512] = "";
    char path[4096];
    char idhex[2 * CF_KEY_ID_LEN + 1];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (stat(path, &st) != 0) {
        fprintf(stderr, "confide keygen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (strcmp(name, "signing.pub") == 0) {
        uint8_t pk[CF_KEY_SIGN_PK_LEN], id[CF_KEY_ID_LEN];
        uint32_t epoch = 0;
        if (cf_key_load_signing_pub(dir, pk, id, &epoch, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide keygen: read-back failed: %s\n", err);
            return -1;
        }
        cf_key_id_hex(id, idhex);
        printf("  %-14s %-15s id %s  epoch %u  mode %04o\n", name, CF_KEY_KIND_SIGNING_PUB, idhex,
               (unsigned)epoch, (unsigned)(st.st_mode & 07777));
        return 0;
    }
    cf_key *k = NULL;
    if (cf_key_load(dir, name, &k, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide keygen: read-back failed: %s\n", err);
        return -1;
    }
    cf_key_id_hex(k->id, idhex);
    printf("  %-14s %-15s id %s  epoch %u  mode %04o\n", name, k->kind, idhex, (unsigned)k->epoch,
           (unsigned)(st.st_mode & 07777));
    cf_key_destroy(k);
    return 0;
}

static int keygen_main(int argc, char **argv)
{
    const char *dir = NULL;
    uint32_t parties = 0, epoch = 1;
    bool have_parties = false, force = false;
    const cli_opt opts[] = {
        {.name = "dir",
         .type = CLI_STR,
         .str = &dir,
         .arg = "DIR",
         .help = "key directory (required)"},
        {.name = "parties",
         .type = CLI_U32,
         .u32 = &parties,
         .arg = "K",
         .min = CF_KEY_PARTIES_MIN,
         .max = CF_KEY_PARTIES_MAX,
         .given = &have_parties,
         .help = "number of parties, 2..8 (required)"},
        {.name = "epoch",
         .type = CLI_U32,
         .u32 = &epoch,
         .arg = "N",
         .help = "key epoch recorded in every file and result (default 1)"},
        {.name = "force",
         .type = CLI_FLAG,
         .flag = &force,
         .help = "replace existing keys (rotation: see docs/security.md)"},
    };
    cli_spec spec = {.prog = "confide keygen",
                     .head = keygen_head,
                     .tail = keygen_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (dir == NULL || !have_parties) {
        fprintf(stderr, "confide keygen: %s is required (see confide keygen --help)\n",
                dir == NULL ? "--dir" : "--parties");
        return CF_EXIT_USAGE;
    }
    char err[512] = "";
    cf_err e = cf_keys_generate(dir, (unsigned)parties, epoch, force ? 1 : 0, err, sizeof(err));
    if (e != CF_OK) {
        fprintf(stderr, "confide keygen: %s\n", err[0] != '\0' ? err : cf_strerror(e));
        return e == CF_E_INVAL ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
    }
    printf("confide keygen: wrote keys for %u parties, epoch %u, into %s (mode 0700):\n",
           (unsigned)parties, (unsigned)epoch, dir);
    const char *fixed[] = {"gateway.key", "combiner.key", "auditor.key"};
    for (size_t i = 0; i < 3; i++) {
        if (report(dir, fixed[i]) != 0) {
            return CF_EXIT_RUNTIME;
        }
    }
    for (uint32_t i = 1; i < parties; i++) {
        char name[32];
        snprintf(name, sizeof(name), "party-%u.key", (unsigned)i);
        if (report(dir, name) != 0) {
            return CF_EXIT_RUNTIME;
        }
    }
    const char *rest[] = {"pseudonym.key", "data.key",    "signing.key",
                          "signing.pub",   "results.key", "results.pub"};
    for (size_t i = 0; i < 6; i++) {
        if (report(dir, rest[i]) != 0) {
            return CF_EXIT_RUNTIME;
        }
    }
    printf("Distribute party-<i>.key to party i only; keep gateway, pseudonym, data and signing\n"
           "keys on the gateway, combiner.key and results.key on the combiner, auditor.key and\n"
           "data.key with the auditor. Secret files must stay 0600: loading refuses group- or\n"
           "world-accessible key files.\n");
    return CF_EXIT_OK;
}

const cf_command cf_cmd_keygen = {"keygen",
                                  "generate the keys of every role (gateway, parties, "
                                  "combiner, auditor, signing)",
                                  keygen_main};
