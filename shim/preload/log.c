/* Log lines on stderr: one line an event, logfmt, at most LOG_BURST lines a second, with the
 * count of suppressed lines said once the next second opens. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define LOG_BURST 50

static _Atomic long g_window;     /* the second the counters below belong to */
static _Atomic unsigned g_count;  /* lines in that second */
static _Atomic unsigned g_dropped; /* lines suppressed, to be reported */

static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};

const char *shim_log_level_name(int level)
{
	return (level >= 0 && level <= SHIM_LOG_DEBUG) ? level_names[level] : "?";
}

static void emit(const char *line, size_t n)
{
	while (n > 0) {
		ssize_t w = write(2, line, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		line += w;
		n -= (size_t)w;
	}
}

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
				     "proxyshim: level=warn event=suppressed lines=%u\n", dropped);
			emit(line, (size_t)n);
		}
	}
	if (atomic_fetch_add(&g_count, 1) >= LOG_BURST) {
		atomic_fetch_add(&g_dropped, 1);
		errno = saved;
		return;
	}
	n = snprintf(line, sizeof(line), "proxyshim: level=%s ", shim_log_level_name(level));
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (k < 0)
		k = 0;
	n += k;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	emit(line, (size_t)n);
	errno = saved;
}
