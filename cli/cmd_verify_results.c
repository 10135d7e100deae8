/*
 * confide audit verify-results OUT_DIR: checks what a run released against its audit log.
 *
 * 1. Signatures: every line of results.sig.ndjson is signed by the combiner's results key
 *    (results.pub pinned from --keys), and the last line's digests cover results.ndjson and
 *    late.ndjson byte for byte: nothing was changed, added, dropped or reordered after the
 *    combiner wrote it.
 * 2. Recomputation: the events of the audit log (decrypted with data.key) are windowed and
 *    grouped again here, in the clear, with the parameters the combiner signed; the rows that
 *    should have been released (count >= min_count) and the late records must be exactly the
 *    ones in the outputs. So a row the combiner (or anyone before the signature) got wrong,
 *    left out or counted twice is named, and every logged event is accounted for: released,
 *    withheld below min_count, or late.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit_heads.h"
#include "opts.h"
#include "cli.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/keys.h"
#include "confide/window.h"

typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static int push(lines *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 1024;
        char **nv = realloc(l->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        l->v = nv;
        l->cap = nc;
    }
    char *c = malloc(len + 1);
    if (c == NULL) {
        return -1;
    }
    memcpy(c, s, len);
    c[len] = '\0';
    l->v[l->n++] = c;
    return 0;
}

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static int split_lines(const char *text, size_t len, lines *out)
{
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        const char *end = nl != NULL ? nl : text + len;
        if (end > p && push(out, p, (size_t)(end - p)) != 0) {
            return -1;
        }
        p = end + 1;
    }
    return 0;
}

/* Numeric or string field of a flat JSON line (the signer writes them; no escapes). */
static bool jnum(const char *line, const char *key, long long *v)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p != NULL && sscanf(p + strlen(pat), "%lld", v) == 1;
}

static bool jstr(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (p == NULL) {
        return false;
    }
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (e == NULL || (size_t)(e - p) >= cap) {
        return false;
    }
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

/* ---- recomputation ------------------------------------------------------------------------ */

typedef struct recompute {
    lines rows, late;
    uint64_t released_events, released_rows, withheld_events, withheld_groups, late_events;
    uint64_t min_count;
    unsigned mask;
    bool verified;
    uint32_t key_epoch;
    bool failed;
} recompute;

static void on_result(void *opaque, const cf_window_result *r)
{
    recompute *rc = opaque;
    char text[CF_WINDOW_GROUP_TEXT_MAX], cur[4], line[CF_WINDOW_GROUP_TEXT_MAX + 512];
    cf_window_group_json(rc->mask, r->key, r->key_len, text, sizeof(text));
    cf_window_group_currency(rc->mask, r->key, r->key_len, cur);
    if (r->count < rc->min_count) {
        rc->withheld_groups += !r->update;
        rc->withheld_events += r->update ? 0 : r->count;
        return;
    }
    cf_window_row row;
    memset(&row, 0, sizeof(row));
    cf_window_row_from_plain(r, NULL, rc->verified, &row);
    row.group_json = text;
    row.currency = cur;
    row.key_epoch = rc->key_epoch;
    size_t n = cf_window_row_ndjson(&row, line, sizeof(line));
    if (n == 0 || push(&rc->rows, line, n - 1) != 0) { /* without the newline */
        rc->failed = true;
    }
    rc->released_rows++;
    rc->released_events += r->update ? 0 : r->count;
}

static void on_late(void *opaque, const cf_window_late *l)
{
    recompute *rc = opaque;
    char ts[40], wm[40], line[320];
    cf_window_format_time(l->ts_us, ts, sizeof(ts));
    cf_window_format_time(l->watermark_us, wm, sizeof(wm));
    int n = snprintf(line, sizeof(line),
                     "{\"index\":%llu,\"ts\":\"%s\",\"watermark\":\"%s\","
                     "\"reason\":\"%s\"}",
                     (unsigned long long)l->seq, ts, wm, cf_window_late_reason_name(l->reason));
    if (push(&rc->late, line, (size_t)n) != 0) {
        rc->failed = true;
    }
    rc->late_events++;
}

/* convert.to: the rates a batch recorded in its metadata (entries of type 2, docs/audit.md:
 * the runtime's META_FX_RATE), and the event as the windows saw it: its amount converted
 * with the recorded rate whose currency and period match, its currency the reporting one.
 * false when the batch recorded no such rate. */
#define FX_META_RATE 2
#define FX_BATCH_MAX 128
static size_t batch_rates(const cf_audit_entry *e, cf_fx_rate *out)
{
    size_t n = 0;
    const uint8_t *p = e->meta, *end = e->meta + e->meta_len;
    while (p != NULL && end - p >= 2 && end - p >= 2 + p[1] && n < FX_BATCH_MAX) {
        if (p[0] == FX_META_RATE && p[1] == CF_FX_RATE_ENC_LEN &&
            cf_fx_rate_decode(p + 2, &out[n])) {
            n++;
        }
        p += 2 + p[1];
    }
    return n;
}

static bool fx_convert_event(const char *target, const cf_fx_rate *rates, size_t n, cf_event *ev)
{
    if (strcmp(ev->currency, target) == 0) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        const cf_fx_rate *r = &rates[i];
        if (memcmp(r->from, ev->currency, 4) == 0 && memcmp(r->to, target, 4) == 0 &&
            ev->ts_us >= r->valid_from_us && ev->ts_us < r->valid_to_us) {
            if (cf_fx_convert(r, ev->amount_minor, &ev->amount_minor) != CF_OK) {
                return false;
            }
            memcpy(ev->currency, target, 4);
            return true;
        }
    }
    return false;
}

static int recompute_log(const char *audit, const cf_key *dk, const char *params, recompute *rc,
                         uint64_t *events, uint64_t *dead)
{
    long long size_ms = 0, slide_ms = 0, delay_ms = 0, late_ms = 0, idle_ms = 0, minc = 0;
    long long mem_mb = 256, epoch = 0;
    char group_by[128] = "", protect[16] = "";
    if (!jnum(params, "window_size_ms", &size_ms) || !jnum(params, "window_slide_ms", &slide_ms) ||
        !jnum(params, "max_delay_ms", &delay_ms) || !jnum(params, "lateness_ms", &late_ms) ||
        !jnum(params, "idle_timeout_ms", &idle_ms) || !jnum(params, "min_count", &minc) ||
        !jstr(params, "group_by", group_by, sizeof(group_by)) ||
        !jstr(params, "protect", protect, sizeof(protect))) {
        fprintf(stderr, "confide audit verify-results: the signed parameters are incomplete\n");
        return CF_EXIT_INTEGRITY;
    }
    jnum(params, "memory_mb", &mem_mb);
    jnum(params, "key_epoch", &epoch);
    char target[8] = "";
    jstr(params, "convert_to", target, sizeof(target)); /* absent: no conversion */
    if (idle_ms > 0) {
        fprintf(stderr,
                "confide audit verify-results: window.idle_timeout_ms was %lld: watermarks "
                "then depend on processing time, so rows cannot be recomputed from the "
                "log; only the signatures were checked\n",
                idle_ms);
        return CF_EXIT_FAIL;
    }
    char err[512] = "";
    unsigned mask = 0;
    if (cf_window_group_parse(group_by, &mask, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit verify-results: group_by: %s\n", err);
        return CF_EXIT_INTEGRITY;
    }
    mask |= CF_GROUP_CURRENCY; /* as the runtime: currencies are never added together */
    rc->mask = mask;
    rc->min_count = (uint64_t)minc;
    rc->verified = strcmp(protect, "lsa") == 0;
    rc->key_epoch = (uint32_t)epoch;
    cf_window_conf wc;
    cf_window_conf_default(&wc);
    wc.size_us = size_ms * 1000;
    wc.slide_us = slide_ms * 1000;
    wc.max_delay_us = delay_ms * 1000;
    wc.lateness_us = late_ms * 1000;
    wc.key_max = CF_WINDOW_GROUP_KEY_MAX;
    wc.memory_limit_bytes = (size_t)mem_mb << 20;
    wc.value = cf_window_plain_ops;
    wc.on_result = on_result;
    wc.on_late = on_late;
    wc.opaque = rc;
    cf_window *w = NULL;
    cf_audit_reader *rd = NULL;
    if (cf_window_create(&w, &wc, err, sizeof(err)) != CF_OK ||
        cf_audit_reader_open(&rd, audit, dk, 0, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit verify-results: %s\n", err);
        cf_window_destroy(w);
        return CF_EXIT_RUNTIME;
    }
    cf_audit_entry e;
    cf_err re;
    int code = CF_EXIT_OK;
    cf_fx_rate rates[FX_BATCH_MAX];
    while ((re = cf_audit_reader_next(rd, &e, err, sizeof(err))) == CF_OK) {
        if (e.type == CF_AUDIT_REC_DEAD) {
            *dead += e.count; /* rejected input records: log indexes, never in a window */
        }
        size_t nr = e.type == CF_AUDIT_REC_BATCH && target[0] != '\0' ? batch_rates(&e, rates) : 0;
        for (uint32_t i = 0; e.type == CF_AUDIT_REC_BATCH && i < e.count; i++) {
            cf_event ev = e.events[i];
            if (target[0] != '\0' && !fx_convert_event(target, rates, nr, &ev)) {
                fprintf(stderr,
                        "confide audit verify-results: INTEGRITY ALERT: the event at log index "
                        "%" PRIu64 " (%s) has no recorded rate to %s\n",
                        ev.seq, ev.currency, target);
                code = CF_EXIT_INTEGRITY;
                break;
            }
            uint8_t key[CF_WINDOW_GROUP_KEY_MAX];
            size_t kl = cf_window_group_key(mask, &ev, key, sizeof(key));
            cf_window_plain v = {.sum_minor = ev.amount_minor};
            if (cf_window_add(w, key, kl, ev.ts_us, ev.seq, &v) == CF_E_LIMIT) {
                fprintf(stderr, "confide audit verify-results: note: window state limit reached "
                                "while recomputing (raise window.memory_mb)\n");
            }
            (*events)++;
        }
        if (code != CF_EXIT_OK) {
            break;
        }
    }
    if (code == CF_EXIT_OK && re != CF_E_EOF) {
        fprintf(stderr, "confide audit verify-results: %s\n", err);
        code = re == CF_E_CORRUPT ? CF_EXIT_INTEGRITY : CF_EXIT_RUNTIME;
    }
    cf_window_flush(w);
    cf_window_destroy(w);
    cf_audit_reader_destroy(rd);
    return rc->failed && code == CF_EXIT_OK ? CF_EXIT_RUNTIME : code;
}

/* Compares the sorted expected and actual lines; prints the first differences. */
static uint64_t compare(const char *what, lines *want, lines *got)
{
    if (want->n > 1) {
        qsort(want->v, want->n, sizeof(char *), cmp_str);
    }
    if (got->n > 1) {
        qsort(got->v, got->n, sizeof(char *), cmp_str);
    }
    size_t i = 0, j = 0;
    uint64_t bad = 0;
    while (i < want->n || j < got->n) {
        int c = i == want->n ? 1 : j == got->n ? -1 : strcmp(want->v[i], got->v[j]);
        if (c == 0) {
            bool dup = j + 1 < got->n && strcmp(got->v[j], got->v[j + 1]) == 0 &&
                       (i + 1 == want->n || strcmp(want->v[i], want->v[i + 1]) != 0);
            if (dup) {
                if (bad++ < 5) {
                    fprintf(stderr, "  %s: duplicated: %s\n", what, got->v[j]);
                }
                j++; /* the extra copy */
            }
            i++;
            j++;
        } else if (c < 0) {
            if (bad++ < 5) {
                fprintf(stderr, "  %s: missing or altered, expected: %s\n", what, want->v[i]);
            }
            i++;
        } else {
            if (bad++ < 5) {
                fprintf(stderr, "  %s: not in the log's recomputation: %s\n", what, got->v[j]);
            }
            j++;
        }
    }
    return bad;
}

/* ---- signatures --------------------------------------------------------------------------- */

static int check_digest(const char *what, const char *text, size_t len, long long to,
                        const char *want_hex)
{
    uint8_t h[crypto_hash_sha256_BYTES];
    char hex[65];
    if (to < 0 || (size_t)to != len) {
        fprintf(stderr,
                "confide audit verify-results: INTEGRITY ALERT: %s has %zu bytes, the last "
                "signature covers %lld\n",
                what, len, to);
        return CF_EXIT_INTEGRITY;
    }
    crypto_hash_sha256(h, (const uint8_t *)text, len);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    if (strcmp(hex, want_hex) != 0) {
        fprintf(stderr,
                "confide audit verify-results: INTEGRITY ALERT: %s differs from what the "
                "combiner signed\n",
                what);
        return CF_EXIT_INTEGRITY;
    }
    return CF_EXIT_OK;
}

/* Verifies every signature line; the last one's fields go to *last. */
static int check_sig_file(const char *path, const uint8_t pk[32], char *last, size_t cap)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    if (text == NULL) {
        fprintf(stderr, "confide audit verify-results: %s: missing (results are not signed)\n",
                path);
        return CF_EXIT_INTEGRITY;
    }
    lines l = {0};
    split_lines(text, len, &l);
    free(text);
    int rc = l.n == 0 ? CF_EXIT_INTEGRITY : CF_EXIT_OK;
    for (size_t i = 0; i < l.n && rc == CF_EXIT_OK; i++) {
        char *line = l.v[i];
        char *s = strstr(line, ",\"sig\":\"");
        long long seq = -1;
        uint8_t sig[crypto_sign_BYTES];
        size_t bl = 0;
        char *e = s != NULL ? strchr(s + 8, '"') : NULL;
        if (s == NULL || e == NULL || !jnum(line, "seq", &seq) || seq != (long long)i ||
            sodium_base642bin(sig, sizeof(sig), s + 8, (size_t)(e - s - 8), NULL, &bl, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            bl != sizeof(sig)) {
            fprintf(stderr,
                    "confide audit verify-results: INTEGRITY ALERT: %s line %zu is not a "
                    "signature line in sequence\n",
                    path, i + 1);
            rc = CF_EXIT_INTEGRITY;
            break;
        }
        s[0] = '}'; /* the signed text */
        if (crypto_sign_verify_detached(sig, (const uint8_t *)line, (size_t)(s - line) + 1, pk) !=
            0) {
            fprintf(stderr,
                    "confide audit verify-results: INTEGRITY ALERT: %s line %zu: the "
                    "signature does not verify under results.pub\n",
                    path, i + 1);
            rc = CF_EXIT_INTEGRITY;
        }
        s[1] = '\0';
        if (i + 1 == l.n) {
            snprintf(last, cap, "%s", line);
        }
    }
    if (l.n == 0) {
        fprintf(stderr, "confide audit verify-results: INTEGRITY ALERT: %s is empty\n", path);
    }
    lines_free(&l);
    return rc;
}

static const char verify_results_head[] =
    "usage: confide audit verify-results OUT_DIR --keys KEYDIR [--audit DIR] [--json]\n\n"
    "Checks what a `confide run` released (OUT_DIR/results.ndjson, late.ndjson) against\n"
    "its audit log: the combiner's signatures (results.sig.ndjson, under\n"
    "KEYDIR/results.pub) must cover both files byte for byte, and a recomputation of\n"
    "every window from the log's events (KEYDIR/data.key) with the signed parameters\n"
    "must give exactly the released rows and late records: every logged event is\n"
    "released, withheld below min_count, or late, and nothing is counted twice.\n\n";
static const char verify_results_tail[] =
    "\nexit codes: 0 verified, 1 cannot be recomputed (idle timeouts), 2 usage, 3 cannot\n"
    "            read files or keys, 4 integrity alert (a changed, missing, added or\n"
    "            duplicated row, or a bad signature)\n";

int cf_cli_verify_results(int argc, char **argv)
{
    const char *out = NULL, *keys = NULL, *audit = NULL;
    bool json = false;
    const cli_opt opts[] = {
        {.name = "keys",
         .type = CLI_STR,
         .str = &keys,
         .arg = "KEYDIR",
         .help = "results.pub and data.key"},
        {.name = "audit",
         .type = CLI_STR,
         .str = &audit,
         .arg = "DIR",
         .help = "the audit log (default OUT_DIR/audit)"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &json,
         .help = "one JSON object with the counts"},
    };
    cli_spec spec = {.prog = "confide audit verify-results",
                     .head = verify_results_head,
                     .tail = verify_results_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .pos = &out,
                     .pos_max = 1};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (out == NULL || keys == NULL) {
        fprintf(stderr, "confide audit verify-results: OUT_DIR and --keys KEYDIR are required\n");
        return CF_EXIT_USAGE;
    }
    char path[4200], adir[4200], last[2048] = "", err[512] = "";
    snprintf(adir, sizeof(adir), "%s", audit != NULL ? audit : "");
    if (audit == NULL) {
        snprintf(adir, sizeof(adir), "%.4100s/audit", out);
    }
    cf_key *pub = NULL, *dk = NULL;
    if (cf_key_load(keys, "results.pub", &pub, err, sizeof(err)) != CF_OK ||
        cf_key_load(keys, "data.key", &dk, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide audit verify-results: %s\n", err);
        cf_key_destroy(pub);
        return CF_EXIT_RUNTIME;
    }
    snprintf(path, sizeof(path), "%.4100s/results.sig.ndjson", out);
    int rc = check_sig_file(path, pub->bytes, last, sizeof(last));
    cf_key_destroy(pub);
    char rh[65] = "", lh[65] = "", params[600] = "", lid[40] = "";
    long long rto = -1, lto = -1, through = -1;
    const char *pp = strstr(last, "\"params\":{");
    if (rc == CF_EXIT_OK &&
        (!jnum(last, "results_to", &rto) || !jnum(last, "late_to", &lto) ||
         !jnum(last, "events_through", &through) || !jstr(last, "results_sha256", rh, 65) ||
         !jstr(last, "late_sha256", lh, 65) || !jstr(last, "log_id", lid, sizeof(lid)) ||
         pp == NULL)) {
        fprintf(stderr, "confide audit verify-results: the last signature line is incomplete\n");
        rc = CF_EXIT_INTEGRITY;
    }
    if (pp != NULL) {
        snprintf(params, sizeof(params), "%s", pp + 9);
    }
    size_t rlen = 0, llen = 0;
    char *rtext = NULL, *ltext = NULL;
    if (rc == CF_EXIT_OK && strstr(params, "\"format\":\"csv\"") != NULL) {
        fprintf(stderr, "confide audit verify-results: results.csv: only NDJSON results are "
                        "recomputed; the signatures were checked\n");
    }
    if (rc == CF_EXIT_OK) {
        snprintf(path, sizeof(path), "%.4100s/results.ndjson", out);
        rtext = slurp(path, &rlen);
        snprintf(path, sizeof(path), "%.4100s/late.ndjson", out);
        ltext = slurp(path, &llen);
        if (rtext == NULL || ltext == NULL) {
            fprintf(stderr,
                    "confide audit verify-results: cannot read results.ndjson and "
                    "late.ndjson in %s\n",
                    out);
            rc = CF_EXIT_RUNTIME;
        }
    }
    if (rc == CF_EXIT_OK) {
        rc = check_digest("results.ndjson", rtext, rlen, rto, rh);
    }
    if (rc == CF_EXIT_OK) {
        rc = check_digest("late.ndjson", ltext, llen, lto, lh);
    }
    recompute re;
    memset(&re, 0, sizeof(re));
    uint64_t events = 0, dead = 0, bad = 0;
    if (rc == CF_EXIT_OK) {
        rc = recompute_log(adir, dk, params, &re, &events, &dead);
    }
    /* events_through is a log index: dead letters (docs/audit.md 2.5) take indexes too */
    if (rc == CF_EXIT_OK && events + dead != (uint64_t)through) {
        fprintf(stderr,
                "confide audit verify-results: INTEGRITY ALERT: the results cover %lld events, "
                "the log holds %" PRIu64 "\n",
                through, events + dead);
        rc = CF_EXIT_INTEGRITY;
    }
    if (rc == CF_EXIT_OK) {
        lines got = {0}, gotl = {0};
        split_lines(rtext, rlen, &got);
        split_lines(ltext, llen, &gotl);
        bad = compare("results", &re.rows, &got) + compare("late", &re.late, &gotl);
        lines_free(&got);
        lines_free(&gotl);
        if (bad > 0) {
            fprintf(stderr,
                    "confide audit verify-results: INTEGRITY ALERT: %" PRIu64
                    " row(s) differ from the recomputation of the audit log\n",
                    bad);
            rc = CF_EXIT_INTEGRITY;
        }
    }
    if (rc == CF_EXIT_OK || bad > 0) {
        if (json) {
            printf("{\"events\":%" PRIu64 ",\"released_rows\":%" PRIu64
                   ",\"released_events\":%" PRIu64 ",\"withheld_groups\":%" PRIu64
                   ",\"withheld_events\":%" PRIu64 ",\"late\":%" PRIu64 ",\"differences\":%" PRIu64
                   ",\"ok\":%s}\n",
                   events, re.released_rows, re.released_events, re.withheld_groups,
                   re.withheld_events, re.late_events, bad, rc == CF_EXIT_OK ? "true" : "false");
        } else if (rc == CF_EXIT_OK) {
            printf("%s: %" PRIu64 " logged events = %" PRIu64 " released in %" PRIu64
                   " rows + %" PRIu64 " withheld in %" PRIu64 " groups below min_count + %" PRIu64
                   " late; signatures and rows verified: OK\n",
                   out, events, re.released_events, re.released_rows, re.withheld_events,
                   re.withheld_groups, re.late_events);
        }
    }
    free(rtext);
    free(ltext);
    lines_free(&re.rows);
    lines_free(&re.late);
    cf_key_destroy(dk);
    return rc;
}
