/*
 * The embedded autoscaler (autoscale.policy, docs/autoscaling.md): every
 * autoscale.interval_ms it measures what the party workers did (events taken, time busy:
 * DS2's true processing rate), asks the scale module's policy for a worker count, and
 * applies it with cf_secure_rescale, the same key-group handover a user's call makes. The
 * policies are the ones the simulator (confide bench autoscale) runs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "confide/scale.h"
#include "secure_int.h"

struct cf_autoscaler {
    cf_secure *s;
    cf_policy *policy;
    cf_forecaster *fc;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    cf_gauge *desired; /* confide_desired_workers: the decision, for an outside orchestrator */
    uint64_t arrived, processed, busy_ns; /* totals at the last decision */
    int64_t last_ns;
};

/* Party 0's workers (every party does the same work on the same keys). */
static void totals(cf_secure *s, uint64_t *processed, uint64_t *busy_ns)
{
    *processed = *busy_ns = 0;
    for (unsigned w = 0; w < CF_WORKERS_MAX; w++) {
        *processed += atomic_load_explicit(&s->parties[0][w].processed, memory_order_relaxed);
        *busy_ns += atomic_load_explicit(&s->parties[0][w].busy_ns, memory_order_relaxed);
    }
}

static void decide(struct cf_autoscaler *a)
{
    cf_secure *s = a->s;
    uint64_t arrived = atomic_load(&s->gw_events), processed, busy_ns;
    totals(s, &processed, &busy_ns);
    int64_t now = cf_now_ns();
    cf_scale_obs o = {
        .now_s = (double)now / 1e9,
        .interval_s = (double)(now - a->last_ns) / 1e9,
        .arrived = (double)(arrived - a->arrived),
        .processed = (double)(processed - a->processed),
        .busy_s = (double)(busy_ns - a->busy_ns) / 1e9,
        .backlog = arrived > processed ? (double)(arrived - processed) : 0,
        .ready = atomic_load(&s->cur_workers),
    };
    a->arrived = arrived;
    a->processed = processed;
    a->busy_ns = busy_ns;
    a->last_ns = now;
    if (o.interval_s <= 0) {
        return;
    }
    cf_scale_decision d;
    cf_policy_decide(a->policy, &o, &d);
    unsigned want = d.workers;
    unsigned lo = (unsigned)s->conf.autoscale_min_workers;
    unsigned hi = (unsigned)s->conf.autoscale_max_workers;
    want = want < lo ? lo : want > hi ? hi : want;
    if (a->desired != NULL) {
        cf_gauge_set(a->desired, (double)want);
    }
    if (want != o.ready && s->conf.autoscale_act && cf_secure_rescale(s, want) == CF_OK) {
        CF_LOG(CF_LOG_INFO, "autoscale",
               "%s: %u -> %u workers per party (%.0f events/s arriving, %.0f per busy "
               "worker-second)",
               cf_policy_name(a->policy), o.ready, want, o.arrived / o.interval_s, d.worker_rate);
    }
}

void cf__autoscale_worker_delay(const cf_secure *s, uint32_t n)
{
    int64_t ns = s->conf.debug_worker_delay_us * 1000 * (int64_t)n;
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
    while (ns > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *autoscale_main(void *arg)
{
    struct cf_autoscaler *a = arg;
    int64_t period = a->s->conf.autoscale_interval_ms * 1000000;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        int64_t ns = until.tv_nsec + period % 1000000000;
        until.tv_sec += (time_t)(period / 1000000000 + ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        if (pthread_cond_timedwait(&a->cv, &a->mu, &until) == ETIMEDOUT && !a->stop) {
            pthread_mutex_unlock(&a->mu);
            decide(a);
            pthread_mutex_lock(&a->mu);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

cf_err cf__autoscale_policy(const cf_config *c, cf_policy **policy, cf_forecaster **fc,
                            char *errstr, size_t errstr_size)
{
    cf_policy_opts o;
    cf_policy_opts_default(&o);
    double cooldown = (double)c->autoscale_cooldown_ms / 1000;
    o.min_workers = (uint32_t)c->autoscale_min_workers;
    o.max_workers = (uint32_t)c->autoscale_max_workers;
    o.static_workers = (uint32_t)c->autoscale_max_workers;
    o.target_util = (double)c->autoscale_target_pct / 100;
    o.up_util = o.target_util + 0.1 < 1 ? o.target_util + 0.1 : 0.95;
    o.down_util = o.target_util - 0.3 > 0.05 ? o.target_util - 0.3 : 0.05;
    o.cooldown_s = cooldown;
    /* ds2 ignores metrics for one interval after a rescale (the interval it happened in), as
     * confide bench autoscale's simulation does; longer only with a shorter cooldown. */
    double interval = (double)c->autoscale_interval_ms / 1000;
    o.stabilization_s = cooldown < interval ? cooldown : interval;
    o.down_delay_s = cooldown;
    o.lead_s = interval;
    o.catchup_s = 10 * interval;
    cf_err err;
    if (strcmp(c->autoscale_policy, "predictive") == 0) {
        if (c->autoscale_model[0] == '\0') {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "autoscale.model: the predictive policy needs a model (confide "
                              "forecast train --trace FILE --out MODEL)");
        }
        if ((err = cf_forecaster_load(fc, c->autoscale_model, errstr, errstr_size)) != CF_OK) {
            return err;
        }
    }
    return cf_policy_create(policy, c->autoscale_policy, &o, *fc, errstr, errstr_size);
}

cf_err cf__autoscale_start(cf_secure *s, char *errstr, size_t errstr_size)
{
    const cf_config *c = &s->conf;
    if (strcmp(c->autoscale_policy, "off") == 0) {
        return CF_OK;
    }
    if (s->role != CF_ROLE_ALL || s->mode == PROT_NONE) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "autoscale.policy: %s needs confide run with protect lsa or plain (the "
                          "party workers it resizes)",
                          c->autoscale_policy);
    }
    if (c->autoscale_min_workers > c->autoscale_max_workers) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "autoscale.min_workers: %lld is above autoscale.max_workers %lld",
                          (long long)c->autoscale_min_workers, (long long)c->autoscale_max_workers);
    }
    struct cf_autoscaler *a = cf_calloc(1, sizeof(*a));
    if (a == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
    }
    a->s = s;
    a->last_ns = cf_now_ns();
    cf_err err = cf__autoscale_policy(c, &a->policy, &a->fc, errstr, errstr_size);
    if (err == CF_OK && s->ob != NULL) {
        err = cf_metrics_gauge(s->ob->m, "confide_desired_workers",
                               "Workers per party the autoscaler wants (autoscale.policy); with "
                               "autoscale.act false only advice, for an outside orchestrator.",
                               NULL, 0, &a->desired, errstr, errstr_size);
        if (a->desired != NULL) {
            cf_gauge_set(a->desired, (double)atomic_load(&s->cur_workers));
        }
    }
    if (err == CF_OK) {
        pthread_mutex_init(&a->mu, NULL);
        pthread_cond_init(&a->cv, NULL);
        if (pthread_create(&a->thread, NULL, autoscale_main, a) != 0) {
            pthread_mutex_destroy(&a->mu);
            pthread_cond_destroy(&a->cv);
            err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "cannot start the autoscaler");
        }
    }
    if (err != CF_OK) {
        cf_policy_destroy(a->policy);
        cf_forecaster_destroy(a->fc);
        cf_free(a);
        return err;
    }
    s->autoscaler = a;
    return CF_OK;
}

void cf__autoscale_stop(cf_secure *s)
{
    struct cf_autoscaler *a = s->autoscaler;
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    cf_policy_destroy(a->policy);
    cf_forecaster_destroy(a->fc);
    cf_free(a);
    s->autoscaler = NULL;
}
