/* The trapped calls. accept()/accept4(): the supervisor takes the listener (pidfd_getfd),
 * accepts itself, takes the header with the core's header step exactly as the library does,
 * writes the address into the target's memory and installs the connection with
 * SECCOMP_IOCTL_NOTIF_ADDFD + SECCOMP_ADDFD_FLAG_SEND (its fd number is the call's result).
 * A call that would wait (a blocking listener with an empty queue, a header still on its way) is
 * held: the notification stays unanswered while the supervisor polls for it, so the supervisor
 * itself never blocks. getpeername(): answered from the cookie table, at once (Go's RawSyscall
 * does not release its scheduler). listen(): TCP_DEFER_ACCEPT on covered listeners.
 * A connection accepted but not installed (a signal aborted the call: ADDFD fails with ENOENT)
 * is kept for the next accept() on the same listener, never dropped. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/conn.h"
#include "../core/header.h"
#include "../core/log.h"
#include "../core/stats.h"
#include "../core/trust.h"
#include "proxyshim_proto.h"
#include "supervise.h"

/* A stashed connection nobody asked for again (its listener closed, the program gone) is
 * closed after this long. */
#define STASH_MAX_MS 30000
#define TICK_MS 100 /* held notifications are checked for aborts this often */
#define MAX_POLLED 1024

/* A connection the supervisor accepted and has not handed over yet. */
struct pend {
	struct pend *next;
	uint64_t lcookie; /* its listener's socket cookie */
	uint16_t lport;
	int fd;
	struct sockaddr_storage peer_sa;
	socklen_t plen;
	struct shim_progress pr;
	uint64_t deadline; /* for the header (ms, CLOCK_MONOTONIC) */
	uint64_t stashed_at;
	bool eof, lowat, done, rewritten;
	bool nonblock; /* its O_NONBLOCK as it stands */
	struct sv_peer peer; /* the header's client and destination, when rewritten */
};

/* A trapped accept()/accept4() being served. */
struct hold {
	struct hold *next;
	struct seccomp_notif n;
	int lfd; /* our copy of the listener, for as long as the notification is pending */
	uint64_t lcookie;
	uint16_t lport;
	bool nonblock; /* the listener's O_NONBLOCK */
	int flags;     /* accept4()'s SOCK_NONBLOCK | SOCK_CLOEXEC */
	bool want_addr;
	socklen_t ulen; /* the caller's *addrlen */
	struct pend *conn;
	uint64_t give_up; /* a blocking listener's SO_RCVTIMEO ends the wait then (EAGAIN); 0: never */
};

static int g_nfd = -1;
static struct hold *g_holds;
static struct pend *g_stash;
static struct hold *g_polled[MAX_POLLED];
static int g_npolled;
static uint64_t g_next_tick;
static bool g_sync_wake;
static bool g_refuse_io_uring;

void sv_notif_refuse_io_uring(void)
{
	g_refuse_io_uring = true;
}

bool sv_sync_wake(void)
{
	return g_sync_wake;
}

void sv_notif_setup(int notif_fd, bool defer_listen)
{
	(void)defer_listen;
	g_nfd = notif_fd;
}

void sv_respond(uint64_t id, int e)
{
	struct seccomp_notif_resp r = {.id = id};
	if (e == 0)
		r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	else
		r.error = -e;
	/* ENOENT: the call is gone (a signal, the thread died); nothing to answer. */
	ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_SEND, &r);
}

static void respond_val(uint64_t id, int64_t val)
{
	struct seccomp_notif_resp r = {.id = id, .val = val};
	ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_SEND, &r);
}

bool sv_id_valid(uint64_t id)
{
	return ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* ---- connections ---- */

static void pend_free(struct pend *p)
{
	if (p->lowat)
		shim_header_lowat_reset(p->fd);
	shim_fd_clear(p->fd);
	close(p->fd);
	free(p);
}

static void stash(struct pend *p)
{
	struct pend **t = &g_stash;
	while (*t)
		t = &(*t)->next;
	p->next = NULL;
	p->stashed_at = shim_now_ms();
	*t = p;
	shim_log(SHIM_LOG_DEBUG, "event=stash port=%u", p->lport);
}

/* The oldest stashed connection of the listener with cookie lc. */
static struct pend *stash_take(uint64_t lc)
{
	for (struct pend **t = &g_stash; *t; t = &(*t)->next)
		if ((*t)->lcookie == lc) {
			struct pend *p = *t;
			*t = p->next;
			p->next = NULL;
			return p;
		}
	return NULL;
}

static void stash_expire(uint64_t now)
{
	for (struct pend **t = &g_stash; *t;) {
		struct pend *p = *t;
		if (now - p->stashed_at < STASH_MAX_MS) {
			t = &p->next;
			continue;
		}
		*t = p->next;
		shim_log(SHIM_LOG_WARN, "event=drop reason=unclaimed port=%u", p->lport);
		pend_free(p);
	}
}

/* ---- holds ---- */

static void hold_drop(struct hold *h)
{
	for (struct hold **t = &g_holds; *t; t = &(*t)->next)
		if (*t == h) {
			*t = h->next;
			break;
		}
	for (int i = 0; i < g_npolled; i++)
		if (g_polled[i] == h)
			g_polled[i] = NULL;
	if (h->conn)
		stash(h->conn);
	close(h->lfd);
	free(h);
}

/* Answers the call with error e and lets go of it. Always true (the call is done). */
static bool finish(struct hold *h, int e)
{
	sv_respond(h->n.id, e);
	hold_drop(h);
	return true;
}

/* Writes the address the program is to see, per accept()'s contract (at most *addrlen bytes,
 * *addrlen = the full size). 0 or a negative errno. */
static int write_addr(pid_t tid, uint64_t uaddr, uint64_t ulenp, socklen_t ulen, const struct shim_addr *client,
		      const struct sockaddr_storage *peer, socklen_t plen)
{
	struct sockaddr_storage out;
	socklen_t full = ulen < sizeof(out) ? ulen : (socklen_t)sizeof(out);
	int rc;

	memset(&out, 0, sizeof(out));
	if (client)
		shim_addr_to_user(client, (struct sockaddr *)&out, &full);
	else
		shim_sa_to_user(peer, plen, (struct sockaddr *)&out, &full);
	rc = sv_mem_write2(tid, uaddr, &out, ulen < full ? ulen : full, ulenp, &full, sizeof(full));
	return rc;
}

static bool install(struct hold *h)
{
	struct pend *p = h->conn;
	int fl;

	if (!sv_id_valid(h->n.id)) {
		hold_drop(h); /* stashes p */
		return true;
	}
	/* *addrlen is read once there is a connection, as the kernel's accept() does (an empty
	 * queue never touches it); a bad one fails the call and the connection waits, stashed. */
	if (h->want_addr) {
		int ulen;
		if (h->n.data.args[2] == 0 || sv_mem_read((pid_t)h->n.pid, h->n.data.args[2], &ulen, sizeof(ulen)) < 0)
			return finish(h, EFAULT);
		if (ulen < 0)
			return finish(h, EINVAL);
		h->ulen = (socklen_t)ulen;
		if (write_addr((pid_t)h->n.pid, h->n.data.args[1], h->n.data.args[2], h->ulen,
			       p->rewritten ? &p->peer.client : NULL, &p->peer_sa, p->plen) < 0)
			return finish(h, EFAULT);
	}
	if (p->nonblock != ((h->flags & SOCK_NONBLOCK) != 0)) { /* a stashed one, for another call */
		fl = fcntl(p->fd, F_GETFL);
		if (fl >= 0 && fcntl(p->fd, F_SETFL, p->nonblock ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) == 0)
			p->nonblock = !p->nonblock;
	}
	if (p->rewritten && sv_peer_put(sv_cookie(p->fd), &p->peer) < 0)
		shim_log(SHIM_LOG_ERROR, "event=table error=nomem");
	struct seccomp_notif_addfd a = {
		.id = h->n.id,
		.flags = SECCOMP_ADDFD_FLAG_SEND,
		.srcfd = (uint32_t)p->fd,
		.newfd_flags = (h->flags & SOCK_CLOEXEC) ? O_CLOEXEC : 0,
	};
	if (ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0) {
		int e = errno;
		/* Kept for the next accept(): ENOENT, the call was aborted (a signal); anything
		 * else (EMFILE...) is the call's answer, as the kernel's accept() would give it
		 * with the connection still queued. */
		if (e == ENOENT) {
			hold_drop(h);
			return true;
		}
		return finish(h, e);
	}
	h->conn = NULL;
	pend_free(p);
	hold_drop(h);
	return true;
}

/* Goes on with a trapped accept as far as it can without waiting: true when the call is
 * answered (h is freed), false when it is to be held. */
static bool accept_step(struct hold *h)
{
	const struct shim_config *c = shim_config();

	for (;;) {
		struct pend *p = h->conn;

		if (p == NULL) {
			p = stash_take(h->lcookie);
			if (p == NULL) {
				struct sockaddr_storage ss;
				socklen_t sl = sizeof(ss);
				/* SOCK_NONBLOCK is the new socket's: on the program's blocking listener
				 * accept() would block the supervisor. Look first; only this thread
				 * accepts on a covered listener (the program's calls are all trapped). */
				if (!h->nonblock) {
					struct pollfd pl = {.fd = h->lfd, .events = POLLIN};
					if (poll(&pl, 1, 0) <= 0 || !(pl.revents & POLLIN))
						return false;
				}
				/* The program's own SOCK_NONBLOCK: the header step never waits on the
				 * socket (MSG_DONTWAIT), and install() has nothing to change. */
				int fd = accept4(h->lfd, (struct sockaddr *)&ss, &sl, (h->flags & SOCK_NONBLOCK) | SOCK_CLOEXEC);

				if (fd < 0) {
					if (errno == EINTR)
						continue;
					if (errno == EAGAIN || errno == EWOULDBLOCK)
						return h->nonblock ? finish(h, EAGAIN) : false;
					return finish(h, errno);
				}
				shim_fd_clear(fd);
				p = calloc(1, sizeof(*p));
				if (p == NULL) {
					close(fd);
					return finish(h, ENOMEM);
				}
				p->fd = fd;
				p->nonblock = (h->flags & SOCK_NONBLOCK) != 0;
				p->peer_sa = ss;
				p->plen = sl;
				p->lcookie = h->lcookie;
				p->lport = h->lport;
				if (!shim_trusted(c, (const struct sockaddr *)&ss)) {
					if (shim_untrusted_closes(c, p->fd, (const struct sockaddr *)&p->peer_sa, p->lport)) {
						pend_free(p);
						continue;
					}
					p->done = true; /* the kernel's own connection, unchanged */
				} else {
					p->deadline = shim_now_ms() + c->timeout_ms;
				}
			}
			h->conn = p;
		}
		if (!p->done) {
			struct shim_conn_ref ref = {p->fd, (const struct sockaddr *)&p->peer_sa, p->lport};
			enum shim_verdict v = shim_header_step(&ref, &p->pr, p->eof);

			if (v == SHIM_INCOMPLETE) {
				if (shim_now_ms() < p->deadline) {
					p->lowat |= shim_header_lowat(p->fd, &p->pr) == 0;
					return false;
				}
				v = shim_header_none(&ref, p->pr.seen, SHIM_REASON_TIMEOUT);
			}
			/* The core noted the client in this process's own table: taken from it (the
			 * destination; the client is in pr), then cleared. */
			if (v == SHIM_ACCEPT_HEADER && p->pr.rewritten) {
				const struct shim_fd *e = shim_fd_get(p->fd);
				if (e != NULL)
					p->peer.local = e->local;
			}
			shim_fd_clear(p->fd);
			if (v == SHIM_REJECT) {
				h->conn = NULL;
				pend_free(p);
				continue;
			}
			if (p->lowat) {
				shim_header_lowat_reset(p->fd);
				p->lowat = false;
			}
			p->done = true;
			p->rewritten = v == SHIM_ACCEPT_HEADER && p->pr.rewritten;
			p->peer.client = p->pr.client;
		}
		return install(h);
	}
}

/* Listeners seen, by cookie: a socket's cookie is its own for life, and a listening TCP socket
 * keeps its port. Direct-mapped; only listening sockets are kept. */
#define LISTENER_CACHE 64
static struct {
	uint64_t cookie;
	uint16_t port;
	bool covered;
} g_listeners[LISTENER_CACHE];

/* The listener's cookie and port when fd is a TCP listener on a covered port; else false. */
static bool covered_listener(int fd, uint64_t *cookie, uint16_t *port)
{
	const struct shim_config *c = shim_config();
	int v = 0;
	socklen_t l = sizeof(v);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	uint64_t ck = sv_cookie(fd);
	unsigned slot = (unsigned)(ck % LISTENER_CACHE);

	if (ck != 0 && g_listeners[slot].cookie == ck) {
		*cookie = ck;
		*port = g_listeners[slot].port;
		return g_listeners[slot].covered;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) != 0 || !v)
		return false;
	l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) != 0 || v != IPPROTO_TCP)
		return false;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return false;
	*port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	*cookie = ck;
	if (ck == 0)
		return false;
	g_listeners[slot].cookie = ck;
	g_listeners[slot].port = *port;
	g_listeners[slot].covered = shim_port_covered(c, *port);
	return g_listeners[slot].covered;
}

/* pidfds of the threads that made calls, kept: a thread's id is not reused while its pidfd is
 * open... but the thread may be gone and its id taken by another: pidfd_getfd() then fails
 * with ESRCH and the pidfd is opened again. Direct-mapped by thread id. */
#define PIDFD_CACHE 64
static struct {
	pid_t tid;
	int fd;
} g_pidfds[PIDFD_CACHE];

/* The target's fd args[0] as ours: >= 0, or a negative errno. */
static int target_fd(const struct seccomp_notif *n)
{
	pid_t tid = (pid_t)n->pid;
	unsigned slot = (unsigned)tid % PIDFD_CACHE;
	int fd;

	if (g_pidfds[slot].tid == tid && g_pidfds[slot].fd > 0) {
		fd = sv_getfd(g_pidfds[slot].fd, (int)n->data.args[0]);
		if (fd != -ESRCH)
			return fd;
	}
	if (g_pidfds[slot].fd > 0)
		close(g_pidfds[slot].fd);
	g_pidfds[slot].tid = 0;
	g_pidfds[slot].fd = sv_pidfd(tid);
	if (g_pidfds[slot].fd < 0)
		return g_pidfds[slot].fd;
	g_pidfds[slot].tid = tid;
	fd = sv_getfd(g_pidfds[slot].fd, (int)n->data.args[0]);
	if (!sv_pidfd_of_thread()) {
		close(g_pidfds[slot].fd);
		g_pidfds[slot].tid = 0;
		g_pidfds[slot].fd = -1;
	}
	/* The pidfd was opened after the call was made: the id may name another process now. */
	if (!sv_id_valid(n->id)) {
		if (fd >= 0)
			close(fd);
		return -ESRCH;
	}
	return fd;
}

/* The program's uid (the Uid line's effective uid in /proc/TID/status), or -1. */
static long target_uid(pid_t tid)
{
	char path[48], buf[1024], *u;
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return -1;
	buf[len] = '\0';
	u = strstr(buf, "\nUid:");
	if (u == NULL)
		return -1;
	strtol(u + 5, &u, 10); /* the real uid; the effective one follows */
	return strtol(u, NULL, 10);
}

/* A call the supervisor cannot serve (it cannot take the program's fd): said once per call and
 * errno, then once a minute with the count since, so a server that retries in a loop does not
 * flood the log. An EPERM from a program that changed its user names that and the fix. */
static void cannot_serve_said(const struct seccomp_notif *n, const char *what, int e)
{
	static struct {
		const char *what;
		int e;
		uint64_t said_ms, since;
	} seen[8];
	uint64_t now = shim_now_ms();
	unsigned i;
	long uid;

	for (i = 0; i < 8 && seen[i].what != NULL; i++)
		if (seen[i].what == what && seen[i].e == e)
			break;
	if (i < 8 && seen[i].what != NULL) {
		seen[i].since++;
		if (now - seen[i].said_ms < 60000)
			return;
		shim_log(SHIM_LOG_ERROR, "event=cannot_serve call=%s caller=%u errno=%d error=\"%s\" repeated=%llu", what,
			 n->pid, e, strerror(e), (unsigned long long)seen[i].since);
		seen[i].said_ms = now;
		seen[i].since = 0;
		return;
	}
	if (i < 8) {
		seen[i].what = what;
		seen[i].e = e;
		seen[i].said_ms = now;
	}
	uid = e == EPERM ? target_uid((pid_t)n->pid) : -1;
	if (uid >= 0 && (uid_t)uid != geteuid())
		shim_log(SHIM_LOG_ERROR,
			 "event=cannot_serve call=%s caller=%u errno=%d error=\"%s\" reason=uid_changed uid=%ld "
			 "supervisor_uid=%u hint=\"the program changed its user and the supervisor may not take its "
			 "sockets: start the program as that user, or give the supervisor CAP_SYS_PTRACE; no header "
			 "reaches the program meanwhile\"",
			 what, n->pid, e, strerror(e), uid, (unsigned)geteuid());
	else
		shim_log(SHIM_LOG_ERROR, "event=cannot_serve call=%s caller=%u errno=%d error=\"%s\"", what, n->pid, e,
			 strerror(e));
}

/* accept() the supervisor cannot serve: it fails, and the header never reaches the program. */
static void cannot_serve(const struct seccomp_notif *n, const char *what, int e)
{
	cannot_serve_said(n, what, e);
	sv_respond(n->id, e == EBADF ? EBADF : EPERM);
}

static void on_accept(const struct seccomp_notif *n, bool four)
{
	int flags = four ? (int)n->data.args[3] : 0;
	uint64_t lc = 0;
	uint16_t port = 0;
	int lfd, fl;
	struct hold *h;

	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
		sv_respond(n->id, EINVAL);
		return;
	}
	lfd = target_fd(n);
	if (lfd < 0) {
		if (lfd == -EBADF || lfd == -ESRCH)
			sv_respond(n->id, -lfd);
		else
			cannot_serve(n, "accept", -lfd);
		return;
	}
	/* Not a covered TCP listener (a UNIX socket, an uncovered port): the kernel's own call. */
	if (!covered_listener(lfd, &lc, &port)) {
		close(lfd);
		sv_respond(n->id, 0);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		close(lfd);
		sv_respond(n->id, ENOMEM);
		return;
	}
	h->n = *n;
	h->lfd = lfd;
	h->lcookie = lc;
	h->lport = port;
	h->flags = flags;
	fl = fcntl(lfd, F_GETFL); /* the open file's flags: the program's own */
	h->nonblock = fl >= 0 && (fl & O_NONBLOCK);
	h->next = g_holds;
	g_holds = h;
	h->want_addr = n->data.args[1] != 0;
	/* Held (a blocking listener that must wait): the kernel's blocking accept() gives up with
	 * EAGAIN after the listener's SO_RCVTIMEO, and so does a held call (a connection
	 * mid-header then waits in the stash for the next call, as a queued one would). Asked only
	 * then: a call served at once costs no system call for it. */
	if (!accept_step(h) && !h->nonblock)
		h->give_up = shim_rcvtimeo_deadline(h->lfd);
}

/* getpeername(): the header's client; getsockname() (trapped under PROXYSHIM_LOCAL_ADDR=header):
 * its destination. Else, and for any socket not in the table, the kernel's own call. */
static void on_getname(const struct seccomp_notif *n, bool local)
{
	int fd = target_fd(n), ulen;
	const struct sv_peer *e;
	const struct shim_addr *a = NULL;

	if (fd < 0) {
		/* The kernel's answer (EBADF ...). Refused (the program changed its user): the
		 * kernel's too, the balancer's address, never a header's; said. */
		if (fd != -EBADF && fd != -ESRCH)
			cannot_serve_said(n, "getpeername", -fd);
		sv_respond(n->id, 0);
		return;
	}
	e = sv_peer_get(sv_cookie(fd));
	close(fd);
	if (e != NULL)
		a = local ? (e->local.family != 0 ? &e->local : NULL) : &e->client;
	if (a == NULL) {
		sv_respond(n->id, 0);
		return;
	}
	if (n->data.args[1] == 0 || n->data.args[2] == 0 ||
	    sv_mem_read((pid_t)n->pid, n->data.args[2], &ulen, sizeof(ulen)) < 0) {
		sv_respond(n->id, EFAULT);
		return;
	}
	if (ulen < 0) {
		sv_respond(n->id, EINVAL);
		return;
	}
	if (!sv_id_valid(n->id))
		return;
	if (write_addr((pid_t)n->pid, n->data.args[1], n->data.args[2], (socklen_t)ulen, a, NULL, 0) < 0) {
		sv_respond(n->id, EFAULT);
		return;
	}
	respond_val(n->id, 0);
}

/* listen(): the kernel's own call, after TCP_DEFER_ACCEPT on a covered TCP socket, so that
 * accept() nearly always finds the header there and a held call stays short. */
static void on_listen(const struct seccomp_notif *n)
{
	const struct shim_config *c = shim_config();
	int fd = target_fd(n), v = 0;
	socklen_t l = sizeof(v);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (fd >= 0) {
		if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) == 0 && v == IPPROTO_TCP &&
		    getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
		    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
			uint16_t port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
								     : ((struct sockaddr_in6 *)&ss)->sin6_port);
			if (port != 0 && shim_port_covered(c, port)) {
				int secs = (int)((c->timeout_ms + 999) / 1000);
				setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
				shim_log(SHIM_LOG_INFO, "event=listen port=%u", port);
			}
		}
		close(fd);
	}
	sv_respond(n->id, 0);
}

void sv_notif_receive(void)
{
	struct seccomp_notif n;

	memset(&n, 0, sizeof(n));
	if (ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0)
		return; /* ENOENT: the caller went away before we looked */
	if (n.data.arch != AUDIT_ARCH_X86_64) {
		sv_respond(n.id, ENOSYS);
		return;
	}
	switch (n.data.nr) {
	case SYS_accept:
		on_accept(&n, false);
		break;
	case SYS_accept4:
		on_accept(&n, true);
		break;
	case SYS_getpeername:
		on_getname(&n, false);
		break;
	case SYS_getsockname:
		on_getname(&n, true);
		break;
	case SYS_listen:
		on_listen(&n);
		break;
	case SYS_io_uring_setup: {
		/* Its accepts pass the filter by: their headers would reach the program as data.
		 * Said once; with --no-io-uring refused, so that a program that can fall back to
		 * accept() does. */
		static bool said;
		if (!said && g_refuse_io_uring)
			shim_log(SHIM_LOG_WARN, "event=io_uring caller=%u note=\"io_uring_setup() refused (ENOSYS, "
						"--no-io-uring): accepts through io_uring would bypass the supervisor\"",
				 n.pid);
		else if (!said)
			shim_log(SHIM_LOG_WARN, "event=io_uring caller=%u note=\"the program uses io_uring: connections "
						"it accepts through io_uring are not served (their headers reach it as "
						"data); --no-io-uring makes io_uring_setup() fail with ENOSYS\"", n.pid);
		said = true;
		sv_respond(n.id, g_refuse_io_uring ? ENOSYS : 0);
		break;
	}
	default:
		sv_respond(n.id, 0);
	}
}

int sv_notif_pollfds(struct pollfd *p, int cap, int *timeout_ms)
{
	uint64_t now = shim_now_ms(), next = UINT64_MAX;
	int n = 0;

	if (cap > MAX_POLLED)
		cap = MAX_POLLED;
	stash_expire(now);
	for (struct hold *h = g_holds; h; h = h->next) {
		bool conn = h->conn && !h->conn->done;
		if (n < cap) {
			p[n].fd = conn ? h->conn->fd : h->lfd;
			p[n].events = conn ? POLLIN | POLLRDHUP : POLLIN;
			p[n].revents = 0;
			g_polled[n++] = h;
		}
		if (conn && h->conn->deadline < next)
			next = h->conn->deadline;
		if (h->give_up && h->give_up < next)
			next = h->give_up;
	}
	g_npolled = n;
	if (g_holds == NULL && g_stash == NULL) {
		*timeout_ms = -1;
		return n;
	}
	/* Held calls are checked every tick: a signal may have aborted one. */
	if (now + TICK_MS < next)
		next = now + TICK_MS;
	*timeout_ms = next > now ? (int)(next - now) : 0;
	return n;
}

/* A held call still waiting past its listener's SO_RCVTIMEO: EAGAIN, its connection stashed. */
static void timed_out(struct hold *h, uint64_t now)
{
	if (h->give_up && now >= h->give_up)
		finish(h, EAGAIN);
}

void sv_notif_resume(const struct pollfd *p, int n)
{
	uint64_t now = shim_now_ms();
	bool tick = now >= g_next_tick;

	if (tick)
		g_next_tick = now + TICK_MS;
	for (int i = 0; i < n && i < g_npolled; i++) {
		struct hold *h = g_polled[i];
		bool due;

		if (h == NULL)
			continue;
		/* A listener's wait also looks at the stash on the tick: a connection an aborted
		 * call left there may be this call's. */
		due = p[i].revents != 0 || (h->conn && !h->conn->done && now >= h->conn->deadline) ||
		      (h->give_up && now >= h->give_up) ||
		      (tick && h->conn == NULL && g_stash != NULL);
		if (!due && !tick)
			continue;
		if (!sv_id_valid(h->n.id)) {
			hold_drop(h); /* aborted: its connection waits for the next call */
			continue;
		}
		if (!due)
			continue;
		if (h->conn && (p[i].revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)))
			h->conn->eof = true;
		if (!accept_step(h))
			timed_out(h, now);
	}
	/* Holds beyond what was polled: looked at on the tick. */
	if (tick)
		for (struct hold *h = g_holds, *next; h; h = next) {
			next = h->next;
			bool polled = false;
			for (int i = 0; i < g_npolled && !polled; i++)
				polled = g_polled[i] == h;
			if (!polled && !sv_id_valid(h->n.id))
				hold_drop(h);
			else if (!polled && !accept_step(h))
				timed_out(h, now);
		}
	g_npolled = 0;
}

/* ---- the probe ---- */

int sv_probe_serve(pid_t child, int child_fd, const char **what)
{
	struct seccomp_notif n;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(SV_PROBE_PORT),
				  .sin_addr.s_addr = htonl(0xC0000201)}; /* 192.0.2.1 */
	socklen_t full = sizeof(sin);
	int ulen = 0, pidfd, fd, rc;
	uint64_t flag = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;

	memset(&n, 0, sizeof(n));
	*what = "SECCOMP_IOCTL_NOTIF_RECV";
	if (ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0)
		return -errno;
	*what = "the probe's notification";
	if (n.data.nr != SYS_getpeername || (int)n.data.args[0] != SV_PROBE_FD || (pid_t)n.pid != child) {
		sv_respond(n.id, EPERM);
		return -EPROTO;
	}
	*what = "pidfd_open";
	pidfd = sv_pidfd((pid_t)n.pid);
	if (pidfd < 0) {
		rc = pidfd;
		goto fail;
	}
	*what = "pidfd_getfd";
	fd = sv_getfd(pidfd, child_fd);
	close(pidfd);
	if (fd < 0) {
		rc = fd;
		goto fail;
	}
	*what = "process_vm_readv";
	rc = sv_mem_read(child, n.data.args[2], &ulen, sizeof(ulen));
	if (rc == -EPERM || rc == -ENOSYS || rc == -EACCES) {
		sv_mem_use_proc();
		*what = "process_vm_readv and /proc/PID/mem";
		rc = sv_mem_read(child, n.data.args[2], &ulen, sizeof(ulen));
	}
	if (rc == 0 && ulen != (int)sizeof(struct sockaddr_storage))
		rc = -EPROTO;
	if (rc == 0) {
		*what = sv_mem_uses_proc() ? "writes to /proc/PID/mem" : "process_vm_writev";
		rc = sv_mem_write(child, n.data.args[1], &sin, sizeof(sin));
		if (rc == 0)
			rc = sv_mem_write(child, n.data.args[2], &full, sizeof(full));
	}
	if (rc < 0) {
		close(fd);
		goto fail;
	}
	/* Linux 6.6: the target runs on the supervisor's CPU after an answer (about half the
	 * round trip). Optional. */
	g_sync_wake = ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flag) == 0;
	*what = "SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND";
	struct seccomp_notif_addfd a = {.id = n.id, .flags = SECCOMP_ADDFD_FLAG_SEND, .srcfd = (uint32_t)fd,
					.newfd_flags = O_CLOEXEC};
	rc = ioctl(g_nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0 ? -errno : 0;
	close(fd);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	sv_respond(n.id, EPERM);
	return rc;
}
