/* libFuzzer harness: the input chooses a header (command, family, addresses, ports, TLVs,
 * CRC32C, v1 or v2); it is built, parsed back, and every value must come back identical. */
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "proxyshim_proto.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

struct src {
	const uint8_t *p;
	size_t n;
};

static uint8_t take(struct src *s)
{
	uint8_t b = 0;

	if (s->n) {
		b = *s->p++;
		s->n--;
	}
	return b;
}

static void take_n(struct src *s, void *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)out)[i] = take(s);
}

union addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
};

static void make_addr(struct src *s, union addr *a, int fam)
{
	memset(a, 0, sizeof(*a));
	a->sa.sa_family = (sa_family_t)fam;
	if (fam == AF_INET) {
		take_n(s, &a->in.sin_addr, 4);
		take_n(s, &a->in.sin_port, 2);
	} else if (fam == AF_INET6) {
		take_n(s, &a->in6.sin6_addr, 16);
		take_n(s, &a->in6.sin6_port, 2);
	} else {
		size_t n = take(s) % (sizeof(a->un.sun_path) + 1);

		take_n(s, a->un.sun_path, n);
	}
}

static void check_unix(const char *p, uint8_t n, const union addr *a)
{
	size_t want = PP2_UNIX_PATH_LEN;

	if (a->un.sun_path[0])
		want = strnlen(a->un.sun_path, sizeof(a->un.sun_path));
	while (want && a->un.sun_path[want - 1] == 0)
		want--;
	CHECK(n == want && memcmp(p, a->un.sun_path, n) == 0);
}

static uint8_t out[PP2_MAX_LEN];

static void v1(struct src *s)
{
	union addr a, b;
	struct pp_header h;
	int fam = take(s) & 1 ? AF_INET6 : AF_INET, n;

	make_addr(s, &a, fam);
	make_addr(s, &b, fam);
	n = pp_build_v1(out, PP1_MAX_LEN, &a.sa, &b.sa);
	CHECK(n > 0);
	CHECK(pp_parse(out, (size_t)n, PP_ANY, &h) == n);
	CHECK(h.version == 1 && h.command == PP_CMD_PROXY);
	if (fam == AF_INET)
		CHECK(memcmp(&h.src, &a.in, sizeof(a.in)) == 0 && memcmp(&h.dst, &b.in, sizeof(b.in)) == 0);
	else
		CHECK(memcmp(&h.src, &a.in6, sizeof(a.in6)) == 0 &&
		      memcmp(&h.dst, &b.in6, sizeof(b.in6)) == 0);
}

static void v2(struct src *s)
{
	static const int fams[4] = {AF_INET, AF_INET6, AF_UNIX, AF_INET};
	union addr a, b;
	struct pp_tlv t[16], got;
	struct pp_tlv_iter it;
	struct pp_header h;
	uint8_t ctl = take(s);
	int cmd = ctl & 1 ? PP_CMD_PROXY : PP_CMD_LOCAL, fam = fams[(ctl >> 1) & 3], n;
	unsigned flags = ctl & 8 ? PP_BUILD_CRC32C : 0;
	size_t nt = (size_t)(ctl >> 4), total = 0;

	make_addr(s, &a, fam);
	make_addr(s, &b, fam);
	for (size_t i = 0; i < nt; i++) {
		size_t len = take(s);

		t[i].type = take(s);
		if (len == 255)
			len = (size_t)take(s) << 8 | take(s);
		if (len > s->n)
			len = s->n;
		t[i].len = (uint16_t)len;
		t[i].value = s->p;
		s->p += len;
		s->n -= len;
		total += 3 + len;
	}
	n = pp_build_v2(out, sizeof(out), cmd, &a.sa, &b.sa, t, nt, flags);
	if (n < 0) {
		/* only for what the parser would refuse, or what does not fit */
		int why = 0;

		for (size_t i = 0; i < nt; i++)
			why |= t[i].type == PP2_TYPE_CRC32C ||
			       (t[i].type == PP2_TYPE_UNIQUE_ID && t[i].len > PP2_UNIQUE_ID_MAX);
		CHECK(why || total + 16 + 216 + 7 > PP2_MAX_LEN);
		return;
	}
	CHECK(pp_parse(out, (size_t)n, PP_ANY, &h) == n);
	CHECK(h.version == 2 && h.command == cmd && h.crc_verified == (flags ? 1 : 0));
	if (cmd == PP_CMD_PROXY) {
		if (fam == AF_INET)
			CHECK(memcmp(&h.src, &a.in, sizeof(a.in)) == 0 &&
			      memcmp(&h.dst, &b.in, sizeof(b.in)) == 0);
		else if (fam == AF_INET6)
			CHECK(memcmp(&h.src, &a.in6, sizeof(a.in6)) == 0 &&
			      memcmp(&h.dst, &b.in6, sizeof(b.in6)) == 0);
		else {
			check_unix(h.unix_src, h.unix_src_len, &a);
			check_unix(h.unix_dst, h.unix_dst_len, &b);
		}
	} else {
		CHECK(h.family == PP_FAM_UNSPEC && h.src.ss_family == AF_UNSPEC);
	}
	pp_tlv_iter_init(&it, h.tlv, h.tlv_len);
	for (size_t i = 0; i < nt; i++) {
		if (t[i].type == PP2_TYPE_NOOP)
			continue;
		CHECK(pp_tlv_next(&it, &got) == 1);
		CHECK(got.type == t[i].type && got.len == t[i].len);
		CHECK(got.len == 0 || memcmp(got.value, t[i].value, got.len) == 0);
	}
	if (flags)
		CHECK(pp_tlv_next(&it, &got) == 1 && got.type == PP2_TYPE_CRC32C);
	CHECK(pp_tlv_next(&it, &got) == 0);
	/* and one flipped byte in the header is never silently accepted as the same header */
	if (flags && n > 16) {
		size_t at = take(s) % (size_t)n;
		struct pp_header h2;
		int r;

		out[at] ^= 0x01;
		r = pp_parse(out, (size_t)n, PP_ANY, &h2);
		CHECK(r != n || (h2.crc_verified == 0));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct src s = {data, size};

	if (take(&s) & 1)
		v1(&s);
	else
		v2(&s);
	return 0;
}
