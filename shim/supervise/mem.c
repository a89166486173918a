/* The target's fds and memory: pidfds per thread, pidfd_getfd(), and reads and writes of the
 * trapped call's arguments (process_vm_readv/writev, or /proc/TID/mem where a seccomp profile
 * such as containerd's default refuses process_vm_*). Every fd opened here is closed by the
 * caller before its notification is answered. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "supervise.h"

static bool g_proc_mem;

void sv_mem_use_proc(void)
{
	g_proc_mem = true;
}

bool sv_mem_uses_proc(void)
{
	return g_proc_mem;
}

/* The thread group of tid, from /proc/TID/status. */
static pid_t tgid_of(pid_t tid)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;
	const char *p;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	p = strstr(buf, "\nTgid:");
	if (p == NULL)
		return -ESRCH;
	p += 6;
	while (*p == ' ' || *p == '\t')
		p++;
	pid_t v = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (*p - '0');
	return v > 0 ? v : -ESRCH;
}

static bool g_thread_pidfds;

bool sv_pidfd_of_thread(void)
{
	return g_thread_pidfds;
}

int sv_pidfd(pid_t tid)
{
	/* Any thread of the group will do for pidfd_getfd(): the fd table is the group's. */
	int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
	if (fd >= 0) {
		g_thread_pidfds = true;
		return fd;
	}
	if (errno != EINVAL)
		return -errno;
	fd = (int)syscall(SYS_pidfd_open, tid, 0); /* a kernel before 6.9, tid a group leader */
	if (fd >= 0)
		return fd;
	pid_t tgid = tgid_of(tid);
	if (tgid < 0)
		return tgid;
	fd = (int)syscall(SYS_pidfd_open, tgid, 0);
	return fd >= 0 ? fd : -errno;
}

int sv_getfd(int pidfd, int targetfd)
{
	int fd = (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, 0);
	return fd >= 0 ? fd : -errno;
}

static int proc_mem(pid_t tid, uint64_t addr, void *buf, size_t n, bool write)
{
	char path[64];
	ssize_t r;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)tid);
	fd = open(path, (write ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = write ? pwrite(fd, buf, n, (off_t)addr) : pread(fd, buf, n, (off_t)addr);
	int e = errno;
	close(fd);
	if (r < 0)
		return e == EIO ? -EFAULT : -e;
	return (size_t)r == n ? 0 : -EFAULT;
}

static int vm(pid_t tid, uint64_t addr, void *buf, size_t n, bool write)
{
	struct iovec local = {buf, n}, remote = {(void *)(uintptr_t)addr, n};
	ssize_t r;

	if (n == 0)
		return 0;
	if (g_proc_mem)
		return proc_mem(tid, addr, buf, n, write);
	r = write ? process_vm_writev(tid, &local, 1, &remote, 1, 0)
		  : process_vm_readv(tid, &local, 1, &remote, 1, 0);
	if (r < 0)
		return -errno;
	return (size_t)r == n ? 0 : -EFAULT;
}

int sv_mem_read(pid_t tid, uint64_t addr, void *buf, size_t n)
{
	return vm(tid, addr, buf, n, false);
}

int sv_mem_write(pid_t tid, uint64_t addr, const void *buf, size_t n)
{
	return vm(tid, addr, (void *)(uintptr_t)buf, n, true);
}

int sv_mem_write2(pid_t tid, uint64_t a1, const void *b1, size_t n1, uint64_t a2, const void *b2, size_t n2)
{
	struct iovec local[2] = {{(void *)(uintptr_t)b1, n1}, {(void *)(uintptr_t)b2, n2}};
	struct iovec remote[2] = {{(void *)(uintptr_t)a1, n1}, {(void *)(uintptr_t)a2, n2}};
	ssize_t r;
	int rc;

	if (g_proc_mem || n1 == 0) {
		rc = vm(tid, a1, (void *)(uintptr_t)b1, n1, true);
		return rc < 0 ? rc : vm(tid, a2, (void *)(uintptr_t)b2, n2, true);
	}
	r = process_vm_writev(tid, local, 2, remote, 2, 0);
	if (r < 0)
		return -errno;
	return (size_t)r == n1 + n2 ? 0 : -EFAULT;
}
