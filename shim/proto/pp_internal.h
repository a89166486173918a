/* Internal to shim/proto: byte-order helpers and the pieces pp_parse() dispatches to.
 * Nothing here touches the system: no syscalls, no allocation, no mutable state. */
#ifndef PP_INTERNAL_H
#define PP_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "proxyshim_proto.h"

/* The v2 fixed header (the spec's struct proxy_hdr_v2): byte offsets of its fields. */
#define PP2_OFF_VER_CMD 12 /* version (high nibble), command (low) */
#define PP2_OFF_FAM 13     /* address family (high nibble), transport (low) */
#define PP2_OFF_LEN 14     /* big-endian length of what follows the 16 fixed bytes */
#define PP2_OFF_ADDR PP2_HEADER_LEN /* the address block, then TLVs */
#define PP2_SIG_BYTE0 0x0D /* PP2_SIGNATURE's first byte: v1 starts with 'P' */

/* Offsets inside the address block, per family (the spec's ipv4_addr, ipv6_addr, unix_addr). */
#define PP2_IN_SRC_ADDR 0
#define PP2_IN_DST_ADDR 4
#define PP2_IN_SRC_PORT 8
#define PP2_IN_DST_PORT 10
#define PP2_IN6_SRC_ADDR 0
#define PP2_IN6_DST_ADDR 16
#define PP2_IN6_SRC_PORT 32
#define PP2_IN6_DST_PORT 34
#define PP2_UNIX_SRC 0
#define PP2_UNIX_DST PP2_UNIX_PATH_LEN

/* A TLV: type, big-endian length, value. */
#define PP2_TLV_OFF_LEN 1
#define PP2_TLV_HDR_LEN 3
/* The SSL TLV's value: client bits, big-endian verify, then sub-TLVs. */
#define PP2_SSL_OFF_VERIFY 1
#define PP2_SSL_HDR_LEN 5

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

/* Sets out->need and returns PP_INCOMPLETE: `need` (> 0) more bytes before the answer can
 * change, and at least that many before the header is complete. */
static inline int pp_incomplete(struct pp_header *out, size_t need)
{
	out->need = (uint32_t)need;
	return PP_INCOMPLETE;
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
