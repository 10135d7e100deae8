/*
 * Private view of the transaction generator (src/io/gen.c), for unit tests and for the
 * io module only. Not part of the public API.
 */
#ifndef CF_IO_GEN_INT_H
#define CF_IO_GEN_INT_H

#include <stdint.h>

#include "confide/io.h"

/* A customer's hidden profile (Fraud-Detection-Handbook, chapter 3.2). */
typedef struct cf__gen_customer {
    double x, y;               /* location on the 100 x 100 grid */
    double mean_amount;        /* U(5, 100), currency units */
    double std_amount;         /* mean_amount / 2 */
    double mean_nb_tx_per_day; /* U(0, 4) */
    uint32_t n_terminals;      /* terminals strictly within the radius */
    char currency[4];
} cf__gen_customer;

/** Profile of customer @p id. CF_E_INVAL when @p id is out of range. @locality any */
cf_err cf__gen_customer_get(const cf_gen *g, uint32_t id, cf__gen_customer *out);

/** Terminal @p id's country (2 letters + NUL). CF_E_INVAL when out of range. */
cf_err cf__gen_terminal_country(const cf_gen *g, uint32_t id, char out[3]);

#endif
