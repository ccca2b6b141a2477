// SPDX-License-Identifier: GPL-2.0

//! Memory management of the GPU: video memory, the PRAMIN window, TLB invalidation, page tables
//! and GPU virtual address spaces, gathered per GPU in [`GpuMm`].

use core::ops::Range;

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
};

use crate::{
    bar::{
        Bar0,
        MmioStats, //
    },
    chip::Spec, //
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
    PtHw,
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
    io: Arc<MmIo<'a>>,
    scope: Scope,
}

impl PtHw for GpuHw<'_> {
    fn with_writer(&self, f: &mut dyn FnMut(&mut dyn EntryWriter) -> Result) -> Result {
        let mut access = self.io.state.pramin.access(&self.io.bar);
        let res = f(&mut access);
        // The one flush read of the operation, after its last write and before its invalidate
        // (HARDWARE.md §9 rule 1; `kbusFlush_GM107`). Also after a failed write: what was
        // written is undone by a later operation, which must see it land first.
        let flushed = access.flush();
        res.and(flushed)
    }

    fn invalidate(&self, pdb: u64, change: Change) -> Result {
        self.io
            .state
            .tlb
            .invalidate_after(&self.io.bar, pdb, self.scope, change)
    }

    fn log_err(&self, msg: kernel::fmt::Arguments<'_>) {
        dev_err!(self.io.bar.dev(), "{}", msg);
    }
}

/// The memory-management state of one GPU that does not borrow the device: the allocators, the
/// PRAMIN window and TLB engines, the address spaces and the counters. Shared by the page-table
/// hardware paths and by debugfs.
#[pin_data]
pub(crate) struct MmState {
    vram: Arc<Vram>,
    pramin: Arc<Pramin>,
    tlb: Arc<Tlb>,
    pool: Arc<PtPool>,
    spaces: Arc<Spaces>,
    mmio: Arc<MmioStats>,
    /// PRAMIN writes spent zeroing memory for zeroed requests.
    zero_fill_writes: Atomic<u64>,
    /// What debugfs shows of the BAR1 binding, once bound.
    #[pin]
    bar1: Mutex<Option<bar::Bar1Info>>,
}

impl MmState {
    /// Returns the usable VRAM's allocator.
    pub(crate) fn vram(&self) -> &Arc<Vram> {
        &self.vram
    }

    /// Returns the PRAMIN window, restricted to the usable VRAM.
    pub(crate) fn pramin(&self) -> &Arc<Pramin> {
        &self.pramin
    }

    /// Returns the TLB invalidation engine.
    pub(crate) fn tlb(&self) -> &Arc<Tlb> {
        &self.tlb
    }

    /// Returns the page-table memory.
    pub(crate) fn pool(&self) -> &Arc<PtPool> {
        &self.pool
    }

    /// Returns the live address spaces.
    pub(crate) fn spaces(&self) -> &Arc<Spaces> {
        &self.spaces
    }

    /// Returns the BAR0 access counts.
    pub(crate) fn mmio(&self) -> &MmioStats {
        &self.mmio
    }

    /// Returns the PRAMIN writes spent zeroing memory for zeroed requests.
    pub(crate) fn zero_fill_writes(&self) -> u64 {
        self.zero_fill_writes.load(Relaxed)
    }

    /// Returns what debugfs shows of the BAR1 binding, if BAR1 is bound.
    pub(crate) fn bar1(&self) -> Option<bar::Bar1Info> {
        self.bar1.lock().clone()
    }
}

/// BAR0 and the device-independent state: what page-table writes and invalidates go through.
struct MmIo<'a> {
    bar: Arc<Bar0<'a>>,
    state: Arc<MmState>,
}

/// The memory-management state of one GPU, built in one place at probe.
pub(crate) struct GpuMm<'a> {
    /// The BAR1 binding (none when firmware owns the GPU). Declared first: dropped first.
    bar1: Option<bar::BarUser<'a>>,
    io: Arc<MmIo<'a>>,
    /// The walker of the chip's MMU format, chosen once here.
    ops: &'static dyn PageTableOps,
    /// Whether the chip has 512 MiB pages.
    huge: bool,
    arch: crate::chip::Architecture,
    /// Page-table writes and invalidates of the GPU's address spaces, and of the hub's.
    hw: Arc<GpuHw<'a>>,
    hub_hw: Arc<GpuHw<'a>>,
}

impl Drop for GpuMm<'_> {
    fn drop(&mut self) {
        self.retire();
    }
}

impl<'a> GpuMm<'a> {
    /// Builds the memory management of a GPU of `spec` whose usable VRAM is `usable`, with
    /// page tables (and the BAR1 instance block) placed in `tables` if given, else from the
    /// bottom of `usable`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, or `EINVAL` for a range the PRAMIN window cannot reach.
    pub(crate) fn new(
        bar: Arc<Bar0<'a>>,
        spec: &Spec,
        usable: Range<u64>,
        tables: Option<Range<u64>>,
    ) -> Result<Self> {
        let vram = Vram::new(usable.clone())?;
        let pramin = Arc::pin_init(
            Pramin::new(spec.chipset.arch(), &[usable.clone()]),
            GFP_KERNEL,
        )?;
        let tlb = Arc::pin_init(Tlb::new(spec.chipset.arch()), GFP_KERNEL)?;
        let pool = match tables {
            None => PtPool::new(vram.clone())?,
            Some(r) => PtPool::placed(vram.clone(), r)?,
        };
        let mmio = bar.stats().clone();
        let state = Arc::pin_init(
            try_pin_init!(MmState {
                vram,
                pramin,
                tlb,
                pool,
                spaces: Spaces::new()?,
                mmio,
                zero_fill_writes: Atomic::new(0),
                bar1 <- new_mutex!(None),
            }? Error),
            GFP_KERNEL,
        )?;
        let io = Arc::new(MmIo { bar, state }, GFP_KERNEL)?;
        let hw = |scope| {
            Arc::new(
                GpuHw {
                    io: io.clone(),
                    scope,
                },
                GFP_KERNEL,
            )
        };
        let (gpu_hw, hub_hw) = (hw(Scope::Pdb)?, hw(Scope::PdbHubOnly)?);
        Ok(Self {
            bar1: None,
            io,
            ops: pagetable::ops_for(spec.chipset.mmu_version()),
            huge: spec.chipset.has_512m_pages(),
            arch: spec.chipset.arch(),
            hw: gpu_hw,
            hub_hw,
        })
    }

    /// The GPU is going away, or its state is being torn down: puts BAR1 back in physical mode
    /// and releases every address space without writing to the GPU (idempotent). What is still
    /// mapped then is released later, as its owners drop it, with no further MMIO.
    pub(crate) fn retire(&self) {
        // BAR1 goes back to what it was at probe before anything it maps is released.
        if let Some(b) = &self.bar1 {
            b.unbind();
        }
        self.io.state.spaces.retire_all();
    }

    /// Returns BAR0.
    pub(crate) fn bar(&self) -> &Arc<Bar0<'a>> {
        &self.io.bar
    }

    /// Returns the state that does not borrow the device (what debugfs shows).
    pub(crate) fn state(&self) -> &Arc<MmState> {
        &self.io.state
    }

    /// Returns the usable VRAM's allocator.
    pub(crate) fn vram(&self) -> &Arc<Vram> {
        self.io.state.vram()
    }

    /// Returns the PRAMIN window, restricted to the usable VRAM.
    pub(crate) fn pramin(&self) -> &Arc<Pramin> {
        self.io.state.pramin()
    }

    /// Returns the TLB invalidation engine.
    pub(crate) fn tlb(&self) -> &Arc<Tlb> {
        self.io.state.tlb()
    }

    /// Returns the page-table memory.
    pub(crate) fn pool(&self) -> &Arc<PtPool> {
        self.io.state.pool()
    }

    /// Returns the live address spaces.
    pub(crate) fn spaces(&self) -> &Arc<Spaces> {
        self.io.state.spaces()
    }

    /// Returns the BAR1 binding, if BAR1 is bound.
    pub(crate) fn bar1(&self) -> Option<&bar::BarUser<'a>> {
        self.bar1.as_ref()
    }

    /// Returns the PRAMIN writes spent zeroing memory for zeroed requests.
    pub(crate) fn zero_fill_writes(&self) -> u64 {
        self.io.state.zero_fill_writes()
    }

    /// Creates a GPU virtual address space covering `va`.
    ///
    /// # Errors
    ///
    /// `EINVAL`/`ERANGE` for a bad range (see [`Vmm::new`]); `ENOMEM`/`ENOSPC` for the root
    /// directory; MMIO errors.
    pub(crate) fn new_vmm(&self, name: &'static str, va: Range<u64>) -> Result<Arc<Vmm<'a>>> {
        self.vmm_with(name, va, self.pool().clone(), self.hw.clone())
    }

    /// Creates a GPU virtual address space covering `va` whose tables come from `pool`
    /// (the benchmarks give each scenario a pool of its own, with no known-zero memory).
    ///
    /// # Errors
    ///
    /// As [`GpuMm::new_vmm`].
    #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
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
        self.vmm_with(name, va, self.pool().clone(), self.hub_hw.clone())
    }

    fn vmm_with(
        &self,
        name: &'static str,
        va: Range<u64>,
        pool: Arc<PtPool>,
        hw: Arc<GpuHw<'a>>,
    ) -> Result<Arc<Vmm<'a>>> {
        Vmm::new(
            name,
            self.ops,
            pool,
            hw,
            self.spaces().clone(),
            va,
            self.huge,
        )
    }

    /// Allocates VRAM that holds zeros: from memory known to be zero when some fits, else
    /// allocated normally and zeroed through PRAMIN (counted in `zero_fill_writes`).
    ///
    /// # Errors
    ///
    /// Those of [`Vram::alloc`]; MMIO errors of the zeroing (the memory is freed then).
    pub(crate) fn alloc_zeroed(&self, req: &vram::AllocRequest) -> Result<vram::VramAllocation> {
        let st = &self.io.state;
        let a = st.vram.alloc(&req.clone().zeroed(vram::Zero::Required))?;
        if !a.is_zeroed() {
            let mut w = st.pramin.access(&self.io.bar);
            for r in a.ranges() {
                let n = (r.end - r.start) / 8;
                w.fill64(r.start, n, 0)?;
                st.zero_fill_writes.fetch_add(n, Relaxed);
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
        let parts = bar::Bar1Parts {
            bar0: self.io.bar.clone(),
            pramin: self.pramin(),
            arch: self.arch,
            inst: self.pool().alloc()?,
        };
        let b = bar::BarUser::new(pdev, parts, |va| self.new_hub_vmm("bar1", va))?;
        dev_info!(
            pdev,
            "BAR1: {} MiB bound to instance block {:#x}, page directory {:#x}\n",
            b.size() >> 20,
            b.instance_block(),
            b.vmm().pdb()
        );
        *self.io.state.bar1.lock() = Some(b.info());
        self.bar1 = Some(b);
        Ok(())
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
