// SPDX-License-Identifier: GPL-2.0

//! One GPU virtual address space: reserve, map, change access, unmap.
//!
//! The API follows the CUDA virtual-memory calls (`cuMemAddressReserve`, `cuMemMap`,
//! `cuMemSetAccess`, `cuMemUnmap`) with RAII handles, so misuse cannot be expressed:
//!
//! - [`Vmm::reserve`] returns a [`Reservation`] of a virtual-address range (optionally at a fixed
//!   address, optionally sparse); the range is free again when the reservation and every mapping
//!   in it are gone.
//! - [`Reservation::map`] maps a [`VramAllocation`] (or a page-aligned part of one, whatever its
//!   buddy blocks) at an offset of the reservation and returns a [`Mapping`], which keeps the VRAM
//!   and the reservation alive and unmaps on drop. [`Mapping::set_access`] changes its access.
//!
//! Every operation prepares first (virtual addresses, shadow nodes, page-table memory: all that can
//! fail) and leaves nothing behind when that fails; then it writes the entries and invalidates the
//! TLB once for the address space. Page tables left empty by an unmap, and the VRAM of the mapping,
//! are released only after that invalidate completed ([`Flush`]).
//!
//! The virtual-address allocator is an [`RBTree`] of the reserved ranges, keyed by start: exact
//! sizes and any power-of-two alignment, fixed-address reservations checked against the two
//! neighbours, and first-fit placement. A second `GpuBuddy` over the address space was the
//! alternative; it rounds every reservation to a power of two (with alignments as large as a
//! mapping's largest page, a 1.5 GiB range would take 2 GiB of address space), which matters for
//! BAR1, whose address space is only as large as the BAR.

use core::ops::Range;

use kernel::sizes::SizeConstants;
use kernel::{
    fmt, new_mutex,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
};

pub(crate) mod batch;

use crate::mm::{
    pagetable::{
        Access,
        CommitStats,
        EntryWriter,
        FreeList,
        Leaf,
        PageTableOps,
        Piece,
        Shadow, //
    },
    ptpool::PtPool,
    tlb::Change,
    vram::VramAllocation,
};

/// The hardware an address space writes to: page-table entries and TLB invalidates.
pub(crate) trait PtHw: Send + Sync {
    /// Runs `f` with a writer of page-table entries (for PRAMIN: the window locked).
    ///
    /// # Errors
    ///
    /// What `f` returns.
    fn with_writer(&self, f: &mut dyn FnMut(&mut dyn EntryWriter) -> Result) -> Result;
    /// Invalidates the cached translations of the address space whose root is `pdb`, whose
    /// entries went through `change`, and waits.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` if the invalidate did not complete.
    fn invalidate(&self, pdb: u64, change: Change) -> Result;
    /// Logs `msg`, an error of an address space of this hardware, against its device.
    fn log_err(&self, msg: fmt::Arguments<'_>);
}

counters! {
    /// Counters of a [`Vmm`].
    pub(crate) struct VmmStats / VmmSnapshot {
        /// Map operations completed.
        maps,
        /// Unmap operations completed.
        unmaps,
        /// Access changes completed.
        protects,
        /// TLB invalidates issued.
        invalidates,
        /// Page-table entries (quadwords) written.
        entry_writes,
        /// Page tables created.
        tables_created,
        /// Page tables freed.
        tables_freed,
        /// Zeros not written to new tables whose memory was known to be zero.
        zero_writes_saved,
        /// Operations refused or rolled back.
        failed,
        /// Batches executed (a single map or access change is a batch of one).
        batches,
        /// Operations in those batches.
        batch_ops,
    }
}

/// A record of one live mapping, for debugfs.
#[derive(Clone, Copy)]
struct MapRecord {
    end: u64,
    pa: u64,
    page: u64,
    access: Access,
    pieces: u32,
}

struct VmmState {
    shadow: Option<Shadow>,
    /// Reserved ranges: start to (end, sparse).
    reserved: RBTree<u64, (u64, bool)>,
    /// Mapped ranges: start to record.
    mapped: RBTree<u64, MapRecord>,
}

/// The state of one address space that outlives no hardware: what debugfs shows.
#[pin_data]
pub(crate) struct Space {
    ops: &'static dyn PageTableOps,
    pool: Arc<PtPool>,
    va: Range<u64>,
    pdb: u64,
    name: &'static str,
    #[pin]
    state: Mutex<VmmState>,
    /// Set when the GPU goes away: unmaps from then on release memory without writing.
    dying: Atomic<u32>,
    /// Counters.
    pub(crate) stats: VmmStats,
}

/// The address spaces of one GPU, for debugfs.
#[pin_data]
pub(crate) struct Spaces {
    #[pin]
    list: Mutex<KVec<Arc<Space>>>,
}

impl Spaces {
    /// Creates an empty list.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self { list <- new_mutex!(KVec::new()) }),
            GFP_KERNEL,
        )
    }

    /// Marks every address space as going away with its GPU: what is still mapped is then
    /// released without page-table writes or invalidates (nothing translates through these
    /// spaces any more, and the VRAM is no longer the driver's), so that removing a GPU with
    /// live mappings costs no MMIO.
    pub(crate) fn retire_all(&self) {
        for s in self.list.lock().iter() {
            s.dying.store(1, Relaxed);
        }
    }

    /// The number of live address spaces.
    pub(crate) fn len(&self) -> usize {
        self.list.lock().len()
    }

    /// Calls `f` on every live address space.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Space) -> fmt::Result) -> fmt::Result {
        for s in self.list.lock().iter() {
            f(s)?;
        }
        Ok(())
    }
}

/// One GPU virtual address space.
///
/// # Invariants
///
/// `space` is in `spaces` from creation until drop.
pub(crate) struct Vmm<'a> {
    space: Arc<Space>,
    hw: Arc<dyn PtHw + 'a>,
    spaces: Arc<Spaces>,
}

impl core::ops::Deref for Vmm<'_> {
    type Target = Space;

    fn deref(&self) -> &Space {
        &self.space
    }
}

/// An invalidate that runs when the page-table edits of one operation are done, before what they
/// unlinked (tables, VRAM) is released.
struct Flush<'v, 'a> {
    vmm: &'v Vmm<'a>,
    free: FreeList,
    armed: bool,
    change: Change,
}

impl Flush<'_, '_> {
    fn finish(mut self) -> Result {
        self.armed = false;
        self.vmm.stats.invalidates.fetch_add(1, Relaxed);
        self.vmm.hw.invalidate(self.vmm.pdb, self.change)
        // `self.free` is dropped here, after the invalidate returned.
    }
}

impl Drop for Flush<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            // An error path after entries were written: still invalidate before freeing.
            self.vmm.stats.invalidates.fetch_add(1, Relaxed);
            let _ = self.vmm.hw.invalidate(self.vmm.pdb, Change::Downgrade);
        }
    }
}

impl<'a> Vmm<'a> {
    /// Creates an address space covering `va` with the walker `ops`, its tables from `pool`,
    /// written through `hw`. `huge` allows 512 MiB pages.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an empty or misaligned range; `ERANGE` for one beyond the virtual addresses
    /// of the format (its table indices would wrap onto lower addresses); `ENOMEM`/`ENOSPC`;
    /// errors of `hw`.
    pub(crate) fn new(
        name: &'static str,
        ops: &'static dyn PageTableOps,
        pool: Arc<PtPool>,
        hw: Arc<dyn PtHw + 'a>,
        spaces: Arc<Spaces>,
        va: Range<u64>,
        huge: bool,
    ) -> Result<Arc<Self>> {
        if va.start >= va.end || va.start % u64::SZ_4K != 0 || va.end % u64::SZ_4K != 0 {
            return Err(EINVAL);
        }
        if va.end > ops.va_limit() {
            return Err(ERANGE);
        }
        let mut shadow = None;
        hw.with_writer(&mut |w| {
            shadow = Some(ops.new_shadow(&pool, huge, w)?);
            Ok(())
        })?;
        let shadow = shadow.ok_or(EINVAL)?;
        let pdb = shadow.pdb();
        let space = Arc::pin_init(
            try_pin_init!(Space {
                ops,
                pool,
                va,
                pdb,
                name,
                state <- new_mutex!(VmmState {
                    shadow: Some(shadow),
                    reserved: RBTree::new(),
                    mapped: RBTree::new(),
                }),
                dying: Atomic::new(0),
                stats: VmmStats::new(),
            }),
            GFP_KERNEL,
        )?;
        spaces.list.lock().push(space.clone(), GFP_KERNEL)?;
        Ok(Arc::new(Self { space, hw, spaces }, GFP_KERNEL)?)
    }

    /// Invalidates the whole space in the TLBs its invalidates reach, for tables written
    /// before the space was bound (the BAR1 bind). Counted by the TLB, not among the space's
    /// operations (which count their own invalidates).
    ///
    /// # Errors
    ///
    /// Those of the invalidate ([`PtHw::invalidate`]).
    pub(crate) fn invalidate(&self) -> Result {
        self.hw.invalidate(self.pdb, Change::Downgrade)
    }

    /// Returns the number of page tables (the root included).
    pub(crate) fn tables(&self) -> u64 {
        let st = self.state.lock();
        st.shadow.as_ref().map_or(0, |s| self.ops.tables(s))
    }

    /// Translates `va` from the shadow.
    pub(crate) fn lookup(&self, va: u64) -> (crate::mm::pagetable::Entry, u64) {
        let st = self.state.lock();
        match st.shadow.as_ref() {
            Some(s) => self.ops.lookup(s, va),
            None => (crate::mm::pagetable::Entry::Invalid, 0),
        }
    }

    /// Finds room for `size` bytes aligned to `align` in `reserved`, or checks `at`.
    fn place(
        &self,
        reserved: &RBTree<u64, (u64, bool)>,
        size: u64,
        align: u64,
        at: Option<u64>,
    ) -> Result<u64> {
        let fits = |start: u64| -> bool {
            let Some(end) = start.checked_add(size) else {
                return false;
            };
            start >= self.va.start
                && end <= self.va.end
                && reserved.iter().all(|(s, (e, _))| end <= *s || start >= *e)
        };
        if let Some(a) = at {
            if a % align != 0 {
                return Err(EINVAL);
            }
            return if fits(a) { Ok(a) } else { Err(EEXIST) };
        }
        let up = |x: u64| x.checked_add(align - 1).map(|v| v & !(align - 1));
        let mut cursor = up(self.va.start).ok_or(ENOSPC)?;
        for (s, (e, _)) in reserved.iter() {
            if cursor.checked_add(size).is_some_and(|end| end <= *s) {
                break;
            }
            cursor = cursor.max(up(*e).ok_or(ENOSPC)?);
        }
        if fits(cursor) {
            Ok(cursor)
        } else {
            Err(ENOSPC)
        }
    }

    /// Reserves `size` bytes of virtual addresses aligned to `align` (a power of two, at least
    /// 4 KiB), at `at` if given. A sparse reservation reads zero and drops writes, without
    /// faulting, wherever nothing is mapped.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a zero or unaligned size or a bad alignment; `EEXIST` if `at` overlaps a
    /// reservation or is outside the space; `ENOSPC` if no room; `ENOMEM`; for sparse ones, the
    /// errors of the page-table update.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        size: u64,
        align: u64,
        at: Option<u64>,
        sparse: bool,
    ) -> Result<Reservation<'a>> {
        if sparse {
            // A batch of one: the same checks, writes, flush and invalidate.
            let mut b = self.batch();
            b.reserve_sparse(size, align, at)?;
            let mut done = b.prepare()?.execute()?;
            return done.pop().ok_or(EINVAL)?.reservation();
        }
        if size == 0 || size % u64::SZ_4K != 0 || !align.is_power_of_two() || align < u64::SZ_4K {
            self.stats.failed.fetch_add(1, Relaxed);
            return Err(EINVAL);
        }
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let mut st = self.state.lock();
        let start = self.place(&st.reserved, size, align, at).inspect_err(|_| {
            self.stats.failed.fetch_add(1, Relaxed);
        })?;
        let range = start..start + size;
        st.reserved
            .insert(node.into_node(start, (start + size, sparse)));
        drop(st);
        Ok(Reservation(Arc::new(
            ResInner {
                vmm: self.clone(),
                range,
                sparse: Atomic::new(sparse),
            },
            GFP_KERNEL,
        )?))
    }

    /// Commits `leaf` over `pieces`, invalidates, then frees what was unlinked.
    fn commit(
        &self,
        sh: &mut Shadow,
        pieces: &[Piece],
        leaf: Leaf,
        reclaim: Option<Range<u64>>,
        change: Change,
    ) -> Result<CommitStats> {
        let mut flush = Flush {
            vmm: self,
            free: FreeList::default(),
            armed: true,
            change,
        };
        let mut stats = CommitStats::default();
        let res = self.hw.with_writer(&mut |w| {
            stats = self
                .ops
                .commit(sh, pieces, leaf, reclaim.clone(), w, &mut flush.free)?;
            Ok(())
        });
        self.stats.entry_writes.fetch_add(stats.writes, Relaxed);
        self.stats
            .tables_created
            .fetch_add(stats.tables_new, Relaxed);
        self.stats.tables_freed.fetch_add(flush.free.count, Relaxed);
        self.stats
            .zero_writes_saved
            .fetch_add(stats.zero_saved, Relaxed);
        res?;
        flush.finish()?;
        Ok(stats)
    }
}

impl Space {
    /// Returns the virtual-address range of the space.
    pub(crate) fn range(&self) -> Range<u64> {
        self.va.clone()
    }

    /// Returns the VRAM address of the root directory.
    pub(crate) fn pdb(&self) -> u64 {
        self.pdb
    }

    /// Returns the name of the address space.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Writes a line per reservation and mapping.
    pub(crate) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        writeln!(
            f,
            "vmm {}: va {:#x}..{:#x}, format v{}, pdb {:#x}, {} tables",
            self.name,
            self.va.start,
            self.va.end,
            self.ops.version(),
            self.pdb,
            st.shadow.as_ref().map_or(0, |s| self.ops.tables(s))
        )?;
        for (s, (e, sparse)) in st.reserved.iter() {
            writeln!(
                f,
                "  reserved {:#x}..{:#x}{}",
                s,
                e,
                if *sparse { " sparse" } else { "" }
            )?;
        }
        for (s, m) in st.mapped.iter() {
            writeln!(
                f,
                "  mapped {:#x}..{:#x} -> pa {:#x} largest page {:#x} {} ({} runs)",
                s,
                m.end,
                m.pa,
                m.page,
                if m.access == Access::ReadOnly {
                    "ro"
                } else {
                    "rw"
                },
                m.pieces
            )?;
        }
        Ok(())
    }

    /// Writes the decoded page-table tree from the shadow.
    pub(crate) fn dump(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        match st.shadow.as_ref() {
            Some(s) => self.ops.dump(s, f),
            None => Ok(()),
        }
    }
}

impl Drop for Vmm<'_> {
    fn drop(&mut self) {
        // Every reservation and mapping holds the space, so none is left: only the root and
        // tables kept by sparse ranges remain. The space is bound nowhere; nothing is written.
        let mut st = self.space.state.lock();
        if let Some(sh) = st.shadow.take() {
            let mut free = FreeList::default();
            self.space.ops.teardown(sh, &mut free);
        }
        drop(st);
        let mut list = self.spaces.list.lock();
        if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, &self.space)) {
            let _ = list.remove(i);
        }
    }
}

struct ResInner<'a> {
    vmm: Arc<Vmm<'a>>,
    range: Range<u64>,
    /// Whether unmapped addresses are sparse; cleared by a batch's release.
    sparse: Atomic<bool>,
}

impl Drop for ResInner<'_> {
    fn drop(&mut self) {
        let vmm = self.vmm.clone();
        if self.sparse.load(Relaxed) && vmm.dying.load(Relaxed) == 0 {
            // Back to unmapped, by the current shape of the tables: a batch of one.
            let r = self.range.clone();
            let mut b = vmm.batch();
            let res = b
                .push(batch::Op::ReleaseSparse(&*self))
                .and_then(|_| b.prepare())
                .and_then(|p| p.execute());
            if let Err(e) = res {
                vmm.hw.log_err(fmt!(
                    "vmm {}: releasing sparse range {:#x}..{:#x} failed: {:?}\n",
                    vmm.name,
                    r.start,
                    r.end,
                    e
                ));
            }
        }
        let _ = vmm.state.lock().reserved.remove(&self.range.start);
    }
}

/// A reserved range of virtual addresses; free again when it and its mappings are dropped.
pub(crate) struct Reservation<'a>(Arc<ResInner<'a>>);

impl<'a> Reservation<'a> {
    /// Returns the reserved range.
    pub(crate) fn range(&self) -> Range<u64> {
        self.0.range.clone()
    }

    /// Maps `size` bytes of `mem` from byte `mem_offset` (in the order of its blocks) at
    /// `offset` into the reservation, with `access`, in the largest pages the alignment of
    /// virtual and physical addresses allows.
    ///
    /// # Errors
    ///
    /// `EINVAL` for zero or unaligned sizes and offsets; `ERANGE` if the range is outside the
    /// reservation or the allocation; `EXDEV` if `mem` is not of the VRAM the space's page
    /// tables come from (another GPU's); `EBUSY` if it overlaps a mapping; `ENOMEM`/`ENOSPC` if
    /// page-table memory is exhausted; errors of the hardware. On error nothing is changed.
    pub(crate) fn map(
        &self,
        offset: u64,
        mem: &Arc<VramAllocation>,
        mem_offset: u64,
        size: u64,
        access: Access,
    ) -> Result<Mapping<'a>> {
        // A batch of one: the same checks, writes, flush and invalidate.
        let mut b = self.0.vmm.batch();
        b.map(self, offset, mem, mem_offset, size, access)?;
        let mut done = b.prepare()?.execute()?;
        done.pop().ok_or(EINVAL)?.mapping()
    }
}

/// A live mapping of VRAM; unmapped (entries cleared, one invalidate, then the VRAM released)
/// when dropped.
pub(crate) struct Mapping<'a> {
    res: Arc<ResInner<'a>>,
    // Keeps the VRAM allocated until the unmap completed (dropped after `drop` ran).
    _mem: Arc<VramAllocation>,
    va: u64,
    size: u64,
    pieces: KVec<Piece>,
    /// The access: read-only or read-write (a batch changes it through a shared reference).
    read_only: Atomic<bool>,
    /// Unmapped by a batch: dropping it only releases the memory.
    released: Atomic<bool>,
}

impl Mapping<'_> {
    /// Returns the first virtual address.
    pub(crate) fn va(&self) -> u64 {
        self.va
    }

    /// Returns the runs of pages the mapping was split into.
    pub(crate) fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Returns the access of the mapping.
    pub(crate) fn access(&self) -> Access {
        if self.read_only.load(Relaxed) {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        }
    }

    /// Whether it is a mapping of `vmm`.
    pub(crate) fn is_of(&self, vmm: &Vmm<'_>) -> bool {
        core::ptr::addr_eq(&*self.res.vmm, vmm)
    }

    /// Whether a batch unmapped it (see [`batch::Batch::unmap`]).
    pub(crate) fn is_unmapped(&self) -> bool {
        self.released.load(Relaxed)
    }

    /// Changes the access of the whole mapping: every leaf rewritten, one invalidate.
    ///
    /// # Errors
    ///
    /// Errors of the hardware.
    pub(crate) fn set_access(&mut self, access: Access) -> Result {
        if access == self.access() {
            return Ok(());
        }
        // A batch of one. Read-only to read-write rewrites the same valid leaves with READ_ONLY
        // clear: nothing is taken away. Anything else may replace live entries (a map can fold
        // an emptied table into a large page or point a directory entry elsewhere): the safe
        // form.
        let vmm = self.res.vmm.clone();
        let mut b = vmm.batch();
        b.protect(self, access)?;
        b.prepare()?.execute()?;
        Ok(())
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        if self.released.load(Relaxed) {
            // A batch unmapped it, invalidated, and counted it.
            return;
        }
        let vmm = self.res.vmm.clone();
        if vmm.dying.load(Relaxed) == 0 {
            // A batch of one: the same writes, flush and invalidate as any unmap.
            let mut b = vmm.batch();
            let res = b
                .unmap(self)
                .and_then(|_| b.prepare())
                .and_then(|p| p.execute());
            if let Err(e) = &res {
                vmm.hw.log_err(fmt!(
                    "vmm {}: unmap of {:#x}..{:#x} failed: {:?}\n",
                    vmm.name,
                    self.va,
                    self.va + self.size,
                    e
                ));
            }
            if self.released.load(Relaxed) {
                // Done (on a failing GPU too: its record is gone and it is counted).
                return;
            }
        }
        // The GPU is gone, or there was no memory for the batch: as a single operation.
        let leaf = if self.res.sparse.load(Relaxed) {
            Leaf::Sparse
        } else {
            Leaf::Zero
        };
        let mut st = vmm.state.lock();
        let live = vmm.dying.load(Relaxed) == 0;
        if let (Some(sh), true) = (st.shadow.as_mut(), live) {
            if let Err(e) = vmm.commit(
                sh,
                &self.pieces,
                leaf,
                Some(self.res.range.clone()),
                Change::Downgrade,
            ) {
                vmm.hw.log_err(fmt!(
                    "vmm {}: unmap of {:#x}..{:#x} failed: {:?}\n",
                    vmm.name,
                    self.va,
                    self.va + self.size,
                    e
                ));
            }
        }
        let _ = st.mapped.remove(&self.va);
        drop(st);
        vmm.stats.unmaps.fetch_add(1, Relaxed);
        // `self.mem` is released after this, after the invalidate.
    }
}

/// An in-memory VRAM backing for the unit tests: entries written, invalidates counted.
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
pub(crate) mod membacking {
    use super::*;

    /// What never-written memory reads as (the model's poison).
    pub(crate) const POISON: u64 = 0xdead_beef_dead_beef;

    /// Page-table memory in kernel memory.
    #[pin_data]
    pub(crate) struct MemHw {
        #[pin]
        mem: Mutex<RBTree<u64, u64>>,
        /// Quadwords written.
        pub(crate) writes: Atomic<u64>,
        /// Invalidates of any address space.
        pub(crate) invalidates: Atomic<u64>,
        /// Fail every write from now on.
        pub(crate) dead: Atomic<u64>,
    }

    struct MemWriter<'m>(&'m MemHw, kernel::sync::MutexGuard<'m, RBTree<u64, u64>>);

    impl EntryWriter for MemWriter<'_> {
        fn write(&mut self, addr: u64, val: u64) -> Result {
            if self.0.dead.load(Relaxed) != 0 {
                return Err(EIO);
            }
            self.1.try_create_and_insert(addr, val, GFP_KERNEL)?;
            self.0.writes.fetch_add(1, Relaxed);
            Ok(())
        }
    }

    impl MemHw {
        /// Creates an empty backing.
        pub(crate) fn new() -> Result<Arc<Self>> {
            Arc::pin_init(
                pin_init!(Self {
                    mem <- new_mutex!(RBTree::new()),
                    writes: Atomic::new(0),
                    invalidates: Atomic::new(0),
                    dead: Atomic::new(0),
                }),
                GFP_KERNEL,
            )
        }

        /// Reads the quadword at `addr` (poison if never written).
        pub(crate) fn read(&self, addr: u64) -> u64 {
            self.mem.lock().get(&addr).copied().unwrap_or(POISON)
        }
    }

    impl PtHw for MemHw {
        fn with_writer(&self, f: &mut dyn FnMut(&mut dyn EntryWriter) -> Result) -> Result {
            let mut w = MemWriter(self, self.mem.lock());
            f(&mut w)
        }

        fn invalidate(&self, _pdb: u64, _change: Change) -> Result {
            self.invalidates.fetch_add(1, Relaxed);
            Ok(())
        }

        fn log_err(&self, msg: fmt::Arguments<'_>) {
            pr_err!("{}", msg);
        }
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_vmm)]
mod tests {
    use super::membacking::MemHw;
    use super::*;
    use crate::mm::{
        pagetable::{
            ver2::Ver2,
            ver3::Ver3,
            Entry,
            MmuFormat,
            VER2,
            VER3, //
        },
        vram::{
            AllocRequest,
            Placement,
            Vram, //
        },
    };

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// What the GPU would find at `va`, decoded from the backing memory (not the shadow): the
    /// leaf entry and the page size.
    fn translate<F: MmuFormat>(mem: &MemHw, pdb: u64, va: u64) -> (Entry, u64) {
        let mut table = pdb;
        for d in F::DIRS {
            let i = (va >> d.shift) & ((1 << d.bits) - 1);
            match F::decode_pde(mem.read(table + 8 * i)) {
                Entry::Table(t) => table = t,
                e => return (e, 1 << d.shift),
            }
        }
        let i = (va >> 21) & 0xff;
        let e = F::decode_dual(mem.read(table + 16 * i), mem.read(table + 16 * i + 8));
        let Entry::Dual { big, small } = e else {
            return (e, u64::SZ_2M);
        };
        if let Some(lpt) = big {
            let b = F::decode_pte(mem.read(lpt + 8 * ((va >> 16) & 31)));
            if b != Entry::Invalid {
                return (b, u64::SZ_64K);
            }
        }
        match small {
            Some(spt) => (
                F::decode_pte(mem.read(spt + 8 * ((va >> 12) & 511))),
                u64::SZ_4K,
            ),
            None => (Entry::Invalid, u64::SZ_4K),
        }
    }

    struct Env {
        mem: Arc<MemHw>,
        vram: Arc<Vram>,
        pool: Arc<PtPool>,
        vmm: Arc<Vmm<'static>>,
    }

    fn env(v3: bool, huge: bool) -> Result<Env> {
        let mem = MemHw::new()?;
        let vram = Vram::new(0..4 * GIB)?;
        let pool = PtPool::new(vram.clone())?;
        let ops: &'static dyn PageTableOps = if v3 { &VER3 } else { &VER2 };
        let bits = if v3 { 57 } else { 49 };
        let vmm = Vmm::new(
            "test",
            ops,
            pool.clone(),
            mem.clone(),
            Spaces::new()?,
            0..1u64 << bits,
            huge,
        )?;
        Ok(Env {
            mem,
            vram,
            pool,
            vmm,
        })
    }

    fn check_mapping<F: MmuFormat>(e: &Env, m: &Mapping<'_>, ro: bool) -> Result {
        // Every 4 KiB of the mapping translates to its physical address, read back from memory.
        let mut va = m.va();
        for p in m.pieces() {
            let mut off = 0;
            while off < p.len {
                let (entry, size) = translate::<F>(&e.mem, e.vmm.pdb(), va);
                ensure_eq!(size, p.page);
                ensure_eq!(
                    entry,
                    Entry::Page {
                        pa: p.pa + off,
                        read_only: ro
                    }
                );
                off += p.page;
                va += p.page;
            }
        }
        Ok(())
    }

    fn mapping_cases<F: MmuFormat>(v3: bool) -> Result {
        let e = env(v3, true)?;
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(GIB).contiguous().aligned(u64::SZ_512M))?,
            GFP_KERNEL,
        )?;
        let res = e.vmm.reserve(4 * GIB, u64::SZ_512M, None, false)?;
        // (reservation offset, allocation offset, size, expected page sizes in order)
        let cases: &[(u64, u64, u64, &[u64])] = &[
            (0, 0, u64::SZ_512M, &[u64::SZ_512M]),
            (u64::SZ_512M, 0, 4 * MIB, &[u64::SZ_2M]),
            (GIB, 64 * 1024, 256 * 1024, &[u64::SZ_64K]),
            (GIB + 8 * MIB, 4096, 12 * 1024, &[u64::SZ_4K]),
            // Small, big and small pages under one dual PDE.
            (
                GIB + 16 * MIB + 60 * 1024,
                60 * 1024,
                72 * 1024,
                &[u64::SZ_4K, u64::SZ_64K, u64::SZ_4K],
            ),
            // VA and PA aligned differently: only 4 KiB pages.
            (GIB + 32 * MIB + 4096, 8192, 64 * 1024, &[u64::SZ_4K]),
            // Up to 2 MiB alignment, then big pages.
            (
                GIB + 64 * MIB - 128 * 1024,
                2 * MIB - 128 * 1024,
                2 * MIB + 128 * 1024,
                &[u64::SZ_64K, u64::SZ_2M],
            ),
        ];
        let mut live = KVec::new();
        for &(off, moff, size, sizes) in cases {
            let inv = e.mem.invalidates.load(Relaxed);
            let m = res.map(off, &mem, moff, size, Access::ReadWrite)?;
            ensure_eq!(e.mem.invalidates.load(Relaxed) - inv, 1);
            let got: KVec<u64> = {
                let mut v = KVec::new();
                for p in m.pieces() {
                    v.push(p.page, GFP_KERNEL)?;
                }
                v
            };
            ensure_eq!(&got[..], sizes);
            check_mapping::<F>(&e, &m, false)?;
            live.push(m, GFP_KERNEL)?;
        }
        // Access change: every leaf rewritten, one invalidate.
        let inv = e.mem.invalidates.load(Relaxed);
        for m in live.iter_mut() {
            m.set_access(Access::ReadOnly)?;
        }
        ensure_eq!(e.mem.invalidates.load(Relaxed) - inv, live.len() as u64);
        for m in live.iter() {
            check_mapping::<F>(&e, m, true)?;
        }
        // Overlap with a live mapping, outside the reservation, unaligned: refused.
        ensure_eq!(
            res.map(GIB + 4096, &mem, 0, 4096, Access::ReadWrite).err(),
            Some(EBUSY)
        );
        ensure_eq!(
            res.map(4 * GIB - 4096, &mem, 0, 8192, Access::ReadWrite)
                .err(),
            Some(ERANGE)
        );
        ensure_eq!(
            res.map(100, &mem, 0, 4096, Access::ReadWrite).err(),
            Some(EINVAL)
        );
        ensure_eq!(
            res.map(3 * GIB, &mem, GIB - 4096, 8192, Access::ReadWrite)
                .err(),
            Some(ERANGE)
        );
        // Unmap everything: one invalidate each, every table but the root reclaimed.
        let inv = e.mem.invalidates.load(Relaxed);
        let n = live.len() as u64;
        live.clear();
        ensure_eq!(e.mem.invalidates.load(Relaxed) - inv, n);
        ensure_eq!(e.vmm.tables(), 1);
        ensure_eq!(e.pool.in_use(), 1);
        let (entry, _) = translate::<F>(&e.mem, e.vmm.pdb(), GIB + 8 * MIB);
        ensure_eq!(entry, Entry::Invalid);
        Ok(())
    }

    #[test]
    fn map_unmap_protect_v2() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        mapping_cases::<Ver2>(false)
    }

    #[test]
    fn map_unmap_protect_v3() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        mapping_cases::<Ver3>(true)
    }

    /// Turing has no 512 MiB pages: 2 MiB ones instead.
    #[test]
    fn no_huge_pages_on_turing() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let e = env(false, false)?;
        let mem = Arc::new(
            e.vram.alloc(
                &AllocRequest::new(u64::SZ_512M)
                    .contiguous()
                    .aligned(u64::SZ_512M),
            )?,
            GFP_KERNEL,
        )?;
        let res = e.vmm.reserve(u64::SZ_512M, u64::SZ_512M, None, false)?;
        let m = res.map(0, &mem, 0, u64::SZ_512M, Access::ReadWrite)?;
        ensure_eq!(m.pieces().len(), 1);
        ensure_eq!(m.pieces()[0].page, u64::SZ_2M);
        check_mapping::<Ver2>(&e, &m, false)
    }

    /// The minimum of the design: a 2 MiB page in a fresh space writes the root entry and three
    /// whole new tables; unmapped, one write per leaf and per freed table; mapped again, the
    /// known-zero tables are reused and only their entries written.
    #[test]
    fn minimum_writes() -> Result {
        let e = env(false, true)?;
        let mem = Arc::new(
            e.vram.alloc(
                &AllocRequest::new(u64::SZ_2M)
                    .contiguous()
                    .aligned(u64::SZ_2M),
            )?,
            GFP_KERNEL,
        )?;
        let res = e.vmm.reserve(u64::SZ_2M, u64::SZ_2M, Some(GIB), false)?;
        let w0 = e.mem.writes.load(Relaxed);
        let m = res.map(0, &mem, 0, u64::SZ_2M, Access::ReadWrite)?;
        ensure_eq!(e.mem.writes.load(Relaxed) - w0, 1 + 3 * 512);
        let w1 = e.mem.writes.load(Relaxed);
        drop(m);
        ensure_eq!(e.mem.writes.load(Relaxed) - w1, 1 + 3);
        let w2 = e.mem.writes.load(Relaxed);
        let m = res.map(0, &mem, 0, u64::SZ_2M, Access::ReadWrite)?;
        ensure_eq!(e.mem.writes.load(Relaxed) - w2, 4);
        check_mapping::<Ver2>(&e, &m, false)
    }

    /// A failure at any page-table allocation of a map leaves no table, shadow node, mapping
    /// or write behind; the same map then succeeds.
    #[test]
    fn prepare_failure_rolls_back() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        for v3 in [false, true] {
            let e = env(v3, true)?;
            let mem = Arc::new(
                e.vram.alloc(&AllocRequest::new(3 * 64 * 1024 + 8192))?,
                GFP_KERNEL,
            )?;
            let res = e.vmm.reserve(64 * MIB, u64::SZ_2M, Some(8 * GIB), false)?;
            let free0 = e.vram.stats().free;
            let inv0 = e.mem.invalidates.load(Relaxed);
            for n in 1..=8 {
                e.pool.fail_nth(n);
                let w = e.mem.writes.load(Relaxed);
                let r = res.map(60 * 1024, &mem, 0, mem.size(), Access::ReadWrite);
                e.pool.fail_nth(0);
                if let Ok(m) = r {
                    // Fewer allocations than `n`: the map needed them all.
                    ensure!(n > 4);
                    drop(m);
                    continue;
                }
                ensure_eq!(e.mem.writes.load(Relaxed), w);
                ensure_eq!(e.vmm.tables(), 1);
                ensure_eq!(e.pool.in_use(), 1);
                ensure_eq!(e.vram.stats().free, free0);
                // Nothing was written, so nothing was invalidated either.
                ensure_eq!(e.mem.invalidates.load(Relaxed), inv0);
            }
            let m = res.map(60 * 1024, &mem, 0, mem.size(), Access::ReadWrite)?;
            if v3 {
                check_mapping::<Ver3>(&e, &m, false)?;
            } else {
                check_mapping::<Ver2>(&e, &m, false)?;
            }
        }
        Ok(())
    }

    /// A sparse reservation whose table allocation fails leaves no range, table or write behind.
    #[test]
    fn sparse_reserve_failure_rolls_back() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let e = env(true, true)?;
        let size = u64::SZ_512M + 3 * u64::SZ_2M + 3 * u64::SZ_4K;
        let w0 = e.mem.writes.load(Relaxed);
        for n in 1..=4 {
            e.pool.fail_nth(n);
            let r = e.vmm.reserve(size, u64::SZ_512M, Some(2 * GIB), true);
            e.pool.fail_nth(0);
            let Err(err) = r else {
                // Needed fewer tables than `n`: they were all there.
                ensure!(n > 3);
                continue;
            };
            ensure_eq!(err, ENOMEM);
            ensure_eq!(e.vmm.tables(), 1);
            ensure_eq!(e.pool.in_use(), 1);
            ensure_eq!(e.mem.writes.load(Relaxed), w0);
        }
        // The range was not taken: the same fixed reservation succeeds.
        let r = e.vmm.reserve(size, u64::SZ_512M, Some(2 * GIB), true)?;
        ensure_eq!(
            translate::<Ver3>(&e.mem, e.vmm.pdb(), 2 * GIB).0,
            Entry::Sparse
        );
        drop(r);
        ensure_eq!(e.vmm.tables(), 1);
        Ok(())
    }

    /// Sparse ranges read as sparse everywhere nothing is mapped, return to sparse on unmap and
    /// to unmapped when released.
    #[test]
    fn sparse() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let e = env(true, true)?;
        let pdb = e.vmm.pdb();
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(4 * MIB).contiguous().aligned(u64::SZ_2M))?,
            GFP_KERNEL,
        )?;
        // 1 GiB + 6 MiB + 12 KiB: 512 MiB, 2 MiB, 64 KiB and 4 KiB sparse entries.
        let size = GIB + 6 * MIB + 12 * 1024;
        let res = e.vmm.reserve(size, u64::SZ_512M, Some(2 * GIB), true)?;
        let base = res.range().start;
        let probe = [0, u64::SZ_512M + 4096, GIB + 2 * MIB + 4096, size - 4096];
        for off in probe {
            ensure_eq!(translate::<Ver3>(&e.mem, pdb, base + off).0, Entry::Sparse);
        }
        let tables = e.vmm.tables();
        {
            // 4 KiB and 64 KiB pages inside sparse 512 MiB and 2 MiB entries.
            let a = res.map(4096, &mem, 0, 4096, Access::ReadWrite)?;
            let b = res.map(
                GIB + 64 * 1024,
                &mem,
                64 * 1024,
                64 * 1024,
                Access::ReadWrite,
            )?;
            let c = res.map(
                GIB + 4 * MIB,
                &mem,
                u64::SZ_2M,
                u64::SZ_2M,
                Access::ReadOnly,
            )?;
            check_mapping::<Ver3>(&e, &a, false)?;
            check_mapping::<Ver3>(&e, &b, false)?;
            check_mapping::<Ver3>(&e, &c, true)?;
            for off in [0, 8192, 60 * 1024, GIB, GIB + 128 * 1024, GIB + 2 * MIB] {
                ensure_eq!(translate::<Ver3>(&e.mem, pdb, base + off).0, Entry::Sparse);
            }
        }
        for off in Iterator::chain(probe.into_iter(), [4096, GIB + 64 * 1024, GIB + 4 * MIB]) {
            ensure_eq!(translate::<Ver3>(&e.mem, pdb, base + off).0, Entry::Sparse);
        }
        // Unmapped back to the coarse sparse entries: no table left from the mappings.
        ensure_eq!(e.vmm.tables(), tables);
        drop(res);
        for off in probe {
            ensure_eq!(translate::<Ver3>(&e.mem, pdb, base + off).0, Entry::Invalid);
        }
        ensure_eq!(e.vmm.tables(), 1);
        Ok(())
    }

    /// Page sizes follow physical alignment as well as virtual: every virtual offset from a
    /// 512 MiB boundary (0, 4 KiB, 64 KiB, 2 MiB) against every physical one, for sizes that
    /// fit each page size once and a little more, with and without 512 MiB pages. Each page is
    /// decoded from memory at its first and last 4 KiB: the size the test expects, a physical
    /// address aligned to it, the address the test computes.
    fn physical_alignment<F: MmuFormat>(v3: bool) -> Result {
        let offs = [0, u64::SZ_4K, u64::SZ_64K, u64::SZ_2M];
        let sizes = [
            u64::SZ_4K,
            u64::SZ_64K + u64::SZ_4K,
            u64::SZ_2M + u64::SZ_64K + u64::SZ_4K,
            u64::SZ_512M + u64::SZ_2M + u64::SZ_64K,
        ];
        for huge in [false, true] {
            let e = env(v3, huge)?;
            let mem = Arc::new(
                e.vram.alloc(
                    &AllocRequest::new(2 * u64::SZ_512M)
                        .contiguous()
                        .aligned(u64::SZ_512M),
                )?,
                GFP_KERNEL,
            )?;
            let res = e
                .vmm
                .reserve(8 * u64::SZ_512M, u64::SZ_512M, Some(8 * GIB), false)?;
            let mut n = 0u64;
            for &vo in offs.iter() {
                for &po in offs.iter() {
                    for &size in sizes.iter() {
                        // 512 MiB in 4 KiB pages: 131072 entries; the 4 KiB cases of the smaller
                        // sizes cover the same rule.
                        if size > u64::SZ_512M && (vo == u64::SZ_4K || po == u64::SZ_4K) {
                            continue;
                        }
                        let m = res.map(vo, &mem, po, size, Access::ReadWrite)?;
                        let (va0, pa0) = (res.range().start + vo, mem.start() + po);
                        let mut off = 0;
                        while off < size {
                            let page = crate::selftest::helpers::oracle_page(
                                va0 + off,
                                pa0 + off,
                                size - off,
                                huge,
                            );
                            for at in [off, off + page - u64::SZ_4K] {
                                let (entry, got) = translate::<F>(&e.mem, e.vmm.pdb(), va0 + at);
                                let Entry::Page { pa, read_only } = entry else {
                                    kernel::kunit::err(fmt!(
                                        "va +{:#x} pa +{:#x} size {:#x}: +{:#x} is {:?}\n",
                                        vo,
                                        po,
                                        size,
                                        at,
                                        entry
                                    ));
                                    return Err(EINVAL);
                                };
                                if got != page || pa % got != 0 || pa != pa0 + off || read_only {
                                    kernel::kunit::err(fmt!(
                                        "va +{:#x} pa +{:#x} size {:#x}: +{:#x} is a {:#x} page at \
                                         {:#x}, want a {:#x} page at {:#x}\n",
                                        vo,
                                        po,
                                        size,
                                        at,
                                        got,
                                        pa,
                                        page,
                                        pa0 + off
                                    ));
                                    return Err(EINVAL);
                                }
                            }
                            off += page;
                        }
                        drop(m);
                        n += 1;
                    }
                }
            }
            ensure!(n >= 56);
            ensure_eq!(e.vmm.tables(), 1);
        }
        Ok(())
    }

    #[test]
    fn physical_alignment_v2() -> Result {
        if crate::selftest::helpers::skip_if_quick()
            || crate::selftest::helpers::skip_if_debug_kernel()
        {
            return Ok(());
        }
        physical_alignment::<Ver2>(false)
    }

    #[test]
    fn physical_alignment_v3() -> Result {
        if crate::selftest::helpers::skip_if_quick()
            || crate::selftest::helpers::skip_if_debug_kernel()
        {
            return Ok(());
        }
        physical_alignment::<Ver3>(true)
    }

    /// Pages mapped inside sparse reservations, where the entry that covers them is a sparse
    /// big one: a 4 KiB page in a sparse 64 KiB big entry (at its first, a middle and its last
    /// 4 KiB, and two pages across two of them), a 64 KiB and a 4 KiB page in a sparse 2 MiB
    /// entry. Every 4 KiB of the reservation translates from memory, after the map (the page,
    /// sparse elsewhere), after the unmap (sparse everywhere) and after the release (unmapped,
    /// only the root left).
    fn sparse_holes<F: MmuFormat>(v3: bool) -> Result {
        let e = env(v3, true)?;
        let pdb = e.vmm.pdb();
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(4 * MIB).contiguous().aligned(u64::SZ_2M))?,
            GFP_KERNEL,
        )?;
        // (reservation size, offset of the map, its size)
        let cases = [
            (u64::SZ_2M + u64::SZ_64K, u64::SZ_2M, u64::SZ_4K),
            (
                u64::SZ_2M + u64::SZ_64K,
                u64::SZ_2M + 7 * u64::SZ_4K,
                u64::SZ_4K,
            ),
            (
                u64::SZ_2M + u64::SZ_64K,
                u64::SZ_2M + u64::SZ_64K - u64::SZ_4K,
                u64::SZ_4K,
            ),
            (
                u64::SZ_2M + 3 * u64::SZ_64K,
                u64::SZ_2M + 2 * u64::SZ_64K - u64::SZ_4K,
                2 * u64::SZ_4K,
            ),
            (2 * u64::SZ_2M, u64::SZ_64K, u64::SZ_64K),
            (2 * u64::SZ_2M, u64::SZ_2M + 3 * u64::SZ_4K, u64::SZ_4K),
            (2 * u64::SZ_2M, u64::SZ_2M - u64::SZ_64K, 2 * u64::SZ_64K),
        ];
        let check = |base: u64, size: u64, mapped: Range<u64>, pa: u64, gone: bool| -> Result {
            let mut off = 0;
            while off < size {
                let (entry, page) = translate::<F>(&e.mem, pdb, base + off);
                let want = if gone {
                    Entry::Invalid
                } else if mapped.contains(&off) {
                    Entry::Page {
                        pa: pa + (off - mapped.start) / page * page,
                        read_only: false,
                    }
                } else {
                    Entry::Sparse
                };
                if entry != want {
                    kernel::kunit::err(fmt!(
                        "va {:#x} (+{:#x}, map at +{:#x}..+{:#x}): {:?}, want {:?}\n",
                        base + off,
                        off,
                        mapped.start,
                        mapped.end,
                        entry,
                        want
                    ));
                    return Err(EINVAL);
                }
                off += u64::SZ_4K;
            }
            Ok(())
        };
        for (size, off, len) in cases {
            let res = e.vmm.reserve(size, u64::SZ_2M, Some(4 * GIB), true)?;
            let base = res.range().start;
            check(base, size, 0..0, 0, false)?;
            // Physically aligned as virtually: the page size is the largest the length allows.
            let moff = off % u64::SZ_2M;
            let m = res.map(off, &mem, moff, len, Access::ReadWrite)?;
            check(base, size, off..off + len, mem.start() + moff, false)?;
            drop(m);
            check(base, size, 0..0, 0, false)?;
            drop(res);
            check(base, size, 0..0, 0, true)?;
            ensure_eq!(e.vmm.tables(), 1);
        }
        Ok(())
    }

    #[test]
    fn sparse_holes_v2() -> Result {
        sparse_holes::<Ver2>(false)
    }

    #[test]
    fn sparse_holes_v3() -> Result {
        sparse_holes::<Ver3>(true)
    }

    /// Every free slot `pool` believes known zero reads zero in `mem` (never-written memory
    /// reads as poison).
    fn zero_slots_hold_zeros(mem: &MemHw, pool: &PtPool) -> Result {
        for slot in pool.zero_slots()?.iter() {
            for q in 0..512 {
                let v = mem.read(slot + 8 * q);
                if v != 0 {
                    kernel::kunit::err(fmt!(
                        "slot {:#x} is known zero but holds {:#x} at +{:#x}\n",
                        slot,
                        v,
                        8 * q
                    ));
                    return Err(EINVAL);
                }
            }
        }
        Ok(())
    }

    /// Page-table memory under churn: address spaces created and dropped with mappings at
    /// mixed sizes spread over many directories, sparse ranges, unmaps in varying order, so
    /// that the pool takes chunks, gives them back (with the dirty roots of dropped spaces in
    /// them) and takes them again. After every step each free slot the pool believes known
    /// zero reads zero in the backing memory, and every mapping translates from it.
    fn churn<F: MmuFormat>(v3: bool) -> Result {
        let mem = MemHw::new()?;
        let vram = Vram::new(0..4 * GIB)?;
        let pool = PtPool::new(vram.clone())?;
        let spaces = Spaces::new()?;
        let ops: &'static dyn PageTableOps = if v3 { &VER3 } else { &VER2 };
        let data = Arc::new(
            vram.alloc(&AllocRequest::new(8 * MIB).contiguous().aligned(u64::SZ_2M))?,
            GFP_KERNEL,
        )?;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64: a fixed, varied order.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut chunks_max = 0;
        for round in 0..6u64 {
            let mut vmms = KVec::new();
            for _ in 0..3 {
                vmms.push(
                    Vmm::new(
                        "churn",
                        ops,
                        pool.clone(),
                        mem.clone(),
                        spaces.clone(),
                        0..1 << 40,
                        false,
                    )?,
                    GFP_KERNEL,
                )?;
            }
            let mut maps = KVec::new();
            let mut keep = KVec::new();
            for (k, vmm) in vmms.iter().enumerate() {
                // CAST: three spaces.
                let k = k as u64;
                let res = vmm.reserve(512 * GIB, u64::SZ_2M, None, false)?;
                // Each map in its own 512 MiB: its own PD0 and page table.
                for i in 0..12 + 6 * round {
                    let size = [u64::SZ_4K, u64::SZ_64K, u64::SZ_2M, 3 * u64::SZ_4K]
                        [((i + k) % 4) as usize];
                    let off = i * u64::SZ_512M + (next() % 64) * u64::SZ_2M;
                    maps.push(
                        (
                            res.map(off, &data, u64::SZ_2M, size, Access::ReadWrite)?,
                            data.start() + u64::SZ_2M,
                        ),
                        GFP_KERNEL,
                    )?;
                }
                // A sparse range with a page in it.
                let sp = vmm.reserve(u64::SZ_2M + u64::SZ_64K, u64::SZ_2M, None, true)?;
                maps.push(
                    (
                        sp.map(
                            u64::SZ_2M + u64::SZ_4K,
                            &data,
                            0,
                            u64::SZ_4K,
                            Access::ReadOnly,
                        )?,
                        data.start(),
                    ),
                    GFP_KERNEL,
                )?;
                keep.push(sp, GFP_KERNEL)?;
                keep.push(res, GFP_KERNEL)?;
            }
            chunks_max = chunks_max.max(pool.footprint().0);
            zero_slots_hold_zeros(&mem, &pool)?;
            // Unmap in a varied order, checking what is left after each quarter.
            let mut n = 0;
            while !maps.is_empty() {
                // CAST: a vector length.
                let i = (next() % maps.len() as u64) as usize;
                let (m, pa) = maps.remove(i)?;
                let ro = m.access() == Access::ReadOnly;
                let (entry, _) = translate::<F>(&mem, m.res.vmm.pdb(), m.va());
                ensure_eq!(entry, Entry::Page { pa, read_only: ro });
                drop(m);
                n += 1;
                if n % 8 == 0 {
                    zero_slots_hold_zeros(&mem, &pool)?;
                }
            }
            // Spaces dropped in a varied order: their roots go back dirty.
            drop(keep);
            for v in vmms.iter() {
                ensure_eq!(v.tables(), 1);
            }
            while !vmms.is_empty() {
                // CAST: a vector length.
                let i = (next() % vmms.len() as u64) as usize;
                drop(vmms.remove(i)?);
            }
            zero_slots_hold_zeros(&mem, &pool)?;
        }
        // The churn really took, gave back and took chunks again.
        ensure!(chunks_max >= 3);
        ensure!(pool.stats.chunks_freed.load(Relaxed) >= 2);
        ensure!(pool.stats.chunks_allocated.load(Relaxed) > chunks_max);
        Ok(())
    }

    #[test]
    fn pool_churn_v2() -> Result {
        if crate::selftest::helpers::skip_if_quick()
            || crate::selftest::helpers::skip_if_debug_kernel()
        {
            return Ok(());
        }
        churn::<Ver2>(false)
    }

    #[test]
    fn pool_churn_v3() -> Result {
        if crate::selftest::helpers::skip_if_quick()
            || crate::selftest::helpers::skip_if_debug_kernel()
        {
            return Ok(());
        }
        churn::<Ver3>(true)
    }

    /// Reservations: placement, alignment, fixed addresses, exhaustion and bad requests.
    #[test]
    fn reservations() -> Result {
        let mem = MemHw::new()?;
        let vram = Vram::new(0..64 * MIB)?;
        let pool = PtPool::new(vram)?;
        let vmm = Vmm::new("t", &VER2, pool, mem, Spaces::new()?, 0..16 * MIB, true)?;
        let a = vmm.reserve(4096, 4096, None, false)?;
        let b = vmm.reserve(MIB, MIB, None, false)?;
        ensure_eq!(a.range(), 0..4096);
        ensure_eq!(b.range(), MIB..2 * MIB);
        ensure_eq!(
            vmm.reserve(4096, 4096, Some(MIB + 4096), false).err(),
            Some(EEXIST)
        );
        ensure_eq!(
            vmm.reserve(4096, 4096, Some(16 * MIB), false).err(),
            Some(EEXIST)
        );
        ensure_eq!(vmm.reserve(0, 4096, None, false).err(), Some(EINVAL));
        ensure_eq!(vmm.reserve(4096, 3 * 4096, None, false).err(), Some(EINVAL));
        ensure_eq!(vmm.reserve(1000, 4096, None, false).err(), Some(EINVAL));
        ensure_eq!(vmm.reserve(16 * MIB, 4096, None, false).err(), Some(ENOSPC));
        ensure_eq!(
            vmm.reserve(u64::MAX & !4095, 4096, None, false).err(),
            Some(ENOSPC)
        );
        let c = vmm.reserve(14 * MIB, 4096, None, false)?;
        ensure_eq!(c.range(), 2 * MIB..16 * MIB);
        drop(b);
        let d = vmm.reserve(MIB, 4096, Some(MIB), false)?;
        ensure_eq!(d.range(), MIB..2 * MIB);
        drop((a, c, d));
        let all = vmm.reserve(16 * MIB, 4096, None, false)?;
        ensure_eq!(all.range(), 0..16 * MIB);
        Ok(())
    }

    /// A map that spans several buddy blocks becomes one contiguous virtual range.
    #[test]
    fn several_blocks() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let e = env(false, true)?;
        // Data from a 2 MiB window of the VRAM, fragmented so that 1 MiB comes in 16 blocks.
        let win = Placement::Within(GIB..GIB + 2 * MIB);
        let mut hold = KVec::new();
        for _ in 0..32 {
            hold.push(
                e.vram
                    .alloc(&AllocRequest::new(64 * 1024).placed(win.clone()))?,
                GFP_KERNEL,
            )?;
        }
        for i in (0..32).rev().step_by(2) {
            let _ = hold.remove(i);
        }
        let mem = Arc::new(
            e.vram.alloc(&AllocRequest::new(MIB).placed(win))?,
            GFP_KERNEL,
        )?;
        ensure_eq!(mem.ranges().count(), 16);
        let res = e.vmm.reserve(MIB, MIB, None, false)?;
        let m = res.map(0, &mem, 0, MIB, Access::ReadWrite)?;
        // Virtual addresses in block order, each block as one 64 KiB page.
        ensure!(m.pieces().iter().all(|p| p.page == u64::SZ_64K));
        let mut va = m.va();
        for b in mem.ranges() {
            ensure_eq!(b.end - b.start, u64::SZ_64K);
            for off in [0, 4096, u64::SZ_64K - 4096] {
                let (entry, size) = translate::<Ver2>(&e.mem, e.vmm.pdb(), va + off);
                ensure_eq!(
                    entry,
                    Entry::Page {
                        pa: b.start,
                        read_only: false
                    }
                );
                ensure_eq!(size, u64::SZ_64K);
            }
            va += u64::SZ_64K;
        }
        Ok(())
    }

    /// A dead device during an unmap: the error is logged, the shadow stays consistent, and the
    /// memory is still released.
    #[test]
    fn dead_device() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let e = env(false, true)?;
        let mem = Arc::new(e.vram.alloc(&AllocRequest::new(8192))?, GFP_KERNEL)?;
        let res = e.vmm.reserve(MIB, MIB, None, false)?;
        let m = res.map(0, &mem, 0, 8192, Access::ReadWrite)?;
        e.mem.dead.store(1, Relaxed);
        ensure!(res.map(65536, &mem, 0, 4096, Access::ReadWrite).is_err());
        drop(m);
        e.mem.dead.store(0, Relaxed);
        drop(res);
        Ok(())
    }

    /// The bounds of [`Reservation::map`], in both formats: `offset + size` against the
    /// reservation and `mem_offset + size` against the allocation, each ending exactly at the
    /// end, a page or a byte past it, starting at the end, empty, and wrapping. A refused map
    /// writes no entry, invalidates nothing, leaves no table or mapping record, and the live
    /// mapping just past the reservation still translates to its own memory.
    fn map_bound_cases<F: MmuFormat>(v3: bool) -> Result {
        let e = env(v3, true)?;
        // Reservation of 128 KiB at 1 GiB, an allocation of 64 KiB: the two bounds differ.
        let (r, m) = (128 * 1024, u64::SZ_64K);
        let top = u64::MAX & !(u64::SZ_4K - 1);
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(m).contiguous().aligned(u64::SZ_64K))?,
            GFP_KERNEL,
        )?;
        let res = e.vmm.reserve(r, u64::SZ_64K, Some(GIB), false)?;
        // A neighbour mapped right after the reservation, to other memory.
        let other = Arc::new(
            e.vram.alloc(
                &AllocRequest::new(u64::SZ_64K)
                    .contiguous()
                    .aligned(u64::SZ_64K),
            )?,
            GFP_KERNEL,
        )?;
        let next = e
            .vmm
            .reserve(u64::SZ_64K, u64::SZ_64K, Some(GIB + r), false)?;
        let _next_map = next.map(0, &other, 0, u64::SZ_64K, Access::ReadWrite)?;
        let page = |va: u64| translate::<F>(&e.mem, e.vmm.pdb(), va).0;
        let neighbour = Entry::Page {
            pa: other.start(),
            read_only: false,
        };
        // (offset in the reservation, offset in the allocation, size, expected)
        let cases: &[(u64, u64, u64, Result)] = &[
            (r - u64::SZ_4K, 0, u64::SZ_4K, Ok(())),
            (r - m, 0, m, Ok(())),
            (r - u64::SZ_4K, 0, 2 * u64::SZ_4K, Err(ERANGE)),
            (r - u64::SZ_4K, 0, u64::SZ_4K + 1, Err(EINVAL)),
            (r - 1, 0, u64::SZ_4K, Err(EINVAL)),
            (r, 0, u64::SZ_4K, Err(ERANGE)),
            (r, 0, 0, Err(EINVAL)),
            (0, 0, 0, Err(EINVAL)),
            (top, 0, u64::SZ_4K, Err(ERANGE)),
            (0, m - u64::SZ_4K, u64::SZ_4K, Ok(())),
            (0, 0, m, Ok(())),
            (0, m - u64::SZ_4K, 2 * u64::SZ_4K, Err(ERANGE)),
            (0, m - u64::SZ_4K, u64::SZ_4K + 1, Err(EINVAL)),
            (0, m - 1, u64::SZ_4K, Err(EINVAL)),
            (0, m, u64::SZ_4K, Err(ERANGE)),
            (0, m, 0, Err(EINVAL)),
            (0, top, u64::SZ_4K, Err(ERANGE)),
            (0, 0, r, Err(ERANGE)),
        ];
        let tables = e.vmm.tables();
        for &(off, moff, size, want) in cases {
            let (w0, i0, f0) = (
                e.mem.writes.load(Relaxed),
                e.mem.invalidates.load(Relaxed),
                e.vmm.stats.failed.load(Relaxed),
            );
            let got = res.map(off, &mem, moff, size, Access::ReadWrite);
            ensure_eq!(
                (off, moff, size, got.as_ref().map(|_| ()).map_err(|e| *e)),
                (off, moff, size, want)
            );
            match got {
                Ok(map) => {
                    ensure_eq!(map.va(), GIB + off);
                    ensure_eq!(e.mem.invalidates.load(Relaxed) - i0, 1);
                    // Each 4 KiB translates into its page (a 64 KiB page gives its start).
                    for i in 0..size / u64::SZ_4K {
                        let (entry, psize) =
                            translate::<F>(&e.mem, e.vmm.pdb(), GIB + off + i * u64::SZ_4K);
                        let pa = (mem.start() + moff + i * u64::SZ_4K) & !(psize - 1);
                        ensure_eq!(
                            (off, moff, i, entry),
                            (
                                off,
                                moff,
                                i,
                                Entry::Page {
                                    pa,
                                    read_only: false
                                }
                            )
                        );
                    }
                    // Nothing of the reservation outside the mapping is mapped.
                    if off > 0 {
                        ensure_eq!((off, page(GIB + off - u64::SZ_4K)), (off, Entry::Invalid));
                    }
                    if off + size < r {
                        ensure_eq!((off, page(GIB + off + size)), (off, Entry::Invalid));
                    }
                }
                Err(_) => {
                    ensure_eq!(
                        (off, moff, size, e.mem.writes.load(Relaxed) - w0),
                        (off, moff, size, 0)
                    );
                    ensure_eq!(e.mem.invalidates.load(Relaxed), i0);
                    ensure_eq!(e.vmm.stats.failed.load(Relaxed) - f0, 1);
                    ensure_eq!(e.vmm.tables(), tables);
                    ensure_eq!((off, page(GIB)), (off, Entry::Invalid));
                    ensure_eq!((off, page(GIB + r - u64::SZ_4K)), (off, Entry::Invalid));
                }
            }
            ensure_eq!(
                (off, moff, size, page(GIB + r)),
                (off, moff, size, neighbour)
            );
            ensure_eq!(page(GIB + r + u64::SZ_64K - u64::SZ_4K), neighbour);
        }
        // No mapping record was left behind: the whole reservation maps, in two halves.
        let a = res.map(0, &mem, 0, m, Access::ReadWrite)?;
        let b = res.map(m, &mem, 0, m, Access::ReadWrite)?;
        drop((a, b));
        Ok(())
    }

    /// The bounds of [`Reservation::map`] (see `map_bound_cases`), v2 and v3.
    #[test]
    fn map_boundaries() -> Result {
        map_bound_cases::<Ver2>(false)?;
        map_bound_cases::<Ver3>(true)
    }
    /// Every 4 KiB of `va..va + len` decoded from memory: `want(va)` gives the entry expected.
    fn check_range<F: MmuFormat>(
        e: &Env,
        va: u64,
        len: u64,
        want: impl Fn(u64) -> Entry,
    ) -> Result {
        let mut v = va;
        while v < va + len {
            let (got, _) = translate::<F>(&e.mem, e.vmm.pdb(), v);
            ensure_eq!((v, got), (v, want(v)));
            v += u64::SZ_4K;
        }
        Ok(())
    }

    /// Batches at every page size: maps on several reservations and a sparse reserve in one
    /// batch, then access changes, unmaps and the sparse release in another. Each batch is one
    /// invalidate; every page is decoded from memory; at the end only the root is left.
    fn batch_cases<F: MmuFormat>(v3: bool) -> Result {
        let e = env(v3, true)?;
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(GIB).contiguous().aligned(u64::SZ_512M))?,
            GFP_KERNEL,
        )?;
        let r512 = e
            .vmm
            .reserve(u64::SZ_512M, u64::SZ_512M, Some(4 * GIB), false)?;
        let r2m = e.vmm.reserve(4 * MIB, u64::SZ_2M, Some(5 * GIB), false)?;
        let r64k = e
            .vmm
            .reserve(MIB, u64::SZ_64K, Some(5 * GIB + 64 * MIB), false)?;
        let r4k = e
            .vmm
            .reserve(MIB, u64::SZ_4K, Some(5 * GIB + 128 * MIB), false)?;
        let (w0, i0) = (e.mem.writes.load(Relaxed), e.mem.invalidates.load(Relaxed));
        let s0 = e.vmm.stats.snapshot();
        let mut b = e.vmm.batch();
        b.map(&r512, 0, &mem, 0, u64::SZ_512M, Access::ReadWrite)?;
        b.map(&r2m, 0, &mem, 0, 4 * MIB, Access::ReadWrite)?;
        b.map(&r64k, 0, &mem, u64::SZ_64K, 256 * 1024, Access::ReadOnly)?;
        // Two maps in one reservation: 4 KiB pages, one at its first page, one at its last.
        b.map(&r4k, 0, &mem, u64::SZ_4K, 3 * u64::SZ_4K, Access::ReadWrite)?;
        b.map(
            &r4k,
            MIB - u64::SZ_4K,
            &mem,
            0,
            u64::SZ_4K,
            Access::ReadWrite,
        )?;
        b.reserve_sparse(2 * MIB + u64::SZ_64K, u64::SZ_2M, Some(6 * GIB))?;
        ensure!(!b.is_empty() && b.len() == 6);
        let mut done = b.prepare()?.execute()?;
        ensure_eq!(e.mem.invalidates.load(Relaxed) - i0, 1);
        let s1 = e.vmm.stats.snapshot() - s0;
        ensure_eq!((s1.batches, s1.batch_ops, s1.maps), (1, 6, 5));
        ensure_eq!(s1.invalidates, 1);
        ensure_eq!(s1.entry_writes, e.mem.writes.load(Relaxed) - w0);
        let sparse = done.pop().ok_or(EINVAL)?.reservation()?;
        let mut maps = KVec::new();
        for d in done {
            maps.push(d.mapping()?, GFP_KERNEL)?;
        }
        let pages: [u64; 5] = [
            u64::SZ_512M,
            u64::SZ_2M,
            u64::SZ_64K,
            u64::SZ_4K,
            u64::SZ_4K,
        ];
        for (m, page) in maps.iter().zip(pages) {
            ensure!(m.pieces().iter().all(|p| p.page == page));
            check_mapping::<F>(&e, m, m.access() == Access::ReadOnly)?;
        }
        ensure_eq!(sparse.range(), 6 * GIB..6 * GIB + 2 * MIB + u64::SZ_64K);
        check_range::<F>(&e, 6 * GIB, 2 * MIB + u64::SZ_64K, |_| Entry::Sparse)?;
        // Between the two 4 KiB maps: nothing.
        check_range::<F>(&e, 5 * GIB + 128 * MIB + 3 * u64::SZ_4K, u64::SZ_4K, |_| {
            Entry::Invalid
        })?;

        // Protect two, unmap the rest, release the sparse range: one invalidate.
        let i1 = e.mem.invalidates.load(Relaxed);
        let mut b = e.vmm.batch();
        b.protect(&maps[0], Access::ReadOnly)?;
        b.protect(&maps[2], Access::ReadWrite)?;
        b.unmap(&maps[1])?;
        b.unmap(&maps[3])?;
        b.unmap(&maps[4])?;
        b.release_sparse(&sparse)?;
        b.prepare()?.execute()?;
        ensure_eq!(e.mem.invalidates.load(Relaxed) - i1, 1);
        check_mapping::<F>(&e, &maps[0], true)?;
        check_mapping::<F>(&e, &maps[2], false)?;
        ensure!(maps[1].is_unmapped() && maps[3].is_unmapped() && maps[4].is_unmapped());
        check_range::<F>(&e, 5 * GIB, 4 * MIB, |_| Entry::Invalid)?;
        check_range::<F>(&e, 5 * GIB + 128 * MIB, MIB, |_| Entry::Invalid)?;
        check_range::<F>(&e, 6 * GIB, 2 * MIB + u64::SZ_64K, |_| Entry::Invalid)?;
        // The unmapped handles drop with no write and no invalidate.
        let (w2, i2) = (e.mem.writes.load(Relaxed), e.mem.invalidates.load(Relaxed));
        let m4 = maps.pop().ok_or(EINVAL)?;
        let m3 = maps.pop().ok_or(EINVAL)?;
        drop((m3, m4, sparse));
        ensure_eq!(
            (e.mem.writes.load(Relaxed), e.mem.invalidates.load(Relaxed)),
            (w2, i2)
        );
        // Unmapped twice, or changed once unmapped: refused.
        let mut b = e.vmm.batch();
        b.unmap(&maps[1])?;
        ensure_eq!(b.prepare().err(), Some(EINVAL));
        drop(maps);
        drop((r512, r2m, r64k, r4k));
        ensure_eq!(e.vmm.tables(), 1);
        Ok(())
    }

    /// Batches at every page size, v2.
    #[test]
    fn batch_pages_v2() -> Result {
        batch_cases::<Ver2>(false)
    }

    /// Batches at every page size, v3.
    #[test]
    fn batch_pages_v3() -> Result {
        batch_cases::<Ver3>(true)
    }

    /// A failure injected at every page-table allocation of a batch refuses the whole batch:
    /// no write, no invalidate, no table, no VA range, no VRAM kept; the batch that needs no
    /// failure then goes through.
    #[test]
    fn batch_failure_rolls_back() -> Result {
        for v3 in [false, true] {
            let e = env(v3, true)?;
            let mem = Arc::new(e.vram.alloc(&AllocRequest::new(4 * MIB))?, GFP_KERNEL)?;
            let ra = e.vmm.reserve(64 * MIB, u64::SZ_2M, Some(8 * GIB), false)?;
            let rb = e.vmm.reserve(64 * MIB, u64::SZ_2M, Some(16 * GIB), false)?;
            let live = ra.map(32 * MIB, &mem, 0, u64::SZ_64K, Access::ReadWrite)?;
            let free0 = e.vram.stats().free;
            let (t0, u0) = (e.vmm.tables(), e.pool.in_use());
            let inv0 = e.mem.invalidates.load(Relaxed);
            let mut n = 1;
            let done = loop {
                let mut b = e.vmm.batch();
                b.map(
                    &ra,
                    60 * 1024,
                    &mem,
                    0,
                    3 * u64::SZ_64K + 8192,
                    Access::ReadWrite,
                )?;
                b.map(&rb, 0, &mem, 0, 4 * MIB, Access::ReadWrite)?;
                b.unmap(&live)?;
                b.reserve_sparse(u64::SZ_2M + u64::SZ_4K, u64::SZ_2M, Some(32 * GIB))?;
                b.map(&rb, 8 * MIB + 4096, &mem, 4096, 8192, Access::ReadOnly)?;
                e.pool.fail_nth(n);
                let w = e.mem.writes.load(Relaxed);
                let r = b.prepare();
                e.pool.fail_nth(0);
                match r {
                    Ok(p) => break p.execute()?,
                    Err(err) => {
                        ensure_eq!(err, ENOMEM);
                        ensure_eq!(e.mem.writes.load(Relaxed), w);
                        ensure_eq!(e.mem.invalidates.load(Relaxed), inv0);
                        ensure_eq!((e.vmm.tables(), e.pool.in_use()), (t0, u0));
                        ensure_eq!(e.vram.stats().free, free0);
                        ensure!(!live.is_unmapped());
                        // The sparse range was given back: it can be reserved again.
                        drop(
                            e.vmm
                                .reserve(u64::SZ_4K, u64::SZ_4K, Some(32 * GIB), false)?,
                        );
                    }
                }
                n += 1;
                ensure!(n < 64);
            };
            // Every allocation of the batch failed once before it went through.
            ensure!(n > 5);
            ensure_eq!(e.mem.invalidates.load(Relaxed) - inv0, 1);
            ensure!(live.is_unmapped());
            drop(done);
            drop(live);
            drop((ra, rb));
            ensure_eq!(e.vmm.tables(), 1);
        }
        Ok(())
    }

    /// Maps and unmaps that depend on each other in one batch: a map unmapped again by the same
    /// batch, and a live mapping replaced by another one at the same addresses.
    fn batch_dependent_cases<F: MmuFormat>(v3: bool) -> Result {
        let e = env(v3, true)?;
        let mem = Arc::new(
            e.vram
                .alloc(&AllocRequest::new(8 * MIB).contiguous().aligned(u64::SZ_2M))?,
            GFP_KERNEL,
        )?;
        let res = e.vmm.reserve(64 * MIB, u64::SZ_2M, Some(GIB), false)?;
        let old = res.map(0, &mem, u64::SZ_4K, 16 * u64::SZ_4K, Access::ReadWrite)?;
        let t0 = e.vmm.tables();
        let i0 = e.mem.invalidates.load(Relaxed);
        let mut b = e.vmm.batch();
        // Mapped and unmapped again: 4 KiB pages in a table of their own, which goes too.
        let gone = b.map(&res, 32 * MIB + 4096, &mem, 4096, 8192, Access::ReadWrite)?;
        b.unmap_queued(gone)?;
        // The live mapping replaced by a 64 KiB one at the same address.
        b.unmap(&old)?;
        b.map(&res, 0, &mem, 0, u64::SZ_64K, Access::ReadOnly)?;
        // An overlap with the mapping the batch just made is refused... in another batch.
        let mut done = b.prepare()?.execute()?;
        ensure_eq!(e.mem.invalidates.load(Relaxed) - i0, 1);
        let new = done.pop().ok_or(EINVAL)?.mapping()?;
        ensure_eq!(new.pieces()[0].page, u64::SZ_64K);
        check_mapping::<F>(&e, &new, true)?;
        check_range::<F>(&e, 32 * MIB, u64::SZ_2M, |_| Entry::Invalid)?;
        // The old 4 KiB table is gone, and so is the one the batch made and unmapped.
        ensure!(e.vmm.tables() <= t0);
        let mut b = e.vmm.batch();
        b.map(&res, u64::SZ_4K, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        ensure_eq!(b.prepare().err(), Some(EBUSY));
        // Unmapping an index that is not an earlier map, or twice: refused.
        let mut b = e.vmm.batch();
        let m = b.map(&res, 4 * MIB, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        b.unmap_queued(m)?;
        b.unmap_queued(m)?;
        ensure_eq!(b.prepare().err(), Some(EINVAL));
        let mut b = e.vmm.batch();
        b.unmap_queued(0)?;
        ensure_eq!(b.prepare().err(), Some(EINVAL));
        drop(new);
        drop(old);
        drop(res);
        ensure_eq!(e.vmm.tables(), 1);
        Ok(())
    }

    /// Dependent operations in one batch, v2 and v3.
    #[test]
    fn batch_dependent() -> Result {
        batch_dependent_cases::<Ver2>(false)?;
        batch_dependent_cases::<Ver3>(true)
    }

    /// Bad input anywhere in a batch refuses all of it, with the error of that operation:
    /// nothing written, nothing invalidated, the good operations not done.
    #[test]
    fn batch_bad_input() -> Result {
        let e = env(false, true)?;
        let other = env(false, true)?;
        let mem = Arc::new(e.vram.alloc(&AllocRequest::new(MIB))?, GFP_KERNEL)?;
        let res = e.vmm.reserve(4 * MIB, u64::SZ_2M, Some(GIB), false)?;
        let plain = e.vmm.reserve(MIB, u64::SZ_2M, Some(2 * GIB), false)?;
        let sp = e.vmm.reserve(MIB, u64::SZ_2M, Some(3 * GIB), true)?;
        let live = res.map(2 * MIB, &mem, 0, u64::SZ_64K, Access::ReadWrite)?;
        let in_sparse = sp.map(0, &mem, 0, u64::SZ_4K, Access::ReadWrite)?;
        let foreign = other.vmm.reserve(MIB, u64::SZ_2M, None, false)?;
        let omem = Arc::new(other.vram.alloc(&AllocRequest::new(MIB))?, GFP_KERNEL)?;
        let elsewhere = foreign.map(0, &omem, 0, u64::SZ_4K, Access::ReadWrite)?;
        let tables = e.vmm.tables();
        let rw = Access::ReadWrite;
        let cases = [
            EINVAL, EINVAL, ERANGE, ERANGE, EXDEV, EINVAL, EBUSY, EBUSY, EINVAL, EINVAL, EINVAL,
            EINVAL, EINVAL, EEXIST, EBUSY,
        ];
        for (i, want) in cases.into_iter().enumerate() {
            let (w0, i0, f0) = (
                e.mem.writes.load(Relaxed),
                e.mem.invalidates.load(Relaxed),
                e.vmm.stats.failed.load(Relaxed),
            );
            let mut b = e.vmm.batch();
            // A good operation first, a good one after.
            b.map(&res, 0, &mem, 0, u64::SZ_64K, rw)?;
            match i {
                0 => b.map(&res, 100, &mem, 0, u64::SZ_4K, rw)?,
                1 => b.map(&res, 0, &mem, 0, 0, rw)?,
                2 => b.map(&res, 4 * MIB, &mem, 0, u64::SZ_4K, rw)?,
                3 => b.map(&res, 0, &mem, MIB, u64::SZ_4K, rw)?,
                4 => b.map(&res, MIB, &omem, 0, u64::SZ_4K, rw)?,
                5 => b.map(&foreign, 0, &mem, 0, u64::SZ_4K, rw)?,
                // Overlaps: a live mapping, and the batch's own first map.
                6 => b.map(&res, 2 * MIB, &mem, 0, u64::SZ_4K, rw)?,
                7 => b.map(&res, u64::SZ_4K, &mem, 0, u64::SZ_4K, rw)?,
                8 => b.unmap(&elsewhere)?,
                9 => b.protect(&elsewhere, Access::ReadOnly)?,
                10 => b.unmap_queued(7)?,
                11 => b.release_sparse(&plain)?,
                12 => b.reserve_sparse(100, u64::SZ_4K, None)?,
                13 => b.reserve_sparse(u64::SZ_4K, u64::SZ_4K, Some(GIB))?,
                _ => b.release_sparse(&sp)?,
            };
            b.map(&res, 3 * MIB, &mem, 0, u64::SZ_4K, rw)?;
            let got = b.prepare().map(|_| ());
            ensure_eq!((i, got), (i, Err(want)));
            ensure_eq!(
                (
                    i,
                    e.mem.writes.load(Relaxed),
                    e.mem.invalidates.load(Relaxed)
                ),
                (i, w0, i0)
            );
            ensure_eq!(e.vmm.stats.failed.load(Relaxed) - f0, 1);
            ensure_eq!(e.vmm.tables(), tables);
        }
        // The good maps alone go through: nothing of the refused batches was kept.
        let mut b = e.vmm.batch();
        b.map(&res, 0, &mem, 0, u64::SZ_64K, rw)?;
        b.map(&res, 3 * MIB, &mem, 0, u64::SZ_4K, rw)?;
        let done = b.prepare()?.execute()?;
        drop((done, live, in_sparse, elsewhere));
        Ok(())
    }
}
