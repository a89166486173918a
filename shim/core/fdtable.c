/* Per-fd state with no fixed limit on fd numbers: a directory of pages, each page mapped on
 * first use and never freed, so lookups need no lock and a forked child inherits it as is.
 * errno: making a page or a TLV block may change it (the hooks keep the program's); letting
 * go of an entry (entry_clear, and the drop() it runs) never does. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "conn.h"

#define DIR_SIZE (1u << 17) /* 2^31 fds in all: the kernel's own ceiling */

struct shim_fd *_Atomic shim_fd_dir[DIR_SIZE];
static _Atomic unsigned g_dir_hi; /* one past the highest directory slot ever mapped */

struct shim_fd *shim_fd_get(int fd)
{
	unsigned u = (unsigned)fd, slot;
	struct shim_fd *page, *expected = NULL;
	if (fd < 0)
		return NULL;
	slot = u >> PAGE_BITS;
	page = atomic_load_explicit(&shim_fd_dir[slot], memory_order_acquire);
	if (SHIM_LIKELY(page != NULL))
		return &page[u & (PAGE_FDS - 1)];
	/* Anonymous pages stay untouched (no RSS) until an entry in them is written. */
	page = mmap(NULL, PAGE_FDS * sizeof(struct shim_fd), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return NULL;
	if (!atomic_compare_exchange_strong(&shim_fd_dir[slot], &expected, page)) {
		munmap(page, PAGE_FDS * sizeof(struct shim_fd));
		page = expected;
	}
	unsigned hi = atomic_load(&g_dir_hi);
	while (hi < slot + 1 && !atomic_compare_exchange_weak(&g_dir_hi, &hi, slot + 1))
		;
	return &page[u & (PAGE_FDS - 1)];
}

/* ---- kept TLVs: mmap'd blocks, reference counted, unmapped once no reader can be in them ----
 * A reader (shim_fd_copy, proxyshim_tlv) pins before it loads an entry's pointer and unpins
 * when done; a block whose last reference went waits in g_limbo until no reader is pinned.
 * Everything here is atomics and mmap/munmap: safe in a signal handler that interrupted any
 * of it, or malloc(). */
static _Atomic unsigned g_tlv_readers;
static struct shim_tlvs *_Atomic g_limbo;

struct shim_tlvs *shim_tlvs_new(size_t len)
{
	size_t size = sizeof(struct shim_tlvs) + len;
	struct shim_tlvs *t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	t->ext.ops = &shim_tlvs_ops;
	atomic_init(&t->refs, 1);
	t->size = size;
	t->len = (uint16_t)len;
	return t;
}

static void limbo_push(struct shim_tlvs *first, struct shim_tlvs *last)
{
	struct shim_tlvs *head = atomic_load(&g_limbo);
	do
		last->next = head;
	while (!atomic_compare_exchange_weak(&g_limbo, &head, first));
}

/* Unmaps what waits in limbo when no reader is pinned. The list is taken before the readers
 * are counted: a reader pinned after that count cannot find these blocks (they had left
 * every entry before they were put in limbo); one pinned before it is seen. */
static void limbo_reclaim(void)
{
	struct shim_tlvs *t, *next, *last;
	int saved;

	if (atomic_load(&g_limbo) == NULL || atomic_load(&g_tlv_readers) != 0)
		return;
	t = atomic_exchange(&g_limbo, NULL);
	if (!t)
		return;
	if (atomic_load(&g_tlv_readers) != 0) {
		for (last = t; last->next; last = last->next)
			;
		limbo_push(t, last); /* the last reader to unpin reclaims them */
		return;
	}
	saved = errno; /* from close() and dup2(), maybe in a signal handler: keeps errno itself */
	for (; t; t = next) {
		next = t->next;
		munmap(t, t->size);
	}
	errno = saved;
}

void shim_tlvs_put(struct shim_tlvs *t)
{
	if (atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	limbo_push(t, t);
	limbo_reclaim();
}

/* A connection's entry goes: its reference goes with it. */
static void tlvs_drop(struct shim_ext *x, unsigned kind)
{
	(void)kind;
	shim_tlvs_put((struct shim_tlvs *)x);
}

const struct shim_ext_ops shim_tlvs_ops = {.drop = tlvs_drop};

void shim_tlvs_pin(void)
{
	atomic_fetch_add(&g_tlv_readers, 1);
}

void shim_tlvs_unpin(void)
{
	if (atomic_fetch_sub(&g_tlv_readers, 1) == 1)
		limbo_reclaim();
}

/* Another reference to src's TLVs, for a dup() of the connection: none when src has none or
 * is being closed right now (its count already reached zero). */
static struct shim_tlvs *tlvs_share(const struct shim_fd *src)
{
	struct shim_tlvs *t;
	shim_tlvs_pin();
	t = (struct shim_tlvs *)shim_tlvs_of(src);
	if (t) {
		uint32_t refs = atomic_load(&t->refs);
		while (refs != 0 && !atomic_compare_exchange_weak(&t->refs, &refs, refs + 1))
			;
		if (refs == 0)
			t = NULL;
	}
	shim_tlvs_unpin();
	return t;
}

/* Called from close() and dup2(), which may run in a signal handler: nothing below waits on a
 * lock or calls malloc()/free() (a park is released by whoever holds its lock, park.c). */
static void entry_clear(struct shim_fd *e)
{
	unsigned kind;
	void *ext;

	/* Acquire: a thread reusing this fd number must see the previous owner's writes done. */
	if (atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_NONE)
		return;
	/* Sequentially consistent: park.c's park_of() relies on kind going before ext. */
	kind = atomic_exchange_explicit(&e->kind, SHIM_FD_NONE, memory_order_seq_cst);
	ext = __atomic_exchange_n(&e->ext, NULL, __ATOMIC_SEQ_CST);
	if (ext) {
		struct shim_ext *x = ext;
		x->ops->drop(x, kind);
	}
}

void shim_fd_mark_owned(int fd, struct shim_ext *owner, unsigned kind)
{
	struct shim_fd *e = shim_fd_get(fd);
	if (!e)
		return;
	entry_clear(e);
	shim_fd_set_ext(e, owner);
	atomic_store_explicit(&e->kind, (uint8_t)kind, memory_order_release);
}

void shim_fd_forget(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	if (e) {
		atomic_store_explicit(&e->kind, SHIM_FD_NONE, memory_order_release);
		shim_fd_set_ext(e, NULL);
	}
}

void shim_fd_clear(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	if (e)
		entry_clear(e);
}

void shim_fd_clear_range(unsigned first, unsigned last)
{
	unsigned hi = atomic_load(&g_dir_hi);
	unsigned long end = (unsigned long)hi << PAGE_BITS; /* one past the last fd with a page */
	if (first >= end)
		return;
	if (last >= end)
		last = (unsigned)(end - 1);
	for (unsigned fd = first;; fd++) {
		struct shim_fd *page = atomic_load_explicit(&shim_fd_dir[fd >> PAGE_BITS], memory_order_acquire);
		if (!page) {
			/* Skip the whole missing page. */
			fd |= PAGE_FDS - 1;
		} else {
			entry_clear(&page[fd & (PAGE_FDS - 1)]);
		}
		if (fd >= last)
			break;
	}
}

void shim_fd_copy(int oldfd, int newfd)
{
	struct shim_fd *src = shim_fd_peek(oldfd), *dst;
	unsigned kind = src ? atomic_load_explicit(&src->kind, memory_order_acquire) : SHIM_FD_NONE;

	/* The shim's own fds and epoll marks stay with the original; a duplicated listener
	 * gets a parking place of its own when it first needs one. */
	if (kind == SHIM_FD_NONE || kind == SHIM_FD_INTERNAL || kind == SHIM_FD_EPOLL ||
	    kind == SHIM_FD_CLAIMED || kind == SHIM_FD_PARKED) {
		shim_fd_clear(newfd);
		return;
	}
	dst = shim_fd_get(newfd);
	if (!dst)
		return;
	entry_clear(dst);
	dst->flags = src->flags;
	dst->version = src->version;
	dst->command = src->command;
	dst->real_hash = src->real_hash;
	dst->peer = src->peer;
	dst->local = src->local; /* the whole union: pending state too */
	/* Shared, not copied: dup() and dup2() allocate nothing. */
	shim_fd_set_ext(dst, kind == SHIM_FD_CONN ? tlvs_share(src) : NULL);
	atomic_store_explicit(&dst->kind, (uint8_t)kind, memory_order_release);
}

size_t shim_fd_each(unsigned kind, void (*fn)(int fd, struct shim_fd *e, void *arg), void *arg)
{
	unsigned hi = atomic_load(&g_dir_hi);
	size_t count = 0;
	for (unsigned slot = 0; slot < hi; slot++) {
		struct shim_fd *page = atomic_load_explicit(&shim_fd_dir[slot], memory_order_acquire);
		if (!page)
			continue;
		for (unsigned i = 0; i < PAGE_FDS; i++) {
			if (atomic_load_explicit(&page[i].kind, memory_order_acquire) != kind)
				continue;
			count++;
			if (fn)
				fn((int)(slot << PAGE_BITS | i), &page[i], arg);
		}
	}
	return count;
}
