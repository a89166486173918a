/* proxyshim: the PROXY protocol (v1 and v2) as pure functions over a caller's buffer,
 * and the small API an application may call on purpose when it runs under the shim. */
#ifndef PROXYSHIM_H
#define PROXYSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Wire constants, with the spec's names (docs/PROTOCOL.md, "Version 2", "TLVs") ---- */
#define PP2_SIGNATURE "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
#define PP2_SIGNATURE_LEN 12
#define PP2_HEADER_LEN 16 /* signature, ver_cmd, fam, len */
#define PP2_VERSION 0x20
#define PP2_CMD_LOCAL 0x00
#define PP2_CMD_PROXY 0x01
#define PP2_FAM_UNSPEC 0x00
#define PP2_FAM_INET 0x10
#define PP2_FAM_INET6 0x20
#define PP2_FAM_UNIX 0x30
#define PP2_TRANS_UNSPEC 0x00
#define PP2_TRANS_STREAM 0x01
#define PP2_TRANS_DGRAM 0x02
#define PP2_ADDR_LEN_INET 12
#define PP2_ADDR_LEN_INET6 36
#define PP2_ADDR_LEN_UNIX 216
#define PP2_UNIX_PATH_LEN 108
#define PP2_MAX_LEN (16 + 65535)

#define PP2_TYPE_ALPN 0x01
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C 0x03
#define PP2_TYPE_NOOP 0x04
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN 0x22
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_SUBTYPE_SSL_SIG_ALG 0x24
#define PP2_SUBTYPE_SSL_KEY_ALG 0x25
#define PP2_SUBTYPE_SSL_GROUP 0x26
#define PP2_SUBTYPE_SSL_SIG_SCHEME 0x27
#define PP2_SUBTYPE_SSL_CLIENT_CERT 0x28
#define PP2_TYPE_NETNS 0x30
#define PP2_CLIENT_SSL 0x01
#define PP2_CLIENT_CERT_CONN 0x02
#define PP2_CLIENT_CERT_SESS 0x04
#define PP2_UNIQUE_ID_MAX 128
#define PP2_TYPE_GCP 0xE0  /* PSC connection id, 8 bytes big-endian */
#define PP2_TYPE_AWS 0xEA  /* subtype 0x01: VPC endpoint id, ASCII */
#define PP2_TYPE_AZURE 0xEE /* subtype 0x01: LinkID, uint32 little-endian */
#define PP2_SUBTYPE_AWS_VPCE_ID 0x01
#define PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID 0x01

#define PP1_MAX_LEN 107 /* worst case line including CRLF */

/* ---- Parsing ---- */

/* pp_parse() return values other than a header length (> 0). */
#define PP_INVALID (-1)    /* started as a header and broke a rule: see pp_header.error */
#define PP_INCOMPLETE (-2) /* a valid header may still follow: read more */
#define PP_NOT_PROXY (-3)  /* these bytes cannot start any PROXY header */

/* The versions pp_parse() accepts: a bit mask. */
#define PP_V1 1u
#define PP_V2 2u
#define PP_ANY (PP_V1 | PP_V2)

enum pp_command {
	PP_CMD_LOCAL = 0,      /* v2 LOCAL: use the real endpoints */
	PP_CMD_PROXY = 1,      /* v1 TCP4/TCP6, v2 PROXY */
	PP_CMD_V1_UNKNOWN = 2, /* v1 "PROXY UNKNOWN": use the real endpoints */
};

enum pp_family { PP_FAM_UNSPEC = 0, PP_FAM_INET = 1, PP_FAM_INET6 = 2, PP_FAM_UNIX = 3 };
enum pp_transport { PP_TRANS_UNSPEC = 0, PP_TRANS_STREAM = 1, PP_TRANS_DGRAM = 2 };

/* Which rule a PP_INVALID header broke. pp_strerror() names each one. */
enum pp_error {
	PP_E_OK = 0,
	PP_E_VERSION_NOT_ALLOWED, /* a valid-looking header of a version not selected */
	PP_E_V1_SYNTAX,           /* not "PROXY" SP proto SP ...: separators, tokens, extra fields */
	PP_E_V1_PROTO,            /* proto other than TCP4, TCP6, UNKNOWN */
	PP_E_V1_SRC_ADDR,
	PP_E_V1_DST_ADDR,
	PP_E_V1_SRC_PORT,
	PP_E_V1_DST_PORT,
	PP_E_V1_CRLF,     /* a lone CR or LF, or anything but CRLF after the last field */
	PP_E_V1_NUL,      /* a NUL byte inside the line */
	PP_E_V1_TOO_LONG, /* no CRLF within the first 107 bytes */
	PP_E_V2_VERSION,  /* signature followed by a version nibble other than 2 */
	PP_E_V2_COMMAND,  /* command nibble neither LOCAL nor PROXY */
	PP_E_V2_FAMILY,   /* family nibble above 3 */
	PP_E_V2_TRANSPORT, /* transport nibble above 2 */
	PP_E_V2_SHORT_ADDR, /* PROXY: len shorter than the family's address block */
	PP_E_V2_TLV,        /* a TLV header or value runs past the end of the header */
	PP_E_V2_CRC_LEN,    /* a CRC32C TLV whose value is not 4 bytes */
	PP_E_V2_CRC,        /* CRC32C does not match */
	PP_E_V2_UNIQUE_ID,  /* UNIQUE_ID longer than 128 bytes */
	PP_E_MAX
};

/* What pp_parse() found. Pointers point into the caller's buffer. */
struct pp_header {
	uint32_t len;         /* the header's length in bytes: what to consume */
	uint8_t version;      /* 1 or 2 */
	uint8_t command;      /* enum pp_command */
	uint8_t family;       /* enum pp_family, as announced (v1: INET for TCP4, INET6 for TCP6) */
	uint8_t transport;    /* enum pp_transport (v1: STREAM, or UNSPEC for UNKNOWN) */
	uint8_t crc_verified; /* v2: a CRC32C TLV was present and matched */
	enum pp_error error;  /* why pp_parse() returned PP_INVALID; PP_E_OK otherwise */
	/* Source and destination for INET/INET6 PROXY headers (sockaddr_in or sockaddr_in6 at the
	 * start of the storage, only that much written); ss_family is AF_UNSPEC otherwise. */
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	/* v2 UNIX family: the paths as text, NUL padding removed (not NUL-terminated). */
	const char *unix_src;
	const char *unix_dst;
	uint8_t unix_src_len;
	uint8_t unix_dst_len;
	/* v2: the TLV area (after the address block, up to the header's end); NULL/0 if none. */
	const uint8_t *tlv;
	uint16_t tlv_len;
	/* On PP_INCOMPLETE only (unspecified after any other result): how many more bytes to
	 * wait for, > 0. A complete header needs at least that many more (len + need never runs
	 * past the end of a valid header these bytes start), and pp_parse() gives the same
	 * answer until they are there, so a caller can sleep until then. A v2 header past its
	 * 16-byte fixed part: exactly the rest of its announced length. Before that, and for v1,
	 * 1: the next byte may already decide. (Last in the struct: the fields before it keep
	 * their offsets.) */
	uint32_t need;
};

/* Parses the header at the start of buf. Returns its length (> 0) when buf starts with a
 * complete valid header of a selected version, or PP_INCOMPLETE (out->need: the bytes still
 * needed at least), PP_NOT_PROXY, PP_INVALID (out->error: the rule broken).
 * Stateless and allocation-free; never reads at or past buf + len, nor past the header's end. */
int pp_parse(const void *buf, size_t len, unsigned versions, struct pp_header *out);

const char *pp_strerror(enum pp_error err);

/* ---- TLVs ---- */
struct pp_tlv {
	uint8_t type;
	uint16_t len;
	const uint8_t *value;
};

struct pp_tlv_iter {
	const uint8_t *pos;
	const uint8_t *end;
};

/* Iterates a TLV area (a header's tlv/tlv_len, or an SSL TLV's sub-TLVs). NOOP TLVs are skipped.
 * pp_tlv_next() returns 1 with *out filled, 0 at the end, -1 when a TLV runs past the end. */
void pp_tlv_iter_init(struct pp_tlv_iter *it, const uint8_t *area, size_t len);
int pp_tlv_next(struct pp_tlv_iter *it, struct pp_tlv *out);

/* First TLV of a type in the header's TLV area: 1 found, 0 not. */
int pp_tlv_find(const struct pp_header *h, uint8_t type, struct pp_tlv *out);
/* The SSL TLV's client bits and verify field: 1 found, 0 no (well-formed) SSL TLV. */
int pp_tlv_ssl(const struct pp_header *h, uint8_t *client, uint32_t *verify);
/* First sub-TLV of the SSL TLV with the given subtype (PP2_SUBTYPE_SSL_*): 1 found, 0 not. */
int pp_tlv_find_ssl(const struct pp_header *h, uint8_t subtype, struct pp_tlv *out);
/* Cloud TLVs: 1 found and decoded, 0 absent or malformed. */
int pp_tlv_aws_vpce_id(const struct pp_header *h, const char **id, size_t *id_len);
int pp_tlv_azure_linkid(const struct pp_header *h, uint32_t *linkid);
int pp_tlv_gcp_psc_id(const struct pp_header *h, uint64_t *conn_id);

/* CRC32C (Castagnoli), continuing from crc (start with 0). SSE4.2 when the CPU has it. */
uint32_t pp_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- Building ---- */
#define PP_BUILD_CRC32C 1u /* v2: append a CRC32C TLV and fill it in */

/* v1 line for src/dst (both AF_INET or both AF_INET6; NULL src gives "PROXY UNKNOWN\r\n").
 * Returns the length written, -ENOSPC when cap is too small, -EINVAL for bad addresses. */
int pp_build_v1(void *buf, size_t cap, const struct sockaddr *src, const struct sockaddr *dst);

/* v2 header. command PP_CMD_PROXY needs src/dst of one family (AF_INET, AF_INET6 or AF_UNIX);
 * PP_CMD_LOCAL ignores them (they may be NULL) and writes family UNSPEC. tlvs (ntlvs of them)
 * are written in order; flags may add PP_BUILD_CRC32C. Returns the length written, -ENOSPC
 * when cap is too small, -EINVAL for bad arguments or a header over 16 + 65535 bytes. */
int pp_build_v2(void *buf, size_t cap, int command, const struct sockaddr *src,
		const struct sockaddr *dst, const struct pp_tlv *tlvs, size_t ntlvs, unsigned flags);

/* ---- The application API: what the preload library exports on purpose ----
 * A program that wants these looks them up with dlsym(RTLD_DEFAULT, ...) so that it still runs
 * without the shim. */

/* The effective configuration as "NAME=value" lines (what `proxyshim --check` prints).
 * Returns the length it needed, like snprintf. */
int proxyshim_settings(char *buf, size_t cap);

/* The library's version, e.g. "1.0.0" (what `proxyshim --check` prints as version=). */
const char *proxyshim_version(void);

/* What the PROXY header said about the connection on fd. */
struct proxyshim_peer_info {
	int version;  /* 1 or 2 */
	int command;  /* enum pp_command */
	struct sockaddr_storage src; /* the client, as accept() and getpeername() give it */
	struct sockaddr_storage dst; /* the address the client dialled */
	socklen_t src_len, dst_len;
};

/* 0 with *out filled when fd's header named a client (a lazy header is read first); -1 with
 * errno ENOENT when it did not (no header, LOCAL, UNKNOWN, untrusted peer), EBADF/ENOTSOCK for
 * a bad fd, ENOTCONN when the header was refused. */
int proxyshim_peer(int fd, struct proxyshim_peer_info *out);

/* The value of the first TLV of this type in fd's header: a top-level type (PP2_TYPE_*) or an
 * SSL sub-type (PP2_SUBTYPE_SSL_*). Copies at most len bytes into buf and returns the value's
 * full length; -1 with errno ENOENT when absent, or when TLVs are not kept
 * (PROXYSHIM_KEEP_TLVS=1 keeps up to PROXYSHIM_TLV_MAX bytes of them per connection). */
ssize_t proxyshim_tlv(int fd, unsigned type, void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
