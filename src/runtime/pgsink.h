/*
 * Private to the runtime: the PostgreSQL sink (output.postgres.*, pgsink.c). Results, alerts
 * and late records go into typed tables, exactly once across crashes: the tables follow the
 * output files up to the audit log's durable checkpoints, each step in one transaction with
 * the sink's position (docs/runtime.md, "PostgreSQL sink").
 */
#ifndef CF_RUNTIME_PGSINK_H
#define CF_RUNTIME_PGSINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/metrics.h"
#include "runtime_int.h"

/* The output files the sink mirrors, in the order of pgsink_pos.len. */
enum { PG_ALERTS = 0, PG_RESULTS = 1, PG_LATE = 2, PG_KINDS = 3 };

/* A position in the outputs: events [0, events) are reflected in the first len[k] bytes of
 * each file (a checkpoint's lengths). */
typedef struct pgsink_pos {
    uint64_t events;
    uint64_t len[PG_KINDS];
} pgsink_pos;

typedef struct pgsink pgsink;

/** Whether output.postgres.conninfo is set. */
static inline bool pgsink_enabled(const cf_config *c)
{
    return c->pg_conninfo[0] != '\0';
}

/** The settings alone (CF_E_INVAL): an embedded run with output.dir, the audit log and
 *  NDJSON results; identifiers; no password in the conninfo. Before anything is created. */
cf_err pgsink_check_config(const cf_config *c, char *errstr, size_t errstr_size);
/**
 * Connects (the password from output.postgres.password_file, 0600, or libpq's own PGPASSFILE
 * or ~/.pgpass), creates the schema and tables when missing, and brings the tables of stream
 * @p stream (the audit log's id) to @p recovered, the positions recovery cut the files back
 * to, in one transaction: rows the database holds past them are deleted, and the lines of
 * @p paths between the database's position and them are inserted. Then starts the sink's
 * thread. @p paths[k] NULL: that output is not written in this run. A configuration error is
 * CF_E_INVAL; a database that is down or refuses the login CF_E_TRANSPORT or CF_E_AUTH.
 * @p m (may be NULL): registers the confide_pg_* series (docs/metrics.md).
 */
cf_err pgsink_open(pgsink **out, const cf_config *c, cf_metrics *m, const char *stream,
                   const char *const paths[PG_KINDS], const pgsink_pos *recovered, char *errstr,
                   size_t errstr_size);
/** A checkpoint with these positions is durable in the audit log: the sink's thread ships
 *  the files up to them in one transaction (several checkpoints merge when it lags). Never
 *  waits for the database. @locality any thread */
void pgsink_durable(pgsink *p, const pgsink_pos *pos);
/** True (and the reason in @p errstr) once the sink's thread failed. */
bool pgsink_failed(pgsink *p, char *errstr, size_t errstr_size);
/** The run ended and the files are final: ships them whole (their current lengths) and
 *  stops the thread. */
cf_err pgsink_finish(pgsink *p, uint64_t events, char *errstr, size_t errstr_size);
/** Stops the thread (without shipping more) and disconnects. NULL ok. */
void pgsink_close(pgsink *p);

#endif
