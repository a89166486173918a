"""Shared helpers for the end-to-end tests: build paths, free loopback ports, processes started
by the tests and stopped by pid, and a real HAProxy as the PROXY sender or receiver."""
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("PROXYSHIM_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libproxyshim.so")
SEND = os.path.join(BUILD, "proxyshim-send")
TESTSERVER = os.path.join(BUILD, "testserver")


def free_port(host="127.0.0.1"):
    """A TCP port that is free on host right now."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    """Waits until something accepts TCP connections on host:port."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect((host, port))
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listens on %s:%d" % (host, port))


def shim_env(**vars):
    """The environment for a program under the shim: LD_PRELOAD plus PROXYSHIM_* (keyword
    names without the prefix, e.g. TRUSTED='127.0.0.2')."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = LIB
    for k, v in vars.items():
        env["PROXYSHIM_" + k.upper()] = str(v)
    return env


class Proc:
    """A process started by a test, stopped by pid (its whole process group) at the end."""

    def __init__(self, argv, env=None, cwd=None, stdin=subprocess.DEVNULL, log_name=None):
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


def haproxy(cfg_body, tmpdir, name="haproxy"):
    """Starts HAProxy in the foreground (-db) with a config of global/defaults plus cfg_body."""
    cfg = os.path.join(str(tmpdir), name + ".cfg")
    with open(cfg, "w") as f:
        f.write("global\n    log stdout format raw local0 info\n\n"
                "defaults\n    mode tcp\n    log global\n    timeout connect 2s\n"
                "    timeout client 10s\n    timeout server 10s\n\n" + cfg_body)
    return Proc(["haproxy", "-db", "-f", cfg], log_name=name)
