/*
 * Metrics registry: families of counter, gauge and histogram series, the Prometheus text
 * exposition and the JSON stats snapshot.
 *
 * Hot path: a series handle is a small heap object holding its own atomics, padded to a
 * cache line on both sides so two threads updating different series never share a line.
 * Updates are relaxed atomic adds/stores: no lock, no allocation. Histograms use fixed
 * upper bounds (native integer units) with one atomic count per bucket plus an atomic sum;
 * _count is derived from the buckets at scrape time, so the +Inf bucket always equals
 * _count and the cumulative buckets never decrease within a scrape. _sum is read
 * separately and may lag the buckets by in-flight observations (as in the official client
 * libraries).
 *
 * Cold path: registration and scrapes take one mutex. Families and series are appended to
 * singly linked lists and live until cf_metrics_destroy, so handles never dangle. Bounds:
 * at most 64 histogram buckets and 8 labels per series; name/label text is length-checked.
 *
 * Names are validated against the rules promtool's linter applies (snake_case, no ':',
 * _total only and always on counters, no metric type in the name, base units instead of
 * prefixed or abbreviated ones, no reserved label names), so a registry can never expose a
 * name `promtool check metrics` would flag.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confide/core.h"
#include "confide/metrics.h"
#include "metrics_int.h"

#define MAX_LABELS 8
#define MAX_BOUNDS 64
#define MAX_NAME 200
#define MAX_LABEL_VALUE 1024
#define MAX_HELP 1024
#define PAD 64

const int64_t cf_metrics_latency_buckets_us[] = {
    100,    250,    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 150000, 200000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
const size_t cf_metrics_latency_buckets_us_n =
    sizeof(cf_metrics_latency_buckets_us) / sizeof(cf_metrics_latency_buckets_us[0]);

const int64_t cf_metrics_size_buckets[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
};
const size_t cf_metrics_size_buckets_n =
    sizeof(cf_metrics_size_buckets) / sizeof(cf_metrics_size_buckets[0]);

typedef enum { T_COUNTER, T_GAUGE, T_HIST } mtype;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

typedef struct family family;

typedef struct series {
    family *fam;
    char **values; /* fam->nlabels label values */
    struct series *next;
} series;

struct cf_counter {
    series s;
    char pad0[PAD];
    atomic_uint_fast64_t v;
    char pad1[PAD];
};

struct cf_gauge {
    series s;
    double (*fn)(void *opaque); /* non-NULL: computed at scrape time */
    void *opaque;
    char pad0[PAD];
    atomic_uint_fast64_t bits; /* the double's bit pattern */
    char pad1[PAD];
};

struct cf_histogram {
    series s;
    size_t nbounds;
    const int64_t *bounds; /* the family's */
    char pad0[PAD];
    atomic_uint_fast64_t sum;
    atomic_uint_fast64_t *buckets; /* nbounds + 1, the last one is +Inf; not cumulative */
    char pad1[PAD];
};

struct family {
    char *name;
    char *help;
    mtype type;
    size_t nlabels;
    char **label_names;
    size_t nbounds;
    int64_t *bounds;
    int unit_exp;
    series *first;
    series *last;
    family *next;
};

struct cf_metrics {
    pthread_mutex_t lock;
    family *first;
    family *last;
    int64_t created_ns;
    int64_t created_wall_us;
    cf_metrics_health_cb health;
    void *health_opaque;
    cf_metrics_status_cb status;
    void *status_opaque;
};

/* ---- buffer ------------------------------------------------------------------------------ */

void cf__mbuf_put(cf__mbuf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        char *p = cf_realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cf__mbuf_puts(cf__mbuf *b, const char *s)
{
    cf__mbuf_put(b, s, strlen(s));
}

void cf__mbuf_printf(cf__mbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        cf__mbuf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = cf_malloc((size_t)n + 1);
    if (big == NULL) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cf__mbuf_put(b, big, (size_t)n);
    cf_free(big);
}

void cf__mbuf_json_str(cf__mbuf *b, const char *s)
{
    cf__mbuf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            cf__mbuf_put(b, esc, 2);
        } else if (*p < 0x20) {
            cf__mbuf_printf(b, "\\u%04x", *p);
        } else {
            cf__mbuf_put(b, (const char *)p, 1);
        }
    }
    cf__mbuf_put(b, "\"", 1);
}

/* ---- name validation --------------------------------------------------------------------- */

static bool is_snake(const char *s, bool allow_leading_digit)
{
    if (*s == '\0' || (!allow_leading_digit && *s >= '0' && *s <= '9')) {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) {
            return false;
        }
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The unit and type rules of promtool's linter (client_golang promlint). */
static cf_err check_name(const char *name, mtype type, char *errstr, size_t errstr_size)
{
    static const char *const units[] = {"amperes", "bytes",  "celsius", "grams",   "joules",
                                        "kelvin",  "meters", "metres",  "seconds", "volts"};
    static const char *const prefixes[] = {"pico", "nano",  "micro", "milli", "centi", "deci",
                                           "deca", "hecto", "kilo",  "kibi",  "mega",  "mibi",
                                           "giga", "gibi",  "tera",  "tebi",  "peta",  "pebi"};
    static const char *const abbrev[] = {"s",  "ms", "us", "ns", "sec", "b", "kb",
                                         "mb", "gb", "tb", "pb", "m",   "h", "d"};
    static const char *const type_words[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    if (name == NULL || strlen(name) > MAX_NAME || !is_snake(name, false)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "metric name '%s' must be snake_case [a-z_][a-z0-9_]* (max %d)",
                          name ? name : "(null)", MAX_NAME);
    }
    if (type == T_COUNTER && !ends_with(name, "_total")) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "counter '%s' must end in _total", name);
    }
    if (type != T_COUNTER && ends_with(name, "_total")) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "non-counter '%s' must not end in _total", name);
    }
    if (ends_with(name, "_bucket") || ends_with(name, "_count") || ends_with(name, "_sum")) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "metric name '%s' uses a histogram-reserved suffix", name);
    }
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
            char bad[32];
            snprintf(bad, sizeof(bad), "_%s%s", prefixes[p], units[u]);
            if (strstr(name, bad) != NULL) {
                return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                  "metric '%s' must use base unit \"%s\" instead of \"%s%s\"", name,
                                  units[u], prefixes[p], units[u]);
            }
        }
    }
    /* Tokens between underscores: no abbreviated units, no metric type names. */
    const char *t = name;
    while (*t != '\0') {
        const char *e = strchr(t, '_');
        size_t n = e != NULL ? (size_t)(e - t) : strlen(t);
        for (size_t i = 0; i < sizeof(abbrev) / sizeof(abbrev[0]); i++) {
            if (strlen(abbrev[i]) == n && strncmp(t, abbrev[i], n) == 0) {
                return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                  "metric '%s' contains the abbreviated unit '%s'", name,
                                  abbrev[i]);
            }
        }
        for (size_t i = 0; i < sizeof(type_words) / sizeof(type_words[0]); i++) {
            if (strlen(type_words[i]) == n && strncmp(t, type_words[i], n) == 0) {
                return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                  "metric '%s' must not contain the type name '%s'", name,
                                  type_words[i]);
            }
        }
        t = e != NULL ? e + 1 : t + n;
    }
    return CF_OK;
}

static cf_err check_labels(const char *name, const cf_label *labels, size_t nlabels, char *errstr,
                           size_t errstr_size)
{
    if (nlabels > MAX_LABELS || (nlabels > 0 && labels == NULL)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "metric '%s': at most %d labels", name,
                          MAX_LABELS);
    }
    for (size_t i = 0; i < nlabels; i++) {
        const char *ln = labels[i].name;
        if (ln == NULL || !is_snake(ln, false) || strncmp(ln, "__", 2) == 0 ||
            strcmp(ln, "le") == 0 || strcmp(ln, "quantile") == 0 || strlen(ln) > MAX_NAME) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "metric '%s': bad or reserved label name '%s'", name,
                              ln ? ln : "(null)");
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[j].name, ln) == 0) {
                return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                  "metric '%s': duplicate label '%s'", name, ln);
            }
        }
        if (labels[i].value == NULL || strlen(labels[i].value) > MAX_LABEL_VALUE) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "metric '%s': label '%s' value missing or too long", name, ln);
        }
    }
    return CF_OK;
}

/* ---- registry ---------------------------------------------------------------------------- */

cf_err cf_metrics_create(cf_metrics **out)
{
    CF_ASSERT(out != NULL);
    *out = NULL;
    cf_metrics *m = cf_calloc(1, sizeof(*m));
    if (m == NULL) {
        return CF_E_NOMEM;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        cf_free(m);
        return CF_E_NOMEM;
    }
    m->created_ns = cf_now_ns();
    m->created_wall_us = cf_wall_us();
    *out = m;
    return CF_OK;
}

static void free_strv(char **v, size_t n)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cf_free(v[i]);
    }
    cf_free(v);
}

static void series_free(series *s)
{
    if (s == NULL) {
        return;
    }
    free_strv(s->values, s->fam->nlabels);
    if (s->fam->type == T_HIST) {
        cf_free(((cf_histogram *)s)->buckets);
    }
    cf_free(s);
}

static void family_free(family *f)
{
    if (f == NULL) {
        return;
    }
    series *s = f->first;
    while (s != NULL) {
        series *next = s->next;
        series_free(s);
        s = next;
    }
    cf_free(f->name);
    cf_free(f->help);
    free_strv(f->label_names, f->nlabels);
    cf_free(f->bounds);
    cf_free(f);
}

void cf_metrics_destroy(cf_metrics *m)
{
    if (m == NULL) {
        return;
    }
    family *f = m->first;
    while (f != NULL) {
        family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    cf_free(m);
}

double cf_metrics_uptime_s(const cf_metrics *m)
{
    return (double)(cf_now_ns() - m->created_ns) / 1e9;
}

void cf_metrics_set_health(cf_metrics *m, cf_metrics_health_cb cb, void *opaque)
{
    pthread_mutex_lock(&m->lock);
    m->health = cb;
    m->health_opaque = opaque;
    pthread_mutex_unlock(&m->lock);
}

bool cf__metrics_health(cf_metrics *m, char *detail, size_t detail_size)
{
    pthread_mutex_lock(&m->lock);
    bool ok = m->health == NULL || m->health(m->health_opaque, detail, detail_size);
    pthread_mutex_unlock(&m->lock);
    return ok;
}

void cf_metrics_set_status(cf_metrics *m, cf_metrics_status_cb cb, void *opaque)
{
    pthread_mutex_lock(&m->lock);
    m->status = cb;
    m->status_opaque = opaque;
    pthread_mutex_unlock(&m->lock);
}

cf_err cf__metrics_status(cf_metrics *m, char **out, size_t *len)
{
    pthread_mutex_lock(&m->lock);
    cf_metrics_status_cb cb = m->status;
    void *opaque = m->status_opaque;
    pthread_mutex_unlock(&m->lock);
    *out = NULL;
    *len = 0;
    /* Called without the lock: the renderer reads the registry back (cf_metrics_visit). */
    return cb != NULL ? cb(opaque, out, len) : CF_E_NOTFOUND;
}

static char **dup_strv(const cf_label *labels, size_t n, bool names)
{
    char **v = cf_calloc(n == 0 ? 1 : n, sizeof(char *));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        v[i] = cf_strdup(names ? labels[i].name : labels[i].value);
        if (v[i] == NULL) {
            free_strv(v, n);
            return NULL;
        }
    }
    return v;
}

typedef struct {
    mtype type;
    const int64_t *bounds;
    size_t nbounds;
    int unit_exp;
} spec;

/* Finds or creates the family; checks that a re-registration agrees. @locks caller holds */
static cf_err get_family(cf_metrics *m, const char *name, const char *help, const spec *sp,
                         const cf_label *labels, size_t nlabels, family **out, char *errstr,
                         size_t errstr_size)
{
    for (family *f = m->first; f != NULL; f = f->next) {
        if (strcmp(f->name, name) != 0) {
            continue;
        }
        bool same = f->type == sp->type && strcmp(f->help, help) == 0 && f->nlabels == nlabels;
        for (size_t i = 0; same && i < nlabels; i++) {
            same = strcmp(f->label_names[i], labels[i].name) == 0;
        }
        if (same && sp->type == T_HIST) {
            same = f->nbounds == sp->nbounds && f->unit_exp == sp->unit_exp &&
                   memcmp(f->bounds, sp->bounds, sp->nbounds * sizeof(int64_t)) == 0;
        }
        if (!same) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "metric '%s' re-registered with a different type, help, labels "
                              "or buckets",
                              name);
        }
        *out = f;
        return CF_OK;
    }
    family *f = cf_calloc(1, sizeof(*f));
    if (f == NULL) {
        return CF_E_NOMEM;
    }
    f->type = sp->type;
    f->nlabels = nlabels;
    f->unit_exp = sp->unit_exp;
    f->nbounds = sp->nbounds;
    f->name = cf_strdup(name);
    f->help = cf_strdup(help);
    f->label_names = dup_strv(labels, nlabels, true);
    if (sp->type == T_HIST) {
        f->bounds = cf_calloc(sp->nbounds, sizeof(int64_t));
        if (f->bounds != NULL) {
            memcpy(f->bounds, sp->bounds, sp->nbounds * sizeof(int64_t));
        }
    }
    if (f->name == NULL || f->help == NULL || f->label_names == NULL ||
        (sp->type == T_HIST && f->bounds == NULL)) {
        family_free(f);
        return CF_E_NOMEM;
    }
    if (m->last == NULL) {
        m->first = f;
    } else {
        m->last->next = f;
    }
    m->last = f;
    *out = f;
    return CF_OK;
}

static series *find_series(family *f, const cf_label *labels)
{
    for (series *s = f->first; s != NULL; s = s->next) {
        bool eq = true;
        for (size_t i = 0; eq && i < f->nlabels; i++) {
            eq = strcmp(s->values[i], labels[i].value) == 0;
        }
        if (eq) {
            return s;
        }
    }
    return NULL;
}

static cf_err do_register(cf_metrics *m, const char *name, const char *help, const spec *sp,
                          const cf_label *labels, size_t nlabels, bool must_be_new, series **out,
                          char *errstr, size_t errstr_size)
{
    CF_ASSERT(m != NULL && out != NULL);
    *out = NULL;
    cf_err err = check_name(name, sp->type, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    if (help == NULL || help[0] == '\0' || strlen(help) > MAX_HELP) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "metric '%s' needs a help text (1..%d bytes)", name, MAX_HELP);
    }
    err = check_labels(name, labels, nlabels, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    if (sp->type == T_HIST) {
        if (sp->nbounds == 0 || sp->nbounds > MAX_BOUNDS || sp->bounds == NULL ||
            sp->unit_exp < -12 || sp->unit_exp > 12) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "histogram '%s': 1..%d bounds and unit_exp in -12..12", name,
                              MAX_BOUNDS);
        }
        for (size_t i = 0; i < sp->nbounds; i++) {
            if (sp->bounds[i] < 0 || (i > 0 && sp->bounds[i] <= sp->bounds[i - 1])) {
                return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                                  "histogram '%s': bounds must be >= 0 and strictly increasing",
                                  name);
            }
        }
    }
    pthread_mutex_lock(&m->lock);
    family *f = NULL;
    series *s = NULL;
    err = get_family(m, name, help, sp, labels, nlabels, &f, errstr, errstr_size);
    if (err != CF_OK) {
        goto done;
    }
    s = find_series(f, labels);
    if (s != NULL) {
        if (must_be_new) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "metric '%s': series already registered", name);
            s = NULL;
        }
        goto done;
    }
    size_t size = sp->type == T_COUNTER ? sizeof(cf_counter)
                  : sp->type == T_GAUGE ? sizeof(cf_gauge)
                                        : sizeof(cf_histogram);
    s = cf_calloc(1, size);
    if (s == NULL) {
        err = CF_E_NOMEM;
        goto done;
    }
    s->fam = f;
    s->values = dup_strv(labels, nlabels, false);
    if (s->values == NULL) {
        err = CF_E_NOMEM;
        cf_free(s);
        s = NULL;
        goto done;
    }
    if (sp->type == T_HIST) {
        cf_histogram *h = (cf_histogram *)s;
        h->nbounds = f->nbounds;
        h->bounds = f->bounds;
        h->buckets = cf_calloc(f->nbounds + 1, sizeof(atomic_uint_fast64_t));
        if (h->buckets == NULL) {
            err = CF_E_NOMEM;
            series_free(s);
            s = NULL;
            goto done;
        }
        for (size_t i = 0; i <= f->nbounds; i++) {
            atomic_init(&h->buckets[i], 0);
        }
        atomic_init(&h->sum, 0);
    } else if (sp->type == T_COUNTER) {
        atomic_init(&((cf_counter *)s)->v, 0);
    } else {
        double zero = 0.0;
        uint64_t bits;
        memcpy(&bits, &zero, sizeof(bits));
        atomic_init(&((cf_gauge *)s)->bits, bits);
    }
    if (f->last == NULL) {
        f->first = s;
    } else {
        f->last->next = s;
    }
    f->last = s;
done:
    pthread_mutex_unlock(&m->lock);
    *out = s;
    return err;
}

cf_err cf_metrics_counter(cf_metrics *m, const char *name, const char *help, const cf_label *labels,
                          size_t nlabels, cf_counter **out, char *errstr, size_t errstr_size)
{
    spec sp = {T_COUNTER, NULL, 0, 0};
    series *s = NULL;
    cf_err err = do_register(m, name, help, &sp, labels, nlabels, false, &s, errstr, errstr_size);
    *out = (cf_counter *)s;
    return err;
}

cf_err cf_metrics_gauge(cf_metrics *m, const char *name, const char *help, const cf_label *labels,
                        size_t nlabels, cf_gauge **out, char *errstr, size_t errstr_size)
{
    spec sp = {T_GAUGE, NULL, 0, 0};
    series *s = NULL;
    cf_err err = do_register(m, name, help, &sp, labels, nlabels, false, &s, errstr, errstr_size);
    *out = (cf_gauge *)s;
    return err;
}

cf_err cf_metrics_gauge_fn(cf_metrics *m, const char *name, const char *help,
                           const cf_label *labels, size_t nlabels, double (*fn)(void *opaque),
                           void *opaque, char *errstr, size_t errstr_size)
{
    if (fn == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "gauge '%s': no callback",
                          name ? name : "(null)");
    }
    spec sp = {T_GAUGE, NULL, 0, 0};
    series *s = NULL;
    cf_err err = do_register(m, name, help, &sp, labels, nlabels, true, &s, errstr, errstr_size);
    if (err == CF_OK) {
        /* Published under the lock the scrape takes, so a scrape sees both or neither. */
        pthread_mutex_lock(&m->lock);
        ((cf_gauge *)s)->fn = fn;
        ((cf_gauge *)s)->opaque = opaque;
        pthread_mutex_unlock(&m->lock);
    }
    return err;
}

cf_err cf_metrics_histogram(cf_metrics *m, const char *name, const char *help,
                            const int64_t *bounds, size_t nbounds, int unit_exp,
                            const cf_label *labels, size_t nlabels, cf_histogram **out,
                            char *errstr, size_t errstr_size)
{
    spec sp = {T_HIST, bounds, nbounds, unit_exp};
    series *s = NULL;
    cf_err err = do_register(m, name, help, &sp, labels, nlabels, false, &s, errstr, errstr_size);
    *out = (cf_histogram *)s;
    return err;
}

/* ---- hot path ---------------------------------------------------------------------------- */

void cf_counter_add(cf_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

void cf_counter_inc(cf_counter *c)
{
    atomic_fetch_add_explicit(&c->v, 1, memory_order_relaxed);
}

uint64_t cf_counter_value(const cf_counter *c)
{
    return atomic_load_explicit(&((cf_counter *)c)->v, memory_order_relaxed);
}

static uint64_t dbl_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double bits_dbl(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

void cf_gauge_set(cf_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, dbl_bits(v), memory_order_relaxed);
}

void cf_gauge_add(cf_gauge *g, double delta)
{
    uint_fast64_t old = atomic_load_explicit(&g->bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&g->bits, &old, dbl_bits(bits_dbl(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

double cf_gauge_value(const cf_gauge *g)
{
    if (g->fn != NULL) {
        return g->fn(g->opaque);
    }
    return bits_dbl(atomic_load_explicit(&((cf_gauge *)g)->bits, memory_order_relaxed));
}

void cf_histogram_observe_n(cf_histogram *h, int64_t v, uint64_t n)
{
    if (v < 0) {
        v = 0;
    }
    /* Binary search for the first bound >= v (le semantics: v <= bound). */
    size_t lo = 0;
    size_t hi = h->nbounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->bounds[mid] < v) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    atomic_fetch_add_explicit(&h->buckets[lo], n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, (uint64_t)v * n, memory_order_relaxed);
}

void cf_histogram_observe(cf_histogram *h, int64_t v)
{
    cf_histogram_observe_n(h, v, 1);
}

uint64_t cf_histogram_count(const cf_histogram *h)
{
    uint64_t c = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        c += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    }
    return c;
}

int64_t cf_histogram_sum(const cf_histogram *h)
{
    uint64_t s = atomic_load_explicit(&((cf_histogram *)h)->sum, memory_order_relaxed);
    return s > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)s;
}

size_t cf_histogram_bucket_counts(const cf_histogram *h, uint64_t *counts, size_t n)
{
    size_t k = h->nbounds + 1 < n ? h->nbounds + 1 : n;
    for (size_t i = 0; i < k; i++) {
        counts[i] = atomic_load_explicit(&((cf_histogram *)h)->buckets[i], memory_order_relaxed);
    }
    return h->nbounds + 1;
}

cf_err cf_metrics_visit(cf_metrics *m, const char *name, cf_metrics_visit_cb cb, void *opaque)
{
    CF_ASSERT(m != NULL && name != NULL && cb != NULL);
    cf_err err = CF_E_NOTFOUND;
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f != NULL; f = f->next) {
        if (strcmp(f->name, name) != 0) {
            continue;
        }
        err = CF_OK;
        for (const series *s = f->first; s != NULL; s = s->next) {
            cf_label l[MAX_LABELS];
            for (size_t i = 0; i < f->nlabels; i++) {
                l[i].name = f->label_names[i];
                l[i].value = s->values[i];
            }
            double v = f->type == T_COUNTER ? (double)cf_counter_value((const cf_counter *)s)
                       : f->type == T_GAUGE ? cf_gauge_value((const cf_gauge *)s)
                                            : (double)cf_histogram_count((const cf_histogram *)s);
            cb(opaque, l, f->nlabels, v);
        }
        break;
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

/* ---- formatting -------------------------------------------------------------------------- */

/* v * 10^exp as an exact decimal ("0.0025", "2500", "1"). */
static void put_scaled(cf__mbuf *b, int64_t v, int exp)
{
    char digits[48];
    if (exp >= 0) {
        /* Exact as long as it fits; exposition is text, so print digits then zeros. */
        snprintf(digits, sizeof(digits), "%" PRId64, v);
        cf__mbuf_puts(b, digits);
        if (v != 0) {
            for (int i = 0; i < exp; i++) {
                cf__mbuf_put(b, "0", 1);
            }
        }
        return;
    }
    bool neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t p10 = 1;
    for (int i = 0; i < -exp; i++) {
        p10 *= 10;
    }
    uint64_t ip = u / p10;
    uint64_t fp = u % p10;
    snprintf(digits, sizeof(digits), "%s%" PRIu64, neg ? "-" : "", ip);
    cf__mbuf_puts(b, digits);
    if (fp != 0) {
        /* Fractional digits, zero-padded to -exp places (exp >= -12, so it fits). */
        char frac[24];
        size_t n = (size_t)-exp;
        for (size_t i = n; i > 0; i--) {
            frac[i - 1] = (char)('0' + fp % 10);
            fp /= 10;
        }
        while (n > 0 && frac[n - 1] == '0') {
            n--;
        }
        cf__mbuf_put(b, ".", 1);
        cf__mbuf_put(b, frac, n);
    }
}

/* Shortest round-tripping text of a double; Prometheus spellings for NaN and infinities. */
static void put_double(cf__mbuf *b, double v, bool json)
{
    if (isnan(v)) {
        cf__mbuf_puts(b, json ? "null" : "NaN");
        return;
    }
    if (isinf(v)) {
        cf__mbuf_puts(b, json ? "null" : (v > 0 ? "+Inf" : "-Inf"));
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    cf__mbuf_puts(b, tmp);
}

static void put_escaped(cf__mbuf *b, const char *s, bool quote_too)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\') {
            cf__mbuf_put(b, "\\\\", 2);
        } else if (*p == '\n') {
            cf__mbuf_put(b, "\\n", 2);
        } else if (quote_too && *p == '"') {
            cf__mbuf_put(b, "\\\"", 2);
        } else {
            cf__mbuf_put(b, p, 1);
        }
    }
}

/* name{a="x",b="y"[,le="..."]} */
static void put_series_name(cf__mbuf *b, const family *f, const series *s, const char *suffix,
                            const char *le)
{
    cf__mbuf_puts(b, f->name);
    cf__mbuf_puts(b, suffix);
    if (f->nlabels == 0 && le == NULL) {
        return;
    }
    cf__mbuf_put(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i > 0) {
            cf__mbuf_put(b, ",", 1);
        }
        cf__mbuf_puts(b, f->label_names[i]);
        cf__mbuf_put(b, "=\"", 2);
        put_escaped(b, s->values[i], true);
        cf__mbuf_put(b, "\"", 1);
    }
    if (le != NULL) {
        cf__mbuf_puts(b, f->nlabels > 0 ? ",le=\"" : "le=\"");
        cf__mbuf_puts(b, le);
        cf__mbuf_put(b, "\"", 1);
    }
    cf__mbuf_put(b, "}", 1);
}

/* Snapshot of a histogram series: cumulative counts (nbounds + 1 entries) and the sum. */
static uint64_t hist_snapshot(const cf_histogram *h, uint64_t *cum, int64_t *sum)
{
    uint64_t c = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        c += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        cum[i] = c;
    }
    *sum = cf_histogram_sum(h);
    return c;
}

static void expose_family(cf__mbuf *b, const family *f)
{
    cf__mbuf_printf(b, "# HELP %s ", f->name);
    put_escaped(b, f->help, false);
    cf__mbuf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    for (const series *s = f->first; s != NULL; s = s->next) {
        if (f->type == T_COUNTER) {
            put_series_name(b, f, s, "", NULL);
            cf__mbuf_printf(b, " %" PRIu64 "\n", cf_counter_value((const cf_counter *)s));
        } else if (f->type == T_GAUGE) {
            put_series_name(b, f, s, "", NULL);
            cf__mbuf_put(b, " ", 1);
            put_double(b, cf_gauge_value((const cf_gauge *)s), false);
            cf__mbuf_put(b, "\n", 1);
        } else {
            const cf_histogram *h = (const cf_histogram *)s;
            uint64_t cum[MAX_BOUNDS + 1];
            int64_t sum;
            uint64_t count = hist_snapshot(h, cum, &sum);
            for (size_t i = 0; i <= h->nbounds; i++) {
                cf__mbuf b_le = {0};
                if (i < h->nbounds) {
                    put_scaled(&b_le, h->bounds[i], f->unit_exp);
                } else {
                    cf__mbuf_puts(&b_le, "+Inf");
                }
                if (b_le.oom) {
                    b->oom = true;
                    cf_free(b_le.p);
                    return;
                }
                put_series_name(b, f, s, "_bucket", b_le.p);
                cf_free(b_le.p);
                cf__mbuf_printf(b, " %" PRIu64 "\n", cum[i]);
            }
            put_series_name(b, f, s, "_sum", NULL);
            cf__mbuf_put(b, " ", 1);
            put_scaled(b, sum, f->unit_exp);
            cf__mbuf_put(b, "\n", 1);
            put_series_name(b, f, s, "_count", NULL);
            cf__mbuf_printf(b, " %" PRIu64 "\n", count);
        }
    }
}

cf_err cf_metrics_expose(cf_metrics *m, char **out, size_t *len)
{
    CF_ASSERT(m != NULL && out != NULL);
    cf__mbuf b = {0};
    cf__mbuf_put(&b, "", 0); /* an empty registry is an empty, NUL-terminated document */
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f != NULL && !b.oom; f = f->next) {
        if (f->first != NULL) {
            expose_family(&b, f);
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        cf_free(b.p);
        *out = NULL;
        return CF_E_NOMEM;
    }
    *out = b.p;
    if (len != NULL) {
        *len = b.len;
    }
    return CF_OK;
}

static void json_series(cf__mbuf *b, const family *f, const series *s)
{
    cf__mbuf_puts(b, "{\"labels\":{");
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i > 0) {
            cf__mbuf_put(b, ",", 1);
        }
        cf__mbuf_json_str(b, f->label_names[i]);
        cf__mbuf_put(b, ":", 1);
        cf__mbuf_json_str(b, s->values[i]);
    }
    cf__mbuf_put(b, "}", 1);
    if (f->type == T_COUNTER) {
        cf__mbuf_printf(b, ",\"value\":%" PRIu64 "}", cf_counter_value((const cf_counter *)s));
        return;
    }
    if (f->type == T_GAUGE) {
        cf__mbuf_puts(b, ",\"value\":");
        put_double(b, cf_gauge_value((const cf_gauge *)s), true);
        cf__mbuf_put(b, "}", 1);
        return;
    }
    const cf_histogram *h = (const cf_histogram *)s;
    uint64_t cum[MAX_BOUNDS + 1];
    int64_t sum;
    uint64_t count = hist_snapshot(h, cum, &sum);
    cf__mbuf_printf(b, ",\"count\":%" PRIu64 ",\"sum\":", count);
    put_scaled(b, sum, f->unit_exp);
    cf__mbuf_puts(b, ",\"buckets\":[");
    for (size_t i = 0; i < h->nbounds; i++) {
        cf__mbuf_puts(b, i > 0 ? ",{\"le\":" : "{\"le\":");
        put_scaled(b, h->bounds[i], f->unit_exp);
        cf__mbuf_printf(b, ",\"count\":%" PRIu64 "}", cum[i]);
    }
    cf__mbuf_puts(b, "]}");
}

cf_err cf_metrics_snapshot_json(cf_metrics *m, char **out, size_t *len)
{
    CF_ASSERT(m != NULL && out != NULL);
    cf__mbuf b = {0};
    cf__mbuf_printf(&b,
                    "{\"schema\":\"confide.stats\",\"version\":%d,\"ts_us\":%" PRId64
                    ",\"uptime_s\":%.3f,\"metrics\":{",
                    CF_METRICS_STATS_VERSION, cf_wall_us(), cf_metrics_uptime_s(m));
    pthread_mutex_lock(&m->lock);
    bool first_f = true;
    for (const family *f = m->first; f != NULL && !b.oom; f = f->next) {
        if (f->first == NULL) {
            continue;
        }
        if (!first_f) {
            cf__mbuf_put(&b, ",", 1);
        }
        first_f = false;
        cf__mbuf_json_str(&b, f->name);
        cf__mbuf_printf(&b, ":{\"type\":\"%s\",\"series\":[", type_names[f->type]);
        for (const series *s = f->first; s != NULL; s = s->next) {
            if (s != f->first) {
                cf__mbuf_put(&b, ",", 1);
            }
            json_series(&b, f, s);
        }
        cf__mbuf_puts(&b, "]}");
    }
    pthread_mutex_unlock(&m->lock);
    cf__mbuf_puts(&b, "}}");
    if (b.oom) {
        cf_free(b.p);
        *out = NULL;
        return CF_E_NOMEM;
    }
    *out = b.p;
    if (len != NULL) {
        *len = b.len;
    }
    return CF_OK;
}
