// SPDX-License-Identifier: GPL-2.0

//! Blackwell GB20x framebuffer HAL: GB10x's layout with a larger non-WPR heap, and the FSP boot
//! status register at its GB20x address.

use kernel::{
    sizes::SizeConstants, //
};

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

/// Returns whether FSP secure boot has completed, from the GB20x scratch register.
fn fsp_booted_gb202(bar: &Bar0<'_>) -> bool {
    bar.read(regs::gb202::NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE)
        .status()
        == regs::FSP_BOOT_COMPLETE_SUCCESS
}

/// GB20x region sizes; the 2 MiB + 128 KiB non-WPR heap is r570-specific (nova-core
/// `fb/hal/gb202.rs`).
const GB202_LAYOUT: LayoutParams = LayoutParams {
    frts_size: super::tu102::FRTS_SIZE_TU102,
    non_wpr_heap_size: u64::SZ_2M + u64::SZ_128K,
    boot_budget: FMC_BUDGET,
    heap: LIBOS3_GH100,
    fsp: Some(FspParams {
        end_reserved: super::gb100::FSP_END_RESERVED_GB100,
        pmu_reserved: super::gb100::PMU_RESERVED_SIZE_GB100,
    }),
};

/// The GB20x HAL.
struct Gb202;

impl FbHal for Gb202 {
    fn boot_wait(&self) -> BootWait {
        FSP_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        fsp_booted_gb202(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        super::ga102::vidmem_size_ga102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        super::ga100::display_enabled_ga100(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &GB202_LAYOUT
    }
}

/// The GB20x HAL instance.
pub(super) const GB202_HAL: &dyn FbHal = &Gb202;
