/* libinject: loaded beneath the shim (LD_PRELOAD="libproxyshim.so libinject.so"), so the shim's
 * real_accept and real_accept4 land here. While the file named by E2E_TEST_INJECT holds
 * an errno name (ENFILE, EMFILE, ENOBUFS, ENOMEM), both fail with it before reaching the kernel,
 * leaving the connection queued, as the kernel does when it cannot allocate the new file.
 * ENFILE is system-wide (fs.file-max): producing it for real would fail every process on the
 * machine, so the tests inject it here. Only raw syscalls: no hooked function is called. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fault(void)
{
	static const char *path;
	char buf[32];
	if (!path && !(path = getenv("E2E_TEST_INJECT")))
		return 0;
	int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	long n = syscall(SYS_read, fd, buf, sizeof buf - 1);
	syscall(SYS_close, fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	if (!strncmp(buf, "ENFILE", 6))
		return ENFILE;
	if (!strncmp(buf, "EMFILE", 6))
		return EMFILE;
	if (!strncmp(buf, "ENOBUFS", 7))
		return ENOBUFS;
	if (!strncmp(buf, "ENOMEM", 6))
		return ENOMEM;
	return 0;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	static int (*real)(int, struct sockaddr *, socklen_t *);
	int e = fault();
	if (e) {
		errno = e;
		return -1;
	}
	if (!real)
		real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
	return real(fd, addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	static int (*real)(int, struct sockaddr *, socklen_t *, int);
	int e = fault();
	if (e) {
		errno = e;
		return -1;
	}
	if (!real)
		real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
	return real(fd, addr, len, flags);
}
