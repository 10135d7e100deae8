/* Table-driven option parsing shared by `confide forecast` and `confide bench autoscale`:
 * `--opt VALUE` or `--opt=VALUE`, flags without a value, every value range-checked. */
#ifndef CONFIDE_SCALE_ARGS_H
#define CONFIDE_SCALE_ARGS_H

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SA_FLAG, SA_STR, SA_U32, SA_U64, SA_DBL } sa_type;

typedef struct {
    const char *name; /* "--window" */
    sa_type type;
    void *dst;  /* bool*, const char**, uint32_t*, uint64_t*, double* */
    double min; /* numeric bounds, inclusive */
    double max;
    bool *given; /* may be NULL: set when the option appears */
} sa_opt;

/* Parses argv[first..argc). Returns 0, or prints "<prog>: ..." and returns -1. */
static inline int sa_parse(const char *prog, int argc, char **argv, int first, const sa_opt *opts,
                           size_t nopts)
{
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        char name[48];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        if (strncmp(arg, "--", 2) != 0 || nlen >= sizeof(name)) {
            fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, arg);
            return -1;
        }
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        const sa_opt *o = NULL;
        for (size_t k = 0; k < nopts; k++) {
            if (strcmp(opts[k].name, name) == 0) {
                o = &opts[k];
            }
        }
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", prog, name);
            return -1;
        }
        if (o->given != NULL) {
            *o->given = true;
        }
        if (o->type == SA_FLAG) {
            if (eq != NULL) {
                fprintf(stderr, "%s: %s takes no value\n", prog, name);
                return -1;
            }
            *(bool *)o->dst = true;
            continue;
        }
        const char *val;
        if (eq != NULL) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "%s: %s needs a value\n", prog, name);
            return -1;
        }
        if (o->type == SA_STR) {
            if (val[0] == '\0') {
                fprintf(stderr, "%s: %s needs a non-empty value\n", prog, name);
                return -1;
            }
            *(const char **)o->dst = val;
            continue;
        }
        char *end = NULL;
        errno = 0;
        double v = strtod(val, &end);
        bool integral = o->type != SA_DBL;
        if (end == val || *end != '\0' || errno != 0 || !isfinite(v) || v < o->min || v > o->max ||
            (integral && v != floor(v))) {
            fprintf(stderr, "%s: %s '%s': expected %s in %g..%g\n", prog, name, val,
                    integral ? "an integer" : "a number", o->min, o->max);
            return -1;
        }
        if (o->type == SA_U32) {
            *(uint32_t *)o->dst = (uint32_t)v;
        } else if (o->type == SA_U64) {
            /* seeds may exceed 2^53: parse them exactly */
            *(uint64_t *)o->dst = strtoull(val, NULL, 10);
        } else {
            *(double *)o->dst = v;
        }
    }
    return 0;
}

/* JSON string body: escapes quotes, backslashes and control characters. */
static inline void sa_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

#endif
