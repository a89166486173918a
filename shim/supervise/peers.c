/* What getpeername() answers for a connection whose header named a client: the client (and the
 * header's destination, for getsockname() under PROXYSHIM_LOCAL_ADDR=header), by the
 * socket's cookie (SO_COOKIE). A cookie is the socket's for its whole life and never reused, so
 * the table stays right across dup(), fd reuse and fd passing without trapping close(). Entries
 * of sockets that are gone are swept against the live ones (sock_diag, no privilege needed) when
 * the table grows, never flushed blindly. */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/fdpass.h"
#include "../core/log.h"
#include "supervise.h"

struct slot {
	uint64_t cookie; /* 0: free */
	struct sv_peer peer;
	bool live; /* seen by the sweep under way */
};

static struct slot *g_tab;
static size_t g_cap, g_count, g_sweep_at = 4096;

uint64_t sv_cookie(int fd)
{
	uint64_t c = 0;
	return shim_fdpass_cookie(fd, &c) == 0 ? c : 0;
}

static struct slot *find(struct slot *tab, size_t cap, uint64_t cookie)
{
	size_t i = shim_cookie_hash(cookie) & (cap - 1);
	while (tab[i].cookie != 0 && tab[i].cookie != cookie)
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

/* A table of cap slots holding the entries of the old one that keep is true for. */
static int rebuild(size_t cap, bool only_live)
{
	struct slot *t = calloc(cap, sizeof(*t));
	size_t n = 0;

	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < g_cap; i++) {
		if (g_tab[i].cookie == 0 || (only_live && !g_tab[i].live))
			continue;
		struct slot *s = find(t, cap, g_tab[i].cookie);
		*s = g_tab[i];
		s->live = false;
		n++;
	}
	free(g_tab);
	g_tab = t;
	g_cap = cap;
	g_count = n;
	return 0;
}

/* Marks the entries whose socket still exists (TCP, IPv4 and IPv6, this network namespace). */
static int mark_live(int family)
{
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req = {
		.nh = {.nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		       .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
		/* Only the states of a socket a process can hold: not TIME_WAIT, SYN_RECV or
		 * NEW_SYN_RECV (no fd; a busy server has thousands in TIME_WAIT, which the dump
		 * would walk at every sweep), nor LISTEN (never in the table). */
		.r = {.sdiag_family = (uint8_t)family, .sdiag_protocol = IPPROTO_TCP,
		      .idiag_states = ~((1u << 3) | (1u << 6) | (1u << 10) | (1u << 12))},
	};
	static char buf[32768];
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (send(fd, &req, sizeof(req), 0) < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				goto out;
			if (h->nlmsg_type == NLMSG_ERROR) {
				rc = -EPROTO;
				goto out;
			}
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			uint64_t c = (uint64_t)m->id.idiag_cookie[0] | (uint64_t)m->id.idiag_cookie[1] << 32;
			struct slot *s = find(g_tab, g_cap, c);
			if (s->cookie == c)
				s->live = true;
		}
	}
out:
	close(fd);
	return rc;
}

static void sweep(void)
{
	size_t before = g_count;
	for (size_t i = 0; i < g_cap; i++)
		g_tab[i].live = false;
	if (mark_live(AF_INET) < 0 || mark_live(AF_INET6) < 0) {
		/* Not knowing which are gone, forget none: grow instead. */
		shim_log(SHIM_LOG_WARN, "event=sweep error=sock_diag entries=%zu", g_count);
		g_sweep_at *= 2;
		return;
	}
	rebuild(g_cap, true);
	if (g_count * 2 > g_sweep_at)
		g_sweep_at = g_count * 2;
	shim_log(SHIM_LOG_INFO, "event=sweep before=%zu after=%zu", before, g_count);
}

int sv_peer_put(uint64_t cookie, const struct sv_peer *peer)
{
	struct slot *s;

	if (cookie == 0)
		return -EINVAL;
	if (g_count + 1 >= g_sweep_at && g_tab != NULL)
		sweep();
	if ((g_count + 1) * 2 > g_cap && rebuild(g_cap ? g_cap * 2 : 1024, false) < 0)
		return -ENOMEM;
	s = find(g_tab, g_cap, cookie);
	if (s->cookie == 0)
		g_count++;
	s->cookie = cookie;
	s->peer = *peer;
	return 0;
}

const struct sv_peer *sv_peer_get(uint64_t cookie)
{
	if (g_tab == NULL || cookie == 0)
		return NULL;
	struct slot *s = find(g_tab, g_cap, cookie);
	return s->cookie == cookie ? &s->peer : NULL;
}

size_t sv_peer_count(void)
{
	return g_count;
}
