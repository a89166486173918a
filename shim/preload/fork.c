/* fork(): the child starts with parking and counters of its own at once. Children made past
 * this hook (daemon(), _Fork(), a raw clone()) are found by proc.c on their first use of them.
 * pthread_atfork() would not see those either, and it ties the library to glibc. */
#include "shim.h"

SHIM_EXPORT pid_t fork(void)
{
	pid_t pid;
	SHIM_NEED(fork);
	pid = real_fork();
	if (pid == 0)
		shim_proc_check();
	return pid;
}
