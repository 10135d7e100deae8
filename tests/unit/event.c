#include "cf_test.h"
#include "confide/core.h"
#include "confide/event.h"

static void test_names(void)
{
    CHECK_STR(cf_tx_type_name(CF_TX_PAYMENT), "PAYMENT");
    CHECK_STR(cf_tx_type_name(CF_TX_REFUND), "REFUND");
    CHECK(cf_tx_type_name(CF_TX__COUNT) == NULL);
    CHECK(cf_tx_type_name((cf_tx_type)-1) == NULL);
    CHECK_STR(cf_channel_name(CF_CH_BRANCH), "BRANCH");
    CHECK(cf_channel_name(CF_CH__COUNT) == NULL);
    for (int i = 0; i < CF_TX__COUNT; i++) {
        cf_tx_type t = CF_TX__COUNT;
        const char *n = cf_tx_type_name((cf_tx_type)i);
        CHECK_OK(cf_tx_type_parse(n, strlen(n), &t));
        CHECK_EQ(t, i);
    }
    for (int i = 0; i < CF_CH__COUNT; i++) {
        cf_channel c = CF_CH__COUNT;
        const char *n = cf_channel_name((cf_channel)i);
        CHECK_OK(cf_channel_parse(n, strlen(n), &c));
        CHECK_EQ(c, i);
    }
    cf_tx_type t;
    cf_channel c;
    CHECK_EQ(cf_tx_type_parse("payment", 7, &t), CF_E_PARSE);
    CHECK_EQ(cf_tx_type_parse("PAYMENTS", 8, &t), CF_E_PARSE);
    CHECK_EQ(cf_tx_type_parse("PAYMENT", 6, &t), CF_E_PARSE); /* prefix "PAYMEN" */
    CHECK_EQ(cf_tx_type_parse("", 0, &t), CF_E_PARSE);
    CHECK_OK(cf_tx_type_parse("CASH_OUTx", 8, &t));
    CHECK_EQ(t, CF_TX_CASH_OUT);
    CHECK_EQ(cf_channel_parse("POSX", 4, &c), CF_E_PARSE);
    CHECK_EQ(cf_channel_parse("MOTO\0\0\0\0\0", 9, &c), CF_E_PARSE); /* found by fuzzing */
    CHECK_EQ(cf_tx_type_parse("DEBIT\0", 6, &t), CF_E_PARSE);
    CHECK_EQ(cf_channel_parse("P2P", 3, &c), CF_OK);
    CHECK_EQ(c, CF_CH_P2P);
}

static void test_currency_table(void)
{
    static const struct {
        const char *code;
        int exp;
    } known[] = {{"EUR", 2}, {"USD", 2}, {"JPY", 0}, {"BHD", 3}, {"KWD", 3}, {"CLF", 4},
                 {"UYW", 4}, {"KRW", 0}, {"ISK", 0}, {"TND", 3}, {"XOF", 0}, {"CHF", 2},
                 {"GBP", 2}, {"VND", 0}, {"XCG", 2}, {"ZWG", 2}, {"SLE", 2}, {"VES", 2},
                 {"OMR", 3}, {"IQD", 3}, {"LYD", 3}, {"JOD", 3}, {"CLP", 0}, {"PYG", 0}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        CHECK(cf_currency_valid(known[i].code, 3));
        CHECK_EQ(cf_currency_exponent(known[i].code), known[i].exp);
    }
    const char *bad[] = {"eur", "EU",  "EURO", "ABC", "DEM", "FRF", "HRK", "XYZ",
                         "ZZZ", "AAA", "E1R",  "",    "VEF", "MRO", "XXX", "XTS"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!cf_currency_valid(bad[i], strlen(bad[i])));
        CHECK_EQ(cf_currency_exponent(bad[i]), -1);
    }
    CHECK(!cf_currency_valid("EURX", 4));
    CHECK(cf_currency_valid("EURX", 3));
    CHECK_EQ(cf_currency_exponent(NULL), -1);
    /* Count every valid code: the active list has well over 150. */
    int n = 0;
    char c[4] = {0};
    for (c[0] = 'A'; c[0] <= 'Z'; c[0]++) {
        for (c[1] = 'A'; c[1] <= 'Z'; c[1]++) {
            for (c[2] = 'A'; c[2] <= 'Z'; c[2]++) {
                if (cf_currency_valid(c, 3)) {
                    n++;
                    int e = cf_currency_exponent(c);
                    CHECK(e >= 0 && e <= 4);
                }
            }
        }
    }
    CHECK(n >= 170 && n <= 190);
}

static void test_country_table(void)
{
    const char *good[] = {"BE", "DE", "US", "GB", "FR", "JP", "AX", "ZW", "SS", "XK"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]) - 1; i++) {
        CHECK(cf_country_valid(good[i], 2));
    }
    CHECK(!cf_country_valid("XK", 2)); /* user-assigned, not ISO-assigned */
    CHECK(!cf_country_valid("UK", 2));
    CHECK(!cf_country_valid("EU", 2));
    CHECK(!cf_country_valid("be", 2));
    CHECK(!cf_country_valid("BEL", 3));
    CHECK(!cf_country_valid("B", 1));
    CHECK(!cf_country_valid("ZZ", 2));
    CHECK(!cf_country_valid("A@", 2));
    int n = 0;
    char c[3] = {0};
    for (c[0] = 'A'; c[0] <= 'Z'; c[0]++) {
        for (c[1] = 'A'; c[1] <= 'Z'; c[1]++) {
            n += cf_country_valid(c, 2) ? 1 : 0;
        }
    }
    CHECK_EQ(n, 249);
}

static int64_t parse(const char *s, int exp, cf_err *err)
{
    int64_t v = 12345;
    *err = cf_amount_parse(s, strlen(s), exp, &v);
    return v;
}

static void test_amount_parse(void)
{
    cf_err e;
    CHECK_EQ(parse("57.16", 2, &e), 5716);
    CHECK_OK(e);
    CHECK_EQ(parse("146.00", 2, &e), 14600);
    CHECK_EQ(parse("5", 2, &e), 500);
    CHECK_EQ(parse("5.1", 2, &e), 510);
    CHECK_EQ(parse("0.01", 2, &e), 1);
    CHECK_EQ(parse("-3", 2, &e), -300);
    CHECK_EQ(parse("-0.5", 2, &e), -50);
    CHECK_EQ(parse("-0", 2, &e), 0);
    CHECK_EQ(parse("1500", 0, &e), 1500);
    CHECK_EQ(parse("1.234", 3, &e), 1234);
    CHECK_EQ(parse("0.0001", 4, &e), 1);
    CHECK_EQ(parse("007.50", 2, &e), 750);
    CHECK_OK(e);
    const struct {
        const char *s;
        int exp;
    } bad[] = {{"", 2},     {"-", 2},      {"1e2", 2}, {"1E2", 2},   {" 1", 2},
               {"1 ", 2},   {"1.", 2},     {".5", 2},  {"1.234", 2}, {"1.0", 0},
               {"+1", 2},   {"1,5", 2},    {"--1", 2}, {"1.2.3", 2}, {"0x10", 2},
               {"1.-2", 2}, {"57.160", 2}, {"inf", 2}, {"nan", 2},   {"1.5", -1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 777;
        CHECK_EQ(cf_amount_parse(bad[i].s, strlen(bad[i].s), bad[i].exp, &v), CF_E_PARSE);
        CHECK_EQ(v, 777);
    }
    /* Length is honoured: no reading past len. */
    int64_t v = 0;
    CHECK_OK(cf_amount_parse("12.34xyz", 5, 2, &v));
    CHECK_EQ(v, 1234);
}

static void test_amount_parse_overflow(void)
{
    cf_err e;
    CHECK_EQ(parse("92233720368547758.07", 2, &e), INT64_MAX);
    CHECK_OK(e);
    CHECK_EQ(parse("-92233720368547758.08", 2, &e), INT64_MIN);
    CHECK_OK(e);
    CHECK_EQ(parse("9223372036854775807", 0, &e), INT64_MAX);
    CHECK_OK(e);
    parse("92233720368547758.08", 2, &e);
    CHECK_EQ(e, CF_E_OVERFLOW);
    parse("92233720368547759", 2, &e);
    CHECK_EQ(e, CF_E_OVERFLOW);
    parse("-92233720368547758.09", 2, &e);
    CHECK_EQ(e, CF_E_OVERFLOW);
    parse("9223372036854775808", 0, &e);
    CHECK_EQ(e, CF_E_OVERFLOW);
    parse("99999999999999999999999999999999", 2, &e);
    CHECK_EQ(e, CF_E_OVERFLOW);
    /* Malformed text wins over overflow when both apply. */
    parse("99999999999999999999999999999999x", 2, &e);
    CHECK_EQ(e, CF_E_PARSE);
}

static void test_amount_format(void)
{
    char b[64];
    CHECK_EQ(cf_amount_format(5716, 2, b, sizeof(b)), 5);
    CHECK_STR(b, "57.16");
    cf_amount_format(5, 2, b, sizeof(b));
    CHECK_STR(b, "0.05");
    cf_amount_format(-5, 2, b, sizeof(b));
    CHECK_STR(b, "-0.05");
    cf_amount_format(0, 2, b, sizeof(b));
    CHECK_STR(b, "0.00");
    cf_amount_format(1500, 0, b, sizeof(b));
    CHECK_STR(b, "1500");
    cf_amount_format(0, 0, b, sizeof(b));
    CHECK_STR(b, "0");
    cf_amount_format(1, 4, b, sizeof(b));
    CHECK_STR(b, "0.0001");
    cf_amount_format(INT64_MIN, 2, b, sizeof(b));
    CHECK_STR(b, "-92233720368547758.08");
    cf_amount_format(INT64_MAX, 0, b, sizeof(b));
    CHECK_STR(b, "9223372036854775807");
    /* Too small: 0 and an empty string. */
    CHECK_EQ(cf_amount_format(5716, 2, b, 5), 0);
    CHECK_STR(b, "");
    CHECK_EQ(cf_amount_format(5716, 2, b, 6), 5);
}

static void test_amount_roundtrip(void)
{
    uint64_t x = 0x9E3779B97F4A7C15u;
    char b[64];
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int exp = (int)(x % 5);
        int64_t v = (int64_t)(x >> (x % 60));
        if (i & 1) {
            v = -v;
        }
        size_t n = cf_amount_format(v, exp, b, sizeof(b));
        REQUIRE(n > 0);
        int64_t back = 0;
        CHECK_OK(cf_amount_parse(b, n, exp, &back));
        CHECK_EQ(back, v);
    }
}

static void test_utf8(void)
{
    CHECK(cf_utf8_valid("", 0));
    CHECK(cf_utf8_valid("plain ascii text, longer than eight", 35));
    CHECK(cf_utf8_valid("caf\xc3\xa9", 5));
    CHECK(cf_utf8_valid("\xe2\x82\xac", 3));     /* euro sign */
    CHECK(cf_utf8_valid("\xf0\x9f\x92\xb3", 4)); /* U+1F4B3 */
    CHECK(cf_utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    CHECK(cf_utf8_valid("\xed\x9f\xbf", 3));     /* U+D7FF */
    CHECK(cf_utf8_valid("\xee\x80\x80", 3));     /* U+E000 */
    CHECK(cf_utf8_valid("a\0b", 3));
    CHECK(!cf_utf8_valid("\x80", 1));
    CHECK(!cf_utf8_valid("\xc0\xaf", 2)); /* overlong '/' */
    CHECK(!cf_utf8_valid("\xc1\xbf", 2));
    CHECK(!cf_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!cf_utf8_valid("\xe0\x9f\xbf", 3));     /* overlong */
    CHECK(!cf_utf8_valid("\xf0\x80\x80\xaf", 4)); /* overlong */
    CHECK(!cf_utf8_valid("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    CHECK(!cf_utf8_valid("\xed\xa0\x80", 3));     /* U+D800 */
    CHECK(!cf_utf8_valid("\xed\xbf\xbf", 3));     /* U+DFFF */
    CHECK(!cf_utf8_valid("\xf4\x90\x80\x80", 4)); /* U+110000 */
    CHECK(!cf_utf8_valid("\xf5\x80\x80\x80", 4));
    CHECK(!cf_utf8_valid("\xff", 1));
    CHECK(!cf_utf8_valid("\xc3", 1)); /* truncated */
    CHECK(!cf_utf8_valid("\xe2\x82", 2));
    CHECK(!cf_utf8_valid("\xe2\x82\x41", 3));
    CHECK(!cf_utf8_valid("abcdefgh\xc3", 9));
    CHECK(!cf_utf8_valid("\xc3\xa9\xc3", 3));
    /* len is honoured. */
    CHECK(cf_utf8_valid("ok\xff", 2));
}

#include "cf_test_main.h"
