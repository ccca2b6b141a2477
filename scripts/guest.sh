#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Boot the reference kernel in QEMU with one GPU model per CHIP attached over
# vfio-user, run scripts/guest/init (load nova_mm.ko, print KUnit results) and
# power off.
#
# Usage: guest.sh NAME CHIP[:MODEL-OPTION,...] ...
#   NAME    name of the run: outputs go to build/guest/NAME/ (console.log: the
#           kernel's console on ttyS0; guest.out: what /init prints, on ttyS1,
#           CHIP.report.json, CHIP.model.log)
#   CHIP    tu102, ga102, ad102, gh100, gb202; model options after a colon,
#           comma-separated, e.g. gh100:--invalidate-delay=3
#           (or without dashes: gh100:vram=48G,bar1=1G)
# Environment: NOVA_MM_APPEND extra kernel command line; NOVA_MM_TIMEOUT (s);
#           NOVA_MM_SHELL=1: an interactive shell on the console (this terminal)
#           instead of the scripted run, QEMU's gdb stub on tcp::1234.
#           NOVA_MM_PORTS=1: each GPU behind a PCIe root port with native hotplug
#           (QEMU device ids gpu0, gpu1, ... in the order given; QMP on NAME/qmp.sock).
#           NOVA_MM_NO_POSTED=1: QEMU waits for every BAR write's reply (x-no-posted-writes).
#           NOVA_MM_SNAPSHOT=MARKER: when the guest prints MARKER, every model writes its
#           report so far to NAME/CHIP.snapshot.json.
#           NOVA_MM_UNPLUG=K (implies NOVA_MM_PORTS=1): when the guest prints
#           NOVA-UNPLUG-READY, remove gpuK with QMP device_del (log: NAME/qmp.log).
# Exit status: QEMU's (0 when the guest powered off).
set -e
. "$(dirname "$0")/lib.sh"

name=$1; shift
[ $# -gt 0 ] || die "usage: guest.sh NAME CHIP[:OPTIONS] ..."
kdir=$("$NOVA_TOP/scripts/build-kernel.sh")
"$NOVA_TOP/scripts/build-model.sh"
img=$("$NOVA_TOP/scripts/build-initramfs.sh")
out=$NOVA_BUILD/guest/$name
rm -rf "$out" && mkdir -p "$out"
: >"$out/guest.out"

# The chips, from the GPU model itself (gpu-model chips: name, chipset code, architecture, MMU
# version, default VRAM in GiB, board), the one table every script reads; kept with the run for
# the judge (chips.json).
chips=$(model_run chips)
model_run chips --json >"$out/chips.json"
chip_col() {
	awk -v c="$1" -v k="$2" '$1 == c { print $k; f = 1 } END { if (!f) print 0 }' <<<"$chips"
}
# Default VRAM of each model in the runs (GiB); given to the model and to the tests.
vram_gib() { chip_col "$1" 5; }
code() { chip_col "$1" 2; }

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

ports=${NOVA_MM_PORTS:-0}
props='"x-msg-timeout":30000'
[ "${NOVA_MM_NO_POSTED:-0}" = 1 ] && props="$props,\"x-no-posted-writes\":true"
[ -z "${NOVA_MM_UNPLUG:-}" ] || ports=1
devs=()
expect=0
expect_vram=0
shift_bits=0
slot=4
for spec in "$@"; do
	chip=${spec%%:*}
	opts=
	[ "$chip" = "$spec" ] || opts=${spec#*:}
	# Options may be written without their dashes: gh100:vram=48G,bar1=1G.
	opts=$(echo "$opts" | sed -E 's/(^|,)([a-z])/\1--\2/g')
	case ",$opts," in
	*,--vram=*) gib=0 ;; # Given by the caller: the tests do not check it.
	*) gib=$(vram_gib "$chip"); opts="--vram=${gib}G${opts:+,$opts}" ;;
	esac
	sock=$out/$chip.sock
	[ ${#sock} -lt 100 ] || die "socket path too long for a Unix socket: $sock (clone to a shorter path)"
	# shellcheck disable=SC2086
	model_run --chip "$chip" --socket "$sock" --report "$out/$chip.report.json" \
		--control "$out/$chip.ctl" --dump-vram "$out/$chip.vram.bin" --pdbs-file "$out/$chip.pdbs" \
		${opts//,/ } >"$out/$chip.model.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
	[ -S "$sock" ] || die "the $chip model did not start; see $out/$chip.model.log"
	n=$((slot - 4))
	# Where the guest will find it (the harness maps the driver's lines to models by this).
	if [ "$ports" = 1 ]; then
		echo "$chip 0000:$(printf '%02x' $((n + 1))):00.0" >>"$out/devices.txt"
	else
		echo "$chip 0000:00:$(printf '%02x' $slot).0" >>"$out/devices.txt"
	fi
	# x-msg-timeout: QEMU waits up to 30 s (not 5) for a model's reply, so that a model starved
	# of CPU on a loaded 2-core machine is not taken for a dead one.
	if [ "$ports" = 1 ]; then
		devs+=(-device "pcie-root-port,id=rp$n,chassis=$((n + 1)),slot=$((n + 1)),bus=pcie.0,addr=$(printf '%02x' $slot).0"
			-device "{\"driver\":\"vfio-user-pci\",\"id\":\"gpu$n\",\"bus\":\"rp$n\",\"addr\":\"00.0\",$props,\"socket\":{\"type\":\"unix\",\"path\":\"$sock\"}}")
	else
		devs+=(-device "{\"driver\":\"vfio-user-pci\",\"id\":\"gpu$n\",\"addr\":\"$(printf '%02x' $slot).0\",$props,\"socket\":{\"type\":\"unix\",\"path\":\"$sock\"}}")
	fi
	slot=$((slot + 1))
	expect=$((expect | ($(code "$chip") << shift_bits)))
	expect_vram=$((expect_vram | (gib << shift_bits)))
	shift_bits=$((shift_bits + 12))
done

accel=tcg
append="console=ttyS0 panic=-1 oops=panic loglevel=7 nova_mm.expect_chipsets=$expect nova_mm.expect_vram_gib=$expect_vram ${NOVA_MM_APPEND:-}"
bzimage=$kdir/arch/x86/boot/bzImage
qemu=(qemu-system-x86_64 -machine q35,accel=$accel,memory-backend=mem0
	-object memory-backend-memfd,id=mem0,size=512M,share=on -m 512M -smp 2 -cpu max
	-kernel "$bzimage" -initrd "$img" -no-reboot -net none -display none)
# Behind root ports, hotplug is native PCIe (pciehp in the guest): QEMU's q35 otherwise keeps
# it in ACPI and tells the guest so in _OSC.
[ "$ports" = 1 ] && qemu+=(-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off)
qmp=$out/qmp.sock
[ ${#qmp} -lt 100 ] || die "socket path too long for a Unix socket: $qmp"
qemu+=(-qmp "unix:$qmp,server=on,wait=off")
if [ -n "${NOVA_MM_UNPLUG:-}" ]; then
	# Hot-unplug: once the guest is ready, ask QEMU to remove the GPU (the guest's pciehp sees
	# the attention button, then powers the slot off and unbinds the driver).
	(
		for _ in $(seq 1200); do
			grep -q NOVA-UNPLUG-READY "$out/guest.out" 2>/dev/null && break
			sleep 0.1
		done
		in_root python3 - "$qmp" "gpu$NOVA_MM_UNPLUG" >"$out/qmp.log" 2>&1 <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def cmd(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a} if a else {"execute": c}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        print(time.strftime("%T"), json.dumps(r), flush=True)
        if "return" in r or "error" in r:
            return r
print(time.strftime("%T"), f.readline().strip(), flush=True)
cmd("qmp_capabilities")
cmd("device_del", id=sys.argv[2])
# Wait for QEMU to confirm the removal (DEVICE_DELETED), at most 60 s.
s.settimeout(60)
try:
    while True:
        r = json.loads(f.readline())
        print(time.strftime("%T"), json.dumps(r), flush=True)
        if r.get("event") == "DEVICE_DELETED" and r.get("data", {}).get("device") == sys.argv[2]:
            break
except Exception as e:
    print("no DEVICE_DELETED:", e)
PY
	) &
	pids+=($!)
fi
# The page directories the device tests announce (NOVA-MAP lines), for each model's coverage
# rule at the end of the run: an address space the driver never invalidated is known to the
# model no other way. Kept up to date while the guest runs; the models read it when QEMU goes.
(
	while :; do
		for spec in "$@"; do
			chip=${spec%%:*}
			c=$(code "$chip")
			grep -ao "NOVA-MAP $c 0x[0-9a-f]*" "$out/console.log" 2>/dev/null | awk '{print $3}' |
				sort -u >"$out/$chip.pdbs.tmp" && mv "$out/$chip.pdbs.tmp" "$out/$chip.pdbs"
		done
		sleep 1
	done
) &
pdbs_pid=$!
pids+=($pdbs_pid)
if [ -n "${NOVA_MM_SNAPSHOT:-}" ]; then
	# When the guest prints the marker NOVA_MM_SNAPSHOT names, each model writes its report
	# as it stands to NAME/CHIP.snapshot.json (control socket command `report FILE`).
	(
		for _ in $(seq 3000); do
			grep -q "$NOVA_MM_SNAPSHOT" "$out/guest.out" 2>/dev/null && break
			sleep 0.1
		done
		for spec in "$@"; do
			chip=${spec%%:*}
			in_root python3 - "$out/$chip.ctl" "$out/$chip.snapshot.json" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(f"report {sys.argv[2]}\n".encode())
print(s.makefile().readline().strip())
PY
		done >"$out/snapshot.log" 2>&1
	) &
	pids+=($!)
fi
set +e
if [ "${NOVA_MM_SHELL:-0}" = 1 ]; then
	# The console is this terminal (and logged); Ctrl-A X quits QEMU, Ctrl-A C its monitor.
	in_root "${qemu[@]}" -append "$append nova_mm.shell=1" -s \
		-chardev "stdio,id=con,mux=on,signal=off,logfile=$out/console.log" \
		-serial chardev:con -mon chardev=con -serial "file:$out/guest.out" "${devs[@]}"
else
	timeout "${NOVA_MM_TIMEOUT:-300}" bash -c '. "$1/scripts/lib.sh"; shift; in_root "$@"' _ "$NOVA_TOP" \
		"${qemu[@]}" -append "$append" -monitor none -serial stdio -serial "file:$out/guest.out" \
		"${devs[@]}" </dev/null >"$out/console.log" 2>&1
fi
rc=$?
set -e
kill "$pdbs_pid" 2>/dev/null || true
# The models write their reports when QEMU disconnects.
for p in "${pids[@]}"; do
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill "$p" 2>/dev/null || true
done

# The mappings the device tests announced (NOVA-MAP lines), translated by each model's own
# page walker from its VRAM dump: the first and last 8 bytes of every page. guest-results.py
# compares the answers with what the driver said it mapped.
for spec in "$@"; do
	chip=${spec%%:*}
	c=$(code "$chip")
	[ -f "$out/$chip.vram.bin" ] || continue
	# Only the last load's: earlier loads' tables were overwritten by the next.
	from=$(grep -an NOVA-LOAD "$out/console.log" | tail -n 1 | cut -d: -f1)
	tail -n +"${from:-1}" "$out/console.log" |
		grep -ao "NOVA-MAP $c [^ ]* [^ ]* [^ ]* [^ ]* [^ ]* [a-z]*" |
		while read -r _ _ pdb va _ len page _; do
			for ((o = 0; o < len; o += page)); do
				printf '0x%x 0x%x\n0x%x 0x%x\n' "$pdb" $((va + o)) "$pdb" $((va + o + page - 8))
			done
		done >"$out/$chip.walk.in"
	[ -s "$out/$chip.walk.in" ] || continue
	model_run walk --chip "$chip" --dump "$out/$chip.vram.bin" --queries "$out/$chip.walk.in" \
		>"$out/$chip.walk.out" 2>"$out/$chip.walk.err" || true
done
exit $rc
