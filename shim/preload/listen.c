/* listen(), and how the shim decides which listening sockets it covers: TCP over IPv4 or
 * IPv6 on a covered port. Sockets inherited already listening are classified on first accept. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "shim.h"

static _Atomic bool g_said_inactive;

/* Threads of a program may make their first accept() on an inherited listener at the same
 * time. One claims the entry and fills it while the others wait for its answer (the same as
 * theirs): a reader must never see the entry as a listener with its flags half written, or a
 * covered listener would pass a header to the program as data for a moment. The claimer blocks
 * signals for the few stores it makes, so no handler of its own thread can find the entry
 * claimed and wait for it forever. */
static struct shim_fd *publish(struct shim_fd *e, uint8_t flags, const struct shim_addr *local)
{
	uint8_t none = SHIM_FD_NONE;
	unsigned kind;
	sigset_t all, old;

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	if (atomic_compare_exchange_strong_explicit(&e->kind, &none, SHIM_FD_CLAIMED, memory_order_acquire,
						    memory_order_acquire)) {
		e->flags = flags;
		e->local = *local;
		atomic_store_explicit(&e->kind, SHIM_FD_LISTENER, memory_order_release);
		sigprocmask(SIG_SETMASK, &old, NULL);
		return e;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	while ((kind = atomic_load_explicit(&e->kind, memory_order_acquire)) == SHIM_FD_CLAIMED) {
		struct timespec pause = {0, 1000};
		nanosleep(&pause, NULL);
	}
	return kind == SHIM_FD_LISTENER ? e : NULL;
}

static struct shim_fd *classify(int fd, const struct shim_config *c)
{
	struct sockaddr_storage ss;
	struct shim_addr local;
	socklen_t sl = sizeof(ss);
	int proto = 0, acc = 0;
	socklen_t il = sizeof(int);
	struct shim_fd *e;
	uint8_t flags = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &il) < 0 || !acc)
		return NULL; /* not (yet) listening: let the kernel answer the program */
	il = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &il) < 0)
		return NULL;
	if (real_getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return NULL;
	e = shim_fd_get(fd);
	if (!e)
		return NULL;
	memset(&local, 0, sizeof(local));
	if (proto == IPPROTO_TCP && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
		shim_addr_from_sa(&local, (const struct sockaddr *)&ss);
		if (shim_port_covered(c, ntohs(local.port)))
			flags = SHIM_L_COVERED;
	}
	return publish(e, flags, &local);
}

struct shim_fd *shim_listener(int fd)
{
	const struct shim_config *c = shim_config();
	struct shim_fd *e;
	unsigned kind;

	if (!c->active)
		return NULL;
	e = shim_fd_peek(fd);
	kind = e ? atomic_load_explicit(&e->kind, memory_order_acquire) : SHIM_FD_NONE;
	if (SHIM_LIKELY(kind == SHIM_FD_LISTENER))
		return (e->flags & SHIM_L_COVERED) ? e : NULL;
	if (kind != SHIM_FD_NONE && kind != SHIM_FD_CLAIMED)
		return NULL; /* a connection, or the shim's own fd */
	e = classify(fd, c);
	if (!e || !(e->flags & SHIM_L_COVERED))
		return NULL;
	/* Inherited listening (exec from a master, socket activation): the program may have
	 * put it in its epoll sets already, unseen by the epoll_ctl() hook. */
	if (kind == SHIM_FD_NONE)
		shim_epoll_find_watchers(e, fd);
	return e;
}

static void inherited(int fd, void *arg)
{
	(void)arg;
	/* classify() asks SO_ACCEPTCONN first: one system call for each fd that is not a
	 * listening socket, and no table entry made for it. */
	if (shim_fd_kind(fd) == SHIM_FD_NONE)
		classify(fd, shim_config());
}

void shim_listeners_inherited(void)
{
	if (shim_config()->active)
		shim_each_open_fd(inherited, NULL);
}

static void on_listen(int fd)
{
	const struct shim_config *c = shim_config();
	struct shim_fd *e;

	if (!c->active) {
		bool no = false;
		if (c->inactive_reason && atomic_compare_exchange_strong(&g_said_inactive, &no, true))
			shim_log(SHIM_LOG_WARN, "event=inactive reason=\"%s\"", c->inactive_reason);
		return;
	}
	shim_fd_clear(fd); /* listen() again, or a number reused behind our back */
	e = classify(fd, c);
	if (!e || !(e->flags & SHIM_L_COVERED))
		return;
	if (c->defer_accept && !c->lazy) {
		/* The kernel holds a connection back until its first bytes arrive, so accept()
		 * nearly always finds the header already there. Not in lazy mode: there the
		 * server may have to speak first. */
		int secs = (int)((c->timeout_ms + 999) / 1000);
		setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
	}
	shim_log(SHIM_LOG_INFO, "event=listen port=%u", ntohs(e->local.port));
}

/* With a bad config file: would this listen be one the file was meant to cover? TCP over
 * IPv4 or IPv6 on a covered port. A socket not bound yet gets an ephemeral port from listen()
 * itself, covered only when every port is. Anything the shim cannot tell is let through to the
 * kernel, which gives the program its own answer. */
static bool refused(int fd, const struct shim_config *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss), il = sizeof(int);
	int proto = 0;
	bool r = false;
	uint16_t port;

	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &il) == 0 && proto == IPPROTO_TCP &&
	    real_getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
		port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						     : ((struct sockaddr_in6 *)&ss)->sin6_port);
		r = port ? shim_port_covered(c, port) : c->all_ports;
	}
	return r;
}

/* The hook owns errno (shim.h): classifying the socket asks the kernel things that may fail. */
SHIM_EXPORT int listen(int fd, int backlog)
{
	int r, saved = errno;
	const struct shim_config *c = shim_config(); /* the first call may read the settings file */
	SHIM_NEED(listen);
	if (SHIM_UNLIKELY(c->refuse_listen) && refused(fd, c)) {
		/* A bad config file: this server must not run half configured (config.c). */
		shim_log(SHIM_LOG_ERROR, "event=refuse reason=config detail=\"%s\"", c->file_error);
		errno = EACCES;
		return -1;
	}
	r = real_listen(fd, backlog);
	if (r == 0) {
		on_listen(fd);
		errno = saved;
	}
	return r;
}
