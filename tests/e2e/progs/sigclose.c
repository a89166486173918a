/* Signal safety under the shim: a SIGALRM handler fired thousands of times a second calls
 * dup()/dup2()/close() on the connections the main thread holds, and now and then kills the
 * listener with dup2(/dev/null, listener), while the main thread accepts (parking, kept TLVs,
 * timeouts) and closes. A client thread feeds complete v2 headers with large TLVs, headers
 * completed later, and headers that never complete.
 *
 * sigclose PORT SECONDS [nokill]: prints a progress line a second and one JSON line with its
 * counts, and exits 0 after SECONDS; a hang (a handler waiting on a lock its own thread holds,
 * or inside malloc) never returns. nokill: the listener is left alone (only connections are
 * duplicated and closed by the handler). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include "common.h"

#define SPARE 200    /* a number the handler dup2()s over; always the program's own */
#define KEEP 4       /* connections the main thread holds at once */
#define CLIENTS 64   /* client sockets held open at once */
#define STALLERS 128 /* of them, those that never finish their header: held past the timeout */
#define KILL_EVERY 40 /* the listener dies every this many ticks */

static unsigned g_port;
static int g_devnull;
static volatile sig_atomic_t g_lfd = -1;
static volatile sig_atomic_t g_conn = -1; /* a connection the handler may dup */
static volatile sig_atomic_t g_ticks, g_kills, g_dups;
static int g_kill = 1;

static void on_alarm(int sig)
{
	int saved = errno, c = g_conn, t;
	(void)sig;
	g_ticks++;
	if (c >= 0) {
		/* dup() + close(): the copy's entry comes and goes (kept TLVs with it). */
		t = dup(c);
		if (t >= 0) {
			close(t);
			g_dups++;
		}
		/* dup2() over a number of the program's, then /dev/null over it again. */
		if (dup2(c, SPARE) >= 0)
			dup2(g_devnull, SPARE);
	}
	if (g_kill && g_ticks % KILL_EVERY == 0 && g_lfd >= 0) {
		/* The listener goes (its parked connections with it) while main may be in accept(). */
		if (dup2(g_devnull, g_lfd) >= 0)
			g_kills++;
	}
	errno = saved;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int make_listener(void)
{
	struct sockaddr_in a;
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)g_port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 512) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A v2 PROXY header (TCP over IPv4) with TLVs of tlv bytes in all (0 or at least 3). */
static size_t v2_header(uint8_t *b, unsigned i, size_t tlv)
{
	static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	size_t len = 12 + tlv;
	memcpy(b, sig, 12);
	b[12] = 0x21;
	b[13] = 0x11;
	b[14] = (uint8_t)(len >> 8);
	b[15] = (uint8_t)len;
	b[16] = 198, b[17] = 51, b[18] = 100, b[19] = (uint8_t)(i % 250 + 1); /* src */
	b[20] = 127, b[21] = 0, b[22] = 0, b[23] = 1;                          /* dst */
	b[24] = (uint8_t)((10000 + i % 50000) >> 8), b[25] = (uint8_t)(10000 + i % 50000);
	b[26] = (uint8_t)(g_port >> 8), b[27] = (uint8_t)g_port;
	if (tlv >= 3) {
		b[28] = 0xE0; /* PP2_TYPE_MIN_CUSTOM */
		b[29] = (uint8_t)((tlv - 3) >> 8);
		b[30] = (uint8_t)(tlv - 3);
		memset(b + 31, 'x', tlv - 3);
	}
	return 16 + len;
}

struct client {
	int fd;
	size_t sent, len; /* a partial header: the rest goes out later */
	uint8_t hdr[4096];
};

/* Sends connections of four kinds, round robin: a whole header with TLVs larger than the
 * shim's small peek buffer, a header in two parts (parked in between), the first bytes of a
 * header and never the rest (timed out), a whole small header. */
static void *client_main(void *arg)
{
	static struct client cl[CLIENTS];
	static int stall[STALLERS];
	struct sockaddr_in a;
	(void)arg;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)g_port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int k = 0; k < CLIENTS; k++)
		cl[k].fd = -1;
	for (int k = 0; k < STALLERS; k++)
		stall[k] = -1;
	for (unsigned i = 0;; i++) {
		struct client *c = &cl[i % CLIENTS];
		struct timespec pause = {0, 200000};
		/* Complete the partial headers sent a while ago, then reuse the slot. */
		for (int k = 0; k < CLIENTS; k++) {
			struct client *p = &cl[k];
			if (p->fd >= 0 && p->sent < p->len && (i % 8) == (unsigned)k % 8) {
				ssize_t w = send(p->fd, p->hdr + p->sent, p->len - p->sent, MSG_NOSIGNAL);
				p->sent = w > 0 ? p->len : p->len; /* once only, whatever happened */
			}
		}
		if (c->fd >= 0)
			close(c->fd);
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
			if (c->fd >= 0)
				close(c->fd);
			c->fd = -1;
			nanosleep(&pause, NULL);
			continue;
		}
		switch (i % 4) {
		case 0: /* whole, TLVs of 2000 bytes: the large peek buffer, kept TLVs too large for
			 * malloc's per-thread cache (its arena lock is taken) */
			c->len = v2_header(c->hdr, i, 2000);
			c->sent = c->len;
			send(c->fd, c->hdr, c->len, MSG_NOSIGNAL);
			break;
		case 1: /* 20 bytes now, the rest later: parked */
			c->len = v2_header(c->hdr, i, 64);
			c->sent = 20;
			send(c->fd, c->hdr, c->sent, MSG_NOSIGNAL);
			break;
		case 2: { /* 10 bytes and never more: parked until the timeout */
			int *st = &stall[(i / 4) % STALLERS];
			c->len = v2_header(c->hdr, i, 0);
			send(c->fd, c->hdr, 10, MSG_NOSIGNAL);
			if (*st >= 0)
				close(*st);
			*st = c->fd; /* held for STALLERS rounds, beyond PROXYSHIM_TIMEOUT_MS */
			c->fd = -1;
			break;
		}
		default: /* whole, small TLVs */
			c->len = v2_header(c->hdr, i, 16);
			c->sent = c->len;
			send(c->fd, c->hdr, c->len, MSG_NOSIGNAL);
			break;
		}
		nanosleep(&pause, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct itimerval it = {{0, 200}, {0, 200}}; /* 5 kHz */
	sigset_t alrm, old;
	pthread_t t;
	int kept[KEEP], nk = 0, accepted = 0, relisten = 0, tlv_seen = 0;
	uint64_t start, end, next;

	if (argc < 3)
		return 2;
	g_kill = !(argc > 3 && strcmp(argv[3], "nokill") == 0);
	g_port = (unsigned)atoi(argv[1]);
	start = now_ms();
	next = start + 1000;
	end = start + (uint64_t)atoi(argv[2]) * 1000u;
	g_devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (g_devnull < 0 || dup2(g_devnull, SPARE) < 0)
		return 2;
	g_lfd = make_listener();
	if (g_lfd < 0) {
		perror("listen");
		return 2;
	}
	printf("listening %u\n", g_port);
	fflush(stdout);

	/* The client thread takes no SIGALRM: every tick lands in the main thread. */
	sigemptyset(&alrm);
	sigaddset(&alrm, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &alrm, &old);
	if (pthread_create(&t, NULL, client_main, NULL) != 0)
		return 2;
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);

	/* The application API when the shim is there: reads the kept TLVs main closes later. */
	ssize_t (*tlv)(int, unsigned, void *, size_t) = NULL;
	*(void **)&tlv = dlsym(RTLD_DEFAULT, "proxyshim_tlv");
	for (uint64_t now; (now = now_ms()) < end;) {
		struct pollfd p = {.fd = g_lfd, .events = POLLIN};
		int fd;
		if (now >= next) {
			/* Where a hang began: the last of these lines. */
			printf("progress ms=%llu accepted=%d ticks=%d\n", (unsigned long long)(now - start),
			       accepted, (int)g_ticks);
			fflush(stdout);
			next += 1000;
		}
		poll(&p, 1, 5);
		fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOTSOCK || errno == EINVAL || errno == EBADF) {
				/* The handler put /dev/null over the listener: listen again, same number. */
				int l = make_listener();
				if (l >= 0) {
					if (dup2(l, g_lfd) < 0)
						g_lfd = l;
					else
						close(l);
					relisten++;
				}
			}
			continue;
		}
		accepted++;
		if (tlv) {
			/* A buffer per connection, as servers allocate: main is often inside malloc. */
			uint8_t *v = malloc(4096);
			if (v && tlv(fd, 0xE0, v, 4096) > 0)
				tlv_seen++;
			free(v);
		}
		if (nk == KEEP) {
			/* The oldest goes; the handler must not be holding its number meanwhile. */
			g_conn = -1;
			close(kept[0]);
			memmove(kept, kept + 1, (KEEP - 1) * sizeof(kept[0]));
			nk--;
		}
		kept[nk++] = fd;
		g_conn = fd;
	}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	printf("{\"accepted\":%d,\"ticks\":%d,\"dups\":%d,\"kills\":%d,\"relisten\":%d,\"tlv\":%d}\n",
	       accepted, (int)g_ticks, (int)g_dups, (int)g_kills, relisten, tlv_seen);
	fflush(stdout);
	_exit(0);
}
