/*
 * The pipeline's roles (DESIGN.md sections 2-5) and their lifecycle. This file: opening,
 * recovering (replaying the audit log's tail) and closing a run for any role.
 *
 *   gateway (gateway.c)        -- compliance rules on plaintext -> verdicts, alerts.ndjson
 *                              -- audit log append (the batch is durable before anything
 *                                 else happens to it; events get seq = log index)
 *                              -- pseudonymize the group key, split the amount into shares
 *                              -> party 0: (pseudonym, ts, seq, value and MAC shares)
 *                              -> party i >= 1: (pseudonym, ts, seq) only (seed compression)
 *   party i (party.c)          -- event-time windows over its shares (the window module,
 *                                 generic over the value), emits partial sums per
 *                                 (window, pseudonym) and late records
 *   combiner (combiner.c)      -- takes the k partials of a group, checks the MAC, releases
 *                                 groups with count >= min_count to results.ndjson, writes
 *                                 late.ndjson, raises integrity alerts
 *
 * The roles talk only through lanes (secure_int.h): in-process rings when embedded (one
 * thread per role), JetStream when distributed (distributed.c bridges the same lanes; the
 * role code is the same). Checkpoint blobs: checkpoint.c.
 *
 * Parties see identical event sequences, so their windows fire identically and they emit
 * the same sequence of (window, group) messages: the combiner consumes the k streams in
 * lockstep and needs no table of pending partials. A party whose stream disagrees (another
 * window, group, count or index range) is an integrity alert, as is a failed MAC.
 *
 * The combiner learns group names from the gateway (both trusted) through a dictionary ring
 * that carries (pseudonym -> display text) once per new group, always before any event of
 * that group reaches a party. The parties never see it.
 *
 * Memory: every batch travels in preallocated pools with free rings back to the producer,
 * as in pipeline.c; window state is bounded by window.memory_mb per party. The dictionary
 * grows with the number of distinct groups (one small entry each).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "confide/audit.h"
#include "confide/keys.h"
#include "confide/metrics.h"
#include "confide/rules.h"
#include "confide/secagg.h"
#include "confide/window.h"
#include "observe.h"
#include "outfile.h"
#include "pgsink.h"
#include "ressig.h"
#include "secure.h"
#include "secure_int.h"

/* ---- small helpers ---- */

static cf_err lane_create(lane *l, size_t n, size_t batch_cap, size_t elem_size)
{
    cf_err err;
    l->n = n;
    l->items = cf_calloc(n, sizeof(void *));
    if (l->items == NULL) {
        return CF_E_NOMEM;
    }
    if ((err = cf_ring_create(&l->free_ring, n)) != CF_OK ||
        (err = cf_ring_create(&l->full_ring, n)) != CF_OK) {
        return err;
    }
    for (size_t i = 0; i < n; i++) {
        /* item_batch and msg_batch share the {n, cap, ptr} layout */
        item_batch *b = cf_calloc(1, sizeof(item_batch));
        if (b == NULL) {
            return CF_E_NOMEM;
        }
        l->items[i] = b;
        b->it = cf_calloc(batch_cap, elem_size);
        if (b->it == NULL) {
            return CF_E_NOMEM;
        }
        b->cap = (uint32_t)batch_cap;
        CF_ASSERT(cf_ring_push(l->free_ring, b) == CF_OK);
    }
    return CF_OK;
}

static void lane_destroy(lane *l)
{
    if (l->items != NULL) {
        for (size_t i = 0; i < l->n; i++) {
            item_batch *b = l->items[i];
            if (b != NULL) {
                cf_free(b->it);
                cf_free(b);
            }
        }
        cf_free(l->items);
    }
    cf_ring_destroy(l->free_ring);
    cf_ring_destroy(l->full_ring);
}

/* ---- gateway ---- */

static void result_params(const cf_secure *s, char *out, size_t size);
static cf_err check_params_unchanged(cf_secure *s, char *errstr, size_t errstr_size);
static cf_err parse_rescale_plan(cf_secure *s, const char *spec, char *errstr, size_t errstr_size);
static bool remember_signature(cf_secure *s, const resume_state *r);

static cf_err ensure_keys(cf_secure *s, char *errstr, size_t errstr_size)
{
    const char *dir = s->st.keys_dir;
    char probe[CF_CONF_STR_MAX + 64];
    snprintf(probe, sizeof(probe), "%s/gateway.key", dir);
    struct stat sb;
    if (stat(probe, &sb) != 0) {
        cf_err err = cf_keys_generate(dir, (unsigned)s->conf.parties, 1, 0, errstr, errstr_size);
        if (err != CF_OK) {
            return err;
        }
        if (s->ephemeral_keys) {
            return CF_OK;
        }
        CF_LOG(CF_LOG_WARN, "keys",
               "no keys in %s: created new keys there (epoch 1, %u parties, files 0600: keep them "
               "safe)",
               dir, (unsigned)s->conf.parties);
    }
    return CF_OK;
}

/* Throw-away keys live in memory only: their files go as soon as they are loaded. */
static void remove_ephemeral_keys(cf_secure *s)
{
    if (!s->ephemeral_keys) {
        return;
    }
    DIR *d = opendir(s->st.keys_dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                char path[CF_CONF_STR_MAX + 300];
                snprintf(path, sizeof(path), "%s/%s", s->st.keys_dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(s->st.keys_dir);
    s->ephemeral_keys = false;
}

static cf_err check_parties(const cf_secure *s, const cf_key *key, char *errstr, size_t errstr_size)
{
    if (cf_key_parties(key) == s->k) {
        return CF_OK;
    }
    return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                      "parties: the keys in %s are for %u parties, the config asks for %u "
                      "(run confide keygen --dir DIR --parties %u)",
                      s->st.keys_dir, cf_key_parties(key), s->k, s->k);
}

/* Party i's seed stays loaded (secure memory) for workers a rescale adds later. */
static cf_err open_party_crypto(cf_secure *s, unsigned i, char *errstr, size_t errstr_size)
{
    if (i == 0) {
        return CF_OK;
    }
    return cf_key_load_party(s->st.keys_dir, i, &s->party_keys[i], errstr, errstr_size);
}

/* What the combiner needs: its MAC key and, embedded, the auditor's seeds to name a party
 * whose partial fails the MAC. A distributed combiner gets neither seeds nor pseudonym key. */
static cf_err open_combiner_crypto(cf_secure *s, char *errstr, size_t errstr_size)
{
    const char *dir = s->st.keys_dir;
    cf_err err;
    if ((err = cf_key_load(dir, "combiner.key", &s->comb_key, errstr, errstr_size)) != CF_OK ||
        (err = cf_sa_combiner_create(&s->comb, s->comb_key, &s->sa_opts, errstr, errstr_size)) !=
            CF_OK) {
        return err;
    }
    if (s->role == CF_ROLE_COMBINER) {
        /* It signs what it releases (results.sig.ndjson) once the gateway names the log:
         * the key must be there from the start, not missed at the first checkpoint. */
        cf_key *rk = NULL;
        err = cf_key_load(dir, "results.key", &rk, errstr, errstr_size);
        cf_key_destroy(rk);
        return err;
    }
    cf_key *aud_key = NULL;
    if ((err = cf_key_load(dir, "auditor.key", &aud_key, errstr, errstr_size)) != CF_OK ||
        (err = cf_sa_auditor_create(&s->auditor, aud_key, &s->sa_opts, errstr, errstr_size)) !=
            CF_OK ||
        (err = cf_sa_pseudo_create(&s->attrib_pseudo, s->pseudo_key, 64, errstr, errstr_size)) !=
            CF_OK) {
        cf_key_destroy(aud_key);
        return err;
    }
    cf_key_destroy(aud_key); /* the auditor copied the seeds into its own secure memory */
    if (s->audit != NULL &&
        (err = cf_key_load(dir, "data.key", &s->data_key, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    return CF_OK;
}

/* Loads the keys this process's role needs, and only those (least privilege: a distributed
 * party holds its own seed, the combiner its MAC key, the gateway the splitting keys). */
static cf_err open_crypto(cf_secure *s, char *errstr, size_t errstr_size)
{
    cf_err err;
    const char *dir = s->st.keys_dir;
    bool gateway = s->role == CF_ROLE_ALL || s->role == CF_ROLE_GATEWAY;
    if (gateway &&
        ((err = cf_key_load(dir, "pseudonym.key", &s->pseudo_key, errstr, errstr_size)) != CF_OK ||
         (err = cf_sa_pseudo_create(&s->pseudo, s->pseudo_key, 0, errstr, errstr_size)) != CF_OK)) {
        return err;
    }
    if (s->mode != PROT_LSA) {
        return CF_OK;
    }
    if (gateway &&
        ((err = cf_key_load(dir, "gateway.key", &s->gw_key, errstr, errstr_size)) != CF_OK ||
         (err = check_parties(s, s->gw_key, errstr, errstr_size)) != CF_OK ||
         (err = cf_sa_gateway_create(&s->gw, s->gw_key, &s->sa_opts, errstr, errstr_size)) !=
             CF_OK)) {
        return err;
    }
    if ((s->role == CF_ROLE_ALL || s->role == CF_ROLE_COMBINER) &&
        (err = open_combiner_crypto(s, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    for (unsigned i = 0; i < s->k; i++) {
        bool mine = s->role == CF_ROLE_ALL || (s->role == CF_ROLE_PARTY && s->party_id == i);
        if (mine && (err = open_party_crypto(s, i, errstr, errstr_size)) != CF_OK) {
            return err;
        }
    }
    return CF_OK;
}

static cf_err open_parties(cf_secure *s, char *errstr, size_t errstr_size)
{
    cf_err err;
    cf_window_conf wc;
    cf_window_conf_default(&wc);
    wc.size_us = s->conf.window_size_ms * 1000;
    wc.slide_us = s->conf.window_slide_ms * 1000;
    wc.max_delay_us = s->conf.window_max_delay_ms * 1000;
    wc.lateness_us = s->conf.window_lateness_ms * 1000;
    wc.idle_timeout_ns = s->conf.window_idle_timeout_ms * 1000000;
    wc.key_max = CF_SA_PSEUDO_LEN;
    wc.memory_limit_bytes = (size_t)s->conf.window_memory_mb << 20;
    wc.secure_memory = s->mode == PROT_LSA; /* shares are secrets */
    wc.value = s->mode == PROT_LSA ? cf__lsa_value_ops : cf_window_plain_ops;
    wc.on_result = cf__party_on_result;
    wc.on_late = cf__party_on_late;
    s->wconf = wc;
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->workers; w++) {
            party *pa = &s->parties[i][w];
            if ((err = cf__worker_lanes(s, i, w)) != CF_OK) {
                return cf_err_set(err, errstr, errstr_size, "cannot allocate party queues");
            }
            bool windows = s->role == CF_ROLE_ALL || (s->role == CF_ROLE_PARTY && s->party_id == i);
            if (windows && (err = cf__party_open_window(pa, errstr, errstr_size)) != CF_OK) {
                return err;
            }
        }
    }
    return cf_ring_create(&s->dict, DICT_RING);
}

/* Distributed: the gateway keeps only the lanes to the parties, a party only its own windows
 * and lanes, the combiner only the lanes from the parties. */
cf_err cf__worker_lanes(cf_secure *s, unsigned i, unsigned w)
{
    party *pa = &s->parties[i][w];
    cf_err err = CF_OK;
    size_t pool = (size_t)s->conf.pipeline_ring_batches;
    size_t cap = (size_t)s->conf.pipeline_batch_max;
    bool windows = s->role == CF_ROLE_ALL || (s->role == CF_ROLE_PARTY && s->party_id == i);
    bool in = windows || s->role == CF_ROLE_GATEWAY;
    bool out = windows || s->role == CF_ROLE_COMBINER;
    if (pa->s == NULL) {
        /* First use only. The gateway calls this again for the lanes of workers a rescale
         * adds, and such a worker may still run, retired by an earlier rescale whose marker it
         * has not reached: its nworkers must stay what it is (rescale_coordinate sets a new
         * thread's), or it counts the deposits of that marker against the wrong number. */
        pa->s = s;
        pa->index = i;
        pa->worker = w;
        pa->nworkers = s->workers;
    }
    if (windows && s->mode == PROT_LSA && pa->sa == NULL) {
        char why[256];
        err = cf_sa_party_create(&pa->sa, i, s->party_keys[i], &s->sa_opts, why, sizeof(why));
    }
    if (err == CF_OK && in && pa->in.items == NULL) {
        err = lane_create(&pa->in, pool, cap, sizeof(party_item));
    }
    if (err == CF_OK && out && pa->out.items == NULL) {
        err = lane_create(&pa->out, pool, cap, sizeof(party_msg));
    }
    return err;
}

/* With @p r (a resumed log), reopens the outputs and cuts them back to the checkpoint. */
static cf_err open_output(outfile *o, const char *dir, const char *name, const uint64_t *len,
                          char *errstr, size_t errstr_size)
{
    return len != NULL ? outfile_resume(o, dir, name, *len, errstr, errstr_size)
                       : outfile_open(o, dir, name, errstr, errstr_size);
}

/* What the released rows depend on: `confide audit verify-results` recomputes them from the
 * audit log with these, and the combiner signs them with every line. */
static void result_params(const cf_secure *s, char *out, size_t size)
{
    const cf_config *c = &s->conf;
    /* convert.to: the reporting currency and the rates file's digest (a resumed run with
     * other rates would mix two conversions; verify-results converts with them) */
    char fx[128] = "";
    if (s->fx != NULL) {
        uint8_t d[32];
        char hex[65];
        cf_fx_digest(s->fx, d);
        sodium_bin2hex(hex, sizeof(hex), d, sizeof(d));
        snprintf(fx, sizeof(fx), "\"convert_to\":\"%s\",\"rates_sha256\":\"%s\",",
                 cf_fx_target(s->fx), hex);
    }
    snprintf(out, size,
             "{\"protect\":\"%s\",\"window_size_ms\":%lld,\"window_slide_ms\":%lld,"
             "\"max_delay_ms\":%lld,\"lateness_ms\":%lld,\"idle_timeout_ms\":%lld,"
             "\"group_by\":\"%s\",\"min_count\":%lld,\"memory_mb\":%lld,\"format\":\"%s\","
             "%s\"key_epoch\":%u}",
             c->protect, (long long)c->window_size_ms, (long long)c->window_slide_ms,
             (long long)c->window_max_delay_ms, (long long)c->window_lateness_ms,
             (long long)c->window_idle_timeout_ms, c->window_group_by, (long long)c->min_count,
             (long long)c->window_memory_mb, s->results_csv ? "csv" : "ndjson", fx,
             s->comb_key != NULL ? (unsigned)s->comb_key->epoch : 0u);
}

static cf_err open_signer(cf_secure *s, const struct resume_state *r, char *errstr,
                          size_t errstr_size)
{
    char params[512];
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN];
    result_params(s, params, sizeof(params));
    cf_audit_log_id(s->audit, log_id);
    bool resume = r != NULL;
    return ressig_open(&s->rsig, s->st.keys_dir, s->conf.output_dir, log_id, params, resume,
                       resume ? r->sig_len : 0, resume ? r->sig_seq : 0, s->results.tmp,
                       resume ? r->results_len : 0, s->late.tmp, resume ? r->late_len : 0, errstr,
                       errstr_size);
}

static cf_err open_outputs(cf_secure *s, const struct resume_state *r, char *errstr,
                           size_t errstr_size)
{
    const char *out = s->conf.output_dir;
    if (out[0] == '\0' || s->role == CF_ROLE_PARTY) {
        return CF_OK; /* a distributed party keeps only its state file */
    }
    cf_err err = open_output(&s->alerts, out, "alerts.ndjson", r ? &r->alerts_len : NULL, errstr,
                             errstr_size);
    if (s->role == CF_ROLE_GATEWAY) {
        return err; /* results are the combiner's */
    }
    if (err == CF_OK && s->mode != PROT_NONE) {
        err = open_output(&s->results, out, s->results_csv ? "results.csv" : "results.ndjson",
                          r ? &r->results_len : NULL, errstr, errstr_size);
        if (err == CF_OK && s->results_csv && (r == NULL || r->results_len == 0)) {
            char h[256];
            outfile_write(&s->results, h, cf_window_csv_header_for(s->group_mask, h, sizeof(h)));
        }
    }
    if (err == CF_OK && s->mode != PROT_NONE) {
        err =
            open_output(&s->late, out, "late.ndjson", r ? &r->late_len : NULL, errstr, errstr_size);
    }
    if (err == CF_OK && s->mode != PROT_NONE && s->audit != NULL) {
        err = open_signer(s, r, errstr, errstr_size);
        if (err == CF_OK && s->results_csv && (r == NULL || r->results_len == 0)) {
            char h[256]; /* written above, not yet on disk */
            ressig_feed(&s->rsig, false, h, cf_window_csv_header_for(s->group_mask, h, sizeof(h)));
        }
    }
    return err;
}

/* output.postgres: the tables follow the files from the position recovery cut them back to
 * (@p r: zero on a fresh log), under the audit log's id. */
static cf_err open_pg(cf_secure *s, const resume_state *r, char *errstr, size_t errstr_size)
{
    if (!pgsink_enabled(&s->conf)) {
        return CF_OK;
    }
    uint8_t id[CF_AUDIT_LOG_ID_LEN];
    char hex[2 * CF_AUDIT_LOG_ID_LEN + 1] = "";
    if (s->audit != NULL) {
        cf_audit_log_id(s->audit, id);
        sodium_bin2hex(hex, sizeof(hex), id, sizeof(id));
    }
    const char *paths[PG_KINDS] = {s->alerts.f != NULL ? s->alerts.path : NULL,
                                   s->results.f != NULL ? s->results.path : NULL,
                                   s->late.f != NULL ? s->late.path : NULL};
    pgsink_pos pos = {r->index, {r->alerts_len, r->results_len, r->late_len}};
    return pgsink_open(&s->pg, &s->conf, s->ob != NULL ? s->ob->m : NULL, hex, paths, &pos, errstr,
                       errstr_size);
}

static cf_err open_audit(cf_secure *s, char *errstr, size_t errstr_size)
{
    char dir[CF_CONF_STR_MAX + 16];
    if (s->conf.audit_dir[0] != '\0') {
        snprintf(dir, sizeof(dir), "%s", s->conf.audit_dir);
    } else {
        snprintf(dir, sizeof(dir), "%s/audit", s->conf.output_dir);
    }
    cf_audit_opts ao;
    cf_audit_opts_default(&ao);
    cf_err err = cf_audit_fsync_parse(s->conf.audit_fsync, &ao, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    if (ao.fsync == CF_AUDIT_FSYNC_NONE) {
        CF_LOG(CF_LOG_WARN, "audit",
               "audit.fsync is none: a crash can lose events that were already forwarded");
    }
    snprintf(s->st.audit_dir, sizeof(s->st.audit_dir), "%s", dir);
    cf_audit_recovery rec;
    err = cf_audit_open(&s->audit, dir, s->st.keys_dir, &ao, &rec, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    s->st.audit_first_index = rec.next_index;
    s->resume_index = rec.next_index;
    s->resume_events = rec.next_index - rec.dead_letters;
    s->resume_dead = rec.dead_letters;
    s->st.dead_resumed = rec.dead_letters;
    if ((err = cf_key_load_signing_pub(s->st.keys_dir, s->sign_pk, NULL, NULL, errstr,
                                       errstr_size)) != CF_OK) {
        return err;
    }
    if (s->conf.output_dir[0] != '\0') {
        char path[CF_CONF_STR_MAX + 32];
        snprintf(path, sizeof(path), "%s/tree_heads.ndjson", s->conf.output_dir);
        s->heads_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (s->heads_fd < 0) {
            return cf_err_errno(errno, errstr, errstr_size, "cannot open %s", path);
        }
    }
    if (rec.truncated) {
        CF_LOG(CF_LOG_WARN, "audit", "cut a torn record off %s at offset %llu",
               rec.truncated_segment, (unsigned long long)rec.truncated_offset);
    }
    return CF_OK;
}

/*
 * The mask context of this run: a fresh random run id, and the audit log's id (random per
 * log, carried by its every record), or a random one when there is no log (then nothing is
 * kept, so nothing can reuse a mask). Replayed batches use the context recorded with them.
 */
static void init_mask_ctx(cf_secure *s)
{
    randombytes_buf(s->ctx.run_id, sizeof(s->ctx.run_id));
    randombytes_buf(s->ctx.log_id, sizeof(s->ctx.log_id));
    if (s->audit != NULL) {
        _Static_assert(CF_AUDIT_LOG_ID_LEN == CF_SA_ID_LEN, "one log id for log and masks");
        cf_audit_log_id(s->audit, s->ctx.log_id);
    }
}

static bool start_threads(cf_secure *s)
{
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->workers; w++) {
            party *pa = &s->parties[i][w];
            if (pa->win == NULL) {
                continue; /* another process's party */
            }
            if (pthread_create(&pa->thread, NULL, cf__party_main, pa) != 0) {
                return false;
            }
            pa->started = true;
        }
    }
    if (s->role == CF_ROLE_ALL || s->role == CF_ROLE_COMBINER) {
        if (pthread_create(&s->comb_thread, NULL, cf__combiner_main, s) != 0) {
            return false;
        }
        s->comb_started = true;
    }
    return s->role == CF_ROLE_ALL || cf__net_start(s);
}

/* Ends the input of every party and joins the threads that run. Idempotent. */
static void stop_threads(cf_secure *s)
{
    if (s->role != CF_ROLE_ALL) {
        cf__net_join(s); /* the order depends on the role (distributed.c) */
        return;
    }
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->workers; w++) {
            if (s->parties[i][w].in.full_ring != NULL) {
                cf_ring_close(s->parties[i][w].in.full_ring);
            }
        }
    }
    /* Worker 0 takes part in every rescale, so once it ended every worker that a rescale
     * queued before the end has been started (and the retired ones have returned). */
    for (unsigned i = 0; i < s->k; i++) {
        party *w0 = &s->parties[i][0];
        if (w0->started) {
            pthread_join(w0->thread, NULL);
            w0->started = false;
        }
        for (unsigned w = 1; w < CF_WORKERS_MAX; w++) {
            pthread_mutex_lock(&s->xchg[i].mu);
            bool started = s->parties[i][w].started;
            s->parties[i][w].started = false;
            pthread_mutex_unlock(&s->xchg[i].mu);
            if (started) {
                pthread_join(s->parties[i][w].thread, NULL);
            }
        }
    }
    if (s->comb_started) {
        pthread_join(s->comb_thread, NULL);
        s->comb_started = false;
    }
}

/* Reads the last checkpoint; a log without one resumes from index 0 with empty state. */
static cf_err load_resume_state(cf_secure *s, resume_state *r, char *errstr, size_t errstr_size)
{
    memset(r, 0, sizeof(*r));
    if (s->audit == NULL || s->resume_index == 0) {
        return CF_OK;
    }
    size_t len = 0;
    cf_err err = cf_audit_last_checkpoint(s->audit, &r->index, &r->blob, &len, errstr, errstr_size);
    if (err == CF_E_NOTFOUND) {
        r->index = 0;
        return CF_OK;
    }
    if (err != CF_OK) {
        return err;
    }
    r->blob_index_known = true;
    if ((err = cf__ckpt_parse(r, len, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    unsigned want = s->mode == PROT_NONE || s->role == CF_ROLE_GATEWAY ? 0 : s->k;
    if (r->k != want) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "the audit log's checkpoint was written with %u parties, this run "
                          "has %u: resume with the same protect/parties settings",
                          r->k, want);
    }
    return CF_OK;
}

static cf_err restore_state(cf_secure *s, const resume_state *r, char *errstr, size_t errstr_size)
{
    s->st.alerts = r->alerts;
    s->st.results = r->results;
    s->st.windows = r->windows;
    s->st.suppressed = r->suppressed;
    s->st.integrity_alerts = r->integrity_alerts;
    atomic_store(&s->late_count, r->late);
    s->last_ckpt_index = s->resume_index;
    if (s->mode == PROT_NONE || r->blob == NULL || s->role == CF_ROLE_GATEWAY ||
        s->role == CF_ROLE_COMBINER) {
        return CF_OK;
    }
    if (s->role == CF_ROLE_PARTY) {
        return r->k == 1 ? cf_window_restore(s->parties[s->party_id][0].win, r->snaps[0],
                                             r->snap_len[0], errstr, errstr_size)
                         : cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                      "the party state file holds %u snapshots", r->k);
    }
    /* A checkpoint holds one state per party (its workers' merged): each worker takes its key
     * groups, however many workers the party had when it was written. */
    for (unsigned i = 0; i < s->k; i++) {
        for (unsigned w = 0; w < s->workers; w++) {
            cf_err err = cf__party_restore(&s->parties[i][w], r->snaps[i], r->snap_len[i], errstr,
                                           errstr_size);
            if (err != CF_OK) {
                return err;
            }
        }
    }
    return CF_OK;
}

/*
 * After a crash: events [0, N) are in the log; the checkpoint reflects [0, C). Re-evaluate
 * the rules over [0, N) to rebuild their state (alerts only for events >= C: the earlier ones
 * are already in alerts.ndjson), and hand events [C, N) to the parties again. Their shares
 * derive from the sequence numbers, so the parties rebuild exactly the state they had.
 */
static cf_err replay_log(cf_secure *s, uint64_t from_ckpt, char *errstr, size_t errstr_size)
{
    uint64_t n = s->resume_index;
    /* A distributed gateway's checkpoint says what it queued, not what each party's stream
     * got: republish from the least any stream holds, markers where they were (senders skip
     * what their stream already has). */
    uint64_t from_send = from_ckpt;
    unsigned slots = s->dworkers; /* and the streams its recorded rescales used */
    for (unsigned r = 0; r < s->nredo; r++) {
        slots = s->redo[r].to > slots ? s->redo[r].to : slots;
    }
    cf_err ferr = s->role == CF_ROLE_GATEWAY && slots > s->dworkers
                      ? cf__net_gateway_floors(s, slots, errstr, errstr_size)
                      : CF_OK;
    if (ferr != CF_OK) {
        return ferr;
    }
    for (unsigned i = 0; i < s->k && s->role == CF_ROLE_GATEWAY; i++) {
        for (unsigned w = 0; w < slots; w++) {
            uint64_t f = s->has_floor[i][w] ? s->ev_floor[i][w] : 0;
            from_send = f < from_send ? f : from_send;
        }
    }
    if (n == 0 || (s->rules == NULL && s->mode == PROT_NONE)) {
        return CF_OK;
    }
    cf_key *data_key = NULL;
    cf_audit_reader *rd = NULL;
    /* From 0 even without rules: the combiner must learn the name of every group the
     * restored window state holds, not only of those with events after the checkpoint. */
    uint64_t from = 0;
    cf_err err = cf_key_load(s->st.keys_dir, "data.key", &data_key, errstr, errstr_size);
    if (err == CF_OK) {
        err = cf_audit_reader_open(&rd, s->st.audit_dir, data_key, from, errstr, errstr_size);
    }
    while (err == CF_OK) {
        cf_audit_entry e;
        err = cf_audit_reader_next(rd, &e, errstr, errstr_size);
        bool gw = s->role == CF_ROLE_GATEWAY;
        if (err == CF_OK && gw && e.type == CF_AUDIT_REC_CHECKPOINT &&
            !cf__gateway_redo_rescales(s, e.index, true) && e.index >= from_send) {
            cf__gateway_markers(s, e.index, 0, 0);
        }
        if (err != CF_OK || e.type != CF_AUDIT_REC_BATCH) {
            continue;
        }
        if (gw) {
            cf__gateway_redo_rescales(s, e.index, false);
        }
        for (uint32_t i = 0; i < e.count && s->rules != NULL; i++) {
            cf_verdict v;
            cf_rules_eval(s->rules, &e.events[i], &v);
            for (uint32_t h = 0; h < v.n && e.events[i].seq >= from_ckpt; h++) {
                char line[1024];
                size_t len =
                    cf_rules_alert_ndjson(s->rules, &e.events[i], &v.hits[h], line, sizeof(line));
                outfile_write(&s->alerts, line, len);
                cf__sink_put(s, "alerts", line, len);
                s->st.alerts++;
                cf__gateway_count_alert(s, &v.hits[h]);
            }
        }
        cf_sa_ctx ctx;
        if (s->mode == PROT_LSA && !meta_ctx(&e, &ctx)) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                             "audit batch at index %llu has no mask context: the log was "
                             "written by an older confide; start a new log",
                             (unsigned long long)e.index);
            break;
        }
        if (s->mode != PROT_NONE) {
            uint32_t skip = 0;
            for (; skip < e.count && e.events[skip].seq < from_send; skip++) {
                if ((err = cf__gateway_announce(s, &e.events[skip], NULL)) != CF_OK) {
                    break;
                }
            }
            for (uint32_t i = skip; i < e.count;) {
                uint32_t m = e.count - i < (uint32_t)s->conf.pipeline_batch_max
                                 ? e.count - i
                                 : (uint32_t)s->conf.pipeline_batch_max;
                if ((err = cf__gateway_protect(s, e.events + i, m,
                                               s->mode == PROT_LSA ? &ctx : &s->ctx, errstr,
                                               errstr_size)) != CF_OK) {
                    break;
                }
                i += m;
            }
        }
    }
    if (err == CF_E_EOF) {
        err = CF_OK;
        cf__gateway_redo_rescales(s, UINT64_MAX, false);
    }
    cf_audit_reader_destroy(rd);
    cf_key_destroy(data_key);
    return err;
}

static double ring_depth(void *opaque)
{
    return (double)cf_ring_size(opaque);
}

/* Registers the series this file updates. Runs before the party and combiner threads start,
 * so they see the handles without further synchronization. */
static cf_err register_metrics(cf_secure *s, cf_metrics *m, char *errstr, size_t errstr_size)
{
    cf_err err;
    size_t nrules = s->rules != NULL ? cf_rules_count(s->rules) : 0;
    for (size_t i = 0; i < nrules && i < CF_RULES_MAX; i++) {
        cf_label l[] = {{"rule", cf_rules_id(s->rules, i)}};
        if ((err = cf_metrics_counter(m, CF_METRIC_ALERTS_TOTAL, "Compliance alerts, by rule.", l,
                                      1, &s->m_alerts[i], errstr, errstr_size)) != CF_OK) {
            return err;
        }
    }
    cf_gauge *par = NULL;
    if ((err = cf_metrics_gauge(m, CF_METRIC_PARALLELISM,
                                "Aggregation parties (threads) serving the windows.", NULL, 0, &par,
                                errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_gauge_set(par, (double)s->k);
    if ((err = cf_metrics_gauge(m, "confide_party_workers",
                                "Workers per party, each owning a range of the key groups.", NULL,
                                0, &s->m_workers, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_gauge_set(s->m_workers, (double)s->workers);
    cf_audit_sth last;
    bool have_last = s->audit != NULL && cf_audit_last_sth(s->audit, &last) == CF_OK;
    if (s->ob != NULL && (err = cf__observe_secure_metrics(
                              s->ob, s->mode != PROT_NONE, s->audit != NULL,
                              have_last ? &last : NULL, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    if (s->mode == PROT_NONE) {
        return CF_OK;
    }
    cf_label late[] = {{"stage", "window"}, {"outcome", "late"}};
    if ((err = cf_metrics_counter(m, "confide_integrity_alerts_total",
                                  "Integrity alerts: failed MACs and disagreeing parties.", NULL, 0,
                                  &s->m_integrity, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_counter(m, CF_METRIC_EVENTS_TOTAL,
                                  "Events that left a pipeline stage, by stage and outcome.", late,
                                  2, &s->m_late, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_gauge(m, "confide_watermark_timestamp_seconds",
                                "Event-time watermark of the windows (Unix time).", NULL, 0,
                                &s->m_watermark, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_gauge(m, CF_METRIC_WATERMARK_LAG,
                                "Wall-clock time minus the event-time watermark.", NULL, 0,
                                &s->m_watermark_lag, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    for (unsigned i = 0; i < s->k; i++) {
        char in[32], outq[32];
        snprintf(in, sizeof(in), "gateway_to_party%u", i);
        snprintf(outq, sizeof(outq), "party%u_to_combiner", i);
        cf_label li[] = {{"queue", in}};
        cf_label lo[] = {{"queue", outq}};
        const char *help = "Items waiting in a bounded ring between two stages.";
        /* A distributed role has only its own lanes: the others are in other processes. */
        cf_ring *qi = s->parties[i][0].in.full_ring, *qo = s->parties[i][0].out.full_ring;
        if ((qi != NULL &&
             (err = cf_metrics_gauge_fn(m, CF_METRIC_QUEUE_DEPTH, help, li, 1, ring_depth, qi,
                                        errstr, errstr_size)) != CF_OK) ||
            (qo != NULL &&
             (err = cf_metrics_gauge_fn(m, CF_METRIC_QUEUE_DEPTH, help, lo, 1, ring_depth, qo,
                                        errstr, errstr_size)) != CF_OK)) {
            return err;
        }
    }
    return CF_OK;
}

cf_err cf_secure_create(cf_secure **out, const cf_config *c, char *errstr, size_t errstr_size)
{
    return cf__secure_create_observed(out, c, NULL, errstr, errstr_size);
}

cf_err cf__secure_create_observed(cf_secure **out, const cf_config *c, cf_observe *ob, char *errstr,
                                  size_t errstr_size)
{
    cf_metrics *m = ob != NULL ? ob->m : NULL;
    *out = NULL;
    prot_mode mode = strcmp(c->protect, "lsa") == 0     ? PROT_LSA
                     : strcmp(c->protect, "plain") == 0 ? PROT_PLAIN
                                                        : PROT_NONE;
    bool has_dir = c->output_dir[0] != '\0' || c->audit_dir[0] != '\0';
    cf_role role = cf__config_role(c);
    bool gateway = role == CF_ROLE_ALL || role == CF_ROLE_GATEWAY;
    bool audit = c->audit_enabled && has_dir && gateway;
    if (role != CF_ROLE_ALL) {
        if (mode == PROT_NONE) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "protect: none has no parties or combiner to distribute");
        }
        if (c->output_dir[0] == '\0' || (role == CF_ROLE_GATEWAY && !audit)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "output.dir: a distributed %s needs an output directory%s", c->role,
                              role == CF_ROLE_GATEWAY ? " and the audit log" : "");
        }
        if (c->window_idle_timeout_ms != 0) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "window.idle_timeout_ms: must be 0 in a distributed run (a party "
                              "that replays after a restart must emit exactly what it did)");
        }
        if (role == CF_ROLE_PARTY && c->party_worker >= CF_WORKERS_MAX) {
            /* party.worker >= party.workers: a standby that a rescale activates */
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "party.worker: %lld, but a party has at most %d workers (0..%d)",
                              (long long)c->party_worker, CF_WORKERS_MAX, CF_WORKERS_MAX - 1);
        }
        if (strcmp(c->autoscale_policy, "off") != 0) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "autoscale.policy: a distributed run is scaled by `confide "
                              "autoscale` (it starts the worker processes), not by a role");
        }
        if (role == CF_ROLE_PARTY && c->party_id >= c->parties) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "party.id: %lld, but there are %lld parties (0..%lld)",
                              (long long)c->party_id, (long long)c->parties,
                              (long long)c->parties - 1);
        }
    }
    cf_err pg_err = pgsink_enabled(c) ? pgsink_check_config(c, errstr, errstr_size) : CF_OK;
    if (pg_err != CF_OK) {
        return pg_err; /* before anything is created */
    }
    if (mode == PROT_NONE && c->rules_file[0] == '\0' && !audit) {
        return CF_OK; /* nothing to do between decode and sink */
    }
    cf_err err;
    resume_state rs;
    memset(&rs, 0, sizeof(rs));
    cf_secure *s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        return CF_E_NOMEM;
    }
    s->conf = *c;
    s->role = role;
    s->party_id = (unsigned)c->party_id;
    s->ob = ob;
    s->mode = mode;
    s->heads_fd = -1;
    s->results_csv = strcmp(c->results_format, "csv") == 0;
    s->k = mode == PROT_LSA ? (unsigned)c->parties : mode == PROT_PLAIN ? 1 : 0;
    /* Distributed, a party process is one worker: one window and one pair of lanes. */
    s->workers = role == CF_ROLE_PARTY ? 1 : (unsigned)c->party_workers;
    s->dworkers = (unsigned)c->party_workers;
    s->worker_id = (unsigned)c->party_worker;
    s->dnworkers = s->dworkers;
    atomic_store(&s->cur_workers, s->workers);
    s->wk_t0_ns = s->wk_t_ns = cf_now_ns();
    s->gw_max_ts = INT64_MIN;
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        pthread_mutex_init(&s->xchg[i].mu, NULL);
        pthread_cond_init(&s->xchg[i].cv, NULL);
    }
    if ((err = parse_rescale_plan(s, c->debug_rescale_at, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    cf_sa_opts_default(&s->sa_opts);
    s->sa_opts.parties = mode == PROT_LSA ? s->k : 2;
    s->sa_opts.min_count = (uint64_t)c->min_count;
    /* one MAC key per tumbling window; sliding windows span several periods, so they share
     * the epoch's (docs/security.md) */
    s->sa_opts.mac_period_us = c->window_slide_ms == 0 || c->window_slide_ms == c->window_size_ms
                                   ? c->window_size_ms * 1000
                                   : 0;
    if (c->keys_dir[0] != '\0') {
        snprintf(s->st.keys_dir, sizeof(s->st.keys_dir), "%s", c->keys_dir);
    } else if (c->output_dir[0] != '\0') {
        snprintf(s->st.keys_dir, sizeof(s->st.keys_dir), "%s/keys", c->output_dir);
    } else {
        /* Nothing is kept from this run: use throw-away keys, removed once loaded. */
        snprintf(s->st.keys_dir, sizeof(s->st.keys_dir), "/tmp/confide-keys-XXXXXX");
        if (mkdtemp(s->st.keys_dir) == NULL) {
            err = cf_err_errno(errno, errstr, errstr_size, "cannot create a temporary key dir");
            goto fail;
        }
        s->ephemeral_keys = true;
    }
    if (mode != PROT_NONE) {
        if ((err = cf_window_group_parse(c->window_group_by, &s->group_mask, errstr,
                                         errstr_size)) != CF_OK) {
            cf_err_set(err, errstr, errstr_size,
                       "window.group_by: '%s' is not a list of "
                       "merchant, account, country, channel, type, currency",
                       c->window_group_by);
            goto fail;
        }
        /* Amounts in different currencies are never added: currency is always part of the
         * group (listing it in group_by changes nothing). */
        s->group_mask |= CF_GROUP_CURRENCY;
        if (c->min_count < 10) {
            CF_LOG(CF_LOG_WARN, "config",
                   "min_count is %lld: released rows may describe fewer than 10 payments (a "
                   "row of one is that payment's exact amount, group and minute); 10 or more "
                   "is the k-anonymity default",
                   (long long)c->min_count);
        }
    }
    if (c->output_dir[0] != '\0' && mkdir(c->output_dir, 0700) != 0 && errno != EEXIST) {
        err =
            cf_err_errno(errno, errstr, errstr_size, "cannot create output dir %s", c->output_dir);
        goto fail;
    }
    /* Distributed roles never make keys: each gets its own from `confide keygen`. */
    if ((mode != PROT_NONE || audit) && role == CF_ROLE_ALL) {
        if ((err = ensure_keys(s, errstr, errstr_size)) != CF_OK) {
            goto fail;
        }
    }
    if (gateway && c->rules_file[0] != '\0' &&
        (err = cf_rules_load_file(&s->rules, c->rules_file, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if (role != CF_ROLE_PARTY && (err = cf__config_fx(c, &s->fx, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if (audit && (err = open_audit(s, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    init_mask_ctx(s);
    if ((err = load_resume_state(s, &rs, errstr, errstr_size)) != CF_OK ||
        (err = cf__gateway_load_rescales(s, errstr, errstr_size)) != CF_OK ||
        (role != CF_ROLE_ALL && (err = cf__net_open(s, &rs, errstr, errstr_size)) != CF_OK) ||
        (role == CF_ROLE_COMBINER && !remember_signature(s, &rs)) ||
        (err = check_params_unchanged(s, errstr, errstr_size)) != CF_OK ||
        (err = open_outputs(s, s->resume_index > 0 || rs.blob != NULL ? &rs : NULL, errstr,
                            errstr_size)) != CF_OK ||
        (err = cf__sink_open(s, errstr, errstr_size)) != CF_OK ||
        (err = open_pg(s, &rs, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if ((err = cf_ring_create(&s->ckpt_ring, 64)) != CF_OK) {
        goto fail;
    }
    if (mode != PROT_NONE) {
        err = open_crypto(s, errstr, errstr_size);
        result_params(s, s->rsig.params, sizeof(s->rsig.params)); /* now with the key epoch */
        remove_ephemeral_keys(s);
        if (err != CF_OK || (err = open_parties(s, errstr, errstr_size)) != CF_OK) {
            goto fail;
        }
    }
    if ((err = restore_state(s, &rs, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if (m != NULL && (err = register_metrics(s, m, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if (mode != PROT_NONE && !start_threads(s)) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "cannot start party threads");
        goto fail;
    }
    if ((err = cf__autoscale_start(s, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    s->replaying = true;
    err = replay_log(s, rs.index, errstr, errstr_size);
    s->replaying = false;
    if (err != CF_OK) {
        goto fail;
    }
    s->st.resumed = s->resume_events;
    if (s->resume_index > 0) {
        CF_LOG(CF_LOG_WARN, "audit",
               "resuming: %llu events and %llu dead letters are already in the audit log "
               "(checkpoint at %llu); the first %llu accepted input records are skipped",
               (unsigned long long)s->resume_events, (unsigned long long)s->resume_dead,
               (unsigned long long)rs.index, (unsigned long long)s->resume_events);
    }
    cf_free(rs.blob);
    *out = s;
    return CF_OK;
fail:
    cf_free(rs.blob);
    cf_secure_destroy(s);
    return err;
}

/* A restarted combiner continues its results.sig.ndjson where its state file says. */
static bool remember_signature(cf_secure *s, const resume_state *r)
{
    s->comb_resumed = r->blob != NULL;
    s->comb_sig_len = r->sig_len;
    s->comb_sig_seq = r->sig_seq;
    return true;
}

/* debug.rescale_at: "INDEX:WORKERS,..." in increasing index order. */
static cf_err parse_rescale_plan(cf_secure *s, const char *spec, char *errstr, size_t errstr_size)
{
    const char *p = spec;
    while (*p != '\0') {
        char *end;
        unsigned long long at = strtoull(p, &end, 10);
        unsigned long to = end != p && *end == ':' ? strtoul(end + 1, &end, 10) : 0;
        if (to < 1 || to > CF_WORKERS_MAX || (*end != ',' && *end != '\0') ||
            s->nplan == sizeof(s->plan) / sizeof(s->plan[0]) ||
            (s->nplan > 0 && at <= s->plan[s->nplan - 1].at)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "debug.rescale_at: '%s' is not a list of INDEX:WORKERS with "
                              "increasing indexes (at most 8, workers 1..%d)",
                              spec, CF_WORKERS_MAX);
        }
        s->plan[s->nplan].at = at;
        s->plan[s->nplan++].to = (unsigned)to;
        p = *end == ',' ? end + 1 : end;
    }
    return CF_OK;
}

uint64_t cf_secure_event_fingerprint(const cf_event *ev)
{
    cf_event e = *ev;
    uint8_t enc[CF_AUDIT_EVENT_ENC_MAX];
    uint64_t fp = 0;
    e.seq = 0; /* the log's index, not part of what the input said */
    e.ingest_ns = 0;
    size_t n = cf_audit_event_encode(&e, enc, sizeof(enc));
    crypto_generichash((uint8_t *)&fp, sizeof(fp), enc, n, NULL, 0);
    return fp;
}

cf_err cf_secure_logged_fingerprints(const cf_config *c, uint64_t from, cf_dedup *d1, cf_dedup *d2,
                                     uint64_t **out, uint64_t *n, char *errstr, size_t errstr_size)
{
    char audit[CF_CONF_STR_MAX + 16], keys[CF_CONF_STR_MAX + 16], seg[CF_CONF_STR_MAX + 48];
    *out = NULL;
    *n = 0;
    snprintf(audit, sizeof(audit), "%s", c->audit_dir);
    if (audit[0] == '\0') {
        snprintf(audit, sizeof(audit), "%s/audit", c->output_dir);
    }
    snprintf(keys, sizeof(keys), "%s", c->keys_dir);
    if (keys[0] == '\0') {
        snprintf(keys, sizeof(keys), "%s/keys", c->output_dir);
    }
    snprintf(seg, sizeof(seg), "%s/00000000000000000000.seg", audit);
    struct stat st;
    if (!c->audit_enabled || (c->output_dir[0] == '\0' && c->audit_dir[0] == '\0') ||
        stat(seg, &st) != 0) {
        return CF_OK; /* no log yet: nothing will be skipped */
    }
    cf_key *dk = NULL;
    cf_audit_reader *rd = NULL;
    uint64_t *fp = NULL, k = 0;
    size_t cap = 0;
    cf_err err = cf_key_load(keys, "data.key", &dk, errstr, errstr_size);
    if (err == CF_OK) {
        err = cf_audit_reader_open(&rd, audit, dk, 0, errstr, errstr_size);
    }
    while (err == CF_OK) {
        cf_audit_entry e;
        err = cf_audit_reader_next(rd, &e, errstr, errstr_size);
        if (err != CF_OK || e.type != CF_AUDIT_REC_BATCH || e.events == NULL) {
            continue;
        }
        for (uint32_t i = 0; i < e.count && err == CF_OK; i++, k++) {
            const cf_event *ev = &e.events[i];
            if (k < from) { /* not read again: only its id counts, as reading it would */
                if (d1 != NULL) {
                    cf_dedup_check(d1, ev->event_id, ev->ts_us);
                }
                if (d2 != NULL) {
                    cf_dedup_check(d2, ev->event_id, ev->ts_us);
                }
                continue;
            }
            if (k - from == cap) {
                size_t nc = cap ? cap * 2 : 4096;
                uint64_t *nf = cf_realloc(fp, nc * sizeof(*fp));
                if (nf == NULL) {
                    err = CF_E_NOMEM;
                    break;
                }
                fp = nf;
                cap = nc;
            }
            fp[k - from] = cf_secure_event_fingerprint(ev);
        }
    }
    cf_audit_reader_destroy(rd);
    cf_key_destroy(dk);
    if (err != CF_E_EOF) {
        cf_free(fp);
        return err;
    }
    *out = fp;
    *n = k;
    return CF_OK;
}

/* The results parameters of this run against those the last signed line recorded: a
 * resumed run with other windows, grouping or min_count would mix two kinds of rows. Read
 * before the outputs are touched, so a refusal leaves them as they were. */
static cf_err check_params_unchanged(cf_secure *s, char *errstr, size_t errstr_size)
{
    if (s->resume_index == 0 || s->conf.recovery_resume_any || s->mode == PROT_NONE) {
        return CF_OK;
    }
    char path[CF_CONF_STR_MAX + 64], line[1400] = "", prev[1400] = "", now[512];
    snprintf(path, sizeof(path), "%s/results.sig.ndjson", s->conf.output_dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return CF_OK;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        snprintf(prev, sizeof(prev), "%s", line);
    }
    fclose(f);
    result_params(s, now, sizeof(now));
    /* the key epoch is not known yet: compare everything before it */
    const char *p = strstr(prev, "\"params\":");
    const char *pe = p != NULL ? strstr(p, ",\"key_epoch\"") : NULL;
    const char *ne = strstr(now, ",\"key_epoch\"");
    if (p == NULL || pe == NULL || ne == NULL) {
        return CF_OK;
    }
    p += 9;
    if ((size_t)(pe - p) != (size_t)(ne - now) || memcmp(p, now, (size_t)(ne - now)) != 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "the configuration changed since the last checkpoint: the results so "
                          "far were made with %.*s}, this run has %.*s}; resuming would mix them. "
                          "Use --fresh to start a new output (the old one is kept aside), or "
                          "--resume to continue anyway",
                          (int)(pe - p), p, (int)(ne - now), now);
    }
    return CF_OK;
}

uint64_t cf_secure_resume_skip(const cf_secure *s)
{
    return s != NULL ? s->resume_events : 0;
}

uint64_t cf_secure_resume_dead(const cf_secure *s)
{
    return s != NULL ? s->resume_dead : 0;
}

bool cf_secure_audits(const cf_secure *s)
{
    return s != NULL && s->audit != NULL;
}

cf_err cf_secure_finish(cf_secure *s, cf_secure_stats *st, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    if (s->audit != NULL) {
        s->end_index = cf_audit_next_index(s->audit); /* the end-of-input frame says it */
    }
    cf__autoscale_stop(s);
    stop_threads(s);
    if (s->group_commit && s->audit != NULL) {
        cf__gateway_checkpoints(s); /* asked for after the write step's last batch */
    }
    if (s->role == CF_ROLE_COMBINER && atomic_load(&s->comb_have_end) &&
        cf__net_combiner_signer(s)) {
        ressig_sign(&s->rsig, atomic_load(&s->comb_end_index)); /* every released row */
    }
    if (s->audit != NULL) {
        ressig_sign(&s->rsig, cf_audit_next_index(s->audit)); /* covers every released row */
        err = cf_audit_close(s->audit);
        s->audit = NULL;
        if (err != CF_OK) {
            cf_err_set(err, errstr, errstr_size, "audit log close failed: %s", cf_strerror(err));
        }
    }
    cf_err e2 = outfile_commit(&s->alerts, errstr, errstr_size);
    cf_err e3 = outfile_commit(&s->results, errstr, errstr_size);
    cf_err e4 = outfile_commit(&s->late, errstr, errstr_size);
    cf_err e5 = ressig_commit(&s->rsig, errstr, errstr_size);
    if (err == CF_OK) {
        err = e2 != CF_OK ? e2 : e3 != CF_OK ? e3 : e4 != CF_OK ? e4 : e5;
    }
    if (err == CF_OK && s->pg != NULL) {
        err = pgsink_finish(s->pg, s->end_index, errstr, errstr_size); /* the files are final */
    }
    if (!cf__sink_flush(s) && err == CF_OK) {
        err = cf_err_set(CF_E_TRANSPORT, errstr, errstr_size,
                         "output.nats_subject: JetStream did not accept every output line (the "
                         "files have them; a run over the same input publishes the rest)");
    }
    if (err == CF_OK && atomic_load(&s->net_failed)) {
        err = cf_err_set(CF_E_TRANSPORT, errstr, errstr_size,
                         "the JetStream transport failed (see the error above); a restart "
                         "resumes from the last checkpoint");
    }
    s->st.late = atomic_load(&s->late_count);
    s->st.workers = s->mode != PROT_NONE ? s->workers : 0;
    int64_t now = cf_now_ns();
    double span = (double)(now - s->wk_t0_ns);
    double wk = s->wk_ns + (double)s->st.workers * (double)(now - s->wk_t_ns);
    s->st.workers_mean = span > 0 ? wk / span : (double)s->st.workers;
    *st = s->st;
    return err;
}

void cf_secure_serve(cf_secure *s)
{
    cf__net_wait(s);
}

void cf_secure_stop(cf_secure *s)
{
    atomic_store(&s->net_stop, true);
}

void cf_secure_destroy(cf_secure *s)
{
    if (s == NULL) {
        return;
    }
    if (s->role != CF_ROLE_ALL) {
        atomic_store(&s->net_stop, true); /* finished already, or failed: nothing more out */
    }
    cf_secure_gwbatch_free(&s->gw_sync);
    cf__autoscale_stop(s);
    stop_threads(s);
    pgsink_close(s->pg);
    s->pg = NULL;
    cf__sink_close(s);
    cf__net_close(s);
    remove_ephemeral_keys(s);
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        for (unsigned w = 0; w < CF_WORKERS_MAX; w++) {
            party *pa = &s->parties[i][w];
            cf_window_destroy(pa->win);
            cf_sa_party_destroy(pa->sa);
            lane_destroy(&pa->in);
            lane_destroy(&pa->out);
        }
        cf_key_destroy(s->party_keys[i]);
        pthread_mutex_destroy(&s->xchg[i].mu);
        pthread_cond_destroy(&s->xchg[i].cv);
    }
    if (s->dict != NULL) {
        void *item;
        while (cf_ring_pop(s->dict, &item) == CF_OK) {
            cf_free(item);
        }
        cf_ring_destroy(s->dict);
    }
    for (size_t i = 0; i < s->names.cap; i++) {
        cf_free(s->names.slots[i]);
    }
    cf_free(s->names.slots);
    if (s->ckpt_ring != NULL) {
        void *item;
        while (cf_ring_pop(s->ckpt_ring, &item) == CF_OK) {
            cf_free(((ckpt_blob *)item)->data);
            cf_free(item);
        }
        cf_ring_destroy(s->ckpt_ring);
    }
    cf_free(s->announced.keys);
    cf_free(s->announced.used);
    cf_free(s->verdict_buf);
    cf_free(s->verdicts);
    cf_audit_close(s->audit);
    if (s->heads_fd >= 0) {
        close(s->heads_fd);
    }
    outfile_abandon(&s->alerts);
    outfile_abandon(&s->results);
    outfile_abandon(&s->late);
    ressig_close(&s->rsig);
    cf_rules_destroy(s->rules);
    cf_fx_destroy(s->fx);
    cf_sa_gateway_destroy(s->gw);
    cf_sa_combiner_destroy(s->comb);
    cf_sa_auditor_destroy(s->auditor);
    cf_sa_pseudo_destroy(s->attrib_pseudo);
    cf_key_destroy(s->data_key);
    cf_sa_pseudo_destroy(s->pseudo);
    cf_key_destroy(s->gw_key);
    cf_key_destroy(s->comb_key);
    cf_key_destroy(s->pseudo_key);
    cf_free(s);
}
