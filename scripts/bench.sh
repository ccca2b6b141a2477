#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make bench: the page-table benchmarks. Boots one guest with a model per chip
# (CHIPS, default "ga102 gh100"), loads nova_mm with nova_mm.bench=1 and prints
# one key=value line per scenario and chip (scripts/bench.py): MMIO counts,
# the theoretical minimum, the ratio, the nova-core series' cost for the same
# work, and whether the model's counts agree with the driver's.
set -e
. "$(dirname "$0")/lib.sh"

chips=${CHIPS:-ga102 gh100}
specs=()
for c in $chips; do
	case "$c" in
	*:*) specs+=("$c,--trace-invalidates") ;;
	*) specs+=("$c:--trace-invalidates") ;;
	esac
done
scripts/setup.sh
scripts/build-module.sh >/dev/null
n=$(echo $chips | wc -w)
log "bench: one guest with $chips (about $((30 + 35 * n)) s; console: $NOVA_BUILD/guest/bench/console.log)"
set +e
NOVA_MM_APPEND="nova_mm.bench=1" NOVA_MM_TIMEOUT=${NOVA_MM_TIMEOUT:-900} \
	scripts/guest.sh bench "${specs[@]}" >"$NOVA_BUILD/bench.log" 2>&1
rc=$?
set -e
[ $rc -eq 0 ] || die "the bench guest failed (exit $rc); see $NOVA_BUILD/bench.log and $NOVA_BUILD/guest/bench/console.log"
in_root python3 scripts/bench.py "$NOVA_BUILD/guest/bench"
