/*
 * LSA shares, MACs and the verifying combiner (DESIGN.md section 3, docs/security.md).
 *
 * Every event contributes a vector of dim components (count = 1, amount, ...) encoded in
 * Z_p, p = 2^61 - 1, together with MAC components alpha * v. Party i >= 1 derives its share
 * of event seq from a ChaCha20 keystream keyed by its seed: one call per CF_SA_BATCH
 * consecutive sequence numbers (nonce "cfsb" || seq / BATCH) gives 2 * dim 61-bit words per
 * event, accepted when < p (rejection sampling: an event with a word equal to p, probability
 * about 2^-58, is derived from its own nonce "cfsr" || seq instead; conditioned either way
 * the words are uniform on Z_p). Party 0's share is v - sum(r_i), so any k - 1 shares are
 * uniform and independent of v. The keystream of the current batch is cached per seed, so
 * in-order events cost ~1/32 of a keystream call each.
 *
 * The combiner checks sum(MAC shares) == alpha * sum(value shares) per component: a party
 * that adds e != 0 to a value share must add exactly alpha * e to the MAC share, which it can
 * guess with probability 1/p since alpha is uniform and never leaves gateway and combiner.
 *
 * Secrets (alpha, seeds) live in the sodium_malloc'd instance structs, wiped on destroy.
 * Instances are not shared between threads; all functions here are reentrant.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/secagg.h"
#include "secagg_int.h"

cf_err cf_sa_encode(int64_t v, uint64_t *out)
{
    if (v > CF_SA_ABS_MAX || v < -CF_SA_ABS_MAX) {
        return CF_E_OVERFLOW;
    }
    *out = v >= 0 ? (uint64_t)v : CF_SA_P - (uint64_t)(-v);
    return CF_OK;
}

int64_t cf_sa_decode(uint64_t x)
{
    CF_DASSERT(x < CF_SA_P);
    return x > (uint64_t)CF_SA_ABS_MAX ? -(int64_t)(CF_SA_P - x) : (int64_t)x;
}

void cf_sa_vec_zero(void *dst)
{
    memset(dst, 0, sizeof(cf_sa_vec));
}

void cf_sa_vec_add(void *dst, const void *src)
{
    cf_sa_vec *d = dst;
    const cf_sa_vec *s = src;
    for (int j = 0; j < CF_SA_DIM_MAX; j++) {
        d->v[j] = cf_sa_fadd(d->v[j], s->v[j]);
        d->mac[j] = cf_sa_fadd(d->mac[j], s->mac[j]);
    }
}

cf_err cf_sa_event_values(int64_t amount_minor, unsigned dim, int64_t vals[CF_SA_DIM_MAX])
{
    CF_ASSERT(dim >= 2 && dim <= CF_SA_DIM_MAX);
    memset(vals, 0, sizeof(int64_t) * CF_SA_DIM_MAX);
    if (amount_minor > CF_SA_ABS_MAX || amount_minor < -CF_SA_ABS_MAX) {
        return CF_E_OVERFLOW;
    }
    vals[CF_SA_C_COUNT] = 1;
    vals[CF_SA_C_AMOUNT] = amount_minor;
    if (dim >= 3) {
        int64_t sq;
        if (__builtin_mul_overflow(amount_minor, amount_minor, &sq) || sq > CF_SA_ABS_MAX) {
            return CF_E_OVERFLOW;
        }
        vals[CF_SA_C_SUMSQ] = sq;
    }
    return CF_OK;
}

void cf_sa_opts_default(cf_sa_opts *o)
{
    o->parties = 2;
    o->dim = CF_SA_DIM_DEFAULT;
    o->min_count = 1;
    /* 2^36 minor units (687 billion cents) per payment leaves room for 2^24 events per
     * (window, group) before a sum could wrap mod p (the combiner checks) */
    o->amount_abs_max = INT64_C(1) << 36;
}

static cf_err check_opts(const cf_sa_opts *o, char *errstr, size_t errstr_size)
{
    /* sodium_malloc below needs libsodium initialized; cf_init is idempotent and cheap */
    if (cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    if (o == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "secagg options are required");
    }
    if (o->parties < CF_KEY_PARTIES_MIN || o->parties > CF_KEY_PARTIES_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "parties must be %d..%d (got %u)",
                          CF_KEY_PARTIES_MIN, CF_KEY_PARTIES_MAX, o->parties);
    }
    if (o->dim < 2 || o->dim > CF_SA_DIM_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "dim must be 2..%d (got %u)",
                          CF_SA_DIM_MAX, o->dim);
    }
    if (o->amount_abs_max <= 0 || o->amount_abs_max > CF_SA_ABS_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "amount_abs_max must be 1..%lld (got %lld)", (long long)CF_SA_ABS_MAX,
                          (long long)o->amount_abs_max);
    }
    return CF_OK;
}

/* Rejection fallback: the event's own nonce, successive blocks until 2 * dim words < p. */
static void derive_single(const uint8_t seed[CF_KEY_SEED_LEN], uint64_t seq, unsigned dim,
                          cf_sa_vec *out)
{
    uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {'c', 'f', 's', 'r'};
    uint64_t words[8];
    uint64_t vals[2 * CF_SA_DIM_MAX];
    unsigned need = 2 * dim, got = 0;
    uint32_t block = 0;
    for (int i = 0; i < 8; i++) {
        nonce[4 + i] = (uint8_t)(seq >> (8 * i));
    }
    while (got < need) {
        memset(words, 0, sizeof(words));
        crypto_stream_chacha20_ietf_xor_ic((uint8_t *)words, (const uint8_t *)words, sizeof(words),
                                           nonce, block++, seed);
        for (int i = 0; i < 8 && got < need; i++) {
            uint64_t w = words[i] & CF_SA_P;
            if (w != CF_SA_P) {
                vals[got++] = w;
            }
        }
    }
    memset(out, 0, sizeof(*out));
    for (unsigned j = 0; j < dim; j++) {
        out->v[j] = vals[j];
        out->mac[j] = vals[dim + j];
    }
    sodium_memzero(words, sizeof(words));
    sodium_memzero(vals, sizeof(vals));
}

void cf__sa_stream_init(cf__sa_stream *s, const uint8_t seed[CF_KEY_SEED_LEN], unsigned dim)
{
    CF_ASSERT(dim >= 1 && dim <= CF_SA_DIM_MAX);
    memset(s, 0, sizeof(*s));
    memcpy(s->seed, seed, CF_KEY_SEED_LEN);
    s->dim = dim;
}

void cf__sa_stream_share(cf__sa_stream *s, uint64_t seq, cf_sa_vec *out)
{
    uint64_t group = seq / CF_SA_BATCH;
    unsigned w = 2 * s->dim;
    if (!s->valid || s->group != group) {
        uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {'c', 'f', 's', 'b'};
        for (int i = 0; i < 8; i++) {
            nonce[4 + i] = (uint8_t)(group >> (8 * i));
        }
        /* Little-endian machine words; every party derives the same values because the
         * build requires a little-endian target (static assertion below). */
        crypto_stream_chacha20_ietf((uint8_t *)s->words, (size_t)CF_SA_BATCH * w * 8, nonce,
                                    s->seed);
        s->group = group;
        s->valid = true;
    }
    const uint64_t *ws = &s->words[(size_t)(seq % CF_SA_BATCH) * w];
    uint64_t rej = 0;
    memset(out, 0, sizeof(*out));
    for (unsigned j = 0; j < s->dim; j++) {
        out->v[j] = ws[j] & CF_SA_P;
        out->mac[j] = ws[s->dim + j] & CF_SA_P;
        rej |= (uint64_t)(out->v[j] == CF_SA_P) | (uint64_t)(out->mac[j] == CF_SA_P);
    }
    if (rej != 0) {
        derive_single(s->seed, seq, s->dim, out);
    }
}

void cf__sa_prg(const uint8_t seed[CF_KEY_SEED_LEN], uint64_t seq, unsigned dim, cf_sa_vec *out)
{
    cf__sa_stream s;
    cf__sa_stream_init(&s, seed, dim);
    cf__sa_stream_share(&s, seq, out);
    sodium_memzero(&s, sizeof(s));
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "share derivation assumes LE words");

/* ---- gateway ----------------------------------------------------------------------------- */

struct cf_sa_gateway {
    unsigned k, dim;
    int64_t amount_abs_max;
    uint64_t alpha;
    uint8_t seeds[CF_KEY_PARTIES_MAX - 1][CF_KEY_SEED_LEN];
    cf__sa_stream st[CF_KEY_PARTIES_MAX - 1];
};

/*
 * Takes alpha (and the seeds, from a gateway key) out of @p key. A combiner key holds alpha
 * only; @p allow_combiner says whether that is enough for the caller.
 */
static cf_err load_mac_key(const cf_key *key, unsigned parties, bool allow_combiner,
                           uint64_t *alpha, uint8_t seeds[][CF_KEY_SEED_LEN], bool *has_seeds,
                           char *errstr, size_t errstr_size)
{
    *has_seeds = false;
    if (allow_combiner && key != NULL && strcmp(key->kind, CF_KEY_KIND_COMBINER) == 0 &&
        cf_key_alpha(key) != 0) {
        *alpha = cf_key_alpha(key);
        return CF_OK;
    }
    if (key == NULL || cf_key_parties(key) == 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "a %s key is required (got %s)",
                          allow_combiner ? "combiner or gateway" : "gateway",
                          key == NULL ? "none" : key->kind);
    }
    if (cf_key_parties(key) != parties) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "the %s key was generated for %u parties, the configuration has %u "
                          "(regenerate keys with confide keygen --parties %u)",
                          key->kind, cf_key_parties(key), parties, parties);
    }
    *alpha = cf_key_alpha(key);
    for (unsigned i = 1; i < parties; i++) {
        memcpy(seeds[i - 1], cf_key_seed(key, i), CF_KEY_SEED_LEN);
    }
    *has_seeds = true;
    return CF_OK;
}

cf_err cf_sa_gateway_create(cf_sa_gateway **out, const cf_key *gw_key, const cf_sa_opts *opts,
                            char *errstr, size_t errstr_size)
{
    cf_err err;
    CF_ASSERT(out != NULL);
    *out = NULL;
    if ((err = check_opts(opts, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_sa_gateway *g = sodium_malloc(sizeof(*g));
    if (g == NULL) {
        return CF_E_NOMEM;
    }
    memset(g, 0, sizeof(*g));
    g->k = opts->parties;
    g->dim = opts->dim;
    g->amount_abs_max = opts->amount_abs_max;
    bool has_seeds;
    err = load_mac_key(gw_key, g->k, false, &g->alpha, g->seeds, &has_seeds, errstr, errstr_size);
    if (err != CF_OK) {
        cf_sa_gateway_destroy(g);
        return err;
    }
    for (unsigned i = 1; i < g->k; i++) {
        cf__sa_stream_init(&g->st[i - 1], g->seeds[i - 1], g->dim);
    }
    *out = g;
    return CF_OK;
}

void cf_sa_gateway_destroy(cf_sa_gateway *g)
{
    if (g != NULL) {
        sodium_memzero(g, sizeof(*g));
        sodium_free(g);
    }
}

cf_err cf_sa_gateway_split(cf_sa_gateway *g, uint64_t seq, const int64_t *vals, cf_sa_vec *share0)
{
    uint64_t enc[CF_SA_DIM_MAX];
    if (vals[CF_SA_C_AMOUNT] > g->amount_abs_max || vals[CF_SA_C_AMOUNT] < -g->amount_abs_max) {
        return CF_E_OVERFLOW;
    }
    for (unsigned j = 0; j < g->dim; j++) {
        if (cf_sa_encode(vals[j], &enc[j]) != CF_OK) {
            return CF_E_OVERFLOW;
        }
    }
    memset(share0, 0, sizeof(*share0));
    for (unsigned j = 0; j < g->dim; j++) {
        share0->v[j] = enc[j];
        share0->mac[j] = cf_sa_fmul(g->alpha, enc[j]);
    }
    for (unsigned i = 1; i < g->k; i++) {
        cf_sa_vec r;
        cf__sa_stream_share(&g->st[i - 1], seq, &r);
        for (unsigned j = 0; j < g->dim; j++) {
            share0->v[j] = cf_sa_fsub(share0->v[j], r.v[j]);
            share0->mac[j] = cf_sa_fsub(share0->mac[j], r.mac[j]);
        }
    }
    return CF_OK;
}

cf_err cf_sa_gateway_split_batch(cf_sa_gateway *g, const uint64_t *seqs, const int64_t *vals,
                                 size_t n, cf_sa_vec *share0, size_t *bad)
{
    for (size_t e = 0; e < n; e++) {
        cf_err err = cf_sa_gateway_split(g, seqs[e], vals + e * g->dim, &share0[e]);
        if (err != CF_OK) {
            if (bad != NULL) {
                *bad = e;
            }
            return err;
        }
    }
    return CF_OK;
}

size_t cf_sa_group_key_merchant(void *opaque, const cf_event *ev, char *buf, size_t size)
{
    (void)opaque;
    size_t len = strnlen(ev->merchant, sizeof(ev->merchant));
    if (len <= size) {
        memcpy(buf, ev->merchant, len);
    }
    return len;
}

cf_err cf_sa_gateway_protect_events(cf_sa_gateway *g, cf_sa_pseudo *ps, const cf_event *ev,
                                    size_t n, cf_sa_group_key_fn key_fn, void *opaque,
                                    cf_sa_payload0 *p0, cf_sa_meta *meta, size_t *bad)
{
    char key[CF_SA_PSEUDO_ID_MAX];
    if (key_fn == NULL) {
        key_fn = cf_sa_group_key_merchant;
    }
    for (size_t e = 0; e < n; e++) {
        int64_t vals[CF_SA_DIM_MAX];
        cf_err err = CF_OK;
        size_t len = key_fn(opaque, &ev[e], key, sizeof(key));
        if (len > sizeof(key)) {
            err = CF_E_INVAL;
        }
        if (err == CF_OK) {
            err = cf_sa_event_values(ev[e].amount_minor, g->dim, vals);
        }
        if (err == CF_OK) {
            err = cf_sa_gateway_split(g, ev[e].seq, vals, &p0[e].share);
        }
        if (err != CF_OK) {
            if (bad != NULL) {
                *bad = e;
            }
            sodium_memzero(key, sizeof(key));
            return err;
        }
        cf_sa_pseudonymize(ps, key, len, meta[e].key);
        meta[e].ts_us = ev[e].ts_us;
        meta[e].seq = ev[e].seq;
        p0[e].meta = meta[e];
    }
    sodium_memzero(key, sizeof(key));
    return CF_OK;
}

/* ---- party ------------------------------------------------------------------------------- */

struct cf_sa_party {
    unsigned index, dim;
    cf__sa_stream st;
};

cf_err cf_sa_party_create(cf_sa_party **out, unsigned index, const cf_key *party_key,
                          const cf_sa_opts *opts, char *errstr, size_t errstr_size)
{
    cf_err err;
    CF_ASSERT(out != NULL);
    *out = NULL;
    if ((err = check_opts(opts, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    if (index >= opts->parties) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "party index %u out of range 0..%u",
                          index, opts->parties - 1);
    }
    const uint8_t *seed = NULL;
    if (index >= 1) {
        seed = party_key != NULL ? cf_key_seed(party_key, index) : NULL;
        if (seed == NULL) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "party %u needs its seed (party-%u.key)", index, index);
        }
    }
    cf_sa_party *p = sodium_malloc(sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    memset(p, 0, sizeof(*p));
    p->index = index;
    p->dim = opts->dim;
    if (seed != NULL) {
        cf__sa_stream_init(&p->st, seed, p->dim);
    }
    *out = p;
    return CF_OK;
}

void cf_sa_party_destroy(cf_sa_party *p)
{
    if (p != NULL) {
        sodium_memzero(p, sizeof(*p));
        sodium_free(p);
    }
}

unsigned cf_sa_party_index(const cf_sa_party *p)
{
    return p->index;
}

void cf_sa_party_share(cf_sa_party *p, uint64_t seq, const cf_sa_vec *payload0, cf_sa_vec *out)
{
    if (p->index == 0) {
        CF_ASSERT(payload0 != NULL);
        *out = *payload0;
        return;
    }
    cf__sa_stream_share(&p->st, seq, out);
}

void cf_sa_party_shares(cf_sa_party *p, const cf_sa_payload0 *p0, const cf_sa_meta *meta, size_t n,
                        cf_sa_vec *out)
{
    if (p->index == 0) {
        CF_ASSERT(p0 != NULL || n == 0);
        for (size_t e = 0; e < n; e++) {
            out[e] = p0[e].share;
        }
        return;
    }
    CF_ASSERT(meta != NULL || n == 0);
    for (size_t e = 0; e < n; e++) {
        cf__sa_stream_share(&p->st, meta[e].seq, &out[e]);
    }
}

void cf_sa_party_sum(cf_sa_party *p, const uint64_t *seqs, size_t n, const cf_sa_vec *payload0,
                     cf_sa_vec *sum)
{
    for (size_t e = 0; e < n; e++) {
        cf_sa_vec s;
        cf_sa_party_share(p, seqs[e], payload0 != NULL ? &payload0[e] : NULL, &s);
        cf_sa_vec_add(sum, &s);
    }
}

/* ---- combiner ---------------------------------------------------------------------------- */

struct cf_sa_combiner {
    unsigned k, dim;
    uint64_t min_count;
    int64_t amount_abs_max;
    uint64_t alpha;
    uint32_t epoch;
    uint8_t key_id[CF_KEY_ID_LEN];
    bool has_seeds; /* created from a gateway key: attribution possible */
    uint8_t seeds[CF_KEY_PARTIES_MAX - 1][CF_KEY_SEED_LEN];
};

cf_err cf_sa_combiner_create(cf_sa_combiner **out, const cf_key *comb_key, const cf_sa_opts *opts,
                             char *errstr, size_t errstr_size)
{
    cf_err err;
    CF_ASSERT(out != NULL);
    *out = NULL;
    if ((err = check_opts(opts, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_sa_combiner *c = sodium_malloc(sizeof(*c));
    if (c == NULL) {
        return CF_E_NOMEM;
    }
    memset(c, 0, sizeof(*c));
    c->k = opts->parties;
    c->dim = opts->dim;
    c->min_count = opts->min_count;
    c->amount_abs_max = opts->amount_abs_max;
    err =
        load_mac_key(comb_key, c->k, true, &c->alpha, c->seeds, &c->has_seeds, errstr, errstr_size);
    if (err != CF_OK) {
        cf_sa_combiner_destroy(c);
        return err;
    }
    c->epoch = comb_key->epoch;
    memcpy(c->key_id, comb_key->id, CF_KEY_ID_LEN);
    *out = c;
    return CF_OK;
}

void cf_sa_combiner_destroy(cf_sa_combiner *c)
{
    if (c != NULL) {
        sodium_memzero(c, sizeof(*c));
        sodium_free(c);
    }
}

static const char *component_name(unsigned j)
{
    static const char *names[CF_SA_DIM_MAX] = {"count", "amount", "sum_sq", "component3"};
    return j < CF_SA_DIM_MAX ? names[j] : "?";
}

/* Largest |per-event value| of component j (saturating), for the wrap-around check. */
static uint64_t component_bound(const cf_sa_combiner *c, unsigned j)
{
    uint64_t a = (uint64_t)c->amount_abs_max;
    uint64_t sq;
    switch (j) {
    case CF_SA_C_COUNT:
        return 1;
    case CF_SA_C_AMOUNT:
        return a;
    default:
        return __builtin_mul_overflow(a, a, &sq) ? UINT64_MAX : sq;
    }
}

static bool mac_ok(const cf_sa_combiner *c, const cf_sa_vec *tot)
{
    unsigned bad = 0;
    for (unsigned j = 0; j < c->dim; j++) {
        /* no early exit: the time does not depend on which component failed */
        bad |= (unsigned)(tot->mac[j] != cf_sa_fmul(c->alpha, tot->v[j]));
    }
    return bad == 0;
}

cf_err cf_sa_combine(cf_sa_combiner *c, uint64_t window_id, const uint8_t key[16],
                     const cf_sa_vec *partials, unsigned k, cf_sa_result *out, char *errstr,
                     size_t errstr_size)
{
    cf_sa_vec tot;
    memset(out, 0, sizeof(*out));
    out->dim = c->dim;
    out->epoch = c->epoch;
    memcpy(out->key_id, c->key_id, CF_KEY_ID_LEN);
    if (k != c->k) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "combine needs %u partial sums, got %u",
                          c->k, k);
    }
    cf_sa_vec_zero(&tot);
    for (unsigned i = 0; i < k; i++) {
        cf_sa_vec_add(&tot, &partials[i]);
    }
    char keyhex[2 * CF_SA_PSEUDO_LEN + 1];
    sodium_bin2hex(keyhex, sizeof(keyhex), key, CF_SA_PSEUDO_LEN);
    if (!mac_ok(c, &tot)) {
        unsigned first = 0;
        for (unsigned j = 0; j < c->dim; j++) {
            if (tot.mac[j] != cf_sa_fmul(c->alpha, tot.v[j])) {
                first = j;
                break;
            }
        }
        sodium_memzero(&tot, sizeof(tot));
        return cf_err_set(CF_E_AUTH, errstr, errstr_size,
                          "integrity alert: MAC check failed for window %llu, pseudonym %s, "
                          "component %s: a party altered its partial sum; nothing released",
                          (unsigned long long)window_id, keyhex, component_name(first));
    }
    out->verified = true;
    int64_t count = cf_sa_decode(tot.v[CF_SA_C_COUNT]);
    if (count < 0) {
        sodium_memzero(&tot, sizeof(tot));
        return cf_err_set(CF_E_OVERFLOW, errstr, errstr_size,
                          "window %llu, pseudonym %s: negative count",
                          (unsigned long long)window_id, keyhex);
    }
    for (unsigned j = 0; j < c->dim; j++) {
        uint64_t lim;
        bool nonneg = j != CF_SA_C_AMOUNT;
        uint64_t range = nonneg ? CF_SA_P - 1 : (uint64_t)CF_SA_ABS_MAX;
        if (__builtin_mul_overflow((uint64_t)count, component_bound(c, j), &lim) || lim > range) {
            sodium_memzero(&tot, sizeof(tot));
            return cf_err_set(CF_E_OVERFLOW, errstr, errstr_size,
                              "window %llu, pseudonym %s: %lld events could wrap the %s sum "
                              "mod p; lower amount_abs_max or the window size",
                              (unsigned long long)window_id, keyhex, (long long)count,
                              component_name(j));
        }
        out->v[j] = nonneg ? (int64_t)tot.v[j] : cf_sa_decode(tot.v[j]);
    }
    out->released = (uint64_t)count >= c->min_count;
    if (!out->released) {
        memset(out->v, 0, sizeof(out->v));
    }
    sodium_memzero(&tot, sizeof(tot));
    return CF_OK;
}

cf_err cf_sa_combiner_attribute(cf_sa_combiner *c, const uint64_t *seqs, size_t n,
                                const cf_sa_vec *partials, unsigned k, int *bad_party)
{
    cf_sa_vec tot;
    if (k != c->k) {
        return CF_E_INVAL;
    }
    if (!c->has_seeds) {
        return CF_E_STATE; /* attribution needs the seeds: a combiner made from gateway.key */
    }
    cf_sa_vec_zero(&tot);
    for (unsigned i = 0; i < k; i++) {
        cf_sa_vec_add(&tot, &partials[i]);
    }
    if (mac_ok(c, &tot)) {
        *bad_party = -1;
        return CF_OK;
    }
    *bad_party = 0;
    cf__sa_stream *st = sodium_malloc(sizeof(*st));
    if (st == NULL) {
        return CF_E_NOMEM;
    }
    for (unsigned i = 1; i < k; i++) {
        cf_sa_vec want;
        cf_sa_vec_zero(&want);
        cf__sa_stream_init(st, c->seeds[i - 1], c->dim);
        for (size_t e = 0; e < n; e++) {
            cf_sa_vec r;
            cf__sa_stream_share(st, seqs[e], &r);
            cf_sa_vec_add(&want, &r);
        }
        bool same = memcmp(&want, &partials[i], sizeof(want)) == 0;
        sodium_memzero(&want, sizeof(want));
        if (!same) {
            *bad_party = (int)i;
            break;
        }
    }
    sodium_memzero(st, sizeof(*st));
    sodium_free(st);
    return CF_OK;
}
