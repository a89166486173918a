/* close() and close_range(): the entry goes before the fd number can be handed out again. */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

SHIM_EXPORT int close(int fd)
{
	SHIM_NEED(close);
	shim_fd_clear(fd);
	return real_close(fd);
}

SHIM_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	SHIM_NEED(close);
	/* With CLOSE_RANGE_CLOEXEC nothing closes now; exec starts a fresh table anyway. */
	if (first <= last && !((unsigned)flags & CLOSE_RANGE_CLOEXEC))
		shim_fd_clear_range(first, last);
	if (real_close_range)
		return real_close_range(first, last, flags);
	return (int)syscall(SYS_close_range, first, last, flags);
}

/* closefrom() (glibc 2.34): every fd from lowfd up. */
SHIM_EXPORT void closefrom(int lowfd);
SHIM_EXPORT void closefrom(int lowfd)
{
	SHIM_NEED(close);
	if (lowfd < 0)
		lowfd = 0;
	shim_fd_clear_range((unsigned)lowfd, ~0u);
	if (real_closefrom) {
		real_closefrom(lowfd);
		return;
	}
	syscall(SYS_close_range, (unsigned)lowfd, ~0u, 0);
}
