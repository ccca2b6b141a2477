#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the nova-mm reference kernel (Debian's linux-source-7.3, tinyconfig
# plus scripts/kconfig/nova-mm.config) out of tree, in the cache. Prints the
# build directory on stdout. Rebuilds only when the source version, the
# toolchain or the fragment changed.
set -e
. "$(dirname "$0")/lib.sh"

"$NOVA_TOP/scripts/setup.sh"
frag=$NOVA_TOP/scripts/kconfig/nova-mm.config
tarball=$ROOT/usr/src/linux-source-7.3.tar.xz
[ -f "$tarball" ] || die "no $tarball in the build root; remove $ROOT and run again"
ver=$(in_root dpkg-query -W -f '${Version}' linux-source-7.3)
src=$KCACHE/src-$ver
# The build is keyed by the source version, the toolchain and the fragment.
tools=$(in_root /bin/sh -c 'gcc -dumpfullversion; rustc --version; bindgen --version; dpkg-query -W -f "\${Version}" rust-src libclang-dev' 2>&1)
key=$( (cat "$frag"; echo "$tools") | sha256sum | cut -c1-12)
out=$KCACHE/build-$ver-$key

if [ -f "$out/.nova-mm-built" ]; then
	echo "$out"
	exit 0
fi
if [ ! -f "$src/.nova-mm-extracted" ]; then
	log "extracting linux-source $ver (about 20 s)"
	rm -rf "$src" && mkdir -p "$src"
	in_root tar -xf /usr/src/linux-source-7.3.tar.xz -C "$src" --strip-components=1
	touch "$src/.nova-mm-extracted"
fi
rm -rf "$out" && mkdir -p "$out"
log "configuring the reference kernel (tinyconfig + $(basename "$frag"))"
in_root /bin/sh -c "set -e; cd '$src'; make -s O='$out' tinyconfig >/dev/null
	scripts/kconfig/merge_config.sh -m -O '$out' '$out/.config' '$frag' >/dev/null
	make -s O='$out' olddefconfig >/dev/null
	make -s O='$out' rustavailable" >"$out/config.log" 2>&1 ||
	die "configuring the kernel failed; see $out/config.log"
# Every fragment line must have taken effect.
missing=
while IFS= read -r line; do
	case "$line" in CONFIG_*) grep -qxF "$line" "$out/.config" || missing="$missing $line" ;; esac
done <"$frag"
[ -z "$missing" ] || die "fragment lines did not take effect:$missing (see $out/config.log)"
log "building the reference kernel (about 4-5 min on 2 cores; log: $out/build.log)"
in_root make -C "$src" O="$out" -j"$(nproc)" bzImage modules >"$out/build.log" 2>&1 ||
	{ tail -n 15 "$out/build.log" >&2; die "the kernel build failed (last lines above); see $out/build.log. A full disk or an interrupted earlier build are the usual causes: free space, or delete $out to start that build over"; }
touch "$out/.nova-mm-built"
log "reference kernel ready: $out"
echo "$out"
