/* Per-fd state with no fixed limit on fd numbers: a directory of pages, each page mapped on
 * first use and never freed, so lookups need no lock and a forked child inherits it as is. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "shim.h"

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
	int saved = errno;
	page = mmap(NULL, PAGE_FDS * sizeof(struct shim_fd), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	errno = saved;
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

static void entry_clear(struct shim_fd *e)
{
	unsigned kind;
	void *ext;

	/* Acquire: a thread reusing this fd number must see the previous owner's writes done. */
	if (atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_NONE)
		return;
	kind = atomic_exchange_explicit(&e->kind, SHIM_FD_NONE, memory_order_acq_rel);
	ext = __atomic_exchange_n(&e->ext, NULL, __ATOMIC_ACQ_REL);
	if (!ext)
		return;
	if (kind == SHIM_FD_LISTENER)
		shim_park_release(ext);
	else if (kind == SHIM_FD_INTERNAL)
		shim_park_lost_fd(ext);
	else if (kind == SHIM_FD_CONN)
		free(ext);
}

void shim_fd_mark_internal(int fd, void *park)
{
	struct shim_fd *e = shim_fd_get(fd);
	if (!e)
		return;
	entry_clear(e);
	shim_fd_set_ext(e, park);
	atomic_store_explicit(&e->kind, SHIM_FD_INTERNAL, memory_order_release);
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
	const struct shim_tlvs *tlvs;

	/* The shim's own fds and epoll marks stay with the original; a duplicated listener
	 * gets a parking place of its own when it first needs one. */
	if (kind == SHIM_FD_NONE || kind == SHIM_FD_INTERNAL || kind == SHIM_FD_EPOLL ||
	    kind == SHIM_FD_CLAIMED) {
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
	tlvs = kind == SHIM_FD_CONN ? shim_fd_ext(src) : NULL;
	if (tlvs) {
		struct shim_tlvs *copy = malloc(sizeof(*copy) + tlvs->len);
		if (copy) {
			memcpy(copy, tlvs, sizeof(*copy) + tlvs->len);
			shim_fd_set_ext(dst, copy);
		}
	}
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
