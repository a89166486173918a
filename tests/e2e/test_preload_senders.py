"""Real senders in front of the shim: proxyshim-send and HAProxy (send-proxy, send-proxy-v2,
proxy-v2-options crc32c,authority,unique-id) with `source 127.0.0.2` on the server line, while
untrusted clients connect directly from 127.0.0.3."""
import hashlib
import os
import subprocess

import pytest

from util import SEND, exchange, haproxy_sender, wait_conns
from test_preload_accept import PAYLOAD, TRUSTED, UNTRUSTED, check_line


def send(args, data, timeout=10):
    r = subprocess.run([SEND] + [str(a) for a in args], input=data, capture_output=True, timeout=timeout)
    return r


SEND_CASES = {
    "v1": ["-1", "--src", "203.0.113.9:5555", "--dst", "127.0.0.1:{port}"],
    "v2": ["-2", "--src", "203.0.113.9:5555", "--dst", "127.0.0.1:{port}"],
    "v2_crc": ["-2", "--crc", "--src", "203.0.113.9:5555", "--dst", "127.0.0.1:{port}"],
    "v2_tlvs": ["-2", "--authority", "example.com", "--tlv", "0xE0=0102030405060708", "--tlv", "5=6964",
                "--crc", "--src", "203.0.113.9:5555", "--dst", "127.0.0.1:{port}"],
    "v1_ipv6_src": ["-1", "--src", "[2001:db8::9]:5555", "--dst", "[2001:db8::1]:{port}"],
    "v2_ipv6_src": ["-2", "--src", "[2001:db8::9]:5555", "--dst", "[2001:db8::1]:{port}"],
}


@pytest.mark.parametrize("case", list(SEND_CASES))
def test_proxyshim_send(ts, case):
    p, port = ts(TRUSTED=TRUSTED)
    args = [a.format(port=port) for a in SEND_CASES[case]]
    data = PAYLOAD * 100 + os.urandom(70000)
    r = send(args + ["--source-ip", TRUSTED, "127.0.0.1", port], data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    (line,) = wait_conns(p, 1)
    if "ipv6" in case:
        check_line(line, "AF_INET6", "2001:db8::9", 5555, data)
    else:
        check_line(line, "AF_INET", "203.0.113.9", 5555, data)


def test_proxyshim_send_real_addresses_and_local(ts):
    p, port = ts(TRUSTED=TRUSTED)
    r = send(["--source-ip", TRUSTED, "127.0.0.1", port], PAYLOAD)  # header with the real ones
    assert (r.returncode, r.stdout) == (0, PAYLOAD), r.stderr
    r = send(["--local", "--source-ip", TRUSTED, "127.0.0.1", port], PAYLOAD)
    assert (r.returncode, r.stdout) == (0, PAYLOAD), r.stderr
    l1, l2 = wait_conns(p, 2)
    for l in (l1, l2):
        assert l["accept"]["addr"] == TRUSTED and l["peer"] == l["accept"]
        assert l["bytes"] == len(PAYLOAD) and l["hex"] == PAYLOAD.hex()


def test_proxyshim_send_ipv6_listener(ts):
    p, port = ts(listen="[::1]:0", TRUSTED="::1")
    r = send(["-1", "--src", "[2001:db8:1::5]:443", "--dst", "[::1]:%d" % port, "::1", port], PAYLOAD)
    assert (r.returncode, r.stdout) == (0, PAYLOAD), r.stderr
    r = send(["-2", "--src", "198.51.100.20:80", "--dst", "198.51.100.21:%d" % port, "::1", port], PAYLOAD)
    assert (r.returncode, r.stdout) == (0, PAYLOAD), r.stderr
    l1, l2 = wait_conns(p, 2)
    check_line(l1, "AF_INET6", "2001:db8:1::5", 443, PAYLOAD)
    check_line(l2, "AF_INET6", "::ffff:198.51.100.20", 80, PAYLOAD)


def test_proxyshim_send_from_untrusted_is_data(ts):
    p, port = ts(TRUSTED=TRUSTED)
    r = send(["-1", "--src", "203.0.113.9:5555", "--dst", "127.0.0.1:%d" % port,
              "--source-ip", UNTRUSTED, "127.0.0.1", port], PAYLOAD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 %d\r\n" % port)
    assert r.stdout.endswith(PAYLOAD)
    (line,) = wait_conns(p, 1)
    assert line["accept"]["addr"] == UNTRUSTED and line["bytes"] == len(r.stdout)


HAPROXY_SERVER_OPTS = {
    "send-proxy": "send-proxy",
    "send-proxy-v2": "send-proxy-v2",
    "send-proxy-v2-options": "send-proxy-v2 proxy-v2-options crc32c,authority,unique-id",
}


def start_haproxy(tmp_path, procs, server_port, opts, fe_bind="127.0.0.1", be_host="127.0.0.1"):
    h, fport = haproxy_sender(tmp_path, be_host, server_port, opts,
                              "[::1]" if ":" in be_host else TRUSTED, fe_bind=fe_bind)
    procs.append(h)
    return fport


def line_for(p, data, n):
    """The testserver's line for the connection that carried data, once n lines are there."""
    for l in wait_conns(p, n):
        if l["sha256"] == hashlib.sha256(data).hexdigest():
            return l
    raise AssertionError("no connection carried %r:\n%s" % (data[:40], p.output()))


@pytest.mark.parametrize("opts", list(HAPROXY_SERVER_OPTS))
@pytest.mark.apps
def test_haproxy_sender(ts, procs, tmp_path, opts):
    p, port = ts(TRUSTED=TRUSTED)
    fport = start_haproxy(tmp_path, procs, port, HAPROXY_SERVER_OPTS[opts])
    clients = []
    for src in ("127.0.0.5", "127.0.0.6", "127.0.0.7"):
        data = b"via haproxy from %s\n" % src.encode() + os.urandom(1000)
        got, me = exchange(fport, data, source=src)
        assert got == data
        clients.append((me, data))
    # an untrusted client straight to the server, and its spoof attempt
    spoof = b"PROXY TCP4 1.1.1.1 127.0.0.1 1 %d\r\n" % port + PAYLOAD
    got, me_u = exchange(port, spoof, source=UNTRUSTED)
    assert got == spoof
    for me, data in clients:
        check_line(line_for(p, data, 5), "AF_INET", me[0], me[1], data)
    check_line(line_for(p, spoof, 5), "AF_INET", UNTRUSTED, me_u[1], spoof)


@pytest.mark.apps
def test_haproxy_ipv6_client_to_ipv4_listener(ts, procs, tmp_path):
    p, port = ts(TRUSTED=TRUSTED)
    fport = start_haproxy(tmp_path, procs, port, "send-proxy-v2", fe_bind="::1")
    got, me = exchange(fport, PAYLOAD, host="::1")
    assert got == PAYLOAD
    check_line(line_for(p, PAYLOAD, 2), "AF_INET6", "::1", me[1], PAYLOAD)


@pytest.mark.apps
def test_haproxy_ipv6_end_to_end(ts, procs, tmp_path):
    p, port = ts(listen="[::1]:0", TRUSTED="::1/128")
    fport = start_haproxy(tmp_path, procs, port, "send-proxy", fe_bind="::1", be_host="::1")
    got, me = exchange(fport, PAYLOAD, host="::1")
    assert got == PAYLOAD
    check_line(line_for(p, PAYLOAD, 2), "AF_INET6", "::1", me[1], PAYLOAD)


@pytest.mark.apps
def test_haproxy_ipv4_client_to_dual_stack_listener(ts, procs, tmp_path):
    p, port = ts(listen="[::]:0", TRUSTED=TRUSTED)
    fport = start_haproxy(tmp_path, procs, port, "send-proxy-v2 proxy-v2-options crc32c")
    got, me = exchange(fport, PAYLOAD, source="127.0.0.9")
    assert got == PAYLOAD
    line = line_for(p, PAYLOAD, 2)
    check_line(line, "AF_INET6", "::ffff:127.0.0.9", me[1], PAYLOAD)


@pytest.mark.parametrize("opts", ["send-proxy check check-send-proxy inter 100ms",
                                  "send-proxy-v2 check check-send-proxy inter 100ms"])
@pytest.mark.apps
def test_haproxy_health_checks_with_proxy_header(ts, procs, tmp_path, opts):
    # HAProxy's health checks open connections with a PROXY header of their own (v2 LOCAL or
    # v1 with the check's addresses): they are valid headers, never rejections.
    import time
    p, port = ts(TRUSTED=TRUSTED)
    fport = start_haproxy(tmp_path, procs, port, opts)
    time.sleep(0.6)  # a few checks
    got, me = exchange(fport, PAYLOAD, source="127.0.0.5")
    assert got == PAYLOAD
    line = line_for(p, PAYLOAD, 3)
    check_line(line, "AF_INET", "127.0.0.5", me[1], PAYLOAD)
    out = p.output()
    assert "event=reject" not in out, out
    checks = [l for l in wait_conns(p, 3) if l["bytes"] == 0]
    assert len(checks) >= 2
    h = procs[-1].output()
    assert "is DOWN" not in h, h
