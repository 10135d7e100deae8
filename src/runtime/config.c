/*
 * Configuration: a table of {key, type, default, bounds, offset, doc} is the single source
 * of truth. Loading, command-line overrides, validation and docs/CONFIG.md all come from it,
 * so a key cannot exist in one place and not in another.
 *
 * YAML is read with libyaml's document API; nested mappings flatten to dotted keys. Every
 * error names the key and the line it is on. Limits: 64 KiB documents are plenty for this
 * config; larger files are refused before parsing.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "confide/io.h"
#include "runtime_int.h"

#define CONF_FILE_MAX (1 << 20)
#define OFF(f) offsetof(struct cf_config, f)
#define SZ(f) sizeof(((struct cf_config *)0)->f)

static const conf_entry entries[] = {
    {"input.path", CONF_STR, "-", 0, 0, NULL, OFF(input_path), SZ(input_path),
     "Input file, or - for standard input."},
    {"input.format", CONF_ENUM, "csv", 0, 0, "csv|ndjson|fdh", OFF(input_format), SZ(input_format),
     "Input format: canonical CSV, canonical NDJSON, or the Fraud-Detection-Handbook CSV."},
    {"input.rate", CONF_DOUBLE, "0", 0, 1e9, NULL, OFF(input_rate), 0,
     "Open-loop pacing in events/s (0: as fast as possible). Latency then counts from each "
     "event's scheduled send time."},
    {"input.shape", CONF_STR, "steady", 0, 0, NULL, OFF(input_shape), SZ(input_shape),
     "Arrival shape with input.rate: steady | diurnal | burst | trace:FILE."},
    {"input.speedup", CONF_DOUBLE, "1", 1e-6, 1e9, NULL, OFF(input_speedup), 0,
     "Time compression of diurnal and trace shapes."},
    {"input.record_max", CONF_INT, "4096", 64, 262144, NULL, OFF(input_record_max), 0,
     "Longest accepted record in bytes; longer ones are dead-lettered."},
    {"input.dedup_horizon_ms", CONF_INT, "86400000", 0, 86400000LL * 366, NULL,
     OFF(input_dedup_horizon_ms), 0,
     "Reject an event whose event_id was already accepted within this much event time (the "
     "newest accepted event time minus this): it goes to dead_letter.ndjson with reason "
     "\"duplicate event_id\" and is never counted twice. Default 24 h. 0: off "
     "(docs/runtime.md, Duplicate event ids)."},
    {"input.dedup_memory_mb", CONF_INT, "64", 1, 65536, NULL, OFF(input_dedup_memory_mb), 0,
     "Memory for the duplicate event_id state, in MiB, reserved at start (43 bytes per "
     "remembered id: 64 MiB hold 1,572,864 ids). When it is full the oldest ids are "
     "forgotten before the horizon (said once on stderr, counted in "
     "confide_dedup_evicted_total), and events keep being accepted."},
    {"pipeline.batch_max", CONF_INT, "1024", 1, 65536, NULL, OFF(pipeline_batch_max), 0,
     "Capacity of every batch buffer between stages (events): preallocated, so it bounds "
     "memory and is the ceiling of batch.count_max."},
    {"pipeline.ring_batches", CONF_INT, "64", 2, 4096, NULL, OFF(pipeline_ring_batches), 0,
     "Batches in flight between two stages; a full ring blocks the producer (backpressure)."},
    {"output.dir", CONF_STR, "", 0, 0, NULL, OFF(output_dir), SZ(output_dir),
     "Output directory (dead_letter.ndjson and, with later stages, results, alerts, late). "
     "Empty: no files; dead letters are only counted."},
    {"output.results_format", CONF_ENUM, "ndjson", 0, 0, "ndjson|csv", OFF(results_format),
     SZ(results_format),
     "Format of the released aggregates: results.ndjson, or results.csv (RFC 4180, with a "
     "header line)."},
    {"slo.p99_ms", CONF_INT, "200", 1, 3600000, NULL, OFF(slo_p99_ms), 0,
     "Latency objective for the 99th percentile, in milliseconds. The adaptive batch "
     "controller aims at half of it (docs/batching.md)."},
    {"batch.mode", CONF_STR, "adaptive", 0, 0, NULL, OFF(batch_mode), SZ(batch_mode),
     "Batch sizing at the gateway: adaptive (the controller picks size and linger from the "
     "measured per-batch cost, the arrival rate and the live p99 to meet slo.p99_ms) or "
     "fixed:N (always N events, except when batch.linger_ms or the end of input cuts a batch "
     "short; N in 1..batch.count_max)."},
    {"batch.count_max", CONF_INT, "0", 0, 65536, NULL, OFF(batch_count_max), 0,
     "Upper bound on events per batch for the controller; 0: pipeline.batch_max. Must not "
     "exceed pipeline.batch_max (the buffer capacity)."},
    {"batch.bytes_max", CONF_INT, "8388608", 1024, 1073741824, NULL, OFF(batch_bytes_max), 0,
     "Upper bound on raw input bytes per batch (a record larger than this still travels, "
     "alone)."},
    {"batch.linger_ms", CONF_INT, "5", 0, 60000, NULL, OFF(batch_linger_ms), 0,
     "The most a partial batch may wait for more events (the controller may choose less). "
     "0: a batch leaves as soon as no more input is at hand."},
    {"metrics.listen", CONF_STR, "", 0, 0, NULL, OFF(metrics_listen), SZ(metrics_listen),
     "Serve the live console (/), its JSON (/api/status), Prometheus /metrics and /healthz "
     "on HOST:PORT for the whole run (e.g. 127.0.0.1:9464; port 0 picks a free port). Only "
     "this address is served. Empty: no server (docs/metrics.md)."},
    {"metrics.hold", CONF_BOOL, "false", 0, 0, NULL, OFF(metrics_hold), 0,
     "After the run, keep serving the console, /api/status and /metrics (with the final "
     "counts and the summary) until SIGINT or SIGTERM. Needs metrics.listen."},
    {"status.interval_ms", CONF_INT, "1000", 50, 3600000, NULL, OFF(status_interval_ms), 0,
     "Refresh interval of the live status line (on a TTY) and of --stats-json lines."},
    {"protect", CONF_ENUM, "lsa", 0, 0, "lsa|plain|none", OFF(protect), SZ(protect),
     "How aggregation parties see events: lsa (secret shares, pseudonymous keys, MAC-checked "
     "combine), plain (no protection, baseline), none (no aggregation: decode, rules and "
     "audit only). The Paillier baseline is measured by `confide bench protect`."},
    {"parties", CONF_INT, "2", 2, 8, NULL, OFF(parties), 0,
     "Number of non-colluding aggregation parties k for lsa."},
    {"min_count", CONF_INT, "10", 1, 1000000000, NULL, OFF(min_count), 0,
     "Release a (window, group) aggregate only when it counts at least this many events "
     "(k-anonymity: below 10 a released row can be a single payment's exact amount, group "
     "and minute; a lower value is warned about)."},
    {"convert.to", CONF_STR, "", 0, 0, NULL, OFF(convert_to), SZ(convert_to),
     "Reporting currency (an ISO 4217 code): every amount is converted into it with "
     "convert.rates_file before it is aggregated, so results group on and carry this currency "
     "(exact integer arithmetic, half to even at its minor unit). Empty: off, every aggregate "
     "is per currency (docs/schema.md, Conversion)."},
    {"convert.rates_file", CONF_STR, "", 0, 0, NULL, OFF(convert_rates_file),
     SZ(convert_rates_file),
     "Rates for convert.to: CSV with the header from_currency,to_currency,rate,valid_from,"
     "valid_to (rate an exact decimal, validity RFC 3339 UTC, valid_to exclusive or empty). An "
     "event with no rate for its currency and time is dead-lettered (\"no rate for XXX at "
     "TIME\"); the rates each batch used are recorded in the audit log."},
    {"keys.dir", CONF_STR, "", 0, 0, NULL, OFF(keys_dir), SZ(keys_dir),
     "Key directory (confide keygen). Empty: OUTPUT/keys, created with fresh keys on the "
     "first run."},
    {"rules.file", CONF_STR, "", 0, 0, NULL, OFF(rules_file), SZ(rules_file),
     "Compliance rules (YAML, docs/rules.md). Empty: no rules, every verdict is pass."},
    {"audit.enabled", CONF_BOOL, "true", 0, 0, NULL, OFF(audit_enabled), 0,
     "Write every accepted event to the audit log before anything else happens to it "
     "(needs an output or audit directory)."},
    {"audit.dir", CONF_STR, "", 0, 0, NULL, OFF(audit_dir), SZ(audit_dir),
     "Audit log directory. Empty: OUTPUT/audit."},
    {"output.dead_letter_raw", CONF_BOOL, "false", 0, 0, NULL, OFF(output_dead_letter_raw), 0,
     "Write each rejected record's raw bytes (account, merchant, amount in clear) into "
     "dead_letter.ndjson. Default: position (line, byte offset) and reason only."},
    {"recovery.resume_any_input", CONF_BOOL, "false", 0, 0, NULL, OFF(recovery_resume_any), 0,
     "When the audit log already holds events, a restart skips that many accepted input "
     "records; it first checks they are the logged events and refuses (exit 2) otherwise. "
     "true skips them unchecked (`confide run --resume`), as for a stream that cannot be "
     "re-read."},
    {"audit.witness_dir", CONF_STR, "", 0, 0, NULL, OFF(audit_witness_dir), SZ(audit_witness_dir),
     "Publish every signed tree head, as a C2SP checkpoint, to WITNESS_DIR/<log id>.checkpoint "
     "(atomic rename) for `confide audit witness` to cosign. Empty: no publication."},
    {"audit.fsync", CONF_STR, "batch", 0, 0, NULL, OFF(audit_fsync), SZ(audit_fsync),
     "Durability: batch (a batch is durable before it is forwarded), interval:MS, or none "
     "(benchmarks only)."},
    {"audit.checkpoint_events", CONF_INT, "65536", 0, 1000000000, NULL,
     OFF(audit_checkpoint_events), 0,
     "Write a checkpoint (window state and output positions) into the audit log every this "
     "many events; a restarted run resumes from the last one. 0: never."},
    {"window.size_ms", CONF_INT, "60000", 1, 86400000LL * 31, NULL, OFF(window_size_ms), 0,
     "Event-time window length in milliseconds."},
    {"window.slide_ms", CONF_INT, "0", 0, 86400000LL * 31, NULL, OFF(window_slide_ms), 0,
     "Slide of sliding windows in milliseconds; 0 for tumbling windows."},
    {"window.max_delay_ms", CONF_INT, "5000", 0, 86400000LL, NULL, OFF(window_max_delay_ms), 0,
     "Bounded out-of-orderness: the watermark trails the largest event time by this much."},
    {"window.lateness_ms", CONF_INT, "0", 0, 86400000LL, NULL, OFF(window_lateness_ms), 0,
     "Allowed lateness: a fired window still accepts (and re-emits) for this long; later "
     "events go to late.ndjson."},
    {"window.idle_timeout_ms", CONF_INT, "0", 0, 86400000LL, NULL, OFF(window_idle_timeout_ms), 0,
     "Advance the watermark by processing time after this long without events (0: off)."},
    {"window.group_by", CONF_STR, "merchant", 0, 0, NULL, OFF(window_group_by), SZ(window_group_by),
     "Comma-separated subset of merchant, account, country, channel, type, currency "
     "(or none)."},
    {"window.memory_mb", CONF_INT, "256", 1, 1048576, NULL, OFF(window_memory_mb), 0,
     "Keyed window state limit per party, in MiB; at the limit events are sent to the late "
     "output with reason \"state limit\" and counted."},
    {"debug.tamper_party", CONF_INT, "-1", -1, 7, NULL, OFF(debug_tamper_party), 0,
     "Fault injection for tests: party I alters its first partial sum, which the combiner "
     "must catch. -1: off."},
    {"debug.hide_party", CONF_INT, "-1", -1, 7, NULL, OFF(debug_hide_party), 0,
     "Fault injection for tests: party I reports its first group of min_count or more events "
     "as below min_count (hiding it), which the combiner must catch. -1: off."},
    {"party.workers", CONF_INT, "1", 1, 16, NULL, OFF(party_workers), 0,
     "Workers per party, each owning a range of the 128 key groups: threads in confide run "
     "(changed while running by cf_pipeline_rescale or autoscale.policy), worker processes "
     "(confide party --worker W, one stream each) in a distributed run, where every role "
     "must use the same value. window.memory_mb applies to each worker."},
    {"autoscale.policy", CONF_ENUM, "off", 0, 0, "off|static|reactive|ds2|predictive",
     OFF(autoscale_policy), SZ(autoscale_policy),
     "confide run: resize the party workers while running (docs/autoscaling.md): static "
     "(autoscale.max_workers), reactive (utilization thresholds), ds2 (true processing rate) "
     "or predictive (autoscale.model's forecast)."},
    {"autoscale.interval_ms", CONF_INT, "1000", 50, 3600000, NULL, OFF(autoscale_interval_ms), 0,
     "How often the autoscaler measures the workers and decides."},
    {"autoscale.min_workers", CONF_INT, "1", 1, 16, NULL, OFF(autoscale_min_workers), 0,
     "The autoscaler's fewest workers per party."},
    {"autoscale.max_workers", CONF_INT, "8", 1, 16, NULL, OFF(autoscale_max_workers), 0,
     "The autoscaler's most workers per party (static: the size it sets)."},
    {"autoscale.target_util", CONF_INT, "70", 5, 100, NULL, OFF(autoscale_target_pct), 0,
     "ds2 and predictive: the busy percentage per worker aimed at; reactive scales up above "
     "it + 10 and down below it - 30."},
    {"autoscale.cooldown_ms", CONF_INT, "10000", 0, 3600000, NULL, OFF(autoscale_cooldown_ms), 0,
     "No decision for this long after a rescale (reactive cooldown, ds2 stabilization) and "
     "scale down only after wanting it this long (ds2, predictive)."},
    {"autoscale.act", CONF_BOOL, "true", 0, 0, NULL, OFF(autoscale_act), 0,
     "false: only advise (the confide_desired_workers gauge on /metrics, for Kubernetes or "
     "another orchestrator), never rescale."},
    {"autoscale.model", CONF_STR, "", 0, 0, NULL, OFF(autoscale_model), SZ(autoscale_model),
     "predictive: a model from `confide forecast train` over a trace of events per "
     "autoscale.interval_ms."},
    {"debug.worker_delay_us", CONF_INT, "0", 0, 1000000, NULL, OFF(debug_worker_delay_us), 0,
     "Benchmarks: every party worker holds each event this many microseconds more (a sleep, "
     "no CPU), an I/O-bound per-event cost that makes the workers the bottleneck and their "
     "capacity grow with their number on a small machine (confide bench autoscale --live). "
     "0: off."},
    {"debug.rescale_at", CONF_STR, "", 0, 0, NULL, OFF(debug_rescale_at), SZ(debug_rescale_at),
     "Fault injection for tests: rescale the party workers at log indexes, e.g. "
     "\"1000:3,5000:2\" (at index 1000 to 3 workers, at 5000 to 2). Empty: off."},
    {"role", CONF_ENUM, "all", 0, 0, "all|gateway|party|combiner", OFF(role), SZ(role),
     "Which part of the pipeline this process runs: all (embedded: one process), or, "
     "distributed over NATS JetStream (docs/distributed.md), gateway, party or combiner. "
     "Set by `confide gateway`, `confide party` and `confide combine`."},
    {"party.id", CONF_INT, "0", 0, 7, NULL, OFF(party_id), 0,
     "role party: which party this process is (0..parties-1)."},
    {"party.worker", CONF_INT, "0", 0, 15, NULL, OFF(party_worker), 0,
     "role party with party.workers > 1: which of the party's worker processes this is "
     "(0..party.workers-1); it owns that range of the key groups."},
    {"nats.servers", CONF_STR, "nats://127.0.0.1:4222", 0, 0, NULL, OFF(nats_servers),
     SZ(nats_servers),
     "NATS servers of the JetStream cluster, comma-separated (tls:// or nats://; with "
     "nats.ca_file set the connection is TLS either way)."},
    {"nats.user", CONF_STR, "", 0, 0, NULL, OFF(nats_user), SZ(nats_user),
     "NATS user of this role (each role has its own, with its own subject permissions)."},
    {"nats.password_file", CONF_STR, "", 0, 0, NULL, OFF(nats_password_file),
     SZ(nats_password_file),
     "File holding the NATS password of nats.user (mode 0600, refused otherwise)."},
    {"nats.ca_file", CONF_STR, "", 0, 0, NULL, OFF(nats_ca_file), SZ(nats_ca_file),
     "TLS: the CA certificate that signed the servers' certificates. Empty: no TLS."},
    {"nats.cert_file", CONF_STR, "", 0, 0, NULL, OFF(nats_cert_file), SZ(nats_cert_file),
     "TLS client certificate (optional, for servers that verify clients)."},
    {"nats.key_file", CONF_STR, "", 0, 0, NULL, OFF(nats_key_file), SZ(nats_key_file),
     "TLS client private key for nats.cert_file (mode 0600)."},
    {"nats.prefix", CONF_STR, "confide", 0, 0, NULL, OFF(nats_prefix), SZ(nats_prefix),
     "Subject prefix (PREFIX.shares.I, PREFIX.partials.I, PREFIX.groups); streams are named "
     "after it in upper case (CONFIDE_SHARES_0, ...). One prefix per pipeline."},
    {"nats.replicas", CONF_INT, "1", 1, 5, NULL, OFF(nats_replicas), 0,
     "Copies of every stream in a JetStream cluster (3 survives a node loss)."},
    {"nats.duplicate_window_s", CONF_INT, "3600", 1, 604800, NULL, OFF(nats_duplicate_window_s), 0,
     "How long streams remember message ids: a role that restarts and republishes what it "
     "sent before its last checkpoint within this time adds nothing twice."},
    {"input.nats_subject", CONF_STR, "", 0, 0, NULL, OFF(input_nats_subject),
     SZ(input_nats_subject),
     "Read the input from this JetStream subject instead of input.path: one record per "
     "message (CSV: the header first), e.g. from `confide gen --nats SUBJECT`. A message is "
     "acked once its records are durable in the audit log, and OUT/input.pos records the "
     "last such stream sequence: a restart resumes after it and checks only the messages the "
     "log holds beyond it (without input.pos: from the first message, as for a file). Uses "
     "the nats.* connection."},
    {"input.nats_stream", CONF_STR, "CONFIDE_IN", 0, 0, NULL, OFF(input_nats_stream),
     SZ(input_nats_stream),
     "The JetStream stream holding input.nats_subject (created if missing)."},
    {"input.nats_idle_end_ms", CONF_INT, "0", 0, 86400000LL, NULL, OFF(input_nats_idle_end_ms), 0,
     "With input.nats_subject: end the input after this long without a new message (a replay "
     "of a finite stream). 0: run until SIGINT/SIGTERM."},
    {"output.nats_subject", CONF_STR, "", 0, 0, NULL, OFF(output_nats_subject),
     SZ(output_nats_subject),
     "Also publish every output line to JetStream (the nats.* connection): SUBJECT.results, "
     "SUBJECT.late and SUBJECT.alerts, in a stream named after nats.prefix (CONFIDE_OUT). "
     "Each message's id is a hash of the line, so a run that restarts after a crash "
     "publishes nothing twice. Empty: files only."},
    {"output.postgres.conninfo", CONF_STR, "", 0, 0, NULL, OFF(pg_conninfo), SZ(pg_conninfo),
     "Also write results, alerts and late records to PostgreSQL, exactly once across crashes: "
     "a libpq connection string without a password (`host=db port=5432 dbname=pay "
     "user=confide sslmode=verify-full`). Tables are created if missing (docs/schema.md, "
     "PostgreSQL tables); each durable checkpoint's rows and the sink's position are written "
     "in one transaction (docs/runtime.md, PostgreSQL sink). Needs output.dir and the audit "
     "log. Empty: off."},
    {"output.postgres.password_file", CONF_STR, "", 0, 0, NULL, OFF(pg_password_file),
     SZ(pg_password_file),
     "File holding the database password (mode 0600, refused otherwise). Empty: libpq's "
     "PGPASSFILE or ~/.pgpass, or no password. A password in the conninfo is refused."},
    {"output.postgres.schema", CONF_STR, "public", 0, 0, NULL, OFF(pg_schema), SZ(pg_schema),
     "Schema of the sink's tables (created if missing): lower-case letters, digits, _."},
    {"output.postgres.table_prefix", CONF_STR, "confide_", 0, 0, NULL, OFF(pg_table_prefix),
     SZ(pg_table_prefix),
     "Prefix of the table names: PREFIXresults, PREFIXalerts, PREFIXlate, PREFIXoffsets."},
    {"nats.linger_ms", CONF_INT, "5", 0, 1000, NULL, OFF(nats_linger_ms), 0,
     "How long a role may hold a frame that is not full for more batches (as Kafka's linger.ms): "
     "at a low rate one frame then carries several batches, with fewer messages through "
     "nats-server and fewer wake-ups in every role. Adds at most this to the time from the "
     "gateway's audit log to a party's windows; the gateway's acceptance latency is unchanged. "
     "0: send as soon as nothing is in flight."},
    {"nats.max_ack_pending", CONF_INT, "4096", 1, 1000000, NULL, OFF(nats_max_ack_pending), 0,
     "Messages a receiver may hold unacknowledged (flow control): input events, and frames "
     "between the roles, where at most 48 per connection are taken (frames are up to 1 MB, and "
     "nats-server stops delivering to a client with more than 64 MB pending)."},
};

#define N_ENTRIES (sizeof(entries) / sizeof(entries[0]))

static const conf_entry *find_entry(const char *key)
{
    for (size_t i = 0; i < N_ENTRIES; i++) {
        if (strcmp(entries[i].key, key) == 0) {
            return &entries[i];
        }
    }
    return NULL;
}

static bool enum_has(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (*p != '\0') {
        const char *bar = strchr(p, '|');
        size_t len = bar != NULL ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) {
            return true;
        }
        if (bar == NULL) {
            break;
        }
        p = bar + 1;
    }
    return false;
}

/* batch.mode syntax; the bound N <= batch.count_max is checked when the pipeline is built,
 * since the two keys may come in any order. */
static bool batch_mode_ok(const char *v)
{
    if (strcmp(v, "adaptive") == 0) {
        return true;
    }
    if (strncmp(v, "fixed:", 6) != 0 || v[6] < '1' || v[6] > '9') {
        return false;
    }
    for (const char *p = v + 7; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    return strlen(v + 6) <= 5;
}

/* Parses and stores one value. @p where is "" or " (file:line N)". */
static cf_err set_entry(cf_config *c, const conf_entry *e, const char *v, const char *where,
                        char *errstr, size_t errstr_size)
{
    char *field = (char *)c + e->offset;
    switch (e->type) {
    case CONF_STR:
    case CONF_ENUM:
        if (strlen(v) >= e->size) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s%s: value too long (max %zu)",
                              e->key, where, e->size - 1);
        }
        if (e->type == CONF_ENUM && !enum_has(e->choices, v)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s%s: '%s' is not one of %s",
                              e->key, where, v, e->choices);
        }
        if (e->offset == OFF(convert_to) && v[0] != '\0' &&
            (strlen(v) != 3 || !cf_currency_valid(v, 3) || cf_currency_exponent(v) < 0)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "%s%s: '%s' is not an ISO 4217 currency code", e->key, where, v);
        }
        if (e->offset == OFF(batch_mode) && !batch_mode_ok(v)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "%s%s: '%s' is not adaptive or fixed:N (N a positive integer)",
                              e->key, where, v);
        }
        memcpy(field, v, strlen(v) + 1);
        return CF_OK;
    case CONF_INT: {
        errno = 0;
        char *end = NULL;
        long long x = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0') {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s%s: '%s' is not an integer",
                              e->key, where, v);
        }
        if ((double)x < e->min || (double)x > e->max) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "%s%s: %lld is out of range [%.0f, %.0f]", e->key, where, x, e->min,
                              e->max);
        }
        int64_t val = x;
        memcpy(field, &val, sizeof(val));
        return CF_OK;
    }
    case CONF_DOUBLE: {
        errno = 0;
        char *end = NULL;
        double x = strtod(v, &end);
        if (errno != 0 || end == v || *end != '\0' || !isfinite(x)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s%s: '%s' is not a number", e->key,
                              where, v);
        }
        if (x < e->min || x > e->max) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s%s: %g is out of range [%g, %g]",
                              e->key, where, x, e->min, e->max);
        }
        memcpy(field, &x, sizeof(x));
        return CF_OK;
    }
    case CONF_BOOL: {
        bool b;
        if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0) {
            b = true;
        } else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0) {
            b = false;
        } else {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "%s%s: '%s' is not a boolean (true/false)", e->key, where, v);
        }
        memcpy(field, &b, sizeof(b));
        return CF_OK;
    }
    }
    return CF_E_INVAL;
}

cf_err cf__config_fx(const cf_config *c, struct cf_fx **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (c->convert_to[0] == '\0' && c->convert_rates_file[0] == '\0') {
        return CF_OK;
    }
    if (c->convert_to[0] == '\0') {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "convert.to: required with convert.rates_file (the reporting currency)");
    }
    if (c->convert_rates_file[0] == '\0') {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "convert.rates_file: required with convert.to (the rates to %s)",
                          c->convert_to);
    }
    return cf_fx_load(out, c->convert_rates_file, c->convert_to, errstr, errstr_size);
}

cf_err cf_config_create(cf_config **out)
{
    cf_config *c = cf_calloc(1, sizeof(*c));
    if (c == NULL) {
        return CF_E_NOMEM;
    }
    for (size_t i = 0; i < N_ENTRIES; i++) {
        cf_err err = set_entry(c, &entries[i], entries[i].def, "", NULL, 0);
        CF_ASSERT(err == CF_OK); /* a bad default is a programmer error */
    }
    *out = c;
    return CF_OK;
}

void cf_config_destroy(cf_config *c)
{
    cf_free(c);
}

cf_err cf_config_set(cf_config *c, const char *key, const char *value, char *errstr,
                     size_t errstr_size)
{
    const conf_entry *e = find_entry(key);
    if (e == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "unknown config key '%s'", key);
    }
    return set_entry(c, e, value, "", errstr, errstr_size);
}

cf_err cf_config_get(const cf_config *c, const char *key, char *buf, size_t size)
{
    const conf_entry *e = find_entry(key);
    if (e == NULL) {
        return CF_E_NOTFOUND;
    }
    const char *field = (const char *)c + e->offset;
    switch (e->type) {
    case CONF_STR:
    case CONF_ENUM:
        snprintf(buf, size, "%s", field);
        break;
    case CONF_INT: {
        int64_t v;
        memcpy(&v, field, sizeof(v));
        snprintf(buf, size, "%lld", (long long)v);
        break;
    }
    case CONF_DOUBLE: {
        double v;
        memcpy(&v, field, sizeof(v));
        snprintf(buf, size, "%g", v);
        break;
    }
    case CONF_BOOL: {
        bool v;
        memcpy(&v, field, sizeof(v));
        snprintf(buf, size, "%s", v ? "true" : "false");
        break;
    }
    }
    return CF_OK;
}

/* Walks a mapping node, flattening nested mappings into dotted keys. */
#define CONF_DEPTH_MAX 8 /* keys are at most a few levels deep; aliases can loop forever */

/* Keys naming files or directories: relative values in a config file are resolved against
 * the file's folder (as Prometheus does for rule files), so a config works from anywhere. */
static bool is_path_key(const char *key)
{
    static const char *const keys[] = {"input.path",
                                       "output.dir",
                                       "keys.dir",
                                       "rules.file",
                                       "audit.dir",
                                       "audit.witness_dir",
                                       "nats.ca_file",
                                       "nats.password_file",
                                       "nats.cert_file",
                                       "nats.key_file",
                                       "autoscale.model",
                                       "convert.rates_file",
                                       "output.postgres.password_file"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(key, keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

static cf_err walk(cf_config *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                   int depth, const char *name, const char *base, char *errstr, size_t errstr_size)
{
    if (depth > CONF_DEPTH_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "%s:%lu: mappings nested deeper than %d levels (a recursive alias?)",
                          name, (unsigned long)map->start_mark.line + 1, CONF_DEPTH_MAX);
    }
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(doc, pair->value);
        unsigned long line = k->start_mark.line + 1;
        if (k->type != YAML_SCALAR_NODE) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%lu: keys must be scalars", name,
                              line);
        }
        char key[256];
        int n = snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "",
                         (const char *)k->data.scalar.value);
        if (n < 0 || (size_t)n >= sizeof(key)) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%lu: key too long", name, line);
        }
        if (v->type == YAML_MAPPING_NODE) {
            cf_err err = walk(c, doc, v, key, depth + 1, name, base, errstr, errstr_size);
            if (err != CF_OK) {
                return err;
            }
            continue;
        }
        const conf_entry *e = find_entry(key);
        if (e == NULL) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%lu: unknown key '%s'", name,
                              line, key);
        }
        if (v->type != YAML_SCALAR_NODE) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%lu: %s must be a scalar", name,
                              v->start_mark.line + 1, key);
        }
        char where[300];
        snprintf(where, sizeof(where), " (%s line %lu)", name, v->start_mark.line + 1);
        const char *val = (const char *)v->data.scalar.value;
        char joined[2 * CF_CONF_STR_MAX];
        if (base != NULL && is_path_key(key) && val[0] != '\0' && val[0] != '/' &&
            strcmp(val, "-") != 0) {
            snprintf(joined, sizeof(joined), "%s/%s", base, val);
            val = joined;
        }
        cf_err err = set_entry(c, e, val, where, errstr, errstr_size);
        if (err != CF_OK) {
            return err;
        }
    }
    return CF_OK;
}

static cf_err load_string(cf_config *c, const char *yaml, size_t len, const char *name,
                          const char *base, char *errstr, size_t errstr_size)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    cf_err err = CF_OK;
    if (!yaml_parser_initialize(&parser)) {
        return CF_E_NOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s:%zu: YAML error: %s", name,
                         parser.problem_mark.line + 1,
                         parser.problem != NULL ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return err;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        /* An empty file keeps every default. */
    } else if (root->type != YAML_MAPPING_NODE) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "%s:%zu: the top level must be a mapping of keys", name,
                         root->start_mark.line + 1);
    } else {
        err = walk(c, &doc, root, "", 0, name, base, errstr, errstr_size);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return err;
}

cf_err cf_config_load_string(cf_config *c, const char *yaml, size_t len, const char *name,
                             char *errstr, size_t errstr_size)
{
    return load_string(c, yaml, len, name, NULL, errstr, errstr_size);
}

cf_err cf_config_load_file(cf_config *c, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot open config %s", path);
    }
    char *buf = cf_malloc(CONF_FILE_MAX);
    if (buf == NULL) {
        fclose(f);
        return CF_E_NOMEM;
    }
    size_t n = fread(buf, 1, CONF_FILE_MAX, f);
    bool too_big = n == CONF_FILE_MAX;
    fclose(f);
    cf_err err;
    if (too_big) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s: config larger than %d bytes", path,
                         CONF_FILE_MAX);
    } else {
        char base[CF_CONF_STR_MAX];
        const char *slash = strrchr(path, '/');
        if (slash == NULL) {
            snprintf(base, sizeof(base), ".");
        } else {
            snprintf(base, sizeof(base), "%.*s", (int)(slash - path > 0 ? slash - path : 1), path);
        }
        err = load_string(c, buf, n, path, base, errstr, errstr_size);
    }
    cf_free(buf);
    return err;
}

void cf_config_write_doc(FILE *f)
{
    fprintf(f, "# Configuration reference\n\n"
               "Generated from the key table in src/runtime/config.c (`confide run "
               "--config-doc`).\nEvery key has a default; an unknown key or a bad value is an "
               "error naming the key and its line. Nested YAML mappings name keys with dots: "
               "`input: {format: csv}` sets `input.format`. Relative paths in a config file "
               "(input.path, output.dir, keys.dir, rules.file, audit.dir, audit.witness_dir, "
               "nats.*_file, output.postgres.password_file) are resolved against the config "
               "file's folder; on the command line they are relative to the working "
               "directory.\n\n"
               "| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    static const char *const tn[] = {"string", "integer", "number", "boolean", "enum"};
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const conf_entry *e = &entries[i];
        char range[128] = "";
        if (e->type == CONF_INT || e->type == CONF_DOUBLE) {
            snprintf(range, sizeof(range), "%g .. %g", e->min, e->max);
        } else if (e->type == CONF_ENUM) {
            /* A literal '|' would split the Markdown table cell. */
            size_t j = 0;
            for (const char *ch = e->choices; *ch != '\0' && j + 3 < sizeof(range); ch++) {
                if (*ch == '|') {
                    range[j++] = ',';
                    range[j++] = ' ';
                } else {
                    range[j++] = *ch;
                }
            }
            range[j] = '\0';
        }
        fprintf(f, "| `%s` | %s | `%s` | %s | ", e->key, tn[e->type], e->def[0] ? e->def : "\"\"",
                range);
        for (const char *ch = e->doc; *ch != '\0'; ch++) {
            if (*ch == '|') {
                fputc('\\', f); /* keep the Markdown table intact */
            }
            fputc(*ch, f);
        }
        fputs(" |\n", f);
    }
}

cf_err cf__read_password_file(const char *key, const char *path, char *out, size_t n, char *errstr,
                              size_t errstr_size)
{
    out[0] = '\0';
    if (path[0] == '\0') {
        return CF_OK;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        cf_err e = cf_err_errno(errno, errstr, errstr_size, "%s: cannot read %s", key, path);
        if (fd >= 0) {
            close(fd);
        }
        return e;
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return cf_err_set(CF_E_PERM, errstr, errstr_size,
                          "%s: %s is readable by others (mode %03o): chmod 600 it", key, path,
                          (unsigned)(st.st_mode & 0777));
    }
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "%s: %s", key, path);
    }
    out[r] = '\0';
    while (r > 0 && (out[r - 1] == '\n' || out[r - 1] == '\r')) {
        out[--r] = '\0';
    }
    return CF_OK;
}
