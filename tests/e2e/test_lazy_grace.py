"""PROXYSHIM_LAZY_GRACE_MS (issue 14, part 2): in lazy mode a trusted connection whose header has
not arrived at accept() is parked for the grace, so that a server which takes the client's
address from accept() and speaks first (Exim, Dovecot) still gets the header's client when the
balancer sends the header at connect (HAProxy send-proxy). A header that comes later than the
grace is taken by the first read, as before.

Part 1: Exim (exim4 -bdf) and Dovecot (imap) under the shim in lazy mode behind HAProxy
(send-proxy and send-proxy-v2): each server's own log must name the header's client in every
one of N connections, each from its own client address.
Part 2: tests/e2e/progs/lazygrace.c (speaks first, prints what accept() said and when, blocking
or a non-blocking listener in epoll): a header within the grace is taken at accept(); one after
it leaves the connection pending with the balancer's address and the first read takes it; the
event loop is never blocked; 0 is the old behaviour; refusals during the grace."""
import os
import re
import shutil
import socket
import tempfile
import time

import pytest

from util import (BUILD, Proc, connect_from, free_port, haproxy, printed_json, recv_all, shim_env,
                  start_listening, v1_header, v2_header, wait_json, wait_port)

LAZYGRACE = os.path.join(BUILD, "progs", "lazygrace")
TRUSTED = "127.0.0.2"
BANNER = b"220 lazygrace\r\n"
SRC = ("203.0.113.61", 6161)
SRC_B = ("203.0.113.62", 6262)
DST = ("198.51.100.61", 25)
PAYLOAD = b"EHLO grace.example\r\n" + bytes(range(256)) + b"\r\nQUIT\r\n"
N = 20  # connections per server and header version


def need(path):
    assert os.path.exists(path), "%s is not installed (tests/deps.sh installs it)" % path
    return path


def wait_for(read, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if pred(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def read_file(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# ---- part 1: Exim and Dovecot behind HAProxy, the header sent at connect ----

EXIM_CONF = """
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
keep_environment = ^PROXYSHIM_ : LD_PRELOAD
primary_hostname = grace.test
qualify_domain = grace.test
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
log_file_path = {d}/%slog
log_selector = +smtp_connection +incoming_port
spool_directory = {d}/spool
pid_file_path = {d}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  deny
"""

DOVECOT_CONF = """
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
login_log_format_elements = user=<%u> rip=%r rport=%{{rport}} lip=%l %c
import_environment = TZ LD_PRELOAD {shimvars}
passdb {{
  driver = static
  args = password=unused
}}
userdb {{
  driver = static
  args = uid=dovenull gid=dovenull home={d}/home
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"""


class Exim:
    """exim4 -bdf (the daemon in the foreground), SMTP on 127.0.0.1:port, no DNS and no ident
    callbacks; its mainlog says "SMTP connection from [IP]:PORT" for each connection, with the
    address accept() gave it."""
    name = "exim"
    hello = b"220 "
    bye = b"QUIT\r\n"

    def __init__(self, procs, env):
        self.port = free_port()
        self.d = tempfile.mkdtemp(prefix="proxyshim-grace-exim-")
        procs.append(_Rm(self.d))
        os.chmod(self.d, 0o755)
        shutil.chown(self.d, "Debian-exim", "Debian-exim")  # exim creates its logs as its user
        conf = os.path.join(self.d, "exim.conf")
        with open(conf, "w") as f:
            f.write(EXIM_CONF.format(d=self.d, port=self.port))
        self.p = Proc([need("/usr/sbin/exim4"), "-C", conf, "-bdf", "-oX", str(self.port)], env=env,
                      log_name="exim")
        procs.append(self.p)
        wait_port(self.port, proc=self.p, probe=False)

    def log(self):
        return read_file(os.path.join(self.d, "mainlog"))

    def reported(self):
        """The (ip, port) of each connection, in the log's order."""
        return [(m.group(1), int(m.group(2))) for m in
                re.finditer(r"SMTP connection from \[([^\]]+)\]:(\d+) \(TCP/IP connection count", self.log())]


class Dovecot:
    """dovecot -F, IMAP on 127.0.0.1:port; the login process (which accept()s, having inherited
    the listener) logs "rip=IP rport=PORT" for each connection. Dovecot clears its children's
    environment: import_environment hands the shim's variables on."""
    name = "dovecot"
    hello = b"* OK "
    bye = b"a LOGOUT\r\n"

    def __init__(self, procs, env):
        self.port = free_port()
        self.d = tempfile.mkdtemp(prefix="proxyshim-grace-dovecot-")
        procs.append(_Rm(self.d))
        os.chmod(self.d, 0o755)
        conf = os.path.join(self.d, "dovecot.conf")
        shimvars = " ".join(sorted(k for k in env if k.startswith("PROXYSHIM_")))
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(d=self.d, port=self.port, shimvars=shimvars))
        self.p = Proc([need("/usr/sbin/dovecot"), "-F", "-c", conf], env=env, log_name="dovecot")
        procs.append(self.p)
        wait_port(self.port, proc=self.p, probe=False)

    def log(self):
        return read_file(os.path.join(self.d, "dovecot.log"))

    def reported(self):
        return [(m.group(1), int(m.group(2))) for m in
                re.finditer(r"imap-login: Info: .*\brip=([^,\s]+), rport=(\d+)", self.log())]


class _Rm:
    def __init__(self, d):
        self.d = d

    def stop(self):
        shutil.rmtree(self.d, ignore_errors=True)


def front(procs, tmp_path, server_port):
    """HAProxy in front of the server: one frontend per header version, sending from TRUSTED
    with the header at connect; the real client's address (127.0.0.x) is the header's."""
    ports, cfg = {}, ""
    for v, opt in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
        ports[v] = free_port()
        cfg += ("frontend fe-%s\n    bind 127.0.0.1:%d\n    default_backend be-%s\n\n"
                "backend be-%s\n    server s1 127.0.0.1:%d %s source %s\n\n"
                % (v, ports[v], v, v, server_port, opt, TRUSTED))
    h = haproxy(cfg, str(tmp_path), name="haproxy-grace")
    procs.append(h)
    for p in ports.values():
        wait_port(p, proc=h, probe=False)
    return ports


def client_session(port, source, srv):
    """Connects from source, waits for the banner (at most 3 s), says goodbye, reads to EOF;
    returns (the client's own (ip, port), what the header carries; the banner, or b"" when it
    did not come)."""
    s = connect_from(port, source, timeout=3)
    try:
        me = s.getsockname()[:2]
        got = b""
        try:
            while b"\n" not in got:
                b = s.recv(4096)
                if not b:
                    break
                got += b
        except socket.timeout:
            return me, b""
        s.sendall(srv.bye)
        recv_all(s)
        return me, got
    finally:
        s.close()


def run_clients(procs, tmp_path, kind, version, **shim):
    """N connections through HAProxy to the server under the shim (lazy mode); returns (the
    header's clients, what the server logged for them, the server)."""
    env = shim_env(TRUSTED=TRUSTED, CONSUME="lazy", **shim)
    srv = (Exim if kind == "exim" else Dovecot)(procs, env)
    fport = front(procs, tmp_path, srv.port)[version]
    sessions = [client_session(fport, "127.0.0.%d" % (10 + i), srv) for i in range(N)]
    sent = [me for me, _ in sessions]
    silent = [(me, banner) for me, banner in sessions if not banner.startswith(srv.hello)]
    text = wait_for(srv.log, lambda t: len(srv.reported()) >= N)
    got = srv.reported()
    assert len(got) == N, "%d connections logged of %d:\n%s" % (len(got), N, text)
    return sent, got, silent


@pytest.mark.apps
@pytest.mark.time_limit(120)
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("kind", ["exim", "dovecot"])
def test_speak_first_server_logs_the_header_client_every_time(procs, tmp_path, kind, version):
    """The default grace: every connection logged with its header's client (not 127.0.0.2)."""
    sent, got, silent = run_clients(procs, tmp_path, kind, version)
    right = sum(1 for a in sent if a in got)
    assert right == N, "%s %s: the header's client logged in %d of %d connections; logged: %s" % (
        kind, version, right, N, got)
    assert sorted(got) == sorted(sent)
    assert not silent, silent


@pytest.mark.apps
@pytest.mark.time_limit(120)
@pytest.mark.parametrize("kind", ["exim", "dovecot"])
def test_speak_first_server_grace_zero_is_the_old_behaviour(procs, tmp_path, kind, capsys):
    """PROXYSHIM_LAZY_GRACE_MS=0: accept() returns at once, as before the grace existed. Each
    connection is served and logged either with its header's client (the header was there at
    accept()) or with the balancer's address (it was not): nothing else. The count is printed
    (-s) for the record, with the connections that got no banner within 3 s (Exim: its check
    for clients that talk before the banner saw the header's bytes, and its read then waited
    for bytes that this client sends only after the banner)."""
    sent, got, silent = run_clients(procs, tmp_path, kind, "v2", LAZY_GRACE_MS=0)
    right = sum(1 for a in sent if a in got)
    others = [a for a in got if a not in sent and a[0] != TRUSTED]
    assert not others, got
    with capsys.disabled():
        print("\n%s, grace 0: the header's client logged in %d of %d connections, %d without a "
              "banner" % (kind, right, N, len(silent)))


# ---- part 2: the lazygrace program, the client writing its own header ----

@pytest.fixture
def lg(procs):
    """lg(*options, **PROXYSHIM_vars): lazygrace under the shim in lazy mode, trusting 127.0.0.2;
    returns (Proc, port)."""
    def start(*args, **env):
        env.setdefault("TRUSTED", TRUSTED)
        env.setdefault("CONSUME", "lazy")
        p, port = start_listening([LAZYGRACE] + list(args), env=shim_env(**env), log_name="lazygrace")
        procs.append(p)
        return p, port
    return start


MODES = {"blocking": [], "nonblocking": ["--nonblock"]}


def now_ms():
    return time.monotonic() * 1000


def addr(a):
    return (a.get("addr"), a.get("port"))


def events(p, ev):
    return [d for d in printed_json(p) if d.get("ev") == ev]


def conn_line(p, n):
    (line,) = [d for d in wait_json(p, lambda d: d.get("ev") == "conn" and d["n"] == n)
               if d.get("ev") == "conn" and d["n"] == n]
    return line


def accept_line(p, n):
    (line,) = [d for d in wait_json(p, lambda d: d.get("ev") == "accept" and d["n"] == n)
               if d.get("ev") == "accept" and d["n"] == n]
    return line


def read_banner(s):
    got = b""
    while len(got) < len(BANNER):
        b = s.recv(len(BANNER) - len(got))
        if not b:
            break
        got += b
    return got


def finish(s, data=b""):
    """Sends data, half-closes, reads to EOF; returns what came."""
    try:
        if data:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = recv_all(s)
    s.close()
    return got


def no_wait_in_accept(p, limit=100.0):
    """No accept() or accept4() call of the program took longer than limit ms."""
    slow = [d for d in printed_json(p) if d.get("ev") in ("accept", "eagain") and d["took_ms"] > limit]
    assert not slow, slow


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_header_within_the_grace_is_taken_by_accept(lg, mode, version):
    """The header 0.2 s after connect, the grace 1.5 s: accept() hands the connection over once
    the header is there, rewritten, not at the grace's end; the program reads only payload."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=1500, TIMEOUT_MS=5000)
    hdr = (v1_header if version == 1 else v2_header)(SRC, DST)
    s = connect_from(port, TRUSTED, timeout=10)
    t0 = now_ms()
    time.sleep(0.2)
    s.sendall(hdr)
    assert read_banner(s) == BANNER
    finish(s, PAYLOAD)
    acc = accept_line(p, 1)
    assert addr(acc["addr"]) == SRC, acc
    assert 190 <= acc["t"] - t0 < 1200, (acc, t0)  # when the header came, not at the grace's end
    line = conn_line(p, 1)
    assert line["error"] is None and bytes.fromhex(line["hex"]) == PAYLOAD, line
    assert addr(line["peer"]) == SRC, line
    if mode == "nonblocking":
        no_wait_in_accept(p)


@pytest.mark.parametrize("mode", list(MODES))
def test_header_after_the_grace_is_pending_and_read_first(lg, mode):
    """The header 0.5 s after connect, the grace 0.2 s: at the grace's end accept() returns the
    connection pending with the balancer's address (the banner goes out then, not before); the
    first read takes the header and returns only payload, every byte; getpeername() then
    gives the header's client."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=200, TIMEOUT_MS=5000)
    s = connect_from(port, TRUSTED, timeout=10)
    me = s.getsockname()[:2]
    t0 = now_ms()
    assert read_banner(s) == BANNER
    waited = now_ms() - t0
    assert 190 <= waited < 1000, waited  # held for the grace, then handed over
    time.sleep(0.3)
    assert finish(s, v2_header(SRC, DST) + PAYLOAD) == b""
    acc = accept_line(p, 1)
    assert addr(acc["addr"]) == me, acc
    line = conn_line(p, 1)
    assert line["error"] is None and bytes.fromhex(line["hex"]) == PAYLOAD, line
    assert addr(line["peer"]) == SRC, line
    if mode == "nonblocking":
        no_wait_in_accept(p)
        # the grace's end woke the loop: the shim's timer, through the program's own epoll
        assert [w for w in events(p, "wake") if w["t"] - t0 >= 190], printed_json(p)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_parked_connection_blocks_nothing(lg, mode):
    """A connects and sends nothing; B connects 0.1 s later with its header. B is accepted at
    once, A stays parked and is accepted when its header comes (0.6 s), rewritten, long before
    the grace's end (3 s). Non-blocking: no accept4() call waits; the one that parks A says
    EAGAIN at once."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=3000, TIMEOUT_MS=5000)
    a = connect_from(port, TRUSTED, timeout=10)
    t0 = now_ms()
    time.sleep(0.1)
    b = connect_from(port, TRUSTED, timeout=10)
    b.sendall(v2_header(SRC_B, DST))
    assert read_banner(b) == BANNER
    tb = now_ms() - t0
    finish(b, PAYLOAD)
    time.sleep(0.5)
    a.sendall(v1_header(SRC, DST))
    assert read_banner(a) == BANNER
    finish(a, PAYLOAD)
    first, second = accept_line(p, 1), accept_line(p, 2)
    assert addr(first["addr"]) == SRC_B, printed_json(p)
    assert tb < 500, tb
    assert addr(second["addr"]) == SRC, printed_json(p)
    assert 550 <= second["t"] - t0 < 2500, (second, t0)
    for n, src in ((1, SRC_B), (2, SRC)):
        line = conn_line(p, n)
        assert bytes.fromhex(line["hex"]) == PAYLOAD and addr(line["peer"]) == src, line
    if mode == "nonblocking":
        no_wait_in_accept(p)
        early = [e for e in events(p, "eagain") if e["t"] - t0 < 100]
        assert early, printed_json(p)  # A's arrival woke the loop; accept4() parked it: EAGAIN


@pytest.mark.parametrize("mode", list(MODES))
def test_grace_zero_returns_at_once_as_before(lg, mode):
    """PROXYSHIM_LAZY_GRACE_MS=0: accept() returns the connection at once, pending, with the
    balancer's address; the first read takes the header that comes 0.3 s later."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=0, TIMEOUT_MS=5000)
    s = connect_from(port, TRUSTED, timeout=10)
    me = s.getsockname()[:2]
    t0 = now_ms()
    assert read_banner(s) == BANNER
    assert now_ms() - t0 < 200  # no grace (the default would hold it 250 ms)
    time.sleep(0.3)
    finish(s, v2_header(SRC, DST) + PAYLOAD)
    assert addr(accept_line(p, 1)["addr"]) == me
    line = conn_line(p, 1)
    assert bytes.fromhex(line["hex"]) == PAYLOAD and addr(line["peer"]) == SRC, line


@pytest.mark.parametrize("what", ["garbage", "close"])
@pytest.mark.parametrize("mode", list(MODES))
def test_strict_refusal_during_the_grace(lg, mode, what):
    """Strict mode: bytes that cannot start a header, or a close, 0.1 s into the grace: the
    connection is refused (logged) and never reaches the program, which goes on with the next
    one."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=2000, TIMEOUT_MS=5000)
    s = connect_from(port, TRUSTED, timeout=10)
    time.sleep(0.1)
    got = finish(s, b"EHLO client.example\r\n" if what == "garbage" else b"")
    assert got == b""  # no banner: the program never had it
    reason = "missing" if what == "garbage" else "eof"
    wait_for(p.output, lambda t: "event=reject reason=" in t, timeout=5)
    assert "event=reject reason=%s" % reason in p.output(), p.output()
    s = connect_from(port, TRUSTED, timeout=10)
    s.sendall(v2_header(SRC, DST))
    assert read_banner(s) == BANNER
    finish(s, PAYLOAD)
    assert addr(accept_line(p, 1)["addr"]) == SRC
    assert len(events(p, "accept")) == 1


@pytest.mark.parametrize("mode", list(MODES))
def test_optional_mode_garbage_during_the_grace_passes(lg, mode):
    """Optional mode: bytes that cannot start a header, 0.1 s into the grace: handed over at
    once with the real address, every byte kept."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=2000, TIMEOUT_MS=5000, MODE="optional")
    s = connect_from(port, TRUSTED, timeout=10)
    me = s.getsockname()[:2]
    t0 = now_ms()
    time.sleep(0.1)
    s.sendall(PAYLOAD)
    assert read_banner(s) == BANNER
    assert now_ms() - t0 < 1000
    finish(s)
    assert addr(accept_line(p, 1)["addr"]) == me
    line = conn_line(p, 1)
    assert bytes.fromhex(line["hex"]) == PAYLOAD and addr(line["peer"]) == me, line


@pytest.mark.parametrize("mode", list(MODES))
def test_at_max_parked_the_next_one_is_returned_pending(lg, mode):
    """PROXYSHIM_MAX_PARKED=1: A holds the only place; B, without its header either, is returned
    at once, pending, with the balancer's address (lazy mode closes nothing for the cap), and
    its first read takes its header; A still gets its header's client from accept()."""
    p, port = lg(*MODES[mode], LAZY_GRACE_MS=3000, TIMEOUT_MS=5000, MAX_PARKED=1)
    a = connect_from(port, TRUSTED, timeout=10)
    t0 = now_ms()
    time.sleep(0.1)
    b = connect_from(port, TRUSTED, timeout=10)
    me_b = b.getsockname()[:2]
    assert read_banner(b) == BANNER
    assert now_ms() - t0 < 1000
    finish(b, v2_header(SRC_B, DST) + PAYLOAD)
    a.sendall(v2_header(SRC, DST))
    assert read_banner(a) == BANNER
    finish(a, PAYLOAD)
    first, second = accept_line(p, 1), accept_line(p, 2)
    assert addr(first["addr"]) == me_b and addr(second["addr"]) == SRC, printed_json(p)
    for n, src in ((1, SRC_B), (2, SRC)):
        line = conn_line(p, n)
        assert bytes.fromhex(line["hex"]) == PAYLOAD and addr(line["peer"]) == src, line
    assert "reason=overflow" not in p.output()


@pytest.mark.parametrize("mode", list(MODES))
def test_inherited_listener_in_epoll_wakes_for_its_parked_connection(procs, mode):
    """A listener inherited already listening (Dovecot's login processes get theirs from the
    master through exec) and watched with epoll before any accept(): the parked connection
    still wakes the program's loop when its header comes, and at the grace's end."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    # the listener as the program's fd 0, as inetd's wait-mode servers get theirs
    p = Proc([LAZYGRACE, *MODES[mode], "--listen-fd", "0"],
             env=shim_env(TRUSTED=TRUSTED, CONSUME="lazy", LAZY_GRACE_MS=1500, TIMEOUT_MS=5000),
             log_name="lazygrace", stdin=lsock.fileno())
    procs.append(p)
    port = lsock.getsockname()[1]
    wait_for(p.output, lambda t: "listening" in t, timeout=5)
    lsock.close()
    time.sleep(0.1)  # the program is in epoll_wait()/accept() before the connection comes
    # the header 0.2 s late: taken by accept(), not later
    s = connect_from(port, TRUSTED, timeout=10)
    t0 = now_ms()
    time.sleep(0.2)
    s.sendall(v2_header(SRC, DST))
    assert read_banner(s) == BANNER
    assert now_ms() - t0 < 1000
    finish(s, PAYLOAD)
    acc = accept_line(p, 1)
    assert addr(acc["addr"]) == SRC, printed_json(p)
    # no header: handed over at the grace's end, not when the next connection comes
    s = connect_from(port, TRUSTED, timeout=10)
    me = s.getsockname()[:2]
    t0 = now_ms()
    assert read_banner(s) == BANNER
    assert 1400 <= now_ms() - t0 < 3000
    finish(s, v2_header(SRC_B, DST) + PAYLOAD)
    assert addr(accept_line(p, 2)["addr"]) == me
    line = conn_line(p, 2)
    assert bytes.fromhex(line["hex"]) == PAYLOAD and addr(line["peer"]) == SRC_B, line
