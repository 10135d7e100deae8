/*
 * The embedded pipeline: source -> decode -> process -> sink, one thread per stage.
 *
 * Stages are joined by bounded SPSC rings. Every buffer comes from a pool preallocated at
 * create time (chunks of raw records for source -> decode, event batches for everything
 * after), and empty buffers travel back to their producer on a "free" ring. So the memory of
 * a run is fixed before the first byte is read: when the sink is slow, the free rings run
 * dry, the decode stage waits, the source waits, and nothing buffers without bound.
 *
 * Latency: the source stamps every record with the monotonic clock when it is read, or,
 * when pacing open-loop (input.rate), with its scheduled send time, so time spent waiting
 * behind a slow stage counts (no coordinated omission). The sink records now - stamp.
 *
 * Batching (docs/batching.md): the decode stage forms batches of the controller's target size
 * (batch.mode: adaptive, or fixed:N) and never holds a partial batch longer than the
 * controller's linger: while a batch is open it polls the chunk ring against that deadline
 * instead of blocking. The gateway thread owns the controller: it times each batch (service
 * time, and the wait in the ring when more batches were queued behind it) and publishes the
 * new target and linger through atomics (observe.h) that the decode thread reads. The sink
 * feeds the end-to-end latency into the controller's live p99 window, once per batch.
 * Metrics, the /metrics server and the status thread live in observe.c.
 *
 * Dead letters (docs/audit.md 2.5): every rejected record also travels with the batch it
 * precedes, so the gateway keeps it in the audit log in input order; a resumed run skips as
 * many rejects as the log holds (cf_secure_resume_dead), as it skips the logged events.
 *
 * Duplicates (docs/runtime.md): the decode stage owns a cf_dedup and sends an event whose
 * event_id was accepted within input.dedup_horizon_ms to the dead-letter output like a
 * malformed record, before it is counted as accepted. Its state is rebuilt on a restart by
 * the same pass that skips what the audit log holds: skipped events go through the check too.
 *
 * Ownership: a chunk or batch is owned by exactly one stage at a time: the one that popped it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "confide/dedup.h"
#include "confide/io.h"
#include "observe.h"
#include "outfile.h"
#include "runtime_int.h"
#include "secure.h"

#define READ_BUF_SIZE                                                                              \
    (1u << 20) /* > input.record_max + 2 (capped at 256 KiB): a record always fits */
#define CHUNK_DATA_SIZE (256u * 1024u)

/* Raw records read by the source, with their stamps; bytes copied into data. */
typedef struct chunk {
    uint32_t n;
    uint32_t cap;
    size_t used;
    size_t data_cap;
    char *data;
    cf_record *rec;
    int64_t *stamp_ns;
    uint64_t done_seq; /* JetStream input: the last message whose records all are in this
                        * chunk or before it (0: none, or not a stream) ... */
    uint32_t done_n;   /* ... its last record is rec[done_n - 1] (0: in an earlier chunk) */
} chunk;

/* An event batch with what the gateway needs to know about it. The cf_batch comes first, so
 * the cf_batch * that travels on the rings converts back. */
typedef struct pbatch {
    cf_batch b;
    uint64_t bytes;       /* raw record bytes (batch.bytes_max) */
    int64_t first_add_ns; /* the first event went in: the linger clock starts */
    int64_t pushed_ns;    /* handed to the gateway */
    /* Input records rejected since the previous batch, for the audit log: the gateway
     * appends them in input order among the batch's events (cf_audit_dead.before; docs/audit.md
     * 2.5). Allocated on the first reject; raw bytes and reasons are copied into dead_data. */
    cf_audit_dead *dead;
    uint32_t n_dead;
    char *dead_data;
    size_t dead_used;
    cf_secure_gwbatch gw;       /* the gateway's write step -> the commit stage */
    uint64_t acc_end, dead_end; /* JetStream input: log positions (events, dead letters)
                                 * that are durable once this batch is */
} pbatch;

/* JetStream input resume (docs/distributed.md): a message is acked once every record it
 * carried is durable in the audit log, and OUT/input.pos holds the last such message's stream
 * sequence with the log position after its records (events and dead letters). */
#define NATS_HEADER_MAX 4096

typedef struct nats_snap {
    uint64_t seq, acc, dead;
} nats_snap;

typedef struct nats_resume {
    bool on;            /* acks wait for durability and input.pos is kept */
    pthread_mutex_t mu; /* the queues below and the pos file */
    cf_js_msg *msgs;    /* received, not yet acked, in stream order */
    size_t m_head, m_len, m_cap;
    nats_snap *snaps; /* message boundaries from decode, in order */
    size_t s_head, s_len, s_cap;
    nats_snap acked; /* the last boundary whose messages are acked */
    nats_snap done;  /* the last boundary written to input.pos */
    int64_t pos_written_ns;
    _Atomic uint64_t durable_acc, durable_dead; /* commit: absolute log positions durable */
    uint64_t start_seq;           /* the run subscribes from here (1: the beginning) */
    uint64_t base_acc, base_dead; /* the position input.pos held at start */
    bool have_pos;
    uint64_t dead_kept; /* decode: dead letters met (kept or skipped), this run */
    char path[CF_CONF_STR_MAX + 16];
    char header[NATS_HEADER_MAX]; /* CSV: the stream's first record, fed first on a resume */
    size_t header_len;
} nats_resume;

#define DEAD_PER_BATCH 256u
#define DEAD_DATA_SIZE (64u * 1024u) /* plus input.record_max: one record always fits */

struct cf_pipeline {
    cf_config conf;
    cf_format fmt;
    const char *mem_buf;
    size_t mem_len;
    void (*sink_hook)(void *, const cf_batch *);
    void *sink_opaque;
    atomic_bool stop;
    atomic_bool reload;
    cf_secure *secure;
    nats_resume nr;
    cf_js *nats_js; /* the input's connection: acks come from the commit stage */
    cf_js_sub *nats_sub;
    uint64_t skip;      /* resume: accepted records the audit log already holds */
    uint64_t skip_done; /* decode: of those, skipped so far */
    uint64_t dead_skip; /* resume: rejected records the audit log already holds */
    bool dead_audit;    /* rejected records go into the audit log */
    char dead_source[CF_CONF_STR_MAX + 8]; /* the input's name in dead letters */
    cf_fx *fx;       /* convert.to: an event without a rate is dead-lettered (read-only) */
    cf_dedup *dedup; /* duplicate event ids (NULL: input.dedup_horizon_ms 0); decode thread */
    uint64_t duplicates;
    cf_counter *m_dup, *m_dup_evicted;
    cf_gauge *m_dup_ids, *m_dup_full;
    cf_err gateway_err;
    char gateway_errstr[256];
    cf_err commit_err; /* the commit stage's (a failed sync or forward) */
    char commit_errstr[256];

    size_t n_chunks;
    size_t n_batches;
    chunk *chunks;
    pbatch **batches;
    cf_ring *chunk_free, *chunk_full;   /* decode -> source, source -> decode */
    cf_ring *batch_free;                /* sink -> decode */
    cf_ring *batch_decoded, *batch_out; /* decode -> process, process -> sink */

    /* Results of the stages (each written by one thread, read after join). */
    cf_err source_err;
    char source_errstr[256];
    uint64_t read, accepted, dead_lettered, batches_done;
    uint64_t source_blocked_ns;
    size_t peak_inflight;
    cf_hist *latency;
    outfile dead_letter;

    cf_observe *ob;
    cf_batch_ctl *ctl; /* owned by the gateway thread once running (observe.h) */
    uint32_t count_max;
    uint64_t batch_events; /* gateway: events and largest batch, for the summary */
    uint32_t batch_largest;
};

/* ---- setup ---- */

static cf_err chunks_create(cf_pipeline *p)
{
    p->chunks = cf_calloc(p->n_chunks, sizeof(chunk));
    if (p->chunks == NULL) {
        return CF_E_NOMEM;
    }
    for (size_t i = 0; i < p->n_chunks; i++) {
        chunk *c = &p->chunks[i];
        c->cap = (uint32_t)p->conf.pipeline_batch_max;
        c->data_cap = CHUNK_DATA_SIZE + (size_t)p->conf.input_record_max + 1;
        c->data = cf_malloc(c->data_cap);
        c->rec = cf_calloc(c->cap, sizeof(cf_record));
        c->stamp_ns = cf_calloc(c->cap, sizeof(int64_t));
        if (c->data == NULL || c->rec == NULL || c->stamp_ns == NULL) {
            return CF_E_NOMEM;
        }
        if (cf_ring_push(p->chunk_free, c) != CF_OK) {
            return CF_E_STATE;
        }
    }
    return CF_OK;
}

static cf_err batches_create(cf_pipeline *p)
{
    p->batches = cf_calloc(p->n_batches, sizeof(pbatch *));
    if (p->batches == NULL) {
        return CF_E_NOMEM;
    }
    for (size_t i = 0; i < p->n_batches; i++) {
        pbatch *pb = cf_calloc(1, sizeof(*pb));
        p->batches[i] = pb;
        if (pb == NULL) {
            return CF_E_NOMEM;
        }
        pb->b.cap = (uint32_t)p->conf.pipeline_batch_max;
        pb->b.ev = cf_calloc(pb->b.cap, sizeof(cf_event));
        if (pb->b.ev == NULL) {
            return CF_E_NOMEM;
        }
        if (cf_ring_push(p->batch_free, &pb->b) != CF_OK) {
            return CF_E_STATE;
        }
    }
    return CF_OK;
}

static void publish_target(cf_pipeline *p)
{
    atomic_store_explicit(&p->ob->target, cf_batch_ctl_target(p->ctl), memory_order_relaxed);
    atomic_store_explicit(&p->ob->linger_ns, cf_batch_ctl_linger_ns(p->ctl), memory_order_relaxed);
    cf_gauge_set(p->ob->batch_linger, (double)cf_batch_ctl_linger_ns(p->ctl) / 1e9);
}

/* The batch controller and the metrics of the pipeline's own stages. */
static cf_err observe_setup(cf_pipeline *p, char *errstr, size_t errstr_size)
{
    cf_err err;
    p->count_max = cf__config_batch_count(&p->conf);
    if (p->count_max > (uint32_t)p->conf.pipeline_batch_max) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "batch.count_max %u: must not exceed pipeline.batch_max (%lld)",
                          p->count_max, (long long)p->conf.pipeline_batch_max);
    }
    if ((err = cf_batch_ctl_create(&p->ctl, p->conf.batch_mode, (uint32_t)p->conf.slo_p99_ms,
                                   p->count_max, (uint64_t)p->conf.batch_bytes_max,
                                   (uint32_t)p->conf.batch_linger_ms, errstr, errstr_size)) !=
            CF_OK ||
        (err = cf__observe_create(&p->ob, errstr, errstr_size)) != CF_OK ||
        (err = cf__observe_queue(p->ob, "source_to_decode", p->chunk_full, errstr, errstr_size)) !=
            CF_OK ||
        (err = cf__observe_queue(p->ob, "decode_to_gateway", p->batch_decoded, errstr,
                                 errstr_size)) != CF_OK ||
        (err = cf__observe_queue(p->ob, "gateway_to_sink", p->batch_out, errstr, errstr_size)) !=
            CF_OK) {
        return err;
    }
    cf_batch_ctl_set_gauge(p->ctl, p->ob->batch_target);
    publish_target(p);
    p->ob->queue[0] = p->chunk_full;
    p->ob->queue[1] = p->batch_decoded;
    p->ob->queue[2] = p->batch_out;
    p->ob->ctl = p->ctl;
    return CF_OK;
}

static cf_err check_resumed_input(cf_pipeline *p, char *errstr, size_t errstr_size);

/* A missing, unreadable or directory input is a config error, found before keys, the log
 * or any output exist. */
static cf_err check_input_readable(const cf_config *c, char *errstr, size_t errstr_size)
{
    if (strcmp(c->input_path, "-") == 0 || c->input_nats_subject[0] != '\0') {
        return CF_OK;
    }
    int fd = open(c->input_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "input.path: cannot open %s",
                            c->input_path);
    }
    struct stat st;
    bool dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    close(fd);
    return dir ? cf_err_set(CF_E_INVAL, errstr, errstr_size,
                            "input.path: %s is a directory, not a file", c->input_path)
               : CF_OK;
}

/* A fresh duplicate state as the config says (*out NULL when input.dedup_horizon_ms is 0). */
static cf_err dedup_create(const cf_config *c, cf_dedup **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (c->input_dedup_horizon_ms == 0) {
        return CF_OK;
    }
    uint64_t cap = cf_dedup_capacity_for_bytes((uint64_t)c->input_dedup_memory_mb << 20);
    /* A random key: the state lives only in this process and is rebuilt on restart. */
    return cf_dedup_create(out, c->input_dedup_horizon_ms * 1000, cap, NULL, errstr, errstr_size);
}

/* The duplicate state and its metrics (docs/metrics.md). */
static cf_err dedup_setup(cf_pipeline *p, char *errstr, size_t errstr_size)
{
    cf_err err = dedup_create(&p->conf, &p->dedup, errstr, errstr_size);
    if (err != CF_OK || p->dedup == NULL) {
        return err;
    }
    cf_gauge *cap = NULL;
    if ((err = cf_metrics_counter(p->ob->m, "confide_dedup_duplicates_total",
                                  "Events rejected as a duplicate event_id (dead-lettered).", NULL,
                                  0, &p->m_dup, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_counter(p->ob->m, "confide_dedup_evicted_total",
                                  "Event ids forgotten before the horizon because the "
                                  "duplicate state was full (input.dedup_memory_mb).",
                                  NULL, 0, &p->m_dup_evicted, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_gauge(p->ob->m, "confide_dedup_ids",
                                "Event ids remembered for duplicate detection.", NULL, 0,
                                &p->m_dup_ids, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_gauge(p->ob->m, "confide_dedup_capacity_ids",
                                "The most event ids the duplicate state can remember.", NULL, 0,
                                &cap, errstr, errstr_size)) != CF_OK ||
        (err = cf_metrics_gauge(p->ob->m, "confide_dedup_full",
                                "1 once the duplicate state was full and forgot ids early.", NULL,
                                0, &p->m_dup_full, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_gauge_set(cap, (double)cf_dedup_capacity(p->dedup));
    return CF_OK;
}

static bool nats_pos_read(const char *path, const char *stream, nats_snap *out, nats_resume *r);

cf_err cf_pipeline_create(cf_pipeline **out, const cf_config *c, char *errstr, size_t errstr_size)
{
    cf_err err;
    cf_pipeline *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    p->conf = *c;
    pthread_mutex_init(&p->nr.mu, NULL);
    err = cf_format_parse(p->conf.input_format, &p->fmt);
    if (err != CF_OK) {
        cf_err_set(err, errstr, errstr_size, "input.format: unknown format '%s'",
                   p->conf.input_format);
        goto fail;
    }
    /* Pools: ring_batches in flight per ring, and enough of them to fill every ring. */
    size_t per_ring = (size_t)p->conf.pipeline_ring_batches;
    p->n_chunks = per_ring;
    p->n_batches = 2 * per_ring;
    if ((err = cf_ring_create(&p->chunk_free, p->n_chunks)) != CF_OK ||
        (err = cf_ring_create(&p->chunk_full, p->n_chunks)) != CF_OK ||
        (err = cf_ring_create(&p->batch_free, p->n_batches)) != CF_OK ||
        (err = cf_ring_create(&p->batch_decoded, per_ring)) != CF_OK ||
        (err = cf_ring_create(&p->batch_out, per_ring)) != CF_OK ||
        (err = chunks_create(p)) != CF_OK || (err = batches_create(p)) != CF_OK ||
        (err = cf_hist_create(&p->latency)) != CF_OK) {
        cf_err_set(err, errstr, errstr_size, "cannot allocate the pipeline: %s", cf_strerror(err));
        goto fail;
    }
    if ((err = observe_setup(p, errstr, errstr_size)) != CF_OK ||
        (err = dedup_setup(p, errstr, errstr_size)) != CF_OK ||
        (err = cf__config_fx(&p->conf, &p->fx, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    p->nr.start_seq = 1;
    if (p->conf.input_nats_subject[0] != '\0' && p->conf.output_dir[0] != '\0' &&
        p->conf.audit_enabled) {
        nats_snap pos;
        p->nr.on = true;
        snprintf(p->nr.path, sizeof(p->nr.path), "%s/input.pos", p->conf.output_dir);
        if (nats_pos_read(p->nr.path, p->conf.input_nats_stream, &pos, &p->nr)) {
            p->nr.have_pos = true;
            p->nr.start_seq = pos.seq + 1;
            p->nr.base_acc = pos.acc;
            p->nr.base_dead = pos.dead;
            p->nr.acked = pos;
            p->nr.done = pos;
        }
    }
    /* before anything opens the log or the outputs: a refusal changes nothing */
    if ((err = check_input_readable(&p->conf, errstr, errstr_size)) != CF_OK ||
        (err = check_resumed_input(p, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    if ((err = cf__secure_create_observed(&p->secure, &p->conf, p->ob, errstr, errstr_size)) !=
        CF_OK) {
        goto fail;
    }
    if (p->secure != NULL) {
        cf_secure_group_commit(p->secure); /* the commit stage syncs groups of batches */
    }
    p->skip = cf_secure_resume_skip(p->secure);
    p->dead_skip = cf_secure_resume_dead(p->secure);
    p->dead_audit = cf_secure_audits(p->secure);
    if (p->nr.have_pos) {
        /* the run starts after input.pos: it skips only the tail the log holds beyond it */
        if (p->skip < p->nr.base_acc || p->dead_skip < p->nr.base_dead) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "%s is ahead of the audit log (%llu events, %llu dead letters "
                             "against %llu and %llu): it is not this output's; use --fresh",
                             p->nr.path, (unsigned long long)p->nr.base_acc,
                             (unsigned long long)p->nr.base_dead, (unsigned long long)p->skip,
                             (unsigned long long)p->dead_skip);
            goto fail;
        }
        p->skip -= p->nr.base_acc;
        p->dead_skip -= p->nr.base_dead;
    }
    atomic_store(&p->nr.durable_acc, p->nr.base_acc + p->skip); /* the log as it is */
    atomic_store(&p->nr.durable_dead, p->nr.base_dead + p->dead_skip);
    if (p->conf.input_nats_subject[0] != '\0') {
        snprintf(p->dead_source, sizeof(p->dead_source), "nats:%s", p->conf.input_nats_subject);
    } else {
        snprintf(p->dead_source, sizeof(p->dead_source), "%s", p->conf.input_path);
    }
    cf__observe_configure(p->ob, &p->conf); /* the console's settings and /api/status */
    if (p->conf.metrics_listen[0] != '\0' &&
        (err = cf__observe_serve(p->ob, p->conf.metrics_listen, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    *out = p;
    return CF_OK;
fail:
    cf_pipeline_destroy(p);
    return err;
}

void cf_pipeline_set_input_buffer(cf_pipeline *p, const char *buf, size_t len)
{
    p->mem_buf = buf;
    p->mem_len = len;
}

void cf_pipeline_set_sink_hook(cf_pipeline *p, void (*hook)(void *, const cf_batch *), void *opaque)
{
    p->sink_hook = hook;
    p->sink_opaque = opaque;
}

void cf_pipeline_set_status_cb(cf_pipeline *p, void (*cb)(void *, const cf_run_status *),
                               void *opaque)
{
    p->ob->status_cb = cb;
    p->ob->status_opaque = opaque;
    p->ob->interval_ns = p->conf.status_interval_ms * INT64_C(1000000);
}

struct cf_metrics *cf_pipeline_metrics(cf_pipeline *p)
{
    return p->ob->m;
}

uint16_t cf_pipeline_metrics_port(const cf_pipeline *p)
{
    return p->ob->srv != NULL ? p->ob->port : 0;
}

void cf_pipeline_stop(cf_pipeline *p)
{
    atomic_store(&p->stop, true);
}

void cf_pipeline_reload(cf_pipeline *p)
{
    atomic_store(&p->reload, true);
}

cf_err cf_pipeline_rescale(cf_pipeline *p, unsigned workers)
{
    return p->secure != NULL ? cf_secure_rescale(p->secure, workers) : CF_E_STATE;
}

void cf_pipeline_destroy(cf_pipeline *p)
{
    if (p == NULL) {
        return;
    }
    /* The server and the status thread read the rings: they go first. */
    if (p->ob != NULL) {
        cf__observe_status_stop(p->ob);
        cf_metrics_server_stop(p->ob->srv);
        p->ob->srv = NULL;
    }
    if (p->chunks != NULL) {
        for (size_t i = 0; i < p->n_chunks; i++) {
            cf_free(p->chunks[i].data);
            cf_free(p->chunks[i].rec);
            cf_free(p->chunks[i].stamp_ns);
        }
        cf_free(p->chunks);
    }
    if (p->batches != NULL) {
        for (size_t i = 0; i < p->n_batches; i++) {
            if (p->batches[i] != NULL) {
                cf_free(p->batches[i]->dead);
                cf_free(p->batches[i]->dead_data);
                cf_secure_gwbatch_free(&p->batches[i]->gw);
                cf_free(p->batches[i]->b.ev);
                cf_free(p->batches[i]);
            }
        }
        cf_free(p->batches);
    }
    cf_ring_destroy(p->chunk_free);
    cf_ring_destroy(p->chunk_full);
    cf_ring_destroy(p->batch_free);
    cf_ring_destroy(p->batch_decoded);
    cf_ring_destroy(p->batch_out);
    cf_hist_destroy(p->latency);
    cf_dedup_destroy(p->dedup);
    for (size_t i = 0; i < p->nr.m_len; i++) {
        cf_js_release(&p->nr.msgs[(p->nr.m_head + i) % p->nr.m_cap]); /* redelivered */
    }
    cf_free(p->nr.msgs);
    cf_free(p->nr.snaps);
    pthread_mutex_destroy(&p->nr.mu);
    cf_js_unsubscribe(p->nats_sub);
    cf_js_close(p->nats_js);
    cf_fx_destroy(p->fx);
    cf_secure_destroy(p->secure); /* holds metric handles: before the registry */
    outfile_abandon(&p->dead_letter);
    cf_batch_ctl_destroy(p->ctl);
    cf__observe_destroy(p->ob);
    cf_free(p);
}

/* ---- source ---- */

typedef struct source_state {
    cf_pipeline *p;
    chunk *cur;
    cf_pacer *pacer;
    int64_t start_ns;
    uint64_t blocked_ns;
    uint64_t consumed;  /* input bytes split into records so far */
    int64_t last_stamp; /* paced: the latest stamp in the current chunk */
    int64_t last_flush; /* paced: when the last chunk was handed on */
} source_state;

static chunk *current_chunk(source_state *s);

static void flush_chunk(source_state *s)
{
    if (s->cur != NULL && (s->cur->n > 0 || s->cur->done_seq > 0)) {
        if (s->pacer != NULL && s->last_stamp > cf_now_ns()) {
            cf_sleep_until_ns(s->last_stamp); /* never hand a record on before its stamp */
        }
        cf_ring_push_wait(s->p->chunk_full, s->cur);
        s->cur = NULL;
        s->last_flush = s->last_stamp;
    }
}

static chunk *current_chunk(source_state *s)
{
    if (s->cur == NULL) {
        void *item = NULL;
        if (cf_ring_pop(s->p->chunk_free, &item) != CF_OK) {
            /* Every chunk is downstream: this wait is the pipeline pushing back. */
            int64_t t0 = cf_now_ns();
            cf_err err = cf_ring_pop_wait(s->p->chunk_free, &item);
            CF_ASSERT(err == CF_OK); /* the free ring is never closed while the source runs */
            s->blocked_ns += (uint64_t)(cf_now_ns() - t0);
        }
        s->cur = item;
        s->cur->n = 0;
        s->cur->done_seq = 0;
        s->cur->done_n = 0;
        s->cur->used = 0;
    }
    return s->cur;
}

#define PACE_TICK_NS 100000 /* paced: at most one hand-off per 0.1 ms */

/*
 * Paced input (input.rate): when the record stamped @p stamp comes, the chunk held so far
 * leaves if decode would not wait for this record anyway: the batch controller's linger,
 * counted from the chunk's first stamp, ends before it. A record is never handed on before
 * its stamp (flush_chunk sleeps until the chunk's last one), but the source does not wake
 * for every record, nor on a timer grid: it hands on a chunk when it holds a batch's worth
 * (the controller's target, emit_record) or when the linger of its first record ends, and
 * never more often than every PACE_TICK_NS (a tiny target, as at start, would otherwise mean
 * a hand-off per record). So the source and decode wake about once per batch instead of once
 * per record or per 0.1 ms tick: a wake-up costs more CPU than an event on this VM (issue 11),
 * and the latency is that of a batch leaving when its last event arrives, as decode sends it.
 */
static void pace_record(source_state *s, int64_t stamp)
{
    chunk *c = s->cur;
    if (c == NULL || c->n == 0) {
        return;
    }
    int64_t due = c->stamp_ns[0] + atomic_load_explicit(&s->p->ob->linger_ns, memory_order_relaxed);
    if (due < s->last_flush + PACE_TICK_NS) {
        due = s->last_flush + PACE_TICK_NS;
    }
    if (stamp > due) {
        if (due > s->last_stamp) {
            s->last_stamp = due; /* decode would hold the partial batch until then */
        }
        flush_chunk(s);
    }
}

/* Copies one record into the current chunk with its stamp, pacing if asked to. */
static void emit_record(source_state *s, const cf_record *rec)
{
    int64_t stamp;
    if (s->pacer != NULL) {
        stamp = s->start_ns + cf_pacer_next_ns(s->pacer);
        pace_record(s, stamp);
    } else {
        stamp = cf_now_ns();
    }
    chunk *c = current_chunk(s);
    if (c->n == c->cap || c->used + rec->len > c->data_cap) {
        flush_chunk(s);
        c = current_chunk(s);
    }
    cf_record *r = &c->rec[c->n];
    *r = *rec;
    memcpy(c->data + c->used, rec->data, rec->len);
    r->data = c->data + c->used;
    c->used += rec->len;
    c->stamp_ns[c->n] = stamp;
    c->n++;
    if (s->pacer != NULL) {
        s->last_stamp = stamp;
        if (c->n >= atomic_load_explicit(&s->p->ob->target, memory_order_relaxed) &&
            stamp >= s->last_flush + PACE_TICK_NS) {
            flush_chunk(s); /* a batch's worth: it leaves when its last record arrives */
        }
    }
}

/* Splits buf[0..len) into records; returns bytes consumed. */
static size_t split_all(source_state *s, cf_splitter *sp, const char *buf, size_t len, bool eof)
{
    size_t pos = 0;
    while (!atomic_load_explicit(&s->p->stop, memory_order_relaxed)) {
        cf_record rec;
        size_t used = 0;
        cf_err err = cf_splitter_next(sp, buf + pos, len - pos, eof, &rec, &used);
        pos += used;
        if (err != CF_OK) {
            break;
        }
        emit_record(s, &rec);
        /* Progress counts records handed on (paced or not), not bytes read ahead. Only this
         * thread writes it: a plain store, no read-modify-write per record. */
        s->consumed += used;
        atomic_store_explicit(&s->p->ob->bytes_read, s->consumed, memory_order_relaxed);
    }
    return pos;
}

static cf_err read_fd(source_state *s, cf_splitter *sp, int fd)
{
    cf_pipeline *p = s->p;
    char *buf = cf_malloc(READ_BUF_SIZE);
    if (buf == NULL) {
        return CF_E_NOMEM;
    }
    size_t have = 0;
    bool eof = false;
    cf_err err = CF_OK;
    while (!eof && !atomic_load(&p->stop)) {
        ssize_t n = read(fd, buf + have, READ_BUF_SIZE - have);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            err = cf_err_errno(errno, p->source_errstr, sizeof(p->source_errstr), "read %s",
                               p->conf.input_path);
            break;
        }
        eof = n == 0;
        have += (size_t)n;
        size_t used = split_all(s, sp, buf, have, eof);
        memmove(buf, buf + used, have - used);
        have -= used;
        /* The next read may block (a pipe): hand over what is ready now. */
        flush_chunk(s);
    }
    cf_free(buf);
    return err;
}

/* ---- JetStream input (input.nats_subject) ---- */

/* Connects, creates the input stream if missing and consumes it from @p start_seq. */
static cf_err nats_input_open(const cf_config *c, uint64_t start_seq, cf_js **js, cf_js_sub **sub,
                              char *errstr, size_t errstr_size)
{
    *sub = NULL;
    /* the gateway's own inbox prefix (its permissions allow _INBOX.confide-gateway.>) */
    cf_err err = cf__nats_connect(c, "confide-gateway.in", js, errstr, errstr_size);
    if (err == CF_OK) {
        err = cf_js_ensure_stream(*js, c->input_nats_stream, c->input_nats_subject,
                                  (int)c->nats_replicas, c->nats_duplicate_window_s, errstr,
                                  errstr_size);
    }
    if (err == CF_OK && start_seq > 1 && !c->recovery_resume_any) {
        cf_js_stream_st st = {0};
        err = cf_js_stream_state(*js, c->input_nats_stream, &st, errstr, errstr_size);
        uint64_t first = st.first_seq, last = st.last_seq;
        if (err == CF_OK && first > start_seq && last >= first) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "input stream %s no longer holds sequence %llu where the input "
                             "resumes (it holds %llu to %llu: its limits removed %llu messages "
                             "that were never processed); use --resume to go on from %llu "
                             "anyway, or --fresh",
                             c->input_nats_stream, (unsigned long long)start_seq,
                             (unsigned long long)first, (unsigned long long)last,
                             (unsigned long long)(first - start_seq), (unsigned long long)first);
        }
    }
    if (err == CF_OK) {
        err = cf_js_subscribe(sub, *js, c->input_nats_stream, c->input_nats_subject, start_seq,
                              (int)c->nats_max_ack_pending, errstr, errstr_size);
    }
    return err;
}

/* One message as bytes of the input: its record and a newline if it has none. */
static bool nats_record(const cf_js_msg *m, char **buf, size_t *cap, size_t *len)
{
    if (m->len + 1 > *cap) {
        size_t ncap = m->len + 1 > 2 * *cap ? m->len + 1 : 2 * *cap;
        char *nb = cf_realloc(*buf, ncap);
        if (nb == NULL) {
            return false;
        }
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf, m->data, m->len);
    *len = m->len;
    if (*len == 0 || (*buf)[*len - 1] != '\n') {
        (*buf)[(*len)++] = '\n';
    }
    return true;
}

/* OUT/input.pos: "stream S\nseq Q\nevents A\ndead D\n". */
static bool nats_pos_read(const char *path, const char *stream, nats_snap *out, nats_resume *r)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char name[1025]; /* %1024s: any stream name (CF_CONF_STR_MAX or less) fits */
    char hex[2 * NATS_HEADER_MAX + 1];
    unsigned long long q = 0, a = 0, d = 0;
    bool ok = fscanf(f, "stream %1024s seq %llu events %llu dead %llu", name, &q, &a, &d) == 4 &&
              strcmp(name, stream) == 0;
    r->header_len = 0;
    if (ok && fscanf(f, " header %8192s", hex) == 1) {
        size_t n = strlen(hex) / 2;
        for (size_t i = 0; i < n && i < NATS_HEADER_MAX; i++) {
            unsigned v = 0;
            ok = ok && sscanf(hex + 2 * i, "%2x", &v) == 1;
            r->header[i] = (char)v;
        }
        r->header_len = n < NATS_HEADER_MAX ? n : 0;
    }
    fclose(f);
    out->seq = q;
    out->acc = a;
    out->dead = d;
    return ok;
}

/* Written by rename and fsync: the file is always a whole, durable position. */
static bool nats_pos_write(const cf_pipeline *p, const nats_snap *sn)
{
    char tmp[CF_CONF_STR_MAX + 24];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p->nr.path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return false;
    }
    char buf[CF_CONF_STR_MAX + 128 + 2 * NATS_HEADER_MAX];
    int n = snprintf(buf, sizeof(buf), "stream %s\nseq %llu\nevents %llu\ndead %llu\n",
                     p->conf.input_nats_stream, (unsigned long long)sn->seq,
                     (unsigned long long)sn->acc, (unsigned long long)sn->dead);
    if (p->nr.header_len > 0) { /* a CSV stream's header: a resume reads it first */
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "header ");
        for (size_t i = 0; i < p->nr.header_len; i++) {
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%02x",
                          (unsigned)(unsigned char)p->nr.header[i]);
        }
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\n");
    }
    bool ok = n > 0 && write(fd, buf, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, p->nr.path) != 0) {
        unlink(tmp);
        return false;
    }
    int dfd = open(p->conf.output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ok = fsync(dfd) == 0;
        close(dfd);
    }
    return ok;
}

#define NATS_POS_EVERY_NS (200 * 1000 * 1000) /* input.pos at most 5 times a second */

/* Acks every message whose records are all durable, in order, and keeps input.pos up to
 * date (at most every NATS_POS_EVERY_NS, or now with @p final). Any thread. */
static void nats_progress(cf_pipeline *p, bool final)
{
    nats_resume *r = &p->nr;
    if (!r->on) {
        return;
    }
    uint64_t dacc = atomic_load(&r->durable_acc), ddead = atomic_load(&r->durable_dead);
    pthread_mutex_lock(&r->mu);
    nats_snap best = r->acked;
    while (r->s_len > 0) {
        nats_snap *sn = &r->snaps[r->s_head];
        if (sn->acc > dacc || sn->dead > ddead) {
            break; /* its records are not all durable yet */
        }
        best = *sn;
        r->s_head++;
        r->s_len--;
    }
    while (r->m_len > 0 && r->msgs[r->m_head].stream_seq <= best.seq) {
        cf_js_ack(&r->msgs[r->m_head]);
        r->m_head = (r->m_head + 1) % r->m_cap;
        r->m_len--;
    }
    r->acked = best;
    int64_t now = cf_now_ns();
    /* the file may lag the acks: a restart re-reads and checks the messages in between */
    if (best.seq > r->done.seq && (final || now - r->pos_written_ns >= NATS_POS_EVERY_NS)) {
        if (nats_pos_write(p, &best)) {
            r->done = best;
        } else {
            CF_LOG(CF_LOG_WARN, "source", "cannot write %s: a restart re-reads more input",
                   r->path);
        }
        r->pos_written_ns = now;
    }
    pthread_mutex_unlock(&r->mu);
}

/* Decode: the records of every message up to @p seq are in batches emitted or open. */
static void nats_boundary(cf_pipeline *p, uint64_t seq)
{
    nats_resume *r = &p->nr;
    nats_snap sn = {seq, r->base_acc + p->accepted, r->base_dead + r->dead_kept};
    pthread_mutex_lock(&r->mu);
    if (r->s_head > 0 && r->s_head + r->s_len == r->s_cap) {
        memmove(r->snaps, r->snaps + r->s_head, r->s_len * sizeof(*r->snaps));
        r->s_head = 0;
    }
    if (r->s_head + r->s_len == r->s_cap) {
        size_t nc = r->s_cap ? 2 * r->s_cap : 256;
        nats_snap *ns = cf_realloc(r->snaps, nc * sizeof(*ns));
        if (ns == NULL) {
            pthread_mutex_unlock(&r->mu);
            return; /* a later boundary covers this one */
        }
        r->snaps = ns;
        r->s_cap = nc;
    }
    r->snaps[r->s_head + r->s_len++] = sn;
    pthread_mutex_unlock(&r->mu);
}

/* Source: keeps a received message until its records are durable; how many are kept (0:
 * out of memory). */
static size_t nats_keep(cf_pipeline *p, const cf_js_msg *m)
{
    nats_resume *r = &p->nr;
    pthread_mutex_lock(&r->mu);
    if (r->m_len == r->m_cap) {
        size_t nc = r->m_cap ? 2 * r->m_cap : 1024;
        cf_js_msg *nm = cf_malloc(nc * sizeof(*nm));
        if (nm == NULL) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        for (size_t i = 0; i < r->m_len; i++) {
            nm[i] = r->msgs[(r->m_head + i) % r->m_cap];
        }
        cf_free(r->msgs);
        r->msgs = nm;
        r->m_head = 0;
        r->m_cap = nc;
    }
    r->msgs[(r->m_head + r->m_len++) % r->m_cap] = *m;
    size_t held = r->m_len;
    pthread_mutex_unlock(&r->mu);
    return held;
}

/* Reads input.nats_subject until a stop, or input.nats_idle_end_ms without a message. With an
 * audit log, the run starts after the last message input.pos says is durable (the tail the
 * log holds beyond it is skipped and was checked) and acks a message only once its records
 * are durable (nats_progress); without one, from the start, acks pacing the delivery. */
static cf_err read_nats(source_state *s, cf_splitter *sp)
{
    cf_pipeline *p = s->p;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    int64_t idle_ms = 0, end_ms = p->conf.input_nats_idle_end_ms;
    uint64_t last_seq = p->nr.start_seq - 1;
    cf_err err = nats_input_open(&p->conf, p->nr.start_seq, &p->nats_js, &p->nats_sub,
                                 p->source_errstr, sizeof(p->source_errstr));
    if (err == CF_OK && p->nr.have_pos) {
        CF_LOG(CF_LOG_WARN, "source",
               "resuming input stream %s at sequence %llu (position %llu): the messages before "
               "it are durable and not read again",
               p->conf.input_nats_stream, (unsigned long long)p->nr.start_seq,
               (unsigned long long)p->nr.base_acc);
        if (p->nr.header_len > 0) {
            split_all(s, sp, p->nr.header, p->nr.header_len, false); /* the CSV header */
        }
    }
    while (err == CF_OK && !atomic_load(&p->stop)) {
        cf_js_msg m;
        cf_err e = cf_js_next(p->nats_sub, &m, 50);
        if (e == CF_E_FULL) {
            flush_chunk(s); /* hand over what is ready while the stream is quiet */
            nats_progress(p, false);
            idle_ms += 50;
            if (end_ms > 0 && idle_ms >= end_ms) {
                break;
            }
            continue;
        }
        if (e != CF_OK) {
            err = cf_err_set(CF_E_TRANSPORT, p->source_errstr, sizeof(p->source_errstr),
                             "input.nats_subject %s: connection lost", p->conf.input_nats_subject);
            break;
        }
        idle_ms = 0;
        if (m.stream_seq <= last_seq) {
            cf_js_release(&m); /* a redelivery (its ack is still waiting): already read */
            continue;
        }
        last_seq = m.stream_seq;
        if (!nats_record(&m, &buf, &cap, &len)) {
            cf_js_release(&m);
            err = CF_E_NOMEM;
            break;
        }
        if (p->nr.on && !p->nr.have_pos && p->fmt != CF_FMT_NDJSON && m.stream_seq == 1) {
            const char *nl = memchr(buf, '\n', len); /* the header: the first record */
            size_t hl = (size_t)(nl - buf) + 1;
            pthread_mutex_lock(&p->nr.mu);
            if (hl <= NATS_HEADER_MAX) {
                memcpy(p->nr.header, buf, hl);
                p->nr.header_len = hl;
            }
            pthread_mutex_unlock(&p->nr.mu);
        }
        split_all(s, sp, buf, len, false);
        chunk *c = current_chunk(s); /* holds the message's last record: the boundary */
        c->done_seq = m.stream_seq;
        c->done_n = c->n;
        if (!p->nr.on) {
            cf_js_ack(&m);
        } else {
            size_t held = nats_keep(p, &m);
            if (held == 0) {
                cf_js_release(&m); /* never acked: redelivered to the next run */
                err = CF_E_NOMEM;
                break;
            }
            size_t half = (size_t)p->conf.nats_max_ack_pending / 2;
            if (held % (half > 0 ? half : 1) == 0) {
                /* the server sends more once these are acked: let them become durable */
                flush_chunk(s);
            }
        }
    }
    cf_free(buf);
    return err;
}

/* The messages the log holds beyond input.pos (a restart's input check), from the resume
 * point until @p want accepted records are in (or the stream is quiet): one buffer. */
static cf_err read_nats_tail(const cf_pipeline *p, char **out, size_t *out_len, char *errstr,
                             size_t errstr_size)
{
    const cf_config *c = &p->conf;
    cf_js *js = NULL;
    cf_js_sub *sub = NULL;
    char *all = NULL, *rec = NULL;
    size_t all_cap = 0, all_len = 0, rec_cap = 0, rec_len = 0;
    cf_err err = nats_input_open(c, p->nr.start_seq, &js, &sub, errstr, errstr_size);
    cf_js_stream_st st = {0};
    if (err == CF_OK) {
        err = cf_js_stream_state(js, c->input_nats_stream, &st, errstr, errstr_size);
    }
    uint64_t last = st.last_seq;
    cf_js_msg m;
    if (err == CF_OK && p->nr.have_pos && p->nr.header_len > 0) {
        all = cf_malloc(p->nr.header_len); /* the CSV header: the tail's records need it */
        err = all != NULL ? CF_OK : CF_E_NOMEM;
        if (all != NULL) {
            memcpy(all, p->nr.header, p->nr.header_len);
            all_len = all_cap = p->nr.header_len;
        }
    }
    while (err == CF_OK && cf_js_next(sub, &m, 1000) == CF_OK) {
        if (!nats_record(&m, &rec, &rec_cap, &rec_len)) {
            err = CF_E_NOMEM;
        } else if (all_len + rec_len > all_cap) {
            size_t ncap = (all_len + rec_len) * 2;
            char *nb = cf_realloc(all, ncap);
            err = nb != NULL ? CF_OK : CF_E_NOMEM;
            all = nb != NULL ? nb : all;
            all_cap = nb != NULL ? ncap : all_cap;
        }
        if (err == CF_OK) {
            memcpy(all + all_len, rec, rec_len);
            all_len += rec_len;
        }
        uint64_t seq = m.stream_seq;
        cf_js_ack(&m); /* this check's own consumer: the run's reads it again */
        if (last > 0 && seq >= last) {
            break; /* the stream as it was at the check: the tail is behind it */
        }
    }
    cf_free(rec);
    cf_js_unsubscribe(sub);
    cf_js_close(js);
    if (err != CF_OK) {
        cf_free(all);
        return err;
    }
    *out = all;
    *out_len = all_len;
    return CF_OK;
}

static void *source_main(void *arg)
{
    cf_pipeline *p = arg;
    cf_thread_low_latency();
    source_state s = {.p = p};
    cf_splitter *sp = NULL;
    int fd = -1;
    cf_err err = cf_splitter_create(&sp, p->fmt, (size_t)p->conf.input_record_max);
    if (err != CF_OK) {
        goto done;
    }
    if (p->conf.input_rate > 0) {
        err = cf_pacer_create(&s.pacer, p->conf.input_shape, p->conf.input_rate,
                              p->conf.input_speedup, p->source_errstr, sizeof(p->source_errstr));
        if (err != CF_OK) {
            goto done;
        }
    }
    s.start_ns = cf_now_ns();
    if (p->mem_buf != NULL) {
        split_all(&s, sp, p->mem_buf, p->mem_len, true);
    } else if (p->conf.input_nats_subject[0] != '\0') {
        err = read_nats(&s, sp);
    } else {
        bool use_stdin = strcmp(p->conf.input_path, "-") == 0;
        fd = use_stdin ? STDIN_FILENO : open(p->conf.input_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            err = cf_err_errno(errno, p->source_errstr, sizeof(p->source_errstr),
                               "cannot open input %s", p->conf.input_path);
            goto done;
        }
        err = read_fd(&s, sp, fd);
        if (!use_stdin) {
            close(fd);
        }
    }
    flush_chunk(&s);
done:
    if (s.cur != NULL) {
        cf_ring_push_wait(p->chunk_free, s.cur); /* unused, back to the pool */
    }
    p->source_err = err;
    if (err != CF_OK) {
        atomic_store(&p->ob->unhealthy, true); /* /healthz: 503 while the run drains */
    }
    p->source_blocked_ns = s.blocked_ns + cf_ring_blocked_ns(p->chunk_full);
    cf_ring_close(p->chunk_full);
    cf_splitter_destroy(sp);
    cf_pacer_destroy(s.pacer);
    return NULL;
}

/* ---- decode ---- */

static cf_batch *take_batch(cf_pipeline *p)
{
    void *item = NULL;
    cf_err err = cf_ring_pop_wait(p->batch_free, &item);
    CF_ASSERT(err == CF_OK);
    size_t inflight = p->n_batches - cf_ring_size(p->batch_free);
    if (inflight > p->peak_inflight) {
        p->peak_inflight = inflight;
    }
    cf_batch *b = item;
    b->n = 0;
    return b;
}

/* The decode stage's open batch and the counts not yet added to the metrics. */
typedef struct decode_state {
    cf_pipeline *p;
    pbatch *b;
    bool fixed; /* fixed:N: exactly the target, never held */
    uint64_t seq;
    uint64_t accepted, dead, resumed; /* totals at the last metrics update */
    uint64_t dups, dup_evicted;
} decode_state;

static void decode_counts(decode_state *d)
{
    cf_pipeline *p = d->p;
    uint64_t acc = p->accepted, res = p->skip_done;
    cf_counter_add(p->ob->decode_accepted, acc - d->accepted);
    cf_counter_add(p->ob->decode_dead, p->dead_lettered - d->dead);
    cf_counter_add(p->ob->decode_resumed, res - d->resumed);
    d->accepted = acc;
    d->dead = p->dead_lettered;
    d->resumed = res;
    if (p->dedup != NULL) {
        uint64_t ev = cf_dedup_evicted_full(p->dedup);
        cf_counter_add(p->m_dup, p->duplicates - d->dups);
        cf_counter_add(p->m_dup_evicted, ev - d->dup_evicted);
        cf_gauge_set(p->m_dup_ids, (double)cf_dedup_size(p->dedup));
        cf_gauge_set(p->m_dup_full, ev > 0 ? 1.0 : 0.0);
        d->dups = p->duplicates;
        d->dup_evicted = ev;
    }
}

static void emit_batch(decode_state *d)
{
    pbatch *b = d->b;
    if (b == NULL) {
        return;
    }
    d->b = NULL;
    if (b->b.n == 0 && b->n_dead == 0) {
        cf_ring_push_wait(d->p->batch_free, &b->b);
        return;
    }
    decode_counts(d); /* before the gateway can count the batch as committed */
    b->acc_end = d->p->nr.base_acc + d->p->accepted;
    b->dead_end = d->p->nr.base_dead + d->p->nr.dead_kept;
    b->pushed_ns = cf_now_ns();
    cf_ring_push_wait(d->p->batch_decoded, &b->b);
}

/* Takes an empty batch from the pool as the open batch. */
static void open_batch(decode_state *d)
{
    d->b = (pbatch *)(void *)take_batch(d->p);
    d->b->bytes = 0;
    d->b->first_add_ns = 0;
    d->b->n_dead = 0;
    d->b->dead_used = 0;
}

/* Keeps a rejected record in the open batch for the audit log, unless the log already holds
 * it (a resumed run reads the input again from the start and meets its rejects again, in
 * the same order). A full dead-letter buffer sends the batch on. */
static void keep_dead(decode_state *d, const cf_record *rec, const char *reason)
{
    cf_pipeline *p = d->p;
    if (p->dead_skip > 0) {
        p->nr.dead_kept++; /* in the log already */
        p->dead_skip--;
        return;
    }
    size_t raw_len = rec->len < CF_AUDIT_DEAD_RAW_MAX ? rec->len : CF_AUDIT_DEAD_RAW_MAX;
    size_t rl = strlen(reason);
    rl = rl > CF_AUDIT_DEAD_TEXT_MAX ? CF_AUDIT_DEAD_TEXT_MAX : rl;
    size_t need = raw_len + rl + 1;
    size_t cap = DEAD_DATA_SIZE + (size_t)p->conf.input_record_max + CF_AUDIT_DEAD_TEXT_MAX + 1;
    if (d->b != NULL && (d->b->n_dead == DEAD_PER_BATCH || d->b->dead_used + need > cap)) {
        emit_batch(d);
    }
    if (d->b == NULL) {
        open_batch(d);
    }
    pbatch *b = d->b;
    if (b->dead == NULL) {
        b->dead = cf_calloc(DEAD_PER_BATCH, sizeof(*b->dead));
        b->dead_data = cf_malloc(cap);
        if (b->dead == NULL || b->dead_data == NULL) {
            cf_free(b->dead);
            cf_free(b->dead_data);
            b->dead = NULL;
            b->dead_data = NULL;
            /* Fatal for the run: a dead letter the log does not hold breaks its counts. */
            CF_LOG(CF_LOG_ERROR, "decode", "out of memory for dead letters");
            atomic_store(&p->stop, true);
            return;
        }
    }
    if (b->b.n == 0 && b->n_dead == 0) {
        b->first_add_ns = cf_now_ns(); /* the linger bounds how long a dead letter waits */
    }
    char *raw = b->dead_data + b->dead_used;
    if (raw_len > 0) {
        memcpy(raw, rec->data, raw_len);
    }
    char *why = raw + raw_len;
    memcpy(why, reason, rl);
    why[rl] = '\0';
    b->dead_used += need;
    b->dead[b->n_dead++] = (cf_audit_dead){.source = p->dead_source,
                                           .line = rec->line,
                                           .offset = rec->offset,
                                           .reason = why,
                                           .raw = raw,
                                           .raw_len = raw_len,
                                           .raw_truncated = rec->too_long || raw_len < rec->len,
                                           .before = b->b.n}; /* keeps the input order */
    p->nr.dead_kept++; /* in the log once this batch is durable */
}

static void dead_letter(decode_state *d, const cf_record *rec, const char *reason)
{
    cf_pipeline *p = d->p;
    p->dead_lettered++;
    cf__observe_dead_letter(p->ob, reason);
    if (p->dead_audit) {
        keep_dead(d, rec, reason);
    }
    if (p->dead_letter.f == NULL) {
        return;
    }
    char line[CF_DEADLETTER_RAW_MAX * 6 + 512];
    size_t n = cf_deadletter_format_ex(p->dead_source, rec, reason, p->conf.output_dead_letter_raw,
                                       line, sizeof(line));
    outfile_write(&p->dead_letter, line, n);
}

static int64_t linger_deadline(const decode_state *d)
{
    return d->b->first_add_ns + atomic_load_explicit(&d->p->ob->linger_ns, memory_order_relaxed);
}

/* Adaptive mode: the open batch has reached the target, but a batch is already waiting for
 * the busy gateway. Sending this one now only queues it behind that one, so keep filling
 * it (group commit) until the gateway takes the waiting batch, count_max or the linger: one
 * larger batch then pays the fixed cost once, and a flood grows batches within one service
 * time instead of waiting for the controller to see the backlog. */
static bool hold_for_gateway(const decode_state *d)
{
    return !d->fixed && d->b->b.n < d->p->count_max && cf_ring_size(d->p->batch_decoded) > 0;
}

/* True when the open batch must leave now: the controller's target (unless held, above),
 * batch.count_max or batch.bytes_max. The linger is not checked here: it bounds how long a
 * partial batch waits for input that is not there yet (decode_main), while these records are
 * at hand. Checking it per record cut batches to ~32 events under overload, when the SLO
 * budget left for lingering is zero: one fsync and one signature per 32 events, a third of
 * the throughput that the same pipeline reaches with full batches (bench/results/run-*). */
static bool batch_due(const decode_state *d)
{
    const pbatch *b = d->b;
    uint32_t target = atomic_load_explicit(&d->p->ob->target, memory_order_relaxed);
    if (b->b.n >= d->p->count_max || b->bytes >= (uint64_t)d->p->conf.batch_bytes_max) {
        return true;
    }
    return b->b.n >= target && !hold_for_gateway(d);
}

/* convert.to: false (with the dead-letter reason) when @p ev has no rate for its currency
 * and time, or its amount does not fit once converted. The gateway converts with the same
 * table (secure.c), so an event accepted here always converts there. */
static bool fx_convertible(const cf_fx *fx, const cf_event *ev, char *reason, size_t size)
{
    const cf_fx_rate *r = cf_fx_find(fx, ev->currency, ev->ts_us);
    int64_t out;
    if (r == NULL) {
        cf_fx_no_rate_reason(ev->currency, ev->ts_us, reason, size);
        return false;
    }
    if (cf_fx_convert(r, ev->amount_minor, &out) != CF_OK) {
        snprintf(reason, size, "amount overflow in %s", cf_fx_target(fx));
        return false;
    }
    return true;
}

/* Decodes the records of @p c from *pos into the open batch, emitting every batch that is
 * due. */
static void decode_chunk(decode_state *d, cf_decoder *dec, chunk *c)
{
    cf_pipeline *p = d->p;
    for (uint32_t i = 0; i < c->n; i++) {
        const cf_record *rec = &c->rec[i];
        if (c->done_seq > 0 && i == c->done_n) {
            nats_boundary(p, c->done_seq); /* its records are in batches emitted or open */
        }
        if (d->b != NULL && d->b->b.n > 0 &&
            d->b->bytes + rec->len > (uint64_t)p->conf.batch_bytes_max) {
            emit_batch(d); /* batch.bytes_max is a bound: this record starts the next batch */
        }
        if (d->b == NULL) {
            open_batch(d);
        }
        cf_batch *b = &d->b->b;
        cf_event *ev = &b->ev[b->n];
        char reason[160];
        cf_decode_result r;
        if (rec->too_long) {
            r = CF_DECODE_REJECT;
            snprintf(reason, sizeof(reason), "record too long");
        } else if (dec == NULL) {
            r = CF_DECODE_REJECT;
            snprintf(reason, sizeof(reason), "no decoder");
        } else {
            r = cf_decoder_decode(dec, rec, ev, reason, sizeof(reason));
        }
        if (r == CF_DECODE_SKIP) {
            continue;
        }
        p->read++;
        if (r == CF_DECODE_REJECT ||
            (p->fx != NULL && !fx_convertible(p->fx, ev, reason, sizeof(reason)))) {
            dead_letter(d, rec, reason);
            continue;
        }
        /* Before the resume skip: the skipped events rebuild the state they left. */
        if (p->dedup != NULL &&
            cf_dedup_check(p->dedup, ev->event_id, ev->ts_us) == CF_DEDUP_DUPLICATE) {
            p->duplicates++;
            dead_letter(d, rec, "duplicate event_id");
            continue;
        }
        p->accepted++;
        if (p->skip > 0) {
            p->skip--; /* already logged and replayed from the log (resume) */
            p->skip_done++;
            continue;
        }
        ev->ingest_ns = c->stamp_ns[i];
        ev->seq = d->seq++;
        if (b->n++ == 0 && d->b->n_dead == 0) {
            /* The linger counts from the event's arrival (its stamp; paced: when it was due),
             * not from when decode got to it: a batch the source held does not wait twice. */
            int64_t now = cf_now_ns();
            d->b->first_add_ns = ev->ingest_ns < now ? ev->ingest_ns : now;
        }
        d->b->bytes += rec->len;
        if (batch_due(d)) {
            emit_batch(d);
        }
    }
    if (c->done_seq > 0 && c->done_n == c->n) {
        nats_boundary(p, c->done_seq);
    }
}

/* Pops a chunk, waiting at most until @p deadline_ns, or while @p busy (may be NULL) is
 * non-empty: CF_OK, CF_E_EOF when the wait ended with nothing to pop, CF_E_STATE when the
 * ring is closed and drained. */
static cf_err pop_until(cf_ring *r, void **item, int64_t deadline_ns, const cf_ring *busy)
{
    if (busy == NULL) {
        return cf_ring_pop_until(r, item, deadline_ns); /* sleeps until a push or the deadline */
    }
    for (;;) {
        /* Nothing wakes us when the gateway frees up: look again every 200 us (a gateway
         * batch costs an fdatasync, milliseconds, so this adds little and costs little). */
        int64_t now = cf_now_ns();
        int64_t until = deadline_ns - now < 200000 ? deadline_ns : now + 200000;
        cf_err e = cf_ring_pop_until(r, item, until);
        if (e != CF_E_EOF || until == deadline_ns || cf_ring_size(busy) == 0) {
            return e;
        }
    }
}

static void *decode_main(void *arg)
{
    cf_pipeline *p = arg;
    cf_thread_low_latency();
    cf_decoder *dec = NULL;
    char errstr[256];
    if (cf_decoder_create(&dec, p->fmt, errstr, sizeof(errstr)) != CF_OK) {
        /* Drain so the source can finish; everything read is dead-lettered. */
        CF_LOG(CF_LOG_ERROR, "decode", "cannot create decoder: %s", errstr);
    }
    decode_state d = {.p = p, .fixed = cf_batch_ctl_is_fixed(p->ctl)};
    for (;;) {
        void *item = NULL;
        cf_err e;
        if (d.b == NULL || (d.b->b.n == 0 && d.b->n_dead == 0)) {
            decode_counts(&d);
            e = cf_ring_pop_wait(p->chunk_full, &item) == CF_OK ? CF_OK : CF_E_STATE;
        } else {
            /* A partial batch is open: wait for more input only until its linger ends. */
            /* A held batch (at its target) also leaves once the gateway is free. */
            uint32_t target = atomic_load_explicit(&p->ob->target, memory_order_relaxed);
            e = pop_until(p->chunk_full, &item, linger_deadline(&d),
                          d.b->b.n >= target ? p->batch_decoded : NULL);
            if (e == CF_E_EOF) {
                emit_batch(&d);
                continue;
            }
        }
        if (e != CF_OK) {
            break; /* closed and drained */
        }
        chunk *c = item;
        decode_chunk(&d, dec, c);
        cf_ring_push_wait(p->chunk_free, c);
    }
    emit_batch(&d);
    decode_counts(&d);
    cf_ring_close(p->batch_decoded);
    cf_decoder_destroy(dec);
    return NULL;
}

/* ---- process: the gateway's write step ---- */

/* CPU time of the whole process (every stage's thread), ns. */
static int64_t process_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The gateway's per-batch work between decode and commit (gateway.c): the compliance rules
 * and the audit write, without waiting for the disk; the commit stage makes groups of
 * batches durable and forwards them. If any of it fails the run stops and nothing more is
 * forwarded. The thread owns the batch controller: each batch's service time and backlog wait
 * go into it, and its new target and linger out to decode. */
static void *process_main(void *arg)
{
    cf_pipeline *p = arg;
    cf_thread_low_latency();
    void *item;
    int64_t cpu_prev = 0; /* the process's CPU time at the previous batch */
    while (cf_ring_pop_wait(p->batch_decoded, &item) == CF_OK) {
        cf_batch *b = item;
        pbatch *pb = (pbatch *)(void *)b;
        /* More batches behind this one: its wait in the ring is a queue, not just the
         * previous batch's service time (which the model already counts). */
        bool backlog = cf_ring_size(p->batch_decoded) > 0;
        int64_t t0 = cf_now_ns();
        if (p->secure != NULL && atomic_exchange(&p->reload, false)) {
            cf_secure_reload(p->secure);
        }
        pb->gw.audited = false;
        if (p->secure != NULL && p->gateway_err == CF_OK) {
            p->gateway_err = cf_secure_gateway_write(p->secure, b, pb->dead, pb->n_dead, &pb->gw,
                                                     p->gateway_errstr, sizeof(p->gateway_errstr));
            if (p->gateway_err != CF_OK) {
                atomic_store(&p->ob->unhealthy, true);
                atomic_store(&p->stop, true);
            }
        }
        if (p->gateway_err != CF_OK || (b->n == 0 && !pb->gw.audited)) {
            cf_ring_push_wait(p->batch_free, b); /* failed, or nothing to commit */
            continue;
        }
        uint32_t n = b->n;
        uint64_t bytes = pb->bytes;
        int64_t first = n > 0 ? b->ev[0].ingest_ns : 0, last = n > 0 ? b->ev[n - 1].ingest_ns : 0;
        int64_t queued = backlog ? t0 - pb->pushed_ns : 0;
        /* A full batch whose newest event arrived long before the gateway took it waited in
         * a queue upstream: the source running behind its schedule (a paced run starved of
         * CPU by other tenants), or the chunk ring under a flood. The ring wait above does not
         * see that queue; the newest event's age does (the controller's q: its backlog rules
         * then grow batches instead of paying per-batch costs on every few events). A batch
         * cut by its linger is not counted: its newest event waited for more input, not in a
         * queue. */
        if (n > 0 && n >= cf_batch_ctl_target(p->ctl) && t0 - last > queued) {
            queued = t0 - last;
        }
        if (n > 0) {
            cf__observe_batch(p->ob, n, cf_now_ns() - t0); /* counted before the sink sees it */
        }
        cf_ring_push_wait(p->batch_out, b);
        if (n == 0) {
            continue; /* dead letters only: not a batch for the controller */
        }
        /* The controller's service time includes the hand-off: when the commit stage is the
         * bottleneck, its per-batch cost shows here and batches grow to amortize it. With
         * group commit the fsync and the forwarding run on the commit stage, and every batch
         * also costs wake-ups in the source, decode, commit, party and combiner threads: the
         * CPU the whole process spent since the previous batch counts when it is more, so
         * that the size that "keeps up" keeps up on the machine's cores, not only on this
         * thread (issue 11: small batches at 89k/s cost 10-14 us of CPU per event). */
        int64_t t2 = cf_now_ns();
        int64_t service = t2 - t0, cpu = process_cpu_ns();
        if (cpu_prev > 0 && cpu - cpu_prev > service) {
            service = cpu - cpu_prev;
        }
        cpu_prev = cpu;
        cf_batch_ctl_observe(p->ctl, t2, n, bytes, service, queued, first, last);
        publish_target(p);
        p->batch_events += n;
        if (n > p->batch_largest) {
            p->batch_largest = n;
        }
    }
    cf_ring_close(p->batch_out);
    return NULL;
}

/* ---- commit: durable, then forwarded (and the sink) ---- */

#define COMMIT_GROUP_MAX 64u /* batches made durable by one fdatasync, at most */

/* What happens to a durable batch at the end of the pipeline: latency, metrics, the hook. */
static void sink_batch(cf_pipeline *p, cf_batch *b)
{
    int64_t now = cf_now_ns();
    for (uint32_t i = 0; i < b->n; i++) {
        int64_t us = (now - b->ev[i].ingest_ns) / 1000;
        cf_hist_record(p->latency, us < 1 ? 1 : us);
    }
    cf__observe_sink(p->ob, p->ctl, b, now);
    p->batches_done++;
    if (p->sink_hook != NULL) {
        p->sink_hook(p->sink_opaque, b);
    }
}

/* Group commit: takes every batch the write step has written (up to COMMIT_GROUP_MAX), makes
 * them durable with one fdatasync while the write step goes on with the next ones, then
 * forwards each in order (alerts, tree head, shares to the parties, checkpoint markers) and
 * ends it (the sink's latency). Nothing is forwarded before its audit record is durable. */
static void *commit_main(void *arg)
{
    cf_pipeline *p = arg;
    cf_thread_low_latency();
    void *item;
    pbatch *group[COMMIT_GROUP_MAX];
    cf_err err = CF_OK;
    char errstr[256] = "";
    while (cf_ring_pop_wait(p->batch_out, &item) == CF_OK) {
        uint32_t ng = 0;
        group[ng++] = (pbatch *)item;
        while (ng < COMMIT_GROUP_MAX && cf_ring_pop(p->batch_out, &item) == CF_OK) {
            group[ng++] = (pbatch *)item;
        }
        uint64_t ticket = 0; /* the newest record among them: one fdatasync for all */
        for (uint32_t k = 0; k < ng; k++) {
            if (group[k]->gw.audited && group[k]->gw.ticket > ticket) {
                ticket = group[k]->gw.ticket;
            }
        }
        if (err == CF_OK && p->secure != NULL) {
            err = cf_secure_gateway_durable(p->secure, ticket, errstr, sizeof(errstr));
        }
        if (err == CF_OK && p->nr.on) {
            uint64_t acc = group[ng - 1]->acc_end, dead = group[ng - 1]->dead_end;
            if (acc > atomic_load(&p->nr.durable_acc)) {
                atomic_store(&p->nr.durable_acc, acc);
            }
            if (dead > atomic_load(&p->nr.durable_dead)) {
                atomic_store(&p->nr.durable_dead, dead);
            }
            nats_progress(p, false); /* acks what is durable now */
        }
        for (uint32_t k = 0; k < ng; k++) {
            cf_batch *b = &group[k]->b;
            if (err == CF_OK && p->secure != NULL) {
                err =
                    cf_secure_gateway_forward(p->secure, b, &group[k]->gw, errstr, sizeof(errstr));
            }
            if (err == CF_OK && b->n > 0) {
                sink_batch(p, b);
            }
            cf_ring_push_wait(p->batch_free, b); /* after a failure: dropped, never forwarded */
        }
        if (err != CF_OK && p->commit_err == CF_OK) {
            p->commit_err = err; /* nothing more is forwarded */
            snprintf(p->commit_errstr, sizeof(p->commit_errstr), "%s", errstr);
            atomic_store(&p->ob->unhealthy, true);
            atomic_store(&p->stop, true);
        }
    }
    return NULL;
}

/* ---- run ---- */

static cf_err open_outputs(cf_pipeline *p, char *errstr, size_t errstr_size)
{
    if (p->conf.output_dir[0] == '\0') {
        return CF_OK;
    }
    if (mkdir(p->conf.output_dir, 0700) != 0 && errno != EEXIST) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot create output dir %s",
                            p->conf.output_dir);
    }
    return outfile_open(&p->dead_letter, p->conf.output_dir, "dead_letter.ndjson", errstr,
                        errstr_size);
}

/*
 * A restart into an output directory whose audit log already holds N events skips the first
 * N accepted input records: right only when they are the events the log holds. Checked
 * here, before anything runs, by comparing each with the logged event at its index; a
 * different file, or the same file edited, is refused with the first index that differs.
 * A stream (stdin) cannot be re-read, so it is refused unless recovery.resume_any_input.
 */
static cf_err check_resumed_input(cf_pipeline *p, char *errstr, size_t errstr_size)
{
    uint64_t *fp = NULL, nfp = 0, k = 0;
    bool nats = p->conf.input_nats_subject[0] != '\0';
    cf_dedup *dd = NULL; /* repeats the run rejects are not in the log: skip them alike */
    cf_err err = CF_OK;
    if (nats && p->nr.have_pos) {
        /* events before input.pos: not read again, their ids rebuild the duplicate states */
        if ((err = dedup_create(&p->conf, &dd, errstr, errstr_size)) != CF_OK) {
            return err;
        }
        if (dd != NULL) {
            cf_dedup_set_quiet(dd); /* the run says it once if the state fills up */
        }
        err = cf_secure_logged_fingerprints(&p->conf, p->nr.base_acc, p->dedup, dd, &fp, &nfp,
                                            errstr, errstr_size);
        if (err == CF_OK && nfp < p->nr.base_acc) {
            err =
                cf_err_set(CF_E_INVAL, errstr, errstr_size,
                           "%s says %llu events are durable but the audit log holds %llu: "
                           "it is not this output's; use --fresh",
                           p->nr.path, (unsigned long long)p->nr.base_acc, (unsigned long long)nfp);
        }
        k = p->nr.base_acc;
        if (err != CF_OK || nfp == k || p->conf.recovery_resume_any) {
            cf_free(fp);
            cf_dedup_destroy(dd);
            return err;
        }
    } else if (p->conf.recovery_resume_any || p->mem_buf != NULL) {
        return CF_OK;
    } else {
        err =
            cf_secure_logged_fingerprints(&p->conf, 0, NULL, NULL, &fp, &nfp, errstr, errstr_size);
    }
    uint64_t n = nfp, fp0 = k; /* fp[i - fp0] is the event logged at index i */
    if (err != CF_OK || n == 0) {
        cf_free(fp);
        return err;
    }
    const char *hint = "use --fresh to start a new output (the old one is kept aside), or "
                       "--resume to skip them unchecked";
    bool in_mem = p->mem_buf != NULL;
    char *nats_buf = NULL;
    if (!in_mem && !nats && strcmp(p->conf.input_path, "-") == 0) {
        cf_free(fp);
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "the audit log already holds %llu events and the input is a stream "
                          "(stdin) that cannot be checked against them; %s",
                          (unsigned long long)n, hint);
    }
    const char *data = p->mem_buf;
    size_t len = p->mem_len;
    void *map = NULL;
    int fd = -1;
    if (nats) {
        if ((err = read_nats_tail(p, &nats_buf, &len, errstr, errstr_size)) != CF_OK) {
            cf_free(fp);
            cf_dedup_destroy(dd);
            return err;
        }
        data = nats_buf;
    } else if (!in_mem) {
        struct stat sb;
        fd = open(p->conf.input_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &sb) != 0) {
            cf_err e = cf_err_errno(errno, errstr, errstr_size, "cannot open input %s",
                                    p->conf.input_path);
            if (fd >= 0) {
                close(fd);
            }
            cf_free(fp);
            return e;
        }
        len = (size_t)sb.st_size;
        map = len > 0 ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
        close(fd);
        if (len > 0 && map == MAP_FAILED) {
            cf_free(fp);
            return cf_err_errno(errno, errstr, errstr_size, "cannot read input %s",
                                p->conf.input_path);
        }
        data = map;
    }
    cf_splitter *sp = NULL;
    cf_decoder *dec = NULL;
    if (err == CF_OK &&
        ((err = cf_splitter_create(&sp, p->fmt, (size_t)p->conf.input_record_max)) != CF_OK ||
         (err = cf_decoder_create(&dec, p->fmt, errstr, errstr_size)) != CF_OK ||
         (!p->nr.have_pos && (err = dedup_create(&p->conf, &dd, errstr, errstr_size)) != CF_OK))) {
        cf_err_set(err, errstr, errstr_size, "cannot check the input");
    }
    if (dd != NULL) {
        cf_dedup_set_quiet(dd); /* the run says it once if the state fills up */
    }
    size_t pos = 0;
    while (err == CF_OK && k < nfp) {
        cf_record rec;
        size_t used = 0;
        if (cf_splitter_next(sp, data + pos, len - pos, true, &rec, &used) != CF_OK) {
            break;
        }
        pos += used;
        cf_event ev;
        char reason[160];
        if (rec.too_long ||
            cf_decoder_decode(dec, &rec, &ev, reason, sizeof(reason)) != CF_DECODE_EVENT ||
            (p->fx != NULL && !fx_convertible(p->fx, &ev, reason, sizeof(reason)))) {
            continue;
        }
        if (dd != NULL && cf_dedup_check(dd, ev.event_id, ev.ts_us) == CF_DEDUP_DUPLICATE) {
            continue;
        }
        if (cf_secure_event_fingerprint(&ev) != fp[k - fp0]) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "the input is not the one the audit log holds: accepted record "
                             "%llu (event_id %llu) differs from the event logged at index %llu; "
                             "restarting would skip %llu records of another input; %s",
                             (unsigned long long)k, (unsigned long long)ev.event_id,
                             (unsigned long long)k, (unsigned long long)n, hint);
        }
        k++;
    }
    if (err == CF_OK && k < nfp) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "the input holds %llu accepted records, the audit log already %llu: it "
                         "is not the input the log was written from; %s",
                         (unsigned long long)k, (unsigned long long)nfp, hint);
    }
    cf_dedup_destroy(dd);
    cf_decoder_destroy(dec);
    cf_splitter_destroy(sp);
    cf_free(fp);
    cf_free(nats_buf);
    if (map != NULL) {
        munmap(map, len);
    }
    return err;
}

cf_err cf_pipeline_run(cf_pipeline *p, cf_summary *out, char *errstr, size_t errstr_size)
{
    cf_err err = open_outputs(p, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    struct stat sb;
    if (p->mem_buf != NULL) {
        p->ob->bytes_total = p->mem_len;
    } else if (strcmp(p->conf.input_path, "-") != 0 && stat(p->conf.input_path, &sb) == 0 &&
               S_ISREG(sb.st_mode)) {
        p->ob->bytes_total = (uint64_t)sb.st_size; /* bounded input: progress is known */
    }
    double cpu0 = cf_cpu_s();
    int64_t t0 = cf_now_ns();
    if (cf__observe_status_start(p->ob) != CF_OK) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "cannot start the status thread");
    }
    pthread_t th[4];
    void *(*mains[4])(void *) = {commit_main, process_main, decode_main, source_main};
    int started = 0;
    for (; started < 4; started++) {
        if (pthread_create(&th[started], NULL, mains[started], p) != 0) {
            break;
        }
    }
    CF_ASSERT(started == 4); /* thread creation failing at start-up leaves no sane recovery */
    for (int i = 3; i >= 0; i--) {
        pthread_join(th[i], NULL);
    }
    nats_progress(p, true); /* the last messages, once their records are durable */
    memset(out, 0, sizeof(*out));
    cf_err secure_err = CF_OK;
    if (p->secure != NULL) {
        cf_secure_stats st;
        secure_err = cf_secure_finish(p->secure, &st, errstr, errstr_size);
        out->alerts = st.alerts;
        out->late = st.late;
        out->windows = st.windows;
        out->workers = st.workers;
        out->rescales = st.rescales;
        out->worker_s = st.workers_mean; /* x elapsed_s below */
        out->results = st.results;
        out->suppressed = st.suppressed;
        out->integrity_alerts = st.integrity_alerts;
        out->audited = st.audited;
        out->audit_first_index = st.audit_first_index;
        out->resumed = st.resumed;
    }
    int64_t t1 = cf_now_ns();
    err = secure_err;
    if (err == CF_OK) {
        err = outfile_commit(&p->dead_letter, errstr, errstr_size);
    }
    if (p->commit_err != CF_OK) {
        cf_err_set(p->commit_err, errstr, errstr_size, "%s", p->commit_errstr);
        err = p->commit_err;
    }
    if (p->gateway_err != CF_OK) {
        cf_err_set(p->gateway_err, errstr, errstr_size, "%s", p->gateway_errstr);
        err = p->gateway_err;
    }
    if (p->source_err != CF_OK) {
        cf_err_set(p->source_err, errstr, errstr_size, "%s", p->source_errstr);
        err = p->source_err;
    }
    out->read = p->read;
    out->accepted = p->accepted;
    out->dead_lettered = p->dead_lettered;
    out->duplicates = p->duplicates;
    out->batches = p->batches_done;
    out->elapsed_s = (double)(t1 - t0) / 1e9;
    out->events_per_s = out->elapsed_s > 0 ? (double)p->accepted / out->elapsed_s : 0;
    out->worker_s *= out->elapsed_s;
    out->slo_violation_s = cf__observe_slo_seconds(p->ob, t1);
    out->cpu_s = cf_cpu_s() - cpu0;
    out->p50_us = cf_hist_percentile(p->latency, 50, 1);
    out->p99_us = cf_hist_percentile(p->latency, 99, 1);
    out->p999_us = cf_hist_percentile(p->latency, 999, 10);
    out->max_us = cf_hist_max(p->latency);
    out->source_blocked_ns = p->source_blocked_ns;
    out->peak_inflight_batches = p->peak_inflight;
    uint64_t gw_batches = cf_histogram_count(p->ob->batch_size);
    out->batch_mean = gw_batches > 0 ? (double)p->batch_events / (double)gw_batches : 0;
    out->batch_max_seen = p->batch_largest;
    out->batch_target = cf_batch_ctl_target(p->ctl);
    out->batch_target_changes = cf_batch_ctl_changes(p->ctl);
    cf__observe_status_stop(p->ob); /* the final status line, after every count is in */
    cf__observe_finish(p->ob, out, err, errstr);
    return err;
}

size_t cf_summary_to_json(const cf_summary *s, char *buf, size_t size)
{
    int n = snprintf(
        buf, size,
        "{\"read\":%llu,\"accepted\":%llu,\"dead_lettered\":%llu,\"elapsed_s\":%.6f,"
        "\"events_per_s\":%.1f,\"latency_us\":{\"p50\":%lld,\"p99\":%lld,"
        "\"p999\":%lld,\"max\":%lld},\"cpu_s\":%.3f,\"alerts\":%llu,\"late\":%llu,"
        "\"windows\":%llu,\"results\":%llu,\"suppressed\":%llu,"
        "\"integrity_alerts\":%llu,\"audited\":%llu,\"resumed\":%llu,\"batches\":%llu,"
        "\"batch_mean\":%.2f,\"batch_max\":%u,\"batch_target\":%u,"
        "\"batch_target_changes\":%llu,\"duplicates\":%llu,\"workers\":%u,\"rescales\":%llu,"
        "\"worker_s\":%.3f,\"slo_violation_s\":%.3f}\n",
        (unsigned long long)s->read, (unsigned long long)s->accepted,
        (unsigned long long)s->dead_lettered, s->elapsed_s, s->events_per_s, (long long)s->p50_us,
        (long long)s->p99_us, (long long)s->p999_us, (long long)s->max_us, s->cpu_s,
        (unsigned long long)s->alerts, (unsigned long long)s->late, (unsigned long long)s->windows,
        (unsigned long long)s->results, (unsigned long long)s->suppressed,
        (unsigned long long)s->integrity_alerts, (unsigned long long)s->audited,
        (unsigned long long)s->resumed, (unsigned long long)s->batches, s->batch_mean,
        s->batch_max_seen, s->batch_target, (unsigned long long)s->batch_target_changes,
        (unsigned long long)s->duplicates, s->workers, (unsigned long long)s->rescales, s->worker_s,
        s->slo_violation_s);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}
