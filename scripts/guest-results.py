#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Judge one guest run: KTAP of every expected suite, probe lines, crashes and
the GPU models' reports.

Usage: guest-results.py RUN_DIR --suites S1,S2,... [--probe CHIP ...]
                        [--expect-insmod-fail] [--quiet]
Prints one line per check ("ok - ..." or "not ok - ...") and, last,
"RESULTS <passed> <failed>". Exit status 0 when nothing failed.
"""

import argparse
import json
import os
import re
import struct
import subprocess
import sys

# A crash, or a report of one of the debug kernel's checkers (lockdep reports start with
# "WARNING:", KASAN's and sleeping-in-atomic with "BUG:"; debug objects with "ODEBUG:").
CRASH = re.compile(r"Kernel panic|BUG:|Oops|WARNING:|general protection fault|"
                   r"rust_panic|panicked at|Call Trace:|UBSAN:|KASAN:|"
                   r"suspected memory leak|DEBUG_LOCKS_WARN_ON|INFO: task .* blocked")

# What the debug kernel prints when its checkers start: a run that claims to be on the debug
# kernel must show each.
DEBUG_BANNERS = {
    "lockdep": r"Lock dependency validator",
    "KASAN": r"KernelAddressSanitizer initialized",
    "kmemleak": r"kmemleak: Kernel memory leak detector initialized",
}

# The chip table, from the GPU model itself (`gpu-model chips --json`, kept with each run by
# guest.sh): name -> (display name, architecture, MMU version) and name -> chipset code.
ARCH = {}
CODES = {}


def load_chips(run):
    with open(os.path.join(run, "chips.json")) as f:
        for c in json.load(f):
            ARCH[c["name"]] = (c["display"], c["architecture"], c["mmu"])
            CODES[c["name"]] = c["chipset"]


class Tally:
    def __init__(self, quiet):
        self.passed = 0
        self.failed = 0
        self.quiet = quiet
        self.suites = {}

    def check(self, ok, name, why=""):
        if ok:
            self.passed += 1
            if not self.quiet:
                print(f"ok - {name}")
        else:
            self.failed += 1
            print(f"not ok - {name}" + (f": {why}" if why else ""))


def ktap_blocks(lines):
    blocks, cur, name = {}, None, None
    for line in lines:
        if line.startswith("NOVA-KTAP-BEGIN "):
            name, cur = line.split()[1], []
        elif line.startswith("NOVA-KTAP-END ") and cur is not None:
            blocks[name] = cur
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def judge_suite_kunit_py(t, suite, block, kunit_py, run):
    """Judge one suite's KTAP block (its results file) with the kernel's own parser,
    tools/testing/kunit/kunit.py parse: each test case counts; a block the parser cannot
    read whole (malformed, truncated: errors or crashed cases) fails."""
    d = os.path.abspath(os.path.join(run, "ktap"))
    os.makedirs(d, exist_ok=True)
    src, js = os.path.join(d, suite + ".ktap"), os.path.join(d, suite + ".json")
    with open(src, "w") as f:
        f.write("\n".join(block) + "\n")
    if os.path.exists(js):
        os.unlink(js)
    p = subprocess.run([sys.executable, kunit_py, "parse", "--json=" + js, src],
                       capture_output=True, text=True)
    try:
        with open(js) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        t.check(False, f"kunit {suite}", f"kunit.py parse gave no results ({e}); see {src}")
        return
    groups = [g for g in res.get("sub_groups", []) if g.get("name") == suite]
    if not groups:
        t.check(False, f"kunit {suite}", f"kunit.py parse found no suite {suite}; see {src}")
        return
    g = groups[0]
    misc = g.get("misc", {})
    for c in g.get("test_cases", []):
        st = c.get("status")
        skip = st == "SKIP"
        tally = t.suites.setdefault(suite, [0, 0, 0])
        tally[2 if skip else (0 if st == "PASS" else 1)] += 1
        label = f"kunit {suite}.{c.get('name')}" + (" (skipped)" if skip else "")
        t.check(st in ("PASS", "SKIP"), label, f"status {st}")
    # What the parser could not make sense of fails the suite, even if every case it saw passed.
    bad = misc.get("errors", 0) or misc.get("crashed", 0) or not g.get("test_cases")
    # (Its exit status is 1 for a suite whose cases all skipped, so it is not used.)
    t.check(not bad, f"kunit {suite}: KTAP parsed whole by kunit.py",
            f"exit {p.returncode}, errors {misc.get('errors')}, crashed {misc.get('crashed')}; "
            f"see {src}")


def debugfs_counters(lines):
    """Per chipset code: the driver's debugfs counters, from the NOVA-DEBUGFS dump."""
    files, cur, body = {}, None, None
    inside = False
    for line in lines:
        if line == "NOVA-DEBUGFS-BEGIN":
            inside = True
        elif line == "NOVA-DEBUGFS-END":
            inside = False
        elif inside and line.startswith("== "):
            cur = line[3:]
            files[cur] = []
        elif inside and cur:
            files[cur].append(line)
    per_dev = {}
    for path, body in files.items():
        dev, name = path.rsplit("/", 2)[-2:]
        per_dev.setdefault(dev, {})[name] = body
    out = {}
    for dev, fs in per_dev.items():
        code = None
        for l in fs.get("chip", []):
            if l.startswith("chipset: "):
                code = int(l.split()[1], 16)
        counters = {}
        for l in fs.get("counters", []):
            k, _, v = l.partition(": ")
            if v.strip().isdigit():
                counters[k] = int(v)
        if code is not None:
            out[code] = counters
    return out


def compare_counters(t, chip, rep, drv):
    """The driver's counts and the model's must agree."""
    c = rep.get("counters", {})
    inv = c.get("invalidates", {})
    pairs = [
        ("pramin_reads", drv.get("pramin_reads"), c.get("pramin_reads")),
        ("pramin_writes", drv.get("pramin_writes"), c.get("pramin_writes")),
        ("window_moves", drv.get("pramin_window_moves"), c.get("window_moves")),
        ("invalidates", drv.get("tlb_invalidates"),
         inv.get("total") if isinstance(inv, dict) else inv),
        # Every poll of the invalidate register: busy, or the one that saw it complete.
        # (and the reads that found none pending: the check before the first one after probe).
        ("invalidate polls", drv.get("tlb_reg_reads"),
         inv.get("busy_polls", 0) + inv.get("completed", 0) + inv.get("idle_reads", 0)
         if isinstance(inv, dict) else None),
    ]
    # Every BAR0 access of the driver is counted (its BAR0 type offers no uncounted path).
    pairs.append(("bar0 reads", drv.get("mmio_reads"), c.get("bar0_reads")))
    pairs.append(("bar0 writes", drv.get("mmio_writes"), c.get("bar0_writes")))
    if "bar1_reads" in drv:
        pairs.append(("bar1 reads", drv.get("bar1_reads"), c.get("bar1_reads")))
        pairs.append(("bar1 writes", drv.get("bar1_writes"), c.get("bar1_writes")))
    for name, d, m in pairs:
        if isinstance(m, dict):
            m = m.get("total")
        t.check(d is not None and d == m, f"counters {chip}: {name} driver {d} = model {m}")


def read_dump(path):
    """The model's VRAM dump: (chunk size, poison, {chunk address: bytes})."""
    with open(path, "rb") as f:
        d = f.read()
    magic, _ver, csz, _size, n, poison, _ = struct.unpack_from("<8sIIQQII", d)
    if magic != b"NVMMVRAM":
        raise ValueError("not a VRAM dump")
    chunks, off = {}, 40
    for _ in range(n):
        (addr,) = struct.unpack_from("<Q", d, off)
        chunks[addr] = d[off + 8:off + 8 + csz]
        off += 8 + csz
    return csz, poison, chunks


def check_marks(t, run, lines):
    """Each NOVA-MARK the driver printed is in the model's VRAM at that physical address."""
    names = {v: k for k, v in CODES.items()}
    dumps = {}
    for line in lines:
        m = re.search(r"NOVA-MARK (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)", line)
        if not m:
            continue
        code, addr, val = (int(x, 16) for x in m.groups())
        chip = names.get(code, hex(code))
        name = f"vram {chip}: {val:#x} at {addr:#x}"
        try:
            if chip not in dumps:
                dumps[chip] = read_dump(os.path.join(run, f"{chip}.vram.bin"))
            csz, _poison, chunks = dumps[chip]
            base = addr - addr % csz
            data = chunks.get(base)
            got = struct.unpack_from("<Q", data, addr - base)[0] if data else None
            t.check(got == val, name, f"dump has {got if got is None else hex(got)}")
        except (OSError, ValueError, struct.error) as e:
            t.check(False, name, str(e))


def check_walks(t, run, lines):
    """Each page the driver announced (NOVA-MAP) is what the model's own walker finds in its
    VRAM dump: the physical address of the page's first and last 8 bytes, the page size and the
    access; or sparse; or a fault."""
    names = {v: k for k, v in CODES.items()}
    want = {}
    for line in lines:
        m = re.search(r"NOVA-MAP (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+) "
                      r"(0x[0-9a-f]+) (0x[0-9a-f]+) ([a-z]+)", line)
        if not m:
            continue
        code, pdb, va, pa, ln, page = (int(x, 16) for x in m.groups()[:6])
        what = m.group(7)
        chip = names.get(code, hex(code))
        for o in range(0, ln, page):
            for d in (0, page - 8):
                want.setdefault(chip, []).append((pdb, va + o + d, pa + o + d, page, what))
    for chip, exp in sorted(want.items()):
        path = os.path.join(run, f"{chip}.walk.out")
        try:
            with open(path) as f:
                got = [l.split() for l in f if l.strip()]
        except OSError as e:
            t.check(False, f"walk {chip}: model walk of the announced mappings", str(e))
            continue
        bad = []
        for i, (pdb, va, pa, page, what) in enumerate(exp):
            g = got[i] if i < len(got) else []
            ok = len(g) >= 3 and int(g[0], 16) == pdb and int(g[1], 16) == va
            if ok and what in ("rw", "ro"):
                # Every page nova-mm maps is generic memory: KIND GENERIC_MEMORY 0x6 in both
                # formats (dev_mmu.h NV_MMU_PTE_KIND_GENERIC_MEMORY; 0 is PITCH).
                ok = (g[2] == "page" and f"pa={pa:#x}" in g and f"size={page:#x}" in g
                      and f"ro={int(what == 'ro')}" in g and "kind=0x6" in g)
            elif ok:
                ok = g[2] == what
            if not ok:
                bad.append(f"va {va:#x}: want {what} pa {pa:#x} size {page:#x}, model: {' '.join(g)}")
        pages = len(exp) // 2
        t.check(not bad and len(got) == len(exp),
                f"walk {chip}: the model's walker agrees on {pages} announced pages ({len(exp)} addresses)",
                "; ".join(bad[:5]) or f"{len(got)} answers for {len(exp)} queries")


def devices(run):
    """{pci address: chip} of the run, as guest.sh attached them."""
    out = {}
    try:
        with open(os.path.join(run, "devices.txt")) as f:
            for line in f:
                chip, addr = line.split()
                out[addr] = chip
    except OSError:
        pass
    return out


def check_debug_kernel(t, lines, text):
    """The debug kernel's checkers ran, and kmemleak found nothing once the module was gone."""
    for name, pat in DEBUG_BANNERS.items():
        t.check(re.search(pat, text) is not None, f"debug kernel: {name} active")
    block, cur = None, None
    for line in lines:
        if line == "NOVA-KMEMLEAK-BEGIN":
            cur = []
        elif line == "NOVA-KMEMLEAK-END" and cur is not None:
            block, cur = cur, None
        elif cur is not None:
            cur.append(line)
    t.check(block is not None, "debug kernel: kmemleak scanned after the module was unloaded")
    leaks = [l for l in (block or []) if l.startswith("unreferenced object")]
    t.check(block is not None and not [l for l in block if l.strip()],
            f"debug kernel: kmemleak reports nothing ({len(leaks)} unreferenced objects)",
            "; ".join((block or [])[:8]))


def check_cycles(t, lines, n, bound):
    """Every load/unload cycle loaded, bound every GPU, passed every suite, and left the VRAM
    accounting exactly as the first did."""
    cyc = {}
    for line in lines:
        m = re.match(r"NOVA-CYCLE (\d+) rc=(-?\d+) bound=(\d+) ktap_failures=(\d+) vram=(.*)$", line)
        if m:
            cyc[int(m.group(1))] = (int(m.group(2)), int(m.group(3)), int(m.group(4)),
                                    m.group(5).strip())
        elif re.match(r"NOVA-CYCLE \d+ rmmod-failed", line):
            t.check(False, "cycles: rmmod", line)
    t.check(sorted(cyc) == list(range(1, n + 1)), f"cycles: {n} load/unload cycles ran",
            f"ran {sorted(cyc)}")
    first = cyc.get(1, (None,) * 4)[3]
    bad = [f"cycle {i}: rc={rc} bound={b} failed suites={k} vram={v}"
           for i, (rc, b, k, v) in sorted(cyc.items())
           if rc != 0 or (bound is not None and b != bound) or k != 0 or v != first]
    t.check(not bad and bool(cyc),
            f"cycles: every load bound {bound} GPU(s), passed every suite, same VRAM accounting "
            f"({first})", "; ".join(bad[:4]))


def check_final_sums(t, run, lines, lost=()):
    """Over all loads, the driver's BAR0 reads and writes (its NOVA-BAR0-FINAL lines, one per
    GPU and load, printed also when probe gave up) add up to what each model counted."""
    sums = {}
    for line in lines:
        m = re.search(r"NOVA-BAR0-FINAL dev=(\S+) mmio_reads=(\d+) mmio_writes=(\d+)", line)
        if m:
            r, w, k = sums.get(m.group(1), (0, 0, 0))
            sums[m.group(1)] = (r + int(m.group(2)), w + int(m.group(3)), k + 1)
    for addr, chip in sorted(devices(run).items()):
        if chip in lost:
            continue
        path = os.path.join(run, f"{chip}.report.json")
        if not os.path.exists(path):
            t.check(False, f"counters {chip}: report", "no report written")
            continue
        with open(path) as f:
            c = json.load(f).get("counters", {})
        mr, mw = (c.get(k, {}).get("total") if isinstance(c.get(k), dict) else c.get(k)
                  for k in ("bar0_reads", "bar0_writes"))
        r, w, k = sums.get(addr, (None, None, 0))
        t.check(k > 0 and (r, w) == (mr, mw),
                f"counters {chip}: BAR0 reads/writes over {k} loads, driver {r}/{w} = model {mr}/{mw}")


def check_hostile(t, run, lines, rounds):
    """Hostile devices: the model draws new firmware registers at each reset. Per round and GPU
    the driver bound it where the model says a correct driver must, else refused with a message
    of its own; no model saw a violation (checked with the reports above)."""
    got = {}
    msgs = {}
    for line in lines:
        m = re.match(r"NOVA-HOSTILE (\d+) rc=(-?\d+) bound=(.*)$", line)
        if m:
            got[int(m.group(1))] = (int(m.group(2)), m.group(3).split())
        m = re.match(r"NOVA-HOSTILE-MSG (\d+) (\S+) (.*)$", line)
        if m:
            msgs.setdefault((int(m.group(1)), m.group(2)), []).append(m.group(3))
        if line.startswith("NOVA-HOSTILE-RESET-FAILED"):
            t.check(False, "hostile: reset", line)
    t.check(sorted(got) == list(range(1, rounds + 1)), f"hostile: {rounds} rounds ran",
            f"ran {len(got)}")
    tried = bound_ok = refused = 0
    scen = {}
    bad = []
    for addr, chip in sorted(devices(run).items()):
        with open(os.path.join(run, f"{chip}.report.json")) as f:
            rep = json.load(f)
        epochs = {e["epoch"]: e for e in (rep.get("hostile") or {}).get("epochs", [])}
        # Round r runs after the r-th guest reset; QEMU resets the device once at start too.
        for r, (_rc, bound) in sorted(got.items()):
            e = epochs.get(r + 1)
            if e is None:
                bad.append(f"{chip} round {r}: the model served no epoch {r + 1}")
                continue
            tried += 1
            scen[e["scenario"]] = scen.get(e["scenario"], 0) + 1
            is_bound = addr in bound
            if e.get("must_bind") and not is_bound:
                bad.append(f"{chip} round {r}: {e['scenario']} ({e.get('detail')}) must bind, "
                           f"driver said: {' | '.join(msgs.get((r, addr), ['nothing']))}")
            elif is_bound:
                bound_ok += 1
            else:
                refused += 1
                own = [m for m in msgs.get((r, addr), []) if "probe with driver" not in m]
                if not own:
                    bad.append(f"{chip} round {r}: {e['scenario']} refused without a message")
            if e.get("violations"):
                bad.append(f"{chip} round {r}: {e['scenario']}: {e['violations']} violations")
    print(f"hostile: {tried} devices tried: {bound_ok} bound, {refused} refused; scenarios "
          + ", ".join(f"{k}={v}" for k, v in sorted(scen.items())))
    t.check(tried >= rounds and not bad,
            f"hostile: {tried} devices either bound or refused with a message, no violation",
            "; ".join(bad[:6]))


def check_unplug(t, run, lines, text, chip):
    """A GPU hot-unplugged while the stress workers ran: QEMU confirmed the removal, the driver
    let go of it (its workers stopped without error), and the other GPUs' workers went on."""
    try:
        with open(os.path.join(run, "qmp.log")) as f:
            qmp = f.read()
    except OSError:
        qmp = ""
    t.check('"event": "DEVICE_DELETED"' in qmp,
            f"unplug {chip}: QEMU removed the device (DEVICE_DELETED)", qmp[-300:])
    m = re.search(r"NOVA-UNPLUGGED after=(\d+)s left=(.*) bound=(\d+)", text)
    t.check(m is not None, f"unplug {chip}: the guest saw the GPU go")
    code = CODES[chip]
    stress = {}
    for line in lines:
        s = re.search(r"NOVA-STRESS (0x[0-9a-f]+) ops=(\d+) .* errors=(\d+)", line)
        if s:
            stress.setdefault(int(s.group(1), 16), []).append((int(s.group(2)), int(s.group(3))))
    gone = stress.get(code, [])
    t.check(len(gone) == 1 and gone[0][0] > 0 and gone[0][1] == 0,
            f"unplug {chip}: its workers were stopped by the removal, without error", str(gone))
    surv = [l for l in lines if l.startswith("NOVA-SURVIVOR ")]
    ok = bool(surv)
    for l in surv:
        v = dict(kv.split("=") for kv in l.split()[2:])
        ok = ok and int(v["ops_after"]) > int(v["ops_before"]) and v["errors"] == "0"
    t.check(ok, "unplug: the other GPUs' workers went on working after it", "; ".join(surv))
    others = {c: v for c, v in stress.items() if c != code}
    t.check(bool(others) and all(len(v) == 1 and v[0][1] == 0 for v in others.values()),
            "unplug: the other GPUs' workers ended at rmmod without error", str(others))


def check_readonly_reload(t, run, lines, text):
    """After a normal load, rmmod and insmod with readonly=1: the reload loaded and bound every
    GPU, each was identified and laid out and said it is read-only, and no model saw a write,
    window move, invalidate or bind after the snapshot the host took between the two loads."""
    m = re.search(r"NOVA-RELOAD rc=(-?\d+) bound=(\d+) ktap_failures=(\d+)", text)
    t.check(m is not None and m.group(1) == "0",
            "readonly reload: insmod readonly=1 after rmmod loaded", m.group(0) if m else "no line")
    devs = devices(run)
    if m:
        t.check(int(m.group(2)) == len(devs) and m.group(3) == "0",
                f"readonly reload: bound {len(devs)} GPU(s), every suite passed or skipped",
                m.group(0))
    # The kernel's lines of the reload: after its NOVA-LOAD (the module prints one at each load).
    starts = [i for i, l in enumerate(lines) if "NOVA-LOAD" in l]
    t.check(len(starts) >= 2, "readonly reload: the module was loaded twice", f"{len(starts)} loads")
    after = "\n".join(lines[starts[-1]:]) if len(starts) >= 2 else ""
    finals = {}
    for line in lines[:starts[-1]] if starts else []:
        f = re.search(r"NOVA-BAR0-FINAL dev=(\S+) mmio_reads=(\d+) mmio_writes=(\d+)", line)
        if f:
            r, w = finals.get(f.group(1), (0, 0))
            finals[f.group(1)] = (r + int(f.group(2)), w + int(f.group(3)))
    for addr, chip in sorted(devs.items()):
        name, arch, mmu = ARCH[chip]
        for what, pat in (("identified", rf"nova_mm {addr}: NVIDIA {name} \({arch}\), MMU v{mmu}"),
                          ("laid out", rf"nova_mm {addr}: VRAM \d+ MiB, usable"),
                          ("read-only line", rf"nova_mm {addr}: read-only mode \(nova_mm.readonly=1\)")):
            t.check(re.search(pat, after) is not None, f"readonly reload {chip}: {what} after the reload")
        try:
            with open(os.path.join(run, f"{chip}.snapshot.json")) as f:
                snap = json.load(f).get("counters", {})
            with open(os.path.join(run, f"{chip}.report.json")) as f:
                fin = json.load(f).get("counters", {})
        except (OSError, ValueError) as e:
            t.check(False, f"readonly reload {chip}: snapshot and report", str(e))
            continue

        def tot(c, k):
            v = c.get(k)
            return v.get("total") if isinstance(v, dict) else v
        keys = ("bar0_writes", "bar1_writes", "window_moves", "bar1_binds", "invalidates")
        diff = {k: (tot(fin, k) or 0) - (tot(snap, k) or 0) for k in keys}
        t.check(all(v == 0 for v in diff.values()),
                f"readonly reload {chip}: nothing written after the reload", str(diff))
        # The snapshot fell between the loads: it holds exactly the first load's reads (its
        # NOVA-BAR0-FINAL), and the read-only probe read more after it.
        first = finals.get(addr, (None, None))[0]
        t.check(first is not None and tot(snap, "bar0_reads") == first
                and (tot(fin, "bar0_reads") or 0) > first,
                f"readonly reload {chip}: the snapshot was taken between the loads",
                f"snapshot reads {tot(snap, 'bar0_reads')}, first load's {first}, "
                f"final {tot(fin, 'bar0_reads')}")


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--suites", default="")
    ap.add_argument("--probe", action="append", default=[])
    ap.add_argument("--expect-insmod-fail", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--summary", action="store_true", help="print a line per KUnit suite")
    ap.add_argument("--grep", action="append", default=[],
                    help="a regular expression the console must match")
    ap.add_argument("--require-violation", action="append", default=[],
                    help="a violation kind every model must have recorded (declared expected)")
    ap.add_argument("--kunit-py", default=None,
                    help="the kernel's tools/testing/kunit/kunit.py: parse each suite with it")
    ap.add_argument("--no-writes", action="store_true",
                    help="the models must have seen no BAR0 or BAR1 write, window move, "
                         "invalidate or bind")
    ap.add_argument("--unbound", action="append", default=[],
                    help="a chip whose model must report BAR1 never bound")
    ap.add_argument("--bound", type=int, default=None,
                    help="how many GPUs nova_mm must have bound")
    ap.add_argument("--selftest-truncated", default=None, metavar="SUITE",
                    help="check the harness: SUITE's block with its last lines cut off must "
                         "fail under kunit.py (exit 0 when it does)")
    ap.add_argument("--debug-kernel", action="store_true",
                    help="the run is on the debug kernel: its checkers must have started, and "
                         "kmemleak must report nothing after the module is gone")
    ap.add_argument("--cycles", type=int, default=None,
                    help="load/unload cycles the guest must have run, each with every suite "
                         "passing and the same VRAM accounting")
    ap.add_argument("--multi-load", action="store_true",
                    help="the module was loaded more than once: compare the sum of every "
                         "load's final BAR0 counts with the models' totals")
    ap.add_argument("--hostile", type=int, default=None, metavar="ROUNDS",
                    help="hostile rounds: per round and GPU, bound where the model says it "
                         "must be, a message from the driver where not, no violation")
    ap.add_argument("--unplug", default=None, metavar="CHIP",
                    help="CHIP was hot-unplugged under the stress workers: removed cleanly, "
                         "the others went on working")
    ap.add_argument("--lost", action="append", default=[],
                    help="a chip whose model's connection was cut on purpose: its counts are "
                         "not compared (the driver goes on counting accesses that fail)")
    ap.add_argument("--readonly-reload", action="store_true",
                    help="the guest reloaded the module with readonly=1 after a normal load: "
                         "judge the reload against the models' snapshots taken between")
    return ap.parse_args()


def judge_truncated(a):
    """The harness's own check: a suite's KTAP block cut short must fail under kunit.py."""
    with open(os.path.join(a.run, "guest.out"), errors="replace") as f:
        blocks = ktap_blocks([l.rstrip("\r\n") for l in f])
    block = blocks.get(a.selftest_truncated, [])
    if len(block) < 8:
        print(f"no block for {a.selftest_truncated}")
        return 1
    whole, cut = Tally(True), Tally(True)
    judge_suite_kunit_py(whole, a.selftest_truncated, block, a.kunit_py, a.run)
    judge_suite_kunit_py(cut, a.selftest_truncated, block[:-4], a.kunit_py, a.run)
    print(f"whole block: {whole.failed} failed; truncated: {cut.failed} failed")
    return 0 if whole.failed == 0 and cut.failed > 0 else 1


def read_console(run):
    """The kernel's console (ttyS0), then what /init printed (ttyS1): lines and whole text."""
    lines = []
    for name in ("console.log", "guest.out"):
        with open(os.path.join(run, name), errors="replace") as f:
            lines += [l.rstrip("\r\n") for l in f]
    return lines, "\n".join(lines)


def known_reports(lines):
    """The console lines of known kernel reports that are not nova-mm's."""
    # One lockdep report the kernel's own PCIe hotplug driver gives on every hot-unplug in 7.3
    # (pciehp_unconfigure_device takes reset_lock under pci_rescan_remove_lock, and the other
    # way elsewhere): not nova-mm's, so it is shown, not failed, when it names nothing of
    # nova-mm. Any other report, or this one with a nova_mm frame, fails as a crash.
    known = set()
    i = 0
    while i < len(lines):
        if "WARNING: possible circular locking dependency detected" in lines[i]:
            j = i
            while j < len(lines) and "</TASK>" not in lines[j] and j - i < 400:
                j += 1
            block = lines[i:j + 1]
            text_b = "\n".join(block)
            if ("pciehp_unconfigure_device" in text_b and "pci_rescan_remove_lock" in text_b
                    and "reset_lock" in text_b and "nova_mm" not in text_b):
                known.update(range(i, j + 1))
                print("known kernel report (pciehp's own lock order, no nova_mm frame): "
                      + lines[i].strip())
            i = j
        i += 1
    return known


def check_guest(t, a, lines, text):
    """No crash, the guest ran to the end, the module loaded (or refused), the --grep patterns
    and the number of GPUs bound."""
    known = known_reports(lines)
    crashes = [l for k, l in enumerate(lines) if CRASH.search(l) and k not in known]
    t.check(not crashes, "guest: no panic, oops, BUG or WARNING", "; ".join(crashes[:5]))
    t.check("NOVA-DONE" in text, "guest: ran to the end and powered off")

    m = re.search(r"NOVA-INSMOD nova_mm rc=(\d+)", text)
    rc = int(m.group(1)) if m else -1
    if a.expect_insmod_fail:
        t.check(rc != 0, "guest: nova_mm refused to load", f"rc={rc}")
    else:
        t.check(rc == 0, "guest: nova_mm loaded", f"rc={rc}")

    for pattern in a.grep:
        t.check(re.search(pattern, text) is not None, f"console: /{pattern}/")
    if a.bound is not None:
        m = re.search(r"NOVA-BOUND (\d+)", text)
        n = int(m.group(1)) if m else -1
        t.check(n == a.bound, f"guest: nova_mm bound {a.bound} GPU(s)", f"bound {n}")


def check_probe(t, a, text):
    """Each --probe chip was identified, as the model's chip table names it."""
    for chip in a.probe:
        name, arch, mmu = ARCH[chip]
        want = f"NVIDIA {name} ({arch}), MMU v{mmu}"
        t.check(want in text, f"probe: {want}")


def check_suites(t, a, lines):
    """Every expected KUnit suite ran and kunit.py reads its block as passed."""
    blocks = ktap_blocks(lines)
    for suite in filter(None, a.suites.split(",")):
        if suite not in blocks:
            t.check(False, f"kunit {suite}", "suite did not run")
            continue
        if not a.kunit_py:
            t.check(False, f"kunit {suite}", "no --kunit-py: the suites are read by kunit.py only")
            continue
        judge_suite_kunit_py(t, suite, blocks[suite], a.kunit_py, a.run)


def check_reports(t, a):
    """Each model's report: no undeclared violation, the required ones, writes and binds."""
    for fn in sorted(os.listdir(a.run)):
        if not fn.endswith(".report.json"):
            continue
        chip = fn.split(".")[0]
        try:
            with open(os.path.join(a.run, fn)) as f:
                rep = json.load(f)
            n = int(rep.get("unexpected_violations", -1))
            why = "; ".join(v.get("detail", str(v)) for v in rep.get("violations", [])
                            if not v.get("expected"))[:2000]
            t.check(n == 0, f"model {chip}: no undeclared violation", f"{n}: {why}")
            counts = rep.get("violation_counts", {})
            for kind in a.require_violation:
                t.check(counts.get(kind, 0) > 0 and kind in rep.get("expected_kinds", []),
                        f"model {chip}: recorded the {kind} the tests caused (declared expected)",
                        f"{counts.get(kind, 0)} recorded")
            if a.no_writes:
                c = rep.get("counters", {})
                seen = {k: (c.get(k, {}).get("total") if isinstance(c.get(k), dict) else c.get(k))
                        for k in ("bar0_writes", "bar1_writes", "window_moves", "bar1_binds")}
                seen["invalidates"] = (c.get("invalidates") or {}).get("total")
                t.check(all(v == 0 for v in seen.values()),
                        f"model {chip}: nothing written to the GPU", str(seen))
            binds = rep.get("counters", {}).get("bar1_binds")
            if chip in a.unbound:
                mode = (rep.get("bar1_binding") or {}).get("mode")
                t.check(binds == 0 and mode == "unbound",
                        f"model {chip}: BAR1 never bound", f"{binds} binds, mode {mode}")
            elif a.probe and chip in a.probe and not a.expect_insmod_fail:
                t.check(bool(binds), f"model {chip}: BAR1 bound", f"{binds} binds")
        except (OSError, ValueError) as e:
            t.check(False, f"model {chip}: report", str(e))


def check_counters(t, a, lines):
    """The driver's counters (debugfs, final BAR0 totals) against each model's."""
    drv = debugfs_counters(lines)
    # The driver's last BAR0 totals, printed when it let go of the GPU (after the debugfs dump).
    for line in lines:
        m = re.search(r"NOVA-FINAL (0x[0-9a-f]+) mmio_reads=(\d+) mmio_writes=(\d+)", line)
        if m and int(m.group(1), 16) in drv:
            drv[int(m.group(1), 16)]["mmio_reads"] = int(m.group(2))
            drv[int(m.group(1), 16)]["mmio_writes"] = int(m.group(3))
    for chip in a.probe:
        path = os.path.join(a.run, f"{chip}.report.json")
        if CODES[chip] in drv and os.path.exists(path):
            with open(path) as f:
                compare_counters(t, chip, json.load(f), drv[CODES[chip]])
        elif not a.expect_insmod_fail:
            t.check(False, f"counters {chip}", "no debugfs counters or no report")
    for chip in a.probe:
        if not os.path.exists(os.path.join(a.run, f"{chip}.report.json")):
            t.check(False, f"model {chip}: report", "no report written")


def print_summary(t):
    """One line per KUnit suite."""
    print("KUnit suites:")
    for suite, (p, f, k) in t.suites.items():
        print(f"  {suite:28} {p:3} passed, {f} failed, {k} skipped")


def main():
    a = parse_args()
    t = Tally(a.quiet)
    try:
        load_chips(a.run)
    except (OSError, ValueError, KeyError) as e:
        t.check(False, "the run's chip table (chips.json, from gpu-model chips --json)", str(e))
    if a.selftest_truncated:
        return judge_truncated(a)
    lines, text = read_console(a.run)
    check_guest(t, a, lines, text)
    check_probe(t, a, text)
    check_suites(t, a, lines)
    check_reports(t, a)
    # The page tables and marks in the models' VRAM are those of the last load.
    starts = [i for i, l in enumerate(lines) if "NOVA-LOAD" in l]
    last = lines[starts[-1]:] if starts else lines
    check_marks(t, a.run, last)
    check_walks(t, a.run, last)
    if a.debug_kernel:
        check_debug_kernel(t, lines, text)
    if a.cycles is not None:
        check_cycles(t, lines, a.cycles, a.bound)
    if a.hostile is not None:
        check_hostile(t, a.run, lines, a.hostile)
    if a.unplug:
        check_unplug(t, a.run, lines, text, a.unplug)
    if a.readonly_reload:
        check_readonly_reload(t, a.run, lines, text)
    if a.multi_load:
        check_final_sums(t, a.run, lines, a.lost)
    else:
        check_counters(t, a, lines)
        if a.summary:
            print_summary(t)
    print(f"RESULTS {t.passed} {t.failed}")
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
