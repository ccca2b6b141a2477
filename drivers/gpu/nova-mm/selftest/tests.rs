// SPDX-License-Identifier: GPL-2.0

//! Helpers of the device suites, and the device suite on chip identity.

use kernel::prelude::*;
use kernel::sizes::SizeConstants;

pub(crate) use crate::selftest::helpers::{
    oracle_pages,
    skip,
    skip_if_quick,
    skip_if_readonly, //
};

/// Returns the chipset codes the harness declared with `nova_mm.expect_chipsets`, in order.
pub(crate) fn expected_chipsets() -> KVec<u32> {
    let mut v = KVec::new();
    let mut packed = crate::module_parameters::expect_chipsets.value();
    while packed != 0 {
        // CAST: masked to 12 bits.
        let code = (packed & 0xfff) as u32;
        if v.push(code, GFP_KERNEL).is_err() {
            break;
        }
        packed >>= 12;
    }
    v
}

#[kunit_tests(nova_mm_device_id)]
mod device_id {
    use super::*;
    use crate::{
        chip::Spec,
        regs, //
        selftest::devices,
        selftest::TestedGpu,
    };

    /// Each bound GPU's identity read again through BAR0 is the one probe found, and the chips
    /// bound are the ones the model was told to be.
    #[test]
    fn identity_matches_model() -> Result {
        let mut expected = expected_chipsets();
        let mut seen = 0;
        let n = devices::for_each(|gpu: &TestedGpu<'_>| {
            let boot0 = gpu.mm().bar().read(regs::NV_PMC_BOOT_0).into_raw();
            let boot42 = gpu.mm().bar().read(regs::NV_PMC_BOOT_42).into_raw();
            let spec = Spec::identify(boot0, boot42).map_err(Error::from)?;
            ensure_eq!(spec, *gpu.spec());
            // The PCI vendor must be NVIDIA's.
            ensure_eq!(u32::from(gpu.pdev().vendor_id().as_raw()), 0x10de);
            let code = spec.chipset.code();
            match expected.iter().position(|&c| c == code) {
                Some(i) => {
                    let _ = expected.remove(i);
                    seen += 1;
                }
                None if crate::module_parameters::expect_chipsets.value() != 0 => {
                    kernel::kunit::err(fmt!("unexpected chipset {:#x} bound\n", code));
                    return Err(EINVAL);
                }
                None => {}
            }
            Ok(())
        })?;
        if n == 0 {
            skip(c"no GPU bound");
            return Ok(());
        }
        // Every chip the harness started a model for was found.
        assert!(expected.is_empty());
        let _ = seen;
        Ok(())
    }
}

/// Allocates 512 KiB as eight separate 64 KiB blocks, in a 1 MiB window `offset` bytes above the
/// bottom of usable VRAM (where no other test allocates: the PRAMIN marks are lower, page tables
/// come from the very bottom): every other 64 KiB is taken first, then the holes are filled.
pub(crate) fn scattered(
    mm: &crate::mm::GpuMm<'_>,
    offset: u64,
) -> Result<kernel::sync::Arc<crate::mm::vram::VramAllocation>> {
    use crate::mm::vram::{
        AllocRequest,
        Placement, //
    };
    const K64: u64 = 64 * 1024;
    let lo = mm.vram().range().start + offset;
    let win = Placement::Within(lo..lo + (1 << 20));
    let mut frag = KVec::new();
    for _ in 0..16 {
        frag.push(
            mm.vram()
                .alloc(&AllocRequest::new(K64).placed(win.clone()))?,
            GFP_KERNEL,
        )?;
    }
    for i in (0..16).rev().step_by(2) {
        let _ = frag.remove(i);
    }
    let mem = kernel::sync::Arc::new(
        mm.vram().alloc(&AllocRequest::new(8 * K64).placed(win))?,
        GFP_KERNEL,
    )?;
    ensure_eq!(mem.ranges().count(), 8);
    Ok(mem)
}

/// Returns the VRAM size in bytes the harness declared for `chipset` (`nova_mm.expect_vram_gib`,
/// in the order of `nova_mm.expect_chipsets`), if any.
pub(crate) fn expected_vram(chipset: u32) -> Option<u64> {
    let chips = expected_chipsets();
    let i = chips.iter().position(|&c| c == chipset)?;
    let packed = crate::module_parameters::expect_vram_gib.value();
    let gib = (packed >> (12 * i)) & 0xfff;
    (gib != 0).then_some(gib << 30)
}

/// A contiguous allocation of `size` bytes starting `offset` bytes above a 2 MiB boundary
/// (a range allocation over memory found free just before).
pub(crate) fn odd_alloc(
    mm: &crate::mm::GpuMm<'_>,
    offset: u64,
    size: u64,
) -> Result<kernel::sync::Arc<crate::mm::vram::VramAllocation>> {
    use crate::mm::vram::{
        AllocRequest,
        Placement, //
    };
    let span = (offset + size).next_multiple_of(u64::SZ_2M);
    let probe = mm
        .vram()
        .alloc(&AllocRequest::new(span).contiguous().aligned(u64::SZ_2M))?;
    let at = probe.start() + offset;
    drop(probe);
    let mem = mm.vram().alloc(
        &AllocRequest::new(size)
            .contiguous()
            .placed(Placement::Within(at..at + size)),
    )?;
    ensure_eq!(mem.start(), at);
    Ok(kernel::sync::Arc::new(mem, GFP_KERNEL)?)
}

#[kunit_tests(nova_mm_device_mm)]
mod device_mm {
    use super::*;
    use crate::{
        mm::{
            tlb::{
                Scope,
                INVALIDATE_TIMEOUT, //
            },
            vram::{
                AllocRequest,
                Placement, //
            },
        },
        selftest::devices,
        selftest::TestedGpu,
    };
    use kernel::{
        sync::atomic::Relaxed,
        time::{
            Delta,
            Instant,
            Monotonic, //
        },
    };

    const MIB: u64 = 1 << 20;

    /// Runs `f` on every bound GPU; marks the test skipped when there is none, or in read-only
    /// mode.
    fn on_each_gpu(f: impl FnMut(&TestedGpu<'_>) -> Result) -> Result {
        if skip_if_readonly() {
            return Ok(());
        }
        if devices::for_each(f)? == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }

    /// The usable VRAM is what the firmware registers of the model describe, minus the reserved
    /// top, and the allocator manages exactly that (read only: also in read-only mode).
    #[test]
    fn usable_vram_matches_model() -> Result {
        let n = devices::for_each(|gpu| {
            if let Some(size) = expected_vram(gpu.spec().chipset.code()) {
                ensure_eq!(gpu.layout().fb.end, size);
            }
            let usable = gpu.mm().vram().range();
            ensure!(usable.end <= gpu.layout().fb.end);
            ensure_eq!(gpu.mm().vram().stats().total, usable.end - usable.start);
            for r in gpu.layout().reserved() {
                ensure!(r.range.start >= usable.end || r.range.end <= usable.start);
            }
            Ok(())
        })?;
        if n == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }

    /// Patterns written through PRAMIN read back, across window boundaries and at the top of
    /// usable VRAM; the window moves only when an access leaves it.
    #[test]
    fn pramin_patterns() -> Result {
        on_each_gpu(|gpu| {
            let bar = gpu.mm().bar();
            // 2 MiB, 1 MiB aligned: spans two window positions.
            let buf = gpu
                .mm()
                .vram()
                .alloc(&AllocRequest::new(2 * MIB).contiguous().aligned(MIB))?;
            let base = buf.start();
            let moves0 = gpu.mm().pramin().stats.window_moves.load(Relaxed);
            {
                let mut w = gpu.mm().pramin().access(bar);
                // Across the 1 MiB boundary, in 32 and 64 bits.
                for i in 0..64u64 {
                    let a = base + MIB - 256 + i * 8;
                    w.write64(a, 0x0123_4567_89ab_cdef ^ a)?;
                }
                for i in 0..64u64 {
                    let a = base + MIB - 256 + i * 8;
                    ensure_eq!(w.read64(a)?, 0x0123_4567_89ab_cdef ^ a);
                    // CAST: a pattern, truncation intended.
                    ensure_eq!(w.read32(a)?, (0x89ab_cdef ^ a) as u32);
                }
                for i in 0..16u64 {
                    let a = base + i * 64 * 1024 + 4;
                    // CAST: a pattern, truncation intended.
                    w.write32(a, 0xa5a5_0000 | i as u32)?;
                }
                for i in 0..16u64 {
                    let a = base + i * 64 * 1024 + 4;
                    ensure_eq!(w.read32(a)?, 0xa5a5_0000 | i as u32);
                }
            }
            let moves = gpu.mm().pramin().stats.window_moves.load(Relaxed) - moves0;
            // Writes across the boundary: at most two positions; then back down and up again.
            ensure!(moves <= 6);
            drop(buf);

            // The last word of usable VRAM.
            let top = gpu
                .mm()
                .vram()
                .alloc(&AllocRequest::new(64 * 1024).placed(Placement::TopDown))?;
            let end = gpu.mm().vram().range().end;
            ensure_eq!(top.start() + 64 * 1024, end);
            let mut w = gpu.mm().pramin().access(bar);
            w.write32(end - 4, 0xdead_beef)?;
            w.write64(end - 16, 0x1122_3344_5566_7788)?;
            ensure_eq!(w.read32(end - 4)?, 0xdead_beef);
            ensure_eq!(w.read64(end - 16)?, 0x1122_3344_5566_7788);
            Ok(())
        })
    }

    /// A run of writes spanning a little more than the 1 MiB aperture moves the window exactly
    /// twice, and a refused run writes nothing.
    #[test]
    fn pramin_batched_writes() -> Result {
        on_each_gpu(|gpu| {
            let buf = gpu
                .mm()
                .vram()
                .alloc(&AllocRequest::new(2 * MIB).contiguous().aligned(MIB))?;
            let base = buf.start();
            // 1 MiB + 64 KiB of zeros from a 64 KiB boundary: exactly two window positions.
            let start = base + 64 * 1024;
            let count = (MIB + 64 * 1024) / 8;
            let s = &gpu.mm().pramin().stats;
            let w0 = s.writes.load(Relaxed);
            let mut w = gpu.mm().pramin().access(gpu.mm().bar());
            // Park the window away from the run first.
            w.read32(base + 2 * MIB - 4)?;
            let m1 = s.window_moves.load(Relaxed);
            w.fill64(start, count, 0)?;
            ensure_eq!(s.window_moves.load(Relaxed) - m1, 2);
            ensure_eq!(s.writes.load(Relaxed) - w0, count);
            let pattern = [1u64, 2, 3, 0xffff_ffff_ffff_ffff];
            w.write64_slice(base + MIB - 16, &pattern)?;
            for (i, v) in pattern.iter().enumerate() {
                ensure_eq!(w.read64(base + MIB - 16 + 8 * i as u64)?, *v);
            }
            ensure_eq!(w.read64(start)?, 0);
            ensure_eq!(w.read64(start + count * 8 - 8)?, 0);
            // A run that ends past the usable VRAM is refused whole.
            let end = gpu.mm().vram().range().end;
            let before = s.writes.load(Relaxed);
            ensure_eq!(w.fill64(end - 64, 16, 0), Err(ERANGE));
            ensure_eq!(w.write64_slice(end - 8, &pattern), Err(ERANGE));
            ensure_eq!(w.fill64(start + 4, 2, 0), Err(EINVAL));
            ensure_eq!(s.writes.load(Relaxed), before);
            Ok(())
        })
    }

    /// Signatures written through PRAMIN land at the intended physical addresses: the test
    /// prints where it wrote what (`NOVA-MARK`), and the harness finds the values at those
    /// addresses in the model's VRAM dump, a path independent of the driver's own reads.
    #[test]
    fn pramin_marks_for_the_harness() -> Result {
        on_each_gpu(|gpu| {
            // Low in usable VRAM, where no other test allocates (they take the highest blocks).
            let lo = gpu.mm().vram().range().start;
            let buf = gpu.mm().vram().alloc(
                &AllocRequest::new(4 * MIB)
                    .contiguous()
                    .placed(Placement::Within(lo..lo + 64 * MIB)),
            )?;
            let base = buf.start();
            let mut w = gpu.mm().pramin().access(gpu.mm().bar());
            for off in [8, MIB + 0x1_2340, 3 * MIB + 0xf_fff8] {
                let addr = base + off;
                let val = 0x4e4f_5641_0000_0000 | (addr >> 3);
                w.write64(addr, val)?;
                ensure_eq!(w.read64(addr)?, val);
                pr_info!(
                    "NOVA-MARK {:#x} {:#x} {:#x}\n",
                    gpu.spec().chipset.code(),
                    addr,
                    val
                );
            }
            // The window is let go first: the kept list's lock never nests inside it.
            drop(w);
            // Kept until the GPU goes away, so nothing else overwrites the marks.
            gpu.keep(crate::selftest::Kept::Memory(buf))?;
            Ok(())
        })
    }

    /// Zeroed allocations read zero through PRAMIN, whether they were cleared here (fresh VRAM
    /// reads as the model's poison) or came from memory the driver knew to be zero.
    #[test]
    fn zeroed_allocations() -> Result {
        if crate::selftest::tests::skip_if_quick() {
            return Ok(());
        }
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let check = |a: &crate::mm::vram::VramAllocation| -> Result {
                let mut w = mm.pramin().access(mm.bar());
                for r in a.ranges() {
                    for off in [0, 8, (r.end - r.start) / 2, r.end - r.start - 8] {
                        ensure_eq!(w.read64(r.start + off)?, 0);
                    }
                }
                Ok(())
            };
            // More than anything known zero: allocated, then zeroed through PRAMIN.
            let z0 = mm.zero_fill_writes();
            let a = mm.alloc_zeroed(&AllocRequest::new(4 * MIB + 64 * 1024))?;
            ensure!(!a.is_zeroed());
            ensure_eq!(mm.zero_fill_writes() - z0, (4 * MIB + 64 * 1024) / 8);
            check(&a)?;
            // Freed as known zero (it is: nothing wrote it since), then served again unzeroed.
            let ranges = {
                let mut v = KVec::new();
                for r in a.ranges() {
                    v.push(r, GFP_KERNEL)?;
                }
                v
            };
            a.free_cleared(&ranges);
            let z1 = mm.zero_fill_writes();
            let b = mm.alloc_zeroed(&AllocRequest::new(MIB).contiguous())?;
            ensure!(b.is_zeroed());
            ensure_eq!(mm.zero_fill_writes(), z1);
            check(&b)?;
            Ok(())
        })
    }

    /// Addresses outside the driver's VRAM are refused before the hardware is touched.
    #[test]
    fn pramin_refuses_reserved() -> Result {
        on_each_gpu(|gpu| {
            let end = gpu.mm().vram().range().end;
            let s = &gpu.mm().pramin().stats;
            let before = (
                s.reads.load(Relaxed),
                s.writes.load(Relaxed),
                s.window_moves.load(Relaxed),
            );
            let mut w = gpu.mm().pramin().access(gpu.mm().bar());
            ensure_eq!(w.write32(end, 1), Err(ERANGE));
            ensure_eq!(w.read32(gpu.layout().fb.end - 4), Err(ERANGE));
            ensure_eq!(w.read64(gpu.layout().fb.end), Err(ERANGE));
            ensure_eq!(w.write32(2, 1), Err(EINVAL));
            drop(w);
            let after = (
                s.reads.load(Relaxed),
                s.writes.load(Relaxed),
                s.window_moves.load(Relaxed),
            );
            ensure_eq!(before, after);
            Ok(())
        })
    }

    /// An invalidate completes (or, with the model's hang injection, fails within the bound).
    #[test]
    fn tlb_invalidate() -> Result {
        on_each_gpu(|gpu| {
            let pd = gpu.mm().vram().alloc(&AllocRequest::new(4096))?;
            // After one timed out (e.g. binding BAR1 at probe), the next ones are refused at once.
            let earlier = gpu.mm().tlb().stats.timeouts.load(Relaxed) > 0;
            let n0 = gpu.mm().tlb().stats.invalidates.load(Relaxed);
            let t0 = Instant::<Monotonic>::now();
            let res = gpu
                .mm()
                .tlb()
                .invalidate(gpu.mm().bar(), pd.start(), Scope::PdbHubOnly);
            let took = t0.elapsed();
            if crate::module_parameters::expect_tlb_hang.value() && earlier {
                ensure_eq!(res, Err(ETIMEDOUT));
                ensure!(took.as_micros_ceil() < INVALIDATE_TIMEOUT.as_micros_ceil());
                ensure_eq!(gpu.mm().tlb().stats.invalidates.load(Relaxed), n0);
                return Ok(());
            }
            if crate::module_parameters::expect_tlb_hang.value() {
                ensure_eq!(res, Err(ETIMEDOUT));
                ensure!(took.as_micros_ceil() >= INVALIDATE_TIMEOUT.as_micros_ceil());
                ensure!(
                    took.as_micros_ceil()
                        < INVALIDATE_TIMEOUT.as_micros_ceil()
                            + Delta::from_millis(1000).as_micros_ceil()
                );
                ensure!(gpu.mm().tlb().stats.timeouts.load(Relaxed) >= 1);
            } else {
                ensure_eq!(res, Ok(()));
                ensure_eq!(
                    gpu.mm()
                        .tlb()
                        .invalidate(gpu.mm().bar(), pd.start(), Scope::All),
                    Ok(())
                );
                ensure_eq!(
                    gpu.mm()
                        .tlb()
                        .invalidate(gpu.mm().bar(), pd.start(), Scope::Pdb),
                    Ok(())
                );
            }
            ensure!(gpu.mm().tlb().stats.invalidates.load(Relaxed) > n0);
            // A misaligned page directory is refused without touching the hardware.
            let n1 = gpu.mm().tlb().stats.invalidates.load(Relaxed);
            ensure_eq!(
                gpu.mm()
                    .tlb()
                    .invalidate(gpu.mm().bar(), pd.start() + 8, Scope::Pdb),
                Err(EINVAL)
            );
            ensure_eq!(gpu.mm().tlb().stats.invalidates.load(Relaxed), n1);
            Ok(())
        })
    }

    /// The exact bounds of every PRAMIN accessor at the end of the usable VRAM: 32- and 64-bit
    /// reads and writes and runs of one to three words (`fill64`, `write64_slice`) ending
    /// exactly at the end, a byte or a word past it, starting at it, starting a byte before it
    /// with a multi-byte width, and wrapping; empty runs. An admitted access makes exactly its
    /// MMIO accesses and changes exactly its bytes; a refused one is `EINVAL` when misaligned,
    /// else `ERANGE`, counts one refusal, makes no BAR0 access at all, and leaves the last
    /// 64 bytes of usable VRAM as they were (past the end, the model records any access).
    #[test]
    fn pramin_bounds() -> Result {
        /// One PRAMIN operation of the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Op {
            /// `read32`.
            Read32,
            /// `write32`.
            Write32,
            /// `read64`.
            Read64,
            /// `write64`.
            Write64,
            /// `fill64` of this many words.
            Fill(u64),
            /// `write64_slice` of this many words.
            Slice(u64),
        }
        /// Bytes of the checked region (the last of the usable VRAM).
        const N: usize = 64;
        /// Fills the region with a pattern through PRAMIN.
        fn set(mm: &crate::mm::GpuMm<'_>, lo: u64, pat: &[u8; N]) -> Result {
            let mut w = mm.pramin().access(mm.bar());
            for (a, q) in (lo..).step_by(8).zip(pat.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(q);
                w.write64(a, u64::from_le_bytes(b))?;
            }
            Ok(())
        }
        /// Reads the region back through PRAMIN.
        fn get(mm: &crate::mm::GpuMm<'_>, lo: u64) -> Result<[u8; N]> {
            let mut out = [0u8; N];
            let mut w = mm.pramin().access(mm.bar());
            for (a, q) in (lo..).step_by(8).zip(out.chunks_exact_mut(8)) {
                q.copy_from_slice(&w.read64(a)?.to_le_bytes());
            }
            Ok(out)
        }
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let top = mm
                .vram()
                .alloc(&AllocRequest::new(64 * 1024).placed(Placement::TopDown))?;
            let end = mm.vram().range().end;
            ensure_eq!(top.start() + 64 * 1024, end);
            ensure!(mm.pramin().allowed().iter().any(|r| r.end == end));
            // CAST: `N` is 64.
            let lo = end - N as u64;
            let mut pat = [0u8; N];
            for (i, b) in pat.iter_mut().enumerate() {
                // CAST: a byte pattern.
                *b = 0x80 ^ (i as u8).wrapping_mul(7);
            }
            let mut cases = KVec::new();
            for (op, w) in [
                (Op::Read32, 4),
                (Op::Write32, 4),
                (Op::Read64, 8),
                (Op::Write64, 8),
            ] {
                for addr in [
                    end - 2 * w,
                    end - w,
                    end - w + 1,
                    end - 4,
                    end - 1,
                    end,
                    end + w,
                    u64::MAX - (w - 1),
                ] {
                    cases.push((op, addr), GFP_KERNEL)?;
                }
            }
            for n in 1..=3u64 {
                for op in [Op::Fill(n), Op::Slice(n)] {
                    for addr in [
                        end - 8 * n,
                        end - 8 * n - 8,
                        end - 8 * n + 8,
                        end - 8 * n + 1,
                        end - 8 * n + 4,
                        end,
                        u64::MAX - 7,
                    ] {
                        cases.push((op, addr), GFP_KERNEL)?;
                    }
                }
            }
            // Empty runs, inside and at the end: no access.
            for op in [Op::Fill(0), Op::Slice(0)] {
                for addr in [end - 8, end] {
                    cases.push((op, addr), GFP_KERNEL)?;
                }
            }
            let s = &mm.pramin().stats;
            let io = mm.bar().stats();
            let (mut admitted, mut refused) = (0, 0);
            for &(op, addr) in cases.iter() {
                let (len, align) = match op {
                    Op::Read32 | Op::Write32 => (4, 4),
                    Op::Read64 | Op::Write64 => (8, 8),
                    Op::Fill(n) | Op::Slice(n) => (8 * n, 8),
                };
                // Aligned, and every byte below the end; an empty run is admitted as is.
                let want = if len == 0 {
                    Ok(())
                } else if addr % align != 0 {
                    Err(EINVAL)
                } else if addr.checked_add(len).is_some_and(|e| e <= end) {
                    Ok(())
                } else {
                    Err(ERANGE)
                };
                set(mm, lo, &pat)?;
                let mut expect = pat;
                let mut w = mm.pramin().access(mm.bar());
                let c0 = (
                    s.reads.load(Relaxed),
                    s.writes.load(Relaxed),
                    s.refused.load(Relaxed),
                    s.window_moves.load(Relaxed),
                    io.reads.load(Relaxed),
                    io.writes.load(Relaxed),
                );
                // The bytes an admitted access covers, and what it writes there.
                let mut data = KVec::new();
                let got = match op {
                    Op::Read32 => match w.read32(addr) {
                        Ok(v) => {
                            data.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    Op::Read64 => match w.read64(addr) {
                        Ok(v) => {
                            data.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    Op::Write32 => {
                        data.extend_from_slice(&0xa1a2_a3a4u32.to_le_bytes(), GFP_KERNEL)?;
                        w.write32(addr, 0xa1a2_a3a4)
                    }
                    Op::Write64 => {
                        data.extend_from_slice(
                            &0xb1b2_b3b4_b5b6_b7b8u64.to_le_bytes(),
                            GFP_KERNEL,
                        )?;
                        w.write64(addr, 0xb1b2_b3b4_b5b6_b7b8)
                    }
                    Op::Fill(n) => {
                        for _ in 0..n {
                            data.extend_from_slice(
                                &0xc1c2_c3c4_c5c6_c7c8u64.to_le_bytes(),
                                GFP_KERNEL,
                            )?;
                        }
                        w.fill64(addr, n, 0xc1c2_c3c4_c5c6_c7c8)
                    }
                    Op::Slice(n) => {
                        let mut vals = KVec::new();
                        for i in 0..n {
                            let v = 0xd1d2_d3d4_d5d6_d700u64 | i;
                            vals.push(v, GFP_KERNEL)?;
                            data.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?;
                        }
                        w.write64_slice(addr, &vals)
                    }
                };
                let c1 = (
                    s.reads.load(Relaxed),
                    s.writes.load(Relaxed),
                    s.refused.load(Relaxed),
                    s.window_moves.load(Relaxed),
                    io.reads.load(Relaxed),
                    io.writes.load(Relaxed),
                );
                drop(w);
                ensure_eq!((op, addr, got), (op, addr, want));
                let moves = c1.3 - c0.3;
                let reads = u64::from(matches!(op, Op::Read32 | Op::Read64));
                let writes = if reads == 1 { 0 } else { len / align };
                let delta = (
                    c1.0 - c0.0,
                    c1.1 - c0.1,
                    c1.2 - c0.2,
                    c1.4 - c0.4,
                    c1.5 - c0.5,
                );
                if got.is_ok() {
                    admitted += 1;
                    // Its data accesses, plus the window moves (BAR0 writes) it needed.
                    ensure_eq!(
                        (op, addr, delta),
                        (op, addr, (reads, writes, 0, reads, writes + moves))
                    );
                    // CAST: `addr` is inside the region here (checked above).
                    let at = (addr - lo) as usize;
                    if reads == 1 {
                        ensure_eq!((op, addr, &data[..]), (op, addr, &pat[at..at + data.len()]));
                    } else {
                        expect[at..at + data.len()].copy_from_slice(&data);
                    }
                } else {
                    refused += 1;
                    // Refused before the hardware: not even the window moved.
                    ensure_eq!((op, addr, delta, moves), (op, addr, (0, 0, 1, 0, 0), 0));
                }
                ensure_eq!((op, addr, get(mm, lo)?), (op, addr, expect));
            }
            // The table is not one-sided.
            ensure!(admitted >= 12 && refused >= 40);
            drop(top);
            Ok(())
        })
    }
}

#[kunit_tests(nova_mm_device_vmm)]
mod device_vmm {
    use super::*;
    use crate::{
        bar::MmioSnapshot,
        mm::{
            pagetable::{
                Access,
                Entry, //
            },
            pramin::PraminSnapshot,
            ptpool::PtPool,
            tlb::TlbSnapshot,
            vmm::{
                batch,
                Mapping,
                Reservation,
                Vmm, //
            },
            vram::AllocRequest,
            GpuMm, //
        },
        selftest::devices,
        selftest::Kept,
        selftest::TestedGpu,
    };
    use kernel::sync::{
        atomic::Relaxed,
        Arc, //
    };

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn on_each_gpu(f: impl FnMut(&TestedGpu<'_>) -> Result) -> Result {
        if skip_if_readonly() {
            return Ok(());
        }
        if crate::module_parameters::expect_tlb_hang.value() {
            skip(c"invalidates hang (nova_mm_device_vmm.vmm_invalidate_hang covers it)");
            return Ok(());
        }
        if devices::for_each(f)? == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }

    /// With invalidates that never complete, a map fails with `ETIMEDOUT` within the bound and
    /// leaves no table or mapping behind.
    #[test]
    fn vmm_invalidate_hang() -> Result {
        if skip_if_readonly() {
            return Ok(());
        }
        if !crate::module_parameters::expect_tlb_hang.value() {
            skip(c"invalidates complete (only with the model's invalidate-hang fault)");
            return Ok(());
        }
        let n = devices::for_each(|gpu| {
            let mm = gpu.mm();
            let vmm = mm.new_vmm("kunit-hang", 0..1 << 40)?;
            let mem = Arc::new(mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?, GFP_KERNEL)?;
            let res = vmm.reserve(u64::SZ_2M, u64::SZ_2M, None, false)?;
            let t0 = mm.tlb().stats.timeouts.load(Relaxed);
            ensure_eq!(
                res.map(0, &mem, 0, u64::SZ_4K, Access::ReadWrite).err(),
                Some(ETIMEDOUT)
            );
            ensure!(mm.tlb().stats.timeouts.load(Relaxed) > t0);
            ensure_eq!(vmm.tables(), 1);
            ensure_eq!(vmm.lookup(res.range().start).0, Entry::Invalid);
            Ok(())
        })?;
        if n == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }

    /// MMIO counters of one GPU.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Counts {
        mmio: MmioSnapshot,
        pramin: PraminSnapshot,
        tlb: TlbSnapshot,
    }

    fn counts(mm: &GpuMm<'_>) -> Counts {
        Counts {
            mmio: mm.bar().stats().snapshot(),
            pramin: mm.pramin().stats.snapshot(),
            tlb: mm.tlb().stats.snapshot(),
        }
    }

    /// Checks that what happened since `c0` was one operation: exactly one invalidate, and no
    /// MMIO read but the one flush read before it (a PRAMIN read) and its completion polls.
    fn one_op(mm: &GpuMm<'_>, c0: Counts) -> Result<Counts> {
        let c = counts(mm);
        let (mmio, pramin, tlb) = (c.mmio - c0.mmio, c.pramin - c0.pramin, c.tlb - c0.tlb);
        ensure_eq!(tlb.invalidates, 1);
        ensure_eq!(pramin.reads, 1);
        ensure_eq!(pramin.flushes, 1);
        ensure_eq!(mmio.reads, 1 + tlb.reg_reads);
        Ok(c)
    }

    /// Prints a mapping for the harness, which checks each page with the model's own walker on
    /// the page tables in the model's VRAM after power-off: `NOVA-MAP <chipset> <pdb> <va> <pa>
    /// <len> <page> <rw|ro|sparse|fault>`.
    fn announce(
        gpu: &TestedGpu<'_>,
        vmm: &Vmm<'_>,
        va: u64,
        pa: u64,
        len: u64,
        page: u64,
        what: &str,
    ) {
        pr_info!(
            "NOVA-MAP {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {}\n",
            gpu.spec().chipset.code(),
            vmm.pdb(),
            va,
            pa,
            len,
            page,
            what
        );
    }

    fn announce_mapping(gpu: &TestedGpu<'_>, vmm: &Vmm<'_>, m: &Mapping<'_>) {
        let what = if m.access() == Access::ReadOnly {
            "ro"
        } else {
            "rw"
        };
        for p in m.pieces() {
            announce(gpu, vmm, p.va, p.pa, p.len, p.page, what);
        }
    }

    /// Every page of `m` translates, from the shadow, to its physical address with its access.
    fn check_shadow(vmm: &Vmm<'_>, m: &Mapping<'_>) -> Result {
        let ro = m.access() == Access::ReadOnly;
        for p in m.pieces() {
            let mut off = 0;
            while off < p.len {
                let (e, size) = vmm.lookup(p.va + off);
                ensure_eq!(size, p.page);
                ensure_eq!(
                    e,
                    Entry::Page {
                        pa: p.pa + off,
                        read_only: ro
                    }
                );
                off += p.page;
            }
        }
        Ok(())
    }

    /// Leaves `maps`, then `reservations`, then `vmm` in place until the GPU goes away (for the
    /// model's walker, which reads the tables after power-off).
    fn keep_until_removal<'a>(
        gpu: &TestedGpu<'a>,
        maps: impl IntoIterator<Item = Mapping<'a>>,
        reservations: impl IntoIterator<Item = Reservation<'a>>,
        vmm: Arc<Vmm<'a>>,
    ) -> Result {
        for m in maps {
            gpu.keep(Kept::Mapping(m))?;
        }
        for r in reservations {
            gpu.keep(Kept::Reservation(r))?;
        }
        gpu.keep(Kept::Space(vmm))?;
        Ok(())
    }

    /// A new address space of `gpu` over 1 TiB, and memory for its largest page: 512 MiB
    /// aligned where the chip has 512 MiB pages (the third value), else 8 MiB.
    fn space_with_big_memory<'a>(
        gpu: &TestedGpu<'a>,
        name: &'static str,
    ) -> Result<(Arc<Vmm<'a>>, Arc<crate::mm::vram::VramAllocation>, bool)> {
        let mm = gpu.mm();
        let huge = mm.has_512m_pages();
        let vmm = mm.new_vmm(name, 0..1 << 40)?;
        let big = if huge { u64::SZ_512M } else { 8 * MIB };
        let mem = Arc::new(
            mm.vram()
                .alloc(&AllocRequest::new(big).contiguous().aligned(big))?,
            GFP_KERNEL,
        )?;
        Ok((vmm, mem, huge))
    }

    /// Batches in a GPU address space, checked by the model's walker: one batch maps at every
    /// page size over three reservations, reserves a sparse range and maps and unmaps a page of
    /// its own; a second one changes an access, unmaps a mapping and maps another one at its
    /// addresses. Each is one flush read and one invalidate.
    #[test]
    fn vmm_batches_checked_by_the_model() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let (vmm, mem, huge) = space_with_big_memory(gpu, "kunit-batches")?;
            let ra = vmm.reserve(GIB, u64::SZ_512M, Some(16 * GIB), false)?;
            let rb = vmm.reserve(64 * MIB, u64::SZ_2M, Some(20 * GIB), false)?;
            let rc = vmm.reserve(MIB, u64::SZ_64K, Some(24 * GIB), false)?;
            let c0 = counts(mm);
            let mut b = vmm.batch();
            b.map(&rb, 0, &mem, 0, 4 * MIB, Access::ReadWrite)?;
            b.map(
                &rb,
                8 * MIB + u64::SZ_64K,
                &mem,
                u64::SZ_64K,
                4 * u64::SZ_64K,
                Access::ReadOnly,
            )?;
            b.map(
                &rc,
                u64::SZ_4K,
                &mem,
                u64::SZ_4K,
                3 * u64::SZ_4K,
                Access::ReadWrite,
            )?;
            b.map(&rc, 12 * u64::SZ_4K, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
            if huge {
                b.map(&ra, 0, &mem, 0, u64::SZ_512M, Access::ReadWrite)?;
            }
            let gone = b.map(
                &rb,
                32 * MIB + u64::SZ_4K,
                &mem,
                u64::SZ_4K,
                u64::SZ_4K,
                Access::ReadWrite,
            )?;
            b.unmap_queued(gone)?;
            let sp = b.reserve_sparse(
                u64::SZ_2M + u64::SZ_64K + u64::SZ_4K,
                u64::SZ_2M,
                Some(28 * GIB),
            )?;
            let mut done = b.prepare()?.execute()?;
            let c1 = one_op(mm, c0)?;
            let sparse = core::mem::replace(&mut done[sp], batch::Done::Applied).reservation()?;
            let mut maps = KVec::new();
            for d in done {
                if let batch::Done::Mapped(m) = d {
                    check_shadow(&vmm, &m)?;
                    maps.push(m, GFP_KERNEL)?;
                }
            }
            ensure_eq!(maps.len(), if huge { 5 } else { 4 });
            ensure_eq!(maps[0].pieces()[0].page, u64::SZ_2M);
            ensure_eq!(maps[1].pieces()[0].page, u64::SZ_64K);
            ensure_eq!(maps[2].pieces()[0].page, u64::SZ_4K);
            let s = sparse.range();
            for off in [0, u64::SZ_2M, u64::SZ_2M + u64::SZ_64K] {
                announce(
                    gpu,
                    &vmm,
                    s.start + off,
                    0,
                    u64::SZ_4K,
                    u64::SZ_4K,
                    "sparse",
                );
            }
            announce(
                gpu,
                &vmm,
                20 * GIB + 32 * MIB + u64::SZ_4K,
                0,
                u64::SZ_4K,
                u64::SZ_4K,
                "fault",
            );

            // Change one, unmap one, map another at the addresses of the one unmapped.
            let mut b = vmm.batch();
            b.protect(&maps[0], Access::ReadOnly)?;
            b.unmap(&maps[2])?;
            b.map(
                &rc,
                u64::SZ_4K,
                &mem,
                8 * u64::SZ_4K,
                u64::SZ_4K,
                Access::ReadOnly,
            )?;
            let mut done = b.prepare()?.execute()?;
            one_op(mm, c1)?;
            ensure!(maps[2].is_unmapped());
            let new = done.pop().ok_or(EINVAL)?.mapping()?;
            check_shadow(&vmm, &new)?;
            check_shadow(&vmm, &maps[0])?;
            ensure_eq!(maps[0].access(), Access::ReadOnly);
            announce_mapping(gpu, &vmm, &new);
            announce(
                gpu,
                &vmm,
                24 * GIB + 2 * u64::SZ_4K,
                0,
                2 * u64::SZ_4K,
                u64::SZ_4K,
                "fault",
            );
            let unmapped = maps.remove(2)?;
            drop(unmapped);
            for m in maps.iter() {
                announce_mapping(gpu, &vmm, m);
            }
            maps.push(new, GFP_KERNEL)?;
            keep_until_removal(gpu, maps, [ra, rb, rc, sparse], vmm)
        })
    }

    /// A 2 MiB page in a fresh address space costs the design's minimum: the root's entry and
    /// each new table once (its entries, plus its zeros unless the memory is known zero), one
    /// invalidate, no reads but its polls; the unmap one write per leaf and per freed table.
    #[test]
    fn vmm_minimum_cost() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let levels = if mm.format_version() == 3 { 4 } else { 3 };
            let vmm = mm.new_vmm("kunit-minimum", 0..1 << 40)?;
            let mem = Arc::new(
                mm.vram().alloc(
                    &AllocRequest::new(u64::SZ_2M)
                        .contiguous()
                        .aligned(u64::SZ_2M),
                )?,
                GFP_KERNEL,
            )?;
            let res = vmm.reserve(u64::SZ_2M, u64::SZ_2M, None, false)?;
            for round in 0..2 {
                let z0 = mm.pool().stats.zero_hits.load(Relaxed);
                let c0 = counts(mm);
                let m = res.map(0, &mem, 0, u64::SZ_2M, Access::ReadWrite)?;
                let c1 = one_op(mm, c0)?;
                let zero = mm.pool().stats.zero_hits.load(Relaxed) - z0;
                // New tables below the root: one entry each if known zero, else 512 writes.
                let expect = 1 + zero + (levels - zero) * 512;
                ensure_eq!((c1.pramin - c0.pramin).writes, expect);
                // The second time every table comes back known zero.
                if round == 1 {
                    ensure_eq!(zero, levels);
                }
                check_shadow(&vmm, &m)?;
                drop(m);
                let c2 = one_op(mm, c1)?;
                ensure_eq!((c2.pramin - c1.pramin).writes, 1 + levels);
                // Besides PRAMIN: the invalidate's three register writes, and window moves.
                ensure!((c2.mmio - c1.mmio).writes >= 4);
            }
            ensure_eq!(vmm.tables(), 1);
            Ok(())
        })
    }

    /// Maps at every page size (512 MiB where the chip has them), mixed sizes under one dual
    /// PDE, a non-contiguous allocation, read-only, sparse; changes access; unmaps some. Each
    /// operation costs one invalidate and no reads. What stays mapped is left in place until the
    /// GPU goes away and announced for the harness, which checks it with the model's walker.
    #[test]
    fn vmm_checked_by_the_model() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let (vmm, mem, huge) = space_with_big_memory(gpu, "kunit-checked")?;
            let res = vmm.reserve(4 * GIB, u64::SZ_512M, Some(4 * GIB), false)?;
            // (offset in the reservation, offset in the allocation, size, largest page)
            let mut cases = KVec::new();
            for c in [
                (u64::SZ_4K, u64::SZ_4K, 4 * u64::SZ_4K, u64::SZ_4K),
                (
                    u64::SZ_2M + u64::SZ_64K,
                    u64::SZ_64K,
                    4 * u64::SZ_64K,
                    u64::SZ_64K,
                ),
                (8 * MIB, u64::SZ_2M, 4 * MIB, u64::SZ_2M),
                (16 * MIB + 60 * 1024, 60 * 1024, 72 * 1024, u64::SZ_64K),
                (20 * MIB + 4096, 8192, 64 * 1024, u64::SZ_4K),
            ] {
                cases.push(c, GFP_KERNEL)?;
            }
            if huge {
                cases.push((u64::SZ_512M, 0, u64::SZ_512M, u64::SZ_512M), GFP_KERNEL)?;
            }
            let mut keep = KVec::new();
            for (i, &(off, moff, size, page)) in cases.iter().enumerate() {
                let c0 = counts(mm);
                let mut m = res.map(off, &mem, moff, size, Access::ReadWrite)?;
                let c1 = one_op(mm, c0)?;
                ensure_eq!(m.pieces().iter().map(|p| p.page).max(), Some(page));
                check_shadow(&vmm, &m)?;
                if i == 2 {
                    // Access change: one invalidate, every leaf rewritten.
                    m.set_access(Access::ReadOnly)?;
                    one_op(mm, c1)?;
                    check_shadow(&vmm, &m)?;
                }
                if i == 1 {
                    // Unmapped again: the range must fault.
                    let va = m.va();
                    drop(m);
                    one_op(mm, c1)?;
                    announce(gpu, &vmm, va, 0, size, u64::SZ_4K, "fault");
                    continue;
                }
                announce_mapping(gpu, &vmm, &m);
                keep.push(m, GFP_KERNEL)?;
            }

            // A non-contiguous allocation, mapped contiguously: several buddy blocks.
            let scattered = super::scattered(mm, 128 * MIB)?;
            let c0 = counts(mm);
            let m = res.map(64 * MIB, &scattered, 0, scattered.size(), Access::ReadWrite)?;
            one_op(mm, c0)?;
            check_shadow(&vmm, &m)?;
            announce_mapping(gpu, &vmm, &m);
            keep.push(m, GFP_KERNEL)?;

            // Sparse: reads zero wherever nothing is mapped; a mapping inside it.
            let c0 = counts(mm);
            let sparse = vmm.reserve(
                u64::SZ_512M + 3 * u64::SZ_2M + 3 * u64::SZ_4K,
                u64::SZ_512M,
                Some(8 * GIB),
                true,
            )?;
            one_op(mm, c0)?;
            let s = sparse.range();
            let c0 = counts(mm);
            let m = sparse.map(
                u64::SZ_512M + u64::SZ_2M + u64::SZ_4K,
                &mem,
                0,
                2 * u64::SZ_4K,
                Access::ReadWrite,
            )?;
            one_op(mm, c0)?;
            announce_mapping(gpu, &vmm, &m);
            keep.push(m, GFP_KERNEL)?;
            for off in [
                0,
                u64::SZ_512M - u64::SZ_4K,
                u64::SZ_512M,
                u64::SZ_512M + u64::SZ_2M,
                u64::SZ_512M + u64::SZ_2M + 3 * u64::SZ_4K,
            ] {
                announce(
                    gpu,
                    &vmm,
                    s.start + off,
                    0,
                    u64::SZ_4K,
                    u64::SZ_4K,
                    "sparse",
                );
            }
            announce(
                gpu,
                &vmm,
                s.end - 3 * u64::SZ_4K,
                0,
                3 * u64::SZ_4K,
                u64::SZ_4K,
                "sparse",
            );

            keep_until_removal(gpu, keep, [sparse, res], vmm)
        })
    }

    /// Page sizes follow physical alignment on the device: allocations starting 4 KiB and
    /// 64 KiB above a 2 MiB boundary (and one on it), and a 4 MiB block mapped from 4 KiB and
    /// 64 KiB into it, at virtual addresses 0, 64 KiB and 2 MiB above a 512 MiB boundary. The shadow must hold the pages the test's rule gives,
    /// and every page is left mapped and announced with that rule's size and address, for the
    /// model's walker (which faults on a page whose address is not aligned to its size).
    #[test]
    fn vmm_physical_alignment() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let huge = mm.has_512m_pages();
            let vmm = mm.new_vmm("kunit-align", 0..1 << 40)?;
            let res = vmm.reserve(40 * u64::SZ_512M, u64::SZ_512M, None, false)?;
            let mut keep = KVec::new();
            let mut slot = 0;
            // One 4 MiB block, mapped from an offset inside it (the buddy blocks of a range
            // allocation are each aligned to their size; an offset into one block is not).
            let block = Arc::new(
                mm.vram().alloc(
                    &AllocRequest::new(2 * u64::SZ_2M)
                        .contiguous()
                        .aligned(2 * u64::SZ_2M),
                )?,
                GFP_KERNEL,
            )?;
            for po in [0, u64::SZ_4K, u64::SZ_64K] {
                for size in [
                    u64::SZ_64K + u64::SZ_4K,
                    u64::SZ_2M + u64::SZ_64K + u64::SZ_4K,
                ] {
                    let odd = super::odd_alloc(mm, po, size)?;
                    for (mem, moff, vo) in [
                        (&odd, 0, 0),
                        (&odd, 0, u64::SZ_64K),
                        (&odd, 0, u64::SZ_2M),
                        (&block, po, 0),
                        (&block, po, u64::SZ_64K),
                        (&block, po, u64::SZ_2M),
                    ] {
                        let off = slot * u64::SZ_512M + vo;
                        slot += 1;
                        let m = res.map(off, mem, moff, size, Access::ReadWrite)?;
                        let want = super::oracle_pages(m.va(), mem.start() + moff, size, huge)?;
                        for &(va, pa, len, page) in want.iter() {
                            let mut o = 0;
                            while o < len {
                                let (e, got) = vmm.lookup(va + o);
                                ensure_eq!(got, page);
                                ensure_eq!(
                                    e,
                                    Entry::Page {
                                        pa: pa + o,
                                        read_only: false
                                    }
                                );
                                o += page;
                            }
                            announce(gpu, &vmm, va, pa, len, page, "rw");
                        }
                        keep.push(m, GFP_KERNEL)?;
                    }
                }
            }
            keep_until_removal(gpu, keep, [res], vmm)
        })
    }

    /// Every free slot `pool` believes known zero reads zero in the GPU's VRAM (through PRAMIN:
    /// the model's memory, not the driver's bookkeeping).
    fn zero_slots_read_zero(mm: &GpuMm<'_>, pool: &PtPool) -> Result<u64> {
        let slots = pool.zero_slots()?;
        let mut w = mm.pramin().access(mm.bar());
        for &slot in slots.iter() {
            for q in 0..512 {
                let v = w.read64(slot + 8 * q)?;
                if v != 0 {
                    kernel::kunit::err(fmt!(
                        "page-table slot {:#x} is known zero but VRAM holds {:#x} at +{:#x}\n",
                        slot,
                        v,
                        8 * q
                    ));
                    return Err(EINVAL);
                }
            }
        }
        // CAST: a vector length.
        Ok(slots.len() as u64)
    }

    /// Page-table memory under churn, on the GPU: address spaces of a pool of their own created
    /// and dropped with mappings at mixed sizes over many directories, sparse ranges and unmaps
    /// in a varied order, so that the pool takes chunks, gives them back (with the dirty roots
    /// of dropped spaces) and takes them again. At the end, every slot the pool believes known
    /// zero must read zero in VRAM. Nothing is left mapped: the test is skipped in the quick
    /// load cycles, whose VRAM accounting must equal the first load's.
    #[test]
    fn vmm_pool_churn() -> Result {
        if skip_if_quick() {
            return Ok(());
        }
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let pool = PtPool::new(mm.vram().clone())?;
            let data = Arc::new(
                mm.vram()
                    .alloc(&AllocRequest::new(4 * MIB).contiguous().aligned(u64::SZ_2M))?,
                GFP_KERNEL,
            )?;
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let (mut checked, mut chunks_max) = (0, 0);
            let rounds = 3u64;
            for round in 0..rounds {
                let mut vmms = KVec::new();
                for _ in 0..2 {
                    vmms.push(
                        mm.new_vmm_in(pool.clone(), "kunit-churn", 0..1 << 40)?,
                        GFP_KERNEL,
                    )?;
                }
                let mut maps = KVec::new();
                let mut keep = KVec::new();
                for (k, vmm) in vmms.iter().enumerate() {
                    // CAST: two spaces.
                    let k = k as u64;
                    let res = vmm.reserve(512 * GIB, u64::SZ_2M, None, false)?;
                    for i in 0..20 + 10 * round {
                        let size = [u64::SZ_4K, u64::SZ_64K, u64::SZ_2M, 3 * u64::SZ_4K]
                            [((i + k) % 4) as usize];
                        let off = i * u64::SZ_512M + (next() % 64) * u64::SZ_2M;
                        maps.push(
                            (k, res.map(off, &data, u64::SZ_2M, size, Access::ReadWrite)?),
                            GFP_KERNEL,
                        )?;
                    }
                    let sp = vmm.reserve(u64::SZ_2M + u64::SZ_64K, u64::SZ_2M, None, true)?;
                    maps.push(
                        (
                            k,
                            sp.map(
                                u64::SZ_2M + u64::SZ_4K,
                                &data,
                                0,
                                u64::SZ_4K,
                                Access::ReadOnly,
                            )?,
                        ),
                        GFP_KERNEL,
                    )?;
                    keep.push(sp, GFP_KERNEL)?;
                    keep.push(res, GFP_KERNEL)?;
                }
                chunks_max = chunks_max.max(pool.footprint().0);
                while !maps.is_empty() {
                    // CAST: a vector length.
                    let i = (next() % maps.len() as u64) as usize;
                    drop(maps.remove(i)?);
                }
                drop(keep);
                while !vmms.is_empty() {
                    // CAST: a vector length.
                    let i = (next() % vmms.len() as u64) as usize;
                    drop(vmms.remove(i)?);
                }
            }
            // Once, at the end: each slot costs 512 reads (the unit churn checks every step).
            checked += zero_slots_read_zero(mm, &pool)?;
            ensure!(chunks_max >= 2);
            ensure!(pool.stats.chunks_freed.load(Relaxed) >= 1);
            ensure!(checked > 0);
            dev_info!(
                gpu.pdev(),
                "pool churn: {} chunks at most, {} taken, {} given back, {} known-zero slots read back zero\n",
                chunks_max,
                pool.stats.chunks_allocated.load(Relaxed),
                pool.stats.chunks_freed.load(Relaxed),
                checked
            );
            Ok(())
        })
    }

    /// With `nova_mm.pt_top_gib=N` every page table and the BAR1 instance block sit in the top
    /// N GiB of usable VRAM: above 4 GiB (and above 64 GiB on a GPU of 96 GiB or more), so that
    /// the high words of directory entries, of the instance block's page directory base and of
    /// the bind register are exercised by every other device and BAR1 test of the run. Checked
    /// here on a new space's root, and on BAR1's instance block and root.
    #[test]
    fn vmm_tables_high() -> Result {
        let n = crate::module_parameters::pt_top_gib.value();
        if n == 0 {
            skip(c"page tables from the bottom of VRAM (nova_mm.pt_top_gib=0)");
            return Ok(());
        }
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let usable = mm.vram().range();
            let floor = usable.end.saturating_sub(n << 30).max(usable.start);
            let min = if usable.end >= 96 * GIB {
                64 * GIB
            } else {
                4 * GIB
            };
            let high = |what: &str, a: u64| -> Result {
                if a < floor || a < min {
                    kernel::kunit::err(fmt!(
                        "{} at {:#x}: not above {:#x} and {:#x}\n",
                        what,
                        a,
                        floor,
                        min
                    ));
                    return Err(EINVAL);
                }
                Ok(())
            };
            let vmm = mm.new_vmm("kunit-high", 0..1 << 40)?;
            high("root", vmm.pdb())?;
            let mem = Arc::new(mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?, GFP_KERNEL)?;
            let res = vmm.reserve(u64::SZ_2M, u64::SZ_2M, None, false)?;
            let m = res.map(0, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
            let (e, _) = vmm.lookup(m.va());
            ensure_eq!(
                e,
                Entry::Page {
                    pa: mem.start(),
                    read_only: false
                }
            );
            if let Some(bar) = mm.bar1() {
                high("BAR1 instance block", bar.instance_block())?;
                high("BAR1 root", bar.vmm().pdb())?;
            }
            // For the harness: `NOVA-TABLES-HIGH <chipset> root=<pdb> instance_block=<address>`.
            dev_info!(
                gpu.pdev(),
                "NOVA-TABLES-HIGH {:#x} root={:#x} instance_block={:#x}\n",
                gpu.spec().chipset.code(),
                vmm.pdb(),
                mm.bar1().map_or(0, |b| b.instance_block())
            );
            announce_mapping(gpu, &vmm, &m);
            keep_until_removal(gpu, [m], [res], vmm)
        })
    }

    /// Invalidate order and scope in a GPU address space (the model checks every entry change
    /// is covered by a later invalidate of this directory whose scope reaches GPU TLBs, and that
    /// no unlinked table is written again before its invalidate completed):
    /// - the same addresses remapped to other memory at 4 KiB, 64 KiB and 2 MiB, and to
    ///   read-only and back, each time over a translation a TLB may hold;
    /// - a map alone in its directories unmapped (its tables freed) and at once a map elsewhere
    ///   that takes the same table memory again.
    #[test]
    fn vmm_remap_and_reuse() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let vmm = mm.new_vmm("kunit-remap", 0..1 << 40)?;
            let a = Arc::new(
                mm.vram().alloc(
                    &AllocRequest::new(u64::SZ_2M)
                        .contiguous()
                        .aligned(u64::SZ_2M),
                )?,
                GFP_KERNEL,
            )?;
            let b = Arc::new(
                mm.vram().alloc(
                    &AllocRequest::new(u64::SZ_2M)
                        .contiguous()
                        .aligned(u64::SZ_2M),
                )?,
                GFP_KERNEL,
            )?;
            let res = vmm.reserve(8 * u64::SZ_512M, u64::SZ_512M, None, false)?;
            for size in [u64::SZ_4K, u64::SZ_64K, u64::SZ_2M] {
                let mut m = res.map(0, &a, 0, size, Access::ReadWrite)?;
                m.set_access(Access::ReadOnly)?;
                m.set_access(Access::ReadWrite)?;
                drop(m);
                let m = res.map(0, &b, 0, size, Access::ReadWrite)?;
                check_shadow(&vmm, &m)?;
                drop(m);
            }
            // Tables freed by an unmap, taken again by the next map.
            let z0 = mm.pool().stats.zero_hits.load(Relaxed);
            let f0 = vmm.stats.tables_freed.load(Relaxed);
            for i in 1..6u64 {
                let m = res.map(
                    i * u64::SZ_512M + u64::SZ_64K,
                    &a,
                    0,
                    u64::SZ_4K,
                    Access::ReadWrite,
                )?;
                drop(m);
            }
            ensure!(vmm.stats.tables_freed.load(Relaxed) - f0 >= 10);
            ensure!(mm.pool().stats.zero_hits.load(Relaxed) - z0 >= 8);
            // Nothing is kept: a space left to the next load of a load/unload cycle would be
            // the model's still, and the next load's same tables its reuse.
            let m = res.map(
                7 * u64::SZ_512M,
                &b,
                u64::SZ_64K,
                u64::SZ_64K,
                Access::ReadWrite,
            )?;
            check_shadow(&vmm, &m)?;
            drop(m);
            ensure_eq!(vmm.tables(), 1);
            Ok(())
        })
    }

    /// Bad requests are refused before anything is written.
    #[test]
    fn vmm_refuses_bad_input() -> Result {
        on_each_gpu(|gpu| {
            let mm = gpu.mm();
            let vmm = mm.new_vmm("kunit-bad", 0..1 << 32)?;
            let mem = Arc::new(
                mm.vram().alloc(&AllocRequest::new(u64::SZ_64K))?,
                GFP_KERNEL,
            )?;
            let res: Reservation<'_> = vmm.reserve(MIB, MIB, None, false)?;
            let c0 = counts(mm);
            ensure_eq!(
                res.map(0, &mem, 0, 0, Access::ReadWrite).err(),
                Some(EINVAL)
            );
            ensure_eq!(
                res.map(12, &mem, 0, u64::SZ_4K, Access::ReadWrite).err(),
                Some(EINVAL)
            );
            ensure_eq!(
                res.map(0, &mem, u64::SZ_64K, u64::SZ_4K, Access::ReadWrite)
                    .err(),
                Some(ERANGE)
            );
            ensure_eq!(
                res.map(MIB - u64::SZ_4K, &mem, 0, 2 * u64::SZ_4K, Access::ReadWrite)
                    .err(),
                Some(ERANGE)
            );
            ensure_eq!(
                res.map(u64::MAX & !4095, &mem, 0, u64::SZ_4K, Access::ReadWrite)
                    .err(),
                Some(ERANGE)
            );
            ensure_eq!(
                vmm.reserve(u64::SZ_4K, u64::SZ_4K, Some(0x1234_5000), false)
                    .map(|_| ()),
                Ok(())
            );
            ensure_eq!(
                vmm.reserve(u64::SZ_4K, u64::SZ_4K, Some(1 << 32), false)
                    .err(),
                Some(EEXIST)
            );
            ensure_eq!(
                vmm.reserve(2 << 32, u64::SZ_4K, None, false).err(),
                Some(ENOSPC)
            );
            ensure_eq!(counts(mm), c0);
            Ok(())
        })
    }
}

#[kunit_tests(nova_mm_device_bar)]
mod device_bar {
    use super::*;
    use crate::{
        mm::{
            bar::{
                BarMapping,
                BarUser, //
            },
            pagetable::{
                Access, //
            },
            vram::{
                AllocRequest,
                VramAllocation, //
            },
            GpuMm,
        },
        selftest::devices,
        selftest::TestedGpu,
    };
    use kernel::sync::{
        atomic::Relaxed,
        Arc, //
    };

    const MIB: u64 = 1 << 20;

    /// Runs `f` on every GPU with BAR1 bound; checks that BAR1 is bound unless firmware owns
    /// the GPU.
    fn on_each_bar(mut f: impl FnMut(&TestedGpu<'_>, &BarUser<'_>) -> Result) -> Result {
        if skip_if_readonly() {
            return Ok(());
        }
        if crate::module_parameters::expect_tlb_hang.value() {
            skip(c"invalidates hang: BAR1 is not bound");
            return Ok(());
        }
        let mut bars = 0;
        let n = devices::for_each(
            |gpu| match (&gpu.mm().bar1(), gpu.layout().wpr2.is_some()) {
                (Some(_), true) => {
                    kernel::kunit::err(fmt!("BAR1 bound although WPR2 is set\n"));
                    Err(EINVAL)
                }
                (None, false) => {
                    kernel::kunit::err(fmt!("BAR1 not bound\n"));
                    Err(EINVAL)
                }
                (None, true) => Ok(()),
                (Some(b), false) => {
                    bars += 1;
                    f(gpu, b)
                }
            },
        )?;
        if n == 0 {
            skip(c"no GPU bound");
        } else if bars == 0 {
            skip(c"no GPU with BAR1 bound (firmware owns them)");
        }
        Ok(())
    }

    fn contiguous(mm: &GpuMm<'_>, size: u64, align: u64) -> Result<Arc<VramAllocation>> {
        Ok(Arc::new(
            mm.vram()
                .alloc(&AllocRequest::new(size).contiguous().aligned(align))?,
            GFP_KERNEL,
        )?)
    }

    /// The binding covers the whole BAR as the PCI core sized it.
    #[test]
    fn bar1_binding() -> Result {
        on_each_bar(|gpu, bar| {
            let len = gpu.pdev().resource_len(1)?;
            ensure_eq!(bar.size(), len);
            ensure_eq!(bar.vmm().range(), 0..len);
            ensure_eq!(bar.instance_block() % u64::SZ_4K, 0);
            Ok(())
        })
    }

    /// A batch on BAR1's address space: 4 KiB, 64 KiB and 2 MiB pages over three reservations
    /// in one flush read and one hub invalidate, each checked by a CPU round trip through BAR1
    /// against PRAMIN; then one batch unmaps them all, again with one invalidate.
    #[test]
    fn bar1_batches() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let mem = contiguous(mm, 8 * MIB, u64::SZ_2M)?;
            let v = bar.vmm();
            // (page size, reservation size, offset in the allocation, size)
            let shapes = [
                (u64::SZ_4K, u64::SZ_64K, u64::SZ_4K, 3 * u64::SZ_4K),
                (u64::SZ_64K, u64::SZ_2M, u64::SZ_64K, 4 * u64::SZ_64K),
                (u64::SZ_2M, 4 * MIB, u64::SZ_2M, 2 * u64::SZ_2M),
            ];
            let mut res = KVec::new();
            for (page, rsize, _, _) in shapes {
                res.push(
                    v.reserve(rsize, page.max(u64::SZ_64K), None, false)?,
                    GFP_KERNEL,
                )?;
            }
            let inv0 = mm.tlb().stats.invalidates.load(Relaxed);
            let f0 = mm.pramin().stats.flushes.load(Relaxed);
            let mut b = v.batch();
            for ((_, _, moff, size), r) in shapes.iter().zip(res.iter()) {
                b.map(r, 0, &mem, *moff, *size, Access::ReadWrite)?;
            }
            let done = b.prepare()?.execute()?;
            ensure_eq!(mm.tlb().stats.invalidates.load(Relaxed) - inv0, 1);
            ensure_eq!(mm.pramin().stats.flushes.load(Relaxed) - f0, 1);
            let mut cpu = KVec::new();
            for (d, (page, _, moff, size)) in done.into_iter().zip(shapes) {
                let m = bar.cpu_access(d.mapping()?)?;
                ensure!(m.mapping().pieces().iter().all(|p| p.page == page));
                let pa = mem.start() + moff;
                for off in [0, size - 8] {
                    m.write64(off, 0x4241_5443_0000_0000 ^ pa ^ off)?;
                }
                let mut w = mm.pramin().access(mm.bar());
                for off in [0, size - 8] {
                    ensure_eq!(w.read64(pa + off)?, 0x4241_5443_0000_0000 ^ pa ^ off);
                    w.write64(
                        pa + off + 8 * u64::from(off == 0),
                        0x5052_414d_0000_0000 ^ off,
                    )?;
                }
                drop(w);
                ensure_eq!(m.read64(8)?, 0x5052_414d_0000_0000);
                cpu.push(m, GFP_KERNEL)?;
            }
            // Every mapping unmapped in one batch; a mapping is not given CPU access twice.
            let inv1 = mm.tlb().stats.invalidates.load(Relaxed);
            let mut b = v.batch();
            for m in cpu.iter() {
                b.unmap(m.mapping())?;
            }
            b.prepare()?.execute()?;
            ensure_eq!(mm.tlb().stats.invalidates.load(Relaxed) - inv1, 1);
            ensure!(cpu.iter().all(|m| m.mapping().is_unmapped()));
            drop(cpu);
            drop(res);
            Ok(())
        })
    }

    /// What the CPU writes through BAR1 is in VRAM at the physical address (read through
    /// PRAMIN), and the reverse, at 4 KiB, 64 KiB, 2 MiB and (where the chip and the BAR allow)
    /// 512 MiB pages, at the first and last bytes of each mapping; each map costs one hub
    /// invalidate and no read but its polls.
    #[test]
    fn bar1_round_trips() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let mut pages = KVec::new();
            for p in [u64::SZ_4K, u64::SZ_64K, u64::SZ_2M] {
                pages.push(p, GFP_KERNEL)?;
            }
            if mm.has_512m_pages() && bar.size() >= u64::SZ_512M {
                pages.push(u64::SZ_512M, GFP_KERNEL)?;
            }
            for &page in pages.iter() {
                let n = if page == u64::SZ_512M { 1 } else { 2 };
                let size = n * page;
                // Physically one page off the next larger page size, so that `page` is the
                // largest that fits.
                let mem = contiguous(mm, size + page.max(u64::SZ_2M), page.max(u64::SZ_2M))?;
                let moff = if page < u64::SZ_2M { page } else { 0 };
                let pa = mem.start() + moff;
                let inv0 = mm.tlb().stats.invalidates.load(Relaxed);
                let r0 = mm.bar().stats().reads.load(Relaxed);
                let p0 = mm.tlb().stats.reg_reads.load(Relaxed);
                let f0 = mm.pramin().stats.flushes.load(Relaxed);
                let m = bar.map(&mem, moff, size, Access::ReadWrite, None)?;
                ensure_eq!(mm.tlb().stats.invalidates.load(Relaxed) - inv0, 1);
                // The reads: the one flush read before the invalidate, and its polls.
                ensure_eq!(mm.pramin().stats.flushes.load(Relaxed) - f0, 1);
                ensure_eq!(
                    mm.bar().stats().reads.load(Relaxed) - r0,
                    1 + mm.tlb().stats.reg_reads.load(Relaxed) - p0
                );
                ensure!(m.mapping().pieces().iter().all(|p| p.page == page));
                // CPU to VRAM: first and last quadword of each page.
                for i in 0..n {
                    for off in [i * page, i * page + page - 8] {
                        m.write64(off, 0x4241_5231_0000_0000 ^ pa ^ off)?;
                    }
                }
                m.write8(0, 0x5a)?;
                m.write8(size - 1, 0xa5)?;
                let mut w = mm.pramin().access(mm.bar());
                for i in 0..n {
                    for off in [i * page + 8, i * page + page - 16] {
                        w.write64(pa + off, 0x5052_414d_0000_0000 ^ off)?;
                    }
                }
                for i in 0..n {
                    for off in [i * page, i * page + page - 8] {
                        let want = 0x4241_5231_0000_0000 ^ pa ^ off;
                        let want = if off == 0 {
                            (want & !0xff) | 0x5a
                        } else {
                            want
                        };
                        let want = if off == size - 8 {
                            (want & !(0xff << 56)) | (0xa5 << 56)
                        } else {
                            want
                        };
                        ensure_eq!(w.read64(pa + off)?, want);
                    }
                }
                drop(w);
                // VRAM to CPU.
                for i in 0..n {
                    for off in [i * page + 8, i * page + page - 16] {
                        ensure_eq!(m.read64(off)?, 0x5052_414d_0000_0000 ^ off);
                    }
                }
                ensure_eq!(m.read8(0)?, 0x5a);
                ensure_eq!(m.read8(size - 1)?, 0xa5);
                // 16- and 32-bit accesses of the same bytes.
                ensure_eq!(m.size(), size);
                m.write16(size / 2 + 16, 0x1616)?;
                ensure_eq!(m.read16(size / 2 + 16)?, 0x1616);
                ensure_eq!(m.read32(size / 2 + 16)? & 0xffff, 0x1616);
                ensure_eq!(
                    u64::from(m.read32(12)?),
                    (0x5052_414d_0000_0000u64 ^ 8) >> 32
                );
                // Bounded to the mapping.
                ensure_eq!(m.read8(size).err(), Some(ERANGE));
                ensure_eq!(m.write32(size - 2, 0).err(), Some(ERANGE));
                ensure_eq!(m.read64(u64::MAX - 3).err(), Some(ERANGE));
                dev_info!(
                    gpu.pdev(),
                    "BAR1 round trip through {} KiB pages at BAR1 {:#x} = VRAM {:#x}: ok\n",
                    page >> 10,
                    m.offset(),
                    pa
                );
                let inv1 = mm.tlb().stats.invalidates.load(Relaxed);
                drop(m);
                ensure_eq!(mm.tlb().stats.invalidates.load(Relaxed) - inv1, 1);
            }
            Ok(())
        })
    }

    /// An allocation of several buddy blocks is one contiguous BAR1 range: each block's first
    /// and last bytes land in that block.
    #[test]
    fn bar1_scattered() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let mem = super::scattered(mm, 192 * MIB)?;
            let m = bar.map(&mem, 0, mem.size(), Access::ReadWrite, None)?;
            let mut buf = [0u8; 24];
            for (i, r) in mem.ranges().enumerate() {
                // CAST: a block index below 8.
                let off = i as u64 * u64::SZ_64K;
                for (j, b) in buf.iter_mut().enumerate() {
                    // CAST: a byte pattern.
                    *b = (i * 31 + j) as u8;
                }
                // Unaligned copies across the block's end.
                m.copy_from_slice(off + u64::SZ_64K - 12, &buf[..12])?;
                m.write32(off, 0xb10c_0000 | i as u32)?;
                let mut w = mm.pramin().access(mm.bar());
                ensure_eq!(w.read32(r.start)?, 0xb10c_0000 | i as u32);
                ensure_eq!(
                    w.read32(r.end - 4)?,
                    u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]])
                );
                drop(w);
                let mut back = [0u8; 12];
                m.copy_to_slice(off + u64::SZ_64K - 12, &mut back)?;
                ensure_eq!(back[..], buf[..12]);
            }
            let mut back = [0u8; 12];
            ensure_eq!(
                m.copy_to_slice(mem.size() - 4, &mut back).err(),
                Some(ERANGE)
            );
            Ok(())
        })
    }

    /// Unmapped and mapped again at the same BAR1 offset to other VRAM, the CPU reads the new
    /// data: the model serves stale translations until an invalidate.
    #[test]
    fn bar1_remap() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let a = contiguous(mm, u64::SZ_64K, u64::SZ_64K)?;
            let b = contiguous(mm, u64::SZ_64K, u64::SZ_64K)?;
            {
                let mut w = mm.pramin().access(mm.bar());
                for off in [0, u64::SZ_4K, u64::SZ_64K - 8] {
                    w.write64(a.start() + off, 0xaaaa_0000 | off)?;
                    w.write64(b.start() + off, 0xbbbb_0000 | off)?;
                }
            }
            let m = bar.map(&a, 0, u64::SZ_64K, Access::ReadWrite, None)?;
            let at = m.offset();
            for off in [0, u64::SZ_4K, u64::SZ_64K - 8] {
                ensure_eq!(m.read64(off)?, 0xaaaa_0000 | off);
            }
            drop(m);
            let m = bar.map(&b, 0, u64::SZ_64K, Access::ReadWrite, Some(at))?;
            ensure_eq!(m.offset(), at);
            for off in [0, u64::SZ_4K, u64::SZ_64K - 8] {
                ensure_eq!(m.read64(off)?, 0xbbbb_0000 | off);
            }
            Ok(())
        })
    }

    /// A sparse BAR1 range reads zero.
    #[test]
    fn bar1_sparse() -> Result {
        on_each_bar(|_gpu, bar| {
            let r = bar.reserve_sparse(u64::SZ_2M + u64::SZ_64K)?;
            for off in [0, u64::SZ_4K, u64::SZ_2M, u64::SZ_2M + u64::SZ_64K - 4] {
                ensure_eq!(bar.raw_read32(r.range().start + off)?, 0);
            }
            Ok(())
        })
    }

    /// Read-only mappings drop CPU writes, and an unmapped range faults instead of reaching
    /// the freed VRAM (the model records both; the harness declares them expected in this run).
    #[test]
    fn bar1_faults() -> Result {
        if !crate::module_parameters::expect_bar1_faults.value() {
            skip(c"BAR1 faults are caused only with nova_mm.expect_bar1_faults=1");
            return Ok(());
        }
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let mem = contiguous(mm, u64::SZ_64K, u64::SZ_64K)?;
            mm.pramin()
                .access(mm.bar())
                .write64(mem.start(), 0x0123_4567_89ab_cdef)?;
            let m = bar.map(&mem, 0, u64::SZ_64K, Access::ReadOnly, None)?;
            ensure_eq!(m.read64(0)?, 0x0123_4567_89ab_cdef);
            m.write64(0, 0xdead)?;
            ensure_eq!(m.read64(0)?, 0x0123_4567_89ab_cdef);
            ensure_eq!(
                mm.pramin().access(mm.bar()).read64(mem.start())?,
                0x0123_4567_89ab_cdef
            );
            let at = m.offset();
            drop(m);
            // Unmapped: the read faults and returns zeros, never the VRAM that was there.
            ensure_eq!(bar.raw_read32(at)?, 0);
            Ok(())
        })
    }

    /// Reads 64 bits at BAR1 offset `off` wherever it is mapped, as two 32-bit reads.
    fn raw_read64(bar: &BarUser<'_>, off: u64) -> Result<u64> {
        Ok(u64::from(bar.raw_read32(off)?) | (u64::from(bar.raw_read32(off + 4)?) << 32))
    }

    /// A tag for VRAM address `pa`, different at every address.
    fn tag(pa: u64) -> u64 {
        0x7a67_0000_0000_0000 ^ pa.rotate_left(17) ^ pa
    }

    /// Page sizes follow physical alignment through BAR1: allocations starting 4 KiB and
    /// 64 KiB above a 2 MiB boundary (and one on it), and one block mapped from those offsets
    /// into it, mapped at a 2 MiB-aligned BAR1 offset (and
    /// 512 MiB + 2 MiB at a 512 MiB-aligned one where BAR1 holds it). VRAM written through
    /// PRAMIN at the first and last 8 bytes of the pages the test's rule gives reads back
    /// through BAR1, translated by the model's MMU (which faults on a page whose address is not
    /// aligned to its size, and reads another page's memory for a wrong address).
    #[test]
    fn bar1_physical_alignment() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let huge = mm.has_512m_pages();
            let mut sizes = KVec::new();
            sizes.push(u64::SZ_2M + u64::SZ_64K + u64::SZ_4K, GFP_KERNEL)?;
            if huge && bar.size() >= 2 * u64::SZ_512M {
                sizes.push(u64::SZ_512M + u64::SZ_2M, GFP_KERNEL)?;
            }
            let mut checked = 0;
            for po in [u64::SZ_4K, u64::SZ_64K, 0] {
                for &size in sizes.iter() {
                    // 512 MiB in 4 KiB pages: the smaller size covers that rule.
                    if size > u64::SZ_512M && po == u64::SZ_4K {
                        continue;
                    }
                    // A range allocation at the offset, and one block mapped from the offset
                    // into it (each buddy block is aligned to its size; an offset into one is not).
                    let odd = super::odd_alloc(mm, po, size)?;
                    let span = (size + po).next_multiple_of(u64::SZ_2M).next_power_of_two();
                    let block = contiguous(mm, span, span)?;
                    for (mem, moff) in [(&odd, 0), (&block, po)] {
                        let align = if size > u64::SZ_512M {
                            u64::SZ_512M
                        } else {
                            u64::SZ_2M
                        };
                        let res = bar.vmm().reserve(size, align, None, false)?;
                        let m = res.map(0, mem, moff, size, Access::ReadWrite)?;
                        let want = super::oracle_pages(m.va(), mem.start() + moff, size, huge)?;
                        // The first and last 32 pages of each run, at their first and last 8 bytes.
                        let mut probes = KVec::new();
                        for &(va, pa, len, page) in want.iter() {
                            let n = len / page;
                            for i in 0..n {
                                if i < 32 || n - i <= 32 {
                                    for d in [0, page - 8] {
                                        probes.push(
                                            (va + i * page + d, pa + i * page + d),
                                            GFP_KERNEL,
                                        )?;
                                    }
                                }
                            }
                        }
                        {
                            let mut w = mm.pramin().access(mm.bar());
                            for &(_, pa) in probes.iter() {
                                w.write64(pa, tag(pa))?;
                            }
                        }
                        for &(va, pa) in probes.iter() {
                            let got = raw_read64(bar, va)?;
                            if got != tag(pa) {
                                kernel::kunit::err(fmt!(
                                "BAR1 {:#x} (VRAM {:#x}, allocation at +{:#x} of 2 MiB) reads {:#x}, want {:#x}\n",
                                va,
                                pa,
                                po,
                                got,
                                tag(pa)
                            ));
                                return Err(EINVAL);
                            }
                        }
                        // CAST: a vector length.
                        checked += probes.len() as u64;
                        drop(m);
                    }
                }
            }
            dev_info!(
                gpu.pdev(),
                "BAR1 physical alignment: {} addresses read back\n",
                checked
            );
            Ok(())
        })
    }

    /// Pages mapped inside sparse BAR1 ranges, where the entry that covers them is a sparse
    /// big one: a 4 KiB page in a sparse 64 KiB big entry (its first, a middle and its last
    /// 4 KiB; two pages across two of them), 64 KiB and 4 KiB pages in a sparse 2 MiB entry.
    /// Through BAR1 (the model's MMU), every 4 KiB of the 2 MiB around the map reads the VRAM
    /// tag where mapped and zero (sparse, no fault) elsewhere, after the map and after the
    /// unmap; the release leaves no table behind.
    #[test]
    fn bar1_sparse_holes() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let mem = contiguous(mm, u64::SZ_2M, u64::SZ_2M)?;
            {
                let mut w = mm.pramin().access(mm.bar());
                let mut o = 0;
                while o < u64::SZ_2M {
                    w.write64(mem.start() + o, tag(mem.start() + o))?;
                    o += u64::SZ_4K;
                }
            }
            let tables = bar.vmm().tables();
            // (reservation size, offset of the map, its size)
            let cases = [
                (u64::SZ_2M + u64::SZ_64K, u64::SZ_2M, u64::SZ_4K),
                (
                    u64::SZ_2M + u64::SZ_64K,
                    u64::SZ_2M + 7 * u64::SZ_4K,
                    u64::SZ_4K,
                ),
                (
                    u64::SZ_2M + u64::SZ_64K,
                    u64::SZ_2M + u64::SZ_64K - u64::SZ_4K,
                    u64::SZ_4K,
                ),
                (
                    u64::SZ_2M + 3 * u64::SZ_64K,
                    u64::SZ_2M + 2 * u64::SZ_64K - u64::SZ_4K,
                    2 * u64::SZ_4K,
                ),
                (2 * u64::SZ_2M, u64::SZ_64K, u64::SZ_64K),
                (2 * u64::SZ_2M, u64::SZ_2M + 3 * u64::SZ_4K, u64::SZ_4K),
            ];
            for (size, off, len) in cases {
                let res = bar.vmm().reserve(size, u64::SZ_2M, None, true)?;
                let base = res.range().start;
                let moff = off % u64::SZ_2M;
                let span =
                    (off & !(u64::SZ_2M - 1))..((off & !(u64::SZ_2M - 1)) + u64::SZ_2M).min(size);
                let check = |mapped: bool| -> Result {
                    let mut o = span.start;
                    while o < span.end {
                        let inside = mapped && o >= off && o < off + len;
                        let want = if inside {
                            tag(mem.start() + moff + (o - off))
                        } else {
                            0
                        };
                        let got = raw_read64(bar, base + o)?;
                        if got != want {
                            kernel::kunit::err(fmt!(
                                "sparse range of {:#x}, map at +{:#x}..+{:#x}{}: +{:#x} reads {:#x}, want {:#x}\n",
                                size,
                                off,
                                off + len,
                                if mapped { "" } else { " (unmapped)" },
                                o,
                                got,
                                want
                            ));
                            return Err(EINVAL);
                        }
                        o += u64::SZ_4K;
                    }
                    Ok(())
                };
                check(false)?;
                let m = res.map(off, &mem, moff, len, Access::ReadWrite)?;
                check(true)?;
                drop(m);
                check(false)?;
                drop(res);
                ensure_eq!(bar.vmm().tables(), tables);
            }
            Ok(())
        })
    }

    /// Bad requests: zero or unaligned sizes, ranges outside the allocation, more than BAR1
    /// holds (ENOSPC); none leaves a table or a reservation behind.
    #[test]
    fn bar1_bad_input() -> Result {
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let tables = bar.vmm().tables();
            let mem = contiguous(mm, u64::SZ_64K, u64::SZ_64K)?;
            ensure_eq!(
                bar.map(&mem, 0, 0, Access::ReadWrite, None).err(),
                Some(EINVAL)
            );
            ensure_eq!(
                bar.map(&mem, 0, 100, Access::ReadWrite, None).err(),
                Some(EINVAL)
            );
            ensure_eq!(
                bar.map(&mem, u64::SZ_64K, u64::SZ_4K, Access::ReadWrite, None)
                    .err(),
                Some(ERANGE)
            );
            ensure_eq!(
                bar.map(&mem, 0, 2 * u64::SZ_64K, Access::ReadWrite, None)
                    .err(),
                Some(ERANGE)
            );
            let big = Arc::new(
                mm.vram()
                    .alloc(&AllocRequest::new(bar.size() + u64::SZ_64K))?,
                GFP_KERNEL,
            )?;
            ensure_eq!(
                bar.map(&big, 0, big.size(), Access::ReadWrite, None).err(),
                Some(ENOSPC)
            );
            ensure_eq!(
                bar.map(&mem, 0, u64::SZ_4K, Access::ReadWrite, Some(bar.size()))
                    .err(),
                Some(EEXIST)
            );
            ensure_eq!(bar.vmm().tables(), tables);
            // The whole of BAR1 can still be reserved: nothing was left behind.
            let all = bar.vmm().reserve(bar.size(), u64::SZ_4K, None, false)?;
            drop(all);
            Ok(())
        })
    }

    /// The exact bounds of a BAR1 mapping's accessors and copies, and of [`BarUser::raw_read32`].
    /// Mapping `a` of 64 KiB is followed in BAR1 by mapping `b` of the next 64 KiB of VRAM, so
    /// that an access past `a`'s end would land in VRAM; `t` maps the same VRAM as `a` at the
    /// top of BAR1. Around the end of `a` and of `t`: reads and writes of every width and copies
    /// of 0 to 24 bytes ending exactly at the end, a byte past it, starting at it, starting a
    /// byte before it, and wrapping. An admitted access makes exactly its BAR1 accesses and
    /// touches exactly its bytes; a refused one is `ERANGE`, makes no BAR1 access, leaves a
    /// read buffer untouched and the VRAM around the end (read through PRAMIN) as it was.
    #[test]
    fn bar1_bounds() -> Result {
        /// Size of each mapping.
        const S: u64 = u64::SZ_64K;
        /// Bytes of the checked VRAM, half below the end of `a`'s memory, half above.
        const N: usize = 64;
        /// Fills `N` bytes of VRAM at `lo` with `pat` through PRAMIN.
        fn set(mm: &GpuMm<'_>, lo: u64, pat: &[u8; N]) -> Result {
            let mut w = mm.pramin().access(mm.bar());
            for (a, q) in (lo..).step_by(8).zip(pat.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(q);
                w.write64(a, u64::from_le_bytes(b))?;
            }
            Ok(())
        }
        /// Reads `N` bytes of VRAM at `lo` through PRAMIN.
        fn get(mm: &GpuMm<'_>, lo: u64) -> Result<[u8; N]> {
            let mut out = [0u8; N];
            let mut w = mm.pramin().access(mm.bar());
            for (a, q) in (lo..).step_by(8).zip(out.chunks_exact_mut(8)) {
                q.copy_from_slice(&w.read64(a)?.to_le_bytes());
            }
            Ok(out)
        }
        /// Reads `w` bytes at `off` of `m`, as the matching accessor does.
        fn read(m: &BarMapping<'_>, w: u64, off: u64) -> Result<u64> {
            Ok(match w {
                1 => u64::from(m.read8(off)?),
                2 => u64::from(m.read16(off)?),
                4 => u64::from(m.read32(off)?),
                _ => m.read64(off)?,
            })
        }
        /// Writes the low `w` bytes of `v` at `off` of `m` with the matching accessor.
        fn write(m: &BarMapping<'_>, w: u64, off: u64, v: u64) -> Result {
            let b = v.to_le_bytes();
            match w {
                1 => m.write8(off, b[0]),
                2 => m.write16(off, u16::from_le_bytes([b[0], b[1]])),
                4 => m.write32(off, u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                _ => m.write64(off, v),
            }
        }
        /// The accesses a copy of `len` bytes from `off` makes: 64-bit where aligned, else bytes.
        fn steps(off: u64, len: u64) -> u64 {
            let (mut i, mut n) = (0, 0);
            while i < len {
                i += if (off + i) % 8 == 0 && len - i >= 8 {
                    8
                } else {
                    1
                };
                n += 1;
            }
            n
        }
        on_each_bar(|gpu, bar| {
            let mm = gpu.mm();
            let st = bar.info().stats;
            let counts = || (st.reads.load(Relaxed), st.writes.load(Relaxed));
            let mem = contiguous(mm, 2 * S, 2 * S)?;
            // Room for both halves, found by mapping them once.
            let at = bar.map(&mem, 0, 2 * S, Access::ReadWrite, None)?.offset();
            let a = bar.map(&mem, 0, S, Access::ReadWrite, Some(at))?;
            let _b = bar.map(&mem, S, S, Access::ReadWrite, Some(at + S))?;
            let t = bar.map(&mem, 0, S, Access::ReadWrite, Some(bar.size() - S))?;
            // CAST: `N` is 64.
            let half = N as u64 / 2;
            let lo = mem.start() + S - half;
            let mut pat = [0u8; N];
            for (i, p) in pat.iter_mut().enumerate() {
                // CAST: a byte pattern.
                *p = 0x40 ^ (i as u8).wrapping_mul(13);
            }
            // Index in the region of byte `off` of a mapping (`off` is at most `half` below the end).
            // CAST: below `N` for every admitted access.
            let ix = |off: u64| (off + half - S) as usize;
            let (mut admitted, mut refused) = (0, 0);
            for (name, m) in [("a", &a), ("t", &t)] {
                // Single accesses of every width.
                for w in [1u64, 2, 4, 8] {
                    let offs = [
                        S - 2 * w,
                        S - w,
                        S - w + 1,
                        S - 1,
                        S,
                        S + 1,
                        S + w,
                        u64::MAX - (w - 1),
                        u64::MAX,
                    ];
                    for off in offs {
                        let ok = off % w == 0 && off.checked_add(w).is_some_and(|e| e <= S);
                        let want = if ok { Ok(()) } else { Err(ERANGE) };
                        // A read.
                        set(mm, lo, &pat)?;
                        let c0 = counts();
                        let got = read(m, w, off);
                        let c1 = counts();
                        ensure_eq!((name, w, off, got.map(|_| ())), (name, w, off, want));
                        if let Ok(v) = got {
                            let i = ix(off);
                            let mut b = [0u8; 8];
                            // CAST: `w` is at most 8.
                            b[..w as usize].copy_from_slice(&pat[i..i + w as usize]);
                            ensure_eq!((name, w, off, v), (name, w, off, u64::from_le_bytes(b)));
                        }
                        ensure_eq!(
                            (name, w, off, c1.0 - c0.0, c1.1 - c0.1),
                            (name, w, off, u64::from(ok), 0)
                        );
                        // A write.
                        let v = 0xe1e2_e3e4_e5e6_e7e8u64;
                        let c0 = counts();
                        let got = write(m, w, off, v);
                        let c1 = counts();
                        ensure_eq!((name, w, off, got), (name, w, off, want));
                        ensure_eq!(
                            (name, w, off, c1.0 - c0.0, c1.1 - c0.1),
                            (name, w, off, 0, u64::from(ok))
                        );
                        let mut expect = pat;
                        if ok {
                            let i = ix(off);
                            // CAST: `w` is at most 8.
                            let n = w as usize;
                            expect[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
                            admitted += 1;
                        } else {
                            refused += 1;
                        }
                        ensure_eq!((name, w, off, get(mm, lo)?), (name, w, off, expect));
                    }
                }
                // Copies, both ways.
                let mut cases = KVec::new();
                for len in [0u64, 1, 7, 8, 9, 16, 17, 24] {
                    for off in [S - len, S - len + 1, S - 1, S, S + 1] {
                        cases.push((off, len), GFP_KERNEL)?;
                    }
                }
                for c in [(S - 29, 29), (S - 29, 30), (u64::MAX, 1), (u64::MAX, 0)] {
                    cases.push(c, GFP_KERNEL)?;
                }
                for &(off, len) in cases.iter() {
                    let ok = off.checked_add(len).is_some_and(|e| e <= S);
                    let want = if ok { Ok(()) } else { Err(ERANGE) };
                    let n = usize::try_from(len)?;
                    let acc = if ok { steps(off, len) } else { 0 };
                    // Into the mapping.
                    set(mm, lo, &pat)?;
                    let mut src = [0u8; 32];
                    for (i, b) in src.iter_mut().enumerate() {
                        // CAST: a byte pattern.
                        *b = 0xc0 | i as u8;
                    }
                    let c0 = counts();
                    let got = m.copy_from_slice(off, &src[..n]);
                    let c1 = counts();
                    ensure_eq!((name, off, len, got), (name, off, len, want));
                    ensure_eq!(
                        (name, off, len, c1.0 - c0.0, c1.1 - c0.1),
                        (name, off, len, 0, acc)
                    );
                    let mut expect = pat;
                    if ok && n > 0 {
                        let i = ix(off);
                        expect[i..i + n].copy_from_slice(&src[..n]);
                    }
                    ensure_eq!((name, off, len, get(mm, lo)?), (name, off, len, expect));
                    // Out of the mapping.
                    set(mm, lo, &pat)?;
                    let mut dst = [0xeeu8; 32];
                    let c0 = counts();
                    let got = m.copy_to_slice(off, &mut dst[..n]);
                    let c1 = counts();
                    ensure_eq!((name, off, len, got), (name, off, len, want));
                    ensure_eq!(
                        (name, off, len, c1.0 - c0.0, c1.1 - c0.1),
                        (name, off, len, acc, 0)
                    );
                    let mut expect = [0xeeu8; 32];
                    if ok && n > 0 {
                        let i = ix(off);
                        expect[..n].copy_from_slice(&pat[i..i + n]);
                    }
                    ensure_eq!((name, off, len, dst), (name, off, len, expect));
                    if ok {
                        admitted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            // The raw read at the end of BAR1, where `t` ends.
            let end = bar.size();
            for off in [
                end - 8,
                end - 4,
                end - 3,
                end - 1,
                end,
                end + 4,
                u64::MAX - 3,
            ] {
                let ok = off % 4 == 0 && off.checked_add(4).is_some_and(|e| e <= end);
                set(mm, lo, &pat)?;
                let c0 = counts();
                let got = bar.raw_read32(off);
                let c1 = counts();
                let want = if ok {
                    let i = ix(off - (end - S));
                    Ok(u32::from_le_bytes([
                        pat[i],
                        pat[i + 1],
                        pat[i + 2],
                        pat[i + 3],
                    ]))
                } else {
                    Err(ERANGE)
                };
                ensure_eq!((off, got), (off, want));
                ensure_eq!((off, c1.0 - c0.0, c1.1 - c0.1), (off, u64::from(ok), 0));
            }
            ensure!(admitted >= 20 && refused >= 40);
            drop((a, t));
            Ok(())
        })
    }
}
