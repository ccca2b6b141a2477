// SPDX-License-Identifier: GPL-2.0

//! Page-table benchmarks (`make bench`): MMIO counts of map, unmap and map-again at each page
//! size, and of map/unmap cycles of small buffers, on every bound GPU.
//!
//! Runs only with `nova_mm.bench=1`. Each scenario prints one `NOVA-BENCH` line with the
//! driver's counter deltas and the TLB invalidate numbers it spans; `scripts/bench.py` takes the
//! model's counts over the same invalidates from its trace, checks that the two agree, and sets
//! them against the theoretical minimum of the design.

use kernel::prelude::*;

#[kunit_tests(nova_mm_bench)]
mod tests {
    use super::*;
    use crate::{
        devices,
        driver::NovaMm,
        mm::{
            pagetable::{
                Access,
                SZ_2M,
                SZ_4K,
                SZ_512M,
                SZ_64K, //
            },
            ptpool::PtPool,
            tlb::Scope,
            vram::AllocRequest,
            GpuMm,
        },
        tests::skip,
    };
    use kernel::sync::{
        atomic::Relaxed,
        Arc, //
    };

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// Where the benchmarks map: 1 GiB aligned, in a fresh part of the address space.
    const BASE: u64 = 64 * GIB;

    #[derive(Clone, Copy)]
    struct Snap {
        bar0_reads: u64,
        bar0_writes: u64,
        pramin_reads: u64,
        pramin_writes: u64,
        window_moves: u64,
        invalidates: u64,
        zero_hits: u64,
    }

    fn snap(mm: &GpuMm<'_>, pool: &PtPool) -> Snap {
        Snap {
            bar0_reads: mm.bar.stats().reads.load(Relaxed),
            bar0_writes: mm.bar.stats().writes.load(Relaxed),
            pramin_reads: mm.pramin.stats.reads.load(Relaxed),
            pramin_writes: mm.pramin.stats.writes.load(Relaxed),
            window_moves: mm.pramin.stats.window_moves.load(Relaxed),
            invalidates: mm.tlb.stats.invalidates.load(Relaxed),
            zero_hits: pool.stats.zero_hits.load(Relaxed),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        gpu: &NovaMm<'_>,
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
            gpu.spec.chipset.name(),
            op,
            name,
            va,
            size,
            page,
            ops,
            gpu.mm.format_version(),
            a.invalidates,
            b.invalidates,
            b.bar0_reads - a.bar0_reads,
            b.bar0_writes - a.bar0_writes,
            b.pramin_reads - a.pramin_reads,
            b.pramin_writes - a.pramin_writes,
            b.window_moves - a.window_moves,
            b.invalidates - a.invalidates,
            b.zero_hits - a.zero_hits
        );
    }

    /// Map, unmap and map again `size` bytes as `page` pages, in a fresh address space whose
    /// tables come from a fresh pool (so the first map zeroes its tables, the second does not).
    fn map_unmap(gpu: &NovaMm<'_>, name: &str, page: u64, size: u64) -> Result {
        let mm = &gpu.mm;
        let pool = PtPool::new(mm.vram.clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench", 0..1 << 40)?;
        let align = page.max(SZ_2M);
        // Physically one page off a 2 MiB boundary when smaller pages are wanted, so that no
        // larger page fits; virtually aligned, as the design's worked minimum is.
        let moff = if page < SZ_2M { page } else { 0 };
        let mem = Arc::new(
            mm.vram
                .alloc(&AllocRequest::new(size + align).contiguous().aligned(align))?,
            GFP_KERNEL,
        )?;
        let res = vmm.reserve(size, GIB, Some(BASE), false)?;
        let va = BASE;
        let off = 0;
        // A fence, so that the scenario starts at a known invalidate.
        mm.tlb.invalidate(&mm.bar, vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        let m = res.map(off, &mem, moff, size, Access::ReadWrite)?;
        let s1 = snap(mm, &pool);
        report(gpu, "map_", name, va, size, page, 1, s0, s1);
        drop(m);
        let s2 = snap(mm, &pool);
        report(gpu, "unmap_", name, va, size, page, 1, s1, s2);
        let m = res.map(off, &mem, moff, size, Access::ReadWrite)?;
        let s3 = snap(mm, &pool);
        report(gpu, "remap_", name, va, size, page, 1, s2, s3);
        drop(m);
        Ok(())
    }

    /// Map, unmap and map again `size` bytes into BAR1 (2 MiB pages): the hub-invalidated
    /// address space of the BAR, with the GPU's own page-table pool.
    fn bar1(gpu: &NovaMm<'_>, size: u64) -> Result {
        let mm = &gpu.mm;
        let Some(bar) = mm.bar1.as_ref() else {
            return Ok(());
        };
        let mem = Arc::new(
            mm.vram
                .alloc(&AllocRequest::new(size).contiguous().aligned(SZ_2M))?,
            GFP_KERNEL,
        )?;
        let pool = &mm.pool;
        mm.tlb
            .invalidate(&mm.bar, bar.vmm().pdb(), Scope::PdbHubOnly)?;
        let s0 = snap(mm, pool);
        let m = bar.map(&mem, 0, size, Access::ReadWrite, None)?;
        let s1 = snap(mm, pool);
        let va = m.offset();
        report(gpu, "bar1_map_", "64m", va, size, SZ_2M, 1, s0, s1);
        drop(m);
        let s2 = snap(mm, pool);
        report(gpu, "bar1_unmap_", "64m", va, size, SZ_2M, 1, s1, s2);
        let m = bar.map(&mem, 0, size, Access::ReadWrite, Some(va))?;
        let s3 = snap(mm, pool);
        report(gpu, "bar1_remap_", "64m", va, size, SZ_2M, 1, s2, s3);
        drop(m);
        Ok(())
    }

    /// `n` cycles of: allocate 4 KiB, map it, unmap it, free it.
    fn cycles(gpu: &NovaMm<'_>, n: u64) -> Result {
        let mm = &gpu.mm;
        let pool = PtPool::new(mm.vram.clone())?;
        let vmm = mm.new_vmm_in(pool.clone(), "bench-cycles", 0..1 << 40)?;
        let res = vmm.reserve(SZ_2M, GIB, Some(BASE), false)?;
        mm.tlb.invalidate(&mm.bar, vmm.pdb(), Scope::Pdb)?;
        let s0 = snap(mm, &pool);
        for _ in 0..n {
            let mem = Arc::new(mm.vram.alloc(&AllocRequest::new(SZ_4K))?, GFP_KERNEL)?;
            let m = res.map(0, &mem, 0, SZ_4K, Access::ReadWrite)?;
            drop(m);
        }
        let s1 = snap(mm, &pool);
        report(gpu, "", "cycles_4k", BASE, SZ_4K, SZ_4K, 2 * n, s0, s1);
        Ok(())
    }

    #[test]
    fn page_tables() -> Result {
        if !crate::module_parameters::bench.value() {
            skip(c"benchmarks run with nova_mm.bench=1 (make bench)");
            return Ok(());
        }
        let n = devices::for_each(|gpu| {
            // First, while the GPU's own pool holds only BAR1's root and instance block.
            bar1(gpu, 64 * MIB)?;
            map_unmap(gpu, "256m_2m", SZ_2M, 256 * MIB)?;
            map_unmap(gpu, "256m_64k", SZ_64K, 256 * MIB)?;
            map_unmap(gpu, "256m_4k", SZ_4K, 256 * MIB)?;
            if gpu.mm.has_512m_pages() {
                map_unmap(gpu, "1g_512m", SZ_512M, GIB)?;
            }
            cycles(gpu, 1000)
        })?;
        if n == 0 {
            skip(c"no GPU bound");
        }
        Ok(())
    }
}
