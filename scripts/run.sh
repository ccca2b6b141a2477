#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Boot a guest with GPU models (CHIPS, default "ga102 gh100"; per-chip options
# as in CHIPS="gh100:vram=48G,bar1=1G"), load nova_mm.ko and show what it found:
# first a few lines per GPU (chip and MMU version, VRAM and its usable range, BAR1)
# and the tests' "N passed, N failed"; then where the details are.
set -e
. "$(dirname "$0")/lib.sh"

scripts/setup.sh
scripts/build-module.sh >"$NOVA_BUILD/module-build.log" 2>&1 ||
	die "building the module failed; see $NOVA_BUILD/module-build.log"
# shellcheck disable=SC2206
chips=(${CHIPS:-ga102 gh100})
probes=()
for c in "${chips[@]}"; do probes+=(--probe "${c%%:*}"); done
log "booting a guest with ${chips[*]} (about a minute: every KUnit suite runs at load)"
set +e
scripts/guest.sh run "${chips[@]}" >"$NOVA_BUILD/run.log" 2>&1
qrc=$?
set -e
out=$NOVA_BUILD/guest/run
# The details, in files: debugfs as the guest read it, the judge's every line.
sed -n '/NOVA-DEBUGFS-BEGIN/,/NOVA-DEBUGFS-END/p' "$out/guest.out" | grep -av NOVA- >"$out/debugfs.txt" || true
set +e
kdir=$(scripts/build-kernel.sh)
in_root python3 scripts/guest-results.py "$out" --suites "$(kunit_suites)" "${probes[@]}" --summary \
	--kunit-py "$kdir/source/tools/testing/kunit/kunit.py" >"$out/results.txt" 2>&1
jrc=$?
set -e

# What the driver said of each GPU it bound: identity, VRAM, BAR1 (or why not).
echo "=== nova-mm: $(grep -ac '^' "$out/devices.txt" 2>/dev/null || echo 0) GPU model(s) attached"
while read -r chip addr; do
	echo "$addr ($chip model):"
	lines=$(for pat in 'NVIDIA ' 'VRAM ' 'BAR1: |BAR1 not bound' 'read-only mode|error|refus|WPR2'; do
		grep -aE "nova_mm $addr: ($pat)" "$out/console.log" | grep -v 'round trip' |
			sed -E 's/^\[[^]]*\] nova_mm [^ ]+ //'
	done || true)
	if [ -n "$lines" ]; then
		echo "$lines" | sed 's/^/    /'
	else
		echo "    (nothing from nova_mm; see $out/console.log)"
	fi
done <"$out/devices.txt"
if read -r _ p f < <(grep '^RESULTS ' "$out/results.txt"); then
	echo "tests: $p passed, $f failed"
else
	echo "tests: no verdict (see $out/results.txt)"
fi
grep '^not ok' "$out/results.txt" | head -20 | sed 's/^/    /' || true
echo "=== details"
sed -n '/^KUnit suites:/,/^RESULTS/p' "$out/results.txt" | grep -v '^RESULTS' || true
echo "every check:      $out/results.txt"
echo "debugfs dump:     $out/debugfs.txt (per GPU: chip, vram, vmm, pagetables, bar1, counters)"
echo "kernel console:   $out/console.log"
echo "guest output:     $out/guest.out"
echo "model reports:    $out/*.report.json (violations, counters), model logs $out/*.model.log"
[ $qrc -eq 0 ] || die "QEMU exited with $qrc; see $NOVA_BUILD/run.log and $out/console.log"
grep -q 'NOVA-INSMOD nova_mm rc=0' "$out/guest.out" || die "nova_mm failed to load; see $out/console.log"
exit $jrc
