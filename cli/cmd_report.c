/*
 * confide audit report: what an auditor hands on about one audit log, as a self-contained
 * HTML page (inline CSS and SVG, no script, nothing loaded from elsewhere) or Markdown.
 *
 * It verifies the log with the public API (cf_audit_verify: CRCs, contents with data.key,
 * every root and signature, gaps, duplicates), reads it once more with cf_audit_reader for
 * what the verifier does not summarize (the period the events cover, events per hour,
 * verdicts by rule, signed heads by signing key, checkpoints), checks it against a tree head
 * kept outside the log when there is one, and adds what the run wrote beside the log
 * (dead letters and late events by reason, compliance and integrity alerts, released rows).
 *
 * What it never shows: amounts, account or merchant ids, event ids, raw records. Dead-letter
 * reasons are cut at their first ':' (as the metrics labels are), so a bad value quoted in a
 * reason does not reach the report.
 *
 * Memory: the hour histogram (one slot per distinct hour) and the per-key and per-rule tables
 * (bounded); the log is streamed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_heads.h"
#include "cli.h"
#include "opts.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/keys.h"
#include "confide/rules.h"

#define MAX_OLD 8
#define MAX_KEYS 32      /* signing keys seen in heads */
#define MAX_REASONS 64   /* distinct reasons / rules shown; more count under "other" */
#define MAX_INTEGRITY 50 /* integrity alerts listed one by one */
#define HOUR_US INT64_C(3600000000)

typedef struct counted {
    char name[64];
    uint64_t n;
} counted;

typedef struct tally {
    counted c[MAX_REASONS];
    size_t n;
    uint64_t other;
} tally;

typedef struct key_seen {
    uint8_t id[CF_KEY_ID_LEN];
    int64_t epoch; /* -1: not one of the keys given */
    uint64_t heads, first_size, last_size;
    int64_t first_us, last_us;
} key_seen;

typedef struct hour_slot {
    int64_t hour; /* ts_us / HOUR_US */
    uint64_t n;
    bool used;
} hour_slot;

typedef struct integrity_line {
    char window[96];
    char party[16];
    char details[160];
} integrity_line;

typedef struct report {
    const char *dir, *keys, *outputs;
    char log_id[2 * CF_AUDIT_LOG_ID_LEN + 1];
    uint64_t bytes, segments_found;
    /* verification */
    cf_audit_report vr;
    cf_err verr;
    char verr_text[512];
    bool have_data_key;
    uint32_t key_epoch;
    /* the reader's pass */
    bool read_ok;
    char read_err[512];
    uint64_t events, batches, heads, checkpoints;
    int64_t ev_min_us, ev_max_us;
    bool have_events;
    cf_audit_sth first_head, last_head;
    uint64_t verdicts_pass, verdicts_flagged, verdicts_missing;
    tally rules;
    key_seen keys_seen[MAX_KEYS];
    size_t n_keys_seen;
    uint64_t key_changes;
    hour_slot *hours;
    size_t hours_cap, hours_n;
    /* trusted head */
    const char *trusted_path;
    bool trusted_checked, trusted_ok;
    uint64_t trusted_size;
    /* the run's outputs */
    bool have_outputs;
    tally dead, late;
    uint64_t dead_total, late_total, alerts_total, results_total;
    bool have_dead, have_late, have_alerts, have_results;
    tally alert_rules;
    uint64_t log_dead; /* dead letters the audit log holds (record type 5) */
    tally log_dead_by; /* ... by reason (cut at the first ':', like the file's) */
    uint64_t integrity_total;
    integrity_line integrity[MAX_INTEGRITY];
    size_t n_integrity;
} report;

/* ---- small helpers ------------------------------------------------------------------------ */

static void tally_add(tally *t, const char *name, uint64_t n)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->c[i].name, name) == 0) {
            t->c[i].n += n;
            return;
        }
    }
    if (t->n == MAX_REASONS) {
        t->other += n;
        return;
    }
    snprintf(t->c[t->n].name, sizeof(t->c[t->n].name), "%s", name);
    t->c[t->n++].n = n;
}

static int by_count_desc(const void *a, const void *b)
{
    const counted *x = a, *y = b;
    return x->n != y->n ? (x->n < y->n ? 1 : -1) : strcmp(x->name, y->name);
}

static void hexs(const uint8_t *p, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, p, n);
}

static void fmt_time(int64_t us, char *buf, size_t size)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        snprintf(buf, size, "?");
    }
}

/* The start of hour @p hour (hours since the epoch): "%d %H:00" short, else "%Y-%m-%d %H:00";
 * days only when !@p hourly. */
static void fmt_hour(int64_t hour, char *buf, size_t size, bool hourly, bool shrt)
{
    time_t t = (time_t)(hour * 3600);
    struct tm tm;
    size_t n = 0;
    if (gmtime_r(&t, &tm) != NULL) {
        n = hourly
                ? (shrt ? strftime(buf, size, "%d %H:00", &tm)
                        : strftime(buf, size, "%Y-%m-%d %H:00", &tm))
                : (shrt ? strftime(buf, size, "%m-%d", &tm) : strftime(buf, size, "%Y-%m-%d", &tm));
    }
    if (n == 0) {
        snprintf(buf, size, "?");
    }
}

/* A bounded label from free text: up to the first ':' (or " at ", which starts the time of
 * "no rate for XXX at TIME"), lower case, words joined by '_'. */
static void reason_label(const char *s, size_t len, char *out, size_t size)
{
    size_t j = 0;
    bool sep = false;
    for (size_t i = 0;
         i < len && s[i] != ':' && j + 2 < size && !(len - i >= 4 && memcmp(s + i, " at ", 4) == 0);
         i++) {
        char ch = s[i];
        if (ch >= 'A' && ch <= 'Z') {
            ch = (char)(ch - 'A' + 'a');
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
            if (sep && j > 0) {
                out[j++] = '_';
            }
            out[j++] = ch;
            sep = false;
        } else {
            sep = true;
        }
    }
    if (j == 0) {
        snprintf(out, size, "unknown");
        return;
    }
    out[j] = '\0';
}

/* The string value of "key" in one NDJSON line written by confide (escapes kept as they
 * are, quotes excluded): *len bytes at the returned pointer, or NULL. */
static const char *json_str(const char *line, const char *key, size_t *len)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (p == NULL) {
        return NULL;
    }
    p += strlen(pat);
    const char *e = p;
    while (*e != '\0' && *e != '"') {
        e += *e == '\\' && e[1] != '\0' ? 2 : 1;
    }
    *len = (size_t)(e - p);
    return p;
}

static bool json_raw(const char *line, const char *key, char *out, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (p == NULL) {
        return false;
    }
    p += strlen(pat);
    size_t n = strcspn(p, ",}");
    n = n < size - 1 ? n : size - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static cf_err hour_add(report *r, int64_t hour)
{
    if ((r->hours_n + 1) * 2 > r->hours_cap) {
        size_t ncap = r->hours_cap ? r->hours_cap * 2 : 256;
        hour_slot *nh = cf_calloc(ncap, sizeof(*nh));
        if (nh == NULL) {
            return CF_E_NOMEM;
        }
        for (size_t i = 0; i < r->hours_cap; i++) {
            if (r->hours[i].used) {
                size_t j = (size_t)((uint64_t)r->hours[i].hour * 0x9E3779B97F4A7C15u) & (ncap - 1);
                while (nh[j].used) {
                    j = (j + 1) & (ncap - 1);
                }
                nh[j] = r->hours[i];
            }
        }
        cf_free(r->hours);
        r->hours = nh;
        r->hours_cap = ncap;
    }
    size_t j = (size_t)((uint64_t)hour * 0x9E3779B97F4A7C15u) & (r->hours_cap - 1);
    while (r->hours[j].used && r->hours[j].hour != hour) {
        j = (j + 1) & (r->hours_cap - 1);
    }
    if (!r->hours[j].used) {
        r->hours[j].used = true;
        r->hours[j].hour = hour;
        r->hours_n++;
    }
    r->hours[j].n++;
    return CF_OK;
}

static uint64_t hour_count(const report *r, int64_t hour)
{
    if (r->hours_cap == 0) {
        return 0;
    }
    size_t j = (size_t)((uint64_t)hour * 0x9E3779B97F4A7C15u) & (r->hours_cap - 1);
    while (r->hours[j].used) {
        if (r->hours[j].hour == hour) {
            return r->hours[j].n;
        }
        j = (j + 1) & (r->hours_cap - 1);
    }
    return 0;
}

/* ---- gathering ---------------------------------------------------------------------------- */

static void segments_size(report *r)
{
    DIR *d = opendir(r->dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n > 4 && strcmp(de->d_name + n - 4, ".seg") == 0) {
            char p[4096 + 256];
            struct stat st;
            snprintf(p, sizeof(p), "%s/%s", r->dir, de->d_name);
            if (stat(p, &st) == 0) {
                r->bytes += (uint64_t)st.st_size;
                r->segments_found++;
            }
        }
    }
    closedir(d);
}

static void note_head(report *r, const cf_audit_sth *s, const cf_audit_pubkey *known,
                      const int64_t *known_epoch, size_t n_known)
{
    if (r->heads == 0) {
        r->first_head = *s;
    }
    r->last_head = *s;
    r->heads++;
    key_seen *k = NULL;
    for (size_t i = 0; i < r->n_keys_seen; i++) {
        if (memcmp(r->keys_seen[i].id, s->key_id, CF_KEY_ID_LEN) == 0) {
            k = &r->keys_seen[i];
        }
    }
    if (r->n_keys_seen > 0 &&
        memcmp(r->keys_seen[r->n_keys_seen - 1].id, s->key_id, CF_KEY_ID_LEN) != 0 &&
        (k == NULL || k != &r->keys_seen[r->n_keys_seen - 1])) {
        r->key_changes++;
    }
    if (k == NULL && r->n_keys_seen < MAX_KEYS) {
        k = &r->keys_seen[r->n_keys_seen++];
        memcpy(k->id, s->key_id, CF_KEY_ID_LEN);
        k->epoch = -1;
        for (size_t i = 0; i < n_known; i++) {
            if (memcmp(known[i].id, s->key_id, CF_KEY_ID_LEN) == 0) {
                k->epoch = known_epoch[i];
            }
        }
        k->first_size = s->tree_size;
        k->first_us = s->timestamp_us;
    }
    if (k != NULL) {
        k->heads++;
        k->last_size = s->tree_size;
        k->last_us = s->timestamp_us;
    }
}

static void read_log(report *r, const cf_key *dk, const cf_audit_pubkey *known,
                     const int64_t *known_epoch, size_t n_known)
{
    cf_audit_reader *rd = NULL;
    r->read_ok = false;
    if (cf_audit_reader_open(&rd, r->dir, dk, 0, r->read_err, sizeof(r->read_err)) != CF_OK) {
        return;
    }
    for (;;) {
        cf_audit_entry e;
        cf_err err = cf_audit_reader_next(rd, &e, r->read_err, sizeof(r->read_err));
        if (err == CF_E_EOF) {
            r->read_ok = true;
            r->read_err[0] = '\0';
            break;
        }
        if (err != CF_OK) {
            break;
        }
        if (e.type == CF_AUDIT_REC_STH) {
            note_head(r, &e.sth, known, known_epoch, n_known);
            continue;
        }
        if (e.type == CF_AUDIT_REC_CHECKPOINT) {
            r->checkpoints++;
            continue;
        }
        if (e.type == CF_AUDIT_REC_DEAD) {
            r->log_dead += e.count; /* rejected input records: leaves, not events */
            for (uint32_t i = 0; i < e.count; i++) {
                char label[64];
                reason_label(e.dead[i].reason, strlen(e.dead[i].reason), label, sizeof(label));
                tally_add(&r->log_dead_by, label, 1);
            }
            continue;
        }
        r->batches++;
        r->events += e.count;
        for (uint32_t i = 0; i < e.count; i++) {
            if (e.events != NULL) {
                int64_t ts = e.events[i].ts_us;
                if (!r->have_events || ts < r->ev_min_us) {
                    r->ev_min_us = ts;
                }
                if (!r->have_events || ts > r->ev_max_us) {
                    r->ev_max_us = ts;
                }
                r->have_events = true;
                int64_t h = ts >= 0 ? ts / HOUR_US : -((-ts + HOUR_US - 1) / HOUR_US);
                if (hour_add(r, h) != CF_OK) {
                    snprintf(r->read_err, sizeof(r->read_err), "out of memory");
                    cf_audit_reader_destroy(rd);
                    return;
                }
            }
            if (e.verdicts == NULL || e.verdicts[i].data == NULL) {
                r->verdicts_missing++;
                continue;
            }
            char text[CF_VERDICT_ENCODED_MAX + 8];
            if (cf_verdict_to_text(e.verdicts[i].data, e.verdicts[i].len, text, sizeof(text)) !=
                CF_OK) {
                r->verdicts_missing++;
                continue;
            }
            if (strcmp(text, "pass") == 0) {
                r->verdicts_pass++;
                continue;
            }
            r->verdicts_flagged++;
            for (char *save = NULL, *id = strtok_r(text, ",", &save); id != NULL;
                 id = strtok_r(NULL, ",", &save)) {
                tally_add(&r->rules, id, 1);
            }
        }
    }
    cf_audit_reader_destroy(rd);
}

/* Reads OUT/<name> line by line; @p fn gets each line. false when the file is absent. */
static bool each_line(const char *out, const char *name, void (*fn)(report *, const char *),
                      report *r)
{
    char p[4096 + 64];
    snprintf(p, sizeof(p), "%s/%s", out, name);
    FILE *f = fopen(p, "r");
    if (f == NULL) {
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        fn(r, line);
    }
    free(line);
    fclose(f);
    return true;
}

/* One line of dead_letter.ndjson or late.ndjson: counted by its reason. */
static void count_reason(tally *t, uint64_t *total, const char *line)
{
    size_t n = 0;
    const char *s = json_str(line, "reason", &n);
    char label[64];
    reason_label(s != NULL ? s : "unknown", s != NULL ? n : 7, label, sizeof(label));
    tally_add(t, label, 1);
    (*total)++;
}

static void on_dead(report *r, const char *line)
{
    count_reason(&r->dead, &r->dead_total, line);
}

static void on_late(report *r, const char *line)
{
    count_reason(&r->late, &r->late_total, line);
}

static void on_result(report *r, const char *line)
{
    r->results_total += line[0] == '{';
}

static void copy_field(const char *line, const char *key, char *out, size_t size)
{
    size_t n = 0;
    const char *s = json_str(line, key, &n);
    n = s == NULL ? 0 : n < size - 1 ? n : size - 1;
    if (s != NULL) {
        memcpy(out, s, n);
    }
    out[n] = '\0';
}

static void on_alert(report *r, const char *line)
{
    size_t n = 0;
    const char *kind = json_str(line, "kind", &n);
    if (kind != NULL && n == 9 && memcmp(kind, "integrity", 9) == 0) {
        r->integrity_total++;
        if (r->n_integrity < MAX_INTEGRITY) {
            integrity_line *il = &r->integrity[r->n_integrity++];
            char a[40], b[40];
            copy_field(line, "window_start", a, sizeof(a));
            copy_field(line, "window_end", b, sizeof(b));
            snprintf(il->window, sizeof(il->window), "%s .. %s", a, b);
            if (!json_raw(line, "party", il->party, sizeof(il->party))) {
                snprintf(il->party, sizeof(il->party), "null");
            }
            copy_field(line, "details", il->details, sizeof(il->details));
        }
        return;
    }
    const char *rule = json_str(line, "rule_id", &n);
    char id[64];
    n = rule == NULL ? 0 : n < sizeof(id) - 1 ? n : sizeof(id) - 1;
    memcpy(id, rule != NULL ? rule : "", n);
    id[n] = '\0';
    tally_add(&r->alert_rules, n > 0 ? id : "unknown", 1);
    r->alerts_total++;
}

static void read_outputs(report *r)
{
    if (r->outputs == NULL) {
        return;
    }
    r->have_dead = each_line(r->outputs, "dead_letter.ndjson", on_dead, r);
    r->have_late = each_line(r->outputs, "late.ndjson", on_late, r);
    r->have_alerts = each_line(r->outputs, "alerts.ndjson", on_alert, r);
    r->have_results = each_line(r->outputs, "results.ndjson", on_result, r);
    r->have_outputs = r->have_dead || r->have_late || r->have_alerts || r->have_results;
}

/* ---- the verdict -------------------------------------------------------------------------- */

typedef enum { V_OK, V_FAIL, V_ALERT } verdict;

static verdict overall(const report *r)
{
    if ((r->verr == CF_E_CORRUPT && r->vr.alert) || r->integrity_total > 0 ||
        (r->trusted_checked && !r->trusted_ok)) {
        return V_ALERT;
    }
    if (r->verr != CF_OK || !r->vr.ok || !r->read_ok) {
        return V_FAIL;
    }
    return V_OK;
}

static const char *verdict_text(verdict v)
{
    return v == V_OK ? "VERIFIED" : v == V_FAIL ? "CHECK FAILED" : "INTEGRITY ALERT";
}

/* ---- rendering ---------------------------------------------------------------------------- */

static void html_esc(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* Markdown table cell: no '|' or newline inside. */
static void md_esc(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        fputc(*s == '|' ? '/' : *s == '\n' ? ' ' : *s, f);
    }
}

typedef struct out {
    FILE *f;
    bool html;
} out;

static void o_num(out *o, const char *key, uint64_t v)
{
    if (o->html) {
        fprintf(o->f, "<span data-k=\"%s\" data-v=\"%" PRIu64 "\">%" PRIu64 "</span>", key, v, v);
    } else {
        fprintf(o->f, "%" PRIu64, v);
    }
}

static void o_text(out *o, const char *s)
{
    if (o->html) {
        html_esc(o->f, s);
    } else {
        md_esc(o->f, s);
    }
}

static void o_h2(out *o, const char *title)
{
    if (o->html) {
        fprintf(o->f, "<h2>%s</h2>\n", title);
    } else {
        fprintf(o->f, "\n## %s\n\n", title);
    }
}

/* A two-column table: key/value rows. */
static void o_row_begin(out *o, const char *label)
{
    if (o->html) {
        fprintf(o->f, "<tr><th>%s</th><td>", label);
    } else {
        fprintf(o->f, "| %s | ", label);
    }
}

static void o_row_end(out *o)
{
    fputs(o->html ? "</td></tr>\n" : " |\n", o->f);
}

static void o_table_begin(out *o, const char *h1, const char *h2)
{
    if (o->html && h1[0] == '\0') {
        fputs("<table><tbody>\n", o->f);
    } else if (o->html) {
        fprintf(o->f, "<table><thead><tr><th>%s</th><th>%s</th></tr></thead><tbody>\n", h1, h2);
    } else {
        fprintf(o->f, "| %s | %s |\n|---|---|\n", h1, h2);
    }
}

static void o_table_end(out *o)
{
    fputs(o->html ? "</tbody></table>\n" : "\n", o->f);
}

static void o_tally(out *o, const char *prefix, const char *h1, const char *h2, tally *t)
{
    qsort(t->c, t->n, sizeof(t->c[0]), by_count_desc);
    if (t->n == 0 && t->other == 0) {
        fputs(o->html ? "<p class=\"muted\">none</p>\n" : "none\n", o->f);
        return;
    }
    o_table_begin(o, h1, h2);
    for (size_t i = 0; i < t->n; i++) {
        char key[128];
        snprintf(key, sizeof(key), "%s.%s", prefix, t->c[i].name);
        if (o->html) {
            fputs("<tr><td>", o->f);
            html_esc(o->f, t->c[i].name);
            fputs("</td><td class=\"num\">", o->f);
            fputs("<span data-k=\"", o->f);
            html_esc(o->f, key);
            fprintf(o->f, "\" data-v=\"%" PRIu64 "\">%" PRIu64 "</span></td></tr>\n", t->c[i].n,
                    t->c[i].n);
        } else {
            fputs("| ", o->f);
            md_esc(o->f, t->c[i].name);
            fprintf(o->f, " | %" PRIu64 " |\n", t->c[i].n);
        }
    }
    if (t->other > 0) {
        char key[64];
        snprintf(key, sizeof(key), "%s.other", prefix);
        o_row_begin(o, "(more kinds)");
        o_num(o, key, t->other);
        o_row_end(o);
    }
    o_table_end(o);
}

/* Events per hour (or per day for long logs) as an inline SVG bar chart / a text chart. */
static void o_chart(out *o, const report *r)
{
    if (!r->have_events) {
        fputs(o->html ? "<p class=\"muted\">not available: the events were not decrypted "
                        "(no data.key in KEYDIR)</p>\n"
                      : "not available: the events were not decrypted (no data.key in KEYDIR)\n",
              o->f);
        return;
    }
    int64_t h0 = r->ev_min_us >= 0 ? r->ev_min_us / HOUR_US : -((-r->ev_min_us) / HOUR_US) - 1;
    int64_t h1 = r->ev_max_us >= 0 ? r->ev_max_us / HOUR_US : -((-r->ev_max_us) / HOUR_US) - 1;
    int64_t span = h1 - h0 + 1;
    int64_t per = span <= 24 * 14 ? 1 : span <= 24 * 370 ? 24 : 24 * 7;
    size_t nb = (size_t)((span + per - 1) / per);
    uint64_t *bins = cf_calloc(nb, sizeof(*bins));
    if (bins == NULL) {
        return;
    }
    uint64_t max = 0, total = 0;
    for (size_t i = 0; i < nb; i++) {
        for (int64_t k = 0; k < per; k++) {
            bins[i] += hour_count(r, h0 + (int64_t)i * per + k);
        }
        max = bins[i] > max ? bins[i] : max;
        total += bins[i];
    }
    const char *unit = per == 1 ? "hour" : per == 24 ? "day" : "week";
    if (o->html) {
        const int W = 960, H = 260, L = 56, R = 12, T = 12, B = 44;
        double pw = W - L - R, ph = H - T - B;
        double bw = pw / (double)nb;
        fprintf(o->f,
                "<svg class=\"chart\" viewBox=\"0 0 %d %d\" role=\"img\" "
                "aria-label=\"events per %s (event time, UTC)\" data-k=\"chart.total\" "
                "data-v=\"%" PRIu64 "\" data-bars=\"%zu\">\n",
                W, H, unit, total, nb);
        uint64_t top = max == 0 ? 1 : max;
        for (int t = 0; t <= 4; t++) {
            double y = T + ph - ph * t / 4.0;
            fprintf(o->f,
                    "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                    "<text x=\"%d\" y=\"%.1f\" class=\"ylab\">%.0f</text>\n",
                    L, W - R, y, y, L - 6, y + 4, (double)top * t / 4.0);
        }
        size_t every = nb <= 24 ? (nb <= 12 ? 1 : 2) : nb / 12 + 1;
        for (size_t i = 0; i < nb; i++) {
            double bh = ph * (double)bins[i] / (double)top;
            double x = L + bw * (double)i;
            char lab[32];
            fmt_hour(h0 + (int64_t)i * per, lab, sizeof(lab), per == 1, true);
            fprintf(o->f,
                    "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                    "data-v=\"%" PRIu64 "\"><title>%s: %" PRIu64 " events</title></rect>\n",
                    x + bw * 0.1, T + ph - bh, bw * 0.8, bh, bins[i], lab, bins[i]);
            if (i % every == 0) {
                fprintf(o->f, "<text x=\"%.1f\" y=\"%d\" class=\"xlab\">%s</text>\n", x + bw / 2,
                        H - B + 16, lab);
            }
        }
        fprintf(o->f,
                "<text x=\"%d\" y=\"%d\" class=\"axis\">events per %s, by event time (UTC)"
                "</text>\n</svg>\n",
                L, H - 6, unit);
    } else {
        fprintf(o->f, "Events per %s, by event time (UTC); %" PRIu64 " in all.\n\n```\n", unit,
                total);
        for (size_t i = 0; i < nb; i++) {
            char lab[32];
            fmt_hour(h0 + (int64_t)i * per, lab, sizeof(lab), per == 1, false);
            int w = max > 0 ? (int)(50.0 * (double)bins[i] / (double)max + 0.5) : 0;
            fprintf(o->f, "%s %10" PRIu64 " ", lab, bins[i]);
            for (int k = 0; k < w; k++) {
                fputs("#", o->f);
            }
            fputs("\n", o->f);
        }
        fputs("```\n", o->f);
    }
    cf_free(bins);
}

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif;"
    "color:#1d2330;background:#f4f5f7;margin:0}"
    "main{max-width:1040px;margin:0 auto;padding:20px 24px 40px;background:#fff;"
    "min-height:100vh}"
    "h1{font-size:22px;margin:4px 0 2px}h2{font-size:16px;margin:26px 0 8px;"
    "border-bottom:1px solid #e3e6eb;padding-bottom:4px}"
    ".muted{color:#667085}.mono,code,pre{font-family:'DejaVu Sans Mono',ui-monospace,"
    "monospace;font-size:12px}"
    "pre{background:#f6f8fa;border:1px solid #e3e6eb;border-radius:6px;padding:10px;"
    "overflow-x:auto;white-space:pre-wrap;word-break:break-all}"
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}"
    "th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;"
    "vertical-align:top}th{color:#475467;font-weight:500}tbody th{width:34%}"
    "thead th{color:#667085;font-size:12px;font-weight:500}"
    "td.num{text-align:right}"
    ".verdict{display:inline-block;padding:6px 14px;border-radius:6px;color:#fff;"
    "font-weight:700;letter-spacing:.04em;margin:8px 0}"
    ".v-ok{background:#15803d}.v-fail{background:#b45309}.v-alert{background:#dc2626}"
    ".alert{background:#dc2626;color:#fff;padding:12px 16px;border-radius:8px;"
    "font-weight:600;margin:12px 0}"
    "svg.chart{width:100%;height:auto;background:#fff}svg.chart rect{fill:#2563eb}"
    "svg.chart .grid{stroke:#e5e7eb}svg.chart text{font-size:11px;fill:#667085}"
    "svg.chart .ylab{text-anchor:end}svg.chart .xlab{text-anchor:middle}"
    "footer{margin-top:30px;color:#667085;font-size:12px}";

static void render(out *o, report *r, verdict v)
{
    FILE *f = o->f;
    bool h = o->html;
    char t0[40], t1[40], lid[2 * CF_AUDIT_LOG_ID_LEN + 1] = "";
    char now[40];
    fmt_time(cf_wall_us(), now, sizeof(now));
    if (r->vr.has_log_id) {
        hexs(r->vr.log_id, CF_AUDIT_LOG_ID_LEN, lid);
    } else if (r->heads > 0) {
        hexs(r->last_head.log_id, CF_AUDIT_LOG_ID_LEN, lid);
    }
    if (h) {
        fprintf(f, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                   "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                   "style-src 'unsafe-inline'\">"
                   "<title>confide audit report</title><style>");
        fputs(css, f);
        fprintf(f, "</style></head>\n<body data-verdict=\"%s\"><main>\n",
                v == V_OK     ? "verified"
                : v == V_FAIL ? "failed"
                              : "integrity_alert");
        fputs("<h1>Audit report</h1>\n<p class=\"muted\">log <span class=\"mono\">", f);
        html_esc(f, r->dir);
        fprintf(f,
                "</span> · id <span class=\"mono\" data-k=\"log_id\" data-v=\"%s\">%s</span>"
                " · written %s by confide audit report</p>\n",
                lid, lid[0] ? lid : "(empty)", now);
        fprintf(f, "<div class=\"verdict %s\" data-k=\"verdict\" data-v=\"%s\">%s</div>\n",
                v == V_OK     ? "v-ok"
                : v == V_FAIL ? "v-fail"
                              : "v-alert",
                verdict_text(v), verdict_text(v));
    } else {
        fprintf(f,
                "# Audit report\n\nLog `%s`, id `%s`, written %s by `confide audit report`.\n\n"
                "**Verdict: %s**\n",
                r->dir, lid[0] ? lid : "(empty)", now, verdict_text(v));
    }
    if (r->integrity_total > 0) {
        if (h) {
            fprintf(f,
                    "<div class=\"alert\">INTEGRITY ALERTS: <span data-k=\"integrity_alerts\" "
                    "data-v=\"%" PRIu64 "\">%" PRIu64 "</span> aggregate(s) failed "
                    "verification during the run (listed below).</div>\n",
                    r->integrity_total, r->integrity_total);
        } else {
            fprintf(f,
                    "\n> **INTEGRITY ALERTS: %" PRIu64 "** aggregate(s) failed verification "
                    "during the run (listed below).\n",
                    r->integrity_total);
        }
    }

    o_h2(o, "The log");
    o_table_begin(o, "", "");
    o_row_begin(o, "leaves (events and dead letters)");
    o_num(o, "leaves", r->vr.leaves);
    o_row_end(o);
    o_row_begin(o, "dead letters in the log");
    o_num(o, "log_dead_letters", r->log_dead);
    o_row_end(o);
    o_row_begin(o, "dead letters in the log by reason");
    if (r->log_dead == 0) {
        o_text(o, "none");
    } else {
        for (size_t i = 0; i < r->log_dead_by.n; i++) {
            char key[96];
            snprintf(key, sizeof(key), "log_dead.%s", r->log_dead_by.c[i].name);
            fprintf(f, "%s%s ", i ? ", " : "", r->log_dead_by.c[i].name);
            o_num(o, key, r->log_dead_by.c[i].n);
        }
    }
    o_row_end(o);
    o_row_begin(o, "events decrypted and re-hashed");
    if (r->vr.decrypted) {
        o_num(o, "events", r->vr.events);
    } else {
        o_text(o, "not checked (no data.key in KEYDIR)");
    }
    o_row_end(o);
    o_row_begin(o, "size on disk (bytes)");
    o_num(o, "bytes", r->bytes);
    o_row_end(o);
    o_row_begin(o, "segments");
    o_num(o, "segments", r->vr.segments);
    o_row_end(o);
    o_row_begin(o, "records");
    o_num(o, "records", r->vr.records);
    o_row_end(o);
    o_row_begin(o, "batches");
    o_num(o, "batches", r->batches);
    o_row_end(o);
    o_row_begin(o, "checkpoints (crash recovery)");
    o_num(o, "checkpoints", r->vr.checkpoints);
    o_row_end(o);
    o_row_begin(o, "period covered (event time)");
    if (r->have_events) {
        fmt_time(r->ev_min_us, t0, sizeof(t0));
        fmt_time(r->ev_max_us, t1, sizeof(t1));
        fprintf(f, "%s – %s", t0, t1);
    } else {
        o_text(o, "not available without data.key");
    }
    o_row_end(o);
    o_row_begin(o, "period logged (signed heads)");
    if (r->heads > 0) {
        fmt_time(r->first_head.timestamp_us, t0, sizeof(t0));
        fmt_time(r->last_head.timestamp_us, t1, sizeof(t1));
        fprintf(f, "%s – %s", t0, t1);
    } else {
        o_text(o, "no signed head");
    }
    o_row_end(o);
    o_table_end(o);

    o_h2(o, "Verification");
    o_table_begin(o, "", "");
    o_row_begin(o, "result");
    if (h) {
        fprintf(f, "<span data-k=\"verify.ok\" data-v=\"%s\">%s</span>",
                r->vr.ok && r->verr == CF_OK ? "true" : "false",
                r->vr.ok && r->verr == CF_OK ? "every check passed" : "FAILED");
    } else {
        fputs(r->vr.ok && r->verr == CF_OK ? "every check passed" : "**FAILED**", f);
    }
    o_row_end(o);
    if (!r->vr.ok || r->verr != CF_OK) {
        char first[700];
        if (r->verr != CF_OK && r->verr != CF_E_CORRUPT) {
            snprintf(first, sizeof(first), "%s", r->verr_text);
        } else {
            snprintf(first, sizeof(first), "segment %s offset %" PRIu64 " index %" PRIu64 ": %s",
                     r->vr.bad_segment, r->vr.bad_offset, r->vr.bad_index, r->vr.bad_reason);
        }
        o_row_begin(o, "first bad record");
        o_text(o, first);
        o_row_end(o);
    }
    o_row_begin(o, "signed tree heads valid");
    o_num(o, "sth_valid", r->vr.sth_valid);
    o_row_end(o);
    o_row_begin(o, "signed tree heads invalid");
    o_num(o, "sth_invalid", r->vr.sth_invalid);
    o_row_end(o);
    o_row_begin(o, "leaves covered by a valid head");
    o_num(o, "covered", r->vr.covered);
    o_row_end(o);
    o_row_begin(o, "completeness");
    char comp[32];
    snprintf(comp, sizeof(comp), "%.6f", r->vr.completeness);
    if (h) {
        fprintf(f, "<span data-k=\"completeness\" data-v=\"%s\">%s</span>", comp, comp);
    } else {
        fputs(comp, f);
    }
    o_text(o, " (leaves with a verdict under a valid signed head / leaves)");
    o_row_end(o);
    o_row_begin(o, "gaps in the index sequence");
    o_num(o, "gaps", r->vr.gaps);
    o_row_end(o);
    o_row_begin(o, "duplicate events");
    o_num(o, "duplicates", r->vr.duplicates);
    o_row_end(o);
    o_row_begin(o, "against a head kept outside the log");
    if (!r->trusted_checked) {
        o_text(o, "not checked (no --trusted-head and no tree_heads.ndjson beside the log)");
    } else {
        char tb[600];
        snprintf(tb, sizeof(tb), "%s: the log %s the head of size %" PRIu64 " in %s",
                 r->trusted_ok ? "consistent" : "INCONSISTENT",
                 r->trusted_ok ? "extends" : "does not extend", r->trusted_size, r->trusted_path);
        if (h) {
            fprintf(f, "<span data-k=\"trusted_head\" data-v=\"%s\">",
                    r->trusted_ok ? "true" : "false");
            html_esc(f, tb);
            fputs("</span>", f);
        } else {
            fputs(tb, f);
        }
    }
    o_row_end(o);
    if (r->heads > 0) {
        char root[2 * CF_AUDIT_HASH_LEN + 1];
        hexs(r->last_head.root, CF_AUDIT_HASH_LEN, root);
        o_row_begin(o, "last signed head");
        fmt_time(r->last_head.timestamp_us, t1, sizeof(t1));
        if (h) {
            fprintf(f,
                    "size <span data-k=\"last_head.tree_size\" data-v=\"%" PRIu64 "\">%" PRIu64
                    "</span>, root <span class=\"mono\" data-k=\"last_head.root\" "
                    "data-v=\"%s\">%s</span>, signed %s",
                    r->last_head.tree_size, r->last_head.tree_size, root, root, t1);
        } else {
            fprintf(f, "size %" PRIu64 ", root `%s`, signed %s", r->last_head.tree_size, root, t1);
        }
        o_row_end(o);
    }
    if (!r->read_ok && r->read_err[0] != '\0') {
        o_row_begin(o, "reading the log stopped");
        o_text(o, r->read_err);
        o_row_end(o);
    }
    o_table_end(o);

    o_h2(o, "Signing keys (epochs and rotations)");
    if (r->n_keys_seen == 0) {
        o_text(o, "no signed head");
        fputs(h ? "\n" : "\n", f);
    } else {
        if (h) {
            fputs("<table><thead><tr><th>key id</th><th>epoch</th><th class=\"num\">heads</th>"
                  "<th class=\"num\">tree sizes</th><th>signed</th></tr></thead><tbody>\n",
                  f);
        } else {
            fputs("| key id | epoch | heads | tree sizes | signed |\n|---|---|---|---|---|\n", f);
        }
        for (size_t i = 0; i < r->n_keys_seen; i++) {
            const key_seen *k = &r->keys_seen[i];
            char kid[2 * CF_KEY_ID_LEN + 1], ep[48];
            hexs(k->id, CF_KEY_ID_LEN, kid);
            fmt_time(k->first_us, t0, sizeof(t0));
            fmt_time(k->last_us, t1, sizeof(t1));
            if (k->epoch >= 0) {
                snprintf(ep, sizeof(ep), "%" PRId64, k->epoch);
            } else {
                snprintf(ep, sizeof(ep), "unknown (not in KEYDIR or --old-keys)");
            }
            if (h) {
                fprintf(f,
                        "<tr><td class=\"mono\">%s</td><td>%s</td><td class=\"num\">"
                        "<span data-k=\"keys.%s\" data-v=\"%" PRIu64 "\">%" PRIu64
                        "</span></td><td class=\"num\">%" PRIu64 " – %" PRIu64
                        "</td><td>%s – %s</td></tr>\n",
                        kid, ep, kid, k->heads, k->heads, k->first_size, k->last_size, t0, t1);
            } else {
                fprintf(f, "| `%s` | %s | %" PRIu64 " | %" PRIu64 " – %" PRIu64 " | %s – %s |\n",
                        kid, ep, k->heads, k->first_size, k->last_size, t0, t1);
            }
        }
        fputs(h ? "</tbody></table>\n" : "\n", f);
        if (h) {
            fprintf(f,
                    "<p>Key rotations in the log: <span data-k=\"key_rotations\" "
                    "data-v=\"%" PRIu64 "\">%" PRIu64 "</span>. The current key is epoch %u.</p>\n",
                    r->key_changes, r->key_changes, r->key_epoch);
        } else {
            fprintf(f, "Key rotations in the log: %" PRIu64 ". The current key is epoch %u.\n",
                    r->key_changes, r->key_epoch);
        }
    }

    o_h2(o, "Compliance verdicts by rule (from the log)");
    if (r->verdicts_pass + r->verdicts_flagged == 0) {
        o_text(o, "not available (no verdicts read: no data.key, or an empty log)");
        fputs("\n", f);
    } else {
        if (h) {
            fprintf(f,
                    "<p>Events that passed every rule: <span data-k=\"verdicts.pass\" "
                    "data-v=\"%" PRIu64 "\">%" PRIu64 "</span>; events flagged by at least one: "
                    "<span data-k=\"verdicts.flagged\" data-v=\"%" PRIu64 "\">%" PRIu64
                    "</span>.</p>\n",
                    r->verdicts_pass, r->verdicts_pass, r->verdicts_flagged, r->verdicts_flagged);
        } else {
            fprintf(f,
                    "Events that passed every rule: %" PRIu64 "; flagged by at least one: %" PRIu64
                    ".\n\n",
                    r->verdicts_pass, r->verdicts_flagged);
        }
        o_tally(o, "rules", "rule", "events flagged", &r->rules);
    }

    o_h2(o, "Events per hour");
    o_chart(o, r);

    o_h2(o, "What the run wrote beside the log");
    if (!r->have_outputs) {
        o_text(o, "no output directory found (pass --outputs OUT)");
        fputs("\n", f);
    } else {
        if (h) {
            fputs("<p class=\"muted\">from <span class=\"mono\">", f);
            html_esc(f, r->outputs);
            fputs("</span>: dead_letter.ndjson, late.ndjson, alerts.ndjson, results.ndjson</p>\n",
                  f);
        } else {
            fprintf(
                f, "From `%s`: dead_letter.ndjson, late.ndjson, alerts.ndjson, results.ndjson.\n\n",
                r->outputs);
        }
        o_table_begin(o, "", "");
        o_row_begin(o, "dead-lettered records");
        o_num(o, "dead_letters", r->dead_total);
        o_row_end(o);
        o_row_begin(o, "late events");
        o_num(o, "late", r->late_total);
        o_row_end(o);
        o_row_begin(o, "compliance alerts");
        o_num(o, "alerts", r->alerts_total);
        o_row_end(o);
        o_row_begin(o, "integrity alerts");
        o_num(o, "integrity", r->integrity_total);
        o_row_end(o);
        o_row_begin(o, "released aggregates");
        o_num(o, "results", r->results_total);
        o_row_end(o);
        o_table_end(o);
        fputs(h ? "<h3>Dead letters by reason</h3>\n" : "### Dead letters by reason\n\n", f);
        o_tally(o, "dead", "reason", "records", &r->dead);
        if (r->log_dead != r->dead_total) {
            fprintf(f, h ? "<p class=\"muted\">" : "");
            fprintf(f,
                    "dead_letter.ndjson has %" PRIu64 " records, the audit log %" PRIu64
                    " dead letters (a log written before dead-letter records, a run without the "
                    "log, or outputs of another run)",
                    r->dead_total, r->log_dead);
            fputs(h ? "</p>\n" : "\n\n", f);
        }
        fputs(h ? "<h3>Late events by reason</h3>\n" : "### Late events by reason\n\n", f);
        o_tally(o, "late", "reason", "events", &r->late);
        fputs(h ? "<h3>Compliance alerts by rule</h3>\n" : "### Compliance alerts by rule\n\n", f);
        o_tally(o, "alert_rules", "rule", "alerts", &r->alert_rules);
    }

    o_h2(o, "Integrity alerts");
    if (r->integrity_total == 0) {
        o_text(o, r->have_alerts ? "none" : "none recorded (no alerts.ndjson)");
        fputs(h ? "" : "\n", f);
    } else {
        if (h) {
            fputs("<table><thead><tr><th>window</th><th>party</th><th>details</th></tr></thead>"
                  "<tbody>\n",
                  f);
        } else {
            fputs("| window | party | details |\n|---|---|---|\n", f);
        }
        for (size_t i = 0; i < r->n_integrity; i++) {
            const integrity_line *il = &r->integrity[i];
            fputs(h ? "<tr><td>" : "| ", f);
            o_text(o, il->window);
            fputs(h ? "</td><td>" : " | ", f);
            o_text(o, il->party);
            fputs(h ? "</td><td>" : " | ", f);
            o_text(o, il->details);
            fputs(h ? "</td></tr>\n" : " |\n", f);
        }
        fputs(h ? "</tbody></table>\n" : "\n", f);
        if (r->integrity_total > r->n_integrity) {
            fprintf(f, "%s… and %" PRIu64 " more in alerts.ndjson%s\n", h ? "<p>" : "",
                    r->integrity_total - r->n_integrity, h ? "</p>" : "");
        }
    }

    o_h2(o, "Verify it yourself");
    const char *outd = r->outputs != NULL ? r->outputs : "OUT";
    if (h) {
        fputs("<pre>", f);
    } else {
        fputs("```sh\n", f);
    }
    char cmd[4 * 4096 + 512];
    snprintf(cmd, sizeof(cmd),
             "# the log: CRCs, contents, roots, signatures, gaps, duplicates; and that it extends\n"
             "# a head kept elsewhere (a copy of the run's tree_heads.ndjson, or a witness's)\n"
             "confide audit verify %s --keys %s --trusted-head %s/tree_heads.ndjson\n"
             "# the released results: the combiner's signatures, and a recomputation from the "
             "log\n"
             "confide audit verify-results %s --keys %s\n"
             "# one event's inclusion under the last signed head, checked offline\n"
             "confide audit prove %s --index 0 --json > proof.json && "
             "confide audit verify-proof proof.json\n"
             "# this report again\n"
             "confide audit report %s --keys %s --out report.html\n",
             r->dir, r->keys, outd, outd, r->keys, r->dir, r->dir, r->keys);
    if (h) {
        html_esc(f, cmd);
    } else {
        fputs(cmd, f);
    }
    fputs(h ? "</pre>\n" : "```\n", f);
    if (h) {
        fputs("<footer>Counts, times, rule ids, reasons, key ids and hashes only: this report "
              "holds no amounts, account ids, merchant ids or event contents.</footer>\n"
              "</main></body></html>\n",
              f);
    } else {
        fputs("\nCounts, times, rule ids, reasons, key ids and hashes only: this report holds no "
              "amounts, account ids, merchant ids or event contents.\n",
              f);
    }
}

/* ---- the command -------------------------------------------------------------------------- */

static const char report_head[] =
    "usage: confide audit report DIR --keys KEYDIR [--out report.html|report.md]\n"
    "                            [--outputs OUT] [--trusted-head FILE]\n"
    "                            [--old-keys KEYDIR]...\n\n"
    "An auditor's report on the audit log in DIR: its size and the period it covers,\n"
    "the verification (every CRC, decrypted contents with KEYDIR/data.key, every root\n"
    "and signature, gaps, duplicates, completeness), consistency with a tree head kept\n"
    "outside the log, signing keys by epoch and rotations, compliance verdicts by rule,\n"
    "events per hour, what the run wrote beside the log (dead letters and late events\n"
    "by reason, compliance and integrity alerts, released aggregates) and the commands\n"
    "to re-verify it. No amounts, ids or event contents.\n\n"
    "options:\n";
static const char report_tail[] =
    "\nexit codes: 0 verified; 1 a check failed without evidence of tampering;\n"
    "            2 usage; 3 cannot read the log, keys or write the report;\n"
    "            4 integrity alert (the log, a trusted head, or the run's alerts)\n";

int cf_cli_report(int argc, char **argv)
{
    report *r = cf_calloc(1, sizeof(*r));
    if (r == NULL) {
        fprintf(stderr, "confide audit report: out of memory\n");
        return CF_EXIT_RUNTIME;
    }
    const char *outfile = NULL, *format = NULL, *older[MAX_OLD];
    size_t n_older = 0;
    int rc = CF_EXIT_OK;
    cf_key *dk = NULL;
    cf_key *old_data[MAX_OLD] = {NULL};
    size_t n_old_data = 0;
    cf_audit_pubkey known[MAX_OLD + 1];
    int64_t known_epoch[MAX_OLD + 1];
    size_t n_known = 0;
    char err[512] = "", outbuf[4096 + 16];
    FILE *f = NULL;
    cli_list old_keys = {.v = older, .max = MAX_OLD};
    const cli_opt opts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &r->keys,
         .arg = "KEYDIR",
         .help = "signing.pub (pinned) and, for contents, data.key"},
        {.name = "out",
         .type = CLI_STR,
         .str = &outfile,
         .arg = "FILE",
         .help = "write there: .html (one self-contained page, inline SVG,\n"
                 "no script) or .md; default: Markdown on stdout"},
        {.name = "format",
         .type = CLI_STR,
         .str = &format,
         .arg = "html|md",
         .help = "the format regardless of the file name"},
        {.name = "outputs",
         .type = CLI_STR,
         .str = &r->outputs,
         .arg = "OUT",
         .help = "the run's output directory (default: DIR's parent when it\n"
                 "holds tree_heads.ndjson)"},
        {.name = "trusted-head",
         .type = CLI_STR,
         .str = &r->trusted_path,
         .arg = "FILE",
         .help = "a checkpoint or tree_heads.ndjson kept elsewhere (default:\n"
                 "OUT/tree_heads.ndjson)"},
        {.name = "old-keys",
         .type = CLI_LIST,
         .list = &old_keys,
         .arg = "KEYDIR",
         .help = "keys of an earlier epoch (rotation; repeatable, up to 8)"},
    };
    cli_spec spec = {.prog = "confide audit report",
                     .head = report_head,
                     .tail = report_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &r->dir,
                     .pos_max = 1};
    rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) {
        goto done;
    }
    rc = CF_EXIT_OK;
    n_older = old_keys.n;
    if (r->dir == NULL || r->keys == NULL) {
        fprintf(stderr, "confide audit report: DIR and --keys KEYDIR are required (see --help)\n");
        rc = CF_EXIT_USAGE;
        goto done;
    }
    bool html = false;
    if (format != NULL) {
        if (strcmp(format, "html") != 0 && strcmp(format, "md") != 0) {
            fprintf(stderr, "confide audit report: --format is html or md\n");
            rc = CF_EXIT_USAGE;
            goto done;
        }
        html = strcmp(format, "html") == 0;
    } else if (outfile != NULL) {
        size_t n = strlen(outfile);
        html = (n > 5 && strcmp(outfile + n - 5, ".html") == 0) ||
               (n > 4 && strcmp(outfile + n - 4, ".htm") == 0);
        bool md = n > 3 && strcmp(outfile + n - 3, ".md") == 0;
        if (!html && !md) {
            fprintf(stderr, "confide audit report: --out FILE must end in .html or .md (or pass "
                            "--format)\n");
            rc = CF_EXIT_USAGE;
            goto done;
        }
    }
    struct stat st;
    if (stat(r->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "confide audit report: %s is not a directory\n", r->dir);
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    /* keys: the signing key (pinned), data.key when present, earlier epochs */
    uint8_t pk[CF_AUDIT_PK_LEN];
    if (cf_key_load_signing_pub(r->keys, pk, known[0].id, &r->key_epoch, err, sizeof(err)) !=
        CF_OK) {
        fprintf(stderr, "confide audit report: %s\n", err);
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    memcpy(known[0].key, pk, sizeof(pk));
    known_epoch[0] = r->key_epoch;
    n_known = 1;
    char p[4096 + 16];
    snprintf(p, sizeof(p), "%s/data.key", r->keys);
    if (access(p, F_OK) == 0 && cf_key_load(r->keys, "data.key", &dk, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit report: %s\n", err);
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    r->have_data_key = dk != NULL;
    for (size_t i = 0; i < n_older; i++) {
        uint32_t ep = 0;
        if (cf_key_load_signing_pub(older[i], known[n_known].key, known[n_known].id, &ep, err,
                                    sizeof(err)) != CF_OK) {
            fprintf(stderr, "confide audit report: --old-keys: %s\n", err);
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        known_epoch[n_known++] = ep;
        snprintf(p, sizeof(p), "%s/data.key", older[i]);
        if (dk != NULL && access(p, F_OK) == 0) {
            if (cf_key_load(older[i], "data.key", &old_data[n_old_data], err, sizeof(err)) !=
                CF_OK) {
                fprintf(stderr, "confide audit report: --old-keys: %s\n", err);
                rc = CF_EXIT_RUNTIME;
                goto done;
            }
            n_old_data++;
        }
    }
    /* the run's outputs: beside the log when it is OUT/audit */
    static char parent[4096];
    if (r->outputs == NULL) {
        snprintf(parent, sizeof(parent), "%s", r->dir);
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/') {
            parent[--n] = '\0';
        }
        char *slash = strrchr(parent, '/');
        if (slash == NULL) {
            snprintf(parent, sizeof(parent), ".");
        } else if (slash == parent) {
            parent[1] = '\0';
        } else {
            *slash = '\0';
        }
        snprintf(p, sizeof(p), "%s/tree_heads.ndjson", parent);
        if (access(p, F_OK) == 0) {
            r->outputs = parent;
        }
    }
    static char heads_path[4096 + 32];
    if (r->trusted_path == NULL && r->outputs != NULL) {
        snprintf(heads_path, sizeof(heads_path), "%s/tree_heads.ndjson", r->outputs);
        if (access(heads_path, F_OK) == 0) {
            r->trusted_path = heads_path;
        }
    }

    /* verify */
    cf_audit_verify_opts vo = {.data_key = dk,
                               .public_key = pk,
                               .more_data_keys = (const cf_key *const *)old_data,
                               .n_more_data_keys = n_old_data,
                               .more_public_keys = known + 1,
                               .n_more_public_keys = n_known - 1};
    r->verr = cf_audit_verify(r->dir, &vo, &r->vr, r->verr_text, sizeof(r->verr_text));
    if (r->verr != CF_OK && r->verr != CF_E_CORRUPT) {
        fprintf(stderr, "confide audit report: %s\n",
                r->verr_text[0] ? r->verr_text : cf_strerror(r->verr));
        rc = CF_EXIT_RUNTIME;
        goto done;
    }
    segments_size(r);
    read_log(r, dk, known, known_epoch, n_known);
    if (r->trusted_path != NULL && r->vr.has_log_id) {
        cf_audit_sth head;
        cf_audit_cosig cosigs[CF_AUDIT_COSIG_MAX];
        size_t n_cosigs = 0;
        int hrc = cf_cli_load_head("report", r->trusted_path, &head, cosigs, &n_cosigs);
        if (hrc != CF_EXIT_OK) {
            rc = hrc;
            goto done;
        }
        r->trusted_checked = true;
        r->trusted_size = head.tree_size;
        bool signed_ok = false;
        for (size_t i = 0; i < n_known && !signed_ok; i++) {
            signed_ok = cf_audit_sth_verify(&head, known[i].key) == CF_OK;
        }
        cf_cli_head_check hc = {0};
        if (signed_ok) {
            hrc = cf_cli_check_trusted_head(r->dir, &head, r->vr.log_id, true, &hc);
            if (hrc != CF_EXIT_OK && hrc != CF_EXIT_INTEGRITY) {
                rc = hrc;
                goto done;
            }
        } else {
            fprintf(stderr, "confide audit report: the head in %s is not signed by the log's key\n",
                    r->trusted_path);
        }
        r->trusted_ok = hc.ok;
    }
    read_outputs(r);

    verdict v = overall(r);
    if (outfile != NULL) {
        snprintf(outbuf, sizeof(outbuf), "%s.tmp", outfile);
        int fd = open(outbuf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (f == NULL) {
            fprintf(stderr, "confide audit report: cannot write %s: %s\n", outbuf, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
    }
    out o = {f != NULL ? f : stdout, html};
    render(&o, r, v);
    if (f != NULL) {
        bool ok = fflush(f) == 0 && !ferror(f);
        ok = fclose(f) == 0 && ok;
        f = NULL;
        if (!ok || rename(outbuf, outfile) != 0) {
            fprintf(stderr, "confide audit report: cannot write %s: %s\n", outfile,
                    strerror(errno));
            unlink(outbuf);
            rc = CF_EXIT_RUNTIME;
            goto done;
        }
        fprintf(stderr, "confide audit report: %s: %s\n", outfile, verdict_text(v));
    }
    rc = v == V_OK ? CF_EXIT_OK : v == V_FAIL ? CF_EXIT_FAIL : CF_EXIT_INTEGRITY;
done:
    cf_key_destroy(dk);
    for (size_t i = 0; i < n_old_data; i++) {
        cf_key_destroy(old_data[i]);
    }
    if (r != NULL) {
        cf_free(r->hours);
    }
    cf_free(r);
    return rc;
}
