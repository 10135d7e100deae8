/*
 * The canonical event's vocabularies and exact decimal helpers (docs/schema.md).
 *
 * Purpose: names and parsers for transaction types and channels, the ISO 4217 active
 * currency table (with minor-unit exponents), the ISO 3166-1 alpha-2 assigned country list,
 * exact decimal <-> minor-unit conversion and a strict UTF-8 check. Decoders call these for
 * every record, so lookups are O(1) table reads.
 *
 * Bounds: currency and country lookups use two small tables (32 KiB and 1 KiB) built once
 * from the code lists below, on first use, under pthread_once; after that every function is
 * read-only and thread-safe. Nothing here allocates.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "confide/event.h"

/* ---- types and channels ----------------------------------------------------------------- */

static const char *const tx_names[CF_TX__COUNT] = {
#define X(n) #n,
    CF_TX_TYPE_MAP(X)
#undef X
};

static const char *const channel_names[CF_CH__COUNT] = {
#define X(n) #n,
    CF_CHANNEL_MAP(X)
#undef X
};

const char *cf_tx_type_name(cf_tx_type t)
{
    if ((unsigned)t >= (unsigned)CF_TX__COUNT) {
        return NULL;
    }
    return tx_names[t];
}

const char *cf_channel_name(cf_channel c)
{
    if ((unsigned)c >= (unsigned)CF_CH__COUNT) {
        return NULL;
    }
    return channel_names[c];
}

static int name_lookup(const char *const *names, int count, const char *s, size_t len)
{
    if (s == NULL) {
        return -1;
    }
    for (int i = 0; i < count; i++) {
        /* Length first: s may hold NUL bytes, which strncmp would treat as an end. */
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            return i;
        }
    }
    return -1;
}

cf_err cf_tx_type_parse(const char *s, size_t len, cf_tx_type *out)
{
    int i = name_lookup(tx_names, CF_TX__COUNT, s, len);
    if (i < 0) {
        return CF_E_PARSE;
    }
    *out = (cf_tx_type)i;
    return CF_OK;
}

cf_err cf_channel_parse(const char *s, size_t len, cf_channel *out)
{
    int i = name_lookup(channel_names, CF_CH__COUNT, s, len);
    if (i < 0) {
        return CF_E_PARSE;
    }
    *out = (cf_channel)i;
    return CF_OK;
}

/* ---- ISO 4217 and ISO 3166 tables ------------------------------------------------------- */

/*
 * ISO 4217 List One, active alphabetic codes with their minor units (2025 amendments:
 * XCG, ZWG, SLE and VED in; HRK, ANG, SLL, ZWL, MRO, STD, VEF out). The codes whose minor
 * unit is "N.A." in the standard (precious metals, SDR, bond-market units) are listed with
 * exponent 0: amounts in them are whole units. XTS (testing) and XXX (no currency) are
 * deliberately absent: neither can be the currency of a payment.
 */
static const char currency_list[] =
    "AED2AFN2ALL2AMD2AOA2ARS2AUD2AWG2AZN2BAM2BBD2BDT2BGN2BHD3BIF0BMD2BND2BOB2BOV2BRL2"
    "BSD2BTN2BWP2BYN2BZD2CAD2CDF2CHE2CHF2CHW2CLF4CLP0CNY2COP2COU2CRC2CUC2CUP2CVE2CZK2"
    "DJF0DKK2DOP2DZD2EGP2ERN2ETB2EUR2FJD2FKP2GBP2GEL2GHS2GIP2GMD2GNF0GTQ2GYD2HKD2HNL2"
    "HTG2HUF2IDR2ILS2INR2IQD3IRR2ISK0JMD2JOD3JPY0KES2KGS2KHR2KMF0KPW2KRW0KWD3KYD2KZT2"
    "LAK2LBP2LKR2LRD2LSL2LYD3MAD2MDL2MGA2MKD2MMK2MNT2MOP2MRU2MUR2MVR2MWK2MXN2MXV2MYR2"
    "MZN2NAD2NGN2NIO2NOK2NPR2NZD2OMR3PAB2PEN2PGK2PHP2PKR2PLN2PYG0QAR2RON2RSD2RUB2RWF0"
    "SAR2SBD2SCR2SDG2SEK2SGD2SHP2SLE2SOS2SRD2SSP2STN2SVC2SYP2SZL2THB2TJS2TMT2TND3TOP2"
    "TRY2TTD2TWD2TZS2UAH2UGX0USD2USN2UYI0UYU2UYW4UZS2VED2VES2VND0VUV0WST2XAF0XCD2XCG2"
    "XOF0XPF0YER2ZAR2ZMW2ZWG2"
    "XAG0XAU0XBA0XBB0XBC0XBD0XDR0XPD0XPT0XSU0XUA0";

/* ISO 3166-1 alpha-2, the 249 officially assigned codes. */
static const char country_list[] =
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCDCFCG"
    "CHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGL"
    "GMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLA"
    "LBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONP"
    "NRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSV"
    "SXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZW";

/* exponent + 1 per code packed as 5 bits per letter; 0 = not a currency. */
static int8_t currency_table[32 * 32 * 32];
/* bit (second letter) set in the first letter's word = assigned country. */
static uint32_t country_table[26];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static atomic_bool tables_ready; /* lets the hot path skip the pthread_once call */

static void tables_build(void)
{
    for (size_t i = 0; i + 4 <= sizeof(currency_list) - 1; i += 4) {
        const char *c = currency_list + i;
        unsigned key =
            ((unsigned)(c[0] - 'A') << 10) | ((unsigned)(c[1] - 'A') << 5) | (unsigned)(c[2] - 'A');
        currency_table[key] = (int8_t)(c[3] - '0' + 1);
    }
    for (size_t i = 0; i + 2 <= sizeof(country_list) - 1; i += 2) {
        country_table[country_list[i] - 'A'] |= 1u << (country_list[i + 1] - 'A');
    }
    atomic_store_explicit(&tables_ready, true, memory_order_release);
}

static inline void tables_init(void)
{
    if (!atomic_load_explicit(&tables_ready, memory_order_acquire)) {
        pthread_once(&tables_once, tables_build);
    }
}

static inline bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static int currency_lookup(const char *code, size_t len)
{
    if (code == NULL || len != 3 || !is_upper(code[0]) || !is_upper(code[1]) ||
        !is_upper(code[2])) {
        return -1;
    }
    tables_init();
    unsigned key = ((unsigned)(code[0] - 'A') << 10) | ((unsigned)(code[1] - 'A') << 5) |
                   (unsigned)(code[2] - 'A');
    return currency_table[key] - 1;
}

bool cf_currency_valid(const char *code, size_t len)
{
    return currency_lookup(code, len) >= 0;
}

int cf_currency_exponent(const char *code)
{
    /* Stops at the first byte that is not A-Z, so a shorter string is never overread. */
    if (code == NULL || !is_upper(code[0]) || !is_upper(code[1]) || !is_upper(code[2]) ||
        code[3] != '\0') {
        return -1;
    }
    return currency_lookup(code, 3);
}

bool cf_country_valid(const char *code, size_t len)
{
    if (code == NULL || len != 2 || !is_upper(code[0]) || !is_upper(code[1])) {
        return false;
    }
    tables_init();
    return (country_table[code[0] - 'A'] >> (code[1] - 'A')) & 1u;
}

/* ---- amounts ---------------------------------------------------------------------------- */

cf_err cf_amount_parse(const char *s, size_t len, int exponent, int64_t *out)
{
    if (s == NULL || out == NULL || exponent < 0 || exponent > 18) {
        return CF_E_PARSE;
    }
    size_t i = 0;
    bool neg = false;
    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    /* Accumulate the magnitude as uint64 so that INT64_MIN is representable. */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t mag = 0;
    bool overflow = false;
    size_t int_digits = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, int_digits++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (mag > (limit - d) / 10u) {
            overflow = true;
        } else {
            mag = mag * 10u + d;
        }
    }
    if (int_digits == 0) {
        return CF_E_PARSE;
    }
    int frac_digits = 0;
    if (i < len && s[i] == '.') {
        i++;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (frac_digits >= exponent) {
                return CF_E_PARSE;
            }
            unsigned d = (unsigned)(s[i] - '0');
            if (mag > (limit - d) / 10u) {
                overflow = true;
            } else {
                mag = mag * 10u + d;
            }
            frac_digits++;
        }
        if (frac_digits == 0) {
            return CF_E_PARSE;
        }
    }
    if (i != len) {
        return CF_E_PARSE;
    }
    for (; frac_digits < exponent; frac_digits++) {
        if (mag > limit / 10u) {
            overflow = true;
        } else {
            mag *= 10u;
        }
    }
    if (overflow) {
        return CF_E_OVERFLOW;
    }
    if (neg) {
        *out = mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag;
    } else {
        *out = (int64_t)mag;
    }
    return CF_OK;
}

size_t cf_amount_format(int64_t minor, int exponent, char *buf, size_t buf_size)
{
    if (exponent < 0) {
        exponent = 0;
    }
    if (exponent > 18) {
        exponent = 18;
    }
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    char tmp[48];
    size_t n = 0;
    int digits = 0;
    /* Digits in reverse: at least exponent + 1 of them so "0.05" keeps its leading zero. */
    do {
        if (digits == exponent && exponent > 0) {
            tmp[n++] = '.';
        }
        tmp[n++] = (char)('0' + mag % 10u);
        mag /= 10u;
        digits++;
    } while (mag != 0 || digits <= exponent);
    if (minor < 0) {
        tmp[n++] = '-';
    }
    if (buf == NULL || buf_size < n + 1) {
        if (buf != NULL && buf_size > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        buf[k] = tmp[n - 1 - k];
    }
    buf[n] = '\0';
    return n;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

bool cf_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    if (s == NULL) {
        return len == 0;
    }
    while (i < len) {
        /* ASCII fast path, 8 bytes at a time. */
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if ((w & UINT64_C(0x8080808080808080)) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* bounds of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) {
                lo = 0xA0; /* overlong */
            } else if (c == 0xED) {
                hi = 0x9F; /* surrogates */
            }
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) {
                lo = 0x90; /* overlong */
            } else if (c == 0xF4) {
                hi = 0x8F; /* above U+10FFFF */
            }
        } else {
            return false;
        }
        if (len - i <= need) {
            return false;
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            return false;
        }
        for (size_t k = 2; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
        }
        i += need + 1;
    }
    return true;
}
