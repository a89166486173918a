/* The exec handoff's text (handoff.h): pure encoding and decoding, so the new image's shim can
 * trust nothing it did not check and a unit test links this file alone. */
#include <errno.h>
#include <string.h>

#include "handoff.h"

static const char hexd[] = "0123456789abcdef";

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static size_t put_uint(char *p, unsigned long long v)
{
	char tmp[24];
	size_t n = 0, i;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

void shim_handoff_wire_of(const struct shim_fd *e, struct shim_handoff_wire *w)
{
	w->flags = e->flags;
	w->version = e->version;
	w->command = e->command;
	w->real_hash = e->real_hash;
	w->peer = e->peer;
	w->local = e->local;
}

size_t shim_handoff_encode(char *p, int fd, unsigned long long ino, const struct shim_fd *e)
{
	struct shim_handoff_wire w;
	const uint8_t *b = (const uint8_t *)&w;
	size_t n = 0;

	shim_handoff_wire_of(e, &w);
	n += put_uint(p + n, (unsigned)fd);
	p[n++] = ':';
	n += put_uint(p + n, ino);
	p[n++] = ':';
	for (size_t i = 0; i < sizeof(w); i++) {
		p[n++] = hexd[b[i] >> 4];
		p[n++] = hexd[b[i] & 15];
	}
	return n;
}

size_t shim_handoff_append(char *buf, size_t len, size_t cap, int fd, unsigned long long ino,
			   const struct shim_fd *e)
{
	if (len + SHIM_HANDOFF_ENTRY_MAX + 1 > cap)
		return len;
	buf[len++] = ';';
	len += shim_handoff_encode(buf + len, fd, ino, e);
	buf[len] = '\0';
	return len;
}

int shim_handoff_uint(const char **p, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *s = *p;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	while (*s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s++ - '0');
		/* Exact: every value encode() writes, up to ULLONG_MAX itself, reads back. */
		if (v > (~0ull - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return 0;
}

int shim_handoff_parse_entry(const char *p, const char *end, int *fd, unsigned long long *ino,
			     struct shim_handoff_wire *w)
{
	uint8_t *b = (uint8_t *)w;
	unsigned long long n;

	if (shim_handoff_uint(&p, &n) < 0 || *p++ != ':' || shim_handoff_uint(&p, ino) < 0 ||
	    *p++ != ':' || end - p != (long)(2 * sizeof(*w)) || n > 0x7FFFFFFF)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(*w); i++) {
		int hi = unhex(p[2 * i]), lo = unhex(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	*fd = (int)n;
	/* An entry in no connection state is not one this layout writes. */
	if (!(w->flags & (SHIM_C_REWRITTEN | SHIM_C_PENDING | SHIM_C_FAILED)))
		return -EINVAL;
	return 0;
}

const char *shim_handoff_entries(const char *v)
{
	static const char tag[] = SHIM_HANDOFF_TAG ";";
	return strncmp(v, tag, sizeof(tag) - 1) == 0 ? v + sizeof(tag) - 1 : NULL;
}

void shim_handoff_each(const char *entries,
		       void (*fn)(int fd, unsigned long long ino, const struct shim_handoff_wire *w,
				  void *arg),
		       void *arg)
{
	for (const char *p = entries; *p;) {
		const char *end = strchr(p, ';');
		unsigned long long ino;
		struct shim_handoff_wire w;
		int fd;
		if (!end)
			end = p + strlen(p);
		if (shim_handoff_parse_entry(p, end, &fd, &ino, &w) == 0)
			fn(fd, ino, &w, arg);
		p = *end ? end + 1 : end;
	}
}
