/* What the preload library's files share: the core's parts (shim/core/), how the real
 * functions are found, and the parts that only make sense under interposition: lazy reads,
 * parking, exec handoff adoption, listener classification. */
#ifndef SHIM_PRELOAD_SHIM_H
#define SHIM_PRELOAD_SHIM_H

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "proxyshim_proto.h"
#include "../core/addr.h"
#include "../core/base.h"
#include "../core/config.h"
#include "../core/conn.h"
#include "../core/fdpass.h"
#include "../core/header.h"
#include "../core/log.h"
#include "../core/proc.h"
#include "../core/stats.h"
#include "../core/sys.h"
#include "../core/trust.h"

/* ---- real.c: the real_ pointers (core/sys.h), looked up with dlsym(RTLD_NEXT) ---- */
/* Set once every real_ pointer is; shim_resolve() (core/sys.h) sets them: called by the
 * constructor, and by a hook that runs before it. One load once done. */
extern _Atomic bool shim_resolved;
void *shim_dlsym(const char *name, const void *own_hook);
/* Makes sure every real_ pointer is set (not only real_##name: a hook calls others), at the
 * top of every hook. */
#define SHIM_NEED(name)                                                                    \
	do {                                                                                \
		(void)sizeof(real_##name);                                                  \
		if (SHIM_UNLIKELY(!atomic_load_explicit(&shim_resolved, memory_order_acquire))) \
			shim_resolve();                                                     \
	} while (0)

/* ---- the hook boundary (STYLE.md): a hook saves errno once at its entry (int saved = errno)
 * and owns it from there; internal helpers may change errno freely and report failure as a
 * negative errno. This ends a hook with such a result r: on success r, errno back to saved;
 * on failure -1 with errno -r, as libc would set it. ---- */
static inline int shim_hook_ret(int saved, int r)
{
	errno = r < 0 ? -r : saved;
	return r < 0 ? -1 : r;
}

/* ---- lazy.c: PROXYSHIM_CONSUME=lazy ---- */
enum shim_settle {
	SHIM_SETTLE_READ,     /* a read: wait only if the socket is blocking */
	SHIM_SETTLE_NOWAIT,   /* a read with MSG_DONTWAIT */
	SHIM_SETTLE_WAIT,     /* getpeername(): wait up to the deadline */
};
/* How a settle of fd goes: a read on a blocking socket waits as getpeername() does. */
static inline enum shim_settle shim_settle_mode(int fd, enum shim_settle how)
{
	if (how == SHIM_SETTLE_READ) {
		int fl = shim_fd_status(fd);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			return SHIM_SETTLE_WAIT;
	}
	return how;
}
/* Marks fd's header as still to come, to be taken by deadline (shim_now_ms()): 0, or -ENOMEM. */
int shim_lazy_mark(int fd, const struct sockaddr *peer, uint16_t lport, uint64_t deadline);
/* Reads the pending header of fd (entry e): 0 when the program may go on, -EAGAIN (incomplete,
 * non-blocking) or -ECONNRESET (refused). May change errno: the calling hook restores it. */
int shim_lazy_settle(int fd, struct shim_fd *e, enum shim_settle how);
/* The entry of fd when its header is pending (or was refused): the read hooks' one check. */
static inline struct shim_fd *shim_fd_unsettled(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	/* kind first, with acquire: the flags belong to the kind that was read. */
	if (SHIM_LIKELY(!e) ||
	    SHIM_LIKELY(atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN) ||
	    !(e->flags & (SHIM_C_PENDING | SHIM_C_FAILED)))
		return NULL;
	return e;
}

/* ---- fdpass.c: connections passed with SCM_RIGHTS (core/fdpass.h) ---- */
/* After a recvmsg() that returned control messages: adopts the received connections. */
void shim_fdpass_received(const struct msghdr *msg);
/* getpeername() on an fd with no entry, after the real call gave peer: adopts fd when another
 * process published it. True when fd now has a connection entry. */
bool shim_fdpass_adopt_miss(int fd, const struct sockaddr *peer);
/* shim_lazy_settle() of an entry with SHIM_C_SHARED: through the table, exactly once. */
int shim_fdpass_settle(int fd, struct shim_fd *e, enum shim_settle how);
/* lazy.c's own reading of the header, for the above. */
int shim_lazy_settle_here(int fd, struct shim_fd *e, enum shim_settle how);

/* ---- exec.c ---- */
/* In a new image: takes over the connections an exec handed off (PROXYSHIM_HANDOFF). */
void shim_handoff_adopt(void);

/* ---- park.c: connections whose header is incomplete wait on their listener ---- */
struct shim_park;
/* Parks the trusted connection fd accepted on listener l (fd lfd): 0, or a negative errno when
 * it could not (no fds, no memory, the listener closed; in lazy mode also -ENOSPC, at
 * PROXYSHIM_MAX_PARKED). In lazy mode it stays parked for PROXYSHIM_LAZY_GRACE_MS at most, then
 * is handed over pending (shim_lazy_mark); in accept mode for PROXYSHIM_TIMEOUT_MS. */
int shim_park_add(struct shim_fd *l, int lfd, int fd, const struct sockaddr_storage *peer,
		  socklen_t peerlen, const struct shim_progress *pr);
/* True when l has parked connections (one load, no lock). */
bool shim_park_pending(const struct shim_fd *l);
/* Hands over one parked connection whose header has completed (returns its fd, address
 * written per accept()'s contract) after closing expired ones; -EAGAIN when none is ready. */
int shim_park_service(struct shim_fd *l, struct sockaddr *addr, socklen_t *addrlen);
/* For a blocking listener with parked connections: waits on the listener and the parked
 * connections at once. 1: the listener is readable; 0: look at the parked ones; -EINTR;
 * -EAGAIN once give_up (shim_now_ms(); 0: never) has passed: the listener's SO_RCVTIMEO. */
int shim_park_wait(struct shim_fd *l, int lfd, uint64_t give_up);
bool shim_park_blocking(const struct shim_fd *l);
/* The program added, changed or removed lfd in its epoll instance ep. */
void shim_park_epoll_ctl(struct shim_fd *l, int ep, int op, const struct epoll_event *ev);
/* The listener's entry goes away (close, dup2 over it): its parked connections go too, now or,
 * when another thread (or the thread this signal handler interrupted) holds the park's lock,
 * as that holder unlocks. Never waits: async-signal-safe. */
void shim_park_release(struct shim_park *p);
/* The program closed one of the park's own fds. */
void shim_park_lost_fd(struct shim_park *p);
/* For poll(): the parking epoll fd to watch beside listener fd, or -1. */
int shim_park_pollfd(int fd);
void shim_park_atfork_child(void);
/* Has shim_park_atfork_child() run in each new process (core/proc.h); idempotent. */
void shim_park_register(void);
/* ---- accept.c / listen.c ---- */
/* Classifies the listener fd (once) and returns its entry, or NULL when the shim ignores it.
 * May change errno (the accept hooks restore it). */
struct shim_fd *shim_listener(int fd);
/* epoll.c: l (fd) was just classified at its first accept(): follows the epoll sets the
 * program added it to before (read from /proc/self/fdinfo). May change errno. */
void shim_epoll_find_watchers(struct shim_fd *l, int fd);
/* Calls fn(fd, arg) for each fd this process has open (/proc/self/fd; nothing without it). */
void shim_each_open_fd(void (*fn)(int fd, void *arg), void *arg);
/* listen.c, from the constructor: classifies the listening sockets the process started with
 * (exec from a master, socket activation), while /proc is there (a server may chroot later),
 * so that the epoll_ctl() hook follows them from the program's first call. */
void shim_listeners_inherited(void);


#endif
