"""The wrapper in the kinds of image it must run in (issue 5/5), each made here as a root
directory with only what such an image has, and entered as a container would be (a mount and
PID namespace with its own /proc, then chroot): musl only (Alpine: its loader is the C
library), glibc only (distroless `base`), and no C library at all (distroless `static`,
`scratch`: Go's usual bases). The wrapper and the supervisor are linked statically; the
library is the glibc build, which musl's loader also loads. Loopback only."""
import os
import shutil
import signal
import subprocess

import pytest

from util import BUILD, LIB, ROOT, TESTSERVER, TESTSERVER_MUSL, WRAPPER, exchange, start_listening, v2_header

SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
GO = os.path.join(BUILD, "progs", "go-httpserver")
TRUSTED = "127.0.0.2"
CLIENT = ("203.0.113.61", 6161)
MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"
GLIBC_LOADER = "/lib64/ld-linux-x86-64.so.2"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for chroot and namespaces (CI runs as root)")


@pytest.fixture(scope="module", autouse=True)
def built():
    r = subprocess.run(["make", "-s", "-C", ROOT, "BUILD=" + BUILD, WRAPPER, SUPERVISOR, LIB, TESTSERVER,
                        TESTSERVER_MUSL, GO], capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()


def clean_env(**kw):
    env = {"PATH": "/", "PROXYSHIM_TRUSTED": TRUSTED}
    env.update(kw)
    return env


def make_root(tmp_path, kind):
    """A root with the wrapper, the supervisor and the library in /proxyshim/ (as the init
    container copies them), /proc and /tmp, and kind's C library: "musl", "glibc" or "none"."""
    root = tmp_path / ("root-" + kind)
    for d in ("proxyshim", "proc", "tmp"):
        (root / d).mkdir(parents=True)
    for f in (WRAPPER, SUPERVISOR, LIB):
        shutil.copy2(f, root / "proxyshim" / os.path.basename(f))
    if kind == "musl":
        (root / "lib").mkdir()
        shutil.copy2(os.path.realpath(MUSL_LOADER), root / "lib" / os.path.basename(MUSL_LOADER))
    elif kind == "glibc":
        (root / "lib64").mkdir()
        (root / "lib").mkdir()
        shutil.copy2(os.path.realpath(GLIBC_LOADER), root / "lib64" / os.path.basename(GLIBC_LOADER))
        libc = subprocess.run(["gcc", "-print-file-name=libc.so.6"], capture_output=True, text=True).stdout.strip()
        shutil.copy2(os.path.realpath(libc), root / "lib" / "libc.so.6")
        (root / "etc").mkdir()
        (root / "etc" / "ld.so.conf").write_text("")
    return root


def enter(root):
    """The argv prefix that runs a command in root as a container would."""
    return [shutil.which("unshare"), "--mount", "--pid", "--fork", "--kill-child", "--mount-proc=%s" % (root / "proc"),
            shutil.which("chroot") or "/usr/sbin/chroot", str(root)]


def check(root):
    return subprocess.run(enter(root) + ["/proxyshim/proxyshim", "--check"], env=clean_env(),
                          capture_output=True, text=True, timeout=20)


def served(procs, root, argv, name, request=b"hello\n"):
    p, port = start_listening(enter(root) + ["/proxyshim/proxyshim", "--log", "info", "--"] + argv,
                              env=clean_env(), log_name=name)
    procs.append(p)
    got, _ = exchange(port, v2_header(CLIENT, ("127.0.0.1", port)) + request, source=TRUSTED)
    return p, got


@pytest.fixture
def procs():
    ps = []
    yield ps
    for p in ps:  # unshare takes its child (PID 1 there, which ignores SIGTERM) with it
        p.stop(sig=signal.SIGKILL)


@pytest.mark.parametrize("kind", ["musl", "glibc"])
def test_check_runs_the_library_through_the_images_loader(tmp_path, kind):
    """--check in an image with only musl's loader, or only glibc's: the library loads, its
    settings and version come back, exit 0."""
    r = check(make_root(tmp_path, kind))
    assert r.returncode == 0, r
    with open(os.path.join(ROOT, "VERSION")) as f:
        version = f.read().strip()
    assert r.stdout.splitlines()[:3] == ["library=/proxyshim/libproxyshim.so", "version=" + version,
                                         "active=yes"], r.stdout
    assert "PROXYSHIM_TRUSTED=%s/32" % TRUSTED in r.stdout.splitlines(), r.stdout


def test_check_without_a_c_library_says_the_library_cannot_load(tmp_path):
    r = check(make_root(tmp_path, "none"))
    assert r.returncode == 1 and r.stdout == "", r
    assert "no dynamic loader" in r.stderr and "supervised" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["musl", "glibc"])
def test_dynamic_server_in_the_image_gets_the_client(procs, tmp_path, kind):
    """The test server built for that C library, under the wrapper (LD_PRELOAD): accept() and
    getpeername() give the header's client."""
    root = make_root(tmp_path, kind)
    shutil.copy2(TESTSERVER_MUSL if kind == "musl" else TESTSERVER, root / "server")
    p, got = served(procs, root, ["/server", "--listen", "127.0.0.1:0"], "root-" + kind)
    assert got == b"hello\n", p.output()
    line = [x for x in p.output().splitlines() if x.startswith("{")][-1]
    assert '"accept":{"family":"AF_INET","addr":"%s","port":%d' % CLIENT in line, p.output()
    assert '"peer":{"family":"AF_INET","addr":"%s","port":%d' % CLIENT in line, p.output()


def test_go_server_in_an_image_without_a_c_library_runs_supervised(procs, tmp_path):
    """distroless/static: a CGO_ENABLED=0 Go server under the wrapper, which runs it supervised;
    net/http reports the header's client."""
    root = make_root(tmp_path, "none")
    shutil.copy2(GO, root / "server")
    p, got = served(procs, root, ["/server"], "root-none-go", b"GET / HTTP/1.0\r\n\r\n")
    assert b" 200 " in got.split(b"\r\n")[0] and b'"remote":"%s:%d"' % (CLIENT[0].encode(), CLIENT[1]) in got, \
        (got, p.output())
    assert "event=supervise" in p.output()
