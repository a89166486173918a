/* The connection table (fdtable.c): per-fd state, no fixed limit on fd numbers. */
#ifndef SHIM_CORE_CONN_H
#define SHIM_CORE_CONN_H

#include "addr.h"
#include "base.h"

/* Every fd the shim knows has one entry, and the entry is the one owner of what the shim holds
 * for that fd. Its kind is its state (a CONN's flags say which one); docs/DESIGN.md
 * ("Connection states") draws a connection's transitions in full:
 *
 *   NONE -- listen(), or accept() on an inherited one --> CLAIMED --> LISTENER
 *   NONE -- accept(), header complete with an address --> CONN REWRITTEN
 *           (LOCAL, UNKNOWN, no TCP address: stays NONE)
 *   NONE -- accept(), header incomplete ----------------> PARKED
 *   PARKED -- header read: with an address -------------> CONN REWRITTEN
 *                          without, or a pass ----------> NONE (handed over with the real peer)
 *                          refused, timed out, the cap -> closed
 *                          lazy mode, the grace over ---> CONN PENDING
 *   NONE -- accept(), header incomplete, lazy mode -----> CONN PENDING (grace 0, or not parked)
 *   CONN PENDING -- first read, getpeername(), the API -> CONN REWRITTEN, NONE, or CONN FAILED
 *   NONE -- the shim's own epoll/timer fd --------------> INTERNAL
 *   NONE -- epoll_ctl() adds a covered listener --------> EPOLL
 *   any --- close(), close_range(), dup2() over it -----> NONE (the extension's drop() runs)
 *   any --- dup(), dup2() from it: the copy is ---------> CONN or LISTENER as the original;
 *                                                         NONE for the other kinds
 */
enum shim_fd_kind {
	SHIM_FD_NONE = 0,     /* unknown to the shim: not looked at yet, or nothing to do */
	SHIM_FD_LISTENER,     /* a listening socket the shim classified */
	SHIM_FD_CONN,         /* an accepted connection: header consumed, pending or refused */
	SHIM_FD_INTERNAL,     /* the shim's own fd (a park's epoll and timer fds) */
	SHIM_FD_EPOLL,        /* a program's epoll instance that watches a covered listener */
	SHIM_FD_CLAIMED,      /* being classified as a listener by one thread (listen.c) */
	SHIM_FD_PARKED,       /* an accepted connection waiting on its listener for its header */
};

#define SHIM_L_COVERED 0x01 /* listener: TCP over IPv4/IPv6 on a covered port */
#define SHIM_C_REWRITTEN 0x01 /* conn: peer (and local) come from the header */
#define SHIM_C_PENDING 0x02   /* conn (lazy mode): the header is read on the first read */
#define SHIM_C_FAILED 0x04    /* conn (lazy mode): the header was refused; reads fail */

/* What an entry holds beyond its fields (its ext): a typed extension that knows how to let go.
 * A listener's and its parked and internal fds' is their park (preload/park.c); a connection's
 * is its kept TLVs. The table never knows what is behind it: it calls drop(). */
struct shim_ext;
struct shim_ext_ops {
	/* The entry of the given kind holding x goes (close(), dup2() over it, close_range()).
	 * Called from hooks that may run in a signal handler: never waits, never allocates, and
	 * leaves errno as it found it (close() saves none of its own). */
	void (*drop)(struct shim_ext *x, unsigned kind);
};
struct shim_ext {
	const struct shim_ext_ops *ops;
};

struct shim_fd {
	void *ext; /* a struct shim_ext or NULL: listener, parked and internal fd: their park;
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
struct shim_tlvs {
	struct shim_ext ext;         /* first: ext.ops is &shim_tlvs_ops */
	_Atomic uint32_t refs;      /* entries holding it */
	size_t size;                /* bytes mapped */
	struct shim_tlvs *next;     /* in the list of blocks waiting for readers to go */
	uint16_t len;
	uint8_t data[];
};
/* A block for len bytes of TLVs, one reference held; NULL when there is no memory. */
struct shim_tlvs *shim_tlvs_new(size_t len);
extern const struct shim_ext_ops shim_tlvs_ops;
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
	return t && t->ext.ops == &shim_tlvs_ops ? t : NULL;
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
/* Marks fd as held by owner, as kind (SHIM_FD_INTERNAL or SHIM_FD_PARKED); shim_fd_forget()
 * unmarks it before the shim closes it itself (a close by the program instead tells the owner,
 * through its drop(), that it lost the fd). */
void shim_fd_mark_owned(int fd, struct shim_ext *owner, unsigned kind);
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

#endif
