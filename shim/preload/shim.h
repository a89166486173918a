/* Internals of the preload library shared by its files: real libc symbols, the frozen
 * configuration, the trusted set, the per-fd table, logging, and the header reader. */
#ifndef SHIM_PRELOAD_SHIM_H
#define SHIM_PRELOAD_SHIM_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "proxyshim.h"

#define SHIM_HIDDEN __attribute__((visibility("hidden")))
#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SHIM_LIKELY(x) __builtin_expect(!!(x), 1)

/* ---- real.c: the libc functions behind the hooks, resolved in the constructor ---- */
#define SHIM_REAL_LIST(X)                                                                   \
	X(int, accept, (int, struct sockaddr *, socklen_t *))                               \
	X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                         \
	X(int, getpeername, (int, struct sockaddr *, socklen_t *))                          \
	X(int, listen, (int, int))                                                          \
	X(int, close, (int))                                                                \
	X(int, close_range, (unsigned int, unsigned int, int))                              \
	X(void, closefrom, (int))                                                           \
	X(int, dup, (int))                                                                  \
	X(int, dup2, (int, int))                                                            \
	X(int, dup3, (int, int, int))                                                       \
	X(int, fcntl, (int, int, ...))                                                      \
	X(int, fcntl64, (int, int, ...))                                                    \
	X(int, epoll_ctl, (int, int, int, struct epoll_event *))                            \
	X(int, poll, (struct pollfd *, nfds_t, int))                                        \
	X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)) \
	X(int, getsockname, (int, struct sockaddr *, socklen_t *))                          \
	X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))               \
	X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *)) \
	X(ssize_t, read, (int, void *, size_t))                                             \
	X(pid_t, fork, (void))                                                              \
	X(int, system, (const char *))                                                      \
	X(int, execve, (const char *, char *const[], char *const[]))                        \
	X(int, execvpe, (const char *, char *const[], char *const[]))                       \
	X(int, fexecve, (int, char *const[], char *const[]))                                \
	X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *,     \
			     const posix_spawnattr_t *, char *const[], char *const[]))      \
	X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *,    \
			      const posix_spawnattr_t *, char *const[], char *const[]))     \
	X(ssize_t, readv, (int, const struct iovec *, int))                                 \
	X(ssize_t, recv, (int, void *, size_t, int))                                        \
	X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))    \
	X(ssize_t, recvmsg, (int, struct msghdr *, int))                                    \
	X(ssize_t, __read_chk, (int, void *, size_t, size_t))                               \
	X(ssize_t, __recv_chk, (int, void *, size_t, size_t, int))                          \
	X(ssize_t, __recvfrom_chk, (int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *))

#define SHIM_REAL_DECL(ret, name, args) extern ret(*real_##name) args;
SHIM_REAL_LIST(SHIM_REAL_DECL)
#undef SHIM_REAL_DECL

/* Resolves every real_ pointer still NULL, then sets shim_resolved; called by the constructor,
 * and by a hook that runs before it. One load once done. */
void shim_resolve(void);
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

/* The fd's status flags (O_NONBLOCK ...), or -1; errno untouched either way. */
static inline int shim_fd_status(int fd)
{
	int saved = errno, fl = real_fcntl(fd, F_GETFL);
	errno = saved;
	return fl;
}

/* ---- config.c: the settings (core/settings.h), read once, validated, frozen ---- */
#include "../core/settings.h"

/* The frozen configuration; loads it on first use (before the constructor if need be). */
const struct shim_config *shim_config(void);

/* ---- trust.c ---- */
bool shim_trusted(const struct shim_config *c, const struct sockaddr *peer);

/* ---- fdtable.c: per-fd state, no fixed limit on fd numbers ---- */
enum shim_fd_kind {
	SHIM_FD_NONE = 0,     /* unknown to the shim: not looked at yet, or nothing to do */
	SHIM_FD_LISTENER,     /* a listening socket the shim classified */
	SHIM_FD_CONN,         /* an accepted connection whose header was consumed */
	SHIM_FD_INTERNAL,     /* the shim's own fd (parking epoll, timer, parked connection) */
	SHIM_FD_EPOLL,        /* a program's epoll instance that watches a covered listener */
	SHIM_FD_CLAIMED,      /* being classified as a listener by one thread (listen.c) */
};

#define SHIM_L_COVERED 0x01 /* listener: TCP over IPv4/IPv6 on a covered port */
#define SHIM_C_REWRITTEN 0x01 /* conn: peer (and local) come from the header */
#define SHIM_C_PENDING 0x02   /* conn (lazy mode): the header is read on the first read */
#define SHIM_C_FAILED 0x04    /* conn (lazy mode): the header was refused; reads fail */

/* An address in 20 bytes: what getpeername() reports, rebuilt on demand. */
struct shim_addr {
	uint16_t family; /* AF_INET or AF_INET6; 0 when unset */
	uint16_t port;   /* network order */
	uint8_t addr[16];
};

struct shim_fd {
	void *ext; /* listener: its struct shim_park; internal fd: the park that owns it;
		    * conn: its kept TLVs (struct shim_tlvs), one reference, dropped with the entry */
	_Atomic uint8_t kind; /* enum shim_fd_kind; written last, read first */
	uint8_t flags;
	uint8_t version; /* conn: header version */
	uint8_t command; /* conn: enum pp_command */
	uint32_t real_hash; /* conn: hash of the real peer, to detect an fd reused behind our back */
	struct shim_addr peer; /* conn: the header's source as the program sees it */
	union {
		struct shim_addr local; /* conn: the header's destination; listener: its address */
		struct {               /* conn with SHIM_C_PENDING: the header is still to come */
			uint32_t deadline_lo, deadline_hi; /* CLOCK_MONOTONIC ms */
			uint16_t lport;
		} pend;
	};
};

/* ext is also swapped atomically when an entry goes (entry_clear): every access is atomic. */
static inline void *shim_fd_ext(const struct shim_fd *e)
{
	return __atomic_load_n(&e->ext, __ATOMIC_ACQUIRE);
}

static inline void shim_fd_set_ext(struct shim_fd *e, void *v)
{
	__atomic_store_n(&e->ext, v, __ATOMIC_RELEASE);
}

static inline uint64_t shim_pend_deadline(const struct shim_fd *e)
{
	return (uint64_t)e->pend.deadline_hi << 32 | e->pend.deadline_lo;
}

static inline void shim_pend_set_deadline(struct shim_fd *e, uint64_t ms)
{
	e->pend.deadline_lo = (uint32_t)ms;
	e->pend.deadline_hi = (uint32_t)(ms >> 32);
}

/* TLVs kept for proxyshim_tlv() when PROXYSHIM_KEEP_TLVS=1: pages of their own (mmap), shared
 * by the dup()s of the connection and unmapped when the last entry lets go, so that close()
 * and dup2() never call malloc() or free(): both may run in a signal handler that interrupted
 * malloc(). */
#define SHIM_TLVS_MAGIC 0x544c5653u /* "TLVS": an entry's ext read as TLVs really is TLVs */
struct shim_tlvs {
	uint32_t magic;
	_Atomic uint32_t refs;      /* entries holding it */
	size_t size;                /* bytes mapped */
	struct shim_tlvs *next;     /* in the list of blocks waiting for readers to go */
	uint16_t len;
	uint8_t data[];
};
/* A block for len bytes of TLVs, one reference held; NULL when there is no memory. */
struct shim_tlvs *shim_tlvs_new(size_t len);
/* Drops one reference; the last one unmaps the block once no reader can still be in it. */
void shim_tlvs_put(struct shim_tlvs *t);
/* Around reading an entry's TLVs: while pinned, a block loaded from an entry stays mapped even
 * if its connection is closed meanwhile (a signal handler's close(), another thread's). */
void shim_tlvs_pin(void);
void shim_tlvs_unpin(void);
/* The TLVs of an entry that is a connection, if any, while pinned. */
static inline const struct shim_tlvs *shim_tlvs_of(const struct shim_fd *e)
{
	const struct shim_tlvs *t = (const struct shim_tlvs *)shim_fd_ext(e);
	return t && t->magic == SHIM_TLVS_MAGIC ? t : NULL;
}

#define PAGE_BITS 14 /* 16384 entries a page */
#define PAGE_FDS (1u << PAGE_BITS)
/* The table's directory of pages (fdtable.c); read here so that every hook's check inlines. */
extern struct shim_fd *_Atomic shim_fd_dir[] SHIM_HIDDEN;

/* The entry for fd, or NULL when the table has no page for it (fd never recorded). */
static inline struct shim_fd *shim_fd_peek(int fd)
{
	unsigned u = (unsigned)fd;
	struct shim_fd *page;
	if (SHIM_UNLIKELY(fd < 0))
		return NULL;
	page = atomic_load_explicit(&shim_fd_dir[u >> PAGE_BITS], memory_order_acquire);
	return page ? &page[u & (PAGE_FDS - 1)] : NULL;
}
/* The entry for fd, creating its page if needed; NULL only for a negative fd or no memory. */
struct shim_fd *shim_fd_get(int fd);
void shim_fd_clear(int fd);
/* Marks fd as the shim's own, owned by park; shim_fd_forget() unmarks it before the shim
 * closes it itself (a close by the program instead tells the park it lost the fd). */
void shim_fd_mark_internal(int fd, void *park);
void shim_fd_forget(int fd);
void shim_fd_clear_range(unsigned first, unsigned last);
/* Calls fn (when not NULL) for every entry of the given kind; returns how many there are. */
size_t shim_fd_each(unsigned kind, void (*fn)(int fd, struct shim_fd *e, void *arg), void *arg);
/* Carries oldfd's entry to newfd, replacing what newfd had; kept TLVs are shared, not copied
 * (no allocation: dup2() may run in a signal handler). */
void shim_fd_copy(int oldfd, int newfd);

static inline unsigned shim_fd_kind(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	return e ? atomic_load_explicit(&e->kind, memory_order_acquire) : SHIM_FD_NONE;
}

/* ---- addr.c ---- */
void shim_addr_from_sa(struct shim_addr *a, const struct sockaddr *sa);
/* Writes a as a sockaddr the way the kernel would: at most *len bytes, *len = full size. */
void shim_addr_to_user(const struct shim_addr *a, struct sockaddr *sa, socklen_t *len);
/* A 32-bit digest of a real peer address (family, port, address). */
uint32_t shim_sa_hash(const struct sockaddr *sa);
/* Copies a sockaddr of size salen out per accept()'s contract: at most *len, *len = salen. */
void shim_sa_to_user(const void *ss, socklen_t salen, struct sockaddr *sa, socklen_t *len);
/* "1.2.3.4:80" or "[::1]:80" into buf (at least SHIM_ADDRSTR_LEN bytes). */
#define SHIM_ADDRSTR_LEN 56
const char *shim_sa_str(const struct sockaddr *sa, char *buf);

/* ---- log.c: logfmt lines on stderr (syslog's /dev/log when fd 2 is a network socket), rate-limited ---- */
void shim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool shim_log_on(int level)
{
	return level <= (int)shim_config()->log_level;
}
const char *shim_log_level_name(int level);

/* ---- header.c: reading the PROXY header off an accepted connection ---- */
enum shim_verdict {
	SHIM_ACCEPT_HEADER, /* header consumed; entry recorded when it names a client */
	SHIM_PASS,          /* (optional mode) no header sent: leave the connection as it is */
	SHIM_REJECT,        /* close the connection; logged */
	SHIM_INCOMPLETE,    /* more bytes are needed */
};
/* A trusted connection being read: its fd, real peer and the listener's local port. */
struct shim_conn_ref {
	int fd;
	const struct sockaddr *peer;
	uint16_t lport;
};
struct shim_progress {
	size_t seen; /* bytes queued at the last peek */
	size_t want; /* seen + what pp_parse() still needed (v2 past 16 bytes: the whole header) */
};
/* One look without waiting: peek, parse, and consume the header when it is complete.
 * eof: the peer has shut down, so an incomplete header is final. */
enum shim_verdict shim_header_step(const struct shim_conn_ref *c, struct shim_progress *pr, bool eof);
/* What becomes of a connection whose header did not come (reason: timeout, eof, missing). */
enum shim_verdict shim_header_none(const struct shim_conn_ref *c, size_t seen, const char *reason);
/* Raises SO_RCVLOWAT so readiness means the next needed bytes are there; 0 or -1. */
int shim_header_lowat(int fd, const struct shim_progress *pr);
void shim_header_lowat_reset(int fd);
/* Steps and waits in poll() until done or the deadline (CLOCK_MONOTONIC ms). */
enum shim_verdict shim_take_header(const struct shim_conn_ref *c, uint64_t deadline);
uint64_t shim_now_ms(void);

/* ---- lazy.c: PROXYSHIM_CONSUME=lazy ---- */
enum shim_settle {
	SHIM_SETTLE_READ,     /* a read: wait only if the socket is blocking */
	SHIM_SETTLE_NOWAIT,   /* a read with MSG_DONTWAIT */
	SHIM_SETTLE_WAIT,     /* getpeername(): wait up to the deadline */
};
/* Marks fd's header as still to come. */
int shim_lazy_mark(int fd, const struct sockaddr *peer, uint16_t lport);
/* Reads the pending header of fd (entry e): 0 when the program may go on, -1 with errno
 * EAGAIN (incomplete, non-blocking) or ECONNRESET (refused). */
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

/* ---- stats.c: counters for PROXYSHIM_STATS ---- */
enum shim_result { SHIM_R_REWRITTEN, SHIM_R_LOCAL, SHIM_R_PASSED, SHIM_R_REJECTED, SHIM_R_UNTRUSTED, SHIM_R_MAX };
enum shim_reason {
	SHIM_REASON_NONE, SHIM_REASON_MISSING, SHIM_REASON_INVALID, SHIM_REASON_VERSION,
	SHIM_REASON_TIMEOUT, SHIM_REASON_EOF, SHIM_REASON_OVERFLOW, SHIM_REASON_ERROR,
	SHIM_REASON_NOMEM, SHIM_REASON_UNTRUSTED, SHIM_REASON_MAX
};
/* Counts one connection's outcome (version 0 when unknown) and the header bytes it took. */
void shim_stat(enum shim_result r, enum shim_reason why, unsigned version, size_t header_bytes);
/* Something the file shows changed (the parked gauge): write it within a second. */
void shim_stats_changed(void);
/* A log line that reached neither stderr nor /dev/log. */
void shim_stat_log_dropped(void);
/* The same without ever starting the writer thread: for close() and dup2(), which may run in
 * a signal handler (the writer is running already whenever there was anything parked). */
void shim_stats_touch(void);
/* The counter for a log reason name ("timeout", ...). */
enum shim_reason shim_reason_of(const char *name);
void shim_stats_atfork_child(void);

/* ---- exec.c ---- */
/* In a new image: takes over the connections an exec handed off (PROXYSHIM_HANDOFF). */
void shim_handoff_adopt(void);

/* ---- proc.c: a new process, however it was made ---- */
struct shim_proc {
	_Atomic unsigned state; /* 0 in a new process (the page is wiped on fork), 2 once set up */
	_Atomic int pid;
};
extern struct shim_proc *_Atomic shim_proc_cur SHIM_HIDDEN;
extern bool shim_proc_pidcheck SHIM_HIDDEN; /* no MADV_WIPEONFORK here: compare pids instead */
void shim_proc_enter(void);
/* Call before touching per-process state (parking, the counters): in a process that has not
 * been seen yet, resets what the parent owned. One load and a branch otherwise. */
static inline void shim_proc_check(void)
{
	struct shim_proc *p = atomic_load_explicit(&shim_proc_cur, memory_order_acquire);
	if (SHIM_UNLIKELY(!p || atomic_load_explicit(&p->state, memory_order_acquire) != 2 ||
			  shim_proc_pidcheck))
		shim_proc_enter();
}

/* ---- park.c: connections whose header is incomplete wait on their listener ---- */
struct shim_park;
/* Connections parked in the whole process; the hooks' fast paths read only this. */
extern _Atomic unsigned shim_parked_total;
/* Parks the trusted connection fd accepted on listener l (fd lfd): 0, or -1 when it could not. */
int shim_park_add(struct shim_fd *l, int lfd, int fd, const struct sockaddr_storage *peer,
		  socklen_t peerlen, const struct shim_progress *pr);
/* True when l has parked connections (one load, no lock). */
bool shim_park_pending(const struct shim_fd *l);
/* Hands over one parked connection whose header has completed (returns its fd, address
 * written per accept()'s contract) after closing expired ones; -1 when none is ready. */
int shim_park_service(struct shim_fd *l, struct sockaddr *addr, socklen_t *addrlen);
/* For a blocking listener with parked connections: waits on the listener and the parked
 * connections at once. 1: the listener is readable; 0: look at the parked ones; -1: EINTR. */
int shim_park_wait(struct shim_fd *l, int lfd);
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
/* ---- accept.c / listen.c ---- */
/* Classifies the listener fd (once) and returns its entry, or NULL when the shim ignores it. */
struct shim_fd *shim_listener(int fd);

#endif
