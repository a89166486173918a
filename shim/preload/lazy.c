/* Lazy consumption (PROXYSHIM_CONSUME=lazy): accept() returns at once and the header is read
 * by the connection's first read or getpeername(). Servers that speak first (SSH, SMTP, FTP)
 * behind balancers that send the header only with the client's first bytes need this. */
#include <errno.h>
#include <fcntl.h>

#include "shim.h"

int shim_lazy_mark(int fd, const struct sockaddr *peer, uint16_t lport, uint64_t deadline)
{
	struct shim_fd *e = shim_fd_get(fd);
	if (!e)
		return -ENOMEM;
	shim_fd_set_ext(e, NULL);
	e->flags = SHIM_C_PENDING;
	e->version = 0;
	e->command = 0;
	e->real_hash = shim_sa_hash(peer);
	shim_pend_set_deadline(e, deadline);
	e->pend.lport = lport;
	atomic_store_explicit(&e->kind, SHIM_FD_CONN, memory_order_release);
	return 0;
}

/* The header refused: the connection is shut down, and the program's reads fail. */
static int failed(struct shim_fd *e, int fd)
{
	if (!(e->flags & SHIM_C_FAILED)) {
		e->flags = SHIM_C_FAILED;
		shutdown(fd, SHUT_RDWR);
	}
	return -ECONNRESET;
}

int shim_lazy_settle(int fd, struct shim_fd *e, enum shim_settle how)
{
	if (SHIM_UNLIKELY(e->flags & SHIM_C_SHARED))
		return shim_fdpass_settle(fd, e, how); /* another process may hold it too */
	return shim_lazy_settle_here(fd, e, how);
}

int shim_lazy_settle_here(int fd, struct shim_fd *e, enum shim_settle how)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct shim_progress pr = {0};
	struct shim_conn_ref ref;
	enum shim_verdict v;
	uint64_t deadline;

	if (e->flags & SHIM_C_FAILED)
		return failed(e, fd);
	if (real_getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		/* Reset or closed before its header was read: never hand the header's bytes
		 * over as data. Another errno (EBADF, ENOTSOCK) means the fd is not ours now. */
		if (errno == ENOTCONN)
			return failed(e, fd);
		shim_fd_clear(fd);
		return 0;
	}
	if (shim_sa_hash((const struct sockaddr *)&ss) != e->real_hash) {
		/* Gone, or no longer the connection the entry was made for: nothing to read. */
		shim_fd_clear(fd);
		return 0;
	}
	ref.fd = fd;
	ref.peer = (const struct sockaddr *)&ss;
	ref.lport = e->pend.lport;
	deadline = shim_pend_deadline(e);
	how = shim_settle_mode(fd, how);
	if (how == SHIM_SETTLE_WAIT) {
		v = shim_take_header(&ref, &pr, deadline);
	} else {
		v = shim_header_step(&ref, &pr, false);
		if (v == SHIM_INCOMPLETE) {
			if (shim_now_ms() < deadline) {
				/* The bytes stay in the kernel; readiness waits for the ones still needed. */
				shim_header_lowat(fd, &pr);
				return -EAGAIN;
			}
			v = shim_header_none(&ref, pr.seen, SHIM_REASON_TIMEOUT);
		} else {
			shim_header_lowat_reset(fd);
		}
	}
	if (v == SHIM_REJECT)
		return failed(e, fd);
	/* A header with an address has turned the entry into a rewritten one; anything else
	 * (LOCAL, UNKNOWN, a pass in optional mode) leaves the real endpoints. */
	if (e->flags & SHIM_C_PENDING)
		shim_fd_clear(fd);
	return 0;
}
