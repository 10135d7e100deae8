/*
 * Synthetic payment transactions: the Fraud-Detection-Handbook simulator (Le Borgne,
 * Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud
 * Detection - Practical Handbook", 2022, chapter 3.2 "Transaction data simulator"),
 * re-implemented in C and made streaming.
 *
 * Model (as published): customers and terminals sit uniformly on a 100 x 100 grid; a
 * customer uses the terminals strictly within `radius` of its location. Every day a
 * customer makes Poisson(mean_nb_tx_per_day) transactions at times Normal(43200 s, 20000 s)
 * (kept only inside the day), amounts Normal(mean, mean/2) (a negative draw is replaced by
 * U(0, 2 mean)), rounded to cents, at a terminal drawn uniformly among its own. Fraud:
 * (1) amount > 220; (2) 2 terminals drawn each day are compromised for 28 days (the day of
 * the draw included): all their transactions are fraud; (3) 3 customers drawn each day are
 * compromised for 14 days: each of their transactions is fraud with probability 1/3 and
 * then has its amount multiplied by 5. Later scenarios overwrite earlier labels, as in the
 * handbook. Streaming differences from the notebook: scenario 3 selects each transaction
 * with probability 1/3 instead of exactly int(n/3) of a 14-day window (which would need the
 * future), a customer compromised twice in overlapping windows is not multiplied twice, and
 * draws happen on every day including the last.
 *
 * Added for the pipeline (not in the handbook): a currency per customer, a country per
 * terminal (mostly BE, some neighbours, ~1% from a fixed high-risk list), a channel per
 * transaction (POS / ECOM / ATM / P2P) and a type (PAYMENT, CASH_OUT at ATMs, TRANSFER for
 * P2P, ~1% REFUND with a negative amount). Amounts are in the customer's currency units;
 * every currency used has 2 minor digits, so amount_minor is always cents.
 *
 * Randomness: xoshiro256** (Blackman and Vigna 2018) seeded by splitmix64, one stream per
 * purpose (customers, terminals, transactions, fraud) so that the streams do not shift into
 * each other; normals by Box-Muller, Poisson by Knuth's multiplication method (means <= 4),
 * bounded integers by Lemire's multiply-and-reject. The output is a pure function of the
 * options (given the same libm, which computes log/sin/cos).
 *
 * Bounds: memory is the profiles (about 80 B per customer and terminal plus 4 B per
 * customer-terminal link, at most LINKS_MAX links: a denser world is refused with
 * CF_E_LIMIT) and one day of transactions (48 B each); a day is generated,
 * radix-sorted by time and then handed out one event at a time, no allocation per event.
 * Threads: a cf_gen is used by one thread at a time. Ownership: the caller owns the cf_gen.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/io.h"
#include "gen_int.h"

#define DAY_US INT64_C(86400000000)
#define CUSTOMERS_MAX 10000000u
#define TERMINALS_MAX 10000000u
#define DAYS_MAX 36500u
#define IDX_BITS 27 /* transaction index inside a day's sort key */
#define DAY_TX_MAX (UINT32_C(1) << IDX_BITS)
#define GRID_MAX 1024
#define LINKS_MAX (UINT64_C(1) << 27) /* customer-terminal links: 512 MiB */

enum { STREAM_CUSTOMERS = 1, STREAM_TERMINALS, STREAM_TX, STREAM_FRAUD };

/* ---- PRNG ---------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s[4];
    double spare; /* second Box-Muller normal */
    bool has_spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    /* Two splitmix64 rounds mix seed and stream before the four state words are drawn, so
     * neighbouring seeds and streams give unrelated states (never all zero). */
    uint64_t x = seed;
    uint64_t k = splitmix64(&x) ^ (stream * UINT64_C(0xD1B54A32D192ED03));
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&k);
    }
    r->has_spare = false;
    r->spare = 0.0;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1), 53 bits. */
static inline double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static inline double rng_uniform(rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_unit(r);
}

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire 2019). */
static uint32_t rng_below(rng *r, uint32_t n)
{
    uint64_t m = (rng_next(r) >> 32) * (uint64_t)n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (rng_next(r) >> 32) * (uint64_t)n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

static double rng_normal(rng *r, double mean, double sd)
{
    if (r->has_spare) {
        r->has_spare = false;
        return mean + sd * r->spare;
    }
    double u1 = 1.0 - rng_unit(r); /* (0, 1]: log(u1) is finite */
    double u2 = rng_unit(r);
    double rad = sqrt(-2.0 * log(u1));
    double ang = 2.0 * M_PI * u2;
    r->spare = rad * sin(ang);
    r->has_spare = true;
    return mean + sd * rad * cos(ang);
}

/* Knuth's method; @p exp_neg_lambda = exp(-lambda), lambda small (<= 4 here). */
static uint32_t rng_poisson(rng *r, double exp_neg_lambda)
{
    uint32_t k = 0;
    double p = rng_unit(r);
    while (p > exp_neg_lambda) {
        k++;
        p *= rng_unit(r);
    }
    return k;
}

/* ---- attribute tables ---------------------------------------------------------------- */

/* Cumulative probabilities in 1/1,000,000. Every currency has 2 minor digits (ISO 4217). */
static const struct {
    const char *code;
    uint32_t cum;
} currencies[] = {
    {"EUR", 920000}, {"USD", 945000}, {"GBP", 965000}, {"CHF", 975000},  {"SEK", 982000},
    {"PLN", 989000}, {"DKK", 994000}, {"NOK", 997000}, {"CZK", 1000000},
};

static const char *const home_country = "BE";
/* Neighbours and frequent travel destinations. */
static const char *const other_countries[] = {"FR", "NL", "DE", "LU", "GB", "ES", "IT", "US"};
/* A fixed list standing in for a high-risk-jurisdictions list (FATF call-for-action and
 * increased-monitoring style); compliance rules are configured with their own list. */
static const char *const high_risk_countries[] = {"KP", "IR", "MM", "SY", "YE", "AF"};
#define COUNTRY_OTHER_PPM 40000     /* 4% of terminals abroad */
#define COUNTRY_HIGH_RISK_PPM 10000 /* 1% in a high-risk country */

/* Channel per transaction, cumulative in 1/1,000,000: POS 62%, ECOM 28%, ATM 7%, P2P 3%. */
#define CH_POS_CUM 620000u
#define CH_ECOM_CUM 900000u
#define CH_ATM_CUM 970000u
#define REFUND_PPM 10000u /* of POS and ECOM transactions */

/* ---- state --------------------------------------------------------------------------- */

typedef struct customer {
    double x, y, mean_amount, std_amount, lambda, exp_neg_lambda;
    size_t term_off;
    uint32_t term_n;
    uint32_t compromised_until; /* scenario 3: first day no longer compromised */
    uint8_t currency;
} customer;

typedef struct terminal {
    double x, y;
    uint32_t compromised_until; /* scenario 2 */
    char country[3];
} terminal;

typedef struct gtx {
    int64_t t_us; /* offset inside the day */
    int64_t amount_minor;
    uint32_t customer, terminal;
    uint8_t channel, type;
    int8_t fraud, scenario;
} gtx;

struct cf_gen {
    cf_gen_opts o;
    customer *cust;
    terminal *term;
    uint32_t *links; /* customers' terminal lists, back to back */
    size_t n_links;
    rng tx_rng, fraud_rng;
    uint32_t day;  /* next day to generate */
    gtx *tx;       /* the current day, in generation order */
    uint64_t *key; /* (t_us << IDX_BITS) | index, sorted */
    uint64_t *tmp; /* radix sort scratch */
    uint32_t cap, n, pos;
    uint64_t next_id;
    cf_err failed;          /* sticky: a day that failed half-way is not handed out */
    uint32_t count[8][256]; /* radix sort histograms */
};

void cf_gen_opts_default(cf_gen_opts *o)
{
    CF_ASSERT(o != NULL);
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->customers = 5000;
    o->terminals = 10000;
    o->days = 1;
    o->start_us = INT64_C(1522540800) * 1000000; /* 2018-04-01, the handbook's start */
    o->radius = 5.0;
}

/* ---- profiles ------------------------------------------------------------------------ */

static void make_customers(cf_gen *g)
{
    rng r;
    rng_seed(&r, g->o.seed, STREAM_CUSTOMERS);
    size_t nc = sizeof(currencies) / sizeof(currencies[0]);
    for (uint32_t i = 0; i < g->o.customers; i++) {
        customer *c = &g->cust[i];
        c->x = rng_uniform(&r, 0, 100);
        c->y = rng_uniform(&r, 0, 100);
        c->mean_amount = rng_uniform(&r, 5, 100);
        c->std_amount = c->mean_amount / 2;
        c->lambda = rng_uniform(&r, 0, 4);
        c->exp_neg_lambda = exp(-c->lambda);
        uint32_t u = rng_below(&r, 1000000);
        c->currency = 0;
        while ((size_t)c->currency + 1 < nc && u >= currencies[c->currency].cum) {
            c->currency++;
        }
    }
}

static void make_terminals(cf_gen *g)
{
    rng r;
    rng_seed(&r, g->o.seed, STREAM_TERMINALS);
    size_t n_other = sizeof(other_countries) / sizeof(other_countries[0]);
    size_t n_risk = sizeof(high_risk_countries) / sizeof(high_risk_countries[0]);
    for (uint32_t i = 0; i < g->o.terminals; i++) {
        terminal *t = &g->term[i];
        t->x = rng_uniform(&r, 0, 100);
        t->y = rng_uniform(&r, 0, 100);
        uint32_t u = rng_below(&r, 1000000);
        const char *cc = home_country;
        if (u < COUNTRY_HIGH_RISK_PPM) {
            cc = high_risk_countries[rng_below(&r, (uint32_t)n_risk)];
        } else if (u < COUNTRY_HIGH_RISK_PPM + COUNTRY_OTHER_PPM) {
            cc = other_countries[rng_below(&r, (uint32_t)n_other)];
        }
        memcpy(t->country, cc, 3);
    }
}

static int cell_of(double v, double cell, int n)
{
    int i = (int)(v / cell);
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

/*
 * Links every customer to the terminals strictly within the radius, as the handbook does,
 * through a uniform grid of cells at least `radius` wide so that only neighbouring cells are
 * scanned. A list's order (cell by cell, ids ascending inside a cell) only matters for
 * determinism, which the fixed grid gives.
 */
static cf_err link_terminals(cf_gen *g, char *errstr, size_t errstr_size)
{
    cf_err err = CF_OK;
    double r = g->o.radius;
    int n = (int)ceil(100.0 / r);
    n = n < 1 ? 1 : (n > GRID_MAX ? GRID_MAX : n);
    double cell = 100.0 / n;
    size_t ncells = (size_t)n * (size_t)n;
    uint32_t *start = cf_calloc(ncells + 1, sizeof(*start));
    uint32_t *order = cf_malloc((size_t)g->o.terminals * sizeof(*order));
    size_t cap = 0;
    if (start == NULL || order == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "gen: no memory for the terminal grid");
        goto done;
    }
    /* Counting sort of terminal ids by cell; ids stay ascending inside a cell. */
    for (uint32_t t = 0; t < g->o.terminals; t++) {
        size_t c = (size_t)cell_of(g->term[t].y, cell, n) * n + cell_of(g->term[t].x, cell, n);
        start[c + 1]++;
    }
    for (size_t c = 0; c < ncells; c++) {
        start[c + 1] += start[c];
    }
    {
        uint32_t *fill = cf_malloc(ncells * sizeof(*fill));
        if (fill == NULL) {
            err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "gen: no memory for the grid");
            goto done;
        }
        memcpy(fill, start, ncells * sizeof(*fill));
        for (uint32_t t = 0; t < g->o.terminals; t++) {
            size_t c = (size_t)cell_of(g->term[t].y, cell, n) * n + cell_of(g->term[t].x, cell, n);
            order[fill[c]++] = t;
        }
        cf_free(fill);
    }
    double r2 = r * r;
    for (uint32_t i = 0; i < g->o.customers; i++) {
        customer *cu = &g->cust[i];
        int x0 = cell_of(cu->x - r, cell, n), x1 = cell_of(cu->x + r, cell, n);
        int y0 = cell_of(cu->y - r, cell, n), y1 = cell_of(cu->y + r, cell, n);
        cu->term_off = g->n_links;
        for (int cy = y0; cy <= y1; cy++) {
            for (int cx = x0; cx <= x1; cx++) {
                size_t c = (size_t)cy * n + cx;
                for (uint32_t k = start[c]; k < start[c + 1]; k++) {
                    const terminal *t = &g->term[order[k]];
                    double dx = cu->x - t->x, dy = cu->y - t->y;
                    if (dx * dx + dy * dy >= r2) {
                        continue;
                    }
                    if (g->n_links == LINKS_MAX) {
                        err = cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                                         "gen: more than %llu customer-terminal links; use "
                                         "fewer customers or terminals or a smaller radius",
                                         (unsigned long long)LINKS_MAX);
                        goto done;
                    }
                    if (g->n_links == cap) {
                        size_t ncap = cap == 0 ? 4096 : cap * 2;
                        uint32_t *nl = cf_realloc(g->links, ncap * sizeof(*nl));
                        if (nl == NULL) {
                            err =
                                cf_err_set(CF_E_NOMEM, errstr, errstr_size,
                                           "gen: no memory for %zu customer-terminal links", ncap);
                            goto done;
                        }
                        g->links = nl;
                        cap = ncap;
                    }
                    g->links[g->n_links++] = order[k];
                }
            }
        }
        cu->term_n = (uint32_t)(g->n_links - cu->term_off);
    }
done:
    cf_free(start);
    cf_free(order);
    return err;
}

/* ---- one day ------------------------------------------------------------------------- */

static cf_err grow(cf_gen *g, uint32_t need)
{
    if (need <= g->cap) {
        return CF_OK;
    }
    if (need > DAY_TX_MAX) {
        return CF_E_LIMIT;
    }
    uint64_t ncap64 = g->cap < 1024 ? 1024 : (uint64_t)g->cap * 2;
    while (ncap64 < need) {
        ncap64 *= 2;
    }
    uint32_t ncap = ncap64 > DAY_TX_MAX ? DAY_TX_MAX : (uint32_t)ncap64;
    gtx *tx = cf_realloc(g->tx, (size_t)ncap * sizeof(*tx));
    if (tx == NULL) {
        return CF_E_NOMEM;
    }
    g->tx = tx;
    uint64_t *key = cf_realloc(g->key, (size_t)ncap * sizeof(*key));
    if (key == NULL) {
        return CF_E_NOMEM;
    }
    g->key = key;
    uint64_t *tmp = cf_realloc(g->tmp, (size_t)ncap * sizeof(*tmp));
    if (tmp == NULL) {
        return CF_E_NOMEM;
    }
    g->tmp = tmp;
    g->cap = ncap;
    return CF_OK;
}

/* LSD radix sort of 64-bit keys, 8 bits a pass; passes where every key shares the digit
 * are skipped (the top bits of a day's keys mostly do). */
static void radix_sort(uint32_t count[8][256], uint64_t *a, uint64_t *tmp, uint32_t n)
{
    memset(count, 0, 8 * sizeof(count[0]));
    for (uint32_t i = 0; i < n; i++) {
        uint64_t k = a[i];
        for (int p = 0; p < 8; p++) {
            count[p][(k >> (8 * p)) & 0xff]++;
        }
    }
    uint64_t *src = a, *dst = tmp;
    for (int p = 0; p < 8; p++) {
        uint32_t *c = count[p];
        if (c[(src[0] >> (8 * p)) & 0xff] == n) {
            continue;
        }
        uint32_t sum = 0;
        for (int d = 0; d < 256; d++) {
            uint32_t v = c[d];
            c[d] = sum;
            sum += v;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint64_t k = src[i];
            dst[c[(k >> (8 * p)) & 0xff]++] = k;
        }
        uint64_t *s = src;
        src = dst;
        dst = s;
    }
    if (src != a) {
        memcpy(a, src, (size_t)n * sizeof(*a));
    }
}

static void pick_type(gtx *t, uint64_t u)
{
    uint32_t ch = (uint32_t)((u >> 32) % 1000000u);
    uint32_t rf = (uint32_t)((u & 0xffffffffu) % 1000000u);
    if (ch < CH_POS_CUM) {
        t->channel = CF_CH_POS;
    } else if (ch < CH_ECOM_CUM) {
        t->channel = CF_CH_ECOM;
    } else if (ch < CH_ATM_CUM) {
        t->channel = CF_CH_ATM;
    } else {
        t->channel = CF_CH_P2P;
    }
    switch (t->channel) {
    case CF_CH_ATM:
        t->type = CF_TX_CASH_OUT;
        break;
    case CF_CH_P2P:
        t->type = CF_TX_TRANSFER;
        break;
    default:
        t->type = rf < REFUND_PPM ? CF_TX_REFUND : CF_TX_PAYMENT;
        break;
    }
}

static cf_err gen_day(cf_gen *g)
{
    uint32_t day = g->day;
    g->n = 0;
    g->pos = 0;
    rng *r = &g->tx_rng;
    for (uint32_t ci = 0; ci < g->o.customers; ci++) {
        const customer *c = &g->cust[ci];
        uint32_t k = rng_poisson(r, c->exp_neg_lambda);
        for (uint32_t j = 0; j < k; j++) {
            double ts = rng_normal(r, 86400.0 / 2, 20000.0);
            if (!(ts >= 0.0 && ts < 86400.0)) {
                continue;
            }
            double amount = rng_normal(r, c->mean_amount, c->std_amount);
            if (amount < 0) {
                amount = rng_uniform(r, 0, c->mean_amount * 2);
            }
            if (c->term_n == 0) {
                continue; /* the handbook skips customers without terminals */
            }
            cf_err err = grow(g, g->n + 1);
            if (err != CF_OK) {
                return err;
            }
            gtx *t = &g->tx[g->n];
            t->t_us = (int64_t)(ts * 1e6);
            if (t->t_us >= DAY_US) {
                t->t_us = DAY_US - 1;
            }
            t->amount_minor = llround(amount * 100.0);
            t->customer = ci;
            t->terminal = g->links[c->term_off + rng_below(r, c->term_n)];
            pick_type(t, rng_next(r));
            t->fraud = 0;
            t->scenario = 0;
            g->n++;
        }
    }

    /* Fraud scenarios in the handbook's order: later ones overwrite earlier labels. */
    rng *fr = &g->fraud_rng;
    uint32_t picks[3];
    uint32_t n_term = g->o.terminals < 2 ? g->o.terminals : 2;
    for (uint32_t i = 0; i < n_term; i++) {
        uint32_t t;
        bool dup;
        do {
            t = rng_below(fr, g->o.terminals);
            dup = false;
            for (uint32_t j = 0; j < i; j++) {
                dup = dup || picks[j] == t;
            }
        } while (dup);
        picks[i] = t;
        g->term[t].compromised_until = day + 28;
    }
    uint32_t n_cust = g->o.customers < 3 ? g->o.customers : 3;
    for (uint32_t i = 0; i < n_cust; i++) {
        uint32_t c;
        bool dup;
        do {
            c = rng_below(fr, g->o.customers);
            dup = false;
            for (uint32_t j = 0; j < i; j++) {
                dup = dup || picks[j] == c;
            }
        } while (dup);
        picks[i] = c;
        g->cust[c].compromised_until = day + 14;
    }
    for (uint32_t i = 0; i < g->n; i++) {
        gtx *t = &g->tx[i];
        if (t->amount_minor > 22000) {
            t->fraud = 1;
            t->scenario = 1;
        }
        if (g->term[t->terminal].compromised_until > day) {
            t->fraud = 1;
            t->scenario = 2;
        }
        if (g->cust[t->customer].compromised_until > day && rng_below(fr, 3) == 0) {
            t->amount_minor *= 5;
            t->fraud = 1;
            t->scenario = 3;
        }
        if (t->type == CF_TX_REFUND) {
            t->amount_minor = -t->amount_minor;
        }
        g->key[i] = ((uint64_t)t->t_us << IDX_BITS) | i;
    }
    if (g->n > 0) {
        radix_sort(g->count, g->key, g->tmp, g->n);
    }
    g->day++;
    return CF_OK;
}

/* ---- public API ---------------------------------------------------------------------- */

cf_err cf_gen_create(cf_gen **out, const cf_gen_opts *o, char *errstr, size_t errstr_size)
{
    cf_err err;
    cf_gen *g = NULL;
    CF_ASSERT(out != NULL && o != NULL);
    *out = NULL;
    int64_t span, end;
    if (o->customers == 0 || o->customers > CUSTOMERS_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "gen: customers must be 1..%u (got %u)",
                          CUSTOMERS_MAX, o->customers);
    }
    if (o->terminals == 0 || o->terminals > TERMINALS_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "gen: terminals must be 1..%u (got %u)",
                          TERMINALS_MAX, o->terminals);
    }
    if (o->days == 0 || o->days > DAYS_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "gen: days must be 1..%u (got %u)",
                          DAYS_MAX, o->days);
    }
    if (!(o->radius > 0.0 && o->radius <= 1000.0)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "gen: radius must be in (0, 1000] (got %g)", o->radius);
    }
    if (__builtin_mul_overflow((int64_t)o->days, DAY_US, &span) ||
        __builtin_add_overflow(o->start_us, span, &end)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "gen: start + days overflows time");
    }
    /* Each customer links to about terminals * pi r^2 / 100^2 terminals; refuse a world
     * whose link table would not fit before spending time and memory on it. */
    double area = M_PI * o->radius * o->radius / 10000.0;
    double links = (double)o->customers * (double)o->terminals * (area < 1.0 ? area : 1.0);
    if (links > 0.9 * (double)LINKS_MAX) {
        return cf_err_set(CF_E_LIMIT, errstr, errstr_size,
                          "gen: %u customers x %u terminals at radius %g need about %.0f "
                          "customer-terminal links (limit %llu); use fewer customers or "
                          "terminals or a smaller radius",
                          o->customers, o->terminals, o->radius, links,
                          (unsigned long long)LINKS_MAX);
    }
    g = cf_calloc(1, sizeof(*g));
    if (g == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size, "gen: out of memory");
        goto fail;
    }
    g->o = *o;
    g->cust = cf_calloc(o->customers, sizeof(*g->cust));
    g->term = cf_calloc(o->terminals, sizeof(*g->term));
    if (g->cust == NULL || g->term == NULL) {
        err = cf_err_set(CF_E_NOMEM, errstr, errstr_size,
                         "gen: no memory for %u customers and %u terminals", o->customers,
                         o->terminals);
        goto fail;
    }
    make_customers(g);
    make_terminals(g);
    err = link_terminals(g, errstr, errstr_size);
    if (err != CF_OK) {
        goto fail;
    }
    double expect = 0;
    for (uint32_t i = 0; i < o->customers; i++) {
        expect += g->cust[i].lambda;
    }
    /* Room for a typical day plus 25%; an unusual day grows the buffers once. */
    double want = expect * 1.25 + 1024;
    err = grow(g, want > DAY_TX_MAX ? DAY_TX_MAX : (uint32_t)want);
    if (err != CF_OK) {
        err = cf_err_set(err, errstr, errstr_size, "gen: no memory for a day of transactions");
        goto fail;
    }
    rng_seed(&g->tx_rng, o->seed, STREAM_TX);
    rng_seed(&g->fraud_rng, o->seed, STREAM_FRAUD);
    *out = g;
    return CF_OK;
fail:
    cf_gen_destroy(g);
    return err;
}

void cf_gen_destroy(cf_gen *g)
{
    if (g == NULL) {
        return;
    }
    cf_free(g->cust);
    cf_free(g->term);
    cf_free(g->links);
    cf_free(g->tx);
    cf_free(g->key);
    cf_free(g->tmp);
    cf_free(g);
}

/* "C" or "T" followed by the decimal id, NUL-terminated. */
static void format_id(char *dst, char prefix, uint32_t v)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    *dst++ = prefix;
    while (n > 0) {
        *dst++ = tmp[--n];
    }
    *dst = '\0';
}

cf_err cf_gen_next(cf_gen *g, cf_event *ev)
{
    CF_ASSERT(g != NULL && ev != NULL);
    if (g->failed != CF_OK) {
        return g->failed;
    }
    while (g->pos == g->n) {
        if (g->day >= g->o.days) {
            return CF_E_EOF;
        }
        cf_err err = gen_day(g);
        if (err != CF_OK) {
            g->failed = err;
            g->n = g->pos = 0;
            return err;
        }
    }
    const gtx *t = &g->tx[g->key[g->pos] & (DAY_TX_MAX - 1)];
    g->pos++;
    ev->event_id = g->next_id++;
    ev->ts_us = g->o.start_us + (int64_t)(g->day - 1) * DAY_US + t->t_us;
    ev->amount_minor = t->amount_minor;
    ev->ingest_ns = 0;
    ev->seq = 0;
    format_id(ev->account, 'C', t->customer);
    format_id(ev->merchant, 'T', t->terminal);
    memcpy(ev->currency, currencies[g->cust[t->customer].currency].code, 4);
    memcpy(ev->country, g->term[t->terminal].country, 3);
    ev->type = t->type;
    ev->channel = t->channel;
    ev->fraud = t->fraud;
    ev->fraud_scenario = t->scenario;
    return CF_OK;
}

cf_err cf__gen_customer_get(const cf_gen *g, uint32_t id, cf__gen_customer *out)
{
    CF_ASSERT(g != NULL && out != NULL);
    if (id >= g->o.customers) {
        return CF_E_INVAL;
    }
    const customer *c = &g->cust[id];
    out->x = c->x;
    out->y = c->y;
    out->mean_amount = c->mean_amount;
    out->std_amount = c->std_amount;
    out->mean_nb_tx_per_day = c->lambda;
    out->n_terminals = c->term_n;
    memcpy(out->currency, currencies[c->currency].code, 4);
    return CF_OK;
}

cf_err cf__gen_terminal_country(const cf_gen *g, uint32_t id, char out[3])
{
    CF_ASSERT(g != NULL && out != NULL);
    if (id >= g->o.terminals) {
        return CF_E_INVAL;
    }
    memcpy(out, g->term[id].country, 3);
    return CF_OK;
}
