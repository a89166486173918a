"""Processes the tests start (stopped by pid), waiting for them to listen, and what /proc says
about them."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["Proc", "free_port", "wait_port", "start_listening", "printed_json", "wait_json", "child_pids", "open_fds"]


# Called with a Proc's argv before it starts, when set (tests/e2e/conftest.py: the apps marker).
before_start = None


class Proc:
    """A process started by a test, stopped by pid (its whole process group) at the end."""

    def __init__(self, argv, env=None, cwd=None, stdin=subprocess.DEVNULL, log_name=None):
        if before_start is not None:
            before_start(argv)
        self.log = tempfile.NamedTemporaryFile(prefix=(log_name or "proc") + "-", suffix=".log", delete=False)
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.p.pid

    def poll(self):
        return self.p.poll()

    @property
    def returncode(self):
        return self.p.returncode

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_output(self, needle, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if needle in out:
                return out
            time.sleep(0.02)
        raise TimeoutError("%r not in output:\n%s" % (needle, self.output()))

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()
        return self.output()


def free_port(host="127.0.0.1"):
    """A TCP port that is free on host right now."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _listens(port, v6):
    """Whether /proc/net/tcp (tcp6) has a listening socket on port."""
    with open("/proc/net/tcp6" if v6 else "/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None, probe=True):
    """Waits until something accepts TCP connections on host:port. probe=False: without
    connecting to it (a connection the server would count or log), by a listening socket on
    port in /proc/net/tcp (tcp6 for an IPv6 host)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d:\n%s"
                               % (proc.returncode, port, proc.output()))
        if not probe:
            if _listens(port, fam == socket.AF_INET6):
                return
            time.sleep(0.02)
            continue
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect((host, port))
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listens on %s:%d" % (host, port))


def start_listening(argv, env=None, log_name="prog", timeout=5.0):
    """Starts a program that prints "listening PORT" once ready (the test server, the
    tests/e2e/progs servers); returns (Proc, port)."""
    p = Proc([str(a) for a in argv], env=env, log_name=log_name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in p.output().splitlines():
            if line.startswith("listening "):
                return p, int(line.split()[1])
        if p.poll() is not None:
            raise RuntimeError("%s exited %s:\n%s" % (argv[0], p.returncode, p.output()))
        time.sleep(0.01)
    p.stop()
    raise TimeoutError("%s did not start:\n%s" % (argv[0], p.output()))


def printed_json(proc):
    """The JSON objects proc printed, one a line (lines starting with '{'), in order."""
    out = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
    return out


def wait_json(proc, pred=lambda d: True, timeout=5.0):
    """The JSON objects proc printed (lines starting with '{'), once one satisfies pred."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None  # read the output after this: it is then final
        got = printed_json(proc)
        if any(pred(d) for d in got):
            return got
        if exited or time.monotonic() > deadline:
            raise TimeoutError("no matching JSON line (exited: %s):\n%s" % (exited, proc.output()))
        time.sleep(0.01)


def child_pids(pid):
    """The pids whose parent is pid (e.g. nginx's workers), sorted."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields follow the last ')'
        if int(st.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return sorted(out)


def open_fds(pid):
    """How many fds the process holds open right now."""
    return len(os.listdir("/proc/%d/fd" % pid))
