/* Force-included (-include) when tests/e2e/testserver.c is built with musl-gcc: musl has no
 * close_range() wrapper, so the syscall stands in for it. The shim's close_range() hook is then
 * not exercised by the musl build; everything else is the same source. */
#include <sys/syscall.h>
#include <unistd.h>

static inline int close_range(unsigned int first, unsigned int last, int flags)
{
	return (int)syscall(SYS_close_range, first, last, flags);
}
