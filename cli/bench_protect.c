/*
 * confide bench protect: the per-event cost of protecting events for aggregation, for the
 * three protectors behind cf_protector_ops, measured in one run on the same generated events.
 *
 * Per event the measured work is everything the deployment spends CPU on for that event:
 * the gateway (pseudonymize the merchant id, protect the value vector) and every party
 * (fold the event into its per-group accumulator). It runs on one thread, so events/s is per
 * core; time is process CPU time (cf_cpu_s). The combiner works per group, not per event
 * (check the MAC for lsa, decrypt for paillier), so it is reported separately per group
 * (combine_ns_per_group). The gateway pass runs first over all events (its share of the
 * time is gateway_ns_per_event), then each party folds all its payloads. The combined results
 * are compared with plaintext sums, so a fast but wrong protector fails the bench.
 *
 * Events: merchants drawn from a skewed (Zipf-like, s ~ 1) population, amounts in cents
 * with 5% refunds, like a real acquirer's stream. Paillier runs on fewer events (it is slow).
 */
#include <dirent.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/core.h"
#include "confide/keys.h"
#include "confide/secagg.h"

typedef struct events {
    size_t n;
    uint32_t *merchant; /* index into the population */
    int64_t *amount;
} events;

typedef struct measurement {
    const char *name;
    size_t events;
    double cpu_s;      /* gateway + every party, all events */
    double gateway_ns; /* the gateway's part of ns_per_event */
    double combine_ns; /* per group with events, combiner */
    size_t groups;
    double bytes_per_event;
    double hit_rate;
    bool exact;
    bool verified;
} measurement;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void)
{
    /* splitmix64: reproducible event streams across runs */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int make_events(events *ev, size_t n, uint32_t merchants)
{
    ev->n = n;
    ev->merchant = malloc(n * sizeof(uint32_t));
    ev->amount = malloc(n * sizeof(int64_t));
    if (ev->merchant == NULL || ev->amount == NULL) {
        return -1;
    }
    /* inverse-CDF sampling of a Zipf-like law: rank ~ exp(u * ln(M)) */
    double lnm = log((double)merchants);
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rng() >> 11) / 9007199254740992.0;
        uint32_t m = (uint32_t)exp(u * lnm) - 1;
        ev->merchant[i] = m < merchants ? m : merchants - 1;
        int64_t cents = 100 + (int64_t)(rng() % 20000);
        ev->amount[i] = rng() % 20 == 0 ? -cents : cents;
    }
    return 0;
}

static int merchant_id(uint32_t m, char *buf)
{
    return snprintf(buf, 24, "MRC%08u", m);
}

/*
 * Runs @p ops over the first @p n events with one accumulator per (merchant, party).
 */
static int measure(const cf_protector_ops *ops, const cf_protect_conf *conf, const cf_key *pkey,
                   const events *ev, size_t n, uint32_t merchants, size_t cache_slots,
                   measurement *out)
{
    char err[256] = "";
    void *st = NULL;
    cf_sa_pseudo *ps = NULL;
    uint8_t *acc = NULL;
    uint8_t *pay[CF_KEY_PARTIES_MAX] = {NULL};
    int64_t *ref_sum = NULL, *ref_cnt = NULL;
    uint8_t *touched = NULL;
    cf_sa_meta *meta = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->name = ops->name;
    out->events = n;
    if (ops->create(&st, conf, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "bench protect: %s: %s\n", ops->name, err);
        goto done;
    }
    if (cf_sa_pseudo_create(&ps, pkey, cache_slots == 0 ? 64 : cache_slots, err, sizeof(err)) !=
        CF_OK) {
        fprintf(stderr, "bench protect: %s\n", err);
        goto done;
    }
    unsigned k = ops->parties(st);
    size_t accsz = ops->acc_size(st);
    acc = malloc((size_t)merchants * k * accsz);
    ref_sum = calloc(merchants, sizeof(int64_t));
    ref_cnt = calloc(merchants, sizeof(int64_t));
    if (acc == NULL || ref_sum == NULL || ref_cnt == NULL) {
        goto done;
    }
    double bytes = 0;
    size_t psize[CF_KEY_PARTIES_MAX];
    for (unsigned i = 0; i < k; i++) {
        psize[i] = ops->payload_size(st, i);
        pay[i] = malloc(n * psize[i] + 1); /* every event's payload, as if sent */
        if (pay[i] == NULL) {
            goto done;
        }
        bytes += (double)(psize[i] + sizeof(cf_sa_meta));
    }
    out->bytes_per_event = bytes;
    meta = malloc(n * sizeof(cf_sa_meta));
    touched = calloc(merchants, 1);
    if (meta == NULL || touched == NULL) {
        goto done;
    }
    for (size_t g = 0; g < (size_t)merchants * k; g++) {
        ops->acc_zero(st, acc + g * accsz);
    }
    bool plain = strcmp(ops->name, "plain") == 0;
    /* gateway: pseudonymize and protect every event */
    double t0 = cf_cpu_s();
    for (size_t e = 0; e < n; e++) {
        uint32_t m = ev->merchant[e];
        char id[24];
        int idlen = merchant_id(m, id);
        cf_sa_meta *mt = &meta[e];
        if (plain) {
            memset(mt->key, 0, sizeof(mt->key));
            memcpy(mt->key, id, (size_t)idlen < sizeof(mt->key) ? (size_t)idlen : 16);
        } else if (cache_slots == 0) {
            cf_sa_pseudonymize_nocache(ps, id, (size_t)idlen, mt->key);
        } else {
            cf_sa_pseudonymize(ps, id, (size_t)idlen, mt->key);
        }
        mt->seq = e;
        mt->ts_us = (int64_t)e;
        int64_t vals[CF_SA_DIM_MAX];
        uint8_t *dst[CF_KEY_PARTIES_MAX];
        for (unsigned i = 0; i < k; i++) {
            dst[i] = pay[i] + e * psize[i];
        }
        if (cf_sa_event_values(ev->amount[e], conf->sa.dim, vals) != CF_OK ||
            ops->protect(st, mt->seq, vals, dst) != CF_OK) {
            fprintf(stderr, "bench protect: %s: protect failed\n", ops->name);
            goto done;
        }
    }
    double t1 = cf_cpu_s();
    /* parties: each folds every event into the event's group */
    for (unsigned i = 0; i < k; i++) {
        for (size_t e = 0; e < n; e++) {
            uint32_t m = ev->merchant[e]; /* stands in for the lookup by meta[e].key */
            if (ops->absorb(st, i, meta[e].seq, pay[i] + e * psize[i],
                            acc + ((size_t)m * k + i) * accsz) != CF_OK) {
                fprintf(stderr, "bench protect: %s: absorb failed\n", ops->name);
                goto done;
            }
        }
    }
    double t2 = cf_cpu_s();
    for (size_t e = 0; e < n; e++) {
        touched[ev->merchant[e]] = 1;
    }
    out->cpu_s = t2 - t0;
    out->gateway_ns = 1e9 * (t1 - t0) / (double)n;
    /* combiner: every group with events, once */
    bool exact = true, verified = true;
    double c0 = cf_cpu_s();
    const void *accs[CF_KEY_PARTIES_MAX];
    uint8_t key[16] = {0};
    for (uint32_t m = 0; m < merchants; m++) {
        cf_sa_result res;
        if (!touched[m]) {
            continue;
        }
        out->groups++;
        for (unsigned i = 0; i < k; i++) {
            accs[i] = acc + ((size_t)m * k + i) * accsz;
        }
        if (ops->combine(st, 0, key, accs, &res, err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "bench protect: %s: %s\n", ops->name, err);
            goto done;
        }
        if (!cf_sa_join_amount(res.v[CF_SA_C_AMOUNT], res.v[CF_SA_C_AMOUNT_HI], &ref_sum[m])) {
            ref_sum[m] = INT64_MIN; /* cannot match: reported as inexact below */
        }
        ref_cnt[m] = res.v[CF_SA_C_COUNT];
        verified &= res.verified;
    }
    out->combine_ns = out->groups > 0 ? 1e9 * (cf_cpu_s() - c0) / (double)out->groups : 0;
    free(touched);
    touched = NULL;
    out->verified = verified;
    /* check against plaintext sums (outside the timed region) */
    for (size_t e = 0; e < n; e++) {
        ref_sum[ev->merchant[e]] -= ev->amount[e];
        ref_cnt[ev->merchant[e]] -= 1;
    }
    for (uint32_t m = 0; m < merchants; m++) {
        exact &= ref_sum[m] == 0 && ref_cnt[m] == 0;
    }
    out->exact = exact;
    cf_sa_pseudo_stats pst;
    cf_sa_pseudo_stats_get(ps, &pst);
    out->hit_rate =
        pst.hits + pst.misses > 0 ? (double)pst.hits / (double)(pst.hits + pst.misses) : 0;
    rc = exact ? 0 : -1;
    if (!exact) {
        fprintf(stderr, "bench protect: %s: combined sums differ from the plaintext sums\n",
                ops->name);
    }
done:
    free(touched);
    free(meta);
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        free(pay[i]);
    }
    free(acc);
    free(ref_sum);
    free(ref_cnt);
    cf_sa_pseudo_destroy(ps);
    if (st != NULL) {
        ops->destroy(st);
    }
    return rc;
}

/* Removes the ephemeral key directory DIR/k and DIR. */
static void remove_tree(const char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/k", dir);
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                char f[512];
                snprintf(f, sizeof(f), "%s/%s", path, de->d_name);
                unlink(f);
            }
        }
        closedir(d);
        rmdir(path);
    }
    rmdir(dir);
}

/* Indexed by cf_paillier_engine. */
static const char *const engine_names[3] = {"openssl", "gmp-sec", "gmp"};

static const char bench_protect_head[] =
    "usage: confide bench protect [--json] [--events N] [--paillier-events N]\n"
    "                             [--parties K] [--merchants M] [--paillier-bits B]\n"
    "                             [--paillier-engine openssl|gmp-sec|gmp]\n"
    "                             [--paillier-pool N] [--pseudonym-cache SLOTS]\n\n"
    "Per-event cost of protection for plain, lsa and paillier on the same generated\n"
    "events: gateway (pseudonymize + protect) and every party (accumulate) per event,\n"
    "the combiner per group; one thread, CPU time.\n\n";
static const char bench_protect_tail[] =
    "\nWith --paillier-pool N a background thread precomputes r^n (off the critical\n"
    "path, not off the CPU: its time is included, it runs on another core).\n";

/* --paillier-engine NAME */
static int parse_engine(void *opaque, const char *v, char *err, size_t size)
{
    int *engine = opaque;
    for (int e = 0; e < 3; e++) {
        if (strcmp(v, engine_names[e]) == 0) {
            *engine = e;
            return 0;
        }
    }
    snprintf(err, size, "--paillier-engine must be openssl, gmp-sec or gmp (got '%s')", v);
    return -1;
}

int cf_bench_protect(int argc, char **argv)
{
    bool json = false;
    uint64_t n = 2000000, npai = 300, parties = 2, merchants = 20000, bits = 2048, pool = 0;
    uint64_t cache_slots = 16384;
    int engine = CF_PAILLIER_OPENSSL;
    const cli_opt opts[] = {
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON object on stdout"},
        {.name = "events",
         .type = CLI_U64,
         .u64 = &n,
         .arg = "N",
         .min = 1,
         .max = 1e12,
         .help = "events (default 2000000)"},
        {.name = "paillier-events",
         .type = CLI_U64,
         .u64 = &npai,
         .arg = "N",
         .min = 1,
         .max = 1e12,
         .help = "events through paillier (default 300)"},
        {.name = "parties",
         .type = CLI_U64,
         .u64 = &parties,
         .arg = "K",
         .min = 2,
         .max = 8,
         .help = "aggregation parties (default 2)"},
        {.name = "merchants",
         .type = CLI_U64,
         .u64 = &merchants,
         .arg = "M",
         .min = 1,
         .max = 10000000,
         .help = "distinct merchants (default 20000)"},
        {.name = "paillier-bits",
         .type = CLI_U64,
         .u64 = &bits,
         .arg = "B",
         .min = 1,
         .max = 65536,
         .help = "Paillier modulus bits (default 2048)"},
        {.name = "paillier-engine",
         .type = CLI_FN,
         .fn = parse_engine,
         .arg = "E",
         .help = "openssl | gmp-sec | gmp (default openssl)"},
        {.name = "paillier-pool",
         .type = CLI_U64,
         .u64 = &pool,
         .arg = "N",
         .max = 1e9,
         .help = "precomputed r^n values (default 0: none)"},
        {.name = "pseudonym-cache",
         .type = CLI_U64,
         .u64 = &cache_slots,
         .arg = "SLOTS",
         .max = 1e9,
         .help = "pseudonym cache slots (default 16384; 0: hash every id, no cache)"},
    };
    cli_spec spec = {.prog = "confide bench protect",
                     .head = bench_protect_head,
                     .tail = bench_protect_tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .ctx = &engine};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (parties < 2 || parties > 8 || merchants > 10000000 || npai > n) {
        fprintf(stderr, "confide bench protect: --parties must be 2..8, --merchants <= 1e7, "
                        "--paillier-events <= --events\n");
        return CF_EXIT_USAGE;
    }

    /* ephemeral keys in a private temporary directory, removed afterwards */
    char dir[] = "/tmp/confide-bench-keys-XXXXXX";
    char err[256] = "";
    int rc = CF_EXIT_RUNTIME;
    cf_key *gw = NULL, *comb = NULL, *pkey = NULL;
    events ev = {0};
    if (mkdtemp(dir) == NULL) {
        perror("confide bench protect: mkdtemp");
        return CF_EXIT_RUNTIME;
    }
    char keydir[64];
    snprintf(keydir, sizeof(keydir), "%s/k", dir);
    if (cf_keys_generate(keydir, (unsigned)parties, 1, 0, err, sizeof(err)) != CF_OK ||
        cf_key_load(keydir, "gateway.key", &gw, err, sizeof(err)) != CF_OK ||
        cf_key_load(keydir, "combiner.key", &comb, err, sizeof(err)) != CF_OK ||
        cf_key_load(keydir, "pseudonym.key", &pkey, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench protect: %s\n", err);
        goto done;
    }
    if (make_events(&ev, n, (uint32_t)merchants) != 0) {
        fprintf(stderr, "confide bench protect: out of memory\n");
        goto done;
    }
    cf_protect_conf conf;
    memset(&conf, 0, sizeof(conf));
    cf_sa_opts_default(&conf.sa);
    conf.sa.parties = (unsigned)parties;
    conf.sa.min_count = 1; /* every group is released, so every sum is checked */
    cf_sa_ctx ctx;         /* the bench's own log and run ids */
    randombytes_buf(&ctx, sizeof(ctx));
    conf.ctx = &ctx;
    conf.gateway_key = gw;
    conf.combiner_key = comb;
    conf.paillier_bits = (unsigned)bits;
    conf.paillier_pool = pool;
    conf.paillier_engine = engine;

    measurement ms[3];
    const cf_protector_ops *ops[3] = {&cf_protect_plain_ops, &cf_protect_lsa_ops,
                                      &cf_protect_paillier_ops};
    for (int t = 0; t < 3; t++) {
        size_t cnt = t == 2 ? npai : n;
        if (measure(ops[t], &conf, pkey, &ev, cnt, (uint32_t)merchants, cache_slots, &ms[t]) != 0) {
            goto done;
        }
    }
    double eps[3];
    for (int t = 0; t < 3; t++) {
        eps[t] = ms[t].cpu_s > 0 ? (double)ms[t].events / ms[t].cpu_s : 0;
    }
    if (json) {
        printf("{\"protectors\":[");
        for (int t = 0; t < 3; t++) {
            printf("%s{\"name\":\"%s\",\"events_per_s_per_core\":%.0f,\"ns_per_event\":%.1f,"
                   "\"bytes_per_event_to_parties\":%.0f,\"events\":%zu,"
                   "\"gateway_ns_per_event\":%.1f,\"combine_ns_per_group\":%.0f,"
                   "\"groups\":%zu,\"pseudonym_cache_hit_rate\":%.4f,"
                   "\"verified\":%s,\"exact\":%s}",
                   t > 0 ? "," : "", ms[t].name, eps[t], 1e9 * ms[t].cpu_s / (double)ms[t].events,
                   ms[t].bytes_per_event, ms[t].events, ms[t].gateway_ns, ms[t].combine_ns,
                   ms[t].groups, t == 0 ? 0.0 : ms[t].hit_rate, ms[t].verified ? "true" : "false",
                   ms[t].exact ? "true" : "false");
        }
        printf("],\"parties\":%zu,\"merchants\":%zu,\"paillier_bits\":%zu,"
               "\"paillier_engine\":\"%s\",\"paillier_pool\":%zu,\"pseudonym_cache_slots\":%zu,"
               "\"lsa_over_paillier\":%.0f}\n",
               parties, merchants, bits, engine_names[engine], pool, cache_slots,
               eps[2] > 0 ? eps[1] / eps[2] : 0);
    } else {
        printf("%-9s %14s %12s %16s %10s\n", "protector", "events/s/core", "ns/event",
               "bytes/event", "events");
        for (int t = 0; t < 3; t++) {
            printf("%-9s %14.0f %12.1f %16.0f %10zu\n", ms[t].name, eps[t],
                   1e9 * ms[t].cpu_s / (double)ms[t].events, ms[t].bytes_per_event, ms[t].events);
        }
        printf("lsa / paillier throughput: %.0fx (k = %zu, %zu merchants, Paillier %zu-bit)\n",
               eps[2] > 0 ? eps[1] / eps[2] : 0, parties, merchants, bits);
    }
    rc = CF_EXIT_OK;
done:
    free(ev.merchant);
    free(ev.amount);
    cf_key_destroy(gw);
    cf_key_destroy(comb);
    cf_key_destroy(pkey);
    remove_tree(dir);
    return rc;
}
