"""Inert means inert: a shim with no trusted set, or loaded into a program under secure
execution (set-uid, AT_SECURE), adopts nothing from PROXYSHIM_HANDOFF and rewrites nothing,
however the variable was crafted; it still removes the variable from the environment.

The crafted variable is what an attacker would write: the entry layout of shim/core/handoff.c
(fd:inode:hex of flags, version, command, real-peer hash, peer, local), naming fd 0 with its
real inode and the real peer's hash, so that an adopting shim would answer 6.6.6.6:666."""
import json
import os
import pathlib
import shutil
import socket
import stat
import struct
import subprocess
import tempfile

import pytest

from util import BUILD, LIB

EXECER = os.path.join(BUILD, "progs", "execer")
SPOOF = ("6.6.6.6", 666)


def sa_hash_v4(ip, port):
    """shim_sa_hash() of an IPv4 peer (shim/core/addr.c), on this little-endian machine."""
    s_addr = struct.unpack("<I", socket.inet_aton(ip))[0]
    sin_port = struct.unpack("<H", struct.pack("!H", port))[0]
    h = (socket.AF_INET << 48 | s_addr << 16 | sin_port) & (2 ** 64 - 1)
    h = (h * 0x9E3779B97F4A7C15) & (2 ** 64 - 1)
    return ((h >> 32) ^ h) & 0xFFFFFFFF


def shim_addr(ip, port):
    return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(12)


def crafted_handoff(fd, sock, real_peer):
    wire = struct.pack("<BBBI", 1, 2, 1, sa_hash_v4(*real_peer)) + shim_addr(*SPOOF) + \
        shim_addr("198.51.100.1", 443)
    assert len(wire) == 47
    return "1;%d:%d:%s" % (fd, os.fstat(sock.fileno()).st_ino, wire.hex())


@pytest.fixture
def conn():
    """A real TCP connection on loopback: (the accepted socket, its real peer)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname())
    a, peer = ls.accept()
    ls.close()
    yield a, peer
    a.close()
    c.close()


def run_child(sock, env, prefix=(), argv0=EXECER):
    r = subprocess.run(list(prefix) + [argv0, "--child"], stdin=sock.fileno(), env=env,
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r
    lines = [json.loads(l) for l in r.stdout.decode().splitlines() if l.startswith("{")]
    assert len(lines) == 1, r
    return lines[0], r.stderr.decode()


def peer(d):
    return (d.get("addr"), d.get("port"))


def test_the_crafted_variable_is_adopted_by_an_active_shim(conn):
    """The control: the variable is well formed, so an active shim would take it (as the
    handoff between two of its own images needs); the tests below are about who may."""
    sock, real = conn
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": LIB, "PROXYSHIM_TRUSTED": "127.0.0.1",
           "PROXYSHIM_HANDOFF": crafted_handoff(0, sock, real)}
    child, _ = run_child(sock, env)
    assert peer(child["peer0"]) == SPOOF, child


def test_without_a_trusted_set_nothing_is_adopted(conn):
    sock, real = conn
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": LIB, "PROXYSHIM_HANDOFF": crafted_handoff(0, sock, real)}
    child, err = run_child(sock, env)
    assert peer(child["peer0"]) == real, child
    assert peer(child["peer_dup"]) == real, child
    assert child["handoff_env"] is False and not [e for e in child["environ"] if e.startswith("PROXYSHIM_")], child
    assert err == ""


def test_set_uid_program_under_ld_so_preload_adopts_nothing(conn, tmp_path, request):
    """/etc/ld.so.preload loads the shim into set-uid programs, whose environment the invoking
    user writes: PROXYSHIM_TRUSTED and PROXYSHIM_HANDOFF both. In a private mount namespace (a
    copy of /etc bound over /etc), an unprivileged user runs a set-uid copy of execer."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace, a set-uid file and another user")
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            pytest.skip("%s is missing" % tool)
    sock, real = conn
    # A directory any user can reach (pytest's tmp_path is root's alone), on a filesystem
    # that honours set-uid bits.
    d = pathlib.Path(tempfile.mkdtemp(prefix="proxyshim-suid-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(str(d), ignore_errors=True))
    os.chmod(str(d), 0o755)
    prog = d / "execer"
    shutil.copy(EXECER, str(prog))
    lib = d / "libproxyshim.so"
    shutil.copy(LIB, str(lib))
    os.chmod(str(lib), 0o755)
    os.chown(str(prog), 0, 0)
    os.chmod(str(prog), 0o4755)
    assert os.stat(str(prog)).st_mode & stat.S_ISUID
    etc = tmp_path / "etc"
    subprocess.run(["cp", "-a", "/etc", str(etc)], check=True, timeout=60)
    (etc / "ld.so.preload").write_text(str(lib) + "\n")
    try:
        os.unlink(str(etc / "proxyshim.conf"))
    except FileNotFoundError:
        pass
    env = {"PATH": "/usr/bin:/bin", "PROXYSHIM_TRUSTED": "*", "PROXYSHIM_LOG": "debug",
           "PROXYSHIM_HANDOFF": crafted_handoff(0, sock, real)}
    script = 'set -e; mount --bind "$1" /etc; shift; exec "$@"'
    ns = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(etc),
          "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The control first: the same set-up without the set-uid bit is an ordinary program of
    # that user, so the shim is active and takes the variable. This proves the library is
    # loaded from /etc/ld.so.preload and the variable is one it would adopt.
    os.chmod(str(prog), 0o755)
    child, err_control = run_child(sock, env, prefix=ns, argv0=str(prog))
    assert peer(child["peer0"]) == SPOOF, child
    os.chmod(str(prog), 0o4755)
    child, err = run_child(sock, env, prefix=ns, argv0=str(prog))
    assert peer(child["peer0"]) == real, child
    assert peer(child["peer_dup"]) == real, child
    assert child["handoff_env"] is False, child
    # At debug, every process the library starts in says event=start (setpriv here too): the
    # set-uid program's own line, in the control's, is the one missing; nothing else is said.
    starts = [l for l in err.splitlines() if "event=start" in l]
    assert len(starts) == len([l for l in err_control.splitlines() if "event=start" in l]) - 1, \
        (err_control, err)
    assert "proxyshim" not in "".join(l for l in err.splitlines() if l not in starts), err
