/* Helpers shared by the small e2e test programs: one JSON line built in a buffer and written
 * with one write(), addresses and errno values as JSON, listening on a loopback port. */
#ifndef PROGS_COMMON_H
#define PROGS_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct out {
	char *buf;
	size_t len, cap;
};

static inline void out_grow(struct out *o, size_t more)
{
	if (o->len + more + 1 <= o->cap)
		return;
	size_t cap = o->cap ? o->cap : 4096;
	while (o->len + more + 1 > cap)
		cap *= 2;
	char *b = realloc(o->buf, cap);
	if (!b) {
		perror("realloc");
		exit(3);
	}
	o->buf = b;
	o->cap = cap;
}

static inline void out_f(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void out_f(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	out_grow(o, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	o->len += (size_t)n;
}

static inline void out_hex(struct out *o, const void *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	const unsigned char *b = p;
	out_grow(o, 2 * n + 2);
	o->buf[o->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		o->buf[o->len++] = d[b[i] >> 4];
		o->buf[o->len++] = d[b[i] & 15];
	}
	o->buf[o->len++] = '"';
	o->buf[o->len] = '\0';
}

static inline void out_str(struct out *o, const char *s)
{
	out_grow(o, 6 * strlen(s) + 2);
	o->buf[o->len++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			o->buf[o->len++] = '\\';
			o->buf[o->len++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			o->len += (size_t)snprintf(o->buf + o->len, 7, "\\u%04x", c);
		} else {
			o->buf[o->len++] = (char)c;
		}
	}
	o->buf[o->len++] = '"';
	o->buf[o->len] = '\0';
}

/* The line, newline added, in one write() so lines of several processes never interleave. */
static inline void out_line(struct out *o)
{
	out_f(o, "\n");
	size_t off = 0;
	while (off < o->len) {
		ssize_t w = write(1, o->buf + off, o->len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	o->len = 0;
}

static inline const char *errname(int e)
{
	switch (e) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EBADF: return "EBADF";
	case ECONNRESET: return "ECONNRESET";
	case ENOTCONN: return "ENOTCONN";
	case ENOTSOCK: return "ENOTSOCK";
	case ENOENT: return "ENOENT";
	case EINVAL: return "EINVAL";
	case EPIPE: return "EPIPE";
	case EACCES: return "EACCES";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EINTR: return "EINTR";
	default: return strerror(e);
	}
}

/* A sockaddr as {"family":..,"addr":..,"port":..}. */
static inline void out_sa(struct out *o, const struct sockaddr *sa, socklen_t len)
{
	char a[INET6_ADDRSTRLEN];
	if (len == 0) {
		out_f(o, "{\"family\":\"none\"}");
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		out_f(o, "{\"family\":\"AF_INET\",\"addr\":\"%s\",\"port\":%u}", a, ntohs(s->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)sa;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		out_f(o, "{\"family\":\"AF_INET6\",\"addr\":\"%s\",\"port\":%u}", a, ntohs(s->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		out_f(o, "{\"family\":\"AF_UNIX\"}");
	} else {
		out_f(o, "{\"family\":%d}", sa->sa_family);
	}
}

/* getpeername() or getsockname() of fd as an address object, or {"errno":"..."}. */
static inline void out_name(struct out *o, int fd, int peer)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &sl)
		     : getsockname(fd, (struct sockaddr *)&ss, &sl);
	if (r < 0)
		out_f(o, "{\"errno\":\"%s\"}", errname(errno));
	else
		out_sa(o, (struct sockaddr *)&ss, sl);
}

/* A listening TCP socket on host (IPv4 or IPv6 text) and port; prints "listening PORT". */
static inline int listen_on(const char *host, unsigned port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1, fd;
	memset(&ss, 0, sizeof(ss));
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (void *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -1;
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -1;
		sl = sizeof(*s4);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0)
		return -1;
	sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	struct out o = {0};
	out_f(&o, "listening %u", ntohs(((struct sockaddr_in *)&ss)->sin_port));
	out_line(&o);
	free(o.buf);
	return fd;
}

/* Writes all len bytes of p to fd, again after EINTR: 0, or -1 (a failed or empty write). */
static inline int write_all(int fd, const void *p, size_t len)
{
	const char *c = p;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, c + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return 0;
}

/* Parses "HOST:PORT" or "[V6]:PORT" in place. */
static inline int split_hostport(char *s, const char **host, unsigned *port)
{
	char *c = strrchr(s, ':');
	if (!c)
		return -1;
	*c = '\0';
	*port = (unsigned)strtoul(c + 1, NULL, 10);
	if (s[0] == '[') {
		s++;
		char *e = strchr(s, ']');
		if (e)
			*e = '\0';
	}
	*host = s;
	return 0;
}

#endif
