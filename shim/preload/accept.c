/* accept() and accept4(): on a covered listener, a connection from a trusted peer gives up
 * its PROXY header before the program sees it, and the program sees the header's source.
 * A header still on its way parks the connection (park.c) instead of stalling the program.
 * An untrusted one passes untouched, or with PROXYSHIM_UNTRUSTED=reject is closed when its
 * first bytes start a header. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>

#include "shim.h"

/* A signal interrupted the shim's wait for a blocking accept(). The kernel would have restarted
 * accept() itself if the handler has SA_RESTART; which signal it was is not known here, so
 * the call restarts only when every caught signal would have restarted it. */
static bool restartable(void)
{
	bool all = true;
	for (int sig = 1; sig < NSIG && all; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
			continue;
		if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN && !(sa.sa_flags & SA_RESTART))
			all = false;
	}
	return all;
}

/* The next connection on the covered listener l (fd lfd), its header taken: its fd, or a
 * negative errno (the kernel's accept() answer, or -EINTR). May change errno on the way. */
static int take_one(struct shim_fd *l, int lfd, struct sockaddr *addr, socklen_t *addrlen,
		    int flags, bool four)
{
	const struct shim_config *c = shim_config();
	uint64_t give_up = 0;
	bool timeo_read = false;

	if (addr && addrlen && (int)*addrlen < 0)
		return -EINVAL;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct shim_conn_ref ref;
		struct shim_progress pr = {0};
		enum shim_verdict v;
		int fd;

		if (SHIM_UNLIKELY(shim_park_pending(l))) {
			fd = shim_park_service(l, addr, addrlen);
			if (fd >= 0)
				return fd;
			/* A blocking listener blocks on itself and its parked connections at once,
			 * so a slow header never delays a complete one queued behind it. */
			if (shim_park_blocking(l) && shim_park_pending(l)) {
				int w;
				if (!timeo_read) {
					give_up = shim_rcvtimeo_deadline(lfd);
					timeo_read = true;
				}
				w = shim_park_wait(l, lfd, give_up);
				if (w == -EAGAIN)
					return -EAGAIN; /* SO_RCVTIMEO, as the kernel's accept() */
				if (w < 0 && !restartable())
					return -EINTR;
				if (w <= 0)
					continue; /* parked ones to look at, or a restarted wait */
			}
		}
		fd = four ? real_accept4(lfd, (struct sockaddr *)&ss, &sl, flags)
			  : real_accept(lfd, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return -errno;
		shim_fd_clear(fd);
		if (!shim_trusted(c, (const struct sockaddr *)&ss)) {
			if (shim_untrusted_closes(c, fd, (const struct sockaddr *)&ss, ntohs(l->local.port))) {
				real_close(fd);
				continue;
			}
			goto real_peer;
		}
		ref.fd = fd;
		ref.peer = (const struct sockaddr *)&ss;
		ref.lport = ntohs(l->local.port);
		v = shim_header_step(&ref, &pr, false);
		if (v == SHIM_INCOMPLETE && c->lazy) {
			/* A header sent at connect is usually a moment behind the handshake: parked
			 * for the grace, the connection still gets the header's address from
			 * accept(), which servers that speak first keep (Exim, Dovecot). */
			if (c->lazy_grace_ms > 0 && shim_park_add(l, lfd, fd, &ss, sl, &pr) == 0)
				continue;
			/* The first read or getpeername() takes the header (lazy.c). */
			if (shim_lazy_mark(fd, ref.peer, ref.lport, shim_now_ms() + c->timeout_ms) == 0)
				goto real_peer;
			v = shim_header_none(&ref, pr.seen, SHIM_REASON_NOMEM);
		}
		if (v == SHIM_INCOMPLETE) {
			if (shim_park_add(l, lfd, fd, &ss, sl, &pr) == 0)
				continue; /* the next connection, or -EAGAIN on a non-blocking listener */
			/* Could not park (no fds, no memory): a blocking listener may wait here,
			 * bounded; a non-blocking one must never wait, so the connection goes. */
			int fl = shim_fd_status(lfd);
			if (fl >= 0 && (fl & O_NONBLOCK))
				v = shim_header_none(&ref, pr.seen, SHIM_REASON_OVERFLOW);
			else
				v = shim_take_header(&ref, &pr, shim_now_ms() + c->timeout_ms);
		}
		switch (v) {
		case SHIM_REJECT:
			real_close(fd);
			continue;
		case SHIM_ACCEPT_HEADER:
			if (pr.rewritten) {
				shim_addr_to_user(&pr.client, addr, addrlen);
				return fd;
			}
			break;
		default:
			break;
		}
real_peer:
		shim_sa_to_user(&ss, sl, addr, addrlen);
		return fd;
	}
}

/* The hooks own errno (shim.h): classifying the listener and taking a header may change it. */
SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	int saved = errno;
	struct shim_fd *l;
	SHIM_NEED(accept);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL)) {
		errno = saved;
		return real_accept(fd, addr, addrlen);
	}
	return shim_hook_ret(saved, take_one(l, fd, addr, addrlen, 0, false));
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	int saved = errno;
	struct shim_fd *l;
	SHIM_NEED(accept4);
	if (SHIM_LIKELY((l = shim_listener(fd)) == NULL)) {
		errno = saved;
		return real_accept4(fd, addr, addrlen, flags);
	}
	return shim_hook_ret(saved, take_one(l, fd, addr, addrlen, flags, true));
}
