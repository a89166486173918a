/* detach: a legacy daemon. It listens, serves one connection, then leaves its parent the way
 * old servers do, and goes on serving in the new process with a poll() loop.
 *
 * detach --how fork|daemon|_Fork|clone --pidfile PATH [--serve N]
 *   fork: the fork() function; daemon: daemon(1, 1); _Fork: glibc's _Fork(), which runs no
 *   fork handlers; clone: the raw clone system call with SIGCHLD, behind libc's back.
 *   Prints "listening PORT", serves one connection, detaches (the parent exits 0), writes its
 *   pid to PATH and serves N more (default 2) before exiting 0. Each reply is one JSON line:
 *   {"pid":N,"peer":<accept()'s address>,"getpeername":<address>}; each served connection is
 *   also printed on stdout. Every wait is bounded: 30 s without a connection ends the run. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common.h"

pid_t _Fork(void);

static int serve_one(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char buf[4096];
	size_t got = 0;
	int fd;

	for (;;) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		int r = poll(&p, 1, 30000);
		if (r == 0)
			return -1;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		sl = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
	}
	/* The request: up to an empty line. */
	while (got < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	struct out o = {0};
	out_f(&o, "{\"pid\":%d,\"peer\":", (int)getpid());
	out_sa(&o, (struct sockaddr *)&ss, sl);
	out_f(&o, ",\"getpeername\":");
	out_name(&o, fd, 1);
	out_f(&o, "}\n");
	if (write(fd, o.buf, o.len) < 0)
		perror("write");
	o.len--; /* out_line adds its own newline */
	out_line(&o);
	free(o.buf);
	close(fd);
	return 0;
}

static pid_t detach(const char *how)
{
	if (!strcmp(how, "fork"))
		return fork();
	if (!strcmp(how, "_Fork"))
		return _Fork();
	if (!strcmp(how, "clone"))
		return (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	if (!strcmp(how, "daemon"))
		return daemon(1, 1) < 0 ? -1 : 0;
	return -1;
}

int main(int argc, char **argv)
{
	const char *how = NULL, *pidfile = NULL;
	int serve = 2, lfd;
	pid_t pid;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--how"))
			how = argv[i + 1];
		else if (!strcmp(argv[i], "--pidfile"))
			pidfile = argv[i + 1];
		else if (!strcmp(argv[i], "--serve"))
			serve = atoi(argv[i + 1]);
	}
	if (!how || !pidfile) {
		fprintf(stderr, "usage: detach --how fork|daemon|_Fork|clone --pidfile PATH [--serve N]\n");
		return 2;
	}
	lfd = listen_on("127.0.0.1", 0);
	if (lfd < 0 || fcntl(lfd, F_SETFL, O_NONBLOCK) < 0) {
		perror("listen");
		return 1;
	}
	if (serve_one(lfd) < 0)
		return 1;
	pid = detach(how);
	if (pid < 0) {
		perror("detach");
		return 1;
	}
	if (pid > 0)
		_exit(0); /* the parent leaves, as a daemon's does */
	FILE *f = fopen(pidfile, "w");
	if (!f)
		return 1;
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	for (int i = 0; i < serve; i++)
		if (serve_one(lfd) < 0)
			return 1;
	return 0;
}
