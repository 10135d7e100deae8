/*
 * confide gateway | party | combine: the pipeline's roles as separate processes connected
 * through NATS JetStream (docs/distributed.md). One config file serves every role; each
 * process adds its own role, output directory and NATS user on the command line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "confide/runtime.h"

extern const cf_command cf_cmd_run;

static void gateway_usage(FILE *f)
{
    fprintf(f,
            "usage: confide gateway [confide run options]\n\n"
            "The trusted gateway of a distributed run: reads the input, screens every event\n"
            "against the rules (alerts.ndjson), appends it to the audit log, splits amounts\n"
            "into shares and publishes them to JetStream (PREFIX.shares.I for party I, group\n"
            "names to PREFIX.groups for the combiner). Takes every `confide run` option\n"
            "(confide run --help) and the nats.* keys, e.g.\n\n"
            "  confide gateway --config pipeline.yaml --input tx.csv --out gw --keys keys/gateway\n"
            "                  --nats nats://127.0.0.1:4222 --set nats.user=gateway\n\n"
            "Start the parties (confide party) and the combiner (confide combine) with the\n"
            "same config; they may start before or after the gateway. A gateway restarted\n"
            "into the same --out resumes from its audit log; nothing is published twice.\n\n"
            "Exit codes: 0 ok, 2 usage or config error, 3 runtime error (e.g. the NATS\n"
            "servers unreachable for 60 s).\n");
}

static int gateway_main(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        gateway_usage(stdout);
        return CF_EXIT_OK;
    }
    char **args = calloc((size_t)argc + 3, sizeof(char *));
    if (args == NULL) {
        return CF_EXIT_RUNTIME;
    }
    char set[] = "--set", role[] = "role=gateway", name[] = "gateway";
    args[0] = name;
    for (int i = 1; i < argc; i++) {
        args[i] = argv[i];
    }
    args[argc] = set; /* last, so that no --set role=... before it can change it */
    args[argc + 1] = role;
    int rc = cf_cmd_run.main(argc + 2, args);
    free(args);
    return rc;
}

const cf_command cf_cmd_gateway = {"gateway", "distributed: read, screen, audit, share out",
                                   gateway_main};

/* ---- party and combine ---- */

static cf_service *volatile serving;

static void on_stop(int sig)
{
    (void)sig;
    if (serving != NULL) {
        cf_service_stop(serving);
    }
}

static void service_usage(FILE *f, bool party)
{
    if (party) {
        fprintf(f, "usage: confide party --id I [options]\n\n"
                   "Aggregation party I of a distributed run: consumes its shares from\n"
                   "PREFIX.shares.I, keeps its event-time windows and publishes partial sums\n"
                   "to PREFIX.partials.I. Holds only its own key (keys dir: party-I.key; party\n"
                   "0 needs none). Checkpoints its windows to OUT/party-I.state at the\n"
                   "gateway's markers; a restart (after kill -9 too) resumes there.\n\n"
                   "  --id I               which party, 0..parties-1        (party.id)\n");
    } else {
        fprintf(f, "usage: confide combine [options]\n\n"
                   "The combiner of a distributed run: takes every party's partial sums in\n"
                   "lockstep, checks their MACs and releases groups with count >= min_count to\n"
                   "OUT/results.ndjson (late.ndjson, integrity alerts in alerts.ndjson). Holds\n"
                   "only combiner.key. Checkpoints to OUT/combiner.state; a restart resumes.\n\n");
    }
    fprintf(f, "  --config FILE        the pipeline's YAML config (same file for every role)\n"
               "  --out DIR            this role's output/state directory (output.dir)\n"
               "  --keys DIR           this role's key directory         (keys.dir)\n"
               "  --nats URLS          NATS servers, comma-separated     (nats.servers)\n"
               "  --user NAME          NATS user of this role            (nats.user)\n"
               "  --password-file F    its password, mode 0600           (nats.password_file)\n"
               "  --set KEY=VALUE      any config key\n"
               "  --json               print one JSON summary on stdout\n"
               "  -h, --help           this help\n\n"
               "Runs until the gateway's end of input has passed through; SIGINT/SIGTERM stop\n"
               "at once without flushing (the state file says where to resume).\n"
               "Exit codes: 0 ok, 2 usage or config error, 3 runtime error, 4 integrity "
               "alert.\n");
}

static const struct {
    const char *opt, *key;
} service_opts[] = {
    {"--out", "output.dir"},
    {"--keys", "keys.dir"},
    {"--nats", "nats.servers"},
    {"--user", "nats.user"},
    {"--password-file", "nats.password_file"},
    {"--id", "party.id"},
};

static int service_args(const char *cmd, bool party, cf_config *conf, int argc, char **argv,
                        bool *json)
{
    char errstr[512];
    if (cli_load_configs(cmd, conf, argc, argv) != CF_EXIT_OK) {
        return CF_EXIT_USAGE;
    }
    bool have_id = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            *json = true;
            continue;
        }
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        const char *key = NULL;
        for (size_t k = 0; k < sizeof(service_opts) / sizeof(service_opts[0]); k++) {
            if (strcmp(a, service_opts[k].opt) == 0 && (party || strcmp(a, "--id") != 0)) {
                key = service_opts[k].key;
            }
        }
        if (key == NULL && strcmp(a, "--set") != 0) {
            fprintf(stderr, "confide %s: unknown option '%s' (see --help)\n", cmd, a);
            return CF_EXIT_USAGE;
        }
        char set[128];
        if (cli_apply_option(cmd, conf, key, argc, argv, &i, set, sizeof(set)) != CF_EXIT_OK) {
            return CF_EXIT_USAGE;
        }
        have_id |= strcmp(set, "party.id") == 0;
    }
    if (party && !have_id) {
        fprintf(stderr, "confide party: --id I is required\n");
        return CF_EXIT_USAGE;
    }
    if (cf_config_set(conf, "role", party ? "party" : "combiner", errstr, sizeof(errstr)) !=
        CF_OK) {
        return CF_EXIT_USAGE;
    }
    return CF_EXIT_OK;
}

static void log_to_stderr(void *opaque, cf_log_level lvl, const char *ctx, const char *msg)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "confide %s: %s: %s: %s\n", (const char *)opaque, names[lvl], ctx, msg);
}

static int service_main(int argc, char **argv, bool party)
{
    const char *cmd = party ? "party" : "combine";
    if (cli_wants_help(argc, argv)) {
        service_usage(stdout, party);
        return CF_EXIT_OK;
    }
    cf_log_set(log_to_stderr, (void *)cmd, CF_LOG_INFO);
    cf_config *conf = NULL;
    cf_service *sv = NULL;
    char errstr[512] = "";
    bool json = false, stopped = false;
    if (cf_config_create(&conf) != CF_OK) {
        return CF_EXIT_RUNTIME;
    }
    int rc = service_args(cmd, party, conf, argc, argv, &json);
    if (rc != CF_EXIT_OK) {
        goto done;
    }
    cf_err err = cf_service_create(&sv, conf, errstr, sizeof(errstr));
    if (err != CF_OK) {
        fprintf(stderr, "confide %s: %s\n", cmd, errstr);
        rc = err == CF_E_INVAL || err == CF_E_PERM ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
        goto done;
    }
    serving = sv;
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    cf_summary s;
    err = cf_service_run(sv, &s, &stopped, errstr, sizeof(errstr));
    serving = NULL;
    if (err != CF_OK) {
        fprintf(stderr, "confide %s: %s\n", cmd, errstr);
        rc = CF_EXIT_RUNTIME;
    } else if (s.integrity_alerts > 0) {
        rc = CF_EXIT_INTEGRITY;
    }
    if (json) {
        printf("{\"role\":\"%s\",\"stopped\":%s,\"elapsed_s\":%.6f,\"cpu_s\":%.6f,"
               "\"windows\":%llu,\"results\":%llu,\"suppressed\":%llu,\"late\":%llu,"
               "\"integrity_alerts\":%llu}\n",
               party ? "party" : "combiner", stopped ? "true" : "false", s.elapsed_s, s.cpu_s,
               (unsigned long long)s.windows, (unsigned long long)s.results,
               (unsigned long long)s.suppressed, (unsigned long long)s.late,
               (unsigned long long)s.integrity_alerts);
    } else if (party) {
        printf("confide party: %s after %.3f s (cpu %.3f s)\n", stopped ? "stopped" : "input ended",
               s.elapsed_s, s.cpu_s);
    } else {
        printf("confide combine: %s after %.3f s: %llu aggregates in %llu windows (%llu "
               "withheld below min_count), %llu late, %llu integrity alerts\n",
               stopped ? "stopped" : "input ended", s.elapsed_s, (unsigned long long)s.results,
               (unsigned long long)s.windows, (unsigned long long)s.suppressed,
               (unsigned long long)s.late, (unsigned long long)s.integrity_alerts);
    }
done:
    cf_service_destroy(sv);
    cf_config_destroy(conf);
    return rc;
}

static int party_main(int argc, char **argv)
{
    return service_main(argc, argv, true);
}

static int combine_main(int argc, char **argv)
{
    return service_main(argc, argv, false);
}

const cf_command cf_cmd_party = {"party", "distributed: one aggregation party", party_main};
const cf_command cf_cmd_combine = {"combine", "distributed: check and release aggregates",
                                   combine_main};
