/* A connection's states (core/conn.h, docs/DESIGN.md "Connection states") driven through the
 * core alone, the way a front-end drives them: real loopback TCP connections, accepted with
 * plain accept() (nothing is hooked here), the entry cleared as accept() does, the peer
 * checked against the trusted set, then the header step (core/header.c) and the table's
 * operations (core/fdtable.c) that close(), dup() and parking use. The configuration is the
 * environment's, set once before the first shim_config(). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxyshim_proto.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/header.h"
#include "core/stats.h"
#include "core/trust.h"

/* ---- the configuration: once, for the whole run ---- */

static int setup_config(void **state)
{
	const struct shim_config *c;
	(void)state;
	/* Nothing of the caller's environment or /etc/proxyshim.conf: only what is set here. */
	for (size_t i = 0; i < SHIM_NSETTINGS; i++)
		unsetenv(shim_settings[i].name);
	setenv("PROXYSHIM_CONFIG", "/dev/null", 1);
	setenv("PROXYSHIM_TRUSTED", "127.0.0.0/8, ::1", 1);
	setenv("PROXYSHIM_KEEP_TLVS", "1", 1);
	/* warn: rejections are logged, with their reason; the tests catch those lines (capture
	 * below), so that the output stays clean and the reason is checked. */
	setenv("PROXYSHIM_LOG", "warn", 1);
	c = shim_config();
	if (!c->active || !c->keep_tlvs || c->mode != SHIM_MODE_STRICT || c->log_level != SHIM_LOG_WARN) {
		fprintf(stderr, "test_conn: the configuration was not taken from the environment\n");
		return -1;
	}
	return 0;
}

/* ---- fd 2 caught in a pipe around a step: the log line says the reason ---- */

static int cap_saved = -1, cap_read = -1;

static void capture_start(void)
{
	int p[2];
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	cap_saved = dup(2);
	assert_true(cap_saved >= 0);
	assert_int_equal(dup2(p[1], 2), 2);
	close(p[1]);
	cap_read = p[0];
}

/* The lines written meanwhile, NUL-terminated, in buf. */
static const char *capture_end(char *buf, size_t cap)
{
	ssize_t n;
	assert_int_equal(dup2(cap_saved, 2), 2);
	close(cap_saved);
	n = read(cap_read, buf, cap - 1);
	close(cap_read);
	buf[n > 0 ? (size_t)n : 0] = '\0';
	return buf;
}

/* ---- loopback connections, accepted as the front-end does ---- */

struct pair {
	int lfd, cfd, sfd; /* listener, client, the accepted connection */
	struct sockaddr_storage peer; /* the real peer, as accept() gave it */
	socklen_t peerlen;
	uint16_t lport;
};

static void pair_open(struct pair *p, int family)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	memset(p, 0, sizeof(*p));
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		sl = sizeof(*in6);
	}
	p->lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->lfd >= 0);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&ss, sl), 0);
	assert_int_equal(listen(p->lfd, 8), 0);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&ss, &sl), 0);
	p->lport = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					   : ((struct sockaddr_in6 *)&ss)->sin6_port);
	p->cfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->cfd >= 0);
	assert_int_equal(connect(p->cfd, (struct sockaddr *)&ss, sl), 0);
	p->peerlen = sizeof(p->peer);
	p->sfd = accept(p->lfd, (struct sockaddr *)&p->peer, &p->peerlen);
	assert_true(p->sfd >= 0);
	/* What accept.c does with a new fd: whatever its number held before goes, and only a
	 * trusted peer's header is read. */
	shim_fd_clear(p->sfd);
	assert_true(shim_trusted(shim_config(), (const struct sockaddr *)&p->peer));
	assert_int_equal(shim_fd_kind(p->sfd), SHIM_FD_NONE);
}

/* close() of each, the connection's entry going first as the close hook lets it go. */
static void pair_close(struct pair *p)
{
	shim_fd_clear(p->sfd);
	close(p->sfd);
	close(p->cfd);
	close(p->lfd);
}

static void send_bytes(const struct pair *p, const void *buf, size_t n)
{
	assert_int_equal(send(p->cfd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Until at least n bytes are queued on the accepted connection (loopback delivers at once,
 * but nothing promises it). */
static void wait_queued(const struct pair *p, size_t n)
{
	static uint8_t buf[4096];
	assert_true(n <= sizeof(buf));
	for (int i = 0; i < 2000; i++) {
		struct pollfd pf = {.fd = p->sfd, .events = POLLIN};
		if (recv(p->sfd, buf, n, MSG_PEEK | MSG_DONTWAIT) >= (ssize_t)n)
			return;
		poll(&pf, 1, 1);
	}
	fail_msg("%zu bytes never arrived", n);
}

/* Until the client's shutdown has arrived. */
static void wait_eof(const struct pair *p)
{
	struct pollfd pf = {.fd = p->sfd, .events = POLLRDHUP};
	assert_int_equal(poll(&pf, 1, 2000), 1);
	assert_true(pf.revents & POLLRDHUP);
}

static enum shim_verdict step(const struct pair *p, struct shim_progress *pr, bool eof)
{
	const struct shim_conn_ref ref = {p->sfd, (const struct sockaddr *)&p->peer, p->lport};
	return shim_header_step(&ref, pr, eof);
}

/* What is queued on the connection now, all of it, without taking it. */
static size_t peek_all(const struct pair *p, uint8_t *buf, size_t cap)
{
	ssize_t n = recv(p->sfd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		n = 0;
	assert_true(n >= 0);
	return (size_t)n;
}

/* The next bytes the program reads are exactly want: the header, and nothing after it, was
 * consumed. */
static void expect_payload(const struct pair *p, const char *want)
{
	char buf[64];
	size_t n = strlen(want);
	wait_queued(p, n);
	assert_int_equal(recv(p->sfd, buf, sizeof(buf), MSG_DONTWAIT), (ssize_t)n);
	assert_memory_equal(buf, want, n);
}

/* ---- addresses ---- */

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	}
	return ss;
}

static struct shim_addr shim_addr_of(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = sa(ip, port);
	struct shim_addr a;
	shim_addr_from_sa(&a, (const struct sockaddr *)&ss);
	return a;
}

static void expect_addr(const struct shim_addr *got, const char *ip, uint16_t port)
{
	struct shim_addr want = shim_addr_of(ip, port);
	assert_int_equal(got->family, want.family);
	assert_int_equal(ntohs(got->port), port);
	assert_memory_equal(got->addr, want.addr, sizeof(want.addr));
}

/* A header from the project's own builder: v1 or v2 PROXY with src and dst. */
static size_t build(uint8_t *buf, size_t cap, unsigned version, const char *src, uint16_t sport,
		    const char *dst, uint16_t dport, const struct pp_tlv *tlvs, size_t ntlvs)
{
	struct sockaddr_storage s = sa(src, sport), d = sa(dst, dport);
	int n = version == 1 ? pp_build_v1(buf, cap, (struct sockaddr *)&s, (struct sockaddr *)&d)
			     : pp_build_v2(buf, cap, PP_CMD_PROXY, (struct sockaddr *)&s,
					   (struct sockaddr *)&d, tlvs, ntlvs, 0);
	assert_true(n > 0);
	return (size_t)n;
}

/* An owner as parking is one (preload/park.c): an extension of an entry, told through drop()
 * when the entry holding it goes. Counts the calls by kind. */
struct owner {
	struct shim_ext ext;
	int drops[8];
};

static void owner_drop(struct shim_ext *x, unsigned kind)
{
	struct owner *o = (struct owner *)x;
	assert_true(kind < 8);
	o->drops[kind]++;
}

static const struct shim_ext_ops owner_ops = {.drop = owner_drop};

static int drops_total(const struct owner *o)
{
	int n = 0;
	for (int i = 0; i < 8; i++)
		n += o->drops[i];
	return n;
}

/* Whether the page at p is mapped (a TLV block lives in pages of its own). */
static bool mapped(const void *p)
{
	long page = sysconf(_SC_PAGESIZE);
	void *start = (void *)((uintptr_t)p & ~(uintptr_t)(page - 1));
	return msync(start, (size_t)page, MS_ASYNC) == 0;
}

/* ---- NONE -> CONN REWRITTEN ---- */

struct rewrite_case {
	int family;       /* of the connection */
	unsigned version; /* of the header */
	const char *src, *dst;
	const char *client, *local; /* the entry's peer and local, as the program will see them */
};

static const struct rewrite_case rewrites[] = {
	{AF_INET, 1, "192.0.2.10", "198.51.100.20", "192.0.2.10", "198.51.100.20"},
	{AF_INET, 2, "192.0.2.10", "198.51.100.20", "192.0.2.10", "198.51.100.20"},
	{AF_INET6, 1, "2001:db8::10", "2001:db8::20", "2001:db8::10", "2001:db8::20"},
	{AF_INET6, 2, "2001:db8::10", "2001:db8::20", "2001:db8::10", "2001:db8::20"},
	/* An IPv4 header on an IPv6 connection: mapped, as the kernel reports IPv4 peers there. */
	{AF_INET6, 1, "192.0.2.10", "198.51.100.20", "::ffff:192.0.2.10", "::ffff:198.51.100.20"},
	{AF_INET6, 2, "192.0.2.10", "198.51.100.20", "::ffff:192.0.2.10", "::ffff:198.51.100.20"},
};

static void test_none_to_conn_rewritten(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rewrites) / sizeof(rewrites[0]); i++) {
		const struct rewrite_case *k = &rewrites[i];
		uint8_t hdr[256];
		struct shim_progress pr = {0};
		struct pair p;
		struct shim_fd *e;
		size_t n;

		print_message("  v%u %s -> %s on %s\n", k->version, k->src, k->dst,
			      k->family == AF_INET ? "127.0.0.1" : "::1");
		pair_open(&p, k->family);
		n = build(hdr, sizeof(hdr), k->version, k->src, 4321, k->dst, 443, NULL, 0);
		send_bytes(&p, hdr, n);
		send_bytes(&p, "hello", 5);
		wait_queued(&p, n + 5);
		assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
		assert_int_equal(pr.seen, n + 5);
		assert_true(pr.rewritten);
		expect_addr(&pr.client, k->client, 4321);
		/* The entry: a rewritten connection, the header's addresses, the real peer's hash. */
		assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
		e = shim_fd_peek(p.sfd);
		assert_int_equal(e->flags, SHIM_C_REWRITTEN);
		assert_int_equal(e->version, k->version);
		assert_int_equal(e->command, PP_CMD_PROXY);
		assert_memory_equal(&e->peer, &pr.client, sizeof(e->peer));
		expect_addr(&e->local, k->local, 443);
		assert_int_equal(e->real_hash, shim_sa_hash((const struct sockaddr *)&p.peer));
		assert_null(shim_fd_ext(e)); /* no TLVs in the header: nothing kept */
		/* Exactly the header consumed. */
		expect_payload(&p, "hello");
		/* close(): back to NONE. */
		shim_fd_clear(p.sfd);
		assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
		pair_close(&p);
	}
}

/* ---- headers that name no client: consumed, the entry stays NONE ---- */

static void test_local_and_unknown_stay_none(void **state)
{
	static const char v1_unknown[] = "PROXY UNKNOWN\r\n";
	static const char v1_unknown_addrs[] = "PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n";
	struct sockaddr_un us, ud;
	uint8_t hdr[4][300];
	size_t len[4];
	int n;
	(void)state;

	n = pp_build_v2(hdr[0], sizeof(hdr[0]), PP_CMD_LOCAL, NULL, NULL, NULL, 0, 0);
	assert_true(n > 0);
	len[0] = (size_t)n;
	memcpy(hdr[1], v1_unknown, sizeof(v1_unknown) - 1);
	len[1] = sizeof(v1_unknown) - 1;
	memcpy(hdr[2], v1_unknown_addrs, sizeof(v1_unknown_addrs) - 1);
	len[2] = sizeof(v1_unknown_addrs) - 1;
	/* PROXY over UNIX addresses: not this TCP connection's peer either. */
	memset(&us, 0, sizeof(us));
	memset(&ud, 0, sizeof(ud));
	us.sun_family = ud.sun_family = AF_UNIX;
	strcpy(us.sun_path, "/run/client.sock");
	strcpy(ud.sun_path, "/run/server.sock");
	n = pp_build_v2(hdr[3], sizeof(hdr[3]), PP_CMD_PROXY, (struct sockaddr *)&us,
			(struct sockaddr *)&ud, NULL, 0, 0);
	assert_true(n > 0);
	len[3] = (size_t)n;

	for (int i = 0; i < 4; i++) {
		struct shim_progress pr = {0};
		struct pair p;
		print_message("  header %d (%zu bytes)\n", i, len[i]);
		pair_open(&p, i % 2 ? AF_INET6 : AF_INET);
		send_bytes(&p, hdr[i], len[i]);
		send_bytes(&p, "data", 4);
		wait_queued(&p, len[i] + 4);
		assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
		assert_false(pr.rewritten);
		assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
		expect_payload(&p, "data");
		pair_close(&p);
	}
}

/* ---- incomplete, then complete ---- */

static void test_incomplete_then_complete(void **state)
{
	uint8_t hdr[64];
	struct shim_progress pr = {0};
	struct pair p;
	size_t n;
	int lowat = 0;
	socklen_t sl = sizeof(lowat);
	(void)state;

	pair_open(&p, AF_INET);
	n = build(hdr, sizeof(hdr), 2, "203.0.113.7", 5555, "198.51.100.1", 80, NULL, 0);
	assert_int_equal(n, 28); /* 16 fixed + 12 of IPv4 addresses */
	/* Nothing yet: incomplete, nothing seen. */
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	assert_int_equal(pr.seen, 0);
	/* Inside the signature: one more byte may decide. */
	send_bytes(&p, hdr, 10);
	wait_queued(&p, 10);
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	assert_int_equal(pr.seen, 10);
	assert_int_equal(pr.want, 11);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	/* Past the fixed part: the rest of the announced length. */
	send_bytes(&p, hdr + 10, 10);
	wait_queued(&p, 20);
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	assert_int_equal(pr.seen, 20);
	assert_int_equal(pr.want, 28);
	/* Readiness then waits for all of them. */
	assert_int_equal(shim_header_lowat(p.sfd, &pr), 0);
	assert_int_equal(getsockopt(p.sfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, &sl), 0);
	assert_int_equal(lowat, 28);
	shim_header_lowat_reset(p.sfd);
	/* Nothing was taken meanwhile. */
	{
		uint8_t buf[64];
		assert_int_equal(peek_all(&p, buf, sizeof(buf)), 20);
		assert_memory_equal(buf, hdr, 20);
	}
	/* The rest, and the first bytes of data with it. */
	send_bytes(&p, hdr + 20, n - 20);
	send_bytes(&p, "GET /", 5);
	wait_queued(&p, n + 5);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_true(pr.rewritten);
	expect_addr(&pr.client, "203.0.113.7", 5555);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
	expect_payload(&p, "GET /");
	pair_close(&p);

	/* v1 the same way: one byte at a time is all a line can say it needs. */
	memset(&pr, 0, sizeof(pr));
	pair_open(&p, AF_INET);
	n = build(hdr, sizeof(hdr), 1, "203.0.113.7", 5555, "198.51.100.1", 80, NULL, 0);
	send_bytes(&p, hdr, 12);
	wait_queued(&p, 12);
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	assert_int_equal(pr.seen, 12);
	assert_int_equal(pr.want, 13);
	send_bytes(&p, hdr + 12, n - 12);
	wait_queued(&p, n);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_true(pr.rewritten);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
	assert_int_equal(shim_fd_peek(p.sfd)->version, 1);
	assert_int_equal(peek_all(&p, hdr, sizeof(hdr)), 0);
	pair_close(&p);
}

/* ---- NONE -> PARKED -> CONN, and PARKED -> NONE by the owner ---- */

static void test_parked_to_conn(void **state)
{
	struct owner park = {{&owner_ops}, {0}};
	uint8_t hdr[64];
	struct shim_progress pr = {0};
	struct pair p;
	struct shim_fd *e;
	size_t n;
	(void)state;

	pair_open(&p, AF_INET6);
	n = build(hdr, sizeof(hdr), 2, "192.0.2.99", 1234, "198.51.100.1", 8443, NULL, 0);
	send_bytes(&p, hdr, 14);
	wait_queued(&p, 14);
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	/* accept() parks it (park.c shim_park_add) and goes on. */
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_PARKED);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_PARKED);
	e = shim_fd_peek(p.sfd);
	assert_ptr_equal(shim_fd_ext(e), &park.ext);
	assert_int_equal(drops_total(&park), 0);
	/* The rest arrives; the park's service steps it on from where it stood. */
	send_bytes(&p, hdr + 14, n - 14);
	send_bytes(&p, "x", 1);
	wait_queued(&p, n + 1);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_true(pr.rewritten);
	expect_addr(&pr.client, "::ffff:192.0.2.99", 1234);
	/* The connection's own entry now, not the park's: recording it told the park nothing. */
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
	assert_int_equal(e->flags, SHIM_C_REWRITTEN);
	assert_memory_equal(&e->peer, &pr.client, sizeof(e->peer));
	assert_null(shim_fd_ext(e));
	assert_int_equal(drops_total(&park), 0);
	expect_payload(&p, "x");
	/* Handed over: remove_locked() leaves a CONN entry alone. Closed later: NONE, and still
	 * not a word to the park. */
	shim_fd_clear(p.sfd);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_null(shim_fd_ext(e));
	assert_int_equal(drops_total(&park), 0);
	pair_close(&p);

	/* A parked connection whose header names no client: the entry is the park's still (the
	 * park forgets it as it hands the connection over, silently). */
	memset(&pr, 0, sizeof(pr));
	pair_open(&p, AF_INET);
	n = (size_t)pp_build_v2(hdr, sizeof(hdr), PP_CMD_LOCAL, NULL, NULL, NULL, 0, 0);
	send_bytes(&p, hdr, 5);
	wait_queued(&p, 5);
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_PARKED);
	send_bytes(&p, hdr + 5, n - 5);
	wait_queued(&p, n);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_false(pr.rewritten);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_PARKED);
	assert_ptr_equal(shim_fd_ext(shim_fd_peek(p.sfd)), &park.ext);
	shim_fd_forget(p.sfd);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_int_equal(drops_total(&park), 0);
	pair_close(&p);
}

/* ---- owned entries the program closes: the owner hears of it, with the kind ---- */

static void test_owned_entries_closed_by_program(void **state)
{
	struct owner park = {{&owner_ops}, {0}};
	struct pair p;
	struct shim_fd *l;
	int ep;
	(void)state;

	pair_open(&p, AF_INET);
	ep = epoll_create1(EPOLL_CLOEXEC);
	assert_true(ep >= 0);

	/* A parked connection closed by the program (a guessed fd number, or close_range()). */
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_PARKED);
	shim_fd_clear(p.sfd);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_null(shim_fd_ext(shim_fd_peek(p.sfd)));
	assert_int_equal(park.drops[SHIM_FD_PARKED], 1);
	assert_int_equal(drops_total(&park), 1);
	/* Once: a second close of the number finds NONE. */
	shim_fd_clear(p.sfd);
	assert_int_equal(drops_total(&park), 1);

	/* The park's own epoll fd closed by the program. */
	shim_fd_mark_owned(ep, &park.ext, SHIM_FD_INTERNAL);
	assert_int_equal(shim_fd_kind(ep), SHIM_FD_INTERNAL);
	shim_fd_clear(ep);
	assert_int_equal(park.drops[SHIM_FD_INTERNAL], 1);
	assert_int_equal(drops_total(&park), 2);

	/* The shim closing its own: forget(), no word to the owner. */
	shim_fd_mark_owned(ep, &park.ext, SHIM_FD_INTERNAL);
	shim_fd_forget(ep);
	assert_int_equal(shim_fd_kind(ep), SHIM_FD_NONE);
	assert_int_equal(drops_total(&park), 2);

	/* The listener, published as listen.c does, holding its park; closed: the park is
	 * released. */
	l = shim_fd_get(p.lfd);
	assert_non_null(l);
	l->flags = SHIM_L_COVERED;
	shim_fd_set_ext(l, &park.ext);
	atomic_store(&l->kind, SHIM_FD_LISTENER);
	shim_fd_clear(p.lfd);
	assert_int_equal(shim_fd_kind(p.lfd), SHIM_FD_NONE);
	assert_int_equal(park.drops[SHIM_FD_LISTENER], 1);
	assert_int_equal(drops_total(&park), 3);

	/* The three at once by close_range(): each as its own close. */
	memset(park.drops, 0, sizeof(park.drops));
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_PARKED);
	shim_fd_mark_owned(ep, &park.ext, SHIM_FD_INTERNAL);
	shim_fd_set_ext(l, &park.ext);
	atomic_store(&l->kind, SHIM_FD_LISTENER);
	{
		int lo = p.lfd, hi = p.lfd;
		if (p.sfd < lo)
			lo = p.sfd;
		if (ep < lo)
			lo = ep;
		if (p.sfd > hi)
			hi = p.sfd;
		if (ep > hi)
			hi = ep;
		shim_fd_clear_range((unsigned)lo, (unsigned)hi);
	}
	assert_int_equal(park.drops[SHIM_FD_PARKED], 1);
	assert_int_equal(park.drops[SHIM_FD_INTERNAL], 1);
	assert_int_equal(park.drops[SHIM_FD_LISTENER], 1);
	assert_int_equal(drops_total(&park), 3);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(ep), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(p.lfd), SHIM_FD_NONE);

	close(ep);
	pair_close(&p);
}

/* ---- rejections: nothing recorded, nothing taken, the reason said ---- */

struct reject_case {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	const char *reason; /* in the log line: "event=reject reason=..." */
};

static const uint8_t bad_sig[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x58, 0x0A};
static const uint8_t bad_v2_version[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
					 0x54, 0x0A, 0x31, 0x11, 0x00, 0x0C};
static const uint8_t bad_v2_short[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
				       0x54, 0x0A, 0x21, 0x11, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8};
static const char bad_v1_addr[] = "PROXY TCP4 192.0.2.300 192.0.2.2 1000 80\r\n";
static const char bad_v1_proto[] = "PROXY UDP4 192.0.2.1 192.0.2.2 1000 80\r\n";
static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

static const struct reject_case rejects[] = {
	/* Eleven bytes of signature, then not one: no header at all (the parser's PP_NOT_PROXY,
	 * tests/unit/test_parse_v2.c test_signature), refused in strict mode as missing. */
	{"v2 signature, last byte but one wrong", bad_sig, sizeof(bad_sig), "missing"},
	{"v2 version 3", bad_v2_version, sizeof(bad_v2_version), "invalid"},
	{"v2 INET with 8 bytes of addresses", bad_v2_short, sizeof(bad_v2_short), "invalid"},
	{"v1 address 192.0.2.300", (const uint8_t *)bad_v1_addr, sizeof(bad_v1_addr) - 1, "invalid"},
	{"v1 UDP4", (const uint8_t *)bad_v1_proto, sizeof(bad_v1_proto) - 1, "invalid"},
	{"HTTP first (strict mode)", (const uint8_t *)http, sizeof(http) - 1, "missing"},
};

static void expect_reason(const char *log, const char *reason)
{
	char want[64];
	snprintf(want, sizeof(want), "event=reject reason=%s ", reason);
	if (!strstr(log, want))
		fail_msg("log lines \"%s\" do not say %s", log, want);
}

static void test_rejections(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
		const struct reject_case *k = &rejects[i];
		struct shim_progress pr = {0};
		uint8_t buf[128];
		char log[2048];
		struct pair p;
		enum shim_verdict v;

		print_message("  %s\n", k->name);
		pair_open(&p, i % 2 ? AF_INET6 : AF_INET);
		send_bytes(&p, k->bytes, k->len);
		wait_queued(&p, k->len);
		capture_start();
		v = step(&p, &pr, false);
		expect_reason(capture_end(log, sizeof(log)), k->reason);
		assert_int_equal(v, SHIM_REJECT);
		assert_false(pr.rewritten);
		assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
		/* The step took nothing: the front-end closes the connection with it all. */
		assert_int_equal(peek_all(&p, buf, sizeof(buf)), k->len);
		assert_memory_equal(buf, k->bytes, k->len);
		pair_close(&p);
	}
}

/* The client shuts down before its header is complete: final, not incomplete. */
static void test_eof_before_complete(void **state)
{
	uint8_t hdr[64];
	char log[2048];
	struct shim_progress pr = {0};
	struct pair p;
	enum shim_verdict v;
	size_t n;
	(void)state;

	pair_open(&p, AF_INET);
	n = build(hdr, sizeof(hdr), 2, "192.0.2.1", 1, "192.0.2.2", 2, NULL, 0);
	send_bytes(&p, hdr, n / 2);
	assert_int_equal(shutdown(p.cfd, SHUT_WR), 0);
	wait_queued(&p, n / 2);
	wait_eof(&p);
	/* Without being told of the eof, the bytes so far are still a header's start. */
	assert_int_equal(step(&p, &pr, false), SHIM_INCOMPLETE);
	assert_int_equal(pr.seen, n / 2);
	capture_start();
	v = step(&p, &pr, true);
	expect_reason(capture_end(log, sizeof(log)), "eof");
	assert_int_equal(v, SHIM_REJECT);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	pair_close(&p);

	/* Not one byte, then the shutdown: the peek itself says eof. */
	memset(&pr, 0, sizeof(pr));
	pair_open(&p, AF_INET6);
	assert_int_equal(shutdown(p.cfd, SHUT_WR), 0);
	wait_eof(&p);
	capture_start();
	v = step(&p, &pr, false);
	expect_reason(capture_end(log, sizeof(log)), "eof");
	assert_int_equal(v, SHIM_REJECT);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	pair_close(&p);
}

/* ---- kept TLVs: the connection's, shared by its copies, let go with the last ---- */

static void test_keep_tlvs(void **state)
{
	static const uint8_t authority[] = "example.org";
	static const uint8_t custom[] = {0xCA, 0xFE};
	const struct pp_tlv tlvs[] = {
		{0x02, sizeof(authority) - 1, authority}, /* PP2_TYPE_AUTHORITY */
		{0xE0, sizeof(custom), custom},
	};
	const size_t tlv_bytes = 3 + (sizeof(authority) - 1) + 3 + sizeof(custom);
	uint8_t hdr[128];
	struct shim_progress pr = {0};
	const struct shim_tlvs *t, *t2;
	struct pair p;
	struct shim_fd *e, *d;
	size_t n;
	int dupfd;
	(void)state;

	pair_open(&p, AF_INET);
	n = build(hdr, sizeof(hdr), 2, "192.0.2.5", 2000, "192.0.2.6", 443, tlvs, 2);
	send_bytes(&p, hdr, n);
	send_bytes(&p, "after", 5);
	wait_queued(&p, n + 5);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_true(pr.rewritten);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
	e = shim_fd_peek(p.sfd);
	shim_tlvs_pin();
	t = shim_tlvs_of(e);
	assert_non_null(t);
	assert_int_equal(t->len, tlv_bytes);
	assert_int_equal(atomic_load(&t->refs), 1);
	assert_memory_equal(t->data, hdr + 28, tlv_bytes); /* the header's TLV area, as sent */
	assert_int_equal(t->data[0], 0x02);
	assert_memory_equal(t->data + 3, "example.org", 11);
	shim_tlvs_unpin();
	expect_payload(&p, "after");

	/* dup(): the copy is the same connection, the same TLVs, one reference more. */
	dupfd = dup(p.sfd);
	assert_true(dupfd >= 0);
	shim_fd_copy(p.sfd, dupfd);
	d = shim_fd_peek(dupfd);
	assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_CONN);
	assert_int_equal(d->flags, SHIM_C_REWRITTEN);
	assert_int_equal(d->real_hash, e->real_hash);
	assert_memory_equal(&d->peer, &e->peer, sizeof(d->peer));
	assert_memory_equal(&d->local, &e->local, sizeof(d->local));
	shim_tlvs_pin();
	t2 = shim_tlvs_of(d);
	assert_ptr_equal(t2, t);
	assert_int_equal(atomic_load(&t->refs), 2);
	shim_tlvs_unpin();

	/* The original closed: the copy's TLVs stay. */
	shim_fd_clear(p.sfd);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_null(shim_fd_ext(e));
	shim_tlvs_pin();
	t2 = shim_tlvs_of(d);
	assert_ptr_equal(t2, t);
	assert_int_equal(atomic_load(&t->refs), 1);
	/* The copy closed while a reader is in them: unmapped only once it is out. */
	shim_fd_clear(dupfd);
	assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_NONE);
	assert_true(mapped(t));
	assert_memory_equal(t2->data + 3, "example.org", 11);
	shim_tlvs_unpin();
	assert_false(mapped(t));
	close(dupfd);
	pair_close(&p);

	/* dup2() over a connection holding TLVs lets them go like a close. */
	memset(&pr, 0, sizeof(pr));
	pair_open(&p, AF_INET6);
	send_bytes(&p, hdr, n);
	wait_queued(&p, n);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	shim_tlvs_pin();
	t = shim_tlvs_of(shim_fd_peek(p.sfd));
	assert_non_null(t);
	shim_tlvs_unpin();
	assert_true(mapped(t));
	shim_fd_copy(p.lfd, p.sfd); /* the listener is NONE here: the copy clears the target */
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_NONE);
	assert_false(mapped(t));
	pair_close(&p);
}

/* ---- dup() of each kind a connection can be in ---- */

static void test_copy_by_kind(void **state)
{
	struct owner park = {{&owner_ops}, {0}};
	uint8_t hdr[64];
	struct shim_progress pr = {0};
	struct pair p;
	size_t n;
	int dupfd;
	(void)state;

	pair_open(&p, AF_INET);
	dupfd = dup(p.sfd);
	assert_true(dupfd >= 0);

	/* PARKED: the copy is the program's, not the park's; the park hears nothing. */
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_PARKED);
	shim_fd_copy(p.sfd, dupfd);
	assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_NONE);
	assert_null(shim_fd_ext(shim_fd_peek(dupfd)));
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_PARKED);
	shim_fd_clear(dupfd);
	assert_int_equal(drops_total(&park), 0);
	/* INTERNAL the same. */
	shim_fd_mark_owned(p.sfd, &park.ext, SHIM_FD_INTERNAL); /* the PARKED entry goes first */
	assert_int_equal(park.drops[SHIM_FD_PARKED], 1);
	shim_fd_copy(p.sfd, dupfd);
	assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_NONE);
	assert_int_equal(drops_total(&park), 1);
	shim_fd_forget(p.sfd);

	/* CONN REWRITTEN: carried with its flags and addresses. */
	n = build(hdr, sizeof(hdr), 1, "192.0.2.77", 7777, "192.0.2.78", 80, NULL, 0);
	send_bytes(&p, hdr, n);
	wait_queued(&p, n);
	assert_int_equal(step(&p, &pr, false), SHIM_ACCEPT_HEADER);
	assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
	shim_fd_copy(p.sfd, dupfd);
	assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_CONN);
	assert_int_equal(shim_fd_peek(dupfd)->flags, SHIM_C_REWRITTEN);
	assert_int_equal(shim_fd_peek(dupfd)->version, 1);
	expect_addr(&shim_fd_peek(dupfd)->peer, "192.0.2.77", 7777);
	assert_int_equal(shim_fd_peek(dupfd)->real_hash, shim_fd_peek(p.sfd)->real_hash);
	/* A PARKED entry copied over it: the target goes as a close, and is NONE. */
	{
		struct pair q;
		pair_open(&q, AF_INET);
		shim_fd_mark_owned(q.sfd, &park.ext, SHIM_FD_PARKED);
		shim_fd_copy(q.sfd, dupfd);
		assert_int_equal(shim_fd_kind(dupfd), SHIM_FD_NONE);
		assert_int_equal(shim_fd_kind(p.sfd), SHIM_FD_CONN);
		shim_fd_forget(q.sfd);
		pair_close(&q);
	}
	assert_int_equal(drops_total(&park), 1);
	close(dupfd);
	pair_close(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_none_to_conn_rewritten),
		cmocka_unit_test(test_local_and_unknown_stay_none),
		cmocka_unit_test(test_incomplete_then_complete),
		cmocka_unit_test(test_parked_to_conn),
		cmocka_unit_test(test_owned_entries_closed_by_program),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_eof_before_complete),
		cmocka_unit_test(test_keep_tlvs),
		cmocka_unit_test(test_copy_by_kind),
	};
	return cmocka_run_group_tests(tests, setup_config, NULL);
}
