/*
 * Error table views. The X-macro in err.h is the single source of names, messages and the
 * retriable flag, so the three can never drift apart.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "confide/err.h"

const char *cf_strerror(cf_err e)
{
    switch (e) {
    case CF_OK:
        return "success";
#define X(n, msg, retry)                                                                           \
    case CF_E_##n:                                                                                 \
        return msg;
        CF_ERR_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *cf_err_name(cf_err e)
{
    switch (e) {
    case CF_OK:
        return "CF_OK";
#define X(n, msg, retry)                                                                           \
    case CF_E_##n:                                                                                 \
        return "CF_E_" #n;
        CF_ERR_MAP(X)
#undef X
    default:
        return "CF_E_UNKNOWN";
    }
}

bool cf_err_is_retriable(cf_err e)
{
    switch (e) {
#define X(n, msg, retry)                                                                           \
    case CF_E_##n:                                                                                 \
        return retry;
        CF_ERR_MAP(X)
#undef X
    default:
        return false;
    }
}

static cf_err from_errno(int errnum)
{
    switch (errnum) {
    case ENOMEM:
        return CF_E_NOMEM;
    case EACCES:
    case EPERM:
        return CF_E_PERM;
    case ENOENT:
        return CF_E_NOTFOUND;
    case EINVAL:
        return CF_E_INVAL;
    case EAGAIN:
        return CF_E_FULL;
    default:
        return CF_E_IO;
    }
}

cf_err cf_err_errno(int errnum, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr != NULL && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < errstr_size) {
            snprintf(errstr + n, errstr_size - (size_t)n, ": %s", strerror(errnum));
        }
    }
    return from_errno(errnum);
}

cf_err cf_err_set(cf_err e, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr != NULL && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return e;
}
