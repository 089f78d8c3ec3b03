"""``make sim``: co-simulate the RTL on real shapes and print one summary table.

``--units layer`` (the default): the whole layer engine (``rtl/layer.py``), sized for
``--bytes-per-cycle`` of weight stream, decodes tokens of each preset's synthetic-checkpoint
layer; the whole-model engine (``rtl/lm.py``: that layer engine running every layer of the
shipped Shakespeare student in turn, with its embedding, final norm and head) decodes
``--model-tokens`` bytes of test text. Every output beat and every logit is compared with the
golden model and every token's cycles with the engine's formula; the rows give the share of
the memory roofline reached, the whole-model row also tokens a second at two clocks. ``--stalls``
adds a tiny layer with random stalls on every stream and a reset in the middle of a token.

``--units projection,scan``: the stand-alone units. Projection unit: for each preset the golden
model runs a few decode steps; the activations it feeds in_proj and out_proj go through the
weight-stationary projection unit, and a small random case with idle cycles and backpressure
runs too. Scan unit: ``--scan-tokens`` decode steps of each preset's layer (dt_raw and the conv
output x, B, C from the golden model's trace), state carried across tokens.

Every option is checked before anything slow starts (the checks are those of the units' own
configuration classes, ``ProjectionConfig`` and ``ScanConfig``); a bad one is a one-line error
with exit status 2. Progress goes to stderr: a bar on a terminal, else one line per finished
step. ``WAVES=1`` dumps an FST waveform per case (real shapes: GBs in all; a warning gives the
expected size first) and prints each file's path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from model.config import BiMambaConfig, get_preset
from rtl.cli import SEED_MAX, CliParser, check_out_dir, int_in
from rtl.lm import LMConfig
from rtl.layer import LayerConfig
from rtl.ssm_scan import ScanConfig, scan_cycles_per_token, scan_latency
from rtl.xnor_projection import ProjectionConfig

from .verilator import BUILD_ROOT, FST_VIEWERS, use_build_root, waves_requested

if TYPE_CHECKING:  # an annotation only: importing it at run time would pull in the model
    from .projection import ProjectionCase

# Only light modules above (no torch): a bad option fails in a fraction of a second. The
# golden model, the exports and the testbench drivers are imported once the options are valid.

__all__ = ["SCAN_TOKENS_MAX", "MODEL_PROJ_TOKENS", "real_shape_cases", "shipped_layer_cases", "main"]

UNITS = ("layer", "projection", "scan")
SCAN_TOKENS_MAX = 1024  # 2.7B: 42 M simulated cycles, a few minutes of Verilator
# The shipped Shakespeare model and its corpus (`make data`), for the real-text cases.
_ROOT = Path(__file__).resolve().parent.parent
_SHIPPED = _ROOT / "checkpoints" / "shakespeare"
_DATA = _ROOT / "build" / "data" / "shakespeare"
MODEL_PROJ_TOKENS = 16  # projection tokens per real-text case (a small layer: 5 k cycles each)
# The random case with stalls: shape, array and tokens (fixed, so the table compares across runs).
RANDOM_CASE = dict(d_in=300, d_out=70, act_bits=8, simd=32, pe=8, tokens=4)
# Order of magnitude of FST written per simulated cycle, for the WAVES=1 warning: the default
# run (780M and 2.7B, 4.74 M cycles in all) wrote 6.2 GB.
FST_BYTES_PER_CYCLE = 1300


def _projection_tokens(cfg: BiMambaConfig) -> int:
    """Two tokens where a token is short enough, to show back-to-back steady state."""
    return 2 if cfg.d_model <= 2048 else 1


def _projection_shapes(cfg: BiMambaConfig) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of in_proj and out_proj."""
    return {"in_proj": (cfg.d_model, cfg.d_in_proj), "out_proj": (cfg.d_inner, cfg.d_model)}


def real_shape_cases(preset: str, tokens: int, simd: int, pe: int, seed: int = 0):
    """in_proj and out_proj cases of ``preset`` with the golden model's own activations."""
    import numpy as np

    from model.evaluate.sqnr import prepare
    from model.golden.layer import GoldenLayer
    from model.golden.quantize import QuantSpec, export_layer

    from .projection import ProjectionCase

    p = prepare(get_preset(preset), tokens, seed)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    layer = GoldenLayer(q)
    state = layer.initial_state()
    a_in, a_out = [], []
    for u in q.fmt["res"].quantize(p.u):
        tr: dict = {}
        _, state = layer.step(u, state, tr)
        a_in.append(tr["norm"])
        a_out.append(tr["out_norm"])
    for name, proj, acts in (("in_proj", q.in_proj, a_in), ("out_proj", q.out_proj, a_out)):
        cfg = ProjectionConfig.from_projection(proj, simd, pe)
        yield ProjectionCase(f"{preset}_{name}", cfg, proj, np.stack(acts), seed=seed)


def _row(unit: str, case: ProjectionCase, res: dict, seconds: float) -> list[str]:
    c = case.config
    conf = f"{c.d_in}x{c.d_out} S{c.simd} P{c.pe} B{c.act_bits}"
    if case.idle or case.backpressure:
        conf += f" idle {case.idle:.0%} bp {case.backpressure:.0%}"
    steady = all(sp == c.cycles_per_token for sp in res["token_spacing"])
    ok = res["mismatches"] == 0 and (case.idle or case.backpressure or (
        res["cycles_measured"] == res["cycles_predicted"] and steady))
    rate = res["cycles_per_s"]
    return [unit, case.name, conf, f"{res['tokens']} x {c.d_out}", str(res["cycles_measured"]),
            str(res["cycles_predicted"]), f"{rate / 1e3:.0f}" if rate else "-",
            f"{seconds:.0f}", "PASS" if ok else f"FAIL ({res['mismatches']} mismatches)"]


def _scan_row(case, res: dict, seconds: float) -> list[str]:
    c = case.config
    qc = c.q.cfg
    conf = f"H{qc.nheads} P{qc.headdim} N{qc.d_state} lanes {c.lanes}"
    steady = all(sp == c.cycles_per_token for sp in res["token_spacing"])
    ok = res["mismatches"] == 0 and res["cycles_measured"] == res["cycles_predicted"] and steady
    rate = res["cycles_per_s"]
    return ["ssm_scan", case.name, conf, f"{res['tokens']} x {qc.d_inner}",
            str(res["cycles_measured"]), str(res["cycles_predicted"]),
            f"{rate / 1e3:.0f}" if rate else "-", f"{seconds:.0f}",
            "PASS" if ok else f"FAIL ({res['mismatches']} mismatches)"]


# -- options ---------------------------------------------------------------------------------


def _parser() -> CliParser:
    ap = CliParser(prog="python -m cosim.run", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="layer",
                    help="comma-separated: layer (the layer engine), projection (the "
                         "weight-stationary projection unit), scan (default: layer)")
    ap.add_argument("--bytes-per-cycle", type=int_in(1, 1 << 16), default=None,
                    help="layer engine: weight-stream bytes a cycle it is sized for, 1 to "
                         "65536 (default: 64)")
    ap.add_argument("--layer-tokens", type=int_in(1, 64), default=None,
                    help="layer engine: decode tokens per preset, 1 to 64 (default: 2 up to "
                         "d_model 2048, else 1)")
    ap.add_argument("--model-tokens", type=int_in(1, 1024), default=None,
                    help="whole-model engine: bytes of test text decoded by the shipped "
                         "student, 1 to 1024 (default: 16; with --model-layers '' none)")
    ap.add_argument("--stalls", action="store_true",
                    help="layer engine: also a tiny layer with random stalls on every stream "
                         "and a reset mid-token (make test runs these too)")
    ap.add_argument("--presets", default="780M,2.7B",
                    help="comma-separated presets, each one of 780M, 1.3B, 2.7B, tiny, small "
                         "(default: 780M,2.7B)")
    ap.add_argument("--simd", type=int, default=None,
                    help="projection array columns, 1 to 4096 and at most each d_in "
                         "(default: 64)")
    ap.add_argument("--pe", type=int, default=None,
                    help="projection array rows, 1 to 1024 and at most each d_out (default: 16)")
    ap.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                    help=f"checkpoint, input and stall seed, 0 to {SEED_MAX} (default: 0)")
    ap.add_argument("--lanes", type=int, default=None,
                    help="scan unit lanes, a divisor of each preset's d_state (default: 16)")
    ap.add_argument("--scan-tokens", type=int_in(1, SCAN_TOKENS_MAX), default=None,
                    help=f"scan tokens per preset, 1 to {SCAN_TOKENS_MAX} (default: 64)")
    ap.add_argument("--model-layers", default="0,5",
                    help="layers of the shipped Shakespeare student (checkpoints/shakespeare) "
                         "whose in_proj, out_proj and scan run on real text; '' for none "
                         "(default: 0,5, the first and the last; needs `make data`)")
    ap.add_argument("--jobs", type=int_in(1, 64), default=None,
                    help="cases run at once, each building and simulating in a process of its "
                         "own, 1 to 64 (default: the number of cores; Verilator translates a "
                         "design on one core)")
    ap.add_argument("-o", "--out", type=Path, default=BUILD_ROOT,
                    help="folder for the cases and waveforms (default: build/cosim in "
                         "the project; compiled models are kept in $BIMAMBA_MODEL_CACHE, "
                         "default ~/.cache/bimamba-hw/models)")
    return ap


@dataclass(frozen=True)
class _Plan:
    """The validated options and what they imply before anything is exported."""

    units: list[str]
    presets: list[str]
    model_layers: list[int]
    out: Path
    waves: bool
    cases: int
    cycles: int  # predicted simulated cycles of all cases (stalls of the random case aside)


# Options that only one unit reads: the unit, and the default it gets when not given.
UNIT_FLAGS = {"--bytes-per-cycle": ("layer", 64), "--layer-tokens": ("layer", None),
              "--model-tokens": ("layer", 16), "--stalls": ("layer", False),
              "--simd": ("projection", 64), "--pe": ("projection", 16),
              "--lanes": ("scan", 16), "--scan-tokens": ("scan", 64)}


def _validate(ap: CliParser, args: argparse.Namespace) -> _Plan:
    """Every check that can fail on an option, in a fraction of a second: units and presets
    known, the layer engine's array (``LayerConfig.array_for``), the projection array and scan
    lanes (``ProjectionConfig``, ``ScanConfig``) accepted for every preset's shapes, WAVES
    readable, the output folder writable."""
    units = [u.strip() for u in args.units.split(",")]
    for u in units:
        if u not in UNITS:
            ap.error(f"argument --units: each one of {', '.join(UNITS)}, not {u!r}")
        if units.count(u) > 1:
            ap.error(f"argument --units: {u} is listed {units.count(u)} times")
    # A flag of a unit the run does not include would be ignored: refused instead. Then the
    # defaults of those given no value.
    given = set()
    for flag, (unit, default) in UNIT_FLAGS.items():
        attr = flag[2:].replace("-", "_")
        if getattr(args, attr) is not None and getattr(args, attr) is not False:
            given.add(flag)
            if unit not in units:
                ap.error(f"argument {flag}: applies to --units {unit} only, not to "
                         f"--units {','.join(units)}")
        else:
            setattr(args, attr, default)
    if "--model-tokens" in given and not args.model_layers.strip():
        ap.error("argument --model-tokens: needs the whole model, which --model-layers '' "
                 "leaves out")
    presets = [p.strip() for p in args.presets.split(",")]
    for name in presets:
        try:
            get_preset(name)
        except ValueError as e:
            ap.error(f"argument --presets: {e}")
        if presets.count(name) > 1:
            ap.error(f"argument --presets: {name} is listed {presets.count(name)} times")
    cases, cycles = 0, 0
    if "layer" in units:
        for name in presets:
            try:
                LayerConfig.array_for(get_preset(name), args.bytes_per_cycle)
            except ValueError as e:
                ap.error(f"argument --bytes-per-cycle: for the {name} layer, {e}")
        cases += len(presets) + args.stalls
    if "projection" in units:
        r = RANDOM_CASE
        rand = ProjectionConfig(d_in=r["d_in"], d_out=r["d_out"], simd=r["simd"], pe=r["pe"],
                                act_bits=r["act_bits"])
        cases, cycles = cases + 1, cycles + r["tokens"] * rand.cycles_per_token + rand.latency
    for name in presets:
        cfg = get_preset(name)
        if "projection" in units:
            for proj, (d_in, d_out) in _projection_shapes(cfg).items():
                try:
                    # Shape and array only: the export's number formats cannot make it fail.
                    pc = ProjectionConfig(d_in=d_in, d_out=d_out, simd=args.simd, pe=args.pe)
                except ValueError as e:
                    flag = "--pe" if str(e).startswith("pe ") else "--simd"
                    ap.error(f"argument {flag}: for the {name} {proj} ({d_in}x{d_out}), {e}")
                cases += 1
                cycles += _projection_tokens(cfg) * pc.cycles_per_token + pc.latency
        if "scan" in units:
            try:
                ScanConfig.check_shape(cfg, args.lanes)
            except ValueError as e:
                ap.error(f"argument --lanes: for the {name} scan, {e}")
            cases += 1
            cycles += args.scan_tokens * scan_cycles_per_token(
                cfg.nheads, cfg.headdim, cfg.d_state, args.lanes) + scan_latency(args.lanes)
    layers: list[int] = []
    if args.model_layers.strip():
        lm_cfg = _shipped_config()
        try:
            layers = [int(v) for v in args.model_layers.split(",")]
        except ValueError:
            ap.error(f"argument --model-layers: takes layer numbers separated by commas, "
                     f"not {args.model_layers!r}")
        bad = [i for i in layers if not 0 <= i < lm_cfg.n_layer]
        if bad or len(set(layers)) != len(layers):
            ap.error(f"argument --model-layers: each layer once, in [0, {lm_cfg.n_layer}), "
                     f"not {args.model_layers!r}")
        if "layer" in units:
            try:
                LayerConfig.array_for(lm_cfg, args.bytes_per_cycle)
            except ValueError as e:
                ap.error(f"argument --bytes-per-cycle: for the Shakespeare model, {e}")
            cases += len(layers)
        if "projection" in units:
            for proj, (d_in, d_out) in _projection_shapes(lm_cfg).items():
                try:
                    pc = ProjectionConfig(d_in=d_in, d_out=d_out, simd=args.simd, pe=args.pe)
                except ValueError as e:
                    flag = "--pe" if str(e).startswith("pe ") else "--simd"
                    ap.error(f"argument {flag}: for the Shakespeare model's {proj} "
                             f"({d_in}x{d_out}), {e}")
                cases += len(layers)
                cycles += len(layers) * (MODEL_PROJ_TOKENS * pc.cycles_per_token + pc.latency)
        if "scan" in units:
            try:
                ScanConfig.check_shape(lm_cfg, args.lanes)
            except ValueError as e:
                ap.error(f"argument --lanes: for the Shakespeare model's scan, {e}")
            cases += len(layers)
            cycles += len(layers) * (args.scan_tokens * scan_cycles_per_token(
                lm_cfg.nheads, lm_cfg.headdim, lm_cfg.d_state, args.lanes) + scan_latency(args.lanes))
    if "layer" in units:
        # Order of magnitude for the WAVES warning: a token costs about its weight bits over
        # the beat, the scan and the gaps aside.
        bits = 8 * args.bytes_per_cycle
        for name in presets:
            cfg = get_preset(name)
            w = cfg.d_model * cfg.d_in_proj + cfg.d_inner * cfg.d_model
            cycles += (args.layer_tokens or _projection_tokens(cfg)) * w // bits
        if layers:
            w = lm_cfg.d_model * lm_cfg.d_in_proj + lm_cfg.d_inner * lm_cfg.d_model
            cycles += lm_cfg.n_layer * args.model_tokens * w // bits
    try:
        waves = waves_requested(None)
    except ValueError as e:
        ap.error(f"environment variable {e}")
    out = check_out_dir(ap, "-o/--out", args.out)
    missing = [f for f in ("train.bin", "test.bin") if not (_DATA / f).is_file()]
    if layers and missing:  # last: every other option is reported without the corpus
        ap.error(f"argument --model-layers: the real-text cases need the corpus "
                 f"({_DATA / missing[0]} is missing): run `make data`, or pass "
                 f"--model-layers ''")
    return _Plan(units, presets, layers, out.resolve(), waves, cases, cycles)


def _shipped_config() -> BiMambaConfig:
    """The shipped student's shape, from its safetensors header (no torch import: validation
    stays fast). The header is an 8-byte little-endian length and a JSON object."""
    import json

    with open(_SHIPPED / "student.safetensors", "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    return BiMambaConfig(**json.loads(meta["config"]))


def shipped_layer_cases(layers: list[int], proj_tokens: int, scan_tokens: int, simd: int,
                        pe: int, lanes: int, seed: int = 0):
    """in_proj, out_proj and scan cases of layers of the shipped student on real text.

    The integer model is calibrated on training text (``model.evaluate.lm.shipped_golden``); the
    test split's first bytes go through the golden model layer by layer, and each chosen
    layer's own activations (its block norm and out_norm outputs, its dt_raw and conv outputs)
    feed the units.
    """
    import numpy as np

    from model.data.corpus import load_split
    from model.evaluate.sqnr import golden_trace
    from model.evaluate.lm import shipped_golden

    from .projection import ProjectionCase
    from .scan import ScanCase

    _, q = shipped_golden(_SHIPPED, data_root=_DATA.parent)
    text = load_split("test", _DATA.parent)[: max(proj_tokens, scan_tokens)].astype(np.int64)
    h = q.embedding[text]
    for i, lq in enumerate(q.layers[: max(layers) + 1]):
        tr = golden_trace(lq, h)
        h = tr["layer_out"]
        if i not in layers:
            continue
        c = lq.cfg
        for name, proj, key in (("in_proj", lq.in_proj, "norm"), ("out_proj", lq.out_proj,
                                                                   "out_norm")):
            cfg = ProjectionConfig.from_projection(proj, simd, pe)
            yield ProjectionCase(f"shakespeare_L{i}_{name}", cfg, proj,
                                 tr[key][:proj_tokens], seed=seed)
        E, N = c.d_inner, c.d_state
        xa = tr["xbc_act"][:scan_tokens]
        start = np.zeros(scan_tokens, bool)
        start[0] = True
        yield ScanCase(f"shakespeare_L{i}_scan", ScanConfig(lq, lanes),
                       tr["dt_raw"][:scan_tokens],
                       xa[:, :E].reshape(scan_tokens, c.nheads, c.headdim), xa[:, E: E + N],
                       xa[:, E + N:], start, seed=seed)


# -- progress and waveforms ------------------------------------------------------------------


def _size(n: float) -> str:
    """Bytes in decimal units: ``812 B``, ``3.4 MB``, ``6.2 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"


def _warn_waves(plan: _Plan) -> None:
    """Before the run: what WAVES=1 will write, and where."""
    expect = plan.cycles * FST_BYTES_PER_CYCLE
    plan.out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(plan.out).free
    print(f"warning: WAVES=1 dumps an FST waveform of every case under {plan.out}: "
          f"{plan.cases} cases, {plan.cycles:,} simulated cycles, expect about "
          f"{_size(expect)} (order of magnitude, ~{FST_BYTES_PER_CYCLE} B per cycle; real "
          f"shapes write GBs); {_size(free)} free there", file=sys.stderr, flush=True)
    if expect > free:
        print(f"warning: that is more than the {_size(free)} free; unset WAVES or free space",
              file=sys.stderr, flush=True)


class _Progress:
    """Progress on stderr: a tqdm bar on a terminal (with each finished step written above it),
    else one line per finished step, so that a CI log shows the run advancing."""

    def __init__(self, total: int, desc: str, unit: str, label: str) -> None:
        from tqdm import tqdm

        self.total, self.done, self.label = total, 0, label
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False,
                        file=sys.stderr, dynamic_ncols=True)

    def phase(self, text: str) -> None:
        if not self.bar.disable:
            self.bar.set_postfix_str(text)

    def finished(self, line: str) -> None:
        self.done += 1
        line = f"[{self.label} {self.done}/{self.total}] {line}"
        if self.bar.disable:
            print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)
        self.bar.update(1)

    def note(self, line: str) -> None:
        if self.bar.disable:
            print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


# -- the run ---------------------------------------------------------------------------------


@dataclass
class _Job:
    unit: str
    case: object
    run: Callable[..., dict]
    row: Callable[[object, dict, float], list[str]]


def _prepare(plan: _Plan, args: argparse.Namespace) -> list[_Job]:
    """Every case, with its full unit configuration, before the first Verilator build."""
    import numpy as np

    from .layer import run_layer_case
    from .projection import ProjectionCase, random_projection, random_tokens, run_case
    from .scan import real_shape_case as scan_case, run_scan_case

    proj_row = lambda case, res, s: _row("xnor_projection", case, res, s)  # noqa: E731
    layers, projections, scans, models = [], [], [], []
    steps = len(plan.presets) + ("projection" in plan.units) + bool(plan.model_layers) + (
        "layer" in plan.units and args.stalls)
    with _Progress(steps, "preparing", "preset", "prep") as progress:
        for preset in plan.presets:
            t0 = time.perf_counter()
            progress.phase(f"{preset}: golden model and exports")
            cfg = get_preset(preset)
            what = []
            if "layer" in plan.units:
                layers.append(_Job("layer", preset_layer_case(
                    preset, args.layer_tokens or _projection_tokens(cfg),
                    args.bytes_per_cycle, args.seed), run_layer_case, _layer_row))
                what.append("layer")
            if "projection" in plan.units:
                projections += [_Job("xnor_projection", c, run_case, proj_row) for c in
                                real_shape_cases(preset, _projection_tokens(cfg), args.simd,
                                                 args.pe, args.seed)]
                what.append("in_proj, out_proj")
            if "scan" in plan.units:
                scans.append(_Job("ssm_scan", scan_case(preset, args.scan_tokens, args.lanes,
                                                        args.seed), run_scan_case, _scan_row))
                what.append("scan")
            progress.finished(f"{preset}: {' and '.join(what)} cases from the golden "
                              f"model ({time.perf_counter() - t0:.0f} s)")
        if "layer" in plan.units and args.stalls:
            layers.append(_Job("layer", stalls_layer_case(args.seed), run_layer_case,
                               _layer_row))
            progress.finished("tiny_stalls_reset: stalls on every stream, a reset mid-token")
        if "projection" in plan.units:
            r = RANDOM_CASE
            rng = np.random.default_rng(args.seed)
            p = random_projection(r["d_in"], r["d_out"], r["act_bits"], rng)
            case = ProjectionCase("random_stalls", ProjectionConfig.from_projection(
                p, r["simd"], r["pe"]), p, random_tokens(p, r["tokens"], rng), idle=0.3,
                backpressure=0.3, seed=args.seed)
            projections.append(_Job("xnor_projection", case, run_case, proj_row))
            progress.finished("random_stalls: random projection and tokens")
        if plan.model_layers:
            t0 = time.perf_counter()
            progress.phase("shakespeare: calibration, golden model on test text")
            if "layer" in plan.units:
                from .lm import run_lm_case

                models.append(_Job("model", shipped_lm_case(
                    args.model_tokens, args.bytes_per_cycle, args.seed), run_lm_case, _lm_row))
            if "projection" in plan.units or "scan" in plan.units:
                for c in shipped_layer_cases(plan.model_layers, MODEL_PROJ_TOKENS,
                                             args.scan_tokens, args.simd, args.pe, args.lanes,
                                             args.seed):
                    if c.name.endswith("_scan"):
                        if "scan" in plan.units:
                            scans.append(_Job("ssm_scan", c, run_scan_case, _scan_row))
                    elif "projection" in plan.units:
                        projections.append(_Job("xnor_projection", c, run_case, proj_row))
            progress.finished(f"shakespeare: layers {plan.model_layers} of the shipped student "
                              f"on test text ({time.perf_counter() - t0:.0f} s)")
    return models + layers + projections + scans


def preset_layer_case(preset: str, tokens: int, bytes_per_cycle: int, seed: int = 0):
    """``tokens`` decode steps of a synthetic-checkpoint ``preset`` layer through the engine
    sized for ``bytes_per_cycle``, on the residual stream the golden model is evaluated on."""
    from model.evaluate.sqnr import prepare
    from model.golden.quantize import QuantSpec, export_layer

    from .layer import LayerCase

    p = prepare(get_preset(preset), tokens, seed)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    return LayerCase(f"{preset}_layer", [LayerConfig.sized_for(q, bytes_per_cycle)],
                     q.fmt["res"].quantize(p.u), seed=seed)


# The layer case with stalls: the tiny preset, 8 tokens, a new sequence at token 5, pauses of
# probability 0.3 on u, o and the weight stream, a reset in the middle of token 1's in_proj.
STALLS_CASE = dict(simd=16, pe=4, lanes=4, tokens=8, restart=5, pause=0.3)


def stalls_layer_case(seed: int = 0):
    """The tiny layer of :data:`STALLS_CASE` (a synthetic checkpoint of ``seed``)."""
    import numpy as np
    import torch

    from model.reference.checkpoint import load_block, synthetic_state_dict
    from model.reference.checkpoint import synthetic_residual
    from model.golden.quantize import QuantSpec, export_layer

    from .layer import LayerCase, random_residual

    cfg = get_preset("tiny")
    block = load_block(synthetic_state_dict(cfg, seed, n_layers=1), cfg, 0, torch.float64)
    q = export_layer(block, QuantSpec(), synthetic_residual(cfg, 32, seed + 1))
    s = STALLS_CASE
    lc = LayerConfig(q, s["simd"], s["pe"], s["lanes"])
    starts = np.zeros(s["tokens"], bool)
    starts[s["restart"]] = True
    at = lc.schedule(first=True).last_out + lc.schedule().ends["in_proj"] // 2
    return LayerCase("tiny_stalls_reset", [lc], random_residual(q, s["tokens"],
                                                                 np.random.default_rng(seed)),
                     starts, idle=s["pause"], backpressure=s["pause"], bubble=s["pause"],
                     reset_at=at, seed=seed)


def shipped_lm_case(tokens: int, bytes_per_cycle: int, seed: int = 0):
    """The first ``tokens`` bytes of the test split, decoded back to back by the shipped
    student on the whole-model engine sized for ``bytes_per_cycle``."""
    import numpy as np

    from model.data.corpus import load_split
    from model.evaluate.lm import shipped_golden

    from .lm import LMCase

    _, q = shipped_golden(_SHIPPED, data_root=_DATA.parent)
    text = load_split("test", _DATA.parent)[:tokens].astype(np.int64)
    return LMCase("shakespeare_lm", LMConfig.sized_for(q, bytes_per_cycle), text, seed=seed)


# The clock the whole-model row states tokens a second at: the ECP5 target of the units
# (docs/fpga.md). The 45 nm clock is the estimator's (energy/estimator.py CLOCK_HZ), which
# this layer may not import; energy/report.py prices the engine at it.
ROW_CLOCKS_HZ = (125e6,)


def _lm_row(case, res: dict, seconds: float) -> list[str]:
    lmc = case.config
    T = len(case.tokens)
    sched = lmc.schedule(case.period, case.latency)
    measured = res["last_logit"][-1] - res["token_cycles"][0] + 1
    pred = res["predicted_first"] + res["predicted_spacing"] * (T - 1)
    per_token = res["predicted_spacing"]
    rates = ", ".join(f"{hz / per_token:,.0f} tokens/s at {hz / 1e6:,.0f} MHz"
                      for hz in ROW_CLOCKS_HZ)
    conf = (f"{lmc.beat_bits // 8} B/cycle: S{lmc.simd} P{lmc.pe} lanes {lmc.lanes}, "
            f"{lmc.n_layer} layers + head, {per_token:,} cycles a token, "
            f"{sched.memory_cycles / per_token:.1%} of roofline; {rates}")
    ok = (measured == pred and res["mismatches"] == 0 and res["row_mismatches"] == 0
          and res["cycles"][0] == res["predicted_first"]
          and all(sp == per_token for sp in res["spacing"]))
    rate = measured / res["wall_s"] if res["wall_s"] > 0 else None
    return ["model", case.name, conf, f"{T} bytes x {lmc.cfg.vocab_size} logits",
            str(measured), str(pred), f"{rate / 1e3:.0f}" if rate else "-", f"{seconds:.0f}",
            "PASS" if ok else f"FAIL ({res['mismatches']} mismatches)"]


def _layer_row(case, res: dict, seconds: float) -> list[str]:
    lc = case.configs[0]
    c = lc.q.cfg
    conf = (f"{lc.beat_bytes:g} B/cycle: S{lc.simd} P{lc.pe} planes "
            f"{lc.planes or lc.q.spec.act_bits} lanes {lc.lanes}")
    measured = res["last_out"][-1] + 1
    if case.stalls:
        conf += f", stalls {case.idle:.0%}" + (", reset" if case.reset_at is not None else "")
        predicted, ok = "-", True
    else:
        conf += f", {lc.roofline_fraction():.1%} of roofline"
        pred = res["predicted_first"] + res["predicted_spacing"] * (case.u.shape[0] - 1) + 1
        predicted = str(pred)
        ok = measured == pred and all(sp == res["predicted_spacing"] for sp in res["spacing"])
    rate = measured / res["wall_s"] if res["wall_s"] > 0 else None
    ok = ok and res["mismatches"]["o"] == 0
    return ["layer", case.name, conf, f"{case.u.shape[0]} x {c.d_model}", str(measured),
            predicted, f"{rate / 1e3:.0f}" if rate else "-", f"{seconds:.0f}",
            "PASS" if ok else f"FAIL ({res['mismatches']['o']} mismatches)"]


def _run_case(run: Callable[..., dict], case: object, root: Path) -> tuple[dict, float]:
    """One case in a worker process: its build and simulation under ``root``, and the seconds
    they took."""
    t0 = time.perf_counter()
    with use_build_root(root):
        return run(case), time.perf_counter() - t0


def _run(jobs: list[_Job], waves: bool, workers: int,
         root: Path) -> tuple[list[list[str]], list[Path]]:
    """Run ``jobs`` (``workers`` at a time, each in a process of its own when more than one),
    rows in the order of ``jobs``."""
    rows: list[list[str] | None] = [None] * len(jobs)
    dumps = []
    with _Progress(len(jobs), "co-simulation", "case", "case") as progress:
        def done(i: int, res: dict, seconds: float) -> None:
            job = jobs[i]
            rows[i] = job.row(job.case, res, seconds)
            progress.finished("  ".join(rows[i]))
            if waves and res.get("fst"):
                fst = Path(res["fst"])
                dumps.append(fst)
                progress.note(f"  waves: {fst} ({_size(fst.stat().st_size)}); open with "
                              f"{FST_VIEWERS}")

        if workers == 1:
            for i, job in enumerate(jobs):
                name = job.case.name
                t0 = time.perf_counter()
                res = job.run(job.case,
                              on_phase=lambda phase: progress.phase(f"{name}: {phase}"))
                done(i, res, time.perf_counter() - t0)
        else:
            progress.phase(f"{workers} cases at a time: "
                           + ", ".join(job.case.name for job in jobs[:workers]))
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_run_case, job.run, job.case, root): i
                           for i, job in enumerate(jobs)}
                for f in as_completed(futures):
                    done(futures[f], *f.result())
    return rows, dumps


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    plan = _validate(ap, args)
    print(f"seed={args.seed}", flush=True)
    if plan.waves:
        _warn_waves(plan)
    t_all = time.perf_counter()
    with use_build_root(plan.out):
        jobs = _prepare(plan, args)
        workers = min(args.jobs or os.cpu_count() or 1, len(jobs))
        rows, dumps = _run(jobs, plan.waves, workers, plan.out)

    # The whole model's row last: the table ends with the machine the estimator prices.
    rows = [r for r in rows if r[0] != "model"] + [r for r in rows if r[0] == "model"]
    head = ["unit", "case", "configuration", "vectors", "cycles measured", "cycles predicted",
            "k cycles/s", "s", "result"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: " | ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
    print()
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if dumps:
        total = sum(f.stat().st_size for f in dumps)
        print(f"\nwaveforms ({len(dumps)} FST files, {_size(total)}; open with {FST_VIEWERS}):")
        for f in dumps:
            print(f"  {f}")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    return 0 if all(r[-1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
