/* Where a connection's PROXY header is read: peek until pp_parse() has a complete header,
 * then consume exactly its length, so no byte of application data is ever taken. Waiting for
 * the rest of a split header uses SO_RCVLOWAT, so poll() wakes only when new bytes arrive. */
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shim.h"

/* The spec's design note: a header without TLVs fits in 536 bytes; larger ones are rare
 * and get a buffer of their exact size. */
#define PEEK_SMALL 536

struct take {
	int fd;
	const struct sockaddr *peer;
	uint16_t lport;
	uint8_t *buf;
	size_t cap;
	size_t seen; /* bytes peeked last time */
	bool lowat;  /* SO_RCVLOWAT was raised and must be put back */
	struct timespec deadline;
};

static long ms_left(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static enum shim_verdict reject(const struct take *t, const char *reason, const char *detail)
{
	if (shim_log_on(SHIM_LOG_WARN)) {
		char peer[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_WARN, "event=reject reason=%s%s%s%s peer=%s port=%u", reason,
			 detail ? " detail=\"" : "", detail ? detail : "", detail ? "\"" : "",
			 shim_sa_str(t->peer, peer), t->lport);
	}
	return SHIM_REJECT;
}

/* A trusted connection that sent no header byte at all: optional mode lets it through. */
static enum shim_verdict no_header(const struct take *t, const char *reason)
{
	if (shim_config()->mode == SHIM_MODE_OPTIONAL && t->seen == 0) {
		if (shim_log_on(SHIM_LOG_DEBUG)) {
			char peer[SHIM_ADDRSTR_LEN];
			shim_log(SHIM_LOG_DEBUG, "event=pass reason=%s peer=%s port=%u", reason,
				 shim_sa_str(t->peer, peer), t->lport);
		}
		return SHIM_PASS;
	}
	return reject(t, reason, NULL);
}

/* Stores the header's addresses as the program will see them on this listener's family:
 * an IPv4 source on an IPv6 socket becomes ::ffff:a.b.c.d, as the kernel would report it. */
static void to_listener_family(struct shim_addr *a, const struct sockaddr_storage *ss, int lfam)
{
	shim_addr_from_sa(a, (const struct sockaddr *)ss);
	if (a->family == AF_INET && lfam == AF_INET6) {
		memmove(a->addr + 12, a->addr, 4);
		memset(a->addr, 0, 10);
		a->addr[10] = 0xFF;
		a->addr[11] = 0xFF;
		a->family = AF_INET6;
	}
}

static enum shim_verdict record(const struct take *t, const struct pp_header *h)
{
	struct shim_fd *e;
	int sfam = h->src.ss_family;

	/* LOCAL, v1 UNKNOWN, UNSPEC, and addresses of another transport (UDP) or family (UNIX)
	 * are not this TCP connection's peer: the real endpoints stay. */
	if (h->command != PP_CMD_PROXY || h->transport != PP_TRANS_STREAM ||
	    (sfam != AF_INET && sfam != AF_INET6))
		return SHIM_ACCEPT_HEADER;
	e = shim_fd_get(t->fd);
	if (!e)
		return reject(t, "nomem", NULL);
	e->flags = SHIM_C_REWRITTEN;
	e->version = h->version;
	e->command = h->command;
	e->real_hash = shim_sa_hash(t->peer);
	to_listener_family(&e->peer, &h->src, t->peer->sa_family);
	to_listener_family(&e->local, &h->dst, t->peer->sa_family);
	atomic_store_explicit(&e->kind, SHIM_FD_CONN, memory_order_release);
	if (shim_log_on(SHIM_LOG_DEBUG)) {
		char real[SHIM_ADDRSTR_LEN], client[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_DEBUG, "event=accept version=%u client=%s peer=%s port=%u", h->version,
			 shim_sa_str((const struct sockaddr *)&h->src, client),
			 shim_sa_str(t->peer, real), t->lport);
	}
	return SHIM_ACCEPT_HEADER;
}

/* Consumes exactly n bytes that a peek has shown are queued. */
static int consume(int fd, uint8_t *buf, size_t n)
{
	while (n > 0) {
		ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		n -= (size_t)r;
	}
	return 0;
}

/* Waits until more than t->seen bytes (or want bytes) are queued, EOF, or the deadline.
 * Returns 1 to peek again, 0 on timeout, -1 on EOF or error. */
static int wait_more(struct take *t, size_t want)
{
	int lowat = (int)(want > t->seen + 1 ? want : t->seen + 1);
	struct pollfd p = {.fd = t->fd, .events = POLLIN | POLLRDHUP};
	long left;

	if (setsockopt(t->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0)
		t->lowat = true;
	for (;;) {
		left = ms_left(&t->deadline);
		if (left <= 0)
			return 0;
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return 0;
		if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL))
			return -1;
		return 1;
	}
}

enum shim_verdict shim_take_header(int fd, const struct sockaddr *peer, uint16_t lport)
{
	const struct shim_config *c = shim_config();
	uint8_t small[PEEK_SMALL];
	struct take t = {.fd = fd, .peer = peer, .lport = lport, .buf = small, .cap = sizeof(small)};
	enum shim_verdict v;
	struct pp_header h;
	bool waited = false, eof = false;
	int saved = errno;

	for (;;) {
		ssize_t n = recv(fd, t.buf, t.cap, MSG_PEEK | MSG_DONTWAIT);
		size_t want = 0, prev = t.seen;
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				v = reject(&t, "error", strerror(errno));
				goto out;
			}
			n = 0;
		} else if (n == 0) {
			v = no_header(&t, "eof");
			goto out;
		}
		t.seen = (size_t)n;
		if (n > 0) {
			r = pp_parse(t.buf, (size_t)n, c->versions, &h);
			if (r > 0) {
				if (consume(fd, t.buf, (size_t)r) < 0) {
					v = reject(&t, "error", "consume");
					goto out;
				}
				v = record(&t, &h);
				goto out;
			}
			if (r == PP_NOT_PROXY) {
				v = no_header(&t, "missing");
				goto out;
			}
			if (r == PP_INVALID) {
				v = reject(&t, h.error == PP_E_VERSION_NOT_ALLOWED ? "version" : "invalid",
					   pp_strerror(h.error));
				goto out;
			}
			/* PP_INCOMPLETE. A v2 header announces its size: wait for all of it, in a
			 * buffer of that size when it is larger than the stack one. */
			if ((size_t)n >= PP2_HEADER_LEN && t.buf[0] == 0x0D) {
				want = PP2_HEADER_LEN + ((size_t)t.buf[14] << 8 | t.buf[15]);
				if (want > t.cap) {
					uint8_t *big = malloc(want);
					if (!big) {
						v = reject(&t, "nomem", NULL);
						goto out;
					}
					if (t.buf != small)
						free(t.buf);
					t.buf = big;
					t.cap = want;
					continue;
				}
			}
		}
		if (eof) {
			v = no_header(&t, "eof");
			goto out;
		}
		if (!waited) {
			clock_gettime(CLOCK_MONOTONIC, &t.deadline);
			t.deadline.tv_sec += c->timeout_ms / 1000;
			t.deadline.tv_nsec += (long)(c->timeout_ms % 1000) * 1000000;
			if (t.deadline.tv_nsec >= 1000000000) {
				t.deadline.tv_sec++;
				t.deadline.tv_nsec -= 1000000000;
			}
			waited = true;
		}
		if (waited && t.seen == prev) {
			/* Woken without progress (SO_RCVLOWAT is capped at half the receive buffer,
			 * below the largest headers): do not spin. */
			struct timespec pause = {0, 1000000};
			nanosleep(&pause, NULL);
		}
		r = wait_more(&t, want);
		if (r == 0) {
			v = no_header(&t, "timeout");
			goto out;
		}
		/* On EOF, look once more: the last bytes may have completed the header. */
		if (r < 0)
			eof = true;
	}
out:
	if (t.lowat) {
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	}
	if (t.buf != small)
		free(t.buf);
	errno = saved;
	return v;
}
