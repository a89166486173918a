/* Log lines (log.c): logfmt on stderr, or syslog's /dev/log when fd 2 is a network socket;
 * rate-limited. */
#ifndef SHIM_CORE_LOG_H
#define SHIM_CORE_LOG_H

#include "config.h"

void shim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool shim_log_on(int level)
{
	return level <= (int)shim_config()->log_level;
}
const char *shim_log_level_name(int level);

#endif
