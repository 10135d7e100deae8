/*
 * confide bench engine: single-thread throughput of the window operator and of the
 * compliance rules, on events from the FDH generator (cf_gen_*).
 *
 * A base set of generated events is held in memory and replayed in rounds, each round
 * shifted in event time past the previous one, so windows keep opening and closing and rule
 * state keeps expiring as in a long stream. Timed loops contain only per-event work:
 *   windows: group key (merchant) + cf_window_add (+ firing, result callback, watermark),
 *   rules:   cf_rules_eval with every rule type enabled + cf_verdict_encode + one alert
 *            line per hit.
 * Throughput is reported per CPU second of the measuring thread (= per core) and per wall
 * second; on a shared machine the CPU figure is the stable one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/core.h"
#include "confide/io.h"
#include "confide/rules.h"
#include "confide/window.h"

typedef struct opts {
    uint64_t events;
    uint32_t base;
    uint64_t seed;
    int64_t size_ms;
    int64_t slide_ms;
    double rate;
    const char *group;
    bool json;
} opts;

static const char bench_engine_head[] =
    "usage: confide bench engine [--events N] [--base N] [--size-ms MS] [--slide-ms MS]\n"
    "                            [--rate R] [--group FIELDS] [--seed S] [--json]\n\n";
static const char bench_engine_tail[] =
    "\nThroughput is per CPU second of the measuring thread (per core).\n";

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
    return (double)cf_now_ns() / 1e9;
}

/* ---- windows ---------------------------------------------------------------------------- */

typedef struct wsink {
    uint64_t results;
    uint64_t digest;
} wsink;

/* The digest folds every result in emission order (window, key, value, count, indices,
 * update flag), so two builds of the operator can be compared on the same stream. */
static void on_result(void *opaque, const cf_window_result *r)
{
    wsink *s = opaque;
    const cf_window_plain *v = r->value;
    uint64_t f[8] = {(uint64_t)r->window_start_us,
                     cf_hash_bytes(r->key, r->key_len, 0),
                     (uint64_t)v->sum_minor,
                     (uint64_t)v->overflow,
                     r->count,
                     r->first_index,
                     r->last_index,
                     r->update ? 1u : 0u};
    s->results++;
    s->digest = cf_mix64(s->digest ^ cf_hash_bytes(f, sizeof(f), s->results));
}

typedef struct wout {
    double cpu_s, wall_s;
    uint64_t results;
    uint64_t digest;
    uint64_t keys_peak;
    uint64_t state_bytes_peak;
    size_t entry_bytes;
    uint64_t late;
} wout;

static int bench_windows(const opts *o, const cf_event *base, size_t nbase, wout *out)
{
    unsigned mask = 0;
    char err[256];
    if (cf_window_group_parse(o->group, &mask, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench engine: --group: %s\n", err);
        return CF_EXIT_USAGE;
    }
    wsink sink = {0, 0};
    cf_window_conf c;
    cf_window_conf_default(&c);
    c.size_us = o->size_ms * 1000;
    c.slide_us = o->slide_ms * 1000;
    c.max_delay_us = 1000000;
    c.value = cf_window_plain_ops;
    c.on_result = on_result;
    c.opaque = &sink;
    cf_window *w = NULL;
    if (cf_window_create(&w, &c, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench engine: %s\n", err);
        return CF_EXIT_USAGE;
    }
    /* Event time compressed to o->rate events/s: ts = t0 + i / rate. */
    int64_t span_us = (int64_t)((double)nbase / o->rate * 1e6) + 1;
    uint8_t key[CF_WINDOW_GROUP_KEY_MAX];
    cf_window_stats st;
    uint64_t keys_peak = 0, bytes_peak = 0;
    double c0 = thread_cpu_s(), w0 = wall_s();
    for (uint64_t i = 0; i < o->events; i++) {
        size_t j = (size_t)(i % nbase);
        uint64_t round = i / nbase;
        const cf_event *e = &base[j];
        int64_t ts = (int64_t)round * span_us + (int64_t)((double)j / o->rate * 1e6);
        size_t kl = cf_window_group_key(mask, e, key, sizeof(key));
        cf_window_plain v = {.sum_minor = e->amount_minor, .overflow = 0};
        cf_err er = cf_window_add(w, key, kl, ts, i, &v);
        if (er != CF_OK && er != CF_E_OVERFLOW) {
            fprintf(stderr, "confide bench engine: window add: %s\n", cf_strerror(er));
            cf_window_destroy(w);
            return CF_EXIT_RUNTIME;
        }
        if ((i & 0xFFFF) == 0) {
            cf_window_stats_get(w, &st);
            keys_peak = st.keys_live > keys_peak ? st.keys_live : keys_peak;
            bytes_peak = st.state_bytes > bytes_peak ? st.state_bytes : bytes_peak;
        }
    }
    cf_window_flush(w);
    out->cpu_s = thread_cpu_s() - c0;
    out->wall_s = wall_s() - w0;
    cf_window_stats_get(w, &st);
    out->results = sink.results;
    out->digest = sink.digest;
    out->keys_peak = keys_peak;
    out->state_bytes_peak = bytes_peak;
    out->entry_bytes = st.entry_bytes;
    out->late = st.late_events;
    cf_window_destroy(w);
    return CF_EXIT_OK;
}

/* ---- rules ------------------------------------------------------------------------------ */

typedef struct rout {
    double cpu_s, wall_s;
    uint64_t hits;
    uint64_t alert_bytes;
    size_t rules;
} rout;

static int bench_rules(const opts *o, const cf_event *base, size_t nbase, rout *out)
{
    char dir[] = "/tmp/confide_bench_engine_XXXXXX";
    char list[128], err[512];
    int rc = CF_EXIT_RUNTIME;
    cf_rules *r = NULL;
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "confide bench engine: cannot create a temporary directory\n");
        return CF_EXIT_RUNTIME;
    }
    snprintf(list, sizeof(list), "%s/blocked.txt", dir);
    FILE *f = fopen(list, "w");
    if (f == NULL) {
        fprintf(stderr, "confide bench engine: cannot write %s\n", list);
        rmdir(dir);
        return CF_EXIT_RUNTIME;
    }
    /* 10,000 listed ids, a few of them real customers and terminals of the generator. */
    for (int i = 0; i < 10000; i++) {
        fprintf(f, "%s%d\n", i % 2 ? "C" : "T", i % 100 == 0 ? i : 1000000 + i);
    }
    fclose(f);
    const char *yaml = "rules:\n"
                       "  - {id: big, type: large_amount, threshold: \"220.00\"}\n"
                       "  - {id: ctr, type: large_amount}\n"
                       "  - {id: daily, type: daily_aggregate, threshold: \"500.00\"}\n"
                       "  - {id: smurf, type: structuring, threshold: \"220.00\", margin_pct: "
                       "\"10\", min_count: 3, period: 24h}\n"
                       "  - {id: velo_account, type: velocity, variable: account, hits: 5, "
                       "period: 12h}\n"
                       "  - {id: velo_merchant, type: velocity, variable: merchant, hits: 4, "
                       "period: 24h}\n"
                       "  - {id: blocked, type: blocked_party, fields: [account, merchant], "
                       "file: blocked.txt}\n"
                       "  - {id: hrc, type: high_risk_country, countries: [IR, KP, SY, CU]}\n";
    if (cf_rules_load_string(&r, yaml, strlen(yaml), "bench", dir, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench engine: %s\n", err);
        goto out;
    }
    int64_t t_first = base[0].ts_us, t_last = base[nbase - 1].ts_us;
    int64_t span_us = t_last - t_first + 86400000000LL; /* whole days between rounds */
    span_us -= span_us % 86400000000LL;
    cf_verdict v;
    uint8_t enc[CF_VERDICT_ENCODED_MAX];
    char line[1024];
    uint64_t hits = 0, bytes = 0;
    double c0 = thread_cpu_s(), w0 = wall_s();
    for (uint64_t i = 0; i < o->events; i++) {
        size_t j = (size_t)(i % nbase);
        cf_event e = base[j];
        e.ts_us += (int64_t)(i / nbase) * span_us;
        e.seq = i;
        cf_rules_eval(r, &e, &v);
        bytes += cf_verdict_encode(r, &v, enc, sizeof(enc));
        for (uint32_t h = 0; h < v.n; h++) {
            bytes += cf_rules_alert_ndjson(r, &e, &v.hits[h], line, sizeof(line));
        }
        hits += v.n;
    }
    out->cpu_s = thread_cpu_s() - c0;
    out->wall_s = wall_s() - w0;
    out->hits = hits;
    out->alert_bytes = bytes;
    out->rules = cf_rules_count(r);
    rc = CF_EXIT_OK;
out:
    cf_rules_destroy(r);
    unlink(list);
    rmdir(dir);
    return rc;
}

int cf_bench_engine(int argc, char **argv)
{
    opts o = {.events = 4000000,
              .base = 200000,
              .seed = 11,
              .size_ms = 1000,
              .slide_ms = 0,
              .rate = 100000.0,
              .group = "merchant",
              .json = false};
    uint64_t size_ms = 1000, slide_ms = 0, rate = 100000;
    const cli_opt copts[] = {
        {.name = "events",
         .type = CLI_U64,
         .u64 = &o.events,
         .arg = "N",
         .min = 1,
         .max = 18446744073709551615.0,
         .help = "events through each timed loop (default 4000000)"},
        {.name = "base",
         .type = CLI_U32,
         .u32 = &o.base,
         .arg = "N",
         .min = 1000,
         .max = 5000000,
         .help = "generated events replayed in rounds (default 200000)"},
        {.name = "size-ms",
         .type = CLI_U64,
         .u64 = &size_ms,
         .arg = "MS",
         .min = 1,
         .max = 999999999,
         .help = "window size (default 1000)"},
        {.name = "slide-ms",
         .type = CLI_U64,
         .u64 = &slide_ms,
         .arg = "MS",
         .min = 0,
         .max = 999999999,
         .help = "window slide; 0 = tumbling (default 0)"},
        {.name = "rate",
         .type = CLI_U64,
         .u64 = &rate,
         .arg = "R",
         .min = 1,
         .max = 18446744073709551615.0,
         .help = "event-time rate the generated stream is compressed to, events/s\n"
                 "(windows only; default 100000)"},
        {.name = "group",
         .type = CLI_STR,
         .str = &o.group,
         .arg = "FIELDS",
         .help = "group-by fields (default merchant)"},
        {.name = "seed",
         .type = CLI_U64,
         .u64 = &o.seed,
         .arg = "S",
         .help = "generator seed (default 11)"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = &o.json,
         .help = "one JSON object on stdout:\n"
                 "{\"windows_events_per_s\":X,\"rules_events_per_s\":X,"
                 "\"state_bytes_per_key\":X,...}"},
    };
    cli_spec spec = {.prog = "confide bench engine",
                     .head = bench_engine_head,
                     .tail = bench_engine_tail,
                     .opts = copts,
                     .n_opts = CLI_N(copts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    o.size_ms = (int64_t)size_ms;
    o.slide_ms = (int64_t)slide_ms;
    o.rate = (double)rate;
    if (o.slide_ms > o.size_ms) {
        fprintf(stderr, "confide bench engine: --slide-ms must not exceed --size-ms\n");
        return CF_EXIT_USAGE;
    }

    /* Generate the base events once (not timed). */
    cf_gen_opts go;
    cf_gen_opts_default(&go);
    go.seed = o.seed;
    go.days = 3650;
    cf_gen *g = NULL;
    char err[256];
    if (cf_gen_create(&g, &go, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench engine: generator: %s\n", err);
        return CF_EXIT_RUNTIME;
    }
    cf_event *base = malloc((size_t)o.base * sizeof(cf_event));
    if (base == NULL) {
        cf_gen_destroy(g);
        fprintf(stderr, "confide bench engine: out of memory\n");
        return CF_EXIT_RUNTIME;
    }
    size_t nbase = 0;
    while (nbase < o.base && cf_gen_next(g, &base[nbase]) == CF_OK) {
        nbase++;
    }
    cf_gen_destroy(g);
    if (nbase < 1000) {
        free(base);
        fprintf(stderr, "confide bench engine: generator produced only %zu events\n", nbase);
        return CF_EXIT_RUNTIME;
    }

    wout wo;
    rout ro;
    memset(&wo, 0, sizeof(wo));
    memset(&ro, 0, sizeof(ro));
    int rc = bench_windows(&o, base, nbase, &wo);
    if (rc == CF_EXIT_OK) {
        rc = bench_rules(&o, base, nbase, &ro);
    }
    free(base);
    if (rc != CF_EXIT_OK) {
        return rc;
    }
    double w_cpu = (double)o.events / wo.cpu_s, w_wall = (double)o.events / wo.wall_s;
    double r_cpu = (double)o.events / ro.cpu_s, r_wall = (double)o.events / ro.wall_s;
    double bytes_per_key = (double)wo.entry_bytes;
    if (o.json) {
        printf("{\"windows_events_per_s\":%.0f,\"rules_events_per_s\":%.0f,"
               "\"state_bytes_per_key\":%.0f,\"windows_events_per_wall_s\":%.0f,"
               "\"rules_events_per_wall_s\":%.0f,\"events\":%" PRIu64 ",\"base_events\":%zu,"
               "\"window_size_ms\":%" PRId64 ",\"window_slide_ms\":%" PRId64
               ",\"group\":\"%s\",\"results\":%" PRIu64 ",\"keys_peak\":%" PRIu64
               ",\"state_bytes_peak\":%" PRIu64 ",\"late\":%" PRIu64 ",\"rules\":%zu"
               ",\"rule_hits\":%" PRIu64 ",\"windows_digest\":\"%016" PRIx64 "\"}\n",
               w_cpu, r_cpu, bytes_per_key, w_wall, r_wall, o.events, nbase, o.size_ms, o.slide_ms,
               o.group, wo.results, wo.keys_peak, wo.state_bytes_peak, wo.late, ro.rules, ro.hits,
               wo.digest);
    } else {
        printf("engine benchmark: %" PRIu64 " events per loop (%zu generated, replayed)\n",
               o.events, nbase);
        printf("  windows: %.0f events/s per core (%.0f per wall second); window %" PRId64
               " ms slide %" PRId64 " ms, group %s; %" PRIu64 " results, peak %" PRIu64
               " keys, %" PRIu64 " state bytes; %zu bytes per (window, key)\n",
               w_cpu, w_wall, o.size_ms, o.slide_ms, o.group, wo.results, wo.keys_peak,
               wo.state_bytes_peak, wo.entry_bytes);
        printf("  rules:   %.0f events/s per core (%.0f per wall second); %zu rules, %" PRIu64
               " hits\n",
               r_cpu, r_wall, ro.rules, ro.hits);
    }
    return CF_EXIT_OK;
}
