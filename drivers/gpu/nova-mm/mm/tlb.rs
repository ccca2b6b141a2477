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
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Mutex,
    },
    time::Delta,
};

use crate::bar::Bar0;

register! {
    /// Page directory base of the invalidate (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB(u32) @ 0x00b830a0 {
        /// Bits 39:12 of the page directory base.
        31:4    addr;
        /// Aperture of the page directory: 0 video memory, 1 system memory.
        1:1     aperture;
    }

    /// Bits 59:40 of the page directory base (`..._INVALIDATE_UPPER_PDB`).
    pub(crate) NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB(u32) @ 0x00b830a4 {
        19:0    addr;
    }

    /// Invalidate control (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE`).
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

/// Upper bound on the wait for an invalidate to complete.
///
/// TIMEOUT: nouveau waits up to 2 s (`nvkm_msec(device, 2000, ...)` in `tu102_vmm_flush`); on
/// hardware an invalidate takes about 1.4 us, so 2 s only elapses on a hung GPU.
pub(crate) const INVALIDATE_TIMEOUT: Delta = Delta::from_millis(2000);

/// Counters of a [`Tlb`].
pub(crate) struct TlbStats {
    /// Invalidates started.
    pub(crate) invalidates: Atomic<u64>,
    /// Invalidates that did not complete within [`INVALIDATE_TIMEOUT`], or were refused because
    /// an earlier one never completed.
    pub(crate) timeouts: Atomic<u64>,
    /// Register writes.
    pub(crate) writes: Atomic<u64>,
    /// Register reads (completion polls).
    pub(crate) reads: Atomic<u64>,
}

/// The TLB invalidation engine of one GPU; invalidates are serialized.
///
/// # Invariants
///
/// The lock holds whether an invalidate timed out and was never seen to complete: the hardware
/// may still be working on it, and triggering another one then is not allowed.
#[pin_data]
pub(crate) struct Tlb {
    #[pin]
    lock: Mutex<bool>,
    /// Counters.
    pub(crate) stats: TlbStats,
}

/// Returns the three register values that invalidate page directory `pdb` in `scope`.
pub(crate) fn encode(pdb: u64, scope: Scope) -> Result<(u32, u32, u32)> {
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
        .into_raw();
    Ok((lo, hi, ctl))
}

impl Tlb {
    /// Creates the invalidation engine.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            lock <- new_mutex!(false),
            stats: TlbStats {
                invalidates: Atomic::new(0),
                timeouts: Atomic::new(0),
                writes: Atomic::new(0),
                reads: Atomic::new(0),
            },
        })
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
        let (lo, hi, ctl) = encode(pdb, scope)?;
        let mut pending = self.lock.lock();
        if *pending {
            self.stats.reads.fetch_add(1, Relaxed);
            if bar
                .try_read(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE)?
                .trigger()
            {
                self.stats.timeouts.fetch_add(1, Relaxed);
                pr_err!(
                    "TLB invalidate of PDB {:#x} refused: an earlier one never completed\n",
                    pdb
                );
                return Err(ETIMEDOUT);
            }
            *pending = false;
        }
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB::from_raw(lo))?;
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB::from_raw(
            hi,
        ))?;
        bar.try_write_reg(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE::from_raw(ctl))?;
        self.stats.writes.fetch_add(3, Relaxed);
        self.stats.invalidates.fetch_add(1, Relaxed);
        read_poll_timeout(
            || {
                self.stats.reads.fetch_add(1, Relaxed);
                bar.try_read(NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE)
            },
            |v: &NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE| !v.trigger(),
            Delta::from_micros(10),
            INVALIDATE_TIMEOUT,
        )
        .inspect_err(|_| {
            self.stats.timeouts.fetch_add(1, Relaxed);
            *pending = true;
            pr_err!("TLB invalidate of PDB {:#x} did not complete in 2 s\n", pdb);
        })?;
        Ok(())
    }
}

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
        assert_eq!(encode(0x1234, Scope::Pdb), Err(EINVAL));
        assert_eq!(encode(1 << 60, Scope::Pdb), Err(EINVAL));
        Ok(())
    }
}
