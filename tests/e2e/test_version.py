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


# A library of another build: what --check runs (LOADER LIBRARY), its entry point printing
# its version and settings as shim/preload/selfcheck.c does.
FAKE_LIB = r'''
#include <stdio.h>
#include <unistd.h>
__attribute__((noreturn, force_align_arg_pointer)) void fake_entry(void)
{
    printf("version=%s\nactive=yes\nPROXYSHIM_TRUSTED=127.0.0.1/32\nconfig_file=none\n");
    fflush(stdout);
    _exit(0);
}
'''


def test_check_says_when_the_library_is_another_version(tmp_path):
    """A library of another build (a stand-in run by --check through the loader, found through
    PROXYSHIM_LIBRARY): version= is the library's, and a warning names both."""
    src = tmp_path / "fake.c"
    src.write_text(FAKE_LIB % "0.9.0")
    lib = tmp_path / "libproxyshim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-e,fake_entry", "-o", str(lib), str(src)], check=True)
    r = subprocess.run([WRAPPER, "--check"], env=clean_env(PROXYSHIM_LIBRARY=str(lib)),
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r
    lines = r.stdout.decode().splitlines()
    assert lines[:3] == ["library=%s" % lib, "version=0.9.0", "active=yes"], lines
    assert r.stderr.decode() == (
        "proxyshim: warning: %s is version 0.9.0, this proxyshim is version %s\n" % (lib, VERSION))


def test_check_refuses_a_library_older_than_its_entry_point(tmp_path):
    """A library without an entry point (before 1.0.0, or not proxyshim's) cannot be run by
    --check: exit 1, saying so, and nothing run."""
    src = tmp_path / "old.c"
    src.write_text("int proxyshim_settings(char *b, unsigned long n) { return 0; }\n")
    lib = tmp_path / "libproxyshim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    r = subprocess.run([WRAPPER, "--check"], env=clean_env(PROXYSHIM_LIBRARY=str(lib)),
                       capture_output=True, timeout=10)
    assert r.returncode == 1 and r.stdout == b"", r
    assert b"it has no entry point" in r.stderr and b"1.0.0" in r.stderr, r.stderr


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
