/* The configuration of this process: the settings (core/settings.c: PROXYSHIM_* environment
 * variables and the configuration file) read once, validated, then frozen. A bad value in the
 * environment stops the process before main() with one line naming the variable; a bad file
 * refuses listen() instead. */
#include <stdio.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "sys.h"

static struct shim_config g_cfg;
static struct shim_settings_src g_src;
static _Atomic int g_state; /* 0 unread, 1 being read, 2 frozen */

/* The file is read through real_read: the front-end sets it now if it has not yet (the
 * configuration may be read before the front-end's start). */
static ssize_t file_read(int fd, void *buf, size_t n)
{
	shim_resolve();
	return real_read(fd, buf, n);
}

static int file_close(int fd)
{
	return real_close(fd);
}

static void load(void)
{
	const struct shim_settings_io io = {
		.default_file = shim_settings[SHIM_S_CONFIG].dflt,
		.secure = getauxval(AT_SECURE) != 0,
		.read = file_read,
		.close = file_close,
	};
	if (shim_settings_load(&g_cfg, &g_src, environ, &io) < 0) {
		fprintf(stderr, "proxyshim: invalid %s=\"%s\": %s\n", g_src.err.name, g_src.err.value,
			g_src.err.why);
		fflush(stderr);
		_exit(1);
	}
}

/* Once, without pthread_once (which would tie the library to glibc 2.34 and later). */
const struct shim_config *shim_config(void)
{
	int st = atomic_load_explicit(&g_state, memory_order_acquire);
	if (SHIM_LIKELY(st == 2))
		return &g_cfg;
	st = 0;
	if (atomic_compare_exchange_strong(&g_state, &st, 1)) {
		load();
		atomic_store_explicit(&g_state, 2, memory_order_release);
	} else {
		while (atomic_load_explicit(&g_state, memory_order_acquire) != 2) {
			struct timespec pause = {0, 100000};
			nanosleep(&pause, NULL);
		}
	}
	return &g_cfg;
}

const struct shim_settings_src *shim_config_src(void)
{
	shim_config();
	return &g_src;
}
