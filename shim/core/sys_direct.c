/* The real_ pointers (sys.h) for a program that hooks nothing: libc's own functions, found by
 * name in the global scope. The unit tests link it instead of the preload library's real.c,
 * and so can any front-end that does not interpose (the supervisor of issue 4/5). Not part of
 * libproxyshim.so. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "sys.h"

#define SHIM_REAL_DEF(ret, name, args) ret(*real_##name) args;
SHIM_REAL_LIST(SHIM_REAL_DEF)
#undef SHIM_REAL_DEF

void shim_resolve(void)
{
	void *p;
	if (__atomic_load_n(&real_read, __ATOMIC_ACQUIRE))
		return;
	/* real_read last: the flag a second call looks at. Names this libc lacks (close_range
	 * before glibc 2.34, fcntl64 on musl) stay NULL but fcntl64, which falls back to fcntl. */
#define SHIM_REAL_FIND(ret, name, args)                                                   \
	if ((void *)&real_##name != (void *)&real_read) {                                 \
		p = dlsym(RTLD_DEFAULT, #name);                                           \
		__atomic_store_n((void **)&real_##name, p, __ATOMIC_RELEASE);             \
	}
	SHIM_REAL_LIST(SHIM_REAL_FIND)
#undef SHIM_REAL_FIND
	if (real_fcntl64 == NULL)
		__atomic_store_n(&real_fcntl64, real_fcntl, __ATOMIC_RELEASE);
	p = dlsym(RTLD_DEFAULT, "read");
	if (p == NULL) {
		fprintf(stderr, "proxyshim: level=error event=fatal reason=dlsym symbol=read\n");
		abort();
	}
	__atomic_store_n((void **)&real_read, p, __ATOMIC_RELEASE);
}
