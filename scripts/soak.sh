#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make soak: the reliability runs of make check, longer, all on the debug kernel (lockdep,
# KASAN, kmemleak, UBSAN, debug objects): load/unload cycles with every KUnit suite at each
# load, hostile devices, and a hot-unplug of each GPU in turn under the stress workers.
# Last line: "N passed, N failed". Sizes: NOVA_MM_SOAK_CYCLES (200), NOVA_MM_SOAK_HOSTILE_ROUNDS (60, five
# GPUs each), NOVA_MM_SOAK_SEED (1: the hostile models' seeds are NOVA_MM_SOAK_SEED*100 + 1..5).
set -e
. "$(dirname "$0")/lib.sh"

logs=$NOVA_BUILD/soak
rm -rf "$logs" && mkdir -p "$logs"
passed=0
failed=0
t0=$(date +%s)
. "$NOVA_TOP/scripts/judge.sh"

cycles=${NOVA_MM_SOAK_CYCLES:-200}
rounds=${NOVA_MM_SOAK_HOSTILE_ROUNDS:-60}
seed=${NOVA_MM_SOAK_SEED:-1}
export NOVA_MM_KERNEL=debug
scripts/setup.sh
kunit_py=$(scripts/build-kernel.sh)/source/tools/testing/kunit/kunit.py
scripts/build-module.sh >"$logs/module-build.log" 2>&1 || die "the module build failed; see $logs/module-build.log"
# The kernel's gpu_buddy suite is left to make check's reference-kernel run: on the debug kernel
# its fragmentation benchmark alone takes minutes.
suites=$(kunit_suites)
suites=${suites%,gpu_buddy}

log "soak: $cycles load/unload cycles with every suite (about $((cycles * 38 / 60)) min)"
NOVA_MM_TIMEOUT=$((300 + 60 * cycles)) NOVA_MM_APPEND="nova_mm.cycles=$cycles nova_mm.buddy_tests=0" guest soak-cycles \
	--suites "$suites" --probe ga102 --probe gh100 --bound 2 --debug-kernel --cycles "$cycles" \
	--multi-load -- ga102 gh100
log "soak: $rounds hostile rounds of five GPUs"
NOVA_MM_PORTS=1 NOVA_MM_TIMEOUT=$((300 + 10 * rounds)) \
	NOVA_MM_APPEND="kunit.enable=0 nova_mm.hostile_rounds=$rounds" guest soak-hostile \
	--hostile "$rounds" --debug-kernel --multi-load -- \
	tu102:hostile=$((seed * 100 + 1)) ga102:hostile=$((seed * 100 + 2)) \
	ad102:hostile=$((seed * 100 + 3)) gh100:hostile=$((seed * 100 + 4)) gb202:hostile=$((seed * 100 + 5))
for k in 0 1; do
	chip=$([ $k = 0 ] && echo tu102 || echo gb202)
	log "soak: hot-unplug of $chip under the stress workers"
	NOVA_MM_TIMEOUT=900 NOVA_MM_UNPLUG=$k NOVA_MM_APPEND="kunit.enable=0 nova_mm.stress=1 nova_mm.unplug=1" \
		guest "soak-unplug-$chip" --bound 2 --debug-kernel --unplug "$chip" --multi-load -- tu102 gb202
done
echo "soak took $(($(date +%s) - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
