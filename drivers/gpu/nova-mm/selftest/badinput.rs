// SPDX-License-Identifier: GPL-2.0

//! Bad input to every entry point of the memory-management layer, on each bound GPU.
//!
//! One table of cases, run against [`crate::mm::GpuMm`]: [`Vram`](crate::mm::vram::Vram)
//! allocation, the PRAMIN window, TLB invalidation, address-space creation, reservation and
//! mapping ([`Vmm`], [`Reservation`]), and BAR1 ([`BarUser`], [`BarMapping`]). Each case makes one
//! bad call (after some setup for the exhaustion and fault-injection cases) and checks:
//!
//! 1. the exact error it returns;
//! 2. that the state is exactly as before: VRAM accounting (free, largest free range, live
//!    allocations, bytes and extents known to be zero), the page-table pool (tables in use,
//!    chunks, known-zero free slots), the live address spaces, the test address space's and
//!    BAR1's reservations, mappings and tables, BAR1 access counts;
//! 3. that no MMIO was made at all: BAR0 reads and writes, PRAMIN accesses and window moves, TLB
//!    invalidates. This holds for the failures in the middle of a map too: a map allocates
//!    everything it needs before its first write (prepare, then execute), so a page-table or
//!    VRAM allocation failing half-way leaves nothing written, and the shadow shows the range
//!    unmapped.
//!
//! A case that does not apply to a GPU (no BAR1 bound, no VRAM below the usable range) is
//! skipped and not counted. The number of cases run is printed once per GPU for the harness:
//! `NOVA-BADINPUT cases=<n>`.

use kernel::prelude::*;

#[kunit_tests(nova_mm_device_badinput)]
mod device_badinput {
    use core::ops::Range;

    use kernel::sizes::SizeConstants;
    use kernel::{
        fmt,
        prelude::*,
        sync::{
            atomic::Relaxed,
            Arc, //
        },
    };

    use crate::{
        mm::{
            bar::{
                BarMapping,
                BarUser, //
            },
            pagetable::{
                Access,
                Entry, //
            },
            ptpool::{
                PtMem,
                CHUNK_SLOTS_U64, //
            },
            tlb::Scope,
            vmm::{
                Mapping,
                Reservation,
                Vmm, //
            },
            vram::{
                AllocRequest,
                Placement,
                Vram,
                VramAllocation,
                VramStats,
                Zero, //
            },
            GpuMm,
        },
        selftest::devices,
        selftest::tests::{
            skip,
            skip_if_readonly, //
        },
        selftest::TestedGpu,
    };

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// The test address space: 1 TiB from 0.
    const SPACE: u64 = 1 << 40;
    /// Where the test reservation lies in it (2 MiB).
    const RES_AT: u64 = GIB;
    /// Where the test mapping lies in the reservation (64 KiB).
    const BUSY_AT: u64 = MIB;
    /// A 2 MiB reservation where no page table exists yet: a map there needs three new tables
    /// (PD1, PD0 and a small page table, on both formats).
    const FAR_AT: u64 = 1 << 39;
    /// A VA where a sparse reservation needs new tables the same way.
    const FAR_SPARSE_AT: u64 = 3 << 38;

    /// The entry point a case exercises (for the count per entry point).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Api {
        Vram,
        Pramin,
        Tlb,
        Vmm,
        Reserve,
        Map,
        Bar,
    }

    const APIS: [Api; 7] = [
        Api::Vram,
        Api::Pramin,
        Api::Tlb,
        Api::Vmm,
        Api::Reserve,
        Api::Map,
        Api::Bar,
    ];

    /// What a case's bad call returned.
    enum Got {
        /// The call's result (its value, if any, dropped).
        Ret(Result),
        /// The case does not apply to this GPU.
        Na,
    }

    /// One bad call and the error it must return.
    struct Case {
        name: &'static str,
        api: Api,
        want: Error,
        /// Makes the call. An error of its own (setup, or a check inside) fails the case.
        run: fn(&Fx<'_, '_>) -> Result<Got>,
    }

    fn ret<T>(r: Result<T>) -> Result<Got> {
        Ok(Got::Ret(r.map(drop)))
    }

    /// BAR1 and a mapping of [`Fx::mem`] in it.
    struct BarFx<'f, 'a> {
        user: &'f BarUser<'a>,
        map: BarMapping<'a>,
        /// More VRAM than BAR1 holds.
        big: Arc<VramAllocation>,
    }

    /// What the cases work on, set up once per GPU before any case runs.
    struct Fx<'f, 'a> {
        gpu: &'f TestedGpu<'a>,
        mm: &'f GpuMm<'a>,
        vmm: Arc<Vmm<'a>>,
        /// 2 MiB at [`RES_AT`].
        res: Reservation<'a>,
        /// 2 MiB at [`FAR_AT`], nothing mapped.
        far: Reservation<'a>,
        /// 64 KiB, contiguous and 64 KiB aligned.
        mem: Arc<VramAllocation>,
        /// 4 MiB.
        mem4m: Arc<VramAllocation>,
        /// `mem` mapped at [`BUSY_AT`] in `res`.
        _busy: Mapping<'a>,
        /// 64 KiB of an allocator of its own over memory that is not this GPU's usable VRAM
        /// (the firmware-reserved top): what another GPU's allocation looks like to this one.
        foreign: Arc<VramAllocation>,
        bar: Option<BarFx<'f, 'a>>,
    }

    impl Fx<'_, '_> {
        fn usable(&self) -> Range<u64> {
            self.mm.vram().range()
        }

        fn fb_end(&self) -> u64 {
            self.gpu.layout().fb.end
        }
    }

    /// Holds all free VRAM; gives it back on drop with what was known to be zero still known.
    struct Fill(KVec<VramAllocation>);

    impl Drop for Fill {
        fn drop(&mut self) {
            for a in self.0.drain_all() {
                let mut parts = KVec::new();
                for p in a.zero_parts() {
                    if parts.push(p.clone(), GFP_KERNEL).is_err() {
                        break;
                    }
                }
                // Never written: the parts known zero still are.
                a.free_cleared(&parts);
            }
        }
    }

    /// Allocates every free byte of VRAM (no MMIO).
    fn fill_vram(mm: &GpuMm<'_>) -> Result<Fill> {
        let mut fill = Fill(KVec::new());
        loop {
            let free = mm.vram().stats().free;
            if free == 0 {
                return Ok(fill);
            }
            fill.0
                .push(mm.vram().alloc(&AllocRequest::new(free))?, GFP_KERNEL)?;
        }
    }

    /// Holds page-table slots; frees them with their known-zero state as it was.
    struct Slots(KVec<PtMem>);

    impl Drop for Slots {
        fn drop(&mut self) {
            for m in self.0.iter_mut() {
                // Never written.
                let z = m.known_zero();
                m.set_zero(z);
            }
        }
    }

    /// Free table slots of the pool's chunks.
    fn free_slots(mm: &GpuMm<'_>) -> u64 {
        // CAST: 64 slots per chunk.
        mm.pool().footprint().0 * CHUNK_SLOTS_U64 - mm.pool().in_use()
    }

    /// Takes page-table slots until `left` are free.
    fn hold_slots(mm: &GpuMm<'_>, left: u64) -> Result<Slots> {
        let mut s = Slots(KVec::new());
        while free_slots(mm) != left {
            s.0.push(mm.pool().alloc()?, GFP_KERNEL)?;
        }
        Ok(s)
    }

    /// Fills BAR1's address space with reservations (no MMIO: none is sparse).
    fn fill_bar1<'a>(bar: &BarUser<'a>) -> Result<KVec<Reservation<'a>>> {
        let mut held = KVec::new();
        let mut size = bar.size();
        while size >= u64::SZ_4K {
            match bar.vmm().reserve(size, u64::SZ_4K, None, false) {
                Ok(r) => held.push(r, GFP_KERNEL)?,
                Err(e) if e == ENOSPC => size /= 2,
                Err(e) => return Err(e),
            }
        }
        Ok(held)
    }

    /// A text sink for [`Space::show`](crate::mm::vmm::Space::show).
    struct Text(KVec<u8>);

    impl fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0
                .extend_from_slice(s.as_bytes(), GFP_KERNEL)
                .map_err(|_| fmt::Error)
        }
    }

    struct Show<'v, 'a>(&'v Vmm<'a>);

    impl core::fmt::Display for Show<'_, '_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.show(f)
        }
    }

    /// The reservations, mappings and table count of `vmm`, as debugfs shows them.
    fn text(vmm: &Vmm<'_>) -> Result<KVec<u8>> {
        let mut t = Text(KVec::new());
        core::fmt::write(&mut t, core::format_args!("{}", Show(vmm))).map_err(|_| ENOMEM)?;
        Ok(t.0)
    }

    /// Everything a refused call must leave as it was.
    struct Snap {
        vram: VramStats,
        /// Tables in use, chunks, VRAM of the chunks, tables handed out and not returned,
        /// free slots known to be zero.
        pool: (u64, u64, u64, u64, u64),
        spaces: u64,
        tables: u64,
        show: KVec<u8>,
        /// Tables, reservations and mappings, CPU reads and writes.
        bar1: Option<(u64, KVec<u8>, u64, u64)>,
        /// BAR0 reads and writes.
        mmio: (u64, u64),
        /// PRAMIN reads, writes, window moves; zeroing writes of zeroed allocations.
        pramin: (u64, u64, u64, u64),
        /// TLB invalidates, register writes and reads.
        tlb: (u64, u64, u64),
    }

    fn snap(f: &Fx<'_, '_>) -> Result<Snap> {
        let mm = f.mm;
        let p = &mm.pool();
        let (chunks, bytes) = p.footprint();
        let mut spaces = 0;
        let _ = mm.spaces().for_each(|_| {
            spaces += 1;
            Ok(())
        });
        let bar1 = match &f.bar {
            Some(b) => {
                let s = b.user.info().stats;
                Some((
                    b.user.vmm().tables(),
                    text(b.user.vmm())?,
                    s.reads.load(Relaxed),
                    s.writes.load(Relaxed),
                ))
            }
            None => None,
        };
        let (ms, ps, ts) = (
            mm.bar().stats().snapshot(),
            mm.pramin().stats.snapshot(),
            mm.tlb().stats.snapshot(),
        );
        Ok(Snap {
            vram: mm.vram().stats(),
            pool: (
                p.in_use(),
                chunks,
                bytes,
                p.stats.allocs.load(Relaxed) - p.stats.frees.load(Relaxed),
                p.zero_free(),
            ),
            spaces,
            tables: f.vmm.tables(),
            show: text(&f.vmm)?,
            bar1,
            mmio: (ms.reads, ms.writes),
            // `refused` and `flushes` are left out: a refused access counts itself.
            pramin: (ps.reads, ps.writes, ps.window_moves, mm.zero_fill_writes()),
            tlb: (ts.invalidates, ts.reg_writes, ts.reg_reads),
        })
    }

    fn same_text(what: &str, a: &[u8], b: &[u8]) -> Result {
        if a != b {
            let s = |t| core::str::from_utf8(t).unwrap_or("(not UTF-8)");
            kernel::kunit::err(fmt!(
                "    # {} changed:\n--- before\n{}--- after\n{}",
                what,
                s(a),
                s(b)
            ));
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Checks that nothing of `a` changed in `b`.
    fn same(a: &Snap, b: &Snap) -> Result {
        ensure_eq!(a.mmio, b.mmio);
        ensure_eq!(a.pramin, b.pramin);
        ensure_eq!(a.tlb, b.tlb);
        ensure_eq!(a.vram, b.vram);
        ensure_eq!(a.pool, b.pool);
        ensure_eq!(a.spaces, b.spaces);
        ensure_eq!(a.tables, b.tables);
        same_text("test address space", &a.show, &b.show)?;
        match (&a.bar1, &b.bar1) {
            (Some(x), Some(y)) => {
                ensure_eq!((x.0, x.2, x.3), (y.0, y.2, y.3));
                same_text("BAR1 address space", &x.1, &y.1)?;
            }
            (None, None) => {}
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    /// Makes the `n`-th page-table allocation from now fail, runs `f`, disarms.
    fn with_pt_failure<T>(f: &Fx<'_, '_>, n: u64, op: impl FnOnce() -> Result<T>) -> Result<Got> {
        f.mm.pool().fail_nth(n);
        let r = op();
        f.mm.pool().fail_nth(0);
        ret(r)
    }

    /// A map at [`FAR_AT`] whose `n`-th page-table allocation fails (of the three it needs).
    fn map_far_failing(f: &Fx<'_, '_>, n: u64) -> Result<Got> {
        with_pt_failure(f, n, || {
            f.far.map(0, &f.mem, 0, u64::SZ_4K, Access::ReadWrite)
        })
    }

    /// A sparse reservation at [`FAR_SPARSE_AT`] whose `n`-th table allocation fails.
    fn sparse_failing(f: &Fx<'_, '_>, n: u64) -> Result<Got> {
        with_pt_failure(f, n, || {
            f.vmm
                .reserve(u64::SZ_4K, u64::SZ_4K, Some(FAR_SPARSE_AT), true)
        })
    }

    fn bar<'x, 'f, 'a>(f: &'x Fx<'f, 'a>) -> Option<&'x BarFx<'f, 'a>> {
        f.bar.as_ref()
    }

    /// Runs `op` on BAR1, or does not apply without it.
    fn on_bar<'x, 'f, 'a, T>(
        f: &'x Fx<'f, 'a>,
        op: impl FnOnce(&'x BarFx<'f, 'a>) -> Result<T>,
    ) -> Result<Got> {
        match bar(f) {
            Some(b) => ret(op(b)),
            None => Ok(Got::Na),
        }
    }

    fn req(size: u64) -> AllocRequest {
        AllocRequest::new(size)
    }

    fn alloc(f: &Fx<'_, '_>, r: AllocRequest) -> Result<Got> {
        ret(f.mm.vram().alloc(&r))
    }

    fn within(f: &Fx<'_, '_>, size: u64, r: Range<u64>) -> Result<Got> {
        alloc(f, req(size).placed(Placement::Within(r)))
    }

    fn pramin<T>(
        f: &Fx<'_, '_>,
        op: impl FnOnce(&mut crate::mm::pramin::PraminAccess<'_, '_>) -> Result<T>,
    ) -> Result<Got> {
        let mut w = f.mm.pramin().access(f.mm.bar());
        ret(op(&mut w))
    }

    fn new_vmm(f: &Fx<'_, '_>, va: Range<u64>) -> Result<Got> {
        ret(f.mm.new_vmm("kunit-badinput-new", va))
    }

    /// The end of the VA range of the chip's MMU format (49 bits for v2, 57 for v3).
    fn va_limit(f: &Fx<'_, '_>) -> u64 {
        if f.mm.format_version() == 3 {
            1 << 57
        } else {
            1 << 49
        }
    }

    fn reserve(f: &Fx<'_, '_>, size: u64, align: u64, at: Option<u64>) -> Result<Got> {
        ret(f.vmm.reserve(size, align, at, false))
    }

    fn map(
        f: &Fx<'_, '_>,
        off: u64,
        mem: &Arc<VramAllocation>,
        moff: u64,
        size: u64,
    ) -> Result<Got> {
        ret(f.res.map(off, mem, moff, size, Access::ReadWrite))
    }

    fn bar_map(f: &Fx<'_, '_>, moff: u64, size: u64, at: Option<u64>) -> Result<Got> {
        on_bar(f, |b| b.user.map(&f.mem, moff, size, Access::ReadWrite, at))
    }

    const U64_PAGE_MAX: u64 = u64::MAX & !(u64::SZ_4K - 1);

    /// The cases. Expected errors are those the entry points document: `EINVAL` for zero,
    /// unaligned or malformed requests, `ERANGE` for ranges outside what the call may touch,
    /// `EEXIST` for a fixed address that is taken or outside the space, `EBUSY` for a map over a
    /// mapping, `ENOSPC` when the allocator or the address space has no room, `ENOMEM` for
    /// page-table memory (injected), `EXDEV` for memory of another allocator.
    const CASES: &[Case] = &[
        // Vram::alloc, GpuMm::alloc_zeroed.
        Case {
            name: "vram: zero size",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(0)),
        },
        Case {
            name: "vram: size not a multiple of 4 KiB",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(1000)),
        },
        Case {
            name: "vram: 4 KiB + 1",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(u64::SZ_4K + 1)),
        },
        Case {
            name: "vram: alignment 0",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(u64::SZ_4K).aligned(0)),
        },
        Case {
            name: "vram: alignment not a power of two",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(u64::SZ_4K).aligned(3 * u64::SZ_4K)),
        },
        Case {
            name: "vram: alignment below 4 KiB",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(u64::SZ_4K).aligned(512)),
        },
        Case {
            name: "vram: size near 2^64",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(U64_PAGE_MAX)),
        },
        Case {
            name: "vram: larger than the allocator's range",
            api: Api::Vram,
            want: EINVAL,
            run: |f| alloc(f, req(f.usable().end + u64::SZ_4K)),
        },
        Case {
            name: "vram: more than is free",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| alloc(f, req(f.mm.vram().stats().free + u64::SZ_4K)),
        },
        Case {
            name: "vram: contiguous, more than the largest free range",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                alloc(
                    f,
                    req(f.mm.vram().stats().largest_free + u64::SZ_4K).contiguous(),
                )
            },
        },
        Case {
            name: "vram: within a range past the usable VRAM",
            api: Api::Vram,
            want: EINVAL,
            run: |f| within(f, u64::SZ_4K, f.fb_end()..f.fb_end() + MIB),
        },
        Case {
            name: "vram: within a range straddling the usable end",
            api: Api::Vram,
            want: EINVAL,
            run: |f| {
                within(
                    f,
                    u64::SZ_4K,
                    f.usable().end - u64::SZ_4K..f.usable().end + u64::SZ_4K,
                )
            },
        },
        Case {
            name: "vram: within a range below the usable start",
            api: Api::Vram,
            want: EINVAL,
            run: |f| {
                let s = f.usable().start;
                if s < u64::SZ_4K {
                    return Ok(Got::Na);
                }
                within(f, u64::SZ_4K, s - u64::SZ_4K..s + u64::SZ_4K)
            },
        },
        Case {
            name: "vram: within an empty range",
            api: Api::Vram,
            want: EINVAL,
            run: |f| {
                let s = f.usable().start;
                within(f, u64::SZ_4K, s..s)
            },
        },
        Case {
            name: "vram: within a reversed range",
            api: Api::Vram,
            want: EINVAL,
            run: |f| {
                let s = f.usable().start;
                within(f, u64::SZ_4K, s + MIB..s)
            },
        },
        Case {
            name: "vram: within an unaligned range",
            api: Api::Vram,
            want: EINVAL,
            run: |f| {
                let s = f.usable().start;
                within(f, u64::SZ_4K, s + 100..s + MIB)
            },
        },
        Case {
            name: "vram: within a range smaller than the size",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                let s = f.usable().end - 64 * MIB;
                within(f, 2 * u64::SZ_4K, s..s + u64::SZ_4K)
            },
        },
        Case {
            name: "vram: alignment larger than VRAM",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                if f.usable().start == 0 {
                    // Address 0 is aligned to anything.
                    return Ok(Got::Na);
                }
                alloc(f, req(u64::SZ_4K).aligned(1 << 62))
            },
        },
        Case {
            name: "vram: zeroed, zero size",
            api: Api::Vram,
            want: EINVAL,
            run: |f| ret(f.mm.alloc_zeroed(&req(0))),
        },
        Case {
            name: "vram: zeroed, more than is free",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                ret(f
                    .mm
                    .alloc_zeroed(&req(f.mm.vram().stats().free + u64::SZ_4K)))
            },
        },
        Case {
            name: "vram: exhausted, then 4 KiB",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                let fill = fill_vram(f.mm)?;
                ensure_eq!(f.mm.vram().stats().free, 0);
                let r = f.mm.vram().alloc(&req(u64::SZ_4K));
                drop(fill);
                ret(r)
            },
        },
        Case {
            name: "vram: exhausted, then zeroed 4 KiB (nothing zeroed)",
            api: Api::Vram,
            want: ENOSPC,
            run: |f| {
                let fill = fill_vram(f.mm)?;
                let r =
                    f.mm.alloc_zeroed(&req(u64::SZ_4K).zeroed(Zero::Required).contiguous());
                drop(fill);
                ret(r)
            },
        },
        // PRAMIN.
        Case {
            name: "pramin: read32 misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.read32(f.usable().start + 2)),
        },
        Case {
            name: "pramin: write32 misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.write32(f.usable().start + 1, 0)),
        },
        Case {
            name: "pramin: read64 misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.read64(f.usable().start + 4)),
        },
        Case {
            name: "pramin: write64 misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.write64(f.usable().start + 4, 0)),
        },
        Case {
            name: "pramin: write32 at the usable end",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.write32(f.usable().end, 0)),
        },
        Case {
            name: "pramin: read32 in the reserved top",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| {
                if f.fb_end() <= f.usable().end {
                    return Ok(Got::Na);
                }
                pramin(f, |w| w.read32(f.fb_end() - 4))
            },
        },
        Case {
            name: "pramin: write64 past the VRAM",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.write64(f.fb_end(), 0)),
        },
        Case {
            name: "pramin: write32 below the usable start",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| {
                let s = f.usable().start;
                if s < 4 {
                    return Ok(Got::Na);
                }
                pramin(f, |w| w.write32(s - 4, 0))
            },
        },
        Case {
            name: "pramin: read32 at 2^64 - 4 (end wraps)",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.read32(u64::MAX - 3)),
        },
        Case {
            name: "pramin: fill64 at 2^64 - 8 (end wraps)",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.fill64(u64::MAX - 7, 1, 0)),
        },
        Case {
            name: "pramin: fill64 count * 8 wraps",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.fill64(f.usable().start, u64::MAX / 4, 0)),
        },
        Case {
            name: "pramin: fill64 one word past the usable end",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| {
                let u = f.usable();
                pramin(f, |w| w.fill64(u.start, (u.end - u.start) / 8 + 1, 0))
            },
        },
        Case {
            name: "pramin: fill64 straddling the usable end",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.fill64(f.usable().end - 8, 2, 0)),
        },
        Case {
            name: "pramin: fill64 misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.fill64(f.usable().start + 4, 1, 0)),
        },
        Case {
            name: "pramin: write64_slice straddling the usable end (first word valid)",
            api: Api::Pramin,
            want: ERANGE,
            run: |f| pramin(f, |w| w.write64_slice(f.usable().end - 8, &[1, 2])),
        },
        Case {
            name: "pramin: write64_slice misaligned",
            api: Api::Pramin,
            want: EINVAL,
            run: |f| pramin(f, |w| w.write64_slice(f.usable().start + 4, &[1])),
        },
        // TLB invalidation.
        Case {
            name: "tlb: misaligned page directory",
            api: Api::Tlb,
            want: EINVAL,
            run: |f| {
                ret(f
                    .mm
                    .tlb()
                    .invalidate(f.mm.bar(), f.vmm.pdb() + 8, Scope::Pdb))
            },
        },
        Case {
            name: "tlb: page directory at 2^60",
            api: Api::Tlb,
            want: EINVAL,
            run: |f| {
                ret(f
                    .mm
                    .tlb()
                    .invalidate(f.mm.bar(), 1 << 60, Scope::PdbHubOnly))
            },
        },
        Case {
            name: "tlb: page directory near 2^64",
            api: Api::Tlb,
            want: EINVAL,
            run: |f| ret(f.mm.tlb().invalidate(f.mm.bar(), U64_PAGE_MAX, Scope::All)),
        },
        // Address spaces.
        Case {
            name: "vmm: empty range",
            api: Api::Vmm,
            want: EINVAL,
            run: |f| new_vmm(f, 0..0),
        },
        Case {
            name: "vmm: reversed range",
            api: Api::Vmm,
            want: EINVAL,
            run: |f| {
                #[allow(clippy::reversed_empty_ranges)]
                let r = MIB..0;
                new_vmm(f, r)
            },
        },
        Case {
            name: "vmm: unaligned start",
            api: Api::Vmm,
            want: EINVAL,
            run: |f| new_vmm(f, 100..GIB),
        },
        Case {
            name: "vmm: unaligned end",
            api: Api::Vmm,
            want: EINVAL,
            run: |f| new_vmm(f, 0..GIB + 100),
        },
        Case {
            name: "vmm: beyond the format's virtual addresses",
            api: Api::Vmm,
            want: ERANGE,
            run: |f| new_vmm(f, 0..va_limit(f) + u64::SZ_4K),
        },
        Case {
            name: "vmm: wholly above the format's virtual addresses",
            api: Api::Vmm,
            want: ERANGE,
            run: |f| new_vmm(f, va_limit(f)..va_limit(f) + GIB),
        },
        Case {
            name: "vmm: up to 2^64",
            api: Api::Vmm,
            want: ERANGE,
            run: |f| new_vmm(f, 0..U64_PAGE_MAX),
        },
        Case {
            name: "vmm: hub-only, empty range",
            api: Api::Vmm,
            want: EINVAL,
            run: |f| ret(f.mm.new_hub_vmm("kunit-badinput-new", GIB..GIB)),
        },
        Case {
            name: "vmm: root table allocation fails",
            api: Api::Vmm,
            want: ENOMEM,
            run: |f| with_pt_failure(f, 1, || f.mm.new_vmm("kunit-badinput-new", 0..GIB)),
        },
        // Reservations.
        Case {
            name: "reserve: zero size",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, 0, u64::SZ_4K, None),
        },
        Case {
            name: "reserve: size not a multiple of 4 KiB",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_4K + 100, u64::SZ_4K, None),
        },
        Case {
            name: "reserve: alignment 0",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_4K, 0, None),
        },
        Case {
            name: "reserve: alignment not a power of two",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_4K, 3 * u64::SZ_4K, None),
        },
        Case {
            name: "reserve: alignment below 4 KiB",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_4K, 2048, None),
        },
        Case {
            name: "reserve: fixed address not aligned to the alignment",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_2M, u64::SZ_2M, Some(2 * GIB + u64::SZ_4K)),
        },
        Case {
            name: "reserve: fixed address unaligned",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| reserve(f, u64::SZ_4K, u64::SZ_4K, Some(2 * GIB + 12)),
        },
        Case {
            name: "reserve: sparse, zero size",
            api: Api::Reserve,
            want: EINVAL,
            run: |f| ret(f.vmm.reserve(0, u64::SZ_4K, None, true)),
        },
        Case {
            name: "reserve: same range as a reservation",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, u64::SZ_2M, u64::SZ_4K, Some(RES_AT)),
        },
        Case {
            name: "reserve: overlapping a reservation's start",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, 2 * u64::SZ_4K, u64::SZ_4K, Some(RES_AT - u64::SZ_4K)),
        },
        Case {
            name: "reserve: overlapping a reservation's end",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| {
                reserve(
                    f,
                    2 * u64::SZ_4K,
                    u64::SZ_4K,
                    Some(RES_AT + u64::SZ_2M - u64::SZ_4K),
                )
            },
        },
        Case {
            name: "reserve: inside a reservation",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, u64::SZ_4K, u64::SZ_4K, Some(RES_AT + MIB)),
        },
        Case {
            name: "reserve: around a reservation",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, 4 * u64::SZ_2M, u64::SZ_4K, Some(RES_AT - u64::SZ_2M)),
        },
        Case {
            name: "reserve: sparse, overlapping a reservation",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| ret(f.vmm.reserve(u64::SZ_4K, u64::SZ_4K, Some(RES_AT), true)),
        },
        Case {
            name: "reserve: at the end of the space",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, u64::SZ_4K, u64::SZ_4K, Some(SPACE)),
        },
        Case {
            name: "reserve: straddling the end of the space",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, 2 * u64::SZ_4K, u64::SZ_4K, Some(SPACE - u64::SZ_4K)),
        },
        Case {
            name: "reserve: fixed address + size wraps",
            api: Api::Reserve,
            want: EEXIST,
            run: |f| reserve(f, 2 * u64::SZ_4K, u64::SZ_4K, Some(U64_PAGE_MAX)),
        },
        Case {
            name: "reserve: the whole space (part of it reserved)",
            api: Api::Reserve,
            want: ENOSPC,
            run: |f| reserve(f, SPACE, u64::SZ_4K, None),
        },
        Case {
            name: "reserve: larger than the space",
            api: Api::Reserve,
            want: ENOSPC,
            run: |f| reserve(f, SPACE + u64::SZ_4K, u64::SZ_4K, None),
        },
        Case {
            name: "reserve: size near 2^64",
            api: Api::Reserve,
            want: ENOSPC,
            run: |f| reserve(f, U64_PAGE_MAX, u64::SZ_4K, None),
        },
        Case {
            name: "reserve: sparse, first table allocation fails",
            api: Api::Reserve,
            want: ENOMEM,
            run: |f| sparse_failing(f, 1),
        },
        Case {
            name: "reserve: sparse, second table allocation fails",
            api: Api::Reserve,
            want: ENOMEM,
            run: |f| sparse_failing(f, 2),
        },
        Case {
            name: "reserve: sparse, third table allocation fails",
            api: Api::Reserve,
            want: ENOMEM,
            run: |f| sparse_failing(f, 3),
        },
        // Maps.
        Case {
            name: "map: zero size",
            api: Api::Map,
            want: EINVAL,
            run: |f| map(f, 0, &f.mem, 0, 0),
        },
        Case {
            name: "map: size not a multiple of 4 KiB",
            api: Api::Map,
            want: EINVAL,
            run: |f| map(f, 0, &f.mem, 0, 100),
        },
        Case {
            name: "map: unaligned offset in the reservation",
            api: Api::Map,
            want: EINVAL,
            run: |f| map(f, 12, &f.mem, 0, u64::SZ_4K),
        },
        Case {
            name: "map: unaligned offset in the allocation",
            api: Api::Map,
            want: EINVAL,
            run: |f| map(f, 0, &f.mem, 100, u64::SZ_4K),
        },
        Case {
            name: "map: allocation offset at its end",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, 0, &f.mem, u64::SZ_64K, u64::SZ_4K),
        },
        Case {
            name: "map: past the end of the allocation",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, 0, &f.mem, u64::SZ_64K - u64::SZ_4K, 2 * u64::SZ_4K),
        },
        Case {
            name: "map: allocation offset + size wraps",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, 0, &f.mem, U64_PAGE_MAX, 2 * u64::SZ_4K),
        },
        Case {
            name: "map: more than is reserved",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, 0, &f.mem4m, 0, 4 * MIB),
        },
        Case {
            name: "map: at the end of the reservation",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, u64::SZ_2M, &f.mem, 0, u64::SZ_4K),
        },
        Case {
            name: "map: straddling the end of the reservation",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, u64::SZ_2M - u64::SZ_4K, &f.mem, 0, 2 * u64::SZ_4K),
        },
        Case {
            name: "map: far beyond the reservation",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, SPACE, &f.mem, 0, u64::SZ_4K),
        },
        Case {
            name: "map: offset + size wraps",
            api: Api::Map,
            want: ERANGE,
            run: |f| map(f, U64_PAGE_MAX, &f.mem, 0, u64::SZ_4K),
        },
        Case {
            name: "map: over a mapping, same range",
            api: Api::Map,
            want: EBUSY,
            run: |f| map(f, BUSY_AT, &f.mem, 0, u64::SZ_64K),
        },
        Case {
            name: "map: over a mapping's first page",
            api: Api::Map,
            want: EBUSY,
            run: |f| map(f, BUSY_AT - u64::SZ_4K, &f.mem, 0, 2 * u64::SZ_4K),
        },
        Case {
            name: "map: over a mapping's last page",
            api: Api::Map,
            want: EBUSY,
            run: |f| {
                map(
                    f,
                    BUSY_AT + u64::SZ_64K - u64::SZ_4K,
                    &f.mem,
                    0,
                    2 * u64::SZ_4K,
                )
            },
        },
        Case {
            name: "map: around a mapping",
            api: Api::Map,
            want: EBUSY,
            run: |f| map(f, BUSY_AT - u64::SZ_64K, &f.mem4m, 0, 3 * u64::SZ_64K),
        },
        Case {
            name: "map: memory that is not this GPU's VRAM allocator's",
            api: Api::Map,
            want: EXDEV,
            run: |f| map(f, 0, &f.foreign, 0, u64::SZ_4K),
        },
        Case {
            name: "map: first of three table allocations fails",
            api: Api::Map,
            want: ENOMEM,
            run: |f| map_far_failing(f, 1),
        },
        Case {
            name: "map: second of three table allocations fails",
            api: Api::Map,
            want: ENOMEM,
            run: |f| map_far_failing(f, 2),
        },
        Case {
            name: "map: third of three table allocations fails",
            api: Api::Map,
            want: ENOMEM,
            run: |f| map_far_failing(f, 3),
        },
        Case {
            name: "map: VRAM runs out for the second table",
            api: Api::Map,
            want: ENOSPC,
            run: |f| {
                // One free slot: the first new table takes it, the second needs a new chunk.
                let slots = hold_slots(f.mm, 1)?;
                let fill = fill_vram(f.mm)?;
                let a0 = f.mm.pool().stats.allocs.load(Relaxed);
                let r = f.far.map(0, &f.mem, 0, u64::SZ_4K, Access::ReadWrite);
                // One table was taken in the middle of the map, and given back.
                ensure_eq!(f.mm.pool().stats.allocs.load(Relaxed) - a0, 1);
                drop(fill);
                drop(slots);
                ret(r)
            },
        },
        // BAR1.
        Case {
            name: "bar1: zero size",
            api: Api::Bar,
            want: EINVAL,
            run: |f| bar_map(f, 0, 0, None),
        },
        Case {
            name: "bar1: size not a multiple of 4 KiB",
            api: Api::Bar,
            want: EINVAL,
            run: |f| bar_map(f, 0, 100, None),
        },
        Case {
            name: "bar1: unaligned allocation offset",
            api: Api::Bar,
            want: EINVAL,
            run: |f| bar_map(f, 100, u64::SZ_4K, None),
        },
        Case {
            name: "bar1: allocation offset at its end",
            api: Api::Bar,
            want: ERANGE,
            run: |f| bar_map(f, u64::SZ_64K, u64::SZ_4K, None),
        },
        Case {
            name: "bar1: past the end of the allocation",
            api: Api::Bar,
            want: ERANGE,
            run: |f| bar_map(f, 0, 2 * u64::SZ_64K, None),
        },
        Case {
            name: "bar1: fixed offset unaligned to the page size",
            api: Api::Bar,
            want: EINVAL,
            run: |f| bar_map(f, 0, u64::SZ_64K, Some(u64::SZ_4K)),
        },
        Case {
            name: "bar1: fixed offset at the end of BAR1",
            api: Api::Bar,
            want: EEXIST,
            run: |f| match bar(f) {
                Some(b) => bar_map(f, 0, u64::SZ_64K, Some(b.user.size())),
                None => Ok(Got::Na),
            },
        },
        Case {
            name: "bar1: fixed offset over a mapping",
            api: Api::Bar,
            want: EEXIST,
            run: |f| match bar(f) {
                Some(b) => bar_map(f, 0, u64::SZ_64K, Some(b.map.offset())),
                None => Ok(Got::Na),
            },
        },
        Case {
            name: "bar1: fixed offset + size wraps",
            api: Api::Bar,
            want: EEXIST,
            run: |f| bar_map(f, 0, u64::SZ_64K, Some(u64::MAX & !(u64::SZ_64K - 1))),
        },
        Case {
            name: "bar1: more than BAR1 holds",
            api: Api::Bar,
            want: ENOSPC,
            run: |f| {
                on_bar(f, |b| {
                    b.user.map(&b.big, 0, b.big.size(), Access::ReadWrite, None)
                })
            },
        },
        Case {
            name: "bar1: memory that is not this GPU's VRAM allocator's",
            api: Api::Bar,
            want: EXDEV,
            run: |f| {
                on_bar(f, |b| {
                    b.user
                        .map(&f.foreign, 0, u64::SZ_4K, Access::ReadWrite, None)
                })
            },
        },
        Case {
            name: "bar1: table allocation fails",
            api: Api::Bar,
            want: ENOMEM,
            run: |f| match bar(f) {
                // The last 2 MiB of BAR1 has no page table of its own yet.
                Some(b) => with_pt_failure(f, 1, || {
                    b.user.map(
                        &f.mem,
                        0,
                        u64::SZ_64K,
                        Access::ReadWrite,
                        Some(b.user.size() - u64::SZ_2M),
                    )
                }),
                None => Ok(Got::Na),
            },
        },
        Case {
            name: "bar1: full, then a map",
            api: Api::Bar,
            want: ENOSPC,
            run: |f| match bar(f) {
                Some(b) => {
                    let held = fill_bar1(b.user)?;
                    let r = b.user.map(&f.mem, 0, u64::SZ_4K, Access::ReadWrite, None);
                    drop(held);
                    ret(r)
                }
                None => Ok(Got::Na),
            },
        },
        Case {
            name: "bar1: full, then a sparse reservation",
            api: Api::Bar,
            want: ENOSPC,
            run: |f| match bar(f) {
                Some(b) => {
                    let held = fill_bar1(b.user)?;
                    let r = b.user.reserve_sparse(u64::SZ_4K);
                    drop(held);
                    ret(r)
                }
                None => Ok(Got::Na),
            },
        },
        Case {
            name: "bar1: sparse, zero size",
            api: Api::Bar,
            want: EINVAL,
            run: |f| on_bar(f, |b| b.user.reserve_sparse(0)),
        },
        Case {
            name: "bar1: sparse, size not a multiple of 4 KiB",
            api: Api::Bar,
            want: EINVAL,
            run: |f| on_bar(f, |b| b.user.reserve_sparse(100)),
        },
        Case {
            name: "bar1: sparse, more than BAR1 holds",
            api: Api::Bar,
            want: ENOSPC,
            run: |f| on_bar(f, |b| b.user.reserve_sparse(b.user.size() + u64::SZ_4K)),
        },
        Case {
            name: "bar1: raw read past BAR1",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.user.raw_read32(b.user.size())),
        },
        Case {
            name: "bar1 mapping: read8 at its end",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.map.read8(b.map.size())),
        },
        Case {
            name: "bar1 mapping: read32 misaligned",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.map.read32(2)),
        },
        Case {
            name: "bar1 mapping: write64 straddling its end",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.map.write64(b.map.size() - 4, 0)),
        },
        Case {
            name: "bar1 mapping: write16 at 2^64 - 1 (end wraps)",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.map.write16(u64::MAX, 0)),
        },
        Case {
            name: "bar1 mapping: copy_from_slice straddling its end (nothing written)",
            api: Api::Bar,
            want: ERANGE,
            run: |f| on_bar(f, |b| b.map.copy_from_slice(b.map.size() - 4, &[0xa5; 8])),
        },
        Case {
            name: "bar1 mapping: copy_to_slice at 2^64 - 3 (end wraps)",
            api: Api::Bar,
            want: ERANGE,
            run: |f| {
                on_bar(f, |b| {
                    let mut buf = [0u8; 8];
                    b.map.copy_to_slice(u64::MAX - 2, &mut buf)
                })
            },
        },
    ];

    /// Builds the fixture of one GPU.
    fn fixture<'f, 'a>(gpu: &'f TestedGpu<'a>) -> Result<Fx<'f, 'a>> {
        let mm = gpu.mm();
        let vmm = mm.new_vmm("kunit-badinput", 0..SPACE)?;
        let res = vmm.reserve(u64::SZ_2M, u64::SZ_2M, Some(RES_AT), false)?;
        let far = vmm.reserve(u64::SZ_2M, u64::SZ_2M, Some(FAR_AT), false)?;
        let mem = Arc::new(
            mm.vram().alloc(
                &AllocRequest::new(u64::SZ_64K)
                    .contiguous()
                    .aligned(u64::SZ_64K),
            )?,
            GFP_KERNEL,
        )?;
        let mem4m = Arc::new(mm.vram().alloc(&AllocRequest::new(4 * MIB))?, GFP_KERNEL)?;
        let busy = res.map(BUSY_AT, &mem, 0, u64::SZ_64K, Access::ReadWrite)?;
        let top = mm.vram().range().end;
        let other = Vram::new(top..top + MIB)?;
        let foreign = Arc::new(other.alloc(&AllocRequest::new(u64::SZ_64K))?, GFP_KERNEL)?;
        let bar = match &mm.bar1() {
            Some(user) => Some(BarFx {
                user,
                map: user.map(&mem, 0, u64::SZ_64K, Access::ReadWrite, None)?,
                big: Arc::new(
                    mm.vram()
                        .alloc(&AllocRequest::new(user.size() + u64::SZ_64K))?,
                    GFP_KERNEL,
                )?,
            }),
            None => None,
        };
        Ok(Fx {
            gpu,
            mm,
            vmm,
            res,
            far,
            mem,
            mem4m,
            _busy: busy,
            foreign,
            bar,
        })
    }

    /// Runs one case; returns whether it applied.
    fn check(f: &Fx<'_, '_>, c: &Case) -> Result<bool> {
        let before = snap(f)?;
        let got = (c.run)(f);
        f.mm.pool().fail_nth(0);
        let r = match got? {
            Got::Na => return Ok(false),
            Got::Ret(r) => r,
        };
        ensure_eq!(r, Err(c.want));
        same(&before, &snap(f)?)?;
        // The range the mid-map failures aimed at is still unmapped in the shadow.
        ensure_eq!(f.vmm.lookup(FAR_AT).0, Entry::Invalid);
        ensure_eq!(f.vmm.lookup(FAR_SPARSE_AT).0, Entry::Invalid);
        Ok(true)
    }

    /// Every case of [`CASES`] on every bound GPU.
    #[test]
    fn refuses_bad_input() -> Result {
        if skip_if_readonly() || crate::selftest::tests::skip_if_quick() {
            return Ok(());
        }
        if crate::module_parameters::expect_tlb_hang.value() {
            skip(c"invalidates hang: the fixture's mappings cannot be made");
            return Ok(());
        }
        let mut failed = 0;
        let n = devices::for_each(|gpu| {
            let f = fixture(gpu)?;
            let chip = gpu.spec().chipset.code();
            let (mut run, mut na, mut bad) = (0u32, 0u32, 0u32);
            let mut per = [0u32; APIS.len()];
            for c in CASES {
                match check(&f, c) {
                    Ok(true) => {
                        run += 1;
                        if let Some(i) = APIS.iter().position(|a| *a == c.api) {
                            per[i] += 1;
                        }
                    }
                    Ok(false) => na += 1,
                    Err(e) => {
                        bad += 1;
                        run += 1;
                        pr_err!(
                            "badinput {:#x}: case \"{}\" failed ({:?})\n",
                            chip,
                            c.name,
                            e
                        );
                    }
                }
            }
            pr_info!(
                "NOVA-BADINPUT cases={} chip={:#x} not_applicable={} failed={} vram={} pramin={} tlb={} vmm={} reserve={} map={} bar1={}\n",
                run,
                chip,
                na,
                bad,
                per[0],
                per[1],
                per[2],
                per[3],
                per[4],
                per[5],
                per[6]
            );
            failed += bad;
            Ok(())
        })?;
        if n == 0 {
            skip(c"no GPU bound");
        }
        ensure_eq!(failed, 0);
        Ok(())
    }
}
