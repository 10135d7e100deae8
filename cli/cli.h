/* The `confide` command-line tool: one file per command, listed in main.c. */
#ifndef CONFIDE_CLI_H
#define CONFIDE_CLI_H

#include <stdbool.h>
#include <stdio.h>

typedef struct cf_command {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv); /* argv[0] is the command name */
} cf_command;

/* Exit codes, documented in README.md. */
enum {
    CF_EXIT_OK = 0,
    CF_EXIT_FAIL = 1,     /* the command ran and found a problem (e.g. verification failed) */
    CF_EXIT_USAGE = 2,    /* bad command line or config */
    CF_EXIT_RUNTIME = 3,  /* I/O, keys, resources */
    CF_EXIT_INTEGRITY = 4 /* integrity alert: tampering detected */
};

/* True when argv[i] is -h or --help. */
bool cli_wants_help(int argc, char **argv);

typedef struct cf_config cf_config;
/* Loads every --config FILE of argv first, so that options override it wherever they are.
 * Prints "confide CMD: ..." and returns CF_EXIT_USAGE on an error. */
int cli_load_configs(const char *cmd, cf_config *conf, int argc, char **argv);
/* Applies argv[*i] with its value argv[*i + 1] (advancing *i): to config key @p key, or, when
 * @p key is NULL (--set), to the KEY of KEY=VALUE; *set_key (when not NULL) names the key
 * set. Prints what is wrong and returns CF_EXIT_USAGE. */
int cli_apply_option(const char *cmd, cf_config *conf, const char *key, int argc, char **argv,
                     int *i, char *set_key, size_t set_key_size);

/* confide run, or (gateway) confide gateway: the same options, role=gateway (cmd_run.c). */
int cf_cli_run(bool gateway, int argc, char **argv);

/* confide audit report (cmd_report.c) */
int cf_cli_report(int argc, char **argv);

#endif
