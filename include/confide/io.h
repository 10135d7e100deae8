/**
 * @file io.h
 * @brief Record splitting, decoders (CSV, NDJSON, Fraud-Detection-Handbook CSV), encoders,
 * dead-letter records, the synthetic transaction generator and arrival pacing.
 */
#ifndef CONFIDE_IO_H
#define CONFIDE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CF_FMT_CSV = 0, CF_FMT_NDJSON, CF_FMT_FDH } cf_format;
/** "csv" | "ndjson" | "fdh". CF_E_INVAL otherwise. */
cf_err cf_format_parse(const char *s, cf_format *out);
const char *cf_format_name(cf_format f);

#define CF_RECORD_MAX 4096        /* default longest record, bytes, without its terminator */
#define CF_DEADLETTER_RAW_MAX 256 /* raw bytes kept in a dead-letter record */

/* ---- record splitting ------------------------------------------------------------------- */

/** One record (a line, or for CSV a quoted multi-line record) found in a byte stream. */
typedef struct cf_record {
    const char *data; /* borrowed from the caller's buffer; no terminator, no trailing \r */
    size_t len;       /* bytes at data (at most line_max when too_long) */
    uint64_t line;    /* 1-based line number of the record's first line */
    uint64_t offset;  /* byte offset of the record's first byte in the stream */
    bool too_long;    /* the record exceeded line_max: data holds its first bytes only */
} cf_record;

/**
 * Splits a byte stream into records. CSV splitting is quote-aware (RFC 4180: a newline
 * inside a quoted field does not end the record). Keeps only counters, never the data.
 */
typedef struct cf_splitter cf_splitter;
/** Returns owned (free with cf_splitter_destroy). @p line_max 0 means CF_RECORD_MAX. */
cf_err cf_splitter_create(cf_splitter **out, cf_format fmt, size_t line_max);
void cf_splitter_destroy(cf_splitter *s);
/**
 * Finds the next complete record in buf[0..len). CF_OK: *rec is set and *used bytes were
 * consumed (the caller drops them). CF_E_EOF: no complete record in the buffer; keep the
 * unconsumed tail, append more input and call again (after consuming *used bytes, which
 * may be non-zero while an over-long record is skipped). With @p at_eof true the final
 * unterminated record is returned too. Empty lines are consumed and not returned.
 */
cf_err cf_splitter_next(cf_splitter *s, const char *buf, size_t len, bool at_eof, cf_record *rec,
                        size_t *used);

/* ---- decoding --------------------------------------------------------------------------- */

typedef enum {
    CF_DECODE_EVENT = 0, /* *ev holds an accepted event */
    CF_DECODE_SKIP,      /* a header line: not a record */
    CF_DECODE_REJECT     /* malformed: reason holds why (goes to dead-letter) */
} cf_decode_result;

typedef struct cf_decoder cf_decoder;
/** Returns owned (free with cf_decoder_destroy). */
cf_err cf_decoder_create(cf_decoder **out, cf_format fmt, char *errstr, size_t errstr_size);
void cf_decoder_destroy(cf_decoder *d);
/**
 * Decodes one record. Never crashes on any input. On CF_DECODE_REJECT, @p reason (at least
 * 128 bytes) holds a short machine-friendly reason such as "missing field: currency",
 * "bad number: amount", "amount overflow", "bad timestamp", "unknown currency: XYZ",
 * "field too long: account", "invalid utf-8", "record too long". Reasons never include
 * amounts or ids from the record.
 */
cf_decode_result cf_decoder_decode(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size);

/* ---- encoding --------------------------------------------------------------------------- */

/** The canonical CSV header line (with trailing newline). */
const char *cf_csv_header(void);
/** Encodes @p ev as one canonical CSV line / NDJSON line with trailing newline.
 *  Returns the length, or 0 when @p size is too small. Includes fraud columns when >= 0. */
size_t cf_event_to_csv(const cf_event *ev, char *buf, size_t size);
size_t cf_event_to_ndjson(const cf_event *ev, char *buf, size_t size);

/** JSON-escapes arbitrary bytes into a quoted string (invalid UTF-8 bytes as \u00XX).
 *  Returns the length written (without NUL), truncating safely to @p size. */
size_t cf_json_quote(const char *s, size_t len, char *buf, size_t size);

/**
 * One dead-letter NDJSON line:
 * {"source":S,"line":N,"offset":N,"reason":S,"raw":S,"raw_truncated":bool}\n
 * with raw limited to CF_DEADLETTER_RAW_MAX bytes. Returns the length (0 if too small).
 */
size_t cf_deadletter_format(const char *source, const cf_record *rec, const char *reason, char *buf,
                            size_t size);
/** The same; without @p with_raw the line holds position and reason only
 *  ({"source","line","offset","reason"}): no account, merchant or amount in clear. */
size_t cf_deadletter_format_ex(const char *source, const cf_record *rec, const char *reason,
                               bool with_raw, char *buf, size_t size);

/* ---- generator -------------------------------------------------------------------------- */

/** Options of the Fraud-Detection-Handbook transaction simulator (Le Borgne et al.). */
typedef struct cf_gen_opts {
    uint64_t seed;
    uint32_t customers; /* default 5000 */
    uint32_t terminals; /* default 10000 */
    uint32_t days;      /* default 1 */
    int64_t start_us;   /* first day, 00:00 UTC, microseconds since the epoch */
    double radius;      /* terminals within this distance of a customer are "theirs"; default 5 */
} cf_gen_opts;
void cf_gen_opts_default(cf_gen_opts *o);

typedef struct cf_gen cf_gen;
cf_err cf_gen_create(cf_gen **out, const cf_gen_opts *o, char *errstr, size_t errstr_size);
void cf_gen_destroy(cf_gen *g);
/** Next transaction in event-time order. CF_E_EOF after the last day. */
cf_err cf_gen_next(cf_gen *g, cf_event *ev);

/* ---- arrival pacing --------------------------------------------------------------------- */

/**
 * Open-loop arrival schedule: steady | diurnal | burst | trace:FILE (CSV "step,count" rows,
 * each step one hour of real time compressed by @p speedup). @p rate is the mean events/s
 * (for trace, the rate the trace's mean is scaled to; 0 keeps the trace's own counts).
 */
typedef struct cf_pacer cf_pacer;
cf_err cf_pacer_create(cf_pacer **out, const char *shape, double rate, double speedup, char *errstr,
                       size_t errstr_size);
void cf_pacer_destroy(cf_pacer *p);
/** Offset in ns from the start at which the next event is due (non-decreasing). */
int64_t cf_pacer_next_ns(cf_pacer *p);

/* ---- conversion to one reporting currency (convert.to, convert.rates_file) ------------- */

/**
 * One row of a rates file: 1 unit of @p from is num / 10^scale units of @p to, for event times
 * in [valid_from_us, valid_to_us). Exact: the rate is the decimal text as written, never a
 * floating-point number. Plain data.
 */
typedef struct cf_fx_rate {
    char from[4];
    char to[4];
    uint64_t num;  /* at most 18 significant digits */
    uint8_t scale; /* fraction digits, 0..18 */
    int64_t valid_from_us;
    int64_t valid_to_us; /* exclusive; INT64_MAX when the row leaves it empty */
    uint32_t line;       /* in the rates file (0 for the identity rate) */
} cf_fx_rate;

/** Bytes of cf_fx_rate_encode. */
#define CF_FX_RATE_ENC_LEN 31
/** Longest "no rate for XXX at <RFC 3339>" reason, NUL included. */
#define CF_FX_REASON_MAX 64

typedef struct cf_fx cf_fx;
/**
 * Loads a rates file for conversion to @p to (an ISO 4217 code): CSV with the header
 * from_currency,to_currency,rate,valid_from,valid_to (any order, extra columns ignored); rate an
 * exact positive decimal (no sign, no exponent, at most 18 digits); valid_from and valid_to RFC
 * 3339 UTC (valid_to may be empty: open-ended); rows for another to_currency are skipped.
 * Periods of one currency must not overlap. Errors (CF_E_PARSE, CF_E_IO) name the file and
 * the line. Returns owned *out (cf_fx_destroy). Threads: the table is read-only once loaded.
 */
cf_err cf_fx_load(cf_fx **out, const char *path, const char *to, char *errstr, size_t errstr_size);
/** As cf_fx_load from @p len bytes of @p text; @p name names it in errors. */
cf_err cf_fx_parse(cf_fx **out, const char *name, const char *text, size_t len, const char *to,
                   char *errstr, size_t errstr_size);
void cf_fx_destroy(cf_fx *fx);
/** The reporting currency. */
const char *cf_fx_target(const cf_fx *fx);
/** Rows used for conversion (rows for other targets skipped). */
size_t cf_fx_count(const cf_fx *fx);
/** SHA-256 of the rates file's bytes: pins the table in the signed results parameters. */
void cf_fx_digest(const cf_fx *fx, uint8_t out[32]);
/**
 * The rate for an amount in @p currency at event time @p ts_us: the row whose period holds
 * it, the identity rate (1, no row) when @p currency is the target, NULL when there is none.
 * Borrowed from @p fx.
 */
const cf_fx_rate *cf_fx_find(const cf_fx *fx, const char *currency, int64_t ts_us);
/**
 * @p amount_minor (minor units of r->from) in minor units of r->to, exactly:
 * amount x num x 10^(e_to - e_from) / 10^scale in 128-bit integers, rounded half to even at
 * the target's minor unit (ISO 4217 exponents: JPY 0, EUR 2, KWD 3). CF_E_OVERFLOW when an
 * intermediate or the result does not fit (int64), CF_E_INVAL for an unknown currency.
 */
cf_err cf_fx_convert(const cf_fx_rate *r, int64_t amount_minor, int64_t *out);
/** "no rate for XXX at 2018-04-01T00:00:00.000000Z" (the dead-letter reason). */
size_t cf_fx_no_rate_reason(const char *currency, int64_t ts_us, char *buf, size_t size);
/** Fixed little-endian encoding of a rate, CF_FX_RATE_ENC_LEN bytes (from, to, num, scale,
 *  valid_from, valid_to; not the line), for the audit log's batch metadata. */
void cf_fx_rate_encode(const cf_fx_rate *r, uint8_t out[CF_FX_RATE_ENC_LEN]);
/** Decodes cf_fx_rate_encode; false when the bytes are not a valid rate. */
bool cf_fx_rate_decode(const uint8_t in[CF_FX_RATE_ENC_LEN], cf_fx_rate *r);

#ifdef __cplusplus
}
#endif
#endif
