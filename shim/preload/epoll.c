/* epoll_ctl(): learns how the program watches its covered listeners, so that the shim's
 * parking epoll fd can wake the program's loop under the listener's own event data. */
#include <errno.h>

#include "shim.h"

SHIM_EXPORT int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
	struct shim_fd *e;
	int r, saved;

	SHIM_NEED(epoll_ctl);
	r = real_epoll_ctl(ep, op, fd, ev);
	if (r == 0 && (e = shim_fd_peek(fd)) != NULL &&
	    SHIM_UNLIKELY(atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_LISTENER) &&
	    (e->flags & SHIM_L_COVERED)) {
		/* Following the listener (a park to make, its epoll fd to mirror) may fail
		 * quietly: the program's call succeeded and keeps its errno. */
		saved = errno;
		shim_park_epoll_ctl(e, ep, op, ev);
		errno = saved;
	}
	return r;
}
