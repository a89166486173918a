/* The trusted set (shim/core/trust.c) over entries parsed as PROXYSHIM_TRUSTED is
 * (shim_parse_trusted): the first and last address of every range in, the ones just outside
 * out; IPv4 entries match IPv4-mapped IPv6 peers and nothing else of IPv6. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/trust.h"

#define MAX_PEERS 16
struct peer_case {
	const char *ip; /* IPv4, IPv6, or "unix" / "unspec" */
	bool trusted;
};
struct trust_case {
	const char *trusted; /* PROXYSHIM_TRUSTED */
	struct peer_case peers[MAX_PEERS];
};

static const struct trust_case cases[] = {
	{"10.0.0.0/8", {{"10.0.0.0", 1}, {"10.255.255.255", 1}, {"9.255.255.255", 0},
			{"11.0.0.0", 0}, {"::ffff:10.0.0.0", 1}, {"::ffff:10.255.255.255", 1},
			{"::ffff:9.255.255.255", 0}, {"::ffff:11.0.0.0", 0},
			{"::a00:1", 0} /* IPv4-compatible ::10.0.0.1: not mapped */,
			{"64:ff9b::a00:1", 0} /* NAT64 */, {"::ffff:0:a00:1", 0} /* SIIT */,
			{"2001:db8::a00:1", 0}, {"unix", 0}, {"unspec", 0}}},
	{"192.0.2.32/27", {{"192.0.2.32", 1}, {"192.0.2.63", 1}, {"192.0.2.31", 0},
			   {"192.0.2.64", 0}, {"::ffff:192.0.2.47", 1}, {"::ffff:192.0.2.64", 0}}},
	{"192.0.2.4/31", {{"192.0.2.4", 1}, {"192.0.2.5", 1}, {"192.0.2.3", 0}, {"192.0.2.6", 0}}},
	{"192.0.2.1/32", {{"192.0.2.1", 1}, {"192.0.2.0", 0}, {"192.0.2.2", 0},
			  {"::ffff:192.0.2.1", 1}, {"::ffff:192.0.2.2", 0}}},
	{"192.0.2.1", {{"192.0.2.1", 1}, {"192.0.2.0", 0}, {"192.0.2.2", 0}}},
	{"10.1.2.3/8" /* host bits set: the network they belong to */,
	 {{"10.0.0.0", 1}, {"10.200.0.1", 1}, {"11.0.0.0", 0}, {"9.255.255.255", 0}}},
	{"0.0.0.0/0", {{"0.0.0.0", 1}, {"255.255.255.255", 1}, {"::ffff:1.2.3.4", 1},
		       {"::ffff:0.0.0.0", 1}, {"::", 0}, {"::1", 0}, {"2001:db8::1", 0},
		       {"unix", 0}}},
	{"128.0.0.0/1", {{"128.0.0.0", 1}, {"255.255.255.255", 1}, {"127.255.255.255", 0},
			 {"0.0.0.0", 0}}},
	{"2001:db8::/32", {{"2001:db8::", 1}, {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1},
			   {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 0}, {"2001:db9::", 0},
			   {"32.1.13.184", 0} /* the same first four bytes, as IPv4 */,
			   {"unix", 0}}},
	{"2001:db8::8/125", {{"2001:db8::8", 1}, {"2001:db8::f", 1}, {"2001:db8::7", 0},
			     {"2001:db8::10", 0}}},
	{"2001:db8::1/128", {{"2001:db8::1", 1}, {"2001:db8::", 0}, {"2001:db8::2", 0}}},
	{"2001:db8:0:80::/57", {{"2001:db8:0:80::", 1}, {"2001:db8:0:ff:ffff:ffff:ffff:ffff", 1},
				{"2001:db8:0:7f:ffff:ffff:ffff:ffff", 0}, {"2001:db8:0:100::", 0}}},
	{"::1", {{"::1", 1}, {"::", 0}, {"::2", 0}, {"127.0.0.1", 0}, {"::ffff:127.0.0.1", 0}}},
	{"::/0", {{"::", 1}, {"::1", 1}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1},
		  {"::ffff:1.2.3.4", 1} /* an IPv6 peer, whatever it holds */, {"1.2.3.4", 0},
		  {"0.0.0.0", 0}, {"unix", 0}}},
	/* ::ffff:a.b.c.d/96+n is a.b.c.d/n, for both ways the peer can show up. */
	{"::ffff:10.0.0.0/104", {{"10.0.0.0", 1}, {"10.255.255.255", 1}, {"::ffff:10.1.1.1", 1},
				 {"11.0.0.0", 0}, {"9.255.255.255", 0}, {"::ffff:11.0.0.0", 0},
				 {"::a00:1", 0}}},
	{"::ffff:192.0.2.33/123", {{"192.0.2.32", 1}, {"192.0.2.63", 1}, {"::ffff:192.0.2.63", 1},
				   {"192.0.2.31", 0}, {"192.0.2.64", 0}}},
	{"::ffff:0.0.0.0/96", {{"0.0.0.0", 1}, {"255.255.255.255", 1}, {"::ffff:1.2.3.4", 1},
			       {"::1", 0}, {"::", 0}, {"2001:db8::1", 0}}},
	{"::ffff:1.2.3.4/128", {{"1.2.3.4", 1}, {"::ffff:1.2.3.4", 1}, {"1.2.3.5", 0},
				{"1.2.3.3", 0}}},
	{"::ffff:1.2.3.4", {{"1.2.3.4", 1}, {"1.2.3.5", 0}}},
	/* Shorter than /96: an IPv6 network like any other, not an IPv4 one. */
	{"::ffff:0:0/95", {{"::ffff:1.2.3.4", 1}, {"::fffe:0:0", 1}, {"::fffd:ffff:ffff", 0},
			   {"::1:0:0:0", 0}, {"1.2.3.4", 0}}},
	/* Several entries, any separator: each one counts. */
	{"192.0.2.1, 2001:db8::/64\t10.0.0.0/8,,::1",
	 {{"192.0.2.1", 1}, {"10.9.9.9", 1}, {"::ffff:10.9.9.9", 1}, {"2001:db8::5", 1},
	  {"::1", 1}, {"192.0.2.2", 0}, {"2001:db8:0:1::", 0}, {"127.0.0.1", 0},
	  {"::ffff:192.0.2.2", 0}, {"unix", 0}}},
	{"*", {{"1.2.3.4", 1}, {"::1", 1}, {"::ffff:1.2.3.4", 1}, {"255.255.255.255", 1}}},
	{"10.0.0.0/8,*", {{"11.0.0.0", 1}, {"2001:db8::1", 1}}},
};

static socklen_t make_peer(const char *ip, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (!strcmp(ip, "unix")) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, "/tmp/x");
		return sizeof(*un);
	}
	if (!strcmp(ip, "unspec"))
		return sizeof(struct sockaddr);
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(443);
		return sizeof(*in);
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(443);
	return sizeof(*in6);
}

static void load(const char *s, struct shim_config *c, struct shim_cidr *cidrs, unsigned cap)
{
	bool any = true;
	memset(c, 0, sizeof(*c));
	assert_int_equal(shim_parse_trusted(s, cidrs, cap, &c->ncidrs, &any), 0);
	assert_true(c->ncidrs <= cap);
	c->cidrs = cidrs;
	c->trust_any = any;
}

static void test_trust_table(void **state)
{
	static struct shim_config c;
	struct shim_cidr cidrs[8];
	unsigned checked = 0;
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		load(cases[i].trusted, &c, cidrs, 8);
		for (size_t j = 0; j < MAX_PEERS && cases[i].peers[j].ip; j++) {
			struct sockaddr_storage ss;
			make_peer(cases[i].peers[j].ip, &ss);
			print_message("  %-45s %-40s %s\n", cases[i].trusted, cases[i].peers[j].ip,
				      cases[i].peers[j].trusted ? "trusted" : "not trusted");
			assert_int_equal(shim_trusted(&c, (struct sockaddr *)&ss), cases[i].peers[j].trusted);
			checked++;
		}
	}
	print_message("  %u peers checked\n", checked);
}

/* What shim_parse_trusted makes of the entries: the family, the prefix, host bits cleared. */
static void test_parse_entries(void **state)
{
	static const struct {
		const char *s;
		int family;
		unsigned prefix;
		const char *net;
	} want_of[] = {
		{"10.1.2.3/8", AF_INET, 8, "10.0.0.0"},
		{"192.0.2.63/27", AF_INET, 27, "192.0.2.32"},
		{"1.2.3.4", AF_INET, 32, "1.2.3.4"},
		{"255.255.255.255/0", AF_INET, 0, "0.0.0.0"},
		{"2001:db8::f/125", AF_INET6, 125, "2001:db8::8"},
		{"2001:db8::1", AF_INET6, 128, "2001:db8::1"},
		{"ffff::/0", AF_INET6, 0, "::"},
		{"::ffff:10.1.2.3/104", AF_INET, 8, "10.0.0.0"},
		{"::ffff:10.1.2.3/96", AF_INET, 0, "0.0.0.0"},
		{"::ffff:10.1.2.3", AF_INET, 32, "10.1.2.3"},
		{"::ffff:10.1.2.3/95", AF_INET6, 95, "::fffe:0:0"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(want_of) / sizeof(want_of[0]); i++) {
		struct shim_cidr c;
		uint8_t want[16] = {0};
		unsigned n;
		bool any;
		print_message("  %s\n", want_of[i].s);
		assert_int_equal(shim_parse_trusted(want_of[i].s, &c, 1, &n, &any), 0);
		assert_int_equal(n, 1);
		assert_false(any);
		assert_int_equal(c.family, want_of[i].family);
		assert_int_equal(c.prefix, want_of[i].prefix);
		assert_int_equal(inet_pton(want_of[i].family, want_of[i].net, want), 1);
		assert_memory_equal(c.addr, want, 16);
	}
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"10.0.0.0/33", "::/129", "::ffff:1.2.3.4/129", "10.0.0.0/", "10.0.0.0/-1",
		"10.0.0.0/08", "10.0.0.0/8/8", "10.0.0.256", "/8", "", " , ", "**", "10.0.0.0/8,x",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct shim_cidr c[2];
		unsigned n;
		bool any;
		print_message("  \"%s\"\n", bad[i]);
		assert_int_equal(shim_parse_trusted(bad[i], c, 2, &n, &any), -EINVAL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trust_table),
		cmocka_unit_test(test_parse_entries),
		cmocka_unit_test(test_parse_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
