#!/usr/bin/python3
"""How long after accept() returns does a PROXY header sent at connect arrive? The measurement
behind PROXYSHIM_LAZY_GRACE_MS's default (issue 14, part 2).

HAProxy (send-proxy or send-proxy-v2, from 127.0.0.2) forwards N client connections to a plain
server (no shim, no TCP_DEFER_ACCEPT: what a lazy-mode listener is). The server, in its own
process, takes the time accept() returns, then whether the header's first byte is already
queued; if not, it waits for it (poll) and takes the time again. Prints the share of
connections whose header was not there at accept() (what a server that takes its address from
accept() would get wrong without a grace), the delay's percentiles, and the kernel's
retransmission timeout for the HAProxy -> server connection (ss -ti), the delay of one lost
header segment.

    tests/bench/grace_delay.py [--n 2000] [--send send-proxy-v2] [--parallel 1] [--busy 0]

--parallel: clients at once; --busy: processes spinning on the CPU meanwhile (a loaded host)."""
import argparse
import multiprocessing
import os
import select
import socket
import subprocess
import sys
import tempfile
import time


def server(lsock, n, q):
    delays, absent = [], 0
    for _ in range(n):
        c, _ = lsock.accept()
        t_a = time.monotonic_ns()
        try:
            first = c.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            first = None
        if first:
            delays.append(0)
        else:
            absent += 1
            p = select.poll()
            p.register(c, select.POLLIN)
            p.poll(5000)
            delays.append(time.monotonic_ns() - t_a)
        c.close()
    q.put((absent, delays))


def spin(stop):
    while not stop.is_set():
        pass


def client(fport, n):
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", fport))
        s.recv(1)  # EOF: the server closed
        s.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--send", default="send-proxy-v2")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--busy", type=int, default=0)
    a = ap.parse_args()

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    sport = lsock.getsockname()[1]
    fport = free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write("defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n"
              "    timeout server 10s\n\nfrontend fe\n    bind 127.0.0.1:%d\n    default_backend be\n\n"
              "backend be\n    server s1 127.0.0.1:%d %s source 127.0.0.2\n" % (fport, sport, a.send))
    cfg.close()
    h = subprocess.Popen(["haproxy", "-db", "-f", cfg.name], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", fport)).close()
                break
            except OSError:
                time.sleep(0.05)
        # the probe above made one connection to the server: take it out of the count
        c, _ = lsock.accept()
        c.close()
        stop = multiprocessing.Event()
        busy = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(a.busy)]
        for b in busy:
            b.start()
        q = multiprocessing.Queue()
        total = a.n - a.n % a.parallel
        # one connection held open (not accepted yet) for ss -ti: the kernel's RTO towards the
        # server; it is the first one the server takes, hence total + 1
        hold = socket.create_connection(("127.0.0.1", fport))
        time.sleep(0.2)
        ss = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )" % sport],
                            capture_output=True, text=True).stdout
        srv = multiprocessing.Process(target=server, args=(lsock, total + 1, q))
        srv.start()
        hold.close()
        clients = [multiprocessing.Process(target=client, args=(fport, total // a.parallel))
                   for _ in range(a.parallel)]
        t0 = time.monotonic()
        for c in clients:
            c.start()
        absent, delays = q.get(timeout=600)
        took = time.monotonic() - t0
        for c in clients:
            c.join()
        srv.join()
        stop.set()
        for b in busy:
            b.join()
    finally:
        h.terminate()
        h.wait()
        os.unlink(cfg.name)
    late = [d / 1e6 for d in delays if d > 0]
    delays_ms = [d / 1e6 for d in delays]
    print("%s, %d connections (%d at once, %d busy processes, %.1f s): header not yet there at "
          "accept() in %d (%.1f%%)" % (a.send, len(delays), a.parallel, a.busy, took, absent,
                                       100.0 * absent / len(delays)))
    print("delay accept() -> header, all connections, ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f "
          "max %.3f" % (tuple(pct(delays_ms, p) for p in (50, 90, 99, 99.9)) + (max(delays_ms),)))
    if late:
        print("delay when not there at accept(), ms: p50 %.3f p90 %.3f p99 %.3f max %.3f"
              % (pct(late, 50), pct(late, 90), pct(late, 99), max(late)))
    rto = [w for w in ss.split() if w.startswith(("rto:", "rtt:"))]
    print("kernel, HAProxy -> server connection: %s; net.ipv4.tcp_rto_min_us = %s"
          % (" ".join(rto) or "?", open("/proc/sys/net/ipv4/tcp_rto_min_us").read().strip()))


if __name__ == "__main__":
    sys.exit(main())
