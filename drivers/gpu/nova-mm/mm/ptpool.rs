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
        // CAST: 64 slots.
        let n = CHUNK_SLOTS as u64;
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

/// Counters of a [`PtPool`].
pub(crate) struct PtPoolStats {
    /// Tables handed out.
    pub(crate) allocs: Atomic<u64>,
    /// Of those, slots known to be zero (no zeroing needed).
    pub(crate) zero_hits: Atomic<u64>,
    /// Tables returned.
    pub(crate) frees: Atomic<u64>,
    /// Chunks taken from VRAM.
    pub(crate) chunks_allocated: Atomic<u64>,
    /// Chunks given back to VRAM.
    pub(crate) chunks_freed: Atomic<u64>,
    /// Chunks taken from memory known to be zero.
    pub(crate) chunks_cleared: Atomic<u64>,
}

/// The page-table memory of one GPU.
#[pin_data(PinnedDrop)]
pub(crate) struct PtPool {
    vram: Arc<Vram>,
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
        Arc::pin_init(
            try_pin_init!(Self {
                vram,
                chunks <- new_mutex!(KVec::new()),
                stats: PtPoolStats {
                    allocs: Atomic::new(0),
                    zero_hits: Atomic::new(0),
                    frees: Atomic::new(0),
                    chunks_allocated: Atomic::new(0),
                    chunks_freed: Atomic::new(0),
                    chunks_cleared: Atomic::new(0),
                },
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

    /// Returns the number of chunks held and the VRAM they take.
    pub(crate) fn footprint(&self) -> (u64, u64) {
        let c = self.chunks.lock();
        // CAST: a vector length fits in 64 bits.
        let n = c.len() as u64;
        (n, n * SLOT * CHUNK_SLOTS as u64)
    }

    /// Allocates one 4 KiB table slot.
    ///
    /// # Errors
    ///
    /// `ENOMEM`/`ENOSPC` when VRAM is exhausted (or an injected failure fires).
    pub(crate) fn alloc(self: &Arc<Self>) -> Result<PtMem> {
        let n = self.fail_after.load(Relaxed);
        if n != 0 {
            self.fail_after.store(n - 1, Relaxed);
            if n == 1 {
                return Err(ENOMEM);
            }
        }
        let mut chunks = self.chunks.lock();
        // Known-zero slots first, then the lowest free slot.
        let mut pick = None;
        for (ci, c) in chunks.iter().enumerate() {
            let z = c.zero & !c.used;
            if z != 0 {
                pick = Some((ci, z.trailing_zeros(), true));
                break;
            }
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
                // CAST: 64 slots of 4 KiB.
                let size = SLOT * CHUNK_SLOTS as u64;
                // From the bottom of VRAM up, away from ordinary allocations (which the buddy
                // allocator places from the top down), so that tables stay together.
                // Memory known to be zero if there is some: then no table of the chunk needs
                // zeroing.
                let alloc = self.vram.alloc(
                    &AllocRequest::new(size)
                        .contiguous()
                        .aligned(size)
                        .placed(Placement::Within(self.vram.range()))
                        .zeroed(Zero::Preferred),
                )?;
                let base = alloc.start();
                // Every slot that lies in a part known to be zero.
                let mut zero = 0u64;
                for p in alloc.zero_parts() {
                    for slot in 0..CHUNK_SLOTS as u64 {
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
                let zero = chunks[chunks.len() - 1].zero != 0;
                (chunks.len() - 1, 0, zero)
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
        // CAST: 64 slots of 4 KiB.
        let size = SLOT * CHUNK_SLOTS as u64;
        let Some(ci) = chunks
            .iter()
            .position(|c| addr >= c.base && addr < c.base + size)
        else {
            pr_err!("page-table slot {:#x} is not the pool's\n", addr);
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
