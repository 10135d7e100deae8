/* Helpers of `confide forecast` (option parsing is cli/opts.h's, as for every command). */
#ifndef CONFIDE_SCALE_ARGS_H
#define CONFIDE_SCALE_ARGS_H

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
