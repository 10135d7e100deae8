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
#include "opts.h"
#include "confide/runtime.h"

static int gateway_main(int argc, char **argv)
{
    return cf_cli_run(true, argc, argv);
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

static const char party_head[] =
    "usage: confide party --id I [options]\n\n"
    "Aggregation party I of a distributed run: consumes its shares from\n"
    "PREFIX.shares.I, keeps its event-time windows and publishes partial sums\n"
    "to PREFIX.partials.I. Holds only its own key (keys dir: party-I.key; party\n"
    "0 needs none). Checkpoints its windows to OUT/party-I.state at the\n"
    "gateway's markers; a restart (after kill -9 too) resumes there.\n\n";
static const char combine_head[] =
    "usage: confide combine [options]\n\n"
    "The combiner of a distributed run: takes every party's partial sums in\n"
    "lockstep, checks their MACs and releases groups with count >= min_count to\n"
    "OUT/results.ndjson (late.ndjson, integrity alerts in alerts.ndjson). Holds\n"
    "combiner.key and results.key (it signs OUT/results.sig.ndjson). Checkpoints to\n"
    "OUT/combiner.state; a restart resumes.\n\n";
static const char service_tail[] =
    "\nRuns until the gateway's end of input has passed through; SIGINT/SIGTERM stop\n"
    "at once without flushing (the state file says where to resume).\n"
    "Exit codes: 0 ok, 2 usage or config error, 3 runtime error, 4 integrity "
    "alert.\n";

typedef struct service_ctx {
    cf_config *conf;
    bool have_id;
} service_ctx;

/* --set KEY=VALUE; notes a party.id set this way (it counts as --id). */
static int service_set(void *opaque, const char *kv, char *err, size_t err_size)
{
    service_ctx *c = opaque;
    char key[128] = "";
    if (cli_conf_set_kv(c->conf, kv, key, sizeof(key), err, err_size) != 0) {
        return -1;
    }
    c->have_id |= strcmp(key, "party.id") == 0;
    return 0;
}

static int service_args(const char *cmd, bool party, cf_config *conf, int argc, char **argv,
                        bool *json)
{
    char errstr[512];
    service_ctx ctx = {.conf = conf};
    bool id_given = false;
    const cli_opt opts[] = {
        {.name = "id",
         .type = CLI_CONF,
         .arg = "I",
         .key = "party.id",
         .given = &id_given,
         .help = "which party, 0..parties-1        (party.id)"},
        {.name = "worker",
         .type = CLI_CONF,
         .arg = "W",
         .key = "party.worker",
         .help = "which of its worker processes, 0..15 (party.worker);\n"
                 "one the gateway does not use yet waits until a rescale\n"
                 "activates it (docs/distributed.md)"},
        {.name = "workers",
         .type = CLI_CONF,
         .arg = "N",
         .key = "party.workers",
         .help = "worker processes per party at the start\n"
                 "(party.workers; rescales change it)"},
        {.name = "config",
         .type = CLI_CONF_FILE,
         .arg = "FILE",
         .flags = CLI_REPEAT | CLI_FIRST,
         .help = "the pipeline's YAML config (same file for every role)"},
        {.name = "out",
         .type = CLI_CONF,
         .arg = "DIR",
         .key = "output.dir",
         .help = "this role's output/state directory (output.dir)"},
        {.name = "keys",
         .type = CLI_CONF,
         .arg = "DIR",
         .key = "keys.dir",
         .help = "this role's key directory         (keys.dir)"},
        {.name = "nats",
         .type = CLI_CONF,
         .arg = "URLS",
         .key = "nats.servers",
         .help = "NATS servers, comma-separated     (nats.servers)"},
        {.name = "user",
         .type = CLI_CONF,
         .arg = "NAME",
         .key = "nats.user",
         .help = "NATS user of this role            (nats.user)"},
        {.name = "password-file",
         .type = CLI_CONF,
         .arg = "F",
         .key = "nats.password_file",
         .help = "its password, mode 0600           (nats.password_file)"},
        {.name = "set",
         .type = CLI_FN,
         .arg = "KEY=VALUE",
         .fn = service_set,
         .flags = CLI_REPEAT,
         .help = "any config key (repeatable)"},
        {.name = "json",
         .type = CLI_FLAG,
         .flag = json,
         .help = "print one JSON summary on stdout"},
    };
    char prog[32];
    snprintf(prog, sizeof(prog), "confide %s", cmd);
    cli_spec spec = {.prog = prog,
                     .head = party ? party_head : combine_head,
                     .tail = service_tail,
                     .opts = party ? opts : opts + 2,
                     .n_opts = party ? CLI_N(opts) : CLI_N(opts) - 2,
                     .conf = conf,
                     .ctx = &ctx};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    if (party && !id_given && !ctx.have_id) {
        fprintf(stderr, "confide party: --id I is required\n");
        return CF_EXIT_USAGE;
    }
    if (cf_config_set(conf, "role", party ? "party" : "combiner", errstr, sizeof(errstr)) !=
        CF_OK) {
        return CF_EXIT_USAGE;
    }
    return CLI_CONTINUE;
}

static void log_to_stderr(void *opaque, cf_log_level lvl, const char *ctx, const char *msg)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "confide %s: %s: %s: %s\n", (const char *)opaque, names[lvl], ctx, msg);
}

static int service_main(int argc, char **argv, bool party)
{
    const char *cmd = party ? "party" : "combine";
    cf_log_set(log_to_stderr, (void *)cmd, CF_LOG_INFO);
    cf_config *conf = NULL;
    cf_service *sv = NULL;
    char errstr[512] = "";
    bool json = false, stopped = false;
    if (cf_config_create(&conf) != CF_OK) {
        return CF_EXIT_RUNTIME;
    }
    int rc = service_args(cmd, party, conf, argc, argv, &json);
    if (rc != CLI_CONTINUE) {
        goto done;
    }
    rc = CF_EXIT_OK;
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
