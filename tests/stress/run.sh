#!/bin/sh
# make stress: the hardening figures at full size (docs/RELIABILITY.md).
#   1. tests/e2e/test_hardening.py with E2E_STRESS=1: 100,000 fuzzed connections under the
#      ASan build, 10,000 spoofed, 500 stallers beside 100 healthy clients against nginx, 10,000
#      integrity connections, 100,000 connections on 16 threads under TSan, apache2 prefork,
#      the faults
#   2. tests/e2e/test_exports.py (nm -D, objdump -T)
#   3. valgrind memcheck over the end-to-end suite (tests/stress/valgrind.sh)
#   4. libFuzzer for STRESS_FUZZ_SECONDS (default 1800; 0 skips it)
# Everything goes to build/stress-run/; the figures are printed at the end. Exit 1 if any failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/stress-run"
fuzz=${STRESS_FUZZ_SECONDS:-1800}
rm -rf "$out"
mkdir -p "$out"
status=0
t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 )) s so far)"; }

step "hardening tests at full size"
E2E_STRESS=1 E2E_FIGURES="$out/figures.jsonl" /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
	"$root/tests/e2e/test_hardening.py" >"$out/hardening.log" 2>&1 || status=1
grep -E '^(FAILED|ERROR)|passed|failed' "$out/hardening.log" | tail -n 30

step "exports"
/usr/bin/python3 -m pytest -q -p no:cacheprovider "$root/tests/e2e/test_exports.py" >"$out/exports.log" 2>&1 || status=1
tail -n 1 "$out/exports.log"
echo "exported: $(nm -D --defined-only "$root/build/libproxyshim.so" | wc -l) symbols;" \
	"newest GLIBC version needed: $(objdump -T "$root/build/libproxyshim.so" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -k3,3n | tail -n 1)"

step "valgrind memcheck over the end-to-end suite"
"$here/valgrind.sh" "$out/valgrind" >"$out/valgrind.log" 2>&1 || status=1
tail -n 2 "$out/valgrind.log"

if [ "$fuzz" -gt 0 ]; then
	step "libFuzzer, ${fuzz} s"
	(cd "$root" && make --no-print-directory fuzz FUZZ_SECONDS="$fuzz") >"$out/fuzz.log" 2>&1 || status=1
	sed -n '/fuzz summary/,$p' "$out/fuzz.log"
fi

step "figures"
/usr/bin/python3 - "$out/figures.jsonl" <<'PY'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except OSError:
    rows = []
for r in rows:
    name = r.pop("figure"); r.pop("stress", None)
    print("%-24s %s" % (name, " ".join("%s=%s" % kv for kv in sorted(r.items()))))
PY
echo "== make stress: $(( $(date +%s) - t0 )) s, $( [ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
