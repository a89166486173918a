/* Addresses as the shim stores them (20 bytes) and as the program receives them: the
 * kernel's own forms and libc's truncation rules. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "shim.h"

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

	memset(&u, 0, sizeof(u));
	if (a->family == AF_INET) {
		u.in.sin_family = AF_INET;
		u.in.sin_port = a->port;
		memcpy(&u.in.sin_addr, a->addr, 4);
		full = sizeof(u.in);
	} else {
		u.in6.sin6_family = AF_INET6;
		u.in6.sin6_port = a->port;
		memcpy(&u.in6.sin6_addr, a->addr, 16);
		full = sizeof(u.in6);
	}
	if (sa && len) {
		memcpy(sa, &u, *len < full ? *len : full);
		*len = full;
	}
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

uint32_t shim_sa_hash(const struct sockaddr *sa)
{
	struct shim_addr a;
	const uint8_t *p = (const uint8_t *)&a;
	uint32_t h = 2166136261u; /* FNV-1a */
	shim_addr_from_sa(&a, sa);
	for (size_t i = 0; i < sizeof(a); i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

void shim_sa_to_user(const void *ss, socklen_t salen, struct sockaddr *sa, socklen_t *len)
{
	if (sa && len) {
		memcpy(sa, ss, *len < salen ? *len : salen);
		*len = salen;
	}
}
