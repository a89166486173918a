#!/bin/sh
# make demo: an unmodified python3 http.server under the shim logs the client address that a
# PROXY v2 header announced, not the address of the connection that carried it.
set -eu
cd "$(dirname "$0")/.."
B=${BUILD:-build}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
log="$dir/server.log"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

echo "\$ LD_PRELOAD=$B/libproxyshim.so PROXYSHIM_TRUSTED=127.0.0.1 python3 -m http.server --bind 127.0.0.1 $port"
LD_PRELOAD="$PWD/$B/libproxyshim.so" PROXYSHIM_TRUSTED=127.0.0.1 \
	$PY -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$log" 2>&1 &
pid=$!
i=0
until $PY -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "demo: the server did not start" >&2; cat "$log" >&2; exit 1; }
	sleep 0.05
done
printf '%s\n' "\$ printf 'GET / HTTP/1.0\\r\\n\\r\\n' | $B/proxyshim-send -2 --src 203.0.113.7:4711 127.0.0.1 $port"
printf 'GET / HTTP/1.0\r\n\r\n' | "$B/proxyshim-send" -2 --src 203.0.113.7:4711 127.0.0.1 "$port" | head -n 1
i=0
until grep -q '"GET / HTTP/1.0"' "$log"; do
	i=$((i + 1)); [ $i -lt 100 ] || break
	sleep 0.05
done
echo "# the server's own log line:"
grep '"GET / HTTP/1.0"' "$log" || { echo "demo: no request logged" >&2; cat "$log" >&2; exit 1; }
grep -q '^203\.0\.113\.7 ' "$log" || { echo "demo: FAILED: the server did not see 203.0.113.7" >&2; exit 1; }
echo "# the connection came from 127.0.0.1; the server saw the header's 203.0.113.7."
