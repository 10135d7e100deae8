/*
 * Private declarations shared by the io module's decoders, encoders and splitter.
 *
 * A decoder turns one record into a table of field views (cf__io_fval, indexed by
 * cf__io_field) without copying, then cf__io_build_event validates and converts every
 * field in a fixed order, so CSV and NDJSON accept exactly the same values and give the
 * same reasons. Nothing here allocates.
 */
#ifndef CF_IO_INT_H
#define CF_IO_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/io.h"

/* Canonical fields, in validation order (also the canonical CSV column order). */
typedef enum {
    F_EVENT_ID = 0,
    F_TS,
    F_ACCOUNT,
    F_MERCHANT,
    F_AMOUNT,
    F_AMOUNT_MINOR,
    F_CURRENCY,
    F_TYPE,
    F_COUNTRY,
    F_CHANNEL,
    F_FRAUD,
    F_FRAUD_SCENARIO,
    F__COUNT
} cf__io_field;

#define CF__IO_COL_IGNORE 255 /* column map entry of an unknown (ignored) column */
#define CF__IO_COLS_MAX 256   /* most columns a CSV header may have */

/* How the bytes of a field view are to be read. */
typedef enum {
    FV_ABSENT = 0, /* not present in the record */
    FV_STR,        /* literal text: CSV field, or a JSON string without escapes */
    FV_CSV_ESC,    /* CSV quoted field content holding "" escapes */
    FV_JSON_ESC,   /* JSON string content holding backslash escapes */
    FV_NUM,        /* JSON number literal (grammar already checked) */
    FV_NULL,       /* JSON null */
    FV_TRUE,       /* JSON true */
    FV_FALSE,      /* JSON false */
    FV_NESTED      /* JSON object or array */
} cf__io_fval_kind;

typedef struct {
    const char *p; /* borrowed from the record */
    uint32_t len;
    uint8_t kind; /* cf__io_fval_kind */
} cf__io_fval;

typedef enum { HDR_EXPECTED = 0, HDR_OK, HDR_BAD } cf__io_hdr_state;

struct cf_decoder {
    cf_format fmt;
    uint8_t hdr;                  /* cf__io_hdr_state (CSV and FDH) */
    uint32_t ncols;               /* columns in the header */
    uint8_t col[CF__IO_COLS_MAX]; /* column -> field id, or CF__IO_COL_IGNORE */
};

/* Field names as they appear in CSV headers and JSON keys. */
extern const char *const cf__io_field_names[F__COUNT];
/* Field id of a column name / JSON key, -1 when unknown. */
int cf__io_field_lookup(const char *s, size_t len);

/* Writes a reason and returns CF_DECODE_REJECT. */
cf_decode_result cf__io_reject(char *reason, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Validates and converts the field views into *ev (every event field is written). */
cf_decode_result cf__io_build_event(const cf__io_fval v[F__COUNT], cf_event *ev, char *reason,
                                    size_t reason_size);

/* Timestamps: integer microseconds or RFC 3339 UTC, within years 0000..9999. */
#define CF__IO_TS_MIN_US (-62167219200LL * 1000000LL)            /* 0000-01-01T00:00:00Z */
#define CF__IO_TS_MAX_US (253402300799LL * 1000000LL + 999999LL) /* 9999-12-31T23:59:59.999999Z */
bool cf__io_parse_ts(const char *s, size_t n, int64_t *out);
/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" (27 bytes + NUL); 0 when out of range. */
size_t cf__io_format_ts(int64_t ts_us, char buf[32]);
/* Decimal digits only, 1..20 of them, no overflow. */
bool cf__io_parse_u64(const char *s, size_t n, uint64_t *out);
/* Optional '-', then digits; no overflow (*overflow set when the text is well-formed). */
bool cf__io_parse_i64(const char *s, size_t n, int64_t *out, bool *overflow);

/*
 * JSON string content -> UTF-8 bytes (escape syntax already checked). Returns the output
 * length; *status 0 ok, 1 output longer than cap, 2 lone surrogate.
 */
size_t cf__io_json_unescape(const char *p, size_t n, char *out, size_t cap, int *status);

/*
 * JSON-escapes s[0..len) (no surrounding quotes) into out[0..cap): valid UTF-8 copied,
 * '"' '\\' and control bytes escaped, invalid bytes as \u00XX. Never splits an escape or a
 * character; stops at the first one that does not fit. Returns bytes written; *consumed
 * gets the input bytes encoded.
 */
size_t cf__io_json_escape(const char *s, size_t len, char *out, size_t cap, size_t *consumed);
/* Length of the valid UTF-8 sequence at s[0..len), 0 when invalid. */
size_t cf__io_utf8_seq(const unsigned char *s, size_t len);

/* CSV tokenizing (decode_csv.c); also used by the FDH adapter. */
typedef enum {
    CSV_OK = 0,
    CSV_TOO_MANY,
    CSV_TOO_FEW,
    CSV_BAD_QUOTE,
    CSV_UNTERMINATED
} cf__io_csv_status;
/* Splits a record into at most @p max columns: cols[i] for column i. */
cf__io_csv_status cf__io_csv_columns(const char *p, size_t n, cf__io_fval *cols, uint32_t max,
                                     uint32_t *ncols);
/* Splits a record with a known column map: vals[map[i]] for column i (ignored columns
 * skipped); the record must have exactly @p ncols columns. */
cf__io_csv_status cf__io_csv_fields(const char *p, size_t n, const uint8_t *map, uint32_t ncols,
                                    cf__io_fval *vals);
/* Reason text of a tokenizer status. */
const char *cf__io_csv_status_reason(cf__io_csv_status st);
/* Strips a UTF-8 byte order mark. */
void cf__io_strip_bom(const char **p, size_t *n);

cf_decode_result cf__io_decode_csv(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size);
cf_decode_result cf__io_decode_ndjson(cf_decoder *d, const cf_record *rec, cf_event *ev,
                                      char *reason, size_t reason_size);
cf_decode_result cf__io_decode_fdh(cf_decoder *d, const cf_record *rec, cf_event *ev, char *reason,
                                   size_t reason_size);

#endif
