/*
 * confide bench paper: the paper's evaluation (issue 15) in one invocation, on one input,
 * every configuration side by side:
 *
 *   confide       2-party LSA + adaptive batching + audit log (fsync per batch) + rules
 *   plain         no protection: aggregation in the clear, no audit log (same rules, windows,
 *                 batching and outputs): the ceiling of the same pipeline
 *   he            plain, and every event Paillier-2048 encrypted and homomorphically added into
 *                 its group's ciphertext on the pipeline's sink thread (the pipeline has no
 *                 Paillier protector; latency is taken after the add)
 *   tee-model     a MODEL of SGX: plain, and the modelled enclave costs spent (busy-wait) on the
 *                 sink thread: transitions per batch, EPC paging when the working set exceeds
 *                 the usable EPC (parameters in the report, cited)
 *   no-batching   confide with batch.mode fixed:1
 *   no-autoscale  confide's runs; its slo_violation_s from the reactive policy
 *   no-lsa        confide with protect plain
 *   no-audit      confide with audit.enabled false
 *
 * For each: an unpaced run (max events/s, CPU us per event; stopped after --max-seconds), a
 * paced run at --rate (89,000/s, the paper's; a configuration that cannot sustain it runs at
 * 80% of its maximum instead) for the latency CDF, completeness from cf_audit_verify on each
 * run's log (configurations without a log: events through the sink / events accepted), and
 * SLO-violation seconds from the cluster simulator (src/scale) replaying a burst trace with
 * the configuration's measured maximum as one node's capacity.
 *
 * Writes DIR/results.json, DIR/results.csv, DIR/latency_cdf.csv, DIR/report.md and gnuplot
 * PNGs. No assertion on speed: this is a measurement. docs/paper.md explains the method.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/keys.h"
#include "confide/runtime.h"
#include "confide/scale.h"
#include "confide/secagg.h"

#define PROG "confide bench paper"
#define HE_GROUPS 64
#define PAPER_RATE 89000.0

/* ---- the paper's figures (issue 15) ---- */
#define PAPER_P99_MS 178.0
#define PAPER_P99_PM 6.0
#define PAPER_RATE_PM 1200.0
#define PAPER_HE_P99_MS 312.0
#define PAPER_HE_P99_PM 18.0
#define PAPER_HE_CPU_X 4.0
#define PAPER_SGX_P99_MS 192.0
#define PAPER_SGX_P99_PM 9.0

/* ---- the TEE model's parameters (sources in the report and docs/paper.md) ---- */
typedef struct tee_params {
    double transition_cycles; /* one ECALL or OCALL through the SGX SDK (HotCalls: 8,200-17,000) */
    double transitions_per_batch; /* the batch enters the enclave (ECALL), results leave (OCALL) */
    double epc_mib;               /* usable EPC (128 MiB PRM, ~90 MiB for enclave pages) */
    double page_swap_cycles;      /* one EPC page evicted and another loaded (~40,000) */
    double pages_per_event;       /* state pages one event touches (rule state, window group) */
    double ghz;                   /* this machine's clock, to turn cycles into time */
} tee_params;

typedef enum { EXTRA_NONE, EXTRA_HE, EXTRA_TEE } extra_kind;

typedef struct pconf {
    const char *name;
    const char *protect;
    bool audit, fixed1;
    extra_kind extra;
    int reuse; /* >= 0: the runs of that configuration, measured once */
    const char *policy;
    const char *what;
    bool external; /* measured by `confide bench distributed` in a child process */
} pconf;

static const pconf configs[] = {
    {"confide", "lsa", true, false, EXTRA_NONE, -1, "predictive",
     "2-party LSA, adaptive batching, audit log (fsync per batch), rules; predictive "
     "autoscaling",
     false},
    {"plain", "plain", false, false, EXTRA_NONE, -1, "predictive",
     "no protection: aggregation in the clear, no audit log; same rules, windows, batching", false},
    {"he", "plain", false, false, EXTRA_HE, -1, "predictive",
     "plain + Paillier-2048 encrypt and homomorphic add of every event on the sink thread", false},
    {"tee-model", "plain", false, false, EXTRA_TEE, -1, "predictive",
     "MODEL (no SGX here): plain + modelled enclave transitions per batch and EPC paging", false},
    {"no-batching", "lsa", true, true, EXTRA_NONE, -1, "predictive",
     "confide with batch.mode fixed:1 (an audit fsync and signed head per event)", false},
    {"no-autoscale", "lsa", true, false, EXTRA_NONE, 0, "reactive",
     "confide's runs; autoscaling by the reactive policy instead of the predictive one", false},
    {"no-lsa", "plain", true, false, EXTRA_NONE, -1, "predictive",
     "confide with protect plain (aggregation in the clear)", false},
    {"no-audit", "lsa", false, false, EXTRA_NONE, -1, "predictive",
     "confide with audit.enabled false", false},
    {"distributed", "lsa", true, false, EXTRA_NONE, -1, "predictive",
     "confide's roles as processes over a local 1-node NATS JetStream (`confide bench "
     "distributed --nodes 1`, its own input of the same model and scale)",
     true},
};
#define NCONF (sizeof(configs) / sizeof(configs[0]))

typedef struct result {
    bool present;    /* measured in this invocation (distributed may be skipped) */
    bool partial;    /* p99.9 not measured (distributed) */
    bool comp_known; /* completeness measured, also for a partial row */
    double max_eps, cpu_us, max_elapsed_s;
    uint64_t max_events;
    bool stopped_early;
    double paced_rate, paced_eps, cpu_us_paced;
    uint64_t paced_events;
    bool sustained;
    int64_t p50_us, p99_us, p999_us, pmax_us;
    double batch_mean;
    double completeness;
    bool comp_from_log;
    char comp_note[600];
    double slo_violation_s, sim_worker_s, sim_p99_ms;
    cf_hist *lat;
    double ws_mib;
    bool he_exact;
    uint64_t dead_lettered;
} result;

typedef struct opts {
    bool quick, json;
    const char *out, *input, *format;
    uint64_t events, accounts, merchants, he_events, slow_events;
    double rate, max_s, paced_s, sim_s;
    int max_runs;
    const char *sets[16]; /* --set KEY=VALUE, applied to every configuration */
    int n_sets;
    bool no_distributed;
    char dist_reason[256]; /* why distributed was not run */
    tee_params tee;
} opts;

/* ---- run context: the sink hook and the status callback ---- */

typedef struct run_ctx {
    cf_pipeline *p;
    cf_hist *lat;
    uint64_t sink_events;
    extra_kind extra;
    /* he */
    const cf_protector_ops *ops;
    void *st;
    uint8_t *acc, *pay;
    size_t accsz;
    int64_t ref_sum[HE_GROUPS], ref_cnt[HE_GROUPS];
    uint64_t seq;
    bool he_failed;
    /* tee */
    double tee_batch_ns, tee_event_ns;
    /* control, memory, progress */
    double stop_after_s;
    bool stopped;
    long rss_base_kb, rss_max_kb;
    bool tty;
    char label[96];
} run_ctx;

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void spin_ns(double ns)
{
    if (ns <= 0) {
        return;
    }
    int64_t end = cf_now_ns() + (int64_t)ns;
    while (cf_now_ns() < end) {
    }
}

static unsigned he_group(const cf_event *e)
{
    uint64_t h =
        cf_hash_bytes(e->country, 2, 0x5eed) ^ ((uint64_t)e->channel * 0x9E3779B97F4A7C15u);
    return (unsigned)(cf_mix64(h) % HE_GROUPS);
}

static void sink_hook(void *opaque, const cf_batch *b)
{
    run_ctx *c = opaque;
    if (c->extra == EXTRA_TEE) {
        spin_ns(c->tee_batch_ns + c->tee_event_ns * (double)b->n);
    }
    int64_t now = cf_now_ns();
    for (uint32_t i = 0; i < b->n; i++) {
        const cf_event *e = &b->ev[i];
        if (c->extra == EXTRA_HE && !c->he_failed) {
            int64_t vals[CF_SA_DIM_MAX];
            uint8_t *dst[1] = {c->pay};
            unsigned g = he_group(e);
            uint64_t seq = c->seq++;
            if (cf_sa_event_values(e->amount_minor, CF_SA_DIM_DEFAULT, vals) != CF_OK ||
                c->ops->protect(c->st, seq, vals, dst) != CF_OK ||
                c->ops->absorb(c->st, 0, seq, c->pay, c->acc + (size_t)g * c->accsz) != CF_OK ||
                __builtin_add_overflow(c->ref_sum[g], e->amount_minor, &c->ref_sum[g])) {
                c->he_failed = true;
            }
            c->ref_cnt[g]++;
            now = cf_now_ns();
        }
        int64_t us = (now - e->ingest_ns) / 1000;
        cf_hist_record(c->lat, us < 1 ? 1 : us);
    }
    c->sink_events += b->n;
}

static void on_status(void *opaque, const cf_run_status *st)
{
    run_ctx *c = opaque;
    if (!st->final && c->stop_after_s > 0 && st->elapsed_s >= c->stop_after_s && !c->stopped) {
        cf_pipeline_stop(c->p);
        c->stopped = true;
    }
    long rss = rss_kb();
    if (rss > c->rss_max_kb) {
        c->rss_max_kb = rss;
    }
    if (c->tty) {
        char line[256];
        cf_run_status_format(st, line, sizeof(line));
        fprintf(stderr, "\r\033[K%s  %s", c->label, line);
        fflush(stderr);
    }
}

/* ---- one pipeline run ---- */

static int he_setup(run_ctx *c, char *err, size_t errsz)
{
    cf_protect_conf conf;
    memset(&conf, 0, sizeof(conf));
    cf_sa_opts_default(&conf.sa);
    conf.sa.min_count = 1; /* every group is released, so every sum is checked */
    conf.paillier_bits = 2048;
    conf.paillier_engine = CF_PAILLIER_OPENSSL;
    c->ops = &cf_protect_paillier_ops;
    if (c->ops->create(&c->st, &conf, err, errsz) != CF_OK) {
        return -1;
    }
    c->accsz = c->ops->acc_size(c->st);
    c->acc = malloc(HE_GROUPS * c->accsz);
    c->pay = malloc(c->ops->payload_size(c->st, 0));
    if (c->acc == NULL || c->pay == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    for (size_t g = 0; g < HE_GROUPS; g++) {
        c->ops->acc_zero(c->st, c->acc + g * c->accsz);
    }
    return 0;
}

/* Decrypts every group's ciphertext sum and compares it with the plaintext sums. */
static bool he_check(run_ctx *c)
{
    bool exact = !c->he_failed;
    for (size_t g = 0; g < HE_GROUPS && exact; g++) {
        if (c->ref_cnt[g] == 0) {
            continue;
        }
        const void *accs[1] = {c->acc + g * c->accsz};
        uint8_t key[16] = {0};
        cf_sa_result res;
        char err[256];
        int64_t sum = 0;
        exact = c->ops->combine(c->st, 0, key, accs, &res, err, sizeof(err)) == CF_OK &&
                cf_sa_join_amount(res.v[CF_SA_C_AMOUNT], res.v[CF_SA_C_AMOUNT_HI], &sum) &&
                sum == c->ref_sum[g] && res.v[CF_SA_C_COUNT] == c->ref_cnt[g];
    }
    return exact;
}

static void he_teardown(run_ctx *c)
{
    if (c->st != NULL) {
        c->ops->destroy(c->st);
    }
    free(c->acc);
    free(c->pay);
    c->st = NULL;
    c->acc = c->pay = NULL;
}

/* Completeness of a run's audit log: cf_audit_verify (what `confide audit verify` runs) with the
 * run's keys; every accepted event must have exactly one record with its verdict. */
static double verify_log(const char *outdir, uint64_t accepted, char *note, size_t notesz)
{
    char keys[1100], audit[1100], err[512] = "";
    snprintf(keys, sizeof(keys), "%s/keys", outdir);
    snprintf(audit, sizeof(audit), "%s/audit", outdir);
    cf_key *dk = NULL;
    uint8_t pk[CF_KEY_SIGN_PK_LEN], id[CF_KEY_ID_LEN];
    uint32_t epoch = 0;
    double comp = 0;
    if (cf_key_load(keys, "data.key", &dk, err, sizeof(err)) != CF_OK ||
        cf_key_load_signing_pub(keys, pk, id, &epoch, err, sizeof(err)) != CF_OK) {
        snprintf(note, notesz, "keys: %s", err);
        cf_key_destroy(dk);
        return 0;
    }
    cf_audit_verify_opts vo;
    memset(&vo, 0, sizeof(vo));
    vo.data_key = dk;
    vo.public_key = pk;
    vo.public_key_id = id;
    vo.public_key_epoch = epoch;
    cf_audit_report rep;
    cf_err e = cf_audit_verify(audit, &vo, &rep, err, sizeof(err));
    cf_key_destroy(dk);
    if (e != CF_OK && e != CF_E_CORRUPT) {
        snprintf(note, notesz, "verify: %s", err);
        return 0;
    }
    comp = rep.ok ? rep.completeness : 0;
    if (rep.leaves != accepted || rep.events != accepted) {
        double lo = (double)(rep.leaves < accepted ? rep.leaves : accepted);
        double hi = (double)(rep.leaves > accepted ? rep.leaves : accepted);
        comp *= hi > 0 ? lo / hi : 0;
    }
    if (rep.duplicates > 0 && rep.leaves > 0) {
        comp -= (double)rep.duplicates / (double)rep.leaves;
    }
    snprintf(note, notesz,
             "%.60s: %llu leaves, %llu decrypted, %llu verdicts, %llu duplicates, "
             "%llu gaps, %llu/%llu heads valid, accepted %llu",
             rep.ok ? "ok" : rep.bad_reason, (unsigned long long)rep.leaves,
             (unsigned long long)rep.events, (unsigned long long)rep.verdicts,
             (unsigned long long)rep.duplicates, (unsigned long long)rep.gaps,
             (unsigned long long)rep.sth_valid,
             (unsigned long long)(rep.sth_valid + rep.sth_invalid), (unsigned long long)accepted);
    return comp < 0 ? 0 : comp;
}

static int rm_rf(const char *dir)
{
    char cmd[1200];
    if (strchr(dir, '\'') != NULL) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* --set KEY=VALUE overrides, in order, over a configuration's settings. */
static int apply_sets(const opts *o, cf_config *conf, char *err, size_t errsz)
{
    for (int i = 0; i < o->n_sets; i++) {
        const char *eq = strchr(o->sets[i], '=');
        char key[128];
        if (eq == NULL || eq == o->sets[i] || (size_t)(eq - o->sets[i]) >= sizeof(key)) {
            snprintf(err, errsz, "--set %s: expected KEY=VALUE", o->sets[i]);
            return -1;
        }
        memcpy(key, o->sets[i], (size_t)(eq - o->sets[i]));
        key[eq - o->sets[i]] = '\0';
        if (cf_config_set(conf, key, eq + 1, err, errsz) != CF_OK) {
            return -1;
        }
    }
    return 0;
}

/* One run of @p c over buf[0..len) at @p rate (0: unpaced); fills *s and the context's latency
 * histogram; verifies the audit log when the configuration has one. */
static int run_one(const opts *o, const pconf *c, const char *buf, size_t len, double rate,
                   double stop_after_s, const char *tmp, const char *rules_path, run_ctx *ctx,
                   cf_summary *s, double *comp, char *note, size_t notesz)
{
    char err[512] = "", out[600], rate_s[32];
    cf_config *conf = NULL;
    cf_pipeline *p = NULL;
    snprintf(out, sizeof(out), "%s/%s-%s", tmp, c->name, rate > 0 ? "paced" : "max");
    snprintf(rate_s, sizeof(rate_s), "%.0f", rate);
    int rc = -1;
    if (cf_config_create(&conf) != CF_OK ||
        cf_config_set(conf, "protect", c->protect, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "input.rate", rate_s, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "input.format", o->format, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "window.group_by", "country,channel", err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "min_count", "10", err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "output.dir", out, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "audit.enabled", c->audit ? "true" : "false", err, sizeof(err)) !=
            CF_OK ||
        cf_config_set(conf, "rules.file", rules_path, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "status.interval_ms", "200", err, sizeof(err)) != CF_OK ||
        (c->fixed1 && cf_config_set(conf, "batch.mode", "fixed:1", err, sizeof(err)) != CF_OK) ||
        apply_sets(o, conf, err, sizeof(err)) != 0 ||
        cf_pipeline_create(&p, conf, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "\n" PROG ": %s: %s\n", c->name, err);
        goto done;
    }
    ctx->p = p;
    ctx->stop_after_s = stop_after_s;
    ctx->stopped = false;
    ctx->rss_base_kb = ctx->rss_max_kb = rss_kb();
    cf_pipeline_set_input_buffer(p, buf, len);
    cf_pipeline_set_sink_hook(p, sink_hook, ctx);
    cf_pipeline_set_status_cb(p, on_status, ctx);
    if (cf_pipeline_run(p, s, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "\n" PROG ": %s: %s\n", c->name, err);
        goto done;
    }
    if (c->audit) {
        *comp = verify_log(out, s->accepted, note, notesz);
    } else {
        *comp = s->accepted > 0 ? (double)ctx->sink_events / (double)s->accepted : 0;
        snprintf(note, notesz, "no audit log: %llu events through the sink of %llu accepted",
                 (unsigned long long)ctx->sink_events, (unsigned long long)s->accepted);
    }
    rc = 0;
done:
    cf_pipeline_destroy(p);
    cf_config_destroy(conf);
    ctx->p = NULL;
    if (rm_rf(out) != 0) {
        fprintf(stderr, PROG ": could not remove %s\n", out);
    }
    return rc;
}

/* ---- distributed: `confide bench distributed --nodes 1` in a child process ---- */

/* The number after "key": in the JSON object starting at @p obj (up to its '}'); NAN if none. */
static double obj_num(const char *obj, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *end = strchr(obj, '}');
    const char *k = strstr(obj, pat);
    if (k == NULL || (end != NULL && k > end)) {
        return NAN;
    }
    return strtod(k + strlen(pat), NULL);
}

static int run_distributed(const opts *o, result *r, char *why, size_t whysz)
{
    char self[512], cmd[1024];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0 || memchr(self, '\'', (size_t)sl) != NULL) {
        snprintf(why, whysz, "cannot find this executable");
        return -1;
    }
    self[sl] = '\0';
    uint64_t n = o->events < 500000 ? o->events : 500000;
    n = n < 1000 ? 1000 : n;
    snprintf(cmd, sizeof(cmd), "'%s' bench distributed --nodes 1 --events %llu --rate %.0f --json",
             self, (unsigned long long)n, o->rate);
    FILE *p = popen(cmd, "r");
    char out[8192];
    size_t len = 0;
    if (p == NULL) {
        snprintf(why, whysz, "cannot start bench distributed");
        return -1;
    }
    for (size_t got;
         len + 1 < sizeof(out) && (got = fread(out + len, 1, sizeof(out) - 1 - len, p)) > 0;) {
        len += got;
    }
    out[len] = '\0';
    int st = pclose(p);
    char paced_key[64];
    snprintf(paced_key, sizeof(paced_key), "{\"nodes\":1,\"rate\":%.0f,", o->rate);
    const char *un = strstr(out, "{\"nodes\":1,\"rate\":0,");
    const char *pc = strstr(out, paced_key);
    if (st != 0 || un == NULL || pc == NULL || strstr(out, "\"ok\":false") != NULL) {
        snprintf(why, whysz,
                 "`confide bench distributed` failed (exit status %d; its messages "
                 "are above)",
                 st);
        return -1;
    }
    r->max_eps = obj_num(un, "events_per_s");
    r->cpu_us = obj_num(un, "cpu_us_per_event");
    r->max_events = n;
    r->paced_rate = o->rate;
    r->paced_eps = obj_num(pc, "events_per_s");
    r->cpu_us_paced = obj_num(pc, "cpu_us_per_event");
    r->p50_us = (int64_t)llround(obj_num(pc, "p50_ms") * 1000);
    r->p99_us = (int64_t)llround(obj_num(pc, "p99_ms") * 1000);
    r->p999_us = 0;
    if (isnan(r->max_eps) || isnan(r->cpu_us) || isnan(r->cpu_us_paced) || r->max_eps <= 0) {
        snprintf(why, whysz, "`confide bench distributed` printed no numbers");
        return -1;
    }
    r->sustained = r->max_eps >= o->rate;
    r->present = true;
    r->partial = true;
    /* bench distributed verifies the gateway's audit log of each run */
    double cu = obj_num(un, "completeness"), cp = obj_num(pc, "completeness");
    r->comp_known = !isnan(cu) && !isnan(cp) && cu >= 0 && cp >= 0;
    r->completeness = r->comp_known ? (cu < cp ? cu : cp) : 0;
    r->comp_from_log = r->comp_known;
    snprintf(r->comp_note, sizeof(r->comp_note),
             "%s `confide bench distributed --nodes 1 --events %llu --rate %.0f` (its own input); "
             "p50/p99 are its gateway's (ingest -> audited and queued for JetStream), events/s "
             "and CPU end to end over every process including nats-server",
             r->comp_known ? "`confide audit verify` of the gateway's log in both runs of"
                           : "not measured:",
             (unsigned long long)n, o->rate);
    return 0;
}

/* ---- the burst trace and the simulator ---- */

typedef struct timeline {
    cf_sim_tick *t;
    size_t n, cap;
} timeline;

static void on_tick(void *opaque, const cf_sim_tick *t)
{
    timeline *tl = opaque;
    if (tl == NULL) {
        return;
    }
    if (tl->n == tl->cap) {
        size_t nc = tl->cap ? tl->cap * 2 : 256;
        cf_sim_tick *nt = realloc(tl->t, nc * sizeof(*nt));
        if (nt == NULL) {
            return;
        }
        tl->t = nt;
        tl->cap = nc;
    }
    tl->t[tl->n++] = *t;
}

typedef struct trace {
    double *y;
    size_t n, train;
    double interval_s, peak_rate, mean_rate;
} trace;

/* Counts per 1 s of `confide gen --shape burst --rate R` (9 s at R/1.9, 1 s at 10 R/1.9). */
static int make_trace(trace *t, double rate, double seconds)
{
    cf_pacer *pc = NULL;
    char err[256];
    t->interval_s = 1;
    t->n = (size_t)seconds;
    t->train = t->n / 2;
    t->y = calloc(t->n, sizeof(double));
    if (t->y == NULL || cf_pacer_create(&pc, "burst", rate, 1, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, PROG ": burst trace: %s\n", t->y == NULL ? "out of memory" : err);
        return -1;
    }
    int64_t end = (int64_t)t->n * 1000000000;
    for (int64_t ns = cf_pacer_next_ns(pc); ns < end; ns = cf_pacer_next_ns(pc)) {
        t->y[ns / 1000000000] += 1;
    }
    cf_pacer_destroy(pc);
    double sum = 0;
    t->peak_rate = 0;
    for (size_t i = t->train; i < t->n; i++) {
        t->peak_rate = t->y[i] > t->peak_rate ? t->y[i] : t->peak_rate;
        sum += t->y[i];
    }
    t->mean_rate = sum / (double)(t->n - t->train);
    return 0;
}

/* Replays the second half of the trace through a pool of nodes of @p worker_rate events/s each
 * (the same settings as `confide bench autoscale`, SLO p99 200 ms); static runs
 * @p static_workers. */
static int simulate(const trace *t, double worker_rate, const char *policy, uint32_t static_workers,
                    timeline *tl, cf_sim_result *res)
{
    char err[512];
    cf_sim_opts so;
    cf_sim_opts_default(&so);
    so.startup_s = 20;
    so.slo_ms = 200;
    so.worker_rate = worker_rate;
    so.batch_cost_s = 0.5 / worker_rate;
    cf_policy_opts po;
    cf_policy_opts_default(&po);
    po.down_delay_s = 3 * t->interval_s;
    po.cooldown_s = 3 * t->interval_s;
    po.stabilization_s = t->interval_s;
    po.lead_s = so.startup_s;
    po.static_workers = static_workers;
    double first = t->y[t->train] / t->interval_s;
    so.initial_workers = (uint32_t)ceil(first / (worker_rate * po.target_util));
    so.initial_workers = so.initial_workers < 1 ? 1 : so.initial_workers;
    so.initial_workers = so.initial_workers > po.max_workers ? po.max_workers : so.initial_workers;
    if (strcmp(policy, "static") == 0) {
        so.initial_workers = static_workers;
    }
    cf_forecaster *fc = NULL;
    cf_policy *p = NULL;
    int rc = -1;
    if (strcmp(policy, "predictive") == 0) {
        cf_forecast_opts fo;
        cf_forecast_opts_default(&fo);
        if (cf_forecaster_create(&fc, "seasonal", &fo, err, sizeof(err)) != CF_OK ||
            cf_forecaster_fit(fc, t->y, t->train, err, sizeof(err)) != CF_OK) {
            goto done;
        }
    }
    if (cf_policy_create(&p, policy, &po, fc, err, sizeof(err)) != CF_OK ||
        cf_sim_run(t->y + t->train, t->n - t->train, t->interval_s, &so, p, on_tick, tl, res, err,
                   sizeof(err)) != CF_OK) {
        goto done;
    }
    rc = 0;
done:
    if (rc != 0) {
        fprintf(stderr, PROG ": simulator (%s): %s\n", policy, err);
    }
    cf_policy_destroy(p);
    cf_forecaster_destroy(fc);
    return rc;
}

/* ---- machine ---- */

typedef struct machine {
    char cpu[128], kernel[128], date[32];
    long cores;
    double mem_gib, mhz;
    double load_start, load_end; /* 1-minute load average before and after the runs */
} machine;

static double loadavg(void)
{
    double l = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1) {
            l = 0;
        }
        fclose(f);
    }
    return l;
}

static void machine_info(machine *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->cpu, sizeof(m->cpu), "unknown");
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            continue;
        }
        char *v = colon + 2 <= line + strlen(line) ? colon + 2 : colon + 1;
        v[strcspn(v, "\n")] = '\0';
        if (strncmp(line, "model name", 10) == 0 && strcmp(m->cpu, "unknown") == 0) {
            snprintf(m->cpu, sizeof(m->cpu), "%s", v);
        } else if (strncmp(line, "cpu MHz", 7) == 0 && m->mhz == 0) {
            m->mhz = strtod(v, NULL);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    for (char *c = m->cpu; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\' || *c == ',') {
            *c = ' ';
        }
    }
    f = fopen("/proc/meminfo", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "MemTotal:", 9) == 0) {
            m->mem_gib = strtod(line + 9, NULL) / (1024.0 * 1024.0);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(m->kernel, sizeof(m->kernel), "%.30s %.60s %.20s", u.sysname, u.release,
                 u.machine);
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(m->date, sizeof(m->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- outputs ---- */

static double ms(int64_t us)
{
    return (double)us / 1000.0;
}

static const double cdf_points[] = {0,  1,  5,  10, 20, 30,   40,   50,    60,    70,
                                    80, 90, 95, 98, 99, 99.5, 99.9, 99.95, 99.99, 100};
#define NCDF (sizeof(cdf_points) / sizeof(cdf_points[0]))

static int64_t pct(const cf_hist *h, double p)
{
    if (p >= 100) {
        return cf_hist_max(h);
    }
    return cf_hist_percentile(h, (uint64_t)llround(p * 100), 100);
}

static void write_config_json(FILE *f, const pconf *c, const result *r, bool last)
{
    char p999[32], comp[32];
    snprintf(p999, sizeof(p999), "%.3f", ms(r->p999_us));
    snprintf(comp, sizeof(comp), "%.6f", r->completeness);
    if (r->partial) {
        snprintf(p999, sizeof(p999), "null");
    }
    if (r->partial && !r->comp_known) {
        snprintf(comp, sizeof(comp), "null");
    }
    fprintf(f,
            "    {\"name\":\"%s\",\"max_events_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
            "\"p999_ms\":%s,\"cpu_us_per_event\":%.3f,\"completeness\":%s,"
            "\"slo_violation_s\":%.1f,\"paced_events_per_s\":%.0f,\"cpu_us_per_event_paced\":%.3f,"
            "\"sustained_paper_rate\":%s,"
            "\"completeness_source\":\"%s\",\"policy\":\"%s\",\"model\":%s}%s\n",
            c->name, r->max_eps, ms(r->p50_us), ms(r->p99_us), p999, r->cpu_us, comp,
            r->slo_violation_s, r->paced_rate, r->cpu_us_paced, r->sustained ? "true" : "false",
            r->partial && !r->comp_known ? "not_measured"
            : r->comp_from_log           ? "audit_log"
                                         : "sink_count",
            c->policy, c->extra == EXTRA_TEE ? "true" : "false", last ? "" : ",");
}

static int write_json(const char *path, const opts *o, const machine *m, const result *res,
                      const trace *tr, double ratio_tp_he, double ratio_cpu_he,
                      double ratio_cpu_plain, FILE *also)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    for (int pass = 0; pass < (also != NULL ? 2 : 1); pass++) {
        FILE *w = pass == 0 ? f : also;
        fprintf(w, "{\n  \"configs\": [\n");
        size_t last = 0;
        for (size_t i = 0; i < NCONF; i++) {
            last = res[i].present ? i : last;
        }
        for (size_t i = 0; i < NCONF; i++) {
            if (res[i].present) {
                write_config_json(w, &configs[i], &res[i], i == last);
            }
        }
        fprintf(w, "  ],\n  \"skipped\": [");
        for (size_t i = 0, k = 0; i < NCONF; i++) {
            if (!res[i].present) {
                fprintf(w, "%s{\"name\":\"%s\",\"reason\":\"%s\"}", k++ ? "," : "", configs[i].name,
                        o->dist_reason);
            }
        }
        fprintf(w, "],\n");
        fprintf(w,
                "  \"ratios\": {\"confide_over_he_throughput\":%.1f,"
                "\"he_over_confide_cpu\":%.1f,\"confide_over_plain_cpu\":%.3f},\n",
                ratio_tp_he, ratio_cpu_he, ratio_cpu_plain);
        fprintf(w,
                "  \"input\": {\"source\":\"%s\",\"events\":%llu,\"accounts\":%llu,"
                "\"merchants\":%llu,\"rate\":%.0f,\"paced_seconds\":%.1f,\"max_seconds\":%.1f,"
                "\"he_events\":%llu,\"burst_trace_mean_rate\":%.0f,\"burst_trace_peak_rate\":%.0f,"
                "\"quick\":%s},\n",
                o->input != NULL ? "file" : "generated (FDH model, seed 5)",
                (unsigned long long)o->events, (unsigned long long)o->accounts,
                (unsigned long long)o->merchants, o->rate, o->paced_s, o->max_s,
                (unsigned long long)o->he_events, tr->mean_rate, tr->peak_rate,
                o->quick ? "true" : "false");
        fprintf(w,
                "  \"machine\": {\"cpu\":\"%s\",\"cores\":%ld,\"mhz\":%.0f,\"mem_gib\":%.1f,"
                "\"kernel\":\"%s\",\"compiler\":\"%s\",\"date\":\"%s\","
                "\"loadavg_start\":%.2f,\"loadavg_end\":%.2f}\n}\n",
                m->cpu, m->cores, m->mhz, m->mem_gib, m->kernel, __VERSION__, m->date,
                m->load_start, m->load_end);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int write_csv(const char *path, const result *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "name,max_events_per_s,p50_ms,p99_ms,p999_ms,cpu_us_per_event,completeness,"
               "slo_violation_s\n");
    for (size_t i = 0; i < NCONF; i++) {
        const result *r = &res[i];
        if (!r->present) {
            continue;
        }
        if (r->partial) { /* p99.9 not measured: an empty field */
            char comp[32] = "";
            if (r->comp_known) {
                snprintf(comp, sizeof(comp), "%.6f", r->completeness);
            }
            fprintf(f, "%s,%.0f,%.3f,%.3f,,%.3f,%s,%.1f\n", configs[i].name, r->max_eps,
                    ms(r->p50_us), ms(r->p99_us), r->cpu_us, comp, r->slo_violation_s);
            continue;
        }
        fprintf(f, "%s,%.0f,%.3f,%.3f,%.3f,%.3f,%.6f,%.1f\n", configs[i].name, r->max_eps,
                ms(r->p50_us), ms(r->p99_us), ms(r->p999_us), r->cpu_us, r->completeness,
                r->slo_violation_s);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int write_cdf(const char *path, const result *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "name,percentile,latency_ms\n");
    for (size_t i = 0; i < NCONF; i++) {
        if (!res[i].present || res[i].partial) {
            continue; /* distributed: percentiles of its gateway only, not recorded here */
        }
        for (size_t k = 0; k < NCDF; k++) {
            fprintf(f, "%s,%g,%.3f\n", configs[i].name, cdf_points[k],
                    ms(pct(res[i].lat, cdf_points[k])));
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

typedef struct cdf_acc {
    FILE *g;
    uint64_t total, seen;
} cdf_acc;

static void cdf_bucket(void *opaque, int64_t upper, uint64_t count)
{
    cdf_acc *a = opaque;
    a->seen += count;
    fprintf(a->g, "%.4f %.6f\n", (double)upper / 1000.0,
            100.0 * (double)a->seen / (double)a->total);
}

static int plots(const char *dir, const result *res, const timeline tl[3], const char *tl_names[3],
                 double slo_ms)
{
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, PROG ": gnuplot not installed: no plots\n");
        return -1;
    }
    if (strchr(dir, '\'') != NULL) {
        return -1;
    }
    int rc = 0;
    /* latency CDF per configuration (paced runs) */
    FILE *g = popen("gnuplot", "w");
    if (g == NULL) {
        return -1;
    }
    for (size_t i = 0; i < NCONF; i++) {
        fprintf(g, "$d%zu << EOD\n", i);
        cdf_acc a = {g, cf_hist_count(res[i].lat), 0};
        if (a.total > 0) {
            cf_hist_foreach(res[i].lat, cdf_bucket, &a);
        } else {
            fprintf(g, "1 0\n");
        }
        fprintf(g, "EOD\n");
    }
    fprintf(g,
            "set terminal pngcairo noenhanced size 1200,800 font ',11'\n"
            "set output '%s/latency_cdf.png'\nset grid\nset logscale x\n"
            "set xlabel 'event latency, ingest (scheduled) -> committed (ms, log)'\n"
            "set ylabel 'percent of events'\nset key bottom right\nset yrange [0:100]\n"
            "set title 'confide bench paper: latency CDF per configuration (paced run; "
            "tee-model is a model; no-autoscale = confide)'\nplot ",
            dir);
    for (size_t i = 0, k = 0; i < NCONF; i++) {
        if (configs[i].reuse >= 0 || !res[i].present || res[i].partial) {
            continue; /* the same runs as another configuration, or no distribution */
        }
        fprintf(g, "%s$d%zu using 1:2 with steps lw 2 title '%s @ %.0f/s'", k++ ? ", " : "", i,
                configs[i].name, res[i].paced_rate);
    }
    fprintf(g, "\n");
    rc |= pclose(g) == 0 ? 0 : -1;
    /* throughput against p99 */
    g = popen("gnuplot", "w");
    if (g == NULL) {
        return -1;
    }
    fprintf(g, "$m << EOD\n");
    for (size_t i = 0; i < NCONF; i++) {
        if (configs[i].reuse >= 0 || !res[i].present) {
            continue;
        }
        fprintf(g, "%.1f %.4f %s\n", res[i].max_eps,
                ms(res[i].p99_us) > 0 ? ms(res[i].p99_us) : 0.001, configs[i].name);
    }
    fprintf(g,
            "EOD\n$p << EOD\n%.0f %.1f paper(Flink)\n%.0f %.1f paper-SGX\n%.0f %.1f "
            "paper-HE\nEOD\n",
            PAPER_RATE, PAPER_P99_MS, PAPER_RATE, PAPER_SGX_P99_MS, PAPER_RATE, PAPER_HE_P99_MS);
    fprintf(g,
            "set terminal pngcairo noenhanced size 1200,800 font ',11'\n"
            "set output '%s/throughput_p99.png'\nset grid\nset logscale xy\n"
            "set xlabel 'max sustained events/s (unpaced, log)'\n"
            "set ylabel 'p99 latency at 89,000/s or at 80%% of the max (ms, log)'\n"
            "set title 'confide bench paper: throughput against p99 (this machine) and the "
            "paper'\nset key top right\nset offsets graph 0.05, graph 0.2, graph 0.1, graph "
            "0.1\n"
            "plot $m using 1:2 with points pt 7 ps 2 title 'measured here', "
            "$m using ($1*1.2):2:3 with labels left notitle, "
            "$p using 1:2 with points pt 5 ps 2 title 'the paper (89k/s)', "
            "$p using ($1*0.85):($2*(1+0.12*(column(0)-1))):3 with labels right notitle\n",
            dir);
    rc |= pclose(g) == 0 ? 0 : -1;
    /* autoscaling timeline */
    g = popen("gnuplot", "w");
    if (g == NULL) {
        return -1;
    }
    for (int k = 0; k < 3; k++) {
        fprintf(g, "$t%d << EOD\n", k);
        for (size_t i = 0; i < tl[k].n; i++) {
            const cf_sim_tick *t = &tl[k].t[i];
            fprintf(g, "%.3f %.3f %.3f %u %.4f\n", t->t_s, t->rate, t->forecast_rate, t->workers,
                    t->p99_ms > 0.001 ? t->p99_ms : 0.001);
        }
        if (tl[k].n == 0) {
            fprintf(g, "0 0 0 0 0.001\n");
        }
        fprintf(g, "EOD\n");
    }
    fprintf(g,
            "set terminal pngcairo noenhanced size 1200,1000 font ',10'\n"
            "set output '%s/autoscale_timeline.png'\n"
            "set multiplot layout 3,1 title 'confide bench paper: burst trace in the cluster "
            "simulator, node capacity = peak/32 (simulated)'\n"
            "set grid\nset key outside right\nset xlabel 'simulated time (s)'\n",
            dir);
    fprintf(g, "set ylabel 'events/s'\nplot $t0 using 1:2 with lines lw 2 title 'arrival rate', "
               "$t2 using 1:($3>0?$3:1/0) with lines dt 2 lw 2 title 'predictive forecast'\n");
    fprintf(g, "set ylabel 'nodes'\nplot ");
    for (int k = 0; k < 3; k++) {
        fprintf(g, "%s$t%d using 1:4 with steps lw 2 title '%s'", k ? ", " : "", k, tl_names[k]);
    }
    fprintf(g, "\nset logscale y\nset ylabel 'p99 per interval (ms)'\nplot ");
    for (int k = 0; k < 3; k++) {
        fprintf(g, "%s$t%d using 1:5 with lines lw 2 title '%s'", k ? ", " : "", k, tl_names[k]);
    }
    fprintf(g, ", %g with lines dt 2 lc rgb 'red' title 'SLO'\nunset multiplot\n", slo_ms);
    rc |= pclose(g) == 0 ? 0 : -1;
    return rc;
}

static const char *yes(bool b)
{
    return b ? "**met**" : "**not met**";
}

static void write_report(FILE *f, const opts *o, const machine *m, const result *r, const trace *tr,
                         const cf_sim_result pool[3], const char *pool_names[3],
                         uint32_t pool_static, double pool_rate, const char *cmdline, double wall_s)
{
    const result *cf = &r[0], *pl = &r[1], *he = &r[2], *tee = &r[3];
    fprintf(f, "# confide bench paper (%s)\n\n", m->date);
    fprintf(f,
            "Command: `%s` (wall time %.0f s). Machine: %s, %ld cores at %.0f MHz, %.1f GiB, "
            "%s, compiler %s. Shared with other jobs (1-minute load average %.1f before the "
            "runs, %.1f after, on %ld cores): timings vary from run to run.\n\n",
            cmdline, wall_s, m->cpu, m->cores, m->mhz, m->mem_gib, m->kernel, __VERSION__,
            m->load_start, m->load_end, m->cores);
    char accts[96] = "";
    if (o->input == NULL) {
        snprintf(accts, sizeof(accts), " with %llu accounts and %llu merchants",
                 (unsigned long long)o->accounts, (unsigned long long)o->merchants);
    }
    fprintf(f,
            "Input, the same for every configuration: %s, %llu events%s. Max events/s and CPU "
            "per event come from the fastest of %d unpaced runs, each reading the input from the "
            "start and stopped after %.0f s (he reads its first %llu events, no-batching its "
            "first %llu); the paced runs take the first %.0f s of it at %.0f events/s. Every run "
            "writes the outputs (results, alerts, late, dead letters), screens every event with "
            "the demo's rules (examples/rules.yaml) and aggregates per minute, country and "
            "channel.",
            o->input != NULL ? o->input : "generated with the FDH model (seed 5)",
            (unsigned long long)o->events, accts, o->max_runs, o->max_s,
            (unsigned long long)o->he_events, (unsigned long long)o->slow_events, o->paced_s,
            o->rate);
    for (size_t i = 0; i < NCONF; i++) {
        if (!r[i].present) {
            fprintf(f, " The configuration `%s` is **skipped**: %s.", configs[i].name,
                    o->dist_reason);
        } else if (configs[i].external) {
            fprintf(f,
                    " `%s` is measured by `confide bench distributed --nodes 1` in a child "
                    "process on its own generated input (same model and scale, its own seed): "
                    "its p50/p99 are the gateway's, it reports no p99.9 (n/m below), and its "
                    "completeness is `confide audit verify` on its gateway's log.",
                    configs[i].name);
        }
    }
    fprintf(f, "\n\n");
    fprintf(f, "## Results\n\n");
    fprintf(f, "| config | max events/s | paced at (events/s) | p50 ms | p99 ms | p99.9 ms | CPU "
               "us/event | CPU us/event paced | completeness | SLO violation s | what it is |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (size_t i = 0; i < NCONF; i++) {
        const result *x = &r[i];
        if (!x->present) {
            continue;
        }
        if (x->partial) {
            char comp[32] = "n/m";
            if (x->comp_known) {
                snprintf(comp, sizeof(comp), "%.6f", x->completeness);
            }
            fprintf(f,
                    "| %s | %.0f | %.0f%s | %.3f | %.3f | n/m | %.2f | %.2f | %s | %.1f | %s |\n",
                    configs[i].name, x->max_eps, x->paced_rate,
                    x->sustained ? "" : " (cannot sustain 89k)", ms(x->p50_us), ms(x->p99_us),
                    x->cpu_us, x->cpu_us_paced, comp, x->slo_violation_s, configs[i].what);
            continue;
        }
        fprintf(f,
                "| %s | %.0f | %.0f%s | %.3f | %.3f | %.3f | %.2f | %.2f | %.6f%s | %.1f | %s |\n",
                configs[i].name, x->max_eps, x->paced_rate,
                x->sustained ? "" : " (cannot sustain 89k: 80% of its max)", ms(x->p50_us),
                ms(x->p99_us), ms(x->p999_us), x->cpu_us, x->cpu_us_paced, x->completeness,
                x->comp_from_log ? "" : " (sink count)", x->slo_violation_s, configs[i].what);
    }
    fprintf(f, "\n*CPU us/event* is the process's CPU time (every thread, user + system) per "
               "event in the fastest unpaced run: the cost of an event at saturation, the "
               "column the targets use. *CPU us/event paced* is the same in the paced run, "
               "where the stages' threads also spin briefly and sleep between batches, so it "
               "is higher per event when the rate is far below the maximum.\n");
    fprintf(f,
            "\nCompleteness is what `confide audit verify` computes (cf_audit_verify with the "
            "run's data key and signing key: CRCs, decryption, Merkle roots, signed heads, no "
            "gaps, no duplicates), times the share of accepted events that have a record, on "
            "both runs of a configuration (the lower is shown); configurations without an audit "
            "log (plain, he, tee-model, no-audit) have no log to verify, and show the events that "
            "reached the sink over the events accepted instead (marked *sink count*). Details "
            "per run:\n\n");
    for (size_t i = 0; i < NCONF; i++) {
        if (r[i].present) {
            fprintf(f, "- %s: %s\n", configs[i].name, r[i].comp_note);
        }
    }
    fprintf(f, "\n## Side by side with the paper\n\n"
               "| | the paper | measured here | here / paper |\n|---|---:|---:|---:|\n");
    fprintf(f,
            "| confide p99 at 89,000 events/s (paper: Flink, %.0f +- %.0f ms at 89k +- 1.2k) "
            "| %.0f ms | %.3f ms%s | %.4f |\n",
            PAPER_P99_MS, PAPER_P99_PM, PAPER_P99_MS, ms(cf->p99_us),
            cf->sustained ? "" : " (not sustained)", ms(cf->p99_us) / PAPER_P99_MS);
    fprintf(f, "| HE p99 (paper: %.0f +- %.0f ms) | %.0f ms | %.1f ms at %.0f events/s | %.3f |\n",
            PAPER_HE_P99_MS, PAPER_HE_P99_PM, PAPER_HE_P99_MS, ms(he->p99_us), he->paced_rate,
            ms(he->p99_us) / PAPER_HE_P99_MS);
    fprintf(f, "| HE CPU over its plain baseline (paper: about %.0fx) | %.0fx | %.0fx | %.0f |\n",
            PAPER_HE_CPU_X, PAPER_HE_CPU_X, pl->cpu_us > 0 ? he->cpu_us / pl->cpu_us : 0,
            pl->cpu_us > 0 ? he->cpu_us / pl->cpu_us / PAPER_HE_CPU_X : 0);
    fprintf(f,
            "| SGX p99 (paper: %.0f +- %.0f ms, fragile under load) | %.0f ms | %.3f ms "
            "(**model**) at %.0f events/s | %.4f |\n",
            PAPER_SGX_P99_MS, PAPER_SGX_P99_PM, PAPER_SGX_P99_MS, ms(tee->p99_us), tee->paced_rate,
            ms(tee->p99_us) / PAPER_SGX_P99_MS);
    fprintf(f, "| throughput at the paper's rate | %.0f events/s | %.0f events/s max | %.1f |\n\n",
            PAPER_RATE, cf->max_eps, cf->max_eps / PAPER_RATE);
    fprintf(f, "## Ratios, measured in this run\n\n"
               "| config | throughput / plain | CPU / plain | p99 / plain | throughput / he | CPU "
               "/ he | p99 / he |\n|---|---:|---:|---:|---:|---:|---:|\n");
#define RT(a, b) ((b) > 0 ? (double)(a) / (double)(b) : 0)
    for (size_t i = 0; i < NCONF; i++) {
        const result *x = &r[i];
        if (!x->present) {
            continue;
        }
        fprintf(f, "| %s | %.3f | %.3f | %.3f | %.1f | %.5f | %.4f |\n", configs[i].name,
                RT(x->max_eps, pl->max_eps), RT(x->cpu_us, pl->cpu_us), RT(x->p99_us, pl->p99_us),
                RT(x->max_eps, he->max_eps), RT(x->cpu_us, he->cpu_us), RT(x->p99_us, he->p99_us));
    }
    double tp_he = RT(cf->max_eps, he->max_eps), cpu_he = RT(he->cpu_us, cf->cpu_us);
    double cpu_pl = RT(cf->cpu_us, pl->cpu_us);
    bool comp_all = true;
    double comp_min = 1;
    for (size_t i = 0; i < NCONF; i++) {
        if (!r[i].present || (r[i].partial && !r[i].comp_known)) {
            continue;
        }
        comp_all &= r[i].completeness >= 1.0;
        comp_min = r[i].completeness < comp_min ? r[i].completeness : comp_min;
    }
    fprintf(f, "\n## Issue 15's targets (this 2-core machine, this invocation)\n\n");
    fprintf(f, "| target | measured | verdict |\n|---|---|---|\n");
    fprintf(f, "| confide p99 <= 2 ms at 89,000 events/s | %.3f ms at %.0f events/s | %s |\n",
            ms(cf->p99_us), cf->paced_rate, yes(cf->sustained && ms(cf->p99_us) <= 2.0));
    fprintf(f, "| confide >= 1,000,000 events/s sustained | %.0f events/s | %s |\n", cf->max_eps,
            yes(cf->max_eps >= 1e6));
    fprintf(f,
            "| completeness 1.0 in every configuration | min %.6f | %s (plain, he, tee-model, "
            "no-audit: sink count, no log%s) |\n",
            comp_min, yes(comp_all),
            r[NCONF - 1].present && !r[NCONF - 1].comp_known ? "; distributed: not measured"
            : r[NCONF - 1].present                           ? "; distributed: its gateway's log"
                                                             : "");
    fprintf(f, "| >= 1000x he's throughput | %.0fx | %s |\n", tp_he, yes(tp_he >= 1000));
    fprintf(f, "| <= 1/100 of he's CPU per event | 1/%.0f | %s |\n", cpu_he, yes(cpu_he >= 100));
    fprintf(f, "| within 1.5x of plain's CPU per event | %.2fx | %s |\n\n", cpu_pl,
            yes(cpu_pl <= 1.5));
    fprintf(f,
            "## How `he` is measured\n\n"
            "The pipeline has no Paillier protector (protect is lsa, plain or none), so `he` "
            "runs the `plain` configuration and, on the pipeline's sink thread, for every "
            "event: packs (count, amount) into one plaintext (192-bit slots, as "
            "src/secagg/protect.c's paillier protector), encrypts it under a fresh 2048-bit "
            "Paillier key (OpenSSL BIGNUM engine, no precomputed randomness), and multiplies it "
            "into its (country, channel) group's ciphertext (the homomorphic add). An event's "
            "latency is taken after its add, so queueing behind the encryptions (backpressure "
            "to the source) is in the latency; CPU per event is the process's CPU time over "
            "the run (pipeline + Paillier) per event. At the end every group's ciphertext is "
            "decrypted and compared with the plaintext sums: %s. The unpaced run reads the "
            "first %llu events; the paced run is at 80%% of the measured maximum since it "
            "cannot sustain 89,000/s.\n\n",
            he->he_exact ? "exact" : "**NOT exact**", (unsigned long long)o->he_events);
    fprintf(f,
            "## The TEE model (no SGX hardware here: every `tee-model` number is a model)\n\n"
            "`tee-model` runs the `plain` configuration (an enclave computes on plaintext) "
            "and spends, busy-waiting on the sink thread, the modelled enclave costs per batch: "
            "%.0f transitions x %.0f cycles, plus per event %.0f state pages x the probability "
            "that a page is outside the EPC (1 - EPC / working set, 0 while the working set "
            "fits) x %.0f cycles per page swap, at %.2f GHz. Parameters:\n\n",
            o->tee.transitions_per_batch, o->tee.transition_cycles, o->tee.pages_per_event,
            o->tee.page_swap_cycles, o->tee.ghz);
    fprintf(f,
            "- enclave transition (ECALL or OCALL through the SGX SDK): %.0f cycles; Weisse, "
            "Bertacco, Austin, *Regaining Lost Cycles with HotCalls*, ISCA 2017 "
            "(doi:10.1145/3140659.3080208), measure 8,200 to 17,000 cycles per SDK call (we "
            "take the low, warm-cache end: the model favours SGX);\n"
            "- usable EPC: %.0f MiB of the 128 MiB processor-reserved memory of SGX1 (Intel "
            "SGX developer guide, *EPC size*; Arnautov et al., *SCONE*, OSDI 2016, report about "
            "93 MiB usable);\n"
            "- EPC page swap: %.0f cycles (Taassori, Shafiee, Balasubramonian, *VAULT*, ASPLOS "
            "2018: about 40K cycles per swap, with OS call, page copy, integrity-tree "
            "updates);\n"
            "- not modelled (each would make SGX slower): the memory-encryption engine's cost "
            "on cache misses inside the EPC, TLB flushes and cache pollution after each "
            "transition, and side-channel mitigations.\n\n",
            o->tee.transition_cycles, o->tee.epc_mib, o->tee.page_swap_cycles);
    fprintf(f,
            "The working set is measured on the `plain` run as the growth of the process's "
            "resident memory during the run: %.1f MiB (%s the EPC). Fragility under load: "
            "with the same per-event work, the modelled cost per event and the resulting "
            "ceiling when the working set grows past the EPC (more accounts, longer windows):\n\n"
            "| working set | extra us/event (paging) | modelled max events/s |\n|---:|---:|---:|\n",
            pl->ws_mib, pl->ws_mib <= o->tee.epc_mib ? "within" : "beyond");
    static const double ws_x[] = {0, 1.25, 2, 4, 8};
    for (size_t i = 0; i < sizeof(ws_x) / sizeof(ws_x[0]); i++) {
        double ws = i == 0 ? pl->ws_mib : ws_x[i] * o->tee.epc_mib;
        double miss = ws > o->tee.epc_mib ? 1 - o->tee.epc_mib / ws : 0;
        double us = o->tee.pages_per_event * miss * o->tee.page_swap_cycles / (o->tee.ghz * 1e3);
        double base = tee->max_eps > 0 ? 1e6 / tee->max_eps : 0;
        if (i > 0 && pl->ws_mib > o->tee.epc_mib) {
            continue; /* the measured line already pages */
        }
        fprintf(f, "| %.0f MiB%s | %.2f | %.0f |\n", ws, i == 0 ? " (measured)" : "", us,
                base + us > 0 ? 1e6 / (base + us) : 0);
    }
    fprintf(f,
            "\n## Autoscaling (the cluster simulator, src/scale)\n\n"
            "The trace: `confide gen --shape burst` at a mean of %.0f events/s (9 s at R/1.9, "
            "then 1 s at 10 R/1.9; peak %.0f events/s), one point per second, %zu s; the "
            "predictive policy's seasonal forecaster is fitted on the first half, every policy "
            "replays the second half. Node start-up 20 s (as `confide bench autoscale`), SLO "
            "p99 200 ms (slo.p99_ms's default) judged per 1 s slice, 1..64 nodes, one decision "
            "per second, target utilization 0.7, batches of at most 256 events with half an "
            "event's cost per batch, Poisson arrivals (seed 1).\n\n",
            tr->mean_rate * 1.0, tr->peak_rate, tr->n);
    fprintf(f,
            "**slo_violation_s per configuration** (the table above): a pool of nodes replays "
            "the trace. confide's node does %.0f events/s: the trace's peak / 32, as `confide "
            "bench autoscale` sets it, so that the pool has to grow between the base and the "
            "bursts (at confide's measured speed on this machine, %.0f events/s, the whole "
            "trace would need only %.0f node%s at its peak). Every other "
            "configuration's node does that times its measured max events/s over confide's: a "
            "slower pipeline needs more nodes for the same load, 64 at most. confide and the "
            "others scale with the predictive policy, no-autoscale with the reactive one. The "
            "three policies with confide's node (static sized for the peak, %u nodes):\n\n"
            "| policy | SLO violation s | p99 ms | node-seconds | rescales |\n"
            "|---|---:|---:|---:|---:|\n",
            pool_rate, r[0].max_eps, ceil(tr->peak_rate / r[0].max_eps),
            ceil(tr->peak_rate / r[0].max_eps) > 1 ? "s" : "", pool_static);
    for (int k = 0; k < 3; k++) {
        fprintf(f, "| %s | %.1f | %.1f | %.0f | %u |\n", pool_names[k], pool[k].slo_violation_s,
                pool[k].p99_ms, pool[k].worker_s, pool[k].rescales);
    }
    fprintf(f, "\n## Plots\n\n![latency CDF](latency_cdf.png)\n\n![throughput against "
               "p99](throughput_p99.png)\n\n![autoscaling timeline](autoscale_timeline.png)\n\n"
               "Data: results.json, results.csv, latency_cdf.csv (percentiles per "
               "configuration). docs/paper.md explains the method.\n");
}

/* ---- main ---- */

static const char paper_head[] =
    "usage: confide bench paper [--quick] [--out DIR] [--input FILE [--format F]]\n"
    "                           [--json] [options]\n\n"
    "The paper's evaluation in one invocation on one input: confide, plain, he (Paillier\n"
    "2048), tee-model (an SGX cost model), and the ablations no-batching, no-autoscale,\n"
    "no-lsa, no-audit. For each: max events/s, p50/p99/p99.9 at 89,000 events/s, CPU us\n"
    "per event, audit completeness, SLO-violation seconds on a burst trace. Writes\n"
    "DIR/results.json, results.csv, latency_cdf.csv, report.md and PNG plots (gnuplot).\n"
    "docs/paper.md explains every number. A run takes about 5 minutes (--quick: <1).\n\n";

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static size_t prefix(const opts *o, const char *buf, size_t len, uint64_t n)
{
    if (strcmp(o->format, "ndjson") == 0) {
        return n == 0 ? 0 : cf_bench_prefix_len(buf, len, n - 1);
    }
    return cf_bench_prefix_len(buf, len, n);
}

/* --quick: the smoke test's sizes, applied before every other option (which override them). */
static int quick_preset(void *opaque, const char *v, char *err, size_t size)
{
    opts *o = opaque;
    (void)v, (void)err, (void)size;
    o->quick = true;
    o->events = 200000;
    o->max_s = 1;
    o->paced_s = 1;
    o->he_events = 100;
    o->slow_events = 2000;
    o->sim_s = 120;
    o->max_runs = 1;
    return 0;
}

/* Returns CLI_CONTINUE or the exit code. */
static int parse(int argc, char **argv, opts *o)
{
    cli_list sets = {.v = o->sets, .max = sizeof(o->sets) / sizeof(o->sets[0])};
    uint32_t max_runs = 0;
    bool max_runs_given = false;
    const cli_opt copts[] = {
        {.name = "quick",
         .type = CLI_FN,
         .fn = quick_preset,
         .flags = CLI_FIRST,
         .help = "200,000 events, 1 s runs, one run each, a 120 s trace (smoke test)"},
        {.name = "out",
         .type = CLI_STR,
         .str = &o->out,
         .arg = "DIR",
         .help = "output directory (default paper-results)"},
        {.name = "input",
         .type = CLI_STR,
         .str = &o->input,
         .arg = "FILE",
         .help = "read the input from FILE instead of generating it"},
        {.name = "format",
         .type = CLI_STR,
         .str = &o->format,
         .arg = "F",
         .help = "csv (default), ndjson or fdh, for --input"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &o->json,
         .help = "also print results.json on stdout"},
        {.name = "events",
         .type = CLI_U64,
         .u64 = &o->events,
         .arg = "N",
         .min = 1,
         .max = 1e9,
         .help = "generated events (default 3000000)"},
        {.name = "accounts",
         .type = CLI_U64,
         .u64 = &o->accounts,
         .arg = "A",
         .min = 1,
         .max = 1e7,
         .help = "distinct accounts of the generated input (default 20000)"},
        {.name = "merchants",
         .type = CLI_U64,
         .u64 = &o->merchants,
         .arg = "M",
         .min = 1,
         .max = 1e7,
         .help = "distinct merchants (default 40000)"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &o->rate,
         .arg = "R",
         .min = 1,
         .max = 1e9,
         .help = "paced rate, events/s (default 89000, the paper's)"},
        {.name = "paced-seconds",
         .type = CLI_DBL,
         .dbl = &o->paced_s,
         .arg = "S",
         .min = 0.1,
         .max = 3600,
         .help = "length of each paced run (default 10)"},
        {.name = "max-seconds",
         .type = CLI_DBL,
         .dbl = &o->max_s,
         .arg = "S",
         .min = 0.1,
         .max = 3600,
         .help = "unpaced runs stop after S s (default 10)"},
        {.name = "max-runs",
         .type = CLI_U32,
         .u32 = &max_runs,
         .given = &max_runs_given,
         .arg = "N",
         .min = 1,
         .max = 100,
         .help = "unpaced runs per configuration; the fastest counts (default 2)"},
        {.name = "no-distributed",
         .type = CLI_FLAG,
         .flag = &o->no_distributed,
         .help = "skip `distributed` (confide bench distributed --nodes 1, run\n"
                 "when nats-server is installed; never with --quick)"},
        {.name = "set",
         .type = CLI_LIST,
         .list = &sets,
         .arg = "KEY=VALUE",
         .help = "a config key (docs/CONFIG.md) for every configuration, after\n"
                 "the configuration's own settings (repeatable, up to 16)"},
        {.name = "he-events",
         .type = CLI_U64,
         .u64 = &o->he_events,
         .arg = "N",
         .min = 1,
         .max = 1e7,
         .help = "events of he's unpaced run (default 2000)"},
        {.name = "no-batching-events",
         .type = CLI_U64,
         .u64 = &o->slow_events,
         .arg = "N",
         .min = 1,
         .max = 1e9,
         .help = "events of no-batching's unpaced run (default 30000)"},
        {.name = "trace-seconds",
         .type = CLI_DBL,
         .dbl = &o->sim_s,
         .arg = "S",
         .min = 20,
         .max = 86400,
         .help = "length of the burst trace (default 600)"},
        {.name = "tee-transition-cycles",
         .type = CLI_DBL,
         .dbl = &o->tee.transition_cycles,
         .arg = "C",
         .min = 0,
         .max = 1e9,
         .help = "tee-model: cycles per enclave transition (default 8200)"},
        {.name = "tee-epc-mib",
         .type = CLI_DBL,
         .dbl = &o->tee.epc_mib,
         .arg = "M",
         .min = 1,
         .max = 1e6,
         .help = "tee-model: EPC size in MiB (default 90)"},
        {.name = "tee-page-cycles",
         .type = CLI_DBL,
         .dbl = &o->tee.page_swap_cycles,
         .arg = "C",
         .min = 0,
         .max = 1e9,
         .help = "tee-model: cycles per EPC page swap (default 40000)"},
        {.name = "tee-pages-per-event",
         .type = CLI_DBL,
         .dbl = &o->tee.pages_per_event,
         .arg = "P",
         .min = 0,
         .max = 1e6,
         .help = "tee-model: pages touched per event (default 2)"},
    };
    cli_spec spec = {
        .prog = PROG, .head = paper_head, .opts = copts, .n_opts = CLI_N(copts), .ctx = o};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    o->n_sets = (int)sets.n;
    if (max_runs_given) {
        o->max_runs = (int)max_runs;
    }
    cf_config *probe = NULL;
    char err[512] = "";
    int bad = cf_config_create(&probe) != CF_OK || apply_sets(o, probe, err, sizeof(err)) != 0;
    cf_config_destroy(probe);
    if (bad) {
        fprintf(stderr, PROG ": %s\n", err);
        return CF_EXIT_USAGE;
    }
    if (strcmp(o->format, "csv") != 0 && strcmp(o->format, "ndjson") != 0 &&
        strcmp(o->format, "fdh") != 0) {
        fprintf(stderr, PROG ": --format is csv, ndjson or fdh\n");
        return CF_EXIT_USAGE;
    }
    return CLI_CONTINUE;
}

int cf_bench_paper(int argc, char **argv)
{
    opts o = {.out = "paper-results",
              .format = "csv",
              .events = 3000000,
              .accounts = 20000,
              .merchants = 40000,
              .he_events = 2000,
              .slow_events = 30000,
              .rate = PAPER_RATE,
              .max_s = 10,
              .paced_s = 10,
              .sim_s = 600,
              .max_runs = 2,
              .tee = {8200, 2, 90, 40000, 2, 0}};
    int prc = parse(argc, argv, &o);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    machine m;
    machine_info(&m);
    m.load_start = loadavg();
    o.tee.ghz = m.mhz > 0 ? m.mhz / 1000.0 : 2.5;
    char cmdline[1024] = "confide bench paper";
    for (int i = 1; i < argc; i++) {
        size_t l = strlen(cmdline);
        snprintf(cmdline + l, sizeof(cmdline) - l, " %s", argv[i]);
    }
    double wall0 = (double)cf_now_ns() / 1e9;
    bool tty = isatty(2) == 1;
    int rc = CF_EXIT_RUNTIME;
    result res[NCONF];
    memset(res, 0, sizeof(res));
    trace tr = {0};
    timeline pool_tl[3];
    memset(pool_tl, 0, sizeof(pool_tl));
    char *buf = NULL;
    size_t len = 0;
    char tmp[] = "/tmp/confide-bench-paper-XXXXXX", rules_path[128];
    bool have_tmp = false;
    if (mkdir(o.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, PROG ": cannot create %s: %s\n", o.out, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    if (mkdtemp(tmp) == NULL) {
        perror(PROG ": mkdtemp");
        return CF_EXIT_RUNTIME;
    }
    have_tmp = true;
    if (cf_bench_write_rules(tmp, rules_path, sizeof(rules_path)) != 0) {
        perror(PROG ": rules");
        goto out;
    }
    for (size_t i = 0; i < NCONF; i++) {
        if (cf_hist_create(&res[i].lat) != CF_OK) {
            goto out;
        }
    }
    /* the input */
    if (o.input != NULL) {
        buf = read_file(o.input, &len);
        if (buf == NULL) {
            fprintf(stderr, PROG ": cannot read %s\n", o.input);
            rc = CF_EXIT_USAGE;
            goto out;
        }
        uint64_t lines = 0;
        for (size_t i = 0; i < len; i++) {
            lines += buf[i] == '\n';
        }
        o.events = strcmp(o.format, "ndjson") == 0 || lines == 0 ? lines : lines - 1;
    } else {
        if (tty) {
            fprintf(stderr, "generating %llu events...", (unsigned long long)o.events);
        }
        uint64_t need = o.events;
        buf = cf_bench_gen_csv(PROG, need, (uint32_t)o.accounts, (uint32_t)o.merchants, 5, &len);
        if (buf == NULL) {
            goto out;
        }
    }
    if (make_trace(&tr, o.rate, o.sim_s) != 0) {
        goto out;
    }
    int steps = 0;
    for (size_t i = 0; i < NCONF; i++) {
        steps += configs[i].reuse < 0 && !configs[i].external ? o.max_runs + 1 : 0;
    }
    int step = 0;
    for (size_t i = 0; i < NCONF; i++) {
        const pconf *c = &configs[i];
        result *r = &res[i];
        if (c->external) {
            continue; /* below, after the in-process configurations */
        }
        r->present = true;
        if (c->reuse >= 0) {
            const result *from = &res[c->reuse];
            cf_hist *lat = r->lat;
            *r = *from;
            r->lat = lat;
            cf_hist_merge(r->lat, from->lat);
            snprintf(r->comp_note, sizeof(r->comp_note), "the runs of %s", configs[c->reuse].name);
            continue;
        }
        run_ctx ctx;
        memset(&ctx, 0, sizeof(ctx));
        ctx.extra = c->extra;
        ctx.tty = tty;
        char err[512] = "";
        if (c->extra == EXTRA_TEE) {
            double ws = res[1].ws_mib; /* plain's */
            double miss = ws > o.tee.epc_mib ? 1 - o.tee.epc_mib / ws : 0;
            ctx.tee_batch_ns = o.tee.transitions_per_batch * o.tee.transition_cycles / o.tee.ghz;
            ctx.tee_event_ns = o.tee.pages_per_event * miss * o.tee.page_swap_cycles / o.tee.ghz;
        }
        /* unpaced: the maximum */
        if (c->extra == EXTRA_HE && he_setup(&ctx, err, sizeof(err)) != 0) {
            fprintf(stderr, PROG ": he: %s\n", err);
            he_teardown(&ctx);
            goto out;
        }
        if (cf_hist_create(&ctx.lat) != CF_OK) {
            he_teardown(&ctx);
            goto out;
        }
        /* he and no-batching read a prefix: what sits in the rings when a run is stopped
         * (up to ring_batches x batch_max events) would take minutes to drain at their pace */
        size_t mlen = c->extra == EXTRA_HE ? prefix(&o, buf, len, o.he_events)
                      : c->fixed1          ? prefix(&o, buf, len, o.slow_events)
                                           : len;
        cf_summary s;
        double comp1 = 1, comp2 = 0;
        char note1[280] = "", note2[280] = "";
        int e = 0;
        /* the best of --max-runs unpaced runs (the machine may be shared); completeness is
         * the lowest of all runs */
        for (int k = 0; k < o.max_runs && e == 0; k++) {
            double ck = 0;
            char nk[280] = "";
            snprintf(ctx.label, sizeof(ctx.label), "[%d/%d] %-12s max  ", ++step, steps, c->name);
            e = run_one(&o, c, buf, mlen, 0, o.max_s, tmp, rules_path, &ctx, &s, &ck, nk,
                        sizeof(nk));
            if (e == 0 && ck <= comp1) {
                comp1 = ck;
                memcpy(note1, nk, sizeof(note1));
            }
            if (e == 0 && s.events_per_s > r->max_eps) {
                r->max_eps = s.events_per_s;
                r->max_events = s.accepted;
                r->max_elapsed_s = s.elapsed_s;
                r->stopped_early = ctx.stopped;
                r->cpu_us = s.accepted > 0 ? 1e6 * s.cpu_s / (double)s.accepted : 0;
                r->ws_mib = (double)(ctx.rss_max_kb - ctx.rss_base_kb) / 1024.0;
                r->dead_lettered = s.dead_lettered;
            }
        }
        r->he_exact = c->extra == EXTRA_HE && e == 0 ? he_check(&ctx) : true;
        cf_hist_destroy(ctx.lat);
        /* paced: the latency, at the paper's rate or at 80% of the maximum */
        r->sustained = r->max_eps >= o.rate;
        r->paced_rate = r->sustained ? o.rate : 0.8 * r->max_eps;
        ctx.lat = r->lat;
        ctx.sink_events = 0;
        snprintf(ctx.label, sizeof(ctx.label), "[%d/%d] %-12s %.0f/s", ++step, steps, c->name,
                 r->paced_rate);
        uint64_t pn = (uint64_t)(r->paced_rate * o.paced_s);
        pn = pn < 1 ? 1 : pn;
        if (e == 0 && r->paced_rate > 0) {
            e = run_one(&o, c, buf, prefix(&o, buf, len, pn), r->paced_rate, 3 * o.paced_s + 5, tmp,
                        rules_path, &ctx, &s, &comp2, note2, sizeof(note2));
        }
        if (c->extra == EXTRA_HE) {
            r->he_exact &= he_check(&ctx);
        }
        he_teardown(&ctx);
        if (tty) {
            fprintf(stderr, "\r\033[K");
        }
        if (e != 0) {
            goto out;
        }
        r->paced_eps = s.events_per_s;
        r->cpu_us_paced = s.accepted > 0 ? 1e6 * s.cpu_s / (double)s.accepted : 0;
        r->paced_events = s.accepted;
        r->batch_mean = s.batch_mean;
        r->p50_us = pct(r->lat, 50);
        r->p99_us = pct(r->lat, 99);
        r->p999_us = pct(r->lat, 99.9);
        r->pmax_us = cf_hist_max(r->lat);
        r->completeness = comp1 < comp2 ? comp1 : comp2;
        r->comp_from_log = c->audit;
        snprintf(r->comp_note, sizeof(r->comp_note), "max run: %s; paced run: %s", note1, note2);
        if (!o.json) {
            printf("%-12s max %9.0f ev/s  cpu %8.2f us/ev  paced %6.0f/s p50 %8.3f p99 %8.3f "
                   "p999 %8.3f ms  completeness %.6f\n",
                   c->name, r->max_eps, r->cpu_us, r->paced_rate, ms(r->p50_us), ms(r->p99_us),
                   ms(r->p999_us), r->completeness);
            fflush(stdout);
        }
    }
    free(buf);
    buf = NULL;
    for (size_t i = 0; i < NCONF; i++) {
        if (!configs[i].external) {
            continue;
        }
        if (o.quick) {
            snprintf(o.dist_reason, sizeof(o.dist_reason),
                     "--quick: not run (it starts nats-server and five processes); run without "
                     "--quick");
        } else if (o.no_distributed) {
            snprintf(o.dist_reason, sizeof(o.dist_reason), "--no-distributed");
        } else if (system("command -v nats-server >/dev/null 2>&1") != 0) {
            snprintf(o.dist_reason, sizeof(o.dist_reason),
                     "nats-server is not installed (bash scripts/setup.sh installs it)");
        } else {
            if (tty) {
                fprintf(stderr, "\r\033[K[distributed] confide bench distributed --nodes 1 ...\n");
            }
            if (run_distributed(&o, &res[i], o.dist_reason, sizeof(o.dist_reason)) == 0 &&
                !o.json) {
                char comp[32] = "not measured";
                if (res[i].comp_known) {
                    snprintf(comp, sizeof(comp), "%.6f", res[i].completeness);
                }
                printf("%-12s max %9.0f ev/s  cpu %8.2f us/ev  paced %6.0f/s p50 %8.3f p99 %8.3f "
                       "ms (gateway)  completeness %s\n",
                       configs[i].name, res[i].max_eps, res[i].cpu_us, res[i].paced_rate,
                       ms(res[i].p50_us), ms(res[i].p99_us), comp);
                fflush(stdout);
            }
        }
    }
    /* autoscaling: the pool where scaling matters (confide's node = peak / 32), under the
     * three policies; then each configuration with its node scaled by its measured speed */
    if (tty) {
        fprintf(stderr, "\r\033[Ksimulating autoscaling on the burst trace...");
    }
    const char *pool_names[3] = {"static", "reactive", "predictive"};
    cf_sim_result pool[3];
    double pool_rate = tr.peak_rate / 32;
    uint32_t pool_static = (uint32_t)ceil(tr.peak_rate / (pool_rate * 0.7));
    pool_static = pool_static > 64 ? 64 : pool_static;
    for (int k = 0; k < 3; k++) {
        if (simulate(&tr, pool_rate, pool_names[k], pool_static, &pool_tl[k], &pool[k]) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < NCONF; i++) {
        cf_sim_result sr;
        if (!res[i].present) {
            continue;
        }
        double node = pool_rate * res[i].max_eps / res[0].max_eps;
        if (!(node > 0) || simulate(&tr, node, configs[i].policy, pool_static, NULL, &sr) != 0) {
            goto out;
        }
        res[i].slo_violation_s = sr.slo_violation_s;
        res[i].sim_worker_s = sr.worker_s;
        res[i].sim_p99_ms = sr.p99_ms;
    }
    if (tty) {
        fprintf(stderr, "\r\033[K");
    }
    /* outputs */
    m.load_end = loadavg();
    double tp_he = res[2].max_eps > 0 ? res[0].max_eps / res[2].max_eps : 0;
    double cpu_he = res[0].cpu_us > 0 ? res[2].cpu_us / res[0].cpu_us : 0;
    double cpu_pl = res[1].cpu_us > 0 ? res[0].cpu_us / res[1].cpu_us : 0;
    char path[1200];
    snprintf(path, sizeof(path), "%s/results.json", o.out);
    if (write_json(path, &o, &m, res, &tr, tp_he, cpu_he, cpu_pl, o.json ? stdout : NULL) != 0) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/results.csv", o.out);
    if (write_csv(path, res) != 0) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/latency_cdf.csv", o.out);
    if (write_cdf(path, res) != 0) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    if (plots(o.out, res, pool_tl, pool_names, 200) != 0) {
        fprintf(stderr, PROG ": some plots were not written\n");
    }
    snprintf(path, sizeof(path), "%s/report.md", o.out);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, PROG ": cannot write %s\n", path);
        goto out;
    }
    write_report(f, &o, &m, res, &tr, pool, pool_names, pool_static, pool_rate, cmdline,
                 (double)cf_now_ns() / 1e9 - wall0);
    if (fclose(f) != 0) {
        goto out;
    }
    if (!o.json) {
        printf("confide / he throughput %.0fx, he / confide CPU %.0fx, confide / plain CPU "
               "%.2fx\nwritten: %s/{results.json,results.csv,latency_cdf.csv,report.md,*.png}\n",
               tp_he, cpu_he, cpu_pl, o.out);
    }
    rc = CF_EXIT_OK;
out:
    free(buf);
    free(tr.y);
    for (int k = 0; k < 3; k++) {
        free(pool_tl[k].t);
    }
    for (size_t i = 0; i < NCONF; i++) {
        cf_hist_destroy(res[i].lat);
    }
    if (have_tmp && rm_rf(tmp) != 0) {
        fprintf(stderr, PROG ": could not remove %s\n", tmp);
    }
    return rc;
}
