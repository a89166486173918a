/* bulksink: scenario G's receiver. Accepts one connection at a time on a blocking listener and
 * reads it to EOF through read() or recv() (the hooked calls a lazy-mode shim sits in), in
 * buffers of the size a typical server uses, then closes it and prints one line.
 *
 * Usage: bulksink --listen IP:PORT --read-with read|recv [--buf BYTES] [--ack BYTES] [--peek]
 *                 [--once]
 *   --ack BYTES: after each BYTES of payload (counted as the reads return it, over the whole
 *     connection) write one byte back: loadgen --segment waits for it, so that several sinks
 *     fed in turn are timed segment by segment and only one of them is ever busy
 *   --peek: before the first read, peek at the first bytes queued, with the raw system call
 *     (past the shim's hooks, which would take the header), and report whether they are a
 *     PROXY header: then the shim left it to the first read (lazy mode's path)
 *   --once: exit after the first connection (for instruction counts under callgrind)
 * Output: "listening PORT" once, then per connection:
 *   bulk bytes=N secs=S calls=N cpu_s=S [header_queued=0|1]
 *   (secs: accept to EOF; cpu_s: this process's CPU over the connection, its only one;
 *   header_queued: with --peek) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
	fprintf(stderr, "usage: bulksink --listen IP:PORT --read-with read|recv [--buf BYTES] [--ack BYTES] "
			"[--peek] [--once]\n");
	exit(2);
}

static unsigned long long number(const char *s)
{
	return bench_number(s, usage);
}

/* Whether the connection's first bytes are a PROXY header (v1 or v2 signature, as far as they
 * have arrived). Blocks until something is queued; syscall() so that no hook sees it. */
static int header_queued(int fd)
{
	static const char v1[] = "PROXY ", v2[] = "\r\n\r\n\0\r\nQUIT\n";
	char b[12];
	long n;
	do
		n = syscall(SYS_recvfrom, fd, b, sizeof(b), MSG_PEEK, NULL, NULL);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	return !memcmp(b, v1, (size_t)n < sizeof(v1) - 1 ? (size_t)n : sizeof(v1) - 1) ||
	       !memcmp(b, v2, (size_t)n < sizeof(v2) - 1 ? (size_t)n : sizeof(v2) - 1);
}

int main(int argc, char **argv)
{
	const char *listen_at = "127.0.0.1:0", *how = "read";
	size_t cap = 16384;
	unsigned long long ack = 0;
	int once = 0, peek = 0;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	int one = 1, lfd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--once")) {
			once = 1;
			continue;
		}
		if (!strcmp(argv[i], "--peek")) {
			peek = 1;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--listen"))
			listen_at = argv[++i];
		else if (!strcmp(argv[i], "--read-with"))
			how = argv[++i];
		else if (!strcmp(argv[i], "--buf"))
			cap = (size_t)number(argv[++i]);
		else if (!strcmp(argv[i], "--ack"))
			ack = number(argv[++i]);
		else
			usage();
	}
	if (strcmp(how, "read") && strcmp(how, "recv"))
		usage();
	int use_recv = !strcmp(how, "recv");
	char host[64];
	const char *colon = strrchr(listen_at, ':');
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host) || cap == 0)
		usage();
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = '\0';
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		usage();
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	char *buf = malloc(cap);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (!buf || lfd < 0)
		return 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("bulksink: listen");
		return 1;
	}
	printf("listening %u\n", ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("bulksink: accept");
			return 1;
		}
		double t0 = now_s(), c0 = cpu_s();
		unsigned long long bytes = 0, calls = 0, next_ack = ack;
		int queued = -1;
		/* The ack is the only thing ever sent: Nagle must not hold it back. */
		if (ack)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (peek)
			queued = header_queued(fd);
		for (;;) {
			ssize_t r = use_recv ? recv(fd, buf, cap, 0) : read(fd, buf, cap);
			calls++;
			if (r > 0) {
				bytes += (unsigned long long)r;
				for (; ack && bytes >= next_ack; next_ack += ack) {
					if (write(fd, "a", 1) != 1) {
						perror("bulksink: ack");
						break;
					}
				}
				continue;
			}
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				perror("bulksink: read");
			break;
		}
		double secs = now_s() - t0, cpu = cpu_s() - c0;
		close(fd);
		printf("bulk bytes=%llu secs=%.3f calls=%llu cpu_s=%.4f", bytes, secs, calls, cpu);
		if (queued >= 0)
			printf(" header_queued=%d", queued);
		printf("\n");
		fflush(stdout);
		if (once)
			return 0;
	}
}
