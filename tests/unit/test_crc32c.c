/* CRC32C: known vectors (RFC 3720 B.4 and the usual check value), and the table and SSE4.2
 * paths against a bitwise reference at every length and alignment, continued in pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/pp_internal.h"

static uint32_t ref(uint32_t crc, const uint8_t *p, size_t n)
{
	uint32_t c = ~crc;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
	}
	return ~c;
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static void check_vectors(crc_fn f)
{
	uint8_t b[32];

	assert_int_equal(f(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(f(0, "", 0), 0);
	memset(b, 0, sizeof(b));
	assert_int_equal(f(0, b, 32), 0x8A9136AAu);
	memset(b, 0xFF, sizeof(b));
	assert_int_equal(f(0, b, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	assert_int_equal(f(0, b, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)(31 - i);
	assert_int_equal(f(0, b, 32), 0x113FDB5Cu);
}

static void check_against_ref(crc_fn f)
{
	static uint8_t buf[1100];
	uint32_t x = 12345;

	for (size_t i = 0; i < sizeof(buf); i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
	for (size_t align = 0; align < 8; align++) {
		for (size_t n = 0; n <= 1024; n++) {
			uint32_t want = ref(0, buf + align, n);
			size_t cut = n / 3;

			assert_int_equal(f(0, buf + align, n), want);
			/* continued: any split gives the same value */
			assert_int_equal(f(f(0, buf + align, cut), buf + align + cut, n - cut), want);
		}
	}
}

static void test_table_path(void **state)
{
	(void)state;
	check_vectors(pp_crc32c_sw);
	check_against_ref(pp_crc32c_sw);
}

static void test_hw_path(void **state)
{
	(void)state;
	if (!pp_crc32c_hw_available())
		skip(); /* this CPU has no SSE4.2: the table path above is what runs */
	check_vectors(pp_crc32c_hw);
	check_against_ref(pp_crc32c_hw);
}

static void test_dispatch(void **state)
{
	(void)state;
	check_vectors(pp_crc32c);
	check_against_ref(pp_crc32c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_path),
		cmocka_unit_test(test_hw_path),
		cmocka_unit_test(test_dispatch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
