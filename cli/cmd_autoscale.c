/*
 * confide autoscale: the autoscaler of a distributed run (docs/autoscaling.md). It reads
 * the statistics the gateway and the party workers publish, runs autoscale.policy every
 * autoscale.interval_ms, starts the worker processes a scale-up needs (--party-cmd), asks
 * the gateway to rescale, and reports its decision as confide_desired_replicas on
 * metrics.listen, for Kubernetes (HPA, KEDA) to act on instead.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "confide/metrics.h"
#include "confide/runtime.h"
#include "opts.h"

static const char head[] =
    "usage: confide autoscale --config FILE [--party-cmd CMD] [options]\n\n"
    "Scales the party workers of a running distributed pipeline. Every\n"
    "autoscale.interval_ms it reads what the gateway accepted and how busy party\n"
    "0's workers were (core NATS: PREFIX.stats.>), runs autoscale.policy (static,\n"
    "reactive, ds2, predictive: the embedded autoscaler's), and when the decision\n"
    "changes starts the added workers' processes with --party-cmd and asks the\n"
    "gateway for the new count (PREFIX.control.rescale). Added processes wait on\n"
    "their streams until the rescale reaches them; retired ones end by themselves.\n"
    "With autoscale.act false it only advises: confide_desired_replicas on\n"
    "metrics.listen (docs/autoscaling.md: Kubernetes wiring).\n\n";
static const char tail[] =
    "\nCMD is run with /bin/sh -c after replacing {party} and {worker}, e.g.\n"
    "  'confide party --config p.yaml --id {party} --worker {worker} --out out/p{party}w{worker}\n"
    "   --keys k/party{party} --user party{party} --password-file pw/party{party}'\n"
    "Ends when the gateway has not reported for --until-idle seconds (after it\n"
    "did), then waits for the processes it started; or at SIGINT/SIGTERM.\n"
    "Exit codes: 0 ok, 2 usage or config error, 3 runtime error (a started worker\n"
    "failed, the gateway refused).\n";

static volatile sig_atomic_t stop_asked;

static void on_stop(int sig)
{
    (void)sig;
    stop_asked = 1;
}

typedef struct scaler_ctx {
    cf_config *conf;
} scaler_ctx;

static int set_kv(void *opaque, const char *kv, char *err, size_t err_size)
{
    scaler_ctx *c = opaque;
    return cli_conf_set_kv(c->conf, kv, NULL, 0, err, err_size);
}

/* {party} and {worker} replaced in @p tmpl. */
static void expand(const char *tmpl, unsigned party, unsigned worker, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = tmpl; *p != '\0' && o + 1 < n;) {
        if (strncmp(p, "{party}", 7) == 0 || strncmp(p, "{worker}", 8) == 0) {
            bool is_party = p[1] == 'p';
            int k = snprintf(out + o, n - o, "%u", is_party ? party : worker);
            o += k > 0 && (size_t)k < n - o ? (size_t)k : 0;
            p += is_party ? 7 : 8;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

typedef struct procs {
    pid_t pid[16][16];
    unsigned failed;
} procs;

static void reap(procs *ps, bool block);

static bool start_worker(procs *ps, const char *tmpl, unsigned party, unsigned worker)
{
    /* A process for a slot that is not active is one that retires: it ends once it has
     * handed its state over, and the new one must then wait at the activation (it takes
     * the slot's stream position from the retired one's state file). */
    for (int i = 0; i < 600 && ps->pid[party][worker] > 0; i++) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        reap(ps, false);
    }
    if (ps->pid[party][worker] > 0) {
        fprintf(stderr, "confide autoscale: party %u worker %u did not end after retiring\n", party,
                worker);
        return false;
    }
    char cmd[4096];
    expand(tmpl, party, worker, cmd, sizeof(cmd));
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid < 0) {
        fprintf(stderr, "confide autoscale: cannot start party %u worker %u: %s\n", party, worker,
                strerror(errno));
        return false;
    }
    ps->pid[party][worker] = pid;
    fprintf(stderr, "confide autoscale: started party %u worker %u (pid %d)\n", party, worker,
            (int)pid);
    return true;
}

static void reap(procs *ps, bool block)
{
    for (unsigned i = 0; i < 16; i++) {
        for (unsigned w = 0; w < 16; w++) {
            int st = 0;
            if (ps->pid[i][w] <= 0 || waitpid(ps->pid[i][w], &st, block ? 0 : WNOHANG) <= 0) {
                continue;
            }
            bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
            ps->failed += !ok;
            fprintf(stderr, "confide autoscale: party %u worker %u ended (%s)\n", i, w,
                    ok ? "ok" : "failed");
            ps->pid[i][w] = 0;
        }
    }
}

static int autoscale_main(int argc, char **argv)
{
    cf_config *conf = NULL;
    if (cf_config_create(&conf) != CF_OK) {
        return CF_EXIT_RUNTIME;
    }
    scaler_ctx ctx = {.conf = conf};
    const char *party_cmd = NULL;
    double until_idle = 10;
    uint32_t request_n = 0;
    const cli_opt opts[] = {
        {.name = "config",
         .type = CLI_CONF_FILE,
         .arg = "FILE",
         .flags = CLI_REPEAT | CLI_FIRST,
         .help = "the pipeline's YAML config (the roles' file)"},
        {.name = "policy",
         .type = CLI_CONF,
         .arg = "P",
         .key = "autoscale.policy",
         .help = "static|reactive|ds2|predictive  (autoscale.policy)"},
        {.name = "party-cmd",
         .type = CLI_STR,
         .str = &party_cmd,
         .arg = "CMD",
         .help = "starts party {party}'s worker {worker} (below)"},
        {.name = "request",
         .type = CLI_U32,
         .u32 = &request_n,
         .arg = "N",
         .min = 1,
         .max = 16,
         .help = "only ask the gateway for N workers per party, and\n"
                 "exit (an orchestrator started the processes)"},
        {.name = "until-idle",
         .type = CLI_DBL,
         .dbl = &until_idle,
         .arg = "S",
         .min = 1,
         .max = 86400,
         .help = "end when the gateway is silent this long [10]"},
        {.name = "nats",
         .type = CLI_CONF,
         .arg = "URLS",
         .key = "nats.servers",
         .help = "NATS servers, comma-separated     (nats.servers)"},
        {.name = "user",
         .type = CLI_CONF,
         .arg = "NAME",
         .key = "nats.user",
         .help = "its NATS user (autoscale)         (nats.user)"},
        {.name = "password-file",
         .type = CLI_CONF,
         .arg = "F",
         .key = "nats.password_file",
         .help = "its password, mode 0600           (nats.password_file)"},
        {.name = "set",
         .type = CLI_FN,
         .arg = "KEY=VALUE",
         .fn = set_kv,
         .flags = CLI_REPEAT,
         .help = "any config key (repeatable)"},
    };
    cli_spec spec = {.prog = "confide autoscale",
                     .head = head,
                     .tail = tail,
                     .opts = opts,
                     .n_opts = CLI_N(opts),
                     .conf = conf,
                     .ctx = &ctx};
    int rc = cli_parse(&spec, argc, argv);
    cf_scaler *a = NULL;
    cf_metrics *m = NULL;
    cf_metrics_server *srv = NULL;
    cf_gauge *desired = NULL, *ready = NULL;
    procs ps;
    memset(&ps, 0, sizeof(ps));
    char errstr[512] = "", act[8] = "", listen[256] = "", parties[8] = "";
    if (rc != CLI_CONTINUE) {
        goto done;
    }
    if (request_n > 0) {
        rc = cf_rescale_request(conf, request_n, errstr, sizeof(errstr)) == CF_OK ? CF_EXIT_OK
                                                                                  : CF_EXIT_RUNTIME;
        fprintf(stderr, "confide autoscale: %s\n",
                rc == CF_EXIT_OK ? "the gateway accepted the rescale" : errstr);
        goto done;
    }
    cf_config_get(conf, "autoscale.act", act, sizeof(act));
    cf_config_get(conf, "metrics.listen", listen, sizeof(listen));
    cf_config_get(conf, "parties", parties, sizeof(parties));
    bool acting = strcmp(act, "true") == 0;
    unsigned k = (unsigned)atoi(parties);
    if (acting && party_cmd == NULL) {
        fprintf(stderr, "confide autoscale: --party-cmd is needed to act (or --set "
                        "autoscale.act=false to only advise)\n");
        rc = CF_EXIT_USAGE;
        goto done;
    }
    cf_err err = cf_scaler_create(&a, conf, errstr, sizeof(errstr));
    if (err == CF_OK && listen[0] != '\0') {
        err = cf_metrics_create(&m);
        if (err == CF_OK) {
            err = cf_metrics_gauge(m, "confide_desired_replicas",
                                   "Party workers per party the autoscaler wants (an HPA or "
                                   "KEDA target; docs/autoscaling.md).",
                                   NULL, 0, &desired, errstr, sizeof(errstr));
        }
        if (err == CF_OK) {
            err = cf_metrics_gauge(m, "confide_party_workers",
                                   "Party workers per party the gateway routes to now.", NULL, 0,
                                   &ready, errstr, sizeof(errstr));
        }
        if (err == CF_OK) {
            err = cf_metrics_serve(m, listen, &srv, NULL, errstr, sizeof(errstr));
        }
    }
    if (err != CF_OK) {
        fprintf(stderr, "confide autoscale: %s\n", errstr);
        rc = err == CF_E_INVAL || err == CF_E_PERM ? CF_EXIT_USAGE : CF_EXIT_RUNTIME;
        goto done;
    }
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    rc = CF_EXIT_OK;
    bool seen_gateway = false;
    unsigned last_want = 0;
    while (!stop_asked) {
        cf_scaler_step st;
        if (cf_scaler_step_run(a, &st, errstr, sizeof(errstr)) != CF_OK) {
            fprintf(stderr, "confide autoscale: %s\n", errstr);
            rc = CF_EXIT_RUNTIME;
            break;
        }
        reap(&ps, false);
        seen_gateway |= st.seen;
        if (seen_gateway && cf_scaler_gateway_silent_s(a) >= until_idle) {
            break; /* the run ended */
        }
        if (!st.seen || !st.decided || st.ready == 0) {
            continue;
        }
        if (desired != NULL) {
            cf_gauge_set(desired, (double)st.want);
            cf_gauge_set(ready, (double)st.ready);
        }
        if (st.want != last_want) {
            fprintf(stderr,
                    "confide autoscale: %u -> %u workers per party wanted (%.0f events/s, "
                    "%.0f per busy worker-second, busy %.0f%%)\n",
                    st.ready, st.want, st.arrived_per_s, st.worker_rate, 100 * st.busy_fraction);
            last_want = st.want;
        }
        if (!acting || st.want == st.ready) {
            continue;
        }
        bool ok = true;
        for (unsigned i = 0; i < k && i < 16; i++) {
            for (unsigned w = st.ready; w < st.want && w < 16; w++) {
                ok &= start_worker(&ps, party_cmd, i, w);
            }
        }
        if (ok && cf_scaler_request(a, st.want, errstr, sizeof(errstr)) != CF_OK) {
            fprintf(stderr, "confide autoscale: rescale to %u: %s\n", st.want, errstr);
            ok = false;
        }
        if (!ok) {
            rc = CF_EXIT_RUNTIME;
            break;
        }
    }
    reap(&ps, true); /* the workers it started end with the input */
    if (ps.failed > 0) {
        fprintf(stderr, "confide autoscale: %u worker process(es) failed\n", ps.failed);
        rc = CF_EXIT_RUNTIME;
    }
done:
    cf_metrics_server_stop(srv);
    cf_metrics_destroy(m);
    cf_scaler_destroy(a);
    cf_config_destroy(conf);
    return rc;
}

const cf_command cf_cmd_autoscale = {"autoscale", "distributed: scale the party workers",
                                     autoscale_main};
