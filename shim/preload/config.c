/* The configuration: PROXYSHIM_* environment variables and the configuration file, read once,
 * validated, then frozen. A bad value in the environment stops the process before main() with
 * one line naming the variable; a bad file refuses listen() instead (fail() below). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

/* Settings from a file: /etc/proxyshim.conf, or the file PROXYSHIM_CONFIG names. Same keys
 * as the environment, KEY=VALUE a line, # comments; the environment wins. */
#define FILE_MAX 16384
#define FILE_KEYS 32
/* The file's text, which the keys point into: on the heap, and only when there is a file, so
 * that the 16 KiB do not sit between the page the loader has already written and the
 * settings every process reads at start (each further page is a fault at every exec). */
static char *g_file;
static const char *g_file_path;
static struct {
	const char *key, *value;
	unsigned line;
} g_keys[FILE_KEYS];
static unsigned g_nkeys;

static const char *const known_keys[] = {
	"PROXYSHIM_TRUSTED", "PROXYSHIM_VERSION", "PROXYSHIM_MODE", "PROXYSHIM_PORTS",
	"PROXYSHIM_TIMEOUT_MS", "PROXYSHIM_MAX_PARKED", "PROXYSHIM_DEFER_ACCEPT", "PROXYSHIM_LOG",
	"PROXYSHIM_CONSUME", "PROXYSHIM_LOCAL_ADDR", "PROXYSHIM_KEEP_TLVS", "PROXYSHIM_TLV_MAX",
	"PROXYSHIM_STATS", "PROXYSHIM_UNTRUSTED",
};

/* A bad value. From the environment: one line and exit(1) before main(), as promised. From
 * the file, which /etc/ld.so.preload makes every process on the machine read: exiting would
 * take shells and sudo down with it, so instead the shim refuses listen() in this process
 * (servers fail to start, with this message) and leaves everything else alone. */
static bool fail(const char *var, const char *value, const char *why)
{
	struct shim_config *c = &g_cfg;
	for (unsigned i = 0; i < g_nkeys; i++) {
		if (g_keys[i].value == value) {
			snprintf(c->file_error, sizeof(c->file_error), "%s:%u: invalid %s='%s': %s",
				 g_file_path, g_keys[i].line, var, value, why);
			c->active = false;
			c->refuse_listen = true;
			c->inactive_reason = "bad config file";
			return false;
		}
	}
	fprintf(stderr, "proxyshim: invalid %s=\"%s\": %s\n", var, value, why);
	fflush(stderr);
	_exit(1);
}

static bool file_error(unsigned line, const char *why)
{
	struct shim_config *c = &g_cfg;
	if (c->file_error[0])
		return false; /* the first error is the one said */
	if (line)
		snprintf(c->file_error, sizeof(c->file_error), "%s:%u: %s", g_file_path, line, why);
	else
		snprintf(c->file_error, sizeof(c->file_error), "%s: %s", g_file_path, why);
	c->inactive_reason = "bad config file";
	c->active = false;
	c->refuse_listen = true;
	return false;
}

static char *trim(char *a, char *b)
{
	while (a < b && (*a == ' ' || *a == '\t'))
		a++;
	while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
		b--;
	*b = '\0';
	return a;
}

/* The environment's settings, gathered in one pass: looking each up with getenv() would walk
 * the whole environment (often a hundred entries in a container) once per setting, in every
 * process that starts. Only known names are kept; the first entry of a name wins, as with
 * getenv(). */
#define ENV_PREFIX "PROXYSHIM_"
#define NKNOWN (sizeof(known_keys) / sizeof(known_keys[0]))
static const char *g_env[NKNOWN + 1]; /* known_keys' values, then PROXYSHIM_CONFIG's */

static const char *g_env_unknown; /* the first PROXYSHIM_* entry that names no setting */

/* PROXYSHIM_* names that are not settings: the exec handoff's, and those of the project's own
 * tools (the wrapper's --check, the image's copy entrypoint), which reach programs' environments. */
static const char *const reserved_names[] = {
	"PROXYSHIM_HANDOFF", "PROXYSHIM_CHECK_REEXEC", "PROXYSHIM_SRC", "PROXYSHIM_DEST",
};

static bool name_is(const char *name, size_t n, const char *known)
{
	return strncmp(known, name, n) == 0 && known[n] == '\0';
}

static int env_index(const char *name, size_t n)
{
	for (unsigned i = 0; i < NKNOWN; i++)
		if (name_is(name, n, known_keys[i]))
			return (int)i;
	if (name_is(name, n, "PROXYSHIM_CONFIG"))
		return NKNOWN;
	for (unsigned i = 0; i < sizeof(reserved_names) / sizeof(reserved_names[0]); i++)
		if (name_is(name, n, reserved_names[i]))
			return -1;
	return -2;
}

static void env_gather(void)
{
	for (char **e = environ; e && *e; e++) {
		const char *eq;
		int i;
		if (strncmp(*e, ENV_PREFIX, sizeof(ENV_PREFIX) - 1) != 0 || (eq = strchr(*e, '=')) == NULL)
			continue;
		i = env_index(*e, (size_t)(eq - *e));
		if (i >= 0 && g_env[i] == NULL)
			g_env[i] = eq + 1;
		else if (i == -2 && g_env_unknown == NULL)
			g_env_unknown = *e;
	}
}

/* Edit distance of two short names, capped: a typo's suggestion needs no more. */
static unsigned distance(const char *a, const char *b)
{
	unsigned row[48], n = (unsigned)strlen(b), m = (unsigned)strlen(a);
	if (n >= 48 || m >= 48)
		return 99;
	for (unsigned j = 0; j <= n; j++)
		row[j] = j;
	for (unsigned i = 1; i <= m; i++) {
		unsigned diag = row[0], best;
		row[0] = i;
		for (unsigned j = 1; j <= n; j++) {
			unsigned up = row[j];
			best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[n];
}

/* The setting an unknown name was probably meant to be, or NULL. */
static const char *suggest(const char *name)
{
	const char *best = NULL;
	unsigned best_d = 4; /* at most three edits away: PROXYSHIM_TIMEOUT for _TIMEOUT_MS */
	for (unsigned i = 0; i <= NKNOWN; i++) {
		const char *k = i < NKNOWN ? known_keys[i] : "PROXYSHIM_CONFIG";
		unsigned d = distance(name, k);
		if (d < best_d) {
			best_d = d;
			best = k;
		}
	}
	return best;
}

/* An unknown PROXYSHIM_* variable is a typo until proven otherwise: a misspelt
 * PROXYSHIM_TRUSTED would leave the server unprotected or inert without a word. */
static void env_refuse_unknown(void)
{
	char name[64];
	const char *eq = strchr(g_env_unknown, '='), *hint;
	size_t n = (size_t)(eq - g_env_unknown);
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, g_env_unknown, n);
	name[n] = '\0';
	hint = suggest(name);
	fprintf(stderr, "proxyshim: invalid %s=\"%s\": not a proxyshim variable%s%s%s\n", name, eq + 1,
		hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
	fflush(stderr);
	_exit(1);
}

static const char *env_value(const char *name)
{
	int i = env_index(name, strlen(name));
	return i >= 0 ? g_env[i] : NULL;
}

static bool read_file(void)
{
	const char *path = env_value("PROXYSHIM_CONFIG");
	ssize_t n, got = 0;
	unsigned line = 0;
	int fd;
	char *p;

	g_file_path = path ? path : "/etc/proxyshim.conf";
	fd = open(g_file_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* A named file that cannot be read refuses servers like a bad one (see fail()):
		 * the variable may be set machine-wide too. */
		if (path)
			return file_error(0, strerror(errno));
		return true; /* no file: the environment alone */
	}
	shim_resolve(); /* reading goes through real_read: resolve now, maybe before the constructor */
	if ((g_file = malloc(FILE_MAX + 1)) == NULL) {
		real_close(fd);
		return file_error(0, "out of memory");
	}
	while (got < FILE_MAX && (n = real_read(fd, g_file + got, (size_t)(FILE_MAX - got))) > 0)
		got += n;
	n = real_read(fd, g_file + got, 1);
	real_close(fd);
	if (got == FILE_MAX && n > 0)
		return file_error(0, "file larger than 16 KiB");
	g_file[got] = '\0';
	for (p = g_file; p < g_file + got;) {
		char *eol = memchr(p, '\n', (size_t)(g_file + got - p)), *eq, *k, *v;
		if (!eol)
			eol = g_file + got;
		line++;
		*eol = '\0';
		k = trim(p, eol);
		p = eol + 1;
		if (*k == '\0' || *k == '#')
			continue;
		if (!(eq = strchr(k, '='))) {
			char why[160];
			snprintf(why, sizeof(why), "expected KEY=VALUE, not '%.100s'", k);
			file_error(line, why);
			continue;
		}
		v = trim(eq + 1, eq + strlen(eq));
		k = trim(k, eq);
		if (strlen(v) >= 2 && v[0] == '"' && v[strlen(v) - 1] == '"') {
			v[strlen(v) - 1] = '\0';
			v++;
		}
		unsigned i;
		for (i = 0; i < sizeof(known_keys) / sizeof(known_keys[0]); i++)
			if (strcmp(k, known_keys[i]) == 0)
				break;
		if (i == sizeof(known_keys) / sizeof(known_keys[0])) {
			char why[240];
			snprintf(why, sizeof(why), "unknown key %.60s='%.100s'%s%s%s", k, v,
				 suggest(k) ? " (did you mean " : "", suggest(k) ? suggest(k) : "",
				 suggest(k) ? "?)" : "");
			file_error(line, why);
			continue;
		}
		if (g_nkeys == FILE_KEYS) {
			file_error(line, "too many lines");
			break;
		}
		g_keys[g_nkeys].key = k;
		g_keys[g_nkeys].value = v;
		g_keys[g_nkeys].line = line;
		g_nkeys++;
	}
	/* Every well-formed line was kept, even after an error: PROXYSHIM_PORTS below a typo
	 * still bounds what the bad file refuses (refuse_scope). */
	return g_cfg.file_error[0] == '\0';
}

/* One setting's value: the environment first, then the file. */
static const char *setting(const char *name)
{
	const char *v = env_value(name);
	if (v)
		return v;
	for (unsigned i = g_nkeys; i-- > 0;)
		if (strcmp(g_keys[i].key, name) == 0)
			return g_keys[i].value;
	return NULL;
}

/* A value that must be one of words: its index, or -1 after fail(). */
static int choice(const char *name, const char *const *words, int n, const char *why, int dflt)
{
	const char *v = setting(name);
	if (!v)
		return dflt;
	for (int i = 0; i < n; i++)
		if (strcmp(v, words[i]) == 0)
			return i;
	fail(name, v, why);
	return -1;
}

static bool number(const char *name, unsigned lo, unsigned hi, unsigned *out, const char *why)
{
	const char *v = setting(name);
	if (v && (parse_uint(v, strlen(v), hi, out) < 0 || *out < lo))
		return fail(name, v, why);
	return true;
}

static const char *const bools[] = {"0", "1"};

static void load(void)
{
	static const char *const logs[] = {"off", "error", "warn", "info", "debug"};
	static const char *const versions[] = {"v1", "v2", "any"};
	static const unsigned version_bits[] = {PP_V1, PP_V2, PP_ANY};
	static const char *const modes[] = {"strict", "optional"};
	static const char *const consumes[] = {"accept", "lazy"};
	static const char *const locals[] = {"real", "header"};
	struct shim_config *c = &g_cfg;
	const char *v;
	int i;

	c->versions = PP_ANY;
	c->timeout_ms = 1000;
	c->max_parked = 1024;
	c->tlv_max = 4096;
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
	env_gather();
	if (g_env_unknown)
		env_refuse_unknown();
	if (!read_file())
		return;
	if ((i = choice("PROXYSHIM_LOG", logs, 5, "expected off, error, warn, info or debug", SHIM_LOG_WARN)) < 0)
		return;
	c->log_level = (uint8_t)i;
	if ((i = choice("PROXYSHIM_VERSION", versions, 3, "expected v1, v2 or any", 2)) < 0)
		return;
	c->versions = version_bits[i];
	if ((i = choice("PROXYSHIM_MODE", modes, 2, "expected strict or optional", SHIM_MODE_STRICT)) < 0)
		return;
	c->mode = (uint8_t)i;
	if ((i = choice("PROXYSHIM_CONSUME", consumes, 2, "expected accept or lazy", 0)) < 0)
		return;
	c->lazy = i == 1;
	if ((i = choice("PROXYSHIM_LOCAL_ADDR", locals, 2, "expected real or header", 0)) < 0)
		return;
	c->local_from_header = i == 1;
	if ((i = choice("PROXYSHIM_DEFER_ACCEPT", bools, 2, "expected 1 or 0", 1)) < 0)
		return;
	c->defer_accept = i == 1;
	if ((i = choice("PROXYSHIM_KEEP_TLVS", bools, 2, "expected 1 or 0", 0)) < 0)
		return;
	c->keep_tlvs = i == 1;
	if ((i = choice("PROXYSHIM_UNTRUSTED", (const char *const[]){"pass", "reject"}, 2, "expected pass or reject", 0)) < 0)
		return;
	c->untrusted_reject = i == 1;
	if ((v = setting("PROXYSHIM_PORTS")) != NULL) {
		if (shim_parse_ports(v, c->ports) < 0) {
			fail("PROXYSHIM_PORTS", v, "expected ports 1-65535 and ranges LO-HI, separated by commas or spaces");
			return;
		}
		c->all_ports = false;
	}
	if (!number("PROXYSHIM_TIMEOUT_MS", 1, TIMEOUT_MAX_MS, &c->timeout_ms, "expected milliseconds, 1 to 600000") ||
	    !number("PROXYSHIM_MAX_PARKED", 1, 1000000, &c->max_parked, "expected a count, 1 to 1000000") ||
	    !number("PROXYSHIM_TLV_MAX", 0, 65535, &c->tlv_max, "expected bytes, 0 to 65535"))
		return;
	if ((v = setting("PROXYSHIM_STATS")) != NULL) {
		if (v[0] != '/' || strlen(v) >= sizeof(c->stats_path) - 16) {
			fail("PROXYSHIM_STATS", v, "expected an absolute file path");
			return;
		}
		strcpy(c->stats_path, v);
	}
	if ((v = setting("PROXYSHIM_TRUSTED")) != NULL) {
		static const char why[] = "expected IPv4/IPv6 addresses or CIDRs (or *), separated by commas or spaces";
		unsigned n = 0;
		bool any;
		if (shim_parse_trusted(v, NULL, 0, &n, &any) < 0) {
			fail("PROXYSHIM_TRUSTED", v, why);
			return;
		}
		/* A short list needs no malloc(): in a program that never allocates, the first one
		 * costs system calls at every start. */
		static struct shim_cidr small[16];
		c->cidrs = n <= 16 ? small : calloc(n, sizeof(*c->cidrs));
		if (n && !c->cidrs) {
			fail("PROXYSHIM_TRUSTED", v, "out of memory");
			return;
		}
		shim_parse_trusted(v, c->cidrs, n, &c->ncidrs, &any);
		c->trust_any = any;
		c->active = true;
	} else {
		c->inactive_reason = "PROXYSHIM_TRUSTED is not set";
	}
}

/* A bad file refuses only what it was meant to cover: TCP listens on its ports when its
 * PROXYSHIM_PORTS (or the environment's) parses, every TCP port when it does not. UNIX sockets
 * and everything else a machine runs (tmux, ssh-agent, dbus) keep working (listen.c). */
static void refuse_scope(void)
{
	struct shim_config *c = &g_cfg;
	const char *v = setting("PROXYSHIM_PORTS");
	memset(c->ports, 0, sizeof(c->ports));
	c->all_ports = !v || shim_parse_ports(v, c->ports) < 0;
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
		if (g_cfg.refuse_listen)
			refuse_scope();
		atomic_store_explicit(&g_state, 2, memory_order_release);
	} else {
		while (atomic_load_explicit(&g_state, memory_order_acquire) != 2) {
			struct timespec pause = {0, 100000};
			nanosleep(&pause, NULL);
		}
	}
	return &g_cfg;
}

/* The one ordered start: settings, then every real symbol (published together, so a hook in
 * another thread never finds one missing; hooks called before this, from other libraries'
 * constructors, resolve them themselves), then this process's identity page, then the
 * connections an exec handed over. */
__attribute__((constructor)) static void shim_init(void)
{
	shim_config();
	shim_resolve();
	shim_proc_check(); /* this process's page, before any child can be made */
	shim_handoff_adopt();
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
		     "PROXYSHIM_LOG=%s\n"
		     "PROXYSHIM_CONSUME=%s\n"
		     "PROXYSHIM_LOCAL_ADDR=%s\n"
		     "PROXYSHIM_KEEP_TLVS=%u\n"
		     "PROXYSHIM_TLV_MAX=%u\n"
		     "PROXYSHIM_STATS=%s\n"
		     "PROXYSHIM_UNTRUSTED=%s\n"
		     "config_file=%s%s%s\n",
		     c->active ? "yes" : "no", c->active ? "" : " reason=",
		     c->active ? "" : (c->inactive_reason ? c->inactive_reason : "?"), trusted,
		     versions[c->versions & 3], modes[c->mode & 1], ports,
		     c->timeout_ms, c->max_parked, c->defer_accept ? 1u : 0u,
		     shim_log_level_name(c->log_level), c->lazy ? "lazy" : "accept",
		     c->local_from_header ? "header" : "real", c->keep_tlvs ? 1u : 0u, c->tlv_max,
		     c->stats_path, c->untrusted_reject ? "reject" : "pass", g_nkeys || c->file_error[0] ? g_file_path : "none",
		     c->file_error[0] ? " error=" : "", c->file_error);
	return n;
}
