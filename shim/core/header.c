/* Where a connection's PROXY header is read: peek until pp_parse() has a complete header,
 * then consume exactly its length, so no byte of application data is ever taken. A header
 * that is not complete yet is waited for with SO_RCVLOWAT raised, so that poll() or epoll
 * wake only when the bytes it still needs have arrived.
 * errno: changed freely here; the front-end's hooks keep the program's (preload/shim.h). */
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>

#include "proxyshim_proto.h"
#include "addr.h"
#include "config.h"
#include "conn.h"
#include "header.h"
#include "log.h"
#include "stats.h"
#include "sys.h"

/* A header without TLVs fits in 536 bytes (docs/PROTOCOL.md, "General rules"); larger ones
 * are rare and get a buffer of their exact size. */
#define PEEK_SMALL 536

static enum shim_verdict reject(const struct shim_conn_ref *c, enum shim_reason why, const char *detail)
{
	shim_stat(SHIM_R_REJECTED, why, 0, 0);
	if (shim_log_on(SHIM_LOG_WARN)) {
		char peer[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_WARN, "event=reject reason=%s%s%s%s peer=%s port=%u", shim_reason_name(why),
			 detail ? " detail=\"" : "", detail ? detail : "", detail ? "\"" : "",
			 shim_sa_str(c->peer, peer), c->lport);
	}
	return SHIM_REJECT;
}

enum shim_verdict shim_header_none(const struct shim_conn_ref *c, size_t seen, enum shim_reason why)
{
	/* Optional mode lets through a trusted connection that sent not one header byte. */
	if (shim_config()->mode == SHIM_MODE_OPTIONAL && seen == 0) {
		shim_stat(SHIM_R_PASSED, why, 0, 0);
		if (shim_log_on(SHIM_LOG_DEBUG)) {
			char peer[SHIM_ADDRSTR_LEN];
			shim_log(SHIM_LOG_DEBUG, "event=pass reason=%s peer=%s port=%u", shim_reason_name(why),
				 shim_sa_str(c->peer, peer), c->lport);
		}
		return SHIM_PASS;
	}
	return reject(c, why, NULL);
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

/* A copy of the header's TLVs for proxyshim_tlv(): whole TLVs, up to PROXYSHIM_TLV_MAX bytes,
 * in a block of its own pages (core/conn.h: close() and dup2() let go of it without free()). */
static struct shim_tlvs *keep_tlvs(const struct pp_header *h)
{
	struct shim_tlvs *t;
	size_t max = shim_config()->tlv_max, keep = 0;
	const uint8_t *p = h->tlv, *end;

	/* No TLV area (v1, a v2 header without TLVs): tlv is NULL, and NULL + 0 is undefined. */
	if (!p || h->tlv_len == 0)
		return NULL;
	end = p + h->tlv_len;
	while (end - p >= 3) {
		size_t one = 3 + ((size_t)p[1] << 8 | p[2]);
		if (one > (size_t)(end - p) || keep + one > max)
			break;
		keep += one;
		p += one;
	}
	if (keep == 0 || (t = shim_tlvs_new(keep)) == NULL)
		return NULL;
	memcpy(t->data, h->tlv, keep);
	return t;
}

static enum shim_verdict record(const struct shim_conn_ref *c, const struct pp_header *h,
				struct shim_progress *pr)
{
	struct shim_fd *e;
	int sfam = h->src.ss_family;

	/* LOCAL, v1 UNKNOWN, UNSPEC, and addresses of another transport (UDP) or family (UNIX)
	 * are not this TCP connection's peer: the real endpoints stay. */
	if (h->command != PP_CMD_PROXY || h->transport != PP_TRANS_STREAM ||
	    (sfam != AF_INET && sfam != AF_INET6)) {
		shim_stat(SHIM_R_LOCAL, SHIM_REASON_NONE, h->version, h->len);
		pr->rewritten = false;
		return SHIM_ACCEPT_HEADER;
	}
	e = shim_fd_get(c->fd);
	if (!e)
		return reject(c, SHIM_REASON_NOMEM, NULL);
	shim_fd_set_ext(e, shim_config()->keep_tlvs ? keep_tlvs(h) : NULL);
	e->flags = SHIM_C_REWRITTEN;
	e->version = h->version;
	e->command = h->command;
	e->real_hash = shim_sa_hash(c->peer);
	to_listener_family(&e->peer, &h->src, c->peer->sa_family);
	to_listener_family(&e->local, &h->dst, c->peer->sa_family);
	pr->client = e->peer;
	pr->rewritten = true;
	atomic_store_explicit(&e->kind, SHIM_FD_CONN, memory_order_release);
	shim_stat(SHIM_R_REWRITTEN, SHIM_REASON_NONE, h->version, h->len);
	if (shim_log_on(SHIM_LOG_DEBUG)) {
		char real[SHIM_ADDRSTR_LEN], client[SHIM_ADDRSTR_LEN];
		shim_log(SHIM_LOG_DEBUG, "event=accept version=%u client=%s peer=%s port=%u", h->version,
			 shim_sa_str((const struct sockaddr *)&h->src, client),
			 shim_sa_str(c->peer, real), c->lport);
	}
	return SHIM_ACCEPT_HEADER;
}

/* The buffer for a header larger than the stack one: mmap, not malloc, since accept() may be
 * called from a signal handler that interrupted malloc(). Such headers carry TLVs and are rare. */
static uint8_t *peek_buffer(size_t n)
{
	void *b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return b == MAP_FAILED ? NULL : b;
}

/* Consumes exactly n bytes that a peek has shown are queued. MSG_TRUNC has TCP discard them
 * without copying (a quarter of the call's cost); a kernel that ignores the flag copies them
 * into buf, which holds the same bytes already. A socket that refuses it (MPTCP answers
 * EOPNOTSUPP) is read the plain way. 0, or a negative errno (-ECONNRESET: the bytes went). */
static int consume(int fd, uint8_t *buf, size_t n)
{
	int trunc = MSG_TRUNC;
	while (n > 0) {
		ssize_t r = real_recv(fd, buf, n, MSG_DONTWAIT | trunc);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && trunc && (errno == EOPNOTSUPP || errno == EINVAL)) {
			trunc = 0;
			continue;
		}
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ECONNRESET;
		n -= (size_t)r;
	}
	return 0;
}

enum shim_verdict shim_header_step(const struct shim_conn_ref *c, struct shim_progress *pr, bool eof)
{
	uint8_t small[PEEK_SMALL], *buf = small;
	size_t cap = sizeof(small);
	enum shim_verdict v;
	struct pp_header h;

	for (;;) {
		ssize_t n = real_recv(c->fd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				v = reject(c, SHIM_REASON_ERROR, strerror(errno));
				goto out;
			}
			n = 0;
		} else if (n == 0) {
			v = shim_header_none(c, pr->seen, SHIM_REASON_EOF);
			goto out;
		}
		pr->seen = (size_t)n;
		if (n == 0)
			break;
		r = pp_parse(buf, (size_t)n, shim_config()->versions, &h);
		if (r > 0) {
			if (consume(c->fd, buf, (size_t)r) < 0) {
				v = reject(c, SHIM_REASON_ERROR, "consume");
				goto out;
			}
			v = record(c, &h, pr);
			goto out;
		}
		if (r == PP_NOT_PROXY) {
			v = shim_header_none(c, 0, SHIM_REASON_MISSING);
			goto out;
		}
		if (r == PP_INVALID) {
			v = reject(c, h.error == PP_E_VERSION_NOT_ALLOWED ? SHIM_REASON_VERSION : SHIM_REASON_INVALID,
				   pp_strerror(h.error));
			goto out;
		}
		/* PP_INCOMPLETE: the parser says how many more bytes to wait for before its answer
		 * can change (1, or for a v2 header past its fixed part the rest of its announced
		 * size). Wait for them, and peek the header into a buffer of that size when it is
		 * larger than the stack one. */
		pr->want = (size_t)n + h.need;
		if (pr->want > cap) {
			if (pr->want > cap && (size_t)n == cap) {
				uint8_t *big = peek_buffer(pr->want);
				if (!big) {
					v = reject(c, SHIM_REASON_NOMEM, NULL);
					goto out;
				}
				if (buf != small)
					munmap(buf, cap);
				buf = big;
				cap = pr->want;
				continue;
			}
		}
		break;
	}
	v = eof ? shim_header_none(c, pr->seen, SHIM_REASON_EOF) : SHIM_INCOMPLETE;
out:
	if (buf != small)
		munmap(buf, cap);
	return v;
}

int shim_header_lowat(int fd, const struct shim_progress *pr)
{
	/* The kernel caps SO_RCVLOWAT at half the receive buffer: headers above that wake
	 * early and are simply peeked again. */
	int lowat = (int)(pr->want > pr->seen + 1 ? pr->want : pr->seen + 1);
	return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0 ? 0 : -errno;
}

void shim_header_lowat_reset(int fd)
{
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

uint64_t shim_now_ms(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

enum shim_verdict shim_take_header(const struct shim_conn_ref *c, struct shim_progress *pr, uint64_t deadline)
{
	bool first = true;
	bool eof = false, lowat = false;
	enum shim_verdict v;

	for (;;) {
		size_t before = pr->seen;
		v = shim_header_step(c, pr, eof);
		if (v != SHIM_INCOMPLETE)
			break;
		if (first) {
			first = false;
		} else if (pr->seen == before) {
			/* Woken without progress (the capped SO_RCVLOWAT above): do not spin. */
			struct timespec pause = {0, 1000000};
			nanosleep(&pause, NULL);
		}
		lowat |= shim_header_lowat(c->fd, pr) == 0;
		for (;;) {
			struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
			uint64_t now = shim_now_ms();
			int r;
			if (now >= deadline) {
				v = shim_header_none(c, pr->seen, SHIM_REASON_TIMEOUT);
				goto out;
			}
			r = real_poll(&p, 1, (int)(deadline - now));
			if (r < 0 && errno == EINTR)
				continue;
			if (r > 0 && (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)))
				eof = true; /* look once more: the last bytes may complete the header */
			break;
		}
	}
out:
	if (lowat)
		shim_header_lowat_reset(c->fd);
	return v;
}

uint64_t shim_rcvtimeo_deadline(int fd)
{
	struct timeval tv = {0, 0};
	socklen_t tl = sizeof(tv);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) < 0 || (tv.tv_sec <= 0 && tv.tv_usec <= 0))
		return 0;
	return shim_now_ms() + (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
}

/* ---- untrusted peers ---- */

/* True when the bytes that have arrived on fd begin a PROXY header, v1 or v2, as far as they
 * go: a balancer may split its header, and a piece of one ("PROX") is refused at once rather
 * than waited for. Never waits: nothing queued yet (no TCP_DEFER_ACCEPT, lazy mode), EOF or an
 * error is "no", and the program finds out for itself. */
static bool starts_header(int fd)
{
	static const char v1[] = "PROXY ";
	uint8_t buf[PP2_SIGNATURE_LEN];
	ssize_t n;

	do
		n = real_recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return false;
	return memcmp(buf, v1, (size_t)n < sizeof(v1) - 1 ? (size_t)n : sizeof(v1) - 1) == 0 ||
	       memcmp(buf, PP2_SIGNATURE, (size_t)n) == 0;
}

bool shim_untrusted_closes(const struct shim_config *c, int fd, const struct sockaddr *peer, uint16_t lport)
{
	char addr[SHIM_ADDRSTR_LEN];

	if (SHIM_UNLIKELY(c->untrusted_reject) && starts_header(fd)) {
		shim_stat(SHIM_R_REJECTED, SHIM_REASON_UNTRUSTED, 0, 0);
		if (shim_log_on(SHIM_LOG_WARN))
			shim_log(SHIM_LOG_WARN, "event=reject reason=untrusted peer=%s port=%u",
				 shim_sa_str(peer, addr), lport);
		return true;
	}
	shim_stat(SHIM_R_UNTRUSTED, SHIM_REASON_NONE, 0, 0);
	/* The balancer's real address when PROXYSHIM_TRUSTED names another: the line to look for. */
	if (SHIM_UNLIKELY(shim_log_on(SHIM_LOG_DEBUG)))
		shim_log(SHIM_LOG_DEBUG, "event=untrusted peer=%s port=%u", shim_sa_str(peer, addr), lport);
	return false;
}
