"""The version, from its one source (the file VERSION): `--version` of the wrapper and the sender,
the library's proxyshim_version(), `version=` in `proxyshim --check` (and a warning when the
library found is another version than the wrapper), and the library's first debug log line."""
import os
import re
import subprocess
import sys

import pytest

from util import LIB, ROOT, SEND, WRAPPER

with open(os.path.join(ROOT, "VERSION")) as f:
    VERSION = f.read().strip()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}
    env.update(extra)
    return env


def test_version_file_is_one_line():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


@pytest.mark.parametrize("prog,name", [(WRAPPER, "proxyshim"), (SEND, "proxyshim-send")])
def test_version_option_gnu_style(prog, name):
    """GNU's --version: the program's name and version on the first line, then a copyright
    line; exit 0, nothing on stderr. Other options before it do not matter."""
    for args in (["--version"], ["--trusted", "127.0.0.1", "--version"] if name == "proxyshim"
                 else ["-1", "--version"]):
        r = subprocess.run([prog] + args, env=clean_env(), capture_output=True, timeout=10)
        assert (r.returncode, r.stderr) == (0, b""), r
        lines = r.stdout.decode().splitlines()
        assert lines[0] == "%s %s" % (name, VERSION), lines
        assert lines[1].startswith("Copyright (C) "), lines
        assert 2 <= len(lines) <= 4, lines


@pytest.mark.parametrize("args", [
    ["--version", "v2", "--", "true"],  # the old spelling of --protocol v2
    ["--version", "v1"],
    ["--version=v2", "--", "true"],
    ["--trusted", "127.0.0.1", "--version", "any", "--", "env"],
])
def test_the_old_version_option_is_a_usage_error(args, tmp_path):
    """`--version V` was the PROXY version before --protocol: it must neither print the version
    and exit 0 (a server that never starts, "successfully") nor run COMMAND with V ignored."""
    r = subprocess.run([WRAPPER] + args, env=clean_env(), capture_output=True, timeout=10)
    assert r.returncode == 2, r
    assert r.stdout == b""
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("proxyshim: "), err
    assert "--protocol" in err, err


def test_library_proxyshim_version():
    """Looked up as an application would (dlsym), in a process of its own."""
    code = ("import ctypes, sys\n"
            "lib = ctypes.CDLL(sys.argv[1])\n"
            "f = lib.proxyshim_version\n"
            "f.restype = ctypes.c_char_p\n"
            "print(f().decode())\n")
    r = subprocess.run([sys.executable, "-c", code, LIB], env=clean_env(), capture_output=True,
                       timeout=10)
    assert (r.returncode, r.stdout.decode()) == (0, VERSION + "\n"), r


def test_check_prints_the_librarys_version():
    r = subprocess.run([WRAPPER, "--trusted", "127.0.0.1", "--check"], env=clean_env(),
                       capture_output=True, timeout=10)
    assert (r.returncode, r.stderr) == (0, b""), r
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "library=" + os.path.realpath(LIB)
    assert lines[1] == "version=" + VERSION


FAKE_LIB = r'''
#include <stdio.h>
#include <string.h>
int proxyshim_settings(char *buf, size_t cap)
{
    return snprintf(buf, cap, "active=yes\nPROXYSHIM_TRUSTED=127.0.0.1/32\nconfig_file=none\n");
}
%s
'''


@pytest.mark.parametrize("other", ["0.9.0", None])
def test_check_says_when_the_library_is_another_version(tmp_path, other):
    """A library of another build (here a stand-in with the two functions --check calls, found
    through PROXYSHIM_LIBRARY): version= is the library's, and a warning names both; a library
    older than proxyshim_version() prints version=unknown."""
    src = tmp_path / "fake.c"
    src.write_text(FAKE_LIB % ('const char *proxyshim_version(void) { return "%s"; }' % other
                               if other else ""))
    lib = tmp_path / "libproxyshim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    r = subprocess.run([WRAPPER, "--check"], env=clean_env(PROXYSHIM_LIBRARY=str(lib)),
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r
    lines = r.stdout.decode().splitlines()
    assert lines[:2] == ["library=%s" % lib, "version=%s" % (other or "unknown")], lines
    assert r.stderr.decode() == (
        "proxyshim: warning: %s is version %s, this proxyshim is version %s\n"
        % (lib, other or "unknown (it has no proxyshim_version())", VERSION))


@pytest.mark.parametrize("trusted", ["127.0.0.1", None])
def test_first_debug_line_names_the_version(trusted):
    env = clean_env(LD_PRELOAD=os.path.realpath(LIB), PROXYSHIM_LOG="debug")
    if trusted:
        env["PROXYSHIM_TRUSTED"] = trusted
    r = subprocess.run(["true"], env=env, capture_output=True, timeout=10)
    assert r.returncode == 0, r
    lines = r.stderr.decode().splitlines()
    assert lines, r
    assert re.search(r"\blevel=debug\b", lines[0]) and re.search(r"\bevent=start\b", lines[0]), lines
    assert re.search(r'\bversion="?%s"?(\s|$)' % re.escape(VERSION), lines[0]), lines
    if trusted:
        assert re.search(r"\bactive=yes\b", lines[0]), lines
    else:
        assert re.search(r'\bactive=no reason="PROXYSHIM_TRUSTED is not set"', lines[0]), lines


def test_no_start_line_below_debug():
    r = subprocess.run(["true"], env=clean_env(LD_PRELOAD=os.path.realpath(LIB),
                                               PROXYSHIM_TRUSTED="127.0.0.1", PROXYSHIM_LOG="info"),
                       capture_output=True, timeout=10)
    assert (r.returncode, r.stderr) == (0, b""), r
