/*
 * The audit log writer: append-only segments of batch, tree-head and checkpoint records.
 *
 * Design notes
 * - One writer per directory (an advisory flock on the directory enforces it). A batch and its
 *   signed tree head are built in one buffer and written with one write(), then made durable
 *   under the fsync policy before cf_audit_append returns, so a caller that forwards events
 *   only after CF_OK never forwards an event that a crash can lose (policy "batch").
 * - The Merkle frontier (2 KiB) is advanced on a copy and committed only after the write
 *   succeeded; any I/O error leaves the writer broken (CF_E_STATE) until it is reopened,
 *   because the file may then hold a partial record that only recovery may cut.
 * - Recovery (open): every record of every segment is CRC-checked while the frontier is
 *   rebuilt from the stored leaf hashes; a torn tail of the last segment (an incomplete
 *   record, or one that runs to the end of the file with a bad CRC, or a zero-filled tail)
 *   is truncated and reported; any other damage refuses to open (CF_E_CORRUPT), since cutting
 *   it would drop durable records. Cost: one sequential read of the log.
 * - Buffers grow to the largest batch seen and are reused: no allocation on the steady path.
 * - Keys live in sodium_malloc memory, wiped on close.
 * - Group commit (cf_audit_set_group_commit): appends and checkpoints are written but not
 *   synced by the writer; each leaves a ticket (cf_audit_written: bytes written so far) and
 *   cf_audit_commit, from another thread, makes every ticket up to the one asked for durable
 *   with one fdatasync, while the writer goes on appending (one fdatasync covers everything
 *   written before it starts). The sync state (fd swap on rollover, synced position, last
 *   sync time) is then guarded by sync_mu; a failed sync breaks the writer (sync_failed).
 * Threads: a cf_audit_log is used by one thread at a time, except cf_audit_commit and
 * cf_audit_written in group-commit mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_int.h"

struct cf_audit_log {
    char *dir;
    int dir_fd;
    int fd; /* current segment, -1 before the first record */
    char seg_name[32];
    uint64_t seg_bytes;
    cf_audit_opts opts;
    uint8_t *data_key;                   /* sodium_malloc, 32 */
    uint8_t *sign_sk;                    /* sodium_malloc, 64 */
    uint8_t key_id[CF_KEY_ID_LEN];       /* signing key */
    uint8_t log_id[CF_AUDIT_LOG_ID_LEN]; /* from the first record, or drawn for a new log */
    bool has_log_id;
    uint8_t data_key_id[CF_KEY_ID_LEN]; /* written into every sealed record */
    cf__sha sha;
    cf__frontier f;
    cf__frontier scratch; /* the frontier being advanced by an append in progress */
    bool has_sth;
    cf_audit_sth last_sth;
    bool has_header; /* the log starts with a log-header record: checkpoints are chained */
    bool has_ckpt;
    uint64_t ckpt_index;
    uint64_t ckpt_tree_n;                 /* leaves before the last checkpoint record */
    uint8_t ckpt_root[CF_AUDIT_HASH_LEN]; /* their root */
    char ckpt_seg[32];
    uint64_t ckpt_off;
    int last_errno; /* of the last failed write or sync, for cf_audit_last_error */
    uint8_t *buf;   /* record being built */
    size_t buf_cap;
    uint8_t *pt; /* plaintext of a batch */
    size_t pt_cap;
    uint8_t *lv; /* leaf hashes of a batch */
    size_t lv_cap;
    uint8_t *salts; /* a batch's salts, from one seed (a getrandom per event cost 9%) */
    size_t salts_cap;
    uint8_t *dpt; /* plaintext of dead letters (salt || raw per entry) */
    size_t dpt_cap;
    uint8_t *dinfo; /* their clear entries */
    size_t dinfo_cap;
    uint8_t *dlv; /* their leaves, then commitments */
    size_t dlv_cap;
    uint64_t dead_letters; /* leaves of dead-letter records */
    uint8_t *offs;         /* an append's offsets: pt_off, dpt_off, dinfo_off point into it */
    size_t offs_cap;
    size_t *pt_off, *dpt_off, *dinfo_off;
    uint8_t *pieces; /* an append's records, in input order */
    size_t pieces_cap;
    int64_t last_sync_ns;
    bool dirty;  /* written but not yet synced */
    bool broken; /* an I/O error happened: reopen */
    /* group commit (design note): the writer leaves syncs to cf_audit_commit */
    bool group;
    pthread_mutex_t sync_mu;  /* group: fd swaps, synced, last_sync_ns, dirty */
    _Atomic uint64_t written; /* bytes written (all segments): the tickets */
    _Atomic uint64_t synced;  /* of those, durable */
    atomic_bool sync_failed;  /* a cf_audit_commit failed: the writer is broken */
    _Atomic uint64_t syncs;   /* fdatasync calls (cf__audit_sync_count) */
};

void cf_audit_opts_default(cf_audit_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->segment_bytes_max = UINT64_C(64) << 20;
    o->fsync = CF_AUDIT_FSYNC_BATCH;
    o->fsync_interval_ms = 100;
}

cf_err cf_audit_fsync_parse(const char *s, cf_audit_opts *o, char *errstr, size_t errstr_size)
{
    if (strcmp(s, "batch") == 0) {
        o->fsync = CF_AUDIT_FSYNC_BATCH;
        return CF_OK;
    }
    if (strcmp(s, "none") == 0) {
        o->fsync = CF_AUDIT_FSYNC_NONE;
        return CF_OK;
    }
    if (strncmp(s, "interval:", 9) == 0) {
        const char *p = s + 9;
        unsigned long v = 0;
        if (*p == '\0') {
            goto bad;
        }
        for (; *p != '\0'; p++) {
            if (*p < '0' || *p > '9' || v > 600000) {
                goto bad;
            }
            v = v * 10 + (unsigned long)(*p - '0');
        }
        if (v < 1 || v > 600000) {
            goto bad;
        }
        o->fsync = CF_AUDIT_FSYNC_INTERVAL;
        o->fsync_interval_ms = (uint32_t)v;
        return CF_OK;
    }
bad:
    return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                      "fsync: '%s' is not batch, none or interval:MS (MS 1..600000)", s);
}

uint64_t cf_audit_next_index(const cf_audit_log *log)
{
    return log->f.n;
}

void cf_audit_log_id(const cf_audit_log *log, uint8_t out[CF_AUDIT_LOG_ID_LEN])
{
    memcpy(out, log->log_id, CF_AUDIT_LOG_ID_LEN);
}

cf_err cf_audit_last_sth(const cf_audit_log *log, cf_audit_sth *out)
{
    if (!log->has_sth) {
        return CF_E_NOTFOUND;
    }
    *out = log->last_sth;
    return CF_OK;
}

static cf_err ensure(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return CF_OK;
    }
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need) {
        ncap *= 2;
    }
    uint8_t *nb = cf_realloc(*buf, ncap);
    if (nb == NULL) {
        return CF_E_NOMEM;
    }
    *buf = nb;
    *cap = ncap;
    return CF_OK;
}

static cf_err write_all(cf_audit_log *log, int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (log != NULL) {
                log->last_errno = errno;
            }
            return cf_err_errno(errno, NULL, 0, "write");
        }
        p += w;
        len -= (size_t)w;
    }
    return CF_OK;
}

static void sync_lock(cf_audit_log *log)
{
    if (log->group) {
        pthread_mutex_lock(&log->sync_mu);
    }
}

static void sync_unlock(cf_audit_log *log)
{
    if (log->group) {
        pthread_mutex_unlock(&log->sync_mu);
    }
}

/* With sync_mu held in group mode. Everything written before the call is durable after. */
static cf_err do_sync_locked(cf_audit_log *log)
{
    uint64_t w = atomic_load_explicit(&log->written, memory_order_acquire);
    if (log->fd >= 0 && (log->dirty || atomic_load(&log->synced) < w)) {
        atomic_fetch_add_explicit(&log->syncs, 1, memory_order_relaxed);
        if (fdatasync(log->fd) != 0) {
            log->last_errno = errno;
            if (log->group) {
                atomic_store(&log->sync_failed, true); /* the writer sees it on its next call */
            } else {
                log->broken = true;
            }
            return cf_err_errno(errno, NULL, 0, "fdatasync");
        }
    }
    atomic_store_explicit(&log->synced, w, memory_order_release);
    log->dirty = false;
    log->last_sync_ns = cf_now_ns();
    return CF_OK;
}

static cf_err do_sync(cf_audit_log *log)
{
    sync_lock(log);
    cf_err err = do_sync_locked(log);
    sync_unlock(log);
    if (err != CF_OK) {
        log->broken = true; /* the writer's thread */
    }
    return err;
}

/* After a write of @p len bytes: the writer's new ticket. */
static void wrote(cf_audit_log *log, size_t len)
{
    log->seg_bytes += len;
    atomic_store_explicit(&log->written, atomic_load(&log->written) + len, memory_order_release);
}

/* The fsync policy after a write; sync_mu held in group mode. */
static cf_err policy_sync_locked(cf_audit_log *log)
{
    switch (log->opts.fsync) {
    case CF_AUDIT_FSYNC_BATCH:
        return do_sync_locked(log);
    case CF_AUDIT_FSYNC_INTERVAL:
        if (cf_now_ns() - log->last_sync_ns >= (int64_t)log->opts.fsync_interval_ms * 1000000) {
            return do_sync_locked(log);
        }
        return CF_OK;
    case CF_AUDIT_FSYNC_NONE:
        return CF_OK;
    }
    return CF_OK;
}

static cf_err policy_sync(cf_audit_log *log)
{
    sync_lock(log);
    cf_err err = policy_sync_locked(log);
    sync_unlock(log);
    if (err != CF_OK) {
        log->broken = true;
    }
    return err;
}

cf_err cf_audit_sync(cf_audit_log *log)
{
    if (log->broken || atomic_load(&log->sync_failed)) {
        return CF_E_STATE;
    }
    return do_sync(log);
}

void cf_audit_set_group_commit(cf_audit_log *log, bool on)
{
    log->group = on;
}

uint64_t cf_audit_written(const cf_audit_log *log)
{
    return atomic_load_explicit(&log->written, memory_order_acquire);
}

bool cf_audit_is_durable(const cf_audit_log *log, uint64_t ticket)
{
    return !log->group || log->opts.fsync != CF_AUDIT_FSYNC_BATCH ||
           atomic_load_explicit(&log->synced, memory_order_acquire) >= ticket;
}

uint64_t cf__audit_sync_count(const cf_audit_log *log)
{
    return atomic_load_explicit(&log->syncs, memory_order_relaxed);
}

cf_err cf_audit_commit(cf_audit_log *log, uint64_t ticket)
{
    if (!log->group) {
        return CF_OK; /* the append synced under the policy already */
    }
    if (atomic_load(&log->sync_failed)) {
        return CF_E_STATE;
    }
    if (log->opts.fsync == CF_AUDIT_FSYNC_NONE ||
        atomic_load_explicit(&log->synced, memory_order_acquire) >= ticket) {
        return CF_OK;
    }
    pthread_mutex_lock(&log->sync_mu);
    cf_err err = CF_OK;
    if (atomic_load_explicit(&log->synced, memory_order_acquire) < ticket) {
        /* Another commit may have covered it while we waited for the lock. */
        err = policy_sync_locked(log);
    }
    pthread_mutex_unlock(&log->sync_mu);
    return err;
}

/* Opens DIR/name for appending; creates it (and syncs the directory) when @p create. */
static cf_err open_segment(cf_audit_log *log, const char *name, bool create, char *errstr,
                           size_t errstr_size)
{
    int fd = openat(log->dir_fd, name,
                    O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "open segment %s/%s", log->dir, name);
    }
    if (create && fsync(log->dir_fd) != 0) {
        cf_err e = cf_err_errno(errno, errstr, errstr_size, "fsync directory %s", log->dir);
        close(fd);
        return e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        cf_err e = cf_err_errno(errno, errstr, errstr_size, "stat %s/%s", log->dir, name);
        close(fd);
        return e;
    }
    if (log->fd >= 0) {
        close(log->fd);
    }
    log->fd = fd;
    log->seg_bytes = (uint64_t)st.st_size;
    snprintf(log->seg_name, sizeof(log->seg_name), "%s", name);
    return CF_OK;
}

/* Makes sure a record of @p bytes has a segment to go to, rolling over past the bound. A
 * segment is named by the first event it holds, so one that holds no event yet (only heads or
 * checkpoints) is never rolled over: the next one would have the same name. */
static cf_err prepare_segment(cf_audit_log *log, size_t bytes)
{
    if (log->fd >= 0 &&
        (log->seg_bytes == 0 || log->seg_bytes + bytes <= log->opts.segment_bytes_max ||
         strtoull(log->seg_name, NULL, 10) == log->f.n)) {
        return CF_OK;
    }
    /* Group commit: no cf_audit_commit may sync the old fd while it is swapped. */
    sync_lock(log);
    cf_err err = CF_OK;
    if (log->fd >= 0) {
        /* The old segment must be complete on disk before records appear in the next one. */
        err = do_sync_locked(log);
    }
    if (err == CF_OK) {
        char name[32];
        cf__audit_seg_name(log->f.n, name);
        err = open_segment(log, name, true, NULL, 0);
    }
    sync_unlock(log);
    if (err != CF_OK) {
        log->broken = true;
    }
    return err;
}

/* Appends an STH record for the frontier @p f to log->buf at @p off; fills *sth. */
static size_t build_sth(cf_audit_log *log, const cf__frontier *f, size_t off, cf_audit_sth *sth)
{
    memset(sth, 0, sizeof(*sth));
    sth->tree_size = f->n;
    cf__frontier_root(f, &log->sha, sth->root);
    /* Heads never go back in time, even if the wall clock does (the verifier checks). */
    sth->timestamp_us = cf_wall_us();
    if (log->has_sth && sth->timestamp_us < log->last_sth.timestamp_us) {
        sth->timestamp_us = log->last_sth.timestamp_us;
    }
    memcpy(sth->key_id, log->key_id, CF_KEY_ID_LEN);
    memcpy(sth->log_id, log->log_id, CF_AUDIT_LOG_ID_LEN);
    cf__audit_sth_sign(sth, log->sign_sk);
    uint8_t *hdr = log->buf + off;
    uint8_t *payload = hdr + CF__AUDIT_HDR_LEN;
    cf__audit_sth_payload(sth, payload);
    cf__audit_hdr h = {
        .type = CF_AUDIT_REC_STH, .index = f->n, .count = 0, .payload_len = CF__AUDIT_STH_PAYLOAD};
    cf__audit_hdr_encode(&h, payload, hdr);
    return CF__AUDIT_HDR_LEN + CF__AUDIT_STH_PAYLOAD;
}

cf_err cf_audit_append(cf_audit_log *log, const cf_event *events, uint32_t n,
                       const cf_audit_bytes *verdicts, uint64_t *first_index, cf_audit_sth *sth_out)
{
    return cf_audit_append_meta(log, events, n, verdicts, NULL, first_index, sth_out);
}

cf_err cf_audit_append_meta(cf_audit_log *log, const cf_event *events, uint32_t n,
                            const cf_audit_bytes *verdicts, const cf_audit_bytes *meta,
                            uint64_t *first_index, cf_audit_sth *sth_out)
{
    if (n == 0) {
        return CF_E_INVAL;
    }
    return cf_audit_append_dead(log, NULL, 0, events, n, verdicts, meta, first_index, sth_out);
}

/* One record of an append: events [a, b) (a batch record) or dead letters [a, b). */
typedef struct {
    bool dead;
    uint32_t a, b;
    size_t payload_len;
} piece;

/* Encodes the dead letters into log->dpt (plaintext, entry k at dpt_off[k]), log->dinfo
 * (clear entries at dinfo_off[k]) and log->dlv (leaves, then commitments). */
static cf_err encode_dead(cf_audit_log *log, const cf_audit_dead *dead, uint32_t n, uint32_t n_ev)
{
    size_t pt_need = 0;
    for (uint32_t i = 0; i < n; i++) {
        if ((dead[i].raw_len > 0 && dead[i].raw == NULL) || dead[i].before > n_ev ||
            (i > 0 && dead[i].before < dead[i - 1].before)) {
            return CF_E_INVAL;
        }
        size_t rl =
            dead[i].raw_len > CF_AUDIT_DEAD_RAW_MAX ? CF_AUDIT_DEAD_RAW_MAX : dead[i].raw_len;
        pt_need += CF__AUDIT_DEAD_PT_FIXED + rl;
    }
    cf_err err = ensure(&log->dpt, &log->dpt_cap, pt_need);
    if (err == CF_OK) {
        err = ensure(&log->dinfo, &log->dinfo_cap, (size_t)n * CF__AUDIT_DEAD_INFO_MAX);
    }
    if (err == CF_OK) {
        err = ensure(&log->dlv, &log->dlv_cap, 2 * (size_t)n * CF_AUDIT_HASH_LEN);
    }
    if (err != CF_OK) {
        return err;
    }
    size_t pt_len = 0, info_len = 0;
    uint8_t *commits = log->dlv + (size_t)n * CF_AUDIT_HASH_LEN;
    for (uint32_t i = 0; i < n; i++) {
        cf_audit_dead cut = dead[i];
        if (cut.raw_len > CF_AUDIT_DEAD_RAW_MAX) {
            cut.raw_len = CF_AUDIT_DEAD_RAW_MAX;
            cut.raw_truncated = true;
        }
        log->dpt_off[i] = pt_len;
        log->dinfo_off[i] = info_len;
        uint8_t *e = log->dpt + pt_len;
        randombytes_buf(e, CF_AUDIT_SALT_LEN);
        cf__le32(e + CF_AUDIT_SALT_LEN, (uint32_t)cut.raw_len);
        if (cut.raw_len > 0) {
            memcpy(e + CF__AUDIT_DEAD_PT_FIXED, cut.raw, cut.raw_len);
        }
        size_t el = CF__AUDIT_DEAD_PT_FIXED + cut.raw_len;
        uint8_t *info = log->dinfo + info_len;
        size_t il = cf__dead_info_encode(&cut, info);
        uint8_t *commit = commits + (size_t)i * CF_AUDIT_HASH_LEN;
        cf__audit_dead_commit(&log->sha, e, el, commit);
        cf__audit_dead_leaf(&log->sha, commit, info, il, log->dlv + (size_t)i * CF_AUDIT_HASH_LEN);
        pt_len += el;
        info_len += il;
    }
    log->dpt_off[n] = pt_len;
    log->dinfo_off[n] = info_len;
    return CF_OK;
}

/* Encodes the events into log->pt (salt || canonical encoding, event k at pt_off[k]) and
 * log->lv (leaves, then commitments); each commitment and leaf is hashed as it is encoded,
 * so nothing is encoded twice. */
static cf_err encode_events(cf_audit_log *log, const cf_event *events, uint32_t n,
                            const cf_audit_bytes *verdicts)
{
    cf_err err =
        ensure(&log->pt, &log->pt_cap, (size_t)n * (CF_AUDIT_SALT_LEN + CF_AUDIT_EVENT_ENC_MAX));
    if (err == CF_OK) {
        err = ensure(&log->lv, &log->lv_cap, 2 * (size_t)n * CF_AUDIT_HASH_LEN);
    }
    if (err == CF_OK) {
        err = ensure(&log->salts, &log->salts_cap, (size_t)n * CF_AUDIT_SALT_LEN);
    }
    if (err != CF_OK) {
        return err;
    }
    /* One 32-byte draw from the kernel per batch, expanded with ChaCha20: a getrandom of
     * the whole batch's salts cost 5% of the gateway (a syscall and kernel ChaCha). */
    uint8_t seed[randombytes_SEEDBYTES];
    randombytes_buf(seed, sizeof(seed));
    randombytes_buf_deterministic(log->salts, (size_t)n * CF_AUDIT_SALT_LEN, seed);
    sodium_memzero(seed, sizeof(seed));
    size_t pt_len = 0;
    uint8_t *commits = log->lv + (size_t)n * CF_AUDIT_HASH_LEN;
    for (uint32_t i = 0; i < n; i++) {
        log->pt_off[i] = pt_len;
        uint8_t *salted = log->pt + pt_len;
        memcpy(salted, log->salts + (size_t)i * CF_AUDIT_SALT_LEN, CF_AUDIT_SALT_LEN);
        size_t e =
            cf_audit_event_encode(&events[i], salted + CF_AUDIT_SALT_LEN, CF_AUDIT_EVENT_ENC_MAX);
        if (e == 0) {
            return CF_E_INVAL;
        }
        e += CF_AUDIT_SALT_LEN;
        pt_len += e;
        const void *vd = verdicts ? verdicts[i].data : NULL;
        size_t vl = verdicts ? verdicts[i].len : 0;
        if (vl > CF_AUDIT_VERDICT_MAX || (vl > 0 && vd == NULL)) {
            return CF_E_INVAL;
        }
        uint8_t *commit = commits + (size_t)i * CF_AUDIT_HASH_LEN;
        cf__audit_commit(&log->sha, salted, e, commit);
        cf__audit_leaf_of(&log->sha, commit, vd, vl, log->lv + (size_t)i * CF_AUDIT_HASH_LEN);
    }
    log->pt_off[n] = pt_len;
    return CF_OK;
}

/* The header of a sealed record (batch or dead letters) for piece @p pc at @p hdr, then the
 * start of its payload: a fresh nonce, the data key's id and the log id. Returns the payload
 * (its nonce first). */
static uint8_t *seal_start(cf_audit_log *log, uint8_t *hdr, uint8_t type, uint64_t index,
                           const piece *pc)
{
    uint8_t *payload = hdr + CF__AUDIT_HDR_LEN;
    cf__audit_hdr h = {.type = type,
                       .index = index,
                       .count = pc->b - pc->a,
                       .payload_len = (uint32_t)pc->payload_len};
    cf__audit_hdr_encode(&h, NULL, hdr);
    randombytes_buf(payload, CF__AUDIT_NONCE_LEN);
    memcpy(payload + CF__AUDIT_NONCE_LEN, log->data_key_id, CF_KEY_ID_LEN);
    memcpy(payload + CF__AUDIT_LOGID_OFF, log->log_id, CF_AUDIT_LOG_ID_LEN);
    return payload;
}

/* Writes the dead-letter record of entries [a, b) at @p hdr; returns its length. */
static size_t build_dead(cf_audit_log *log, uint8_t *hdr, uint64_t index, const piece *pc,
                         uint32_t n_dead)
{
    uint32_t a = pc->a, n = pc->b - pc->a;
    uint8_t *payload = seal_start(log, hdr, CF_AUDIT_REC_DEAD, index, pc), *nonce = payload;
    size_t pt_len = log->dpt_off[pc->b] - log->dpt_off[a];
    size_t info_len = log->dinfo_off[pc->b] - log->dinfo_off[a];
    size_t ct_len = pt_len + CF__AUDIT_TAG_LEN;
    cf__le32(payload + CF__AUDIT_SEAL_PREFIX, (uint32_t)ct_len);
    uint8_t *ct = payload + CF__AUDIT_SEAL_PREFIX + 4;
    uint8_t *ip = ct + ct_len;
    cf__le32(ip, (uint32_t)info_len);
    memcpy(ip + 4, log->dinfo + log->dinfo_off[a], info_len);
    uint8_t *lp = ip + 4 + info_len;
    memcpy(lp, log->dlv + (size_t)a * CF_AUDIT_HASH_LEN, (size_t)n * CF_AUDIT_HASH_LEN);
    memcpy(lp + (size_t)n * CF_AUDIT_HASH_LEN, log->dlv + ((size_t)n_dead + a) * CF_AUDIT_HASH_LEN,
           (size_t)n * CF_AUDIT_HASH_LEN);
    uint8_t ad[CF__AUDIT_DEAD_AD_LEN];
    cf__audit_dead_ad(hdr, log->log_id, ip + 4, info_len, ad);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &clen, log->dpt + log->dpt_off[a], pt_len, ad,
                                               sizeof(ad), NULL, nonce, log->data_key);
    CF_ASSERT(clen == ct_len);
    cf__audit_hdr_seal(hdr, payload);
    return CF__AUDIT_HDR_LEN + pc->payload_len;
}

/* Writes the batch record of events [a, b) at @p hdr; returns its length. */
static size_t build_batch(cf_audit_log *log, uint8_t *hdr, uint64_t index, const piece *pc,
                          uint32_t n_ev, const cf_audit_bytes *verdicts, const cf_audit_bytes *meta,
                          size_t mlen)
{
    uint32_t a = pc->a, n = pc->b - pc->a;
    uint8_t *payload = seal_start(log, hdr, CF_AUDIT_REC_BATCH, index, pc), *nonce = payload;
    size_t pt_len = log->pt_off[pc->b] - log->pt_off[a];
    size_t ct_len = pt_len + CF__AUDIT_TAG_LEN;
    cf__le32(payload + CF__AUDIT_SEAL_PREFIX, (uint32_t)ct_len);
    uint8_t *ct = payload + CF__AUDIT_SEAL_PREFIX + 4;
    uint8_t *vp = ct + ct_len;
    uint8_t *vstart = vp + 4;
    vp = vstart;
    for (uint32_t i = a; i < pc->b; i++) {
        size_t vl = verdicts ? verdicts[i].len : 0;
        cf__le32(vp, (uint32_t)vl);
        if (vl > 0) {
            memcpy(vp + 4, verdicts[i].data, vl);
        }
        vp += 4 + vl;
    }
    cf__le32(vstart - 4, (uint32_t)(vp - vstart));
    uint8_t *mp = vp;
    cf__le32(mp, (uint32_t)mlen);
    if (mlen > 0) {
        memcpy(mp + 4, meta->data, mlen);
    }
    uint8_t *leaves = mp + 4 + mlen;
    memcpy(leaves, log->lv + (size_t)a * CF_AUDIT_HASH_LEN, (size_t)n * CF_AUDIT_HASH_LEN);
    memcpy(leaves + (size_t)n * CF_AUDIT_HASH_LEN, log->lv + ((size_t)n_ev + a) * CF_AUDIT_HASH_LEN,
           (size_t)n * CF_AUDIT_HASH_LEN);
    CF_ASSERT(leaves + 2 * (size_t)n * CF_AUDIT_HASH_LEN == payload + pc->payload_len);
    uint8_t ad[CF__AUDIT_AD_MAX];
    size_t adl = cf__audit_batch_ad(hdr, log->log_id, mp + 4, mlen, ad);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &clen, log->pt + log->pt_off[a], pt_len, ad, adl,
                                               NULL, nonce, log->data_key);
    CF_ASSERT(clen == ct_len);
    cf__audit_hdr_seal(hdr, payload);
    return CF__AUDIT_HDR_LEN + pc->payload_len;
}

cf_err cf_audit_append_dead(cf_audit_log *log, const cf_audit_dead *dead, uint32_t n_dead,
                            const cf_event *events, uint32_t n, const cf_audit_bytes *verdicts,
                            const cf_audit_bytes *meta, uint64_t *first_index,
                            cf_audit_sth *sth_out)
{
    CF_ASSERT(log != NULL && (events != NULL || n == 0) && (dead != NULL || n_dead == 0));
    if (log->broken || atomic_load(&log->sync_failed)) {
        return CF_E_STATE;
    }
    size_t mlen = meta != NULL ? meta->len : 0;
    if (n + (uint64_t)n_dead == 0 || n > CF_AUDIT_BATCH_MAX || n_dead > CF_AUDIT_BATCH_MAX ||
        mlen > CF_AUDIT_META_MAX || (mlen > 0 && meta->data == NULL)) {
        return CF_E_INVAL;
    }
    /* Offsets (events, then dead-letter plaintext and clear entries) and the pieces. */
    cf_err err = ensure(&log->offs, &log->offs_cap,
                        ((size_t)n + 1 + 2 * ((size_t)n_dead + 1)) * sizeof(size_t));
    if (err == CF_OK) {
        err = ensure(&log->pieces, &log->pieces_cap, (2 * (size_t)n_dead + 1) * sizeof(piece));
    }
    if (err != CF_OK) {
        return err;
    }
    log->pt_off = (size_t *)(void *)log->offs;
    log->dpt_off = log->pt_off + n + 1;
    log->dinfo_off = log->dpt_off + n_dead + 1;
    if ((n_dead > 0 && (err = encode_dead(log, dead, n_dead, n)) != CF_OK) ||
        (n > 0 && (err = encode_events(log, events, n, verdicts)) != CF_OK)) {
        return err;
    }
    /* Input order: the dead letters each before the event their `before` names. One record
     * per run of events or of dead letters, their leaves appended in that order. */
    piece *pcs = (piece *)(void *)log->pieces;
    size_t np = 0, total = 0;
    log->scratch = log->f;
    for (uint32_t i = 0, j = 0; i < n || j < n_dead;) {
        piece *pc = &pcs[np++];
        if (j < n_dead && dead[j].before <= i) {
            pc->dead = true;
            pc->a = j;
            while (j < n_dead && dead[j].before <= i) {
                j++;
            }
            pc->b = j;
            pc->payload_len = CF__AUDIT_SEAL_PREFIX + 4 + (log->dpt_off[j] - log->dpt_off[pc->a]) +
                              CF__AUDIT_TAG_LEN + 4 + (log->dinfo_off[j] - log->dinfo_off[pc->a]) +
                              2 * (size_t)(j - pc->a) * CF_AUDIT_HASH_LEN;
            for (uint32_t k = pc->a; k < j; k++) {
                cf__frontier_append(&log->scratch, &log->sha,
                                    log->dlv + (size_t)k * CF_AUDIT_HASH_LEN);
            }
        } else {
            pc->dead = false;
            pc->a = i;
            pc->b = j < n_dead ? dead[j].before : n;
            size_t vlen = 0;
            for (uint32_t k = i; k < pc->b; k++) {
                vlen += 4 + (verdicts ? verdicts[k].len : 0);
                cf__frontier_append(&log->scratch, &log->sha,
                                    log->lv + (size_t)k * CF_AUDIT_HASH_LEN);
            }
            pc->payload_len = CF__AUDIT_SEAL_PREFIX + 4 + (log->pt_off[pc->b] - log->pt_off[i]) +
                              CF__AUDIT_TAG_LEN + 4 + vlen + 4 + mlen +
                              2 * (size_t)(pc->b - i) * CF_AUDIT_HASH_LEN;
            i = pc->b;
        }
        if (pc->payload_len > CF__AUDIT_PAYLOAD_MAX) {
            return CF_E_LIMIT;
        }
        total += CF__AUDIT_HDR_LEN + pc->payload_len;
    }
    size_t recs = total;
    total += CF__AUDIT_HDR_LEN + CF__AUDIT_STH_PAYLOAD;
    err = ensure(&log->buf, &log->buf_cap, total);
    if (err != CF_OK) {
        return err;
    }
    err = prepare_segment(log, total);
    if (err != CF_OK) {
        return err;
    }
    uint64_t first = log->f.n, index = first;
    size_t off = 0;
    for (size_t k = 0; k < np; k++) {
        off += pcs[k].dead
                   ? build_dead(log, log->buf + off, index, &pcs[k], n_dead)
                   : build_batch(log, log->buf + off, index, &pcs[k], n, verdicts, meta, mlen);
        index += pcs[k].b - pcs[k].a;
    }
    CF_ASSERT(off == recs && index == log->scratch.n);
    cf_audit_sth sth;
    size_t sl = build_sth(log, &log->scratch, recs, &sth);
    CF_ASSERT(recs + sl == total);

    if (!log->group) {
        log->dirty = true;
    }
    err = write_all(log, log->fd, log->buf, total);
    if (err != CF_OK) {
        log->broken = true;
        return err;
    }
    wrote(log, total);
    err = log->group ? CF_OK : policy_sync(log); /* group: cf_audit_commit syncs it */
    if (err != CF_OK) {
        return err;
    }
    log->f = log->scratch;
    log->dead_letters += n_dead;
    log->has_sth = true;
    log->last_sth = sth;
    if (first_index != NULL) {
        *first_index = first;
    }
    if (sth_out != NULL) {
        *sth_out = sth;
    }
    return CF_OK;
}

cf_err cf_audit_checkpoint(cf_audit_log *log, uint64_t index, const void *state, size_t len)
{
    CF_ASSERT(log != NULL && (state != NULL || len == 0));
    if (log->broken || atomic_load(&log->sync_failed)) {
        return CF_E_STATE;
    }
    if (index > log->f.n || len > CF_AUDIT_STATE_MAX) {
        return CF_E_INVAL;
    }
    size_t payload_len = CF__AUDIT_SEAL_PREFIX + len + CF__AUDIT_TAG_LEN + CF_AUDIT_SIG_LEN;
    size_t total = CF__AUDIT_HDR_LEN + payload_len;
    cf_err err = ensure(&log->buf, &log->buf_cap, total);
    if (err != CF_OK) {
        return err;
    }
    err = prepare_segment(log, total);
    if (err != CF_OK) {
        return err;
    }
    uint8_t *hdr = log->buf;
    uint8_t *payload = hdr + CF__AUDIT_HDR_LEN;
    cf__audit_hdr h = {.type = CF_AUDIT_REC_CHECKPOINT,
                       .index = index,
                       .count = 0,
                       .payload_len = (uint32_t)payload_len};
    cf__audit_hdr_encode(&h, NULL, hdr);
    randombytes_buf(payload, CF__AUDIT_NONCE_LEN);
    memcpy(payload + CF__AUDIT_NONCE_LEN, log->data_key_id, CF_KEY_ID_LEN);
    memcpy(payload + CF__AUDIT_LOGID_OFF, log->log_id, CF_AUDIT_LOG_ID_LEN);
    uint8_t ad[CF__AUDIT_CRC_OFF + CF_AUDIT_LOG_ID_LEN];
    memcpy(ad, hdr, CF__AUDIT_CRC_OFF);
    memcpy(ad + CF__AUDIT_CRC_OFF, log->log_id, CF_AUDIT_LOG_ID_LEN);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(payload + CF__AUDIT_SEAL_PREFIX, &clen, state, len,
                                               ad, sizeof(ad), NULL, payload, log->data_key);
    /* Signed and chained to the tree before it (size and root), so that nobody without the
     * signing key can swap, move or replay a checkpoint (it decides where recovery
     * resumes). */
    cf__rec view = {.hdr_bytes = hdr,
                    .nonce = payload,
                    .log_id = payload + CF__AUDIT_LOGID_OFF,
                    .state_ct = payload + CF__AUDIT_SEAL_PREFIX,
                    .state_ct_len = (size_t)clen};
    uint8_t msg[CF__AUDIT_CKPT_MSG_MAX], root[CF_AUDIT_HASH_LEN];
    cf__frontier_root(&log->f, &log->sha, root);
    size_t ml = cf__audit_ckpt_message(&view, log->f.n, log->has_header ? root : NULL, msg);
    crypto_sign_detached(payload + CF__AUDIT_SEAL_PREFIX + clen, NULL, msg, ml, log->sign_sk);
    cf__audit_hdr_seal(hdr, payload);
    uint64_t off = log->seg_bytes;
    if (!log->group) {
        log->dirty = true;
    }
    err = write_all(log, log->fd, log->buf, total);
    if (err != CF_OK) {
        log->broken = true;
        return err;
    }
    wrote(log, total);
    err = policy_sync(log); /* also in group mode: a checkpoint is durable when it returns */
    if (err != CF_OK) {
        return err;
    }
    log->has_ckpt = true;
    log->ckpt_index = index;
    log->ckpt_off = off;
    log->ckpt_tree_n = log->f.n;
    memcpy(log->ckpt_root, root, CF_AUDIT_HASH_LEN);
    snprintf(log->ckpt_seg, sizeof(log->ckpt_seg), "%s", log->seg_name);
    return CF_OK;
}

cf_err cf_audit_last_checkpoint(cf_audit_log *log, uint64_t *index, void **state, size_t *len,
                                char *errstr, size_t errstr_size)
{
    if (!log->has_ckpt) {
        return CF_E_NOTFOUND;
    }
    cf__segmap m;
    cf_err err = cf__segmap_open(log->dir, log->ckpt_seg, &m, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    uint8_t *out = NULL;
    cf__rec r;
    cf__rec_status st = cf__audit_rec_parse(m.data, m.len, (size_t)log->ckpt_off, &r);
    if (st != CF__REC_OK || r.h.type != CF_AUDIT_REC_CHECKPOINT) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "checkpoint at %s offset %llu: %s",
                         log->ckpt_seg, (unsigned long long)log->ckpt_off,
                         st != CF__REC_OK ? cf__rec_status_text(st) : "not a checkpoint");
        goto done;
    }
    if (log->has_header && memcmp(r.key_id, log->data_key_id, CF_KEY_ID_LEN) == 0) {
        /* Written under these keys: its signature must chain it to the leaves before it,
         * or it was replayed, moved or forged (the resume point must not be an attacker's). */
        uint8_t msg[CF__AUDIT_CKPT_MSG_MAX];
        size_t ml = cf__audit_ckpt_message(&r, log->ckpt_tree_n, log->ckpt_root, msg);
        if (crypto_sign_verify_detached(r.ckpt_sig, msg, ml, log->sign_sk + 32) != 0) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                             "checkpoint at %s offset %llu: signature does not verify (a "
                             "replayed, moved or forged checkpoint; run `confide audit verify`)",
                             log->ckpt_seg, (unsigned long long)log->ckpt_off);
            goto done;
        }
    }
    size_t plen = r.state_ct_len - CF__AUDIT_TAG_LEN;
    out = cf_malloc(plen > 0 ? plen : 1);
    if (out == NULL) {
        err = CF_E_NOMEM;
        goto done;
    }
    size_t got = 0;
    if (cf__audit_state_open(&r, log->data_key, out, &got) != CF_OK) {
        char why[160];
        err = cf_err_set(
            CF_E_AUTH, errstr, errstr_size, "checkpoint at %s offset %llu: %s", log->ckpt_seg,
            (unsigned long long)log->ckpt_off,
            cf__audit_open_failure("state", r.key_id, log->data_key_id, why, sizeof(why)));
        goto done;
    }
    *index = r.h.index;
    *len = got;
    if (got == 0) {
        cf_free(out);
        out = NULL;
    }
    *state = out;
    out = NULL;
done:
    cf_free(out);
    cf__segmap_close(&m);
    return err;
}

/* ---- open and recovery ----------------------------------------------------------------- */

static void log_free(cf_audit_log *log)
{
    if (log == NULL) {
        return;
    }
    if (log->fd >= 0) {
        close(log->fd);
    }
    if (log->dir_fd >= 0) {
        close(log->dir_fd); /* releases the flock */
    }
    if (log->data_key != NULL) {
        sodium_free(log->data_key);
    }
    if (log->sign_sk != NULL) {
        sodium_free(log->sign_sk);
    }
    cf__sha_free(&log->sha);
    pthread_mutex_destroy(&log->sync_mu);
    /* The buffers held event plaintext (amounts, account ids). */
    if (log->pt != NULL) {
        sodium_memzero(log->pt, log->pt_cap);
    }
    if (log->buf != NULL) {
        sodium_memzero(log->buf, log->buf_cap);
    }
    cf_free(log->buf);
    cf_free(log->pt);
    cf_free(log->lv);
    if (log->salts != NULL) {
        sodium_memzero(log->salts, log->salts_cap);
    }
    cf_free(log->salts);
    if (log->dpt != NULL) {
        sodium_memzero(log->dpt, log->dpt_cap); /* raw records */
    }
    cf_free(log->dpt);
    cf_free(log->dinfo);
    cf_free(log->dlv);
    cf_free(log->offs);
    cf_free(log->pieces);
    cf_free(log->dir);
    cf_free(log);
}

cf_err cf_audit_close(cf_audit_log *log)
{
    if (log == NULL) {
        return CF_OK;
    }
    cf_err err = log->broken ? CF_E_STATE : do_sync(log);
    log_free(log);
    return err;
}

/* True when the bad record at @p off is the torn tail of the last segment (see design note). */
static bool is_torn(cf__rec_status st, const cf__rec *r, const cf__segmap *m, size_t off)
{
    switch (st) {
    case CF__REC_SHORT_HDR:
    case CF__REC_SHORT_PAYLOAD:
        return true;
    case CF__REC_BAD_CRC:
        return off + CF__AUDIT_HDR_LEN + r->h.payload_len == m->len;
    default:
        return cf__audit_all_zero(m->data, m->len, off);
    }
}

/* Scans every segment: checks CRCs, rebuilds the frontier, finds heads and checkpoints,
 * and cuts a torn tail. */
static cf_err recover(cf_audit_log *log, cf_audit_recovery *rec, char *errstr, size_t errstr_size)
{
    cf__seglist sl;
    cf_err err = cf__audit_list_segments(log->dir, &sl, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    rec->segments = sl.n;
    cf__segmap m = {NULL, 0};
    {
        /* Refuses a log of another format version with a message that says so. */
        uint8_t lid[CF_AUDIT_LOG_ID_LEN];
        bool has = false, header = false;
        err = cf__audit_peek(log->dir, &sl, lid, &has, &header, errstr, errstr_size);
        if (err != CF_OK) {
            goto done;
        }
    }
    for (size_t s = 0; s < sl.n; s++) {
        bool last = s + 1 == sl.n;
        if (sl.first[s] != log->f.n) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                             "audit log %s: segment %s should start at index %llu", log->dir,
                             sl.name[s], (unsigned long long)log->f.n);
            goto done;
        }
        err = cf__segmap_open(log->dir, sl.name[s], &m, errstr, errstr_size);
        if (err != CF_OK) {
            goto done;
        }
        size_t off = 0;
        for (;;) {
            cf__rec r;
            cf__rec_status st = cf__audit_rec_parse(m.data, m.len, off, &r);
            if (st == CF__REC_END) {
                break;
            }
            if (st == CF__REC_OK && log->has_log_id &&
                memcmp(r.log_id, log->log_id, CF_AUDIT_LOG_ID_LEN) != 0) {
                err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                 "audit log %s: segment %s offset %zu: a record of another log "
                                 "(different log id)",
                                 log->dir, sl.name[s], off);
                goto done;
            }
            if (st == CF__REC_OK && !log->has_log_id) {
                memcpy(log->log_id, r.log_id, CF_AUDIT_LOG_ID_LEN);
                log->has_log_id = true;
            }
            if (st == CF__REC_OK &&
                (r.h.type == CF_AUDIT_REC_BATCH || r.h.type == CF_AUDIT_REC_DEAD) &&
                r.h.index != log->f.n) {
                err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                 "audit log %s: segment %s offset %zu: %s starts at index "
                                 "%llu, expected %llu",
                                 log->dir, sl.name[s], off,
                                 r.h.type == CF_AUDIT_REC_BATCH ? "batch" : "dead-letter record",
                                 (unsigned long long)r.h.index, (unsigned long long)log->f.n);
                goto done;
            }
            if (st != CF__REC_OK) {
                if (!last || !is_torn(st, &r, &m, off)) {
                    err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                     "audit log %s: segment %s offset %zu index %llu: %s (run "
                                     "`confide audit verify`)",
                                     log->dir, sl.name[s], off, (unsigned long long)log->f.n,
                                     cf__rec_status_text(st));
                    goto done;
                }
                rec->truncated = true;
                snprintf(rec->truncated_segment, sizeof(rec->truncated_segment), "%s", sl.name[s]);
                rec->truncated_offset = off;
                rec->truncated_bytes = m.len - off;
                break;
            }
            switch ((cf_audit_rec_type)r.h.type) {
            case CF_AUDIT_REC_DEAD: /* its leaves are in the tree like events */
            case CF_AUDIT_REC_BATCH:
                if (r.h.type == CF_AUDIT_REC_DEAD) {
                    log->dead_letters += r.h.count;
                }
                for (uint32_t i = 0; i < r.h.count; i++) {
                    cf__frontier_append(&log->f, &log->sha, r.leaves + (size_t)i * 32);
                }
                break;
            case CF_AUDIT_REC_STH: {
                bool dom;
                cf__audit_sth_parse(r.payload, &log->last_sth, &dom);
                log->has_sth = true;
                break;
            }
            case CF_AUDIT_REC_CHECKPOINT:
                log->has_ckpt = true;
                log->ckpt_index = r.h.index;
                log->ckpt_off = off;
                log->ckpt_tree_n = log->f.n;
                cf__frontier_root(&log->f, &log->sha, log->ckpt_root);
                snprintf(log->ckpt_seg, sizeof(log->ckpt_seg), "%s", sl.name[s]);
                break;
            case CF_AUDIT_REC_HEADER:
                if (s != 0 || off != 0) {
                    err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                     "audit log %s: segment %s offset %zu: a log header record "
                                     "after the start of the log (run `confide audit verify`)",
                                     log->dir, sl.name[s], off);
                    goto done;
                }
                log->has_header = true;
                break;
            }
            off += CF__AUDIT_HDR_LEN + r.h.payload_len;
        }
        cf__segmap_close(&m);
        if (last) {
            err = open_segment(log, sl.name[s], false, errstr, errstr_size);
            if (err != CF_OK) {
                goto done;
            }
            if (rec->truncated) {
                if (ftruncate(log->fd, (off_t)rec->truncated_offset) != 0 || fsync(log->fd) != 0) {
                    err = cf_err_errno(errno, errstr, errstr_size, "truncate torn tail of %s/%s",
                                       log->dir, sl.name[s]);
                    goto done;
                }
                log->seg_bytes = rec->truncated_offset;
            }
        }
    }
done:
    cf__segmap_close(&m);
    cf__seglist_free(&sl);
    return err;
}

/* A new log: draws its identity and writes the log-header record first, durable whatever
 * the fsync policy, so that the id outlives a crash before the first batch (the runtime binds
 * its masks to it). Every later record carries the same id. */
static cf_err create_header(cf_audit_log *log)
{
    cf_err err = ensure(&log->buf, &log->buf_cap, CF__AUDIT_HDR_LEN + CF__AUDIT_LOGHDR_PAYLOAD);
    if (err != CF_OK) {
        return err;
    }
    randombytes_buf(log->log_id, CF_AUDIT_LOG_ID_LEN);
    cf__audit_loghdr_build(log->log_id, cf_wall_us(), log->key_id, log->data_key_id, log->sign_sk,
                           log->buf);
    size_t len = CF__AUDIT_HDR_LEN + CF__AUDIT_LOGHDR_PAYLOAD;
    err = prepare_segment(log, len);
    if (err == CF_OK) {
        log->dirty = true;
        err = write_all(log, log->fd, log->buf, len);
    }
    if (err == CF_OK) {
        log->seg_bytes += len;
        err = do_sync(log);
    }
    if (err != CF_OK) {
        log->broken = true;
        return err;
    }
    log->has_log_id = true;
    log->has_header = true;
    return CF_OK;
}

/* Makes a new directory entry durable: fsync of the parent directory (best effort). */
static void sync_parent(const char *dir)
{
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') {
        parent[--n] = '\0';
    }
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, sizeof(parent), ".");
    } else if (slash == parent) {
        parent[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

cf_err cf_audit_open_keys(cf_audit_log **out, const char *dir, const cf_key *data_key,
                          const cf_key *signing_key, const cf_audit_opts *opts,
                          cf_audit_recovery *rec_out, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    cf_audit_recovery rec_local;
    cf_audit_recovery *rec = rec_out != NULL ? rec_out : &rec_local;
    memset(rec, 0, sizeof(*rec));
    if (dir == NULL || data_key == NULL || signing_key == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "audit: missing directory or key");
    }
    if (data_key->len != CF__AUDIT_KEY_LEN) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "audit: data key has %zu bytes, expected %d", data_key->len,
                          CF__AUDIT_KEY_LEN);
    }
    if (signing_key->len != CF__AUDIT_SK_LEN) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "audit: signing key has %zu bytes, expected %d (Ed25519)",
                          signing_key->len, CF__AUDIT_SK_LEN);
    }
    cf_audit_log *log = cf_calloc(1, sizeof(*log));
    if (log == NULL) {
        return CF_E_NOMEM;
    }
    log->fd = -1;
    log->dir_fd = -1;
    pthread_mutex_init(&log->sync_mu, NULL);
    if (opts != NULL) {
        log->opts = *opts;
    } else {
        cf_audit_opts_default(&log->opts);
    }
    if (log->opts.segment_bytes_max == 0) {
        log->opts.segment_bytes_max = UINT64_C(64) << 20;
    }
    log->dir = cf_strdup(dir);
    if (log->dir == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    if (cf__sha_init(&log->sha) != CF_OK) {
        err = cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "audit: OpenSSL SHA-256 unavailable");
        goto fail;
    }
    log->data_key = sodium_malloc(CF__AUDIT_KEY_LEN);
    log->sign_sk = sodium_malloc(CF__AUDIT_SK_LEN);
    if (log->data_key == NULL || log->sign_sk == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    memcpy(log->data_key, data_key->bytes, CF__AUDIT_KEY_LEN);
    memcpy(log->sign_sk, signing_key->bytes, CF__AUDIT_SK_LEN);
    memcpy(log->key_id, signing_key->id, CF_KEY_ID_LEN);
    memcpy(log->data_key_id, data_key->id, CF_KEY_ID_LEN);

    if (mkdir(dir, 0700) == 0) {
        sync_parent(dir);
    } else if (errno != EEXIST) {
        err = cf_err_errno(errno, errstr, errstr_size, "create audit log directory %s", dir);
        goto fail;
    }
    log->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dir_fd < 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "open audit log directory %s", dir);
        goto fail;
    }
    if (flock(log->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        err = errno == EWOULDBLOCK
                  ? cf_err_set(CF_E_STATE, errstr, errstr_size,
                               "audit log %s is open for writing by another process", dir)
                  : cf_err_errno(errno, errstr, errstr_size, "lock %s", dir);
        goto fail;
    }
    err = recover(log, rec, errstr, errstr_size);
    if (err != CF_OK) {
        goto fail;
    }
    if (!log->has_log_id) {
        err = create_header(log);
        if (err != CF_OK) {
            cf_err_set(err, errstr, errstr_size, "audit log %s: cannot write the log header", dir);
            goto fail;
        }
    }
    log->last_sync_ns = cf_now_ns();
    /* Leaves no head covers (a crash between a batch and its head, or a torn head): sign. */
    if (log->f.n > 0 && (!log->has_sth || log->last_sth.tree_size != log->f.n)) {
        err = ensure(&log->buf, &log->buf_cap, CF__AUDIT_HDR_LEN + CF__AUDIT_STH_PAYLOAD);
        if (err != CF_OK) {
            goto fail;
        }
        cf_audit_sth sth;
        size_t len = build_sth(log, &log->f, 0, &sth);
        err = prepare_segment(log, len);
        if (err == CF_OK) {
            log->dirty = true;
            err = write_all(log, log->fd, log->buf, len);
        }
        if (err == CF_OK) {
            log->seg_bytes += len;
            err = do_sync(log);
        }
        if (err != CF_OK) {
            cf_err_set(err, errstr, errstr_size, "audit log %s: cannot write tree head", dir);
            goto fail;
        }
        log->has_sth = true;
        log->last_sth = sth;
        rec->resigned = true;
    }
    rec->next_index = log->f.n;
    rec->has_sth = log->has_sth;
    if (log->has_sth) {
        rec->last_sth = log->last_sth;
    }
    rec->has_checkpoint = log->has_ckpt;
    rec->checkpoint_index = log->ckpt_index;
    rec->dead_letters = log->dead_letters;
    *out = log;
    return CF_OK;
fail:
    log_free(log);
    return err;
}

/* Copies KEYDIR/signing.pub next to the log, so `confide audit verify DIR` can check the
 * signatures without being told where the keys are (an auditor should pin the key with
 * --keys: a copy stored with the log proves nothing against whoever can rewrite the log). */
static void copy_public_key(const char *keys_dir, const char *dir)
{
    char src[4096], dst[4096];
    if ((size_t)snprintf(src, sizeof(src), "%s/signing.pub", keys_dir) >= sizeof(src) ||
        (size_t)snprintf(dst, sizeof(dst), "%s/signing.pub", dir) >= sizeof(dst)) {
        return;
    }
    if (access(dst, F_OK) == 0) {
        return;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return;
    }
    int outfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (outfd >= 0) {
        uint8_t buf[4096];
        ssize_t r;
        while ((r = read(in, buf, sizeof(buf))) > 0) {
            if (write_all(NULL, outfd, buf, (size_t)r) != CF_OK) {
                break;
            }
        }
        fsync(outfd);
        close(outfd);
    }
    close(in);
}

cf_err cf_audit_open(cf_audit_log **out, const char *dir, const char *keys_dir,
                     const cf_audit_opts *opts, cf_audit_recovery *rec, char *errstr,
                     size_t errstr_size)
{
    cf_key *dk = NULL, *sk = NULL;
    cf_err err = cf_key_load(keys_dir, "data.key", &dk, errstr, errstr_size);
    if (err != CF_OK) {
        goto done;
    }
    err = cf_key_load(keys_dir, "signing.key", &sk, errstr, errstr_size);
    if (err != CF_OK) {
        goto done;
    }
    err = cf_audit_open_keys(out, dir, dk, sk, opts, rec, errstr, errstr_size);
    if (err == CF_OK) {
        copy_public_key(keys_dir, dir);
    }
done:
    cf_key_destroy(dk);
    cf_key_destroy(sk);
    return err;
}

const char *cf_audit_last_error(const cf_audit_log *log, char *buf, size_t size)
{
    if (log == NULL || log->last_errno == 0) {
        snprintf(buf, size, "see the error above");
    } else {
        snprintf(buf, size, "%s (%s/%s)", strerror(log->last_errno), log->dir, log->seg_name);
    }
    return buf;
}
