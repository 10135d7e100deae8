/* `confide bench <name>`: each benchmark lives in bench_<name>.c and defines
 * `int cf_bench_<name>(int argc, char **argv)` (argv[0] is the benchmark name). */
#ifndef CONFIDE_BENCH_H
#define CONFIDE_BENCH_H

#include <stddef.h>
#include <stdint.h>

#define CF_BENCHES(X)                                                                              \
    X(pipeline, "decode -> sink throughput and paced latency")                                     \
    X(protect, "plain vs LSA vs Paillier protection cost")                                         \
    X(audit, "audit log append, verify and prove")                                                 \
    X(engine, "windows and compliance rules throughput")                                           \
    X(batching, "adaptive vs fixed micro-batching under a step load")                              \
    X(run, "the whole confide run pipeline end to end, configurations side by side")               \
    X(autoscale, "autoscaling policies replaying a rate trace in the cluster simulator")           \
    X(distributed, "gateway, parties and combiner as processes over NATS JetStream")               \
    X(paper, "the paper's evaluation: confide vs plain, HE, a TEE model and ablations")

#define X(n, doc) int cf_bench_##n(int argc, char **argv) __attribute__((weak));
CF_BENCHES(X)
#undef X

/* ---- shared by the benchmarks (defined in bench_run.c) ---- */

/** The demo's rules (examples/rules.yaml) as YAML text, so no benchmark needs a checkout. */
extern const char cf_bench_rules_yaml[];
/** Writes cf_bench_rules_yaml to DIR/rules.yaml; its path into @p path. 0 or -1. */
int cf_bench_write_rules(const char *dir, char *path, size_t size);
/**
 * @p n events of the FDH generator model (seed @p seed; @p accounts customers and @p merchants
 * terminals, 0 for the generator's defaults) as canonical CSV with its header line, in a
 * malloc'd buffer (*len_out bytes). NULL on error, said on stderr prefixed by @p prog.
 */
char *cf_bench_gen_csv(const char *prog, uint64_t n, uint32_t accounts, uint32_t merchants,
                       uint64_t seed, size_t *len_out);
/** Bytes of the header line plus the first @p n records of a CSV buffer (all of it if fewer). */
size_t cf_bench_prefix_len(const char *buf, size_t len, uint64_t n);

#endif
