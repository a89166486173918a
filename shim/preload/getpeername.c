/* getpeername(): the header's source on a rewritten connection, with libc's truncation. */
#include <errno.h>

#include "shim.h"

SHIM_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct shim_fd *e;
	int saved;

	SHIM_NEED(getpeername);
	if (!shim_config()->active || !addr || !addrlen || (int)*addrlen < 0)
		return real_getpeername(fd, addr, addrlen);
	e = shim_fd_peek(fd);
	if (SHIM_LIKELY(!e || atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN)) {
		/* No entry: maybe a connection another process's shim passed here by a path no
		 * hook saw. The kernel answers into our buffer, so that its peer can be checked. */
		if (real_getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
			return -1;
		if (SHIM_LIKELY(!shim_fdpass_adopt_miss(fd, (const struct sockaddr *)&ss)) ||
		    (e = shim_fd_peek(fd)) == NULL) {
			shim_sa_to_user(&ss, sl, addr, addrlen);
			return 0;
		}
		sl = sizeof(ss);
	}
	if (SHIM_UNLIKELY(e->flags & (SHIM_C_PENDING | SHIM_C_FAILED))) {
		/* Lazy mode: the header, complete or within the timeout, decides the answer. */
		saved = errno;
		if (shim_lazy_settle(fd, e, SHIM_SETTLE_WAIT) < 0) {
			errno = ENOTCONN;
			return -1;
		}
		errno = saved;
		if (atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN)
			return real_getpeername(fd, addr, addrlen);
	}
	/* The kernel still answers first: its errors are the program's, and its answer shows
	 * whether this fd is still the connection the entry was made for. */
	if (real_getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (shim_sa_hash((const struct sockaddr *)&ss) != e->real_hash) {
		shim_fd_clear(fd);
		shim_sa_to_user(&ss, sl, addr, addrlen);
		return 0;
	}
	shim_addr_to_user(&e->peer, addr, addrlen);
	return 0;
}
