#include "cf_test.h"
#include "confide/core.h"
#include "confide/io.h"

/* ---- helpers ---------------------------------------------------------------------------- */

#define CF__IO_TEST_WIDE 4096
#define CF__IO_TEST_TS_MIN (-62167219200000000LL) /* 0000-01-01T00:00:00Z */
#define CF__IO_TEST_TS_MAX 253402300799999999LL   /* 9999-12-31T23:59:59.999999Z */

#define CSV_HDR                                                                                    \
    "event_id,ts,account,merchant,amount,currency,type,country,channel,fraud,fraud_scenario"
#define GOOD_CSV "1,2018-04-01T00:00:31Z,A1,M1,57.16,EUR,PAYMENT,BE,POS,0,0"

typedef struct {
    cf_decode_result res;
    cf_event ev;
    char reason[160];
} decoded;

static cf_record mkrec(const char *s)
{
    cf_record r = {.data = s, .len = strlen(s), .line = 1, .offset = 0, .too_long = false};
    return r;
}

static decoded dec1(cf_decoder *d, const char *s)
{
    decoded out;
    memset(&out, 0x5A, sizeof(out));
    cf_record r = mkrec(s);
    out.res = cf_decoder_decode(d, &r, &out.ev, out.reason, sizeof(out.reason));
    return out;
}

static cf_decoder *csv_decoder(const char *header)
{
    cf_decoder *d = NULL;
    char err[128];
    if (cf_decoder_create(&d, CF_FMT_CSV, err, sizeof(err)) != CF_OK) {
        return NULL;
    }
    decoded h = dec1(d, header);
    if (h.res != CF_DECODE_SKIP) {
        fprintf(stderr, "header rejected: %s\n", h.reason);
    }
    return d;
}

static cf_decoder *new_decoder(cf_format f)
{
    cf_decoder *d = NULL;
    char err[128];
    return cf_decoder_create(&d, f, err, sizeof(err)) == CF_OK ? d : NULL;
}

/* A decoded event must satisfy every schema invariant. */
static int event_valid(const cf_event *ev)
{
    size_t la = strnlen(ev->account, sizeof(ev->account));
    size_t lm = strnlen(ev->merchant, sizeof(ev->merchant));
    return la >= 1 && la <= CF_ID_MAX && lm >= 1 && lm <= CF_ID_MAX &&
           cf_utf8_valid(ev->account, la) && cf_utf8_valid(ev->merchant, lm) &&
           cf_currency_valid(ev->currency, strnlen(ev->currency, 4)) &&
           cf_country_valid(ev->country, strnlen(ev->country, 3)) && ev->type < CF_TX__COUNT &&
           ev->channel < CF_CH__COUNT && ev->fraud >= -1 && ev->fraud <= 1 &&
           ev->fraud_scenario >= -1 && ev->fraud_scenario <= 3;
}

/* Records found by a splitter, copied out of the moving buffer. */
typedef struct {
    char *data;
    size_t len;
    uint64_t line, offset;
    bool too_long;
} srec;

typedef struct {
    srec *r;
    size_t n, cap;
} srecs;

static void srecs_free(srecs *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->r[i].data);
    }
    free(s->r);
    memset(s, 0, sizeof(*s));
}

/* Takes every complete record out of buf[0..have) into @p out; returns bytes consumed. */
static size_t take_records(cf_splitter *sp, const char *buf, size_t have, bool eof, srecs *out)
{
    size_t pos = 0;
    for (;;) {
        cf_record rec;
        size_t used = 0;
        cf_err e = cf_splitter_next(sp, buf + pos, have - pos, eof, &rec, &used);
        if (e == CF_OK) {
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 16;
                out->r = realloc(out->r, out->cap * sizeof(*out->r));
            }
            srec *r = &out->r[out->n++];
            r->data = malloc(rec.len + 1);
            memcpy(r->data, rec.data, rec.len);
            r->data[rec.len] = '\0';
            r->len = rec.len;
            r->line = rec.line;
            r->offset = rec.offset;
            r->too_long = rec.too_long;
        }
        pos += used;
        if (e != CF_OK) {
            return pos;
        }
    }
}

/*
 * Feeds doc to a splitter @p chunk bytes at a time through a buffer of line_max + 2 bytes
 * (the smallest a caller may use), like a reader loop would.
 */
static srecs split_doc(cf_format fmt, const char *doc, size_t len, size_t chunk, size_t line_max)
{
    srecs out = {0};
    cf_splitter *sp = NULL;
    if (cf_splitter_create(&sp, fmt, line_max) != CF_OK) {
        return out;
    }
    size_t cap = (line_max ? line_max : CF_RECORD_MAX) + 2;
    if (cap < chunk) {
        cap = chunk;
    }
    char *buf = malloc(cap);
    size_t have = 0, fed = 0;
    for (;;) {
        size_t n = len - fed;
        if (n > chunk) {
            n = chunk;
        }
        if (n > cap - have) {
            n = cap - have;
        }
        memcpy(buf + have, doc + fed, n);
        have += n;
        fed += n;
        bool eof = fed == len;
        size_t pos = take_records(sp, buf, have, eof, &out);
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (eof) {
            break;
        }
    }
    free(buf);
    cf_splitter_destroy(sp);
    return out;
}

static int srecs_equal(const srecs *a, const srecs *b)
{
    if (a->n != b->n) {
        fprintf(stderr, "record counts differ: %zu vs %zu\n", a->n, b->n);
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        const srec *x = &a->r[i], *y = &b->r[i];
        if (x->len != y->len || memcmp(x->data, y->data, x->len) != 0 || x->line != y->line ||
            x->offset != y->offset || x->too_long != y->too_long) {
            fprintf(stderr, "record %zu differs: len %zu/%zu line %llu/%llu off %llu/%llu\n", i,
                    x->len, y->len, (unsigned long long)x->line, (unsigned long long)y->line,
                    (unsigned long long)x->offset, (unsigned long long)y->offset);
            return 0;
        }
    }
    return 1;
}

typedef struct {
    uint64_t read, accepted, rejected, skipped;
} tally;

/* Splits and decodes a whole document; optionally keeps the accepted events. */
static tally run_doc(cf_format fmt, const char *doc, size_t len, size_t chunk, cf_event *events,
                     size_t max_events)
{
    tally t = {0};
    srecs rs = split_doc(fmt, doc, len, chunk, 0);
    cf_decoder *d = new_decoder(fmt);
    for (size_t i = 0; i < rs.n; i++) {
        cf_record r = {rs.r[i].data, rs.r[i].len, rs.r[i].line, rs.r[i].offset, rs.r[i].too_long};
        cf_event ev;
        char reason[160] = "";
        cf_decode_result res = cf_decoder_decode(d, &r, &ev, reason, sizeof(reason));
        if (res == CF_DECODE_SKIP) {
            t.skipped++;
            continue;
        }
        t.read++;
        if (res == CF_DECODE_EVENT) {
            if (events != NULL && t.accepted < max_events) {
                events[t.accepted] = ev;
            }
            t.accepted++;
        } else {
            t.rejected++;
        }
    }
    cf_decoder_destroy(d);
    srecs_free(&rs);
    return t;
}

static uint64_t rng_state = 0x243F6A8885A308D3u;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

/* ---- formats and helpers ---------------------------------------------------------------- */

static void test_format_names(void)
{
    cf_format f = CF_FMT_FDH;
    CHECK_OK(cf_format_parse("csv", &f));
    CHECK_EQ(f, CF_FMT_CSV);
    CHECK_OK(cf_format_parse("ndjson", &f));
    CHECK_EQ(f, CF_FMT_NDJSON);
    CHECK_OK(cf_format_parse("fdh", &f));
    CHECK_EQ(f, CF_FMT_FDH);
    CHECK_EQ(cf_format_parse("CSV", &f), CF_E_INVAL);
    CHECK_EQ(cf_format_parse("json", &f), CF_E_INVAL);
    CHECK_EQ(cf_format_parse(NULL, &f), CF_E_INVAL);
    CHECK_STR(cf_format_name(CF_FMT_CSV), "csv");
    CHECK_STR(cf_format_name(CF_FMT_NDJSON), "ndjson");
    CHECK_STR(cf_format_name(CF_FMT_FDH), "fdh");
    CHECK(cf_format_name((cf_format)7) == NULL);
    cf_decoder *d = NULL;
    char err[128] = "";
    CHECK_EQ(cf_decoder_create(&d, (cf_format)7, err, sizeof(err)), CF_E_INVAL);
    CHECK(d == NULL && err[0] != '\0');
    cf_splitter *s = NULL;
    CHECK_EQ(cf_splitter_create(&s, (cf_format)7, 0), CF_E_INVAL);
    cf_decoder_destroy(NULL);
    cf_splitter_destroy(NULL);
}

static void test_timestamps(void)
{
    cf_decoder *d =
        csv_decoder("event_id,ts,account,merchant,amount,currency,type,country,channel");
    REQUIRE(d != NULL);
    static const struct {
        const char *ts;
        int64_t us;
    } good[] = {
        {"2018-04-01T00:00:31Z", 1522540831000000LL},
        {"2018-04-01T00:00:31.5Z", 1522540831500000LL},
        {"2018-04-01T00:00:31.123456Z", 1522540831123456LL},
        {"2018-04-01T00:00:31.000001+00:00", 1522540831000001LL},
        {"2018-04-01T00:00:31+00:00", 1522540831000000LL},
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59.999999Z", -1},
        {"2016-02-29T12:00:00Z", 1456747200000000LL},
        {"2000-02-29T00:00:00Z", 951782400000000LL},
        {"0000-01-01T00:00:00Z", -62167219200000000LL},
        {"9999-12-31T23:59:59.999999Z", 253402300799999999LL},
        {"1522540831000000", 1522540831000000LL},
        {"0", 0},
        {"-1", -1},
    };
    char line[256];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(line, sizeof(line), "1,%s,A,M,1.00,EUR,PAYMENT,BE,POS", good[i].ts);
        decoded r = dec1(d, line);
        CHECK_EQ(r.res, CF_DECODE_EVENT);
        CHECK_EQ(r.ev.ts_us, good[i].us);
        if (r.res != CF_DECODE_EVENT || r.ev.ts_us != good[i].us) {
            fprintf(stderr, "  ts %s: %s\n", good[i].ts, r.reason);
        }
    }
    static const char *const bad[] = {
        "2018-04-01 00:00:31",
        "2018-04-01T00:00:31",
        "2018-04-01T00:00:31z",
        "2018-04-01t00:00:31Z",
        "2018-04-01T00:00:31+01:00",
        "2018-04-01T00:00:31-00:00",
        "2018-04-01T00:00:31.Z",
        "2018-04-01T00:00:31.1234567Z",
        "2018-04-31T00:00:00Z",
        "2018-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2018-13-01T00:00:00Z",
        "2018-00-01T00:00:00Z",
        "2018-04-00T00:00:00Z",
        "2018-04-01T24:00:00Z",
        "2018-04-01T23:60:00Z",
        "2018-04-01T23:59:60Z",
        "2018-4-01T00:00:00Z",
        "20180401T000031Z",
        "2018-04-01",
        "1.5",
        "1e6",
        "+5",
        "253402300800000000",
        "-62167219200000001",
        "99999999999999999999",
        "2018-04-01T00:00:31Z ",
        " 2018-04-01T00:00:31Z",
        "abcd-04-01T00:00:31Z",
        "2018-04-01T00:00:31ZZ",
        "xxxx-xx-xxT00:00:00Z",
        "2018-04-01T00:0a:31Z",
        "2018-04-01T0:00:31Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), "1,%s,A,M,1.00,EUR,PAYMENT,BE,POS", bad[i]);
        decoded r = dec1(d, line);
        CHECK_EQ(r.res, CF_DECODE_REJECT);
        CHECK_STR(r.reason, "bad timestamp");
        if (r.res != CF_DECODE_REJECT) {
            fprintf(stderr, "  accepted bad ts %s\n", bad[i]);
        }
    }
    /* The per-thread date cache never lets a bad time or date through after a good one. */
    const char *seq[] = {"2018-04-01T00:00:31Z", "2018-04-01T25:00:31Z", "2018-04-01T00:00:31Z",
                         "2018-04-31T00:00:31Z", "2018-04-01T23:59:59.5Z"};
    const int ok[] = {1, 0, 1, 0, 1};
    for (size_t i = 0; i < 5; i++) {
        snprintf(line, sizeof(line), "1,%s,A,M,1.00,EUR,PAYMENT,BE,POS", seq[i]);
        CHECK_EQ(dec1(d, line).res == CF_DECODE_EVENT, ok[i]);
    }
    cf_decoder_destroy(d);
}

/* ---- CSV -------------------------------------------------------------------------------- */

static void test_csv_valid(void)
{
    cf_decoder *d = csv_decoder(CSV_HDR);
    REQUIRE(d != NULL);
    decoded r = dec1(d, GOOD_CSV);
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 1);
    CHECK_EQ(r.ev.ts_us, 1522540831000000LL);
    CHECK_STR(r.ev.account, "A1");
    CHECK_STR(r.ev.merchant, "M1");
    CHECK_EQ(r.ev.amount_minor, 5716);
    CHECK_STR(r.ev.currency, "EUR");
    CHECK_EQ(r.ev.type, CF_TX_PAYMENT);
    CHECK_STR(r.ev.country, "BE");
    CHECK_EQ(r.ev.channel, CF_CH_POS);
    CHECK_EQ(r.ev.fraud, 0);
    CHECK_EQ(r.ev.fraud_scenario, 0);
    CHECK_EQ(r.ev.seq, 0);
    CHECK_EQ(r.ev.ingest_ns, 0);

    r = dec1(d, "18446744073709551615,0,\"quoted, with \"\"comma\"\"\",\"M\",-3,JPY,REFUND,JP,"
                "ECOM,,");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK(r.ev.event_id == UINT64_MAX);
    CHECK_STR(r.ev.account, "quoted, with \"comma\"");
    CHECK_STR(r.ev.merchant, "M");
    CHECK_EQ(r.ev.amount_minor, -3);
    CHECK_EQ(r.ev.fraud, -1);
    CHECK_EQ(r.ev.fraud_scenario, -1);
    CHECK_EQ(r.ev.type, CF_TX_REFUND);

    r = dec1(d, "2,2018-04-01T00:00:31Z,caf\xc3\xa9,\xe2\x82\xac,1.234,BHD,CASH_OUT,BH,ATM,1,3");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.amount_minor, 1234);
    CHECK_STR(r.ev.account, "caf\xc3\xa9");
    CHECK_EQ(r.ev.fraud, 1);
    CHECK_EQ(r.ev.fraud_scenario, 3);
    cf_decoder_destroy(d);

    /* Columns in any order, unknown extra columns ignored, amount_minor instead of amount. */
    d = csv_decoder("note,channel,country,type,currency,amount_minor,merchant,account,ts,event_id");
    REQUIRE(d != NULL);
    r = dec1(d, "\"ignored, \"\"really\"\"\",P2P,DE,TRANSFER,EUR,-99,Mx,Ax,1,42");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 42);
    CHECK_EQ(r.ev.amount_minor, -99);
    CHECK_EQ(r.ev.channel, CF_CH_P2P);
    CHECK_EQ(r.ev.fraud, -1);
    r = dec1(d, "x,P2P,DE,TRANSFER,EUR,9223372036854775808,Mx,Ax,1,42");
    CHECK_EQ(r.res, CF_DECODE_REJECT);
    CHECK_STR(r.reason, "amount overflow");
    r = dec1(d, "x,P2P,DE,TRANSFER,EUR,12.5,Mx,Ax,1,42");
    CHECK_STR(r.reason, "bad number: amount_minor");
    cf_decoder_destroy(d);

    /* A byte order mark before the header is not part of the first column's name. */
    d = csv_decoder("\xEF\xBB\xBF" CSV_HDR);
    REQUIRE(d != NULL);
    r = dec1(d, GOOD_CSV);
    CHECK_EQ(r.res, CF_DECODE_EVENT);
    cf_decoder_destroy(d);
}

static void test_csv_rejects(void)
{
    char long_id[80];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    char max_id[80];
    memset(max_id, 'y', 64);
    max_id[64] = '\0';
    static char rows[40][256];
    const char *reasons[40];
    int n = 0;
#define ROW(reason_, ...)                                                                          \
    do {                                                                                           \
        snprintf(rows[n], sizeof(rows[n]), __VA_ARGS__);                                           \
        reasons[n++] = reason_;                                                                    \
    } while (0)
    ROW("missing field: account", "1,2018-04-01T00:00:31Z,,M1,57.16,EUR,PAYMENT,BE,POS,0,0");
    ROW("missing field: event_id", ",2018-04-01T00:00:31Z,A,M1,57.16,EUR,PAYMENT,BE,POS,0,0");
    ROW("missing field: ts", "1,,A,M1,57.16,EUR,PAYMENT,BE,POS,0,0");
    ROW("missing field: merchant", "1,0,A,\"\",57.16,EUR,PAYMENT,BE,POS,0,0");
    ROW("missing field: amount", "1,0,A,M,,EUR,PAYMENT,BE,POS,0,0");
    ROW("missing field: currency", "1,0,A,M,1,,PAYMENT,BE,POS,0,0");
    ROW("missing field: type", "1,0,A,M,1,EUR,,BE,POS,0,0");
    ROW("missing field: country", "1,0,A,M,1,EUR,PAYMENT,,POS,0,0");
    ROW("missing field: channel", "1,0,A,M,1,EUR,PAYMENT,BE,,0,0");
    ROW("bad number: event_id", "x1,0,A,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: event_id", "-1,0,A,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: event_id", "18446744073709551616,0,A,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: amount", "1,0,A,M,57.1a,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: amount", "1,0,A,M,1e2,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: amount", "1,0,A,M, 5,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: amount", "1,0,A,M,57.161,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad number: amount", "1,0,A,M,5.0,JPY,PAYMENT,JP,POS,0,0");
    ROW("amount overflow", "1,0,A,M,99999999999999999999,EUR,PAYMENT,BE,POS,0,0");
    ROW("amount overflow", "1,0,A,M,92233720368547758.08,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad timestamp", "1,yesterday,A,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("unknown currency: XYZ", "1,0,A,M,1,XYZ,PAYMENT,BE,POS,0,0");
    ROW("unknown currency", "1,0,A,M,1,eur,PAYMENT,BE,POS,0,0");
    ROW("unknown currency", "1,0,A,M,1,EURO,PAYMENT,BE,POS,0,0");
    ROW("unknown type", "1,0,A,M,1,EUR,payment,BE,POS,0,0");
    ROW("unknown country", "1,0,A,M,1,EUR,PAYMENT,UK,POS,0,0");
    ROW("unknown channel", "1,0,A,M,1,EUR,PAYMENT,BE,WEB,0,0");
    ROW("field too long: account", "1,0,%s,M,1,EUR,PAYMENT,BE,POS,0,0", long_id);
    ROW("field too long: merchant", "1,0,A,%s,1,EUR,PAYMENT,BE,POS,0,0", long_id);
    ROW("field too long: account", "1,0,\"%s\"\"\",M,1,EUR,PAYMENT,BE,POS,0,0", max_id);
    ROW("invalid utf-8: account", "1,0,A\xff,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("invalid utf-8: merchant", "1,0,A,\xed\xa0\x80,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("invalid utf-8: account", "1,0,\xc0\xaf,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad quote", "1,0,A\"B,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("bad quote", "1,0,\"A\"B,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("unterminated quote", "1,0,\"A,M,1,EUR,PAYMENT,BE,POS,0,0");
    ROW("too few fields", "1,0,A,M,1,EUR,PAYMENT,BE,POS,0");
    ROW("too many fields", "1,0,A,M,1,EUR,PAYMENT,BE,POS,0,0,");
    ROW("bad number: fraud", "1,0,A,M,1,EUR,PAYMENT,BE,POS,2,0");
    ROW("bad number: fraud_scenario", "1,0,A,M,1,EUR,PAYMENT,BE,POS,1,4");
    ROW("bad number: fraud", "1,0,A,M,1,EUR,PAYMENT,BE,POS,yes,0");
#undef ROW
    cf_decoder *d = csv_decoder(CSV_HDR);
    REQUIRE(d != NULL);
    for (int i = 0; i < n; i++) {
        decoded r = dec1(d, rows[i]);
        CHECK_EQ(r.res, CF_DECODE_REJECT);
        CHECK_STR(r.reason, reasons[i]);
    }
    /* The 64-byte id is the longest accepted. */
    char ok[256];
    snprintf(ok, sizeof(ok), "1,0,%s,%s,1,EUR,PAYMENT,BE,POS,,", max_id, max_id);
    decoded r = dec1(d, ok);
    CHECK_EQ(r.res, CF_DECODE_EVENT);
    CHECK_EQ(strlen(r.ev.account), 64);
    /* A record the splitter marked over-long is rejected whatever its bytes. */
    cf_record rec = mkrec(GOOD_CSV);
    rec.too_long = true;
    char reason[128];
    cf_event ev;
    CHECK_EQ(cf_decoder_decode(d, &rec, &ev, reason, sizeof(reason)), CF_DECODE_REJECT);
    CHECK_STR(reason, "record too long");
    /* Reasons never carry ids or amounts from the record. */
    r = dec1(d, "1,0,SECRETACCOUNT,M,12345678901234567890123,EUR,PAYMENT,BE,POS,0,0");
    CHECK(strstr(r.reason, "SECRET") == NULL && strstr(r.reason, "1234") == NULL);
    /* A small reason buffer is truncated, never overrun. */
    char small[8];
    rec = mkrec("1,0,,M,1,EUR,PAYMENT,BE,POS,0,0");
    CHECK_EQ(cf_decoder_decode(d, &rec, &ev, small, sizeof(small)), CF_DECODE_REJECT);
    CHECK_EQ(strlen(small), 7);
    cf_decoder_destroy(d);
}

static void test_csv_header_errors(void)
{
    static const struct {
        const char *hdr, *reason;
    } cases[] = {
        {"event_id,ts,account,merchant,amount,currency,type,country,channel,ts",
         "bad header: duplicate column: ts"},
        {"event_id,ts,account,merchant,amount,currency,type,country",
         "bad header: missing column: channel"},
        {"ts,account,merchant,amount,currency,type,country,channel",
         "bad header: missing column: event_id"},
        {"event_id,ts,account,merchant,currency,type,country,channel",
         "bad header: missing column: amount"},
        {"event_id,ts,account,merchant,amount,amount_minor,currency,type,country,channel",
         "bad header: both amount and amount_minor"},
        {"event_id,ts,\"account,merchant,amount,currency,type,country,channel",
         "bad header: unterminated quote"},
        {"1,2018-04-01T00:00:31Z,A1,M1,57.16,EUR,PAYMENT,BE,POS,0,0",
         "bad header: missing column: event_id"},
        {"EVENT_ID,TS,ACCOUNT,MERCHANT,AMOUNT,CURRENCY,TYPE,COUNTRY,CHANNEL",
         "bad header: missing column: event_id"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cf_decoder *d = new_decoder(CF_FMT_CSV);
        REQUIRE(d != NULL);
        decoded r = dec1(d, cases[i].hdr);
        CHECK_EQ(r.res, CF_DECODE_REJECT);
        CHECK_STR(r.reason, cases[i].reason);
        for (int k = 0; k < 3; k++) {
            r = dec1(d, GOOD_CSV);
            CHECK_EQ(r.res, CF_DECODE_REJECT);
            CHECK_STR(r.reason, "no valid header");
        }
        cf_decoder_destroy(d);
    }
    /* An over-long first record is a bad header, not a reason to take the next one. */
    for (int f = 0; f < 2; f++) {
        cf_decoder *d = new_decoder(f == 0 ? CF_FMT_CSV : CF_FMT_FDH);
        cf_record rec = mkrec(CSV_HDR);
        rec.too_long = true;
        char reason[128];
        cf_event ev;
        CHECK_EQ(cf_decoder_decode(d, &rec, &ev, reason, sizeof(reason)), CF_DECODE_REJECT);
        CHECK_STR(reason, "bad header: record too long");
        CHECK_STR(dec1(d, CSV_HDR).reason, "no valid header");
        cf_decoder_destroy(d);
    }
    /* Too many columns. */
    static char wide[CF__IO_TEST_WIDE];
    size_t o = 0;
    for (int i = 0; i < 300; i++) {
        o += (size_t)snprintf(wide + o, sizeof(wide) - o, "%sc%d", i ? "," : "", i);
    }
    cf_decoder *d = new_decoder(CF_FMT_CSV);
    decoded r = dec1(d, wide);
    CHECK_EQ(r.res, CF_DECODE_REJECT);
    CHECK(strncmp(r.reason, "bad header: more than", 21) == 0);
    cf_decoder_destroy(d);
    /* A quoted known name is still that column; 256 columns are fine. */
    o = (size_t)snprintf(wide, sizeof(wide),
                         "\"event_id\",ts,account,merchant,amount,currency,"
                         "type,country,channel");
    for (int i = 9; i < 256; i++) {
        o += (size_t)snprintf(wide + o, sizeof(wide) - o, ",x%d", i);
    }
    d = new_decoder(CF_FMT_CSV);
    r = dec1(d, wide);
    CHECK_EQ(r.res, CF_DECODE_SKIP);
    cf_decoder_destroy(d);
}

/* ---- NDJSON ----------------------------------------------------------------------------- */

#define JBASE                                                                                      \
    "\"ts\":\"2018-04-01T00:00:31Z\",\"account\":\"A1\",\"merchant\":\"M1\",\"currency\":\"EUR\"," \
    "\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\""

static void test_ndjson_valid(void)
{
    cf_decoder *d = new_decoder(CF_FMT_NDJSON);
    REQUIRE(d != NULL);
    decoded r = dec1(d, "{\"event_id\":1," JBASE ",\"amount\":57.16,\"fraud\":1,"
                        "\"fraud_scenario\":2}");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 1);
    CHECK_EQ(r.ev.amount_minor, 5716);
    CHECK_EQ(r.ev.ts_us, 1522540831000000LL);
    CHECK_STR(r.ev.account, "A1");
    CHECK_EQ(r.ev.fraud, 1);
    CHECK_EQ(r.ev.fraud_scenario, 2);

    /* Numbers as strings, amount as string, null ground truth, whitespace everywhere. */
    r = dec1(d, " \t{ \"event_id\" : \"77\" ,\"amount\":\"-0.05\", " JBASE
                " , \"fraud\" : null , \"fraud_scenario\":null } \t");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 77);
    CHECK_EQ(r.ev.amount_minor, -5);
    CHECK_EQ(r.ev.fraud, -1);
    CHECK_EQ(r.ev.fraud_scenario, -1);

    /* Escapes, unicode escapes with surrogate pairs, escaped key names. */
    r = dec1(d, "{\"\\u0065vent_id\":3,\"ts\":1522540831000000,\"account\":\"a\\\"b\\\\c\\/d\\n"
                "\\u00e9\\ud83d\\udcb3\",\"merchant\":\"\\u20ac\",\"amount_minor\":5716,"
                "\"currency\":\"\\u0045UR\",\"type\":\"PAYMENT\",\"country\":\"BE\","
                "\"channel\":\"POS\",\"fraud\":false}");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 3);
    CHECK_STR(r.ev.account, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x92\xb3");
    CHECK_STR(r.ev.merchant, "\xe2\x82\xac");
    CHECK_STR(r.ev.currency, "EUR");
    CHECK_EQ(r.ev.fraud, 0);

    /* Unknown keys with nested values are skipped, including brackets inside strings. */
    r = dec1(d, "{\"meta\":{\"a\":[1,2,{\"b\":\"}]\\\"\"}],\"c\":{}},\"event_id\":4," JBASE
                ",\"tags\":[],\"x\":null,\"y\":true,\"z\":-1.5e+10,\"amount\":5,"
                "\"event_id_x\":\"{\"}");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 4);
    CHECK_EQ(r.ev.amount_minor, 500);

    /* Raw UTF-8 in strings. */
    r = dec1(d, "{\"event_id\":5,\"ts\":0,\"account\":\"caf\xc3\xa9\",\"merchant\":\"m\","
                "\"amount\":1,\"currency\":\"JPY\",\"type\":\"DEBIT\",\"country\":\"JP\","
                "\"channel\":\"MOTO\"}");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.amount_minor, 1);
    CHECK_EQ(r.ev.channel, CF_CH_MOTO);
    cf_decoder_destroy(d);
}

static void test_ndjson_rejects(void)
{
    static const struct {
        const char *rec, *reason;
    } cases[] = {
        {"{}", "empty object"},
        {" { } ", "empty object"},
        {"[1,2]", "bad json: not an object"},
        {"", "bad json: not an object"},
        {"\"x\"", "bad json: not an object"},
        {"{\"event_id\":1,\"event_id\":2," JBASE ",\"amount\":1}", "duplicate key: event_id"},
        {"{\"event_id\":1," JBASE ",\"amount\":1,\"currency\":\"EUR\"}", "duplicate key: currency"},
        {"{\"event_id\":1," JBASE ",\"amount\":1} x", "bad json: trailing data"},
        {"{\"event_id\":1," JBASE ",\"amount\":1}{}", "bad json: trailing data"},
        {"{} {}", "bad json: trailing data"},
        {"{\"event_id\":1," JBASE ",\"amount\":1", "bad json: expected ',' or '}'"},
        {"{\"event_id\":1," JBASE ",\"amount\":1,}", "bad json: expected key"},
        {"{\"event_id\" 1}", "bad json: expected ':'"},
        {"{event_id:1}", "bad json: expected key"},
        {"{\"event_id\":01," JBASE ",\"amount\":1}", "bad number: event_id"},
        {"{\"event_id\":1," JBASE ",\"amount\":1.}", "bad number: amount"},
        {"{\"event_id\":1," JBASE ",\"amount\":+1}", "bad json: unexpected character"},
        {"{\"event_id\":1," JBASE ",\"amount\":1e2}", "bad number: amount"},
        {"{\"event_id\":1," JBASE ",\"amount\":57.161}", "bad number: amount"},
        {"{\"event_id\":1," JBASE ",\"amount\":true}", "bad number: amount"},
        {"{\"event_id\":1," JBASE ",\"amount\":99999999999999999999}", "amount overflow"},
        {"{\"event_id\":1," JBASE ",\"amount_minor\":9223372036854775808}", "amount overflow"},
        {"{\"event_id\":1," JBASE ",\"amount\":1,\"amount_minor\":100}",
         "both amount and amount_minor"},
        {"{\"event_id\":1," JBASE "}", "missing field: amount"},
        {"{\"event_id\":1," JBASE ",\"amount\":null}", "missing field: amount"},
        {"{\"event_id\":-1," JBASE ",\"amount\":1}", "bad number: event_id"},
        {"{\"event_id\":1.5," JBASE ",\"amount\":1}", "bad number: event_id"},
        {"{\"event_id\":1,\"ts\":\"2018-04-01T00:00:31\",\"account\":\"A\",\"merchant\":\"M\","
         "\"amount\":1,\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\","
         "\"channel\":\"POS\"}",
         "bad timestamp"},
        {"{\"event_id\":1,\"ts\":1.5,\"account\":\"A\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "bad timestamp"},
        {"{\"event_id\":1,\"ts\":0,\"account\":7,\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "bad field type: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":{\"id\":1},\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "bad field type: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"\\ud800\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "invalid utf-8: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"\\udc00x\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "invalid utf-8: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"a\\u0000b\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "bad character: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"a\xff\",\"merchant\":\"M\",\"amount\":1}",
         "invalid utf-8"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"a\tb\",\"merchant\":\"M\",\"amount\":1}",
         "bad json: control character in string"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"a\\x\",\"merchant\":\"M\",\"amount\":1}",
         "bad json: bad escape"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"a\\u12\",\"merchant\":\"M\",\"amount\":1}",
         "bad json: bad escape"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"abc", "bad json: unterminated string"},
        {"{\"event_id\":1,\"x\":[1,2,\"ts\":0}", "bad json: expected ',' or ']'"},
        {"{\"event_id\":1,\"x\":tru}", "bad json: bad literal"},
        {"{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
         "}",
         "bad json: nested too deep"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\""
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "\",\"merchant\":\"M\",\"amount\":1,\"currency\":\"EUR\",\"type\":\"PAYMENT\","
         "\"country\":\"BE\",\"channel\":\"POS\"}",
         "field too long: account"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"A\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"XYZ\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\"}",
         "unknown currency: XYZ"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"A\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"pos\"}",
         "unknown channel"},
        {"{\"event_id\":1,\"ts\":0,\"account\":\"A\",\"merchant\":\"M\",\"amount\":1,"
         "\"currency\":\"EUR\",\"type\":\"PAYMENT\",\"country\":\"BE\",\"channel\":\"POS\","
         "\"fraud\":2}",
         "bad number: fraud"},
        {"{\"ts\":0}", "missing field: event_id"},
    };
    cf_decoder *d = new_decoder(CF_FMT_NDJSON);
    REQUIRE(d != NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        decoded r = dec1(d, cases[i].rec);
        CHECK_EQ(r.res, CF_DECODE_REJECT);
        CHECK_STR(r.reason, cases[i].reason);
    }
    cf_decoder_destroy(d);
}

/* ---- FDH -------------------------------------------------------------------------------- */

static void test_fdh_valid(void)
{
    cf_decoder *d = new_decoder(CF_FMT_FDH);
    REQUIRE(d != NULL);
    CHECK_EQ(dec1(d, "tx_id,ts,customer_id,terminal_id,amount,fraud,fraud_scenario").res,
             CF_DECODE_SKIP);
    decoded r = dec1(d, "0,1522540831,596,3156,57.16,0,0");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_EQ(r.ev.event_id, 0);
    CHECK_EQ(r.ev.ts_us, 1522540831000000LL);
    CHECK_STR(r.ev.account, "C596");
    CHECK_STR(r.ev.merchant, "T3156");
    CHECK_EQ(r.ev.amount_minor, 5716);
    CHECK_STR(r.ev.currency, "EUR");
    CHECK_EQ(r.ev.type, CF_TX_PAYMENT);
    CHECK_STR(r.ev.country, "BE");
    CHECK_EQ(r.ev.channel, CF_CH_POS);
    CHECK_EQ(r.ev.fraud, 0);
    CHECK_EQ(r.ev.fraud_scenario, 0);
    r = dec1(d, "2,1522541276,2,1365,146.00,1,3");
    CHECK_EQ(r.ev.amount_minor, 14600);
    CHECK_EQ(r.ev.fraud, 1);
    CHECK_EQ(r.ev.fraud_scenario, 3);
    r = dec1(d, "3,1522541276,2,1365,5,,");
    CHECK_EQ(r.ev.amount_minor, 500);
    CHECK_EQ(r.ev.fraud, -1);
    static const struct {
        const char *rec, *reason;
    } bad[] = {
        {"x,1522540831,596,3156,57.16,0,0", "bad number: tx_id"},
        {"1,1522540831.5,596,3156,57.16,0,0", "bad timestamp"},
        {"1,99999999999999,596,3156,57.16,0,0", "bad timestamp"},
        {"1,1522540831,,3156,57.16,0,0", "missing field: customer_id"},
        {"1,1522540831,596,,57.16,0,0", "missing field: terminal_id"},
        {"1,1522540831,596,3156,,0,0", "missing field: amount"},
        {"1,1522540831,596,3156,57.161,0,0", "bad number: amount"},
        {"1,1522540831,596,3156,99999999999999999.99,0,0", "amount overflow"},
        {"1,1522540831,596,3156,57.16,5,0", "bad number: fraud"},
        {"1,1522540831,596,3156,57.16,0,9", "bad number: fraud_scenario"},
        {"1,1522540831,5\xff,3156,57.16,0,0", "invalid utf-8: customer_id"},
        {"1,1522540831,596,3156,57.16,0", "too few fields"},
        {"1,1522540831,596,3156,57.16,0,0,0", "too many fields"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = dec1(d, bad[i].rec);
        CHECK_EQ(r.res, CF_DECODE_REJECT);
        CHECK_STR(r.reason, bad[i].reason);
    }
    cf_decoder_destroy(d);

    /* Other column orders and extra columns; the ground truth is optional. */
    d = new_decoder(CF_FMT_FDH);
    CHECK_EQ(dec1(d, "amount,terminal_id,extra,customer_id,ts,tx_id").res, CF_DECODE_SKIP);
    r = dec1(d, "1.5,T9,whatever,C9,0,12");
    REQUIRE(r.res == CF_DECODE_EVENT);
    CHECK_STR(r.ev.account, "CC9");
    CHECK_EQ(r.ev.amount_minor, 150);
    CHECK_EQ(r.ev.fraud, -1);
    cf_decoder_destroy(d);

    d = new_decoder(CF_FMT_FDH);
    r = dec1(d, "tx_id,ts,customer_id,amount");
    CHECK_EQ(r.res, CF_DECODE_REJECT);
    CHECK_STR(r.reason, "bad header: missing column: terminal_id");
    CHECK_STR(dec1(d, "0,1522540831,596,3156,57.16,0,0").reason, "no valid header");
    cf_decoder_destroy(d);
}

static void test_fdh_sample(void)
{
    const char *path = cf_test_shared("data/fdh/fdh_sample_1day_2018-04-01.csv");
    size_t len = 0;
    char *doc = cf_test_slurp(path, &len);
    REQUIRE(doc != NULL);
    /* Independent reference: sum the amount column (5th) with trivial integer code. */
    int64_t want_sum = 0;
    uint64_t want_rows = 0;
    const char *p = strchr(doc, '\n') + 1;
    while (p < doc + len) {
        int commas = 0;
        while (commas < 4) {
            commas += *p++ == ',';
        }
        int64_t units = 0, cents = 0;
        int frac = -1;
        for (; *p != ','; p++) {
            if (*p == '.') {
                frac = 0;
            } else if (frac < 0) {
                units = units * 10 + (*p - '0');
            } else {
                cents = cents * 10 + (*p - '0');
                frac++;
            }
        }
        while (frac >= 0 && frac < 2) {
            cents *= 10;
            frac++;
        }
        want_sum += units * 100 + cents;
        want_rows++;
        p = strchr(p, '\n');
        if (p == NULL) {
            break;
        }
        p++;
    }
    CHECK_EQ(want_rows, 9488);

    cf_splitter *sp = NULL;
    cf_decoder *d = new_decoder(CF_FMT_FDH);
    REQUIRE(cf_splitter_create(&sp, CF_FMT_FDH, 0) == CF_OK && d != NULL);
    size_t pos = 0;
    uint64_t accepted = 0, rejected = 0, skipped = 0, fraud = 0;
    int64_t sum = 0, prev_ts = INT64_MIN;
    bool ordered = true;
    for (;;) {
        cf_record rec;
        size_t used = 0;
        cf_err e = cf_splitter_next(sp, doc + pos, len - pos, true, &rec, &used);
        pos += used;
        if (e != CF_OK) {
            CHECK_EQ(e, CF_E_EOF);
            break;
        }
        cf_event ev;
        char reason[160];
        cf_decode_result r = cf_decoder_decode(d, &rec, &ev, reason, sizeof(reason));
        if (r == CF_DECODE_SKIP) {
            skipped++;
        } else if (r == CF_DECODE_EVENT) {
            accepted++;
            CHECK(cf_add_i64(sum, ev.amount_minor, &sum));
            fraud += ev.fraud == 1;
            ordered = ordered && ev.ts_us >= prev_ts;
            prev_ts = ev.ts_us;
            CHECK(event_valid(&ev));
            CHECK_EQ(rec.line, accepted + 1);
        } else {
            rejected++;
            fprintf(stderr, "line %llu: %s\n", (unsigned long long)rec.line, reason);
        }
    }
    CHECK_EQ(pos, len);
    CHECK_EQ(skipped, 1);
    CHECK_EQ(accepted, 9488);
    CHECK_EQ(rejected, 0);
    CHECK_EQ(sum, want_sum);
    CHECK(fraud > 0);
    CHECK(ordered);
    cf_splitter_destroy(sp);
    cf_decoder_destroy(d);
    free(doc);
}

static void test_fdh_sample_7days(void)
{
    const char *path = cf_test_shared("data/fdh/fdh_sample_7days_2018-04-01.csv");
    size_t len = 0;
    char *doc = cf_test_slurp(path, &len);
    REQUIRE(doc != NULL);
    /* Through a small reader buffer, as the pipeline reads a file. */
    enum { MAX = 70000 };
    cf_event *ev = malloc(MAX * sizeof(*ev));
    REQUIRE(ev != NULL);
    tally t = run_doc(CF_FMT_FDH, doc, len, 65536, ev, MAX);
    CHECK_EQ(t.skipped, 1);
    CHECK_EQ(t.accepted, 66976);
    CHECK_EQ(t.rejected, 0);
    /* Unique ids (0..n-1) and time-sorted events, as PROVENANCE.md says. */
    bool ok = true;
    unsigned char *seen = calloc(MAX, 1);
    for (uint64_t i = 0; i < t.accepted && i < MAX; i++) {
        ok = ok && ev[i].event_id < MAX && !seen[ev[i].event_id] &&
             (i == 0 || ev[i].ts_us >= ev[i - 1].ts_us);
        if (ev[i].event_id < MAX) {
            seen[ev[i].event_id] = 1;
        }
    }
    free(seen);
    CHECK(ok);
    CHECK(ev[t.accepted - 1].ts_us - ev[0].ts_us < 7 * 86400 * INT64_C(1000000));
    free(ev);
    free(doc);
}

/* ---- splitter --------------------------------------------------------------------------- */

static void test_split_basic(void)
{
    const char *doc = "h1,h2\r\n"          /* line 1, offset 0 */
                      "\r\n"               /* line 2: empty */
                      "\n"                 /* line 3: empty */
                      "a,\"b\r\nc\"\r\n"   /* line 4-5, offset 10 */
                      "d,\"e\"\"\"\n"      /* line 6, offset 20 */
                      "\"x\ny\nz\",w\n"    /* line 7-9, offset 28 */
                      "last,no-newline\r"; /* line 10, offset 38 */
    srecs rs = split_doc(CF_FMT_CSV, doc, strlen(doc), strlen(doc), 0);
    REQUIRE(rs.n == 5);
    CHECK_STR(rs.r[0].data, "h1,h2");
    CHECK_EQ(rs.r[0].line, 1);
    CHECK_EQ(rs.r[0].offset, 0);
    CHECK_STR(rs.r[1].data, "a,\"b\r\nc\"");
    CHECK_EQ(rs.r[1].line, 4);
    CHECK_EQ(rs.r[1].offset, 10);
    CHECK_STR(rs.r[2].data, "d,\"e\"\"\"");
    CHECK_EQ(rs.r[2].line, 6);
    CHECK_EQ(rs.r[2].offset, 20);
    CHECK_STR(rs.r[3].data, "\"x\ny\nz\",w");
    CHECK_EQ(rs.r[3].line, 7);
    CHECK_EQ(rs.r[3].offset, 28);
    CHECK_STR(rs.r[4].data, "last,no-newline");
    CHECK_EQ(rs.r[4].line, 10);
    CHECK_EQ(rs.r[4].offset, 38);
    for (size_t i = 0; i < rs.n; i++) {
        CHECK(!rs.r[i].too_long);
    }
    srecs_free(&rs);

    /* NDJSON splits on every newline; quotes mean nothing to it. */
    const char *nd = "{\"a\":\"\\\"\"}\n\n  \n{\"b\":1}\r\n{\"c\"";
    rs = split_doc(CF_FMT_NDJSON, nd, strlen(nd), 3, 0);
    REQUIRE(rs.n == 4);
    CHECK_STR(rs.r[0].data, "{\"a\":\"\\\"\"}");
    CHECK_STR(rs.r[1].data, "  ");
    CHECK_EQ(rs.r[1].line, 3);
    CHECK_STR(rs.r[2].data, "{\"b\":1}");
    CHECK_EQ(rs.r[2].line, 4);
    CHECK_STR(rs.r[3].data, "{\"c\"");
    CHECK_EQ(rs.r[3].line, 5);
    srecs_free(&rs);

    /* Without at_eof a final unterminated record is kept back. */
    cf_splitter *sp = NULL;
    REQUIRE(cf_splitter_create(&sp, CF_FMT_CSV, 0) == CF_OK);
    cf_record rec;
    size_t used = 99;
    CHECK_EQ(cf_splitter_next(sp, "a,b", 3, false, &rec, &used), CF_E_EOF);
    CHECK_EQ(used, 0);
    CHECK_EQ(cf_splitter_next(sp, "a,\"b\n", 5, false, &rec, &used), CF_E_EOF);
    CHECK_EQ(used, 0);
    CHECK_EQ(cf_splitter_next(sp, "\n\n", 2, false, &rec, &used), CF_E_EOF);
    CHECK_EQ(used, 2);
    CHECK_EQ(cf_splitter_next(sp, "", 0, true, &rec, &used), CF_E_EOF);
    CHECK_EQ(used, 0);
    CHECK_EQ(cf_splitter_next(sp, "a,\"b\nc", 6, true, &rec, &used), CF_OK);
    CHECK_EQ(used, 6);
    CHECK_EQ(rec.len, 6);
    CHECK_EQ(rec.line, 3);
    CHECK_EQ(rec.offset, 2);
    cf_splitter_destroy(sp);
}

static void test_split_chunked(void)
{
    /* A document with everything awkward, fed whole, in 1-byte and in 7-byte pieces. */
    char doc[8192];
    size_t n = 0;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "%s\r\n", CSV_HDR);
    for (int i = 0; i < 40; i++) {
        n += (size_t)snprintf(doc + n, sizeof(doc) - n,
                              "%d,0,\"multi\r\nline %d, \"\"q\"\"\",M,1.00,EUR,PAYMENT,BE,POS,,%s",
                              i, i,
                              i % 3 == 0   ? "\r\n"
                              : i % 3 == 1 ? "\n\n"
                                           : "\n");
    }
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "99,0,A,M,1,EUR,PAYMENT,BE,POS,,");
    for (int f = 0; f < 2; f++) {
        cf_format fmt = f == 0 ? CF_FMT_CSV : CF_FMT_NDJSON;
        srecs whole = split_doc(fmt, doc, n, n, 0);
        srecs one = split_doc(fmt, doc, n, 1, 0);
        srecs seven = split_doc(fmt, doc, n, 7, 0);
        CHECK(whole.n > 40);
        CHECK(srecs_equal(&whole, &one));
        CHECK(srecs_equal(&whole, &seven));
        srecs_free(&whole);
        srecs_free(&one);
        srecs_free(&seven);
    }
    srecs csv = split_doc(CF_FMT_CSV, doc, n, 5, 0);
    CHECK_EQ(csv.n, 42);
    srecs_free(&csv);
    tally t = run_doc(CF_FMT_CSV, doc, n, 3, NULL, 0);
    CHECK_EQ(t.accepted, 41);
    CHECK_EQ(t.rejected, 0);
    CHECK_EQ(t.skipped, 1);
}

/* Feeds doc in two pieces, cut at @p cut; returns the records found. */
static srecs split_two(cf_format fmt, const char *doc, size_t len, size_t cut, size_t line_max)
{
    srecs out = {0};
    cf_splitter *sp = NULL;
    if (cf_splitter_create(&sp, fmt, line_max) != CF_OK) {
        return out;
    }
    char *buf = malloc(len + 1);
    size_t have = 0;
    for (int piece = 0; piece < 2; piece++) {
        size_t from = piece == 0 ? 0 : cut, to = piece == 0 ? cut : len;
        memcpy(buf + have, doc + from, to - from);
        have += to - from;
        size_t pos = take_records(sp, buf, have, piece == 1, &out);
        memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
    free(buf);
    cf_splitter_destroy(sp);
    return out;
}

static void test_split_every_boundary(void)
{
    /* Cut the stream at every byte position: same records as when fed whole. */
    const char *doc = "h1,h2\r\n\r\n\"a\r\nb\",\"\"\"\"\r\nx,\"y\"\"\n\"\n"
                      "{\"k\":\"v\\\"\"}\n\n"
                      "0123456789012345678901234567890123456789\r\nlast\r";
    size_t len = strlen(doc);
    for (int f = 0; f < 2; f++) {
        cf_format fmt = f == 0 ? CF_FMT_CSV : CF_FMT_NDJSON;
        for (size_t line_max = 16; line_max <= 64; line_max += 48) {
            srecs whole = split_two(fmt, doc, len, len, line_max);
            CHECK(whole.n >= 5);
            int bad = 0;
            for (size_t cut = 0; cut <= len; cut++) {
                srecs two = split_two(fmt, doc, len, cut, line_max);
                bad += !srecs_equal(&whole, &two);
                srecs_free(&two);
            }
            CHECK_EQ(bad, 0);
            srecs_free(&whole);
        }
    }
}

static void test_split_too_long(void)
{
    /* Records over line_max (32 here) are reported once, then skipped, however fed. */
    char doc[4096];
    size_t n = 0;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "short1\n");
    memset(doc + n, 'L', 100);
    n += 100;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\nshort2\n");
    /* Exactly 32 content bytes + CRLF is fine; 33 is too long. */
    memset(doc + n, 'e', 32);
    n += 32;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\r\n");
    memset(doc + n, 'f', 33);
    n += 33;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\r\n");
    /* An over-long quoted CSV field holding newlines: skipped to the real record end. */
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\"");
    for (int i = 0; i < 10; i++) {
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "quoted line %d\n", i);
    }
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\",tail\nshort3\n");
    memset(doc + n, 'T', 50); /* over-long last record without newline */
    n += 50;
    size_t chunks[] = {n, 1, 7, 33, 34, 35};
    srecs ref = {0};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        srecs rs = split_doc(CF_FMT_CSV, doc, n, chunks[c], 32);
        REQUIRE(rs.n == 8);
        CHECK_STR(rs.r[0].data, "short1");
        CHECK(rs.r[1].too_long);
        CHECK_EQ(rs.r[1].len, 32);
        CHECK_EQ(rs.r[1].line, 2);
        CHECK_EQ(rs.r[1].offset, 7);
        CHECK_STR(rs.r[2].data, "short2");
        CHECK_EQ(rs.r[2].offset, 108);
        CHECK_EQ(rs.r[2].line, 3);
        CHECK(!rs.r[3].too_long);
        CHECK_EQ(rs.r[3].len, 32);
        CHECK(rs.r[4].too_long);
        CHECK_EQ(rs.r[4].line, 5);
        CHECK(rs.r[5].too_long);
        CHECK_EQ(rs.r[5].line, 6);
        CHECK_STR(rs.r[6].data, "short3");
        CHECK_EQ(rs.r[6].line, 17); /* the quoted record spans lines 6..16 */
        CHECK(rs.r[7].too_long);
        CHECK_EQ(rs.r[7].line, 18);
        if (c == 0) {
            ref = rs;
        } else {
            CHECK(srecs_equal(&ref, &rs));
            srecs_free(&rs);
        }
    }
    srecs_free(&ref);

    /* The same for NDJSON: quotes don't matter, lines do. */
    const char *nd = "{\"a\":1}\n{\"long\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n"
                     "{\"b\":2}\n";
    for (size_t chunk = 1; chunk <= 60; chunk += 59) {
        srecs rs = split_doc(CF_FMT_NDJSON, nd, strlen(nd), chunk, 32);
        REQUIRE(rs.n == 3);
        CHECK(rs.r[1].too_long);
        CHECK_STR(rs.r[2].data, "{\"b\":2}");
        CHECK_EQ(rs.r[2].line, 3);
        srecs_free(&rs);
    }

    /* Default line_max is CF_RECORD_MAX. */
    size_t big = CF_RECORD_MAX + 10;
    char *b = malloc(big + 16);
    memset(b, 'a', big);
    memcpy(b + big, "\nok\n", 4);
    srecs rs = split_doc(CF_FMT_CSV, b, big + 4, 1000, 0);
    REQUIRE(rs.n == 2);
    CHECK(rs.r[0].too_long);
    CHECK_EQ(rs.r[0].len, CF_RECORD_MAX);
    CHECK_STR(rs.r[1].data, "ok");
    srecs_free(&rs);
    free(b);
}

/* ---- encoders --------------------------------------------------------------------------- */

static void test_encode(void)
{
    CHECK_STR(cf_csv_header(), CSV_HDR "\n");
    cf_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.event_id = 7;
    ev.ts_us = 1522540831000001LL;
    strcpy(ev.account, "a,b");
    strcpy(ev.merchant, "m\"1");
    ev.amount_minor = -5;
    strcpy(ev.currency, "EUR");
    ev.type = CF_TX_REFUND;
    strcpy(ev.country, "BE");
    ev.channel = CF_CH_ECOM;
    ev.fraud = -1;
    ev.fraud_scenario = -1;
    char buf[512];
    size_t n = cf_event_to_csv(&ev, buf, sizeof(buf));
    CHECK_STR(buf, "7,2018-04-01T00:00:31.000001Z,\"a,b\",\"m\"\"1\",-0.05,EUR,REFUND,BE,ECOM,,\n");
    CHECK_EQ(n, strlen(buf));
    n = cf_event_to_ndjson(&ev, buf, sizeof(buf));
    CHECK_STR(buf, "{\"event_id\":7,\"ts\":\"2018-04-01T00:00:31.000001Z\",\"account\":\"a,b\","
                   "\"merchant\":\"m\\\"1\",\"amount\":-0.05,\"currency\":\"EUR\",\"type\":"
                   "\"REFUND\",\"country\":\"BE\",\"channel\":\"ECOM\"}\n");
    CHECK_EQ(n, strlen(buf));
    ev.fraud = 1;
    ev.fraud_scenario = 2;
    cf_event_to_csv(&ev, buf, sizeof(buf));
    CHECK(strstr(buf, ",ECOM,1,2\n") != NULL);
    cf_event_to_ndjson(&ev, buf, sizeof(buf));
    CHECK(strstr(buf, "\"fraud\":1,\"fraud_scenario\":2}\n") != NULL);
    /* Every size below the needed one gives 0 and an empty string, never an overrun. */
    size_t need = cf_event_to_csv(&ev, buf, sizeof(buf));
    for (size_t sz = 1; sz <= need; sz++) {
        char small[512];
        memset(small, '#', sizeof(small));
        CHECK_EQ(cf_event_to_csv(&ev, small, sz), 0);
        CHECK_EQ(small[0], '\0');
        CHECK_EQ(small[sz], '#');
    }
    CHECK_EQ(cf_event_to_csv(&ev, buf, need + 1), need);
    need = cf_event_to_ndjson(&ev, buf, sizeof(buf));
    for (size_t sz = 1; sz <= need; sz++) {
        char small[512];
        memset(small, '#', sizeof(small));
        CHECK_EQ(cf_event_to_ndjson(&ev, small, sz), 0);
        CHECK_EQ(small[sz], '#');
    }
    /* Events that cannot be encoded. */
    strcpy(ev.currency, "XYZ");
    CHECK_EQ(cf_event_to_csv(&ev, buf, sizeof(buf)), 0);
    strcpy(ev.currency, "EUR");
    ev.type = 99;
    CHECK_EQ(cf_event_to_ndjson(&ev, buf, sizeof(buf)), 0);
    ev.type = 0;
    ev.ts_us = INT64_MAX;
    CHECK_EQ(cf_event_to_csv(&ev, buf, sizeof(buf)), 0);
}

static void test_json_quote(void)
{
    char buf[128];
    CHECK_EQ(cf_json_quote("abc", 3, buf, sizeof(buf)), 5);
    CHECK_STR(buf, "\"abc\"");
    cf_json_quote("a\"b\\c\n\r\t\b\f\x01\x7f", 12, buf, sizeof(buf));
    CHECK_STR(buf, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\x7f\"");
    cf_json_quote("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3", 14, buf, sizeof(buf));
    CHECK_STR(buf, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3\"");
    cf_json_quote("\xff\xc3(\xed\xa0\x80", 6, buf, sizeof(buf));
    CHECK_STR(buf, "\"\\u00ff\\u00c3(\\u00ed\\u00a0\\u0080\"");
    cf_json_quote("a\0b", 3, buf, sizeof(buf));
    CHECK_STR(buf, "\"a\\u0000b\"");
    /* Truncation never splits an escape or a character and always closes the string. */
    for (size_t sz = 3; sz < 20; sz++) {
        char small[32];
        memset(small, '#', sizeof(small));
        size_t n = cf_json_quote("ab\n\xe2\x82\xac\xff", 7, small, sz);
        CHECK(n < sz);
        CHECK_EQ(small[0], '"');
        CHECK_EQ(small[n - 1], '"');
        CHECK_EQ(small[n], '\0');
        CHECK_EQ(small[sz], '#');
        CHECK(cf_utf8_valid(small, n));
        CHECK(strstr(small, "\\u00") == NULL || strstr(small, "\\u00ff") != NULL);
    }
    CHECK_EQ(cf_json_quote("abc", 3, buf, 2), 0);
    CHECK_EQ(cf_json_quote(NULL, 0, buf, sizeof(buf)), 2);
    CHECK_STR(buf, "\"\"");
}

/* A dead-letter line must be one valid JSON object: the NDJSON decoder agrees it parses. */
static void check_json_object(const char *line, size_t n)
{
    cf_decoder *d = new_decoder(CF_FMT_NDJSON);
    cf_record r = {.data = line,
                   .len = n > 0 && line[n - 1] == '\n' ? n - 1 : n,
                   .line = 1,
                   .offset = 1,
                   .too_long = false};
    cf_event ev;
    char reason[160];
    CHECK_EQ(cf_decoder_decode(d, &r, &ev, reason, sizeof(reason)), CF_DECODE_REJECT);
    CHECK_STR(reason, "missing field: event_id");
    cf_decoder_destroy(d);
}

static void test_deadletter(void)
{
    char buf[CF_DEADLETTER_RAW_MAX * 6 + 512];
    cf_record rec = {
        .data = "1,x,\"q\"\n\xff", .len = 9, .line = 12, .offset = 345, .too_long = false};
    size_t n = cf_deadletter_format("in.csv", &rec, "bad timestamp", buf, sizeof(buf));
    CHECK_STR(buf, "{\"source\":\"in.csv\",\"line\":12,\"offset\":345,\"reason\":\"bad timestamp\","
                   "\"raw\":\"1,x,\\\"q\\\"\\n\\u00ff\",\"raw_truncated\":false}\n");
    CHECK_EQ(n, strlen(buf));
    check_json_object(buf, n);

    /* Long raw: cut at CF_DEADLETTER_RAW_MAX on a character boundary. */
    char raw[1000];
    raw[0] = 'a'; /* shift the pairs so the cut lands inside a character */
    for (size_t i = 1; i + 1 < sizeof(raw); i += 2) {
        raw[i] = (char)0xC3;
        raw[i + 1] = (char)0xA9;
    }
    rec.data = raw;
    rec.len = sizeof(raw) - 1;
    n = cf_deadletter_format("src \"q\"", &rec, "record too long", buf, sizeof(buf));
    REQUIRE(n > 0);
    CHECK(strstr(buf, "\"raw_truncated\":true}\n") != NULL);
    CHECK(strstr(buf, "\\u00") == NULL);
    CHECK(cf_utf8_valid(buf, n));
    check_json_object(buf, n);
    const char *rs = strstr(buf, "\"raw\":\"") + 7;
    const char *re = strstr(rs, "\",\"raw_truncated\"");
    CHECK((size_t)(re - rs) <= CF_DEADLETTER_RAW_MAX);
    CHECK((size_t)(re - rs) >= CF_DEADLETTER_RAW_MAX - 3);

    /* Worst case: every raw byte escaped six-fold still fits the documented size. */
    memset(raw, 0x01, sizeof(raw));
    rec.len = sizeof(raw);
    rec.too_long = true;
    n = cf_deadletter_format("in", &rec, "record too long", buf, sizeof(buf));
    CHECK(n > CF_DEADLETTER_RAW_MAX * 6);
    check_json_object(buf, n);
    /* Too small: 0. NULL source and reason are empty strings. */
    CHECK_EQ(cf_deadletter_format("in", &rec, "r", buf, 100), 0);
    rec.len = 1;
    rec.too_long = false;
    n = cf_deadletter_format(NULL, &rec, NULL, buf, sizeof(buf));
    CHECK(strncmp(buf, "{\"source\":\"\",", 13) == 0);
    CHECK(strstr(buf, "\"reason\":\"\"") != NULL);
    check_json_object(buf, n);
}

/* ---- round trips ------------------------------------------------------------------------ */

static const char *const weird_ids[] = {
    /* 64 control bytes: the longest NDJSON encoding of an id */
    "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
    "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
    "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
    "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01",
    "plain",
    "comma,inside",
    "\"quoted\"",
    "new\nline",
    "cr\rlf\r\n",
    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3",
    "\ttab and \\ backslash",
    "{\"json\":[1]}",
    " leading and trailing ",
    ",",
    "\"",
    "\"\"\"",
    "\x01\x02\x1f\x7f",
    "0123456789012345678901234567890123456789012345678901234567890123", /* 64 bytes */
    "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
    "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
    "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac",
};

static void random_event(cf_event *ev, int i)
{
    static const char *const cur[] = {"EUR", "USD", "JPY", "BHD", "CLF", "KWD", "GBP", "ISK"};
    static const char *const ctry[] = {"BE", "DE", "JP", "US", "BH", "CL", "AX", "ZW"};
    size_t nid = sizeof(weird_ids) / sizeof(weird_ids[0]);
    memset(ev, 0, sizeof(*ev));
    ev->event_id = i % 5 == 0 ? UINT64_MAX - (uint64_t)i : rnd();
    ev->ts_us = CF__IO_TEST_TS_MIN +
                (int64_t)(rnd() % (uint64_t)(CF__IO_TEST_TS_MAX - CF__IO_TEST_TS_MIN + 1));
    if (i % 7 == 0) {
        ev->ts_us = i % 2 ? CF__IO_TEST_TS_MAX : CF__IO_TEST_TS_MIN;
    }
    snprintf(ev->account, sizeof(ev->account), "%s", weird_ids[rnd() % nid]);
    snprintf(ev->merchant, sizeof(ev->merchant), "%s", weird_ids[rnd() % nid]);
    uint64_t r = rnd();
    ev->amount_minor = (int64_t)(r >> (r % 64));
    if (i % 2) {
        ev->amount_minor = -ev->amount_minor;
    }
    if (i % 11 == 0) {
        ev->amount_minor = i % 3 ? INT64_MAX : INT64_MIN;
    }
    memcpy(ev->currency, cur[rnd() % 8], 4);
    memcpy(ev->country, ctry[rnd() % 8], 3);
    ev->type = (uint8_t)(rnd() % CF_TX__COUNT);
    ev->channel = (uint8_t)(rnd() % CF_CH__COUNT);
    ev->fraud = (int8_t)((int)(rnd() % 3) - 1);
    ev->fraud_scenario = (int8_t)((int)(rnd() % 5) - 1);
}

static int same_event(const cf_event *a, const cf_event *b)
{
    return a->event_id == b->event_id && a->ts_us == b->ts_us &&
           a->amount_minor == b->amount_minor && strcmp(a->account, b->account) == 0 &&
           strcmp(a->merchant, b->merchant) == 0 && strcmp(a->currency, b->currency) == 0 &&
           strcmp(a->country, b->country) == 0 && a->type == b->type && a->channel == b->channel &&
           a->fraud == b->fraud && a->fraud_scenario == b->fraud_scenario;
}

static void roundtrip(cf_format fmt)
{
    enum { N = 3000 };
    cf_event *in = calloc(N, sizeof(*in));
    cf_event *out = calloc(N, sizeof(*out));
    size_t cap = (size_t)N * 600 + 256;
    char *doc = malloc(cap);
    size_t len = 0;
    if (fmt == CF_FMT_CSV) {
        len += (size_t)snprintf(doc, cap, "%s", cf_csv_header());
    }
    for (int i = 0; i < N; i++) {
        random_event(&in[i], i);
        size_t n = fmt == CF_FMT_CSV ? cf_event_to_csv(&in[i], doc + len, cap - len)
                                     : cf_event_to_ndjson(&in[i], doc + len, cap - len);
        REQUIRE(n > 0);
        len += n;
    }
    size_t chunks[] = {len, 7, 1};
    for (size_t c = 0; c < 3; c++) {
        memset(out, 0, (size_t)N * sizeof(*out));
        tally t = run_doc(fmt, doc, len, chunks[c], out, N);
        CHECK_EQ(t.accepted, N);
        CHECK_EQ(t.rejected, 0);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            if (!same_event(&in[i], &out[i])) {
                bad++;
            }
        }
        CHECK_EQ(bad, 0);
    }
    free(doc);
    free(in);
    free(out);
}

static void test_roundtrip_csv(void)
{
    roundtrip(CF_FMT_CSV);
}

static void test_roundtrip_ndjson(void)
{
    roundtrip(CF_FMT_NDJSON);
}

/* ---- reconciliation and robustness ------------------------------------------------------ */

static void test_reconcile_mixed(void)
{
    /* Known counts: header + 300 good + 9 kinds of bad (x 10) + empty lines + a long line +
     * an unterminated quote at the very end (one record running to EOF). */
    static const char *const bad_rows[] = {
        ",2018-04-01T00:00:31Z,A,M,1.00,XYZ,PAYMENT,BE,POS,,\n",
        ",not-a-time,A,M,1.00,EUR,PAYMENT,BE,POS,,\n",
        ",0,A,M,abc,EUR,PAYMENT,BE,POS,,\n",
        ",0,A,M,99999999999999999999,EUR,PAYMENT,BE,POS,,\n",
        ",0,A\n",
        ",0,A\xff,M,1,EUR,PAYMENT,BE,POS,,\n",
        ",0,A,M,1,EUR,PAYMENT,BE,POS,,,\n",
        ",0,\"A\"x,M,1,EUR,PAYMENT,BE,POS,,\n",
        ",0,A,M,1.001,EUR,PAYMENT,BE,POS,,\n",
    };
    size_t cap = 200000;
    char *doc = malloc(cap);
    size_t n = (size_t)snprintf(doc, cap, "%s", cf_csv_header());
    int good = 0, bad = 0;
    for (int i = 0; i < 390; i++) {
        if (i % 13 == 12) {
            n += (size_t)snprintf(doc + n, cap - n, "\r\n\n");
        }
        if (i % 39 == 5) {
            n += (size_t)snprintf(doc + n, cap - n, "%d%s", i, bad_rows[(i / 39) % 9]);
            bad++;
        } else if (i % 39 == 6) {
            memset(doc + n, 'z', CF_RECORD_MAX + 100);
            n += CF_RECORD_MAX + 100;
            doc[n++] = '\n';
            bad++;
        } else {
            n += (size_t)snprintf(doc + n, cap - n,
                                  "%d,2018-04-01T00:00:%02dZ,\"A%d\",M%d,%d.%02d,EUR,PAYMENT,BE,"
                                  "POS,%d,\n",
                                  i, i % 60, i, i % 7, i, i % 100, i % 2);
            good++;
        }
    }
    for (int k = 0; k < 9; k++) {
        n += (size_t)snprintf(doc + n, cap - n, "%d%s", 1000 + k, bad_rows[k]);
        bad++;
    }
    n += (size_t)snprintf(doc + n, cap - n, "7,0,\"unterminated,M,1,EUR,PAYMENT,BE,POS,,\n9,0");
    bad++;
    size_t chunks[] = {n, 1, 7, 4097};
    for (size_t c = 0; c < 4; c++) {
        tally t = run_doc(CF_FMT_CSV, doc, n, chunks[c], NULL, 0);
        CHECK_EQ(t.skipped, 1);
        CHECK_EQ(t.accepted, good);
        CHECK_EQ(t.rejected, bad);
        CHECK_EQ(t.read, t.accepted + t.rejected);
    }
    free(doc);
}

static void mutate(char *buf, size_t *len, size_t cap)
{
    static const char specials[] = "\",\\{}[]:\n\r\x80\xc3\xff\x00 -.0e9";
    int k = 1 + (int)(rnd() % 4);
    for (int m = 0; m < k; m++) {
        size_t n = *len;
        size_t at = n ? (size_t)(rnd() % n) : 0;
        unsigned char b = rnd() % 2 ? (unsigned char)specials[rnd() % (sizeof(specials) - 1)]
                                    : (unsigned char)rnd();
        switch (rnd() % 5) {
        case 0: /* overwrite */
            if (n) {
                buf[at] = (char)b;
            }
            break;
        case 1: /* insert */
            if (n + 1 < cap) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (char)b;
                (*len)++;
            }
            break;
        case 2: /* delete */
            if (n) {
                memmove(buf + at, buf + at + 1, n - at - 1);
                (*len)--;
            }
            break;
        case 3: { /* duplicate a span */
            size_t span = 1 + (size_t)(rnd() % 16);
            if (at + span <= n && n + span < cap) {
                memmove(buf + at + span, buf + at, n - at);
                (*len) += span;
            }
            break;
        }
        default: /* truncate */
            *len = at;
            break;
        }
    }
}

static void test_mutation_robustness(void)
{
    static const struct {
        cf_format fmt;
        const char *header;
        const char *rec;
    } seeds[] = {
        {CF_FMT_CSV, CSV_HDR, GOOD_CSV},
        {CF_FMT_CSV, CSV_HDR, "2,1522540831000000,\"a,\"\"b\"\"\nc\",M,-1.5,EUR,REFUND,DE,ATM,,"},
        {CF_FMT_NDJSON, NULL,
         "{\"event_id\":1," JBASE ",\"amount\":57.16,\"meta\":{\"a\":[1,\"x\"]}}"},
        {CF_FMT_NDJSON, NULL,
         "{\"event_id\":\"2\",\"ts\":0,\"account\":\"\\u00e9\\ud83d\\udcb3\",\"merchant\":\"m\","
         "\"amount_minor\":-5,\"currency\":\"JPY\",\"type\":\"DEBIT\",\"country\":\"JP\","
         "\"channel\":\"P2P\",\"fraud\":true}"},
        {CF_FMT_FDH, "tx_id,ts,customer_id,terminal_id,amount,fraud,fraud_scenario",
         "0,1522540831,596,3156,57.16,0,0"},
    };
    rng_state = 20261125;
    int events = 0, rejects = 0;
    for (int it = 0; it < 5000; it++) {
        int s = it % 5;
        char doc[1024];
        size_t n = 0;
        if (seeds[s].header != NULL) {
            n = (size_t)snprintf(doc, sizeof(doc), "%s\n", seeds[s].header);
        }
        size_t body = strlen(seeds[s].rec);
        char mut[512];
        memcpy(mut, seeds[s].rec, body);
        mutate(mut, &body, sizeof(mut));
        memcpy(doc + n, mut, body);
        n += body;
        doc[n++] = '\n';
        srecs rs = split_doc(seeds[s].fmt, doc, n, it % 3 == 0 ? 1 : n, 0);
        cf_decoder *d = new_decoder(seeds[s].fmt);
        for (size_t i = 0; i < rs.n; i++) {
            cf_record rec = {rs.r[i].data, rs.r[i].len, rs.r[i].line, rs.r[i].offset,
                             rs.r[i].too_long};
            cf_event ev;
            char reason[160] = "";
            cf_decode_result r = cf_decoder_decode(d, &rec, &ev, reason, sizeof(reason));
            if (r == CF_DECODE_EVENT) {
                CHECK(event_valid(&ev));
                events++;
            } else if (r == CF_DECODE_REJECT) {
                CHECK(reason[0] != '\0');
                char dl[CF_DEADLETTER_RAW_MAX * 6 + 512];
                size_t dn = cf_deadletter_format("fuzz", &rec, reason, dl, sizeof(dl));
                CHECK(dn > 0);
                CHECK(cf_utf8_valid(dl, dn));
                rejects++;
            } else {
                CHECK_EQ(r, CF_DECODE_SKIP);
                CHECK(seeds[s].header != NULL && i == 0);
            }
        }
        cf_decoder_destroy(d);
        srecs_free(&rs);
    }
    CHECK(events > 100);
    CHECK(rejects > 1000);
}

/* ---- conversion to one reporting currency (cf_fx) ------------------------------------------ */

static cf_fx_rate fx_rate(const char *from, const char *to, uint64_t num, uint8_t scale)
{
    cf_fx_rate r;
    memset(&r, 0, sizeof(r));
    memcpy(r.from, from, 4);
    memcpy(r.to, to, 4);
    r.num = num;
    r.scale = scale;
    r.valid_from_us = INT64_MIN;
    r.valid_to_us = INT64_MAX;
    return r;
}

static int64_t fx_conv(const char *from, const char *to, uint64_t num, uint8_t scale, int64_t a)
{
    cf_fx_rate r = fx_rate(from, to, num, scale);
    int64_t out = INT64_C(0x5a5a5a5a);
    CHECK_OK(cf_fx_convert(&r, a, &out));
    return out;
}

/* Half to even at the target's minor unit, symmetric for negative amounts, with the ISO 4217
 * exponents of both currencies (JPY 0, EUR 2, KWD 3). */
static void test_fx_rounding_half_even(void)
{
    /* USD -> EUR at 0.5: 1 cent is half a cent. */
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, 1), 0);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, 3), 2);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, 5), 2);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, 7), 4);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, -1), 0);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, -3), -2);
    CHECK_EQ(fx_conv("USD", "EUR", 5, 1, -5), -2);
    /* just above and below a half */
    CHECK_EQ(fx_conv("USD", "EUR", 5000001, 7, 1), 1);
    CHECK_EQ(fx_conv("USD", "EUR", 4999999, 7, 1), 0);
    /* EUR (2) -> JPY (0) at 1: 1.50 EUR = 1.5 JPY -> 2; 2.50 -> 2; 2.51 -> 3 */
    CHECK_EQ(fx_conv("EUR", "JPY", 1, 0, 150), 2);
    CHECK_EQ(fx_conv("EUR", "JPY", 1, 0, 250), 2);
    CHECK_EQ(fx_conv("EUR", "JPY", 1, 0, 251), 3);
    CHECK_EQ(fx_conv("EUR", "JPY", 1, 0, -250), -2);
    /* KWD (3) -> EUR (2): 1.005 KWD at 1 = 100.5 cents -> 100; 1.015 -> 102 */
    CHECK_EQ(fx_conv("KWD", "EUR", 1, 0, 1005), 100);
    CHECK_EQ(fx_conv("KWD", "EUR", 1, 0, 1015), 102);
    /* JPY (0) -> KWD (3): 150 JPY at 0.002 = 0.300 KWD = 300 fils, exact */
    CHECK_EQ(fx_conv("JPY", "KWD", 2, 3, 150), 300);
    /* EUR -> USD at 1.0834: 150.00 EUR = 162.51 USD exactly */
    CHECK_EQ(fx_conv("EUR", "USD", 10834, 4, 15000), 16251);
    /* identity */
    CHECK_EQ(fx_conv("EUR", "EUR", 1, 0, 12345), 12345);
}

static void test_fx_overflow_limits(void)
{
    CHECK_EQ(fx_conv("EUR", "USD", 1, 0, INT64_MAX), INT64_MAX);
    CHECK_EQ(fx_conv("EUR", "USD", 1, 0, INT64_MIN), INT64_MIN);
    CHECK_EQ(fx_conv("EUR", "USD", 5, 1, INT64_MAX), INT64_C(4611686018427387904)); /* .5 up */
    CHECK_EQ(fx_conv("EUR", "USD", 5, 1, INT64_MIN), INT64_C(-4611686018427387904));
    CHECK_EQ(fx_conv("EUR", "USD", UINT64_C(999999999999999999), 18, INT64_MAX),
             INT64_C(9223372036854775798));
    CHECK_EQ(fx_conv("KWD", "JPY", 1, 0, INT64_MAX), INT64_C(9223372036854776));
    cf_fx_rate r = fx_rate("EUR", "USD", 2, 0);
    int64_t out = 7;
    CHECK_EQ(cf_fx_convert(&r, INT64_MAX, &out), CF_E_OVERFLOW);
    CHECK_EQ(cf_fx_convert(&r, INT64_MIN, &out), CF_E_OVERFLOW);
    CHECK_EQ(cf_fx_convert(&r, INT64_MAX / 2 + 1, &out), CF_E_OVERFLOW);
    CHECK_OK(cf_fx_convert(&r, INT64_MAX / 2, &out));
    CHECK_EQ(out, INT64_MAX - 1);
    CHECK_OK(cf_fx_convert(&r, INT64_MIN / 2, &out));
    CHECK_EQ(out, INT64_MIN); /* -2^63 fits, +2^63 does not */
    /* the 10^(e_to - e_from) step: JPY -> KWD multiplies by 1000 */
    r = fx_rate("JPY", "KWD", UINT64_C(999999999999999999), 0);
    CHECK_EQ(cf_fx_convert(&r, INT64_MAX, &out), CF_E_OVERFLOW);
    r = fx_rate("JPY", "KWD", 1, 0);
    CHECK_EQ(cf_fx_convert(&r, INT64_MAX / 1000 + 1, &out), CF_E_OVERFLOW);
    CHECK_OK(cf_fx_convert(&r, INT64_MAX / 1000, &out));
    CHECK_EQ(out, INT64_MAX / 1000 * 1000);
    CHECK_EQ(out % 1000, 0);
    r = fx_rate("XYZ", "EUR", 1, 0);
    CHECK_EQ(cf_fx_convert(&r, 1, &out), CF_E_INVAL);
}

static const char fx_file[] = "from_currency,to_currency,rate,valid_from,valid_to\n"
                              "USD,EUR,0.8,2018-04-01T00:00:00Z,2018-04-02T00:00:00Z\n"
                              "USD,EUR,0.9,2018-04-02T00:00:00Z,\n"
                              "JPY,EUR,0.0075,2018-04-01T00:00:00Z,2018-04-01T12:00:00Z\n"
                              "JPY,EUR,0.0076,2018-04-01T13:00:00Z,2018-04-03T00:00:00Z\n"
                              "USD,GBP,0.7,2018-04-01T00:00:00Z,2018-04-02T00:00:00Z\n";

static void test_fx_validity_boundaries(void)
{
    char err[256];
    cf_fx *fx = NULL;
    REQUIRE(cf_fx_parse(&fx, "r.csv", fx_file, strlen(fx_file), "EUR", err, sizeof(err)) == CF_OK);
    CHECK_EQ(cf_fx_count(fx), 4); /* the GBP row is for another target */
    CHECK_STR(cf_fx_target(fx), "EUR");
    const int64_t d1 = INT64_C(1522540800000000); /* 2018-04-01T00:00:00Z */
    const int64_t h = INT64_C(3600000000);
    const cf_fx_rate *r = cf_fx_find(fx, "USD", d1);
    REQUIRE(r != NULL);
    CHECK_EQ(r->num, 8);
    CHECK_EQ(r->line, 2);
    CHECK(cf_fx_find(fx, "USD", d1 - 1) == NULL); /* before the first period */
    r = cf_fx_find(fx, "USD", d1 + 24 * h - 1);   /* the last microsecond of the first */
    REQUIRE(r != NULL);
    CHECK_EQ(r->line, 2);
    r = cf_fx_find(fx, "USD", d1 + 24 * h); /* valid_to is exclusive: the next row */
    REQUIRE(r != NULL);
    CHECK_EQ(r->line, 3);
    r = cf_fx_find(fx, "USD", INT64_C(253402300799000000)); /* open-ended */
    REQUIRE(r != NULL);
    CHECK_EQ(r->line, 3);
    CHECK(cf_fx_find(fx, "JPY", d1 + 12 * h) == NULL); /* a gap between two periods */
    CHECK(cf_fx_find(fx, "JPY", d1 + 13 * h - 1) == NULL);
    r = cf_fx_find(fx, "JPY", d1 + 13 * h);
    REQUIRE(r != NULL);
    CHECK_EQ(r->num, 76);
    CHECK_EQ(r->scale, 4);
    CHECK(cf_fx_find(fx, "GBP", d1) == NULL);
    CHECK(cf_fx_find(fx, "KWD", d1) == NULL);
    r = cf_fx_find(fx, "EUR", 0); /* the target itself: identity */
    REQUIRE(r != NULL);
    CHECK_EQ(r->num, 1);
    CHECK_EQ(r->scale, 0);
    /* the reason a dead letter gets */
    char why[CF_FX_REASON_MAX];
    cf_fx_no_rate_reason("KWD", d1 + 1, why, sizeof(why));
    CHECK_STR(why, "no rate for KWD at 2018-04-01T00:00:00.000001Z");
    /* the encoding recorded in the audit log */
    uint8_t enc[CF_FX_RATE_ENC_LEN];
    cf_fx_rate back;
    r = cf_fx_find(fx, "USD", d1);
    cf_fx_rate_encode(r, enc);
    CHECK(cf_fx_rate_decode(enc, &back));
    CHECK(memcmp(back.from, "USD", 4) == 0 && memcmp(back.to, "EUR", 4) == 0);
    CHECK(back.num == r->num && back.scale == r->scale && back.valid_from_us == r->valid_from_us &&
          back.valid_to_us == r->valid_to_us);
    enc[14] = 19;
    CHECK(!cf_fx_rate_decode(enc, &back));
    cf_fx_destroy(fx);
}

static void test_fx_rates_file_errors(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"from_currency,to_currency,rate,valid_from\n", "line 1: bad header: no column valid_to"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,1e3,2018-04-01T00:00:00Z,\n",
         "r.csv line 2: rate '1e3'"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,-1,2018-04-01T00:00:00Z,\n",
         "line 2: rate"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,0,2018-04-01T00:00:00Z,\n",
         "line 2: rate"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,1.0000000000000000001,2018-04-01T00:00:00Z,\n",
         "line 2: rate"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n\n"
         "XXY,EUR,1,2018-04-01T00:00:00Z,\n",
         "line 3: from_currency 'XXY'"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,1,2018-04-01 00:00:00,\n",
         "line 2: valid_from"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,1,2018-04-02T00:00:00Z,2018-04-01T00:00:00Z\n",
         "line 2: valid_to is not after valid_from"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "USD,EUR,1,2018-04-01T00:00:00Z,2018-04-03T00:00:00Z\n"
         "GBP,EUR,1,2018-04-01T00:00:00Z,\n"
         "USD,EUR,1,2018-04-02T00:00:00Z,\n",
         "line 4: the period of this USD rate overlaps line 2's"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "EUR,EUR,1,2018-04-01T00:00:00Z,\n",
         "line 2: from_currency equals to_currency"},
        {"from_currency,to_currency,rate,valid_from,valid_to\n"
         "\"USD\",EUR,1,2018-04-01T00:00:00Z,\n",
         "line 2: quoted fields"},
        {"from_currency,to_currency,rate,valid_from,valid_to\nUSD,EUR\n", "line 2: too few"},
        {"", "line 1: no header"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        cf_fx *fx = NULL;
        cf_err e = cf_fx_parse(&fx, "r.csv", cases[i].text, strlen(cases[i].text), "EUR", err,
                               sizeof(err));
        CHECK_EQ(e, CF_E_PARSE);
        CHECK(fx == NULL);
        if (strstr(err, cases[i].want) == NULL) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, cases[i].want);
            CHECK(false);
        }
    }
    char err[256] = "";
    cf_fx *fx = NULL;
    CHECK_EQ(cf_fx_parse(&fx, "r.csv", fx_file, strlen(fx_file), "EURO", err, sizeof(err)),
             CF_E_INVAL);
    CHECK(strstr(err, "convert.to") != NULL);
    CHECK(cf_fx_load(&fx, "/nonexistent/rates.csv", "EUR", err, sizeof(err)) != CF_OK);
    CHECK(strstr(err, "/nonexistent/rates.csv") != NULL);
}

#include "cf_test_main.h"
