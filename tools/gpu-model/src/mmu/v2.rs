// SPDX-License-Identifier: MIT OR Apache-2.0

//! MMU version 2 entry formats (Turing, Ampere, Ada).
//!
//! From open-gpu-doc `turing/tu104/dev_mmu.ref.txt`:
//!
//! - `NV_MMU_VER2_PDE`: IS_PTE 0, APERTURE 2:1 (0 invalid, 1 video, 2 sys
//!   coherent, 3 sys non-coherent), VOL 3, NO_ATS 5, ADDRESS_SYS 53:8,
//!   ADDRESS_VID 32:8 (peer 35:33), ADDRESS_SHIFT 12.
//! - `NV_MMU_VER2_DUAL_PDE` (16 bytes): APERTURE_BIG 2:1, VOL_BIG 3,
//!   ADDRESS_BIG_VID 32:4 with BIG_SHIFT 8; APERTURE_SMALL 66:65, VOL_SMALL
//!   67, ADDRESS_SMALL_VID 96:72 with ADDRESS_SHIFT 12.
//! - `NV_MMU_VER2_PTE`: VALID 0, APERTURE 2:1 (0 video, 1 peer, 2 sys
//!   coherent, 3 sys non-coherent), VOL 3, PRIVILEGE 5, READ_ONLY 6,
//!   ATOMIC_DISABLE 7, ADDRESS_SYS 53:8, ADDRESS_VID 32:8, COMPTAGLINE 55:36,
//!   KIND 63:56.
//!
//! Invalid-entry encodings (the manual names the fields, the meanings are the
//! documented driver conventions, HARDWARE.md §6): a PTE with VALID 0 and
//! VOL 1 is sparse; a big PTE with VALID 0 and PRIVILEGE 1 is "invalid,
//! ignore the small PTEs"; a PDE with APERTURE invalid and VOL set is sparse
//! (for the dual PDE, APERTURE_BIG invalid with VOL_BIG set: a sparse big
//! half, which makes the whole 2 MiB sparse, see [`super`]); all-zero is
//! unmapped. No sparse encoding of the small half is known (the manual gives
//! VOL_SMALL 67 no such meaning), so an invalid small half is just invalid.

use super::{Aperture, DualPde, Format, Half, Level, Pde, Pte};
use crate::chip::MmuVersion;

/// The version 2 format.
pub struct V2;

/// Levels from PD3 down to PD0.
pub static LEVELS: [Level; 4] = [
    Level {
        name: "PDE3",
        pde: 3,
        shift: 47,
        bits: 2,
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
const VOL: u64 = 1 << 3;
const PRIVILEGE: u64 = 1 << 5;
const READ_ONLY: u64 = 1 << 6;

/// ADDRESS_VID 32:8 (25 bits).
fn addr_vid(raw: u64) -> u64 {
    ((raw >> 8) & ((1 << 25) - 1)) << 12
}

/// ADDRESS_SYS 53:8 (46 bits).
fn addr_sys(raw: u64) -> u64 {
    ((raw >> 8) & ((1 << 46) - 1)) << 12
}

/// APERTURE 2:1 of a PDE or PDE half.
fn pde_aperture(raw: u64) -> Option<Aperture> {
    match (raw >> 1) & 3 {
        1 => Some(Aperture::Video),
        2 => Some(Aperture::SysCoherent),
        3 => Some(Aperture::SysNonCoherent),
        _ => None,
    }
}

impl Format for V2 {
    fn version(&self) -> MmuVersion {
        MmuVersion::V2
    }

    fn levels(&self) -> &'static [Level] {
        &LEVELS
    }

    fn decode_pde(&self, raw: u64) -> Pde {
        if raw & VALID != 0 {
            return Pde::Leaf(self.decode_pte(raw));
        }
        match pde_aperture(raw) {
            Some(Aperture::Video) => Pde::Table {
                aperture: Aperture::Video,
                addr: addr_vid(raw),
            },
            Some(a) => Pde::Table {
                aperture: a,
                addr: addr_sys(raw),
            },
            None if raw & VOL != 0 => Pde::Sparse,
            None => Pde::Invalid,
        }
    }

    fn decode_dual(&self, lo: u64, hi: u64) -> DualPde {
        if lo & VALID != 0 {
            return DualPde::Leaf(self.decode_pte(lo));
        }
        let big = match pde_aperture(lo) {
            Some(a) => {
                let addr = if a == Aperture::Video {
                    // ADDRESS_BIG_VID 32:4, BIG_SHIFT 8.
                    ((lo >> 4) & ((1 << 29) - 1)) << 8
                } else {
                    // ADDRESS_BIG_SYS 53:4.
                    ((lo >> 4) & ((1 << 50) - 1)) << 8
                };
                Half::Table(a, addr)
            }
            // APERTURE_BIG invalid + VOL_BIG: sparse.
            None if lo & VOL != 0 => Half::Sparse,
            None => Half::Invalid,
        };
        let small = match pde_aperture(hi) {
            Some(Aperture::Video) => Half::Table(Aperture::Video, addr_vid(hi)),
            Some(a) => Half::Table(a, addr_sys(hi)),
            None => Half::Invalid,
        };
        DualPde::Halves { big, small }
    }

    fn decode_pte(&self, raw: u64) -> Pte {
        if raw & VALID == 0 {
            return if raw & VOL != 0 {
                Pte::Sparse
            } else if raw & PRIVILEGE != 0 {
                Pte::IgnoreSmall
            } else {
                Pte::Invalid
            };
        }
        let (aperture, addr) = match (raw >> 1) & 3 {
            0 => (Aperture::Video, addr_vid(raw)),
            1 => (Aperture::Peer, addr_vid(raw)),
            2 => (Aperture::SysCoherent, addr_sys(raw)),
            _ => (Aperture::SysNonCoherent, addr_sys(raw)),
        };
        Pte::Valid {
            aperture,
            addr,
            read_only: raw & READ_ONLY != 0,
            privileged: raw & PRIVILEGE != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pte_fields() {
        // VALID, aperture video, RO, address 0x1234_5000.
        let raw = 1 | (1 << 6) | (0x1234_5000u64 >> 4);
        assert_eq!(
            V2.decode_pte(raw),
            Pte::Valid {
                aperture: Aperture::Video,
                addr: 0x1234_5000,
                read_only: true,
                privileged: false
            }
        );
        // Highest video address: bits 32:8 all set -> 2^37 - 4K.
        let raw = 1 | (((1u64 << 25) - 1) << 8);
        match V2.decode_pte(raw) {
            Pte::Valid { addr, .. } => assert_eq!(addr, (1 << 37) - 4096),
            other => panic!("{other:?}"),
        }
        assert_eq!(V2.decode_pte(VOL), Pte::Sparse);
        assert_eq!(V2.decode_pte(PRIVILEGE), Pte::IgnoreSmall);
        assert_eq!(V2.decode_pte(0), Pte::Invalid);
        assert!(matches!(
            V2.decode_pte(1 | (2 << 1)),
            Pte::Valid {
                aperture: Aperture::SysCoherent,
                ..
            }
        ));
    }

    #[test]
    fn pde_fields() {
        assert_eq!(
            V2.decode_pde((1 << 1) | (0x40_0000u64 >> 4)),
            Pde::Table {
                aperture: Aperture::Video,
                addr: 0x40_0000
            }
        );
        assert_eq!(V2.decode_pde(0), Pde::Invalid);
        assert_eq!(V2.decode_pde(VOL), Pde::Sparse);
        assert!(matches!(V2.decode_pde(1), Pde::Leaf(_)));
    }

    #[test]
    fn dual_pde_fields() {
        // Big half: video, LPT at 0x10100 (256-byte aligned); small half:
        // video, SPT at 0x20000.
        let lo = (1 << 1) | (0x10100u64 >> 4);
        let hi = (1 << 1) | (0x20000u64 >> 4);
        assert_eq!(
            V2.decode_dual(lo, hi),
            DualPde::Halves {
                big: Half::Table(Aperture::Video, 0x10100),
                small: Half::Table(Aperture::Video, 0x20000),
            }
        );
        assert_eq!(
            V2.decode_dual(0, 0),
            DualPde::Halves {
                big: Half::Invalid,
                small: Half::Invalid
            }
        );
        // VOL_BIG with APERTURE_BIG invalid: a sparse big half, also next to
        // a small page table.
        assert_eq!(
            V2.decode_dual(VOL, hi),
            DualPde::Halves {
                big: Half::Sparse,
                small: Half::Table(Aperture::Video, 0x20000)
            }
        );
        // VOL_SMALL (67) alone has no sparse meaning.
        assert_eq!(
            V2.decode_dual(0, VOL),
            DualPde::Halves {
                big: Half::Invalid,
                small: Half::Invalid
            }
        );
        assert!(matches!(V2.decode_dual(1, 0), DualPde::Leaf(_)));
    }
}
