// SPDX-License-Identifier: GPL-2.0

//! Per-chip framebuffer HAL: how to wait for the boot firmware, where the VRAM size and display
//! fuse live, and the sizes of the regions the firmware reserves at the top of VRAM.
//!
//! One implementation per family, picked once by [`fb_hal`]; newer families call the helpers of
//! older ones by name. The split follows nova-core's `fb/hal.rs`, `gpu/hal.rs` and `fsp/hal.rs`.

use kernel::{
    sizes::SizeConstants,
    time::Delta, //
};

use crate::{
    bar::Bar0,
    chip::{
        Architecture,
        Chipset, //
    },
};

mod ga100;
mod ga102;
mod gb100;
mod gb202;
mod gh100;
mod tu102;

/// How to wait for the firmware boot that must finish before the VRAM registers are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BootWait {
    /// Name of the boot step, for messages.
    pub(super) name: &'static str,
    /// Interval between two polls.
    pub(super) poll: Delta,
    /// Upper bound on the wait.
    pub(super) timeout: Delta,
}

/// GFW (devinit and FWSEC) boot of Turing, Ampere and Ada.
///
/// TIMEOUT: nova-core waits 4 s (`gpu/hal/tu102.rs`), an arbitrarily large value: GFW starts
/// running as soon as the GPU leaves reset and completes well within it.
pub(super) const GFW_BOOT: BootWait = BootWait {
    name: "GFW boot",
    poll: Delta::from_millis(1),
    timeout: Delta::from_secs(4),
};

/// FSP secure boot of Hopper and Blackwell.
///
/// TIMEOUT: nova-core waits 5 s (`FSP_SECURE_BOOT_TIMEOUT_MS` in `fsp.rs`); FSP boot is normally
/// complete long before a driver probes.
pub(super) const FSP_BOOT: BootWait = BootWait {
    name: "FSP secure boot",
    poll: Delta::from_millis(10),
    timeout: Delta::from_secs(5),
};

/// Parameters of the GSP-RM WPR heap size formula for one LIBOS version and chip family.
///
/// Values are the `GSP_FW_HEAP_*` constants of the r570.144 GSP bindings
/// (`drivers/gpu/nova-core/gsp/fw/r570_144/bindings.rs`), used as nova-core's
/// `LibosParams::wpr_heap_size` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WprHeapParams {
    /// Heap used by LIBOS itself (`GSP_FW_HEAP_PARAM_OS_SIZE_*`).
    pub(super) carveout: u64,
    /// Heap used by GSP-RM boot up to the first client (`GSP_FW_HEAP_PARAM_BASE_RM_SIZE_*`).
    pub(super) base_rm: u64,
    /// Smallest heap allowed (`GSP_FW_HEAP_SIZE_OVERRIDE_*_MIN_MB`).
    pub(super) min: u64,
    /// Largest heap allowed (`GSP_FW_HEAP_SIZE_OVERRIDE_*_MAX_MB`).
    pub(super) max: u64,
}

/// Heap for one RM client (`GSP_FW_HEAP_PARAM_CLIENT_ALLOC_SIZE`, 96 MiB).
pub(super) const WPR_HEAP_CLIENT_ALLOC: u64 = 96 * u64::SZ_1M;

/// Heap per GiB of VRAM for memory management (`GSP_FW_HEAP_PARAM_SIZE_PER_GB_FB`, 96 KiB).
pub(super) const WPR_HEAP_PER_GB: u64 = 96 * u64::SZ_1K;

/// LIBOS 2 (Turing, GA100) with the Turing RM base size: `OS_SIZE_LIBOS2` 0,
/// `BASE_RM_SIZE_TU10X` 8 MiB, 64..=256 MiB.
pub(super) const LIBOS2_TU10X: WprHeapParams = WprHeapParams {
    carveout: 0,
    base_rm: 8 * u64::SZ_1M,
    min: 64 * u64::SZ_1M,
    max: 256 * u64::SZ_1M,
};

/// LIBOS 3 (GA102 and later) with the Turing RM base size (GA10x, Ada):
/// `OS_SIZE_LIBOS3_BAREMETAL` 22 MiB, `BASE_RM_SIZE_TU10X` 8 MiB, 88..=280 MiB.
pub(super) const LIBOS3_TU10X: WprHeapParams = WprHeapParams {
    carveout: 22 * u64::SZ_1M,
    base_rm: 8 * u64::SZ_1M,
    min: 88 * u64::SZ_1M,
    max: 280 * u64::SZ_1M,
};

/// LIBOS 3 with the Hopper RM base size (Hopper, Blackwell): `OS_SIZE_LIBOS3_BAREMETAL` 22 MiB,
/// `BASE_RM_SIZE_GH100` 14 MiB, 88..=280 MiB.
pub(super) const LIBOS3_GH100: WprHeapParams = WprHeapParams {
    carveout: 22 * u64::SZ_1M,
    base_rm: 14 * u64::SZ_1M,
    min: 88 * u64::SZ_1M,
    max: 280 * u64::SZ_1M,
};

/// Where FSP (Hopper, Blackwell) puts FRTS: measured back from the end of VRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FspParams {
    /// VRAM kept free above FRTS at the end of VRAM (nova-core `FspHal::fb_end_reserved_size`;
    /// Open RM `memmgrGetFBEndReserveSizeEstimate`): VGA workspace, BAR instance blocks and
    /// page directories.
    pub(super) end_reserved: u64,
    /// VRAM reserved for the PMU between FRTS and `end_reserved`, 0 if none (nova-core
    /// `FbHal::pmu_reserved_size`).
    pub(super) pmu_reserved: u64,
}

/// Sizes of the regions that firmware reserves at the top of VRAM on one chip family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LayoutParams {
    /// Size of the FRTS region (nova-core `FbHal::frts_size`).
    pub(super) frts_size: u64,
    /// Size of the GSP-RM heap outside WPR2 (nova-core `FbHal::non_wpr_heap_size`).
    pub(super) non_wpr_heap_size: u64,
    /// Budget for the GSP boot image placed below FRTS: the RISC-V boot loader on Turing,
    /// Ampere and Ada, GSP-FMC on Hopper and Blackwell.
    pub(super) boot_budget: u64,
    /// Parameters of the WPR heap size formula.
    pub(super) heap: WprHeapParams,
    /// FSP placement of FRTS, on chips that boot through FSP.
    pub(super) fsp: Option<FspParams>,
}

/// Budget for the RISC-V GSP boot loader (`bootloader-570.144.bin`, a few KiB).
pub(super) const BOOTLOADER_BUDGET: u64 = 64 * u64::SZ_1K;

/// Budget for GSP-FMC, the boot image FSP starts on Hopper and Blackwell.
pub(super) const FMC_BUDGET: u64 = u64::SZ_1M;

/// One chip family's way of reading the firmware parameters.
pub(super) trait FbHal {
    /// Returns how to wait for the firmware boot.
    fn boot_wait(&self) -> BootWait;

    /// Returns whether the firmware boot has completed.
    fn firmware_booted(&self, bar: &Bar0<'_>) -> bool;

    /// Returns the VRAM size, in bytes, as the boot firmware reports it.
    fn vidmem_size(&self, bar: &Bar0<'_>) -> u64;

    /// Returns whether the chip has a display engine (one that is not fused off).
    fn supports_display(&self, bar: &Bar0<'_>) -> bool;

    /// Returns the sizes of the firmware regions at the top of VRAM.
    fn layout(&self) -> &'static LayoutParams;
}

/// Returns the HAL of `chipset`.
pub(super) fn fb_hal(chipset: Chipset) -> &'static dyn FbHal {
    match chipset.arch() {
        Architecture::Turing => tu102::TU102_HAL,
        Architecture::Ampere if chipset == Chipset::GA100 => ga100::GA100_HAL,
        Architecture::Ampere | Architecture::Ada => ga102::GA102_HAL,
        Architecture::Hopper => gh100::GH100_HAL,
        Architecture::BlackwellGB10x => gb100::GB100_HAL,
        Architecture::BlackwellGB20x => gb202::GB202_HAL,
    }
}
