/*
 * The PostgreSQL sink (output.postgres.*): results, alerts and late records in typed tables,
 * exactly once across crashes and kill -9 (docs/runtime.md, "PostgreSQL sink").
 *
 * Design: the output files are the source of truth and the tables follow them. Every row is
 * a line of one file, keyed by (stream, pos): the audit log's id and the line's byte offset
 * in its file. The sink's offsets table holds, per stream, how far each file has been
 * copied. A step moves it from the database's position to a target position in ONE
 * transaction: lock the offsets row, delete rows at or past the target (the database can
 * only be ahead after a run that ended cleanly or a lost audit record), COPY the lines in
 * between into a temporary staging table, insert them into the typed tables, update the
 * offsets row, commit. A kill -9 anywhere leaves either the old or the new position.
 *
 * Targets are durable checkpoints only: the gateway calls pgsink_durable once the audit log
 * holds a checkpoint (whose lengths recovery will cut the files back to), and the end of a
 * run ships the final files. So during a run the database is never ahead of what recovery
 * restores, and at start pgsink_open makes it equal to the recovered position (catching up
 * checkpoints it missed from the files, or deleting rows past the checkpoint): the tables
 * then follow the replay exactly as the files do.
 *
 * Threads: pgsink_open connects and reconciles on the caller's thread (a database that is
 * down or refuses the login stops the run before it starts), then one thread owns the
 * connection and ships the newest target whenever it moves; several checkpoints merge into
 * one transaction when the database is slower than the stream. A failure is kept and the
 * gateway stops the run with it (the files and the log are intact; a restart catches up).
 *
 * Privacy: errors are libpq's terse messages with every quoted value cut out, so a rejected
 * row can never bring an amount or an id into the logs; the password is read from a 0600
 * file, handed to libpq and wiped.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "confide/core.h"
#include "confide/metrics.h"
#include "pgsink.h"

#define PG_CHUNK (1u << 20)      /* file bytes read at a time */
#define PG_COPY_BUF (256u << 10) /* COPY data sent at a time */
#define PG_SQL_MAX 8192

static const char *const kind_name[PG_KINDS] = {"alerts", "results", "late"};

struct pgsink {
    PGconn *conn;
    char stream[80];           /* the audit log's id, hex */
    char table[PG_KINDS][200]; /* quoted "schema"."prefix<kind>" */
    char offsets[200];
    int fd[PG_KINDS]; /* the files, read-only; -1: not written in this run */
    char path[PG_KINDS][CF_CONF_STR_MAX + 64];
    char *chunk; /* PG_CHUNK + 1 */
    char *copy;  /* PG_COPY_BUF */
    size_t copy_n;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pgsink_pos target, done; /* under mu (done: the thread's) */
    bool stop, failed;
    char err[700];
    uint64_t rows, txns; /* shipped by this process */
    /* confide_pg_* (docs/metrics.md); NULL when not observed */
    cf_counter *m_rows[PG_KINDS], *m_txns;
    cf_gauge *m_events, *m_failed;
};

/* ---- errors ---- */

/* libpq's message, terse, on one line, with every "quoted" part cut: values of a rejected
 * row appear quoted in PostgreSQL's messages, identifiers too (we know those). */
static void clean_message(const char *msg, bool cut_quoted, char *out, size_t size)
{
    size_t o = 0;
    bool quoted = false;
    for (const char *p = msg; p != NULL && *p != '\0' && o + 6 < size; p++) {
        if (*p == '"' && cut_quoted) {
            if (!quoted) {
                memcpy(out + o, "\"…\"", 5); /* UTF-8 ellipsis: 3 bytes */
                o += 5;
            }
            quoted = !quoted;
            continue;
        }
        if (quoted) {
            continue;
        }
        out[o++] = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
    }
    while (o > 0 && out[o - 1] == ' ') {
        o--;
    }
    out[o < size ? o : size - 1] = '\0';
}

/* Connection errors quote the host and the user, never a row: kept whole. */
static cf_err conn_error(pgsink *p, cf_err code, const char *what, char *errstr, size_t errstr_size)
{
    char msg[400];
    clean_message(PQerrorMessage(p->conn), false, msg, sizeof(msg));
    return cf_err_set(code, errstr, errstr_size, "output.postgres: %s: %s", what, msg);
}

static cf_err result_error(PGresult *r, const char *what, char *errstr, size_t errstr_size)
{
    char msg[400];
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    clean_message(r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL, true, msg,
                  sizeof(msg));
    if (msg[0] == '\0' && r != NULL) {
        clean_message(PQresultErrorMessage(r), true, msg, sizeof(msg));
    }
    return cf_err_set(CF_E_TRANSPORT, errstr, errstr_size, "output.postgres: %s: %s%s%s%s", what,
                      msg[0] != '\0' ? msg : "the connection failed",
                      state != NULL ? " (SQLSTATE " : "", state != NULL ? state : "",
                      state != NULL ? ")" : "");
}

/* Runs @p sql (one or more statements); fails unless the last gives @p want. */
static cf_err exec(pgsink *p, const char *sql, ExecStatusType want, PGresult **keep,
                   const char *what, char *errstr, size_t errstr_size)
{
    PGresult *r = PQexec(p->conn, sql);
    cf_err err = CF_OK;
    if (r == NULL || PQresultStatus(r) != want) {
        err = r != NULL ? result_error(r, what, errstr, errstr_size)
                        : conn_error(p, CF_E_TRANSPORT, what, errstr, errstr_size);
    }
    if (err == CF_OK && keep != NULL) {
        *keep = r;
        return CF_OK;
    }
    PQclear(r);
    return err;
}

/* ---- configuration ---- */

static bool ident_ok(const char *s, bool empty_ok)
{
    if (s[0] == '\0') {
        return empty_ok;
    }
    if (strlen(s) > 40 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (const char *q = s; *q != '\0'; q++) {
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')) {
            return false;
        }
    }
    return true;
}

cf_err pgsink_check_config(const cf_config *c, char *errstr, size_t errstr_size)
{
    if (cf__config_role(c) != 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.conninfo: only `confide run` (the embedded pipeline) "
                          "writes to PostgreSQL so far, not a distributed %s",
                          c->role);
    }
    if (c->output_dir[0] == '\0' || !c->audit_enabled) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.conninfo needs output.dir and the audit log (the "
                          "tables follow the output files up to the log's checkpoints)");
    }
    if (strcmp(c->results_format, "ndjson") != 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.conninfo needs output.results_format: ndjson (the "
                          "tables keep each row's JSON line)");
    }
    if (!ident_ok(c->pg_schema, false) || !ident_ok(c->pg_table_prefix, true)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.schema and table_prefix: lower-case letters, digits "
                          "and _ only, at most 40, not starting with a digit");
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(c->pg_conninfo, &perr);
    if (opts == NULL) {
        char msg[300];
        clean_message(perr, true, msg, sizeof(msg));
        PQfreemem(perr);
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.conninfo: not a libpq connection string: %s", msg);
    }
    bool has_pw = false;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        has_pw |= strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0';
    }
    PQconninfoFree(opts);
    if (has_pw) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "output.postgres.conninfo holds a password: put it in "
                          "output.postgres.password_file (mode 0600) or a PGPASSFILE instead, "
                          "so that it is in no config, command line or process list");
    }
    return CF_OK;
}

static cf_err connect_db(pgsink *p, const cf_config *c, char *errstr, size_t errstr_size)
{
    char password[512];
    cf_err err = cf__read_password_file("output.postgres.password_file", c->pg_password_file,
                                        password, sizeof(password), errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    /* dbname first: expanded as the conninfo; what follows fills in or overrides, so the
     * defaults below only go in when the conninfo does not set them. Keepalives: a server
     * that vanishes mid-transaction is noticed within about a minute, not hours. */
    static const char *const defaults[][2] = {{"connect_timeout", "10"},
                                              {"keepalives_idle", "30"},
                                              {"keepalives_interval", "10"},
                                              {"keepalives_count", "3"},
                                              {"tcp_user_timeout", "60000"}};
    enum { NDEF = sizeof(defaults) / sizeof(defaults[0]) };
    const char *kw[NDEF + 4] = {"dbname", "fallback_application_name"};
    const char *val[NDEF + 4] = {c->pg_conninfo, "confide"};
    int n = 2;
    PQconninfoOption *opts = PQconninfoParse(c->pg_conninfo, NULL);
    for (size_t d = 0; d < NDEF; d++) {
        bool given = false;
        for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
            given |= strcmp(o->keyword, defaults[d][0]) == 0 && o->val != NULL;
        }
        if (!given) {
            kw[n] = defaults[d][0];
            val[n++] = defaults[d][1];
        }
    }
    PQconninfoFree(opts);
    if (password[0] != '\0') {
        kw[n] = "password";
        val[n++] = password;
    }
    kw[n] = NULL;
    val[n] = NULL;
    p->conn = PQconnectdbParams(kw, val, 1);
    sodium_memzero(password, sizeof(password));
    if (p->conn == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "output.postgres: out of memory");
    }
    if (PQstatus(p->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(p->conn);
        bool auth = strstr(m, "authentication") != NULL || strstr(m, "password") != NULL;
        return conn_error(p, auth ? CF_E_AUTH : CF_E_TRANSPORT,
                          auth ? "the database refused the login"
                               : "cannot connect to the database",
                          errstr, errstr_size);
    }
    PQsetErrorVerbosity(p->conn, PQERRORS_TERSE);
    return CF_OK;
}

/* ---- schema ---- */

static cf_err create_tables(pgsink *p, const cf_config *c, char *errstr, size_t errstr_size)
{
    char *schema = PQescapeIdentifier(p->conn, c->pg_schema, strlen(c->pg_schema));
    if (schema == NULL) {
        return conn_error(p, CF_E_INVAL, "output.postgres.schema", errstr, errstr_size);
    }
    static const char *const suffix[PG_KINDS] = {"alerts", "results", "late"};
    for (int k = 0; k < PG_KINDS; k++) {
        snprintf(p->table[k], sizeof(p->table[k]), "%s.%s%s", schema, c->pg_table_prefix,
                 suffix[k]);
    }
    snprintf(p->offsets, sizeof(p->offsets), "%s.%soffsets", schema, c->pg_table_prefix);
    char sql[PG_SQL_MAX];
    snprintf(sql, sizeof(sql),
             "SET client_min_messages = warning;"
             /* two runs starting at once: CREATE ... IF NOT EXISTS is not atomic */
             "BEGIN; SELECT pg_advisory_xact_lock(hashtext('confide.pgsink.create'));"
             "CREATE SCHEMA IF NOT EXISTS %s;"
             "CREATE TABLE IF NOT EXISTS %s ("
             " stream text PRIMARY KEY, events_through bigint NOT NULL,"
             " alerts_pos bigint NOT NULL, results_pos bigint NOT NULL,"
             " late_pos bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());"
             "CREATE TABLE IF NOT EXISTS %s ("
             " stream text NOT NULL, pos bigint NOT NULL,"
             " window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,"
             " group_key jsonb NOT NULL, currency text, count bigint NOT NULL,"
             " sum_minor bigint, verified boolean NOT NULL, first_index bigint,"
             " last_index bigint, key_epoch integer, line jsonb NOT NULL,"
             " PRIMARY KEY (stream, pos));"
             "CREATE TABLE IF NOT EXISTS %s ("
             " stream text NOT NULL, pos bigint NOT NULL, kind text NOT NULL,"
             " rule_id text, event_id numeric(20,0), ts timestamptz,"
             " window_start timestamptz, window_end timestamptz, party integer,"
             " details jsonb, line jsonb NOT NULL, PRIMARY KEY (stream, pos));"
             "CREATE TABLE IF NOT EXISTS %s ("
             " stream text NOT NULL, pos bigint NOT NULL, event_index bigint,"
             " event_id numeric(20,0), ts timestamptz, watermark timestamptz, reason text,"
             " line jsonb NOT NULL, PRIMARY KEY (stream, pos));"
             "CREATE TEMP TABLE IF NOT EXISTS confide_stage ("
             " kind smallint NOT NULL, pos bigint NOT NULL, line jsonb NOT NULL)"
             " ON COMMIT DELETE ROWS; COMMIT",
             schema, p->offsets, p->table[PG_RESULTS], p->table[PG_ALERTS], p->table[PG_LATE]);
    PQfreemem(schema);
    cf_err err =
        exec(p, sql, PGRES_COMMAND_OK, NULL, "cannot create the tables", errstr, errstr_size);
    if (err != CF_OK) {
        PQclear(PQexec(p->conn, "ROLLBACK"));
    }
    return err;
}

/* ---- one step: the database's position -> @p to, in one transaction ---- */

static uint64_t field_u64(PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? 0 : strtoull(PQgetvalue(r, 0, col), NULL, 10);
}

static bool copy_flush(pgsink *p)
{
    bool ok = p->copy_n == 0 || PQputCopyData(p->conn, p->copy, (int)p->copy_n) == 1;
    p->copy_n = 0;
    return ok;
}

/* One COPY text row: kind, pos, the line (backslash, tab, CR, LF escaped). */
static bool copy_line(pgsink *p, int kind, uint64_t pos, const char *line, size_t len)
{
    if (PG_COPY_BUF - p->copy_n < 2 * len + 32 && !copy_flush(p)) {
        return false;
    }
    if (2 * len + 32 > PG_COPY_BUF) {
        return false; /* lines are far shorter than this (window row and alert maxima) */
    }
    char *o = p->copy + p->copy_n;
    o += snprintf(o, 32, "%d\t%" PRIu64 "\t", kind, pos);
    for (size_t i = 0; i < len; i++) {
        char ch = line[i];
        if (ch == '\\' || ch == '\t' || ch == '\n' || ch == '\r') {
            *o++ = '\\';
            ch = ch == '\t' ? 't' : ch == '\n' ? 'n' : ch == '\r' ? 'r' : '\\';
        }
        *o++ = ch;
    }
    *o++ = '\n';
    p->copy_n = (size_t)(o - p->copy);
    return true;
}

/* COPYs the lines of file @p k in [from, to); counts them into *rows. */
static cf_err copy_range(pgsink *p, int k, uint64_t from, uint64_t to, uint64_t *rows, char *errstr,
                         size_t errstr_size)
{
    uint64_t at = from;
    size_t have = 0; /* bytes of an unfinished line at the start of chunk */
    while (at + have < to) {
        size_t want = PG_CHUNK - have;
        if ((uint64_t)want > to - at - have) {
            want = (size_t)(to - at - have);
        }
        ssize_t r = pread(p->fd[k], p->chunk + have, want, (off_t)(at + have));
        if (r <= 0) {
            return cf_err_errno(r < 0 ? errno : EIO, errstr, errstr_size,
                                "output.postgres: cannot read %s", p->path[k]);
        }
        have += (size_t)r;
        size_t start = 0;
        for (;;) {
            char *nl = memchr(p->chunk + start, '\n', have - start);
            if (nl == NULL) {
                break;
            }
            size_t len = (size_t)(nl - (p->chunk + start));
            if (!copy_line(p, k, at + start, p->chunk + start, len)) {
                return conn_error(p, CF_E_TRANSPORT, "COPY failed", errstr, errstr_size);
            }
            (*rows)++;
            start += len + 1;
        }
        if (start == 0 && have == PG_CHUNK) {
            return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                              "output.postgres: a line of %s is longer than %u bytes", p->path[k],
                              PG_CHUNK);
        }
        memmove(p->chunk, p->chunk + start, have - start);
        at += start;
        have -= start;
    }
    if (have != 0) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                          "output.postgres: %s does not end with a whole line at the "
                          "checkpoint's position %" PRIu64,
                          p->path[k], to);
    }
    return CF_OK;
}

/* Whether @p pos of file @p k is the start of a line (0, or just after a newline). */
static bool at_line_start(pgsink *p, int k, uint64_t pos)
{
    char ch = 0;
    return pos == 0 || (pread(p->fd[k], &ch, 1, (off_t)(pos - 1)) == 1 && ch == '\n');
}

static cf_err step(pgsink *p, const pgsink_pos *to, bool first, char *errstr, size_t errstr_size)
{
    char sql[PG_SQL_MAX];
    PGresult *r = NULL;
    uint64_t db[PG_KINDS] = {0, 0, 0}, rows[PG_KINDS] = {0, 0, 0};
    snprintf(sql, sizeof(sql),
             "BEGIN; SELECT alerts_pos, results_pos, late_pos FROM %s WHERE stream = '%s' "
             "FOR UPDATE",
             p->offsets, p->stream);
    cf_err err =
        exec(p, sql, PGRES_TUPLES_OK, &r, "cannot read the sink's position", errstr, errstr_size);
    if (err == CF_OK) {
        if (PQntuples(r) == 1) {
            for (int k = 0; k < PG_KINDS; k++) {
                db[k] = field_u64(r, k);
            }
        }
        PQclear(r);
    }
    uint64_t from[PG_KINDS];
    bool copy = false;
    for (int k = 0; k < PG_KINDS && err == CF_OK; k++) {
        from[k] = db[k] < to->len[k] ? db[k] : to->len[k];
        if (db[k] > to->len[k]) {
            /* Ahead of the recovered checkpoint: the tail of a finished run (or of a
             * checkpoint the log lost). Those lines come again from the replay. */
            snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE stream = '%s' AND pos >= %" PRIu64,
                     p->table[k], p->stream, to->len[k]);
            err = exec(p, sql, PGRES_COMMAND_OK, NULL, "cannot remove rows past the checkpoint",
                       errstr, errstr_size);
            if (err == CF_OK && first) {
                CF_LOG(CF_LOG_WARN, "output.postgres",
                       "%s: the table was ahead of the audit log's last checkpoint; the rows past "
                       "it are written again by the replay",
                       kind_name[k]);
            }
        } else if (from[k] < to->len[k]) {
            if (p->fd[k] < 0 || !at_line_start(p, k, from[k])) {
                err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                                 "output.postgres: the database's position in %s (%" PRIu64
                                 ") is not a line of this output directory's file: was the "
                                 "directory replaced? (stream %s)",
                                 kind_name[k], from[k], p->stream);
            }
            copy = true;
        }
    }
    if (err == CF_OK && copy) {
        err = exec(p, "COPY pg_temp.confide_stage (kind, pos, line) FROM STDIN", PGRES_COPY_IN,
                   NULL, "cannot start COPY", errstr, errstr_size);
        p->copy_n = 0;
        for (int k = 0; k < PG_KINDS && err == CF_OK; k++) {
            if (from[k] < to->len[k]) {
                err = copy_range(p, k, from[k], to->len[k], &rows[k], errstr, errstr_size);
            }
        }
        if (err == CF_OK && !copy_flush(p)) {
            err = conn_error(p, CF_E_TRANSPORT, "COPY failed", errstr, errstr_size);
        }
        if (PQputCopyEnd(p->conn, err == CF_OK ? NULL : "aborted") != 1 && err == CF_OK) {
            err = conn_error(p, CF_E_TRANSPORT, "COPY failed", errstr, errstr_size);
        }
        PGresult *cr;
        while ((cr = PQgetResult(p->conn)) != NULL) {
            if (err == CF_OK && PQresultStatus(cr) != PGRES_COMMAND_OK) {
                err = result_error(cr, "COPY failed", errstr, errstr_size);
            }
            PQclear(cr);
        }
    }
    if (err == CF_OK) {
        int n = 0;
        if (copy) {
            n = snprintf(
                sql, sizeof(sql),
                "INSERT INTO %s (stream, pos, window_start, window_end, group_key, currency,"
                " count, sum_minor, verified, first_index, last_index, key_epoch, line)"
                " SELECT '%s', pos, (line->>'window_start')::timestamptz,"
                " (line->>'window_end')::timestamptz, line->'group', line->>'currency',"
                " (line->>'count')::bigint, (line->>'sum_minor')::bigint,"
                " (line->>'verified')::boolean, (line->>'first_index')::bigint,"
                " (line->>'last_index')::bigint, (line->>'key_epoch')::integer, line"
                " FROM pg_temp.confide_stage WHERE kind = %d;"
                "INSERT INTO %s (stream, pos, kind, rule_id, event_id, ts, window_start,"
                " window_end, party, details, line)"
                " SELECT '%s', pos, coalesce(line->>'kind', 'compliance'), line->>'rule_id',"
                " (line->>'event_id')::numeric, (line->>'ts')::timestamptz,"
                " (line->>'window_start')::timestamptz, (line->>'window_end')::timestamptz,"
                " (line->>'party')::integer, line->'details', line"
                " FROM pg_temp.confide_stage WHERE kind = %d;"
                "INSERT INTO %s (stream, pos, event_index, event_id, ts, watermark, reason, line)"
                " SELECT '%s', pos, (line->>'index')::bigint, (line->>'event_id')::numeric,"
                " (line->>'ts')::timestamptz, (line->>'watermark')::timestamptz,"
                " line->>'reason', line FROM pg_temp.confide_stage WHERE kind = %d;",
                p->table[PG_RESULTS], p->stream, PG_RESULTS, p->table[PG_ALERTS], p->stream,
                PG_ALERTS, p->table[PG_LATE], p->stream, PG_LATE);
        }
        snprintf(sql + n, sizeof(sql) - (size_t)n,
                 "INSERT INTO %s (stream, events_through, alerts_pos, results_pos, late_pos)"
                 " VALUES ('%s', %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 ")"
                 " ON CONFLICT (stream) DO UPDATE SET events_through = EXCLUDED.events_through,"
                 " alerts_pos = EXCLUDED.alerts_pos, results_pos = EXCLUDED.results_pos,"
                 " late_pos = EXCLUDED.late_pos, updated_at = now();"
                 "COMMIT",
                 p->offsets, p->stream, to->events, to->len[PG_ALERTS], to->len[PG_RESULTS],
                 to->len[PG_LATE]);
        err = exec(p, sql, PGRES_COMMAND_OK, NULL, "cannot write the rows", errstr, errstr_size);
    }
    if (err != CF_OK) {
        PQclear(PQexec(p->conn, "ROLLBACK"));
        return err;
    }
    for (int k = 0; k < PG_KINDS; k++) {
        p->rows += rows[k];
        if (p->m_rows[k] != NULL) {
            cf_counter_add(p->m_rows[k], rows[k]);
        }
    }
    p->txns++;
    if (p->m_txns != NULL) {
        cf_counter_inc(p->m_txns);
        cf_gauge_set(p->m_events, (double)to->events);
    }
    return CF_OK;
}

/* ---- the sink's thread ---- */

static bool pos_before(const pgsink_pos *a, const pgsink_pos *b)
{
    bool before = a->events < b->events;
    for (int k = 0; k < PG_KINDS; k++) {
        before |= a->len[k] < b->len[k];
    }
    return before;
}

static void *sink_main(void *arg)
{
    pgsink *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !pos_before(&p->done, &p->target)) {
            pthread_cond_wait(&p->cv, &p->mu);
        }
        if (!pos_before(&p->done, &p->target)) {
            break; /* stopped with nothing left */
        }
        pgsink_pos to = p->target;
        pthread_mutex_unlock(&p->mu);
        char err[480];
        cf_err e = step(p, &to, false, err, sizeof(err));
        pthread_mutex_lock(&p->mu);
        if (e != CF_OK) {
            p->failed = true;
            snprintf(p->err, sizeof(p->err),
                     "%s (the files and the audit log hold every line: the same command "
                     "resumes and catches the tables up)",
                     err);
            CF_LOG(CF_LOG_ERROR, "sink", "%s", err);
            if (p->m_failed != NULL) {
                cf_gauge_set(p->m_failed, 1);
            }
            break;
        }
        p->done = to;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- public (runtime-private) interface ---- */

static cf_err register_metrics(pgsink *p, cf_metrics *m, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    for (int k = 0; k < PG_KINDS && err == CF_OK; k++) {
        cf_label l[] = {{"table", kind_name[k]}};
        err = cf_metrics_counter(m, "confide_pg_rows_total",
                                 "Rows the PostgreSQL sink committed, by table.", l, 1,
                                 &p->m_rows[k], errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = cf_metrics_counter(m, "confide_pg_transactions_total",
                                 "Transactions the PostgreSQL sink committed.", NULL, 0, &p->m_txns,
                                 errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = cf_metrics_gauge(m, "confide_pg_events_through",
                               "Events whose outputs the PostgreSQL tables hold (the position of "
                               "the last commit, an audit-log index).",
                               NULL, 0, &p->m_events, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = cf_metrics_gauge(m, "confide_pg_failed",
                               "1 once the PostgreSQL sink failed (the run then stops).", NULL, 0,
                               &p->m_failed, errstr, errstr_size);
    }
    return err;
}

cf_err pgsink_open(pgsink **out, const cf_config *c, cf_metrics *m, const char *stream,
                   const char *const paths[PG_KINDS], const pgsink_pos *recovered, char *errstr,
                   size_t errstr_size)
{
    *out = NULL;
    cf_err err = pgsink_check_config(c, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    pgsink *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    snprintf(p->stream, sizeof(p->stream), "%s", stream);
    for (int k = 0; k < PG_KINDS; k++) {
        p->fd[k] = -1;
    }
    bool mu = pthread_mutex_init(&p->mu, NULL) == 0;
    bool cv = pthread_cond_init(&p->cv, NULL) == 0;
    p->chunk = cf_malloc(PG_CHUNK + 1);
    p->copy = cf_malloc(PG_COPY_BUF);
    if (!mu || !cv || p->chunk == NULL || p->copy == NULL) {
        if (mu) {
            pthread_mutex_destroy(&p->mu);
        }
        if (cv) {
            pthread_cond_destroy(&p->cv);
        }
        cf_free(p->chunk);
        cf_free(p->copy);
        cf_free(p);
        return CF_E_NOMEM;
    }
    p->started = false;
    for (int k = 0; k < PG_KINDS && err == CF_OK; k++) {
        if (paths[k] == NULL) {
            continue;
        }
        snprintf(p->path[k], sizeof(p->path[k]), "%s", paths[k]);
        p->fd[k] = open(paths[k], O_RDONLY | O_CLOEXEC);
        if (p->fd[k] < 0) {
            err = cf_err_errno(errno, errstr, errstr_size, "output.postgres: cannot read %s",
                               paths[k]);
        }
    }
    if (err == CF_OK && m != NULL) {
        err = register_metrics(p, m, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = connect_db(p, c, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = create_tables(p, c, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = step(p, recovered, true, errstr, errstr_size);
    }
    if (err == CF_OK) {
        p->done = *recovered;
        p->target = *recovered;
        if (pthread_create(&p->thread, NULL, sink_main, p) != 0) {
            err = cf_err_set(CF_E_NOMEM, errstr, errstr_size,
                             "output.postgres: cannot start the sink's thread");
        } else {
            p->started = true;
        }
    }
    if (err != CF_OK) {
        pgsink_close(p);
        return err;
    }
    *out = p;
    return CF_OK;
}

void pgsink_durable(pgsink *p, const pgsink_pos *pos)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (pos_before(&p->target, pos)) {
        p->target.events = pos->events > p->target.events ? pos->events : p->target.events;
        for (int k = 0; k < PG_KINDS; k++) {
            if (pos->len[k] > p->target.len[k]) {
                p->target.len[k] = pos->len[k];
            }
        }
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

bool pgsink_failed(pgsink *p, char *errstr, size_t errstr_size)
{
    if (p == NULL) {
        return false;
    }
    pthread_mutex_lock(&p->mu);
    bool failed = p->failed;
    if (failed && errstr != NULL && errstr_size > 0) {
        snprintf(errstr, errstr_size, "%s", p->err);
    }
    pthread_mutex_unlock(&p->mu);
    return failed;
}

static void stop_thread(pgsink *p)
{
    if (!p->started) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->started = false;
}

cf_err pgsink_finish(pgsink *p, uint64_t events, char *errstr, size_t errstr_size)
{
    if (p == NULL) {
        return CF_OK;
    }
    pgsink_pos end = {.events = events};
    for (int k = 0; k < PG_KINDS; k++) {
        struct stat st;
        if (p->fd[k] >= 0 && fstat(p->fd[k], &st) == 0) {
            end.len[k] = (uint64_t)st.st_size;
        }
    }
    pgsink_durable(p, &end);
    stop_thread(p); /* ships what is left first: it stops only when done reaches target */
    if (pgsink_failed(p, errstr, errstr_size)) {
        return CF_E_TRANSPORT;
    }
    CF_LOG(CF_LOG_INFO, "output.postgres", "%" PRIu64 " rows in %" PRIu64 " transactions", p->rows,
           p->txns);
    return CF_OK;
}

void pgsink_close(pgsink *p)
{
    if (p == NULL) {
        return;
    }
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->target = p->done; /* nothing more: what is not shipped is caught up by a restart */
        pthread_mutex_unlock(&p->mu);
        stop_thread(p);
    }
    if (p->conn != NULL) {
        PQfinish(p->conn);
    }
    for (int k = 0; k < PG_KINDS; k++) {
        if (p->fd[k] >= 0) {
            close(p->fd[k]);
        }
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    cf_free(p->chunk);
    cf_free(p->copy);
    cf_free(p);
}
