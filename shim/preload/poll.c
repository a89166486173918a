/* poll(), ppoll(), select() and pselect(): a program that watches a listener with them is
 * woken, like an epoll program, when a connection parked on that listener has its whole
 * header: the parking epoll fd is watched beside it and its readiness reported as the
 * listener's. With nothing parked in the process, each costs one load. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#define STACK_FDS 64

static int call_poll(struct pollfd *f, nfds_t n, const struct timespec *ts, const sigset_t *ss, int ms)
{
	return ts || ss ? real_ppoll(f, n, ts, ss) : real_poll(f, n, ms);
}

/* One entry of the caller's watching a listener with connections parked: its index, and the
 * parking epoll fd it had when looked at. The park can fill or empty at any moment (another
 * thread parks or takes a connection), so it is looked at once per entry, here, and the merged
 * array is built and read back from this record alone. */
struct poll_hit {
	nfds_t i;
	int pfd;
};

static int poll_parked(struct pollfd *fds, nfds_t n, int ms, const struct timespec *ts, const sigset_t *ss)
{
	struct pollfd stack[STACK_FDS], *all = stack;
	struct poll_hit hstack[STACK_FDS], *hit = hstack;
	nfds_t nhit = 0, total;
	int r = -1, saved = errno;

	for (nfds_t i = 0; i < n; i++) {
		int pfd;
		if (!(fds[i].events & POLLIN) || (pfd = shim_park_pollfd(fds[i].fd)) < 0)
			continue;
		if (nhit == STACK_FDS && hit == hstack) {
			/* More than the stack holds: room for every entry, as many as can follow. */
			if ((hit = malloc(n * sizeof(*hit))) == NULL) {
				hit = hstack;
				break; /* the listeners beyond are watched without their parks */
			}
			memcpy(hit, hstack, sizeof(hstack));
		}
		hit[nhit].i = i;
		hit[nhit++].pfd = pfd;
	}
	errno = saved;
	if (nhit == 0) {
		r = call_poll(fds, n, ts, ss, ms);
		goto out;
	}
	total = n + nhit;
	if (total > STACK_FDS && (all = malloc(total * sizeof(*all))) == NULL) {
		errno = saved;
		all = stack;
		r = call_poll(fds, n, ts, ss, ms);
		goto out;
	}
	memcpy(all, fds, n * sizeof(*all));
	/* The extra entries follow in the order of the listeners they stand for. */
	for (nfds_t k = 0; k < nhit; k++) {
		all[n + k].fd = hit[k].pfd;
		all[n + k].events = POLLIN;
		all[n + k].revents = 0;
	}
	r = call_poll(all, total, ts, ss, ms);
	if (r >= 0) {
		r = 0;
		for (nfds_t i = 0; i < n; i++)
			fds[i].revents = all[i].revents;
		for (nfds_t k = 0; k < nhit; k++)
			if (all[n + k].revents & POLLIN)
				fds[hit[k].i].revents |= POLLIN;
		for (nfds_t i = 0; i < n; i++)
			if (fds[i].revents)
				r++;
	}
out:
	saved = errno;
	if (all != stack)
		free(all);
	if (hit != hstack)
		free(hit);
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

/* select() and pselect(): the same, with the parking epoll fd added to the read set. */
#define SELECT_LISTENERS 16

static int call_select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv,
		       const struct timespec *ts, const sigset_t *ss, bool p)
{
	return p ? real_pselect(nfds, r, w, x, ts, ss) : real_select(nfds, r, w, x, tv);
}

static int select_parked(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv,
			 const struct timespec *ts, const sigset_t *ss, bool p)
{
	int lfd[SELECT_LISTENERS], pfd[SELECT_LISTENERS], k = 0, top = nfds, res, saved;
	/* The caller's sets may be only as long as nfds needs, in whole longs as the kernel reads. */
	size_t bytes = ((size_t)nfds + 63) / 64 * 8;
	fd_set rr;

	if (!r || nfds <= 0 || nfds > FD_SETSIZE)
		return call_select(nfds, r, w, x, tv, ts, ss, p);
	for (int fd = 0; fd < nfds && k < SELECT_LISTENERS; fd++) {
		int e;
		if (FD_ISSET(fd, r) && (e = shim_park_pollfd(fd)) >= 0 && e < FD_SETSIZE) {
			lfd[k] = fd;
			pfd[k++] = e;
			if (e + 1 > top)
				top = e + 1;
		}
	}
	if (k == 0)
		return call_select(nfds, r, w, x, tv, ts, ss, p);
	FD_ZERO(&rr);
	memcpy(&rr, r, bytes);
	for (int i = 0; i < k; i++)
		FD_SET(pfd[i], &rr);
	/* Write and except sets are passed as they are: bits at or above nfds are never looked
	 * at by the program, and the parking fds are in none of them. */
	res = call_select(top, &rr, w, x, tv, ts, ss, p);
	saved = errno;
	if (res > 0) {
		for (int i = 0; i < k; i++) {
			if (!FD_ISSET(pfd[i], &rr))
				continue;
			FD_CLR(pfd[i], &rr);
			res--;
			if (!FD_ISSET(lfd[i], &rr)) {
				FD_SET(lfd[i], &rr);
				res++;
			}
		}
	}
	if (res >= 0)
		memcpy(r, &rr, bytes);
	errno = saved;
	return res;
}

SHIM_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
	SHIM_NEED(select);
	if (SHIM_LIKELY(atomic_load_explicit(&shim_parked_total, memory_order_relaxed) == 0))
		return real_select(nfds, r, w, x, tv);
	return select_parked(nfds, r, w, x, tv, NULL, NULL, false);
}

SHIM_EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *ts,
			const sigset_t *ss)
{
	SHIM_NEED(pselect);
	if (SHIM_LIKELY(atomic_load_explicit(&shim_parked_total, memory_order_relaxed) == 0))
		return real_pselect(nfds, r, w, x, ts, ss);
	return select_parked(nfds, r, w, x, NULL, ts, ss, true);
}
