"""Exec handoff (shim/preload/exec.c): a process holding a rewritten or pending connection on
fd 0 runs a new image through each exec function (tests/e2e/progs/execer.c); the new image sees
the header's source on fd 0 and on dup(0), its environment is exactly what the caller passed
(PROXYSHIM_HANDOFF removed at load), the caller's environment is untouched, and an fd that is
no longer the same socket is not adopted."""
import os
import random
import socket
import time

import pytest

from util import BUILD, LIB, connect_from, start_listening, v2_header, wait_json

EXECER = os.path.join(BUILD, "progs", "execer")
TRUSTED = "127.0.0.2"
SRC = ("203.0.113.9", 4711)
DST = ("198.51.100.20", 443)
ALL_HOWS = ["execv", "execvp", "execve", "execvpe", "execl", "execlp", "execle", "fexecve",
            "posix_spawn", "posix_spawnp"]
FAIL_ERRNO = {"fexecve": "EINVAL"}  # the made-to-fail call: fexecve(-1, ...); others: no such file


def base_env(**extra):
    """A small, exact environment: what the child must get back, no more, no less."""
    env = {"PATH": os.path.dirname(EXECER) + ":/usr/bin:/bin", "LD_PRELOAD": LIB,
           "PROXYSHIM_TRUSTED": TRUSTED, "EXECER_MARK": "kept as is"}
    env.update({("PROXYSHIM_" + k if not k.startswith("PROXYSHIM_") else k): str(v)
                for k, v in extra.items()})
    return env


@pytest.fixture
def execer(procs):
    def start(*args, env):
        p, port = start_listening([EXECER] + list(args), env=env, log_name="execer")
        procs.append(p)
        return p, port
    return start


def addr(a):
    return (a.get("addr"), a.get("port"))


def role(lines, name):
    got = [l for l in lines if l.get("role") == name]
    assert len(got) == 1, lines
    return got[0]


def check_parent(lines, how):
    parent = role(lines, "parent")
    assert parent["failed_call"] == {"ret": -1, "errno": FAIL_ERRNO.get(how, "ENOENT"),
                                     "environ_unchanged": True}, parent
    assert parent["handoff_env"] is False
    if how.startswith("posix_spawn"):
        after = role(lines, "parent_after")
        assert after == {"role": "parent_after", "spawn": "0", "status": 0,
                         "environ_unchanged": True, "handoff_env": False}, after
    return parent


def env_list(env):
    return sorted("%s=%s" % kv for kv in env.items())


@pytest.mark.parametrize("how", ALL_HOWS)
def test_handoff_through_every_exec_function(execer, how):
    env = base_env()
    p, port = execer("--how", how, env=env)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST) + b"hello")
    lines = wait_json(p, lambda d: d.get("role") == ("parent_after" if how.startswith("posix") else "child"))
    s.close()
    parent = check_parent(lines, how)
    assert addr(parent["accept"]) == SRC
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC, child
    assert addr(child["peer_dup"]) == SRC, child
    assert addr(child["local0"]) == ("127.0.0.1", port), child
    assert child["handoff_env"] is False
    assert sorted(child["environ"]) == env_list(env)


def test_handoff_local_addr_header(execer):
    env = base_env(LOCAL_ADDR="header")
    p, port = execer("--how", "execv", env=env)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST))
    child = role(wait_json(p, lambda d: d.get("role") == "child"), "child")
    s.close()
    assert addr(child["peer0"]) == SRC and addr(child["local0"]) == DST, child


@pytest.mark.parametrize("how", ["execv", "execvp", "posix_spawn"])
def test_lazy_pending_header_survives_the_exec(execer, how):
    # The header is not there when the parent accepts and execs: the child's first read takes
    # it, gets only the payload, and then getpeername() gives the header's source.
    env = base_env(CONSUME="lazy", TIMEOUT_MS=5000)
    p, port = execer("--how", how, "--child-read", env=env)
    s = connect_from(port, TRUSTED)
    p.wait_output("child ready")
    payload = b"first bytes after exec\n" + bytes(range(256)) * 8
    s.sendall(v2_header(SRC, DST) + payload)
    s.shutdown(socket.SHUT_WR)
    lines = wait_json(p, lambda d: d.get("role") == "child")
    s.close()
    parent = check_parent(wait_json(p, lambda d: d.get("role") == ("parent_after" if how.startswith("posix") else "child")), how)
    assert parent["accept"]["addr"] == TRUSTED  # lazy: accept() gives the real peer at once
    child = role(lines, "child")
    assert child["read_error"] == "0" and bytes.fromhex(child["hex"]) == payload, child
    assert addr(child["peer0"]) == SRC and addr(child["peer_dup"]) == SRC, child
    assert sorted(child["environ"]) == env_list(env)


@pytest.mark.parametrize("how_replace", ["dup2", "raw"])
def test_fd_replaced_by_socketpair_before_exec_is_not_adopted(execer, how_replace):
    # dup2: through the shim's hook; raw: the dup3 system call behind its back
    p, port = execer("--how", "execv", "--replace", how_replace, env=base_env())
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST))
    child = role(wait_json(p, lambda d: d.get("role") == "child"), "child")
    s.close()
    assert child["peer0"] == {"family": "AF_UNIX"}, child
    assert child["peer_dup"] == {"family": "AF_UNIX"}, child
    assert child["handoff_env"] is False


def client_with_fixed_port(port):
    """A trusted client bound to an explicit port with SO_REUSEADDR/SO_REUSEPORT, so that the
    program can make a second connection from the very same ip:port."""
    for _ in range(50):
        sp = random.randrange(20000, 32000)  # below the ephemeral range
        try:
            return connect_from(port, TRUSTED, source_port=sp, reuse=True), sp
        except OSError:
            continue
    raise RuntimeError("no free source port on %s" % TRUSTED)


def test_handoff_through_an_image_without_the_shim(execer):
    # Control for the next test: the connection goes through an image without LD_PRELOAD,
    # which sees PROXYSHIM_HANDOFF and passes it on; the shim in the third image adopts it.
    p, port = execer("--how", "execve", "--middle", env=base_env())
    s, sp = client_with_fixed_port(port)
    s.sendall(v2_header(SRC, DST))
    lines = wait_json(p, lambda d: d.get("role") == "child")
    s.close()
    middle = role(lines, "middle")
    assert middle["handoff_env"] is True and addr(middle["peer0_before"]) == (TRUSTED, sp), middle
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC and addr(child["peer_dup"]) == SRC, child
    assert child["handoff_env"] is False


def test_fd_replaced_by_another_socket_with_the_same_peer_is_not_adopted(execer):
    # The image without the shim puts over fd 0 another TCP connection from the very same
    # peer ip:port: only the socket inode check can tell, and the entry must not be adopted.
    p, port = execer("--how", "execve", "--middle", "--replace", "samepeer", env=base_env())
    s, sp = client_with_fixed_port(port)
    s.sendall(v2_header(SRC, DST))
    lines = wait_json(p, lambda d: d.get("role") == "child")
    s.close()
    middle = role(lines, "middle")
    assert middle["handoff_env"] is True and middle["replaced"] is True, middle
    assert addr(middle["peer0_after"]) == (TRUSTED, sp), middle
    child = role(lines, "child")
    assert addr(child["peer0"]) == (TRUSTED, sp), child
    assert addr(child["peer_dup"]) == (TRUSTED, sp), child


def test_stale_handoff_in_the_environment_is_dropped(execer):
    # A PROXYSHIM_HANDOFF the program was started with (garbage, or a real-looking entry for
    # fd 0 with a wrong inode) is ignored and removed at load; the real handoff still works.
    env = base_env()
    env["PROXYSHIM_HANDOFF"] = "1;0:1:" + "00" * 47
    p, port = execer("--how", "execv", env=env)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST))
    lines = wait_json(p, lambda d: d.get("role") == "child")
    s.close()
    assert role(lines, "parent")["handoff_env"] is False
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC
    del env["PROXYSHIM_HANDOFF"]
    assert sorted(child["environ"]) == env_list(env)


def test_untrusted_connection_hands_nothing_over(execer):
    env = base_env()
    p, port = execer("--how", "execv", env=env)
    s = connect_from(port, "127.0.0.3")
    me = s.getsockname()
    s.sendall(v2_header(SRC, DST))
    child = role(wait_json(p, lambda d: d.get("role") == "child"), "child")
    s.close()
    assert addr(child["peer0"]) == me
    assert sorted(child["environ"]) == env_list(env)


@pytest.mark.parametrize("cloexec", ["cloexec", "keep"])
@pytest.mark.parametrize("how", ["posix_spawn", "posix_spawnp"])
def test_posix_spawn_file_action_dup2_onto_fd0(execer, how, cloexec):
    # The usual way to give a spawned child a connection as its stdin: the parent keeps it on
    # its own fd (close-on-exec, as accept4(SOCK_CLOEXEC) or Rust/Python make it, or not) and
    # a file action posix_spawn_file_actions_adddup2(fd, 0) makes it the child's fd 0. That fd 0
    # survives the exec and is the very socket the parent's entry is for.
    env = base_env()
    p, port = execer("--how", how, "--spawn-dup2", cloexec, env=env)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST))
    lines = wait_json(p, lambda d: d.get("role") == "parent_after")
    s.close()
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC, child
    assert addr(child["peer_dup"]) == SRC, child
    assert sorted(child["environ"]) == env_list(env)


def test_system_runs_the_child_through_sh(execer):
    # system() runs /bin/sh -c "execer --child", and the shell (under the shim too) execs it.
    env = base_env()
    p, port = execer("--how", "system", env=env)
    s = connect_from(port, TRUSTED)
    s.sendall(v2_header(SRC, DST))
    lines = wait_json(p, lambda d: d.get("role") == "parent_after")
    s.close()
    parent = role(lines, "parent")
    assert parent["failed_call"]["ret"] == 127 << 8 and parent["failed_call"]["environ_unchanged"]
    assert role(lines, "parent_after")["status"] == 0
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC, child
    assert addr(child["peer_dup"]) == SRC, child
    assert child["handoff_env"] is False


@pytest.mark.time_limit(60)
def test_exec_with_many_handed_off_connections_still_runs(execer):
    # A process holding 1500 rewritten, inheritable connections runs a helper. The handoff
    # must never make the exec itself fail: Linux refuses any single environment string over
    # MAX_ARG_STRLEN (32 pages, 131072 bytes) with E2BIG, and 1500 entries of ~110 bytes each
    # would be one such string.
    n = 1500
    env = base_env()
    p, port = execer("--how", "execv", "--hold", n, env=env)
    held = []
    try:
        for i in range(n):
            s = connect_from(port, TRUSTED)
            s.sendall(v2_header(("10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255), 1000 + i), DST))
            held.append(s)
        p.wait_output("held %d" % n, timeout=30)
        s = connect_from(port, TRUSTED)
        s.sendall(v2_header(SRC, DST))
        held.append(s)
        lines = wait_json(p, lambda d: d.get("role") == "child" or "exec_failed" in d, timeout=20)
    finally:
        for s in held:
            s.close()
    assert not [l for l in lines if "exec_failed" in l], lines
    child = role(lines, "child")
    assert addr(child["peer0"]) == SRC
    assert child["handoff_env"] is False


@pytest.mark.parametrize("consume", ["accept", "lazy"])
def test_handoff_ipv6_listener(execer, consume):
    src, dst = ("2001:db8::9", 4711), ("2001:db8::20", 443)
    env = base_env(CONSUME=consume, LOCAL_ADDR="header", TIMEOUT_MS=5000)
    env["PROXYSHIM_TRUSTED"] = "::1"
    p, port = execer("--how", "execvp", "--listen", "[::1]:0", env=env)
    s = connect_from(port, "::1", host="::1")
    if consume == "lazy":
        time.sleep(0.2)  # pending in the parent, taken by the child's getpeername()
    s.sendall(v2_header(src, dst))
    child = role(wait_json(p, lambda d: d.get("role") == "child"), "child")
    s.close()
    assert child["peer0"] == {"family": "AF_INET6", "addr": src[0], "port": src[1]}, child
    assert child["peer_dup"] == child["peer0"]
    assert child["local0"] == {"family": "AF_INET6", "addr": dst[0], "port": dst[1]}, child
