"""Fixtures for the end-to-end tests: processes stopped by pid at teardown, a testserver under
the shim, and a per-test time limit so a hung server fails its test instead of the run."""
import os
import signal

import pytest

from util import LIB, TESTSERVER, shim_env, start_testserver

TEST_TIME_LIMIT = int(os.environ.get("E2E_TEST_TIMEOUT", "90"))


@pytest.fixture(autouse=True)
def _time_limit(request):
    """SIGALRM fails a test that runs longer than its limit (pytest-timeout is not installed)."""
    limit = TEST_TIME_LIMIT
    mark = request.node.get_closest_marker("time_limit")
    if mark:
        limit = mark.args[0]

    def fire(signum, frame):
        raise TimeoutError("test exceeded its %d s time limit" % limit)

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): per-test time limit")


@pytest.fixture(scope="session", autouse=True)
def _built():
    for f in (LIB, TESTSERVER):
        assert os.path.exists(f), "%s is not built: make e2e builds it and the other test programs" % f


@pytest.fixture
def procs():
    """Processes a test starts: append them; each is stopped by pid at teardown."""
    started = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def ts(procs):
    """Starts a testserver under the shim: ts(*options, listen=..., TRUSTED=..., ...) where the
    keyword names are PROXYSHIM_ variables without the prefix. Returns (Proc, port)."""
    def start(*args, listen="127.0.0.1:0", shim=True, **env):
        p, port = start_testserver(*args, listen=listen,
                                   env=shim_env(**env) if shim else None)
        procs.append(p)
        return p, port
    return start
