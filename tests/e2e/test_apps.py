"""Real, unmodified programs under the shim behind HAProxy (send-proxy / send-proxy-v2 from
127.0.0.2). Each test asserts the client address the program itself reports: its log line, its
access log, CLIENT LIST, socket.remoteAddress. Clients connect to HAProxy from 127.0.0.5-7;
an untrusted client talks to the program directly from 127.0.0.3 and must be seen as itself."""
import os
import re
import shutil
import time

import pytest

from util import Proc, child_pids, exchange, free_port, haproxy_sender, shim_env, wait_port

TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
CLIENTS = ("127.0.0.5", "127.0.0.6", "127.0.0.7")

pytestmark = pytest.mark.apps  # nginx, HAProxy, redis, node, lighttpd


def need(cmd):
    path = shutil.which(cmd) or (cmd if os.path.exists(cmd) else None)
    assert path, "%s is not installed (tests/deps.sh installs it)" % cmd
    return path


def start_app(procs, argv, port, env=None, cwd=None, name="app"):
    p = Proc(argv, env=shim_env(TRUSTED=TRUSTED, **(env or {})), cwd=cwd, log_name=name)
    procs.append(p)
    try:
        wait_port(port, proc=p)
    except Exception:
        raise RuntimeError("%s did not start:\n%s" % (name, p.output()))
    return p


def front(tmp_path, procs, port, opts):
    h, fport = haproxy_sender(tmp_path, "127.0.0.1", port, opts, TRUSTED)
    procs.append(h)
    return fport


def http_get(port, path, source):
    req = b"GET %s HTTP/1.0\r\nHost: test\r\n\r\n" % path.encode()
    got, me = exchange(port, req, source=source, timeout=10)
    return got, me


def wait_file(path, pattern, timeout=8.0):
    """Waits until the file's text matches the regex; returns the match."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                text = f.read()
            m = re.search(pattern, text, re.M)
            if m:
                return m
        time.sleep(0.05)
    raise AssertionError("%r not found in %s:\n%s" % (pattern, path, text))


@pytest.mark.parametrize("opts", ["send-proxy", "send-proxy-v2"])
def test_python_http_server(procs, tmp_path, opts):
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_bytes(b"hello from python\n")
    p = start_app(procs, ["/usr/bin/python3", "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                          "--directory", str(tmp_path / "www")], port, name="http.server")
    fport = front(tmp_path, procs, port, opts)
    for i, src in enumerate(CLIENTS):
        got, me = http_get(fport, "/hello.txt?c=%d" % i, src)
        assert got.startswith(b"HTTP/1.0 200") and got.endswith(b"\r\n\r\nhello from python\n"), got
    got, me = http_get(port, "/hello.txt?c=direct", UNTRUSTED)
    assert got.endswith(b"hello from python\n"), got
    for i, src in enumerate(CLIENTS):
        m = re.search(r'^(\S+) - - \[[^]]+\] "GET /hello\.txt\?c=%d HTTP/1\.0" 200' % i, p.output(), re.M)
        assert m and m.group(1) == src, p.output()
    m = re.search(r'^(\S+) - - \[[^]]+\] "GET /hello\.txt\?c=direct HTTP/1\.0" 200', p.output(), re.M)
    assert m and m.group(1) == UNTRUSTED, p.output()


def test_nginx_two_workers(procs, tmp_path):
    need("nginx")
    port = free_port()
    d = tmp_path
    for sub in ("logs", "tmp"):
        (d / sub).mkdir()
    conf = d / "nginx.conf"
    conf.write_text("""
user root;
worker_processes 2;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log warn;
events { worker_connections 256; }
http {
    log_format peer '$remote_addr $remote_port "$request" $status';
    access_log %(d)s/logs/access.log peer;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / { return 200 "you are $remote_addr:$remote_port\\n"; }
    }
}
""" % {"d": d, "port": port})
    p = start_app(procs, ["nginx", "-p", str(d), "-c", str(conf), "-g", "daemon off;"], port, name="nginx")
    fport = front(tmp_path, procs, port, "send-proxy-v2")
    seen = []
    for r in range(4):  # several rounds, so both workers are likely to serve
        for i, src in enumerate(CLIENTS):
            got, me = http_get(fport, "/r%d/c%d" % (r, i), src)
            assert got.endswith(b"\r\n\r\nyou are %s:%d\n" % (src.encode(), me[1])), got
            seen.append((r, i, src, me[1]))
    got, me_u = http_get(port, "/direct", UNTRUSTED)
    assert got.endswith(b"you are %s:%d\n" % (UNTRUSTED.encode(), me_u[1])), got
    log = str(d / "logs" / "access.log")
    for r, i, src, cport in seen:
        m = wait_file(log, r'^(\S+) (\d+) "GET /r%d/c%d HTTP/1\.0" 200$' % (r, i))
        assert (m.group(1), int(m.group(2))) == (src, cport)
    m = wait_file(log, r'^(\S+) (\d+) "GET /direct HTTP/1\.0" 200$')
    assert (m.group(1), int(m.group(2))) == (UNTRUSTED, me_u[1])
    with open(d / "logs" / "error.log") as f:
        err = f.read()
    assert "[alert]" not in err and "[emerg]" not in err, err
    # reload: the master forks new workers (the shim's state crosses fork again), old ones exit
    import signal
    workers_before = set(child_pids(p.pid))
    os.kill(p.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = set(child_pids(p.pid))
        if len(now) == 2 and not (now & workers_before):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("nginx did not replace its workers: %s -> %s" % (workers_before, now))
    for i, src in enumerate(CLIENTS):
        got, me = http_get(fport, "/after-reload/c%d" % i, src)
        assert got.endswith(b"\r\n\r\nyou are %s:%d\n" % (src.encode(), me[1])), got
        m = wait_file(log, r'^(\S+) (\d+) "GET /after-reload/c%d HTTP/1\.0" 200$' % i)
        assert (m.group(1), int(m.group(2))) == (src, me[1])


def test_redis_client_list(procs, tmp_path):
    need("redis-server")
    port = free_port()
    start_app(procs, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path),
                      "--logfile", ""], port, name="redis")
    fport = front(tmp_path, procs, port, "send-proxy")
    for src in CLIENTS:
        got, me = exchange(fport, b"CLIENT LIST\r\nQUIT\r\n", source=src, timeout=10)
        m = re.search(rb"\baddr=(\S+):(\d+) ", got)
        assert m, got
        assert (m.group(1).decode(), int(m.group(2))) == (src, me[1]), got
    got, me = exchange(port, b"CLIENT LIST\r\nQUIT\r\n", source=UNTRUSTED, timeout=10)
    m = re.search(rb"\baddr=(\S+):(\d+) ", got)
    assert m and (m.group(1).decode(), int(m.group(2))) == (UNTRUSTED, me[1]), got


def test_redis_sees_many_clients_at_once(procs, tmp_path):
    # Several connections open together: CLIENT LIST from one shows every other one's address.
    import socket as so
    port = free_port()
    start_app(procs, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path),
                      "--logfile", ""], port, name="redis")
    fport = front(tmp_path, procs, port, "send-proxy-v2 proxy-v2-options crc32c,unique-id")
    socks = []
    for src in CLIENTS:
        s = so.create_connection(("127.0.0.1", fport), timeout=10, source_address=(src, 0))
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
        socks.append(s)
    got, me = exchange(fport, b"CLIENT LIST\r\nQUIT\r\n", source="127.0.0.8", timeout=10)
    addrs = set(re.findall(rb"\baddr=(\S+) ", got))
    want = {("%s:%d" % s.getsockname()).encode() for s in socks} | {b"127.0.0.8:%d" % me[1]}
    assert want <= addrs, got
    for s in socks:
        s.close()


def test_node_http_server(procs, tmp_path):
    node = need("/usr/bin/node")
    port = free_port()
    script = tmp_path / "server.js"
    script.write_text("""
const http = require('http');
http.createServer((req, res) => {
  const s = req.socket;
  console.log(`request ${req.url} from ${s.remoteAddress} ${s.remotePort} ${s.remoteFamily}`);
  res.end(`${s.remoteAddress} ${s.remotePort}\\n`);
}).listen(%d, '127.0.0.1');
""" % port)
    p = start_app(procs, [node, str(script)], port, name="node")
    fport = front(tmp_path, procs, port, "send-proxy")
    for i, src in enumerate(CLIENTS):
        got, me = http_get(fport, "/c%d" % i, src)
        assert got.endswith(b"\r\n\r\n%s %d\n" % (src.encode(), me[1])), got
        p.wait_output("request /c%d from %s %d IPv4" % (i, src, me[1]))
    got, me = http_get(port, "/direct", UNTRUSTED)
    assert got.endswith(b"\r\n\r\n%s %d\n" % (UNTRUSTED.encode(), me[1])), got


def test_lighttpd_access_log(procs, tmp_path):
    need("lighttpd")
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"hello from lighttpd\n")
    conf = tmp_path / "lighttpd.conf"
    conf.write_text("""
server.document-root = "%(d)s/www"
server.port = %(port)d
server.bind = "127.0.0.1"
server.modules = ("mod_accesslog")
server.errorlog = "%(d)s/error.log"
server.pid-file = "%(d)s/lighttpd.pid"
accesslog.filename = "%(d)s/access.log"
accesslog.format = "%%h %%{remote}p \\"%%r\\" %%>s"
""" % {"d": tmp_path, "port": port})
    start_app(procs, ["lighttpd", "-D", "-f", str(conf)], port, name="lighttpd")
    fport = front(tmp_path, procs, port, "send-proxy-v2")
    reqs = []
    for i, src in enumerate(CLIENTS):
        got, me = http_get(fport, "/index.html?c=%d" % i, src)
        assert got.endswith(b"hello from lighttpd\n"), got
        reqs.append((i, src, me[1]))
    got, me_u = http_get(port, "/index.html?c=direct", UNTRUSTED)
    assert got.endswith(b"hello from lighttpd\n"), got
    log = str(tmp_path / "access.log")
    for i, src, cport in reqs:
        m = wait_file(log, r'^(\S+) (\d+) "GET /index\.html\?c=%d HTTP/1\.0" 200$' % i)
        assert (m.group(1), int(m.group(2))) == (src, cport)
    m = wait_file(log, r'^(\S+) (\d+) "GET /index\.html\?c=direct HTTP/1\.0" 200$')
    assert (m.group(1), int(m.group(2))) == (UNTRUSTED, me_u[1])


def test_nginx_header_in_pieces_and_spoof(procs, tmp_path):
    # A load balancer whose header arrives in pieces, straight from Python (trusted 127.0.0.2):
    # nginx's workers (epoll, non-blocking accept4) must get it whole. An untrusted client's
    # PROXY line is just a bad request to nginx.
    from util import v1_header, v2_header
    port = free_port()
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text("""
user root;
worker_processes 2;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log warn;
events { worker_connections 256; }
http {
    log_format peer '$remote_addr $remote_port "$request" $status';
    access_log %(d)s/logs/access.log peer;
    client_body_temp_path %(d)s/body;
    server {
        listen 127.0.0.1:%(port)d;
        location / { return 200 "you are $remote_addr:$remote_port\\n"; }
    }
}
""" % {"d": tmp_path, "port": port})
    start_app(procs, ["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"], port,
              name="nginx", env={"TIMEOUT_MS": 3000})
    for i in range(4):
        src = ("198.51.100.%d" % (40 + i), 4000 + i)
        h = (v1_header if i % 2 else v2_header)(src, ("127.0.0.1", port))
        req = b"GET /piece%d HTTP/1.0\r\n\r\n" % i
        got, me = exchange(port, h + req, source=TRUSTED, pieces=[6, 10], delay=0.1, timeout=5)
        assert got.endswith(b"\r\n\r\nyou are %s:%d\n" % (src[0].encode(), src[1])), got
    spoof = b"PROXY TCP4 6.6.6.6 127.0.0.1 6666 %d\r\nGET /spoof HTTP/1.0\r\n\r\n" % port
    got, me = exchange(port, spoof, source=UNTRUSTED, timeout=5)
    assert got.startswith(b"HTTP/1.1 400"), got
    log = str(tmp_path / "logs" / "access.log")
    for i in range(4):
        m = wait_file(log, r'^(\S+) (\d+) "GET /piece%d HTTP/1\.0" 200$' % i)
        assert (m.group(1), int(m.group(2))) == ("198.51.100.%d" % (40 + i), 4000 + i)
    m = wait_file(log, r'^(\S+) (\d+) "PROXY TCP4 6\.6\.6\.6 [^"]*" 400$')
    assert (m.group(1), int(m.group(2))) == (UNTRUSTED, me[1])


def test_node_and_redis_header_in_pieces(procs, tmp_path):
    # libuv's and redis' event loops (epoll, non-blocking accept) with a header in pieces.
    from util import v1_header, v2_header
    node_port, redis_port = free_port(), free_port()
    script = tmp_path / "server.js"
    script.write_text("""
require('http').createServer((req, res) => {
  res.end(`${req.socket.remoteAddress} ${req.socket.remotePort}\\n`);
}).listen(%d, '127.0.0.1');
""" % node_port)
    start_app(procs, [need("/usr/bin/node"), str(script)], node_port, name="node", env={"TIMEOUT_MS": 3000})
    start_app(procs, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path),
                      "--logfile", ""], redis_port, name="redis", env={"TIMEOUT_MS": 3000})
    for i in range(3):
        src = ("203.0.113.%d" % (60 + i), 6000 + i)
        hdr = (v1_header if i % 2 else v2_header)
        got, me = exchange(node_port, hdr(src, ("127.0.0.1", node_port)) + b"GET / HTTP/1.0\r\n\r\n",
                           source=TRUSTED, pieces=[4, 9], delay=0.1, timeout=5)
        assert got.endswith(b"\r\n\r\n%s %d\n" % (src[0].encode(), src[1])), got
        got, me = exchange(redis_port, hdr(src, ("127.0.0.1", redis_port)) + b"CLIENT LIST\r\nQUIT\r\n",
                           source=TRUSTED, pieces=[4, 9], delay=0.1, timeout=5)
        assert b" addr=%s:%d " % (src[0].encode(), src[1]) in got, got


def test_python_http_server_ipv6(procs, tmp_path):
    port = free_port("::1")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.txt").write_bytes(b"v6\n")
    p = Proc(["/usr/bin/python3", "-u", "-m", "http.server", str(port), "--bind", "::1",
              "--directory", str(tmp_path / "www")], env=shim_env(TRUSTED="::1"), log_name="http.server6")
    procs.append(p)
    wait_port(port, "::1", proc=p)
    h, fport = haproxy_sender(tmp_path, "::1", port, "send-proxy-v2", "[::1]")
    procs.append(h)
    got, me = http_get(fport, "/a.txt?via=haproxy", "127.0.0.5")  # IPv4 client, IPv6 server
    assert got.endswith(b"v6\n"), got
    m = re.search(r'^(\S+) - - \[[^]]+\] "GET /a\.txt\?via=haproxy HTTP/1\.0" 200', p.output(), re.M)
    assert m and m.group(1) == "::ffff:127.0.0.5", p.output()
