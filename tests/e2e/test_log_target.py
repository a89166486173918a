"""Where the shim's log lines go when fd 2 is a client's socket (docs/DESIGN.md). A log line
must never reach a connection: not in an inetd-style child whose fds 0, 1 and 2 are the
connection (vsftpd's per-connection process), nor in a daemon that closed stderr so that its
next accepted socket became fd 2. Then the line goes to syslog (/dev/log) when there is one,
else it is dropped and counted in the PROXYSHIM_STATS file. A UNIX stream socket (journald's
stdout stream), a pipe or a file as stderr still get the lines.

The server is tests/e2e/progs/fd2server.c. /dev/log is made only inside a private mount
namespace with its own /dev (a tmpfs): the real /dev is never touched. Trusted peer 127.0.0.2.

Each line, as go-logfmt (a real logfmt parser) reads it: "proxyshim:", then ts= (UTC, RFC 3339
with milliseconds), pid=, level=, event=, and values quoted and escaped where logfmt needs it."""
import os
import re
import select
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest

from util import (BUILD, Proc, connect_from, shut_wr, recv_all, shim_env, start_listening, v1_header,
                  wait_json)
from util.logfmt import TS, logfmt_decode, shim_lines

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "VERSION")) as _f:
    VERSION = _f.read().strip()

FD2SERVER = os.path.join(BUILD, "progs", "fd2server")
TRUSTED = "127.0.0.2"
SRC = ("203.0.113.9", 4711)
DST = ("198.51.100.20", 21)
REQUEST = b"hello over fd 2\n"
REPLY = b"reply: " + REQUEST
BANNER = b"220 fd2server ready\r\n"
# The start of every line after "proxyshim: " (the values are checked in section 7).
TS_PID = r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z pid=\d+ "
DEBUG_ACCEPT = re.compile(TS_PID + r"level=debug event=accept version=1 client=203\.0\.113\.9:4711 "
                          r"peer=127\.0\.0\.2:\d+ port=(\d+)$")

# The server runs in a private mount namespace whose /dev is a fresh tmpfs: null, zero, random
# and urandom bind-mounted from the real /dev, and /dev/log a symlink to $2 when $2 is given.
PRIVATE_DEV = r'''
set -e
mount --make-rprivate /
mount --bind /dev "$1"
mount -t tmpfs -o mode=0755,size=64k tmpfs /dev
for d in null zero random urandom; do
    touch "/dev/$d"
    mount --bind "$1/$d" "/dev/$d"
done
umount "$1"
if [ -n "$2" ]; then ln -s "$2" /dev/log; fi
shift 2
exec "$@"
'''


def private_dev(tmp_path, argv, log_sock=""):
    """argv prefixed so it runs with a private /dev (with /dev/log -> log_sock if given)."""
    realdev = tmp_path / "realdev"
    realdev.mkdir()
    return (["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", PRIVATE_DEV,
             "private-dev", str(realdev), str(log_sock)] + argv)


@pytest.fixture(autouse=True)
def _no_real_dev_log():
    """The tests never leave a /dev/log on the machine."""
    before = os.path.lexists("/dev/log")
    yield
    assert os.path.lexists("/dev/log") == before


@pytest.fixture
def server(procs):
    """server(mode, *options, wrap=None, **PROXYSHIM_vars): fd2server under the shim, trusting
    127.0.0.2, logging at debug; wrap(argv) gives the argv to run. Returns (Proc, port)."""
    def start(mode, *args, wrap=None, **env):
        env.setdefault("TRUSTED", TRUSTED)
        env.setdefault("LOG", "debug")
        argv = [FD2SERVER, "--mode", mode] + list(args)
        if wrap:
            argv = wrap(argv)
        p, port = start_listening(argv, env=shim_env(**env), log_name="fd2server")
        procs.append(p)
        return p, port
    return start


def talk(port, data, half_close=True, banner=False, timeout=10.0):
    """Sends data from the trusted peer (half-closing after it unless told not to) and returns
    every byte received until EOF (a reset counts as EOF). banner: the server speaks first, so
    its banner is awaited before sending (and is part of what is returned)."""
    s = connect_from(port, TRUSTED, timeout=timeout)
    try:
        first = b""
        while banner and not first.endswith(b"\r\n"):
            b = s.recv(1)
            if not b:
                break
            first += b
        if data:
            s.sendall(data)
        if half_close:
            shut_wr(s)
        return first + recv_all(s)
    finally:
        s.close()


def served(p, n):
    """The JSON line fd2server printed for its n-th connection."""
    got = wait_json(p, lambda d: d.get("n") == n)
    return [d for d in got if d.get("n") == n][0]


def stats_value(path, name):
    """The value of the one sample of family `name` in the stats file, or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^%s\{pid=\"\d+\"\} (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else None


# ---- 1-3: the client gets the server's bytes and nothing of the shim's ----

def test_inetd_child_lazy_client_gets_only_the_reply(server):
    """vsftpd-like: the connection on fds 0, 1, 2 and a banner first; lazy mode takes the header
    on the child's first read and logs event=accept at debug with fd 2 being the connection."""
    p, port = server("inetd", "--banner", BANNER[:-2].decode(), CONSUME="lazy")
    got = talk(port, v1_header(SRC, DST) + REQUEST, banner=True)
    assert got == BANNER + REPLY
    assert served(p, 1)["status"] == 0


def test_inetd_child_lazy_timeout_reject_not_sent_to_client(server):
    """The trusted client sends no header and keeps its side open: the child's read times out,
    the shim refuses the connection and logs reason=timeout at warn; the client sees only EOF."""
    p, port = server("inetd", "--banner", BANNER[:-2].decode(), CONSUME="lazy", TIMEOUT_MS=300, LOG="warn")
    got = talk(port, b"", half_close=False, banner=True)
    assert got == BANNER
    assert served(p, 1)["status"] == 1  # the read failed: the refusal did happen


def test_closed_stderr_daemon_client_gets_only_the_reply(server):
    """A daemon that closed stderr: accept() gives fd 2, and accept mode logs event=accept."""
    p, port = server("closed")
    for n in (1, 2):
        got = talk(port, v1_header(SRC, DST) + REQUEST)
        assert got == REPLY
        assert served(p, n)["fd"] == 2


def test_closed_stderr_daemon_reject_not_sent_to_refused_client(server):
    """The refused connection itself is fd 2 while the shim logs its rejection."""
    p, port = server("closed", TIMEOUT_MS=300)
    assert talk(port, b"GET / HTTP/1.0\r\n\r\n") == b""
    # the server still serves the next client, on fd 2
    assert talk(port, v1_header(SRC, DST) + REQUEST) == REPLY
    assert served(p, 1)["fd"] == 2


# ---- 4-5: where the lines go instead ----

def test_unsuitable_stderr_goes_to_dev_log(server, tmp_path):
    """With /dev/log present (in the server's own mount namespace), the line arrives there as
    one RFC 3164 datagram: <PRI>proxyshim[PID]: message, facility daemon, severity of the
    level (debug 7: PRI 31; warn 4: PRI 28)."""
    sock_path = str(tmp_path / "log.sock")
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(sock_path)
    log.settimeout(5.0)
    try:
        p, port = server("closed", wrap=lambda a: private_dev(tmp_path, a, sock_path),
                         TIMEOUT_MS=300)
        assert talk(port, v1_header(SRC, DST) + REQUEST) == REPLY
        dgram = log.recv(4096).decode()
        m = re.match(r"<31>proxyshim\[(\d+)\]: (.*)$", dgram, re.S)
        assert m, dgram
        assert int(m.group(1)) == p.pid
        assert "\n" not in m.group(2)
        m2 = DEBUG_ACCEPT.match(m.group(2))
        assert m2 and int(m2.group(1)) == port, dgram
        # a refusal at warn, while the refused connection is fd 2
        assert talk(port, b"GET / HTTP/1.0\r\n\r\n") == b""
        dgram = log.recv(4096).decode()
        assert re.match(r"<28>proxyshim\[%d\]: %slevel=warn event=reject reason=missing "
                        r"peer=127\.0\.0\.2:\d+ port=%d$" % (p.pid, TS_PID, port), dgram), dgram
        # stderr (the log file) took the listen line before the server closed it, nothing after
        out = p.output()
        assert re.search(r"^proxyshim: %slevel=info event=listen port=%d$" % (TS_PID, port), out, re.M), out
        assert "event=accept" not in out and "event=reject" not in out
    finally:
        log.close()


def test_no_dev_log_lines_dropped_and_counted(server, tmp_path):
    """No /dev/log (a private /dev without one): each line is dropped, and the stats file
    counts it in proxyshim_log_lines_dropped_total."""
    stats = str(tmp_path / "shim.prom")
    p, port = server("closed", wrap=lambda a: private_dev(tmp_path, a), STATS=stats)
    for n in (1, 2):
        assert talk(port, v1_header(SRC, DST) + REQUEST) == REPLY
        served(p, n)
    deadline = time.monotonic() + 5
    while stats_value(stats, "proxyshim_log_lines_dropped_total") != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(stats) as f:
        text = f.read()
    assert stats_value(stats, "proxyshim_log_lines_dropped_total") == 2, text
    assert "# TYPE proxyshim_log_lines_dropped_total counter\n" in text
    assert "# HELP proxyshim_log_lines_dropped_total " in text


# ---- 6: stderr targets that stay valid ----

@pytest.mark.parametrize("kind", ["unix-stream", "pipe", "file"])
def test_unix_stream_pipe_file_stderr_still_get_lines(kind, tmp_path):
    """journald's stdout stream is an AF_UNIX stream socket: like a pipe or a file, it gets
    the lines, as written, and the client gets only the reply."""
    if kind == "unix-stream":
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.settimeout(5.0)
        err_fd, reader = theirs.fileno(), mine
    elif kind == "pipe":
        r, w = os.pipe()
        err_fd, reader = w, os.fdopen(r, "rb", buffering=0)
    else:
        path = tmp_path / "stderr.log"
        f = open(path, "wb")
        err_fd, reader = f.fileno(), None
    out = open(tmp_path / "stdout.log", "wb")
    proc = subprocess.Popen([FD2SERVER, "--mode", "plain"],
                            env=shim_env(TRUSTED=TRUSTED, LOG="debug"), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err_fd, start_new_session=True)
    try:
        if kind == "unix-stream":
            theirs.close()
        elif kind == "pipe":
            os.close(w)
        else:
            f.close()
        out.close()
        deadline = time.monotonic() + 5
        port = None
        while port is None and time.monotonic() < deadline:
            m = re.search(rb"^listening (\d+)$", (tmp_path / "stdout.log").read_bytes(), re.M)
            port = int(m.group(1)) if m else time.sleep(0.01)
        assert port, "fd2server did not start"
        assert talk(port, v1_header(SRC, DST) + REQUEST) == REPLY
        text, deadline = b"", time.monotonic() + 5
        while b"event=accept" not in text and time.monotonic() < deadline:
            if kind == "file":
                text = (tmp_path / "stderr.log").read_bytes()
                time.sleep(0.02)
            elif select.select([reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                text += reader.recv(4096) if kind == "unix-stream" else reader.read(4096)
        lines = [ln for ln in text.decode().splitlines() if "event=accept" in ln]
        assert len(lines) == 1, text
        assert re.match("proxyshim: " + TS_PID + "level=debug event=accept ", lines[0]), lines
        m = DEBUG_ACCEPT.search(lines[0])
        assert m and int(m.group(1)) == port, lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(5)
        if reader is not None:
            reader.close()


# ---- 7: the lines themselves, read by go-logfmt ----

def ts_seconds(ts):
    """ts= as seconds since the epoch."""
    assert TS.match(ts), ts
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_lines_start_with_ts_and_pid_and_parse_as_logfmt(server):
    """Every line of a served connection: ts= (UTC, milliseconds, the time it was written), pid=
    (the server's), then level= and event= as before; go-logfmt decodes each."""
    t0 = time.time()
    p, port = server("plain")
    assert talk(port, v1_header(SRC, DST) + REQUEST) == REPLY
    served(p, 1)
    p.wait_output("event=accept")
    t1 = time.time()
    lines = shim_lines(p.output())
    assert len(lines) >= 2, p.output()
    decoded = logfmt_decode(lines)
    for pairs in decoded:
        keys = [k for k, _ in pairs]
        assert keys[:4] == ["ts", "pid", "level", "event"], pairs
        d = dict(pairs)
        assert d["pid"] == str(p.pid), pairs
        # the clock's own second, with 10 ms of slack for the clocks' granularity
        assert t0 - 0.01 <= ts_seconds(d["ts"]) <= t1 + 0.01, (d["ts"], t0, t1)
    events = [dict(x) for x in decoded]
    # At debug the first line is the library's start (its version), then the listener.
    assert {"level": "debug", "event": "start", "version": VERSION, "active": "yes"}.items() <= events[0].items(), events
    assert {"level": "info", "event": "listen", "port": str(port)}.items() <= events[1].items(), events
    accept = [e for e in events if e["event"] == "accept"]
    assert len(accept) == 1 and accept[0]["client"] == "%s:%d" % SRC, events
    assert accept[0]["level"] == "debug" and accept[0]["version"] == "1", accept


def test_awkward_values_are_quoted_and_escaped(procs, tmp_path):
    """A bad config file in a directory whose name holds a space and a '"' (its error quotes the
    bad value), and a counters file under a missing directory of the same kind: go-logfmt gets
    back exactly the texts the shim meant, the '"' included."""
    d = tmp_path / 'conf dir "x"'
    d.mkdir()
    conf = d / "proxyshim.conf"
    conf.write_text("PROXYSHIM_TRUSTED=127.0.0.2\nPROXYSHIM_MODE=sometimes\n")
    argv = ["/usr/bin/python3", "-c",
            "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()"]
    r = subprocess.run(argv, env=shim_env(CONFIG=str(conf)), capture_output=True, timeout=10)
    err = r.stderr.decode()
    assert r.returncode == 1 and "PermissionError" in err, err
    stats = str(tmp_path / 'no such "dir"' / "x y.prom")
    r = subprocess.run(argv, env=shim_env(TRUSTED=TRUSTED, STATS=stats), capture_output=True, timeout=10)
    assert r.returncode == 0, r
    err += r.stderr.decode()
    decoded = [dict(x) for x in logfmt_decode(shim_lines(err))]
    refuse = [e for e in decoded if e["event"] == "refuse"]
    assert len(refuse) == 1, err
    assert refuse[0]["detail"] == "%s:2: invalid PROXYSHIM_MODE='sometimes': expected strict or optional" \
        % conf, refuse
    assert (refuse[0]["level"], refuse[0]["reason"]) == ("error", "config") and refuse[0]["pid"].isdigit(), refuse
    # the counters file that cannot be written: said once, with the path and errno's text
    unwritable = [e for e in decoded if e["event"] == "stats"]
    assert len(unwritable) == 1, err
    assert unwritable[0]["level"] == "warn" and unwritable[0]["path"] == stats, unwritable
    assert unwritable[0]["error"] == os.strerror(2) and unwritable[0]["errno"] == "2", unwritable


def test_control_characters_in_values_are_escaped(tmp_path):
    """A counters path holding a tab and a newline (a file name may): the warning stays one
    line, and go-logfmt decodes the value back to the path itself."""
    stats = str(tmp_path / "missing\tdir\nx" / "s.prom")
    r = subprocess.run(["/bin/true"], env=shim_env(TRUSTED=TRUSTED, STATS=stats), capture_output=True,
                       timeout=10)
    err = r.stderr.decode()
    assert r.returncode == 0 and err.count("\n") == 1, repr(err)
    (line,) = logfmt_decode(shim_lines(err))
    d = dict(line)
    assert (d["level"], d["event"], d["path"]) == ("warn", "stats", stats), line
