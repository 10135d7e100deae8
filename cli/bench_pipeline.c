/*
 * confide bench pipeline: generated events, encoded as canonical CSV in memory, streamed
 * through source -> decode -> process -> sink twice in one run:
 *   1. as fast as possible (throughput of decode and pass-through),
 *   2. paced open-loop at --rate (latency, counted from each event's scheduled send time).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/io.h"
#include "confide/runtime.h"

static const char bench_pipeline_head[] =
    "usage: confide bench pipeline [--events N] [--rate R] [--seconds S] [--json]\n\n";

static int run_once(const char *buf, size_t len, double rate, cf_summary *s)
{
    cf_config *c = NULL;
    cf_pipeline *p = NULL;
    char errstr[256];
    char rate_s[32];
    int rc = 1;
    snprintf(rate_s, sizeof(rate_s), "%.0f", rate);
    if (cf_config_create(&c) != CF_OK ||
        cf_config_set(c, "input.rate", rate_s, errstr, sizeof(errstr)) != CF_OK ||
        cf_config_set(c, "protect", "none", errstr, sizeof(errstr)) != CF_OK ||
        cf_pipeline_create(&p, c, errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "bench pipeline: cannot set up the pipeline\n");
        goto done;
    }
    cf_pipeline_set_input_buffer(p, buf, len);
    if (cf_pipeline_run(p, s, errstr, sizeof(errstr)) != CF_OK) {
        fprintf(stderr, "bench pipeline: %s\n", errstr);
        goto done;
    }
    rc = 0;
done:
    cf_pipeline_destroy(p);
    cf_config_destroy(c);
    return rc;
}

int cf_bench_pipeline(int argc, char **argv)
{
    uint64_t events = 2000000;
    double rate = 100000, seconds = 5;
    bool json = false;
    const cli_opt opts[] = {
        {.name = "events",
         .type = CLI_U64,
         .u64 = &events,
         .arg = "N",
         .help = "events for the throughput run (default 2000000)"},
        {.name = "rate",
         .type = CLI_DBL,
         .dbl = &rate,
         .arg = "R",
         .help = "paced rate for the latency run, events/s (default 100000)"},
        {.name = "seconds",
         .type = CLI_DBL,
         .dbl = &seconds,
         .arg = "S",
         .help = "length of the paced run (default 5)"},
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON object on stdout"},
    };
    cli_spec spec = {.prog = "confide bench pipeline",
                     .head = bench_pipeline_head,
                     .opts = opts,
                     .n_opts = CLI_N(opts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (events == 0 || rate <= 0 || seconds <= 0) {
        fprintf(stderr, "bench pipeline: --events, --rate and --seconds must be positive\n");
        return CF_EXIT_USAGE;
    }
    uint64_t paced_events = (uint64_t)(rate * seconds);
    uint64_t need = events > paced_events ? events : paced_events;
    size_t len = 0;
    if (!json) {
        fprintf(stderr, "bench pipeline: generating %llu events...\n", (unsigned long long)need);
    }
    char *csv = cf_bench_gen_csv("bench pipeline", need, 0, 0, 7, &len);
    if (csv == NULL) {
        return CF_EXIT_RUNTIME;
    }
    cf_summary fast, paced;
    int rc = run_once(csv, cf_bench_prefix_len(csv, len, events), 0, &fast);
    if (rc == 0) {
        rc = run_once(csv, cf_bench_prefix_len(csv, len, paced_events), rate, &paced);
    }
    free(csv);
    if (rc != 0) {
        return CF_EXIT_RUNTIME;
    }
    double bytes_per_event = (double)len / (double)need;
    if (json) {
        printf("{\"events_per_s\":%.0f,\"p99_us\":%lld,\"events\":%llu,\"cpu_s\":%.3f,"
               "\"bytes_per_event\":%.1f,\"paced\":{\"rate\":%.0f,\"events\":%llu,"
               "\"achieved_per_s\":%.0f,\"p50_us\":%lld,\"p99_us\":%lld,\"p999_us\":%lld,"
               "\"max_us\":%lld}}\n",
               fast.events_per_s, (long long)paced.p99_us, (unsigned long long)fast.accepted,
               fast.cpu_s, bytes_per_event, rate, (unsigned long long)paced.accepted,
               paced.events_per_s, (long long)paced.p50_us, (long long)paced.p99_us,
               (long long)paced.p999_us, (long long)paced.max_us);
    } else {
        printf("throughput: %llu events in %.3f s = %.0f events/s (cpu %.3f s)\n",
               (unsigned long long)fast.accepted, fast.elapsed_s, fast.events_per_s, fast.cpu_s);
        printf("paced at %.0f/s: p50 %lld us, p99 %lld us, p99.9 %lld us, max %lld us\n", rate,
               (long long)paced.p50_us, (long long)paced.p99_us, (long long)paced.p999_us,
               (long long)paced.max_us);
    }
    return CF_EXIT_OK;
}
