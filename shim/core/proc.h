/* Which process is this (proc.c): a child however made starts per-process state of its own. */
#ifndef SHIM_CORE_PROC_H
#define SHIM_CORE_PROC_H

#include "base.h"

struct shim_proc {
	_Atomic unsigned state; /* 0 in a new process (the page is wiped on fork), 2 once set up */
	_Atomic int pid;
};
extern struct shim_proc *_Atomic shim_proc_cur SHIM_HIDDEN;
extern bool shim_proc_pidcheck SHIM_HIDDEN; /* no MADV_WIPEONFORK here: compare pids instead */
void shim_proc_enter(void);
/* Registers fn to run first thing in each new process (at most 4; once per fn): whatever is
 * kept per process registers its reset (preload/park.c at start-up, stats.c at its first
 * count). */
void shim_proc_on_new(void (*fn)(void));
/* Call before touching per-process state (parking, the counters): in a process that has not
 * been seen yet, resets what the parent owned. One load and a branch otherwise. */
static inline void shim_proc_check(void)
{
	struct shim_proc *p = atomic_load_explicit(&shim_proc_cur, memory_order_acquire);
	if (SHIM_UNLIKELY(!p || atomic_load_explicit(&p->state, memory_order_acquire) != 2 ||
			  shim_proc_pidcheck))
		shim_proc_enter();
}

#endif
