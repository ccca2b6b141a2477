// SPDX-License-Identifier: GPL-2.0

//! MMU format version 3: Hopper and Blackwell.
//!
//! 57-bit virtual addresses, six levels: PD4 (VA 56, 2 entries), PD3 (55:47), PD2 (46:38), PD1
//! (37:29, or a 512 MiB PTE), PD0 (28:21, 256 dual entries, or a 2 MiB PTE), then the 4 KiB
//! (20:12) and 64 KiB (20:16) page tables as in version 2. Entries carry a PCF (page or PDE
//! control field) instead of the separate VOL, PRIVILEGE and READ_ONLY bits of version 2.
//!
//! Source: nouveau `include/nvhw/ref/gh100/dev_mmu.h` (`NV_MMU_VER3_PDE`, `NV_MMU_VER3_DUAL_PDE`,
//! `NV_MMU_VER3_PTE`, their `_PCF_*` values).

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

/// `NV_MMU_VER3_PDE_APERTURE_VIDEO_MEMORY` (also for both halves of the dual PDE).
const PDE_APERTURE_VID: u8 = 1;
/// `NV_MMU_VER3_PTE_APERTURE_VIDEO_MEMORY`.
const PTE_APERTURE_VID: u8 = 0;
/// `NV_MMU_VER3_PDE_PCF_VALID_CACHED_ATS_NOT_ALLOWED`: what nouveau uses for VRAM page tables.
const PDE_PCF_VALID_CACHED_NO_ATS: u8 = 2;
/// `NV_MMU_VER3_PDE_PCF_SPARSE_ATS_ALLOWED` (with the aperture invalid).
const PDE_PCF_SPARSE: u64 = 1;
/// `NV_MMU_VER3_PTE_PCF_SPARSE` (with VALID clear).
const PTE_PCF_SPARSE: u64 = 1;
/// `NV_MMU_VER3_PTE_PCF_NO_VALID_4KB_PAGE` (with VALID clear, on a big PTE).
const PTE_PCF_NO_VALID_4KB_PAGE: u64 = 3;
/// `NV_MMU_PTE_KIND_GENERIC_MEMORY` 0x6 (`hopper/gh100/dev_mmu.h`, `blackwell/gb202/dev_mmu.h`),
/// the kind UVM writes (`make_pte_hopper`); 0 is `NV_MMU_PTE_KIND_PITCH`.
const KIND_GENERIC: u8 = 0x6;

bitfield! {
    /// A version 3 page-table entry (`NV_MMU_VER3_PTE`, `hopper/gh100/dev_mmu.h`), 8 bytes; also
    /// the 2 MiB and 512 MiB PTEs.
    ///
    /// The PCF of a valid PTE (7:3) is the five flags below; of an invalid one (VALID 0) it is one
    /// of `INVALID` 0, `SPARSE` 1, `MAPPING_NOWHERE` 2, `NO_VALID_4KB_PAGE` 3.
    pub(crate) struct Pte(u64) {
        /// Peer GPU of a peer-memory page.
        63:61 peer_id;
        /// Video-memory address of the page, >> 12: the 40 bits of video memory of `ADDRESS` 51:12
        /// (no NVIDIA define of its own).
        39:12 address_vid;
        /// Kind of the memory.
        11:8 kind;
        /// The page or PTE control field as a whole.
        7:3 pcf;
        /// PCF bit 4: access counting disabled (`_ACD`; a bit of the PCF values, no NVIDIA define).
        7:7 acd;
        /// PCF bit 3: atomics not allowed (`_NO_ATOMIC`; no NVIDIA define).
        6:6 no_atomic;
        /// PCF bit 2: read-only (`_RO`; no NVIDIA define).
        5:5 read_only;
        /// PCF bit 1: privileged accesses only (`PRIVILEGE_`; no NVIDIA define).
        4:4 privilege;
        /// PCF bit 0: uncached (`_UNCACHED`; no NVIDIA define).
        3:3 uncached;
        /// Where the page is: 0 video memory, 1 peer, 2 coherent system, 3 non-coherent system.
        2:1 aperture;
        /// The entry maps a page.
        0:0 valid;
    }
}

bitfield! {
    /// A version 3 page-directory entry (`NV_MMU_VER3_PDE`, `hopper/gh100/dev_mmu.h`), 8 bytes, PD4
    /// to PD1.
    pub(crate) struct Pde(u64) {
        /// Address of the next-level table, >> 12.
        51:12 address;
        /// PDE control field: bit 0 uncached (or, with an invalid aperture, sparse), bit 1 ATS
        /// not allowed.
        5:3 pcf;
        /// 0 invalid, 1 video memory, 2/3 system memory.
        2:1 aperture;
        /// Set: this entry is a PTE (a large page), not a PDE.
        0:0 is_pte;
    }
}

bitfield! {
    /// The big (low) half of a version 3 dual PDE (`NV_MMU_VER3_DUAL_PDE` bits 63:0,
    /// `hopper/gh100/dev_mmu.h`).
    pub(crate) struct DualBig(u64) {
        /// Address of the 64 KiB page table, >> 8.
        51:8 address_big;
        /// PDE control field of the big half.
        5:3 pcf_big;
        /// 0 invalid, 1 video memory, 2/3 system memory.
        2:1 aperture_big;
        /// Set: the low half is a 2 MiB PTE.
        0:0 is_pte;
    }
}

bitfield! {
    /// The small (high) half of a version 3 dual PDE (`NV_MMU_VER3_DUAL_PDE` bits 127:64,
    /// numbered from bit 64; `hopper/gh100/dev_mmu.h`).
    pub(crate) struct DualSmall(u64) {
        /// Address of the 4 KiB page table, >> 12 (`ADDRESS_SMALL` 115:76).
        51:12 address_small;
        /// PDE control field of the small half (`PCF_SMALL` 69:67).
        5:3 pcf_small;
        /// 0 invalid, 1 video memory, 2/3 system memory (`APERTURE_SMALL` 66:65).
        2:1 aperture_small;
    }
}

/// MMU format version 3.
pub(crate) struct Ver3;

impl MmuFormat for Ver3 {
    const VERSION: u32 = 3;
    const DIRS: &'static [DirLevel] = &[
        DirLevel {
            name: "PD4",
            shift: 56,
            bits: 1,
        },
        DirLevel {
            name: "PD3",
            shift: 47,
            bits: 9,
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
        // PCF REGULAR_{RW,RO}_ATOMIC_CACHED_ACE: only the read-only bit differs.
        Pte::zeroed()
            .with_valid(true)
            .try_with_aperture(PTE_APERTURE_VID)?
            .try_with_address_vid(pa >> 12)
            .map_err(|_| ERANGE)?
            .with_read_only(access == Access::ReadOnly)
            .try_with_kind(KIND_GENERIC)
    }

    fn pte_sparse() -> Pte {
        Pte::zeroed().with_const_pcf::<{ PTE_PCF_SPARSE }>()
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
            .try_with_pcf(PDE_PCF_VALID_CACHED_NO_ATS)?
            .try_with_address(table >> 12)
            .map_err(|_| ERANGE)
    }

    fn pde_sparse() -> Pde {
        Pde::zeroed().with_const_pcf::<{ PDE_PCF_SPARSE }>()
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
                .try_with_pcf_big(PDE_PCF_VALID_CACHED_NO_ATS)?
                .try_with_address_big(lpt >> 8)
                .map_err(|_| ERANGE)?;
        }
        let mut s = DualSmall::zeroed();
        if let Some(spt) = small {
            if spt % 4096 != 0 {
                return Err(EINVAL);
            }
            s = s
                .try_with_aperture_small(PDE_APERTURE_VID)?
                .try_with_pcf_small(PDE_PCF_VALID_CACHED_NO_ATS)?
                .try_with_address_small(spt >> 12)
                .map_err(|_| ERANGE)?;
        }
        Ok((b, s))
    }

    fn dual_sparse() -> (DualBig, DualSmall) {
        // Both apertures invalid; PCF_BIG and PCF_SMALL SPARSE_ATS_ALLOWED.
        (
            DualBig::zeroed().with_const_pcf_big::<{ PDE_PCF_SPARSE }>(),
            DualSmall::zeroed().with_const_pcf_small::<{ PDE_PCF_SPARSE }>(),
        )
    }

    fn dual_raw(d: (DualBig, DualSmall)) -> [u64; 2] {
        [d.0.into_raw(), d.1.into_raw()]
    }

    fn decode_pte(raw: u64) -> Entry {
        let p = Pte::from_raw(raw);
        if raw == 0 {
            return Entry::Invalid;
        }
        if p.valid().get() == 0 {
            return match p.pcf().get() {
                1 => Entry::Sparse,
                3 => Entry::IgnoreSmall,
                _ => Entry::Unknown(raw),
            };
        }
        if p.aperture().get() != u64::from(PTE_APERTURE_VID) {
            return Entry::Unknown(raw);
        }
        Entry::Page {
            pa: p.address_vid().get() << 12,
            read_only: p.read_only().get() == 1,
        }
    }

    fn decode_pde(raw: u64) -> Entry {
        let p = Pde::from_raw(raw);
        if p.is_pte().get() == 1 {
            return Self::decode_pte(raw);
        }
        match (p.aperture().get(), p.pcf().get()) {
            (0, 0) if raw == 0 => Entry::Invalid,
            (0, 1) | (0, 3) => Entry::Sparse,
            (1, _) => Entry::Table(p.address().get() << 12),
            _ => Entry::Unknown(raw),
        }
    }

    fn decode_dual(lo: u64, hi: u64) -> Entry {
        let b = DualBig::from_raw(lo);
        if b.is_pte().get() == 1 {
            return Self::decode_pte(lo);
        }
        if lo == 0 && hi == 0 {
            return Entry::Invalid;
        }
        let s = DualSmall::from_raw(hi);
        let sparse = |aperture: u64, pcf: u64| aperture == 0 && (pcf == 1 || pcf == 3);
        if sparse(b.aperture_big().get(), b.pcf_big().get())
            && sparse(s.aperture_small().get(), s.pcf_small().get())
        {
            return Entry::Sparse;
        }
        let big = (b.aperture_big().get() == 1).then(|| b.address_big().get() << 8);
        let small = (s.aperture_small().get() == 1).then(|| s.address_small().get() << 12);
        if big.is_none() && small.is_none() {
            return Entry::Unknown(lo);
        }
        Entry::Dual { big, small }
    }
}

/// The "ignore the small PTEs" big PTE, kept for completeness of the encodings (not used by the
/// walker: an unmapped 64 KiB entry is all-zero and falls through to the small half).
#[allow(dead_code)]
pub(crate) fn pte_no_valid_4kb_page() -> Pte {
    Pte::zeroed().with_const_pcf::<{ PTE_PCF_NO_VALID_4KB_PAGE }>()
}
