/* _exit() and _Exit(): a program that ends through them (dash, many daemons' children after
 * fork(), Python's os._exit()) runs no atexit handler, so its counters file (PROXYSHIM_STATS)
 * would stay behind for ever. The hooks remove it, as exit() does, then end the process with
 * the system call _exit() itself makes. A vfork() child ending here changes nothing of its
 * parent's memory (shim_stats_exit() checks the pid first). Programs that make the exit_group
 * system call themselves (Go) are not seen. */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

SHIM_EXPORT void _exit(int status)
{
	shim_stats_exit();
	for (;;)
		syscall(SYS_exit_group, status);
}

/* The same function under C99's name (glibc's is an alias of _exit). */
SHIM_EXPORT void _Exit(int status)
{
	_exit(status);
}
