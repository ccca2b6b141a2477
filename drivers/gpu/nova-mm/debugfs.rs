// SPDX-License-Identifier: GPL-2.0

//! Read-only debugfs introspection: `/sys/kernel/debug/nova_mm/<pci device>/`.
//!
//! Files: `chip` (identity and MMU version), `fb_layout` (usable and reserved VRAM), `vram`
//! (allocator accounting), `counters` (every BAR0 access, PRAMIN and TLB operation counts),
//! `vmm` (the page-table pool and every address space: reservations, mappings, operation counts),
//! `pagetables` (each address space's tree, decoded from the shadow) and `bar1` (the BAR1
//! binding). Probe never fails because of debugfs: without it, the GPU
//! simply has no directory.

use kernel::{
    debugfs::{
        Dir,
        Scope, //
    },
    fmt,
    prelude::*,
    sync::{
        atomic::Relaxed,
        global_lock,
        Arc, //
    },
};

use crate::gpu::GpuInfo;

global_lock! {
    // SAFETY: Initialized in module initialization, before the driver is registered.
    unsafe(uninit) static ROOT: Mutex<Option<Dir>> = None;
}

/// Creates the module's debugfs root.
///
/// # Safety
///
/// Must be called once, from module initialization, before the driver is registered.
pub(crate) unsafe fn init() {
    // SAFETY: Called exactly once, before any use, as required of our caller.
    unsafe { ROOT.init() };
    *ROOT.lock() = Some(Dir::new(c"nova_mm"));
}

/// Removes the module's debugfs root (the per-GPU directories are gone by then).
pub(crate) fn exit() {
    *ROOT.lock() = None;
}

/// What the debugfs files of one GPU show: what the GPU shows of itself.
pub(crate) type DebugData = Arc<GpuInfo>;

fn show_chip(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_fmt(fmt!("{}\n", d.spec))?;
    writeln!(f, "chipset: {:#x}", d.spec.chipset.code())?;
    writeln!(f, "mmu_version: {}", d.spec.chipset.mmu_version().number())
}

fn show_layout(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_fmt(fmt!("{}", d.layout))
}

fn show_vram(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let s = d.mm.vram().stats();
    let r = d.mm.vram().range();
    writeln!(f, "range: {:#x}..{:#x}", r.start, r.end)?;
    writeln!(f, "total: {}", s.total)?;
    writeln!(f, "free: {}", s.free)?;
    writeln!(f, "largest_free: {}", s.largest_free)?;
    writeln!(f, "allocations: {}", s.allocations)?;
    writeln!(f, "cleared_bytes: {}", s.cleared)?;
    writeln!(f, "cleared_extents: {}", s.cleared_extents)?;
    d.mm.vram().clear_stats.show(f, "")?;
    writeln!(f, "zero_fill_writes: {}", d.mm.zero_fill_writes())?;
    let mut saved = 0;
    d.mm.spaces().for_each(|sp| {
        saved += sp.stats.zero_writes_saved.load(Relaxed);
        Ok(())
    })?;
    writeln!(f, "zeroing_writes_saved: {}", saved)
}

fn show_counters(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let p = &d.mm.pramin().stats;
    let t = &d.mm.tlb().stats;
    let reg = d.mm.pramin().window_reg();
    writeln!(
        f,
        "window_register: {:#x} (base bits {}, target field {})",
        reg.offset, reg.base_bits, reg.has_target
    )?;
    for r in d.mm.pramin().allowed() {
        writeln!(f, "pramin_allowed: {:#x}..{:#x}", r.start, r.end)?;
    }
    d.mm.mmio().show(f, "mmio_")?;
    p.show(f, "pramin_")?;
    t.show(f, "tlb_")?;
    if let Some(b) = d.mm.bar1() {
        b.stats.show(f, "bar1_")?;
    }
    Ok(())
}

fn show_vmm(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let p = &d.mm.pool().stats;
    let (chunks, bytes) = d.mm.pool().footprint();
    writeln!(
        f,
        "pagetable_pool: {} tables in use, {} chunks ({} KiB)",
        d.mm.pool().in_use(),
        chunks,
        bytes >> 10
    )?;
    p.show(f, "pagetable_pool_")?;
    d.mm.spaces().for_each(|s| {
        s.show(f)?;
        s.stats.show(f, "  ")
    })
}

fn show_bar1(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Some(b) = d.mm.bar1() else {
        let why = if d.layout.wpr2.is_some() {
            "firmware owns the GPU (WPR2 set)"
        } else {
            "BAR1 could not be bound"
        };
        return writeln!(f, "bar1: not bound: {}", why);
    };
    writeln!(f, "bar1_size: {:#x}", b.size)?;
    writeln!(f, "instance_block: {:#x}", b.instance_block)?;
    writeln!(f, "pdb: {:#x}", b.pdb)?;
    writeln!(f, "bind_registers: {:?}", b.regs)?;
    writeln!(f, "found_at_probe: {:#x} {:#x}", b.found.0, b.found.1)?;
    b.stats.show(f, "bar1_")?;
    d.mm.spaces().for_each(|s| {
        if s.pdb() == b.pdb {
            s.show(f)?;
        }
        Ok(())
    })
}

fn show_pagetables(d: &DebugData, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    d.mm.spaces().for_each(|s| {
        writeln!(f, "address space {}:", s.name())?;
        s.dump(f)
    })
}

/// Returns the module's debugfs root, if debugfs is available.
pub(crate) fn root() -> Option<Dir> {
    ROOT.lock().clone()
}

/// Creates the debugfs directory `name` of `gpu`, or `None` if debugfs is not available.
pub(crate) fn create(gpu: DebugData, name: &CStr) -> Option<Pin<KBox<Scope<DebugData>>>> {
    let root = root()?;
    let scope = root.scope(gpu, name, |d, dir| {
        dir.read_callback_file(c"chip", d, &show_chip);
        dir.read_callback_file(c"fb_layout", d, &show_layout);
        dir.read_callback_file(c"vram", d, &show_vram);
        dir.read_callback_file(c"counters", d, &show_counters);
        dir.read_callback_file(c"vmm", d, &show_vmm);
        dir.read_callback_file(c"pagetables", d, &show_pagetables);
        dir.read_callback_file(c"bar1", d, &show_bar1);
    });
    KBox::pin_init(scope, GFP_KERNEL).ok()
}
