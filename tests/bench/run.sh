#!/bin/sh
# make bench: each section is a script of its own, run in turn; non-zero if any misses a target.
set -u
here=$(cd "$(dirname "$0")" && pwd)
status=0

# ---- protocol parser: instructions per pp_parse() (callgrind) ----
echo "== parse: instructions per successful pp_parse()"
"$here/parse_instructions.sh" || status=1

# ---- performance: A to K (docs/PERFORMANCE.md), side by side with no shim and with HAProxy ----
# QUICK=1 (make bench QUICK=1): fewer, shorter rounds.
echo
echo "== performance: connections, bulk, start-up, memory, system calls, CPU (QUICK=${QUICK:-0})"
root=$(cd "$here/../.." && pwd)
B=${BUILD:-build}
(cd "$root" && ${MAKE:-make} --no-print-directory -s "$B/bench/loadgen" "$B/bench/bulksink" \
	"$B/bench/spawn" "$B/bench/eagain" "$B/bench/shimsize" "$B/bench/empty.so" "$B/bench/consume") || exit 1
${PYTHON:-/usr/bin/python3} "$here/perf.py" || status=1

exit $status
