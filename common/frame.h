/*
 * The wire framing: a 4-byte big-endian length, then that many bytes of
 * one protobuf message (proto/dadc.proto).
 */
#ifndef DADC_FRAME_H
#define DADC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_BYTES 4
#define FRAME_DEFAULT_MAX (4u * 1024 * 1024)
#define FRAME_PRE_HELLO_MAX (16u * 1024)

/* Write the header for a body of len bytes into hdr. */
static inline void frame_header_encode(uint8_t hdr[FRAME_HEADER_BYTES],
                                       uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}

/* The body length a header announces. */
static inline uint32_t frame_header_decode(const uint8_t hdr[4])
{
    return ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
           ((uint32_t)hdr[2] << 8) | (uint32_t)hdr[3];
}

#endif
