/* proxyshim-send: connects to a server, sends one PROXY protocol header (v1 or v2), then relays
 * standard input to the socket and the socket to standard output, like nc. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "proxyshim_proto.h"

#define PROG "proxyshim-send"
#define EXIT_USAGE 2

/* The header, then the relayed data, go out from this one buffer: the largest header fits. */
static uint8_t buf[PP2_MAX_LEN];

/* Every TLV is at least 3 bytes, so no header can carry more than this many. */
#define MAX_TLVS ((PP2_MAX_LEN - PP2_HEADER_LEN) / 3)
static struct pp_tlv tlvs[MAX_TLVS];

struct opts {
	int version;       /* 1 or 2; 0 until -1 or -2 is given */
	int local;         /* --local */
	int crc;           /* --crc */
	int has_src, has_dst, has_bind;
	struct sockaddr_storage src, dst, bind;
	const char *v2_only; /* the first option given that needs v2, for the -1 error */
	size_t ntlvs;
	size_t tlv_bytes; /* sum of 3 + len over tlvs */
	const char *host;
	const char *port_text;
	uint16_t port;
};

#include "cli.h"

static const char help_text[] =
	"NAME\n"
	"    proxyshim-send - connect to a server and speak the PROXY protocol first\n"
	"\n"
	"SYNOPSIS\n"
	"    proxyshim-send [-1|-2] [--src IP:PORT] [--dst IP:PORT] [--local]\n"
	"                   [--authority NAME] [--tlv TYPE=HEX ...] [--crc]\n"
	"                   [--source-ip IP] HOST PORT\n"
	"    proxyshim-send --help | --version\n"
	"\n"
	"DESCRIPTION\n"
	"    Connects to HOST:PORT over TCP, sends one HAProxy PROXY protocol header in a single\n"
	"    write, then relays standard input to the connection and the connection to standard\n"
	"    output. At the end of standard input it shuts down its sending side and keeps\n"
	"    reading until the server closes, then exits.\n"
	"\n"
	"    Without --src the header's source is the connection's own local address, and\n"
	"    without --dst its destination is the server's address, both read after connecting.\n"
	"    When one address is IPv4 and the other IPv6, the IPv4 one is sent as the mapped\n"
	"    address ::ffff:a.b.c.d in a TCP6 or AF_INET6 header, as HAProxy does.\n"
	"\n"
	"    HOST is an IPv4 or IPv6 address (an IPv6 one with or without brackets) or a name.\n"
	"    IPv6 addresses in IP:PORT arguments are written in brackets: [2001:db8::7]:443.\n"
	"\n"
	"OPTIONS\n"
	"    -1, --v1           Send a version 1 (text) header.\n"
	"    -2, --v2           Send a version 2 (binary) header. This is the default.\n"
	"                       -1 and -2 together are an error.\n"
	"    --src IP:PORT      The source (client) address to announce.\n"
	"    --dst IP:PORT      The destination (server) address to announce.\n"
	"    --local            Send a v2 LOCAL header (no addresses); not with --src/--dst.\n"
	"    --authority NAME   Add a v2 AUTHORITY TLV (type 0x02) holding NAME. Repeatable.\n"
	"    --tlv TYPE=HEX     Add a v2 TLV of TYPE (decimal, or hex with 0x; 0..255) whose\n"
	"                       value is HEX (an even number of hex digits, may be empty).\n"
	"                       Repeatable. TLVs from --authority and --tlv go out in the\n"
	"                       order given.\n"
	"    --crc              Append a v2 CRC32C TLV (type 0x03) covering the header.\n"
	"    --source-ip IP     Bind the connection to this local address before connecting.\n"
	"    -h, --help         Print this page and exit.\n"
	"    --version          Print the version and exit.\n"
	"\n"
	"    --local, --authority, --tlv and --crc need version 2; with -1 they are an error.\n"
	"    An option's value may also be given as --opt=VALUE.\n"
	"\n"
	"EXIT STATUS\n"
	"    0   the header was sent and the relay finished.\n"
	"    1   the connection failed (refused, unreachable, name not resolved) or an I/O\n"
	"        error happened during the relay.\n"
	"    2   bad arguments, including TLVs that would make the header longer than\n"
	"        65551 bytes, the most a v2 header can be.\n"
	"\n"
	"EXAMPLES\n"
	"    Ask an HAProxy \"accept-proxy\" listener to see client 203.0.113.7:4711:\n"
	"        printf 'GET / HTTP/1.0\\r\\n\\r\\n' | proxyshim-send --src 203.0.113.7:4711 127.0.0.1 8080\n"
	"\n"
	"    A v1 header with an IPv6 client:\n"
	"        proxyshim-send -1 --src [2001:db8::7]:4711 --dst [2001:db8::1]:443 ::1 8443\n"
	"\n"
	"    A v2 header with an SNI name, a custom TLV and a checksum:\n"
	"        proxyshim-send --authority example.com --tlv 0xE0=0000000000000001 --crc host 443\n"
	"\n"
	"    A health-check style LOCAL header from a chosen local address:\n"
	"        proxyshim-send --local --source-ip 127.0.0.5 127.0.0.1 8080 </dev/null\n";

/* Decimal port, 0..65535, digits only, no leading zeros. 0 on success, -1 otherwise. */
static int parse_port(const char *s, uint16_t *out)
{
	uint32_t v = 0;
	size_t i;

	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9' || i >= 5)
			return -1;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* TLV type: decimal 0..255, or 0x/0X followed by 1 or 2 hex digits. */
static int parse_type(const char *s, size_t n, uint8_t *out)
{
	uint32_t v = 0;
	size_t i;

	if (n == 0)
		return -1;
	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (n > 4)
			return -1;
		for (i = 2; i < n; i++) {
			int d = hex_digit(s[i]);
			if (d < 0)
				return -1;
			v = v * 16 + (uint32_t)d;
		}
	} else {
		if (n > 3)
			return -1;
		for (i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			v = v * 10 + (uint32_t)(s[i] - '0');
		}
	}
	if (v > 255)
		return -1;
	*out = (uint8_t)v;
	return 0;
}

/* An IPv4 or IPv6 address (no brackets) with a port into ss. 0, or -1 when not an address. */
static int make_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return 0;
	}
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return 0;
	}
	return -1;
}

/* IP:PORT, with an IPv6 IP in brackets. Exits with a usage error naming opt when bad. */
static void parse_endpoint(const char *opt, const char *arg, struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *ip_start, *ip_end, *port_text;
	uint16_t port;
	size_t n;

	if (arg[0] == '[') {
		ip_start = arg + 1;
		ip_end = strchr(ip_start, ']');
		if (ip_end == NULL)
			usage_error("%s: missing ']' in '%s' (expected [IPV6]:PORT)", opt, arg);
		if (ip_end[1] != ':')
			usage_error("%s: expected ':PORT' after ']' in '%s'", opt, arg);
		port_text = ip_end + 2;
	} else {
		ip_start = arg;
		ip_end = strchr(arg, ':');
		if (ip_end == NULL)
			usage_error("%s: missing ':PORT' in '%s' (expected IP:PORT)", opt, arg);
		if (strchr(ip_end + 1, ':') != NULL)
			usage_error("%s: an IPv6 address needs brackets, as in [2001:db8::7]:443; got '%s'",
				    opt, arg);
		port_text = ip_end + 1;
	}
	n = (size_t)(ip_end - ip_start);
	if (n == 0 || n >= sizeof(ip))
		usage_error("%s: bad address in '%s'", opt, arg);
	memcpy(ip, ip_start, n);
	ip[n] = '\0';
	if (parse_port(port_text, &port) != 0)
		usage_error("%s: bad port '%s' in '%s' (expected 0..65535)", opt, port_text, arg);
	if (make_addr(ip, port, ss) != 0)
		usage_error("%s: bad IP address '%s'", opt, ip);
	if (arg[0] == '[' && ss->ss_family != AF_INET6)
		usage_error("%s: brackets are for IPv6 addresses only in '%s'", opt, arg);
	if (arg[0] != '[' && ss->ss_family != AF_INET)
		usage_error("%s: bad IP address '%s'", opt, ip);
}

static void add_tlv(struct opts *o, uint8_t type, const uint8_t *value, size_t len)
{
	if (o->ntlvs >= MAX_TLVS || len > 65535 ||
	    o->tlv_bytes + 3 + len > PP2_MAX_LEN - PP2_HEADER_LEN)
		usage_error("the TLVs do not fit in one header (at most %d bytes in all)",
			    PP2_MAX_LEN - PP2_HEADER_LEN);
	tlvs[o->ntlvs].type = type;
	tlvs[o->ntlvs].len = (uint16_t)len;
	tlvs[o->ntlvs].value = value;
	o->ntlvs++;
	o->tlv_bytes += 3 + len;
}

/* TYPE=HEX. The value is decoded in place over the argument's own hex digits. */
static void parse_tlv(struct opts *o, char *arg)
{
	char *eq = strchr(arg, '=');
	uint8_t type;
	size_t i, n;

	if (eq == NULL)
		usage_error("--tlv: expected TYPE=HEX, got '%s'", arg);
	if (parse_type(arg, (size_t)(eq - arg), &type) != 0)
		usage_error("--tlv: bad type '%.*s' in '%s' (expected 0..255, decimal or 0x hex)",
			    (int)(eq - arg), arg, arg);
	char *hex = eq + 1;
	n = strlen(hex);
	if (n % 2 != 0)
		usage_error("--tlv: odd number of hex digits in '%s'", arg);
	for (i = 0; i < n; i++)
		if (hex_digit(hex[i]) < 0)
			usage_error("--tlv: bad hex digit '%c' in '%s'", hex[i], arg);
	uint8_t *value = (uint8_t *)hex;
	for (i = 0; i < n / 2; i++)
		value[i] = (uint8_t)(hex_digit(hex[2 * i]) * 16 + hex_digit(hex[2 * i + 1]));
	add_tlv(o, type, value, n / 2);
}

static void need_v2(struct opts *o, const char *name)
{
	if (o->v2_only == NULL)
		o->v2_only = name;
}

static void set_version(struct opts *o, int v)
{
	if (o->version != 0 && o->version != v)
		usage_error("-1 and -2 are mutually exclusive");
	o->version = v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	const char *pos[2];
	int npos = 0, only_pos = 0;
	char *v;
	int i;

	memset(o, 0, sizeof(*o));
	for (i = 1; i < argc; i++) {
		char *arg = argv[i];

		if (only_pos || arg[0] != '-' || arg[1] == '\0') {
			if (npos == 2)
				usage_error("unexpected argument '%s' after HOST PORT", arg);
			pos[npos++] = arg;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			only_pos = 1;
		} else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			fputs(help_text, stdout);
			exit(fflush(stdout) == 0 ? 0 : 1);
		} else if (strcmp(arg, "--version") == 0) {
			print_version();
		} else if (strcmp(arg, "-1") == 0 || strcmp(arg, "--v1") == 0) {
			set_version(o, 1);
		} else if (strcmp(arg, "-2") == 0 || strcmp(arg, "--v2") == 0) {
			set_version(o, 2);
		} else if (strcmp(arg, "--local") == 0) {
			o->local = 1;
			need_v2(o, "--local");
		} else if (strcmp(arg, "--crc") == 0) {
			o->crc = 1;
			need_v2(o, "--crc");
		} else if ((v = opt_value(argv, argc, &i, "--src")) != NULL) {
			parse_endpoint("--src", v, &o->src);
			o->has_src = 1;
		} else if ((v = opt_value(argv, argc, &i, "--dst")) != NULL) {
			parse_endpoint("--dst", v, &o->dst);
			o->has_dst = 1;
		} else if ((v = opt_value(argv, argc, &i, "--authority")) != NULL) {
			if (v[0] == '\0')
				usage_error("--authority: empty name");
			add_tlv(o, PP2_TYPE_AUTHORITY, (const uint8_t *)v, strlen(v));
			need_v2(o, "--authority");
		} else if ((v = opt_value(argv, argc, &i, "--tlv")) != NULL) {
			parse_tlv(o, v);
			need_v2(o, "--tlv");
		} else if ((v = opt_value(argv, argc, &i, "--source-ip")) != NULL) {
			if (make_addr(v, 0, &o->bind) != 0)
				usage_error("--source-ip: bad IP address '%s'", v);
			o->has_bind = 1;
		} else {
			usage_error("unknown option '%s' (see --help)", arg);
		}
	}

	if (o->version == 0)
		o->version = 2;
	if (o->version == 1 && o->v2_only != NULL)
		usage_error("%s needs a version 2 header; it cannot be used with -1", o->v2_only);
	if (o->local && (o->has_src || o->has_dst))
		usage_error("--local sends no addresses; it cannot be used with --src or --dst");
	if (o->crc && o->tlv_bytes + 7 > PP2_MAX_LEN - PP2_HEADER_LEN)
		usage_error("the TLVs do not fit in one header (at most %d bytes in all)",
			    PP2_MAX_LEN - PP2_HEADER_LEN);
	if (npos < 2)
		usage_error(npos == 0 ? "missing HOST and PORT (see --help)" : "missing PORT (see --help)");
	o->host = pos[0];
	o->port_text = pos[1];
	if (parse_port(o->port_text, &o->port) != 0 || o->port == 0)
		usage_error("bad port '%s' (expected 1..65535)", o->port_text);
	if (o->host[0] == '\0')
		usage_error("empty HOST");
}

/* HOST as a numeric address (IPv6 with or without brackets): 1 when it is one, 0 when it is
 * not (a name), and a usage error for a bracketed non-IPv6. */
static int host_literal(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN + 1];
	size_t n = strlen(host);

	if (host[0] == '[') {
		if (n < 3 || host[n - 1] != ']' || n - 2 >= sizeof(ip))
			usage_error("bad HOST '%s'", host);
		memcpy(ip, host + 1, n - 2);
		ip[n - 2] = '\0';
		memset(ss, 0, sizeof(*ss));
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) != 1)
			usage_error("bad IPv6 address in HOST '%s'", host);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return 1;
	}
	return make_addr(host, port, ss) == 0;
}

static socklen_t addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
					 : (socklen_t)sizeof(struct sockaddr_in);
}

static const char *family_name(int family)
{
	return family == AF_INET6 ? "IPv6" : "IPv4";
}

/* One connection attempt. Returns the fd, or -1 with errno set and *what naming the step. */
static int try_connect(const struct opts *o, const struct sockaddr_storage *to, const char **what)
{
	int fd = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int err;

	*what = "socket";
	if (fd < 0)
		return -1;
	if (o->has_bind) {
		*what = "bind";
		if (bind(fd, (const struct sockaddr *)&o->bind, addr_len(&o->bind)) != 0)
			goto err_close;
	}
	*what = "connect";
	while (connect(fd, (const struct sockaddr *)to, addr_len(to)) != 0) {
		if (errno != EINTR)
			goto err_close;
		/* An interrupted connect goes on in the background: wait for its outcome. */
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		socklen_t len = sizeof(err);
		while (poll(&p, 1, -1) < 0)
			if (errno != EINTR)
				goto err_close;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			goto err_close;
		if (err != 0) {
			errno = err;
			goto err_close;
		}
		break;
	}
	return fd;
err_close:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

static int connect_host(const struct opts *o)
{
	struct sockaddr_storage to;
	struct addrinfo hints, *res = NULL, *ai;
	const char *what = "connect";
	int fd, err = 0, rc;

	if (host_literal(o->host, o->port, &to)) {
		if (o->has_bind && o->bind.ss_family != to.ss_family)
			usage_error("--source-ip is %s but HOST '%s' is %s", family_name(o->bind.ss_family),
				    o->host, family_name(to.ss_family));
		fd = try_connect(o, &to, &what);
		if (fd < 0)
			die(1, "%s to %s port %s: %s", what, o->host, o->port_text, strerror(errno));
		return fd;
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = o->has_bind ? o->bind.ss_family : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(o->host, NULL, &hints, &res);
	if (rc != 0)
		die(1, "cannot resolve '%s'%s%s: %s", o->host, o->has_bind ? " as " : "",
		     o->has_bind ? family_name(o->bind.ss_family) : "", gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(to))
			continue;
		memset(&to, 0, sizeof(to));
		memcpy(&to, ai->ai_addr, ai->ai_addrlen);
		if (to.ss_family == AF_INET)
			((struct sockaddr_in *)&to)->sin_port = htons(o->port);
		else
			((struct sockaddr_in6 *)&to)->sin6_port = htons(o->port);
		fd = try_connect(o, &to, &what);
		if (fd >= 0) {
			freeaddrinfo(res);
			return fd;
		}
		err = errno;
	}
	freeaddrinfo(res);
	die(1, "%s to %s port %s: %s", what, o->host, o->port_text,
	    err != 0 ? strerror(err) : "no IPv4 or IPv6 address");
}

/* An IPv4 address as ::ffff:a.b.c.d, so that it can share a header with an IPv6 one. */
static void map_v4(struct sockaddr_storage *ss)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	if (ss->ss_family != AF_INET)
		return;
	memcpy(&sin, ss, sizeof(sin));
	memset(ss, 0, sizeof(*ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = sin.sin_port;
	sin6->sin6_addr.s6_addr[10] = 0xff;
	sin6->sin6_addr.s6_addr[11] = 0xff;
	memcpy(&sin6->sin6_addr.s6_addr[12], &sin.sin_addr, 4);
}

/* All of buf to fd, through short writes and EINTR. 0, or -1 with errno set. */
static int send_all(int fd, const uint8_t *p, size_t n, int flags)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, flags | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static size_t build_header(const struct opts *o, int fd)
{
	struct sockaddr_storage src, dst;
	socklen_t len;
	int n;

	if (o->version == 2 && o->local) {
		n = pp_build_v2(buf, sizeof(buf), PP_CMD_LOCAL, NULL, NULL, tlvs, o->ntlvs,
				o->crc ? PP_BUILD_CRC32C : 0);
		goto done;
	}
	if (o->has_src) {
		src = o->src;
	} else {
		len = sizeof(src);
		memset(&src, 0, sizeof(src));
		if (getsockname(fd, (struct sockaddr *)&src, &len) != 0)
			die(1, "getsockname: %s", strerror(errno));
	}
	if (o->has_dst) {
		dst = o->dst;
	} else {
		len = sizeof(dst);
		memset(&dst, 0, sizeof(dst));
		if (getpeername(fd, (struct sockaddr *)&dst, &len) != 0)
			die(1, "getpeername: %s", strerror(errno));
	}
	if (src.ss_family != dst.ss_family) {
		map_v4(&src);
		map_v4(&dst);
	}
	if (o->version == 1)
		n = pp_build_v1(buf, sizeof(buf), (const struct sockaddr *)&src,
				(const struct sockaddr *)&dst);
	else
		n = pp_build_v2(buf, sizeof(buf), PP_CMD_PROXY, (const struct sockaddr *)&src,
				(const struct sockaddr *)&dst, tlvs, o->ntlvs,
				o->crc ? PP_BUILD_CRC32C : 0);
done:
	if (o->version == 2 && (n == -EINVAL || n == -ENOSPC))
		usage_error("cannot build the header: the TLVs make it longer than %d bytes",
			    PP2_MAX_LEN);
	if (n <= 0)
		die(1, "cannot build the header (%d)", n);
	return (size_t)n;
}

/* One direction of the relay: a slice of buf, the bytes waiting in it, and whether the
 * source has ended. */
struct pipe_half {
	uint8_t *data;
	size_t cap;
	size_t off, len;
	int eof;
};

static int write_fd(int fd, const uint8_t *p, size_t n, int is_sock)
{
	if (is_sock)
		return (int)send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	return (int)write(fd, p, n);
}

static int read_fd(int fd, uint8_t *p, size_t n, int is_sock)
{
	if (is_sock)
		return (int)recv(fd, p, n, MSG_DONTWAIT);
	return (int)read(fd, p, n);
}

/* Moves bytes for one half: flushes what waits, else reads more. 0, or -1 with errno set and
 * *what naming the failed call. */
static int pump(struct pipe_half *h, int in, int in_sock, short in_ev, int out, int out_sock,
		short out_ev, const char **what)
{
	ssize_t r;

	if (h->len > 0 && (out_ev & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))) {
		r = write_fd(out, h->data + h->off, h->len, out_sock);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			*what = out_sock ? "send" : "write to standard output";
			return -1;
		}
		h->off += (size_t)r;
		h->len -= (size_t)r;
	} else if (h->len == 0 && !h->eof && (in_ev & (POLLIN | POLLERR | POLLHUP | POLLNVAL))) {
		if (!in_sock && (in_ev & POLLNVAL)) {
			h->eof = 1; /* standard input closed: nothing to send */
			return 0;
		}
		r = read_fd(in, h->data, h->cap, in_sock);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			*what = in_sock ? "recv" : "read from standard input";
			return -1;
		}
		h->off = 0;
		h->len = (size_t)r;
		if (r == 0)
			h->eof = 1;
	}
	return 0;
}

/* stdin to the socket and the socket to stdout until both have ended. Each direction has its own
 * half of buf, so a server that writes while we write never deadlocks us. */
static int relay(int fd)
{
	struct pipe_half up = { buf, sizeof(buf) / 2, 0, 0, 0 };
	struct pipe_half down = { buf + sizeof(buf) / 2, sizeof(buf) - sizeof(buf) / 2, 0, 0, 0 };
	int shut = 0;
	const char *what = "";

	for (;;) {
		struct pollfd p[3];

		if (up.eof && up.len == 0 && !shut) {
			if (shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) {
				say("shutdown: %s", strerror(errno));
				return 1;
			}
			shut = 1;
		}
		if (shut && down.eof && down.len == 0)
			return 0;

		p[0].fd = (!up.eof && up.len == 0) ? STDIN_FILENO : -1;
		p[0].events = POLLIN;
		p[1].fd = fd;
		p[1].events = (short)((up.len > 0 ? POLLOUT : 0) |
				      (!down.eof && down.len == 0 ? POLLIN : 0));
		if (p[1].events == 0)
			p[1].fd = -1;
		p[2].fd = down.len > 0 ? STDOUT_FILENO : -1;
		p[2].events = POLLOUT;
		p[0].revents = p[1].revents = p[2].revents = 0;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			say("poll: %s", strerror(errno));
			return 1;
		}
		if (pump(&up, STDIN_FILENO, 0, p[0].revents, fd, 1, p[1].revents, &what) != 0 ||
		    pump(&down, fd, 1, p[1].revents, STDOUT_FILENO, 0, p[2].revents, &what) != 0) {
			say("%s: %s", what, strerror(errno));
			return 1;
		}
	}
}

/* With fd 0, 1 or 2 closed, the socket could take its number and be relayed to itself. */
static void reserve_std_fds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0 && fd <= STDERR_FILENO)
		if (fcntl(fd, F_SETFD, 0) != 0)
			break;
	if (fd > STDERR_FILENO)
		close(fd);
}

int main(int argc, char **argv)
{
	struct opts o;
	size_t n;
	int fd, rc;

	reserve_std_fds();
	parse_args(argc, argv, &o);
	fd = connect_host(&o);
	n = build_header(&o, fd);
	if (send_all(fd, buf, n, 0) != 0)
		die(1, "sending the header to %s port %s: %s", o.host, o.port_text, strerror(errno));
	rc = relay(fd);
	close(fd);
	return rc;
}
