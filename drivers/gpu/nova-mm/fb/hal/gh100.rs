// SPDX-License-Identifier: GPL-2.0

//! Hopper framebuffer HAL: FSP secure boot, FSP-placed FRTS, 2 MiB non-WPR heap.

use kernel::sizes::SizeConstants;

use crate::{
    bar::Bar0,
    fb::{
        hal::{
            BootWait,
            FbHal,
            FspParams,
            LayoutParams,
            FMC_BUDGET,
            FSP_BOOT,
            LIBOS3_GH100, //
        },
        regs, //
    },
};

/// Returns whether FSP secure boot has completed, from the Hopper/GB10x scratch register.
pub(super) fn fsp_booted_gh100(bar: &Bar0<'_>) -> bool {
    bar.read(regs::gh100::NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE)
        .status()
        == regs::FSP_BOOT_COMPLETE_SUCCESS
}

/// Non-WPR heap size of Hopper and GB10x: 2 MiB (Open RM `kgspGetNonWprHeapSize`).
pub(super) const NON_WPR_HEAP_SIZE_GH100: u64 = u64::SZ_2M;

/// Hopper region sizes. FSP keeps 2 MiB free above FRTS (nova-core `fsp/hal/gh100.rs`).
const GH100_LAYOUT: LayoutParams = LayoutParams {
    frts_size: super::tu102::FRTS_SIZE_TU102,
    non_wpr_heap_size: NON_WPR_HEAP_SIZE_GH100,
    boot_budget: FMC_BUDGET,
    heap: LIBOS3_GH100,
    fsp: Some(FspParams {
        end_reserved: u64::SZ_2M,
        pmu_reserved: 0,
    }),
};

/// The Hopper HAL.
struct Gh100;

impl FbHal for Gh100 {
    fn boot_wait(&self) -> BootWait {
        FSP_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        fsp_booted_gh100(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        super::ga102::vidmem_size_ga102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        super::ga100::display_enabled_ga100(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &GH100_LAYOUT
    }
}

/// The Hopper HAL instance.
pub(super) const GH100_HAL: &dyn FbHal = &Gh100;
