/* pp_parse(): picks the version from the first byte, and pp_strerror() names each rule. */
#include "pp_internal.h"

int pp_parse(const void *buf, size_t len, unsigned versions, struct pp_header *out)
{
	const uint8_t *b = buf;

	out->error = PP_E_OK;
	if (len == 0)
		return pp_incomplete(out, 1);
	if (b[0] == PP2_SIG_BYTE0)
		return pp_parse_v2(b, len, versions, out);
	if (b[0] == 'P')
		return pp_parse_v1(b, len, versions, out);
	return PP_NOT_PROXY;
}

static const char *const pp_errors[PP_E_MAX] = {
	[PP_E_OK] = "no error",
	[PP_E_VERSION_NOT_ALLOWED] = "PROXY header of a version not enabled",
	[PP_E_V1_SYNTAX] = "v1: malformed line (separators, tokens or field count)",
	[PP_E_V1_PROTO] = "v1: protocol is not TCP4, TCP6 or UNKNOWN",
	[PP_E_V1_SRC_ADDR] = "v1: bad source address",
	[PP_E_V1_DST_ADDR] = "v1: bad destination address",
	[PP_E_V1_SRC_PORT] = "v1: bad source port",
	[PP_E_V1_DST_PORT] = "v1: bad destination port",
	[PP_E_V1_CRLF] = "v1: lone CR or LF, or line not ended by CRLF",
	[PP_E_V1_NUL] = "v1: NUL byte in line",
	[PP_E_V1_TOO_LONG] = "v1: no CRLF within 107 bytes",
	[PP_E_V2_VERSION] = "v2: version is not 2",
	[PP_E_V2_COMMAND] = "v2: command is neither LOCAL nor PROXY",
	[PP_E_V2_FAMILY] = "v2: unknown address family",
	[PP_E_V2_TRANSPORT] = "v2: unknown transport protocol",
	[PP_E_V2_SHORT_ADDR] = "v2: length shorter than the address block",
	[PP_E_V2_TLV] = "v2: TLV runs past the end of the header",
	[PP_E_V2_CRC_LEN] = "v2: CRC32C TLV is not 4 bytes",
	[PP_E_V2_CRC] = "v2: CRC32C mismatch",
	[PP_E_V2_UNIQUE_ID] = "v2: UNIQUE_ID longer than 128 bytes",
};

const char *pp_strerror(enum pp_error err)
{
	if ((unsigned)err >= PP_E_MAX)
		return "unknown PROXY protocol error";
	return pp_errors[err];
}
