/* The shared table of fdpass.h. A file on tmpfs, mapped MAP_SHARED: every process of one user
 * that maps it sees the same slots, a forked child keeps its parent's mapping, an unrelated
 * process (a worker a supervisor did not start) opens it by name.
 *
 * Slots are found by open addressing on a hash of the cookie (at most PROBE tries). A writer
 * holds a slot's seq odd while it writes (a few stores, never a wait); a reader copies a slot
 * between two equal even seq loads. A cookie is never reused while the machine runs, so an
 * entry can never be taken for a later socket's; old entries are overwritten when their probe
 * run is full. Copy semantics: an adopter copies, nothing is removed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fdpass.h"
#include "log.h"
#include "sys.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define MAGIC 0x7073666470617373ull /* "pshfdpass" */
#define LAYOUT 1u
#define PROBE 16
#define OLD_S 300 /* seconds after which a slot may be taken for another cookie */

struct slot {
	_Atomic uint64_t cookie; /* 0: empty */
	_Atomic uint32_t seq;    /* odd while a writer fills the slot */
	_Atomic uint32_t state;  /* enum shim_fdpass_state, | pid << 2 when SETTLING */
	_Atomic uint32_t stamp;  /* CLOCK_MONOTONIC seconds of the last write */
	uint8_t wire[sizeof(struct shim_handoff_wire)];
	uint8_t pad[128 - 20 - sizeof(struct shim_handoff_wire)];
};
_Static_assert(sizeof(struct slot) == 128, "a slot is 128 bytes");

struct table {
	uint64_t magic;
	uint32_t layout, slots, slot_size;
	uint8_t pad[128 - 20];
	struct slot slot[SHIM_FDPASS_SLOTS];
};
#define TABLE_SIZE sizeof(struct table)

const char *shim_fdpass_dir = SHIM_FDPASS_DIR;
static struct table *_Atomic g_table;
static _Atomic bool g_warned;

/* The shim's own short-lived fds are opened and closed by system calls of its own: the close
 * is real_close(), so an open() a sanitizer or another preload library intercepts would be
 * seen without its close (TSan then takes the number's reuse by the program for a race). */
static int sys_open(const char *path, int flags, mode_t mode)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

/* The table's shared mapping of fd, by the system call for the same reason (MAP_FAILED). */
static void *sys_map(int fd)
{
	return (void *)syscall(SYS_mmap, NULL, TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

int shim_fdpass_cookie(int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) < 0)
		return -errno;
	return len == sizeof(*cookie) ? 0 : -EINVAL;
}

bool shim_fdpass_mapped(void)
{
	return atomic_load_explicit(&g_table, memory_order_acquire) != NULL;
}

static void path_of(char *buf, size_t cap, const char *suffix, long n)
{
	if (suffix)
		snprintf(buf, cap, "%s/proxyshim-fd-%u.%s%ld", shim_fdpass_dir, (unsigned)geteuid(), suffix, n);
	else
		snprintf(buf, cap, "%s/proxyshim-fd-%u", shim_fdpass_dir, (unsigned)geteuid());
}

/* Said once per process: why the table is not used. err: the system call's errno, or 0. */
static void warn_once(const char *path, const char *why, int err)
{
	if (!atomic_exchange(&g_warned, true))
		shim_log(SHIM_LOG_WARN, "event=fdpass reason=%s path=%s errno=%d note=\"connections passed "
					"between processes keep the balancer's address\"", why, path, err);
}

/* Maps the open table file fd after checking it is the user's own, private, of this layout. */
static struct table *map_checked(int fd, const char *path)
{
	struct stat st;
	struct table *t;
	/* fstat() became a symbol of its own in glibc 2.33: the system call keeps older ones. */
	if (syscall(SYS_fstat, fd, &st) < 0)
		return NULL;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		warn_once(path, "not_private", 0); /* another user's, or readable by others */
		return NULL;
	}
	if ((size_t)st.st_size != TABLE_SIZE) {
		warn_once(path, "layout", 0);
		return NULL;
	}
	t = sys_map(fd);
	if (t == MAP_FAILED)
		return NULL;
	if (t->magic != MAGIC || t->layout != LAYOUT || t->slots != SHIM_FDPASS_SLOTS ||
	    t->slot_size != sizeof(struct slot)) {
		munmap(t, TABLE_SIZE);
		warn_once(path, "layout", 0);
		return NULL;
	}
	return t;
}

/* Makes the file whole under a name of its own, then links it in: an opener never sees a
 * half-made table. Losing the race to another process is fine: its table is used. */
static void create_table(const char *path)
{
	char tmp[256];
	struct table *t;
	int fd;

	path_of(tmp, sizeof(tmp), "new", (long)getpid());
	fd = sys_open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (syscall(SYS_ftruncate, fd, (off_t)TABLE_SIZE) == 0) {
		t = sys_map(fd);
		if (t != MAP_FAILED) {
			t->layout = LAYOUT;
			t->slots = SHIM_FDPASS_SLOTS;
			t->slot_size = sizeof(struct slot);
			__atomic_store_n(&t->magic, MAGIC, __ATOMIC_RELEASE);
			munmap(t, TABLE_SIZE);
			if (link(tmp, path) < 0 && errno != EEXIST)
				warn_once(path, "create", errno);
		}
	}
	unlink(tmp);
	real_close(fd);
}

bool shim_fdpass_map(bool create)
{
	char path[256];
	struct table *t, *expected = NULL;
	int fd;

	if (shim_fdpass_mapped())
		return true;
	shim_resolve(); /* real_close */
	path_of(path, sizeof(path), NULL, 0);
	fd = sys_open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0 && errno == ENOENT && create) {
		create_table(path);
		fd = sys_open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
	}
	if (fd < 0) {
		/* No file is the receivers' normal case (nothing was published); a publisher
		 * that could not make one says so (no /dev/shm, read-only, full). */
		if (errno != ENOENT || create)
			warn_once(path, create ? "create" : "open", errno);
		return false;
	}
	t = map_checked(fd, path);
	real_close(fd);
	if (!t)
		return false;
	if (!atomic_compare_exchange_strong(&g_table, &expected, t))
		munmap(t, TABLE_SIZE); /* another thread mapped it first */
	return true;
}

static uint32_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint32_t)ts.tv_sec;
}

static struct slot *slot_at(struct table *t, uint64_t cookie, unsigned i)
{
	return &t->slot[(shim_cookie_hash(cookie) + i) & (SHIM_FDPASS_SLOTS - 1)];
}

static bool slot_lock(struct slot *s)
{
	uint32_t seq = atomic_load(&s->seq);
	return !(seq & 1) && atomic_compare_exchange_strong(&s->seq, &seq, seq + 1);
}

static void slot_unlock(struct slot *s)
{
	atomic_fetch_add_explicit(&s->seq, 1, memory_order_release);
}

/* A consistent copy of slot s when it holds cookie: true. */
static bool slot_read(struct slot *s, uint64_t cookie, struct shim_handoff_wire *w, uint32_t *state)
{
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
		if (seq & 1)
			continue;
		if (atomic_load_explicit(&s->cookie, memory_order_relaxed) != cookie)
			return false;
		*state = atomic_load_explicit(&s->state, memory_order_relaxed);
		/* The bytes may be torn while a writer works: seq tells, and then they are read
		 * again. Copied byte by byte with atomics, so a torn read is no data race. */
		for (size_t i = 0; i < sizeof(*w); i++) /* acquire: none moves past seq's check */
			((uint8_t *)w)[i] = __atomic_load_n(&s->wire[i], __ATOMIC_ACQUIRE);
		if (atomic_load_explicit(&s->seq, memory_order_relaxed) == seq)
			return true;
	}
	return false;
}

static void slot_write(struct slot *s, uint64_t cookie, uint32_t state, const struct shim_handoff_wire *w)
{
	atomic_store_explicit(&s->cookie, cookie, memory_order_relaxed);
	atomic_store_explicit(&s->state, state, memory_order_relaxed);
	atomic_store_explicit(&s->stamp, now_s(), memory_order_relaxed);
	for (size_t i = 0; i < sizeof(*w); i++)
		__atomic_store_n(&s->wire[i], ((const uint8_t *)w)[i], __ATOMIC_RELAXED);
}

/* The slot holding cookie, or NULL. */
static struct slot *find(struct table *t, uint64_t cookie)
{
	for (unsigned i = 0; i < PROBE; i++) {
		struct slot *s = slot_at(t, cookie, i);
		if (atomic_load_explicit(&s->cookie, memory_order_acquire) == cookie)
			return s;
	}
	return NULL;
}

int shim_fdpass_publish(uint64_t cookie, const struct shim_fd *e)
{
	struct table *t = atomic_load_explicit(&g_table, memory_order_acquire);
	struct shim_handoff_wire w;
	bool pending = e->flags & SHIM_C_PENDING;
	struct slot *s, *victim = NULL;
	uint32_t now = now_s(), oldest = UINT32_MAX;

	if (!t || cookie == 0)
		return -ENOENT;
	shim_handoff_wire_of(e, &w);
	w.flags &= (uint8_t)~SHIM_C_SHARED;
	s = find(t, cookie);
	if (s && pending)
		return 0; /* published before, maybe settled since: what the table says stands */
	if (!s) {
		/* An empty slot, else one not written for OLD_S seconds, else the oldest. */
		for (unsigned i = 0; i < PROBE; i++) {
			struct slot *c = slot_at(t, cookie, i);
			uint32_t stamp = atomic_load(&c->stamp);
			uint32_t st = atomic_load(&c->state) & 3;
			if (atomic_load(&c->cookie) == 0) {
				victim = c;
				break;
			}
			if (st == SHIM_FDPASS_SETTLING && now - stamp < OLD_S)
				continue; /* somebody is reading that header right now */
			if (now - stamp >= OLD_S || stamp < oldest) {
				oldest = now - stamp >= OLD_S ? 0 : stamp;
				victim = c;
				if (oldest == 0)
					break;
			}
		}
		s = victim;
	}
	if (!s || !slot_lock(s))
		return -ENOSPC;
	slot_write(s, cookie, pending ? SHIM_FDPASS_PENDING : SHIM_FDPASS_SETTLED, &w);
	slot_unlock(s);
	return 0;
}

int shim_fdpass_lookup(uint64_t cookie, struct shim_handoff_wire *w, uint32_t *state)
{
	struct table *t = atomic_load_explicit(&g_table, memory_order_acquire);
	struct slot *s;
	if (!t || cookie == 0 || !(s = find(t, cookie)))
		return -ENOENT;
	return slot_read(s, cookie, w, state) ? 0 : -ENOENT;
}

int shim_fdpass_claim(uint64_t cookie)
{
	struct table *t = atomic_load_explicit(&g_table, memory_order_acquire);
	uint32_t mine = SHIM_FDPASS_SETTLING | (uint32_t)getpid() << 2, st;
	struct slot *s;

	if (!t || !(s = find(t, cookie)))
		return -ENOENT;
	st = atomic_load(&s->state);
	for (;;) {
		if (st == SHIM_FDPASS_SETTLED)
			return -EALREADY;
		if (st == mine)
			return 0;
		if ((st & 3) == SHIM_FDPASS_SETTLING && (kill((pid_t)(st >> 2), 0) == 0 || errno != ESRCH))
			return -EBUSY;
		/* PENDING, or a settler that died before it wrote its result: the header is
		 * still in the socket (a settler consumes it only right before it writes). */
		if (atomic_compare_exchange_weak(&s->state, &st, mine))
			return 0;
		if (atomic_load(&s->cookie) != cookie)
			return -ENOENT;
	}
}

void shim_fdpass_release(uint64_t cookie)
{
	struct table *t = atomic_load_explicit(&g_table, memory_order_acquire);
	uint32_t mine = SHIM_FDPASS_SETTLING | (uint32_t)getpid() << 2;
	struct slot *s;
	if (t && (s = find(t, cookie)) != NULL)
		atomic_compare_exchange_strong(&s->state, &mine, SHIM_FDPASS_PENDING);
}

void shim_fdpass_settled(uint64_t cookie, const struct shim_fd *e)
{
	struct table *t = atomic_load_explicit(&g_table, memory_order_acquire);
	struct shim_handoff_wire w;
	struct slot *s;

	if (!t || !(s = find(t, cookie)))
		return;
	memset(&w, 0, sizeof(w));
	if (e) {
		shim_handoff_wire_of(e, &w);
		w.flags &= (uint8_t)~SHIM_C_SHARED;
	}
	/* The lock is short: spin while another writer (a publisher) finishes. A writer killed
	 * half way leaves seq odd for good: after a while the slot is taken over. */
	for (unsigned spins = 0; !slot_lock(s); spins++) {
		if (spins > (1u << 22)) {
			atomic_fetch_add(&s->seq, 2); /* still odd: ours now */
			break;
		}
	}
	if (atomic_load(&s->cookie) == cookie)
		slot_write(s, cookie, SHIM_FDPASS_SETTLED, &w);
	slot_unlock(s);
}

bool shim_fd_adopt(int fd, const struct shim_handoff_wire *w)
{
	struct shim_fd *e = shim_fd_get(fd);
	if (!e)
		return false;
	shim_fd_clear(fd);
	shim_fd_set_ext(e, NULL);
	e->flags = w->flags;
	e->version = w->version;
	e->command = w->command;
	e->real_hash = w->real_hash;
	e->peer = w->peer;
	e->local = w->local;
	atomic_store_explicit(&e->kind, SHIM_FD_CONN, memory_order_release);
	return true;
}
