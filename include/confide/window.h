/**
 * @file window.h
 * @brief Event-time tumbling and sliding windows with bounded out-of-orderness watermarks,
 * idle-source handling, allowed lateness and a late side output, generic over the value.
 *
 * The operator knows nothing about what it sums: it is created with a value descriptor
 * (cf_window_value_ops: size, zero, add) so the same code sums plaintext amounts
 * (cf_window_plain_ops) or secure-aggregation shares. Group keys are opaque bytes (at most
 * key_max), so a party can group by 16-byte pseudonyms; cf_window_group_key() builds a key
 * from the selected fields of a plaintext cf_event.
 *
 * Semantics (docs/windows.md):
 * - Window [start, end): an event with ts == end belongs to the next window. Window starts
 *   are aligned to multiples of slide from the epoch; a sliding window event belongs to every
 *   window with start <= ts < start + size (size/slide windows when slide divides size).
 * - Watermark W = max(previous W, max event ts seen - max_delay). W promises that events
 *   with ts < W have arrived. A window fires (emits its results) once W >= end.
 * - Allowed lateness: a fired window keeps its state until W >= end + lateness. An event for
 *   it in that interval updates the state and re-emits the group's result at once with
 *   update = true. After that the event goes to the late output with a reason; it is never
 *   silently dropped.
 * - Idle source: cf_window_tick(now_ns) with no event for idle_timeout_ns advances W by
 *   the processing time elapsed since the last event, so windows still close.
 * - State is kept per (pane, key), a pane being gcd(size, slide) of event time, so an event
 *   costs one entry update however many sliding windows it is in; windows are combined from
 *   their panes with value.add when they fire.
 * - State limit: when a new (pane, key) would exceed memory_limit_bytes the event is not
 *   applied, CF_E_LIMIT is returned (backpressure; retriable) and counted. Never aborts.
 *
 * Threads: one operator instance belongs to one thread; no internal locking.
 */
#ifndef CONFIDE_WINDOW_H
#define CONFIDE_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "confide/err.h"
#include "confide/event.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- value descriptor ------------------------------------------------------------------- */

/**
 * What the operator aggregates. Values are plain bytes (no pointers): they are copied,
 * snapshotted and restored byte for byte.
 */
typedef struct cf_window_value_ops {
    size_t size;             /* bytes of one value, 1..256 */
    void (*zero)(void *dst); /* sets the identity element */
    /** dst += src. A non-OK return (e.g. CF_E_OVERFLOW) is counted in stats.value_errors
     *  and returned to the caller of cf_window_add; dst must then hold a value that reports
     *  the error itself (the operator keeps counting events). */
    cf_err (*add)(void *dst, const void *src);
} cf_window_value_ops;

/** The plaintext value: an overflow-checked sum of minor units. */
typedef struct cf_window_plain {
    int64_t sum_minor;
    int64_t overflow; /* 0, or 1 once any addition overflowed: sum_minor is then invalid */
} cf_window_plain;

/** Descriptor for cf_window_plain: add returns CF_E_OVERFLOW and sets overflow, never wraps. */
extern const cf_window_value_ops cf_window_plain_ops;

/* ---- group keys ------------------------------------------------------------------------- */

enum {
    CF_GROUP_MERCHANT = 1u << 0,
    CF_GROUP_ACCOUNT = 1u << 1,
    CF_GROUP_COUNTRY = 1u << 2,
    CF_GROUP_CHANNEL = 1u << 3,
    CF_GROUP_TYPE = 1u << 4,
    CF_GROUP_CURRENCY = 1u << 5,
    CF_GROUP_ALL = (1u << 6) - 1
};

/** Longest key cf_window_group_key can build (every field at its maximum, with separators). */
#define CF_WINDOW_GROUP_KEY_MAX (2 * (CF_ID_MAX + 1) + 3 + 16 + 16 + 4)
/** Default and maximum key_max of the operator. */
#define CF_WINDOW_KEY_MAX 255

/**
 * Parses a comma-separated list ("merchant,country"; also "" or "none" for one global
 * group) into a CF_GROUP_* mask. CF_E_INVAL naming the bad field otherwise.
 */
cf_err cf_window_group_parse(const char *s, unsigned *mask, char *errstr, size_t errstr_size);
/**
 * Builds the group key of @p ev for @p mask: the selected fields in the fixed order
 * merchant, account, country, channel, type, currency, each followed by a 0x00 byte
 * (injective: ids cannot contain NUL). Channel and type are written by name.
 * Returns the key length, or 0 when @p size is too small (CF_WINDOW_GROUP_KEY_MAX always fits).
 */
size_t cf_window_group_key(unsigned mask, const cf_event *ev, uint8_t *buf, size_t size);
/**
 * Human-readable text of a key built by cf_window_group_key: the field values joined by
 * '|' ("3156", "3156|FR"); "*" for the empty key. Display only (not injective). Returns
 * the length written (truncated safely, always NUL-terminated when size > 0).
 */
size_t cf_window_group_text(const uint8_t *key, size_t len, char *buf, size_t size);
/** Longest cf_window_group_json / cf_window_group_csv text (every byte escaped). */
#define CF_WINDOW_GROUP_TEXT_MAX (6 * CF_WINDOW_GROUP_KEY_MAX + 128)
/**
 * The group of a key built with @p mask as a JSON object, one member per field in key order:
 * {"merchant":"A|B","account":"C","currency":"EUR"} (values JSON-escaped; "{}" for no field).
 * Unlike the '|'-joined text, two different groups never print the same. Returns the
 * length, or 0 when @p size is too small (CF_WINDOW_GROUP_TEXT_MAX always fits).
 */
size_t cf_window_group_json(unsigned mask, const uint8_t *key, size_t len, char *buf, size_t size);
/** The same as CSV fields, one per selected field, RFC 4180 quoted, comma-separated. */
size_t cf_window_group_csv(unsigned mask, const uint8_t *key, size_t len, char *buf, size_t size);
/** The value of the currency field of a key built with @p mask (with CF_GROUP_CURRENCY) into
 *  @p out (4 bytes); "" when the mask has no currency. */
void cf_window_group_currency(unsigned mask, const uint8_t *key, size_t len, char out[4]);
/** The CSV header of rows whose group has @p mask (cf_window_row_csv with group_csv set). */
size_t cf_window_csv_header_for(unsigned mask, char *buf, size_t size);

/* ---- operator --------------------------------------------------------------------------- */

typedef struct cf_window cf_window;

/** One emitted result. Pointers are borrowed and valid only during the callback. */
typedef struct cf_window_result {
    int64_t window_start_us;
    int64_t window_end_us; /* exclusive */
    const uint8_t *key;
    size_t key_len;
    const void *value;    /* value_ops.size bytes */
    uint64_t count;       /* events that contributed */
    uint64_t first_index; /* min cf_event.seq that contributed */
    uint64_t last_index;  /* max cf_event.seq that contributed */
    bool update;          /* a re-emission after a late event (within allowed lateness) */
} cf_window_result;

typedef enum {
    CF_WINDOW_LATE_BEYOND_LATENESS = 1, /* every window of the event was already purged */
    CF_WINDOW_LATE_PARTIAL = 2          /* sliding: some windows purged, others updated */
} cf_window_late_reason;

/** A late side-output record: the event is not (fully) counted in any result. */
typedef struct cf_window_late {
    int64_t ts_us;
    uint64_t seq;
    const uint8_t *key; /* borrowed, valid during the callback */
    size_t key_len;
    int64_t watermark_us;     /* the watermark when the event arrived */
    uint32_t windows_dropped; /* windows of the event it was not added to */
    uint32_t windows_total;   /* windows the event belongs to */
    cf_window_late_reason reason;
} cf_window_late;

/** Static text for a late reason ("beyond allowed lateness"). */
const char *cf_window_late_reason_name(cf_window_late_reason r);

typedef void (*cf_window_result_cb)(void *opaque, const cf_window_result *r);
typedef void (*cf_window_late_cb)(void *opaque, const cf_window_late *l);

/** Operator configuration. Start from cf_window_conf_default(). */
typedef struct cf_window_conf {
    int64_t size_us;               /* window length; required, > 0 */
    int64_t slide_us;              /* 0 or == size_us: tumbling; 0 < slide < size: sliding */
    int64_t max_delay_us;          /* bounded out-of-orderness, >= 0 (default 0) */
    int64_t lateness_us;           /* allowed lateness, >= 0 (default 0) */
    int64_t idle_timeout_ns;       /* 0 disables idle handling (default 0) */
    size_t key_max;                /* longest key in bytes, 1..CF_WINDOW_KEY_MAX (default 64) */
    size_t memory_limit_bytes;     /* state table bound (default 256 MiB, minimum 64 KiB) */
    size_t windows_max;            /* bound on panes holding state (default 65536) */
    bool secure_memory;            /* keep state in sodium_malloc memory, wiped on release */
    cf_window_value_ops value;     /* required */
    cf_window_result_cb on_result; /* required */
    cf_window_late_cb on_late;     /* optional (late events are still counted) */
    void *opaque;                  /* passed to the callbacks */
} cf_window_conf;

/** Fills @p c with defaults (no size, no value ops, no callbacks). */
void cf_window_conf_default(cf_window_conf *c);

/** Counters; every field is cumulative except the gauges marked so. */
typedef struct cf_window_stats {
    uint64_t events;           /* accepted by cf_window_add (including late ones) */
    uint64_t results;          /* results emitted (including updates) */
    uint64_t updates;          /* results re-emitted after late events within lateness */
    uint64_t late_events;      /* events sent to the late output */
    uint64_t late_updates;     /* late events applied within allowed lateness */
    uint64_t limit_rejections; /* CF_E_LIMIT returns (state full) */
    uint64_t value_errors;     /* value_ops.add errors (overflow), also when combining panes */
    uint64_t windows_fired;
    uint64_t idle_advances; /* watermark advances caused by an idle source */
    uint64_t keys_live;     /* gauge: (pane, key) entries held */
    uint64_t keys_max;      /* gauge: entries the memory limit allows (sliding: upper bound) */
    uint64_t windows_open;  /* gauge: panes holding state (= windows when tumbling) */
    uint64_t state_bytes;   /* gauge: bytes allocated for state */
    size_t entry_bytes;     /* bytes per (pane, key) entry including the index */
    int64_t watermark_us;   /* INT64_MIN before the first event */
} cf_window_stats;

/**
 * Creates an operator. CF_E_INVAL (errstr names the field) for a bad conf.
 * Returns owned *out (free with cf_window_destroy).
 */
cf_err cf_window_create(cf_window **out, const cf_window_conf *conf, char *errstr,
                        size_t errstr_size);
/** Frees all state (wiped first when secure_memory). Accepts NULL. */
void cf_window_destroy(cf_window *w);

/**
 * Adds one event: @p key (borrowed, key_len <= key_max), event time @p ts_us, log position
 * @p seq and value (borrowed, value.size bytes). May emit updated results (allowed lateness)
 * or one late record through the callbacks, then advances the watermark (which may fire
 * windows). Returns CF_OK; CF_E_LIMIT when state is full (the event was not applied at all:
 * retry after the watermark advanced, or dead-letter it); CF_E_OVERFLOW when value add
 * failed (the event was counted; the value carries the error); CF_E_INVAL for a key that
 * is too long or ts outside +-2^62 us.
 */
cf_err cf_window_add(cf_window *w, const uint8_t *key, size_t key_len, int64_t ts_us, uint64_t seq,
                     const void *value);
/** Moves the watermark to at least @p watermark_us (external watermark); fires windows. */
void cf_window_advance(cf_window *w, int64_t watermark_us);
/**
 * Processing-time tick: when no event arrived for idle_timeout_ns, advances the watermark
 * by the processing time elapsed since the last event (never backwards). Returns true when
 * the watermark moved. @p now_ns from cf_now_ns() (or a test clock).
 */
bool cf_window_tick(cf_window *w, int64_t now_ns);
/** End of stream: fires every open window and purges all state. */
void cf_window_flush(cf_window *w);
int64_t cf_window_watermark(const cf_window *w);
void cf_window_stats_get(const cf_window *w, cf_window_stats *out);

/**
 * Serializes the watermark and every pane holding state with its entries into a new
 * buffer (format version 2). Returns owned *out (free with cf_free), *len its size. Stats are not
 * saved.
 */
cf_err cf_window_snapshot(const cf_window *w, uint8_t **out, size_t *len);
/**
 * Restores a snapshot into a freshly created operator with the same size, slide and value
 * size (CF_E_STATE when it already holds state, CF_E_INVAL for a different shape,
 * CF_E_CORRUPT for a damaged buffer, CF_E_LIMIT when it does not fit the memory limit).
 */
cf_err cf_window_restore(cf_window *w, const uint8_t *buf, size_t len, char *errstr,
                         size_t errstr_size);

/** Keeps (true) or skips (false) the entry of @p key when restoring a snapshot. */
typedef bool (*cf_window_key_filter)(void *opaque, const uint8_t *key, size_t key_len);

/**
 * cf_window_restore, keeping only the entries @p keep accepts (NULL: all): a worker that
 * owns some key groups takes its share of a party's state (rescaling, recovery).
 */
cf_err cf_window_restore_filtered(cf_window *w, const uint8_t *buf, size_t len,
                                  cf_window_key_filter keep, void *opaque, char *errstr,
                                  size_t errstr_size);

/**
 * Merges @p n snapshots of operators with disjoint keys (the workers of one party) into one:
 * the union of their panes and entries, the furthest watermark. Returns owned *out
 * (cf_free). CF_E_CORRUPT for a damaged snapshot, CF_E_INVAL for different shapes.
 */
cf_err cf_window_snapshot_merge(const uint8_t *const *bufs, const size_t *lens, unsigned n,
                                uint8_t **out, size_t *out_len, char *errstr, size_t errstr_size);

/* ---- results encoding ------------------------------------------------------------------- */

/**
 * One output row; what the encoders write. The combiner fills it from combined shares, the
 * plain baseline with cf_window_row_from_plain.
 */
typedef struct cf_window_row {
    int64_t window_start_us;
    int64_t window_end_us;
    const char *group;      /* display text (borrowed), written as a JSON string */
    const char *group_json; /* when set: the group as a JSON object (cf_window_group_json) */
    const char *group_csv;  /* when set: the group's CSV fields (cf_window_group_csv) */
    const char *currency;   /* when set: written as "currency" (NDJSON) / a column (CSV) */
    uint64_t count;
    int64_t sum_minor;
    bool sum_valid; /* false: overflow; sum_minor is written as null */
    bool verified;  /* MAC checked (always false for the plain baseline) */
    uint64_t first_index;
    uint64_t last_index;
    uint32_t key_epoch; /* epoch of the keys that protected it (NDJSON "key_epoch"); 0: none */
} cf_window_row;

/** Fills @p row from a result whose value is a cf_window_plain. @p group is borrowed. */
void cf_window_row_from_plain(const cf_window_result *r, const char *group, bool verified,
                              cf_window_row *row);
/**
 * {"window_start":"2018-04-01T00:00:00Z","window_end":...,"group":"3156","count":3,
 *  "sum_minor":12345,"verified":false,"first_index":1,"last_index":9}\n
 * Times are RFC 3339 UTC (fraction only when not whole seconds). Returns the length, or 0
 * when @p size is too small.
 */
size_t cf_window_row_ndjson(const cf_window_row *row, char *buf, size_t size);
/** The CSV header line matching cf_window_row_csv (with newline). */
const char *cf_window_csv_header(void);
/** One CSV line (RFC 4180 quoting of the group). Returns the length, or 0 when too small. */
size_t cf_window_row_csv(const cf_window_row *row, char *buf, size_t size);
/**
 * One late side-output record as an NDJSON line:
 * {"seq":41,"ts":"2018-04-01T00:07:56Z","watermark":"2018-04-01T01:00:00Z",
 *  "reason":"beyond allowed lateness","windows_dropped":1,"windows_total":1[,"group":"T3156"]}\n
 * @p group (borrowed display text) is omitted when NULL. Returns the length, or 0 when
 * @p size is too small (512 bytes plus the group's escaped length always fit).
 */
size_t cf_window_late_ndjson(const cf_window_late *l, const char *group, char *buf, size_t size);
/** RFC 3339 UTC text of @p us ("2018-04-01T00:00:00Z", "...00.250000Z"). Returns length. */
size_t cf_window_format_time(int64_t us, char *buf, size_t size);

/* ---- results file ----------------------------------------------------------------------- */

/**
 * A results file that appears atomically: lines go to PATH.tmp; commit flushes, fsyncs,
 * renames to PATH and fsyncs the directory. Destroy without commit removes PATH.tmp.
 */
typedef struct cf_window_file cf_window_file;
/** Opens PATH.tmp (0644, truncated). @p header (borrowed, may be NULL) is written first. */
cf_err cf_window_file_open(cf_window_file **out, const char *path, const char *header, char *errstr,
                           size_t errstr_size);
cf_err cf_window_file_write(cf_window_file *f, const char *data, size_t len);
/** Flush, fsync, close, rename PATH.tmp -> PATH, fsync the directory. Frees @p f. */
cf_err cf_window_file_commit(cf_window_file *f, char *errstr, size_t errstr_size);
/** Abandons an uncommitted file (removes PATH.tmp). Accepts NULL. */
void cf_window_file_destroy(cf_window_file *f);

#ifdef __cplusplus
}
#endif
#endif
