"""Plain clients (connect, send, read to EOF) and stalling peers."""
import errno
import json
import os
import socket
import subprocess
import threading
import time

from .procs import Proc

__all__ = ["IP_BIND_ADDRESS_NO_PORT", "connect", "connect_from", "recv_all", "shut_wr", "exchange",
           "start_stallers", "stallers_result"]

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


def connect_from(port, source, host="127.0.0.1", timeout=5.0, source_port=None, reuse=False):
    """A TCP connection to host:port from source. Without source_port the kernel picks the
    port at connect() time (IP_BIND_ADDRESS_NO_PORT), so thousands of TIME_WAIT sockets left on
    source by earlier tests cannot make bind() fail. reuse: SO_REUSEADDR and SO_REUSEPORT, so
    another socket may later bind the very same source ip:port (source_port must be given)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if source_port is None:
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
        else:
            s.bind((source, source_port))
        s.connect((host, port))
    except Exception:
        s.close()
        raise
    return s


def connect(port, host="127.0.0.1", source=None, timeout=5.0, port_at_connect=False):
    """A TCP connection to host:port, bound to source (an IP) when given: to a port bind()
    picks, or with port_at_connect as connect_from() does (the port picked at connect() by the
    whole 4-tuple, so TIME_WAIT sockets other tests left on source cannot make bind() fail)."""
    if source is not None and port_at_connect:
        return connect_from(port, source, host, timeout)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def shut_wr(s):
    """shutdown(SHUT_WR), where a server that closed the connection first (a refused header) is
    not an error: the kernel answers ENOTCONN once the reset has arrived, and what follows reads
    EOF as it would have."""
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise


def recv_all(s, how=False):
    """Reads until EOF; a reset counts as EOF (what a dropped connection looks like).
    how: returns (bytes, 'eof' or 'reset'), how the connection ended."""
    chunks = []
    end = "eof"
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            end = "reset"
            break
        if not b:
            break
        chunks.append(b)
    got = b"".join(chunks)
    return (got, end) if how else got


def exchange(port, data, host="127.0.0.1", source=None, timeout=5.0, pieces=None, delay=0.0,
             port_at_connect=False):
    """Connects (port_at_connect: see connect()), sends data (in pieces of the given sizes, with
    delay between them), half-closes, and returns (bytes received until EOF, the client's own
    (ip, port)). Sending runs in a thread so a server that echoes never deadlocks against a
    large payload."""
    s = connect(port, host, source, timeout, port_at_connect)
    try:
        me = s.getsockname()[:2]

        def send():
            try:
                if pieces is None:
                    s.sendall(data)
                else:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    off = 0
                    for n in pieces:
                        s.sendall(data[off:off + n])
                        off += n
                        if delay:
                            time.sleep(delay)
                    s.sendall(data[off:])
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server dropped the connection: recv_all sees it
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = recv_all(s)
        t.join(timeout)
        return got, me
    finally:
        s.close()


# ---- stalling peers: connections that send part of a header and then nothing ----

def _stall_main(port, n, first, sources, duration, drain):
    """The staller process: n connections at once to 127.0.0.1:port, each from the next of
    `sources` (a list of IPs), sending `first` and then nothing; as soon as one is dropped (EOF
    or reset) it is reconnected, until `duration` s have passed. Then it waits up to `drain` s
    for those still open to be dropped. Prints one JSON object: "closed": [seconds from each
    connect to its EOF/reset], "open": how many were never dropped, "errors": [strings],
    "data": connections that received bytes instead of being dropped."""
    import selectors
    sel = selectors.DefaultSelector()
    res = {"closed": [], "open": 0, "errors": [], "data": 0, "connects": 0}
    t_end = time.monotonic() + duration
    nxt = [0]

    def one():
        src = sources[nxt[0] % len(sources)]
        nxt[0] += 1
        t0 = time.monotonic()
        try:
            s = connect(port, source=src, timeout=2.0)
            s.sendall(first)
            s.setblocking(False)
        except OSError as e:
            res["errors"].append("connect: %s" % e)
            return
        res["connects"] += 1
        sel.register(s, selectors.EVENT_READ, t0)

    for _ in range(n):
        one()
    while True:
        now = time.monotonic()
        if now >= t_end + drain or not sel.get_map():
            break
        for key, _ in sel.select(timeout=min(0.05, max(0.0, t_end + drain - now))):
            s, t0 = key.fileobj, key.data
            try:
                b = s.recv(4096)
            except ConnectionResetError:
                b = b""
            except BlockingIOError:
                continue
            t = time.monotonic()
            sel.unregister(s)
            s.close()
            if b:
                res["data"] += 1
            else:
                res["closed"].append(t - t0)
            if t < t_end:
                one()
    res["open"] = len(sel.get_map())
    print(json.dumps(res), flush=True)


def start_stallers(port, n, first, sources=("127.0.0.2",), duration=3.0, drain=2.0):
    """Starts _stall_main in its own process (its own interpreter: the test's measurements
    must not wait for the stallers' GIL). Returns the Proc; stallers_result() reads it."""
    code = ("import sys; sys.path.insert(0, %r); from util.clients import _stall_main; "
            "_stall_main(%d, %d, %r, %r, %r, %r)"
            % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), port, n, bytes(first),
               list(sources), float(duration), float(drain)))
    return Proc(["/usr/bin/python3", "-c", code], log_name="stallers")


def stallers_result(proc, timeout):
    """Waits for the staller process to finish and returns its JSON result."""
    try:
        proc.p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError("stallers did not finish:\n" + proc.stop())
    out = proc.stop()
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("stallers printed no result (exit %s):\n%s" % (proc.returncode, out))
