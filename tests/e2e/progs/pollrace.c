/* pollrace SECONDS [NPOLL]: poll() against a listener whose park flips between empty and
 * non-empty all the time. Pollers pass NPOLL (default 200) entries of the same non-blocking
 * listener, timeout 0, in a loop; acceptors take connections with accept4() (the shim parks
 * the ones whose header is incomplete); clients send a PROXY v1 header in two halves. Under the
 * shim with the client trusted, the poll merge is asked, many times a second, about a park
 * that changes while it looks. Exits 0 and prints one line of counts; 1 on a wrong answer. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "common.h"

#define POLLERS 4
#define ACCEPTORS 2
#define CLIENTS 4
#define HDR "PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n"

static int g_lfd, g_npoll = 200;
static unsigned g_port;
static atomic_bool g_stop;
static atomic_ulong g_polls, g_ready, g_conns, g_rewritten, g_wrong;

static void pause_us(long us)
{
	struct timespec t = {0, us * 1000};
	nanosleep(&t, NULL);
}

static void *poller(void *arg)
{
	struct pollfd *a = calloc((size_t)g_npoll, sizeof(*a));
	(void)arg;
	if (!a)
		exit(3);
	while (!atomic_load(&g_stop)) {
		for (int i = 0; i < g_npoll; i++) {
			a[i].fd = g_lfd;
			a[i].events = POLLIN;
			a[i].revents = 0;
		}
		int r = poll(a, (nfds_t)g_npoll, 0);
		if (r < 0 || r > g_npoll)
			atomic_fetch_add(&g_wrong, 1);
		else if (r > 0)
			atomic_fetch_add(&g_ready, 1);
		atomic_fetch_add(&g_polls, 1);
	}
	free(a);
	return NULL;
}

static void *acceptor(void *arg)
{
	(void)arg;
	while (!atomic_load(&g_stop)) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(g_lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK);
		if (fd < 0) {
			sched_yield();
			continue;
		}
		atomic_fetch_add(&g_conns, 1);
		if (ss.ss_family == AF_INET &&
		    ((struct sockaddr_in *)&ss)->sin_addr.s_addr == inet_addr("203.0.113.7"))
			atomic_fetch_add(&g_rewritten, 1);
		/* RST on close: no TIME_WAIT, so the run never runs out of ports. */
		struct linger lg = {1, 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	return NULL;
}

static void *client(void *arg)
{
	struct sockaddr_in sa;
	size_t half = sizeof(HDR) / 2;
	(void)arg;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)g_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (!atomic_load(&g_stop)) {
		struct timeval tv = {1, 0};
		char b[16];
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			exit(3);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(fd);
			pause_us(1000);
			continue;
		}
		if (send(fd, HDR, half, MSG_NOSIGNAL) == (ssize_t)half) {
			pause_us(100);
			if (send(fd, HDR + half, sizeof(HDR) - 1 - half, MSG_NOSIGNAL) > 0)
				(void)!read(fd, b, sizeof(b)); /* until the server closes it */
		}
		close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[POLLERS + ACCEPTORS + CLIENTS];
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	double secs = argc > 1 ? atof(argv[1]) : 3;
	int n = 0;

	if (argc > 2)
		g_npoll = atoi(argv[2]);
	if (g_npoll < 1)
		return 2;
	g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(g_lfd, 1024) < 0 ||
	    getsockname(g_lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("listener");
		return 3;
	}
	g_port = ntohs(sa.sin_port);
	for (int i = 0; i < POLLERS; i++)
		pthread_create(&t[n++], NULL, poller, NULL);
	for (int i = 0; i < ACCEPTORS; i++)
		pthread_create(&t[n++], NULL, acceptor, NULL);
	for (int i = 0; i < CLIENTS; i++)
		pthread_create(&t[n++], NULL, client, NULL);
	pause_us((long)(secs * 1e6) % 1000000);
	for (long s = (long)secs; s > 0; s--)
		pause_us(999999);
	atomic_store(&g_stop, true);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("polls=%lu ready=%lu conns=%lu rewritten=%lu wrong=%lu\n", atomic_load(&g_polls),
	       atomic_load(&g_ready), atomic_load(&g_conns), atomic_load(&g_rewritten), atomic_load(&g_wrong));
	return atomic_load(&g_wrong) ? 1 : 0;
}
