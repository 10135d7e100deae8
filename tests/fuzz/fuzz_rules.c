/* Fuzzes the compliance rules loader, then evaluates one event with whatever loaded:
 * any input gives a rules set or an error message, never a crash. */
#include <stdint.h>
#include <string.h>

#include "confide/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_rules *r = NULL;
    char err[512];
    err[0] = '\0';
    /* base_dir "/nonexistent": list files named by the input are never read from disk. */
    cf_err e = cf_rules_load_string(&r, (const char *)data, size, "fuzz", "/nonexistent", err,
                                    sizeof(err));
    if (e != CF_OK) {
        if (err[0] == '\0') {
            __builtin_trap(); /* every failure must say why */
        }
        return 0;
    }
    cf_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.event_id = 1;
    ev.ts_us = 1522540831000000;
    ev.amount_minor = 2200000;
    memcpy(ev.account, "C1", 3);
    memcpy(ev.merchant, "T1", 3);
    memcpy(ev.currency, "EUR", 4);
    memcpy(ev.country, "KP", 3);
    cf_verdict v;
    for (int i = 0; i < 8; i++) {
        cf_rules_eval(r, &ev, &v);
        uint8_t buf[CF_VERDICT_ENCODED_MAX];
        size_t n = cf_verdict_encode(r, &v, buf, sizeof(buf));
        char text[CF_VERDICT_ENCODED_MAX * 2];
        if (n > 0 && cf_verdict_to_text(buf, n, text, sizeof(text)) != CF_OK) {
            __builtin_trap(); /* our own encoding must decode */
        }
        ev.ts_us += 3600000000LL;
    }
    cf_rules_destroy(r);
    return 0;
}
