// SPDX-License-Identifier: GPL-2.0

//! Turing framebuffer HAL; its helpers are shared with later families.

use kernel::{
    sizes::SizeConstants, //
};

use crate::{
    bar::Bar0,
    fb::{
        hal::{
            BootWait,
            FbHal,
            LayoutParams,
            BOOTLOADER_BUDGET,
            GFW_BOOT,
            LIBOS2_TU10X, //
        },
        regs, //
    },
};

/// Returns whether GFW boot has completed.
///
/// `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05` is readable by the CPU only once FWSEC has lowered its
/// privilege level mask, so the mask is checked first (open-gpu-kernel-modules
/// `_gpuIsGfwBootCompleted_TU102`: "check that FWSEC has lowered its PLM first"; nova-core
/// `gpu/hal/tu102.rs` does the same).
pub(super) fn gfw_booted_tu102(bar: &Bar0<'_>) -> bool {
    bar.read(regs::NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_PRIV_LEVEL_MASK)
        .read_protection_level0()
        && bar
            .read(regs::NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_0_GFW_BOOT)
            .completed()
}

/// Returns the VRAM size from `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` (Turing, GA100).
pub(super) fn vidmem_size_tu102(bar: &Bar0<'_>) -> u64 {
    bar.read(regs::NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE)
        .usable_fb_size()
}

/// Returns whether the Turing display fuse leaves the display engine enabled.
fn display_enabled_tu102(bar: &Bar0<'_>) -> bool {
    !bar.read(regs::gm107::NV_FUSE_STATUS_OPT_DISPLAY)
        .display_disabled()
}

/// FRTS size of every chip but GA100: 1 MiB.
pub(super) const FRTS_SIZE_TU102: u64 = u64::SZ_1M;

/// Non-WPR heap size of Turing, Ampere and Ada: 1 MiB.
pub(super) const NON_WPR_HEAP_SIZE_TU102: u64 = u64::SZ_1M;

/// Turing region sizes.
const TU102_LAYOUT: LayoutParams = LayoutParams {
    frts_size: FRTS_SIZE_TU102,
    non_wpr_heap_size: NON_WPR_HEAP_SIZE_TU102,
    boot_budget: BOOTLOADER_BUDGET,
    heap: LIBOS2_TU10X,
    fsp: None,
};

/// The Turing HAL.
struct Tu102;

impl FbHal for Tu102 {
    fn boot_wait(&self) -> BootWait {
        GFW_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        gfw_booted_tu102(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        vidmem_size_tu102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        display_enabled_tu102(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &TU102_LAYOUT
    }
}

/// The Turing HAL instance.
pub(super) const TU102_HAL: &dyn FbHal = &Tu102;
