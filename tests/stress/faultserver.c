/* faultserver: a server driven line by line on stdin, so a test can put the shim through one
 * fault at a time (fd exhaustion, signals, a listener closed by another thread, a program that
 * closes every fd above 2) and see exactly what each libc call returned.
 *
 * Every command prints one JSON line on stdout: {"cmd":"...", ...}; "ret" is the call's return
 * value and "errno" its errno name when it failed ("" otherwise).
 *   listen HOST:PORT [nb]   socket/bind/listen(128) (nb: O_NONBLOCK) -> fd, port
 *   accept LFD              accept4(LFD, &addr, &len, 0) -> ret, errno, peer, errno_kept
 *   accept_nb LFD           accept4 with SOCK_NONBLOCK
 *   read FD                 reads to EOF (SO_RCVTIMEO 5 s) -> ret, hex of what was read
 *   close FD                close()
 *   nofile N                RLIMIT_NOFILE soft limit = N
 *   fill                    opens /dev/null until open() fails -> how many, errno
 *   unfill [K]              closes K (default all) of the fds fill opened
 *   open K                  opens K /dev/null fds -> their numbers (the program's own files)
 *   alive FD...             which of these fds are still open, and what they are (readlink)
 *   fds                     the fds open right now (/proc/self/fd)
 *   sig restart|norestart   SIGALRM handler with or without SA_RESTART
 *   alarm MS                a one-shot SIGALRM in MS ms
 *   closer LFD MS           a thread closes LFD after MS ms; prints {"cmd":"closer",...} then
 *   closeall HOW            closes every fd above 2: loop (close() each), close_range (libc),
 *                           closefrom (glibc), syscall (raw SYS_close_range)
 *   exit */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static int filled[65536];
static int nfilled;
static volatile sig_atomic_t alarms;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	char buf[16384];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	pthread_mutex_lock(&out_lock);
	ssize_t w = write(1, buf, (size_t)n); /* one write per line: lines never interleave */
	(void)w;
	pthread_mutex_unlock(&out_lock);
}

static const char *ename(int ret, int e)
{
	if (ret >= 0)
		return "";
	switch (e) {
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case EINTR: return "EINTR";
	case EAGAIN: return "EAGAIN";
	case EBADF: return "EBADF";
	case EINVAL: return "EINVAL";
	case ECONNABORTED: return "ECONNABORTED";
	case ECONNRESET: return "ECONNRESET";
	case ENOTSOCK: return "ENOTSOCK";
	case ENOBUFS: return "ENOBUFS";
	case ENOMEM: return "ENOMEM";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: {
		static __thread char b[32];
		snprintf(b, sizeof b, "errno%d", e);
		return b;
	}
	}
}

static void fmt_peer(char *o, size_t cap, const struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = -1;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
		port = ntohs(s->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
		port = ntohs(s->sin6_port);
	}
	snprintf(o, cap, "\"%s %d\"", ip, port);
}

static int parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	memset(ss, 0, sizeof *ss);
	if (!colon || (size_t)(colon - s) >= sizeof host)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	int port = atoi(colon + 1);
	if (host[0] == '[') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		size_t hl = strlen(host);
		if (hl < 2 || host[hl - 1] != ']')
			return -1;
		host[hl - 1] = 0;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return -1;
		*len = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -1;
		*len = sizeof *a;
	}
	return 0;
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void do_accept(int lfd, int flags, const char *cmd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char peer[128] = "null";
	memset(&ss, 0, sizeof ss);
	errno = EDOM;
	int r = accept4(lfd, (struct sockaddr *)&ss, &len, flags);
	int e = errno;
	if (r >= 0)
		fmt_peer(peer, sizeof peer, &ss);
	out("{\"cmd\":\"%s\",\"ret\":%d,\"errno\":\"%s\",\"peer\":%s,\"errno_kept\":%s,\"alarms\":%d}", cmd, r,
	    ename(r, e), peer, r >= 0 && e == EDOM ? "true" : "false", (int)alarms);
}

static void do_read(int fd)
{
	static char hx[2 * 4096 + 1];
	unsigned char buf[4096];
	size_t got = 0;
	int r = 0, e = 0;
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	for (;;) {
		ssize_t n = read(fd, buf + got, sizeof buf - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -1;
			e = errno;
			break;
		}
		if (n == 0 || (got += (size_t)n) == sizeof buf)
			break;
	}
	for (size_t i = 0; i < got; i++)
		sprintf(hx + 2 * i, "%02x", buf[i]);
	hx[2 * got] = 0;
	out("{\"cmd\":\"read\",\"ret\":%d,\"errno\":\"%s\",\"bytes\":%zu,\"hex\":\"%s\"}", r, ename(r, e), got, hx);
}

static void list_fds(void)
{
	char buf[12000];
	size_t o = 0;
	int count = 0;
	DIR *d = opendir("/proc/self/fd");
	int dfd = d ? dirfd(d) : -1;
	struct dirent *de;
	buf[0] = 0;
	while (d && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || atoi(de->d_name) == dfd)
			continue;
		count++;
		if (o < sizeof buf - 16)
			o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", o ? "," : "", de->d_name);
	}
	if (d)
		closedir(d);
	out("{\"cmd\":\"fds\",\"count\":%d,\"list\":[%s]}", count, buf);
}

struct closer {
	int fd, ms;
};

static void *closer_main(void *arg)
{
	struct closer c = *(struct closer *)arg;
	free(arg);
	struct timespec ts = {c.ms / 1000, (long)(c.ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	int r = close(c.fd);
	int e = errno;
	out("{\"cmd\":\"closer\",\"ret\":%d,\"errno\":\"%s\",\"fd\":%d}", r, ename(r, e), c.fd);
	return NULL;
}

static void closeall(const char *how)
{
	int r = 0, e = 0;
	if (!strcmp(how, "loop")) {
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		for (int fd = 3; fd < (int)rl.rlim_cur; fd++)
			close(fd);
	} else if (!strcmp(how, "close_range")) {
		r = close_range(3, ~0U, 0);
	} else if (!strcmp(how, "closefrom")) {
		closefrom(3);
	} else if (!strcmp(how, "syscall")) {
		r = (int)syscall(SYS_close_range, 3, ~0U, 0);
	} else {
		r = -1;
		errno = EINVAL;
	}
	e = errno;
	nfilled = 0;
	out("{\"cmd\":\"closeall\",\"how\":\"%s\",\"ret\":%d,\"errno\":\"%s\"}", how, r, ename(r, e));
}

int main(void)
{
	char line[4096];
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdin, NULL, _IONBF, 0);
	out("{\"cmd\":\"ready\",\"pid\":%d}", (int)getpid());
	for (;;) {
		/* stdin is fd 0 and is read with read(): one line at a time, no stdio buffer fd */
		size_t n = 0;
		for (;;) {
			char ch;
			ssize_t r = read(0, &ch, 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 0;
			if (ch == '\n')
				break;
			if (n < sizeof line - 1)
				line[n++] = ch;
		}
		line[n] = 0;
		char *argv[64];
		int argc = 0;
		for (char *t = strtok(line, " "); t && argc < 64; t = strtok(NULL, " "))
			argv[argc++] = t;
		if (argc == 0)
			continue;
		const char *c = argv[0];
		int a1 = argc > 1 ? atoi(argv[1]) : 0, a2 = argc > 2 ? atoi(argv[2]) : 0;
		if (!strcmp(c, "listen") && argc > 1) {
			struct sockaddr_storage ss;
			socklen_t len;
			if (parse_hostport(argv[1], &ss, &len) < 0) {
				out("{\"cmd\":\"listen\",\"ret\":-1,\"errno\":\"bad address\"}");
				continue;
			}
			int nb = argc > 2 && !strcmp(argv[2], "nb");
			int fd = socket(ss.ss_family, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0), one = 1;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
			int r = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&ss, len);
			if (r == 0)
				r = listen(fd, 128);
			int e = errno;
			struct sockaddr_storage b;
			socklen_t bl = sizeof b;
			getsockname(fd, (struct sockaddr *)&b, &bl);
			int port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
							       : ((struct sockaddr_in *)&b)->sin_port);
			out("{\"cmd\":\"listen\",\"ret\":%d,\"errno\":\"%s\",\"fd\":%d,\"port\":%d}", r, ename(r, e), fd,
			    port);
		} else if (!strcmp(c, "accept")) {
			do_accept(a1, 0, "accept");
		} else if (!strcmp(c, "accept_nb")) {
			do_accept(a1, SOCK_NONBLOCK, "accept_nb");
		} else if (!strcmp(c, "read")) {
			do_read(a1);
		} else if (!strcmp(c, "close")) {
			int r = close(a1), e = errno;
			out("{\"cmd\":\"close\",\"ret\":%d,\"errno\":\"%s\"}", r, ename(r, e));
		} else if (!strcmp(c, "nofile")) {
			struct rlimit rl;
			getrlimit(RLIMIT_NOFILE, &rl);
			rl.rlim_cur = (rlim_t)a1;
			int r = setrlimit(RLIMIT_NOFILE, &rl), e = errno;
			out("{\"cmd\":\"nofile\",\"ret\":%d,\"errno\":\"%s\"}", r, ename(r, e));
		} else if (!strcmp(c, "fill")) {
			int k = 0, fd, e;
			while ((fd = open("/dev/null", O_RDONLY)) >= 0 && nfilled < 65536) {
				filled[nfilled++] = fd;
				k++;
			}
			e = errno;
			out("{\"cmd\":\"fill\",\"opened\":%d,\"errno\":\"%s\"}", k, ename(-1, e));
		} else if (!strcmp(c, "unfill")) {
			int k = argc > 1 ? a1 : nfilled;
			for (int i = 0; i < k && nfilled > 0; i++)
				close(filled[--nfilled]);
			out("{\"cmd\":\"unfill\",\"left\":%d}", nfilled);
		} else if (!strcmp(c, "open")) {
			char buf[4096];
			size_t o = 0;
			buf[0] = 0;
			for (int i = 0; i < a1; i++) {
				int fd = open("/dev/null", O_RDONLY);
				o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", fd);
			}
			out("{\"cmd\":\"open\",\"fds\":[%s]}", buf);
		} else if (!strcmp(c, "alive")) {
			char buf[8192];
			size_t o = 0;
			buf[0] = 0;
			for (int i = 1; i < argc; i++) {
				int fd = atoi(argv[i]);
				char p[64], t[256] = "";
				snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
				ssize_t l = readlink(p, t, sizeof t - 1);
				t[l > 0 ? l : 0] = 0;
				o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"%d\":\"%s\"", i > 1 ? "," : "", fd,
						      fcntl(fd, F_GETFD) < 0 ? "closed" : t);
			}
			out("{\"cmd\":\"alive\",\"fds\":{%s}}", buf);
		} else if (!strcmp(c, "fds")) {
			list_fds();
		} else if (!strcmp(c, "sig")) {
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = on_alarm;
			sa.sa_flags = argc > 1 && !strcmp(argv[1], "restart") ? SA_RESTART : 0;
			int r = sigaction(SIGALRM, &sa, NULL), e = errno;
			out("{\"cmd\":\"sig\",\"ret\":%d,\"errno\":\"%s\"}", r, ename(r, e));
		} else if (!strcmp(c, "alarm")) {
			struct itimerval it = {{0, 0}, {a1 / 1000, (a1 % 1000) * 1000}};
			int r = setitimer(ITIMER_REAL, &it, NULL), e = errno;
			out("{\"cmd\":\"alarm\",\"ret\":%d,\"errno\":\"%s\"}", r, ename(r, e));
		} else if (!strcmp(c, "closer")) {
			struct closer *cl = malloc(sizeof *cl);
			pthread_t t;
			cl->fd = a1;
			cl->ms = a2;
			pthread_create(&t, NULL, closer_main, cl);
			pthread_detach(t);
		} else if (!strcmp(c, "closeall") && argc > 1) {
			closeall(argv[1]);
		} else if (!strcmp(c, "exit")) {
			out("{\"cmd\":\"exit\"}");
			return 0;
		} else {
			out("{\"cmd\":\"unknown\",\"line\":\"%s\"}", c);
		}
	}
}
