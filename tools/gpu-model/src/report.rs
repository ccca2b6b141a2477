// SPDX-License-Identifier: MIT OR Apache-2.0

//! Rule checker records, counters and the JSON report.
//!
//! Every access outside the rules is a [`Violation`] of one [`Kind`]. The
//! first [`MAX_STORED_VIOLATIONS`] are kept with their details; all are
//! counted. A kind can be declared expected (`--expect`, control `expect`);
//! the report's `unexpected_violations` counts the others, and the harness
//! fails a run when it is non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// How many violations are stored with details.
pub const MAX_STORED_VIOLATIONS: usize = 1000;

/// How many distinct unknown-register read offsets are listed.
pub const MAX_UNKNOWN_READ_OFFSETS: usize = 256;

/// How many `--trace-invalidates` entries are stored.
pub const MAX_INVALIDATE_TRACE: usize = 200_000;

/// One `--trace-invalidates` entry: `[n, bar0_reads, bar0_writes,
/// pramin_reads, pramin_writes, window_moves]`, taken when invalidate `n`
/// (1-based) completes, after the access that completed it was counted.
pub type InvalidateTraceEntry = [u64; 6];

/// Kind of a rule violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// BAR1 access through an unmapped or invalid translation, a bad level, an
    /// unbound BAR1, a page beyond VRAM or an unmodelled aperture.
    Bar1Fault,
    /// BAR1 write through a read-only PTE (dropped).
    ReadOnlyWrite,
    /// A cached translation differs from what the page tables now say.
    StaleTlb,
    /// PRAMIN or BAR1 access to VRAM that firmware reserved.
    ReservedVram,
    /// PRAMIN access beyond the end of VRAM.
    PraminOutOfRange,
    /// PRAMIN access while the window targets system memory (not modelled).
    PraminSysmem,
    /// Write to a BAR0 offset the model does not implement.
    UnknownRegister,
    /// Write to a read-only register (identification, firmware state).
    ReadOnlyRegister,
    /// New invalidate triggered while the previous one is still pending.
    InvalidateBusy,
    /// BAR1 bound to an instance block the model cannot use.
    BadInstanceBlock,
    /// Malformed vfio-user message.
    Protocol,
    /// An invalidate, a BAR1 bind or a BAR1 access acted on PRAMIN writes not yet flushed (by
    /// a PRAMIN read or `NV_UFLUSH`): `kbusFlush_GM107`, "Must call kbusFlush BEFORE any calls
    /// to busInvalidate".
    UnflushedPramin,
    /// Hopper/Blackwell: BAR1 used, or the run ended, after a BAR1_BLOCK_LOW_ADDR write with no
    /// HIGH write after it: the HIGH write triggers the bind (`kbusBar1InstBlkBind_GH100`).
    Bar1BindLowOnly,
    /// BAR1 used before a read of the bind status showed the bind complete
    /// (`kbusBar1InstBlkBind_TU102`: "SW must ensure that the bind has completed prior to
    /// issuing any further BAR1 requests").
    Bar1BeforeBindComplete,
    /// TU10x: an invalidate covering an unmap or a downgrade without SYS_MEMBAR and
    /// ACK=GLOBALLY (`kgmmuSetTlbInvalidateMembarWarParameters_TU102`).
    DowngradeWithoutMembar,
    /// GROUP_05 read while its priv level mask still showed the read protection raised
    /// (`_gpuIsGfwBootCompleted_TU102`: "check that FWSEC has lowered its PLM first").
    GfwReadBeforePlm,
    /// A valid v3 PTE whose KIND is not one `NV_MMU_PTE_KIND_*` defines, or is INVALID
    /// (gh100/gb202 `dev_mmu.h`).
    UndefinedKind,
    /// Blackwell instance block bound to BAR1 without `NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE`
    /// in word 131 (`kgmmuInstBlkMagicValueGet_GA10B`).
    InstBlockMagicMissing,
    /// A page-table entry change never covered by an invalidate of its page directory written
    /// after it, with a scope that reaches its TLBs.
    UncoveredPteChange,
    /// Page-table memory unlinked from a directory written again before the invalidate that
    /// unlinked it completed.
    PtReuseBeforeInvalidate,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 20] = [
        Kind::Bar1Fault,
        Kind::ReadOnlyWrite,
        Kind::StaleTlb,
        Kind::ReservedVram,
        Kind::PraminOutOfRange,
        Kind::PraminSysmem,
        Kind::UnknownRegister,
        Kind::ReadOnlyRegister,
        Kind::InvalidateBusy,
        Kind::BadInstanceBlock,
        Kind::Protocol,
        Kind::UnflushedPramin,
        Kind::Bar1BindLowOnly,
        Kind::Bar1BeforeBindComplete,
        Kind::DowngradeWithoutMembar,
        Kind::GfwReadBeforePlm,
        Kind::UndefinedKind,
        Kind::InstBlockMagicMissing,
        Kind::UncoveredPteChange,
        Kind::PtReuseBeforeInvalidate,
    ];

    /// The snake_case name used in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bar1Fault => "bar1_fault",
            Kind::ReadOnlyWrite => "read_only_write",
            Kind::StaleTlb => "stale_tlb",
            Kind::ReservedVram => "reserved_vram",
            Kind::PraminOutOfRange => "pramin_out_of_range",
            Kind::PraminSysmem => "pramin_sysmem",
            Kind::UnknownRegister => "unknown_register",
            Kind::ReadOnlyRegister => "read_only_register",
            Kind::InvalidateBusy => "invalidate_busy",
            Kind::BadInstanceBlock => "bad_instance_block",
            Kind::Protocol => "protocol",
            Kind::UnflushedPramin => "unflushed_pramin",
            Kind::Bar1BindLowOnly => "bar1_bind_low_only",
            Kind::Bar1BeforeBindComplete => "bar1_before_bind_complete",
            Kind::DowngradeWithoutMembar => "downgrade_without_membar",
            Kind::GfwReadBeforePlm => "gfw_read_before_plm",
            Kind::UndefinedKind => "undefined_kind",
            Kind::InstBlockMagicMissing => "instblk_magic_missing",
            Kind::UncoveredPteChange => "uncovered_pte_change",
            Kind::PtReuseBeforeInvalidate => "pt_reuse_before_invalidate",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One recorded violation.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Kind.
    pub kind: Kind,
    /// Human-readable description with addresses.
    pub detail: String,
    /// Extra machine-readable fields.
    pub fields: Map<String, Value>,
    /// Sequence number of the device access that caused it.
    pub seq: u64,
}

/// Access counts by size.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SizeCounts {
    /// 1-byte accesses.
    #[serde(rename = "1")]
    pub b1: u64,
    /// 2-byte accesses.
    #[serde(rename = "2")]
    pub b2: u64,
    /// 4-byte accesses.
    #[serde(rename = "4")]
    pub b4: u64,
    /// 8-byte accesses.
    #[serde(rename = "8")]
    pub b8: u64,
    /// Accesses of any other size (bytes moved in one vfio-user message).
    pub other: u64,
    /// All accesses.
    pub total: u64,
}

impl SizeCounts {
    /// Counts one access of `size` bytes.
    pub fn add(&mut self, size: usize) {
        match size {
            1 => self.b1 += 1,
            2 => self.b2 += 1,
            4 => self.b4 += 1,
            8 => self.b8 += 1,
            _ => self.other += 1,
        }
        self.total += 1;
    }
}

/// TLB invalidate counts.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InvalidateCounts {
    /// Triggers written.
    pub total: u64,
    /// Triggers with ALL_PDB.
    pub all_pdb: u64,
    /// Triggers for the latched PDB only.
    pub one_pdb: u64,
    /// Triggers with HUBTLB_ONLY.
    pub hub_only: u64,
    /// Triggers with ALL_VA.
    pub all_va: u64,
    /// Triggers without ALL_VA (treated as all VAs: no VA register exists).
    pub no_all_va: u64,
    /// Triggers with SYS_MEMBAR.
    pub sys_membar: u64,
    /// Triggers with CACHE_LEVEL other than ALL.
    pub partial_cache_level: u64,
    /// Invalidates that completed.
    pub completed: u64,
    /// Reads of the invalidate register that still saw TRIGGER set.
    pub busy_polls: u64,
    /// Reads of the invalidate register with no invalidate pending (a check before a new one).
    pub idle_reads: u64,
}

/// Every counter of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// BAR0 reads (registers and PRAMIN).
    pub bar0_reads: SizeCounts,
    /// BAR0 writes.
    pub bar0_writes: SizeCounts,
    /// BAR1 reads.
    pub bar1_reads: SizeCounts,
    /// BAR1 writes.
    pub bar1_writes: SizeCounts,
    /// Reads through the PRAMIN aperture (also counted in `bar0_reads`).
    pub pramin_reads: SizeCounts,
    /// Writes through the PRAMIN aperture (also counted in `bar0_writes`).
    pub pramin_writes: SizeCounts,
    /// Writes to the BAR0 window register.
    pub window_moves: u64,
    /// Writes to the window register that changed its value.
    pub window_changes: u64,
    /// TLB invalidates.
    pub invalidates: InvalidateCounts,
    /// BAR1 accesses that faulted.
    pub bar1_faults: u64,
    /// BAR1 accesses that hit a sparse or "mapping nowhere" entry.
    pub bar1_sparse: u64,
    /// Reads of unimplemented BAR0 offsets.
    pub unknown_reg_reads: u64,
    /// Writes to unimplemented BAR0 offsets.
    pub unknown_reg_writes: u64,
    /// Writes that bound a BAR1 instance block.
    pub bar1_binds: u64,
    /// BAR1 translations served from the TLB.
    pub tlb_hits: u64,
    /// BAR1 translations that needed a page-table walk.
    pub tlb_misses: u64,
    /// Config-space reads.
    pub config_reads: u64,
    /// Config-space writes.
    pub config_writes: u64,
    /// Device resets requested by the client.
    pub resets: u64,
    /// vfio-user messages handled.
    pub messages: u64,
}

/// Collects violations and counters.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Counters.
    pub counters: Counters,
    violations: Vec<Violation>,
    counts: BTreeMap<Kind, u64>,
    expected: BTreeSet<Kind>,
    unknown_reads: BTreeMap<u32, u64>,
    /// Invalidate completion snapshots (`None`: tracing off).
    invalidate_trace: Option<Vec<InvalidateTraceEntry>>,
    /// Completions not stored because the trace was full.
    invalidate_trace_dropped: u64,
    /// Sequence number of the current access.
    pub seq: u64,
    /// The current `--hostile` epoch, recorded with each violation.
    pub epoch: Option<u64>,
}

impl Recorder {
    /// Creates an empty recorder.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Declares violations of `kind` expected.
    pub fn expect(&mut self, kind: Kind) {
        self.expected.insert(kind);
    }

    /// Records a violation.
    pub fn violation(&mut self, kind: Kind, detail: String, mut fields: Map<String, Value>) {
        *self.counts.entry(kind).or_insert(0) += 1;
        if let Some(e) = self.epoch {
            fields.insert("epoch".into(), json!(e));
        }
        if self.violations.len() < MAX_STORED_VIOLATIONS {
            self.violations.push(Violation {
                kind,
                detail,
                fields,
                seq: self.seq,
            });
        }
    }

    /// Number of violations of `kind` so far.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Total violations of kinds not declared expected.
    pub fn unexpected(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| !self.expected.contains(k))
            .map(|(_, n)| *n)
            .sum()
    }

    /// Stored violations.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Turns on the invalidate trace (`--trace-invalidates`).
    pub fn enable_invalidate_trace(&mut self) {
        if self.invalidate_trace.is_none() {
            self.invalidate_trace = Some(Vec::new());
        }
    }

    /// Counts a completed invalidate and, when tracing, records a snapshot
    /// of the cumulative counters as they stand now. The caller has already
    /// counted the access that completed it (the poll read that returns
    /// TRIGGER clear, or the trigger write with delay 0).
    pub fn invalidate_completed(&mut self) {
        let c = &mut self.counters;
        c.invalidates.completed += 1;
        let entry = [
            c.invalidates.completed,
            c.bar0_reads.total,
            c.bar0_writes.total,
            c.pramin_reads.total,
            c.pramin_writes.total,
            c.window_moves,
        ];
        if let Some(trace) = &mut self.invalidate_trace {
            if trace.len() < MAX_INVALIDATE_TRACE {
                trace.push(entry);
            } else {
                self.invalidate_trace_dropped += 1;
            }
        }
    }

    /// The stored invalidate trace (`None` when tracing is off).
    pub fn invalidate_trace(&self) -> Option<&[InvalidateTraceEntry]> {
        self.invalidate_trace.as_deref()
    }

    /// Notes a read of an unimplemented register.
    pub fn unknown_read(&mut self, offset: u32) {
        self.counters.unknown_reg_reads += 1;
        if let Some(n) = self.unknown_reads.get_mut(&offset) {
            *n += 1;
        } else if self.unknown_reads.len() < MAX_UNKNOWN_READ_OFFSETS {
            self.unknown_reads.insert(offset, 1);
        }
    }

    /// The report sections this recorder owns, merged into `top`.
    pub fn fill_report(&self, top: &mut Map<String, Value>) {
        top.insert(
            "counters".into(),
            serde_json::to_value(&self.counters).unwrap_or(Value::Null),
        );
        let violations: Vec<Value> = self
            .violations
            .iter()
            .map(|v| {
                let mut o = Map::new();
                o.insert("kind".into(), json!(v.kind.name()));
                o.insert("expected".into(), json!(self.expected.contains(&v.kind)));
                o.insert("detail".into(), json!(v.detail));
                o.insert("seq".into(), json!(v.seq));
                for (k, val) in &v.fields {
                    o.insert(k.clone(), val.clone());
                }
                Value::Object(o)
            })
            .collect();
        let total: u64 = self.counts.values().sum();
        top.insert("violations".into(), Value::Array(violations));
        top.insert("violations_total".into(), json!(total));
        // CAST: the stored list is at most MAX_STORED_VIOLATIONS long.
        top.insert(
            "violations_dropped".into(),
            json!(total.saturating_sub(self.violations.len() as u64)),
        );
        let mut counts = Map::new();
        for (k, n) in &self.counts {
            counts.insert(k.name().into(), json!(n));
        }
        top.insert("violation_counts".into(), Value::Object(counts));
        top.insert(
            "expected_kinds".into(),
            json!(self.expected.iter().map(|k| k.name()).collect::<Vec<_>>()),
        );
        top.insert("unexpected_violations".into(), json!(self.unexpected()));
        let unknown: Vec<Value> = self
            .unknown_reads
            .iter()
            .map(|(off, n)| json!({"offset": format!("{off:#08x}"), "reads": n}))
            .collect();
        top.insert("unknown_reads".into(), Value::Array(unknown));
        if let Some(trace) = &self.invalidate_trace {
            top.insert(
                "invalidate_trace".into(),
                Value::Array(trace.iter().map(|e| json!(e)).collect()),
            );
            top.insert(
                "invalidate_trace_dropped".into(),
                json!(self.invalidate_trace_dropped),
            );
        }
    }
}

/// Writes `value` as pretty JSON to `path` atomically (temporary file, rename).
///
/// # Errors
///
/// Any I/O error.
pub fn write_json_atomic(path: &Path, value: &Value) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Builds a field map from `(name, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn expected_and_cap() {
        let mut r = Recorder::new();
        for i in 0..(MAX_STORED_VIOLATIONS + 5) {
            r.violation(Kind::Bar1Fault, format!("fault {i}"), Map::new());
        }
        r.violation(
            Kind::StaleTlb,
            "stale".into(),
            fields([("va", json!(4096))]),
        );
        assert_eq!(r.unexpected(), MAX_STORED_VIOLATIONS as u64 + 6);
        r.expect(Kind::Bar1Fault);
        assert_eq!(r.unexpected(), 1);
        let mut top = Map::new();
        r.fill_report(&mut top);
        assert_eq!(top["violation_counts"]["bar1_fault"], json!(1005));
        assert_eq!(top["violations"].as_array().unwrap().len(), 1000);
        assert_eq!(top["violations_dropped"], json!(6));
        assert_eq!(top["unexpected_violations"], json!(1));
        assert_eq!(top["violations"][0]["expected"], json!(true));
    }

    #[test]
    fn invalidate_trace_cap() {
        let mut r = Recorder::new();
        r.invalidate_completed();
        assert_eq!(r.invalidate_trace(), None);
        r.enable_invalidate_trace();
        for _ in 0..MAX_INVALIDATE_TRACE + 2 {
            r.counters.bar0_reads.add(4);
            r.invalidate_completed();
        }
        let t = r.invalidate_trace().unwrap();
        assert_eq!(t.len(), MAX_INVALIDATE_TRACE);
        // The first completion happened before tracing was enabled.
        assert_eq!(t[0], [2, 1, 0, 0, 0, 0]);
        let last = MAX_INVALIDATE_TRACE as u64;
        assert_eq!(t[MAX_INVALIDATE_TRACE - 1], [last + 1, last, 0, 0, 0, 0]);
        let mut top = Map::new();
        r.fill_report(&mut top);
        assert_eq!(
            top["invalidate_trace"].as_array().unwrap().len(),
            MAX_INVALIDATE_TRACE
        );
        assert_eq!(top["invalidate_trace_dropped"], json!(2));
        assert_eq!(top["invalidate_trace"][0], json!([2, 1, 0, 0, 0, 0]));
    }
}
