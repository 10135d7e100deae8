/**
 * @file rules.h
 * @brief Compliance rules on plaintext events (gateway side): configuration from YAML,
 * per-event verdicts, a compact verdict encoding for the audit log, and alert encoding.
 *
 * Rule types (docs/rules.md):
 *   large_amount       one transaction with amount >= threshold (default "10000.00")
 *   daily_aggregate    per variable (default account) and currency, per business day (UTC or
 *                      a fixed utc_offset), running total > threshold (default "10000.00")
 *   structuring        >= min_count transactions, each within margin_pct below threshold
 *                      (threshold * (1 - margin_pct/100) <= amount < threshold), within period
 *   velocity           >= hits events with the same variable value within period
 *   blocked_party      account and/or merchant listed in a file (one id per line),
 *                      reloadable without a restart (cf_rules_reload_lists)
 *   high_risk_country  the event's country is in a list
 * Amounts in the config are decimal strings in major units ("220.00"), compared exactly
 * against minor units in each event's own currency exponent (no FX conversion).
 *
 * Keyed state (daily_aggregate, structuring, velocity) is bounded in time (state older than
 * the rule's period is expired) and in memory (max_keys per rule; at the limit the least
 * recently updated key is evicted and counted). Evaluation never fails; keyed state grows by
 * doubling toward max_keys (amortized, never per event), and if growing fails the oldest key
 * is evicted instead.
 *
 * Threads: cf_rules_eval runs on one thread per instance. cf_rules_reload_lists may run on
 * any other thread concurrently with it (lists are swapped atomically; readers never see a
 * half-loaded list). Not async-signal-safe: a SIGHUP handler should set a flag that a
 * thread acts on.
 */
#ifndef CONFIDE_RULES_H
#define CONFIDE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/event.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CF_RULES_MAX 64   /* rules in one file */
#define CF_RULE_ID_MAX 63 /* bytes in a rule id: [A-Za-z0-9_.-] */
/** Largest cf_verdict_encode output. */
#define CF_VERDICT_ENCODED_MAX (2 + CF_RULES_MAX * (1 + CF_RULE_ID_MAX))

typedef enum {
    CF_RULE_LARGE_AMOUNT = 0,
    CF_RULE_DAILY_AGGREGATE,
    CF_RULE_STRUCTURING,
    CF_RULE_VELOCITY,
    CF_RULE_BLOCKED_PARTY,
    CF_RULE_HIGH_RISK_COUNTRY,
    CF_RULE__COUNT
} cf_rule_type;

/** "large_amount" etc.; NULL when out of range. */
const char *cf_rule_type_name(cf_rule_type t);

/** One rule that fired for an event, with what its alert details need. */
typedef struct cf_rule_hit {
    uint16_t rule;        /* index of the rule in the file (cf_rules_id) */
    uint8_t type;         /* cf_rule_type */
    uint8_t field;        /* blocked_party: 0 account, 1 merchant */
    uint32_t count;       /* velocity, structuring: events counted in the period */
    int64_t amount_minor; /* large_amount: the amount; daily_aggregate: the day's total */
    int64_t day;          /* daily_aggregate: business day (days since the epoch) */
} cf_rule_hit;

/** Verdict of one event: pass when n == 0, else the rules hit, in file order. */
typedef struct cf_verdict {
    uint32_t n;
    cf_rule_hit hits[CF_RULES_MAX];
} cf_verdict;

typedef struct cf_rules cf_rules;

/**
 * Loads a rules file. Errors (CF_E_INVAL, CF_E_IO/NOTFOUND for list files) name the file,
 * the line and the key: "rules.yaml:4: rule 'big': unknown key 'treshold'".
 * Relative blocked_party list paths are resolved against the rules file's directory.
 * Returns owned *out (free with cf_rules_destroy).
 */
cf_err cf_rules_load_file(cf_rules **out, const char *path, char *errstr, size_t errstr_size);
/**
 * Same from memory. @p name (borrowed) appears in errors; @p base_dir (borrowed, may be
 * NULL for the current directory) resolves relative list paths.
 */
cf_err cf_rules_load_string(cf_rules **out, const char *yaml, size_t len, const char *name,
                            const char *base_dir, char *errstr, size_t errstr_size);
/** Accepts NULL. */
void cf_rules_destroy(cf_rules *r);

/**
 * Evaluates every enabled rule for @p ev (borrowed) in file order, updating rule state, and
 * fills @p out. Never fails. @locality the evaluation thread
 */
void cf_rules_eval(cf_rules *r, const cf_event *ev, cf_verdict *out);

/**
 * Re-reads every blocked_party list file and swaps the new lists in atomically. On any error
 * no list changes (all or nothing) and errstr names the file and line. Safe to call from
 * another thread while cf_rules_eval runs; calls to reload are serialized internally.
 */
cf_err cf_rules_reload_lists(cf_rules *r, char *errstr, size_t errstr_size);

size_t cf_rules_count(const cf_rules *r);
/** Id of rule @p i (borrowed, lives as long as @p r). NULL when out of range. */
const char *cf_rules_id(const cf_rules *r, size_t i);
cf_rule_type cf_rules_type(const cf_rules *r, size_t i);
/** alerts.include_amounts from the file (default false). */
bool cf_rules_include_amounts(const cf_rules *r);

/** Per-rule counters. Read on the evaluation thread (or accept slightly stale values). */
typedef struct cf_rule_stats {
    uint64_t evaluated;
    uint64_t hits;
    uint64_t evictions;    /* keys evicted at max_keys */
    uint64_t expired;      /* keys dropped after their period */
    uint64_t keys_live;    /* gauge */
    uint64_t keys_max;     /* configured max_keys */
    uint64_t state_bytes;  /* gauge: bytes allocated for keyed state */
    uint64_t list_entries; /* blocked_party: ids in the current list */
    uint64_t list_reloads; /* blocked_party: successful reloads */
} cf_rule_stats;
cf_err cf_rules_stats(const cf_rules *r, size_t i, cf_rule_stats *out);

/* ---- verdict encoding (audit log) ------------------------------------------------------- */

/**
 * Compact, self-describing verdict: byte 0 = format version (1), byte 1 = number of hits,
 * then per hit: id length (1 byte) and the rule id bytes. Pass is {0x01, 0x00}. Rule ids
 * rather than indexes, so the audit record stays meaningful if the rules file changes.
 * Returns the length, or 0 when @p size is too small (CF_VERDICT_ENCODED_MAX always fits).
 */
size_t cf_verdict_encode(const cf_rules *r, const cf_verdict *v, uint8_t *buf, size_t size);
/**
 * Renders an encoded verdict as text: "pass" or the ids joined by ',' ("big,velo").
 * CF_E_CORRUPT when malformed, CF_E_INVAL when @p size is too small.
 */
cf_err cf_verdict_to_text(const uint8_t *buf, size_t len, char *out, size_t size);
/** Number of hits in an encoded verdict (0 for pass); CF_E_CORRUPT when malformed. */
cf_err cf_verdict_hits(const uint8_t *buf, size_t len, size_t *n);

/* ---- alerts ----------------------------------------------------------------------------- */

/**
 * One alert as an NDJSON line:
 * {"event_id":N,"rule_id":"big","ts":"2018-04-01T09:12:11Z","details":{...}}\n
 * details never carry amounts unless alerts.include_amounts is true in the rules file, and
 * never carry account or merchant ids. Returns the length, or 0 when @p size is too small
 * (1024 bytes always fit).
 */
size_t cf_rules_alert_ndjson(const cf_rules *r, const cf_event *ev, const cf_rule_hit *hit,
                             char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
