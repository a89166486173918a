/* getsockname(): with PROXYSHIM_LOCAL_ADDR=header, the header's destination (the address the
 * client dialled) on a rewritten connection. */
#include <errno.h>

#include "shim.h"

SHIM_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct shim_fd *e;
	int saved, r;

	SHIM_NEED(getsockname);
	e = shim_fd_peek(fd);
	if (SHIM_LIKELY(!e || atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN) ||
	    !shim_config()->active || !shim_config()->local_from_header || !addr || !addrlen || (int)*addrlen < 0)
		return real_getsockname(fd, addr, addrlen);
	if (e->flags & SHIM_C_PENDING) {
		/* Lazy mode: the header first; refused, the kernel's own answer. */
		saved = errno;
		r = shim_lazy_settle(fd, e, SHIM_SETTLE_WAIT);
		errno = saved;
		if (r < 0)
			return real_getsockname(fd, addr, addrlen);
	}
	/* The kernel answers first (its errors are the program's), into a buffer of ours so that
	 * the caller's length still says how much the caller can take. */
	struct sockaddr_storage local;
	socklen_t ll = sizeof(local);
	if (real_getsockname(fd, (struct sockaddr *)&local, &ll) < 0)
		return -1;
	/* Still the connection the entry was made for? (an fd closed behind our back) */
	if (!(e->flags & SHIM_C_REWRITTEN) || e->local.family == 0 ||
	    real_getpeername(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    shim_sa_hash((const struct sockaddr *)&ss) != e->real_hash) {
		shim_sa_to_user(&local, ll, addr, addrlen);
		return 0;
	}
	shim_addr_to_user(&e->local, addr, addrlen);
	return 0;
}
