#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Boot a guest with GPU models (CHIPS, default "ga102 gh100"; per-chip options
# as in CHIPS="gh100:vram=48G,bar1=1G"), load nova_mm.ko and show what it found:
# the probe lines, the BAR1 round trips, the KUnit summary, debugfs.
set -e
. "$(dirname "$0")/lib.sh"

scripts/setup.sh
scripts/build-module.sh >"$NOVA_BUILD/module-build.log" 2>&1 ||
	die "building the module failed; see $NOVA_BUILD/module-build.log"
# shellcheck disable=SC2206
chips=(${CHIPS:-ga102 gh100})
probes=()
for c in "${chips[@]}"; do probes+=(--probe "${c%%:*}"); done
log "booting a guest with ${chips[*]} (about 20 s)"
set +e
scripts/guest.sh run "${chips[@]}" >"$NOVA_BUILD/run.log" 2>&1
qrc=$?
set -e
out=$NOVA_BUILD/guest/run
echo "--- guest PCI devices (slot vendor device class):"
sed -n '/NOVA-PCI-BEGIN/,/NOVA-PCI-END/p' "$out/guest.out" | grep -v NOVA-
echo "--- nova_mm (per-device kernel messages):"
grep -E 'nova_mm [0-9a-f]{4}:' "$out/console.log" || true
echo "--- debugfs:"
sed -n '/NOVA-DEBUGFS-BEGIN/,/NOVA-DEBUGFS-END/p' "$out/guest.out" | grep -v NOVA- || true
echo "--- KUnit and model reports:"
set +e
kdir=$(scripts/build-kernel.sh)
in_root python3 scripts/guest-results.py "$out" --suites "$(kunit_suites)" "${probes[@]}" --quiet --summary \
	--kunit-py "$kdir/source/tools/testing/kunit/kunit.py"
jrc=$?
set -e
echo "kernel console: $out/console.log; guest output: $out/guest.out; model reports: $out/*.report.json"
[ $qrc -eq 0 ] || die "QEMU exited with $qrc; see $NOVA_BUILD/run.log and $out/console.log"
grep -q 'NOVA-INSMOD nova_mm rc=0' "$out/guest.out" || die "nova_mm failed to load; see $out/console.log"
exit $jrc
