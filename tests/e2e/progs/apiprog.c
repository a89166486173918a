/* apiprog: a program that opts in to the application API (proxyshim_peer, proxyshim_tlv),
 * looking both up with dlsym(RTLD_DEFAULT, ...) so that it runs with and without the shim.
 *
 * Usage: apiprog [--listen HOST:PORT] [--max-conns N] [--tlv TYPE ...] [--read-first]
 *   Prints "listening PORT", then per connection one JSON line:
 *   {"n":1,"have_api":true,"peer":{getpeername},"api_peer":{"rc":0,"errno":..,"errno_kept":..,
 *    "version":2,"command":1,"src":{..},"dst":{..},"src_len":16,"dst_len":16},
 *    "tlvs":{"0x01":{"rc":2,"errno":"0","hex":".."},...},"tlv_trunc":{..},"bytes":N,"hex":"..",
 *    "after_close":{"peer_errno":"EBADF","tlv_errno":"EBADF"},"bad_fd":..,"not_sock":..,
 *    "big_type":..}
 *   By default the API is asked first and the payload read after (so a lazy header is taken by
 *   the API call); --read-first reads the payload first. Each --tlv TYPE (0x.. or decimal) is
 *   asked with a 256-byte buffer; the first one is also asked with a 2-byte buffer (tlv_trunc:
 *   the return value and the buffer's first 4 bytes, prefilled with 0xAA). */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "proxyshim.h"

typedef int (*peer_fn)(int, struct proxyshim_peer_info *);
typedef ssize_t (*tlv_fn)(int, unsigned, void *, size_t);

static peer_fn g_peer;
static tlv_fn g_tlv;

static void out_api_peer(struct out *o, int fd)
{
	struct proxyshim_peer_info pi;
	memset(&pi, 0x5A, sizeof(pi));
	errno = 4321;
	int r = g_peer(fd, &pi);
	int e = errno;
	out_f(o, "{\"rc\":%d,\"errno\":\"%s\",\"errno_kept\":%s", r, r < 0 ? errname(e) : "0",
	      e == 4321 ? "true" : "false");
	if (r == 0) {
		out_f(o, ",\"version\":%d,\"command\":%d,\"src_len\":%u,\"dst_len\":%u,\"src\":", pi.version,
		      pi.command, (unsigned)pi.src_len, (unsigned)pi.dst_len);
		out_sa(o, (struct sockaddr *)&pi.src, pi.src_len);
		out_f(o, ",\"dst\":");
		out_sa(o, (struct sockaddr *)&pi.dst, pi.dst_len);
	}
	out_f(o, "}");
}

static void out_api_tlv(struct out *o, int fd, unsigned type, size_t len)
{
	unsigned char buf[256];
	memset(buf, 0xAA, sizeof(buf));
	errno = 4321;
	ssize_t r = g_tlv(fd, type, buf, len);
	int e = errno;
	out_f(o, "{\"rc\":%zd,\"errno\":\"%s\",\"errno_kept\":%s", r, r < 0 ? errname(e) : "0",
	      e == 4321 ? "true" : "false");
	if (r >= 0) {
		out_f(o, ",\"hex\":");
		out_hex(o, buf, (size_t)r < len ? (size_t)r : len);
		out_f(o, ",\"head\":");
		out_hex(o, buf, 4);
	}
	out_f(o, "}");
}

int main(int argc, char **argv)
{
	char def[] = "127.0.0.1:0";
	char *listen_at = def;
	unsigned max = 1, types[32], ntypes = 0;
	bool read_first = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if (!strcmp(a, "--listen") && has) listen_at = argv[++i];
		else if (!strcmp(a, "--max-conns") && has) max = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(a, "--tlv") && has && ntypes < 32) types[ntypes++] = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--read-first")) read_first = true;
		else {
			fprintf(stderr, "apiprog: unknown option %s\n", a);
			return 2;
		}
	}
	g_peer = (peer_fn)dlsym(RTLD_DEFAULT, "proxyshim_peer");
	g_tlv = (tlv_fn)dlsym(RTLD_DEFAULT, "proxyshim_tlv");

	const char *host;
	unsigned port;
	if (split_hostport(listen_at, &host, &port) < 0)
		return 2;
	int lfd = listen_on(host, port);
	if (lfd < 0)
		return 1;
	for (unsigned n = 1; n <= max; n++) {
		struct out o = {0};
		unsigned char buf[4096], *all = NULL;
		size_t total = 0;
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			return 1;
		out_f(&o, "{\"n\":%u,\"fd\":%d,\"have_api\":%s", n, fd, g_peer && g_tlv ? "true" : "false");
		for (int pass = 0; pass < 2; pass++) {
			bool reading = (pass == 0) == read_first;
			if (reading) {
				for (;;) {
					ssize_t r = read(fd, buf, sizeof(buf));
					if (r < 0 && errno == EINTR)
						continue;
					if (r <= 0)
						break;
					all = realloc(all, total + (size_t)r);
					if (!all)
						return 3;
					memcpy(all + total, buf, (size_t)r);
					total += (size_t)r;
				}
				out_f(&o, ",\"bytes\":%zu,\"hex\":", total);
				out_hex(&o, all, total);
			} else if (g_peer && g_tlv) {
				out_f(&o, ",\"api_peer\":");
				out_api_peer(&o, fd);
				out_f(&o, ",\"tlvs\":{");
				for (unsigned i = 0; i < ntypes; i++) {
					out_f(&o, "%s\"0x%02x\":", i ? "," : "", types[i]);
					out_api_tlv(&o, fd, types[i], 256);
				}
				out_f(&o, "}");
				if (ntypes) {
					out_f(&o, ",\"tlv_trunc\":");
					out_api_tlv(&o, fd, types[0], 2);
				}
				out_f(&o, ",\"big_type\":");
				out_api_tlv(&o, fd, 0x101, 256);
			}
		}
		out_f(&o, ",\"peer\":");
		out_name(&o, fd, 1);
		close(fd);
		if (g_peer && g_tlv) {
			out_f(&o, ",\"after_close\":");
			out_api_peer(&o, fd);
			out_f(&o, ",\"after_close_tlv\":");
			out_api_tlv(&o, fd, ntypes ? types[0] : 1, 256);
			int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
			out_f(&o, ",\"bad_fd\":");
			out_api_peer(&o, -1);
			out_f(&o, ",\"not_sock\":");
			out_api_peer(&o, dn);
			close(dn);
		}
		out_f(&o, "}");
		out_line(&o);
		free(o.buf);
		free(all);
	}
	return 0;
}
