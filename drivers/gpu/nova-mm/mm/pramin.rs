// SPDX-License-Identifier: GPL-2.0

//! PRAMIN: the 1 MiB window of BAR0 (at offset `0x700000`) onto video memory.
//!
//! Where the window points is set by a per-chip register: `NV_PBUS_BAR0_WINDOW` (`0x1700`, BASE
//! 23:0 in 64 KiB units, TARGET 25:24) on Turing, Ampere and Ada, `NV_XAL_EP_BAR0_WINDOW`
//! (`0x10fd40`, BASE 21:0 on Hopper, 22:0 on Blackwell, no TARGET). [`Pramin`] is the only code
//! that moves it, under its lock. It refuses any address outside the ranges of VRAM the driver
//! owns before touching the hardware, and counts data accesses and window moves.
//!
//! Sources: open-gpu-doc `turing/tu104/dev_bus.ref.txt` (`NV_PBUS_BAR0_WINDOW`), `dev_ram.ref.txt`
//! (`NV_PRAMIN`), nouveau `nvhw/ref/gh100/pri_nv_xal_ep.h` (`NV_XAL_EP_BAR0_WINDOW`).

use core::ops::Range;

use kernel::{
    new_mutex,
    prelude::*,
    sizes::SizeConstants,
    sync::{atomic::Relaxed, Mutex, MutexGuard},
};

use kernel::io::register::Register;

use crate::{
    bar::Bar0,
    chip::Architecture, //
};

kernel::io::register! {
    /// The BAR0 window of Turing, Ampere and Ada (`NV_PBUS_BAR0_WINDOW`; no published header:
    /// open-gpu-doc `turing/tu104/dev_bus.ref.txt`). Moving it needs no read-back or wait
    /// (open-gpu-kernel-modules `kbusSetBAR0WindowVidOffset_GM107`).
    pub(crate) NV_PBUS_BAR0_WINDOW(u32) @ 0x00001700 {
        /// Aperture: 0 video memory, 2/3 system memory.
        25:24   target;
        /// VRAM address of the window >> 16.
        23:0    base;
    }

    /// The BAR0 window of Hopper (`NV_XAL_EP_BAR0_WINDOW`, `gh100/pri_nv_xal_ep.h`); no TARGET.
    pub(crate) NV_XAL_EP_BAR0_WINDOW(u32) @ 0x0010fd40 {
        /// VRAM address of the window >> 16.
        21:0    base;
    }

    /// The BAR0 window of Blackwell (`NV_XAL_EP_ZB_BAR0_WINDOW`, `blackwell/gb100/dev_nv_xal_ep_zb.h`,
    /// at block base 0x10f000), one more BASE bit than Hopper.
    pub(crate) NV_XAL_EP_ZB_BAR0_WINDOW(u32) @ 0x0010fd40 {
        /// VRAM address of the window >> 16.
        22:0    base;
    }
}

/// BAR0 offset of the PRAMIN aperture.
pub(crate) const APERTURE_OFFSET: usize = 0x70_0000;
/// Size of the PRAMIN aperture.
pub(crate) const APERTURE_SIZE: u64 = u64::SZ_1M;
/// Granularity of the window base.
pub(crate) const WINDOW_ALIGN: u64 = u64::SZ_64K;

/// Which BAR0 window register a chip has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// [`NV_PBUS_BAR0_WINDOW`].
    Pbus,
    /// [`NV_XAL_EP_BAR0_WINDOW`].
    XalEp,
    /// [`NV_XAL_EP_ZB_BAR0_WINDOW`].
    XalEpZb,
}

/// Layout of a chip's BAR0 window register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowReg {
    /// The register.
    pub(crate) kind: WindowKind,
    /// BAR0 offset of the register.
    pub(crate) offset: usize,
    /// Width in bits of the BASE field (bits `base_bits-1:0`, the VRAM address >> 16).
    pub(crate) base_bits: u32,
    /// Whether the register has a TARGET field (25:24; 0 is video memory).
    pub(crate) has_target: bool,
}

impl WindowReg {
    /// `NV_PBUS_BAR0_WINDOW` of Turing, Ampere and Ada.
    const TU102: WindowReg = WindowReg {
        kind: WindowKind::Pbus,
        offset: NV_PBUS_BAR0_WINDOW::OFFSET,
        base_bits: 24,
        has_target: true,
    };
    /// `NV_XAL_EP_BAR0_WINDOW` of Hopper.
    const GH100: WindowReg = WindowReg {
        kind: WindowKind::XalEp,
        offset: NV_XAL_EP_BAR0_WINDOW::OFFSET,
        base_bits: 22,
        has_target: false,
    };
    /// `NV_XAL_EP_BAR0_WINDOW` of Blackwell (one more BASE bit than Hopper).
    const GB100: WindowReg = WindowReg {
        kind: WindowKind::XalEpZb,
        offset: NV_XAL_EP_ZB_BAR0_WINDOW::OFFSET,
        base_bits: 23,
        has_target: false,
    };

    /// Returns the window register of `arch`.
    pub(crate) const fn for_arch(arch: Architecture) -> WindowReg {
        match arch {
            Architecture::Turing | Architecture::Ampere | Architecture::Ada => Self::TU102,
            Architecture::Hopper => Self::GH100,
            Architecture::BlackwellGB10x | Architecture::BlackwellGB20x => Self::GB100,
        }
    }

    /// Returns the highest VRAM address (exclusive) the window can reach.
    pub(crate) const fn reach(&self) -> u64 {
        (1u64 << (self.base_bits + 16)) + APERTURE_SIZE
    }

    /// Returns the register value that points the window at VRAM address `base`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `base` is not 64 KiB aligned or is beyond the BASE field.
    pub(crate) fn encode(&self, base: u64) -> Result<u32> {
        if base % WINDOW_ALIGN != 0 {
            return Err(EINVAL);
        }
        let field = base >> 16;
        // The BASE field's width refuses what the window cannot reach; TARGET 0 is VID_MEM.
        Ok(match self.kind {
            WindowKind::Pbus => NV_PBUS_BAR0_WINDOW::zeroed()
                .try_with_base(field)
                .map_err(|_| EINVAL)?
                .into_raw(),
            WindowKind::XalEp => NV_XAL_EP_BAR0_WINDOW::zeroed()
                .try_with_base(field)
                .map_err(|_| EINVAL)?
                .into_raw(),
            WindowKind::XalEpZb => NV_XAL_EP_ZB_BAR0_WINDOW::zeroed()
                .try_with_base(field)
                .map_err(|_| EINVAL)?
                .into_raw(),
        })
    }
}

/// Returns where the window must point for an access of `size` bytes at `addr`, or `None` if the
/// window at `current` already covers it.
///
/// The new base is `addr` rounded down to 64 KiB, so an ascending run of accesses uses each window
/// position for close to 1 MiB.
pub(crate) fn window_for(current: Option<u64>, addr: u64, size: u64) -> Option<u64> {
    if let Some(base) = current {
        if addr >= base && addr + size <= base + APERTURE_SIZE {
            return None;
        }
    }
    Some(addr & !(WINDOW_ALIGN - 1))
}

counters! {
    /// Counters of a [`Pramin`], read by debugfs and the tests.
    pub(crate) struct PraminStats / PraminSnapshot {
        /// Reads through the aperture.
        reads,
        /// Writes through the aperture.
        writes,
        /// Writes of the window register.
        window_moves,
        /// Accesses refused because they fell outside the driver's VRAM.
        refused,
        /// Flush reads (one per run of writes that something then acts on; also in `reads`).
        flushes,
    }
}

/// The PRAMIN window of one GPU.
///
/// # Invariants
///
/// `window` holds the base the hardware window register was last set to, or `None` before the
/// first move (the driver does not trust what firmware left there).
#[pin_data]
pub(crate) struct Pramin {
    reg: WindowReg,
    /// The VRAM ranges this driver may touch.
    allowed: KVec<Range<u64>>,
    #[pin]
    window: Mutex<Option<u64>>,
    /// Access counters.
    pub(crate) stats: PraminStats,
}

impl Pramin {
    /// Creates the PRAMIN accessor of a GPU of architecture `arch` that may touch the VRAM
    /// `allowed`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if a range is empty or beyond the window's reach; `ENOMEM`.
    pub(crate) fn new(arch: Architecture, allowed: &[Range<u64>]) -> impl PinInit<Self, Error> {
        let reg = WindowReg::for_arch(arch);
        let mut ranges = KVec::new();
        let res = (|| -> Result<KVec<Range<u64>>> {
            for r in allowed {
                if r.start >= r.end || r.end > reg.reach() {
                    return Err(EINVAL);
                }
                ranges.push(r.clone(), GFP_KERNEL)?;
            }
            Ok(ranges)
        })();
        try_pin_init!(Self {
            reg,
            allowed: res?,
            window <- new_mutex!(None),
            stats: PraminStats::new(),
        })
    }

    /// Returns the window register layout.
    pub(crate) fn window_reg(&self) -> WindowReg {
        self.reg
    }

    /// Returns the VRAM ranges this accessor may touch.
    pub(crate) fn allowed(&self) -> &[Range<u64>] {
        &self.allowed
    }

    /// Checks that an access of `size` bytes at `addr` is aligned and inside the driver's VRAM.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a misaligned or empty access, `ERANGE` for one outside the allowed ranges.
    pub(crate) fn check(&self, addr: u64, size: u64) -> Result {
        self.check_span(addr, size, size)
    }

    /// Checks that `len` bytes at `addr` (aligned to `align`) lie inside one allowed range.
    fn check_span(&self, addr: u64, len: u64, align: u64) -> Result {
        // An empty access (`check(addr, 0)`) is refused, not a division by zero.
        if addr.checked_rem(align) != Some(0) {
            return Err(EINVAL);
        }
        let end = addr.checked_add(len).ok_or(ERANGE)?;
        if self.allowed.iter().any(|r| addr >= r.start && end <= r.end) {
            Ok(())
        } else {
            Err(ERANGE)
        }
    }

    /// Locks the window for a run of accesses through `bar`.
    ///
    /// The window stays where the last access left it, so a run of nearby accesses moves it
    /// rarely; this is the batched writer of the page-table layer.
    pub(crate) fn access<'a, 'b>(&'a self, bar: &'a Bar0<'b>) -> PraminAccess<'a, 'b> {
        PraminAccess {
            pramin: self,
            bar,
            window: self.window.lock(),
            posted: None,
        }
    }
}

/// A locked PRAMIN window: 32- and 64-bit reads and writes at VRAM physical addresses.
///
/// PRAMIN writes are posted: they travel the FB path while register writes travel the PRI path,
/// and the GPU does not order the two. Before anything acts on what was written (a TLB
/// invalidate, a BAR1 bind, a CPU access through BAR1) the writes must be flushed, and the
/// cheapest flush is one read through the window after the last write (open-gpu-kernel-modules
/// `kern_bus_gm107.c`: `kbusFlush_GM107`, "Must call kbusFlush BEFORE any calls to
/// busInvalidate", and `BUS_FLUSH_VIDEO_MEMORY_VIA_PRAMIN_WINDOW`, a 32-bit PRAMIN read;
/// `kbusMemoryCopy`, "sending a read after the writes"; nouveau `nv50_instobj_release`). The
/// access flushes in [`PraminAccess::flush`] and, as a backstop, when it is dropped; a run of
/// reads only needs none.
pub(crate) struct PraminAccess<'a, 'b> {
    pramin: &'a Pramin,
    bar: &'a Bar0<'b>,
    window: MutexGuard<'a, Option<u64>>,
    /// The BAR0 offset of the last write not yet flushed.
    posted: Option<usize>,
}

impl Drop for PraminAccess<'_, '_> {
    fn drop(&mut self) {
        // An error has nowhere to go here; a device that no longer answers fails the next access.
        let _ = self.flush();
    }
}

impl PraminAccess<'_, '_> {
    /// Flushes the posted writes of this access: one 32-bit read through the window, at the last
    /// written word (the window still covers it), if anything was written since the last flush.
    ///
    /// # Errors
    ///
    /// Errors of the BAR0 read (a device that is gone).
    pub(crate) fn flush(&mut self) -> Result {
        if let Some(off) = self.posted.take() {
            self.pramin.stats.reads.fetch_add(1, Relaxed);
            self.pramin.stats.flushes.fetch_add(1, Relaxed);
            // The value is of no interest: the read is the ordering point.
            self.bar.try_read32(off & !3)?;
        }
        Ok(())
    }

    /// Checks the access and moves the window if needed; returns the BAR0 offset of `addr`.
    fn prepare(&mut self, addr: u64, size: u64) -> Result<usize> {
        self.admit(addr, size, size)?;
        if let Some(base) = window_for(*self.window, addr, size) {
            let val = self.pramin.reg.encode(base)?;
            self.bar.try_write32(val, self.pramin.reg.offset)?;
            self.pramin.stats.window_moves.fetch_add(1, Relaxed);
            *self.window = Some(base);
        }
        // INVARIANT: the window now covers `addr..addr + size`.
        let base = (*self.window).ok_or(EINVAL)?;
        // CAST: `addr - base` is below `APERTURE_SIZE` (1 MiB).
        Ok(APERTURE_OFFSET + (addr - base) as usize)
    }

    /// Writes `vals` as consecutive 64-bit words from VRAM address `addr`: one window move per
    /// 1 MiB of VRAM covered at most.
    ///
    /// The whole range is checked first, so nothing is written when any part of it is refused.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 8-byte aligned, `ERANGE` if the range is not the driver's VRAM.
    pub(crate) fn write64_slice(&mut self, addr: u64, vals: &[u64]) -> Result {
        let len = u64::try_from(vals.len())
            .ok()
            .and_then(|n| n.checked_mul(8))
            .ok_or(ERANGE)?;
        self.check_run(addr, len)?;
        for (a, v) in (addr..).step_by(8).zip(vals) {
            self.write64(a, *v)?;
        }
        Ok(())
    }

    /// Writes `count` copies of the 64-bit word `val` from VRAM address `addr` (e.g. to clear a
    /// page table): one window move per 1 MiB of VRAM covered at most.
    ///
    /// The whole range is checked first, so nothing is written when any part of it is refused.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 8-byte aligned, `ERANGE` if the range is not the driver's VRAM.
    pub(crate) fn fill64(&mut self, addr: u64, count: u64, val: u64) -> Result {
        let len = count.checked_mul(8).ok_or(ERANGE)?;
        self.check_run(addr, len)?;
        for i in 0..count {
            self.write64(addr + i * 8, val)?;
        }
        Ok(())
    }

    /// Checks a run of `len` bytes of 64-bit words at `addr` as a whole.
    fn check_run(&self, addr: u64, len: u64) -> Result {
        if len == 0 {
            return Ok(());
        }
        self.admit(addr, len, 8)
    }

    /// Checks an access before any hardware is touched; counts and logs a refusal.
    fn admit(&self, addr: u64, len: u64, align: u64) -> Result {
        self.pramin.check_span(addr, len, align).inspect_err(|e| {
            self.pramin.stats.refused.fetch_add(1, Relaxed);
            let why = if *e == EINVAL {
                "misaligned"
            } else {
                "not driver-owned VRAM"
            };
            dev_err!(
                self.bar.dev(),
                "PRAMIN access of {} bytes at VRAM {:#x} refused: {}\n",
                len,
                addr,
                why
            );
        })
    }

    /// Reads the 32-bit word at VRAM address `addr`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 4-byte aligned, `ERANGE` if it is not the driver's VRAM.
    pub(crate) fn read32(&mut self, addr: u64) -> Result<u32> {
        let off = self.prepare(addr, 4)?;
        self.pramin.stats.reads.fetch_add(1, Relaxed);
        // A PRAMIN read is itself the flush of the writes before it.
        self.posted = None;
        self.bar.try_read32(off)
    }

    /// Writes the 32-bit word `val` at VRAM address `addr`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 4-byte aligned, `ERANGE` if it is not the driver's VRAM.
    pub(crate) fn write32(&mut self, addr: u64, val: u32) -> Result {
        let off = self.prepare(addr, 4)?;
        self.pramin.stats.writes.fetch_add(1, Relaxed);
        self.posted = Some(off);
        self.bar.try_write32(val, off)
    }

    /// Reads the 64-bit word at VRAM address `addr`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 8-byte aligned, `ERANGE` if it is not the driver's VRAM.
    pub(crate) fn read64(&mut self, addr: u64) -> Result<u64> {
        let off = self.prepare(addr, 8)?;
        self.pramin.stats.reads.fetch_add(1, Relaxed);
        self.bar.try_read64(off)
    }

    /// Writes the 64-bit word `val` at VRAM address `addr`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `addr` is not 8-byte aligned, `ERANGE` if it is not the driver's VRAM.
    pub(crate) fn write64(&mut self, addr: u64, val: u64) -> Result {
        let off = self.prepare(addr, 8)?;
        self.pramin.stats.writes.fetch_add(1, Relaxed);
        self.posted = Some(off);
        self.bar.try_write64(val, off)
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_pramin)]
mod tests {
    use super::*;

    const MIB: u64 = u64::SZ_1M;
    const KIB64: u64 = u64::SZ_64K;

    #[test]
    fn window_arithmetic() -> Result {
        // First access always moves the window, to the 64 KiB boundary below.
        assert_eq!(window_for(None, 0x12_3458, 4), Some(0x12_0000));
        // Inside the 1 MiB aperture: no move.
        assert_eq!(window_for(Some(0x10_0000), 0x10_0000, 8), None);
        assert_eq!(window_for(Some(0x10_0000), 0x1f_fffc, 4), None);
        // Last byte of the aperture is covered, one past it is not.
        assert_eq!(window_for(Some(0x10_0000), 0x1f_ffff, 1), None);
        assert_eq!(window_for(Some(0x10_0000), 0x20_0000, 4), Some(0x20_0000));
        // Below the window.
        assert_eq!(window_for(Some(0x10_0000), 0xf_fffc, 4), Some(0xf_0000));
        // An 8-byte access that would straddle the end moves the window.
        assert_eq!(window_for(Some(0), MIB - 4, 8), Some(MIB - KIB64));
        // The last bytes of a 24 GiB VRAM.
        let end = 24u64 << 30;
        assert_eq!(window_for(None, end - 1, 1), Some(end - KIB64));
        assert_eq!(window_for(Some(end - MIB), end - 8, 8), None);
        assert_eq!(
            window_for(Some(end - MIB - KIB64), end - 4, 4),
            Some(end - KIB64)
        );
        // 64 KiB steps.
        for i in 0..32u64 {
            assert_eq!(window_for(None, i * KIB64 + 4, 4), Some(i * KIB64));
        }
        Ok(())
    }

    #[test]
    fn window_register_per_chip() -> Result {
        let tu = WindowReg::for_arch(Architecture::Turing);
        assert_eq!(tu.offset, 0x1700);
        assert_eq!(tu.encode(0)?, 0);
        assert_eq!(tu.encode(0x1_2345_0000)?, 0x1_2345);
        // 24-bit BASE: 40 bits of reach.
        assert_eq!(tu.encode((1 << 40) - KIB64)?, 0xff_ffff);
        assert_eq!(tu.encode(1 << 40), Err(EINVAL));
        assert_eq!(tu.encode(0x1000), Err(EINVAL));
        assert_eq!(WindowReg::for_arch(Architecture::Ada), tu);
        assert_eq!(WindowReg::for_arch(Architecture::Ampere), tu);

        let gh = WindowReg::for_arch(Architecture::Hopper);
        assert_eq!(gh.offset, 0x10_fd40);
        assert_eq!(gh.encode((1 << 38) - KIB64)?, 0x3f_ffff);
        assert_eq!(gh.encode(1 << 38), Err(EINVAL));

        let gb = WindowReg::for_arch(Architecture::BlackwellGB20x);
        assert_eq!(gb.offset, 0x10_fd40);
        assert_eq!(gb.encode((1 << 39) - KIB64)?, 0x7f_ffff);
        assert_eq!(gb.encode(1 << 39), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn refuses_out_of_range() -> Result {
        // Usable VRAM with a hole, as a layout with a reserved range in the middle has.
        let vram_end = 8 * MIB;
        let top = vram_end - 3 * MIB;
        let p = KBox::pin_init(
            Pramin::new(Architecture::Ampere, &[2 * MIB..3 * MIB, 4 * MIB..top]),
            GFP_KERNEL,
        )?;
        assert_eq!(p.check(2 * MIB, 4), Ok(()));
        assert_eq!(p.check(top - 8, 8), Ok(()));
        // Misaligned.
        assert_eq!(p.check(top - 4, 8), Err(EINVAL));
        assert_eq!(p.check(top - 2, 4), Err(EINVAL));
        // Below, in the hole, straddling the hole's edge, past the top, in reserved memory.
        assert_eq!(p.check(0, 4), Err(ERANGE));
        assert_eq!(p.check(2 * MIB - 4, 4), Err(ERANGE));
        assert_eq!(p.check(3 * MIB, 4), Err(ERANGE));
        assert_eq!(p.check(4 * MIB - 4, 8), Err(EINVAL));
        assert_eq!(p.check(top, 4), Err(ERANGE));
        assert_eq!(p.check(vram_end - 4, 4), Err(ERANGE));
        // Overflow of the end address.
        assert_eq!(p.check(u64::MAX - 3, 4), Err(ERANGE));
        // Ranges beyond the window's reach, or empty, are refused when building the accessor.
        let reach = WindowReg::for_arch(Architecture::Hopper).reach();
        assert!(KBox::pin_init(
            Pramin::new(Architecture::Hopper, &[0..MIB, 2 * MIB..reach + MIB]),
            GFP_KERNEL
        )
        .is_err());
        assert!(KBox::pin_init(
            Pramin::new(Architecture::Hopper, &[0..MIB, 2 * MIB..2 * MIB]),
            GFP_KERNEL
        )
        .is_err());
        Ok(())
    }

    /// Every bound of [`Pramin::check`] and of a run's check, byte by byte around each edge of
    /// the allowed ranges: an access is admitted exactly when it is aligned and each of its bytes
    /// lies in one allowed range; a misaligned one is `EINVAL`, any other `ERANGE`, an empty
    /// access `EINVAL`. The expectation is stated per byte, not as the code's end comparison.
    #[test]
    fn check_boundaries() -> Result {
        // Two ranges with a hole, the first above zero, the last ending on a 64 KiB boundary.
        let allowed = [2 * MIB..3 * MIB, 4 * MIB..6 * MIB - KIB64];
        let p = KBox::pin_init(Pramin::new(Architecture::Ampere, &allowed), GFP_KERNEL)?;
        let inside = |addr: u64, len: u64| {
            allowed
                .iter()
                .any(|r| (0..len).all(|i| addr.checked_add(i).is_some_and(|b| r.contains(&b))))
        };
        let want = |addr: u64, len: u64, align: u64| {
            if addr % align != 0 {
                Err(EINVAL)
            } else if inside(addr, len) {
                Ok(())
            } else {
                Err(ERANGE)
            }
        };
        let mut edges = KVec::new();
        for r in allowed.iter() {
            edges.push(r.start, GFP_KERNEL)?;
            edges.push(r.end, GFP_KERNEL)?;
        }
        let mut admitted = 0;
        for &edge in edges.iter() {
            // Single accesses: every start from two widths below the edge to one width above.
            for w in [4u64, 8] {
                for addr in edge - 2 * w..=edge + w {
                    let got = p.check(addr, w);
                    admitted += u64::from(got.is_ok());
                    ensure_eq!((edge, addr, w, got), (edge, addr, w, want(addr, w, w)));
                }
            }
            // Runs of 64-bit words (fill64, write64_slice): one to three words.
            for len in [8u64, 16, 24] {
                for addr in edge - len - 8..=edge + 8 {
                    ensure_eq!(
                        (edge, addr, len, p.check_span(addr, len, 8)),
                        (edge, addr, len, want(addr, len, 8))
                    );
                }
            }
            // An empty access, at the edge and just inside.
            ensure_eq!((edge, p.check(edge, 0)), (edge, Err(EINVAL)));
            ensure_eq!((edge, p.check(edge - 8, 0)), (edge, Err(EINVAL)));
        }
        // The sweep is not vacuous: two aligned starts inside per edge and width.
        ensure_eq!(admitted, 4 * 2 * 2);
        // End addresses that wrap.
        for w in [4u64, 8] {
            ensure_eq!((w, p.check(u64::MAX - (w - 1), w)), (w, Err(ERANGE)));
        }
        ensure_eq!(p.check_span(u64::MAX - 7, 16, 8), Err(ERANGE));
        Ok(())
    }
}
