"""The C test server (tests/e2e/testserver.c): starting it and reading its per-connection lines."""
import time

from .paths import TESTSERVER
from .procs import printed_json, start_listening

__all__ = ["start_testserver", "conn_lines", "wait_conns"]


def start_testserver(*args, env=None, listen="127.0.0.1:0", log_name="testserver", timeout=5.0,
                     binary=None, prefix=()):
    """Starts build/testserver (args as its options) and returns (Proc, port) once it listens.
    binary: another build of it (e.g. TESTSERVER_MUSL); prefix: argv put in front of it (e.g.
    the proxyshim wrapper and its options)."""
    return start_listening(list(prefix) + [binary or TESTSERVER, "--listen", listen] + list(args),
                           env=env, log_name=log_name, timeout=timeout)


def conn_lines(proc):
    """The JSON lines a testserver printed, one per connection it served."""
    return printed_json(proc)


def wait_conns(proc, n, timeout=5.0):
    """Waits until the testserver has reported at least n connections; returns them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = conn_lines(proc)
        if len(got) >= n:
            return got
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise TimeoutError("%d connection lines expected:\n%s" % (n, proc.output()))
