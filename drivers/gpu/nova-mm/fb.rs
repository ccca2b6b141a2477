// SPDX-License-Identifier: GPL-2.0

//! Firmware parameters and the layout of video memory (VRAM).
//!
//! Without GSP-RM, nothing tells the driver which VRAM it may use. The GPU's own boot firmware
//! (devinit and FWSEC from the VBIOS on Turing, Ampere and Ada; FSP on Hopper and Blackwell)
//! leaves a few registers behind: the VRAM size, the VGA workspace address and, if it set one up,
//! the write-protected region WPR2. [`FwParams`] reads them once, after waiting for that firmware
//! to finish.
//!
//! [`FbLayout`] then lays VRAM out the way nova-core's `FbRanges` does before it boots GSP: from
//! the end of VRAM down, the VGA workspace, FRTS, the GSP boot image, the GSP-RM ELF image, the
//! WPR heap, the WPR2 metadata and the non-WPR heap (with, on Hopper and Blackwell, FSP's own
//! reservation and the PMU's above FRTS). Everything from the lowest of them up is firmware's; so
//! is the legacy VGA memory at the start of VRAM. What is left, aligned to 2 MiB, is usable.
//! nova-mm loads no GSP firmware, so the two GSP images get fixed budgets instead of their sizes.
//!
//! [`FbLayout`] is the only type the rest of the driver sees: a region list reported by GSP-RM
//! (`fbRegionInfoParams`) can construct it later without changing its users.
//!
//! Sources: nova-core `fb.rs`, `fb/hal/*.rs`, `gsp/fw.rs` (`LibosParams`), `fsp.rs`; Open RM
//! `kernel_gsp_gh100.c` (`kgspCalculateFbLayout_GH100`) and `kern_fsp_gh100.c` for the Hopper
//! layout; nouveau `nvkm/subdev/fb/ramgp102.c` for the legacy VGA memory. See
//! `Documentation/gpu/nova-mm/fb.rst`.

use core::ops::Range;

use kernel::{
    fmt,
    io::poll::read_poll_timeout,
    prelude::*,
    ptr::{
        Alignable,
        Alignment, //
    },
    sizes::{
        SizeConstants,
        SZ_128K,
        SZ_1M,
        SZ_2M,
        SZ_4K,
        SZ_64K, //
    },
};

use crate::{
    bar::Bar0,
    chip::{
        Architecture,
        Chipset, //
    },
};

mod hal;
mod regs;

/// Raw state the GPU's firmware (devinit/FWSEC or FSP) left, read once at probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FwParams {
    /// Size of VRAM in bytes, from the per-chip FB size register
    /// (`NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` on Turing and GA100, ECC check bits excluded;
    /// `NV_USABLE_FB_SIZE_IN_MB` at `0x1183a4` on GA102 and later).
    pub(crate) fb_size: u64,
    /// Whether the chip has a display engine that is not fused off.
    pub(crate) display: bool,
    /// `NV_PDISP_VGA_WORKSPACE_BASE` address when the chip has a display engine and the
    /// register's status is valid, else `None`.
    pub(crate) vga_workspace: Option<u64>,
    /// The WPR2 range if firmware set it (`NV_PFB_PRI_MMU_WPR2_ADDR_LO`/`_HI`).
    pub(crate) wpr2: Option<Range<u64>>,
}

impl FwParams {
    /// Waits for the firmware boot to complete, then reads the firmware parameters of `chipset`.
    ///
    /// Turing, Ampere and Ada wait for GFW boot (`NV_PGC6_AON_SECURE_SCRATCH_GROUP_05`), Hopper
    /// and Blackwell for FSP secure boot (`NV_THERM_I2CS_SCRATCH`), as nova-core does.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` if the firmware boot does not complete in time (4 s for GFW, 5 s for FSP).
    pub(crate) fn read(bar: &Bar0<'_>, chipset: Chipset) -> Result<Self> {
        let hal = hal::fb_hal(chipset);
        let wait = hal.boot_wait();

        // TIMEOUT: per-family bound documented on `hal::GFW_BOOT` and `hal::FSP_BOOT`: the
        // values nova-core uses, far longer than the firmware takes after reset.
        read_poll_timeout(
            || Ok(hal.firmware_booted(bar)),
            |&booted| booted,
            wait.poll,
            wait.timeout,
        )
        .inspect_err(|e| {
            dev_err!(
                bar.dev(),
                "{}: {} did not complete within {} ms ({:?}); VRAM state unknown\n",
                chipset.name(),
                wait.name,
                wait.timeout.as_millis(),
                e
            )
        })?;

        let display = hal.supports_display(bar);
        // The PDISP register is only read on chips whose display engine exists.
        let vga_workspace = if display {
            bar.read(regs::NV_PDISP_VGA_WORKSPACE_BASE).workspace_addr()
        } else {
            None
        };

        let wpr2 = read_wpr2(bar, chipset);

        Ok(Self {
            fb_size: hal.vidmem_size(bar),
            display,
            vga_workspace,
            wpr2,
        })
    }
}

/// Reads the live WPR2 range, `None` when it is not set or cannot be decoded.
///
/// Turing to Hopper: `NV_PFB_PRI_MMU_WPR2_ADDR_LO/HI` (0x1fa824/8, `hopper/gh100/dev_fb.h`).
/// Blackwell: RM r595 reads the HUBMMU copy (0x88a824/8, `kgspIsWpr2Up_GB100`), RM r590 and
/// earlier read 0x1fa824/8 on Blackwell too, and which of the two decodes on GB20x is not public.
/// So on Blackwell the HUBMMU copy is read first and the legacy one only when the first answers
/// with a PRI error; a location that answers with a PRI error is not decodable, never "set".
/// When neither decodes, WPR2 is taken as not set and a warning says so (the firmware regions at
/// the top of VRAM are reserved by the computed layout either way).
fn read_wpr2(bar: &Bar0<'_>, chipset: Chipset) -> Option<Range<u64>> {
    let decode = |lo: u32, lo_bound: u64, hi: u32, hi_bound: u64| {
        if regs::is_pri_error(hi) || regs::is_pri_error(lo) {
            None
        } else if hi_bound == 0 {
            Some(None)
        } else {
            Some(Some(lo_bound..hi_bound))
        }
    };
    let legacy = || {
        let hi = bar.read(regs::NV_PFB_PRI_MMU_WPR2_ADDR_HI);
        if hi.upper_bound() == 0 {
            // Not set: LO says nothing more (one read saved on every probe).
            return if regs::is_pri_error(hi.into_raw()) {
                None
            } else {
                Some(None)
            };
        }
        let lo = bar.read(regs::NV_PFB_PRI_MMU_WPR2_ADDR_LO);
        decode(
            lo.into_raw(),
            lo.lower_bound(),
            hi.into_raw(),
            hi.upper_bound(),
        )
    };
    let found = match chipset.arch() {
        Architecture::BlackwellGB10x | Architecture::BlackwellGB20x => {
            let hi = bar.read(regs::NV_HUBMMU_PRI_MMU_WPR2_ADDR_HI);
            let hub = if regs::is_pri_error(hi.into_raw()) {
                None
            } else if hi.upper_bound() == 0 {
                Some(None)
            } else {
                let lo = bar.read(regs::NV_HUBMMU_PRI_MMU_WPR2_ADDR_LO);
                decode(
                    lo.into_raw(),
                    lo.lower_bound(),
                    hi.into_raw(),
                    hi.upper_bound(),
                )
            };
            hub.or_else(legacy)
        }
        _ => legacy(),
    };
    found.unwrap_or_else(|| {
        dev_warn!(
            bar.dev(),
            "{}: the WPR2 registers answer with a PRI error: WPR2 taken as not set\n",
            chipset.name()
        );
        None
    })
}

/// A named range of VRAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FbRegion {
    /// What the range holds, e.g. `"frts"`.
    pub(crate) name: &'static str,
    /// The VRAM addresses.
    pub(crate) range: Range<u64>,
}

impl fmt::Display for FbRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{} {}", self.name, Span(&self.range)))
    }
}

/// Formats a range as `start..end (size)`.
struct Span<'a>(&'a Range<u64>);

impl fmt::Display for Span<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.0.end.saturating_sub(self.0.start);
        // The largest unit that divides the size exactly, so that no rounding hides a byte.
        let (count, unit) = if size != 0 && size % u64::SZ_1G == 0 {
            (size / u64::SZ_1G, "GiB")
        } else if size != 0 && size % u64::SZ_1M == 0 {
            (size / u64::SZ_1M, "MiB")
        } else if size % u64::SZ_1K == 0 {
            (size / u64::SZ_1K, "KiB")
        } else {
            (size, "bytes")
        };
        f.write_fmt(fmt!(
            "{:#x}..{:#x} ({} {})",
            self.0.start,
            self.0.end,
            count,
            unit
        ))
    }
}

/// Smallest VRAM size accepted: below it the register value is garbage, not a GPU.
///
/// The firmware regions alone take 150 to 270 MiB, so a size between this and that fails as
/// "nothing usable" with the size named.
const MIN_FB_SIZE: u64 = 64 * u64::SZ_1M;

/// Largest VRAM size accepted (1 TiB): several times the largest GPU nova-mm supports (GB100
/// boards have 192 GiB). All-ones or PRI-error register values decode far above it.
const MAX_FB_SIZE: u64 = 1024 * u64::SZ_1G;

/// Default size of the VGA workspace at the end of VRAM (nova-core's `NV_PRAMIN_SIZE`).
const VGA_WORKSPACE_SIZE: u64 = u64::SZ_1M;

/// VGA workspace size when the reported base is below the default one (nova-core's
/// `VBIOS_WORKSPACE_SIZE`).
const VBIOS_WORKSPACE_SIZE: u64 = u64::SZ_128K;

/// Legacy VGA memory at the start of VRAM, which the VBIOS may still be scanning out
/// (nouveau `ramgp102.c`, `rsvd_head`).
const LEGACY_VGA_SIZE: u64 = 256 * u64::SZ_1K;

/// Budget for the GSP-RM ELF image (r570.144 `gsp-570.144.bin`, about 40 MiB for Turing and
/// GA100, about 75 MiB for GA102 and later), with headroom.
const GSP_ELF_BUDGET: u64 = 96 * u64::SZ_1M;

/// Size of `GspFwWprMeta`, at the start of WPR2 (Open RM asserts 256 bytes).
const WPR_META_SIZE: u64 = 256;

/// FRTS ends on a 128 KiB boundary below the VGA workspace.
const FRTS_ALIGN: Alignment = Alignment::new::<SZ_128K>();
/// The GSP boot image starts on a 4 KiB boundary.
const BOOT_ALIGN: Alignment = Alignment::new::<SZ_4K>();
/// The GSP-RM ELF image starts on a 64 KiB boundary.
const ELF_ALIGN: Alignment = Alignment::new::<SZ_64K>();
/// The WPR heap, its size and WPR2 are 1 MiB aligned (`GSP_HEAP_ALIGNMENT`).
const HEAP_ALIGN: Alignment = Alignment::new::<SZ_1M>();
/// FSP's FRTS offset from the end of VRAM is 2 MiB aligned when a PMU region is reserved.
const FSP_FRTS_ALIGN: Alignment = Alignment::new::<SZ_2M>();
/// Usable ranges are 2 MiB aligned, so that 2 MiB pages of them are physically aligned.
const USABLE_ALIGN: Alignment = Alignment::new::<SZ_2M>();

/// Region name: the VGA workspace at the end of VRAM.
const VGA_WORKSPACE: &str = "vga-workspace";
/// Region name: what FSP keeps free at the end of VRAM (Hopper, Blackwell).
const FSP_RESERVED: &str = "fsp-reserved";
/// Region name: the PMU reservation above FRTS (Blackwell).
const PMU_RESERVED: &str = "pmu-reserved";
/// Region name: FRTS, the firmware runtime security data.
const FRTS: &str = "frts";
/// Region name: the GSP boot loader (or GSP-FMC) budget.
const GSP_BOOT: &str = "gsp-boot";
/// Region name: the GSP-RM ELF image budget.
const GSP_ELF: &str = "gsp-elf";
/// Region name: the GSP-RM heap inside WPR2.
const WPR2_HEAP: &str = "wpr2-heap";
/// Region name: the start of WPR2, holding `GspFwWprMeta`.
const WPR2_META: &str = "wpr2-meta";
/// Region name: the GSP-RM heap just below WPR2.
const NON_WPR_HEAP: &str = "non-wpr-heap";
/// Region name: from a live WPR2's start up to the computed regions.
const WPR2_LIVE: &str = "wpr2-live";
/// Region name: the legacy VGA memory at the start of VRAM.
const VGA_LEGACY: &str = "vga-legacy";

/// The layout of video memory: what firmware reserves and what the driver may use.
///
/// # Invariants
///
/// - `fb` is `0..fb_size` with `MIN_FB_SIZE <= fb_size <= MAX_FB_SIZE`.
/// - `reserved` is sorted by start; its regions are non-empty, do not overlap and lie in `fb`.
/// - `usable` is non-empty; its ranges are non-empty, 2 MiB aligned, lie in `fb`, are sorted and
///   overlap no reserved region.
/// - If `wpr2` is `Some`, it is a non-empty range in `fb`, and no usable range reaches its start.
#[derive(Debug)]
pub(crate) struct FbLayout {
    /// All of VRAM: `0..fb_size`.
    pub(crate) fb: Range<u64>,
    /// Ranges that firmware owns or may own, sorted by start, non-overlapping.
    reserved: KVec<FbRegion>,
    /// Ranges the driver may allocate and touch.
    usable: KVec<Range<u64>>,
    /// The live WPR2 range: `Some` means firmware owns (part of) the GPU.
    pub(crate) wpr2: Option<Range<u64>>,
}

/// Why the firmware's parameters give no VRAM layout. The driver logs it against its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// The VRAM size firmware reports is outside 64 MiB..=1 TiB.
    FbSize(u64),
    /// The VRAM size leaves no room for the firmware regions.
    TooSmall(u64),
    /// The VGA workspace base lies outside VRAM.
    VgaWorkspace {
        /// The base firmware reports.
        base: u64,
        /// The VRAM size.
        fb_size: u64,
    },
    /// WPR2 is empty, inverted or outside VRAM.
    Wpr2 {
        /// WPR2 as firmware reports it.
        wpr2: Range<u64>,
        /// The VRAM size.
        fb_size: u64,
    },
    /// The firmware regions leave nothing usable.
    NothingUsable {
        /// The VRAM size.
        fb_size: u64,
        /// Where the usable range would end.
        usable_end: u64,
    },
    /// Any other error (`ENOMEM` for the region lists, `EINVAL` for an overflow).
    Other(Error),
}

impl From<Error> for LayoutError {
    fn from(e: Error) -> Self {
        LayoutError::Other(e)
    }
}

impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Self {
        match e {
            LayoutError::Other(e) => e,
            _ => EINVAL,
        }
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::FbSize(size) => f.write_fmt(fmt!(
                "VRAM size {:#x} ({} MiB) reported by firmware is not in 64 MiB..=1 TiB",
                size,
                size / u64::SZ_1M
            )),
            LayoutError::TooSmall(size) => f.write_fmt(fmt!(
                "VRAM size {:#x} ({} MiB) leaves no room for the firmware regions",
                size,
                size / u64::SZ_1M
            )),
            LayoutError::VgaWorkspace { base, fb_size } => f.write_fmt(fmt!(
                "VGA workspace base {:#x} is outside VRAM (size {:#x})",
                base,
                fb_size
            )),
            LayoutError::Wpr2 { wpr2, fb_size } => f.write_fmt(fmt!(
                "WPR2 {:#x}..{:#x} is empty, inverted or outside VRAM (size {:#x})",
                wpr2.start,
                wpr2.end,
                fb_size
            )),
            LayoutError::NothingUsable {
                fb_size,
                usable_end,
            } => f.write_fmt(fmt!(
                "layout of {:#x} bytes of VRAM leaves nothing usable below {:#x}",
                fb_size,
                usable_end
            )),
            LayoutError::Other(e) => f.write_fmt(fmt!("{:?}", e)),
        }
    }
}

/// Appends `name` at `range` to `regions`, unless the range is empty.
fn push_region(regions: &mut KVec<FbRegion>, name: &'static str, range: Range<u64>) -> Result {
    if range.start < range.end {
        regions.push(FbRegion { name, range }, GFP_KERNEL)?;
    }
    Ok(())
}

/// Returns the WPR heap size for `heap` and `fb_size` bytes of VRAM: the LIBOS carveout, the RM
/// boot heap, one client and 96 KiB per GiB of VRAM, clamped to the LIBOS limits (nova-core
/// `LibosParams::wpr_heap_size`, vGPU disabled).
fn wpr_heap_size(heap: &hal::WprHeapParams, fb_size: u64) -> Result<u64> {
    let per_gb = hal::WPR_HEAP_PER_GB
        .checked_mul(fb_size.div_ceil(u64::SZ_1G))
        .and_then(|s| s.align_up(HEAP_ALIGN))
        .ok_or(EINVAL)?;
    let client = hal::WPR_HEAP_CLIENT_ALLOC
        .align_up(HEAP_ALIGN)
        .ok_or(EINVAL)?;
    let size = heap
        .carveout
        .checked_add(heap.base_rm)
        .and_then(|s| s.checked_add(client))
        .and_then(|s| s.checked_add(per_gb))
        .ok_or(EINVAL)?;

    // Not `clamp()`: it panics on bad limits. Here the upper limit wins.
    Ok(size.max(heap.min).min(heap.max))
}

/// Returns the start of the VGA workspace, which ends at the end of VRAM (nova-core's rule).
///
/// Without a display engine or a valid register, the workspace is the last 1 MiB. A base below
/// that is not trusted, and the last 128 KiB are used instead.
fn vga_workspace_start(p: &FwParams) -> Result<u64, LayoutError> {
    let fb_end = p.fb_size;
    let default = fb_end.checked_sub(VGA_WORKSPACE_SIZE).ok_or(EINVAL)?;

    match p.vga_workspace {
        Some(addr) if p.display && addr >= fb_end => Err(LayoutError::VgaWorkspace {
            base: addr,
            fb_size: fb_end,
        }),
        Some(addr) if p.display && addr < default => {
            Ok(fb_end.checked_sub(VBIOS_WORKSPACE_SIZE).ok_or(EINVAL)?)
        }
        Some(addr) if p.display => Ok(addr),
        _ => Ok(default),
    }
}

/// Places the regions FSP keeps at the end of VRAM below the VGA workspace at `vga_start`, and
/// returns where FRTS ends.
///
/// FSP puts FRTS below its own reservation and, if any, the PMU's (Open RM
/// `kfspPrepareBootCommands_GH100`, nova-core `FspCotMessage::frts_vidmem_offset`).
fn push_fsp_regions(
    reserved: &mut KVec<FbRegion>,
    fsp: &hal::FspParams,
    fb_end: u64,
    vga_start: u64,
) -> Result<u64, LayoutError> {
    let too_small = || LayoutError::TooSmall(fb_end);
    let fsp_start = fb_end.checked_sub(fsp.end_reserved).ok_or_else(too_small)?;
    let frts_offset = if fsp.pmu_reserved == 0 {
        fsp.end_reserved
    } else {
        fsp.end_reserved
            .checked_add(fsp.pmu_reserved)
            .and_then(|o| o.align_up(FSP_FRTS_ALIGN))
            .ok_or_else(too_small)?
    };
    let frts_end = fb_end
        .checked_sub(frts_offset)
        .ok_or_else(too_small)?
        .min(vga_start.align_down(FRTS_ALIGN));
    let top = fsp_start.min(vga_start);

    push_region(reserved, FSP_RESERVED, top..vga_start)?;
    if fsp.pmu_reserved != 0 {
        push_region(reserved, PMU_RESERVED, frts_end..top)?;
    }
    Ok(frts_end)
}

/// Places FRTS below `frts_end`, then the GSP boot image, the GSP-RM ELF image, the WPR2 heap
/// and metadata, and the non-WPR heap, each below the previous one, and returns where the
/// non-WPR heap starts: the lowest firmware region.
fn push_gsp_regions(
    reserved: &mut KVec<FbRegion>,
    lp: &hal::LayoutParams,
    fb_end: u64,
    frts_end: u64,
) -> Result<u64, LayoutError> {
    let too_small = || LayoutError::TooSmall(fb_end);

    let frts_start = frts_end.checked_sub(lp.frts_size).ok_or_else(too_small)?;
    push_region(reserved, FRTS, frts_start..frts_end)?;

    let boot_start = frts_start
        .checked_sub(lp.boot_budget)
        .ok_or_else(too_small)?
        .align_down(BOOT_ALIGN);
    let boot_end = boot_start.checked_add(lp.boot_budget).ok_or(EINVAL)?;
    push_region(reserved, GSP_BOOT, boot_start..boot_end)?;

    let elf_start = boot_start
        .checked_sub(GSP_ELF_BUDGET)
        .ok_or_else(too_small)?
        .align_down(ELF_ALIGN);
    let elf_end = elf_start.checked_add(GSP_ELF_BUDGET).ok_or(EINVAL)?;
    push_region(reserved, GSP_ELF, elf_start..elf_end)?;

    let heap_size = wpr_heap_size(&lp.heap, fb_end)?;
    let heap_start = elf_start
        .checked_sub(heap_size)
        .ok_or_else(too_small)?
        .align_down(HEAP_ALIGN);
    push_region(
        reserved,
        WPR2_HEAP,
        heap_start..elf_start.align_down(HEAP_ALIGN),
    )?;

    let wpr2_start = heap_start
        .checked_sub(WPR_META_SIZE)
        .ok_or_else(too_small)?
        .align_down(HEAP_ALIGN);
    push_region(reserved, WPR2_META, wpr2_start..heap_start)?;

    let non_wpr_start = wpr2_start
        .checked_sub(lp.non_wpr_heap_size)
        .ok_or_else(too_small)?;
    push_region(reserved, NON_WPR_HEAP, non_wpr_start..wpr2_start)?;
    Ok(non_wpr_start)
}

/// Returns the usable VRAM: from above the legacy VGA memory up to the lowest firmware region
/// at `non_wpr_start` or, if lower, a live WPR2's start, aligned inwards.
///
/// Everything from the lowest firmware region up, or from a live WPR2 up, is firmware's.
fn usable_range(p: &FwParams, non_wpr_start: u64) -> Result<Range<u64>, LayoutError> {
    let fb_end = p.fb_size;
    let mut usable_end = non_wpr_start;
    if let Some(wpr2) = &p.wpr2 {
        if wpr2.start >= wpr2.end || wpr2.end > fb_end {
            return Err(LayoutError::Wpr2 {
                wpr2: wpr2.clone(),
                fb_size: fb_end,
            });
        }
        usable_end = usable_end.min(wpr2.start);
    }

    let usable_start = LEGACY_VGA_SIZE.align_up(USABLE_ALIGN).ok_or(EINVAL)?;
    let usable_end = usable_end.align_down(USABLE_ALIGN);
    if usable_end <= usable_start {
        return Err(LayoutError::NothingUsable {
            fb_size: fb_end,
            usable_end,
        });
    }
    Ok(usable_start..usable_end)
}

impl FbLayout {
    /// Lays out VRAM for `chipset` from the firmware parameters `p`.
    ///
    /// The regions firmware reserves are placed the way nova-core places them before booting
    /// GSP (see the module documentation); the GSP boot image and GSP-RM ELF image get fixed
    /// budgets (64 KiB boot loader, 1 MiB GSP-FMC on Hopper and Blackwell, 96 MiB ELF). The WPR
    /// heap follows nova-core's formula for `chipset` and the VRAM size. If firmware set WPR2,
    /// nothing from WPR2's start up is usable (and [`FbLayout::wpr2`] says so).
    ///
    /// # Errors
    ///
    /// A [`LayoutError`] naming the value if the VRAM size is outside 64 MiB..=1 TiB or too
    /// small for the firmware regions, the VGA workspace is outside VRAM, WPR2 is empty,
    /// inverted or outside VRAM, or the layout leaves no usable VRAM; `ENOMEM` if the region
    /// lists cannot be allocated. It converts to `EINVAL` (or that `ENOMEM`).
    pub(crate) fn from_fw_params(chipset: Chipset, p: &FwParams) -> Result<Self, LayoutError> {
        let fb_end = p.fb_size;

        if !(MIN_FB_SIZE..=MAX_FB_SIZE).contains(&fb_end) {
            return Err(LayoutError::FbSize(fb_end));
        }

        let lp = hal::fb_hal(chipset).layout();
        // Regions from the end of VRAM down; reversed at the end.
        let mut reserved = KVec::new();

        let vga_start = vga_workspace_start(p)?;
        push_region(&mut reserved, VGA_WORKSPACE, vga_start..fb_end)?;

        let frts_end = match &lp.fsp {
            None => vga_start.align_down(FRTS_ALIGN),
            Some(fsp) => push_fsp_regions(&mut reserved, fsp, fb_end, vga_start)?,
        };
        let non_wpr_start = push_gsp_regions(&mut reserved, lp, fb_end, frts_end)?;
        let usable = usable_range(p, non_wpr_start)?;

        if let Some(wpr2) = &p.wpr2 {
            push_region(&mut reserved, WPR2_LIVE, wpr2.start..non_wpr_start)?;
        }
        push_region(&mut reserved, VGA_LEGACY, 0..LEGACY_VGA_SIZE)?;
        reserved.reverse();

        let mut usable_list = KVec::new();
        usable_list.push(usable, GFP_KERNEL).map_err(Error::from)?;

        // INVARIANT: `fb_end` was range checked; each region was placed below the previous one
        // with checked arithmetic, so `reserved` is sorted, disjoint and in `fb`; the usable
        // range lies strictly between the legacy VGA memory and the lowest top region or WPR2
        // start, aligned inwards, and was checked to be non-empty; WPR2 was checked.
        Ok(Self {
            fb: 0..fb_end,
            reserved,
            usable: usable_list,
            wpr2: p.wpr2.clone(),
        })
    }

    /// Returns the ranges the driver may allocate and touch, sorted by start.
    pub(crate) fn usable(&self) -> &[Range<u64>] {
        &self.usable
    }

    /// Returns the ranges firmware owns or may own, sorted by start.
    pub(crate) fn reserved(&self) -> &[FbRegion] {
        &self.reserved
    }
}

impl fmt::Display for FbLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("fb: {}\nreserved:\n", Span(&self.fb)))?;
        for region in self.reserved.iter() {
            f.write_fmt(fmt!("  {}\n", region))?;
        }
        f.write_str("usable:\n")?;
        for range in self.usable.iter() {
            f.write_fmt(fmt!("  {}\n", Span(range)))?;
        }
        match &self.wpr2 {
            Some(wpr2) => f.write_fmt(fmt!(
                "wpr2: {} set: firmware owns part of the GPU\n",
                Span(wpr2)
            )),
            None => f.write_str("wpr2: not set\n"),
        }
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_fb)]
mod tests {
    use super::*;

    use kernel::str::CString;

    use crate::chip::Architecture;

    const MIB: u64 = u64::SZ_1M;
    const GIB: u64 = u64::SZ_1G;

    /// Firmware parameters of a chip with `fb_size` bytes of VRAM, no VGA workspace, no WPR2.
    fn params(fb_size: u64, display: bool) -> FwParams {
        FwParams {
            fb_size,
            display,
            vga_workspace: None,
            wpr2: None,
        }
    }

    /// Returns the region called `name`.
    fn region(l: &FbLayout, name: &str) -> Option<Range<u64>> {
        l.reserved()
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.range.clone())
    }

    /// Returns whether `x` is a multiple of `align`.
    fn aligned(x: u64, align: u64) -> bool {
        align != 0 && x % align == 0
    }

    /// Returns the usable range of `l` if there is exactly one.
    fn only_usable(l: &FbLayout) -> Option<Range<u64>> {
        match l.usable() {
            [range] => Some(range.clone()),
            _ => None,
        }
    }

    /// Returns the first invariant of `l` that does not hold, if any.
    fn violation(l: &FbLayout) -> Option<&'static str> {
        let fb = &l.fb;
        let mut prev_end = 0;
        for r in l.reserved() {
            if r.range.start >= r.range.end {
                return Some("empty reserved region");
            }
            if r.range.start < prev_end {
                return Some("reserved regions unsorted or overlapping");
            }
            if r.range.end > fb.end {
                return Some("reserved region outside fb");
            }
            prev_end = r.range.end;
        }
        if l.usable().is_empty() {
            return Some("nothing usable");
        }
        let mut prev_end = 0;
        for u in l.usable() {
            if u.start >= u.end || u.start < prev_end || u.end > fb.end {
                return Some("usable range empty, unsorted or outside fb");
            }
            if !aligned(u.start, 2 * MIB) || !aligned(u.end, 2 * MIB) {
                return Some("usable range not 2 MiB aligned");
            }
            if l.reserved()
                .iter()
                .any(|r| r.range.start < u.end && u.start < r.range.end)
            {
                return Some("usable range overlaps a reserved region");
            }
            if let Some(w) = &l.wpr2 {
                if u.end > w.start {
                    return Some("usable range reaches WPR2");
                }
            }
            prev_end = u.end;
        }
        // Nothing usable above the lowest firmware region at the top.
        let top = l
            .reserved()
            .iter()
            .filter(|r| r.name != VGA_LEGACY)
            .map(|r| r.range.start)
            .min()
            .unwrap_or(fb.end);
        if l.usable().iter().any(|u| u.end > top) {
            return Some("usable range above a firmware region");
        }
        None
    }

    /// Returns the first alignment rule of the nova-core layout that `l` breaks, if any.
    fn misalignment(l: &FbLayout) -> Option<&'static str> {
        let checks: [(&str, u64, bool); 5] = [
            (FRTS, 128 * 1024, true),
            (GSP_BOOT, 4096, false),
            (GSP_ELF, 64 * 1024, false),
            (WPR2_HEAP, MIB, true),
            (WPR2_META, MIB, true),
        ];
        for (name, align, both_ends) in checks {
            let Some(r) = region(l, name) else {
                continue;
            };
            if !aligned(r.start, align) || (both_ends && !aligned(r.end, align)) {
                return Some(name);
            }
        }
        None
    }

    /// A VRAM size typical of each chipset.
    fn typical_size(chipset: Chipset) -> u64 {
        match chipset {
            Chipset::TU117 | Chipset::GA107 | Chipset::AD107 => 4 * GIB,
            Chipset::GA100 => 40 * GIB,
            Chipset::GH100 => 80 * GIB,
            Chipset::GB100 | Chipset::GB102 => 192 * GIB,
            Chipset::GB202 => 32 * GIB,
            _ => 8 * GIB,
        }
    }

    #[test]
    fn every_chipset() -> Result {
        for &chipset in Chipset::ALL {
            for display in [false, true] {
                let l = FbLayout::from_fw_params(chipset, &params(typical_size(chipset), display))?;
                assert_eq!(violation(&l), None);
                assert_eq!(misalignment(&l), None);
                assert_eq!(l.usable().len(), 1);
                assert_eq!(l.usable()[0].start, 2 * MIB);
                assert_eq!(region(&l, VGA_LEGACY), Some(0..256 * 1024));
                assert!(l.wpr2.is_none());
                // Every family reserves these, in this order from the top down.
                for name in [VGA_WORKSPACE, GSP_BOOT, GSP_ELF, WPR2_HEAP, WPR2_META] {
                    assert!(region(&l, name).is_some());
                }
                assert_eq!(region(&l, FRTS).is_some(), chipset != Chipset::GA100);
                // The FSP families keep FSP's reservation above FRTS; Blackwell also the PMU's.
                let fsp = matches!(
                    chipset.arch(),
                    Architecture::Hopper
                        | Architecture::BlackwellGB10x
                        | Architecture::BlackwellGB20x
                );
                assert_eq!(region(&l, FSP_RESERVED).is_some(), fsp);
                assert_eq!(
                    region(&l, PMU_RESERVED).is_some(),
                    chipset >= Chipset::GB100
                );
                // The firmware regions take between 150 and 300 MiB at the top.
                let top = l.fb.end - l.usable()[0].end;
                assert!((150 * MIB..=300 * MIB).contains(&top));
            }
        }
        Ok(())
    }

    #[test]
    fn ga102_24g() -> Result {
        let l = FbLayout::from_fw_params(Chipset::GA102, &params(24 * GIB, true))?;
        let expected: &[(&str, Range<u64>)] = &[
            (VGA_LEGACY, 0..0x4_0000),
            (NON_WPR_HEAP, 0x5_f1a0_0000..0x5_f1b0_0000),
            (WPR2_META, 0x5_f1b0_0000..0x5_f1c0_0000),
            (WPR2_HEAP, 0x5_f1c0_0000..0x5_f9d0_0000),
            (GSP_ELF, 0x5_f9df_0000..0x5_ffdf_0000),
            (GSP_BOOT, 0x5_ffdf_0000..0x5_ffe0_0000),
            (FRTS, 0x5_ffe0_0000..0x5_fff0_0000),
            (VGA_WORKSPACE, 0x5_fff0_0000..0x6_0000_0000),
        ];
        assert_eq!(l.reserved().len(), expected.len());
        for (r, (name, range)) in l.reserved().iter().zip(expected) {
            assert_eq!(r.name, *name);
            assert_eq!(r.range, *range);
        }
        // 129 MiB of WPR heap: 22 + 8 + 96 + 3 (96 KiB x 24, rounded up).
        assert_eq!(only_usable(&l), Some(0x20_0000..0x5_f1a0_0000));
        Ok(())
    }

    #[test]
    fn gh100_80g() -> Result {
        let l = FbLayout::from_fw_params(Chipset::GH100, &params(80 * GIB, false))?;
        let expected: &[(&str, Range<u64>)] = &[
            (VGA_LEGACY, 0..0x4_0000),
            (NON_WPR_HEAP, 0x13_f0d0_0000..0x13_f0f0_0000),
            (WPR2_META, 0x13_f0f0_0000..0x13_f100_0000),
            (WPR2_HEAP, 0x13_f100_0000..0x13_f9c0_0000),
            (GSP_ELF, 0x13_f9c0_0000..0x13_ffc0_0000),
            (GSP_BOOT, 0x13_ffc0_0000..0x13_ffd0_0000),
            (FRTS, 0x13_ffd0_0000..0x13_ffe0_0000),
            (FSP_RESERVED, 0x13_ffe0_0000..0x13_fff0_0000),
            (VGA_WORKSPACE, 0x13_fff0_0000..0x14_0000_0000),
        ];
        assert_eq!(l.reserved().len(), expected.len());
        for (r, (name, range)) in l.reserved().iter().zip(expected) {
            assert_eq!(r.name, *name);
            assert_eq!(r.range, *range);
        }
        // 140 MiB of WPR heap: 22 + 14 + 96 + 8 (96 KiB x 80, rounded up). The non-WPR heap starts
        // 1 MiB above a 2 MiB boundary, so usable VRAM ends 1 MiB below it.
        assert_eq!(only_usable(&l), Some(0x20_0000..0x13_f0c0_0000));
        Ok(())
    }

    #[test]
    fn gb202_pmu() -> Result {
        let l = FbLayout::from_fw_params(Chipset::GB202, &params(32 * GIB, true))?;
        let end = 32 * GIB;
        // FRTS offset from the end: align_up(2 MiB + 128 KiB + 24 MiB + 128 KiB, 2 MiB) = 28 MiB.
        assert_eq!(region(&l, FRTS), Some(end - 29 * MIB..end - 28 * MIB));
        assert_eq!(
            region(&l, PMU_RESERVED),
            Some(end - 28 * MIB..end - 2 * MIB - 128 * 1024)
        );
        assert_eq!(
            region(&l, FSP_RESERVED),
            Some(end - 2 * MIB - 128 * 1024..end - MIB)
        );
        let non_wpr = region(&l, NON_WPR_HEAP).ok_or(EINVAL)?;
        assert_eq!(non_wpr.end - non_wpr.start, 2 * MIB + 128 * 1024);
        Ok(())
    }

    #[test]
    fn wpr_heap_formula() -> Result {
        // (chipset, VRAM, heap in MiB)
        let table: &[(Chipset, u64, u64)] = &[
            (Chipset::TU102, 8 * GIB, 8 + 96 + 1),
            (Chipset::GA100, 40 * GIB, 8 + 96 + 4),
            (Chipset::GA102, 24 * GIB, 22 + 8 + 96 + 3),
            (Chipset::AD102, 24 * GIB, 22 + 8 + 96 + 3),
            (Chipset::GH100, 80 * GIB, 22 + 14 + 96 + 8),
            (Chipset::GB100, 192 * GIB, 22 + 14 + 96 + 18),
            (Chipset::GB202, 1024 * GIB, 22 + 14 + 96 + 96),
            (Chipset::TU102, 1024 * GIB, 8 + 96 + 96),
        ];
        for &(chipset, fb, mib) in table {
            let heap = hal::fb_hal(chipset).layout().heap;
            assert_eq!(wpr_heap_size(&heap, fb), Ok(mib * MIB));
        }
        // The LIBOS limits clamp.
        let tiny = hal::WprHeapParams {
            carveout: 0,
            base_rm: 0,
            min: 200 * MIB,
            max: 300 * MIB,
        };
        assert_eq!(wpr_heap_size(&tiny, GIB), Ok(200 * MIB));
        let capped = hal::WprHeapParams {
            max: 100 * MIB,
            ..tiny
        };
        assert_eq!(wpr_heap_size(&capped, GIB), Ok(100 * MIB));
        Ok(())
    }

    #[test]
    fn small_vram() -> Result {
        for &chipset in Chipset::ALL {
            // Either a valid small layout or a clean error, never an underflow.
            for size in [256 * MIB, 320 * MIB, 512 * MIB] {
                match FbLayout::from_fw_params(chipset, &params(size, true)) {
                    Ok(l) => {
                        assert_eq!(violation(&l), None);
                        assert_eq!(misalignment(&l), None);
                    }
                    Err(e) => assert_eq!(Error::from(e), EINVAL),
                }
            }
            // 512 MiB always fits; 64 and 128 MiB never do.
            assert!(FbLayout::from_fw_params(chipset, &params(512 * MIB, true)).is_ok());
            for size in [64 * MIB, 128 * MIB, 150 * MIB] {
                assert_eq!(
                    FbLayout::from_fw_params(chipset, &params(size, true))
                        .err()
                        .map(Error::from),
                    Some(EINVAL)
                );
            }
        }
        // GA102 fits in 256 MiB; GB202 (28 MiB above FRTS) does not.
        assert!(FbLayout::from_fw_params(Chipset::GA102, &params(256 * MIB, true)).is_ok());
        assert!(FbLayout::from_fw_params(Chipset::GB202, &params(256 * MIB, true)).is_err());
        Ok(())
    }

    #[test]
    fn absurd_sizes() -> Result {
        for &chipset in Chipset::ALL {
            for size in [
                0,
                1,
                MIB,
                64 * MIB - 1,
                1024 * GIB + 1,
                u64::from(u32::MAX) * MIB,
                u64::MAX,
            ] {
                assert_eq!(
                    FbLayout::from_fw_params(chipset, &params(size, true))
                        .err()
                        .map(Error::from),
                    Some(EINVAL)
                );
            }
            // The largest accepted size lays out.
            let l = FbLayout::from_fw_params(chipset, &params(1024 * GIB, true))?;
            assert_eq!(violation(&l), None);
        }
        Ok(())
    }

    #[test]
    fn vga_workspace() -> Result {
        let fb = 8 * GIB;
        // (display, register, expected workspace)
        let table: &[(bool, Option<u64>, Range<u64>)] = &[
            // Invalid register: the last 1 MiB.
            (true, None, fb - MIB..fb),
            // Inside the last 1 MiB: used as is.
            (true, Some(fb - 512 * 1024), fb - 512 * 1024..fb),
            (true, Some(fb - MIB), fb - MIB..fb),
            (true, Some(fb - 64 * 1024), fb - 64 * 1024..fb),
            // Below the last 1 MiB: not trusted, the last 128 KiB.
            (true, Some(fb - MIB - 64 * 1024), fb - 128 * 1024..fb),
            (true, Some(0x1000_0000), fb - 128 * 1024..fb),
            (true, Some(0), fb - 128 * 1024..fb),
            // No display engine: the register is ignored.
            (false, Some(fb - 512 * 1024), fb - MIB..fb),
            (false, Some(fb + MIB), fb - MIB..fb),
        ];
        for (display, reg, expected) in table {
            let p = FwParams {
                vga_workspace: *reg,
                ..params(fb, *display)
            };
            let l = FbLayout::from_fw_params(Chipset::TU104, &p)?;
            assert_eq!(region(&l, VGA_WORKSPACE), Some(expected.clone()));
            // FRTS ends on the 128 KiB boundary at or below the workspace.
            let frts = region(&l, FRTS).ok_or(EINVAL)?;
            assert_eq!(frts.end, expected.start.align_down(FRTS_ALIGN));
            assert_eq!(violation(&l), None);
            assert_eq!(misalignment(&l), None);
        }
        // At or beyond the end of VRAM: an error.
        for addr in [fb, fb + MIB, u64::MAX] {
            let p = FwParams {
                vga_workspace: Some(addr),
                ..params(fb, true)
            };
            assert_eq!(
                FbLayout::from_fw_params(Chipset::GA102, &p)
                    .err()
                    .map(Error::from),
                Some(EINVAL)
            );
        }
        Ok(())
    }

    #[test]
    fn wpr2() -> Result {
        let fb = 24 * GIB;
        let base = FbLayout::from_fw_params(Chipset::GA102, &params(fb, true))?;
        let frts = region(&base, FRTS).ok_or(EINVAL)?;
        let non_wpr = region(&base, NON_WPR_HEAP).ok_or(EINVAL)?;

        // WPR2 where FWSEC-FRTS puts it (FRTS only): the usable range is unchanged.
        let p = FwParams {
            wpr2: Some(frts.clone()),
            ..params(fb, true)
        };
        let l = FbLayout::from_fw_params(Chipset::GA102, &p)?;
        assert_eq!(l.wpr2, Some(frts.clone()));
        assert_eq!(l.usable(), base.usable());
        assert_eq!(violation(&l), None);
        assert_eq!(region(&l, WPR2_LIVE), None);

        // WPR2 below the computed regions: usable VRAM stops below it.
        let low = 4 * GIB..4 * GIB + 256 * MIB;
        let p = FwParams {
            wpr2: Some(low.clone()),
            ..params(fb, true)
        };
        let l = FbLayout::from_fw_params(Chipset::GA102, &p)?;
        assert_eq!(only_usable(&l), Some(2 * MIB..4 * GIB));
        assert_eq!(region(&l, WPR2_LIVE), Some(4 * GIB..non_wpr.start));
        assert_eq!(violation(&l), None);

        // An unaligned WPR2 start: usable VRAM ends on the 2 MiB boundary below it.
        let p = FwParams {
            wpr2: Some(4 * GIB + 0x1000..4 * GIB + 2 * MIB),
            ..params(fb, true)
        };
        let l = FbLayout::from_fw_params(Chipset::GA102, &p)?;
        assert_eq!(only_usable(&l), Some(2 * MIB..4 * GIB));
        assert_eq!(violation(&l), None);

        // Inverted, empty, outside VRAM, or leaving nothing usable: errors.
        let bad: [Range<u64>; 5] = [
            frts.end..frts.start,
            frts.start..frts.start,
            fb - MIB..fb + MIB,
            fb + MIB..fb + 2 * MIB,
            MIB..2 * MIB,
        ];
        for wpr2 in bad {
            let p = FwParams {
                wpr2: Some(wpr2),
                ..params(fb, true)
            };
            assert_eq!(
                FbLayout::from_fw_params(Chipset::GA102, &p)
                    .err()
                    .map(Error::from),
                Some(EINVAL)
            );
        }
        Ok(())
    }

    #[test]
    fn display() -> Result {
        let p = FwParams {
            wpr2: Some(0x1_0000_0000..0x1_0010_0000),
            ..params(24 * GIB, true)
        };
        let l = FbLayout::from_fw_params(Chipset::GA102, &p)?;
        let s = CString::try_from_fmt(fmt!("{}", l))?;
        let s = s.to_str().map_err(|_| EINVAL)?;
        assert!(s.starts_with("fb: 0x0..0x600000000 (24 GiB)\n"));
        assert!(s.contains("\n  frts 0x5ffe00000..0x5fff00000 (1 MiB)\n"));
        assert!(s.contains("\n  gsp-boot 0x5ffdf0000..0x5ffe00000 (64 KiB)\n"));
        assert!(s.contains("\nusable:\n  0x200000..0x100000000 (4094 MiB)\n"));
        assert!(s.contains("wpr2: 0x100000000..0x100100000 (1 MiB) set"));
        Ok(())
    }
}
