// SPDX-License-Identifier: GPL-2.0

//! Helpers of the KUnit suites, and the device suite on chip identity.

use kernel::{
    bindings,
    prelude::*, //
};

/// Marks the running KUnit test as skipped, with `reason` as its KTAP comment.
///
/// Does nothing outside a KUnit test.
pub(crate) fn skip(reason: &CStr) {
    // SAFETY: `kunit_get_current_test()` has no preconditions.
    let test = unsafe { bindings::kunit_get_current_test() };
    if test.is_null() {
        return;
    }
    // SAFETY: `test` is the running test, valid for the duration of the call; only this test's
    // thread writes its status while it runs.
    let test = unsafe { &mut *test };
    test.status = bindings::kunit_status_KUNIT_SKIPPED;
    let reason = reason.to_bytes();
    let n = reason.len().min(test.status_comment.len() - 1);
    for (dst, src) in test.status_comment.iter_mut().zip(&reason[..n]) {
        // CAST: `c_char` is `i8` or `u8` depending on the architecture; this is a byte copy.
        *dst = *src as kernel::ffi::c_char;
    }
    test.status_comment[n] = 0;
}

/// Checks a condition inside a device closure; on failure logs where and returns `EINVAL`.
///
/// A failed KUnit assertion ends the test thread on the spot, which inside
/// [`crate::devices::for_each`] would leave the device list (and any PRAMIN window) locked for
/// good. Device closures check with this instead and the failure propagates as an error, which
/// fails the test after the locks are released.
macro_rules! ensure {
    ($cond:expr) => {
        if !$cond {
            kernel::kunit::err(fmt!(
                "    # {}:{}: check failed: {}\n",
                file!(),
                line!(),
                stringify!($cond)
            ));
            return Err(EINVAL);
        }
    };
}

/// Like [`ensure!`], for equality; logs both values.
macro_rules! ensure_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            kernel::kunit::err(fmt!(
                "    # {}:{}: check failed: {} == {} ({:?} != {:?})\n",
                file!(),
                line!(),
                stringify!($a),
                stringify!($b),
                a,
                b
            ));
            return Err(EINVAL);
        }
    }};
}

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
        devices,
        driver::NovaMm,
        gpu::Spec,
        regs, //
    };

    /// Each bound GPU's identity read again through BAR0 is the one probe found, and the chips
    /// bound are the ones the model was told to be.
    #[test]
    fn identity_matches_model() -> Result {
        let mut expected = expected_chipsets();
        let mut seen = 0;
        let n = devices::for_each(|gpu: &NovaMm<'_>| {
            let boot0 = gpu.bar.read(regs::NV_PMC_BOOT_0).into_raw();
            let boot42 = gpu.bar.read(regs::NV_PMC_BOOT_42).into_raw();
            let spec = Spec::identify(boot0, boot42).map_err(Error::from)?;
            ensure_eq!(spec, gpu.spec);
            // The PCI vendor must be NVIDIA's.
            ensure_eq!(u32::from(gpu.pdev.vendor_id().as_raw()), 0x10de);
            let code = spec.chipset as u32;
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

/// Returns the VRAM size in bytes the harness declared for `chipset` (`nova_mm.expect_vram_gib`,
/// in the order of `nova_mm.expect_chipsets`), if any.
pub(crate) fn expected_vram(chipset: u32) -> Option<u64> {
    let chips = expected_chipsets();
    let i = chips.iter().position(|&c| c == chipset)?;
    let packed = crate::module_parameters::expect_vram_gib.value();
    let gib = (packed >> (12 * i)) & 0xfff;
    (gib != 0).then_some(gib << 30)
}

#[kunit_tests(nova_mm_device_mm)]
mod device_mm {
    use super::*;
    use crate::{
        devices,
        driver::NovaMm,
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

    /// Runs `f` on every bound GPU; marks the test skipped when there is none.
    fn on_each_gpu(f: impl FnMut(&NovaMm<'_>) -> Result) -> Result {
        if devices::for_each(f)? == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }

    /// The usable VRAM is what the firmware registers of the model describe, minus the reserved
    /// top, and the allocator manages exactly that.
    #[test]
    fn usable_vram_matches_model() -> Result {
        on_each_gpu(|gpu| {
            if let Some(size) = expected_vram(gpu.spec.chipset as u32) {
                ensure_eq!(gpu.layout.fb.end, size);
            }
            let usable = gpu.vram.range();
            ensure!(usable.end <= gpu.layout.fb.end);
            ensure_eq!(gpu.vram.stats().total, usable.end - usable.start);
            for r in gpu.layout.reserved() {
                ensure!(r.range.start >= usable.end || r.range.end <= usable.start);
            }
            Ok(())
        })
    }

    /// Patterns written through PRAMIN read back, across window boundaries and at the top of
    /// usable VRAM; the window moves only when an access leaves it.
    #[test]
    fn pramin_patterns() -> Result {
        on_each_gpu(|gpu| {
            let bar = &gpu.bar;
            // 2 MiB, 1 MiB aligned: spans two window positions.
            let buf = gpu
                .vram
                .alloc(&AllocRequest::new(2 * MIB).contiguous().aligned(MIB))?;
            let base = buf.start();
            let moves0 = gpu.pramin.stats.window_moves.load(Relaxed);
            {
                let mut w = gpu.pramin.access(bar);
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
            let moves = gpu.pramin.stats.window_moves.load(Relaxed) - moves0;
            // Writes across the boundary: at most two positions; then back down and up again.
            ensure!(moves <= 6);
            drop(buf);

            // The last word of usable VRAM.
            let top = gpu
                .vram
                .alloc(&AllocRequest::new(64 * 1024).placed(Placement::TopDown))?;
            let end = gpu.vram.range().end;
            ensure_eq!(top.start() + 64 * 1024, end);
            let mut w = gpu.pramin.access(bar);
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
                .vram
                .alloc(&AllocRequest::new(2 * MIB).contiguous().aligned(MIB))?;
            let base = buf.start();
            // 1 MiB + 64 KiB of zeros from a 64 KiB boundary: exactly two window positions.
            let start = base + 64 * 1024;
            let count = (MIB + 64 * 1024) / 8;
            let s = &gpu.pramin.stats;
            let w0 = s.writes.load(Relaxed);
            let mut w = gpu.pramin.access(&gpu.bar);
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
            let end = gpu.vram.range().end;
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
            let lo = gpu.vram.range().start;
            let buf = gpu.vram.alloc(
                &AllocRequest::new(4 * MIB)
                    .contiguous()
                    .placed(Placement::Within(lo..lo + 64 * MIB)),
            )?;
            let base = buf.start();
            let mut w = gpu.pramin.access(&gpu.bar);
            for off in [8, MIB + 0x1_2340, 3 * MIB + 0xf_fff8] {
                let addr = base + off;
                let val = 0x4e4f_5641_0000_0000 | (addr >> 3);
                w.write64(addr, val)?;
                ensure_eq!(w.read64(addr)?, val);
                pr_info!(
                    "NOVA-MARK {:#x} {:#x} {:#x}\n",
                    gpu.spec.chipset as u32,
                    addr,
                    val
                );
            }
            // The allocation is freed, but nothing else is placed this low in the tests.
            Ok(())
        })
    }

    /// Addresses outside the driver's VRAM are refused before the hardware is touched.
    #[test]
    fn pramin_refuses_reserved() -> Result {
        on_each_gpu(|gpu| {
            let end = gpu.vram.range().end;
            let s = &gpu.pramin.stats;
            let before = (
                s.reads.load(Relaxed),
                s.writes.load(Relaxed),
                s.window_moves.load(Relaxed),
            );
            let mut w = gpu.pramin.access(&gpu.bar);
            ensure_eq!(w.write32(end, 1), Err(ERANGE));
            ensure_eq!(w.read32(gpu.layout.fb.end - 4), Err(ERANGE));
            ensure_eq!(w.read64(gpu.layout.fb.end), Err(ERANGE));
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
            let pd = gpu.vram.alloc(&AllocRequest::new(4096))?;
            let n0 = gpu.tlb.stats.invalidates.load(Relaxed);
            let t0 = Instant::<Monotonic>::now();
            let res = gpu.tlb.invalidate(&gpu.bar, pd.start(), Scope::PdbHubOnly);
            let took = t0.elapsed();
            if crate::module_parameters::expect_tlb_hang.value() {
                ensure_eq!(res, Err(ETIMEDOUT));
                ensure!(took.as_micros_ceil() >= INVALIDATE_TIMEOUT.as_micros_ceil());
                ensure!(
                    took.as_micros_ceil()
                        < INVALIDATE_TIMEOUT.as_micros_ceil()
                            + Delta::from_millis(1000).as_micros_ceil()
                );
                ensure!(gpu.tlb.stats.timeouts.load(Relaxed) >= 1);
            } else {
                ensure_eq!(res, Ok(()));
                ensure_eq!(gpu.tlb.invalidate(&gpu.bar, pd.start(), Scope::All), Ok(()));
                ensure_eq!(gpu.tlb.invalidate(&gpu.bar, pd.start(), Scope::Pdb), Ok(()));
            }
            ensure!(gpu.tlb.stats.invalidates.load(Relaxed) > n0);
            // A misaligned page directory is refused without touching the hardware.
            let n1 = gpu.tlb.stats.invalidates.load(Relaxed);
            ensure_eq!(
                gpu.tlb.invalidate(&gpu.bar, pd.start() + 8, Scope::Pdb),
                Err(EINVAL)
            );
            ensure_eq!(gpu.tlb.stats.invalidates.load(Relaxed), n1);
            Ok(())
        })
    }
}
