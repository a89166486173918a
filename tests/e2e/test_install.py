"""make install / make uninstall into a temporary DESTDIR: every file where it belongs with its
mode, the installed wrapper finding the installed library and running a server through it,
uninstall leaving no file behind; and the man pages: they render without warnings and
document every variable of the library and every option of the programs."""
import os
import re
import stat
import subprocess

import pytest

from util import (BUILD, LIB, ROOT, SEND, WRAPPER, exchange, start_testserver, v2_header,
                  wait_conns)
from test_preload_accept import PAYLOAD, SRC4, TRUSTED, check_line

SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
ARTIFACTS = [LIB, WRAPPER, SEND, SUPERVISOR]


def make(*targets, **vars):
    # -o: install what was built and tested, never rebuild it here.
    argv = ["make", "--no-print-directory", "-C", ROOT, "BUILD=" + BUILD]
    for a in ARTIFACTS:
        argv += ["-o", a]
    argv += ["%s=%s" % kv for kv in vars.items()] + list(targets)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def files_under(d):
    out = set()
    for dirpath, _, names in os.walk(d):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), d))
    return out


EXPECTED = {
    "usr/local/bin/proxyshim": (0o755, WRAPPER),
    "usr/local/bin/proxyshim-send": (0o755, SEND),
    "usr/local/lib/proxyshim/proxyshim-supervise": (0o755, SUPERVISOR),
    "usr/local/lib/libproxyshim.so": (0o644, LIB),
    "usr/local/include/proxyshim.h": (0o644, os.path.join(ROOT, "include/proxyshim.h")),
    "usr/local/share/man/man1/proxyshim.1": (0o644, os.path.join(ROOT, "man/proxyshim.1")),
    "usr/local/share/man/man1/proxyshim-send.1": (0o644, os.path.join(ROOT, "man/proxyshim-send.1")),
    "usr/local/share/man/man7/libproxyshim.7": (0o644, os.path.join(ROOT, "man/libproxyshim.7")),
}


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}


def test_install_and_uninstall(tmp_path, procs):
    dest = tmp_path / "dest"
    make("install", PREFIX="/usr/local", DESTDIR=str(dest))
    assert files_under(dest) == set(EXPECTED)
    for rel, (mode, src) in EXPECTED.items():
        st = os.stat(dest / rel)
        assert stat.S_IMODE(st.st_mode) == mode, rel
        with open(dest / rel, "rb") as a, open(src, "rb") as b:
            assert a.read() == b.read(), rel

    # The installed wrapper finds the installed library (PREFIX/bin/../lib) ...
    wrapper = str(dest / "usr/local/bin/proxyshim")
    r = subprocess.run([wrapper, "--trusted", "10.0.0.0/8", "--check"], env=clean_env(),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "library=%s" % (dest / "usr/local/lib/libproxyshim.so")
    assert "PROXYSHIM_TRUSTED=10.0.0.0/8" in lines
    # ... and runs a server with it.
    p, port = start_testserver(env=clean_env(), prefix=[wrapper, "--trusted", TRUSTED, "--"])
    procs.append(p)
    got, _ = exchange(port, v2_header(SRC4, ("127.0.0.1", port)) + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    (line,) = wait_conns(p, 1)
    check_line(line, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    # ... and the installed supervisor (PREFIX/lib/proxyshim) for the supervised mode.
    r = subprocess.run([wrapper, "--trusted", TRUSTED, "--supervise", "--", "/bin/sh", "-c",
                        "grep ^Seccomp: /proc/self/status"], env=clean_env(),
                       capture_output=True, text=True, timeout=10)
    assert (r.returncode, r.stdout.split()) == (0, ["Seccomp:", "2"]), r
    r = subprocess.run([str(dest / "usr/local/bin/proxyshim-send"), "--help"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0 and b"SYNOPSIS" in r.stdout

    # The installed man pages are the ones man(1) reads.
    r = subprocess.run(["man", "-l", str(dest / "usr/local/share/man/man1/proxyshim.1")],
                       capture_output=True, text=True, timeout=30, env=dict(os.environ, MANWIDTH="80"))
    assert r.returncode == 0 and "proxyshim - run a server" in " ".join(r.stdout.split()), r

    make("uninstall", PREFIX="/usr/local", DESTDIR=str(dest))
    assert files_under(dest) == set()


def test_install_with_another_prefix(tmp_path):
    dest = tmp_path / "dest"
    make("install", PREFIX="/opt/proxyshim", DESTDIR=str(dest))
    base = dest / "opt/proxyshim"
    assert {os.path.relpath(os.path.join(dest, f), base) for f in files_under(dest)} == {
        rel[len("usr/local/"):] for rel in EXPECTED}
    r = subprocess.run([str(base / "bin/proxyshim"), "--trusted", "127.0.0.1", "--check"], env=clean_env(),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == \
        "library=%s" % (base / "lib/libproxyshim.so"), r
    make("uninstall", PREFIX="/opt/proxyshim", DESTDIR=str(dest))
    assert files_under(dest) == set()


# ---- the man pages ----

MAN = {name: os.path.join(ROOT, "man", name)
       for name in ("proxyshim.1", "proxyshim-send.1", "libproxyshim.7")}


@pytest.mark.parametrize("name", sorted(MAN))
def test_man_page_renders_without_warnings(name):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", MAN[name]], capture_output=True,
                       text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def rendered(name):
    r = subprocess.run(["groff", "-man", "-Tascii", "-rLL=200n", "-rHY=0", MAN[name]], capture_output=True,
                       text=True, timeout=30, check=True)
    return re.sub(r".\x08", "", r.stdout)  # drop overstrike bold/underline


def library_variables():
    """Every PROXYSHIM_* setting: the rows of the settings table."""
    src = open(os.path.join(ROOT, "shim/core/settings_table.h")).read()
    names = {"PROXYSHIM_" + n for n in re.findall(r"(?m)^\s*X\(([A-Z_]+),", src)}
    assert {"PROXYSHIM_TRUSTED", "PROXYSHIM_MODE", "PROXYSHIM_TIMEOUT_MS", "PROXYSHIM_CONFIG"} <= names
    return names


def test_libproxyshim_7_documents_every_variable_with_default_and_example():
    text = rendered("libproxyshim.7")
    env = text.split("ENVIRONMENT", 1)[1].split("\nFILES", 1)[0]
    for var in sorted(library_variables()):
        assert var in env, var
        # each variable's paragraph gives an example of its own
        assert "Example: %s=" % var in " ".join(env.split()), var


def options_of(help_text):
    return set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", help_text))


@pytest.mark.parametrize("prog,page", [(WRAPPER, "proxyshim.1"), (SEND, "proxyshim-send.1")])
def test_man_page_has_every_option_of_help(prog, page):
    help_text = subprocess.run([prog, "--help"], capture_output=True, text=True, timeout=10,
                               check=True).stdout
    opts = options_of(help_text)
    assert len(opts) >= 8, opts
    text = rendered(page)
    for o in sorted(opts):
        assert o in text, o
