"""Parking (docs/DESIGN.md): a trusted connection whose header is incomplete waits on its listener,
never in accept(). Trusted peers stalling on half a header must not slow a healthy client down
and must be closed at PROXYSHIM_TIMEOUT_MS; a header split in three with no other traffic must
reach the program promptly (its loop woken by the shim); PROXYSHIM_MAX_PARKED closes the oldest.
Each against nginx (one worker), node and redis where they apply, and the C test
server in its blocking and poll() modes. The healthy client is a trusted load balancer on
127.0.0.2 sending whole v2 headers; the stallers are trusted peers on 127.0.0.4."""
import os
import re
import select
import shutil
import socket
import time

import pytest

from util import (TESTSERVER, Proc, child_pids, conn_lines, connect, free_port, open_fds, percentile,
                  recv_all, shim_env, start_nginx, start_node_http, start_redis, start_stallers,
                  stallers_result, v2_header, wait_port)

TRUSTED = "127.0.0.2"   # the load balancer: whole headers
STALLER = "127.0.0.4"   # trusted too: half a header, then nothing
TIMEOUT_MS = 500
CLOSE_MARGIN = 0.25     # a staller is closed at most this long after its timeout
P99_MARGIN = 0.020      # healthy p99 under attack within 20 ms of the p99 without it
ANSWER_WITHIN = 0.060   # split header: first reply byte within 60 ms of the last segment
STALLERS = 50


def src_of(i):
    """The client address the header announces for request i: unique per request."""
    return ("198.51.100.%d" % (i % 250 + 1), 10000 + i)


class Server:
    """One program under the shim (kind: nginx, node, redis, blocking, poll), with what the tests
    need: a request for a tag and the reply it must get, the addresses the program itself logged
    per tag, the shim's log lines, and the pid whose fds to count."""

    def __init__(self, kind, tmp_path, procs, **shim):
        self.kind, self.tmp = kind, tmp_path
        prog = {"nginx": "nginx", "node": "/usr/bin/node", "redis": "redis-server"}.get(kind)
        assert prog is None or shutil.which(prog) or os.path.exists(prog), \
            "%s is not installed (tests/deps.sh installs it)" % prog
        env = shim_env(TRUSTED="%s,%s" % (TRUSTED, STALLER), **shim)
        self.port = free_port()
        if kind == "nginx":
            self.proc = start_nginx(tmp_path, self.port, env, workers=1)
            procs.append(self.proc)
            deadline = time.monotonic() + 5
            while not child_pids(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            (self.pid,) = child_pids(self.proc.pid)  # one worker: it holds the connections
        elif kind == "node":
            self.proc = start_node_http(tmp_path, self.port, env)
            procs.append(self.proc)
            self.pid = self.proc.pid
        elif kind == "redis":
            self.proc = start_redis(tmp_path, self.port, env)
            procs.append(self.proc)
            self.pid = self.proc.pid
        else:
            mode = [] if kind == "blocking" else ["--mode", kind]
            self.proc = Proc([TESTSERVER, "--listen", "127.0.0.1:%d" % self.port, "--greet"] + mode,
                             env=env, log_name="testserver-" + kind)
            procs.append(self.proc)
            wait_port(self.port, proc=self.proc)
            self.pid = self.proc.pid

    def request(self, tag):
        """The bytes to send after the header."""
        if self.kind == "redis":
            return b"CLIENT LIST\r\n"
        if self.kind in ("nginx", "node"):
            return b"GET /%s HTTP/1.0\r\nHost: t\r\n\r\n" % tag.encode()
        return b"payload %s\n" % tag.encode()

    def check_reply(self, got, tag, src):
        """Asserts the whole reply is the one for tag from src: the address the program saw."""
        a, p = src[0].encode(), src[1]
        if self.kind == "nginx":
            assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nyou are %s:%d\n" % (a, p)), got
        elif self.kind == "node":
            assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n%s %d\n" % (a, p)), got
        elif self.kind == "redis":
            m = re.search(rb"\baddr=(\S+) ", got)
            assert m and m.group(1) == b"%s:%d" % (a, p), got
        else:
            assert got == b"peer=%s %d\n" % (a, p) + self.request(tag), got

    def logged(self, tags, timeout=5.0):
        """{tag: (addr, port)} as the program logged them, for every tag (waits for them)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {}
            if self.kind == "nginx":
                with open(self.tmp / "logs" / "access.log") as f:
                    for m in re.finditer(r'^(\S+) (\d+) "GET /(\S+) HTTP/1\.0" 200$', f.read(), re.M):
                        seen[m.group(3)] = (m.group(1), int(m.group(2)))
            elif self.kind == "node":
                for m in re.finditer(r"^request /(\S+) from (\S+) (\d+)$", self.proc.output(), re.M):
                    seen[m.group(1)] = (m.group(2), int(m.group(3)))
            elif self.kind in ("blocking", "poll"):
                for line in conn_lines(self.proc):
                    m = re.match(rb"payload (\S+)\n$", bytes.fromhex(line["hex"]))
                    if m and line["accept"]:
                        seen[m.group(1).decode()] = (line["accept"]["addr"], line["accept"]["port"])
            else:
                raise AssertionError("no per-request log for " + self.kind)
            if set(tags) <= set(seen) or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def shim_log(self):
        """The shim's log lines (nginx's workers write their stderr into error.log)."""
        if self.kind == "nginx":
            with open(self.tmp / "logs" / "error.log", errors="replace") as f:
                text = f.read()
        else:
            text = self.proc.output()
        return "\n".join(x for x in text.splitlines() if "proxyshim:" in x)

    def wait_log(self, pattern, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.shim_log(), re.M)
            if m:
                return m
            time.sleep(0.01)
        raise AssertionError("%r not in the shim's log:\n%s" % (pattern, self.shim_log()[-3000:]))


def healthy(srv, tag, i):
    """One request with a whole header, sent the way HAProxy sends it (header and data in one
    write). Returns its latency (connect to the server's EOF); asserts the reply."""
    src = src_of(i)
    t0 = time.monotonic()
    s = connect(srv.port, source=TRUSTED, timeout=5.0)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(v2_header(src, ("127.0.0.1", srv.port)) + srv.request(tag))
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    finally:
        s.close()
    took = time.monotonic() - t0
    srv.check_reply(got, tag, src)
    return took


def split_tlv_request(srv, tag, i):
    """A v2 header carrying a 4 KiB custom TLV (0xE1) and a CRC32C, sent in three segments 50 ms
    apart, the request riding on the last one. Returns (seconds from the last send to the first
    reply byte, the whole reply)."""
    src = src_of(i)
    hdr = v2_header(src, ("127.0.0.1", srv.port), tlvs=[(0xE1, bytes(range(256)) * 16)], crc=True)
    assert len(hdr) == 16 + 12 + 3 + 4096 + 7
    segs = [hdr[:1000], hdr[1000:3000], hdr[3000:] + srv.request(tag)]
    s = connect(srv.port, source=TRUSTED, timeout=5.0)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for seg in segs[:-1]:
            s.sendall(seg)
            time.sleep(0.05)
        t0 = time.monotonic()
        s.sendall(segs[-1])
        first = s.recv(65536)
        took = time.monotonic() - t0
        assert first, "dropped: no reply"
        if srv.kind == "redis":
            s.sendall(b"QUIT\r\n")
        else:
            s.shutdown(socket.SHUT_WR)
        got = first + recv_all(s)
    finally:
        s.close()
    srv.check_reply(got, tag, src)
    return took, got


def fds_back_to(pid, want, timeout=5.0):
    """Polls the process's fd count until it is want; returns the last count seen."""
    deadline = time.monotonic() + timeout
    while True:
        n = open_fds(pid)
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def ms(x):
    return "%.2f ms" % (x * 1e3)


@pytest.mark.parametrize("kind", [pytest.param("nginx", marks=pytest.mark.apps), "blocking", "poll"])
def test_stallers_do_not_slow_healthy_clients(procs, tmp_path, kind):
    # 50 trusted peers stall on half a v2 header and reconnect as soon as they are dropped. A
    # healthy client's p99 must stay within 20 ms of its p99 just before the attack, every one
    # of its requests must be answered with its header's address, every staller must be closed
    # at the timeout, and the program's fds must come back to what they were.
    srv = Server(kind, tmp_path, procs, TIMEOUT_MS=TIMEOUT_MS)
    pristine = open_fds(srv.pid)
    # The first parked connection creates the listener's park: an epoll fd and a timerfd of the
    # shim's, kept for the listener's life. The baseline is taken with them.
    split_tlv_request(srv, "warmup", 0)
    base_fds = open_fds(srv.pid)
    assert base_fds - pristine <= 2, "one park added %d fds" % (base_fds - pristine)

    tags = []

    def run(phase, at_least, for_s):
        lat, fails = [], []
        t_end = time.monotonic() + for_s
        while len(lat) < at_least or time.monotonic() < t_end:
            i = len(tags) + 1
            tag = "%s%d" % (phase, i)
            tags.append((tag, src_of(i)))
            try:
                lat.append(healthy(srv, tag, i))
            except (OSError, AssertionError) as e:
                fails.append("%s: %r" % (tag, e))
            time.sleep(0.003)
        return lat, fails

    base, fails = run("base", 400, 0)
    assert not fails, fails[:5]
    half = v2_header(("203.0.113.9", 999), ("127.0.0.1", srv.port))[:14]
    t_st = time.monotonic()
    st = start_stallers(srv.port, STALLERS, half, sources=[STALLER], duration=4.0,
                        drain=TIMEOUT_MS / 1000 + 1.5)
    procs.append(st)
    srv.wait_log(r"event=reject reason=timeout peer=%s:" % STALLER, timeout=5)  # the attack is on
    attack, fails = run("attack", 400, 2.0)
    assert time.monotonic() - t_st < 4.0, "the healthy client outlasted the attack: measure again"
    res = stallers_result(st, timeout=10)
    b99, a99 = percentile(base, 99), percentile(attack, 99)
    figures = ("healthy p50/p99/max without attack %s/%s/%s (n=%d), under attack %s/%s/%s (n=%d)"
               % (ms(percentile(base, 50)), ms(b99), ms(max(base)), len(base),
                  ms(percentile(attack, 50)), ms(a99), ms(max(attack)), len(attack)))
    print(kind, figures, "stallers: %d connects, closed after %s..%s"
          % (res["connects"], ms(min(res["closed"] or [0])), ms(max(res["closed"] or [0]))))
    assert not fails, fails[:5]
    assert a99 <= b99 + P99_MARGIN, figures

    # Every staller was closed, by the shim's timeout (not earlier, not much later), and none
    # ever reached the program (it would have answered or greeted).
    assert not res["errors"] and res["data"] == 0 and res["open"] == 0, res
    closed = res["closed"]
    assert len(closed) == res["connects"] >= STALLERS * 3, res
    late = [x for x in closed if x > TIMEOUT_MS / 1000 + CLOSE_MARGIN]
    early = [x for x in closed if x < TIMEOUT_MS / 1000 - 0.005]
    assert not late and not early, "closed after %s..%s; %d late, %d early" % (
        ms(min(closed)), ms(max(closed)), len(late), len(early))

    # Every healthy request, as the program itself logged it, came from its header's address.
    seen = srv.logged([t for t, _ in tags])
    wrong = [(t, seen.get(t), src) for t, src in tags if seen.get(t) != src]
    assert not wrong, "%d of %d requests logged with another address: %s" % (len(wrong), len(tags), wrong[:5])

    n = fds_back_to(srv.pid, base_fds)
    assert n == base_fds, "%d fds open, %d before the attack" % (n, base_fds)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.apps) for k in ("nginx", "node", "redis")]
                         + ["blocking", "poll"])
def test_split_tlv_header_with_no_other_traffic(procs, tmp_path, kind):
    # Nothing else arrives to make the program call accept() again: the shim itself must wake
    # its loop (or its blocking accept()) when the third segment completes the header.
    srv = Server(kind, tmp_path, procs, TIMEOUT_MS=5000, LOG="debug")
    lat = []
    for i in range(1, 4):
        took, got = split_tlv_request(srv, "split%d" % i, i)
        lat.append(took)
        # It was parked (the shim did not wait for it inside accept()), seen 1000 bytes.
        srv.wait_log(r"event=park peer=%s:\d+ port=%d seen=1000 " % (TRUSTED, srv.port))
        time.sleep(0.05)
    print(kind, "first reply byte after the last segment:", ", ".join(ms(x) for x in lat))
    if kind != "redis":  # redis logs no requests: its CLIENT LIST reply was checked instead
        seen = srv.logged(["split%d" % i for i in range(1, 4)])
        assert [seen.get("split%d" % i) for i in range(1, 4)] == [src_of(i) for i in range(1, 4)], seen
    assert srv.shim_log().count("event=park ") == 3, srv.shim_log()
    assert max(lat) <= ANSWER_WITHIN, "answered %s after the last segment" % [ms(x) for x in lat]


def readable(s, timeout):
    return bool(select.select([s], [], [], timeout)[0])


@pytest.mark.parametrize("kind", [pytest.param("nginx", marks=pytest.mark.apps), "blocking", "poll"])
def test_max_parked_closes_the_oldest(procs, tmp_path, kind):
    # PROXYSHIM_MAX_PARKED=5 and 8 stallers one after the other: parking the 6th, 7th and 8th
    # closes the 1st, 2nd and 3rd at once (long before the 5 s timeout), each logged with
    # reason=overflow; the 5 still parked and a new client are then served with their headers.
    srv = Server(kind, tmp_path, procs, TIMEOUT_MS=5000, MAX_PARKED=5, LOG="debug")
    socks, hdrs = [], []
    for k in range(8):
        src = ("203.0.113.%d" % (k + 1), 7000 + k)
        h = v2_header(src, ("127.0.0.1", srv.port))
        s = connect(srv.port, source=STALLER, timeout=5.0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(h[:14])
        t0 = time.monotonic()
        me = s.getsockname()[1]
        if k >= 5:
            old = socks[k - 5][0]
            assert readable(old, 0.1), "staller %d still open 100 ms after staller %d came" % (k - 5, k)
            print(kind, "staller %d closed %s after staller %d sent its half header"
                  % (k - 5, ms(time.monotonic() - t0), k))
            assert recv_all(old) == b""
        srv.wait_log(r"event=park peer=%s:%d " % (STALLER, me))
        socks.append((s, me, src))
        hdrs.append(h)
        for j in range(max(0, k - 4), k + 1):
            assert not readable(socks[j][0], 0), "staller %d closed, parked: %d..%d" % (j, max(0, k - 4), k)
    log = srv.shim_log()
    over = re.findall(r"event=reject reason=overflow .*peer=%s:(\d+) port=%d" % (STALLER, srv.port), log)
    assert [int(p) for p in over] == [m for _, m, _ in socks[:3]], log
    assert "reason=timeout" not in log, log

    healthy(srv, "after-overflow", 900)  # the service goes on
    for k in range(3, 8):
        s, me, src = socks[k]
        tag = "parked%d" % k
        s.sendall(hdrs[k][14:] + srv.request(tag))
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
        s.close()
        srv.check_reply(got, tag, src)
    seen = srv.logged(["after-overflow"] + ["parked%d" % k for k in range(3, 8)])
    assert seen.get("after-overflow") == src_of(900), seen
    assert [seen.get("parked%d" % k) for k in range(3, 8)] == [src for _, _, src in socks[3:]], seen
    for s, _, _ in socks[:3]:
        s.close()
