/* confide bench: dispatches to the benchmarks linked into this build. */
#include <string.h>

#include "bench.h"
#include "cli.h"

typedef struct {
    const char *name;
    const char *doc;
    int (*fn)(int, char **);
} bench_entry;

static const bench_entry *benches(size_t *n)
{
    static const bench_entry table[] = {
#define X(b, d) {#b, d, cf_bench_##b},
        CF_BENCHES(X)
#undef X
    };
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}

static void usage(FILE *f)
{
    size_t n;
    const bench_entry *t = benches(&n);
    fprintf(f, "usage: confide bench <name> [--json] [options]\n\nbenchmarks:\n");
    for (size_t i = 0; i < n; i++) {
        if (t[i].fn != NULL) {
            fprintf(f, "  %-10s %s\n", t[i].name, t[i].doc);
        }
    }
    fprintf(f, "\nResults are recorded, with command, machine and date, in bench/results/.\n");
}

static int bench_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CF_EXIT_USAGE : CF_EXIT_OK;
    }
    size_t n;
    const bench_entry *t = benches(&n);
    for (size_t i = 0; i < n; i++) {
        if (t[i].fn != NULL && strcmp(argv[1], t[i].name) == 0) {
            return t[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "confide bench: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return CF_EXIT_USAGE;
}

const cf_command cf_cmd_bench = {"bench",
                                 "run a benchmark (pipeline, protect, audit, engine, "
                                 "batching, run, autoscale, paper)",
                                 bench_main};
