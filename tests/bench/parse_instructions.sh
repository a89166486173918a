#!/bin/sh
# Instructions per successful pp_parse(), counted by callgrind inside bench_loop() only:
# (Ir at N2 - Ir at N1) / (N2 - N1), so process start and set-up cancel out. The figure
# includes the call itself and the loop around it (a handful of instructions).
# parse_bench runs the CRC32C path this CPU selects (SSE4.2 when present); parse_bench_table
# is the same code built with -DPP_CRC32C_FORCE_TABLE, for the portable table path.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
BUILD=${BUILD:-build}
${MAKE:-make} --no-print-directory -s "$BUILD/bench/parse_bench" "$BUILD/bench/parse_bench_table"
command -v valgrind >/dev/null || { echo "parse bench: valgrind not found" >&2; exit 1; }
N1=${N1:-10000}
N2=${N2:-110000}
out="$BUILD/bench/callgrind"
mkdir -p "$out"

ir() { # binary case n -> Ir collected in bench_loop
	f="$out/$(basename "$1").$2.$3"
	valgrind --tool=callgrind --toggle-collect=bench_loop --callgrind-out-file="$f" \
		"$1" "$2" "$3" >/dev/null 2>&1 || { echo "parse bench: $1 $2 failed" >&2; exit 1; }
	sed -n 's/^totals: *//p' "$f" | awk '{print $1}'
}

fail=0
printf '%-22s %6s %12s %8s  %s\n' "case" "bytes" "instr/parse" "target" "result"
row() { # label binary case target
	a=$(ir "$2" "$3" "$N1")
	b=$(ir "$2" "$3" "$N2")
	per=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }')
	bytes=$("$2" list | awk -v c="$3" '$1 == c { print $2 }')
	if [ "$4" = "-" ]; then
		res="(info)"
	elif awk -v p="$per" -v t="$4" 'BEGIN { exit !(p <= t) }'; then
		res="PASS"
	else
		res="FAIL"
		fail=1
	fi
	printf '%-22s %6s %12s %8s  %s\n' "$1" "$bytes" "$per" "$4" "$res"
}
bin="$BUILD/bench/parse_bench"
row v2_tcp4 "$bin" v2_tcp4 120
row v2_tcp6 "$bin" v2_tcp6 160
row "v2_crc_4tlv (sse4.2)" "$bin" v2_crc_4tlv 1200
row "v2_crc_4tlv (table)" "$BUILD/bench/parse_bench_table" v2_crc_4tlv 1200
row v1_tcp4 "$bin" v1_tcp4 500
row v1_tcp4_max "$bin" v1_tcp4_max 500
row v1_tcp6 "$bin" v1_tcp6 1200
row v1_tcp6_max "$bin" v1_tcp6_max 1200
echo "(callgrind Ir in bench_loop: (Ir(N2) - Ir(N1)) / (N2 - N1) with N1=$N1 N2=$N2; CPU sse4.2: $(grep -qw sse4_2 /proc/cpuinfo && echo yes || echo no))"
exit $fail
