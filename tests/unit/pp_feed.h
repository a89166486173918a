/* Test helper for the parser tests: inputs placed at the end of a page followed by a
 * PROT_NONE page, so any read at or past len faults instead of passing; and the
 * every-prefix check (byte by byte) every table entry goes through. */
#ifndef PP_FEED_H
#define PP_FEED_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxyshim_proto.h"

#define FEED_PAGES 20 /* 81920 bytes with 4 KiB pages: a 65551-byte header and then some */

static uint8_t *feed_area;
static size_t feed_size;
static const uint8_t *feed_last; /* where the last feed_parse() placed its input */

static inline int feed_setup(void **state)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	(void)state;
	feed_size = FEED_PAGES * pg;
	feed_area = mmap(NULL, feed_size + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	if (feed_area == MAP_FAILED)
		return -1;
	return mprotect(feed_area + feed_size, pg, PROT_NONE);
}

static inline int feed_teardown(void **state)
{
	(void)state;
	return munmap(feed_area, feed_size + (size_t)sysconf(_SC_PAGESIZE));
}

/* The first len bytes of in, ending exactly at the guard page. */
static inline const uint8_t *feed_place(const void *in, size_t len)
{
	uint8_t *p;

	assert_true(len <= feed_size);
	p = feed_area + feed_size - len;
	memcpy(p, in, len);
	return p;
}

/* pp_parse() on the first len bytes of in, guarded; *at gets where they were placed.
 * out is poisoned first so a field the parser forgets to set shows up. */
static inline int feed_parse(const void *in, size_t len, unsigned versions, struct pp_header *out,
		      const uint8_t **at)
{
	const uint8_t *p = feed_place(in, len);

	memset(out, 0xA5, sizeof(*out));
	feed_last = p;
	if (at)
		*at = p;
	return pp_parse(p, len, versions, out);
}

/* Prefixes worth feeding: all of them, except for very large inputs, where every prefix
 * would cost O(n^2) copying: there, the first and last 600 and every 251st between. */
static inline int feed_prefix_wanted(size_t k, size_t n)
{
	return n <= 4096 || k < 600 || n - k < 600 || k % 251 == 0;
}

/* What pp_parse() reported needing after a PP_INCOMPLETE on the first k bytes of `in`: more
 * than nothing, and, when the input is a valid header of `full` bytes (0: it is not), never
 * past its end, and exactly the rest of it for v2 once the 16 fixed bytes are in. */
static inline void feed_check_need(const char *name, const uint8_t *in, size_t k, size_t full,
				   const struct pp_header *h)
{
	if (h->need == 0)
		fail_msg("%s: prefix %zu: PP_INCOMPLETE with need 0", name, k);
	if (!full)
		return;
	if (k + h->need > full)
		fail_msg("%s: prefix %zu of a %zu-byte header: need %u overshoots", name, k, full,
			 h->need);
	if (in[0] == 0x0D && k >= PP2_HEADER_LEN && k + h->need != full)
		fail_msg("%s: prefix %zu of a %zu-byte v2 header: need %u, want exactly %zu", name, k,
			 full, h->need, full - k);
}

/* Checks input `in` (n bytes, maybe with bytes after the header) against its expected
 * result: `ret` (a header length, or PP_INVALID/PP_NOT_PROXY/PP_INCOMPLETE) and `err`.
 * Every proper prefix of the header must be PP_INCOMPLETE, or, for a rejected input, already
 * the same answer; from `decided` bytes on (if non-zero) the answer must be final. */
static inline void feed_check(const char *name, const void *in, size_t n, unsigned versions, int ret,
		       enum pp_error err, size_t decided, struct pp_header *full)
{
	struct pp_header h;
	size_t stop = ret > 0 ? (size_t)ret : n;
	int r;

	for (size_t k = 0; k < stop; k++) {
		if (!feed_prefix_wanted(k, stop))
			continue;
		r = feed_parse(in, k, versions, &h, NULL);
		if (ret > 0 || (decided && k < decided) || r == PP_INCOMPLETE) {
			if (r != PP_INCOMPLETE)
				fail_msg("%s: prefix %zu of %zu: got %d (%s), want PP_INCOMPLETE", name,
					 k, n, r, pp_strerror(h.error));
			feed_check_need(name, (const uint8_t *)in, k, ret > 0 ? (size_t)ret : 0, &h);
			continue;
		}
		if (r != ret || (ret == PP_INVALID && h.error != err))
			fail_msg("%s: prefix %zu of %zu: got %d (%s), want %d (%s)", name, k, n, r,
				 pp_strerror(h.error), ret, pp_strerror(err));
	}
	if (decided)
		for (size_t k = decided; k <= n; k++) {
			r = feed_parse(in, k, versions, &h, NULL);
			if (r != ret || (ret == PP_INVALID && h.error != err))
				fail_msg("%s: not decided at %zu bytes: got %d (%s), want %d (%s)", name,
					 k, r, pp_strerror(h.error), ret, pp_strerror(err));
		}
	r = feed_parse(in, n, versions, full, NULL);
	if (r != ret || (ret == PP_INVALID && full->error != err) ||
	    (ret != PP_INVALID && full->error != PP_E_OK))
		fail_msg("%s: got %d (%s), want %d (%s)", name, r, pp_strerror(full->error), ret,
			 pp_strerror(err));
	if (ret > 0)
		assert_int_equal(full->len, (uint32_t)ret);
}

#endif
