/*
 * Rules configuration from YAML (libyaml document API). Every key is checked: unknown keys,
 * bad values and unknown rule types are errors naming the file, the line (libyaml marks)
 * and the key. Amount thresholds are exact decimals turned into per-exponent integer bounds
 * here, once, so evaluation compares integers only. Runs at load time on any thread.
 */
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "rules_int.h"

#define DEFAULT_THRESHOLD "10000.00"
#define DEFAULT_MAX_KEYS 100000u
#define MAX_MAX_KEYS (1u << 26)
#define THR4_MAX ((int64_t)1000000000000000) /* 1e11 major units, in 1e-4 units */
#define PERIOD_MAX_US ((int64_t)366 * 86400 * 1000000)

typedef struct pctx {
    const char *name;
    const char *base_dir;
    yaml_document_t *doc;
    char *errstr;
    size_t errstr_size;
} pctx;

static const char *const type_names[CF_RULE__COUNT] = {
    "large_amount", "daily_aggregate", "structuring",
    "velocity",     "blocked_party",   "high_risk_country",
};

static const char *const var_names[] = {"account", "merchant", "country",
                                        "channel", "type",     "currency"};

const char *cf_rule_type_name(cf_rule_type t)
{
    return (unsigned)t < CF_RULE__COUNT ? type_names[t] : NULL;
}

const char *cf__rules_var_name(int var)
{
    return var >= 0 && var < 6 ? var_names[var] : "?";
}

static cf_err perr(pctx *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cf_err perr(pctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return cf_err_set(CF_E_INVAL, c->errstr, c->errstr_size, "%s:%lu: %s", c->name,
                      n != NULL ? (unsigned long)n->start_mark.line + 1 : 0UL, msg);
}

static const char *scalar(const yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* ---- value parsers ---------------------------------------------------------------------- */

/* "220.00" -> 2200000 (units of 1e-4 major). */
static bool parse_amount4(const char *s, int64_t *out)
{
    int64_t v;
    if (cf_amount_parse(s, strlen(s), 4, &v) != CF_OK || v <= 0 || v > THR4_MAX) {
        return false;
    }
    *out = v;
    return true;
}

static const int64_t POW10[5] = {1, 10, 100, 1000, 10000};

static void set_bounds(cf__rule *r, int64_t thr4, uint32_t margin_bp)
{
    __extension__ typedef unsigned __int128 u128;
    for (int e = 0; e <= 4; e++) {
        int64_t d = POW10[4 - e];
        r->ge_min[e] = (thr4 + d - 1) / d;
        r->gt_floor[e] = thr4 / d;
        /* amount * d * 10000 >= thr4 * (10000 - margin_bp), rounded up. */
        u128 num = (u128)(uint64_t)thr4 * (10000u - margin_bp);
        u128 den = (u128)(uint64_t)d * 10000u;
        r->lo_min[e] = (int64_t)((num + den - 1) / den);
    }
}

/* "12h", "30m", "45s", "500ms", "1d". */
static bool parse_period(const char *s, int64_t *out)
{
    char *end = NULL;
    if (*s < '0' || *s > '9') {
        return false;
    }
    unsigned long long v = strtoull(s, &end, 10);
    int64_t mul;
    if (strcmp(end, "ms") == 0) {
        mul = 1000;
    } else if (strcmp(end, "s") == 0) {
        mul = 1000000;
    } else if (strcmp(end, "m") == 0) {
        mul = 60000000;
    } else if (strcmp(end, "h") == 0) {
        mul = 3600000000LL;
    } else if (strcmp(end, "d") == 0) {
        mul = 86400000000LL;
    } else {
        return false;
    }
    if (v == 0 || v > (unsigned long long)(PERIOD_MAX_US / mul)) {
        return false;
    }
    *out = (int64_t)v * mul;
    return true;
}

static bool parse_uint(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end = NULL;
    if (*s < '0' || *s > '9') {
        return false;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* "10", "7.5", "12.25" percent -> hundredths of a percent, (0, 100]. */
static bool parse_pct(const char *s, uint32_t *bp)
{
    int64_t v;
    if (cf_amount_parse(s, strlen(s), 2, &v) != CF_OK || v <= 0 || v > 10000) {
        return false;
    }
    *bp = (uint32_t)v;
    return true;
}

/* "+02:00", "-05:30", "Z", "UTC". */
static bool parse_offset(const char *s, int64_t *out)
{
    if (strcmp(s, "Z") == 0 || strcmp(s, "UTC") == 0) {
        *out = 0;
        return true;
    }
    if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':') {
        return false;
    }
    for (int i = 1; i < 6; i++) {
        if (i != 3 && (s[i] < '0' || s[i] > '9')) {
            return false;
        }
    }
    int h = (s[1] - '0') * 10 + (s[2] - '0');
    int m = (s[4] - '0') * 10 + (s[5] - '0');
    if (h > 14 || m > 59) {
        return false;
    }
    int64_t us = ((int64_t)h * 3600 + m * 60) * 1000000;
    *out = s[0] == '-' ? -us : us;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0) {
        *out = false;
        return true;
    }
    return false;
}

static int parse_var(const char *s)
{
    for (int i = 0; i < 6; i++) {
        if (strcmp(s, var_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CF_RULE_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.')) {
            return false;
        }
    }
    return true;
}

/* ---- one rule --------------------------------------------------------------------------- */

/* Which keys each type accepts, beyond id, type, enabled, description. */
static bool key_allowed(cf_rule_type t, const char *k)
{
    static const char *const allowed[CF_RULE__COUNT][8] = {
        [CF_RULE_LARGE_AMOUNT] = {"threshold"},
        [CF_RULE_DAILY_AGGREGATE] = {"threshold", "variable", "utc_offset", "time_zone",
                                     "max_keys"},
        [CF_RULE_STRUCTURING] = {"threshold", "margin_pct", "min_count", "period", "variable",
                                 "max_keys"},
        [CF_RULE_VELOCITY] = {"variable", "hits", "period", "max_keys"},
        [CF_RULE_BLOCKED_PARTY] = {"field", "fields", "file"},
        [CF_RULE_HIGH_RISK_COUNTRY] = {"countries"},
    };
    for (int i = 0; i < 8 && allowed[t][i] != NULL; i++) {
        if (strcmp(allowed[t][i], k) == 0) {
            return true;
        }
    }
    return false;
}

static cf_err parse_field(pctx *c, cf__rule *r, const yaml_node_t *v, const char *f)
{
    if (strcmp(f, "account") == 0) {
        r->field_account = true;
    } else if (strcmp(f, "merchant") == 0) {
        r->field_merchant = true;
    } else {
        return perr(c, v, "rule '%s': field '%s' must be account or merchant", r->id, f);
    }
    return CF_OK;
}

/* YAML allows a key twice in a mapping (the last one wins); in a rules file that is a typo. */
static cf_err check_duplicates(pctx *c, const yaml_node_t *m, const char *what)
{
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *a = scalar(yaml_document_get_node(c->doc, p->key));
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; a != NULL && q < p; q++) {
            const char *b = scalar(yaml_document_get_node(c->doc, q->key));
            if (b != NULL && strcmp(a, b) == 0) {
                return perr(c, yaml_document_get_node(c->doc, p->key), "%s: duplicate key '%s'",
                            what, a);
            }
        }
    }
    return CF_OK;
}

static cf_err parse_rule(pctx *c, yaml_node_t *m, cf__rule *r)
{
    yaml_document_t *d = c->doc;
    const yaml_node_t *type_node = NULL;
    const yaml_node_t *id_node = NULL;
    if (m->type != YAML_MAPPING_NODE) {
        return perr(c, m, "each rule must be a mapping with at least id and type");
    }
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(d, p->key);
        const char *ks = scalar(k);
        if (ks != NULL && strcmp(ks, "type") == 0) {
            type_node = yaml_document_get_node(d, p->value);
        } else if (ks != NULL && strcmp(ks, "id") == 0) {
            id_node = yaml_document_get_node(d, p->value);
        }
    }
    if (id_node == NULL) {
        return perr(c, m, "rule without 'id'");
    }
    const char *id = scalar(id_node);
    if (id == NULL || !valid_id(id)) {
        return perr(c, id_node, "rule id must be 1..%d characters of [A-Za-z0-9_.-]",
                    CF_RULE_ID_MAX);
    }
    snprintf(r->id, sizeof(r->id), "%s", id);
    char what[CF_RULE_ID_MAX + 16];
    snprintf(what, sizeof(what), "rule '%s'", r->id);
    cf_err de = check_duplicates(c, m, what);
    if (de != CF_OK) {
        return de;
    }
    if (type_node == NULL) {
        return perr(c, m, "rule '%s': missing key 'type'", r->id);
    }
    const char *ts = scalar(type_node);
    int t = -1;
    for (int i = 0; ts != NULL && i < CF_RULE__COUNT; i++) {
        if (strcmp(ts, type_names[i]) == 0) {
            t = i;
        }
    }
    if (t < 0) {
        return perr(c, type_node,
                    "rule '%s': unknown type '%s' (expected large_amount, daily_aggregate, "
                    "structuring, velocity, blocked_party or high_risk_country)",
                    r->id, ts != NULL ? ts : "(not a scalar)");
    }
    r->type = (cf_rule_type)t;
    r->enabled = true;
    r->variable = VAR_ACCOUNT;
    r->max_keys = DEFAULT_MAX_KEYS;
    r->hits = 0;
    r->min_count = 3;
    r->period_us = 0;
    uint32_t margin_bp = 1000;
    snprintf(r->margin_text, sizeof(r->margin_text), "10");
    snprintf(r->threshold_text, sizeof(r->threshold_text), "%s", DEFAULT_THRESHOLD);
    bool have_file = false, have_field = false, have_countries = false, have_hits = false;
    bool have_period = false, have_variable = false;

    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(d, p->key);
        yaml_node_t *v = yaml_document_get_node(d, p->value);
        const char *ks = scalar(k);
        const char *vs = scalar(v);
        if (ks == NULL) {
            return perr(c, k, "rule '%s': keys must be scalars", r->id);
        }
        if (strcmp(ks, "id") == 0 || strcmp(ks, "type") == 0) {
            continue;
        }
        if (strcmp(ks, "description") == 0) {
            if (vs == NULL) {
                return perr(c, v, "rule '%s': description must be a string", r->id);
            }
            continue;
        }
        if (strcmp(ks, "enabled") == 0) {
            if (vs == NULL || !parse_bool(vs, &r->enabled)) {
                return perr(c, v, "rule '%s': enabled must be true or false", r->id);
            }
            continue;
        }
        if (!key_allowed(r->type, ks)) {
            return perr(c, k, "rule '%s': unknown key '%s' for type %s", r->id, ks,
                        type_names[r->type]);
        }
        if (strcmp(ks, "countries") == 0) {
            if (v->type != YAML_SEQUENCE_NODE) {
                return perr(c, v, "rule '%s': countries must be a list like [IR, KP]", r->id);
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                const yaml_node_t *cn = yaml_document_get_node(d, *it);
                const char *cs = scalar(cn);
                if (cs == NULL || !cf_country_valid(cs, strlen(cs))) {
                    return perr(c, cn, "rule '%s': '%s' is not an ISO 3166-1 alpha-2 country code",
                                r->id, cs != NULL ? cs : "(not a scalar)");
                }
                r->countries[(cs[0] - 'A') * 26 + (cs[1] - 'A')] = 1;
            }
            have_countries = true;
            continue;
        }
        if (strcmp(ks, "fields") == 0) {
            if (v->type != YAML_SEQUENCE_NODE ||
                v->data.sequence.items.start == v->data.sequence.items.top) {
                return perr(c, v, "rule '%s': fields must be a non-empty list", r->id);
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                const yaml_node_t *fn = yaml_document_get_node(d, *it);
                const char *fs = scalar(fn);
                cf_err e = parse_field(c, r, fn, fs != NULL ? fs : "(not a scalar)");
                if (e != CF_OK) {
                    return e;
                }
            }
            have_field = true;
            continue;
        }
        if (vs == NULL) {
            return perr(c, v, "rule '%s': %s must be a scalar", r->id, ks);
        }
        if (strcmp(ks, "threshold") == 0) {
            int64_t t4;
            if (!parse_amount4(vs, &t4) || strlen(vs) >= sizeof(r->threshold_text)) {
                return perr(c, v,
                            "rule '%s': threshold '%s' must be a positive decimal amount in major "
                            "units like \"10000.00\"",
                            r->id, vs);
            }
            snprintf(r->threshold_text, sizeof(r->threshold_text), "%s", vs);
        } else if (strcmp(ks, "variable") == 0) {
            r->variable = parse_var(vs);
            if (r->variable < 0) {
                return perr(c, v,
                            "rule '%s': variable '%s' must be account, merchant, country, "
                            "channel, type or currency",
                            r->id, vs);
            }
            have_variable = true;
        } else if (strcmp(ks, "time_zone") == 0) {
            char why[256];
            if (r->has_tz || strlen(vs) >= sizeof(r->tz_name) || r->utc_offset_us != 0) {
                return perr(c, v,
                            "rule '%s': time_zone given twice, too long, or beside utc_offset "
                            "(use one of them)",
                            r->id);
            }
            if (cf__tz_load(vs, &r->tz, why, sizeof(why)) != CF_OK) {
                return perr(c, v, "rule '%s': %s", r->id, why);
            }
            r->has_tz = true;
            snprintf(r->tz_name, sizeof(r->tz_name), "%s", vs);
        } else if (strcmp(ks, "utc_offset") == 0) {
            if (r->has_tz) {
                return perr(c, v, "rule '%s': utc_offset beside time_zone (use one of them)",
                            r->id);
            }
            if (!parse_offset(vs, &r->utc_offset_us)) {
                return perr(c, v, "rule '%s': utc_offset '%s' must look like +02:00 or Z", r->id,
                            vs);
            }
        } else if (strcmp(ks, "max_keys") == 0) {
            if (!parse_uint(vs, 1, MAX_MAX_KEYS, &r->max_keys)) {
                return perr(c, v, "rule '%s': max_keys must be in 1..%u", r->id, MAX_MAX_KEYS);
            }
        } else if (strcmp(ks, "margin_pct") == 0) {
            if (!parse_pct(vs, &margin_bp) || strlen(vs) >= sizeof(r->margin_text)) {
                return perr(c, v, "rule '%s': margin_pct must be a percentage in (0, 100]", r->id);
            }
            snprintf(r->margin_text, sizeof(r->margin_text), "%s", vs);
        } else if (strcmp(ks, "min_count") == 0) {
            if (!parse_uint(vs, 2, 64, &r->min_count)) {
                return perr(c, v, "rule '%s': min_count must be in 2..64", r->id);
            }
        } else if (strcmp(ks, "hits") == 0) {
            if (!parse_uint(vs, 1, 256, &r->hits)) {
                return perr(c, v, "rule '%s': hits must be in 1..256", r->id);
            }
            have_hits = true;
        } else if (strcmp(ks, "period") == 0) {
            if (!parse_period(vs, &r->period_us)) {
                return perr(c, v,
                            "rule '%s': period '%s' must be a duration like 500ms, 30s, 15m, "
                            "12h or 1d (at most 366d)",
                            r->id, vs);
            }
            have_period = true;
        } else if (strcmp(ks, "field") == 0) {
            cf_err e = parse_field(c, r, v, vs);
            if (e != CF_OK) {
                return e;
            }
            have_field = true;
        } else if (strcmp(ks, "file") == 0) {
            if (vs[0] == '\0' || strlen(vs) >= sizeof(r->list_name)) {
                return perr(c, v, "rule '%s': file must be a path", r->id);
            }
            snprintf(r->list_name, sizeof(r->list_name), "%s", vs);
            cf_free(r->list_path);
            size_t need = strlen(vs) + (c->base_dir != NULL ? strlen(c->base_dir) + 2 : 1);
            r->list_path = cf_malloc(need);
            if (r->list_path == NULL) {
                return cf_err_set(CF_E_NOMEM, c->errstr, c->errstr_size, "out of memory");
            }
            if (vs[0] == '/' || c->base_dir == NULL) {
                snprintf(r->list_path, need, "%s", vs);
            } else {
                snprintf(r->list_path, need, "%s/%s", c->base_dir, vs);
            }
            have_file = true;
        }
    }
    (void)have_variable;
    int64_t thr4 = 0;
    parse_amount4(r->threshold_text, &thr4);
    set_bounds(r, thr4, margin_bp);
    switch (r->type) {
    case CF_RULE_VELOCITY:
        if (!have_hits || !have_period) {
            return perr(c, m, "rule '%s': velocity needs hits and period", r->id);
        }
        break;
    case CF_RULE_STRUCTURING:
        if (!have_period) {
            return perr(c, m, "rule '%s': structuring needs period", r->id);
        }
        break;
    case CF_RULE_BLOCKED_PARTY:
        if (!have_file) {
            return perr(c, m, "rule '%s': blocked_party needs file", r->id);
        }
        if (!have_field) {
            r->field_account = true;
            r->field_merchant = true;
        }
        break;
    case CF_RULE_HIGH_RISK_COUNTRY:
        if (!have_countries) {
            return perr(c, m, "rule '%s': high_risk_country needs countries", r->id);
        }
        break;
    case CF_RULE_DAILY_AGGREGATE:
        r->period_us = 86400000000LL;
        break;
    default:
        break;
    }
    return CF_OK;
}

/* Payload bytes of each keyed rule (see eval.c). */
static size_t payload_size(const cf__rule *r)
{
    switch (r->type) {
    case CF_RULE_DAILY_AGGREGATE:
        return 2 * sizeof(int64_t);
    case CF_RULE_STRUCTURING:
        return 8 + (size_t)r->min_count * sizeof(int64_t);
    case CF_RULE_VELOCITY:
        return 8 + (size_t)r->hits * sizeof(int64_t);
    default:
        return 0;
    }
}

static cf_err parse_alerts(pctx *c, yaml_node_t *m, cf_rules *rs)
{
    if (m->type != YAML_MAPPING_NODE) {
        return perr(c, m, "alerts must be a mapping");
    }
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *ks = scalar(k);
        const char *vs = scalar(v);
        if (ks != NULL && strcmp(ks, "include_amounts") == 0) {
            if (vs == NULL || !parse_bool(vs, &rs->include_amounts)) {
                return perr(c, v, "alerts.include_amounts must be true or false");
            }
        } else {
            return perr(c, k, "unknown key 'alerts.%s' (expected include_amounts)",
                        ks != NULL ? ks : "?");
        }
    }
    return CF_OK;
}

void cf_rules_destroy(cf_rules *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        cf__kstore_free(&r->rules[i].store);
        cf__tz_free(&r->rules[i].tz);
        cf_free(r->rules[i].list_path);
        cf__idlist_free(atomic_load(&r->rules[i].list));
    }
    pthread_mutex_destroy(&r->reload_lock);
    cf_free(r->rules);
    cf_free(r);
}

cf_err cf_rules_load_string(cf_rules **out, const char *yaml, size_t len, const char *name,
                            const char *base_dir, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_parser = false, have_doc = false;
    cf_rules *rs = NULL;
    pctx c = {.name = name != NULL ? name : "rules",
              .base_dir = base_dir,
              .doc = &doc,
              .errstr = errstr,
              .errstr_size = errstr_size};
    *out = NULL;

    rs = cf_calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
    }
    pthread_mutex_init(&rs->reload_lock, NULL);
    rs->rules = cf_calloc(CF_RULES_MAX, sizeof(cf__rule));
    if (rs->rules == NULL || !yaml_parser_initialize(&parser)) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%lu: YAML error: %s", c.name,
                         (unsigned long)parser.problem_mark.line + 1,
                         parser.problem != NULL ? parser.problem : "unknown");
        goto fail;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        err = perr(&c, root, "a rules file is a mapping with a 'rules' list");
        goto fail;
    }
    err = check_duplicates(&c, root, "top level");
    if (err != CF_OK) {
        goto fail;
    }
    yaml_node_t *rules_node = NULL;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&doc, p->value);
        const char *ks = scalar(k);
        if (ks != NULL && strcmp(ks, "rules") == 0) {
            rules_node = v;
        } else if (ks != NULL && strcmp(ks, "alerts") == 0) {
            err = parse_alerts(&c, v, rs);
            if (err != CF_OK) {
                goto fail;
            }
        } else {
            err = perr(&c, k, "unknown key '%s' (expected rules or alerts)", ks != NULL ? ks : "?");
            goto fail;
        }
    }
    if (rules_node == NULL || rules_node->type != YAML_SEQUENCE_NODE) {
        err = perr(&c, rules_node != NULL ? rules_node : root, "'rules' must be a list of rules");
        goto fail;
    }
    for (yaml_node_item_t *it = rules_node->data.sequence.items.start;
         it < rules_node->data.sequence.items.top; it++) {
        yaml_node_t *rn = yaml_document_get_node(&doc, *it);
        if (rs->n == CF_RULES_MAX) {
            err = perr(&c, rn, "more than %d rules", CF_RULES_MAX);
            goto fail;
        }
        cf__rule *r = &rs->rules[rs->n];
        atomic_init(&r->list, NULL);
        rs->n++; /* counted first so destroy frees what parse_rule allocated */
        err = parse_rule(&c, rn, r);
        if (err != CF_OK) {
            goto fail;
        }
        for (size_t j = 0; j + 1 < rs->n; j++) {
            if (strcmp(rs->rules[j].id, r->id) == 0) {
                err = perr(&c, rn, "duplicate rule id '%s'", r->id);
                goto fail;
            }
        }
        size_t ps = payload_size(r);
        if (ps > 0) {
            err = cf__kstore_init(&r->store, ps, r->max_keys);
            if (err != CF_OK) {
                cf_err_set(err, errstr, errstr_size, "out of memory");
                goto fail;
            }
            r->st.keys_max = r->max_keys;
        }
        if (r->type == CF_RULE_BLOCKED_PARTY) {
            cf__idlist *l = NULL;
            char sub[384];
            err = cf__idlist_load(r->list_path, &l, sub, sizeof(sub));
            if (err != CF_OK) {
                cf_err_set(err, errstr, errstr_size, "%s:%lu: rule '%s': %s", c.name,
                           (unsigned long)rn->start_mark.line + 1, r->id, sub);
                goto fail;
            }
            atomic_store(&r->list, l);
            r->st.list_entries = l->n;
            rs->has_lists = true;
        }
    }
    if (rs->n == 0) {
        err = perr(&c, rules_node, "'rules' is empty");
        goto fail;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    *out = rs;
    return CF_OK;
fail:
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    if (have_parser) {
        yaml_parser_delete(&parser);
    }
    cf_rules_destroy(rs);
    return err;
}

cf_err cf_rules_load_file(cf_rules **out, const char *path, char *errstr, size_t errstr_size)
{
    cf_err err;
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    char *dir = NULL;
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "rules file %s", path);
    }
    size_t cap = 4096, n = 0;
    buf = cf_malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            break;
        }
        if (cap >= ((size_t)16 << 20)) {
            fclose(f);
            cf_free(buf);
            return cf_err_set(CF_E_LIMIT, errstr, errstr_size, "rules file %s: larger than 16 MiB",
                              path);
        }
        char *nb = cf_realloc(buf, cap * 2);
        if (nb == NULL) {
            cf_free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool rerr = ferror(f) != 0;
    fclose(f);
    if (buf == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
    }
    if (rerr) {
        cf_free(buf);
        return cf_err_set(CF_E_IO, errstr, errstr_size, "rules file %s: read error", path);
    }
    dir = cf_strdup(path);
    if (dir == NULL) {
        cf_free(buf);
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
    }
    err = cf_rules_load_string(out, buf, n, path, dirname(dir), errstr, errstr_size);
    cf_free(dir);
    cf_free(buf);
    return err;
}
