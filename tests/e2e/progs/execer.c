/* execer: accepts one connection, moves it to fd 0 and runs itself again as a child through
 * one exec function (as sshd and inetd-style servers do); the child reports what it sees.
 *
 * Parent: execer --how HOW [--listen HOST:PORT] [--replace dup2|raw] [--middle] [--child-read]
 *   HOW: execv execvp execve execvpe execl execlp execle fexecve posix_spawn posix_spawnp,
 *   or system (system() runs "execer --child ..." through /bin/sh, found through PATH).
 *   Prints "listening PORT", accepts, dup2()s the connection to 0 and closes the original.
 *   Before the real exec it makes the same call fail (a path that does not exist) and reports
 *   whether the caller's environ changed; after posix_spawn*, it waits and reports again.
 *   --replace dup2: a socketpair end is put over fd 0 with dup2() before the exec.
 *   --replace raw:  the same with the raw dup3 system call, behind the shim's back.
 *   --middle: the exec runs an intermediate image without LD_PRELOAD (see --as-middle).
 *   --hold N: first accept N connections and keep them open (inheritable) through the exec,
 *   as a server holding many clients does when it runs a helper; then the one for fd 0.
 *   --spawn-dup2 cloexec|keep: posix_spawn*: the connection stays on its own fd (close-on-exec
 *   or not) and a file action, posix_spawn_file_actions_adddup2(fd, 0), makes it the child's 0.
 *   The p-variants find "execer" through PATH: the tests put build/progs on it.
 * Middle: execer --as-middle --preload LIB [--replace samepeer] [child options]
 *   Reports whether PROXYSHIM_HANDOFF reached it, optionally puts over fd 0 another TCP
 *   connection whose peer is the very same IP and port (bound with SO_REUSEPORT), then execs
 *   the child with LD_PRELOAD=LIB again and the environment otherwise as it got it.
 * Child: execer --child [--child-read]
 *   Reports getpeername() of 0 and of dup(0), getsockname() of 0, its whole environ, and with
 *   --child-read the bytes read from fd 0 until EOF (read first, then getpeername).
 * Each role prints one JSON line with "role". */
#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common.h"

extern char **environ;

static const char *g_self;

static void out_environ(struct out *o)
{
	out_f(o, ",\"environ\":[");
	for (size_t i = 0; environ && environ[i]; i++) {
		if (i)
			out_f(o, ",");
		out_str(o, environ[i]);
	}
	out_f(o, "]");
}

static bool env_has_handoff(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		if (!strncmp(env[i], "PROXYSHIM_HANDOFF=", 18))
			return true;
	return false;
}

static int child(bool do_read)
{
	struct out o = {0};
	unsigned char buf[4096];
	unsigned char *all = NULL;
	size_t total = 0;
	int err = 0;

	out_f(&o, "{\"role\":\"child\",\"pid\":%d", (int)getpid());
	out_f(&o, ",\"handoff_env\":%s", env_has_handoff(environ) ? "true" : "false");
	out_environ(&o);
	if (do_read) {
		struct out ready = {0};
		out_f(&ready, "child ready");
		out_line(&ready);
		free(ready.buf);
		for (;;) {
			ssize_t r = read(0, buf, sizeof(buf));
			if (r > 0) {
				all = realloc(all, total + (size_t)r);
				if (!all)
					return 3;
				memcpy(all + total, buf, (size_t)r);
				total += (size_t)r;
				continue;
			}
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				err = errno;
			break;
		}
		out_f(&o, ",\"bytes\":%zu,\"hex\":", total);
		out_hex(&o, all, total);
		out_f(&o, ",\"read_error\":\"%s\"", errname(err));
	}
	out_f(&o, ",\"peer0\":");
	out_name(&o, 0, 1);
	int d = dup(0);
	out_f(&o, ",\"peer_dup\":");
	out_name(&o, d, 1);
	out_f(&o, ",\"local0\":");
	out_name(&o, 0, 0);
	out_f(&o, "}");
	out_line(&o);
	return 0;
}

/* Another connection to a listener of our own from the very address fd 0's peer has. */
static int same_peer_socket(void)
{
	struct sockaddr_storage peer, l;
	socklen_t pl = sizeof(peer), ll = sizeof(l);
	int one = 1;
	if (getpeername(0, (struct sockaddr *)&peer, &pl) < 0)
		return -1;
	int lfd = socket(peer.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&l, 0, sizeof(l));
	l.ss_family = peer.ss_family;
	if (peer.ss_family == AF_INET) {
		((struct sockaddr_in *)&l)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ll = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)&l)->sin6_addr = in6addr_loopback;
		ll = sizeof(struct sockaddr_in6);
	}
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&l, ll) < 0 || listen(lfd, 1) < 0)
		return -1;
	ll = sizeof(l);
	getsockname(lfd, (struct sockaddr *)&l, &ll);
	int c = socket(peer.ss_family, SOCK_STREAM, 0); /* stays open in the child */
	setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(c, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(c, (struct sockaddr *)&peer, pl) < 0) {
		perror("execer: bind same peer");
		return -1;
	}
	if (connect(c, (struct sockaddr *)&l, ll) < 0)
		return -1;
	int s = accept(lfd, NULL, NULL);
	close(lfd);
	if (s < 0 || dup2(s, 0) < 0)
		return -1;
	close(s);
	return 0;
}

static int middle(const char *preload, const char *replace, char **child_argv)
{
	struct out o = {0};
	out_f(&o, "{\"role\":\"middle\",\"handoff_env\":%s", env_has_handoff(environ) ? "true" : "false");
	out_f(&o, ",\"peer0_before\":");
	out_name(&o, 0, 1);
	if (replace && !strcmp(replace, "samepeer")) {
		int r = same_peer_socket();
		out_f(&o, ",\"replaced\":%s,\"peer0_after\":", r == 0 ? "true" : "false");
		out_name(&o, 0, 1);
	}
	out_f(&o, "}");
	out_line(&o);
	if (setenv("LD_PRELOAD", preload, 1) < 0)
		return 3;
	execvp(g_self, child_argv);
	perror("execer: middle execvp");
	return 127;
}

/* environ as it is now: its pointer and every string pointer. */
struct envsnap {
	char **env;
	size_t n;
	char *p[512];
};

static void snap(struct envsnap *s)
{
	s->env = environ;
	for (s->n = 0; environ[s->n] && s->n < 512; s->n++)
		s->p[s->n] = environ[s->n];
}

static bool same(const struct envsnap *s)
{
	size_t n = 0;
	if (environ != s->env)
		return false;
	while (environ[n])
		n++;
	if (n != s->n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (environ[i] != s->p[i])
			return false;
	return !env_has_handoff(environ);
}

/* execle() with argv as a list: envp must follow the first NULL, so one call per length. */
static int execle_argv(const char *path, char *const a[], char *const envp[])
{
	size_t n = 0;
	while (a[n])
		n++;
	switch (n) {
	case 1: return execle(path, a[0], (char *)NULL, envp);
	case 2: return execle(path, a[0], a[1], (char *)NULL, envp);
	case 3: return execle(path, a[0], a[1], a[2], (char *)NULL, envp);
	case 4: return execle(path, a[0], a[1], a[2], a[3], (char *)NULL, envp);
	case 5: return execle(path, a[0], a[1], a[2], a[3], a[4], (char *)NULL, envp);
	case 6: return execle(path, a[0], a[1], a[2], a[3], a[4], a[5], (char *)NULL, envp);
	case 7: return execle(path, a[0], a[1], a[2], a[3], a[4], a[5], a[6], (char *)NULL, envp);
	default: errno = E2BIG; return -1;
	}
}

int main(int argc, char **argv)
{
	char def[] = "127.0.0.1:0";
	char *listen_at = def;
	const char *how = NULL, *replace = NULL, *preload = NULL, *spawn_dup2 = NULL;
	bool as_child = false, as_middle = false, via_middle = false, child_read = false;
	unsigned hold = 0;

	g_self = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if (!strcmp(a, "--listen") && has) listen_at = argv[++i];
		else if (!strcmp(a, "--how") && has) how = argv[++i];
		else if (!strcmp(a, "--replace") && has) replace = argv[++i];
		else if (!strcmp(a, "--preload") && has) preload = argv[++i];
		else if (!strcmp(a, "--spawn-dup2") && has) spawn_dup2 = argv[++i];
		else if (!strcmp(a, "--hold") && has) hold = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(a, "--middle")) via_middle = true;
		else if (!strcmp(a, "--as-middle")) as_middle = true;
		else if (!strcmp(a, "--child")) as_child = true;
		else if (!strcmp(a, "--child-read")) child_read = true;
		else {
			fprintf(stderr, "execer: unknown option %s\n", a);
			return 2;
		}
	}
	if (as_child)
		return child(child_read);

	/* What the next image runs: [self|execer] [--as-middle --preload LIB [--replace R]] --child [--child-read] */
	char *cargv[10] = {0};
	int n = 0;
	cargv[n++] = (char *)g_self;
	if (via_middle) {
		cargv[n++] = "--as-middle";
		cargv[n++] = "--preload";
		cargv[n++] = getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "";
		if (replace && !strcmp(replace, "samepeer")) {
			cargv[n++] = "--replace";
			cargv[n++] = "samepeer";
		}
	} else {
		cargv[n++] = "--child";
	}
	if (child_read)
		cargv[n++] = "--child-read";
	cargv[n] = NULL;

	if (as_middle) {
		char *chv[4] = {(char *)g_self, "--child", child_read ? "--child-read" : NULL, NULL};
		return middle(preload ? preload : "", replace, chv);
	}
	if (!how)
		return 2;

	const char *host;
	unsigned port;
	if (split_hostport(listen_at, &host, &port) < 0)
		return 2;
	int lfd = listen_on(host, port);
	if (lfd < 0)
		return 1;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	for (unsigned i = 0; i < hold; i++) {
		if (accept(lfd, NULL, NULL) < 0)
			return 1;
	}
	if (hold) {
		struct out h = {0};
		out_f(&h, "held %u", hold);
		out_line(&h);
		free(h.buf);
	}
	int c = accept(lfd, (struct sockaddr *)&ss, &sl);
	if (c < 0)
		return 1;
	close(lfd);
	struct out o = {0};
	out_f(&o, "{\"role\":\"parent\",\"how\":\"%s\",\"accept\":", how);
	out_sa(&o, (struct sockaddr *)&ss, sl);
	if (spawn_dup2) {
		if (!strcmp(spawn_dup2, "cloexec"))
			fcntl(c, F_SETFD, FD_CLOEXEC);
		else
			fcntl(c, F_SETFD, 0);
	} else if (c != 0) {
		dup2(c, 0);
		close(c);
	}
	if (replace && (!strcmp(replace, "dup2") || !strcmp(replace, "raw"))) {
		int sp[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
			return 1;
		if (!strcmp(replace, "dup2"))
			dup2(sp[0], 0);
		else
			syscall(SYS_dup3, sp[0], 0, 0);
		close(sp[0]); /* sp[1] stays open so fd 0 is a live socket */
	}

	/* The environment the next image gets: environ, minus LD_PRELOAD for the middle one. */
	char *envbuf[512];
	char **envp = environ;
	if (via_middle) {
		size_t k = 0;
		for (size_t i = 0; environ[i] && k < 511; i++)
			if (strncmp(environ[i], "LD_PRELOAD=", 11))
				envbuf[k++] = environ[i];
		envbuf[k] = NULL;
		envp = envbuf;
	}
	bool p_variant = !strcmp(how, "execvp") || !strcmp(how, "execvpe") ||
			 !strcmp(how, "execlp") || !strcmp(how, "posix_spawnp") || !strcmp(how, "system");
	const char *target = p_variant ? "execer" : g_self;
	const char *bad = p_variant ? "execer-does-not-exist" : "/nonexistent/execer";
	cargv[0] = (char *)target;

	/* The same call made to fail: the caller's environ must stay as it was. */
	struct envsnap s;
	snap(&s);
	int r = 0, e = 0;
	pid_t pid;
	if (!strcmp(how, "execv")) r = execv(bad, cargv);
	else if (!strcmp(how, "execvp")) r = execvp(bad, cargv);
	else if (!strcmp(how, "execve")) r = execve(bad, cargv, envp);
	else if (!strcmp(how, "execvpe")) r = execvpe(bad, cargv, envp);
	else if (!strcmp(how, "execl")) r = execl(bad, cargv[0], cargv[1], cargv[2], cargv[3], (char *)NULL);
	else if (!strcmp(how, "execlp")) r = execlp(bad, cargv[0], cargv[1], cargv[2], cargv[3], (char *)NULL);
	else if (!strcmp(how, "execle")) r = execle_argv(bad, cargv, envp);
	else if (!strcmp(how, "fexecve")) r = fexecve(-1, cargv, envp);
	else if (!strcmp(how, "posix_spawn")) r = (e = posix_spawn(&pid, bad, NULL, NULL, cargv, envp)) ? -1 : 0;
	else if (!strcmp(how, "posix_spawnp")) r = (e = posix_spawnp(&pid, bad, NULL, NULL, cargv, envp)) ? -1 : 0;
	else if (!strcmp(how, "system")) {
		errno = 0;
		r = system(bad);
	} else return 2;
	if (!e)
		e = errno;
	out_f(&o, ",\"failed_call\":{\"ret\":%d,\"errno\":\"%s\",\"environ_unchanged\":%s}", r,
	      errname(e), same(&s) ? "true" : "false");
	out_f(&o, ",\"handoff_env\":%s}", env_has_handoff(environ) ? "true" : "false");
	out_line(&o);

	if (!strcmp(how, "execv")) execv(target, cargv);
	else if (!strcmp(how, "execvp")) execvp(target, cargv);
	else if (!strcmp(how, "execve")) execve(target, cargv, envp);
	else if (!strcmp(how, "execvpe")) execvpe(target, cargv, envp);
	else if (!strcmp(how, "execl")) execl(target, cargv[0], cargv[1], cargv[2], cargv[3], cargv[4], cargv[5], cargv[6], (char *)NULL);
	else if (!strcmp(how, "execlp")) execlp(target, cargv[0], cargv[1], cargv[2], cargv[3], cargv[4], cargv[5], cargv[6], (char *)NULL);
	else if (!strcmp(how, "execle")) execle_argv(target, cargv, envp);
	else if (!strcmp(how, "fexecve")) {
		int xfd = open(g_self, O_RDONLY | O_CLOEXEC);
		fexecve(xfd, cargv, envp);
	} else if (!strcmp(how, "system")) {
		char cmd[512] = "";
		for (int i = 0; cargv[i]; i++) {
			strncat(cmd, cargv[i], sizeof(cmd) - strlen(cmd) - 2);
			strcat(cmd, " ");
		}
		snap(&s);
		int st = system(cmd);
		out_f(&o, "{\"role\":\"parent_after\",\"spawn\":\"0\",\"status\":%d,\"environ_unchanged\":%s,"
			  "\"handoff_env\":%s}", st, same(&s) ? "true" : "false",
		      env_has_handoff(environ) ? "true" : "false");
		out_line(&o);
		return 0;
	} else {
		int (*sp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			  const posix_spawnattr_t *, char *const[], char *const[]) =
			!strcmp(how, "posix_spawn") ? posix_spawn : posix_spawnp;
		posix_spawn_file_actions_t fa, *fap = NULL;
		if (spawn_dup2) {
			posix_spawn_file_actions_init(&fa);
			posix_spawn_file_actions_adddup2(&fa, c, 0);
			fap = &fa;
		}
		snap(&s);
		e = sp(&pid, target, fap, NULL, cargv, envp);
		int st = -1;
		if (!e)
			waitpid(pid, &st, 0);
		out_f(&o, "{\"role\":\"parent_after\",\"spawn\":\"%s\",\"status\":%d,\"environ_unchanged\":%s,"
			  "\"handoff_env\":%s}", errname(e), st, same(&s) ? "true" : "false",
		      env_has_handoff(environ) ? "true" : "false");
		out_line(&o);
		return 0;
	}
	out_f(&o, "{\"role\":\"parent\",\"exec_failed\":\"%s\"}", errname(errno));
	out_line(&o);
	return 127;
}
