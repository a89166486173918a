"""Consuming the header: the shim discards exactly the header's bytes with recv(MSG_TRUNC), and
falls back to reading them into its buffer on a socket that refuses the flag. Either way the
program receives every application byte and the header's source."""
import os

import pytest

from util import BUILD, LIB, exchange, shim_env, start_testserver, v1_header, v2_header, wait_conns
from test_preload_accept import PAYLOAD, SRC4, SRC6, TRUSTED, check_line

NOTRUNC = os.path.join(BUILD, "faults", "libnotrunc.so")
REFUSED = "notrunc: refused MSG_TRUNC"


def headers(port):
    dst = ("127.0.0.1", port)
    return {
        "v1": (v1_header(SRC4, dst), "AF_INET", SRC4),
        "v2": (v2_header(SRC4, dst), "AF_INET", SRC4),
        "v2-ipv6-tlvs-crc": (v2_header(SRC6, ("::1", port), tlvs=[(0x04, b"x" * 300), (0x01, b"h2")], crc=True),
                             "AF_INET6", SRC6),
    }


@pytest.fixture
def server(procs):
    def start(*args, preload=LIB):
        env = shim_env(TRUSTED=TRUSTED)
        env["LD_PRELOAD"] = preload
        p, port = start_testserver(*args, env=env)
        procs.append(p)
        return p, port
    return start


@pytest.mark.parametrize("kind", ["v1", "v2", "v2-ipv6-tlvs-crc"])
@pytest.mark.parametrize("mode", [[], ["--mode", "epoll"]])
def test_consume_with_msg_trunc(server, kind, mode):
    p, port = server(*mode)
    data, fam, src = headers(port)[kind]
    # a payload that starts like a header, so a byte too many or too few taken shows
    payload = b"PROXY \r\n\x0d\x0a" + PAYLOAD * 50
    got, _ = exchange(port, data + payload, source=TRUSTED)
    assert got == payload
    (line,) = wait_conns(p, 1)
    check_line(line, fam, src[0], src[1], payload)
    assert REFUSED not in p.output()


@pytest.mark.parametrize("kind", ["v1", "v2", "v2-ipv6-tlvs-crc"])
def test_consume_falls_back_when_msg_trunc_is_refused(server, kind):
    assert os.path.exists(NOTRUNC), "make builds %s" % NOTRUNC
    p, port = server("--mode", "epoll", preload=LIB + ":" + NOTRUNC)
    data, fam, src = headers(port)[kind]
    payload = PAYLOAD * 50
    got, _ = exchange(port, data + payload, source=TRUSTED)
    assert got == payload
    (line,) = wait_conns(p, 1)
    check_line(line, fam, src[0], src[1], payload)
    # the refusal happened, and the connection was still served from the plain read
    assert REFUSED in p.output()
    assert "event=reject" not in p.output()
