#!/bin/sh
# The tests' local base image, since no image can be pulled here: Debian 12 (bookworm, minbase)
# made with debootstrap from deb.debian.org, imported into the tests' own container storage
# (build/images/, vfs) as localhost/proxyshim-base:bookworm. Cached: the tarball and the image
# are made once; a second run finds the image and does nothing. Needs root.
#   tests/images/base.sh [IMAGES_DIR]        (default build/images)
set -eu
cd "$(dirname "$0")/../.."
dir=${1:-build/images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
image=localhost/proxyshim-base:$suite
tarball=$dir/base-$suite.tar
. tests/images/env.sh "$dir"

if buildah images --quiet "$image" >/dev/null 2>&1; then
	exit 0
fi
if [ ! -s "$tarball" ]; then
	root=$dir/rootfs-$suite
	rm -rf "$root" "$tarball.tmp"
	echo "proxyshim-images: debootstrap $suite (minbase) from $mirror into $root" >&2
	start=$(date +%s)
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
		tail -20 "$dir/debootstrap.log" >&2
		exit 1
	}
	# What an image leaves out: downloaded packages and package lists (apt-get update brings
	# them back), the host's name and resolver (the runtime gives its own).
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	rm -f "$root"/etc/hostname "$root"/etc/resolv.conf
	tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$root"
	echo "proxyshim-images: debootstrap took $(($(date +%s) - start)) s" >&2
fi
echo "proxyshim-images: importing $tarball as $image" >&2
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$tarball" / >/dev/null
buildah config --cmd /bin/sh \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--label org.opencontainers.image.title="Debian $suite minbase (debootstrap, proxyshim tests)" \
	"$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
