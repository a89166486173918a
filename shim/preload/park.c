/* Parking: a trusted connection whose header has not fully arrived waits on its listener
 * instead of in accept(): for PROXYSHIM_TIMEOUT_MS, or in lazy mode for the grace
 * (PROXYSHIM_LAZY_GRACE_MS), after which it is handed over pending. Each listener that parks
 * gets an epoll fd of the shim's holding its parked connections (readable only once the bytes
 * they need are there, by SO_RCVLOWAT) and a timerfd for the oldest one's deadline. That
 * epoll fd is added to every epoll instance the program watches the listener with, under the
 * listener's own event data, so the program's own loop wakes and calls accept(), which hands
 * the connection over.
 *
 * Signal safety: accept(), close() and dup2() may run in a signal handler. A park's lock is
 * held only with every signal blocked in the holding thread (park_lock), so no handler runs
 * on top of a holder; a close() or dup2() that releases a park never waits for the lock (a
 * flag, then a trylock: whoever holds the lock releases the park as it unlocks); and parks
 * and their arrays are mmap'd, never malloc'd.
 *
 * errno: the functions here change it freely and report failure as a negative errno; the hooks
 * above them (accept(), epoll_ctl()) restore it. Only shim_park_release() keeps it itself. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "shim.h"

/* pthread_mutex_trylock moved into libc under GLIBC_2.34; the old version is still there. */
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver pthread_mutex_trylock,pthread_mutex_trylock@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver pthread_mutex_trylock,pthread_mutex_trylock@GLIBC_2.17");
#endif

#define MAX_REGS 8     /* epoll instances watching one listener that the shim follows */
#define SERVICE_BATCH 64

struct parked {
	int fd;
	uint64_t ino; /* identity, checked before the shim closes it */
	uint64_t since_ms;
	struct shim_progress pr;
	socklen_t peerlen;
	struct sockaddr_storage peer;
};

struct epreg {
	int ep;
	uint32_t events;
	uint64_t data;
	bool added; /* the park's epoll fd is in ep */
};

struct shim_park {
	struct shim_ext ext;        /* first: what the listener's, parked and internal entries hold */
	pthread_mutex_t lock;
	struct shim_park *next_all; /* every park ever made, for the fork handler */
	unsigned gen;               /* the process generation it belongs to (bumped by fork) */
	_Atomic bool lost;          /* the program closed one of its fds */
	_Atomic bool doomed;        /* its listener is gone: release it at the next unlock */
	_Atomic unsigned n;         /* parked connections */
	bool dead;                  /* its listener is gone */
	_Atomic bool blocking;      /* the listener was blocking when it last parked */
	uint16_t lport;
	int epfd, tfd;
	uint64_t epfd_ino, tfd_ino;
	unsigned cap;
	size_t vbytes;    /* mapped for v */
	struct parked *v; /* oldest first; mmap'd */
	unsigned nregs;
	struct epreg regs[MAX_REGS];
};

static _Atomic unsigned g_gen;
static struct shim_park *_Atomic g_all;

/* Parks come from mmap'd chunks, handed out lock-free: accept() reaches park_of(). */
#define CHUNK_PARKS 64
struct park_chunk {
	_Atomic unsigned used;
	struct shim_park v[CHUNK_PARKS];
};
static struct park_chunk *_Atomic g_chunk;
static struct shim_park *_Atomic g_spare; /* made but not published (park_of's lost race) */

static struct shim_park *park_new(void)
{
	struct shim_park *p = atomic_exchange(&g_spare, NULL);
	if (p)
		return p;
	for (;;) {
		struct park_chunk *c = atomic_load(&g_chunk), *fresh;
		if (c) {
			unsigned i = atomic_fetch_add(&c->used, 1);
			if (i < CHUNK_PARKS)
				return &c->v[i];
		}
		fresh = mmap(NULL, sizeof(*fresh), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (fresh == MAP_FAILED)
			return NULL;
		if (!atomic_compare_exchange_strong(&g_chunk, &c, fresh))
			munmap(fresh, sizeof(*fresh));
	}
}

static void release_locked(struct shim_park *p);
static const struct shim_ext_ops park_ops;

/* A release asked for by close() or dup2() (shim_park_release) is carried out by whoever
 * holds the lock. */
static void doom_locked(struct shim_park *p)
{
	if (atomic_exchange(&p->doomed, false))
		release_locked(p);
}

/* The lock, with every signal blocked in this thread until park_unlock(): a handler that
 * interrupted the holder could otherwise wait on its own thread (accept() in a handler). */
static void park_lock(struct shim_park *p, sigset_t *old)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, old); /* per thread on Linux; older symbol than pthread_sigmask */
	pthread_mutex_lock(&p->lock);
	if (SHIM_UNLIKELY(atomic_load(&p->doomed)))
		doom_locked(p);
}

/* Unlocks, then looks for a release asked for meanwhile: the flag is set before the asker's
 * trylock and read after this unlock, so either the asker got the lock or this sees the flag. */
static void park_unlock(struct shim_park *p, const sigset_t *old)
{
	for (;;) {
		pthread_mutex_unlock(&p->lock);
		atomic_thread_fence(memory_order_seq_cst);
		if (SHIM_LIKELY(!atomic_load(&p->doomed)) || pthread_mutex_trylock(&p->lock) != 0)
			break;
		doom_locked(p);
	}
	sigprocmask(SIG_SETMASK, old, NULL);
}

static unsigned max_parked(void)
{
	return shim_config()->max_parked;
}

/* How long a connection stays parked: its header's whole time in accept mode; in lazy mode
 * the grace, never past the header's own deadline. */
static uint64_t park_limit_ms(void)
{
	const struct shim_config *c = shim_config();
	return c->lazy && c->lazy_grace_ms < c->timeout_ms ? c->lazy_grace_ms : c->timeout_ms;
}

static struct shim_park *park_of(struct shim_fd *l, bool create)
{
	struct shim_park *p, *expected = NULL;
	/* A child made past the fork() hook (daemon(), _Fork(), clone()) meets its parent's parks
	 * here first: they are reset before it takes a lock another thread of the parent held. */
	shim_proc_check();
	p = __atomic_load_n((struct shim_park **)&l->ext, __ATOMIC_ACQUIRE);
	if (p || !create)
		return p;
	p = park_new();
	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	p->ext.ops = &park_ops;
	shim_park_register(); /* a park made before the constructor ran (another library's) */
	p->epfd = p->tfd = -1;
	p->gen = atomic_load(&g_gen);
	p->lport = ntohs(l->local.port);
	if (!__atomic_compare_exchange_n((struct shim_park **)&l->ext, &expected, p, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
		atomic_store(&g_spare, p); /* unused: the next park_new() takes it */
		return expected;
	}
	/* Parks are never freed (a thread may still hold one when its listener closes); they
	 * are few: one per listening fd that ever parked or was watched by epoll. */
	p->next_all = atomic_load(&g_all);
	while (!atomic_compare_exchange_weak(&g_all, &p->next_all, p))
		;
	/* The listener closed before p was in its entry (a signal handler's dup2() over it, in
	 * this thread, between shim_listener() and here): entry_clear() swaps kind before ext,
	 * so either it took p and releases it, or p is taken back here. */
	if (SHIM_UNLIKELY(atomic_load(&l->kind) != SHIM_FD_LISTENER)) {
		expected = p;
		if (__atomic_compare_exchange_n((struct shim_park **)&l->ext, &expected, NULL, false,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			p->dead = true;
		return NULL;
	}
	return p;
}

bool shim_park_pending(const struct shim_fd *l)
{
	const struct shim_park *p = __atomic_load_n((struct shim_park *const *)&l->ext, __ATOMIC_ACQUIRE);
	return p && atomic_load_explicit(&p->n, memory_order_relaxed) > 0;
}

bool shim_park_blocking(const struct shim_fd *l)
{
	const struct shim_park *p = __atomic_load_n((struct shim_park *const *)&l->ext, __ATOMIC_ACQUIRE);
	return p && atomic_load_explicit(&p->blocking, memory_order_relaxed);
}

/* The inode behind fd (0 if none): who an fd number is now. */
static uint64_t fd_ino(int fd)
{
	struct stat st;
	return syscall(SYS_fstat, fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Closes one of the park's own fds, which the program has not closed behind its back: the
 * table says it is still ours, and the inode agrees (a raw close_range syscall or closefrom
 * before glibc 2.34 closes fds without the table knowing; the number may be the program's
 * now). */
static void close_own(struct shim_park *p, int fd, uint64_t ino)
{
	struct shim_fd *e = shim_fd_peek(fd);
	unsigned kind;
	if (fd < 0)
		return;
	kind = e ? atomic_load(&e->kind) : SHIM_FD_NONE;
	if ((kind == SHIM_FD_INTERNAL || kind == SHIM_FD_PARKED) && shim_fd_ext(e) == p) {
		shim_fd_forget(fd);
		if (fd_ino(fd) == ino)
			real_close(fd);
	}
}

static void mirror(struct shim_park *p, struct epreg *r, int op)
{
	struct epoll_event ev;
	/* EPOLLEXCLUSIVE is refused on an epoll fd; EPOLLOUT means nothing for a listener. */
	ev.events = (r->events & (EPOLLET | EPOLLONESHOT | EPOLLWAKEUP)) | EPOLLIN;
	ev.data.u64 = r->data;
	if (op == EPOLL_CTL_ADD && shim_fd_kind(r->ep) != SHIM_FD_EPOLL)
		return; /* closed since: the number may belong to something else now */
	if (real_epoll_ctl(r->ep, op, p->epfd, &ev) == 0)
		r->added = op != EPOLL_CTL_DEL;
	else if (op == EPOLL_CTL_ADD && errno == EEXIST)
		r->added = true;
	else if (op == EPOLL_CTL_MOD && errno == ENOENT)
		/* Not the instance joined before: the program closed it and a new one got its
		 * number (an event loop rebuilt). Join this one. */
		r->added = real_epoll_ctl(r->ep, EPOLL_CTL_ADD, p->epfd, &ev) == 0;
}

/* Everything the park holds goes; the registrations (the program's intent) stay. */
static void reset_locked(struct shim_park *p, bool close_fds)
{
	unsigned n = atomic_load(&p->n);
	for (unsigned i = 0; i < n; i++) {
		if (close_fds)
			close_own(p, p->v[i].fd, p->v[i].ino);
	}
	atomic_fetch_sub(&shim_parked_total, n);
	shim_stats_touch(); /* also from close(): never starts the writer thread */
	atomic_store(&p->n, 0);
	if (close_fds) {
		close_own(p, p->tfd, p->tfd_ino);
		close_own(p, p->epfd, p->epfd_ino);
	}
	p->tfd = p->epfd = -1;
	for (unsigned i = 0; i < p->nregs; i++)
		p->regs[i].added = false;
	atomic_store(&p->lost, false);
}

/* A park inherited across fork() is the parent's: the child closes its copies of the parked
 * connections (the parent still holds them) and starts empty. A park that lost an fd to the
 * program (daemons close every fd above 2) closes what is left of its own and starts again. */
static void check_locked(struct shim_park *p)
{
	unsigned gen = atomic_load(&g_gen);
	if (SHIM_UNLIKELY(p->gen != gen)) {
		unsigned n = atomic_load(&p->n);
		atomic_fetch_add(&shim_parked_total, n); /* reset_locked takes them off again */
		reset_locked(p, true);
		p->gen = gen;
	}
	if (SHIM_UNLIKELY(atomic_load(&p->lost))) {
		shim_log(SHIM_LOG_WARN, "event=reset reason=fd-closed-by-program port=%u parked=%u", p->lport,
			 atomic_load(&p->n));
		reset_locked(p, true);
	}
}

/* The park's epoll and timer fds, made once: 0, or a negative errno. */
static int setup_locked(struct shim_park *p)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int err;
	if (p->epfd >= 0)
		return 0;
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->epfd < 0)
		return -errno;
	p->epfd_ino = fd_ino(p->epfd);
	shim_fd_mark_owned(p->epfd, &p->ext, SHIM_FD_INTERNAL);
	p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (p->tfd < 0)
		goto fail;
	p->tfd_ino = fd_ino(p->tfd);
	shim_fd_mark_owned(p->tfd, &p->ext, SHIM_FD_INTERNAL);
	ev.data.fd = p->tfd;
	if (real_epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->tfd, &ev) < 0)
		goto fail;
	for (unsigned i = 0; i < p->nregs; i++)
		mirror(p, &p->regs[i], EPOLL_CTL_ADD);
	return 0;
fail:
	err = errno;
	close_own(p, p->tfd, p->tfd_ino);
	close_own(p, p->epfd, p->epfd_ino);
	p->tfd = p->epfd = -1;
	return -err;
}

static void arm_locked(struct shim_park *p)
{
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	if (atomic_load(&p->n) > 0) {
		uint64_t at = p->v[0].since_ms + park_limit_ms();
		its.it_value.tv_sec = (time_t)(at / 1000);
		its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void remove_locked(struct shim_park *p, unsigned i)
{
	unsigned n = atomic_load(&p->n);
	struct shim_fd *e = shim_fd_peek(p->v[i].fd);
	real_epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->v[i].fd, NULL);
	/* A header just read has turned the entry into the connection's own: keep that. */
	if (e && atomic_load(&e->kind) == SHIM_FD_PARKED)
		shim_fd_forget(p->v[i].fd);
	memmove(&p->v[i], &p->v[i + 1], (n - i - 1) * sizeof(p->v[0]));
	atomic_store(&p->n, n - 1);
	atomic_fetch_sub(&shim_parked_total, 1);
	shim_stats_changed();
}

static void drop_locked(struct shim_park *p, unsigned i)
{
	int fd = p->v[i].fd;
	remove_locked(p, i);
	real_close(fd);
}

static void log_overflow(const struct parked *c, uint16_t lport)
{
	shim_stat(SHIM_R_REJECTED, SHIM_REASON_OVERFLOW, 0, 0);
	if (shim_log_on(SHIM_LOG_WARN)) {
		char peer[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_WARN,
			 "event=reject reason=overflow detail=\"PROXYSHIM_MAX_PARKED reached: oldest closed\" "
			 "peer=%s port=%u",
			 shim_sa_str((const struct sockaddr *)&c->peer, peer), lport);
	}
}

/* Room for more parked connections: mmap'd pages, doubled by mremap (no malloc in accept()).
 * 0, or a negative errno. */
static int grow_locked(struct shim_park *p)
{
	size_t bytes = p->vbytes ? p->vbytes * 2 : 4096;
	void *v = p->v ? mremap(p->v, p->vbytes, bytes, MREMAP_MAYMOVE)
		       : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v == MAP_FAILED)
		return -errno;
	p->v = v;
	p->vbytes = bytes;
	p->cap = (unsigned)(bytes / sizeof(*p->v));
	return 0;
}

int shim_park_add(struct shim_fd *l, int lfd, int fd, const struct sockaddr_storage *peer,
		  socklen_t peerlen, const struct shim_progress *pr)
{
	struct shim_park *p = park_of(l, true);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
	int fl, ret;
	sigset_t old;
	unsigned n;

	if (!p)
		return -ENOMEM; /* no park: no memory for one, or the listener just closed */
	fl = shim_fd_status(lfd);
	park_lock(p, &old);
	check_locked(p);
	ret = p->dead ? -EBADF : setup_locked(p); /* dead: its listener is gone */
	if (ret < 0)
		goto out;
	atomic_store_explicit(&p->blocking, fl >= 0 && !(fl & O_NONBLOCK), memory_order_relaxed);
	n = atomic_load(&p->n);
	/* Lazy mode at the cap: the caller hands this one over pending, as without a grace. */
	if (shim_config()->lazy && atomic_load(&shim_parked_total) >= max_parked()) {
		ret = -ENOSPC;
		goto out;
	}
	/* The process-wide cap: the oldest of this listener makes room. */
	if (atomic_load(&shim_parked_total) >= max_parked() && n > 0) {
		log_overflow(&p->v[0], p->lport);
		drop_locked(p, 0);
		n--;
	}
	if (n == p->cap && (ret = grow_locked(p)) < 0)
		goto out;
	ev.data.fd = fd;
	shim_header_lowat(fd, pr);
	if (real_epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	p->v[n].fd = fd;
	p->v[n].ino = fd_ino(fd);
	p->v[n].since_ms = shim_now_ms();
	p->v[n].pr = *pr;
	p->v[n].peerlen = peerlen;
	memcpy(&p->v[n].peer, peer, sizeof(*peer));
	shim_fd_mark_owned(fd, &p->ext, SHIM_FD_PARKED);
	atomic_store(&p->n, n + 1);
	atomic_fetch_add(&shim_parked_total, 1);
	shim_stats_changed();
	if (n == 0)
		arm_locked(p);
	ret = 0;
	if (shim_log_on(SHIM_LOG_DEBUG)) {
		char ps[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_DEBUG, "event=park peer=%s port=%u seen=%zu parked=%u",
			 shim_sa_str((const struct sockaddr *)peer, ps), p->lport, pr->seen, n + 1);
	}
out:
	park_unlock(p, &old);
	return ret;
}

static int index_of(const struct shim_park *p, int fd)
{
	unsigned n = atomic_load(&p->n);
	for (unsigned i = 0; i < n; i++)
		if (p->v[i].fd == fd)
			return (int)i;
	return -1;
}

/* Hands connection i over: off the park, SO_RCVLOWAT back to 1, the address out. */
static int hand_over_locked(struct shim_park *p, unsigned i, enum shim_verdict v,
			    struct sockaddr *addr, socklen_t *addrlen)
{
	int fd = p->v[i].fd;
	struct sockaddr_storage peer = p->v[i].peer;
	socklen_t peerlen = p->v[i].peerlen;
	bool rewritten = v == SHIM_ACCEPT_HEADER && p->v[i].pr.rewritten;
	struct shim_addr client = p->v[i].pr.client;

	remove_locked(p, i);
	shim_header_lowat_reset(fd);
	if (rewritten)
		shim_addr_to_user(&client, addr, addrlen);
	else
		shim_sa_to_user(&peer, peerlen, addr, addrlen);
	return fd;
}

/* Lazy mode: the oldest connection's grace is over, its header still incomplete. It goes to the
 * program as lazy mode without a grace would have given it at accept(): pending, with the real
 * address, its header left to the first read or getpeername() by the deadline counted from
 * its arrival. Its fd, or -EAGAIN when it had to be closed (no memory for its entry). */
static int grace_over_locked(struct shim_park *p, struct sockaddr *addr, socklen_t *addrlen)
{
	struct sockaddr_storage peer = p->v[0].peer;
	struct shim_conn_ref c = {p->v[0].fd, (const struct sockaddr *)&peer, p->lport};
	uint64_t deadline = p->v[0].since_ms + shim_config()->timeout_ms;
	size_t seen = p->v[0].pr.seen;
	int fd = hand_over_locked(p, 0, SHIM_PASS, addr, addrlen);

	if (shim_lazy_mark(fd, c.peer, c.lport, deadline) == 0) {
		if (SHIM_UNLIKELY(shim_log_on(SHIM_LOG_DEBUG))) {
			char ps[SHIM_ADDRSTR_LEN];
			shim_log(SHIM_LOG_DEBUG, "event=pending reason=grace peer=%s port=%u seen=%zu",
				 shim_sa_str(c.peer, ps), c.lport, seen);
		}
		return fd;
	}
	if (shim_header_none(&c, seen, SHIM_REASON_NOMEM) == SHIM_PASS)
		return fd;
	real_close(fd);
	return -EAGAIN;
}

int shim_park_service(struct shim_fd *l, struct sockaddr *addr, socklen_t *addrlen)
{
	struct shim_park *p = park_of(l, false);
	struct epoll_event evs[SERVICE_BATCH];
	int out = -EAGAIN, nev;
	uint64_t now, limit;
	sigset_t old;

	if (!p)
		return -EAGAIN;
	park_lock(p, &old);
	check_locked(p);
	if (p->epfd < 0 || atomic_load(&p->n) == 0)
		goto unlock;
	nev = epoll_wait(p->epfd, evs, SERVICE_BATCH, 0);
	for (int k = 0; k < nev; k++) {
		struct shim_conn_ref c;
		enum shim_verdict v;
		int i;

		if (evs[k].data.fd == p->tfd) {
			uint64_t ticks;
			ssize_t r = real_read(p->tfd, &ticks, sizeof(ticks));
			(void)r;
			continue;
		}
		if (out >= 0 || (i = index_of(p, evs[k].data.fd)) < 0)
			continue; /* one hand-over a call; the rest stay ready for the next call */
		c.fd = p->v[i].fd;
		c.peer = (const struct sockaddr *)&p->v[i].peer;
		c.lport = p->lport;
		v = shim_header_step(&c, &p->v[i].pr,
				     (evs[k].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
		if (v == SHIM_INCOMPLETE)
			shim_header_lowat(c.fd, &p->v[i].pr);
		else if (v == SHIM_REJECT)
			drop_locked(p, (unsigned)i);
		else
			out = hand_over_locked(p, (unsigned)i, v, addr, addrlen);
	}
	/* Expiry, oldest first. */
	now = shim_now_ms();
	limit = park_limit_ms();
	while (atomic_load(&p->n) > 0 && p->v[0].since_ms + limit <= now) {
		struct shim_conn_ref c = {p->v[0].fd, (const struct sockaddr *)&p->v[0].peer, p->lport};
		enum shim_verdict v;
		if (shim_config()->lazy) {
			/* The grace is over: handed over pending, one a call (the timer, already
			 * due, wakes the program for the next). */
			if (out >= 0)
				break;
			out = grace_over_locked(p, addr, addrlen);
			continue;
		}
		v = shim_header_none(&c, p->v[0].pr.seen, SHIM_REASON_TIMEOUT);
		if (v == SHIM_PASS && out < 0)
			out = hand_over_locked(p, 0, v, addr, addrlen);
		else
			drop_locked(p, 0);
	}
	arm_locked(p);
unlock:
	park_unlock(p, &old);
	return out;
}

int shim_park_wait(struct shim_fd *l, int lfd, uint64_t give_up)
{
	struct shim_park *p = park_of(l, false);
	struct pollfd pf[2] = {{.fd = lfd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
	int r, wait_ms = -1;
	uint64_t now = shim_now_ms();
	sigset_t old;

	if (!p)
		return 1;
	if (give_up && now >= give_up)
		return -EAGAIN;
	park_lock(p, &old);
	pf[1].fd = p->epfd;
	if (atomic_load(&p->n) > 0) {
		uint64_t at = p->v[0].since_ms + park_limit_ms();
		wait_ms = at > now ? (int)(at - now) : 0;
	}
	park_unlock(p, &old);
	if (pf[1].fd < 0)
		return 1;
	if (give_up && (wait_ms < 0 || give_up - now < (uint64_t)wait_ms))
		wait_ms = (int)(give_up - now);
	r = real_poll(pf, 2, wait_ms);
	if (r < 0)
		return errno == EINTR ? -EINTR : 0;
	if (pf[1].revents)
		return 0;
	if (pf[0].revents)
		return 1;
	return give_up && shim_now_ms() >= give_up ? -EAGAIN : 0;
}

void shim_park_epoll_ctl(struct shim_fd *l, int ep, int op, const struct epoll_event *ev)
{
	struct shim_park *p = park_of(l, op == EPOLL_CTL_ADD);
	struct shim_fd *epe;
	sigset_t old;
	unsigned i;

	if (!p)
		return;
	park_lock(p, &old);
	check_locked(p);
	for (i = 0; i < p->nregs; i++)
		if (p->regs[i].ep == ep)
			break;
	if (op == EPOLL_CTL_ADD) {
		if (i == p->nregs) {
			if (p->nregs == MAX_REGS)
				goto out; /* beyond what the shim follows: parked ones wait for accept() */
			p->nregs++;
			p->regs[i].added = false;
		}
		if ((epe = shim_fd_get(ep)) != NULL &&
		    atomic_load(&epe->kind) == SHIM_FD_NONE)
			atomic_store(&epe->kind, SHIM_FD_EPOLL);
		p->regs[i].ep = ep;
		p->regs[i].events = ev ? ev->events : EPOLLIN;
		p->regs[i].data = ev ? ev->data.u64 : 0;
		if (p->epfd >= 0)
			mirror(p, &p->regs[i], p->regs[i].added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
	} else if (i < p->nregs && op == EPOLL_CTL_MOD) {
		p->regs[i].events = ev ? ev->events : EPOLLIN;
		p->regs[i].data = ev ? ev->data.u64 : 0;
		if (p->regs[i].added)
			mirror(p, &p->regs[i], EPOLL_CTL_MOD);
	} else if (i < p->nregs && op == EPOLL_CTL_DEL) {
		if (p->regs[i].added)
			mirror(p, &p->regs[i], EPOLL_CTL_DEL);
		p->regs[i] = p->regs[--p->nregs];
	}
out:
	park_unlock(p, &old);
}

static void release_locked(struct shim_park *p)
{
	if (p->dead)
		return;
	reset_locked(p, p->gen == atomic_load(&g_gen));
	p->nregs = 0;
	p->dead = true;
	if (p->v)
		munmap(p->v, p->vbytes);
	p->v = NULL;
	p->vbytes = 0;
	p->cap = 0;
}

/* From close() and dup2(), maybe in a signal handler that interrupted this very park's holder:
 * never waits for the lock. */
void shim_park_release(struct shim_park *p)
{
	/* close() and dup2() may run in a signal handler that interrupted anything: keeps errno. */
	int saved = errno;
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	atomic_store(&p->doomed, true);
	atomic_thread_fence(memory_order_seq_cst);
	if (pthread_mutex_trylock(&p->lock) == 0) {
		doom_locked(p);
		park_unlock(p, &old);
	} else {
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	errno = saved;
}

void shim_park_lost_fd(struct shim_park *p)
{
	atomic_store(&p->lost, true);
}

/* The table lets go of an entry holding p: its listener (release the park) or one of its own
 * fds, parked or internal (the program closed it: notice at the next use). */
static void park_drop(struct shim_ext *x, unsigned kind)
{
	struct shim_park *p = (struct shim_park *)x;
	if (kind == SHIM_FD_LISTENER)
		shim_park_release(p);
	else
		shim_park_lost_fd(p);
}

static const struct shim_ext_ops park_ops = {.drop = park_drop};

void shim_park_register(void)
{
	shim_proc_on_new(shim_park_atfork_child);
}

int shim_park_pollfd(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	struct shim_park *p;
	shim_proc_check(); /* as park_of(): no parent's epoll fd to a new process */
	if (!e || atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_LISTENER)
		return -1;
	p = __atomic_load_n((struct shim_park **)&e->ext, __ATOMIC_ACQUIRE);
	if (!p || atomic_load(&p->n) == 0 || p->gen != atomic_load(&g_gen))
		return -1;
	return p->epfd;
}

void shim_park_atfork_child(void)
{
	/* Only this thread survives the fork: locks another thread held are reset, and every
	 * park notices the new generation when next used. */
	atomic_fetch_add(&g_gen, 1);
	atomic_store(&shim_parked_total, 0);
	for (struct shim_park *p = atomic_load(&g_all); p; p = p->next_all)
		pthread_mutex_init(&p->lock, NULL);
}
