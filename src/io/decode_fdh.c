/*
 * Adapter for the Fraud-Detection-Handbook CSV (../shared/data/fdh, docs/schema.md).
 *
 * Purpose: header tx_id,ts,customer_id,terminal_id,amount[,fraud,fraud_scenario] (any
 * order, extra columns ignored) mapped onto the canonical record: event_id = tx_id,
 * ts_us = ts (epoch seconds) * 1e6, account = "C" + customer_id, merchant = "T" +
 * terminal_id, amount in euros converted exactly to cents, currency EUR, type PAYMENT,
 * country BE, channel POS, ground-truth columns copied (-1 when absent or empty).
 * Reasons name the FDH columns.
 *
 * Bounds: same tokenizer as CSV, no allocation. Threads: one decoder per thread.
 */
#include <string.h>

#include "io_int.h"

enum { H_TX_ID = 0, H_TS, H_CUSTOMER, H_TERMINAL, H_AMOUNT, H_FRAUD, H_SCENARIO, H__COUNT };

static const char *const fdh_names[H__COUNT] = {"tx_id",  "ts",    "customer_id",   "terminal_id",
                                                "amount", "fraud", "fraud_scenario"};

static cf_decode_result fdh_header(cf_decoder *d, const cf_record *rec, char *reason,
                                   size_t reason_size)
{
    cf__io_fval cols[CF__IO_COLS_MAX];
    uint32_t ncols = 0;
    bool seen[H__COUNT] = {false};
    const char *p = rec->data;
    size_t n = rec->len;

    d->hdr = HDR_BAD;
    cf__io_strip_bom(&p, &n);
    cf__io_csv_status st = cf__io_csv_columns(p, n, cols, CF__IO_COLS_MAX, &ncols);
    if (st == CSV_TOO_MANY) {
        return cf__io_reject(reason, reason_size, "bad header: more than %d columns",
                             CF__IO_COLS_MAX);
    }
    if (st != CSV_OK) {
        return cf__io_reject(reason, reason_size, "bad header: %s", cf__io_csv_status_reason(st));
    }
    for (uint32_t i = 0; i < ncols; i++) {
        d->col[i] = CF__IO_COL_IGNORE;
        if (cols[i].kind != FV_STR) {
            continue;
        }
        for (int h = 0; h < H__COUNT; h++) {
            if (cols[i].len == strlen(fdh_names[h]) &&
                memcmp(cols[i].p, fdh_names[h], cols[i].len) == 0) {
                if (seen[h]) {
                    return cf__io_reject(reason, reason_size, "bad header: duplicate column: %s",
                                         fdh_names[h]);
                }
                seen[h] = true;
                d->col[i] = (uint8_t)h;
            }
        }
    }
    for (int h = 0; h < H_FRAUD; h++) {
        if (!seen[h]) {
            return cf__io_reject(reason, reason_size, "bad header: missing column: %s",
                                 fdh_names[h]);
        }
    }
    d->ncols = ncols;
    d->hdr = HDR_OK;
    return CF_DECODE_SKIP;
}

/* prefix + id into dst; NULL on success, else the reason's first words. */
static const char *fdh_id(const cf__io_fval *v, char prefix, char *dst)
{
    if (v->len == 0) {
        return "missing field";
    }
    if (v->kind != FV_STR) {
        return "bad character"; /* ids never hold quotes */
    }
    if (v->len > CF_ID_MAX - 1) {
        return "field too long";
    }
    if (memchr(v->p, '\0', v->len) != NULL) {
        return "bad character";
    }
    if (!cf_utf8_valid(v->p, v->len)) {
        return "invalid utf-8";
    }
    dst[0] = prefix;
    memcpy(dst + 1, v->p, v->len);
    dst[v->len + 1] = '\0';
    return NULL;
}

static bool fdh_flag(const cf__io_fval *v, int max, int8_t *out)
{
    if (v->kind == FV_ABSENT || v->len == 0) {
        *out = -1;
        return true;
    }
    if (v->len != 1 || v->p[0] < '0' || v->p[0] > '0' + max) {
        return false;
    }
    *out = (int8_t)(v->p[0] - '0');
    return true;
}

cf_decode_result cf__io_decode_fdh(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size)
{
    if (d->hdr != HDR_OK) {
        if (d->hdr == HDR_EXPECTED) {
            return fdh_header(d, rec, reason, reason_size);
        }
        return cf__io_reject(reason, reason_size, "no valid header");
    }
    cf__io_fval v[H__COUNT];
    memset(v, 0, sizeof(v));
    cf__io_csv_status st = cf__io_csv_fields(rec->data, rec->len, d->col, d->ncols, v);
    if (st != CSV_OK) {
        return cf__io_reject(reason, reason_size, "%s", cf__io_csv_status_reason(st));
    }
    for (int h = 0; h < H_FRAUD; h++) {
        if (v[h].len == 0) {
            return cf__io_reject(reason, reason_size, "missing field: %s", fdh_names[h]);
        }
    }
    ev->ingest_ns = 0;
    ev->seq = 0;
    if (v[H_TX_ID].kind != FV_STR ||
        !cf__io_parse_u64(v[H_TX_ID].p, v[H_TX_ID].len, &ev->event_id)) {
        return cf__io_reject(reason, reason_size, "bad number: tx_id");
    }
    int64_t secs;
    bool ovf;
    if (v[H_TS].kind != FV_STR || !cf__io_parse_i64(v[H_TS].p, v[H_TS].len, &secs, &ovf) ||
        secs < CF__IO_TS_MIN_US / 1000000 || secs > CF__IO_TS_MAX_US / 1000000) {
        return cf__io_reject(reason, reason_size, "bad timestamp");
    }
    ev->ts_us = secs * 1000000;
    const char *why = fdh_id(&v[H_CUSTOMER], 'C', ev->account);
    if (why != NULL) {
        return cf__io_reject(reason, reason_size, "%s: customer_id", why);
    }
    why = fdh_id(&v[H_TERMINAL], 'T', ev->merchant);
    if (why != NULL) {
        return cf__io_reject(reason, reason_size, "%s: terminal_id", why);
    }
    cf_err e = v[H_AMOUNT].kind != FV_STR
                   ? CF_E_PARSE
                   : cf_amount_parse(v[H_AMOUNT].p, v[H_AMOUNT].len, 2, &ev->amount_minor);
    if (e == CF_E_OVERFLOW) {
        return cf__io_reject(reason, reason_size, "amount overflow");
    }
    if (e != CF_OK) {
        return cf__io_reject(reason, reason_size, "bad number: amount");
    }
    if (!fdh_flag(&v[H_FRAUD], 1, &ev->fraud)) {
        return cf__io_reject(reason, reason_size, "bad number: fraud");
    }
    if (!fdh_flag(&v[H_SCENARIO], 3, &ev->fraud_scenario)) {
        return cf__io_reject(reason, reason_size, "bad number: fraud_scenario");
    }
    memcpy(ev->currency, "EUR", 4);
    memcpy(ev->country, "BE", 3);
    ev->type = CF_TX_PAYMENT;
    ev->channel = CF_CH_POS;
    return CF_DECODE_EVENT;
}
