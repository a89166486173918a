/* The preload library's one ordered start, before main(): the settings (a bad environment
 * value ends the process here, naming the variable), then every real symbol (published
 * together, so a hook in another thread never finds one missing; hooks called before this,
 * from other libraries' constructors, resolve them themselves), then this process's identity
 * page with what parking resets in a child, the counters' file, then the connections an exec
 * handed over, then the listening sockets it inherited. */
#include <errno.h>

#include "shim.h"

__attribute__((constructor)) static void shim_init(void)
{
	/* Under no hook (before main(), or inside a program's dlopen()): keeps errno itself. */
	int saved = errno;
	shim_config();
	shim_resolve();
	/* The first debug line: which library this is, and whether it is at work here. */
	if (shim_log_on(SHIM_LOG_DEBUG)) {
		const struct shim_config *c = shim_config();
		shim_log(SHIM_LOG_DEBUG, "event=start version=%s active=%s%s%s%s", PROXYSHIM_VERSION,
			 c->active ? "yes" : "no", c->active ? "" : " reason=\"",
			 c->active ? "" : (c->inactive_reason ? c->inactive_reason : "?"),
			 c->active ? "" : "\"");
	}
	shim_park_register();
	shim_proc_check(); /* this process's page, before any child can be made */
	shim_stats_start(); /* PROXYSHIM_STATS: the file is there from the start */
	shim_handoff_adopt();
	shim_listeners_inherited();
	errno = saved;
}
