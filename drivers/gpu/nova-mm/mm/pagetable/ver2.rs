// SPDX-License-Identifier: GPL-2.0

//! MMU format version 2: Turing, Ampere and Ada.
//!
//! 49-bit virtual addresses, five levels: PD3 (VA 48:47, 4 entries), PD2 (46:38), PD1 (37:29, or
//! a 512 MiB PTE on Ampere and later), PD0 (28:21, 256 dual entries of 16 bytes, or a 2 MiB PTE
//! in the low half), then a 4 KiB page table (20:12, 512 entries) under the small half and a
//! 64 KiB page table (20:16, 32 entries, 256 bytes) under the big half.
//!
//! Source: open-gpu-doc `turing/tu104/dev_mmu.ref.txt` (`NV_MMU_VER2_PDE`, `NV_MMU_VER2_DUAL_PDE`,
//! `NV_MMU_VER2_PTE`); the sparse and "ignore small PTEs" encodings follow nouveau
//! `nvkm/subdev/mmu/vmmgp100.c` (`gp100_vmm_pgt_sparse`, `gp100_vmm_lpt_invalid`).

use kernel::{
    bitfield,
    prelude::*, //
};

use super::{
    Access,
    DirLevel,
    Entry,
    MmuFormat, //
};

/// `NV_MMU_VER2_PDE_APERTURE_VIDEO_MEMORY` (also for both halves of the dual PDE).
const PDE_APERTURE_VID: u8 = 1;
/// `NV_MMU_VER2_PTE_APERTURE_VIDEO_MEMORY`.
const PTE_APERTURE_VID: u8 = 0;
/// `NV_MMU_CLIENT_KIND_GENERIC_MEMORY`: the kind of every page nova-mm maps.
const KIND_GENERIC: u8 = 0x06;

bitfield! {
    /// A version 2 page-table entry (`NV_MMU_VER2_PTE`, `turing/tu102/dev_mmu.h`; the fields that
    /// header lacks are in open-gpu-doc `turing/tu104/dev_mmu.ref.txt`), 8 bytes; also the 2 MiB
    /// PTE in the low half of a dual PDE and the 512 MiB PTE in a PD1 entry.
    pub(crate) struct Pte(u64) {
        /// Kind of the memory (`NV_MMU_CLIENT_KIND_*`; 0x06 generic; manual only).
        63:56 kind;
        /// Compression tag line.
        55:36 comptagline;
        /// Peer GPU of a peer-memory page (manual only).
        35:33 peer;
        /// Video-memory address of the page, >> 12.
        32:8 address_vid;
        /// Atomics disabled (manual only).
        7:7 atomic_disable;
        /// Writes fault (manual only).
        6:6 read_only;
        /// Only privileged accesses allowed (manual only).
        5:5 privilege;
        /// Volatile (uncached); with VALID clear, the sparse marker (manual only).
        3:3 vol;
        /// Where the page is: 0 video memory, 1 peer, 2 coherent system, 3 non-coherent system
        /// (manual only).
        2:1 aperture;
        /// The entry maps a page (manual only).
        0:0 valid;
    }
}

bitfield! {
    /// A version 2 page-directory entry (`NV_MMU_VER2_PDE`; no published header: open-gpu-doc
    /// `turing/tu104/dev_mmu.ref.txt`), 8 bytes, PD3 to PD1.
    pub(crate) struct Pde(u64) {
        /// Video-memory address of the next-level table, >> 12.
        32:8 address_vid;
        /// Address translation services not allowed below.
        5:5 no_ats;
        /// Volatile; with an invalid aperture, the sparse marker.
        3:3 vol;
        /// Where the table is: 0 invalid, 1 video memory, 2/3 system memory.
        2:1 aperture;
        /// Set: this entry is a PTE (a large page), not a PDE.
        0:0 is_pte;
    }
}

bitfield! {
    /// The big (low) half of a version 2 dual PDE (`NV_MMU_VER2_DUAL_PDE` bits 63:0; no published
    /// header: open-gpu-doc `turing/tu104/dev_mmu.ref.txt`): points at
    /// the 64 KiB page table.
    pub(crate) struct DualBig(u64) {
        /// Video-memory address of the 64 KiB page table, >> 8.
        32:4 address_big_vid;
        /// Address translation services not allowed below.
        5:5 no_ats;
        /// Volatile; with an invalid aperture, the sparse marker of the whole entry.
        3:3 vol_big;
        /// 0 invalid, 1 video memory, 2/3 system memory.
        2:1 aperture_big;
        /// Set: the low half is a 2 MiB PTE.
        0:0 is_pte;
    }
}

bitfield! {
    /// The small (high) half of a version 2 dual PDE (`NV_MMU_VER2_DUAL_PDE`; no published header:
    /// open-gpu-doc `turing/tu104/dev_mmu.ref.txt`; bits 127:64, here
    /// numbered from bit 64): points at the 4 KiB page table.
    pub(crate) struct DualSmall(u64) {
        /// Video-memory address of the 4 KiB page table, >> 12 (`ADDRESS_SMALL_VID` 96:72).
        32:8 address_small_vid;
        /// Volatile (`VOL_SMALL` 67).
        3:3 vol_small;
        /// 0 invalid, 1 video memory, 2/3 system memory (`APERTURE_SMALL` 66:65).
        2:1 aperture_small;
    }
}

/// MMU format version 2.
pub(crate) struct Ver2;

impl MmuFormat for Ver2 {
    const VERSION: u32 = 2;
    const DIRS: &'static [DirLevel] = &[
        DirLevel {
            name: "PD3",
            shift: 47,
            bits: 2,
        },
        DirLevel {
            name: "PD2",
            shift: 38,
            bits: 9,
        },
        DirLevel {
            name: "PD1",
            shift: 29,
            bits: 9,
        },
    ];
    type Pte = Pte;
    type Pde = Pde;
    type DualPde = (DualBig, DualSmall);

    fn pte(pa: u64, access: Access) -> Result<Pte> {
        if pa % 4096 != 0 {
            return Err(EINVAL);
        }
        Ok(Pte::zeroed()
            .with_valid(true)
            .try_with_aperture(PTE_APERTURE_VID)?
            .try_with_address_vid(pa >> 12)
            .map_err(|_| ERANGE)?
            .with_read_only(access == Access::ReadOnly)
            .with_kind(KIND_GENERIC))
    }

    fn pte_sparse() -> Pte {
        // VALID 0, VOL 1 (`gp100_vmm_pgt_sparse`).
        Pte::zeroed().with_vol(true)
    }

    fn pte_raw(pte: Pte) -> u64 {
        pte.into_raw()
    }

    fn pde(table: u64) -> Result<Pde> {
        if table % 4096 != 0 {
            return Err(EINVAL);
        }
        Pde::zeroed()
            .try_with_aperture(PDE_APERTURE_VID)?
            .try_with_address_vid(table >> 12)
            .map_err(|_| ERANGE)
    }

    fn pde_sparse() -> Pde {
        Pde::zeroed().with_vol(true)
    }

    fn pde_raw(pde: Pde) -> u64 {
        pde.into_raw()
    }

    fn dual(big: Option<u64>, small: Option<u64>) -> Result<(DualBig, DualSmall)> {
        let mut b = DualBig::zeroed();
        if let Some(lpt) = big {
            if lpt % 256 != 0 {
                return Err(EINVAL);
            }
            b = b
                .try_with_aperture_big(PDE_APERTURE_VID)?
                .try_with_address_big_vid(lpt >> 8)
                .map_err(|_| ERANGE)?;
        }
        let mut s = DualSmall::zeroed();
        if let Some(spt) = small {
            if spt % 4096 != 0 {
                return Err(EINVAL);
            }
            s = s
                .try_with_aperture_small(PDE_APERTURE_VID)?
                .try_with_address_small_vid(spt >> 12)
                .map_err(|_| ERANGE)?;
        }
        Ok((b, s))
    }

    fn dual_sparse() -> (DualBig, DualSmall) {
        // Both apertures invalid, VOL_BIG set.
        (DualBig::zeroed().with_vol_big(true), DualSmall::zeroed())
    }

    fn dual_raw(d: (DualBig, DualSmall)) -> [u64; 2] {
        [d.0.into_raw(), d.1.into_raw()]
    }

    fn decode_pte(raw: u64) -> Entry {
        let p = Pte::from_raw(raw);
        if raw == 0 {
            Entry::Invalid
        } else if p.valid().get() == 0 {
            if p.vol().get() == 1 {
                Entry::Sparse
            } else if p.privilege().get() == 1 {
                Entry::IgnoreSmall
            } else {
                Entry::Unknown(raw)
            }
        } else if p.aperture().get() == u64::from(PTE_APERTURE_VID) {
            Entry::Page {
                pa: p.address_vid().get() << 12,
                read_only: p.read_only().get() == 1,
            }
        } else {
            Entry::Unknown(raw)
        }
    }

    fn decode_pde(raw: u64) -> Entry {
        let p = Pde::from_raw(raw);
        if p.is_pte().get() == 1 {
            return Self::decode_pte(raw);
        }
        match p.aperture().get() {
            0 if raw == 0 => Entry::Invalid,
            0 if p.vol().get() == 1 => Entry::Sparse,
            1 => Entry::Table(p.address_vid().get() << 12),
            _ => Entry::Unknown(raw),
        }
    }

    fn decode_dual(lo: u64, hi: u64) -> Entry {
        let b = DualBig::from_raw(lo);
        if b.is_pte().get() == 1 {
            return Self::decode_pte(lo);
        }
        let s = DualSmall::from_raw(hi);
        if lo == 0 && hi == 0 {
            return Entry::Invalid;
        }
        if b.aperture_big().get() == 0 && b.vol_big().get() == 1 && hi == 0 {
            return Entry::Sparse;
        }
        let big = (b.aperture_big().get() == 1).then(|| b.address_big_vid().get() << 8);
        let small = (s.aperture_small().get() == 1).then(|| s.address_small_vid().get() << 12);
        if big.is_none() && small.is_none() {
            return Entry::Unknown(lo);
        }
        Entry::Dual { big, small }
    }
}
