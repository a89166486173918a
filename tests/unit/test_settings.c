/* The settings (shim/core/settings.c, rows in shim/core/settings_table.h): every variable's
 * valid and invalid values from an explicit environment, the configuration file (fixtures in
 * tests/unit/fixtures/, run from the top of the tree as `make unit` does), and the
 * "NAME=value" lines of proxyshim_settings(). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/settings.h"
#include "proxyshim_proto.h"

#define FIX "tests/unit/fixtures/"
#define ABSENT FIX "absent.conf" /* the default file: not there */

struct loaded {
	struct shim_config c;
	struct shim_settings_src s;
	int rc;
	char text[4096];
};

static struct loaded *load_io(bool secure, char **env)
{
	struct shim_settings_io io = {ABSENT, secure, read, close};
	struct loaded *l = calloc(1, sizeof(*l));
	assert_non_null(l);
	l->rc = shim_settings_load(&l->c, &l->s, env, &io);
	if (l->rc == 0)
		assert_true(shim_settings_format(&l->c, &l->s, l->text, sizeof(l->text)) < (int)sizeof(l->text));
	return l;
}

/* Loads from the environment given (entries, then NULL). */
static struct loaded *load(const char *first, ...)
{
	char *env[64];
	size_t n = 0;
	va_list ap;
	va_start(ap, first);
	for (const char *e = first; e; e = va_arg(ap, const char *)) {
		assert_true(n < 63);
		env[n++] = (char *)(uintptr_t)e;
	}
	va_end(ap);
	env[n] = NULL;
	return load_io(false, env);
}

static void done(struct loaded *l)
{
	shim_settings_release(&l->c, &l->s);
	free(l);
}

/* The line "NAME=..." of the formatted settings. */
static const char *line_of(const struct loaded *l, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	for (const char *p = l->text; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, name, n) == 0 && p[n] == '=') {
			snprintf(out, cap, "%.*s", (int)strcspn(p, "\n"), p);
			return out;
		}
	}
	return "";
}

static void assert_line(const struct loaded *l, const char *expect)
{
	char name[64], got[1200];
	snprintf(name, sizeof(name), "%.*s", (int)strcspn(expect, "="), expect);
	assert_string_equal(line_of(l, name, got, sizeof(got)), expect);
}

/* A value the environment may not hold: load refuses, naming the variable and the value. */
static void assert_env_bad(const char *name, const char *value)
{
	char entry[512];
	struct loaded *l;
	snprintf(entry, sizeof(entry), "%s=%s", name, value);
	l = load(entry, NULL);
	if (l->rc != -EINVAL)
		fail_msg("%s was accepted", entry);
	assert_string_equal(l->s.err.name, name);
	assert_string_equal(l->s.err.value, value);
	assert_true(strncmp(l->s.err.why, "expected ", 9) == 0);
	done(l);
}

static void assert_env_good(const char *name, const char *value, const char *shown)
{
	char entry[512], expect[600];
	struct loaded *l;
	snprintf(entry, sizeof(entry), "%s=%s", name, value);
	l = load(entry, NULL);
	if (l->rc != 0)
		fail_msg("%s refused: %s", entry, l->s.err.why);
	snprintf(expect, sizeof(expect), "%s=%s", name, shown ? shown : value);
	assert_line(l, expect);
	done(l);
}

static const struct shim_setting *row(unsigned id)
{
	return &shim_settings[id];
}

/* ---- the table ---- */

static void test_table_rows(void **state)
{
	static const struct {
		unsigned id;
		const char *flag;
	} flags[] = {
		{SHIM_S_TRUSTED, "--trusted"}, {SHIM_S_VERSION, "--protocol"}, {SHIM_S_MODE, "--mode"},
		{SHIM_S_PORTS, "--ports"},     {SHIM_S_TIMEOUT_MS, "--timeout-ms"},
		{SHIM_S_CONSUME, "--consume"}, {SHIM_S_LOG, "--log"},          {SHIM_S_STATS, "--stats"},
		{SHIM_S_LAZY_GRACE_MS, "--lazy-grace"}, {SHIM_S_MAX_PARKED, "--max-parked"},
		{SHIM_S_DEFER_ACCEPT, "--defer-accept"}, {SHIM_S_LOCAL_ADDR, "--local-addr"},
		{SHIM_S_KEEP_TLVS, "--keep-tlvs"}, {SHIM_S_TLV_MAX, "--tlv-max"},
		{SHIM_S_UNTRUSTED, "--untrusted"}, {SHIM_S_CONFIG, "--config"},
	};
	unsigned ranks = 0, help_ranks = 0, nflags = 0;
	(void)state;
	assert_int_equal(SHIM_NSETTINGS, 16);
	for (unsigned id = 0; id < SHIM_NSETTINGS; id++) {
		const struct shim_setting *t = row(id);
		const char *want = NULL;
		assert_true(strncmp(t->name, "PROXYSHIM_", 10) == 0);
		assert_true(t->rank >= 0 && t->rank < SHIM_NSETTINGS);
		ranks |= 1u << t->rank;
		for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
			if (flags[k].id == id)
				want = flags[k].flag;
		/* The wrapper's options are a contract: exactly these, one for every setting. */
		assert_non_null(want);
		assert_non_null(t->flag);
		assert_string_equal(t->flag, want);
		assert_non_null(t->meta);
		assert_true(t->help_rank >= 0 && t->help_rank < SHIM_NSETTINGS);
		help_ranks |= 1u << t->help_rank;
		nflags++;
		assert_non_null(t->help);
		/* A default is a valid value: a CHOICE's is one of its words, a UINT's in range. */
		if (t->kind == SHIM_SK_CHOICE) {
			bool found = false;
			for (unsigned w = 0; t->words[w]; w++)
				found |= strcmp(t->words[w], t->dflt) == 0;
			assert_true(found);
		} else if (t->kind == SHIM_SK_UINT) {
			unsigned long v = strtoul(t->dflt, NULL, 10);
			assert_true(v >= t->lo && v <= t->hi);
		}
	}
	assert_int_equal(ranks, (1u << SHIM_NSETTINGS) - 1);
	assert_int_equal(help_ranks, (1u << SHIM_NSETTINGS) - 1);
	assert_int_equal(nflags, SHIM_NSETTINGS);
	assert_int_equal(row(SHIM_S_CONFIG)->kind, SHIM_SK_FILE);
	assert_string_equal(row(SHIM_S_CONFIG)->dflt, "/etc/proxyshim.conf");
}

/* Nothing set: the defaults, as `proxyshim --check` prints them. */
static void test_defaults(void **state)
{
	struct loaded *l = load(NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_false(l->c.active);
	assert_string_equal(l->c.inactive_reason, "PROXYSHIM_TRUSTED is not set");
	assert_int_equal(l->c.versions, PP_ANY);
	assert_int_equal(l->c.mode, SHIM_MODE_STRICT);
	assert_int_equal(l->c.timeout_ms, 1000);
	assert_int_equal(l->c.max_parked, 1024);
	assert_int_equal(l->c.lazy_grace_ms, 250);
	assert_int_equal(l->c.tlv_max, 4096);
	assert_int_equal(l->c.log_level, SHIM_LOG_WARN);
	assert_true(l->c.defer_accept && l->c.all_ports);
	assert_false(l->c.lazy || l->c.local_from_header || l->c.keep_tlvs || l->c.untrusted_reject);
	assert_false(l->c.refuse_listen);
	assert_string_equal(l->text, "active=no reason=PROXYSHIM_TRUSTED is not set\n"
				     "PROXYSHIM_TRUSTED=\n"
				     "PROXYSHIM_VERSION=any\n"
				     "PROXYSHIM_MODE=strict\n"
				     "PROXYSHIM_PORTS=all\n"
				     "PROXYSHIM_TIMEOUT_MS=1000\n"
				     "PROXYSHIM_MAX_PARKED=1024\n"
				     "PROXYSHIM_DEFER_ACCEPT=1\n"
				     "PROXYSHIM_LOG=warn\n"
				     "PROXYSHIM_CONSUME=accept\n"
				     "PROXYSHIM_LAZY_GRACE_MS=250\n"
				     "PROXYSHIM_LOCAL_ADDR=real\n"
				     "PROXYSHIM_KEEP_TLVS=0\n"
				     "PROXYSHIM_TLV_MAX=4096\n"
				     "PROXYSHIM_STATS=\n"
				     "PROXYSHIM_UNTRUSTED=pass\n"
				     "config_file=none\n");
	done(l);
}

/* proxyshim_settings(buf, cap) behaves as snprintf(): the length it needed, cut output. */
static void test_format_truncates(void **state)
{
	struct loaded *l = load("PROXYSHIM_TRUSTED=*", NULL);
	char small[40];
	int n;
	(void)state;
	n = shim_settings_format(&l->c, &l->s, small, sizeof(small));
	assert_int_equal(n, (int)strlen(l->text));
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_memory_equal(small, l->text, sizeof(small) - 1);
	assert_int_equal(shim_settings_format(&l->c, &l->s, NULL, 0), n);
	done(l);
}

/* ---- every CHOICE: each word, and values that are not words ---- */

static void test_choices(void **state)
{
	static const char *const bad[] = {"", "x", " ", "yes", "2", "-1", "on"};
	(void)state;
	for (unsigned id = 0; id < SHIM_NSETTINGS; id++) {
		const struct shim_setting *t = row(id);
		if (t->kind != SHIM_SK_CHOICE)
			continue;
		for (unsigned w = 0; t->words[w]; w++) {
			char padded[64], upper[64];
			assert_env_good(t->name, t->words[w], NULL);
			/* Exact words only: no case folding, no spaces around them. */
			snprintf(padded, sizeof(padded), "%s ", t->words[w]);
			assert_env_bad(t->name, padded);
			snprintf(upper, sizeof(upper), "%s", t->words[w]);
			upper[0] = (char)(upper[0] >= 'a' && upper[0] <= 'z' ? upper[0] - 32 : 'Z');
			assert_env_bad(t->name, upper);
		}
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++)
			assert_env_bad(t->name, bad[b]);
	}
}

/* The words reach the fields the hooks read. */
static void test_choice_fields(void **state)
{
	struct loaded *l;
	(void)state;
	l = load("PROXYSHIM_VERSION=v1", "PROXYSHIM_MODE=optional", "PROXYSHIM_CONSUME=lazy",
		 "PROXYSHIM_LOCAL_ADDR=header", "PROXYSHIM_DEFER_ACCEPT=0", "PROXYSHIM_KEEP_TLVS=1",
		 "PROXYSHIM_UNTRUSTED=reject", "PROXYSHIM_LOG=debug", NULL);
	assert_int_equal(l->rc, 0);
	assert_int_equal(l->c.versions, PP_V1);
	assert_int_equal(l->c.mode, SHIM_MODE_OPTIONAL);
	assert_true(l->c.lazy && l->c.local_from_header && l->c.keep_tlvs && l->c.untrusted_reject);
	assert_false(l->c.defer_accept);
	assert_int_equal(l->c.log_level, SHIM_LOG_DEBUG);
	done(l);
	l = load("PROXYSHIM_VERSION=v2", "PROXYSHIM_LOG=off", NULL);
	assert_int_equal(l->c.versions, PP_V2);
	assert_int_equal(l->c.log_level, SHIM_LOG_OFF);
	done(l);
	l = load("PROXYSHIM_LOG=error", NULL);
	assert_int_equal(l->c.log_level, SHIM_LOG_ERROR);
	done(l);
	l = load("PROXYSHIM_LOG=info", NULL);
	assert_int_equal(l->c.log_level, SHIM_LOG_INFO);
	done(l);
}

/* ---- numbers ---- */

static void test_numbers(void **state)
{
	static const char *const always_bad[] = {"", "+1", "-1", "01", "00", " 5", "5 ", "5ms", "0x10",
						 "1e3", "4294967297", "99999999999999999999"};
	(void)state;
	assert_env_good("PROXYSHIM_TIMEOUT_MS", "1", NULL);
	assert_env_good("PROXYSHIM_TIMEOUT_MS", "600000", NULL);
	assert_env_good("PROXYSHIM_TIMEOUT_MS", "250", NULL);
	assert_env_bad("PROXYSHIM_TIMEOUT_MS", "0");
	assert_env_bad("PROXYSHIM_TIMEOUT_MS", "600001");
	assert_env_good("PROXYSHIM_MAX_PARKED", "1", NULL);
	assert_env_good("PROXYSHIM_MAX_PARKED", "1000000", NULL);
	assert_env_bad("PROXYSHIM_MAX_PARKED", "0");
	assert_env_bad("PROXYSHIM_MAX_PARKED", "1000001");
	assert_env_good("PROXYSHIM_TLV_MAX", "0", NULL);
	assert_env_good("PROXYSHIM_TLV_MAX", "65535", NULL);
	assert_env_bad("PROXYSHIM_TLV_MAX", "65536");
	assert_env_good("PROXYSHIM_LAZY_GRACE_MS", "0", NULL);
	assert_env_good("PROXYSHIM_LAZY_GRACE_MS", "600000", NULL);
	assert_env_bad("PROXYSHIM_LAZY_GRACE_MS", "600001");
	for (size_t i = 0; i < sizeof(always_bad) / sizeof(always_bad[0]); i++) {
		assert_env_bad("PROXYSHIM_TIMEOUT_MS", always_bad[i]);
		assert_env_bad("PROXYSHIM_MAX_PARKED", always_bad[i]);
		assert_env_bad("PROXYSHIM_TLV_MAX", always_bad[i]);
		assert_env_bad("PROXYSHIM_LAZY_GRACE_MS", always_bad[i]);
	}
	struct loaded *l = load("PROXYSHIM_TIMEOUT_MS=600000", "PROXYSHIM_MAX_PARKED=1", "PROXYSHIM_TLV_MAX=0", NULL);
	assert_int_equal(l->c.timeout_ms, 600000);
	assert_int_equal(l->c.max_parked, 1);
	assert_int_equal(l->c.tlv_max, 0);
	done(l);
}

/* The message's words for a bad value, per variable. */
static void test_messages(void **state)
{
	struct loaded *l;
	(void)state;
	l = load("PROXYSHIM_TIMEOUT_MS=0", NULL);
	assert_int_equal(l->rc, -EINVAL);
	assert_string_equal(l->s.err.name, "PROXYSHIM_TIMEOUT_MS");
	assert_string_equal(l->s.err.value, "0");
	assert_string_equal(l->s.err.why, "expected milliseconds, 1 to 600000");
	done(l);
	l = load("PROXYSHIM_LOG=loud", NULL);
	assert_string_equal(l->s.err.why, "expected off, error, warn, info or debug");
	done(l);
	l = load("PROXYSHIM_PORTS=0", NULL);
	assert_string_equal(l->s.err.why, "expected ports 1-65535 and ranges LO-HI, separated by commas or spaces");
	done(l);
	l = load("PROXYSHIM_TRUSTED=x", NULL);
	assert_string_equal(l->s.err.why, "expected IPv4/IPv6 addresses or CIDRs (or *), separated by commas or spaces");
	done(l);
	l = load("PROXYSHIM_STATS=rel", NULL);
	assert_string_equal(l->s.err.why, "expected an absolute file path");
	done(l);
	/* Several bad values: the first in the order they are checked (LOG before TIMEOUT_MS,
	 * MODE before TRUSTED) is the one said. */
	l = load("PROXYSHIM_TIMEOUT_MS=0", "PROXYSHIM_LOG=x", NULL);
	assert_string_equal(l->s.err.name, "PROXYSHIM_LOG");
	done(l);
	l = load("PROXYSHIM_TRUSTED=x", "PROXYSHIM_MODE=x", NULL);
	assert_string_equal(l->s.err.name, "PROXYSHIM_MODE");
	done(l);
}

/* ---- PROXYSHIM_TRUSTED ---- */

static void test_trusted_valid(void **state)
{
	static const struct {
		const char *value, *shown;
	} cases[] = {
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"1.2.3.4", "1.2.3.4/32"},
		{"10.1.2.3/8", "10.0.0.0/8"}, /* host bits cleared */
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"192.168.1.255/31", "192.168.1.254/31"},
		{"::1", "::1/128"},
		{"::/0", "::/0"},
		{"2001:db8::1/32", "2001:db8::/32"},
		{"fe80::1/127", "fe80::/127"},
		/* v4-mapped: the IPv4 network, /96+n becoming /n */
		{"::ffff:10.1.2.3/104", "10.0.0.0/8"},
		{"::ffff:1.2.3.4", "1.2.3.4/32"},
		{"::ffff:1.2.3.4/96", "0.0.0.0/0"},
		{"::ffff:1.2.3.4/95", "::fffe:0:0/95"}, /* wider than the mapped range: stays IPv6 */
		{"*", "*"},
		{"10.0.0.0/8, ::1\t*", "*,10.0.0.0/8,::1/128"},
		{" ,10.0.0.0/8,, ", "10.0.0.0/8"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_env_good("PROXYSHIM_TRUSTED", cases[i].value, cases[i].shown);

	struct loaded *l = load("PROXYSHIM_TRUSTED=::ffff:10.1.2.3/104", NULL);
	assert_true(l->c.active);
	assert_int_equal(l->c.ncidrs, 1);
	assert_int_equal(l->c.cidrs[0].family, AF_INET);
	assert_int_equal(l->c.cidrs[0].prefix, 8);
	assert_memory_equal(l->c.cidrs[0].addr, "\x0a\0\0\0", 4);
	assert_false(l->c.trust_any);
	done(l);
}

/* More than 16 entries go to the heap (released here, checked by ASan's leak check). */
static void test_trusted_long_list(void **state)
{
	static char entry[1024];
	size_t n = (size_t)snprintf(entry, sizeof(entry), "PROXYSHIM_TRUSTED=");
	struct loaded *l;
	(void)state;
	for (unsigned i = 0; i < 20; i++)
		n += (size_t)snprintf(entry + n, sizeof(entry) - n, "%s10.0.%u.0/24", i ? "," : "", i);
	l = load(entry, NULL);
	assert_int_equal(l->rc, 0);
	assert_int_equal(l->c.ncidrs, 20);
	assert_ptr_not_equal(l->c.cidrs, l->s.small);
	assert_memory_equal(l->c.cidrs[19].addr, "\x0a\x00\x13\x00", 4);
	done(l);
}

static void test_trusted_invalid(void **state)
{
	static const char *const bad[] = {
		"", " ", ",", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/-1",
		"10.0.0.0/+8", "10.0.0.256", "10.0.0", "abc", "1.2.3.4/8/8", "::1::2", "**",
		"10.0.0.0/8;1.2.3.4", "[::1]", "1.2.3.4:80", "/8", "10.0.0.0/8,x",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_env_bad("PROXYSHIM_TRUSTED", bad[i]);
}

/* ---- PROXYSHIM_PORTS ---- */

static void test_ports(void **state)
{
	static const char *const bad[] = {"", " ", ",", "0", "65536", "5-3", "-5", "5-", "080", "a",
					  "1-2-3", "0-5", "80-65536", "+80", "80;443"};
	struct loaded *l;
	(void)state;
	assert_env_good("PROXYSHIM_PORTS", "1", NULL);
	assert_env_good("PROXYSHIM_PORTS", "65535", NULL);
	assert_env_good("PROXYSHIM_PORTS", "1-65535", NULL);
	assert_env_good("PROXYSHIM_PORTS", "5-5", "5");
	assert_env_good("PROXYSHIM_PORTS", "80,443 8000-8099\t8100", "80,443,8000-8100");
	assert_env_good("PROXYSHIM_PORTS", "443,80,81", "80-81,443");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_env_bad("PROXYSHIM_PORTS", bad[i]);
	l = load("PROXYSHIM_PORTS=443,8000-8099", NULL);
	assert_false(l->c.all_ports);
	assert_true(shim_port_covered(&l->c, 443) && shim_port_covered(&l->c, 8000) &&
		    shim_port_covered(&l->c, 8099));
	assert_false(shim_port_covered(&l->c, 442) || shim_port_covered(&l->c, 8100) ||
		     shim_port_covered(&l->c, 0));
	done(l);
}

/* ---- PROXYSHIM_STATS ---- */

static void test_stats_path(void **state)
{
	char longpath[300];
	(void)state;
	assert_env_good("PROXYSHIM_STATS", "/run/proxyshim.prom", NULL);
	assert_env_good("PROXYSHIM_STATS", "/", NULL);
	assert_env_bad("PROXYSHIM_STATS", "");
	assert_env_bad("PROXYSHIM_STATS", "relative.prom");
	assert_env_bad("PROXYSHIM_STATS", "./x");
	/* Room is left for the temporary file's suffix: 239 bytes at most. */
	memset(longpath, 'a', sizeof(longpath));
	longpath[0] = '/';
	longpath[239] = '\0';
	assert_env_good("PROXYSHIM_STATS", longpath, NULL);
	longpath[239] = 'a';
	longpath[240] = '\0';
	assert_env_bad("PROXYSHIM_STATS", longpath);
}

/* ---- names ---- */

static void test_unknown_names(void **state)
{
	struct loaded *l;
	(void)state;
	l = load("PROXYSHIM_TIMEOUT=5", NULL);
	assert_int_equal(l->rc, -EINVAL);
	assert_string_equal(l->s.err.name, "PROXYSHIM_TIMEOUT");
	assert_string_equal(l->s.err.value, "5");
	assert_string_equal(l->s.err.why, "not a proxyshim variable (did you mean PROXYSHIM_TIMEOUT_MS?)");
	done(l);
	l = load("PROXYSHIM_TRUSTD=1.2.3.4", NULL);
	assert_string_equal(l->s.err.why, "not a proxyshim variable (did you mean PROXYSHIM_TRUSTED?)");
	done(l);
	l = load("PROXYSHIM_CONFG=/x", NULL);
	assert_string_equal(l->s.err.why, "not a proxyshim variable (did you mean PROXYSHIM_CONFIG?)");
	done(l);
	l = load("PROXYSHIM_WHATEVER_ELSE=1", NULL);
	assert_string_equal(l->s.err.why, "not a proxyshim variable");
	done(l);
	/* The unknown name is refused even when another value is bad too: it is checked first. */
	l = load("PROXYSHIM_LOG=x", "PROXYSHIM_FOO=1", NULL);
	assert_string_equal(l->s.err.name, "PROXYSHIM_FOO");
	done(l);
	/* Names of the project's own tools are not settings, and not typos either. */
	l = load("PROXYSHIM_HANDOFF=x", "PROXYSHIM_CHECK_REEXEC=1", "PROXYSHIM_SRC=/a", "PROXYSHIM_DEST=/b",
		 "PROXYSHIM_TRUSTED=::1", NULL);
	assert_int_equal(l->rc, 0);
	assert_true(l->c.active);
	done(l);
	/* Not PROXYSHIM_*: not ours to judge. */
	l = load("PROXYSHIMX=1", "proxyshim_log=x", "PROXYSHIM_LOG", NULL);
	assert_int_equal(l->rc, 0);
	done(l);
}

/* The first entry of a name wins, as with getenv(). */
static void test_env_first_wins(void **state)
{
	struct loaded *l = load("PROXYSHIM_LOG=error", "PROXYSHIM_LOG=x", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_int_equal(l->c.log_level, SHIM_LOG_ERROR);
	done(l);
}

/* Set-uid: the environment is not trusted; nothing is read, nothing refused. */
static void test_secure_execution(void **state)
{
	char *env[] = {"PROXYSHIM_TRUSTED=*", "PROXYSHIM_LOG=x", "PROXYSHIM_FOO=1", NULL};
	struct loaded *l = load_io(true, env);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_false(l->c.active);
	assert_string_equal(l->c.inactive_reason, "secure-execution");
	assert_int_equal(l->c.log_level, SHIM_LOG_OFF);
	assert_int_equal(l->c.timeout_ms, 1000);
	done(l);
}

/* ---- the configuration file ---- */

static void test_file_good(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "good.conf", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, "");
	assert_false(l->c.refuse_listen);
	assert_true(l->c.active);
	/* Comments, blank lines, spaces around '=', quotes, CRLF, a tab before the key. */
	assert_line(l, "PROXYSHIM_TRUSTED=10.0.0.0/8,::1/128");
	assert_line(l, "PROXYSHIM_PORTS=443,8000-8099");
	assert_line(l, "PROXYSHIM_LOG=debug");
	assert_line(l, "PROXYSHIM_MODE=optional");
	assert_line(l, "PROXYSHIM_STATS=/run/proxyshim.prom");
	assert_line(l, "PROXYSHIM_UNTRUSTED=reject");
	/* The last line for a key wins. */
	assert_line(l, "PROXYSHIM_TIMEOUT_MS=300");
	assert_line(l, "config_file=" FIX "good.conf");
	done(l);
}

static void test_file_crlf(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "crlf.conf", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, "");
	assert_int_equal(l->c.versions, PP_V2);
	assert_line(l, "PROXYSHIM_TRUSTED=1.2.3.4/32");
	done(l);
}

/* The environment wins over the file, value by value. */
static void test_file_env_wins(void **state)
{
	struct loaded *l = load("PROXYSHIM_LOG=error", "PROXYSHIM_CONFIG=" FIX "good.conf", "PROXYSHIM_PORTS=81", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_line(l, "PROXYSHIM_LOG=error");
	assert_line(l, "PROXYSHIM_PORTS=81");
	assert_line(l, "PROXYSHIM_MODE=optional");
	done(l);
	/* A good environment value hides a bad one in the file. */
	l = load("PROXYSHIM_CONFIG=" FIX "bad-value.conf", "PROXYSHIM_TIMEOUT_MS=5", NULL);
	assert_string_equal(l->c.file_error, "");
	assert_int_equal(l->c.timeout_ms, 5);
	done(l);
}

/* An unknown key: the suggestion, and servers refused (not the process stopped). */
static void test_file_unknown_key(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "typo.conf", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, FIX "typo.conf:2: unknown key PROXYSHIM_TRUSTD='1.2.3.4' "
					     "(did you mean PROXYSHIM_TRUSTED?)");
	assert_true(l->c.refuse_listen);
	assert_false(l->c.active);
	assert_string_equal(l->c.inactive_reason, "bad config file");
	assert_true(l->c.all_ports); /* no PROXYSHIM_PORTS: every TCP port refused */
	assert_line(l, "config_file=" FIX "typo.conf error=" FIX "typo.conf:2: unknown key "
		       "PROXYSHIM_TRUSTD='1.2.3.4' (did you mean PROXYSHIM_TRUSTED?)");
	assert_string_equal(strstr(l->text, "active="), strstr(l->text, "active=no reason=bad config file\n"));
	done(l);
	/* PROXYSHIM_CONFIG names the file; it is not one of its keys. */
	l = load("PROXYSHIM_CONFIG=" FIX "config-key.conf", NULL);
	assert_string_equal(l->c.file_error, FIX "config-key.conf:1: unknown key "
					     "PROXYSHIM_CONFIG='/etc/other.conf' (did you mean PROXYSHIM_CONFIG?)");
	done(l);
}

/* PROXYSHIM_PORTS below a typo still bounds what the bad file refuses. */
static void test_file_refuse_scope(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "typo-then-ports.conf", NULL);
	(void)state;
	assert_true(l->c.refuse_listen);
	assert_string_equal(l->c.file_error, FIX "typo-then-ports.conf:1: unknown key "
					     "PROXYSHIM_TRUSTD='1.2.3.4' (did you mean PROXYSHIM_TRUSTED?)");
	assert_false(l->c.all_ports);
	assert_true(shim_port_covered(&l->c, 80));
	assert_false(shim_port_covered(&l->c, 81));
	assert_line(l, "PROXYSHIM_PORTS=80");
	done(l);
	/* The environment's PROXYSHIM_PORTS bounds it too. */
	l = load("PROXYSHIM_CONFIG=" FIX "typo.conf", "PROXYSHIM_PORTS=8080", NULL);
	assert_true(l->c.refuse_listen);
	assert_line(l, "PROXYSHIM_PORTS=8080");
	done(l);
	/* A bad PROXYSHIM_PORTS in the file: every TCP port. */
	l = load("PROXYSHIM_CONFIG=" FIX "bad-ports.conf", NULL);
	assert_true(l->c.refuse_listen);
	assert_true(l->c.all_ports);
	assert_string_equal(l->c.file_error, FIX "bad-ports.conf:2: invalid PROXYSHIM_PORTS='0': expected ports "
					     "1-65535 and ranges LO-HI, separated by commas or spaces");
	done(l);
}

/* A malformed line; the first error is the one said. */
static void test_file_malformed(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "malformed.conf", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, FIX "malformed.conf:2: expected KEY=VALUE, not 'garbage'");
	assert_true(l->c.refuse_listen);
	assert_false(l->c.active);
	done(l);
}

/* A bad value in the file: said with its line, servers refused, the value not taken. */
static void test_file_bad_value(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "bad-value.conf", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, FIX "bad-value.conf:2: invalid PROXYSHIM_TIMEOUT_MS='0': "
					     "expected milliseconds, 1 to 600000");
	assert_true(l->c.refuse_listen);
	assert_false(l->c.active);
	assert_line(l, "PROXYSHIM_TIMEOUT_MS=1000");
	done(l);
}

static const char *tmpfile_with(char *path, size_t size, char fill, const char *tail)
{
	int fd;
	char *buf = malloc(size);
	assert_non_null(buf);
	memset(buf, fill, size);
	if (tail)
		memcpy(buf + size - strlen(tail), tail, strlen(tail));
	strcpy(path, "/tmp/test_settings.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	free(buf);
	return path;
}

/* 16 KiB is the most a file may hold. */
static void test_file_size(void **state)
{
	char path[64], entry[128];
	struct loaded *l;
	(void)state;
	tmpfile_with(path, SHIM_FILE_MAX, '#', "\nPROXYSHIM_LOG=info\n");
	snprintf(entry, sizeof(entry), "PROXYSHIM_CONFIG=%s", path);
	l = load(entry, NULL);
	assert_string_equal(l->c.file_error, "");
	assert_int_equal(l->c.log_level, SHIM_LOG_INFO);
	done(l);
	unlink(path);
	tmpfile_with(path, SHIM_FILE_MAX + 1, '#', NULL);
	snprintf(entry, sizeof(entry), "PROXYSHIM_CONFIG=%s", path);
	l = load(entry, NULL);
	assert_true(l->c.refuse_listen);
	assert_true(strstr(l->c.file_error, ": file larger than 16 KiB") != NULL);
	assert_true(strncmp(l->c.file_error, path, strlen(path)) == 0);
	done(l);
	unlink(path);
}

/* At most 32 lines with a key. */
static void test_file_too_many_lines(void **state)
{
	char path[64], entry[128], text[33 * 20 + 1];
	size_t n = 0;
	int fd;
	struct loaded *l;
	(void)state;
	for (unsigned i = 0; i < 33; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "PROXYSHIM_LOG=warn\n");
	strcpy(path, "/tmp/test_settings.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
	snprintf(entry, sizeof(entry), "PROXYSHIM_CONFIG=%s", path);
	l = load(entry, NULL);
	assert_true(l->c.refuse_listen);
	snprintf(text, sizeof(text), "%s:33: too many lines", path);
	assert_string_equal(l->c.file_error, text);
	done(l);
	unlink(path);
}

/* A named file that cannot be read refuses servers; the default file may be absent. */
static void test_file_missing(void **state)
{
	struct loaded *l = load("PROXYSHIM_CONFIG=" FIX "absent.conf", "PROXYSHIM_TRUSTED=*", NULL);
	(void)state;
	assert_int_equal(l->rc, 0);
	assert_string_equal(l->c.file_error, FIX "absent.conf: No such file or directory");
	assert_true(l->c.refuse_listen);
	assert_false(l->c.active);
	done(l);
	l = load("PROXYSHIM_TRUSTED=*", NULL); /* default file (ABSENT) */
	assert_string_equal(l->c.file_error, "");
	assert_true(l->c.active);
	assert_line(l, "config_file=none");
	done(l);
	l = load("PROXYSHIM_CONFIG=" FIX "empty.conf", "PROXYSHIM_TRUSTED=*", NULL);
	assert_string_equal(l->c.file_error, "");
	assert_true(l->c.active);
	assert_line(l, "config_file=none"); /* no key read from it */
	done(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_rows),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_format_truncates),
		cmocka_unit_test(test_choices),
		cmocka_unit_test(test_choice_fields),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_trusted_valid),
		cmocka_unit_test(test_trusted_long_list),
		cmocka_unit_test(test_trusted_invalid),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_stats_path),
		cmocka_unit_test(test_unknown_names),
		cmocka_unit_test(test_env_first_wins),
		cmocka_unit_test(test_secure_execution),
		cmocka_unit_test(test_file_good),
		cmocka_unit_test(test_file_crlf),
		cmocka_unit_test(test_file_env_wins),
		cmocka_unit_test(test_file_unknown_key),
		cmocka_unit_test(test_file_refuse_scope),
		cmocka_unit_test(test_file_malformed),
		cmocka_unit_test(test_file_bad_value),
		cmocka_unit_test(test_file_size),
		cmocka_unit_test(test_file_too_many_lines),
		cmocka_unit_test(test_file_missing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
