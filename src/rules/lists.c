/*
 * Blocked-id lists: immutable hash sets built from a file, swapped atomically on reload.
 *
 * A list is never modified after it is built. cf_rules_reload_lists builds every new list
 * first (all or nothing), publishes each with an atomic exchange, then waits for a grace
 * period before freeing the old ones. Readers (cf_rules_eval) announce themselves in one of
 * two counters chosen by the generation they saw; the reloader flips the generation after
 * publishing and waits for the old generation's counter to drain. A reader that saw the old
 * generation is waited for; one that saw the new generation loads the new pointer (the
 * exchange happened before the flip, all operations sequentially consistent). Readers never
 * block; the reloader waits only for evaluations already in flight.
 *
 * Bounds: ids up to CF_ID_MAX bytes, at most 16M ids per file. Files are read with stdio.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rules_int.h"

#define LIST_MAX_IDS (1u << 24)

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

void cf__idlist_free(cf__idlist *l)
{
    if (l == NULL) {
        return;
    }
    cf_free(l->slots);
    cf_free(l->blob);
    cf_free(l);
}

bool cf__idlist_has(const cf__idlist *l, const char *id)
{
    if (l == NULL || l->n == 0) {
        return false;
    }
    uint32_t pos = (uint32_t)hash_str(id) & l->mask;
    for (;;) {
        uint32_t v = l->slots[pos];
        if (v == 0) {
            return false;
        }
        if (strcmp(l->blob + (v - 1), id) == 0) {
            return true;
        }
        pos = (pos + 1) & l->mask;
    }
}

cf_err cf__idlist_load(const char *path, cf__idlist **out, char *errstr, size_t errstr_size)
{
    cf_err err;
    FILE *f = NULL;
    char *blob = NULL;
    uint32_t *slots = NULL;
    cf__idlist *l = NULL;
    size_t blen = 0, bcap = 0, n = 0;
    char line[4096];
    unsigned long lineno = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        err = cf_err_errno(errno, errstr, errstr_size, "blocked list %s", path);
        goto fail;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            err =
                cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s:%lu: line too long", path, lineno);
            goto fail;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        char *e = p + strlen(p);
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        *e = '\0';
        if (*p == '\0' || *p == '#') {
            continue;
        }
        size_t idl = (size_t)(e - p);
        if (idl > CF_ID_MAX || !cf_utf8_valid(p, idl)) {
            err =
                cf_err_set(CF_E_PARSE, errstr, errstr_size,
                           "%s:%lu: id longer than %d bytes or not UTF-8", path, lineno, CF_ID_MAX);
            goto fail;
        }
        if (n >= LIST_MAX_IDS) {
            err = cf_err_set(CF_E_LIMIT, errstr, errstr_size, "%s: more than %u ids", path,
                             LIST_MAX_IDS);
            goto fail;
        }
        if (blen + idl + 1 > bcap) {
            size_t ncap = bcap == 0 ? 4096 : bcap * 2;
            while (ncap < blen + idl + 1) {
                ncap *= 2;
            }
            char *nb = cf_realloc(blob, ncap);
            if (nb == NULL) {
                err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
            }
            blob = nb;
            bcap = ncap;
        }
        memcpy(blob + blen, p, idl + 1);
        blen += idl + 1;
        n++;
    }
    if (ferror(f)) {
        err = cf_err_errno(errno, errstr, errstr_size, "read %s", path);
        goto fail;
    }
    l = cf_calloc(1, sizeof(*l));
    uint32_t cap = 16;
    while (cap < n * 2) {
        cap <<= 1;
    }
    slots = cf_calloc(cap, sizeof(uint32_t));
    if (l == NULL || slots == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    l->mask = cap - 1;
    l->slots = slots;
    l->blob = blob;
    size_t uniq = 0;
    for (size_t off = 0; off < blen; off += strlen(blob + off) + 1) {
        if (cf__idlist_has(l, blob + off)) {
            continue; /* duplicate line */
        }
        uint32_t pos = (uint32_t)hash_str(blob + off) & l->mask;
        while (slots[pos] != 0) {
            pos = (pos + 1) & l->mask;
        }
        slots[pos] = (uint32_t)off + 1;
        uniq++;
        l->n = uniq;
    }
    l->n = uniq;
    fclose(f);
    *out = l;
    return CF_OK;
fail:
    if (f != NULL) {
        fclose(f);
    }
    cf_free(slots);
    cf_free(blob);
    cf_free(l);
    return err;
}

cf_err cf_rules_reload_lists(cf_rules *r, char *errstr, size_t errstr_size)
{
    cf__idlist *fresh[CF_RULES_MAX] = {NULL};
    cf__idlist *old[CF_RULES_MAX] = {NULL};
    cf_err err = CF_OK;
    pthread_mutex_lock(&r->reload_lock);
    for (size_t i = 0; i < r->n; i++) {
        if (r->rules[i].type != CF_RULE_BLOCKED_PARTY) {
            continue;
        }
        err = cf__idlist_load(r->rules[i].list_path, &fresh[i], errstr, errstr_size);
        if (err != CF_OK) {
            goto out;
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        if (fresh[i] != NULL) {
            old[i] = atomic_exchange(&r->rules[i].list, fresh[i]);
            r->rules[i].st.list_entries = fresh[i]->n;
            r->rules[i].st.list_reloads++;
            fresh[i] = NULL;
        }
    }
    /* Grace period: wait for readers that may still hold an old list. */
    unsigned g = atomic_fetch_add(&r->gen, 1) & 1u;
    while (atomic_load(&r->readers[g]) != 0) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
out:
    for (size_t i = 0; i < r->n; i++) {
        cf__idlist_free(old[i]);
        cf__idlist_free(fresh[i]);
    }
    pthread_mutex_unlock(&r->reload_lock);
    return err;
}
