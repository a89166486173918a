/* Exec handoff: a process that re-executes itself (sshd) or another program keeps the header's
 * addresses of every connection that survives the exec. The state travels in one environment
 * variable of the new image only (the caller's environment is not touched); the new image's
 * shim adopts an entry only if its fd is still the same socket, then drops the variable. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

#define HANDOFF_VAR "PROXYSHIM_HANDOFF"
#define HANDOFF_TAG "1" /* the entry layout below; another layout is ignored, not misread */
#define MAX_ARGS 4096
#define HANDOFF_MAX (120 * 1024)

extern char **environ;

/* What an entry carries: every field of struct shim_fd but kind and ext, in this order. */
struct wire {
	uint8_t flags, version, command;
	uint32_t real_hash;
	struct shim_addr peer, local;
} __attribute__((packed));

static const char hexd[] = "0123456789abcdef";

/* fstat() became a symbol of its own in glibc 2.33; the system call keeps older ones working. */
static int sock_inode(int fd, unsigned long long *ino)
{
	struct stat st;
	if (syscall(SYS_fstat, fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return -1;
	*ino = (unsigned long long)st.st_ino;
	return 0;
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One entry's text: fd:inode:hex, at most ENTRY_MAX bytes. */
#define ENTRY_MAX (12 + 1 + 20 + 1 + 2 * sizeof(struct wire) + 1)

static size_t put_uint(char *p, unsigned long long v)
{
	char tmp[24];
	size_t n = 0, i;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t encode(char *p, int fd, unsigned long long ino, const struct shim_fd *e)
{
	struct wire w;
	const uint8_t *b = (const uint8_t *)&w;
	size_t n = 0;

	w.flags = e->flags;
	w.version = e->version;
	w.command = e->command;
	w.real_hash = e->real_hash;
	w.peer = e->peer;
	w.local = e->local;
	n += put_uint(p + n, (unsigned)fd);
	p[n++] = ':';
	n += put_uint(p + n, ino);
	p[n++] = ':';
	for (size_t i = 0; i < sizeof(w); i++) {
		p[n++] = hexd[b[i] >> 4];
		p[n++] = hexd[b[i] & 15];
	}
	return n;
}

struct build {
	char *buf;
	size_t len, cap;
};

static void add_entry(int fd, struct shim_fd *e, void *arg)
{
	struct build *b = arg;
	unsigned long long ino;

	/* Close-on-exec fds go too: posix_spawn file actions may dup2 them to 0 in the child,
	 * which finds them by inode (adopt_scan). */
	if (sock_inode(fd, &ino) < 0)
		return;
	if (b->len + ENTRY_MAX + 1 > b->cap)
		return;
	b->buf[b->len++] = ';';
	b->len += encode(b->buf + b->len, fd, ino, e);
	b->buf[b->len] = '\0';
}

struct handoff {
	char **envp; /* the new image's environment, or NULL: hand nothing over */
	void *mem;
	size_t memlen;
};

/* Builds the new image's environment: envp without any old handoff, plus ours. Memory comes
 * from mmap, which is safe in a vfork child; nothing is built when no connection is held. */
static void handoff_prepare(struct handoff *h, char *const envp[])
{
	size_t nconn, nenv = 0, cap, arr;
	struct build b;
	char **out;
	int saved = errno;

	h->envp = NULL;
	h->mem = NULL;
	if (!envp)
		return;
	nconn = shim_fd_each(SHIM_FD_CONN, NULL, NULL);
	if (nconn == 0)
		return;
	while (envp[nenv])
		nenv++;
	arr = (nenv + 2) * sizeof(char *);
	cap = sizeof(HANDOFF_VAR "=" HANDOFF_TAG) + nconn * (ENTRY_MAX + 1);
	/* Linux refuses an environment string over 128 KiB (E2BIG): the lowest fds go first
	 * and the rest are left behind rather than failing the exec. */
	if (cap > HANDOFF_MAX)
		cap = HANDOFF_MAX;
	h->memlen = arr + cap;
	h->mem = mmap(NULL, h->memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h->mem == MAP_FAILED) {
		h->mem = NULL;
		errno = saved;
		return;
	}
	out = h->mem;
	b.buf = (char *)h->mem + arr;
	b.cap = cap;
	b.len = sizeof(HANDOFF_VAR "=" HANDOFF_TAG) - 1;
	memcpy(b.buf, HANDOFF_VAR "=" HANDOFF_TAG, b.len + 1);
	shim_fd_each(SHIM_FD_CONN, add_entry, &b);
	nenv = 0;
	for (size_t i = 0; envp[i]; i++)
		if (strncmp(envp[i], HANDOFF_VAR "=", sizeof(HANDOFF_VAR)) != 0)
			out[nenv++] = envp[i];
	if (b.len > sizeof(HANDOFF_VAR "=" HANDOFF_TAG) - 1)
		out[nenv++] = b.buf;
	out[nenv] = NULL;
	h->envp = out;
	errno = saved;
}

static void handoff_done(struct handoff *h)
{
	int saved = errno;
	if (h->mem)
		munmap(h->mem, h->memlen);
	errno = saved;
}

#define WITH_HANDOFF(given, call)                                                        \
	do {                                                                             \
		struct handoff h_;                                                       \
		int r_;                                                                  \
		handoff_prepare(&h_, (given));                                           \
		r_ = (call);                                                             \
		handoff_done(&h_);                                                       \
		return r_;                                                               \
	} while (0)
#define ENV(given) (h_.envp ? h_.envp : (given))

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	SHIM_NEED(execve);
	WITH_HANDOFF(envp, real_execve(path, argv, ENV(envp)));
}

SHIM_EXPORT int execv(const char *path, char *const argv[])
{
	SHIM_NEED(execve);
	WITH_HANDOFF(environ, real_execve(path, argv, ENV(environ)));
}

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	SHIM_NEED(execvpe);
	WITH_HANDOFF(envp, real_execvpe(file, argv, ENV(envp)));
}

SHIM_EXPORT int execvp(const char *file, char *const argv[])
{
	SHIM_NEED(execvpe);
	WITH_HANDOFF(environ, real_execvpe(file, argv, ENV(environ)));
}

SHIM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	SHIM_NEED(fexecve);
	WITH_HANDOFF(envp, real_fexecve(fd, argv, ENV(envp)));
}

SHIM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	SHIM_NEED(posix_spawn);
	WITH_HANDOFF(envp, real_posix_spawn(pid, path, fa, attr, argv, ENV(envp)));
}

SHIM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	SHIM_NEED(posix_spawnp);
	WITH_HANDOFF(envp, real_posix_spawnp(pid, file, fa, attr, argv, ENV(envp)));
}

/* execl, execle, execlp: the list into an array on the stack, then the v forms above. */
#define COLLECT_ARGS(first, ap, argv, n)                                                 \
	do {                                                                             \
		argv[0] = (char *)(first);                                               \
		for (n = 1; argv[n - 1] && n < MAX_ARGS; n++)                            \
			argv[n] = va_arg(ap, char *);                                    \
		if (argv[n - 1]) {                                                       \
			va_end(ap);                                                      \
			errno = E2BIG;                                                   \
			return -1;                                                       \
		}                                                                        \
	} while (0)

SHIM_EXPORT int execl(const char *path, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	size_t n;
	va_list ap;
	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	va_end(ap);
	return execv(path, argv);
}

SHIM_EXPORT int execlp(const char *file, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	size_t n;
	va_list ap;
	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	va_end(ap);
	return execvp(file, argv);
}

SHIM_EXPORT int execle(const char *path, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	char *const *envp;
	size_t n;
	va_list ap;
	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	envp = va_arg(ap, char *const *);
	va_end(ap);
	return execve(path, argv, envp);
}

/* ---- the new image's side ---- */

static bool parse_uint(const char **p, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *s = *p;
	if (*s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		if (v > (~0ull - 9) / 10)
			return false;
		v = v * 10 + (unsigned)(*s++ - '0');
	}
	*p = s;
	*out = v;
	return true;
}

static bool adopt_at(int fd, const struct wire *w)
{
	struct shim_fd *e = shim_fd_get(fd);
	if (!e)
		return false;
	shim_fd_set_ext(e, NULL);
	e->flags = w->flags;
	e->version = w->version;
	e->command = w->command;
	e->real_hash = w->real_hash;
	e->peer = w->peer;
	e->local = w->local;
	atomic_store_explicit(&e->kind, SHIM_FD_CONN, memory_order_release);
	return true;
}

/* Parses one entry "fd:inode:hex" ending at end: true when well formed and worth adopting. */
static bool parse_entry(const char *p, const char *end, unsigned long long *fd,
			unsigned long long *ino, struct wire *w)
{
	uint8_t *b = (uint8_t *)w;

	if (!parse_uint(&p, fd) || *p++ != ':' || !parse_uint(&p, ino) || *p++ != ':' ||
	    end - p != (long)(2 * sizeof(*w)) || *fd > 0x7FFFFFFF)
		return false;
	for (size_t i = 0; i < sizeof(*w); i++) {
		int hi = unhex(p[2 * i]), lo = unhex(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return (w->flags & (SHIM_C_REWRITTEN | SHIM_C_PENDING | SHIM_C_FAILED)) != 0;
}

/* Calls fn for every well-formed entry of the handoff text v (after its tag). */
static void each_entry(const char *v, void (*fn)(unsigned long long fd, unsigned long long ino,
						 const struct wire *w, void *arg),
		       void *arg)
{
	for (const char *p = v; *p;) {
		const char *end = strchr(p, ';');
		unsigned long long fd, ino;
		struct wire w;
		if (!end)
			end = p + strlen(p);
		if (parse_entry(p, end, &fd, &ino, &w))
			fn(fd, ino, &w, arg);
		p = *end ? end + 1 : end;
	}
}

/* First: an fd that still holds, at its number, the very socket its entry was made for. */
static void adopt_same_number(unsigned long long fd, unsigned long long ino, const struct wire *w,
			      void *arg)
{
	unsigned long long now;
	(void)arg;
	if (sock_inode((int)fd, &now) == 0 && now == ino)
		adopt_at((int)fd, w);
}

struct by_inode {
	int fd;
	unsigned long long ino;
	bool done;
};

static void adopt_same_inode(unsigned long long fd, unsigned long long ino, const struct wire *w,
			     void *arg)
{
	struct by_inode *b = arg;
	(void)fd;
	if (!b->done && ino == b->ino)
		b->done = adopt_at(b->fd, w);
}

/* Then: other fds holding one of those sockets, e.g. fd 0 after posix_spawn's dup2 file
 * action, or a close-on-exec original's copy. */
static void adopt_by_inode(const char *v)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		const char *p = de->d_name;
		unsigned long long fd;
		struct by_inode b = {0, 0, false};
		if (!parse_uint(&p, &fd) || *p || fd > 0x7FFFFFFF || (int)fd == dirfd(d) ||
		    shim_fd_kind((int)fd) != SHIM_FD_NONE || sock_inode((int)fd, &b.ino) < 0)
			continue;
		b.fd = (int)fd;
		each_entry(v, adopt_same_inode, &b);
	}
	closedir(d);
}

void shim_handoff_adopt(void)
{
	const char *v = getenv(HANDOFF_VAR);
	int saved = errno;

	if (!v)
		return;
	/* An inactive shim adopts nothing: the variable is anyone's to set, and under secure
	 * execution (set-uid) the invoking user's. Only an active shim rewrites, and it trusts
	 * the variable no more than its own configuration: both come from the environment. */
	if (shim_config()->active && strncmp(v, HANDOFF_TAG ";", sizeof(HANDOFF_TAG)) == 0) {
		each_entry(v + sizeof(HANDOFF_TAG), adopt_same_number, NULL);
		adopt_by_inode(v + sizeof(HANDOFF_TAG));
	}
	/* Nothing stale may reach this image's own children. */
	unsetenv(HANDOFF_VAR);
	errno = saved;
}

/* system(): glibc's runs /bin/sh through its internal spawn, which no hook sees. With
 * connections to hand over, the shim runs it the way POSIX describes (SIGINT and SIGQUIT
 * ignored and SIGCHLD blocked in the caller while it waits), through posix_spawn above. */
SHIM_EXPORT int system(const char *cmd)
{
	struct sigaction ign, old_int, old_quit;
	sigset_t chld, old_mask, dflt;
	posix_spawnattr_t attr;
	char *argv[] = {(char *)"sh", (char *)"-c", (char *)cmd, NULL};
	pid_t pid;
	int status = -1, r;

	SHIM_NEED(system);
	if (!cmd || shim_fd_each(SHIM_FD_CONN, NULL, NULL) == 0)
		return real_system(cmd);
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGQUIT, &ign, &old_quit);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old_mask);
	posix_spawnattr_init(&attr);
	sigemptyset(&dflt);
	if (old_int.sa_handler != SIG_IGN)
		sigaddset(&dflt, SIGINT);
	if (old_quit.sa_handler != SIG_IGN)
		sigaddset(&dflt, SIGQUIT);
	posix_spawnattr_setsigdefault(&attr, &dflt);
	posix_spawnattr_setsigmask(&attr, &old_mask);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
	r = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	if (r == 0) {
		while (waitpid(pid, &status, 0) < 0) {
			if (errno != EINTR) {
				status = -1;
				break;
			}
		}
	} else {
		status = 127 << 8; /* the shell could not run: as if it exited 127 */
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	return status;
}
