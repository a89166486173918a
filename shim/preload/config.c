/* The configuration: PROXYSHIM_* environment variables, read once, validated, then frozen.
 * A bad value stops the process before main() with one line naming the variable. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static struct shim_config g_cfg;
static _Atomic int g_state; /* 0 unread, 1 being read, 2 frozen */

#define TIMEOUT_MAX_MS 600000u

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t';
}

/* Digits only, no sign, no leading zeros beyond "0", at most max. */
static int parse_uint(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned v = 0;
	if (n == 0 || (n > 1 && s[0] == '0'))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
		if (v > max)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_cidr(const char *tok, size_t n, struct shim_cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = memchr(tok, '/', n);
	size_t alen = slash ? (size_t)(slash - tok) : n;
	unsigned prefix, max;

	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return -EINVAL;
	memcpy(buf, tok, alen);
	buf[alen] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	prefix = max;
	if (slash && parse_uint(slash + 1, n - alen - 1, max, &prefix) < 0)
		return -EINVAL;
	/* ::ffff:a.b.c.d/96+n is the IPv4 network a.b.c.d/n: one rule for both ways a peer
	 * can show up (plain IPv4, or mapped on a dual-stack listener). */
	if (c->family == AF_INET6 && prefix >= 96 &&
	    memcmp(c->addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
		memmove(c->addr, c->addr + 12, 4);
		memset(c->addr + 4, 0, 12);
		c->family = AF_INET;
		prefix -= 96;
		max = 32;
	}
	c->prefix = (uint8_t)prefix;
	/* Host bits are cleared so matching is a plain masked compare. */
	for (unsigned bit = prefix; bit < max; bit++)
		c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	return 0;
}

int shim_parse_trusted(const char *s, struct shim_cidr *out, unsigned cap, unsigned *n, bool *any)
{
	unsigned count = 0;
	*any = false;
	while (*s) {
		const char *tok;
		size_t len;
		while (is_sep(*s))
			s++;
		if (!*s)
			break;
		tok = s;
		while (*s && !is_sep(*s))
			s++;
		len = (size_t)(s - tok);
		if (len == 1 && tok[0] == '*') {
			*any = true;
			continue;
		}
		struct shim_cidr c;
		if (parse_cidr(tok, len, &c) < 0)
			return -EINVAL;
		if (count < cap)
			out[count] = c;
		count++;
	}
	*n = count;
	return (count == 0 && !*any) ? -EINVAL : 0;
}

int shim_parse_ports(const char *s, uint64_t *bits)
{
	bool any = false;
	while (*s) {
		const char *tok, *dash;
		size_t len;
		unsigned lo, hi;
		while (is_sep(*s))
			s++;
		if (!*s)
			break;
		tok = s;
		while (*s && !is_sep(*s))
			s++;
		len = (size_t)(s - tok);
		dash = memchr(tok, '-', len);
		if (dash) {
			if (parse_uint(tok, (size_t)(dash - tok), 65535, &lo) < 0 ||
			    parse_uint(dash + 1, len - (size_t)(dash - tok) - 1, 65535, &hi) < 0)
				return -EINVAL;
		} else {
			if (parse_uint(tok, len, 65535, &lo) < 0)
				return -EINVAL;
			hi = lo;
		}
		if (lo == 0 || hi < lo)
			return -EINVAL;
		for (unsigned p = lo; p <= hi; p++)
			bits[p >> 6] |= 1ull << (p & 63);
		any = true;
	}
	return any ? 0 : -EINVAL;
}

static void config_fail(const char *var, const char *value, const char *why)
{
	/* One line, then out before main(): a security control must not run half configured. */
	fprintf(stderr, "proxyshim: invalid %s=\"%s\": %s\n", var, value, why);
	fflush(stderr);
	_exit(1);
}

/* One setting's value: the environment (a config file joins here later). */
static const char *setting(const char *name)
{
	return getenv(name);
}

static int match_word(const char *v, const char *const *words, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(v, words[i]) == 0)
			return i;
	return -1;
}

static void load(void)
{
	struct shim_config *c = &g_cfg;
	const char *v;
	int i;

	c->versions = PP_ANY;
	c->timeout_ms = 1000;
	c->max_parked = 1024;
	c->defer_accept = true;
	c->mode = SHIM_MODE_STRICT;
	c->log_level = SHIM_LOG_WARN;
	c->all_ports = true;

	/* Set-uid and similar: the environment is not the user's to trust. Stay inert, silently. */
	if (getauxval(AT_SECURE)) {
		c->log_level = SHIM_LOG_OFF;
		c->inactive_reason = "secure-execution";
		return;
	}

	if ((v = setting("PROXYSHIM_LOG")) != NULL) {
		static const char *const w[] = {"off", "error", "warn", "info", "debug"};
		if ((i = match_word(v, w, 5)) < 0)
			config_fail("PROXYSHIM_LOG", v, "expected off, error, warn, info or debug");
		c->log_level = (uint8_t)i;
	}
	if ((v = setting("PROXYSHIM_VERSION")) != NULL) {
		static const char *const w[] = {"v1", "v2", "any"};
		static const unsigned m[] = {PP_V1, PP_V2, PP_ANY};
		if ((i = match_word(v, w, 3)) < 0)
			config_fail("PROXYSHIM_VERSION", v, "expected v1, v2 or any");
		c->versions = m[i];
	}
	if ((v = setting("PROXYSHIM_MODE")) != NULL) {
		static const char *const w[] = {"strict", "optional"};
		if ((i = match_word(v, w, 2)) < 0)
			config_fail("PROXYSHIM_MODE", v, "expected strict or optional");
		c->mode = (uint8_t)i;
	}
	if ((v = setting("PROXYSHIM_PORTS")) != NULL) {
		if (shim_parse_ports(v, c->ports) < 0)
			config_fail("PROXYSHIM_PORTS", v,
				    "expected ports 1-65535 and ranges LO-HI, separated by commas or spaces");
		c->all_ports = false;
	}
	if ((v = setting("PROXYSHIM_TIMEOUT_MS")) != NULL) {
		if (parse_uint(v, strlen(v), TIMEOUT_MAX_MS, &c->timeout_ms) < 0 || c->timeout_ms == 0)
			config_fail("PROXYSHIM_TIMEOUT_MS", v, "expected milliseconds, 1 to 600000");
	}
	if ((v = setting("PROXYSHIM_MAX_PARKED")) != NULL) {
		if (parse_uint(v, strlen(v), 1000000, &c->max_parked) < 0 || c->max_parked == 0)
			config_fail("PROXYSHIM_MAX_PARKED", v, "expected a count, 1 to 1000000");
	}
	if ((v = setting("PROXYSHIM_DEFER_ACCEPT")) != NULL) {
		static const char *const w[] = {"0", "1"};
		if ((i = match_word(v, w, 2)) < 0)
			config_fail("PROXYSHIM_DEFER_ACCEPT", v, "expected 1 or 0");
		c->defer_accept = i == 1;
	}
	if ((v = setting("PROXYSHIM_TRUSTED")) != NULL) {
		unsigned n = 0;
		bool any;
		if (shim_parse_trusted(v, NULL, 0, &n, &any) < 0)
			config_fail("PROXYSHIM_TRUSTED", v,
				    "expected IPv4/IPv6 addresses or CIDRs (or *), separated by commas or spaces");
		c->cidrs = n ? calloc(n, sizeof(*c->cidrs)) : NULL;
		if (n && !c->cidrs)
			config_fail("PROXYSHIM_TRUSTED", v, "out of memory");
		if (shim_parse_trusted(v, c->cidrs, n, &c->ncidrs, &any) < 0)
			config_fail("PROXYSHIM_TRUSTED", v,
				    "expected IPv4/IPv6 addresses or CIDRs (or *), separated by commas or spaces");
		c->trust_any = any;
		c->active = true;
	} else {
		c->inactive_reason = "PROXYSHIM_TRUSTED is not set";
	}
}

/* Once, without pthread_once (which would tie the library to glibc 2.34 and later). */
const struct shim_config *shim_config(void)
{
	int st = atomic_load_explicit(&g_state, memory_order_acquire);
	if (SHIM_LIKELY(st == 2))
		return &g_cfg;
	st = 0;
	if (atomic_compare_exchange_strong(&g_state, &st, 1)) {
		load();
		atomic_store_explicit(&g_state, 2, memory_order_release);
	} else {
		while (atomic_load_explicit(&g_state, memory_order_acquire) != 2) {
			struct timespec pause = {0, 100000};
			nanosleep(&pause, NULL);
		}
	}
	return &g_cfg;
}

__attribute__((constructor)) static void shim_init(void)
{
	shim_resolve();
	shim_config();
	pthread_atfork(NULL, NULL, shim_park_atfork_child);
}

/* The effective settings as "NAME=value" lines, for `proxyshim --check` and debugging. */
SHIM_EXPORT int proxyshim_settings(char *buf, size_t cap)
{
	static const char *const modes[] = {"strict", "optional"};
	static const char *const versions[] = {"none", "v1", "v2", "any"};
	const struct shim_config *c = shim_config();
	char trusted[1024] = "", ports[1024] = "all";
	size_t used = 0, pused = 0;
	int n;

	if (!c->all_ports) {
		for (unsigned p = 1; p <= 65535 && pused < sizeof(ports) - 16; p++) {
			unsigned q = p;
			if (!shim_port_covered(c, (uint16_t)p))
				continue;
			while (q < 65535 && shim_port_covered(c, (uint16_t)(q + 1)))
				q++;
			pused += (size_t)snprintf(ports + pused, sizeof(ports) - pused, q > p ? "%s%u-%u" : "%s%u",
						  pused ? "," : "", p, q);
			p = q;
		}
	}

	if (c->trust_any)
		used += (size_t)snprintf(trusted, sizeof(trusted), "*");
	for (unsigned i = 0; i < c->ncidrs && used < sizeof(trusted); i++) {
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(c->cidrs[i].family, c->cidrs[i].addr, ip, sizeof(ip));
		used += (size_t)snprintf(trusted + used, sizeof(trusted) - used, "%s%s/%u",
					 used ? "," : "", ip, c->cidrs[i].prefix);
	}
	n = snprintf(buf, cap,
		     "active=%s%s%s\n"
		     "PROXYSHIM_TRUSTED=%s\n"
		     "PROXYSHIM_VERSION=%s\n"
		     "PROXYSHIM_MODE=%s\n"
		     "PROXYSHIM_PORTS=%s\n"
		     "PROXYSHIM_TIMEOUT_MS=%u\n"
		     "PROXYSHIM_MAX_PARKED=%u\n"
		     "PROXYSHIM_DEFER_ACCEPT=%u\n"
		     "PROXYSHIM_LOG=%s\n",
		     c->active ? "yes" : "no", c->active ? "" : " reason=",
		     c->active ? "" : (c->inactive_reason ? c->inactive_reason : "?"), trusted,
		     versions[c->versions & 3], modes[c->mode & 1], ports,
		     c->timeout_ms, c->max_parked, c->defer_accept ? 1u : 0u,
		     shim_log_level_name(c->log_level));
	return n;
}
