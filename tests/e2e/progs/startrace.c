/* startrace: the first calls into the shim's hooks made by 16 threads at once, each thread a
 * different hook (accept4 on a covered listener with a header queued, so the shim classifies
 * the listener and reads the header; fcntl64, close, getpeername, poll, read, dup ...), all
 * released by one barrier. Nothing before the barrier calls a hooked function (the listener is
 * made listening with the raw system call), so the threads are the first users of the real
 * functions. Exits 0 when every call answered as libc would; 1 with a line on a wrong answer.
 *
 * Built a second time as a preloaded library (tests/e2e/faults/startrace.c) whose constructor
 * runs the same race before the shim's own constructor has run. */
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/select.h>
#include <sys/syscall.h>

#include "common.h"

#define THREADS 16
#define CONNS 8
#define HDR "PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n"

static int g_lfd, g_pipe[2], g_pipe2[2], g_pair[2], g_client[CONNS];
static pthread_barrier_t g_bar;
static atomic_int g_bad;

static void bad(long who, const char *what, long got)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "startrace: thread %ld: %s returned %ld (errno %d)\n", who,
			 what, got, errno);
	(void)!write(2, line, (size_t)n);
	atomic_fetch_add(&g_bad, 1);
}

static void take(long who, bool four)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = four ? accept4(g_lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK)
		      : accept(g_lfd, (struct sockaddr *)&sa, &sl);
	if (fd < 0) {
		if (errno != EAGAIN)
			bad(who, "accept", fd);
		return;
	}
	if (sa.sin_family != AF_INET || sa.sin_addr.s_addr != inet_addr("203.0.113.7"))
		bad(who, "accept's peer", (long)ntohl(sa.sin_addr.s_addr));
	close(fd);
}

static void *thread(void *arg)
{
	long i = (long)arg;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct pollfd pf = {g_pipe[0], POLLIN, 0};
	struct timeval tv = {0, 0};
	fd_set rs;
	char c;
	long r;

	pthread_barrier_wait(&g_bar);
	switch (i) {
	case 0: case 1: case 2: case 3: case 4: case 5:
		take(i, true);
		break;
	case 6:
		take(i, false);
		break;
	case 7:
		if ((r = fcntl64(g_pipe[0], F_GETFL)) < 0)
			bad(i, "fcntl64", r);
		break;
	case 8:
		if ((r = close(-1)) != -1 || errno != EBADF)
			bad(i, "close(-1)", r);
		break;
	case 9:
		if ((r = getpeername(g_client[0], (struct sockaddr *)&ss, &sl)) != 0)
			bad(i, "getpeername", r);
		break;
	case 10:
		if ((r = poll(&pf, 1, 0)) != 1)
			bad(i, "poll", r);
		break;
	case 11:
		if ((r = read(g_pipe2[0], &c, 1)) != 1)
			bad(i, "read", r);
		break;
	case 12:
		if ((r = dup(g_pipe[0])) < 0)
			bad(i, "dup", r);
		else
			close((int)r);
		break;
	case 13:
		if ((r = getsockname(g_lfd, (struct sockaddr *)&ss, &sl)) != 0)
			bad(i, "getsockname", r);
		break;
	case 14:
		if ((r = recv(g_pair[0], &c, 1, 0)) != 1)
			bad(i, "recv", r);
		break;
	default:
		FD_ZERO(&rs);
		FD_SET(g_pipe[0], &rs);
		if ((r = select(g_pipe[0] + 1, &rs, NULL, NULL, &tv)) != 1)
			bad(i, "select", r);
		break;
	}
	return NULL;
}

/* Only calls the shim does not hook before the barrier: socket, bind, connect, send, write,
 * pipe2, socketpair, and listen as a raw system call. */
static int race(void)
{
	pthread_t t[THREADS];
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    syscall(SYS_listen, g_lfd, 64) < 0 || syscall(SYS_getsockname, g_lfd, &sa, &sl) < 0)
		return 3;
	for (int i = 0; i < CONNS; i++) {
		g_client[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (g_client[i] < 0 || connect(g_client[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    send(g_client[i], HDR, sizeof(HDR) - 1, MSG_NOSIGNAL) != sizeof(HDR) - 1)
			return 3;
	}
	if (pipe2(g_pipe, O_CLOEXEC) < 0 || pipe2(g_pipe2, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g_pair) < 0 ||
	    write(g_pipe[1], "x", 1) != 1 || write(g_pipe2[1], "x", 1) != 1 || write(g_pair[1], "x", 1) != 1)
		return 3;
	pthread_barrier_init(&g_bar, NULL, THREADS);
	for (long i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, thread, (void *)i) != 0)
			return 3;
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	return atomic_load(&g_bad) ? 1 : 0;
}

#ifdef STARTRACE_CTOR
/* The shim's constructor unsets PROXYSHIM_HANDOFF (exec.c): still set here means it has not
 * run yet, which is the point of this build. */
__attribute__((constructor)) static void startrace_ctor(void)
{
	int before = getenv("PROXYSHIM_HANDOFF") != NULL, r;
	/* The shim's settings, loaded first as its constructor would (the threads would otherwise
	 * meet in that load, which narrows the window); the real functions stay unresolved. */
	int (*settings)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT, "proxyshim_settings");
	char buf[2048];
	if (settings)
		settings(buf, sizeof(buf));
	r = race();
	if (r != 0)
		_exit(r);
	if (!before) {
		static const char msg[] = "startrace: the shim's constructor ran first\n";
		(void)!write(2, msg, sizeof(msg) - 1);
		_exit(4);
	}
}
#else
int main(void)
{
	return race();
}
#endif
