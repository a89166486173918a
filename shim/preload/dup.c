/* dup(), dup2(), dup3() and fcntl(F_DUPFD*): the new fd carries the old one's entry, replacing
 * what the target had (sshd moves its connection to fd 0 this way before it re-executes). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "shim.h"

/* The new fd r carries fd's entry. The dup hooks' errno boundary: the call succeeded, so errno
 * stays what it was, whatever the table did (a page to map for r). */
static void carry(int fd, int r)
{
	int saved = errno;
	shim_fd_copy(fd, r);
	errno = saved;
}

SHIM_EXPORT int dup(int fd)
{
	int r;
	SHIM_NEED(dup);
	r = real_dup(fd);
	if (r >= 0)
		carry(fd, r);
	return r;
}

SHIM_EXPORT int dup2(int fd, int fd2)
{
	int r;
	SHIM_NEED(dup2);
	r = real_dup2(fd, fd2);
	if (r >= 0 && r != fd)
		carry(fd, r);
	return r;
}

SHIM_EXPORT int dup3(int fd, int fd2, int flags)
{
	int r;
	SHIM_NEED(dup3);
	r = real_dup3(fd, fd2, flags);
	if (r >= 0)
		carry(fd, r);
	return r;
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	int r = real(fd, cmd, arg);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		carry(fd, r);
	return r;
}

/* Every fcntl argument is an int, a long or a pointer: one machine word read as a pointer
 * passes each of them on unchanged, as glibc's own wrapper does. */
SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	SHIM_NEED(fcntl);
	return fcntl_common(real_fcntl, fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	SHIM_NEED(fcntl);
	return fcntl_common(real_fcntl64, fd, cmd, arg);
}
