/* CRC32C (Castagnoli, reflected 0x82F63B78, init and final xor 0xFFFFFFFF): a portable
 * slicing-by-8 table version and the SSE4.2 crc32 instruction, chosen per call at run time. */
#include "pp_internal.h"

#include "crc32c_table.h"

#if defined(__x86_64__) && !defined(PP_CRC32C_FORCE_TABLE)
#define PP_HAVE_HW 1
#include <cpuid.h>
#include <nmmintrin.h>
#endif

static uint32_t sw_update(uint32_t c, const uint8_t *p, size_t n)
{
	/* Align to 8 so the 64-bit loads below are natural; byte order is little-endian
	 * arithmetic, so assemble words by hand to stay endian-independent. */
	while (n && ((uintptr_t)p & 7u)) {
		c = crc32c_tab[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
		n--;
	}
	while (n >= 8) {
		uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			      (uint32_t)p[7] << 24;
		c = crc32c_tab[7][lo & 0xFFu] ^ crc32c_tab[6][(lo >> 8) & 0xFFu] ^
		    crc32c_tab[5][(lo >> 16) & 0xFFu] ^ crc32c_tab[4][lo >> 24] ^
		    crc32c_tab[3][hi & 0xFFu] ^ crc32c_tab[2][(hi >> 8) & 0xFFu] ^
		    crc32c_tab[1][(hi >> 16) & 0xFFu] ^ crc32c_tab[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n--)
		c = crc32c_tab[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
	return c;
}

uint32_t pp_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	return ~sw_update(~crc, buf, len);
}

#ifdef PP_HAVE_HW
__attribute__((target("sse4.2"))) uint32_t pp_crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = _mm_crc32_u64(c, w);
		p += 8;
		len -= 8;
	}
	if (len >= 4) {
		uint32_t w;
		memcpy(&w, p, 4);
		c = _mm_crc32_u32((uint32_t)c, w);
		p += 4;
		len -= 4;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

/* The one exception to "no globals" in proto/: a cache of what the CPU can do, asked with one
 * CPUID on first use. __builtin_cpu_supports() would instead link libgcc's load-time
 * constructor, which runs a dozen CPUIDs in every process the shim is preloaded into, and in
 * a VM each CPUID traps to the hypervisor (about 80 us per exec measured). Racing first calls
 * store the same value. */
static int hw_state; /* 0 unknown, 1 no, 2 yes */

int pp_crc32c_hw_available(void)
{
	int st = __atomic_load_n(&hw_state, __ATOMIC_RELAXED);
	if (__builtin_expect(st == 0, 0)) {
		unsigned a, b, c = 0, d;
		st = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 2 : 1;
		__atomic_store_n(&hw_state, st, __ATOMIC_RELAXED);
	}
	return st == 2;
}
#else
uint32_t pp_crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	return pp_crc32c_sw(crc, buf, len);
}

int pp_crc32c_hw_available(void)
{
	return 0;
}
#endif

uint32_t pp_crc32c(uint32_t crc, const void *buf, size_t len)
{
#ifdef PP_HAVE_HW
	if (pp_crc32c_hw_available())
		return pp_crc32c_hw(crc, buf, len);
#endif
	return pp_crc32c_sw(crc, buf, len);
}
