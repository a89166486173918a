#!/bin/sh
# Installs what `make test` needs from Debian's packages when run as root; otherwise prints the
# one apt-get line to run and fails. Each entry: a command or file that proves the package.
set -u
need="
gcc:gcc
clang:clang
/usr/include/cmocka.h:libcmocka-dev
/usr/lib/python3/dist-packages/pytest:python3-pytest
haproxy:haproxy
nginx:nginx-light
redis-server:redis-server
lighttpd:lighttpd
node:nodejs
/usr/sbin/sshd:openssh-server
musl-gcc:musl-tools
/usr/sbin/apache2:apache2
valgrind:valgrind
strace:strace
ip:iproute2
npm:npm
groff:groff-base
man:man-db
"
missing=""
for entry in $need; do
	what=${entry%%:*}
	pkg=${entry#*:}
	case "$what" in
	/*) [ -e "$what" ] && continue ;;
	*) command -v "$what" >/dev/null 2>&1 && continue ;;
	esac
	case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
done
# tests/docker-lint: the npm packages the docker/ tests run (dockerfile-utils, kubernetes-models),
# exactly as package-lock.json pins them, into its git-ignored node_modules.
npm_deps() {
	lint="$(dirname "$0")/docker-lint"
	[ -d "$lint/node_modules" ] && return 0
	command -v npm >/dev/null 2>&1 || return 0 # reported with the packages
	echo "proxyshim: npm ci in $lint" >&2
	(cd "$lint" && npm ci --no-audit --no-fund </dev/null >&2)
}
[ -z "$missing" ] && { npm_deps; exit $?; }
line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "proxyshim: missing packages; run as root: $line" >&2
	exit 1
fi
echo "proxyshim: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Services that packages start on install would hold ports the tests pick: keep them stopped.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
$line </dev/null || { apt-get update </dev/null && $line </dev/null; }
rc=$?
[ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
[ $rc = 0 ] && { npm_deps; rc=$?; }
exit $rc
