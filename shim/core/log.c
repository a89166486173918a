/* Log lines on stderr: one line an event, logfmt (ts= UTC with milliseconds, pid=, level=,
 * event=, ...), at most LOG_BURST lines a second, with the count of suppressed lines said once
 * the next second opens. A line never goes into a network connection: when fd 2 is one (an
 * inetd-style child, a daemon that closed stderr and then accepted) it goes to syslog's
 * /dev/log, or is dropped and counted. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "stats.h"
#include "sys.h"

#define LOG_BURST 50

static _Atomic long g_window;     /* the second the counters below belong to */
static _Atomic unsigned g_count;  /* lines in that second */
static _Atomic unsigned g_dropped; /* lines suppressed, to be reported */

static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};

const char *shim_log_level_name(int level)
{
	return (level >= 0 && level <= SHIM_LOG_DEBUG) ? level_names[level] : "?";
}

#define LINE_PREFIX "proxyshim: "
#define LINE_MAX_BYTES 1024

/* ---- the line: "proxyshim: ts=... pid=N level=L message\n" ----
 * Formatted by hand, not by vsnprintf(): no locale, no allocation, nothing that locks, so a
 * line may be written from a signal handler (close() under a handler parks and logs). The
 * message's own text is the caller's logfmt ("event=reject reason=%s detail=\"%s\""); what a
 * conversion puts in is a value when it comes right after "key=" (quoted when logfmt needs it)
 * or right after the '"' that opens "key=\"", and is escaped there: '"', '\', newline, CR, tab
 * and other control characters. A conversion anywhere else is part of the line's structure
 * (header.c gives " detail=\"" and its closing '"' as arguments) and is copied as it is. */

struct out {
	char *b;
	size_t n;    /* bytes written */
	size_t cap;  /* for text: the closing quote and '\n' always fit after it */
	size_t open; /* with quoted: where the quoted value's first byte goes */
	bool quoted; /* inside a quoted value */
	bool taken;  /* that quoted value was given by a conversion already */
};

/* Structural text: copied, with the quotes it opens and closes followed. */
static void text(struct out *o, const char *s, size_t k)
{
	for (size_t i = 0; i < k && o->n < o->cap; i++) {
		o->b[o->n++] = s[i];
		if (s[i] == '"') {
			o->quoted = !o->quoted;
			o->open = o->n;
			o->taken = false;
		}
	}
}

static bool needs_quotes(const char *s, size_t k)
{
	if (k == 0)
		return true;
	for (size_t i = 0; i < k; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == '=' || c == '"' || c == 0x7f)
			return true;
	}
	return false;
}

/* A value's bytes inside quotes; an escape is written whole or not at all. */
static void escaped(struct out *o, const char *s, size_t k)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < k; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[6];
		size_t m = 2;
		e[0] = '\\';
		switch (c) {
		case '"': e[1] = '"'; break;
		case '\\': e[1] = '\\'; break;
		case '\n': e[1] = 'n'; break;
		case '\r': e[1] = 'r'; break;
		case '\t': e[1] = 't'; break;
		default:
			if (c >= ' ' && c != 0x7f) {
				e[0] = (char)c;
				m = 1;
			} else {
				e[1] = 'u';
				e[2] = '0';
				e[3] = '0';
				e[4] = hex[c >> 4];
				e[5] = hex[c & 15];
				m = 6;
			}
		}
		if (m > o->cap - o->n) {
			o->n = o->cap; /* full: nothing more of the message */
			return;
		}
		memcpy(o->b + o->n, e, m);
		o->n += m;
	}
}

/* What a conversion gives: a value, or structure (see above). */
static void arg(struct out *o, const char *s, size_t k)
{
	if (!o->quoted && o->n > 0 && o->b[o->n - 1] == '=') {
		if (!needs_quotes(s, k)) {
			text(o, s, k);
			return;
		}
		if (o->n < o->cap) {
			o->b[o->n++] = '"';
			escaped(o, s, k);
			o->b[o->n++] = '"'; /* the room kept for it */
			if (o->n > o->cap)
				o->cap = o->n; /* full */
		}
	} else if (o->quoted && o->n == o->open && !o->taken) {
		escaped(o, s, k);
		o->taken = true;
	} else {
		text(o, s, k);
	}
}

/* Digits of v, backwards from end; returns where they start. */
static char *digits(char *end, unsigned long long v, unsigned base, unsigned width)
{
	char *p = end;
	do {
		*--p = "0123456789abcdef"[v % base];
		v /= base;
	} while (v || (unsigned)(end - p) < width);
	return p;
}

static void number(struct out *o, unsigned long long v, bool negative, unsigned base)
{
	char t[24], *p = digits(t + sizeof(t), v, base, 1);
	if (negative)
		*--p = '-';
	arg(o, p, (size_t)(t + sizeof(t) - p));
}

/* The civil date of a day counted from 1970-01-01 (Howard Hinnant's days_from_civil inverse):
 * gmtime_r() would do, but it may lock for the time zone. */
static void civil(long long z, long long *y, unsigned *m, unsigned *d)
{
	long long era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (long long)yoe + era * 400 + (*m <= 2);
}

/* ts= in UTC, RFC 3339 with milliseconds: 2026-12-03T09:01:02.345Z (24 bytes). */
static void timestamp(struct out *o, const struct timespec *now)
{
	long long secs = (long long)now->tv_sec, days = secs / 86400, rem = secs % 86400, y;
	unsigned m, d;
	char t[32], *e = t + sizeof(t), *p;

	if (rem < 0) {
		rem += 86400;
		days--;
	}
	civil(days, &y, &m, &d);
	p = digits(e, (unsigned long long)now->tv_nsec / 1000000u, 10, 3);
	*--p = '.';
	p = digits(p, (unsigned long long)rem % 60, 10, 2);
	*--p = ':';
	p = digits(p, (unsigned long long)rem / 60 % 60, 10, 2);
	*--p = ':';
	p = digits(p, (unsigned long long)rem / 3600, 10, 2);
	*--p = 'T';
	p = digits(p, d, 10, 2);
	*--p = '-';
	p = digits(p, m, 10, 2);
	*--p = '-';
	p = digits(p, y < 0 ? 0 : (unsigned long long)y, 10, 4);
	text(o, p, (size_t)(e - p));
	text(o, "Z", 1);
}

size_t shim_log_format(char *buf, size_t size, int level, const struct timespec *now, int pid,
		       const char *fmt, va_list ap)
{
	struct out o = {.b = buf, .n = 0, .cap = size - 2};
	const char *name = shim_log_level_name(level);

	text(&o, LINE_PREFIX "ts=", sizeof(LINE_PREFIX "ts=") - 1);
	timestamp(&o, now);
	text(&o, " pid=", 5);
	number(&o, (unsigned long long)(pid < 0 ? 0 : pid), false, 10);
	text(&o, " level=", 7);
	text(&o, name, strlen(name));
	text(&o, " ", 1);
	for (const char *f = fmt; *f && o.n < o.cap; f++) {
		const char *lit = f;
		int longs = 0;
		bool size_t_ = false;

		while (*f && *f != '%')
			f++;
		text(&o, lit, (size_t)(f - lit));
		if (!*f)
			break;
		f++;
		while (*f == 'l' || *f == 'z' || *f == 'h') {
			longs += *f == 'l';
			size_t_ |= *f == 'z';
			f++;
		}
		switch (*f) {
		case '%':
			text(&o, "%", 1);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			arg(&o, s, strlen(s));
			break;
		}
		case 'c': {
			char c = (char)va_arg(ap, int);
			arg(&o, &c, 1);
			break;
		}
		case 'd':
		case 'i': {
			long long v = size_t_ ? (long long)va_arg(ap, ssize_t)
				      : longs >= 2 ? va_arg(ap, long long)
				      : longs == 1 ? (long long)va_arg(ap, long)
						   : (long long)va_arg(ap, int);
			number(&o, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, v < 0, 10);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long long v = size_t_ ? (unsigned long long)va_arg(ap, size_t)
					       : longs >= 2 ? va_arg(ap, unsigned long long)
					       : longs == 1 ? (unsigned long long)va_arg(ap, unsigned long)
							    : (unsigned long long)va_arg(ap, unsigned);
			number(&o, v, false, *f == 'x' ? 16 : 10);
			break;
		}
		default: /* not one the shim's lines use: the rest of the line is left out */
			text(&o, "?", 1);
			o.cap = o.n;
			break;
		}
		if (!*f)
			break;
	}
	if (o.quoted)
		o.b[o.n++] = '"'; /* cut short inside a quoted value: still one whole value */
	o.b[o.n++] = '\n';
	return o.n;
}


/* Whether fd 2 may take a line: a file, pipe, tty or UNIX socket (journald's stream), never a
 * TCP/UDP (or other network) socket nor an fd the shim tracks as a connection or its own. Asked
 * for every line, as the program may close or replace fd 2 at any time; one system call. */
static bool stderr_suitable(void)
{
	unsigned kind = shim_fd_kind(2);
	int domain = 0;
	socklen_t len = sizeof(domain);

	if (kind == SHIM_FD_CONN || kind == SHIM_FD_PARKED || kind == SHIM_FD_INTERNAL)
		return false;
	if (getsockopt(2, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0)
		return domain == AF_UNIX;
	return errno == ENOTSOCK; /* EBADF: stderr is closed */
}

static bool to_stderr(const char *line, size_t n)
{
	bool some = false;
	while (n > 0) {
		ssize_t w = write(2, line, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		some = true;
		line += w;
		n -= (size_t)w;
	}
	return some;
}

/* One RFC 3164 datagram to /dev/log, "<PRI>proxyshim[PID]: message", facility daemon. Not
 * libc's syslog(): it locks, and keeps an fd the program may close or dup2 over. The socket
 * lives for this line only; MSG_DONTWAIT: a busy syslog daemon never stalls the server. */
static bool to_syslog(int level, const char *msg, size_t n)
{
	static const struct sockaddr_un dev_log = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
	static const int severity[] = {7, 3, 4, 6, 7}; /* off (unused), error, warn, info, debug */
	char head[48], t[24], *p;
	int fd, sev = (level >= 0 && level <= SHIM_LOG_DEBUG) ? severity[level] : 7;
	size_t k = 0;
	ssize_t w;
	struct iovec iov[2];
	struct msghdr mh = {.msg_name = (void *)&dev_log, .msg_namelen = sizeof(dev_log), .msg_iov = iov,
			    .msg_iovlen = 2};

	/* "<PRI>proxyshim[PID]: " by hand, as the line itself (no stdio in a signal handler),
	 * sent ahead of the message without copying it: the stack stays small. */
	head[k++] = '<';
	p = digits(t + sizeof(t), (unsigned)(3 * 8 + sev), 10, 1);
	memcpy(head + k, p, (size_t)(t + sizeof(t) - p));
	k += (size_t)(t + sizeof(t) - p);
	memcpy(head + k, ">proxyshim[", 11);
	k += 11;
	p = digits(t + sizeof(t), (unsigned)getpid(), 10, 1);
	memcpy(head + k, p, (size_t)(t + sizeof(t) - p));
	k += (size_t)(t + sizeof(t) - p);
	memcpy(head + k, "]: ", 3);
	k += 3;
	iov[0] = (struct iovec){.iov_base = head, .iov_len = k};
	iov[1] = (struct iovec){.iov_base = (void *)msg, .iov_len = n};
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	shim_resolve(); /* real_sendmsg, real_close: a line may come before the front-end's start */
	do
		w = real_sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	real_close(fd);
	return w == (ssize_t)(k + n);
}

/* line: LINE_PREFIX, the message, '\n'. */
static void emit(int level, const char *line, size_t n)
{
	const size_t pre = sizeof(LINE_PREFIX) - 1;
	bool sent;

	if (stderr_suitable())
		sent = to_stderr(line, n);
	else
		sent = to_syslog(level, line + pre, n - pre - 1);
	if (!sent)
		shim_stat_log_dropped();
}

/* Formats and emits one line, with the wall clock's time. */
static void line(int level, const char *fmt, va_list ap)
{
	char buf[LINE_MAX_BYTES];
	struct timespec wall;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &wall);
	n = shim_log_format(buf, sizeof(buf), level, &wall, (int)getpid(), fmt, ap);
	emit(level, buf, n);
}

static void line_of(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line(level, fmt, ap);
	va_end(ap);
}

/* Called from anywhere (a constructor, a hook's helpers, the park code under close(), a signal
 * handler): keeps errno itself, so that a log line never changes what a caller is about to
 * return. */
void shim_log(int level, const char *fmt, ...)
{
	struct timespec ts;
	va_list ap;
	int saved = errno;
	long now, window;

	if (!shim_log_on(level))
		return;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (long)ts.tv_sec;
	window = atomic_load(&g_window);
	if (now != window && atomic_compare_exchange_strong(&g_window, &window, now)) {
		unsigned dropped = atomic_exchange(&g_dropped, 0);
		atomic_store(&g_count, 0);
		if (dropped)
			line_of(SHIM_LOG_WARN, "event=suppressed lines=%u", dropped);
	}
	if (atomic_fetch_add(&g_count, 1) >= LOG_BURST) {
		atomic_fetch_add(&g_dropped, 1);
		goto out;
	}
	va_start(ap, fmt);
	line(level, fmt, ap);
	va_end(ap);
out:
	errno = saved;
}
