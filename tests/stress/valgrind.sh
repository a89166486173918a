#!/bin/sh
# valgrind memcheck over the end-to-end tests, with the shim: every test server and e2e helper
# program the tests start (build/testserver, build/progs/*) runs under memcheck, without any
# suppression file; then vgreport.py keeps the errors with a frame in the shim's sources.
# Other programs the tests start (nginx, HAProxy, node, ...) run as usual.
# Usage: tests/stress/valgrind.sh [OUTDIR] [pytest args...]   (default: the whole e2e suite
# except test_docker.py). Exit 1 when an error has a shim frame.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/build/valgrind-run}
[ $# -gt 0 ] && shift
rm -rf "$out"
mkdir -p "$out/logs" "$out/build/progs"
for f in "$root"/build/*; do
	ln -s "$f" "$out/build/$(basename "$f")"
done
rm -rf "$out/build/testserver" "$out/build/progs"
mkdir -p "$out/build/progs"
wrap() { # wrap REAL WRAPPER
	cat >"$2" <<EOS
#!/bin/sh
exec valgrind --tool=memcheck --log-file=$out/logs/vg.%p --num-callers=40 --track-origins=yes \\
  --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \\
  --trace-children=yes --trace-children-skip='/usr/*,/bin/*,/sbin/*' --child-silent-after-fork=no \\
  "$1" "\$@"
EOS
	chmod +x "$2"
}
wrap "$root/build/testserver" "$out/build/testserver"
for p in "$root"/build/progs/*; do
	[ -x "$p" ] && wrap "$p" "$out/build/progs/$(basename "$p")"
done
# build/stress: the fault server under memcheck, the rest as built
rm -f "$out/build/stress"
mkdir -p "$out/build/stress"
for f in "$root"/build/stress/*; do
	ln -s "$f" "$out/build/stress/$(basename "$f")"
done
rm -f "$out/build/stress/faultserver"
wrap "$root/build/stress/faultserver" "$out/build/stress/faultserver"
if [ $# -eq 0 ]; then
	# the sanitizer builds' tests cannot run under valgrind (ASan and TSan map their shadow)
	set -- $(ls "$root"/tests/e2e/test_*.py | grep -v test_docker.py) -k "not asan and not tsan"
fi
echo "== valgrind memcheck over: $*"
start=$(date +%s)
E2E_BUILD="$out/build" E2E_TEST_TIMEOUT=600 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	"$@" >"$out/pytest.log" 2>&1
echo "== pytest under valgrind: $(tail -n 1 "$out/pytest.log") ($(( $(date +%s) - start )) s; timing assertions may fail under valgrind, that is not what this run checks)"
/usr/bin/python3 "$here/vgreport.py" "$out/logs" "$root"
