/* fd2server: a line server whose fd 2 may be a client's socket, as in the servers that made
 * the shim's log lines reach their clients: an inetd-style child (the connection on fds 0, 1
 * and 2, as vsftpd's per-connection process has it) and a daemon that closed stderr (its next
 * accepted socket becomes fd 2). Each connection: read one line (up to '\n' or EOF), answer
 * "reply: " and the line, close.
 *
 * Usage: fd2server [--listen HOST:PORT] [--mode plain|inetd|closed] [--banner TEXT]
 *   plain   serve the connection as accepted (fd 2 untouched)
 *   inetd   fork a child per connection that dup2()s it onto 0, 1 and 2, then serves it there
 *   closed  close(2) once listening, so every accepted connection is fd 2
 *   --banner TEXT  written first on each connection ("\r\n" added), as FTP servers do: in
 *                  lazy mode the header then comes with the client's first bytes
 * Prints "listening PORT", then per connection after it is served:
 *   {"n":1,"fd":F,"status":S}   F: the fd accept() returned; S: 0 served, 1 the read failed
 *                               (inetd: the child's exit status) */
#include <signal.h>
#include <sys/wait.h>

#include "common.h"

static const char *g_banner;

/* Writes the banner if any, reads one line from in and answers it on out: 0, or 1 when the
 * read fails. */
static int serve(int in, int out)
{
	char buf[4096], reply[4200];
	size_t n = 0;
	if (g_banner) {
		int len = snprintf(reply, sizeof(reply), "%s\r\n", g_banner);
		if (write_all(out, reply, (size_t)len))
			return 1;
	}
	while (n < sizeof(buf)) {
		ssize_t r = read(in, buf + n, sizeof(buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return 1;
		if (r == 0)
			break;
		n += (size_t)r;
		if (memchr(buf, '\n', n))
			break;
	}
	int len = snprintf(reply, sizeof(reply), "reply: %.*s", (int)n, buf);
	return write_all(out, reply, (size_t)len) ? 1 : 0;
}

int main(int argc, char **argv)
{
	char hostport[128] = "127.0.0.1:0";
	const char *host, *mode = "plain";
	unsigned port;
	struct out o = {0};

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
			snprintf(hostport, sizeof(hostport), "%s", argv[++i]);
		else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
			mode = argv[++i];
		else if (strcmp(argv[i], "--banner") == 0 && i + 1 < argc)
			g_banner = argv[++i];
		else {
			fprintf(stderr, "usage: fd2server [--listen HOST:PORT] [--mode plain|inetd|closed] [--banner TEXT]\n");
			return 2;
		}
	}
	if (strcmp(mode, "plain") != 0 && strcmp(mode, "inetd") != 0 && strcmp(mode, "closed") != 0) {
		fprintf(stderr, "fd2server: unknown mode %s\n", mode);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (split_hostport(hostport, &host, &port) < 0) {
		fprintf(stderr, "fd2server: bad --listen\n");
		return 2;
	}
	int lfd = listen_on(host, port);
	if (lfd < 0) {
		perror("fd2server: listen");
		return 2;
	}
	if (strcmp(mode, "closed") == 0)
		close(2);
	for (unsigned n = 1;; n++) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return 3;
		}
		int status;
		if (strcmp(mode, "inetd") == 0) {
			pid_t pid = fork();
			if (pid < 0)
				return 3;
			if (pid == 0) {
				close(lfd);
				if (dup2(c, 0) < 0 || dup2(c, 1) < 0 || dup2(c, 2) < 0)
					_exit(4);
				if (c > 2)
					close(c);
				_exit(serve(0, 1));
			}
			close(c);
			int ws;
			while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
				;
			status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
		} else {
			status = serve(c, c);
			close(c);
		}
		out_f(&o, "{\"n\":%u,\"fd\":%d,\"status\":%d}", n, c, status);
		out_line(&o);
	}
}
