/* The trusted set: is this real peer allowed to announce a client address? IPv4 CIDRs also
 * match IPv4-mapped IPv6 peers, as seen on dual-stack listeners. */
#include <string.h>

#include <netinet/in.h>

#include "trust.h"

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;
	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xFFu << (8 - rest));
	return (a[full] & mask) == net[full];
}

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};

bool shim_trusted(const struct shim_config *c, const struct sockaddr *peer)
{
	const uint8_t *v4 = NULL, *v6 = NULL;

	if (c->trust_any)
		return true;
	if (peer->sa_family == AF_INET) {
		v4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)peer)->sin_addr;
	} else if (peer->sa_family == AF_INET6) {
		v6 = ((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr.s6_addr;
		if (memcmp(v6, v4mapped_prefix, 12) == 0)
			v4 = v6 + 12;
	} else {
		return false;
	}
	for (unsigned i = 0; i < c->ncidrs; i++) {
		const struct shim_cidr *r = &c->cidrs[i];
		if (r->family == AF_INET && v4 && prefix_match(v4, r->addr, r->prefix))
			return true;
		if (r->family == AF_INET6 && v6 && prefix_match(v6, r->addr, r->prefix))
			return true;
	}
	return false;
}
