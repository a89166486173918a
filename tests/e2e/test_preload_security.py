"""Security properties of the shim: untrusted peers are never parsed, bad headers never reach the
program, strict vs optional mode, PROXYSHIM_PORTS, PROXYSHIM_VERSION, logging of rejections, and
every bad configuration value refused at start-up."""
import os
import re
import socket
import struct
import subprocess
import time

import pytest

from util import LIB, V2_SIG, conn_lines, exchange, free_port, v1_header, v2_header, wait_conns
from test_preload_accept import MODES, PAYLOAD, SRC4, TRUSTED, UNTRUSTED, check_line

GOOD = b"good connection\n"


def v2_raw(ver_cmd, fam, body):
    return V2_SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


ADDR4 = bytes([203, 0, 113, 7, 127, 0, 0, 1]) + struct.pack("!HH", 40001, 80)
CRC_HDR = v2_header(SRC4, ("127.0.0.1", 80), crc=True)

# Each starts a header and breaks one rule: dropped in strict and in optional mode.
MALFORMED = {
    "v1_lone_lf": b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\n",
    "v1_lone_cr": b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\rX",
    "v1_bad_proto": b"PROXY TCP5 203.0.113.7 127.0.0.1 40001 80\r\n",
    "v1_udp4": b"PROXY UDP4 203.0.113.7 127.0.0.1 40001 80\r\n",
    "v1_lowercase": b"PROXY tcp4 203.0.113.7 127.0.0.1 40001 80\r\n",
    "v1_double_space": b"PROXY TCP4  203.0.113.7 127.0.0.1 40001 80\r\n",
    "v1_leading_zero_ip": b"PROXY TCP4 203.0.113.07 127.0.0.1 40001 80\r\n",
    "v1_octet_256": b"PROXY TCP4 203.0.113.256 127.0.0.1 40001 80\r\n",
    "v1_port_65536": b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 80\r\n",
    "v1_port_leading_zero": b"PROXY TCP4 203.0.113.7 127.0.0.1 040001 80\r\n",
    "v1_port_sign": b"PROXY TCP4 203.0.113.7 127.0.0.1 +4001 80\r\n",
    "v1_tcp4_with_ipv6": b"PROXY TCP4 2001:db8::1 ::1 40001 80\r\n",
    "v1_tcp6_with_ipv4": b"PROXY TCP6 203.0.113.7 127.0.0.1 40001 80\r\n",
    "v1_missing_field": b"PROXY TCP4 203.0.113.7 127.0.0.1 40001\r\n",
    "v1_extra_field": b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80 9\r\n",
    "v1_nul": b"PROXY TCP4 203.0.113.7\x00127.0.0.1 40001 80\r\n",
    "v1_zone_id": b"PROXY TCP6 fe80::1%eth0 ::1 40001 80\r\n",
    "v1_too_long": b"PROXY UNKNOWN " + b"A" * 120 + b"\r\n",
    "v2_version_1": v2_raw(0x11, 0x11, ADDR4),
    "v2_version_3": v2_raw(0x31, 0x11, ADDR4),
    "v2_command_2": v2_raw(0x22, 0x11, ADDR4),
    "v2_family_4": v2_raw(0x21, 0x41, ADDR4),
    "v2_transport_3": v2_raw(0x21, 0x13, ADDR4),
    "v2_short_inet": v2_raw(0x21, 0x11, ADDR4[:11]),
    "v2_short_inet6": v2_raw(0x21, 0x21, b"\0" * 35),
    "v2_tlv_overrun": v2_raw(0x21, 0x11, ADDR4 + b"\x04\x00\x09abc"),
    "v2_tlv_header_cut": v2_raw(0x21, 0x11, ADDR4 + b"\x04\x00"),
    "v2_crc_mismatch": CRC_HDR[:-1] + bytes([CRC_HDR[-1] ^ 1]),
    "v2_crc_len_2": v2_raw(0x21, 0x11, ADDR4 + b"\x03\x00\x02\x00\x00"),
    "v2_unique_id_129": v2_header(SRC4, ("127.0.0.1", 80), tlvs=[(0x05, b"u" * 129)]),
}

# Bytes that cannot start a header: dropped in strict mode, passed through in optional mode.
NOT_PROXY = {
    "http": b"GET / HTTP/1.0\r\n\r\n",
    "tls_hello": bytes.fromhex("160301002e0100002a0303") + b"\0" * 40,
    "proxz": b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
}


def dropped(port, data, source=TRUSTED):
    """Sends data from source; asserts the connection was closed with nothing sent back."""
    got, me = exchange(port, data, source=source, timeout=5)
    assert got == b"", "the program saw this connection and echoed %r" % got
    return me


def reject_lines(p):
    return [l for l in p.output().splitlines() if l.startswith("proxyshim:") and "event=reject" in l]


@pytest.mark.parametrize("mode", ["strict", "optional"])
def test_malformed_headers_never_reach_the_program(ts, mode):
    p, port = ts(TRUSTED=TRUSTED, MODE=mode, TIMEOUT_MS=500)
    served = []
    for name, data in MALFORMED.items():
        dropped(port, data + PAYLOAD)
        got, me2 = exchange(port, v1_header(("192.0.2.%d" % (len(served) + 1), 1000 + len(served)),
                                            ("127.0.0.1", port)) + GOOD, source=TRUSTED)
        assert got == GOOD, name
        served.append(name)
    lines = wait_conns(p, len(served))
    assert len(lines) == len(MALFORMED), "a malformed header reached the program"
    for i, line in enumerate(lines):
        check_line(line, "AF_INET", "192.0.2.%d" % (i + 1), 1000 + i, GOOD)
    # each rejection logged (default level warn) with peer and reason
    rl = reject_lines(p)
    assert len(rl) == len(MALFORMED), "\n".join(rl)
    for l in rl:
        assert re.search(r"\breason=\S+", l), l
        assert re.search(r"\bpeer=127\.0\.0\.2:\d+\b", l), l
        assert "port=%d" % port in l, l


@pytest.mark.parametrize("kind", list(NOT_PROXY) + ["empty", "partial_then_eof"])
def test_strict_drops_connections_without_header(ts, kind):
    p, port = ts(TRUSTED=TRUSTED)
    if kind == "empty":
        s = socket.create_connection(("127.0.0.1", port), source_address=(TRUSTED, 0), timeout=5)
        s.close()
    elif kind == "partial_then_eof":
        dropped(port, v1_header(SRC4, ("127.0.0.1", port))[:20])
    else:
        dropped(port, NOT_PROXY[kind] + PAYLOAD)
    got, me = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    assert got == GOOD
    lines = wait_conns(p, 1)
    time.sleep(0.2)
    lines = conn_lines(p)
    assert len(lines) == 1, lines
    check_line(lines[0], "AF_INET", SRC4[0], SRC4[1], GOOD)


@pytest.mark.parametrize("kind", list(NOT_PROXY))
def test_optional_passes_non_proxy_bytes_unchanged(ts, kind):
    p, port = ts(TRUSTED=TRUSTED, MODE="optional")
    data = NOT_PROXY[kind] + PAYLOAD
    got, me = exchange(port, data, source=TRUSTED)
    assert got == data
    got2, me2 = exchange(port, v1_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    assert got2 == GOOD
    l1, l2 = wait_conns(p, 2)
    check_line(l1, "AF_INET", TRUSTED, me[1], data)
    check_line(l2, "AF_INET", SRC4[0], SRC4[1], GOOD)


def test_strict_epoll_listener_gets_eagain_and_goes_on(ts):
    p, port = ts(*MODES["epoll"], TRUSTED=TRUSTED)
    for data in (b"garbage that is no header\r\n", MALFORMED["v2_crc_mismatch"]):
        dropped(port, data)
    got, me = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    assert got == GOOD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], GOOD)
    assert "testserver: error" not in p.output()


@pytest.mark.parametrize("version", [1, 2])
def test_spoofed_header_from_untrusted_peer_is_data(ts, version):
    p, port = ts(TRUSTED=TRUSTED)
    h = (v1_header if version == 1 else v2_header)(("10.9.8.7", 1234), ("127.0.0.1", port))
    got, me = exchange(port, h + PAYLOAD, source=UNTRUSTED)
    assert got == h + PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", UNTRUSTED, me[1], h + PAYLOAD)
    assert reject_lines(p) == []


def test_untrusted_garbage_in_strict_mode_passes(ts):
    p, port = ts(TRUSTED=TRUSTED)
    data = b"\r\n\r\n\x00\r\nQUIT\n\xff\xff" + MALFORMED["v1_nul"]
    got, me = exchange(port, data, source=UNTRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", UNTRUSTED, me[1], data)


@pytest.mark.parametrize("allowed,sent,ok", [
    ("v1", 1, True), ("v1", 2, False), ("v2", 2, True), ("v2", 1, False), ("any", 1, True), ("any", 2, True)])
def test_version_selection(ts, allowed, sent, ok):
    p, port = ts(TRUSTED=TRUSTED, VERSION=allowed)
    h = (v1_header if sent == 1 else v2_header)(SRC4, ("127.0.0.1", port))
    if ok:
        got, me = exchange(port, h + PAYLOAD, source=TRUSTED)
        assert got == PAYLOAD
        (line,) = wait_conns(p, 1)
        check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    else:
        dropped(port, h + PAYLOAD)
        got, me = exchange(port, PAYLOAD, source=UNTRUSTED)
        (line,) = wait_conns(p, 1)
        check_line(line, "AF_INET", UNTRUSTED, me[1], PAYLOAD)
        assert len(reject_lines(p)) == 1


def test_disallowed_version_dropped_in_optional_mode_too(ts):
    p, port = ts(TRUSTED=TRUSTED, VERSION="v2", MODE="optional")
    dropped(port, v1_header(SRC4, ("127.0.0.1", port)) + PAYLOAD)
    got, me = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    assert got == GOOD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], GOOD)


def test_ports_outside_the_list_are_untouched(ts):
    covered, other = free_port(), free_port()
    p, port = ts(listen="127.0.0.1:%d" % other, TRUSTED=TRUSTED, PORTS="%d" % covered)
    data = v1_header(SRC4, ("127.0.0.1", port)) + PAYLOAD
    got, me = exchange(port, data, source=TRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", TRUSTED, me[1], data)
    assert "listening %d defer_accept=0" % port in p.output()


@pytest.mark.parametrize("spec", ["{p}", "1-2,{p}", "{lo}-{hi}", "443, {lo}-{hi} 8000-8099"])
def test_ports_in_the_list_are_covered(ts, spec):
    port = free_port()
    ports = spec.format(p=port, lo=port - 1, hi=port + 1)
    p, _ = ts(listen="127.0.0.1:%d" % port, TRUSTED=TRUSTED, PORTS=ports)
    got, me = exchange(port, v1_header(SRC4, ("127.0.0.1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("trusted,source,parsed", [
    ("*", UNTRUSTED, True),
    ("10.0.0.0/8, 127.0.0.2", TRUSTED, True),
    ("10.0.0.0/8,127.0.0.2", UNTRUSTED, False),
    ("10.0.0.0/8 127.0.0.0/30", UNTRUSTED, True),
    ("127.0.0.0/31", TRUSTED, False),
    ("::1, 127.0.0.4/32", UNTRUSTED, False),
    # README: ::ffff:a.b.c.d/96+n is the same as a.b.c.d/n
    ("::ffff:127.0.0.2", TRUSTED, True),
    ("::ffff:127.0.0.0/126", UNTRUSTED, True),
    ("::ffff:127.0.0.0/127", UNTRUSTED, False),
])
def test_trusted_list_forms(ts, trusted, source, parsed):
    p, port = ts(TRUSTED=trusted)
    h = v1_header(SRC4, ("127.0.0.1", port))
    got, me = exchange(port, h + PAYLOAD, source=source)
    (line,) = wait_conns(p, 1)
    if parsed:
        assert got == PAYLOAD
        check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    else:
        assert got == h + PAYLOAD
        check_line(line, "AF_INET", source, me[1], h + PAYLOAD)


def test_log_off_is_silent(ts):
    p, port = ts(TRUSTED=TRUSTED, LOG="off")
    dropped(port, b"not a header\r\n")
    exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    wait_conns(p, 1)
    assert "proxyshim" not in p.output()


def test_log_line_format(ts):
    p, port = ts(TRUSTED=TRUSTED)
    me = dropped(port, MALFORMED["v1_bad_proto"])
    deadline = time.monotonic() + 3
    while not reject_lines(p) and time.monotonic() < deadline:
        time.sleep(0.02)
    (l,) = reject_lines(p)
    assert re.fullmatch(r"proxyshim: (\w+=(\"[^\"]*\"|\S+) ?)+", l), l
    assert " level=warn " in l and " event=reject " in l, l
    assert "peer=127.0.0.2:%d" % me[1] in l.split(), l
    assert "port=%d" % port in l.split(), l


BAD_CONFIG = [
    ("TRUSTED", "10.0.0.0/33"),
    ("TRUSTED", "300.1.1.1"),
    ("TRUSTED", "127.0.0.2,10.0.0.0/33"),
    ("TRUSTED", "::1/129"),
    ("TRUSTED", "10.0.0.1/-1"),
    ("TRUSTED", "not-an-address"),
    ("TRUSTED", "1.2.3"),
    ("MODE", "lenient"),
    ("MODE", "STRICTER"),
    ("VERSION", "v3"),
    ("VERSION", "3"),
    ("PORTS", "70000"),
    ("PORTS", "443,70000"),
    ("PORTS", "80-65536"),
    ("PORTS", "abc"),
    ("PORTS", "-5"),
    ("TIMEOUT_MS", "-1"),
    ("TIMEOUT_MS", "abc"),
    ("TIMEOUT_MS", "10ms"),
    ("DEFER_ACCEPT", "2"),
    ("DEFER_ACCEPT", "yes please"),
    ("LOG", "verbose"),
]


@pytest.mark.parametrize("var,value", BAD_CONFIG)
def test_bad_configuration_is_a_startup_error(var, value):
    env = dict(os.environ, LD_PRELOAD=LIB)
    env["PROXYSHIM_TRUSTED"] = "127.0.0.2"
    env["PROXYSHIM_" + var] = value
    r = subprocess.run(["/bin/echo", "main ran"], env=env, capture_output=True, timeout=10)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == b"", "main() ran: %r" % r.stdout
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert "PROXYSHIM_" + var in err, err
    assert value in err, err


def test_good_configuration_values_start(ts):
    p, port = ts(TRUSTED="10.0.0.0/8, 127.0.0.2 ::1 2001:db8::/32,192.168.0.0/16",
                 VERSION="any", MODE="strict", PORTS="1-65535", TIMEOUT_MS=1000,
                 DEFER_ACCEPT=1, LOG="debug")
    got, me = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


def test_log_error_level_hides_warnings(ts):
    p, port = ts(TRUSTED=TRUSTED, LOG="error")
    dropped(port, MALFORMED["v2_command_2"])
    got, me = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    assert got == GOOD
    wait_conns(p, 1)
    assert [l for l in p.output().splitlines() if "level=warn" in l or "level=info" in l] == []


def test_log_debug_still_one_reject_per_connection(ts):
    p, port = ts(TRUSTED=TRUSTED, LOG="debug")
    me = dropped(port, MALFORMED["v1_bad_proto"])
    exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + GOOD, source=TRUSTED)
    wait_conns(p, 1)
    rl = reject_lines(p)
    assert len(rl) == 1 and "peer=127.0.0.2:%d" % me[1] in rl[0], p.output()
    for l in p.output().splitlines():
        if l.startswith("proxyshim:"):
            assert re.match(r"proxyshim: ts=\S+ pid=\d+ level=(debug|info|warn|error) event=\S+", l), l
