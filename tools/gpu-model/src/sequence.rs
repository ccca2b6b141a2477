// SPDX-License-Identifier: MIT OR Apache-2.0

//! The ordering rules between writes (HARDWARE.md §9), as state the model keeps.
//!
//! - PRAMIN writes are posted: they travel the FB path while register writes travel the PRI
//!   path, and the GPU does not order the two. They stay unflushed until a PRAMIN read or an FB
//!   flush (`NV_UFLUSH`). An invalidate, a BAR1 bind or a BAR1 access to that memory while they
//!   are unflushed is a violation (open-gpu-kernel-modules `kern_bus_gm107.c`:
//!   `kbusFlush_GM107`, "Must call kbusFlush BEFORE any calls to busInvalidate";
//!   `BUS_FLUSH_VIDEO_MEMORY_VIA_PRAMIN_WINDOW`; nouveau `nv50_instobj_release`).
//! - Every change of an entry in the page tables of a page directory must be covered, before
//!   the end, by an invalidate of that directory written after the change, whose scope reaches
//!   the TLBs that may hold it (`HUBTLB_ONLY` reaches BAR1's hub TLB only). On TU10x an
//!   invalidate covering an unmap or a downgrade needs SYS_MEMBAR and ACK=GLOBALLY
//!   (`kgmmuSetTlbInvalidateMembarWarParameters_TU102`).
//!
//! The page tables of a directory are found by walking it from VRAM whenever an invalidate of
//! it completes; a change is an 8-byte-aligned quadword of one of those pages written through
//! PRAMIN with a value other than the one it held.

use std::collections::{HashMap, HashSet};

use crate::mmu::{Aperture, DualPde, Format, Half, Pde};
use crate::vram::Vram;

/// One entry change not yet covered by an invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The quadword's value before the first uncovered write.
    pub old: u64,
    /// Its value now.
    pub new: u64,
    /// Sequence number of the write.
    pub seq: u64,
}

/// The tables of one known page directory.
#[derive(Clone, Debug, Default)]
pub struct Space {
    /// VRAM pages (address >> 12) holding its directories and tables.
    pub pages: HashSet<u64>,
    /// Its directories and tables: (start, length in bytes).
    pub ranges: Vec<(u64, u64)>,
    /// Its tables below the root, with the entry that linked them when it was learnt:
    /// (start, length, parent entry address, parent entry value).
    pub links: Vec<(u64, u64, u64, u64)>,
    /// Bound to BAR1: a hub-only invalidate reaches its TLB.
    pub hub: bool,
    /// Uncovered changes, by quadword address.
    pub changes: HashMap<u64, Change>,
}

/// Sequence-rule state.
#[derive(Clone, Debug, Default)]
pub struct Sequence {
    /// Quadwords (VRAM address, 8-byte aligned) with posted (unflushed) PRAMIN writes.
    pub posted: HashSet<u64>,
    /// Hopper/Blackwell: BAR1_BLOCK_LOW written since the last HIGH write.
    pub low_only: bool,
    /// A bind whose completion no read of its status has shown yet.
    pub bind_unpolled: bool,
    /// Reads of the bind status that will still show the bind busy.
    pub bind_busy_reads: u32,
    /// Reads of the GFW priv level mask that will still show it raised.
    pub plm_raised_reads: u32,
    /// The known page directories.
    pub spaces: HashMap<u64, Space>,
    /// Which known directories hold each page.
    pub owners: HashMap<u64, Vec<u64>>,
    /// Every quadword changed through PRAMIN and not yet covered by an invalidate whose
    /// directory's tables held it when it completed or when that directory was last learnt;
    /// whichever directory it belongs to, known or not yet (the end of the run judges it
    /// against every directory it learns of then).
    pub global: HashMap<u64, Change>,
}

/// How many reads of the bind status show a new bind busy.
pub const BIND_BUSY_READS: u32 = 1;
/// How many reads of the GFW priv level mask show it raised after a reset.
pub const PLM_RAISED_READS: u32 = 2;

impl Sequence {
    /// Notes a PRAMIN write of `len` bytes at VRAM `pa`, which held `old` (the aligned
    /// quadwords it covers, before the write) and now holds `new`.
    pub fn pramin_write(&mut self, pa: u64, len: u64, old: &[u64], new: &[u64], seq: u64) {
        let base = pa & !7;
        let mut q = base;
        while q < pa + len.max(1) {
            self.posted.insert(q);
            q += 8;
        }
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            if o == n {
                continue;
            }
            // CAST: a handful of quadwords.
            let q = base + 8 * i as u64;
            note_change(&mut self.global, q, *o, *n, seq);
            let Some(owners) = self.owners.get(&(q >> 12)) else {
                continue;
            };
            for pdb in owners {
                if let Some(s) = self.spaces.get_mut(pdb).filter(|s| in_ranges(&s.ranges, q)) {
                    note_change(&mut s.changes, q, *o, *n, seq);
                }
            }
        }
    }

    /// A PRAMIN read or an FB flush: every posted write has landed.
    pub fn flush(&mut self) {
        self.posted.clear();
    }

    /// Whether `len` bytes at `pa` include memory with posted writes.
    pub fn is_posted(&self, pa: u64, len: u64) -> bool {
        let end = pa + len.max(1);
        !self.posted.is_empty() && self.posted.iter().any(|q| *q + 8 > pa && *q < end)
    }

    /// How many posted quadwords lie in the tables of `pdb` as VRAM holds them now.
    pub fn posted_in_tables(&self, vram: &Vram, fmt: &dyn Format, pdb: u64) -> usize {
        if self.posted.is_empty() {
            return 0;
        }
        let ranges = tables(vram, fmt, pdb);
        self.posted
            .iter()
            .filter(|q| in_ranges(&ranges, **q))
            .count()
    }

    /// Learns (again) the tables of the directory `pdb` from VRAM.
    pub fn learn(&mut self, vram: &Vram, fmt: &dyn Format, pdb: u64, hub: bool) {
        let links = walk_tables(vram, fmt, pdb);
        let ranges: Vec<(u64, u64)> = links.iter().map(|t| (t.0, t.1)).collect();
        let pages = pages_of(&ranges);
        let s = self.spaces.entry(pdb).or_default();
        s.hub |= hub;
        for p in std::mem::take(&mut s.pages) {
            if let Some(v) = self.owners.get_mut(&p) {
                v.retain(|x| *x != pdb);
            }
        }
        for p in &pages {
            let v = self.owners.entry(*p).or_default();
            if !v.contains(&pdb) {
                v.push(pdb);
            }
        }
        if let Some(s) = self.spaces.get_mut(&pdb) {
            s.pages = pages;
            s.ranges = ranges;
            s.links = links
                .into_iter()
                .filter_map(|(a, l, p)| p.map(|(pa, pv)| (a, l, pa, pv)))
                .collect();
        }
    }

    /// An invalidate triggered at `trigger_seq` completed: the changes of the directories it
    /// covers that were written before it are covered. Returns the covered changes.
    pub fn cover(
        &mut self,
        pdb: Option<u64>,
        hub_only: bool,
        trigger_seq: u64,
    ) -> Vec<(u64, Change)> {
        let mut out = Vec::new();
        for (p, s) in self.spaces.iter_mut() {
            if pdb.is_some_and(|x| x != *p) {
                continue;
            }
            // A hub-only invalidate does not reach the TLBs of a GPU address space.
            if hub_only && !s.hub {
                continue;
            }
            let covered: Vec<u64> = s
                .changes
                .iter()
                .filter(|(_, c)| c.seq < trigger_seq)
                .map(|(a, _)| *a)
                .collect();
            for a in covered {
                if let Some(c) = s.changes.remove(&a) {
                    out.push((*p, c));
                }
            }
        }
        out
    }

    /// An invalidate triggered at `trigger_seq` completed, reaching the tables `ranges`: the
    /// changes in them written before the trigger are covered. Returns them.
    pub fn cover_tables(&mut self, ranges: &[(u64, u64)], trigger_seq: u64) -> Vec<Change> {
        let mut out = Vec::new();
        if self.global.is_empty() {
            return out;
        }
        for (start, len) in ranges {
            let mut q = *start & !7;
            while q < start + len {
                if self.global.get(&q).is_some_and(|c| c.seq < trigger_seq) {
                    if let Some(c) = self.global.remove(&q) {
                        out.push(c);
                    }
                }
                q += 8;
            }
        }
        out
    }

    /// The changes no invalidate covered that lie in the current tables of a directory of
    /// `pdbs` with any valid entry left: (directory, quadword, change).
    pub fn uncovered_in(
        &self,
        vram: &Vram,
        fmt: &dyn Format,
        pdbs: &[u64],
    ) -> Vec<(u64, u64, Change)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for pdb in pdbs {
            if !vram.contains(*pdb, 0x1000) || !has_entries(vram, fmt, *pdb) {
                continue;
            }
            for (start, len) in tables(vram, fmt, *pdb) {
                let mut q = start & !7;
                while q < start + len {
                    if let Some(c) = self.global.get(&q) {
                        if seen.insert(q) {
                            out.push((*pdb, q, *c));
                        }
                    }
                    q += 8;
                }
            }
        }
        out.sort_by_key(|x| (x.0, x.1));
        out
    }

    /// The changes still uncovered whose quadwords are in the current tables of their
    /// directory and of no other known directory (a table belongs to one address space at a
    /// time: memory that went back to the allocator and now serves another space is that
    /// space's; a directory with no valid entry left has nothing to cover).
    pub fn uncovered(&self, vram: &Vram, fmt: &dyn Format) -> Vec<(u64, u64, Change)> {
        let now: HashMap<u64, Vec<(u64, u64)>> = self
            .spaces
            .keys()
            .map(|p| (*p, tables(vram, fmt, *p)))
            .collect();
        let mut out = Vec::new();
        for (pdb, s) in &self.spaces {
            if s.changes.is_empty() || !has_entries(vram, fmt, *pdb) {
                continue;
            }
            for (a, c) in &s.changes {
                let mine =
                    now.get(pdb).is_some_and(|r| in_ranges(r, *a)) && in_ranges(&s.ranges, *a);
                let others = now.iter().any(|(p, r)| p != pdb && in_ranges(r, *a));
                if mine && !others {
                    out.push((*pdb, *a, *c));
                }
            }
        }
        out.sort_by_key(|x| (x.0, x.1));
        out
    }

    /// A table this PRAMIN write at `q` lands in that was unlinked from its directory by a
    /// change no invalidate has covered yet: (directory, table, parent entry). Page-table
    /// memory unlinked from a directory must not be written again until the invalidate that
    /// unlinked it has completed.
    pub fn reused_early(&self, vram: &Vram, q: u64) -> Option<(u64, u64, u64)> {
        let owners = self.owners.get(&(q >> 12))?;
        for pdb in owners {
            let Some(s) = self.spaces.get(pdb) else {
                continue;
            };
            for (start, len, paddr, pval) in &s.links {
                if q < *start || q >= start + len {
                    continue;
                }
                let now = vram.read_u64(*paddr).unwrap_or(*pval);
                if now != *pval && self.global.contains_key(paddr) {
                    return Some((*pdb, *start, *paddr));
                }
            }
        }
        None
    }
}

/// Whether the change of a version 2 entry from `old` to `new` takes something away (an unmap,
/// a downgrade to read-only, an entry pointed elsewhere): `old` was live (VALID, or a directory
/// aperture) and `new` is not the same entry with READ_ONLY (bit 6) cleared.
pub fn v2_downgrade(old: u64, new: u64) -> bool {
    // Fresh (poisoned) memory never held an entry.
    let live = |v: u64| v != crate::vram::POISON64 && (v & 1 != 0 || (v >> 1) & 3 != 0);
    const RO: u64 = 1 << 6;
    live(old) && !(live(new) && (new & !RO) == (old & !RO) && (new & RO) <= (old & RO))
}

/// Whether the root directory at `pdb` has any entry that points somewhere or maps something.
pub fn has_entries(vram: &Vram, fmt: &dyn Format, pdb: u64) -> bool {
    let Some(level) = fmt.levels().first() else {
        return false;
    };
    (0..1u64 << level.bits).any(|i| {
        vram.read_u64(pdb + i * 8).is_ok_and(|v| {
            v != crate::vram::POISON64 && !matches!(fmt.decode_pde(v), Pde::Invalid | Pde::Sparse)
        })
    })
}

/// Records that quadword `q` went from `old` to `new` at `seq`: the value before the first
/// uncovered write is kept, the latest write's value and time taken.
fn note_change(map: &mut HashMap<u64, Change>, q: u64, old: u64, new: u64, seq: u64) {
    map.entry(q)
        .and_modify(|c| {
            c.new = new;
            c.seq = seq;
        })
        .or_insert(Change { old, new, seq });
}

/// Whether `q` lies in one of `ranges`.
pub fn in_ranges(ranges: &[(u64, u64)], q: u64) -> bool {
    ranges.iter().any(|(s, l)| q >= *s && q < s + l)
}

/// The pages (address >> 12) `ranges` touch.
fn pages_of(ranges: &[(u64, u64)]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for (s, l) in ranges {
        for p in (s >> 12)..=((s + l.max(&1) - 1) >> 12) {
            out.insert(p);
        }
    }
    out
}

/// The VRAM pages holding the directories and tables reachable from `pdb`.
pub fn table_pages(vram: &Vram, fmt: &dyn Format, pdb: u64) -> HashSet<u64> {
    pages_of(&tables(vram, fmt, pdb))
}

/// The directories and tables reachable from `pdb`: (start, length in bytes). Page tables
/// (4 KiB pages: 512 entries; 64 KiB pages: 32 entries) are listed, not walked.
pub fn tables(vram: &Vram, fmt: &dyn Format, pdb: u64) -> Vec<(u64, u64)> {
    walk_tables(vram, fmt, pdb)
        .into_iter()
        .map(|(a, l, _)| (a, l))
        .collect()
}

/// [`tables`], each with the entry that links it (address, value); `None` for the root.
#[allow(clippy::type_complexity)]
pub fn walk_tables(vram: &Vram, fmt: &dyn Format, pdb: u64) -> Vec<(u64, u64, Option<(u64, u64)>)> {
    let mut out = Vec::new();
    let levels = fmt.levels();
    let mut stack = vec![(pdb, 0usize, None)];
    while let Some((table, depth, parent)) = stack.pop() {
        if depth >= levels.len() || out.len() > 1 << 16 {
            continue;
        }
        let level = &levels[depth];
        let entries = 1u64 << level.bits;
        let size = if level.dual { 16 } else { 8 };
        out.push((table, entries * size, parent));
        for i in 0..entries {
            let addr = table + i * size;
            let Ok(lo) = vram.read_u64(addr) else {
                break;
            };
            if lo == crate::vram::POISON64 {
                continue;
            }
            if level.dual {
                let Ok(hi) = vram.read_u64(addr + 8) else {
                    break;
                };
                if let DualPde::Halves { big, small } = fmt.decode_dual(lo, hi) {
                    // The leaf tables: listed, not walked. 64 KiB pages: 32 entries under the
                    // big half; 4 KiB pages: 512 under the small one.
                    if let Half::Table(Aperture::Video, a) = big {
                        out.push((a, 32 * 8, Some((addr, lo))));
                    }
                    if let Half::Table(Aperture::Video, a) = small {
                        out.push((a, 512 * 8, Some((addr + 8, hi))));
                    }
                }
            } else if let Pde::Table {
                aperture: Aperture::Video,
                addr: a,
            } = fmt.decode_pde(lo)
            {
                stack.push((a, depth + 1, Some((addr, lo))));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_downgrades() {
        // Unmap, RW -> RO, a PDE cleared, a PTE pointed elsewhere: downgrades.
        assert!(v2_downgrade(0x1000_0001, 0));
        assert!(v2_downgrade(0x1000_0001, 0x1000_0041));
        assert!(v2_downgrade(0x2000_0002, 0));
        assert!(v2_downgrade(0x1000_0001, 0x2000_0001));
        // A map into unmapped or sparse entries, RO -> RW: not.
        assert!(!v2_downgrade(0, 0x1000_0001));
        assert!(!v2_downgrade(0x8, 0x1000_0001));
        assert!(!v2_downgrade(0x1000_0041, 0x1000_0001));
    }

    #[test]
    fn posted_and_flushed() {
        let mut s = Sequence::default();
        s.pramin_write(0x1ff8, 16, &[0, 0], &[1, 1], 1);
        assert!(s.is_posted(0x1000, 0x1000));
        assert!(s.is_posted(0x2000, 4));
        assert!(!s.is_posted(0x1000, 8));
        assert!(!s.is_posted(0x3000, 4));
        s.flush();
        assert!(!s.is_posted(0x1000, 8));
    }

    #[test]
    fn cover_only_what_came_before() {
        let mut s = Sequence::default();
        s.spaces.insert(
            0x1000,
            Space {
                ranges: vec![(0x5000, 0x1000)],
                ..Space::default()
            },
        );
        s.owners.insert(0x5, vec![0x1000]);
        s.pramin_write(0x5008, 8, &[0], &[7], 10);
        // An invalidate triggered before the write covers nothing.
        assert!(s.cover(Some(0x1000), false, 5).is_empty());
        // A hub-only one does not reach a GPU address space.
        assert!(s.cover(Some(0x1000), true, 20).is_empty());
        // Another directory's does not either.
        assert!(s.cover(Some(0x2000), false, 20).is_empty());
        let c = s.cover(None, false, 20);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1.old, 0);
        assert_eq!(c[0].1.new, 7);
    }
}
