"""make install / make uninstall into a temporary DESTDIR: every file where it belongs with its
mode (the library as libproxyshim.so.1, its SONAME, with libproxyshim.so beside it), the
installed wrapper finding the installed library and running a server through it, uninstall
leaving no file behind and refusing while /etc/ld.so.preload (LD_SO_PRELOAD here) names the
library; the installed header declaring only what the installed library defines, a program
built against both; and the man pages: they render without warnings, follow PREFIX and
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


def make(*targets, check=True, **vars):
    # -o: install what was built and tested, never rebuild it here. LD_SO_PRELOAD: never the
    # machine's /etc/ld.so.preload unless a test names it.
    vars.setdefault("LD_SO_PRELOAD", "/nonexistent/ld.so.preload")
    argv = ["make", "--no-print-directory", "-C", ROOT, "BUILD=" + BUILD]
    for a in ARTIFACTS:
        argv += ["-o", a]
    argv += ["%s=%s" % kv for kv in vars.items()] + list(targets)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def files_under(d):
    out = set()
    for dirpath, _, names in os.walk(d):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), d))
    return out


SYMLINK = "symlink"  # EXPECTED's mode for a symlink, with its target
EXPECTED = {
    "usr/local/bin/proxyshim": (0o755, WRAPPER),
    "usr/local/bin/proxyshim-send": (0o755, SEND),
    "usr/local/lib/proxyshim/proxyshim-supervise": (0o755, SUPERVISOR),
    "usr/local/lib/libproxyshim.so.1": (0o644, LIB),
    # the name users put in LD_PRELOAD: a symlink to the file the library's SONAME names
    "usr/local/lib/libproxyshim.so": (SYMLINK, "libproxyshim.so.1"),
    "usr/local/include/proxyshim.h": (0o644, os.path.join(ROOT, "include/proxyshim.h")),
    "usr/local/share/man/man1/proxyshim.1": (0o644, os.path.join(ROOT, "man/proxyshim.1")),
    "usr/local/share/man/man1/proxyshim-send.1": (0o644, os.path.join(ROOT, "man/proxyshim-send.1")),
    "usr/local/share/man/man5/proxyshim.conf.5": (0o644, os.path.join(ROOT, "man/proxyshim.conf.5")),
    # PREFIX=/usr/local: the page's paths are the source's
    "usr/local/share/man/man7/libproxyshim.7": (0o644, os.path.join(ROOT, "man/libproxyshim.7")),
}
# The wrapper's bash completion (shim/cli/proxyshim.bash), when the tree has it.
COMPLETION = os.path.join(ROOT, "shim/cli/proxyshim.bash")
if os.path.exists(COMPLETION):
    EXPECTED["usr/local/share/bash-completion/completions/proxyshim"] = (0o644, COMPLETION)


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}


def test_install_and_uninstall(tmp_path, procs):
    dest = tmp_path / "dest"
    make("install", PREFIX="/usr/local", DESTDIR=str(dest))
    assert files_under(dest) == set(EXPECTED)
    for rel, (mode, src) in EXPECTED.items():
        if mode == SYMLINK:
            assert os.readlink(dest / rel) == src, rel
            continue
        st = os.lstat(dest / rel)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode, rel
        with open(dest / rel, "rb") as a, open(src, "rb") as b:
            assert a.read() == b.read(), rel

    # The installed wrapper finds the installed library (PREFIX/bin/../lib) ...
    wrapper = str(dest / "usr/local/bin/proxyshim")
    r = subprocess.run([wrapper, "--trusted", "10.0.0.0/8", "--check"], env=clean_env(),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "library=%s" % (dest / "usr/local/lib/libproxyshim.so.1")  # resolved
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
        "library=%s" % (base / "lib/libproxyshim.so.1"), r
    # libproxyshim(7) names the library where this PREFIX put it, and no page names another.
    page = (base / "share/man/man7/libproxyshim.7").read_text()
    assert "LD_PRELOAD=/opt/proxyshim/lib/libproxyshim.so" in page
    for rel in EXPECTED:
        if "/share/man/" in rel:
            assert "/usr/local" not in (base / rel[len("usr/local/"):]).read_text(), rel
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(base / "share/man/man7/libproxyshim.7")],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    make("uninstall", PREFIX="/opt/proxyshim", DESTDIR=str(dest))
    assert files_under(dest) == set()


# ---- uninstall while /etc/ld.so.preload names the library ----

def preload_names(tmp_path, dest, *words):
    """An ld.so.preload file naming words (paths relative to dest made absolute)."""
    f = tmp_path / "ld.so.preload"
    f.write_text("\n".join(str(dest / w) if "/" in w else w for w in words) + "\n")
    return str(f)


@pytest.mark.parametrize("names", [
    ["usr/local/lib/libproxyshim.so"],
    ["usr/local/lib/libproxyshim.so.1"],
    ["usr/local/lib/../lib/./libproxyshim.so"],    # another spelling of the path
    ["usr/local/lib/other.so", "usr/local/lib/libproxyshim.so"],  # second of two
    ["link-to-lib/libproxyshim.so"],                 # through a symlinked folder
    ["libproxyshim.so"],                             # a bare name ld.so looks up itself
], ids=["symlink", "soname", "dotdot", "second", "linked-dir", "bare-name"])
def test_uninstall_refuses_while_ld_so_preload_names_the_library(tmp_path, names):
    dest = tmp_path / "dest"
    make("install", PREFIX="/usr/local", DESTDIR=str(dest))
    os.symlink(dest / "usr/local/lib", dest / "link-to-lib")
    before = files_under(dest)
    preload = preload_names(tmp_path, dest, *names)
    r = make("uninstall", check=False, PREFIX="/usr/local", DESTDIR=str(dest), LD_SO_PRELOAD=preload)
    assert r.returncode != 0, r
    # the reason, on stderr: the file that names the library, and what to do
    assert preload in r.stderr and "libproxyshim.so" in r.stderr, r.stderr
    assert files_under(dest) == before  # nothing removed
    assert os.path.islink(dest / "usr/local/lib/libproxyshim.so")


def test_uninstall_proceeds_when_ld_so_preload_names_other_libraries(tmp_path):
    dest = tmp_path / "dest"
    make("install", PREFIX="/usr/local", DESTDIR=str(dest))
    # another library, a path to where the library would be under another prefix, a pattern
    # (ld.so does not expand it), a blank line
    preload = preload_names(tmp_path, dest, "usr/local/lib/libother.so", "opt/lib/libproxyshim.so",
                            "usr/local/lib/*.so", "")
    r = make("uninstall", PREFIX="/usr/local", DESTDIR=str(dest), LD_SO_PRELOAD=preload)
    assert files_under(dest) == set(), r.stdout + r.stderr


# ---- the installed header: nothing declared that no installed library defines ----

def declared_functions(header_text):
    """The functions a header declares (prototypes at file scope, comments removed)."""
    text = re.sub(r"/\*.*?\*/", " ", header_text, flags=re.S)
    text = re.sub(r"(?m)^\s*#.*$", " ", text)
    return set(re.findall(r"\b([A-Za-z_]\w*)\s*\([^;{}()]*\)\s*;", text))


def test_installed_header_declares_only_what_the_installed_library_defines(tmp_path):
    dest = tmp_path / "dest"
    make("install", PREFIX="/usr/local", DESTDIR=str(dest))
    inc = dest / "usr/local/include"
    lib = dest / "usr/local/lib"
    headers = sorted(inc.iterdir())
    assert [h.name for h in headers] == ["proxyshim.h"]
    declared = set()
    for h in headers:
        declared |= declared_functions(h.read_text())
    # A program built against the installed header and library, taking every declared
    # function: it links (-lproxyshim through the libproxyshim.so symlink), records the
    # SONAME, and runs (the shim inert without PROXYSHIM_TRUSTED).
    prog = tmp_path / "prog.c"
    prog.write_text("""#include <proxyshim.h>
#include <stdio.h>
static void *const fns[] = { %s };
int main(void)
{
	char buf[4096];
	int n = proxyshim_settings(buf, sizeof(buf));
	printf("%%d %%zu\\n", n > 0, sizeof(fns) / sizeof(fns[0]));
	return 0;
}
""" % ", ".join("(void *)%s" % f for f in sorted(declared)))
    exe = tmp_path / "prog"
    r = subprocess.run(["cc", "-Wall", "-Werror", "-I", str(inc), "-o", str(exe), str(prog),
                        "-L", str(lib), "-lproxyshim"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["readelf", "-d", str(exe)], capture_output=True, text=True, check=True)
    assert "Shared library: [libproxyshim.so.1]" in r.stdout
    r = subprocess.run([str(exe)], env=dict(clean_env(), LD_LIBRARY_PATH=str(lib)),
                       capture_output=True, text=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, "1 %d\n" % len(declared)), r
    # what the installed libraries define (nm -D: the dynamic symbols, defined ones)
    r = subprocess.run(["nm", "-D", "--defined-only", str(lib / "libproxyshim.so.1")],
                       capture_output=True, text=True, timeout=30, check=True)
    defined = {line.split()[-1].split("@")[0] for line in r.stdout.splitlines() if line.strip()}
    assert declared - defined == set()

    # the application API, all of it (the list above is not empty by accident)
    assert {"proxyshim_settings", "proxyshim_peer", "proxyshim_tlv", "proxyshim_version"} <= declared


# ---- the man pages ----

MAN = {name: os.path.join(ROOT, "man", name)
       for name in ("proxyshim.1", "proxyshim-send.1", "proxyshim.conf.5", "libproxyshim.7")}


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


def test_proxyshim_conf_5_documents_every_key():
    """Every setting but PROXYSHIM_CONFIG (it names the file) is a key of the file."""
    text = " ".join(rendered("proxyshim.conf.5").split())
    keys = library_variables() - {"PROXYSHIM_CONFIG"}
    for k in sorted(keys):
        assert k in text, k
    assert "PROXYSHIM_CONFIG" in text  # the variable that names another file
    assert "/etc/proxyshim.conf" in text


# ---- the Debian package's version (make deb-test builds and tests the package itself) ----

def test_debian_changelog_version_is_VERSION():
    """VERSION is the version's one source: debian/changelog's latest entry agrees with it."""
    version = open(os.path.join(ROOT, "VERSION")).read().strip()
    first = open(os.path.join(ROOT, "debian/changelog")).readline()
    m = re.match(r"^proxyshim \(([^)]+)\) ", first)
    assert m, first
    # a native package: the upstream version itself, no Debian revision
    assert m.group(1) == version
    assert open(os.path.join(ROOT, "debian/source/format")).read().strip() == "3.0 (native)"
