/* lazygrace: a server that speaks first and takes the client's address from accept(), as Exim
 * and Dovecot do, timing every accept() call, for PROXYSHIM_LAZY_GRACE_MS (lazy mode).
 *
 * Usage: lazygrace [--nonblock] [--listen HOST:PORT | --listen-fd N]
 *   default: blocking accept(); each connection is served to its end before the next accept()
 *   --nonblock: a non-blocking listener in a level-triggered epoll loop: accept4(SOCK_NONBLOCK)
 *               until EAGAIN at each wake; connections served by the same loop
 *   --listen-fd N: a listening socket inherited already listening (as Dovecot's login processes
 *               and socket-activated servers get theirs); prints "listening PORT" as well
 *
 * Each connection gets the banner "220 lazygrace\r\n" right after accept(), then is read to EOF.
 * Output (stdout, one write per line), times in CLOCK_MONOTONIC milliseconds (Python's
 * time.monotonic() * 1000):
 *   "listening PORT"
 *   {"ev":"accept","n":1,"addr":{..what accept() wrote..},"t":T,"took_ms":D}
 *   {"ev":"eagain","t":T,"took_ms":D}                 (--nonblock: an accept4() that found nothing)
 *   {"ev":"wake","t":T}                               (--nonblock: epoll reported the listener)
 *   {"ev":"conn","n":1,"peer":{..getpeername() after EOF..},"bytes":N,"hex":"..","error":..}
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>

#include "common.h"

#define BANNER "220 lazygrace\r\n"
#define MAXC 64

struct conn {
	int fd;
	unsigned n;
	unsigned char *buf;
	size_t len, cap;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Accepts one connection: its fd, or -1 with errno. Prints the accept or eagain line. */
static int take(int lfd, bool nonblock, unsigned n)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct out o = {0};
	double t0 = now_ms(), t1;
	int fd, e;

	memset(&ss, 0, sizeof(ss));
	fd = nonblock ? accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC)
		      : accept(lfd, (struct sockaddr *)&ss, &sl);
	e = errno;
	t1 = now_ms();
	if (fd >= 0) {
		out_f(&o, "{\"ev\":\"accept\",\"n\":%u,\"addr\":", n);
		out_sa(&o, (struct sockaddr *)&ss, sl);
		out_f(&o, ",\"t\":%.3f,\"took_ms\":%.3f}", t1, t1 - t0);
	} else if (e == EAGAIN || e == EWOULDBLOCK) {
		out_f(&o, "{\"ev\":\"eagain\",\"t\":%.3f,\"took_ms\":%.3f}", t1, t1 - t0);
	} else {
		out_f(&o, "{\"ev\":\"error\",\"errno\":\"%s\"}", errname(e));
	}
	out_line(&o);
	free(o.buf);
	errno = e;
	return fd;
}

/* Reads what is there: 1 at EOF or error (the conn line printed), 0 to wait for more. */
static int pump(struct conn *c)
{
	unsigned char b[65536];
	for (;;) {
		ssize_t r = read(c->fd, b, sizeof(b));
		if (r > 0) {
			if (c->len + (size_t)r > c->cap) {
				c->cap = (c->len + (size_t)r) * 2;
				c->buf = realloc(c->buf, c->cap);
				if (!c->buf)
					exit(3);
			}
			memcpy(c->buf + c->len, b, (size_t)r);
			c->len += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		struct out o = {0};
		int e = r < 0 ? errno : 0;
		out_f(&o, "{\"ev\":\"conn\",\"n\":%u,\"peer\":", c->n);
		out_name(&o, c->fd, 1);
		out_f(&o, ",\"bytes\":%zu,\"hex\":", c->len);
		out_hex(&o, c->buf, c->len);
		if (e)
			out_f(&o, ",\"error\":\"%s\"}", errname(e));
		else
			out_f(&o, ",\"error\":null}");
		out_line(&o);
		free(o.buf);
		return 1;
	}
}

static void greet(int fd)
{
	ssize_t w = send(fd, BANNER, strlen(BANNER), MSG_NOSIGNAL);
	(void)w;
}

static void finish(struct conn *c)
{
	close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static int run_blocking(int lfd)
{
	for (unsigned n = 1; n < UINT32_MAX; n++) {
		struct conn c = {0};
		c.fd = take(lfd, false, n);
		if (c.fd < 0) {
			n--;
			continue;
		}
		c.n = n;
		greet(c.fd);
		while (!pump(&c))
			;
		finish(&c);
	}
	return 0;
}

static int run_epoll(int lfd)
{
	struct conn cs[MAXC] = {0};
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	int ep = epoll_create1(EPOLL_CLOEXEC);
	unsigned n = 0;

	for (int i = 0; i < MAXC; i++)
		cs[i].fd = -1;
	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		return 1;
	for (;;) {
		struct epoll_event evs[16];
		int k = epoll_wait(ep, evs, 16, -1);
		for (int i = 0; i < k; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				struct out o = {0};
				out_f(&o, "{\"ev\":\"wake\",\"t\":%.3f}", now_ms());
				out_line(&o);
				free(o.buf);
				for (;;) {
					int fd = take(lfd, true, n + 1), slot;
					if (fd < 0)
						break;
					n++;
					for (slot = 0; slot < MAXC && cs[slot].fd >= 0; slot++)
						;
					if (slot == MAXC)
						return 3;
					cs[slot].fd = fd;
					cs[slot].n = n;
					greet(fd);
					struct epoll_event ce = {.events = EPOLLIN, .data.u64 = (uint64_t)slot};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
				}
				continue;
			}
			struct conn *c = &cs[evs[i].data.u64];
			if (c->fd >= 0 && pump(c)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				finish(c);
			}
		}
	}
}

int main(int argc, char **argv)
{
	char def[] = "127.0.0.1:0";
	char *at = def;
	const char *host;
	unsigned port;
	bool nonblock = false;
	int lfd = -1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--nonblock"))
			nonblock = true;
		else if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			at = argv[++i];
		else if (!strcmp(argv[i], "--listen-fd") && i + 1 < argc)
			lfd = atoi(argv[++i]);
		else {
			fprintf(stderr, "lazygrace: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	if (lfd >= 0) {
		struct sockaddr_in sin;
		socklen_t sl = sizeof(sin);
		if (getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0) {
			perror("lazygrace: --listen-fd");
			return 1;
		}
		printf("listening %u\n", ntohs(sin.sin_port));
		fflush(stdout);
	} else if (split_hostport(at, &host, &port) < 0 || (lfd = listen_on(host, port)) < 0) {
		perror("lazygrace: listen");
		return 1;
	}
	return nonblock ? run_epoll(lfd) : run_blocking(lfd);
}
