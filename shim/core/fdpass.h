/* Connections that change process (fdpass.c): a connection's state, keyed by its socket's
 * SO_COOKIE, in a table that every process of one user shares, so that an fd passed with
 * SCM_RIGHTS (Node's cluster, PM2) means in the receiver what it meant in the sender, and a
 * header still to come is consumed once, by whichever process reads first. No hooks here: the
 * preload front-end publishes on sendmsg() and adopts on recvmsg() and getpeername(). */
#ifndef SHIM_CORE_FDPASS_H
#define SHIM_CORE_FDPASS_H

#include <stdint.h>

#include "conn.h"
#include "handoff.h"

#define SHIM_C_SHARED 0x08 /* conn: published or adopted; a pending header is settled through
			    * the table (exactly once across processes) */

/* The table: /dev/shm/proxyshim-fd-<euid>, mode 0600, owned by the user. */
#define SHIM_FDPASS_DIR "/dev/shm"
extern const char *shim_fdpass_dir SHIM_HIDDEN; /* SHIM_FDPASS_DIR; a unit test's own */
#define SHIM_FDPASS_SLOTS 16384u

/* A slot's state. A settling one carries the settler's pid above the low bits. */
enum shim_fdpass_state {
	SHIM_FDPASS_EMPTY = 0,
	SHIM_FDPASS_SETTLED = 1,  /* the wire is final: rewritten, failed, or no state (flags 0) */
	SHIM_FDPASS_PENDING = 2,  /* the header is still in the socket */
	SHIM_FDPASS_SETTLING = 3, /* | pid << 2: that process is reading the header */
};

/* A cookie's place in a hash table (cookies are sequential: their bits are mixed first). */
static inline uint32_t shim_cookie_hash(uint64_t c)
{
	c ^= c >> 33;
	c *= 0xff51afd7ed558ccdull;
	c ^= c >> 33;
	return (uint32_t)c;
}

/* The socket's cookie: 0, or a negative errno (ENOTSOCK; ENOPROTOOPT on kernels before 4.12). */
int shim_fdpass_cookie(int fd, uint64_t *cookie);
/* Maps the table if it is not yet: creating it when create is set, else only if it exists.
 * True when mapped. Costs one open() when the file does not exist; a file that is not the
 * user's own, private and of this layout is never used (logged once). */
bool shim_fdpass_map(bool create);
/* True once the table is mapped in this process (one load). */
bool shim_fdpass_mapped(void);

/* Writes the entry e of the socket with this cookie: a settled one (rewritten or failed) over
 * what the slot holds; a pending one only where the cookie has no slot yet (a header already
 * settled elsewhere stays settled). 0, or a negative errno (-ENOSPC: no slot free). */
int shim_fdpass_publish(uint64_t cookie, const struct shim_fd *e);
/* What the table holds for cookie: its state (enum, with a settler's pid for SETTLING) and
 * wire; 0, or -ENOENT. */
int shim_fdpass_lookup(uint64_t cookie, struct shim_handoff_wire *w, uint32_t *state);
/* Takes the right to read the pending header: from PENDING, or from a settler whose process
 * is gone. 0, -EBUSY (another live process reads it), -EALREADY (settled), -ENOENT. */
int shim_fdpass_claim(uint64_t cookie);
/* The claimer gives the header back still unread (incomplete, non-blocking). */
void shim_fdpass_release(uint64_t cookie);
/* The claimer's result: e's entry (rewritten or failed), or NULL for no state (LOCAL,
 * UNKNOWN, a pass): the slot becomes SETTLED. */
void shim_fdpass_settled(uint64_t cookie, const struct shim_fd *e);

/* fd's entry becomes a connection carrying w (exec handoff, fd passing). False: no memory. */
bool shim_fd_adopt(int fd, const struct shim_handoff_wire *w);

#endif
