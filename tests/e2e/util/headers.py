"""PROXY headers built in Python, independent of the C code under test."""
import ipaddress
import struct

__all__ = ["V2_SIG", "crc32c", "v1_header", "v2_header"]

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), bit by bit: slow but obviously right."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def v1_header(src, dst):
    """'PROXY TCP4|TCP6 ...\\r\\n' for (ip, port) pairs; src None gives 'PROXY UNKNOWN\\r\\n'."""
    if src is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src[0], dst[0], src[1], dst[1])).encode()


def v2_header(src=None, dst=None, command=1, tlvs=(), crc=False, fam=None, addr_block=None):
    """A v2 header. src/dst (ip, port) of one family give PROXY over TCP; command 0 is LOCAL.
    fam overrides byte 14 and addr_block the address bytes (for UDP/UNIX/UNSPEC cases).
    tlvs: (type, bytes) pairs; crc appends a CRC32C TLV and fills it in."""
    if addr_block is None:
        if src is None:
            addr_block, f = b"", 0x00
        elif ":" in src[0]:
            addr_block = (ipaddress.IPv6Address(src[0]).packed + ipaddress.IPv6Address(dst[0]).packed
                          + struct.pack("!HH", src[1], dst[1]))
            f = 0x21
        else:
            addr_block = (ipaddress.IPv4Address(src[0]).packed + ipaddress.IPv4Address(dst[0]).packed
                          + struct.pack("!HH", src[1], dst[1]))
            f = 0x11
    else:
        f = 0x00
    if fam is not None:
        f = fam
    tlv = b"".join(struct.pack("!BH", t, len(v)) + v for t, v in tlvs)
    if crc:
        tlv += struct.pack("!BH", 0x03, 4) + b"\0\0\0\0"
    body = addr_block + tlv
    hdr = V2_SIG + bytes([0x20 | command, f]) + struct.pack("!H", len(body)) + body
    if crc:
        hdr = hdr[:-4] + struct.pack("!I", crc32c(hdr))
    return hdr
