/**
 * @file scale.h
 * @brief Predictive autoscaling: rate traces, forecasters (LSTM and honest baselines),
 * scaling policies (static, reactive, ds2, predictive) and a discrete-event simulator of a
 * worker pool that runs the same policy code. Design: docs/autoscaling.md.
 *
 *     cf_trace *tr;       cf_trace_load(&tr, "rates.csv", NULL, err, sizeof(err));
 *     cf_forecast_opts o; cf_forecast_opts_default(&o);
 *     cf_forecaster *f;   cf_forecaster_create(&f, "lstm", &o, err, sizeof(err));
 *     cf_forecaster_fit(f, cf_trace_values(tr), cf_trace_len(tr), err, sizeof(err));
 *     double next[4];     cf_forecaster_predict(f, next, 4);   (after the fitted history)
 *     cf_forecaster_observe(f, 1234.0);                         (one new true value)
 *
 * Rates are doubles (they are counts per interval, not money). Every object here is owned
 * by one thread at a time; nothing is shared. The library never prints.
 */
#ifndef CONFIDE_SCALE_H
#define CONFIDE_SCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- rate traces ------------------------------------------------------------------------- */

/**
 * A regular series of counts per interval (arrivals per interval, or a rate per interval).
 * Point i covers [start_ms + i * interval_ms, start_ms + (i + 1) * interval_ms).
 */
typedef struct cf_trace cf_trace;

/** Most points a trace may hold (missing intervals filled with zeros included). */
#define CF_TRACE_POINTS_MAX 10000000u

/**
 * Loads a trace CSV: a header line, then rows whose first column is a timestamp and whose
 * second is a non-negative count (integer or decimal); further columns are ignored.
 * Timestamps: RFC 3339 (`2026-01-02T03:04:05Z`, fraction and +hh:mm offsets allowed),
 * `YYYY-MM-DD HH:MM:SS` (UTC) or epoch seconds (integer or decimal). When the header's first
 * column is named `step` (the format of `confide gen --shape trace:FILE`, e.g. PaySim's
 * hourly counts) the column is an index of @p step_s second steps (0: 3600).
 * The interval is the first difference; later differences must be positive multiples of it
 * (the missing intervals are filled with zero counts and counted, see cf_trace_filled), and
 * it must lie in 1 ms .. 1 day. Errors (CF_E_PARSE, CF_E_IO, CF_E_LIMIT) name the file and
 * line. Returns owned (cf_trace_destroy).
 */
cf_err cf_trace_load(cf_trace **out, const char *path, double step_s, char *errstr,
                     size_t errstr_size);
/** As cf_trace_load, from @p len bytes at @p buf (borrowed); @p name labels errors. */
cf_err cf_trace_parse(cf_trace **out, const char *buf, size_t len, const char *name, double step_s,
                      char *errstr, size_t errstr_size);
/**
 * Aggregates an arrivals CSV (a header, then one row per event whose column @p column
 * (1-based) is its timestamp, in any of the formats above) into counts per @p interval_s
 * bins, from the bin holding the first event. Events may be out of order by less than the
 * span of the trace; an event before the first bin is an error naming its line.
 */
cf_err cf_trace_from_arrivals(cf_trace **out, const char *path, unsigned column, double interval_s,
                              char *errstr, size_t errstr_size);
/** A trace over a copy of @p values[0..n) (borrowed). */
cf_err cf_trace_create(cf_trace **out, const double *values, size_t n, int64_t start_ms,
                       int64_t interval_ms);
void cf_trace_destroy(cf_trace *t);
size_t cf_trace_len(const cf_trace *t);
/** The counts, cf_trace_len of them (borrowed, valid until destroy). */
const double *cf_trace_values(const cf_trace *t);
int64_t cf_trace_start_ms(const cf_trace *t);
int64_t cf_trace_interval_ms(const cf_trace *t);
/** Number of intervals absent from the file and filled with zero. */
size_t cf_trace_filled(const cf_trace *t);
/**
 * Replaces each count c by a Poisson(c) draw (seeded splitmix64): what a Poisson arrival
 * process at those mean counts would show. Used to make generated shapes look observed.
 */
void cf_trace_add_noise(cf_trace *t, uint64_t seed);
/** Writes `ts,count` rows (RFC 3339 UTC, milliseconds when needed) to @p path (tmp+rename). */
cf_err cf_trace_write(const cf_trace *t, const char *path, char *errstr, size_t errstr_size);
/**
 * Formats the timestamp of point @p i as RFC 3339 UTC into @p buf (>= 32 bytes).
 * Whole seconds print without a fraction.
 */
void cf_trace_format_ts(const cf_trace *t, size_t i, char *buf, size_t n);
/** Parses one timestamp (formats above) into milliseconds since the epoch. */
cf_err cf_scale_parse_ts(const char *s, size_t len, int64_t *ms_out);

/* ---- forecasters ------------------------------------------------------------------------- */

/** Forecasting options; cf_forecast_opts_default fills the defaults given in brackets. */
typedef struct cf_forecast_opts {
    uint32_t window;            /**< lstm input points W, 2..512 [24] */
    uint32_t horizon;           /**< steps the lstm predicts directly, 1..64 [1] */
    uint32_t hidden;            /**< lstm hidden units, 2..128 [16] */
    uint32_t layers;            /**< lstm layers, 1..2 [1] */
    uint32_t season;            /**< season in points; 0 detects it by autocorrelation [0] */
    uint32_t epochs_max;        /**< training epochs at most [60] */
    uint32_t patience;          /**< early stopping: epochs without validation gain [8] */
    uint32_t batch;             /**< minibatch size [32] */
    uint32_t epoch_max_samples; /**< windows drawn per epoch at most [2048] */
    double lr;                  /**< Adam step size [0.003] */
    double clip;                /**< gradient clipping, global L2 norm [1.0] */
    double val_frac;            /**< chronological validation split of the training part [0.2] */
    double huber_delta; /**< lstm loss: Huber delta on normalised log values; 0 squared [0.1] */
    uint64_t seed;      /**< weights and minibatch order: same seed, same model [1] */
} cf_forecast_opts;

void cf_forecast_opts_default(cf_forecast_opts *o);

/**
 * Model names, in report order: "last" (last value), "seasonal" (seasonal naive: one season
 * back), "ma" (moving average, length fitted), "hw" (Holt-Winters additive, parameters
 * fitted), "lstm". @p n receives the count. Static, never NULL.
 */
const char *const *cf_forecast_models(size_t *n);
/** The model used when none is named: the best on the traces in docs/autoscaling.md. */
const char *cf_forecast_default_model(void);

/**
 * A forecaster: parameters (fitted by cf_forecaster_fit or loaded) plus the history state
 * it forecasts from (fed by cf_forecaster_fit and cf_forecaster_observe).
 */
typedef struct cf_forecaster cf_forecaster;

/** CF_E_INVAL naming the bad option or unknown model. Returns owned (cf_forecaster_destroy). */
cf_err cf_forecaster_create(cf_forecaster **out, const char *model, const cf_forecast_opts *o,
                            char *errstr, size_t errstr_size);
void cf_forecaster_destroy(cf_forecaster *f);
const char *cf_forecaster_model(const cf_forecaster *f);
/** The options the forecaster was created or loaded with (season: the one used). */
const cf_forecast_opts *cf_forecaster_opts(const cf_forecaster *f);
/**
 * Fits the parameters on y[0..n) (borrowed; negative values are invalid), then resets the
 * history and observes all of y, so that a forecast follows y[n - 1]. Deterministic for a
 * seed. CF_E_INVAL when n is too short for the model (message says how many are needed).
 * When every value of y is a whole number (a count), every model's forecasts below 0.5 are
 * 0 from then on: half an event cannot arrive, and SMAPE would count it as a 200% miss.
 */
cf_err cf_forecaster_fit(cf_forecaster *f, const double *y, size_t n, char *errstr,
                         size_t errstr_size);
/** Forgets the history (parameters stay). */
void cf_forecaster_reset(cf_forecaster *f);
/** Appends one true value to the history. O(window) at most; no allocation. */
void cf_forecaster_observe(cf_forecaster *f, double y);
/**
 * Forecasts the next @p h values after the history into @p out (h >= 1; beyond the lstm's
 * horizon it feeds its own forecasts back). Forecasts are >= 0. CF_E_STATE before fit/load.
 */
cf_err cf_forecaster_predict(cf_forecaster *f, double *out, size_t h);
/** One line describing the fitted parameters ("hw alpha=0.3 beta=0 gamma=0.1 season=24"). */
void cf_forecaster_describe(const cf_forecaster *f, char *buf, size_t n);

/**
 * Writes the fitted model: magic "CFFCAST1", format version, model, options, parameters,
 * then a BLAKE2b-256 checksum over everything before it; to path.tmp, fsynced, renamed.
 */
cf_err cf_forecaster_save(const cf_forecaster *f, const char *path, char *errstr,
                          size_t errstr_size);
/** Reads a model file; CF_E_CORRUPT on a bad checksum, magic, version or size. */
cf_err cf_forecaster_load(cf_forecaster **out, const char *path, char *errstr, size_t errstr_size);

/** Forecast accuracy. smape in percent (0..200; 0/0 counts 0), mae and rmse in counts. */
typedef struct cf_forecast_score {
    double smape;
    double mae;
    double rmse;
    size_t n;
} cf_forecast_score;

void cf_forecast_score_of(const double *actual, const double *forecast, size_t n,
                          cf_forecast_score *s);

/**
 * Walk-forward evaluation of a fitted forecaster on y[0..n) (borrowed): for each of the last
 * @p test_points points t, the forecast of y[t] made @p h steps ahead from the true history
 * y[0..t-h] (h = 1: one step ahead from everything up to the step before). Forecasts go to
 * @p pred (test_points entries; may be NULL). Resets the history first.
 */
cf_err cf_forecast_walk(cf_forecaster *f, const double *y, size_t n, size_t test_points, uint32_t h,
                        double *pred, cf_forecast_score *score);

/**
 * The season of y[0..n) in points: the lag in 2..max_lag with the highest autocorrelation
 * among its local maxima, if that is >= 0.3; 0 when there is none.
 */
uint32_t cf_forecast_detect_season(const double *y, size_t n, uint32_t max_lag);

/* ---- policies ---------------------------------------------------------------------------- */

/** What a policy sees at each decision, about the interval that just ended. */
typedef struct cf_scale_obs {
    double now_s;      /**< time at the end of the interval */
    double interval_s; /**< its length (> 0) */
    double arrived;    /**< events that arrived in it */
    double processed;  /**< events completed in it */
    double busy_s;     /**< worker-seconds spent processing in it, summed over workers */
    double backlog;    /**< events waiting at its end */
    double p99_ms;     /**< latency p99 of the events completed in it (0: none) */
    uint32_t ready;    /**< workers running at its end */
    uint32_t starting; /**< workers requested and not running yet */
    double startup_s;  /**< the last measured start-up delay of a worker (0: none yet) */
} cf_scale_obs;

/** Policy options; cf_policy_opts_default fills the defaults given in brackets. */
typedef struct cf_policy_opts {
    uint32_t min_workers;    /**< [1] */
    uint32_t max_workers;    /**< [64] */
    uint32_t static_workers; /**< static: the fixed size [4] */
    double target_util;      /**< ds2, predictive: busy fraction aimed at [0.7] */
    double up_util;          /**< reactive: scale up above this utilization [0.8] */
    double down_util;        /**< reactive: scale down below this utilization [0.4] */
    double cooldown_s;       /**< reactive: no decision for this long after a rescale [120] */
    double max_up_factor;    /**< ds2: at most this times the workers per step [4] */
    double max_down_factor;  /**< ds2: at least this times the workers per step [0.5] */
    double stabilization_s;  /**< ds2: metrics ignored this long after a rescale [60] */
    double down_delay_s; /**< ds2, predictive: scale down only after wanting it this long [300] */
    double catchup_s;    /**< ds2, predictive: drain the backlog within this time [60] */
    double lead_s;       /**< predictive: start-up lead time until one is measured [30] */
    uint32_t horizon;    /**< predictive: intervals of forecast beyond the lead time [1] */
    double down_hysteresis; /**< predictive: scale down only to <= (1 - this) x workers [0.5] */
} cf_policy_opts;

void cf_policy_opts_default(cf_policy_opts *o);

/** A decision: the worker count wanted and what it rests on (for timelines and logs). */
typedef struct cf_scale_decision {
    uint32_t workers;     /**< desired running workers */
    double rate;          /**< arrival rate seen in the interval (events/s) */
    double forecast_rate; /**< predictive: the rate it provisions for (events/s); else 0 */
    double worker_rate;   /**< measured per-worker processing rate (events/busy-s; 0: none) */
} cf_scale_decision;

typedef struct cf_policy cf_policy;

/** Names: "static", "reactive", "ds2", "predictive". Static, never NULL. */
const char *const *cf_policy_names(size_t *n);
/**
 * Creates a policy. @p fc (borrowed; must outlive the policy) is required for "predictive"
 * and ignored otherwise: a fitted forecaster whose interval is the decision interval; the
 * policy feeds it each interval's arrivals. Returns owned (cf_policy_destroy).
 */
cf_err cf_policy_create(cf_policy **out, const char *name, const cf_policy_opts *o,
                        cf_forecaster *fc, char *errstr, size_t errstr_size);
void cf_policy_destroy(cf_policy *p);
const char *cf_policy_name(const cf_policy *p);
/**
 * One decision at the end of an interval. Per-worker capacity is measured here, from
 * processed / busy_s (the true processing rate, as in DS2), never configured.
 */
void cf_policy_decide(cf_policy *p, const cf_scale_obs *obs, cf_scale_decision *d);

/* ---- simulator --------------------------------------------------------------------------- */

/** Simulator options; cf_sim_opts_default fills the defaults given in brackets. */
typedef struct cf_sim_opts {
    double compress;     /**< time compression: a trace interval lasts interval/compress s [1] */
    double worker_rate;  /**< events/s one worker completes with full batches [1000] */
    double batch_cost_s; /**< fixed cost per batch, in seconds [0.0005] */
    uint32_t batch_max;  /**< events per batch at most (a worker takes what waits) [256] */
    double startup_s;    /**< worker start-up delay [30] */
    double slo_ms;       /**< latency SLO on the p99 [500] */
    double slo_window_s; /**< the slice over which the p99 is judged [1] */
    uint32_t initial_workers; /**< running at t = 0 [1] */
    bool poisson;             /**< Poisson arrivals in each interval (else evenly spaced) [true] */
    uint64_t seed;            /**< arrivals [1] */
    uint64_t queue_max;       /**< queued events at most; later ones are dropped [50,000,000] */
} cf_sim_opts;

void cf_sim_opts_default(cf_sim_opts *o);

/** One point of the timeline, per decision interval. */
typedef struct cf_sim_tick {
    double t_s;           /**< end of the interval (simulated seconds) */
    double rate;          /**< arrival rate in it (events/s) */
    double forecast_rate; /**< what the policy provisioned for (0 when it does not forecast) */
    uint32_t workers;     /**< running workers at its end */
    uint32_t target;      /**< the policy's decision */
    double p99_ms;        /**< latency p99 of the events completed in it */
    double backlog;       /**< queued events at its end */
} cf_sim_tick;

typedef struct cf_sim_result {
    double slo_violation_s; /**< seconds in slices whose p99 broke the SLO (or whose oldest
                                 waiting event was older than it) */
    double p99_ms;          /**< p99 of all events' latency (dropped events count as 1 h) */
    double mean_ms;         /**< mean latency */
    double worker_s;        /**< worker-seconds provisioned (starting, running, draining) */
    uint32_t rescales;      /**< decisions that changed the worker count */
    uint64_t events;        /**< events that arrived */
    uint64_t dropped;       /**< events refused because the queue was full */
    double duration_s;      /**< simulated seconds */
    uint32_t max_workers;   /**< most workers provisioned at once */
} cf_sim_result;

typedef void (*cf_sim_tick_cb)(void *opaque, const cf_sim_tick *t);

/**
 * Replays counts[0..n) (borrowed), one decision interval of interval_s / compress simulated
 * seconds per point, through a pool of workers sized by @p p (borrowed), and then drains the
 * queue. @p cb (may be NULL) receives each interval's timeline point. Deterministic for a
 * seed. CF_E_INVAL naming a bad option.
 */
cf_err cf_sim_run(const double *counts, size_t n, double interval_s, const cf_sim_opts *o,
                  cf_policy *p, cf_sim_tick_cb cb, void *opaque, cf_sim_result *res, char *errstr,
                  size_t errstr_size);

/**
 * The M/D/c mean waiting time (seconds) for Poisson arrivals at @p lambda, c servers with
 * deterministic service time 1/@p mu, by the Cosmetatos correction of the M/M/c (Erlang C)
 * wait. Infinity when lambda >= c mu. Used to check the simulator on a steady load.
 */
double cf_sim_mdc_wait_s(double lambda, double mu, unsigned c);

#ifdef __cplusplus
}
#endif
#endif
