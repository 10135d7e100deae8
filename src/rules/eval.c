/*
 * Rule evaluation, verdict encoding and alert encoding.
 *
 * Evaluation is a loop over the rules in file order with integer comparisons only; keyed
 * rules touch one store entry each (O(1) amortized, O(hits) for the velocity ring). It never
 * allocates except when a store doubles toward max_keys, and never fails. Blocked lists are
 * read inside a reader section (lists.c) so a concurrent reload can free old lists safely.
 * Threads: one evaluating thread per cf_rules; reload from any thread.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rules_int.h"

#define DAY_US 86400000000LL

typedef struct ring {
    uint32_t n;
    uint32_t head;
    int64_t ts[]; /* capacity: hits or min_count */
} ring;

typedef struct daily {
    int64_t day;
    int64_t total;
} daily;

static size_t var_key(int var, const cf_event *ev, uint8_t *buf)
{
    const char *s;
    size_t n;
    switch (var) {
    case VAR_ACCOUNT:
        s = ev->account;
        n = strnlen(s, CF_ID_MAX);
        break;
    case VAR_MERCHANT:
        s = ev->merchant;
        n = strnlen(s, CF_ID_MAX);
        break;
    case VAR_COUNTRY:
        s = ev->country;
        n = strnlen(s, 2);
        break;
    case VAR_CHANNEL:
        s = cf_channel_name((cf_channel)ev->channel);
        s = s != NULL ? s : "?";
        n = strlen(s);
        break;
    case VAR_TYPE:
        s = cf_tx_type_name((cf_tx_type)ev->type);
        s = s != NULL ? s : "?";
        n = strlen(s);
        break;
    default:
        s = ev->currency;
        n = strnlen(s, 3);
        break;
    }
    memcpy(buf, s, n);
    return n;
}

static inline int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Pushes ts and returns how many stored times lie within `period` of it. */
static uint32_t ring_push_count(ring *rg, uint32_t cap, int64_t ts, int64_t period)
{
    rg->ts[rg->head] = ts;
    rg->head = rg->head + 1 == cap ? 0 : rg->head + 1;
    if (rg->n < cap) {
        rg->n++;
    }
    uint32_t c = 0;
    for (uint32_t i = 0; i < rg->n; i++) {
        int64_t d = rg->ts[i] - ts;
        if (d < period && d > -period) {
            c++;
        }
    }
    return c;
}

static void hit(cf_verdict *out, size_t i, const cf__rule *r, uint32_t count, int64_t amount,
                int64_t day, uint8_t field)
{
    cf_rule_hit *h = &out->hits[out->n++];
    h->rule = (uint16_t)i;
    h->type = (uint8_t)r->type;
    h->field = field;
    h->count = count;
    h->amount_minor = amount;
    h->day = day;
}

void cf_rules_eval(cf_rules *rs, const cf_event *ev, cf_verdict *out)
{
    out->n = 0;
    int e = cf_currency_exponent(ev->currency);
    if (e < 0 || e > 4) {
        e = 2;
    }
    int64_t amount = ev->amount_minor;
    unsigned g = 0;
    bool reading = false;
    uint8_t key[CF__RULES_KEY_MAX];
    bool created;
    for (size_t i = 0; i < rs->n; i++) {
        cf__rule *r = &rs->rules[i];
        if (!r->enabled) {
            continue;
        }
        r->st.evaluated++;
        size_t before = out->n;
        switch (r->type) {
        case CF_RULE_LARGE_AMOUNT:
            if (amount >= r->ge_min[e]) {
                hit(out, i, r, 0, amount, 0, 0);
            }
            break;
        case CF_RULE_DAILY_AGGREGATE: {
            if (amount <= 0) {
                break; /* refunds and reversals do not offset the reportable total */
            }
            size_t kl = var_key(r->variable, ev, key);
            key[kl++] = 0;
            size_t cl = strnlen(ev->currency, 3);
            memcpy(key + kl, ev->currency, cl); /* totals are per currency: no FX here */
            kl += cl;
            daily *dd = cf__kstore_get(&r->store, key, kl, ev->ts_us, 2 * DAY_US, &created);
            /* the business day: the local calendar date (23 h or 25 h on DST changes) */
            int64_t off = r->has_tz ? cf__tz_offset_us(&r->tz, ev->ts_us) : r->utc_offset_us;
            int64_t day = floor_div(ev->ts_us + off, DAY_US);
            if (created || dd->day != day) {
                dd->day = day;
                dd->total = 0;
            }
            if (!cf_add_i64(dd->total, amount, &dd->total)) {
                dd->total = INT64_MAX; /* saturate: certainly above any threshold */
            }
            if (dd->total > r->gt_floor[e]) {
                hit(out, i, r, 0, dd->total, day, 0);
            }
            break;
        }
        case CF_RULE_STRUCTURING: {
            if (amount < r->lo_min[e] || amount >= r->ge_min[e]) {
                break;
            }
            size_t kl = var_key(r->variable, ev, key);
            ring *rg = cf__kstore_get(&r->store, key, kl, ev->ts_us, r->period_us, &created);
            uint32_t c = ring_push_count(rg, r->min_count, ev->ts_us, r->period_us);
            if (c >= r->min_count) {
                hit(out, i, r, c, amount, 0, 0);
            }
            break;
        }
        case CF_RULE_VELOCITY: {
            size_t kl = var_key(r->variable, ev, key);
            ring *rg = cf__kstore_get(&r->store, key, kl, ev->ts_us, r->period_us, &created);
            uint32_t c = ring_push_count(rg, r->hits, ev->ts_us, r->period_us);
            if (c >= r->hits) {
                hit(out, i, r, c, amount, 0, 0);
            }
            break;
        }
        case CF_RULE_BLOCKED_PARTY: {
            if (!reading) {
                g = atomic_load(&rs->gen) & 1u;
                atomic_fetch_add(&rs->readers[g], 1);
                reading = true;
            }
            const cf__idlist *l = atomic_load(&r->list);
            if (r->field_account && cf__idlist_has(l, ev->account)) {
                hit(out, i, r, 0, 0, 0, 0);
            } else if (r->field_merchant && cf__idlist_has(l, ev->merchant)) {
                hit(out, i, r, 0, 0, 0, 1);
            }
            break;
        }
        case CF_RULE_HIGH_RISK_COUNTRY: {
            unsigned a = (unsigned char)ev->country[0] - 'A';
            unsigned b = (unsigned char)ev->country[1] - 'A';
            if (a < 26 && b < 26 && r->countries[a * 26 + b]) {
                hit(out, i, r, 0, 0, 0, 0);
            }
            break;
        }
        default:
            break;
        }
        r->st.hits += out->n - before;
    }
    if (reading) {
        atomic_fetch_sub(&rs->readers[g], 1);
    }
}

size_t cf_rules_count(const cf_rules *r)
{
    return r->n;
}

const char *cf_rules_id(const cf_rules *r, size_t i)
{
    return i < r->n ? r->rules[i].id : NULL;
}

cf_rule_type cf_rules_type(const cf_rules *r, size_t i)
{
    return i < r->n ? r->rules[i].type : CF_RULE__COUNT;
}

bool cf_rules_include_amounts(const cf_rules *r)
{
    return r->include_amounts;
}

cf_err cf_rules_stats(const cf_rules *r, size_t i, cf_rule_stats *out)
{
    if (i >= r->n) {
        return CF_E_NOTFOUND;
    }
    const cf__rule *x = &r->rules[i];
    *out = x->st;
    out->evictions = x->store.evictions;
    out->expired = x->store.expired;
    out->keys_live = x->store.live;
    out->state_bytes = cf__kstore_bytes(&x->store);
    return CF_OK;
}

/* ---- verdicts --------------------------------------------------------------------------- */

size_t cf_verdict_encode(const cf_rules *r, const cf_verdict *v, uint8_t *buf, size_t size)
{
    if (size < 2 || v->n > CF_RULES_MAX) {
        return 0;
    }
    buf[0] = 1;
    buf[1] = (uint8_t)v->n;
    size_t o = 2;
    for (uint32_t i = 0; i < v->n; i++) {
        const char *id = cf_rules_id(r, v->hits[i].rule);
        CF_ASSERT(id != NULL);
        size_t n = strlen(id);
        if (o + 1 + n > size) {
            return 0;
        }
        buf[o++] = (uint8_t)n;
        memcpy(buf + o, id, n);
        o += n;
    }
    return o;
}

static cf_err verdict_walk(const uint8_t *buf, size_t len, char *out, size_t size, size_t *hits)
{
    if (len < 2 || buf[0] != 1 || buf[1] > CF_RULES_MAX) {
        return CF_E_CORRUPT;
    }
    size_t n = buf[1];
    size_t o = 2, w = 0;
    for (size_t i = 0; i < n; i++) {
        if (o >= len) {
            return CF_E_CORRUPT;
        }
        size_t l = buf[o++];
        if (l == 0 || l > CF_RULE_ID_MAX || o + l > len) {
            return CF_E_CORRUPT;
        }
        for (size_t k = 0; k < l; k++) {
            char ch = (char)buf[o + k];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.')) {
                return CF_E_CORRUPT;
            }
        }
        if (out != NULL) {
            if (w + l + 2 > size) {
                return CF_E_INVAL;
            }
            if (i > 0) {
                out[w++] = ',';
            }
            memcpy(out + w, buf + o, l);
            w += l;
        }
        o += l;
    }
    if (o != len) {
        return CF_E_CORRUPT;
    }
    if (out != NULL) {
        if (n == 0) {
            if (size < 5) {
                return CF_E_INVAL;
            }
            memcpy(out, "pass", 5);
        } else {
            out[w] = '\0';
        }
    }
    if (hits != NULL) {
        *hits = n;
    }
    return CF_OK;
}

cf_err cf_verdict_to_text(const uint8_t *buf, size_t len, char *out, size_t size)
{
    return verdict_walk(buf, len, out, size, NULL);
}

cf_err cf_verdict_hits(const uint8_t *buf, size_t len, size_t *n)
{
    return verdict_walk(buf, len, NULL, 0, n);
}

/* ---- alerts ----------------------------------------------------------------------------- */

/* A JSON string of a short config text (ids, file names). */
static bool app_str(char *buf, size_t size, size_t *o, const char *s)
{
    bool ok = cf_appendf(buf, size, o, "\"");
    for (; ok && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            ok = cf_appendf(buf, size, o, "\\%c", ch);
        } else if (ch < 0x20) {
            ok = cf_appendf(buf, size, o, "\\u%04x", ch);
        } else {
            ok = cf_appendf(buf, size, o, "%c", ch);
        }
    }
    return ok && cf_appendf(buf, size, o, "\"");
}

static void fmt_time(int64_t us, char *buf, size_t size, bool date_only)
{
    int64_t sec = floor_div(us, 1000000);
    int64_t frac = us - sec * 1000000;
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        snprintf(buf, size, "%" PRId64, us);
    } else if (date_only) {
        snprintf(buf, size, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    } else if (frac == 0) {
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    } else {
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    }
}

size_t cf_rules_alert_ndjson(const cf_rules *rs, const cf_event *ev, const cf_rule_hit *h,
                             char *buf, size_t size)
{
    if (h->rule >= rs->n) {
        return 0;
    }
    const cf__rule *r = &rs->rules[h->rule];
    char ts[40], amt[48], day[24];
    int e = cf_currency_exponent(ev->currency);
    if (e < 0) {
        e = 2;
    }
    char cur[4];
    snprintf(cur, sizeof(cur), "%.3s", ev->currency);
    fmt_time(ev->ts_us, ts, sizeof(ts), false);
    size_t o = 0;
    bool ok = cf_appendf(
                  buf, size, &o,
                  "{\"kind\":\"compliance\",\"event_id\":%" PRIu64 ",\"rule_id\":", ev->event_id) &&
              app_str(buf, size, &o, r->id) &&
              cf_appendf(buf, size, &o, ",\"ts\":\"%s\",\"details\":{\"type\":\"%s\"", ts,
                         cf_rule_type_name(r->type));
    bool amounts = rs->include_amounts;
    switch (r->type) {
    case CF_RULE_LARGE_AMOUNT:
        ok = ok && cf_appendf(buf, size, &o, ",\"threshold\":\"%s\"", r->threshold_text);
        if (amounts) {
            cf_amount_format(h->amount_minor, e, amt, sizeof(amt));
            ok =
                ok && cf_appendf(buf, size, &o, ",\"amount\":\"%s\",\"currency\":\"%s\"", amt, cur);
        }
        break;
    case CF_RULE_DAILY_AGGREGATE:
        fmt_time(h->day * DAY_US, day, sizeof(day), true);
        ok = ok &&
             cf_appendf(buf, size, &o, ",\"variable\":\"%s\",\"day\":\"%s\",\"threshold\":\"%s\"",
                        cf__rules_var_name(r->variable), day, r->threshold_text);
        if (amounts) {
            cf_amount_format(h->amount_minor, e, amt, sizeof(amt));
            ok = ok && cf_appendf(buf, size, &o, ",\"total\":\"%s\",\"currency\":\"%s\"", amt, cur);
        }
        break;
    case CF_RULE_STRUCTURING:
        ok =
            ok && cf_appendf(buf, size, &o,
                             ",\"variable\":\"%s\",\"count\":%" PRIu32 ",\"min_count\":%" PRIu32
                             ",\"period_s\":%" PRId64 ",\"threshold\":\"%s\",\"margin_pct\":\"%s\"",
                             cf__rules_var_name(r->variable), h->count, r->min_count,
                             r->period_us / 1000000, r->threshold_text, r->margin_text);
        if (amounts) {
            cf_amount_format(h->amount_minor, e, amt, sizeof(amt));
            ok =
                ok && cf_appendf(buf, size, &o, ",\"amount\":\"%s\",\"currency\":\"%s\"", amt, cur);
        }
        break;
    case CF_RULE_VELOCITY:
        ok = ok &&
             cf_appendf(buf, size, &o,
                        ",\"variable\":\"%s\",\"count\":%" PRIu32 ",\"hits\":%" PRIu32
                        ",\"period_s\":%" PRId64,
                        cf__rules_var_name(r->variable), h->count, r->hits, r->period_us / 1000000);
        break;
    case CF_RULE_BLOCKED_PARTY:
        ok = ok &&
             cf_appendf(buf, size, &o,
                        ",\"field\":\"%s\",\"list\":", h->field == 0 ? "account" : "merchant") &&
             app_str(buf, size, &o, r->list_name);
        break;
    case CF_RULE_HIGH_RISK_COUNTRY:
        ok = ok && cf_appendf(buf, size, &o, ",\"country\":\"%.2s\"", ev->country);
        break;
    default:
        break;
    }
    ok = ok && cf_appendf(buf, size, &o, "}}\n");
    if (!ok) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return o;
}
