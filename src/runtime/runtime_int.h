/* Private to the runtime module: the config struct and its key table. */
#ifndef CF_RUNTIME_INT_H
#define CF_RUNTIME_INT_H

#include <stddef.h>
#include <stdint.h>

#include "confide/runtime.h"

#define CF_CONF_STR_MAX 512

typedef enum { CONF_STR, CONF_INT, CONF_DOUBLE, CONF_BOOL, CONF_ENUM } conf_type;

/* Every configurable value. Strings are inline so the struct copies by value. */
struct cf_config {
    char input_path[CF_CONF_STR_MAX];
    char input_format[16];
    double input_rate;
    char input_shape[CF_CONF_STR_MAX];
    double input_speedup;
    int64_t input_record_max;
    int64_t input_dedup_horizon_ms; /* 0: duplicate event_id detection off */
    int64_t input_dedup_memory_mb;
    int64_t pipeline_batch_max;
    int64_t pipeline_ring_batches;
    char output_dir[CF_CONF_STR_MAX];
    char results_format[16];
    int64_t slo_p99_ms;
    char protect[16];
    int64_t parties;
    int64_t min_count;
    char keys_dir[CF_CONF_STR_MAX];
    char rules_file[CF_CONF_STR_MAX];
    bool audit_enabled;
    char audit_dir[CF_CONF_STR_MAX];
    char audit_witness_dir[CF_CONF_STR_MAX];
    bool recovery_resume_any;
    bool output_dead_letter_raw;
    char audit_fsync[32];
    int64_t audit_checkpoint_events;
    int64_t window_size_ms;
    int64_t window_slide_ms;
    int64_t window_max_delay_ms;
    int64_t window_lateness_ms;
    int64_t window_idle_timeout_ms;
    char window_group_by[128];
    int64_t window_memory_mb;
    int64_t debug_tamper_party;
    int64_t debug_hide_party;
    int64_t party_workers;
    char debug_rescale_at[128];
    char autoscale_policy[16];
    int64_t autoscale_interval_ms;
    int64_t autoscale_min_workers;
    int64_t autoscale_max_workers;
    int64_t autoscale_target_pct;
    int64_t autoscale_cooldown_ms;
    char autoscale_model[CF_CONF_STR_MAX];
    bool autoscale_act;
    int64_t debug_worker_delay_us; /* a party worker holds each event this long (benches) */
    char batch_mode[32];
    int64_t batch_count_max; /* 0: pipeline.batch_max (see cf__config_batch_count) */
    int64_t batch_bytes_max;
    int64_t batch_linger_ms;
    char metrics_listen[CF_CONF_STR_MAX];
    bool metrics_hold;
    int64_t status_interval_ms;
    char role[16];
    int64_t party_id;
    int64_t party_worker;
    char nats_servers[CF_CONF_STR_MAX];
    char nats_user[128];
    char nats_password_file[CF_CONF_STR_MAX];
    char nats_ca_file[CF_CONF_STR_MAX];
    char nats_cert_file[CF_CONF_STR_MAX];
    char nats_key_file[CF_CONF_STR_MAX];
    char nats_prefix[64];
    int64_t nats_replicas;
    int64_t nats_duplicate_window_s;
    int64_t nats_max_ack_pending;
    int64_t nats_linger_ms;
    char output_nats_subject[128];
    char input_nats_subject[128];
    char input_nats_stream[64];
    int64_t input_nats_idle_end_ms;
    char pg_conninfo[CF_CONF_STR_MAX]; /* output.postgres.*: the PostgreSQL sink (pgsink.c) */
    char pg_password_file[CF_CONF_STR_MAX];
    char pg_schema[64];
    char pg_table_prefix[64];
    char convert_to[8]; /* "": no conversion */
    char convert_rates_file[CF_CONF_STR_MAX];
};

struct cf_fx;
/** The rates of convert.to / convert.rates_file (*out NULL when conversion is off). Errors
 *  name the key, or the rates file and its line. */
cf_err cf__config_fx(const struct cf_config *c, struct cf_fx **out, char *errstr,
                     size_t errstr_size);

/** batch.count_max in effect: the key, or pipeline.batch_max when it is 0. */
static inline uint32_t cf__config_batch_count(const struct cf_config *c)
{
    return (uint32_t)(c->batch_count_max > 0 ? c->batch_count_max : c->pipeline_batch_max);
}

/** The `role` key as an enum (secure.h's cf_role values: 0 all, 1 gateway, 2 party,
 *  3 combiner). */
static inline int cf__config_role(const struct cf_config *c)
{
    return c->role[0] == 'g' ? 1 : c->role[0] == 'p' ? 2 : c->role[0] == 'c' ? 3 : 0;
}

typedef struct conf_entry {
    const char *key;
    conf_type type;
    const char *def;     /* default, as text */
    double min, max;     /* numeric bounds (inclusive) */
    const char *choices; /* CONF_ENUM: "a|b|c" */
    size_t offset;
    size_t size; /* CONF_STR / CONF_ENUM buffer size */
    const char *doc;
} conf_entry;

/* Reads a password file (config key @p key names it in errors): refused unless 0600-like
 * (no group or other access); trailing newlines dropped. An empty path gives "". */
cf_err cf__read_password_file(const char *key, const char *path, char *out, size_t n, char *errstr,
                              size_t errstr_size);

#endif
