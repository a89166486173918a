#!/bin/sh
# Installs what `make test` needs from Debian's packages when run as root; otherwise prints the
# one apt-get line to run and fails. Meant for a test or CI machine: among the packages are
# servers (sshd, apache2, nginx, HAProxy, redis, lighttpd, PostgreSQL). Run as root, it leaves none of their
# services enabled to start at the next boot: it disables those its install enabled, and those
# of its packages that were enabled before (see boot_links below).
# Each entry: a command or file that proves the package.
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
javac:openjdk-17-jdk-headless
/usr/lib/postgresql/15/bin/postgres:postgresql-15
tclsh:tcl
perl:perl
go:golang-go
ruby:ruby
/usr/share/rubygems-integration/all/gems/webrick-1.8.1/lib/webrick.rb:ruby-webrick
php:php-cli
erl:erlang-base
gunicorn:gunicorn
uwsgi:uwsgi-core
/usr/share/doc/uwsgi-plugin-python3:uwsgi-plugin-python3
/usr/sbin/exim4:exim4-daemon-light
/usr/sbin/dovecot:dovecot-imapd
/usr/sbin/vsftpd:vsftpd
/usr/sbin/mariadbd:mariadb-server
valgrind:valgrind
strace:strace
shellcheck:shellcheck
/usr/share/bash-completion/bash_completion:bash-completion
ip:iproute2
npm:npm
dpkg-buildpackage:dpkg-dev
dh:debhelper
fakeroot:fakeroot
lintian:lintian
groff:groff-base
man:man-db
promtool:prometheus
/usr/share/gocode/src/github.com/go-logfmt/logfmt/decode.go:golang-github-go-logfmt-logfmt-dev
"
# tests/deps.sh images: what make images needs instead (tests/images/): buildah, podman with
# runc (crun is podman's other choice), debootstrap for the local base image, HAProxy, readelf.
if [ "${1:-}" = images ]; then
	need="
buildah:buildah
podman:podman
runc:runc
debootstrap:debootstrap
haproxy:haproxy
readelf:binutils
/usr/lib/python3/dist-packages/pytest:python3-pytest
"
fi
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

# ---- services: none of these packages' servers starts at the next boot ----
# The links that start a daemon at boot, one a line: systemd service and socket units wanted or
# required by a target, and SysV init scripts' S links in runlevels 2 to 5. Works without a
# running systemd (the machine may be a container).
boot_links() {
	for l in /etc/systemd/system/*.wants/*.service /etc/systemd/system/*.wants/*.socket \
		/etc/systemd/system/*.requires/*.service /etc/systemd/system/*.requires/*.socket \
		/etc/rc[2-5].d/S*; do
		[ -L "$l" ] && printf '%s\n' "$l"
	done
	return 0
}
# turn_off: disables what each link on stdin starts, as `systemctl disable` and `update-rc.d
# NAME disable` do (S links become K links), so that the package's upgrades keep it disabled.
turn_off() {
	while read -r l; do
		[ -L "$l" ] || continue # gone with an earlier one (update-rc.d does all runlevels)
		case "$l" in
		/etc/rc?.d/S*)
			n=${l##*/S[0-9][0-9]}
			echo "proxyshim: not started at boot: /etc/init.d/$n (update-rc.d $n disable)" >&2
			update-rc.d "$n" disable >/dev/null 2>&1
			;;
		*)
			u=${l##*/}
			echo "proxyshim: not started at boot: $u (disabled)" >&2
			if command -v systemctl >/dev/null 2>&1; then # offline: no running systemd needed
				systemctl --root=/ --quiet disable "$u" >/dev/null 2>&1
			else # it refuses to run unless dpkg's maintainer scripts' variable is set
				DPKG_MAINTSCRIPT_PACKAGE=proxyshim deb-systemd-helper disable "$u" >/dev/null 2>&1
			fi
			;;
		esac
		if [ -L "$l" ]; then rm -f "$l"; fi # a link the helpers did not make
	done
}
[ "${1:-}" = images ] && npm_deps() { return 0; } # no npm tooling in make images
if [ -z "$missing" ]; then
	npm_deps
	exit $?
fi
line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "proxyshim: missing packages; run as root: $line" >&2
	exit 1
fi
echo "proxyshim: installing:$missing" >&2
before=$(mktemp)
boot_links | sort >"$before"
export DEBIAN_FRONTEND=noninteractive
# Services that packages start on install would hold ports the tests pick: keep them stopped.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
$line </dev/null || { apt-get update </dev/null && $line </dev/null; }
rc=$?
[ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
# What this install enabled to start at boot (dependencies' services included). Services that
# were enabled before (a developer's own sshd) stay as they were.
boot_links | sort | comm -13 "$before" - | turn_off
rm -f "$before"
[ $rc = 0 ] && { npm_deps; rc=$?; }
exit $rc
