// SPDX-License-Identifier: MIT OR Apache-2.0

//! GPU MMU page-table walker, generic over the entry format.
//!
//! The format files ([`v2`], [`v3`]) decode entries into the common types
//! below; [`walk`] follows them from the page-directory base (PDB) down to a
//! leaf. Geometry (both formats: 4 KiB, 64 KiB, 2 MiB and 512 MiB pages):
//!
//! | level | v2 VA bits | v3 VA bits | entry |
//! |---|---|---|---|
//! | PDE4 | - | 56 | 8 B |
//! | PDE3 | 48:47 | 55:47 | 8 B |
//! | PDE2 | 46:38 | 46:38 | 8 B |
//! | PDE1 | 37:29 | 37:29 | 8 B, or a 512 MiB PTE (not on Turing) |
//! | PDE0 | 28:21 | 28:21 | 16 B dual (big, small) or a 2 MiB PTE |
//! | big PT | 20:16 | 20:16 | 8 B, 64 KiB pages, 256 B table |
//! | small PT | 20:12 | 20:12 | 8 B, 4 KiB pages, 4 KiB table |
//!
//! Dual-PDE rule: the big half decides first. A sparse big half (no big
//! page table) makes the whole 2 MiB sparse, whatever the small half says.
//! When the big half points at a big page table, its entry for the VA
//! decides next: a valid big PTE maps a 64 KiB page, a sparse one is sparse,
//! an "invalid, ignore small PTEs" one faults. Sparse big entries win over
//! the small ones as nouveau's `nvkm/subdev/mmu/vmm.c` puts it ("Sparse
//! LPTEs prevent SPTEs from being accessed"). An invalid (zero) big PTE, or
//! an invalid big half, falls through to the small half: a table is walked,
//! a sparse small half is sparse, an invalid one faults.

pub mod v2;
pub mod v3;

use crate::chip::MmuVersion;

/// Where an entry's address points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aperture {
    /// Local video memory.
    Video,
    /// Peer GPU memory.
    Peer,
    /// Coherent system memory.
    SysCoherent,
    /// Non-coherent system memory.
    SysNonCoherent,
}

/// A decoded page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pte {
    /// A valid mapping.
    Valid {
        /// Target memory.
        aperture: Aperture,
        /// Physical address of the page.
        addr: u64,
        /// Writes are not allowed.
        read_only: bool,
        /// Privileged-only page (not enforced for BAR1).
        privileged: bool,
    },
    /// Sparse: reads return zero, writes are dropped, no fault.
    Sparse,
    /// v3 "mapping nowhere": treated like sparse.
    Nowhere,
    /// Invalid, and (on a big PTE) do not look at the small PTEs.
    IgnoreSmall,
    /// Invalid.
    Invalid,
}

/// A decoded single (non-dual) directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pde {
    /// Points at the next level.
    Table {
        /// Target memory.
        aperture: Aperture,
        /// Address of the next-level table.
        addr: u64,
    },
    /// IS_PTE set: a large-page leaf.
    Leaf(Pte),
    /// The whole range below is sparse.
    Sparse,
    /// Invalid.
    Invalid,
}

/// One half (big or small) of a dual PDE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// Points at a page table: aperture and address.
    Table(Aperture, u64),
    /// Aperture invalid with the format's sparse encoding.
    Sparse,
    /// Aperture invalid.
    Invalid,
}

impl Half {
    fn table(self) -> Option<(Aperture, u64)> {
        match self {
            Half::Table(a, addr) => Some((a, addr)),
            Half::Sparse | Half::Invalid => None,
        }
    }
}

/// A decoded dual PDE (the PDE0 level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DualPde {
    /// IS_PTE set in the low half: a 2 MiB leaf.
    Leaf(Pte),
    /// The two halves; [`walk`] applies the dual-PDE rule to them.
    Halves {
        /// Big (64 KiB pages) half.
        big: Half,
        /// Small (4 KiB pages) half.
        small: Half,
    },
}

/// Entry decoding for one page-table format.
pub trait Format: Sync {
    /// Format generation.
    fn version(&self) -> MmuVersion;
    /// Directory levels from the root down to PDE0 (the dual level).
    fn levels(&self) -> &'static [Level];
    /// Decodes an 8-byte directory entry.
    fn decode_pde(&self, raw: u64) -> Pde;
    /// Decodes a 16-byte dual PDE.
    fn decode_dual(&self, lo: u64, hi: u64) -> DualPde;
    /// Decodes an 8-byte PTE.
    fn decode_pte(&self, raw: u64) -> Pte;
}

/// Geometry of one directory level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Name in fault messages (`PDE3`).
    pub name: &'static str,
    /// PDE level number as `CACHE_LEVEL` counts it (0 = the dual level).
    pub pde: u8,
    /// Lowest VA bit of the index.
    pub shift: u32,
    /// Index width.
    pub bits: u32,
    /// 16-byte dual entries.
    pub dual: bool,
    /// A leaf (IS_PTE) is legal at this level (subject to chip support).
    pub leaf: bool,
}

/// Page sizes, smallest first.
pub const PAGE_SIZES: [u64; 4] = [1 << 12, 1 << 16, 1 << 21, 1 << 29];

/// Result of a successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// A VRAM page.
    Page {
        /// Physical address of the page start.
        pa: u64,
        /// Page size.
        size: u64,
        /// Writes are dropped.
        read_only: bool,
        /// Privileged-only page (decoded, not enforced).
        privileged: bool,
    },
    /// Sparse (or mapping-nowhere) range of `size` bytes.
    Sparse {
        /// Size of the range this entry covers.
        size: u64,
    },
}

impl Leaf {
    /// Size of the range this leaf covers.
    pub fn size(&self) -> u64 {
        match *self {
            Leaf::Page { size, .. } | Leaf::Sparse { size } => size,
        }
    }
}

/// Why a walk failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Level at which the walk stopped (`PDE2`, `PT64K`, ...).
    pub level: &'static str,
    /// Reason.
    pub reason: String,
}

/// Where the walker reads entries from.
pub trait EntrySource {
    /// Reads the entry of `level` (or a page table when `level.is_none()`)
    /// at VRAM address `addr`; `key` is the VA shifted down to that entry's
    /// coverage, for caching. Returns `len / 8` quadwords (1 or 2).
    ///
    /// # Errors
    ///
    /// A reason string when the address is outside VRAM.
    fn read_entry(
        &mut self,
        level: Option<&Level>,
        key: u64,
        addr: u64,
        dual: bool,
    ) -> Result<[u64; 2], String>;
    /// Called after a directory entry decoded as a pointer to a table.
    fn note_table(&mut self, _level: &Level, _key: u64, _raw: [u64; 2]) {}
}

/// The format of a chip.
pub fn format(version: MmuVersion) -> &'static dyn Format {
    match version {
        MmuVersion::V2 => &v2::V2,
        MmuVersion::V3 => &v3::V3,
    }
}

fn fault(level: &'static str, reason: impl Into<String>) -> Fault {
    Fault {
        level,
        reason: reason.into(),
    }
}

fn aperture_name(a: Aperture) -> &'static str {
    match a {
        Aperture::Video => "video memory",
        Aperture::Peer => "peer memory",
        Aperture::SysCoherent => "coherent system memory",
        Aperture::SysNonCoherent => "non-coherent system memory",
    }
}

fn leaf_from_pte(pte: Pte, size: u64, level: &'static str) -> Result<Option<Leaf>, Fault> {
    match pte {
        Pte::Valid {
            aperture: Aperture::Video,
            addr,
            read_only,
            privileged,
        } => {
            if addr % size != 0 {
                return Err(fault(
                    level,
                    format!("PTE address {addr:#x} is not aligned to its page size {size:#x}"),
                ));
            }
            Ok(Some(Leaf::Page {
                pa: addr,
                size,
                read_only,
                privileged,
            }))
        }
        Pte::Valid { aperture, addr, .. } => Err(fault(
            level,
            format!(
                "PTE maps {addr:#x} in {} (not modelled)",
                aperture_name(aperture)
            ),
        )),
        Pte::Sparse | Pte::Nowhere => Ok(Some(Leaf::Sparse { size })),
        Pte::IgnoreSmall => Ok(None),
        Pte::Invalid => Ok(None),
    }
}

fn is_poison(raw: u64) -> bool {
    raw == crate::vram::POISON64
}

fn table_addr(level: &'static str, aperture: Aperture, addr: u64) -> Result<u64, Fault> {
    if aperture != Aperture::Video {
        return Err(fault(
            level,
            format!(
                "next table at {addr:#x} in {} (not modelled)",
                aperture_name(aperture)
            ),
        ));
    }
    Ok(addr)
}

/// Translates `va` in the address space rooted at `pdb`.
///
/// `allow_512m` says whether a PTE at PDE1 is legal on this chip.
///
/// # Errors
///
/// A [`Fault`] when no valid translation exists.
pub fn walk(
    fmt: &dyn Format,
    allow_512m: bool,
    pdb: u64,
    va: u64,
    src: &mut dyn EntrySource,
) -> Result<Leaf, Fault> {
    let levels = fmt.levels();
    let top = levels
        .first()
        .map(|l| l.shift + l.bits)
        .unwrap_or(64)
        .min(63);
    if va >> top != 0 {
        return Err(fault("VA", format!("VA {va:#x} exceeds {top} bits")));
    }
    let mut table = pdb;
    for lvl in levels {
        let index = (va >> lvl.shift) & ((1u64 << lvl.bits) - 1);
        let esize: u64 = if lvl.dual { 16 } else { 8 };
        let addr = table
            .checked_add(index * esize)
            .ok_or_else(|| fault(lvl.name, "entry address overflows"))?;
        let key = va >> lvl.shift;
        let raw = src
            .read_entry(Some(lvl), key, addr, lvl.dual)
            .map_err(|e| fault(lvl.name, e))?;
        let leaf_size = 1u64 << lvl.shift;
        if !lvl.dual {
            if is_poison(raw[0]) {
                return Err(fault(
                    lvl.name,
                    format!("entry at {addr:#x} is never-written VRAM (poison)"),
                ));
            }
            match fmt.decode_pde(raw[0]) {
                Pde::Table { aperture, addr: a } => {
                    table = table_addr(lvl.name, aperture, a)?;
                    src.note_table(lvl, key, raw);
                }
                Pde::Leaf(pte) => {
                    if !lvl.leaf || !allow_512m {
                        return Err(fault(
                            lvl.name,
                            format!(
                                "PTE (IS_PTE set) at {addr:#x} where this chip allows none: {:#018x}",
                                raw[0]
                            ),
                        ));
                    }
                    return leaf_from_pte(pte, leaf_size, lvl.name)?.ok_or_else(|| {
                        fault(
                            lvl.name,
                            format!("invalid PTE {:#018x} at {addr:#x}", raw[0]),
                        )
                    });
                }
                Pde::Sparse => return Ok(Leaf::Sparse { size: leaf_size }),
                Pde::Invalid => {
                    return Err(fault(
                        lvl.name,
                        format!("invalid PDE {:#018x} at {addr:#x}", raw[0]),
                    ))
                }
            }
            continue;
        }
        // The dual level (PDE0) is the last directory level.
        if is_poison(raw[0]) {
            return Err(fault(
                lvl.name,
                format!("dual PDE at {addr:#x} is never-written VRAM (poison)"),
            ));
        }
        return match fmt.decode_dual(raw[0], raw[1]) {
            DualPde::Leaf(pte) => leaf_from_pte(pte, leaf_size, lvl.name)?.ok_or_else(|| {
                fault(
                    lvl.name,
                    format!("invalid 2 MiB PTE {:#018x} at {addr:#x}", raw[0]),
                )
            }),
            // A sparse big half hides the small half: the whole 2 MiB is
            // sparse (see the module documentation).
            DualPde::Halves {
                big: Half::Sparse, ..
            } => Ok(Leaf::Sparse { size: leaf_size }),
            DualPde::Halves {
                big: Half::Invalid,
                small: Half::Sparse,
            } => Ok(Leaf::Sparse { size: leaf_size }),
            DualPde::Halves {
                big: Half::Invalid,
                small: Half::Invalid,
            } => Err(fault(
                lvl.name,
                format!(
                    "invalid dual PDE {:#018x}_{:016x} at {addr:#x}",
                    raw[1], raw[0]
                ),
            )),
            DualPde::Halves { big, small } => {
                src.note_table(lvl, key, raw);
                walk_tables(fmt, src, va, big.table(), small)
            }
        };
    }
    Err(fault("PDB", "format has no levels"))
}

fn walk_tables(
    fmt: &dyn Format,
    src: &mut dyn EntrySource,
    va: u64,
    big: Option<(Aperture, u64)>,
    small: Half,
) -> Result<Leaf, Fault> {
    let fmt_name_big = "PT64K";
    let fmt_name_small = "PT4K";
    let mut why_not_big = String::from("big half invalid");
    if let Some((ap, base)) = big {
        let base = table_addr(fmt_name_big, ap, base)?;
        let index = (va >> 16) & 0x1f;
        let addr = base + index * 8;
        let e = src
            .read_entry(None, va >> 16, addr, false)
            .map_err(|e| fault(fmt_name_big, e))?[0];
        if is_poison(e) {
            return Err(fault(
                fmt_name_big,
                format!("big PTE at {addr:#x} is never-written VRAM (poison)"),
            ));
        }
        match fmt.decode_pte(e) {
            Pte::IgnoreSmall => {
                return Err(fault(
                    fmt_name_big,
                    format!("big PTE {e:#018x} at {addr:#x} is invalid and hides the small PTEs"),
                ))
            }
            Pte::Invalid => why_not_big = format!("big PTE {e:#018x} at {addr:#x} invalid"),
            pte => {
                if let Some(l) = leaf_from_pte(pte, 1 << 16, fmt_name_big)? {
                    return Ok(l);
                }
            }
        }
    }
    let (ap, base) = match small {
        Half::Table(ap, base) => (ap, base),
        // Only reached with a big table whose entry for this 64 KiB was
        // invalid: the result holds for that 64 KiB.
        Half::Sparse => return Ok(Leaf::Sparse { size: 1 << 16 }),
        Half::Invalid => {
            return Err(fault(
                fmt_name_small,
                format!("{why_not_big}, small half invalid"),
            ))
        }
    };
    let base = table_addr(fmt_name_small, ap, base)?;
    let index = (va >> 12) & 0x1ff;
    let addr = base + index * 8;
    let e = src
        .read_entry(None, va >> 12, addr, false)
        .map_err(|e| fault(fmt_name_small, e))?[0];
    if is_poison(e) {
        return Err(fault(
            fmt_name_small,
            format!("small PTE at {addr:#x} is never-written VRAM (poison)"),
        ));
    }
    let pte = fmt.decode_pte(e);
    leaf_from_pte(pte, 1 << 12, fmt_name_small)?.ok_or_else(|| {
        fault(
            fmt_name_small,
            format!("{why_not_big}; small PTE {e:#018x} at {addr:#x} invalid"),
        )
    })
}
