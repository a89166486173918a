/* Which process is this? Parked connections and the counters' writer thread belong to one
 * process, and a child must start its own however it was made: fork(), daemon() and _Fork()
 * (whose fork runs inside libc, past the fork() hook), or a raw clone(). A page marked
 * MADV_WIPEONFORK reads as zeros in every child the kernel makes without CLONE_VM, so one load
 * tells a new process from the one that set the page up, with no system call. vfork() and
 * posix_spawn() children share the parent's memory and only exec or exit: nothing to do. */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define STATE_READY 2u

struct shim_proc *_Atomic shim_proc_cur;
bool shim_proc_pidcheck;

/* Where MADV_WIPEONFORK is missing (kernels before 4.14): the same, by comparing pids. */
static struct shim_proc g_fallback;
/* Set by the first process that set its page up; a child inherits it (plain memory). */
static _Atomic bool g_seen;

static int current_pid(void)
{
	return (int)syscall(SYS_getpid);
}

/* What front-ends keep per process (preload/park.c: parked connections), reset first. */
#define MAX_ON_NEW 4
static void (*_Atomic g_on_new[MAX_ON_NEW])(void);

void shim_proc_on_new(void (*fn)(void))
{
	for (unsigned i = 0; i < MAX_ON_NEW; i++) {
		void (*cur)(void) = NULL;
		if (atomic_compare_exchange_strong(&g_on_new[i], &cur, fn) || cur == fn)
			return;
	}
}

/* A new process: what the parent owned is reset by whoever registered it (preload/park.c
 * closes its copies of the parent's parked connections; stats.c forgets the parent's counts
 * and its writer thread). */
static void new_process(void)
{
	for (unsigned i = 0; i < MAX_ON_NEW; i++) {
		void (*fn)(void) = atomic_load(&g_on_new[i]);
		if (fn)
			fn();
	}
}

static struct shim_proc *page(void)
{
	struct shim_proc *p = atomic_load_explicit(&shim_proc_cur, memory_order_acquire), *expected = NULL;
	void *m;

	if (p)
		return p;
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED && madvise(m, 4096, MADV_WIPEONFORK) == 0) {
		p = m;
	} else {
		if (m != MAP_FAILED)
			munmap(m, 4096);
		shim_proc_pidcheck = true;
		p = &g_fallback;
	}
	if (!atomic_compare_exchange_strong(&shim_proc_cur, &expected, p)) {
		if (p != &g_fallback)
			munmap(p, 4096);
		p = expected;
	}
	return p;
}

/* Runs wherever a new process may first show: the constructor, any hook's first count or park
 * lookup, and hooks that save no errno for it (fork()'s child, select()): keeps errno itself. */
void shim_proc_enter(void)
{
	int saved = errno, me = current_pid();
	struct shim_proc *p = page();
	unsigned st = 0;

	if (p == &g_fallback) {
		int old = atomic_load(&p->pid);
		if (old != me && atomic_compare_exchange_strong(&p->pid, &old, me) && old != 0)
			new_process();
		atomic_store_explicit(&p->state, STATE_READY, memory_order_release);
		goto out;
	}
	if (atomic_compare_exchange_strong(&p->state, &st, 1u)) {
		if (atomic_load(&g_seen))
			new_process();
		atomic_store(&p->pid, me);
		atomic_store(&g_seen, true);
		atomic_store_explicit(&p->state, STATE_READY, memory_order_release);
	} else {
		/* Another thread of this new process is resetting: its state is not ready yet. */
		while (atomic_load_explicit(&p->state, memory_order_acquire) != STATE_READY) {
			struct timespec pause = {0, 20000};
			nanosleep(&pause, NULL);
		}
	}
out:
	errno = saved;
}
