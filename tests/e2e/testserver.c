/* testserver: a small TCP server for proxyshim's end-to-end tests. It accepts the way real
 * servers do and prints, for every connection, what accept() and getpeername() told it.
 *
 * Usage: testserver [options]
 *   --listen HOST:PORT  address to listen on (default 127.0.0.1:0). IPv6 as [::1]:P; [::]:P is a
 *                       dual-stack listener (IPV6_V6ONLY=0) unless --v6only is given.
 *   --v6only            set IPV6_V6ONLY=1 on an AF_INET6 listener
 *   --mode M            blocking (default): one thread, blocking accept(), one connection at a time
 *                       epoll: non-blocking listener, accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) until
 *                              EAGAIN, connections served by one epoll loop
 *                       threads: --threads N threads all in blocking accept() on one listener
 *                       fork: blocking accept(), each connection served by a forked child
 *                       poll: non-blocking listener, poll(), then accept4(SOCK_CLOEXEC) until
 *                             EAGAIN, each connection served blocking
 *                       select: like poll, with select()
 *   --et                epoll mode: the listener is edge-triggered (EPOLLET)
 *   --oneshot           epoll mode: EPOLLONESHOT on the listener, re-armed (EPOLL_CTL_MOD) after
 *                       each accept loop
 *   --exclusive         epoll mode: EPOLLEXCLUSIVE on the listener
 *   --epoll-threads N   epoll mode: N threads, each with its own epoll instance on the listener
 *   --threads N         threads for --mode threads (default 8)
 *   --accept4           blocking/threads/fork modes: accept4(..., SOCK_CLOEXEC) instead of accept()
 *   --null-addr         accept(fd, NULL, NULL)
 *   --addrlen N         pass *addrlen = N to accept (the buffer is a sockaddr_storage prefilled
 *                       with 0xAA; "accept_raw" shows its first 32 bytes, so truncation is visible)
 *   --max-conns N       exit 0 after N connections have been reported
 *   --dup HOW           after accept: new = dup|dup2|dup3|fcntl|fcntl_cloexec of the fd, close the
 *                       original, serve the copy (dup2/dup3 target: fd + 1000)
 *   --close-with HOW    close (default) or close_range, for each finished connection
 *   --probe HOST:PORT   after closing a connection, connect a fresh socket to HOST:PORT (it
 *                       usually reuses the fd number) and report its getpeername() as "probe"
 *   --probe-via HOW     dup2|dup3: instead of closing the connection, move the probe socket onto
 *                       its still-open fd with dup2()/dup3() (closing it that way)
 *   --signals US        SIGALRM every US microseconds, handler without SA_RESTART (EINTR storm)
 *   --high-fd N         raise RLIMIT_NOFILE and move the listener to fd N with dup2()
 *   --fill-fds N        open /dev/null copies until the lowest free fd is >= N, so accepted
 *                       connections get fds >= N
 *   --read-with HOW     blocking modes: read (default), recv, recvfrom, recvmsg, readv, fread
 *                       (stdio on a dup of the fd), syscall (raw SYS_read), splice (via a pipe)
 *   --greet             write "peer=ADDR PORT\n" (getpeername()) to the client before echoing
 *   --no-echo           do not echo the bytes back
 *   --io-timeout MS     SO_RCVTIMEO/SO_SNDTIMEO on accepted sockets (default 10000)
 *   --accept-timeout MS SO_RCVTIMEO on the listener: a blocking accept() gives up with EAGAIN
 *   --user UID          after listen(), drop to UID (group UID, no supplementary groups), as a
 *                       daemon started as root does
 *
 * Output (stdout, one write per line): "listening PORT defer_accept=N" once ready (N: the
 * listener's TCP_DEFER_ACCEPT as getsockopt() reads it after listen()), then one JSON
 * object per connection, after the client's EOF:
 *   {"n":1,"fd":5,"accept":{"family":"AF_INET","addr":"10.1.2.3","port":4000},"addrlen":16,
 *    "accept_raw":"...","peer":{...getpeername()...},"local":{...getsockname()...},
 *    "bytes":12,"sha256":"...","hex":"first 256 bytes in hex","dup_fd":..,"acc_fd":..,"probe":{...}}
 * "fd" is the fd served (after --dup), "acc_fd" the one accept() returned.
 * "accept" is null with --null-addr. With --addrlen, getpeername() gets the same short length:
 * "peer_len" is what it reported and "peer_raw" the first 32 bytes of its buffer. "nonblock" and
 * "cloexec" are the accepted fd's flags; "errno_kept"/"gp_errno_kept" say that a successful
 * accept()/getpeername() left errno as it was. Errors go to stderr as "testserver: error ..." and never
 * stop the server. The bytes are echoed back as they arrive (unless --no-echo). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- SHA-256 (FIPS 180-4), small and self-contained ---- */
struct sha256 {
	uint32_t h[8];
	uint64_t total;
	uint8_t buf[64];
	size_t used;
};

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
	e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
			      sha_k[i] + w[i];
		uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
	s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(s->h, iv, sizeof iv);
	s->total = 0;
	s->used = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t n)
{
	s->total += n;
	while (n > 0) {
		size_t take = 64 - s->used;
		if (take > n)
			take = n;
		memcpy(s->buf + s->used, p, take);
		s->used += take;
		p += take;
		n -= take;
		if (s->used == 64) {
			sha256_block(s, s->buf);
			s->used = 0;
		}
	}
}

static void sha256_hex(struct sha256 *s, char out[65])
{
	uint64_t bits = s->total * 8;
	uint8_t pad = 0x80, zero = 0, len[8];
	sha256_update(s, &pad, 1);
	while (s->used != 56)
		sha256_update(s, &zero, 1);
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(s, len, 8);
	for (int i = 0; i < 8; i++)
		snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- options ---- */
enum mode { MODE_BLOCKING, MODE_EPOLL, MODE_THREADS, MODE_FORK, MODE_POLL, MODE_SELECT };

static struct {
	const char *listen;
	int v6only;
	enum mode mode;
	int threads;
	int use_accept4;
	int null_addr;
	int addrlen; /* -1: sizeof(struct sockaddr_storage) */
	long max_conns;
	const char *dup;
	int close_range;
	const char *probe;
	const char *probe_via; /* NULL: close then connect; "dup2"/"dup3": over the live fd */
	int et; /* epoll mode: the listener edge-triggered */
	int oneshot, exclusive, epoll_threads;
	const char *read_with;
	int lfd;
	int signals_us;
	int high_fd;
	int fill_fds;
	int greet;
	int echo;
	int io_timeout_ms;
	int user;
	int accept_timeout_ms;
} opt = {
	.listen = "127.0.0.1:0",
	.mode = MODE_BLOCKING,
	.threads = 8,
	.addrlen = -1,
	.epoll_threads = 1,
	.lfd = -1,
	.high_fd = -1,
	.fill_fds = -1,
	.echo = 1,
	.user = -1,
	.io_timeout_ms = 10000,
};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t alarms;
static long reported;

static void errlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errlog(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof line, "testserver: error ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	ssize_t w = write(2, line, (size_t)n);
	(void)w;
}

/* Writes a whole buffer, retrying on EINTR and short writes. */
static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One line to stdout in a single write, so threads and forked children never interleave. */
static void emit(const char *line, size_t n)
{
	pthread_mutex_lock(&out_lock);
	if (write_all(1, line, n) < 0)
		errlog("stdout: %s", strerror(errno));
	reported++;
	long r = reported;
	pthread_mutex_unlock(&out_lock);
	if (opt.max_conns > 0 && r >= opt.max_conns && opt.mode != MODE_FORK)
		exit(0);
}

static const char *fam_name(int fam)
{
	switch (fam) {
	case AF_INET: return "AF_INET";
	case AF_INET6: return "AF_INET6";
	case AF_UNIX: return "AF_UNIX";
	case AF_UNSPEC: return "AF_UNSPEC";
	default: return "other";
	}
}

/* JSON for an address as the caller saw it, looking only at what len says is there. */
static void fmt_addr(char *out, size_t cap, const struct sockaddr_storage *ss, socklen_t len)
{
	char ip[INET6_ADDRSTRLEN] = "";
	int port = -1;
	if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		port = ntohs(s6->sin6_port);
	}
	snprintf(out, cap, "{\"family\":\"%s\",\"addr\":\"%s\",\"port\":%d,\"len\":%u}",
		 fam_name(ss->ss_family), ip, port, (unsigned)len);
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = 0;
}

static int parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon;
	memset(ss, 0, sizeof *ss);
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host)
			return -1;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = 0;
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof host)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	long port = strtol(colon + 1, NULL, 10);
	if (port < 0 || port > 65535)
		return -1;
	struct sockaddr_in *s4 = (void *)ss;
	struct sockaddr_in6 *s6 = (void *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof *s4;
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof *s6;
	} else {
		return -1;
	}
	return 0;
}

/* ---- one connection ---- */
struct conn {
	int fd;
	long n;
	int have_accept;
	struct sockaddr_storage acc;
	socklen_t acc_len;
	struct sha256 sha;
	uint64_t bytes;
	uint8_t head[256];
	size_t head_len;
	/* epoll mode: bytes still to echo */
	uint8_t *out;
	size_t out_len;
	int dup_fd;
	int acc_fd; /* the fd accept() returned, before --dup */
	int nonblock, cloexec; /* the accepted fd's flags, as accept() left them */
	int errno_kept;        /* errno unchanged by a successful accept() */
	int eof;
};

static long conn_counter;

static void conn_init(struct conn *c, int fd, const struct sockaddr_storage *acc, socklen_t acc_len,
		      int have)
{
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->have_accept = have;
	if (have) {
		c->acc = *acc;
		c->acc_len = acc_len;
	}
	c->dup_fd = -1;
	c->acc_fd = fd;
	int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
	c->nonblock = fl >= 0 && (fl & O_NONBLOCK);
	c->cloexec = fdf >= 0 && (fdf & FD_CLOEXEC);
	pthread_mutex_lock(&out_lock);
	c->n = ++conn_counter;
	pthread_mutex_unlock(&out_lock);
	sha256_init(&c->sha);
}

static void conn_data(struct conn *c, const uint8_t *p, size_t n)
{
	sha256_update(&c->sha, p, n);
	c->bytes += n;
	if (c->head_len < sizeof c->head) {
		size_t take = sizeof c->head - c->head_len;
		if (take > n)
			take = n;
		memcpy(c->head + c->head_len, p, take);
		c->head_len += take;
	}
}

/* Applies --dup: the connection continues on a copy of its fd. */
static void conn_dup(struct conn *c)
{
	int nfd = -1;
	if (!opt.dup)
		return;
	if (!strcmp(opt.dup, "dup"))
		nfd = dup(c->fd);
	else if (!strcmp(opt.dup, "dup2"))
		nfd = dup2(c->fd, c->fd + 1000);
	else if (!strcmp(opt.dup, "dup3"))
		nfd = dup3(c->fd, c->fd + 1000, O_CLOEXEC);
	else if (!strcmp(opt.dup, "fcntl"))
		nfd = fcntl(c->fd, F_DUPFD, c->fd + 500);
	else if (!strcmp(opt.dup, "fcntl_cloexec"))
		nfd = fcntl(c->fd, F_DUPFD_CLOEXEC, c->fd + 500);
	if (nfd < 0) {
		errlog("dup %s: %s", opt.dup, strerror(errno));
		return;
	}
	close(c->fd);
	c->fd = nfd;
	c->dup_fd = nfd;
}

static void set_timeouts(int fd)
{
	struct timeval tv = { opt.io_timeout_ms / 1000, (opt.io_timeout_ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void close_fd(int fd)
{
	/* through libc, where the shim's hooks are */
	if (opt.close_range && close_range((unsigned)fd, (unsigned)fd, 0) == 0)
		return;
	if (close(fd) < 0)
		errlog("close fd %d: %s", fd, strerror(errno));
}

/* The probe: a new outgoing socket that most likely takes the closed fd's number, or (with
 * --probe-via) one moved onto the still-open connection fd by dup2()/dup3(), which closes it. */
static void probe_json(char *out, size_t cap, int closed_fd)
{
	struct sockaddr_storage ss, pa;
	socklen_t len, plen = sizeof pa;
	char a[160];
	out[0] = 0;
	if (!opt.probe || parse_hostport(opt.probe, &ss, &len) < 0)
		return;
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		errlog("probe socket: %s", strerror(errno));
		return;
	}
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		errlog("probe connect: %s", strerror(errno));
		close(fd);
		return;
	}
	if (opt.probe_via) {
		int r = !strcmp(opt.probe_via, "dup3") ? dup3(fd, closed_fd, O_CLOEXEC) : dup2(fd, closed_fd);
		if (r < 0) {
			errlog("probe %s: %s", opt.probe_via, strerror(errno));
			close(fd);
			return;
		}
		close(fd);
		fd = closed_fd;
	}
	memset(&pa, 0, sizeof pa);
	if (getpeername(fd, (struct sockaddr *)&pa, &plen) < 0)
		snprintf(a, sizeof a, "{\"error\":%d}", errno);
	else
		fmt_addr(a, sizeof a, &pa, plen);
	snprintf(out, cap, ",\"probe\":{\"fd\":%d,\"same_fd\":%s,\"peer\":%s}", fd,
		 fd == closed_fd ? "true" : "false", a);
	close(fd);
}

/* Prints the connection's line and closes it. */
static void conn_finish(struct conn *c, const uint8_t *raw)
{
	char acc[160], peer[160], local[160], sum[65], hx[2 * 256 + 1], rawhex[65], probe[300];
	char extra[64] = "", praw[65] = "", flags[320];
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char buf[4096];

	if (c->have_accept) {
		/* decode only what the caller's buffer could hold; accept_raw shows the bytes */
		socklen_t cap = opt.addrlen >= 0 ? (socklen_t)opt.addrlen : (socklen_t)sizeof c->acc;
		fmt_addr(acc, sizeof acc, &c->acc, c->acc_len < cap ? c->acc_len : cap);
	}
	else
		snprintf(acc, sizeof acc, "null");
	memset(&ss, 0xAA, sizeof ss);
	if (opt.addrlen >= 0)
		len = (socklen_t)opt.addrlen; /* the same short buffer as accept() got */
	errno = EDOM;
	int gp = getpeername(c->fd, (struct sockaddr *)&ss, &len);
	int gp_errno_kept = gp == 0 && errno == EDOM;
	if (gp < 0) {
		snprintf(peer, sizeof peer, "{\"error\":%d}", errno);
	} else {
		socklen_t cap = opt.addrlen >= 0 ? (socklen_t)opt.addrlen : (socklen_t)sizeof ss;
		fmt_addr(peer, sizeof peer, &ss, len < cap ? len : cap);
		if (opt.addrlen >= 0) {
			uint8_t pr[32];
			memcpy(pr, &ss, sizeof pr);
			hex(praw, pr, sizeof pr);
		}
	}
	snprintf(flags, sizeof flags,
		 ",\"peer_len\":%u,\"peer_raw\":\"%s\",\"nonblock\":%s,\"cloexec\":%s,"
		 "\"errno_kept\":%s,\"gp_errno_kept\":%s",
		 (unsigned)len, praw, c->nonblock ? "true" : "false", c->cloexec ? "true" : "false",
		 c->errno_kept ? "true" : "false", gp_errno_kept ? "true" : "false");
	len = sizeof ss;
	memset(&ss, 0, sizeof ss);
	if (getsockname(c->fd, (struct sockaddr *)&ss, &len) < 0)
		snprintf(local, sizeof local, "{\"error\":%d}", errno);
	else
		fmt_addr(local, sizeof local, &ss, len);
	sha256_hex(&c->sha, sum);
	hex(hx, c->head, c->head_len);
	if (raw)
		hex(rawhex, raw, 32);
	else
		rawhex[0] = 0;
	if (c->dup_fd >= 0)
		snprintf(extra, sizeof extra, ",\"dup_fd\":%d,\"acc_fd\":%d", c->dup_fd, c->acc_fd);
	int fd = c->fd;
	if (!opt.probe_via)
		close_fd(fd);
	probe_json(probe, sizeof probe, fd); /* with --probe-via, closes fd by dup2()/dup3() */
	int n = snprintf(buf, sizeof buf,
			 "{\"n\":%ld,\"pid\":%d,\"fd\":%d,\"accept\":%s,\"addrlen\":%u,\"accept_raw\":\"%s\","
			 "\"peer\":%s,\"local\":%s,\"bytes\":%llu,\"sha256\":\"%s\",\"hex\":\"%s\"%s%s%s}\n",
			 c->n, (int)getpid(), fd, acc, (unsigned)c->acc_len, rawhex, peer, local,
			 (unsigned long long)c->bytes, sum, hx, extra, flags, probe);
	if (n >= (int)sizeof buf)
		n = (int)sizeof buf - 1;
	emit(buf, (size_t)n);
}

static void greet(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char ip[INET6_ADDRSTRLEN] = "?", line[128];
	int port = -1;
	memset(&ss, 0, sizeof ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
	}
	int n = snprintf(line, sizeof line, "peer=%s %d\n", ip, port);
	if (write_all(fd, line, (size_t)n) < 0)
		errlog("greet: %s", strerror(errno));
}

/* One read from the connection the way --read-with says: read (default), recv, recvfrom,
 * recvmsg, readv, fread (stdio on a dup), syscall (raw SYS_read, past any libc hook), splice
 * (socket to pipe, then the pipe read). */
static ssize_t conn_read(int fd, uint8_t *buf, size_t cap, FILE *in, int pipefd[2])
{
	const char *how = opt.read_with ? opt.read_with : "read";
	if (!strcmp(how, "recv"))
		return recv(fd, buf, cap, 0);
	if (!strcmp(how, "recvfrom"))
		return recvfrom(fd, buf, cap, 0, NULL, NULL);
	if (!strcmp(how, "recvmsg") || !strcmp(how, "readv")) {
		/* two iovecs, so the data is split across buffers */
		struct iovec iov[2] = { { buf, 3 }, { buf + 3, cap - 3 } };
		if (!strcmp(how, "readv"))
			return readv(fd, iov, 2);
		struct msghdr mh;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = iov;
		mh.msg_iovlen = 2;
		return recvmsg(fd, &mh, 0);
	}
	if (!strcmp(how, "fread")) {
		if (!in)
			return -1;
		/* fread would wait to fill the whole buffer; one byte at a time echoes promptly */
		int ch = getc(in);
		if (ch == EOF)
			return ferror(in) ? -1 : 0;
		buf[0] = (uint8_t)ch;
		return 1;
	}
	if (!strcmp(how, "syscall"))
		return syscall(SYS_read, fd, buf, cap);
	if (!strcmp(how, "splice")) {
		ssize_t n = splice(fd, NULL, pipefd[1], NULL, cap, 0);
		if (n <= 0)
			return n;
		return read(pipefd[0], buf, (size_t)n);
	}
	return read(fd, buf, cap);
}

/* Blocking service of one connection: read to EOF, echoing. */
static void serve_blocking(struct conn *c, const uint8_t *raw)
{
	uint8_t buf[65536];
	conn_dup(c);
	set_timeouts(c->fd);
	if (opt.greet)
		greet(c->fd);
	FILE *in = NULL;
	int pipefd[2] = { -1, -1 };
	if (opt.read_with && !strcmp(opt.read_with, "fread")) {
		int d = dup(c->fd);
		in = d >= 0 ? fdopen(d, "r") : NULL;
		if (!in) {
			errlog("fdopen: %s", strerror(errno));
			if (d >= 0)
				close(d);
		}
	} else if (opt.read_with && !strcmp(opt.read_with, "splice") && pipe(pipefd) < 0) {
		errlog("pipe: %s", strerror(errno));
	}
	for (;;) {
		ssize_t r = conn_read(c->fd, buf, sizeof buf, in, pipefd);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			errlog("read fd %d: %s", c->fd, strerror(errno));
			break;
		}
		if (r == 0)
			break;
		conn_data(c, buf, (size_t)r);
		if (opt.echo && write_all(c->fd, buf, (size_t)r) < 0) {
			/* keep reading to EOF so the line is still printed */
			errlog("write fd %d: %s", c->fd, strerror(errno));
		}
	}
	if (in)
		fclose(in);
	if (pipefd[0] >= 0) {
		close(pipefd[0]);
		close(pipefd[1]);
	}
	conn_finish(c, raw);
}

/* accept() as configured; retries on EINTR/ECONNABORTED; returns fd or -1 (errno set). */
static int do_accept(int lfd, struct sockaddr_storage *ss, socklen_t *len, uint8_t raw[32], int flags,
		     int *errno_kept)
{
	for (;;) {
		int fd;
		errno = EDOM;
		memset(ss, 0xAA, sizeof *ss);
		*len = opt.addrlen >= 0 ? (socklen_t)opt.addrlen : (socklen_t)sizeof *ss;
		struct sockaddr *sa = opt.null_addr ? NULL : (struct sockaddr *)ss;
		socklen_t *lp = opt.null_addr ? NULL : len;
		if (opt.use_accept4 || flags)
			fd = accept4(lfd, sa, lp, flags | (opt.use_accept4 ? SOCK_CLOEXEC : 0));
		else
			fd = accept(lfd, sa, lp);
		if (fd >= 0) {
			*errno_kept = errno == EDOM;
			memcpy(raw, ss, 32);
			if (opt.null_addr)
				*len = 0;
			return fd;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		return -1;
	}
}

static void accept_error(void)
{
	int e = errno;
	errlog("accept: %s", strerror(e));
	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void *accept_loop(void *arg)
{
	int lfd = *(int *)arg;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len;
		uint8_t raw[32];
		int kept = 0;
		int fd = do_accept(lfd, &ss, &len, raw, 0, &kept);
		if (fd < 0) {
			accept_error();
			continue;
		}
		struct conn c;
		conn_init(&c, fd, &ss, len, !opt.null_addr);
		c.errno_kept = kept;
		if (opt.mode == MODE_FORK) {
			pid_t pid = fork();
			if (pid < 0) {
				errlog("fork: %s", strerror(errno));
				close(fd);
				continue;
			}
			if (pid == 0) {
				close(lfd);
				serve_blocking(&c, opt.addrlen >= 0 ? raw : NULL);
				_exit(0);
			}
			close(fd);
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			continue;
		}
		serve_blocking(&c, opt.addrlen >= 0 ? raw : NULL);
	}
	return NULL;
}

/* ---- epoll mode ---- */
static int epoll_write(struct conn *c)
{
	while (c->out_len > 0) {
		ssize_t w = write(c->fd, c->out, c->out_len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 1;
			errlog("write fd %d: %s", c->fd, strerror(errno));
			c->out_len = 0;
			return -1;
		}
		memmove(c->out, c->out + w, c->out_len - (size_t)w);
		c->out_len -= (size_t)w;
	}
	return 0;
}

static void epoll_loop(int lfd);

static void *epoll_thread(void *arg)
{
	epoll_loop(*(int *)arg);
	return NULL;
}

static void epoll_loop(int lfd)
{
	if (opt.epoll_threads > 1) {
		/* this thread and epoll_threads - 1 others, each with an epoll instance of its own */
		static int started;
		if (!started) {
			started = 1;
			for (int i = 1; i < opt.epoll_threads; i++) {
				pthread_t t;
				if (pthread_create(&t, NULL, epoll_thread, &opt.lfd) != 0) {
					fprintf(stderr, "testserver: pthread_create failed\n");
					exit(1);
				}
			}
		}
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	uint32_t lev = EPOLLIN | (opt.et ? (uint32_t)EPOLLET : 0u) | (opt.oneshot ? (uint32_t)EPOLLONESHOT : 0u) |
		       (opt.exclusive ? (uint32_t)EPOLLEXCLUSIVE : 0u);
	struct epoll_event ev = { .events = lev, .data.ptr = NULL };
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		errlog("epoll: %s", strerror(errno));
		exit(1);
	}
	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, -1);
		if (n < 0) {
			if (errno != EINTR)
				errlog("epoll_wait: %s", strerror(errno));
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				for (;;) {
					struct sockaddr_storage ss;
					socklen_t len;
					uint8_t raw[32]; /* accept_raw is shown in blocking modes only */
					int kept = 0;
					int fd = do_accept(lfd, &ss, &len, raw, SOCK_NONBLOCK | SOCK_CLOEXEC, &kept);
					if (fd < 0) {
						if (errno != EAGAIN && errno != EWOULDBLOCK)
							accept_error();
						if (opt.oneshot) {
							struct epoll_event rearm = { .events = lev, .data.ptr = NULL };
							if (epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &rearm) < 0)
								errlog("epoll_ctl rearm: %s", strerror(errno));
						}
						break;
					}
					c = malloc(sizeof *c);
					if (!c) {
						close(fd);
						continue;
					}
					conn_init(c, fd, &ss, len, !opt.null_addr);
					c->errno_kept = kept;
					conn_dup(c);
					if (opt.greet) {
						/* a short line on a fresh socket: fits the send buffer */
						greet(c->fd);
					}
					struct epoll_event cev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &cev) < 0) {
						errlog("epoll_ctl: %s", strerror(errno));
						close(c->fd);
						free(c);
					}
				}
				continue;
			}
			uint8_t buf[65536];
			int done = 0;
			if (evs[i].events & EPOLLOUT) {
				if (epoll_write(c) < 0)
					done = c->eof;
			}
			while (!c->eof && c->out_len < (1u << 20)) {
				ssize_t r = read(c->fd, buf, sizeof buf);
				if (r < 0) {
					if (errno == EINTR)
						continue;
					if (errno != EAGAIN) {
						errlog("read fd %d: %s", c->fd, strerror(errno));
						c->eof = 1;
					}
					break;
				}
				if (r == 0) {
					c->eof = 1;
					break;
				}
				conn_data(c, buf, (size_t)r);
				if (opt.echo) {
					uint8_t *nb = realloc(c->out, c->out_len + (size_t)r);
					if (!nb) {
						errlog("out of memory");
						continue;
					}
					c->out = nb;
					memcpy(c->out + c->out_len, buf, (size_t)r);
					c->out_len += (size_t)r;
				}
				if (epoll_write(c) < 0)
					break;
			}
			int pending = epoll_write(c) > 0;
			if (c->eof && !pending)
				done = 1;
			if (done) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				conn_finish(c, NULL);
				free(c->out);
				free(c);
				continue;
			}
			struct epoll_event cev = { .events = (c->eof ? 0u : (uint32_t)EPOLLIN) |
							     (pending ? (uint32_t)EPOLLOUT : 0u),
						   .data.ptr = c };
			epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
		}
	}
}

#define select_loop poll_loop
/* poll() (or select() in select mode) on a non-blocking listener, accept4(SOCK_CLOEXEC) until EAGAIN, each connection then
 * served blocking (an accepted fd does not inherit the listener's O_NONBLOCK). */
static void poll_loop(int lfd)
{
	for (;;) {
		int n;
		if (opt.mode == MODE_SELECT) {
			fd_set rd;
			FD_ZERO(&rd);
			FD_SET(lfd, &rd);
			n = select(lfd + 1, &rd, NULL, NULL, NULL);
		} else {
			struct pollfd pfd = { .fd = lfd, .events = POLLIN };
			n = poll(&pfd, 1, -1);
		}
		if (n < 0) {
			if (errno != EINTR)
				errlog("poll/select: %s", strerror(errno));
			continue;
		}
		for (;;) {
			struct sockaddr_storage ss;
			socklen_t len;
			uint8_t raw[32];
			int kept = 0;
			int fd = do_accept(lfd, &ss, &len, raw, SOCK_CLOEXEC, &kept);
			if (fd < 0) {
				if (errno != EAGAIN && errno != EWOULDBLOCK)
					accept_error();
				break;
			}
			struct conn c;
			conn_init(&c, fd, &ss, len, !opt.null_addr);
			c.errno_kept = kept;
			serve_blocking(&c, opt.addrlen >= 0 ? raw : NULL);
		}
	}
}

static void raise_nofile(rlim_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_max < want)
		rl.rlim_max = want;
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		/* without CAP_SYS_RESOURCE the hard limit caps us */
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void usage(void)
{
	fprintf(stderr, "usage: testserver [--listen HOST:PORT] [--mode blocking|epoll|poll|select|threads|fork] [--et] "
			"[--oneshot] [--exclusive] [--epoll-threads N] "
			"[--threads N] [--accept4] [--null-addr] [--addrlen N] [--max-conns N] "
			"[--dup HOW] [--close-with close|close_range] [--probe HOST:PORT] [--high-fd N] "
			"[--fill-fds N] [--greet] [--no-echo] [--io-timeout MS] [--user UID] [--accept-timeout MS] [--v6only] "
			"[--probe-via dup2|dup3] [--signals US] [--read-with HOW]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) usage(); i++; } while (0)
		if (!strcmp(a, "--listen")) { NEEDV(); opt.listen = v; }
		else if (!strcmp(a, "--v6only")) opt.v6only = 1;
		else if (!strcmp(a, "--mode")) {
			NEEDV();
			if (!strcmp(v, "blocking")) opt.mode = MODE_BLOCKING;
			else if (!strcmp(v, "epoll")) opt.mode = MODE_EPOLL;
			else if (!strcmp(v, "poll")) opt.mode = MODE_POLL;
			else if (!strcmp(v, "select")) opt.mode = MODE_SELECT;
			else if (!strcmp(v, "threads")) opt.mode = MODE_THREADS;
			else if (!strcmp(v, "fork")) opt.mode = MODE_FORK;
			else usage();
		}
		else if (!strcmp(a, "--threads")) { NEEDV(); opt.threads = atoi(v); }
		else if (!strcmp(a, "--accept4")) opt.use_accept4 = 1;
		else if (!strcmp(a, "--null-addr")) opt.null_addr = 1;
		else if (!strcmp(a, "--addrlen")) { NEEDV(); opt.addrlen = atoi(v); }
		else if (!strcmp(a, "--max-conns")) { NEEDV(); opt.max_conns = atol(v); }
		else if (!strcmp(a, "--dup")) { NEEDV(); opt.dup = v; }
		else if (!strcmp(a, "--close-with")) { NEEDV(); opt.close_range = !strcmp(v, "close_range"); }
		else if (!strcmp(a, "--probe")) { NEEDV(); opt.probe = v; }
		else if (!strcmp(a, "--probe-via")) { NEEDV(); opt.probe_via = v; }
		else if (!strcmp(a, "--et")) opt.et = 1;
		else if (!strcmp(a, "--read-with")) { NEEDV(); opt.read_with = v; }
		else if (!strcmp(a, "--oneshot")) opt.oneshot = 1;
		else if (!strcmp(a, "--exclusive")) opt.exclusive = 1;
		else if (!strcmp(a, "--epoll-threads")) { NEEDV(); opt.epoll_threads = atoi(v); }
		else if (!strcmp(a, "--signals")) { NEEDV(); opt.signals_us = atoi(v); }
		else if (!strcmp(a, "--high-fd")) { NEEDV(); opt.high_fd = atoi(v); }
		else if (!strcmp(a, "--fill-fds")) { NEEDV(); opt.fill_fds = atoi(v); }
		else if (!strcmp(a, "--greet")) opt.greet = 1;
		else if (!strcmp(a, "--no-echo")) opt.echo = 0;
		else if (!strcmp(a, "--io-timeout")) { NEEDV(); opt.io_timeout_ms = atoi(v); }
		else if (!strcmp(a, "--user")) { NEEDV(); opt.user = atoi(v); }
		else if (!strcmp(a, "--accept-timeout")) { NEEDV(); opt.accept_timeout_ms = atoi(v); }
		else usage();
#undef NEEDV
	}
	signal(SIGPIPE, SIG_IGN);
	if (opt.signals_us > 0) {
		/* a handler without SA_RESTART: blocking calls return EINTR all the time */
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_alarm;
		sigaction(SIGALRM, &sa, NULL);
		struct itimerval it = { { 0, opt.signals_us }, { 0, opt.signals_us } };
		setitimer(ITIMER_REAL, &it, NULL);
	}

	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_hostport(opt.listen, &ss, &len) < 0) {
		fprintf(stderr, "testserver: bad --listen %s\n", opt.listen);
		return 2;
	}
	int nb = opt.mode == MODE_EPOLL || opt.mode == MODE_POLL || opt.mode == MODE_SELECT;
	int lfd = socket(ss.ss_family, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
	if (lfd < 0) {
		perror("testserver: socket");
		return 1;
	}
	int one = 1, v6only = opt.v6only;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
	if (bind(lfd, (struct sockaddr *)&ss, len) < 0) {
		perror("testserver: bind");
		return 1;
	}
	if (listen(lfd, 1024) < 0) {
		perror("testserver: listen");
		return 1;
	}
	if (opt.high_fd >= 0 || opt.fill_fds >= 0) {
		int top = opt.high_fd > opt.fill_fds ? opt.high_fd : opt.fill_fds;
		raise_nofile((rlim_t)top + 4096);
	}
	if (opt.high_fd >= 0) {
		if (dup2(lfd, opt.high_fd) < 0) {
			fprintf(stderr, "testserver: dup2 listener to %d: %s\n", opt.high_fd, strerror(errno));
			return 1;
		}
		close(lfd);
		lfd = opt.high_fd;
	}
	if (opt.fill_fds >= 0) {
		int nul = open("/dev/null", O_RDONLY);
		while (nul >= 0 && nul < opt.fill_fds)
			nul = open("/dev/null", O_RDONLY);
		if (nul < 0) {
			fprintf(stderr, "testserver: fill fds to %d: %s\n", opt.fill_fds, strerror(errno));
			return 1;
		}
		close(nul); /* the next fd handed out is >= fill_fds */
	}
	if (opt.accept_timeout_ms > 0) {
		struct timeval tv = {opt.accept_timeout_ms / 1000, (opt.accept_timeout_ms % 1000) * 1000};
		setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	}
	if (opt.user >= 0) {
		uid_t u = (uid_t)opt.user;
		if (setgroups(0, NULL) < 0 || setresgid(u, u, u) < 0 || setresuid(u, u, u) < 0) {
			fprintf(stderr, "testserver: drop to uid %d: %s\n", opt.user, strerror(errno));
			return 1;
		}
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof bound;
	getsockname(lfd, (struct sockaddr *)&bound, &blen);
	int port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
						    : ((struct sockaddr_in6 *)&bound)->sin6_port);
	int defer = -1;
	socklen_t dlen = sizeof defer;
	if (getsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, &dlen) < 0)
		defer = -1;
	char ready[64];
	int n = snprintf(ready, sizeof ready, "listening %d defer_accept=%d\n", port, defer);
	write_all(1, ready, (size_t)n);

	opt.lfd = lfd;
	if (opt.mode == MODE_EPOLL) {
		epoll_loop(lfd);
	} else if (opt.mode == MODE_SELECT) {
		select_loop(lfd);
	} else if (opt.mode == MODE_POLL) {
		poll_loop(lfd);
	} else if (opt.mode == MODE_THREADS) {
		pthread_t *t = calloc((size_t)opt.threads, sizeof *t);
		for (int i = 0; i < opt.threads; i++)
			if (pthread_create(&t[i], NULL, accept_loop, &lfd) != 0) {
				fprintf(stderr, "testserver: pthread_create failed\n");
				return 1;
			}
		for (int i = 0; i < opt.threads; i++)
			pthread_join(t[i], NULL);
	} else {
		accept_loop(&lfd);
	}
	return 0;
}
