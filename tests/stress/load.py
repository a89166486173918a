"""Load for the stalling figure, each kind in a process of its own (the measurements must not
wait for the stallers' interpreter):

  load.py healthy PORT CLIENTS SECONDS   CLIENTS threads, each sending a v2 header (a source of
                                         its own) and an HTTP request, again and again; prints
                                         {"latencies_ms": [...], "failures": [...], "requests": n}
  load.py stall PORT N SECONDS            N trusted connections held open at once, a third each:
                                         silent, half a header then nothing, one header byte a
                                         second; one that is dropped is opened again at once.
                                         Prints {"connects": n, "dropped": n, "served": n, ...}

Healthy clients connect from 127.0.0.2, stallers from 127.0.0.10-59: all trusted."""
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from util import v1_header, v2_header  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = 24


def sock(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((src, 0))
    return s


def healthy(port, clients, seconds):
    lat, fails, lock = [], [], threading.Lock()
    end = time.monotonic() + seconds

    def run(k):
        n = 0
        while time.monotonic() < end:
            n += 1
            src = ("198.51.100.%d" % (k % 250 + 1), 10000 + n % 50000)
            t0 = time.monotonic()
            try:
                s = sock("127.0.0.2")
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                s.sendall(v2_header(src, ("127.0.0.1", port)) + b"GET / HTTP/1.0\r\n\r\n")
                got = b""
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    got += b
                s.close()
                ok = got.startswith(b"HTTP/1.1 200") and got.endswith(("you are %s:%d\n" % src).encode())
                err = None if ok else "bad answer %r" % got[-80:]
            except OSError as e:
                err = repr(e)
            dt = (time.monotonic() - t0) * 1000
            with lock:
                if err:
                    fails.append(err)
                else:
                    lat.append(dt)

    ths = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(seconds + 30)
    return {"latencies_ms": lat, "failures": fails[:50], "nfailures": len(fails), "requests": len(lat) + len(fails)}


def stall(port, n, seconds):
    sel = selectors.DefaultSelector()
    res = {"connects": 0, "dropped": 0, "served": 0, "errors": [], "kinds": {"silent": 0, "half": 0, "trickle": 0}}
    end = time.monotonic() + seconds
    hdr1 = v1_header(("203.0.113.9", 4242), ("127.0.0.1", port))
    hdr2 = v2_header(("203.0.113.9", 4242), ("127.0.0.1", port))
    trickling = {}
    k = [0]

    def one(kind):
        src = "127.0.0.%d" % (10 + k[0] % 50)
        k[0] += 1
        try:
            s = sock(src)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            res["errors"].append("connect: %r" % e)
            return
        res["connects"] += 1
        res["kinds"][kind] += 1
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, kind)

    for i in range(n):
        one(("silent", "half", "trickle")[i % 3])
    next_tick = time.monotonic() + 1.0
    while time.monotonic() < end:
        for key, ev in sel.select(timeout=0.05):
            s, kind = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                # connected: say what this kind says, then only wait for the drop
                try:
                    if kind == "half":
                        s.send(hdr2[:len(hdr2) // 2])
                    elif kind == "trickle":
                        trickling[s] = 1
                        s.send(hdr1[:1])
                except OSError:
                    pass
                sel.modify(s, selectors.EVENT_READ, kind)
                continue
            try:
                b = s.recv(4096)
            except (ConnectionResetError, BlockingIOError, OSError):
                b = b""
            sel.unregister(s)
            trickling.pop(s, None)
            s.close()
            if b:
                res["served"] += 1
            else:
                res["dropped"] += 1
            if time.monotonic() < end:
                one(kind)
        if time.monotonic() >= next_tick:
            next_tick += 1.0
            for s, sent in list(trickling.items()):
                try:
                    s.send(hdr1[sent:sent + 1])
                    trickling[s] = sent + 1
                except OSError:
                    pass
    res["open_at_end"] = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return res


if __name__ == "__main__":
    what, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    out = healthy(port, n, seconds) if what == "healthy" else stall(port, n, seconds)
    print(json.dumps(out), flush=True)
