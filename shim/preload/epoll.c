/* epoll_ctl(): learns how the program watches its covered listeners, so that the shim's
 * parking epoll fd can wake the program's loop under the listener's own event data. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

SHIM_EXPORT int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
	struct shim_fd *e;
	int r, saved;

	SHIM_NEED(epoll_ctl);
	r = real_epoll_ctl(ep, op, fd, ev);
	if (r == 0 && (e = shim_fd_peek(fd)) != NULL &&
	    SHIM_UNLIKELY(atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_LISTENER) &&
	    (e->flags & SHIM_L_COVERED)) {
		/* Following the listener (a park to make, its epoll fd to mirror) may fail
		 * quietly: the program's call succeeded and keeps its errno. */
		saved = errno;
		shim_park_epoll_ctl(e, ep, op, ev);
		errno = saved;
	}
	return r;
}

/* ---- a listener the program watched before the shim knew it ----
 * A listener inherited across exec (a master's, systemd's) becomes known at its first
 * accept(); the program may have added it to its epoll sets before. The kernel lists each
 * epoll instance's registrations in /proc/self/fdinfo (tfd, events, data, ino): those that
 * name this socket are followed as if the hook had seen them. Once per such listener, with
 * system calls and stack buffers only (accept() may run in a signal handler). */

/* Opened by the system call, as core/fdpass.c explains. */
void shim_each_open_fd(void (*fn)(int fd, void *arg), void *arg)
{
	char buf[2048];
	int d = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	long n;
	if (d < 0)
		return;
	while ((n = syscall(SYS_getdents64, d, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			struct {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *de = (void *)(buf + off);
			const char *p = de->name;
			int fd = 0;
			off += de->reclen;
			if (*p < '0' || *p > '9')
				continue;
			for (; *p >= '0' && *p <= '9'; p++)
				fd = fd * 10 + (*p - '0');
			if (fd != d)
				fn(fd, arg);
		}
	}
	real_close(d);
}

struct watched {
	struct shim_fd *l;
	int fd;
	unsigned long ino;
};

/* The number after key in line (base 10 or 16, spaces skipped), advancing *at past it: true
 * when there is one. By hand: sscanf() is not async-signal-safe. */
static bool field(const char **at, const char *key, unsigned base, unsigned long long *v)
{
	const char *p = strstr(*at, key);
	bool any = false;
	if (!p)
		return false;
	for (p += strlen(key); *p == ' '; p++)
		;
	for (*v = 0;; p++, any = true) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else
			break;
		*v = *v * base + d;
	}
	*at = p;
	return any;
}

/* One "tfd: N events: X data: Y  pos:P ino:I sdev:S" line of epoll instance ep's fdinfo. */
static void replay_line(const char *line, int ep, const struct watched *w)
{
	unsigned long long tfd, events, data, ino;
	const char *p = line;
	struct epoll_event ev;

	if (strncmp(line, "tfd:", 4) != 0 || !field(&p, "tfd:", 10, &tfd) || tfd != (unsigned)w->fd ||
	    !field(&p, "events:", 16, &events) || !field(&p, "data:", 16, &data) ||
	    !field(&p, "ino:", 16, &ino) || ino != w->ino)
		return;
	ev.events = (uint32_t)events;
	ev.data.u64 = data;
	shim_park_epoll_ctl(w->l, ep, EPOLL_CTL_ADD, &ev);
}

/* "/proc/self/<dir>/<fd>" into buf (at least 40 bytes). */
static void proc_path(char *buf, const char *dir, int fd)
{
	char digits[12];
	size_t n = 0, len;
	unsigned u = (unsigned)fd;
	do
		digits[n++] = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	len = strlen("/proc/self/");
	memcpy(buf, "/proc/self/", len);
	memcpy(buf + len, dir, strlen(dir));
	len += strlen(dir);
	buf[len++] = '/';
	while (n)
		buf[len++] = digits[--n];
	buf[len] = '\0';
}

static void replay_epoll(int ep, void *arg)
{
	static const char anon[] = "anon_inode:[eventpoll]";
	const struct watched *w = arg;
	char path[40], line[256], buf[4096];
	size_t len = 0;
	ssize_t n;
	int f;

	if (shim_fd_kind(ep) != SHIM_FD_NONE && shim_fd_kind(ep) != SHIM_FD_EPOLL)
		return; /* the shim's own epoll fds, connections, listeners */
	proc_path(path, "fd", ep);
	n = readlink(path, buf, sizeof(buf) - 1);
	if (n != (ssize_t)sizeof(anon) - 1 || memcmp(buf, anon, sizeof(anon) - 1) != 0)
		return;
	proc_path(path, "fdinfo", ep);
	if ((f = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	while ((n = real_read(f, buf, sizeof(buf))) > 0) {
		for (ssize_t k = 0; k < n; k++) {
			if (buf[k] != '\n') {
				if (len < sizeof(line) - 1)
					line[len++] = buf[k];
				continue;
			}
			line[len] = '\0';
			replay_line(line, ep, w);
			len = 0;
		}
	}
	real_close(f);
}

void shim_epoll_find_watchers(struct shim_fd *l, int fd)
{
	struct stat st;
	struct watched w = {l, fd, 0};
	if (syscall(SYS_fstat, fd, &st) < 0)
		return;
	w.ino = (unsigned long)st.st_ino;
	shim_each_open_fd(replay_epoll, &w);
}
