"""Outside servers as the tests run them: HAProxy (the PROXY sender or receiver), nginx, node,
redis. A test that starts one is marked apps (tests/e2e/conftest.py)."""
import os

from .procs import Proc, free_port, wait_port

__all__ = ["haproxy", "haproxy_sender", "start_nginx", "start_node_http", "start_redis", "need_file",
           "read_log"]


def _serving(p, port, what, host="127.0.0.1", timeout=10.0):
    """Returns p once something accepts connections on host:port; else stops it and raises
    with its output."""
    try:
        wait_port(port, host, proc=p, timeout=timeout)
    except Exception:
        raise RuntimeError("%s did not start:\n%s" % (what, p.stop()))
    return p


def haproxy(cfg_body, tmpdir, name="haproxy"):
    """Starts HAProxy in the foreground (-db) with a config of global/defaults plus cfg_body."""
    cfg = os.path.join(str(tmpdir), name + ".cfg")
    with open(cfg, "w") as f:
        f.write("global\n    log stdout format raw local0 info\n\n"
                "defaults\n    mode tcp\n    log global\n    timeout connect 2s\n"
                "    timeout client 10s\n    timeout server 10s\n\n" + cfg_body)
    return Proc(["haproxy", "-db", "-f", cfg], log_name=name)


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
    return _serving(h, fport, "HAProxy", fe_bind), fport


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
    return _serving(p, port, "nginx", timeout=timeout)


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
    return _serving(p, port, "node", timeout=timeout)


def start_redis(tmpdir, port, env, name="redis", timeout=10.0):
    """redis-server on 127.0.0.1:port, no persistence, logging to stdout."""
    p = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmpdir), "--logfile", ""],
             env=env, log_name=name)
    return _serving(p, port, "redis-server", timeout=timeout)


def need_file(path):
    """path, asserting that a package installed it (the matrix's and the grace's servers)."""
    assert os.path.exists(path), "%s is not installed (tests/deps.sh installs it)" % path
    return path


def read_log(path):
    """A server's log file as text so far; empty before the server wrote it."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
