/* notrunc: stands in for a socket that refuses recv(MSG_TRUNC) (MPTCP on some kernels answers
 * EOPNOTSUPP). Preloaded after libproxyshim.so, it is the "real" recv() the shim finds with
 * dlsym(RTLD_NEXT), so the shim's plain-copy fallback for consuming a header is exercised.
 * Every refusal is written to stderr, for the test to see that the fallback ran. */
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t recv(int fd, void *buf, size_t n, int flags);

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	static ssize_t (*next)(int, void *, size_t, int);
	if (!next)
		next = (ssize_t(*)(int, void *, size_t, int))dlsym(RTLD_NEXT, "recv");
	if (flags & MSG_TRUNC) {
		static const char msg[] = "notrunc: refused MSG_TRUNC\n";
		ssize_t w = write(2, msg, sizeof(msg) - 1);
		(void)w;
		errno = EOPNOTSUPP;
		return -1;
	}
	return next(fd, buf, n, flags);
}
