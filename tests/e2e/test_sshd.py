"""Real OpenSSH sshd (Debian's openssh-server) under the shim. sshd accepts, forks, moves the
connection to fd 0 and re-executes itself (-R) for every connection; the new image logs
"Connection from ADDR port N on LADDR port M" from getpeername()/getsockname() on dup(0). The
address it logs must be the header's, in both consume modes: the exec handoff carries it
(accept mode) or the still-pending header (lazy mode) into the new image."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from util import Proc, connect_from, free_port, shim_env, v1_header, v2_header

SSHD = "/usr/sbin/sshd"
TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
SRC = ("203.0.113.9", 4711)
IDENT = b"SSH-2.0-test\r\n"

pytestmark = [pytest.mark.apps,
              pytest.mark.skipif(not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None,
                                 reason="openssh-server is not installed (apt-get install openssh-server)")]


@pytest.fixture
def sshd(procs, tmp_path):
    """sshd(**PROXYSHIM_vars) starts sshd -D -e under the shim on a free loopback port and
    returns (Proc, port) once it listens."""
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=20)
    # sshd's privilege separation directory; Debian's package makes it at boot, not at install
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def start(**env):
        port = free_port()
        cfg = tmp_path / ("sshd_config_%d" % port)
        cfg.write_text("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile %s\nUsePAM no\n"
                       % (port, key, tmp_path / ("sshd_%d.pid" % port)))
        env.setdefault("TRUSTED", TRUSTED)
        p = Proc([SSHD, "-D", "-e", "-o", "LogLevel=VERBOSE", "-f", str(cfg)],
                 env=shim_env(**env), log_name="sshd")
        procs.append(p)
        p.wait_output("Server listening on 127.0.0.1 port %d" % port, timeout=10)
        return p, port
    return start


def read_line(s):
    got = b""
    while not got.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        got += b
    return got


def ssh_client(port, data, source=TRUSTED, delay=0.0):
    """Sends data (header and/or identification) after delay seconds, returns sshd's
    identification line and the client's own address."""
    s = connect_from(port, source, timeout=10)
    try:
        me = s.getsockname()
        if delay:
            time.sleep(delay)
        s.sendall(data)
        return read_line(s), me
    finally:
        s.close()


def conn_log(port, addr, aport, laddr="127.0.0.1", lport=None):
    return 'Connection from %s port %d on %s port %d rdomain ""' % (addr, aport, laddr, lport or port)


@pytest.mark.parametrize("delay", [0.0, 0.3], ids=["header_at_once", "header_after_accept"])
@pytest.mark.parametrize("consume", ["accept", "lazy"])
def test_sshd_logs_the_header_source(sshd, consume, delay):
    # header_after_accept: the header comes 0.3 s after the connection, so in lazy mode it is
    # still pending when sshd forks and re-executes, and the new image's getpeername() takes it.
    p, port = sshd(CONSUME=consume, TIMEOUT_MS=3000)
    ident, me = ssh_client(port, v2_header(SRC, ("127.0.0.1", port)) + IDENT, delay=delay)
    assert ident.startswith(b"SSH-2.0-OpenSSH_"), ident
    out = p.wait_output(conn_log(port, *SRC))
    assert "Connection from %s" % TRUSTED not in out
    assert "event=reject" not in out


def test_sshd_v1_header(sshd):
    p, port = sshd()
    ident, me = ssh_client(port, v1_header(SRC, ("127.0.0.1", port)) + IDENT)
    assert ident.startswith(b"SSH-2.0-OpenSSH_"), ident
    p.wait_output(conn_log(port, *SRC))


@pytest.mark.parametrize("consume", ["accept", "lazy"])
def test_sshd_local_addr_header(sshd, consume):
    # PROXYSHIM_LOCAL_ADDR=header: sshd's "on ADDR port N" (getsockname()) is the header's
    # destination, the address the client dialled.
    p, port = sshd(CONSUME=consume, LOCAL_ADDR="header")
    ident, me = ssh_client(port, v2_header(SRC, ("198.51.100.20", 22)) + IDENT)
    assert ident.startswith(b"SSH-2.0-OpenSSH_"), ident
    p.wait_output(conn_log(port, *SRC, laddr="198.51.100.20", lport=22))


@pytest.mark.parametrize("consume", ["accept", "lazy"])
def test_sshd_untrusted_peer_logged_as_itself(sshd, consume):
    p, port = sshd(CONSUME=consume)
    ident, me = ssh_client(port, v2_header(SRC, ("127.0.0.1", port)) + IDENT, source=UNTRUSTED)
    assert ident.startswith(b"SSH-2.0-OpenSSH_"), ident
    out = p.wait_output(conn_log(port, UNTRUSTED, me[1]))
    assert "Connection from %s" % SRC[0] not in out


def test_sshd_lazy_header_only_after_the_banner_is_a_timeout(sshd):
    """Documented limit. A client that sends the header only after it has read sshd's banner
    never gets the banner: the re-executed sshd calls getpeername() (to log the connection)
    before it writes its banner, and in lazy mode getpeername() waits for the header up to
    PROXYSHIM_TIMEOUT_MS. Then the shim refuses the connection (reason=timeout): the client
    sees EOF without a byte, sshd logs no connection. The address is needed before the banner,
    so no shim could do better; a balancer in front of sshd must send the header at connect."""
    p, port = sshd(CONSUME="lazy", TIMEOUT_MS=1000)
    s = connect_from(port, TRUSTED, timeout=10)
    me = s.getsockname()
    t0 = time.monotonic()
    try:
        first = s.recv(100)
    except ConnectionResetError:
        first = b"<reset>"
    waited = time.monotonic() - t0
    s.close()
    assert first == b"", first
    assert 1.0 <= waited < 5, waited
    out = p.wait_output("event=reject reason=timeout peer=%s:%d port=%d" % (me[0], me[1], port))
    assert "Connection from" not in out
    # sshd itself goes on: the next client, header first, is logged with its header's source
    ident, _ = ssh_client(port, v2_header(SRC, ("127.0.0.1", port)) + IDENT)
    assert ident.startswith(b"SSH-2.0-OpenSSH_")
    p.wait_output(conn_log(port, *SRC))
