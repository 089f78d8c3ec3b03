"""Static power of the engine from its netlist: the leakage of every cell and SRAM bit.

:mod:`energy.netlist` (``make leakage``) counts the generic gates, flip-flops and RAMs of the
whole-model engine the estimator prices by default into a record
(``bench/results/leakage/``). The record is priced here, from it alone, with the sourced table
``energy/references/leakage_45nm.json`` (``python -m energy.leakage`` prints it by unit):

* each generic gate as its NanGate 45 nm cell (:data:`GATE_CELLS`), each flip-flop as a DFF_X1
  (DFFR_X1 with an asynchronous reset) and the gates its enable and synchronous reset need
  (:func:`ff_cells`): NanGate has no enable or synchronous-reset flip-flop;
* each RAM of at least :data:`SRAM_MIN_BITS` bits as SRAM at the leakage a bit of an OpenRAM
  FreePDK45 macro: of the macros fast enough for the engine's clock (their minimum period in
  ``energy/references/timing_45nm.json`` at most the record's clock period), the smallest that
  holds it (the largest of them beyond); a smaller RAM as a register file, a DFF_X1 a bit (its
  multiplexers left out). A record whose clock no macro reaches is refused.

What the count leaves out (the clock tree, repeaters, pads, the optimisation and sizing of a
real synthesis) is listed in the table and in ``docs/estimator.md``. The estimator's default
static power (:attr:`energy.estimator.Arch.static_w`) is this record's total.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .sources import REFERENCE_DIR

__all__ = ["LEAKAGE_TABLE", "TIMING_TABLE", "RECORD", "SRAM_MIN_BITS", "GATE_CELLS", "GROUPS",
           "LeakageTable", "load_leakage_table", "ff_cells", "cells_of", "fast_macros", "macros_within",
           "sram_nw_per_bit", "group_of", "price", "static_w", "markdown", "main"]

LEAKAGE_TABLE = REFERENCE_DIR / "leakage_45nm.json"
TIMING_TABLE = REFERENCE_DIR / "timing_45nm.json"  # the macros' minimum clock periods
ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "bench" / "results" / "leakage" / "lm_2p7b_default.json"

# Yosys's generic gates (techmap's and opt's) as NanGate 45 nm cells.
GATE_CELLS: dict[str, tuple[str, ...]] = {
    "$_BUF_": (),
    "$_NOT_": ("INV_X1",),
    "$_AND_": ("AND2_X1",),
    "$_NAND_": ("NAND2_X1",),
    "$_OR_": ("OR2_X1",),
    "$_NOR_": ("NOR2_X1",),
    "$_XOR_": ("XOR2_X1",),
    "$_XNOR_": ("XNOR2_X1",),
    "$_ANDNOT_": ("AND2_X1", "INV_X1"),
    "$_ORNOT_": ("OR2_X1", "INV_X1"),
    "$_MUX_": ("MUX2_X1",),
    "$_NMUX_": ("MUX2_X1", "INV_X1"),
    "$_AOI3_": ("AOI21_X1",),
    "$_OAI3_": ("OAI21_X1",),
}
# The smallest RAM priced as an SRAM macro: the smallest OpenRAM macro of the table
# (256 x 8); below it a RAM is a register file.
SRAM_MIN_BITS = 2048
GROUPS: dict[str, tuple[str, ...]] = {  # module-name prefixes (first match wins)
    "projections": ("bimamba_lm.layer.in_proj", "bimamba_lm.layer.out_proj"),
    "norms": ("bimamba_lm.layer.norm_in", "bimamba_lm.layer.norm_out"),
    "conv and gate": ("bimamba_lm.layer.conv", "bimamba_lm.layer.gate"),
    "scan": ("bimamba_lm.layer.scan",),
    "head": ("bimamba_lm.head", "bimamba_lm.norm_f"),
    "buffers and control": ("bimamba_lm",),
}


@dataclass(frozen=True)
class LeakageTable:
    """Leakage a cell (nW) and the OpenRAM macros as ``(bits, nW, (words, width))``, smallest
    first."""

    cells: dict[str, float]
    macros: tuple[tuple[int, float, tuple[int, int]], ...]
    name: str


def load_leakage_table(path: Path | str = LEAKAGE_TABLE) -> LeakageTable:
    """Read the table; every figure must be a positive number with its quote.

    Raises
    ------
    ValueError
        Naming the entry that is missing, unquoted or not a positive number, or a unit other
        than the one :func:`price` assumes (cells in nW, macros in mW).
    """
    d = json.loads(Path(path).read_text())
    for part, unit in (("cells", "nW"), ("sram", "mW")):
        if d.get(part, {}).get("unit") != unit:
            raise ValueError(f"{path}: {part}.unit must be {unit!r}, not "
                             f"{d.get(part, {}).get('unit')!r}")
    cells = {}
    needed = {c for cs in GATE_CELLS.values() for c in cs} | {"DFF_X1", "DFFR_X1"}
    for name in sorted(needed):
        e = d["cells"]["entries"].get(name)
        if e is None:
            raise ValueError(f"{path}: cells.entries has no {name} (needed: "
                             f"{', '.join(sorted(needed))})")
        v = e.get("value")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                or not e.get("quote"):
            raise ValueError(f"{path}: cells.entries.{name} must have a positive value and a "
                             f"quote, not {e!r}")
        cells[name] = float(v)
    macros = []
    for m in d["sram"]["macros"]:
        bits, v = m.get("words", 0) * m.get("bits", 0), m.get("value")
        if bits < 1 or isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                or not m.get("quote"):
            raise ValueError(f"{path}: every sram macro needs words, bits, a positive value "
                             f"and a quote, not {m!r}")
        macros.append((bits, float(v) * 1e6, (m["words"], m["bits"])))  # mW -> nW
    if not macros:
        raise ValueError(f"{path}: sram.macros is empty")
    return LeakageTable(cells, tuple(sorted(macros)), d.get("name", str(path)))


_FF = re.compile(r"^\$_(DFF|DFFE|SDFF|SDFFE|SDFFCE)_([NP]+)([01]?)([NP]?)_$")


def ff_cells(cell_type: str) -> tuple[str, ...]:
    """NanGate cells of one Yosys fine-grained flip-flop: DFF_X1 (DFFR_X1 if it has an
    asynchronous reset), a MUX2_X1 that holds its value when its enable is low, an AND2_X1 (a
    clear) or OR2_X1 (a set) for a synchronous reset.

    Raises
    ------
    ValueError
        On a type this does not know (a latch, a set-reset or asynchronous-load flip-flop): the
        engine's RTL has none, and a new one must be priced deliberately.
    """
    m = _FF.match(cell_type)
    if m is None:
        raise ValueError(f"no NanGate cells for the Yosys cell {cell_type!r} (known: the gates "
                         f"{', '.join(GATE_CELLS)} and flip-flops $_DFF_*, $_DFFE_*, $_SDFF_*, "
                         f"$_SDFFE_*, $_SDFFCE_*)")
    kind, value = m.group(1), m.group(3)
    if kind == "DFF":  # $_DFF_P_; $_DFF_PP0_: an asynchronous reset
        return ("DFFR_X1",) if value else ("DFF_X1",)
    if kind == "DFFE":  # $_DFFE_PP_; $_DFFE_PP0P_
        return ("DFFR_X1" if value else "DFF_X1", "MUX2_X1")
    # $_SDFF_PP0_, $_SDFFE_PP0P_, $_SDFFCE_PP0P_: a synchronous reset to `value`
    gate = "AND2_X1" if value == "0" else "OR2_X1"
    return ("DFF_X1", gate) if kind == "SDFF" else ("DFF_X1", "MUX2_X1", gate)


def cells_of(cell_type: str) -> tuple[str, ...]:
    return GATE_CELLS[cell_type] if cell_type in GATE_CELLS else ff_cells(cell_type)


def fast_macros(table: LeakageTable, clock_hz: float,
                timing: Path | str | None = None) -> tuple[tuple[int, float, tuple[int, int]], ...]:
    """The macros of ``table`` that run at ``clock_hz``: :func:`macros_within` its period."""
    return macros_within(table, 1e9 / clock_hz, timing)


def macros_within(table: LeakageTable, period_ns: float, timing: Path | str | None = None
                  ) -> tuple[tuple[int, float, tuple[int, int]], ...]:
    """The macros of ``table`` whose minimum clock period in the timing table
    (:data:`TIMING_TABLE`, which :mod:`energy.asic_timing` times the logic with) is at most
    ``period_ns``.

    Raises
    ------
    ValueError
        If none is (naming the fastest macro and its period), or a macro of ``table`` has no
        period in the timing table.
    """
    periods = {}
    for m in json.loads(Path(timing or TIMING_TABLE).read_text())["sram"]["macros"]:
        v = m.get("minimum_period_ns")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{timing or TIMING_TABLE}: sram macro {m.get('words')} x "
                             f"{m.get('bits')} needs a positive minimum_period_ns, not {v!r}")
        periods[(m["words"], m["bits"])] = v
    missing = [f"{w} x {b}" for *_, (w, b) in table.macros if (w, b) not in periods]
    if missing:
        raise ValueError(f"sram macros {', '.join(missing)} have no minimum period in "
                         f"{timing or TIMING_TABLE}")
    fast = tuple(m for m in table.macros if periods[m[2]] <= period_ns)
    if not fast:
        w, b = min(periods, key=periods.get)
        top = math.floor(1e4 / periods[(w, b)]) / 10  # MHz, to the 0.1 below
        raise ValueError(f"no SRAM macro runs at {1e3 / period_ns:g} MHz (a {period_ns:.4f} ns "
                         f"period): the fastest, {w} x {b}, needs {periods[(w, b)]} ns; "
                         f"clock_hz must be at most {top:.1f} MHz")
    return fast


def sram_nw_per_bit(macros: tuple[tuple[int, float, tuple[int, int]], ...], bits: int) -> float:
    """Leakage a bit of the smallest of ``macros`` with at least ``bits`` bits (the largest
    one's for more)."""
    for mbits, nw, _ in macros:
        if mbits >= bits:
            return nw / mbits
    mbits, nw, _ = macros[-1]
    return nw / mbits


def group_of(module: str) -> str:
    for g, prefixes in GROUPS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return g
    raise ValueError(f"module {module!r} is in no group of GROUPS")


def price(record: dict, table: LeakageTable | None = None) -> dict:
    """Leakage in watts of the record's netlist, by group and by part (``logic``,
    ``registers``, ``register_files``, ``sram``), and ``total_w``; its SRAM built of the
    macros that run at the engine's clock (:func:`fast_macros`; ``engine.clock_hz``)."""
    table = table or load_leakage_table()
    clock_hz = record["engine"].get("clock_hz")
    if isinstance(clock_hz, bool) or not isinstance(clock_hz, (int, float)) or not clock_hz > 0:
        raise ValueError(f"the record's engine needs its clock_hz (the clock its SRAM must "
                         f"run at), not {clock_hz!r}")
    macros = fast_macros(table, clock_hz)
    parts = ("logic", "registers", "register_files", "sram")
    by_group = {g: dict.fromkeys(parts, 0.0) for g in GROUPS}
    for mod in record["modules"]:
        n, acc = mod["instances"], by_group[group_of(mod["name"])]
        for ctype, count in mod["cells"].items():
            if ctype == "$mem_v2" or count == 0:
                continue
            cells = cells_of(ctype)
            nw = sum(table.cells[c] for c in cells)
            part = "logic" if ctype in GATE_CELLS else "registers"
            acc[part] += n * count * nw * 1e-9
        for mem in mod["memories"]:
            bits = mem["width"] * mem["size"]
            if bits < SRAM_MIN_BITS:
                acc["register_files"] += n * bits * table.cells["DFF_X1"] * 1e-9
            else:
                acc["sram"] += n * bits * sram_nw_per_bit(macros, bits) * 1e-9
    totals = {p: sum(g[p] for g in by_group.values()) for p in parts}
    return {"by_group": by_group, "by_part": totals, "total_w": sum(totals.values()),
            "table": table.name,
            "sram_macros": [f"{w} x {b}" for *_, (w, b) in macros]}


def static_w(record_path: Path | str = RECORD) -> float:
    """The record's leakage in watts (the estimator's default static power)."""
    return price(json.loads(Path(record_path).read_text()))["total_w"]


def markdown(record: dict, table: LeakageTable | None = None) -> str:
    p = price(record, table)
    e = record["engine"]
    lines = [f"Leakage of the engine the estimator prices by default ({e['preset']} shape: "
             f"{e['pe']} x {e['simd']} array, {e['lanes']} lanes, state {e['state']}), "
             f"45 nm (NanGate cells, OpenRAM FreePDK45 SRAM):", "",
             "| unit | logic mW | registers mW | register files mW | SRAM mW | total mW |",
             "|---|---:|---:|---:|---:|---:|"]
    for g, r in [*p["by_group"].items(), ("total", p["by_part"])]:
        lines.append(f"| {g} | " + " | ".join(f"{r[k] * 1e3:,.1f}" for k in
                                               ("logic", "registers", "register_files",
                                                "sram")) + f" | {sum(r.values()) * 1e3:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser

    ap = CliParser(prog="python -m energy.leakage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=Path, default=RECORD, help=f"default {RECORD}")
    ap.add_argument("--format", choices=("md", "json"), default="md")
    args = ap.parse_args(argv)
    rec = json.loads(args.record.read_text())
    print(json.dumps(price(rec), indent=1) if args.format == "json" else markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
