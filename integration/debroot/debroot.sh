#!/bin/sh
# debroot.sh CACHE ROOT PACKAGE...: ROOT becomes a file system holding the
# Debian packages named and everything they depend on (no recommends), down
# to libc6 and the dynamic loader, unpacked with dpkg-deb -x (no maintainer
# scripts run), for weft's image (make image, daemon/Dockerfile). The .debs
# are downloaded once into CACHE (apt-get download, this machine's apt
# sources and architecture); the versions are apt's candidates.
#
# Maintainer scripts do not run, so what Debian's postinst would create is
# made here: update-alternatives' iptables/ip6tables names point at the nft
# flavour (Debian's default). Documentation is left out.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 CACHE ROOT PACKAGE..." >&2; exit 2; }
cache=$1 root=$2
shift 2
mkdir -p "$cache"
pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
	--no-breaks --no-replaces --no-enhances "$@" | grep -v '^ ' | grep -v '^<' | sort -u)
rm -rf "$root"
mkdir -p "$root"
for p in $pkgs; do
	# 'URI' FILE SIZE HASH: the exact file of the candidate version.
	deb=$(apt-get download --print-uris "$p" | awk '{print $2}')
	[ -n "$deb" ] || { echo "debroot: no .deb for $p" >&2; exit 1; }
	if [ ! -s "$cache/$deb" ]; then
		(cd "$cache" && apt-get download -q "$p")
	fi
	dpkg-deb -x "$cache/$deb" "$root"
done
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
	"$root/usr/share/lintian" "$root/usr/share/locale"
mkdir -p "$root/tmp" "$root/run" "$root/etc"
chmod 1777 "$root/tmp"
for t in iptables ip6tables; do
	for s in "" -save -restore; do
		[ -e "$root/usr/sbin/$t-nft$s" ] && ln -sf "$t-nft$s" "$root/usr/sbin/$t$s"
	done
done
echo "$pkgs" | tr '\n' ' ' >&2; echo >&2
