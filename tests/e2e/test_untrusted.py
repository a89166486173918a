"""Untrusted peers on a covered listener: at PROXYSHIM_LOG=debug each one is
logged with its address (the one to put in PROXYSHIM_TRUSTED when the balancer's is not the
expected one), and PROXYSHIM_UNTRUSTED=reject closes one whose first bytes start a PROXY header
(or a piece of one) instead of handing the header to the program as data. The server is the
real testserver; what it printed (its JSON line per connection, the shim's lines on stderr) and
what the client got back are the evidence."""
import hashlib
import os
import re
import subprocess
import time

import pytest

from util import (V2_SIG, WRAPPER, conn_lines, connect, exchange, recv_all, shim_env, v1_header,
                  v2_header, wait_conns)

BALANCER_NET = "10.0.0.0/8"  # the trust setting that is wrong: the balancer is at 127.0.0.1
SRC4 = ("203.0.113.7", 40001)
SRC6 = ("2001:db8::7", 40006)
REQUEST = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"
MODES = {"blocking": [], "epoll": ["--mode", "epoll"]}


def untrusted_line(out, peer, port):
    """The shim's debug line for an untrusted connection from peer ("127.0.0.1:5555")."""
    return re.search(r"^proxyshim: ts=\S+ pid=\d+ level=debug event=untrusted peer=%s port=%d$" % (re.escape(peer), port),
                     out, re.M)


def reject_line(out, peer, port):
    return re.search(r"^proxyshim: ts=\S+ pid=\d+ level=warn event=reject reason=untrusted peer=%s port=%d$"
                     % (re.escape(peer), port), out, re.M)


def check_data(line, payload):
    """The connection's JSON line: every byte the client sent, as data."""
    assert line["bytes"] == len(payload), line
    assert line["sha256"] == hashlib.sha256(payload).hexdigest(), line
    assert line["hex"] == payload[:256].hex(), line


def refused(port, data, host="127.0.0.1", hold=False):
    """Sends data and returns what came back before the connection ended (b"" when the server
    closed it without a byte). hold: send no more and do not half-close, as a balancer that
    split its header would, so only the server can end the connection."""
    s = connect(port, host, timeout=5.0)
    try:
        me = s.getsockname()
        try:
            s.sendall(data)
            if not hold:
                s.shutdown(1)
        except OSError:
            pass  # closed (reset) by the server already: recv_all sees it too
        return recv_all(s), me
    finally:
        s.close()


def fmt_peer(me):
    return ("[%s]:%d" if ":" in me[0] else "%s:%d") % (me[0], me[1])


# ---- the debug log names the untrusted peer ----

@pytest.mark.parametrize("version", [1, 2])
def test_debug_log_names_the_untrusted_peer(ts, version):
    p, port = ts(TRUSTED=BALANCER_NET, LOG="debug")
    hdr = (v1_header if version == 1 else v2_header)(SRC4, ("127.0.0.1", port))
    data = hdr + REQUEST
    got, me = exchange(port, data)
    assert got == data  # today's pass behaviour: the header reached the program as data
    line = wait_conns(p, 1)[0]
    check_data(line, data)
    assert (line["peer"]["addr"], line["peer"]["port"]) == tuple(me)
    out = p.output()
    assert untrusted_line(out, "127.0.0.1:%d" % me[1], port), out


def test_no_untrusted_line_below_debug(ts):
    p, port = ts(TRUSTED=BALANCER_NET, LOG="info")
    data = v1_header(SRC4, ("127.0.0.1", port)) + REQUEST
    got, me = exchange(port, data)
    assert got == data
    check_data(wait_conns(p, 1)[0], data)
    out = p.output()
    assert "event=listen" in out  # the info level is on: the shim logs, just not this
    assert "event=untrusted" not in out, out


# ---- PROXYSHIM_UNTRUSTED=reject ----

def header_cases(port, host="127.0.0.1"):
    src, dst = (SRC6, ("::1", port)) if ":" in host else (SRC4, (host, port))
    return {
        "v1": v1_header(src, dst) + REQUEST,
        "v1_unknown": b"PROXY UNKNOWN\r\n" + REQUEST,
        "v2": v2_header(src, dst) + REQUEST,
        "v2_local": v2_header() + REQUEST,
        "v1_prefix_only": b"PROXY ",
        "v2_signature_only": V2_SIG,
    }


def plain_after(p, port, n_before, host="127.0.0.1"):
    """A plain connection after the refused ones: it is served, and it is the only connection
    the program ever saw (so the refused ones never reached it)."""
    data = b"after the refused ones\n"
    got, me = exchange(port, data, host=host)
    assert got == data
    lines = wait_conns(p, n_before + 1)
    assert len(lines) == n_before + 1, lines
    check_data(lines[-1], data)
    assert lines[-1]["peer"]["port"] == me[1]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_reject_closes_an_untrusted_header(ts, mode):
    p, port = ts(*MODES[mode], TRUSTED=BALANCER_NET, UNTRUSTED="reject")
    for name, data in sorted(header_cases(port).items()):
        got, me = refused(port, data)
        assert got == b"", (name, got)
        out = p.output()
        deadline = time.monotonic() + 5
        while not reject_line(out, "127.0.0.1:%d" % me[1], port) and time.monotonic() < deadline:
            time.sleep(0.02)
            out = p.output()
        assert reject_line(out, "127.0.0.1:%d" % me[1], port), (name, out)
    plain_after(p, port, 0)


@pytest.mark.parametrize("piece", [b"P", b"PROX", b"PROXY", b"\r", b"\r\n\r\n\x00", V2_SIG[:11]],
                         ids=["P", "PROX", "PROXY", "CR", "v2_5", "v2_11"])
def test_reject_a_piece_of_a_header_that_has_arrived(ts, piece):
    """Documented choice: the first bytes that have arrived are compared as far as they go, so a
    header split after a few bytes is refused at once, without waiting for the rest."""
    p, port = ts(TRUSTED=BALANCER_NET, UNTRUSTED="reject")
    t0 = time.monotonic()
    got, me = refused(port, piece, hold=True)  # the client holds the connection open
    assert got == b""
    assert time.monotonic() - t0 < 3.0
    p.wait_output("reason=untrusted peer=127.0.0.1:%d " % me[1])
    plain_after(p, port, 0)


def test_reject_passes_when_nothing_has_arrived_yet(ts):
    """Documented choice: the shim never waits for an untrusted peer. Without TCP_DEFER_ACCEPT
    (here PROXYSHIM_DEFER_ACCEPT=0; lazy mode too) a connection accepted before its first byte
    passes, and a header that follows reaches the program as data, as in pass mode."""
    p, port = ts(TRUSTED=BALANCER_NET, UNTRUSTED="reject", DEFER_ACCEPT=0, LOG="debug")
    s = connect(port)
    try:
        me = s.getsockname()
        p.wait_output("event=untrusted peer=127.0.0.1:%d " % me[1])  # accepted, nothing sent yet
        data = v1_header(SRC4, ("127.0.0.1", port)) + REQUEST
        s.sendall(data)
        s.shutdown(1)
        assert recv_all(s) == data
    finally:
        s.close()
    check_data(wait_conns(p, 1)[0], data)
    assert "reason=untrusted" not in p.output()


# Bytes that are not a header, some of them close: every one served, byte for byte.
PLAIN = {
    "http": REQUEST,
    "post": b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "put": b"PUT /x HTTP/1.0\r\n\r\n",
    "proxz": b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "proxy_lower": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "proxy_no_space": b"PROXYTCP4\r\n",
    "crlf_request": b"\r\nGET / HTTP/1.0\r\n\r\n",
    "v2_sig_off_by_one": V2_SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + b"\0" * 12,
    "binary": bytes(range(256)) * 64,
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_reject_serves_plain_untrusted_traffic_untouched(ts, mode):
    p, port = ts(*MODES[mode], TRUSTED=BALANCER_NET, UNTRUSTED="reject")
    names = sorted(PLAIN)
    for i, name in enumerate(names):
        got, me = exchange(port, PLAIN[name])
        assert got == PLAIN[name], name
        line = wait_conns(p, i + 1)[i]
        check_data(line, PLAIN[name])
        assert (line["peer"]["addr"], line["peer"]["port"]) == tuple(me), name
    assert "event=reject" not in p.output()


def test_reject_leaves_trusted_headers_to_be_rewritten(ts):
    p, port = ts(TRUSTED="127.0.0.2", UNTRUSTED="reject")
    data = b"after a trusted header\n"
    got, _ = exchange(port, v1_header(SRC4, ("127.0.0.1", port)) + data, source="127.0.0.2")
    assert got == data
    line = wait_conns(p, 1)[0]
    assert (line["peer"]["addr"], line["peer"]["port"]) == SRC4, line
    check_data(line, data)
    got, _ = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + data, source="127.0.0.2")
    assert got == data
    line = wait_conns(p, 2)[1]
    assert (line["peer"]["addr"], line["peer"]["port"]) == SRC4, line
    # the same header from an untrusted address on the same listener: closed
    got, me = refused(port, v1_header(SRC4, ("127.0.0.1", port)) + data)
    assert got == b""
    p.wait_output("event=reject reason=untrusted peer=127.0.0.1:%d " % me[1])
    assert len(conn_lines(p)) == 2


def test_reject_on_ipv6(ts):
    p, port = ts("--mode", "epoll", listen="[::1]:0", TRUSTED=BALANCER_NET, UNTRUSTED="reject", LOG="debug")
    for name, data in sorted(header_cases(port, "::1").items()):
        got, me = refused(port, data, host="::1")
        assert got == b"", name
        p.wait_output("event=reject reason=untrusted peer=[::1]:%d port=%d" % (me[1], port))
    plain_after(p, port, 0, host="::1")
    assert untrusted_line(p.output(), "[::1]:%d" % conn_lines(p)[0]["peer"]["port"], port), p.output()


def test_reject_in_pass_mode_is_not_done(ts):
    """PROXYSHIM_UNTRUSTED=pass (the default, spelled out): the header reaches the program."""
    p, port = ts(TRUSTED=BALANCER_NET, UNTRUSTED="pass")
    data = v2_header(SRC4, ("127.0.0.1", port)) + REQUEST
    got, _ = exchange(port, data)
    assert got == data
    check_data(wait_conns(p, 1)[0], data)


# ---- the setting itself ----

def test_invalid_value_stops_the_program():
    env = shim_env(TRUSTED=BALANCER_NET, UNTRUSTED="maybe")
    r = subprocess.run(["/bin/true"], env=env, capture_output=True, timeout=10)
    assert r.returncode == 1, r
    err = r.stderr.decode()
    assert err == 'proxyshim: invalid PROXYSHIM_UNTRUSTED="maybe": expected pass or reject\n', err


def test_invalid_value_in_the_config_file_refuses_listen(tmp_path, ts):
    conf = tmp_path / "proxyshim.conf"
    conf.write_text("PROXYSHIM_TRUSTED=10.0.0.0/8\nPROXYSHIM_UNTRUSTED=drop\n")
    env = shim_env(CONFIG=str(conf))
    r = subprocess.run([WRAPPER, "--check"], env={k: v for k, v in env.items() if k != "LD_PRELOAD"},
                       capture_output=True, timeout=10)
    assert b"PROXYSHIM_UNTRUSTED='drop': expected pass or reject" in r.stdout + r.stderr, r


@pytest.mark.parametrize("value", [None, "pass", "reject"])
def test_check_prints_the_setting(value):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXYSHIM_", "LD_PRELOAD"))}
    env["PROXYSHIM_TRUSTED"] = BALANCER_NET
    if value:
        env["PROXYSHIM_UNTRUSTED"] = value
    r = subprocess.run([WRAPPER, "--check"], env=env, capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert ("PROXYSHIM_UNTRUSTED=%s" % (value or "pass")) in r.stdout.decode().splitlines(), r.stdout


# ---- counters ----

def counts(path):
    out = {}
    try:
        text = open(path).read()
    except FileNotFoundError:
        return out
    for m in re.finditer(r'^proxyshim_connections_total\{pid="\d+",result="(\w+)",reason="(\w+)",'
                         r'version="(\w+)"\} (\d+)$', text, re.M):
        if int(m.group(4)):  # the main series are there at 0 from the start
            out[(m.group(1), m.group(2))] = out.get((m.group(1), m.group(2)), 0) + int(m.group(4))
    return out


def test_stats_count_rejected_untrusted(ts, tmp_path):
    stats = str(tmp_path / "shim.prom")
    p, port = ts(TRUSTED=BALANCER_NET, UNTRUSTED="reject", STATS=stats)
    for data in (v1_header(SRC4, ("127.0.0.1", port)) + REQUEST, v2_header(SRC4, ("127.0.0.1", port)),
                 b"PROX"):
        got, _ = refused(port, data, hold=data == b"PROX")
        assert got == b""
    got, _ = exchange(port, REQUEST)
    assert got == REQUEST
    wait_conns(p, 1)
    want = {("rejected", "untrusted"): 3, ("untrusted", "none"): 1}
    deadline = time.monotonic() + 5
    while counts(stats) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts(stats) == want, open(stats).read() if os.path.exists(stats) else "no file"
