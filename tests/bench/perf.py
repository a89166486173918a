#!/usr/bin/python3
"""make bench, performance section: proxyshim side by side with no shim and with HAProxy
terminating the protocol (docs/PERFORMANCE.md: A to K). Every server is started here, pinned to
one core, with the load generator on the other; the connection scenarios run interleaved in
rounds, and a check's figure is the median over rounds of the ratio between runs of the same
round (quartiles printed beside it). G's six configurations (and a second plain connection,
the noise floor) stream at once, their connections fed in turn 64 MiB at a time (its quartiles are over those segments, paired); H's three
variants (no library, an empty one, the shim) take turns in each round. Prints the machine,
the raw figures (medians) and one table of checks (figure, target, PASS/MISS); exits 1 when a
target is missed.
CPU time per connection (K and the "srv cpu" column) is read from /proc/<pid>/task/*/schedstat:
the run time utime + stime are split from, in ns instead of 10 ms ticks, which 0.5 s runs need.

Environment: QUICK=1 (fewer and shorter rounds, under 90 s), BENCH_ONLY=GROUP,... (run and
report only these scenario groups: conn (A to F, and K, which reuses their runs), G, H, I, J,
P (connections passed to another process with SCM_RIGHTS), U (untrusted clients under PROXYSHIM_UNTRUSTED=pass and =reject),
S (the supervised mode: Go net/http and the static test server, plain, supervised, and Go behind HAProxy); e.g. BENCH_ONLY=G,H; default all; the exit status covers the checks that ran), BUILD (default
build), BENCH_ROUNDS, BENCH_SECS, BENCH_CONNS to override the round count, seconds per run and
concurrent connections."""
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from util import child_pids, free_port, wait_port  # noqa: E402

BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
LIB = os.path.join(BUILD, "libproxyshim.so")
TESTSERVER = os.path.join(BUILD, "testserver")
TOOLS = {n: os.path.join(BUILD, "bench", n) for n in ("loadgen", "bulksink", "spawn", "eagain", "shimsize",
                                                      "empty.so", "consume")}
WRAPPER = os.path.join(BUILD, "proxyshim")
SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
GO_SERVER = os.path.join(BUILD, "progs", "go-httpserver")
TS_STATIC = os.path.join(BUILD, "progs", "testserver-static")
GROUPS = ("conn", "G", "H", "I", "J", "P", "U", "S")
# What each group runs: checked before anything starts.
NEEDS = {"conn": ["loadgen", LIB, TESTSERVER, "nginx", "haproxy"], "G": ["loadgen", "bulksink", LIB],
         "H": ["spawn", "empty.so", LIB], "I": ["loadgen", "eagain", "shimsize", LIB, TESTSERVER],
         "J": ["loadgen", LIB, TESTSERVER, "strace", "consume"],
         "P": [LIB, "strace", os.path.join(BUILD, "progs", "fdpass")],
         "U": ["loadgen", LIB, TESTSERVER, "nginx", "strace"],
         "S": ["loadgen", WRAPPER, SUPERVISOR, GO_SERVER, TS_STATIC, "haproxy", "strace"]}

QUICK = os.environ.get("QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 6 if QUICK else 24))
SECS = float(os.environ.get("BENCH_SECS", 0.4 if QUICK else 0.5))
CONNS = int(os.environ.get("BENCH_CONNS", 16))
BULK_BYTES = (512 << 20) if QUICK else (2 << 30)  # per connection
BULK_SEG = 64 << 20
BULK_ROUNDS = 2 if QUICK else 9
SPAWN_RUNS = 1000
SPAWN_ROUNDS = 3 if QUICK else 9
RSS_CONNS = 20000 if QUICK else 100000
EAGAIN_CALLS = 1000000
STRACE_M1, STRACE_M2 = (50, 250) if QUICK else (100, 600)

TRUSTED_NET = "127.0.1.0/24"  # the proxies' addresses: PROXYSHIM_TRUSTED
TRUSTED_SRC = "127.0.1.250"   # one of them, for the single-source runs (G, I, J)
UNTRUSTED_SRC = "127.0.2.1"   # direct clients the shim must leave alone
# Each connection scenario has addresses of its own, used in turn (loadgen --sources): after
# the client's half-close its side keeps TIME_WAIT, and tens of thousands of them on one
# address exhaust the ephemeral ports (connect() then scans for a free one and the rate
# collapses for reasons that have nothing to do with the server).
SOURCES = {"A": "127.0.1.0", "B": "127.0.2.0", "C": "127.0.1.16", "D": "127.0.1.32", "E": "127.0.1.48",
           "F": "127.0.1.64", "Upass": "127.0.2.32", "Ureject": "127.0.2.48",
           "Sgo-plain": "127.0.1.80", "Sgo-sup": "127.0.1.96", "Sgo-haproxy": "127.0.1.112",
           "Sc-plain": "127.0.1.128", "Sc-sup": "127.0.1.144"}
NSOURCES = 16
CLIENT = "203.0.113.7"       # the client the headers announce

NCPU = os.cpu_count() or 1
SERVER_CPU, CLIENT_CPU = ("1", "0") if NCPU >= 2 else (None, None)


def pinned(cpu, argv):
    return (["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []) + argv


def plain_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXYSHIM_", "LD_PRELOAD"))}
    return env


def shim_env(**kw):
    env = plain_env()
    env["LD_PRELOAD"] = LIB
    env["PROXYSHIM_TRUSTED"] = TRUSTED_NET
    env["PROXYSHIM_LOG"] = "error"
    for k, v in kw.items():
        env["PROXYSHIM_" + k.upper()] = v
    return env


class Server:
    """A process started by the bench (its own session), stopped by pid at the end."""
    all = []

    def __init__(self, argv, env, stdout=subprocess.DEVNULL, cpu=SERVER_CPU):
        self.log = tempfile.TemporaryFile()
        self.p = subprocess.Popen(pinned(cpu, argv), env=env, stdin=subprocess.DEVNULL,
                                  stdout=stdout, stderr=self.log, start_new_session=True)
        self.pid = self.p.pid
        Server.all.append(self)

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()

    def errors(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")


def cpu_ns(pids):
    """CPU time (user + system) of the processes' threads, in ns (schedstat's run time: the
    same clock as utime + stime, without the 10 ms tick)."""
    total = 0
    for pid in pids:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
    return total


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def kv(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


def loadgen(port, source, header, expect, secs=None, count=None, conns=CONNS, half_close=False, sources=1):
    argv = [TOOLS["loadgen"], "--target", "127.0.0.1:%d" % port, "--source", source, "--sources", str(sources),
            "--header", header, "--conns", str(conns), "--client", CLIENT + ":4711"]
    argv += ["--count", str(count)] if count else ["--time", str(secs)]
    if expect:
        argv += ["--expect", expect]
    if half_close:
        argv.append("--half-close")
    r = subprocess.run(pinned(CLIENT_CPU, argv), capture_output=True, text=True, timeout=600)
    line = [x for x in r.stdout.splitlines() if x.startswith("loadgen ")]
    if not line:
        raise RuntimeError("loadgen failed: %s %s" % (r.stdout, r.stderr))
    out = kv(line[-1])
    if out.get("errors", 0) > 0:
        raise RuntimeError("loadgen: %d of %d connections failed or got an unexpected reply "
                           "(expected %r): %s" % (out["errors"], out["errors"] + out["conns"],
                                                  expect, r.stderr.strip()))
    return out


# ---- servers ----

def start_testserver(env, extra=()):
    port = free_port()
    s = Server([TESTSERVER, "--listen", "127.0.0.1:%d" % port, "--mode", "epoll", "--greet"]
               + list(extra), env)
    wait_port(port, proc=s.p)
    s.port = port
    s.cpu_pids = [s.pid]
    return s


def start_nginx(tmp, name, env):
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "logs"))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""user root;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location / { return 200 "client=$remote_addr;\\n"; }
    }
}
""" % {"d": d, "port": port})
    s = Server(["nginx", "-p", d, "-c", conf, "-g", "daemon off;"], env)
    wait_port(port, proc=s.p)
    s.port = port
    for _ in range(100):
        s.cpu_pids = child_pids(s.pid)
        if s.cpu_pids:
            break
        time.sleep(0.05)
    return s


def start_haproxy(tmp, backends):
    """One HAProxy (one thread) with a frontend per backend port: accept-proxy, mode tcp."""
    cfg = os.path.join(tmp, "haproxy.cfg")
    body = ("global\n    nbthread 1\n    maxconn 8000\n\ndefaults\n    mode tcp\n"
            "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n")
    ports = []
    for i, bport in enumerate(backends):
        p = free_port()
        ports.append(p)
        body += ("frontend fe%d\n    bind 127.0.0.1:%d accept-proxy\n    default_backend be%d\n\n"
                 "backend be%d\n    server s 127.0.0.1:%d\n\n" % (i, p, i, i, bport))
    with open(cfg, "w") as f:
        f.write(body)
    s = Server(["haproxy", "-db", "-f", cfg], plain_env())
    try:
        for p in ports:
            wait_port(p, proc=s.p)
    except RuntimeError:
        raise RuntimeError("HAProxy did not start: " + s.errors())
    s.cpu_pids = [s.pid]
    return s, ports


# ---- A to F, and K ----

SCENARIOS = [
    ("A", "plain: no shim, no header"),
    ("B", "shim, untrusted clients, no header"),
    ("C", "shim, v1 header"),
    ("D", "shim, v2 header"),
    ("E", "shim, v2 + CRC32C + 3 TLVs"),
    ("F", "HAProxy accept-proxy -> plain"),
]


def conn_scenarios(tmp):
    plain_ts = start_testserver(plain_env())
    shim_ts = start_testserver(shim_env())
    plain_ng = start_nginx(tmp, "nginx-plain", plain_env())
    shim_ng = start_nginx(tmp, "nginx-shim", shim_env())
    hap, (hap_ts, hap_ng) = start_haproxy(tmp, [plain_ts.port, plain_ng.port])

    def fmt(target, addr):
        """What the reply must contain: the address (or its start) the server saw."""
        if target == "testserver":
            return "peer=" + addr
        return "client=" + addr.replace(" ", ";")

    runs = {}
    for target, plain, shim, hport in (("testserver", plain_ts, shim_ts, hap_ts),
                                       ("nginx", plain_ng, shim_ng, hap_ng)):
        half = target == "testserver"  # it answers (echoes) until the client's EOF
        runs[(target, "A")] = (plain.port, "none", fmt(target, "127.0.1."), plain.cpu_pids, half)
        runs[(target, "B")] = (shim.port, "none", fmt(target, "127.0.2."), shim.cpu_pids, half)
        runs[(target, "C")] = (shim.port, "v1", fmt(target, CLIENT + " "), shim.cpu_pids, half)
        runs[(target, "D")] = (shim.port, "v2", fmt(target, CLIENT + " "), shim.cpu_pids, half)
        runs[(target, "E")] = (shim.port, "v2tlv", fmt(target, CLIENT + " "), shim.cpu_pids, half)
        runs[(target, "F")] = (hport, "v2", fmt(target, "127.0.0.1 "), plain.cpu_pids + hap.cpu_pids, half)

    # warm-up: every path once (and a check that each server answers as expected)
    for (target, sid), (port, hdr, expect, pids, half) in runs.items():
        loadgen(port, SOURCES[sid], hdr, expect, secs=0.3, half_close=half, sources=NSOURCES)

    results = {k: [] for k in runs}
    ids = [sid for sid, _ in SCENARIOS]
    for rnd in range(ROUNDS):
        # One target's six scenarios back to back (a few seconds, so the ratios within a
        # round see the same background load), A B C ... rotated one step each round so no
        # scenario always follows the same one; the targets alternate.
        for target in (("testserver", "nginx") if rnd % 2 == 0 else ("nginx", "testserver")):
            for sid in ids[rnd % len(ids):] + ids[:rnd % len(ids)]:
                port, hdr, expect, pids, half = runs[(target, sid)]
                c0 = cpu_ns(pids)
                out = loadgen(port, SOURCES[sid], hdr, expect, secs=SECS, half_close=half, sources=NSOURCES)
                out["lg_cpu_us"] = out["cpu_us"]
                out["cpu_us"] = (cpu_ns(pids) - c0) / 1000.0 / max(out["conns"], 1)
                results[(target, sid)].append(out)
        if (rnd + 1) % 5 == 0 or rnd + 1 == ROUNDS:
            sys.stderr.write("  round %d/%d done\n" % (rnd + 1, ROUNDS))
    for s in (hap, plain_ts, shim_ts, plain_ng, shim_ng):
        s.stop()
    return results


# ---- G: bulk ----

# "control": a second plain read() connection, the noise floor: what two identical
# connections measured side by side differ by on this machine.
BULK_CONFIGS = [(mode, how) for how in ("read", "recv") for mode in ("plain", "accept", "lazy")] + [("control", "read")]


def bulk_line(line):
    """One target's line of loadgen --segment: numbers, the target and header as text, and
    seg_ms as a list."""
    out = {}
    for field in line.split()[2:]:
        k, _, v = field.partition("=")
        if k == "seg_ms":
            out[k] = [float(x) for x in v.split(",")]
        else:
            out[k] = v if k in ("target", "header") else float(v)
    return out


def bulk(tmp):
    """The six configurations, and a second plain read() connection as a control, stream at
    once: one loadgen a round feeds their connections in
    turn, BULK_SEG bytes at a time, each sink acknowledging its segment before the next one
    goes anywhere. Separate runs one after the other would each see a different machine (GiB/s
    varies 2x between them here), which hides the shim's per-read cost of about 0.1%."""
    configs = {}
    for mode, how in BULK_CONFIGS:
        env = plain_env() if mode in ("plain", "control") else shim_env(consume=mode)
        s = Server([TOOLS["bulksink"], "--listen", "127.0.0.1:0", "--read-with", how, "--ack", str(BULK_SEG),
                    "--peek"], env, stdout=subprocess.PIPE)
        line = s.p.stdout.readline().decode()
        if not line.startswith("listening"):
            raise RuntimeError("bulksink did not start: %s" % s.errors())
        configs[(mode, how)] = (s, int(line.split()[1]))
    res = {k: [] for k in configs}
    for rnd in range(BULK_ROUNDS):
        # loadgen rotates the order by one every segment; the round rotates where it starts.
        order = BULK_CONFIGS[rnd % len(BULK_CONFIGS):] + BULK_CONFIGS[:rnd % len(BULK_CONFIGS)]
        argv = [TOOLS["loadgen"], "--bulk", str(BULK_BYTES), "--segment", str(BULK_SEG), "--source", TRUSTED_SRC]
        for mode, how in order:
            argv += ["--target", "127.0.0.1:%d" % configs[(mode, how)][1], "--header", "none" if mode in ("plain", "control") else "v2"]
        r = subprocess.run(pinned(CLIENT_CPU, argv), capture_output=True, text=True, timeout=600)
        if r.returncode != 0:  # (before reading the sinks: one never connected to would not answer)
            raise RuntimeError("bulk loadgen: %s %s %s" % (r.stdout, r.stderr,
                                                           " ".join(s.errors() for s, _ in configs.values())))
        lines = {}
        for x in r.stdout.splitlines():
            if x.startswith("loadgen bulk target="):
                out = bulk_line(x)
                lines[out["target"]] = out
        for key in order:
            s, port = configs[key]
            out = lines.get("127.0.0.1:%d" % port)
            # The sink's line comes after loadgen saw its EOF; a dead sink gives an empty one.
            sink = kv(s.p.stdout.readline().decode())
            if out is None or sink.get("bytes") != BULK_BYTES:
                raise RuntimeError("bulk %s/%s: %s sink=%s %s" % (key + (r.stdout, sink, s.errors())))
            # In lazy mode the header must reach the first read (bulksink --peek saw it still
            # queued after accept()); elsewhere accept() took it, or there was none.
            want = 1 if key[0] == "lazy" else 0
            if sink.get("header_queued") != want:
                raise RuntimeError("bulk %s/%s: bulksink header_queued=%s, expected %d (lazy: left to the first "
                                   "read; else taken by accept(), or none sent)" % (key + (sink.get("header_queued"),
                                                                                        want)))
            out["calls"] = sink["calls"]
            out["sink_cpu_s"] = sink["cpu_s"]
            res[key].append(out)
        sys.stderr.write("  G round %d/%d done\n" % (rnd + 1, BULK_ROUNDS))
    for s, _ in configs.values():
        s.stop()
    return res


def bulk_ratio(xs, ys):
    """X over plain in GiB/s: the median over rounds of the rounds' ratios, and the quartiles
    over segment pairs (segment i of both, sent within one rotation of each other)."""
    r = sorted(y_ms / x_ms for x, y in zip(xs, ys) for x_ms, y_ms in zip(x["seg_ms"], y["seg_ms"]))
    q = statistics.quantiles(r, n=4, method="inclusive")
    return statistics.median(x["gib_s"] / y["gib_s"] for x, y in zip(xs, ys)), q[0], q[2]


def read_instructions():
    """User-space instructions per read()/recv() call of bulksink, counted by callgrind:
    (Ir(256 MiB) - Ir(64 MiB)) / (calls(256 MiB) - calls(64 MiB)), so start-up cancels out.
    Deterministic, unlike throughput on a shared machine."""
    if not shutil.which("valgrind"):
        return {}
    out = {}
    for mode in ("plain", "accept", "lazy"):
        env = plain_env() if mode == "plain" else shim_env(consume=mode)
        for how in ("read", "recv"):
            pts = []
            for size in (64 << 20, 256 << 20):
                with tempfile.NamedTemporaryFile(suffix=".cg") as cg:
                    port = free_port()
                    s = Server(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg.name,
                                TOOLS["bulksink"], "--listen", "127.0.0.1:%d" % port, "--read-with", how, "--once"],
                               env, stdout=subprocess.PIPE, cpu=None)
                    if not s.p.stdout.readline().startswith(b"listening"):
                        raise RuntimeError("bulksink under callgrind: %s" % s.errors())
                    subprocess.run([TOOLS["loadgen"], "--target", "127.0.0.1:%d" % port, "--source", TRUSTED_SRC,
                                    "--header", "none" if mode == "plain" else "v2", "--bulk", str(size)],
                                   capture_output=True, timeout=300, check=True)
                    calls = kv(s.p.stdout.readline().decode())["calls"]
                    s.p.wait(60)
                    ir = None
                    with open(cg.name) as f:
                        for line in f:
                            if line.startswith("totals:"):
                                ir = int(line.split()[1])
                    pts.append((ir, calls))
            out[(mode, how)] = (pts[1][0] - pts[0][0]) / (pts[1][1] - pts[0][1])
    return out


# ---- H: start-up ----

# An empty library preloaded (tests/bench/empty.c): what any LD_PRELOAD costs, the shim's floor.
STARTUP = ("plain", "empty", "shim")
STARTUP_LABEL = {"plain": "without LD_PRELOAD", "empty": "with an empty library", "shim": "with the shim"}


def startup_envs():
    base = {"PATH": "/usr/bin:/bin"}
    pre = dict(base, PROXYSHIM_TRUSTED="10.0.0.0/8")  # the same environment, only the library differs
    return {"plain": base, "empty": dict(pre, LD_PRELOAD=TOOLS["empty.so"]), "shim": dict(pre, LD_PRELOAD=LIB)}


def startup():
    envs = startup_envs()
    res = {k: [] for k in STARTUP}
    for rnd in range(SPAWN_ROUNDS):
        for k in STARTUP[rnd % 3:] + STARTUP[:rnd % 3]:
            argv = [TOOLS["spawn"], str(SPAWN_RUNS)] + ["%s=%s" % item for item in envs[k].items()] + ["--", "/bin/true"]
            r = subprocess.run(pinned(SERVER_CPU, argv), capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError("spawn: %s" % r.stderr)
            res[k].append(kv(r.stdout))
    return res


def startup_instructions():
    """Instructions of one /bin/true run (callgrind, from the dynamic loader on), without
    LD_PRELOAD, with the empty library and with the shim."""
    if not shutil.which("valgrind"):
        return {}
    out = {}
    for k, env in startup_envs().items():
        with tempfile.NamedTemporaryFile(suffix=".cg") as cg:
            subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg.name, "/bin/true"],
                           env=env, capture_output=True, timeout=120, check=True)
            with open(cg.name) as f:
                out[k] = next(int(x.split()[1]) for x in f if x.startswith("totals:"))
    return out


# ---- I: memory ----

def memory():
    out = {}
    for k, env in (("plain", plain_env()), ("shim", shim_env())):
        r = subprocess.run([TOOLS["eagain"], str(EAGAIN_CALLS)], env=env, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError("eagain: %s" % r.stderr)
        out["eagain_" + k] = kv(r.stdout)
    for k, env, hdr in (("plain", plain_env(), "none"), ("shim", shim_env(), "v2")):
        s = start_testserver(env)
        expect = "peer=127.0.1." if k == "plain" else "peer=%s " % CLIENT
        loadgen(s.port, "127.0.1.128", hdr, expect, count=2000, half_close=True, sources=64)
        r0 = rss_kb(s.pid)
        loadgen(s.port, "127.0.1.128", hdr, expect, count=RSS_CONNS, half_close=True, sources=64)
        r1 = rss_kb(s.pid)
        s.stop()
        out["rss_" + k] = (r0, r1)
    r = subprocess.run([TOOLS["shimsize"]], capture_output=True, text=True)
    out["shim_fd"] = kv(r.stdout)["bytes"]
    return out


# ---- J: system calls ----

def strace_counts(path):
    """System call name -> calls, from an `strace -c -o path` summary."""
    calls = {}
    with open(path) as g:
        for line in g:
            p = line.split()
            if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
                calls[p[-1]] = int(p[3])
    return calls


def strace_calls(env, hdr, source, m):
    """System calls (all threads) of a testserver that serves m connections and exits."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as f:
        port = free_port()
        argv = ["strace", "-f", "-c", "-o", f.name]
        for k in ("LD_PRELOAD", "PROXYSHIM_TRUSTED", "PROXYSHIM_LOG", "PROXYSHIM_UNTRUSTED"):
            if k in env:
                argv += ["-E", "%s=%s" % (k, env[k])]
        argv += [TESTSERVER, "--listen", "127.0.0.1:%d" % port, "--mode", "epoll", "--greet",
                 "--max-conns", str(m)]
        out = tempfile.TemporaryFile()
        s = Server(argv, plain_env(), stdout=out)
        deadline = time.monotonic() + 20
        while True:  # its "listening" line (a probe connection would be counted)
            out.seek(0)
            if out.read(9) == b"listening":
                break
            if s.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("testserver under strace did not start: %s" % s.errors())
            time.sleep(0.02)
        expect = "peer=%s " % (CLIENT if hdr != "none" else source)
        loadgen(port, source, hdr, expect, count=m, conns=1, half_close=True)
        s.p.wait(30)
        calls = strace_counts(f.name)
        return calls


def syscalls():
    res = {}
    for k, env, hdr in (("plain", plain_env(), "none"), ("shim", shim_env(), "v2")):
        a = strace_calls(env, hdr, TRUSTED_SRC, STRACE_M1)
        b = strace_calls(env, hdr, TRUSTED_SRC, STRACE_M2)
        names = set(a) | set(b)
        res[k] = {n: (b.get(n, 0) - a.get(n, 0)) / float(STRACE_M2 - STRACE_M1) for n in names}
    # What those two calls cost here: tests/bench/consume.c, pinned like the servers.
    r = subprocess.run(pinned(SERVER_CPU, [TOOLS["consume"]]), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("consume: %s" % r.stderr)
    res["cost"] = kv(r.stdout)
    return res


# ---- P: a connection passed to another process (SCM_RIGHTS), as Node's cluster does ----

def fdpass_calls(env, m, header):
    """System calls of fdpass's acceptor and worker (each under strace -f -c) for m trusted
    connections, each sending its header (or none) and 64 bytes, then half-closing."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from util import connect_from, recv_all, v2_header
    prog = os.path.join(BUILD, "progs", "fdpass")
    tmp = tempfile.mkdtemp(prefix="proxyshim-bench-fdpass-")
    path = os.path.join(tmp, "s")
    out = {}
    try:
        def traced(role, argv, name):
            a = ["strace", "-f", "-c", "-o", os.path.join(tmp, name)]
            for k in ("LD_PRELOAD", "PROXYSHIM_TRUSTED", "PROXYSHIM_LOG"):
                if k in env:
                    a += ["-E", "%s=%s" % (k, env[k])]
            f = open(os.path.join(tmp, name + ".out"), "w+")
            return Server(a + [prog, role] + argv, plain_env(), stdout=f), f

        def wait_line(f, word):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                f.seek(0)
                for line in f.read().splitlines():
                    if line.startswith(word):
                        return line
                time.sleep(0.02)
            raise RuntimeError("fdpass under strace did not start")
        w, wf = traced("worker", ["--unix", path], "worker")
        wait_line(wf, "ready")
        a, af = traced("acceptor", ["--unix", path], "acceptor")
        port = int(wait_line(af, "listening").split()[1])
        body = bytes(range(64))
        for i in range(m):
            s = connect_from(port, TRUSTED_SRC, timeout=10.0)
            hdr = v2_header((CLIENT, 1000 + i), ("127.0.0.1", port)) if header else b""
            s.sendall(hdr + body)
            s.shutdown(socket.SHUT_WR)
            if recv_all(s) != body:
                raise RuntimeError("fdpass: echo differs")
            s.close()
        a.stop()  # the worker ends when its sender goes
        w.p.wait(20)
        for role in ("acceptor", "worker"):
            out[role] = strace_counts(os.path.join(tmp, role))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def fdpass_bench():
    res = {}
    for k, env, hdr in (("plain", plain_env(), False), ("shim", shim_env(), True)):
        a = fdpass_calls(env, STRACE_M1, hdr)
        b = fdpass_calls(env, STRACE_M2, hdr)
        res[k] = {}
        for role in ("acceptor", "worker"):
            names = set(a[role]) | set(b[role])
            res[k][role] = {n: (b[role].get(n, 0) - a[role].get(n, 0)) / float(STRACE_M2 - STRACE_M1)
                            for n in names}
    return res


def report_fdpass(pres, check):
    for role in ("acceptor", "worker"):
        jp, js = pres["plain"][role], pres["shim"][role]
        names = sorted(n for n in set(jp) | set(js) if abs(js.get(n, 0) - jp.get(n, 0)) >= 0.05)
        extra = sum(js.values()) - sum(jp.values())
        print("P   %s: system calls per passed connection (strace -f -c, (calls(%d) - calls(%d)) / %d): "
              "%.2f plain, %.2f shim; differences: %s" % (
                  role, STRACE_M2, STRACE_M1, STRACE_M2 - STRACE_M1, sum(jp.values()), sum(js.values()),
                  ", ".join("%s %+.2f" % (n, js.get(n, 0) - jp.get(n, 0)) for n in names) or "none"))
        if role == "worker":
            check("P syscalls per received connection, extra", extra, "<= 1", extra <= 1.0 + 0.05)


# ---- U: untrusted clients, PROXYSHIM_UNTRUSTED=pass against =reject ----

UNTRUSTED_MODES = ("pass", "reject")


def untrusted_scenarios(tmp):
    """What reject's one peek per untrusted connection costs: the same untrusted clients (no
    header, so both settings let every connection through) against two servers side by side,
    in interleaved rounds like A to F, and the system calls per connection under strace."""
    servers = {}
    for mode in UNTRUSTED_MODES:
        servers[("testserver", mode)] = start_testserver(shim_env(untrusted=mode))
        servers[("nginx", mode)] = start_nginx(tmp, "nginx-untrusted-" + mode, shim_env(untrusted=mode))
    keys = sorted(servers)
    for target, mode in keys:  # warm-up, and a check that each answers with the real peer
        s = servers[(target, mode)]
        expect = ("peer=" if target == "testserver" else "client=") + "127.0.2."
        loadgen(s.port, SOURCES["U" + mode], "none", expect, secs=0.3, half_close=target == "testserver",
                sources=NSOURCES)
    results = {k: [] for k in keys}
    for rnd in range(ROUNDS):
        order = keys if rnd % 2 == 0 else keys[::-1]
        for target, mode in order:
            s = servers[(target, mode)]
            expect = ("peer=" if target == "testserver" else "client=") + "127.0.2."
            c0 = cpu_ns(s.cpu_pids)
            out = loadgen(s.port, SOURCES["U" + mode], "none", expect, secs=SECS,
                          half_close=target == "testserver", sources=NSOURCES)
            out["lg_cpu_us"] = out["cpu_us"]
            out["cpu_us"] = (cpu_ns(s.cpu_pids) - c0) / 1000.0 / max(out["conns"], 1)
            results[(target, mode)].append(out)
        if (rnd + 1) % 5 == 0 or rnd + 1 == ROUNDS:
            sys.stderr.write("  round %d/%d done\n" % (rnd + 1, ROUNDS))
    for s in servers.values():
        s.stop()
    calls = {}
    for mode in UNTRUSTED_MODES:
        env = shim_env(untrusted=mode)
        a = strace_calls(env, "none", UNTRUSTED_SRC, STRACE_M1)
        b = strace_calls(env, "none", UNTRUSTED_SRC, STRACE_M2)
        calls[mode] = {n: (b.get(n, 0) - a.get(n, 0)) / float(STRACE_M2 - STRACE_M1) for n in set(a) | set(b)}
    return results, calls


# ---- S: the supervised mode (proxyshim-supervise, seccomp user notification) ----

# (key, what): Go net/http (static, CGO_ENABLED=0) without a header, supervised with v2
# headers, and behind HAProxy accept-proxy (the plain one); the static test server (glibc
# -static, epoll edge-triggered with accept4) without a header and supervised.
SUPERVISED = [
    ("go-plain", "Go net/http, no header"),
    ("go-sup", "Go net/http supervised, v2 header"),
    ("go-haproxy", "HAProxy accept-proxy -> Go plain"),
    ("c-plain", "static C testserver, no header"),
    ("c-sup", "static C testserver supervised, v2"),
]


def start_supervisable(argv, supervised):
    """The Go server or the static test server on a free port, plain or under the wrapper
    (which execs proxyshim-supervise: the supervisor keeps the pid, the program is its child).
    cpu_pids: what serves connections; sup_pids / prog_pids: the two sides, for CPU apart."""
    port = free_port()
    argv = [a.replace("PORT", str(port)) for a in argv]
    if supervised:
        argv = [WRAPPER, "--trusted", TRUSTED_NET, "--log", "error", "--"] + argv
    s = Server(argv, plain_env())
    wait_port(port, proc=s.p)
    s.port = port
    if supervised:
        for _ in range(100):
            kids = child_pids(s.pid)
            if kids:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the supervised program did not start: %s" % s.errors())
        s.sup_pids, s.prog_pids = [s.pid], kids
    else:
        s.sup_pids, s.prog_pids = [], [s.pid]
    s.cpu_pids = s.sup_pids + s.prog_pids
    return s


TRAPPED = ("accept", "accept4", "getpeername")


def trapped_calls(argv, hdr, expect, half, m=STRACE_M1 * 4):
    """The trapped calls the supervised program makes per connection: strace -c attached to
    its threads (not the supervisor's) while m connections come one at a time."""
    s = start_supervisable(argv, True)
    tids = [t for pid in s.prog_pids for t in os.listdir("/proc/%d/task" % pid)]
    with tempfile.NamedTemporaryFile(suffix=".strace") as f:
        st = subprocess.Popen(["strace", "-f", "-c", "-o", f.name, "-e", "trace=" + ",".join(TRAPPED)] +
                              [a for t in tids for a in ("-p", t)], stderr=subprocess.PIPE)
        time.sleep(0.5)  # attached
        loadgen(s.port, "127.0.1.160", hdr, expect, count=m, conns=1, half_close=half)
        st.send_signal(signal.SIGINT)
        st.wait(20)
        calls = strace_counts(f.name)
    s.stop()
    return {n: calls.get(n, 0) / float(m) for n in TRAPPED}


def supervised_scenarios(tmp):
    go = [GO_SERVER, "-listen", "127.0.0.1:PORT"]
    ts = [TS_STATIC, "--listen", "127.0.0.1:PORT", "--mode", "epoll", "--et", "--greet"]
    srv = {"go-plain": start_supervisable(go, False), "go-sup": start_supervisable(go, True),
           "c-plain": start_supervisable(ts, False), "c-sup": start_supervisable(ts, True)}
    hap, (hport,) = start_haproxy(tmp, [srv["go-plain"].port])
    # (port, header, what the reply must hold, half-close, pids: {part: pids})
    runs = {
        "go-plain": (srv["go-plain"].port, "none", '"remote":"127.0.1.', False, {"program": srv["go-plain"].prog_pids}),
        "go-sup": (srv["go-sup"].port, "v2", '"remote":"%s:' % CLIENT, False,
                   {"supervisor": srv["go-sup"].sup_pids, "program": srv["go-sup"].prog_pids}),
        "go-haproxy": (hport, "v2", '"remote":"127.0.0.1:', False,
                       {"haproxy": hap.cpu_pids, "program": srv["go-plain"].prog_pids}),
        "c-plain": (srv["c-plain"].port, "none", "peer=127.0.1.", True, {"program": srv["c-plain"].prog_pids}),
        "c-sup": (srv["c-sup"].port, "v2", "peer=%s " % CLIENT, True,
                  {"supervisor": srv["c-sup"].sup_pids, "program": srv["c-sup"].prog_pids}),
    }
    for key, (port, hdr, expect, half, _) in runs.items():  # warm-up, and a check of each reply
        loadgen(port, SOURCES["S" + key], hdr, expect, secs=0.3, half_close=half, sources=NSOURCES)
    keys = [k for k, _ in SUPERVISED]
    results = {k: [] for k in keys}
    for rnd in range(ROUNDS):
        for key in keys[rnd % len(keys):] + keys[:rnd % len(keys)]:
            port, hdr, expect, half, parts = runs[key]
            c0 = {part: cpu_ns(pids) for part, pids in parts.items()}
            out = loadgen(port, SOURCES["S" + key], hdr, expect, secs=SECS, half_close=half, sources=NSOURCES)
            n = max(out["conns"], 1)

            for part, pids in parts.items():
                out["cpu_" + part] = (cpu_ns(pids) - c0[part]) / 1000.0 / n
            out["cpu_us"] = sum(out["cpu_" + part] for part in parts)
            results[key].append(out)
        if (rnd + 1) % 5 == 0 or rnd + 1 == ROUNDS:
            sys.stderr.write("  S round %d/%d done\n" % (rnd + 1, ROUNDS))
    for x in [hap] + list(srv.values()):
        x.stop()
    results["trapped"] = {"go-sup": trapped_calls(go, "v2", runs["go-sup"][2], False),
                          "c-sup": trapped_calls(ts, "v2", runs["c-sup"][2], True)}
    return results


def report_supervised(sres, check):
    print()
    print("%-3s %-38s %8s %7s %7s %8s %8s %8s %8s   %s" % (
        "", "supervised mode (medians)", "conn/s", "p50 us", "p99 us", "program", "superv.", "haproxy",
        "cpu sum", "conn/s by round"))
    for key, what in SUPERVISED:
        rs = sres[key]

        def m(k):
            xs = [r[k] for r in rs if k in r]
            return ("%8.1f" % med(xs)) if xs else "%8s" % "-"
        print("S   %-38s %8.0f %7.0f %7.0f %s %s %s %8.1f   %s" % (
            what, med([r["cps"] for r in rs]), med([r["p50_us"] for r in rs]), med([r["p99_us"] for r in rs]),
            m("cpu_program"), m("cpu_supervisor"), m("cpu_haproxy"), med([r["cpu_us"] for r in rs]),
            " ".join("%.0f" % r["cps"] for r in rs[:12]) + (" ..." if len(rs) > 12 else "")))
    print("(program, superv., haproxy: CPU time per connection in us of the server, proxyshim-supervise and\n"
          " HAProxy, from schedstat; cpu sum: theirs together)")
    for key, what in SUPERVISED:
        if key in sres["trapped"]:
            t = sres["trapped"][key]
            print("S   %s: %.2f trapped calls per connection (%s; strace -c on the program, one connection "
                  "at a time)" % (what, sum(t.values()), ", ".join("%s %.2f" % kv for kv in sorted(t.items()))))
    x, lo, hi = ratio(sres["go-sup"], sres["go-plain"], "cps")
    check("S Go supervised/plain conn/s", x, ">= 0.6", x >= 0.6, (lo, hi))
    x, lo, hi = ratio(sres["go-sup"], sres["go-haproxy"], "cps")
    check("S Go supervised/HAProxy-in-front conn/s", x, ">= 1.6", x >= 1.6, (lo, hi))
    x, lo, hi = ratio(sres["c-sup"], sres["c-plain"], "cps")
    check("S static C supervised/plain conn/s", x, ">= 0.85", x >= 0.85, (lo, hi))
    for key, base in (("go-sup", "go-plain"), ("go-haproxy", "go-plain"), ("c-sup", "c-plain")):
        x, lo, hi = ratio(sres[key], sres[base], "cpu_us")
        check("S %s/%s CPU per conn, all parts" % (key, base), x, "-", None, (lo, hi))


# ---- report ----

def med(xs):
    return statistics.median(xs)


def ratio(xs, ys, key):
    """Ratios of runs made side by side (round by round): (median, lowest quartile, highest)."""
    r = sorted(x[key] / y[key] for x, y in zip(xs, ys))
    if len(r) < 2:
        return r[0], r[0], r[0]
    q = statistics.quantiles(r, n=4, method="inclusive")
    return statistics.median(r), q[0], q[2]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%s, %d cores, Linux %s" % (model, NCPU, os.uname().release)


def only():
    """The groups BENCH_ONLY selects (all when unset)."""
    raw = os.environ.get("BENCH_ONLY", "").strip()
    if not raw:
        return set(GROUPS)
    sel = set()
    for x in raw.split(","):
        name = "conn" if x.strip().lower() == "conn" else x.strip().upper()
        if name not in GROUPS:
            sys.exit("perf bench: BENCH_ONLY=%s: %r is not one of conn (A-F and K), G, H, I, J, P, U, S" % (raw, x))
        sel.add(name)
    return sel


def report_conn(res, check):
    print()
    print("%-3s %-10s %-34s %8s %7s %7s %7s %8s %8s   %s" % (
        "", "server", "scenario (medians)", "conn/s", "p50 us", "p99 us", "p999 us", "srv cpu", "lg cpu",
        "conn/s by round"))
    for target in ("testserver", "nginx"):
        for sid, what in SCENARIOS:
            rs = res[(target, sid)]
            fig = {k: med([r[k] for r in rs]) for k in ("cps", "p50_us", "p99_us", "p999_us", "cpu_us", "lg_cpu_us")}
            print("%-3s %-10s %-34s %8.0f %7.0f %7.0f %7.0f %8.1f %8.1f   %s" % (
                sid, target, what, fig["cps"], fig["p50_us"], fig["p99_us"], fig["p999_us"], fig["cpu_us"],
                fig["lg_cpu_us"], " ".join("%.0f" % r["cps"] for r in rs[:12]) + (" ..." if len(rs) > 12 else "")))
    print("(srv cpu: the server's CPU time per connection in us, F adding HAProxy's; lg cpu: the load\n"
          " generator's; a load generator near 1e6 / (conn/s) us is the bottleneck, not the server)")
    # Checks: the median over rounds of the ratio between runs of the same round.
    for target in ("testserver", "nginx"):
        a = res[(target, "A")]
        x, lo, hi = ratio(res[(target, "B")], a, "cps")
        check("B/A conn/s, %s" % target, x, ">= 0.99", x >= 0.99, (lo, hi))
        for sid in ("C", "D", "E"):
            x, lo, hi = ratio(res[(target, sid)], a, "cps")
            check("%s/A conn/s, %s" % (sid, target), x, ">= 0.97", x >= 0.97, (lo, hi))
            x, lo, hi = ratio(res[(target, sid)], a, "p99_us")
            check("%s/A p99, %s" % (sid, target), x, "<= 1.10", x <= 1.10, (lo, hi))
        f = res[(target, "F")]
        for sid in ("C", "D"):
            x, lo, hi = ratio(res[(target, sid)], f, "cps")
            check("%s/F conn/s, %s" % (sid, target), x, ">= 2.5", x >= 2.5, (lo, hi))
        # The server side's CPU per connection: steadier than conn/s on a shared machine.
        for sid in ("B", "C", "D", "E"):
            x, lo, hi = ratio(res[(target, sid)], a, "cpu_us")
            check("%s/A server CPU per conn, %s" % (sid, target), x, "-", None, (lo, hi))
        x, lo, hi = ratio(f, res[(target, "D")], "cpu_us")
        check("F/D server CPU per conn, %s" % target, x, "-", None, (lo, hi))


def report_bulk(gres, gir, check):
    print()
    print("G   bulk: %d MiB per connection, %d connections interleaved in %d MiB segments, 16 KiB reads" % (
        BULK_BYTES >> 20, len(BULK_CONFIGS), BULK_SEG >> 20))
    print("%-3s %-40s %9s %9s %10s   %s" % ("", "(medians over %d rounds)" % BULK_ROUNDS, "GiB/s", "calls",
                                         "sink cpu s", "GiB/s by round"))
    for (mode, how) in BULK_CONFIGS:
        rs = gres[(mode, how)]
        print("G   %-40s %9.3f %9.0f %10.3f   %s" % (
            "%s, %s()" % ({"plain": "no shim", "control": "no shim, a second connection"}.get(
                mode, "shim, consume=" + mode), how),
            med([r["gib_s"] for r in rs]), med([r["calls"] for r in rs]), med([r["sink_cpu_s"] for r in rs]),
            " ".join("%.3f" % r["gib_s"] for r in rs)))
    print("(GiB/s: over the connection's own segments, each timed from its first send to the sink's ack;\n"
          " a ratio's quartiles are over segment pairs: segment i against the same segment without the shim)")
    if gir:
        print("G   user-space instructions per call (callgrind, bulksink): %s" % ", ".join(
            "%s() %s %.0f" % (how, mode, gir[(mode, how)]) for how in ("read", "recv")
            for mode in ("plain", "accept", "lazy")))
    for how in ("read", "recv"):
        for mode in ("accept", "lazy"):
            x, lo, hi = bulk_ratio(gres[(mode, how)], gres[("plain", how)])
            check("G %s() consume=%s / no shim" % (how, mode), x, ">= 0.99", x >= 0.99, (lo, hi))
            x, lo, hi = ratio(gres[(mode, how)], gres[("plain", how)], "sink_cpu_s")
            check("G %s() consume=%s / no shim, sink CPU" % (how, mode), x, "-", None, (lo, hi))
    x, lo, hi = bulk_ratio(gres[("control", "read")], gres[("plain", "read")])
    check("G read() no shim / no shim (noise floor)", x, "-", None, (lo, hi))


def report_startup(hres, hir, check):
    print()
    for k in STARTUP:
        rs = hres[k]
        print("H   /bin/true %-21s %7.1f us a run (fork+exec+wait), child CPU %6.1f us, %5.1f page faults; "
              "by round: %s" % (STARTUP_LABEL[k], med([r["us_per_run"] for r in rs]),
                                med([r["cpu_us_per_run"] for r in rs]), med([r["minflt_per_run"] for r in rs]),
                                " ".join("%.0f" % r["us_per_run"] for r in rs)))
    if hir:
        print("H   instructions of one /bin/true run (callgrind): %s" % ", ".join(
            "%d %s" % (hir[k], STARTUP_LABEL[k]) for k in STARTUP))
    x, lo, hi = ratio(hres["shim"], hres["plain"], "us_per_run")
    check("H start-up with/without LD_PRELOAD", x, "<= 1.05", x <= 1.05, (lo, hi))
    x, lo, hi = ratio(hres["shim"], hres["plain"], "cpu_us_per_run")
    check("H start-up CPU with/without LD_PRELOAD", x, "-", None, (lo, hi))
    # What preloading any library costs (the kernel's open, mmap, mprotect and page faults):
    # the part of the ratio above the shim cannot remove.
    x, lo, hi = ratio(hres["empty"], hres["plain"], "us_per_run")
    check("H floor: empty library / without LD_PRELOAD", x, "-", None, (lo, hi))
    x, lo, hi = ratio(hres["shim"], hres["empty"], "us_per_run")
    check("H shim / empty library", x, "-", None, (lo, hi))


def report_memory(ires, check):
    ep, es = ires["eagain_plain"], ires["eagain_shim"]
    grow_rss = es["rss_after_kb"] - es["rss_before_kb"]
    grow_heap = es["heap_after"] - es["heap_before"]
    print("I   %d accept4() failing with EAGAIN under the shim: VmRSS %d -> %d kB, heap %d -> %d B; "
          "%.0f ns a call (%.0f without the shim)" % (EAGAIN_CALLS, es["rss_before_kb"], es["rss_after_kb"],
                                                      es["heap_before"], es["heap_after"], es["ns_per_call"],
                                                      ep["ns_per_call"]))
    for k in ("plain", "shim"):
        r0, r1 = ires["rss_" + k]
        print("I   testserver %s: VmRSS %d kB after 2000 connections, %d kB after %d more" % (
            "without the shim" if k == "plain" else "under the shim (v2)", r0, r1, RSS_CONNS))
    print("I   shim state per connection: sizeof(struct shim_fd) = %d bytes (shim/core/conn.h)" % ires["shim_fd"])
    check("I RSS, heap growth over 1M EAGAIN (kB, B)", "%d, %d" % (grow_rss, grow_heap), "0, 0",
          grow_rss <= 0 and grow_heap <= 0)
    check("I shim state per open connection (B)", "%d" % ires["shim_fd"], "<= 64", ires["shim_fd"] <= 64)
    pr0, pr1 = ires["rss_plain"]
    sr0, sr1 = ires["rss_shim"]
    check("I RSS growth over %dk conns, shim (kB)" % (RSS_CONNS // 1000), "%d" % (sr1 - sr0), "-", None,
          "without the shim: %d kB" % (pr1 - pr0))


def report_syscalls(jres, check):
    jp, js = jres["plain"], jres["shim"]
    names = sorted(n for n in set(jp) | set(js) if abs(js.get(n, 0) - jp.get(n, 0)) >= 0.05)
    extra = sum(js.values()) - sum(jp.values())
    print("J   system calls per connection (strace -f -c, (calls(%d) - calls(%d)) / %d): %.2f plain, %.2f shim; "
          "differences: %s" % (STRACE_M2, STRACE_M1, STRACE_M2 - STRACE_M1, sum(jp.values()), sum(js.values()),
                               ", ".join("%s %+.2f" % (n, js.get(n, 0) - jp.get(n, 0)) for n in names) or "none"))
    cost = jres["cost"]
    print("J   their cost (tests/bench/consume.c, %d rounds on loopback): the peek %.0f ns, the header discarded "
          "with MSG_TRUNC %.0f ns (copied out instead: %.0f ns)" % (cost["rounds"], cost["peek_ns"],
                                                                     cost["discard_ns"], cost["copy_ns"]))
    check("J syscalls per trusted connection, extra", extra, "<= 2", extra <= 2.0 + 0.05)


def report_untrusted(ures, ucalls, check):
    print()
    print("%-3s %-10s %-34s %8s %7s %7s %7s %8s %8s   %s" % (
        "", "server", "untrusted clients (medians)", "conn/s", "p50 us", "p99 us", "p999 us", "srv cpu",
        "lg cpu", "conn/s by round"))
    for target in ("testserver", "nginx"):
        for mode in UNTRUSTED_MODES:
            rs = ures[(target, mode)]
            fig = {k: med([r[k] for r in rs]) for k in ("cps", "p50_us", "p99_us", "p999_us", "cpu_us", "lg_cpu_us")}
            print("U   %-10s %-34s %8.0f %7.0f %7.0f %7.0f %8.1f %8.1f   %s" % (
                target, "PROXYSHIM_UNTRUSTED=" + mode, fig["cps"], fig["p50_us"], fig["p99_us"], fig["p999_us"],
                fig["cpu_us"], fig["lg_cpu_us"],
                " ".join("%.0f" % r["cps"] for r in rs[:12]) + (" ..." if len(rs) > 12 else "")))
    up, ur = ucalls["pass"], ucalls["reject"]
    names = sorted(n for n in set(up) | set(ur) if abs(ur.get(n, 0) - up.get(n, 0)) >= 0.05)
    extra = sum(ur.values()) - sum(up.values())
    print("U   system calls per untrusted connection (strace -f -c, testserver): %.2f pass, %.2f reject; "
          "differences: %s" % (sum(up.values()), sum(ur.values()),
                               ", ".join("%s %+.2f" % (n, ur.get(n, 0) - up.get(n, 0)) for n in names) or "none"))
    for target in ("testserver", "nginx"):
        x, lo, hi = ratio(ures[(target, "reject")], ures[(target, "pass")], "cps")
        check("U reject/pass conn/s, %s" % target, x, "-", None, (lo, hi))
        x, lo, hi = ratio(ures[(target, "reject")], ures[(target, "pass")], "cpu_us")
        check("U reject/pass server CPU per conn, %s" % target, x, "-", None, (lo, hi))
    check("U syscalls per untrusted conn, reject extra", extra, "<= 1", extra <= 1.0 + 0.05)


def main():
    sel = only()
    for g in sorted(sel):
        for n in NEEDS[g]:
            if n in TOOLS or n.startswith("/"):
                path = TOOLS.get(n, n)
                if not os.path.exists(path):
                    sys.exit("perf bench: %s not built" % path)
            elif not shutil.which(n):
                sys.exit("perf bench: %s not found (make deps)" % n)
    t_start = time.monotonic()
    print("machine: %s; load average at start: %s" % (machine(), open("/proc/loadavg").read().split()[0]))
    if "conn" in sel or "U" in sel or "S" in sel:
        print("servers pinned to cpu %s, load generator to cpu %s; %d rounds interleaved, %.1f s a run, "
              "%d concurrent connections; medians" % (SERVER_CPU, CLIENT_CPU, ROUNDS, SECS, CONNS))
    else:
        print("servers pinned to cpu %s, load generator to cpu %s; medians" % (SERVER_CPU, CLIENT_CPU))
    if sel != set(GROUPS):
        print("BENCH_ONLY: %s only" % ", ".join(g for g in GROUPS if g in sel))
    sys.stdout.flush()
    tmp = tempfile.mkdtemp(prefix="proxyshim-bench-")
    checks = []
    took = {}

    def check(name, fig, target_text, ok, note=""):
        checks.append((name, fig, target_text, ok, note))

    def step(group, what, fn):
        """Runs one group's measurements, saying so (and how long they took) on stderr."""
        sys.stderr.write("  %s\n" % what)
        t0 = time.monotonic()
        out = fn()
        took[group] = time.monotonic() - t0
        sys.stderr.write("  %s took %.0f s\n" % (group, took[group]))
        return out

    try:
        if "conn" in sel:
            res = step("conn", "A-F: connections (testserver, nginx)", lambda: conn_scenarios(tmp))
        if "G" in sel:
            gres, gir = step("G", "G: bulk, and instructions per read under callgrind",
                             lambda: (bulk(tmp), read_instructions()))
        if "H" in sel:
            hres, hir = step("H", "H: start-up", lambda: (startup(), startup_instructions()))
        if "I" in sel:
            ires = step("I", "I: memory", memory)
        if "J" in sel:
            jres = step("J", "J: system calls (strace)", syscalls)
        if "P" in sel:
            pres = step("P", "P: connections passed with SCM_RIGHTS (strace)", fdpass_bench)
        if "U" in sel:
            ures, ucalls = step("U", "U: untrusted clients, PROXYSHIM_UNTRUSTED=pass and reject",
                                lambda: untrusted_scenarios(tmp))
        if "S" in sel:
            sres = step("S", "S: the supervised mode (Go net/http, static C; HAProxy in front)",
                        lambda: supervised_scenarios(tmp))
    finally:
        for s in Server.all:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if "conn" in sel:
        report_conn(res, check)
    if "G" in sel:
        report_bulk(gres, gir, check)
    if "H" in sel:
        report_startup(hres, hir, check)
    if "I" in sel:
        report_memory(ires, check)
    if "J" in sel:
        report_syscalls(jres, check)
    if "P" in sel:
        report_fdpass(pres, check)
    if "U" in sel:
        report_untrusted(ures, ucalls, check)
    if "S" in sel:
        report_supervised(sres, check)
    if "conn" in sel:
        x, lo, hi = ratio(res[("nginx", "D")], res[("nginx", "A")], "cpu_us")
        check("K nginx worker CPU per connection D/A", x, "<= 1.05", x <= 1.05, (lo, hi))

    print()
    print("%-44s %10s %10s  %-6s  %s" % ("check", "figure", "target", "result",
                                         "quartiles over rounds (G: over segment pairs)"))
    miss = 0
    for name, fig, target_text, ok, note in checks:
        f = ("%.3f" % fig) if isinstance(fig, float) else str(fig)
        res_txt = "(info)" if ok is None else ("PASS" if ok else "MISS")
        miss += ok is False
        if isinstance(note, tuple):
            note = "%.3f .. %.3f" % note
        print("%-44s %10s %10s  %-6s  %s" % (name, f, target_text, res_txt, note))
    print("(%d checks, %d missed; %.0f s (%s); load average at end: %s)" % (
        sum(1 for c in checks if c[3] is not None), miss, time.monotonic() - t_start,
        ", ".join("%s %.0f s" % kt for kt in took.items()), open("/proc/loadavg").read().split()[0]))
    return 1 if miss else 0


if __name__ == "__main__":
    sys.exit(main())
