/*
 * LSA shares, MACs and the verifying combiner (DESIGN.md section 3, docs/security.md).
 *
 * Every event contributes a vector of dim components (count = 1, the amount's low and high
 * 32-bit limbs) encoded in Z_p, p = 2^61 - 1, together with MAC components alpha * v. Party
 * i >= 1 derives its share of event seq from a ChaCha20 keystream keyed by its mask key
 * (its seed bound to the audit log's id and the gateway run's id: secagg_int.h): one call per
 * CF_SA_BATCH consecutive sequence numbers (nonce "cfsb" || seq / BATCH) gives 2 * dim 61-bit words
 * per event, accepted when < p (rejection sampling: an event with a word equal to p, probability
 * about 2^-58, is derived from its own nonce "cfsr" || seq instead; conditioned either way
 * the words are uniform on Z_p). Party 0's share is v - sum(r_i), so any k - 1 shares are
 * uniform and independent of v. The keystream of the current batch is cached per seed, so
 * in-order events cost ~1/32 of a keystream call each.
 *
 * Why the binding: if one mask r were used for two events v and v', party 0 would hold
 * v - r and v' - r (their difference) and alpha * v - m, alpha * v' - m, hence alpha exactly,
 * after which it could forge partials. Bound to (log, run, seq), a mask is never reused.
 *
 * The combiner checks sum(MAC shares) == alpha * sum(value shares) per component: a party
 * that adds e != 0 to a value share must add exactly alpha * e to the MAC share, which it can
 * guess with probability 1/p since alpha is uniform and never leaves gateway and combiner.
 * alpha is derived per MAC period from a master secret (cf__sa_alpha), so even an alpha that
 * leaked covers one period.
 *
 * Secrets (MAC master, alpha, seeds, mask keys) live in the sodium_malloc'd instance structs, wiped
 * on destroy. Instances are not shared between threads; all functions here are reentrant.
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
    CF_ASSERT(dim == CF_SA_DIM_DEFAULT);
    /* arithmetic shift: hi in [-2^31, 2^31), lo in [0, 2^32), amount = hi * 2^32 + lo */
    vals[CF_SA_C_COUNT] = 1;
    vals[CF_SA_C_AMOUNT] = (int64_t)((uint64_t)amount_minor & UINT32_MAX);
    vals[CF_SA_C_AMOUNT_HI] = amount_minor >> 32;
    return CF_OK;
}

bool cf_sa_join_amount(int64_t lo_sum, int64_t hi_sum, int64_t *out)
{
    __extension__ typedef __int128 i128;
    i128 v = (i128)hi_sum * ((i128)1 << 32) + lo_sum;
    if (v > INT64_MAX || v < INT64_MIN) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

void cf_sa_opts_default(cf_sa_opts *o)
{
    o->parties = 2;
    o->dim = CF_SA_DIM_DEFAULT;
    o->min_count = 10;
    o->mac_period_us = 0;
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
    if (o->dim != CF_SA_DIM_DEFAULT) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "dim must be %d (got %u)",
                          CF_SA_DIM_DEFAULT, o->dim);
    }
    if (o->mac_period_us < 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "mac_period_us must be >= 0");
    }
    return CF_OK;
}

/* Rejection fallback: the event's own nonce, successive blocks until 2 * dim words < p. */
static void derive_single(const uint8_t key[CF_KEY_SEED_LEN], uint64_t seq, unsigned dim,
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
                                           nonce, block++, key);
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

void cf__sa_stream_bind(cf__sa_stream *s, const cf_sa_ctx *ctx)
{
    static const char domain[] = "confide-mask-v2";
    if (s->bound && memcmp(&s->ctx, ctx, sizeof(*ctx)) == 0) {
        return;
    }
    crypto_generichash_state st;
    crypto_generichash_init(&st, s->seed, CF_KEY_SEED_LEN, sizeof(s->key));
    crypto_generichash_update(&st, (const uint8_t *)domain, sizeof(domain));
    crypto_generichash_update(&st, ctx->log_id, CF_SA_ID_LEN);
    crypto_generichash_update(&st, ctx->run_id, CF_SA_ID_LEN);
    crypto_generichash_final(&st, s->key, sizeof(s->key));
    sodium_memzero(&st, sizeof(st));
    s->ctx = *ctx;
    s->bound = true;
    s->valid = false; /* the cached keystream belongs to the previous context */
}

void cf__sa_stream_share(cf__sa_stream *s, uint64_t seq, cf_sa_vec *out)
{
    /* Deriving a mask that no log and no run owns could repeat one: a programmer error. */
    CF_ASSERT(s->bound);
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
                                    s->key);
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
        derive_single(s->key, seq, s->dim, out);
    }
}

void cf__sa_prg(const uint8_t seed[CF_KEY_SEED_LEN], const cf_sa_ctx *ctx, uint64_t seq,
                unsigned dim, cf_sa_vec *out)
{
    cf__sa_stream s;
    cf__sa_stream_init(&s, seed, dim);
    cf__sa_stream_bind(&s, ctx);
    cf__sa_stream_share(&s, seq, out);
    sodium_memzero(&s, sizeof(s));
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

uint64_t cf__sa_alpha(cf__sa_mac *m, int64_t ts_us)
{
    static const char domain[] = "confide-mac-v2";
    int64_t period = m->period_us > 0 ? floor_div(ts_us, m->period_us) : 0;
    if (m->valid && m->period == period) {
        return m->alpha;
    }
    uint8_t msg[sizeof(domain) + 13];
    uint64_t words[8];
    memcpy(msg, domain, sizeof(domain));
    for (int i = 0; i < 4; i++) {
        msg[sizeof(domain) + i] = (uint8_t)(m->epoch >> (8 * i));
    }
    for (int i = 0; i < 8; i++) {
        msg[sizeof(domain) + 4 + i] = (uint8_t)((uint64_t)period >> (8 * i));
    }
    uint64_t alpha = 0;
    for (uint8_t ctr = 0; alpha == 0; ctr++) {
        /* eight candidates per hash; all eight rejected has probability below 2^-480 */
        msg[sizeof(domain) + 12] = ctr;
        crypto_generichash((uint8_t *)words, sizeof(words), msg, sizeof(msg), m->master,
                           CF_KEY_MAC_LEN);
        for (int i = 0; i < 8 && alpha == 0; i++) {
            uint64_t w = words[i] & CF_SA_P;
            alpha = w != 0 && w != CF_SA_P ? w : 0;
        }
    }
    sodium_memzero(words, sizeof(words));
    m->period = period;
    m->alpha = alpha;
    m->valid = true;
    return alpha;
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "share derivation assumes LE words");

/* ---- gateway ----------------------------------------------------------------------------- */

struct cf_sa_gateway {
    unsigned k, dim;
    cf__sa_mac mac;
    cf__sa_stream st[CF_KEY_PARTIES_MAX - 1];
};

static void mac_init(cf__sa_mac *m, const cf_key *key, const cf_sa_opts *opts)
{
    memset(m, 0, sizeof(*m));
    memcpy(m->master, cf_key_mac_master(key), CF_KEY_MAC_LEN);
    m->epoch = key->epoch;
    m->period_us = opts->mac_period_us;
}

/* The seeds of parties 1..k-1 from a gateway or auditor key (checked against opts). */
static cf_err check_seeds_key(const cf_key *key, const char *want, unsigned parties, char *errstr,
                              size_t errstr_size)
{
    if (key == NULL || cf_key_parties(key) == 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "a %s key is required (got %s)", want,
                          key == NULL ? "none" : key->kind);
    }
    if (cf_key_parties(key) != parties) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "the %s key was generated for %u parties, the configuration has %u "
                          "(regenerate keys with confide keygen --parties %u)",
                          key->kind, cf_key_parties(key), parties, parties);
    }
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
    if (gw_key == NULL || strcmp(gw_key->kind, CF_KEY_KIND_GATEWAY) != 0) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "a gateway key is required (got %s)",
                          gw_key == NULL ? "none" : gw_key->kind);
    }
    if ((err = check_seeds_key(gw_key, "gateway", opts->parties, errstr, errstr_size)) != CF_OK) {
        return err;
    }
    cf_sa_gateway *g = sodium_malloc(sizeof(*g));
    if (g == NULL) {
        return CF_E_NOMEM;
    }
    memset(g, 0, sizeof(*g));
    g->k = opts->parties;
    g->dim = opts->dim;
    mac_init(&g->mac, gw_key, opts);
    for (unsigned i = 1; i < g->k; i++) {
        cf__sa_stream_init(&g->st[i - 1], cf_key_seed(gw_key, i), g->dim);
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

void cf_sa_gateway_bind(cf_sa_gateway *g, const cf_sa_ctx *ctx)
{
    for (unsigned i = 1; i < g->k; i++) {
        cf__sa_stream_bind(&g->st[i - 1], ctx);
    }
}

cf_err cf_sa_gateway_split(cf_sa_gateway *g, int64_t ts_us, uint64_t seq, const int64_t *vals,
                           cf_sa_vec *share0)
{
    uint64_t enc[CF_SA_DIM_MAX];
    for (unsigned j = 0; j < g->dim; j++) {
        if (cf_sa_encode(vals[j], &enc[j]) != CF_OK) {
            return CF_E_OVERFLOW;
        }
    }
    uint64_t alpha = cf__sa_alpha(&g->mac, ts_us);
    memset(share0, 0, sizeof(*share0));
    for (unsigned j = 0; j < g->dim; j++) {
        share0->v[j] = enc[j];
        share0->mac[j] = cf_sa_fmul(alpha, enc[j]);
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
            err = cf_sa_gateway_split(g, ev[e].ts_us, ev[e].seq, vals, &p0[e].share);
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

void cf_sa_party_bind(cf_sa_party *p, const cf_sa_ctx *ctx)
{
    if (p->index >= 1) {
        cf__sa_stream_bind(&p->st, ctx);
    }
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
    cf__sa_mac mac;
    uint32_t epoch;
    uint8_t key_id[CF_KEY_ID_LEN];
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
    if (cf_key_mac_master(comb_key) == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "a combiner or gateway key is required (got %s)",
                          comb_key == NULL ? "none" : comb_key->kind);
    }
    cf_sa_combiner *c = sodium_malloc(sizeof(*c));
    if (c == NULL) {
        return CF_E_NOMEM;
    }
    memset(c, 0, sizeof(*c));
    c->k = opts->parties;
    c->dim = opts->dim;
    c->min_count = opts->min_count;
    mac_init(&c->mac, comb_key, opts);
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
    static const char *names[CF_SA_DIM_MAX] = {"count", "amount", "amount_hi"};
    return j < CF_SA_DIM_MAX ? names[j] : "?";
}

/* Index of the first component whose MAC fails, or dim when all hold. Every component is
 * checked: the time does not depend on which one failed. */
static unsigned mac_check(const cf_sa_vec *tot, unsigned dim, uint64_t alpha)
{
    unsigned first = dim;
    for (unsigned j = dim; j-- > 0;) {
        if (tot->mac[j] != cf_sa_fmul(alpha, tot->v[j])) {
            first = j;
        }
    }
    return first;
}

cf_err cf_sa_combine(cf_sa_combiner *c, int64_t window_start_us, const uint8_t key[16],
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
    unsigned bad = mac_check(&tot, c->dim, cf__sa_alpha(&c->mac, window_start_us));
    if (bad < c->dim) {
        sodium_memzero(&tot, sizeof(tot));
        return cf_err_set(CF_E_AUTH, errstr, errstr_size,
                          "integrity alert: MAC check failed for window %lld, pseudonym %s, "
                          "component %s: a party altered its partial sum; nothing released",
                          (long long)window_start_us, keyhex, component_name(bad));
    }
    out->verified = true;
    /* count <= CF_SA_COUNT_MAX keeps the limb sums inside (p - 1) / 2 in magnitude: the low
     * limb sum below 2^28 * 2^32 = 2^60, the high one within 2^28 * 2^31. */
    uint64_t count = tot.v[CF_SA_C_COUNT];
    if (count > CF_SA_COUNT_MAX) {
        sodium_memzero(&tot, sizeof(tot));
        return cf_err_set(CF_E_OVERFLOW, errstr, errstr_size,
                          "window %lld, pseudonym %s: more than %llu events (or a corrupt count) "
                          "cannot be decoded exactly; use smaller windows",
                          (long long)window_start_us, keyhex, (unsigned long long)CF_SA_COUNT_MAX);
    }
    out->v[CF_SA_C_COUNT] = (int64_t)count;
    out->v[CF_SA_C_AMOUNT] = (int64_t)tot.v[CF_SA_C_AMOUNT];
    out->v[CF_SA_C_AMOUNT_HI] = cf_sa_decode(tot.v[CF_SA_C_AMOUNT_HI]);
    out->released = count >= c->min_count;
    if (!out->released) {
        memset(out->v, 0, sizeof(out->v));
    }
    sodium_memzero(&tot, sizeof(tot));
    return CF_OK;
}

/* ---- auditor ----------------------------------------------------------------------------- */

struct cf_sa_auditor {
    unsigned k, dim;
    cf__sa_stream st[CF_KEY_PARTIES_MAX - 1];
};

cf_err cf_sa_auditor_create(cf_sa_auditor **out, const cf_key *seeds_key, const cf_sa_opts *opts,
                            char *errstr, size_t errstr_size)
{
    cf_err err;
    *out = NULL;
    if ((err = check_opts(opts, errstr, errstr_size)) != CF_OK ||
        (err = check_seeds_key(seeds_key, "auditor or gateway", opts->parties, errstr,
                               errstr_size)) != CF_OK) {
        return err;
    }
    cf_sa_auditor *a = sodium_malloc(sizeof(*a));
    if (a == NULL) {
        return CF_E_NOMEM;
    }
    memset(a, 0, sizeof(*a));
    a->k = opts->parties;
    a->dim = opts->dim;
    for (unsigned i = 1; i < a->k; i++) {
        cf__sa_stream_init(&a->st[i - 1], cf_key_seed(seeds_key, i), a->dim);
    }
    *out = a;
    return CF_OK;
}

void cf_sa_auditor_destroy(cf_sa_auditor *a)
{
    if (a != NULL) {
        sodium_memzero(a, sizeof(*a));
        sodium_free(a);
    }
}

cf_err cf_sa_auditor_attribute(cf_sa_auditor *a, const uint64_t *seqs, const cf_sa_ctx *ctxs,
                               size_t n, const cf_sa_vec *partials, unsigned k, int *bad_party)
{
    if (k != a->k) {
        return CF_E_INVAL;
    }
    *bad_party = 0;
    for (unsigned i = 1; i < k; i++) {
        cf__sa_stream *st = &a->st[i - 1];
        cf_sa_vec want;
        cf_sa_vec_zero(&want);
        for (size_t e = 0; e < n; e++) {
            cf_sa_vec r;
            cf__sa_stream_bind(st, &ctxs[e]);
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
    return CF_OK;
}
