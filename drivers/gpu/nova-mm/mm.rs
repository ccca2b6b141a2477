// SPDX-License-Identifier: GPL-2.0

//! Memory management of the GPU: video memory, the PRAMIN window, TLB invalidation, page tables
//! and GPU virtual address spaces, gathered per GPU in [`GpuMm`].

use core::ops::Range;

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::Relaxed,
        Arc,
        Mutex, //
    },
};

use crate::{
    bar::Bar0,
    gpu::Spec, //
};

pub(crate) mod bar;
pub(crate) mod clear;
pub(crate) mod pagetable;
pub(crate) mod pramin;
pub(crate) mod ptpool;
pub(crate) mod tlb;
pub(crate) mod vmm;
pub(crate) mod vram;

use pagetable::{
    EntryWriter,
    PageTableOps, //
};
use pramin::{
    Pramin,
    PraminAccess, //
};
use ptpool::PtPool;
use tlb::{
    Change,
    Scope,
    Tlb, //
};
use vmm::{
    Mapping,
    PtHw,
    Reservation,
    Spaces,
    Vmm, //
};
use vram::Vram;

impl EntryWriter for PraminAccess<'_, '_> {
    fn write(&mut self, addr: u64, val: u64) -> Result {
        self.write64(addr, val)
    }
}

/// Page-table writes through PRAMIN and invalidates through the TLB registers of one GPU.
pub(crate) struct GpuHw<'a> {
    bar: Arc<Bar0<'a>>,
    pramin: Arc<Pramin>,
    tlb: Arc<Tlb>,
    scope: Scope,
}

impl PtHw for GpuHw<'_> {
    fn with_writer(&self, f: &mut dyn FnMut(&mut dyn EntryWriter) -> Result) -> Result {
        let mut access = self.pramin.access(&self.bar);
        let res = f(&mut access);
        // The one flush read of the operation, after its last write and before its invalidate
        // (HARDWARE.md §9 rule 1; `kbusFlush_GM107`). Also after a failed write: what was
        // written is undone by a later operation, which must see it land first.
        let flushed = access.flush();
        res.and(flushed)
    }

    fn invalidate(&self, pdb: u64, change: Change) -> Result {
        self.tlb
            .invalidate_after(&self.bar, pdb, self.scope, change)
    }
}

/// The memory-management state of one GPU, built in one place at probe.
pub(crate) struct GpuMm<'a> {
    /// The BAR1 binding (none when firmware owns the GPU). Declared first: dropped first.
    pub(crate) bar1: Option<bar::BarUser<'a>>,
    /// BAR0.
    pub(crate) bar: Arc<Bar0<'a>>,
    /// The usable VRAM's allocator.
    pub(crate) vram: Arc<Vram>,
    /// The PRAMIN window, restricted to the usable VRAM.
    pub(crate) pramin: Arc<Pramin>,
    /// TLB invalidation.
    pub(crate) tlb: Arc<Tlb>,
    /// Page-table memory.
    pub(crate) pool: Arc<PtPool>,
    /// The live address spaces (for debugfs).
    pub(crate) spaces: Arc<Spaces>,
    /// The walker of the chip's MMU format, chosen once here.
    ops: &'static dyn PageTableOps,
    /// Whether the chip has 512 MiB pages.
    huge: bool,
    arch: crate::gpu::Architecture,
    chipset: crate::gpu::Chipset,
    hw: Arc<GpuHw<'a>>,
    hub_hw: Arc<GpuHw<'a>>,
    /// PRAMIN writes spent zeroing memory for zeroed requests.
    pub(crate) zero_fill_writes: Arc<kernel::sync::atomic::Atomic<u64>>,
    /// Mappings left in place on purpose until the GPU goes away, so that the test harness can
    /// check the page tables in the model's VRAM after power-off (dropped first).
    pub(crate) kept: Pin<KBox<Mutex<KVec<Kept<'a>>>>>,
}

/// Something the device tests leave mapped until the GPU goes away.
// Held only to keep it alive; never read.
#[allow(dead_code)]
pub(crate) enum Kept<'a> {
    /// An address space.
    Space(Arc<Vmm<'a>>),
    /// A reservation.
    Reservation(Reservation<'a>),
    /// A mapping.
    Mapping(Mapping<'a>),
    /// VRAM whose contents the harness checks in the model's dump.
    Memory(vram::VramAllocation),
}

impl Drop for GpuMm<'_> {
    fn drop(&mut self) {
        // BAR1 goes back to what it was at probe before anything it maps is released.
        if let Some(b) = &self.bar1 {
            b.unbind();
        }
        // The last MMIO of this GPU: what the harness compares with the model's totals, which
        // include the accesses made after debugfs was last read.
        let s = self.bar.stats();
        pr_info!(
            "NOVA-FINAL {:#x} mmio_reads={} mmio_writes={}\n",
            self.chipset as u32,
            s.reads.load(Relaxed),
            s.writes.load(Relaxed)
        );
        // The GPU is going away: release what is still mapped without writing to it.
        self.spaces.retire_all();
        // Whatever the order, a mapping keeps its reservation and space alive until it is gone.
        // Released with the lock dropped: a mapping's release takes its space's lock, which is
        // taken before the PRAMIN window's, which a test may hold while it keeps something.
        let kept = core::mem::take(&mut *self.kept.lock());
        drop(kept);
    }
}

impl<'a> GpuMm<'a> {
    /// Builds the memory management of a GPU of `spec` whose usable VRAM is `usable`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, or `EINVAL` for a range the PRAMIN window cannot reach.
    pub(crate) fn new(bar: Arc<Bar0<'a>>, spec: &Spec, usable: Range<u64>) -> Result<Self> {
        let vram = Vram::new(usable.clone())?;
        let pramin = Arc::pin_init(
            Pramin::new(spec.chipset.arch(), &[usable.clone()]),
            GFP_KERNEL,
        )?;
        let tlb = Arc::pin_init(Tlb::new(spec.chipset.arch()), GFP_KERNEL)?;
        // The device tests of high addresses put the page tables (and the BAR1 instance
        // block) in the top `pt_top_gib` GiB of usable VRAM.
        let top = crate::module_parameters::pt_top_gib.value() << 30;
        let pool = if top == 0 {
            PtPool::new(vram.clone())?
        } else {
            let start = usable.end.saturating_sub(top).max(usable.start);
            PtPool::placed(vram.clone(), start..usable.end)?
        };
        let hw = |scope| {
            Arc::new(
                GpuHw {
                    bar: bar.clone(),
                    pramin: pramin.clone(),
                    tlb: tlb.clone(),
                    scope,
                },
                GFP_KERNEL,
            )
        };
        let (gpu_hw, hub_hw) = (hw(Scope::Pdb)?, hw(Scope::PdbHubOnly)?);
        Ok(Self {
            bar1: None,
            bar,
            vram,
            pramin,
            tlb,
            pool,
            spaces: Spaces::new()?,
            ops: pagetable::ops_for(spec.chipset.mmu_version()),
            huge: spec.chipset.has_512m_pages(),
            arch: spec.chipset.arch(),
            chipset: spec.chipset,
            hw: gpu_hw,
            hub_hw,
            kept: KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?,
            zero_fill_writes: Arc::new(kernel::sync::atomic::Atomic::new(0), GFP_KERNEL)?,
        })
    }

    /// Creates a GPU virtual address space covering `va`.
    ///
    /// # Errors
    ///
    /// `EINVAL`/`ERANGE` for a bad range (see [`Vmm::new`]); `ENOMEM`/`ENOSPC` for the root
    /// directory; MMIO errors.
    pub(crate) fn new_vmm(&self, name: &'static str, va: Range<u64>) -> Result<Arc<Vmm<'a>>> {
        self.vmm_with(name, va, self.pool.clone(), self.hw.clone())
    }

    /// Creates a GPU virtual address space covering `va` whose tables come from `pool`
    /// (the benchmarks give each scenario a pool of its own, with no known-zero memory).
    ///
    /// # Errors
    ///
    /// As [`GpuMm::new_vmm`].
    pub(crate) fn new_vmm_in(
        &self,
        pool: Arc<PtPool>,
        name: &'static str,
        va: Range<u64>,
    ) -> Result<Arc<Vmm<'a>>> {
        self.vmm_with(name, va, pool, self.hw.clone())
    }

    /// Creates an address space whose invalidates only reach the hub TLB (BAR1, BAR2).
    ///
    /// # Errors
    ///
    /// As [`GpuMm::new_vmm`].
    pub(crate) fn new_hub_vmm(&self, name: &'static str, va: Range<u64>) -> Result<Arc<Vmm<'a>>> {
        self.vmm_with(name, va, self.pool.clone(), self.hub_hw.clone())
    }

    fn vmm_with(
        &self,
        name: &'static str,
        va: Range<u64>,
        pool: Arc<PtPool>,
        hw: Arc<GpuHw<'a>>,
    ) -> Result<Arc<Vmm<'a>>> {
        Vmm::new(name, self.ops, pool, hw, self.spaces.clone(), va, self.huge)
    }

    /// Allocates VRAM that holds zeros: from memory known to be zero when some fits, else
    /// allocated normally and zeroed through PRAMIN (counted in `zero_fill_writes`).
    ///
    /// # Errors
    ///
    /// Those of [`Vram::alloc`]; MMIO errors of the zeroing (the memory is freed then).
    pub(crate) fn alloc_zeroed(&self, req: &vram::AllocRequest) -> Result<vram::VramAllocation> {
        let a = self.vram.alloc(&req.clone().zeroed(vram::Zero::Required))?;
        if !a.is_zeroed() {
            let mut w = self.pramin.access(&self.bar);
            for r in a.ranges() {
                let n = (r.end - r.start) / 8;
                w.fill64(r.start, n, 0)?;
                self.zero_fill_writes.fetch_add(n, Relaxed);
            }
        }
        Ok(a)
    }

    /// Binds BAR1 to an address space of its own, unless firmware owns the GPU (`wpr2`), in
    /// which case BAR1 is left alone and the reason logged.
    ///
    /// # Errors
    ///
    /// Those of [`bar::BarUser::new`]; the caller decides whether probe goes on without BAR1.
    pub(crate) fn bind_bar1(
        &mut self,
        pdev: &'a kernel::pci::Device<kernel::device::Bound>,
        wpr2: bool,
    ) -> Result {
        if wpr2 {
            dev_info!(
                pdev,
                "BAR1 not bound: firmware owns the GPU (WPR2 is set); VRAM and PRAMIN stay usable\n"
            );
            return Ok(());
        }
        let b = bar::BarUser::new(pdev, self)?;
        dev_info!(
            pdev,
            "BAR1: {} MiB bound to instance block {:#x}, page directory {:#x}\n",
            b.size() >> 20,
            b.instance_block(),
            b.vmm().pdb()
        );
        self.bar1 = Some(b);
        Ok(())
    }

    /// Returns the GPU's architecture.
    pub(crate) fn arch(&self) -> crate::gpu::Architecture {
        self.arch
    }

    /// Returns the MMU format version of the chip's page tables.
    pub(crate) fn format_version(&self) -> u32 {
        self.ops.version()
    }

    /// Whether the chip has 512 MiB pages.
    pub(crate) fn has_512m_pages(&self) -> bool {
        self.huge
    }
}
