/* PROXY protocol v1 parsing, table-driven from docs/PROTOCOL.md ("Version 1" and its choices):
 * every entry is fed whole, byte by byte, and against a guard page. */
#include <arpa/inet.h>
#include <stdio.h>

#include "pp_feed.h"
#include "proto/pp_internal.h"

#define S(x) x, sizeof(x) - 1
#define OK 1 /* valid: the header runs to the first CRLF */

struct v1_case {
	const char *in;
	size_t len;
	int ret;
	enum pp_error err;
	size_t decided;    /* bytes after which the answer is final (0: just check the prefixes) */
	unsigned versions; /* 0: PP_ANY */
	int fam;
	const char *src, *dst;
	unsigned sport, dport;
};

#define FULL6 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
#define A91 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define A93 A91 "aa"

static const struct v1_case cases[] = {
	/* valid TCP4: the spec's example, extremes, port 0 */
	{S("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"), OK, 0, 0, 0, AF_INET, "192.168.0.1", "192.168.0.11", 56324, 443},
	{S("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"), OK, 0, 0, 0, AF_INET, "255.255.255.255", "255.255.255.255", 65535, 65535},
	{S("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"), OK, 0, 0, 0, AF_INET, "0.0.0.0", "0.0.0.0", 0, 0},
	{S("PROXY TCP4 10.0.0.1 10.20.100.200 1 10\r\n"), OK, 0, 0, 0, AF_INET, "10.0.0.1", "10.20.100.200", 1, 10},
	/* valid TCP6: full form (104 bytes), compressed, upper case, dotted tails, :: of one group */
	{S("PROXY TCP6 " FULL6 " " FULL6 " 65535 65535\r\n"), OK, 0, 0, 0, AF_INET6, FULL6, FULL6, 65535, 65535},
	{S("PROXY TCP6 ::1 :: 1 0\r\n"), OK, 0, 0, 0, AF_INET6, "::1", "::", 1, 0},
	{S("PROXY TCP6 2001:DB8::A 2001:db8:85a3::8a2e:370:7334 56324 443\r\n"), OK, 0, 0, 0, AF_INET6, "2001:db8::a", "2001:db8:85a3::8a2e:370:7334", 56324, 443},
	{S("PROXY TCP6 ::ffff:1.2.3.4 ::1.2.3.4 80 81\r\n"), OK, 0, 0, 0, AF_INET6, "::ffff:1.2.3.4", "::1.2.3.4", 80, 81},
	{S("PROXY TCP6 1:2:3:4:5:6:255.255.255.255 1:2:3:4:5::0.0.0.0 80 81\r\n"), OK, 0, 0, 0, AF_INET6, "1:2:3:4:5:6:ffff:ffff", "1:2:3:4:5::", 80, 81},
	{S("PROXY TCP6 1:2:3:4:5:6:7:: ::2:3:4:5:6:7:8 80 81\r\n"), OK, 0, 0, 0, AF_INET6, "1:2:3:4:5:6:7:0", "0:2:3:4:5:6:7:8", 80, 81},
	{S("PROXY TCP6 0001:0db8:0:00:000:0000:1:2 1::8 80 81\r\n"), OK, 0, 0, 0, AF_INET6, "1:db8::1:2", "1::8", 80, 81},
	/* valid UNKNOWN: short, anything before CRLF ignored, worst case exactly 107 bytes */
	{S("PROXY UNKNOWN\r\n"), OK, 0, 0, 0, 0, NULL, NULL, 0, 0},
	{S("PROXY UNKNOWN \r\n"), OK, 0, 0, 0, 0, NULL, NULL, 0, 0},
	{S("PROXY UNKNOWN ffff:: x \x80\xff\t 1 2\r\n"), OK, 0, 0, 0, 0, NULL, NULL, 0, 0},
	{S("PROXY UNKNOWN " FULL6 " " FULL6 " 65535 65535\r\n"), OK, 0, 0, 0, 0, NULL, NULL, 0, 0},
	{S("PROXY UNKNOWN " A91 "\r\n"), OK, 0, 0, 0, 0, NULL, NULL, 0, 0}, /* 107 bytes */

	/* separators: exactly one space */
	{S("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 7, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 12, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 20, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 28, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 30, 0, 0, 0, 0, 0, 0},
	{S("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 6, 0, 0, 0, 0, 0, 0},
	{S("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SYNTAX, 6, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_PROTO, 11, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 19, 0, 0, 0, 0, 0, 0},
	/* tokens: case-sensitive, nothing but TCP4, TCP6, UNKNOWN */
	{S("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_PROTO, 7, 0, 0, 0, 0, 0, 0},
	{S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_PROTO, 8, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_PROTO, 10, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_PROTO, 11, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWNX\r\n"), PP_INVALID, PP_E_V1_PROTO, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWn\r\n"), PP_INVALID, PP_E_V1_PROTO, 13, 0, 0, 0, 0, 0, 0},
	{S("PROXY \r\n"), PP_INVALID, PP_E_V1_CRLF, 7, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4\r\n"), PP_INVALID, PP_E_V1_CRLF, 11, 0, 0, 0, 0, 0, 0},
	/* address forms: the family dictates the format */
	{S("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 12, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_DST_ADDR, 20, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 13, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::1 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_DST_ADDR, 17, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 17, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.1000 1 2\r\n"), PP_INVALID, PP_E_V1_DST_ADDR, 29, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 12, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 13, 0, 0, 0, 0, 0, 0},
	/* leading zeros: not in IPv4 octets, not in ports */
	{S("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 13, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n"), PP_INVALID, PP_E_V1_DST_ADDR, 27, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 29, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n"), PP_INVALID, PP_E_V1_DST_PORT, 31, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::1 ::ffff:1.2.3.04 1 2\r\n"), PP_INVALID, PP_E_V1_DST_ADDR, 30, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 21, 0, 0, 0, 0, 0, 0},
	/* ports: 0..65535, digits only */
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 32, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), PP_INVALID, PP_E_V1_DST_PORT, 34, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 99999999999 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 32, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 28, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 28, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n"), PP_INVALID, PP_E_V1_SRC_PORT, 29, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n"), PP_INVALID, PP_E_V1_CRLF, 31, 0, 0, 0, 0, 0, 0},
	/* IPv6: at most one "::", exactly 128 bits, no zone id, no brackets */
	{S("PROXY TCP6 1::2::3 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 17, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 25, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 27, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 27, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 27, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 12345:: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 16, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 :1:: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 13, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 [::1] ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 12, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 g:: ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 12, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::1.2.3 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::256.1.1.1 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 17, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::a.1.1.1 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 15, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:1.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 23, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 27, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 1:2:3:4:5:6::1.2.3.4 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 26, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::1.2.3.4.5 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 21, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ::1.2.3.4:1 ::1 1 2\r\n"), PP_INVALID, PP_E_V1_SRC_ADDR, 21, 0, 0, 0, 0, 0, 0},
	/* CRLF: a lone CR or LF is no line end; CR or LF inside a field breaks the line */
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), PP_INVALID, PP_E_V1_CRLF, 31, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), PP_INVALID, PP_E_V1_CRLF, 32, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), PP_INVALID, PP_E_V1_CRLF, 32, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), PP_INVALID, PP_E_V1_CRLF, 31, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), PP_INVALID, PP_E_V1_CRLF, 31, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), PP_INVALID, PP_E_V1_CRLF, 29, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4\r\n"), PP_INVALID, PP_E_V1_CRLF, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN\n"), PP_INVALID, PP_E_V1_CRLF, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN\rX\r\n"), PP_INVALID, PP_E_V1_CRLF, 15, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN a\rb\r\n"), PP_INVALID, PP_E_V1_CRLF, 17, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN a\nb\r\n"), PP_INVALID, PP_E_V1_CRLF, 16, 0, 0, 0, 0, 0, 0},
	/* NUL: rejected wherever it appears, never a terminator */
	{S("PROXY\0TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_NUL, 6, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_V1_NUL, 19, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n"), PP_INVALID, PP_E_V1_NUL, 31, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\0"), PP_INVALID, PP_E_V1_NUL, 32, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN\0\r\n"), PP_INVALID, PP_E_V1_NUL, 14, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN a\0b\r\n"), PP_INVALID, PP_E_V1_NUL, 16, 0, 0, 0, 0, 0, 0},
	/* the 107-byte limit */
	{S("PROXY UNKNOWN " A91 "a\r\n"), PP_INVALID, PP_E_V1_TOO_LONG, 107, 0, 0, 0, 0, 0, 0}, /* LF at 108 */
	{S("PROXY UNKNOWN " A93 "\r\n"), PP_INVALID, PP_E_V1_TOO_LONG, 107, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN " A93 "a\r\n"), PP_INVALID, PP_E_V1_TOO_LONG, 107, 0, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN " A93 A93 A93), PP_INVALID, PP_E_V1_TOO_LONG, 107, 0, 0, 0, 0, 0, 0},
	{S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"),
	 PP_INVALID, PP_E_V1_TOO_LONG, 107, 0, 0, 0, 0, 0, 0},
	/* not a PROXY header at all: decided at the first byte that differs from "PROXY" */
	{S("GET / HTTP/1.1\r\n"), PP_NOT_PROXY, 0, 1, 0, 0, 0, 0, 0, 0},
	{S("PRoXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_NOT_PROXY, 0, 3, 0, 0, 0, 0, 0, 0},
	{S("PROXx"), PP_NOT_PROXY, 0, 5, 0, 0, 0, 0, 0, 0},
	{S("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_NOT_PROXY, 0, 1, 0, 0, 0, 0, 0, 0},
	{S("P\0"), PP_NOT_PROXY, 0, 2, 0, 0, 0, 0, 0, 0},
	/* versions: v1 not selected is decided at "PROXY " */
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PP_INVALID, PP_E_VERSION_NOT_ALLOWED, 6, PP_V2, 0, 0, 0, 0, 0},
	{S("PROXY UNKNOWN\r\n"), PP_INVALID, PP_E_VERSION_NOT_ALLOWED, 6, PP_V2, 0, 0, 0, 0, 0},
	{S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), OK, 0, 0, PP_V1, AF_INET, "1.2.3.4", "5.6.7.8", 1, 2},
};

/* The expected header length of a valid line: up to and including its CRLF. */
static int line_len(const struct v1_case *c)
{
	for (size_t i = 0; i + 1 < c->len; i++)
		if (c->in[i] == '\r' && c->in[i + 1] == '\n')
			return (int)(i + 2);
	fail_msg("table entry without CRLF");
	return 0;
}

static void check_addr(const struct sockaddr_storage *ss, int fam, const char *text, unsigned port)
{
	if (fam == AF_INET) {
		struct sockaddr_in sin, want;

		memcpy(&sin, ss, sizeof(sin));
		memset(&want, 0, sizeof(want));
		want.sin_family = AF_INET;
		want.sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, text, &want.sin_addr), 1);
		assert_memory_equal(&sin, &want, sizeof(sin)); /* padding zeroed too */
	} else {
		struct sockaddr_in6 sin6, want;

		memcpy(&sin6, ss, sizeof(sin6));
		memset(&want, 0, sizeof(want));
		want.sin6_family = AF_INET6;
		want.sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, text, &want.sin6_addr), 1);
		assert_memory_equal(&sin6, &want, sizeof(sin6));
	}
}

static void check_valid(const struct v1_case *c, const struct pp_header *h)
{
	assert_int_equal(h->version, 1);
	assert_int_equal(h->error, PP_E_OK);
	assert_int_equal(h->crc_verified, 0);
	assert_null(h->tlv);
	assert_int_equal(h->tlv_len, 0);
	assert_null(h->unix_src);
	assert_null(h->unix_dst);
	if (c->fam == 0) {
		assert_int_equal(h->command, PP_CMD_V1_UNKNOWN);
		assert_int_equal(h->family, PP_FAM_UNSPEC);
		assert_int_equal(h->transport, PP_TRANS_UNSPEC);
		assert_int_equal(h->src.ss_family, AF_UNSPEC);
		assert_int_equal(h->dst.ss_family, AF_UNSPEC);
		return;
	}
	assert_int_equal(h->command, PP_CMD_PROXY);
	assert_int_equal(h->family, c->fam == AF_INET ? PP_FAM_INET : PP_FAM_INET6);
	assert_int_equal(h->transport, PP_TRANS_STREAM);
	check_addr(&h->src, c->fam, c->src, c->sport);
	check_addr(&h->dst, c->fam, c->dst, c->dport);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct v1_case *c = &cases[i];
		unsigned v = c->versions ? c->versions : PP_ANY;
		int ret = c->ret == OK ? line_len(c) : c->ret;
		char name[64];
		struct pp_header h;

		snprintf(name, sizeof(name), "v1 case %zu", i);
		feed_check(name, c->in, c->len, v, ret, c->err, c->decided, &h);
		if (ret > 0)
			check_valid(c, &h);
	}
}

/* Application bytes after a header are never part of it: not in len, not parsed. */
static void test_app_bytes_after(void **state)
{
	static const char *const tails[] = {
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PROXY TCP4 9.9.9.9 9.9.9.9 9 9\r\n",
		"\r\n",
		"\0\0\0\0",
		"\r\n\r\n\0\r\nQUIT\n", /* a v2 signature, as application data */
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct v1_case *c = &cases[i];
		char buf[512];

		if (c->ret != OK)
			continue;
		for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
			size_t tl = t == 3 ? 4 : (t == 4 ? 13 : strlen(tails[t]));
			struct pp_header h;
			char name[64];
			int ret = line_len(c);

			memcpy(buf, c->in, c->len);
			memcpy(buf + c->len, tails[t], tl);
			snprintf(name, sizeof(name), "v1 case %zu + tail %zu", i, t);
			feed_check(name, buf, c->len + tl, c->versions ? c->versions : PP_ANY, ret,
				   PP_E_OK, 0, &h);
			check_valid(c, &h);
		}
	}
}

/* Every byte value at every position of a valid line: whatever it gives, it is consistent
 * (a valid result has CRLF at its end; never a length beyond the input). */
static void test_every_byte_everywhere(void **state)
{
	static const char line[] = "PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 56324 443\r\n";
	char buf[sizeof(line)];
	(void)state;
	for (size_t pos = 0; pos < sizeof(line) - 1; pos++) {
		for (unsigned b = 0; b < 256; b++) {
			struct pp_header h;
			int r;

			memcpy(buf, line, sizeof(line) - 1);
			buf[pos] = (char)b;
			r = feed_parse(buf, sizeof(line) - 1, PP_ANY, &h, NULL);
			if (r > 0) {
				assert_true((size_t)r <= sizeof(line) - 1);
				assert_int_equal(buf[r - 2], '\r');
				assert_int_equal(buf[r - 1], '\n');
			} else if (r == PP_INVALID) {
				assert_true(h.error > PP_E_OK && h.error < PP_E_MAX);
			} else {
				assert_true(r == PP_NOT_PROXY || r == PP_INCOMPLETE);
			}
		}
	}
}

/* pp_parse() reads whole TCP4/TCP6 lines on a fast path; the reference reader decides
 * everything else. On every line below with any byte replaced by any value, and on every
 * table entry, both must give the same answer and the same output. */
static void same_as_ref(const char *in, size_t n)
{
	struct pp_header a, b;
	int ra, rb;

	const uint8_t *p = feed_place(in, n);

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	ra = pp_parse(p, n, PP_ANY, &a);
	rb = pp_parse_v1_ref(p, n, PP_ANY, &b);
	if (ra != rb || (ra == PP_INVALID && a.error != b.error))
		fail_msg("%.*s: fast %d (%s), reference %d (%s)", (int)n, in, ra, pp_strerror(a.error),
			 rb, pp_strerror(b.error));
	if (ra > 0)
		assert_memory_equal(&a, &b, sizeof(a));
}

static void test_fast_path_matches_reference(void **state)
{
	static const char *const lines[] = {
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\nGET",
		"PROXY TCP6 2001:db8:85a3::8a2e:370:7334 1:2:3:4:5:6:7:8 56324 443\r\n",
		"PROXY TCP6 ::1 1:: 1 2\r\n",
		"PROXY TCP6 1:2:3:4:5:6:7:: ::2:3:4:5:6:7:8 1 2\r\n",
	};
	char buf[128];
	(void)state;

	for (size_t l = 0; l < sizeof(lines) / sizeof(lines[0]); l++) {
		size_t n = strlen(lines[l]);

		for (size_t pos = 0; pos < n; pos++) {
			for (unsigned v = 0; v < 256; v++) {
				memcpy(buf, lines[l], n);
				buf[pos] = (char)v;
				same_as_ref(buf, n);
				/* and with the byte removed, or doubled */
				memmove(buf + pos, lines[l] + pos + 1, n - pos - 1);
				same_as_ref(buf, n - 1);
			}
			memcpy(buf, lines[l], pos + 1);
			memcpy(buf + pos + 1, lines[l] + pos, n - pos);
			same_as_ref(buf, n + 1);
		}
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (cases[i].len && cases[i].in[0] == 'P')
			same_as_ref(cases[i].in, cases[i].len);
}

/* What a prefix of a line asks for: one byte at a time, since any next byte may decide
 * (a CR, a byte that breaks a rule) and the line's length is not known before its CRLF;
 * never past the end of the line (every valid table entry checks that at every prefix, in
 * feed_check()). */
static void test_need(void **state)
{
	static const char *const lines[] = {
		"PROXY UNKNOWN\r\n",
		"PROXY TCP6 ::1 :: 1 0\r\n",
		"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
	};
	struct pp_header h;
	(void)state;

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		for (size_t k = 0; k < strlen(lines[i]); k++) {
			if (feed_parse(lines[i], k, PP_V1, &h, NULL) != PP_INCOMPLETE)
				fail_msg("line %zu: prefix %zu not PP_INCOMPLETE", i, k);
			if (h.need != 1)
				fail_msg("line %zu: prefix %zu: need %u, want 1", i, k, h.need);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_app_bytes_after),
		cmocka_unit_test(test_every_byte_everywhere),
		cmocka_unit_test(test_fast_path_matches_reference),
		cmocka_unit_test(test_need),
	};
	return cmocka_run_group_tests(tests, feed_setup, feed_teardown);
}
