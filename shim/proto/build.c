/* Building headers: a v1 line or a v2 header from socket addresses, with TLVs and an optional
 * CRC32C. Whatever is built here parses back to the same values. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "pp_internal.h"

static char *put_dec(char *p, unsigned v)
{
	char tmp[5];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_ipv4(char *p, const uint8_t *a)
{
	for (int i = 0; i < 4; i++) {
		if (i)
			*p++ = '.';
		p = put_dec(p, a[i]);
	}
	return p;
}

/* RFC 5952 text: lower-case hex, no leading zeros, the longest run of two or more zero
 * groups (the first if tied) as "::". */
static char *put_ipv6(char *p, const uint8_t *a)
{
	static const char hex[] = "0123456789abcdef";
	unsigned g[8];
	int best = -1, best_len = 1;

	for (int i = 0; i < 8; i++)
		g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	for (int i = 0; i < 8;) {
		int j = i;

		while (j < 8 && g[j] == 0)
			j++;
		if (j - i > best_len) {
			best = i;
			best_len = j - i;
		}
		i = j > i ? j : i + 1;
	}
	for (int i = 0; i < 8; i++) {
		if (i == best) {
			*p++ = ':';
			*p++ = ':';
			i += best_len - 1;
			continue;
		}
		if (i && i != best + best_len)
			*p++ = ':';
		for (int s = 12; s >= 0; s -= 4)
			if ((g[i] >> s) || s == 0)
				*p++ = hex[(g[i] >> s) & 0xF];
	}
	return p;
}

int pp_build_v1(void *buf, size_t cap, const struct sockaddr *src, const struct sockaddr *dst)
{
	char line[PP1_MAX_LEN + 16];
	char *p = line;
	size_t n;

	memcpy(p, "PROXY ", 6);
	p += 6;
	if (!src) {
		memcpy(p, "UNKNOWN", 7);
		p += 7;
	} else {
		unsigned sport, dport;

		if (!dst || src->sa_family != dst->sa_family)
			return -EINVAL;
		if (src->sa_family == AF_INET) {
			struct sockaddr_in s, d;

			memcpy(&s, src, sizeof(s));
			memcpy(&d, dst, sizeof(d));
			memcpy(p, "TCP4 ", 5);
			p = put_ipv4(p + 5, (const uint8_t *)&s.sin_addr);
			*p++ = ' ';
			p = put_ipv4(p, (const uint8_t *)&d.sin_addr);
			sport = ntohs(s.sin_port);
			dport = ntohs(d.sin_port);
		} else if (src->sa_family == AF_INET6) {
			struct sockaddr_in6 s, d;

			memcpy(&s, src, sizeof(s));
			memcpy(&d, dst, sizeof(d));
			memcpy(p, "TCP6 ", 5);
			p = put_ipv6(p + 5, s.sin6_addr.s6_addr);
			*p++ = ' ';
			p = put_ipv6(p, d.sin6_addr.s6_addr);
			sport = ntohs(s.sin6_port);
			dport = ntohs(d.sin6_port);
		} else {
			return -EINVAL;
		}
		*p++ = ' ';
		p = put_dec(p, sport);
		*p++ = ' ';
		p = put_dec(p, dport);
	}
	*p++ = '\r';
	*p++ = '\n';
	n = (size_t)(p - line);
	if (n > cap)
		return -ENOSPC;
	memcpy(buf, line, n);
	return (int)n;
}

/* A sockaddr_un path into its 108-byte field: up to the first NUL for a pathname, all 108
 * bytes for an abstract name (leading NUL), whose length the sockaddr alone does not give. */
static void put_unix(uint8_t *field, const struct sockaddr *sa)
{
	struct sockaddr_un sun;
	size_t n = 0;

	memcpy(&sun, sa, sizeof(sun));
	if (sun.sun_path[0] == 0)
		n = PP2_UNIX_PATH_LEN;
	else
		while (n < PP2_UNIX_PATH_LEN && sun.sun_path[n])
			n++;
	memset(field, 0, PP2_UNIX_PATH_LEN);
	memcpy(field, sun.sun_path, n);
}

int pp_build_v2(void *buf, size_t cap, int command, const struct sockaddr *src,
		const struct sockaddr *dst, const struct pp_tlv *tlvs, size_t ntlvs, unsigned flags)
{
	uint8_t *b = buf, *a = b + PP2_OFF_ADDR;
	uint8_t fam = PP2_FAM_UNSPEC;
	size_t alen = 0, total, off;

	if ((command != PP_CMD_LOCAL && command != PP_CMD_PROXY) || (flags & ~PP_BUILD_CRC32C) ||
	    (ntlvs && !tlvs))
		return -EINVAL;
	if (command == PP_CMD_PROXY) {
		if (!src || !dst || src->sa_family != dst->sa_family)
			return -EINVAL;
		switch (src->sa_family) {
		case AF_INET:
			fam = PP2_FAM_INET | PP2_TRANS_STREAM;
			alen = PP2_ADDR_LEN_INET;
			break;
		case AF_INET6:
			fam = PP2_FAM_INET6 | PP2_TRANS_STREAM;
			alen = PP2_ADDR_LEN_INET6;
			break;
		case AF_UNIX:
			fam = PP2_FAM_UNIX | PP2_TRANS_STREAM;
			alen = PP2_ADDR_LEN_UNIX;
			break;
		default:
			return -EINVAL;
		}
	}

	/* Size first, in size_t, so no TLV count or length can wrap it. The parser's rules
	 * apply here too: the builder's own CRC32C is the only one, UNIQUE_ID fits in 128. */
	total = PP2_HEADER_LEN + alen;
	for (size_t i = 0; i < ntlvs; i++) {
		if ((tlvs[i].len && !tlvs[i].value) || tlvs[i].type == PP2_TYPE_CRC32C ||
		    (tlvs[i].type == PP2_TYPE_UNIQUE_ID && tlvs[i].len > PP2_UNIQUE_ID_MAX))
			return -EINVAL;
		total += PP2_TLV_HDR_LEN + (size_t)tlvs[i].len;
		if (total > PP2_MAX_LEN)
			return -EINVAL;
	}
	if (flags & PP_BUILD_CRC32C)
		total += PP2_TLV_HDR_LEN + 4; /* the CRC32C TLV */
	if (total > PP2_MAX_LEN)
		return -EINVAL;
	if (total > cap)
		return -ENOSPC;

	memcpy(b, PP2_SIGNATURE, PP2_SIGNATURE_LEN);
	b[PP2_OFF_VER_CMD] = (uint8_t)(PP2_VERSION | command);
	b[PP2_OFF_FAM] = fam;
	pp_put_be16(b + PP2_OFF_LEN, (uint16_t)(total - PP2_HEADER_LEN));
	off = PP2_OFF_ADDR;
	if (command == PP_CMD_PROXY) {
		switch (src->sa_family) {
		case AF_INET: {
			struct sockaddr_in s, d;

			memcpy(&s, src, sizeof(s));
			memcpy(&d, dst, sizeof(d));
			memcpy(a + PP2_IN_SRC_ADDR, &s.sin_addr, 4);
			memcpy(a + PP2_IN_DST_ADDR, &d.sin_addr, 4);
			memcpy(a + PP2_IN_SRC_PORT, &s.sin_port, 2);
			memcpy(a + PP2_IN_DST_PORT, &d.sin_port, 2);
			break;
		}
		case AF_INET6: {
			struct sockaddr_in6 s, d;

			memcpy(&s, src, sizeof(s));
			memcpy(&d, dst, sizeof(d));
			memcpy(a + PP2_IN6_SRC_ADDR, &s.sin6_addr, 16);
			memcpy(a + PP2_IN6_DST_ADDR, &d.sin6_addr, 16);
			memcpy(a + PP2_IN6_SRC_PORT, &s.sin6_port, 2);
			memcpy(a + PP2_IN6_DST_PORT, &d.sin6_port, 2);
			break;
		}
		default:
			put_unix(a + PP2_UNIX_SRC, src);
			put_unix(a + PP2_UNIX_DST, dst);
			break;
		}
		off += alen;
	}
	for (size_t i = 0; i < ntlvs; i++) {
		b[off] = tlvs[i].type;
		pp_put_be16(b + off + PP2_TLV_OFF_LEN, tlvs[i].len);
		if (tlvs[i].len)
			memcpy(b + off + PP2_TLV_HDR_LEN, tlvs[i].value, tlvs[i].len);
		off += PP2_TLV_HDR_LEN + (size_t)tlvs[i].len;
	}
	if (flags & PP_BUILD_CRC32C) {
		b[off] = PP2_TYPE_CRC32C;
		pp_put_be16(b + off + PP2_TLV_OFF_LEN, 4);
		memset(b + off + PP2_TLV_HDR_LEN, 0, 4);
		pp_put_be32(b + off + PP2_TLV_HDR_LEN, pp_crc32c(0, b, total));
	}
	return (int)total;
}
