#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Boot a guest with two GPU models (a GA102 and a GH100), load nova_mm.ko and
# show what it found: the probe lines, the KUnit summary, debugfs.
set -e
. "$(dirname "$0")/lib.sh"

scripts/setup.sh
scripts/build-module.sh >"$NOVA_BUILD/module-build.log" 2>&1 ||
	die "building the module failed; see $NOVA_BUILD/module-build.log"
set +e
scripts/guest.sh run ga102 gh100
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
in_root python3 scripts/guest-results.py "$out" --suites "$(kunit_suites)" --probe ga102 --probe gh100 --quiet --summary
jrc=$?
set -e
echo "kernel console: $out/console.log; guest output: $out/guest.out; model reports: $out/*.report.json"
[ $qrc -eq 0 ] || die "QEMU exited with $qrc"
grep -q 'NOVA-INSMOD nova_mm rc=0' "$out/guest.out" || die "nova_mm failed to load"
grep -q 'NVIDIA GA102 (Ampere), MMU v2' "$out/console.log" || die "the GA102 was not probed"
grep -q 'NVIDIA GH100 (Hopper), MMU v3' "$out/console.log" || die "the GH100 was not probed"
exit $jrc
