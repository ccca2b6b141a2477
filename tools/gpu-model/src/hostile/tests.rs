// SPDX-License-Identifier: MIT OR Apache-2.0

//! Hostile-mode tests: the draws, and the model serving them through BAR0.

use std::collections::BTreeSet;

use super::*;
use crate::bar1::Binding;
use crate::fw::{GFW_BOOT_PROGRESS, LOCAL_MEMORY_RANGE, USABLE_FB_SIZE_IN_MB, VGA_WORKSPACE_BASE};
use crate::gpu::{Config, Gpu};
use crate::pramin::APERTURE_BASE;
use crate::regs::{BOOT_0, BOOT_42};
use crate::report::Kind;
use crate::tlb;

fn chip(n: &str) -> &'static Chip {
    Chip::by_name(n).unwrap()
}

/// The first epoch of `seed` with scenario `s`.
fn epoch_of(seed: u64, s: Scenario) -> u64 {
    (0..100).find(|e| scenario(seed, *e) == s).unwrap()
}

/// A hostile GPU advanced (by resets) to `epoch`.
fn gpu_at(chip_name: &str, seed: u64, epoch: u64) -> Gpu {
    let mut cfg = Config::new(chip(chip_name));
    cfg.vram_bytes = 1 << 30;
    cfg.hostile = Some(seed);
    let mut g = Gpu::new(cfg).unwrap();
    for _ in 0..epoch {
        g.reset();
    }
    assert_eq!(g.hostile_epoch().unwrap().epoch, epoch);
    lower_plm(&mut g);
    g
}

/// Reads the GFW priv level mask until FWSEC shows it lowered, as a driver does first.
fn lower_plm(g: &mut Gpu) {
    for _ in 0..crate::sequence::PLM_RAISED_READS {
        g.bar0_read(u64::from(crate::fw::GFW_PRIV_LEVEL_MASK), 4);
    }
}

/// A 4-byte PRAMIN write at VRAM `pa`.
fn pramin_w32(g: &mut Gpu, pa: u64, v: u32) {
    let win = u64::from(g.chip.window.offset());
    g.bar0_write(win, 4, pa >> 16);
    g.bar0_write(APERTURE_BASE + (pa & 0xffff), 4, u64::from(v));
}

fn r32(g: &mut Gpu, off: u32) -> u32 {
    // CAST: 4-byte reads return 32 bits.
    g.bar0_read(u64::from(off), 4) as u32
}

/// The FB size a driver would decode from the chip's register, if valid.
fn decoded_fb_size(c: &Chip, v: u32) -> u64 {
    match c.fb_size {
        FbSizeReg::LocalMemoryRange => (u64::from((v >> 4) & 0x3f) << (v & 0xf)) * MIB,
        FbSizeReg::UsableFbSizeMb => u64::from(v) * MIB,
    }
}

#[test]
fn splitmix64_reference_values() {
    // The published SplitMix64 sequence for seed 0.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    let mut r = SplitMix64::new(7);
    for _ in 0..1000 {
        assert!(r.below(3) < 3);
        let v = r.range(10, 12);
        assert!((10..=12).contains(&v));
    }
    assert!(SplitMix64::new(1).range(0, u64::MAX) > 0);
}

#[test]
fn draws_are_deterministic_per_seed_and_epoch() {
    for c in &CHIPS {
        for seed in [0, 1, 0xdead_beef, u64::MAX] {
            for epoch in 0..30 {
                assert_eq!(
                    draw(seed, epoch, c, 1 << 30, false),
                    draw(seed, epoch, c, 1 << 30, false)
                );
            }
        }
    }
    // Different seeds give different sequences, and epochs differ.
    let seq = |seed| -> Vec<Epoch> {
        (0..24)
            .map(|e| draw(seed, e, chip("ga102"), 1 << 30, false))
            .collect()
    };
    assert_ne!(seq(1), seq(2));
    let s = seq(1);
    assert_ne!(s[0].detail, s[12].detail);
    // The same sequence comes out of a model reset epoch by epoch.
    let mut g = gpu_at("ga102", 1, 0);
    for (e, want) in s.iter().enumerate().take(13) {
        let got = g.hostile_epoch().unwrap();
        assert_eq!(got, want, "epoch {e}");
        assert_eq!(g.vram.size(), want.vram_size);
        assert_eq!(g.fw.reserved(), want.reserved);
        g.reset();
    }
}

#[test]
fn every_scenario_comes_up() {
    for seed in 0..500u64 {
        let seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Every aligned block of 12 epochs holds each scenario.
        for block in 0..4 {
            let seen: BTreeSet<Scenario> = (block * 12..block * 12 + 12)
                .map(|e| scenario(seed, e))
                .collect();
            assert_eq!(
                seen.len(),
                Scenario::ALL.len(),
                "seed {seed:#x} block {block}"
            );
        }
    }
    // And the order is seed-dependent.
    let order = |seed| (0..12).map(|e| scenario(seed, e)).collect::<Vec<_>>();
    assert_ne!(order(1), order(2));
}

#[test]
fn benign_draws_are_valid_devices() {
    for c in &CHIPS {
        for seed in 0..40 {
            let e = draw(seed, epoch_of(seed, Scenario::Benign), c, 1 << 30, false);
            assert!(e.must_bind);
            assert!((MIN_VRAM..=MAX_VRAM).contains(&e.vram_size), "{}", e.detail);
            assert_eq!(e.vram_size % MIB, 0);
            assert_eq!(decoded_fb_size(c, e.regs.fb_size), e.vram_size);
            let (regs, reserved) = fw::layout(c, e.vram_size, false).unwrap();
            assert_eq!(e.regs, regs);
            assert_eq!(e.reserved, reserved);
            assert_eq!(e.detail, format!("vram={:#x}", e.vram_size));
        }
    }
    // Sizes vary.
    let sizes: BTreeSet<u64> = (0..40)
        .map(|s| {
            draw(
                s,
                epoch_of(s, Scenario::Benign),
                chip("tu102"),
                1 << 30,
                false,
            )
            .vram_size
        })
        .collect();
    assert!(sizes.len() > 10);
}

#[test]
fn garbage_registers_are_garbage() {
    for c in &CHIPS {
        for seed in 0..60 {
            let only = |s| draw(seed, epoch_of(seed, s), c, 1 << 30, false);
            let e = only(Scenario::FbSize);
            assert!(!e.must_bind);
            let size = decoded_fb_size(c, e.regs.fb_size);
            let high_junk = match c.fb_size {
                FbSizeReg::LocalMemoryRange => e.regs.fb_size & 0xbfff_fc00 != 0,
                FbSizeReg::UsableFbSizeMb => false,
            };
            assert!(
                high_junk || !(64 * MIB..=128 * GIB).contains(&size),
                "{}: {}",
                c.name,
                e.detail
            );
            assert_eq!(e.vram_size, 1 << 30);
            assert_eq!(e.reserved.len(), 1);
            assert_eq!((e.reserved[0].start, e.reserved[0].end), (0, 1 << 30));

            let e = only(Scenario::VgaWorkspace);
            let v = e.regs.vga_workspace;
            let base = u64::from(v >> 8) << 16;
            let valid = v & 8 != 0;
            assert!(
                !valid || base >= e.vram_size || base < 2 * MIB,
                "{}",
                e.detail
            );
            // The default workspace and FRTS stay reserved.
            let end = e.vram_size;
            for a in [end - 4, end - MIB, end - 2 * MIB] {
                assert!(
                    e.reserved.iter().any(|r| r.overlaps(a, 4)),
                    "{a:#x} {}",
                    e.detail
                );
            }
            // A claimed base below the default one is not honoured (the
            // workspace is then the last 128 KiB, HARDWARE.md): memory under
            // it stays usable.
            if valid && base < end - MIB {
                assert!(
                    !e.reserved.iter().any(|r| r.overlaps(base, 4)),
                    "{}",
                    e.detail
                );
            }

            let w = |e: &Epoch| {
                (
                    u64::from(e.regs.wpr2_lo >> 4) << 12,
                    u64::from(e.regs.wpr2_hi >> 4) << 12,
                )
            };
            let e = only(Scenario::Wpr2Inverted);
            let (lo, hi) = w(&e);
            assert!(lo > hi && hi > 0 && lo < e.vram_size);
            let wr = e.reserved.iter().find(|r| r.name == "wpr2").unwrap();
            assert!(wr.start <= hi && wr.end > lo);

            let e = only(Scenario::Wpr2Outside);
            let (lo, hi) = w(&e);
            assert!(hi > e.vram_size && lo < hi, "{}", e.detail);
            if lo < e.vram_size {
                assert!(e.reserved.iter().any(|r| r.name == "wpr2" && r.start == lo));
            }

            let e = only(Scenario::Wpr2Overlap);
            let (lo, hi) = w(&e);
            assert!(
                lo < e.vram_size - MIB && hi > e.vram_size - MIB,
                "{}",
                e.detail
            );

            let e = only(Scenario::Wpr2Empty);
            let (lo, hi) = w(&e);
            assert!(lo == hi && lo != 0 && lo < e.vram_size);

            for s in Scenario::ALL {
                let e = only(s);
                assert_eq!(e.must_bind, s == Scenario::Benign);
                for r in &e.reserved {
                    assert!(
                        r.start < r.end && r.end <= e.vram_size,
                        "{}: {r:?}",
                        e.detail
                    );
                }
            }
        }
    }
}

#[test]
fn reset_advances_the_epoch_and_resets_the_device() {
    let mut g = gpu_at("ga102", 5, 0);
    // BAR1 bound physically, an invalidate pending, the window moved.
    g.bar0_write(u64::from(crate::bar1::VF_BAR1_BLOCK), 4, 0);
    g.bar0_write(
        u64::from(tlb::INVALIDATE),
        4,
        u64::from(tlb::TRIGGER | tlb::ALL_PDB),
    );
    g.bar0_write(0x1700, 4, 0x10);
    let before = g.hostile_epoch().unwrap().clone();
    assert!(g.inval.pending.is_some(), "{}", before.detail);
    g.reset();
    let after = g.hostile_epoch().unwrap().clone();
    assert_eq!(after.epoch, 1);
    assert_eq!(after, draw(5, 1, chip("ga102"), 1 << 30, false));
    assert_eq!(g.bar1.binding, Binding::Unbound);
    assert!(!g.bar1.hung);
    assert!(g.inval.pending.is_none());
    assert!(g.tlb.is_empty());
    assert_eq!(g.window.read(), 0);
    assert_eq!(g.vram.size(), after.vram_size);
    assert_eq!(g.rec.counters.resets, 1);
    assert_eq!(g.hostile.as_ref().unwrap().served.len(), 2);
    // The registers are the new epoch's.
    assert_eq!(r32(&mut g, VGA_WORKSPACE_BASE), after.regs.vga_workspace);
    assert_eq!(r32(&mut g, USABLE_FB_SIZE_IN_MB), after.regs.fb_size);
    // Without --hostile a reset keeps the registers and the size.
    let mut cfg = Config::new(chip("ga102"));
    cfg.vram_bytes = 1 << 30;
    let mut plain = Gpu::new(cfg).unwrap();
    let regs = plain.fw.regs();
    plain.reset();
    assert_eq!(plain.fw.regs(), regs);
    assert_eq!(plain.vram.size(), 1 << 30);
    assert!(plain.hostile_epoch().is_none());
    assert!(plain.report().get("hostile").is_none());
}

#[test]
fn reserved_ranges_are_enforced_in_every_scenario() {
    for name in ["tu102", "ga102", "gh100"] {
        for s in Scenario::ALL {
            for seed in [3u64, 11, 12345] {
                let ep = epoch_of(seed, s);
                let mut g = gpu_at(name, seed, ep);
                let e = g.hostile_epoch().unwrap().clone();
                assert!(!e.reserved.is_empty(), "{}", e.detail);
                for r in &e.reserved {
                    for a in [r.start, r.end - 4] {
                        let n = g.rec.count(Kind::ReservedVram);
                        pramin_w32(&mut g, a & !3, 1);
                        assert_eq!(
                            g.rec.count(Kind::ReservedVram),
                            n + 1,
                            "{name} {}: write at {a:#x} in {r:?}",
                            e.detail
                        );
                    }
                }
                // VRAM below every reserved range is free to use.
                let lowest = e.reserved.iter().map(|r| r.start).min().unwrap();
                if lowest >= 4 {
                    let n = g.rec.count(Kind::ReservedVram);
                    pramin_w32(&mut g, lowest - 4, 1);
                    assert_eq!(g.rec.count(Kind::ReservedVram), n, "{}", e.detail);
                }
                // The end of VRAM is the drawn (backing) size.
                let n = g.rec.count(Kind::PraminOutOfRange);
                pramin_w32(&mut g, e.vram_size, 1);
                assert_eq!(g.rec.count(Kind::PraminOutOfRange), n + 1);
                // Violations carry the epoch.
                let last = g.rec.violations().last().unwrap();
                assert_eq!(last.fields["epoch"], ep);
            }
        }
    }
}

#[test]
fn registers_read_as_drawn() {
    for name in ["tu102", "gb202"] {
        let c = chip(name);
        for s in [
            Scenario::FbSize,
            Scenario::VgaWorkspace,
            Scenario::Wpr2Inverted,
        ] {
            let mut g = gpu_at(name, 9, epoch_of(9, s));
            let e = g.hostile_epoch().unwrap().clone();
            let fb = match c.fb_size {
                FbSizeReg::LocalMemoryRange => LOCAL_MEMORY_RANGE,
                FbSizeReg::UsableFbSizeMb => USABLE_FB_SIZE_IN_MB,
            };
            assert_eq!(r32(&mut g, fb), e.regs.fb_size);
            assert_eq!(r32(&mut g, VGA_WORKSPACE_BASE), e.regs.vga_workspace);
            let (lo, hi) = if c.architecture >= 0x1a {
                (fw::HUBMMU_WPR2_ADDR_LO, fw::HUBMMU_WPR2_ADDR_HI)
            } else {
                (fw::WPR2_ADDR_LO, fw::WPR2_ADDR_HI)
            };
            assert_eq!(r32(&mut g, lo), e.regs.wpr2_lo);
            assert_eq!(r32(&mut g, hi), e.regs.wpr2_hi);
            // Still read-only.
            g.bar0_write(u64::from(fb), 4, 0);
            assert_eq!(g.rec.count(Kind::ReadOnlyRegister), 1);
        }
    }
}

#[test]
fn boot_and_gfw_flapping() {
    for name in ["ga102", "gh100"] {
        let c = chip(name);
        for seed in 0..20 {
            let mut g = gpu_at(name, seed, epoch_of(seed, Scenario::BootFlapping));
            let Some(Flap::Boot { boot0, boot42, .. }) = g.hostile_epoch().unwrap().flap else {
                panic!()
            };
            let reads: Vec<u32> = (0..4).map(|_| r32(&mut g, BOOT_0)).collect();
            assert_ne!(reads[0], reads[1]);
            assert_eq!(reads[0], reads[2]);
            assert!(reads.contains(&c.boot0()) && reads.contains(&boot0));
            let b42: Vec<u32> = (0..2).map(|_| r32(&mut g, BOOT_42)).collect();
            assert!(b42.contains(&c.boot42()) && b42.contains(&boot42));
            // The report keeps the real identity.
            assert_eq!(g.report()["boot0"], format!("{:#010x}", c.boot0()));

            let mut g = gpu_at(name, seed, epoch_of(seed, Scenario::GfwFlapping));
            let regs: Vec<u32> = std::iter::once(GFW_BOOT_PROGRESS)
                .chain(c.fsp_scratch)
                .collect();
            for off in regs {
                let a = r32(&mut g, off) & 0xff;
                let b = r32(&mut g, off) & 0xff;
                assert!(
                    a != b && (a == 0xff || b == 0xff),
                    "{name} {off:#x}: {a:#x} {b:#x}"
                );
            }
        }
    }
}

#[test]
fn flaky_invalidates_hang_half_the_time() {
    let mut g = gpu_at("ga102", 2, epoch_of(2, Scenario::InvalidateFlaky));
    let trig = u64::from(tlb::TRIGGER | tlb::ALL_PDB);
    let (mut done, mut hung) = (0, 0);
    for _ in 0..200 {
        g.bar0_write(u64::from(tlb::INVALIDATE), 4, trig);
        let mut completed = false;
        for _ in 0..50 {
            if r32(&mut g, tlb::INVALIDATE) & tlb::TRIGGER == 0 {
                completed = true;
                break;
            }
        }
        if completed {
            done += 1;
        } else {
            hung += 1;
            // A device reset clears the stuck invalidate (and ends the epoch).
            assert!(g.inval.hung);
        }
    }
    assert_eq!(done + hung, 200);
    assert!((60..=140).contains(&done), "{done} completed");
    assert_eq!(g.rec.counters.invalidates.completed, done);
    // A hung invalidate is still pending when the next is triggered (and is
    // not completed by it): every hung one but possibly the last is "busy".
    let busy = g.rec.count(Kind::InvalidateBusy);
    assert!(busy == hung || busy + 1 == hung, "{busy} busy, {hung} hung");
}

#[test]
fn bar1_bind_hangs() {
    for (name, block, status) in [
        (
            "ga102",
            crate::bar1::VF_BAR1_BLOCK,
            crate::bar1::VF_BIND_STATUS,
        ),
        (
            "gh100",
            crate::bar1::HOPPER_BAR1_LOW,
            crate::bar1::HOPPER_BAR1_LOW,
        ),
    ] {
        let mut g = gpu_at(name, 4, epoch_of(4, Scenario::Bar1BindHang));
        assert_eq!(r32(&mut g, status) & 3, 0);
        // MODE physical, TARGET video memory (Hopper: LOW, then HIGH triggers).
        g.bar0_write(u64::from(block), 4, 0);
        if block == crate::bar1::HOPPER_BAR1_LOW {
            g.bar0_write(u64::from(crate::bar1::HOPPER_BAR1_HIGH), 4, 0);
        }
        for _ in 0..10 {
            assert_eq!(r32(&mut g, status) & 3, 3, "{name}");
        }
        assert_eq!(g.bar1.binding, Binding::Unbound);
        let mut b = [0u8; 4];
        g.bar1_read(0, &mut b);
        assert_eq!(g.rec.count(Kind::Bar1Fault), 1);
        assert_eq!(g.rec.counters.bar1_binds, 1);
        // The next epoch binds normally unless it hangs too.
        g.reset();
        if !g.hostile_epoch().unwrap().bind_hang {
            g.bar0_write(u64::from(block), 4, 0);
            if block == crate::bar1::HOPPER_BAR1_LOW {
                g.bar0_write(u64::from(crate::bar1::HOPPER_BAR1_HIGH), 4, 0);
            }
            // Busy for the first read after the bind, then done.
            assert_eq!(r32(&mut g, status) & 3, 1);
            assert_eq!(r32(&mut g, status) & 3, 0);
            assert_eq!(g.bar1.binding, Binding::Physical);
        }
    }
}

#[test]
fn report_lists_every_epoch() {
    let mut g = gpu_at("ga102", 77, 0);
    let end = g.vram.size();
    pramin_w32(&mut g, end - 4, 1);
    g.reset();
    g.reset();
    let v = g.report();
    let h = &v["hostile"];
    assert_eq!(h["seed"], 77);
    let epochs = h["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for (i, e) in epochs.iter().enumerate() {
        let d = draw(77, i as u64, chip("ga102"), 1 << 30, false);
        assert_eq!(e["epoch"], i as u64);
        assert_eq!(e["scenario"], d.scenario.name());
        assert_eq!(e["detail"], d.detail);
        assert_eq!(e["must_bind"], d.must_bind);
        assert_eq!(e["vram_bytes"], d.vram_size);
        assert_eq!(e["reserved"].as_array().unwrap().len(), d.reserved.len());
    }
    assert_eq!(epochs[0]["violations"], 1);
    assert_eq!(epochs[1]["violations"], 0);
    // The priv level mask reads, the window write and the PRAMIN write.
    assert_eq!(
        epochs[0]["accesses"],
        2 + u64::from(crate::sequence::PLM_RAISED_READS)
    );
    assert_eq!(epochs[1]["accesses"], 0);
    assert_eq!(v["violations_total"], 1);
    assert_eq!(v["violations"][0]["epoch"], 0);
    // A fault makes no epoch a must-bind.
    let mut cfg = Config::new(chip("ga102"));
    cfg.vram_bytes = 1 << 30;
    cfg.hostile = Some(77);
    cfg.faults.boot_incomplete = true;
    let mut g = Gpu::new(cfg).unwrap();
    for _ in 0..12 {
        assert!(!g.hostile_epoch().unwrap().must_bind);
        g.reset();
    }
}
