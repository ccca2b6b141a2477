// SPDX-License-Identifier: MIT OR Apache-2.0

//! Firmware-left state: what devinit/FWSEC leave in registers and VRAM.
//!
//! The model answers the registers a driver reads before GSP boots and knows
//! which top-of-VRAM ranges the firmware owns:
//!
//! - the VGA workspace, `[fb_end - 1 MiB, fb_end)`, announced valid in
//!   `NV_PDISP_VGA_WORKSPACE_BASE` 0x625f04 (addr 31:8 = base >> 16, status
//!   valid bit 3);
//! - the FRTS region, 1 MiB ending at the VGA workspace start aligned down to
//!   128 KiB (nova-core `fb.rs`), i.e. `[fb_end - 2 MiB, fb_end - 1 MiB)`;
//! - `NV_FUSE_STATUS_OPT_DISPLAY` (0x021c04 on Turing, 0x820c04 later):
//!   DISPLAY_DISABLED 0:0 is 1 on GH100 (no display engine), 0 elsewhere;
//! - with `--wpr2`, WPR2 as reported by `NV_PFB_PRI_MMU_WPR2_ADDR_LO/HI`
//!   0x1fa824/0x1fa828 (31:4 = address >> 12). The model sets HI to the last
//!   4 KiB page inside the region (inclusive bound: an inference).
//!
//! Anything else the driver may keep free (GSP heap, bootloader, ...) is not
//! reserved here: the reserved set is deliberately narrow.

use crate::chip::{Chip, FbSizeReg};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` (Turing, GA100; no published header at this offset:
/// open-gpu-doc `turing/tu104/dev_fb.ref.txt`).
pub const LOCAL_MEMORY_RANGE: u32 = 0x0010_0ce0;
/// `NV_USABLE_FB_SIZE_IN_MB` (`ampere/ga102/dev_gc6_island_addendum.h`), i.e.
/// `NV_PGC6_AON_SECURE_SCRATCH_GROUP_42`.
pub const USABLE_FB_SIZE_IN_MB: u32 = 0x0011_83a4;
/// `NV_PDISP_VGA_WORKSPACE_BASE` (no published header: nova-core `fb/regs.rs`).
pub const VGA_WORKSPACE_BASE: u32 = 0x0062_5f04;
/// `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_PRIV_LEVEL_MASK` (`ampere/ga102/dev_gc6_island.h`).
pub const GFW_PRIV_LEVEL_MASK: u32 = 0x0011_8128;
/// `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_0_GFW_BOOT` (`ampere/ga102/dev_gc6_island_addendum.h`),
/// GROUP_05(0): GFW boot progress 7:0.
pub const GFW_BOOT_PROGRESS: u32 = 0x0011_8234;
/// `NV_PFB_PRI_MMU_WPR2_ADDR_LO` (`hopper/gh100/dev_fb.h`).
pub const WPR2_ADDR_LO: u32 = 0x001f_a824;
/// `NV_PFB_PRI_MMU_WPR2_ADDR_HI` (`hopper/gh100/dev_fb.h`).
pub const WPR2_ADDR_HI: u32 = 0x001f_a828;
/// `NV_HUBMMU_PRI_MMU_WPR2_ADDR_LO` (0xa824, `blackwell/gb100/dev_hubmmu_base.h`) at
/// `NV_HUBMMU0_PRI_BASE` 0x880000 (hwproject.h): where RM r595 reads WPR2 on Blackwell
/// (`kgspIsWpr2Up_GB100`).
pub const HUBMMU_WPR2_ADDR_LO: u32 = 0x0088_a824;
/// `NV_HUBMMU_PRI_MMU_WPR2_ADDR_HI` (0xa828, `blackwell/gb100/dev_hubmmu_base.h`,
/// at `NV_HUBMMU0_PRI_BASE` 0x880000).
pub const HUBMMU_WPR2_ADDR_HI: u32 = 0x0088_a828;

/// Value of the GFW priv level mask: read allowed at every level (3:0),
/// writes only at levels 2 and 3 (7:4). Bit 0 is what drivers check; the
/// other bits are an inference.
pub const GFW_PRIV_LEVEL_MASK_VALUE: u32 = 0x0000_00cf;
/// GFW boot progress "completed".
pub const GFW_BOOT_COMPLETED: u32 = 0x0000_00ff;
/// FSP boot-done scratch value.
pub const FSP_BOOT_DONE: u32 = 0x0000_00ff;

/// A firmware-owned VRAM range `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name used in violations (`vga_workspace`, `frts`, `wpr2`).
    pub name: &'static str,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Region {
    /// Whether `[addr, addr + len)` overlaps the region.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        addr < self.end && end > self.start
    }
}

/// Why a VRAM size cannot be modelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwError {
    /// Not a multiple of 1 MiB, or too small for the firmware regions.
    #[error("VRAM size {0:#x} must be a multiple of 1 MiB and at least 64 MiB")]
    BadSize(u64),
    /// Too large for the size register or the page-table address fields.
    #[error("VRAM size {0:#x} is too large (at most 128 GiB)")]
    TooLarge(u64),
    /// `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` cannot express the size.
    #[error("VRAM size {0:#x} cannot be encoded as mag << scale MiB (mag < 64, scale < 16)")]
    NotEncodable(u64),
}

/// Raw values of the firmware-left layout registers, as a driver reads them.
///
/// [`FwState::new`] derives them from a consistent layout; the hostile mode
/// ([`crate::hostile`]) draws them at random.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwRegs {
    /// The chip's FB size register: `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` (mag 9:4,
    /// scale 3:0) or `NV_USABLE_FB_SIZE_IN_MB` (MiB), per [`Chip::fb_size`].
    pub fb_size: u32,
    /// `NV_PDISP_VGA_WORKSPACE_BASE` (addr 31:8 = base >> 16, status valid 3).
    pub vga_workspace: u32,
    /// `NV_PFB_PRI_MMU_WPR2_ADDR_LO` (31:4 = address >> 12).
    pub wpr2_lo: u32,
    /// `NV_PFB_PRI_MMU_WPR2_ADDR_HI` (31:4 = exclusive end >> 12).
    pub wpr2_hi: u32,
}

impl FwRegs {
    /// `NV_PDISP_VGA_WORKSPACE_BASE` announcing a valid workspace at `base`.
    pub fn vga_valid(base: u64) -> u32 {
        // CAST: the 24-bit field holds base >> 16; callers pass bases below 2^40.
        ((((base >> 16) & 0x00ff_ffff) as u32) << 8) | (1 << 3)
    }

    /// A WPR2 LO/HI field value for `addr` (31:4 = addr >> 12).
    pub fn wpr2_field(addr: u64) -> u32 {
        // CAST: the 28-bit field holds addr >> 12; callers pass addresses below 2^40.
        (((addr >> 12) & 0x0fff_ffff) as u32) << 4
    }
}

/// Firmware-left registers and reserved ranges.
#[derive(Clone, Debug)]
pub struct FwState {
    fb_size_reg: FbSizeReg,
    fsp_scratch: Option<u32>,
    display_fuse: u32,
    display: bool,
    regs: FwRegs,
    reserved: Vec<Region>,
    boot_incomplete: bool,
    /// Blackwell: WPR2 is in the HUBMMU; the legacy offsets are not decoded (a PRI error).
    /// Which of the two decodes on GB20x is not public; the model takes r595's.
    hubmmu_wpr2: bool,
}

/// Encodes a size in MiB as `(mag, scale)` with `size = mag << scale`,
/// choosing the largest scale.
pub fn encode_local_memory_range(size_mib: u64) -> Option<(u32, u32)> {
    // Prefer the smallest magnitude (largest scale).
    for scale in (0u32..16).rev() {
        let mag = size_mib >> scale;
        if mag << scale == size_mib && mag < 64 {
            // CAST: mag < 64.
            return Some((mag as u32, scale));
        }
    }
    None
}

/// The consistent layout of [`FwState::new`]: register values and reserved
/// ranges (VGA workspace, FRTS, and WPR2 when `wpr2`).
///
/// # Errors
///
/// [`FwError`] when the size cannot be modelled or encoded.
pub fn layout(chip: &Chip, vram_size: u64, wpr2: bool) -> Result<(FwRegs, Vec<Region>), FwError> {
    if vram_size % MIB != 0 || vram_size < 64 * MIB {
        return Err(FwError::BadSize(vram_size));
    }
    if vram_size > (128 << 30) {
        return Err(FwError::TooLarge(vram_size));
    }
    let fb_size = match chip.fb_size {
        FbSizeReg::LocalMemoryRange => {
            let (mag, scale) = encode_local_memory_range(vram_size / MIB)
                .ok_or(FwError::NotEncodable(vram_size))?;
            (mag << 4) | scale
        }
        // CAST: at most 128 GiB, i.e. 131072 MiB.
        FbSizeReg::UsableFbSizeMb => (vram_size / MIB) as u32,
    };
    let vga_start = vram_size - MIB;
    let vga = Region {
        name: "vga_workspace",
        start: vga_start,
        end: vram_size,
    };
    let frts_end = vga_start & !(128 * KIB - 1);
    let frts = Region {
        name: "frts",
        start: frts_end - MIB,
        end: frts_end,
    };
    let mut regs = FwRegs {
        fb_size,
        vga_workspace: FwRegs::vga_valid(vga_start),
        wpr2_lo: 0,
        wpr2_hi: 0,
    };
    let mut reserved = vec![vga, frts];
    if wpr2 {
        // A plausible WPR2: FRTS, GSP bootloader, ELF and heap below it,
        // 1 MiB aligned. The size is invented (an eighth of VRAM, at most
        // 256 MiB).
        let size = (vram_size / 8).min(256 * MIB) & !(MIB - 1);
        let w = Region {
            name: "wpr2",
            start: frts_end - size,
            end: frts_end,
        };
        regs.wpr2_lo = FwRegs::wpr2_field(w.start);
        regs.wpr2_hi = FwRegs::wpr2_field(w.end);
        reserved.push(w);
    }
    Ok((regs, reserved))
}

impl FwState {
    /// Lays out the firmware state for `chip` with `vram_size` bytes of VRAM.
    ///
    /// # Errors
    ///
    /// [`FwError`] when the size cannot be modelled or encoded.
    pub fn new(chip: &Chip, vram_size: u64, wpr2: bool) -> Result<Self, FwError> {
        let (regs, reserved) = layout(chip, vram_size, wpr2)?;
        Ok(FwState::with_layout(chip, regs, reserved))
    }

    /// Firmware state with explicit register values and reserved ranges
    /// (which need not agree with each other). Empty ranges are dropped;
    /// [`FwState::reserved_hit`] reports the first matching range in order.
    pub fn with_layout(chip: &Chip, regs: FwRegs, mut reserved: Vec<Region>) -> Self {
        reserved.retain(|r| r.start < r.end);
        FwState {
            fb_size_reg: chip.fb_size,
            fsp_scratch: chip.fsp_scratch,
            display_fuse: chip.display_fuse,
            display: chip.display,
            regs,
            reserved,
            boot_incomplete: false,
            hubmmu_wpr2: chip.architecture >= 0x1a,
        }
    }

    /// The register values.
    pub fn regs(&self) -> FwRegs {
        self.regs
    }

    /// Models firmware that never finished booting: the GFW boot progress and the FSP
    /// boot-complete scratch never report completion.
    pub fn set_boot_incomplete(&mut self, incomplete: bool) {
        self.boot_incomplete = incomplete;
    }

    /// The firmware-reserved ranges.
    pub fn reserved(&self) -> Vec<Region> {
        self.reserved.clone()
    }

    /// The first reserved range that `[addr, addr + len)` touches (the VGA
    /// workspace and FRTS come before WPR2, which contains FRTS: the
    /// narrower name is reported).
    pub fn reserved_hit(&self, addr: u64, len: u64) -> Option<Region> {
        self.reserved
            .iter()
            .find(|r| r.overlaps(addr, len))
            .cloned()
    }

    /// The WPR2 range, if one is reserved.
    pub fn wpr2(&self) -> Option<&Region> {
        self.reserved.iter().find(|r| r.name == "wpr2")
    }

    /// The value of a firmware register, or `None` if `offset` is not one.
    pub fn read(&self, offset: u32) -> Option<u32> {
        match offset {
            LOCAL_MEMORY_RANGE if self.fb_size_reg == FbSizeReg::LocalMemoryRange => {
                Some(self.regs.fb_size)
            }
            USABLE_FB_SIZE_IN_MB if self.fb_size_reg == FbSizeReg::UsableFbSizeMb => {
                Some(self.regs.fb_size)
            }
            VGA_WORKSPACE_BASE => Some(self.regs.vga_workspace),
            GFW_PRIV_LEVEL_MASK => Some(GFW_PRIV_LEVEL_MASK_VALUE),
            GFW_BOOT_PROGRESS => Some(if self.boot_incomplete {
                0
            } else {
                GFW_BOOT_COMPLETED
            }),
            WPR2_ADDR_LO | WPR2_ADDR_HI if self.hubmmu_wpr2 => None,
            HUBMMU_WPR2_ADDR_LO if self.hubmmu_wpr2 => Some(self.regs.wpr2_lo),
            HUBMMU_WPR2_ADDR_HI if self.hubmmu_wpr2 => Some(self.regs.wpr2_hi),
            WPR2_ADDR_LO => Some(self.regs.wpr2_lo),
            // HI holds the exclusive end >> 12, as NVIDIA's open-gpu-kernel-modules reads the
            // WPR ADDR_HI registers (`end = VAL << ALIGNMENT`, range `start..=end - 1`) and
            // nova-core does (`higher (exclusive) bound`).
            WPR2_ADDR_HI => Some(self.regs.wpr2_hi),
            o if Some(o) == self.fsp_scratch => Some(if self.boot_incomplete {
                0
            } else {
                FSP_BOOT_DONE
            }),
            // DISPLAY_DISABLED 0:0.
            o if o == self.display_fuse => Some(u32::from(!self.display)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chip::CHIPS;

    fn chip(n: &str) -> &'static Chip {
        Chip::by_name(n).unwrap()
    }

    #[test]
    fn fb_size_registers_per_chip() {
        for c in &CHIPS {
            let fw = FwState::new(c, c.default_vram, false).unwrap();
            let mib = c.default_vram >> 20;
            match c.fb_size {
                FbSizeReg::LocalMemoryRange => {
                    let v = fw.read(LOCAL_MEMORY_RANGE).unwrap();
                    let (scale, mag) = (v & 0xf, (v >> 4) & 0x3f);
                    assert_eq!(u64::from(mag) << scale, mib, "{}", c.name);
                    assert_eq!(v & (1 << 30), 0);
                    assert_eq!(fw.read(USABLE_FB_SIZE_IN_MB), None);
                }
                FbSizeReg::UsableFbSizeMb => {
                    assert_eq!(fw.read(USABLE_FB_SIZE_IN_MB), Some(mib as u32));
                    assert_eq!(fw.read(LOCAL_MEMORY_RANGE), None);
                }
            }
            assert_eq!(fw.read(GFW_PRIV_LEVEL_MASK).unwrap() & 1, 1);
            assert_eq!(fw.read(GFW_BOOT_PROGRESS).unwrap() & 0xff, 0xff);
            if c.architecture >= 0x1a {
                assert_eq!(fw.read(HUBMMU_WPR2_ADDR_HI), Some(0));
                assert_eq!(fw.read(WPR2_ADDR_HI), None);
            } else {
                assert_eq!(fw.read(WPR2_ADDR_HI), Some(0));
            }
            if let Some(f) = c.fsp_scratch {
                assert_eq!(fw.read(f), Some(0xff));
            }
            assert_eq!(fw.read(c.display_fuse), Some(u32::from(c.name == "gh100")));
        }
        assert_eq!(
            FwState::new(chip("tu102"), 11 << 30, false)
                .unwrap()
                .read(LOCAL_MEMORY_RANGE),
            Some((11 << 4) | 10)
        );
        assert_eq!(
            FwState::new(chip("gh100"), 80 << 30, false)
                .unwrap()
                .read(0x200bc),
            Some(0xff)
        );
        assert_eq!(
            FwState::new(chip("gb202"), 32 << 30, false)
                .unwrap()
                .read(0xad00bc),
            Some(0xff)
        );
    }

    #[test]
    fn vga_workspace_and_reserved_ranges() {
        let fw = FwState::new(chip("ga102"), 24 << 30, false).unwrap();
        let v = fw.read(VGA_WORKSPACE_BASE).unwrap();
        assert_eq!(v & 0x8, 0x8);
        let base = u64::from(v >> 8) << 16;
        assert_eq!(base, (24 << 30) - MIB);
        let r = fw.reserved();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].start, (24 << 30) - 2 * MIB);
        assert_eq!(r[1].end, (24 << 30) - MIB);
        assert!(fw.reserved_hit((24 << 30) - 2 * MIB - 4, 4).is_none());
        assert_eq!(
            fw.reserved_hit((24 << 30) - 2 * MIB - 2, 4).unwrap().name,
            "frts"
        );
        assert_eq!(
            fw.reserved_hit((24 << 30) - 8, 8).unwrap().name,
            "vga_workspace"
        );
    }

    #[test]
    fn boot_incomplete() {
        for name in ["tu102", "ga102", "gh100", "gb202"] {
            let c = chip(name);
            let mut fw = FwState::new(c, c.default_vram, false).unwrap();
            fw.set_boot_incomplete(true);
            if let Some(scratch) = c.fsp_scratch {
                assert_eq!(fw.read(scratch), Some(0), "{name}");
            }
            assert_eq!(fw.read(GFW_BOOT_PROGRESS).unwrap() & 0xff, 0, "{name}");
        }
    }

    #[test]
    fn wpr2_registers() {
        let fw = FwState::new(chip("ga102"), 1 << 30, true).unwrap();
        let lo = u64::from(fw.read(WPR2_ADDR_LO).unwrap() >> 4) << 12;
        let hi = u64::from(fw.read(WPR2_ADDR_HI).unwrap() >> 4) << 12;
        assert_eq!(lo, (1 << 30) - MIB - 128 * MIB);
        assert_eq!(hi, (1 << 30) - MIB);
        // The region ends (exclusively) at HI, where the VGA workspace begins; its last
        // bytes hold FRTS (reported by its narrower name).
        assert_eq!(fw.reserved_hit(hi - 4, 4).unwrap().name, "frts");
        assert_eq!(fw.reserved_hit(hi, 4).unwrap().name, "vga_workspace");
        assert_eq!(fw.reserved_hit(lo, 4).unwrap().name, "wpr2");
        assert!(fw.reserved_hit(lo - 4, 4).is_none());
    }

    #[test]
    fn bad_sizes() {
        let c = chip("ga102");
        assert!(FwState::new(c, (1 << 30) + 4096, false).is_err());
        assert!(FwState::new(c, 16 << 20, false).is_err());
        assert!(FwState::new(c, 256 << 30, false).is_err());
        // 65 MiB is prime-ish: not encodable as mag << scale with mag < 64.
        assert_eq!(
            FwState::new(chip("tu102"), 65 << 20, false).unwrap_err(),
            FwError::NotEncodable(65 << 20)
        );
    }
}
