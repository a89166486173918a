"""One library for glibc and musl: the glibc-built build/libproxyshim.so preloaded into the test
server built with musl-gcc (build/testserver-musl, Debian musl-tools), through the core cases:
v1 and v2 headers from a trusted peer rewritten in accept() and getpeername(), untrusted peers
untouched, and a bad configuration stopping the program with its one line."""
import os
import subprocess

import pytest

from util import (LIB, TESTSERVER_MUSL, WRAPPER, exchange, shim_env, start_testserver,
                  v1_header, v2_header, wait_conns)
from test_preload_accept import MODES, PAYLOAD, SRC4, SRC6, TRUSTED, UNTRUSTED, check_line

MUSL_LDSO = "/lib/ld-musl-x86_64.so.1"
MUSL_LIBC = "/usr/lib/x86_64-linux-musl/libc.so"

pytestmark = pytest.mark.apps  # the musl toolchain and a musl build of the test server


@pytest.fixture(scope="module", autouse=True)
def _musl_built():
    assert os.path.exists(TESTSERVER_MUSL), "%s is not built: run make e2e" % TESTSERVER_MUSL


@pytest.fixture
def mts(procs):
    """ts() for the musl build: mts(*options, listen=..., TRUSTED=..., ...)."""
    def start(*args, listen="127.0.0.1:0", **env):
        p, port = start_testserver(*args, listen=listen, env=shim_env(**env),
                                   binary=TESTSERVER_MUSL, log_name="testserver-musl")
        procs.append(p)
        return p, port
    return start


def dynsyms(path, defined):
    out = subprocess.run(["nm", "-D", "--defined-only" if defined else "--undefined-only", path],
                         capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        syms[parts[-1].split("@")[0]] = parts[-2]
    return syms


def test_the_musl_server_really_is_musl():
    out = subprocess.run(["readelf", "-l", TESTSERVER_MUSL], capture_output=True, text=True,
                         check=True).stdout
    assert "[Requesting program interpreter: %s]" % MUSL_LDSO in out
    out = subprocess.run(["readelf", "-d", TESTSERVER_MUSL], capture_output=True, text=True,
                         check=True).stdout
    assert "libc.so.6" not in out


def test_every_symbol_the_library_needs_is_in_musl():
    """musl resolves libc.so.6 to itself and ignores symbol versions, so the library loads if
    and only if musl defines every strong symbol it imports (it is linked with -z now: one
    missing symbol fails the whole program at start-up). glibc-only names, such as the
    __register_atfork that pthread_atfork() becomes when linked against glibc 2.34+, do not."""
    need = {s for s, kind in dynsyms(LIB, False).items() if kind == "U"}
    have = set(dynsyms(MUSL_LIBC, True))
    assert need, "nm showed no undefined symbols"
    assert sorted(need - have) == []


def test_library_loads_into_a_musl_program():
    env = shim_env(TRUSTED=TRUSTED)
    r = subprocess.run([TESTSERVER_MUSL, "--no-such-option"], env=env, capture_output=True,
                       timeout=10)
    # the usage error is the program's own: main() ran with the library loaded
    assert r.returncode != 127, r.stderr
    assert b"Error relocating" not in r.stderr, r.stderr
    assert b"usage: testserver" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("version", [1, 2])
def test_trusted_header_gives_source(mts, mode, version):
    p, port = mts(*MODES[mode], TRUSTED=TRUSTED)
    hdr = (v1_header if version == 1 else v2_header)(SRC4, ("127.0.0.1", port))
    got, _ = exchange(port, hdr + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)


@pytest.mark.parametrize("version", [1, 2])
def test_ipv6_source_on_dual_stack_listener(mts, version):
    p, port = mts(listen="[::]:0", TRUSTED=TRUSTED)
    hdr = (v1_header if version == 1 else v2_header)(SRC6, ("::1", port))
    got, _ = exchange(port, hdr + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET6", SRC6[0], SRC6[1], PAYLOAD)


@pytest.mark.parametrize("mode", ["accept", "epoll", "poll"])
def test_untrusted_peer_is_untouched(mts, mode):
    p, port = mts(*MODES[mode], TRUSTED=TRUSTED)
    data = v1_header(SRC4, ("127.0.0.1", port)) + PAYLOAD
    got, me = exchange(port, data, source=UNTRUSTED)
    assert got == data
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", UNTRUSTED, me[1], data)


def test_strict_drops_a_trusted_connection_without_header(mts):
    p, port = mts(TRUSTED=TRUSTED, TIMEOUT_MS=300)
    got, _ = exchange(port, b"GET / HTTP/1.0\r\n\r\n", source=TRUSTED)
    assert got == b""
    got, _ = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)  # only the good one reached the program
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    assert "event=reject reason=missing" in p.output()


@pytest.mark.parametrize("var,value", [("TRUSTED", "10.0.0.0/33"), ("MODE", "lenient"),
                                       ("VERSION", "v3"), ("TIMEOUT_MS", "0")])
def test_bad_configuration_exits_1_with_the_line(var, value):
    env = shim_env(TRUSTED=TRUSTED)
    env["PROXYSHIM_" + var] = value
    r = subprocess.run([TESTSERVER_MUSL, "--max-conns", "1"], env=env, capture_output=True,
                       timeout=10)
    assert r.returncode == 1, r
    assert r.stdout == b"", "main() ran: %r" % r.stdout
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith('proxyshim: invalid PROXYSHIM_%s="%s": '
                                                   % (var, value)), repr(err)


def test_through_the_wrapper(procs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYSHIM_")}
    env.pop("LD_PRELOAD", None)
    p, port = start_testserver(env=env, binary=TESTSERVER_MUSL,
                               prefix=[WRAPPER, "--trusted", TRUSTED, "--"])
    procs.append(p)
    got, _ = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
