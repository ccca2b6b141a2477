#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Compare the register tables of the driver and of the GPU model with NVIDIA's headers.

Usage: conformance.py --nouveau DIR [--ogkm DIR] [--quiet] SOURCE...

SOURCE is a Rust file or folder (the driver's drivers/gpu/nova-mm, the model's
tools/gpu-model/src). What is read there:

- the driver: every `register!` definition (`NAME(u32) @ 0xOFFSET { hi:lo field; ... }`) and
  every `bitfield!` struct (`struct Name(u64) { hi:lo field; ... }`);
- the model: every `pub const NV_...: u32 = 0x...;` (an offset or a value) and
  `pub const NV_...: (u32, u32) = (hi, lo);` (a field).

Each definition's doc comment cites NVIDIA's define in backticks (`NV_...`; a register whose
Rust name is NVIDIA's needs none) and the header, e.g. `hopper/gh100/dev_vm.h`. A register
defined relative to a block is written "at `NV_BLOCK_BASE`" (a define whose range or value is
the block's base; a literal `0x...` may follow for a base no header defines). Fields are
NVIDIA's `<define>_<FIELD>`, or the define their doc cites; a struct documented as "numbered
from bit N" holds bits N.. of the entry. A field documented "no NVIDIA define" is only counted.

The headers: NVIDIA's published ones as nouveau carries them in the kernel tree (--nouveau,
include/nvhw/ref, chip/header.h) and, where present, those of open-gpu-kernel-modules
(--ogkm, src/common/inc/swref/published: family/chip/header.h). A cited header found in neither
is skipped with a line saying so; a define missing from a header that is present, a value or
field position that disagrees, or a definition citing no header fails.

Prints a line per failure and per skipped header, then one summary line; exit 1 on a failure.
"""

import argparse
import glob
import os
import re
import sys

DEFINE = re.compile(r"^\s*#\s*define\s+(NV\w+?)(\(\s*\w+\s*\))?\s+(.*?)\s*(/\*.*)?$")
NUM = re.compile(r"^[0-9a-fA-Fx()+\-*/ ]+$")


class Header:
    """The #defines of one header file."""

    def __init__(self, path):
        self.path = path
        self.defs = {}
        self.funcs = {}
        with open(path, errors="replace") as f:
            for line in f:
                m = DEFINE.match(line)
                if not m:
                    continue
                name, arg, val = m.group(1), m.group(2), m.group(3).strip()
                if arg:
                    self.funcs[name] = (arg.strip("() "), val)
                else:
                    self.defs[name] = val


def evaluate(expr, headers, depth=0):
    """The integer value of an expression from a header, aliases and indexed defines resolved."""
    expr = expr.strip()
    if depth > 8:
        raise ValueError(f"too deep: {expr}")
    m = re.fullmatch(r"(NV\w+)\((\d+)\)", expr)
    if m:
        for h in headers:
            if m.group(1) in h.funcs:
                arg, body = h.funcs[m.group(1)]
                return evaluate(re.sub(rf"\b{arg}\b", m.group(2), body), headers, depth + 1)
        raise KeyError(m.group(1))
    m = re.fullmatch(r"NV\w+", expr)
    if m:
        for h in headers:
            if expr in h.defs:
                return evaluate(h.defs[expr], headers, depth + 1)
        raise KeyError(expr)
    if not NUM.match(expr):
        raise ValueError(f"not a number: {expr}")
    return int(eval(expr, {"__builtins__": {}}))  # digits, hex and + - * / ( ) only


def field_of(expr, headers):
    """(hi, lo) of a field define `hi:lo` (each side may be an expression)."""
    hi, sep, lo = expr.partition(":")
    if not sep:
        raise ValueError(f"not a field: {expr}")
    return evaluate(hi, headers), evaluate(lo, headers)


def base_of(expr, headers):
    """The base of a block define: the low end of a range `hi:lo`, or the value."""
    if ":" in expr:
        return field_of(expr, headers)[1]
    return evaluate(expr, headers)


class Sources:
    """Where headers are found."""

    def __init__(self, nouveau, ogkm):
        self.roots = []
        if nouveau and os.path.isdir(nouveau):
            self.roots.append(("nouveau", nouveau))
        if ogkm and os.path.isdir(ogkm):
            self.roots.append(("ogkm", ogkm))
        self.cache = {}

    def find(self, cited):
        """Every present copy of the cited header (`family/chip/x.h` or `chip/x.h`)."""
        parts = cited.strip("/").split("/")
        chip_rel = "/".join(parts[-2:])
        out = []
        for kind, root in self.roots:
            if kind == "nouveau":
                cands = [os.path.join(root, chip_rel)]
            else:
                cands = [os.path.join(root, cited)]
                cands += glob.glob(os.path.join(root, "*", chip_rel))
            for c in cands:
                if os.path.isfile(c) and c not in [h.path for h in out]:
                    if c not in self.cache:
                        self.cache[c] = Header(c)
                    out.append(self.cache[c])
        return out

    def context(self, h):
        """The headers a define of `h` may refer to: `h` first, then its folder's."""
        d = os.path.dirname(h.path)
        for c in sorted(glob.glob(os.path.join(d, "*.h"))):
            if c not in self.cache:
                self.cache[c] = Header(c)
        return [h] + [x for p, x in sorted(self.cache.items())
                      if x is not h and os.path.dirname(p) == d]


class Def:
    """One definition of the driver or the model."""

    def __init__(self, side, where, name, doc):
        self.side, self.where, self.name, self.doc = side, where, name, doc
        self.offset = None  # register offset or constant value
        self.fields = []  # (hi, lo, name, doc)
        self.field = None  # (hi, lo) of a model field constant

    def define(self):
        if self.name.startswith("NV_"):
            return self.name
        m = re.search(r"`(NV_\w+)`", self.doc)
        return m.group(1) if m else None

    def header(self):
        m = re.search(r"`([\w./-]+\.h)`", self.doc)
        return m.group(1) if m else None

    def base(self):
        m = re.search(r"\bat `(NV_\w+)`(?:\s*\(?\s*(0x[0-9a-fA-F_]+))?", self.doc)
        if not m:
            # A block no header defines: "at block base 0x...".
            m = re.search(r"\bat block base (0x[0-9a-fA-F_]+)", self.doc)
            return (None, int(m.group(1).replace("_", ""), 16)) if m else None
        return m.group(1), int(m.group(2).replace("_", ""), 16) if m.group(2) else None

    def shift(self):
        m = re.search(r"numbered from bit (\d+)", self.doc)
        return int(m.group(1)) if m else 0


def docs_before(lines, i):
    """The doc comment lines above line i, joined."""
    doc = []
    j = i - 1
    while j >= 0 and (lines[j].strip().startswith("///") or lines[j].strip().startswith("#[")):
        if lines[j].strip().startswith("///"):
            doc.insert(0, lines[j].strip()[3:].strip())
        j -= 1
    return " ".join(doc)


REG = re.compile(r"^\s*pub(?:\([a-z]+\))?\s+(\w+)\(u(?:8|16|32|64)\)\s*@\s*(0x[0-9a-fA-F_]+)\s*\{")
STRUCT = re.compile(r"^\s*pub(?:\([a-z]+\))?\s+struct\s+(\w+)\(u(?:8|16|32|64)\)\s*\{")
FIELD = re.compile(r"^\s*(\d+):(\d+)\s+(\w+)")
CONST = re.compile(r"^\s*pub(?:\([a-z]+\))?\s+const\s+(\w+)\s*:\s*u(?:32|64)\s*=\s*(0x[0-9a-fA-F_]+|\d+)\s*;")
CONSTF = re.compile(r"^\s*pub(?:\([a-z]+\))?\s+const\s+(NV_\w+)\s*:\s*\(u32,\s*u32\)\s*=\s*\((\d+),\s*(\d+)\)\s*;")


def parse_rust(path, side):
    defs = []
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    in_macro = None
    cur = None
    for i, line in enumerate(lines):
        s = line.strip()
        if re.match(r"^(register|bitfield)!\s*\{", s):
            in_macro = s.split("!")[0]
            continue
        if in_macro:
            m = REG.match(line) if in_macro == "register" else STRUCT.match(line)
            if m:
                cur = Def(side, f"{path}:{i + 1}", m.group(1), docs_before(lines, i))
                if in_macro == "register":
                    cur.offset = int(m.group(2).replace("_", ""), 16)
                defs.append(cur)
                continue
            m = FIELD.match(line)
            if m and cur:
                cur.fields.append((int(m.group(1)), int(m.group(2)), m.group(3),
                                   docs_before(lines, i)))
                continue
            if s == "}" and cur:
                cur = None
                continue
            if s == "}" and not cur:
                in_macro = None
            continue
        m = CONST.match(line)
        if m:
            d = Def(side, f"{path}:{i + 1}", m.group(1), docs_before(lines, i))
            # Another name than NVIDIA's: a register constant only when its doc cites the define
            # and a header (or says it has none).
            if not d.name.startswith("NV_") and not (
                    re.search(r"`NV_\w+`", d.doc)
                    and (d.header() or "no published header" in d.doc)):
                continue
            v = m.group(2).replace("_", "")
            d.offset = int(v, 16) if v.startswith("0x") else int(v)
            defs.append(d)
            continue
        m = CONSTF.match(line)
        if m:
            d = Def(side, f"{path}:{i + 1}", m.group(1), docs_before(lines, i))
            d.field = (int(m.group(2)), int(m.group(3)))
            defs.append(d)
    return defs


def rust_files(src):
    if os.path.isfile(src):
        return [src]
    out = []
    for root, _dirs, files in os.walk(src):
        out += [os.path.join(root, f) for f in files if f.endswith(".rs")]
    return sorted(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nouveau", required=True, help="the kernel tree's nouveau include/nvhw/ref")
    ap.add_argument("--ogkm", default=None, help="open-gpu-kernel-modules' swref/published")
    ap.add_argument("--side", action="append", default=[], help="NAME=SOURCE")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    src = Sources(a.nouveau, a.ogkm)
    print("conformance: headers from " + ", ".join(f"{k} ({r})" for k, r in src.roots))
    if not src.roots:
        print("not ok - conformance: no header folder present")
        return 1
    if not a.ogkm or not os.path.isdir(a.ogkm):
        print(f"conformance: open-gpu-kernel-modules headers not present ({a.ogkm}): "
              "their headers are skipped")
    compared = {}
    failures = []
    skipped = {}
    local = 0
    unpublished = []
    cited = set()
    for spec in a.side:
        side, _, path = spec.partition("=")
        compared.setdefault(side, 0)
        for f in rust_files(path):
            for d in parse_rust(f, side):
                name = d.define()
                hdr = d.header()
                what = f"{side} {d.name} ({d.where})"
                if name is None:
                    # A register! or bitfield! that names no NVIDIA define is a local structure.
                    if d.offset is None and d.field is None and not d.fields:
                        continue
                    failures.append(f"{what}: cites no NVIDIA define")
                    continue
                if hdr is None:
                    if "no published header" in d.doc:
                        # NVIDIA has not published it as a header: the doc cites the manual
                        # or nova-core instead; counted and listed, not compared.
                        unpublished.append(f"{d.name}")
                        continue
                    failures.append(f"{what}: cites no header for {name}")
                    continue
                hs = src.find(hdr)
                if not hs:
                    skipped.setdefault(hdr, []).append(what)
                    continue
                # Copies of one header differ (nouveau carries trimmed ones): compare with every
                # copy that defines the name; fail when none does.
                defining = [h for h in hs if name in h.defs or name in h.funcs
                            or any(name in x.defs for x in src.context(h))]
                if not defining and all("/nvhw/ref/" in h.path for h in hs):
                    # nouveau carries trimmed copies: a define they leave out is not compared.
                    skipped.setdefault(f"{hdr} (nouveau's copy lacks {name})", []).append(what)
                    continue
                hs = defining or hs
                cited.update(h.path for h in hs)
                for h in hs:
                    tag = f"{what} vs {h.path}"
                    ctx = src.context(h)
                    if d.offset is not None:
                        try:
                            want = evaluate(name, ctx)
                        except KeyError:
                            failures.append(f"{tag}: {name} is not defined there")
                            continue
                        except ValueError as e:
                            # A define whose value is a field (hi:lo) is a field constant.
                            failures.append(f"{tag}: {name}: {e}")
                            continue
                        b = d.base()
                        if b:
                            bname, lit = b
                            try:
                                if bname is None:
                                    raise KeyError("no define")
                                want += base_of(h.defs.get(bname) or next(
                                    x.defs[bname] for x in ctx if bname in x.defs), ctx)
                            except (StopIteration, KeyError, ValueError):
                                if lit is None:
                                    failures.append(f"{tag}: base {bname} is not defined")
                                    continue
                                want += lit
                        compared[side] += 1
                        if want != d.offset:
                            failures.append(f"{tag}: {name} is {want:#x}, here {d.offset:#x}")
                    if d.field is not None:
                        if name not in h.defs:
                            failures.append(f"{tag}: {name} is not defined there")
                            continue
                        compared[side] += 1
                        got = field_of(h.defs[name], ctx)
                        if got != d.field:
                            failures.append(f"{tag}: {name} is {got[0]}:{got[1]}, here "
                                            f"{d.field[0]}:{d.field[1]}")
                    sh = d.shift()
                    for hi, lo, fname, fdoc in d.fields:
                        if "no NVIDIA define" in fdoc or "manual only" in fdoc:
                            local += 1
                            continue
                        m = re.search(r"`(NV_\w+)`", fdoc)
                        fdef = m.group(1) if m else f"{name}_{fname.upper()}"
                        if fdef not in h.defs:
                            failures.append(f"{tag}: field {fname}: {fdef} is not defined there")
                            continue
                        compared[side] += 1
                        try:
                            got = field_of(h.defs[fdef], ctx)
                        except (ValueError, KeyError) as e:
                            failures.append(f"{tag}: field {fname}: {fdef}: {e}")
                            continue
                        if got != (hi + sh, lo + sh):
                            failures.append(f"{tag}: field {fname}: {fdef} is {got[0]}:{got[1]}, "
                                            f"here {hi + sh}:{lo + sh}")
    for hdr, whats in sorted(skipped.items()):
        print(f"skipped - header {hdr} found in neither place ({len(whats)} definitions: "
              f"{', '.join(w.split(' (')[0] for w in whats[:4])}{' ...' if len(whats) > 4 else ''})")
    for f in failures:
        print(f"not ok - conformance: {f}")
    if unpublished:
        print(f"conformance: {len(unpublished)} definitions have no published header (cited "
              f"from the manuals or nova-core, not compared): {', '.join(sorted(set(unpublished)))}")
    total = sum(compared.values())
    print(f"conformance: {total} constants compared ("
          + ", ".join(f"{k} {v}" for k, v in compared.items())
          + f") against {len(cited)} headers; {len(skipped)} headers skipped; {local} fields "
          f"with no NVIDIA define; {len(failures)} disagree or are missing")
    return 1 if failures or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
