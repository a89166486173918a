/* fork(): the child starts with parking and counters of its own. pthread_atfork() would do
 * this too, but it ties the library to glibc (__register_atfork), and one binary serves musl. */
#include "shim.h"

SHIM_EXPORT pid_t fork(void)
{
	pid_t pid;
	SHIM_NEED(fork);
	pid = real_fork();
	if (pid == 0) {
		shim_park_atfork_child();
		shim_stats_atfork_child();
	}
	return pid;
}
