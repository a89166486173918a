"""proxyshim-send end to end: the exact bytes it puts on the wire (checked against headers built
here, independently, with struct.pack and a CRC32C of our own), its relay of stdin and the reply,
its argument errors and exit statuses, and a real HAProxy accepting what it sends."""
import os
import re
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from util import SEND, V2_SIG, crc32c, free_port, haproxy, v1_header, v2_header, wait_port

SIG = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
assert SIG == V2_SIG
PAYLOAD = b"hello\x00world\r\n\xff" + bytes(range(256))
REPLY = b"reply from the listener\n"


# ---- the independent reference: util's Python header builders and CRC32C ----

def test_crc32c_reference():
    # The check value of CRC-32C, and RFC 3720 B.4's 32 zero bytes: the Python CRC32C that the
    # --crc tests trust is itself right.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA


def v2(cmd, src=None, dst=None, tlvs=(), crc=False):
    return v2_header(src, dst, command=cmd, tlvs=tlvs, crc=crc)


v1 = v1_header


# ---- a listener that records every byte ----

class Capture:
    """Accepts one connection on host (a port of its own), reads every byte until EOF, then
    writes reply and closes. With echo=True it writes back what it reads, as it reads it."""

    def __init__(self, host="127.0.0.1", reply=REPLY, echo=False):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.addr = self.sock.getsockname()[:2]
        self.port = self.addr[1]
        self.reply, self.echo = reply, echo
        self.data = b""
        self.peer = None
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            conn, peer = self.sock.accept()
            with conn:
                conn.settimeout(10)
                self.peer = peer[:2]
                self.local = conn.getsockname()[:2]
                chunks = []
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
                    if self.echo:
                        conn.sendall(b)
                self.data = b"".join(chunks)
                if self.reply:
                    conn.sendall(self.reply)
        except Exception as e:  # reported by result()
            self.error = e
        finally:
            self.sock.close()

    def result(self):
        self.t.join(15)
        assert not self.t.is_alive(), "listener still running"
        assert self.error is None, self.error
        return self.data


def send(*args, stdin=PAYLOAD, timeout=15):
    return subprocess.run([SEND] + [str(a) for a in args], input=stdin, capture_output=True,
                          timeout=timeout)


def run_send(args, host="127.0.0.1", connect=None, **kw):
    """Runs proxyshim-send args against a fresh Capture; checks a clean exit, that the reply
    came out on stdout byte for byte, and returns (header bytes, capture)."""
    cap = Capture(host, **kw)
    r = send(*args, connect or host, cap.port)
    got = cap.result()
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert r.stdout == REPLY
    assert got.endswith(PAYLOAD), got
    return got[:-len(PAYLOAD)], cap


# ---- bytes on the wire ----

def test_v1_tcp4():
    hdr, _ = run_send(["-1", "--src", "192.0.2.10:1234", "--dst", "198.51.100.20:80"])
    assert hdr == b"PROXY TCP4 192.0.2.10 198.51.100.20 1234 80\r\n"
    assert hdr == v1(("192.0.2.10", 1234), ("198.51.100.20", 80))


def test_v1_tcp6():
    hdr, _ = run_send(["-1", "--src", "[2001:db8::7]:4711", "--dst", "[2001:db8:1::1]:443"],
                      host="::1")
    assert hdr == b"PROXY TCP6 2001:db8::7 2001:db8:1::1 4711 443\r\n"


def test_v2_ipv4():
    hdr, _ = run_send(["--src", "203.0.113.7:4711", "--dst", "198.51.100.20:443"])
    assert hdr == (SIG + b"\x21\x11\x00\x0c" + bytes([203, 0, 113, 7, 198, 51, 100, 20])
                   + struct.pack("!HH", 4711, 443))
    assert hdr == v2(1, ("203.0.113.7", 4711), ("198.51.100.20", 443))


def test_v2_is_default_and_2_says_the_same():
    a, _ = run_send(["--src", "203.0.113.7:0", "--dst", "198.51.100.20:65535"])
    b, _ = run_send(["-2", "--src", "203.0.113.7:0", "--dst", "198.51.100.20:65535"])
    assert a == b == v2(1, ("203.0.113.7", 0), ("198.51.100.20", 65535))


def test_v2_ipv6():
    hdr, _ = run_send(["--src", "[2001:db8::7]:4711", "--dst", "[2001:db8:1::1]:443"], host="::1")
    assert hdr[12:16] == b"\x21\x21\x00\x24"
    assert hdr == v2(1, ("2001:db8::7", 4711), ("2001:db8:1::1", 443))


def test_v2_local():
    hdr, _ = run_send(["--local"])
    assert hdr == SIG + b"\x20\x00\x00\x00"
    assert hdr == v2(0)


def test_v2_local_with_tlv_and_crc():
    hdr, _ = run_send(["--local", "--authority", "example.com", "--crc"])
    assert hdr == v2(0, tlvs=[(2, b"example.com")], crc=True)


def test_v2_authority():
    hdr, _ = run_send(["--src", "203.0.113.7:4711", "--dst", "198.51.100.20:443",
                       "--authority", "www.example.com"])
    assert hdr == v2(1, ("203.0.113.7", 4711), ("198.51.100.20", 443),
                     tlvs=[(0x02, b"www.example.com")])


def test_v2_tlvs_in_order():
    hdr, _ = run_send(["--src", "203.0.113.7:4711", "--dst", "198.51.100.20:443",
                       "--tlv", "0xE0=00000000DEADBEEF", "--authority", "a.example",
                       "--tlv", "5=", "--tlv=234=01767063652D3132", "--tlv", "0XeE=01aBcD0000"])
    assert hdr == v2(1, ("203.0.113.7", 4711), ("198.51.100.20", 443),
                     tlvs=[(0xE0, bytes.fromhex("00000000deadbeef")), (2, b"a.example"), (5, b""),
                           (0xEA, b"\x01vpce-12"), (0xEE, bytes.fromhex("01abcd0000"))])


def test_v2_tlv_type_bounds():
    hdr, _ = run_send(["--src", "203.0.113.7:1", "--dst", "198.51.100.20:2",
                       "--tlv", "0=ff", "--tlv", "255=00", "--tlv", "0xff=0102"])
    assert hdr == v2(1, ("203.0.113.7", 1), ("198.51.100.20", 2),
                     tlvs=[(0, b"\xff"), (255, b"\x00"), (255, b"\x01\x02")])


def check_crc(hdr):
    """The CRC32C TLV is the last one; recompute it over the header with its value zeroed."""
    (length,) = struct.unpack("!H", hdr[14:16])
    assert len(hdr) == 16 + length
    assert hdr[-7:-4] == b"\x03\x00\x04"
    (sent,) = struct.unpack("!I", hdr[-4:])
    assert sent == crc32c(hdr[:-4] + b"\0\0\0\0")
    return sent


def test_v2_crc():
    hdr, _ = run_send(["--src", "203.0.113.7:4711", "--dst", "198.51.100.20:443", "--crc"])
    check_crc(hdr)
    assert hdr == v2(1, ("203.0.113.7", 4711), ("198.51.100.20", 443), crc=True)


def test_v2_crc_after_other_tlvs_ipv6():
    hdr, _ = run_send(["--src", "[2001:db8::7]:4711", "--dst", "[2001:db8:1::1]:443", "--crc",
                       "--authority", "example.org", "--tlv", "0xE0=0102030405060708"], host="::1")
    check_crc(hdr)
    assert hdr == v2(1, ("2001:db8::7", 4711), ("2001:db8:1::1", 443),
                     tlvs=[(2, b"example.org"), (0xE0, bytes(range(1, 9)))], crc=True)


# ---- addresses taken from the connection ----

@pytest.mark.parametrize("version", ["-1", "-2"])
def test_real_addresses_ipv4(version):
    hdr, cap = run_send([version])
    assert cap.peer[0] == "127.0.0.1"
    make = v1 if version == "-1" else (lambda s, d: v2(1, s, d))
    assert hdr == make(cap.peer, cap.addr)


@pytest.mark.parametrize("version", ["-1", "-2"])
@pytest.mark.parametrize("connect", ["::1", "[::1]"])
def test_real_addresses_ipv6(version, connect):
    hdr, cap = run_send([version], host="::1", connect=connect)
    assert cap.peer[0] == "::1"
    make = v1 if version == "-1" else (lambda s, d: v2(1, s, d))
    assert hdr == make(cap.peer, cap.addr)


def test_only_src_given_takes_dst_from_connection():
    hdr, cap = run_send(["--src", "203.0.113.7:4711"])
    assert hdr == v2(1, ("203.0.113.7", 4711), ("127.0.0.1", cap.port))


def test_only_dst_given_takes_src_from_connection():
    hdr, cap = run_send(["-1", "--dst", "198.51.100.20:443"])
    assert hdr == v1(cap.peer, ("198.51.100.20", 443))


@pytest.mark.parametrize("version", ["-1", "-2"])
def test_mixed_families_map_ipv4_into_ipv6(version):
    # An IPv6 client announced over an IPv4 connection: the real IPv4 destination goes out as
    # ::ffff:127.0.0.1, as HAProxy itself does.
    hdr, cap = run_send([version, "--src", "[2001:db8::7]:4711"])
    if version == "-2":
        assert hdr == v2(1, ("2001:db8::7", 4711), ("::ffff:127.0.0.1", cap.port))
    else:
        # Both spellings of the mapped address are valid v1 text (docs/PROTOCOL.md: what inet_pton
        # takes); HAProxy and RFC 5952 section 5 write the first, pp_build_v1 today the second.
        assert hdr in (v1(("2001:db8::7", 4711), ("::ffff:127.0.0.1", cap.port)),
                       v1(("2001:db8::7", 4711), ("::ffff:7f00:1", cap.port)))


@pytest.mark.parametrize("version", ["-1", "-2"])
def test_source_ip(version):
    hdr, cap = run_send([version, "--source-ip", "127.0.0.5"])
    assert cap.peer[0] == "127.0.0.5"
    make = v1 if version == "-1" else (lambda s, d: v2(1, s, d))
    assert hdr == make(cap.peer, cap.addr)


def test_source_ip_with_announced_src():
    hdr, cap = run_send(["--source-ip", "127.0.0.5", "--src", "203.0.113.7:4711"])
    assert cap.peer[0] == "127.0.0.5"
    assert hdr == v2(1, ("203.0.113.7", 4711), cap.addr)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace (Debian package strace) is not installed")
@pytest.mark.parametrize("args,length", [
    (["--src", "192.0.2.1:1", "--dst", "192.0.2.2:2", "--tlv", "7=" + "ab" * 65520], 65551),
    (["-1", "--src", "192.0.2.1:1", "--dst", "192.0.2.2:2"], 36),
], ids=["v2-largest", "v1"])
def test_header_goes_out_in_one_send(tmp_path, args, length):
    # The first send on the socket carries the whole header, with MSG_NOSIGNAL.
    cap = Capture()
    trace = tmp_path / "strace.txt"
    r = subprocess.run(["strace", "-qq", "-e", "trace=sendto,sendmsg,write,writev", "-o", str(trace),
                        SEND] + args + ["127.0.0.1", str(cap.port)],
                       input=PAYLOAD, capture_output=True, timeout=30)
    got = cap.result()
    assert r.returncode == 0, r.stderr
    assert len(got) == length + len(PAYLOAD)
    calls = [l for l in trace.read_text().splitlines()
             if re.match(r"(sendto|sendmsg|writev?)\(\d+,", l) and not l.startswith(("write(1,", "write(2,"))]
    first = re.match(r'sendto\(\d+, "(?:[^"\\]|\\.)*"(?:\.\.\.)?, (\d+), ([A-Z_|]+), NULL, 0\) = (\d+)', calls[0])
    assert first, calls[0]
    assert int(first.group(1)) == length
    assert "MSG_NOSIGNAL" in first.group(2).split("|")
    assert int(first.group(3)) == length


# ---- the relay ----

def test_empty_stdin():
    cap = Capture()
    r = send("--src", "203.0.113.7:4711", "--dst", "198.51.100.20:443", "127.0.0.1", cap.port,
             stdin=b"")
    assert cap.result() == v2(1, ("203.0.113.7", 4711), ("198.51.100.20", 443))
    assert (r.returncode, r.stdout, r.stderr) == (0, REPLY, b"")


def test_large_payload_through_an_echo_server():
    # Several times the relay buffer in both directions at once: the server echoes as it reads,
    # so a sender that stopped reading while it wrote would deadlock here.
    payload = os.urandom(3 * 1024 * 1024 + 17)
    cap = Capture(echo=True, reply=b"")
    r = send("-1", "--src", "192.0.2.1:1", "--dst", "192.0.2.2:2", "127.0.0.1", cap.port,
             stdin=payload, timeout=60)
    hdr = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    got = cap.result()
    assert r.returncode == 0, r.stderr
    assert got == hdr + payload
    assert r.stdout == hdr + payload


def test_header_is_not_split_from_payload_order():
    # The server speaks first and reads later: the greeting reaches stdout, the header still
    # precedes the payload.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    out = {}

    def run():
        c, _ = srv.accept()
        with c:
            c.sendall(b"220 hello\r\n")
            buf = b""
            while True:
                b = c.recv(4096)
                if not b:
                    break
                buf += b
            out["data"] = buf
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    r = send("--local", "127.0.0.1", srv.getsockname()[1], stdin=b"QUIT\r\n")
    t.join(10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"220 hello\r\n"
    assert out["data"] == v2(0) + b"QUIT\r\n"


# ---- arguments and exit statuses ----

BAD_ARGS = [
    ([], "missing HOST and PORT"),
    (["127.0.0.1"], "missing PORT"),
    (["127.0.0.1", "0"], "bad port"),
    (["127.0.0.1", "65536"], "bad port"),
    (["127.0.0.1", "-5"], "unknown option"),
    (["127.0.0.1", "80x"], "bad port"),
    (["127.0.0.1", "80", "extra"], "unexpected argument"),
    (["--bogus", "127.0.0.1", "80"], "unknown option"),
    (["-3", "127.0.0.1", "80"], "unknown option"),
    (["-1", "-2", "127.0.0.1", "80"], "mutually exclusive"),
    (["-1", "--local", "127.0.0.1", "80"], "--local"),
    (["-1", "--crc", "127.0.0.1", "80"], "--crc"),
    (["-1", "--authority", "x", "127.0.0.1", "80"], "--authority"),
    (["--tlv", "1=00", "-1", "127.0.0.1", "80"], "--tlv"),
    (["--local", "--src", "1.2.3.4:5", "127.0.0.1", "80"], "--local"),
    (["--src", "1.2.3.4", "127.0.0.1", "80"], "--src"),
    (["--src", "1.2.3.4:", "127.0.0.1", "80"], "--src"),
    (["--src", "1.2.3.4:65536", "127.0.0.1", "80"], "--src"),
    (["--src", "1.2.3.4:+80", "127.0.0.1", "80"], "--src"),
    (["--src", "1.2.3.256:80", "127.0.0.1", "80"], "--src"),
    (["--src", "2001:db8::7:443", "127.0.0.1", "80"], "brackets"),
    (["--src", "[2001:db8::7]443", "127.0.0.1", "80"], "--src"),
    (["--src", "[2001:db8::7:443", "127.0.0.1", "80"], "--src"),
    (["--src", "[192.0.2.1]:443", "127.0.0.1", "80"], "--src"),
    (["--dst", "example.com:80", "127.0.0.1", "80"], "--dst"),
    (["--src"], "--src needs a value"),
    (["--tlv", "1", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "256=00", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "0x100=00", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "-1=00", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "=00", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "1=abc", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "1=zz", "127.0.0.1", "80"], "--tlv"),
    (["--tlv", "0x=00", "127.0.0.1", "80"], "--tlv"),
    (["--authority", "", "127.0.0.1", "80"], "--authority"),
    (["--source-ip", "localhost", "127.0.0.1", "80"], "--source-ip"),
    (["--source-ip", "::1", "127.0.0.1", "80"], "--source-ip"),
    (["[127.0.0.1]", "80"], "HOST"),
    (["--tlv", "1=" + "00" * 65533, "127.0.0.1", "80"], "TLVs do not fit"),
]


@pytest.mark.parametrize("args,needle", BAD_ARGS, ids=[" ".join(a)[:40] or "none" for a, _ in BAD_ARGS])
def test_bad_arguments(args, needle):
    # Nothing listens on port 80 of 127.0.0.1 in this sandbox, so an argument error that were
    # not caught before connecting would show as status 1, not 2.
    r = send(*args, stdin=b"")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("proxyshim-send: ")
    assert needle in lines[0]


def test_tlvs_too_long_for_the_address_block():
    # 16 + 12 (IPv4 block) + 3 + 65521 = 65552: one byte over, known only once the real
    # connection's family is: still a usage error, and nothing is sent.
    cap = Capture(reply=b"")
    r = send("--tlv", "1=" + "00" * 65521, "127.0.0.1", cap.port, stdin=b"")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.decode().splitlines()) == 1
    assert cap.result() == b""


def test_largest_header():
    # 16 + 12 + 3 + 65520 = 65551 bytes, the maximum, in one piece.
    value = bytes(range(256)) * 255 + bytes(range(240))
    assert len(value) == 65520
    hdr, _ = run_send(["--src", "192.0.2.1:1", "--dst", "192.0.2.2:2", "--tlv", "7=" + value.hex()])
    assert len(hdr) == 65551
    assert hdr == v2(1, ("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=[(7, value)])


def test_connection_refused():
    port = free_port()
    r = send("127.0.0.1", port, stdin=b"")
    assert r.returncode == 1
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert lines == ["proxyshim-send: connect to 127.0.0.1 port %d: Connection refused" % port]


def test_source_ip_not_local():
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails, a runtime error.
    port = free_port()
    r = send("--source-ip", "192.0.2.1", "127.0.0.1", port, stdin=b"")
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "proxyshim-send: bind to 127.0.0.1 port %d: Cannot assign requested address" % port]


def test_reset_during_relay():
    # The server resets the connection after the header: exit 1 with one line, whichever
    # call (send or recv) meets the reset.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)

    def run():
        c, _ = srv.accept()
        c.recv(16)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    r = send("--local", "127.0.0.1", srv.getsockname()[1], stdin=os.urandom(4 * 1024 * 1024))
    t.join(10)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] in ("proxyshim-send: send: Connection reset by peer",
                        "proxyshim-send: send: Broken pipe",
                        "proxyshim-send: recv: Connection reset by peer"), lines


def test_host_name():
    # "localhost" is a name, resolved; whichever address it gives first, the header carries the
    # connection that worked.
    hdr, cap = run_send(["-1"], connect="localhost")
    assert hdr == v1(cap.peer, cap.addr)


def test_help():
    r = send("--help", stdin=b"")
    assert r.returncode == 0
    assert r.stderr == b""
    text = r.stdout.decode()
    heads = [l for l in text.splitlines() if l and not l[0].isspace()]
    assert heads == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES"]
    for opt in ["-1", "-2", "--src", "--dst", "--local", "--authority", "--tlv", "--crc",
                "--source-ip"]:
        assert "    " + opt in text, opt


# ---- HAProxy, the reference receiver ----

HAPROXY_CASES = [
    ("-1", "203.0.113.7:4711", "203.0.113.7:4711", "127.0.0.1:{fport}"),
    ("-2", "203.0.113.7:4711", "203.0.113.7:4711", "127.0.0.1:{fport}"),
    ("-1", "[2001:db8::7]:4711", "2001:db8::7:4711", "::ffff:127.0.0.1:{fport}"),
    ("-2", "[2001:db8::7]:4711", "2001:db8::7:4711", "::ffff:127.0.0.1:{fport}"),
]


@pytest.mark.parametrize("version,src,client,front", HAPROXY_CASES,
                         ids=["v1-ipv4", "v2-ipv4", "v1-ipv6", "v2-ipv6"])
@pytest.mark.apps
def test_haproxy_sees_the_announced_client(tmp_path, version, src, client, front):
    backend = Capture()
    fport = free_port()
    cfg = ("frontend fe\n"
           "    bind 127.0.0.1:%d accept-proxy\n"
           "    mode tcp\n"
           "    option dontlognull\n"
           '    log-format "client=%%ci:%%cp front=%%fi:%%fp"\n'
           "    default_backend be\n\n"
           "backend be\n"
           "    mode tcp\n"
           "    server echo 127.0.0.1:%d\n" % (fport, backend.port))
    hap = haproxy(cfg, tmp_path)
    try:
        wait_port(fport, proc=hap.p)
        r = send(version, "--src", src, "127.0.0.1", fport)
        assert r.returncode == 0, r.stderr
        assert r.stdout == REPLY
        assert backend.result() == PAYLOAD
        expected = "client=%s front=%s" % (client, front.format(fport=fport))
        hap.wait_output(expected)
    finally:
        out = hap.stop()
    logged = [l for l in out.splitlines() if l.startswith("client=")
              and not l.startswith("client=127.0.0.1:")]  # wait_port's probe, if logged
    assert logged == [expected]
