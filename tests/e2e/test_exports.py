"""The library exports exactly the hooked libc names and the proxyshim_ API (the version
script), and needs no glibc symbol version newer than 2.17."""
import re
import subprocess

import pytest

from util import LIB, ROOT

MAP = ROOT + "/shim/preload/libproxyshim.map"


def map_globals():
    text = re.sub(r"/\*.*?\*/", "", open(MAP).read(), flags=re.S)
    block = text.split("global:")[1].split("local:")[0]
    return {w.strip() for w in block.split(";") if w.strip()}


def test_exports_match_version_script():
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert exported == map_globals()
    assert {"accept", "accept4", "getpeername", "close", "dup2"} <= exported


def test_no_glibc_version_above_2_17():
    out = subprocess.run(["objdump", "-T", LIB], capture_output=True, text=True, check=True).stdout
    versions = set(re.findall(r"\(GLIBC_(\d+)\.(\d+)(?:\.\d+)?\)", out))
    assert versions, "objdump showed no GLIBC versions at all"
    too_new = sorted(v for v in versions if (int(v[0]), int(v[1])) > (2, 17))
    assert not too_new, out


# Hooks that deliberately call another hook of the shim's (a fortified twin, the l forms of exec).
# Calls that are meant to land in the shim's own hook: the selfcheck entry ends through the
# shim's _exit() (exit.c), which removes nothing there (no counters file yet) and ends the
# process; _Exit() is _exit().
DELEGATING = {("poll.c", "poll"), ("poll.c", "ppoll"), ("exec.c", "execve"), ("exec.c", "execv"),
              ("exec.c", "execvp"), ("exec.c", "posix_spawn"), ("selfcheck.c", "_exit"), ("exit.c", "_exit")}


def test_the_shim_calls_libc_only_through_real_pointers():
    # docs/DESIGN.md, "The hooks": inside the shim, a hooked function only through real_;
    # with -Bsymbolic-functions such a call would land in the shim's own hook (recursion).
    import glob
    import os
    hooked = {n for n in map_globals() if not n.startswith("proxyshim_")}
    bad = []
    for path in sorted(glob.glob(ROOT + "/shim/preload/*.c")):
        name = os.path.basename(path)
        src = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
        for lineno, line in enumerate(src.splitlines(), 1):
            for m in re.finditer(r"(?<![\w.>])(%s)\s*\(" % "|".join(sorted(hooked)), line):
                fn = m.group(1)
                before = line[:m.start()]
                if re.search(r"\bSHIM_EXPORT\b|^\s*(static\s+)?\w[\w\s\*]*$", before) and "return" not in before:
                    continue  # the hook's own definition or declaration
                if (name, fn) in DELEGATING:
                    continue
                bad.append("%s:%d: %s" % (name, lineno, line.strip()))
    assert not bad, "direct calls to hooked functions:\n" + "\n".join(bad)


LOADERS = {"glibc": "/lib64/ld-linux-x86-64.so.2", "musl": "/lib/ld-musl-x86_64.so.1"}


@pytest.mark.parametrize("libc", sorted(LOADERS))
def test_library_runs_as_a_program_through_the_loader(libc):
    """`LOADER libproxyshim.so` (how the static wrapper answers --check, with no dlopen()): its
    version, then the settings this environment gives, exit 0; a bad value: the library's one line, exit 1."""
    env = {"PATH": "/usr/bin:/bin", "PROXYSHIM_TRUSTED": "10.1.0.0/16", "PROXYSHIM_MODE": "optional"}
    r = subprocess.run([LOADERS[libc], LIB], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    with open(ROOT + "/VERSION") as f:
        assert lines[0] == "version=" + f.read().strip(), r.stdout
    lines = lines[1:]
    assert lines[0] == "active=yes" and "PROXYSHIM_TRUSTED=10.1.0.0/16" in lines and \
        "PROXYSHIM_MODE=optional" in lines, r.stdout
    r = subprocess.run([LOADERS[libc], LIB], env=dict(env, PROXYSHIM_TIMEOUT_MS="soon"), capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1 and r.stdout == "", r
    assert 'invalid PROXYSHIM_TIMEOUT_MS="soon"' in r.stderr, r.stderr
