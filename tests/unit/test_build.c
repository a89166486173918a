/* Builders: exact output for known inputs, argument errors, -ENOSPC at every short capacity,
 * and a seeded property test: random headers built, then parsed back to identical values. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>
#include <time.h>

#include "pp_feed.h"

static struct sockaddr_in in4(const char *a, uint16_t port)
{
	struct sockaddr_in s;

	memset(&s, 0, sizeof(s));
	s.sin_family = AF_INET;
	s.sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
	return s;
}

static struct sockaddr_in6 in6(const char *a, uint16_t port)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
	return s;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void expect_v1(const struct sockaddr *s, const struct sockaddr *d, const char *want)
{
	char buf[128];
	int n = pp_build_v1(buf, sizeof(buf), s, d);

	assert_int_equal(n, (int)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	/* every capacity short of it is -ENOSPC, and nothing is written */
	for (size_t cap = 0; cap < (size_t)n; cap++) {
		memset(buf, 'Z', sizeof(buf));
		assert_int_equal(pp_build_v1(buf, cap, s, d), -ENOSPC);
		assert_int_equal(buf[0], 'Z');
	}
}

static void test_v1_exact(void **state)
{
	struct sockaddr_in a = in4("192.168.0.1", 56324), b = in4("192.168.0.11", 443);
	struct sockaddr_in z = in4("0.0.0.0", 0), m = in4("255.255.255.255", 65535);
	struct sockaddr_in6 c = in6("2001:db8::1", 1), d = in6("::", 0);
	struct sockaddr_in6 e = in6("1:0:0:2:0:0:0:3", 80), f = in6("1:0:0:2:3::", 80);
	struct sockaddr_in6 g = in6("::ffff:1.2.3.4", 80), h = in6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1);
	struct sockaddr_in6 i = in6("1:2:3:4:5:6:0:8", 1);
	(void)state;

	expect_v1(SA(a), SA(b), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
	expect_v1(SA(z), SA(m), "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
	expect_v1(SA(c), SA(d), "PROXY TCP6 2001:db8::1 :: 1 0\r\n");
	expect_v1(SA(e), SA(f), "PROXY TCP6 1:0:0:2::3 1:0:0:2:3:: 80 80\r\n");
	expect_v1(SA(g), SA(h), "PROXY TCP6 ::ffff:102:304 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 80 1\r\n");
	expect_v1(SA(i), SA(i), "PROXY TCP6 1:2:3:4:5:6:0:8 1:2:3:4:5:6:0:8 1 1\r\n");
	expect_v1(NULL, NULL, "PROXY UNKNOWN\r\n");
	expect_v1(NULL, SA(a), "PROXY UNKNOWN\r\n");
}

static void test_v1_einval(void **state)
{
	struct sockaddr_in a = in4("1.2.3.4", 1);
	struct sockaddr_in6 b = in6("::1", 1);
	struct sockaddr_un u;
	char buf[128];
	(void)state;

	memset(&u, 0, sizeof(u));
	u.sun_family = AF_UNIX;
	assert_int_equal(pp_build_v1(buf, sizeof(buf), SA(a), SA(b)), -EINVAL);
	assert_int_equal(pp_build_v1(buf, sizeof(buf), SA(a), NULL), -EINVAL);
	assert_int_equal(pp_build_v1(buf, sizeof(buf), SA(u), SA(u)), -EINVAL);
}

static void test_v2_exact(void **state)
{
	static const uint8_t want[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x11"
				      "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x50\x01\xbb"
				      "\x01\x00\x02h2";
	struct sockaddr_in a = in4("1.2.3.4", 80), b = in4("5.6.7.8", 443);
	struct pp_tlv t = {PP2_TYPE_ALPN, 2, (const uint8_t *)"h2"};
	uint8_t buf[128];
	int n;
	(void)state;

	n = pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(b), &t, 1, 0);
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(buf, want, sizeof(want) - 1);
	for (size_t cap = 0; cap < (size_t)n; cap++)
		assert_int_equal(pp_build_v2(buf, cap, PP_CMD_PROXY, SA(a), SA(b), &t, 1, 0), -ENOSPC);

	/* LOCAL: family UNSPEC, addresses ignored */
	n = pp_build_v2(buf, sizeof(buf), PP_CMD_LOCAL, NULL, NULL, NULL, 0, 0);
	assert_int_equal(n, 16);
	assert_memory_equal(buf, "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16);

	/* CRC32C appended last, over the whole header with its value zeroed */
	n = pp_build_v2(buf, sizeof(buf), PP_CMD_LOCAL, SA(a), SA(b), NULL, 0, PP_BUILD_CRC32C);
	assert_int_equal(n, 23);
	assert_memory_equal(buf + 12, "\x20\x00\x00\x07\x03\x00\x04", 7);
	{
		uint8_t copy[23];
		uint32_t c;

		memcpy(copy, buf, 23);
		memset(copy + 19, 0, 4);
		c = pp_crc32c(0, copy, 23);
		assert_int_equal(buf[19], (uint8_t)(c >> 24));
		assert_int_equal(buf[22], (uint8_t)c);
	}
}

static void test_v2_einval(void **state)
{
	struct sockaddr_in a = in4("1.2.3.4", 80);
	struct sockaddr_in6 b = in6("::1", 443);
	static uint8_t buf[PP2_MAX_LEN + 100], val[65535];
	struct pp_tlv t[2] = {{0xE1, 65535 - 12 - 3 - 3, val}, {0xE2, 0, NULL}};
	struct pp_tlv crc = {PP2_TYPE_CRC32C, 4, val}, uid = {PP2_TYPE_UNIQUE_ID, 129, val};
	struct pp_tlv nullval = {PP2_TYPE_ALPN, 2, NULL};
	(void)state;

	assert_int_equal(pp_build_v2(buf, sizeof(buf), 2, SA(a), SA(a), NULL, 0, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(b), NULL, 0, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, NULL, SA(a), NULL, 0, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), NULL, 0, 2), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), NULL, 1, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), &crc, 1, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), &uid, 1, 0), -EINVAL);
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), &nullval, 1, 0), -EINVAL);
	/* exactly 16 + 65535 fits; one more byte (or a CRC on top) is -EINVAL, not -ENOSPC */
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), t, 2, 0), PP2_MAX_LEN);
	assert_int_equal(pp_build_v2(buf, 100, PP_CMD_PROXY, SA(a), SA(a), t, 2, 0), -ENOSPC);
	t[1].len = 1;
	t[1].value = val;
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), t, 2, 0), -EINVAL);
	t[1].len = 0;
	assert_int_equal(pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, SA(a), SA(a), t, 2, PP_BUILD_CRC32C), -EINVAL);
}

/* ---- property test ---- */

static uint64_t rng;

static uint32_t rnd(void)
{
	/* xorshift64*: small, seedable, good enough to pick shapes */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}

static void rnd_bytes(void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)p)[i] = (uint8_t)rnd();
}

union any_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
};

static void rnd_addr(union any_addr *a, int fam)
{
	memset(a, 0, sizeof(*a));
	if (fam == AF_INET) {
		a->in.sin_family = AF_INET;
		rnd_bytes(&a->in.sin_addr, 4);
		a->in.sin_port = (uint16_t)rnd();
	} else if (fam == AF_INET6) {
		a->in6.sin6_family = AF_INET6;
		rnd_bytes(&a->in6.sin6_addr, 16);
		/* runs of zero groups, so "::" is exercised in v1 text */
		for (int g = 0; g < 8; g++)
			if (rnd() % 3 == 0)
				a->in6.sin6_addr.s6_addr[2 * g] = a->in6.sin6_addr.s6_addr[2 * g + 1] = 0;
		a->in6.sin6_port = (uint16_t)rnd();
	} else {
		size_t n = rnd() % (sizeof(a->un.sun_path) + 1);

		a->un.sun_family = AF_UNIX;
		for (size_t i = 0; i < n; i++)
			a->un.sun_path[i] = (char)(1 + rnd() % 255);
		if (rnd() % 8 == 0) /* an abstract name */
			a->un.sun_path[0] = 0;
	}
}

static void check_sockaddr(const struct sockaddr_storage *ss, const union any_addr *a)
{
	if (a->sa.sa_family == AF_INET) {
		struct sockaddr_in s;

		memcpy(&s, ss, sizeof(s));
		assert_memory_equal(&s, &a->in, sizeof(s));
	} else {
		struct sockaddr_in6 s;

		memcpy(&s, ss, sizeof(s));
		assert_memory_equal(&s, &a->in6, sizeof(s));
	}
}

static void check_unix(const char *p, uint8_t n, const union any_addr *a)
{
	size_t want = PP2_UNIX_PATH_LEN;

	if (a->un.sun_path[0])
		want = strnlen(a->un.sun_path, sizeof(a->un.sun_path));
	while (want && a->un.sun_path[want - 1] == 0)
		want--;
	assert_int_equal(n, want);
	assert_memory_equal(p, a->un.sun_path, n);
}

static void one_v2(uint8_t *buf, size_t cap)
{
	static const int fams[3] = {AF_INET, AF_INET6, AF_UNIX};
	static uint8_t vals[8][600];
	union any_addr s, d;
	struct pp_tlv t[8], got;
	struct pp_tlv_iter it;
	struct pp_header h;
	int fam = fams[rnd() % 3], cmd = rnd() % 4 ? PP_CMD_PROXY : PP_CMD_LOCAL;
	size_t nt = rnd() % 9, k = 0;
	unsigned flags = rnd() % 2 ? PP_BUILD_CRC32C : 0;
	int n, r;

	rnd_addr(&s, fam);
	rnd_addr(&d, fam);
	for (size_t i = 0; i < nt; i++) {
		do
			t[i].type = (uint8_t)rnd();
		while (t[i].type == PP2_TYPE_CRC32C);
		t[i].len = (uint16_t)(rnd() % 4 ? rnd() % 40 : rnd() % 600);
		if (t[i].type == PP2_TYPE_UNIQUE_ID && t[i].len > PP2_UNIQUE_ID_MAX)
			t[i].len = PP2_UNIQUE_ID_MAX;
		rnd_bytes(vals[i], t[i].len);
		t[i].value = t[i].len || rnd() % 2 ? vals[i] : NULL;
	}
	n = pp_build_v2(buf, cap, cmd, &s.sa, &d.sa, t, nt, flags);
	assert_true(n > 0);
	r = feed_parse(buf, (size_t)n, PP_ANY, &h, NULL);
	assert_int_equal(r, n);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.command, cmd);
	assert_int_equal(h.crc_verified, flags ? 1 : 0);
	if (cmd == PP_CMD_LOCAL) {
		assert_int_equal(h.family, PP_FAM_UNSPEC);
		assert_int_equal(h.transport, PP_TRANS_UNSPEC);
		assert_int_equal(h.src.ss_family, AF_UNSPEC);
	} else {
		assert_int_equal(h.family, fam == AF_INET ? PP_FAM_INET : fam == AF_INET6 ? PP_FAM_INET6 : PP_FAM_UNIX);
		assert_int_equal(h.transport, PP_TRANS_STREAM);
		if (fam == AF_UNIX) {
			assert_int_equal(h.src.ss_family, AF_UNSPEC);
			check_unix(h.unix_src, h.unix_src_len, &s);
			check_unix(h.unix_dst, h.unix_dst_len, &d);
		} else {
			check_sockaddr(&h.src, &s);
			check_sockaddr(&h.dst, &d);
		}
	}
	/* TLVs back in order, NOOPs skipped, the CRC32C last */
	pp_tlv_iter_init(&it, h.tlv, h.tlv_len);
	for (size_t i = 0; i < nt; i++) {
		if (t[i].type == PP2_TYPE_NOOP)
			continue;
		assert_int_equal(pp_tlv_next(&it, &got), 1);
		assert_int_equal(got.type, t[i].type);
		assert_int_equal(got.len, t[i].len);
		if (got.len)
			assert_memory_equal(got.value, t[i].value, got.len);
		k++;
	}
	if (flags) {
		assert_int_equal(pp_tlv_next(&it, &got), 1);
		assert_int_equal(got.type, PP2_TYPE_CRC32C);
		assert_int_equal(got.len, 4);
	}
	assert_int_equal(pp_tlv_next(&it, &got), 0);
	(void)k;
	/* one in 50 also byte by byte and guarded at every prefix */
	if (rnd() % 50 == 0)
		feed_check("random v2", buf, (size_t)n, PP_ANY, n, PP_E_OK, 0, &h);
}

static void one_v1(void)
{
	union any_addr s, d;
	struct pp_header h;
	char buf[PP1_MAX_LEN];
	int fam = rnd() % 2 ? AF_INET : AF_INET6;
	int n, r;

	rnd_addr(&s, fam);
	rnd_addr(&d, fam);
	if (rnd() % 10 == 0) {
		n = pp_build_v1(buf, sizeof(buf), NULL, NULL);
		assert_int_equal(feed_parse(buf, (size_t)n, PP_ANY, &h, NULL), n);
		assert_int_equal(h.command, PP_CMD_V1_UNKNOWN);
		return;
	}
	n = pp_build_v1(buf, sizeof(buf), &s.sa, &d.sa);
	assert_true(n > 0 && n <= 104);
	r = feed_parse(buf, (size_t)n, PP_ANY, &h, NULL);
	if (r != n)
		fail_msg("%.*s: %d (%s)", n, buf, r, pp_strerror(h.error));
	assert_int_equal(h.version, 1);
	assert_int_equal(h.command, PP_CMD_PROXY);
	assert_int_equal(h.transport, PP_TRANS_STREAM);
	check_sockaddr(&h.src, &s);
	check_sockaddr(&h.dst, &d);
	if (rnd() % 50 == 0)
		feed_check("random v1", buf, (size_t)n, PP_ANY, n, PP_E_OK, 0, &h);
}

static void test_roundtrip(void **state)
{
	static uint8_t buf[PP2_MAX_LEN];
	const char *env = getenv("PP_TEST_SEED");
	uint64_t seed = env ? (uint64_t)strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32u;
	(void)state;

	if (!seed)
		seed = 1;
	printf("test_roundtrip: seed %llu (set PP_TEST_SEED to repeat)\n", (unsigned long long)seed);
	rng = seed;
	for (int i = 0; i < 5000; i++) {
		one_v2(buf, sizeof(buf));
		one_v1();
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_exact),
		cmocka_unit_test(test_v1_einval),
		cmocka_unit_test(test_v2_exact),
		cmocka_unit_test(test_v2_einval),
		cmocka_unit_test(test_roundtrip),
	};
	return cmocka_run_group_tests(tests, feed_setup, feed_teardown);
}
