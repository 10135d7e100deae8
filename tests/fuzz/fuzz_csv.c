/* Fuzzes CSV splitting and decoding: canonical CSV and the FDH adapter (decode_fuzz.h). */
#include "confide/io.h" /* also tells CMake which modules to link */
#include "decode_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const decode_fuzz_spec spec = {.split = CF_FMT_CSV,
                                          .decoders = {CF_FMT_CSV, CF_FMT_FDH},
                                          .n_decoders = 2,
                                          .canon = CF_FMT_CSV,
                                          .encode = cf_event_to_csv};
    return decode_fuzz_run(&spec, data, size);
}
