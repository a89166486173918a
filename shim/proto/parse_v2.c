/* PROXY protocol v2: the 16-byte fixed part, the address block and the TLV area,
 * with this project's receiver policy (docs/PROTOCOL.md, "Version 2 choices").
 *
 * Choices where the spec and the policy are silent:
 * - v2 not selected is decided at the 12-byte signature, before byte 13 is looked at.
 * - The family alone sets the address block, whatever the transport: PROXY INET/UNSPEC
 *   (0x10) needs 12 bytes, and its addresses are reported; the caller decides their use.
 * - Two CRC32C TLVs: PP_E_V2_CRC (no single zeroed field to check against).
 * - LOCAL: a TLV area that breaks a TLV rule (framing, CRC32C size, UNIQUE_ID size, two
 *   CRC32C) is not reported and the header stands; a well-formed area whose CRC32C does
 *   not match is PP_E_V2_CRC: a mismatch is never optional (docs/PROTOCOL.md, "CRC32C").
 * - UNIX paths lose their trailing NULs only: a leading NUL (Linux abstract name) stays. */
#include <netinet/in.h>

#include "pp_internal.h"

static const uint8_t pp2_sig[PP2_SIGNATURE_LEN] = PP2_SIGNATURE;
/* By the whole fam byte (family and transport): 1 + the address block size for the 12 valid
 * values, 0 for the rest, so one load checks both nibbles on the common path. */
#define FT(fam, size) [fam] = (size) + 1, [(fam) | 1] = (size) + 1, [(fam) | 2] = (size) + 1
static const uint16_t pp2_ft_alen1[256] = {
	FT(0x00, 0), FT(0x10, PP2_ADDR_LEN_INET), FT(0x20, PP2_ADDR_LEN_INET6),
	FT(0x30, PP2_ADDR_LEN_UNIX),
};
#undef FT

/* The ver_cmd and fam bytes. Returns PP_E_OK or the broken rule. */
static enum pp_error check_ver_cmd(uint8_t vc)
{
	if ((vc & 0xF0) != PP2_VERSION)
		return PP_E_V2_VERSION;
	if ((vc & 0x0F) > PP2_CMD_PROXY)
		return PP_E_V2_COMMAND;
	return PP_E_OK;
}

static enum pp_error check_fam(uint8_t ft)
{
	if ((ft >> 4) > 3)
		return PP_E_V2_FAMILY;
	if ((ft & 0x0F) > PP2_TRANS_DGRAM)
		return PP_E_V2_TRANSPORT;
	return PP_E_OK;
}

/* Fewer than 16 bytes (or a fixed part that fails, given as its first 14): decide whatever the bytes present already decide, in the same order
 * as the full check below, so a prefix never contradicts the complete header. */
static int parse_prefix(const uint8_t *b, size_t len, unsigned versions, struct pp_header *out)
{
	size_t n = len < PP2_SIGNATURE_LEN ? len : PP2_SIGNATURE_LEN;
	enum pp_error e;

	for (size_t i = 0; i < n; i++)
		if (b[i] != pp2_sig[i])
			return PP_NOT_PROXY;
	/* Not past the fixed part: the next byte may already decide (a signature byte, a
	 * nibble), so it is the only one asked for. */
	if (len < PP2_SIGNATURE_LEN)
		return pp_incomplete(out, 1);
	if (!(versions & PP_V2))
		return pp_fail(out, PP_E_VERSION_NOT_ALLOWED);
	if (len > PP2_OFF_VER_CMD && (e = check_ver_cmd(b[PP2_OFF_VER_CMD])) != PP_E_OK)
		return pp_fail(out, e);
	if (len > PP2_OFF_FAM && (e = check_fam(b[PP2_OFF_FAM])) != PP_E_OK)
		return pp_fail(out, e);
	return pp_incomplete(out, 1);
}

/* Walks the TLV area [off, end). Records where the CRC32C value is (0 if none). */
static enum pp_error check_tlvs(const uint8_t *b, size_t off, size_t end, size_t *crc_at)
{
	*crc_at = 0;
	while (off < end) {
		size_t n;
		uint8_t type;

		if (end - off < PP2_TLV_HDR_LEN)
			return PP_E_V2_TLV;
		type = b[off];
		n = pp_be16(b + off + PP2_TLV_OFF_LEN);
		if (end - off - PP2_TLV_HDR_LEN < n)
			return PP_E_V2_TLV;
		if (type == PP2_TYPE_CRC32C) {
			if (n != 4)
				return PP_E_V2_CRC_LEN;
			/* Two checksums cannot both be "the" zeroed field: refuse to pick one. */
			if (*crc_at)
				return PP_E_V2_CRC;
			*crc_at = off + PP2_TLV_HDR_LEN;
		} else if (type == PP2_TYPE_UNIQUE_ID && n > PP2_UNIQUE_ID_MAX) {
			return PP_E_V2_UNIQUE_ID;
		}
		off += PP2_TLV_HDR_LEN + n;
	}
	return PP_E_OK;
}

/* CRC32C over the whole header with the 4 value bytes at `at` taken as zero, in three
 * pieces so the caller's buffer is neither copied nor written. */
static int crc_matches(const uint8_t *b, size_t total, size_t at)
{
	static const uint8_t zero[4];
	uint32_t c;

	c = pp_crc32c(0, b, at);
	c = pp_crc32c(c, zero, sizeof(zero));
	c = pp_crc32c(c, b + at + 4, total - at - 4);
	return c == pp_be32(b + at);
}

static void put_in(struct sockaddr_storage *ss, const uint8_t *addr, const uint8_t *port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	memcpy(&sin.sin_addr, addr, 4);
	memcpy(&sin.sin_port, port, 2);
	memcpy(ss, &sin, sizeof(sin));
}

static void put_in6(struct sockaddr_storage *ss, const uint8_t *addr, const uint8_t *port)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	memcpy(&sin6.sin6_addr, addr, 16);
	memcpy(&sin6.sin6_port, port, 2);
	memcpy(ss, &sin6, sizeof(sin6));
}

/* A UNIX path field without its trailing NUL padding (a leading NUL, as in Linux abstract
 * names, is kept). */
static uint8_t unix_path_len(const uint8_t *p)
{
	size_t n = PP2_UNIX_PATH_LEN;

	while (n && p[n - 1] == 0)
		n--;
	return (uint8_t)n;
}

/* The addresses of a PROXY header whose block is complete. */
static void put_addrs(const uint8_t *b, unsigned fam, struct pp_header *out)
{
	/* Offsets from b, not from a pointer to the block: gcc folds them into the loads, where
	 * the pointer cost one instruction per header (tests/bench/parse_instructions.sh). */
#define A(off) (b + PP2_OFF_ADDR + (off))
	switch (fam) {
	case PP_FAM_INET:
		put_in(&out->src, A(PP2_IN_SRC_ADDR), A(PP2_IN_SRC_PORT));
		put_in(&out->dst, A(PP2_IN_DST_ADDR), A(PP2_IN_DST_PORT));
		break;
	case PP_FAM_INET6:
		put_in6(&out->src, A(PP2_IN6_SRC_ADDR), A(PP2_IN6_SRC_PORT));
		put_in6(&out->dst, A(PP2_IN6_DST_ADDR), A(PP2_IN6_DST_PORT));
		break;
	case PP_FAM_UNIX:
		out->unix_src = (const char *)A(PP2_UNIX_SRC);
		out->unix_dst = (const char *)A(PP2_UNIX_DST);
		out->unix_src_len = unix_path_len(A(PP2_UNIX_SRC));
		out->unix_dst_len = unix_path_len(A(PP2_UNIX_DST));
		break;
	default:
		break;
	}
#undef A
}

/* Everything past the address block, kept out of the common path: a LOCAL block shorter
 * than its family's, the TLV area and its CRC32C, then the addresses. */
static __attribute__((noinline)) int parse_rest(const uint8_t *b, size_t total, size_t alen,
						 struct pp_header *out)
{
	size_t tlv_off = PP2_HEADER_LEN + alen, crc_at;
	enum pp_error e;

	/* LOCAL with a block too short for its family: the block is opaque, no TLVs. */
	if (total < tlv_off)
		return (int)total;
	e = check_tlvs(b, tlv_off, total, &crc_at);
	if (e != PP_E_OK) {
		if (out->command == PP_CMD_PROXY)
			return pp_fail(out, e);
		/* LOCAL: TLVs that do not parse are not reported, and the header stands. */
		return (int)total;
	}
	if (crc_at) {
		if (!crc_matches(b, total, crc_at))
			return pp_fail(out, PP_E_V2_CRC);
		out->crc_verified = 1;
	}
	if (total > tlv_off) {
		out->tlv = b + tlv_off;
		out->tlv_len = (uint16_t)(total - tlv_off);
	}
	if (out->command == PP_CMD_PROXY)
		put_addrs(b, out->family, out);
	return (int)total;
}

int pp_parse_v2(const uint8_t *b, size_t len, unsigned versions, struct pp_header *out)
{
	uint64_t w8, s8;
	uint32_t w4, s4;
	unsigned vc, ft;
	size_t total, alen;

	if (len < PP2_HEADER_LEN)
		return parse_prefix(b, len, versions, out);

	memcpy(&w8, b, 8);
	memcpy(&s8, pp2_sig, 8);
	memcpy(&w4, b + 8, 4);
	memcpy(&s4, pp2_sig + 8, 4);
	if ((w8 ^ s8) | (w4 ^ s4))
		return PP_NOT_PROXY;
	vc = b[PP2_OFF_VER_CMD];
	ft = b[PP2_OFF_FAM];
	/* Any failure among versions, byte 13 and byte 14: let the prefix check, which tests
	 * them one by one in wire order, name the rule. */
	alen = pp2_ft_alen1[ft];
	if (!(versions & PP_V2) || vc - (unsigned)PP2_VERSION > PP2_CMD_PROXY || !alen)
		return parse_prefix(b, PP2_OFF_LEN, versions, out);
	alen--;
	total = PP2_HEADER_LEN + (size_t)pp_be16(b + PP2_OFF_LEN);
	/* A block too short is rare: said so, gcc tests it first and a valid header pays one
	 * compare here (left to itself it may test vc first, two more instructions). */
	if (__builtin_expect(total < PP2_HEADER_LEN + alen, 0) && vc == (PP2_VERSION | PP2_CMD_PROXY))
		return pp_fail(out, PP_E_V2_SHORT_ADDR);
	if (len < total)
		return pp_incomplete(out, total - len);

	out->len = (uint32_t)total;
	out->version = 2;
	out->command = (uint8_t)(vc & 0x0F);
	out->family = (uint8_t)(ft >> 4);
	out->transport = (uint8_t)(ft & 0x0F);
	out->crc_verified = 0;
	out->src.ss_family = AF_UNSPEC;
	out->dst.ss_family = AF_UNSPEC;
	out->unix_src = NULL;
	out->unix_dst = NULL;
	out->unix_src_len = 0;
	out->unix_dst_len = 0;
	out->tlv = NULL;
	out->tlv_len = 0;
	if (total != PP2_HEADER_LEN + alen)
		return parse_rest(b, total, alen, out);
	if (vc & PP2_CMD_PROXY)
		put_addrs(b, ft >> 4, out);
	return (int)total;
}
