"""Hardening: hostile input, faults and load. Each test here runs at a size that fits
in `make test`; `make stress` (tests/stress/run.sh) runs the same tests with E2E_STRESS=1 at
the sizes of the published figures (docs/RELIABILITY.md). Every test prints one "FIGURE" line
with what it measured, and appends it as JSON to $E2E_FIGURES when that is set.

Trusted peers are 127.0.0.2 (and 127.0.0.16/29 where CIDR edges matter); the servers are the
C test server (tests/e2e/testserver.c), the fault server (tests/stress/faultserver.c), nginx,
apache2 (prefork) and HAProxy, all started here on loopback ports and stopped by pid."""
import ctypes
import hashlib
import ipaddress
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from util import (BUILD, LIB, ROOT, V2_SIG, Proc, child_pids, conn_lines, connect, connect_from, free_port,
                  haproxy_sender, open_fds, p99, recv_all, shim_env, start_testserver, v1_header, v2_header,
                  wait_conns, wait_port)

STRESS = os.environ.get("E2E_STRESS") == "1"
TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
ASAN_LIB = os.path.join(BUILD, "asan", "libproxyshim.so")
TSAN_LIB = os.path.join(BUILD, "tsan", "libproxyshim.so")
FAULTSERVER = os.path.join(BUILD, "stress", "faultserver")
INJECT = os.path.join(BUILD, "stress", "libinject.so")
LIBPP = os.path.join(BUILD, "stress", "libpp.so")


def size(quick, full):
    return full if STRESS else quick


def figure(name, **values):
    """Prints the figure and appends it to $E2E_FIGURES (make stress collects them)."""
    values["figure"] = name
    values["stress"] = STRESS
    print("\nFIGURE %s" % json.dumps(values, sort_keys=True))
    path = os.environ.get("E2E_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(values, sort_keys=True) + "\n")


def runtime(name):
    """gcc's sanitizer runtime (libasan.so, libtsan.so), which must load before the library."""
    return subprocess.run(["gcc", "-print-file-name=" + name], capture_output=True, text=True,
                          check=True).stdout.strip()


def san_env(kind, logdir, **vars):
    """The environment for a program under a sanitized build of the shim; the sanitizer's
    reports go to files <logdir>/<kind>.<pid> (read by san_reports), not into the JSON lines."""
    env = shim_env(**vars)
    log = os.path.join(str(logdir), kind)
    if kind == "asan":
        env["LD_PRELOAD"] = runtime("libasan.so") + " " + ASAN_LIB
        # leaks: the test server never frees its listener; the shim's are checked by valgrind
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=" + log
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:log_path=" + log
    else:
        env["LD_PRELOAD"] = runtime("libtsan.so") + " " + TSAN_LIB
        env["TSAN_OPTIONS"] = "halt_on_error=0:report_signal_unsafe=0:log_path=" + log
    return env


def sanitizer_reports(text):
    return [l for l in text.splitlines()
            if re.search(r"Sanitizer|runtime error:|WARNING: ThreadSanitizer|ERROR: AddressSanitizer", l)]


def san_reports(logdir, kind, output=""):
    """Every sanitizer report line: from the log files, and any that reached the output."""
    text = output
    for f in sorted(os.listdir(str(logdir))):
        if f.startswith(kind + "."):
            with open(os.path.join(str(logdir), f), errors="replace") as fh:
                text += fh.read()
    return text, sanitizer_reports(text)


def maps_has(pid, name):
    with open("/proc/%d/maps" % pid) as f:
        return name in f.read()


def run_parallel(n, workers, fn, time_limit):
    """fn(i) for i in range(n) on `workers` threads; returns the exceptions raised (index, repr)."""
    errors = []
    nxt = [0]
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n or len(errors) > 20:
                return
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001 - every failure is reported with its index
                with lock:
                    errors.append((i, repr(e)))

    ths = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(time_limit)
    assert not any(t.is_alive() for t in ths), "clients still running after %d s" % time_limit
    return errors


def line_by_marker(lines, marker_len):
    """The server's JSON lines keyed by the first marker_len bytes of what the program read."""
    out = {}
    for l in lines:
        key = bytes.fromhex(l["hex"][:2 * marker_len])
        assert key not in out, "two connections carried the same payload marker: %r" % key
        out[key] = l
    return out


def same_ip(a, b):
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


# ---- the oracle: the project's own parser (libFuzzer-fuzzed) over exactly the bytes sent ----

class PPHeader(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint32), ("version", ctypes.c_uint8), ("command", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("transport", ctypes.c_uint8),
                ("crc_verified", ctypes.c_uint8), ("error", ctypes.c_int),
                ("src", ctypes.c_uint64 * 16), ("dst", ctypes.c_uint64 * 16),
                ("unix_src", ctypes.c_void_p), ("unix_dst", ctypes.c_void_p),
                ("unix_src_len", ctypes.c_uint8), ("unix_dst_len", ctypes.c_uint8),
                ("tlv", ctypes.c_void_p), ("tlv_len", ctypes.c_uint16)]


_pp = None


def oracle(wire):
    """What the shim must do with a trusted connection that sends `wire` then half-closes, in
    strict mode: ("reject", None) or ("accept", header length, (family, ip, port) or None when
    the real peer stays: LOCAL, UNKNOWN, UNSPEC, UDP, UNIX)."""
    global _pp
    if _pp is None:
        _pp = ctypes.CDLL(LIBPP)
        _pp.pp_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.POINTER(PPHeader)]
        _pp.pp_parse.restype = ctypes.c_int
    h = PPHeader()
    r = _pp.pp_parse(wire, len(wire), 3, ctypes.byref(h))
    if r <= 0:
        return ("reject", 0, None)  # invalid, not a header, or still incomplete at EOF
    raw = bytes(h.src)
    fam = struct.unpack("<H", raw[:2])[0]
    if h.command != 1 or h.transport != 1 or fam not in (socket.AF_INET, socket.AF_INET6):
        return ("accept", r, None)
    port = struct.unpack("!H", raw[2:4])[0]
    if fam == socket.AF_INET:
        return ("accept", r, ("AF_INET", str(ipaddress.IPv4Address(raw[4:8])), port))
    return ("accept", r, ("AF_INET6", str(ipaddress.IPv6Address(raw[8:24])), port))


# ---- random and mutated headers ----

TLV_TYPES = [0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xEA, 0xEE]


def rand_ip(rng, v6):
    if v6:
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    return str(ipaddress.IPv4Address(rng.getrandbits(32)))


def valid_header(rng, dport):
    k = rng.randrange(10)
    v6 = rng.random() < 0.4
    src = (rand_ip(rng, v6), rng.randrange(65536))
    dst = (rand_ip(rng, v6), dport)
    if k < 3:
        return v1_header(None if k == 0 and rng.random() < 0.3 else src, dst)
    if k == 3:
        return v2_header(command=0)  # LOCAL
    tlvs = []
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        t = rng.choice(TLV_TYPES)
        n = rng.randrange(0, 128 if t == 0x05 else 300)
        tlvs.append((t, rng.randbytes(n)))
    if k == 4:
        # UNIX or UNSPEC addresses, or UDP: consumed, real peer kept
        fam = rng.choice([0x31, 0x32, 0x12, 0x22, 0x00])
        blen = {0x31: 216, 0x32: 216, 0x12: 12, 0x22: 36, 0x00: 0}[fam]
        return v2_header(fam=fam, addr_block=rng.randbytes(blen), tlvs=tlvs, crc=rng.random() < 0.3)
    return v2_header(src, dst, tlvs=tlvs, crc=rng.random() < 0.4)


def mutate(h, rng):
    b = bytearray(h)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(9)
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 40)))
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b)):]
        elif op == 3:
            b.insert(i, rng.choice(b" 0123456789:.\r\n\x00\xff"))
        elif op == 4:
            del b[i]
        elif op == 5 and len(b) >= 16 and b[:12] == V2_SIG:
            # the v2 length: off by a little or anything
            n = struct.unpack("!H", bytes(b[14:16]))[0]
            n = rng.choice([n - 1, n + 1, n + rng.randrange(1, 600), rng.randrange(65536), 0])
            b[14:16] = struct.pack("!H", max(0, min(65535, n)))
        elif op == 6 and len(b) >= 14 and b[:12] == V2_SIG:
            b[rng.choice([12, 13])] = rng.randrange(256)
        elif op == 7:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 20)]
        else:
            b[i] = rng.choice(b"0123456789abcdefABCDEF: .")
    return bytes(b)


def fuzz_header(rng, dport):
    k = rng.random()
    if k < 0.35:
        return valid_header(rng, dport)
    if k < 0.9:
        return mutate(valid_header(rng, dport), rng)
    # random bytes, some of them behind a header's first bytes
    return rng.choice([b"", b"PROXY ", b"PROXY TCP4 ", V2_SIG, V2_SIG + b"\x21"]) + rng.randbytes(rng.randrange(0, 120))


def send_then_read(s, data, rng, max_pause, head=0):
    """Sends data in random segments, half-closes, and reads until EOF. A send that fails
    because the server dropped the connection is what a rejected header looks like: reading
    then sees the EOF or reset."""
    try:
        send_segments(s, data, rng, max_pause, head)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    return recv_all(s)


def send_segments(s, data, rng, max_pause, head=0):
    """Sends data cut into random segments (TCP_NODELAY), pausing between some of them; with
    head (the header's length), some of the cuts fall inside the header."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cuts = set(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 8)))) if len(data) > 1 else set()
    if head > 1 and rng.random() < 0.6:
        cuts |= set(rng.sample(range(1, head), min(head - 1, rng.randrange(1, 4))))
    cuts = sorted(cuts)
    off = 0
    for c in cuts + [len(data)]:
        s.sendall(data[off:c])
        off = c
        if max_pause and c != len(data) and rng.random() < 0.5:
            time.sleep(rng.uniform(0, max_pause))


# ---- figure 1: end-to-end fuzz under the ASan+UBSan build of the shim ----

@pytest.mark.time_limit(size(150, 2400))
@pytest.mark.parametrize("mode", ["epoll", "threads"])
def test_e2e_fuzz_headers_under_asan(procs, mode, tmp_path):
    n = size(5000, 50000)
    args = ["--mode", "epoll"] if mode == "epoll" else ["--mode", "threads", "--threads", "8"]
    p, port = start_testserver(*args, env=san_env("asan", tmp_path, TRUSTED="127.0.0.0/24", LOG="error",
                                                  TIMEOUT_MS=3000), log_name="fuzz-asan")
    procs.append(p)
    assert maps_has(p.pid, "libasan") and maps_has(p.pid, ASAN_LIB), "not the ASan build"
    seed = int(os.environ.get("E2E_FUZZ_SEED", "7"))
    expect = {}
    counts = {"accept": 0, "reject": 0, "rewritten": 0}
    lock = threading.Lock()

    def one(i):
        rng = random.Random(seed * 1000003 + i + (0 if mode == "epoll" else 10 ** 7))
        marker = b"FZ%08d." % i
        payload = marker + rng.randbytes(rng.randrange(0, 64))
        wire = fuzz_header(rng, port) + payload
        verdict, hlen, addr = oracle(wire)
        src = "127.0.0.%d" % (2 + i % 50)
        s = connect_from(port, src, timeout=10.0)
        try:
            me = s.getsockname()
            got = send_then_read(s, wire, rng, 0.002 if rng.random() < 0.05 else 0, head=len(wire) - len(payload))
        finally:
            s.close()
        if verdict == "reject":
            assert got == b"", "rejected header reached the program: %r" % wire[:200]
        else:
            assert got == wire[hlen:], "payload not intact after a %d-byte header: %r" % (hlen, wire[:200])
            exp = addr or ("AF_INET", me[0], me[1])
            with lock:
                # keyed by what the program must read: a v2 length may cover the whole payload,
                # so several connections can expect the same (empty) bytes
                expect.setdefault(hashlib.sha256(wire[hlen:]).hexdigest(), []).append((exp, wire[hlen:], wire))
        with lock:
            counts[verdict] += 1
            counts["rewritten"] += addr is not None and verdict == "accept"

    t0 = time.monotonic()
    errors = run_parallel(n, 16, one, size(120, 2300))
    elapsed = time.monotonic() - t0
    assert p.poll() is None, "the server died:\n" + p.output()[-3000:]
    assert not errors, errors[:5]
    valid = sum(len(v) for v in expect.values())
    lines = wait_conns(p, valid, timeout=30)
    time.sleep(0.3)
    lines = conn_lines(p)
    extra = [l for l in lines if l["sha256"] not in expect]
    assert not extra and len(lines) == valid, \
        "the program saw %d connections, %d were valid; not expected:\n%s" % (
            len(lines), valid, "\n".join(json.dumps(l) for l in extra[:10]))
    by = {}
    for l in lines:
        by.setdefault(l["sha256"], []).append(l)
    norm = lambda fam, ip, prt: (fam, str(ipaddress.ip_address(ip)), prt)  # noqa: E731
    for sha, exps in expect.items():
        got = sorted(norm(l["accept"]["family"], l["accept"]["addr"], l["accept"]["port"]) for l in by[sha])
        assert got == sorted(norm(*e[0]) for e in exps), (by[sha], [e[2] for e in exps])
        assert all(l["bytes"] == len(exps[0][1]) for l in by[sha]), by[sha]
    text, reports = san_reports(tmp_path, "asan", p.output())
    assert not reports, text[-6000:]
    figure("e2e_fuzz_asan", mode=mode, connections=n, accepted=counts["accept"],
           rejected=counts["reject"], rewritten=counts["rewritten"], seconds=round(elapsed, 1),
           crashes=0, sanitizer_reports=0)
    # a floor on the mix: the fuzz is not all one kind
    assert counts["accept"] > n // 5 and counts["reject"] > n // 5 and counts["rewritten"] > n // 10, counts


# ---- figure 2: valid headers from untrusted peers are never read ----

SPOOF_TRUSTED = "127.0.0.16/29,::2/127,::/128"   # 127.0.0.15, 127.0.0.24 and ::1 are just outside
SPOOF_TRUSTED_MAPPED = "::ffff:127.0.0.16/125,::2/127,::/128"  # the same set, IPv4-mapped form


def spoof_headers(rng, dport):
    src4 = (rand_ip(rng, False), rng.randrange(1, 65536))
    src6 = (rand_ip(rng, True), rng.randrange(1, 65536))
    dst4, dst6 = ("127.0.0.1", dport), ("::1", dport)
    return [v1_header(src4, dst4), v1_header(src6, dst6), v2_header(src4, dst4), v2_header(src6, dst6),
            v2_header(src4, dst4, tlvs=[(0x02, b"example.com"), (0x05, b"id")], crc=True),
            v1_header(None, None), v2_header(command=0)]


@pytest.mark.time_limit(size(120, 900))
@pytest.mark.parametrize("listener,trusted,peers,control", [
    ("127.0.0.1:0", SPOOF_TRUSTED, ["127.0.0.15", "127.0.0.24", "127.0.0.1"], ["127.0.0.16", "127.0.0.23"]),
    ("[::1]:0", SPOOF_TRUSTED, ["::1"], []),
    ("[::]:0", SPOOF_TRUSTED, ["127.0.0.15", "127.0.0.24", "::1"], ["127.0.0.16", "127.0.0.23"]),
    ("[::]:0", SPOOF_TRUSTED_MAPPED, ["127.0.0.15", "127.0.0.24", "::1"], ["127.0.0.16", "127.0.0.23"]),
], ids=["ipv4", "ipv6", "dualstack", "dualstack-mapped-cidr"])
def test_spoofed_headers_from_untrusted_peers_are_never_read(procs, listener, trusted, peers, control):
    n = size(2500, 2500)  # the published figure fits in make test
    p, port = start_testserver("--mode", "epoll", listen=listener, env=shim_env(TRUSTED=trusted),
                               log_name="spoof")
    procs.append(p)
    host = "::1" if listener.startswith("[::1]") else "127.0.0.1"
    expect, lock = {}, threading.Lock()
    dual = listener.startswith("[::]")

    def one(i):
        rng = random.Random(1000 + i)
        ctl = control and i % 50 == 0
        src = control[i // 50 % len(control)] if ctl else peers[i % len(peers)]
        dest = "::1" if ":" in src else host
        hdrs = spoof_headers(rng, port)
        h = hdrs[i % (2 if ctl else len(hdrs))]  # the control sends a v1 or v2 header with a source
        marker = b"SP%08d." % i
        data = marker + b"payload\n"
        s = connect_from(port, src, host=dest, timeout=10.0)
        try:
            me = s.getsockname()
            s.sendall(h + data)
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s)
        finally:
            s.close()
        if ctl:
            assert got == data, (src, h)
            m = re.match(rb"PROXY TCP[46] (\S+) \S+ (\d+) ", h)
            exp = (m.group(1).decode(), int(m.group(2))) if m else None
            if exp is None:
                hh = oracle(h + data)
                exp = (hh[2][1], hh[2][2])
            if dual and ":" not in exp[0]:
                exp = ("::ffff:" + exp[0], exp[1])  # an IPv4 source on an AF_INET6 listener
            with lock:
                expect[h + data] = ("control", exp)
        else:
            assert got == h + data, "untrusted connection changed: %r" % got[:120]
            real = me[0]
            if dual and ":" not in real:
                real = "::ffff:" + real
            with lock:
                expect[h + data] = ("untrusted", (real, me[1]))

    t0 = time.monotonic()
    errors = run_parallel(n, 8, one, size(100, 850))
    assert not errors, errors[:5]
    lines = wait_conns(p, n, timeout=20)
    assert len(lines) == n
    by_sha = {}
    for l in lines:
        by_sha.setdefault(l["sha256"], []).append(l)
    rewritten = untouched = controls = 0
    for wire, (kind, (ip, prt)) in expect.items():
        key = hashlib.sha256(wire if kind == "untrusted" else wire[wire.index(b"SP"):]).hexdigest()
        (l,) = by_sha[key]
        hit = same_ip(l["peer"]["addr"], ip) and l["peer"]["port"] == prt and same_ip(l["accept"]["addr"], ip)
        assert hit, (kind, ip, prt, l)
        if kind == "control":
            controls += 1
        else:
            untouched += 1
    figure("spoofing", listener=listener, trusted=trusted, untrusted_connections=untouched,
           rewritten=rewritten, trusted_controls_rewritten=controls, seconds=round(time.monotonic() - t0, 1))
    assert untouched + controls == n and rewritten == 0
    if control:
        assert controls == len(range(0, n, 50))


# ---- figure 4: integrity, every byte of header plus payload cut at random ----

def log_uniform_size(rng, top=1 << 20):
    return max(1, min(top, int(2 ** rng.uniform(0, 20))))


@pytest.mark.time_limit(size(150, 3000))
@pytest.mark.parametrize("consume", ["accept", "lazy"])
@pytest.mark.parametrize("mode", ["blocking", "epoll"])
def test_integrity_random_segments_and_pauses(procs, mode, consume):
    n = size(300, 2500)
    args = ["--mode", "epoll"] if mode == "epoll" else ["--mode", "threads", "--threads", "8"]
    p, port = start_testserver(*args, "--io-timeout", "30000",
                               env=shim_env(TRUSTED=TRUSTED, CONSUME=consume, TIMEOUT_MS=10000),
                               log_name="integrity")
    procs.append(p)
    expect, lock = {}, threading.Lock()
    total = [0, 0]

    def one(i):
        rng = random.Random(5000 + i * 7 + (mode == "epoll") + 2 * (consume == "lazy"))
        marker = b"IG%08d." % i
        payload = marker + os.urandom(max(0, log_uniform_size(rng) - len(marker)))
        src = (rand_ip(rng, rng.random() < 0.3), rng.randrange(1, 65536))
        h = (v1_header if rng.random() < 0.5 else v2_header)(src, (src[0], port)) if rng.random() < 0.9 else \
            v2_header(src, (src[0], port), tlvs=[(0xE0, os.urandom(rng.randrange(1, 2000)))], crc=True)
        s = connect_from(port, TRUSTED, timeout=30)
        err = []

        def send():
            try:
                send_segments(s, h + payload, rng, 0.03 if rng.random() < 0.3 else 0.0, head=len(h))
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            got = recv_all(s)
        finally:
            t.join(60)
            s.close()
        assert not err, err
        assert len(got) == len(payload) and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(), \
            "echo differs: %d of %d bytes" % (len(got), len(payload))
        with lock:
            expect[marker] = (src, hashlib.sha256(payload).hexdigest(), len(payload))
            total[0] += len(payload)
            total[1] += len(h)

    t0 = time.monotonic()
    errors = run_parallel(n, 8, one, size(140, 2900))
    assert not errors, errors[:5]
    lines = wait_conns(p, n, timeout=30)
    assert len(lines) == n
    by = line_by_marker(lines, 11)
    for marker, (src, sha, ln) in expect.items():
        l = by[marker]
        assert l["bytes"] == ln and l["sha256"] == sha, l
        assert same_ip(l["peer"]["addr"], src[0]) and l["peer"]["port"] == src[1], l
    figure("integrity", mode=mode, consume=consume, connections=n, payload_bytes=total[0],
           header_bytes=total[1], mismatches=0, seconds=round(time.monotonic() - t0, 1))


# ---- figure 5: threads under ThreadSanitizer; apache2 prefork behind HAProxy ----

@pytest.mark.time_limit(size(150, 2400))
def test_sixteen_threads_accept_and_close_under_tsan(procs, tmp_path):
    n = size(10000, 100000)
    p, port = start_testserver("--mode", "threads", "--threads", "16",
                               env=san_env("tsan", tmp_path, TRUSTED="127.0.0.0/28", LOG="error", TIMEOUT_MS=3000),
                               log_name="tsan", timeout=20)
    procs.append(p)
    assert maps_has(p.pid, "libtsan") and maps_has(p.pid, TSAN_LIB), "not the TSan build"
    expect, lock = {}, threading.Lock()
    kinds = {"header": 0, "pieces": 0, "untrusted": 0, "invalid": 0}

    def one(i):
        rng = random.Random(77 + i)
        marker = b"TS%08d." % i
        data = marker + b"x" * rng.randrange(0, 100)
        k = rng.random()
        if k < 0.2:
            kind, srcip, h = "untrusted", "127.0.0.%d" % (20 + i % 30), b""
        elif k < 0.25:
            kind, srcip, h = "invalid", "127.0.0.%d" % (2 + i % 10), b"PROXY TCP9 x\r\n"
        else:
            src = (rand_ip(rng, rng.random() < 0.3), rng.randrange(1, 65536))
            h = (v1_header if i % 2 else v2_header)(src, (src[0], port))
            kind, srcip = ("pieces" if k > 0.93 else "header"), "127.0.0.%d" % (2 + i % 10)
        s = connect_from(port, srcip, timeout=20)
        try:
            me = s.getsockname()
            got = send_then_read(s, h + data, rng, 0.01 if kind == "pieces" else 0, head=len(h))
        finally:
            s.close()
        with lock:
            kinds[kind] += 1
        if kind == "invalid":
            assert got == b""
            return
        if kind == "untrusted":
            assert got == h + data
            key, val = hashlib.sha256(h + data).hexdigest(), (me[0], me[1])
        else:
            assert got == data
            key, val = hashlib.sha256(data).hexdigest(), src
        with lock:
            expect[key] = val

    t0 = time.monotonic()
    errors = run_parallel(n, 16, one, size(140, 2300))
    elapsed = time.monotonic() - t0
    assert not errors, errors[:5]
    lines = wait_conns(p, len(expect), timeout=60)
    time.sleep(0.5)
    lines = conn_lines(p)
    assert len(lines) == len(expect)
    by = {l["sha256"]: l for l in lines}
    for sha, (ip, prt) in expect.items():
        l = by[sha]
        assert same_ip(l["peer"]["addr"], ip) and l["peer"]["port"] == prt, l
    text, reports = san_reports(tmp_path, "tsan", p.stop())
    races = sorted(set(l.split("data race ", 1)[-1] for l in reports if l.startswith("SUMMARY")))
    figure("tsan_threads", threads=16, connections=n, kinds=kinds,
           tsan_reports=sum(1 for l in reports if l.startswith("WARNING")), distinct=races,
           seconds=round(elapsed, 1))
    assert not reports, "\n".join(races) + "\n" + text[:8000]


APACHE_CONF = """
ServerRoot "{d}"
ServerName localhost
PidFile "{d}/apache2.pid"
DefaultRuntimeDir "{d}"
Mutex file:{d} default
Listen 127.0.0.1:{port}
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
User www-data
Group www-data
StartServers {servers}
MinSpareServers {servers}
MaxSpareServers {maxservers}
ServerLimit {maxservers}
MaxRequestWorkers {maxservers}
MaxConnectionsPerChild 0
KeepAlive Off
ErrorLog "{d}/error.log"
LogLevel warn
LogFormat "%a %{{remote}}p %P \\"%r\\" %>s" peer
CustomLog "{d}/access.log" peer
DocumentRoot "{d}/htdocs"
<Directory />
    AllowOverride None
</Directory>
<Directory "{d}/htdocs">
    Require all granted
</Directory>
"""


@pytest.mark.time_limit(size(120, 900))
@pytest.mark.apps
def test_apache_prefork_children_log_the_client(procs, tmp_path):
    n = size(400, 5000)
    # apache's children run as www-data: a directory they can reach (pytest's tmp is 0700)
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="proxyshim-apache-")
    os.chmod(d, 0o755)
    procs.append(type("Cleanup", (), {"stop": lambda self: shutil.rmtree(d, ignore_errors=True)})())
    os.makedirs(d + "/htdocs")
    with open(d + "/htdocs/index.html", "w") as f:
        f.write("ok\n")
    port = free_port()
    with open(d + "/httpd.conf", "w") as f:
        f.write(APACHE_CONF.format(d=d, port=port, servers=8, maxservers=16))
    ap = Proc(["apache2", "-d", d, "-f", d + "/httpd.conf", "-DFOREGROUND"],
              env=shim_env(TRUSTED=TRUSTED), log_name="apache2")
    procs.append(ap)
    try:
        wait_port(port, proc=ap, timeout=15)
    except Exception:
        raise RuntimeError("apache2 did not start:\n" + ap.stop() + open(d + "/error.log").read())
    h, fport = haproxy_sender(tmp_path, "127.0.0.1", port, "send-proxy-v2", TRUSTED)
    procs.append(h)
    # haproxy_sender's readiness probe made one connection through HAProxy to apache
    sent, lock = {}, threading.Lock()

    def one(i):
        src = "127.0.0.%d" % (10 + i % 200)
        s = connect_from(fport, src, timeout=10)
        try:
            me = s.getsockname()
            s.sendall(b"GET /index.html?id=%d HTTP/1.0\r\nHost: x\r\n\r\n" % i)
            got = recv_all(s)
        finally:
            s.close()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ok\n"), got[:200]
        with lock:
            sent[i] = me

    errors = run_parallel(n, 24, one, size(100, 850))
    assert not errors, errors[:5]
    deadline = time.monotonic() + 10
    pat = re.compile(r'^(\S+) (\d+) (\d+) "GET /index.html\?id=(\d+) HTTP/1.0" 200$')
    while True:
        rows = [pat.match(l) for l in open(d + "/access.log").read().splitlines()]
        rows = [m for m in rows if m]
        if len(rows) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == n, "%d log lines for %d requests" % (len(rows), n)
    wrong, pids = [], {}
    for m in rows:
        ip, prt, pid, i = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        pids[pid] = pids.get(pid, 0) + 1
        if (ip, prt) != sent[i]:
            wrong.append((m.group(0), sent[i]))
    assert not wrong, wrong[:10]
    figure("apache_prefork", requests=n, children=len(pids), wrong=len(wrong),
           per_child=sorted(pids.values()))
    assert len(pids) >= 4, "only %d children served: prefork not exercised" % len(pids)


# ---- figure 6: faults, one at a time, through the fault server (tests/stress/faultserver.c) ----

class FaultServer:
    """tests/stress/faultserver.c, driven command by command; stopped by pid at teardown."""

    def __init__(self, env, tmp_path):
        self.errpath = os.path.join(str(tmp_path), "faultserver.err")
        self.err = open(self.errpath, "wb")
        self.p = subprocess.Popen([FAULTSERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, env=env, start_new_session=True)
        self.pid = self.p.pid
        self.pending = []
        assert self.read()["cmd"] == "ready"

    def read(self, timeout=5.0, cmd=None):
        """The next answer (the next one for `cmd` when given; others are kept for later)."""
        for i, a in enumerate(self.pending):
            if cmd is None or a["cmd"] == cmd:
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.p.stdout], [], [], max(0.0, left))
            if not r:
                raise TimeoutError("faultserver: no %s answer in %.1f s; stderr:\n%s" % (cmd, timeout, self.stderr()))
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("faultserver exited %s; stderr:\n%s" % (self.p.poll(), self.stderr()))
            a = json.loads(line)
            if cmd is None or a["cmd"] == cmd:
                return a
            self.pending.append(a)

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def cmd(self, line, timeout=5.0):
        self.send(line)
        return self.read(timeout, cmd=line.split()[0])

    def fds(self):
        return set(self.cmd("fds")["list"])

    def kinds(self, fds):
        return self.cmd("alive " + " ".join(map(str, sorted(fds))))["fds"] if fds else {}

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.p.wait()
        self.err.close()
        return self.stderr()


@pytest.fixture
def fault(procs, tmp_path):
    def start(env=None, **vars):
        f = FaultServer(env or shim_env(**vars), tmp_path)
        procs.append(f)
        return f
    return start


FSRC = ("203.0.113.7", 40001)


def partial(port, n=10, src=TRUSTED):
    """A trusted connection that has sent the first n bytes of a v1 header; returns (socket, rest)."""
    h = v1_header(FSRC, ("127.0.0.1", port))
    s = connect(port, source=src)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(h[:n])
    return s, h[n:]


def whole(port, payload=b"payload\n", src=TRUSTED):
    """A trusted connection that has sent a whole header and its payload, then half-closed."""
    s = connect(port, source=src)
    s.sendall(v1_header(FSRC, ("127.0.0.1", port)) + payload)
    s.shutdown(socket.SHUT_WR)
    return s


def dropped(s, timeout=5.0):
    """True when the server closed the connection (EOF or reset) without sending a byte."""
    s.settimeout(timeout)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def served(f, a, payload=b"payload\n"):
    """The accepted connection `a` carries the header's source and exactly the payload."""
    assert a["ret"] >= 0 and a["errno"] == "" and a["errno_kept"], a
    assert a["peer"] == "%s %d" % FSRC, a
    r = f.cmd("read %d" % a["ret"])
    assert r["ret"] == 0 and bytes.fromhex(r["hex"]) == payload, r
    assert f.cmd("close %d" % a["ret"])["ret"] == 0


def shim_own(f, fds):
    """Of these fds, the ones that are the shim's parking epoll and timer fds."""
    k = f.kinds(fds)
    return {int(fd) for fd, what in k.items() if what in ("anon_inode:[eventpoll]", "anon_inode:[timerfd]")}


@pytest.mark.parametrize("nb", [False, True], ids=["blocking", "nonblocking"])
def test_emfile_in_accept_then_service_resumes(fault, nb):
    f = fault(TRUSTED=TRUSTED)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0" + (" nb" if nb else ""))
    lfd, port = l["fd"], l["port"]
    assert f.cmd("nofile 64")["ret"] == 0
    filled = f.cmd("fill")
    assert filled["errno"] == "EMFILE"
    c = whole(port)
    time.sleep(0.1)
    for _ in range(3):
        a = f.cmd("accept_nb %d" % lfd if nb else "accept %d" % lfd)
        assert (a["ret"], a["errno"]) == (-1, "EMFILE"), a  # libc's error, the connection still queued
    f.cmd("unfill")
    assert f.fds() == before | {lfd}, "an fd leaked while accept() failed"
    served(f, f.cmd("accept %d" % lfd))
    assert c.recv(10) == b"" or True
    c.close()
    assert f.cmd("close %d" % lfd)["ret"] == 0
    assert f.fds() == before
    figure("fault_emfile", listener="nonblocking" if nb else "blocking", errno="EMFILE", resumed=True, leaked=0)


def test_emfile_when_parking_needs_fds_nonblocking_accept_does_not_block(fault):
    # One fd left: accept() gets the connection, but parking its incomplete header needs an
    # epoll fd and a timer fd. A non-blocking listener's accept() must still not wait.
    f = fault(TRUSTED=TRUSTED, TIMEOUT_MS=3000, DEFER_ACCEPT=0)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0 nb")
    lfd, port = l["fd"], l["port"]
    f.cmd("nofile 64")
    f.cmd("fill")
    f.cmd("unfill 1")
    s, rest = partial(port)
    time.sleep(0.1)
    t0 = time.monotonic()
    a = f.cmd("accept_nb %d" % lfd)
    took = time.monotonic() - t0
    f.cmd("unfill")
    s.close()
    figure("fault_emfile_park", accept_seconds=round(took, 3), result=a["errno"] or a["ret"])
    assert took < 0.2, "accept() on a non-blocking listener blocked %.2f s (%s)" % (took, a)
    assert (a["ret"], a["errno"]) in ((-1, "EAGAIN"), (-1, "EMFILE")), a


def test_enfile_in_accept_injected_then_service_resumes(fault, tmp_path):
    # fs.file-max is system-wide: lowering it would fail every process on the machine, so
    # ENFILE comes from tests/stress/inject.c beneath the shim, before the kernel's accept.
    ctl = str(tmp_path / "inject")
    env = shim_env(TRUSTED=TRUSTED)
    env["LD_PRELOAD"] = LIB + " " + INJECT
    env["E2E_TEST_INJECT"] = ctl
    f = fault(env=env)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0")
    lfd, port = l["fd"], l["port"]
    c = whole(port)
    time.sleep(0.1)
    with open(ctl, "w") as fh:
        fh.write("ENFILE")
    for cmd in ("accept", "accept_nb"):
        a = f.cmd("%s %d" % (cmd, lfd))
        assert (a["ret"], a["errno"]) == (-1, "ENFILE"), a
    assert f.fds() == before | {lfd}
    os.unlink(ctl)
    served(f, f.cmd("accept %d" % lfd))
    c.close()
    f.cmd("close %d" % lfd)
    assert f.fds() == before
    figure("fault_enfile", errno="ENFILE", injected=True, resumed=True, leaked=0)


@pytest.mark.parametrize("restart", [False, True], ids=["no-SA_RESTART", "SA_RESTART"])
def test_signal_during_header_wait(fault, restart):
    f = fault(TRUSTED=TRUSTED, TIMEOUT_MS=5000, DEFER_ACCEPT=0)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0")
    lfd, port = l["fd"], l["port"]
    f.cmd("sig " + ("restart" if restart else "norestart"))
    s, rest = partial(port)
    time.sleep(0.1)
    f.cmd("alarm 300")
    f.send("accept %d" % lfd)
    time.sleep(0.8)
    s.sendall(rest + b"payload\n")
    s.shutdown(socket.SHUT_WR)
    a = f.read(cmd="accept")
    figure("fault_eintr", sa_restart=restart, first_accept=a["errno"] or "connection", alarms=a["alarms"])
    assert a["alarms"] == 1, a
    if restart:
        # libc: with SA_RESTART the kernel restarts a blocking accept(); it never fails with EINTR
        assert a["errno"] != "EINTR", "accept() failed with EINTR under SA_RESTART: %s" % a
        served(f, a)
    else:
        assert (a["ret"], a["errno"]) == (-1, "EINTR"), a
        served(f, f.cmd("accept %d" % lfd))  # the parked connection was kept
    assert dropped(s) is True
    f.cmd("close %d" % lfd)
    assert f.fds() == before


@pytest.mark.parametrize("how", ["blocking", "nonblocking", "lazy"])
def test_peer_reset_mid_header(fault, how):
    f = fault(TRUSTED=TRUSTED, TIMEOUT_MS=5000, DEFER_ACCEPT=0, CONSUME="lazy" if how == "lazy" else "accept")
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0" + (" nb" if how == "nonblocking" else ""))
    lfd, port = l["fd"], l["port"]
    s, rest = partial(port)
    time.sleep(0.1)
    if how == "nonblocking":
        assert f.cmd("accept_nb %d" % lfd)["errno"] == "EAGAIN"  # parked
    elif how == "lazy":
        pend = f.cmd("accept %d" % lfd)  # lazy: accept() returns at once, the header pending
        assert pend["ret"] >= 0, pend
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    time.sleep(0.1)
    if how == "lazy":
        r = f.cmd("read %d" % pend["ret"])
        assert (r["ret"], r["errno"], r["bytes"]) == (-1, "ECONNRESET", 0), r
        f.cmd("close %d" % pend["ret"])
    c = whole(port)
    time.sleep(0.1)
    served(f, f.cmd("accept %d" % lfd))
    c.close()
    own = shim_own(f, f.fds() - before - {lfd})
    assert f.fds() == before | {lfd} | own, "the reset connection's fd leaked"
    f.cmd("close %d" % lfd)
    assert f.fds() == before
    figure("fault_reset_mid_header", mode=how, leaked=0, resumed=True)


def test_listener_closed_by_another_thread(fault):
    # libc's accept() stays blocked on a listener closed under it (the kernel holds the file);
    # under the shim it wakes at the latest when the parked headers' deadline passes, and then
    # fails as accept() on a closed fd does.
    f = fault(TRUSTED=TRUSTED, TIMEOUT_MS=1500, DEFER_ACCEPT=0)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0")
    lfd, port = l["fd"], l["port"]
    parked = [partial(port)[0] for _ in range(3)]
    time.sleep(0.1)
    f.send("closer %d 300" % lfd)
    t0 = time.monotonic()
    a = f.cmd("accept %d" % lfd, timeout=10)
    took = time.monotonic() - t0
    assert f.read(cmd="closer")["ret"] == 0
    assert (a["ret"], a["errno"]) == (-1, "EBADF"), a
    assert took < 1.5 + 1.0, took
    assert all(dropped(s) for s in parked)
    assert f.fds() == before, "fds left after the listener was closed: %s" % f.kinds(f.fds() - before)
    # service resumes on a new listener (most likely the same fd number)
    l2 = f.cmd("listen 127.0.0.1:0")
    c = whole(l2["port"])
    served(f, f.cmd("accept %d" % l2["fd"]))
    c.close()
    f.cmd("close %d" % l2["fd"])
    assert f.fds() == before
    figure("fault_listener_closed", accept_errno=a["errno"], seconds=round(took, 2), parked_closed=3, leaked=0)


@pytest.mark.parametrize("how", ["loop", "close_range", "closefrom", "syscall"])
def test_program_closes_every_fd_above_2(fault, how):
    # A daemon that closes everything above 2 while the shim holds parked connections (its
    # epoll fd, timer fd and the connections), then opens files of its own and listens again.
    f = fault(TRUSTED=TRUSTED, TIMEOUT_MS=5000, DEFER_ACCEPT=0)
    before = f.fds()
    l = f.cmd("listen 127.0.0.1:0 nb")
    lfd, port = l["fd"], l["port"]
    parked = [partial(port)[0] for _ in range(2)]
    time.sleep(0.1)
    assert f.cmd("accept_nb %d" % lfd)["errno"] == "EAGAIN"
    held = f.fds() - before
    assert len(held) == 5, f.kinds(held)  # listener, epoll fd, timer fd, two parked connections
    assert f.cmd("closeall " + how)["ret"] == 0
    assert f.fds() == {0, 1, 2}
    mine = f.cmd("open %d" % len(held))["fds"]  # the program's own files take those numbers
    assert sorted(mine) == sorted(held)
    l2 = f.cmd("listen 127.0.0.1:0")
    c = whole(l2["port"])
    served(f, f.cmd("accept %d" % l2["fd"]))
    c.close()
    f.cmd("close %d" % mine[0])  # the program closes one of its files (the old listener's number)
    alive = f.kinds(mine[1:])
    closed_behind = [fd for fd, what in alive.items() if what != "/dev/null"]
    assert all(dropped(s) for s in parked)
    figure("fault_close_all", how=how, program_fds_closed_by_shim=len(closed_behind))
    assert not closed_behind, "the shim closed the program's own fds %s after %s" % (closed_behind, how)
    c2 = whole(l2["port"])
    served(f, f.cmd("accept %d" % l2["fd"]))
    c2.close()
    f.cmd("close %d" % l2["fd"])
    for fd in mine[1:]:
        f.cmd("close %d" % fd)
    assert f.fds() == {0, 1, 2}


# ---- figure 3: stalling peers at scale beside healthy clients, nginx under the shim ----

NGINX_CONF = """
user root;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "you are $remote_addr:$remote_port\n"; }}
    }}
}}
"""
LOAD = os.path.join(ROOT, "tests", "stress", "load.py")


def load(kind, port, n, seconds):
    return Proc(["/usr/bin/python3", LOAD, kind, str(port), str(n), str(seconds)], log_name="load-" + kind)


def load_result(p, seconds):
    try:
        p.p.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        raise TimeoutError("load did not finish:\n" + p.stop())
    out = p.stop()
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("load printed no result:\n" + out)


def healthy(port, clients, seconds, procs_n=4):
    """`clients` healthy clients in procs_n processes (the GIL of one would be the p99)."""
    ps = [load("healthy", port, clients // procs_n, seconds) for _ in range(procs_n)]
    res = [load_result(p, seconds) for p in ps]
    return {"latencies_ms": sum((r["latencies_ms"] for r in res), []),
            "failures": sum((r["failures"] for r in res), []),
            "nfailures": sum(r["nfailures"] for r in res), "requests": sum(r["requests"] for r in res)}


def fd_kinds(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


@pytest.mark.time_limit(size(120, 600))
@pytest.mark.apps
def test_stalling_peers_do_not_slow_healthy_clients(procs, tmp_path):
    stallers, seconds = size(150, 500), size(4, 30)
    d = str(tmp_path)
    port = free_port()
    with open(d + "/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(d=d, port=port))
    ng = Proc(["nginx", "-p", d, "-c", d + "/nginx.conf", "-g", "daemon off;"],
              env=shim_env(TRUSTED="127.0.0.0/24"), log_name="nginx")
    procs.append(ng)
    wait_port(port, proc=ng)
    w = child_pids(ng.pid)[0]  # its one worker
    warm = load_result(load("healthy", port, 20, 1), 1)
    assert warm["nfailures"] == 0, warm["failures"][:5]
    fd_pristine = fd_kinds(w)
    # one stalled connection first: the shim's parking epoll fd and timer fd are made on the
    # first park and kept for the listener's life; the baseline is nginx's fds with them
    s = connect(port, source="127.0.0.10")
    s.sendall(b"PROXY TCP4 ")
    assert dropped(s, timeout=5)
    fd_base = open_fds(w)
    extra = sorted(v for k, v in fd_kinds(w).items() if k not in fd_pristine)
    assert extra == ["anon_inode:[eventpoll]", "anon_inode:[timerfd]"], extra
    base = healthy(port, 100, seconds)
    st = load("stall", port, stallers, seconds + 2)
    procs.append(st)
    time.sleep(1.0)  # every staller connected and stalling
    loaded = healthy(port, 100, seconds)
    sres = load_result(st, seconds + 2)
    # the shim drops what is left within PROXYSHIM_TIMEOUT_MS (1 s); nginx's fds come back
    deadline = time.monotonic() + 5
    while open_fds(w) != fd_base and time.monotonic() < deadline:
        time.sleep(0.1)
    fd_after = open_fds(w)
    b99, l99 = p99(base["latencies_ms"]), p99(loaded["latencies_ms"])
    figure("stalling", stallers=stallers, healthy_clients=100, seconds=seconds,
           p99_ms_without=round(b99, 2), p99_ms_with=round(l99, 2),
           healthy_requests=loaded["requests"], healthy_failures=loaded["nfailures"] + base["nfailures"],
           staller_connects=sres["connects"], stallers_dropped=sres["dropped"], stallers_served=sres["served"],
           nginx_fds_before_any_park=len(fd_pristine), nginx_fds_base=fd_base, nginx_fds_after=fd_after)
    assert base["nfailures"] == 0 and loaded["nfailures"] == 0, (base["failures"][:5], loaded["failures"][:5])
    assert sres["served"] == 0 and not sres["errors"], sres
    assert sres["connects"] >= stallers
    # A frozen loop would hold healthy clients behind stallers for up to PROXYSHIM_TIMEOUT_MS
    # (1 s) each; the bound is a quarter of that, far above this shared machine's noise (p99s
    # of 78 ms without stallers were seen under load). How small the cost is, is make bench's.
    assert l99 - b99 <= 250.0, "p99 %.1f ms with stallers, %.1f ms without" % (l99, b99)
    assert fd_after == fd_base, "nginx holds %d fds, %d before" % (fd_after, fd_base)
