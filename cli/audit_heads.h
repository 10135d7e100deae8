/* Tree heads kept outside the log: --trusted-head checks and the witness (audit_heads.c). */
#ifndef CONFIDE_CLI_AUDIT_HEADS_H
#define CONFIDE_CLI_AUDIT_HEADS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"
#include "confide/audit.h"

/* Loads a head from a checkpoint note or the last line of a tree_heads.ndjson. Returns an
 * exit code (CF_EXIT_OK on success) after printing what went wrong. */
int cf_cli_load_head(const char *cmd, const char *path, cf_audit_sth *sth, cf_audit_cosig *cosigs,
                     size_t *n_cosigs);
/* Loads a public key file of @p kind (e.g. signing.pub) from its path; its id and epoch
 * into @p key when not NULL. */
int cf_cli_load_pub_file(const char *cmd, const char *path, const char *kind,
                         uint8_t pk[CF_AUDIT_PK_LEN], cf_audit_pubkey *key);
/* What checking a log against a trusted head found. */
typedef struct {
    bool ok;     /* a consistent extension of the head */
    bool newest; /* the head is the log's newest signed head */
    uint64_t log_size;
    size_t proof_len; /* hashes in the RFC 9162 consistency proof */
} cf_cli_head_check;
/* Checks that the log in @p dir (with id @p log_id) is a consistent extension of @p head:
 * same log, at least as many leaves, and an RFC 9162 consistency proof from the head's size
 * to the log's size that connects the head's root to the log's root. Names a truncation, a
 * fork or another log's head on stderr (exit 4). */
int cf_cli_check_trusted_head(const char *dir, const cf_audit_sth *head,
                              const uint8_t log_id[CF_AUDIT_LOG_ID_LEN], bool json,
                              cf_cli_head_check *res);
/* Reads a consistency proof file (`confide audit consistency --json`). cmd_audit.c. */
int cf_cli_read_consistency(const char *cmd, const char *file, uint64_t *m, uint64_t *n,
                            uint8_t *path, size_t *plen);
/* confide audit witness */
int cf_cli_witness(int argc, char **argv);

/* confide audit verify-results (cmd_verify_results.c) */
int cf_cli_verify_results(int argc, char **argv);

#endif
