/* proxyshim: the application API, what the preload library (libproxyshim.so) exports on
 * purpose for a program that runs under the shim and wants more than the address.
 * A program that must also run without the shim looks these up with
 * dlsym(RTLD_DEFAULT, "proxyshim_...") instead of linking -lproxyshim.
 * Everything declared here is defined by the installed library; the PROXY protocol parser and
 * builder (pp_*) are internal to proxyshim (proxyshim_proto.h, not installed). */
#ifndef PROXYSHIM_H
#define PROXYSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- TLV types (v2), with the spec's names (docs/PROTOCOL.md, "TLVs"): proxyshim_tlv()'s
 * type is a top-level PP2_TYPE_* or an SSL sub-type PP2_SUBTYPE_SSL_* ---- */
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

/* What proxyshim_peer_info.command holds. */
enum pp_command {
	PP_CMD_LOCAL = 0,      /* v2 LOCAL: use the real endpoints */
	PP_CMD_PROXY = 1,      /* v1 TCP4/TCP6, v2 PROXY */
	PP_CMD_V1_UNKNOWN = 2, /* v1 "PROXY UNKNOWN": use the real endpoints */
};

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
