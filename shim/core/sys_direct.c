/* The real_ pointers (sys.h) for a program that hooks nothing: libc's own functions, found by
 * weak references. The unit tests link it instead of the preload library's real.c,
 * and so can any front-end that does not interpose (the supervisor of issue 4/5). Not part of
 * libproxyshim.so. */
#include <stdio.h>
#include <stdlib.h>

#include "sys.h"

#define SHIM_REAL_DEF(ret, name, args) ret(*real_##name) args;
SHIM_REAL_LIST(SHIM_REAL_DEF)
#undef SHIM_REAL_DEF

/* Each function by a weak reference under its own name (an assembler label, so no header's
 * prototype is restated): the address the program's own calls would reach, and NULL where this
 * libc lacks it (close_range before glibc 2.34, fcntl64 and the _chk functions on musl). Unlike
 * dlsym(RTLD_DEFAULT), this also works in a statically linked program (the supervisor). */
#define SHIM_REAL_WEAK(ret, name, args) extern char shim_weak_##name[] __asm__(#name) __attribute__((weak));
SHIM_REAL_LIST(SHIM_REAL_WEAK)
#undef SHIM_REAL_WEAK

void shim_resolve(void)
{
	void *p;
	if (__atomic_load_n(&real_read, __ATOMIC_ACQUIRE))
		return;
	/* real_read last: the flag a second call looks at. Names this libc lacks stay NULL but
	 * fcntl64, which falls back to fcntl. */
#define SHIM_REAL_FIND(ret, name, args)                                                   \
	if ((void *)&real_##name != (void *)&real_read) {                                 \
		p = (void *)shim_weak_##name;                                             \
		__atomic_store_n((void **)&real_##name, p, __ATOMIC_RELEASE);             \
	}
	SHIM_REAL_LIST(SHIM_REAL_FIND)
#undef SHIM_REAL_FIND
	if (real_fcntl64 == NULL)
		__atomic_store_n(&real_fcntl64, real_fcntl, __ATOMIC_RELEASE);
	p = (void *)shim_weak_read;
	if (p == NULL) {
		fprintf(stderr, "proxyshim: level=error event=fatal reason=resolve symbol=read\n");
		abort();
	}
	__atomic_store_n((void **)&real_read, p, __ATOMIC_RELEASE);
}
