#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Run every test of nova-mm: the GPU model's cargo test, clippy and fmt; the
# module's rustfmt and clippy build; the guest runs (KUnit at insmod, probe
# lines, crashes, the models' reports). Last line: "N passed, N failed".
set -e
. "$(dirname "$0")/lib.sh"

logs=$NOVA_BUILD/check
rm -rf "$logs" && mkdir -p "$logs"
passed=0
failed=0
t0=$(date +%s)

# A step that stops the run (setup, the kernel build) still ends with the summary.
finished=0
summary_on_exit() {
	# The debug kernel's background runs stop with the check.
	[ -z "${debug_pid:-}" ] || kill -- -"$debug_pid" 2>/dev/null || true
	[ "$finished" = 1 ] && return
	echo "not ok - check stopped early (see the message above)"
	echo "$passed passed, $((failed + 1)) failed"
}
trap summary_on_exit EXIT

. "$NOVA_TOP/scripts/judge.sh"

log "setting up (build root, reference kernel): about 12 minutes on a new machine, seconds after"
scripts/setup.sh
kdir=$(scripts/build-kernel.sh)

# The GPU model.
step model-fmt model_cargo fmt --check
step model-clippy model_cargo clippy --locked --all-targets -- -D warnings
log "running the model's cargo test"
set +e
model_cargo test --locked >"$logs/model-test.log" 2>&1
rc=$?
set -e
read -r mp mf < <(awk '/^test result:/ {for (i = 1; i <= NF; i++) {if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i}} END {print p + 0, f + 0}' "$logs/model-test.log")
passed=$((passed + mp))
failed=$((failed + mf))
echo "model cargo test: $mp passed, $mf failed"
if [ $rc -ne 0 ] && [ "$mf" -eq 0 ]; then fail model-test "cargo test exited $rc; see $logs/model-test.log"; fi

# The module: format, then a clippy build that must be free of warnings.
step module-rustfmt in_root rustfmt --check --edition 2021 --config-path "$NOVA_TOP/.rustfmt.toml" \
	"$NOVA_TOP/drivers/gpu/nova-mm/nova_mm.rs"
if scripts/build-module.sh CLIPPY=1 >"$logs/module-build.log" 2>&1; then
	if grep -q -E '^(warning|error)' "$logs/module-build.log"; then
		fail module-build-clippy "warnings; see $logs/module-build.log"
	else
		pass module-build-clippy
	fi
else
	fail module-build-clippy "see $logs/module-build.log"
	finished=1
	echo "$passed passed, $failed failed"
	exit 1
fi

# The product alone (NOVA_MM_SELFTESTS=n): a clippy build free of warnings, with no test code,
# no test parameter and no harness marker in the binary.
if NOVA_MM_SELFTESTS=n scripts/build-module.sh CLIPPY=1 >"$logs/module-product-build.log" 2>&1; then
	if grep -q -E '^(warning|error)' "$logs/module-product-build.log"; then
		fail module-product-build "warnings; see $logs/module-product-build.log"
	else
		pass module-product-build
	fi
	ko=$MODULE_OUT/drivers/gpu/nova-mm/nova_mm.ko
	pko=$MODULE_OUT-product/drivers/gpu/nova-mm/nova_mm.ko
	echo "module sizes: with self-tests $(stat -c %s "$ko") bytes, product $(stat -c %s "$pko") bytes"
	leaks=$( (strings "$pko" | grep -E 'NOVA-[A-Z]|kunit_test|expect_chipsets|pt_top_gib' || true) | head -n 3)
	params=$(strings "$pko" | sed -n 's/^parmtype=\([^:]*\):.*/\1/p' | tr '\n' ' ')
	# No symbol of the self-tests (module selftest, KUnit suites and wrappers) in the product.
	tsyms=$(in_root nm "$pko" | grep -ciE 'selftest|kunit' || true)
	asyms=$(in_root nm "$ko" | grep -ciE 'selftest|kunit' || true)
	echo "test symbols: with self-tests $asyms, product $tsyms"
	if [ -z "$leaks" ] && [ "$params" = "readonly " ] && [ "$tsyms" = 0 ] && [ "$asyms" -gt 0 ]; then
		pass module-product-no-test-code
	else
		fail module-product-no-test-code "test code in the product build: $leaks; parameters: $params; $tsyms test symbols"
	fi
else
	fail module-product-build "see $logs/module-product-build.log"
fi

# Register conformance: every register offset and field of the driver's and the model's tables
# against NVIDIA's headers: nouveau's copies in the kernel tree, and open-gpu-kernel-modules'
# published ones where present (NOVA_MM_NVIDIA_REF, else ../shared/ref/ogkm-published beside
# the clone); a header in neither place is skipped with a line saying so.
ref=${NOVA_MM_NVIDIA_REF:-$NOVA_TOP/../shared/ref/ogkm-published}
rm -rf "$NOVA_BUILD/nvidia-ref"
if [ -d "$ref" ]; then
	cp -r "$ref" "$NOVA_BUILD/nvidia-ref"
else
	log "no open-gpu-kernel-modules headers at $ref (set NOVA_MM_NVIDIA_REF): compared with nouveau's copies only"
fi
step conformance in_root python3 scripts/conformance.py \
	--nouveau "$kdir/source/drivers/gpu/drm/nouveau/include/nvhw/ref" --ogkm "$NOVA_BUILD/nvidia-ref" \
	--side driver=drivers/gpu/nova-mm --side model=tools/gpu-model/src
grep -E '^(conformance|skipped)' "$logs/conformance.log" || true

# Every KUnit suite of the module, found in its source, and the kernel's own; each suite's KTAP
# is read by the kernel's own parser.
suites=$(kunit_suites)
kunit_py=$kdir/source/tools/testing/kunit/kunit.py

# The debug kernel (lockdep, KASAN, kmemleak, UBSAN, debug objects), in the background while
# the rest runs: built if needed (about 15 min on a new machine), then the main device run with
# load/unload cycles, every suite at each load (the slow unit tests at the first only), the
# VRAM accounting the same after each, kmemleak scanned once the module is gone; then a GPU
# hot-unplugged while workers on both GPUs map and unmap. The kernel's gpu_buddy suite is left
# to the reference kernel (its fragmentation benchmark alone takes minutes here).
cycles=${NOVA_MM_CYCLES:-20}
debug_runs() {
	set -e
	export NOVA_MM_KERNEL=debug
	log "building the debug kernel if needed"
	local dk
	dk=$(scripts/build-kernel.sh)
	scripts/build-module.sh
	echo "$dk" >"$logs/debug-built"
	log "debug kernel: $cycles load/unload cycles"
	NOVA_MM_TIMEOUT=$((300 + 60 * cycles)) NOVA_MM_APPEND="nova_mm.cycles=$cycles nova_mm.buddy_tests=0" \
		guest_boot debug-cycles ga102 gh100
	log "debug kernel: hot-unplug"
	# 900 s: on a slow machine, with the reference kernel's runs beside it, the debug kernel's
	# hot-unplug run (boot, workers, removal, kmemleak scans) has taken more than 300.
	NOVA_MM_TIMEOUT=900 NOVA_MM_UNPLUG=0 NOVA_MM_APPEND="kunit.enable=0 nova_mm.stress=1 nova_mm.unplug=1" \
		guest_boot debug-unplug ga102 gh100
	log "debug kernel: done"
}
rm -f "$logs/debug-built"
set -m # a process group of its own, so that an early exit can stop all of it
debug_runs >"$logs/debug-runs.log" 2>&1 &
debug_pid=$!
set +m

devsuites=nova_mm_device_id,nova_mm_device_mm,nova_mm_device_vmm,nova_mm_device_bar
# Both GPUs with their defaults: every suite, the kernel's own gpu_buddy suite too.
guest devices --suites "$suites" --probe ga102 --probe gh100 --bound 2 -- ga102 gh100
# The harness itself: a KTAP block cut short must fail under kunit.py.
step ktap-truncated-fails in_root python3 scripts/guest-results.py "$NOVA_BUILD/guest/devices" \
	--kunit-py "$kunit_py" --selftest-truncated nova_mm_vmm
# BAR1 on all five chips in one guest, two of them with a 1 GiB BAR1 (512 MiB pages): round
# trips, remaps, sparse, and the faults a read-only write and an unmapped access cause.
# The chips are written as CHIPS= takes them (model options without their dashes).
faults=expect=read_only_write,expect=bar1_fault
NOVA_MM_APPEND="nova_mm.expect_bar1_faults=1" guest bar1 --suites "$devsuites" \
	--probe tu102 --probe ga102 --probe ad102 --probe gh100 --probe gb202 --bound 5 \
	--require-violation read_only_write --require-violation bar1_fault -- \
	tu102:$faults ga102:bar1=1G,$faults ad102:$faults gh100:bar1=1G,$faults gb202:$faults
# Read-only first contact (nova_mm.readonly=1): identified and laid out, nothing written.
NOVA_MM_APPEND="nova_mm.readonly=1" guest readonly --suites "$devsuites" --probe ga102 --probe gh100 \
	--bound 2 --no-writes --unbound ga102 --unbound gh100 --grep 'read-only mode \(nova_mm.readonly=1\)' \
	-- ga102 gh100
# A read-only reload after a normal load: rmmod, insmod readonly=1; the same judging as above
# for what follows the reload, against each model's counters snapshotted between the loads.
NOVA_MM_SNAPSHOT=NOVA-RELOAD-READY NOVA_MM_APPEND="nova_mm.readonly_reload=1" guest readonly-reload \
	--suites "$devsuites" --probe ga102 --probe gh100 --bound 2 --multi-load --readonly-reload \
	-- ga102 gh100
# Invalidates that never complete: the driver must return ETIMEDOUT within its bound.
NOVA_MM_APPEND="nova_mm.expect_tlb_hang=1" guest tlb-hang --suites "$devsuites" --probe ga102 --bound 1 \
	--grep 'TLB invalidate of PDB 0x[0-9a-f]+ did not complete' -- ga102:--fault=invalidate-hang
# An invalidate left in flight by whoever had the GPU before: the driver waits for it before
# writing its first one (the model records a PDB written while one is pending).
guest inflight --suites "$devsuites" --probe ga102 --probe gb202 --bound 2 -- \
	ga102:fault=invalidate-in-flight gb202:fault=invalidate-in-flight
# Page tables high (nova_mm.pt_top_gib=1: the top GiB of usable VRAM): above 4 GiB on the GA102,
# above 64 GiB on a 96 GiB GH100, so that every device and BAR1 suite runs through the high
# words of directory entries, of the instance block and of the bind registers.
NOVA_MM_APPEND="nova_mm.pt_top_gib=1" guest high-tables --suites "$devsuites" --probe ga102 --probe gh100 \
	--bound 2 --grep 'NOVA-TABLES-HIGH 0x172 root=0x[0-9a-f]+' --grep 'NOVA-TABLES-HIGH 0x180 root=0x[0-9a-f]+' -- ga102 gh100:vram=96G
# Firmware owns the GPU (WPR2 set): the driver says so and keeps out of it.
guest wpr2 --suites "$devsuites" --probe gh100 --bound 1 --grep 'WPR2 is set' \
	--grep 'BAR1 not bound: firmware owns the GPU' --unbound gh100 -- gh100:--wpr2
# An unknown chip: refused with ENODEV and a message naming NV_PMC_BOOT_42.
guest unknown --suites "$devsuites" --bound 0 \
	--grep 'unsupported or unknown chip: NV_PMC_BOOT_42 = 0x[0-9a-f]{8}' -- ga102:--fault=unknown-chip
# Firmware that never finished booting: the bounded wait gives up with a message.
guest boot --suites "$devsuites" --bound 0 \
	--grep 'GA102: GFW boot did not complete within 4000 ms' -- ga102:--fault=boot-incomplete
# A GPU that fell off the bus (every read all-ones): refused, no crash.
guest gone --suites "$devsuites" --bound 0 \
	--grep 'NV_PMC_BOOT_42 = 0xffffffff' -- ga102:--fault=device-gone


# The README's front door, as a new user meets it: `make run` and `make bench` in a fresh copy
# of this tree (no build/ folder; the cache shared), each judged on what the README promises.
fresh=$(mktemp -d /tmp/nova-mm-fresh.XXXXXX)
(cd "$NOVA_TOP" && git ls-files -z --cached --others --exclude-standard |
	tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$fresh"
log "fresh copy of the tree in $fresh: make run"
set +e
(cd "$fresh" && env -u CHIPS make run) >"$logs/fresh-make-run.log" 2>&1
rc=$?
set -e
fresh_run() {
	local l=$logs/fresh-make-run.log
	[ "$rc" = 0 ] || { echo "make run exited $rc"; return 1; }
	grep -q 'NVIDIA GA102 (Ampere), MMU v2' "$l" || { echo "no GA102 with MMU v2"; return 1; }
	grep -q 'NVIDIA GH100 (Hopper), MMU v3' "$l" || { echo "no GH100 with MMU v3"; return 1; }
	[ "$(grep -c 'BAR1: .* bound to instance block' "$l")" = 2 ] || { echo "BAR1 not bound on both"; return 1; }
	grep -qE '^tests: [1-9][0-9]* passed, 0 failed' "$l" || { echo "no clean tests line"; return 1; }
	grep -q '^KUnit suites:' "$l" || { echo "no KUnit summary"; return 1; }
}
if out=$(fresh_run); then pass "fresh copy: make run"; else fail "fresh copy: make run" "$out; see $logs/fresh-make-run.log"; fi
log "fresh copy: make bench (GA102 only)"
set +e
(cd "$fresh" && CHIPS=ga102 make bench) >"$logs/fresh-make-bench.log" 2>&1
rc=$?
set -e
if [ "$rc" = 0 ] && grep -q '^bench=.*model=agrees' "$logs/fresh-make-bench.log" &&
	! grep -q 'model=DISAGREES' "$logs/fresh-make-bench.log"; then
	pass "fresh copy: make bench"
else
	fail "fresh copy: make bench" "exit $rc; see $logs/fresh-make-bench.log"
fi
rm -rf "$fresh"

# Reliability on the reference kernel. Hostile devices: five models that draw new firmware
# registers (FB size, VGA workspace, WPR2, flapping BOOT and GFW registers, flaky invalidates,
# a BAR1 bind that never completes) at every reset; ten rounds of reset, insmod and rmmod give
# 50 devices, each bound where it must be or refused with a message, with no access to
# firmware-owned VRAM and no crash or hang.
hostile_rounds=${NOVA_MM_HOSTILE_ROUNDS:-10}
NOVA_MM_PORTS=1 NOVA_MM_APPEND="kunit.enable=0 nova_mm.hostile_rounds=$hostile_rounds" \
	guest hostile --hostile "$hostile_rounds" --multi-load -- \
	tu102:hostile=11 ga102:hostile=12 ad102:hostile=13 gh100:hostile=14 gb202:hostile=15
# Abrupt loss: the GA102 model's connection dies under the stress workers; its workers fail
# with errors, the GH100's go on, and nothing hangs or crashes. With posted BAR writes, QEMU
# 11.1.3's vfio-user client itself aborts now and then when its server goes away (assertion
# in error_setv; 1 run in 4 here), so QEMU waits for each write's reply in this run.
NOVA_MM_NO_POSTED=1 NOVA_MM_APPEND="kunit.enable=0 nova_mm.stress=1 nova_mm.linger=4" guest disconnect --bound 2 \
	--multi-load --lost ga102 \
	--grep 'NOVA-STRESS-ERROR 0x172 job=[a-z0-9]+ round=[0-9]+ error=' \
	--grep 'NOVA-STRESS 0x180 ops=[1-9][0-9]* .* errors=0 ' -- \
	ga102:fault=disconnect-after=20000 gh100

# The debug kernel's runs, started in the background above: judged here.
log "waiting for the debug kernel's runs (see $logs/debug-runs.log)"
wait "$debug_pid" || true
debug_pid=
if [ -f "$logs/debug-built" ]; then
	pass "debug kernel and module built ($(cat "$logs/debug-built"))"
	guest_judge debug-cycles --suites "${suites%,gpu_buddy}" --probe ga102 --probe gh100 --bound 2 \
		--debug-kernel --cycles "$cycles" --multi-load
	guest_judge debug-unplug --bound 2 --debug-kernel --unplug ga102 --multi-load
else
	fail "debug kernel and module" "see $logs/debug-runs.log"
fi

echo "check took $(($(date +%s) - t0)) s"
finished=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
