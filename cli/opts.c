/*
 * The command-line parser shared by every command (opts.h): getopt_long underneath, with
 * what getopt_long does not do by itself -- options given twice, declared conflicts,
 * abbreviations refused (a script's `--js` must not silently mean `--json`, nor break when an
 * option named `--jsonl` is added), typed and range-checked values, and a usage generated
 * from the same table. getopt's state is global: every parse starts with optind = 0 (a full
 * re-initialization on glibc), so commands that call other commands in-process are safe.
 *
 * Bounds: at most CLI_OPTS_MAX options per command; the command line itself is bounded by
 * the kernel. Nothing here allocates except one array of argc entries.
 */
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "confide/core.h"
#include "confide/runtime.h"

#define CLI_OPTS_MAX 64
#define HELP_COL_MAX 26 /* options longer than this put their help on the next line */
#define VAL_BASE 256    /* getopt_long's val of option i is VAL_BASE + i */

typedef struct hit {
    const cli_opt *o;
    const char *val;
} hit;

static const cli_opt *find_opt(const cli_spec *s, const char *name)
{
    for (size_t i = 0; i < s->n_opts; i++) {
        if (strcmp(s->opts[i].name, name) == 0) {
            return &s->opts[i];
        }
    }
    return NULL;
}

static bool takes_value(const cli_opt *o)
{
    switch (o->type) {
    case CLI_FLAG:
        return false;
    case CLI_CONF:
    case CLI_FN:
        return o->arg != NULL;
    default:
        return true;
    }
}

/* ---- values ------------------------------------------------------------------------------ */

static bool parse_uint(const char *v, double min, double max, uint64_t cap, uint64_t *out)
{
    uint64_t lo = min <= 0 ? 0 : (uint64_t)min;
    uint64_t hi = (min == 0 && max == 0) || max >= (double)cap ? cap : (uint64_t)max;
    char *end = NULL;
    errno = 0;
    if (v[0] >= '0' && v[0] <= '9') {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno == 0 && *end == '\0') {
            *out = x;
            return x >= lo && x <= hi;
        }
    }
    /* 1e6 and the like, when they are exact integers */
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !isfinite(d) || d < 0 || d != floor(d) ||
        d > 9007199254740992.0) {
        return false;
    }
    *out = (uint64_t)d;
    return *out >= lo && *out <= hi;
}

static bool parse_dbl(const char *v, double min, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !isfinite(d)) {
        return false;
    }
    if (!(min == 0 && max == 0) && (d < min || d > max)) {
        return false;
    }
    *out = d;
    return true;
}

static void want_text(const cli_opt *o, char *buf, size_t size)
{
    const char *what = o->type == CLI_DBL ? "a number" : "an integer";
    if (o->min == 0 && o->max == 0) {
        snprintf(buf, size, "%s%s", what, o->type == CLI_DBL ? "" : " >= 0");
    } else if (o->type == CLI_DBL && o->min > 0 && o->min < 1e-6) {
        snprintf(buf, size, "a number > 0 and <= %g", o->max);
    } else {
        snprintf(buf, size, "%s in %g..%g", what, o->min, o->max);
    }
}

int cli_conf_set_kv(cf_config *conf, const char *kv, char *key_out, size_t key_size, char *err,
                    size_t err_size)
{
    char key[128];
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
        snprintf(err, err_size, "--set needs KEY=VALUE (got '%s')", kv);
        return -1;
    }
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    if (key_out != NULL) {
        snprintf(key_out, key_size, "%s", key);
    }
    char cerr[512];
    if (cf_config_set(conf, key, eq + 1, cerr, sizeof(cerr)) != CF_OK) {
        snprintf(err, err_size, "--set: %s", cerr);
        return -1;
    }
    return 0;
}

/* Stores one value. Returns 0, or -1 after printing what is wrong. */
static int apply(const cli_spec *s, const hit *h)
{
    const cli_opt *o = h->o;
    const char *v = h->val;
    char err[640] = "", want[96];
    uint64_t u = 0;
    switch (o->type) {
    case CLI_FLAG:
        *o->flag = true;
        return 0;
    case CLI_STR:
        if (v[0] == '\0') {
            fprintf(stderr, "%s: --%s needs a non-empty value\n", s->prog, o->name);
            return -1;
        }
        *o->str = v;
        return 0;
    case CLI_U32:
    case CLI_U64:
        if (!parse_uint(v, o->min, o->max, o->type == CLI_U32 ? UINT32_MAX : UINT64_MAX, &u)) {
            want_text(o, want, sizeof(want));
            fprintf(stderr, "%s: --%s '%s': expected %s\n", s->prog, o->name, v, want);
            return -1;
        }
        if (o->type == CLI_U32) {
            *o->u32 = (uint32_t)u;
        } else {
            *o->u64 = u;
        }
        return 0;
    case CLI_DBL:
        if (!parse_dbl(v, o->min, o->max, o->dbl)) {
            want_text(o, want, sizeof(want));
            fprintf(stderr, "%s: --%s '%s': expected %s\n", s->prog, o->name, v, want);
            return -1;
        }
        return 0;
    case CLI_LIST: {
        cli_list *l = o->list;
        if (l->n >= l->max) {
            fprintf(stderr, "%s: at most %zu --%s\n", s->prog, l->max, o->name);
            return -1;
        }
        l->v[l->n++] = v;
        return 0;
    }
    case CLI_CONF:
        CF_ASSERT(s->conf != NULL);
        if (o->key == NULL) {
            if (cli_conf_set_kv(s->conf, v, NULL, 0, err, sizeof(err)) != 0) {
                fprintf(stderr, "%s: %s\n", s->prog, err);
                return -1;
            }
            return 0;
        }
        if (cf_config_set(s->conf, o->key, v != NULL ? v : "true", err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "%s: --%s: %s\n", s->prog, o->name, err);
            return -1;
        }
        return 0;
    case CLI_CONF_FILE:
        CF_ASSERT(s->conf != NULL);
        if (cf_config_load_file(s->conf, v, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "%s: %s\n", s->prog, err);
            return -1;
        }
        return 0;
    case CLI_FN:
        if (o->fn(s->ctx, v, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", s->prog, err);
            return -1;
        }
        return 0;
    }
    return -1;
}

/* ---- usage ------------------------------------------------------------------------------- */

static size_t left_len(const cli_opt *o)
{
    size_t n = 2 + (o->short_name != 0 ? 4 : 0) + 2 + strlen(o->name);
    if (takes_value(o)) {
        n += 1 + strlen(o->arg != NULL ? o->arg : "VALUE");
    }
    return n;
}

static void print_help_text(FILE *f, const char *help, size_t col)
{
    const char *p = help != NULL ? help : "";
    for (bool first = true;; first = false) {
        const char *nl = strchr(p, '\n');
        int len = nl != NULL ? (int)(nl - p) : (int)strlen(p);
        if (!first) {
            fprintf(f, "%*s", (int)col, "");
        }
        fprintf(f, "%.*s\n", len, p);
        if (nl == NULL) {
            break;
        }
        p = nl + 1;
    }
}

void cli_print_options(const cli_spec *s, FILE *f)
{
    size_t col = 14; /* "  -h, --help" and two spaces */
    for (size_t i = 0; i < s->n_opts; i++) {
        size_t n = left_len(&s->opts[i]) + 2;
        if (n > col && n <= HELP_COL_MAX) {
            col = n;
        }
    }
    for (size_t i = 0; i < s->n_opts; i++) {
        const cli_opt *o = &s->opts[i];
        if (o->short_name != 0) {
            fprintf(f, "  -%c, --%s", o->short_name, o->name);
        } else {
            fprintf(f, "  --%s", o->name);
        }
        if (takes_value(o)) {
            fprintf(f, " %s", o->arg != NULL ? o->arg : "VALUE");
        }
        size_t len = left_len(o);
        if (len + 2 > col) {
            fprintf(f, "\n%*s", (int)col, "");
        } else {
            fprintf(f, "%*s", (int)(col - len), "");
        }
        print_help_text(f, o->help, col);
    }
    fprintf(f, "  -h, --help%*sthis help\n", (int)(col - 12), "");
}

void cli_usage(const cli_spec *s, FILE *f)
{
    if (s->usage_fn != NULL) {
        s->usage_fn(f);
        return;
    }
    if (s->head != NULL) {
        fputs(s->head, f);
    }
    cli_print_options(s, f);
    if (s->tail != NULL) {
        fputs(s->tail, f);
    }
}

/* ---- parsing ----------------------------------------------------------------------------- */

/* The option whose one-letter alias is @p c, or -1. */
static int short_index(const cli_spec *s, int c)
{
    for (size_t i = 0; i < s->n_opts && c > 0 && c < VAL_BASE; i++) {
        if (s->opts[i].short_name == c) {
            return (int)i;
        }
    }
    return -1;
}

/* The option's name as typed: "--name" of "--name=value". */
static void typed_name(const char *tok, char *buf, size_t size)
{
    size_t n = strcspn(tok, "=");
    if (n >= size) {
        n = size - 1;
    }
    memcpy(buf, tok, n);
    buf[n] = '\0';
}

int cli_parse(const cli_spec *s, int argc, char **argv)
{
    CF_ASSERT(s->n_opts <= CLI_OPTS_MAX);
    struct option lo[CLI_OPTS_MAX + 2];
    char shorts[2 * CLI_OPTS_MAX + 8] = "-:h";
    size_t ns = strlen(shorts);
    unsigned count[CLI_OPTS_MAX];
    memset(count, 0, sizeof(count));
    for (size_t i = 0; i < s->n_opts; i++) {
        const cli_opt *o = &s->opts[i];
        lo[i] = (struct option){o->name, takes_value(o) ? required_argument : no_argument, NULL,
                                VAL_BASE + (int)i};
        if (o->short_name != 0) {
            shorts[ns++] = o->short_name;
            if (takes_value(o)) {
                shorts[ns++] = ':';
            }
        }
    }
    shorts[ns] = '\0';
    lo[s->n_opts] = (struct option){"help", no_argument, NULL, 'h'};
    lo[s->n_opts + 1] = (struct option){NULL, 0, NULL, 0};

    hit *hits = cf_calloc((size_t)argc + 1, sizeof(*hits));
    if (hits == NULL) {
        fprintf(stderr, "%s: out of memory\n", s->prog);
        return CF_EXIT_RUNTIME;
    }
    size_t nh = 0, npos = 0;
    bool help = false;
    char first_err[512] = "";
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (first_err[0] == '\0') {                                                                \
            snprintf(first_err, sizeof(first_err), __VA_ARGS__);                                   \
        }                                                                                          \
    } while (0)
    optind = 0; /* glibc: re-initialize completely (another command may have parsed before) */
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, shorts, lo, &li)) != -1) {
        char name[64];
        if (c == 'h') {
            help = true;
        } else if (c == 1) { /* a positional argument, in order (the leading '-') */
            if (npos >= s->pos_max) {
                FAIL("unexpected argument '%s' (see %s --help)", optarg, s->prog);
            } else {
                s->pos[npos++] = optarg;
            }
        } else if (c == ':') {
            if (optopt >= VAL_BASE) {
                FAIL("--%s needs a value", s->opts[optopt - VAL_BASE].name);
            } else {
                FAIL("-%c needs a value", optopt);
            }
        } else if (c == '?') {
            if (optopt >= VAL_BASE) {
                FAIL("--%s takes no value", s->opts[optopt - VAL_BASE].name);
            } else if (optopt != 0) {
                FAIL("unknown option '-%c' (see %s --help)", optopt, s->prog);
            } else {
                typed_name(argv[optind - 1], name, sizeof(name));
                FAIL("unknown option '%s' (see %s --help)", name, s->prog);
            }
        } else if ((c >= VAL_BASE && c < VAL_BASE + (int)s->n_opts) || short_index(s, c) >= 0) {
            bool is_long = c >= VAL_BASE;
            size_t i = is_long ? (size_t)(c - VAL_BASE) : (size_t)short_index(s, c);
            const cli_opt *o = &s->opts[i];
            /* The element as typed: a long option with a separate value is the one before. */
            const char *tok = argv[optind - 1];
            if (takes_value(o) && optarg == argv[optind - 1] && optind >= 2) {
                tok = argv[optind - 2];
            }
            typed_name(tok, name, sizeof(name));
            if (is_long && strcmp(name + 2, o->name) != 0) {
                FAIL("unknown option '%s' (see %s --help)", name, s->prog);
                continue;
            }
            if (++count[i] == 2 && !(o->flags & CLI_REPEAT) && o->type != CLI_LIST) {
                FAIL("--%s given twice", o->name);
            }
            hits[nh++] = (hit){o, takes_value(o) ? optarg : NULL};
        } else {
            FAIL("cannot parse the command line");
        }
    }
    for (; optind < argc; optind++) { /* after "--" */
        if (npos >= s->pos_max) {
            FAIL("unexpected argument '%s' (see %s --help)", argv[optind], s->prog);
            break;
        }
        s->pos[npos++] = argv[optind];
    }
    optind = 0;
    for (size_t k = 0; k < s->n_conflicts && first_err[0] == '\0'; k++) {
        const cli_opt *a = find_opt(s, s->conflicts[k].a), *b = find_opt(s, s->conflicts[k].b);
        CF_ASSERT(a != NULL && b != NULL);
        if (count[a - s->opts] > 0 && count[b - s->opts] > 0) {
            FAIL("--%s and --%s conflict", a->name, b->name);
        }
    }
#undef FAIL
    int rc = CLI_CONTINUE;
    if (help) {
        cli_usage(s, stdout);
        rc = CF_EXIT_OK;
    } else if (first_err[0] != '\0') {
        fprintf(stderr, "%s: %s\n", s->prog, first_err);
        rc = CF_EXIT_USAGE;
    }
    for (int pass = 0; pass < 2 && rc == CLI_CONTINUE; pass++) {
        for (size_t i = 0; i < nh && rc == CLI_CONTINUE; i++) {
            if (((hits[i].o->flags & CLI_FIRST) != 0) != (pass == 0)) {
                continue;
            }
            if (hits[i].o->given != NULL) {
                *hits[i].o->given = true;
            }
            if (apply(s, &hits[i]) != 0) {
                rc = CF_EXIT_USAGE;
            }
        }
    }
    if (s->n_pos != NULL) {
        *s->n_pos = npos;
    }
    cf_free(hits);
    return rc;
}
