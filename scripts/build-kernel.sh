#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the nova-mm reference kernel (Debian's linux-source-7.3, tinyconfig
# plus scripts/kconfig/nova-mm.config) out of tree, in the cache. Prints the
# build directory on stdout. Rebuilds only when the source version, the
# toolchain or the fragments changed. With NOVA_MM_KERNEL=debug: the debug
# kernel, nova-mm-debug.config over the same, built with LLVM (clang-19).
set -e
. "$(dirname "$0")/lib.sh"

"$NOVA_TOP/scripts/setup.sh"
frags=("$NOVA_TOP/scripts/kconfig/nova-mm.config")
[ "$NOVA_KERNEL" = ref ] || frags+=("$NOVA_TOP/scripts/kconfig/nova-mm-$NOVA_KERNEL.config")
tarball=$ROOT/usr/src/linux-source-7.3.tar.xz
[ -f "$tarball" ] || die "no $tarball in the build root; remove $ROOT and run again"
ver=$(in_root dpkg-query -W -f '${Version}' linux-source-7.3)
src=$KCACHE/src-$ver
# The build is keyed by the source version, the toolchain and the fragment.
tools=$(in_root /bin/sh -c 'gcc -dumpfullversion; rustc --version; bindgen --version; dpkg-query -W -f "\${Version}" rust-src libclang-dev' 2>&1)
if [ "$NOVA_KERNEL" = ref ]; then
	key=$( (cat "${frags[@]}"; echo "$tools") | sha256sum | cut -c1-12)
	out=$KCACHE/build-$ver-$key
else
	tools="$tools $(in_root clang-19 --version 2>&1 | head -n 1) ${KMAKE_ARGS[*]}"
	key=$( (cat "${frags[@]}"; echo "$tools") | sha256sum | cut -c1-12)
	out=$KCACHE/build-$NOVA_KERNEL-$ver-$key
fi
kname="the $NOVA_KERNEL kernel"
[ "$NOVA_KERNEL" = ref ] && kname="the reference kernel"

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
log "configuring $kname (tinyconfig + $(for f in "${frags[@]}"; do basename "$f"; done | tr '\n' ' '| sed 's/ $//'))"
mk="make ${KMAKE_ARGS[*]}"
in_root /bin/sh -c "set -e; cd '$src'; $mk -s O='$out' tinyconfig >/dev/null
	scripts/kconfig/merge_config.sh -m -O '$out' '$out/.config' ${frags[*]} >/dev/null
	$mk -s O='$out' olddefconfig >/dev/null
	$mk -s O='$out' rustavailable" >"$out/config.log" 2>&1 ||
	die "configuring the kernel failed; see $out/config.log"
# Every fragment line must have taken effect, and every "is not set" line.
missing=
while IFS= read -r line; do
	case "$line" in
	CONFIG_*) grep -qxF "$line" "$out/.config" || missing="$missing $line" ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		! grep -q "^$opt=" "$out/.config" || missing="$missing $opt=n" ;;
	esac
done < <(cat "${frags[@]}")
[ -z "$missing" ] || die "fragment lines did not take effect:$missing (see $out/config.log)"
if [ "$NOVA_KERNEL" = ref ]; then
	log "building $kname (about 4-5 min on 2 cores; log: $out/build.log)"
else
	log "building $kname (about 10 min on 2 cores; log: $out/build.log)"
fi
in_root make -C "$src" O="$out" -j"$(nproc)" "${KMAKE_ARGS[@]}" bzImage modules >"$out/build.log" 2>&1 ||
	{ tail -n 15 "$out/build.log" >&2; die "the kernel build failed (last lines above); see $out/build.log. A full disk or an interrupted earlier build are the usual causes: free space, or delete $out to start that build over"; }
touch "$out/.nova-mm-built"
log "$kname ready: $out"
echo "$out"
