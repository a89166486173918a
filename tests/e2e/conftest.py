"""Fixtures for the end-to-end tests: processes stopped by pid at teardown, a testserver under
the shim, a per-test time limit so a hung server fails its test instead of the run, and the
apps marker."""
import os
import shutil
import signal
import tempfile

import pytest

import util.procs
from util import LIB, TESTSERVER, shim_env, start_testserver

TEST_TIME_LIMIT = int(os.environ.get("E2E_TEST_TIMEOUT", "90"))

# The apps marker: a test that starts an outside program (nginx, HAProxy, sshd, apache2, redis,
# node, lighttpd, the docker tooling (npm linters, podman, buildah), the musl toolchain or the
# musl build of the test server) is marked apps, per test (@pytest.mark.apps), per parameter
# (pytest.param(..., marks=pytest.mark.apps)) or per module (pytestmark). The fast inner loop
# runs the rest, the test server, the small C programs and python servers only:
#   /usr/bin/python3 -m pytest -m "not apps" tests/e2e
# An unmarked test that starts one of APP_PROGRAMS through util's Proc fails and says so.
APP_PROGRAMS = frozenset({"haproxy", "nginx", "sshd", "apache2", "redis-server", "node", "npm",
                          "lighttpd", "podman", "buildah", "docker", "musl-gcc", "java", "postgres",
                          "tclsh", "ruby", "php", "escript", "gunicorn", "uwsgi", "mariadbd", "vsftpd",
                          "exim4", "dovecot",
                          os.path.basename(util.TESTSERVER_MUSL)})


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
    config.addinivalue_line("markers", "apps: starts an outside program (nginx, HAProxy, sshd, "
                            "apache2, redis, node, lighttpd, docker tooling, musl); "
                            "-m \"not apps\" is the fast inner loop")


@pytest.fixture(autouse=True)
def _apps_marked(request):
    """Fails a test that starts one of APP_PROGRAMS through Proc without the apps marker."""
    marked = request.node.get_closest_marker("apps") is not None

    def check(argv):
        found = APP_PROGRAMS.intersection(os.path.basename(str(a)) for a in argv)
        if found and not marked:
            raise AssertionError("this test starts %s: mark it apps (tests/e2e/conftest.py)"
                                 % ", ".join(sorted(found)))
    util.procs.before_start = check
    yield
    util.procs.before_start = None


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


@pytest.fixture
def world_dir():
    """A folder a non-root user can reach (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="proxyshim-world-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
