#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make shell: boot the reference kernel with the GPU models (CHIPS, default
# "ga102 gh100"; per-chip options as in CHIPS="gh100:vram=48G,bar1=1G"), load
# nova_mm, mount debugfs and drop into a shell on the console. Leaving the shell
# powers the guest off; then the models' reports are summarised (violations
# first). QEMU's gdb stub listens on tcp::1234 (see testing.rst).
set -e
. "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2206
chips=(${CHIPS:-ga102 gh100})
scripts/setup.sh
log "building the module"
scripts/build-module.sh >"$NOVA_BUILD/module-build.log" 2>&1 ||
	die "building the module failed; see $NOVA_BUILD/module-build.log"
log "booting the guest with ${chips[*]} (a few seconds); exit the shell to power off"
set +e
NOVA_MM_SHELL=1 scripts/guest.sh shell "${chips[@]}"
qrc=$?
set -e
out=$NOVA_BUILD/guest/shell
echo "--- model reports (violations first; logs: $out/*.model.log, console: $out/console.log)"
in_root python3 - "$out" <<'PY'
import json, os, sys
run = sys.argv[1]
for fn in sorted(os.listdir(run)):
    if not fn.endswith(".report.json"):
        continue
    rep = json.load(open(os.path.join(run, fn)))
    chip = rep.get("chip", fn)
    for v in rep.get("violations", []):
        print(f"{chip}: violation {v.get('kind')}{' (expected)' if v.get('expected') else ''}: {v.get('detail')}")
    c = rep.get("counters", {})
    tot = lambda k: c.get(k, {}).get("total") if isinstance(c.get(k), dict) else c.get(k)
    print(f"{chip}: {rep.get('unexpected_violations')} unexpected violations; BAR0 {tot('bar0_reads')} reads, "
          f"{tot('bar0_writes')} writes; BAR1 {tot('bar1_reads')} reads, {tot('bar1_writes')} writes; "
          f"{c.get('window_moves')} window moves; {(c.get('invalidates') or {}).get('total')} invalidates; "
          f"BAR1 {(rep.get('bar1_binding') or {}).get('mode')}")
PY
exit $qrc
