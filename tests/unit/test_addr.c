/* Addresses (shim/core/addr.c): the stored form and back, copied out the way the kernel
 * does (at most the caller's addrlen, addrlen set to the full size, nothing written past it),
 * the real peer's digest, and the log's string form. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/addr.h"

#define CANARY 0xA5

/* "1.2.3.4" or "2001:db8::1" with a port, as the kernel writes it: everything else zero. */
static socklen_t make_sa(const char *ip, uint16_t port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return sizeof(*in);
	}
	assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
	return sizeof(*in6);
}

static const struct {
	const char *ip;
	uint16_t port;
} addrs[] = {
	{"1.2.3.4", 80}, {"0.0.0.0", 0}, {"255.255.255.255", 65535}, {"192.0.2.1", 256},
	{"::1", 443}, {"::", 0}, {"2001:db8::1", 1}, {"::ffff:192.0.2.1", 8080},
	{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535}, {"fe80::1:2:3:4", 22},
};
#define NADDRS (sizeof(addrs) / sizeof(addrs[0]))

/* sockaddr -> stored -> sockaddr gives the kernel's bytes back, and the full size. */
static void test_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < NADDRS; i++) {
		struct sockaddr_storage ss, out;
		struct shim_addr a;
		socklen_t full = make_sa(addrs[i].ip, addrs[i].port, &ss), len = sizeof(out);
		print_message("  %s port %u\n", addrs[i].ip, addrs[i].port);
		memset(&a, CANARY, sizeof(a));
		shim_addr_from_sa(&a, (struct sockaddr *)&ss);
		assert_int_equal(a.family, ss.ss_family);
		assert_int_equal(a.port, htons(addrs[i].port));
		if (a.family == AF_INET)
			for (size_t k = 4; k < sizeof(a.addr); k++)
				assert_int_equal(a.addr[k], 0); /* no stale bytes in the stored form */
		memset(&out, CANARY, sizeof(out));
		shim_addr_to_user(&a, (struct sockaddr *)&out, &len);
		assert_int_equal(len, full);
		assert_memory_equal(&out, &ss, full);
		for (size_t k = full; k < sizeof(out); k++)
			assert_int_equal(((uint8_t *)&out)[k], CANARY);
	}
}

/* Not an IP address: the stored form says so (family 0, all zero). */
static void test_from_other_family(void **state)
{
	struct sockaddr_un un;
	struct shim_addr a, zero;
	(void)state;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	strcpy(un.sun_path, "/run/x.sock");
	memset(&a, CANARY, sizeof(a));
	memset(&zero, 0, sizeof(zero));
	shim_addr_from_sa(&a, (struct sockaddr *)&un);
	assert_memory_equal(&a, &zero, sizeof(a));
}

static const socklen_t lens[] = {0, 1, 2, 3, 4, 8, 15, 16, 17, 27, 28, 29, 128, 0x7fffffff};
#define NLENS (sizeof(lens) / sizeof(lens[0]))

/* The caller's buffer of *len bytes, and CANARY bytes after it. */
static void check_copy(const char *what, const void *want, socklen_t full, socklen_t given,
		       const uint8_t *buf, size_t bufsize, socklen_t got)
{
	size_t copied = given < full ? given : full;
	print_message("  %s addrlen %u\n", what, (unsigned)given);
	assert_int_equal(got, full);
	if (copied)
		assert_memory_equal(buf, want, copied);
	for (size_t k = copied; k < bufsize; k++)
		assert_int_equal(buf[k], CANARY);
}

/* A short addrlen: at most that many bytes written, the canaries after them untouched, addrlen
 * set to the full size (accept(2), getpeername(2)). */
static void test_to_user_truncates(void **state)
{
	(void)state;
	for (size_t i = 0; i < NADDRS; i++) {
		struct sockaddr_storage ss;
		struct shim_addr a;
		socklen_t full = make_sa(addrs[i].ip, addrs[i].port, &ss);
		shim_addr_from_sa(&a, (struct sockaddr *)&ss);
		for (size_t j = 0; j < NLENS; j++) {
			uint8_t buf[256];
			socklen_t len = lens[j];
			memset(buf, CANARY, sizeof(buf));
			shim_addr_to_user(&a, (struct sockaddr *)buf, &len);
			check_copy(addrs[i].ip, &ss, full, lens[j], buf, sizeof(buf), len);
		}
	}
}

/* The same with the caller's buffer ending at a PROT_NONE page: a byte written past addrlen
 * faults, whatever the copy's width. */
static void test_to_user_guard_page(void **state)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *area = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	(void)state;
	assert_true(area != MAP_FAILED);
	assert_int_equal(mprotect(area + pg, pg, PROT_NONE), 0);
	for (size_t i = 0; i < NADDRS; i++) {
		struct sockaddr_storage ss;
		struct shim_addr a;
		socklen_t full = make_sa(addrs[i].ip, addrs[i].port, &ss);
		shim_addr_from_sa(&a, (struct sockaddr *)&ss);
		for (size_t j = 0; j < NLENS && lens[j] <= 128; j++) {
			uint8_t *buf = area + pg - lens[j];
			socklen_t len = lens[j];
			shim_addr_to_user(&a, (struct sockaddr *)buf, &len);
			assert_int_equal(len, full);
			assert_memory_equal(buf, &ss, lens[j] < full ? lens[j] : full);
			/* and the same through the raw copy accept() uses for untrusted peers */
			len = lens[j];
			shim_sa_to_user(&ss, full, (struct sockaddr *)buf, &len);
			assert_int_equal(len, full);
		}
	}
	munmap(area, 2 * pg);
}

/* accept()'s raw copy of the kernel's address, any family: at most *len bytes, *len = salen. */
static void test_sa_to_user(void **state)
{
	struct sockaddr_storage v6;
	struct sockaddr_un un;
	struct {
		const char *what;
		const void *sa;
		socklen_t salen;
	} srcs[] = {
		{"v6 with flow label and scope", &v6, sizeof(struct sockaddr_in6)},
		{"unix", &un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 12)},
		{"unix, full size", &un, sizeof(un)},
		{"unnamed unix", &un, sizeof(sa_family_t)},
	};
	(void)state;
	make_sa("2001:db8::7", 9, &v6);
	((struct sockaddr_in6 *)&v6)->sin6_flowinfo = htonl(0x12345);
	((struct sockaddr_in6 *)&v6)->sin6_scope_id = 3;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	strcpy(un.sun_path, "/run/x.sock");
	for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++) {
		for (size_t j = 0; j < NLENS; j++) {
			uint8_t buf[256];
			socklen_t len = lens[j];
			memset(buf, CANARY, sizeof(buf));
			shim_sa_to_user(srcs[i].sa, srcs[i].salen, (struct sockaddr *)buf, &len);
			check_copy(srcs[i].what, srcs[i].sa, srcs[i].salen, lens[j], buf, sizeof(buf), len);
		}
	}
}

/* accept(fd, NULL, NULL), accept(fd, NULL, &len), accept(fd, buf, NULL): nothing written. */
static void test_null_addr_or_len(void **state)
{
	struct sockaddr_storage ss;
	struct shim_addr a;
	uint8_t buf[64];
	socklen_t full = make_sa("2001:db8::1", 80, &ss), len = 5;
	(void)state;
	shim_addr_from_sa(&a, (struct sockaddr *)&ss);
	memset(buf, CANARY, sizeof(buf));
	shim_addr_to_user(&a, NULL, &len);
	assert_int_equal(len, 5);
	shim_addr_to_user(&a, (struct sockaddr *)buf, NULL);
	shim_addr_to_user(&a, NULL, NULL);
	shim_sa_to_user(&ss, full, NULL, &len);
	assert_int_equal(len, 5);
	shim_sa_to_user(&ss, full, (struct sockaddr *)buf, NULL);
	shim_sa_to_user(&ss, full, NULL, NULL);
	for (size_t k = 0; k < sizeof(buf); k++)
		assert_int_equal(buf[k], CANARY);
}

static uint32_t hash_of(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	make_sa(ip, port, &ss);
	return shim_sa_hash((struct sockaddr *)&ss);
}

/* Equal addresses hash equal (whatever the bytes the kernel leaves zero hold); a different
 * port, address or family hashes differently. */
static void test_hash(void **state)
{
	static const struct {
		const char *a;
		uint16_t pa;
		const char *b;
		uint16_t pb;
	} differ[] = {
		{"1.2.3.4", 80, "1.2.3.4", 81},
		{"1.2.3.4", 0x0102, "1.2.3.4", 0x0201},
		{"1.2.3.4", 80, "1.2.3.5", 80},
		{"1.2.3.4", 80, "129.2.3.4", 80},
		{"1.2.3.4", 80, "4.3.2.1", 80},
		{"0.0.0.0", 0, "0.0.0.0", 1},
		{"0.0.0.1", 0, "0.0.0.0", 1},
		{"1.2.3.4", 80, "::ffff:1.2.3.4", 80},
		{"0.0.0.0", 0, "::", 0},
		{"::1", 80, "::1", 81},
		{"::1", 80, "::2", 80},
		{"2001:db8::1", 80, "2001:db8::1:0:0:0:1", 80},
		{"2001:db8::1", 80, "2001:db9::1", 80},
		{"::1", 80, "1::", 80},
		{"8000::", 1, "::", 1},
		{"::ffff:1.2.3.4", 80, "::ffff:1.2.3.5", 80},
	};
	struct sockaddr_storage x, y;
	(void)state;
	for (size_t i = 0; i < NADDRS; i++)
		assert_int_equal(hash_of(addrs[i].ip, addrs[i].port), hash_of(addrs[i].ip, addrs[i].port));
	for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++) {
		print_message("  %s:%u vs %s:%u\n", differ[i].a, differ[i].pa, differ[i].b, differ[i].pb);
		assert_int_not_equal(hash_of(differ[i].a, differ[i].pa), hash_of(differ[i].b, differ[i].pb));
	}
	/* sin_zero is padding: not part of the address. */
	make_sa("10.0.0.1", 5, &x);
	y = x;
	memset(((struct sockaddr_in *)&y)->sin_zero, 0xff, 8);
	assert_int_equal(shim_sa_hash((struct sockaddr *)&x), shim_sa_hash((struct sockaddr *)&y));
	/* A small grid of IPv4 peers and ports: all different. */
	{
		enum { NA = 16, NP = 16 };
		uint32_t h[NA * NP];
		for (unsigned a = 0; a < NA; a++)
			for (unsigned p = 0; p < NP; p++) {
				char ip[32];
				snprintf(ip, sizeof(ip), "10.0.%u.%u", a / 4, a % 4);
				h[a * NP + p] = hash_of(ip, (uint16_t)(40000 + p));
			}
		for (size_t i = 0; i < NA * NP; i++)
			for (size_t j = i + 1; j < NA * NP; j++)
				assert_int_not_equal(h[i], h[j]);
	}
}

static void test_str(void **state)
{
	static const struct {
		const char *ip;
		uint16_t port;
		const char *want;
	} cases[] = {
		{"1.2.3.4", 80, "1.2.3.4:80"},
		{"0.0.0.0", 0, "0.0.0.0:0"},
		{"255.255.255.255", 65535, "255.255.255.255:65535"},
		{"::1", 443, "[::1]:443"},
		{"::", 0, "[::]:0"},
		{"::ffff:192.0.2.1", 8080, "[::ffff:192.0.2.1]:8080"},
		{"2001:DB8:0:0:0:0:0:1", 1, "[2001:db8::1]:1"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
		 "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"1111:2222:3333:4444:5555:6666:123.123.123.123", 65535,
		 "[1111:2222:3333:4444:5555:6666:7b7b:7b7b]:65535"},
	};
	struct sockaddr_un un;
	char buf[SHIM_ADDRSTR_LEN + 16];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss;
		make_sa(cases[i].ip, cases[i].port, &ss);
		memset(buf, CANARY, sizeof(buf));
		assert_ptr_equal(shim_sa_str((struct sockaddr *)&ss, buf), buf);
		assert_string_equal(buf, cases[i].want);
		for (size_t k = SHIM_ADDRSTR_LEN; k < sizeof(buf); k++)
			assert_int_equal((uint8_t)buf[k], CANARY);
	}
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_string_equal(shim_sa_str((struct sockaddr *)&un, buf), "family-1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_from_other_family),
		cmocka_unit_test(test_to_user_truncates),
		cmocka_unit_test(test_to_user_guard_page),
		cmocka_unit_test(test_sa_to_user),
		cmocka_unit_test(test_null_addr_or_len),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_str),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
