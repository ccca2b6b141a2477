#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Page-table benchmark table from a guest run with nova_mm.bench=1.

Usage: bench.py RUN_DIR

For every NOVA-BENCH line the driver printed: the model's counts over the same
TLB invalidates (from its report's invalidate_trace), which must agree with the
driver's; the theoretical minimum of the design's performance model
(Documentation/gpu/nova-mm/driver.rst, "Cost"), computed here from the
scenario's geometry alone, not from the driver's code; and the cost of the
nova-core series' approach (4 KiB pages only, about 11 uncached reads per page
from read-back walks, new tables zeroed whole, no reclaim).

Prints one key=value line per scenario; exit status 1 if the driver's and the
model's counts disagree anywhere or a scenario is missing its model counts.
"""

import json
import os
import re
import sys

DIRS = {2: [(47, 2), (38, 9), (29, 9)], 3: [(56, 1), (47, 9), (38, 9), (29, 9)]}
K4, K64, M2, M512 = 1 << 12, 1 << 16, 1 << 21, 1 << 29
MIB = 1 << 20
SERIES_READS_PER_PAGE = 11


def tables_of(mmu, va, size, page):
    """The tables a mapping of [va, va+size) in `page` pages writes to, below the root:
    {table key: (qwords in the table, set of quadwords the mapping writes)}, and the root's
    written entries."""
    return tables_of_pages(mmu, range(va, va + size, page), page)


def tables_of_pages(mmu, addrs, page):
    """The same for pages of `page` bytes at the virtual addresses `addrs`."""
    dirs = DIRS[mmu]
    root = set()
    tabs = {}
    for a in addrs:
        sh0, b0 = dirs[0]
        root.add((a >> sh0) & ((1 << b0) - 1))
        for i in range(1, len(dirs)):
            psh = dirs[i - 1][0]
            sh, b = dirs[i]
            key = ("pd", i, a >> psh)
            tabs.setdefault(key, (1 << b, set()))[1].add((a >> sh) & ((1 << b) - 1))
        if page == M512:
            continue
        key = ("pd0", a >> 29)
        e = (a >> 21) & 0xff
        q = 2 * e if page in (M2, K64) else 2 * e + 1
        tabs.setdefault(key, (512, set()))[1].add(q)
        if page == M2:
            continue
        if page == K64:
            tabs.setdefault(("lpt", a >> 21), (32, set()))[1].add((a >> 16) & 31)
        else:
            tabs.setdefault(("spt", a >> 21), (512, set()))[1].add((a >> 12) & 511)
    return root, tabs


def minimum(b, delay):
    """The theoretical minimum of MMIO operations of one scenario."""
    mmu, va, size, page = b["mmu"], b["va"], b["size"], b["page"]
    # Per operation: the flush read after its last PRAMIN write (HARDWARE.md §9 rule 1: RM
    # kbusFlush_GM107, "Must call kbusFlush BEFORE any calls to busInvalidate"), then the
    # invalidate's three register writes and the polls the device needs.
    inv = 1 + 3 + (delay + 1)
    root, tabs = tables_of(mmu, va, size, page)
    leaves = size // page
    moves = max(1, -(-(len(tabs) + 1) * 4096 // MIB))
    name = b["bench"].removeprefix("bar1_").removeprefix("tracked_").replace("untracked_remap_", "map_")
    if name.startswith("map_"):
        # New tables: written whole (entries, zeros elsewhere), except that the `z` tables whose
        # memory was known zero need only their entries. Which ones those were is not known
        # here; the minimum assumes they were the ones that would need the most zeros.
        z = b["zero_hits"]
        needs = sorted((n - len(w) for n, w in tabs.values()), reverse=True)
        return (len(root) + sum(len(w) for _, w in tabs.values()) + sum(needs[z:])
                + moves + inv)
    if name.startswith("remap_"):
        # Tables known to be zero (or not: the counts say): only the entries.
        z = b["zero_hits"]
        needs = sorted((n - len(w) for n, w in tabs.values()), reverse=True)
        return (len(root) + sum(len(w) for _, w in tabs.values()) + sum(needs[z:])
                + moves + inv)
    if False:
        return len(root) + sum(len(w) for _, w in tabs.values()) + moves + inv
    if name.startswith("unmap_"):
        # One write per leaf, one per freed table (every table but the root).
        return leaves + len(tabs) + moves + inv
    if name == "cycles_4k":
        cycles = b["ops"] // 2
        first = len(root) + sum(n for n, _ in tabs.values())
        again = len(root) + sum(len(w) for _, w in tabs.values())
        unmap = 1 + len(tabs)
        return first + (cycles - 1) * again + cycles * unmap + moves + b["ops"] * inv
    raise ValueError(name)


def window_moves(tabs):
    """Window moves: one per 1 MiB of page-table memory touched (the tables and the root)."""
    return max(1, -(-(len(tabs) + 1) * 4096 // MIB))


def batch_minimum(b, g, delay):
    """The theoretical minimum of a batch scenario: per batch one flush read and one
    invalidate (its three writes and the polls the device needs), and the entries its
    operations write, from the geometry the driver printed (NOVA-BENCH-GEOMETRY: `count`
    operations of each kind, `stride` bytes apart, in `batches` batches)."""
    mmu, va = b["mmu"], b["va"]
    n, stride, nb = g["count"], g["stride"], g["batches"]
    inv = 1 + 3 + (delay + 1)
    name = b["bench"]
    if name == "batch_cycles_4k":
        # `nb / 2` rounds of: a batch mapping `n` 4 KiB pages `stride` apart, a batch unmapping
        # them. A map batch writes the root's entry, the entries of the path's new tables and
        # the leaves (and zeros in the new tables not known to be zero: the first round's, as
        # many as the counts say); an unmap batch one write per leaf and per freed table.
        rounds = nb // 2
        root, tabs = tables_of_pages(mmu, [va + i * stride for i in range(n)], K4)
        z_first = max(0, min(len(tabs), b["zero_hits"] - (rounds - 1) * len(tabs)))
        needs = sorted((q - len(w) for q, w in tabs.values()), reverse=True)
        written = len(root) + sum(len(w) for _, w in tabs.values())
        maps = rounds * written + sum(needs[z_first:])
        unmaps = rounds * (n + len(tabs))
        return maps + unmaps + window_moves(tabs) + nb * inv
    if name == "batch_map_spread_4k":
        # `n` 4 KiB maps, `stride` apart, in one batch: as map_ (known-zero tables need only
        # their entries).
        root, tabs = tables_of_pages(mmu, [va + i * stride for i in range(n)], K4)
        z = b["zero_hits"]
        needs = sorted((q - len(w) for q, w in tabs.values()), reverse=True)
        return (len(root) + sum(len(w) for _, w in tabs.values()) + sum(needs[z:])
                + window_moves(tabs) + inv)
    if name == "batch_mixed_4k":
        # `n` unmaps, `n` access changes and `n` maps in one page table that stays: one leaf
        # write each.
        root, tabs = tables_of(mmu, va, 4 * n * K4, K4)
        return 3 * n + window_moves(tabs) + inv
    raise ValueError(name)


def series(b):
    """What the nova-core series' approach costs for the same work (see the module doc)."""
    mmu, va, size = b["mmu"], b["va"], b["size"]
    pages = size // K4
    root, tabs = tables_of(mmu, va, size, K4)
    walk = pages * (1 + SERIES_READS_PER_PAGE)
    new_tables = len(tabs) * 512 + len(tabs)  # zeroed 8 bytes at a time, then linked
    inv = 5
    name = b["bench"].removeprefix("bar1_").removeprefix("tracked_").replace("untracked_remap_", "map_")
    if name.startswith("map_"):
        return walk + new_tables + len(root) + inv
    if name.startswith(("unmap_", "remap_")):
        return walk + inv  # tables are never reclaimed, so a remap creates none
    if name == "cycles_4k":
        cycles = b["ops"] // 2
        return new_tables + len(root) + cycles * 2 * ((1 + SERIES_READS_PER_PAGE) + inv)
    raise ValueError(name)


def main():
    run = sys.argv[1]
    lines = []
    for fn in ("console.log",):
        with open(os.path.join(run, fn), errors="replace") as f:
            lines += f.read().splitlines()
    benches = []
    geometry = {}
    for line in lines:
        m = re.search(r"NOVA-BENCH-GEOMETRY (.*)$", line)
        if m:
            kv = dict(x.partition("=")[::2] for x in m.group(1).split())
            geometry[(kv["chip"], kv["bench"])] = {k: int(kv[k], 0)
                                                   for k in ("count", "stride", "batches")}
    for line in lines:
        m = re.search(r"NOVA-BENCH (.*)$", line)
        if not m:
            continue
        b = {}
        for kv in m.group(1).split():
            k, _, v = kv.partition("=")
            b[k] = v
        for k in ("va", "size", "page"):
            b[k] = int(b[k], 16)
        for k in ("ops", "inv_from", "inv_to", "bar0_reads", "bar0_writes", "pramin_reads",
                  "pramin_writes", "window_moves", "invalidates", "zero_hits"):
            b[k] = int(b[k])
        b["mmu"] = int(b["mmu"].lstrip("v"))
        benches.append(b)
    reports = {}
    for fn in os.listdir(run):
        if fn.endswith(".report.json"):
            with open(os.path.join(run, fn)) as f:
                rep = json.load(f)
            reports[rep.get("chip", fn.split(".")[0]).upper()] = rep
    allocs = {}
    for line in lines:
        m = re.search(r"NOVA-ALLOCBENCH (.*)$", line)
        if m:
            kv = dict(x.partition("=")[::2] for x in m.group(1).split())
            allocs.setdefault(kv["bench"], {})[kv["allocator"]] = kv
            print(" ".join(f"{k}={v}" for k, v in kv.items()))
    for name, by in sorted(allocs.items()):
        ours, theirs = by.get("nova-mm"), by.get("gpu_buddy-cleared")
        if ours and theirs:
            t_ours, t_c = int(ours["time_us"]), int(theirs["time_us"])
            print(f"bench={name}_side_by_side nova_mm_us={t_ours} nova_mm_ok={ours['ok']} "
                  f"gpu_buddy_cleared_us={t_c} gpu_buddy_cleared_ok={theirs['ok']} "
                  f"ratio={t_c / max(t_ours, 1):.2f}")
    bad = 0
    if not benches:
        print("bench: no NOVA-BENCH lines (see the console log)", file=sys.stderr)
        return 1
    for b in benches:
        rep = reports.get(b["chip"], {})
        trace = {e[0]: e for e in rep.get("invalidate_trace", [])}
        a, z = trace.get(b["inv_from"]), trace.get(b["inv_to"])
        if a and z:
            model = {"bar0_reads": z[1] - a[1], "bar0_writes": z[2] - a[2],
                     "pramin_reads": z[3] - a[3], "pramin_writes": z[4] - a[4],
                     "window_moves": z[5] - a[5]}
            agree = all(model[k] == b[k] for k in model)
        else:
            model, agree = None, False
        bad += not agree
        delay = int(rep.get("invalidate_delay", 1))
        total = b["bar0_reads"] + b["bar0_writes"]
        g = geometry.get((b["chip"], b["bench"]))
        if b["bench"].startswith("batch_"):
            if g is None:
                print(f"bench: {b['bench']} on {b['chip']}: no NOVA-BENCH-GEOMETRY line",
                      file=sys.stderr)
                bad += 1
                continue
            low = batch_minimum(b, g, delay)
            fields = [
                f"bench={b['bench']}", f"chip={b['chip']}", f"batches={g['batches']}",
                f"ops={b['ops']}",
                f"writes={b['bar0_writes']}", f"reads={b['bar0_reads']}",
                f"entry_writes={b['pramin_writes']}", f"window_moves={b['window_moves']}",
                f"invalidates={b['invalidates']}",
                f"invalidates_per_batch={b['invalidates'] / g['batches']:.2f}",
                f"known_zero_tables={b['zero_hits']}",
                f"total={total}", f"minimum={low}", f"ratio={total / low:.3f}",
                "model=agrees" if agree else f"model=DISAGREES({model})",
            ]
            print(" ".join(fields))
            continue
        low = minimum(b, delay)
        fields = [
            f"bench={b['bench']}", f"chip={b['chip']}",
            f"writes={b['bar0_writes']}", f"reads={b['bar0_reads']}",
            f"entry_writes={b['pramin_writes']}", f"window_moves={b['window_moves']}",
            f"invalidates={b['invalidates']}", f"known_zero_tables={b['zero_hits']}",
            f"total={total}", f"minimum={low}", f"ratio={total / low:.3f}",
            f"series={series(b)}", f"series_ratio={series(b) / low:.2f}",
            "model=agrees" if agree else f"model=DISAGREES({model})",
        ]
        print(" ".join(fields))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
