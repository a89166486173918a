/* proxyshim-supervise PATH -- ARGV...: runs PATH under a seccomp filter whose trapped calls
 * (accept, accept4, getpeername, listen) this process serves (notif.c), for programs LD_PRELOAD
 * never reaches: static and Go programs. Run by the wrapper (proxyshim --supervise), which has
 * set the PROXYSHIM_* variables; the settings are read from them exactly as the library does.
 * It fails closed: every piece the mode needs is probed before PATH runs, and if one is refused
 * it exits 126 naming it, the errno and the fix; PATH never runs with headers reaching it. */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/sys.h"
#include "supervise.h"

#define EXIT_CANNOT_RUN 126
#define X32_BIT 0x40000000u
/* i386 numbers: the filter denies what it cannot serve for a 32-bit program. */
#define I386_SOCKETCALL 102
#define I386_ACCEPT4 364
#define I386_GETPEERNAME 368

/* Signals passed on to COMMAND. */
static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH, SIGCONT, SIGALRM};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	char buf[1024];
	int n = snprintf(buf, sizeof(buf), "proxyshim: ");
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", buf);
	fflush(stderr);
}

/* What to do about a refused piece. */
static const char *fix_for(const char *what, int e)
{
	if (strstr(what, "pidfd_getfd") && e == EPERM)
		return "a seccomp profile refuses pidfd_getfd (Docker's and containerd's default profiles "
		       "allow it only with CAP_SYS_PTRACE): run with a profile that allows pidfd_getfd, "
		       "process_vm_readv and process_vm_writev (or Unconfined), or grant CAP_SYS_PTRACE";
	if (strstr(what, "pidfd") && e == ENOSYS)
		return "the kernel lacks pidfd_open/pidfd_getfd (Linux 5.6): upgrade it";
	if (strstr(what, "ADDFD") && e == EINVAL)
		return "the kernel lacks SECCOMP_ADDFD_FLAG_SEND (Linux 5.14): upgrade it";
	if (strstr(what, "pidfd_getfd") || strstr(what, "mem"))
		return "the supervisor may not access the program (ptrace access mode: Yama's "
		       "kernel.yama.ptrace_scope, or an LSM): allow it, or grant CAP_SYS_PTRACE";
	if (strstr(what, "seccomp") && e == EBUSY)
		return "another seccomp user-notification listener already supervises this process "
		       "tree (one per tree): run proxyshim outside it";
	if (strstr(what, "seccomp"))
		return "the kernel or a security policy refuses seccomp filters with a listener "
		       "(Linux 5.0, CONFIG_SECCOMP_FILTER)";
	return "see proxyshim(1), supervised mode";
}

static void refuse(const char *what, int e) __attribute__((noreturn));
static void refuse(const char *what, int e)
{
	say("cannot supervise: %s failed: %s (%s); %s. The program was not run, so that PROXY "
	    "headers never reach it as data", what, strerror(e), strerrorname_np(e) ? strerrorname_np(e) : "?",
	    fix_for(what, e));
	exit(EXIT_CANNOT_RUN);
}

#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define DENY BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define NOTIFY BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF)
#define IS(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1)

/* x86_64 calls of the x86_64 ABI go to the supervisor; the same calls of the x32 ABI and of
 * i386 (socketcall, accept4, getpeername) are refused: it serves the x86_64 ABI only. */
static int install_filter(bool listen_too)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 8, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		IS(I386_SOCKETCALL), DENY,
		IS(I386_ACCEPT4), DENY,
		IS(I386_GETPEERNAME), DENY,
		ALLOW,
		/* x86_64 */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		IS(SYS_accept), NOTIFY,
		IS(SYS_accept4), NOTIFY,
		IS(SYS_getpeername), NOTIFY,
		IS(listen_too ? SYS_listen : 0xFFFFFFFFu), NOTIFY,
		/* PROXYSHIM_LOCAL_ADDR=header: the header's destination. */
		IS(shim_config()->local_from_header ? SYS_getsockname : 0xFFFFFFFFu), NOTIFY,
		IS(SYS_io_uring_setup), NOTIFY,
		IS(X32_BIT | SYS_accept), DENY,
		IS(X32_BIT | SYS_accept4), DENY,
		IS(X32_BIT | SYS_getpeername), DENY,
		ALLOW,
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

/* Sends fd (or, fd < 0, the errno e alone) over the socketpair. */
static void send_fd(int sock, int fd, int e)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&e, sizeof(e)};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	memset(cbuf, 0, sizeof(cbuf));
	if (fd >= 0) {
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (sendmsg(sock, &m, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

/* The child: the filter, its listener to the parent, the probe, then COMMAND. */
static void child_main(int sock, pid_t parent, const sigset_t *mask, bool listen_too, const char *path,
		       char **argv) __attribute__((noreturn));
static void child_main(int sock, pid_t parent, const sigset_t *mask, bool listen_too, const char *path,
		       char **argv)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	long r;
	int nfd;

	/* If the supervisor dies, trapped calls would fail with ENOSYS: the program goes too. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(EXIT_CANNOT_RUN);
	sigprocmask(SIG_SETMASK, mask, NULL);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		send_fd(sock, -1, errno);
		_exit(EXIT_CANNOT_RUN);
	}
	nfd = install_filter(listen_too);
	if (nfd < 0) {
		send_fd(sock, -1, errno);
		_exit(EXIT_CANNOT_RUN);
	}
	send_fd(sock, nfd, 0);
	close(nfd);
	/* The probe: a trapped call the parent answers with every piece a real one uses. */
	memset(&ss, 0, sizeof(ss));
	r = syscall(SYS_getpeername, SV_PROBE_FD, &ss, &sl);
	if (r < 0)
		_exit(EXIT_CANNOT_RUN); /* the parent says why */
	close((int)r);
	if (sl != sizeof(struct sockaddr_in) || ss.ss_family != AF_INET ||
	    ((struct sockaddr_in *)&ss)->sin_port != htons(SV_PROBE_PORT)) {
		say("cannot supervise: the probe's address did not arrive; the program was not run");
		_exit(EXIT_CANNOT_RUN);
	}
	close(sock);
	execv(path, argv);
	say("%s: %s", path, strerror(errno));
	_exit(errno == ENOENT ? 127 : EXIT_CANNOT_RUN);
}

/* The listener fd the child sent, or refuses with the errno it sent. */
static int receive_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	int e = 0, fd = -1;
	struct iovec iov = {&e, sizeof(e)};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct pollfd p = {.fd = sock, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, 10000) <= 0)
		refuse("waiting for the child's seccomp listener", ETIMEDOUT);
	n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		refuse("receiving the child's seccomp listener", n < 0 ? errno : EPIPE);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	if (fd < 0)
		refuse(e == 0 ? "receiving the child's seccomp listener"
			      : "prctl(PR_SET_NO_NEW_PRIVS) or seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)",
		       e ? e : EPROTO);
	return fd;
}

/* A signal for the program: to COMMAND while it runs, then to the processes left of its tree
 * (our children now: orphans come to the subreaper). */
static void forward(int sig, pid_t child)
{
	char path[64], buf[4096];
	ssize_t n;
	int fd;

	if (child > 0) {
		kill(child, sig);
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *q = buf; *q;) {
		long pid = strtol(q, &q, 10);
		if (pid > 0)
			kill((pid_t)pid, sig);
		while (*q == ' ' || *q == '\n')
			q++;
	}
}

/* Exits as COMMAND did. */
static void exit_like(int status) __attribute__((noreturn));
static void exit_like(int status)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		sigset_t s;
		signal(sig, SIG_DFL);
		sigemptyset(&s);
		sigaddset(&s, sig);
		sigprocmask(SIG_UNBLOCK, &s, NULL);
		prctl(PR_SET_DUMPABLE, 0); /* no core of the supervisor for the program's crash */
		raise(sig);
		_exit(128 + sig);
	}
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

int main(int argc, char **argv)
{
	const struct shim_config *c;
	sigset_t block, old;
	int sv[2], sfd, nfd;
	const char *path, *what;
	pid_t child;
	int rc;

	if (argc > 1 && strcmp(argv[1], "--no-io-uring") == 0) {
		sv_notif_refuse_io_uring();
		argv++;
		argc--;
	}
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: proxyshim-supervise [--no-io-uring] PATH -- ARGV0 [ARGS...] "
				"(run by proxyshim --supervise)\n");
		return 2;
	}
	path = argv[1];
	shim_resolve();
	c = shim_config(); /* a bad value: one line naming it, exit 1 */
	if (c->file_error[0]) {
		say("%s", c->file_error);
		return 1;
	}
	if (!c->active) {
		/* As the library: with no trusted peer no header is ever taken. */
		shim_log(SHIM_LOG_WARN, "event=inactive reason=\"%s\" supervise=no",
			 c->inactive_reason ? c->inactive_reason : "");
		execv(path, argv + 3);
		say("%s: %s", path, strerror(errno));
		return errno == ENOENT ? 127 : EXIT_CANNOT_RUN;
	}
	if (c->keep_tlvs)
		shim_log(SHIM_LOG_WARN, "event=supervise note=\"PROXYSHIM_KEEP_TLVS: proxyshim_tlv() is the "
					"library's; a supervised program has no TLVs\"");
	if (c->lazy)
		shim_log(SHIM_LOG_WARN, "event=supervise note=\"PROXYSHIM_CONSUME=lazy is taken as eager: "
					"the header is read when accept() is called\"");

	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&block, forwarded[i]);
	sigprocmask(SIG_BLOCK, &block, &old);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &block, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		refuse("signalfd", errno);
	/* Orphans of COMMAND's tree come to us to be reaped (PID 1 does this in a container). */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		refuse("socketpair", errno);
	pid_t me = getpid();
	child = fork();
	if (child < 0)
		refuse("fork", errno);
	if (child == 0) {
		close(sv[0]);
		close(sfd);
		signal(SIGPIPE, SIG_DFL);
		child_main(sv[1], me, &old, c->defer_accept && !c->lazy, path, argv + 3);
	}
	close(sv[1]);
	nfd = receive_fd(sv[0]);
	sv_notif_setup(nfd, c->defer_accept);
	rc = sv_probe_serve(child, sv[1], &what);
	if (rc < 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		refuse(what, -rc);
	}
	close(sv[0]);
	shim_log(SHIM_LOG_INFO, "event=supervise child=%d memory=%s thread_pidfd=%d sync_wake=%d", (int)child,
		 sv_mem_uses_proc() ? "/proc/pid/mem" : "process_vm", sv_pidfd_of_thread(), sv_sync_wake());

	struct pollfd p[2 + 1024];
	bool nfd_open = true, child_done = false;
	int child_status = 0;
	for (;;) {
		int timeout, n;

		p[0] = (struct pollfd){.fd = nfd_open ? nfd : -1, .events = POLLIN};
		p[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
		n = sv_notif_pollfds(p + 2, 1024, &timeout);
		if (poll(p, (nfds_t)(2 + n), timeout) < 0 && errno != EINTR)
			refuse("poll", errno);
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo != SIGCHLD) {
					forward((int)si.ssi_signo, child_done ? 0 : child);
					continue;
				}
				for (;;) {
					int st;
					pid_t w = waitpid(-1, &st, WNOHANG);
					if (w == 0)
						break;
					if (w < 0) { /* no child left at all */
						if (child_done)
							exit_like(child_status);
						break;
					}
					if (w == child) {
						child_done = true;
						child_status = st;
					}
				}
			}
		}
		if (p[0].revents & POLLIN)
			sv_notif_receive();
		else if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL))
			nfd_open = false; /* no process is left under the filter */
		/* COMMAND has exited: done once nothing under the filter is left (a program that
		 * daemonized goes on being served meanwhile). */
		if (child_done && !nfd_open) {
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			exit_like(child_status);
		}
		sv_notif_resume(p + 2, n);
	}
}
