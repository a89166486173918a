"""A new process however it is made: legacy daemons listen, then call daemon(), whose fork runs
inside libc and never reaches the shim's fork() hook; so do _Fork() and a raw clone(). The
shim must still see a new process: the counters' writer thread stays in the parent, so the
child must start its own and count only its own connections, and parking must work with
the child's own state. tests/e2e/progs/detach.c serves one connection, detaches, and serves
two more, one of them with a header that arrives in two pieces (parked)."""
import json
import os
import re
import signal
import socket
import time

import pytest

from util import BUILD, connect_from, shim_env, start_listening, v1_header, v2_header

DETACH = os.path.join(BUILD, "progs", "detach")
TRUSTED = "127.0.0.2"


def read_reply(s, timeout=10.0):
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        got = s.recv(4096)
        if not got:
            break
        data += got
    return json.loads(data.decode())


def request(port, src, pieces_delay=None):
    hdr = v2_header(src, ("127.0.0.1", port)) if pieces_delay is None else v1_header(src, ("127.0.0.1", port))
    with connect_from(port, TRUSTED) as s:
        if pieces_delay is None:
            s.sendall(hdr + b"GET / HTTP/1.0\r\n\r\n")
        else:
            s.sendall(hdr[:9])
            time.sleep(pieces_delay)
            s.sendall(hdr[9:] + b"GET / HTTP/1.0\r\n\r\n")
        return read_reply(s)


def stats_of(path):
    counts = {}
    with open(path) as f:
        for line in f:
            m = re.match(r'proxyshim_connections_total\{pid="(\d+)",result="(\w+)",reason="\w+",version="\w+"\} (\d+)', line)
            if m and int(m.group(3)):  # the main series are there at 0 from the start
                counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(3))
    return counts


@pytest.mark.parametrize("how", ["fork", "daemon", "_Fork", "clone"])
def test_a_detached_server_parks_serves_and_writes_its_own_counters(procs, tmp_path, how):
    pidfile = tmp_path / "pid"
    stats = str(tmp_path / "stats-%p.prom")
    env = shim_env(TRUSTED=TRUSTED, STATS=stats, LOG="info")
    p, port = start_listening([DETACH, "--how", how, "--pidfile", pidfile, "--serve", "3"], env=env, log_name="detach-" + how)
    procs.append(p)
    child = None
    try:
        first = request(port, ("203.0.113.1", 1001))
        assert first["peer"]["addr"] == "203.0.113.1" and first["getpeername"]["addr"] == "203.0.113.1", first
        parent = first["pid"]
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "no child pid:\n" + p.output()
            time.sleep(0.02)
        child = int(pidfile.read_text())
        assert child != parent
        # The parent's counters: written by its writer thread within a second of its connection
        # (and at the latest when it leaves).
        second = request(port, ("203.0.113.2", 1002))
        third = request(port, ("203.0.113.3", 1003), pieces_delay=0.3)  # parked, then completed
        for got, want in ((second, "203.0.113.2"), (third, "203.0.113.3")):
            assert got["pid"] == child and got["peer"]["addr"] == want and got["getpeername"]["addr"] == want, got
        # The child waits for its last connection: its counters must be written while it runs,
        # by a writer thread of its own, and hold its own connections only.
        mine = str(tmp_path / ("stats-%d.prom" % child))
        deadline = time.monotonic() + 5
        while not (os.path.exists(mine) and stats_of(mine).get("rewritten") == 2):
            assert time.monotonic() < deadline, "the child's counters: %r\n%s" % (
                stats_of(mine) if os.path.exists(mine) else "no file", p.output())
            time.sleep(0.05)
        os.kill(child, 0)  # still running
        assert stats_of(mine) == {"rewritten": 2}, stats_of(mine)
        with open(mine) as f:
            assert 'proxyshim_parked_connections{pid="%d"} 0' % child in f.read()
        last = request(port, ("203.0.113.4", 1004))
        assert last["pid"] == child and last["getpeername"]["addr"] == "203.0.113.4", last
    finally:
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
