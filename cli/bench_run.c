/*
 * confide bench run: the real `confide run` pipeline, in process, end to end, on one generated
 * stream at realistic key counts, in several configurations side by side (issue 11):
 *   decode_only       parse and pass through (no rules, no audit, no protection): the ceiling
 *   full              rules + audit (fsync per batch) + 2-party LSA + windows + outputs
 *   full_paced        the same, paced open-loop at --rate (the paper's 89,000 events/s)
 *   fsync_none        full with audit.fsync=none
 *   plain             full with protect plain
 *   none_no_rules     protect none, no rules (audit and outputs only)
 *   paced_fixed_<N>, paced_adaptive   full_paced with batch.mode fixed:N (16, 64, 256, 1024)
 *                     and adaptive, one after another (issue 11: adaptive's p99 within 2x of
 *                     the best fixed size at that load, in one run); then a row "batch_check"
 *                     {"name","best_fixed","best_fixed_p99_us","adaptive_p99_us","ratio"}
 *   fsync_floor       the disk alone: 2000 appends of 4 KiB, each followed by fdatasync, in the
 *                     output directory {"name","syncs","p50_us","p99_us","p999_us"}: every
 *                     audited event waits for at least one, so its p99 bounds the paced p99
 *   accounts_<N>      full, unpaced, on a stream with N distinct accounts (the sweep)
 *   full_pg, rows, rows_pg  with --pg CONNINFO: full plus the PostgreSQL sink; a row-heavy run
 *                     (group by merchant, min_count 1) without and with it ("rows","rows_per_s")
 * Each prints {"name","events","events_per_s","cpu_us_per_event","p50_us","p99_us",
 * "p999_us","batch_mean"}. Input generation is not timed. Outputs go to a temporary
 * directory that is removed afterwards. No assertion on speed: this is a measurement.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/io.h"
#include "confide/runtime.h"

/* The demo's rules (examples/rules.yaml) without files, so the benches need no checkout. */
const char cf_bench_rules_yaml[] =
    "rules:\n"
    "  - {id: ctr_single, type: large_amount}\n"
    "  - {id: big, type: large_amount, threshold: \"220.00\"}\n"
    "  - {id: ctr_daily, type: daily_aggregate, variable: account,\n"
    "     threshold: \"10000.00\", max_keys: 100000}\n"
    "  - {id: structuring, type: structuring, threshold: \"10000.00\",\n"
    "     margin_pct: \"10\", min_count: 3, period: 24h}\n"
    "  - {id: velocity_account, type: velocity, variable: account,\n"
    "     hits: 5, period: 12h}\n"
    "  - {id: high_risk_country, type: high_risk_country,\n"
    "     countries: [IR, KP, SY, CU]}\n";

static const char bench_run_head[] =
    "usage: confide bench run [--events N] [--accounts A] [--merchants M] [--rate R]\n"
    "                         [--paced-seconds S] [--no-sweep] [--no-batch-sweep] [--quick]\n"
    "                         [--json]\n\n"
    "The whole `confide run` pipeline in process on one generated stream, in several\n"
    "configurations side by side (decode only, full protection unpaced and paced,\n"
    "fsync none, plain, none without rules), the paced run with fixed batch sizes\n"
    "16/64/256/1024 against adaptive (batch_check: adaptive's p99 over the best fixed\n"
    "size's), the disk's own fdatasync latency (fsync_floor), and a sweep of distinct\n"
    "accounts.\n\n";

char *cf_bench_gen_csv(const char *prog, uint64_t n, uint32_t accounts, uint32_t merchants,
                       uint64_t seed, size_t *len_out)
{
    cf_gen_opts o;
    cf_gen_opts_default(&o);
    o.seed = seed;
    if (accounts > 0) {
        o.customers = accounts;
    }
    if (merchants > 0) {
        o.terminals = merchants;
    }
    o.days = 3650; /* generation stops at n */
    /* The generator links each customer to the terminals within a radius; at a million
     * customers the default radius needs more links than it allows: shrink it so that about
     * 1e8 links (the same expected terminals per customer as 2500 x 40000 at radius 5) fit. */
    double links =
        (double)o.customers * (double)o.terminals * 3.14159265 * o.radius * o.radius / 1e4;
    if (links > 1e8) {
        o.radius *= __builtin_sqrt(1e8 / links);
    }
    cf_gen *g = NULL;
    char err[256];
    if (cf_gen_create(&g, &o, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return NULL;
    }
    size_t cap = (size_t)n * 128 + 4096, len = 0;
    char *buf = malloc(cap);
    if (buf != NULL) {
        len += (size_t)snprintf(buf, cap, "%s", cf_csv_header());
    }
    cf_event ev;
    for (uint64_t i = 0; buf != NULL && i < n && cf_gen_next(g, &ev) == CF_OK; i++) {
        if (cap - len < 1024) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        len += cf_event_to_csv(&ev, buf + len, cap - len);
    }
    cf_gen_destroy(g);
    if (buf == NULL) {
        fprintf(stderr, "%s: out of memory generating %llu events\n", prog, (unsigned long long)n);
    }
    *len_out = len;
    return buf;
}

size_t cf_bench_prefix_len(const char *buf, size_t len, uint64_t n)
{
    size_t at = 0;
    for (uint64_t k = 0; at < len && k <= n; k++) {
        const char *nl = memchr(buf + at, '\n', len - at);
        at = nl != NULL ? (size_t)(nl - buf) + 1 : len;
    }
    return at;
}

int cf_bench_write_rules(const char *dir, char *path, size_t size)
{
    snprintf(path, size, "%s/rules.yaml", dir);
    FILE *rf = fopen(path, "w");
    if (rf == NULL) {
        return -1;
    }
    bool ok = fputs(cf_bench_rules_yaml, rf) >= 0;
    return fclose(rf) == 0 && ok ? 0 : -1;
}

typedef struct cfg {
    const char *name;
    const char *protect;
    bool rules, audit, paced;
    const char *fsync;
    const char *batch; /* batch.mode; NULL: the default (adaptive) */
} cfg;

/* --pg CONNINFO: configurations named *_pg write to PostgreSQL, rows* group by merchant
 * with min_count 1 (a row per merchant and window: the sink's throughput) */
static const char *bench_pg;

static int run_one(const cfg *c, const char *buf, size_t len, double rate, const char *tmp,
                   const char *rules_path, bool json, bool *first, int64_t *p99_out)
{
    bool pg = strstr(c->name, "_pg") != NULL, heavy = strncmp(c->name, "rows", 4) == 0;
    char err[512] = "", out[600], rate_s[32];
    cf_config *conf = NULL;
    cf_pipeline *p = NULL;
    snprintf(out, sizeof(out), "%s/%s", tmp, c->name);
    snprintf(rate_s, sizeof(rate_s), "%.0f", c->paced ? rate : 0);
    int rc = 1;
    if (cf_config_create(&conf) != CF_OK ||
        cf_config_set(conf, "protect", c->protect, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "input.rate", rate_s, err, sizeof(err)) != CF_OK ||
        cf_config_set(conf, "window.group_by", heavy ? "merchant" : "country,channel", err,
                      sizeof(err)) != CF_OK ||
        cf_config_set(conf, "min_count", heavy ? "1" : "10", err, sizeof(err)) != CF_OK ||
        (pg &&
         (cf_config_set(conf, "output.postgres.conninfo", bench_pg, err, sizeof(err)) != CF_OK ||
          cf_config_set(conf, "output.postgres.table_prefix", "confide_bench_", err, sizeof(err)) !=
              CF_OK)) ||
        (c->audit && cf_config_set(conf, "output.dir", out, err, sizeof(err)) != CF_OK) ||
        (c->fsync != NULL &&
         cf_config_set(conf, "audit.fsync", c->fsync, err, sizeof(err)) != CF_OK) ||
        (c->rules && cf_config_set(conf, "rules.file", rules_path, err, sizeof(err)) != CF_OK) ||
        (c->batch != NULL &&
         cf_config_set(conf, "batch.mode", c->batch, err, sizeof(err)) != CF_OK) ||
        cf_pipeline_create(&p, conf, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "bench run: %s: %s\n", c->name, err);
        goto done;
    }
    cf_pipeline_set_input_buffer(p, buf, len);
    cf_summary s;
    if (cf_pipeline_run(p, &s, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "bench run: %s: %s\n", c->name, err);
        goto done;
    }
    double cpu_us = s.accepted > 0 ? 1e6 * s.cpu_s / (double)s.accepted : 0;
    char rows[96] = "";
    if (pg || heavy) {
        uint64_t n = s.results + s.alerts + s.late;
        snprintf(rows, sizeof(rows),
                 json ? ",\"rows\":%llu,\"rows_per_s\":%.0f" : "  rows %llu (%.0f/s)",
                 (unsigned long long)n, s.elapsed_s > 0 ? (double)n / s.elapsed_s : 0);
    }
    if (json) {
        printf("%s\n  {\"name\":\"%s\",\"events\":%llu,\"events_per_s\":%.0f,"
               "\"cpu_us_per_event\":%.3f,\"p50_us\":%lld,\"p99_us\":%lld,\"p999_us\":%lld,"
               "\"batch_mean\":%.1f%s}",
               *first ? "[" : ",", c->name, (unsigned long long)s.accepted, s.events_per_s, cpu_us,
               (long long)s.p50_us, (long long)s.p99_us, (long long)s.p999_us, s.batch_mean, rows);
    } else {
        printf("%-18s %9llu events %10.0f events/s %7.2f us cpu/event  p50 %7lld  p99 %8lld  "
               "p999 %8lld us  batch %.0f%s\n",
               c->name, (unsigned long long)s.accepted, s.events_per_s, cpu_us, (long long)s.p50_us,
               (long long)s.p99_us, (long long)s.p999_us, s.batch_mean, rows);
    }
    fflush(stdout);
    *first = false;
    if (p99_out != NULL) {
        *p99_out = s.p99_us;
    }
    rc = 0;
done:
    cf_pipeline_destroy(p);
    cf_config_destroy(conf);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* What one fdatasync after a small append costs on this disk now: the floor under the
 * latency of every audited event (fsync per batch), measured in the same invocation. */
static int fsync_floor(const char *tmp, bool json, bool *first)
{
    enum { N = 2000, SZ = 4096 };
    char path[600];
    snprintf(path, sizeof(path), "%s/fsync_floor", tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    int64_t *lat = malloc(N * sizeof(int64_t));
    static char buf[SZ];
    int rc = fd >= 0 && lat != NULL ? 0 : 1;
    for (int i = 0; i < N && rc == 0; i++) {
        int64_t t0 = cf_now_ns();
        if (write(fd, buf, SZ) != SZ || fdatasync(fd) != 0) {
            rc = 1;
        }
        lat[i] = (cf_now_ns() - t0) / 1000;
    }
    if (fd >= 0) {
        close(fd);
    }
    unlink(path);
    if (rc != 0) {
        perror("bench run: fsync_floor");
        free(lat);
        return CF_EXIT_RUNTIME;
    }
    qsort(lat, N, sizeof(int64_t), cmp_i64);
    long long p50 = lat[N / 2], p99 = lat[N * 99 / 100], p999 = lat[N * 999 / 1000];
    if (json) {
        printf("%s\n  {\"name\":\"fsync_floor\",\"syncs\":%d,\"p50_us\":%lld,\"p99_us\":%lld,"
               "\"p999_us\":%lld}",
               *first ? "[" : ",", N, p50, p99, p999);
    } else {
        printf("%-18s %9d syncs of 4 KiB appends                            p50 %7lld  p99 %8lld  "
               "p999 %8lld us\n",
               "fsync_floor", N, p50, p99, p999);
    }
    fflush(stdout);
    *first = false;
    free(lat);
    return CF_EXIT_OK;
}

/* The paced run with fixed batch sizes and adaptive, one after another in this invocation,
 * and how adaptive's p99 compares with the best fixed size's (issue 11: within 2x). */
static int batch_sweep(const char *buf, size_t len, double rate, const char *tmp,
                       const char *rules_path, bool json, bool *first)
{
    static const char *const sizes[] = {"16", "64", "256", "1024"};
    int64_t best = 0, adaptive = 0;
    const char *best_n = "";
    for (size_t i = 0; i <= sizeof(sizes) / sizeof(sizes[0]); i++) {
        bool fixed = i < sizeof(sizes) / sizeof(sizes[0]);
        char name[32], mode[32];
        snprintf(name, sizeof(name), fixed ? "paced_fixed_%s" : "paced_adaptive",
                 fixed ? sizes[i] : "");
        snprintf(mode, sizeof(mode), "fixed:%s", fixed ? sizes[i] : "");
        cfg c = {name, "lsa", true, true, true, NULL, fixed ? mode : "adaptive"};
        int64_t p99 = 0;
        if (run_one(&c, buf, len, rate, tmp, rules_path, json, first, &p99) != 0) {
            return CF_EXIT_RUNTIME;
        }
        if (!fixed) {
            adaptive = p99;
        } else if (best == 0 || p99 < best) {
            best = p99;
            best_n = sizes[i];
        }
    }
    double ratio = best > 0 ? (double)adaptive / (double)best : 0;
    if (json) {
        printf(",\n  {\"name\":\"batch_check\",\"best_fixed\":%s,\"best_fixed_p99_us\":%lld,"
               "\"adaptive_p99_us\":%lld,\"ratio\":%.2f}",
               best_n, (long long)best, (long long)adaptive, ratio);
    } else {
        printf("batch_check        adaptive p99 %lld us = %.2fx the best fixed size's (fixed:%s, "
               "%lld us)%s\n",
               (long long)adaptive, ratio, best_n, (long long)best,
               ratio <= 2.0 ? "" : ": more than 2x");
    }
    fflush(stdout);
    return CF_EXIT_OK;
}

int cf_bench_run(int argc, char **argv)
{
    uint64_t events = 2000000, accounts = 20000, merchants = 40000;
    double rate = 89000, paced_s = 5;
    bool json = false, sweep = true, quick = false;
    bool no_sweep = false, no_batch_sweep = false;
    const cli_opt opts[] = {
        {.name = "events",
         .type = CLI_U64,
         .u64 = &events,
         .arg = "N",
         .help = "events of the unpaced runs (default 2000000)"},
        {.name = "accounts",
         .type = CLI_U64,
         .u64 = &accounts,
         .arg = "A",
         .max = UINT32_MAX,
         .help = "distinct accounts (customers) (default 20000)"},
        {.name = "merchants",
         .type = CLI_U64,
         .u64 = &merchants,
         .arg = "M",
         .max = UINT32_MAX,
         .help = "distinct merchants (terminals) (default 40000)"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &rate,
         .arg = "R",
         .help = "paced rate, events/s (default 89000, the paper's)"},
        {.name = "paced-seconds",
         .type = CLI_DBL,
         .dbl = &paced_s,
         .arg = "S",
         .help = "length of the paced run (default 5)"},
        {.name = "no-sweep",
         .type = CLI_FLAG,
         .flag = &no_sweep,
         .help = "skip the 10k / 100k / 1M accounts sweep"},
        {.name = "no-batch-sweep",
         .type = CLI_FLAG,
         .flag = &no_batch_sweep,
         .help = "skip the paced fixed 16/64/256/1024 vs adaptive rows"},
        {.name = "quick",
         .type = CLI_FLAG,
         .flag = &quick,
         .help = "100000 events, 1 s paced, sweep 10k and 100k (a smoke test)"},
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON array on stdout"},
        {.name = "pg",
         .type = CLI_STR,
         .str = &bench_pg,
         .arg = "CONNINFO",
         .help = "also full_pg, rows and rows_pg: the PostgreSQL sink (output.postgres.conninfo; "
                 "the password from PGPASSFILE; tables confide_bench_*)"},
    };
    cli_spec spec = {
        .prog = "confide bench run", .head = bench_run_head, .opts = opts, .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    sweep = !no_sweep;
    if (quick) {
        events = 100000;
        paced_s = 1;
    }
    if (events == 0 || accounts == 0 || merchants == 0 || rate <= 0 || paced_s <= 0) {
        fprintf(stderr, "bench run: counts and rates must be positive\n");
        return CF_EXIT_USAGE;
    }
    char tmp[] = "/tmp/confide-bench-run-XXXXXX", rules_path[128];
    if (mkdtemp(tmp) == NULL) {
        perror("bench run: mkdtemp");
        return CF_EXIT_RUNTIME;
    }
    if (cf_bench_write_rules(tmp, rules_path, sizeof(rules_path)) != 0) {
        perror("bench run: rules");
        return CF_EXIT_RUNTIME;
    }
    size_t len = 0;
    char *buf =
        cf_bench_gen_csv("bench run", events, (uint32_t)accounts, (uint32_t)merchants, 5, &len);
    if (buf == NULL) {
        return CF_EXIT_RUNTIME;
    }
    size_t paced_len = cf_bench_prefix_len(buf, len, (uint64_t)(rate * paced_s));
    const cfg cfgs[] = {
        {"decode_only", "none", false, false, false, NULL, NULL},
        {"full", "lsa", true, true, false, NULL, NULL},
        {"full_paced", "lsa", true, true, true, NULL, NULL},
        {"fsync_none", "lsa", true, true, false, "none", NULL},
        {"plain", "plain", true, true, false, NULL, NULL},
        {"none_no_rules", "none", false, true, false, NULL, NULL},
        {"full_pg", "lsa", true, true, false, NULL, NULL},
        {"rows", "lsa", true, true, false, NULL, NULL},
        {"rows_pg", "lsa", true, true, false, NULL, NULL},
    };
    bool first = true;
    int rc = CF_EXIT_OK;
    if (!json) {
        printf("bench run: %llu events, %llu accounts, %llu merchants; paced at %.0f/s for %.0f "
               "s\n",
               (unsigned long long)events, (unsigned long long)accounts,
               (unsigned long long)merchants, rate, paced_s);
    }
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]) && rc == CF_EXIT_OK; i++) {
        if (i >= 6 && bench_pg == NULL) {
            continue;
        }
        if (run_one(&cfgs[i], buf, cfgs[i].paced ? paced_len : len, rate, tmp, rules_path, json,
                    &first, NULL) != 0) {
            rc = CF_EXIT_RUNTIME;
        }
    }
    if (!no_batch_sweep && rc == CF_EXIT_OK) {
        rc = batch_sweep(buf, paced_len, rate, tmp, rules_path, json, &first);
    }
    if (rc == CF_EXIT_OK) {
        rc = fsync_floor(tmp, json, &first);
    }
    free(buf);
    static const uint64_t sweep_accounts[] = {10000, 100000, 1000000};
    size_t n_sweep = !sweep ? 0 : quick ? 2 : 3;
    for (size_t i = 0; i < n_sweep && rc == CF_EXIT_OK; i++) {
        char name[32];
        snprintf(name, sizeof(name), "accounts_%llu", (unsigned long long)sweep_accounts[i]);
        cfg c = {name, "lsa", true, true, false, NULL, NULL};
        buf = cf_bench_gen_csv("bench run", events, (uint32_t)sweep_accounts[i],
                               (uint32_t)merchants, 5, &len);
        if (buf == NULL || run_one(&c, buf, len, rate, tmp, rules_path, json, &first, NULL) != 0) {
            rc = CF_EXIT_RUNTIME;
        }
        free(buf);
    }
    if (json && !first) {
        printf("\n]\n");
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench run: could not remove %s\n", tmp);
    }
    return rc;
}
