/*
 * confide: command dispatch. Each command lives in its own cmd_<name>.c, defining
 * `const cf_command cf_cmd_<name>`, and is listed in CF_COMMANDS in the order `confide --help`
 * shows them. The references are weak so the tool links while a command's module is still
 * being built; a command whose file is absent is simply not offered.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "confide/core.h"
#include "confide/runtime.h"

#define CF_COMMANDS(X)                                                                             \
    X(run)                                                                                         \
    X(gateway) X(party) X(combine) X(autoscale) X(gen) X(keygen) X(audit) X(bench) X(forecast)

#define X(n) extern const cf_command cf_cmd_##n __attribute__((weak));
CF_COMMANDS(X)
#undef X

static const cf_command *const commands[] = {
#define X(n) &cf_cmd_##n,
    CF_COMMANDS(X)
#undef X
};

static void usage(FILE *f)
{
    fprintf(f, "confide: confidential, auditable, low-latency stream processing for payments\n\n"
               "usage: confide <command> [options]   (confide <command> --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i] != NULL) {
            fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
        }
    }
    fprintf(f, "\nexit codes: 0 ok, 1 check failed, 2 usage or config error, 3 runtime error,\n"
               "            4 integrity alert\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CF_EXIT_USAGE : CF_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("confide 0.1.0\n");
        return CF_EXIT_OK;
    }
    /* Keys and shares live in this process's memory: never write them to a core file. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (cf_init() != CF_OK) {
        fprintf(stderr, "confide: cannot initialize libsodium\n");
        return CF_EXIT_RUNTIME;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i] != NULL && strcmp(argv[1], commands[i]->name) == 0) {
            return commands[i]->main(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "confide: unknown command '%s' (see confide --help)\n", argv[1]);
    return CF_EXIT_USAGE;
}
