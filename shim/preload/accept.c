/* accept() and accept4(): on a covered listener, a connection from a trusted peer gives up
 * its PROXY header before the program sees it, and the program sees the header's source.
 * A header still on its way parks the connection (park.c) instead of stalling the program. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>

#include "shim.h"

/* A signal interrupted the shim's wait for a blocking accept(). The kernel would have restarted
 * accept() itself if the handler has SA_RESTART; which signal it was is not known here, so
 * the call restarts only when every caught signal would have restarted it. */
static bool restartable(void)
{
	int saved = errno;
	bool all = true;
	for (int sig = 1; sig < NSIG && all; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
			continue;
		if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN && !(sa.sa_flags & SA_RESTART))
			all = false;
	}
	errno = saved;
	return all;
}

static int take_one(struct shim_fd *l, int lfd, struct sockaddr *addr, socklen_t *addrlen,
		    int flags, bool four)
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
		struct shim_conn_ref ref;
		struct shim_progress pr = {0, 0};
		enum shim_verdict v;
		struct shim_fd *e;
		int fd;

		if (SHIM_UNLIKELY(shim_park_pending(l))) {
			fd = shim_park_service(l, addr, addrlen);
			if (fd >= 0) {
				errno = saved;
				return fd;
			}
			/* A blocking listener blocks on itself and its parked connections at once,
			 * so a slow header never delays a complete one queued behind it. */
			if (shim_park_blocking(l) && shim_park_pending(l)) {
				int w = shim_park_wait(l, lfd);
				if (w < 0 && !restartable()) {
					errno = EINTR;
					return -1;
				}
				if (w <= 0)
					continue; /* parked ones to look at, or a restarted wait */
			}
		}
		fd = four ? real_accept4(lfd, (struct sockaddr *)&ss, &sl, flags)
			  : real_accept(lfd, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return -1;
		shim_fd_clear(fd);
		if (!shim_trusted(c, (const struct sockaddr *)&ss)) {
			shim_stat(SHIM_R_UNTRUSTED, SHIM_REASON_NONE, 0, 0);
			goto real_peer;
		}
		ref.fd = fd;
		ref.peer = (const struct sockaddr *)&ss;
		ref.lport = ntohs(l->local.port);
		v = shim_header_step(&ref, &pr, false);
		if (v == SHIM_INCOMPLETE && c->lazy) {
			/* The first read or getpeername() takes the header (lazy.c). */
			if (shim_lazy_mark(fd, ref.peer, ref.lport) == 0)
				goto real_peer;
			v = shim_header_none(&ref, pr.seen, "nomem");
		}
		if (v == SHIM_INCOMPLETE) {
			if (shim_park_add(l, lfd, fd, &ss, sl, &pr) == 0)
				continue; /* the next connection, or EAGAIN on a non-blocking listener */
			/* Could not park (no fds, no memory): a blocking listener may wait here,
			 * bounded; a non-blocking one must never wait, so the connection goes. */
			int fl = shim_fd_status(lfd);
			if (fl >= 0 && (fl & O_NONBLOCK))
				v = shim_header_none(&ref, pr.seen, "overflow");
			else
				v = shim_take_header(&ref, shim_now_ms() + c->timeout_ms);
		}
		switch (v) {
		case SHIM_REJECT:
			real_close(fd);
			continue;
		case SHIM_ACCEPT_HEADER:
			e = shim_fd_peek(fd);
			if (e && atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_CONN) {
				shim_addr_to_user(&e->peer, addr, addrlen);
				errno = saved;
				return fd;
			}
			break;
		default:
			break;
		}
real_peer:
		shim_sa_to_user(&ss, sl, addr, addrlen);
		errno = saved;
		return fd;
	}
}

SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	struct shim_fd *l;
	SHIM_NEED(accept);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL))
		return real_accept(fd, addr, addrlen);
	return take_one(l, fd, addr, addrlen, 0, false);
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct shim_fd *l;
	SHIM_NEED(accept4);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL))
		return real_accept4(fd, addr, addrlen, flags);
	return take_one(l, fd, addr, addrlen, flags, true);
}
