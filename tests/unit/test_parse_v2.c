/* PROXY protocol v2 parsing, from docs/PROTOCOL.md ("Version 2", "TLVs" and choices): every
 * field and nibble, lengths, TLV framing, CRC32C, SSL and cloud TLVs, 65535-byte headers.
 * Every input is fed byte by byte and against a guard page (pp_feed.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "pp_feed.h"

#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define IN4 "\x01\x02\x03\x04" "\x05\x06\x07\x08" "\x00\x50" "\x01\xbb"
#define IN6 "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01" \
	    "\xfe\x80\0\0\0\0\0\0\0\0\0\0\0\0\xab\xcd" "\xff\xff" "\x00\x00"

static uint8_t big[PP2_MAX_LEN + 64];

/* Bitwise CRC32C, independent of the library's table and SSE4.2 code. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
	}
	return ~c;
}

/* A v2 header: signature, bytes 13/14, the length field `lenf` and n body bytes. */
static size_t v2(uint8_t *b, uint8_t vc, uint8_t ft, size_t lenf, const void *body, size_t n)
{
	memcpy(b, SIG, 12);
	b[12] = vc;
	b[13] = ft;
	b[14] = (uint8_t)(lenf >> 8);
	b[15] = (uint8_t)lenf;
	if (n)
		memcpy(b + 16, body, n);
	return 16 + n;
}

static size_t tlv(uint8_t *b, size_t off, uint8_t type, const void *v, size_t n)
{
	b[off] = type;
	b[off + 1] = (uint8_t)(n >> 8);
	b[off + 2] = (uint8_t)n;
	if (v)
		memcpy(b + off + 3, v, n);
	else
		memset(b + off + 3, 0, n);
	return off + 3 + n;
}

/* Sets the length field to what follows byte 16, and a CRC32C value at `at` if non-zero. */
static size_t finish(uint8_t *b, size_t total, size_t crc_at)
{
	b[14] = (uint8_t)((total - 16) >> 8);
	b[15] = (uint8_t)(total - 16);
	if (crc_at) {
		uint32_t c;

		memset(b + crc_at, 0, 4);
		c = ref_crc32c(b, total);
		b[crc_at] = (uint8_t)(c >> 24);
		b[crc_at + 1] = (uint8_t)(c >> 16);
		b[crc_at + 2] = (uint8_t)(c >> 8);
		b[crc_at + 3] = (uint8_t)c;
	}
	return total;
}

struct v2_case {
	const char *name;
	uint8_t vc, ft;
	int lenf; /* -1: the body's length */
	const char *body;
	size_t n;
	int ret; /* OK: 16 + length field */
	enum pp_error err;
	size_t decided;
	unsigned versions;
};
#define OK 1
#define B(x) x, sizeof(x) - 1

static const struct v2_case cases[] = {
	{"LOCAL UNSPEC", 0x20, 0x00, -1, B(""), OK, 0, 0, 0},
	{"LOCAL UNSPEC with bytes", 0x20, 0x00, -1, B("abc"), OK, 0, 0, 0},
	{"LOCAL INET", 0x20, 0x11, -1, B(IN4), OK, 0, 0, 0},
	{"LOCAL INET, len 0", 0x20, 0x11, -1, B(""), OK, 0, 0, 0},
	{"LOCAL INET6, len 5", 0x20, 0x21, -1, B("\1\2\3\4\5"), OK, 0, 0, 0},
	{"LOCAL UNIX, len 0", 0x20, 0x31, -1, B(""), OK, 0, 0, 0},
	{"LOCAL DGRAM", 0x20, 0x12, -1, B(IN4), OK, 0, 0, 0},
	{"PROXY UNSPEC", 0x21, 0x00, -1, B(""), OK, 0, 0, 0},
	{"PROXY UNSPEC/STREAM", 0x21, 0x01, -1, B(""), OK, 0, 0, 0},
	{"PROXY UNSPEC/DGRAM", 0x21, 0x02, -1, B(""), OK, 0, 0, 0},
	{"PROXY TCP4", 0x21, 0x11, -1, B(IN4), OK, 0, 0, 0},
	{"PROXY UDP4", 0x21, 0x12, -1, B(IN4), OK, 0, 0, 0},
	{"PROXY INET/UNSPEC", 0x21, 0x10, -1, B(IN4), OK, 0, 0, 0},
	{"PROXY TCP6", 0x21, 0x21, -1, B(IN6), OK, 0, 0, 0},
	{"PROXY UDP6", 0x21, 0x22, -1, B(IN6), OK, 0, 0, 0},
	{"PROXY INET6/UNSPEC", 0x21, 0x20, -1, B(IN6), OK, 0, 0, 0},
	{"PROXY TCP4, v2 only", 0x21, 0x11, -1, B(IN4), OK, 0, 0, PP_V2},
	/* lengths shorter than the address block: rejected from the 16 fixed bytes alone */
	{"PROXY TCP4 len 11", 0x21, 0x11, 11, B(IN4), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	{"PROXY TCP4 len 0", 0x21, 0x11, 0, B(""), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	{"PROXY TCP6 len 35", 0x21, 0x21, 35, B(IN6), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	{"PROXY TCP6 len 12", 0x21, 0x21, 12, B(IN4), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	{"PROXY UNIX len 215", 0x21, 0x31, 215, B(""), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	{"PROXY UNIX len 0", 0x21, 0x31, 0, B(""), PP_INVALID, PP_E_V2_SHORT_ADDR, 16, 0},
	/* TLV framing after the address block */
	{"TCP4 + 1 stray byte", 0x21, 0x11, -1, B(IN4 "\x01"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	{"TCP4 + 2 stray bytes", 0x21, 0x11, -1, B(IN4 "\x01\x00"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	{"TCP4 + TLV value short", 0x21, 0x11, -1, B(IN4 "\x01\x00\x05" "abcd"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	{"TCP4 + TLV then stray", 0x21, 0x11, -1, B(IN4 "\x01\x00\x02" "h2" "\x02"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	{"TCP4 + TLV len 0xFFFF", 0x21, 0x11, -1, B(IN4 "\x02\xff\xff" "x"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	{"TCP4 + ALPN", 0x21, 0x11, -1, B(IN4 "\x01\x00\x02" "h2"), OK, 0, 0, 0},
	{"TCP4 + empty TLVs", 0x21, 0x11, -1, B(IN4 "\x01\x00\x00" "\x04\x00\x00" "\xf0\x00\x00"), OK, 0, 0, 0},
	{"TCP4 + CRC len 3", 0x21, 0x11, -1, B(IN4 "\x03\x00\x03" "abc"), PP_INVALID, PP_E_V2_CRC_LEN, 0, 0},
	{"TCP4 + CRC len 5", 0x21, 0x11, -1, B(IN4 "\x03\x00\x05" "abcde"), PP_INVALID, PP_E_V2_CRC_LEN, 0, 0},
	{"TCP4 + CRC len 0", 0x21, 0x11, -1, B(IN4 "\x03\x00\x00"), PP_INVALID, PP_E_V2_CRC_LEN, 0, 0},
	{"TCP4 + CRC wrong", 0x21, 0x11, -1, B(IN4 "\x03\x00\x04" "\0\0\0\0"), PP_INVALID, PP_E_V2_CRC, 0, 0},
	{"UNSPEC + TLV framing bad", 0x21, 0x00, -1, B("\x01\x00\x09"), PP_INVALID, PP_E_V2_TLV, 0, 0},
	/* LOCAL: TLVs that do not parse are not reported, the header stands */
	{"LOCAL + bad TLV framing", 0x20, 0x00, -1, B("\x01\x00\x09"), OK, 0, 0, 0},
	{"LOCAL INET + bad TLV", 0x20, 0x11, -1, B(IN4 "\x01"), OK, 0, 0, 0},
	{"LOCAL + CRC len 3", 0x20, 0x00, -1, B("\x03\x00\x03" "abc"), OK, 0, 0, 0},
	/* signature, versions */
	{"signature only", 0x21, 0x11, -1, B(IN4), PP_INVALID, PP_E_VERSION_NOT_ALLOWED, 12, PP_V1},
	{"LOCAL, v1 only", 0x20, 0x00, -1, B(""), PP_INVALID, PP_E_VERSION_NOT_ALLOWED, 12, PP_V1},
	{"v1 only, bad version", 0x31, 0x11, -1, B(IN4), PP_INVALID, PP_E_VERSION_NOT_ALLOWED, 12, PP_V1},
	{"v2 version 1", 0x11, 0x11, -1, B(IN4), PP_INVALID, PP_E_V2_VERSION, 13, 0},
	{"v2 command 2", 0x22, 0x11, -1, B(IN4), PP_INVALID, PP_E_V2_COMMAND, 13, 0},
	{"v2 family 4", 0x21, 0x41, -1, B(IN4), PP_INVALID, PP_E_V2_FAMILY, 14, 0},
	{"v2 transport 3", 0x21, 0x13, -1, B(IN4), PP_INVALID, PP_E_V2_TRANSPORT, 14, 0},
	{"LOCAL family 4", 0x20, 0x40, -1, B(""), PP_INVALID, PP_E_V2_FAMILY, 14, 0},
};

static void check_tlv_area(const struct pp_header *h, const uint8_t *base, size_t expect_off)
{
	if (h->len <= expect_off) {
		assert_null(h->tlv);
		assert_int_equal(h->tlv_len, 0);
		return;
	}
	assert_ptr_equal(h->tlv, base + expect_off);
	assert_int_equal(h->tlv_len, h->len - expect_off);
}

static void test_table(void **state)
{
	static const uint8_t tails[] = "GET / HTTP/1.1\r\n" SIG "\x21\x11\x00\x0c";
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct v2_case *c = &cases[i];
		size_t lenf = c->lenf < 0 ? c->n : (size_t)c->lenf;
		unsigned v = c->versions ? c->versions : PP_ANY;
		int ret = c->ret == OK ? (int)(16 + lenf) : c->ret;
		uint8_t buf[1024];
		size_t n = v2(buf, c->vc, c->ft, lenf, c->body, c->n);
		struct pp_header h;

		feed_check(c->name, buf, n, v, ret, c->err, c->decided, &h);
		if (ret < 0)
			continue;
		assert_int_equal(h.version, 2);
		assert_int_equal(h.command, c->vc & 0x0F);
		assert_int_equal(h.family, c->ft >> 4);
		assert_int_equal(h.transport, c->ft & 0x0F);
		assert_int_equal(h.crc_verified, 0);
		if (c->vc == 0x20) { /* LOCAL: no addresses, whatever the block holds */
			assert_int_equal(h.src.ss_family, AF_UNSPEC);
			assert_int_equal(h.dst.ss_family, AF_UNSPEC);
			assert_null(h.unix_src);
		}
		if (c->vc == 0x20 && c->ft == 0x00 && c->n == 3 && c->body[0] != 'a')
			assert_null(h.tlv); /* LOCAL with TLVs that do not parse */
		if (c->vc == 0x21 && (c->ft >> 4) == 1)
			check_tlv_area(&h, feed_last, 28);
		if (c->vc == 0x21 && (c->ft >> 4) == 0)
			check_tlv_area(&h, feed_last, 16);

		/* the same header with application bytes after it: same length, same result */
		memcpy(buf + n, tails, sizeof(tails) - 1);
		feed_check(c->name, buf, n + sizeof(tails) - 1, v, ret, c->err, c->decided, &h);
	}
}

/* Every undefined value of every nibble, alone, and decided from bytes 13/14. */
static void test_every_nibble(void **state)
{
	(void)state;
	for (unsigned b13 = 0; b13 < 256; b13++) {
		for (unsigned b14 = 0; b14 < 256; b14++) {
			uint8_t buf[300];
			size_t n = v2(buf, (uint8_t)b13, (uint8_t)b14, 216, NULL, 0);
			enum pp_error e = PP_E_OK;
			size_t decided = 0;
			struct pp_header h;
			int ret;

			memset(buf + 16, 0, 216);
			n += 216;
			if ((b13 >> 4) != 2)
				e = PP_E_V2_VERSION, decided = 13;
			else if ((b13 & 15) > 1)
				e = PP_E_V2_COMMAND, decided = 13;
			else if ((b14 >> 4) > 3)
				e = PP_E_V2_FAMILY, decided = 14;
			else if ((b14 & 15) > 2)
				e = PP_E_V2_TRANSPORT, decided = 14;
			ret = e ? PP_INVALID : (int)n;
			/* the full prefix walk for a sample, the decision point for all */
			if ((b13 & 0x0F) < 3 && (b14 & 0x0F) < 4 && (b14 >> 4) < 5) {
				feed_check("nibbles", buf, n, PP_ANY, ret, e, decided, &h);
			} else {
				assert_int_equal(feed_parse(buf, decided ? decided : n, PP_ANY, &h, NULL), ret);
				assert_int_equal(h.error, e);
			}
			if (ret > 0) {
				assert_int_equal(h.command, b13 & 15);
				assert_int_equal(h.family, b14 >> 4);
				assert_int_equal(h.transport, b14 & 15);
			}
		}
	}
}

/* Every prefix of the signature that breaks off: PP_NOT_PROXY at the first wrong byte. */
static void test_signature(void **state)
{
	(void)state;
	for (size_t i = 0; i < 12; i++) {
		for (unsigned x = 0; x < 256; x++) {
			uint8_t buf[28];
			struct pp_header h;

			v2(buf, 0x21, 0x11, 12, IN4, 12);
			if (x == buf[i])
				continue;
			buf[i] = (uint8_t)x;
			if (i == 0 && x == 'P')
				continue; /* that one starts a v1 line */
			feed_check("signature", buf, sizeof(buf), PP_ANY, PP_NOT_PROXY, PP_E_OK, i + 1, &h);
		}
	}
}

static void test_addresses(void **state)
{
	uint8_t buf[300];
	struct pp_header h;
	struct sockaddr_in sin, want;
	struct sockaddr_in6 sin6, want6;
	size_t n;
	(void)state;

	n = v2(buf, 0x21, 0x11, 12, IN4, 12);
	feed_check("TCP4", buf, n, PP_ANY, 28, PP_E_OK, 0, &h);
	memcpy(&sin, &h.src, sizeof(sin));
	memset(&want, 0, sizeof(want));
	want.sin_family = AF_INET;
	want.sin_addr.s_addr = htonl(0x01020304);
	want.sin_port = htons(80);
	assert_memory_equal(&sin, &want, sizeof(sin));
	memcpy(&sin, &h.dst, sizeof(sin));
	want.sin_addr.s_addr = htonl(0x05060708);
	want.sin_port = htons(443);
	assert_memory_equal(&sin, &want, sizeof(sin));
	assert_null(h.tlv);
	assert_null(h.unix_src);

	n = v2(buf, 0x21, 0x21, 36, IN6, 36);
	feed_check("TCP6", buf, n, PP_ANY, 52, PP_E_OK, 0, &h);
	memcpy(&sin6, &h.src, sizeof(sin6));
	memset(&want6, 0, sizeof(want6));
	want6.sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &want6.sin6_addr), 1);
	want6.sin6_port = htons(65535);
	assert_memory_equal(&sin6, &want6, sizeof(sin6)); /* flowinfo and scope zero */
	memcpy(&sin6, &h.dst, sizeof(sin6));
	assert_int_equal(inet_pton(AF_INET6, "fe80::abcd", &want6.sin6_addr), 1);
	want6.sin6_port = 0;
	assert_memory_equal(&sin6, &want6, sizeof(sin6));

	/* UNIX: NUL padding removed; a full 108-byte path; an abstract name keeps its NUL */
	memset(buf, 0, sizeof(buf));
	n = v2(buf, 0x21, 0x31, 216, NULL, 0) + 216;
	memcpy(buf + 16, "/run/app.sock", 13);
	memset(buf + 16 + 108, 'x', 108);
	feed_check("UNIX", buf, n, PP_ANY, 232, PP_E_OK, 0, &h);
	assert_int_equal(h.src.ss_family, AF_UNSPEC);
	assert_int_equal(h.unix_src_len, 13);
	assert_memory_equal(h.unix_src, "/run/app.sock", 13);
	assert_ptr_equal(h.unix_src, feed_last + 16);
	assert_int_equal(h.unix_dst_len, 108);
	assert_ptr_equal(h.unix_dst, feed_last + 124);
	memset(buf + 16, 0, 216);
	memcpy(buf + 17, "abstract", 8);
	feed_check("UNIX abstract", buf, n, PP_ANY, 232, PP_E_OK, 0, &h);
	assert_int_equal(h.unix_src_len, 9);
	assert_int_equal(h.unix_dst_len, 0);
	assert_null(h.tlv);

	/* LOCAL ignores the block even when it holds addresses */
	n = v2(buf, 0x20, 0x11, 12, IN4, 12);
	feed_check("LOCAL INET", buf, n, PP_ANY, 28, PP_E_OK, 0, &h);
	assert_int_equal(h.src.ss_family, AF_UNSPEC);
}

static void test_crc(void **state)
{
	uint8_t buf[512];
	struct pp_header h;
	size_t off, at;
	(void)state;

	/* good, after other TLVs: nothing fixes the CRC32C TLV's place */
	v2(buf, 0x21, 0x11, 0, IN4, 12);
	off = tlv(buf, 28, PP2_TYPE_ALPN, "h2", 2);
	at = off + 3;
	off = tlv(buf, off, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	off = tlv(buf, off, PP2_TYPE_AUTHORITY, "example.com", 11);
	finish(buf, off, at);
	feed_check("CRC good", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(h.crc_verified, 1);

	/* every single-bit flip anywhere in the header is caught */
	for (size_t i = 16; i < off; i++) {
		if (i == at - 3)
			continue; /* the CRC32C type byte: flipped, there is no checksum to check */
		for (int bit = 0; bit < 8; bit++) {
			int r;

			buf[i] ^= (uint8_t)(1u << bit);
			r = feed_parse(buf, off, PP_ANY, &h, NULL);
			buf[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(r, PP_INVALID);
			/* flips in a TLV length may break framing first */
			assert_true(h.error == PP_E_V2_CRC || h.error == PP_E_V2_TLV ||
				    h.error == PP_E_V2_CRC_LEN || h.error == PP_E_V2_SHORT_ADDR);
		}
	}
	/* the checksum covers the header, never the payload after it */
	memcpy(buf + off, "payload", 7);
	feed_check("CRC + payload", buf, off + 7, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(h.crc_verified, 1);

	/* LOCAL: a CRC32C TLV found is verified */
	v2(buf, 0x20, 0x00, 0, NULL, 0);
	off = tlv(buf, 16, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	finish(buf, off, 19);
	feed_check("LOCAL CRC good", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(h.crc_verified, 1);
	assert_ptr_equal(h.tlv, feed_last + 16);
	buf[19] ^= 1;
	feed_check("LOCAL CRC bad", buf, off, PP_ANY, PP_INVALID, PP_E_V2_CRC, 0, &h);

	/* two CRC32C TLVs: refused, there is no single zeroed field to check against */
	v2(buf, 0x21, 0x11, 0, IN4, 12);
	off = tlv(buf, 28, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	off = tlv(buf, off, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	finish(buf, off, 31);
	feed_check("two CRCs", buf, off, PP_ANY, PP_INVALID, PP_E_V2_CRC, 0, &h);
}

static void test_unique_id(void **state)
{
	uint8_t buf[512], id[130];
	struct pp_header h;
	struct pp_tlv t;
	size_t off;
	(void)state;

	memset(id, 'u', sizeof(id));
	v2(buf, 0x21, 0x11, 0, IN4, 12);
	off = finish(buf, tlv(buf, 28, PP2_TYPE_UNIQUE_ID, id, 128), 0);
	feed_check("UNIQUE_ID 128", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_UNIQUE_ID, &t), 1);
	assert_int_equal(t.len, 128);
	assert_ptr_equal(t.value, feed_last + 31);
	off = finish(buf, tlv(buf, 28, PP2_TYPE_UNIQUE_ID, id, 129), 0);
	feed_check("UNIQUE_ID 129", buf, off, PP_ANY, PP_INVALID, PP_E_V2_UNIQUE_ID, 0, &h);
	/* LOCAL: such a TLV area is not reported, the header stands */
	buf[12] = 0x20;
	feed_check("LOCAL UNIQUE_ID 129", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_null(h.tlv);
}

static void test_ssl_and_cloud(void **state)
{
	uint8_t buf[1024], ssl[256];
	struct pp_header h;
	struct pp_tlv t;
	size_t off, so;
	uint8_t client;
	uint32_t verify, link;
	uint64_t psc;
	const char *id;
	size_t id_len;
	(void)state;

	ssl[0] = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN;
	memcpy(ssl + 1, "\x00\x00\x00\x07", 4);
	so = tlv(ssl, 5, PP2_SUBTYPE_SSL_VERSION, "TLSv1.3", 7);
	so = tlv(ssl, so, PP2_TYPE_NOOP, "pad", 3);
	so = tlv(ssl, so, PP2_SUBTYPE_SSL_CN, "client.example", 14);
	so = tlv(ssl, so, PP2_SUBTYPE_SSL_CIPHER, "TLS_AES_128_GCM_SHA256", 22);
	so = tlv(ssl, so, PP2_SUBTYPE_SSL_CLIENT_CERT, "\x30\x82", 2);

	v2(buf, 0x21, 0x21, 0, IN6, 36);
	off = tlv(buf, 52, PP2_TYPE_NOOP, NULL, 0);
	off = tlv(buf, off, PP2_TYPE_SSL, ssl, so);
	off = tlv(buf, off, PP2_TYPE_AWS, "\x01vpce-08d2bf15fac5001c9", 23);
	off = tlv(buf, off, PP2_TYPE_AZURE, "\x01\x78\x56\x34\x12", 5);
	off = tlv(buf, off, PP2_TYPE_GCP, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	off = tlv(buf, off, PP2_TYPE_NETNS, "blue", 4);
	finish(buf, off, 0);
	feed_check("SSL + cloud", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);

	assert_int_equal(pp_tlv_ssl(&h, &client, &verify), 1);
	assert_int_equal(client, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN);
	assert_int_equal(verify, 7);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_CN, &t), 1);
	assert_int_equal(t.len, 14);
	assert_memory_equal(t.value, "client.example", 14);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_VERSION, &t), 1);
	assert_memory_equal(t.value, "TLSv1.3", 7);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_CLIENT_CERT, &t), 1);
	assert_int_equal(t.len, 2);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_SIG_ALG, &t), 0);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_TYPE_NOOP, &t), 0);
	assert_int_equal(pp_tlv_aws_vpce_id(&h, &id, &id_len), 1);
	assert_int_equal(id_len, 22);
	assert_memory_equal(id, "vpce-08d2bf15fac5001c9", 22);
	assert_int_equal(pp_tlv_azure_linkid(&h, &link), 1);
	assert_int_equal(link, 0x12345678);
	assert_int_equal(pp_tlv_gcp_psc_id(&h, &psc), 1);
	assert_true(psc == 0x0102030405060708ull);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_NETNS, &t), 1);
	assert_memory_equal(t.value, "blue", 4);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_ALPN, &t), 0);

	/* SSL contents are not the parser's business: a 2-byte SSL value is accepted,
	 * but the accessors say there is no well-formed SSL TLV */
	v2(buf, 0x21, 0x11, 0, IN4, 12);
	off = finish(buf, tlv(buf, 28, PP2_TYPE_SSL, "\x01\x00", 2), 0);
	feed_check("SSL short", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_ssl(&h, &client, &verify), 0);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_CN, &t), 0);
	/* sub-TLV framing broken */
	off = finish(buf, tlv(buf, 28, PP2_TYPE_SSL, "\x01\0\0\0\0\x22\x00\x09" "ab", 10), 0);
	feed_check("SSL sub-TLV broken", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_ssl(&h, &client, &verify), 0);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_CN, &t), 0);

	/* malformed cloud TLVs: wrong subtype, wrong size, non-ASCII id */
	v2(buf, 0x21, 0x11, 0, IN4, 12);
	off = tlv(buf, 28, PP2_TYPE_AZURE, "\x02\x78\x56\x34\x12", 5);
	off = tlv(buf, off, PP2_TYPE_GCP, "\x01\x02\x03\x04\x05\x06\x07", 7);
	off = tlv(buf, off, PP2_TYPE_AWS, "\x02vpce-1", 7);
	finish(buf, off, 0);
	feed_check("cloud malformed", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_azure_linkid(&h, &link), 0);
	assert_int_equal(pp_tlv_gcp_psc_id(&h, &psc), 0);
	assert_int_equal(pp_tlv_aws_vpce_id(&h, &id, &id_len), 0);
	off = finish(buf, tlv(buf, 28, PP2_TYPE_AZURE, "\x01\x78\x56\x34\x12\x00", 6), 0);
	feed_check("azure 6", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_azure_linkid(&h, &link), 0);
	off = finish(buf, tlv(buf, 28, PP2_TYPE_AWS, "\x01vpce\n", 6), 0);
	feed_check("aws ctl", buf, off, PP_ANY, (int)off, PP_E_OK, 0, &h);
	assert_int_equal(pp_tlv_aws_vpce_id(&h, &id, &id_len), 0);
}

/* The largest headers: 16 + 65535 bytes, with one TLV filling it, with NOOP padding and a
 * CRC32C, and as LOCAL; and one length unit over what is present. */
static void test_max_len(void **state)
{
	struct pp_header h;
	struct pp_tlv t;
	size_t off;
	(void)state;

	v2(big, 0x21, 0x11, 0, IN4, 12);
	memset(big + 31, 'z', 65520);
	off = finish(big, tlv(big, 28, 0xE5, big + 31, 65520), 0);
	assert_int_equal(off, PP2_MAX_LEN);
	feed_check("max TLV", big, off, PP_ANY, PP2_MAX_LEN, PP_E_OK, 0, &h);
	assert_int_equal(h.tlv_len, 65523);
	assert_int_equal(pp_tlv_find(&h, 0xE5, &t), 1);
	assert_int_equal(t.len, 65520);
	assert_int_equal(feed_parse(big, off - 1, PP_ANY, &h, NULL), PP_INCOMPLETE);

	off = tlv(big, 28, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	off = finish(big, tlv(big, off, PP2_TYPE_NOOP, NULL, 65535 - 12 - 7 - 3), 31);
	assert_int_equal(off, PP2_MAX_LEN);
	feed_check("max CRC", big, off, PP_ANY, PP2_MAX_LEN, PP_E_OK, 0, &h);
	assert_int_equal(h.crc_verified, 1);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_NOOP, &t), 0);

	v2(big, 0x20, 0x00, 65535, NULL, 0);
	memset(big + 16, 0xEE, 65535);
	feed_check("max LOCAL", big, PP2_MAX_LEN, PP_ANY, PP2_MAX_LEN, PP_E_OK, 0, &h);
	assert_null(h.tlv);
}

/* Header length counts exactly 16 + len: the bytes after are the application's, even
 * when they look like TLVs or like another header. */
static void test_trailing_not_counted(void **state)
{
	uint8_t buf[256];
	struct pp_header h;
	size_t n;
	(void)state;

	n = v2(buf, 0x21, 0x11, 12, IN4, 12);
	n = tlv(buf, n, PP2_TYPE_ALPN, "h2", 2); /* not in len: application bytes */
	feed_check("TLV-like tail", buf, n, PP_ANY, 28, PP_E_OK, 0, &h);
	assert_null(h.tlv);
	n = v2(buf, 0x20, 0x00, 0, NULL, 0);
	n += v2(buf + n, 0x21, 0x11, 12, IN4, 12);
	feed_check("two headers", buf, n, PP_ANY, 16, PP_E_OK, 0, &h);
	assert_int_equal(h.command, PP_CMD_LOCAL);
	assert_int_equal(pp_parse(buf + 16, n - 16, PP_ANY, &h), 28);
}

/* What a prefix asks for: one byte at a time while the next one may decide (signature,
 * nibbles, the length field), then, once the 16 fixed bytes are in, exactly the rest of the
 * length they announce, whatever the family, TLVs and CRC32C. */
static void test_need(void **state)
{
	uint8_t buf[512];
	size_t sizes[5], n;
	struct pp_header h;
	(void)state;

	for (int c = 0; c < 5; c++) {
		switch (c) {
		case 0: n = v2(buf, 0x20, 0x00, 0, NULL, 0); break;
		case 1: n = v2(buf, 0x21, 0x11, 12, IN4, 12); break;
		case 2: n = v2(buf, 0x21, 0x21, 36, IN6, 36); break;
		case 3: /* TCP4, ALPN and a CRC32C */
			n = v2(buf, 0x21, 0x11, 0, IN4, 12);
			n = tlv(buf, n, PP2_TYPE_ALPN, "h2", 2);
			n = tlv(buf, n, PP2_TYPE_CRC32C, NULL, 4);
			n = finish(buf, n, n - 4);
			break;
		default: /* UNIX, 216 bytes of addresses */
			memset(buf + 16, 0, PP2_ADDR_LEN_UNIX);
			n = v2(buf, 0x21, 0x31, PP2_ADDR_LEN_UNIX, NULL, 0) + PP2_ADDR_LEN_UNIX;
			break;
		}
		sizes[c] = n;
		assert_int_equal(feed_parse(buf, n, PP_ANY, &h, NULL), (int)n);
		for (size_t k = 0; k < n; k++) {
			if (feed_parse(buf, k, PP_ANY, &h, NULL) != PP_INCOMPLETE)
				fail_msg("need case %d: prefix %zu not PP_INCOMPLETE", c, k);
			if (h.need != (k < 16 ? 1 : n - k))
				fail_msg("need case %d: prefix %zu of %zu: need %u", c, k, n, h.need);
		}
	}
	assert_int_equal(sizes[3], 16 + 12 + 5 + 7); /* the CRC case had TLVs */
	/* the largest length field: all of it, from the fixed part alone */
	v2(big, 0x20, 0x00, 65535, NULL, 0);
	assert_int_equal(feed_parse(big, 16, PP_ANY, &h, NULL), PP_INCOMPLETE);
	assert_int_equal(h.need, 65535);
	assert_int_equal(feed_parse(big, 17, PP_V2, &h, NULL), PP_INCOMPLETE);
	assert_int_equal(h.need, 65534);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_every_nibble),
		cmocka_unit_test(test_signature),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_crc),
		cmocka_unit_test(test_unique_id),
		cmocka_unit_test(test_ssl_and_cloud),
		cmocka_unit_test(test_max_len),
		cmocka_unit_test(test_trailing_not_counted),
		cmocka_unit_test(test_need),
	};
	return cmocka_run_group_tests(tests, feed_setup, feed_teardown);
}
