/* The read family: in lazy mode the first read of a connection consumes its PROXY header, so
 * the program receives only application bytes, in order, whatever its flags. For every other
 * fd a hook costs one table load and a branch. */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "shim.h"

/* Out of line and cold, so that a hook's common path is the inlined check and a jump. It is
 * the read hooks' errno boundary: saved here, not on every read, since only this half changes
 * it. 0, errno as on entry: go on with the real call; -1 with errno set: the hook's answer. */
__attribute__((noinline, cold)) static int settle_slow(int fd, struct shim_fd *e, int flags)
{
	int saved = errno;
	if (!shim_config()->active)
		return 0; /* an inactive shim reads no header, whatever the table holds */
	return shim_hook_ret(saved, shim_lazy_settle(fd, e, (flags & MSG_DONTWAIT) ? SHIM_SETTLE_NOWAIT
										: SHIM_SETTLE_READ));
}

static inline int settle(int fd, int flags)
{
	struct shim_fd *e = shim_fd_unsettled(fd);
	return SHIM_UNLIKELY(e != NULL) ? settle_slow(fd, e, flags) : 0;
}

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	SHIM_NEED(read);
	if (SHIM_UNLIKELY(settle(fd, 0) < 0))
		return -1;
	return real_read(fd, buf, n);
}

SHIM_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	SHIM_NEED(readv);
	if (SHIM_UNLIKELY(settle(fd, 0) < 0))
		return -1;
	return real_readv(fd, iov, iovcnt);
}

SHIM_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	SHIM_NEED(recv);
	if (SHIM_UNLIKELY(settle(fd, flags) < 0))
		return -1;
	return real_recv(fd, buf, n, flags);
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
			     socklen_t *addrlen)
{
	SHIM_NEED(recvfrom);
	if (SHIM_UNLIKELY(settle(fd, flags) < 0))
		return -1;
	return real_recvfrom(fd, buf, n, flags, addr, addrlen);
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	SHIM_NEED(recvmsg);
	ssize_t r;
	if (SHIM_UNLIKELY(settle(fd, flags) < 0))
		return -1;
	r = real_recvmsg(fd, msg, flags);
	/* Control messages may bring fds: connections another process's shim published. */
	if (SHIM_UNLIKELY(r >= 0 && msg->msg_controllen != 0))
		shim_fdpass_received(msg);
	return r;
}

/* The fortified twins that _FORTIFY_SOURCE builds (Debian's packages) call. Their size check
 * stays libc's: the real twin does it. */
SHIM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
SHIM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	SHIM_NEED(read);
	if (SHIM_UNLIKELY(settle(fd, 0) < 0))
		return -1;
	if (real___read_chk)
		return real___read_chk(fd, buf, n, buflen);
	if (n > buflen)
		abort();
	return real_read(fd, buf, n);
}

SHIM_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
SHIM_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	SHIM_NEED(recv);
	if (SHIM_UNLIKELY(settle(fd, flags) < 0))
		return -1;
	if (real___recv_chk)
		return real___recv_chk(fd, buf, n, buflen, flags);
	if (n > buflen)
		abort();
	return real_recv(fd, buf, n, flags);
}

SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
				   struct sockaddr *addr, socklen_t *addrlen);
SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
				   struct sockaddr *addr, socklen_t *addrlen)
{
	SHIM_NEED(recvfrom);
	if (SHIM_UNLIKELY(settle(fd, flags) < 0))
		return -1;
	if (real___recvfrom_chk)
		return real___recvfrom_chk(fd, buf, n, buflen, flags, addr, addrlen);
	if (n > buflen)
		abort();
	return real_recvfrom(fd, buf, n, flags, addr, addrlen);
}
