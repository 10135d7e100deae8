/*
 * The protector interface (STYLE.md section 5) and its three implementations:
 *   plain     no protection: one party receives the values (the evaluation's floor);
 *   lsa       LSA shares with seed compression and MACs (the default);
 *   paillier  one aggregator adds Paillier ciphertexts, the combiner decrypts (baseline).
 * Each instance covers gateway, party and combiner roles of one scheme and belongs to one
 * thread. Payloads and accumulators are flat byte arrays of the sizes the ops report, so
 * rings, the window operator and the transport can move them without knowing the scheme.
 *
 * Paillier packs the dim components of an event into one plaintext (slots of 192 bits; the
 * signed components carry an offset of 2^63 so that slot sums never borrow), so one
 * encryption protects count and amount together -- the strongest honest baseline.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/secagg.h"
#include "secagg_int.h"

static cf_err check_conf(const cf_protect_conf *c, char *errstr, size_t errstr_size)
{
    if (c == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "protector configuration missing");
    }
    if (c->sa.dim != CF_SA_DIM_DEFAULT || c->sa.parties < CF_KEY_PARTIES_MIN ||
        c->sa.parties > CF_KEY_PARTIES_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "protector: parties must be 2..8 and dim %d", CF_SA_DIM_DEFAULT);
    }
    return CF_OK;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* ---- plain ------------------------------------------------------------------------------- */

typedef struct plain_state {
    unsigned dim;
    uint64_t min_count;
} plain_state;

static cf_err plain_create(void **state, const cf_protect_conf *conf, char *errstr,
                           size_t errstr_size)
{
    cf_err err = check_conf(conf, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    plain_state *s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        return CF_E_NOMEM;
    }
    s->dim = conf->sa.dim;
    s->min_count = conf->sa.min_count;
    *state = s;
    return CF_OK;
}

static unsigned one_party(const void *state)
{
    (void)state;
    return 1;
}

static size_t plain_payload_size(const void *state, unsigned party)
{
    const plain_state *s = state;
    return party == 0 ? 8 * s->dim : 0;
}

static size_t plain_acc_size(const void *state)
{
    const plain_state *s = state;
    return 8 * s->dim;
}

static cf_err plain_protect(void *state, uint64_t seq, const int64_t *vals,
                            uint8_t *const *payloads)
{
    plain_state *s = state;
    (void)seq;
    for (unsigned j = 0; j < s->dim; j++) {
        put_u64(payloads[0] + 8 * j, (uint64_t)vals[j]);
    }
    return CF_OK;
}

static void plain_acc_zero(void *state, void *acc)
{
    memset(acc, 0, plain_acc_size(state));
}

static cf_err plain_absorb(void *state, unsigned party, uint64_t seq, const uint8_t *payload,
                           void *acc)
{
    plain_state *s = state;
    int64_t sums[CF_SA_DIM_MAX];
    (void)seq;
    if (party != 0) {
        return CF_E_INVAL;
    }
    memcpy(sums, acc, 8 * s->dim);
    for (unsigned j = 0; j < s->dim; j++) {
        if (!cf_add_i64(sums[j], (int64_t)get_u64(payload + 8 * j), &sums[j])) {
            return CF_E_OVERFLOW;
        }
    }
    memcpy(acc, sums, 8 * s->dim);
    return CF_OK;
}

static cf_err plain_combine(void *state, int64_t window_id, const uint8_t key[16],
                            const void *const *accs, cf_sa_result *out, char *errstr,
                            size_t errstr_size)
{
    plain_state *s = state;
    (void)window_id;
    (void)key;
    (void)errstr;
    (void)errstr_size;
    memset(out, 0, sizeof(*out));
    out->dim = s->dim;
    memcpy(out->v, accs[0], 8 * s->dim);
    out->verified = false; /* nothing to verify: plain has no MAC */
    out->released = out->v[CF_SA_C_COUNT] >= 0 && (uint64_t)out->v[CF_SA_C_COUNT] >= s->min_count;
    if (!out->released) {
        memset(out->v, 0, sizeof(out->v));
    }
    return CF_OK;
}

static void plain_destroy(void *state)
{
    cf_free(state);
}

const cf_protector_ops cf_protect_plain_ops = {
    .abi_version = CF_PROTECT_ABI,
    .name = "plain",
    .create = plain_create,
    .parties = one_party,
    .payload_size = plain_payload_size,
    .acc_size = plain_acc_size,
    .protect = plain_protect,
    .acc_zero = plain_acc_zero,
    .absorb = plain_absorb,
    .combine = plain_combine,
    .destroy = plain_destroy,
};

/* ---- lsa --------------------------------------------------------------------------------- */

typedef struct lsa_state {
    unsigned k, dim;
    cf_sa_gateway *gw;
    cf_sa_combiner *comb;
    cf_sa_party *party[CF_KEY_PARTIES_MAX];
} lsa_state;

static void lsa_destroy(void *state)
{
    lsa_state *s = state;
    if (s == NULL) {
        return;
    }
    cf_sa_gateway_destroy(s->gw);
    cf_sa_combiner_destroy(s->comb);
    for (unsigned i = 0; i < CF_KEY_PARTIES_MAX; i++) {
        cf_sa_party_destroy(s->party[i]);
    }
    cf_free(s);
}

static cf_err lsa_create(void **state, const cf_protect_conf *conf, char *errstr,
                         size_t errstr_size)
{
    cf_err err = check_conf(conf, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    if (conf->gateway_key == NULL && conf->combiner_key == NULL && conf->party_key == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "lsa needs gateway.key, combiner.key or a party key");
    }
    if (conf->ctx == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "lsa needs the context its masks are bound to (log and run ids)");
    }
    lsa_state *s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        return CF_E_NOMEM;
    }
    s->k = conf->sa.parties;
    s->dim = conf->sa.dim;
    if (conf->gateway_key != NULL) {
        err = cf_sa_gateway_create(&s->gw, conf->gateway_key, &conf->sa, errstr, errstr_size);
    }
    if (err == CF_OK && conf->combiner_key != NULL) {
        err = cf_sa_combiner_create(&s->comb, conf->combiner_key, &conf->sa, errstr, errstr_size);
    }
    /* Party 0 needs no key. In the embedded mode every party runs here and takes its seed
     * from the gateway key; a lone party i >= 1 brings its own party-<i>.key. */
    for (unsigned i = 0; err == CF_OK && i < s->k; i++) {
        const cf_key *seed = conf->gateway_key;
        if (i >= 1 && conf->party_key != NULL && conf->party_index == i) {
            seed = conf->party_key;
        }
        if (i == 0 || seed != NULL) {
            err = cf_sa_party_create(&s->party[i], i, i == 0 ? NULL : seed, &conf->sa, errstr,
                                     errstr_size);
        }
    }
    if (err != CF_OK) {
        lsa_destroy(s);
        return err;
    }
    if (s->gw != NULL) {
        cf_sa_gateway_bind(s->gw, conf->ctx);
    }
    for (unsigned i = 0; i < s->k; i++) {
        if (s->party[i] != NULL) {
            cf_sa_party_bind(s->party[i], conf->ctx);
        }
    }
    *state = s;
    return CF_OK;
}

static unsigned lsa_parties(const void *state)
{
    const lsa_state *s = state;
    return s->k;
}

static size_t lsa_payload_size(const void *state, unsigned party)
{
    const lsa_state *s = state;
    return party == 0 ? 16 * s->dim : 0; /* parties >= 1: metadata only */
}

static size_t lsa_acc_size(const void *state)
{
    (void)state;
    return sizeof(cf_sa_vec);
}

static cf_err lsa_protect(void *state, uint64_t seq, const int64_t *vals, uint8_t *const *payloads)
{
    lsa_state *s = state;
    cf_sa_vec sh;
    if (s->gw == NULL) {
        return CF_E_STATE;
    }
    /* protectors use one alpha per key epoch (mac_period_us 0 in the bench): no event time */
    cf_err err = cf_sa_gateway_split(s->gw, 0, seq, vals, &sh);
    if (err != CF_OK) {
        return err;
    }
    for (unsigned j = 0; j < s->dim; j++) {
        put_u64(payloads[0] + 8 * j, sh.v[j]);
        put_u64(payloads[0] + 8 * (s->dim + j), sh.mac[j]);
    }
    sodium_memzero(&sh, sizeof(sh));
    return CF_OK;
}

static void lsa_acc_zero(void *state, void *acc)
{
    (void)state;
    cf_sa_vec_zero(acc);
}

static cf_err lsa_absorb(void *state, unsigned party, uint64_t seq, const uint8_t *payload,
                         void *acc)
{
    lsa_state *s = state;
    cf_sa_vec sh, in;
    if (party >= s->k) {
        return CF_E_INVAL;
    }
    if (party == 0) {
        memset(&in, 0, sizeof(in));
        for (unsigned j = 0; j < s->dim; j++) {
            in.v[j] = get_u64(payload + 8 * j);
            in.mac[j] = get_u64(payload + 8 * (s->dim + j));
            if (in.v[j] >= CF_SA_P || in.mac[j] >= CF_SA_P) {
                return CF_E_CORRUPT;
            }
        }
        cf_sa_party_share(s->party[0], seq, &in, &sh);
    } else {
        if (s->party[party] == NULL) {
            return CF_E_STATE; /* this instance has no seed for that party */
        }
        cf_sa_party_share(s->party[party], seq, NULL, &sh);
    }
    cf_sa_vec_add(acc, &sh);
    return CF_OK;
}

static cf_err lsa_combine(void *state, int64_t window_id, const uint8_t key[16],
                          const void *const *accs, cf_sa_result *out, char *errstr,
                          size_t errstr_size)
{
    lsa_state *s = state;
    cf_sa_vec partials[CF_KEY_PARTIES_MAX];
    if (s->comb == NULL) {
        return CF_E_STATE;
    }
    for (unsigned i = 0; i < s->k; i++) {
        memcpy(&partials[i], accs[i], sizeof(cf_sa_vec));
    }
    cf_err err = cf_sa_combine(s->comb, window_id, key, partials, s->k, out, errstr, errstr_size);
    sodium_memzero(partials, sizeof(partials));
    return err;
}

const cf_protector_ops cf_protect_lsa_ops = {
    .abi_version = CF_PROTECT_ABI,
    .name = "lsa",
    .create = lsa_create,
    .parties = lsa_parties,
    .payload_size = lsa_payload_size,
    .acc_size = lsa_acc_size,
    .protect = lsa_protect,
    .acc_zero = lsa_acc_zero,
    .absorb = lsa_absorb,
    .combine = lsa_combine,
    .destroy = lsa_destroy,
};

/* ---- paillier ---------------------------------------------------------------------------- */

#define SLOT_BITS 192

typedef struct pai_state {
    unsigned dim;
    uint64_t min_count;
    cf_paillier *pk;
    size_t ct;
    mpz_t m, c, a; /* scratch */
} pai_state;

static void pai_destroy(void *state)
{
    pai_state *s = state;
    if (s == NULL) {
        return;
    }
    cf_paillier_destroy(s->pk);
    mpz_clears(s->m, s->c, s->a, NULL);
    cf_free(s);
}

static cf_err pai_create(void **state, const cf_protect_conf *conf, char *errstr,
                         size_t errstr_size)
{
    cf_err err = check_conf(conf, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    unsigned bits = conf->paillier_bits == 0 ? 2048 : conf->paillier_bits;
    if (conf->paillier_engine < CF_PAILLIER_OPENSSL || conf->paillier_engine > CF_PAILLIER_GMP) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "paillier: unknown engine %d",
                          conf->paillier_engine);
    }
    if (bits < SLOT_BITS * CF_SA_DIM_MAX + 64) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "paillier: %u-bit modulus too small for %d packed slots", bits,
                          CF_SA_DIM_MAX);
    }
    pai_state *s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        return CF_E_NOMEM;
    }
    mpz_inits(s->m, s->c, s->a, NULL);
    s->dim = conf->sa.dim;
    s->min_count = conf->sa.min_count;
    err = cf_paillier_keygen(&s->pk, bits, errstr, errstr_size);
    if (err == CF_OK) {
        cf_paillier_set_engine(s->pk, (cf_paillier_engine)conf->paillier_engine);
    }
    if (err == CF_OK && conf->paillier_pool > 0) {
        err = cf_paillier_pool_start(s->pk, conf->paillier_pool);
    }
    if (err != CF_OK) {
        pai_destroy(s);
        return err;
    }
    s->ct = cf_paillier_ct_bytes(s->pk);
    *state = s;
    return CF_OK;
}

static size_t pai_payload_size(const void *state, unsigned party)
{
    const pai_state *s = state;
    return party == 0 ? s->ct : 0;
}

static size_t pai_acc_size(const void *state)
{
    const pai_state *s = state;
    return s->ct;
}

static cf_err pai_protect(void *state, uint64_t seq, const int64_t *vals, uint8_t *const *payloads)
{
    pai_state *s = state;
    (void)seq;
    if (vals[CF_SA_C_COUNT] < 0) {
        return CF_E_OVERFLOW;
    }
    /* m = sum_j slot_j << (192 j), slot_0 = count, slot_j = v_j + 2^63 (j >= 1) */
    mpz_set_ui(s->m, 0);
    for (unsigned j = s->dim; j-- > 0;) {
        mpz_mul_2exp(s->m, s->m, SLOT_BITS);
        uint64_t slot = j == 0 ? (uint64_t)vals[0] : (uint64_t)vals[j] ^ (UINT64_C(1) << 63);
        mpz_add_ui(s->m, s->m, (unsigned long)slot);
    }
    cf_err err = cf__paillier_encrypt_mpz(s->pk, s->m, s->c);
    if (err == CF_OK) {
        cf__paillier_export(s->c, payloads[0], s->ct);
    }
    return err;
}

static void pai_acc_zero(void *state, void *acc)
{
    pai_state *s = state;
    /* E(0) with r = 1 is the ciphertext 1: the neutral element of the product */
    memset(acc, 0, s->ct);
    ((uint8_t *)acc)[s->ct - 1] = 1;
}

static cf_err pai_absorb(void *state, unsigned party, uint64_t seq, const uint8_t *payload,
                         void *acc)
{
    pai_state *s = state;
    (void)seq;
    if (party != 0) {
        return CF_E_INVAL;
    }
    cf__paillier_import(s->a, acc, s->ct);
    cf__paillier_import(s->c, payload, s->ct);
    cf__paillier_mulmod(s->pk, s->a, s->c);
    cf__paillier_export(s->a, acc, s->ct);
    return CF_OK;
}

static cf_err pai_combine(void *state, int64_t window_id, const uint8_t key[16],
                          const void *const *accs, cf_sa_result *out, char *errstr,
                          size_t errstr_size)
{
    pai_state *s = state;
    (void)key;
    memset(out, 0, sizeof(*out));
    out->dim = s->dim;
    cf__paillier_import(s->c, accs[0], s->ct);
    cf_err err = cf__paillier_decrypt_mpz(s->pk, s->c, s->m);
    if (err != CF_OK) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                          "paillier: window %lld: accumulator is not a valid ciphertext",
                          (long long)window_id);
    }
    uint64_t count = 0;
    for (unsigned j = 0; j < s->dim; j++) {
        mpz_fdiv_r_2exp(s->a, s->m, SLOT_BITS);
        mpz_fdiv_q_2exp(s->m, s->m, SLOT_BITS);
        if (j == 0) {
            if (mpz_sizeinbase(s->a, 2) > 62) {
                return cf_err_set(CF_E_OVERFLOW, errstr, errstr_size, "paillier: count overflow");
            }
            count = (uint64_t)mpz_get_ui(s->a);
            out->v[0] = (int64_t)count;
            continue;
        }
        /* sum = slot - count * 2^63 */
        mpz_t off;
        mpz_init_set_ui(off, (unsigned long)count);
        mpz_mul_2exp(off, off, 63);
        mpz_sub(s->a, s->a, off);
        mpz_clear(off);
        if (!mpz_fits_slong_p(s->a)) {
            return cf_err_set(CF_E_OVERFLOW, errstr, errstr_size,
                              "paillier: window %lld: sum does not fit int64",
                              (long long)window_id);
        }
        out->v[j] = (int64_t)mpz_get_si(s->a);
    }
    out->verified = false; /* Paillier gives confidentiality, not integrity */
    out->released = count >= s->min_count;
    if (!out->released) {
        memset(out->v, 0, sizeof(out->v));
    }
    return CF_OK;
}

const cf_protector_ops cf_protect_paillier_ops = {
    .abi_version = CF_PROTECT_ABI,
    .name = "paillier",
    .create = pai_create,
    .parties = one_party,
    .payload_size = pai_payload_size,
    .acc_size = pai_acc_size,
    .protect = pai_protect,
    .acc_zero = pai_acc_zero,
    .absorb = pai_absorb,
    .combine = pai_combine,
    .destroy = pai_destroy,
};

const cf_protector_ops *cf_protector_find(const char *name)
{
    static const cf_protector_ops *const all[] = {&cf_protect_plain_ops, &cf_protect_lsa_ops,
                                                  &cf_protect_paillier_ops};
    for (size_t i = 0; name != NULL && i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(all[i]->name, name) == 0) {
            return all[i];
        }
    }
    return NULL;
}
