#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build nova_mm.ko against the reference kernel, in the build root.
# Usage: build-module.sh [extra kbuild arguments, e.g. CLIPPY=1]
# Output: build/module/drivers/gpu/nova-mm/nova_mm.ko (build/module-debug/... for
# NOVA_MM_KERNEL=debug), with the self-tests; NOVA_MM_SELFTESTS=n builds the product alone,
# into build/module-product/ (build/module-debug-product/).
set -e
. "$(dirname "$0")/lib.sh"

kdir=$("$NOVA_TOP/scripts/build-kernel.sh")
selftests=${NOVA_MM_SELFTESTS:-y}
case $selftests in
y) out=${NOVA_MM_MODULE_OUT:-$MODULE_OUT} ;;
n) out=${NOVA_MM_MODULE_OUT:-$MODULE_OUT-product} ;;
*) die "NOVA_MM_SELFTESTS must be y or n, not '$selftests'" ;;
esac
mkdir -p "$out"
in_root make -C "$kdir" M="$NOVA_TOP" MO="$out" -j"$(nproc)" "${KMAKE_ARGS[@]}" NOVA_MM_SELFTESTS="$selftests" "$@" modules
