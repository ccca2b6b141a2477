// SPDX-License-Identifier: GPL-2.0

//! GPU page tables: the two MMU formats and one generic walker that keeps a shadow of the tables.
//!
//! [`MmuFormat`] describes a format: its directory levels and how each kind of entry (PTE, PDE,
//! dual PDE) is encoded, with `bitfield!` types whose address fields have the format's widths
//! ([`ver2`], [`ver3`]). [`Walker`] is generic over the format; the chipset picks one of its two
//! instantiations once, at probe, as a `&'static dyn` [`PageTableOps`] ([`ops_for`]), so nothing
//! below that point matches on the version.
//!
//! The walker keeps every table it created in kernel memory ([`Table`]: VRAM address, the
//! entries written, occupancy), so mapping, unmapping and changing access issue MMIO writes only:
//! no table is ever read back. An operation is split in two (decision 5 of the design):
//! [`PageTableOps::prepare`] decides the page sizes and allocates every missing table (the only
//! step that can fail; on failure [`PageTableOps::rollback`] removes what it added), then
//! [`PageTableOps::commit`] writes the entries and cannot fail except on a dead device.
//!
//! Write order: entries of tables already visible to the GPU are written as they change; a new
//! table is written whole (its entries, and zeros only where the operation writes none, or
//! nothing but its entries when its memory is known to be zero), and only then linked from its
//! parent, so the GPU never walks a half-written table. Tables that become empty on unmap
//! (all-zero, or all-sparse where the range is sparse) are unlinked and returned on a
//! [`FreeList`] that the caller drops after the TLB invalidate.

use core::ops::Range;

use kernel::sizes::SizeConstants;
use kernel::{
    fmt,
    prelude::*,
    sync::Arc, //
};

use crate::mm::ptpool::{
    PtMem,
    PtPool, //
};

pub(crate) mod ver2;
pub(crate) mod ver3;

/// Access rights of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads and writes.
    ReadWrite,
    /// Reads only; writes fault.
    ReadOnly,
}

/// One directory level above PD0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirLevel {
    /// Name, as the manuals number the levels (`PD3`).
    pub(crate) name: &'static str,
    /// Lowest virtual-address bit of the index.
    pub(crate) shift: u32,
    /// Width of the index.
    pub(crate) bits: u32,
}

/// A decoded entry, for debugfs and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// All-zero: unmapped.
    Invalid,
    /// Sparse: reads return zero, writes are dropped, no fault.
    Sparse,
    /// A big PTE that hides the small PTEs below it and faults.
    IgnoreSmall,
    /// A directory entry pointing at the next-level table at this VRAM address.
    Table(u64),
    /// A dual PDE with its big (64 KiB) and small (4 KiB) page tables.
    Dual {
        /// VRAM address of the 64 KiB page table.
        big: Option<u64>,
        /// VRAM address of the 4 KiB page table.
        small: Option<u64>,
    },
    /// A page of video memory.
    Page {
        /// Physical address.
        pa: u64,
        /// Writes fault.
        read_only: bool,
    },
    /// Anything else (never written by nova-mm).
    Unknown(u64),
}

/// One MMU page-table format.
///
/// Implemented by [`ver2::Ver2`] and [`ver3::Ver3`]. The entry types are distinct per format, so
/// an entry of one cannot be written into a table of the other, and address fields are
/// `Bounded` to the format's width, so an address out of reach cannot be encoded.
pub(crate) trait MmuFormat: 'static + Send + Sync {
    /// Format version number.
    const VERSION: u32;
    /// Directory levels above PD0, root first. The last one is PD1.
    const DIRS: &'static [DirLevel];
    /// A page-table entry.
    type Pte: Copy;
    /// A page-directory entry (above PD0).
    type Pde: Copy;
    /// A dual PDE (PD0): big and small halves.
    type DualPde: Copy;

    /// A valid PTE mapping video memory at `pa` with `access`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `pa` is not 4 KiB aligned; `ERANGE` if it is beyond the address field.
    fn pte(pa: u64, access: Access) -> Result<Self::Pte>;
    /// The sparse PTE.
    fn pte_sparse() -> Self::Pte;
    /// The raw value of a PTE.
    fn pte_raw(pte: Self::Pte) -> u64;
    /// A PDE pointing at the video-memory table at `table`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `table` is not 4 KiB aligned; `ERANGE` if it is beyond the address field.
    fn pde(table: u64) -> Result<Self::Pde>;
    /// The sparse PDE: everything below it is sparse.
    fn pde_sparse() -> Self::Pde;
    /// The raw value of a PDE.
    fn pde_raw(pde: Self::Pde) -> u64;
    /// A dual PDE pointing at the 64 KiB page table `big` and the 4 KiB page table `small`.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a misaligned table; `ERANGE` if one is beyond the address field.
    fn dual(big: Option<u64>, small: Option<u64>) -> Result<Self::DualPde>;
    /// The sparse dual PDE: its whole 2 MiB is sparse.
    fn dual_sparse() -> Self::DualPde;
    /// The raw value of a dual PDE: low (big) and high (small) quadwords.
    fn dual_raw(dual: Self::DualPde) -> [u64; 2];
    /// Decodes a PTE.
    fn decode_pte(raw: u64) -> Entry;
    /// Decodes a PDE (or a 512 MiB PTE at PD1).
    fn decode_pde(raw: u64) -> Entry;
    /// Decodes a dual PDE (or a 2 MiB PTE in its low half).
    fn decode_dual(lo: u64, hi: u64) -> Entry;
}

/// What kind of table a [`Table`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory above PD0: index into [`MmuFormat::DIRS`].
    Dir(usize),
    /// PD0: 256 dual PDEs.
    Pd0,
    /// A 4 KiB page table: 512 PTEs.
    Spt,
    /// A 64 KiB page table: 32 PTEs (256 bytes).
    Lpt,
}

/// The shadow of one page table or directory.
///
/// # Invariants
///
/// `q` holds what the hardware table holds (or will hold, while `fresh`); `live` counts its
/// non-zero quadwords and `sparse` its entries equal to the format's sparse entry of this kind.
/// `kids[i]` is the table entry `i` points at (for PD0: `2 * i` the big and `2 * i + 1` the small
/// page table), and a fresh kid is not pointed at yet.
pub(crate) struct Table {
    mem: PtMem,
    kind: Kind,
    va: u64,
    q: KVVec<u64>,
    kids: KVec<Option<KBox<Table>>>,
    live: u32,
    sparse: u32,
    fresh: bool,
    next_free: Option<KBox<Table>>,
}

impl Table {
    /// Returns the VRAM address of the table.
    pub(crate) fn addr(&self) -> u64 {
        self.mem.addr()
    }
}

/// Tables unlinked by an operation, freed when dropped (after the TLB invalidate).
#[derive(Default)]
pub(crate) struct FreeList {
    head: Option<KBox<Table>>,
    /// Number of tables on the list.
    pub(crate) count: u64,
}

impl FreeList {
    fn push(&mut self, mut t: KBox<Table>) {
        // Known zero when every quadword of the slot is zero: the pool may hand it out again
        // unzeroed, as any kind of table. A table smaller than its slot (a 64 KiB page table:
        // 32 entries, 256 bytes) wrote only its own part; the rest is zero only if the slot was
        // when it was handed out.
        // CAST: at most 512 quadwords.
        let whole = t.q.len() as u64 * 8 >= crate::mm::ptpool::SLOT;
        let zero = t.live == 0 && (whole || t.mem.known_zero());
        t.mem.set_zero(zero);
        t.next_free = self.head.take();
        self.head = Some(t);
        self.count += 1;
    }
}

impl Drop for FreeList {
    fn drop(&mut self) {
        // Unchain iteratively, so a long list does not recurse.
        let mut cur = self.head.take();
        while let Some(mut t) = cur {
            cur = t.next_free.take();
            // A freed table's own kids were unlinked before it.
            drop(t);
        }
    }
}

/// Where the entries go: VRAM through PRAMIN, or memory in the unit tests.
pub(crate) trait EntryWriter {
    /// Writes the 64-bit entry `val` at VRAM address `addr`.
    ///
    /// # Errors
    ///
    /// Whatever the backing returns (a refused or failed MMIO access).
    fn write(&mut self, addr: u64, val: u64) -> Result;
}

/// What one run of an operation makes of its virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// Map video memory (the run's physical address) with this access.
    Page(Access),
    /// Make sparse.
    Sparse,
    /// Unmap (all-zero entries).
    Zero,
}

/// A run of pages of one size: `len` bytes at `va` (physical `pa` for pages), `page` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// First virtual address.
    pub(crate) va: u64,
    /// First physical address (for [`Leaf::Page`]).
    pub(crate) pa: u64,
    /// Length in bytes, a multiple of `page`.
    pub(crate) len: u64,
    /// Page size.
    pub(crate) page: u64,
}

/// The shadow of one address space: its root directory and what the chip allows.
pub(crate) struct Shadow {
    root: KBox<Table>,
    huge: bool,
}

impl Shadow {
    /// Returns the VRAM address of the root directory (the PDB).
    pub(crate) fn pdb(&self) -> u64 {
        self.root.addr()
    }
}

/// Counts of one committed operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitStats {
    /// Entries (quadwords) written.
    pub(crate) writes: u64,
    /// Tables created.
    pub(crate) tables_new: u64,
    /// Tables unlinked (freed after the invalidate).
    pub(crate) tables_freed: u64,
    /// Zeros not written because a new table's memory was known to be zero.
    pub(crate) zero_saved: u64,
}

/// The format-independent interface of the walker, one `&'static` instance per format.
pub(crate) trait PageTableOps: Sync {
    /// The format version (2 or 3).
    fn version(&self) -> u32;
    /// Creates the shadow of a new address space, with an empty root directory written.
    ///
    /// `huge` allows 512 MiB pages (every chip but Turing).
    ///
    /// # Errors
    ///
    /// `ENOMEM`/`ENOSPC` if no table memory; errors of `w`.
    fn new_shadow(&self, pool: &Arc<PtPool>, huge: bool, w: &mut dyn EntryWriter)
        -> Result<Shadow>;
    /// Splits `runs` (virtual address, physical address, length) into pieces of the largest
    /// legal pages, and allocates every table they need into the shadow, not yet linked. For
    /// [`Leaf::Sparse`] and [`Leaf::Zero`] only the virtual address decides the page size.
    ///
    /// # Errors
    ///
    /// `EINVAL` for misaligned runs; `ENOMEM`/`ENOSPC`. On error the caller calls
    /// [`PageTableOps::rollback`] on the same range.
    fn prepare(
        &self,
        sh: &mut Shadow,
        pool: &Arc<PtPool>,
        runs: &[(u64, u64, u64)],
        leaf: Leaf,
        out: &mut KVec<Piece>,
    ) -> Result;
    /// Removes the tables a failed [`PageTableOps::prepare`] added within `range`.
    fn rollback(&self, sh: &mut Shadow, range: Range<u64>);
    /// Writes `leaf` over `pieces` (prepared ones, or the pieces of an existing mapping), links
    /// new tables, and with `reclaim` unlinks tables left empty onto `free`. A table left all
    /// sparse is folded into a sparse entry of its parent only if that entry's span lies inside
    /// the range `reclaim` gives (the reservation), so that releasing the reservation later needs
    /// no new table.
    ///
    /// # Errors
    ///
    /// Only what `w` returns (a dead device); the shadow is then still consistent.
    fn commit(
        &self,
        sh: &mut Shadow,
        pieces: &[Piece],
        leaf: Leaf,
        reclaim: Option<Range<u64>>,
        w: &mut dyn EntryWriter,
        free: &mut FreeList,
    ) -> Result<CommitStats>;
    /// Writes `leaf` over `pieces` into the shadow, and into VRAM where the table is already
    /// linked; new tables keep their entries until [`PageTableOps::link_fresh`] writes them
    /// whole. What [`PageTableOps::commit`] does first, for the operations of a batch that share
    /// new tables: each new table is then written once, with every entry of the batch.
    ///
    /// # Errors
    ///
    /// Only what `w` returns (a dead device); the shadow is then still consistent.
    fn write_leaves(
        &self,
        sh: &mut Shadow,
        pieces: &[Piece],
        leaf: Leaf,
        w: &mut dyn EntryWriter,
    ) -> Result<CommitStats>;
    /// Writes the new tables within `range` whole (entries, and zeros unless their memory is
    /// known to be zero), then links each into its parent.
    ///
    /// # Errors
    ///
    /// Only what `w` returns (a dead device); the shadow is then still consistent.
    fn link_fresh(
        &self,
        sh: &mut Shadow,
        range: Range<u64>,
        w: &mut dyn EntryWriter,
    ) -> Result<CommitStats>;
    /// Unlinks the tables left empty within `range` onto `free`, and folds tables left all
    /// sparse into sparse entries of their parents where the entries' span lies inside `bound`
    /// (what [`PageTableOps::commit`] does with `reclaim`, for the leaves of several commits at
    /// once: a batch reclaims after its last write, so that no commit of it loses a table
    /// another one of it writes into).
    ///
    /// # Errors
    ///
    /// Only what `w` returns (a dead device); the shadow is then still consistent.
    fn reclaim(
        &self,
        sh: &mut Shadow,
        range: Range<u64>,
        bound: Range<u64>,
        w: &mut dyn EntryWriter,
        free: &mut FreeList,
    ) -> Result<CommitStats>;
    /// Frees every table of the shadow onto `free` without writing anything.
    fn teardown(&self, sh: Shadow, free: &mut FreeList);
    /// Prints the tree from the shadow.
    fn dump(&self, sh: &Shadow, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// Translates `va` from the shadow: the entry of the leaf and the page size.
    fn lookup(&self, sh: &Shadow, va: u64) -> (Entry, u64);
    /// Number of tables in the shadow.
    fn tables(&self, sh: &Shadow) -> u64;
    /// The end (exclusive) of the virtual addresses the format translates.
    fn va_limit(&self) -> u64;
}

/// The walker of format `F`.
pub(crate) struct Walker<F: MmuFormat>(core::marker::PhantomData<F>);

/// The version 2 walker.
pub(crate) static VER2: Walker<ver2::Ver2> = Walker(core::marker::PhantomData);
/// The version 3 walker.
pub(crate) static VER3: Walker<ver3::Ver3> = Walker(core::marker::PhantomData);

/// Returns the walker of `version`: the one place that matches on the MMU version.
pub(crate) fn ops_for(version: crate::chip::MmuVersion) -> &'static dyn PageTableOps {
    match version {
        crate::chip::MmuVersion::V2 => &VER2,
        crate::chip::MmuVersion::V3 => &VER3,
    }
}

/// Returns the largest of `sizes` that `va` and `pa` are aligned to and `len` holds.
fn best_page(sizes: &[u64], va: u64, pa: u64, len: u64) -> u64 {
    for &s in sizes {
        // Page sizes are powers of two.
        let mask = s.wrapping_sub(1);
        if va & mask == 0 && pa & mask == 0 && len >= s {
            return s;
        }
    }
    u64::SZ_4K
}

impl<F: MmuFormat> Walker<F> {
    const PD1: usize = F::DIRS.len() - 1;

    fn entries(kind: Kind) -> usize {
        match kind {
            Kind::Dir(l) => 1 << F::DIRS[l].bits,
            Kind::Pd0 => 256,
            Kind::Spt => 512,
            Kind::Lpt => 32,
        }
    }

    fn qwords(kind: Kind) -> usize {
        match kind {
            Kind::Pd0 => 512,
            k => Self::entries(k),
        }
    }

    /// The span of virtual addresses one entry of `kind` covers.
    fn entry_span(kind: Kind) -> u64 {
        match kind {
            Kind::Dir(l) => 1 << F::DIRS[l].shift,
            Kind::Pd0 => u64::SZ_2M,
            Kind::Spt => u64::SZ_4K,
            Kind::Lpt => u64::SZ_64K,
        }
    }

    fn index(kind: Kind, va: u64) -> usize {
        let span = Self::entry_span(kind);
        // CAST: masked to the table's index width (at most 9 bits).
        ((va / span) as usize) & (Self::entries(kind) - 1)
    }

    /// The raw sparse value of one entry of `kind` (`[lo, hi]` for PD0).
    fn sparse_of(kind: Kind) -> [u64; 2] {
        match kind {
            Kind::Dir(_) => [F::pde_raw(F::pde_sparse()), 0],
            Kind::Pd0 => F::dual_raw(F::dual_sparse()),
            Kind::Spt | Kind::Lpt => [F::pte_raw(F::pte_sparse()), 0],
        }
    }

    fn new_table(
        pool: &Arc<PtPool>,
        near: Option<u64>,
        kind: Kind,
        va: u64,
        fill: [u64; 2],
    ) -> Result<KBox<Table>> {
        let mem = pool.alloc_near(near)?;
        let n = Self::qwords(kind);
        let mut q = KVVec::with_capacity(n, GFP_KERNEL)?;
        let mut live = 0;
        for i in 0..n {
            let v = if kind == Kind::Pd0 {
                fill[i % 2]
            } else {
                fill[0]
            };
            live += u32::from(v != 0);
            q.push(v, GFP_KERNEL)?;
        }
        let nkids = match kind {
            Kind::Dir(l) => 1 << F::DIRS[l].bits,
            Kind::Pd0 => 512,
            Kind::Spt | Kind::Lpt => 0,
        };
        let mut kids = KVec::with_capacity(nkids, GFP_KERNEL)?;
        for _ in 0..nkids {
            kids.push(None, GFP_KERNEL)?;
        }
        let sparse = if fill != [0, 0] && fill == Self::sparse_of(kind) {
            // CAST: at most 512 entries.
            Self::entries(kind) as u32
        } else {
            0
        };
        Ok(KBox::new(
            Table {
                mem,
                kind,
                va,
                q,
                kids,
                live,
                sparse,
                fresh: true,
                next_free: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// Sets entry `i` (one quadword) of `t`; writes it if the table is visible to the GPU.
    fn set(
        t: &mut Table,
        i: usize,
        v: u64,
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
    ) -> Result {
        let old = t.q[i];
        if old == v {
            return Ok(());
        }
        if t.kind != Kind::Pd0 {
            let sp = Self::sparse_of(t.kind)[0];
            if old == sp {
                t.sparse -= 1;
            }
            if v == sp {
                t.sparse += 1;
            }
        }
        if old == 0 {
            t.live += 1;
        }
        if v == 0 {
            t.live -= 1;
        }
        t.q[i] = v;
        if !t.fresh {
            // CAST: `i` is below 512.
            w.write(t.addr() + 8 * i as u64, v)?;
            st.writes += 1;
        }
        Ok(())
    }

    /// Sets dual entry `i` of PD0 `t` to `[lo, hi]`.
    fn set_dual(
        t: &mut Table,
        i: usize,
        v: [u64; 2],
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
    ) -> Result {
        let sp = Self::sparse_of(Kind::Pd0);
        let was = [t.q[2 * i], t.q[2 * i + 1]] == sp;
        Self::set(t, 2 * i, v[0], w, st)?;
        Self::set(t, 2 * i + 1, v[1], w, st)?;
        let is = v == sp;
        if was && !is {
            t.sparse -= 1;
        } else if is && !was {
            t.sparse += 1;
        }
        Ok(())
    }

    fn is_sparse_entry(t: &Table, i: usize) -> bool {
        let sp = Self::sparse_of(t.kind);
        if t.kind == Kind::Pd0 {
            [t.q[2 * i], t.q[2 * i + 1]] == sp
        } else {
            t.q[i] == sp[0]
        }
    }

    /// Whether a leaf of `page` bytes at `va` may be placed in the current shadow.
    fn slot_free(root: &Table, va: u64, page: u64) -> bool {
        let mut t = root;
        loop {
            let i = Self::index(t.kind, va);
            match t.kind {
                Kind::Dir(l) if l == Self::PD1 => {
                    let kid = t.kids[i].as_deref();
                    return match page {
                        u64::SZ_512M => kid.is_none(),
                        u64::SZ_2M => kid.is_none_or(|pd0| {
                            let j = Self::index(Kind::Pd0, va);
                            pd0.kids[2 * j].is_none() && pd0.kids[2 * j + 1].is_none()
                        }),
                        _ => true,
                    };
                }
                Kind::Dir(_) => match t.kids[i].as_deref() {
                    Some(k) => t = k,
                    None => return true,
                },
                _ => return true,
            }
        }
    }

    /// Makes sure the tables for a leaf of `page` bytes at `va` exist (new ones are fresh).
    fn ensure_path(pool: &Arc<PtPool>, root: &mut Table, va: u64, page: u64) -> Result {
        let mut t = root;
        loop {
            let i = Self::index(t.kind, va);
            let (kind, level_done) = match t.kind {
                Kind::Dir(l) if l == Self::PD1 => (Kind::Pd0, page == u64::SZ_512M),
                Kind::Dir(l) => (Kind::Dir(l + 1), false),
                Kind::Pd0 => {
                    if page == u64::SZ_2M {
                        return Ok(());
                    }
                    // The page table of the page's size, under dual entry `i`.
                    let (k, slot) = if page == u64::SZ_64K {
                        (Kind::Lpt, 2 * i)
                    } else {
                        (Kind::Spt, 2 * i + 1)
                    };
                    if t.kids[slot].is_none() {
                        let fill = Self::pt_fill(t, i, k);
                        let span_base = va & !(u64::SZ_2M - 1);
                        let mut nt =
                            Self::new_table(pool, Some(t.addr()), k, span_base, [fill[0], 0])?;
                        if k == Kind::Spt && fill[1] != 0 {
                            // Sparse only where the big page table's entry is sparse.
                            if let Some(lpt) = t.kids[2 * i].as_deref() {
                                let sp = Self::sparse_of(Kind::Spt)[0];
                                let mut st = CommitStats::default();
                                let mut nowrite = NoWrite;
                                for b in 0..32 {
                                    if Self::is_sparse_entry(lpt, b) {
                                        for s in 0..16 {
                                            Self::set(
                                                &mut nt,
                                                b * 16 + s,
                                                sp,
                                                &mut nowrite,
                                                &mut st,
                                            )?;
                                        }
                                    }
                                }
                            }
                        }
                        t.kids[slot] = Some(nt);
                    }
                    return Ok(());
                }
                Kind::Spt | Kind::Lpt => return Ok(()),
            };
            if level_done {
                return Ok(());
            }
            if t.kids[i].is_none() {
                // A table under a sparse entry is all sparse (only PD1 entries can be sparse
                // above PD0).
                let fill = if Self::is_sparse_entry(t, i) {
                    Self::sparse_of(kind)
                } else {
                    [0, 0]
                };
                let span = Self::entry_span(t.kind);
                t.kids[i] = Some(Self::new_table(
                    pool,
                    Some(t.addr()),
                    kind,
                    va & !(span - 1),
                    fill,
                )?);
            }
            t = t.kids[i].as_deref_mut().ok_or(EINVAL)?;
        }
    }

    /// The fill of a new page table of `kind` under dual entry `i` of `pd0`: `[value, 1]` means
    /// "sparse only where the big page table is sparse" (for a small table beside a big one).
    fn pt_fill(pd0: &Table, i: usize, kind: Kind) -> [u64; 2] {
        let sp = Self::sparse_of(kind)[0];
        if Self::is_sparse_entry(pd0, i) {
            [sp, 0]
        } else if kind == Kind::Spt && pd0.kids[2 * i].is_some() {
            [0, 1]
        } else {
            [0, 0]
        }
    }

    /// Drops the fresh tables within `range` under `t`.
    fn rollback_in(t: &mut Table, range: &Range<u64>) {
        let span = Self::entry_span(t.kind);
        let n = t.kids.len();
        for s in 0..n {
            let Some(kid) = t.kids[s].as_deref_mut() else {
                continue;
            };
            let e = if t.kind == Kind::Pd0 { s / 2 } else { s };
            // CAST: `e` is below 512.
            let start = t.va + e as u64 * span;
            if start >= range.end || start + span <= range.start {
                continue;
            }
            if kid.fresh {
                Self::keep_zero(kid);
                t.kids[s] = None;
            } else {
                Self::rollback_in(kid, range);
            }
        }
    }

    /// Gives the slots of a fresh table and its kids back as they were handed out: never
    /// written, those known to be zero still are.
    fn keep_zero(t: &mut Table) {
        let z = t.mem.known_zero();
        t.mem.set_zero(z);
        for k in t.kids.iter_mut().flatten() {
            Self::keep_zero(k);
        }
    }

    /// The entry value of `leaf` for a page of `page` bytes at `pa`, `[lo, hi]`.
    fn leaf_value(leaf: Leaf, pa: u64, page: u64, kind: Kind) -> Result<[u64; 2]> {
        Ok(match leaf {
            Leaf::Page(access) => [F::pte_raw(F::pte(pa, access)?), 0],
            Leaf::Zero => [0, 0],
            Leaf::Sparse => match page {
                u64::SZ_512M => [F::pde_raw(F::pde_sparse()), 0],
                u64::SZ_2M => F::dual_raw(F::dual_sparse()),
                _ => Self::sparse_of(kind),
            },
        })
    }

    /// Writes the leaf of one page.
    fn put_leaf(
        root: &mut Table,
        va: u64,
        pa: u64,
        page: u64,
        leaf: Leaf,
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
    ) -> Result {
        let mut t = root;
        loop {
            let i = Self::index(t.kind, va);
            match t.kind {
                Kind::Dir(l) if l == Self::PD1 && page == u64::SZ_512M => {
                    let v = Self::leaf_value(leaf, pa, page, t.kind)?;
                    return Self::set(t, i, v[0], w, st);
                }
                Kind::Dir(_) => t = t.kids[i].as_deref_mut().ok_or(EINVAL)?,
                Kind::Pd0 if page == u64::SZ_2M => {
                    let v = Self::leaf_value(leaf, pa, page, t.kind)?;
                    return Self::set_dual(t, i, v, w, st);
                }
                Kind::Pd0 => {
                    if page == u64::SZ_64K {
                        let (big, small) = t.kids.split_at_mut(2 * i + 1);
                        let lpt = big[2 * i].as_deref_mut().ok_or(EINVAL)?;
                        let v = Self::leaf_value(leaf, pa, page, Kind::Lpt)?;
                        Self::set(lpt, Self::index(Kind::Lpt, va), v[0], w, st)?;
                        // The 4 KiB entries of the same 64 KiB, behind the big one: cleared, so
                        // that none outlives it (a range released after a 4 KiB page opened its
                        // sparse big entry would keep sparse small entries, and their table).
                        if let Some(spt) = small[0].as_deref_mut() {
                            let j = Self::index(Kind::Spt, va) & !15;
                            for s in 0..16 {
                                Self::set(spt, j + s, 0, w, st)?;
                            }
                        }
                        return Ok(());
                    }
                    let (big, small) = t.kids.split_at_mut(2 * i + 1);
                    let spt = small[0].as_deref_mut().ok_or(EINVAL)?;
                    let j = Self::index(Kind::Spt, va);
                    if let (Some(lpt), Leaf::Page(_)) = (big[2 * i].as_deref_mut(), leaf) {
                        // A sparse big PTE hides the small ones: open its 64 KiB to the small
                        // table, keeping the other 4 KiB pages of it sparse.
                        let b = Self::index(Kind::Lpt, va);
                        if Self::is_sparse_entry(lpt, b) {
                            let sp = Self::sparse_of(Kind::Spt)[0];
                            for s in 0..16 {
                                Self::set(spt, (j & !15) + s, sp, w, st)?;
                            }
                            Self::set(lpt, b, 0, w, st)?;
                        }
                    }
                    let v = Self::leaf_value(leaf, pa, page, Kind::Spt)?;
                    return Self::set(spt, j, v[0], w, st);
                }
                Kind::Spt | Kind::Lpt => return Err(EINVAL),
            }
        }
    }

    /// The raw entry of `t` that points at its kids for entry `i`.
    fn link_value(t: &Table, i: usize) -> Result<[u64; 2]> {
        if t.kind == Kind::Pd0 {
            let big = t.kids[2 * i].as_deref().map(|k| k.addr());
            let small = t.kids[2 * i + 1].as_deref().map(|k| k.addr());
            if big.is_none() && small.is_none() {
                return Ok([t.q[2 * i], t.q[2 * i + 1]]);
            }
            Ok(F::dual_raw(F::dual(big, small)?))
        } else {
            let k = t.kids[i].as_deref().ok_or(EINVAL)?;
            Ok([F::pde_raw(F::pde(k.addr())?), 0])
        }
    }

    /// Writes the fresh tables under `t` within `range` whole, then links them.
    fn flush_fresh(
        t: &mut Table,
        range: &Range<u64>,
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
    ) -> Result {
        let span = Self::entry_span(t.kind);
        let n = t.kids.len();
        for s in 0..n {
            let e = if t.kind == Kind::Pd0 { s / 2 } else { s };
            // CAST: `e` is below 512.
            let start = t.va + e as u64 * span;
            if start >= range.end || start + span <= range.start {
                continue;
            }
            let Some(kid) = t.kids[s].as_deref_mut() else {
                continue;
            };
            let was_fresh = kid.fresh;
            Self::flush_fresh(kid, range, w, st)?;
            if was_fresh {
                // Link only after the kid is complete in VRAM.
                let v = Self::link_value(t, e)?;
                if t.kind == Kind::Pd0 {
                    Self::set_dual(t, e, v, w, st)?;
                } else {
                    Self::set(t, e, v[0], w, st)?;
                }
            }
        }
        if t.fresh {
            // Every quadword once: entries, and zeros unless the memory is known to be zero.
            let zero = t.mem.known_zero();
            for (i, v) in t.q.iter().enumerate() {
                if *v != 0 || !zero {
                    // CAST: `i` is below 512.
                    w.write(t.addr() + 8 * i as u64, *v)?;
                    st.writes += 1;
                } else {
                    st.zero_saved += 1;
                }
            }
            t.fresh = false;
            st.tables_new += 1;
        }
        Ok(())
    }

    /// Unlinks the tables under `t` within `range` that became empty, and folds all-sparse ones
    /// whose span lies in `bound` into a sparse entry; updates `t`'s entries.
    fn reclaim_in(
        t: &mut Table,
        range: &Range<u64>,
        bound: &Range<u64>,
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
        free: &mut FreeList,
    ) -> Result {
        let span = Self::entry_span(t.kind);
        let n = Self::entries(t.kind);
        if t.kids.is_empty() {
            return Ok(());
        }
        for e in 0..n {
            // CAST: `e` is below 512.
            let start = t.va + e as u64 * span;
            if start >= range.end || start + span <= range.start {
                continue;
            }
            if t.kind == Kind::Pd0 {
                let inside = start >= bound.start && start + span <= bound.end;
                Self::reclaim_dual(t, e, inside, w, st, free)?;
                continue;
            }
            let Some(kid) = t.kids[e].as_deref_mut() else {
                continue;
            };
            Self::reclaim_in(kid, range, bound, w, st, free)?;
            let inside = start >= bound.start && start + span <= bound.end;
            let all_sparse = inside
                && kid.kids.iter().all(Option::is_none)
                // CAST: a count of at most 512 entries.
                && kid.sparse as usize == Self::entries(kid.kind);
            if kid.live == 0 || (kid.kind == Kind::Pd0 && all_sparse) {
                let v = if kid.live == 0 {
                    0
                } else {
                    Self::sparse_of(t.kind)[0]
                };
                Self::set(t, e, v, w, st)?;
                if let Some(k) = t.kids[e].take() {
                    free.push(k);
                    st.tables_freed += 1;
                }
            }
        }
        Ok(())
    }

    fn reclaim_dual(
        t: &mut Table,
        e: usize,
        inside: bool,
        w: &mut dyn EntryWriter,
        st: &mut CommitStats,
        free: &mut FreeList,
    ) -> Result {
        let full = |k: &Option<KBox<Table>>, kind| {
            // CAST: a count of at most 512 entries.
            k.as_deref()
                .is_some_and(|k| k.sparse as usize == Self::entries(kind))
        };
        let empty = |k: &Option<KBox<Table>>| k.as_deref().is_some_and(|k| k.live == 0);
        let (big, small) = (2 * e, 2 * e + 1);
        let lpt_sparse = full(&t.kids[big], Kind::Lpt);
        let spt_sparse =
            full(&t.kids[small], Kind::Spt) && (t.kids[big].is_none() || empty(&t.kids[big]));
        if inside && (lpt_sparse || spt_sparse) {
            Self::set_dual(t, e, Self::sparse_of(Kind::Pd0), w, st)?;
            for s in [big, small] {
                if let Some(k) = t.kids[s].take() {
                    free.push(k);
                    st.tables_freed += 1;
                }
            }
            return Ok(());
        }
        let mut changed = false;
        for s in [big, small] {
            if empty(&t.kids[s]) {
                if let Some(k) = t.kids[s].take() {
                    free.push(k);
                    st.tables_freed += 1;
                    changed = true;
                }
            }
        }
        if changed {
            let big = t.kids[big].as_deref().map(|k| k.addr());
            let small = t.kids[small].as_deref().map(|k| k.addr());
            let v = if big.is_none() && small.is_none() {
                [0, 0]
            } else {
                F::dual_raw(F::dual(big, small)?)
            };
            Self::set_dual(t, e, v, w, st)?;
        }
        Ok(())
    }

    fn teardown_in(mut t: KBox<Table>, free: &mut FreeList) {
        for s in 0..t.kids.len() {
            if let Some(k) = t.kids[s].take() {
                Self::teardown_in(k, free);
            }
        }
        // Not written back: its content is whatever it held.
        t.live = t.live.max(1);
        free.push(t);
    }

    fn count(t: &Table) -> u64 {
        1 + t.kids.iter().flatten().map(|k| Self::count(k)).sum::<u64>()
    }

    fn dump_in(t: &Table, depth: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match t.kind {
            Kind::Dir(l) => F::DIRS[l].name,
            Kind::Pd0 => "PD0",
            Kind::Spt => "PT4K",
            Kind::Lpt => "PT64K",
        };
        writeln!(
            f,
            "{:width$}{} @ {:#x} va {:#x}: {} live, {} sparse",
            "",
            name,
            t.addr(),
            t.va,
            t.live,
            t.sparse,
            width = depth * 2
        )?;
        let span = Self::entry_span(t.kind);
        for e in 0..Self::entries(t.kind) {
            let entry = match t.kind {
                Kind::Dir(_) => F::decode_pde(t.q[e]),
                Kind::Pd0 => F::decode_dual(t.q[2 * e], t.q[2 * e + 1]),
                _ => F::decode_pte(t.q[e]),
            };
            if entry == Entry::Invalid {
                continue;
            }
            // CAST: `e` is below 512.
            let va = t.va + e as u64 * span;
            match entry {
                Entry::Page { pa, read_only } => writeln!(
                    f,
                    "{:width$}[{}] va {:#x} -> pa {:#x} size {:#x} {}",
                    "",
                    e,
                    va,
                    pa,
                    if t.kind == Kind::Dir(Self::PD1) {
                        u64::SZ_512M
                    } else {
                        span
                    },
                    if read_only { "ro" } else { "rw" },
                    width = depth * 2 + 2
                )?,
                Entry::Sparse => writeln!(
                    f,
                    "{:width$}[{}] va {:#x} sparse",
                    "",
                    e,
                    va,
                    width = depth * 2 + 2
                )?,
                _ => {}
            }
            let kids: &[Option<KBox<Table>>] = match t.kind {
                Kind::Pd0 => &t.kids[2 * e..2 * e + 2],
                Kind::Dir(_) => &t.kids[e..e + 1],
                _ => &[],
            };
            for k in kids.iter().flatten() {
                Self::dump_in(k, depth + 1, f)?;
            }
        }
        Ok(())
    }
}

/// A writer that must not be called: for tables that are not visible yet.
struct NoWrite;

impl EntryWriter for NoWrite {
    fn write(&mut self, _addr: u64, _val: u64) -> Result {
        Err(EINVAL)
    }
}

impl<F: MmuFormat> PageTableOps for Walker<F> {
    fn version(&self) -> u32 {
        F::VERSION
    }

    fn new_shadow(
        &self,
        pool: &Arc<PtPool>,
        huge: bool,
        w: &mut dyn EntryWriter,
    ) -> Result<Shadow> {
        let mut root = Self::new_table(pool, None, Kind::Dir(0), 0, [0, 0])?;
        let mut st = CommitStats::default();
        let range = 0..1;
        Self::flush_fresh(&mut root, &range, w, &mut st)?;
        Ok(Shadow { root, huge })
    }

    fn prepare(
        &self,
        sh: &mut Shadow,
        pool: &Arc<PtPool>,
        runs: &[(u64, u64, u64)],
        leaf: Leaf,
        out: &mut KVec<Piece>,
    ) -> Result {
        let all: &[u64] = &[u64::SZ_512M, u64::SZ_2M, u64::SZ_64K, u64::SZ_4K];
        let sizes = if sh.huge { all } else { &all[1..] };
        for &(va0, pa0, len0) in runs {
            if va0 % u64::SZ_4K != 0 || pa0 % u64::SZ_4K != 0 || len0 % u64::SZ_4K != 0 || len0 == 0
            {
                return Err(EINVAL);
            }
            let (mut va, mut pa, mut len) = (va0, pa0, len0);
            // For sparse and unmap runs only the virtual address decides the page size.
            let by_va = !matches!(leaf, Leaf::Page(_));
            while len > 0 {
                let mut page = best_page(sizes, va, if by_va { va } else { pa }, len);
                while page > u64::SZ_64K && !Self::slot_free(&sh.root, va, page) {
                    page = if page == u64::SZ_512M {
                        u64::SZ_2M
                    } else {
                        u64::SZ_64K
                    };
                    page = best_page(
                        &sizes[sizes.iter().position(|s| *s == page).unwrap_or(0)..],
                        va,
                        if by_va { va } else { pa },
                        len,
                    );
                }
                Self::ensure_path(pool, &mut sh.root, va, page)?;
                match out.last_mut() {
                    Some(p) if p.page == page && p.va + p.len == va && p.pa + p.len == pa => {
                        p.len += page
                    }
                    _ => out.push(
                        Piece {
                            va,
                            pa,
                            len: page,
                            page,
                        },
                        GFP_KERNEL,
                    )?,
                }
                va += page;
                pa += page;
                len -= page;
            }
        }
        Ok(())
    }

    fn rollback(&self, sh: &mut Shadow, range: Range<u64>) {
        Self::rollback_in(&mut sh.root, &range);
    }

    fn commit(
        &self,
        sh: &mut Shadow,
        pieces: &[Piece],
        leaf: Leaf,
        reclaim: Option<Range<u64>>,
        w: &mut dyn EntryWriter,
        free: &mut FreeList,
    ) -> Result<CommitStats> {
        let mut st = CommitStats::default();
        let (mut lo, mut hi) = (u64::MAX, 0);
        for p in pieces {
            let mut off = 0;
            while off < p.len {
                Self::put_leaf(
                    &mut sh.root,
                    p.va + off,
                    p.pa + off,
                    p.page,
                    leaf,
                    w,
                    &mut st,
                )?;
                off += p.page;
            }
            lo = lo.min(p.va);
            hi = hi.max(p.va + p.len);
        }
        if lo < hi {
            let range = lo..hi;
            Self::flush_fresh(&mut sh.root, &range, w, &mut st)?;
            if let Some(bound) = reclaim {
                Self::reclaim_in(&mut sh.root, &range, &bound, w, &mut st, free)?;
            }
        }
        Ok(st)
    }

    fn write_leaves(
        &self,
        sh: &mut Shadow,
        pieces: &[Piece],
        leaf: Leaf,
        w: &mut dyn EntryWriter,
    ) -> Result<CommitStats> {
        let mut st = CommitStats::default();
        for p in pieces {
            let mut off = 0;
            while off < p.len {
                Self::put_leaf(
                    &mut sh.root,
                    p.va + off,
                    p.pa + off,
                    p.page,
                    leaf,
                    w,
                    &mut st,
                )?;
                off += p.page;
            }
        }
        Ok(st)
    }

    fn link_fresh(
        &self,
        sh: &mut Shadow,
        range: Range<u64>,
        w: &mut dyn EntryWriter,
    ) -> Result<CommitStats> {
        let mut st = CommitStats::default();
        if range.start < range.end {
            Self::flush_fresh(&mut sh.root, &range, w, &mut st)?;
        }
        Ok(st)
    }

    fn reclaim(
        &self,
        sh: &mut Shadow,
        range: Range<u64>,
        bound: Range<u64>,
        w: &mut dyn EntryWriter,
        free: &mut FreeList,
    ) -> Result<CommitStats> {
        let mut st = CommitStats::default();
        if range.start < range.end {
            Self::reclaim_in(&mut sh.root, &range, &bound, w, &mut st, free)?;
        }
        Ok(st)
    }

    fn teardown(&self, sh: Shadow, free: &mut FreeList) {
        Self::teardown_in(sh.root, free);
    }

    fn dump(&self, sh: &Shadow, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "format: v{}, pdb {:#x}", F::VERSION, sh.pdb())?;
        Self::dump_in(&sh.root, 0, f)
    }

    fn lookup(&self, sh: &Shadow, va: u64) -> (Entry, u64) {
        let mut t = &*sh.root;
        loop {
            let i = Self::index(t.kind, va);
            let span = Self::entry_span(t.kind);
            match t.kind {
                Kind::Dir(_) => {
                    let e = F::decode_pde(t.q[i]);
                    match (e, t.kids[i].as_deref()) {
                        (Entry::Table(_), Some(k)) => t = k,
                        (e, _) => return (e, span),
                    }
                }
                Kind::Pd0 => {
                    let e = F::decode_dual(t.q[2 * i], t.q[2 * i + 1]);
                    let Entry::Dual { .. } = e else {
                        return (e, span);
                    };
                    if let Some(lpt) = t.kids[2 * i].as_deref() {
                        let b = F::decode_pte(lpt.q[Self::index(Kind::Lpt, va)]);
                        if b != Entry::Invalid {
                            return (b, u64::SZ_64K);
                        }
                    }
                    return match t.kids[2 * i + 1].as_deref() {
                        Some(spt) => (F::decode_pte(spt.q[Self::index(Kind::Spt, va)]), u64::SZ_4K),
                        None => (Entry::Invalid, u64::SZ_4K),
                    };
                }
                _ => return (Entry::Invalid, span),
            }
        }
    }

    fn tables(&self, sh: &Shadow) -> u64 {
        Self::count(&sh.root)
    }

    fn va_limit(&self) -> u64 {
        let root = F::DIRS[0];
        1 << (root.shift + root.bits)
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_pagetable)]
mod tests {
    use super::*;
    use crate::mm::vram::Vram;
    use ver2::Ver2;
    use ver3::Ver3;

    const MIB: u64 = 1 << 20;

    /// Sets a field to its largest value and back, and refuses one more than that.
    macro_rules! round_trip {
        ($t:ty, $field:ident, $with:ident, $bits:expr) => {{
            let max: u64 = if $bits == 64 {
                u64::MAX
            } else {
                (1u64 << $bits) - 1
            };
            let v = <$t>::zeroed().$with(max)?;
            ensure_eq!(v.$field().get(), max);
            // Only this field's bits are set.
            ensure_eq!(v.into_raw().count_ones(), $bits);
            ensure_eq!(<$t>::zeroed().$with(max / 2)?.$field().get(), max / 2);
            if $bits < 64 {
                ensure!(<$t>::zeroed().$with(max + 1).is_err());
            }
        }};
    }

    #[test]
    fn ver2_fields() -> Result {
        use ver2::{
            DualBig,
            DualSmall,
            Pde,
            Pte, //
        };
        round_trip!(Pte, kind, try_with_kind, 8);
        round_trip!(Pte, comptagline, try_with_comptagline, 20);
        round_trip!(Pte, peer, try_with_peer, 3);
        round_trip!(Pte, address_vid, try_with_address_vid, 25);
        round_trip!(Pte, atomic_disable, try_with_atomic_disable, 1);
        round_trip!(Pte, read_only, try_with_read_only, 1);
        round_trip!(Pte, privilege, try_with_privilege, 1);
        round_trip!(Pte, vol, try_with_vol, 1);
        round_trip!(Pte, aperture, try_with_aperture, 2);
        round_trip!(Pte, valid, try_with_valid, 1);
        round_trip!(Pde, address_vid, try_with_address_vid, 25);
        round_trip!(Pde, no_ats, try_with_no_ats, 1);
        round_trip!(Pde, vol, try_with_vol, 1);
        round_trip!(Pde, aperture, try_with_aperture, 2);
        round_trip!(Pde, is_pte, try_with_is_pte, 1);
        round_trip!(DualBig, address_big_vid, try_with_address_big_vid, 29);
        round_trip!(DualBig, no_ats, try_with_no_ats, 1);
        round_trip!(DualBig, vol_big, try_with_vol_big, 1);
        round_trip!(DualBig, aperture_big, try_with_aperture_big, 2);
        round_trip!(DualBig, is_pte, try_with_is_pte, 1);
        round_trip!(DualSmall, address_small_vid, try_with_address_small_vid, 25);
        round_trip!(DualSmall, vol_small, try_with_vol_small, 1);
        round_trip!(DualSmall, aperture_small, try_with_aperture_small, 2);
        // Bit positions from dev_mmu.ref.txt: a 4 KiB page at 0x1234_5000, read-only.
        let pte = Ver2::pte_raw(Ver2::pte(0x1_2345_6000, Access::ReadOnly)?);
        ensure_eq!(pte, 0x0600_0000_1234_5641);
        ensure_eq!(Ver2::pde_raw(Ver2::pde(0x4_5678_9000)?), 0x4567_8902);
        let d = Ver2::dual_raw(Ver2::dual(Some(0x1234_5600), Some(0x9_8765_4000))?);
        ensure_eq!(d, [0x0123_4562, 0x9876_5402]);
        ensure_eq!(Ver2::pte_raw(Ver2::pte_sparse()), 0x8);
        ensure_eq!(Ver2::dual_raw(Ver2::dual_sparse()), [0x8, 0]);
        ensure_eq!(Ver2::pde_raw(Ver2::pde_sparse()), 0x8);
        Ok(())
    }

    #[test]
    fn ver3_fields() -> Result {
        use ver3::{
            DualBig,
            DualSmall,
            Pde,
            Pte, //
        };
        round_trip!(Pte, peer_id, try_with_peer_id, 3);
        round_trip!(Pte, address_vid, try_with_address_vid, 28);
        round_trip!(Pte, kind, try_with_kind, 4);
        round_trip!(Pte, pcf, try_with_pcf, 5);
        round_trip!(Pte, acd, try_with_acd, 1);
        round_trip!(Pte, no_atomic, try_with_no_atomic, 1);
        round_trip!(Pte, read_only, try_with_read_only, 1);
        round_trip!(Pte, privilege, try_with_privilege, 1);
        round_trip!(Pte, uncached, try_with_uncached, 1);
        round_trip!(Pte, aperture, try_with_aperture, 2);
        round_trip!(Pte, valid, try_with_valid, 1);
        round_trip!(Pde, address, try_with_address, 40);
        round_trip!(Pde, pcf, try_with_pcf, 3);
        round_trip!(Pde, aperture, try_with_aperture, 2);
        round_trip!(Pde, is_pte, try_with_is_pte, 1);
        round_trip!(DualBig, address_big, try_with_address_big, 44);
        round_trip!(DualBig, pcf_big, try_with_pcf_big, 3);
        round_trip!(DualBig, aperture_big, try_with_aperture_big, 2);
        round_trip!(DualBig, is_pte, try_with_is_pte, 1);
        round_trip!(DualSmall, address_small, try_with_address_small, 40);
        round_trip!(DualSmall, pcf_small, try_with_pcf_small, 3);
        round_trip!(DualSmall, aperture_small, try_with_aperture_small, 2);
        // The PCF bits are the five flags of dev_mmu.h: PRIVILEGE_RO_NO_ATOMIC_UNCACHED_ACD.
        let p = Pte::zeroed()
            .with_acd(true)
            .with_no_atomic(true)
            .with_read_only(true)
            .with_privilege(true)
            .with_uncached(true);
        ensure_eq!(p.pcf().get(), 0x1f);
        let p = Pte::zeroed().with_read_only(true).with_privilege(true);
        // PRIVILEGE_RO_ATOMIC_CACHED_ACE.
        ensure_eq!(p.pcf().get(), 0x6);
        let pte = Ver3::pte_raw(Ver3::pte(0x12_3456_7000, Access::ReadOnly)?);
        // KIND 11:8 = GENERIC_MEMORY (0x6), PCF 7:3 = REGULAR_RO (0x4), VALID.
        ensure_eq!(pte, 0x12_3456_7621);
        ensure_eq!(Ver3::pde_raw(Ver3::pde(0x45_6789_a000)?), 0x45_6789_a012);
        let d = Ver3::dual_raw(Ver3::dual(Some(0x1234_5600), Some(0x9_8765_4000))?);
        ensure_eq!(d, [0x1234_5612, 0x9_8765_4012]);
        ensure_eq!(Ver3::pte_raw(Ver3::pte_sparse()), 0x8);
        ensure_eq!(Ver3::dual_raw(Ver3::dual_sparse()), [0x8, 0x8]);
        ensure_eq!(Ver3::pte_raw(ver3::pte_no_valid_4kb_page()), 0x18);
        Ok(())
    }

    fn encodings<F: MmuFormat>(max_pa: u64, max_table: u64) -> Result {
        // Every entry kind decodes to what was encoded.
        for access in [Access::ReadWrite, Access::ReadOnly] {
            for pa in [0, 0x1000, 0x2_0000_0000, max_pa] {
                let e = F::decode_pte(F::pte_raw(F::pte(pa, access)?));
                ensure_eq!(
                    e,
                    Entry::Page {
                        pa,
                        read_only: access == Access::ReadOnly
                    }
                );
                // The same PTE is the 2 MiB leaf in a dual PDE and the 512 MiB one at PD1.
                ensure_eq!(F::decode_dual(F::pte_raw(F::pte(pa, access)?), 0), e);
                ensure_eq!(F::decode_pde(F::pte_raw(F::pte(pa, access)?)), e);
            }
        }
        ensure_eq!(
            F::decode_pde(F::pde_raw(F::pde(max_table)?)),
            Entry::Table(max_table)
        );
        let dual = |b, s| -> Result<Entry> {
            Ok(F::decode_dual(
                F::dual_raw(F::dual(b, s)?)[0],
                F::dual_raw(F::dual(b, s)?)[1],
            ))
        };
        ensure_eq!(
            dual(Some(0x100), None)?,
            Entry::Dual {
                big: Some(0x100),
                small: None
            }
        );
        ensure_eq!(
            dual(None, Some(max_table))?,
            Entry::Dual {
                big: None,
                small: Some(max_table)
            }
        );
        ensure_eq!(dual(None, None)?, Entry::Invalid);
        // Invalid values are refused: misaligned, beyond the address field.
        ensure_eq!(F::pte(0x1001, Access::ReadWrite).err(), Some(EINVAL));
        ensure_eq!(
            F::pte(max_pa + 0x1000, Access::ReadWrite).err(),
            Some(ERANGE)
        );
        ensure_eq!(F::pde(0x800).err(), Some(EINVAL));
        ensure_eq!(F::pde(max_table + 0x1000).err(), Some(ERANGE));
        ensure_eq!(F::dual(Some(0x80), None).err(), Some(EINVAL));
        ensure_eq!(F::dual(None, Some(0x100)).err(), Some(EINVAL));
        ensure_eq!(F::dual(None, Some(max_table + 0x1000)).err(), Some(ERANGE));
        // Unmapped is all-zero; sparse encodings decode as sparse.
        ensure_eq!(F::decode_pte(0), Entry::Invalid);
        ensure_eq!(F::decode_pde(0), Entry::Invalid);
        ensure_eq!(F::decode_dual(0, 0), Entry::Invalid);
        ensure_eq!(F::decode_pte(F::pte_raw(F::pte_sparse())), Entry::Sparse);
        ensure_eq!(F::decode_pde(F::pde_raw(F::pde_sparse())), Entry::Sparse);
        let [lo, hi] = F::dual_raw(F::dual_sparse());
        ensure_eq!(F::decode_dual(lo, hi), Entry::Sparse);
        Ok(())
    }

    #[test]
    fn encodings_v2() -> Result {
        // ADDRESS_VID 32:8: 37-bit video-memory addresses.
        encodings::<Ver2>((1 << 37) - 0x1000, (1 << 37) - 0x1000)?;
        // VALID 0 + PRIVILEGE 1: the big PTE that hides the small ones.
        ensure_eq!(Ver2::decode_pte(0x20), Entry::IgnoreSmall);
        Ok(())
    }

    #[test]
    fn encodings_v3() -> Result {
        // PTE ADDRESS_VID 39:12: 40-bit video-memory pages; PDE ADDRESS 51:12: 52-bit tables.
        encodings::<Ver3>((1 << 40) - 0x1000, (1 << 52) - 0x1000)?;
        ensure_eq!(Ver3::decode_pte(0x18), Entry::IgnoreSmall);
        // MAPPING_NOWHERE and undefined PDE PCF values are not what nova-mm writes.
        ensure_eq!(Ver3::decode_pte(0x10), Entry::Unknown(0x10));
        ensure_eq!(Ver3::decode_pde(0x28), Entry::Unknown(0x28));
        Ok(())
    }

    #[test]
    fn geometry() -> Result {
        fn top<F: MmuFormat>() -> u32 {
            let d = F::DIRS[0];
            d.shift + d.bits
        }
        ensure_eq!(top::<Ver2>(), 49);
        ensure_eq!(top::<Ver3>(), 57);
        ensure_eq!(Ver2::DIRS.len(), 3);
        ensure_eq!(Ver3::DIRS.len(), 4);
        for dirs in [Ver2::DIRS, Ver3::DIRS] {
            // Each level indexes the bits right above the next one; PD1 sits on 29 (PD0: 28:21).
            for w in dirs.windows(2) {
                ensure_eq!(w[1].shift + w[1].bits, w[0].shift);
            }
            ensure_eq!(dirs[dirs.len() - 1].shift, 29);
        }
        type W2 = Walker<Ver2>;
        ensure_eq!(W2::entries(Kind::Dir(0)) * 8, 32);
        ensure_eq!(Walker::<Ver3>::entries(Kind::Dir(0)) * 8, 16);
        ensure_eq!(W2::entries(Kind::Dir(1)) * 8, 4096);
        ensure_eq!(W2::qwords(Kind::Pd0) * 8, 4096);
        ensure_eq!(W2::entries(Kind::Pd0), 256);
        ensure_eq!(W2::entries(Kind::Spt) * 8, 4096);
        ensure_eq!(W2::entries(Kind::Lpt) * 8, 256);
        ensure_eq!(W2::index(Kind::Pd0, 0x1f_ffff_ffff), 0xff);
        ensure_eq!(W2::index(Kind::Lpt, 0x1f_0000), 31);
        ensure_eq!(W2::index(Kind::Spt, 0x1f_f000), 511);
        Ok(())
    }

    struct Count(u64);

    impl EntryWriter for Count {
        fn write(&mut self, _addr: u64, _val: u64) -> Result {
            self.0 += 1;
            Ok(())
        }
    }

    /// The page-size split of a table of virtual address, physical address and size cases.
    #[test]
    fn page_split() -> Result {
        let vram = Vram::new(0..64 * MIB)?;
        let pool = PtPool::new(vram)?;
        const K4: u64 = u64::SZ_4K;
        const K64: u64 = u64::SZ_64K;
        const M2: u64 = u64::SZ_2M;
        const M512: u64 = u64::SZ_512M;
        // (huge, va, pa, size, [(va, len, page)])
        type Case = (bool, u64, u64, u64, &'static [(u64, u64, u64)]);
        let cases: &[Case] = &[
            (true, 0, 0, K4, &[(0, K4, K4)]),
            (true, K64, 3 * K64, K64, &[(K64, K64, K64)]),
            (true, M2, 4 * M2, M2, &[(M2, M2, M2)]),
            (true, 0, M512, M512, &[(0, M512, M512)]),
            (false, 0, M512, M512, &[(0, M512, M2)]),
            (
                true,
                60 * 1024,
                60 * 1024,
                72 * 1024,
                &[(60 * 1024, K4, K4), (K64, K64, K64), (2 * K64, K4, K4)],
            ),
            (true, K4, 2 * K4, K64, &[(K4, K64, K4)]),
            (
                true,
                M2 - 2 * K64,
                M2 - 2 * K64,
                M2 + 2 * K64,
                &[(M2 - 2 * K64, 2 * K64, K64), (M2, M2, M2)],
            ),
            (
                true,
                M512 - M2,
                M512 - M2,
                M512 + M2,
                &[(M512 - M2, M2, M2), (M512, M512, M512)],
            ),
            (true, M2, M2 + K4, M2, &[(M2, M2, K4)]),
        ];
        for &(huge, va, pa, size, want) in cases {
            let mut w = Count(0);
            let mut sh = VER2.new_shadow(&pool, huge, &mut w)?;
            let mut out = KVec::new();
            VER2.prepare(
                &mut sh,
                &pool,
                &[(va, pa, size)],
                Leaf::Page(Access::ReadWrite),
                &mut out,
            )?;
            ensure_eq!(out.len(), want.len());
            for (p, &(v, l, pg)) in out.iter().zip(want) {
                ensure_eq!((p.va, p.len, p.page), (v, l, pg));
                ensure_eq!(p.pa - pa, p.va - va);
            }
            VER2.rollback(&mut sh, va..va + size);
            ensure_eq!(VER2.tables(&sh), 1);
            let mut free = FreeList::default();
            VER2.teardown(sh, &mut free);
        }
        // Misaligned or empty runs are refused.
        let mut w = Count(0);
        let mut sh = VER3.new_shadow(&pool, true, &mut w)?;
        let mut out = KVec::new();
        for run in [(K4 + 8, 0, K4), (0, 12, K4), (0, 0, 100), (0, 0, 0)] {
            ensure_eq!(
                VER3.prepare(&mut sh, &pool, &[run], Leaf::Zero, &mut out)
                    .err(),
                Some(EINVAL)
            );
        }
        let mut free = FreeList::default();
        VER3.teardown(sh, &mut free);
        Ok(())
    }
}
