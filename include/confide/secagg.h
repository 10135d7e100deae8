/**
 * @file secagg.h
 * @brief Lightweight secure aggregation (LSA, DESIGN.md section 3): arithmetic mod
 * p = 2^61 - 1, additive shares with seed compression, information-theoretic MACs,
 * keyed pseudonyms, party-side partial sums, the verifying combiner, and the protector
 * interface with the plain / lsa / paillier implementations.
 *
 * Masks never repeat: the share of event seq is derived from the party seed, the id of the
 * audit log that assigned seq and the id of the gateway run that protected it (cf_sa_ctx),
 * so two logs, two runs over one log, or a restart that re-assigns lost indexes never
 * reuse a mask; a replay of the same log for the same events derives the same masks. The
 * MAC key alpha is derived per (key epoch, MAC period) from a master secret, so an alpha
 * recovered by any means covers one period (one tumbling window), not the epoch.
 *
 * Roles and the calls each makes (one instance per thread; no instance is shared):
 *   gateway   cf_sa_pseudo_* (group keys -> pseudonyms), cf_sa_gateway_split* (party 0's
 *             share of every event; parties >= 1 get metadata only)
 *   party i   cf_sa_party_share* (per-event share vectors: party 0 from its payload, i >= 1
 *             regenerated from its seed and the sequence number), cf_sa_vec_add to sum
 *             them per (window, pseudonym) -- in the window operator or in cf_sa_acc
 *   combiner  cf_sa_combine (adds k partial sums, checks the MAC, applies min_count)
 * docs/security.md explains what each role learns.
 */
#ifndef CONFIDE_SECAGG_H
#define CONFIDE_SECAGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "confide/err.h"
#include "confide/event.h"
#include "confide/keys.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the field Z_p, p = 2^61 - 1 --------------------------------------------------------- */

#define CF_SA_P ((UINT64_C(1) << 61) - 1)
/** Largest magnitude a signed value may have to encode unambiguously: (p - 1) / 2. */
#define CF_SA_ABS_MAX ((int64_t)((CF_SA_P - 1) / 2))

/** a + b mod p for a, b < p. */
static inline uint64_t cf_sa_fadd(uint64_t a, uint64_t b)
{
    uint64_t s = a + b; /* < 2^62, no wrap */
    return s >= CF_SA_P ? s - CF_SA_P : s;
}

/** a - b mod p for a, b < p. */
static inline uint64_t cf_sa_fsub(uint64_t a, uint64_t b)
{
    return a >= b ? a - b : a + CF_SA_P - b;
}

/** a * b mod p for a, b < p (Mersenne reduction of the 122-bit product). */
static inline uint64_t cf_sa_fmul(uint64_t a, uint64_t b)
{
    __extension__ typedef unsigned __int128 u128;
    u128 t = (u128)a * b;
    uint64_t lo = (uint64_t)t & CF_SA_P;
    uint64_t hi = (uint64_t)(t >> 61);
    uint64_t s = lo + hi;
    return s >= CF_SA_P ? s - CF_SA_P : s;
}

/** Encodes a signed value as an element of Z_p (negative v as p - |v|).
 *  CF_E_OVERFLOW when |v| > CF_SA_ABS_MAX. */
cf_err cf_sa_encode(int64_t v, uint64_t *out);
/** Decodes x < p: values above (p - 1) / 2 are negative. */
int64_t cf_sa_decode(uint64_t x);

/* ---- share vectors ----------------------------------------------------------------------- */

/*
 * Components per event: the count (1) and the amount as two limbs, amount = hi * 2^32 + lo
 * with lo in [0, 2^32) and hi in [-2^31, 2^31), so that any int64 amount is protected
 * exactly and the sums of up to CF_SA_COUNT_MAX events per (window, group) decode without
 * wrapping mod p (cf_sa_result_amount joins the limbs with overflow checking).
 */
#define CF_SA_DIM_MAX 3
#define CF_SA_DIM_DEFAULT 3
enum { CF_SA_C_COUNT = 0, CF_SA_C_AMOUNT = 1, CF_SA_C_AMOUNT_HI = 2 };
/** Most events one (window, group) may sum: count * 2^32 stays below (p - 1) / 2. */
#define CF_SA_COUNT_MAX (UINT64_C(1) << 28)

/**
 * One party's share of an event, or a party's partial sum of such shares: value shares and
 * MAC shares (shares of alpha * value), component-wise mod p. Plain data of fixed size
 * (CF_SA_VALUE_SIZE bytes): the window operator stores it as an opaque value and sums
 * with cf_sa_vec_add; components beyond the configured dimension stay zero.
 */
typedef struct cf_sa_vec {
    uint64_t v[CF_SA_DIM_MAX];
    uint64_t mac[CF_SA_DIM_MAX];
} cf_sa_vec;
#define CF_SA_VALUE_SIZE (sizeof(cf_sa_vec))

/** Sets a cf_sa_vec to zero (callback-shaped for generic window operators). */
void cf_sa_vec_zero(void *dst);
/** dst += src component-wise mod p (callback-shaped: both point to cf_sa_vec). */
void cf_sa_vec_add(void *dst, const void *src);

/** Builds the value vector of one event: count = 1 and the two limbs of the amount. Every
 *  int64 amount is accepted. @p dim must be CF_SA_DIM_DEFAULT. */
cf_err cf_sa_event_values(int64_t amount_minor, unsigned dim, int64_t vals[CF_SA_DIM_MAX]);
/** Joins the summed limbs of a decoded result into *out. false when the sum does not fit
 *  an int64 (the row then says so instead of printing a wrapped value). */
bool cf_sa_join_amount(int64_t lo_sum, int64_t hi_sum, int64_t *out);

/**
 * What a mask is bound to besides the party seed and the sequence number: the id of the
 * audit log that assigned the sequence numbers and the id of the gateway run (a random id
 * drawn at every start, recorded with each batch in the log). Without a log, the log id
 * is random too and nothing can be resumed.
 */
#define CF_SA_ID_LEN 16
typedef struct cf_sa_ctx {
    uint8_t log_id[CF_SA_ID_LEN];
    uint8_t run_id[CF_SA_ID_LEN];
} cf_sa_ctx;

/** Per-event metadata every party receives (the payload of parties >= 1). */
typedef struct cf_sa_meta {
    uint8_t key[16]; /* pseudonymous group key */
    int64_t ts_us;   /* event time (window assignment) */
    uint64_t seq;    /* the gateway's sequence number (the PRG input of parties >= 1) */
} cf_sa_meta;

/** Party 0's per-event payload: metadata plus its value and MAC shares. */
typedef struct cf_sa_payload0 {
    cf_sa_meta meta;
    cf_sa_vec share;
} cf_sa_payload0;

/* ---- options ----------------------------------------------------------------------------- */

typedef struct cf_sa_opts {
    unsigned parties;      /* k, 2..8; default 2 */
    unsigned dim;          /* components: CF_SA_DIM_DEFAULT (count, amount lo, amount hi) */
    uint64_t min_count;    /* release a group only when count >= min_count; default 10 */
    int64_t mac_period_us; /* alpha per period of event time (tumbling windows: the window
                            * size); 0 = one alpha per key epoch. Default 0. */
} cf_sa_opts;
void cf_sa_opts_default(cf_sa_opts *o);

/* ---- gateway: splitting ------------------------------------------------------------------ */

typedef struct cf_sa_gateway cf_sa_gateway;
typedef struct cf_sa_pseudo cf_sa_pseudo; /* pseudonymizer, see below */
/**
 * Creates a splitter from the gateway key (the MAC master and the seeds of parties
 * 1..k-1). Borrows @p gw_key only during the call: secrets are copied into sodium_malloc
 * memory. opts->parties must equal the key's party count. Call cf_sa_gateway_bind before
 * the first split. Returns owned (cf_sa_gateway_destroy).
 */
cf_err cf_sa_gateway_create(cf_sa_gateway **out, const cf_key *gw_key, const cf_sa_opts *opts,
                            char *errstr, size_t errstr_size);
void cf_sa_gateway_destroy(cf_sa_gateway *g);
/** Binds the masks of the following splits to @p ctx (cheap when unchanged). */
void cf_sa_gateway_bind(cf_sa_gateway *g, const cf_sa_ctx *ctx);
/**
 * Party 0's share of one event with event time @p ts_us (selects the MAC period), sequence
 * number @p seq and value vector @p vals (opts->dim components).
 * CF_E_OVERFLOW when a value is out of range (nothing written). @locality gateway thread
 */
cf_err cf_sa_gateway_split(cf_sa_gateway *g, int64_t ts_us, uint64_t seq, const int64_t *vals,
                           cf_sa_vec *share0);

/**
 * Writes the group key of @p ev (the bytes to pseudonymize, e.g. merchant, or merchant and
 * country joined with a separator) into buf[0..size) and returns its length; a return value
 * above @p size is an error. The runtime builds it from its group-by configuration.
 */
typedef size_t (*cf_sa_group_key_fn)(void *opaque, const cf_event *ev, char *buf, size_t size);
/** Group key = merchant id (the default when no function is given). */
size_t cf_sa_group_key_merchant(void *opaque, const cf_event *ev, char *buf, size_t size);

/**
 * The gateway's whole job for a batch: for every event, pseudonymize its group key (through
 * @p ps and its cache), build the value vector (count = 1, amount, ...) and split it.
 * Outputs, for n events: p0[e] is party 0's payload (metadata + shares) and meta[e] the
 * payload of every party >= 1 (metadata only, identical for all of them). Sequence numbers
 * and event times come from ev[e].seq and ev[e].ts_us. @p key_fn NULL groups by merchant.
 * CF_E_INVAL (group key too long) stops the batch with *bad (may be NULL) set to the failing
 * index. Borrows everything. @locality gateway thread
 */
cf_err cf_sa_gateway_protect_events(cf_sa_gateway *g, cf_sa_pseudo *ps, const cf_event *ev,
                                    size_t n, cf_sa_group_key_fn key_fn, void *opaque,
                                    cf_sa_payload0 *p0, cf_sa_meta *meta, size_t *bad);

/* ---- party side -------------------------------------------------------------------------- */

typedef struct cf_sa_party cf_sa_party;
/**
 * Party @p index (0..k-1). Party 0 needs no key (@p party_key NULL); party i >= 1 needs its
 * party-<i>.key (or the gateway or auditor key, from which its seed is taken). Borrows the
 * key. A seeded party must be bound (cf_sa_party_bind) before it derives shares.
 */
cf_err cf_sa_party_create(cf_sa_party **out, unsigned index, const cf_key *party_key,
                          const cf_sa_opts *opts, char *errstr, size_t errstr_size);
void cf_sa_party_destroy(cf_sa_party *p);
unsigned cf_sa_party_index(const cf_sa_party *p);
/** Binds the following derivations to @p ctx, the context the gateway split under. */
void cf_sa_party_bind(cf_sa_party *p, const cf_sa_ctx *ctx);
/**
 * The party's share of the event with sequence number @p seq: party 0 copies @p payload0
 * (required), parties >= 1 regenerate it from their seed (@p payload0 ignored, may be NULL).
 */
void cf_sa_party_share(cf_sa_party *p, uint64_t seq, const cf_sa_vec *payload0, cf_sa_vec *out);
/**
 * Turns a received batch into per-event share vectors out[0..n): party 0 reads @p p0 (its
 * payloads; @p meta may be NULL), party i >= 1 regenerates from meta[e].seq (@p p0 may be
 * NULL). The caller then adds out[e] into the (window of meta ts, meta key) accumulator.
 */
void cf_sa_party_shares(cf_sa_party *p, const cf_sa_payload0 *p0, const cf_sa_meta *meta, size_t n,
                        cf_sa_vec *out);
/** Adds the shares of events seqs[0..n) into @p sum (a partial sum over those events). */
void cf_sa_party_sum(cf_sa_party *p, const uint64_t *seqs, size_t n, const cf_sa_vec *payload0,
                     cf_sa_vec *sum);

/* ---- combiner ---------------------------------------------------------------------------- */

typedef struct cf_sa_result {
    int64_t v[CF_SA_DIM_MAX]; /* decoded sums: count, amount lo, amount hi (when released) */
    unsigned dim;
    bool verified; /* the MAC of every component checked */
    bool released; /* verified and count >= min_count */
    uint32_t epoch;
    uint8_t key_id[CF_KEY_ID_LEN]; /* id of the MAC master the check's alpha came from */
} cf_sa_result;

typedef struct cf_sa_combiner cf_sa_combiner;
/**
 * From the combiner key (the MAC master) or the gateway key. Borrows @p comb_key during the
 * call. The combiner never holds a seed.
 */
cf_err cf_sa_combiner_create(cf_sa_combiner **out, const cf_key *comb_key, const cf_sa_opts *opts,
                             char *errstr, size_t errstr_size);
void cf_sa_combiner_destroy(cf_sa_combiner *c);
/**
 * Adds the k partial sums of (window starting at @p window_start_us, pseudonym @p key) and
 * checks sum(MAC shares) == alpha * sum(value shares) for every component, alpha being the
 * one of the window's MAC period.
 *  CF_OK        verified; out->released says whether count >= min_count (else suppressed)
 *  CF_E_AUTH    a MAC check failed: errstr names the window, the pseudonym and the
 *               component; out->verified = out->released = false and out->v is zeroed
 *  CF_E_OVERFLOW the sums cannot be decoded unambiguously (count > CF_SA_COUNT_MAX)
 */
cf_err cf_sa_combine(cf_sa_combiner *c, int64_t window_start_us, const uint8_t key[16],
                     const cf_sa_vec *partials, unsigned k, cf_sa_result *out, char *errstr,
                     size_t errstr_size);

/**
 * After a MAC failure, the auditor (auditor.key or gateway.key: the seeds, not the MAC
 * master) names the party that altered its partial sum. Given the authoritative list of
 * the group's events (sequence numbers and the context each was protected under, from the
 * audit log), it regenerates the expected partial sum of every party >= 1 and compares:
 * *bad_party = the first party >= 1 whose partial differs, else 0 (every seeded party is
 * exact, so party 0's partial is the altered one).
 */
typedef struct cf_sa_auditor cf_sa_auditor;
cf_err cf_sa_auditor_create(cf_sa_auditor **out, const cf_key *seeds_key, const cf_sa_opts *opts,
                            char *errstr, size_t errstr_size);
void cf_sa_auditor_destroy(cf_sa_auditor *a);
cf_err cf_sa_auditor_attribute(cf_sa_auditor *a, const uint64_t *seqs, const cf_sa_ctx *ctxs,
                               size_t n, const cf_sa_vec *partials, unsigned k, int *bad_party);

/* ---- pseudonyms -------------------------------------------------------------------------- */

#define CF_SA_PSEUDO_LEN 16
#define CF_SA_PSEUDO_ID_MAX 200 /* longer group keys are hashed without the cache */

typedef struct cf_sa_pseudo cf_sa_pseudo;
/**
 * Keyed BLAKE2b-128 of group keys with a bounded cache of @p cache_slots entries (rounded
 * up to a power of two, >= 64; 0 = 16384) so a repeated id costs a lookup. The cache uses
 * open addressing over a probe window of 8 slots with clock (second-chance) replacement.
 * Borrows @p pseudo_key (copied into sodium_malloc memory).
 */
cf_err cf_sa_pseudo_create(cf_sa_pseudo **out, const cf_key *pseudo_key, size_t cache_slots,
                           char *errstr, size_t errstr_size);
void cf_sa_pseudo_destroy(cf_sa_pseudo *ps);
/** out = BLAKE2b-128(key = pseudonym key, id[0..len)). @locality owner thread */
void cf_sa_pseudonymize(cf_sa_pseudo *ps, const void *id, size_t len,
                        uint8_t out[CF_SA_PSEUDO_LEN]);
/** The same without the cache (reference and for ids hashed once). */
void cf_sa_pseudonymize_nocache(const cf_sa_pseudo *ps, const void *id, size_t len,
                                uint8_t out[CF_SA_PSEUDO_LEN]);
typedef struct cf_sa_pseudo_stats {
    uint64_t hits, misses, evictions;
    size_t entries, slots;
} cf_sa_pseudo_stats;
void cf_sa_pseudo_stats_get(const cf_sa_pseudo *ps, cf_sa_pseudo_stats *st);

/* ---- a standalone accumulator: partial sums per (window, pseudonym) ---------------------- */

typedef struct cf_sa_acc cf_sa_acc;
/** Fixed capacity (groups), preallocated; rounded up to a power of two. */
cf_err cf_sa_acc_create(cf_sa_acc **out, size_t capacity);
void cf_sa_acc_destroy(cf_sa_acc *a);
/** sum[(window, key)] += share. CF_E_LIMIT when a new group does not fit. */
cf_err cf_sa_acc_add(cf_sa_acc *a, uint64_t window_id, const uint8_t key[16],
                     const cf_sa_vec *share);
/** CF_E_NOTFOUND when the group has no events. */
cf_err cf_sa_acc_get(const cf_sa_acc *a, uint64_t window_id, const uint8_t key[16], cf_sa_vec *out);
size_t cf_sa_acc_size(const cf_sa_acc *a);
/** Calls cb for every group (in table order). */
void cf_sa_acc_foreach(const cf_sa_acc *a,
                       void (*cb)(void *opaque, uint64_t window_id, const uint8_t key[16],
                                  const cf_sa_vec *sum),
                       void *opaque);
/** Forgets every group (wipes the sums). */
void cf_sa_acc_clear(cf_sa_acc *a);

/* ---- Paillier (baseline) ----------------------------------------------------------------- */

/**
 * Paillier with g = n + 1 over GMP. Private keys decrypt with CRT. Values are big-endian
 * unsigned byte strings (as in the shared test vectors) or hex strings.
 */
typedef struct cf_paillier cf_paillier;
/** Generates a key with an n of @p bits (2048 for the baseline; >= 256 for tests). */
cf_err cf_paillier_keygen(cf_paillier **out, unsigned bits, char *errstr, size_t errstr_size);
/** A private key from the primes (hex). */
cf_err cf_paillier_from_pq_hex(cf_paillier **out, const char *p_hex, const char *q_hex,
                               char *errstr, size_t errstr_size);
/** A public key from n (hex): encrypt and add only. */
cf_err cf_paillier_from_n_hex(cf_paillier **out, const char *n_hex, char *errstr,
                              size_t errstr_size);
void cf_paillier_destroy(cf_paillier *pk);
/** Bytes of a ciphertext (of n^2). */
size_t cf_paillier_ct_bytes(const cf_paillier *pk);
/**
 * Hex helpers for the vectors: c = g^m r^n mod n^2 with the given r (hex). The output is
 * lowercase hex without padding into @p out (at least 2 * ct_bytes + 1). CF_E_INVAL when
 * m >= n, r is not in [1, n) or not coprime to n.
 */
cf_err cf_paillier_encrypt_hex(cf_paillier *pk, const char *m_hex, const char *r_hex, char *out,
                               size_t out_size);
/** m = D(c) into @p out (hex). @p crt selects the CRT path or the lambda/mu path.
 *  CF_E_INVAL when c >= n^2 or the key is public only. */
cf_err cf_paillier_decrypt_hex(cf_paillier *pk, const char *c_hex, bool crt, char *out,
                               size_t out_size);
/** c1 * c2 mod n^2 (hex). */
cf_err cf_paillier_add_hex(cf_paillier *pk, const char *c1_hex, const char *c2_hex, char *out,
                           size_t out_size);
/** c1^k mod n^2 (hex). */
cf_err cf_paillier_mult_hex(cf_paillier *pk, const char *c1_hex, const char *k_hex, char *out,
                            size_t out_size);
/** Fresh-randomness encryption of a small signed value into ct (ct_bytes, big-endian).
 *  Uses a precomputed r^n from the pool when one is ready. */
cf_err cf_paillier_encrypt_i64(cf_paillier *pk, int64_t m, uint8_t *ct);
/** Starts a background thread keeping up to @p size precomputed r^n values ready. */
cf_err cf_paillier_pool_start(cf_paillier *pk, size_t size);
/** Stops the pool thread (also done by destroy). */
void cf_paillier_pool_stop(cf_paillier *pk);
/** Counters: encryptions served from the pool / computed inline. */
void cf_paillier_pool_stats(const cf_paillier *pk, uint64_t *from_pool, uint64_t *inline_);
/** A key parameter as lowercase hex: "n", "g", "lambda", "mu", "crt_lp", "crt_lq", "crt_mp",
 *  "crt_mq" (the last six need the private key). CF_E_INVAL for unknown names. */
cf_err cf_paillier_param_hex(const cf_paillier *pk, const char *name, char *out, size_t out_size);
/** Use the primes to compute r^n by CRT when encrypting (default on for private keys).
 *  Call before cf_paillier_pool_start. */
void cf_paillier_set_crt_encrypt(cf_paillier *pk, bool on);
/** Exponentiation engines (bench/results/protect-2026-11-25.md compares them). */
typedef enum {
    CF_PAILLIER_OPENSSL = 0, /* BN_mod_exp_mont_consttime, Montgomery contexts cached (default) */
    CF_PAILLIER_GMP_SEC,     /* mpz_powm_sec (constant time) */
    CF_PAILLIER_GMP          /* mpz_powm (variable time) */
} cf_paillier_engine;
/** Selects the engine. Call before cf_paillier_pool_start. */
void cf_paillier_set_engine(cf_paillier *pk, cf_paillier_engine e);

/* ---- protectors: one interface, three implementations ------------------------------------ */

#define CF_PROTECT_ABI 2

/** What a protector is built from. Keys are borrowed during create only. */
typedef struct cf_protect_conf {
    cf_sa_opts sa;              /* parties, dim, min_count, mac_period_us */
    const cf_sa_ctx *ctx;       /* lsa: what the masks are bound to (required for lsa) */
    const cf_key *gateway_key;  /* lsa: needed to protect */
    const cf_key *combiner_key; /* lsa: needed to combine (a gateway key works) */
    const cf_key *party_key;    /* lsa: a lone party i >= 1 (distributed mode): party-<i>.key */
    unsigned party_index;       /* lsa: i for party_key */
    unsigned paillier_bits;     /* paillier: modulus size, default 2048 */
    size_t paillier_pool;       /* paillier: precomputed r^n pool size, 0 = no thread */
    int paillier_engine;        /* paillier: cf_paillier_engine, default CF_PAILLIER_OPENSSL */
} cf_protect_conf;

/**
 * A protector covers all three roles for one protection scheme; the runtime creates one
 * instance per thread. Per event the gateway produces one payload per party; every party
 * folds its payloads into accumulators of acc_size bytes per group; the combiner turns the
 * k accumulators of a group into a cf_sa_result.
 */
typedef struct cf_protector_ops {
    uint32_t abi_version; /* == CF_PROTECT_ABI; new hooks only appended */
    const char *name;     /* "plain" | "lsa" | "paillier" */
    cf_err (*create)(void **state, const cf_protect_conf *conf, char *errstr, size_t errstr_size);
    /** Parties that receive payloads (lsa: k; plain and paillier: 1). */
    unsigned (*parties)(const void *state);
    /** Value bytes per event for @p party (metadata cf_sa_meta not included). */
    size_t (*payload_size)(const void *state, unsigned party);
    /** Accumulator bytes per group. */
    size_t (*acc_size)(const void *state);
    /** Gateway: protects one event (value vector of dim components) into payloads[party]. */
    cf_err (*protect)(void *state, uint64_t seq, const int64_t *vals, uint8_t *const *payloads);
    /** Party: acc = zero. */
    void (*acc_zero)(void *state, void *acc);
    /** Party @p party: folds one event (its payload, possibly empty) into acc. */
    cf_err (*absorb)(void *state, unsigned party, uint64_t seq, const uint8_t *payload, void *acc);
    /** Combiner: accs[0..parties) of one group -> result (CF_E_AUTH on a MAC failure). */
    cf_err (*combine)(void *state, int64_t window_start_us, const uint8_t key[16],
                      const void *const *accs, cf_sa_result *out, char *errstr, size_t errstr_size);
    void (*destroy)(void *state);
} cf_protector_ops;

extern const cf_protector_ops cf_protect_plain_ops;
extern const cf_protector_ops cf_protect_lsa_ops;
extern const cf_protector_ops cf_protect_paillier_ops;
/** "plain" | "lsa" | "paillier" -> ops; NULL when unknown. */
const cf_protector_ops *cf_protector_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
