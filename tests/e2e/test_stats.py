"""PROXYSHIM_STATS: the Prometheus text file a server under the shim writes for node_exporter's
textfile collector. Real servers (python3 -m http.server, nginx with two workers) take a known
mix of connections; the file must hold exactly the counts that mix makes, in the text format,
written within about a second of a change, replaced by rename, with the server's pid as a label
and never a client address. A strict parser in this file checks every line, and Prometheus' own
promtool (`promtool check metrics`) checks real files.

The file's life: written when the process starts (zero-valued main series, the build's version,
whether the shim is active), removed when the process exits normally, left by a crash. A file
that cannot be written is said once. Processes sharing a name without %p get a file each."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from util import (BUILD, LIB, ROOT, Proc, child_pids, connect_from, exchange, free_port, recv_all, shim_env, v1_header,
                  v2_header, wait_port)

TRUSTED = "127.0.0.2"
VFORKEXIT = os.path.join(BUILD, "progs", "vforkexit")
UNTRUSTED = "127.0.0.3"
PYTHON = "/usr/bin/python3"
GET = b"GET /?%s HTTP/1.0\r\n\r\n"

RESULTS = {"rewritten", "local", "passed", "rejected", "untrusted"}
REASONS = {"none", "missing", "invalid", "version", "timeout", "eof", "overflow", "error", "nomem", "untrusted"}
VERSIONS = {"1", "2", "none"}
FAMILIES = {"proxyshim_connections_total": "counter", "proxyshim_header_bytes_total": "counter",
            "proxyshim_parked_connections": "gauge", "proxyshim_log_lines_dropped_total": "counter",
            "proxyshim_build_info": "gauge", "proxyshim_active": "gauge"}
with open(os.path.join(ROOT, "VERSION")) as _f:
    VERSION = _f.read().strip()
# Present from the start, at 0 until counted: each result's usual series.
MAIN = {("rewritten", "none", "1"), ("rewritten", "none", "2"), ("local", "none", "1"),
        ("local", "none", "2"), ("passed", "missing", "none"), ("untrusted", "none", "none")} | \
    {("rejected", r, "none") for r in REASONS - {"none"}}


# ---- a strict parser for the text format, as much of it as this file may use ----

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\} (0|[1-9][0-9]*)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"')
HELP = re.compile(r'^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (\S.*)$')
TYPE = re.compile(r'^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$')


def parse_prom(text):
    """Parses the whole file or fails: every line a HELP, a TYPE or a sample
    `name{label="value",...} integer` (no timestamp, no blank line), HELP then TYPE once per
    family before its samples, no sample twice. Returns {family: [(labels dict, value)]}."""
    assert text.endswith("\n"), "the file does not end with a newline: %r" % text
    fams, helps, types, seen = {}, set(), {}, set()
    for line in text[:-1].split("\n"):
        m = HELP.match(line)
        if m:
            name = m.group(1)
            assert name in FAMILIES and name not in helps and name not in types, line
            helps.add(name)
            continue
        m = TYPE.match(line)
        if m:
            name = m.group(1)
            assert name in helps and name not in types, "TYPE without HELP or twice: " + line
            assert m.group(2) == FAMILIES[name], line
            types[name] = m.group(2)
            fams[name] = []
            continue
        m = SAMPLE.match(line)
        assert m, "not a HELP, TYPE or sample line without timestamp: %r" % line
        name, body, value = m.group(1), m.group(2), int(m.group(3))
        assert name in types, "a sample before its TYPE: " + line
        labels, pos = {}, 0
        while pos < len(body):
            lm = LABEL.match(body, pos)
            assert lm and lm.group(1) not in labels, "bad labels: " + line
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
            if pos < len(body):
                assert body[pos] == ",", "bad labels: " + line
                pos += 1
                assert pos < len(body), "trailing comma: " + line
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, "a sample twice: " + line
        seen.add(key)
        fams[name].append((labels, value))
    assert set(types) == set(FAMILIES), "families missing: %s" % (set(FAMILIES) - set(types))
    return fams


def summary(text, pid):
    """The parsed file as ({(result, reason, version): n}, header bytes, parked), after checking
    the label names and values and that every sample carries pid=<pid>."""
    fams = parse_prom(text)
    conns, series = {}, set()
    for labels, v in fams["proxyshim_connections_total"]:
        assert set(labels) == {"pid", "result", "reason", "version"}, labels
        assert labels["pid"] == str(pid), (labels, pid)
        assert labels["result"] in RESULTS and labels["reason"] in REASONS and \
            labels["version"] in VERSIONS, labels
        key = (labels["result"], labels["reason"], labels["version"])
        series.add(key)
        assert v > 0 or key in MAIN, labels  # other series only once counted
        if v:
            conns[key] = v
    assert MAIN <= series, "main series missing: %s" % (MAIN - series)
    assert fams["proxyshim_build_info"] == [({"pid": str(pid), "version": VERSION}, 1)], fams["proxyshim_build_info"]
    assert len(fams["proxyshim_active"]) == 1 and fams["proxyshim_active"][0][0] == {"pid": str(pid)}
    singles = []
    for name in ("proxyshim_header_bytes_total", "proxyshim_parked_connections"):
        assert len(fams[name]) == 1, fams[name]
        labels, v = fams[name][0]
        assert labels == {"pid": str(pid)}, (name, labels)
        singles.append(v)
    return conns, singles[0], singles[1]


def active(text):
    """proxyshim_active's value: 1 or 0."""
    (labels, v), = parse_prom(text)["proxyshim_active"]
    assert v in (0, 1), v
    return v


def promtool(text):
    """Prometheus' own checker (Debian's prometheus package) takes the file: parsed, and no
    lint complaint (exit status 3 with a complaint, 1 for a parse error)."""
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b""), (r, text)


def no_address(text):
    """No client address, real or announced, anywhere in the file."""
    for needle in ("127.0.0.", "203.0.113.", "198.51.100.", "::ffff"):
        assert needle not in text, "an address in the stats file:\n" + text


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def wait_stats(path, pid, want, timeout=3.0):
    """Polls the file until its summary equals want; returns (text, seconds it took)."""
    t0 = time.monotonic()
    text, got = None, None
    while time.monotonic() - t0 < timeout:
        text = read(path)
        if text is not None:
            got = summary(text, pid)
            if got == want:
                return text, time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError("stats file %s never became\n  %r\nlast seen\n  %r\n%s" % (path, want, got, text))


class Poller(threading.Thread):
    """Reads the stats file as fast as it can and keeps every distinct text it saw; a file
    written in place (not renamed) shows up as a text that does not parse."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.texts, self.reads, self.halt = path, [], 0, threading.Event()

    def run(self):
        while not self.halt.is_set():
            text = read(self.path)
            if text is not None:
                self.reads += 1
                if not self.texts or self.texts[-1] != text:
                    self.texts.append(text)

    def stop(self):
        self.halt.set()
        self.join(5)


# ---- servers ----

def http_server(procs, tmp_path, port, **env):
    """python3 -m http.server under the shim on 127.0.0.1:port, started without a single
    connection to it: the counters must hold only what the test sends."""
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    p = Proc([PYTHON, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
              str(www)], env=shim_env(TRUSTED=TRUSTED, **env), log_name="http.server")
    procs.append(p)
    p.wait_output("Serving HTTP on", timeout=10)
    return p


def served(port, path, hdr=b"", source=TRUSTED):
    """A GET behind hdr; asserts the server answered 200."""
    got, _ = exchange(port, hdr + GET % path.encode(), source=source, port_at_connect=True)
    assert got.startswith(b"HTTP/1.0 200"), (path, got)


def dropped(port, data, source=TRUSTED):
    """Sends data and half-closes; asserts the shim closed the connection without an answer."""
    got, _ = exchange(port, data, source=source, port_at_connect=True)
    assert got == b"", (data, got)


# ---- python3 -m http.server: the mix, the timing, the rename, the exit ----

def test_counters_for_a_mix_of_connections(procs, tmp_path):
    port = free_port()
    path = str(tmp_path / "stats" / "proxyshim.prom")
    os.mkdir(os.path.dirname(path))
    p = http_server(procs, tmp_path, port, STATS=path, TIMEOUT_MS=400)
    # There from the start: every main series at 0.
    assert summary(read(path), p.pid) == ({}, 0, 0), read(path)
    poller = Poller(path)
    poller.start()

    v2a = v2_header(("203.0.113.7", 4711), ("127.0.0.1", port))
    v2b = v2_header(("198.51.100.20", 4712), ("127.0.0.1", port), tlvs=[(0x02, b"example.com")], crc=True)
    v1s = [v1_header(("203.0.113.%d" % i, 5000 + i), ("127.0.0.1", port)) for i in (8, 9, 10)]
    local = v2_header(command=0)
    unknown = v1_header(None, None)
    # The staller's deadline runs while the others are served.
    staller = connect_from(port, TRUSTED)
    staller.sendall(v2a[:10])
    t_stall = time.monotonic()

    served(port, "v2a", v2a)
    served(port, "v2b", v2b)
    for i, h in enumerate(v1s):
        served(port, "v1-%d" % i, h)
    served(port, "local", local)
    served(port, "unknown", unknown)
    served(port, "untrusted-1", source=UNTRUSTED)
    # A spoof from an untrusted peer is data to the program, which answers it itself.
    got, _ = exchange(port, v1s[0] + GET % b"spoof", source=UNTRUSTED, port_at_connect=True)
    assert b"400 - Bad request" in got, got
    dropped(port, b"PROXY TCP4 203.0.113.99 127.0.0.1 1 99999\r\n" + GET % b"bad")  # invalid
    dropped(port, GET % b"no-header")                                              # missing
    dropped(port, v1s[0][:12])                                                     # eof
    assert recv_all(staller) == b""                                                # timeout
    assert time.monotonic() - t_stall >= 0.35
    staller.close()

    header_bytes = len(v2a) + len(v2b) + sum(map(len, v1s)) + len(local) + len(unknown)
    want = ({("rewritten", "none", "2"): 2, ("rewritten", "none", "1"): 3,
             ("local", "none", "2"): 1, ("local", "none", "1"): 1,
             ("untrusted", "none", "none"): 2,
             ("rejected", "invalid", "none"): 1, ("rejected", "missing", "none"): 1,
             ("rejected", "eof", "none"): 1, ("rejected", "timeout", "none"): 1},
            header_bytes, 0)
    t_done = time.monotonic()
    text, _ = wait_stats(path, p.pid, want)
    # "at most once a second": the last change is on disk within about that.
    assert time.monotonic() - t_done < 1.8, "written %.2f s after the last connection" % (time.monotonic() - t_done)
    poller.stop()
    no_address(text)

    # The program saw the announced clients; the counters agree with its own log.
    log = p.output()
    for path_, client in (("v2a", "203.0.113.7"), ("v2b", "198.51.100.20"), ("v1-0", "203.0.113.8"),
                          ("local", TRUSTED), ("untrusted-1", UNTRUSTED)):
        assert re.search(r'^%s - - \[[^]]+\] "GET /\?%s HTTP/1.0" 200' % (re.escape(client), path_), log, re.M), \
            (path_, log)
    assert "/bad" not in log and "/no-header" not in log

    # Every text the poller saw was a whole file: replaced by rename, never written in place.
    assert poller.reads > 50 and poller.texts, poller.reads
    for t in poller.texts:
        no_address(t)
        summary(t, p.pid)
    # Counters only go up between the versions seen.
    prev = {}
    for t in poller.texts:
        conns = summary(t, p.pid)[0]
        assert all(conns.get(k, 0) >= v for k, v in prev.items()), (prev, conns)
        prev = conns

    promtool(text)
    p.p.send_signal(signal.SIGINT)
    p.p.wait(5)
    assert os.listdir(os.path.dirname(path)) == [], "a file left after a normal exit"


def test_file_written_at_start_with_version_and_active(procs, tmp_path):
    """Before any connection the file is there: every main series at 0, proxyshim_build_info with
    the version of VERSION, proxyshim_active 1; promtool takes it. Without PROXYSHIM_TRUSTED the
    shim is inactive, and the file says so (proxyshim_active 0)."""
    for trusted, want_active in ((TRUSTED, 1), (None, 0)):
        port = free_port()
        path = str(tmp_path / ("active-%d.prom" % want_active))
        env = {"STATS": path}
        www = tmp_path / "www"
        www.mkdir(exist_ok=True)
        if trusted:
            env["TRUSTED"] = trusted
        p = Proc([PYTHON, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)],
                 env=shim_env(**env), log_name="http.server")
        procs.append(p)
        p.wait_output("Serving HTTP on", timeout=10)
        text = read(path)
        assert text is not None, "no file at start"
        assert summary(text, p.pid) == ({}, 0, 0), text
        assert active(text) == want_active, text
        no_address(text)
        promtool(text)
        p.stop(signal.SIGINT)


def test_file_removed_at_normal_exit_left_by_a_crash(procs, tmp_path):
    """A process that ends through exit() removes its own file (node_exporter would show a gone
    process's counters forever); one killed by a signal cannot, and its last file stays."""
    hdr = None
    for how in ("exit", "kill"):
        port = free_port()
        path = str(tmp_path / ("stats-" + how) / "proxyshim-%p.prom")
        os.mkdir(os.path.dirname(path))
        p = http_server(procs, tmp_path, port, STATS=path)
        mine = path.replace("%p", str(p.pid))
        hdr = v2_header(("203.0.113.7", 4711), ("127.0.0.1", port))
        served(port, "one", hdr)
        text, _ = wait_stats(mine, p.pid, ({("rewritten", "none", "2"): 1}, len(hdr), 0))
        promtool(text)
        if how == "exit":
            p.p.send_signal(signal.SIGINT)  # http.server ends through exit(): atexit handlers run
            assert p.p.wait(5) == 0 and read(mine) is None
        else:
            p.p.send_signal(signal.SIGKILL)
            assert p.p.wait(5) == -signal.SIGKILL
            assert summary(read(mine), p.pid) == ({("rewritten", "none", "2"): 1}, len(hdr), 0)
        assert os.listdir(os.path.dirname(path)) == ([] if how == "exit" else [os.path.basename(mine)])


def test_file_removed_when_the_program_ends_through__exit(tmp_path):
    """dash ends through _exit(), as do many daemons' children and Python's os._exit(): no
    atexit handler runs there, and their files stayed. A vfork() child ending through _exit()
    in the parent's memory removes nothing of the parent's: its file is there until the parent
    ends."""
    env = dict(os.environ, LD_PRELOAD=LIB, PROXYSHIM_TRUSTED="127.0.0.1")
    for argv in (["/bin/dash", "-c", "exit 0"], [sys.executable, "-c", "import os; os._exit(0)"]):
        d = tmp_path / os.path.basename(argv[0])
        d.mkdir()
        r = subprocess.run(argv, env=dict(env, PROXYSHIM_STATS=str(d / "s.prom")), capture_output=True, timeout=20)
        assert r.returncode == 0, r
        assert os.listdir(d) == [], (argv, os.listdir(d))
    for how in ("_exit", "--exit"):
        d = tmp_path / ("vfork" + how)
        d.mkdir()
        p = subprocess.Popen([VFORKEXIT] + ([how] if how == "--exit" else []), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=dict(env, PROXYSHIM_STATS=str(d / "s.prom")))
        assert p.stdout.readline() == b"child\n"
        assert os.listdir(d) == ["s.prom"] and summary(read(str(d / "s.prom")), p.pid) is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(10) == 0
        assert os.listdir(d) == [], (how, os.listdir(d))


def test_unwritable_file_is_reported_once(procs, tmp_path):
    """A directory that does not exist: one warning, naming the path and errno's text, however
    often the writer tries; the server serves all the same."""
    port = free_port()
    path = str(tmp_path / "missing" / "proxyshim.prom")
    p = http_server(procs, tmp_path, port, STATS=path)
    hdr = v2_header(("203.0.113.7", 4711), ("127.0.0.1", port))
    for i in range(3):
        served(port, "n%d" % i, hdr)
        time.sleep(1.1)  # a turn of the writer each
    p.stop(signal.SIGINT)
    lines = [l for l in p.output().splitlines() if "event=stats" in l]
    assert len(lines) == 1, p.output()
    assert re.search(r" level=warn event=stats path=%s errno=2 error=\"%s\"$"
                     % (re.escape(path), re.escape(os.strerror(2))), lines[0]), lines


def test_one_name_for_two_processes_gives_each_a_file(procs, tmp_path):
    """Two servers given the same name without %p: the first keeps it, the second (finding it
    written by a live process) writes its own, with its pid before the extension, and says so;
    neither overwrites the other's counts, and each removes only its own file at exit."""
    path = str(tmp_path / "stats" / "shared.prom")
    os.mkdir(os.path.dirname(path))
    ports = [free_port(), free_port()]
    first = http_server(procs, tmp_path, ports[0], STATS=path)
    second = http_server(procs, tmp_path, ports[1], STATS=path, LOG="info")
    other = str(tmp_path / "stats" / ("shared-%d.prom" % second.pid))
    hdr = v2_header(("203.0.113.7", 4711), ("127.0.0.1", ports[0]))
    served(ports[0], "a", hdr)
    served(ports[0], "b", hdr)
    served(ports[1], "c", hdr)
    wait_stats(path, first.pid, ({("rewritten", "none", "2"): 2}, 2 * len(hdr), 0))
    wait_stats(other, second.pid, ({("rewritten", "none", "2"): 1}, len(hdr), 0))
    assert sorted(os.listdir(os.path.dirname(path))) == sorted(["shared.prom", os.path.basename(other)])
    assert re.search(r" level=info event=stats path=%s note=" % re.escape(other), second.output()), second.output()
    second.stop(signal.SIGINT)
    assert os.listdir(os.path.dirname(path)) == ["shared.prom"]
    first.stop(signal.SIGINT)
    assert os.listdir(os.path.dirname(path)) == []


def test_parked_gauge_while_a_header_is_incomplete(procs, tmp_path):
    """Two connections parked with half a header (a long timeout): the gauge says 2 within about
    a second, then 0 once they have gone (each closes: reason eof)."""
    port = free_port()
    path = str(tmp_path / "proxyshim.prom")
    p = http_server(procs, tmp_path, port, STATS=path, TIMEOUT_MS=20000)
    hdr = v2_header(("203.0.113.7", 4711), ("127.0.0.1", port))
    served(port, "first", hdr)
    wait_stats(path, p.pid, ({("rewritten", "none", "2"): 1}, len(hdr), 0))
    # Past the writer's next turn, so that nothing but the parking itself is left to report.
    ino = os.stat(path).st_ino
    deadline = time.monotonic() + 3
    while os.stat(path).st_ino == ino and time.monotonic() < deadline:
        time.sleep(0.02)
    stallers = []
    for _ in range(2):
        s = connect_from(port, TRUSTED)
        s.sendall(hdr[:20])
        stallers.append(s)
    try:
        wait_stats(path, p.pid, ({("rewritten", "none", "2"): 1}, len(hdr), 2), timeout=2.5)
        # The program still serves others while they are parked.
        served(port, "second", hdr)
        wait_stats(path, p.pid, ({("rewritten", "none", "2"): 2}, 2 * len(hdr), 2), timeout=2.5)
    finally:
        for s in stallers:
            s.close()
    wait_stats(path, p.pid, ({("rewritten", "none", "2"): 2, ("rejected", "eof", "none"): 2},
                             2 * len(hdr), 0), timeout=3)


def test_counters_for_optional_mode_version_and_overflow(procs, tmp_path):
    """The rest of the vocabulary: passed (optional mode, no header), rejected for a version not
    allowed, and the oldest parked connection closed when PROXYSHIM_MAX_PARKED is reached."""
    port = free_port()
    path = str(tmp_path / "proxyshim.prom")
    p = http_server(procs, tmp_path, port, STATS=path, MODE="optional", VERSION="v2", MAX_PARKED=1,
                    TIMEOUT_MS=20000)
    v2 = v2_header(("203.0.113.7", 4711), ("127.0.0.1", port))
    served(port, "plain")                                                  # passed, missing
    dropped(port, v1_header(("203.0.113.8", 1), ("127.0.0.1", port)) + GET % b"v1")  # version
    served(port, "v2", v2)                                                 # rewritten
    first = connect_from(port, TRUSTED)
    first.sendall(v2[:10])
    time.sleep(0.3)  # parked before the second comes
    second = connect_from(port, TRUSTED)
    second.sendall(v2[:10])
    assert recv_all(first) == b"", "the oldest parked connection was not closed"  # overflow
    first.close()
    second.close()                                                         # eof
    want = ({("passed", "missing", "none"): 1, ("rejected", "version", "none"): 1,
             ("rewritten", "none", "2"): 1, ("rejected", "overflow", "none"): 1,
             ("rejected", "eof", "none"): 1}, len(v2), 0)
    text, _ = wait_stats(path, p.pid, want)
    no_address(text)
    assert re.search(r'^127\.0\.0\.2 - - \[[^]]+\] "GET /\?plain HTTP/1.0" 200', p.output(), re.M), p.output()
    assert "/?v1" not in p.output()


def test_stats_path_with_a_bad_value_exits_before_main(tmp_path):
    r = subprocess.run(["/bin/echo", "hi"], env=shim_env(TRUSTED=TRUSTED, STATS="relative.prom"),
                       capture_output=True, timeout=10)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b'proxyshim: invalid PROXYSHIM_STATS="relative.prom": expected an absolute file path\n'


@pytest.mark.parametrize("argv", [["/bin/true"], [PYTHON, "-c", "import socket; socket.socket().close()"]])
def test_a_process_that_never_listens_writes_no_file(tmp_path, argv):
    d = tmp_path / "stats"
    d.mkdir()
    for name in ("proxyshim.prom", "proxyshim-%p.prom"):
        r = subprocess.run(argv, env=shim_env(TRUSTED="*", STATS=str(d / name)), capture_output=True,
                           timeout=10)
        assert (r.returncode, r.stderr) == (0, b""), r
    assert os.listdir(str(d)) == []


# ---- nginx, two workers, one file each ----

@pytest.mark.apps
@pytest.mark.parametrize("name", ["proxyshim-%p.prom", "proxyshim.prom"])
def test_nginx_two_workers_one_file_per_pid(procs, tmp_path, name):
    """One file per process, with %p in the name or without: then the master, which started
    first, keeps the name, and each worker, finding it written by the live master, writes
    proxyshim-PID.prom."""
    port = free_port()
    d = tmp_path
    (d / "logs").mkdir()
    (d / "stats").mkdir()
    conf = d / "nginx.conf"
    # reuseport: one listener per worker, and the kernel spreads connections over both.
    conf.write_text("""
user root;
worker_processes 2;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    server {
        listen 127.0.0.1:%(port)d reuseport;
        location / { return 200 "you are $remote_addr\\n"; }
    }
}
""" % {"d": d, "port": port})
    stats = str(d / "stats" / name)
    p = Proc(["nginx", "-p", str(d), "-c", str(conf), "-g", "daemon off;"],
             env=shim_env(TRUSTED=TRUSTED, STATS=stats), log_name="nginx")
    procs.append(p)
    wait_port(port, proc=p, probe=False)
    deadline = time.monotonic() + 10
    while len(child_pids(p.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = set(child_pids(p.pid))
    assert len(workers) == 2, workers

    n_v2, n_v1, n_untrusted = 24, 8, 6
    total_bytes = 0
    for i in range(n_v2 + n_v1):
        src = "203.0.113.%d" % (i + 1)
        hdr = (v2_header((src, 1000 + i), ("127.0.0.1", port)) if i < n_v2
               else v1_header((src, 1000 + i), ("127.0.0.1", port)))
        total_bytes += len(hdr)
        got, _ = exchange(port, hdr + b"GET / HTTP/1.0\r\n\r\n", source=TRUSTED, port_at_connect=True)
        assert got.endswith(b"\r\n\r\nyou are %s\n" % src.encode()), got
    for i in range(n_untrusted):
        got, _ = exchange(port, b"GET / HTTP/1.0\r\n\r\n", source=UNTRUSTED, port_at_connect=True)
        assert got.endswith(b"you are %s\n" % UNTRUSTED.encode()), got

    def totals():
        files = {}
        for name in os.listdir(str(d / "stats")):
            m = re.match(r"^proxyshim(-(\d+))?\.prom$", name)
            assert m and (m.group(1) or "%p" not in stats), "an unexpected file: " + name
            pid = int(m.group(2)) if m.group(1) else p.pid
            text = read(str(d / "stats" / name))
            no_address(text)
            files[pid] = summary(text, pid)
        conns, hb = {}, 0
        for c, b, parked in files.values():
            assert parked == 0
            hb += b
            for k, v in c.items():
                conns[k] = conns.get(k, 0) + v
        return files, conns, hb

    want = ({("rewritten", "none", "2"): n_v2, ("rewritten", "none", "1"): n_v1,
             ("untrusted", "none", "none"): n_untrusted}, total_bytes)
    deadline = time.monotonic() + 3
    while True:
        files, conns, hb = totals()
        if (conns, hb) == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (conns, hb) == want, files
    # One file per worker, named and labelled with its pid, and the master's, written at its
    # start: it never accepts, so its counts stay 0.
    assert set(files) == workers | {p.pid}, (set(files), workers, p.pid)
    assert all(sum(c.values()) > 0 for pid, (c, _, _) in files.items() if pid != p.pid)
    assert files[p.pid] == ({}, 0, 0), files[p.pid]
    for name in os.listdir(str(d / "stats")):
        promtool(read(str(d / "stats" / name)))

    p.stop()  # SIGTERM: the master stops the workers; all exit() and remove their files
    assert os.listdir(str(d / "stats")) == []
