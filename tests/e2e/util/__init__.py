"""Shared helpers for the end-to-end tests, by concern:

  paths       where the build puts what the tests run (ROOT, BUILD, LIB...), shim_env()
  procs       processes started and stopped by pid (Proc), free_port, wait_port, start_listening,
              printed_json, wait_json, child_pids, open_fds
  headers     PROXY v1/v2 headers built in Python (v1_header, v2_header, crc32c, V2_SIG)
  clients     connect, connect_from, exchange, recv_all, stalling peers (start_stallers)
  testserver  the C test server (start_testserver, conn_lines, wait_conns)
  apps        outside servers: HAProxy (haproxy, haproxy_sender), nginx, node, redis
  stats       percentile, p99

Every public name is re-exported here: `from util import X` works for all of them."""
from . import apps, clients, headers, paths, procs, stats, testserver
from .apps import *  # noqa: F401,F403
from .clients import *  # noqa: F401,F403
from .headers import *  # noqa: F401,F403
from .paths import *  # noqa: F401,F403
from .procs import *  # noqa: F401,F403
from .stats import *  # noqa: F401,F403
from .testserver import *  # noqa: F401,F403

__all__ = (paths.__all__ + procs.__all__ + headers.__all__ + clients.__all__ + testserver.__all__
           + apps.__all__ + stats.__all__)
