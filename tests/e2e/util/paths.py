"""Where the build puts what the tests run, and the environment of a program under the shim."""
import os

__all__ = ["ROOT", "BUILD", "LIB", "SEND", "TESTSERVER", "WRAPPER", "TESTSERVER_MUSL", "shim_env"]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.environ.get("E2E_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libproxyshim.so")
SEND = os.path.join(BUILD, "proxyshim-send")
TESTSERVER = os.path.join(BUILD, "testserver")
WRAPPER = os.path.join(BUILD, "proxyshim")
TESTSERVER_MUSL = os.path.join(BUILD, "testserver-musl")


def shim_env(**vars):
    """The environment for a program under the shim: LD_PRELOAD plus PROXYSHIM_* (keyword
    names without the prefix, e.g. TRUSTED='127.0.0.2')."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = LIB
    for k, v in vars.items():
        env["PROXYSHIM_" + k.upper()] = str(v)
    return env
