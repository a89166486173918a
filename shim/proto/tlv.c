/* Reading a header's TLV area: a bounds-checked iterator, lookups, the SSL TLV and the
 * cloud providers' custom TLVs (AWS 0xEA, Azure 0xEE, GCP 0xE0). */
#include "pp_internal.h"

void pp_tlv_iter_init(struct pp_tlv_iter *it, const uint8_t *area, size_t len)
{
	it->pos = area;
	it->end = area ? area + len : area;
}

int pp_tlv_next(struct pp_tlv_iter *it, struct pp_tlv *out)
{
	while (it->pos != it->end) {
		size_t left = (size_t)(it->end - it->pos);
		uint16_t n;

		if (left < PP2_TLV_HDR_LEN)
			return -1;
		n = pp_be16(it->pos + PP2_TLV_OFF_LEN);
		if (left - PP2_TLV_HDR_LEN < n)
			return -1;
		out->type = it->pos[0];
		out->len = n;
		out->value = it->pos + PP2_TLV_HDR_LEN;
		it->pos += PP2_TLV_HDR_LEN + (size_t)n;
		if (out->type != PP2_TYPE_NOOP)
			return 1;
	}
	return 0;
}

/* The next TLV of `type` after the iterator's position: 1 found, 0 not (or framing error). */
static int next_of(struct pp_tlv_iter *it, uint8_t type, struct pp_tlv *out)
{
	while (pp_tlv_next(it, out) == 1)
		if (out->type == type)
			return 1;
	return 0;
}

int pp_tlv_find(const struct pp_header *h, uint8_t type, struct pp_tlv *out)
{
	struct pp_tlv_iter it;

	pp_tlv_iter_init(&it, h->tlv, h->tlv_len);
	return next_of(&it, type, out);
}

/* The SSL TLV if it is well-formed: client and verify present, sub-TLVs framed exactly. */
static int ssl_value(const struct pp_header *h, struct pp_tlv *ssl)
{
	struct pp_tlv_iter it;
	struct pp_tlv sub;
	int r;

	if (!pp_tlv_find(h, PP2_TYPE_SSL, ssl) || ssl->len < PP2_SSL_HDR_LEN)
		return 0;
	pp_tlv_iter_init(&it, ssl->value + PP2_SSL_HDR_LEN, ssl->len - (unsigned)PP2_SSL_HDR_LEN);
	while ((r = pp_tlv_next(&it, &sub)) == 1)
		;
	return r == 0;
}

int pp_tlv_ssl(const struct pp_header *h, uint8_t *client, uint32_t *verify)
{
	struct pp_tlv ssl;

	if (!ssl_value(h, &ssl))
		return 0;
	*client = ssl.value[0];
	*verify = pp_be32(ssl.value + PP2_SSL_OFF_VERIFY);
	return 1;
}

int pp_tlv_find_ssl(const struct pp_header *h, uint8_t subtype, struct pp_tlv *out)
{
	struct pp_tlv ssl;
	struct pp_tlv_iter it;

	if (!ssl_value(h, &ssl))
		return 0;
	pp_tlv_iter_init(&it, ssl.value + PP2_SSL_HDR_LEN, ssl.len - (unsigned)PP2_SSL_HDR_LEN);
	return next_of(&it, subtype, out);
}

int pp_tlv_aws_vpce_id(const struct pp_header *h, const char **id, size_t *id_len)
{
	struct pp_tlv_iter it;
	struct pp_tlv t;

	pp_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (next_of(&it, PP2_TYPE_AWS, &t)) {
		if (t.len < 2 || t.value[0] != PP2_SUBTYPE_AWS_VPCE_ID)
			continue;
		/* The id is printable ASCII ("vpce-..."); anything else is malformed. */
		for (size_t i = 1; i < t.len; i++)
			if (t.value[i] < 0x21 || t.value[i] > 0x7E)
				return 0;
		*id = (const char *)t.value + 1;
		*id_len = t.len - 1u;
		return 1;
	}
	return 0;
}

int pp_tlv_azure_linkid(const struct pp_header *h, uint32_t *linkid)
{
	struct pp_tlv_iter it;
	struct pp_tlv t;

	pp_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (next_of(&it, PP2_TYPE_AZURE, &t)) {
		if (t.len < 1 || t.value[0] != PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID)
			continue;
		if (t.len != 5)
			return 0;
		*linkid = (uint32_t)t.value[1] | (uint32_t)t.value[2] << 8 |
			  (uint32_t)t.value[3] << 16 | (uint32_t)t.value[4] << 24;
		return 1;
	}
	return 0;
}

int pp_tlv_gcp_psc_id(const struct pp_header *h, uint64_t *conn_id)
{
	struct pp_tlv t;

	if (!pp_tlv_find(h, PP2_TYPE_GCP, &t) || t.len != 8)
		return 0;
	*conn_id = (uint64_t)pp_be32(t.value) << 32 | pp_be32(t.value + 4);
	return 1;
}
