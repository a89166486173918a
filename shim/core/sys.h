/* The system calls and libc functions the core makes, as pointers: real_read, real_close ...
 * A front-end defines them: the preload library with what dlsym(RTLD_NEXT) finds behind its
 * own hooks (preload/real.c); a program that hooks nothing with libc's own (core/sys_direct.c,
 * used by the unit tests). The core declares them and never defines or resolves them itself. */
#ifndef SHIM_CORE_SYS_H
#define SHIM_CORE_SYS_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base.h"

/* Every function the preload library hooks, with the libc signature behind it. */
#define SHIM_REAL_LIST(X)                                                                   \
	X(int, accept, (int, struct sockaddr *, socklen_t *))                               \
	X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                         \
	X(int, getpeername, (int, struct sockaddr *, socklen_t *))                          \
	X(int, listen, (int, int))                                                          \
	X(int, close, (int))                                                                \
	X(int, close_range, (unsigned int, unsigned int, int))                              \
	X(void, closefrom, (int))                                                           \
	X(int, dup, (int))                                                                  \
	X(int, dup2, (int, int))                                                            \
	X(int, dup3, (int, int, int))                                                       \
	X(int, fcntl, (int, int, ...))                                                      \
	X(int, fcntl64, (int, int, ...))                                                    \
	X(int, epoll_ctl, (int, int, int, struct epoll_event *))                            \
	X(int, poll, (struct pollfd *, nfds_t, int))                                        \
	X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)) \
	X(int, getsockname, (int, struct sockaddr *, socklen_t *))                          \
	X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))               \
	X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *)) \
	X(ssize_t, read, (int, void *, size_t))                                             \
	X(pid_t, fork, (void))                                                              \
	X(int, system, (const char *))                                                      \
	X(int, execve, (const char *, char *const[], char *const[]))                        \
	X(int, execvpe, (const char *, char *const[], char *const[]))                       \
	X(int, fexecve, (int, char *const[], char *const[]))                                \
	X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *,     \
			     const posix_spawnattr_t *, char *const[], char *const[]))      \
	X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *,    \
			      const posix_spawnattr_t *, char *const[], char *const[]))     \
	X(ssize_t, readv, (int, const struct iovec *, int))                                 \
	X(ssize_t, recv, (int, void *, size_t, int))                                        \
	X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))    \
	X(ssize_t, recvmsg, (int, struct msghdr *, int))                                    \
	X(ssize_t, sendmsg, (int, const struct msghdr *, int))                              \
	X(ssize_t, __read_chk, (int, void *, size_t, size_t))                               \
	X(ssize_t, __recv_chk, (int, void *, size_t, size_t, int))                          \
	X(ssize_t, __recvfrom_chk, (int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *))

#define SHIM_REAL_DECL(ret, name, args) extern ret(*real_##name) args;
SHIM_REAL_LIST(SHIM_REAL_DECL)
#undef SHIM_REAL_DECL

/* Sets every real_ pointer still NULL (the front-end's): the core calls it before its first
 * system call that may come ahead of the front-end's start (reading the configuration file). */
void shim_resolve(void);

/* The fd's status flags (O_NONBLOCK ...), or a negative errno. */
static inline int shim_fd_status(int fd)
{
	int fl = real_fcntl(fd, F_GETFL);
	return fl >= 0 ? fl : -errno;
}

#endif
