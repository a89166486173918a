/* Counters for node_exporter's textfile collector (PROXYSHIM_STATS=/path/file.prom, "%p" in
 * the name becoming the pid for prefork servers): written to a temporary name and renamed, when
 * the process starts (every main series at 0, the build's version, whether the shim is active),
 * then at most once a second by a small thread of the shim's, started by the first change. A
 * process that ends through exit() removes its file (a gone process's counters would otherwise
 * stay in node_exporter forever); one killed by a signal, or ending in _exit(), leaves it.
 * Labels never carry a client address.
 *
 * One name without %p for several processes (prefork workers, a second instance, a helper run
 * with the same environment): the first keeps it; a process that finds it written by another
 * live process writes "name-PID.prom" instead, and says so at info. Overwriting each other's
 * counts every second, or warning and writing nothing, would both lose counts. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "sys.h"

_Atomic unsigned shim_parked_total;

/* pthread_create moved into libc under GLIBC_2.34; the old version is still there. (Not in a
 * static link, the supervisor's: there is no version to bind to.) */
#if defined(PROXYSHIM_STATIC)
#elif defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.17");
#endif

static const char *const result_names[SHIM_R_MAX] = {"rewritten", "local", "passed", "rejected",
						      "untrusted"};
static const char *const reason_names[SHIM_REASON_MAX] = {
	"none", "missing", "invalid", "version", "timeout", "eof", "overflow", "error", "nomem", "untrusted"};

static _Atomic uint64_t g_counts[SHIM_R_MAX][SHIM_REASON_MAX][3];
static _Atomic uint64_t g_header_bytes;
static _Atomic uint64_t g_log_dropped;
static _Atomic bool g_dirty;
static _Atomic bool g_started; /* the writer thread runs in this process */

const char *shim_reason_name(enum shim_reason r)
{
	return (unsigned)r < SHIM_REASON_MAX ? reason_names[r] : "error";
}

/* This process's file, decided at its first write; whether it wrote one, and whether a
 * failure was said. Guarded by g_busy, which the writer thread, the start, a first count and
 * exit take; reset in a new process. A flag, not a mutex: nothing to re-initialise in a
 * child, and pthread_mutex_trylock() would need glibc 2.34. */
static _Atomic bool g_busy;
static char g_path[300];
static bool g_closed; /* exit() ran: no more writes */
static _Atomic int g_file_pid; /* the process that wrote the file (0: none yet, or removed) */
static bool g_warned;

/* Each result's usual series, written at 0 from the start (dashboards and rate() see them
 * before the first connection); other combinations appear once counted. */
static bool main_series(int r, int why, int v)
{
	switch (r) {
	case SHIM_R_REWRITTEN:
	case SHIM_R_LOCAL:
		return why == SHIM_REASON_NONE && v != 0;
	case SHIM_R_PASSED:
		return why == SHIM_REASON_MISSING && v == 0;
	case SHIM_R_UNTRUSTED:
		return why == SHIM_REASON_NONE && v == 0;
	default:
		return why != SHIM_REASON_NONE && v == 0;
	}
}

/* The pid in the file at path, as its first pid="N" label says; 0 when none. */
static int writer_of(const char *path)
{
	char buf[1024];
	const char *q;
	ssize_t k;
	int fd = open(path, O_RDONLY | O_CLOEXEC), pid = 0;

	if (fd < 0)
		return 0;
	k = real_read(fd, buf, sizeof(buf) - 1);
	real_close(fd);
	if (k <= 0)
		return 0;
	buf[k] = '\0';
	if ((q = strstr(buf, "pid=\"")) == NULL)
		return 0;
	for (q += 5; *q >= '0' && *q <= '9' && pid < 100000000; q++)
		pid = pid * 10 + (*q - '0');
	return *q == '"' ? pid : 0;
}

/* Decides g_path: the name with %p made the pid; a name without %p is this process's unless
 * another live process wrote it, and then "name-PID.ext" is. Under g_busy. Returns the other
 * writer's pid when the name was taken, else 0. */
static int name_file(int pid)
{
	const char *name = shim_config()->stats_path, *pct = strstr(name, "%p"), *slash, *dot;
	int other;

	if (pct) {
		snprintf(g_path, sizeof(g_path), "%.*s%d%s", (int)(pct - name), name, pid, pct + 2);
		return 0;
	}
	snprintf(g_path, sizeof(g_path), "%s", name);
	other = writer_of(name);
	if (other <= 0 || other == pid || (kill(other, 0) < 0 && errno == ESRCH))
		return 0; /* none, an earlier program of this process (exec), or a stale file */
	slash = strrchr(name, '/');
	dot = strrchr(slash, '.');
	if (!dot || dot == slash + 1)
		dot = name + strlen(name);
	snprintf(g_path, sizeof(g_path), "%.*s-%d%s", (int)(dot - name), name, pid, dot);
	return other;
}

/* The file's text into buf; its length. */
static size_t render(char *buf, size_t cap, int pid)
{
	const struct shim_config *c = shim_config();
	size_t n = 0;

	n += (size_t)snprintf(buf + n, cap - n,
			      "# HELP proxyshim_build_info The proxyshim version this process runs, as a label.\n"
			      "# TYPE proxyshim_build_info gauge\n"
			      "proxyshim_build_info{pid=\"%d\",version=\"%s\"} 1\n"
			      "# HELP proxyshim_active Whether the shim takes PROXY headers in this process: 1, or 0 (PROXYSHIM_TRUSTED unset, a bad config file).\n"
			      "# TYPE proxyshim_active gauge\n"
			      "proxyshim_active{pid=\"%d\"} %d\n"
			      "# HELP proxyshim_connections_total Trusted and untrusted connections on covered listeners, by outcome.\n"
			      "# TYPE proxyshim_connections_total counter\n",
			      pid, PROXYSHIM_VERSION, pid, c->active ? 1 : 0);
	for (int r = 0; r < SHIM_R_MAX; r++)
		for (int why = 0; why < SHIM_REASON_MAX; why++)
			for (int v = 0; v < 3; v++) {
				uint64_t k = atomic_load(&g_counts[r][why][v]);
				if ((k == 0 && !main_series(r, why, v)) || n >= cap - 200)
					continue;
				n += (size_t)snprintf(buf + n, cap - n,
						      "proxyshim_connections_total{pid=\"%d\",result=\"%s\",reason=\"%s\",version=\"%s\"} %llu\n",
						      pid, result_names[r], reason_names[why],
						      v == 0 ? "none" : v == 1 ? "1" : "2", (unsigned long long)k);
			}
	n += (size_t)snprintf(buf + n, cap - n,
			      "# HELP proxyshim_header_bytes_total PROXY header bytes consumed.\n"
			      "# TYPE proxyshim_header_bytes_total counter\n"
			      "proxyshim_header_bytes_total{pid=\"%d\"} %llu\n"
			      "# HELP proxyshim_parked_connections Connections whose header is still incomplete.\n"
			      "# TYPE proxyshim_parked_connections gauge\n"
			      "proxyshim_parked_connections{pid=\"%d\"} %u\n"
			      "# HELP proxyshim_log_lines_dropped_total Log lines lost: stderr was a network socket and /dev/log was missing, or the write failed.\n"
			      "# TYPE proxyshim_log_lines_dropped_total counter\n"
			      "proxyshim_log_lines_dropped_total{pid=\"%d\"} %llu\n",
			      pid, (unsigned long long)atomic_load(&g_header_bytes), pid,
			      atomic_load(&shim_parked_total), pid,
			      (unsigned long long)atomic_load(&g_log_dropped));
	return n < cap ? n : cap - 1;
}

static bool try_lock(void)
{
	bool no = false;
	return atomic_compare_exchange_strong(&g_busy, &no, true);
}

static void unlock(void)
{
	atomic_store(&g_busy, false);
}

/* Under g_busy: 0, or the errno of the step that failed. */
static int write_locked(int pid)
{
	char tmp[320], buf[8192];
	size_t n = render(buf, sizeof(buf), pid);
	int fd, err = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", g_path, pid);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return errno;
	if (write(fd, buf, n) != (ssize_t)n)
		err = errno ? errno : ENOSPC;
	real_close(fd);
	if (!err && rename(tmp, g_path) < 0)
		err = errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	atomic_store(&g_file_pid, pid);
	return 0;
}

/* Writes this process's file now. A failure is said once per process, outside the lock (a
 * log line that has nowhere to go is counted, which comes back here). With the flag held
 * elsewhere (the writer thread is writing; a signal handler's count interrupted a write of
 * its own thread) the write is left to the writer thread's next turn. */
static void write_file(void)
{
	char path[sizeof(g_path)];
	int pid = (int)getpid(), other = 0, err = 0;
	bool say;

	if (!try_lock()) {
		atomic_store(&g_dirty, true);
		return;
	}
	if (g_closed) {
		unlock();
		return;
	}
	if (!g_path[0])
		other = name_file(pid);
	err = write_locked(pid);
	say = err && !g_warned;
	if (say)
		g_warned = true;
	memcpy(path, g_path, sizeof(path));
	unlock();
	if (other)
		shim_log(SHIM_LOG_INFO, "event=stats path=%s note=\"process %d writes %s: this process writes its own file\"",
			 path, other, shim_config()->stats_path);
	if (say)
		shim_log(SHIM_LOG_WARN, "event=stats path=%s errno=%d error=\"%s\"", path, err, strerror(err));
}

/* The shim's own thread: its errno is nobody else's, nothing to keep. */
static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec one = {1, 0};
		nanosleep(&one, NULL);
		if (atomic_exchange(&g_dirty, false))
			write_file();
	}
	return NULL;
}

static void at_exit(void)
{
	/* In the program's thread, under no hook (exit()): keeps errno itself. Removes this
	 * process's file if it is still its own (its pid in the labels: nobody replaced it; no
	 * stat(), whose symbol would need glibc 2.33), and stops the writer thread from making
	 * it again. */
	int saved = errno;

	shim_proc_check(); /* a child that never wrote has nothing of the parent's to remove */
	/* The writer thread's write takes a few system calls; 2 s bounds a wait for one that
	 * cannot end (exit() from a handler that interrupted this thread's own write). */
	for (int i = 0; !try_lock(); i++) {
		struct timespec pause = {0, 200000};
		if (i == 10000)
			goto out;
		nanosleep(&pause, NULL);
	}
	g_closed = true;
	if (atomic_load(&g_file_pid) == (int)getpid() && writer_of(g_path) == (int)getpid())
		unlink(g_path);
	atomic_store(&g_file_pid, 0);
	unlock();
out:
	errno = saved;
}

void shim_stats_exit(void)
{
	int mine = atomic_load(&g_file_pid);
	/* Read-only until it is sure to be the writer itself: a vfork() child runs in this
	 * memory, and changes nothing of it. */
	if (mine == 0 || mine != (int)syscall(SYS_getpid))
		return;
	at_exit();
}

static void at_exit_once(void)
{
	static _Atomic bool registered;
	if (!atomic_exchange(&registered, true))
		atexit(at_exit);
}

static void start(void)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	bool no = false;

	if (!atomic_compare_exchange_strong(&g_started, &no, true))
		return;
	at_exit_once();
	/* The writer takes no signal of the program's. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old); /* per thread on Linux; older symbol than pthread_sigmask */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, writer, NULL) != 0)
		atomic_store(&g_started, false);
	pthread_attr_destroy(&attr);
	sigprocmask(SIG_SETMASK, &old, NULL);
	write_file();
}

/* Before counting: a new process's first count is its own. The reset is registered with
 * proc.c on first use (nothing to reset before), so proc.c needs nothing of this file. */
static _Atomic bool g_registered;
static inline void this_process(void)
{
	if (SHIM_UNLIKELY(!atomic_load_explicit(&g_registered, memory_order_relaxed))) {
		shim_proc_on_new(shim_stats_atfork_child);
		atomic_store(&g_registered, true);
	}
	shim_proc_check();
}

void shim_stat(enum shim_result r, enum shim_reason why, unsigned version, size_t header_bytes)
{
	this_process();
	if (version > 2)
		version = 0;
	atomic_fetch_add_explicit(&g_counts[r][why][version], 1, memory_order_relaxed);
	if (header_bytes)
		atomic_fetch_add_explicit(&g_header_bytes, header_bytes, memory_order_relaxed);
	shim_stats_changed();
}

void shim_stat_log_dropped(void)
{
	this_process();
	atomic_fetch_add_explicit(&g_log_dropped, 1, memory_order_relaxed);
	shim_stats_changed();
}

void shim_stats_changed(void)
{
	if (SHIM_LIKELY(shim_config()->stats_path[0] == '\0'))
		return;
	this_process(); /* a child counts, and writes, its own */
	atomic_store_explicit(&g_dirty, true, memory_order_relaxed);
	if (SHIM_UNLIKELY(!atomic_load_explicit(&g_started, memory_order_relaxed)))
		start(); /* may change errno: the hooks above keep the program's */
}

void shim_stats_start(void)
{
	if (shim_config()->stats_path[0] == '\0')
		return;
	this_process();
	at_exit_once();
	write_file();
}

void shim_stats_touch(void)
{
	if (shim_config()->stats_path[0] != '\0')
		atomic_store_explicit(&g_dirty, true, memory_order_relaxed);
}

void shim_stats_atfork_child(void)
{
	/* The writer thread stayed in the parent; this process counts, and writes, its own file,
	 * named at its first write. The parent's writer may have been writing (g_busy). */
	atomic_store(&g_busy, false);
	g_path[0] = '\0';
	atomic_store(&g_file_pid, 0);
	g_closed = false;
	g_warned = false;
	atomic_store(&g_started, false);
	memset((void *)g_counts, 0, sizeof(g_counts));
	atomic_store(&g_header_bytes, 0);
	atomic_store(&g_log_dropped, 0);
}
