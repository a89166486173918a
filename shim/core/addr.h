/* Addresses (addr.c): the table's 20-byte form, and sockaddrs copied out per libc's contract. */
#ifndef SHIM_CORE_ADDR_H
#define SHIM_CORE_ADDR_H

#include <sys/socket.h>

#include "base.h"

/* An address in 20 bytes: what getpeername() reports, rebuilt on demand. */
struct shim_addr {
	uint16_t family; /* AF_INET or AF_INET6; 0 when unset */
	uint16_t port;   /* network order */
	uint8_t addr[16];
};

void shim_addr_from_sa(struct shim_addr *a, const struct sockaddr *sa);
/* Writes a as a sockaddr the way the kernel would: at most *len bytes, *len = full size. */
void shim_addr_to_user(const struct shim_addr *a, struct sockaddr *sa, socklen_t *len);
/* A 32-bit digest of a real peer address (family, port, address). */
uint32_t shim_sa_hash(const struct sockaddr *sa);
/* Copies a sockaddr of size salen out per accept()'s contract: at most *len, *len = salen. */
void shim_sa_to_user(const void *ss, socklen_t salen, struct sockaddr *sa, socklen_t *len);
/* "1.2.3.4:80" or "[::1]:80" into buf (at least SHIM_ADDRSTR_LEN bytes). */
#define SHIM_ADDRSTR_LEN 56
const char *shim_sa_str(const struct sockaddr *sa, char *buf);

#endif
