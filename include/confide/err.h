/**
 * @file err.h
 * @brief One error table, three views (code, name, message) and a retriable flag.
 *
 * Every function that can fail returns a cf_err and passes results through out-parameters.
 */
#ifndef CONFIDE_ERR_H
#define CONFIDE_ERR_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, message, retriable) */
#define CF_ERR_MAP(X)                                                                              \
    X(NOMEM, "out of memory", 1)                                                                   \
    X(INVAL, "invalid argument or config", 0)                                                      \
    X(FULL, "queue full (backpressure)", 1)                                                        \
    X(TRANSPORT, "transport unavailable", 1)                                                       \
    X(AUTH, "message authentication failed", 0)                                                    \
    X(IO, "input/output error", 1)                                                                 \
    X(PARSE, "malformed input", 0)                                                                 \
    X(OVERFLOW, "arithmetic overflow", 0)                                                          \
    X(PERM, "permission or file mode refused", 0)                                                  \
    X(NOTFOUND, "not found", 0)                                                                    \
    X(EOF, "end of input", 0)                                                                      \
    X(CORRUPT, "corrupt or tampered data", 0)                                                      \
    X(CRYPTO, "cryptographic operation failed", 0)                                                 \
    X(LIMIT, "configured limit reached", 1)                                                        \
    X(STATE, "operation not valid in this state", 0)

typedef enum {
    CF_OK = 0,
#define X(n, msg, retry) CF_E_##n,
    CF_ERR_MAP(X)
#undef X
        CF_E__COUNT
} cf_err;

/** Static text for @p e, never NULL. */
const char *cf_strerror(cf_err e);
/** "CF_E_FULL" for CF_E_FULL, "CF_OK" for CF_OK, never NULL. */
const char *cf_err_name(cf_err e);
/** True when retrying the same operation later may succeed (keep the input and back off). */
bool cf_err_is_retriable(cf_err e);

/** Formats "what: strerror(errnum)" into errstr (may be NULL) and maps errno to a cf_err. */
cf_err cf_err_errno(int errnum, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Writes a formatted message into errstr (may be NULL) and returns @p e. */
cf_err cf_err_set(cf_err e, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
