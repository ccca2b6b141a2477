// SPDX-License-Identifier: MIT OR Apache-2.0

//! The hub TLB: cached translations and directory entries, and the
//! invalidate registers.
//!
//! Registers (open-gpu-doc `ampere/ga102/dev_vm.ref.txt`, VF block at BAR0
//! 0xB80000):
//!
//! - `MMU_INVALIDATE_PDB` 0xB830A0: APERTURE 1:1, ADDR 31:4 (= PDB >> 12).
//! - `MMU_INVALIDATE_UPPER_PDB` 0xB830A4: ADDR 19:0 (= PDB >> 40).
//! - `MMU_INVALIDATE` 0xB830B0: ALL_VA 0, ALL_PDB 1, HUBTLB_ONLY 2,
//!   REPLAY 5:3, SYS_MEMBAR 6, ACK 8:7, ..., CACHE_LEVEL 26:24, TRIGGER 31.
//!
//! Model behaviour: writing TRIGGER latches the PDB registers and the flags.
//! The next `delay` reads of `MMU_INVALIDATE` still see TRIGGER set; the read
//! after that performs the invalidate and sees TRIGGER clear. So with the
//! default delay 1 the first poll sees "busy", the second "done", and a
//! driver that never polls never gets its invalidate. Everything in the model
//! is the hub, so HUBTLB_ONLY still invalidates the BAR1 TLB. No VA register
//! is documented, so ALL_VA = 0 is treated like ALL_VA = 1. CACHE_LEVEL is
//! honoured: ALL (0) drops leaves and every cached PDE, PTE_ONLY (1) drops
//! only leaves, N >= 2 drops leaves and PDE levels 0..=N-2.
//!
//! Failed translations are never cached, so mapping a page that was unmapped
//! does not need an invalidate to be seen; remapping or unmapping does.

use std::collections::HashMap;

use crate::mmu::{Leaf, PAGE_SIZES};

/// `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB` (`turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const INVALIDATE_PDB: u32 = 0x00b8_30a0;
/// `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_UPPER_PDB` (`turing/tu102/dev_vm.h`,
/// at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const INVALIDATE_UPPER_PDB: u32 = 0x00b8_30a4;
/// `NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE` (`turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const INVALIDATE: u32 = 0x00b8_30b0;

/// `MMU_INVALIDATE_ALL_VA`.
pub const ALL_VA: u32 = 1 << 0;
/// `MMU_INVALIDATE_ALL_PDB`.
pub const ALL_PDB: u32 = 1 << 1;
/// `MMU_INVALIDATE_HUBTLB_ONLY`.
pub const HUBTLB_ONLY: u32 = 1 << 2;
/// `MMU_INVALIDATE_SYS_MEMBAR`.
pub const SYS_MEMBAR: u32 = 1 << 6;
/// `MMU_INVALIDATE_TRIGGER`.
pub const TRIGGER: u32 = 1 << 31;

/// Which cached levels an invalidate drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Leaves and every directory level.
    All,
    /// Leaves and PDE levels `0..=n`.
    UpToPde(u8),
    /// Leaves only.
    PteOnly,
}

impl Scope {
    /// Decodes CACHE_LEVEL 26:24.
    pub fn from_ctrl(ctrl: u32) -> Scope {
        match (ctrl >> 24) & 7 {
            0 => Scope::All,
            1 => Scope::PteOnly,
            // CAST: the field is 3 bits wide.
            n => Scope::UpToPde((n - 2) as u8),
        }
    }

    fn drops_pde(self, level: u8) -> bool {
        match self {
            Scope::All => true,
            Scope::UpToPde(n) => level <= n,
            Scope::PteOnly => false,
        }
    }
}

/// A latched invalidate request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Value written to `MMU_INVALIDATE`.
    pub ctrl: u32,
    /// PDB latched from the PDB registers.
    pub pdb: u64,
    /// PDB aperture is system memory.
    pub pdb_sysmem: bool,
    /// Access sequence number of the TRIGGER write (what it can cover came before).
    pub seq: u64,
}

impl Request {
    /// Whether every address space is invalidated.
    pub fn all_pdb(&self) -> bool {
        self.ctrl & ALL_PDB != 0
    }
}

/// The invalidate register block.
#[derive(Debug, Default)]
pub struct InvalidateRegs {
    /// `MMU_INVALIDATE_PDB` as written.
    pub pdb_reg: u32,
    /// `MMU_INVALIDATE_UPPER_PDB` as written.
    pub upper_reg: u32,
    /// `MMU_INVALIDATE` as last written (TRIGGER excluded).
    pub ctrl_reg: u32,
    /// The pending request and the reads left before it completes.
    pub pending: Option<(Request, u64)>,
    /// The pending request never completes (hostile `invalidate-flaky`: each
    /// invalidate hangs with probability 1/2, like `--fault invalidate-hang`).
    pub hung: bool,
}

impl InvalidateRegs {
    /// The PDB the registers currently describe.
    pub fn latched_pdb(&self) -> u64 {
        (u64::from(self.pdb_reg >> 4) << 12) | (u64::from(self.upper_reg & 0xf_ffff) << 40)
    }

    /// Reset state.
    pub fn reset(&mut self) {
        *self = InvalidateRegs::default();
    }
}

/// Cached translations, per address space.
#[derive(Debug, Default)]
pub struct Tlb {
    /// (PDB, page size, VA of the page) -> leaf.
    leaves: HashMap<(u64, u64, u64), Leaf>,
    /// (PDB, PDE level, VA >> level shift) -> raw entry.
    pdes: HashMap<(u64, u8, u64), [u64; 2]>,
}

impl Tlb {
    /// Looks up a cached leaf covering `va`.
    pub fn lookup(&self, pdb: u64, va: u64) -> Option<Leaf> {
        PAGE_SIZES
            .iter()
            .find_map(|&size| self.leaves.get(&(pdb, size, va & !(size - 1))).copied())
    }

    /// Caches a leaf for `va`.
    pub fn insert(&mut self, pdb: u64, va: u64, leaf: Leaf) {
        let size = leaf.size();
        self.leaves.insert((pdb, size, va & !(size - 1)), leaf);
    }

    /// Looks up a cached directory entry.
    pub fn lookup_pde(&self, pdb: u64, level: u8, key: u64) -> Option<[u64; 2]> {
        self.pdes.get(&(pdb, level, key)).copied()
    }

    /// Caches a directory entry.
    pub fn insert_pde(&mut self, pdb: u64, level: u8, key: u64, raw: [u64; 2]) {
        self.pdes.insert((pdb, level, key), raw);
    }

    /// Drops cached state for `pdb` (or every PDB) within `scope`.
    pub fn invalidate(&mut self, pdb: Option<u64>, scope: Scope) {
        self.leaves
            .retain(|(p, _, _), _| pdb.is_some_and(|x| x != *p));
        self.pdes
            .retain(|(p, level, _), _| pdb.is_some_and(|x| x != *p) || !scope.drops_pde(*level));
    }

    /// Drops everything.
    pub fn flush_all(&mut self) {
        self.leaves.clear();
        self.pdes.clear();
    }

    /// Number of cached leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty() && self.pdes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_decode() {
        assert_eq!(Scope::from_ctrl(0), Scope::All);
        assert_eq!(Scope::from_ctrl(1 << 24), Scope::PteOnly);
        assert_eq!(Scope::from_ctrl(2 << 24), Scope::UpToPde(0));
        assert_eq!(Scope::from_ctrl(7 << 24), Scope::UpToPde(5));
    }

    #[test]
    fn per_pdb_invalidate() {
        let mut t = Tlb::default();
        let leaf = Leaf::Page {
            pa: 0x1000,
            size: 0x1000,
            read_only: false,
            privileged: false,
        };
        t.insert(0x10000, 0x5000, leaf);
        t.insert(0x20000, 0x5000, leaf);
        t.insert_pde(0x10000, 1, 0, [1, 0]);
        assert_eq!(t.lookup(0x10000, 0x5abc), Some(leaf));
        t.invalidate(Some(0x10000), Scope::PteOnly);
        assert_eq!(t.lookup(0x10000, 0x5000), None);
        assert_eq!(t.lookup(0x20000, 0x5000), Some(leaf));
        assert_eq!(t.lookup_pde(0x10000, 1, 0), Some([1, 0]));
        t.invalidate(Some(0x10000), Scope::UpToPde(0));
        assert_eq!(t.lookup_pde(0x10000, 1, 0), Some([1, 0]));
        t.invalidate(None, Scope::All);
        assert!(t.is_empty());
    }

    #[test]
    fn latched_pdb() {
        let r = InvalidateRegs {
            pdb_reg: (0x12345u32 << 4) | 2,
            upper_reg: 0x3,
            ..Default::default()
        };
        assert_eq!(r.latched_pdb(), (0x3u64 << 40) | 0x1234_5000);
    }
}
