// SPDX-License-Identifier: MIT OR Apache-2.0

//! The BAR0 register map and its dispatch.
//!
//! Implemented registers (all 32-bit; an 8-byte access is two registers,
//! 1- and 2-byte accesses address bytes of the containing register):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x000000 | `NV_PMC_BOOT_0` | RO |
//! | 0x000a00 | `NV_PMC_BOOT_42` | RO |
//! | 0x001700 | `NV_PBUS_BAR0_WINDOW` (TU..AD) | RW |
//! | 0x10fd40 | `NV_XAL_EP_BAR0_WINDOW` (GH, GB) | RW |
//! | 0x070000 | `NV_UFLUSH` (BAR flush; reads 0 = done) | RW |
//! | 0x100ce0 | `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` (TU) | RO |
//! | 0x1183a4 | `NV_USABLE_FB_SIZE_IN_MB` (GA102+) | RO |
//! | 0x118128, 0x118234 | GFW boot (priv level mask, progress) | RO |
//! | 0x0200bc / 0xad00bc | FSP boot done (GH / GB) | RO |
//! | 0x1fa824, 0x1fa828 | `NV_PFB_PRI_MMU_WPR2_ADDR_LO/HI` | RO |
//! | 0x625f04 | `NV_PDISP_VGA_WORKSPACE_BASE` | RO |
//! | 0x021c04 (TU) / 0x820c04 | `NV_FUSE_STATUS_OPT_DISPLAY` | RO |
//! | sysmem flush page (per chip) | storage | RW |
//! | 0xb80f40/48/50 | BAR1/BAR2 block, bind status (TU..AD) | RW/RW/RO |
//! | 0xb80f60/64/70/74 | BAR1/BAR2 block low/high (GH, GB) | RW |
//! | 0xb830a0/a4/b0 | TLB invalidate PDB, upper PDB, control | RW |
//! | 0x700000..0x7fffff | PRAMIN aperture | RW |
//!
//! With `--hostile`, BOOT_0/BOOT_42, the GFW boot progress / FSP boot-done
//! scratch, `BIND_STATUS` / `BAR1_BLOCK_LOW_ADDR` pending bits and the TLB
//! invalidate completion follow the epoch's scenario ([`crate::hostile`]).
//!
//! Every other offset is unimplemented: a read returns [`PRI_ERROR_VALUE`]
//! and is counted (`unknown_reg_reads`, not a violation: probing is legal);
//! a write is dropped and is an `unknown_register` violation. A write to a
//! read-only register is a `read_only_register` violation.

use serde_json::json;

use crate::bar1::{self, decode_hopper_block, decode_vf_block, BindRequest, Binding, InstBlock};
use crate::chip::BindRegs;
use crate::fw;
use crate::gpu::Gpu;
use crate::hostile::Flap;
pub use crate::pri::PRI_ERROR_VALUE;
use crate::report::{fields, Kind};
use crate::tlb::{self, Request, Scope};
use crate::vram::POISON;

/// `NV_PMC_BOOT_0` (`nv_ref.h`).
pub const BOOT_0: u32 = 0x0000_0000;
/// `NV_PMC_BOOT_42` (`nv_ref.h`).
pub const BOOT_42: u32 = 0x0000_0a00;
/// `NV_UFLUSH` (pre-GSP BAR flush, nouveau `g84_bar_flush`; no published header).
pub const UFLUSH: u32 = 0x0007_0000;

enum RegKind {
    ReadOnly(u32),
    Unknown,
    Handled,
}

impl Gpu {
    /// Reads the 32-bit register at `off`; `peek` suppresses side effects
    /// and counting (used for sub-dword read-modify-write).
    pub(crate) fn reg_read(&mut self, off: u32, peek: bool) -> u32 {
        match off {
            BOOT_0 | BOOT_42 => return self.read_boot(off, peek),
            UFLUSH => return 0,
            _ => {}
        }
        if off == self.window.offset() {
            return self.window.read();
        }
        if let Some(v) = self.gfw_flap(off, peek) {
            return v;
        }
        if let Some(v) = self.read_plm_rule(off, peek) {
            return v;
        }
        if let Some(v) = self.fw.read(off) {
            return v;
        }
        if self.chip.storage_regs.contains(&off) {
            return self.storage.get(&off).copied().unwrap_or(0);
        }
        match (self.chip.bind, off) {
            (BindRegs::Vf, bar1::VF_BAR1_BLOCK) => return self.bar1.block,
            (BindRegs::Vf, bar1::VF_BAR2_BLOCK) => return self.bar1.bar2[0],
            (BindRegs::Vf, bar1::VF_BIND_STATUS) => return self.bind_status_read(peek),
            (BindRegs::VfHopper, bar1::HOPPER_BAR1_LOW) => {
                return (self.bar1.block & !3) | self.bind_status_read(peek)
            }
            (BindRegs::VfHopper, bar1::HOPPER_BAR1_HIGH) => return self.bar1.block_high,
            (BindRegs::VfHopper, bar1::HOPPER_BAR2_LOW) => return self.bar1.bar2[0] & !3,
            (BindRegs::VfHopper, bar1::HOPPER_BAR2_HIGH) => return self.bar1.bar2[1],
            _ => {}
        }
        match off {
            tlb::INVALIDATE_PDB => self.inval.pdb_reg,
            tlb::INVALIDATE_UPPER_PDB => self.inval.upper_reg,
            tlb::INVALIDATE => {
                if peek {
                    self.inval.ctrl_reg
                } else {
                    self.read_invalidate()
                }
            }
            _ => {
                if !peek {
                    self.rec.unknown_read(off);
                }
                PRI_ERROR_VALUE
            }
        }
    }

    /// Writes the 32-bit register at `off`.
    pub(crate) fn reg_write(&mut self, off: u32, value: u32) {
        match self.classify_write(off, value) {
            RegKind::Handled => {}
            RegKind::ReadOnly(cur) => self.rec.violation(
                Kind::ReadOnlyRegister,
                format!("write of {value:#010x} to read-only register {off:#08x} (reads {cur:#010x}); ignored"),
                fields([("offset", json!(off)), ("value", json!(value))]),
            ),
            RegKind::Unknown => {
                self.rec.counters.unknown_reg_writes += 1;
                self.rec.violation(
                    Kind::UnknownRegister,
                    format!("write of {value:#010x} to unimplemented BAR0 offset {off:#08x}; dropped"),
                    fields([("offset", json!(off)), ("value", json!(value))]),
                );
            }
        }
    }

    fn classify_write(&mut self, off: u32, value: u32) -> RegKind {
        match off {
            BOOT_0 => return RegKind::ReadOnly(self.boot0()),
            BOOT_42 => return RegKind::ReadOnly(self.boot42()),
            UFLUSH => {
                // An FB flush: the posted PRAMIN writes land (nouveau `g84_bar_flush`).
                self.seq.flush();
                return RegKind::Handled;
            }
            _ => {}
        }
        if off == self.window.offset() {
            self.rec.counters.window_moves += 1;
            if self.window.write(value) {
                self.rec.counters.window_changes += 1;
            }
            return RegKind::Handled;
        }
        if let Some(v) = self.fw.read(off) {
            return RegKind::ReadOnly(v);
        }
        if self.chip.storage_regs.contains(&off) {
            self.storage.insert(off, value);
            return RegKind::Handled;
        }
        match (self.chip.bind, off) {
            (BindRegs::Vf, bar1::VF_BAR1_BLOCK) => {
                self.bar1.block = value;
                self.bind(decode_vf_block(value));
                return RegKind::Handled;
            }
            (BindRegs::Vf, bar1::VF_BAR2_BLOCK) => {
                self.bar1.bar2[0] = value;
                return RegKind::Handled;
            }
            (BindRegs::Vf, bar1::VF_BIND_STATUS) => {
                return RegKind::ReadOnly(self.bind_status_read(true))
            }
            (BindRegs::VfHopper, bar1::HOPPER_BAR1_LOW) => {
                // Held until HIGH is written: the write to HIGH triggers the bind
                // (open-gpu-kernel-modules kern_bus_gh100.c `kbusBar1InstBlkBind_GH100`).
                self.bar1.block = value;
                self.seq.low_only = true;
                return RegKind::Handled;
            }
            (BindRegs::VfHopper, bar1::HOPPER_BAR1_HIGH) => {
                self.bar1.block_high = value;
                self.seq.low_only = false;
                self.bind(decode_hopper_block(self.bar1.block, value));
                return RegKind::Handled;
            }
            (BindRegs::VfHopper, bar1::HOPPER_BAR2_LOW) => {
                self.bar1.bar2[0] = value;
                return RegKind::Handled;
            }
            (BindRegs::VfHopper, bar1::HOPPER_BAR2_HIGH) => {
                self.bar1.bar2[1] = value;
                return RegKind::Handled;
            }
            _ => {}
        }
        match off {
            tlb::INVALIDATE_PDB => {
                self.pdb_write_while_pending("MMU_INVALIDATE_PDB", value);
                // APERTURE 1:1 and ADDR 31:4.
                self.inval.pdb_reg = value & 0xffff_fff2;
                RegKind::Handled
            }
            tlb::INVALIDATE_UPPER_PDB => {
                self.pdb_write_while_pending("MMU_INVALIDATE_UPPER_PDB", value);
                self.inval.upper_reg = value & 0x000f_ffff;
                RegKind::Handled
            }
            tlb::INVALIDATE => {
                self.write_invalidate(value);
                RegKind::Handled
            }
            _ => RegKind::Unknown,
        }
    }

    /// The PDB registers written while an invalidate is pending: RM checks for pending
    /// invalidates before every commit (`kgmmuCheckPendingInvalidates_TU102`).
    fn pdb_write_while_pending(&mut self, reg: &str, value: u32) {
        if let Some((old, _)) = self.inval.pending {
            self.rec.violation(
                Kind::InvalidateBusy,
                format!(
                    "{reg} written ({value:#010x}) while invalidate {:#010x} (PDB {:#x}) is \
                     still pending (TRIGGER not yet read back clear)",
                    old.ctrl, old.pdb
                ),
                fields([("value", json!(value)), ("pending", json!(old.ctrl))]),
            );
        }
    }

    /// The GFW priv level mask raised for the first reads after a reset, and GROUP_05 read
    /// while it is: RM `_gpuIsGfwBootCompleted_TU102` ("check that FWSEC has lowered its PLM
    /// first"). `None` for any other register.
    fn read_plm_rule(&mut self, off: u32, peek: bool) -> Option<u32> {
        match off {
            fw::GFW_PRIV_LEVEL_MASK if self.seq.plm_raised_reads > 0 => {
                if !peek {
                    self.seq.plm_raised_reads -= 1;
                }
                // READ_PROTECTION_LEVEL0 (bit 0) DISABLE: the CPU may not read GROUP_05 yet.
                Some(fw::GFW_PRIV_LEVEL_MASK_VALUE & !1)
            }
            fw::GFW_BOOT_PROGRESS if self.seq.plm_raised_reads > 0 => {
                if !peek {
                    self.rec.violation(
                        Kind::GfwReadBeforePlm,
                        format!(
                            "NV_PGC6_AON_SECURE_SCRATCH_GROUP_05 read at {off:#x} while its priv \
                             level mask still shows the read protection raised"
                        ),
                        fields([("offset", json!(off))]),
                    );
                }
                Some(PRI_ERROR_VALUE)
            }
            _ => None,
        }
    }

    fn write_invalidate(&mut self, value: u32) {
        self.inval.ctrl_reg = value & !tlb::TRIGGER;
        if value & tlb::TRIGGER == 0 {
            return;
        }
        // What this invalidate acts on: the tables of its directory as VRAM holds them now (of
        // every known directory for ALL_PDB). Unflushed writes there are a violation; writes
        // other threads have in flight elsewhere are not this invalidate's business.
        let target = if value & tlb::ALL_PDB != 0 {
            None
        } else {
            Some(self.inval.latched_pdb())
        };
        let unflushed = self.unflushed_tables(target);
        if unflushed > 0 {
            self.rec.violation(
                Kind::UnflushedPramin,
                format!(
                    "TLB invalidate {value:#010x} (PDB {:#x}) triggered with PRAMIN writes to \
                     {unflushed} of its page-table entries not yet flushed (no PRAMIN read or \
                     NV_UFLUSH since): kbusFlush_GM107, \"Must call kbusFlush BEFORE any calls \
                     to busInvalidate\"",
                    self.inval.latched_pdb()
                ),
                fields([("value", json!(value)), ("pages", json!(unflushed))]),
            );
        }
        if let Some((old, _)) = self.inval.pending.take() {
            self.rec.violation(
                Kind::InvalidateBusy,
                format!(
                    "TLB invalidate {value:#010x} triggered while the previous one \
                     ({:#010x}, PDB {:#x}) is still pending (TRIGGER not yet read back clear)",
                    old.ctrl, old.pdb
                ),
                fields([("value", json!(value)), ("pending", json!(old.ctrl))]),
            );
            if !self.cfg.faults.invalidate_hang && !self.inval.hung {
                self.complete_invalidate(old);
            }
        }
        let c = &mut self.rec.counters.invalidates;
        c.total += 1;
        if value & tlb::ALL_PDB != 0 {
            c.all_pdb += 1;
        } else {
            c.one_pdb += 1;
        }
        if value & tlb::HUBTLB_ONLY != 0 {
            c.hub_only += 1;
        }
        if value & tlb::ALL_VA != 0 {
            c.all_va += 1;
        } else {
            c.no_all_va += 1;
        }
        if value & tlb::SYS_MEMBAR != 0 {
            c.sys_membar += 1;
        }
        if Scope::from_ctrl(value) != Scope::All {
            c.partial_cache_level += 1;
        }
        let req = Request {
            ctrl: value,
            pdb: self.inval.latched_pdb(),
            pdb_sysmem: self.inval.pdb_reg & 2 != 0,
            seq: self.accesses,
        };
        // Hostile `invalidate-flaky`: a coin per trigger.
        let hung = self.hostile.as_mut().is_some_and(|h| h.invalidate_hangs());
        self.inval.hung = hung;
        if self.cfg.invalidate_delay == 0 && !self.cfg.faults.invalidate_hang && !hung {
            self.complete_invalidate(req);
        } else {
            self.inval.pending = Some((req, self.cfg.invalidate_delay));
        }
    }

    fn read_invalidate(&mut self) -> u32 {
        let ctrl = self.inval.ctrl_reg;
        let Some((req, left)) = self.inval.pending else {
            self.rec.counters.invalidates.idle_reads += 1;
            return ctrl;
        };
        if self.cfg.faults.invalidate_hang || self.inval.hung || left > 0 {
            self.inval.pending = Some((req, left.saturating_sub(1)));
            self.rec.counters.invalidates.busy_polls += 1;
            return ctrl | tlb::TRIGGER;
        }
        self.inval.pending = None;
        self.complete_invalidate(req);
        ctrl
    }

    /// BAR1_PENDING (0) and BAR1_OUTSTANDING (1) as they read now: busy for the first read
    /// after a bind; a read that shows them clear is the poll BAR1 use must wait for.
    fn bind_status_read(&mut self, peek: bool) -> u32 {
        if self.bar1.hung {
            return 3;
        }
        if self.seq.bind_busy_reads > 0 {
            if !peek {
                self.seq.bind_busy_reads -= 1;
            }
            return 1;
        }
        if !peek {
            self.seq.bind_unpolled = false;
        }
        0
    }

    /// `NV_PMC_BOOT_0` / `NV_PMC_BOOT_42`, flapping in the hostile
    /// `boot-flapping` scenario (`peek` reads do not advance it).
    fn read_boot(&mut self, off: u32, peek: bool) -> u32 {
        let real = if off == BOOT_0 {
            self.boot0()
        } else {
            self.boot42()
        };
        let flap = self.hostile_epoch().and_then(|e| e.flap);
        if let (
            Some(Flap::Boot {
                boot0,
                boot42,
                phase,
            }),
            Some(h),
            false,
        ) = (flap, self.hostile.as_mut(), peek)
        {
            if h.flap_read(phase) {
                return if off == BOOT_0 { boot0 } else { boot42 };
            }
        }
        real
    }

    /// The not-done value of the GFW boot progress / FSP boot-done scratch
    /// on the reads where the hostile `gfw-flapping` scenario says so.
    fn gfw_flap(&mut self, off: u32, peek: bool) -> Option<u32> {
        if peek || (off != fw::GFW_BOOT_PROGRESS && Some(off) != self.chip.fsp_scratch) {
            return None;
        }
        let Some(Flap::Gfw { not_done, phase }) = self.hostile_epoch().and_then(|e| e.flap) else {
            return None;
        };
        let h = self.hostile.as_mut()?;
        h.flap_read(phase).then_some(not_done)
    }

    fn complete_invalidate(&mut self, req: Request) {
        let scope = Scope::from_ctrl(req.ctrl);
        let pdb = if req.all_pdb() { None } else { Some(req.pdb) };
        self.tlb.invalidate(pdb, scope);
        self.cover_changes(&req, pdb);
        // Counts it and, with --trace-invalidates, snapshots the counters;
        // the access that completed it is already counted.
        self.rec.invalidate_completed();
    }

    /// The coverage rule (crate::sequence): the changes this invalidate covers, the TU10x
    /// membar rule on them, then the directory's tables learnt again.
    fn cover_changes(&mut self, req: &Request, pdb: Option<u64>) {
        let hub_only = req.ctrl & tlb::HUBTLB_ONLY != 0;
        let _ = self.seq.cover(pdb, hub_only, req.seq);
        // What it reaches: the tables of its directory (every known one for ALL_PDB) as VRAM
        // holds them now; a hub-only invalidate reaches only BAR1's (the hub TLB).
        let fmt = crate::mmu::format(self.chip.mmu);
        let bar1_pdb = match self.bar1.binding {
            Binding::Virtual { pdb, .. } => Some(pdb),
            _ => None,
        };
        let targets: Vec<u64> = match pdb {
            Some(p) if req.pdb_sysmem => {
                let _ = p;
                Vec::new()
            }
            Some(p) => vec![p],
            None => self.seq.spaces.keys().copied().chain(bar1_pdb).collect(),
        };
        let mut covered = Vec::new();
        for p in targets {
            if hub_only && Some(p) != bar1_pdb {
                continue;
            }
            if !self.vram.contains(p, 0x1000) {
                continue;
            }
            // An invalidate of one PDB with ALL_VA (`NV_VIRTUAL_FUNCTION_PRIV_MMU_INVALIDATE_PDB`
            // and `_ALL_VA_TRUE`, dev_vm.h) drops every translation cached for that directory,
            // through whichever table it was walked. So it covers the tables the directory
            // holds now and those it held when last learnt: a table emptied and unlinked before
            // this invalidate (a driver frees empty tables on unmap) held only this directory's
            // entries since, and they are gone from its TLBs too.
            let mut ranges = crate::sequence::tables(&self.vram, fmt, p);
            if let Some(s) = self.seq.spaces.get(&p) {
                ranges.extend(s.ranges.iter().copied());
            }
            covered.extend(
                self.seq
                    .cover_tables(&ranges, req.seq)
                    .into_iter()
                    .map(|c| (p, c)),
            );
        }
        // TU10x only: `kgmmuSetTlbInvalidateMembarWarParameters_TU102` (a stub on later chips).
        let membar = req.ctrl & tlb::SYS_MEMBAR != 0 && (req.ctrl >> 7) & 3 == 1;
        if self.chip.architecture == 0x16 && !membar {
            if let Some((p, c)) = covered
                .iter()
                .find(|(_, c)| crate::sequence::v2_downgrade(c.old, c.new))
            {
                self.rec.violation(
                    Kind::DowngradeWithoutMembar,
                    format!(
                        "TLB invalidate {:#010x} of PDB {p:#x} covers an unmap or downgrade \
                         ({:#x} -> {:#x}) without SYS_MEMBAR and ACK=GLOBALLY (TU10x: \
                         kgmmuSetTlbInvalidateMembarWarParameters_TU102)",
                        req.ctrl, c.old, c.new
                    ),
                    fields([("value", json!(req.ctrl)), ("pdb", json!(p))]),
                );
            }
        }
        let hub = matches!(self.bar1.binding, Binding::Virtual { pdb: b, .. } if Some(b) == pdb);
        match pdb {
            Some(p) if !req.pdb_sysmem => self.seq.learn(&self.vram, fmt, p, hub),
            Some(_) => {}
            None => {
                let known: Vec<u64> = self.seq.spaces.keys().copied().collect();
                for p in known {
                    self.seq.learn(&self.vram, fmt, p, false);
                }
            }
        }
    }

    /// How many quadwords of the tables of `pdb` (of every known directory for `None`), as VRAM
    /// holds them now, have posted PRAMIN writes.
    fn unflushed_tables(&self, pdb: Option<u64>) -> usize {
        if self.seq.posted.is_empty() {
            return 0;
        }
        let fmt = crate::mmu::format(self.chip.mmu);
        let pdbs: Vec<u64> = match pdb {
            Some(p) => vec![p],
            None => self.seq.spaces.keys().copied().collect(),
        };
        let mut n = 0;
        for p in pdbs {
            if !self.vram.contains(p, 0x1000) {
                continue;
            }
            n += self.seq.posted_in_tables(&self.vram, fmt, p);
        }
        n
    }

    fn bind(&mut self, req: BindRequest) {
        self.rec.counters.bar1_binds += 1;
        if self.seq.is_posted(req.inst, 0x1000) {
            self.rec.violation(
                Kind::UnflushedPramin,
                format!(
                    "BAR1 bind of instance block {:#x} whose PRAMIN writes are not yet flushed \
                     (kbusBar1InstBlkVasUpdate_GM107 flushes before the bind)",
                    req.inst
                ),
                fields([("instance_block", json!(req.inst))]),
            );
        }
        // The bind takes a while: the first status read shows it busy, and BAR1 must not be
        // used before a read has shown it complete.
        self.seq.bind_busy_reads = crate::sequence::BIND_BUSY_READS;
        self.seq.bind_unpolled = true;
        if self.hostile_epoch().is_some_and(|e| e.bind_hang) {
            // Hostile `bar1-bind-hang`: the bind stays pending and the
            // previous binding stays in force.
            self.bar1.hung = true;
            return;
        }
        let binding = self.resolve_binding(req);
        if binding == Binding::Physical && matches!(self.bar1.binding, Binding::Virtual { .. }) {
            // BAR1 back to physical mode: the driver lets go of the GPU (RM
            // `kbusTeardownMailbox_*`, nouveau `tu102_bar_bar1_fini`). Its address spaces end
            // with it: judge what they left, then forget them, so that the next driver's use
            // of the same memory is not taken for theirs.
            self.end_of_session();
        }
        if let Binding::Broken(reason) = &binding {
            self.rec.violation(
                Kind::BadInstanceBlock,
                format!(
                    "BAR1 bound to instance block {:#x} (target {}): {reason}",
                    req.inst, req.target
                ),
                fields([
                    ("instance_block", json!(req.inst)),
                    ("target", json!(req.target)),
                ]),
            );
        }
        if let Binding::Virtual { pdb, .. } = &binding {
            let fmt = crate::mmu::format(self.chip.mmu);
            self.seq.learn(&self.vram, fmt, *pdb, true);
        }
        self.bar1.binding = binding;
    }

    fn resolve_binding(&mut self, req: BindRequest) -> Binding {
        if req.target != 0 {
            return Binding::Broken(format!(
                "TARGET {} is system memory (not modelled)",
                req.target
            ));
        }
        if !req.virtual_mode {
            return Binding::Physical;
        }
        let word = req.inst.checked_add(bar1::RAMIN_PAGE_DIR_BASE);
        let (lo, hi) = match word.map(|w| (self.vram.read_u32(w), self.vram.read_u32(w + 4))) {
            Some((Ok(lo), Ok(hi))) => (lo, hi),
            _ => return Binding::Broken(format!("instance block {:#x} is beyond VRAM", req.inst)),
        };
        if lo == POISON || hi == POISON {
            return Binding::Broken(format!(
                "PAGE_DIR_BASE words at {:#x} were never written (poison)",
                req.inst + bar1::RAMIN_PAGE_DIR_BASE
            ));
        }
        let ib = InstBlock::decode(lo, hi);
        if let Some(p) = ib.problem(self.chip.mmu) {
            return Binding::Broken(p);
        }
        // Blackwell: `NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE` (word 131) = 0xcafeca11
        // (`kgmmuInstBlkMagicValueGet_GA10B`; ampere/ga10b dev_ram.h).
        if self.chip.architecture >= 0x1a {
            let magic = self.vram.read_u32(req.inst + 131 * 4).unwrap_or(0);
            if magic != bar1::RAMIN_CTXSW_FW_MAGIC_VALUE {
                self.rec.violation(
                    Kind::InstBlockMagicMissing,
                    format!(
                        "BAR1 instance block {:#x}: word 131 is {magic:#010x}, not \
                         NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE 0xcafeca11",
                        req.inst
                    ),
                    fields([
                        ("instance_block", json!(req.inst)),
                        ("word131", json!(magic)),
                    ]),
                );
            }
        }
        if !self.vram.contains(ib.pdb, 0x1000) {
            return Binding::Broken(format!("page directory base {:#x} is beyond VRAM", ib.pdb));
        }
        Binding::Virtual {
            inst: req.inst,
            pdb: ib.pdb,
        }
    }
}
