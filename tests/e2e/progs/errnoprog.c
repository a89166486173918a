/* errnoprog: a server under PROXYSHIM_CONSUME=lazy that checks, around every call the shim
 * hooks, that a successful call leaves errno as it was (STYLE.md: hooks keep libc's contract),
 * while the shim waits for a header that arrives late and in pieces behind them.
 *
 * Usage: errnoprog --first read|recv_dontwait|getpeername|getsockname [--max-conns N]
 *   Prints "listening PORT", then per connection one JSON line:
 *   {"n":1,"listen_kept":true,"accept_kept":true,"first":{"rc":..,"errno_kept":..,
 *    "eagain":N},"rest_kept":true,"gp_kept":true,"peer":{..},"bytes":N,"hex":".."}
 *   "first" is the call that takes the header: a blocking read(), recv(MSG_DONTWAIT) repeated
 *   while it fails with EAGAIN ("eagain" counts those: the shim's answer, errno EAGAIN, not a
 *   kept errno), getpeername() or getsockname(). "rest_kept": every later read() that returned
 *   data kept errno; "gp_kept": getpeername() after the header did. */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common.h"

#define MARK 4321

int main(int argc, char **argv)
{
	const char *first = "read";
	unsigned max = 1;
	for (int i = 1; i < argc; i++) {
		bool has = i + 1 < argc;
		if (!strcmp(argv[i], "--first") && has) first = argv[++i];
		else if (!strcmp(argv[i], "--max-conns") && has) max = (unsigned)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "errnoprog: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 1;
	errno = MARK;
	if (listen(lfd, 64) < 0)
		return 1;
	bool listen_kept = errno == MARK;
	if (getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
		return 1;
	struct out lo = {0};
	out_f(&lo, "listening %u", ntohs(sa.sin_port));
	out_line(&lo);
	free(lo.buf);

	for (unsigned n = 1; n <= max; n++) {
		struct out o = {0};
		uint8_t buf[4096], all[65536];
		size_t total = 0;
		ssize_t r = 0;
		int e, eagain = 0;
		bool rest_kept = true;
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);

		errno = MARK;
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			return 1;
		bool accept_kept = errno == MARK;
		for (;;) {
			errno = MARK;
			if (!strcmp(first, "read")) {
				r = read(fd, buf, sizeof(buf));
			} else if (!strcmp(first, "recv_dontwait")) {
				r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			} else {
				len = sizeof(ss);
				r = !strcmp(first, "getpeername") ? getpeername(fd, (struct sockaddr *)&ss, &len)
								 : getsockname(fd, (struct sockaddr *)&ss, &len);
			}
			e = errno;
			if (r < 0 && e == EAGAIN && eagain < 1000) {
				struct timespec pause = {0, 5 * 1000 * 1000};
				eagain++;
				nanosleep(&pause, NULL);
				continue;
			}
			break;
		}
		out_f(&o, "{\"n\":%u,\"listen_kept\":%s,\"accept_kept\":%s,\"first\":{\"rc\":%zd,\"errno\":\"%s\","
			  "\"errno_kept\":%s,\"eagain\":%d}", n, listen_kept ? "true" : "false",
		      accept_kept ? "true" : "false", r, r < 0 ? errname(e) : "0", e == MARK ? "true" : "false",
		      eagain);
		if (r > 0 && (!strcmp(first, "read") || !strcmp(first, "recv_dontwait"))) {
			memcpy(all, buf, (size_t)r);
			total = (size_t)r;
		}
		for (;;) {
			errno = MARK;
			r = read(fd, buf, sizeof(buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			rest_kept &= errno == MARK;
			if (total + (size_t)r > sizeof(all))
				break;
			memcpy(all + total, buf, (size_t)r);
			total += (size_t)r;
		}
		errno = MARK;
		len = sizeof(ss);
		int gp = getpeername(fd, (struct sockaddr *)&ss, &len);
		out_f(&o, ",\"rest_kept\":%s,\"gp_kept\":%s,\"peer\":", rest_kept ? "true" : "false",
		      gp == 0 && errno == MARK ? "true" : "false");
		out_name(&o, fd, 1);
		out_f(&o, ",\"bytes\":%zu,\"hex\":", total);
		out_hex(&o, all, total);
		out_f(&o, "}");
		out_line(&o);
		free(o.buf);
		close(fd);
	}
	return 0;
}
