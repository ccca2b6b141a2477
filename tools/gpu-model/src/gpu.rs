// SPDX-License-Identifier: MIT OR Apache-2.0

//! The model core: one GPU's state and its BAR0/BAR1 access paths.
//!
//! [`Gpu`] ties the hardware units together and is testable without any
//! socket: tests and the vfio-user backend call [`Gpu::bar0_read`],
//! [`Gpu::bar0_write`], [`Gpu::bar1_read`] and [`Gpu::bar1_write`].

use serde_json::{json, Map, Value};

use crate::bar1::{Bar1, Binding};
use crate::chip::{Chip, MmuVersion};
use crate::fw::{FwError, FwState};
use crate::hostile::{self, Hostile};
use crate::mmu::{self, EntrySource, Fault, Leaf, Level};
use crate::pramin::{self, Window};
use crate::report::{fields, Kind, Recorder};
use crate::sequence::Sequence;
use crate::tlb::{self, InvalidateRegs, Request, Tlb};
use crate::vram::Vram;

/// BAR0 size (16 MiB, 32-bit non-prefetchable memory).
pub const BAR0_SIZE: u64 = 16 << 20;

/// Fault injection switches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// TRIGGER never clears.
    pub invalidate_hang: bool,
    /// Every BAR read returns all-ones; writes are dropped.
    pub device_gone: bool,
    /// BOOT_0/BOOT_42 report an architecture no driver knows.
    pub unknown_chip: bool,
    /// The firmware never finished booting (GFW boot progress / FSP boot-complete never set).
    pub boot_incomplete: bool,
    /// Close the connection after this many BAR accesses.
    pub disconnect_after: Option<u64>,
    /// After every reset an invalidate is still in flight (left by whoever had the GPU
    /// before): TRIGGER reads 1 for the first reads. A driver must wait for it before writing
    /// the PDB (`kgmmuCheckPendingInvalidates_TU102`).
    pub invalidate_in_flight: bool,
}

impl Faults {
    /// Names of the active faults, for the report.
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.invalidate_hang {
            v.push("invalidate-hang".to_string());
        }
        if self.device_gone {
            v.push("device-gone".to_string());
        }
        if self.unknown_chip {
            v.push("unknown-chip".to_string());
        }
        if self.boot_incomplete {
            v.push("boot-incomplete".to_string());
        }
        if let Some(n) = self.disconnect_after {
            v.push(format!("disconnect-after={n}"));
        }
        if self.invalidate_in_flight {
            v.push("invalidate-in-flight".to_string());
        }
        v
    }
}

/// Model configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Chip personality.
    pub chip: &'static Chip,
    /// Usable VRAM size.
    pub vram_bytes: u64,
    /// BAR1 size (power of two).
    pub bar1_bytes: u64,
    /// Reads of `MMU_INVALIDATE` that still see TRIGGER set.
    pub invalidate_delay: u64,
    /// Firmware owns the GPU (WPR2 set).
    pub wpr2: bool,
    /// Fault injection.
    pub faults: Faults,
    /// Violation kinds declared expected.
    pub expect: Vec<Kind>,
    /// Record a counter snapshot at each completed invalidate
    /// (`--trace-invalidates`).
    pub trace_invalidates: bool,
    /// `--hostile <seed>`: firmware registers drawn at random per reset
    /// epoch ([`crate::hostile`]).
    pub hostile: Option<u64>,
    /// `--pdbs-file <path>`: page directories the harness names (hex, whitespace-separated),
    /// read at the end of the run for the coverage rule.
    pub pdbs_file: Option<std::path::PathBuf>,
}

impl Config {
    /// Default configuration for `chip`.
    pub fn new(chip: &'static Chip) -> Self {
        Config {
            chip,
            vram_bytes: chip.default_vram,
            bar1_bytes: 256 << 20,
            invalidate_delay: 1,
            wpr2: false,
            faults: Faults::default(),
            expect: Vec::new(),
            trace_invalidates: false,
            hostile: None,
            pdbs_file: None,
        }
    }
}

/// One modelled GPU.
pub struct Gpu {
    /// Configuration.
    pub cfg: Config,
    /// Chip personality.
    pub chip: &'static Chip,
    /// Video memory.
    pub vram: Vram,
    /// Firmware-left state.
    pub fw: FwState,
    /// PRAMIN window register.
    pub window: Window,
    /// Invalidate registers.
    pub inval: InvalidateRegs,
    /// Hub TLB.
    pub tlb: Tlb,
    /// BAR1 binding.
    pub bar1: Bar1,
    /// Violations and counters.
    pub rec: Recorder,
    /// Plain storage registers.
    pub(crate) storage: std::collections::HashMap<u32, u32>,
    /// BAR accesses so far.
    pub accesses: u64,
    /// Hostile mode state (`--hostile`).
    pub hostile: Option<Hostile>,
    /// The ordering rules' state (HARDWARE.md §9).
    pub seq: Sequence,
}

/// Where a BAR1 access lands.
enum Target {
    Vram(u64),
    Sparse,
    Dropped,
}

/// Reads entries straight from VRAM (also the offline `walk` command's
/// source, so both see the same entries and errors).
pub(crate) struct FreshSource<'a> {
    /// The VRAM the tables live in.
    pub(crate) vram: &'a Vram,
    /// The last entry read (after a walk to a page: its leaf entry, low quadword).
    pub(crate) last: u64,
}

fn read_entry(vram: &Vram, addr: u64, dual: bool) -> Result<[u64; 2], String> {
    let lo = vram
        .read_u64(addr)
        .map_err(|_| format!("page-table entry at {addr:#x} is beyond VRAM"))?;
    let hi = if dual {
        vram.read_u64(addr.wrapping_add(8))
            .map_err(|_| format!("page-table entry at {addr:#x} is beyond VRAM"))?
    } else {
        0
    };
    Ok([lo, hi])
}

impl EntrySource for FreshSource<'_> {
    fn read_entry(
        &mut self,
        _level: Option<&Level>,
        _key: u64,
        addr: u64,
        dual: bool,
    ) -> Result<[u64; 2], String> {
        let r = read_entry(self.vram, addr, dual)?;
        self.last = r[0];
        Ok(r)
    }
}

/// Reads directory entries through the TLB's PDE cache.
struct CachedSource<'a> {
    vram: &'a Vram,
    tlb: &'a mut Tlb,
    pdb: u64,
}

impl EntrySource for CachedSource<'_> {
    fn read_entry(
        &mut self,
        level: Option<&Level>,
        key: u64,
        addr: u64,
        dual: bool,
    ) -> Result<[u64; 2], String> {
        if let Some(l) = level {
            if let Some(raw) = self.tlb.lookup_pde(self.pdb, l.pde, key) {
                return Ok(raw);
            }
        }
        read_entry(self.vram, addr, dual)
    }

    fn note_table(&mut self, level: &Level, key: u64, raw: [u64; 2]) {
        self.tlb.insert_pde(self.pdb, level.pde, key, raw);
    }
}

/// The effective result of a translation for one VA, for stale checks.
fn effective(r: &Result<Leaf, Fault>, va: u64) -> Option<(bool, u64, bool)> {
    match r {
        // PRIVILEGE is not enforced, so it is not part of the effect.
        Ok(Leaf::Page {
            pa,
            size,
            read_only,
            ..
        }) => Some((true, pa + (va & (size - 1)), *read_only)),
        Ok(Leaf::Sparse { .. }) => Some((false, 0, false)),
        Err(_) => None,
    }
}

fn describe(r: &Result<Leaf, Fault>, va: u64) -> String {
    match r {
        Ok(Leaf::Page {
            pa,
            size,
            read_only,
            ..
        }) => format!(
            "VRAM {:#x} ({}{} KiB page at {pa:#x})",
            pa + (va & (size - 1)),
            if *read_only { "read-only " } else { "" },
            size >> 10
        ),
        Ok(Leaf::Sparse { size }) => format!("sparse ({} KiB)", size >> 10),
        Err(f) => format!("fault at {}: {}", f.level, f.reason),
    }
}

impl Gpu {
    /// Builds a GPU in its post-firmware state.
    ///
    /// # Errors
    ///
    /// [`FwError`] if the VRAM size cannot be modelled for the chip.
    pub fn new(cfg: Config) -> Result<Self, FwError> {
        let chip = cfg.chip;
        let mut fw = FwState::new(chip, cfg.vram_bytes, cfg.wpr2)?;
        fw.set_boot_incomplete(cfg.faults.boot_incomplete);
        let mut rec = Recorder::new();
        for k in &cfg.expect {
            rec.expect(*k);
        }
        if cfg.trace_invalidates {
            rec.enable_invalidate_trace();
        }
        let hostile = cfg.hostile.map(Hostile::new);
        let mut gpu = Gpu {
            vram: Vram::new(cfg.vram_bytes),
            fw,
            window: Window::new(chip.window),
            inval: InvalidateRegs::default(),
            tlb: Tlb::default(),
            bar1: Bar1::default(),
            rec,
            storage: std::collections::HashMap::new(),
            seq: Sequence {
                plm_raised_reads: crate::sequence::PLM_RAISED_READS,
                ..Sequence::default()
            },
            accesses: 0,
            chip,
            cfg,
            hostile,
        };
        gpu.next_hostile_epoch();
        gpu.invalidate_left_in_flight();
        Ok(gpu)
    }

    /// Device reset: registers back to their post-firmware values, TLB
    /// empty, no invalidate pending, BAR1 unbound. VRAM keeps its contents.
    /// With `--hostile`, the next epoch's firmware registers are drawn (and
    /// VRAM takes the drawn size).
    pub fn reset(&mut self) {
        self.rec.counters.resets += 1;
        self.window.reset();
        self.inval.reset();
        self.tlb.flush_all();
        self.bar1 = Bar1::default();
        self.storage.clear();
        // The TLBs are empty: nothing is left to cover. FWSEC raises the GFW priv level mask
        // again until it is done.
        self.seq = Sequence {
            plm_raised_reads: crate::sequence::PLM_RAISED_READS,
            ..Sequence::default()
        };
        self.next_hostile_epoch();
        self.invalidate_left_in_flight();
    }

    /// With `--fault invalidate-in-flight`: an invalidate of every PDB is pending, its TRIGGER
    /// reading 1 for the next two reads.
    fn invalidate_left_in_flight(&mut self) {
        if self.cfg.faults.invalidate_in_flight {
            self.inval.pending = Some((
                Request {
                    ctrl: tlb::TRIGGER | tlb::ALL_VA | tlb::ALL_PDB,
                    pdb: 0,
                    pdb_sysmem: false,
                    seq: 0,
                },
                2,
            ));
        }
    }

    /// The end of a driver's session (BAR1 unbound): the coverage rule judged on what it left,
    /// then its directories and changes forgotten (the bind and flush state stays).
    pub fn end_of_session(&mut self) {
        self.check_coverage();
        self.seq.spaces.clear();
        self.seq.owners.clear();
        self.seq.global.clear();
    }

    /// What only the end of the run can tell: a LOW write never followed by HIGH, entry
    /// changes no invalidate covered. Recorded once, before the final report.
    pub fn end_of_run(&mut self) {
        // A connection cut on purpose (`--fault disconnect-after`) ends the run in the middle of
        // the driver's operations: what they had not finished is not theirs to answer for.
        if self
            .cfg
            .faults
            .disconnect_after
            .is_some_and(|n| self.accesses >= n)
        {
            eprintln!("gpu-model: connection cut on purpose: no end-of-run sequence checks");
            return;
        }
        if self.seq.low_only {
            self.seq.low_only = false;
            self.rec.violation(
                Kind::Bar1BindLowOnly,
                "the run ended after a BAR1_BLOCK_LOW_ADDR write with no HIGH write after it: \
                 the write to HIGH triggers the bind (kbusBar1InstBlkBind_GH100), so that \
                 LOW value was never bound"
                    .to_string(),
                fields([("low", json!(self.bar1.block))]),
            );
        }
        self.check_coverage();
    }

    /// The coverage rule over every directory known or announced (see [`Gpu::end_of_run`]).
    fn check_coverage(&mut self) {
        let fmt = mmu::format(self.chip.mmu);
        // Every directory the model knows of, and those the harness names (the address spaces
        // the driver announced: one never invalidated is known to the model no other way).
        let mut pdbs: Vec<u64> = self.seq.spaces.keys().copied().collect();
        if let Some(path) = &self.cfg.pdbs_file {
            if let Ok(text) = std::fs::read_to_string(path) {
                pdbs.extend(
                    text.split_whitespace()
                        .filter_map(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok()),
                );
            }
        }
        pdbs.sort_unstable();
        pdbs.dedup();
        let left = self.seq.uncovered_in(&self.vram, fmt, &pdbs);
        eprintln!(
            "gpu-model: coverage: {} directories, {} uncovered quadwords, {} in tables",
            pdbs.len(),
            self.seq.global.len(),
            left.len()
        );
        let mut by_pdb: std::collections::BTreeMap<u64, Vec<(u64, crate::sequence::Change)>> =
            Default::default();
        for (pdb, a, c) in &left {
            by_pdb.entry(*pdb).or_default().push((*a, *c));
        }
        for (pdb, addrs) in by_pdb {
            let (first, c) = addrs[0];
            // For whoever reads the report: every directory whose tables hold that quadword
            // now, and whether the driver announced it (a live space) or the model only knows
            // it from an invalidate (it may be gone, its memory reused).
            let holders: Vec<String> = pdbs
                .iter()
                .filter(|p| {
                    crate::sequence::in_ranges(
                        &crate::sequence::tables(&self.vram, fmt, **p),
                        first,
                    )
                })
                .map(|p| {
                    let known = if self.seq.spaces.contains_key(p) {
                        "invalidated"
                    } else {
                        "announced only"
                    };
                    format!("{p:#x} ({known})")
                })
                .collect();
            self.rec.violation(
                Kind::UncoveredPteChange,
                format!(
                    "{} page-table entries of PDB {pdb:#x} changed and no invalidate of that \
                     PDB written after the change (and reaching its TLBs) covered them; first \
                     at VRAM {first:#x} ({:#x} -> {:#x}, message {}); held now by the tables \
                     of {}",
                    addrs.len(),
                    c.old,
                    c.new,
                    c.seq,
                    holders.join(", ")
                ),
                fields([
                    ("pdb", json!(pdb)),
                    ("entries", json!(addrs.len())),
                    ("first_seq", json!(c.seq)),
                ]),
            );
        }
    }

    /// Total violations so far.
    fn violations_total(&self) -> u64 {
        crate::report::Kind::ALL
            .iter()
            .map(|k| self.rec.count(*k))
            .sum()
    }

    /// Draws and applies the next hostile epoch (nothing without `--hostile`).
    fn next_hostile_epoch(&mut self) {
        let total = self.violations_total();
        let Some(h) = &mut self.hostile else {
            return;
        };
        let n = h.next_epoch();
        let mut e = hostile::draw(h.seed, n, self.chip, self.cfg.vram_bytes, self.cfg.wpr2);
        // An injected fault makes even a benign draw a device a driver may refuse.
        e.must_bind &= self.cfg.faults == Faults::default();
        let mut fw = FwState::with_layout(self.chip, e.regs, e.reserved.clone());
        fw.set_boot_incomplete(self.cfg.faults.boot_incomplete);
        self.fw = fw;
        self.vram.resize(e.vram_size);
        self.rec.epoch = Some(n);
        h.begin(e, total, self.accesses);
    }

    /// The current hostile epoch, if `--hostile` is on.
    pub fn hostile_epoch(&self) -> Option<&hostile::Epoch> {
        self.hostile.as_ref().and_then(Hostile::current)
    }

    fn begin_access(&mut self) {
        self.accesses += 1;
        self.rec.seq = self.accesses;
    }

    /// Reads `size` (1, 2, 4 or 8) bytes at BAR0 offset `off`.
    pub fn bar0_read(&mut self, off: u64, size: usize) -> u64 {
        self.begin_access();
        self.rec.counters.bar0_reads.add(size);
        if self.cfg.faults.device_gone {
            return all_ones(size);
        }
        if (pramin::APERTURE_BASE..pramin::APERTURE_BASE + pramin::APERTURE_SIZE).contains(&off) {
            let mut b = [0u8; 8];
            let n = size.min(8);
            self.pramin_read(off - pramin::APERTURE_BASE, &mut b[..n]);
            return u64::from_le_bytes(b);
        }
        // CAST: BAR0 offsets are below 16 MiB (checked by the transport).
        let off32 = (off & 0xffff_ffff) as u32;
        match size {
            8 => {
                let lo = self.reg_read(off32 & !3, false);
                let hi = self.reg_read((off32 & !3).wrapping_add(4), false);
                u64::from(lo) | (u64::from(hi) << 32)
            }
            4 => u64::from(self.reg_read(off32 & !3, false)),
            _ => {
                let v = self.reg_read(off32 & !3, false);
                let shift = (off32 & 3) * 8;
                let mask = if size >= 4 {
                    u64::MAX
                } else {
                    (1u64 << (size * 8)) - 1
                };
                (u64::from(v) >> shift) & mask
            }
        }
    }

    /// Writes `size` (1, 2, 4 or 8) bytes of `value` at BAR0 offset `off`.
    pub fn bar0_write(&mut self, off: u64, size: usize, value: u64) {
        self.begin_access();
        self.rec.counters.bar0_writes.add(size);
        if self.cfg.faults.device_gone {
            return;
        }
        if (pramin::APERTURE_BASE..pramin::APERTURE_BASE + pramin::APERTURE_SIZE).contains(&off) {
            let b = value.to_le_bytes();
            let n = size.min(8);
            self.pramin_write(off - pramin::APERTURE_BASE, &b[..n]);
            return;
        }
        // CAST: BAR0 offsets are below 16 MiB.
        let off32 = (off & 0xffff_ffff) as u32;
        let reg = off32 & !3;
        match size {
            8 => {
                // CAST: deliberate split into two 32-bit halves.
                self.reg_write(reg, value as u32);
                self.reg_write(reg.wrapping_add(4), (value >> 32) as u32);
            }
            s if s >= 4 => {
                // CAST: the value is 32 bits wide.
                self.reg_write(reg, value as u32)
            }
            _ => {
                let shift = (off32 & 3) * 8;
                let mask = ((1u64 << (size * 8)) - 1) << shift;
                let old = u64::from(self.reg_read(reg, true));
                let new = (old & !mask) | ((value << shift) & mask);
                // CAST: `new` fits in 32 bits.
                self.reg_write(reg, new as u32);
            }
        }
    }

    /// Reads through the PRAMIN aperture at aperture offset `aoff`.
    pub fn pramin_read(&mut self, aoff: u64, buf: &mut [u8]) {
        self.rec.counters.pramin_reads.add(buf.len());
        // A read through the window flushes the posted writes before it
        // (`BUS_FLUSH_VIDEO_MEMORY_VIA_PRAMIN_WINDOW`, kern_bus_gm107.c).
        self.seq.flush();
        match self.pramin_target(aoff, buf.len(), "read") {
            Some(pa) => {
                if self.vram.read(pa, buf).is_err() {
                    buf.fill(pramin::UNBACKED_BYTE);
                }
            }
            None => buf.fill(pramin::UNBACKED_BYTE),
        }
    }

    /// Writes through the PRAMIN aperture at aperture offset `aoff`.
    pub fn pramin_write(&mut self, aoff: u64, data: &[u8]) {
        self.rec.counters.pramin_writes.add(data.len());
        if let Some(pa) = self.pramin_target(aoff, data.len(), "write") {
            // The quadwords the write covers, before and after: entry changes for the
            // coverage rule (crate::sequence).
            // CAST: access lengths are small.
            let len = data.len() as u64;
            let base = pa & !7;
            let n = (pa + len - base).div_ceil(8);
            let old: Vec<u64> = (0..n)
                .map(|i| self.vram.read_u64(base + 8 * i).unwrap_or(0))
                .collect();
            // The target was checked to fit.
            let _ = self.vram.write(pa, data);
            let new: Vec<u64> = (0..n)
                .map(|i| self.vram.read_u64(base + 8 * i).unwrap_or(0))
                .collect();
            self.seq.pramin_write(pa, len, &old, &new, self.accesses);
            for (i, (o, n)) in old.iter().zip(&new).enumerate() {
                // CAST: a handful of quadwords.
                let q = base + 8 * i as u64;
                if o == n {
                    continue;
                }
                if let Some((pdb, table, parent)) = self.seq.reused_early(&self.vram, q) {
                    self.rec.violation(
                        Kind::PtReuseBeforeInvalidate,
                        format!(
                            "PRAMIN write at VRAM {q:#x} into table {table:#x}, unlinked from PDB \
                             {pdb:#x} (entry {parent:#x} changed) by a change no invalidate has \
                             covered yet: its memory may not be reused before that invalidate \
                             completed"
                        ),
                        fields([("vram_addr", json!(q)), ("pdb", json!(pdb))]),
                    );
                    break;
                }
            }
        }
    }

    fn pramin_target(&mut self, aoff: u64, len: usize, what: &str) -> Option<u64> {
        // CAST: access lengths are small.
        let len64 = len as u64;
        let base = self.window.base();
        let target = self.window.target();
        let bar0 = pramin::APERTURE_BASE + aoff;
        if target != 0 {
            self.rec.violation(
                Kind::PraminSysmem,
                format!(
                    "PRAMIN {what} of {len} bytes at BAR0 {bar0:#x} while the window targets \
                     system memory (TARGET {target}, window {:#010x})",
                    self.window.read()
                ),
                fields([
                    ("access", json!(what)),
                    ("size", json!(len)),
                    ("bar0_offset", json!(bar0)),
                    ("window", json!(self.window.read())),
                ]),
            );
            return None;
        }
        let pa = base + aoff;
        if !self.vram.contains(pa, len64) {
            self.rec.violation(
                Kind::PraminOutOfRange,
                format!(
                    "PRAMIN {what} of {len} bytes at VRAM {pa:#x} (window base {base:#x} + \
                     {aoff:#x}) is beyond the end of VRAM ({:#x})",
                    self.vram.size()
                ),
                fields([
                    ("access", json!(what)),
                    ("size", json!(len)),
                    ("vram_addr", json!(pa)),
                    ("window_base", json!(base)),
                ]),
            );
            return None;
        }
        self.check_reserved("PRAMIN", what, pa, len64, bar0);
        Some(pa)
    }

    fn check_reserved(&mut self, path: &str, what: &str, pa: u64, len: u64, at: u64) {
        if let Some(r) = self.fw.reserved_hit(pa, len) {
            self.rec.violation(
                Kind::ReservedVram,
                format!(
                    "{path} {what} of {len} bytes at VRAM {pa:#x} ({} {at:#x}) touches \
                     firmware-reserved {} [{:#x}, {:#x})",
                    if path == "PRAMIN" {
                        "BAR0"
                    } else {
                        "BAR1 offset"
                    },
                    r.name,
                    r.start,
                    r.end
                ),
                fields([
                    ("path", json!(path)),
                    ("access", json!(what)),
                    ("size", json!(len)),
                    ("vram_addr", json!(pa)),
                    ("region", json!(r.name)),
                    ("region_start", json!(r.start)),
                    ("region_end", json!(r.end)),
                ]),
            );
        }
    }

    /// Reads `buf.len()` bytes at BAR1 offset `off`.
    pub fn bar1_read(&mut self, off: u64, buf: &mut [u8]) {
        self.begin_access();
        self.rec.counters.bar1_reads.add(buf.len());
        if self.cfg.faults.device_gone {
            buf.fill(0xff);
            return;
        }
        let mut done = 0usize;
        while done < buf.len() {
            // CAST: `done` is below the message size.
            let va = off.saturating_add(done as u64);
            let n = chunk_len(va, buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match self.bar1_target(va, n, false) {
                Target::Vram(pa) => {
                    self.check_posted_bar1("read", va, pa, n);
                    if self.vram.read(pa, chunk).is_err() {
                        chunk.fill(0);
                    }
                }
                Target::Sparse | Target::Dropped => chunk.fill(0),
            }
            done += n;
        }
    }

    /// Writes `data` at BAR1 offset `off`.
    pub fn bar1_write(&mut self, off: u64, data: &[u8]) {
        self.begin_access();
        self.rec.counters.bar1_writes.add(data.len());
        if self.cfg.faults.device_gone {
            return;
        }
        let mut done = 0usize;
        while done < data.len() {
            // CAST: see `bar1_read`.
            let va = off.saturating_add(done as u64);
            let n = chunk_len(va, data.len() - done);
            if let Target::Vram(pa) = self.bar1_target(va, n, true) {
                self.check_posted_bar1("write", va, pa, n);
                let _ = self.vram.write(pa, &data[done..done + n]);
            }
            done += n;
        }
    }

    /// A BAR1 access to VRAM with PRAMIN writes not yet flushed (HARDWARE.md §9 rule 1).
    fn check_posted_bar1(&mut self, what: &str, va: u64, pa: u64, len: usize) {
        // CAST: chunk lengths are at most 4 KiB.
        if self.seq.is_posted(pa, len as u64) {
            self.rec.violation(
                Kind::UnflushedPramin,
                format!(
                    "BAR1 {what} at offset {va:#x} reaches VRAM {pa:#x}, which has PRAMIN writes \
                     not yet flushed (no PRAMIN read or NV_UFLUSH since)"
                ),
                fields([("bar1_offset", json!(va)), ("vram_addr", json!(pa))]),
            );
        }
    }

    fn bar1_target(&mut self, va: u64, len: usize, write: bool) -> Target {
        let what = if write { "write" } else { "read" };
        // CAST: chunk lengths are at most 4 KiB.
        let len64 = len as u64;
        if self.seq.low_only {
            self.seq.low_only = false;
            self.rec.violation(
                Kind::Bar1BindLowOnly,
                format!(
                    "BAR1 {what} at offset {va:#x} after a BAR1_BLOCK_LOW_ADDR write ({:#010x}) \
                     with no HIGH write after it: the write to HIGH triggers the bind \
                     (kbusBar1InstBlkBind_GH100)",
                    self.bar1.block
                ),
                fields([("bar1_offset", json!(va)), ("low", json!(self.bar1.block))]),
            );
        }
        if self.seq.bind_unpolled {
            self.seq.bind_unpolled = false;
            self.rec.violation(
                Kind::Bar1BeforeBindComplete,
                format!(
                    "BAR1 {what} at offset {va:#x} before a read of the bind status showed the \
                     bind complete (kbusBar1InstBlkBind_TU102)"
                ),
                fields([("bar1_offset", json!(va))]),
            );
        }
        let leaf = match self.bar1_translate(va) {
            Ok(l) => l,
            Err(reason) => {
                self.rec.counters.bar1_faults += 1;
                self.rec.violation(
                    Kind::Bar1Fault,
                    format!("BAR1 {what} of {len} bytes at offset {va:#x} faults: {reason}"),
                    fields([
                        ("access", json!(what)),
                        ("size", json!(len)),
                        ("bar1_offset", json!(va)),
                    ]),
                );
                return Target::Dropped;
            }
        };
        match leaf {
            Leaf::Sparse { .. } => {
                self.rec.counters.bar1_sparse += 1;
                Target::Sparse
            }
            Leaf::Page {
                pa,
                size,
                read_only,
                ..
            } => {
                let pa = pa + (va & (size - 1));
                if !self.vram.contains(pa, len64) {
                    self.rec.counters.bar1_faults += 1;
                    self.rec.violation(
                        Kind::Bar1Fault,
                        format!(
                            "BAR1 {what} of {len} bytes at offset {va:#x} maps VRAM {pa:#x}, \
                             beyond the end of VRAM ({:#x})",
                            self.vram.size()
                        ),
                        fields([
                            ("access", json!(what)),
                            ("size", json!(len)),
                            ("bar1_offset", json!(va)),
                            ("vram_addr", json!(pa)),
                        ]),
                    );
                    return Target::Dropped;
                }
                self.check_reserved("BAR1", what, pa, len64, va);
                if write && read_only {
                    self.rec.violation(
                        Kind::ReadOnlyWrite,
                        format!(
                            "BAR1 write of {len} bytes at offset {va:#x} through a read-only \
                             PTE (VRAM {pa:#x}); dropped"
                        ),
                        fields([
                            ("size", json!(len)),
                            ("bar1_offset", json!(va)),
                            ("vram_addr", json!(pa)),
                        ]),
                    );
                    return Target::Dropped;
                }
                Target::Vram(pa)
            }
        }
    }

    /// Translates BAR1 offset `va` through the current binding and the TLB.
    ///
    /// # Errors
    ///
    /// The fault reason.
    pub fn bar1_translate(&mut self, va: u64) -> Result<Leaf, String> {
        let pdb = match &self.bar1.binding {
            Binding::Unbound => {
                return Err("BAR1 is not bound (no instance block written to BAR1_BLOCK)".into())
            }
            Binding::Broken(r) => {
                return Err(format!("BAR1 is bound to an unusable instance block: {r}"))
            }
            Binding::Physical => {
                return Ok(Leaf::Page {
                    pa: va & !0xfff,
                    size: 0x1000,
                    read_only: false,
                    privileged: false,
                })
            }
            Binding::Virtual { pdb, .. } => *pdb,
        };
        let fmt = mmu::format(self.chip.mmu);
        let allow_512m = self.chip.page_512m;
        let cached = match self.tlb.lookup(pdb, va) {
            Some(leaf) => {
                self.rec.counters.tlb_hits += 1;
                Ok(leaf)
            }
            None => {
                self.rec.counters.tlb_misses += 1;
                let mut src = CachedSource {
                    vram: &self.vram,
                    tlb: &mut self.tlb,
                    pdb,
                };
                let r = mmu::walk(fmt, allow_512m, pdb, va, &mut src);
                if let Ok(leaf) = r {
                    self.tlb.insert(pdb, va, leaf);
                }
                r
            }
        };
        let mut fsrc = FreshSource {
            vram: &self.vram,
            last: 0,
        };
        let fresh = mmu::walk(fmt, allow_512m, pdb, va, &mut fsrc);
        if self.chip.mmu == crate::chip::MmuVersion::V3
            && fresh.as_ref().is_ok_and(|l| matches!(l, Leaf::Page { .. }))
        {
            // KIND 11:8 of the leaf: 0x7 is NV_MMU_PTE_KIND_INVALID, every other value a
            // defined kind (gh100/gb202 dev_mmu.h: NV_MMU_PTE_KIND_*).
            let kind = (fsrc.last >> 8) & 0xf;
            if kind == 0x7 {
                self.rec.violation(
                    Kind::UndefinedKind,
                    format!(
                        "BAR1 offset {va:#x} (PDB {pdb:#x}) maps through a PTE of KIND {kind:#x} \
                         (NV_MMU_PTE_KIND_INVALID)"
                    ),
                    fields([("bar1_offset", json!(va)), ("kind", json!(kind))]),
                );
            }
        }
        if effective(&cached, va) != effective(&fresh, va) {
            self.rec.violation(
                Kind::StaleTlb,
                format!(
                    "BAR1 offset {va:#x} (PDB {pdb:#x}) used a cached translation: {}; the page \
                     tables now say: {} (missing TLB invalidate)",
                    describe(&cached, va),
                    describe(&fresh, va)
                ),
                fields([
                    ("bar1_offset", json!(va)),
                    ("pdb", json!(pdb)),
                    ("cached", json!(describe(&cached, va))),
                    ("current", json!(describe(&fresh, va))),
                ]),
            );
        }
        cached.map_err(|f| format!("{}: {}", f.level, f.reason))
    }

    /// The report as JSON.
    pub fn report(&self) -> Value {
        let mut top = Map::new();
        top.insert("model".into(), json!("gpu-model"));
        top.insert("model_version".into(), json!(env!("CARGO_PKG_VERSION")));
        top.insert("chip".into(), json!(self.chip.name));
        top.insert(
            "pci_device_id".into(),
            json!(format!("{:#06x}", self.chip.device_id)),
        );
        top.insert("boot0".into(), json!(format!("{:#010x}", self.boot0())));
        top.insert("boot42".into(), json!(format!("{:#010x}", self.boot42())));
        top.insert(
            "mmu_version".into(),
            json!(match self.chip.mmu {
                MmuVersion::V2 => 2,
                MmuVersion::V3 => 3,
            }),
        );
        top.insert("vram_bytes".into(), json!(self.cfg.vram_bytes));
        top.insert("bar1_bytes".into(), json!(self.cfg.bar1_bytes));
        top.insert("invalidate_delay".into(), json!(self.cfg.invalidate_delay));
        top.insert("faults".into(), json!(self.cfg.faults.names()));
        top.insert(
            "reserved".into(),
            Value::Array(
                self.fw
                    .reserved()
                    .iter()
                    .map(|r| json!({"name": r.name, "start": r.start, "end": r.end}))
                    .collect(),
            ),
        );
        top.insert(
            "vram_touched_bytes".into(),
            // CAST: chunk counts fit in u64.
            json!(self.vram.touched_chunks() as u64 * crate::vram::CHUNK_SIZE),
        );
        let binding = match &self.bar1.binding {
            Binding::Unbound => json!({"mode": "unbound"}),
            Binding::Physical => json!({"mode": "physical"}),
            Binding::Virtual { inst, pdb } => {
                json!({"mode": "virtual", "instance_block": inst, "pdb": pdb})
            }
            Binding::Broken(r) => json!({"mode": "broken", "reason": r}),
        };
        top.insert("bar1_binding".into(), binding);
        self.rec.fill_report(&mut top);
        if let Some(h) = &self.hostile {
            top.insert(
                "hostile".into(),
                h.report(self.violations_total(), self.accesses),
            );
        }
        Value::Object(top)
    }

    /// `NV_PMC_BOOT_0` as this GPU reports it.
    pub fn boot0(&self) -> u32 {
        if self.cfg.faults.unknown_chip {
            self.chip.boot0_for(crate::chip::UNKNOWN_ARCHITECTURE)
        } else {
            self.chip.boot0()
        }
    }

    /// `NV_PMC_BOOT_42` as this GPU reports it.
    pub fn boot42(&self) -> u32 {
        if self.cfg.faults.unknown_chip {
            self.chip.boot42_for(crate::chip::UNKNOWN_ARCHITECTURE)
        } else {
            self.chip.boot42()
        }
    }
}

/// Length of the part of an access at `va` that stays inside one 4 KiB page.
fn chunk_len(va: u64, remaining: usize) -> usize {
    let to_page_end = 0x1000 - (va & 0xfff);
    // CAST: at most 4096.
    (to_page_end as usize).min(remaining)
}

fn all_ones(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

#[cfg(test)]
mod tests;
