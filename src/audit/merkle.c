/*
 * RFC 9162 section 2.1 Merkle trees over SHA-256 (OpenSSL EVP; SHA-NI where the CPU has it).
 *
 * - Leaves, nodes and commitments (two 64-byte blocks each, three per event) go through
 *   OpenSSL's low-level SHA256_* functions: 107 ns a hash here against 180 ns through an
 *   EVP_MD_CTX (its provider dispatch), 10% of the gateway's CPU. They are deprecated in
 *   OpenSSL 3, not removed, and use the same SHA-NI code; cf__sha keeps an EVP context for
 *   the rest (dead-letter commitments) and the hash of an empty verdict.
 * - cf__frontier / cf_audit_tree: the incremental tree. h[k] holds the root of the perfect
 *   subtree of 2^k leaves when bit k of the size is set, so appending is a binary carry
 *   (amortized one node hash) and the root folds at most 63 hashes. Memory: 2 KiB, fixed.
 * - cf_audit_prover: answers PATH and PROOF from stored leaf hashes. Every range the RFC's
 *   recursion visits starts at a multiple of the next power of two of its length, so a range
 *   is a run of perfect aligned subtrees; caching all of them (2n hashes) makes any MTH cost
 *   O(log n) and a proof O(log^2 n) node hashes.
 * - The verifiers follow RFC 9162 2.1.3.2 and 2.1.4.2 literally.
 * Threads: none shared; each object belongs to its caller.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init and co.: see above */
#include <openssl/sha.h>
#include <sodium.h>

#include "audit_int.h"

/* ---- hashing --------------------------------------------------------------------------- */

cf_err cf__sha_init(cf__sha *s)
{
    s->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    s->ctx = EVP_MD_CTX_new();
    if (s->md == NULL || s->ctx == NULL) {
        cf__sha_free(s);
        return CF_E_CRYPTO;
    }
    s->has_empty = false;
    cf__audit_commit(s, (const uint8_t *)"", 0, s->empty);
    s->has_empty = true;
    return CF_OK;
}

void cf__sha_free(cf__sha *s)
{
    EVP_MD_CTX_free(s->ctx);
    EVP_MD_free(s->md);
    s->ctx = NULL;
    s->md = NULL;
}

static void sha_begin(SHA256_CTX *c, uint8_t prefix)
{
    int ok = SHA256_Init(c) && SHA256_Update(c, &prefix, 1);
    CF_ASSERT(ok);
}

static void sha_update(SHA256_CTX *c, const void *p, size_t n)
{
    if (n > 0) {
        int ok = SHA256_Update(c, p, n);
        CF_ASSERT(ok);
    }
}

static void sha_end(SHA256_CTX *c, uint8_t out[CF_AUDIT_HASH_LEN])
{
    int ok = SHA256_Final(out, c);
    CF_ASSERT(ok);
}

void cf__sha_leaf2(cf__sha *s, const void *a, size_t alen, const void *b, size_t blen,
                   const void *c, size_t clen, uint8_t out[CF_AUDIT_HASH_LEN])
{
    (void)s;
    SHA256_CTX h;
    sha_begin(&h, 0x00);
    sha_update(&h, a, alen);
    sha_update(&h, b, blen);
    sha_update(&h, c, clen);
    sha_end(&h, out);
}

void cf__sha_node(cf__sha *s, const uint8_t l[CF_AUDIT_HASH_LEN],
                  const uint8_t r[CF_AUDIT_HASH_LEN], uint8_t out[CF_AUDIT_HASH_LEN])
{
    (void)s;
    uint8_t buf[1 + 2 * CF_AUDIT_HASH_LEN];
    buf[0] = 0x01;
    memcpy(buf + 1, l, CF_AUDIT_HASH_LEN);
    memcpy(buf + 1 + CF_AUDIT_HASH_LEN, r, CF_AUDIT_HASH_LEN);
    SHA256_CTX h;
    int ok = SHA256_Init(&h) && SHA256_Update(&h, buf, sizeof(buf));
    CF_ASSERT(ok);
    sha_end(&h, out);
}

void cf__audit_commit(cf__sha *s, const uint8_t *salted, size_t len, uint8_t out[CF_AUDIT_HASH_LEN])
{
    (void)s;
    /* not SHA256(): in OpenSSL 3 it fetches the digest (locks, allocates) on every call */
    SHA256_CTX h;
    int ok = SHA256_Init(&h) && SHA256_Update(&h, salted, len);
    CF_ASSERT(ok);
    sha_end(&h, out);
}

void cf__audit_leaf_of(cf__sha *s, const uint8_t commit[CF_AUDIT_HASH_LEN], const void *verdict,
                       size_t verdict_len, uint8_t out[CF_AUDIT_HASH_LEN])
{
    uint8_t vh[CF_AUDIT_HASH_LEN];
    if (verdict_len == 0 && s->has_empty) {
        memcpy(vh, s->empty, sizeof(vh));
    } else {
        cf__audit_commit(s, verdict_len > 0 ? verdict : (const void *)"", verdict_len, vh);
    }
    SHA256_CTX h;
    sha_begin(&h, 0x00);
    sha_update(&h, commit, CF_AUDIT_HASH_LEN);
    sha_update(&h, vh, CF_AUDIT_HASH_LEN);
    sha_end(&h, out);
}

/* One-shot public helpers. */
static void oneshot(uint8_t prefix, const void *a, size_t alen, const void *b, size_t blen,
                    uint8_t out[CF_AUDIT_HASH_LEN])
{
    SHA256_CTX h;
    sha_begin(&h, prefix);
    sha_update(&h, a, alen);
    sha_update(&h, b, blen);
    sha_end(&h, out);
}

void cf_audit_leaf_hash(const void *data, size_t len, uint8_t out[CF_AUDIT_HASH_LEN])
{
    oneshot(0x00, data, len, NULL, 0, out);
}

void cf_audit_node_hash_raw(const void *left, size_t left_len, const void *right, size_t right_len,
                            uint8_t out[CF_AUDIT_HASH_LEN])
{
    oneshot(0x01, left, left_len, right, right_len, out);
}

void cf_audit_node_hash(const uint8_t left[CF_AUDIT_HASH_LEN],
                        const uint8_t right[CF_AUDIT_HASH_LEN], uint8_t out[CF_AUDIT_HASH_LEN])
{
    uint8_t l[CF_AUDIT_HASH_LEN], r[CF_AUDIT_HASH_LEN];
    memcpy(l, left, sizeof(l));
    memcpy(r, right, sizeof(r));
    oneshot(0x01, l, sizeof(l), r, sizeof(r), out);
}

void cf_audit_empty_root(uint8_t out[CF_AUDIT_HASH_LEN])
{
    unsigned int len = 0;
    int ok = EVP_Digest("", 0, out, &len, EVP_sha256(), NULL);
    CF_ASSERT(ok && len == CF_AUDIT_HASH_LEN);
}

cf_err cf_audit_event_leaf_hash(const cf_event *ev, const uint8_t salt[CF_AUDIT_SALT_LEN],
                                const void *verdict, size_t verdict_len,
                                uint8_t out[CF_AUDIT_HASH_LEN])
{
    uint8_t buf[CF_AUDIT_SALT_LEN + CF_AUDIT_EVENT_ENC_MAX];
    memcpy(buf, salt, CF_AUDIT_SALT_LEN);
    size_t n = cf_audit_event_encode(ev, buf + CF_AUDIT_SALT_LEN, CF_AUDIT_EVENT_ENC_MAX);
    if (n == 0 || verdict_len > CF_AUDIT_VERDICT_MAX) {
        return CF_E_INVAL;
    }
    cf__sha s;
    if (cf__sha_init(&s) != CF_OK) {
        return CF_E_CRYPTO;
    }
    uint8_t commit[CF_AUDIT_HASH_LEN];
    cf__audit_commit(&s, buf, CF_AUDIT_SALT_LEN + n, commit);
    cf__audit_leaf_of(&s, commit, verdict, verdict_len, out);
    cf__sha_free(&s);
    sodium_memzero(buf, sizeof(buf));
    return CF_OK;
}

/* ---- incremental tree ------------------------------------------------------------------ */

void cf__frontier_append(cf__frontier *f, cf__sha *s, const uint8_t leaf[CF_AUDIT_HASH_LEN])
{
    uint8_t carry[CF_AUDIT_HASH_LEN];
    memcpy(carry, leaf, sizeof(carry));
    unsigned k = 0;
    while ((f->n >> k) & 1) {
        cf__sha_node(s, f->h[k], carry, carry);
        k++;
    }
    CF_ASSERT(k < 64);
    memcpy(f->h[k], carry, sizeof(carry));
    f->n++;
}

void cf__frontier_root(const cf__frontier *f, cf__sha *s, uint8_t out[CF_AUDIT_HASH_LEN])
{
    if (f->n == 0) {
        cf_audit_empty_root(out);
        return;
    }
    unsigned k = (unsigned)__builtin_ctzll(f->n);
    uint8_t acc[CF_AUDIT_HASH_LEN];
    memcpy(acc, f->h[k], sizeof(acc));
    for (k++; k < 64; k++) {
        if ((f->n >> k) & 1) {
            cf__sha_node(s, f->h[k], acc, acc);
        }
    }
    memcpy(out, acc, sizeof(acc));
}

struct cf_audit_tree {
    cf__sha sha;
    cf__frontier f;
};

cf_err cf_audit_tree_create(cf_audit_tree **out)
{
    cf_audit_tree *t = cf_calloc(1, sizeof(*t));
    if (t == NULL) {
        return CF_E_NOMEM;
    }
    if (cf__sha_init(&t->sha) != CF_OK) {
        cf_free(t);
        return CF_E_CRYPTO;
    }
    *out = t;
    return CF_OK;
}

void cf_audit_tree_destroy(cf_audit_tree *t)
{
    if (t == NULL) {
        return;
    }
    cf__sha_free(&t->sha);
    cf_free(t);
}

cf_err cf_audit_tree_append(cf_audit_tree *t, const uint8_t leaf_hash[CF_AUDIT_HASH_LEN])
{
    if (t->f.n >= (UINT64_C(1) << 63)) {
        return CF_E_OVERFLOW;
    }
    cf__frontier_append(&t->f, &t->sha, leaf_hash);
    return CF_OK;
}

uint64_t cf_audit_tree_size(const cf_audit_tree *t)
{
    return t->f.n;
}

void cf_audit_tree_root(const cf_audit_tree *t, uint8_t out[CF_AUDIT_HASH_LEN])
{
    /* The context is scratch state, not part of the tree's value. */
    cf__frontier_root(&t->f, (cf__sha *)&t->sha, out);
}

/* ---- prover ---------------------------------------------------------------------------- */

struct cf_audit_prover {
    cf__sha sha;
    uint64_t n;
    unsigned levels;
    uint8_t *level[64]; /* level[k]: n >> k hashes of the aligned perfect subtrees of 2^k */
};

void cf_audit_prover_destroy(cf_audit_prover *p)
{
    if (p == NULL) {
        return;
    }
    for (unsigned k = 0; k < p->levels; k++) {
        cf_free(p->level[k]);
    }
    cf__sha_free(&p->sha);
    cf_free(p);
}

cf_err cf_audit_prover_create(cf_audit_prover **out, const uint8_t *leaves, uint64_t n)
{
    cf_err err = CF_OK;
    cf_audit_prover *p = cf_calloc(1, sizeof(*p));
    if (p == NULL) {
        return CF_E_NOMEM;
    }
    if (cf__sha_init(&p->sha) != CF_OK) {
        cf_free(p);
        return CF_E_CRYPTO;
    }
    p->n = n;
    if (n > (SIZE_MAX / CF_AUDIT_HASH_LEN)) {
        err = CF_E_NOMEM;
        goto fail;
    }
    for (unsigned k = 0; k < 64 && (n >> k) > 0; k++) {
        uint64_t cnt = n >> k;
        p->level[k] = cf_malloc((size_t)cnt * CF_AUDIT_HASH_LEN);
        if (p->level[k] == NULL) {
            err = CF_E_NOMEM;
            goto fail;
        }
        p->levels = k + 1;
        if (k == 0) {
            memcpy(p->level[0], leaves, (size_t)cnt * CF_AUDIT_HASH_LEN);
            continue;
        }
        const uint8_t *below = p->level[k - 1];
        for (uint64_t i = 0; i < cnt; i++) {
            cf__sha_node(&p->sha, below + (2 * i) * CF_AUDIT_HASH_LEN,
                         below + (2 * i + 1) * CF_AUDIT_HASH_LEN,
                         p->level[k] + i * CF_AUDIT_HASH_LEN);
        }
    }
    *out = p;
    return CF_OK;
fail:
    cf_audit_prover_destroy(p);
    return err;
}

uint64_t cf_audit_prover_size(const cf_audit_prover *p)
{
    return p->n;
}

cf_err cf_audit_prover_leaf(const cf_audit_prover *p, uint64_t index,
                            uint8_t out[CF_AUDIT_HASH_LEN])
{
    if (index >= p->n) {
        return CF_E_INVAL;
    }
    memcpy(out, p->level[0] + index * CF_AUDIT_HASH_LEN, CF_AUDIT_HASH_LEN);
    return CF_OK;
}

/* Largest power of two strictly below n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
    CF_DASSERT(n >= 2);
    return UINT64_C(1) << (63 - __builtin_clzll(n - 1));
}

/* MTH(D[s:e]) for a range the RFC recursion can produce (s a multiple of bit_ceil(e-s)). */
static void mth(cf_audit_prover *p, uint64_t s, uint64_t e, uint8_t out[CF_AUDIT_HASH_LEN])
{
    CF_ASSERT(s < e && e <= p->n);
    uint64_t len = e - s;
    if ((len & (len - 1)) == 0) {
        unsigned k = (unsigned)__builtin_ctzll(len);
        CF_ASSERT((s & (len - 1)) == 0 && k < p->levels);
        memcpy(out, p->level[k] + (s >> k) * CF_AUDIT_HASH_LEN, CF_AUDIT_HASH_LEN);
        return;
    }
    uint64_t k = split_point(len);
    uint8_t l[CF_AUDIT_HASH_LEN], r[CF_AUDIT_HASH_LEN];
    mth(p, s, s + k, l);
    mth(p, s + k, e, r);
    cf__sha_node(&p->sha, l, r, out);
}

cf_err cf_audit_prover_root(const cf_audit_prover *p, uint64_t size, uint8_t out[CF_AUDIT_HASH_LEN])
{
    if (size > p->n) {
        return CF_E_INVAL;
    }
    if (size == 0) {
        cf_audit_empty_root(out);
        return CF_OK;
    }
    mth((cf_audit_prover *)p, 0, size, out);
    return CF_OK;
}

cf_err cf_audit_prover_inclusion(const cf_audit_prover *p, uint64_t index, uint64_t size,
                                 uint8_t *path, size_t *path_len)
{
    if (index >= size || size > p->n) {
        return CF_E_INVAL;
    }
    cf_audit_prover *mp = (cf_audit_prover *)p;
    /* Walk from the root down; the hash found at depth d is path element (depth - 1 - d). */
    uint8_t tmp[CF_AUDIT_PROOF_MAX][CF_AUDIT_HASH_LEN];
    size_t depth = 0;
    uint64_t s = 0, e = size, m = index;
    while (e - s > 1) {
        uint64_t k = split_point(e - s);
        CF_ASSERT(depth < CF_AUDIT_PROOF_MAX);
        if (m < k) {
            mth(mp, s + k, e, tmp[depth++]);
            e = s + k;
        } else {
            mth(mp, s, s + k, tmp[depth++]);
            s += k;
            m -= k;
        }
    }
    for (size_t i = 0; i < depth; i++) {
        memcpy(path + i * CF_AUDIT_HASH_LEN, tmp[depth - 1 - i], CF_AUDIT_HASH_LEN);
    }
    *path_len = depth;
    return CF_OK;
}

cf_err cf_audit_prover_consistency(const cf_audit_prover *p, uint64_t m, uint64_t n, uint8_t *path,
                                   size_t *path_len)
{
    if (m == 0 || m > n || n > p->n) {
        return CF_E_INVAL;
    }
    cf_audit_prover *mp = (cf_audit_prover *)p;
    uint8_t tmp[CF_AUDIT_PROOF_MAX][CF_AUDIT_HASH_LEN];
    size_t depth = 0;
    uint64_t s = 0, e = n;
    bool whole = true; /* SUBPROOF's b: the range is the whole old tree so far */
    for (;;) {
        uint64_t len = e - s;
        if (m == len) {
            if (!whole) {
                CF_ASSERT(depth < CF_AUDIT_PROOF_MAX);
                mth(mp, s, e, tmp[depth++]);
            }
            break;
        }
        uint64_t k = split_point(len);
        CF_ASSERT(depth < CF_AUDIT_PROOF_MAX);
        if (m <= k) {
            mth(mp, s + k, e, tmp[depth++]);
            e = s + k;
        } else {
            mth(mp, s, s + k, tmp[depth++]);
            s += k;
            m -= k;
            whole = false;
        }
    }
    /* SUBPROOF appends the sibling after the recursive part, so the deepest element first. */
    for (size_t i = 0; i < depth; i++) {
        memcpy(path + i * CF_AUDIT_HASH_LEN, tmp[depth - 1 - i], CF_AUDIT_HASH_LEN);
    }
    *path_len = depth;
    return CF_OK;
}

/* ---- verifiers ------------------------------------------------------------------------- */

cf_err cf_audit_verify_inclusion(uint64_t index, uint64_t size,
                                 const uint8_t leaf_hash[CF_AUDIT_HASH_LEN], const uint8_t *path,
                                 size_t path_len, const uint8_t root[CF_AUDIT_HASH_LEN])
{
    if (index >= size) {
        return CF_E_INVAL;
    }
    cf__sha s;
    if (cf__sha_init(&s) != CF_OK) {
        return CF_E_CRYPTO;
    }
    uint64_t fn = index, sn = size - 1;
    uint8_t r[CF_AUDIT_HASH_LEN];
    memcpy(r, leaf_hash, sizeof(r));
    cf_err err = CF_OK;
    for (size_t i = 0; i < path_len; i++) {
        const uint8_t *pe = path + i * CF_AUDIT_HASH_LEN;
        if (sn == 0) {
            err = CF_E_CORRUPT;
            break;
        }
        if ((fn & 1) || fn == sn) {
            cf__sha_node(&s, pe, r, r);
            if (!(fn & 1)) {
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            cf__sha_node(&s, r, pe, r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    cf__sha_free(&s);
    if (err == CF_OK && (sn != 0 || memcmp(r, root, sizeof(r)) != 0)) {
        err = CF_E_CORRUPT;
    }
    return err;
}

cf_err cf_audit_verify_consistency(uint64_t m, uint64_t n, const uint8_t root_m[CF_AUDIT_HASH_LEN],
                                   const uint8_t root_n[CF_AUDIT_HASH_LEN], const uint8_t *path,
                                   size_t path_len)
{
    if (m == 0 || m > n) {
        return CF_E_INVAL;
    }
    if (m == n) {
        return (path_len == 0 && memcmp(root_m, root_n, CF_AUDIT_HASH_LEN) == 0) ? CF_OK
                                                                                 : CF_E_CORRUPT;
    }
    if (path_len == 0) {
        return CF_E_CORRUPT;
    }
    cf__sha s;
    if (cf__sha_init(&s) != CF_OK) {
        return CF_E_CRYPTO;
    }
    /* When m is a power of two the old root is itself the first node of the path. */
    size_t i = 0;
    const uint8_t *first;
    if ((m & (m - 1)) == 0) {
        first = root_m;
    } else {
        first = path;
        i = 1;
    }
    uint64_t fn = m - 1, sn = n - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[CF_AUDIT_HASH_LEN], sr[CF_AUDIT_HASH_LEN];
    memcpy(fr, first, sizeof(fr));
    memcpy(sr, first, sizeof(sr));
    cf_err err = CF_OK;
    for (; i < path_len; i++) {
        const uint8_t *c = path + i * CF_AUDIT_HASH_LEN;
        if (sn == 0) {
            err = CF_E_CORRUPT;
            break;
        }
        if ((fn & 1) || fn == sn) {
            cf__sha_node(&s, c, fr, fr);
            cf__sha_node(&s, c, sr, sr);
            if (!(fn & 1)) {
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            cf__sha_node(&s, sr, c, sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    cf__sha_free(&s);
    if (err == CF_OK &&
        (sn != 0 || memcmp(fr, root_m, sizeof(fr)) != 0 || memcmp(sr, root_n, sizeof(sr)) != 0)) {
        err = CF_E_CORRUPT;
    }
    return err;
}
