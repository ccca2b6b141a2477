// SPDX-License-Identifier: GPL-2.0

//! Page-table benchmarks (`make bench`): MMIO counts of map, unmap and map-again at each page
//! size, and of map/unmap cycles of small buffers, on every bound GPU.
//!
//! Runs only with `nova_mm.bench=1`. Each scenario prints one `NOVA-BENCH` line with the
//! driver's counter deltas and the TLB invalidate numbers it spans; `scripts/bench.py` takes the
//! model's counts over the same invalidates from its trace, checks that the two agree, and sets
//! them against the theoretical minimum of the design.

use kernel::sizes::SizeConstants;
use kernel::{
    bindings,
    interop::list::CListHead,
    prelude::*,
    types::Opaque, //
};

/// The kernel's C gpu_buddy, driven directly, for the side-by-side benchmark: the configuration
/// (blocks freed with `GPU_BUDDY_CLEARED`) in which the clear/dirty merge barrier shows.
///
/// # Invariants
///
/// `mm` is an initialized allocator until drop; it is only used from the thread that owns this
/// value (the C allocator leaves locking to its user).
struct CBuddy {
    mm: Pin<KBox<Opaque<bindings::gpu_buddy>>>,
}

/// Blocks allocated from a [`CBuddy`]: a list head the C allocator links them to.
struct CBlocks {
    list: Pin<KBox<CListHead>>,
}

impl CBuddy {
    fn new(size: u64) -> Result<Self> {
        let mm = KBox::pin_init(Opaque::<bindings::gpu_buddy>::uninit(), GFP_KERNEL)?;
        // SAFETY: `mm` points to writable memory for a `struct gpu_buddy`, which the call
        // initializes; it stays pinned for the life of `Self`.
        kernel::error::to_result(unsafe { bindings::gpu_buddy_init(mm.get(), size, 4096) })?;
        // INVARIANT: initialized above.
        Ok(Self { mm })
    }

    /// Allocates `size` bytes (contiguous with `contiguous`) anywhere.
    fn alloc(&mut self, size: u64, contiguous: bool) -> Result<CBlocks> {
        let list = KBox::pin_init(CListHead::new(), GFP_KERNEL)?;
        let flags = if contiguous {
            bindings::GPU_BUDDY_CONTIGUOUS_ALLOCATION
        } else {
            0
        };
        // SAFETY: By the invariant `self.mm` is initialized and only used from this thread.
        let end = unsafe { (*self.mm.get()).size };
        // SAFETY: By the invariant `self.mm` is initialized and only used here; `list` is an
        // initialized, empty list head that outlives the blocks linked to it.
        kernel::error::to_result(unsafe {
            bindings::gpu_buddy_alloc_blocks(
                self.mm.get(),
                0,
                end,
                size,
                4096,
                list.as_raw(),
                flags,
            )
        })?;
        Ok(CBlocks { list })
    }

    /// Frees `blocks`, as cleared memory with `cleared`.
    fn free(&mut self, blocks: CBlocks, cleared: bool) {
        // The flag is bit 4: it fits the `unsigned int` of the free call.
        let flags = if cleared {
            kernel::ffi::c_uint::try_from(bindings::GPU_BUDDY_CLEARED).unwrap_or(0)
        } else {
            0
        };
        // SAFETY: By the invariant `self.mm` is initialized; `blocks.list` holds blocks of
        // this allocator, which the call frees and unlinks.
        unsafe { bindings::gpu_buddy_free_list(self.mm.get(), blocks.list.as_raw(), flags) };
    }
}

impl Drop for CBuddy {
    fn drop(&mut self) {
        // SAFETY: By the invariant `self.mm` is initialized; every block was freed (the
        // benchmark frees all it allocated), so the allocator can be torn down.
        unsafe { bindings::gpu_buddy_fini(self.mm.get()) };
    }
}

#[kunit_tests(nova_mm_bench)]
mod tests {
    use super::*;
    use crate::{
        bar::MmioSnapshot,
        mm::{
            pagetable::{
                Access, //
            },
            pramin::PraminSnapshot,
            ptpool::{
                PtPool,
                PtPoolSnapshot, //
            },
            tlb::{
                Scope,
                TlbSnapshot, //
            },
            vram::AllocRequest,
            GpuMm,
        },
        selftest::devices,
        selftest::tests::skip,
        selftest::TestedGpu,
    };
    use kernel::sync::Arc;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// Where the benchmarks map: 1 GiB aligned, in a fresh part of the address space.
    const BASE: u64 = 64 * GIB;

    #[derive(Clone, Copy)]
    struct Snap {
        mmio: MmioSnapshot,
        pramin: PraminSnapshot,
        tlb: TlbSnapshot,
        pool: PtPoolSnapshot,
    }

    fn snap(mm: &GpuMm<'_>, pool: &PtPool) -> Snap {
        Snap {
            mmio: mm.bar().stats().snapshot(),
            pramin: mm.pramin().stats.snapshot(),
            tlb: mm.tlb().stats.snapshot(),
            pool: pool.stats.snapshot(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        gpu: &TestedGpu<'_>,
        op: &str,
        name: &str,
        va: u64,
        size: u64,
        page: u64,
        ops: u64,
        a: Snap,
        b: Snap,
    ) {
        pr_info!(
            "NOVA-BENCH chip={} bench={}{} va={:#x} size={:#x} page={:#x} ops={} mmu=v{} \
             inv_from={} inv_to={} bar0_reads={} bar0_writes={} pramin_reads={} \
             pramin_writes={} window_moves={} invalidates={} zero_hits={}\n",
            gpu.spec().chipset.name(),
            op,
            name,
            va,
            size,
            page,
            ops,
            gpu.mm().format_version(),
            a.tlb.invalidates,
            b.tlb.invalidates,
            (b.mmio - a.mmio).reads,
            (b.mmio - a.mmio).writes,
            (b.pramin - a.pramin).reads,
            (b.pramin - a.pramin).writes,
            (b.pramin - a.pramin).window_moves,
            (b.tlb - a.tlb).invalidates,
            (b.pool - a.pool).zero_hits
        );
    }

    /// Map, unmap and map again `size` bytes as `page` pages, in a fresh address space whose
    /// tables come from a fresh pool (so the first map zeroes its tables, the second does not).
    fn map_unmap(gpu: &TestedGpu<'_>, name: &str, page: u64, size: u64) -> Result {
        let mm = gpu.mm();
        let pool = PtPool::new(mm.vram().clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench", 0..1 << 40)?;
        let align = page.max(u64::SZ_2M);
        // Physically one page off a 2 MiB boundary when smaller pages are wanted, so that no
        // larger page fits; virtually aligned, as the design's worked minimum is.
        let moff = if page < u64::SZ_2M { page } else { 0 };
        let mem = Arc::new(
            mm.vram()
                .alloc(&AllocRequest::new(size + align).contiguous().aligned(align))?,
            GFP_KERNEL,
        )?;
        let res = vmm.reserve(size, GIB, Some(BASE), false)?;
        let va = BASE;
        // A fence, so that the scenario starts at a known invalidate.
        mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        let m = res.map(0, &mem, moff, size, Access::ReadWrite)?;
        let s1 = snap(mm, &pool);
        report(gpu, "map_", name, va, size, page, 1, s0, s1);
        drop(m);
        let s2 = snap(mm, &pool);
        report(gpu, "unmap_", name, va, size, page, 1, s1, s2);
        let m = res.map(0, &mem, moff, size, Access::ReadWrite)?;
        let s3 = snap(mm, &pool);
        report(gpu, "remap_", name, va, size, page, 1, s2, s3);
        drop(m);
        drop((res, vmm, pool));
        // Again in a new address space with a pool of its own: the tables' memory went back to
        // VRAM in between, so only the VRAM's clear tracking knows it is still zero. With the
        // tracking off, the same map zeroes its tables again.
        for (op, track) in [("tracked_remap_", true), ("untracked_remap_", false)] {
            mm.vram().set_tracking(track);
            let pool = PtPool::new(mm.vram().clone())?;
            let vmm = mm.new_vmm_in(pool.clone(), "bench", 0..1 << 40)?;
            let res = vmm.reserve(size, GIB, Some(BASE), false)?;
            mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
            let s4 = snap(mm, &pool);
            let m = res.map(0, &mem, moff, size, Access::ReadWrite)?;
            let s5 = snap(mm, &pool);
            report(gpu, op, name, va, size, page, 1, s4, s5);
            drop((m, res, vmm, pool));
        }
        mm.vram().set_tracking(true);
        Ok(())
    }

    /// Map, unmap and map again `size` bytes into BAR1 (2 MiB pages): the hub-invalidated
    /// address space of the BAR, with the GPU's own page-table pool.
    fn bar1(gpu: &TestedGpu<'_>, size: u64) -> Result {
        let mm = gpu.mm();
        let Some(bar) = mm.bar1() else {
            return Ok(());
        };
        let mem = Arc::new(
            mm.vram()
                .alloc(&AllocRequest::new(size).contiguous().aligned(u64::SZ_2M))?,
            GFP_KERNEL,
        )?;
        let pool = &mm.pool();
        mm.tlb()
            .invalidate(mm.bar(), bar.vmm().pdb(), Scope::PdbHubOnly)?;
        let s0 = snap(mm, pool);
        let m = bar.map(&mem, 0, size, Access::ReadWrite, None)?;
        let s1 = snap(mm, pool);
        let va = m.offset();
        report(gpu, "bar1_map_", "64m", va, size, u64::SZ_2M, 1, s0, s1);
        drop(m);
        let s2 = snap(mm, pool);
        report(gpu, "bar1_unmap_", "64m", va, size, u64::SZ_2M, 1, s1, s2);
        let m = bar.map(&mem, 0, size, Access::ReadWrite, Some(va))?;
        let s3 = snap(mm, pool);
        report(gpu, "bar1_remap_", "64m", va, size, u64::SZ_2M, 1, s2, s3);
        drop(m);
        Ok(())
    }

    /// `n` cycles of: allocate 4 KiB, map it, unmap it, free it.
    fn cycles(gpu: &TestedGpu<'_>, n: u64) -> Result {
        let mm = gpu.mm();
        let pool = PtPool::new(mm.vram().clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench-cycles", 0..1 << 40)?;
        let res = vmm.reserve(u64::SZ_2M, GIB, Some(BASE), false)?;
        mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        for _ in 0..n {
            let mem = Arc::new(mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?, GFP_KERNEL)?;
            let m = res.map(0, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
            drop(m);
        }
        let s1 = snap(mm, &pool);
        report(
            gpu,
            "",
            "cycles_4k",
            BASE,
            u64::SZ_4K,
            u64::SZ_4K,
            2 * n,
            s0,
            s1,
        );
        Ok(())
    }

    /// Prints a batch scenario: `report`'s fields and its geometry (`count` operations of each
    /// kind at `stride` bytes apart, `batches` batches).
    #[allow(clippy::too_many_arguments)]
    fn report_batch(
        gpu: &TestedGpu<'_>,
        name: &str,
        va: u64,
        ops: u64,
        count: u64,
        stride: u64,
        batches: u64,
        a: Snap,
        b: Snap,
    ) {
        report(gpu, "", name, va, u64::SZ_4K, u64::SZ_4K, ops, a, b);
        pr_info!(
            "NOVA-BENCH-GEOMETRY chip={} bench={} count={} stride={:#x} batches={}\n",
            gpu.spec().chipset.name(),
            name,
            count,
            stride,
            batches
        );
    }

    /// `cycles_4k` in batches: `rounds` times, one batch maps `n` 4 KiB buffers at consecutive
    /// addresses and one batch unmaps them (their memory freed after its invalidate).
    fn batch_cycles(gpu: &TestedGpu<'_>, rounds: u64, n: u64) -> Result {
        let mm = gpu.mm();
        let pool = PtPool::new(mm.vram().clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench-batch-cycles", 0..1 << 40)?;
        let res = vmm.reserve(u64::SZ_2M, GIB, Some(BASE), false)?;
        mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        for _ in 0..rounds {
            let mut mems = KVec::new();
            for _ in 0..n {
                let a = mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?;
                mems.push(Arc::new(a, GFP_KERNEL)?, GFP_KERNEL)?;
            }
            let mut b = vmm.batch();
            for (i, mem) in (0u64..).zip(mems.iter()) {
                b.map(&res, i * u64::SZ_4K, mem, 0, u64::SZ_4K, Access::ReadWrite)?;
            }
            let mut maps = KVec::new();
            for d in b.prepare()?.execute()? {
                maps.push(d.mapping()?, GFP_KERNEL)?;
            }
            let mut b = vmm.batch();
            for m in maps.iter() {
                b.unmap(m)?;
            }
            b.prepare()?.execute()?;
        }
        let s1 = snap(mm, &pool);
        report_batch(
            gpu,
            "batch_cycles_4k",
            BASE,
            2 * rounds * n,
            n,
            u64::SZ_4K,
            2 * rounds,
            s0,
            s1,
        );
        Ok(())
    }

    /// One batch of `n` 4 KiB maps, each in a reservation of its own, `stride` bytes apart.
    fn batch_spread(gpu: &TestedGpu<'_>, n: u64, stride: u64) -> Result {
        let mm = gpu.mm();
        let pool = PtPool::new(mm.vram().clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench-batch-spread", 0..1 << 40)?;
        let mem = Arc::new(mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?, GFP_KERNEL)?;
        let mut res = KVec::new();
        for i in 0..n {
            res.push(
                vmm.reserve(stride, stride, Some(BASE + i * stride), false)?,
                GFP_KERNEL,
            )?;
        }
        mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        let mut b = vmm.batch();
        for r in res.iter() {
            b.map(r, 0, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        }
        let done = b.prepare()?.execute()?;
        let s1 = snap(mm, &pool);
        report_batch(gpu, "batch_map_spread_4k", BASE, n, n, stride, 1, s0, s1);
        drop(done);
        Ok(())
    }

    /// One batch of `n` unmaps, `n` access changes and `n` maps of 4 KiB pages in one page
    /// table whose other entries stay mapped.
    fn batch_mixed(gpu: &TestedGpu<'_>, n: u64) -> Result {
        let mm = gpu.mm();
        let pool = PtPool::new(mm.vram().clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench-batch-mixed", 0..1 << 40)?;
        let res = vmm.reserve(u64::SZ_2M, GIB, Some(BASE), false)?;
        let mem = Arc::new(mm.vram().alloc(&AllocRequest::new(u64::SZ_4K))?, GFP_KERNEL)?;
        let mut b = vmm.batch();
        for i in 0..3 * n {
            b.map(&res, i * u64::SZ_4K, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        }
        let mut maps = KVec::new();
        for d in b.prepare()?.execute()? {
            maps.push(d.mapping()?, GFP_KERNEL)?;
        }
        mm.tlb().invalidate(mm.bar(), vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        let mut b = vmm.batch();
        for (i, m) in (0u64..).zip(maps.iter()) {
            if i < n {
                b.unmap(m)?;
            } else if i < 2 * n {
                b.protect(m, Access::ReadOnly)?;
            }
        }
        for i in 3 * n..4 * n {
            b.map(&res, i * u64::SZ_4K, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        }
        let done = b.prepare()?.execute()?;
        let s1 = snap(mm, &pool);
        report_batch(gpu, "batch_mixed_4k", BASE, 3 * n, n, u64::SZ_4K, 1, s0, s1);
        drop((done, maps));
        Ok(())
    }

    /// The workload of the clear-tracker discussion on an allocator of `size` bytes: `n`
    /// allocations of 4 and 8 KiB, freed in a scattered order, every other one as cleared, then
    /// one contiguous allocation of the free space less 64 MiB; on nova-mm's `Vram` (which frees
    /// everything dirty and tracks the cleared part aside) and on the C gpu_buddy with
    /// `GPU_BUDDY_CLEARED` frees.
    fn churn(size: u64, n: usize) -> Result {
        use kernel::time::{
            Instant,
            Monotonic, //
        };
        let name = if size >= 4 * GIB {
            "churn_4g"
        } else {
            "churn_1g"
        };
        let big = size - 64 * MIB;
        // nova-mm.
        let vram = crate::mm::vram::Vram::new(0..size)?;
        let mut held = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            let sz = if i % 2 == 0 { 8192 } else { 4096 };
            held.push(Some(vram.alloc(&AllocRequest::new(sz))?), GFP_KERNEL)?;
        }
        let mut i = 0;
        for k in 0..n {
            i = (i + 1237) % n;
            if let Some(a) = held[i].take() {
                if k % 2 == 0 {
                    let r = a.contiguous_range().ok_or(EINVAL)?;
                    a.free_cleared(&[r]);
                }
            }
        }
        let cleared = vram.stats().cleared;
        let t0 = Instant::<Monotonic>::now();
        let res = vram.alloc(&AllocRequest::new(big).contiguous());
        let us = t0.elapsed().as_micros_ceil();
        let ours_ok = res.is_ok();
        drop(res);
        pr_info!(
            "NOVA-ALLOCBENCH bench={} allocator=nova-mm allocations={} cleared_frees={} big={:#x} ok={} time_us={}\n",
            name, n, cleared, big, u8::from(ours_ok), us
        );
        // The C allocator with cleared frees.
        let mut c = CBuddy::new(size)?;
        let mut held = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            let sz = if i % 2 == 0 { 8192 } else { 4096 };
            held.push(Some(c.alloc(sz, false)?), GFP_KERNEL)?;
        }
        let mut i = 0;
        for k in 0..n {
            i = (i + 1237) % n;
            if let Some(b) = held[i].take() {
                c.free(b, k % 2 == 0);
            }
        }
        let t0 = Instant::<Monotonic>::now();
        let res = c.alloc(big, true);
        let us_c = t0.elapsed().as_micros_ceil();
        let c_ok = res.is_ok();
        if let Ok(b) = res {
            c.free(b, false);
        }
        pr_info!(
            "NOVA-ALLOCBENCH bench={} allocator=gpu_buddy-cleared allocations={} big={:#x} ok={} time_us={}\n",
            name, n, big, u8::from(c_ok), us_c
        );
        Ok(())
    }

    #[test]
    fn page_tables() -> Result {
        if crate::selftest::tests::skip_if_readonly() {
            return Ok(());
        }
        if !crate::module_parameters::bench.value() {
            skip(c"benchmarks run with nova_mm.bench=1 (make bench)");
            return Ok(());
        }
        churn(GIB, 8192)?;
        churn(4 * GIB, 16384)?;
        let n = devices::for_each(|gpu| {
            // First, while the GPU's own pool holds only BAR1's root and instance block.
            bar1(gpu, 64 * MIB)?;
            map_unmap(gpu, "256m_2m", u64::SZ_2M, 256 * MIB)?;
            map_unmap(gpu, "256m_64k", u64::SZ_64K, 256 * MIB)?;
            map_unmap(gpu, "256m_4k", u64::SZ_4K, 256 * MIB)?;
            if gpu.mm().has_512m_pages() {
                map_unmap(gpu, "1g_512m", u64::SZ_512M, GIB)?;
            }
            cycles(gpu, 1000)?;
            batch_cycles(gpu, 10, 100)?;
            batch_spread(gpu, 1000, u64::SZ_64K)?;
            batch_mixed(gpu, 100)
        })?;
        if n == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }
}
