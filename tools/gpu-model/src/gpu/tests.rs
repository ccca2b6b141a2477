// SPDX-License-Identifier: MIT OR Apache-2.0

//! Model-core tests: page tables are built by hand from the manuals' field
//! definitions and written through the BAR0 window and PRAMIN aperture,
//! BAR1 is bound through the instance-block register, and translations are
//! checked through BAR1.

use std::collections::HashMap;

use super::*;
use crate::chip::Chip;
use crate::report::Kind;
use crate::tlb;
use crate::vram::POISON;

const MIB: u64 = 1 << 20;

/// Test harness: a GPU plus a hand-written page-table builder.
struct H {
    gpu: Gpu,
    v3: bool,
    next: u64,
    tables: HashMap<(usize, u64), u64>,
    duals: HashMap<u64, (u64, u64)>,
    small: HashMap<u64, u64>,
    big: HashMap<u64, u64>,
    pdb: u64,
}

fn gpu_for(chip: &str, vram: u64) -> Gpu {
    let mut g = raw_gpu(chip, vram);
    // As a driver does first: read the GFW priv level mask until it shows lowered.
    for _ in 0..crate::sequence::PLM_RAISED_READS {
        g.bar0_read(u64::from(crate::fw::GFW_PRIV_LEVEL_MASK), 4);
    }
    g
}

/// A GPU just out of reset.
fn raw_gpu(chip: &str, vram: u64) -> Gpu {
    let mut cfg = Config::new(Chip::by_name(chip).unwrap());
    cfg.vram_bytes = vram;
    Gpu::new(cfg).unwrap()
}

// --- Entry encodings, from open-gpu-doc dev_mmu.ref.txt (v2) and nvhw
// gh100/dev_mmu.h (v3). ---

/// v2 PDE: APERTURE 2:1 = VIDEO_MEMORY (1), ADDRESS_VID 32:8 = addr >> 12.
fn v2_pde(addr: u64) -> u64 {
    (1 << 1) | ((addr >> 12) << 8)
}
/// v2 dual PDE big half: APERTURE_BIG 2:1 = 1, ADDRESS_BIG_VID 32:4 = addr >> 8.
fn v2_big(addr: u64) -> u64 {
    (1 << 1) | ((addr >> 8) << 4)
}
/// v2 dual PDE small half (second quadword): APERTURE_SMALL 66:65 = 1,
/// ADDRESS_SMALL_VID 96:72 = addr >> 12.
fn v2_small(addr: u64) -> u64 {
    (1 << 1) | ((addr >> 12) << 8)
}
/// v2 PTE: VALID 0, APERTURE 2:1 = VIDEO (0), READ_ONLY 6, ADDRESS_VID 32:8,
/// KIND 63:56 = GENERIC_MEMORY (6).
fn v2_pte(pa: u64, ro: bool) -> u64 {
    1 | (u64::from(ro) << 6) | ((pa >> 12) << 8) | (6 << 56)
}
/// v3 PDE: APERTURE 2:1 = 1, PCF 5:3 = VALID_CACHED_ATS_NOT_ALLOWED (2),
/// ADDRESS 51:12.
fn v3_pde(addr: u64) -> u64 {
    (1 << 1) | (2 << 3) | (addr & 0x000f_ffff_ffff_f000)
}
/// v3 dual PDE big half: APERTURE_BIG 2:1, PCF_BIG 5:3, ADDRESS_BIG 51:8.
fn v3_big(addr: u64) -> u64 {
    (1 << 1) | (2 << 3) | (addr & 0x000f_ffff_ffff_ff00)
}
/// v3 dual PDE small half: APERTURE_SMALL 66:65, PCF_SMALL 69:67,
/// ADDRESS_SMALL 115:76 (bits 51:12 of the second quadword).
fn v3_small(addr: u64) -> u64 {
    (1 << 1) | (2 << 3) | (addr & 0x000f_ffff_ffff_f000)
}
/// v3 PTE: VALID 0, APERTURE 2:1 = VIDEO (0), PCF 7:3 (REGULAR_RW_ATOMIC_
/// CACHED_ACE 0 or REGULAR_RO_ATOMIC_CACHED_ACE 4), ADDRESS_VID 39:12.
fn v3_pte(pa: u64, ro: bool) -> u64 {
    1 | (if ro { 4 << 3 } else { 0 }) | (pa & 0xff_ffff_f000)
}

impl H {
    fn new(chip: &str, vram: u64) -> H {
        let gpu = gpu_for(chip, vram);
        let v3 = gpu.chip.mmu == MmuVersion::V3;
        let mut h = H {
            gpu,
            v3,
            next: 16 * MIB,
            tables: HashMap::new(),
            duals: HashMap::new(),
            small: HashMap::new(),
            big: HashMap::new(),
            pdb: 0,
        };
        h.pdb = h.alloc_table();
        h
    }

    /// Writes 8 bytes at VRAM `pa` through the BAR0 window and PRAMIN.
    fn w64(&mut self, pa: u64, v: u64) {
        let base = pa & !(MIB - 1);
        let reg = self.gpu.chip.window.offset();
        if self.gpu.window.base() != base {
            self.gpu
                .bar0_write(u64::from(reg), 4, base >> pramin::BASE_SHIFT);
        }
        self.gpu
            .bar0_write(pramin::APERTURE_BASE + (pa - base), 8, v);
    }

    fn r32(&mut self, pa: u64) -> u32 {
        let base = pa & !(MIB - 1);
        let reg = self.gpu.chip.window.offset();
        self.gpu
            .bar0_write(u64::from(reg), 4, base >> pramin::BASE_SHIFT);
        // CAST: a 4-byte read.
        self.gpu.bar0_read(pramin::APERTURE_BASE + (pa - base), 4) as u32
    }

    fn zero(&mut self, pa: u64, len: u64) {
        for o in (0..len).step_by(8) {
            self.w64(pa + o, 0);
        }
    }

    fn alloc_table(&mut self) -> u64 {
        let a = self.next;
        self.next += 0x1000;
        self.zero(a, 0x1000);
        a
    }

    fn levels(&self) -> Vec<u32> {
        if self.v3 {
            vec![56, 47, 38, 29, 21]
        } else {
            vec![47, 38, 29, 21]
        }
    }

    fn pde(&self, addr: u64) -> u64 {
        if self.v3 {
            v3_pde(addr)
        } else {
            v2_pde(addr)
        }
    }

    fn pte(&self, pa: u64, ro: bool) -> u64 {
        if self.v3 {
            v3_pte(pa, ro)
        } else {
            v2_pte(pa, ro)
        }
    }

    /// Address of the table at `depth` that holds `va`'s entry.
    fn table(&mut self, depth: usize, va: u64) -> u64 {
        if depth == 0 {
            return self.pdb;
        }
        let shifts = self.levels();
        let key = (depth, va >> (shifts[depth - 1]));
        if let Some(t) = self.tables.get(&key) {
            return *t;
        }
        let parent = self.table(depth - 1, va);
        let bits = shifts[depth - 1];
        let idx = (va >> bits) & 0x1ff;
        let t = self.alloc_table();
        let pde = self.pde(t);
        self.w64(parent + idx * 8, pde);
        self.tables.insert(key, t);
        t
    }

    /// Address of `va`'s dual PDE.
    fn pd0(&mut self, va: u64) -> u64 {
        let last = self.levels().len() - 1;
        let t = self.table(last, va);
        t + ((va >> 21) & 0xff) * 16
    }

    fn set_dual(&mut self, va: u64, lo: u64, hi: u64) {
        let e = self.pd0(va);
        self.w64(e, lo);
        self.w64(e + 8, hi);
        self.duals.insert(e, (lo, hi));
    }

    fn spt(&mut self, va: u64) -> u64 {
        let e = self.pd0(va);
        if let Some(t) = self.small.get(&e) {
            return *t;
        }
        let t = self.alloc_table();
        self.small.insert(e, t);
        let (lo, _) = self.duals.get(&e).copied().unwrap_or((0, 0));
        let hi = if self.v3 { v3_small(t) } else { v2_small(t) };
        self.set_dual(va, lo, hi);
        t
    }

    fn lpt(&mut self, va: u64) -> u64 {
        let e = self.pd0(va);
        if let Some(t) = self.big.get(&e) {
            return *t;
        }
        // A 256-byte table, placed at an odd 256-byte offset to check the
        // BIG_SHIFT of 8.
        let t = self.alloc_table() + 0x100;
        self.big.insert(e, t);
        let (_, hi) = self.duals.get(&e).copied().unwrap_or((0, 0));
        let lo = if self.v3 { v3_big(t) } else { v2_big(t) };
        self.set_dual(va, lo, hi);
        t
    }

    fn set_4k(&mut self, va: u64, raw: u64) {
        let t = self.spt(va);
        self.w64(t + ((va >> 12) & 0x1ff) * 8, raw);
    }

    fn set_64k(&mut self, va: u64, raw: u64) {
        let t = self.lpt(va);
        self.w64(t + ((va >> 16) & 0x1f) * 8, raw);
    }

    fn map_4k(&mut self, va: u64, pa: u64, ro: bool) {
        let p = self.pte(pa, ro);
        self.set_4k(va, p);
    }

    fn map_64k(&mut self, va: u64, pa: u64) {
        let p = self.pte(pa, false);
        self.set_64k(va, p);
    }

    fn map_2m(&mut self, va: u64, pa: u64) {
        let p = self.pte(pa, false);
        self.set_dual(va, p, 0);
    }

    fn map_512m(&mut self, va: u64, pa: u64) {
        let last = self.levels().len() - 1;
        let t = self.table(last - 1, va);
        let p = self.pte(pa, false);
        self.w64(t + ((va >> 29) & 0x1ff) * 8, p);
    }

    /// Writes an instance block pointing at `pdb` and binds BAR1 to it.
    fn bind_pdb(&mut self, inst: u64, pdb: u64) {
        // NV_RAMIN word 128: TARGET 1:0 = VID_MEM, USE_VER2_PT_FORMAT 10,
        // BIG_PAGE_SIZE 11 = 64KB, PAGE_DIR_BASE_LO 31:12; word 129: HI.
        let lo = (pdb & 0xffff_f000) | (1 << 10) | (1 << 11);
        self.w64(inst + 0x200, lo | ((pdb >> 32) << 32));
        if self.gpu.chip.architecture >= 0x1a {
            // Blackwell: NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE in word 131.
            self.w64(inst + 0x208, 0xcafe_ca11 << 32);
        }
        self.bind_raw(inst);
    }

    /// The flush of the posted PRAMIN writes: one read through the window.
    fn flush(&mut self) {
        self.gpu.bar0_read(pramin::APERTURE_BASE, 4);
    }

    /// Binds BAR1 as a correct driver does: flush, the block register(s) (Hopper: LOW, then
    /// HIGH, which triggers), then poll the status until the bind completed.
    fn bind_raw(&mut self, inst: u64) {
        self.flush();
        let status = match self.gpu.chip.bind {
            crate::chip::BindRegs::Vf => {
                self.gpu
                    .bar0_write(0xb8_0f40, 4, 0x8000_0000 | (inst >> 12));
                0xb8_0f50
            }
            crate::chip::BindRegs::VfHopper => {
                self.gpu
                    .bar0_write(0xb8_0f60, 4, (inst & 0xffff_f000) | (1 << 9));
                self.gpu.bar0_write(0xb8_0f64, 4, inst >> 32);
                0xb8_0f60
            }
        };
        let mut polls = 0;
        while self.gpu.bar0_read(status, 4) & 3 != 0 {
            polls += 1;
            if polls > 10 {
                break;
            }
        }
    }

    fn bind(&mut self) {
        let pdb = self.pdb;
        self.bind_pdb(32 * MIB, pdb);
    }

    /// Invalidates `pdb` (or all) and polls TRIGGER until it clears.
    fn invalidate(&mut self, pdb: u64, all_pdb: bool) -> u32 {
        self.flush();
        self.gpu
            .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (pdb >> 12) << 4);
        self.gpu
            .bar0_write(u64::from(tlb::INVALIDATE_UPPER_PDB), 4, pdb >> 40);
        let v = tlb::TRIGGER | tlb::ALL_VA | if all_pdb { tlb::ALL_PDB } else { 0 };
        self.gpu
            .bar0_write(u64::from(tlb::INVALIDATE), 4, u64::from(v));
        let mut polls = 0;
        while self.gpu.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {
            polls += 1;
            assert!(polls < 100, "invalidate never completed");
        }
        polls
    }

    fn b1r32(&mut self, va: u64) -> u32 {
        self.flush();
        let mut b = [0u8; 4];
        self.gpu.bar1_read(va, &mut b);
        u32::from_le_bytes(b)
    }

    fn b1w32(&mut self, va: u64, v: u32) {
        self.flush();
        self.gpu.bar1_write(va, &v.to_le_bytes());
    }

    fn count(&self, k: Kind) -> u64 {
        self.gpu.rec.count(k)
    }
}

const CHIPS_V2_V3: [&str; 2] = ["ga102", "gh100"];

#[test]
fn small_and_big_pages_in_one_dual_pde() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        let va = 0x20_0000; // one 2 MiB region
                            // 64 KiB page at va (big half), 4 KiB page at va + 0x10000 (small half,
                            // its big PTE left zero = invalid, fall through).
        h.map_64k(va, 0x1000_0000);
        h.map_4k(va + 0x1_0000, 0x1100_0000, false);
        h.map_4k(va + 0x1_1000, 0x1100_1000, false);
        h.bind();
        h.b1w32(va + 0x8004, 0x1111_2222);
        h.b1w32(va + 0x1_0008, 0x3333_4444);
        h.b1w32(va + 0x1_1ffc, 0x5555_6666);
        assert_eq!(h.r32(0x1000_8004), 0x1111_2222, "{chip}");
        assert_eq!(h.r32(0x1100_0008), 0x3333_4444, "{chip}");
        assert_eq!(h.r32(0x1100_1ffc), 0x5555_6666, "{chip}");
        assert_eq!(h.b1r32(va + 0x8004), 0x1111_2222);
        // An access that crosses from one 4 KiB page into the next.
        let mut b = [0u8; 8];
        h.gpu.bar1_read(va + 0x1_0ffc, &mut b);
        // Unwritten VRAM through a valid mapping reads poison.
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), POISON);
        // 4 KiB not mapped in the small table: fault.
        assert_eq!(h.count(Kind::Bar1Fault), 0, "{chip}");
        h.b1r32(va + 0x2_0000);
        assert_eq!(h.count(Kind::Bar1Fault), 1, "{chip}");
        assert_eq!(h.gpu.rec.counters.bar1_faults, 1);
        assert_eq!(h.gpu.rec.unexpected(), 1);
    }
}

#[test]
fn two_mib_and_512_mib_leaves() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 2 << 30);
        h.map_2m(0x40_0000, 0x2000_0000);
        h.map_512m(0x4000_0000, 0x4000_0000);
        h.bind();
        h.b1w32(0x40_0000 + 0x1f_fff0, 0xabcd);
        assert_eq!(h.r32(0x2000_0000 + 0x1f_fff0), 0xabcd, "{chip}");
        h.b1w32(0x4000_0000 + 0x1234_5678, 0x7777);
        assert_eq!(h.r32(0x4000_0000 + 0x1234_5678), 0x7777, "{chip}");
        assert_eq!(h.gpu.rec.unexpected(), 0, "{chip}");
    }
    // Turing has no 512 MiB pages: a PTE at PDE1 faults.
    let mut h = H::new("tu102", 2 << 30);
    h.map_512m(0x4000_0000, 0x4000_0000);
    h.bind();
    h.b1r32(0x4000_0000);
    assert_eq!(h.count(Kind::Bar1Fault), 1);
    let v = &h.gpu.rec.violations()[0];
    assert!(v.detail.contains("PDE1"), "{}", v.detail);
}

#[test]
fn misaligned_leaf_faults() {
    let mut h = H::new("ga102", 1 << 30);
    h.map_2m(0x40_0000, 0x2001_0000);
    h.bind();
    h.b1r32(0x40_0000);
    assert_eq!(h.count(Kind::Bar1Fault), 1);
}

#[test]
fn sparse_entries() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        // v2: VALID 0, VOL 1. v3: VALID 0, PCF 7:3 = SPARSE (1). Both are bit 3.
        let sparse = 1 << 3;
        h.set_4k(0x1000, sparse);
        h.set_64k(0x20_0000, sparse);
        h.bind();
        h.b1w32(0x1000, 0xdead);
        assert_eq!(h.b1r32(0x1000), 0, "{chip}");
        assert_eq!(h.b1r32(0x20_8000), 0, "{chip}");
        assert_eq!(h.gpu.rec.counters.bar1_sparse, 3);
        assert_eq!(h.gpu.rec.unexpected(), 0, "{chip}");
        // Sparse dual PDE: the whole 2 MiB is sparse.
        h.set_dual(0x60_0000, 1 << 3, 0);
        assert_eq!(h.b1r32(0x61_0000), 0);
        assert_eq!(h.gpu.rec.unexpected(), 0, "{chip}");
    }
}

/// A sparse big half (v2 APERTURE_BIG invalid + VOL_BIG; v3 PCF_BIG
/// `NV_MMU_VER3_DUAL_PDE_PCF_BIG_SPARSE_ATS_ALLOWED` 1 or `_NOT_ALLOWED` 3)
/// makes the whole 2 MiB sparse even when the small half points at a mapped
/// table (nouveau: "Sparse LPTEs prevent SPTEs from being accessed").
#[test]
fn sparse_big_half_hides_the_small_table() {
    for chip in CHIPS_V2_V3 {
        for pcf_big in [1u64, 3] {
            let v3 = chip == "gh100";
            if !v3 && pcf_big == 3 {
                continue; // v2: bit 3 (VOL_BIG) is the only sparse encoding.
            }
            let mut h = H::new(chip, 1 << 30);
            let va = 0x40_0000;
            h.w64(0x1000_0000, 0x1234_5678);
            h.map_4k(va, 0x1000_0000, false);
            h.map_4k(va + 0x1f_f000, 0x1000_0000, false);
            h.bind();
            assert_eq!(h.b1r32(va), 0x1234_5678, "{chip}");
            // Big half: aperture invalid, sparse; the small half is kept.
            let e = h.pd0(va);
            let (_, hi) = h.duals[&e];
            h.set_dual(va, pcf_big << 3, hi);
            let pdb = h.pdb;
            h.invalidate(pdb, false);
            let sparse = h.gpu.rec.counters.bar1_sparse;
            h.b1w32(va, 0xffff_ffff);
            assert_eq!(h.b1r32(va), 0, "{chip}");
            assert_eq!(h.b1r32(va + 0x1f_f000), 0, "{chip}");
            assert_eq!(h.r32(0x1000_0000), 0x1234_5678, "{chip}: write dropped");
            assert_eq!(h.gpu.rec.counters.bar1_sparse, sparse + 3, "{chip}");
            assert_eq!(h.gpu.rec.unexpected(), 0, "{chip}");
            // The sparse leaf covers the whole 2 MiB.
            assert_eq!(
                h.gpu.bar1_translate(va + 0x12_3456),
                Ok(Leaf::Sparse { size: 2 * MIB })
            );
        }
    }
}

/// A sparse big PTE wins over the small PTE of the same 64 KiB.
#[test]
fn sparse_big_pte_hides_the_small_pte() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        h.w64(0x1000_0000, 0x1234_5678);
        h.map_4k(0x1_0000, 0x1000_0000, false);
        h.set_64k(0x1_0000, 1 << 3);
        h.bind();
        assert_eq!(h.b1r32(0x1_0000), 0, "{chip}");
        assert_eq!(
            h.gpu.bar1_translate(0x1_0000),
            Ok(Leaf::Sparse { size: 0x1_0000 })
        );
        assert_eq!(h.gpu.rec.unexpected(), 0, "{chip}");
    }
}

/// v3 PCF_SMALL (69:67) `NV_MMU_VER3_DUAL_PDE_PCF_SMALL_SPARSE_ATS_ALLOWED`
/// (1) / `_SPARSE_ATS_NOT_ALLOWED` (3) with APERTURE_SMALL invalid: the
/// small half is sparse.
#[test]
fn v3_sparse_small_half() {
    for pcf_small in [1u64, 3] {
        let mut h = H::new("gh100", 1 << 30);
        // No big table: the whole 2 MiB is sparse.
        h.set_dual(0x20_0000, 0, pcf_small << 3);
        // A big table with one valid 64 KiB page: the other 64 KiB pieces
        // fall through to the sparse small half.
        h.w64(0x1001_0000, 0xabcd);
        h.map_64k(0x41_0000, 0x1001_0000);
        let e = h.pd0(0x40_0000);
        let (lo, _) = h.duals[&e];
        h.set_dual(0x40_0000, lo, pcf_small << 3);
        h.bind();
        assert_eq!(
            h.gpu.bar1_translate(0x21_2345),
            Ok(Leaf::Sparse { size: 2 * MIB })
        );
        // The sparse result is cached for its 64 KiB only, so the 64 KiB
        // page next to it still translates (no stale_tlb).
        assert_eq!(h.b1r32(0x40_0000), 0);
        assert_eq!(
            h.gpu.bar1_translate(0x40_1000),
            Ok(Leaf::Sparse { size: 0x1_0000 })
        );
        assert_eq!(h.b1r32(0x41_0000), 0xabcd);
        assert_eq!(h.count(Kind::Bar1Fault), 0);
        assert_eq!(h.gpu.rec.unexpected(), 0);
        // PCF_SMALL 0 and 2 (INVALID) and the undefined 4..7 are invalid.
        for pcf in [0u64, 2, 4, 5, 6, 7] {
            h.set_dual(0x60_0000, 0, pcf << 3);
            let before = h.count(Kind::Bar1Fault);
            h.b1r32(0x60_0000);
            assert_eq!(h.count(Kind::Bar1Fault), before + 1, "PCF_SMALL {pcf}");
        }
    }
}

/// v3 PDE PCF (5:3) with APERTURE invalid: only SPARSE_ATS_ALLOWED (1) and
/// SPARSE_ATS_NOT_ALLOWED (3) are sparse; the undefined 5 and 7 (bit 0 set,
/// once taken as sparse) are invalid and fault. Same for PCF_BIG.
#[test]
fn v3_undefined_pde_pcf_faults() {
    let mut h = H::new("gh100", 1 << 30);
    h.map_4k(0, 0x1000_0000, false);
    h.bind();
    let pd1 = h.table(3, 0);
    for (pcf, sparse) in [(1u64, true), (3, true), (5, false), (7, false)] {
        // PDE1 entry 1 (VA 512 MiB) and the dual PDE of VA 2 MiB.
        h.w64(pd1 + 8, pcf << 3);
        h.set_dual(0x20_0000, pcf << 3, 0);
        let pdb = h.pdb;
        h.invalidate(pdb, false);
        for va in [0x2000_0000, 0x20_0000] {
            let r = h.gpu.bar1_translate(va);
            if sparse {
                assert!(matches!(r, Ok(Leaf::Sparse { .. })), "PCF {pcf}: {r:?}");
            } else {
                let e = r.unwrap_err();
                assert!(e.contains("invalid"), "PCF {pcf}: {e}");
            }
        }
    }
}

#[test]
fn read_only_pages() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        h.w64(0x1000_0000, 0x0102_0304);
        h.map_4k(0x5000, 0x1000_0000, true);
        h.bind();
        assert_eq!(h.b1r32(0x5000), 0x0102_0304);
        h.b1w32(0x5000, 0xffff_ffff);
        assert_eq!(h.r32(0x1000_0000), 0x0102_0304, "{chip}");
        assert_eq!(h.count(Kind::ReadOnlyWrite), 1, "{chip}");
    }
}

#[test]
fn invalid_entries() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        // A small page behind a big PTE that says "ignore the small PTEs".
        h.map_4k(0x20_0000, 0x1000_0000, false);
        let ignore_small = if h.v3 { 3 << 3 } else { 1 << 5 };
        h.set_64k(0x20_0000, ignore_small);
        h.bind();
        h.b1r32(0x20_0000);
        assert_eq!(h.count(Kind::Bar1Fault), 1, "{chip}");
        assert!(h.gpu.rec.violations()[0].detail.contains("small"));
        // Unmapped (all-zero) PDE.
        h.b1r32(0x800_0000);
        assert_eq!(h.count(Kind::Bar1Fault), 2, "{chip}");
        // Beyond the BAR1 size is refused by the transport, not here; a VA
        // in a never-written table reads poison and faults.
        h.set_dual(0xa0_0000, 0, 0);
        h.b1r32(0xa0_0000);
        assert_eq!(h.count(Kind::Bar1Fault), 3, "{chip}");
    }
}

#[test]
fn poisoned_table_faults() {
    let mut h = H::new("ga102", 1 << 30);
    // A PDE pointing at a table that was never written.
    let root = h.pdb;
    let pde = h.pde(0x300_0000);
    h.w64(root, pde);
    h.bind();
    h.b1r32(0);
    let v = &h.gpu.rec.violations()[0];
    assert_eq!(v.kind, Kind::Bar1Fault);
    assert!(v.detail.contains("poison"), "{}", v.detail);
}

#[test]
fn stale_translation_until_invalidate() {
    for chip in CHIPS_V2_V3 {
        let mut h = H::new(chip, 1 << 30);
        h.w64(0x1000_0000, 0xaaaa);
        h.w64(0x1100_0000, 0xbbbb);
        h.map_4k(0x3000, 0x1000_0000, false);
        h.bind();
        assert_eq!(h.b1r32(0x3000), 0xaaaa);
        // Remap without an invalidate: the TLB still has the old page.
        h.map_4k(0x3000, 0x1100_0000, false);
        assert_eq!(h.b1r32(0x3000), 0xaaaa, "{chip}");
        assert_eq!(h.count(Kind::StaleTlb), 1, "{chip}");
        // A write goes to the old page too.
        h.b1w32(0x3004, 0x1234);
        assert_eq!(h.r32(0x1000_0004), 0x1234);
        assert_eq!(h.count(Kind::StaleTlb), 2);
        let pdb = h.pdb;
        let polls = h.invalidate(pdb, false);
        assert_eq!(polls, 1, "default delay: the first poll sees TRIGGER set");
        assert_eq!(h.b1r32(0x3000), 0xbbbb, "{chip}");
        assert_eq!(h.count(Kind::StaleTlb), 2);
        // Unmap without invalidate: still served from the TLB, flagged.
        h.set_4k(0x3000, 0);
        assert_eq!(h.b1r32(0x3000), 0xbbbb);
        assert_eq!(h.count(Kind::StaleTlb), 3);
        assert_eq!(h.count(Kind::Bar1Fault), 0);
        h.invalidate(pdb, true);
        h.b1r32(0x3000);
        assert_eq!(h.count(Kind::Bar1Fault), 1);
        assert_eq!(h.gpu.rec.counters.invalidates.completed, 2);
    }
}

#[test]
fn stale_directory_entry() {
    let mut h = H::new("ga102", 1 << 30);
    h.map_4k(0x3000, 0x1000_0000, false);
    h.bind();
    h.b1r32(0x3000);
    // Point the dual PDE's small half at a new table with another mapping,
    // and touch a different 4 KiB page (not in the leaf cache): the cached
    // PDE still points at the old table.
    let new_spt = h.alloc_table();
    h.w64(new_spt + 4 * 8, v2_pte(0x1200_0000, false));
    let e = h.pd0(0x3000);
    h.w64(e + 8, v2_small(new_spt));
    h.b1r32(0x4000);
    assert_eq!(h.count(Kind::StaleTlb), 1);
    assert!(h
        .gpu
        .rec
        .violations()
        .iter()
        .any(|v| v.kind == Kind::StaleTlb));
}

#[test]
fn invalidate_one_pdb_versus_all() {
    let mut h = H::new("ga102", 1 << 30);
    h.w64(0x1000_0000, 0x1);
    h.w64(0x1100_0000, 0x2);
    h.map_4k(0x3000, 0x1000_0000, false);
    let pdb_a = h.pdb;
    h.bind();
    assert_eq!(h.b1r32(0x3000), 1);
    // A second address space B with its own root.
    let pdb_b = h.alloc_table();
    // Remap in A, then invalidate only B: A stays stale.
    h.map_4k(0x3000, 0x1100_0000, false);
    h.invalidate(pdb_b, false);
    assert_eq!(h.b1r32(0x3000), 1);
    assert_eq!(h.count(Kind::StaleTlb), 1);
    // Invalidate A by PDB.
    h.invalidate(pdb_a, false);
    assert_eq!(h.b1r32(0x3000), 2);
    // Remap back; ALL_PDB with B latched still covers A.
    h.map_4k(0x3000, 0x1000_0000, false);
    h.invalidate(pdb_b, true);
    assert_eq!(h.b1r32(0x3000), 1);
    assert_eq!(h.count(Kind::StaleTlb), 1);
    let c = &h.gpu.rec.counters.invalidates;
    assert_eq!((c.total, c.all_pdb, c.one_pdb), (3, 1, 2));
}

#[test]
fn invalidate_trigger_timing() {
    let mut h = H::new("ga102", 1 << 30);
    h.w64(0x1000_0000, 0x1);
    h.w64(0x1100_0000, 0x2);
    h.map_4k(0x3000, 0x1000_0000, false);
    h.bind();
    h.b1r32(0x3000);
    h.map_4k(0x3000, 0x1100_0000, false);
    let inv = u64::from(tlb::INVALIDATE);
    let pdb = h.pdb;
    h.gpu
        .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (pdb >> 12) << 4);
    h.gpu
        .bar0_write(inv, 4, u64::from(tlb::TRIGGER | tlb::ALL_VA));
    // Not polled yet: the invalidate has not happened.
    assert_eq!(h.b1r32(0x3000), 1);
    assert_eq!(h.gpu.bar0_read(inv, 4) >> 31, 1);
    assert_eq!(h.b1r32(0x3000), 1);
    assert_eq!(h.gpu.bar0_read(inv, 4) >> 31, 0);
    assert_eq!(h.b1r32(0x3000), 2);
    // Triggering twice without polling is flagged.
    h.gpu.bar0_write(inv, 4, u64::from(tlb::TRIGGER));
    h.gpu.bar0_write(inv, 4, u64::from(tlb::TRIGGER));
    assert_eq!(h.count(Kind::InvalidateBusy), 1);

    // Delay 0: done at once; delay 3: three busy reads.
    for (delay, busy) in [(0u64, 0u32), (3, 3)] {
        let mut cfg = Config::new(Chip::by_name("tu102").unwrap());
        cfg.vram_bytes = 1 << 30;
        cfg.invalidate_delay = delay;
        let mut g = Gpu::new(cfg).unwrap();
        g.bar0_write(inv, 4, u64::from(tlb::TRIGGER | tlb::ALL_PDB));
        let mut n = 0;
        while g.bar0_read(inv, 4) >> 31 == 1 {
            n += 1;
        }
        assert_eq!(n, busy);
    }
    // invalidate-hang: never clears.
    let mut cfg = Config::new(Chip::by_name("gh100").unwrap());
    cfg.vram_bytes = 1 << 30;
    cfg.faults.invalidate_hang = true;
    let mut g = Gpu::new(cfg).unwrap();
    g.bar0_write(inv, 4, u64::from(tlb::TRIGGER));
    for _ in 0..50 {
        assert_eq!(g.bar0_read(inv, 4) >> 31, 1);
    }
}

/// `--trace-invalidates`: one snapshot per completed invalidate, taken after
/// the completing access (poll read, or trigger write with delay 0) counted.
#[test]
fn invalidate_trace_snapshots() {
    let inv = u64::from(tlb::INVALIDATE);
    let window = 0x1700u64;
    let ap = pramin::APERTURE_BASE;
    let trig = u64::from(tlb::TRIGGER | tlb::ALL_PDB | tlb::ALL_VA);
    let traced = |delay: u64| {
        let mut cfg = Config::new(Chip::by_name("ga102").unwrap());
        cfg.vram_bytes = 1 << 30;
        cfg.invalidate_delay = delay;
        cfg.trace_invalidates = true;
        Gpu::new(cfg).unwrap()
    };

    // Delay 1: the second poll completes; its read is in the snapshot.
    let mut g = traced(1);
    g.bar0_write(window, 4, 0x100); // w1, window_moves 1
    g.bar0_write(ap, 8, 0x1234); // w2, pramin_writes 1
    g.bar0_write(ap + 8, 4, 0x5678); // w3, pramin_writes 2
    g.bar0_write(inv, 4, trig); // w4
    assert_eq!(g.bar0_read(inv, 4) >> 31, 1); // r1: busy
    assert_eq!(g.bar0_read(ap, 4), 0x1234); // r2, pramin_reads 1
    assert_eq!(g.bar0_read(inv, 4) >> 31, 0); // r3: done -> #1
    assert_eq!(g.bar0_read(inv, 4) >> 31, 0); // r4: nothing pending
    g.bar0_write(ap + 16, 8, 1); // w5, pramin_writes 3
    g.bar0_write(window, 4, 0x101); // w6, window_moves 2
    g.bar0_write(inv, 4, trig); // w7
    assert_eq!(g.bar0_read(inv, 4) >> 31, 1); // r5
    assert_eq!(g.bar0_read(inv, 4) >> 31, 0); // r6: done -> #2
                                              // A trigger while one is pending completes the old one at that write.
    g.bar0_write(inv, 4, trig); // w8
    g.bar0_write(ap, 4, 2); // w9, pramin_writes 4
    g.bar0_write(inv, 4, trig); // w10: invalidate_busy, #3 completes
    assert_eq!(g.bar0_read(inv, 4) >> 31, 1); // r7
    assert_eq!(g.bar0_read(inv, 4) >> 31, 0); // r8: done -> #4
    assert_eq!(g.rec.count(Kind::InvalidateBusy), 1);
    let want: &[[u64; 6]] = &[
        [1, 3, 4, 1, 2, 1],
        [2, 6, 7, 1, 3, 2],
        [3, 6, 10, 1, 4, 2],
        [4, 8, 10, 1, 4, 2],
    ];
    assert_eq!(g.rec.invalidate_trace(), Some(want));
    let v = g.report();
    assert_eq!(v["invalidate_trace"], json!(want));
    assert_eq!(v["invalidate_trace_dropped"], json!(0));
    assert_eq!(v["counters"]["invalidates"]["completed"], json!(4));
    assert_eq!(v["counters"]["bar0_reads"]["total"], json!(8));

    // Delay 0: the trigger write completes it and is in the snapshot.
    let mut g = traced(0);
    g.bar0_write(window, 4, 0x100); // w1, window_moves 1
    g.bar0_write(ap, 8, 7); // w2, pramin_writes 1
    g.bar0_write(inv, 4, trig); // w3 -> #1
    assert_eq!(g.bar0_read(inv, 4) >> 31, 0); // r1: no entry
    g.bar0_write(ap + 8, 2, 7); // w4, pramin_writes 2
    assert_eq!(g.bar0_read(ap, 8), 7); // r2, pramin_reads 1
    g.bar0_write(inv, 4, trig); // w5 -> #2
                                // A 1-byte write of TRIGGER (read-modify-write of the register: the
                                // internal read is not an access) -> #3.
    g.bar0_write(inv + 3, 1, 0x80); // w6
    g.bar0_write(window, 4, 0x200); // w7, window_moves 2
    g.bar0_write(ap, 4, 1); // w8, pramin_writes 3
    g.bar0_write(inv, 4, trig); // w9 -> #4
    let want: &[[u64; 6]] = &[
        [1, 0, 3, 0, 1, 1],
        [2, 2, 5, 1, 2, 1],
        [3, 2, 6, 1, 2, 1],
        [4, 2, 9, 1, 3, 2],
    ];
    assert_eq!(g.rec.invalidate_trace(), Some(want));
    assert_eq!(g.report()["invalidate_trace"], json!(want));

    // Without the flag the keys are absent; the counters are unchanged.
    let mut cfg = Config::new(Chip::by_name("ga102").unwrap());
    cfg.vram_bytes = 1 << 30;
    let mut g = Gpu::new(cfg).unwrap();
    g.bar0_write(inv, 4, trig);
    g.bar0_read(inv, 4);
    g.bar0_read(inv, 4);
    assert_eq!(g.rec.invalidate_trace(), None);
    let v = g.report();
    assert!(v.get("invalidate_trace").is_none());
    assert!(v.get("invalidate_trace_dropped").is_none());
    assert_eq!(v["counters"]["invalidates"]["completed"], json!(1));
}

#[test]
fn cache_level_pte_only_keeps_directory_entries() {
    let mut h = H::new("gh100", 1 << 30);
    h.map_4k(0x3000, 0x1000_0000, false);
    h.bind();
    h.b1r32(0x3000);
    let new_spt = h.alloc_table();
    h.w64(new_spt + 3 * 8, v3_pte(0x1200_0000, false));
    let e = h.pd0(0x3000);
    h.w64(e + 8, v3_small(new_spt));
    let inv = u64::from(tlb::INVALIDATE);
    // CACHE_LEVEL = PTE_ONLY (1): the cached dual PDE survives.
    h.gpu
        .bar0_write(inv, 4, u64::from(tlb::TRIGGER | tlb::ALL_PDB | (1 << 24)));
    while h.gpu.bar0_read(inv, 4) >> 31 == 1 {}
    h.b1r32(0x3000);
    assert_eq!(h.count(Kind::StaleTlb), 1);
    // CACHE_LEVEL = UP_TO_PDE0 (2) drops it.
    h.gpu
        .bar0_write(inv, 4, u64::from(tlb::TRIGGER | tlb::ALL_PDB | (2 << 24)));
    while h.gpu.bar0_read(inv, 4) >> 31 == 1 {}
    h.b1r32(0x3000);
    assert_eq!(h.count(Kind::StaleTlb), 1);
}

#[test]
fn bar1_binding_problems() {
    // Unbound BAR1 faults.
    let mut h = H::new("ga102", 1 << 30);
    h.b1r32(0);
    assert_eq!(h.count(Kind::Bar1Fault), 1);
    assert!(h.gpu.rec.violations()[0].detail.contains("not bound"));
    // Instance block never written: poison.
    h.bind_raw(48 * MIB);
    assert_eq!(h.count(Kind::BadInstanceBlock), 1);
    assert!(h.gpu.rec.violations()[1].detail.contains("poison"));
    // Legacy format bit clear.
    let pdb = h.pdb;
    h.w64(40 * MIB + 0x200, (pdb & 0xffff_f000) | (1 << 11));
    h.bind_raw(40 * MIB);
    assert_eq!(h.count(Kind::BadInstanceBlock), 2);
    h.b1r32(0);
    assert_eq!(h.count(Kind::Bar1Fault), 2);
    // A good bind works and is counted.
    h.map_4k(0, 0x1000_0000, false);
    h.bind();
    h.b1r32(0);
    assert_eq!(h.count(Kind::Bar1Fault), 2);
    assert_eq!(h.gpu.rec.counters.bar1_binds, 3);
    // Physical mode: BAR1 offset = VRAM address.
    h.gpu.bar0_write(0xb8_0f40, 4, 0);
    h.w64(0x5000, 0x4242);
    assert_eq!(h.b1r32(0x5000), 0x4242);
}

#[test]
fn hopper_bind_uses_high_register() {
    let mut h = H::new("gb202", 8 << 30);
    // Page tables above 4 GiB.
    h.next = 5 << 30;
    h.pdb = h.alloc_table();
    h.map_4k(0x1000, 0x1_2000_0000, false);
    let pdb = h.pdb;
    h.bind_pdb((6 << 30) + 0x1000, pdb);
    h.b1w32(0x1000, 99);
    assert_eq!(h.r32(0x1_2000_0000), 99);
    assert_eq!(h.gpu.rec.unexpected(), 0);
    // LOW reads back without PENDING/OUTSTANDING.
    assert_eq!(h.gpu.bar0_read(0xb8_0f60, 4) & 3, 0);
    assert_eq!(h.gpu.bar0_read(0xb8_0f64, 4), 1);
}

#[test]
fn window_registers_per_chip() {
    for chip in crate::chip::CHIPS.iter() {
        let mut g = gpu_for(chip.name, 1 << 30);
        let reg = u64::from(chip.window.offset());
        g.bar0_write(reg, 4, 0xffff_ffff);
        assert_eq!(
            g.bar0_read(reg, 4),
            u64::from(chip.window.writable_mask()),
            "{}",
            chip.name
        );
        let other = if reg == 0x1700 { 0x10fd40 } else { 0x1700 };
        assert_eq!(
            g.bar0_read(other, 4),
            u64::from(crate::regs::PRI_ERROR_VALUE)
        );
        assert_eq!(g.rec.count(Kind::UnknownRegister), 0);
        g.bar0_write(other, 4, 1);
        assert_eq!(g.rec.count(Kind::UnknownRegister), 1, "{}", chip.name);
        assert_eq!(g.rec.counters.window_moves, 1);
    }
}

#[test]
fn firmware_registers_through_bar0() {
    for chip in crate::chip::CHIPS.iter() {
        let mut g = raw_gpu(chip.name, chip.default_vram);
        assert_eq!(g.bar0_read(0, 4), u64::from(chip.boot0()));
        assert_eq!(g.bar0_read(0xa00, 4), u64::from(chip.boot42()));
        // The priv level mask shows the read protection raised for a while after reset.
        for _ in 0..crate::sequence::PLM_RAISED_READS {
            assert_eq!(g.bar0_read(0x118128, 4) & 1, 0);
        }
        assert_eq!(g.bar0_read(0x118128, 4) & 1, 1);
        assert_eq!(g.bar0_read(0x118234, 4) & 0xff, 0xff);
        assert_eq!(g.rec.count(Kind::GfwReadBeforePlm), 0);
        let wpr2_hi = if chip.architecture >= 0x1a {
            0x88a828
        } else {
            0x1fa828
        };
        assert_eq!(g.bar0_read(wpr2_hi, 4), 0);
        let vga = g.bar0_read(0x625f04, 4);
        assert_eq!((vga >> 8) << 16, chip.default_vram - MIB);
        match chip.fb_size {
            crate::chip::FbSizeReg::UsableFbSizeMb => {
                assert_eq!(g.bar0_read(0x1183a4, 4), chip.default_vram >> 20)
            }
            crate::chip::FbSizeReg::LocalMemoryRange => {
                let v = g.bar0_read(0x100ce0, 4);
                assert_eq!(((v >> 4) & 0x3f) << (v & 0xf), chip.default_vram >> 20);
            }
        }
        // Read-only: writes are violations and change nothing.
        g.bar0_write(0, 4, 0);
        assert_eq!(g.bar0_read(0, 4), u64::from(chip.boot0()));
        assert_eq!(g.rec.count(Kind::ReadOnlyRegister), 1);
        // Byte and 8-byte reads.
        assert_eq!(g.bar0_read(0xa03, 1), u64::from(chip.boot42() >> 24));
        assert_eq!(g.bar0_read(0xa02, 2), u64::from(chip.boot42() >> 16));
        let lo = if chip.architecture >= 0x1a {
            0x88a824
        } else {
            0x1fa824
        };
        let both = g.bar0_read(lo, 8);
        assert_eq!(both, 0);
    }
}

#[test]
fn reserved_vram_is_flagged() {
    let mut h = H::new("ga102", 1 << 30);
    let fb_end = 1u64 << 30;
    // Last byte below FRTS: fine.
    h.w64(fb_end - 2 * MIB - 8, 1);
    assert_eq!(h.count(Kind::ReservedVram), 0);
    // FRTS and VGA workspace: flagged.
    h.w64(fb_end - 2 * MIB, 1);
    h.r32(fb_end - 4);
    assert_eq!(h.count(Kind::ReservedVram), 2);
    let names: Vec<_> = h
        .gpu
        .rec
        .violations()
        .iter()
        .map(|v| v.fields["region"].clone())
        .collect();
    assert_eq!(names, vec!["frts", "vga_workspace"]);
    // Through BAR1 as well.
    h.map_4k(0x1000, fb_end - MIB, false);
    h.bind();
    h.b1r32(0x1000);
    assert_eq!(h.count(Kind::ReservedVram), 3);
}

#[test]
fn wpr2_reserved_range() {
    let mut cfg = Config::new(Chip::by_name("ad102").unwrap());
    cfg.vram_bytes = 1 << 30;
    cfg.wpr2 = true;
    let mut g = Gpu::new(cfg).unwrap();
    let lo = (g.bar0_read(0x1fa824, 4) >> 4) << 12;
    let hi = (g.bar0_read(0x1fa828, 4) >> 4) << 12;
    assert!(lo > 0 && hi > lo);
    g.bar0_write(0x1700, 4, lo >> 16);
    g.bar0_write(pramin::APERTURE_BASE + (lo & 0xffff), 4, 0);
    assert_eq!(g.rec.count(Kind::ReservedVram), 1);
    assert_eq!(g.rec.violations()[0].fields["region"], "wpr2");
}

#[test]
fn pramin_out_of_range_and_sysmem() {
    let mut g = raw_gpu("tu102", 1 << 30);
    g.bar0_write(0x1700, 4, (1u64 << 30) >> 16);
    assert_eq!(g.bar0_read(pramin::APERTURE_BASE, 4), 0xffff_ffff);
    g.bar0_write(pramin::APERTURE_BASE, 4, 5);
    assert_eq!(g.rec.count(Kind::PraminOutOfRange), 2);
    assert_eq!(g.vram.touched_chunks(), 0);
    // Straddling the end of VRAM.
    g.bar0_write(0x1700, 4, ((1u64 << 30) - MIB) >> 16);
    g.bar0_read(pramin::APERTURE_BASE + 0xffffc, 8);
    assert_eq!(g.rec.count(Kind::PraminOutOfRange), 3);
    // TARGET = SYS_MEM_COHERENT.
    g.bar0_write(0x1700, 4, 2 << 24);
    assert_eq!(g.bar0_read(pramin::APERTURE_BASE, 4), 0xffff_ffff);
    assert_eq!(g.rec.count(Kind::PraminSysmem), 1);
    let c = &g.rec.counters;
    assert_eq!(c.pramin_reads.total, 3);
    assert_eq!(c.pramin_writes.total, 1);
    assert_eq!(c.bar0_reads.b4, 2);
    assert_eq!(c.bar0_reads.b8, 1);
}

#[test]
fn pramin_access_sizes() {
    let mut h = H::new("gb202", 1 << 30);
    h.gpu.bar0_write(0x10fd40, 4, 0x10);
    let a = pramin::APERTURE_BASE + 0x100;
    h.gpu.bar0_write(a, 1, 0x11);
    h.gpu.bar0_write(a + 1, 1, 0x22);
    h.gpu.bar0_write(a + 2, 2, 0x4433);
    assert_eq!(h.gpu.bar0_read(a, 4), 0x4433_2211);
    h.gpu.bar0_write(a + 8, 8, 0x0102_0304_0506_0708);
    assert_eq!(h.gpu.bar0_read(a + 12, 4), 0x0102_0304);
    assert_eq!(h.r32(0x10_0100), 0x4433_2211);
}

#[test]
fn unknown_registers() {
    let mut g = gpu_for("ga102", 1 << 30);
    assert_eq!(g.bar0_read(0x123456, 4), 0xbadf_1100);
    assert_eq!(g.bar0_read(0x123456, 4), 0xbadf_1100);
    assert_eq!(g.rec.counters.unknown_reg_reads, 2);
    assert_eq!(g.rec.unexpected(), 0);
    g.bar0_write(0x123456, 4, 1);
    assert_eq!(g.rec.counters.unknown_reg_writes, 1);
    assert_eq!(g.rec.count(Kind::UnknownRegister), 1);
    let r = g.report();
    assert_eq!(r["unknown_reads"][0]["offset"], "0x123454");
    assert_eq!(r["unknown_reads"][0]["reads"], 2);
}

#[test]
fn fault_injection() {
    let mut cfg = Config::new(Chip::by_name("ga102").unwrap());
    cfg.vram_bytes = 1 << 30;
    cfg.faults.device_gone = true;
    let mut g = Gpu::new(cfg).unwrap();
    assert_eq!(g.bar0_read(0, 4), 0xffff_ffff);
    assert_eq!(g.bar0_read(0, 8), u64::MAX);
    let mut b = [0u8; 4];
    g.bar1_read(0, &mut b);
    assert_eq!(b, [0xff; 4]);
    g.bar0_write(0x1700, 4, 5);
    assert_eq!(g.window.read(), 0);
    assert_eq!(g.rec.unexpected(), 0);

    let mut cfg = Config::new(Chip::by_name("ga102").unwrap());
    cfg.vram_bytes = 1 << 30;
    cfg.faults.unknown_chip = true;
    let mut g = Gpu::new(cfg).unwrap();
    let boot42 = g.bar0_read(0xa00, 4);
    assert_eq!(boot42 >> 24, 0x1f);
    assert_eq!((g.bar0_read(0, 4) >> 24) & 0x1f, 0x1f);
}

#[test]
fn report_format() {
    let mut h = H::new("ga102", 1 << 30);
    h.b1r32(0);
    h.gpu.rec.expect(Kind::Bar1Fault);
    h.gpu.bar0_write(0x555550, 4, 1);
    let text = serde_json::to_string_pretty(&h.gpu.report()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["chip"], "ga102");
    assert_eq!(v["vram_bytes"], 1u64 << 30);
    assert_eq!(v["pci_device_id"], "0x2204");
    let c = &v["counters"];
    for k in [
        "bar0_reads",
        "bar0_writes",
        "bar1_reads",
        "bar1_writes",
        "pramin_reads",
        "pramin_writes",
    ] {
        for s in ["1", "2", "4", "8", "total"] {
            assert!(c[k][s].is_u64(), "{k}.{s}");
        }
    }
    for k in [
        "window_moves",
        "bar1_faults",
        "unknown_reg_reads",
        "unknown_reg_writes",
        "bar1_binds",
    ] {
        assert!(c[k].is_u64(), "{k}");
    }
    for k in ["total", "all_pdb", "hub_only"] {
        assert!(c["invalidates"][k].is_u64(), "{k}");
    }
    assert!(c["pramin_writes"]["8"].as_u64().unwrap() > 500);
    assert_eq!(v["violation_counts"]["bar1_fault"], 1);
    assert_eq!(v["violation_counts"]["unknown_register"], 1);
    assert_eq!(v["unexpected_violations"], 1);
    let vs = v["violations"].as_array().unwrap();
    assert_eq!(vs.len(), 2);
    assert_eq!(vs[0]["kind"], "bar1_fault");
    assert_eq!(vs[0]["expected"], true);
    assert!(vs[0]["detail"].as_str().unwrap().contains("0x0"));
    assert_eq!(vs[1]["kind"], "unknown_register");
    assert_eq!(vs[1]["expected"], false);
    assert_eq!(vs[1]["offset"], 0x555550);
    assert_eq!(v["reserved"][0]["name"], "vga_workspace");
    assert_eq!(v["bar1_binding"]["mode"], "unbound");
}

#[test]
fn reset_keeps_vram() {
    let mut h = H::new("ga102", 1 << 30);
    h.map_4k(0, 0x1000_0000, false);
    h.bind();
    h.b1w32(0, 7);
    h.gpu.reset();
    assert_eq!(h.gpu.window.read(), 0);
    assert_eq!(h.gpu.bar1.binding, crate::bar1::Binding::Unbound);
    assert_eq!(h.r32(0x1000_0000), 7);
}

/// A small deterministic generator for the robustness tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 ^ (self.0 >> 29)
    }
}

#[test]
fn random_input_never_panics() {
    for chip in ["tu102", "ga102", "gh100", "gb202"] {
        let mut g = gpu_for(chip, 256 * MIB);
        let mut r = Lcg(0x1234_5678 ^ chip.len() as u64);
        let window = u64::from(g.chip.window.offset());
        let regs = [
            0u64, 0xa00, window, 0x1700, 0x10fd40, 0xb8_0f40, 0xb8_0f60, 0xb8_0f64, 0xb8_30a0,
            0xb8_30a4, 0xb8_30b0, 0x70000, 0x1fa824, 0x625f04,
        ];
        // Fill the first 4 MiB with random entries through PRAMIN.
        g.bar0_write(window, 4, 0);
        for i in 0..(1 << 14) {
            let v = r.next();
            g.bar0_write(pramin::APERTURE_BASE + (i * 64) % (1 << 20), 8, v);
        }
        for _ in 0..20_000 {
            let v = r.next();
            let size = [1usize, 2, 4, 8][(v & 3) as usize];
            match (v >> 2) % 6 {
                0 => {
                    let off = regs[((v >> 8) % regs.len() as u64) as usize];
                    let val = r.next();
                    // Keep BAR1 bound to the random area now and then.
                    let val = if off == 0xb8_0f40 {
                        val & 0x8000_03ff
                    } else {
                        val
                    };
                    g.bar0_write(off, 4, val);
                }
                1 => {
                    let off = regs[((v >> 8) % regs.len() as u64) as usize];
                    g.bar0_read(off, size);
                }
                2 => {
                    let off = (v >> 8) % BAR0_SIZE;
                    g.bar0_read(off & !(size as u64 - 1), size);
                }
                3 => {
                    let mut b = vec![0u8; (v >> 40) as usize % 9000];
                    g.bar1_read((v >> 8) % (256 << 20), &mut b);
                }
                4 => {
                    let b = vec![0x5au8; (v >> 40) as usize % 64];
                    g.bar1_write((v >> 8) % (1 << 22), &b);
                }
                _ => {
                    g.bar0_write(
                        pramin::APERTURE_BASE + ((v >> 8) % (1 << 20)),
                        size,
                        r.next(),
                    );
                }
            }
        }
        let report = g.report();
        assert!(report["counters"]["bar1_reads"]["total"].as_u64().unwrap() > 0);
    }
}

// --- The ordering rules of HARDWARE.md §9 (crate::sequence): each wrong sequence recorded,
// the right one not. ---

/// An invalidate without the flush read after the table writes (kbusFlush_GM107).
#[test]
fn invalidate_needs_the_flush_read() {
    for chip in ["ga102", "gh100"] {
        let mut h = H::new(chip, 1 << 30);
        h.bind();
        let pdb = h.pdb;
        h.invalidate(pdb, false);
        h.map_4k(0x1000, 0x20_0000, false);
        // The wrong order: no PRAMIN read between the writes and the trigger.
        h.gpu
            .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (pdb >> 12) << 4);
        h.gpu.bar0_write(u64::from(tlb::INVALIDATE_UPPER_PDB), 4, 0);
        h.gpu.bar0_write(
            u64::from(tlb::INVALIDATE),
            4,
            u64::from(tlb::TRIGGER | tlb::ALL_VA),
        );
        while h.gpu.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {}
        assert_eq!(h.count(Kind::UnflushedPramin), 1, "{chip}");
        // The right one.
        h.map_4k(0x2000, 0x20_1000, false);
        h.invalidate(pdb, false);
        assert_eq!(h.count(Kind::UnflushedPramin), 1, "{chip}");
        // NV_UFLUSH flushes too.
        h.map_4k(0x3000, 0x20_2000, false);
        h.gpu.bar0_write(u64::from(crate::regs::UFLUSH), 4, 1);
        h.gpu
            .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (pdb >> 12) << 4);
        h.gpu.bar0_write(
            u64::from(tlb::INVALIDATE),
            4,
            u64::from(tlb::TRIGGER | tlb::ALL_VA),
        );
        while h.gpu.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {}
        assert_eq!(h.count(Kind::UnflushedPramin), 1, "{chip}");
        // A BAR1 access to memory with posted writes.
        h.w64(0x20_1000, 7);
        let mut b = [0u8; 4];
        h.gpu.bar1_read(0x2000, &mut b);
        assert_eq!(h.count(Kind::UnflushedPramin), 2, "{chip}");
    }
}

/// Hopper/Blackwell: LOW alone binds nothing; HIGH triggers (kbusBar1InstBlkBind_GH100).
#[test]
fn hopper_low_write_alone_does_not_bind() {
    let mut h = H::new("gh100", 1 << 30);
    let pdb = h.pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    let inst = 32 * MIB;
    let lo = (pdb & 0xffff_f000) | (1 << 11);
    h.w64(inst + 0x200, lo);
    h.flush();
    // The old order: HIGH, then LOW.
    h.gpu.bar0_write(0xb8_0f64, 4, 0);
    assert_eq!(h.gpu.rec.counters.bar1_binds, 1);
    h.gpu
        .bar0_write(0xb8_0f60, 4, (inst & 0xffff_f000) | (1 << 9));
    while h.gpu.bar0_read(0xb8_0f60, 4) & 3 != 0 {}
    // The HIGH write bound the old (zero) LOW value: physical mode, not the block.
    assert_eq!(h.gpu.bar1.binding, Binding::Physical);
    let mut b = [0u8; 4];
    h.gpu.bar1_read(0x1000, &mut b);
    assert_eq!(h.count(Kind::Bar1BindLowOnly), 1);
    // The right order binds the block.
    h.bind_raw(inst);
    assert!(matches!(h.gpu.bar1.binding, Binding::Virtual { .. }));
    h.b1r32(0x1000);
    assert_eq!(h.count(Kind::Bar1BindLowOnly), 1);
    // A LOW write the run ends on.
    h.gpu.bar0_write(0xb8_0f60, 4, 0);
    h.gpu.end_of_run();
    assert_eq!(h.count(Kind::Bar1BindLowOnly), 2);
}

/// BAR1 used before a poll showed the bind complete (kbusBar1InstBlkBind_TU102).
#[test]
fn bar1_waits_for_the_bind_poll() {
    for chip in ["ga102", "gb202"] {
        let mut h = H::new(chip, 1 << 30);
        let pdb = h.pdb;
        h.map_4k(0x1000, 0x20_0000, false);
        let inst = 32 * MIB;
        h.w64(inst + 0x200, (pdb & 0xffff_f000) | (1 << 10) | (1 << 11));
        h.w64(inst + 0x208, 0xcafe_ca11 << 32);
        h.flush();
        if chip == "ga102" {
            h.gpu.bar0_write(0xb8_0f40, 4, 0x8000_0000 | (inst >> 12));
        } else {
            h.gpu
                .bar0_write(0xb8_0f60, 4, (inst & 0xffff_f000) | (1 << 9));
            h.gpu.bar0_write(0xb8_0f64, 4, 0);
        }
        let mut b = [0u8; 4];
        h.gpu.bar1_read(0x1000, &mut b);
        assert_eq!(h.count(Kind::Bar1BeforeBindComplete), 1, "{chip}");
        // With the poll: none.
        h.bind_raw(inst);
        h.b1r32(0x1000);
        assert_eq!(h.count(Kind::Bar1BeforeBindComplete), 1, "{chip}");
        assert_eq!(h.count(Kind::InstBlockMagicMissing), 0, "{chip}");
    }
    // Blackwell without the magic in word 131.
    let mut h = H::new("gb202", 1 << 30);
    let pdb = h.pdb;
    let inst = 32 * MIB;
    h.w64(inst + 0x200, (pdb & 0xffff_f000) | (1 << 11));
    h.bind_raw(inst);
    assert_eq!(h.count(Kind::InstBlockMagicMissing), 1);
}

/// TU10x: an unmap covered without SYS_MEMBAR and ACK=GLOBALLY; an upgrade needs neither.
#[test]
fn tu10x_downgrade_needs_membar() {
    let mut h = H::new("tu102", 1 << 30);
    h.bind();
    let pdb = h.pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    h.invalidate(pdb, false);
    // Upgrade (a map): plain invalidate.
    h.map_4k(0x2000, 0x20_1000, false);
    h.invalidate(pdb, false);
    assert_eq!(h.count(Kind::DowngradeWithoutMembar), 0);
    // Unmap without the membar form.
    h.set_4k(0x1000, 0);
    h.invalidate(pdb, false);
    assert_eq!(h.count(Kind::DowngradeWithoutMembar), 1);
    // With SYS_MEMBAR | ACK_GLOBALLY.
    h.set_4k(0x2000, 0);
    h.flush();
    h.gpu
        .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (pdb >> 12) << 4);
    h.gpu.bar0_write(
        u64::from(tlb::INVALIDATE),
        4,
        u64::from(tlb::TRIGGER | tlb::ALL_VA | tlb::SYS_MEMBAR | (1 << 7)),
    );
    while h.gpu.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {}
    assert_eq!(h.count(Kind::DowngradeWithoutMembar), 1);
    // Not a rule on GA102.
    let mut h = H::new("ga102", 1 << 30);
    h.bind();
    let pdb = h.pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    h.invalidate(pdb, false);
    h.set_4k(0x1000, 0);
    h.invalidate(pdb, false);
    assert_eq!(h.count(Kind::DowngradeWithoutMembar), 0);
}

/// The PDB written while an invalidate is pending, one left in flight at reset.
#[test]
fn no_pdb_write_while_an_invalidate_is_pending() {
    let mut cfg = Config::new(Chip::by_name("ga102").unwrap());
    cfg.vram_bytes = 1 << 30;
    cfg.faults.invalidate_in_flight = true;
    let mut g = Gpu::new(cfg).unwrap();
    // A driver that does not look first.
    g.bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, 0x100);
    assert_eq!(g.rec.count(Kind::InvalidateBusy), 1);
    // One that waits for TRIGGER to clear first sees it clear after two reads.
    g.reset();
    let mut busy = 0;
    while g.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {
        busy += 1;
    }
    assert_eq!(busy, 2);
    g.bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, 0x100);
    assert_eq!(g.rec.count(Kind::InvalidateBusy), 1);
    // A read with nothing pending is counted as such.
    g.bar0_read(u64::from(tlb::INVALIDATE), 4);
    assert_eq!(g.rec.counters.invalidates.idle_reads, 1);
}

/// GROUP_05 read before the priv level mask showed lowered (_gpuIsGfwBootCompleted_TU102).
#[test]
fn gfw_progress_only_after_the_plm() {
    let mut g = raw_gpu("ga102", 1 << 30);
    assert_eq!(
        g.bar0_read(0x118234, 4),
        u64::from(crate::regs::PRI_ERROR_VALUE)
    );
    assert_eq!(g.rec.count(Kind::GfwReadBeforePlm), 1);
    while g.bar0_read(0x118128, 4) & 1 == 0 {}
    assert_eq!(g.bar0_read(0x118234, 4) & 0xff, 0xff);
    assert_eq!(g.rec.count(Kind::GfwReadBeforePlm), 1);
}

/// A v3 PTE of KIND INVALID (7) used through BAR1.
#[test]
fn v3_invalid_kind() {
    let mut h = H::new("gh100", 1 << 30);
    h.bind();
    let pdb = h.pdb;
    h.set_4k(0x1000, 1 | (7 << 8) | 0x20_0000);
    h.set_4k(0x2000, 1 | (6 << 8) | 0x20_1000);
    h.invalidate(pdb, false);
    h.b1r32(0x2000);
    assert_eq!(h.count(Kind::UndefinedKind), 0);
    h.b1r32(0x1000);
    assert_eq!(h.count(Kind::UndefinedKind), 1);
}

/// Entries zeroed in a table that the driver then unlinks (an emptied table reclaimed), with
/// one flush and one invalidate of the directory after both: the invalidate drops everything
/// cached for the directory, so it covers the entries of the table it no longer reaches. Left
/// uncovered, they would be charged to whichever known directory reaches that memory at the
/// end of the session (the stale root of a space that is gone, whose table memory was
/// reused), as the soak once saw. Without the invalidate they stay uncovered.
#[test]
fn entries_of_an_unlinked_table_are_covered() {
    for chip in ["ga102", "gh100"] {
        for invalidate in [true, false] {
            let mut h = H::new(chip, 1 << 30);
            h.bind();
            let pdb = h.alloc_table();
            h.pdb = pdb;
            h.map_4k(0x1000, 0x20_0000, true);
            h.map_4k(0x2000, 0x20_1000, true);
            h.invalidate(pdb, false);
            let spt = h.spt(0x1000);
            h.set_4k(0x1000, 0);
            h.set_4k(0x2000, 0);
            // The dual PDE without its small table: the table is unlinked.
            h.set_dual(0x1000, 0, 0);
            h.flush();
            if invalidate {
                h.invalidate(pdb, false);
            }
            let left = (spt..spt + 0x1000)
                .step_by(8)
                .filter(|q| h.gpu.seq.global.contains_key(q))
                .count();
            assert_eq!(left, if invalidate { 0 } else { 2 }, "{chip}");
            // Without it, the unlinking directory entry itself is uncovered.
            h.gpu.end_of_run();
            let n = h.count(Kind::UncoveredPteChange);
            assert_eq!(n, u64::from(!invalidate), "{chip}");
        }
    }
}

/// Entry changes left uncovered: none invalidated, one invalidated before the writes, a
/// hub-only invalidate of a GPU address space.
#[test]
fn entry_changes_must_be_covered() {
    // Right: write, flush, invalidate.
    let mut h = H::new("ga102", 1 << 30);
    h.bind();
    let gpu_pdb = h.alloc_table();
    let bar_pdb = h.pdb;
    h.pdb = gpu_pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    h.invalidate(gpu_pdb, false);
    h.map_4k(0x2000, 0x20_1000, false);
    h.invalidate(gpu_pdb, false);
    h.gpu.end_of_run();
    assert_eq!(h.count(Kind::UncoveredPteChange), 0);
    // An invalidate before the writes, then none.
    h.invalidate(gpu_pdb, false);
    h.map_4k(0x3000, 0x20_2000, false);
    h.flush();
    h.gpu.end_of_run();
    assert_eq!(h.count(Kind::UncoveredPteChange), 1);
    // A hub-only invalidate does not reach a GPU address space's TLBs.
    let mut h = H::new("ga102", 1 << 30);
    h.bind();
    let gpu_pdb = h.alloc_table();
    h.pdb = gpu_pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    h.invalidate(gpu_pdb, false);
    h.map_4k(0x2000, 0x20_1000, false);
    h.flush();
    h.gpu
        .bar0_write(u64::from(tlb::INVALIDATE_PDB), 4, (gpu_pdb >> 12) << 4);
    h.gpu.bar0_write(
        u64::from(tlb::INVALIDATE),
        4,
        u64::from(tlb::TRIGGER | tlb::ALL_VA | tlb::HUBTLB_ONLY),
    );
    while h.gpu.bar0_read(u64::from(tlb::INVALIDATE), 4) & u64::from(tlb::TRIGGER) != 0 {}
    h.gpu.end_of_run();
    assert_eq!(h.count(Kind::UncoveredPteChange), 1);
    // ... but it does reach BAR1's.
    h.pdb = bar_pdb;
    let _ = h;
}

/// Page-table memory unlinked from a directory, written before the invalidate that unlinked it
/// completed (a table freed and reused too early); after the invalidate it is fine.
#[test]
fn unlinked_tables_wait_for_their_invalidate() {
    let mut h = H::new("ga102", 1 << 30);
    h.bind();
    let pdb = h.pdb;
    h.map_4k(0x1000, 0x20_0000, false);
    h.invalidate(pdb, false);
    let spt = h.spt(0x1000);
    // Unlink the small table (the small half of its dual PDE) and write into it at once.
    let pd0 = h.pd0(0x1000);
    h.w64(pd0 + 8, 0);
    h.w64(spt, 0x1234);
    assert_eq!(h.count(Kind::PtReuseBeforeInvalidate), 1);
    // After the invalidate that covers the unlink, the memory may be reused.
    h.invalidate(pdb, false);
    h.w64(spt + 8, 0x5678);
    assert_eq!(h.count(Kind::PtReuseBeforeInvalidate), 1);
}
