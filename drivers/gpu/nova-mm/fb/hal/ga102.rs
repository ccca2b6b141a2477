// SPDX-License-Identifier: GPL-2.0

//! GA10x (GA102 and later Ampere) and Ada framebuffer HAL: VRAM size from the boot firmware's
//! scratch register, LIBOS 3 heap.

use crate::{
    bar::Bar0,
    fb::{
        hal::{
            BootWait,
            FbHal,
            LayoutParams,
            BOOTLOADER_BUDGET,
            GFW_BOOT,
            LIBOS3_TU10X, //
        },
        regs, //
    },
};

/// Returns the VRAM size from `NV_USABLE_FB_SIZE_IN_MB` (GA102 and later).
pub(super) fn vidmem_size_ga102(bar: &Bar0<'_>) -> u64 {
    bar.read(regs::NV_USABLE_FB_SIZE_IN_MB).usable_fb_size()
}

/// GA10x and Ada region sizes.
const GA102_LAYOUT: LayoutParams = LayoutParams {
    frts_size: super::tu102::FRTS_SIZE_TU102,
    non_wpr_heap_size: super::tu102::NON_WPR_HEAP_SIZE_TU102,
    boot_budget: BOOTLOADER_BUDGET,
    heap: LIBOS3_TU10X,
    fsp: None,
};

/// The GA10x and Ada HAL.
struct Ga102;

impl FbHal for Ga102 {
    fn boot_wait(&self) -> BootWait {
        GFW_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        super::tu102::gfw_booted_tu102(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        vidmem_size_ga102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        super::ga100::display_enabled_ga100(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &GA102_LAYOUT
    }
}

/// The GA10x and Ada HAL instance.
pub(super) const GA102_HAL: &dyn FbHal = &Ga102;
