/* The settings: the environment's PROXYSHIM_* values and the configuration file's, checked
 * against the rows of settings_table.h. A bad value in the environment is returned to the
 * caller (the library then stops the process before main() with one line naming the
 * variable); a bad file only refuses listen() (see file_fail()). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxyshim_proto.h"
#include "settings.h"

const struct shim_setting shim_settings[SHIM_NSETTINGS] = SHIM_SETTINGS_ROWS;

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t';
}

/* The next word of a list separated by commas and blanks: false once there is none. */
static bool next_token(const char **s, const char **tok, size_t *len)
{
	while (is_sep(**s))
		(*s)++;
	if (!**s)
		return false;
	*tok = *s;
	while (**s && !is_sep(**s))
		(*s)++;
	*len = (size_t)(*s - *tok);
	return true;
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
	const char *tok;
	size_t len;
	while (next_token(&s, &tok, &len)) {
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
	const char *tok, *dash;
	size_t len;
	while (next_token(&s, &tok, &len)) {
		unsigned lo, hi;
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

/* ---- the rows' fields ---- */

/* A CHOICE or UINT setting's value (the word's index for a CHOICE) into its field. */
static void field_set(struct shim_config *c, unsigned id, unsigned v)
{
	switch (id) {
#define SET_CHOICE(ID, FIELD, BASE) \
	case SHIM_S_##ID:           \
		c->FIELD = (__typeof__(c->FIELD))(v + BASE); \
		break;
#define SET_UINT SET_CHOICE
#define SET_CIDRS(ID, FIELD, BASE)
#define SET_PORTS(ID, FIELD, BASE)
#define SET_PATH(ID, FIELD, BASE)
#define SET_FILE(ID, FIELD, BASE)
#define X(ID, KIND, WORDS, LO, HI, DEFAULT, WHY, RANK, FIELD, BASE, ...) SET_##KIND(ID, FIELD, BASE)
		SHIM_SETTINGS(X)
#undef X
	}
}

/* A CHOICE or UINT setting's value back from its field. */
static unsigned field_get(const struct shim_config *c, unsigned id)
{
	switch (id) {
#define GET_CHOICE(ID, FIELD, BASE) \
	case SHIM_S_##ID:           \
		return (unsigned)c->FIELD - (BASE);
#define GET_UINT GET_CHOICE
#define GET_CIDRS(ID, FIELD, BASE)
#define GET_PORTS(ID, FIELD, BASE)
#define GET_PATH(ID, FIELD, BASE)
#define GET_FILE(ID, FIELD, BASE)
#define X(ID, KIND, WORDS, LO, HI, DEFAULT, WHY, RANK, FIELD, BASE, ...) GET_##KIND(ID, FIELD, BASE)
		SHIM_SETTINGS(X)
#undef X
	}
	return 0;
}

/* A PATH setting's field and its size. */
static const char *field_path(const struct shim_config *c, unsigned id, size_t *cap)
{
	switch (id) {
#define PATH_CHOICE(ID, FIELD)
#define PATH_UINT(ID, FIELD)
#define PATH_CIDRS(ID, FIELD)
#define PATH_PORTS(ID, FIELD)
#define PATH_PATH(ID, FIELD)    \
	case SHIM_S_##ID:       \
		*cap = sizeof(c->FIELD); \
		return c->FIELD;
#define PATH_FILE(ID, FIELD)
#define X(ID, KIND, WORDS, LO, HI, DEFAULT, WHY, RANK, FIELD, ...) PATH_##KIND(ID, FIELD)
		SHIM_SETTINGS(X)
#undef X
	}
	*cap = 0;
	return NULL;
}

static int word_index(const struct shim_setting *t, const char *v)
{
	for (int i = 0; t->words[i]; i++)
		if (strcmp(v, t->words[i]) == 0)
			return i;
	return -1;
}

/* ---- the environment ---- */

#define ENV_PREFIX "PROXYSHIM_"

/* PROXYSHIM_* names that are not settings: the exec handoff's, and those of the project's own
 * tools (the wrapper's --check, the image's copy entrypoint), which reach programs' environments. */
static const char *const reserved_names[] = {
	"PROXYSHIM_HANDOFF", "PROXYSHIM_CHECK_REEXEC", "PROXYSHIM_SRC", "PROXYSHIM_DEST",
	"PROXYSHIM_LIBRARY",
};

static bool name_is(const char *name, size_t n, const char *known)
{
	return strncmp(known, name, n) == 0 && known[n] == '\0';
}

/* The setting named name (n bytes): its id, -1 for a reserved name, -2 for none. */
static int env_index(const char *name, size_t n)
{
	for (unsigned i = 0; i < SHIM_NSETTINGS; i++)
		if (name_is(name, n, shim_settings[i].name))
			return (int)i;
	for (unsigned i = 0; i < sizeof(reserved_names) / sizeof(reserved_names[0]); i++)
		if (name_is(name, n, reserved_names[i]))
			return -1;
	return -2;
}

/* The environment's settings, gathered in one pass: looking each up with getenv() would walk
 * the whole environment (often a hundred entries in a container) once per setting, in every
 * process that starts. Only known names are kept; the first entry of a name wins, as with
 * getenv(). */
static void env_gather(struct shim_settings_src *s, char *const *envp)
{
	for (char *const *e = envp; e && *e; e++) {
		const char *eq;
		int i;
		if (strncmp(*e, ENV_PREFIX, sizeof(ENV_PREFIX) - 1) != 0 || (eq = strchr(*e, '=')) == NULL)
			continue;
		i = env_index(*e, (size_t)(eq - *e));
		if (i >= 0 && s->env[i] == NULL)
			s->env[i] = eq + 1;
		else if (i == -2 && s->env_unknown == NULL)
			s->env_unknown = *e;
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
	for (unsigned i = 0; i < SHIM_NSETTINGS; i++) {
		unsigned d = distance(name, shim_settings[i].name);
		if (d < best_d) {
			best_d = d;
			best = shim_settings[i].name;
		}
	}
	return best;
}

/* An unknown PROXYSHIM_* variable is a typo until proven otherwise: a misspelt
 * PROXYSHIM_TRUSTED would leave the server unprotected or inert without a word. */
static int env_refuse_unknown(struct shim_settings_src *s)
{
	const char *eq = strchr(s->env_unknown, '='), *hint;
	size_t n = (size_t)(eq - s->env_unknown);
	if (n >= sizeof(s->err.name))
		n = sizeof(s->err.name) - 1;
	memcpy(s->err.name, s->env_unknown, n);
	s->err.name[n] = '\0';
	s->err.value = eq + 1;
	hint = suggest(s->err.name);
	snprintf(s->err.why, sizeof(s->err.why), "not a proxyshim variable%s%s%s",
		 hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
	return -EINVAL;
}

/* ---- the file ---- */

/* The file's first error is the one said; servers are refused (see file_fail()). */
static bool file_error(struct shim_config *c, const struct shim_settings_src *s, unsigned line,
		       const char *why)
{
	if (c->file_error[0])
		return false;
	if (line)
		snprintf(c->file_error, sizeof(c->file_error), "%s:%u: %s", s->file_path, line, why);
	else
		snprintf(c->file_error, sizeof(c->file_error), "%s: %s", s->file_path, why);
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

/* Settings from a file: /etc/proxyshim.conf, or the file PROXYSHIM_CONFIG names. Same keys
 * as the environment, KEY=VALUE a line, # comments; the environment wins. The text is on the
 * heap, and only when there is a file, so that the 16 KiB do not sit between the page the
 * loader has already written and the settings every process reads at start (each further page
 * is a fault at every exec). */
static bool read_file(struct shim_config *c, struct shim_settings_src *s, const struct shim_settings_io *io)
{
	const char *path = s->env[SHIM_S_CONFIG];
	ssize_t n, got = 0;
	unsigned line = 0;
	int fd;
	char *p;

	s->file_path = path ? path : io->default_file;
	fd = open(s->file_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* A named file that cannot be read refuses servers like a bad one: the variable
		 * may be set machine-wide too. */
		if (path)
			return file_error(c, s, 0, strerror(errno));
		return true; /* no file: the environment alone */
	}
	if ((s->file = malloc(SHIM_FILE_MAX + 1)) == NULL) {
		io->close(fd);
		return file_error(c, s, 0, "out of memory");
	}
	while (got < SHIM_FILE_MAX && (n = io->read(fd, s->file + got, (size_t)(SHIM_FILE_MAX - got))) > 0)
		got += n;
	n = io->read(fd, s->file + got, 1);
	io->close(fd);
	if (got == SHIM_FILE_MAX && n > 0)
		return file_error(c, s, 0, "file larger than 16 KiB");
	s->file[got] = '\0';
	for (p = s->file; p < s->file + got;) {
		char *eol = memchr(p, '\n', (size_t)(s->file + got - p)), *eq, *k, *v;
		unsigned i;
		if (!eol)
			eol = s->file + got;
		line++;
		*eol = '\0';
		k = trim(p, eol);
		p = eol + 1;
		if (*k == '\0' || *k == '#')
			continue;
		if (!(eq = strchr(k, '='))) {
			char why[160];
			snprintf(why, sizeof(why), "expected KEY=VALUE, not '%.100s'", k);
			file_error(c, s, line, why);
			continue;
		}
		v = trim(eq + 1, eq + strlen(eq));
		k = trim(k, eq);
		if (strlen(v) >= 2 && v[0] == '"' && v[strlen(v) - 1] == '"') {
			v[strlen(v) - 1] = '\0';
			v++;
		}
		for (i = 0; i < SHIM_NSETTINGS; i++)
			if (shim_settings[i].kind != SHIM_SK_FILE && strcmp(k, shim_settings[i].name) == 0)
				break;
		if (i == SHIM_NSETTINGS) {
			char why[240];
			const char *hint = suggest(k);
			snprintf(why, sizeof(why), "unknown key %.60s='%.100s'%s%s%s", k, v,
				 hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
			file_error(c, s, line, why);
			continue;
		}
		if (s->nkeys == SHIM_FILE_KEYS) {
			file_error(c, s, line, "too many lines");
			break;
		}
		s->keys[s->nkeys].value = v;
		s->keys[s->nkeys].id = i;
		s->keys[s->nkeys].line = line;
		s->nkeys++;
	}
	/* Every well-formed line was kept, even after an error: PROXYSHIM_PORTS below a typo
	 * still bounds what the bad file refuses (refuse_scope()). */
	return c->file_error[0] == '\0';
}

/* ---- one setting ---- */

/* A setting's value: the environment first, then the file's last line for it (*line its
 * number, 0 for the environment); NULL when unset. */
static const char *setting(const struct shim_settings_src *s, unsigned id, unsigned *line)
{
	*line = 0;
	if (s->env[id])
		return s->env[id];
	for (unsigned i = s->nkeys; i-- > 0;)
		if (s->keys[i].id == id) {
			*line = s->keys[i].line;
			return s->keys[i].value;
		}
	return NULL;
}

/* A bad value. From the environment: the caller says it and exits before main(), as
 * promised. From the file, which /etc/ld.so.preload makes every process on the machine read:
 * exiting would take shells and sudo down with it, so instead listen() is refused in this
 * process (servers fail to start, with this message) and everything else is left alone. */
static int fail(struct shim_config *c, struct shim_settings_src *s, unsigned id, const char *value,
		unsigned line, const char *why)
{
	const char *name = shim_settings[id].name;
	if (line) {
		snprintf(c->file_error, sizeof(c->file_error), "%s:%u: invalid %s='%s': %s",
			 s->file_path, line, name, value, why);
		c->active = false;
		c->refuse_listen = true;
		c->inactive_reason = "bad config file";
		return -EINVAL;
	}
	snprintf(s->err.name, sizeof(s->err.name), "%s", name);
	s->err.value = value;
	snprintf(s->err.why, sizeof(s->err.why), "%s", why);
	return -EINVAL;
}

/* Checks and applies setting id: 0 or -EINVAL (said in c->file_error or s->err). */
static int apply(struct shim_config *c, struct shim_settings_src *s, unsigned id)
{
	const struct shim_setting *t = &shim_settings[id];
	unsigned line, u;
	size_t cap;
	char *path;
	bool any;
	int i;
	const char *v = setting(s, id, &line);

	if (!v)
		return 0;
	switch (t->kind) {
	case SHIM_SK_CHOICE:
		if ((i = word_index(t, v)) < 0)
			return fail(c, s, id, v, line, t->why);
		field_set(c, id, (unsigned)i);
		return 0;
	case SHIM_SK_UINT:
		if (parse_uint(v, strlen(v), t->hi, &u) < 0 || u < t->lo)
			return fail(c, s, id, v, line, t->why);
		field_set(c, id, u);
		return 0;
	case SHIM_SK_PORTS:
		if (shim_parse_ports(v, c->ports) < 0)
			return fail(c, s, id, v, line, t->why);
		c->all_ports = false;
		return 0;
	case SHIM_SK_PATH:
		path = (char *)field_path(c, id, &cap);
		if (v[0] != '/' || strlen(v) >= cap - 16)
			return fail(c, s, id, v, line, t->why);
		memcpy(path, v, strlen(v) + 1);
		return 0;
	case SHIM_SK_CIDRS:
		if (shim_parse_trusted(v, NULL, 0, &u, &any) < 0)
			return fail(c, s, id, v, line, t->why);
		/* A short list needs no malloc(): in a program that never allocates, the first one
		 * costs system calls at every start. */
		c->cidrs = u <= 16 ? s->small : calloc(u, sizeof(*c->cidrs));
		if (u && !c->cidrs)
			return fail(c, s, id, v, line, "out of memory");
		shim_parse_trusted(v, c->cidrs, u, &c->ncidrs, &any);
		c->trust_any = any;
		c->active = true;
		return 0;
	}
	return 0;
}

/* A bad file refuses only what it was meant to cover: TCP listens on its ports when its
 * PROXYSHIM_PORTS (or the environment's) parses, every TCP port when it does not. UNIX sockets
 * and everything else a machine runs (tmux, ssh-agent, dbus) keep working (listen.c). */
static void refuse_scope(struct shim_config *c, const struct shim_settings_src *s)
{
	unsigned line;
	const char *v = setting(s, SHIM_S_PORTS, &line);
	memset(c->ports, 0, sizeof(c->ports));
	c->all_ports = !v || shim_parse_ports(v, c->ports) < 0;
}

int shim_settings_load(struct shim_config *c, struct shim_settings_src *s, char *const *envp,
		       const struct shim_settings_io *io)
{
	int rc = 0;

	/* The defaults, parsed like values. */
	for (unsigned id = 0; id < SHIM_NSETTINGS; id++) {
		const struct shim_setting *t = &shim_settings[id];
		unsigned u = 0;
		if (t->kind == SHIM_SK_CHOICE)
			field_set(c, id, (unsigned)word_index(t, t->dflt));
		else if (t->kind == SHIM_SK_UINT && parse_uint(t->dflt, strlen(t->dflt), t->hi, &u) == 0)
			field_set(c, id, u);
	}
	c->all_ports = true;

	/* Set-uid and similar: the environment is not the user's to trust. Stay inert, silently. */
	if (io->secure) {
		c->log_level = SHIM_LOG_OFF;
		c->inactive_reason = "secure-execution";
		return 0;
	}
	env_gather(s, envp);
	if (s->env_unknown)
		return env_refuse_unknown(s);
	if (read_file(c, s, io)) {
		for (int rank = 0; rank < SHIM_NSETTINGS && rc == 0; rank++)
			for (unsigned id = 0; id < SHIM_NSETTINGS; id++)
				if (shim_settings[id].rank == rank) {
					rc = apply(c, s, id);
					break;
				}
		if (rc < 0 && s->err.name[0])
			return rc; /* the environment's */
		if (rc == 0 && !c->active)
			c->inactive_reason = "PROXYSHIM_TRUSTED is not set";
	}
	if (c->refuse_listen)
		refuse_scope(c, s);
	return 0;
}

void shim_settings_release(struct shim_config *c, struct shim_settings_src *s)
{
	if (c->cidrs != s->small)
		free(c->cidrs);
	c->cidrs = NULL;
	free(s->file);
	s->file = NULL;
}

/* Appends to buf as snprintf() would to one buffer: *used counts what was wanted. */
__attribute__((format(printf, 4, 5))) static void put(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(*used < cap ? buf + *used : NULL, *used < cap ? cap - *used : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used += (size_t)n;
}

int shim_settings_format(const struct shim_config *c, const struct shim_settings_src *s, char *buf, size_t cap)
{
	size_t used = 0;

	put(buf, cap, &used, "active=%s%s%s\n", c->active ? "yes" : "no", c->active ? "" : " reason=",
	    c->active ? "" : (c->inactive_reason ? c->inactive_reason : "?"));
	for (unsigned id = 0; id < SHIM_NSETTINGS; id++) {
		const struct shim_setting *t = &shim_settings[id];
		char text[1024] = "";
		size_t tused = 0, pcap;
		unsigned k;

		switch (t->kind) {
		case SHIM_SK_FILE:
			continue;
		case SHIM_SK_CHOICE:
			k = field_get(c, id);
			for (unsigned w = 0; w <= k; w++)
				if (!t->words[w]) {
					k = ~0u; /* not a word: cannot happen once loaded */
					break;
				}
			snprintf(text, sizeof(text), "%s", k == ~0u ? "?" : t->words[k]);
			break;
		case SHIM_SK_UINT:
			snprintf(text, sizeof(text), "%u", field_get(c, id));
			break;
		case SHIM_SK_PATH:
			snprintf(text, sizeof(text), "%s", field_path(c, id, &pcap));
			break;
		case SHIM_SK_PORTS:
			if (c->all_ports) {
				snprintf(text, sizeof(text), "%s", t->dflt);
				break;
			}
			for (unsigned p = 1; p <= 65535 && tused < sizeof(text) - 16; p++) {
				unsigned q = p;
				if (!shim_port_covered(c, (uint16_t)p))
					continue;
				while (q < 65535 && shim_port_covered(c, (uint16_t)(q + 1)))
					q++;
				tused += (size_t)snprintf(text + tused, sizeof(text) - tused,
							  q > p ? "%s%u-%u" : "%s%u", tused ? "," : "", p, q);
				p = q;
			}
			break;
		case SHIM_SK_CIDRS:
			if (c->trust_any)
				tused += (size_t)snprintf(text, sizeof(text), "*");
			for (unsigned i = 0; i < c->ncidrs && tused < sizeof(text); i++) {
				char ip[INET6_ADDRSTRLEN];
				inet_ntop(c->cidrs[i].family, c->cidrs[i].addr, ip, sizeof(ip));
				tused += (size_t)snprintf(text + tused, sizeof(text) - tused, "%s%s/%u",
							  tused ? "," : "", ip, c->cidrs[i].prefix);
			}
			break;
		}
		put(buf, cap, &used, "%s=%s\n", t->name, text);
	}
	put(buf, cap, &used, "config_file=%s%s%s\n", s->nkeys || c->file_error[0] ? s->file_path : "none",
	    c->file_error[0] ? " error=" : "", c->file_error);
	return (int)used;
}
