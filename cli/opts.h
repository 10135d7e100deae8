/*
 * One command-line parser for every confide command (cli/opts.c), on getopt_long.
 *
 * A command declares its options in a table of cli_opt (name, value kind, where the value
 * goes, help text) and calls cli_parse() once. The parser accepts `--opt value` and
 * `--opt=value`, refuses an unknown option (naming it and the command), an abbreviated one,
 * an option given twice unless declared CLI_REPEAT ("--out given twice"), and two options
 * declared as conflicting ("--fresh and --resume conflict"); every such error exits 2.
 * `-h`/`--help` anywhere prints the usage generated from the same table on stdout.
 *
 * Values are stored only after the whole command line is valid: options marked CLI_FIRST
 * (--config files, --quick presets) first, then the others in command-line order, so that a
 * later --set overrides an earlier option and explicit options override a preset.
 *
 * A command with one positional argument and two options:
 *
 *     const char *dir = NULL, *keys = NULL;
 *     bool json = false;
 *     const cli_opt opts[] = {
 *         {.name = "keys", .type = CLI_STR, .str = &keys, .arg = "KEYDIR", .help = "..."},
 *         {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON object"},
 *     };
 *     cli_spec spec = {.prog = "confide audit show", .head = "usage: ...\n\noptions:\n",
 *                      .opts = opts, .n_opts = CLI_N(opts), .pos = &dir, .pos_max = 1};
 *     int rc = cli_parse(&spec, argc, argv);
 *     if (rc != CLI_CONTINUE) {
 *         return rc;
 *     }
 */
#ifndef CONFIDE_CLI_OPTS_H
#define CONFIDE_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct cf_config cf_config;

typedef enum {
    CLI_FLAG,      /* bool *slot = true; takes no value */
    CLI_STR,       /* const char **slot = the value (must be non-empty) */
    CLI_U32,       /* uint32_t *slot, an integer in [min, max] (both 0: any) */
    CLI_U64,       /* uint64_t *slot, likewise */
    CLI_DBL,       /* double *slot, a finite number in [min, max] (both 0: any) */
    CLI_LIST,      /* cli_list *slot: appends the value (CLI_REPEAT implied) */
    CLI_CONF,      /* config key .key = value (no .arg: a flag setting it to "true");
                      .key NULL: the value is KEY=VALUE (--set) */
    CLI_CONF_FILE, /* cf_config_load_file(value) */
    CLI_FN,        /* .fn(ctx, value); no .arg: a flag, value NULL */
} cli_type;

enum {
    CLI_REPEAT = 1u, /* may be given more than once */
    CLI_FIRST = 2u,  /* applied before every other option */
};

/* Values of a CLI_LIST option (e.g. --old-keys DIR, repeatable up to max). */
typedef struct cli_list {
    const char **v;
    size_t n, max;
} cli_list;

typedef struct cli_opt {
    const char *name; /* long name without the dashes: "out" */
    cli_type type;
    union { /* where the value goes: the member of the type (the compiler checks it) */
        bool *flag;
        const char **str;
        uint32_t *u32;
        uint64_t *u64;
        double *dbl;
        cli_list *list;
    };
    const char *arg;  /* the value's name in the help ("DIR"); NULL for a flag */
    const char *help; /* help text; '\n' starts a continuation line */
    double min, max;  /* numeric bounds, inclusive */
    unsigned flags;   /* CLI_REPEAT, CLI_FIRST */
    const char *key;  /* CLI_CONF: the config key */
    /* CLI_FN: returns 0, or -1 after writing what is wrong into err (without the prefix) */
    int (*fn)(void *ctx, const char *value, char *err, size_t err_size);
    bool *given;     /* when not NULL: set when the option appears */
    char short_name; /* a one-letter alias ('q' for -q), or 0 */
} cli_opt;

/* Two options that cannot be given together. */
typedef struct cli_conflict {
    const char *a, *b; /* long names without the dashes */
} cli_conflict;

typedef struct cli_spec {
    const char *prog; /* "confide run": prefixes every message */
    const char *head; /* usage text printed before the options (verbatim) */
    const char *tail; /* printed after the options, or NULL */
    const cli_opt *opts;
    size_t n_opts;
    const cli_conflict *conflicts; /* n_conflicts entries, may be NULL */
    size_t n_conflicts;
    const char *pos_name;      /* positional arguments' name in messages ("DIR"), or NULL */
    const char **pos;          /* room for pos_max positional arguments */
    size_t pos_max;            /* 0: none accepted */
    size_t *n_pos;             /* how many were given (may be NULL) */
    cf_config *conf;           /* for CLI_CONF and CLI_CONF_FILE */
    void *ctx;                 /* passed to CLI_FN callbacks */
    void (*usage_fn)(FILE *f); /* when set, prints the whole usage instead of head/tail */
} cli_spec;

#define CLI_CONTINUE (-1)
#define CLI_N(a) (sizeof(a) / sizeof((a)[0]))

/**
 * Parses argv[1..argc) (argv[0] is the command's name) against @p spec and stores every
 * value. Returns CLI_CONTINUE when the command should go on, else the exit code to return at
 * once: CF_EXIT_OK after --help, CF_EXIT_USAGE after an error printed on stderr.
 */
int cli_parse(const cli_spec *spec, int argc, char **argv);

/** Prints the usage generated from @p spec (head, options, tail). */
void cli_usage(const cli_spec *spec, FILE *f);

/** Prints only the options' lines of @p spec (two-column layout, -h/--help last). */
void cli_print_options(const cli_spec *spec, FILE *f);

/**
 * Applies "KEY=VALUE" to @p conf; the key into @p key_out when not NULL. Returns 0, or -1
 * with the reason in @p err.
 */
int cli_conf_set_kv(cf_config *conf, const char *kv, char *key_out, size_t key_size, char *err,
                    size_t err_size);

#endif
