// SPDX-License-Identifier: GPL-2.0

//! BarUser: VRAM mapped into BAR1 for the CPU.
//!
//! BAR1 is a window of the GPU's virtual memory: a CPU access at BAR1 offset `X` is translated by
//! the GPU's MMU (through the hub TLB) at virtual address `X` of the address space bound to BAR1.
//! [`BarUser`] is a [`Vmm`] covering the BAR as the PCI core sized it, whose invalidates reach the
//! hub TLB only; it writes an instance block pointing at that space's root directory and binds it
//! through the family's BAR1 block register:
//!
//! - Turing, Ampere, Ada: `NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK` (`0xB80F40`: PTR 27:0 = instance
//!   block >> 12, TARGET 29:28, MODE 31 = virtual), completion in `..._BIND_STATUS` (`0xB80F50`,
//!   BAR1 PENDING 0, OUTSTANDING 1) (open-gpu-doc `turing/tu104/dev_vm.ref.txt`).
//! - Hopper, Blackwell: `..._BAR1_BLOCK_LOW_ADDR` (`0xB80F60`: PENDING 0, OUTSTANDING 1, MODE 9,
//!   TARGET 11:10, PTR 31:12 = address bits 31:12) and `..._HIGH_ADDR` (`0xB80F64`, bits 63:32)
//!   (open-gpu-kernel-modules `hopper/gh100/dev_vm.h`). LOW is written first, then HIGH: the
//!   write to HIGH triggers the bind, with the LOW value written before it (`kern_bus_gh100.c`,
//!   `kbusBar1InstBlkBind_GH100`: "Write to the HIGH register triggers the bind"); then LOW is
//!   polled until PENDING and OUTSTANDING clear.
//!
//! Before the bind the instance block is flushed (one PRAMIN read after its writes, HARDWARE.md
//! §9 rules 1 and 3: `kbusBar1InstBlkVasUpdate_GM107` flushes, then binds), and no BAR1 access is
//! made before the bind's poll saw it complete (`kbusBar1InstBlkBind_TU102`: "SW must ensure
//! that the bind has completed prior to issuing any further BAR1 requests").
//!
//! The instance block (`NV_RAMIN`, open-gpu-doc `dev_ram.ref.txt`) holds the page directory base
//! at word 128: TARGET 1:0 (video memory), VOL 2, USE_VER2_PT_FORMAT 10, BIG_PAGE_SIZE 11 (64 KiB),
//! PAGE_DIR_BASE_LO 31:12; word 129 PAGE_DIR_BASE_HI. USE_VER2_PT_FORMAT is set for the v2 format
//! only: RM sets it when the format version is 2 and leaves it 0 for v3 (`kern_gmmu_gp100.c`,
//! `kgmmuInstBlkPageDirBaseGet_GP100`). Words 130/131 (`NV_RAMIN_ADR_LIMIT_LO/HI`) get the
//! address limit on Turing only (`kgmmuInstBlkVaLimitGet_GV100`); on Blackwell word 131 holds
//! `NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE_V` 0xcafeca11 (`ampere/ga10b/dev_ram.h`,
//! `kgmmuInstBlkMagicValueGet_GA10B`).
//!
//! When firmware owns the GPU (WPR2 set), BAR1 belongs to it: the driver does not bind and says
//! so. Unbinding on removal puts BAR1 in physical mode (MODE=PHYSICAL, TARGET=VID_MEM), as RM's
//! teardown does (`kbusTeardownMailbox_GM107`/`_GH100`) and nouveau's (`tu102_bar_bar1_fini`
//! clears MODE): never back to a virtual binding found at probe, whose tables the driver does not
//! own.

use core::ops::Range;

use kernel::sizes::SizeConstants;
use kernel::{
    bitfield,
    io::{
        poll::read_poll_timeout,
        register,
        Io, //
    },
    pci,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
    },
    time::Delta,
};

use crate::{
    bar::Bar0,
    chip::Architecture,
    mm::{
        pagetable::{
            Access, //
        },
        pramin::Pramin,
        ptpool::PtMem,
        vmm::{
            Mapping,
            Reservation,
            Vmm, //
        },
        vram::VramAllocation, //
    },
};

register! {
    /// BAR1 binding of Turing, Ampere and Ada (`NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK`,
    /// `turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK(u32) @ 0x00b80f40 {
        /// 1: virtual (translated through the instance block), 0: physical.
        31:31   mode => bool;
        /// Aperture of the instance block: 0 video memory, 2/3 system memory.
        29:28   target;
        /// Address of the instance block, >> 12.
        27:0    ptr;
    }

    /// Bind status of Turing, Ampere and Ada (`NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS`,
    /// `turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS(u32) @ 0x00b80f50 {
        /// A BAR1 bind is outstanding.
        1:1     bar1_outstanding => bool;
        /// A BAR1 bind is pending.
        0:0     bar1_pending => bool;
    }

    /// BAR1 binding of Hopper and Blackwell, low word (`NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR`,
    /// `hopper/gh100/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000); written before HIGH,
    /// polled for the bind's completion.
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR(u32) @ 0x00b80f60 {
        /// Bits 31:12 of the instance block address.
        31:12   ptr;
        /// Aperture of the instance block: 0 video memory.
        11:10   target;
        /// 1: virtual.
        9:9     mode => bool;
        /// The bind is outstanding.
        1:1     bar1_outstanding => bool;
        /// The bind is pending.
        0:0     bar1_pending => bool;
    }

    /// BAR1 binding of Hopper and Blackwell, high word (`NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_HIGH_ADDR`,
    /// `hopper/gh100/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000); writing it triggers
    /// the bind.
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_HIGH_ADDR(u32) @ 0x00b80f64 {
        /// Bits 63:32 of the instance block address.
        31:0    ptr;
    }
}

/// Upper bound on the wait for a BAR1 bind.
///
/// TIMEOUT: nouveau waits up to 2 s for the BAR1 bind (`tu102_bar_bar1_wait`, `nvkm_msec(device,
/// 2000, ...)`); hardware completes it in microseconds.
const BIND_TIMEOUT: Delta = Delta::from_millis(2000);

/// Offset of `NV_RAMIN_PAGE_DIR_BASE_LO` (word 128) in the instance block.
const RAMIN_PAGE_DIR_BASE: u64 = 0x200;
/// `NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE_V` (word 131 on Blackwell; `ampere/ga10b/dev_ram.h`).
const RAMIN_CTXSW_FW_MAGIC_VALUE: u32 = 0xcafe_ca11;

bitfield! {
    /// Word 128 of the instance block (`NV_RAMIN_PAGE_DIR_BASE_LO` and its neighbours; no published
    /// header: open-gpu-doc `turing/tu104/dev_ram.ref.txt`, bits 4127:4096 there).
    pub(crate) struct RaminPageDirBaseLo(u32) {
        /// Bits 31:12 of the page directory's address (`NV_RAMIN_PAGE_DIR_BASE_LO`).
        31:12   page_dir_base_lo;
        /// 1: the big page is 64 KiB, 0: 128 KiB (`NV_RAMIN_BIG_PAGE_SIZE`).
        11:11   big_page_size_64kb => bool;
        /// The page tables have the version 2 format (`NV_RAMIN_USE_VER2_PT_FORMAT`).
        10:10   use_ver2_pt_format => bool;
        /// Volatile (`NV_RAMIN_PAGE_DIR_BASE_VOL`).
        2:2     vol => bool;
        /// Aperture of the page directory: 0 video memory, 2/3 system memory
        /// (`NV_RAMIN_PAGE_DIR_BASE_TARGET`).
        1:0     target;
    }
}

/// The BAR1 block registers of a chip family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindRegs {
    /// `BAR1_BLOCK` at `0xB80F40` and `BIND_STATUS` (Turing, Ampere, Ada).
    Tu102,
    /// `BAR1_BLOCK_LOW_ADDR`/`_HIGH_ADDR` at `0xB80F60` (Hopper, Blackwell).
    Gh100,
}

impl BindRegs {
    /// Returns the registers of `arch`.
    pub(crate) const fn for_arch(arch: Architecture) -> Self {
        match arch {
            Architecture::Turing | Architecture::Ampere | Architecture::Ada => Self::Tu102,
            Architecture::Hopper | Architecture::BlackwellGB10x | Architecture::BlackwellGB20x => {
                Self::Gh100
            }
        }
    }

    /// Returns the register values (low, high) that bind the instance block at `inst` in
    /// virtual mode.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `inst` is not 4 KiB aligned or beyond the register's reach.
    pub(crate) fn encode(self, inst: u64) -> Result<(u32, u32)> {
        if inst % u64::SZ_4K != 0 {
            return Err(EINVAL);
        }
        match self {
            Self::Tu102 => Ok((
                NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK::zeroed()
                    .with_mode(true)
                    .try_with_ptr(inst >> 12)?
                    .into_raw(),
                0,
            )),
            Self::Gh100 => Ok((
                NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR::zeroed()
                    .with_mode(true)
                    .try_with_ptr((inst >> 12) & 0xf_ffff)?
                    .into_raw(),
                u32::try_from(inst >> 32).map_err(|_| EINVAL)?,
            )),
        }
    }

    /// Reads what the BAR1 block registers hold (low, high).
    fn read(self, bar: &Bar0<'_>) -> Result<(u32, u32)> {
        Ok(match self {
            Self::Tu102 => (
                bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK)?
                    .into_raw(),
                0,
            ),
            Self::Gh100 => (
                bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR)?
                    .into_raw(),
                bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_HIGH_ADDR)?
                    .into_raw(),
            ),
        })
    }

    /// Returns the register values (low, high) of physical mode: MODE=PHYSICAL, TARGET=VID_MEM,
    /// no instance block (`kbusTeardownMailbox_GM107`/`_GH100`, nouveau `tu102_bar_bar1_fini`).
    pub(crate) fn physical(self) -> (u32, u32) {
        match self {
            Self::Tu102 => (NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK::zeroed().into_raw(), 0),
            Self::Gh100 => (
                NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR::zeroed().into_raw(),
                0,
            ),
        }
    }

    /// Writes the BAR1 block registers and waits until the bind completed.
    fn bind(self, bar: &Bar0<'_>, lo: u32, hi: u32) -> Result {
        match self {
            Self::Tu102 => {
                bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK::from_raw(lo))?;
                read_poll_timeout(
                    || bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS),
                    |s: &NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS| {
                        !s.bar1_pending() && !s.bar1_outstanding()
                    },
                    Delta::from_micros(10),
                    BIND_TIMEOUT,
                )?;
            }
            Self::Gh100 => {
                // Pending and outstanding are status bits: what is written there is ignored.
                let lo = lo & !0x3;
                // LOW first, then HIGH: the write to HIGH triggers the bind, with the LOW value
                // written before it (`kbusBar1InstBlkBind_GH100`).
                bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR::from_raw(
                    lo,
                ))?;
                bar.try_write_reg(
                    NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_HIGH_ADDR::from_raw(hi),
                )?;
                read_poll_timeout(
                    || bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR),
                    |s: &NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR| {
                        !s.bar1_pending() && !s.bar1_outstanding()
                    },
                    Delta::from_micros(10),
                    BIND_TIMEOUT,
                )?;
            }
        }
        Ok(())
    }
}

/// Returns the 32-bit words 128..=131 of the instance block, on a chip of `arch`, whose page
/// directory is `pdb` and whose address space ends at `limit` (exclusive).
pub(crate) fn instance_words(arch: Architecture, pdb: u64, limit: u64) -> Result<[u32; 4]> {
    if pdb % u64::SZ_4K != 0 || limit == 0 {
        return Err(EINVAL);
    }
    // USE_VER2_PT_FORMAT for the v2 format only (`kgmmuInstBlkPageDirBaseGet_GP100`).
    let ver2 = matches!(
        arch,
        Architecture::Turing | Architecture::Ampere | Architecture::Ada
    );
    // TARGET 0 is video memory, VOL 0.
    let lo = RaminPageDirBaseLo::zeroed()
        .try_with_page_dir_base_lo((pdb >> 12) & 0xf_ffff)?
        .with_big_page_size_64kb(true)
        .with_use_ver2_pt_format(ver2)
        .into_raw();
    // `NV_RAMIN_PAGE_DIR_BASE_HI`: bits 63:32 of the address.
    let hi = u32::try_from(pdb >> 32).map_err(|_| EINVAL)?;
    Ok(match arch {
        Architecture::Turing => {
            // `NV_RAMIN_ADR_LIMIT_LO/HI`: the last address (nouveau writes `limit - 1`), 4 KiB
            // granular; RM writes it on TU10x only (`kgmmuInstBlkVaLimitGet_GV100`).
            let last = limit - 1;
            // CAST: the low and high halves of `last`.
            [lo, hi, (last as u32) & 0xffff_f000, (last >> 32) as u32]
        }
        Architecture::BlackwellGB10x | Architecture::BlackwellGB20x => {
            [lo, hi, 0, RAMIN_CTXSW_FW_MAGIC_VALUE]
        }
        Architecture::Ampere | Architecture::Ada | Architecture::Hopper => [lo, hi, 0, 0],
    })
}

counters! {
    /// Counts of CPU accesses through BAR1.
    pub(crate) struct Bar1Stats / Bar1Snapshot {
        /// CPU reads through BAR1.
        reads,
        /// CPU writes through BAR1.
        writes,
    }
}

/// What debugfs shows of a BAR1 binding.
#[derive(Clone)]
pub(crate) struct Bar1Info {
    /// Size of BAR1.
    pub(crate) size: u64,
    /// VRAM address of the instance block.
    pub(crate) instance_block: u64,
    /// VRAM address of the root page directory.
    pub(crate) pdb: u64,
    /// The registers the binding went through.
    pub(crate) regs: BindRegs,
    /// What the registers held at probe.
    pub(crate) found: (u32, u32),
    /// Access counts.
    pub(crate) stats: Arc<Bar1Stats>,
}

/// BAR1 as the CPU sees it, every access counted.
pub(crate) struct Bar1<'a> {
    bar: pci::Bar<'a>,
    size: u64,
    stats: Arc<Bar1Stats>,
}

/// The BAR1 binding of one GPU: its address space and instance block.
pub(crate) struct BarUser<'a> {
    bar1: Arc<Bar1<'a>>,
    vmm: Arc<Vmm<'a>>,
    bar0: Arc<Bar0<'a>>,
    regs: BindRegs,
    inst: PtMem,
    /// What the BAR1 block registers held at probe (low, high).
    found: (u32, u32),
    bound: Atomic<u32>,
    pdev: &'a pci::Device<kernel::device::Bound>,
}

/// What a BAR1 binding is built from, besides the PCI device.
pub(crate) struct Bar1Parts<'a, 'p> {
    /// BAR0, for the bind registers.
    pub(crate) bar0: Arc<Bar0<'a>>,
    /// The PRAMIN window the instance block is written through.
    pub(crate) pramin: &'p Pramin,
    /// The chip's architecture (bind registers and instance-block words).
    pub(crate) arch: Architecture,
    /// The page-table slot that becomes the instance block.
    pub(crate) inst: PtMem,
}

impl<'a> BarUser<'a> {
    /// Maps BAR1 of `pdev`, creates its address space over the whole BAR with `new_vmm`
    /// (whose invalidates must reach the hub TLB), writes the instance block and binds it.
    ///
    /// # Errors
    ///
    /// `ENODEV` for a BAR1 size that is not usable; errors of the BAR mapping and of
    /// `new_vmm`; `ETIMEDOUT` if the bind or the invalidate does not complete.
    pub(crate) fn new(
        pdev: &'a pci::Device<kernel::device::Bound>,
        parts: Bar1Parts<'a, '_>,
        new_vmm: impl FnOnce(Range<u64>) -> Result<Arc<Vmm<'a>>>,
    ) -> Result<Self> {
        let Bar1Parts {
            bar0,
            pramin,
            arch,
            inst,
        } = parts;
        let size = pdev.resource_len(1)?;
        if size < u64::SZ_64K || !size.is_power_of_two() {
            dev_err!(pdev, "BAR1 of {:#x} bytes is not usable\n", size);
            return Err(ENODEV);
        }
        let bar = pdev.iomap_region(1, c"nova-mm/bar1")?;
        let bar1 = Arc::new(
            Bar1 {
                bar,
                size,
                stats: Arc::new(Bar1Stats::new(), GFP_KERNEL)?,
            },
            GFP_KERNEL,
        )?;
        let vmm = new_vmm(0..size)?;
        let regs = BindRegs::for_arch(arch);
        let words = instance_words(arch, vmm.pdb(), size)?;
        let (lo, hi) = regs.encode(inst.addr())?;
        let found = regs.read(&bar0)?;
        {
            let mut w = pramin.access(&bar0);
            // The whole block: zeros, then the page directory base and the limit.
            let mut block = KVec::with_capacity(512, GFP_KERNEL)?;
            for i in 0..512u64 {
                let off = i * 8;
                let v = if off == RAMIN_PAGE_DIR_BASE {
                    u64::from(words[0]) | (u64::from(words[1]) << 32)
                } else if off == RAMIN_PAGE_DIR_BASE + 8 {
                    u64::from(words[2]) | (u64::from(words[3]) << 32)
                } else {
                    0
                };
                block.push(v, GFP_KERNEL)?;
            }
            w.write64_slice(inst.addr(), &block)?;
            // The block must have landed before the bind reads it (HARDWARE.md §9 rule 3).
            w.flush()?;
        }
        regs.bind(&bar0, lo, hi).inspect_err(|_| {
            dev_err!(
                pdev,
                "BAR1 bind of instance block {:#x} did not complete\n",
                inst.addr()
            )
        })?;
        // The space's tables were written before it was bound: one invalidate of the whole
        // space, through the space's own invalidation path (the hub TLB).
        if let Err(e) = vmm.invalidate() {
            // Not usable after all: back to physical mode, as at removal.
            let (plo, phi) = regs.physical();
            let _ = regs.bind(&bar0, plo, phi);
            return Err(e);
        }
        Ok(Self {
            bar1,
            vmm,
            bar0,
            regs,
            inst,
            found,
            bound: Atomic::new(1),
            pdev,
        })
    }

    /// Returns the size of BAR1 (and of its address space).
    pub(crate) fn size(&self) -> u64 {
        self.bar1.size
    }

    /// Returns the instance block's VRAM address.
    pub(crate) fn instance_block(&self) -> u64 {
        self.inst.addr()
    }

    /// Returns the address space bound to BAR1.
    pub(crate) fn vmm(&self) -> &Arc<Vmm<'a>> {
        &self.vmm
    }

    /// Returns what debugfs shows of the binding.
    pub(crate) fn info(&self) -> Bar1Info {
        Bar1Info {
            size: self.bar1.size,
            instance_block: self.inst.addr(),
            pdb: self.vmm.pdb(),
            regs: self.regs,
            found: self.found,
            stats: self.bar1.stats.clone(),
        }
    }

    /// Puts BAR1 back in physical mode (idempotent): MODE=PHYSICAL, TARGET=VID_MEM, as RM's
    /// teardown does; not the binding found at probe, whose tables are not the driver's.
    pub(crate) fn unbind(&self) {
        if self.bound.xchg(0, Relaxed) == 0 {
            return;
        }
        let (lo, hi) = self.regs.physical();
        if let Err(e) = self.regs.bind(&self.bar0, lo, hi) {
            dev_err!(
                self.pdev,
                "putting BAR1 back in physical mode failed: {:?}\n",
                e
            );
        }
    }

    /// Maps `size` bytes of `mem` from byte `mem_offset` into BAR1, at `at` if given, else
    /// wherever there is room, aligned so that the largest pages can be used.
    ///
    /// # Errors
    ///
    /// `ENOSPC` when BAR1 has no room; the errors of [`Vmm::reserve`] and
    /// [`Reservation::map`].
    pub(crate) fn map(
        &self,
        mem: &Arc<VramAllocation>,
        mem_offset: u64,
        size: u64,
        access: Access,
        at: Option<u64>,
    ) -> Result<BarMapping<'a>> {
        if size == 0 || size % u64::SZ_4K != 0 {
            return Err(EINVAL);
        }
        // The physical alignment of the start decides the largest page of the first run; the
        // virtual range gets the same alignment.
        let pa = first_pa(mem, mem_offset).ok_or(ERANGE)?;
        let mut align = u64::SZ_4K;
        for s in [u64::SZ_512M, u64::SZ_2M, u64::SZ_64K] {
            if pa % s == 0 && size >= s && s <= self.bar1.size {
                align = s;
                break;
            }
        }
        let res = self.vmm.reserve(size, align, at, false)?;
        let map = res.map(0, mem, mem_offset, size, access)?;
        Ok(BarMapping {
            bar1: self.bar1.clone(),
            va: map.va(),
            size,
            map,
        })
    }

    /// Gives the CPU access through BAR1 to `map`, a mapping of this BAR's address space (made
    /// by a batch on [`BarUser::vmm`]).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `map` is of another address space, or a batch unmapped it.
    pub(crate) fn cpu_access(&self, map: Mapping<'a>) -> Result<BarMapping<'a>> {
        if !map.is_of(&self.vmm) || map.is_unmapped() {
            return Err(EINVAL);
        }
        let size = map.pieces().iter().map(|p| p.len).sum();
        Ok(BarMapping {
            bar1: self.bar1.clone(),
            va: map.va(),
            size,
            map,
        })
    }

    /// Reserves `size` bytes of BAR1 as sparse: reads return zero, writes are dropped.
    ///
    /// # Errors
    ///
    /// As [`Vmm::reserve`].
    pub(crate) fn reserve_sparse(&self, size: u64) -> Result<Reservation<'a>> {
        self.vmm.reserve(size, u64::SZ_4K, None, true)
    }

    /// Reads 32 bits at BAR1 offset `off`, wherever it is mapped (for the tests of faults).
    ///
    /// # Errors
    ///
    /// `ERANGE` beyond the BAR.
    #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
    pub(crate) fn raw_read32(&self, off: u64) -> Result<u32> {
        self.bar1.read32(off)
    }
}

/// Returns the VRAM address of byte `offset` of `mem`.
fn first_pa(mem: &VramAllocation, mut offset: u64) -> Option<u64> {
    for r in mem.ranges() {
        let len = r.end - r.start;
        if offset < len {
            return Some(r.start + offset);
        }
        offset -= len;
    }
    None
}

impl Bar1<'_> {
    fn check(&self, off: u64, len: u64) -> Result<usize> {
        let end = off.checked_add(len).ok_or(ERANGE)?;
        if end > self.size || off % len != 0 {
            return Err(ERANGE);
        }
        usize::try_from(off).map_err(|_| ERANGE)
    }

    #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
    fn read32(&self, off: u64) -> Result<u32> {
        let o = self.check(off, 4)?;
        self.stats.reads.fetch_add(1, Relaxed);
        (&self.bar).try_read32(o)
    }
}

/// VRAM mapped into BAR1: accessors bounded to the mapping; unmapped on drop.
pub(crate) struct BarMapping<'a> {
    bar1: Arc<Bar1<'a>>,
    va: u64,
    size: u64,
    map: Mapping<'a>,
}

macro_rules! bar_accessors {
    ($($read:ident, $write:ident, $try_read:ident, $try_write:ident, $t:ty;)*) => {
        $(
            #[doc = concat!("Reads a `", stringify!($t), "` at byte `off` of the mapping.")]
            ///
            /// # Errors
            ///
            /// `ERANGE` if the access is not inside the mapping or not naturally aligned.
            pub(crate) fn $read(&self, off: u64) -> Result<$t> {
                // CAST: the size of an integer type.
                let o = self.at(off, core::mem::size_of::<$t>() as u64)?;
                self.bar1.stats.reads.fetch_add(1, Relaxed);
                (&self.bar1.bar).$try_read(o)
            }

            #[doc = concat!("Writes a `", stringify!($t), "` at byte `off` of the mapping.")]
            ///
            /// # Errors
            ///
            /// `ERANGE` if the access is not inside the mapping or not naturally aligned.
            pub(crate) fn $write(&self, off: u64, val: $t) -> Result {
                // CAST: the size of an integer type.
                let o = self.at(off, core::mem::size_of::<$t>() as u64)?;
                self.bar1.stats.writes.fetch_add(1, Relaxed);
                (&self.bar1.bar).$try_write(val, o)
            }
        )*
    };
}

impl BarMapping<'_> {
    /// Returns the BAR1 offset (and virtual address) of the mapping.
    pub(crate) fn offset(&self) -> u64 {
        self.va
    }

    /// Returns the size of the mapping.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Returns the underlying mapping (its pages).
    pub(crate) fn mapping(&self) -> &Mapping<'_> {
        &self.map
    }

    /// Returns the BAR offset of byte `off` of the mapping, for an access of `len` bytes.
    fn at(&self, off: u64, len: u64) -> Result<usize> {
        let end = off.checked_add(len).ok_or(ERANGE)?;
        if end > self.size || off % len != 0 {
            return Err(ERANGE);
        }
        usize::try_from(self.va + off).map_err(|_| ERANGE)
    }

    bar_accessors! {
        read8, write8, try_read8, try_write8, u8;
        read16, write16, try_read16, try_write16, u16;
        read32, write32, try_read32, try_write32, u32;
        read64, write64, try_read64, try_write64, u64;
    }

    /// Splits `len` bytes from byte `off` of the mapping into the accesses a copy makes:
    /// `(index in the buffer, offset in the mapping, 8 or 1 bytes)`, 64-bit wherever aligned.
    ///
    /// # Errors
    ///
    /// `ERANGE` if the range is not inside the mapping.
    fn copy_steps(
        &self,
        off: u64,
        len: usize,
    ) -> Result<impl Iterator<Item = (usize, u64, usize)>> {
        let n = u64::try_from(len).map_err(|_| ERANGE)?;
        if off.checked_add(n).is_none_or(|end| end > self.size) {
            return Err(ERANGE);
        }
        let mut i = 0;
        Ok(core::iter::from_fn(move || {
            if i >= len {
                return None;
            }
            // CAST: `i` is below `len`, which fits in 64 bits.
            let o = off + i as u64;
            let w = if o % 8 == 0 && len - i >= 8 { 8 } else { 1 };
            let step = (i, o, w);
            i += w;
            Some(step)
        }))
    }

    /// Copies `buf.len()` bytes from byte `off` of the mapping into `buf`.
    ///
    /// # Errors
    ///
    /// `ERANGE` if the range is not inside the mapping (nothing is read then).
    pub(crate) fn copy_to_slice(&self, off: u64, buf: &mut [u8]) -> Result {
        for (i, o, w) in self.copy_steps(off, buf.len())? {
            if w == 8 {
                buf[i..i + 8].copy_from_slice(&self.read64(o)?.to_le_bytes());
            } else {
                buf[i] = self.read8(o)?;
            }
        }
        Ok(())
    }

    /// Copies `buf` to byte `off` of the mapping.
    ///
    /// # Errors
    ///
    /// `ERANGE` if the range is not inside the mapping (nothing is written then).
    pub(crate) fn copy_from_slice(&self, off: u64, buf: &[u8]) -> Result {
        for (i, o, w) in self.copy_steps(off, buf.len())? {
            if w == 8 {
                let mut q = [0u8; 8];
                q.copy_from_slice(&buf[i..i + 8]);
                self.write64(o, u64::from_le_bytes(q))?;
            } else {
                self.write8(o, buf[i])?;
            }
        }
        Ok(())
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_bar)]
mod tests {
    use super::*;

    /// The instance block's words per chip family, as RM writes them.
    #[test]
    fn instance_block_words() -> Result {
        let pdb = 0x1_2345_6000;
        // v2: USE_VER2_PT_FORMAT (bit 10) and 64 KiB big pages (bit 11); limit on TU10x only.
        let tu = instance_words(Architecture::Turing, pdb, 1 << 28)?;
        assert_eq!(tu, [0x2345_6c00, 0x1, 0x0fff_f000, 0]);
        assert_eq!(
            instance_words(Architecture::Ampere, pdb, 1 << 28)?,
            [0x2345_6c00, 0x1, 0, 0]
        );
        // v3: no VER2 bit; Blackwell puts the magic in word 131.
        assert_eq!(
            instance_words(Architecture::Hopper, pdb, 1 << 28)?,
            [0x2345_6800, 0x1, 0, 0]
        );
        assert_eq!(
            instance_words(Architecture::BlackwellGB20x, pdb, 1 << 28)?,
            [0x2345_6800, 0x1, 0, 0xcafe_ca11]
        );
        assert_eq!(
            instance_words(Architecture::Ada, 0x1234, 1 << 28),
            Err(EINVAL)
        );
        Ok(())
    }

    /// The bind and teardown values of both register families.
    #[test]
    fn bind_registers() -> Result {
        // TU..AD: MODE 31, PTR 27:0 = block >> 12.
        assert_eq!(BindRegs::Tu102.encode(0x20_1000)?, (0x8000_0201, 0));
        // GH/GB: LOW = PTR 31:12 | MODE 9, HIGH = bits 63:32.
        assert_eq!(BindRegs::Gh100.encode(0x3_0020_1000)?, (0x0020_1200, 0x3));
        assert_eq!(BindRegs::Gh100.encode(0x20_1800), Err(EINVAL));
        // Teardown: physical mode, video memory, no block.
        assert_eq!(BindRegs::Tu102.physical(), (0, 0));
        assert_eq!(BindRegs::Gh100.physical(), (0, 0));
        Ok(())
    }
}
