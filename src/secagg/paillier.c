/*
 * Paillier (g = n + 1) over GMP: the homomorphic-encryption baseline of the evaluation.
 *
 * Made as fast as honest engineering allows, so that the comparison with LSA is fair:
 *   - g = n + 1, so g^m mod n^2 = 1 + m*n (one multiplication instead of an exponentiation);
 *   - the cost is r^n mod n^2. With the private key (the gateway is trusted and holds it in
 *     our model) it is computed by CRT: r^(n mod p(p-1)) mod p^2 and the same mod q^2, two
 *     half-size exponentiations instead of one full-size one;
 *   - an optional background thread keeps a pool of precomputed r^n values, taking the
 *     exponentiation off the critical path (not off the CPU);
 *   - decryption by CRT with the precomputed constants h_p = L_p(g^(p-1) mod p^2)^-1 mod p.
 * The modular exponentiations run on one of three engines (cf_paillier_set_engine): GMP's
 * mpz_powm_sec (constant time), GMP's mpz_powm, or OpenSSL's BN_mod_exp_mont_consttime with
 * Montgomery contexts precomputed per modulus. OpenSSL was the fastest on the 2-core EPYC VM
 * (bench/results/protect-2026-11-25.md), so it is the default.
 *
 * Thread model: the instance belongs to one thread, except the pool, which a dedicated
 * thread fills under pool_mu. Random r come from libsodium's randombytes.
 */
#include <openssl/bn.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/secagg.h"
#include "secagg_int.h"

struct cf_paillier {
    mpz_t n, n2, g;
    bool priv;
    mpz_t p, q, p2, q2, lambda, mu;
    mpz_t pm1, qm1, hp, hq, pinvq; /* decryption: p-1, q-1, h_p, h_q, p^-1 mod q */
    mpz_t en_p, en_q, p2inv_q2;    /* CRT encryption: n mod p(p-1), n mod q(q-1), p^-2 mod q^2 */
    size_t ct_bytes, n_bytes;
    cf_paillier_engine engine;
    bool crt_encrypt;
    BN_MONT_CTX *mont_p2, *mont_q2, *mont_n2; /* OpenSSL engine; read-only once set */
    /* pool of precomputed r^n mod n^2 */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    pthread_t pool_thread;
    bool pool_running, pool_stop;
    mpz_t *pool;
    size_t pool_cap, pool_n;
    uint64_t from_pool, inline_;
};

static BIGNUM *to_bn(const mpz_t x)
{
    uint8_t buf[1024];
    size_t len = (mpz_sizeinbase(x, 2) + 7) / 8;
    CF_ASSERT(len <= sizeof(buf));
    mpz_export(buf, &len, 1, 1, 1, 0, x);
    BIGNUM *b = BN_bin2bn(buf, (int)len, NULL);
    sodium_memzero(buf, sizeof(buf));
    return b;
}

static BN_MONT_CTX *make_mont(const mpz_t m)
{
    BIGNUM *bm = to_bn(m);
    BN_CTX *ctx = BN_CTX_new();
    BN_MONT_CTX *mc = BN_MONT_CTX_new();
    if (bm == NULL || ctx == NULL || mc == NULL || !BN_MONT_CTX_set(mc, bm, ctx)) {
        BN_MONT_CTX_free(mc);
        mc = NULL;
    }
    BN_free(bm);
    BN_CTX_free(ctx);
    return mc;
}

static void init_all(cf_paillier *pk)
{
    mpz_inits(pk->n, pk->n2, pk->g, pk->p, pk->q, pk->p2, pk->q2, pk->lambda, pk->mu, pk->pm1,
              pk->qm1, pk->hp, pk->hq, pk->pinvq, pk->en_p, pk->en_q, pk->p2inv_q2, NULL);
    pthread_mutex_init(&pk->pool_mu, NULL);
    pthread_cond_init(&pk->pool_cv, NULL);
    pk->engine = CF_PAILLIER_OPENSSL;
}

void cf_paillier_destroy(cf_paillier *pk)
{
    if (pk == NULL) {
        return;
    }
    cf_paillier_pool_stop(pk);
    mpz_clears(pk->n, pk->n2, pk->g, pk->p, pk->q, pk->p2, pk->q2, pk->lambda, pk->mu, pk->pm1,
               pk->qm1, pk->hp, pk->hq, pk->pinvq, pk->en_p, pk->en_q, pk->p2inv_q2, NULL);
    pthread_mutex_destroy(&pk->pool_mu);
    pthread_cond_destroy(&pk->pool_cv);
    BN_MONT_CTX_free(pk->mont_p2);
    BN_MONT_CTX_free(pk->mont_q2);
    BN_MONT_CTX_free(pk->mont_n2);
    cf_free(pk);
}

static void set_public(cf_paillier *pk)
{
    mpz_mul(pk->n2, pk->n, pk->n);
    mpz_add_ui(pk->g, pk->n, 1);
    BN_MONT_CTX_free(pk->mont_n2);
    pk->mont_n2 = mpz_odd_p(pk->n2) ? make_mont(pk->n2) : NULL;
    pk->n_bytes = (mpz_sizeinbase(pk->n, 2) + 7) / 8;
    pk->ct_bytes = (mpz_sizeinbase(pk->n2, 2) + 7) / 8;
}

/* L_x(u) = (u - 1) / x */
static void lfun(mpz_t out, const mpz_t u, const mpz_t x)
{
    mpz_sub_ui(out, u, 1);
    mpz_divexact(out, out, x);
}

static cf_err set_private(cf_paillier *pk, char *errstr, size_t errstr_size)
{
    mpz_t t, u;
    cf_err err = CF_OK;
    mpz_inits(t, u, NULL);
    if (mpz_cmp(pk->p, pk->q) == 0 || mpz_cmp_ui(pk->p, 3) < 0 || mpz_cmp_ui(pk->q, 3) < 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "paillier: p and q must be distinct "
                         "odd primes");
        goto done;
    }
    mpz_mul(pk->n, pk->p, pk->q);
    set_public(pk);
    mpz_sub_ui(pk->pm1, pk->p, 1);
    mpz_sub_ui(pk->qm1, pk->q, 1);
    mpz_gcd(t, pk->n, pk->pm1);
    mpz_gcd(u, pk->n, pk->qm1);
    if (mpz_cmp_ui(t, 1) != 0 || mpz_cmp_ui(u, 1) != 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "paillier: gcd(n, phi(n)) != 1");
        goto done;
    }
    mpz_lcm(pk->lambda, pk->pm1, pk->qm1);
    /* mu = L(g^lambda mod n^2)^-1 mod n */
    mpz_powm(t, pk->g, pk->lambda, pk->n2);
    lfun(t, t, pk->n);
    if (mpz_invert(pk->mu, t, pk->n) == 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "paillier: mu does not exist");
        goto done;
    }
    mpz_mul(pk->p2, pk->p, pk->p);
    mpz_mul(pk->q2, pk->q, pk->q);
    /* h_p = L_p(g^(p-1) mod p^2)^-1 mod p, and the same for q */
    mpz_powm(t, pk->g, pk->pm1, pk->p2);
    lfun(t, t, pk->p);
    if (mpz_invert(pk->hp, t, pk->p) == 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "paillier: h_p does not exist");
        goto done;
    }
    mpz_powm(t, pk->g, pk->qm1, pk->q2);
    lfun(t, t, pk->q);
    if (mpz_invert(pk->hq, t, pk->q) == 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "paillier: h_q does not exist");
        goto done;
    }
    mpz_invert(pk->pinvq, pk->p, pk->q);
    /* exponents for CRT encryption: the order of (Z/p^2)^* is p(p-1) */
    mpz_mul(t, pk->p, pk->pm1);
    mpz_mod(pk->en_p, pk->n, t);
    mpz_mul(t, pk->q, pk->qm1);
    mpz_mod(pk->en_q, pk->n, t);
    mpz_invert(pk->p2inv_q2, pk->p2, pk->q2);
    BN_MONT_CTX_free(pk->mont_p2);
    BN_MONT_CTX_free(pk->mont_q2);
    pk->mont_p2 = make_mont(pk->p2);
    pk->mont_q2 = make_mont(pk->q2);
    pk->priv = true;
    pk->crt_encrypt = true;
done:
    mpz_clears(t, u, NULL);
    return err;
}

static cf_err set_hex(mpz_t x, const char *hex)
{
    if (hex == NULL || *hex == '\0' || mpz_set_str(x, hex, 16) != 0 || mpz_sgn(x) < 0) {
        return CF_E_PARSE;
    }
    return CF_OK;
}

cf_err cf_paillier_from_pq_hex(cf_paillier **out, const char *p_hex, const char *q_hex,
                               char *errstr, size_t errstr_size)
{
    cf_paillier *pk = cf_calloc(1, sizeof(*pk));
    cf_err err;
    *out = NULL;
    if (pk == NULL) {
        return CF_E_NOMEM;
    }
    init_all(pk);
    if (set_hex(pk->p, p_hex) != CF_OK || set_hex(pk->q, q_hex) != CF_OK) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "paillier: bad hex for p or q");
        goto fail;
    }
    if ((err = set_private(pk, errstr, errstr_size)) != CF_OK) {
        goto fail;
    }
    *out = pk;
    return CF_OK;
fail:
    cf_paillier_destroy(pk);
    return err;
}

cf_err cf_paillier_from_n_hex(cf_paillier **out, const char *n_hex, char *errstr,
                              size_t errstr_size)
{
    cf_paillier *pk = cf_calloc(1, sizeof(*pk));
    *out = NULL;
    if (pk == NULL) {
        return CF_E_NOMEM;
    }
    init_all(pk);
    if (set_hex(pk->n, n_hex) != CF_OK || mpz_cmp_ui(pk->n, 15) < 0) {
        cf_paillier_destroy(pk);
        return cf_err_set(CF_E_PARSE, errstr, errstr_size, "paillier: bad hex for n");
    }
    set_public(pk);
    *out = pk;
    return CF_OK;
}

static void random_below(mpz_t r, const mpz_t bound, size_t bytes)
{
    uint8_t buf[1024];
    CF_ASSERT(bytes + 16 <= sizeof(buf));
    /* 128 extra bits make the bias of the reduction negligible */
    randombytes_buf(buf, bytes + 16);
    mpz_import(r, bytes + 16, 1, 1, 1, 0, buf);
    mpz_mod(r, r, bound);
    sodium_memzero(buf, sizeof(buf));
}

static void random_prime(mpz_t p, unsigned bits)
{
    uint8_t buf[512];
    size_t bytes = (bits + 7) / 8;
    CF_ASSERT(bytes <= sizeof(buf));
    randombytes_buf(buf, bytes);
    mpz_import(p, bytes, 1, 1, 1, 0, buf);
    mpz_fdiv_r_2exp(p, p, bits);
    mpz_setbit(p, bits - 1);
    mpz_setbit(p, bits - 2); /* p*q then has exactly 2*bits bits */
    mpz_nextprime(p, p);
    sodium_memzero(buf, sizeof(buf));
}

cf_err cf_paillier_keygen(cf_paillier **out, unsigned bits, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    if (bits < 256 || bits > 4096 || bits % 2 != 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "paillier: modulus bits must be even, 256..4096 (got %u)", bits);
    }
    cf_paillier *pk = cf_calloc(1, sizeof(*pk));
    if (pk == NULL) {
        return CF_E_NOMEM;
    }
    init_all(pk);
    for (int tries = 0; tries < 16; tries++) {
        random_prime(pk->p, bits / 2);
        random_prime(pk->q, bits / 2);
        if (mpz_cmp(pk->p, pk->q) == 0 || mpz_sizeinbase(pk->p, 2) != bits / 2 ||
            mpz_sizeinbase(pk->q, 2) != bits / 2) {
            continue;
        }
        if (set_private(pk, NULL, 0) == CF_OK && mpz_sizeinbase(pk->n, 2) == bits) {
            *out = pk;
            return CF_OK;
        }
    }
    cf_paillier_destroy(pk);
    return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "paillier: key generation failed");
}

size_t cf_paillier_ct_bytes(const cf_paillier *pk)
{
    return pk->ct_bytes;
}

void cf_paillier_set_engine(cf_paillier *pk, cf_paillier_engine e)
{
    CF_ASSERT(!pk->pool_running); /* the pool thread reads the engine */
    pk->engine = e;
}

/* out = b^e mod m with OpenSSL; false when OpenSSL fails (the caller falls back to GMP). */
static bool powm_openssl(const cf_paillier *pk, mpz_t out, const mpz_t b, const mpz_t e,
                         const mpz_t m)
{
    BN_MONT_CTX *mc = m == pk->p2   ? pk->mont_p2
                      : m == pk->q2 ? pk->mont_q2
                      : m == pk->n2 ? pk->mont_n2
                                    : NULL;
    BIGNUM *bb = to_bn(b), *be = to_bn(e), *bm = to_bn(m), *br = BN_new();
    BN_CTX *ctx = BN_CTX_new(); /* per call: the pool thread exponentiates concurrently */
    bool ok = bb != NULL && be != NULL && bm != NULL && br != NULL && ctx != NULL &&
              BN_mod_exp_mont_consttime(br, bb, be, bm, ctx, mc) == 1;
    if (ok) {
        uint8_t buf[1024];
        int len = BN_bn2bin(br, buf);
        mpz_import(out, (size_t)len, 1, 1, 1, 0, buf);
        sodium_memzero(buf, sizeof(buf));
    }
    BN_clear_free(bb);
    BN_free(be);
    BN_free(bm);
    BN_clear_free(br);
    BN_CTX_free(ctx);
    return ok;
}

void cf_paillier_set_crt_encrypt(cf_paillier *pk, bool on)
{
    CF_ASSERT(!pk->pool_running); /* the pool thread reads the flag */
    pk->crt_encrypt = on && pk->priv;
}

static void powm(const cf_paillier *pk, mpz_t out, const mpz_t b, const mpz_t e, const mpz_t m)
{
    if (pk->engine == CF_PAILLIER_OPENSSL && mpz_odd_p(m) && powm_openssl(pk, out, b, e, m)) {
        return;
    }
    /* mpz_powm_sec needs an odd modulus and a positive exponent: true for n, p^2, q^2 */
    if (pk->engine != CF_PAILLIER_GMP && mpz_sgn(e) > 0 && mpz_odd_p(m)) {
        mpz_powm_sec(out, b, e, m);
    } else {
        mpz_powm(out, b, e, m);
    }
}

/* r^n mod n^2 for a given r in [1, n). */
static void r_to_n(const cf_paillier *pk, mpz_t out, const mpz_t r)
{
    if (!pk->crt_encrypt) {
        powm(pk, out, r, pk->n, pk->n2);
        return;
    }
    mpz_t a, b;
    mpz_inits(a, b, NULL);
    mpz_mod(a, r, pk->p2);
    powm(pk, a, a, pk->en_p, pk->p2);
    mpz_mod(b, r, pk->q2);
    powm(pk, b, b, pk->en_q, pk->q2);
    /* x = a + p^2 * ((b - a) * p^-2 mod q^2) */
    mpz_sub(b, b, a);
    mpz_mul(b, b, pk->p2inv_q2);
    mpz_mod(b, b, pk->q2);
    mpz_mul(b, b, pk->p2);
    mpz_add(out, a, b);
    mpz_clears(a, b, NULL);
}

/* A fresh random r^n mod n^2 with r a unit mod n. */
static void fresh_rn(const cf_paillier *pk, mpz_t out)
{
    mpz_t r, g;
    mpz_inits(r, g, NULL);
    for (;;) {
        random_below(r, pk->n, pk->n_bytes);
        mpz_gcd(g, r, pk->n);
        if (mpz_sgn(r) != 0 && mpz_cmp_ui(g, 1) == 0) {
            break;
        }
    }
    r_to_n(pk, out, r);
    mpz_clears(r, g, NULL);
}

/* c = (1 + m n) * rn mod n^2 */
static void finish_encrypt(const cf_paillier *pk, const mpz_t m, const mpz_t rn, mpz_t c)
{
    mpz_t t;
    mpz_init(t);
    mpz_mul(t, m, pk->n);
    mpz_add_ui(t, t, 1);
    mpz_mul(t, t, rn);
    mpz_mod(c, t, pk->n2);
    mpz_clear(t);
}

static bool take_pooled(cf_paillier *pk, mpz_t rn)
{
    bool got = false;
    if (!pk->pool_running) {
        return false;
    }
    pthread_mutex_lock(&pk->pool_mu);
    if (pk->pool_n > 0) {
        pk->pool_n--;
        mpz_swap(rn, pk->pool[pk->pool_n]);
        got = true;
        pthread_cond_signal(&pk->pool_cv);
    }
    pthread_mutex_unlock(&pk->pool_mu);
    return got;
}

cf_err cf__paillier_encrypt_mpz(cf_paillier *pk, const mpz_t m, mpz_t c)
{
    if (mpz_sgn(m) < 0 || mpz_cmp(m, pk->n) >= 0) {
        return CF_E_INVAL;
    }
    mpz_t rn;
    mpz_init(rn);
    if (take_pooled(pk, rn)) {
        pk->from_pool++;
    } else {
        fresh_rn(pk, rn);
        pk->inline_++;
    }
    finish_encrypt(pk, m, rn, c);
    mpz_clear(rn);
    return CF_OK;
}

cf_err cf__paillier_decrypt_mpz(cf_paillier *pk, const mpz_t c, mpz_t m)
{
    if (!pk->priv || mpz_sgn(c) <= 0 || mpz_cmp(c, pk->n2) >= 0) {
        return CF_E_INVAL;
    }
    mpz_t mp, mq;
    mpz_inits(mp, mq, NULL);
    mpz_mod(mp, c, pk->p2);
    powm(pk, mp, mp, pk->pm1, pk->p2);
    lfun(mp, mp, pk->p);
    mpz_mul(mp, mp, pk->hp);
    mpz_mod(mp, mp, pk->p);
    mpz_mod(mq, c, pk->q2);
    powm(pk, mq, mq, pk->qm1, pk->q2);
    lfun(mq, mq, pk->q);
    mpz_mul(mq, mq, pk->hq);
    mpz_mod(mq, mq, pk->q);
    /* m = mp + p * ((mq - mp) * p^-1 mod q) */
    mpz_sub(mq, mq, mp);
    mpz_mul(mq, mq, pk->pinvq);
    mpz_mod(mq, mq, pk->q);
    mpz_mul(mq, mq, pk->p);
    mpz_add(m, mp, mq);
    mpz_clears(mp, mq, NULL);
    return CF_OK;
}

void cf__paillier_mulmod(cf_paillier *pk, mpz_t acc, const mpz_t c)
{
    mpz_mul(acc, acc, c);
    mpz_mod(acc, acc, pk->n2);
}

void cf__paillier_import(mpz_t x, const uint8_t *buf, size_t len)
{
    mpz_import(x, len, 1, 1, 1, 0, buf);
}

void cf__paillier_export(const mpz_t x, uint8_t *buf, size_t len)
{
    size_t need = (mpz_sizeinbase(x, 2) + 7) / 8;
    CF_ASSERT(need <= len);
    memset(buf, 0, len);
    if (mpz_sgn(x) != 0) {
        mpz_export(buf + (len - need), NULL, 1, 1, 1, 0, x);
    }
}

/* ---- hex helpers (the shared vectors) ----------------------------------------------------- */

static cf_err put_hex(const mpz_t x, char *out, size_t out_size)
{
    if (mpz_sizeinbase(x, 16) + 2 > out_size) {
        return CF_E_LIMIT;
    }
    mpz_get_str(out, 16, x);
    return CF_OK;
}

cf_err cf_paillier_encrypt_hex(cf_paillier *pk, const char *m_hex, const char *r_hex, char *out,
                               size_t out_size)
{
    mpz_t m, r, g, rn, c;
    cf_err err = CF_OK;
    mpz_inits(m, r, g, rn, c, NULL);
    if (set_hex(m, m_hex) != CF_OK || set_hex(r, r_hex) != CF_OK) {
        err = CF_E_PARSE;
        goto done;
    }
    mpz_gcd(g, r, pk->n);
    if (mpz_cmp(m, pk->n) >= 0 || mpz_sgn(r) == 0 || mpz_cmp(r, pk->n) >= 0 ||
        mpz_cmp_ui(g, 1) != 0) {
        err = CF_E_INVAL;
        goto done;
    }
    r_to_n(pk, rn, r);
    finish_encrypt(pk, m, rn, c);
    err = put_hex(c, out, out_size);
done:
    mpz_clears(m, r, g, rn, c, NULL);
    return err;
}

cf_err cf_paillier_decrypt_hex(cf_paillier *pk, const char *c_hex, bool crt, char *out,
                               size_t out_size)
{
    mpz_t c, m;
    cf_err err = CF_OK;
    mpz_inits(c, m, NULL);
    if (set_hex(c, c_hex) != CF_OK) {
        err = CF_E_PARSE;
        goto done;
    }
    if (crt) {
        err = cf__paillier_decrypt_mpz(pk, c, m);
    } else if (!pk->priv || mpz_sgn(c) <= 0 || mpz_cmp(c, pk->n2) >= 0) {
        err = CF_E_INVAL;
    } else {
        powm(pk, m, c, pk->lambda, pk->n2);
        lfun(m, m, pk->n);
        mpz_mul(m, m, pk->mu);
        mpz_mod(m, m, pk->n);
    }
    if (err == CF_OK) {
        err = put_hex(m, out, out_size);
    }
done:
    mpz_clears(c, m, NULL);
    return err;
}

cf_err cf_paillier_add_hex(cf_paillier *pk, const char *c1_hex, const char *c2_hex, char *out,
                           size_t out_size)
{
    mpz_t a, b;
    cf_err err = CF_OK;
    mpz_inits(a, b, NULL);
    if (set_hex(a, c1_hex) != CF_OK || set_hex(b, c2_hex) != CF_OK) {
        err = CF_E_PARSE;
    } else if (mpz_cmp(a, pk->n2) >= 0 || mpz_cmp(b, pk->n2) >= 0) {
        err = CF_E_INVAL;
    } else {
        cf__paillier_mulmod(pk, a, b);
        err = put_hex(a, out, out_size);
    }
    mpz_clears(a, b, NULL);
    return err;
}

cf_err cf_paillier_mult_hex(cf_paillier *pk, const char *c1_hex, const char *k_hex, char *out,
                            size_t out_size)
{
    mpz_t a, k;
    cf_err err = CF_OK;
    mpz_inits(a, k, NULL);
    if (set_hex(a, c1_hex) != CF_OK || set_hex(k, k_hex) != CF_OK) {
        err = CF_E_PARSE;
    } else if (mpz_cmp(a, pk->n2) >= 0) {
        err = CF_E_INVAL;
    } else {
        mpz_powm(a, a, k, pk->n2); /* public operation: no need for constant time */
        err = put_hex(a, out, out_size);
    }
    mpz_clears(a, k, NULL);
    return err;
}

cf_err cf_paillier_param_hex(const cf_paillier *pk, const char *name, char *out, size_t out_size)
{
    const mpz_t *x = NULL;
    if (strcmp(name, "n") == 0) {
        x = &pk->n;
    } else if (strcmp(name, "g") == 0) {
        x = &pk->g;
    } else if (pk->priv) {
        if (strcmp(name, "lambda") == 0) {
            x = &pk->lambda;
        } else if (strcmp(name, "mu") == 0) {
            x = &pk->mu;
        } else if (strcmp(name, "crt_lp") == 0) {
            x = &pk->pm1;
        } else if (strcmp(name, "crt_lq") == 0) {
            x = &pk->qm1;
        } else if (strcmp(name, "crt_mp") == 0) {
            x = &pk->hp;
        } else if (strcmp(name, "crt_mq") == 0) {
            x = &pk->hq;
        }
    }
    if (x == NULL) {
        return CF_E_INVAL;
    }
    return put_hex(*x, out, out_size);
}

cf_err cf_paillier_encrypt_i64(cf_paillier *pk, int64_t v, uint8_t *ct)
{
    mpz_t m, c;
    mpz_inits(m, c, NULL);
    if (v >= 0) {
        mpz_set_ui(m, (unsigned long)v);
    } else {
        mpz_set_ui(m, (unsigned long)(-(v + 1)) + 1UL);
        mpz_sub(m, pk->n, m);
    }
    cf_err err = cf__paillier_encrypt_mpz(pk, m, c);
    if (err == CF_OK) {
        cf__paillier_export(c, ct, pk->ct_bytes);
    }
    mpz_clears(m, c, NULL);
    return err;
}

/* ---- pool ---------------------------------------------------------------------------------- */

static void *pool_main(void *arg)
{
    cf_paillier *pk = arg;
    mpz_t rn;
    mpz_init(rn);
    pthread_mutex_lock(&pk->pool_mu);
    while (!pk->pool_stop) {
        if (pk->pool_n >= pk->pool_cap) {
            pthread_cond_wait(&pk->pool_cv, &pk->pool_mu);
            continue;
        }
        pthread_mutex_unlock(&pk->pool_mu);
        fresh_rn(pk, rn);
        pthread_mutex_lock(&pk->pool_mu);
        if (pk->pool_n < pk->pool_cap) {
            mpz_swap(pk->pool[pk->pool_n], rn);
            pk->pool_n++;
        }
    }
    pthread_mutex_unlock(&pk->pool_mu);
    mpz_clear(rn);
    return NULL;
}

cf_err cf_paillier_pool_start(cf_paillier *pk, size_t size)
{
    if (pk->pool_running || size == 0 || size > 65536) {
        return CF_E_INVAL;
    }
    pk->pool = cf_calloc(size, sizeof(mpz_t));
    if (pk->pool == NULL) {
        return CF_E_NOMEM;
    }
    for (size_t i = 0; i < size; i++) {
        mpz_init(pk->pool[i]);
    }
    pk->pool_cap = size;
    pk->pool_n = 0;
    pk->pool_stop = false;
    if (pthread_create(&pk->pool_thread, NULL, pool_main, pk) != 0) {
        for (size_t i = 0; i < size; i++) {
            mpz_clear(pk->pool[i]);
        }
        cf_free(pk->pool);
        pk->pool = NULL;
        return CF_E_NOMEM;
    }
    pk->pool_running = true;
    return CF_OK;
}

void cf_paillier_pool_stop(cf_paillier *pk)
{
    if (!pk->pool_running) {
        return;
    }
    pthread_mutex_lock(&pk->pool_mu);
    pk->pool_stop = true;
    pthread_cond_broadcast(&pk->pool_cv);
    pthread_mutex_unlock(&pk->pool_mu);
    pthread_join(pk->pool_thread, NULL);
    for (size_t i = 0; i < pk->pool_cap; i++) {
        mpz_clear(pk->pool[i]);
    }
    cf_free(pk->pool);
    pk->pool = NULL;
    pk->pool_cap = pk->pool_n = 0;
    pk->pool_running = false;
}

void cf_paillier_pool_stats(const cf_paillier *pk, uint64_t *from_pool, uint64_t *inline_)
{
    *from_pool = pk->from_pool;
    *inline_ = pk->inline_;
}
