"""The config file: PROXYSHIM_CONFIG=/path, else /etc/proxyshim.conf, with the variables' keys
(KEY=VALUE, # comments, blank lines, optional double quotes) under the environment, which wins.
A bad file must not take every process down (with /etc/ld.so.preload every process reads it):
a server's listen() fails, saying which file, line, key and value, and anything else runs.
Last, the machine-wide set-up for real: /etc/ld.so.preload and /etc/proxyshim.conf in a private
mount namespace, a server started without LD_PRELOAD, and the host's /etc left as it was."""
import os
import re
import shutil
import subprocess
import time

import pytest

from test_stats import exchange
from util import LIB, WRAPPER, Proc, free_port, v1_header, v2_header

TRUSTED = "127.0.0.2"
OTHER = "127.0.0.3"
PYTHON = "/usr/bin/python3"
GET = b"GET /?%s HTTP/1.0\r\n\r\n"


def clean_env(**extra):
    """The test's environment without LD_PRELOAD and any PROXYSHIM_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}
    env.update(extra)
    return env


def preload_env(conf, **vars):
    """The library preloaded, its config file conf, and PROXYSHIM_<name> for each of vars."""
    env = clean_env(LD_PRELOAD=LIB, PROXYSHIM_CONFIG=str(conf))
    for k, v in vars.items():
        env["PROXYSHIM_" + k.upper()] = str(v)
    return env


def write_conf(path, *lines):
    path.write_text("".join(l + "\n" for l in lines))
    return path


def http_argv(tmp_path, port):
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    return [PYTHON, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)]


def start_http(procs, tmp_path, port, env, prefix=()):
    """python3 -m http.server on 127.0.0.1:port; returns once it says it serves (no connection
    is made to find out)."""
    p = Proc(list(prefix) + http_argv(tmp_path, port), env=env, log_name="http.server")
    procs.append(p)
    try:
        p.wait_output("Serving HTTP on", timeout=10)
    except TimeoutError:
        raise RuntimeError("http.server did not start:\n" + p.stop())
    return p


def logged_client(p, tag, status=200, timeout=5.0):
    """The client address http.server logged for the request GET /?tag."""
    pat = re.compile(r'^(\S+) - - \[[^]]+\] "GET /\?%s HTTP/1.0" %d' % (re.escape(tag), status), re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pat.search(p.output())
        if m:
            return m.group(1)
        time.sleep(0.02)
    raise AssertionError("no log line for %s:\n%s" % (tag, p.output()))


def wait_reject(p, reason, peer, timeout=5.0):
    """Waits for the shim's log line rejecting a connection from peer for reason."""
    pat = re.compile(r'^proxyshim: ts=\S+ pid=\d+ level=warn event=reject reason=%s (detail="[^"]*" )?peer=%s:\d+ port=\d+$'
                     % (reason, re.escape(peer)), re.M)
    deadline = time.monotonic() + timeout
    while not pat.search(p.output()):
        assert time.monotonic() < deadline, "no reject reason=%s from %s:\n%s" % (reason, peer, p.output())
        time.sleep(0.02)


def get(port, tag, hdr=b"", source=TRUSTED):
    got, _ = exchange(port, hdr + GET % tag.encode(), source=source)
    return got


# ---- settings from the file ----

def test_settings_from_the_file_apply_to_a_server(procs, tmp_path):
    port = free_port()
    stats = tmp_path / "proxyshim.prom"
    conf = write_conf(tmp_path / "proxyshim.conf",
                      "# the balancer",
                      "",
                      'PROXYSHIM_TRUSTED="%s"' % TRUSTED,
                      "   # an indented comment",
                      "PROXYSHIM_VERSION=v2",
                      "",
                      'PROXYSHIM_STATS="%s"' % stats)
    p = start_http(procs, tmp_path, port, preload_env(conf))
    got = get(port, "v2", v2_header(("203.0.113.7", 4711), ("127.0.0.1", port)))
    assert got.startswith(b"HTTP/1.0 200"), got
    assert logged_client(p, "v2") == "203.0.113.7"
    # VERSION=v2 from the file: a v1 header from the trusted peer is refused.
    assert get(port, "v1", v1_header(("203.0.113.8", 4712), ("127.0.0.1", port))) == b""
    wait_reject(p, "version", TRUSTED)
    # An untrusted peer is itself.
    assert get(port, "direct", source=OTHER).startswith(b"HTTP/1.0 200")
    assert logged_client(p, "direct") == OTHER
    assert "/?v1 " not in p.output()
    # STATS (quoted) from the file: the counters are where it says.
    deadline = time.monotonic() + 3
    text = ""
    while time.monotonic() < deadline:
        text = stats.read_text() if stats.exists() else ""
        if re.search(r'reason="version",version="none"\} 1$', text, re.M) and \
                re.search(r'result="untrusted",reason="none",version="none"\} [1-9]', text):  # 0s from the start
            break
        time.sleep(0.05)
    assert re.search(r'^proxyshim_connections_total\{pid="%d",result="rewritten",reason="none",version="2"\} 1$'
                     % p.pid, text, re.M), text
    assert re.search(r'^proxyshim_connections_total\{pid="%d",result="rejected",reason="version",version="none"\} 1$'
                     % p.pid, text, re.M), text


def test_the_environment_wins_over_the_file(procs, tmp_path):
    """The file trusts 127.0.0.2 and allows v1 only; the environment trusts 127.0.0.3 and says
    nothing of versions: 127.0.0.3 is trusted, 127.0.0.2 is not, and v1 only still holds."""
    port = free_port()
    conf = write_conf(tmp_path / "proxyshim.conf", "PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_VERSION=v1")
    p = start_http(procs, tmp_path, port, preload_env(conf, TRUSTED=OTHER))
    v1 = v1_header(("203.0.113.8", 4712), ("127.0.0.1", port))
    assert get(port, "env-trusted", v1, source=OTHER).startswith(b"HTTP/1.0 200")
    assert logged_client(p, "env-trusted") == "203.0.113.8"
    # The file's VERSION still applies: v2 from the trusted peer is refused.
    assert get(port, "env-v2", v2_header(("203.0.113.9", 4713), ("127.0.0.1", port)), source=OTHER) == b""
    wait_reject(p, "version", OTHER)
    # 127.0.0.2, trusted only by the file, is untrusted: its header is data to the program.
    got = get(port, "file-trusted", v1, source=TRUSTED)
    assert b"400 - Bad request" in got, got
    assert re.search(r'^%s - - \[[^]]+\] "PROXY TCP4 203\.0\.113\.8 ' % re.escape(TRUSTED), p.output(), re.M), \
        p.output()
    assert "203.0.113.9" not in p.output()


# ---- a bad file: servers refuse to start, other programs run ----

BAD_FILES = [
    # id, file lines (None: PROXYSHIM_CONFIG names a file that does not exist), the line number,
    # what the logged line must name
    ("bad-number", ["# limits", "PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_TIMEOUT_MS=abc"], 3,
     ["PROXYSHIM_TIMEOUT_MS", "abc"]),
    ("bad-quoted-word", ["PROXYSHIM_TRUSTED=%s" % TRUSTED, "", 'PROXYSHIM_MODE="lenient"'], 3,
     ["PROXYSHIM_MODE", "lenient"]),
    ("bad-cidr", ["PROXYSHIM_TRUSTED=10.0.0.0/33"], 1, ["PROXYSHIM_TRUSTED", "10.0.0.0/33"]),
    ("unknown-key", ["PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_TRUSTD=10.0.0.0/8"], 2,
     ["PROXYSHIM_TRUSTD", "10.0.0.0/8"]),
    ("missing-file", None, None, []),
]


@pytest.mark.parametrize("name,lines,lineno,names", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_refuses_listen_and_leaves_other_programs_alone(procs, tmp_path, name, lines, lineno, names):
    conf = tmp_path / "proxyshim.conf"
    if lines is not None:
        write_conf(conf, *lines)
    env = preload_env(conf)

    # A program that never listens runs as if the shim were not there.
    r = subprocess.run(["/bin/echo", "still", "here"], env=env, capture_output=True, timeout=10)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"still here\n", b""), r

    # A server's listen() fails with EACCES: http.server stops with PermissionError.
    port = free_port()
    p = Proc(http_argv(tmp_path, port), env=env, log_name="http.server")
    procs.append(p)
    try:
        p.p.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("http.server runs with a bad config file:\n" + p.output())
    out = p.output()
    assert p.returncode == 1 and "PermissionError: [Errno 13] Permission denied" in out, out
    assert "Serving HTTP" not in out
    refuse = [l for l in out.splitlines() if l.startswith("proxyshim:")]
    assert len(refuse) == 1, out
    line = refuse[0]
    assert re.match(r'proxyshim: ts=\S+ pid=\d+ level=error event=refuse reason=config detail="', line), line
    where = "%s:%d:" % (conf, lineno) if lineno else str(conf)
    assert where in line, (where, line)
    for n in names:
        assert n in line, (n, line)


# What a bad file refuses: only TCP listens on the ports it covers. A program reports, for each
# socket it tries, listen()'s outcome.
LISTENER = r"""
import errno, json, os, socket, sys
out = {}
def attempt(name, make):
    try:
        s = make()
        s.listen(5)
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def tcp(fam, host, port):
    def make():
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if port is not None:
            s.bind((host, port))
        return s
    return make
def unix():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sys.argv[1])
    return s
covered, other = int(sys.argv[2]), int(sys.argv[3])
attempt("unix", unix)
attempt("tcp_covered", tcp(socket.AF_INET, "127.0.0.1", covered))
attempt("tcp6_covered", tcp(socket.AF_INET6, "::1", covered))
attempt("tcp_other", tcp(socket.AF_INET, "127.0.0.1", other))
attempt("tcp_unbound", tcp(socket.AF_INET, None, None))
print(json.dumps(out))
"""


def dual_free_port():
    """A port free on both 127.0.0.1 and ::1 right now (other test runs share the machine)."""
    import socket
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def listen_outcomes(tmp_path, env, covered, other):
    sock = tmp_path / "s.sock"
    r = subprocess.run(["/usr/bin/python3", "-c", LISTENER, str(sock), str(covered), str(other)], env=env,
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r
    import json
    return json.loads(r.stdout.decode().strip().splitlines()[-1]), r.stderr.decode()


@pytest.mark.parametrize("order", ["typo-first", "ports-first"])
def test_a_bad_file_refuses_only_tcp_listens_on_its_ports(tmp_path, order):
    """/etc/ld.so.preload with a typo beside PROXYSHIM_PORTS=443 used to refuse every listen()
    on the machine, UNIX sockets included (tmux, ssh-agent, dbus). Now only the TCP ports the
    file covers are refused, wherever the typo stands."""
    covered, other = dual_free_port(), free_port()
    lines = ["PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_MODE=stric", "PROXYSHIM_PORTS=%d" % covered]
    if order == "ports-first":
        lines = [lines[2], lines[0], lines[1]]
    conf = write_conf(tmp_path / "proxyshim.conf", *lines)
    got, err = listen_outcomes(tmp_path, preload_env(conf), covered, other)
    assert got == {"unix": "ok", "tcp_covered": "EACCES", "tcp6_covered": "EACCES", "tcp_other": "ok",
                   "tcp_unbound": "ok"}, (got, err)
    assert "PROXYSHIM_MODE='stric'" in err, err


def test_a_bad_file_with_an_unknown_key_still_bounds_its_refusal_by_its_ports(tmp_path):
    covered, other = dual_free_port(), free_port()
    conf = write_conf(tmp_path / "proxyshim.conf", "PROXYSHIM_TRUSTD=10.0.0.0/8", "PROXYSHIM_PORTS=%d" % covered)
    got, err = listen_outcomes(tmp_path, preload_env(conf), covered, other)
    assert got == {"unix": "ok", "tcp_covered": "EACCES", "tcp6_covered": "EACCES", "tcp_other": "ok",
                   "tcp_unbound": "ok"}, (got, err)
    assert "unknown key PROXYSHIM_TRUSTD='10.0.0.0/8' (did you mean PROXYSHIM_TRUSTED?)" in err, err


@pytest.mark.parametrize("ports", [None, "443,70000"])
def test_a_bad_file_without_usable_ports_refuses_every_tcp_listen_and_no_unix_one(tmp_path, ports):
    covered, other = dual_free_port(), free_port()
    lines = ["PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_MODE=stric"]
    if ports:
        lines.append("PROXYSHIM_PORTS=%s" % ports)
    conf = write_conf(tmp_path / "proxyshim.conf", *lines)
    got, err = listen_outcomes(tmp_path, preload_env(conf), covered, other)
    assert got == {"unix": "ok", "tcp_covered": "EACCES", "tcp6_covered": "EACCES", "tcp_other": "EACCES",
                   "tcp_unbound": "EACCES"}, (got, err)


@pytest.mark.parametrize("name,value,hint", [
    ("PROXYSHIM_TRUSTD", "10.0.0.0/8", " (did you mean PROXYSHIM_TRUSTED?)"),
    ("PROXYSHIM_TIMEOUT", "500", " (did you mean PROXYSHIM_TIMEOUT_MS?)"),
    ("PROXYSHIM_SOMETHING_ELSE", "1", ""),
])
def test_an_unknown_variable_stops_the_program_naming_it(name, value, hint):
    env = clean_env(LD_PRELOAD=LIB, PROXYSHIM_TRUSTED=TRUSTED, PROXYSHIM_CONFIG="/nonexistent-but-unused")
    del env["PROXYSHIM_CONFIG"]
    env[name] = value
    r = subprocess.run(["/bin/echo", "ran"], env=env, capture_output=True, timeout=10)
    assert r.returncode == 1 and r.stdout == b"", r
    assert r.stderr.decode() == 'proxyshim: invalid %s="%s": not a proxyshim variable%s\n' % (name, value, hint)


def test_the_project_s_own_variables_are_not_settings_and_not_errors(tmp_path):
    """Names the project's tools put in programs' environments pass (the handoff, the wrapper's
    --check mark, the image's copy entrypoint)."""
    env = clean_env(LD_PRELOAD=LIB, PROXYSHIM_TRUSTED=TRUSTED, PROXYSHIM_CHECK_REEXEC="1",
                    PROXYSHIM_SRC="/proxyshim", PROXYSHIM_DEST="/shared", PROXYSHIM_HANDOFF="1;junk")
    r = subprocess.run(["/bin/echo", "ran"], env=env, capture_output=True, timeout=10)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"ran\n", b""), r


def test_the_wrapper_check_shows_the_file(tmp_path):
    if not os.path.exists(WRAPPER):
        pytest.skip("build/proxyshim is not built")
    conf = write_conf(tmp_path / "proxyshim.conf", "# machine-wide", 'PROXYSHIM_TRUSTED="10.0.0.0/16, 192.0.2.9"',
                      "PROXYSHIM_PORTS=443", "PROXYSHIM_MODE=optional", "PROXYSHIM_STATS=/run/p.prom")

    def check(env):
        r = subprocess.run([WRAPPER, "--check"], env=env, capture_output=True, timeout=10)
        assert r.returncode == 0, r
        return dict(l.split("=", 1) for l in r.stdout.decode().splitlines())

    s = check(clean_env(PROXYSHIM_CONFIG=str(conf), PROXYSHIM_MODE="strict"))
    assert (s["active"], s["PROXYSHIM_TRUSTED"], s["PROXYSHIM_PORTS"], s["PROXYSHIM_MODE"],
            s["PROXYSHIM_STATS"], s["PROXYSHIM_VERSION"], s["config_file"]) == \
        ("yes", "10.0.0.0/16,192.0.2.9/32", "443", "strict", "/run/p.prom", "any", str(conf))
    if not os.path.exists("/etc/proxyshim.conf"):
        assert check(clean_env(PROXYSHIM_TRUSTED="127.0.0.1"))["config_file"] == "none"


# ---- /etc/ld.so.preload with /etc/proxyshim.conf, in a private mount namespace ----

def host_etc_state():
    """What the test must leave as it found: the two files and the mounts on /etc."""
    state = {}
    for f in ("/etc/ld.so.preload", "/etc/proxyshim.conf"):
        try:
            with open(f, "rb") as fh:
                state[f] = fh.read()
        except FileNotFoundError:
            state[f] = None
    with open("/proc/self/mountinfo") as fh:
        state["mounts"] = sorted(l.split()[4] for l in fh if l.split()[4].startswith("/etc"))
    return state


def test_ld_so_preload_and_etc_proxyshim_conf(procs, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("no mount namespace here: %s" % probe.stderr.decode().strip())
    before = host_etc_state()
    # A copy of /etc with the two files, bound over /etc inside the namespace only: nothing
    # is ever written to the host's /etc.
    etc = tmp_path / "etc"
    subprocess.run(["cp", "-a", "/etc", str(etc)], check=True, timeout=30)
    (etc / "ld.so.preload").write_text(os.path.realpath(LIB) + "\n")
    write_conf(etc / "proxyshim.conf", "# from the image", "PROXYSHIM_TRUSTED=%s" % TRUSTED, "PROXYSHIM_VERSION=v2")
    port = free_port()
    script = 'set -e; mount --bind "$1" /etc; shift; /bin/echo namespace-ready; exec "$@"'
    try:
        p = start_http(procs, tmp_path, port, clean_env(),
                       prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(etc)])
        assert "namespace-ready" in p.output()
        # The server has the library without LD_PRELOAD in its environment.
        with open("/proc/%d/environ" % p.pid, "rb") as f:
            environ = f.read().split(b"\0")
        assert not [e for e in environ if e.startswith(b"LD_PRELOAD=") or e.startswith(b"PROXYSHIM_")], environ
        with open("/proc/%d/maps" % p.pid) as f:
            assert os.path.realpath(LIB) in f.read()

        got = get(port, "preload", v2_header(("203.0.113.77", 4711), ("127.0.0.1", port)))
        assert got.startswith(b"HTTP/1.0 200"), got
        assert logged_client(p, "preload") == "203.0.113.77"
        # /etc/proxyshim.conf's VERSION=v2 holds: v1 from the trusted peer is refused.
        assert get(port, "v1", v1_header(("203.0.113.78", 4712), ("127.0.0.1", port))) == b""
        wait_reject(p, "version", TRUSTED)
        assert get(port, "direct", source=OTHER).startswith(b"HTTP/1.0 200")
        assert logged_client(p, "direct") == OTHER
        # Meanwhile the host's programs are untouched.
        with open("/proc/self/maps") as f:
            assert "libproxyshim" not in f.read()
        r = subprocess.run(["cat", "/proc/self/maps"], env=clean_env(), capture_output=True, timeout=10)
        assert b"libproxyshim" not in r.stdout
    finally:
        for q in procs:
            q.stop()
        after = host_etc_state()
        assert after == before, "the host's /etc changed: %r -> %r" % (before, after)
    shutil.rmtree(str(etc), ignore_errors=True)
