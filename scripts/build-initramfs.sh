#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Pack the guest's initramfs: busybox-static, scripts/guest/init, nova_mm.ko
# and the kernel's own gpu_buddy_tests.ko. Prints the path of the archive.
set -e
. "$(dirname "$0")/lib.sh"

kdir=$("$NOVA_TOP/scripts/build-kernel.sh")
ko=$MODULE_OUT/drivers/gpu/nova-mm/nova_mm.ko
[ -f "$ko" ] || die "no $ko: build the module first (make)"
buddy=$kdir/drivers/gpu/tests/gpu_buddy_tests.ko
[ -f "$buddy" ] || die "no $buddy in the reference kernel build"
dir=$NOVA_BUILD/guest/initramfs-$NOVA_KERNEL
rm -rf "$dir" && mkdir -p "$dir"/{bin,dev,proc,sys,modules}
cp "$ROOT/bin/busybox" "$dir/bin/busybox"
cp "$NOVA_TOP/scripts/guest/init" "$dir/init"
chmod +x "$dir/init"
cp "$ko" "$buddy" "$dir/modules/"
img=$NOVA_BUILD/guest/initramfs-$NOVA_KERNEL.cpio.gz
in_root /bin/sh -c "cd '$dir' && find . | cpio -o -H newc --quiet | gzip -1 >'$img'"
echo "$img"
