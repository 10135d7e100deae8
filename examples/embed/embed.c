/*
 * confide as a library: runs a small pipeline (no rules file, 2-party secure
 * aggregation, the audit log) over transactions held in memory, then verifies the audit log
 * it wrote, all through the installed headers and libconfide found with pkg-config:
 *
 *     make                    # cc embed.c $(pkg-config --cflags --libs confide)
 *     ./embed OUTDIR          # exit 0 when the log verifies and holds every event
 *
 * Build against a tree installed elsewhere with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
 * (and LD_LIBRARY_PATH=PREFIX/lib to run it), or with libconfide.a linked in: make STATIC=1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <confide/audit.h>
#include <confide/keys.h>
#include <confide/runtime.h>

/* Twenty-four card payments in one ten-minute window and one group (BE, POS, EUR), so that
 * with min_count 10 the window releases one verified aggregate. */
static char *make_input(size_t *len)
{
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        return NULL;
    }
    n += (size_t)snprintf(buf + n, cap - n,
                          "event_id,ts,account,merchant,amount,currency,type,country,channel\n");
    for (int i = 0; i < 24; i++) {
        n += (size_t)snprintf(buf + n, cap - n,
                              "%d,2026-01-05T09:%02d:%02dZ,C%d,T%d,%d.%02d,EUR,PAYMENT,BE,POS\n", i,
                              i / 4, (i * 7) % 60, 100 + i % 5, 200 + i % 3, 10 + i, i % 100);
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *out = argc > 1 ? argv[1] : "embed-out";
    char err[512] = "", path[4096];
    cf_config *conf = NULL;
    cf_pipeline *p = NULL;
    cf_key *data_key = NULL;
    size_t len = 0;
    char *input = make_input(&len);
    int rc = 1;
    if (input == NULL || cf_config_create(&conf) != CF_OK) {
        fprintf(stderr, "embed: out of memory\n");
        goto done;
    }
    /* every key has a default (docs/CONFIG.md); these are the ones this example cares about */
    const char *settings[][2] = {{"output.dir", out},
                                 {"protect", "lsa"},
                                 {"parties", "2"},
                                 {"window.size_ms", "600000"},
                                 {"window.group_by", "country,channel"},
                                 {"min_count", "10"}};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (cf_config_set(conf, settings[i][0], settings[i][1], err, sizeof(err)) != CF_OK) {
            fprintf(stderr, "embed: %s: %s\n", settings[i][0], err);
            goto done;
        }
    }
    if (cf_pipeline_create(&p, conf, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "embed: %s\n", err);
        goto done;
    }
    cf_pipeline_set_input_buffer(p, input, len);
    cf_summary s;
    if (cf_pipeline_run(p, &s, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "embed: run: %s\n", err);
        goto done;
    }
    char js[1024];
    size_t jn = cf_summary_to_json(&s, js, sizeof(js));
    fwrite(js, 1, jn, stdout);

    /* The auditor's side: verify the log the run wrote, with its keys. */
    char keys[4096], audit[4096];
    snprintf(keys, sizeof(keys), "%s/keys", out);
    snprintf(audit, sizeof(audit), "%s/audit", out);
    uint8_t pk[CF_KEY_SIGN_PK_LEN];
    if (cf_key_load_signing_pub(keys, pk, NULL, NULL, err, sizeof(err)) != CF_OK ||
        cf_key_load(keys, "data.key", &data_key, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "embed: keys: %s\n", err);
        goto done;
    }
    cf_audit_verify_opts vo;
    memset(&vo, 0, sizeof(vo));
    vo.data_key = data_key;
    vo.public_key = pk;
    cf_audit_report rep;
    cf_err e = cf_audit_verify(audit, &vo, &rep, err, sizeof(err));
    printf("{\"verified\":%s,\"events\":%llu,\"leaves\":%llu,\"signed_heads\":%llu,"
           "\"completeness\":%.1f,\"results\":%llu}\n",
           e == CF_OK && rep.ok ? "true" : "false", (unsigned long long)rep.events,
           (unsigned long long)rep.leaves, (unsigned long long)rep.sth_valid, rep.completeness,
           (unsigned long long)s.results);
    snprintf(path, sizeof(path), "%s/results.ndjson", out);
    rc = e == CF_OK && rep.ok && rep.events == s.accepted && s.accepted == 24 && s.results == 1 ? 0
                                                                                                : 1;
done:
    cf_key_destroy(data_key);
    cf_pipeline_destroy(p);
    cf_config_destroy(conf);
    free(input);
    return rc;
}
