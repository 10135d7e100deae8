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

/* confide run, or (gateway) confide gateway: the same options, role=gateway (cmd_run.c). */
int cf_cli_run(bool gateway, int argc, char **argv);

/* confide audit report (cmd_report.c) */
int cf_cli_report(int argc, char **argv);

#endif
