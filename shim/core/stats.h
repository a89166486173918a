/* Counters (stats.c), written to PROXYSHIM_STATS at start, then by a thread of their own;
 * removed at exit. */
#ifndef SHIM_CORE_STATS_H
#define SHIM_CORE_STATS_H

#include "base.h"

enum shim_result { SHIM_R_REWRITTEN, SHIM_R_LOCAL, SHIM_R_PASSED, SHIM_R_REJECTED, SHIM_R_UNTRUSTED, SHIM_R_MAX };
enum shim_reason {
	SHIM_REASON_NONE, SHIM_REASON_MISSING, SHIM_REASON_INVALID, SHIM_REASON_VERSION,
	SHIM_REASON_TIMEOUT, SHIM_REASON_EOF, SHIM_REASON_OVERFLOW, SHIM_REASON_ERROR,
	SHIM_REASON_NOMEM, SHIM_REASON_UNTRUSTED, SHIM_REASON_MAX
};
/* Counts one connection's outcome (version 0 when unknown) and the header bytes it took. */
void shim_stat(enum shim_result r, enum shim_reason why, unsigned version, size_t header_bytes);
/* The process starts: writes the file now (with PROXYSHIM_STATS), every main series at 0, and
 * has exit() remove it. The writer thread waits for the first change. */
void shim_stats_start(void);
/* Something the file shows changed (the parked gauge): write it within a second. */
void shim_stats_changed(void);
/* A log line that reached neither stderr nor /dev/log. */
void shim_stat_log_dropped(void);
/* The same without ever starting the writer thread: for close() and dup2(), which may run in
 * a signal handler (the writer is running already whenever there was anything parked). */
void shim_stats_touch(void);
/* A reason's name, as log lines and the counters' labels print it ("timeout", ...). Reasons
 * travel as the enum; only printing names them. */
const char *shim_reason_name(enum shim_reason r);
void shim_stats_atfork_child(void);
/* The program ends through _exit() or _Exit() (preload/exit.c), where no atexit handler runs:
 * removes its file as exit() does, in the process that wrote it only. Async-signal-safe. */
void shim_stats_exit(void);
/* The parked gauge: connections parked in the whole process. Kept here, where the file is
 * written; whoever parks (preload/park.c) adds and subtracts. The hooks' fast paths read it. */
extern _Atomic unsigned shim_parked_total;

#endif
