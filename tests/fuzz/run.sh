#!/bin/sh
# Runs each libFuzzer binary for its share of SECONDS (SECONDS divided by the number of
# fuzzers, one after the other), over a scratch copy of tests/fuzz/corpus/<name>/ in a
# directory of this run's own under build/fuzz-run/ (runs at the same time must not share one). Prints executions per fuzzer; exits non-zero if any fuzzer found something.
# Usage: tests/fuzz/run.sh SECONDS BIN...
set -u
if [ $# -lt 2 ]; then
	echo "usage: $0 SECONDS BIN..." >&2
	exit 2
fi
total=$1
shift
case "$total" in '' | *[!0-9]*) echo "$0: SECONDS must be a whole number, got '$total'" >&2; exit 2 ;; esac
share=$((total / $#))
[ "$share" -ge 1 ] || share=1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$root/build/fuzz-run"
scratch=$(mktemp -d "$root/build/fuzz-run/run-XXXXXX")
status=0
summary=""
for bin in "$@"; do
	if [ ! -x "$bin" ]; then
		echo "$0: no fuzzer binary at $bin" >&2
		exit 2
	fi
done
for bin in "$@"; do
	name=$(basename "$bin")
	work="$scratch/$name"
	mkdir -p "$work/corpus" "$work/artifacts"
	if [ -d "$here/corpus/$name" ]; then
		cp "$here/corpus/$name"/* "$work/corpus/" 2>/dev/null || true
	fi
	echo "== $name: ${share}s over $(ls "$work/corpus" | wc -l) seed files, log $work/log"
	"$bin" -max_total_time="$share" -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
		"$work/corpus" >"$work/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
	found=$(ls "$work/artifacts" | wc -l)
	if [ $rc -ne 0 ] || [ "$found" -ne 0 ]; then
		status=1
		echo "$name: FINDING (exit $rc); artifacts in $work/artifacts/:" >&2
		ls "$work/artifacts" >&2
		tail -n 40 "$work/log" >&2
		result="FINDING"
	else
		result="no finding"
	fi
	line=$(printf '%-16s %10ss %14s executions  %s' "$name" "$share" "${execs:-?}" "$result")
	echo "$line"
	summary="$summary$line
"
done
echo "== fuzz summary (each fuzzer ran for its share of ${total}s)"
printf '%s' "$summary"
exit $status
