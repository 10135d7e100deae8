/* Fuzzes the YAML config loader: any input gives CF_OK or an error message, never a crash. */
#include <stdint.h>
#include <string.h>

#include "confide/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_config *c = NULL;
    if (cf_config_create(&c) != CF_OK) {
        return 0;
    }
    char err[512];
    err[0] = '\0';
    cf_err e = cf_config_load_string(c, (const char *)data, size, "fuzz", err, sizeof(err));
    if (e != CF_OK && err[0] == '\0') {
        __builtin_trap(); /* every failure must say why */
    }
    cf_config_destroy(c);
    return 0;
}
