/* poll(), ppoll(), select() and pselect(): a program that watches a listener with them is
 * woken, like an epoll program, when a connection parked on that listener has its whole
 * header: the parking epoll fd is watched beside it and its readiness reported as the
 * listener's. With nothing parked in the process, each costs one load. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pollmerge.h"
#include "shim.h"

static int call_poll(struct pollfd *f, nfds_t n, const struct timespec *ts, const sigset_t *ss, int ms)
{
	return ts || ss ? real_ppoll(f, n, ts, ss) : real_poll(f, n, ms);
}

/* The lookup pollmerge.c asks, once per entry: the park beside a listener. */
static int park_lookup(int fd, void *ctx)
{
	(void)ctx;
	return shim_park_pollfd(fd);
}

/* The poll hooks' errno boundary: building and freeing the merged array may change errno
 * (malloc, free); the program sees errno as on entry, or the real call's when it failed. */
static int poll_parked(struct pollfd *fds, nfds_t n, int ms, const struct timespec *ts, const sigset_t *ss)
{
	struct shim_pollmerge m;
	nfds_t total;
	int r, saved = errno;

	total = shim_pollmerge_build(&m, fds, n, park_lookup, NULL);
	if (total == 0) {
		r = call_poll(fds, n, ts, ss, ms);
	} else {
		r = call_poll(m.all, total, ts, ss, ms);
		r = shim_pollmerge_fold(&m, fds, r);
	}
	if (r < 0)
		saved = errno; /* the call's own failure (EINTR...): the program's answer */
	shim_pollmerge_free(&m);
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
static int call_select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv,
		       const struct timespec *ts, const sigset_t *ss, bool p)
{
	return p ? real_pselect(nfds, r, w, x, ts, ss) : real_select(nfds, r, w, x, tv);
}

static int select_parked(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv,
			 const struct timespec *ts, const sigset_t *ss, bool p)
{
	/* The caller's sets may be only as long as nfds needs, in whole longs as the kernel reads. */
	size_t bytes = ((size_t)nfds + 63) / 64 * 8;
	struct shim_selectmerge m;
	int res;
	fd_set rr;

	if (!r || nfds <= 0 || nfds > FD_SETSIZE ||
	    shim_selectmerge_build(&m, r, nfds, bytes, &rr, park_lookup, NULL) == 0)
		return call_select(nfds, r, w, x, tv, ts, ss, p);
	/* Write and except sets are passed as they are: bits at or above nfds are never looked
	 * at by the program, and the parking fds are in none of them. */
	res = call_select(m.top, &rr, w, x, tv, ts, ss, p);
	/* Neither the merge nor the fold changes errno: the call's stays. */
	res = shim_selectmerge_fold(&m, &rr, res);
	if (res >= 0)
		memcpy(r, &rr, bytes);
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
