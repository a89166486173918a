/* The libc functions behind the hooks, looked up with dlsym(RTLD_NEXT): all of them in the
 * constructor, and on first use for the hooks that run before it (other libraries'
 * constructors call close()), then published together by one flag. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

/* glibc 2.34 moved dlsym into libc under a new version; the old one is still there, and
 * binding to it keeps the library loadable by older glibc (musl ignores versions). */
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
#endif

#define SHIM_REAL_DEF(ret, name, args) ret(*real_##name) args;
SHIM_REAL_LIST(SHIM_REAL_DEF)
#undef SHIM_REAL_DEF

/* The shim's own exported hooks, to refuse a lookup that would loop back into them. */
#define SHIM_HOOK_DECL(ret, name, args) extern ret name args;
SHIM_REAL_LIST(SHIM_HOOK_DECL)
#undef SHIM_HOOK_DECL

static void die(const char *what)
{
	static const char pre[] = "proxyshim: level=error event=fatal reason=dlsym symbol=";
	ssize_t r = write(2, pre, sizeof(pre) - 1);
	r = write(2, what, strlen(what));
	r = write(2, "\n", 1);
	(void)r;
	abort();
}

void *shim_dlsym(const char *name, const void *own_hook)
{
	void *p = dlsym(RTLD_NEXT, name);
	/* Loaded with dlopen() (the wrapper's --check) rather than preloaded, "next" can wrap
	 * around to this library; the global scope then has libc's. */
	if (p == own_hook)
		p = dlsym(RTLD_DEFAULT, name);
	if (p == own_hook)
		die(name);
	return p;
}

/* Set once every real_ pointer is: a hook checks this alone, so one that runs while another
 * thread is half way through the list never calls a pointer still NULL. */
_Atomic bool shim_resolved;

void shim_resolve(void)
{
	void *p;
	if (atomic_load_explicit(&shim_resolved, memory_order_acquire))
		return;
	/* Threads may get here together, and a hook called from inside dlsym() may come back:
	 * each pass fills what it finds NULL, and takes the others' pointers with acquire, so
	 * whichever pass ends publishes pointers it has every one of. */
#define SHIM_REAL_RESOLVE(ret, name, args)                                               \
	if (__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE) == NULL) {                   \
		p = shim_dlsym(#name, (const void *)name);                               \
		__atomic_store_n((void **)&real_##name, p, __ATOMIC_RELEASE);            \
	}
	SHIM_REAL_LIST(SHIM_REAL_RESOLVE)
#undef SHIM_REAL_RESOLVE
	/* Older C libraries have no fcntl64 or close_range: fall back where a twin exists. */
	if (real_fcntl64 == NULL)
		__atomic_store_n(&real_fcntl64, real_fcntl, __ATOMIC_RELEASE);
	if (real_accept == NULL || real_accept4 == NULL || real_close == NULL || real_fcntl == NULL ||
	    real_getpeername == NULL || real_listen == NULL || real_dup == NULL || real_dup2 == NULL)
		die("libc");
	atomic_store_explicit(&shim_resolved, true, memory_order_release);
}
