// SPDX-License-Identifier: GPL-2.0

//! Usable video memory, handed out by the kernel's GPU buddy allocator.
//!
//! [`Vram`] manages one range of usable VRAM (as laid out by [`crate::fb::FbLayout`]) with a
//! [`GpuBuddy`] whose base offset is the start of the range and whose chunk is 4 KiB, so nothing
//! outside the range (in particular no firmware-reserved memory) can ever be handed out.
//! Allocations are [`VramAllocation`] handles that free their blocks when dropped.
//!
//! The Rust `GpuBuddy` frees every block as *dirty* (it never passes `GPU_BUDDY_CLEARED`), so all
//! free blocks share one clear state and buddies always merge on free: the clear/dirty merge
//! barrier of the C allocator (buddies only merge when both are clear or both dirty) never splits
//! the free space here. See `Documentation/gpu/nova-mm/vram.rst`.

use core::ops::Range;

use kernel::{
    gpu::buddy::{
        AllocatedBlocks,
        GpuBuddy,
        GpuBuddyAllocFlag,
        GpuBuddyAllocFlags,
        GpuBuddyAllocMode,
        GpuBuddyParams, //
    },
    new_mutex,
    prelude::*,
    ptr::Alignment,
    rbtree::RBTree,
    sizes::SZ_4K,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
};

use crate::mm::clear::ClearTracker;
pub(crate) use crate::mm::clear::CHUNK;

/// Where an allocation may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Anywhere (the buddy allocator prefers the highest free block).
    Any,
    /// From the top of VRAM down.
    TopDown,
    /// Within this range of VRAM addresses.
    Within(Range<u64>),
}

/// Whether an allocation must hold zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    /// Anything (an ordinary allocation, which avoids memory known to be zero where it can).
    No,
    /// Memory known to be zero if there is some (no zeroing otherwise): the allocation says
    /// which it got ([`VramAllocation::is_zeroed`]).
    Preferred,
    /// Zeros: from memory known to be zero, or zeroed by the caller through PRAMIN when
    /// [`VramAllocation::is_zeroed`] says it is not ([`crate::mm::GpuMm::alloc_zeroed`]).
    Required,
}

/// An allocation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllocRequest {
    /// Size in bytes, a multiple of 4 KiB.
    pub(crate) size: u64,
    /// Alignment (and minimum block size) in bytes: a power of two, at least 4 KiB.
    pub(crate) align: u64,
    /// Whether the allocation must be one physically contiguous range.
    pub(crate) contiguous: bool,
    /// Where it may come from.
    pub(crate) placement: Placement,
    /// Whether it must be zero.
    pub(crate) zero: Zero,
}

impl AllocRequest {
    /// A request for `size` bytes, 4 KiB aligned, not necessarily contiguous, anywhere.
    pub(crate) fn new(size: u64) -> Self {
        Self {
            size,
            align: CHUNK,
            contiguous: false,
            placement: Placement::Any,
            zero: Zero::No,
        }
    }

    /// Asks for zeroed memory.
    pub(crate) fn zeroed(mut self, zero: Zero) -> Self {
        self.zero = zero;
        self
    }

    /// Requires the allocation to be contiguous.
    pub(crate) fn contiguous(mut self) -> Self {
        self.contiguous = true;
        self
    }

    /// Requires alignment `align`.
    pub(crate) fn aligned(mut self, align: u64) -> Self {
        self.align = align;
        self
    }

    /// Sets where the allocation comes from.
    pub(crate) fn placed(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }
}

/// Accounting of a [`Vram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VramStats {
    /// Bytes managed.
    pub(crate) total: u64,
    /// Bytes free.
    pub(crate) free: u64,
    /// Largest free contiguous range, in bytes.
    pub(crate) largest_free: u64,
    /// Live allocations.
    pub(crate) allocations: u64,
    /// Free bytes known to be zero.
    pub(crate) cleared: u64,
    /// Extents of free memory known to be zero.
    pub(crate) cleared_extents: u64,
}

counters! {
    /// Counters of the clear tracking of a [`Vram`].
    pub(crate) struct ClearStats / ClearSnapshot {
        /// Zeroed requests served from memory known to be zero.
        zeroed_from_cleared,
        /// Zeroed requests that got memory not known to be zero.
        zeroed_not_from_cleared,
        /// Bytes known to be zero that ordinary allocations took anyway.
        cleared_taken_by_ordinary,
        /// Bytes recorded as zero when freed.
        freed_as_cleared,
    }
}

/// The usable VRAM of one GPU.
///
/// # Invariants
///
/// `blocks` holds exactly the blocks of the live [`VramAllocation`]s of this `Vram`, keyed by
/// start address, with their end address as value. The buddy allocator covers `0..range.end`,
/// so its offsets are VRAM addresses and its alignments physical ones; `head`, when present,
/// holds `0..range.start` for the life of the `Vram`, so nothing below the range is handed out.
#[pin_data]
pub(crate) struct Vram {
    /// Free memory known to be zero (taken first when both are held: before `blocks`).
    #[pin]
    cleared: Mutex<ClearTracker>,
    /// Whether zeroed requests use `cleared` (off only to measure the difference).
    tracking: Atomic<u32>,
    /// Clear-tracking counters.
    pub(crate) clear_stats: ClearStats,
    buddy: GpuBuddy,
    head: Option<Pin<KBox<AllocatedBlocks>>>,
    range: Range<u64>,
    #[pin]
    blocks: Mutex<RBTree<u64, u64>>,
    #[pin]
    allocations: Mutex<u64>,
}

impl Vram {
    /// Creates the allocator of the usable VRAM `range`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `range` is empty or not 4 KiB aligned; `ENOMEM`.
    pub(crate) fn new(range: Range<u64>) -> Result<Arc<Self>> {
        if range.start >= range.end || range.start % CHUNK != 0 || range.end % CHUNK != 0 {
            return Err(EINVAL);
        }
        // The allocator starts at address 0, so that an aligned block is aligned in VRAM (the
        // page-table layer maps 2 MiB and 512 MiB pages only at physically aligned addresses);
        // what lies below the usable range is taken once, here, and never freed.
        let buddy = GpuBuddy::new(GpuBuddyParams {
            base_offset: 0,
            size: range.end,
            chunk_size: Alignment::new::<SZ_4K>(),
        })?;
        let head = if range.start > 0 {
            Some(KBox::pin_init(
                buddy.alloc_blocks(
                    GpuBuddyAllocMode::Range(0..range.start),
                    range.start,
                    Alignment::new::<SZ_4K>(),
                    GpuBuddyAllocFlags::default(),
                ),
                GFP_KERNEL,
            )?)
        } else {
            None
        };
        Arc::pin_init(
            pin_init!(Self {
                cleared <- new_mutex!(ClearTracker::new()),
                tracking: Atomic::new(1),
                clear_stats: ClearStats::new(),
                buddy,
                head,
                range,
                blocks <- new_mutex!(RBTree::new()),
                allocations <- new_mutex!(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Turns the use of memory known to be zero for zeroed requests on or off (the benchmarks
    /// measure both); what is known is kept either way.
    pub(crate) fn set_tracking(&self, on: bool) {
        self.tracking.store(u32::from(on), Relaxed);
    }

    /// Returns the VRAM range managed.
    pub(crate) fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Returns the accounting: total, free, largest free range, live allocations.
    pub(crate) fn stats(&self) -> VramStats {
        let blocks = self.blocks.lock();
        let mut largest = 0;
        let mut cursor = self.range.start;
        for (&start, &end) in blocks.iter() {
            largest = largest.max(start.saturating_sub(cursor));
            cursor = end;
        }
        largest = largest.max(self.range.end.saturating_sub(cursor));
        drop(blocks);
        let (cleared, cleared_extents) = {
            let t = self.cleared.lock();
            // CAST: an extent count fits in 64 bits.
            (t.bytes(), t.extents() as u64)
        };
        VramStats {
            cleared,
            cleared_extents,
            total: self.range.end - self.range.start,
            free: self.buddy.avail(),
            largest_free: largest,
            allocations: *self.allocations.lock(),
        }
    }

    /// Allocates VRAM as `req` asks.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a zero or unaligned size, an alignment that is not a power of two of at least
    /// 4 KiB, or a range outside the usable VRAM; `ENOSPC`/`ENOMEM` when the request cannot be
    /// met (the allocator's state is then unchanged).
    pub(crate) fn alloc(self: &Arc<Self>, req: &AllocRequest) -> Result<VramAllocation> {
        let (mode, align, flags) = self.buddy_request(req)?;

        // Zeroed requests first look for memory known to be zero, inside the placement.
        let mut tracker = self.cleared.lock();
        let tracking = self.tracking.load(Relaxed) != 0;
        let hit = match (req.zero, tracking) {
            (Zero::No, _) | (_, false) => None,
            _ => tracker.find(req.size, req.align).filter(|at| {
                let end = at + req.size;
                match &req.placement {
                    Placement::Within(r) => *at >= r.start && end <= r.end,
                    _ => true,
                }
            }),
        };
        let from_cleared = hit.and_then(|at| {
            KBox::pin_init(
                self.buddy.alloc_blocks(
                    GpuBuddyAllocMode::Range(at..at + req.size),
                    req.size,
                    align,
                    flags,
                ),
                GFP_KERNEL,
            )
            .ok()
        });
        let zeroed = from_cleared.is_some();
        let blocks = match from_cleared {
            Some(b) => b,
            None => KBox::pin_init(
                self.buddy.alloc_blocks(mode, req.size, align, flags),
                GFP_KERNEL,
            )?,
        };
        // Whatever it took is not free any more; what of it was known zero is remembered.
        let mut known = 0;
        let mut zero_parts = KVec::new();
        for b in blocks.iter() {
            known += tracker.remove_into(b.offset()..b.offset() + b.size(), Some(&mut zero_parts));
        }
        drop(tracker);
        if !tracking {
            // Measuring without the tracking: nothing is known.
            zero_parts.clear();
        }
        self.count_taken(req.zero, zeroed, known);
        self.record(blocks, zeroed, zero_parts)
    }

    /// Returns the allocator's mode, alignment and flags for `req`.
    ///
    /// # Errors
    ///
    /// `EINVAL` as [`Vram::alloc`] says.
    fn buddy_request(
        &self,
        req: &AllocRequest,
    ) -> Result<(GpuBuddyAllocMode, Alignment, GpuBuddyAllocFlags)> {
        if req.size == 0 || req.size % CHUNK != 0 {
            return Err(EINVAL);
        }
        let align = usize::try_from(req.align)
            .ok()
            .filter(|a| *a >= SZ_4K)
            .and_then(Alignment::new_checked)
            .ok_or(EINVAL)?;
        let mode = match &req.placement {
            Placement::Any => GpuBuddyAllocMode::Simple,
            Placement::TopDown => GpuBuddyAllocMode::TopDown,
            Placement::Within(r) => {
                if r.start < self.range.start || r.end > self.range.end || r.start >= r.end {
                    return Err(EINVAL);
                }
                // The allocator's offsets are VRAM addresses (its base offset is 0).
                GpuBuddyAllocMode::Range(r.clone())
            }
        };
        let mut flags = GpuBuddyAllocFlags::default();
        if req.contiguous {
            flags |= GpuBuddyAllocFlag::Contiguous;
        }
        Ok((mode, align, flags))
    }

    /// Counts an allocation that asked for `zero`, came from memory known to be zero if
    /// `zeroed`, and took `known` bytes the tracker knew to be zero.
    fn count_taken(&self, zero: Zero, zeroed: bool, known: u64) {
        match zero {
            Zero::No => {
                self.clear_stats
                    .cleared_taken_by_ordinary
                    .fetch_add(known, Relaxed);
            }
            _ if zeroed => {
                self.clear_stats.zeroed_from_cleared.fetch_add(1, Relaxed);
            }
            _ => {
                self.clear_stats
                    .zeroed_not_from_cleared
                    .fetch_add(1, Relaxed);
            }
        }
    }

    /// Records `blocks` as allocated and returns their handle.
    ///
    /// The tracking nodes come first: a failure here frees the blocks (as dirty, which is never
    /// wrong) and leaves no record behind.
    fn record(
        self: &Arc<Self>,
        blocks: Pin<KBox<AllocatedBlocks>>,
        zeroed: bool,
        zero_parts: KVec<Range<u64>>,
    ) -> Result<VramAllocation> {
        let mut nodes = KVec::new();
        for b in blocks.iter() {
            nodes.push(
                kernel::rbtree::RBTreeNode::new(b.offset(), b.offset() + b.size(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let mut size = 0;
        {
            let mut tree = self.blocks.lock();
            for n in nodes.drain_all() {
                tree.insert(n);
            }
        }
        for b in blocks.iter() {
            size += b.size();
        }
        *self.allocations.lock() += 1;
        Ok(VramAllocation {
            vram: self.clone(),
            blocks: Some(blocks),
            zeroed,
            zero_parts,
            size,
        })
    }
}

/// An allocation of VRAM; its blocks return to the allocator when it is dropped.
///
/// # Invariants
///
/// `blocks` is `Some` until the allocation is released.
pub(crate) struct VramAllocation {
    vram: Arc<Vram>,
    blocks: Option<Pin<KBox<AllocatedBlocks>>>,
    zeroed: bool,
    /// The parts that were known to be zero when allocated.
    zero_parts: KVec<Range<u64>>,
    size: u64,
}

impl VramAllocation {
    /// Returns the total size in bytes (the request rounded up to the allocator's blocks).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Returns the VRAM ranges of the allocation, in the allocator's order.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.blocks
            .iter()
            .flat_map(|b| b.iter())
            .map(|b| b.offset()..b.offset() + b.size())
    }

    /// Whether the allocation came from memory known to be zero (it still is, until written).
    pub(crate) fn is_zeroed(&self) -> bool {
        self.zeroed
    }

    /// Returns the parts of the allocation that were known to be zero when it was made
    /// (all of it when [`VramAllocation::is_zeroed`]), until written.
    pub(crate) fn zero_parts(&self) -> &[Range<u64>] {
        &self.zero_parts
    }

    /// Frees the allocation, recording the parts `cleared` (VRAM ranges inside it) as known to
    /// hold zeros, so that zeroed requests can have them without clearing them again.
    pub(crate) fn free_cleared(mut self, cleared: &[Range<u64>]) {
        let vram = self.vram.clone();
        // Under the tracker's lock from the free to the insert, so no allocation can take the
        // memory in between and leave it recorded as free.
        let mut t = vram.cleared.lock();
        let mut mine = KVec::new();
        for r in self.ranges() {
            if mine.push(r, GFP_KERNEL).is_err() {
                mine.clear();
                break;
            }
        }
        self.release();
        for c in cleared {
            for r in mine.iter() {
                let (s, e) = (c.start.max(r.start), c.end.min(r.end));
                if s < e && t.insert(s..e).is_ok() {
                    vram.clear_stats.freed_as_cleared.fetch_add(e - s, Relaxed);
                }
            }
        }
    }

    /// Returns the blocks to the allocator.
    fn release(&mut self) {
        let Some(blocks) = self.blocks.take() else {
            return;
        };
        let mut tree = self.vram.blocks.lock();
        for b in blocks.iter() {
            tree.remove(&b.offset());
        }
        drop(tree);
        let mut n = self.vram.allocations.lock();
        *n = n.saturating_sub(1);
        drop(n);
        drop(blocks);
    }

    /// Returns the single VRAM range the allocation covers, if its blocks are contiguous.
    pub(crate) fn contiguous_range(&self) -> Option<Range<u64>> {
        let start = self.start();
        let end = start.checked_add(self.size)?;
        // The blocks never overlap, so they cover `start..end` exactly when all lie inside it.
        self.ranges()
            .all(|r| r.start >= start && r.end <= end)
            .then_some(start..end)
    }

    /// Whether the allocation was made by `vram`.
    pub(crate) fn is_of(&self, vram: &Vram) -> bool {
        core::ptr::eq(&*self.vram, vram)
    }

    /// Returns the lowest address of the allocation.
    pub(crate) fn start(&self) -> u64 {
        self.ranges().map(|r| r.start).min().unwrap_or(0)
    }
}

impl Drop for VramAllocation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_vram)]
mod tests {
    use super::*;
    use kernel::time::{
        Instant,
        Monotonic, //
    };

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn modes() -> Result {
        // A usable range that does not start at zero, as on a GPU with reserved memory below.
        let vram = Vram::new(16 * MIB..272 * MIB)?;
        let total = 256 * MIB;
        assert_eq!(vram.stats().total, total);
        assert_eq!(vram.stats().free, total);

        // Anywhere: stays inside the range, 4 KiB granular.
        let a = vram.alloc(&AllocRequest::new(12 * 1024))?;
        assert_eq!(a.size(), 12 * 1024);
        assert!(a
            .ranges()
            .all(|r| r.start >= 16 * MIB && r.end <= 272 * MIB));

        // Contiguous and aligned.
        let b = vram.alloc(&AllocRequest::new(3 * MIB).contiguous().aligned(MIB))?;
        let r = b.contiguous_range().ok_or(EINVAL)?;
        assert_eq!(r.end - r.start, 3 * MIB);
        assert_eq!(r.start % MIB, 0);
        assert_eq!(b.size(), 3 * MIB);

        // Top-down: the highest free block.
        let c = vram.alloc(&AllocRequest::new(64 * 1024).placed(Placement::TopDown))?;
        assert!(c.start() >= 271 * MIB);

        // Within a range.
        let d = vram.alloc(
            &AllocRequest::new(MIB)
                .contiguous()
                .placed(Placement::Within(32 * MIB..40 * MIB)),
        )?;
        assert!(d.start() >= 32 * MIB && d.start() + MIB <= 40 * MIB);

        assert_eq!(vram.stats().allocations, 4);
        assert_eq!(
            vram.stats().free,
            total - 12 * 1024 - 3 * MIB - 64 * 1024 - MIB
        );
        drop((a, b, c, d));
        assert_eq!(vram.stats().free, total);
        assert_eq!(vram.stats().largest_free, total);
        assert_eq!(vram.stats().allocations, 0);
        Ok(())
    }

    #[test]
    fn bad_requests() -> Result {
        let vram = Vram::new(0..64 * MIB)?;
        assert!(vram.alloc(&AllocRequest::new(0)).is_err());
        assert!(vram.alloc(&AllocRequest::new(1000)).is_err());
        assert!(vram
            .alloc(&AllocRequest::new(4096).aligned(3 * 4096))
            .is_err());
        assert!(vram.alloc(&AllocRequest::new(4096).aligned(512)).is_err());
        // A range reaching outside the usable VRAM (into reserved memory) is refused.
        assert!(vram
            .alloc(&AllocRequest::new(4096).placed(Placement::Within(60 * MIB..65 * MIB)))
            .is_err());
        assert!(Vram::new(0..0).is_err());
        assert!(Vram::new(0x800..MIB).is_err());
        assert_eq!(vram.stats().free, 64 * MIB);
        Ok(())
    }

    #[test]
    fn exhaustion_then_recovery() -> Result {
        let vram = Vram::new(0..8 * MIB)?;
        let mut held = KVec::new();
        loop {
            match vram.alloc(&AllocRequest::new(MIB)) {
                Ok(a) => held.push(a, GFP_KERNEL)?,
                Err(e) => {
                    assert!(e == ENOSPC || e == ENOMEM);
                    break;
                }
            }
        }
        assert_eq!(held.len(), 8);
        assert_eq!(vram.stats().free, 0);
        assert_eq!(vram.stats().largest_free, 0);
        // A failed request leaves no state behind.
        assert!(vram.alloc(&AllocRequest::new(4096)).is_err());
        assert_eq!(vram.stats().allocations, 8);
        // Free one: exactly that much can be allocated again, contiguously.
        let _ = held.remove(3);
        assert_eq!(vram.stats().free, MIB);
        let again = vram.alloc(&AllocRequest::new(MIB).contiguous())?;
        assert_eq!(again.size(), MIB);
        drop(again);
        held.clear();
        assert_eq!(vram.stats().free, 8 * MIB);
        Ok(())
    }

    /// The case from the gpu_buddy clear-tracker discussion: thousands of small allocations freed
    /// in a scattered order must merge back, so that one large contiguous allocation of most of
    /// the free space succeeds.
    #[test]
    fn fragmentation() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        const N: usize = 4096;
        let size = 24 * GIB; // The GA102 model's VRAM.
        let vram = Vram::new(0..size)?;
        let mut held = KVec::with_capacity(N, GFP_KERNEL)?;
        for i in 0..N {
            let sz = if i % 3 == 0 { 8192 } else { 4096 };
            held.push(Some(vram.alloc(&AllocRequest::new(sz))?), GFP_KERNEL)?;
        }
        let used: u64 = held.iter().flatten().map(|a| a.size()).sum();
        assert_eq!(vram.stats().free, size - used);
        // Free in a scattered order: a stride coprime with N visits every index once.
        let mut i = 0;
        for _ in 0..N {
            i = (i + 1237) % N;
            held[i] = None;
        }
        assert_eq!(vram.stats().free, size);
        assert_eq!(vram.stats().largest_free, size);

        let start = Instant::<Monotonic>::now();
        let big = vram.alloc(&AllocRequest::new(size - 64 * MIB).contiguous())?;
        let us = start.elapsed().as_micros_ceil();
        assert!(big.contiguous_range().is_some());
        assert_eq!(big.size(), size - 64 * MIB);
        kernel::kunit::info(fmt!(
            "    # fragmentation: {} small allocations freed scattered; contiguous {} MiB alloc took {} us\n",
            N,
            (size - 64 * MIB) / MIB,
            us
        ));
        Ok(())
    }

    /// Freed as cleared, memory serves zeroed requests without clearing; the known-zero extents
    /// never overlap what is allocated, and ordinary allocations that take them are counted.
    #[test]
    fn clear_tracking() -> Result {
        let vram = Vram::new(0..64 * MIB)?;
        let a = vram.alloc(&AllocRequest::new(MIB).contiguous().aligned(MIB))?;
        let r = a.contiguous_range().ok_or(EINVAL)?;
        a.free_cleared(&[r.clone()]);
        ensure_eq!(vram.stats().cleared, MIB);
        // A zeroed request inside it: no clearing needed.
        let z = vram.alloc(&AllocRequest::new(256 * 1024).zeroed(Zero::Preferred))?;
        ensure!(z.is_zeroed());
        ensure!(z.ranges().all(|b| b.start >= r.start && b.end <= r.end));
        ensure_eq!(vram.stats().cleared, MIB - 256 * 1024);
        // Larger than anything known zero: an ordinary block, not zeroed.
        let big = vram.alloc(&AllocRequest::new(2 * MIB).zeroed(Zero::Required))?;
        ensure!(!big.is_zeroed());
        ensure_eq!(vram.clear_stats.zeroed_not_from_cleared.load(Relaxed), 1);
        // Tracking off: zeroed requests do not look.
        vram.set_tracking(false);
        let off = vram.alloc(&AllocRequest::new(4096).zeroed(Zero::Preferred))?;
        ensure!(!off.is_zeroed());
        vram.set_tracking(true);
        // An ordinary allocation placed on known-zero memory takes it out, counted.
        let before = vram.stats().cleared;
        let o = vram.alloc(&AllocRequest::new(64 * 1024).placed(Placement::Within(r.clone())))?;
        ensure_eq!(
            vram.clear_stats.cleared_taken_by_ordinary.load(Relaxed),
            64 * 1024
        );
        ensure_eq!(vram.stats().cleared, before - 64 * 1024);
        // No extent overlaps a live allocation.
        for live in [&z, &big, &off, &o] {
            for b in live.ranges() {
                ensure!(vram
                    .cleared
                    .lock()
                    .iter()
                    .all(|e| e.end <= b.start || e.start >= b.end));
            }
        }
        // Cleared parts outside the allocation are ignored.
        let c = vram.alloc(&AllocRequest::new(8192).contiguous())?;
        let cr = c.contiguous_range().ok_or(EINVAL)?;
        let before = vram.stats().cleared;
        let wider = cr.start - 4096..cr.end + 4096;
        c.free_cleared(core::slice::from_ref(&wider));
        ensure_eq!(vram.stats().cleared, before + 8192);
        Ok(())
    }

    /// The workload of the clear-tracker discussion: small allocations freed in a scattered
    /// order, half as cleared and half dirty; the buddy allocator still merges everything, so a
    /// contiguous allocation of almost all of it succeeds, and the tracker stays consistent.
    #[test]
    fn mixed_churn_then_big() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        const N: usize = 4096;
        let size = GIB;
        let vram = Vram::new(0..size)?;
        let mut held = KVec::with_capacity(N, GFP_KERNEL)?;
        for i in 0..N {
            let sz = if i % 2 == 0 { 8192 } else { 4096 };
            held.push(Some(vram.alloc(&AllocRequest::new(sz))?), GFP_KERNEL)?;
        }
        let mut i = 0;
        let mut cleared = 0;
        for k in 0..N {
            i = (i + 1237) % N;
            if let Some(a) = held[i].take() {
                if k % 2 == 0 {
                    let r = a.contiguous_range().ok_or(EINVAL)?;
                    cleared += r.end - r.start;
                    a.free_cleared(&[r]);
                }
            }
        }
        ensure_eq!(vram.stats().free, size);
        ensure_eq!(vram.stats().largest_free, size);
        ensure_eq!(vram.stats().cleared, cleared);
        let big = vram.alloc(&AllocRequest::new(size - 64 * MIB).contiguous())?;
        ensure!(big.contiguous_range().is_some());
        let b = big.contiguous_range().ok_or(EINVAL)?;
        ensure!(vram
            .cleared
            .lock()
            .iter()
            .all(|e| e.end <= b.start || e.start >= b.end));
        Ok(())
    }

    /// The bounds of a placement: a range ending exactly at the end of the usable VRAM (or
    /// starting exactly at its start) is served from its edge; one ending a byte or a page past
    /// the end, starting at the end or a byte below the start, empty, or not on a chunk, is
    /// `EINVAL`; a request larger than its range fails. A refused request changes nothing.
    #[test]
    fn placement_boundaries() -> Result {
        /// What a case expects.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Want {
            /// Served, from this address.
            At(u64),
            /// Refused with this error.
            Err(Error),
            /// Refused (the error is the buddy allocator's).
            Fails,
        }
        const K: u64 = CHUNK;
        let (s, e) = (16 * MIB, 48 * MIB);
        let vram = Vram::new(s..e)?;
        let idle = vram.stats();
        // (placement, size, contiguous, expected)
        let cases: &[(Range<u64>, u64, bool, Want)] = &[
            (e - K..e, K, false, Want::At(e - K)),
            (e - 2 * K..e, 2 * K, true, Want::At(e - 2 * K)),
            (e - K..e + 1, K, false, Want::Err(EINVAL)),
            (e - K..e + K, K, false, Want::Err(EINVAL)),
            (e..e + K, K, false, Want::Err(EINVAL)),
            (e..e, K, false, Want::Err(EINVAL)),
            (e - K..e - K, K, false, Want::Err(EINVAL)),
            (e - 1..e, K, false, Want::Err(EINVAL)),
            (e - K..e, 2 * K, false, Want::Fails),
            (s..s + K, K, false, Want::At(s)),
            (s - 1..s + K, K, false, Want::Err(EINVAL)),
            (s - K..s, K, false, Want::Err(EINVAL)),
            (s..e, e - s, false, Want::At(s)),
            (s..e, e - s + K, false, Want::Fails),
        ];
        for (r, size, contiguous, want) in cases.iter().cloned() {
            let mut req = AllocRequest::new(size).placed(Placement::Within(r.clone()));
            if contiguous {
                req = req.contiguous();
            }
            let got = match vram.alloc(&req) {
                Ok(a) => {
                    // Served: exactly the size, every block inside the placement.
                    ensure_eq!((r.start, size, a.size()), (r.start, size, size));
                    ensure!(a.ranges().all(|b| b.start >= r.start && b.end <= r.end));
                    ensure_eq!(vram.stats().free, idle.free - size);
                    Want::At(a.start())
                }
                Err(err) if want == Want::Fails => {
                    ensure!(err != EINVAL || r.end <= e);
                    Want::Fails
                }
                Err(err) => Want::Err(err),
            };
            ensure_eq!((r.start, r.end, size, got), (r.start, r.end, size, want));
            // Refused or freed again: no trace.
            ensure_eq!((r.start, r.end, vram.stats()), (r.start, r.end, idle));
        }
        // The bounds of the usable range itself.
        ensure!(Vram::new(0..K).is_ok());
        for bad in [K..K, 0..K + 1, 1..K + 1, K - 1..K] {
            ensure_eq!(
                (bad.start, Vram::new(bad.clone()).err()),
                (bad.start, Some(EINVAL))
            );
        }
        Ok(())
    }
}
