// SPDX-License-Identifier: GPL-2.0

//! Blackwell GB10x framebuffer HAL: like Hopper, plus the PMU reservation above FRTS.

use kernel::sizes::SizeConstants;

use crate::{
    bar::Bar0,
    fb::hal::{
        BootWait,
        FbHal,
        FspParams,
        LayoutParams,
        FMC_BUDGET,
        FSP_BOOT,
        LIBOS3_GH100, //
    },
};

/// VRAM reserved for the PMU on Blackwell: `align_up(8 MiB + 16 MiB + 4 KiB, 128 KiB)`
/// = 24 MiB + 128 KiB. r570-specific (nova-core `fb/hal/gb100.rs`).
pub(super) const PMU_RESERVED_SIZE_GB100: u64 = 24 * u64::SZ_1M + u64::SZ_128K;

/// VRAM FSP keeps free above FRTS on Blackwell: 2 MiB + 128 KiB (nova-core `fsp/hal/gb100.rs`,
/// `fsp/hal/gb202.rs`).
pub(super) const FSP_END_RESERVED_GB100: u64 = u64::SZ_2M + u64::SZ_128K;

/// GB10x region sizes.
const GB100_LAYOUT: LayoutParams = LayoutParams {
    frts_size: super::tu102::FRTS_SIZE_TU102,
    non_wpr_heap_size: super::gh100::NON_WPR_HEAP_SIZE_GH100,
    boot_budget: FMC_BUDGET,
    heap: LIBOS3_GH100,
    fsp: Some(FspParams {
        end_reserved: FSP_END_RESERVED_GB100,
        pmu_reserved: PMU_RESERVED_SIZE_GB100,
    }),
};

/// The GB10x HAL.
struct Gb100;

impl FbHal for Gb100 {
    fn boot_wait(&self) -> BootWait {
        FSP_BOOT
    }

    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool {
        super::gh100::fsp_booted_gh100(bar)
    }

    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64 {
        super::ga102::vidmem_size_ga102(bar)
    }

    fn supports_display(&self, bar: &Bar0<'_>) -> bool {
        super::ga100::display_enabled_ga100(bar)
    }

    fn layout(&self) -> &'static LayoutParams {
        &GB100_LAYOUT
    }
}

/// The GB10x HAL instance.
pub(super) const GB100_HAL: &dyn FbHal = &Gb100;
