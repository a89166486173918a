/* Connections passed to another process with sendmsg(SCM_RIGHTS) (core/fdpass.h): the sender
 * publishes each passed connection's state before the real call, so the receiver can never
 * hold the fd before its slot exists; the receiver adopts it in recvmsg(), or in getpeername()
 * when the fd came by a path no hook sees (pidfd_getfd, io_uring, a raw system call). A header
 * still pending goes through the table: one process reads it, the others copy its result.
 * Costs: sendmsg() and recvmsg() without control messages, one branch; a program that never
 * passes connections, nothing else on its accept and read paths. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shim.h"

static void adopted(int fd, const struct shim_fd *e, const char *via)
{
	if (shim_log_on(SHIM_LOG_DEBUG)) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char client[SHIM_ADDRSTR_LEN];
		if (e->flags & SHIM_C_REWRITTEN) {
			shim_addr_to_user(&e->peer, (struct sockaddr *)&ss, &len);
			shim_sa_str((const struct sockaddr *)&ss, client);
		} else {
			snprintf(client, sizeof(client), "%s", e->flags & SHIM_C_PENDING ? "pending" : "refused");
		}
		shim_log(SHIM_LOG_DEBUG, "event=adopt via=%s fd=%d client=%s", via, fd, client);
	}
}

/* fd (socket cookie) takes what the table holds for it: true when it is now a connection. */
static bool adopt(int fd, uint64_t cookie, const char *via)
{
	struct shim_handoff_wire w;
	uint32_t state;
	struct shim_fd *e;

	if (shim_fdpass_lookup(cookie, &w, &state) < 0)
		return false;
	if (state != SHIM_FDPASS_SETTLED)
		w.flags = SHIM_C_PENDING | SHIM_C_SHARED; /* whoever reads first settles it */
	if (!(w.flags & (SHIM_C_REWRITTEN | SHIM_C_PENDING | SHIM_C_FAILED)) || !shim_fd_adopt(fd, &w))
		return false; /* settled with no state: the real endpoints are the answer */
	e = shim_fd_peek(fd);
	adopted(fd, e, via);
	return true;
}

/* Calls fn for every fd that msg's SCM_RIGHTS messages carry, until fn returns false. */
static void each_fd(const struct msghdr *msg, bool (*fn)(int fd))
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		const unsigned char *p = CMSG_DATA(c);
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		for (size_t i = 0, n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i < n; i++) {
			int fd;
			memcpy(&fd, p + i * sizeof(int), sizeof(fd));
			if (!fn(fd))
				return;
		}
	}
}

/* ---- the sender ---- */

static _Atomic bool g_no_cookie;

static bool publish_fd(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	uint64_t cookie;
	int r;
	if (!e || atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN ||
	    !(e->flags & (SHIM_C_REWRITTEN | SHIM_C_PENDING | SHIM_C_FAILED)))
		return true; /* not a connection the shim changed: the receiver's real answers hold */
	r = shim_fdpass_cookie(fd, &cookie);
	if (r == -ENOPROTOOPT && !atomic_exchange(&g_no_cookie, true))
		shim_log(SHIM_LOG_WARN, "event=fdpass reason=no_so_cookie note=\"this kernel has no "
					"SO_COOKIE: connections passed to other processes keep the "
					"balancer's address\"");
	if (r < 0 || !shim_fdpass_map(true))
		return true;
	if (shim_fdpass_publish(cookie, e) == 0 && (e->flags & SHIM_C_PENDING))
		e->flags |= SHIM_C_SHARED; /* its header is now settled through the table */
	return true;
}

static void publish_fds(const struct msghdr *msg)
{
	int saved = errno;
	each_fd(msg, publish_fd);
	errno = saved;
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	SHIM_NEED(sendmsg);
	if (SHIM_UNLIKELY(msg && msg->msg_controllen != 0) && shim_config()->active)
		publish_fds(msg);
	return real_sendmsg(fd, msg, flags);
}

/* ---- the receiver ---- */

/* Not mapped yet: one open(); none there means nothing was ever published by this user, so
 * no fd of this message can be in it (false ends the walk). */
static bool adopt_received(int fd)
{
	uint64_t cookie;
	if (!shim_fdpass_map(false))
		return false;
	if (shim_fdpass_cookie(fd, &cookie) == 0)
		adopt(fd, cookie, "recvmsg");
	return true;
}

void shim_fdpass_received(const struct msghdr *msg)
{
	int saved = errno;
	if (shim_config()->active)
		each_fd(msg, adopt_received);
	errno = saved;
}

/* Not mapped: tries to open the table at most once a second (a program that never receives
 * fds pays one open() a second at most, and only on getpeername() of a trusted connection the
 * shim has no entry for). */
static bool map_now(void)
{
	static _Atomic int64_t next_try;
	struct timespec ts;
	int64_t now, t;
	if (shim_fdpass_mapped())
		return true;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec;
	t = atomic_load(&next_try);
	if (now < t || !atomic_compare_exchange_strong(&next_try, &t, now + 1))
		return false;
	return shim_fdpass_map(false);
}

bool shim_fdpass_adopt_miss(int fd, const struct sockaddr *peer)
{
	uint64_t cookie;
	if ((peer->sa_family != AF_INET && peer->sa_family != AF_INET6) ||
	    !shim_trusted(shim_config(), peer) || !map_now() || shim_fdpass_cookie(fd, &cookie) < 0)
		return false;
	return adopt(fd, cookie, "getpeername");
}

/* ---- a pending header, exactly once ---- */

static int apply_settled(int fd, struct shim_fd *e, const struct shim_handoff_wire *w)
{
	if (w->flags & SHIM_C_REWRITTEN) {
		shim_fd_adopt(fd, w);
		return 0;
	}
	if (w->flags & SHIM_C_FAILED) {
		e->flags = SHIM_C_FAILED; /* the settler shut the socket down */
		return -ECONNRESET;
	}
	shim_fd_clear(fd); /* LOCAL, UNKNOWN, a pass: the real endpoints */
	return 0;
}

static int settle_here(int fd, struct shim_fd *e, enum shim_settle how)
{
	e->flags &= (uint8_t)~SHIM_C_SHARED;
	return shim_lazy_settle_here(fd, e, how);
}

int shim_fdpass_settle(int fd, struct shim_fd *e, enum shim_settle how)
{
	struct shim_handoff_wire w;
	uint64_t cookie;
	uint32_t state;
	int r;

	/* A new image (exec) maps the table on its first need. */
	if (!(e->flags & SHIM_C_PENDING) || !shim_fdpass_map(false) || shim_fdpass_cookie(fd, &cookie) < 0)
		return settle_here(fd, e, how);
	for (;;) {
		if (shim_fdpass_lookup(cookie, &w, &state) < 0)
			return settle_here(fd, e, how); /* evicted, or never published */
		if (state == SHIM_FDPASS_SETTLED)
			return apply_settled(fd, e, &w);
		r = shim_fdpass_claim(cookie);
		if (r == 0) {
			struct shim_fd *now;
			r = shim_lazy_settle_here(fd, e, how);
			if (r == -EAGAIN) {
				shim_fdpass_release(cookie); /* still unread: anyone may read it next */
				return r;
			}
			now = shim_fd_peek(fd);
			if (now && atomic_load(&now->kind) == SHIM_FD_CONN &&
			    (now->flags & (SHIM_C_REWRITTEN | SHIM_C_FAILED)))
				shim_fdpass_settled(cookie, now);
			else
				shim_fdpass_settled(cookie, NULL);
			return r;
		}
		if (r != -EBUSY)
			continue; /* settled meanwhile, or gone: look again */
		/* Another live process is reading the header: wait for its result, as a read of
		 * this socket would wait for the header. */
		if (shim_settle_mode(fd, how) != SHIM_SETTLE_WAIT)
			return -EAGAIN;
		if (shim_now_ms() > shim_pend_deadline(e) + 1000)
			return settle_here(fd, e, how); /* its reader is stuck: ours decides */
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
}
