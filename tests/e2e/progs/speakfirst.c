/* speakfirst: a server that speaks first (as SSH, SMTP and FTP servers do): it writes a banner
 * as soon as it has accepted, then reads until EOF with the read function chosen, and prints
 * one JSON line per connection: what getpeername()/getsockname() said and every byte it read.
 *
 * Usage: speakfirst [options]
 *   --listen HOST:PORT   default 127.0.0.1:0; prints "listening PORT" once ready
 *   --read-with F        read (default), recv, recvfrom, recvmsg, readv
 *   --flags LIST         comma list for recv/recvfrom/recvmsg: peek, waitall, dontwait
 *                        (peek: every read is a peek of up to --chunk bytes followed by a read
 *                        of exactly what the peek returned; the two must agree)
 *   --chunk N            bytes asked for per call (default 65536; 1 reads byte by byte)
 *   --nonblock           O_NONBLOCK on the connection; EAGAIN waits in poll()
 *   --banner TEXT        default "220 speakfirst ready\r\n"; --no-banner writes none
 *   --peer-early         getpeername() right after accept(), before the banner
 *   --max-conns N        exit after N connections (default: serve forever)
 *   --name-len N         also call getsockname()/getpeername() with *addrlen = N into a 64-byte
 *                        buffer prefilled with 0xAA: "local_raw"/"peer_raw" (its first 40 bytes
 *                        in hex) and "local_len"/"peer_len" (what the call reported)
 *
 * Output per connection, after the client's EOF or a read error:
 *   {"n":1,"banner":"ok","peer":{..},"local":{..},"bytes":N,"hex":"..","calls":C,
 *    "sizes":[first 64 sizes],"eagain":E,"eagain_queued":[FIONREAD at each EAGAIN, first 16],
 *    "peek_mismatch":0,"first_peek":"hex","error":"ECONNRESET"|null,"error_again":..}
 * "peer"/"local" are asked after the reading is over. The fortified variant of this program
 * (built with -D_FORTIFY_SOURCE=2) calls __read_chk, __recv_chk and __recvfrom_chk: the
 * buffer is a global array of known size and the length a run-time value. */
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "common.h"

enum fn { F_READ, F_RECV, F_RECVFROM, F_RECVMSG, F_READV };

static unsigned char g_buf[65536];
static unsigned char g_peek[65536];

static enum fn g_fn = F_READ;
static int g_flags;
static bool g_peek_mode;
static size_t g_chunk = sizeof(g_buf);
static int g_name_len = -1;

static void out_raw_name(struct out *o, int fd, int peer)
{
	unsigned char buf[64];
	socklen_t len = (socklen_t)g_name_len;
	memset(buf, 0xAA, sizeof(buf));
	int r = peer ? getpeername(fd, (struct sockaddr *)buf, &len)
		     : getsockname(fd, (struct sockaddr *)buf, &len);
	out_f(o, ",\"%s_len\":%d,\"%s_raw\":", peer ? "peer" : "local", r < 0 ? -1 : (int)len,
	      peer ? "peer" : "local");
	out_hex(o, buf, 40);
}

static ssize_t do_read(int fd, size_t n, int flags)
{
	struct sockaddr_storage from;
	socklen_t fl = sizeof(from);
	switch (g_fn) {
	case F_READ:
		return read(fd, g_buf, n);
	case F_RECV:
		return recv(fd, g_buf, n, flags);
	case F_RECVFROM:
		return recvfrom(fd, g_buf, n, flags, (struct sockaddr *)&from, &fl);
	case F_RECVMSG: {
		/* two iovecs, so the bytes are scattered and gathered back */
		size_t half = n / 2;
		struct iovec iov[2] = {{g_buf, half}, {g_buf + half, n - half}};
		struct msghdr m;
		memset(&m, 0, sizeof(m));
		m.msg_iov = iov;
		m.msg_iovlen = 2;
		return recvmsg(fd, &m, flags);
	}
	case F_READV: {
		size_t half = n / 2;
		struct iovec iov[2] = {{g_buf, half}, {g_buf + half, n - half}};
		return readv(fd, iov, 2);
	}
	}
	return -1;
}

static ssize_t do_peek(int fd, size_t n, int flags)
{
	struct sockaddr_storage from;
	socklen_t fl = sizeof(from);
	switch (g_fn) {
	case F_RECV:
		return recv(fd, g_peek, n, flags | MSG_PEEK);
	case F_RECVFROM:
		return recvfrom(fd, g_peek, n, flags | MSG_PEEK, (struct sockaddr *)&from, &fl);
	case F_RECVMSG: {
		struct iovec iov = {g_peek, n};
		struct msghdr m;
		memset(&m, 0, sizeof(m));
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		return recvmsg(fd, &m, flags | MSG_PEEK);
	}
	default:
		errno = EINVAL;
		return -1;
	}
}

static void serve(int fd, unsigned n, const char *banner, bool nonblock, bool peer_early)
{
	struct out o = {0};
	unsigned char *all = NULL;
	size_t total = 0, cap = 0;
	unsigned calls = 0, eagain = 0, nq = 0, mismatch = 0;
	int queued[16];
	size_t sizes[64];
	unsigned nsizes = 0;
	int err = 0, err2 = -1;
	unsigned char first_peek[64];
	ssize_t first_peek_len = -1;

	out_f(&o, "{\"n\":%u", n);
	if (peer_early) {
		out_f(&o, ",\"peer_early\":");
		out_name(&o, fd, 1);
	}
	if (banner) {
		ssize_t w = send(fd, banner, strlen(banner), MSG_NOSIGNAL);
		out_f(&o, ",\"banner\":\"%s\"", w == (ssize_t)strlen(banner) ? "ok" : errname(errno));
	}
	if (nonblock)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		ssize_t r;
		if (g_peek_mode) {
			r = do_peek(fd, g_chunk, g_flags);
			if (r > 0) {
				if (first_peek_len < 0) {
					first_peek_len = r < 64 ? r : 64;
					memcpy(first_peek, g_peek, (size_t)first_peek_len);
				}
				/* the same bytes again, now taken off the queue */
				ssize_t p = r;
				r = do_read(fd, (size_t)p, g_flags & ~MSG_DONTWAIT);
				if (r != p || memcmp(g_peek, g_buf, (size_t)p) != 0)
					mismatch++;
			}
		} else {
			r = do_read(fd, g_chunk, g_flags);
		}
		if (r > 0) {
			if (total + (size_t)r > cap) {
				cap = (total + (size_t)r) * 2;
				all = realloc(all, cap);
				if (!all)
					exit(3);
			}
			memcpy(all + total, g_buf, (size_t)r);
			total += (size_t)r;
			if (nsizes < 64)
				sizes[nsizes++] = (size_t)r;
			calls++;
			continue;
		}
		if (r == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int q = -1;
			eagain++;
			if (ioctl(fd, FIONREAD, &q) < 0)
				q = -1;
			if (nq < 16)
				queued[nq++] = q;
			struct pollfd p = {.fd = fd, .events = POLLIN};
			if (poll(&p, 1, 10000) == 0) {
				err = ETIMEDOUT;
				break;
			}
			continue;
		}
		err = errno;
		/* once more: a refused connection keeps failing */
		r = do_read(fd, g_chunk, g_flags);
		err2 = r < 0 ? errno : 0;
		break;
	}
	out_f(&o, ",\"peer\":");
	out_name(&o, fd, 1);
	out_f(&o, ",\"local\":");
	out_name(&o, fd, 0);
	if (g_name_len >= 0) {
		out_raw_name(&o, fd, 1);
		out_raw_name(&o, fd, 0);
	}
	out_f(&o, ",\"bytes\":%zu,\"hex\":", total);
	out_hex(&o, all, total);
	out_f(&o, ",\"calls\":%u,\"sizes\":[", calls);
	for (unsigned i = 0; i < nsizes; i++)
		out_f(&o, "%s%zu", i ? "," : "", sizes[i]);
	out_f(&o, "],\"eagain\":%u,\"eagain_queued\":[", eagain);
	for (unsigned i = 0; i < nq; i++)
		out_f(&o, "%s%d", i ? "," : "", queued[i]);
	out_f(&o, "],\"peek_mismatch\":%u,\"first_peek\":", mismatch);
	if (first_peek_len >= 0)
		out_hex(&o, first_peek, (size_t)first_peek_len);
	else
		out_f(&o, "null");
	if (err)
		out_f(&o, ",\"error\":\"%s\"", errname(err));
	else
		out_f(&o, ",\"error\":null");
	if (err2 >= 0)
		out_f(&o, ",\"error_again\":\"%s\"", errname(err2));
	out_f(&o, "}");
	out_line(&o);
	free(o.buf);
	free(all);
}

int main(int argc, char **argv)
{
	char def[] = "127.0.0.1:0";
	char *listen_at = def;
	const char *banner = "220 speakfirst ready\r\n";
	bool nonblock = false, peer_early = false;
	unsigned max = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--listen") && v) {
			listen_at = argv[++i];
		} else if (!strcmp(a, "--read-with") && v) {
			i++;
			if (!strcmp(v, "read")) g_fn = F_READ;
			else if (!strcmp(v, "recv")) g_fn = F_RECV;
			else if (!strcmp(v, "recvfrom")) g_fn = F_RECVFROM;
			else if (!strcmp(v, "recvmsg")) g_fn = F_RECVMSG;
			else if (!strcmp(v, "readv")) g_fn = F_READV;
			else {
				fprintf(stderr, "speakfirst: bad --read-with %s\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--flags") && v) {
			char *s = strdup(argv[++i]), *save = NULL;
			for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (!strcmp(t, "peek")) g_peek_mode = true;
				else if (!strcmp(t, "waitall")) g_flags |= MSG_WAITALL;
				else if (!strcmp(t, "dontwait")) g_flags |= MSG_DONTWAIT;
				else {
					fprintf(stderr, "speakfirst: bad flag %s\n", t);
					return 2;
				}
			}
			free(s);
		} else if (!strcmp(a, "--chunk") && v) {
			g_chunk = strtoul(argv[++i], NULL, 10);
			if (g_chunk == 0 || g_chunk > sizeof(g_buf))
				return 2;
		} else if (!strcmp(a, "--nonblock")) {
			nonblock = true;
		} else if (!strcmp(a, "--banner") && v) {
			banner = argv[++i];
		} else if (!strcmp(a, "--no-banner")) {
			banner = NULL;
		} else if (!strcmp(a, "--peer-early")) {
			peer_early = true;
		} else if (!strcmp(a, "--name-len") && v) {
			g_name_len = (int)strtol(argv[++i], NULL, 10);
			if (g_name_len < 0 || g_name_len > 64)
				return 2;
		} else if (!strcmp(a, "--max-conns") && v) {
			max = (unsigned)strtoul(argv[++i], NULL, 10);
		} else {
			fprintf(stderr, "speakfirst: unknown option %s\n", a);
			return 2;
		}
	}
	if (g_peek_mode && (g_fn == F_READ || g_fn == F_READV)) {
		fprintf(stderr, "speakfirst: peek needs recv, recvfrom or recvmsg\n");
		return 2;
	}
	const char *host;
	unsigned port;
	if (split_hostport(listen_at, &host, &port) < 0)
		return 2;
	int lfd = listen_on(host, port);
	if (lfd < 0) {
		perror("speakfirst: listen");
		return 1;
	}
	for (unsigned n = 1; max == 0 || n <= max; n++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			perror("speakfirst: accept");
			return 1;
		}
		serve(fd, n, banner, nonblock, peer_early);
		close(fd);
	}
	return 0;
}
