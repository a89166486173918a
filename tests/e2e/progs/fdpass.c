/* fdpass: a connection accepted by one process and served by another, unrelated one, as Node's
 * cluster primary and PM2 hand connections to their workers: the fd goes over a UNIX socket
 * with sendmsg(SCM_RIGHTS). Two roles, run as two processes a test starts side by side.
 *
 * Usage: fdpass worker --unix PATH [--read-first] [--raw-recv]
 *   binds and listens on the UNIX stream socket PATH, prints "ready PATH", takes one sender;
 *   then for every fd it receives (recvmsg, SCM_RIGHTS): getpeername() and getsockname()
 *   (after reading, with --read-first), reads until EOF echoing every byte back, closes it,
 *   and prints {"n":N,"role":"worker","fd":F,"peer":{..},"local":{..},"data":"HEX","end":E}
 *   where E is "eof" or the read's errno name. Exits when the sender goes. --raw-recv: receives
 *   with the recvmsg system call itself, which no hook sees.
 * Usage: fdpass acceptor --unix PATH [--listen HOST:PORT] [--names]
 *   connects to the worker at PATH, listens (prints "listening PORT"), and for every accepted
 *   connection: (--names: getpeername() and getsockname() first; in lazy mode this consumes
 *   the header) sendmsg() of the fd with SCM_RIGHTS and one byte, then close() of its copy;
 *   prints {"n":N,"role":"acceptor","fd":F[,"peer":{..},"local":{..}],"sent":S} where S is
 *   0 or sendmsg's errno name. --names-after: then, before closing its copy, getpeername() and
 *   getsockname() of that copy, printed as {"n":N,"role":"acceptor-after","peer":..,"local":..}. */
#include <signal.h>
#include <sys/syscall.h>

#include "common.h"

static int usage(void)
{
	fprintf(stderr, "usage: fdpass worker --unix PATH [--read-first] [--raw-recv]\n"
			"       fdpass acceptor --unix PATH [--listen HOST:PORT] [--names]\n"
			"       [--names-after]\n");
	return 2;
}

static int unix_addr(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -1;
	memcpy(sun->sun_path, path, strlen(path));
	return 0;
}

/* One fd and its one byte from the sender: the fd, -1 when the sender has gone, -2 when a
 * message came without an fd. */
static int recv_fd(int us, int raw)
{
	unsigned char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf,
			   .msg_controllen = sizeof(c.buf)};
	ssize_t r;
	do /* raw: the system call itself, which no hook sees (as io_uring's recvmsg) */
		r = raw ? syscall(SYS_recvmsg, us, &m, MSG_CMSG_CLOEXEC) : recvmsg(us, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
		if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
			int fd;
			memcpy(&fd, CMSG_DATA(h), sizeof(fd));
			return fd;
		}
	}
	return -2;
}

static int worker(const char *path, int read_first, int raw)
{
	struct sockaddr_un sun;
	struct out o = {0}, names = {0};
	if (unix_addr(&sun, path) < 0)
		return 2;
	unlink(path);
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(ls, 1) < 0) {
		perror("fdpass worker: unix socket");
		return 2;
	}
	out_f(&o, "ready %s", path);
	out_line(&o);
	int us;
	do
		us = accept(ls, NULL, NULL);
	while (us < 0 && errno == EINTR);
	if (us < 0) {
		perror("fdpass worker: accept");
		return 2;
	}
	close(ls);
	for (unsigned n = 1;; n++) {
		int fd = recv_fd(us, raw);
		if (fd == -1)
			return 0;
		if (fd == -2) {
			fprintf(stderr, "fdpass worker: a message without an fd\n");
			return 3;
		}
		unsigned char *data = NULL;
		size_t len = 0, cap = 0;
		const char *end = "eof";
		if (!read_first) {
			out_f(&names, ",\"peer\":");
			out_name(&names, fd, 1);
			out_f(&names, ",\"local\":");
			out_name(&names, fd, 0);
		}
		for (;;) {
			if (len + 4096 > cap) {
				cap = cap ? 2 * cap : 65536;
				data = realloc(data, cap);
				if (!data) {
					perror("realloc");
					return 3;
				}
			}
			ssize_t r = read(fd, data + len, 4096);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				end = errname(errno);
				break;
			}
			if (r == 0)
				break;
			if (write_all(fd, data + len, (size_t)r) < 0) {
				end = errname(errno);
				break;
			}
			len += (size_t)r;
		}
		if (read_first) {
			out_f(&names, ",\"peer\":");
			out_name(&names, fd, 1);
			out_f(&names, ",\"local\":");
			out_name(&names, fd, 0);
		}
		out_f(&o, "{\"n\":%u,\"role\":\"worker\",\"fd\":%d%s,\"data\":", n, fd,
		      names.buf ? names.buf : "");
		names.len = 0;
		if (names.buf)
			names.buf[0] = '\0';
		out_hex(&o, data, len);
		out_f(&o, ",\"end\":");
		out_str(&o, end);
		out_f(&o, "}");
		out_line(&o);
		free(data);
		close(fd);
	}
}

static int send_fd(int us, int fd)
{
	unsigned char byte = 'F';
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof(c));
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf,
			   .msg_controllen = sizeof(c.buf)};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(fd));
	ssize_t r;
	do
		r = sendmsg(us, &m, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -1;
}

static int acceptor(const char *path, char *hostport, int names, int names_after)
{
	struct sockaddr_un sun;
	struct out o = {0};
	const char *host;
	unsigned port;
	if (unix_addr(&sun, path) < 0 || split_hostport(hostport, &host, &port) < 0)
		return usage();
	int us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (us < 0 || connect(us, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		perror("fdpass acceptor: connect to the worker");
		return 2;
	}
	int lfd = listen_on(host, port);
	if (lfd < 0) {
		perror("fdpass acceptor: listen");
		return 2;
	}
	for (unsigned n = 1;; n++) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("fdpass acceptor: accept");
			return 3;
		}
		out_f(&o, "{\"n\":%u,\"role\":\"acceptor\",\"fd\":%d", n, c);
		if (names) {
			out_f(&o, ",\"peer\":");
			out_name(&o, c, 1);
			out_f(&o, ",\"local\":");
			out_name(&o, c, 0);
		}
		int sent = send_fd(us, c);
		out_f(&o, ",\"sent\":");
		out_str(&o, sent == 0 ? "0" : errname(errno));
		out_f(&o, "}");
		out_line(&o);
		if (sent == 0 && names_after) {
			/* The fd has gone, and this copy is kept: its getpeername() races the
			 * worker's read for a header still to come (lazy mode). */
			out_f(&o, "{\"n\":%u,\"role\":\"acceptor-after\",\"peer\":", n);
			out_name(&o, c, 1);
			out_f(&o, ",\"local\":");
			out_name(&o, c, 0);
			out_f(&o, "}");
			out_line(&o);
		}
		close(c);
		if (sent < 0)
			return 3;
	}
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	char hostport[128] = "127.0.0.1:0";
	int read_first = 0, names = 0, names_after = 0, raw = 0;
	if (argc < 2)
		return usage();
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--unix") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
			snprintf(hostport, sizeof(hostport), "%s", argv[++i]);
		else if (strcmp(argv[i], "--read-first") == 0)
			read_first = 1;
		else if (strcmp(argv[i], "--names") == 0)
			names = 1;
		else if (strcmp(argv[i], "--names-after") == 0)
			names_after = 1;
		else if (strcmp(argv[i], "--raw-recv") == 0)
			raw = 1;
		else
			return usage();
	}
	if (!path)
		return usage();
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(argv[1], "worker") == 0)
		return worker(path, read_first, raw);
	if (strcmp(argv[1], "acceptor") == 0)
		return acceptor(path, hostport, names, names_after);
	return usage();
}
