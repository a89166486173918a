/* Counters for node_exporter's textfile collector (PROXYSHIM_STATS=/path/file.prom, "%p" in
 * the name becoming the pid for prefork servers): written to a temporary name and renamed, at
 * most once a second by a small thread of the shim's and once more at exit. Labels never
 * carry a client address. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
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

static void write_file(void)
{
	const struct shim_config *c = shim_config();
	char path[300], tmp[320], buf[8192];
	const char *pct;
	size_t n = 0;
	int fd, pid = (int)getpid();

	if ((pct = strstr(c->stats_path, "%p")) != NULL)
		snprintf(path, sizeof(path), "%.*s%d%s", (int)(pct - c->stats_path), c->stats_path, pid,
			 pct + 2);
	else
		snprintf(path, sizeof(path), "%s", c->stats_path);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, pid);

	n += (size_t)snprintf(buf + n, sizeof(buf) - n,
			      "# HELP proxyshim_connections_total Trusted and untrusted connections on covered listeners, by outcome.\n"
			      "# TYPE proxyshim_connections_total counter\n");
	for (int r = 0; r < SHIM_R_MAX; r++)
		for (int why = 0; why < SHIM_REASON_MAX; why++)
			for (int v = 0; v < 3; v++) {
				uint64_t k = atomic_load(&g_counts[r][why][v]);
				if (k == 0 || n >= sizeof(buf) - 200)
					continue;
				n += (size_t)snprintf(buf + n, sizeof(buf) - n,
						      "proxyshim_connections_total{pid=\"%d\",result=\"%s\",reason=\"%s\",version=\"%s\"} %llu\n",
						      pid, result_names[r], reason_names[why],
						      v == 0 ? "none" : v == 1 ? "1" : "2", (unsigned long long)k);
			}
	n += (size_t)snprintf(buf + n, sizeof(buf) - n,
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
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, buf, n) != (ssize_t)n) {
		real_close(fd);
		unlink(tmp);
		return;
	}
	real_close(fd);
	if (rename(tmp, path) < 0)
		unlink(tmp);
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
	/* In the program's thread, under no hook (exit()): keeps errno itself. */
	int saved = errno;
	if (atomic_load(&g_started))
		write_file();
	errno = saved;
}

static void start(void)
{
	static _Atomic bool registered;
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	bool no = false;

	if (!atomic_compare_exchange_strong(&g_started, &no, true))
		return;
	if (!atomic_exchange(&registered, true))
		atexit(at_exit);
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

void shim_stats_touch(void)
{
	if (shim_config()->stats_path[0] != '\0')
		atomic_store_explicit(&g_dirty, true, memory_order_relaxed);
}

void shim_stats_atfork_child(void)
{
	/* The writer thread stayed in the parent; this process counts, and writes, its own. */
	atomic_store(&g_started, false);
	memset((void *)g_counts, 0, sizeof(g_counts));
	atomic_store(&g_header_bytes, 0);
	atomic_store(&g_log_dropped, 0);
}
