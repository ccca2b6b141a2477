// SPDX-License-Identifier: GPL-2.0

//! The free VRAM known to hold zeros, beside the allocator rather than inside it.
//!
//! The C gpu_buddy of Linux 7.3 keeps clear and dirty free blocks in separate trees and merges
//! two buddies only when both are in the same state, so mixed frees split the free space (the
//! "merge barrier"). nova-mm's `GpuBuddy` frees everything dirty and always merges; this tracker
//! remembers, out of band, which free extents are known to be zero (the design the upstream
//! clear-tracker series converged on).
//!
//! [`ClearTracker`] holds disjoint, non-adjacent extents in two red-black trees: by address (to
//! merge neighbours and to cut out an allocation) and by `(size, address)` (to find an extent of
//! at least a size). Insert, remove and find are `O(log n)` in the number of extents (an extent
//! cut in two costs one more insertion). The kernel's `RBTree` has no augmentation, so a second
//! tree keyed by size takes the place of a max-size-augmented interval tree; each extent costs two
//! nodes.

use core::ops::Range;

use kernel::{
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
};

/// Allocation granularity of VRAM: the buddy allocator's chunk, the tracker's unit.
pub(crate) const CHUNK: u64 = 4096;

/// Spare nodes for one extent: one per tree.
struct Spare {
    addr: RBTreeNodeReservation<u64, u64>,
    size: RBTreeNodeReservation<(u64, u64), ()>,
}

impl Spare {
    fn new() -> Result<Self> {
        Ok(Self {
            addr: RBTreeNodeReservation::new(GFP_KERNEL)?,
            size: RBTreeNodeReservation::new(GFP_KERNEL)?,
        })
    }
}

/// Free extents of VRAM known to hold zeros.
///
/// # Invariants
///
/// `by_addr` maps the start of each extent to its end; extents are non-empty, 4 KiB aligned,
/// disjoint and never adjacent (adjacent ones are merged). `by_size` holds `(end - start, start)`
/// for exactly the same extents. `bytes` is the sum of their lengths.
pub(crate) struct ClearTracker {
    by_addr: RBTree<u64, u64>,
    by_size: RBTree<(u64, u64), ()>,
    bytes: u64,
}

impl ClearTracker {
    /// Creates an empty tracker.
    pub(crate) fn new() -> Self {
        Self {
            by_addr: RBTree::new(),
            by_size: RBTree::new(),
            bytes: 0,
        }
    }

    /// Returns the bytes known to be zero.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Returns the number of extents.
    pub(crate) fn extents(&self) -> usize {
        self.by_addr.iter().count()
    }

    /// Returns the extents, lowest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.by_addr.iter().map(|(s, e)| *s..*e)
    }

    /// Returns the extent that starts at or below `addr` and the first one above it.
    fn around(&self, addr: u64) -> (Option<Range<u64>>, Option<Range<u64>>) {
        match self.by_addr.cursor_lower_bound(&addr) {
            Some(c) => {
                let (s, e) = c.current();
                if *s == addr {
                    (Some(*s..*e), c.peek_next().map(|(s, e)| *s..*e))
                } else {
                    (c.peek_prev().map(|(s, e)| *s..*e), Some(*s..*e))
                }
            }
            None => (
                self.by_addr.cursor_back().map(|c| {
                    let (s, e) = c.current();
                    *s..*e
                }),
                None,
            ),
        }
    }

    fn put(&mut self, r: Range<u64>, spare: Spare) {
        self.by_size
            .insert(spare.size.into_node((r.end - r.start, r.start), ()));
        self.by_addr.insert(spare.addr.into_node(r.start, r.end));
        self.bytes += r.end - r.start;
    }

    /// Records `r` as free and zero, merging it with its neighbours.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an empty or unaligned range; `ENOMEM` (nothing recorded then).
    pub(crate) fn insert(&mut self, r: Range<u64>) -> Result {
        if r.start >= r.end || r.start % CHUNK != 0 || r.end % CHUNK != 0 {
            return Err(EINVAL);
        }
        let spare = Spare::new()?;
        let (mut start, mut end) = (r.start, r.end);
        // Merge every extent that overlaps or touches `start..end`.
        loop {
            let (below, above) = self.around(start);
            if let Some(b) = below.filter(|b| b.end >= start) {
                start = start.min(b.start);
                end = end.max(b.end);
                self.drop_extent(b.start);
                continue;
            }
            if let Some(a) = above.filter(|a| a.start <= end) {
                end = end.max(a.end);
                self.drop_extent(a.start);
                continue;
            }
            break;
        }
        self.put(start..end, spare);
        Ok(())
    }

    fn drop_extent(&mut self, start: u64) {
        if let Some(end) = self.by_addr.remove(&start) {
            let _ = self.by_size.remove(&(end - start, start));
            self.bytes -= end - start;
        }
    }

    /// Forgets every part of `r` (allocated, or written): what remains on each side stays.
    ///
    /// Returns the number of bytes of `r` that were known zero. Never fails: when a piece that
    /// remains cannot get a node, it is forgotten too (the tracker only ever errs towards "not
    /// known zero").
    pub(crate) fn remove(&mut self, r: Range<u64>) -> u64 {
        self.remove_into(r, None)
    }

    /// Like [`ClearTracker::remove`], and appends to `parts` the pieces of `r` that were known
    /// zero (as many as it can hold without failing).
    pub(crate) fn remove_into(
        &mut self,
        r: Range<u64>,
        mut parts: Option<&mut KVec<Range<u64>>>,
    ) -> u64 {
        let mut taken = 0;
        loop {
            let (below, above) = self.around(r.start);
            let hit = below
                .filter(|b| b.end > r.start)
                .or(above.filter(|a| a.start < r.end));
            let Some(x) = hit else {
                break;
            };
            self.drop_extent(x.start);
            let left = x.start..r.start.max(x.start);
            let right = r.end.min(x.end)..x.end;
            let (s, e) = (x.start.max(r.start), x.end.min(r.end));
            taken += e - s;
            if let Some(p) = parts.as_deref_mut() {
                let _ = p.push(s..e, GFP_KERNEL);
            }
            for piece in [left, right] {
                if piece.start < piece.end {
                    // Without a node the piece is not known zero any more.
                    if let Ok(s) = Spare::new() {
                        self.put(piece, s);
                    }
                }
            }
        }
        taken
    }

    /// Finds `size` bytes aligned to `align` inside one extent; returns their start.
    pub(crate) fn find(&self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let fits = |s: u64, e: u64| -> Option<u64> {
            let a = s.checked_add(align - 1)? & !(align - 1);
            (a.checked_add(size)? <= e).then_some(a)
        };
        // A few of the smallest extents that are large enough: one usually fits.
        let mut key = (size, 0);
        for _ in 0..8 {
            let cur = self.by_size.cursor_lower_bound(&key)?;
            let ((len, s), ()) = cur.current();
            if let Some(a) = fits(*s, *s + *len) {
                return Some(a);
            }
            match cur.peek_next() {
                Some((k, ())) => key = *k,
                None => return None,
            }
        }
        // Any extent of `size + align - 4 KiB` bytes fits whatever its alignment.
        let need = size.checked_add(align.saturating_sub(CHUNK))?;
        let cur = self.by_size.cursor_lower_bound(&(need, 0))?;
        let ((len, s), ()) = cur.current();
        fits(*s, *s + *len)
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_clear)]
mod tests {
    use super::*;

    /// Pages of the reference: one flag per 4 KiB.
    const PAGES: usize = 512;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// The tracker against a flag per page: random inserts of free runs, removals of random
    /// ranges, and finds of random sizes and alignments.
    #[test]
    fn against_a_reference() -> Result {
        if crate::selftest::helpers::skip_if_quick() {
            return Ok(());
        }
        let mut t = ClearTracker::new();
        let mut reference = KVec::from_elem(false, PAGES, GFP_KERNEL)?;
        let mut rng = Lcg(0x6e6f_7661);
        for step in 0..3000 {
            let a = rng.next(PAGES as u64);
            let n = 1 + rng.next(24);
            let b = (a + n).min(PAGES as u64);
            let r = a * CHUNK..b * CHUNK;
            match rng.next(3) {
                0 => {
                    t.insert(r.clone())?;
                    for p in a..b {
                        reference[p as usize] = true;
                    }
                }
                1 => {
                    let known = (a..b).filter(|p| reference[*p as usize]).count() as u64;
                    ensure_eq!(t.remove(r.clone()), known * CHUNK);
                    for p in a..b {
                        reference[p as usize] = false;
                    }
                }
                _ => {
                    let size = n * CHUNK;
                    let align = CHUNK << rng.next(4);
                    match t.find(size, align) {
                        Some(at) => {
                            ensure_eq!(at % align, 0);
                            for p in at / CHUNK..(at + size) / CHUNK {
                                ensure!(reference[p as usize]);
                            }
                        }
                        None => {
                            // No aligned run of `n` known-zero pages exists.
                            let step_pages = (align / CHUNK) as usize;
                            let mut p = 0;
                            while p + n as usize <= PAGES {
                                ensure!(!(p..p + n as usize).all(|q| reference[q]));
                                p += step_pages;
                            }
                        }
                    }
                }
            }
            // Invariants: the extents are exactly the known-zero pages, merged, sorted.
            if step % 50 == 0 {
                let mut pages = KVec::from_elem(false, PAGES, GFP_KERNEL)?;
                let mut last_end = None;
                let mut bytes = 0;
                for e in t.iter() {
                    ensure!(e.start < e.end);
                    if let Some(le) = last_end {
                        ensure!(e.start > le);
                    }
                    last_end = Some(e.end);
                    bytes += e.end - e.start;
                    for p in e.start / CHUNK..e.end / CHUNK {
                        pages[p as usize] = true;
                    }
                }
                ensure_eq!(bytes, t.bytes());
                ensure!(pages[..] == reference[..]);
            }
        }
        Ok(())
    }

    #[test]
    fn merging_and_cutting() -> Result {
        let mut t = ClearTracker::new();
        t.insert(0..CHUNK)?;
        t.insert(2 * CHUNK..3 * CHUNK)?;
        ensure_eq!(t.extents(), 2);
        // The gap between them: one extent.
        t.insert(CHUNK..2 * CHUNK)?;
        ensure_eq!(t.extents(), 1);
        ensure_eq!(t.bytes(), 3 * CHUNK);
        // Cut out the middle: two again.
        ensure_eq!(t.remove(CHUNK..2 * CHUNK), CHUNK);
        ensure_eq!(t.extents(), 2);
        ensure_eq!(t.find(2 * CHUNK, CHUNK), None);
        ensure_eq!(t.find(CHUNK, 2 * CHUNK), Some(0));
        ensure_eq!(t.find(CHUNK, 4 * CHUNK), Some(0));
        ensure_eq!(t.remove(0..CHUNK), CHUNK);
        ensure_eq!(t.find(CHUNK, 4 * CHUNK), None);
        ensure_eq!(t.find(CHUNK, 2 * CHUNK), Some(2 * CHUNK));
        ensure_eq!(t.insert(0..100).err(), Some(EINVAL));
        ensure_eq!(t.insert(CHUNK..CHUNK).err(), Some(EINVAL));
        // A large aligned find in a large unaligned extent.
        let mut t = ClearTracker::new();
        t.insert(CHUNK..(1 << 22) + CHUNK)?;
        ensure_eq!(t.find(1 << 21, 1 << 21), Some(1 << 21));
        ensure_eq!(t.find(1 << 22, 1 << 21), None);
        Ok(())
    }
}
