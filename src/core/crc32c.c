/*
 * CRC32C (Castagnoli): the checksum of audit records and transport frames. SSE4.2 when the
 * CPU has it, else slicing-by-8 tables built once.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "confide/core.h"

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc_table[8][256];
static int crc_ready; /* 1 table, 2 hardware; set once under crc_once */

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][i];
            crc_table[t][i] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
    }
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint32_t lo = c ^ rd32(p);
        uint32_t hi = rd32(p + 4);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
            crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
            crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- > 0) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    }
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t len)
{
    uint64_t c64 = c;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
    while (len-- > 0) {
        c = __builtin_ia32_crc32qi(c, *p++);
    }
    return c;
}
#endif

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_setup(void)
{
    crc_init();
    crc_ready = 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_ready = 2;
    }
#endif
}

uint32_t cf_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_setup);
    uint32_t c = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
    if (crc_ready == 2) {
        return ~crc_hw(c, data, len);
    }
#endif
    return ~crc_sw(c, data, len);
}
