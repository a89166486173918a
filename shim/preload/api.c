/* The application API: programs that opt in ask for what the header said (addresses,
 * version, TLVs). They look these up with dlsym() and still run without the shim. */
#include <errno.h>
#include <string.h>

#include "shim.h"

/* The connection's entry, once its header is settled, into *out: 0, or a negative errno. */
static int settled(int fd, struct shim_fd **out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct shim_fd *e;

	SHIM_NEED(getpeername);
	if (real_getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -errno; /* EBADF, ENOTSOCK, ENOTCONN: the kernel's word */
	e = shim_fd_peek(fd);
	if (!shim_config()->active || !e ||
	    atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN ||
	    e->real_hash != shim_sa_hash((const struct sockaddr *)&ss))
		return -ENOENT;
	if ((e->flags & (SHIM_C_PENDING | SHIM_C_FAILED)) && shim_lazy_settle(fd, e, SHIM_SETTLE_WAIT) < 0)
		return -ENOTCONN;
	if (atomic_load_explicit(&e->kind, memory_order_acquire) != SHIM_FD_CONN ||
	    !(e->flags & SHIM_C_REWRITTEN))
		return -ENOENT;
	*out = e;
	return 0;
}

SHIM_EXPORT int proxyshim_peer(int fd, struct proxyshim_peer_info *out)
{
	int saved = errno, r;
	struct shim_fd *e;

	if ((r = settled(fd, &e)) < 0)
		return shim_hook_ret(saved, r);
	memset(out, 0, sizeof(*out));
	out->version = e->version;
	out->command = e->command;
	out->src_len = sizeof(out->src);
	out->dst_len = sizeof(out->dst);
	shim_addr_to_user(&e->peer, (struct sockaddr *)&out->src, &out->src_len);
	if (e->local.family) {
		shim_addr_to_user(&e->local, (struct sockaddr *)&out->dst, &out->dst_len);
	} else {
		out->dst_len = 0;
	}
	return shim_hook_ret(saved, 0);
}

SHIM_EXPORT ssize_t proxyshim_tlv(int fd, unsigned type, void *buf, size_t len)
{
	int saved = errno, r;
	struct shim_fd *e;
	const struct shim_tlvs *t;
	struct pp_header h;
	struct pp_tlv tlv;

	if ((r = settled(fd, &e)) < 0)
		return shim_hook_ret(saved, r);
	/* Pinned: a close() of fd meanwhile (a signal handler's) leaves the block mapped. */
	shim_tlvs_pin();
	t = shim_tlvs_of(e);
	memset(&h, 0, sizeof(h));
	if (!t || type > 0xFF) {
		shim_tlvs_unpin();
		return shim_hook_ret(saved, -ENOENT);
	}
	h.tlv = t->data;
	h.tlv_len = t->len;
	if (!pp_tlv_find(&h, (uint8_t)type, &tlv) && !pp_tlv_find_ssl(&h, (uint8_t)type, &tlv)) {
		shim_tlvs_unpin();
		return shim_hook_ret(saved, -ENOENT);
	}
	memcpy(buf, tlv.value, len < tlv.len ? len : tlv.len);
	shim_tlvs_unpin();
	errno = saved;
	return tlv.len;
}

/* The effective settings as "NAME=value" lines, for `proxyshim --check` and debugging. */
SHIM_EXPORT int proxyshim_settings(char *buf, size_t cap)
{
	return shim_settings_format(shim_config(), shim_config_src(), buf, cap);
}

#ifndef PROXYSHIM_VERSION
#error "PROXYSHIM_VERSION is not defined: the Makefile passes it from the file VERSION"
#endif

/* The library's version ("1.0.0"), from the file VERSION at build time. */
SHIM_EXPORT const char *proxyshim_version(void)
{
	return PROXYSHIM_VERSION;
}
