/* The exec handoff's text (shim/core/handoff.c): every kind of entry survives the round trip
 * field for field, and whatever else the variable holds is skipped, never misread. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "proxyshim.h"
#include "core/handoff.h"

struct rt_case {
	const char *name;
	int fd;
	unsigned long long ino;
	uint8_t flags, version, command;
	uint32_t real_hash;
	const char *peer, *local; /* "ip" (v4 or v6) or NULL: family 0 */
	uint16_t pport, lport;
	uint64_t deadline; /* PENDING: the pend union instead of local */
};

static const struct rt_case rt_cases[] = {
	{"rewritten v2 proxy v4", 3, 12345, SHIM_C_REWRITTEN, 2, PP_CMD_PROXY, 0xdeadbeef,
	 "192.0.2.1", "198.51.100.7", 40000, 80, 0},
	{"rewritten v1 proxy v6, largest fd and inode", INT_MAX, ~0ull, SHIM_C_REWRITTEN, 1,
	 PP_CMD_PROXY, 0xffffffff, "2001:db8::1", "2001:db8:ffff::ffff", 65535, 443, 0},
	{"rewritten v4-mapped peer", 17, 1, SHIM_C_REWRITTEN, 2, PP_CMD_PROXY, 1, "::ffff:10.0.0.1",
	 "::ffff:10.0.0.2", 1, 2, 0},
	{"pending (lazy), deadline and port in the union", 0, 0, SHIM_C_PENDING, 0, 0, 0x01020304,
	 NULL, NULL, 0, 8080, 0x0123456789abcdefull},
	{"failed (lazy)", 1, 99, SHIM_C_FAILED, 2, PP_CMD_PROXY, 7, NULL, NULL, 0, 0, 0},
	{"LOCAL command, no addresses", 4, 4242, SHIM_C_REWRITTEN, 2, PP_CMD_LOCAL, 5, NULL, NULL, 0,
	 0, 0},
	{"v1 UNKNOWN, v4 real endpoints kept", 5, 77, SHIM_C_REWRITTEN, 1, PP_CMD_V1_UNKNOWN, 9,
	 "127.0.0.1", NULL, 5555, 0, 0},
	{"rewritten | failed together", 6, 10, SHIM_C_REWRITTEN | SHIM_C_FAILED, 2, PP_CMD_PROXY, 0,
	 "203.0.113.9", "203.0.113.10", 1234, 4321, 0},
};

static void set_addr(struct shim_addr *a, const char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	if (!ip)
		return;
	if (inet_pton(AF_INET, ip, a->addr) == 1) {
		a->family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, ip, a->addr), 1);
		a->family = AF_INET6;
	}
	a->port = htons(port);
}

static void make_entry(const struct rt_case *c, struct shim_fd *e)
{
	memset(e, 0, sizeof(*e));
	e->flags = c->flags;
	e->version = c->version;
	e->command = c->command;
	e->real_hash = c->real_hash;
	set_addr(&e->peer, c->peer, c->pport);
	if (c->flags & SHIM_C_PENDING) {
		shim_pend_set_deadline(e, c->deadline);
		e->pend.lport = htons(c->lport);
	} else {
		set_addr(&e->local, c->local, c->lport);
	}
}

#define MAX_SEEN 16
struct seen {
	size_t n;
	int fd[MAX_SEEN];
	unsigned long long ino[MAX_SEEN];
	struct shim_handoff_wire w[MAX_SEEN];
};

static void collect(int fd, unsigned long long ino, const struct shim_handoff_wire *w, void *arg)
{
	struct seen *s = arg;
	assert_true(s->n < MAX_SEEN);
	s->fd[s->n] = fd;
	s->ino[s->n] = ino;
	s->w[s->n] = *w;
	s->n++;
}

static void assert_same(const struct rt_case *c, const struct shim_fd *e, int fd,
			unsigned long long ino, const struct shim_handoff_wire *w)
{
	struct shim_addr peer = w->peer, local = w->local;
	print_message("  %s\n", c->name);
	assert_int_equal(fd, c->fd);
	assert_true(ino == c->ino);
	assert_int_equal(w->flags, e->flags);
	assert_int_equal(w->version, e->version);
	assert_int_equal(w->command, e->command);
	assert_int_equal(w->real_hash, e->real_hash);
	assert_memory_equal(&peer, &e->peer, sizeof(peer));
	/* local is the whole union: a pending entry's deadline and port travel in it. */
	assert_memory_equal(&local, &e->local, sizeof(local));
}

/* One entry at a time: encoded, within ENTRY_MAX, decoded back to the same fields. */
static void test_round_trip_each(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rt_cases) / sizeof(rt_cases[0]); i++) {
		const struct rt_case *c = &rt_cases[i];
		char text[2 + SHIM_HANDOFF_ENTRY_MAX + 8];
		struct shim_fd e;
		struct seen s = {0};
		size_t len;
		char head[48];

		make_entry(c, &e);
		memset(text, 'Z', sizeof(text));
		text[0] = '1';
		len = shim_handoff_append(text, 1, sizeof(text), c->fd, c->ino, &e);
		assert_true(len > 1);
		assert_true(len - 1 <= SHIM_HANDOFF_ENTRY_MAX);
		assert_int_equal(text[len], '\0');
		assert_int_equal(strlen(text), len);
		snprintf(head, sizeof(head), "1;%d:%llu:", c->fd, c->ino);
		assert_memory_equal(text, head, strlen(head));
		assert_int_equal(len - strlen(head), 2 * sizeof(struct shim_handoff_wire));
		shim_handoff_each(shim_handoff_entries(text), collect, &s);
		assert_int_equal(s.n, 1);
		assert_same(c, &e, s.fd[0], s.ino[0], &s.w[0]);
	}
}

/* All of them in one variable, in order, as exec.c builds it. */
static void test_round_trip_all(void **state)
{
	enum { N = sizeof(rt_cases) / sizeof(rt_cases[0]) };
	char text[2 + N * (SHIM_HANDOFF_ENTRY_MAX + 1)];
	struct shim_fd e[N];
	struct seen s = {0};
	size_t len = 1;
	(void)state;
	text[0] = '1';
	text[1] = '\0';
	for (size_t i = 0; i < N; i++) {
		size_t before = len;
		make_entry(&rt_cases[i], &e[i]);
		len = shim_handoff_append(text, len, sizeof(text), rt_cases[i].fd, rt_cases[i].ino, &e[i]);
		assert_true(len > before);
	}
	shim_handoff_each(shim_handoff_entries(text), collect, &s);
	assert_int_equal(s.n, N);
	for (size_t i = 0; i < N; i++)
		assert_same(&rt_cases[i], &e[i], s.fd[i], s.ino[i], &s.w[i]);
}

/* An entry that does not fit leaves the text (and the bytes after it) as they were. */
static void test_append_full(void **state)
{
	char text[64 + SHIM_HANDOFF_ENTRY_MAX];
	struct shim_fd e;
	size_t len;
	(void)state;
	make_entry(&rt_cases[1], &e);
	memset(text, 'Z', sizeof(text));
	memcpy(text, "1", 2);
	len = shim_handoff_append(text, 1, SHIM_HANDOFF_ENTRY_MAX + 1, INT_MAX, ~0ull, &e);
	assert_int_equal(len, 1);
	assert_string_equal(text, "1");
	for (size_t i = 2; i < sizeof(text); i++)
		assert_int_equal(text[i], 'Z');
	/* One more byte of room and it goes in. */
	len = shim_handoff_append(text, 1, SHIM_HANDOFF_ENTRY_MAX + 2, INT_MAX, ~0ull, &e);
	assert_true(len > 1 && len < SHIM_HANDOFF_ENTRY_MAX + 2);
}

/* The hex of a valid REWRITTEN entry, for building corrupt ones around it. */
static void valid_hex(char *hex)
{
	struct shim_fd e;
	char text[SHIM_HANDOFF_ENTRY_MAX + 1];
	size_t n;
	make_entry(&rt_cases[0], &e);
	n = shim_handoff_encode(text, 0, 0, &e);
	assert_int_equal(n, 4 + 2 * sizeof(struct shim_handoff_wire));
	memcpy(hex, text + 4, n - 4);
	hex[n - 4] = '\0';
}

static int parse_str(const char *s, int *fd, unsigned long long *ino)
{
	struct shim_handoff_wire w;
	return shim_handoff_parse_entry(s, s + strlen(s), fd, ino, &w);
}

static void test_parse_corrupt(void **state)
{
	char hex[2 * sizeof(struct shim_handoff_wire) + 1], odd[sizeof(hex) + 2];
	char buf[256];
	struct {
		const char *name, *fd, *sep1, *ino, *sep2, *hex;
		int want; /* 0: accepted */
		int want_fd;
		unsigned long long want_ino;
	} cases[] = {
		{"valid", "3", ":", "123", ":", NULL, 0, 3, 123},
		{"leading zeros", "007", ":", "0123", ":", NULL, 0, 7, 123},
		{"fd INT_MAX", "2147483647", ":", "1", ":", NULL, 0, INT_MAX, 1},
		{"inode ULLONG_MAX", "3", ":", "18446744073709551615", ":", NULL, 0, 3, ~0ull},
		{"inode ULLONG_MAX - 6", "3", ":", "18446744073709551609", ":", NULL, 0, 3, ~0ull - 6},
		{"fd INT_MAX + 1", "2147483648", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"fd UINT_MAX + 1", "4294967296", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"fd overflows 64 bits", "99999999999999999999999", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"inode ULLONG_MAX + 1", "3", ":", "18446744073709551616", ":", NULL, -EINVAL, 0, 0},
		{"inode overflows", "3", ":", "184467440737095516150", ":", NULL, -EINVAL, 0, 0},
		{"negative fd", "-3", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"plus sign", "+3", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"empty fd", "", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"empty inode", "3", ":", "", ":", NULL, -EINVAL, 0, 0},
		{"first colon missing", "3", "", "1", ":", NULL, -EINVAL, 0, 0},
		{"second colon missing", "3", ":", "1", "", NULL, -EINVAL, 0, 0},
		{"both colons missing", "3", "", "1", "", NULL, -EINVAL, 0, 0},
		{"other separator", "3", ";", "1", ":", NULL, -EINVAL, 0, 0},
		{"space in number", "3 ", ":", "1", ":", NULL, -EINVAL, 0, 0},
		{"no hex", "3", ":", "1", ":", "", -EINVAL, 0, 0},
		{"hex one short (odd)", "3", ":", "1", ":", "-1", -EINVAL, 0, 0},
		{"hex two short", "3", ":", "1", ":", "-2", -EINVAL, 0, 0},
		{"hex one long (odd)", "3", ":", "1", ":", "+0", -EINVAL, 0, 0},
		{"hex two long", "3", ":", "1", ":", "+00", -EINVAL, 0, 0},
		{"non-hex g", "3", ":", "1", ":", "g", -EINVAL, 0, 0},
		{"upper-case hex", "3", ":", "1", ":", "A", -EINVAL, 0, 0},
		{"space in hex", "3", ":", "1", ":", " ", -EINVAL, 0, 0},
		{"no state flag", "3", ":", "1", ":", "flags=00", -EINVAL, 0, 0},
		{"unknown flag only", "3", ":", "1", ":", "flags=80", -EINVAL, 0, 0},
		{"pending flag", "3", ":", "1", ":", "flags=02", 0, 3, 1},
		{"failed flag", "3", ":", "1", ":", "flags=04", 0, 3, 1},
	};
	(void)state;
	valid_hex(hex);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *h = hex;
		int fd = -7;
		unsigned long long ino = 42;
		size_t hl = strlen(hex);
		if (cases[i].hex && !strncmp(cases[i].hex, "flags=", 6)) {
			memcpy(odd, hex, hl + 1);
			memcpy(odd, cases[i].hex + 6, 2); /* flags is the wire's first byte */
			h = odd;
		} else if (cases[i].hex && cases[i].hex[0] == '-') {
			memcpy(odd, hex, hl + 1);
			odd[hl - (size_t)(cases[i].hex[1] - '0')] = '\0';
			h = odd;
		} else if (cases[i].hex && cases[i].hex[0] == '+') {
			snprintf(odd, sizeof(odd), "%s%s", hex, cases[i].hex + 1);
			h = odd;
		} else if (cases[i].hex && cases[i].hex[0]) {
			memcpy(odd, hex, hl + 1);
			odd[hl / 2] = cases[i].hex[0]; /* in the middle of the addresses */
			h = odd;
		} else if (cases[i].hex) {
			h = "";
		}
		snprintf(buf, sizeof(buf), "%s%s%s%s%s", cases[i].fd, cases[i].sep1, cases[i].ino,
			 cases[i].sep2, h);
		print_message("  %s: %s\n", cases[i].name, buf);
		assert_int_equal(parse_str(buf, &fd, &ino), cases[i].want);
		if (cases[i].want == 0) {
			assert_int_equal(fd, cases[i].want_fd);
			assert_true(ino == cases[i].want_ino);
		}
	}
	assert_int_equal(parse_str("", &(int){0}, &(unsigned long long){0}), -EINVAL);
}

static void test_uint(void **state)
{
	struct {
		const char *s;
		int want;
		unsigned long long v;
		size_t used;
	} cases[] = {
		{"0", 0, 0, 1},
		{"12a", 0, 12, 2},
		{"18446744073709551615", 0, ~0ull, 20},
		{"18446744073709551610", 0, ~0ull - 5, 20},
		{"18446744073709551616", -EINVAL, 0, 0},
		{"99999999999999999999", -EINVAL, 0, 0},
		{"", -EINVAL, 0, 0},
		{"x1", -EINVAL, 0, 0},
		{"-1", -EINVAL, 0, 0},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = cases[i].s;
		unsigned long long v = 12345;
		print_message("  \"%s\"\n", cases[i].s);
		assert_int_equal(shim_handoff_uint(&p, &v), cases[i].want);
		if (cases[i].want == 0) {
			assert_true(v == cases[i].v);
			assert_ptr_equal(p, cases[i].s + cases[i].used);
		} else {
			assert_ptr_equal(p, cases[i].s); /* nothing consumed, nothing stored */
			assert_true(v == 12345);
		}
	}
}

static void test_tag(void **state)
{
	(void)state;
	assert_string_equal(shim_handoff_entries("1;3:1:00"), "3:1:00");
	assert_string_equal(shim_handoff_entries("1;"), "");
	assert_null(shim_handoff_entries("1"));
	assert_null(shim_handoff_entries(""));
	assert_null(shim_handoff_entries("2;3:1:00"));
	assert_null(shim_handoff_entries("10;3:1:00"));
	assert_null(shim_handoff_entries(";1;3:1:00"));
	assert_null(shim_handoff_entries(" 1;3:1:00"));
	assert_null(shim_handoff_entries("1:3:1:00"));
}

/* Only the well-formed entries come out, in order; empty ones, a trailing ';', garbage and
 * entries in no connection state are skipped without stopping the walk. */
static void test_each_skips(void **state)
{
	char good[2][SHIM_HANDOFF_ENTRY_MAX + 1], nostate[SHIM_HANDOFF_ENTRY_MAX + 1];
	char big[SHIM_HANDOFF_ENTRY_MAX + 16], text[8 * SHIM_HANDOFF_ENTRY_MAX];
	struct shim_fd e[2], z;
	struct seen s = {0};
	size_t n;
	(void)state;
	make_entry(&rt_cases[0], &e[0]);
	make_entry(&rt_cases[3], &e[1]);
	good[0][shim_handoff_encode(good[0], 10, 100, &e[0])] = '\0';
	good[1][shim_handoff_encode(good[1], 11, 101, &e[1])] = '\0';
	z = e[0];
	z.flags = 0;
	nostate[shim_handoff_encode(nostate, 12, 102, &z)] = '\0';
	/* fd 2^31 with otherwise perfect hex */
	n = (size_t)snprintf(big, sizeof(big), "2147483648:103:%s", strchr(strchr(good[0], ':') + 1, ':') + 1);
	assert_true(n < sizeof(big));
	snprintf(text, sizeof(text), ";;%s;;garbage;%s;%s;%s;:;%.20s;", good[0], nostate, big,
		 good[1], good[1]);
	shim_handoff_each(text, collect, &s);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.fd[0], 10);
	assert_true(s.ino[0] == 100);
	assert_int_equal(s.fd[1], 11);
	assert_true(s.ino[1] == 101);
	assert_int_equal(s.w[1].flags, SHIM_C_PENDING);
	/* Nothing at all, or only separators. */
	s.n = 0;
	shim_handoff_each("", collect, &s);
	shim_handoff_each(";", collect, &s);
	shim_handoff_each(";;;", collect, &s);
	assert_int_equal(s.n, 0);
	/* The last entry without a trailing ';' counts as well. */
	shim_handoff_each(good[1], collect, &s);
	assert_int_equal(s.n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_each),
		cmocka_unit_test(test_round_trip_all),
		cmocka_unit_test(test_append_full),
		cmocka_unit_test(test_parse_corrupt),
		cmocka_unit_test(test_uint),
		cmocka_unit_test(test_tag),
		cmocka_unit_test(test_each_skips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
