"""Non-blocking servers (epoll level/edge/oneshot/exclusive, several epoll instances, poll,
select) while trusted headers arrive in pieces: the connection must reach the program once
complete, with its source, and must not hold up other clients meanwhile."""
import threading
import time

import pytest

from util import connect, exchange, recv_all, v1_header, v2_header, wait_conns
from test_preload_accept import PAYLOAD, SRC4, TRUSTED, UNTRUSTED, check_line

LOOPS = {
    "blocking": [],
    "epoll": ["--mode", "epoll"],
    "epoll_et": ["--mode", "epoll", "--et"],
    "epoll_oneshot": ["--mode", "epoll", "--oneshot"],
    "epoll_exclusive": ["--mode", "epoll", "--exclusive"],
    "epoll_4_instances": ["--mode", "epoll", "--epoll-threads", "4"],
    "poll": ["--mode", "poll"],
    "select": ["--mode", "select"],
    # the listener moved by dup2() to fd 3000 after listen(), before the epoll/poll set-up
    "epoll_highfd": ["--mode", "epoll", "--high-fd", "3000"],
    "poll_highfd": ["--mode", "poll", "--high-fd", "3000"],
}
NONBLOCKING = [k for k in LOOPS if k != "blocking"]


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("version", [1, 2])
def test_split_header_is_delivered(ts, loop, version):
    p, port = ts(*LOOPS[loop], TRUSTED=TRUSTED, TIMEOUT_MS=3000)
    h = (v1_header if version == 1 else v2_header)(SRC4, ("127.0.0.1", port))
    t0 = time.monotonic()
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED, pieces=[5, 9], delay=0.08)
    took = time.monotonic() - t0
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    # ~0.16 s of sending; far below the 3 s timeout, which is what a lost wake-up would cost
    assert took < 1.0, "served after %.2f s" % took


@pytest.mark.parametrize("loop", NONBLOCKING)
def test_incomplete_header_does_not_hold_up_others(ts, loop):
    # One trusted client sends half a header and waits 1.5 s. Meanwhile other clients (trusted
    # with whole headers, and untrusted) must be served at once by an event-loop server.
    p, port = ts(*LOOPS[loop], TRUSTED=TRUSTED, TIMEOUT_MS=4000)
    h = v2_header(("192.0.2.99", 9999), ("127.0.0.1", port))
    slow = connect(port, source=TRUSTED, timeout=10)
    slow.sendall(h[:10])
    time.sleep(0.1)
    lat = []
    for i in range(10):
        t0 = time.monotonic()
        if i % 2:
            got, me = exchange(port, PAYLOAD, source=UNTRUSTED)
        else:
            got, me = exchange(port, v1_header(("198.51.100.%d" % (i + 1), 2000 + i), ("127.0.0.1", port))
                               + PAYLOAD, source=TRUSTED)
        lat.append(time.monotonic() - t0)
        assert got == PAYLOAD
    assert max(lat) < 0.5, "latencies while a header is pending: %s" % ["%.3f" % x for x in lat]
    time.sleep(max(0.0, 1.5 - sum(lat)))
    slow.sendall(h[10:] + PAYLOAD)
    slow.shutdown(1)
    assert recv_all(slow) == PAYLOAD
    slow.close()
    lines = wait_conns(p, 11)
    assert len(lines) == 11
    check_line(lines[-1], "AF_INET", "192.0.2.99", 9999, PAYLOAD)


@pytest.mark.parametrize("loop", ["blocking", "epoll", "epoll_et", "poll", "select"])
def test_largest_v2_header_in_pieces(ts, loop):
    # 16 + 65535 bytes: more than SO_RCVLOWAT can ask for on a default socket buffer.
    p, port = ts(*LOOPS[loop], TRUSTED=TRUSTED, TIMEOUT_MS=3000)
    body_len = 65535 - 12 - 3
    h = v2_header(SRC4, ("127.0.0.1", port), tlvs=[(0x04, b"\0" * body_len)])
    assert len(h) == 16 + 65535
    got, me = exchange(port, h + PAYLOAD, source=TRUSTED, pieces=[1000, 30000], delay=0.05)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("loop", ["epoll", "epoll_4_instances", "poll"])
def test_many_trickling_headers_at_once(ts, loop):
    p, port = ts(*LOOPS[loop], TRUSTED=TRUSTED, TIMEOUT_MS=4000)
    N = 150
    results = {}

    def client(i):
        src = ("10.1.%d.%d" % (i // 250, i % 250 + 1), 30000 + i)
        h = (v1_header if i % 2 else v2_header)(src, ("127.0.0.1", port))
        data = b"client %d\n" % i
        try:
            got, me = exchange(port, h + data, source=TRUSTED, pieces=[3, 7, 11], delay=0.05, timeout=15)
        except OSError as e:
            got = repr(e)
        results[i] = (got, src, data)

    ths = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(N)]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    took = time.monotonic() - t0
    bad = [(i, r[0]) for i, r in results.items() if r[0] != r[2]]
    assert len(results) == N and not bad, bad[:5]
    lines = wait_conns(p, N)
    by = {l["hex"]: l for l in lines}
    for got, src, data in results.values():
        check_line(by[data.hex()], "AF_INET", src[0], src[1], data)
    assert "event=reject" not in p.output()
    assert took < 10


# A program that closes its epoll instance and makes a new one (an event loop rebuilt) gets the
# same fd number back. The shim must watch the new instance for the listener's parked
# connections, not take it for the old one it had already joined.
EPOLL_AGAIN = r"""
import select, socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0))
l.listen(16)
l.setblocking(False)
ep = select.epoll()
ep.register(l.fileno(), select.EPOLLIN)
print(l.getsockname()[1], ep.fileno(), flush=True)
# The first connection sends half its header: accept() parks it and says EAGAIN.
ep.poll(5)
try:
    l.accept()
    print("accepted early", flush=True)
except BlockingIOError:
    pass
old = ep.fileno()
ep.close()
ep = select.epoll()
ep.register(l.fileno(), select.EPOLLIN)
print("again", old, ep.fileno(), flush=True)
t0 = time.monotonic()
ev = ep.poll(5)
print("woke", bool(ev), "after", round(time.monotonic() - t0, 2), flush=True)
c, a = l.accept()
print("peer", a[0], a[1], c.recv(100).decode(), flush=True)
"""


def test_epoll_instance_remade_with_the_same_fd_number_still_wakes(tmp_path):
    import subprocess
    import sys
    from util import connect_from, shim_env
    script = tmp_path / "epoll_again.py"
    script.write_text(EPOLL_AGAIN)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env=shim_env(TRUSTED=TRUSTED, TIMEOUT_MS=10000))
    try:
        port, _ = p.stdout.readline().split()
        hdr = v1_header(SRC4, ("127.0.0.1", int(port)))
        s = connect_from(int(port), TRUSTED)
        s.sendall(hdr[:10])
        line = p.stdout.readline()
        assert line.startswith("again"), line
        _, old, new = line.split()
        assert old == new  # the kernel gave the number back: the case under test
        time.sleep(0.2)
        s.sendall(hdr[10:] + b"hi")
        out = p.stdout.readline() + p.stdout.readline()
        assert "woke True" in out, out + p.stdout.read()
        assert "peer %s %d hi" % SRC4 in out, out
        s.close()
    finally:
        p.kill()
        p.wait()


# A listener inherited across exec (a master process's, Dovecot's imap-login, systemd socket
# activation) that the program adds to its epoll set before any accept(): the shim knows it as
# a listener only from its first accept(), so its parked connections must still wake that set.
INHERITED_EPOLL_FIRST = r"""
import os, select, socket, sys, time
if len(sys.argv) > 2:  # as Dovecot's imap-login: into a chroot with no /proc, then serve
    os.chroot(sys.argv[2])
    os.chdir("/")
l = socket.socket(fileno=int(sys.argv[1]))
l.setblocking(False)
ep = select.epoll()
ep.register(l.fileno(), select.EPOLLIN)
print("ready", flush=True)
t0 = time.monotonic()
while time.monotonic() - t0 < 5:
    if not ep.poll(5 - (time.monotonic() - t0)):
        break
    try:
        c, a = l.accept()
    except BlockingIOError:
        continue  # parked: the header is not complete yet
    print("peer", a[0], a[1], c.recv(100).decode(), round(time.monotonic() - t0, 2), flush=True)
    sys.exit(0)
print("no event in 5 s", flush=True)
"""


@pytest.mark.parametrize("chroot", [False, True])
def test_inherited_listener_in_epoll_before_first_accept_wakes_for_a_late_header(tmp_path, chroot):
    """chroot: the program leaves /proc behind before its first accept(), as Dovecot's login
    processes do: the shim knows the listener from its start."""
    import socket
    import subprocess
    import sys
    from util import connect_from, shim_env
    script = tmp_path / "inherited_epoll_first.py"
    script.write_text(INHERITED_EPOLL_FIRST)
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    port = l.getsockname()[1]
    root = tmp_path / "root"
    root.mkdir()
    p = subprocess.Popen([sys.executable, str(script), str(l.fileno())] + ([str(root)] if chroot else []),
                         pass_fds=[l.fileno()],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=shim_env(TRUSTED=TRUSTED, TIMEOUT_MS=10000))
    try:
        assert p.stdout.readline().strip() == "ready"
        hdr = v1_header(SRC4, ("127.0.0.1", port))
        s = connect_from(port, TRUSTED)
        s.sendall(hdr[:10])  # accept() parks it
        time.sleep(0.3)
        s.sendall(hdr[10:] + b"hi")
        out = p.communicate(timeout=10)[0]
        assert "peer %s %d hi" % SRC4 in out, out
        s.close()
    finally:
        l.close()
        if p.poll() is None:
            p.kill()
