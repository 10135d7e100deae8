/**
 * @file event.h
 * @brief The canonical transaction record (docs/schema.md) and its enumerations.
 *
 * cf_event is a plain data record, not an object: it is public so that decoders, rings and
 * operators can move it by value without a call per field. This is the one deliberate
 * exception to STYLE.md's "public types are opaque".
 */
#ifndef CONFIDE_EVENT_H
#define CONFIDE_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CF_ID_MAX 64 /* bytes in an account or merchant id, without the terminator */

#define CF_TX_TYPE_MAP(X)                                                                          \
    X(PAYMENT)                                                                                     \
    X(TRANSFER)                                                                                    \
    X(CASH_IN)                                                                                     \
    X(CASH_OUT)                                                                                    \
    X(DEBIT)                                                                                       \
    X(REFUND)

typedef enum {
#define X(n) CF_TX_##n,
    CF_TX_TYPE_MAP(X)
#undef X
        CF_TX__COUNT
} cf_tx_type;

#define CF_CHANNEL_MAP(X)                                                                          \
    X(POS)                                                                                         \
    X(ECOM)                                                                                        \
    X(ATM)                                                                                         \
    X(P2P)                                                                                         \
    X(MOTO)                                                                                        \
    X(BRANCH)

typedef enum {
#define X(n) CF_CH_##n,
    CF_CHANNEL_MAP(X)
#undef X
        CF_CH__COUNT
} cf_channel;

/** One transaction. Strings are NUL-terminated; ids are opaque bytes (valid UTF-8). */
typedef struct cf_event {
    uint64_t event_id;
    int64_t ts_us;        /* event time, microseconds since the epoch, UTC */
    int64_t amount_minor; /* minor units of currency; negative for refunds */
    int64_t ingest_ns;    /* monotonic ingest stamp (or scheduled send time when paced) */
    uint64_t seq;         /* position in the gateway's log, assigned at ingest */
    char account[CF_ID_MAX + 1];
    char merchant[CF_ID_MAX + 1];
    char currency[4];      /* ISO 4217 alpha-3 */
    char country[3];       /* ISO 3166-1 alpha-2 */
    uint8_t type;          /* cf_tx_type */
    uint8_t channel;       /* cf_channel */
    int8_t fraud;          /* ground truth when the source has it: 0/1, -1 unknown */
    int8_t fraud_scenario; /* 0 none, 1..3 FDH scenarios, -1 unknown */
} cf_event;

/** "PAYMENT" for CF_TX_PAYMENT; NULL when out of range. */
const char *cf_tx_type_name(cf_tx_type t);
/** Parses a type name (exact, upper case). CF_E_PARSE when unknown. */
cf_err cf_tx_type_parse(const char *s, size_t len, cf_tx_type *out);
const char *cf_channel_name(cf_channel c);
cf_err cf_channel_parse(const char *s, size_t len, cf_channel *out);

/** True when @p code (3 bytes) is an active ISO 4217 alpha-3 currency code. */
bool cf_currency_valid(const char *code, size_t len);
/** Minor-unit exponent of a currency (2 for EUR, 0 for JPY, 3 for BHD); -1 when unknown. */
int cf_currency_exponent(const char *code);
/** True when @p code (2 bytes) is an assigned ISO 3166-1 alpha-2 country code. */
bool cf_country_valid(const char *code, size_t len);

/**
 * Parses a decimal amount ("57.16", "-3", "1e2" is refused) into minor units with exactly
 * @p exponent fraction digits at most, overflow-checked, no floating point.
 * CF_E_PARSE for malformed text or too many fraction digits, CF_E_OVERFLOW past int64.
 */
cf_err cf_amount_parse(const char *s, size_t len, int exponent, int64_t *out);
/** Formats minor units as a decimal with @p exponent fraction digits. Returns bytes written. */
size_t cf_amount_format(int64_t minor, int exponent, char *buf, size_t buf_size);

/** Overflow-checked int64 addition: false (and *out untouched) on overflow. */
static inline bool cf_add_i64(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/** Checks UTF-8 validity (no overlongs, no surrogates). */
bool cf_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
