// SPDX-License-Identifier: GPL-2.0

//! Page-table memory: 4 KiB slots of VRAM for the tables of every address space of one GPU.
//!
//! [`PtPool`] takes VRAM from [`Vram`] in contiguous chunks of [`CHUNK_SLOTS`] tables and hands
//! out their 4 KiB slots lowest first, so the tables of an address space sit close together and a
//! run of table writes moves the PRAMIN window rarely (decision 6). It remembers which free slots
//! are known to hold zeros (a table freed because all its entries were unmapped): such a slot is
//! handed out first and the walker writes only the entries of a new table there, not its zeros.
//! A chunk whose slots are all free goes back to [`Vram`], except one kept as a spare so that a
//! map/unmap cycle does not allocate and free VRAM every time.
//!
//! All page-table memory is behind this one type, so that clear tracking of the VRAM as a whole
//! can take its place later.

use core::ops::Range;

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
};

use crate::mm::vram::{
    AllocRequest,
    Placement,
    Vram,
    VramAllocation,
    Zero, //
};

/// Tables per chunk (one `u64` bitmap).
pub(crate) const CHUNK_SLOTS: usize = 64;
/// [`CHUNK_SLOTS`] as a `u64`.
// CAST: 64 fits every integer type.
pub(crate) const CHUNK_SLOTS_U64: u64 = CHUNK_SLOTS as u64;
/// Size of one chunk of tables.
pub(crate) const CHUNK_SIZE: u64 = SLOT * CHUNK_SLOTS_U64;
/// Size of one table slot.
pub(crate) const SLOT: u64 = 4096;

struct Chunk {
    alloc: VramAllocation,
    base: u64,
    /// Slots in use.
    used: u64,
    /// Free slots known to hold zeros.
    zero: u64,
}

impl Chunk {
    /// Returns the chunk to VRAM; what is known zero stays known beyond the pool: the VRAM's
    /// clear tracking takes it.
    fn give_back(self) {
        let mut cleared = KVec::new();
        let mut slot = 0;
        let n = CHUNK_SLOTS_U64;
        while slot < n {
            if self.zero & (1 << slot) == 0 {
                slot += 1;
                continue;
            }
            let first = slot;
            while slot < n && self.zero & (1 << slot) != 0 {
                slot += 1;
            }
            let r = self.base + first * SLOT..self.base + slot * SLOT;
            if cleared.push(r, GFP_KERNEL).is_err() {
                break;
            }
        }
        self.alloc.free_cleared(&cleared);
    }
}

counters! {
    /// Counters of a [`PtPool`].
    pub(crate) struct PtPoolStats / PtPoolSnapshot {
        /// Tables handed out.
        allocs,
        /// Of those, slots known to be zero (no zeroing needed).
        zero_hits,
        /// Tables returned.
        frees,
        /// Chunks taken from VRAM.
        chunks_allocated,
        /// Chunks given back to VRAM.
        chunks_freed,
        /// Chunks taken from memory known to be zero.
        chunks_cleared,
    }
}

/// The page-table memory of one GPU.
#[pin_data(PinnedDrop)]
pub(crate) struct PtPool {
    vram: Arc<Vram>,
    /// Where the chunks come from.
    within: Range<u64>,
    #[pin]
    chunks: Mutex<KVec<Chunk>>,
    /// Counters.
    pub(crate) stats: PtPoolStats,
    /// Fail the allocation after this many more (fault injection for the tests; 0 = never).
    fail_after: Atomic<u64>,
}

impl PtPool {
    /// Creates the pool of page-table memory drawn from `vram`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(vram: Arc<Vram>) -> Result<Arc<Self>> {
        let all = vram.range();
        Self::placed(vram, all)
    }

    /// Creates the pool of page-table memory drawn from `within`, a part of `vram` (the tests
    /// of high addresses put every table above 4 GiB this way).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `within` is not a part of `vram` that holds a chunk; `ENOMEM`.
    pub(crate) fn placed(vram: Arc<Vram>, within: Range<u64>) -> Result<Arc<Self>> {
        let chunk = CHUNK_SIZE;
        let r = vram.range();
        if within.start < r.start
            || within.end > r.end
            || within.end.saturating_sub(within.start) < chunk
        {
            return Err(EINVAL);
        }
        Arc::pin_init(
            try_pin_init!(Self {
                vram,
                within,
                chunks <- new_mutex!(KVec::new()),
                stats: PtPoolStats::new(),
                fail_after: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Makes the `n`-th allocation from now fail with `ENOMEM` (`0` disarms).
    pub(crate) fn fail_nth(&self, n: u64) {
        self.fail_after.store(n, Relaxed);
    }

    /// Returns the number of tables in use.
    pub(crate) fn in_use(&self) -> u64 {
        self.chunks
            .lock()
            .iter()
            .map(|c| u64::from(c.used.count_ones()))
            .sum()
    }

    /// Returns the VRAM the tables come from.
    pub(crate) fn vram(&self) -> &Arc<Vram> {
        &self.vram
    }

    /// Returns the number of free slots known to hold zeros.
    pub(crate) fn zero_free(&self) -> u64 {
        self.chunks
            .lock()
            .iter()
            .map(|c| u64::from((c.zero & !c.used).count_ones()))
            .sum()
    }

    /// Returns the addresses of the free slots the pool believes hold zeros, lowest first (the
    /// tests check them against what VRAM holds).
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
    pub(crate) fn zero_slots(&self) -> Result<KVec<u64>> {
        let mut out = KVec::new();
        for c in self.chunks.lock().iter() {
            let z = c.zero & !c.used;
            for slot in 0..CHUNK_SLOTS_U64 {
                if z & (1 << slot) != 0 {
                    out.push(c.base + slot * SLOT, GFP_KERNEL)?;
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Returns the number of chunks held and the VRAM they take.
    pub(crate) fn footprint(&self) -> (u64, u64) {
        let c = self.chunks.lock();
        // CAST: a vector length fits in 64 bits.
        let n = c.len() as u64;
        (n, n * CHUNK_SIZE)
    }

    /// Allocates one 4 KiB table slot.
    ///
    /// # Errors
    ///
    /// `ENOMEM`/`ENOSPC` when VRAM is exhausted (or an injected failure fires).
    pub(crate) fn alloc(self: &Arc<Self>) -> Result<PtMem> {
        self.alloc_near(None)
    }

    /// Allocates one 4 KiB table slot, in the chunk of `near` (the parent table) if it has a
    /// free one, so that the tables of one address space stay together and a run of table
    /// writes moves the PRAMIN window rarely.
    ///
    /// # Errors
    ///
    /// As [`PtPool::alloc`].
    pub(crate) fn alloc_near(self: &Arc<Self>, near: Option<u64>) -> Result<PtMem> {
        let n = self.fail_after.load(Relaxed);
        if n != 0 {
            self.fail_after.store(n - 1, Relaxed);
            if n == 1 {
                return Err(ENOMEM);
            }
        }
        let mut chunks = self.chunks.lock();
        let chunk_size = CHUNK_SIZE;
        // A known-zero slot in the parent's chunk, then one anywhere (a slot that needs no
        // zeroing saves far more writes than a window move costs), then any free slot in the
        // parent's chunk, then the lowest free slot.
        let near_ci = near.and_then(|a| {
            chunks
                .iter()
                .position(|c| a >= c.base && a < c.base + chunk_size)
        });
        let mut pick = near_ci.and_then(|ci| {
            let z = chunks[ci].zero & !chunks[ci].used;
            (z != 0).then(|| (ci, z.trailing_zeros(), true))
        });
        for (ci, c) in chunks.iter().enumerate() {
            if pick.is_some() {
                break;
            }
            let z = c.zero & !c.used;
            if z != 0 {
                pick = Some((ci, z.trailing_zeros(), true));
                break;
            }
        }
        if pick.is_none() {
            pick = near_ci
                .filter(|ci| chunks[*ci].used != u64::MAX)
                .map(|ci| (ci, (!chunks[ci].used).trailing_zeros(), false));
        }
        if pick.is_none() {
            pick = chunks
                .iter()
                .enumerate()
                .find(|(_, c)| c.used != u64::MAX)
                .map(|(ci, c)| (ci, (!c.used).trailing_zeros(), false));
        }
        let (ci, slot, zero) = match pick {
            Some((ci, slot, zero)) => {
                // A known-zero slot keeps its zeros; the first slot of a fresh chunk is the
                // only other way a known-zero one is handed out.
                (ci, slot, zero)
            }
            None => {
                let size = CHUNK_SIZE;
                // From the bottom of the pool's part of VRAM up, away from ordinary allocations (which the buddy
                // allocator places from the top down), so that tables stay together.
                // Memory known to be zero if there is some: then no table of the chunk needs
                // zeroing.
                let alloc = self.vram.alloc(
                    &AllocRequest::new(size)
                        .contiguous()
                        .aligned(size)
                        .placed(Placement::Within(self.within.clone()))
                        .zeroed(Zero::Preferred),
                )?;
                let base = alloc.start();
                // Every slot that lies in a part known to be zero.
                let mut zero = 0u64;
                for p in alloc.zero_parts() {
                    for slot in 0..CHUNK_SLOTS_U64 {
                        let a = base + slot * SLOT;
                        if a >= p.start && a + SLOT <= p.end {
                            zero |= 1 << slot;
                        }
                    }
                }
                if zero != 0 {
                    self.stats.chunks_cleared.fetch_add(1, Relaxed);
                }
                chunks.push(
                    Chunk {
                        alloc,
                        base,
                        used: 0,
                        zero,
                    },
                    GFP_KERNEL,
                )?;
                self.stats.chunks_allocated.fetch_add(1, Relaxed);
                // A known-zero slot first, as from any chunk; known zero only if that slot's
                // own memory is (a chunk can be partly known zero: one given back with dirty
                // slots and taken again).
                let slot = if zero != 0 { zero.trailing_zeros() } else { 0 };
                (chunks.len() - 1, slot, zero != 0)
            }
        };
        let c = &mut chunks[ci];
        c.used |= 1 << slot;
        c.zero &= !(1 << slot);
        self.stats.allocs.fetch_add(1, Relaxed);
        if zero {
            self.stats.zero_hits.fetch_add(1, Relaxed);
        }
        Ok(PtMem {
            pool: self.clone(),
            addr: c.base + u64::from(slot) * SLOT,
            known_zero: zero,
            zero_on_free: false,
        })
    }

    fn free(&self, addr: u64, zero: bool) {
        let mut chunks = self.chunks.lock();
        let size = CHUNK_SIZE;
        let Some(ci) = chunks
            .iter()
            .position(|c| addr >= c.base && addr < c.base + size)
        else {
            // A slot this pool did not hand out: a bug of ours, every `PtMem` comes from `alloc`.
            kernel::warn_on!(true);
            return;
        };
        let slot = (addr - chunks[ci].base) / SLOT;
        let c = &mut chunks[ci];
        c.used &= !(1 << slot);
        if zero {
            c.zero |= 1 << slot;
        }
        self.stats.frees.fetch_add(1, Relaxed);
        // Give back an empty chunk unless it is the only spare.
        if c.used == 0 && chunks.iter().filter(|c| c.used == 0).count() > 1 {
            if let Ok(gone) = chunks.remove(ci) {
                gone.give_back();
            }
            self.stats.chunks_freed.fetch_add(1, Relaxed);
        }
    }
}

#[pinned_drop]
impl PinnedDrop for PtPool {
    fn drop(self: Pin<&mut Self>) {
        // Every slot is free (each `PtMem` holds the pool): give the chunks back, zeros known.
        let mut chunks = self.chunks.lock();
        while let Some(c) = chunks.pop() {
            c.give_back();
        }
    }
}

/// One 4 KiB table slot; returned to its pool on drop.
pub(crate) struct PtMem {
    pool: Arc<PtPool>,
    addr: u64,
    known_zero: bool,
    zero_on_free: bool,
}

impl PtMem {
    /// Returns the VRAM address of the slot.
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    /// Whether the slot is known to hold zeros (until the first write).
    pub(crate) fn known_zero(&self) -> bool {
        self.known_zero
    }

    /// Records whether the slot holds zeros when it is freed.
    pub(crate) fn set_zero(&mut self, zero: bool) {
        self.zero_on_free = zero;
    }
}

impl Drop for PtMem {
    fn drop(&mut self) {
        self.pool.free(self.addr, self.zero_on_free);
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_ptpool)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A chunk taken over memory of which only some slots are known zero (a chunk given back
    /// with dirty slots, then taken again): a slot is handed out as known zero exactly when its
    /// own memory is, known-zero ones first, whichever slot of the chunk is dirty.
    #[test]
    fn partly_zero_chunk() -> Result {
        let chunk = CHUNK_SIZE;
        // (dirty slots of the chunk's memory), one case per shape.
        for dirty in [
            &[0u64][..],
            &[0, 1],
            &[63],
            &[5, 40],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ] {
            let vram = Vram::new(0..16 * MIB)?;
            let a = vram.alloc(
                &AllocRequest::new(chunk)
                    .contiguous()
                    .aligned(chunk)
                    .placed(Placement::Within(0..chunk)),
            )?;
            ensure_eq!(a.start(), 0);
            let mut cleared = KVec::new();
            let mut from = 0;
            let end = CHUNK_SLOTS_U64;
            for &d in Iterator::chain(dirty.iter(), core::iter::once(&end)) {
                if d * SLOT > from {
                    cleared.push(from..d * SLOT, GFP_KERNEL)?;
                }
                from = (d + 1) * SLOT;
            }
            a.free_cleared(&cleared);
            let pool = PtPool::new(vram.clone())?;
            let mut held = KVec::new();
            for i in 0..CHUNK_SLOTS {
                let m = pool.alloc()?;
                // The chunk is the memory at 0 (the lowest free, and no zero chunk elsewhere).
                ensure!(m.addr() < chunk);
                let slot = m.addr() / SLOT;
                let zero_mem = !dirty.contains(&slot);
                ensure_eq!(m.known_zero(), zero_mem);
                // Known-zero slots first: the first `64 - dirty` are all known zero.
                ensure_eq!(m.known_zero(), i < CHUNK_SLOTS - dirty.len());
                held.push(m, GFP_KERNEL)?;
            }
            ensure_eq!(pool.zero_slots()?.len(), 0);
        }
        Ok(())
    }

    /// Slots come lowest first, known-zero ones before others, from the parent's chunk when
    /// asked; an empty chunk beyond the spare goes back to VRAM with its zeros known there.
    #[test]
    fn slots() -> Result {
        let vram = Vram::new(0..16 * MIB)?;
        let pool = PtPool::new(vram.clone())?;
        let mut held = KVec::new();
        for _ in 0..CHUNK_SLOTS + 1 {
            held.push(pool.alloc()?, GFP_KERNEL)?;
        }
        let a = held[0].addr();
        let b = held[CHUNK_SLOTS].addr();
        ensure_eq!(pool.footprint().0, 2);
        // Slots of one chunk are consecutive, lowest first.
        ensure_eq!(held[1].addr(), a + SLOT);
        // Free a dirty slot in the first chunk: the parent's chunk gets it back.
        let _ = held.remove(5);
        let m = pool.alloc_near(Some(a))?;
        ensure_eq!(m.addr(), a + 5 * SLOT);
        ensure!(!m.known_zero());
        drop(m);
        // A slot freed as zero is handed out first, wherever the parent is, and known zero.
        let mut z = held.remove(7)?;
        let zaddr = z.addr();
        z.set_zero(true);
        drop(z);
        let m = pool.alloc_near(Some(b))?;
        ensure_eq!(m.addr(), zaddr);
        ensure!(m.known_zero());
        drop(m);
        // Injected failure at the second allocation from now.
        pool.fail_nth(2);
        let ok = pool.alloc()?;
        ensure_eq!(pool.alloc().err(), Some(ENOMEM));
        drop(ok);
        // Everything back: one chunk stays as the spare, the other goes to VRAM.
        let mut mems = held;
        for m in mems.iter_mut() {
            m.set_zero(true);
        }
        drop(mems);
        ensure_eq!(pool.in_use(), 0);
        ensure_eq!(pool.footprint().0, 1);
        ensure!(vram.stats().cleared >= SLOT);
        drop(pool);
        // The pool gave its last chunk back with its zeros known.
        ensure!(vram.stats().cleared >= 63 * SLOT);
        Ok(())
    }
}
