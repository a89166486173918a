/* The header step (header.c): peek, parse and consume a PROXY header off an accepted
 * connection, with deadlines, recording what it says in the connection's entry. */
#ifndef SHIM_CORE_HEADER_H
#define SHIM_CORE_HEADER_H

#include <sys/socket.h>

#include "addr.h"
#include "base.h"
#include "stats.h"

enum shim_verdict {
	SHIM_ACCEPT_HEADER, /* header consumed; entry recorded when it names a client */
	SHIM_PASS,          /* (optional mode) no header sent: leave the connection as it is */
	SHIM_REJECT,        /* close the connection; logged */
	SHIM_INCOMPLETE,    /* more bytes are needed */
};
/* A trusted connection being read: its fd, real peer and the listener's local port. */
struct shim_conn_ref {
	int fd;
	const struct sockaddr *peer;
	uint16_t lport;
};
struct shim_progress {
	size_t seen; /* bytes queued at the last peek */
	size_t want; /* seen + what pp_parse() still needed (v2 past 16 bytes: the whole header) */
	/* What the step recorded, once it returned SHIM_ACCEPT_HEADER: rewritten tells whether
	 * the entry now names a client (the header's source, as the program will see it, in
	 * client); when not (LOCAL, UNKNOWN...) the real peer stays. Callers use this, not the
	 * table, which a signal handler's close() may already have cleared. */
	bool rewritten;
	struct shim_addr client;
};
/* Everything here may change errno: a front-end's caller keeps the program's (the preload
 * hooks save it once at their entry). */
/* One look without waiting: peek, parse, and consume the header when it is complete.
 * eof: the peer has shut down, so an incomplete header is final. */
enum shim_verdict shim_header_step(const struct shim_conn_ref *c, struct shim_progress *pr, bool eof);
/* What becomes of a connection whose header did not come (why: timeout, eof, missing...). */
enum shim_verdict shim_header_none(const struct shim_conn_ref *c, size_t seen, enum shim_reason why);
/* Raises SO_RCVLOWAT so readiness means the next needed bytes are there; 0 or a negative errno. */
int shim_header_lowat(int fd, const struct shim_progress *pr);
void shim_header_lowat_reset(int fd);
/* Steps and waits in poll() until done or the deadline (CLOCK_MONOTONIC ms), going on from
 * where pr stands (zeroed: from the start). */
enum shim_verdict shim_take_header(const struct shim_conn_ref *c, struct shim_progress *pr, uint64_t deadline);
uint64_t shim_now_ms(void);
/* When a blocking accept() on the listener fd gives up (EAGAIN) by its SO_RCVTIMEO, in
 * shim_now_ms() terms from now; 0: never. Both front-ends honour it while a header is on its
 * way (the kernel's own accept() does otherwise). */
uint64_t shim_rcvtimeo_deadline(int fd);
struct shim_config;
/* A connection from a peer outside PROXYSHIM_TRUSTED (on a covered listener): counted, and
 * true when it is to be closed (PROXYSHIM_UNTRUSTED=reject and its first bytes start a header;
 * never waits), logged then; else it passes untouched. Both front-ends' accept. */
bool shim_untrusted_closes(const struct shim_config *c, int fd, const struct sockaddr *peer, uint16_t lport);

#endif
