/* PROXY protocol v1: one text line, read left to right, deciding each rule at the first byte
 * that breaks it, so every prefix of a line gets the answer the whole line would get.
 *
 * Choices where the spec is silent (docs/PROTOCOL.md, "Version 1 choices", has them all):
 * - A NUL anywhere in the line, the ignored part of UNKNOWN included, is PP_E_V1_NUL.
 * - A CR or LF anywhere but the final CRLF (a lone one, or a line ending before its last
 *   field) is PP_E_V1_CRLF; so is anything but CRLF after the destination port.
 * - UNKNOWN is followed by CRLF, or by a space and any bytes but NUL, CR and LF (bytes
 *   0x80-0xFF included) up to CRLF, all within 107 bytes.
 * - "PROXY" then anything but a space, or two spaces anywhere, is PP_E_V1_SYNTAX.
 * - v1 not selected is decided once "PROXY " is seen.
 * - Any line over 107 bytes is PP_E_V1_TOO_LONG, also a TCP6 line whose dotted-quad tails
 *   make it longer than 104 (docs/PROTOCOL.md, "Version 1"). IPv6 groups may have leading
 *   zeros (inet_pton). */
#include <netinet/in.h>

#include "pp_internal.h"

/* Internal status of the field readers: 0 ok, > 0 an enum pp_error, NEED when the bytes
 * present ran out first. */
#define NEED (-1)

struct v1_addrs {
	uint8_t src[16], dst[16];
	unsigned sport, dport;
};

/* The error for an unexpected byte: NUL and line ends have their own codes. */
static int bad(uint8_t c, enum pp_error field)
{
	if (c == 0)
		return PP_E_V1_NUL;
	if (c == '\r' || c == '\n')
		return PP_E_V1_CRLF;
	return (int)field;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decimal with no leading zeros and a maximum: IPv4 octets and ports. */
static int dec(const uint8_t **pp, const uint8_t *end, unsigned max, unsigned *v, enum pp_error err)
{
	const uint8_t *p = *pp;
	unsigned val, d;

	if (p == end)
		return NEED;
	d = (unsigned)*p - '0';
	if (d > 9)
		return bad(*p, err);
	val = d;
	for (p++;; p++) {
		if (p == end)
			return NEED;
		d = (unsigned)*p - '0';
		if (d > 9)
			break;
		if (val == 0) /* a leading zero */
			return (int)err;
		val = val * 10 + d;
		if (val > max)
			return (int)err;
	}
	*v = val;
	*pp = p;
	return 0;
}

/* `n` more dotted octets, each preceded by a dot, into out. */
static int octets(const uint8_t **pp, const uint8_t *end, uint8_t *out, int n, enum pp_error err)
{
	for (int i = 0; i < n; i++) {
		unsigned v;
		int r;

		if (*pp == end)
			return NEED;
		if (**pp != '.')
			return bad(**pp, err);
		(*pp)++;
		if ((r = dec(pp, end, 255, &v, err)) != 0)
			return r;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int ipv4(const uint8_t **pp, const uint8_t *end, uint8_t out[4], enum pp_error err)
{
	unsigned v;
	int r;

	if ((r = dec(pp, end, 255, &v, err)) != 0)
		return r;
	out[0] = (uint8_t)v;
	return octets(pp, end, out + 1, 3, err);
}

/* IPv6 text as inet_pton takes it: 1-4 hex digits per group, at most one "::" standing for
 * at least one group, an optional dotted-quad tail in place of the last two groups, exactly
 * 128 bits. No zone id, no brackets. Stops at the first byte that cannot continue it. */
static int ipv6(const uint8_t **pp, const uint8_t *end, uint8_t out[16], enum pp_error err)
{
	const uint8_t *p = *pp;
	uint16_t w[8];
	unsigned nw = 0, lim = 8;
	int dc = -1; /* index in w where "::" stands */

	if (p == end)
		return NEED;
	if (*p == ':') {
		if (++p == end)
			return NEED;
		if (*p != ':')
			return bad(*p, err);
		dc = 0;
		lim = 7;
		if (++p == end)
			return NEED;
		if (hexval(*p) < 0) {
			if (*p == ':' || *p == '.')
				return (int)err;
			goto done;
		}
	}
	for (;;) {
		unsigned v = 0, d10 = 0, nd = 0, decimal = 1;
		uint8_t first;
		int h;

		if (p == end)
			return NEED;
		first = *p;
		if (hexval(first) < 0)
			return bad(first, err);
		if (nw >= lim) /* no room for a group, nor for a dotted tail */
			return (int)err;
		for (;;) {
			if (p == end)
				return NEED;
			if ((h = hexval(*p)) < 0)
				break;
			if (++nd > 4)
				return (int)err;
			v = v << 4 | (unsigned)h;
			if (h > 9)
				decimal = 0;
			d10 = d10 * 10 + (unsigned)h;
			p++;
		}
		if (*p == '.') {
			/* A dotted tail: the group read so far was its first octet. It fills the
			 * last two groups, exactly 6 before it without "::", at most 5 with. */
			uint8_t q[3];
			int r;

			if (!decimal || nd > 3 || (nd > 1 && first == '0') || d10 > 255)
				return (int)err;
			if (dc < 0 ? nw != 6 : nw > 5)
				return (int)err;
			if ((r = octets(&p, end, q, 3, err)) != 0)
				return r;
			w[nw++] = (uint16_t)(d10 << 8 | q[0]);
			w[nw++] = (uint16_t)(q[1] << 8 | q[2]);
			break;
		}
		if (nw >= lim)
			return (int)err;
		w[nw++] = (uint16_t)v;
		if (*p != ':')
			break;
		if (nw >= lim) /* nothing may follow the last group */
			return (int)err;
		if (++p == end)
			return NEED;
		if (*p == ':') {
			if (dc >= 0 || nw > 7)
				return (int)err;
			dc = (int)nw;
			lim = 7;
			if (++p == end)
				return NEED;
			if (hexval(*p) < 0) {
				if (*p == ':' || *p == '.')
					return (int)err;
				break;
			}
		}
	}
done:
	if (dc < 0 && nw != 8)
		return bad(*p, err);
	{
		uint16_t full[8] = {0};
		unsigned head = dc < 0 ? nw : (unsigned)dc;

		for (unsigned i = 0; i < head; i++)
			full[i] = w[i];
		for (unsigned i = head; i < nw; i++)
			full[8 - (nw - i)] = w[i];
		for (unsigned i = 0; i < 8; i++) {
			out[2 * i] = (uint8_t)(full[i] >> 8);
			out[2 * i + 1] = (uint8_t)full[i];
		}
	}
	*pp = p;
	return 0;
}

/* One separator: exactly one space, and the next field must not start with another. */
static int sep(const uint8_t **pp, const uint8_t *end, enum pp_error field)
{
	const uint8_t *p = *pp;

	if (p == end)
		return NEED;
	if (*p != ' ')
		return bad(*p, field);
	if (++p == end)
		return NEED;
	if (*p == ' ')
		return PP_E_V1_SYNTAX;
	*pp = p;
	return 0;
}

static int crlf(const uint8_t **pp, const uint8_t *end)
{
	const uint8_t *p = *pp;

	if (p == end)
		return NEED;
	if (*p != '\r')
		return bad(*p, PP_E_V1_CRLF);
	if (++p == end)
		return NEED;
	if (*p != '\n')
		return bad(*p, PP_E_V1_CRLF);
	*pp = p + 1;
	return 0;
}

/* "PROXY UNKNOWN" then CRLF, or a space and anything but NUL, CR and LF up to CRLF. */
static int unknown_rest(const uint8_t **pp, const uint8_t *end)
{
	const uint8_t *p = *pp;

	if (p == end)
		return NEED;
	if (*p == ' ') {
		for (p++;; p++) {
			if (p == end)
				return NEED;
			if (*p == '\r' || *p == '\n' || *p == 0)
				break;
		}
	} else if (*p != '\r') {
		return bad(*p, PP_E_V1_PROTO);
	}
	*pp = p;
	return crlf(pp, end);
}

/* Matches the literal `lit` byte by byte; a mismatch is error `err`. */
static int literal(const uint8_t **pp, const uint8_t *end, const char *lit, enum pp_error err)
{
	const uint8_t *p = *pp;

	for (; *lit; lit++, p++) {
		if (p == end)
			return NEED;
		if (*p != (uint8_t)*lit)
			return bad(*p, err);
	}
	*pp = p;
	return 0;
}

static inline __attribute__((always_inline)) void put_addr(struct sockaddr_storage *ss, int fam,
							    const uint8_t *a, unsigned port)
{
	if (fam == PP_FAM_INET) {
		struct sockaddr_in sin;

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		memcpy(&sin.sin_addr, a, 4);
		sin.sin_port = htons((uint16_t)port);
		memcpy(ss, &sin, sizeof(sin));
	} else {
		struct sockaddr_in6 sin6;

		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		memcpy(&sin6.sin6_addr, a, 16);
		sin6.sin6_port = htons((uint16_t)port);
		memcpy(ss, &sin6, sizeof(sin6));
	}
}

/* Everything after "PROXY ". Returns 0 with *fam set, an error, or NEED. */
static int body(const uint8_t **pp, const uint8_t *end, int *fam, struct v1_addrs *a)
{
	int r;

	if (*pp == end)
		return NEED;
	switch (**pp) {
	case 'U':
		if ((r = literal(pp, end, "UNKNOWN", PP_E_V1_PROTO)) != 0)
			return r;
		*fam = PP_FAM_UNSPEC;
		return unknown_rest(pp, end);
	case 'T':
		if ((r = literal(pp, end, "TCP", PP_E_V1_PROTO)) != 0)
			return r;
		if (*pp == end)
			return NEED;
		if (**pp == '4')
			*fam = PP_FAM_INET;
		else if (**pp == '6')
			*fam = PP_FAM_INET6;
		else
			return bad(**pp, PP_E_V1_PROTO);
		(*pp)++;
		break;
	case ' ':
		return PP_E_V1_SYNTAX;
	default:
		return bad(**pp, PP_E_V1_PROTO);
	}

	if ((r = sep(pp, end, PP_E_V1_PROTO)) != 0)
		return r;
	if (*fam == PP_FAM_INET) {
		if ((r = ipv4(pp, end, a->src, PP_E_V1_SRC_ADDR)) != 0 ||
		    (r = sep(pp, end, PP_E_V1_SRC_ADDR)) != 0 ||
		    (r = ipv4(pp, end, a->dst, PP_E_V1_DST_ADDR)) != 0)
			return r;
	} else {
		if ((r = ipv6(pp, end, a->src, PP_E_V1_SRC_ADDR)) != 0 ||
		    (r = sep(pp, end, PP_E_V1_SRC_ADDR)) != 0 ||
		    (r = ipv6(pp, end, a->dst, PP_E_V1_DST_ADDR)) != 0)
			return r;
	}
	if ((r = sep(pp, end, PP_E_V1_DST_ADDR)) != 0 ||
	    (r = dec(pp, end, 65535, &a->sport, PP_E_V1_SRC_PORT)) != 0 ||
	    (r = sep(pp, end, PP_E_V1_SRC_PORT)) != 0 ||
	    (r = dec(pp, end, 65535, &a->dport, PP_E_V1_DST_PORT)) != 0)
		return r;
	return crlf(pp, end);
}

/* Fills *out for a complete valid line of n bytes. */
static int v1_done(struct pp_header *out, size_t n, int fam, const struct v1_addrs *a)
{
	out->len = (uint32_t)n;
	out->version = 1;
	out->crc_verified = 0;
	out->unix_src = NULL;
	out->unix_dst = NULL;
	out->unix_src_len = 0;
	out->unix_dst_len = 0;
	out->tlv = NULL;
	out->tlv_len = 0;
	out->family = (uint8_t)fam;
	if (fam == PP_FAM_UNSPEC) {
		out->command = PP_CMD_V1_UNKNOWN;
		out->transport = PP_TRANS_UNSPEC;
		out->src.ss_family = AF_UNSPEC;
		out->dst.ss_family = AF_UNSPEC;
	} else {
		out->command = PP_CMD_PROXY;
		out->transport = PP_TRANS_STREAM;
		put_addr(&out->src, fam, a->src, a->sport);
		put_addr(&out->dst, fam, a->dst, a->dport);
	}
	return (int)n;
}

/* The reference reader: any input, every rule decided at its first byte. */
int pp_parse_v1_ref(const uint8_t *b, size_t len, unsigned versions, struct pp_header *out)
{
	/* Reading stops at 107 bytes: needing byte 108 means the line has no CRLF in time. */
	const uint8_t *end = b + (len < PP1_MAX_LEN ? len : PP1_MAX_LEN);
	const uint8_t *p = b;
	struct v1_addrs a;
	int fam = PP_FAM_UNSPEC, r;

	/* Any mismatch inside "PROXY" means this cannot be a PROXY header at all. */
	for (const char *lit = "PROXY"; *lit; lit++, p++) {
		if (p == end)
			return pp_incomplete(out, 1);
		if (*p != (uint8_t)*lit)
			return PP_NOT_PROXY;
	}
	if (p == end)
		return pp_incomplete(out, 1);
	if (*p != ' ')
		return pp_fail(out, (enum pp_error)bad(*p, PP_E_V1_SYNTAX));
	p++;
	if (!(versions & PP_V1))
		return pp_fail(out, PP_E_VERSION_NOT_ALLOWED);

	r = body(&p, end, &fam, &a);
	if (r == NEED)
		/* Every next byte may decide (a CR, a bad one): the line's length is not known. */
		return len >= PP1_MAX_LEN ? pp_fail(out, PP_E_V1_TOO_LONG) : pp_incomplete(out, 1);
	if (r != 0)
		return pp_fail(out, (enum pp_error)r);

	return v1_done(out, (size_t)(p - b), fam, &a);
}

/* ---- Fast path: a whole TCP4/TCP6 line ----
 * Reads left to right like the reference reader, each byte only after accepting the one
 * before it (so never past a valid line's LF), but checks the end of the buffer once per
 * field instead of once per byte: every field of a complete line is followed by enough
 * bytes (at least " 0 0" CR LF) for its longest read. It accepts a subset of what the
 * reference reader accepts (no dotted IPv6 tail); for anything else, including every
 * incomplete or invalid line, the reference reader gives the verdict. */

/* 1 + the hex value of a byte, 0 for a byte that is no hex digit. */
static const uint8_t hex1[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
	['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

#define FAST_INLINE static inline __attribute__((always_inline))

/* An IPv4 octet: 1 to 3 digits, no leading zero, at most 255. It and its caller read up to
 * p[3] (the byte after the digits); `checked`
 * says whether the caller already knows those bytes are there. */
FAST_INLINE const uint8_t *fast_octet(const uint8_t *p, const uint8_t *end, uint8_t *out,
				      int checked)
{
	unsigned d0, d1, d2, v;

	if (checked && end - p < 4)
		return NULL;
	if ((d0 = (unsigned)p[0] - '0') > 9)
		return NULL;
	if ((d1 = (unsigned)p[1] - '0') > 9) {
		*out = (uint8_t)d0;
		return p + 1;
	}
	if (d0 == 0)
		return NULL;
	if ((d2 = (unsigned)p[2] - '0') > 9) {
		*out = (uint8_t)(d0 * 10 + d1);
		return p + 2;
	}
	/* a fourth digit needs no test here: the caller wants '.' or ' ' next */
	v = d0 * 100 + d1 * 10 + d2;
	if (v > 255)
		return NULL;
	*out = (uint8_t)v;
	return p + 3;
}

FAST_INLINE const uint8_t *ipv4_body(const uint8_t *p, const uint8_t *end, uint8_t out[4],
				     int checked)
{
	if (!(p = fast_octet(p, end, &out[0], checked)) || *p != '.' ||
	    !(p = fast_octet(p + 1, end, &out[1], checked)) || *p != '.' ||
	    !(p = fast_octet(p + 1, end, &out[2], checked)) || *p != '.')
		return NULL;
	return fast_octet(p + 1, end, &out[3], checked);
}

/* An address reads at most 16 bytes ("255.255.255.255" and the byte after): when they are
 * all there, the octets need no checks of their own. */
static const uint8_t *fast_ipv4(const uint8_t *p, const uint8_t *end, uint8_t out[4])
{
	if (end - p >= 16)
		return ipv4_body(p, end, out, 0);
	return ipv4_body(p, end, out, 1);
}

/* A port: 1 to 5 digits, no leading zero, at most 65535. Reads at most p[0..5]. */
FAST_INLINE const uint8_t *fast_port(const uint8_t *p, const uint8_t *end, unsigned *v)
{
	const uint8_t *lim;
	unsigned val, d;

	if (end - p < 2 || (val = (unsigned)p[0] - '0') > 9)
		return NULL;
	if ((d = (unsigned)p[1] - '0') > 9) {
		*v = val;
		return p + 1;
	}
	if (val == 0)
		return NULL;
	/* a sixth digit, or the end of the bytes present, ends the fast path */
	lim = end - p > 6 ? p + 6 : end;
	p++;
	do {
		val = val * 10 + d;
		if (++p == lim)
			return NULL;
	} while ((d = (unsigned)*p - '0') <= 9);
	if (val > 65535)
		return NULL;
	*v = val;
	return p;
}

/* One group of 1 to 4 hex digits. It and its caller read up to p[4] (the byte after). */
FAST_INLINE const uint8_t *fast_group(const uint8_t *p, const uint8_t *end, unsigned *out,
				      int checked)
{
	unsigned h, v;

	if ((checked && end - p < 5) || !(h = hex1[p[0]]))
		return NULL;
	v = h - 1;
	if (!(h = hex1[p[1]]))
		goto one;
	v = v << 4 | (h - 1);
	if (!(h = hex1[p[2]]))
		goto two;
	v = v << 4 | (h - 1);
	if (!(h = hex1[p[3]]))
		goto three;
	/* a fifth digit needs no test here: the caller wants ':' or ' ' next */
	*out = v << 4 | (h - 1);
	return p + 4;
three:
	*out = v;
	return p + 3;
two:
	*out = v;
	return p + 2;
one:
	*out = v;
	return p + 1;
}

FAST_INLINE const uint8_t *ipv6_body(const uint8_t *p, const uint8_t *end, uint8_t out[16],
				     int checked)
{
	unsigned w[8], nw = 0, head;

	if (end - p < 3)
		return NULL;
	if (p[0] == ':') {
		if (p[1] != ':')
			return NULL;
		head = 0;
		p += 2;
		if (!hex1[*p])
			goto done;
	} else {
		/* groups before any "::" */
		for (;;) {
			if (!(p = fast_group(p, end, &w[nw++], checked)))
				return NULL;
			if (*p != ':') {
				if (nw != 8)
					return NULL;
				goto full;
			}
			if (nw == 8 || (++p == end && checked)) /* nothing may follow the eighth group */
				return NULL;
			if (*p == ':') {
				head = nw;
				if (++p == end && checked)
					return NULL;
				if (!hex1[*p])
					goto done;
				break;
			}
		}
	}
	/* groups after the "::": together with those before, at most 7 */
	for (;;) {
		if (nw >= 7 || !(p = fast_group(p, end, &w[nw++], checked)))
			return NULL;
		if (*p != ':')
			break;
		if (++p == end && checked)
			return NULL;
	}
done:
	memset(out, 0, 16);
	for (unsigned i = 0; i < head; i++) {
		out[2 * i] = (uint8_t)(w[i] >> 8);
		out[2 * i + 1] = (uint8_t)w[i];
	}
	for (unsigned i = head, at = 8 - (nw - head); i < nw; i++, at++) {
		out[2 * at] = (uint8_t)(w[i] >> 8);
		out[2 * at + 1] = (uint8_t)w[i];
	}
	return p;
full:
	for (unsigned i = 0; i < 8; i++) {
		out[2 * i] = (uint8_t)(w[i] >> 8);
		out[2 * i + 1] = (uint8_t)w[i];
	}
	return p;
}

/* An address without a dotted tail reads at most 40 bytes (39 and the byte after). */
static const uint8_t *fast_ipv6(const uint8_t *p, const uint8_t *end, uint8_t out[16])
{
	if (end - p >= 40)
		return ipv6_body(p, end, out, 0);
	return ipv6_body(p, end, out, 1);
}

/* A whole valid TCP4/TCP6 line at the start of b[0..end): its length, or 0. */
static int fast_line(const uint8_t *b, const uint8_t *end, struct pp_header *out)
{
	const uint8_t *p = b + 11;
	struct v1_addrs a;
	int fam;

	if (end - b < 12 || memcmp(b, "PROXY TCP", 9) != 0 || b[10] != ' ')
		return 0;
	if (b[9] == '4') {
		fam = PP_FAM_INET;
		if (!(p = fast_ipv4(p, end, a.src)) || *p != ' ' ||
		    !(p = fast_ipv4(p + 1, end, a.dst)))
			return 0;
	} else if (b[9] == '6') {
		fam = PP_FAM_INET6;
		if (!(p = fast_ipv6(p, end, a.src)) || *p != ' ' ||
		    !(p = fast_ipv6(p + 1, end, a.dst)))
			return 0;
	} else {
		return 0;
	}
	if (*p != ' ' || !(p = fast_port(p + 1, end, &a.sport)) || *p != ' ' ||
	    !(p = fast_port(p + 1, end, &a.dport)) || end - p < 2 || p[0] != '\r' || p[1] != '\n')
		return 0;
	return v1_done(out, (size_t)(p - b) + 2, fam, &a);
}

int pp_parse_v1(const uint8_t *b, size_t len, unsigned versions, struct pp_header *out)
{
	if (versions & PP_V1) {
		int r = fast_line(b, b + (len < PP1_MAX_LEN ? len : PP1_MAX_LEN), out);

		if (r > 0)
			return r;
	}
	return pp_parse_v1_ref(b, len, versions, out);
}
