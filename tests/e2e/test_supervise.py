"""The supervised mode (issue 4/5, shim/supervise/): programs LD_PRELOAD never reaches (static,
Go) run under proxyshim-supervise, which serves their accept(), accept4() and getpeername()
through seccomp user notification with the core's header step. Each server reports the client
it saw itself: the test server (static glibc and musl builds) in its JSON line per connection
(accept()'s address, getpeername(), the bytes it got, the accepted fd's flags), the Go net/http
server (CGO_ENABLED=0 and cgo builds) in its reply (RemoteAddr, which Go takes from accept4()'s
own output). Loopback only: trusted balancer 127.0.0.2, untrusted peer 127.0.0.3."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from util.logfmt import logfmt_decode, shim_lines
from util import (BUILD, LIB, ROOT, TESTSERVER, WRAPPER, Proc, child_pids, conn_lines, connect_from,
                  exchange, haproxy_sender, recv_all, shim_env, shut_wr, start_listening, wait_json, v1_header,
                  v2_header, wait_conns)

SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
PROGS = os.path.join(BUILD, "progs")
TS_STATIC = os.path.join(PROGS, "testserver-static")
TS_MUSL = os.path.join(PROGS, "testserver-static-musl")
GO = os.path.join(PROGS, "go-httpserver")
GO_CGO = os.path.join(PROGS, "go-httpserver-cgo")
DENYFD = os.path.join(PROGS, "denyfd")
ACCEPT32 = os.path.join(PROGS, "accept32")
LOADGEN = os.path.join(BUILD, "bench", "loadgen")
TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
CLIENT = ("203.0.113.41", 4141)
SPOOF = ("6.6.6.6", 6666)
BODY = b"hello, supervised world\n"
NOBODY = 65534


@pytest.fixture(scope="module", autouse=True)
def built():
    """The supervisor and the servers (make builds them; up to date, this costs nothing)."""
    targets = [SUPERVISOR, WRAPPER, TS_STATIC, TS_MUSL, GO, GO_CGO, DENYFD, ACCEPT32, LOADGEN]
    r = subprocess.run(["make", "-s", "-C", ROOT, "BUILD=" + BUILD] + targets,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}


# name: (argv, kind, the accepted fd's (nonblock, cloexec) as the program asked for them)
SERVERS = {
    "go-static": ([GO], "go", None),
    "go-cgo": ([GO_CGO], "go", None),
    "c-static-blocking": ([TS_STATIC, "--listen", "127.0.0.1:0"], "ts", (False, False)),
    "c-static-epoll": ([TS_STATIC, "--listen", "127.0.0.1:0", "--mode", "epoll", "--et"], "ts", (True, True)),
    "c-static-threads": ([TS_STATIC, "--listen", "127.0.0.1:0", "--mode", "threads", "--threads", "4",
                          "--accept4"], "ts", (False, True)),
    "musl-static-epoll": ([TS_MUSL, "--listen", "127.0.0.1:0", "--mode", "epoll", "--et"], "ts", (True, True)),
}
SERVER_PARAMS = [pytest.param(n, marks=pytest.mark.apps) if n.startswith("musl") else n for n in SERVERS]


def start(procs, name, opts=(), prefix=(), binary=None, env=None, wrapper=WRAPPER):
    """The server under the wrapper (--trusted 127.0.0.2 --log info, plus opts): (Proc, port)."""
    argv, _, _ = SERVERS[name]
    if binary is not None:
        argv = [binary] + argv[1:]
    p, port = start_listening(list(prefix) + [wrapper, "--trusted", TRUSTED, "--log", "info"] + list(opts)
                              + ["--"] + argv, env=env or clean_env(), log_name="sv-" + name)
    procs.append(p)
    return p, port


def addr(d):
    return (d["addr"], d["port"]) if d else None


def ask(name, p, port, head, source, pieces=None, delay=0.0, via=None):
    """Sends head + a request from source (or through via, HAProxy's port, from 127.0.0.1)
    and returns what the server saw: {"accept", "peer", "data", "flags"}, or None when the
    connection was refused (closed without an answer). "me" is the client's own address."""
    kind = SERVERS[name][1]
    req = BODY if kind == "ts" else b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n"
    before = len(conn_lines(p)) if kind == "ts" else 0
    if via is not None:
        got, me = exchange(via, req, source="127.0.0.1", port_at_connect=True)
    else:
        got, me = exchange(port, head + req, source=source, pieces=pieces, delay=delay, port_at_connect=True)
    seen = {"me": tuple(me)}
    if kind == "go":
        if not got:
            return None
        status, _, body = got.partition(b"\r\n\r\n")
        seen["status"] = status.split(b"\r\n")[0].decode()
        if b" 200 " in status.split(b"\r\n")[0]:
            remote = json.loads(body)["remote"]
            host, _, rport = remote.rpartition(":")
            seen["accept"] = seen["peer"] = (host.strip("[]"), int(rport))
        seen["data"] = got
        return seen
    if got == b"":
        time.sleep(0.2)
        assert len(conn_lines(p)) == before, p.output()
        return None
    # Ours is the new line that ends with the request (HAProxy's own first connection, which
    # haproxy_sender() waits with, may print its line late).
    mine = lambda d: bytes.fromhex(d["hex"]).endswith(BODY)  # noqa: E731
    d = [x for x in wait_json(p, lambda x: x["n"] > before and mine(x)) if x["n"] > before and mine(x)][-1]
    seen.update(accept=addr(d["accept"]), peer=addr(d["peer"]), data=bytes.fromhex(d["hex"]),
                flags=(d["nonblock"], d["cloexec"]), line=d)
    assert got == seen["data"], "echo differs from what the server read"
    return seen


# ---- the four questions, for every server ----

@pytest.mark.parametrize("name", SERVER_PARAMS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_from_trusted_peer(procs, name, version):
    """A trusted peer's v1/v2 header is taken before the program reads a byte; the program sees
    the header's client in accept() (Go: accept4's output) and getpeername(), and the accepted
    fd has the flags it asked for (accept4's SOCK_NONBLOCK/SOCK_CLOEXEC, or none)."""
    p, port = start(procs, name)
    head = v1_header(CLIENT, ("127.0.0.1", port)) if version == "v1" else v2_header(CLIENT, ("127.0.0.1", port))
    for _ in range(3):  # and again: nothing is left over from the one before
        seen = ask(name, p, port, head, TRUSTED)
        assert seen is not None, p.output()
        assert seen["accept"] == CLIENT and seen["peer"] == CLIENT, (seen, p.output())
        if SERVERS[name][1] == "ts":
            assert seen["data"] == BODY
            assert seen["flags"] == SERVERS[name][2], seen["line"]
        else:
            assert seen["status"].endswith("200 OK"), seen
    assert "event=supervise" in p.output()
    # The supervisor's lines are logfmt with each key once (a JSON view keeps one value a key).
    for pairs in logfmt_decode(shim_lines(p.output())):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), pairs


@pytest.mark.parametrize("name", ["go-static", "c-static-epoll"])
def test_supervisor_keeps_no_copy_of_the_programs_fds(procs, name):
    """Once the calls are answered the supervisor holds none of the program's sockets (its fds:
    stdio, the signalfd, the notification fd, pidfds)."""
    p, port = start(procs, name)
    for i in range(5):
        head = v1_header(CLIENT, ("127.0.0.1", port)) if i % 2 else b"PROXY bad\r\n"
        ask(name, p, port, head, TRUSTED if i < 4 else UNTRUSTED)
    time.sleep(0.2)
    links = [os.readlink("/proc/%d/fd/%s" % (p.pid, f)) for f in os.listdir("/proc/%d/fd" % p.pid)]
    assert not [ln for ln in links if ln.startswith("socket:")], links


@pytest.mark.apps
@pytest.mark.parametrize("name", ["go-static", "c-static-epoll", "c-static-blocking"])
def test_v2_from_haproxy(procs, tmp_path, name):
    """HAProxy with send-proxy-v2 from the trusted 127.0.0.2: the program sees HAProxy's client."""
    p, port = start(procs, name)
    h, fport = haproxy_sender(tmp_path, "127.0.0.1", port, "send-proxy-v2", TRUSTED)
    procs.append(h)
    for _ in range(3):
        seen = ask(name, p, port, b"", None, via=fport)
        assert seen is not None and seen["accept"] == seen["me"], (seen, p.output())
        assert seen["peer"] == seen["me"]


@pytest.mark.parametrize("name", SERVER_PARAMS)
def test_untrusted_peer_header_not_taken(procs, name):
    """From an untrusted peer the connection is the kernel's own: its real address, and a header
    it sends reaches the program as data (Go answers 400), never as the client."""
    p, port = start(procs, name)
    head = v1_header(SPOOF, ("127.0.0.1", port))
    seen = ask(name, p, port, head, UNTRUSTED)
    assert seen is not None
    if SERVERS[name][1] == "ts":
        assert seen["accept"] == seen["me"] and seen["peer"] == seen["me"], seen
        assert seen["data"] == head + BODY
    else:
        assert " 400 " in seen["status"] and b"6.6.6.6" not in seen["data"], seen


@pytest.mark.parametrize("name", SERVER_PARAMS)
def test_strict_rejects_bad_header_and_keeps_serving(procs, name):
    """A trusted peer's malformed header: the connection is closed before the program sees it
    (the program never gets its bytes), and the next good one is served."""
    p, port = start(procs, name)
    assert ask(name, p, port, b"PROXY TCP4 not a header\r\n", TRUSTED) is None
    assert ask(name, p, port, b"GET / HTTP/1.0\r\n\r\n", TRUSTED) is None  # no header at all
    seen = ask(name, p, port, v1_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
    assert seen is not None and seen["accept"] == CLIENT, p.output()
    assert "event=reject reason=invalid" in p.output() and "event=reject reason=missing" in p.output()


@pytest.mark.parametrize("name", ["go-static", "c-static-epoll", "c-static-blocking"])
def test_split_header(procs, name):
    """A header in pieces 50 ms apart: the call is held until it is whole (Go's edge-triggered
    epoll would strand a connection answered EAGAIN)."""
    p, port = start(procs, name)
    head = v2_header(CLIENT, ("127.0.0.1", port))
    seen = ask(name, p, port, head, TRUSTED, pieces=[5, 11, 4], delay=0.05)
    assert seen is not None and seen["accept"] == CLIENT, p.output()


@pytest.mark.parametrize("name", ["go-static", "c-static-blocking"])
def test_header_timeout_then_served(procs, name):
    """A trusted peer that sends part of a header and stalls is dropped when the timeout ends
    (the held call then takes the next connection); nothing of it reaches the program."""
    p, port = start(procs, name, opts=["--timeout-ms", "300"])
    staller = connect_from(port, TRUSTED)
    try:
        staller.sendall(b"PROXY TCP4 203.0")
        t0 = time.monotonic()
        seen = ask(name, p, port, v1_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
        assert seen is not None and seen["accept"] == CLIENT, p.output()
        assert recv_all(staller) == b""
        assert time.monotonic() - t0 < 3
        assert "event=reject reason=timeout" in p.output()
    finally:
        staller.close()


def test_untrusted_reject(procs):
    """PROXYSHIM_UNTRUSTED=reject: an untrusted peer that starts a header is closed; one that
    does not is served with its own address."""
    env = clean_env()
    env["PROXYSHIM_UNTRUSTED"] = "reject"
    p, port = start(procs, "c-static-epoll", env=env)
    assert ask("c-static-epoll", p, port, v1_header(SPOOF, ("127.0.0.1", port)), UNTRUSTED) is None
    seen = ask("c-static-epoll", p, port, b"", UNTRUSTED)
    assert seen["accept"] == seen["me"] and seen["data"] == BODY
    assert "event=reject reason=untrusted" in p.output()


def test_forked_children_and_counters(procs, tmp_path):
    """A server that forks a child per connection: the children are under the filter too, and
    their getpeername() is answered from the table. The supervisor writes the counters."""
    stats = tmp_path / "stats.prom"
    p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--stats", str(stats), "--", TS_STATIC, "--listen",
                               "127.0.0.1:0", "--mode", "fork"], env=clean_env(), log_name="fork")
    procs.append(p)
    for i in range(3):
        exchange(port, v2_header(CLIENT, ("127.0.0.1", port)) + BODY, source=TRUSTED, port_at_connect=True)
        d = wait_conns(p, i + 1)[-1]
        assert addr(d["accept"]) == CLIENT and addr(d["peer"]) == CLIENT, d
        assert d["pid"] != child_pids(p.pid)[0]  # served by a forked child
    exchange(port, BODY, source=UNTRUSTED, port_at_connect=True)
    wait_conns(p, 4)
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = stats.read_text() if stats.exists() else ""
        if 'result="untrusted",reason="none",version="none"} 1' in text:  # at 0 from the start
            break
        time.sleep(0.1)
    pid = 'pid="%d"' % p.pid  # the supervisor's counters
    assert 'proxyshim_connections_total{%s,result="rewritten",reason="none",version="2"} 3' % pid in text, text
    assert 'proxyshim_connections_total{%s,result="untrusted",reason="none",version="none"} 1' % pid in text, text
    assert 'proxyshim_header_bytes_total{%s} %d' % (pid, 3 * len(v2_header(CLIENT, ("127.0.0.1", port)))) in text


def test_a_daemonized_server_goes_on_being_served(procs, tmp_path):
    """COMMAND starts the server in the background and exits 3: the server (an orphan, now the
    subreaper's child) is still served; once it is gone the supervisor exits with COMMAND's 3."""
    out = tmp_path / "server.out"
    p = Proc([WRAPPER, "--trusted", TRUSTED, "--supervise", "--", "/bin/sh", "-c",
              "%s --listen 127.0.0.1:0 > %s 2>&1 & exit 3" % (TS_STATIC, out)], env=clean_env(), log_name="daemon")
    procs.append(p)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "listening" not in (out.read_text() if out.exists() else ""):
        time.sleep(0.02)
    port = int(out.read_text().split()[1])
    time.sleep(0.2)  # sh has exited by now
    assert p.poll() is None, p.output()
    kids = child_pids(p.pid)
    assert len(kids) == 1  # the server, reparented
    got, _ = exchange(port, v1_header(CLIENT, ("127.0.0.1", port)) + BODY, source=TRUSTED, port_at_connect=True)
    assert got == BODY
    lines = []
    deadline = time.monotonic() + 5
    while not lines and time.monotonic() < deadline:
        lines = [ln for ln in out.read_text().splitlines() if ln.startswith("{")]
        time.sleep(0.02)
    d = json.loads(lines[-1])
    assert addr(d["accept"]) == CLIENT
    os.kill(kids[0], signal.SIGTERM)
    assert p.p.wait(5) == 3


def test_i386_calls_are_refused():
    """The supervisor serves the x86_64 ABI only: an i386 program's accept4() and
    socketcall(SYS_ACCEPT4) are refused (EPERM), never let through to take a header as data.
    Run plainly, the kernel answers ENOTSOCK (88) on /dev/null: the refusal is the filter's."""
    plain = subprocess.run([ACCEPT32], stdin=subprocess.DEVNULL, timeout=10)
    assert plain.returncode == 88
    r = subprocess.run([WRAPPER, "--trusted", TRUSTED, "--", ACCEPT32], stdin=subprocess.DEVNULL,
                       env=clean_env(), capture_output=True, timeout=10)
    assert r.returncode == 1, r  # EPERM from both


IO_URING_SETUP = ("import ctypes, os\n"
                  "libc = ctypes.CDLL(None, use_errno=True)\n"
                  "params = ctypes.create_string_buffer(120)\n"
                  "r = libc.syscall(425, 8, params)\n"
                  "print(r, ctypes.get_errno())\n")


def io_uring_run(*opts):
    return subprocess.run([WRAPPER, "--supervise", "--trusted", TRUSTED] + list(opts) +
                          ["--", "/usr/bin/python3", "-c", IO_URING_SETUP],
                          env=clean_env(), capture_output=True, timeout=20)


def test_io_uring_is_said_and_left_to_the_program():
    """A program that sets up io_uring: the supervisor says so once (accepts through io_uring
    pass the filter by, their headers would reach the program as data) and names
    --no-io-uring; the call is the kernel's own."""
    plain = subprocess.run(["/usr/bin/python3", "-c", IO_URING_SETUP], capture_output=True, timeout=20)
    r = io_uring_run()
    assert r.returncode == 0 and r.stdout == plain.stdout, (r, plain)
    err = r.stderr.decode()
    assert err.count("event=io_uring") == 1 and "--no-io-uring" in err, err


def test_no_io_uring_makes_it_fail_with_enosys():
    """--no-io-uring: io_uring_setup() fails with ENOSYS (a program that can fall back to
    accept() does), said once."""
    plain = subprocess.run(["/usr/bin/python3", "-c", IO_URING_SETUP], capture_output=True, timeout=20)
    assert plain.stdout.split()[0] != b"-1" or plain.stdout.split()[1] != b"38", plain  # not ENOSYS here
    r = io_uring_run("--no-io-uring")
    assert r.stdout.split() == [b"-1", b"38"], r  # ENOSYS
    assert b"event=io_uring" in r.stderr and b"ENOSYS" in r.stderr, r


def test_no_io_uring_with_no_supervise_is_an_error():
    r = subprocess.run([WRAPPER, "--no-supervise", "--no-io-uring", "--trusted", TRUSTED, "--", "/bin/true"],
                       env=clean_env(), capture_output=True, timeout=20)
    assert r.returncode == 2 and b"--no-io-uring" in r.stderr, r


def test_exit_status_is_the_programs(tmp_path):
    r = subprocess.run([WRAPPER, "--supervise", "--trusted", TRUSTED, "--", "/bin/sh", "-c", "exit 7"],
                       env=clean_env(), capture_output=True, timeout=20)
    assert r.returncode == 7, r


# ---- the same answers as the library ----

PARITY = {
    "v1": lambda port: v1_header(CLIENT, ("127.0.0.1", port)),
    "v2": lambda port: v2_header(CLIENT, ("127.0.0.1", port)),
    "v2-ipv6-on-ipv4": lambda port: v2_header(("2001:db8::43", 4343), ("2001:db8::1", port)),
    "v2-local": lambda port: v2_header(command=0),
    "v1-unknown": lambda port: v1_header(None, None),
    "v2-tlvs": lambda port: v2_header(CLIENT, ("127.0.0.1", port), tlvs=[(0x02, b"example.org")], crc=True),
}


@pytest.mark.parametrize("listen", ["127.0.0.1", "[::1]"])
@pytest.mark.parametrize("addrlen", [None, 8])
@pytest.mark.parametrize("case", sorted(PARITY))
def test_same_answers_as_the_library(procs, case, addrlen, listen):
    """The same header through the library (the dynamic test server, LD_PRELOAD) and through
    the supervisor (its static build), on an IPv4 and an IPv6 listener: accept()'s address and
    length, what reached the caller's buffer (a short --addrlen shows truncation),
    getpeername() and the bytes read."""
    extra = ["--addrlen", str(addrlen)] if addrlen else []
    source = TRUSTED if listen[0] != "[" else "::1"
    lib, lport = start_listening([TESTSERVER, "--listen", listen + ":0"] + extra,
                                 env=shim_env(TRUSTED=source), log_name="lib")
    procs.append(lib)
    sup, sport = start_listening([WRAPPER, "--trusted", source, "--", TS_STATIC, "--listen", listen + ":0"]
                                 + extra, env=clean_env(), log_name="sup")
    procs.append(sup)
    keys = ("accept", "addrlen", "accept_raw", "peer", "peer_len", "peer_raw", "hex", "errno_kept")
    out = []
    for p, port in ((lib, lport), (sup, sport)):
        head = PARITY[case](port)
        exchange(port, head + BODY, host=listen.strip("[]"), source=source, port_at_connect=True)
        d = wait_conns(p, 1)[-1]
        out.append({k: d.get(k) for k in keys})
    if case in ("v2-local", "v1-unknown"):  # the real peer: its port differs between the two
        for d in out:
            for k in ("accept", "peer"):
                if d[k]:
                    d[k].pop("port")
            d["accept_raw"] = d["peer_raw"] = None
    assert out[0] == out[1]


# ---- failing closed ----

def test_supervisor_killed_takes_the_program(procs):
    """SIGKILL to the supervisor: the program dies with it (PR_SET_PDEATHSIG), so it never goes
    on with headers reaching it as data."""
    p, port = start(procs, "c-static-blocking")
    kids = child_pids(p.pid)
    assert len(kids) == 1
    os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while os.path.exists("/proc/%d" % kids[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    # A zombie is gone too: it serves nothing. Its parent (the subreaper's parent) reaps it.
    try:
        with open("/proc/%d/stat" % kids[0]) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z"), state
    with pytest.raises(OSError):
        s = connect_from(port, TRUSTED, timeout=1)
        s.sendall(v1_header(CLIENT, ("127.0.0.1", port)) + BODY)
        shut_wr(s)
        assert recv_all(s) == b""
        raise OSError("closed")


def test_refused_probe_exits_126(procs):
    """pidfd_getfd() refused by a seccomp filter installed first (as Docker's default profile
    does without CAP_SYS_PTRACE): exit 126 naming the call, the errno and the fix; the program
    never runs."""
    r = subprocess.run([DENYFD, WRAPPER, "--trusted", TRUSTED, "--", TS_STATIC, "--listen", "127.0.0.1:0"],
                       env=clean_env(), capture_output=True, timeout=20)
    assert r.returncode == 126, r
    assert r.stdout == b"", r.stdout  # the program never printed "listening"
    err = r.stderr.decode()
    assert "pidfd_getfd failed: Operation not permitted (EPERM)" in err, err
    assert "CAP_SYS_PTRACE" in err and "never reach it as data" in err, err


@pytest.mark.parametrize("name", ["c-static-epoll", "go-static"])
def test_process_vm_refused_falls_back_to_proc_mem(procs, name):
    """process_vm_readv/writev refused (containerd's default profile): the supervisor writes
    the address through /proc/PID/mem instead, and says so."""
    p, port = start(procs, name, prefix=[DENYFD, "--deny", "process_vm", "--"])
    assert "memory=/proc/pid/mem" in p.output(), p.output()
    for _ in range(2):
        seen = ask(name, p, port, v2_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
        assert seen is not None and seen["accept"] == CLIENT and seen["peer"] == CLIENT, p.output()


def test_no_supervise_keeps_the_refusal():
    r = subprocess.run([WRAPPER, "--no-supervise", "--trusted", TRUSTED, "--", TS_STATIC],
                       env=clean_env(), capture_output=True, timeout=20)
    assert r.returncode == 126 and r.stdout == b""
    assert "is statically linked (no ELF interpreter)" in r.stderr.decode()


def test_go_runs_supervised_unless_told_not_to(procs):
    """A cgo-built (dynamically linked) Go program is chosen for supervision by its Go note; with
    --no-supervise it gets LD_PRELOAD, which Go's own system calls bypass: the header reaches it
    as data (400), which is why the mode exists."""
    p, port = start(procs, "go-cgo")
    assert "event=supervise" in p.output()
    assert ask("go-cgo", p, port, v1_header(CLIENT, ("127.0.0.1", port)), TRUSTED)["accept"] == CLIENT
    q, qport = start(procs, "go-cgo", opts=["--no-supervise"])
    seen = ask("go-cgo", q, qport, v1_header(CLIENT, ("127.0.0.1", qport)), TRUSTED)
    assert " 400 " in seen["status"] and "event=supervise" not in q.output()


def test_supervise_forced_on_a_dynamic_program(procs):
    """--supervise on a dynamically linked program: supervised, without LD_PRELOAD."""
    p, port = start_listening([WRAPPER, "--supervise", "--trusted", TRUSTED, "--log", "info", "--",
                               TESTSERVER, "--listen", "127.0.0.1:0"], env=clean_env(), log_name="forced")
    procs.append(p)
    kid = child_pids(p.pid)[0]
    with open("/proc/%d/environ" % kid, "rb") as f:
        assert b"LD_PRELOAD=" not in f.read()
    exchange(port, v1_header(CLIENT, ("127.0.0.1", port)) + BODY, source=TRUSTED, port_at_connect=True)
    assert addr(wait_conns(p, 1)[-1]["accept"]) == CLIENT
    assert "event=supervise" in p.output()


def caps(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return st["Uid"].split()[0], st["CapEff"].strip(), st["CapPrm"].strip()


@pytest.mark.parametrize("name", ["c-static-epoll", "go-static"])
def test_unprivileged_user_without_capabilities(procs, name):
    """As uid 65534 with no capabilities at all: everything the mode needs is allowed (the
    supervisor is the program's parent, of the same user)."""
    world = tempfile.mkdtemp(prefix="supervise-")
    try:
        os.chmod(world, 0o755)
        for f in (WRAPPER, SUPERVISOR, LIB, SERVERS[name][0][0]):
            shutil.copy(f, world)
        wrapper = os.path.join(world, os.path.basename(WRAPPER))
        prog = os.path.join(world, os.path.basename(SERVERS[name][0][0]))
        p, port = start(procs, name, binary=prog, wrapper=wrapper,
                        prefix=["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                                "--inh-caps=-all"])
        # setpriv exec()s the wrapper, which exec()s the supervisor: p.pid is the supervisor.
        sup = p.pid
        kids = child_pids(sup)
        assert len(kids) == 1
        for pid in [sup] + kids:
            assert caps(pid) == (str(NOBODY), "0000000000000000", "0000000000000000"), pid
        seen = ask(name, p, port, v2_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
        assert seen is not None and seen["accept"] == CLIENT, p.output()
    finally:
        shutil.rmtree(world, ignore_errors=True)


def test_program_that_drops_to_another_user_is_served(procs):
    """A daemon started as root that drops to uid 65534 after listen(): the supervisor (root,
    with CAP_SYS_PTRACE) still takes its sockets; accept and getpeername give the client."""
    argv = SERVERS["c-static-blocking"][0] + ["--user", str(NOBODY)]
    p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--log", "info", "--"] + argv, env=clean_env(),
                              log_name="sv-dropuser")
    procs.append(p)
    kid = child_pids(p.pid)[0]
    assert caps(kid)[0] == str(NOBODY)
    seen = ask("c-static-blocking", p, port, v2_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
    assert seen is not None and seen["accept"] == CLIENT and seen["peer"] == CLIENT, p.output()


def test_program_that_drops_user_fails_closed_without_cap_sys_ptrace(procs):
    """The same daemon under a root supervisor without CAP_SYS_PTRACE (a container's root):
    once the program is uid 65534 the supervisor may not take its listener. accept() fails
    (EPERM) and the header never reaches the program as data; the supervisor says why, with
    the fix, once, however often the program retries."""
    argv = SERVERS["c-static-blocking"][0] + ["--user", str(NOBODY)]
    p, port = start_listening(["setpriv", "--bounding-set=-sys_ptrace", WRAPPER, "--trusted", TRUSTED, "--log",
                               "info", "--"] + argv, env=clean_env(), log_name="sv-dropuser-noptrace")
    procs.append(p)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(CLIENT, ("127.0.0.1", port)) + BODY)
    time.sleep(1.0)
    out = p.output()
    s.close()
    assert conn_lines(p) == [], out  # nothing accepted: no header read as data
    assert "error accept: Operation not permitted" in out, out
    said = [ln for ln in out.splitlines() if "event=cannot_serve" in ln]
    assert len(said) == 1, said
    assert "reason=uid_changed uid=%d" % NOBODY in said[0] and "CAP_SYS_PTRACE" in said[0], said


@pytest.mark.parametrize("how", ["supervised", "preload"])
def test_blocking_accept_honours_the_listeners_so_rcvtimeo(procs, how):
    """A blocking listener with SO_RCVTIMEO (300 ms): accept() gives up with EAGAIN as the
    kernel's does, also while a header is incomplete; that connection is the next call's, with
    its client. (Supervised, a held call waited without a limit: no EAGAIN in 1.2 s.) The
    library under LD_PRELOAD is the reference."""
    argv = ([TS_STATIC] if how == "supervised" else [TESTSERVER]) + ["--listen", "127.0.0.1:0",
                                                                    "--accept-timeout", "300"]
    p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--log", "info", "--"] + argv, env=clean_env(),
                              log_name="sv-rcvtimeo-" + how)
    procs.append(p)
    time.sleep(1.2)
    gave_up = p.output().count("accept: Resource temporarily unavailable")
    assert 2 <= gave_up <= 5, p.output()
    head = v2_header(CLIENT, ("127.0.0.1", port))
    s = connect_from(port, TRUSTED)
    s.sendall(head[:10])
    time.sleep(0.8)  # past two timeouts with the header incomplete
    assert p.output().count("accept: Resource temporarily unavailable") >= gave_up + 2, p.output()
    assert conn_lines(p) == [], p.output()
    s.sendall(head[10:] + BODY)
    shut_wr(s)
    assert recv_all(s) == BODY
    s.close()
    d = wait_json(p, lambda x: "accept" in x)[-1]
    assert addr(d["accept"]) == CLIENT and addr(d["peer"]) == CLIENT, p.output()


# ---- fds and signals ----

def test_dup_and_fd_reuse(procs):
    """The client follows the socket (its cookie), not the fd number: served on a dup2() copy,
    getpeername() gives the client; a fresh socket that reuses the number gives its own peer."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    probe.listen(16)
    try:
        p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--", TS_STATIC, "--listen", "127.0.0.1:0",
                                   "--dup", "dup2", "--probe", "127.0.0.1:%d" % probe.getsockname()[1]],
                                  env=clean_env(), log_name="dup")
        procs.append(p)
        for i in range(3):
            exchange(port, v1_header(CLIENT, ("127.0.0.1", port)) + BODY, source=TRUSTED, port_at_connect=True)
            d = wait_conns(p, i + 1)[-1]
            assert addr(d["accept"]) == CLIENT and addr(d["peer"]) == CLIENT, d
            assert addr(d["probe"]["peer"]) == ("127.0.0.1", probe.getsockname()[1]), d
    finally:
        probe.close()


def test_table_sweep_keeps_live_sockets(procs):
    """Past 4096 entries the client table is swept against the live sockets (sock_diag): the
    entries of closed connections go, an open connection's stays (its getpeername(), asked
    when it ends, still gives its client)."""
    p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--log", "info", "--", TS_STATIC, "--listen",
                               "127.0.0.1:0", "--mode", "epoll"], env=clean_env(), log_name="sweep")
    procs.append(p)
    old = ("203.0.113.99", 9999)
    a = connect_from(port, TRUSTED)
    a.sendall(v1_header(old, ("127.0.0.1", port)) + BODY)
    r = subprocess.run([LOADGEN, "--target", "127.0.0.1:%d" % port, "--source", TRUSTED, "--conns", "8",
                        "--count", "4200", "--header", "v2", "--half-close"], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"errors=0" in r.stdout, r
    shut_wr(a)
    assert recv_all(a) == BODY
    a.close()
    d = wait_json(p, lambda x: addr(x["accept"]) == old, timeout=10)
    mine = [x for x in d if addr(x["accept"]) == old][0]
    assert addr(mine["peer"]) == old, mine
    m = re.search(r"event=sweep before=(\d+) after=(\d+)", p.output())
    assert m and int(m.group(2)) < int(m.group(1)) // 2, p.output()[-2000:]


def test_signals_during_accept_lose_nothing(procs):
    """SIGALRM every 2 ms without SA_RESTART while the program blocks in accept(): the held call
    is aborted again and again (accept() fails EINTR, the program calls it again); a connection
    the supervisor had accepted when a signal came is kept for the next call, never dropped."""
    p, port = start_listening([WRAPPER, "--trusted", TRUSTED, "--log", "debug", "--", TS_STATIC, "--listen",
                               "127.0.0.1:0", "--signals", "2000"], env=clean_env(), log_name="signals")
    procs.append(p)
    n = 30
    for i in range(n):
        src = ("203.0.113.%d" % (i + 1), 5000 + i)
        # Every other header comes in pieces 20 ms apart: a signal surely aborts the call held
        # meanwhile, and the connection it was reading goes to the next call.
        pieces = [5, 11] if i % 2 else None
        got, _ = exchange(port, v1_header(src, ("127.0.0.1", port)) + BODY, source=TRUSTED, pieces=pieces,
                          delay=0.02, port_at_connect=True)
        assert got == BODY, (i, p.output())
    lines = wait_conns(p, n)
    assert [addr(d["accept"]) for d in lines] == [("203.0.113.%d" % (i + 1), 5000 + i) for i in range(n)]
    assert "event=stash" in p.output()  # the path was taken


def test_signals_forwarded_and_status_returned(procs):
    """SIGTERM to the supervisor reaches the program; the supervisor exits as it did."""
    p, port = start(procs, "c-static-blocking")
    os.kill(p.pid, signal.SIGTERM)
    assert p.p.wait(5) == -signal.SIGTERM


# ---- the Kubernetes profile (docker/k8s/proxyshim-supervise-seccomp.json), applied for real ----

K8S_PROFILE = os.path.join(ROOT, "docker", "k8s", "proxyshim-supervise-seccomp.json")

# Installs the classic BPF program in the file argv[1] as a seccomp filter (no_new_privs first,
# as a runtime does for a container without privileges), then execs argv[3:] (argv[2] is --).
APPLY_FILTER = r'''
import ctypes, os, sys
prog = open(sys.argv[1], "rb").read()
class FProg(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
libc = ctypes.CDLL(None, use_errno=True)
f = FProg(len(prog) // 8, prog)
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(f), 0, 0) != 0:
    sys.exit("apply filter: errno %d" % ctypes.get_errno())
os.execv(sys.argv[3], sys.argv[3:])
'''


def syscall_numbers():
    out = {}
    with open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h") as f:
        for line in f:
            m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def profile_bpf(path, drop=()):
    """The OCI seccomp profile at path as a classic BPF program for x86_64, as runc and crun
    compile it, but for argument conditions (socket's family, personality, clone's flags),
    taken as met: a rule's call is allowed (or fails with its errno); any other call fails with
    the profile's default errno. Calls in drop are left out (refused by the default)."""
    import struct
    prof = json.load(open(path))
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    nrs = syscall_numbers()
    ret = {}
    for r in prof["syscalls"]:
        for n in r["names"]:
            if n in drop or n not in nrs:
                continue
            if r["action"] == "SCMP_ACT_ALLOW":
                ret[nrs[n]] = 0x7fff0000  # SECCOMP_RET_ALLOW
            else:
                assert r["action"] == "SCMP_ACT_ERRNO", r
                ret.setdefault(nrs[n], 0x00050000 | r.get("errnoRet", 1))
    ins = [(0x20, 0, 0, 4),                # ld arch
           (0x15, 1, 0, 0xc000003e),       # jeq AUDIT_ARCH_X86_64
           (0x06, 0, 0, 0x00050000 | 1),   # another ABI: EPERM
           (0x20, 0, 0, 0)]                # ld nr
    for nr, action in sorted(ret.items()):
        ins += [(0x15, 0, 1, nr), (0x06, 0, 0, action)]
    ins.append((0x06, 0, 0, 0x00050000 | prof["defaultErrnoRet"]))
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


def under_profile(tmp_path, drop=()):
    bpf = tmp_path / "profile.bpf"
    bpf.write_bytes(profile_bpf(K8S_PROFILE, drop))
    return ["/usr/bin/python3", "-c", APPLY_FILTER, str(bpf), "--"]


@pytest.mark.parametrize("name", ["c-static-epoll", "go-static"])
def test_kubernetes_profile_lets_the_supervised_mode_serve(procs, tmp_path, name):
    """Under the shipped Localhost profile (compiled here to the filter a runtime would
    install) the probe passes, process_vm_* is used (no /proc fallback), and the program sees
    the header's client."""
    p, port = start(procs, name, prefix=under_profile(tmp_path))
    assert "memory=process_vm" in p.output(), p.output()
    for _ in range(2):
        seen = ask(name, p, port, v2_header(CLIENT, ("127.0.0.1", port)), TRUSTED)
        assert seen is not None and seen["accept"] == CLIENT and seen["peer"] == CLIENT, p.output()


def test_kubernetes_profile_without_pidfd_getfd_is_the_default_refusal(tmp_path):
    """The same profile without pidfd_getfd (the runtime's default for a pod without
    CAP_SYS_PTRACE): exit 126 with the message, the program never runs; so the filter
    compiled here does refuse what the profile leaves out."""
    r = subprocess.run(under_profile(tmp_path, drop=("pidfd_getfd",)) +
                       [WRAPPER, "--trusted", TRUSTED, "--", TS_STATIC, "--listen", "127.0.0.1:0"],
                       env=clean_env(), capture_output=True, timeout=20)
    assert r.returncode == 126 and r.stdout == b"", r
    assert "pidfd_getfd failed: Operation not permitted (EPERM)" in r.stderr.decode(), r


# ---- PROXYSHIM_LOCAL_ADDR=header: getsockname() gives the header's destination ----

DEST = ("192.0.2.80", 8080)


@pytest.mark.parametrize("name", ["c-static-epoll", "c-static-blocking", "go-static"])
def test_local_addr_header_answers_getsockname(procs, name):
    """With PROXYSHIM_LOCAL_ADDR=header, getsockname() on a rewritten connection gives the
    header's destination (Go: the request's LocalAddr, which Go takes from getsockname()), as
    the library does; an untrusted peer's connection keeps the real local address; and the
    listener's own getsockname() stays the kernel's."""
    p, port = start(procs, name, env=dict(clean_env(), PROXYSHIM_LOCAL_ADDR="header"))
    assert "LOCAL_ADDR=header is not served" not in p.output()
    kind = SERVERS[name][1]
    for _ in range(2):
        seen = ask(name, p, port, v2_header(CLIENT, DEST), TRUSTED)
        assert seen is not None and seen["accept"] == CLIENT and seen["peer"] == CLIENT, p.output()
        if kind == "ts":
            assert addr(seen["line"]["local"]) == DEST, seen["line"]
        else:
            assert json.loads(seen["data"].partition(b"\r\n\r\n")[2])["local"] == "%s:%d" % DEST, seen
    seen = ask(name, p, port, b"", UNTRUSTED)
    if kind == "ts":
        assert addr(seen["line"]["local"]) == ("127.0.0.1", port), seen["line"]
    else:
        assert json.loads(seen["data"].partition(b"\r\n\r\n")[2])["local"] == "127.0.0.1:%d" % port, seen


def test_local_addr_real_does_not_trap_getsockname(procs):
    """By default getsockname() is not trapped: the real local address, at no cost."""
    p, port = start(procs, "c-static-epoll")
    seen = ask("c-static-epoll", p, port, v2_header(CLIENT, DEST), TRUSTED)
    assert seen["accept"] == CLIENT and addr(seen["line"]["local"]) == ("127.0.0.1", port), seen


# ---- images without a C library (distroless/static, scratch: Go's usual bases) ----

def test_supervisor_runs_in_a_root_without_a_c_library(procs, tmp_path):
    """The supervisor is linked statically: in a root holding only it and a CGO_ENABLED=0 Go
    server (no ld.so, no libc, no /proc), the server reports the header's client. With a
    dynamically linked supervisor the chroot'ed exec fails (ENOENT for its interpreter)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(SUPERVISOR, root / "proxyshim-supervise")
    shutil.copy2(GO, root / "server")
    assert not os.path.exists(root / "lib") and not os.path.exists(root / "proc")
    env = dict(clean_env(), PROXYSHIM_TRUSTED=TRUSTED, PROXYSHIM_LOG="info")
    p, port = start_listening(["chroot", str(root), "/proxyshim-supervise", "/server", "--", "/server"],
                              env=env, log_name="sv-chroot")
    procs.append(p)
    dst = ("127.0.0.1", port)
    v1c = ("198.51.100.7", 7070)
    for head, client in ((v2_header(CLIENT, dst), CLIENT), (v1_header(v1c, dst), v1c)):
        seen = ask("go-static", p, port, head, TRUSTED)
        assert seen is not None and seen["accept"] == client, (seen, p.output())
    seen = ask("go-static", p, port, v2_header(SPOOF, dst), UNTRUSTED)
    assert seen is not None and seen["status"].split()[1] == "400", (seen, p.output())
