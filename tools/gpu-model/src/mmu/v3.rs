// SPDX-License-Identifier: MIT OR Apache-2.0

//! MMU version 3 entry formats (Hopper, Blackwell).
//!
//! From NVIDIA's `gh100/dev_mmu.h` (nouveau `include/nvhw/ref`):
//!
//! - `NV_MMU_VER3_PDE`: IS_PTE 0, APERTURE 2:1 (0 invalid, 1 video, 2 sys
//!   coherent, 3 sys non-coherent), PCF 5:3, ADDRESS 51:12. The PCF values
//!   the header defines are 0..3; with an invalid aperture they read
//!   `NV_MMU_VER3_PDE_PCF_INVALID_ATS_ALLOWED` (0),
//!   `NV_MMU_VER3_PDE_PCF_SPARSE_ATS_ALLOWED` (1),
//!   `NV_MMU_VER3_PDE_PCF_INVALID_ATS_NOT_ALLOWED` (2) and
//!   `NV_MMU_VER3_PDE_PCF_SPARSE_ATS_NOT_ALLOWED` (3). Values 4..7 are not
//!   defined; with an invalid aperture the model treats them as invalid
//!   (a fault), not as sparse. With a valid aperture the PCF only selects
//!   caching and ATS, which are not modelled, so any value points at the
//!   table.
//! - `NV_MMU_VER3_DUAL_PDE`: APERTURE_BIG 2:1, PCF_BIG 5:3, ADDRESS_BIG 51:8
//!   (BIG_SHIFT 8); APERTURE_SMALL 66:65, PCF_SMALL 69:67, ADDRESS_SMALL
//!   115:76 (shift 12). Each half with an invalid aperture is sparse for
//!   `NV_MMU_VER3_DUAL_PDE_PCF_BIG_SPARSE_ATS_ALLOWED` (1) /
//!   `NV_MMU_VER3_DUAL_PDE_PCF_BIG_SPARSE_ATS_NOT_ALLOWED` (3), respectively
//!   `NV_MMU_VER3_DUAL_PDE_PCF_SMALL_SPARSE_ATS_ALLOWED` (1) /
//!   `NV_MMU_VER3_DUAL_PDE_PCF_SMALL_SPARSE_ATS_NOT_ALLOWED` (3), and invalid
//!   otherwise (0, 2 and the undefined 4..7). What a sparse half means for
//!   the walk is the dual-PDE rule in [`super`].
//! - `NV_MMU_VER3_PTE`: VALID 0, APERTURE 2:1 (0 video, 1 peer, 2/3 sys),
//!   PCF 7:3, KIND 11:8, ADDRESS 51:12 (ADDRESS_VID 39:12), PEER_ID 63:61.
//!   Valid PCF bits: 0 uncached, 1 privilege, 2 read-only, 3 no atomic,
//!   4 access counting disabled. With VALID 0: PCF 0 INVALID, 1 SPARSE,
//!   2 MAPPING_NOWHERE, 3 NO_VALID_4KB_PAGE (on a big PTE: ignore the 4 KiB
//!   PTEs).

use super::{Aperture, DualPde, Format, Half, Level, Pde, Pte};
use crate::chip::MmuVersion;

/// The version 3 format.
pub struct V3;

/// Levels from PDE4 down to PDE0.
pub static LEVELS: [Level; 5] = [
    Level {
        name: "PDE4",
        pde: 4,
        shift: 56,
        bits: 1,
        dual: false,
        leaf: false,
    },
    Level {
        name: "PDE3",
        pde: 3,
        shift: 47,
        bits: 9,
        dual: false,
        leaf: false,
    },
    Level {
        name: "PDE2",
        pde: 2,
        shift: 38,
        bits: 9,
        dual: false,
        leaf: false,
    },
    Level {
        name: "PDE1",
        pde: 1,
        shift: 29,
        bits: 9,
        dual: false,
        leaf: true,
    },
    Level {
        name: "PDE0",
        pde: 0,
        shift: 21,
        bits: 8,
        dual: true,
        leaf: true,
    },
];

const VALID: u64 = 1 << 0;
/// ADDRESS 51:12.
const ADDR_51_12: u64 = ((1 << 52) - 1) & !((1 << 12) - 1);
/// ADDRESS_BIG 51:8.
const ADDR_51_8: u64 = ((1 << 52) - 1) & !((1 << 8) - 1);
/// ADDRESS_VID 39:12.
const ADDR_39_12: u64 = ((1 << 40) - 1) & !((1 << 12) - 1);

fn pde_aperture(raw: u64) -> Option<Aperture> {
    match (raw >> 1) & 3 {
        1 => Some(Aperture::Video),
        2 => Some(Aperture::SysCoherent),
        3 => Some(Aperture::SysNonCoherent),
        _ => None,
    }
}

/// `NV_MMU_VER3_PDE_PCF_SPARSE_ATS_ALLOWED`, also
/// `NV_MMU_VER3_DUAL_PDE_PCF_BIG_SPARSE_ATS_ALLOWED` and
/// `NV_MMU_VER3_DUAL_PDE_PCF_SMALL_SPARSE_ATS_ALLOWED`.
const PDE_PCF_SPARSE_ATS_ALLOWED: u64 = 0x1;
/// `NV_MMU_VER3_PDE_PCF_SPARSE_ATS_NOT_ALLOWED`, also
/// `NV_MMU_VER3_DUAL_PDE_PCF_BIG_SPARSE_ATS_NOT_ALLOWED` and
/// `NV_MMU_VER3_DUAL_PDE_PCF_SMALL_SPARSE_ATS_NOT_ALLOWED`.
const PDE_PCF_SPARSE_ATS_NOT_ALLOWED: u64 = 0x3;

/// Whether a PDE (or dual PDE half) with an invalid aperture is sparse.
///
/// `pcf` is the 3-bit `NV_MMU_VER3_PDE_PCF` 5:3 (`PCF_BIG` 5:3, `PCF_SMALL`
/// 69:67 of a dual PDE). Only the two SPARSE values count; the INVALID ones
/// (0, 2) and the values the header does not define (4..7) do not.
fn pde_pcf_sparse(pcf: u64) -> bool {
    matches!(
        pcf,
        PDE_PCF_SPARSE_ATS_ALLOWED | PDE_PCF_SPARSE_ATS_NOT_ALLOWED
    )
}

/// PCF 5:3 of a PDE or of either quadword of a dual PDE (PCF_SMALL 69:67 is
/// bits 5:3 of the high quadword).
fn pde_pcf(raw: u64) -> u64 {
    (raw >> 3) & 0x7
}

/// Decodes one half of a dual PDE (or the table pointer of a PDE) from its
/// quadword, with `addr_mask` selecting the address field.
fn half(raw: u64, addr_mask: u64) -> Half {
    match pde_aperture(raw) {
        Some(a) => Half::Table(a, raw & addr_mask),
        None if pde_pcf_sparse(pde_pcf(raw)) => Half::Sparse,
        None => Half::Invalid,
    }
}

impl Format for V3 {
    fn version(&self) -> MmuVersion {
        MmuVersion::V3
    }

    fn levels(&self) -> &'static [Level] {
        &LEVELS
    }

    fn decode_pde(&self, raw: u64) -> Pde {
        if raw & VALID != 0 {
            return Pde::Leaf(self.decode_pte(raw));
        }
        match half(raw, ADDR_51_12) {
            Half::Table(aperture, addr) => Pde::Table { aperture, addr },
            Half::Sparse => Pde::Sparse,
            Half::Invalid => Pde::Invalid,
        }
    }

    fn decode_dual(&self, lo: u64, hi: u64) -> DualPde {
        if lo & VALID != 0 {
            return DualPde::Leaf(self.decode_pte(lo));
        }
        DualPde::Halves {
            // APERTURE_BIG 2:1, PCF_BIG 5:3, ADDRESS_BIG 51:8.
            big: half(lo, ADDR_51_8),
            // APERTURE_SMALL 66:65, PCF_SMALL 69:67 and ADDRESS_SMALL 115:76
            // are bits 2:1, 5:3 and 51:12 of the high quadword.
            small: half(hi, ADDR_51_12),
        }
    }

    fn decode_pte(&self, raw: u64) -> Pte {
        let pcf = (raw >> 3) & 0x1f;
        if raw & VALID == 0 {
            return match pcf {
                1 => Pte::Sparse,
                2 => Pte::Nowhere,
                3 => Pte::IgnoreSmall,
                _ => Pte::Invalid,
            };
        }
        let (aperture, addr) = match (raw >> 1) & 3 {
            0 => (Aperture::Video, raw & ADDR_39_12),
            1 => (Aperture::Peer, raw & ADDR_51_12),
            2 => (Aperture::SysCoherent, raw & ADDR_51_12),
            _ => (Aperture::SysNonCoherent, raw & ADDR_51_12),
        };
        Pte::Valid {
            aperture,
            addr,
            read_only: pcf & 0x4 != 0,
            privileged: pcf & 0x2 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pte_pcf() {
        // REGULAR_RO_ATOMIC_CACHED_ACE = 0x4.
        let raw = 1 | (0x4 << 3) | 0x5_0000_0000;
        assert_eq!(
            V3.decode_pte(raw),
            Pte::Valid {
                aperture: Aperture::Video,
                addr: 0x5_0000_0000,
                read_only: true,
                privileged: false
            }
        );
        // PRIVILEGE_RW_ATOMIC_CACHED_ACE = 0x2: privileged, writable.
        assert!(matches!(
            V3.decode_pte(1 | (0x2 << 3)),
            Pte::Valid {
                read_only: false,
                privileged: true,
                ..
            }
        ));
        // Every RO PCF value has bit 2 set.
        for pcf in 0..32u64 {
            match V3.decode_pte(1 | (pcf << 3)) {
                Pte::Valid { read_only, .. } => assert_eq!(read_only, pcf & 4 != 0),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(V3.decode_pte(0), Pte::Invalid);
        assert_eq!(V3.decode_pte(1 << 3), Pte::Sparse);
        assert_eq!(V3.decode_pte(2 << 3), Pte::Nowhere);
        assert_eq!(V3.decode_pte(3 << 3), Pte::IgnoreSmall);
        // KIND and PEER_ID bits do not leak into a video address.
        match V3.decode_pte(1 | (0xf << 8) | (7 << 61) | (0xff << 40) | 0x1000) {
            Pte::Valid { addr, .. } => assert_eq!(addr, 0x1000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pde_and_dual() {
        assert_eq!(
            V3.decode_pde((1 << 1) | (2 << 3) | 0x1234_5000),
            Pde::Table {
                aperture: Aperture::Video,
                addr: 0x1234_5000
            }
        );
        let lo = (1 << 1) | 0x10100;
        let hi = (1 << 1) | 0x20000;
        assert_eq!(
            V3.decode_dual(lo, hi),
            DualPde::Halves {
                big: Half::Table(Aperture::Video, 0x10100),
                small: Half::Table(Aperture::Video, 0x20000),
            }
        );
        assert_eq!(
            V3.decode_dual(0, 0),
            DualPde::Halves {
                big: Half::Invalid,
                small: Half::Invalid
            }
        );
    }

    /// `NV_MMU_VER3_PDE_PCF_*` with APERTURE_INVALID: 1 and 3 are SPARSE, 0
    /// and 2 INVALID, 4..7 undefined and so invalid.
    #[test]
    fn pde_pcf_defined_values_only() {
        let want = [
            Pde::Invalid, // INVALID_ATS_ALLOWED
            Pde::Sparse,  // SPARSE_ATS_ALLOWED
            Pde::Invalid, // INVALID_ATS_NOT_ALLOWED
            Pde::Sparse,  // SPARSE_ATS_NOT_ALLOWED
            Pde::Invalid, // undefined
            Pde::Invalid,
            Pde::Invalid,
            Pde::Invalid,
        ];
        for (pcf, w) in want.iter().enumerate() {
            // CAST: pcf is below 8.
            assert_eq!(V3.decode_pde((pcf as u64) << 3), *w, "PCF {pcf}");
        }
        // With a valid aperture every PCF value points at the table.
        for pcf in 0..8u64 {
            assert_eq!(
                V3.decode_pde((1 << 1) | (pcf << 3) | 0x7000),
                Pde::Table {
                    aperture: Aperture::Video,
                    addr: 0x7000
                }
            );
        }
    }

    /// `NV_MMU_VER3_DUAL_PDE_PCF_BIG_*` (5:3) and `_PCF_SMALL_*` (69:67) with
    /// the half's aperture invalid: 1 and 3 are SPARSE, others invalid.
    #[test]
    fn dual_pde_pcf_big_and_small() {
        let sparse = |pcf: u64| {
            if matches!(pcf, 1 | 3) {
                Half::Sparse
            } else {
                Half::Invalid
            }
        };
        let spt = (1 << 1) | 0x20000;
        let lpt = (1 << 1) | 0x10100;
        for pcf in 0..8u64 {
            assert_eq!(
                V3.decode_dual(pcf << 3, spt),
                DualPde::Halves {
                    big: sparse(pcf),
                    small: Half::Table(Aperture::Video, 0x20000)
                },
                "PCF_BIG {pcf}"
            );
            // PCF_SMALL 69:67 is bits 5:3 of the high quadword.
            assert_eq!(
                V3.decode_dual(lpt, pcf << 3),
                DualPde::Halves {
                    big: Half::Table(Aperture::Video, 0x10100),
                    small: sparse(pcf)
                },
                "PCF_SMALL {pcf}"
            );
        }
    }
}
