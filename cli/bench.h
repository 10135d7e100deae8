/* `confide bench <name>`: each benchmark lives in bench_<name>.c and defines
 * `int cf_bench_<name>(int argc, char **argv)` (argv[0] is the benchmark name). */
#ifndef CONFIDE_BENCH_H
#define CONFIDE_BENCH_H

#define CF_BENCHES(X)                                                                              \
    X(pipeline, "decode -> sink throughput and paced latency")                                     \
    X(protect, "plain vs LSA vs Paillier protection cost")                                         \
    X(audit, "audit log append, verify and prove")                                                 \
    X(engine, "windows and compliance rules throughput")                                           \
    X(batching, "adaptive vs fixed micro-batching under a step load")                              \
    X(run, "the whole confide run pipeline end to end, configurations side by side")               \
    X(autoscale, "autoscaling policies replaying a rate trace in the cluster simulator")           \
    X(distributed, "gateway, parties and combiner as processes over NATS JetStream")

#define X(n, doc) int cf_bench_##n(int argc, char **argv) __attribute__((weak));
CF_BENCHES(X)
#undef X

#endif
