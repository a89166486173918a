"""The library exports exactly the hooked libc names and the proxyshim_ API (the version
script), and needs no glibc symbol version newer than 2.17."""
import re
import subprocess

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
