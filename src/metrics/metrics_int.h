/* Private to the metrics module: a growable text buffer and the health hook. */
#ifndef CF_METRICS_INT_H
#define CF_METRICS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "confide/metrics.h"

typedef struct cf__mbuf {
    char *p;
    size_t len;
    size_t cap;
    bool oom; /* sticky: an append failed; the caller reports CF_E_NOMEM once at the end */
} cf__mbuf;

void cf__mbuf_put(cf__mbuf *b, const char *s, size_t n);
void cf__mbuf_puts(cf__mbuf *b, const char *s);
void cf__mbuf_printf(cf__mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* JSON string literal with quotes; control characters as \u00XX. */
void cf__mbuf_json_str(cf__mbuf *b, const char *s);

/* Runs the health callback (true when none is installed). @locks registry lock */
bool cf__metrics_health(cf_metrics *m, char *detail, size_t detail_size);

/* Runs the status renderer outside the registry lock; CF_E_NOTFOUND when none is set. */
cf_err cf__metrics_status(cf_metrics *m, char **out, size_t *len);

/* The console page (generated at build time from src/metrics/console/console.html). */
extern const unsigned char cf__console_html[];
extern const size_t cf__console_html_len;

#endif
