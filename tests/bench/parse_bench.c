/* Instructions per successful pp_parse(), for callgrind: `parse_bench CASE N` parses the
 * case's header N times inside bench_loop(), which tests/bench/parse_instructions.sh measures
 * with --toggle-collect=bench_loop at two values of N, so start-up and set-up cancel out. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxyshim_proto.h"

struct bench_case {
	const char *name;
	uint8_t buf[256];
	size_t len;
};

static volatile int sink;

__attribute__((noinline)) static void bench_loop(const uint8_t *buf, size_t len, long n)
{
	struct pp_header h;

	for (long i = 0; i < n; i++)
		sink = pp_parse(buf, len, PP_ANY, &h);
}

static size_t text(uint8_t *buf, const char *s)
{
	size_t n = strlen(s);

	memcpy(buf, s, n);
	return n;
}

static size_t v2_case(uint8_t *buf, int fam, int tlvs_and_crc)
{
	struct sockaddr_storage s, d;
	struct pp_tlv t[4] = {
		{PP2_TYPE_ALPN, 2, (const uint8_t *)"h2"},
		{PP2_TYPE_AUTHORITY, 11, (const uint8_t *)"example.com"},
		{PP2_TYPE_UNIQUE_ID, 16, (const uint8_t *)"0123456789abcdef"},
		{PP2_TYPE_NETNS, 3, (const uint8_t *)"ns1"},
	};
	int n;

	memset(&s, 0, sizeof(s));
	memset(&d, 0, sizeof(d));
	if (fam == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&s, *b = (struct sockaddr_in *)&d;

		a->sin_family = b->sin_family = AF_INET;
		a->sin_addr.s_addr = 0x0100000a;
		b->sin_addr.s_addr = 0x0200000a;
		a->sin_port = 0x1234;
		b->sin_port = 0xbb01;
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s, *b = (struct sockaddr_in6 *)&d;

		a->sin6_family = b->sin6_family = AF_INET6;
		memset(&a->sin6_addr, 0x20, 16);
		memset(&b->sin6_addr, 0x30, 16);
		a->sin6_port = 0x1234;
		b->sin6_port = 0xbb01;
	}
	n = pp_build_v2(buf, 256, PP_CMD_PROXY, (struct sockaddr *)&s, (struct sockaddr *)&d, t,
			tlvs_and_crc ? 4 : 0, tlvs_and_crc ? PP_BUILD_CRC32C : 0);
	if (n <= 0)
		abort();
	return (size_t)n;
}

int main(int argc, char **argv)
{
	static struct bench_case c[8];
	size_t nc = 0;
	long n;

	c[nc].name = "v2_tcp4";
	c[nc].len = v2_case(c[nc].buf, AF_INET, 0), nc++;
	c[nc].name = "v2_tcp6";
	c[nc].len = v2_case(c[nc].buf, AF_INET6, 0), nc++;
	c[nc].name = "v2_crc_4tlv";
	c[nc].len = v2_case(c[nc].buf, AF_INET, 1), nc++;
	c[nc].name = "v1_tcp4";
	c[nc].len = text(c[nc].buf, "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"), nc++;
	c[nc].name = "v1_tcp4_max";
	c[nc].len = text(c[nc].buf, "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"), nc++;
	c[nc].name = "v1_tcp6";
	c[nc].len = text(c[nc].buf, "PROXY TCP6 2001:db8:85a3::8a2e:370:7334 2001:db8::1 56324 443\r\n"), nc++;
	c[nc].name = "v1_tcp6_max";
	c[nc].len = text(c[nc].buf, "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), nc++;

	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		for (size_t i = 0; i < nc; i++)
			printf("%s %zu\n", c[i].name, c[i].len);
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: %s list | CASE N\n", argv[0]);
		return 2;
	}
	n = atol(argv[2]);
	for (size_t i = 0; i < nc; i++) {
		struct pp_header h;

		if (strcmp(argv[1], c[i].name) != 0)
			continue;
		/* only successful parses count */
		if (pp_parse(c[i].buf, c[i].len, PP_ANY, &h) != (int)c[i].len) {
			fprintf(stderr, "%s: does not parse: %s\n", c[i].name, pp_strerror(h.error));
			return 1;
		}
		bench_loop(c[i].buf, c[i].len, n);
		return 0;
	}
	fprintf(stderr, "%s: no case %s\n", argv[0], argv[1]);
	return 2;
}
