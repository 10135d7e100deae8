/* The combiner's result signatures (ressig.h). Used by the combiner thread only. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/keys.h"
#include "ressig.h"

/* Feeds the first @p len bytes of @p path into @p st (a resumed output's surviving prefix). */
static cf_err hash_prefix(const char *path, uint64_t len, crypto_hash_sha256_state *st,
                          char *errstr, size_t errstr_size)
{
    crypto_hash_sha256_init(st);
    if (len == 0) {
        return CF_OK;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cf_err_errno(errno, errstr, errstr_size, "cannot read %s", path);
    }
    char buf[65536];
    while (len > 0) {
        size_t want = len < sizeof(buf) ? (size_t)len : sizeof(buf);
        size_t got = fread(buf, 1, want, f);
        if (got == 0) {
            fclose(f);
            return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "%s is shorter than recorded",
                              path);
        }
        crypto_hash_sha256_update(st, (const uint8_t *)buf, got);
        len -= got;
    }
    fclose(f);
    return CF_OK;
}

cf_err ressig_open(ressig *r, const char *keys_dir, const char *out_dir, const uint8_t log_id[16],
                   const char *params, bool resume, uint64_t sig_len, uint64_t seq,
                   const char *results_path, uint64_t results_len, const char *late_path,
                   uint64_t late_len, char *errstr, size_t errstr_size)
{
    cf_key *k = NULL;
    cf_err err = cf_key_load(keys_dir, "results.key", &k, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    r->sk = sodium_malloc(CF_KEY_SIGN_SK_LEN);
    if (r->sk == NULL) {
        cf_key_destroy(k);
        return CF_E_NOMEM;
    }
    memcpy(r->sk, k->bytes, CF_KEY_SIGN_SK_LEN);
    memcpy(r->key_id, k->id, sizeof(r->key_id));
    cf_key_destroy(k);
    memcpy(r->log_id, log_id, sizeof(r->log_id));
    snprintf(r->params, sizeof(r->params), "%s", params);
    r->results_len = results_len;
    r->late_len = late_len;
    r->seq = seq;
    err = resume
              ? outfile_resume(&r->out, out_dir, "results.sig.ndjson", sig_len, errstr, errstr_size)
              : outfile_open(&r->out, out_dir, "results.sig.ndjson", errstr, errstr_size);
    if (err == CF_OK) {
        err = hash_prefix(results_path, results_len, &r->results, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = hash_prefix(late_path, late_len, &r->late, errstr, errstr_size);
    }
    r->on = err == CF_OK;
    return err;
}

void ressig_feed(ressig *r, bool late, const char *data, size_t len)
{
    if (!r->on) {
        return;
    }
    crypto_hash_sha256_update(late ? &r->late : &r->results, (const uint8_t *)data, len);
    *(late ? &r->late_len : &r->results_len) += len;
}

/* Hex of the digest of everything fed so far (on a copy: the stream goes on). */
static void digest_hex(const crypto_hash_sha256_state *st, char out[65])
{
    crypto_hash_sha256_state c = *st;
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&c, h);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

void ressig_sign(ressig *r, uint64_t events_through)
{
    if (!r->on) {
        return;
    }
    char rh[65], lh[65], lid[33], kid[17], line[1400];
    digest_hex(&r->results, rh);
    digest_hex(&r->late, lh);
    sodium_bin2hex(lid, sizeof(lid), r->log_id, sizeof(r->log_id));
    sodium_bin2hex(kid, sizeof(kid), r->key_id, sizeof(r->key_id));
    int n = snprintf(line, sizeof(line),
                     "{\"seq\":%llu,\"log_id\":\"%s\",\"events_through\":%llu,\"results_to\":%llu,"
                     "\"results_sha256\":\"%s\",\"late_to\":%llu,\"late_sha256\":\"%s\","
                     "\"key_id\":\"%s\",\"params\":%s",
                     (unsigned long long)r->seq, lid, (unsigned long long)events_through,
                     (unsigned long long)r->results_len, rh, (unsigned long long)r->late_len, lh,
                     kid, r->params);
    CF_ASSERT(n > 0 && (size_t)n < sizeof(line) - 200);
    line[n] = '}'; /* the signed text: the line without its signature */
    uint8_t sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const uint8_t *)line, (size_t)n + 1, r->sk);
    char b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), sig, sizeof(sig), sodium_base64_VARIANT_ORIGINAL);
    int m = snprintf(line + n, sizeof(line) - (size_t)n, ",\"sig\":\"%s\"}\n", b64);
    outfile_write(&r->out, line, (size_t)(n + m));
    r->seq++;
}

cf_err ressig_position(ressig *r, uint64_t *len, uint64_t *seq)
{
    *len = 0;
    *seq = r->seq;
    return r->on ? outfile_sync(&r->out, len) : CF_OK;
}

cf_err ressig_commit(ressig *r, char *errstr, size_t errstr_size)
{
    return r->on ? outfile_commit(&r->out, errstr, errstr_size) : CF_OK;
}

void ressig_close(ressig *r)
{
    if (r->on) {
        outfile_abandon(&r->out);
    }
    if (r->sk != NULL) {
        sodium_memzero(r->sk, CF_KEY_SIGN_SK_LEN);
        sodium_free(r->sk);
        r->sk = NULL;
    }
    r->on = false;
}
