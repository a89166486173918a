/* eagain: scenario I's leak check. A non-blocking listener with nothing pending, and N accept4()
 * calls that all fail with EAGAIN (what every event loop does after draining its backlog);
 * VmRSS and the malloc heap in use are read before and after. Run under the shim with the
 * listener covered: nothing may grow.
 *
 * Usage: eagain N
 * Output: "eagain calls=N rss_before_kb=K rss_after_kb=K heap_before=B heap_after=B ns_per_call=X" */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long rss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int drain(int lfd, long n)
{
	for (long i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			fprintf(stderr, "eagain: accept4 did not fail with EAGAIN\n");
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0) {
		perror("eagain: listen");
		return 1;
	}
	/* Warm up: the shim classifies the listener, stdio and malloc settle. */
	if (drain(lfd, 1000) < 0)
		return 1;
	/* The measuring itself (stdio, mallinfo2, the vDSO clock) touches memory the first time:
	 * once before. */
	(void)rss_kb();
	(void)mallinfo2();
	(void)now_s();
	long rss0 = rss_kb();
	size_t heap0 = mallinfo2().uordblks;
	double t0 = now_s();
	if (drain(lfd, n) < 0)
		return 1;
	double secs = now_s() - t0;
	size_t heap1 = mallinfo2().uordblks;
	long rss1 = rss_kb();
	printf("eagain calls=%ld rss_before_kb=%ld rss_after_kb=%ld heap_before=%zu heap_after=%zu "
	       "ns_per_call=%.1f\n",
	       n, rss0, rss1, heap0, heap1, secs / (double)n * 1e9);
	return 0;
}
