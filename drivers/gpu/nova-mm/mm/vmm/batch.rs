// SPDX-License-Identifier: GPL-2.0

//! Batched updates of one address space: N operations, one flush read and one invalidate.
//!
//! A [`Batch`] collects maps, unmaps, access changes and sparse reserves and releases on one or
//! more reservations of one [`Vmm`] (BAR1's too: [`crate::mm::bar::BarUser::vmm`]).
//!
//! - [`Batch::prepare`] checks every operation and allocates everything the batch needs:
//!   virtual addresses, page tables, shadow nodes and the records of the results. If anything
//!   fails (bad input, an overlap, `ENOMEM` at any allocation) the whole batch is refused:
//!   nothing is written, and what was allocated is given back.
//! - [`Prepared::execute`] cannot fail half-way on a working GPU. It writes every entry in one
//!   PRAMIN session (the window moves only where the tables' memory does), reads once to flush
//!   the writes (HARDWARE.md §9 rule 1, `kbusFlush_GM107`), invalidates the address space's
//!   page directory once, and only then frees what the batch released: page tables unlinked by
//!   its unmaps, and the VRAM of the mappings it unmapped (held by the caller's handles, or by
//!   the batch for a mapping it made and unmapped itself).
//!
//! The operations apply in the order they were queued: a map may take the addresses an earlier
//! unmap of the same batch gave up, and [`Batch::unmap_queued`] unmaps what an earlier map of
//! the batch mapped. Tables left empty are reclaimed after the last write of the batch, so that
//! no operation loses a table a later one writes into. Results are the same RAII handles as for
//! single operations; a single map or access change is a batch of one, at the same cost.

use core::ops::Range;

use kernel::{
    prelude::*,
    rbtree::RBTreeNodeReservation,
    sizes::SizeConstants,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        MutexGuard, //
    },
};

use super::{
    Flush,
    MapRecord,
    Mapping,
    ResInner,
    Reservation,
    Vmm,
    VmmState, //
};
use crate::mm::{
    pagetable::{
        Access,
        CommitStats,
        EntryWriter,
        FreeList,
        Leaf,
        Piece,
        Shadow, //
    },
    tlb::Change,
    vram::VramAllocation,
};

/// An operation as queued.
pub(super) enum Op<'b, 'a> {
    Map {
        res: &'b Reservation<'a>,
        offset: u64,
        mem: Arc<VramAllocation>,
        mem_offset: u64,
        size: u64,
        access: Access,
    },
    Unmap(&'b Mapping<'a>),
    UnmapQueued(usize),
    Protect(&'b Mapping<'a>, Access),
    ReserveSparse {
        size: u64,
        align: u64,
        at: Option<u64>,
    },
    ReleaseSparse(&'b ResInner<'a>),
}

/// An operation with everything it needs allocated.
enum Plan<'b, 'a> {
    Map {
        res: Arc<ResInner<'a>>,
        mem: Arc<VramAllocation>,
        va: u64,
        size: u64,
        access: Access,
        pieces: KVec<Piece>,
        node: Option<RBTreeNodeReservation<u64, MapRecord>>,
        /// Unmapped again by a later operation of the batch.
        unmapped: bool,
    },
    Unmap(&'b Mapping<'a>),
    UnmapQueued(usize),
    Protect(&'b Mapping<'a>, Access),
    Reserve {
        res: Option<Arc<ResInner<'a>>>,
        pieces: KVec<Piece>,
    },
    Release {
        res: &'b ResInner<'a>,
        pieces: KVec<Piece>,
    },
}

/// What one operation of an executed batch gave, in the order the operations were queued.
pub(crate) enum Done<'a> {
    /// A map's mapping.
    Mapped(Mapping<'a>),
    /// A sparse reservation.
    Reserved(Reservation<'a>),
    /// An unmap, an access change or a release; or a map that the batch unmapped again.
    Applied,
}

impl<'a> Done<'a> {
    /// Takes the mapping of a map.
    ///
    /// # Errors
    ///
    /// `EINVAL` if this is not a mapping.
    pub(crate) fn mapping(self) -> Result<Mapping<'a>> {
        match self {
            Done::Mapped(m) => Ok(m),
            _ => Err(EINVAL),
        }
    }

    /// Takes the reservation of a sparse reserve.
    ///
    /// # Errors
    ///
    /// `EINVAL` if this is not a reservation.
    pub(crate) fn reservation(self) -> Result<Reservation<'a>> {
        match self {
            Done::Reserved(r) => Ok(r),
            _ => Err(EINVAL),
        }
    }
}

/// Operations queued on one address space, not yet checked.
pub(crate) struct Batch<'b, 'a> {
    vmm: &'b Arc<Vmm<'a>>,
    ops: KVec<Op<'b, 'a>>,
}

impl<'a> Vmm<'a> {
    /// Starts a batch of updates of this address space.
    pub(crate) fn batch<'b>(self: &'b Arc<Self>) -> Batch<'b, 'a> {
        Batch {
            vmm: self,
            ops: KVec::new(),
        }
    }
}

impl<'b, 'a> Batch<'b, 'a> {
    /// Queues `op` (a sparse release of a reservation being dropped: from its drop).
    pub(super) fn push(&mut self, op: Op<'b, 'a>) -> Result<usize> {
        self.ops.push(op, GFP_KERNEL)?;
        Ok(self.ops.len() - 1)
    }

    /// Returns the number of operations queued.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Queues a map of `size` bytes of `mem` from `mem_offset` at `offset` into `res` (see
    /// [`Reservation::map`]); returns the operation's index.
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue; the operation itself is checked by [`Batch::prepare`].
    pub(crate) fn map(
        &mut self,
        res: &'b Reservation<'a>,
        offset: u64,
        mem: &Arc<VramAllocation>,
        mem_offset: u64,
        size: u64,
        access: Access,
    ) -> Result<usize> {
        self.push(Op::Map {
            res,
            offset,
            mem: mem.clone(),
            mem_offset,
            size,
            access,
        })
    }

    /// Queues the unmap of `m`; once executed, dropping `m` releases its memory and writes
    /// nothing.
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue.
    pub(crate) fn unmap(&mut self, m: &'b Mapping<'a>) -> Result<usize> {
        self.push(Op::Unmap(m))
    }

    /// Queues the unmap of what the earlier map operation `index` of this batch maps.
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue.
    pub(crate) fn unmap_queued(&mut self, index: usize) -> Result<usize> {
        self.push(Op::UnmapQueued(index))
    }

    /// Queues a change of the access of `m` (see [`Mapping::set_access`]).
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue.
    pub(crate) fn protect(&mut self, m: &'b Mapping<'a>, access: Access) -> Result<usize> {
        self.push(Op::Protect(m, access))
    }

    /// Queues a sparse reservation (see [`Vmm::reserve`]).
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue.
    pub(crate) fn reserve_sparse(
        &mut self,
        size: u64,
        align: u64,
        at: Option<u64>,
    ) -> Result<usize> {
        self.push(Op::ReserveSparse { size, align, at })
    }

    /// Queues the release of the sparse entries of `res`: its range reads unmapped (faults)
    /// from then on, and dropping `res` writes nothing.
    ///
    /// # Errors
    ///
    /// `ENOMEM` for the queue.
    pub(crate) fn release_sparse(&mut self, res: &'b Reservation<'a>) -> Result<usize> {
        self.push(Op::ReleaseSparse(&res.0))
    }

    /// Checks every operation and allocates everything the batch needs.
    ///
    /// # Errors
    ///
    /// The error of the first operation refused, and the whole batch with it: `EINVAL` for bad
    /// sizes, offsets, alignments or indices, a mapping or reservation of another address space
    /// or already unmapped or released; `ERANGE` for a range outside its reservation or
    /// allocation; `EXDEV` for another GPU's memory; `EBUSY` for an overlap with a live mapping,
    /// or a release of a reservation that still has one; `EEXIST`/`ENOSPC` for a reservation that
    /// does not fit; `ENOMEM`/`ENOSPC` if memory (page tables included) runs out; `ENODEV` if the
    /// GPU is gone. Nothing was written then.
    pub(crate) fn prepare(self) -> Result<Prepared<'b, 'a>> {
        let vmm = self.vmm;
        let n = self.ops.len();
        let mut plans = KVec::with_capacity(n, GFP_KERNEL)?;
        let done = KVec::with_capacity(n, GFP_KERNEL)?;
        // The allocations that need no lock, before taking it.
        for op in self.ops.iter() {
            let plan = match op {
                Op::Map {
                    res,
                    mem,
                    size,
                    access,
                    ..
                } => Plan::Map {
                    res: res.0.clone(),
                    mem: mem.clone(),
                    va: 0,
                    size: *size,
                    access: *access,
                    pieces: KVec::new(),
                    node: Some(RBTreeNodeReservation::new(GFP_KERNEL)?),
                    unmapped: false,
                },
                Op::Unmap(m) => Plan::Unmap(m),
                Op::UnmapQueued(i) => Plan::UnmapQueued(*i),
                Op::Protect(m, a) => Plan::Protect(m, *a),
                Op::ReserveSparse { .. } => Plan::Reserve {
                    res: None,
                    pieces: KVec::new(),
                },
                Op::ReleaseSparse(r) => Plan::Release {
                    res: r,
                    pieces: KVec::new(),
                },
            };
            plans.push(plan, GFP_KERNEL)?;
        }
        let ranges = KVec::with_capacity(n, GFP_KERNEL)?;
        let undo = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut p = Prepared {
            vmm,
            st: Some(vmm.state.lock()),
            plans,
            done,
            ranges,
            undo,
        };
        let checked = (|| -> Result {
            for (i, op) in self.ops.iter().enumerate() {
                p.prepare_one(i, op)?;
            }
            Ok(())
        })();
        if let Err(e) = checked {
            vmm.stats.failed.fetch_add(1, Relaxed);
            p.rollback();
            return Err(e);
        }
        Ok(p)
    }
}

/// A batch whose every operation was checked and had what it needs allocated, the address
/// space locked. Dropped without [`Prepared::execute`], it gives everything back unwritten.
pub(crate) struct Prepared<'b, 'a> {
    vmm: &'b Arc<Vmm<'a>>,
    st: Option<MutexGuard<'b, VmmState>>,
    plans: KVec<Plan<'b, 'a>>,
    done: KVec<Done<'a>>,
    /// The virtual ranges prepared (tables may have been added for them).
    ranges: KVec<Range<u64>>,
    /// What a failed execute takes back: the pieces, their reservation and the leaf.
    undo: KVec<(KVec<Piece>, Arc<ResInner<'a>>, Leaf)>,
}

/// The physical runs of `size` bytes of `mem` from byte `mem_offset` (in the order of its
/// blocks), at consecutive virtual addresses from `va`: `(va, pa, len)`.
fn runs_of(
    mem: &VramAllocation,
    mem_offset: u64,
    size: u64,
    va: u64,
) -> Result<KVec<(u64, u64, u64)>> {
    let mut runs = KVec::new();
    let (mut skip, mut left, mut v) = (mem_offset, size, va);
    for b in mem.ranges() {
        let len = b.end - b.start;
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(left);
        runs.push((v, b.start + skip, take), GFP_KERNEL)?;
        v += take;
        left -= take;
        skip = 0;
        if left == 0 {
            break;
        }
    }
    Ok(runs)
}

/// The reservation range a mapping lies in.
fn bound_of(res: &ResInner<'_>) -> Range<u64> {
    res.range.clone()
}

/// The leaf an unmap writes in `res`: sparse entries in a sparse reservation.
fn unmap_leaf(res: &ResInner<'_>) -> Leaf {
    if res.sparse.load(Relaxed) {
        Leaf::Sparse
    } else {
        Leaf::Zero
    }
}

/// The virtual range `pieces` cover.
fn span(pieces: &[Piece]) -> Range<u64> {
    let lo = pieces.iter().map(|p| p.va).min().unwrap_or(0);
    let hi = pieces.iter().map(|p| p.va + p.len).max().unwrap_or(0);
    lo..hi
}

impl<'b, 'a> Prepared<'b, 'a> {
    fn state(&mut self) -> Result<&mut VmmState> {
        self.st.as_deref_mut().ok_or(EINVAL)
    }

    /// Whether `va..va + size` overlaps a live mapping, as the operations before this one left
    /// the space.
    fn busy(&self, va: u64, size: u64, upto: usize) -> bool {
        let Some(st) = self.st.as_deref() else {
            return true;
        };
        let end = va + size;
        let gone = |start: u64| {
            self.plans[..upto].iter().any(|p| match p {
                Plan::Unmap(m) => m.va == start,
                _ => false,
            })
        };
        let live = st
            .mapped
            .iter()
            .any(|(s, m)| va < m.end && end > *s && !gone(*s));
        let queued = self.plans[..upto].iter().any(|p| match p {
            Plan::Map {
                va: v,
                size: s,
                unmapped,
                ..
            } => !unmapped && va < v + s && end > *v,
            _ => false,
        });
        live || queued
    }

    /// Whether `m` is a live mapping of this space that no earlier operation unmapped.
    fn live(&self, m: &Mapping<'_>, upto: usize) -> bool {
        core::ptr::addr_eq(&*m.res.vmm, &**self.vmm)
            && !m.released.load(Relaxed)
            && !self.plans[..upto]
                .iter()
                .any(|p| matches!(p, Plan::Unmap(o) if core::ptr::addr_eq(*o, m)))
    }

    fn prepare_one(&mut self, i: usize, op: &Op<'b, 'a>) -> Result {
        match op {
            Op::Map {
                res,
                offset,
                mem,
                mem_offset,
                size,
                ..
            } => self.prepare_map(i, res, *offset, mem, *mem_offset, *size),
            Op::Unmap(m) | Op::Protect(m, _) => {
                if self.live(m, i) {
                    Ok(())
                } else {
                    Err(EINVAL)
                }
            }
            Op::UnmapQueued(j) => {
                let j = *j;
                let ok =
                    j < i && matches!(&self.plans[j], Plan::Map { unmapped, .. } if !*unmapped);
                if !ok {
                    return Err(EINVAL);
                }
                if let Plan::Map { unmapped, .. } = &mut self.plans[j] {
                    *unmapped = true;
                }
                Ok(())
            }
            Op::ReserveSparse { size, align, at } => self.prepare_reserve(i, *size, *align, *at),
            Op::ReleaseSparse(r) => self.prepare_release(i, r),
        }
    }

    /// Checks map `i` and prepares its tables.
    fn prepare_map(
        &mut self,
        i: usize,
        res: &Reservation<'a>,
        offset: u64,
        mem: &VramAllocation,
        mem_offset: u64,
        size: u64,
    ) -> Result {
        let vmm = self.vmm;
        if !core::ptr::addr_eq(&*res.0.vmm, &**vmm)
            || size == 0
            || size % u64::SZ_4K != 0
            || offset % u64::SZ_4K != 0
            || mem_offset % u64::SZ_4K != 0
        {
            return Err(EINVAL);
        }
        let r = &res.0.range;
        let va = r
            .start
            .checked_add(offset)
            .filter(|v| v.checked_add(size).is_some_and(|e| e <= r.end))
            .ok_or(ERANGE)?;
        if mem_offset.checked_add(size).is_none_or(|e| e > mem.size()) {
            return Err(ERANGE);
        }
        // Physical addresses of another allocator are another GPU's memory, or none of
        // the driver's: never this GPU's to map.
        if !mem.is_of(vmm.pool.vram()) {
            return Err(EXDEV);
        }
        if self.busy(va, size, i) {
            return Err(EBUSY);
        }
        let runs = runs_of(mem, mem_offset, size, va)?;
        let access = match &self.plans[i] {
            Plan::Map { access, .. } => *access,
            _ => return Err(EINVAL),
        };
        let pieces = self.prepare_runs(va..va + size, &runs, Leaf::Page(access))?;
        if let Plan::Map {
            va: pva,
            pieces: pp,
            ..
        } = &mut self.plans[i]
        {
            *pva = va;
            *pp = pieces;
        }
        Ok(())
    }

    /// Checks sparse reserve `i`, places it and prepares its tables.
    fn prepare_reserve(&mut self, i: usize, size: u64, align: u64, at: Option<u64>) -> Result {
        let vmm = self.vmm;
        if size == 0 || size % u64::SZ_4K != 0 || !align.is_power_of_two() || align < u64::SZ_4K {
            return Err(EINVAL);
        }
        // The node and the handle first: placed, the range is this batch's to give back.
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let st = self.st.as_deref_mut().ok_or(EINVAL)?;
        let start = vmm.place(&st.reserved, size, align, at)?;
        let range = start..start + size;
        let inner = Arc::new(
            ResInner {
                vmm: vmm.clone(),
                range: range.clone(),
                // Not sparse until executed: dropped before, it writes nothing and gives
                // its range back.
                sparse: Atomic::new(false),
            },
            GFP_KERNEL,
        )?;
        let st = self.state()?;
        st.reserved
            .insert(node.into_node(start, (start + size, true)));
        // Held by the plan from here on: a refused batch drops it once the space is
        // unlocked, and its drop takes the range back.
        if let Plan::Reserve { res, .. } = &mut self.plans[i] {
            *res = Some(inner);
        }
        let pieces = self.prepare_runs(range.clone(), &[(start, start, size)], Leaf::Sparse)?;
        if let Plan::Reserve { pieces: pp, .. } = &mut self.plans[i] {
            *pp = pieces;
        }
        Ok(())
    }

    /// Records `range` as prepared (a refused batch rolls its new tables back) and prepares the
    /// tables `runs` need for `leaf`; returns their pieces.
    fn prepare_runs(
        &mut self,
        range: Range<u64>,
        runs: &[(u64, u64, u64)],
        leaf: Leaf,
    ) -> Result<KVec<Piece>> {
        let vmm = self.vmm;
        self.ranges.push(range, GFP_KERNEL)?;
        let mut pieces = KVec::new();
        let st = self.state()?;
        let sh = st.shadow.as_mut().ok_or(ENODEV)?;
        vmm.ops.prepare(sh, &vmm.pool, runs, leaf, &mut pieces)?;
        Ok(pieces)
    }

    /// Checks sparse release `i` and prepares its tables.
    fn prepare_release(&mut self, i: usize, inner: &'b ResInner<'a>) -> Result {
        let vmm = self.vmm;
        let released_before = self.plans[..i]
            .iter()
            .any(|p| matches!(p, Plan::Release { res, .. } if core::ptr::addr_eq(*res, inner)));
        if !core::ptr::addr_eq(&*inner.vmm, &**vmm)
            || !inner.sparse.load(Relaxed)
            || released_before
        {
            return Err(EINVAL);
        }
        let range = inner.range.clone();
        if self.busy(range.start, range.end - range.start, i) {
            return Err(EBUSY);
        }
        let runs = [(range.start, range.start, range.end - range.start)];
        let pieces = self.prepare_runs(range, &runs, Leaf::Zero)?;
        if let Plan::Release { pieces: pp, .. } = &mut self.plans[i] {
            *pp = pieces;
        }
        Ok(())
    }

    /// Gives back what the batch prepared: tables not yet linked, then (once the space is
    /// unlocked) the ranges it reserved, as their handles drop.
    fn rollback(&mut self) {
        let vmm = self.vmm;
        if let Some(st) = self.st.as_deref_mut() {
            if let Some(sh) = st.shadow.as_mut() {
                for r in self.ranges.iter() {
                    vmm.ops.rollback(sh, r.clone());
                }
            }
        }
        self.ranges.clear();
        // The lock first: the reservations' handles take it when dropped.
        self.st = None;
        self.plans.clear();
    }

    /// Writes every entry of the batch, flushes once, invalidates once, then frees what the
    /// batch released; returns what each operation gave, in order.
    ///
    /// # Errors
    ///
    /// Only a failing GPU (an MMIO error or an invalidate that did not complete). The maps and
    /// sparse reserves of the batch are then taken back (best effort), what else it did stays
    /// done, and the invalidate is still issued before anything is freed.
    pub(crate) fn execute(mut self) -> Result<KVec<Done<'a>>> {
        let vmm = self.vmm;
        let mut st = self.st.take().ok_or(EINVAL)?;
        let only_upgrades = self.plans.iter().all(
            |p| matches!(p, Plan::Protect(m, Access::ReadWrite) if m.access() == Access::ReadOnly),
        );
        let mut flush = Flush {
            vmm,
            free: FreeList::default(),
            armed: true,
            change: if only_upgrades {
                Change::Upgrade
            } else {
                Change::Downgrade
            },
        };
        let mut free = FreeList::default();
        let mut cs = CommitStats::default();
        let sh = st.shadow.as_mut().ok_or(ENODEV)?;
        let plans = &self.plans;
        let wrote = vmm.hw.with_writer(&mut |w| {
            cs = write_all(vmm, sh, plans, w, &mut free)?;
            Ok(())
        });
        let s = &vmm.stats;
        s.entry_writes.fetch_add(cs.writes, Relaxed);
        s.tables_created.fetch_add(cs.tables_new, Relaxed);
        s.tables_freed.fetch_add(free.count, Relaxed);
        s.zero_writes_saved.fetch_add(cs.zero_saved, Relaxed);
        // Freed after the invalidate: `flush` drops the list when it is done.
        flush.free = free;
        let res = wrote.and_then(|()| flush.finish());
        let ok = res.is_ok();
        let n = self.settle(&mut st, ok);
        if !ok {
            // A failing GPU: no map or reserve of the batch outlives the failed call (best
            // effort: on a dead device this fails too, and the tables go with the space).
            if let Some(sh) = st.shadow.as_mut() {
                for (pieces, res, leaf) in self.undo.iter() {
                    let bound = Some(res.range.clone());
                    let _ = vmm.commit(sh, pieces, *leaf, bound, Change::Downgrade);
                }
            }
            s.failed.fetch_add(1, Relaxed);
        }
        s.maps.fetch_add(n.maps, Relaxed);
        s.unmaps.fetch_add(n.unmaps, Relaxed);
        s.protects.fetch_add(n.protects, Relaxed);
        s.batches.fetch_add(1, Relaxed);
        // CAST: an operation count fits in 64 bits.
        s.batch_ops.fetch_add(self.done.len() as u64, Relaxed);
        // The lock first: the handles of reserves taken back take it when dropped.
        drop(st);
        self.undo.clear();
        res?;
        Ok(core::mem::take(&mut self.done))
    }

    /// Turns each executed operation into its record and result (`ok`), or into what a failed
    /// batch takes back (kept in `undo`).
    fn settle(&mut self, st: &mut VmmState, ok: bool) -> OpCounts {
        let mut n = OpCounts::default();
        for p in core::mem::take(&mut self.plans).into_iter() {
            let d = match p {
                Plan::Map {
                    res,
                    mem,
                    va,
                    size,
                    access,
                    pieces,
                    node,
                    unmapped,
                } => {
                    if unmapped {
                        n.maps += 1;
                        n.unmaps += 1;
                        // The memory goes with the plan, after the invalidate.
                        drop(mem);
                        Done::Applied
                    } else if !ok {
                        let leaf = unmap_leaf(&res);
                        // Within the capacity reserved at prepare: no allocation.
                        let _ = self.undo.push((pieces, res, leaf), GFP_KERNEL);
                        Done::Applied
                    } else {
                        n.maps += 1;
                        let rec = MapRecord {
                            end: va + size,
                            pa: pieces.first().map_or(0, |p| p.pa),
                            page: pieces.iter().map(|p| p.page).max().unwrap_or(0),
                            access,
                            // CAST: a piece count fits in 32 bits (at most one per 4 KiB page).
                            pieces: pieces.len() as u32,
                        };
                        if let Some(node) = node {
                            st.mapped.insert(node.into_node(va, rec));
                        }
                        Done::Mapped(Mapping {
                            res,
                            _mem: mem,
                            va,
                            size,
                            pieces,
                            read_only: Atomic::new(access == Access::ReadOnly),
                            released: Atomic::new(false),
                        })
                    }
                }
                Plan::Unmap(m) => {
                    n.unmaps += 1;
                    let _ = st.mapped.remove(&m.va);
                    m.released.store(true, Relaxed);
                    Done::Applied
                }
                Plan::UnmapQueued(_) => Done::Applied,
                Plan::Protect(m, a) => {
                    n.protects += 1;
                    m.read_only.store(a == Access::ReadOnly, Relaxed);
                    if let Some(r) = st.mapped.get_mut(&m.va) {
                        r.access = a;
                    }
                    Done::Applied
                }
                Plan::Reserve {
                    res: Some(r),
                    pieces,
                } => {
                    if ok {
                        r.sparse.store(true, Relaxed);
                        Done::Reserved(Reservation(r))
                    } else {
                        // Its handle, dropped once the space is unlocked, gives the range back.
                        let _ = self.undo.push((pieces, r, Leaf::Zero), GFP_KERNEL);
                        Done::Applied
                    }
                }
                Plan::Reserve { res: None, .. } => Done::Applied,
                Plan::Release { res, .. } => {
                    res.sparse.store(false, Relaxed);
                    if let Some(v) = st.reserved.get_mut(&res.range.start) {
                        v.1 = false;
                    }
                    Done::Applied
                }
            };
            // Within the capacity reserved at prepare: no allocation.
            let _ = self.done.push(d, GFP_KERNEL);
        }
        n
    }
}

/// Operations of a batch by kind, for the address space's counters.
#[derive(Default)]
struct OpCounts {
    maps: u64,
    unmaps: u64,
    protects: u64,
}

impl Plan<'_, '_> {
    /// The leaves this operation writes and what it writes there (`plans` are the batch's, for
    /// an unmap of one of its maps).
    fn leaves<'p>(&'p self, plans: &'p [Self]) -> Option<(&'p [Piece], Leaf)> {
        match self {
            Plan::Map { pieces, access, .. } => Some((pieces, Leaf::Page(*access))),
            Plan::Unmap(m) => Some((&m.pieces, unmap_leaf(&m.res))),
            Plan::UnmapQueued(j) => match plans.get(*j) {
                Some(Plan::Map { pieces, res, .. }) => Some((pieces, unmap_leaf(res))),
                _ => None,
            },
            Plan::Protect(m, a) => Some((&m.pieces, Leaf::Page(*a))),
            Plan::Reserve { pieces, .. } => Some((pieces, Leaf::Sparse)),
            Plan::Release { pieces, .. } => Some((pieces, Leaf::Zero)),
        }
    }

    /// The pieces whose new tables this operation links.
    fn new_tables(&self) -> Option<&[Piece]> {
        match self {
            Plan::Map { pieces, .. }
            | Plan::Reserve { pieces, .. }
            | Plan::Release { pieces, .. } => Some(pieces),
            _ => None,
        }
    }

    /// The pieces this operation may leave tables empty under, and the reservation that bounds
    /// folding all-sparse tables into their parents.
    fn reclaims<'p>(&'p self, plans: &'p [Self]) -> Option<(&'p [Piece], Range<u64>)> {
        match self {
            Plan::Unmap(m) => Some((&m.pieces, bound_of(&m.res))),
            Plan::UnmapQueued(j) => match plans.get(*j) {
                Some(Plan::Map { pieces, res, .. }) => Some((pieces, bound_of(res))),
                _ => None,
            },
            Plan::Release { pieces, res } => Some((pieces, res.range.clone())),
            _ => None,
        }
    }
}

/// Writes a batch: every leaf in order (into VRAM where the table is linked, else into the
/// shadow of the new table), then each new table whole, once, with every entry the batch gave
/// it, before it is linked; then, after the last of those writes, reclaims the tables left
/// empty onto `free`, so that none of them is written to again.
fn write_all(
    vmm: &Vmm<'_>,
    sh: &mut Shadow,
    plans: &[Plan<'_, '_>],
    w: &mut dyn EntryWriter,
    free: &mut FreeList,
) -> Result<CommitStats> {
    let mut cs = CommitStats::default();
    let mut add = |s: CommitStats| {
        cs.writes += s.writes;
        cs.tables_new += s.tables_new;
        cs.zero_saved += s.zero_saved;
    };
    for (pieces, leaf) in plans.iter().filter_map(|p| p.leaves(plans)) {
        add(vmm.ops.write_leaves(sh, pieces, leaf, w)?);
    }
    for pieces in plans.iter().filter_map(|p| p.new_tables()) {
        add(vmm.ops.link_fresh(sh, span(pieces), w)?);
    }
    for (pieces, bound) in plans.iter().filter_map(|p| p.reclaims(plans)) {
        add(vmm.ops.reclaim(sh, span(pieces), bound, w, free)?);
    }
    Ok(cs)
}

impl Drop for Prepared<'_, '_> {
    fn drop(&mut self) {
        if self.st.is_some() {
            self.rollback();
        }
    }
}
