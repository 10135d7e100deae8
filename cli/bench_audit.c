/*
 * confide bench audit: append throughput (batches of 1024 with fdatasync per batch, as the
 * gateway runs it), full verification throughput (decrypt + re-hash + roots + signatures)
 * and hashes-only verification, and the cost of one inclusion proof.
 *
 * Events are synthetic (generated once, ids renumbered per batch, so generation is not
 * timed); the log goes to a fresh temporary directory (--dir to choose another file system),
 * whose file system type is reported, and is removed afterwards. One thread: the numbers are
 * per core.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "opts.h"
#include "confide/audit.h"
#include "confide/core.h"
#include "confide/keys.h"

static const char bench_audit_head[] =
    "usage: confide bench audit [--json] [--events N] [--batch N] [--fsync P]\n"
    "                           [--dir DIR] [--proofs N] [--keep]\n\n"
    "Appends N synthetic events (default 1048576) in batches (default 1024) to a\n"
    "fresh audit log with the given fsync policy (default batch: fdatasync per\n"
    "batch), then verifies the whole log with the data key (decrypt, re-hash, roots,\n"
    "signatures) and without it (hashes and roots), then times N inclusion proofs\n"
    "(default 10000) at the full tree size. The log is written under DIR (default\n"
    "/tmp) and removed (unless --keep). --json prints one object:\n"
    "  {\"append_events_per_s\":X,\"verify_leaves_per_s\":X,\"prove_us\":X,...}\n\n";

static const char *fs_name(const char *dir)
{
    struct statfs s;
    if (statfs(dir, &s) != 0) {
        return "unknown";
    }
    switch ((unsigned long)s.f_type) {
    case 0xEF53UL:
        return "ext4";
    case 0x01021994UL:
        return "tmpfs";
    case 0x58465342UL:
        return "xfs";
    case 0x9123683EUL:
        return "btrfs";
    case 0x794C7630UL:
        return "overlayfs";
    default:
        return "other";
    }
}

static void rm_log(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char p[8448];
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int cf_bench_audit(int argc, char **argv)
{
    bool json = false, keep = false;
    uint64_t events = UINT64_C(1) << 20, batch = 1024, proofs = 10000;
    const char *base = "/tmp", *fsync_s = "batch";
    const cli_opt copts[] = {
        {.name = "json", .type = CLI_FLAG, .flag = &json, .help = "one JSON object on stdout"},
        {.name = "events",
         .type = CLI_U64,
         .u64 = &events,
         .arg = "N",
         .min = 1,
         .max = 1e15,
         .help = "events appended (default 1048576)"},
        {.name = "batch",
         .type = CLI_U64,
         .u64 = &batch,
         .arg = "N",
         .min = 1,
         .max = CF_AUDIT_BATCH_MAX,
         .help = "events per batch record (default 1024)"},
        {.name = "fsync",
         .type = CLI_STR,
         .str = &fsync_s,
         .arg = "P",
         .help = "batch | interval:MS | none (default batch)"},
        {.name = "dir",
         .type = CLI_STR,
         .str = &base,
         .arg = "DIR",
         .help = "where the log is written (default /tmp)"},
        {.name = "proofs",
         .type = CLI_U64,
         .u64 = &proofs,
         .arg = "N",
         .min = 1,
         .max = 1e12,
         .help = "inclusion proofs timed (default 10000)"},
        {.name = "keep", .type = CLI_FLAG, .flag = &keep, .help = "keep the log"},
    };
    cli_spec spec = {.prog = "confide bench audit",
                     .head = bench_audit_head,
                     .opts = copts,
                     .n_opts = CLI_N(copts)};
    int prc = cli_parse(&spec, argc, argv);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char err[512] = "";
    cf_audit_opts opts;
    cf_audit_opts_default(&opts);
    if (cf_audit_fsync_parse(fsync_s, &opts, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench audit: --fsync: %s\n", err);
        return CF_EXIT_USAGE;
    }

    int rc = CF_EXIT_RUNTIME;
    char root[4096], keys[4200], logd[4200];
    snprintf(root, sizeof(root), "%s/cf_bench_audit_XXXXXX", base);
    if (mkdtemp(root) == NULL) {
        fprintf(stderr, "confide bench audit: mkdtemp in %s: %s\n", base, strerror(errno));
        return CF_EXIT_RUNTIME;
    }
    snprintf(keys, sizeof(keys), "%s/keys", root);
    snprintf(logd, sizeof(logd), "%s/log", root);
    cf_key *dk = NULL;
    uint8_t pk[32];
    cf_event *ev = NULL;
    cf_audit_bytes *vd = NULL;
    cf_audit_log *log = NULL;
    uint8_t *leaves = NULL;
    cf_audit_prover *pv = NULL;
    cf_hist *lat = NULL;
    if (cf_keys_generate(keys, 2, 1, 0, err, sizeof(err)) != CF_OK ||
        cf_key_load(keys, "data.key", &dk, err, sizeof(err)) != CF_OK ||
        cf_key_load_signing_pub(keys, pk, NULL, NULL, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench audit: keys: %s\n", err);
        goto done;
    }
    ev = cf_calloc(batch, sizeof(*ev));
    vd = cf_calloc(batch, sizeof(*vd));
    if (ev == NULL || vd == NULL) {
        goto done;
    }
    static const char *rules[4] = {"", "large_amount", "velocity", "structuring"};
    for (uint64_t i = 0; i < batch; i++) {
        cf_event *e = &ev[i];
        e->ts_us = 1522540800000000 + (int64_t)i * 9000;
        e->amount_minor = (int64_t)((i * 7919) % 250000);
        snprintf(e->account, sizeof(e->account), "C%06llu", (unsigned long long)(i * 31 % 5000));
        snprintf(e->merchant, sizeof(e->merchant), "T%06llu", (unsigned long long)(i * 17 % 10000));
        memcpy(e->currency, "EUR", 4);
        memcpy(e->country, "FR", 3);
        e->type = CF_TX_PAYMENT;
        e->channel = CF_CH_POS;
        e->fraud = 0;
        e->fraud_scenario = 0;
        const char *r = rules[(i % 16 == 0) ? 1 + i % 3 : 0];
        vd[i].data = r;
        vd[i].len = strlen(r);
    }

    /* append */
    if (cf_audit_open(&log, logd, keys, &opts, NULL, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "confide bench audit: open: %s\n", err);
        goto done;
    }
    if (cf_hist_create(&lat) != CF_OK) {
        goto done;
    }
    uint64_t done_n = 0;
    double cpu0 = cf_cpu_s();
    int64_t t0 = cf_now_ns();
    while (done_n < events) {
        uint32_t n = (uint32_t)(events - done_n < batch ? events - done_n : batch);
        for (uint32_t i = 0; i < n; i++) {
            ev[i].event_id = done_n + i + 1;
            ev[i].seq = done_n + i;
        }
        int64_t a0 = cf_now_ns();
        if (cf_audit_append(log, ev, n, vd, NULL, NULL) != CF_OK) {
            fprintf(stderr, "confide bench audit: append failed\n");
            goto done;
        }
        cf_hist_record(lat, (cf_now_ns() - a0) / 1000);
        done_n += n;
    }
    double append_s = (double)(cf_now_ns() - t0) / 1e9;
    double append_cpu = cf_cpu_s() - cpu0;
    if (cf_audit_close(log) != CF_OK) {
        log = NULL;
        fprintf(stderr, "confide bench audit: close failed\n");
        goto done;
    }
    log = NULL;

    /* verify: with the data key, then hashes only */
    cf_audit_report rep;
    cf_audit_verify_opts vo = {.data_key = dk, .public_key = pk};
    t0 = cf_now_ns();
    cpu0 = cf_cpu_s();
    cf_err e = cf_audit_verify(logd, &vo, &rep, err, sizeof(err));
    double verify_s = (double)(cf_now_ns() - t0) / 1e9;
    double verify_cpu = cf_cpu_s() - cpu0;
    if (e != CF_OK || rep.leaves != events || rep.events != events) {
        fprintf(stderr, "confide bench audit: verify failed: %s %s\n", err, rep.bad_reason);
        goto done;
    }
    vo.data_key = NULL;
    t0 = cf_now_ns();
    cpu0 = cf_cpu_s();
    e = cf_audit_verify(logd, &vo, &rep, err, sizeof(err));
    double verify_h_s = (double)(cf_now_ns() - t0) / 1e9;
    double verify_h_cpu = cf_cpu_s() - cpu0;
    if (e != CF_OK) {
        fprintf(stderr, "confide bench audit: hashes-only verify failed: %s\n", rep.bad_reason);
        goto done;
    }

    /* prove: load the leaves and build the prover once, then time single proofs */
    uint64_t n = 0;
    t0 = cf_now_ns();
    if (cf_audit_load_leaves(logd, &leaves, &n, NULL, NULL, err, sizeof(err)) != CF_OK ||
        cf_audit_prover_create(&pv, leaves, n) != CF_OK) {
        fprintf(stderr, "confide bench audit: load leaves: %s\n", err);
        goto done;
    }
    double load_ms = (double)(cf_now_ns() - t0) / 1e6;
    uint8_t path[CF_AUDIT_PROOF_MAX * CF_AUDIT_HASH_LEN], rootb[CF_AUDIT_HASH_LEN];
    size_t plen = 0;
    uint64_t x = 88172645463325252ULL;
    CF_ASSERT(cf_audit_prover_root(pv, n, rootb) == CF_OK);
    t0 = cf_now_ns();
    for (uint64_t i = 0; i < proofs; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (cf_audit_prover_inclusion(pv, x % n, n, path, &plen) != CF_OK) {
            goto done;
        }
    }
    double prove_us = (double)(cf_now_ns() - t0) / 1e3 / (double)proofs;
    /* and one check that the last proof is right */
    uint64_t last = x % n;
    if (cf_audit_verify_inclusion(last, n, leaves + last * CF_AUDIT_HASH_LEN, path, plen, rootb) !=
        CF_OK) {
        fprintf(stderr, "confide bench audit: a proof did not verify\n");
        goto done;
    }

    double append_rate = (double)events / append_s;
    double verify_rate = (double)events / verify_s;
    double verify_h_rate = (double)events / verify_h_s;
    if (json) {
        printf("{\"append_events_per_s\":%.0f,\"verify_leaves_per_s\":%.0f,\"prove_us\":%.2f,"
               "\"verify_hashes_only_leaves_per_s\":%.0f,\"verify_leaves_per_cpu_s\":%.0f,"
               "\"verify_hashes_only_leaves_per_cpu_s\":%.0f,\"append_events_per_cpu_s\":%.0f,"
               "\"append_cpu_s\":%.3f,\"append_batch_p50_us\":%" PRId64
               ",\"append_batch_p99_us\":%" PRId64 ",\"append_batch_max_us\":%" PRId64 ","
               "\"append_wall_s\":%.3f,\"prove_load_ms\":%.1f,\"events\":%" PRIu64
               ",\"batch\":%" PRIu64 ",\"fsync\":\"%s\",\"fs\":\"%s\",\"dir\":\"%s\"}\n",
               append_rate, verify_rate, prove_us, verify_h_rate, (double)events / verify_cpu,
               (double)events / verify_h_cpu, (double)events / append_cpu, append_cpu,
               cf_hist_percentile(lat, 50, 1), cf_hist_percentile(lat, 99, 1), cf_hist_max(lat),
               append_s, load_ms, events, batch, fsync_s, fs_name(root), base);
    } else {
        printf("audit log on %s (%s), %" PRIu64 " events, batch %" PRIu64 ", fsync %s\n", base,
               fs_name(root), events, batch, fsync_s);
        printf("append:  %12.0f events/s (%.3f s wall, %.3f s cpu: %.0f events per cpu-second;\n"
               "         the rest of the wall time waits for fdatasync)\n",
               append_rate, append_s, append_cpu, (double)events / append_cpu);
        printf("         one batch append (encode, hash, encrypt, write, fdatasync): p50 %" PRId64
               " us, p99 %" PRId64 " us, max %" PRId64 " us\n",
               cf_hist_percentile(lat, 50, 1), cf_hist_percentile(lat, 99, 1), cf_hist_max(lat));
        printf("verify:  %12.0f leaves/s with the data key, %.0f hashes only\n"
               "         (%.0f and %.0f leaves per cpu-second)\n",
               verify_rate, verify_h_rate, (double)events / verify_cpu,
               (double)events / verify_h_cpu);
        printf("prove:   %12.2f us per inclusion proof (leaves loaded in %.1f ms)\n", prove_us,
               load_ms);
    }
    rc = CF_EXIT_OK;
done:
    if (log != NULL) {
        cf_audit_close(log);
    }
    cf_audit_prover_destroy(pv);
    cf_hist_destroy(lat);
    cf_free(leaves);
    cf_free(ev);
    cf_free(vd);
    cf_key_destroy(dk);
    if (keep) {
        fprintf(stderr, "confide bench audit: kept the log in %s and its keys in %s\n", logd, keys);
    } else {
        rm_log(logd);
        rm_log(keys);
        rmdir(root);
    }
    return rc;
}
