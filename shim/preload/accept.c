/* accept() and accept4(): on a covered listener, a connection from a trusted peer gives up
 * its PROXY header before the program sees it, and the program sees the header's source. */
#include <errno.h>

#include "shim.h"

static int take_one(const struct shim_fd *l, int lfd, struct sockaddr *addr, socklen_t *addrlen, int flags, bool four)
{
	int saved = errno;
	const struct shim_config *c = shim_config();

	if (addr && addrlen && (int)*addrlen < 0) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct shim_fd *e;
		int fd = four ? real_accept4(lfd, (struct sockaddr *)&ss, &sl, flags)
			      : real_accept(lfd, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return -1;
		shim_fd_clear(fd);
		if (shim_trusted(c, (const struct sockaddr *)&ss)) {
			switch (shim_take_header(fd, (const struct sockaddr *)&ss, ntohs(l->local.port))) {
			case SHIM_REJECT:
				real_close(fd);
				continue; /* the next connection, or EAGAIN on a non-blocking listener */
			case SHIM_ACCEPT_HEADER:
				e = shim_fd_peek(fd);
				if (e && atomic_load_explicit(&e->kind, memory_order_relaxed) == SHIM_FD_CONN) {
					shim_addr_to_user(&e->peer, addr, addrlen);
					errno = saved;
					return fd;
				}
				break;
			case SHIM_PASS:
				break;
			}
		}
		shim_sa_to_user(&ss, sl, addr, addrlen);
		errno = saved;
		return fd;
	}
}

SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	const struct shim_fd *l;
	SHIM_NEED(accept);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL))
		return real_accept(fd, addr, addrlen);
	return take_one(l, fd, addr, addrlen, 0, false);
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	const struct shim_fd *l;
	SHIM_NEED(accept4);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL))
		return real_accept4(fd, addr, addrlen, flags);
	return take_one(l, fd, addr, addrlen, flags, true);
}
