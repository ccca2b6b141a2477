// SPDX-License-Identifier: MIT OR Apache-2.0

//! Hostile device mode (`--hostile <seed>`): the firmware-left registers are
//! drawn at random, anew at every device reset.
//!
//! The draws are a pure function of the seed and the EPOCH: the epoch starts
//! at 0 and advances by one on every device reset (vfio-user DEVICE_RESET).
//! The generator is SplitMix64 (Steele, Lea, Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014; the constants are those of
//! Java's `SplittableRandom`). Each epoch draws one [`Scenario`]: epochs are
//! dealt in blocks of [`DECK`]'s length from a shuffled deck holding every
//! scenario once and `benign` twice, so every scenario comes up in every
//! aligned block of 12 epochs, in a seed-dependent order.
//!
//! Registers (offsets and fields as in [`crate::fw`] and [`crate::chip`]):
//!
//! - FB size: `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` 0x100ce0 (TU102: scale 3:0,
//!   mag 9:4, ECC 30; size = mag << scale MiB) or `NV_USABLE_FB_SIZE_IN_MB`
//!   0x1183a4 (GA102 and later, MiB), as `/work/shared/HARDWARE.md` §2 gives
//!   them from nova-core's `fb/regs.rs` and `regs.rs`.
//! - `NV_PDISP_VGA_WORKSPACE_BASE` 0x625f04: addr 31:8 (base >> 16), status
//!   valid bit 3 (HARDWARE.md §2, nova-core `fb/regs.rs`).
//! - `NV_PFB_PRI_MMU_WPR2_ADDR_LO/HI` 0x1fa824/0x1fa828: 31:4 = address >> 12,
//!   HI = 0 means "not set" (HARDWARE.md §2). That HI holds the exclusive
//!   end is the model's reading (see [`crate::fw`]); because drivers may read
//!   it as the last page instead, the hostile reserved ranges add that page.
//! - `NV_PMC_BOOT_0` 0x0 and `NV_PMC_BOOT_42` 0xa00 (open-gpu-doc
//!   `turing/tu104/dev_master.ref.txt`, HARDWARE.md §1).
//! - GFW boot progress `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05(0)` 0x118234 7:0
//!   (0xff = done) and the FSP boot-done scratch (`NV_THERM_I2CS_SCRATCH`,
//!   0x0200bc / 0xad00bc) (HARDWARE.md §2, nova-core `regs.rs`).
//! - `NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS` 0xb80f50 BAR1_PENDING 0:0,
//!   BAR1_OUTSTANDING 1:1 (open-gpu-doc `ampere/ga102/dev_vm.ref.txt`); on
//!   Hopper and Blackwell PENDING 0 / OUTSTANDING 1 of `BAR1_BLOCK_LOW_ADDR`
//!   0xb80f60 (OGKM `hopper/gh100/dev_vm.h`, see [`crate::bar1`]).
//!
//! What the "real" VRAM is (the backing size, whose end the rule checker
//! enforces) and what is reserved, per scenario, is a model choice
//! (an inference about what a careful driver may assume):
//!
//! - when the FB size register is valid (every scenario but `fb-size`), the
//!   backing VRAM is the drawn size, so a driver that believes the register
//!   is never penalised for it;
//! - `fb-size`: the backing VRAM is the configured `--vram` size and all of
//!   it is reserved (`unsized_vram`): a driver that cannot know the size must
//!   touch no VRAM, and one that refuses touches nothing;
//! - when registers contradict each other (`vga-workspace`, `wpr2-*`), the
//!   reserved set is the union of every reading of them: the default
//!   VGA workspace and FRTS at the end of the drawn VRAM, plus what the
//!   garbage claims (clipped to VRAM), so a driver writing anything that
//!   could belong to firmware is flagged.

use std::fmt::Write as _;

use crate::chip::{Chip, FbSizeReg, CHIPS, UNKNOWN_ARCHITECTURE};
use crate::fw::{self, FwRegs, Region};
use crate::pramin::BASE_SHIFT;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4 * KIB;

/// Smallest drawn valid VRAM size.
pub const MIN_VRAM: u64 = 256 * MIB;
/// Largest drawn valid VRAM size.
pub const MAX_VRAM: u64 = 48 * GIB;
/// What a VGA workspace / WPR2 address field can express (40 bits).
const ADDR_LIMIT: u64 = 1 << 40;

/// SplitMix64: a 64-bit state advanced by a Weyl constant and mixed.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for
    /// the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        // CAST: the product's high half is below n.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.next_u64(),
        }
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 != 0
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        // CAST: slice lengths fit in u64, and the index is below the length.
        items[self.below(items.len() as u64) as usize]
    }
}

/// Independent generator streams of one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
enum Stream {
    Deck = 1,
    Draw = 2,
    Invalidate = 3,
}

/// The generator for `stream` at `index` (epoch or deck block) of `seed`.
fn stream(seed: u64, s: Stream, index: u64) -> SplitMix64 {
    let a = SplitMix64::new(seed).next_u64();
    let b = SplitMix64::new(index ^ ((s as u64) << 56)).next_u64();
    SplitMix64::new(a ^ b.rotate_left(17))
}

/// What the device pretends in one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// A valid random VRAM size, firmware regions laid out as without `--hostile`.
    Benign,
    /// A garbage FB size register.
    FbSize,
    /// A garbage `NV_PDISP_VGA_WORKSPACE_BASE`.
    VgaWorkspace,
    /// WPR2 LO above HI.
    Wpr2Inverted,
    /// WPR2 beyond the FB end.
    Wpr2Outside,
    /// WPR2 over the VGA workspace or the whole of VRAM.
    Wpr2Overlap,
    /// WPR2 LO == HI, nonzero.
    Wpr2Empty,
    /// BOOT_0 / BOOT_42 change between reads.
    BootFlapping,
    /// GFW boot progress / FSP boot-done flip between done and not done.
    GfwFlapping,
    /// Each TLB invalidate completes with probability 1/2, else never.
    InvalidateFlaky,
    /// The BAR1 bind never completes.
    Bar1BindHang,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 11] = [
        Scenario::Benign,
        Scenario::FbSize,
        Scenario::VgaWorkspace,
        Scenario::Wpr2Inverted,
        Scenario::Wpr2Outside,
        Scenario::Wpr2Overlap,
        Scenario::Wpr2Empty,
        Scenario::BootFlapping,
        Scenario::GfwFlapping,
        Scenario::InvalidateFlaky,
        Scenario::Bar1BindHang,
    ];

    /// The name in the report and the log.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Benign => "benign",
            Scenario::FbSize => "fb-size",
            Scenario::VgaWorkspace => "vga-workspace",
            Scenario::Wpr2Inverted => "wpr2-inverted",
            Scenario::Wpr2Outside => "wpr2-outside",
            Scenario::Wpr2Overlap => "wpr2-overlap",
            Scenario::Wpr2Empty => "wpr2-empty",
            Scenario::BootFlapping => "boot-flapping",
            Scenario::GfwFlapping => "gfw-flapping",
            Scenario::InvalidateFlaky => "invalidate-flaky",
            Scenario::Bar1BindHang => "bar1-bind-hang",
        }
    }
}

/// The deck an aligned block of epochs is dealt from (shuffled per block).
pub const DECK: [Scenario; 12] = [
    Scenario::Benign,
    Scenario::Benign,
    Scenario::FbSize,
    Scenario::VgaWorkspace,
    Scenario::Wpr2Inverted,
    Scenario::Wpr2Outside,
    Scenario::Wpr2Overlap,
    Scenario::Wpr2Empty,
    Scenario::BootFlapping,
    Scenario::GfwFlapping,
    Scenario::InvalidateFlaky,
    Scenario::Bar1BindHang,
];

/// The scenario of `epoch` under `seed`.
pub fn scenario(seed: u64, epoch: u64) -> Scenario {
    // CAST: the deck length is 12.
    let len = DECK.len() as u64;
    let mut rng = stream(seed, Stream::Deck, epoch / len);
    let mut deck = DECK;
    // Fisher-Yates.
    for i in (1..deck.len()).rev() {
        // CAST: i < 12.
        let j = rng.below(i as u64 + 1) as usize;
        deck.swap(i, j);
    }
    // CAST: below 12.
    deck[(epoch % len) as usize]
}

/// Registers that change between reads in a flapping scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flap {
    /// `NV_PMC_BOOT_0` / `NV_PMC_BOOT_42`: the real value on reads where the
    /// shared read count plus `phase` is even, these otherwise.
    Boot {
        /// Alternate BOOT_0.
        boot0: u32,
        /// Alternate BOOT_42.
        boot42: u32,
        /// 0 or 1: which read sees the alternate first.
        phase: u64,
    },
    /// GFW boot progress and FSP boot-done: done on reads where the shared
    /// read count plus `phase` is even, `not_done` otherwise.
    Gfw {
        /// The not-done value (7:0 below 0xff).
        not_done: u32,
        /// 0 or 1.
        phase: u64,
    },
}

/// One epoch's draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// Epoch number (0 at start, +1 per device reset).
    pub epoch: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// What was drawn, for the log and the report.
    pub detail: String,
    /// A correct driver must bind this device (only `benign`).
    pub must_bind: bool,
    /// Backing VRAM size: accesses at or beyond it are out of range.
    pub vram_size: u64,
    /// Firmware register values.
    pub regs: FwRegs,
    /// Firmware-reserved ranges.
    pub reserved: Vec<Region>,
    /// Flapping registers, if any.
    pub flap: Option<Flap>,
    /// TLB invalidates complete with probability 1/2 only.
    pub invalidate_flaky: bool,
    /// BAR1 binds never complete.
    pub bind_hang: bool,
}

/// A valid VRAM size for `chip`'s FB size register, in `MIN_VRAM..=MAX_VRAM`.
pub fn valid_size(rng: &mut SplitMix64, chip: &Chip) -> u64 {
    match chip.fb_size {
        FbSizeReg::LocalMemoryRange => loop {
            let mag = rng.range(1, 63);
            let scale = rng.range(0, 15);
            let size = (mag << scale) * MIB;
            if (MIN_VRAM..=MAX_VRAM).contains(&size) {
                return size;
            }
        },
        FbSizeReg::UsableFbSizeMb => rng.range(MIN_VRAM / MIB, MAX_VRAM / MIB) * MIB,
    }
}

fn page_in(rng: &mut SplitMix64, lo: u64, hi_excl: u64) -> u64 {
    rng.range(lo / PAGE, hi_excl / PAGE - 1) * PAGE
}

/// A garbage FB size register value for `chip` and what it is.
fn garbage_fb_size(rng: &mut SplitMix64, chip: &Chip) -> (u32, &'static str) {
    let valid = |rng: &mut SplitMix64| {
        let s = valid_size(rng, chip);
        fw::layout(chip, s, false).map_or(0, |(r, _)| r.fb_size)
    };
    match chip.fb_size {
        FbSizeReg::LocalMemoryRange => match rng.below(7) {
            0 => (0, "zero"),
            // mag << scale below 64 MiB.
            1 => {
                let scale = rng.range(0, 5);
                // CAST: below 64.
                let mag = rng.range(1, (63 >> scale).max(1)) as u32;
                // CAST: scale < 16.
                ((mag << 4) | scale as u32, "below-64M")
            }
            // Above 128 GiB: scale 15 is 32 GiB units, 12 is 4 GiB.
            2 => {
                let scale = rng.range(12, 15);
                let min_mag = ((128 * GIB / MIB) >> scale) + 1;
                // CAST: below 64; scale < 16.
                let mag = rng.range(min_mag.min(63), 63) as u32;
                ((mag << 4) | scale as u32, "above-128G")
            }
            3 => (0xffff_ffff, "all-ones"),
            4 => (crate::pri::PRI_ERROR_VALUE, "pri-error"),
            // A valid encoding with garbage in the reserved bits 29:10 / 31
            // (ECC 30 left as is: it is a real field).
            5 => {
                // CAST: the mask keeps 32 bits.
                let junk = (rng.next_u64() as u32) & 0xbfff_fc00;
                (valid(rng) | junk.max(1 << 10), "garbage-high-bits")
            }
            // MAG 0 with a nonzero SCALE: no size at all.
            _ => {
                // CAST: below 16.
                (rng.range(1, 15) as u32, "zero-mag")
            }
        },
        FbSizeReg::UsableFbSizeMb => match rng.below(6) {
            0 => (0, "zero"),
            // CAST: below 64.
            1 => (rng.range(1, 63) as u32, "below-64M"),
            // CAST: the range ends at u32::MAX - 1.
            2 => (rng.range(128 * 1024 + 1, 0xffff_fffe) as u32, "above-128G"),
            3 => (0xffff_ffff, "all-ones"),
            4 => (crate::pri::PRI_ERROR_VALUE, "pri-error"),
            _ => {
                // CAST: the mask keeps 32 bits.
                let junk = (rng.next_u64() as u32) & 0xfff0_0000;
                (valid(rng) | junk.max(1 << 20), "garbage-high-bits")
            }
        },
    }
}

/// The VGA workspace and FRTS that a workspace base of `vga_start` implies
/// (FRTS: 1 MiB ending at the base aligned down to 128 KiB), for VRAM of
/// `vram` bytes.
fn vga_and_frts(vga_start: u64, vram: u64) -> [Region; 2] {
    let frts_end = vga_start & !(128 * KIB - 1);
    [
        Region {
            name: "vga_workspace",
            start: vga_start,
            end: vram,
        },
        Region {
            name: "frts",
            start: frts_end.saturating_sub(MIB),
            end: frts_end,
        },
    ]
}

fn wpr2_region(start: u64, end: u64, vram: u64) -> Region {
    Region {
        name: "wpr2",
        start: start.min(vram),
        end: end.min(vram),
    }
}

/// Draws epoch `epoch` of `seed` for `chip`. `configured_vram` (`--vram`,
/// already validated) backs the `fb-size` scenario; `wpr2` (`--wpr2`) adds
/// the plausible WPR2 of the default layout where the scenario leaves WPR2
/// alone.
pub fn draw(seed: u64, epoch: u64, chip: &Chip, configured_vram: u64, wpr2: bool) -> Epoch {
    let scenario = scenario(seed, epoch);
    let mut rng = stream(seed, Stream::Draw, epoch);
    let size = valid_size(&mut rng, chip);
    let layout_wpr2 = wpr2 && !sets_wpr2(scenario);
    // `valid_size` only draws encodable sizes: the default is unreachable.
    let (mut regs, mut reserved) = fw::layout(chip, size, layout_wpr2).unwrap_or_default();
    let mut e = Epoch {
        epoch,
        scenario,
        detail: format!("vram={size:#x}"),
        must_bind: scenario == Scenario::Benign,
        vram_size: size,
        regs,
        reserved: Vec::new(),
        flap: None,
        invalidate_flaky: false,
        bind_hang: false,
    };
    let d = &mut e.detail;
    match scenario {
        Scenario::Benign => {}
        Scenario::FbSize => {
            let (v, what) = garbage_fb_size(&mut rng, chip);
            // The layout registers are those of the configured size; the
            // configured size is also the backing, and all of it is off
            // limits.
            if let Ok((r, _)) = fw::layout(chip, configured_vram, wpr2) {
                regs = r;
            }
            regs.fb_size = v;
            e.vram_size = configured_vram;
            reserved = vec![Region {
                name: "unsized_vram",
                start: 0,
                end: configured_vram,
            }];
            *d = format!("fb_size_reg={v:#010x} ({what}) backing={configured_vram:#x}");
        }
        Scenario::VgaWorkspace => {
            let default_base = size - MIB;
            let (reg, what) = match rng.below(5) {
                0 => (FwRegs::vga_valid(default_base) & !(1 << 3), "valid-clear"),
                1 => (FwRegs::vga_valid(size), "at-fb-end"),
                2 => {
                    let b = rng.range((size >> BASE_SHIFT) + 1, (ADDR_LIMIT >> BASE_SHIFT) - 1);
                    (FwRegs::vga_valid(b << BASE_SHIFT), "beyond-fb-end")
                }
                3 => (FwRegs::vga_valid(0), "zero"),
                _ => {
                    // Below 2 MiB: FRTS (1 MiB below the base, 128 KiB
                    // aligned) does not fit under it.
                    let b = rng.range(1, ((2 * MIB) >> BASE_SHIFT) - 1);
                    (FwRegs::vga_valid(b << BASE_SHIFT), "no-room-for-frts")
                }
            };
            regs.vga_workspace = reg;
            let base = u64::from(reg >> 8) << BASE_SHIFT;
            // Every reading: the default workspace, or the claimed base when it
            // lies inside VRAM at or above the default one. A base below the
            // default is not honoured: the workspace is then the last 128 KiB
            // (HARDWARE.md, VGA workspace row; nova-core `fb.rs`), which the
            // default workspace covers. Reserving from a low claimed base up
            // would flag a driver that follows that documented rule.
            let start = if base >= default_base && base < size {
                base
            } else if base < default_base {
                size - 128 * KIB
            } else {
                default_base
            };
            let [vga, frts] = vga_and_frts(start, size);
            let [dvga, dfrts] = vga_and_frts(default_base, size);
            reserved.retain(|r| r.name == "wpr2");
            reserved.splice(0..0, [vga, frts, dvga, dfrts]);
            let _ = write!(d, " vga_workspace_reg={reg:#010x} ({what})");
        }
        Scenario::Wpr2Inverted => {
            // HI below LO, both inside VRAM.
            let hi = page_in(&mut rng, MIB, size - 2 * MIB);
            let lo = page_in(&mut rng, hi + PAGE, size - MIB);
            regs.wpr2_lo = FwRegs::wpr2_field(lo);
            regs.wpr2_hi = FwRegs::wpr2_field(hi);
            // Swapped, with LO's page counted in (an inclusive reading).
            reserved.push(wpr2_region(hi, lo + PAGE, size));
            let _ = write!(d, " wpr2_lo={lo:#x} wpr2_hi={hi:#x}");
        }
        Scenario::Wpr2Outside => {
            let (lo, hi, what) = if rng.coin() {
                let lo = page_in(&mut rng, size, ADDR_LIMIT / 2);
                (
                    lo,
                    page_in(&mut rng, lo + PAGE, ADDR_LIMIT),
                    "beyond-fb-end",
                )
            } else {
                let lo = page_in(&mut rng, size / 2, size - MIB);
                (
                    lo,
                    page_in(&mut rng, size + PAGE, size + 4 * GIB),
                    "straddles-fb-end",
                )
            };
            regs.wpr2_lo = FwRegs::wpr2_field(lo);
            regs.wpr2_hi = FwRegs::wpr2_field(hi);
            reserved.push(wpr2_region(lo, hi + PAGE, size));
            let _ = write!(d, " wpr2_lo={lo:#x} wpr2_hi={hi:#x} ({what})");
        }
        Scenario::Wpr2Overlap => {
            let (lo, hi, what) = if rng.coin() {
                let lo = page_in(&mut rng, size / 2, size - 2 * MIB);
                (
                    lo,
                    page_in(&mut rng, size - MIB + PAGE, size + PAGE),
                    "vga-workspace",
                )
            } else {
                (0, size, "all-vram")
            };
            regs.wpr2_lo = FwRegs::wpr2_field(lo);
            regs.wpr2_hi = FwRegs::wpr2_field(hi);
            reserved.push(wpr2_region(lo, hi + PAGE, size));
            let _ = write!(d, " wpr2_lo={lo:#x} wpr2_hi={hi:#x} ({what})");
        }
        Scenario::Wpr2Empty => {
            let lo = page_in(&mut rng, PAGE, size);
            regs.wpr2_lo = FwRegs::wpr2_field(lo);
            regs.wpr2_hi = regs.wpr2_lo;
            reserved.push(wpr2_region(lo, lo + PAGE, size));
            let _ = write!(d, " wpr2_lo=wpr2_hi={lo:#x}");
        }
        Scenario::BootFlapping => {
            let (boot0, boot42, what) = match rng.below(4) {
                0 => {
                    let others: Vec<&Chip> = CHIPS.iter().filter(|c| c.name != chip.name).collect();
                    let o = rng.pick(&others);
                    (o.boot0(), o.boot42(), o.name)
                }
                1 => (
                    chip.boot0_for(UNKNOWN_ARCHITECTURE),
                    chip.boot42_for(UNKNOWN_ARCHITECTURE),
                    "unknown-arch",
                ),
                2 => (0xffff_ffff, 0xffff_ffff, "all-ones"),
                _ => {
                    // CAST: deliberate truncation to 32-bit garbage.
                    let g = rng.next_u64();
                    (g as u32, (g >> 32) as u32, "garbage")
                }
            };
            let phase = u64::from(rng.coin());
            e.flap = Some(Flap::Boot {
                boot0,
                boot42,
                phase,
            });
            let _ = write!(
                d,
                " alternate boot0={boot0:#010x} boot42={boot42:#010x} ({what}) first={}",
                if phase == 1 { "alternate" } else { "real" }
            );
        }
        Scenario::GfwFlapping => {
            // CAST: below 0xff.
            let not_done = rng.range(0, 0xfe) as u32;
            let phase = u64::from(rng.coin());
            e.flap = Some(Flap::Gfw { not_done, phase });
            let _ = write!(
                d,
                " not_done={not_done:#04x} first={}",
                if phase == 1 { "not-done" } else { "done" }
            );
        }
        Scenario::InvalidateFlaky => e.invalidate_flaky = true,
        Scenario::Bar1BindHang => e.bind_hang = true,
    }
    e.regs = regs;
    reserved.retain(|r| r.start < r.end);
    e.reserved = reserved;
    e
}

/// Whether `s` sets WPR2 itself.
fn sets_wpr2(s: Scenario) -> bool {
    matches!(
        s,
        Scenario::Wpr2Inverted
            | Scenario::Wpr2Outside
            | Scenario::Wpr2Overlap
            | Scenario::Wpr2Empty
    )
}

/// An epoch as served, for the report.
#[derive(Clone, Debug)]
pub struct Served {
    /// The draw.
    pub epoch: Epoch,
    /// Violations counted before the epoch began.
    pub violations_before: u64,
    /// Violations counted when it ended (`None` while it is current).
    pub violations_after: Option<u64>,
    /// BAR accesses before the epoch began.
    pub accesses_before: u64,
    /// BAR accesses when it ended (`None` while it is current).
    pub accesses_after: Option<u64>,
}

/// The hostile mode's running state.
#[derive(Clone, Debug)]
pub struct Hostile {
    /// The seed.
    pub seed: u64,
    /// Every epoch served so far; the last is the current one.
    pub served: Vec<Served>,
    /// Reads of the flapping registers this epoch.
    pub flap_reads: u64,
    /// The invalidate coin of this epoch.
    pub invalidate_rng: SplitMix64,
}

impl Hostile {
    /// The state before epoch 0 is drawn.
    pub fn new(seed: u64) -> Self {
        Hostile {
            seed,
            served: Vec::new(),
            flap_reads: 0,
            invalidate_rng: SplitMix64::new(0),
        }
    }

    /// Starts `e` (violations and BAR accesses so far: `violations`,
    /// `accesses`); logs it on stderr.
    pub fn begin(&mut self, e: Epoch, violations: u64, accesses: u64) {
        if let Some(last) = self.served.last_mut() {
            last.violations_after = Some(violations);
            last.accesses_after = Some(accesses);
        }
        eprintln!(
            "gpu-model: hostile epoch {}: {} {}",
            e.epoch,
            e.scenario.name(),
            e.detail
        );
        self.flap_reads = 0;
        self.invalidate_rng = stream(self.seed, Stream::Invalidate, e.epoch);
        self.served.push(Served {
            epoch: e,
            violations_before: violations,
            violations_after: None,
            accesses_before: accesses,
            accesses_after: None,
        });
    }

    /// The current epoch.
    pub fn current(&self) -> Option<&Epoch> {
        self.served.last().map(|s| &s.epoch)
    }

    /// The next epoch number.
    pub fn next_epoch(&self) -> u64 {
        self.served.last().map_or(0, |s| s.epoch.epoch + 1)
    }

    /// Whether the next triggered invalidate hangs (`invalidate-flaky`).
    pub fn invalidate_hangs(&mut self) -> bool {
        self.current().is_some_and(|e| e.invalidate_flaky) && self.invalidate_rng.coin()
    }

    /// A read of a flapping register: whether this read sees the alternate
    /// (boot) / not-done (GFW) value.
    pub fn flap_read(&mut self, phase: u64) -> bool {
        let alt = (self.flap_reads + phase) % 2 == 1;
        self.flap_reads += 1;
        alt
    }

    /// The report's `hostile` object; `violations` and `accesses` are the
    /// current totals. Each epoch lists its BAR accesses: QEMU resets every
    /// device once when the machine starts, before the guest runs, so epoch 0
    /// normally has none (the guest's first boot sees epoch 1).
    pub fn report(&self, violations: u64, accesses: u64) -> serde_json::Value {
        let epochs: Vec<serde_json::Value> = self
            .served
            .iter()
            .map(|s| {
                let e = &s.epoch;
                let after = s.violations_after.unwrap_or(violations);
                let acc = s.accesses_after.unwrap_or(accesses);
                serde_json::json!({
                    "epoch": e.epoch,
                    "scenario": e.scenario.name(),
                    "detail": e.detail,
                    "must_bind": e.must_bind,
                    "vram_bytes": e.vram_size,
                    "reserved": e.reserved.iter()
                        .map(|r| serde_json::json!({"name": r.name, "start": r.start, "end": r.end}))
                        .collect::<Vec<_>>(),
                    "violations": after.saturating_sub(s.violations_before),
                    "accesses": acc.saturating_sub(s.accesses_before),
                })
            })
            .collect();
        serde_json::json!({"seed": self.seed, "epochs": epochs})
    }
}

#[cfg(test)]
mod tests;
