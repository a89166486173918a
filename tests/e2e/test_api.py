"""The application API (include/proxyshim.h): proxyshim_peer() and proxyshim_tlv(), looked up
with dlsym(RTLD_DEFAULT, ...) by tests/e2e/progs/apiprog.c, which runs with and without the
shim. TLVs come from proxyshim-send --authority/--tlv (the cloud ones too) or from headers
built in Python; they are kept only with PROXYSHIM_KEEP_TLVS=1, up to PROXYSHIM_TLV_MAX."""
import os
import socket
import struct
import subprocess
import time

import pytest

from util import (BUILD, SEND, connect_from, shut_wr, shim_env, start_listening, v1_header, v2_header,
                  wait_json)

APIPROG = os.path.join(BUILD, "progs", "apiprog")
TRUSTED = "127.0.0.2"
SRC = ("203.0.113.9", 4711)
DST = ("198.51.100.20", 443)
PAYLOAD = b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n" + bytes(range(256))

SSL_VALUE = (b"\x07" + struct.pack("!I", 0)
             + struct.pack("!BH", 0x21, 7) + b"TLSv1.3"
             + struct.pack("!BH", 0x22, 14) + b"client.example")
# type: value, in the order they are sent
TLVS = [
    (0x01, b"h2"),                                         # ALPN
    (0x02, b"example.com"),                                # AUTHORITY (sent with --authority)
    (0x05, bytes.fromhex("00112233445566778899aabbccddeeff")),  # UNIQUE_ID
    (0x20, SSL_VALUE),                                     # SSL with VERSION and CN sub-TLVs
    (0xEA, b"\x01vpce-0123456789abcdef0"),                 # AWS: VPC endpoint id
    (0xEE, b"\x01" + struct.pack("<I", 0x12345678)),       # Azure: private endpoint LinkID
    (0xE0, struct.pack(">Q", 0x0102030405060708)),         # GCP: PSC connection id
    (0xF1, b"custom"),                                     # a type of no one's
]
ASKED = [0x01, 0x02, 0x05, 0x20, 0x21, 0x22, 0xEA, 0xEE, 0xE0, 0xF1, 0x30, 0x23]
EXPECTED = dict(TLVS)
EXPECTED[0x21] = b"TLSv1.3"
EXPECTED[0x22] = b"client.example"


@pytest.fixture
def api(procs):
    """api(*options, shim=True, **PROXYSHIM_vars): apiprog asking for the ASKED TLV types;
    returns (Proc, port)."""
    def start(*args, shim=True, **env):
        env.setdefault("TRUSTED", TRUSTED)
        argv = [APIPROG] + [a for t in ASKED for a in ("--tlv", hex(t))] + list(args)
        p, port = start_listening(argv, env=shim_env(**env) if shim else None, log_name="apiprog")
        procs.append(p)
        return p, port
    return start


def send_with_tlvs(port, payload=PAYLOAD, tlvs=TLVS):
    """proxyshim-send from 127.0.0.2 with every TLV (AUTHORITY through --authority)."""
    argv = [SEND, "--source-ip", TRUSTED, "--src", "%s:%d" % SRC, "--dst", "%s:%d" % DST]
    for t, v in tlvs:
        if t == 0x02:
            argv += ["--authority", v.decode()]
        else:
            argv += ["--tlv", "0x%02X=%s" % (t, v.hex())]
    argv += ["127.0.0.1", str(port)]
    r = subprocess.run(argv, input=payload, capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr


def send_raw(port, data, source=TRUSTED, delay=0.0):
    s = connect_from(port, source)
    me = s.getsockname()
    if delay:
        time.sleep(delay)
    s.sendall(data)
    shut_wr(s)
    while s.recv(4096):
        pass
    s.close()
    return me


def conn(p, n=1):
    return wait_json(p, lambda d: d.get("n") == n)[n - 1]


def addr(a):
    return (a.get("addr"), a.get("port"))


def check_misuse(line):
    # the fd after close(), -1, and a file that is not a socket: the kernel's errno
    assert line["after_close"] == {"rc": -1, "errno": "EBADF", "errno_kept": False}
    assert line["after_close_tlv"] == {"rc": -1, "errno": "EBADF", "errno_kept": False}
    assert line["bad_fd"] == {"rc": -1, "errno": "EBADF", "errno_kept": False}
    assert line["not_sock"] == {"rc": -1, "errno": "ENOTSOCK", "errno_kept": False}


def test_without_the_shim_dlsym_finds_nothing_and_the_program_runs(api):
    p, port = api(shim=False)
    data = v2_header(SRC, DST) + PAYLOAD
    me = send_raw(port, data)
    line = conn(p)
    assert line["have_api"] is False
    assert "api_peer" not in line
    assert bytes.fromhex(line["hex"]) == data  # no shim: the header is just data
    assert addr(line["peer"]) == me


@pytest.mark.parametrize("consume", ["accept", "lazy"])
@pytest.mark.parametrize("version", [1, 2])
def test_peer(api, consume, version):
    p, port = api(CONSUME=consume)
    send_raw(port, (v1_header if version == 1 else v2_header)(SRC, DST) + PAYLOAD)
    line = conn(p)
    assert line["have_api"] is True
    assert line["api_peer"] == {
        "rc": 0, "errno": "0", "errno_kept": True, "version": version, "command": 1,
        "src_len": 16, "dst_len": 16,
        "src": {"family": "AF_INET", "addr": SRC[0], "port": SRC[1]},
        "dst": {"family": "AF_INET", "addr": DST[0], "port": DST[1]}}, line
    assert bytes.fromhex(line["hex"]) == PAYLOAD
    assert addr(line["peer"]) == SRC
    check_misuse(line)


def test_peer_ipv6_header_on_ipv4_socket(api):
    src, dst = ("2001:db8::9", 4711), ("2001:db8::20", 443)
    p, port = api()
    send_raw(port, v2_header(src, dst) + PAYLOAD)
    got = conn(p)["api_peer"]
    assert got["rc"] == 0 and got["src_len"] == 28 and got["dst_len"] == 28, got
    assert got["src"] == {"family": "AF_INET6", "addr": src[0], "port": src[1]}
    assert got["dst"] == {"family": "AF_INET6", "addr": dst[0], "port": dst[1]}


def test_lazy_api_call_reads_the_header_first(api):
    # nothing read yet and the header 0.3 s late: proxyshim_peer() takes it, the payload follows
    p, port = api(CONSUME="lazy", TIMEOUT_MS=3000, KEEP_TLVS=1)
    send_raw(port, v2_header(SRC, DST, tlvs=[(0x01, b"h2")]) + PAYLOAD, delay=0.3)
    line = conn(p)
    assert line["api_peer"]["rc"] == 0 and addr(line["api_peer"]["src"]) == SRC, line
    assert line["tlvs"]["0x01"]["hex"] == b"h2".hex()
    assert bytes.fromhex(line["hex"]) == PAYLOAD


@pytest.mark.parametrize("consume", ["accept", "lazy"])
def test_tlvs_kept(api, consume):
    p, port = api(CONSUME=consume, KEEP_TLVS=1)
    send_with_tlvs(port)
    line = conn(p)
    assert line["api_peer"]["rc"] == 0 and addr(line["api_peer"]["src"]) == SRC
    for t in ASKED:
        got = line["tlvs"]["0x%02x" % t]
        if t in EXPECTED:
            v = EXPECTED[t]
            assert got == {"rc": len(v), "errno": "0", "errno_kept": True, "hex": v.hex(),
                           "head": (v + b"\xaa" * 4)[:4].hex()}, (hex(t), got)
        else:  # NETNS and SSL_CIPHER were not sent
            assert got == {"rc": -1, "errno": "ENOENT", "errno_kept": False}, (hex(t), got)
    # a 2-byte buffer: the full length is returned, 2 bytes copied, the rest untouched
    assert line["tlv_trunc"]["rc"] == 2 and line["tlv_trunc"]["head"] == "6832aaaa"
    assert line["big_type"] == {"rc": -1, "errno": "ENOENT", "errno_kept": False}
    assert bytes.fromhex(line["hex"]) == PAYLOAD
    check_misuse(line)


def test_tlvs_not_kept_by_default(api):
    p, port = api()
    send_with_tlvs(port)
    line = conn(p)
    assert line["api_peer"]["rc"] == 0
    for t in ASKED:
        assert line["tlvs"]["0x%02x" % t] == {"rc": -1, "errno": "ENOENT", "errno_kept": False}
    assert bytes.fromhex(line["hex"]) == PAYLOAD


@pytest.mark.parametrize("tlv_max,kept", [
    (0, []), (4, []), (5, [0x01]), (18, [0x01]), (19, [0x01, 0x02]),
    (37, [0x01, 0x02]), (38, [0x01, 0x02, 0x05])])
def test_tlv_max_bounds_what_is_kept(api, tlv_max, kept):
    # whole TLVs in order while they fit: ALPN 3+2, AUTHORITY 3+11, UNIQUE_ID 3+16 bytes
    p, port = api(KEEP_TLVS=1, TLV_MAX=tlv_max)
    send_with_tlvs(port, tlvs=TLVS[:3])
    line = conn(p)
    for t in (0x01, 0x02, 0x05):
        got = line["tlvs"]["0x%02x" % t]
        if t in kept:
            assert got["rc"] == len(EXPECTED[t]) and got["hex"] == EXPECTED[t].hex(), (t, got)
        else:
            assert got["rc"] == -1 and got["errno"] == "ENOENT", (t, got)
    assert bytes.fromhex(line["hex"]) == PAYLOAD


def test_tlvs_do_not_outlive_their_connection(api):
    # the second connection (no TLVs) gets the same fd number as the first (which had them)
    p, port = api("--max-conns", "2", KEEP_TLVS=1)
    send_with_tlvs(port)
    send_raw(port, v2_header(("192.0.2.5", 5555), DST) + PAYLOAD)
    l1, l2 = wait_json(p, lambda d: d.get("n") == 2)
    assert l1["fd"] == l2["fd"]
    assert l1["tlvs"]["0x01"]["rc"] == 2
    assert addr(l2["api_peer"]["src"]) == ("192.0.2.5", 5555)
    for t in ASKED:
        assert l2["tlvs"]["0x%02x" % t]["errno"] == "ENOENT", t


@pytest.mark.parametrize("what", ["untrusted", "local", "v1_unknown"])
def test_peer_enoent_without_a_client_address(api, what):
    p, port = api()
    if what == "untrusted":
        me = send_raw(port, v2_header(SRC, DST) + PAYLOAD, source="127.0.0.3")
        data = v2_header(SRC, DST) + PAYLOAD
    else:
        hdr = v2_header(command=0) if what == "local" else v1_header(None, None)
        me = send_raw(port, hdr + PAYLOAD)
        data = PAYLOAD
    line = conn(p)
    assert line["api_peer"] == {"rc": -1, "errno": "ENOENT", "errno_kept": False}, line
    assert addr(line["peer"]) == me
    assert bytes.fromhex(line["hex"]) == data


def test_lazy_refused_header_enotconn(api):
    # no grace: the header, 0.2 s late, is refused by the first read, not in accept()
    p, port = api(CONSUME="lazy", LAZY_GRACE_MS=0)
    send_raw(port, b"PROXY TCP4 nonsense\r\n" + PAYLOAD, delay=0.2)
    line = conn(p)
    assert line["api_peer"] == {"rc": -1, "errno": "ENOTCONN", "errno_kept": False}, line
    assert line["bytes"] == 0
