/* Log lines (log.c): logfmt on stderr, or syslog's /dev/log when fd 2 is a network socket;
 * rate-limited. */
#ifndef SHIM_CORE_LOG_H
#define SHIM_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include "config.h"

/* One line: "proxyshim: ts=<UTC, ms> pid=<pid> level=<level> " then fmt, a logfmt message
 * ("event=reject reason=%s detail=\"%s\""). A conversion right after "key=" or after the '"'
 * opening "key=\"" is a value: quoted when logfmt needs it (a space, '=', '"', a control
 * character, or empty) and escaped. Conversions: %s %c %d %i %u %x, with l, ll, z. */
void shim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool shim_log_on(int level)
{
	return level <= (int)shim_config()->log_level;
}
const char *shim_log_level_name(int level);
/* The line shim_log() writes, into buf (size >= 64), ending in '\n'; returns its length. */
size_t shim_log_format(char *buf, size_t size, int level, const struct timespec *now, int pid,
		       const char *fmt, va_list ap);

#endif
