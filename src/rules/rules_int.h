/* Private to the rules module: the rule table, keyed state store and blocked-id lists. */
#ifndef CF_RULES_INT_H
#define CF_RULES_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "confide/core.h"
#include "confide/rules.h"

#define CF__RULES_KEY_MAX 72 /* an id (64) + NUL + currency (3), rounded up */
#define CF__RULES_NIL UINT32_MAX

/* ---- keyed state: open addressing + LRU chain, bounded by max_keys ---------------------- */

typedef struct cf__kstore {
    uint8_t *pool;
    size_t stride;
    size_t payload_size;
    uint32_t cap;
    uint32_t used;
    uint32_t live;
    uint32_t max_keys;
    uint32_t free_head;
    uint32_t lru_head; /* most recently updated */
    uint32_t lru_tail; /* least recently updated: expired and evicted first */
    uint64_t *slots;
    uint32_t slot_mask;
    uint64_t seed;
    uint64_t evictions;
    uint64_t expired;
} cf__kstore;

cf_err cf__kstore_init(cf__kstore *s, size_t payload_size, uint32_t max_keys);
void cf__kstore_free(cf__kstore *s);
/*
 * The payload for @p key, created zeroed (*created = true) when absent. Expires up to a few
 * least-recently-updated keys older than ts - ttl_us first, and evicts the least recently
 * updated key when the store is full. Never fails: if growing the store is impossible the
 * oldest key is evicted instead. Marks the key most recently updated at @p ts.
 */
void *cf__kstore_get(cf__kstore *s, const uint8_t *key, size_t len, int64_t ts, int64_t ttl_us,
                     bool *created);
size_t cf__kstore_bytes(const cf__kstore *s);

/* ---- blocked-id lists ------------------------------------------------------------------- */

typedef struct cf__idlist {
    size_t n;
    uint32_t mask;
    uint32_t *slots; /* offset + 1 into blob; 0 empty */
    char *blob;      /* NUL-terminated ids */
} cf__idlist;

/* Reads PATH: one id per line, '#' comments, surrounding blanks ignored. */
cf_err cf__idlist_load(const char *path, cf__idlist **out, char *errstr, size_t errstr_size);
bool cf__idlist_has(const cf__idlist *l, const char *id);
void cf__idlist_free(cf__idlist *l);

/* ---- rules ------------------------------------------------------------------------------ */

enum { VAR_ACCOUNT = 0, VAR_MERCHANT, VAR_COUNTRY, VAR_CHANNEL, VAR_TYPE, VAR_CURRENCY };

/* A named time zone (tz.c): UTC offsets and the instants they start at. */
typedef struct cf__tz {
    size_t n;
    int64_t *at;  /* seconds since the epoch, ascending */
    int32_t *off; /* seconds east of UTC from at[i] on */
    int32_t off0; /* before at[0] */
} cf__tz;
cf_err cf__tz_load(const char *name, cf__tz *tz, char *errstr, size_t errstr_size);
int64_t cf__tz_offset_us(const cf__tz *tz, int64_t ts_us);
void cf__tz_free(cf__tz *tz);

typedef struct cf__rule {
    char id[CF_RULE_ID_MAX + 1];
    cf_rule_type type;
    bool enabled;
    char threshold_text[40];
    int64_t ge_min[5];   /* amount >= threshold  <=>  amount_minor >= ge_min[exponent] */
    int64_t gt_floor[5]; /* total > threshold    <=>  total_minor > gt_floor[exponent] */
    int64_t lo_min[5];   /* structuring lower bound, amount_minor >= lo_min[exponent] */
    char margin_text[16];
    int variable;
    int64_t period_us;
    uint32_t hits;      /* velocity */
    uint32_t min_count; /* structuring */
    int64_t utc_offset_us;
    cf__tz tz; /* time_zone: a named zone; n == 0 and no off0 -> utc_offset_us */
    bool has_tz;
    char tz_name[72];
    uint32_t max_keys;
    cf__kstore store;
    bool field_account;
    bool field_merchant;
    char *list_path;     /* resolved path */
    char list_name[128]; /* as written, for alert details */
    _Atomic(cf__idlist *) list;
    uint8_t countries[26 * 26];
    cf_rule_stats st;
} cf__rule;

struct cf_rules {
    size_t n;
    cf__rule *rules;
    bool include_amounts;
    bool has_lists;
    /* Two-phase reader counters for the list swap (see lists.c). */
    atomic_uint gen;
    atomic_uint readers[2];
    pthread_mutex_t reload_lock;
};

const char *cf__rules_var_name(int var);

#endif
