/* Exec handoff: a process that re-executes itself (sshd) or another program keeps the header's
 * addresses of every connection that survives the exec. The state travels in one environment
 * variable of the new image only (the caller's environment is not touched); the new image's
 * shim adopts an entry only if its fd is still the same socket, then drops the variable.
 * This file: the exec and spawn hooks, and adoption; the variable's text is handoff.c's. */
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

#include "../core/handoff.h"
#include "shim.h"

#define MAX_ARGS 4096
#define HANDOFF_MAX (120 * 1024)

extern char **environ;

/* fd's inode when it is a socket: 0, or a negative errno. fstat() became a symbol of its own
 * in glibc 2.33; the system call keeps older ones working. */
static int sock_inode(int fd, unsigned long long *ino)
{
	struct stat st;
	if (syscall(SYS_fstat, fd, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	*ino = (unsigned long long)st.st_ino;
	return 0;
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
	b->len = shim_handoff_append(b->buf, b->len, b->cap, fd, ino, e);
}

struct handoff {
	char **envp; /* the new image's environment, or NULL: hand nothing over */
	void *mem;
	size_t memlen;
};

/* Builds the new image's environment: envp without any old handoff, plus ours. Memory comes
 * from mmap, which is safe in a vfork child; nothing is built when no connection is held.
 * Every exec and spawn hook starts with this: it is their errno boundary (what it does may
 * fail quietly, and the real call that follows sets errno itself when it fails). */
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
	cap = sizeof(SHIM_HANDOFF_PREFIX) + nconn * (SHIM_HANDOFF_ENTRY_MAX + 1);
	/* Linux refuses an environment string over 128 KiB (E2BIG): the lowest fds go first
	 * and the rest are left behind rather than failing the exec. */
	if (cap > HANDOFF_MAX)
		cap = HANDOFF_MAX;
	h->memlen = arr + cap;
	h->mem = mmap(NULL, h->memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h->mem == MAP_FAILED) {
		h->mem = NULL;
		goto done;
	}
	out = h->mem;
	b.buf = (char *)h->mem + arr;
	b.cap = cap;
	b.len = sizeof(SHIM_HANDOFF_PREFIX) - 1;
	memcpy(b.buf, SHIM_HANDOFF_PREFIX, b.len + 1);
	shim_fd_each(SHIM_FD_CONN, add_entry, &b);
	nenv = 0;
	for (size_t i = 0; envp[i]; i++)
		if (strncmp(envp[i], SHIM_HANDOFF_VAR "=", sizeof(SHIM_HANDOFF_VAR)) != 0)
			out[nenv++] = envp[i];
	if (b.len > sizeof(SHIM_HANDOFF_PREFIX) - 1)
		out[nenv++] = b.buf;
	out[nenv] = NULL;
	h->envp = out;
done:
	errno = saved;
}

/* After the real call: errno is its answer, and stays so (munmap() of a whole mapping of ours
 * does not fail). */
static void handoff_done(struct handoff *h)
{
	if (h->mem)
		munmap(h->mem, h->memlen);
}

/* The environment the call passes on: given, or the copy with our handoff in it. */
static char *const *handoff_env(const struct handoff *h, char *const given[])
{
	return h->envp ? h->envp : given;
}

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	struct handoff h;
	int r;
	SHIM_NEED(execve);
	handoff_prepare(&h, envp);
	r = real_execve(path, argv, handoff_env(&h, envp));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int execv(const char *path, char *const argv[])
{
	struct handoff h;
	int r;
	SHIM_NEED(execve);
	handoff_prepare(&h, environ);
	r = real_execve(path, argv, handoff_env(&h, environ));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	struct handoff h;
	int r;
	SHIM_NEED(execvpe);
	handoff_prepare(&h, envp);
	r = real_execvpe(file, argv, handoff_env(&h, envp));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int execvp(const char *file, char *const argv[])
{
	struct handoff h;
	int r;
	SHIM_NEED(execvpe);
	handoff_prepare(&h, environ);
	r = real_execvpe(file, argv, handoff_env(&h, environ));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	struct handoff h;
	int r;
	SHIM_NEED(fexecve);
	handoff_prepare(&h, envp);
	r = real_fexecve(fd, argv, handoff_env(&h, envp));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	struct handoff h;
	int r;
	SHIM_NEED(posix_spawn);
	handoff_prepare(&h, envp);
	r = real_posix_spawn(pid, path, fa, attr, argv, handoff_env(&h, envp));
	handoff_done(&h);
	return r;
}

SHIM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	struct handoff h;
	int r;
	SHIM_NEED(posix_spawnp);
	handoff_prepare(&h, envp);
	r = real_posix_spawnp(pid, file, fa, attr, argv, handoff_env(&h, envp));
	handoff_done(&h);
	return r;
}

/* execl, execle, execlp: the list into argv (MAX_ARGS slots) on the caller's stack, then the
 * v forms above. 0, or -E2BIG when the list does not end within MAX_ARGS; ap stays open. */
static int collect_args(const char *first, va_list *ap, char **argv)
{
	size_t n;
	argv[0] = (char *)first;
	for (n = 1; argv[n - 1] && n < MAX_ARGS; n++)
		argv[n] = va_arg(*ap, char *);
	return argv[n - 1] ? -E2BIG : 0;
}

SHIM_EXPORT int execl(const char *path, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	va_list ap;
	int r;
	va_start(ap, arg);
	r = collect_args(arg, &ap, argv);
	va_end(ap);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return execv(path, argv);
}

SHIM_EXPORT int execlp(const char *file, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	va_list ap;
	int r;
	va_start(ap, arg);
	r = collect_args(arg, &ap, argv);
	va_end(ap);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return execvp(file, argv);
}

SHIM_EXPORT int execle(const char *path, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	char *const *envp = NULL;
	va_list ap;
	int r;
	va_start(ap, arg);
	r = collect_args(arg, &ap, argv);
	if (r == 0)
		envp = va_arg(ap, char *const *);
	va_end(ap);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return execve(path, argv, envp);
}

/* ---- the new image's side ---- */

/* First: an fd that still holds, at its number, the very socket its entry was made for. */
static void adopt_same_number(int fd, unsigned long long ino, const struct shim_handoff_wire *w,
			      void *arg)
{
	unsigned long long now;
	(void)arg;
	if (sock_inode(fd, &now) == 0 && now == ino)
		shim_fd_adopt(fd, w);
}

struct by_inode {
	int fd;
	unsigned long long ino;
	bool done;
};

static void adopt_same_inode(int fd, unsigned long long ino, const struct shim_handoff_wire *w,
			     void *arg)
{
	struct by_inode *b = arg;
	(void)fd;
	if (!b->done && ino == b->ino)
		b->done = shim_fd_adopt(b->fd, w);
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
		if (shim_handoff_uint(&p, &fd) < 0 || *p || fd > 0x7FFFFFFF || (int)fd == dirfd(d) ||
		    shim_fd_kind((int)fd) != SHIM_FD_NONE || sock_inode((int)fd, &b.ino) < 0)
			continue;
		b.fd = (int)fd;
		shim_handoff_each(v, adopt_same_inode, &b);
	}
	closedir(d);
}

/* From the constructor, which keeps errno (init.c). */
void shim_handoff_adopt(void)
{
	const char *v = getenv(SHIM_HANDOFF_VAR), *entries;

	if (!v)
		return;
	/* An inactive shim adopts nothing: the variable is anyone's to set, and under secure
	 * execution (set-uid) the invoking user's. Only an active shim rewrites, and it trusts
	 * the variable no more than its own configuration: both come from the environment. */
	if (shim_config()->active && (entries = shim_handoff_entries(v)) != NULL) {
		shim_handoff_each(entries, adopt_same_number, NULL);
		adopt_by_inode(entries);
	}
	/* Nothing stale may reach this image's own children. */
	unsetenv(SHIM_HANDOFF_VAR);
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
