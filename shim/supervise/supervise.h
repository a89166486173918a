/* The supervised mode (issue 4/5): COMMAND runs under a seccomp filter that sends its accept(),
 * accept4(), getpeername() (and listen(), for TCP_DEFER_ACCEPT) to this supervisor, which takes
 * the PROXY headers with the core's header step and hands the program the connections and the
 * client addresses. supervise.c: start, probes, the child, signals, the loop; notif.c: the
 * trapped calls; mem.c: the target's fds and memory; peers.c: the client addresses by socket
 * cookie. */
#ifndef SHIM_SUPERVISE_H
#define SHIM_SUPERVISE_H

#include <linux/seccomp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../core/addr.h"

/* Newer than some installed headers. */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0x80 /* O_EXCL: a pidfd for a thread (Linux 6.9) */
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* The probe's getpeername() from the child, told from any real call by its fd. */
#define SV_PROBE_FD (-4242)
#define SV_PROBE_PORT 4242

/* ---- mem.c: the target's fds and memory ---- */
/* A pidfd for the thread tid (PIDFD_THREAD, else its thread group): >= 0 or a negative errno. */
int sv_pidfd(pid_t tid);
/* Whether the last sv_pidfd() gave a pidfd of the thread itself (PIDFD_THREAD): only such a
 * pidfd may be kept for the thread's later calls (a group's pidfd would outlive the thread id,
 * which another process's thread may then take). */
bool sv_pidfd_of_thread(void);
/* The target's fd as a new fd of ours (pidfd_getfd): >= 0 or a negative errno. */
int sv_getfd(int pidfd, int targetfd);
/* Reads or writes n bytes at addr in tid's memory: process_vm_readv/writev, or /proc/TID/mem
 * where those are refused. 0 or a negative errno (-EFAULT: not all of it). */
int sv_mem_read(pid_t tid, uint64_t addr, void *buf, size_t n);
int sv_mem_write(pid_t tid, uint64_t addr, const void *buf, size_t n);
/* Two writes in one call (an address and its length). */
int sv_mem_write2(pid_t tid, uint64_t a1, const void *b1, size_t n1, uint64_t a2, const void *b2, size_t n2);
/* Only /proc/TID/mem from now on (the probe found process_vm_* refused). */
void sv_mem_use_proc(void);
bool sv_mem_uses_proc(void);

/* ---- peers.c: what getpeername() (and getsockname()) answer for a rewritten connection ---- */
struct sv_peer {
	struct shim_addr client;
	struct shim_addr local; /* the header's destination; family 0: none */
};
uint64_t sv_cookie(int fd); /* 0 when the socket has none */
int sv_peer_put(uint64_t cookie, const struct sv_peer *peer);
const struct sv_peer *sv_peer_get(uint64_t cookie);
size_t sv_peer_count(void);

/* ---- notif.c: the trapped calls ---- */
struct sv_nr {
	int accept, accept4, getpeername, listen;
};
void sv_notif_setup(int notif_fd, bool defer_listen);
/* --no-io-uring: io_uring_setup() fails with ENOSYS (else it is the kernel's, said once). */
void sv_notif_refuse_io_uring(void);
/* One notification is ready on the fd: receive and serve it (or hold it). */
void sv_notif_receive(void);
/* The fds held notifications wait on, appended to p (at most cap); the poll timeout in ms
 * they need (-1: none). */
int sv_notif_pollfds(struct pollfd *p, int cap, int *timeout_ms);
/* After poll(): go on with held notifications whose fd is ready or whose time came. */
void sv_notif_resume(const struct pollfd *p, int n);
/* Answers a notification with an error (e > 0), or lets the kernel run the call (e == 0). */
void sv_respond(uint64_t id, int e);
bool sv_id_valid(uint64_t id);
/* Whether SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6) is on. */
bool sv_sync_wake(void);
/* The probe: serves the child's probe notification with every piece the mode uses.
 * 0, or a negative errno with what failed in what (a static string). */
int sv_probe_serve(pid_t child, int child_fd, const char **what);

#endif
