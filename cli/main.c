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
    X(run) X(gateway) X(party) X(combine) X(gen) X(keygen) X(audit) X(bench) X(forecast)

#define X(n) extern const cf_command cf_cmd_##n __attribute__((weak));
CF_COMMANDS(X)
#undef X

static const cf_command *const commands[] = {
#define X(n) &cf_cmd_##n,
    CF_COMMANDS(X)
#undef X
};

int cli_load_configs(const char *cmd, cf_config *conf, int argc, char **argv)
{
    char errstr[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") != 0) {
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "confide %s: --config needs a file\n", cmd);
            return CF_EXIT_USAGE;
        }
        if (cf_config_load_file(conf, argv[i + 1], errstr, sizeof(errstr)) != CF_OK) {
            fprintf(stderr, "confide %s: %s\n", cmd, errstr);
            return CF_EXIT_USAGE;
        }
    }
    return CF_EXIT_OK;
}

int cli_apply_option(const char *cmd, cf_config *conf, const char *key, int argc, char **argv,
                     int *i, char *set_key, size_t set_key_size)
{
    const char *a = argv[*i];
    if (*i + 1 >= argc) {
        fprintf(stderr, "confide %s: %s needs a value\n", cmd, a);
        return CF_EXIT_USAGE;
    }
    const char *val = argv[++*i];
    char kbuf[128], errstr[512];
    if (key == NULL) {
        const char *eq = strchr(val, '=');
        if (eq == NULL || (size_t)(eq - val) >= sizeof(kbuf)) {
            fprintf(stderr, "confide %s: --set needs KEY=VALUE\n", cmd);
            return CF_EXIT_USAGE;
        }
        memcpy(kbuf, val, (size_t)(eq - val));
        kbuf[eq - val] = '\0';
        key = kbuf;
        val = eq + 1;
    }
    if (set_key != NULL) {
        snprintf(set_key, set_key_size, "%s", key);
    }
    if (cf_config_set(conf, key, val, errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "confide %s: %s: %s\n", cmd, a, errstr);
        return CF_EXIT_USAGE;
    }
    return CF_EXIT_OK;
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return true;
        }
    }
    return false;
}

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
