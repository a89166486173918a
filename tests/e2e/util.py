"""Shared helpers for the end-to-end tests: build paths, free loopback ports, processes started
by the tests and stopped by pid, and a real HAProxy as the PROXY sender or receiver."""
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("E2E_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libproxyshim.so")
SEND = os.path.join(BUILD, "proxyshim-send")
TESTSERVER = os.path.join(BUILD, "testserver")
WRAPPER = os.path.join(BUILD, "proxyshim")
TESTSERVER_MUSL = os.path.join(BUILD, "testserver-musl")


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


# ---- PROXY headers built in Python, independent of the C code under test ----
import ipaddress  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), bit by bit: slow but obviously right."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def v1_header(src, dst):
    """'PROXY TCP4|TCP6 ...\\r\\n' for (ip, port) pairs; src None gives 'PROXY UNKNOWN\\r\\n'."""
    if src is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src[0], dst[0], src[1], dst[1])).encode()


def v2_header(src=None, dst=None, command=1, tlvs=(), crc=False, fam=None, addr_block=None):
    """A v2 header. src/dst (ip, port) of one family give PROXY over TCP; command 0 is LOCAL.
    fam overrides byte 14 and addr_block the address bytes (for UDP/UNIX/UNSPEC cases).
    tlvs: (type, bytes) pairs; crc appends a CRC32C TLV and fills it in."""
    if addr_block is None:
        if src is None:
            addr_block, f = b"", 0x00
        elif ":" in src[0]:
            addr_block = (ipaddress.IPv6Address(src[0]).packed + ipaddress.IPv6Address(dst[0]).packed
                          + struct.pack("!HH", src[1], dst[1]))
            f = 0x21
        else:
            addr_block = (ipaddress.IPv4Address(src[0]).packed + ipaddress.IPv4Address(dst[0]).packed
                          + struct.pack("!HH", src[1], dst[1]))
            f = 0x11
    else:
        f = 0x00
    if fam is not None:
        f = fam
    tlv = b"".join(struct.pack("!BH", t, len(v)) + v for t, v in tlvs)
    if crc:
        tlv += struct.pack("!BH", 0x03, 4) + b"\0\0\0\0"
    body = addr_block + tlv
    hdr = V2_SIG + bytes([0x20 | command, f]) + struct.pack("!H", len(body)) + body
    if crc:
        hdr = hdr[:-4] + struct.pack("!I", crc32c(hdr))
    return hdr


# ---- the C test server (tests/e2e/testserver.c) and plain clients ----

def start_testserver(*args, env=None, listen="127.0.0.1:0", log_name="testserver", timeout=5.0,
                     binary=None, prefix=()):
    """Starts build/testserver (args as its options) and returns (Proc, port) once it listens.
    binary: another build of it (e.g. TESTSERVER_MUSL); prefix: argv put in front of it (e.g.
    the proxyshim wrapper and its options)."""
    p = Proc(list(prefix) + [binary or TESTSERVER, "--listen", listen] + [str(a) for a in args],
             env=env, log_name=log_name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in p.output().splitlines():
            if line.startswith("listening "):
                return p, int(line.split()[1])
        if p.poll() is not None:
            raise RuntimeError("testserver exited %s:\n%s" % (p.returncode, p.output()))
        time.sleep(0.01)
    p.stop()
    raise TimeoutError("testserver did not start:\n" + p.output())


def conn_lines(proc):
    """The JSON lines a testserver printed, one per connection it served."""
    out = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
    return out


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


def connect(port, host="127.0.0.1", source=None, timeout=5.0):
    """A TCP connection to host:port, bound to source (an IP) when given."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def recv_all(s):
    """Reads until EOF; a reset counts as EOF (what a dropped connection looks like)."""
    chunks = []
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def exchange(port, data, host="127.0.0.1", source=None, timeout=5.0, pieces=None, delay=0.0):
    """Connects, sends data (in pieces of the given sizes, with delay between them), half-closes,
    and returns (bytes received until EOF, the client's own (ip, port)). Sending runs in a thread
    so a server that echoes never deadlocks against a large payload."""
    import threading
    s = connect(port, host, source, timeout)
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


def haproxy_sender(tmpdir, server_host, server_port, server_opts, source, fe_bind="127.0.0.1",
                   name="haproxy"):
    """HAProxy as a PROXY sender: a TCP frontend on fe_bind:<free port> forwarding to
    server_host:server_port with server_opts (e.g. 'send-proxy-v2') from source (e.g. 127.0.0.2,
    or [::1]). Returns (Proc, frontend port) once it listens; waiting costs one connection
    through HAProxy to the server."""
    fport = free_port(fe_bind)
    fb = "[%s]" % fe_bind if ":" in fe_bind else fe_bind
    sh = "[%s]" % server_host if ":" in server_host else server_host
    h = haproxy("frontend fe\n    bind %s:%d\n    unique-id-format %%{+X}o\\ %%ci:%%cp_%%rt\n"
                "    default_backend be\n\n"
                "backend be\n    server s1 %s:%d %s source %s\n"
                % (fb, fport, sh, server_port, server_opts, source), tmpdir, name=name)
    try:
        wait_port(fport, fe_bind, proc=h)
    except Exception:
        raise RuntimeError("HAProxy did not start:\n" + h.stop())
    return h, fport


# ---- real applications under the shim (nginx, node, redis), started with a config of their own ----

def start_nginx(tmpdir, port, env, workers=1, name="nginx", timeout=10.0):
    """nginx in the foreground with `workers` worker processes on 127.0.0.1:port, answering every
    request with 200 "you are $remote_addr:$remote_port\\n" and logging
    '$remote_addr $remote_port "$request" $status' to <tmpdir>/logs/access.log. The workers'
    stderr (the shim's log lines) goes to <tmpdir>/logs/error.log. Returns the Proc (the master)
    once it listens."""
    d = str(tmpdir)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""
user root;
worker_processes %(workers)d;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log warn;
events { worker_connections 1024; }
http {
    log_format peer '$remote_addr $remote_port "$request" $status';
    access_log %(d)s/logs/access.log peer;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / { return 200 "you are $remote_addr:$remote_port\\n"; }
    }
}
""" % {"d": d, "port": port, "workers": workers})
    p = Proc(["nginx", "-p", d, "-c", conf, "-g", "daemon off;"], env=env, log_name=name)
    try:
        wait_port(port, proc=p, timeout=timeout)
    except Exception:
        raise RuntimeError("nginx did not start:\n" + p.stop())
    return p


def start_node_http(tmpdir, port, env, name="node", timeout=10.0):
    """A plain node http server on 127.0.0.1:port that prints and answers
    "<socket.remoteAddress> <socket.remotePort>\\n" for every request."""
    script = os.path.join(str(tmpdir), "server-%d.js" % port)
    with open(script, "w") as f:
        f.write("""
require('http').createServer((req, res) => {
  const s = req.socket;
  console.log(`request ${req.url} from ${s.remoteAddress} ${s.remotePort}`);
  res.end(`${s.remoteAddress} ${s.remotePort}\\n`);
}).listen(%d, '127.0.0.1');
""" % port)
    p = Proc(["/usr/bin/node", script], env=env, log_name=name)
    try:
        wait_port(port, proc=p, timeout=timeout)
    except Exception:
        raise RuntimeError("node did not start:\n" + p.stop())
    return p


def start_redis(tmpdir, port, env, name="redis", timeout=10.0):
    """redis-server on 127.0.0.1:port, no persistence, logging to stdout."""
    p = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmpdir), "--logfile", ""],
             env=env, log_name=name)
    try:
        wait_port(port, proc=p, timeout=timeout)
    except Exception:
        raise RuntimeError("redis-server did not start:\n" + p.stop())
    return p


def child_pids(pid):
    """The pids whose parent is pid (e.g. nginx's workers)."""
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


def percentile(values, q):
    """The q-th percentile (0..100) by the nearest-rank method: a value that was observed."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    k = max(0, min(len(v) - 1, -(-len(v) * q // 100) - 1))
    return v[int(k)]


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
    code = ("import sys; sys.path.insert(0, %r); import util; util._stall_main(%d, %d, %r, %r, %r, %r)"
            % (os.path.dirname(os.path.abspath(__file__)), port, n, bytes(first), list(sources),
               float(duration), float(drain)))
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


# ---- clients from a chosen source address, robust to a busy loopback ----
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


def wait_json(proc, pred=lambda d: True, timeout=5.0):
    """The JSON objects proc printed (lines starting with '{'), once one satisfies pred."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None  # read the output after this: it is then final
        got = []
        for line in proc.output().splitlines():
            if line.startswith("{"):
                try:
                    got.append(json.loads(line))
                except ValueError:
                    pass  # a line still being written
        if any(pred(d) for d in got):
            return got
        if exited or time.monotonic() > deadline:
            raise TimeoutError("no matching JSON line (exited: %s):\n%s" % (exited, proc.output()))
        time.sleep(0.01)


def start_listening(argv, env=None, log_name="prog", timeout=5.0):
    """Starts a program that prints "listening PORT" once ready (the tests/e2e/progs servers);
    returns (Proc, port)."""
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
