"""errno across the hooks (STYLE.md: a hook leaves errno as it was on success): in lazy mode
the shim reads a header behind the program's read(), recv(), getpeername() or getsockname(),
peeking at a header that arrives late and in pieces (EAGAIN inside the shim), and none of that
may show in errno. tests/e2e/progs/errnoprog.c makes the calls with errno preset."""
import os
import time

import pytest

from util import BUILD, connect_from, shim_env, shut_wr, start_listening, v2_header, wait_json

ERRNOPROG = os.path.join(BUILD, "progs", "errnoprog")
TRUSTED = "127.0.0.2"
SRC = ("203.0.113.9", 4711)
DST = ("198.51.100.20", 443)
PAYLOAD = b"hello after a late header\n" + bytes(range(256))


@pytest.mark.parametrize("first", ["read", "recv_dontwait", "getpeername", "getsockname"])
def test_lazy_header_read_behind_a_call_keeps_errno(procs, first):
    p, port = start_listening([ERRNOPROG, "--first", first],
                              env=shim_env(TRUSTED=TRUSTED, CONSUME="lazy", LOCAL_ADDR="header",
                                           TIMEOUT_MS=3000), log_name="errnoprog")
    procs.append(p)
    h = v2_header(SRC, DST)
    s = connect_from(port, TRUSTED)
    time.sleep(0.2)  # accept() has returned; the first call waits for (or polls for) the header
    s.sendall(h[:10])
    time.sleep(0.1)  # the shim peeks at part of a header
    s.sendall(h[10:] + PAYLOAD)
    shut_wr(s)
    while s.recv(4096):
        pass
    s.close()
    (line,) = wait_json(p, lambda d: d.get("n") == 1)
    assert line["listen_kept"] and line["accept_kept"], line
    assert line["first"]["rc"] >= 0 and line["first"]["errno_kept"], line
    if first == "recv_dontwait":
        assert line["first"]["eagain"] > 0, line  # the shim's own answer while incomplete
    assert line["rest_kept"] and line["gp_kept"], line
    assert line["peer"] == {"family": "AF_INET", "addr": SRC[0], "port": SRC[1]}, line
    assert bytes.fromhex(line["hex"]) == PAYLOAD
