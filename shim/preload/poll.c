/* poll() and ppoll(): a program that watches a listener with poll() is woken, like an epoll
 * program, when a connection parked on that listener has its whole header: the parking epoll
 * fd is watched beside it and its readiness is reported as the listener's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#define STACK_FDS 64

static int call_poll(struct pollfd *f, nfds_t n, const struct timespec *ts, const sigset_t *ss, int ms)
{
	return ts || ss ? real_ppoll(f, n, ts, ss) : real_poll(f, n, ms);
}

static int poll_parked(struct pollfd *fds, nfds_t n, int ms, const struct timespec *ts, const sigset_t *ss)
{
	struct pollfd stack[STACK_FDS], *all = stack;
	nfds_t extra = 0, total;
	int r, saved;

	for (nfds_t i = 0; i < n; i++)
		if ((fds[i].events & POLLIN) && shim_park_pollfd(fds[i].fd) >= 0)
			extra++;
	if (extra == 0)
		return call_poll(fds, n, ts, ss, ms);
	total = n + extra;
	if (total > STACK_FDS && (all = malloc(total * sizeof(*all))) == NULL)
		return call_poll(fds, n, ts, ss, ms);
	memcpy(all, fds, n * sizeof(*all));
	/* The extra entries follow in the order of the listeners they stand for. */
	for (nfds_t i = 0, k = n; i < n; i++) {
		int pfd;
		if ((fds[i].events & POLLIN) && (pfd = shim_park_pollfd(fds[i].fd)) >= 0) {
			all[k].fd = pfd;
			all[k].events = POLLIN;
			all[k].revents = 0;
			k++;
		}
	}
	r = call_poll(all, total, ts, ss, ms);
	saved = errno;
	if (r >= 0) {
		r = 0;
		for (nfds_t i = 0, k = n; i < n; i++) {
			fds[i].revents = all[i].revents;
			if ((fds[i].events & POLLIN) && k < total && all[k].fd == shim_park_pollfd(fds[i].fd)) {
				if (all[k].revents & POLLIN)
					fds[i].revents |= POLLIN;
				k++;
			}
			if (fds[i].revents)
				r++;
		}
	}
	if (all != stack)
		free(all);
	errno = saved;
	return r;
}

SHIM_EXPORT int poll(struct pollfd *fds, nfds_t n, int ms)
{
	SHIM_NEED(poll);
	if (SHIM_LIKELY(atomic_load_explicit(&shim_parked_total, memory_order_relaxed) == 0))
		return real_poll(fds, n, ms);
	return poll_parked(fds, n, ms, NULL, NULL);
}

SHIM_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss)
{
	SHIM_NEED(ppoll);
	if (SHIM_LIKELY(atomic_load_explicit(&shim_parked_total, memory_order_relaxed) == 0))
		return real_ppoll(fds, n, ts, ss);
	return poll_parked(fds, n, -1, ts, ss);
}

/* The fortified twins that _FORTIFY_SOURCE builds call. */
SHIM_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int ms, size_t fdslen);
SHIM_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int ms, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return poll(fds, n, ms);
}

SHIM_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
			    const sigset_t *ss, size_t fdslen);
SHIM_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
			    const sigset_t *ss, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, ss);
}
