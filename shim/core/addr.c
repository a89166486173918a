/* Addresses as the shim stores them (20 bytes) and as the program receives them: the
 * kernel's own forms and libc's truncation rules. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

void shim_addr_from_sa(struct shim_addr *a, const struct sockaddr *sa)
{
	memset(a, 0, sizeof(*a));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		a->family = AF_INET;
		a->port = in->sin_port;
		memcpy(a->addr, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		a->family = AF_INET6;
		a->port = in6->sin6_port;
		memcpy(a->addr, &in6->sin6_addr, 16);
	}
}

void shim_addr_to_user(const struct shim_addr *a, struct sockaddr *sa, socklen_t *len)
{
	union {
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} u;
	socklen_t full;

	if (!sa || !len)
		return;
	/* The usual caller's buffer holds the whole address: copies of a known size, inlined. */
	if (a->family == AF_INET) {
		memset(&u.in, 0, sizeof(u.in));
		u.in.sin_family = AF_INET;
		u.in.sin_port = a->port;
		memcpy(&u.in.sin_addr, a->addr, 4);
		full = sizeof(u.in);
		if (*len >= full) {
			memcpy(sa, &u.in, sizeof(u.in));
			*len = full;
			return;
		}
	} else {
		memset(&u.in6, 0, sizeof(u.in6));
		u.in6.sin6_family = AF_INET6;
		u.in6.sin6_port = a->port;
		memcpy(&u.in6.sin6_addr, a->addr, 16);
		full = sizeof(u.in6);
		if (*len >= full) {
			memcpy(sa, &u.in6, sizeof(u.in6));
			*len = full;
			return;
		}
	}
	memcpy(sa, &u, *len);
	*len = full;
}

const char *shim_sa_str(const struct sockaddr *sa, char *buf)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(buf, SHIM_ADDRSTR_LEN, "%s:%u", ip, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, SHIM_ADDRSTR_LEN, "[%s]:%u", ip, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, SHIM_ADDRSTR_LEN, "family-%u", sa->sa_family);
	}
	return buf;
}

/* Called for every trusted connection and every getpeername() on one: a few word operations
 * over the kernel's own form, not a byte loop over a normalised copy. Injective on the
 * IPv4 (family, address, port) before the final mix; for IPv6 a collision needs a chosen pair. */
uint32_t shim_sa_hash(const struct sockaddr *sa)
{
	uint64_t h;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		h = (uint64_t)AF_INET << 48 | (uint64_t)in->sin_addr.s_addr << 16 | in->sin_port;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		uint64_t w[2];
		memcpy(w, &in6->sin6_addr, sizeof(w));
		h = (w[0] * 0xC2B2AE3D27D4EB4Full ^ w[1]) + ((uint64_t)AF_INET6 << 48 | in6->sin6_port);
	} else {
		h = sa->sa_family;
	}
	h *= 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

void shim_sa_to_user(const void *ss, socklen_t salen, struct sockaddr *sa, socklen_t *len)
{
	if (sa && len) {
		memcpy(sa, ss, *len < salen ? *len : salen);
		*len = salen;
	}
}
