/*
 * Frame headers (little-endian):
 *   0 magic u32 "CFFT"  4 version u8  5 type u8  6 sender u8  7 reserved u8
 *   8 id u64  16 count u32  20 len u32  24 aux u32  28 crc u32 = crc32c(0..28 || payload)
 * A receiver opens a frame completely (magic, version, lengths, CRC) before it reads any of
 * the payload, so a torn or altered message is refused as a whole.
 */
#include <stdio.h>
#include <string.h>

#include "confide/core.h"
#include "confide/transport.h"

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void cf_frame_seal(const cf_frame_hdr *h, uint8_t *out)
{
    put32(out, CF_FRAME_MAGIC);
    out[4] = CF_FRAME_VERSION;
    out[5] = h->type;
    out[6] = h->sender;
    out[7] = 0;
    put64(out + 8, h->id);
    put32(out + 16, h->count);
    put32(out + 20, h->len);
    put32(out + 24, h->aux);
    uint32_t crc = cf_crc32c(0, out, 28);
    crc = cf_crc32c(crc, out + CF_FRAME_HDR_LEN, h->len);
    put32(out + 28, crc);
}

cf_err cf_frame_open(const uint8_t *d, size_t len, cf_frame_hdr *h, char *errstr,
                     size_t errstr_size)
{
    if (len < CF_FRAME_HDR_LEN || get32(d) != CF_FRAME_MAGIC) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "not a confide frame");
    }
    if (d[4] != CF_FRAME_VERSION) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                          "frame version %u, this build reads %u", d[4], CF_FRAME_VERSION);
    }
    h->type = d[5];
    h->sender = d[6];
    h->id = get64(d + 8);
    h->count = get32(d + 16);
    h->len = get32(d + 20);
    h->aux = get32(d + 24);
    if ((size_t)h->len != len - CF_FRAME_HDR_LEN) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                          "frame length %u, message has %zu payload bytes", h->len,
                          len - CF_FRAME_HDR_LEN);
    }
    uint32_t crc = cf_crc32c(0, d, 28);
    crc = cf_crc32c(crc, d + CF_FRAME_HDR_LEN, h->len);
    if (crc != get32(d + 28)) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "frame CRC mismatch");
    }
    if (h->type < CF_FRAME_SHARES || h->type > CF_FRAME_STATE) {
        return cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "unknown frame type %u", h->type);
    }
    return CF_OK;
}
