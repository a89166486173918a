/* Internal to shim/proto: byte-order helpers and the pieces pp_parse() dispatches to.
 * Nothing here touches the system: no syscalls, no allocation, no mutable state. */
#ifndef PP_INTERNAL_H
#define PP_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "proxyshim.h"

static inline uint16_t pp_be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t pp_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void pp_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void pp_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Sets out->error and returns PP_INVALID, so every failure path is one line. */
static inline int pp_fail(struct pp_header *out, enum pp_error e)
{
	out->error = e;
	return PP_INVALID;
}

/* The version parsers; buf[0] is already known to be 'P' (v1) or 0x0D (v2), len >= 1. */
int pp_parse_v1(const uint8_t *buf, size_t len, unsigned versions, struct pp_header *out);
int pp_parse_v2(const uint8_t *buf, size_t len, unsigned versions, struct pp_header *out);
/* The v1 reader pp_parse_v1() falls back to; it alone decides every input, so tests and the
 * fuzzer compare it with pp_parse_v1()'s fast path. */
int pp_parse_v1_ref(const uint8_t *buf, size_t len, unsigned versions, struct pp_header *out);

/* The two CRC32C implementations behind pp_crc32c(), exposed for tests and the bench.
 * pp_crc32c_hw() must only be called when pp_crc32c_hw_available() says so. */
uint32_t pp_crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t pp_crc32c_hw(uint32_t crc, const void *buf, size_t len);
int pp_crc32c_hw_available(void);

#endif
