/* Fuzzes NDJSON splitting and decoding (decode_fuzz.h). */
#include "confide/io.h" /* also tells CMake which modules to link */
#include "decode_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const decode_fuzz_spec spec = {.split = CF_FMT_NDJSON,
                                          .decoders = {CF_FMT_NDJSON},
                                          .n_decoders = 1,
                                          .canon = CF_FMT_NDJSON,
                                          .encode = cf_event_to_ndjson};
    return decode_fuzz_run(&spec, data, size);
}
