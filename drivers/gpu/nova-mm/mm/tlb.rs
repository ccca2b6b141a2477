// SPDX-License-Identifier: GPL-2.0

//! TLB invalidation through the MMU invalidate registers of the virtual-function block.
//!
//! Turing and later (both MMU formats) have `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB`
//! (`0xB830A0`), `_UPPER_PDB` (`0xB830A4`) and `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE`
//! (`0xB830B0`), at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` (`0xB80000`) + `0x30A0..`. Writing the
//! control register with TRIGGER set starts the invalidate; the hardware clears TRIGGER when it is
//! done. Sources: open-gpu-doc `turing/tu104/dev_vm.ref.txt`, `ampere/ga100/dev_vm.ref.txt`.

use kernel::{
    io::{
        poll::read_poll_timeout,
        register, //
    },
    new_mutex,
    prelude::*,
    sync::{atomic::Relaxed, Mutex},
    time::Delta,
};

use crate::{
    bar::Bar0,
    chip::Architecture, //
};

register! {
    /// Page directory base of the invalidate (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB`,
    /// `turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB(u32) @ 0x00b830a0 {
        /// Bits 39:12 of the page directory base.
        31:4    addr;
        /// Aperture of the page directory: 0 video memory, 1 system memory.
        1:1     aperture;
    }

    /// Bits 59:40 of the page directory base (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB`,
    /// `turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB(u32) @ 0x00b830a4 {
        19:0    addr;
    }

    /// Invalidate control (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE`, `turing/tu102/dev_vm.h`, at
    /// `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE(u32) @ 0x00b830b0 {
        /// Write 1 to start; reads 1 until the invalidate completed.
        31:31   trigger => bool;
        /// How far up the page-table hierarchy cached entries go (0: all levels).
        26:24   cache_level;
        /// Acknowledgement: 0 none, 1 globally, 2 intranode.
        8:7     ack;
        /// Also perform a system membar.
        6:6     sys_membar => bool;
        /// Only invalidate the hub TLB (BAR1/BAR2 and other hub clients).
        2:2     hubtlb_only => bool;
        /// Invalidate every page directory, not only the one in `_PDB`.
        1:1     all_pdb => bool;
        /// Invalidate every virtual address.
        0:0     all_va => bool;
    }
}

/// Which translations an invalidate drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every virtual address of one page directory, in every TLB.
    Pdb,
    /// Every virtual address of one page directory, in the hub TLB only (BAR1/BAR2 spaces).
    PdbHubOnly,
    /// Every page directory.
    All,
}

/// `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_ACK_GLOBALLY` (`turing/tu102/dev_vm.h`).
const ACK_GLOBALLY: u32 = 1;

/// Upper bound on the wait for an invalidate to complete.
///
/// TIMEOUT: nouveau waits up to 2 s (`nvkm_msec(device, 2000, ...)` in `tu102_vmm_flush`); on
/// hardware an invalidate takes about 1.4 us, so 2 s only elapses on a hung GPU.
pub(crate) const INVALIDATE_TIMEOUT: Delta = Delta::from_millis(2000);

counters! {
    /// Counters of a [`Tlb`].
    pub(crate) struct TlbStats / TlbSnapshot {
        /// Invalidates started.
        invalidates,
        /// Invalidates that did not complete within [`INVALIDATE_TIMEOUT`], or were refused because
        /// an earlier one never completed.
        timeouts,
        /// Register writes.
        reg_writes,
        /// Register reads (completion polls).
        reg_reads,
    }
}

/// The TLB invalidation engine of one GPU; invalidates are serialized.
///
/// # Invariants
///
/// The lock holds whether an invalidate may still be in flight ([`Pending`]): the hardware may
/// still be working on it, and triggering another one then is not allowed.
///
/// The lock starts out [`Pending::Unknown`]: at probe the driver does not know whether an invalidate left by
/// whoever had the GPU before is still in flight, so the first invalidate reads TRIGGER first.
/// After that the driver's own polls say none is pending; only a timeout makes the next one look
/// again (open-gpu-kernel-modules `kern_gmmu_tu102.c`, `kgmmuCheckPendingInvalidates_TU102`,
/// called before every commit: no invalidate is written while one is pending).
#[pin_data]
pub(crate) struct Tlb {
    #[pin]
    lock: Mutex<Pending>,
    /// Whether downgrades need SYS_MEMBAR and ACK=GLOBALLY (TU10x only).
    membar_war: bool,
    /// Counters.
    pub(crate) stats: TlbStats,
}

/// What the entries an invalidate covers went through, for the TU10x membar rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Valid leaves rewritten with READ_ONLY cleared, nothing else (read-only to read-write):
    /// nothing the GPU may still use was taken away.
    Upgrade,
    /// An unmap, a permission downgrade or a reclaimed table, or not known: the safe form.
    Downgrade,
}

/// What the driver knows of an earlier invalidate still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// None: the driver's own last one was seen to complete.
    No,
    /// Not known (at probe): wait for TRIGGER to clear, up to [`INVALIDATE_TIMEOUT`].
    Unknown,
    /// One of ours timed out: one read tells whether it is still pending; refuse at once if so.
    TimedOut,
}

/// Returns the three register values that invalidate page directory `pdb` in `scope`; with
/// `membar`, also a system membar acknowledged globally (the TU10x downgrade form).
pub(crate) fn encode(pdb: u64, scope: Scope) -> Result<(u32, u32, u32)> {
    encode_with(pdb, scope, false)
}

/// [`encode`], with `membar` choosing SYS_MEMBAR and ACK=GLOBALLY.
///
/// Fields: `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_ALL_VA` 0, `_ALL_PDB` 1, `_HUBTLB_ONLY` 2,
/// `_SYS_MEMBAR` 6, `_ACK` 8:7 (`_ACK_GLOBALLY` 1), `_TRIGGER` 31 (open-gpu-kernel-modules
/// `turing/tu102/dev_vm.h`).
pub(crate) fn encode_with(pdb: u64, scope: Scope, membar: bool) -> Result<(u32, u32, u32)> {
    if pdb % 4096 != 0 || pdb >> 60 != 0 {
        return Err(EINVAL);
    }
    // Bits 39:12 go to the 28-bit field, bits 59:40 to the 20-bit one (range checked above).
    let lo = NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB::zeroed()
        .try_with_addr((pdb >> 12) & 0x0fff_ffff)?
        .into_raw();
    let hi = NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB::zeroed()
        .try_with_addr(pdb >> 40)?
        .into_raw();
    let ctl = NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE::zeroed()
        .with_trigger(true)
        .with_all_va(true)
        .with_hubtlb_only(scope == Scope::PdbHubOnly)
        .with_all_pdb(scope == Scope::All)
        .with_sys_membar(membar)
        .try_with_ack(if membar { ACK_GLOBALLY } else { 0 })?
        .into_raw();
    Ok((lo, hi, ctl))
}

impl Tlb {
    /// Creates the invalidation engine of a GPU of architecture `arch`.
    ///
    /// On Turing (TU10x), an invalidate after an unmap or a permission downgrade also does a
    /// system membar acknowledged globally: open-gpu-kernel-modules `kern_gmmu_tu102.c`,
    /// `kgmmuSetTlbInvalidateMembarWarParameters_TU102` ("membarWAR for non-BAR2 pte
    /// downgrades"); the HAL is a stub on every later chip.
    pub(crate) fn new(arch: Architecture) -> impl PinInit<Self> {
        pin_init!(Self {
            lock <- new_mutex!(Pending::Unknown),
            membar_war: arch == Architecture::Turing,
            stats: TlbStats::new(),
        })
    }

    /// Polls `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE` until TRIGGER reads clear, counting each
    /// read, for at most [`INVALIDATE_TIMEOUT`].
    fn wait_trigger_clear(&self, bar: &Bar0<'_>) -> Result {
        read_poll_timeout(
            || {
                self.stats.reg_reads.fetch_add(1, Relaxed);
                bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE)
            },
            |v: &NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE| !v.trigger(),
            Delta::from_micros(10),
            INVALIDATE_TIMEOUT,
        )
        .map(|_| ())
    }

    /// Invalidates the cached translations of page directory `pdb` (a VRAM address) in `scope`,
    /// and waits until the GPU reports completion.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a misaligned or too large `pdb`; `ETIMEDOUT` if the GPU did not complete the
    /// invalidate within [`INVALIDATE_TIMEOUT`], or if an earlier one that timed out is still
    /// pending (one read tells; nothing is triggered then).
    pub(crate) fn invalidate(&self, bar: &Bar0<'_>, pdb: u64, scope: Scope) -> Result {
        self.invalidate_after(bar, pdb, scope, Change::Downgrade)
    }

    /// [`Tlb::invalidate`] after entries went through `change`: a [`Change::Downgrade`] on
    /// TU10x also sets SYS_MEMBAR and ACK=GLOBALLY.
    ///
    /// Every PRAMIN write the invalidate covers must have been flushed before (see
    /// [`super::pramin::PraminAccess::flush`]).
    ///
    /// # Errors
    ///
    /// As [`Tlb::invalidate`].
    pub(crate) fn invalidate_after(
        &self,
        bar: &Bar0<'_>,
        pdb: u64,
        scope: Scope,
        change: Change,
    ) -> Result {
        let (lo, hi, ctl) =
            encode_with(pdb, scope, self.membar_war && change == Change::Downgrade)?;
        let mut pending = self.lock.lock();
        // One may still be in flight (left before probe, or one of ours that timed out): TRIGGER
        // must read clear before anything is written (`kgmmuCheckPendingInvalidates_TU102`).
        let seen = match *pending {
            Pending::No => Ok(()),
            Pending::Unknown => self.wait_trigger_clear(bar),
            Pending::TimedOut => {
                self.stats.reg_reads.fetch_add(1, Relaxed);
                if bar
                    .try_read(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE)?
                    .trigger()
                {
                    Err(ETIMEDOUT)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = seen {
            if e == ETIMEDOUT {
                self.stats.timeouts.fetch_add(1, Relaxed);
                *pending = Pending::TimedOut;
                dev_err!(
                    bar.dev(),
                    "TLB invalidate of PDB {:#x} refused: an earlier one never completed\n",
                    pdb
                );
            }
            return Err(e);
        }
        *pending = Pending::No;
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB::from_raw(lo))?;
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB::from_raw(
            hi,
        ))?;
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE::from_raw(ctl))?;
        self.stats.reg_writes.fetch_add(3, Relaxed);
        self.stats.invalidates.fetch_add(1, Relaxed);
        self.wait_trigger_clear(bar).inspect_err(|_| {
            self.stats.timeouts.fetch_add(1, Relaxed);
            *pending = Pending::TimedOut;
            dev_err!(
                bar.dev(),
                "TLB invalidate of PDB {:#x} did not complete in 2 s\n",
                pdb
            );
        })?;
        Ok(())
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_tlb)]
mod tests {
    use super::*;

    #[test]
    fn encoding() -> Result {
        // PDB at 0x1_2345_6000: _PDB holds PDB >> 12 in bits 31:4, aperture 0 (video memory).
        let (lo, hi, ctl) = encode(0x1_2345_6000, Scope::Pdb)?;
        assert_eq!(lo, 0x0123_4560);
        assert_eq!(hi, 0);
        assert_eq!(ctl, 0x8000_0001);
        let (_, _, ctl) = encode(0x1000, Scope::PdbHubOnly)?;
        assert_eq!(ctl, 0x8000_0005);
        let (_, _, ctl) = encode(0x1000, Scope::All)?;
        assert_eq!(ctl, 0x8000_0003);
        // Above 40 bits: bits 59:40 go to the upper register.
        let (lo, hi, _) = encode(0x345_6789_a000, Scope::Pdb)?;
        assert_eq!(hi, 0x3);
        assert_eq!(lo, 0x4567_89a0);
        // The TU10x downgrade form: SYS_MEMBAR (bit 6) and ACK_GLOBALLY (8:7 = 1).
        let (_, _, ctl) = encode_with(0x1000, Scope::Pdb, true)?;
        assert_eq!(ctl, 0x8000_00c1);
        let (_, _, ctl) = encode_with(0x1000, Scope::PdbHubOnly, true)?;
        assert_eq!(ctl, 0x8000_00c5);
        assert_eq!(encode(0x1234, Scope::Pdb), Err(EINVAL));
        assert_eq!(encode(1 << 60, Scope::Pdb), Err(EINVAL));
        Ok(())
    }
}
