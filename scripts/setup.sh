#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Prepare the build root: a Debian trixie chroot with the kernel toolchain,
# linux-source-7.3 and QEMU (>= 10.1, for the vfio-user client). Idempotent.
set -e
. "$(dirname "$0")/lib.sh"

need_root
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap on the host (apt)"
	apt-get update -q >/dev/null || die "apt-get update failed: check the network and the apt sources"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
		die "cannot install debootstrap; install it by hand (apt-get install debootstrap)"
fi

# ensure_pkgs ROOTDIR: install whatever of the package lists is missing.
ensure_pkgs() {
	local r=$1 missing
	local installed p
	installed=" $(ROOT=$r in_root dpkg-query -W -f '${Package}=${Status}\n' 2>/dev/null |
		sed -n 's/=install ok installed$//p' | tr '\n' ' ') "
	missing=
	for p in $ROOT_PKGS $ROOT_BPO_PKGS; do
		case "$installed" in *" $p "*) ;; *) missing="$missing $p" ;; esac
	done
	[ -n "${missing// /}" ] || return 0
	log "installing in the build root:$missing (about 1 min)"
	ROOT=$r in_root /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $ROOT_PKGS && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t trixie-backports $ROOT_BPO_PKGS && apt-get clean" \
		>"$NOVA_CACHE/root-apt.log" 2>&1 || die "installing packages in the build root failed; see $NOVA_CACHE/root-apt.log"
}

if [ -f "$ROOT/.nova-mm-ready" ]; then
	ensure_pkgs "$ROOT"
	exit 0
fi

mkdir -p "$NOVA_CACHE"
final=$ROOT
tmp=$ROOT.tmp
rm -rf "$tmp"
log "creating the build root (debootstrap trixie, about 30 s) in $ROOT"
debootstrap --variant=minbase trixie "$tmp" "$DEBIAN_MIRROR" >"$NOVA_CACHE/debootstrap.log" 2>&1 ||
	die "debootstrap failed; see $NOVA_CACHE/debootstrap.log"

cat >"$tmp/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR trixie main
deb $DEBIAN_MIRROR trixie-backports main
SRC
ensure_pkgs "$tmp"
ROOT=$tmp in_root qemu-system-x86_64 -device help 2>/dev/null | grep -q vfio-user-pci ||
	die "the build root's QEMU has no vfio-user-pci device (need QEMU >= 10.1 from trixie-backports)"
touch "$tmp/.nova-mm-ready"
rm -rf "$final"
mv "$tmp" "$final"
log "build root ready: $(du -sh "$final" | cut -f1)"
