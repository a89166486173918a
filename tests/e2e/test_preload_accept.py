"""The shim in accept(), accept4() and getpeername(): the address a server sees for trusted
and untrusted peers, every accept style, address families, truncation, and fd bookkeeping.
Trusted peer: 127.0.0.2. Untrusted peer: 127.0.0.3. The testserver reports per connection."""
import hashlib
import os
import resource
import socket
import subprocess

import pytest

from util import LIB, exchange, v1_header, v2_header, wait_conns

TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
SRC4 = ("203.0.113.7", 40001)
SRC6 = ("2001:db8::7", 40006)
PAYLOAD = b"hello, proxyshim\n\x00\xff\r\n"


def check_line(line, fam, addr, port, payload, accept=True):
    """The connection's JSON line shows addr:port from both accept() and getpeername(), and
    exactly the payload's bytes."""
    if accept:
        assert line["accept"] == {"family": fam, "addr": addr, "port": port,
                                  "len": 16 if fam == "AF_INET" else 28}, line
    assert line["peer"]["family"] == fam, line
    assert (line["peer"]["addr"], line["peer"]["port"]) == (addr, port), line
    assert line["bytes"] == len(payload), line
    assert line["sha256"] == hashlib.sha256(payload).hexdigest(), line
    assert line["hex"] == payload[:256].hex(), line


def hdr(version, src, lport, dst_ip="127.0.0.1"):
    return (v1_header if version == 1 else v2_header)(src, (dst_ip, lport))


MODES = {
    "accept": [],
    "accept4": ["--accept4"],
    "epoll": ["--mode", "epoll"],
    "epoll_et": ["--mode", "epoll", "--et"],
    "poll": ["--mode", "poll"],
    "threads": ["--mode", "threads", "--threads", "4"],
    "fork": ["--mode", "fork"],
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("version", [1, 2])
def test_trusted_header_gives_source(ts, mode, version):
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(version, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD  # the echo: not one header byte reached the program
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("mode", list(MODES))
def test_untrusted_peer_is_not_parsed(ts, mode):
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED)
    data = hdr(1, SRC4, port) + PAYLOAD
    got, me = exchange(port, data, source=UNTRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", UNTRUSTED, me[1], data)


def test_shim_inactive_without_trusted(ts):
    p, port = ts()  # LD_PRELOAD set, PROXYSHIM_TRUSTED unset: the shim does nothing
    data = hdr(2, SRC4, port) + PAYLOAD
    got, me = exchange(port, data, source=TRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", TRUSTED, me[1], data)
    # a notice that it is inactive is fine; nothing about connections
    shim_lines = [l for l in p.output().splitlines() if l.startswith("proxyshim:")]
    assert len(shim_lines) == 1 and "event=inactive" in shim_lines[0], shim_lines


def test_many_connections_in_sequence_each_get_their_own_source(ts):
    p, port = ts(TRUSTED=TRUSTED)
    expected = []
    for i in range(20):
        if i % 3 == 2:
            data = b"untrusted %d\n" % i
            got, me = exchange(port, data, source=UNTRUSTED)
            expected.append((UNTRUSTED, me[1], data))
        else:
            src = ("198.51.100.%d" % (i + 1), 1000 + i)
            data = b"trusted %d\n" % i
            got, me = exchange(port, hdr(1 + i % 2, src, port) + data, source=TRUSTED)
            expected.append((src[0], src[1], data))
        assert got == data
    lines = wait_conns(p, 20)
    for line, (a, pt, data) in zip(lines, expected):
        check_line(line, "AF_INET", a, pt, data)


@pytest.mark.parametrize("version", [1, 2])
def test_ipv6_listener_ipv6_source(ts, version):
    p, port = ts(listen="[::1]:0", TRUSTED="::1")
    got, me = exchange(port, hdr(version, SRC6, port, "::1") + PAYLOAD, host="::1")
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", SRC6[0], SRC6[1], PAYLOAD)


def test_ipv6_listener_untrusted_v6_peer(ts):
    p, port = ts(listen="[::1]:0", TRUSTED="127.0.0.2, 2001:db8::/32")
    data = hdr(2, SRC6, port, "::1") + PAYLOAD
    got, me = exchange(port, data, host="::1")
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", "::1", me[1], data)


@pytest.mark.parametrize("version", [1, 2])
def test_dual_stack_ipv4_source_is_mapped(ts, version):
    # Trusted as the IPv4 address 127.0.0.2; the real peer is ::ffff:127.0.0.2 on this listener.
    p, port = ts(listen="[::]:0", TRUSTED="127.0.0.2/32")
    got, me = exchange(port, hdr(version, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", "::ffff:" + SRC4[0], SRC4[1], PAYLOAD)


def test_dual_stack_untrusted_mapped_peer(ts):
    p, port = ts(listen="[::]:0", TRUSTED="127.0.0.2")
    data = hdr(1, SRC4, port) + PAYLOAD
    got, me = exchange(port, data, source=UNTRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", "::ffff:" + UNTRUSTED, me[1], data)


def test_dual_stack_ipv6_source(ts):
    p, port = ts(listen="[::]:0", TRUSTED="127.0.0.0/24")
    got, me = exchange(port, hdr(2, SRC6, port, "::ffff:127.0.0.1") + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", SRC6[0], SRC6[1], PAYLOAD)


@pytest.mark.parametrize("version", [1, 2])
def test_ipv6_source_on_ipv4_listener(ts, version):
    p, port = ts(TRUSTED=TRUSTED)
    h = v1_header(SRC6, ("2001:db8::1", port)) if version == 1 else v2_header(SRC6, ("2001:db8::1", port))
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", SRC6[0], SRC6[1], PAYLOAD)


def test_short_addrlen_truncates_ipv4(ts):
    p, port = ts("--addrlen", "8", TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert line["addrlen"] == 16  # the full size, per POSIX
    raw = bytes.fromhex(line["accept_raw"])
    expect = socket.AF_INET.to_bytes(2, "little") + SRC4[1].to_bytes(2, "big") + socket.inet_aton(SRC4[0])
    assert raw[:8] == expect
    assert raw[8:] == b"\xaa" * 24  # nothing written past the caller's 8 bytes
    assert line["hex"] == PAYLOAD.hex()


def test_ipv6_source_into_sockaddr_in_sized_buffer(ts):
    # A server written for IPv4 passes a sockaddr_in (16 bytes); the source is IPv6 (28 bytes).
    p, port = ts("--addrlen", "16", TRUSTED=TRUSTED)
    got, me = exchange(port, v2_header(SRC6, ("2001:db8::1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert line["addrlen"] == 28
    raw = bytes.fromhex(line["accept_raw"])
    expect = (socket.AF_INET6.to_bytes(2, "little") + SRC6[1].to_bytes(2, "big") + b"\0\0\0\0"
              + socket.inet_pton(socket.AF_INET6, SRC6[0])[:8])
    assert raw[:16] == expect
    assert raw[16:] == b"\xaa" * 16
    assert line["hex"] == PAYLOAD.hex()


@pytest.mark.parametrize("mode", ["accept", "accept4", "epoll"])
def test_null_addr(ts, mode):
    p, port = ts("--null-addr", *MODES[mode], TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(1, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert line["accept"] is None
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD, accept=False)


@pytest.mark.parametrize("mode", ["accept", "epoll", "epoll_et", "poll"])
@pytest.mark.parametrize("version", [1, 2])
def test_header_byte_by_byte(ts, version, mode):
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED, TIMEOUT_MS=5000)
    h = hdr(version, SRC4, port)
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED, pieces=[1] * len(h), delay=0.01)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("mode", ["accept", "epoll", "epoll_et", "poll", "threads"])
@pytest.mark.parametrize("version", [1, 2])
def test_header_split_inside_and_payload_right_after(ts, version, mode):
    # A header in two pieces, the second carrying the header's tail and the payload together.
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED)
    h = hdr(version, SRC4, port)
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED, pieces=[7], delay=0.05)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("version", [1, 2])
def test_payload_that_looks_like_a_second_header(ts, version):
    p, port = ts(TRUSTED=TRUSTED)
    h = hdr(version, SRC4, port)
    data = hdr(version, ("192.0.2.1", 1), port) + PAYLOAD
    got, me = exchange(port, h + data, source=TRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], data)


@pytest.mark.parametrize("mode", ["accept", "epoll"])
def test_large_payload_every_byte(ts, mode):
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED)
    data = os.urandom(3 * 1024 * 1024 + 17)
    got, me = exchange(port, hdr(2, SRC4, port) + data, source=TRUSTED, timeout=20)
    assert len(got) == len(data) and got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], data)


def test_v2_with_tlvs_and_crc(ts):
    p, port = ts(TRUSTED=TRUSTED)
    h = v2_header(SRC4, ("127.0.0.1", port), tlvs=[(0x01, b"h2"), (0x02, b"example.com"),
                                                   (0x05, b"id-1234"), (0x04, b"\0" * 5),
                                                   (0xEA, b"\x01vpce-0123456789abcdef0")], crc=True)
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


def test_v2_large_header(ts):
    # 16 + 60000 bytes of header: more than a typical single peek; must still be consumed exactly.
    p, port = ts(TRUSTED=TRUSTED, TIMEOUT_MS=3000)
    h = v2_header(SRC4, ("127.0.0.1", port), tlvs=[(0x04, b"\0" * 60000)])
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


REAL_ENDPOINT_HEADERS = {
    "v2_local": lambda port: v2_header(command=0),
    "v2_local_with_addresses": lambda port: v2_header(SRC4, ("127.0.0.1", port), command=0),
    "v1_unknown": lambda port: b"PROXY UNKNOWN\r\n",
    "v1_unknown_with_addresses": lambda port: b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
    "v2_proxy_unspec": lambda port: v2_header(command=1, fam=0x00, addr_block=b""),
    "v2_proxy_udp4": lambda port: v2_header(command=1, fam=0x12, addr_block=bytes([9, 9, 9, 9, 127, 0, 0, 1, 0, 53, 0, 53])),
    "v2_proxy_udp6": lambda port: v2_header(command=1, fam=0x22, addr_block=socket.inet_pton(socket.AF_INET6, "2001:db8::9") + socket.inet_pton(socket.AF_INET6, "::1") + b"\0\x35\0\x35"),
    "v2_proxy_unix": lambda port: v2_header(command=1, fam=0x31, addr_block=b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")),
}


@pytest.mark.parametrize("kind", list(REAL_ENDPOINT_HEADERS))
def test_headers_that_keep_the_real_endpoints(ts, kind):
    p, port = ts(TRUSTED=TRUSTED)
    got, me = exchange(port, REAL_ENDPOINT_HEADERS[kind](port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", TRUSTED, me[1], PAYLOAD)


@pytest.mark.parametrize("how", ["dup", "dup2", "dup3", "fcntl", "fcntl_cloexec"])
def test_dup_carries_the_address(ts, how):
    p, port = ts("--dup", how, TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert line["dup_fd"] == line["fd"] and line["dup_fd"] != line["acc_fd"], line
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.fixture
def probe_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s
    s.close()


@pytest.mark.parametrize("close_with", ["close", "close_range"])
def test_closed_fd_leaves_no_stale_address(ts, probe_listener, close_with):
    pport = probe_listener.getsockname()[1]
    p, port = ts("--close-with", close_with, "--probe", "127.0.0.1:%d" % pport, TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(1, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    got, me2 = exchange(port, PAYLOAD, source=UNTRUSTED)
    assert got == PAYLOAD
    l1, l2 = wait_conns(p, 2)
    check_line(l1, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    # the outgoing probe socket took the closed connection's fd number: its peer is the probe
    assert l1["probe"]["same_fd"] is True, l1
    assert l1["probe"]["peer"]["addr"] == "127.0.0.1" and l1["probe"]["peer"]["port"] == pport, l1
    # the next accepted connection reuses the fd number too, and is untrusted
    assert l2["fd"] == l1["fd"]
    check_line(l2, "AF_INET", UNTRUSTED, me2[1], PAYLOAD)


def test_dup2_target_reused_after_close(ts, probe_listener):
    # --dup dup2 moves the connection to fd+1000; after it closes, the probe reuses the low fd,
    # and the connection after that lands on fd+1000 again via dup2 over a closed number.
    pport = probe_listener.getsockname()[1]
    p, port = ts("--dup", "dup2", "--probe", "127.0.0.1:%d" % pport, TRUSTED=TRUSTED)
    exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    got, me2 = exchange(port, PAYLOAD, source=UNTRUSTED)
    l1, l2 = wait_conns(p, 2)
    check_line(l1, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    assert l1["dup_fd"] == l2["dup_fd"]
    check_line(l2, "AF_INET", UNTRUSTED, me2[1], PAYLOAD)


def _nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_fds_near_the_process_limit(ts):
    # Listener and connections on fds as high as this machine allows (at least above 16384
    # unless the hard limit is lower): no fixed-size table.
    top = min(_nofile_hard() - 600, 70000)
    p, port = ts("--high-fd", top + 300, "--fill-fds", top, TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    got2, me2 = exchange(port, PAYLOAD, source=UNTRUSTED)
    l1, l2 = wait_conns(p, 2)
    assert l1["fd"] >= top
    check_line(l1, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    check_line(l2, "AF_INET", UNTRUSTED, me2[1], PAYLOAD)


def test_fds_above_65536(ts):
    if _nofile_hard() < 70400:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (70400, 70400))
        except (ValueError, OSError):
            pytest.skip("RLIMIT_NOFILE hard limit is %d and cannot be raised here (no "
                        "CAP_SYS_RESOURCE): fds above 65536 cannot exist" % _nofile_hard())
    p, port = ts("--high-fd", 70300, "--fill-fds", 70000, TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert line["fd"] >= 70000
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


def test_defer_accept_on_covered_listener(ts):
    p, port = ts(TRUSTED=TRUSTED)
    assert "defer_accept=0" not in p.output() and "defer_accept=-1" not in p.output()
    p2, port2 = ts(TRUSTED=TRUSTED, DEFER_ACCEPT=0)
    assert "listening %d defer_accept=0" % port2 in p2.output()
    p3, port3 = ts()  # shim inactive
    assert "listening %d defer_accept=0" % port3 in p3.output()


def test_program_that_never_listens_is_untouched():
    env = dict(os.environ, LD_PRELOAD=LIB, PROXYSHIM_TRUSTED=TRUSTED)
    r = subprocess.run(["/bin/echo", "hi"], env=env, capture_output=True, timeout=10)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
    r = subprocess.run(["/bin/sh", "-c", "cat; ls /nonexistent-dir 2>/dev/null; exit 3"],
                       env=env, input=b"abc", capture_output=True, timeout=10)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"abc", b"")


@pytest.mark.parametrize("mode,nonblock,cloexec", [
    ("accept", False, False), ("accept4", False, True), ("epoll", True, True), ("epoll_et", True, True),
    ("poll", False, True), ("threads", False, False)])
@pytest.mark.parametrize("trusted", [True, False])
def test_accept_flags_and_errno_as_libc(ts, mode, nonblock, cloexec, trusted):
    # The shim may wait for the header however it likes, but the fd it hands back carries
    # exactly the flags the caller asked for, and a successful call leaves errno alone.
    p, port = ts(*MODES[mode], TRUSTED=TRUSTED, TIMEOUT_MS=3000)
    h = hdr(2, SRC4, port) if trusted else b""
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED if trusted else UNTRUSTED,
                       pieces=[5, 5] if trusted else None, delay=0.05)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    assert (line["nonblock"], line["cloexec"]) == (nonblock, cloexec), line
    assert line["errno_kept"] is True and line["gp_errno_kept"] is True, line
    if trusted:
        check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    else:
        check_line(line, "AF_INET", UNTRUSTED, me[1], PAYLOAD)


def test_getpeername_short_buffer_truncates(ts):
    p, port = ts("--addrlen", "8", TRUSTED=TRUSTED)
    exchange(port, hdr(1, SRC4, port) + PAYLOAD, source=TRUSTED)
    (line,) = wait_conns(p, 1)
    assert line["peer_len"] == 16, line
    raw = bytes.fromhex(line["peer_raw"])
    assert raw[:8] == socket.AF_INET.to_bytes(2, "little") + SRC4[1].to_bytes(2, "big") + socket.inet_aton(SRC4[0])
    assert raw[8:] == b"\xaa" * 24


def test_getpeername_ipv6_source_into_sockaddr_in_buffer(ts):
    p, port = ts("--addrlen", "16", TRUSTED=TRUSTED)
    exchange(port, v1_header(SRC6, ("2001:db8::1", port)) + PAYLOAD, source=TRUSTED)
    (line,) = wait_conns(p, 1)
    assert line["peer_len"] == 28, line
    raw = bytes.fromhex(line["peer_raw"])
    assert raw[:16] == (socket.AF_INET6.to_bytes(2, "little") + SRC6[1].to_bytes(2, "big") + b"\0" * 4
                        + socket.inet_pton(socket.AF_INET6, SRC6[0])[:8])
    assert raw[16:] == b"\xaa" * 16


@pytest.mark.parametrize("via", ["dup2", "dup3"])
def test_dup2_over_a_live_tracked_fd(ts, probe_listener, via):
    # dup2(probe, conn_fd) closes the rewritten connection and puts an outgoing socket in its
    # place: getpeername() on that number must now be the probe's peer.
    pport = probe_listener.getsockname()[1]
    p, port = ts("--probe", "127.0.0.1:%d" % pport, "--probe-via", via, TRUSTED=TRUSTED)
    got, me = exchange(port, hdr(2, SRC4, port) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    assert line["probe"]["same_fd"] is True, line
    assert (line["probe"]["peer"]["addr"], line["probe"]["peer"]["port"]) == ("127.0.0.1", pport), line


@pytest.mark.parametrize("mode", ["accept", "epoll", "threads"])
def test_signal_storm_while_header_trickles(ts, mode):
    # SIGALRM every 2 ms without SA_RESTART: the shim's wait for the header is interrupted over
    # and over; the connection must still arrive whole, with its source, exactly once.
    p, port = ts(*MODES[mode], "--signals", "2000", TRUSTED=TRUSTED, TIMEOUT_MS=5000)
    for i in range(3):
        src = ("192.0.2.%d" % (50 + i), 7000 + i)
        h = hdr(1 + i % 2, src, port)
        got, me = exchange(port, h + PAYLOAD, source=TRUSTED, pieces=[3] * (len(h) // 3), delay=0.02)
        assert got == PAYLOAD
    got, me_u = exchange(port, PAYLOAD, source=UNTRUSTED)
    lines = wait_conns(p, 4)
    assert len(lines) == 4
    for i, line in enumerate(lines[:3]):
        check_line(line, "AF_INET", "192.0.2.%d" % (50 + i), 7000 + i, PAYLOAD)
    check_line(lines[3], "AF_INET", UNTRUSTED, me_u[1], PAYLOAD)


@pytest.mark.parametrize("how", ["read", "recv", "recvfrom", "recvmsg", "readv", "fread", "syscall", "splice"])
@pytest.mark.parametrize("version", [1, 2])
def test_every_way_of_reading_sees_only_the_payload(ts, how, version):
    # The header is consumed inside accept(): whatever the program reads with, even stdio or a
    # raw SYS_read past libc, its first byte is the first payload byte.
    p, port = ts("--read-with", how, TRUSTED=TRUSTED)
    data = PAYLOAD + os.urandom(200000)
    got, me = exchange(port, hdr(version, SRC4, port) + data, source=TRUSTED, timeout=20)
    assert got == data
    got2, me2 = exchange(port, hdr(version, SRC4, port) + PAYLOAD, source=UNTRUSTED)
    assert got2 == hdr(version, SRC4, port) + PAYLOAD
    l1, l2 = wait_conns(p, 2)
    check_line(l1, "AF_INET", SRC4[0], SRC4[1], data)
    check_line(l2, "AF_INET", UNTRUSTED, me2[1], hdr(version, SRC4, port) + PAYLOAD)


@pytest.mark.parametrize("how", ["read", "recv", "readv"])
def test_lazy_consume_header_after_accept(ts, how):
    # PROXYSHIM_CONSUME=lazy (shim/preload/lazy.c): accept() returns at once and the header is
    # taken by the connection's first read or getpeername(). Here the header arrives only after
    # accept() has returned.
    import time
    from util import connect, recv_all
    p, port = ts("--read-with", how, TRUSTED=TRUSTED, CONSUME="lazy")
    s = connect(port, source=TRUSTED)
    time.sleep(0.2)
    try:
        s.sendall(hdr(1, SRC4, port) + PAYLOAD)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    except OSError as e:
        got = repr(e)
    s.close()
    time.sleep(0.05)
    assert p.poll() is None, "the server died (status %s):\n%s" % (p.returncode, p.output())
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD, accept=False)
