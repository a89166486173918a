#!/bin/sh
# Copies proxyshim (the library, the wrapper, proxyshim-send and proxyshim-supervise, which the
# wrapper finds next to itself) from /proxyshim into a mounted volume: the first argument, else
# $PROXYSHIM_DEST, else /shared. Runs as any user that can write there. A plain copy: the volume
# may belong to another user, and the files get the copying user and the volume's defaults
# rather than the image's owners. Each file arrives under a temporary name and is renamed, so a
# program never loads a half-written library.
set -eu
src=${PROXYSHIM_SRC:-/proxyshim}
dest=${1:-${PROXYSHIM_DEST:-/shared}}
files="libproxyshim.so proxyshim proxyshim-send proxyshim-supervise"

if [ ! -d "$dest" ]; then
	echo "proxyshim-copy: $dest is not a directory (mount a volume there, or give another path)" >&2
	exit 1
fi
for f in $files; do
	if [ ! -f "$src/$f" ]; then
		echo "proxyshim-copy: $src/$f is missing" >&2
		exit 1
	fi
	tmp="$dest/.$f.tmp.$$"
	if ! cp "$src/$f" "$tmp"; then
		rm -f "$tmp"
		echo "proxyshim-copy: cannot write $dest/$f (is the volume writable by uid $(id -u)?)" >&2
		exit 1
	fi
	mv -f "$tmp" "$dest/$f"
done
chmod 0755 "$dest/proxyshim" "$dest/proxyshim-send" "$dest/proxyshim-supervise"
chmod 0644 "$dest/libproxyshim.so"
echo "proxyshim-copy: copied $files into $dest"
