/* The TLV iterator and lookups on their own: framing errors at every cut, NOOP skipping,
 * first-match lookups, and accessors on a header with no TLV area. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxyshim_proto.h"

static const uint8_t area[] = "\x01\x00\x02h2"        /* ALPN */
			      "\x04\x00\x03pad"       /* NOOP, skipped */
			      "\x04\x00\x00"          /* empty NOOP, skipped */
			      "\x02\x00\x01x"         /* AUTHORITY */
			      "\x01\x00\x08http/1.1"; /* a second ALPN */

static void test_iterate(void **state)
{
	struct pp_tlv_iter it;
	struct pp_tlv t;
	(void)state;

	pp_tlv_iter_init(&it, area, sizeof(area) - 1);
	assert_int_equal(pp_tlv_next(&it, &t), 1);
	assert_int_equal(t.type, PP2_TYPE_ALPN);
	assert_int_equal(t.len, 2);
	assert_ptr_equal(t.value, area + 3);
	assert_int_equal(pp_tlv_next(&it, &t), 1);
	assert_int_equal(t.type, PP2_TYPE_AUTHORITY);
	assert_ptr_equal(t.value, area + 17);
	assert_int_equal(pp_tlv_next(&it, &t), 1);
	assert_int_equal(t.len, 8);
	assert_int_equal(pp_tlv_next(&it, &t), 0);
	assert_int_equal(pp_tlv_next(&it, &t), 0);

	pp_tlv_iter_init(&it, NULL, 0);
	assert_int_equal(pp_tlv_next(&it, &t), 0);
	pp_tlv_iter_init(&it, area + 5, 9); /* only NOOPs */
	assert_int_equal(pp_tlv_next(&it, &t), 0);
}

/* Cut the area anywhere that is not a TLV boundary: the iterator reports -1 at the cut TLV
 * after yielding the whole ones before it, and never reads past the cut. */
static void test_every_cut(void **state)
{
	static const size_t bounds[] = {0, 5, 11, 14, 18, 29};
	(void)state;

	for (size_t cut = 0; cut <= sizeof(area) - 1; cut++) {
		uint8_t copy[64];
		struct pp_tlv_iter it;
		struct pp_tlv t;
		int boundary = 0, r, whole = 0;

		for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
			boundary |= bounds[i] == cut;
		memcpy(copy, area, cut);
		pp_tlv_iter_init(&it, copy, cut);
		while ((r = pp_tlv_next(&it, &t)) == 1) {
			assert_true(t.value + t.len <= copy + cut);
			whole++;
		}
		assert_int_equal(r, boundary ? 0 : -1);
		assert_true(whole <= 3);
		if (!boundary)
			assert_int_equal(pp_tlv_next(&it, &t), -1); /* stays failed */
	}
}

static void test_find(void **state)
{
	struct pp_header h;
	struct pp_tlv t;
	uint8_t c;
	uint32_t v;
	uint64_t id;
	const char *s;
	size_t n;
	(void)state;

	memset(&h, 0, sizeof(h));
	h.tlv = area;
	h.tlv_len = sizeof(area) - 1;
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_ALPN, &t), 1);
	assert_int_equal(t.len, 2); /* the first one */
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_AUTHORITY, &t), 1);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_NOOP, &t), 0);
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_SSL, &t), 0);
	/* a framing error ends the search */
	h.tlv_len = 12;
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_AUTHORITY, &t), 0);

	h.tlv = NULL;
	h.tlv_len = 0;
	assert_int_equal(pp_tlv_find(&h, PP2_TYPE_ALPN, &t), 0);
	assert_int_equal(pp_tlv_ssl(&h, &c, &v), 0);
	assert_int_equal(pp_tlv_find_ssl(&h, PP2_SUBTYPE_SSL_CN, &t), 0);
	assert_int_equal(pp_tlv_aws_vpce_id(&h, &s, &n), 0);
	assert_int_equal(pp_tlv_azure_linkid(&h, &v), 0);
	assert_int_equal(pp_tlv_gcp_psc_id(&h, &id), 0);
}

static void test_strerror(void **state)
{
	(void)state;
	for (int e = 0; e < PP_E_MAX; e++) {
		const char *s = pp_strerror((enum pp_error)e);

		assert_non_null(s);
		assert_true(strlen(s) > 5);
		for (int f = 0; f < e; f++)
			assert_string_not_equal(s, pp_strerror((enum pp_error)f));
	}
	assert_non_null(pp_strerror(PP_E_MAX));
	assert_non_null(pp_strerror((enum pp_error)-1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iterate),
		cmocka_unit_test(test_every_cut),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
