/*
 * A distributed party or combiner as a service: secure.c's role code with distributed.c's
 * transport, and nothing of the pipeline (no input, no batching: frames arrive batched).
 */
#include <stdatomic.h>
#include <string.h>

#include "confide/runtime.h"
#include "runtime_int.h"
#include "secure.h"

struct cf_service {
    cf_secure *s;
    atomic_bool stopped;
};

cf_err cf_service_create(cf_service **out, const cf_config *c, char *errstr, size_t errstr_size)
{
    *out = NULL;
    int role = cf__config_role(c);
    if (role != CF_ROLE_PARTY && role != CF_ROLE_COMBINER) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "role: a service is a party or the combiner, not '%s'", c->role);
    }
    cf_service *sv = cf_calloc(1, sizeof(*sv));
    if (sv == NULL) {
        return CF_E_NOMEM;
    }
    cf_err err = cf_secure_create(&sv->s, c, errstr, errstr_size);
    if (err != CF_OK) {
        cf_free(sv);
        return err;
    }
    *out = sv;
    return CF_OK;
}

cf_err cf_service_run(cf_service *sv, cf_summary *out, bool *stopped, char *errstr,
                      size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    int64_t t0 = cf_now_ns();
    double cpu0 = cf_cpu_s();
    cf_secure_serve(sv->s);
    *stopped = atomic_load(&sv->stopped);
    cf_secure_stats st;
    cf_err err = cf_secure_finish(sv->s, &st, errstr, errstr_size);
    out->elapsed_s = (double)(cf_now_ns() - t0) / 1e9;
    out->cpu_s = cf_cpu_s() - cpu0;
    out->late = st.late;
    out->windows = st.windows;
    out->results = st.results;
    out->suppressed = st.suppressed;
    out->integrity_alerts = st.integrity_alerts;
    return err;
}

void cf_service_stop(cf_service *sv)
{
    atomic_store(&sv->stopped, true);
    cf_secure_stop(sv->s);
}

void cf_service_destroy(cf_service *sv)
{
    if (sv == NULL) {
        return;
    }
    cf_secure_destroy(sv->s);
    cf_free(sv);
}
