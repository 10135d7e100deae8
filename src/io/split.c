/*
 * Record splitting: finds record boundaries in a byte stream fed in arbitrary pieces.
 *
 * Purpose: NDJSON records end at '\n'. CSV (and FDH) records end at a '\n' outside quotes
 * (RFC 4180): a quote opens a quoted field only at the start of a field, "" inside one is
 * an escaped quote. A '\r' right before the terminator is dropped (CRLF files). Empty lines
 * are consumed silently but counted, so line numbers stay those of the file.
 *
 * Bounds: a record is at most line_max bytes. The splitter looks at most line_max + 2
 * bytes ahead (content, '\r', '\n'), so a caller whose buffer holds line_max + 2 bytes
 * always gets a decision. A longer record is returned once, with too_long set and its
 * first line_max bytes, then skipped up to its end, across as many calls as it takes.
 *
 * State: the stream offset of the caller's buf[0], the current line number, and the quote
 * state while skipping. Records point into the caller's buffer; nothing is copied.
 * Threads: one splitter per stream and thread.
 */
#include <string.h>

#include "confide/core.h"
#include "io_int.h"

/* CSV scanner states. */
enum { S_START = 0, S_UNQ, S_Q, S_QQ };

struct cf_splitter {
    cf_format fmt;
    size_t line_max;
    uint64_t line;   /* line number of the next unconsumed byte */
    uint64_t offset; /* stream offset of the next unconsumed byte */
    bool skipping;   /* inside an over-long record already reported */
    uint8_t qstate;  /* CSV scanner state while skipping */
};

cf_err cf_splitter_create(cf_splitter **out, cf_format fmt, size_t line_max)
{
    if (out == NULL || cf_format_name(fmt) == NULL) {
        return CF_E_INVAL;
    }
    *out = NULL;
    cf_splitter *s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        return CF_E_NOMEM;
    }
    s->fmt = fmt;
    s->line_max = line_max == 0 ? CF_RECORD_MAX : line_max;
    s->line = 1;
    *out = s;
    return CF_OK;
}

void cf_splitter_destroy(cf_splitter *s)
{
    cf_free(s);
}

/*
 * Runs the CSV state machine over b[from..lim) starting in *st. Returns the index of the
 * record-ending '\n' (state reset), or SIZE_MAX with *st updated. Counts the newlines
 * inside quotes in *nl.
 */
static size_t csv_scan(const char *b, size_t from, size_t lim, uint8_t *st, uint64_t *nl)
{
    uint8_t s = *st;
    for (size_t i = from; i < lim; i++) {
        char c = b[i];
        switch (s) {
        case S_START:
            if (c == '"') {
                s = S_Q;
            } else if (c == '\n') {
                *st = S_START;
                return i;
            } else if (c != ',') {
                s = S_UNQ;
            }
            break;
        case S_UNQ:
            if (c == ',') {
                s = S_START;
            } else if (c == '\n') {
                *st = S_START;
                return i;
            }
            break;
        case S_Q:
            if (c == '"') {
                s = S_QQ;
            } else if (c == '\n') {
                (*nl)++;
            }
            break;
        default: /* S_QQ: a quote inside a quoted field, closing it unless doubled */
            if (c == '"') {
                s = S_Q;
            } else if (c == ',') {
                s = S_START;
            } else if (c == '\n') {
                *st = S_START;
                return i;
            } else {
                s = S_UNQ;
            }
            break;
        }
    }
    *st = s;
    return SIZE_MAX;
}

/*
 * Finds the terminator of the record starting at b[from], looking at b[from..lim).
 * Returns its index or SIZE_MAX; *nl gets the newlines before it (quoted ones);
 * *st the CSV state at lim when not found.
 */
static size_t find_end(const cf_splitter *s, const char *b, size_t from, size_t lim, uint64_t *nl,
                       uint8_t *st)
{
    *nl = 0;
    *st = S_START;
    const char *e = memchr(b + from, '\n', lim - from);
    if (s->fmt == CF_FMT_NDJSON) {
        return e == NULL ? SIZE_MAX : (size_t)(e - b);
    }
    /* CSV fast path: no quote before the first newline means that newline ends it. */
    if (e != NULL && memchr(b + from, '"', (size_t)(e - b) - from) == NULL) {
        return (size_t)(e - b);
    }
    /* Quotes, or no newline yet: the state machine gives the end and the state at lim. */
    return csv_scan(b, from, lim, st, nl);
}

cf_err cf_splitter_next(cf_splitter *s, const char *buf, size_t len, bool at_eof, cf_record *rec,
                        size_t *used)
{
    CF_ASSERT(s != NULL && rec != NULL && used != NULL);
    CF_ASSERT(buf != NULL || len == 0);
    size_t pos = 0;

    if (s->skipping) {
        uint64_t nl = 0;
        size_t end;
        if (s->fmt == CF_FMT_NDJSON) {
            const char *e = memchr(buf, '\n', len);
            end = e == NULL ? SIZE_MAX : (size_t)(e - buf);
        } else {
            end = csv_scan(buf, 0, len, &s->qstate, &nl);
        }
        if (end == SIZE_MAX) {
            s->line += nl;
            s->offset += len;
            *used = len;
            if (at_eof) {
                s->skipping = false;
                s->qstate = S_START;
            }
            return CF_E_EOF;
        }
        s->line += nl + 1;
        pos = end + 1;
        s->offset += pos;
        s->skipping = false;
        s->qstate = S_START;
    }

    const size_t window = s->line_max + 2;
    for (;;) {
        size_t avail = len - pos;
        if (avail == 0) {
            break;
        }
        size_t lim = pos + (avail < window ? avail : window);
        uint64_t nl;
        uint8_t st;
        size_t end = find_end(s, buf, pos, lim, &nl, &st);
        size_t content;
        size_t next;
        bool skip_after = false;
        if (end != SIZE_MAX) {
            content = end - pos;
            next = end + 1;
            nl += 1;
        } else if (avail >= window) {
            /* No terminator within line_max + 2 bytes: over-long for sure. */
            content = window;
            next = lim;
            skip_after = true;
        } else if (at_eof) {
            content = avail;
            next = len;
        } else {
            break; /* need more input */
        }
        if (!skip_after && content > 0 && buf[pos + content - 1] == '\r') {
            content--;
        }
        if (content == 0) {
            /* Empty line. */
            s->line += nl;
            s->offset += next - pos;
            pos = next;
            continue;
        }
        rec->data = buf + pos;
        rec->too_long = content > s->line_max;
        rec->len = rec->too_long ? s->line_max : content;
        rec->line = s->line;
        rec->offset = s->offset;
        s->line += nl;
        s->offset += next - pos;
        if (skip_after) {
            s->skipping = true;
            s->qstate = st;
        }
        *used = next;
        return CF_OK;
    }
    *used = pos;
    return CF_E_EOF;
}
