"""The shim's log lines read by a real logfmt parser: go-logfmt (Debian's
golang-github-go-logfmt-logfmt-dev, under /usr/share/gocode) in the small strict decoder
tests/e2e/progs/go/logfmt, built once into build/progs/logfmt-decode with Debian's golang-go
(GOPATH mode: nothing is downloaded). Not re-exported by util: `from util.logfmt import ...`."""
import json
import os
import re
import subprocess
import time

from .paths import BUILD, ROOT

__all__ = ["logfmt_decoder", "logfmt_decode", "shim_lines", "TS"]

SRC = os.path.join(ROOT, "tests", "e2e", "progs", "go", "logfmt")
DECODER = os.path.join(BUILD, "progs", "logfmt-decode")
# ts= as the shim prints it: UTC, RFC 3339 with milliseconds.
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def logfmt_decoder():
    """The decoder's path, built when missing or older than its source."""
    src = os.path.join(SRC, "main.go")
    if os.path.exists(DECODER) and os.path.getmtime(DECODER) >= os.path.getmtime(src):
        return DECODER
    os.makedirs(os.path.dirname(DECODER), exist_ok=True)
    tmp = "%s.tmp.%d" % (DECODER, os.getpid())
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off")
    r = subprocess.run(["go", "build", "-o", tmp, "."], cwd=SRC, env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, "go build of the logfmt decoder failed:\n" + r.stderr.decode()
    os.rename(tmp, DECODER)
    return DECODER


def logfmt_decode(lines, prefix="proxyshim:"):
    """Each line decoded by go-logfmt as a list of (key, value) pairs, in order (the prefix
    word dropped); fails the test, with the decoder's reason, on a line it refuses."""
    text = "".join(l + "\n" for l in lines)
    argv = [logfmt_decoder()] + (["-prefix", prefix] if prefix else [])
    r = subprocess.run(argv, input=text.encode(), capture_output=True, timeout=30)
    assert r.returncode == 0, "logfmt refused a line: %s\n%s" % (r.stderr.decode(), text)
    out = [[tuple(kv) for kv in json.loads(l)] for l in r.stdout.decode().splitlines()]
    assert len(out) == len(lines), (out, lines)
    return out


def shim_lines(text):
    """The shim's lines (those starting "proxyshim: ts=" or "proxyshim: level=") of a log."""
    return [l for l in text.splitlines() if l.startswith("proxyshim: ") and "=" in l.split(" ", 2)[1]]
