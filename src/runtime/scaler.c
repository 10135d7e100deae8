/*
 * The distributed autoscaler (confide autoscale, docs/autoscaling.md): the same policies as
 * the embedded one (autoscale.c), fed by the statistics the running roles publish on core
 * NATS once a second (distributed.c: PREFIX.stats.gateway, PREFIX.stats.I.W). Party 0's
 * workers stand for every party: each party does the same work on the same keys.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "confide/runtime.h"
#include "confide/scale.h"
#include "secure_int.h"

struct cf_scaler {
    cf_config conf;
    cf_js *js;
    cf_js_sub *sub;
    cf_policy *policy;
    cf_forecaster *fc;
    char control[160];
    /* party 0's workers: their last reported totals, and the sums of what they added */
    uint64_t w_processed[CF_WORKERS_MAX], w_busy[CF_WORKERS_MAX];
    bool w_seen[CF_WORKERS_MAX];
    uint64_t processed, busy_ns;
    uint64_t accepted, accepted_base;
    bool gw_seen, have_base;
    uint32_t ready;
    int64_t gw_last_ns, last_ns;
    uint64_t d_processed, d_busy, d_accepted; /* at the last decision */
};

cf_err cf_scaler_create(cf_scaler **out, const cf_config *c, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (strcmp(c->autoscale_policy, "off") == 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "autoscale.policy: off; choose static, reactive, ds2 or predictive");
    }
    if (c->autoscale_min_workers > c->autoscale_max_workers) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "autoscale.min_workers: %lld is above autoscale.max_workers %lld",
                          (long long)c->autoscale_min_workers, (long long)c->autoscale_max_workers);
    }
    cf_scaler *a = cf_calloc(1, sizeof(*a));
    if (a == NULL) {
        return CF_E_NOMEM;
    }
    a->conf = *c;
    char stats[160];
    snprintf(stats, sizeof(stats), "%s.stats.>", c->nats_prefix);
    snprintf(a->control, sizeof(a->control), "%s.control.rescale", c->nats_prefix);
    cf_err err = cf__autoscale_policy(c, &a->policy, &a->fc, errstr, errstr_size);
    if (err == CF_OK) {
        err = cf__nats_connect(c, "confide-autoscale", &a->js, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = cf_nats_subscribe(&a->sub, a->js, stats, errstr, errstr_size);
    }
    if (err != CF_OK) {
        cf_scaler_destroy(a);
        return err;
    }
    a->last_ns = a->gw_last_ns = cf_now_ns();
    *out = a;
    return CF_OK;
}

/* "KEY N KEY N ...": the value after @p key, false when it is missing. */
static bool field(const char *line, const char *key, uint64_t *v)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p == line || p[-1] == ' ') && p[kl] == ' ') {
            return sscanf(p + kl + 1, "%" SCNu64, v) == 1;
        }
    }
    return false;
}

static void take(cf_scaler *a, const cf_js_msg *m, const char *subject)
{
    char line[160];
    size_t n = m->len < sizeof(line) - 1 ? m->len : sizeof(line) - 1;
    memcpy(line, m->data, n);
    line[n] = '\0';
    const char *tail = subject + strlen(a->conf.nats_prefix) + strlen(".stats.");
    uint64_t x = 0, y = 0, w = 0;
    if (strcmp(tail, "gateway") == 0 && field(line, "accepted", &x) && field(line, "workers", &w)) {
        if (!a->gw_seen) {
            a->accepted_base = x; /* backlog counts from here on */
        }
        a->gw_seen = true;
        a->accepted = x;
        a->ready = (uint32_t)w;
        a->gw_last_ns = cf_now_ns();
        return;
    }
    unsigned pi = 0, worker = 0;
    if (sscanf(tail, "%u.%u", &pi, &worker) != 2 || pi != 0 || worker >= CF_WORKERS_MAX ||
        !field(line, "processed", &x) || !field(line, "busy_ns", &y)) {
        return;
    }
    /* Totals since the worker started: add what is new since its last report (all of it
     * for a worker not heard before, or restarted and counting from 0 again). The first
     * decision takes its baselines from these sums, so what came before it never counts. */
    bool again = a->w_seen[worker] && x >= a->w_processed[worker] && y >= a->w_busy[worker];
    a->processed += x - (again ? a->w_processed[worker] : 0);
    a->busy_ns += y - (again ? a->w_busy[worker] : 0);
    a->w_seen[worker] = true;
    a->w_processed[worker] = x;
    a->w_busy[worker] = y;
}

double cf_scaler_gateway_silent_s(const cf_scaler *a)
{
    return (double)(cf_now_ns() - a->gw_last_ns) / 1e9;
}

cf_err cf_scaler_step_run(cf_scaler *a, cf_scaler_step *st, char *errstr, size_t errstr_size)
{
    memset(st, 0, sizeof(*st));
    int64_t until = a->last_ns + a->conf.autoscale_interval_ms * 1000000;
    bool seen = false;
    for (int64_t now = cf_now_ns(); now < until; now = cf_now_ns()) {
        cf_js_msg m;
        int64_t wait_ms = (until - now) / 1000000 + 1;
        cf_err e = cf_js_next(a->sub, &m, wait_ms);
        if (e == CF_E_TRANSPORT) {
            return cf_err_set(e, errstr, errstr_size, "lost the NATS connection");
        }
        if (e == CF_OK) {
            int64_t before = a->gw_last_ns;
            take(a, &m, cf_js_msg_subject(&m));
            seen |= a->gw_last_ns != before;
            cf_js_release(&m);
        }
    }
    int64_t now = cf_now_ns();
    if (!a->have_base) {
        /* the first interval only sets the baselines */
        a->have_base = a->gw_seen;
        a->d_processed = a->processed;
        a->d_busy = a->busy_ns;
        a->d_accepted = a->accepted;
        a->last_ns = now;
        st->seen = seen;
        st->ready = st->want = a->ready;
        return CF_OK;
    }
    uint64_t total_in = a->accepted - a->accepted_base;
    cf_scale_obs o = {
        .now_s = (double)now / 1e9,
        .interval_s = (double)(now - a->last_ns) / 1e9,
        .arrived = (double)(a->accepted - a->d_accepted),
        .processed = (double)(a->processed - a->d_processed),
        .busy_s = (double)(a->busy_ns - a->d_busy) / 1e9,
        .backlog = total_in > a->processed ? (double)(total_in - a->processed) : 0,
        .ready = a->ready,
    };
    a->d_processed = a->processed;
    a->d_busy = a->busy_ns;
    a->d_accepted = a->accepted;
    a->last_ns = now;
    cf_scale_decision d;
    cf_policy_decide(a->policy, &o, &d);
    unsigned lo = (unsigned)a->conf.autoscale_min_workers;
    unsigned hi = (unsigned)a->conf.autoscale_max_workers;
    st->seen = seen;
    st->decided = true;
    st->ready = a->ready;
    st->want = d.workers < lo ? lo : d.workers > hi ? hi : d.workers;
    st->arrived_per_s = o.interval_s > 0 ? o.arrived / o.interval_s : 0;
    st->worker_rate = d.worker_rate;
    st->busy_fraction =
        o.interval_s > 0 && o.ready > 0 ? o.busy_s / (o.interval_s * (double)o.ready) : 0;
    return CF_OK;
}

static cf_err request(cf_js *js, const char *control, unsigned workers, char *errstr,
                      size_t errstr_size)
{
    char req[16], reply[160];
    int n = snprintf(req, sizeof(req), "%u", workers);
    cf_err e = cf_nats_request(js, control, req, (size_t)n, reply, sizeof(reply), 5000, errstr,
                               errstr_size);
    if (e != CF_OK) {
        return e;
    }
    if (strncmp(reply, "ok ", 3) != 0) {
        return cf_err_set(CF_E_STATE, errstr, errstr_size, "the gateway %s", reply);
    }
    return CF_OK;
}

cf_err cf_scaler_request(cf_scaler *a, unsigned workers, char *errstr, size_t errstr_size)
{
    return request(a->js, a->control, workers, errstr, errstr_size);
}

cf_err cf_rescale_request(const cf_config *c, unsigned workers, char *errstr, size_t errstr_size)
{
    char control[160];
    snprintf(control, sizeof(control), "%s.control.rescale", c->nats_prefix);
    cf_js *js = NULL;
    cf_err e = cf__nats_connect(c, "confide-autoscale", &js, errstr, errstr_size);
    if (e == CF_OK) {
        e = request(js, control, workers, errstr, errstr_size);
    }
    cf_js_close(js);
    return e;
}

void cf_scaler_destroy(cf_scaler *a)
{
    if (a == NULL) {
        return;
    }
    cf_js_unsubscribe(a->sub);
    cf_js_close(a->js);
    cf_policy_destroy(a->policy);
    cf_forecaster_destroy(a->fc);
    cf_free(a);
}
