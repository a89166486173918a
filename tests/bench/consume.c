/* consume: what the shim's two system calls per trusted connection cost on this machine (J's
 * recvfrom +2): a peek at the queued bytes, then the header's removal, either discarded in the
 * kernel with MSG_TRUNC (what the shim does) or copied out (what it did before). Times each
 * over N rounds on a loopback connection holding a 28-byte v2 header and a small request; the
 * application's own read of the rest is not timed.
 *
 * Usage: consume [N]   (default 200000)
 * Output: "consume rounds=N peek_ns=X discard_ns=X copy_ns=X" */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t sl = sizeof(a);
	char msg[28 + 64], buf[600];
	unsigned long long t_peek = 0, t_trunc = 0, t_copy = 0;
	int one = 1;

	if (n < 1)
		return 2;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &sl) < 0)
		die("consume: listen");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("consume: connect");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int s = accept(l, NULL, NULL);
	if (s < 0)
		die("consume: accept");
	memset(msg, 'x', sizeof(msg));
	for (long i = 0; i < 2 * n; i++) {
		int trunc = (int)(i & 1);
		unsigned long long t0, t1, t2;
		if (send(c, msg, sizeof(msg), 0) != (ssize_t)sizeof(msg))
			die("consume: send");
		/* the whole message queued before timing, as at accept() with the header in */
		while (recv(s, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT) < (ssize_t)sizeof(msg))
			;
		t0 = now_ns();
		if (recv(s, buf, 536, MSG_PEEK | MSG_DONTWAIT) < 28)
			die("consume: peek");
		t1 = now_ns();
		if (recv(s, buf, 28, MSG_DONTWAIT | (trunc ? MSG_TRUNC : 0)) != 28)
			die("consume: consume");
		t2 = now_ns();
		t_peek += t1 - t0;
		*(trunc ? &t_trunc : &t_copy) += t2 - t1;
		if (recv(s, buf, sizeof(buf), 0) != (ssize_t)sizeof(msg) - 28)
			die("consume: read the rest");
	}
	printf("consume rounds=%ld peek_ns=%.0f discard_ns=%.0f copy_ns=%.0f\n", n, (double)t_peek / (2.0 * (double)n),
	       (double)t_trunc / (double)n, (double)t_copy / (double)n);
	return 0;
}
