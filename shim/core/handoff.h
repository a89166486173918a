/* The exec handoff's text: what PROXYSHIM_HANDOFF carries from one image to the next, encoded
 * and decoded with no system call and no table access (adoption is exec.c's). */
#ifndef SHIM_CORE_HANDOFF_H
#define SHIM_CORE_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

#define SHIM_HANDOFF_VAR "PROXYSHIM_HANDOFF"
#define SHIM_HANDOFF_TAG "1" /* the entry layout below; another layout is ignored, not misread */
/* The variable's value: the tag, then ";fd:inode:hex" per connection. */
#define SHIM_HANDOFF_PREFIX SHIM_HANDOFF_VAR "=" SHIM_HANDOFF_TAG

/* What an entry carries: every field of struct shim_fd but kind and ext, in this order. */
struct shim_handoff_wire {
	uint8_t flags, version, command;
	uint32_t real_hash;
	struct shim_addr peer, local;
} __attribute__((packed));

/* The wire form of a connection's entry e. */
void shim_handoff_wire_of(const struct shim_fd *e, struct shim_handoff_wire *w);

/* One entry's text, fd:inode:hex, is at most this long (with room for its ';'). */
#define SHIM_HANDOFF_ENTRY_MAX (12 + 1 + 20 + 1 + 2 * sizeof(struct shim_handoff_wire) + 1)

/* Writes fd's entry e (socket inode ino) at p, unterminated; returns its length. */
size_t shim_handoff_encode(char *p, int fd, unsigned long long ino, const struct shim_fd *e);
/* Appends ';' and the entry to the text buf of length len and capacity cap, terminated;
 * returns the new length, or len when the entry would not fit. */
size_t shim_handoff_append(char *buf, size_t len, size_t cap, int fd, unsigned long long ino,
			   const struct shim_fd *e);
/* A decimal number at *p (digits only), advancing *p: 0, or -EINVAL (no digit, overflow). */
int shim_handoff_uint(const char **p, unsigned long long *out);
/* Decodes one entry "fd:inode:hex" that ends at end: 0 when well formed, names an fd up to
 * INT_MAX and a connection state (REWRITTEN, PENDING or FAILED); -EINVAL otherwise. */
int shim_handoff_parse_entry(const char *p, const char *end, int *fd, unsigned long long *ino,
			     struct shim_handoff_wire *w);
/* The entries of a variable's value v, or NULL when v carries another tag (or none). */
const char *shim_handoff_entries(const char *v);
/* Calls fn for every well-formed entry of entries (';'-separated); others are skipped. */
void shim_handoff_each(const char *entries,
		       void (*fn)(int fd, unsigned long long ino, const struct shim_handoff_wire *w,
				  void *arg),
		       void *arg);

#endif
