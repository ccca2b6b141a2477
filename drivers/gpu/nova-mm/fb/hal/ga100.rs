// SPDX-License-Identifier: GPL-2.0

//! GA100 framebuffer HAL: Turing's VRAM size register, Ampere's display fuse, no FRTS.

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

/// Returns whether the GA100-and-later display fuse leaves the display engine enabled.
pub(super) fn display_enabled_ga100(bar: &Bar0<'_>) -> bool {
    !bar.read(regs::ga100::NV_FUSE_STATUS_OPT_DISPLAY)
        .display_disabled()
}

/// GA100 region sizes: its FRTS region exists but is empty (nova-core `fb/hal/ga100.rs`).
const GA100_LAYOUT: LayoutParams = LayoutParams {
    frts_size: 0,
    non_wpr_heap_size: super::tu102::NON_WPR_HEAP_SIZE_TU102,
    boot_budget: BOOTLOADER_BUDGET,
    heap: LIBOS2_TU10X,
    fsp: None,
};

/// The GA100 HAL.
struct Ga100;

impl FbHal for Ga100 {
    fn boot_wait(&self) -> BootWait {
        GFW_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        super::tu102::gfw_booted_tu102(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        super::tu102::vidmem_size_tu102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        display_enabled_ga100(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &GA100_LAYOUT
    }
}

/// The GA100 HAL instance.
pub(super) const GA100_HAL: &dyn FbHal = &Ga100;
