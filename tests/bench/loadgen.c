/* loadgen: the bench's client. N concurrent connections from one loopback source address, each
 * sending an optional PROXY header and a small HTTP/1.0 request, reading the reply to EOF and
 * closing, for a fixed time; one machine-readable line with connections/s and latency
 * percentiles. --bulk instead streams BYTES through one connection (scenario G), or with
 * --segment through each of several connections in turn.
 *
 * Usage: loadgen --target IP:PORT [--source IP] [--sources N] [--conns N] [--time SECS] [--count N]
 *                [--header none|v1|v2|v2tlv] [--client IP:PORT] [--half-close]
 *                [--expect STR] [--bulk BYTES [--segment SEG]] [--chunk BYTES]
 *        loadgen --bulk BYTES --segment SEG --target IP:PORT [--header H] --target IP:PORT
 *                [--header H] ... [--source IP] [--client IP:PORT] [--chunk BYTES]
 *   --source IP     the local address every connection binds to (default 127.0.0.1)
 *   --sources N     use N consecutive addresses from --source, in turn (default 1): tens of
 *                   thousands of TIME_WAIT sockets a second on one address exhaust its
 *                   ephemeral ports, and connect() then burns CPU scanning for a free one
 *   --conns N       connections kept open at once (default 32)
 *   --time SECS     how long to run (default 2); --count N: stop after N connections instead
 *   --header H      none (default), v1, v2, or v2tlv (v2 with 3 TLVs and a CRC32C TLV); after
 *                   a --target it is that target's, before any it is every target's default
 *   --client IP:PORT the client the header announces (default 203.0.113.7:4711)
 *   --half-close    shutdown(SHUT_WR) after the request (for servers that answer at EOF)
 *   --expect STR    a reply must contain STR in its first 512 bytes, else it counts as an error
 *   --bulk BYTES    one connection: header, then BYTES of payload, half-close, wait for EOF
 *   --segment SEG   with --bulk, and --target given up to 16 times: one connection to each
 *                   target, all open at once, fed in turn SEG bytes at a time (BYTES a multiple
 *                   of SEG); after each segment the receiver's 1-byte ack (bulksink --ack SEG)
 *                   is awaited, so only one connection is ever busy, and the order of the
 *                   targets rotates by one every segment. Configurations compared this way see
 *                   the same machine within a fraction of a second of each other, which
 *                   separate runs one after the other do not.
 *
 * Output, one line on stdout:
 *   loadgen conns=N errors=N secs=S cps=X p50_us=X p99_us=X p999_us=X max_us=X cpu_us=X
 *   (cpu_us: the load generator's own CPU time per connection: near 1e6 / cps when it is
 *   the bottleneck)
 *   loadgen bulk bytes=N secs=S gib_s=X
 * or with --segment one line per target, in the order given:
 *   loadgen bulk target=IP:PORT header=H bytes=N secs=S gib_s=X segs=N seg_ms=X,X,...
 *   (secs: the sum of its segments' times, each from the segment's first send to its ack;
 *   seg_ms: each segment's time, in order, for ratios segment by segment)
 * Latency: from socket() to the reply's EOF, kept in a log-linear histogram (1/64 precision). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "proxyshim_proto.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define REQUEST "GET / HTTP/1.0\r\nHost: bench\r\nUser-Agent: proxyshim-loadgen\r\n\r\n"
#define KEEP 512

struct slot {
	int fd;
	int sending; /* waiting for the connect to finish, then sends */
	uint64_t start_ns;
	size_t got;
	char head[KEEP + 1];
};

#define MAX_TARGETS 16

/* A --target and its own header (bulk with --segment); the connection scenarios use the first. */
struct target {
	struct sockaddr_in addr;
	const char *header;
	char name[32];
	uint8_t msg[1024];
	size_t msg_len;
	int fd;
	uint64_t *seg_ns;
};

static struct {
	struct sockaddr_in target, source, client;
	struct target targets[MAX_TARGETS];
	int ntargets;
	unsigned sources, next_source;
	int conns;
	double secs;
	uint64_t count;
	int half_close;
	const char *expect;
	unsigned long long bulk, segment;
	size_t chunk;
	const uint8_t *msg; /* the first target's: the connection scenarios send it */
	size_t msg_len;
} opt;

/* ---- latency histogram: 64 linear sub-buckets per power of two ---- */
#define SUB_BITS 6
#define SUB (1u << SUB_BITS)
#define HBUCKETS (64 * SUB)
static uint64_t hist[HBUCKETS];
static uint64_t lat_max;

static unsigned bucket_of(uint64_t v)
{
	if (v < SUB)
		return (unsigned)v;
	unsigned shift = 63u - (unsigned)__builtin_clzll(v) - SUB_BITS; /* v >> shift: [SUB, 2 SUB) */
	return ((shift + 1) << SUB_BITS) + (unsigned)((v >> shift) & (SUB - 1));
}

/* The middle of a bucket's range (the inverse of bucket_of). */
static double bucket_value(unsigned b)
{
	if (b < SUB)
		return b;
	unsigned shift = (b >> SUB_BITS) - 1, low = b & (SUB - 1);
	uint64_t base = ((uint64_t)(SUB + low)) << shift;
	return (double)base + (double)((uint64_t)1 << shift) / 2.0;
}

static void record(uint64_t ns)
{
	hist[bucket_of(ns)]++;
	if (ns > lat_max)
		lat_max = ns;
}

static double percentile_us(uint64_t total, double q)
{
	uint64_t want = (uint64_t)((double)total * q), seen = 0;
	if (want >= total)
		want = total - 1;
	for (unsigned b = 0; b < HBUCKETS; b++) {
		seen += hist[b];
		if (seen > want)
			return bucket_value(b) / 1000.0;
	}
	return (double)lat_max / 1000.0;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: loadgen --target IP:PORT [--source IP] [--sources N] [--conns N] [--time SECS] "
			"[--count N] [--header none|v1|v2|v2tlv] [--client IP:PORT] [--half-close] "
			"[--expect STR] [--bulk BYTES [--segment SEG]] [--chunk BYTES]\n"
			"       loadgen --bulk BYTES --segment SEG --target IP:PORT [--header H] "
			"--target IP:PORT [--header H] ... [--source IP] [--client IP:PORT] [--chunk BYTES]\n");
	exit(2);
}

static int parse_ipport(const char *s, struct sockaddr_in *out, int need_port)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	size_t n = colon ? (size_t)(colon - s) : strlen(s);
	if (n >= sizeof(host) || (need_port && !colon))
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		return -1;
	if (colon) {
		unsigned long p = 0;
		for (const char *c = colon + 1; *c; c++) {
			if (*c < '0' || *c > '9' || (p = p * 10 + (unsigned long)(*c - '0')) > 65535)
				return -1;
		}
		out->sin_port = htons((uint16_t)p);
	}
	return 0;
}

static unsigned long long number(const char *s)
{
	return bench_number(s, usage);
}

/* The header (if any) for a connection to dst, and the request unless it is a bulk run, in
 * one buffer: sent in one write, as a proxy's first segment would be. Returns its length. */
static size_t build_message(const char *kind, const struct sockaddr_in *dst, uint8_t *msg, size_t cap)
{
	static const uint8_t authority[] = "bench.example.com";
	static const uint8_t unique_id[] = "0123456789abcdef0123456789abcdef";
	static const uint8_t vpce[] = "\x01vpce-0123456789abcdef0";
	int n = 0;

	if (!strcmp(kind, "v1")) {
		n = pp_build_v1(msg, cap, (struct sockaddr *)&opt.client, (const struct sockaddr *)dst);
	} else if (!strcmp(kind, "v2")) {
		n = pp_build_v2(msg, cap, PP_CMD_PROXY, (struct sockaddr *)&opt.client,
				(const struct sockaddr *)dst, NULL, 0, 0);
	} else if (!strcmp(kind, "v2tlv")) {
		/* What an AWS NLB or HAProxy sends with TLVs on: authority, unique id, a VPC endpoint. */
		struct pp_tlv t[3] = {
			{PP2_TYPE_AUTHORITY, (uint16_t)(sizeof(authority) - 1), authority},
			{PP2_TYPE_UNIQUE_ID, (uint16_t)(sizeof(unique_id) - 1), unique_id},
			{PP2_TYPE_AWS, (uint16_t)(sizeof(vpce) - 1), vpce},
		};
		n = pp_build_v2(msg, cap, PP_CMD_PROXY, (struct sockaddr *)&opt.client,
				(const struct sockaddr *)dst, t, 3, PP_BUILD_CRC32C);
	} else if (strcmp(kind, "none") != 0) {
		usage();
	}
	if (n < 0) {
		fprintf(stderr, "loadgen: building the %s header failed: %d\n", kind, n);
		exit(1);
	}
	size_t len = (size_t)n;
	if (!opt.bulk) {
		memcpy(msg + len, REQUEST, sizeof(REQUEST) - 1);
		len += sizeof(REQUEST) - 1;
	}
	return len;
}

static int new_socket(int flags)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
	if (fd < 0)
		return -1;
	/* The port is chosen at connect(), per destination: TIME_WAIT entries on loopback are
	 * reused (tcp_tw_reuse) instead of running out of ports. */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	struct sockaddr_in src = opt.source;
	src.sin_addr.s_addr = htonl(ntohl(opt.source.sin_addr.s_addr) + opt.next_source);
	if (++opt.next_source >= opt.sources)
		opt.next_source = 0;
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- connection loop ---- */
static int ep;
static uint64_t done, errors, started;

static void slot_open(struct slot *s)
{
	for (;;) {
		s->start_ns = now_ns();
		s->got = 0;
		s->sending = 1;
		s->fd = new_socket(SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s->fd < 0)
			die("socket/bind");
		started++;
		if (connect(s->fd, (struct sockaddr *)&opt.target, sizeof(opt.target)) < 0 &&
		    errno != EINPROGRESS) {
			errors++;
			close(s->fd);
			continue;
		}
		/* On loopback the handshake is usually over by now: send at once, and wait for
		 * writability only when it is not. */
		ssize_t w = send(s->fd, opt.msg, opt.msg_len, MSG_NOSIGNAL);
		if (w == (ssize_t)opt.msg_len) {
			if (opt.half_close)
				shutdown(s->fd, SHUT_WR);
			s->sending = 0;
		} else if (w >= 0 || (errno != EAGAIN && errno != ENOTCONN)) {
			errors++;
			close(s->fd);
			continue;
		}
		struct epoll_event ev = {.events = s->sending ? EPOLLOUT : EPOLLIN, .data.ptr = s};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0)
			die("epoll_ctl");
		return;
	}
}

/* Closes the slot's connection; ok: the reply came to its EOF. The close resets the
 * connection (SO_LINGER 0) when the server closed first: the server is done with it, and no
 * TIME_WAIT is left on either side. After a half-close the client's side is in TIME_WAIT
 * already; --sources spreads those over several addresses. */
static void slot_finish(struct slot *s, int ok)
{
	struct linger lg = {1, 0};
	setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(s->fd);
	s->fd = -1;
	if (ok && opt.expect) {
		s->head[s->got < KEEP ? s->got : KEEP] = '\0';
		ok = strstr(s->head, opt.expect) != NULL;
	}
	if (ok && s->got > 0) {
		record(now_ns() - s->start_ns);
		done++;
	} else {
		errors++;
	}
}

static void slot_event(struct slot *s, uint32_t events)
{
	if (s->sending) {
		ssize_t w = send(s->fd, opt.msg, opt.msg_len, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == ENOTCONN) && !(events & (EPOLLERR | EPOLLHUP)))
			return;
		if (w != (ssize_t)opt.msg_len) {
			slot_finish(s, 0);
			return;
		}
		if (opt.half_close)
			shutdown(s->fd, SHUT_WR);
		s->sending = 0;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
		if (epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev) < 0)
			die("epoll_ctl");
		return;
	}
	for (;;) {
		char buf[16384];
		ssize_t r = recv(s->fd, buf, sizeof(buf), 0);
		if (r > 0) {
			if (s->got < KEEP)
				memcpy(s->head + s->got, buf, (size_t)r < KEEP - s->got ? (size_t)r : KEEP - s->got);
			s->got += (size_t)r;
			continue;
		}
		if (r == 0) {
			slot_finish(s, 1);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			slot_finish(s, 0);
		return;
	}
}

static void run_conns(void)
{
	struct slot *slots = calloc((size_t)opt.conns, sizeof(*slots));
	struct epoll_event evs[256];
	uint64_t t0, end, t1;
	int open = 0;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!slots || ep < 0)
		die("setup");
	t0 = now_ns();
	end = t0 + (uint64_t)(opt.secs * 1e9);
	for (int i = 0; i < opt.conns; i++) {
		slot_open(&slots[i]);
		open++;
	}
	while (open > 0) {
		int n = epoll_wait(ep, evs, 256, 1000);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		uint64_t now = now_ns();
		int stop = now >= end || (opt.count && started >= opt.count);
		for (int i = 0; i < n; i++) {
			struct slot *s = evs[i].data.ptr;
			slot_event(s, evs[i].events);
			if (s->fd < 0) {
				if (stop) {
					open--;
				} else {
					slot_open(s);
					stop = opt.count && started >= opt.count;
				}
			}
		}
		if (n == 0 && now >= end + 10000000000ull) {
			fprintf(stderr, "loadgen: %d connections got no answer for 10 s\n", open);
			errors += (uint64_t)open;
			break;
		}
	}
	t1 = now_ns();
	/* Rates are over the time the full load was applied: until the deadline, or until the
	 * last connection finished in --count mode. */
	double secs = (double)((opt.count ? t1 : (t1 < end ? t1 : end)) - t0) / 1e9;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
		     (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
	printf("loadgen conns=%llu errors=%llu secs=%.3f cps=%.1f p50_us=%.1f p99_us=%.1f "
	       "p999_us=%.1f max_us=%.1f cpu_us=%.1f\n",
	       (unsigned long long)done, (unsigned long long)errors, secs, (double)done / secs,
	       done ? percentile_us(done, 0.50) : 0.0, done ? percentile_us(done, 0.99) : 0.0,
	       done ? percentile_us(done, 0.999) : 0.0, (double)lat_max / 1000.0,
	       done ? cpu / (double)done : 0.0);
}

/* ---- bulk: one connection streaming opt.bulk bytes ---- */
/* All len bytes of buf (sent chunk bytes at a time, over and over), or exit. */
static void send_all(int fd, const char *buf, unsigned long long len, size_t chunk, const char *who)
{
	while (len > 0) {
		size_t n = len < chunk ? (size_t)len : chunk;
		ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "loadgen: send to %s: %s\n", who, strerror(errno));
			exit(1);
		}
		len -= (unsigned long long)w;
	}
}

static void run_bulk(void)
{
	size_t chunk = opt.chunk ? opt.chunk : 256 * 1024;
	char *buf = malloc(chunk);
	uint64_t t0;
	int fd;

	if (!buf)
		die("malloc");
	memset(buf, 'x', chunk);
	fd = new_socket(SOCK_CLOEXEC);
	if (fd < 0)
		die("socket/bind");
	t0 = now_ns();
	if (connect(fd, (struct sockaddr *)&opt.target, sizeof(opt.target)) < 0)
		die("connect");
	if (opt.msg_len && send(fd, opt.msg, opt.msg_len, MSG_NOSIGNAL) != (ssize_t)opt.msg_len)
		die("send header");
	send_all(fd, buf, opt.bulk, chunk, "the target");
	shutdown(fd, SHUT_WR);
	/* The receiver closes once it has read everything: its EOF ends the measurement. */
	for (;;) {
		ssize_t r = recv(fd, buf, chunk, 0);
		if (r > 0)
			continue;
		if (r < 0 && errno == EINTR)
			continue;
		break;
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	close(fd);
	printf("loadgen bulk bytes=%llu secs=%.3f gib_s=%.3f\n", opt.bulk, secs,
	       (double)opt.bulk / secs / (1024.0 * 1024.0 * 1024.0));
}

/* ---- bulk in segments: several connections fed in turn (see --segment) ---- */
static void run_segments(void)
{
	size_t chunk = opt.chunk ? opt.chunk : 256 * 1024;
	unsigned long long nseg = opt.bulk / opt.segment;
	char *buf = malloc(chunk);
	int one = 1, n = opt.ntargets;

	if (!buf)
		die("malloc");
	memset(buf, 'x', chunk);
	for (int t = 0; t < n; t++) {
		struct target *tg = &opt.targets[t];
		tg->seg_ns = calloc((size_t)nseg, sizeof(*tg->seg_ns));
		tg->fd = new_socket(SOCK_CLOEXEC);
		if (!tg->seg_ns || tg->fd < 0)
			die("socket/bind");
		if (connect(tg->fd, (struct sockaddr *)&tg->addr, sizeof(tg->addr)) < 0)
			die(tg->name);
		/* A segment's sub-MSS tail must not wait for an ACK the receiver may delay. */
		setsockopt(tg->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	/* The headers go out once every receiver has had time to return from accept(): a lazy-mode
	 * shim then finds no header there and leaves it to the first read, the path this measures
	 * (bulksink --peek reports which one took it). */
	usleep(200000);
	for (int t = 0; t < n; t++) {
		struct target *tg = &opt.targets[t];
		send_all(tg->fd, (const char *)tg->msg, tg->msg_len, chunk, tg->name);
	}
	for (unsigned long long i = 0; i < nseg; i++) {
		for (int j = 0; j < n; j++) {
			struct target *tg = &opt.targets[(i + (unsigned long long)j) % (unsigned long long)n];
			char a;
			ssize_t r;
			uint64_t t0 = now_ns();
			send_all(tg->fd, buf, opt.segment, chunk, tg->name);
			while ((r = recv(tg->fd, &a, 1, 0)) < 0 && errno == EINTR)
				;
			if (r != 1) {
				fprintf(stderr, "loadgen: %s: no ack after segment %llu (%s)\n", tg->name, i,
					r == 0 ? "EOF" : strerror(errno));
				exit(1);
			}
			tg->seg_ns[i] = now_ns() - t0;
		}
	}
	for (int t = 0; t < n; t++)
		shutdown(opt.targets[t].fd, SHUT_WR);
	/* Each receiver closes once it has read everything; nothing but the acks may come back. */
	for (int t = 0; t < n; t++) {
		struct target *tg = &opt.targets[t];
		ssize_t r;
		while ((r = recv(tg->fd, buf, chunk, 0)) != 0) {
			if (r < 0 && errno == EINTR)
				continue;
			fprintf(stderr, "loadgen: %s: %s before EOF\n", tg->name,
				r > 0 ? "unexpected bytes" : strerror(errno));
			exit(1);
		}
		close(tg->fd);
	}
	for (int t = 0; t < n; t++) {
		struct target *tg = &opt.targets[t];
		uint64_t sum = 0;
		for (unsigned long long i = 0; i < nseg; i++)
			sum += tg->seg_ns[i];
		double secs = (double)sum / 1e9;
		printf("loadgen bulk target=%s header=%s bytes=%llu secs=%.4f gib_s=%.4f segs=%llu seg_ms=", tg->name,
		       tg->header, opt.bulk, secs, (double)opt.bulk / secs / (1024.0 * 1024.0 * 1024.0), nseg);
		for (unsigned long long i = 0; i < nseg; i++)
			printf("%s%.3f", i ? "," : "", (double)tg->seg_ns[i] / 1e6);
		printf("\n");
	}
}

int main(int argc, char **argv)
{
	const char *header = "none"; /* for the targets not given one of their own */
	opt.conns = 32;
	opt.secs = 2.0;
	opt.sources = 1;
	parse_ipport("127.0.0.1:0", &opt.source, 0);
	parse_ipport("203.0.113.7:4711", &opt.client, 1);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) usage(); i++; } while (0)
		if (!strcmp(a, "--target")) {
			NEEDV();
			if (opt.ntargets == MAX_TARGETS)
				usage();
			struct target *tg = &opt.targets[opt.ntargets++];
			if (parse_ipport(v, &tg->addr, 1) < 0)
				usage();
			snprintf(tg->name, sizeof(tg->name), "%s", v);
		} else if (!strcmp(a, "--source")) {
			NEEDV();
			if (parse_ipport(v, &opt.source, 0) < 0)
				usage();
			opt.source.sin_port = 0;
		} else if (!strcmp(a, "--sources")) {
			NEEDV();
			opt.sources = (unsigned)number(v);
		} else if (!strcmp(a, "--client")) {
			NEEDV();
			if (parse_ipport(v, &opt.client, 1) < 0)
				usage();
		} else if (!strcmp(a, "--conns")) {
			NEEDV();
			opt.conns = (int)number(v);
		} else if (!strcmp(a, "--time")) {
			NEEDV();
			opt.secs = atof(v);
		} else if (!strcmp(a, "--count")) {
			NEEDV();
			opt.count = number(v);
		} else if (!strcmp(a, "--header")) {
			NEEDV();
			if (opt.ntargets)
				opt.targets[opt.ntargets - 1].header = v;
			else
				header = v;
		} else if (!strcmp(a, "--half-close")) {
			opt.half_close = 1;
		} else if (!strcmp(a, "--expect")) {
			NEEDV();
			opt.expect = v;
		} else if (!strcmp(a, "--bulk")) {
			NEEDV();
			opt.bulk = number(v);
		} else if (!strcmp(a, "--segment")) {
			NEEDV();
			opt.segment = number(v);
		} else if (!strcmp(a, "--chunk")) {
			NEEDV();
			opt.chunk = (size_t)number(v);
		} else {
			usage();
		}
	}
	if (opt.ntargets < 1 || opt.conns < 1 || opt.sources < 1 || (opt.secs <= 0 && !opt.count))
		usage();
	/* Several targets only take turns in segments; a segment needs its ack at its end. */
	if (opt.segment ? !opt.bulk || opt.bulk % opt.segment : opt.ntargets > 1)
		usage();
	if (opt.count)
		opt.secs = 1e6;
	if (opt.count && (uint64_t)opt.conns > opt.count)
		opt.conns = (int)opt.count;
	for (int t = 0; t < opt.ntargets; t++) {
		struct target *tg = &opt.targets[t];
		if (!tg->header)
			tg->header = header;
		tg->msg_len = build_message(tg->header, &tg->addr, tg->msg, sizeof(tg->msg));
	}
	opt.target = opt.targets[0].addr;
	opt.msg = opt.targets[0].msg;
	opt.msg_len = opt.targets[0].msg_len;
	if (opt.segment)
		run_segments();
	else if (opt.bulk)
		run_bulk();
	else
		run_conns();
	return errors ? 3 : 0;
}
