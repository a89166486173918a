/* Log lines on stderr: one line an event, logfmt, at most LOG_BURST lines a second, with the
 * count of suppressed lines said once the next second opens. A line never goes into a network
 * connection: when fd 2 is one (an inetd-style child, a daemon that closed stderr and then
 * accepted) it goes to syslog's /dev/log, or is dropped and counted. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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
	char dgram[600];
	int k, fd, sev = (level >= 0 && level <= SHIM_LOG_DEBUG) ? severity[level] : 7;
	ssize_t w;

	k = snprintf(dgram, sizeof(dgram), "<%d>proxyshim[%d]: ", 3 * 8 + sev, (int)getpid());
	if (k < 0 || (size_t)k >= sizeof(dgram))
		return false;
	if (n > sizeof(dgram) - (size_t)k)
		n = sizeof(dgram) - (size_t)k;
	memcpy(dgram + k, msg, n);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	do
		w = sendto(fd, dgram, (size_t)k + n, MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&dev_log, sizeof(dev_log));
	while (w < 0 && errno == EINTR);
	shim_resolve(); /* real_close: a line may come before the front-end's start */
	real_close(fd);
	return w == (ssize_t)((size_t)k + n);
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

/* Called from anywhere (a constructor, a hook's helpers, the park code under close()): keeps
 * errno itself, so that a log line never changes what a caller is about to return. */
void shim_log(int level, const char *fmt, ...)
{
	char line[512];
	struct timespec ts;
	va_list ap;
	int saved = errno, n, k;
	long now, window;

	if (!shim_log_on(level))
		return;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (long)ts.tv_sec;
	window = atomic_load(&g_window);
	if (now != window && atomic_compare_exchange_strong(&g_window, &window, now)) {
		unsigned dropped = atomic_exchange(&g_dropped, 0);
		atomic_store(&g_count, 0);
		if (dropped) {
			n = snprintf(line, sizeof(line),
				     LINE_PREFIX "level=warn event=suppressed lines=%u\n", dropped);
			emit(SHIM_LOG_WARN, line, (size_t)n);
		}
	}
	if (atomic_fetch_add(&g_count, 1) >= LOG_BURST) {
		atomic_fetch_add(&g_dropped, 1);
		goto out;
	}
	n = snprintf(line, sizeof(line), LINE_PREFIX "level=%s ", shim_log_level_name(level));
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (k < 0)
		k = 0;
	n += k;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	emit(level, line, (size_t)n);
out:
	errno = saved;
}
