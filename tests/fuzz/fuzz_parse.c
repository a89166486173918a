/* libFuzzer harness for pp_parse(): any bytes, every version mask. Checks what must hold for
 * every input: results in range, pointers inside the header, prefixes consistent with the
 * whole (PP_INCOMPLETE, or already the same answer), what an incomplete header still needs
 * (more than nothing, never past its end, exactly the rest once v2's fixed part is in),
 * trailing bytes never changing a header, and the TLV accessors safe on whatever was accepted. Each prefix is parsed from a heap copy
 * of exactly that size, so ASan catches any read past it. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyshim_proto.h"
#include "../../shim/proto/pp_internal.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int parse_copy(const uint8_t *data, size_t n, unsigned v, struct pp_header *h)
{
	uint8_t *copy = malloc(n ? n : 1);
	int r;

	memcpy(copy, data, n);
	r = pp_parse(copy, n, v, h);
	free(copy);
	return r;
}

/* After PP_INCOMPLETE on k bytes with need d, the answer stays the same up to k + d - 1
 * bytes (a caller may sleep until d more bytes are in). */
static void check_need_holds(const uint8_t *data, size_t size, size_t k, unsigned v,
			     const struct pp_header *h)
{
	struct pp_header h2;

	CHECK(h->need > 0);
	if (h->need > 1 && k + h->need - 1 <= size) {
		CHECK(parse_copy(data, k + h->need - 1, v, &h2) == PP_INCOMPLETE);
		CHECK(h2.need == 1);
	}
}

static void check_prefix(const uint8_t *data, size_t size, size_t k, unsigned v, int full,
			 enum pp_error err)
{
	struct pp_header h;
	int r = parse_copy(data, k, v, &h);

	if (r == PP_INCOMPLETE)
		check_need_holds(data, size, k, v, &h);

	if (full > 0) {
		CHECK(r == PP_INCOMPLETE);
		/* what it still needs: something, never past the header's end, and for v2 past
		 * its fixed part exactly the rest */
		CHECK(k + h.need <= (size_t)full);
		CHECK(data[0] != PP2_SIG_BYTE0 || k < PP2_HEADER_LEN || k + h.need == (size_t)full);
		return;
	}
	CHECK(r == PP_INCOMPLETE || r == full);
	if (r == PP_INVALID)
		CHECK(h.error == err);
}

static void use_tlvs(const struct pp_header *h, const uint8_t *data, size_t r)
{
	struct pp_tlv_iter it;
	struct pp_tlv t;
	uint8_t c;
	uint32_t u;
	uint64_t id;
	const char *s;
	size_t n;
	int k;

	if (h->tlv) {
		CHECK(h->tlv >= data && h->tlv + h->tlv_len == data + r);
	}
	pp_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while ((k = pp_tlv_next(&it, &t)) == 1)
		CHECK(t.value >= data && t.value + t.len <= data + r && t.type != PP2_TYPE_NOOP);
	CHECK(k == 0); /* a reported TLV area is always well-formed */
	(void)pp_tlv_find(h, PP2_TYPE_AUTHORITY, &t);
	if (pp_tlv_ssl(h, &c, &u))
		(void)pp_tlv_find_ssl(h, PP2_SUBTYPE_SSL_CN, &t);
	(void)pp_tlv_aws_vpce_id(h, &s, &n);
	(void)pp_tlv_azure_linkid(h, &u);
	(void)pp_tlv_gcp_psc_id(h, &id);
}

/* pp_parse()'s v1 fast path must agree with the reference reader on every input. */
static void same_as_ref(const uint8_t *data, size_t size)
{
	struct pp_header a, b;
	int ra, rb;

	if (!size || data[0] != 'P')
		return;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	ra = pp_parse(data, size, PP_ANY, &a);
	rb = pp_parse_v1_ref(data, size, PP_ANY, &b);
	CHECK(ra == rb);
	if (ra == PP_INVALID)
		CHECK(a.error == b.error);
	if (ra > 0)
		CHECK(memcmp(&a, &b, sizeof(a)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned masks[] = {PP_ANY, PP_V1, PP_V2, 0};

	same_as_ref(data, size);

	for (size_t m = 0; m < sizeof(masks) / sizeof(masks[0]); m++) {
		struct pp_header h;
		int r = pp_parse(data, size, masks[m], &h);

		CHECK(r > 0 || r == PP_INVALID || r == PP_INCOMPLETE || r == PP_NOT_PROXY);
		if (r == PP_INVALID)
			CHECK(h.error > PP_E_OK && h.error < PP_E_MAX);
		else
			CHECK(h.error == PP_E_OK);
		if (r == PP_INCOMPLETE) {
			/* a v2 header past its fixed part announced its size: need is the rest;
			 * anything else may be decided by its next byte */
			if (data[0] == PP2_SIG_BYTE0 && size >= PP2_HEADER_LEN)
				CHECK(size + h.need == PP2_HEADER_LEN + (size_t)pp_be16(data + PP2_OFF_LEN));
			else
				CHECK(h.need == 1);
		}
		if (r > 0) {
			size_t hl = (size_t)r;

			CHECK(hl <= size && h.len == hl);
			CHECK(h.version == 1 || h.version == 2);
			CHECK(masks[m] & (h.version == 1 ? PP_V1 : PP_V2));
			CHECK(h.version == 2 || hl <= PP1_MAX_LEN);
			CHECK(h.version == 1 || hl <= PP2_MAX_LEN);
			CHECK(h.command <= PP_CMD_V1_UNKNOWN && h.family <= 3 && h.transport <= 2);
			if (h.unix_src) {
				CHECK(h.unix_src_len <= PP2_UNIX_PATH_LEN && h.unix_dst_len <= PP2_UNIX_PATH_LEN);
				CHECK((const uint8_t *)h.unix_dst + PP2_UNIX_PATH_LEN <= data + hl);
			}
			use_tlvs(&h, data, hl);
			/* the header alone gives the same answer: trailing bytes never count */
			{
				struct pp_header h2;

				CHECK(parse_copy(data, hl, masks[m], &h2) == r);
				CHECK(h2.command == h.command && h2.family == h.family &&
				      h2.crc_verified == h.crc_verified && h2.tlv_len == h.tlv_len);
				CHECK(h2.src.ss_family == h.src.ss_family);
				if (h.src.ss_family == AF_INET)
					CHECK(memcmp(&h2.src, &h.src, sizeof(struct sockaddr_in)) == 0);
				if (h.src.ss_family == AF_INET6)
					CHECK(memcmp(&h2.dst, &h.dst, sizeof(struct sockaddr_in6)) == 0);
			}
			/* the other version alone refuses it */
			{
				struct pp_header h3;
				unsigned other = h.version == 1 ? PP_V2 : PP_V1;

				CHECK(pp_parse(data, size, other, &h3) == PP_INVALID);
				CHECK(h3.error == PP_E_VERSION_NOT_ALLOWED);
			}
			if (hl > 0)
				check_prefix(data, size, hl - 1, masks[m], r, h.error);
			check_prefix(data, size, hl / 2, masks[m], r, h.error);
		} else if (size > 0) {
			check_prefix(data, size, size - 1, masks[m], r, h.error);
			check_prefix(data, size, size / 2, masks[m], r, h.error);
			if (size > 17)
				check_prefix(data, size, 16, masks[m], r, h.error);
		}
	}
	return 0;
}
