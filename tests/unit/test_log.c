/* The log line (shim/core/log.c, shim_log_format): the ts= prefix in UTC against dates worked
 * out by hand, and values quoted and escaped as logfmt does, for the forms the shim's callers
 * use ("key=%s", "key=\"%s\"", and header.c's detail given in pieces); a line cut short still
 * ends in a closed quote and '\n'. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"

static size_t fmt_line(char *buf, size_t size, time_t sec, long nsec, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static size_t fmt_line(char *buf, size_t size, time_t sec, long nsec, const char *fmt, ...)
{
	struct timespec now = {.tv_sec = sec, .tv_nsec = nsec};
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = shim_log_format(buf, size, SHIM_LOG_WARN, &now, 812, fmt, ap);
	va_end(ap);
	return n;
}

static void test_timestamps(void **state)
{
	static const struct {
		time_t sec;
		long nsec;
		const char *want;
	} cases[] = {
		{0, 0, "1970-01-01T00:00:00.000Z"},
		{1796288462, 345678901, "2026-12-03T09:01:02.345Z"},
		{1709251199, 999999999, "2024-02-29T23:59:59.999Z"}, /* a leap day, ms not rounded up */
		{951868800, 1000000, "2000-03-01T00:00:00.001Z"},    /* after 2000's Feb 29 */
		{-1, 0, "1969-12-31T23:59:59.000Z"},
		{253402300799, 0, "9999-12-31T23:59:59.000Z"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[256], want[256];
		size_t n = fmt_line(buf, sizeof(buf), cases[i].sec, cases[i].nsec, "event=x");
		snprintf(want, sizeof(want), "proxyshim: ts=%s pid=812 level=warn event=x\n", cases[i].want);
		buf[n] = '\0';
		assert_string_equal(buf, want);
	}
}

#define PRE "proxyshim: ts=2026-12-03T09:01:02.345Z pid=812 level=warn "
#define T 1796288462, 345000000

static void check(const char *got, size_t n, const char *want)
{
	assert_int_equal(n, strlen(want));
	assert_memory_equal(got, want, n);
}

static void test_values(void **state)
{
	char b[512];
	const char *bits = " detail=\"", *end = "\"";
	(void)state;

	check(b, fmt_line(b, sizeof(b), T, "event=a path=%s port=%u", "/plain/x.prom", 443u),
	      PRE "event=a path=/plain/x.prom port=443\n");
	check(b, fmt_line(b, sizeof(b), T, "event=a path=%s port=%u", "/a b/\"c\"", 443u),
	      PRE "event=a path=\"/a b/\\\"c\\\"\" port=443\n");
	check(b, fmt_line(b, sizeof(b), T, "event=a x=%s y=%s", "k=v", ""), PRE "event=a x=\"k=v\" y=\"\"\n");
	check(b, fmt_line(b, sizeof(b), T, "event=a detail=\"%s\" n=%d", "a \"b\" c\\d\ne\tf\x01", -5),
	      PRE "event=a detail=\"a \\\"b\\\" c\\\\d\\ne\\tf\\u0001\" n=-5\n");
	/* header.c: the key and its quotes come as arguments around the value */
	check(b, fmt_line(b, sizeof(b), T, "event=reject reason=%s%s%s%s peer=%s port=%u", "invalid", bits,
			  "v1: \"x\"", end, "10.0.0.7:41234", 443u),
	      PRE "event=reject reason=invalid detail=\"v1: \\\"x\\\"\" peer=10.0.0.7:41234 port=443\n");
	check(b, fmt_line(b, sizeof(b), T, "event=reject reason=%s%s%s%s peer=%s", "invalid", bits, "", end, "p"),
	      PRE "event=reject reason=invalid detail=\"\" peer=p\n");
	check(b, fmt_line(b, sizeof(b), T, "event=reject reason=%s%s%s%s peer=%s", "timeout", "", "", "", "p"),
	      PRE "event=reject reason=timeout peer=p\n");
	check(b, fmt_line(b, sizeof(b), T, "event=a n=%zu m=%lu k=%lld x=%x %%", (size_t)7, 8ul, -9ll, 255u),
	      PRE "event=a n=7 m=8 k=-9 x=ff %\n");
}

static void test_cut_short(void **state)
{
	char b[128], big[400];
	(void)state;
	memset(big, '"', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/* from the first size with room for the value's opening quote and one byte */
	for (size_t size = sizeof(PRE "event=a v=\"x") + 2; size <= sizeof(b); size++) {
		size_t n = fmt_line(b, size, T, "event=a v=%s w=%s", big, "x");
		assert_true(n <= size && n > 2);
		assert_memory_equal(b + n - 2, "\"\n", 2);
		/* never a lone backslash before the closing quote: escapes are whole */
		size_t bs = 0;
		for (size_t i = n - 3; i > 0 && b[i] == '\\'; i--)
			bs++;
		assert_true(bs % 2 == 0);
		assert_null(memchr(b, '\n', n - 1));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timestamps),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_cut_short),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
