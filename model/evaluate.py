"""Accuracy of the golden model against the float reference, per stage, in dB of SQNR.

``python -m model.golden --preset 780M --steps 256 --seed 0`` prints the table;
``--json`` prints ``{"sqnr_db": {stage: dB, ...}, ...}``; ``--sweep`` prints layer_out and
mixer_out SQNR over a grid of activation and state widths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .checkpoint import load_block, synthetic_state_dict
from .config import BiMambaConfig, PRESETS, get_preset
from .golden import STAGES, GoldenLayer
from .progress import progress
from .quantize import QuantizedLayer, QuantSpec, calibrate, export_layer
from .reference import BiMambaBlock

__all__ = [
    "sqnr_db",
    "synthetic_residual",
    "golden_trace",
    "dequantize_trace",
    "Evaluation",
    "prepare",
    "evaluate",
    "main",
    "LAYER_OUT_BUDGET_DB",
    "MIXER_OUT_FLOOR_DB",
    "STAGE_FLOORS_DB",
    "LM_STAGE_FLOORS_DB",
    "GOLDEN_BPC_RATIO_MAX",
    "failed_stages",
    "zero_mixer_db",
    "MAX_SEED",
    "MAX_STEPS",
]

# Accuracy budget of the default spec (checked by `make sim` and the tests). layer_out
# carries the residual, so the mixer's own output has a floor of its own: without it a mixer
# that output zeros would pass on the residual alone (see `zero_mixer_db`).
LAYER_OUT_BUDGET_DB = 30.0
MIXER_OUT_FLOOR_DB = 20.0

# A floor per stage (docs/fixed_point.md, "Accuracy gates"). Each stage's SQNR is end to end up
# to that stage; on the synthetic checkpoints of every preset and seed the tests use, each stage
# clears its floor by at least 3 dB, and a stage whose arithmetic is wrong (a misaligned sum, a
# wrong shift) falls far below it. Gating only the output would let a later stage hide an
# earlier one: the residual carries layer_out, and the RMSNorm after the gate is
# scale-invariant, so a doubled y barely moves mixer_out.
STAGE_FLOORS_DB: dict[str, float] = {
    "norm": 25.0, "in_proj": 25.0, "conv": 28.0, "conv_act": 28.0, "dt": 30.0, "dA": 40.0,
    "ssm": 22.0, "y": 25.0, "gate": 22.0, "out_norm": 20.0,
    "mixer_out": MIXER_OUT_FLOOR_DB, "layer_out": LAYER_OUT_BUDGET_DB,
}

# The same floors for a layer of the trained language model (model/lm_eval.py), but for
# layer_out: there the residual entering the first layer is the embedding, small next to the
# mixer's output, so layer_out is no better than mixer_out and takes its floor. The 30 dB
# layer_out budget belongs to the synthetic layer, whose residual is as large as its input.
LM_STAGE_FLOORS_DB: dict[str, float] = {**STAGE_FLOORS_DB, "layer_out": MIXER_OUT_FLOOR_DB}

# The integer golden model of the shipped student may cost at most 1 % more bits per
# character than the float student, on the same bytes.
GOLDEN_BPC_RATIO_MAX = 1.01

# Bounds of the CLI's integer arguments: numpy seeds are 32-bit here, and 65,536 decode steps of
# a 2.7B layer already take hours.
MAX_SEED = 2**32 - 1
MAX_STEPS = 65536


def failed_stages(sq: dict[str, float],
                  floors: dict[str, float] = STAGE_FLOORS_DB) -> list[str]:
    """Stages of ``sq`` (stage -> dB) below their floor in ``floors``."""
    return [k for k, floor in floors.items() if not sq[k] >= floor]


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """``10 log10(sum ref^2 / sum (ref - test)^2)``; +inf when equal."""
    ref = np.asarray(ref, np.float64)
    err = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    sig = float(np.sum(ref**2))
    if err == 0:
        return float("inf")
    return 10 * np.log10(sig / err) if sig > 0 else float("-inf")


def synthetic_residual(cfg: BiMambaConfig, steps: int, seed: int) -> np.ndarray:
    """A residual stream (L, D): Gaussian tokens with log-normal per-channel scales.

    Real residual streams have channels of very different magnitude; the spread exercises the
    RMSNorm and the per-column folded gains.
    """
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0.0, 0.5, cfg.d_model))
    return rng.standard_normal((steps, cfg.d_model)) * scales


def golden_trace(q: QuantizedLayer, u_int: np.ndarray) -> dict[str, np.ndarray]:
    """Run :meth:`GoldenLayer.step` over u_int (L, D) and stack every traced tensor."""
    layer = GoldenLayer(q)
    state = layer.initial_state()
    rec: dict[str, list[np.ndarray]] = {}
    for t in progress(range(u_int.shape[0]), "golden model"):
        tr: dict[str, np.ndarray] = {}
        _, state = layer.step(u_int[t], state, tr)
        for k, v in tr.items():
            rec.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in rec.items()}


def dequantize_trace(q: QuantizedLayer, tr: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integer trace -> real values, keyed like the float reference's trace."""
    f = q.fmt
    c = q.cfg
    out = {
        "norm": tr["norm"] * q.norm_in.act.scale,
        "in_proj": np.concatenate([
            f["z"].dequantize(tr["z"]), f["xbc"].dequantize(tr["xbc"]),
            f["dt_raw"].dequantize(tr["dt_raw"])], axis=-1),
        "conv": f["conv"].dequantize(tr["conv"]),
        "conv_act": f["xbc_act"].dequantize(tr["conv_act"]),
        "dt": f["dt"].dequantize(tr["dt"]),
        "dA": f["dA"].dequantize(tr["dA"]),
        "ssm": f["ssm"].dequantize(tr["ssm"]),
        "y": f["y"].dequantize(tr["y"]),
        "gate": f["gate"].dequantize(tr["gate"]),
        "out_norm": tr["out_norm"] * q.norm_out.act.scale,
        "mixer_out": f["res"].dequantize(tr["mixer_out"]),
        "layer_out": f["res"].dequantize(tr["layer_out"]),
    }
    assert set(out) == set(STAGES) and c is q.cfg
    return out


def _reference_view(ref: dict[str, np.ndarray], u: np.ndarray) -> dict[str, np.ndarray]:
    """Float trace (from :func:`calibrate`) in the same terms as :func:`dequantize_trace`."""
    return {
        "norm": ref["a_in"],
        "in_proj": np.concatenate([ref["z"], ref["xbc"], ref["dt_raw"]], axis=-1),
        "conv": ref["conv"], "conv_act": ref["xbc_act"], "dt": ref["dt"], "dA": ref["dA"],
        "ssm": ref["ssm"], "y": ref["y"], "gate": ref["gate"], "out_norm": ref["a_out"],
        "mixer_out": ref["mixer_out"], "layer_out": u + ref["mixer_out"],
    }


@dataclass
class Evaluation:
    preset: str
    steps: int
    seed: int
    spec: dict
    sqnr_db: dict[str, float]
    seconds: float
    zero_mixer_db: float


@dataclass
class Prepared:
    """A synthetic layer, its float trace on the evaluation input, and calibration statistics."""

    cfg: BiMambaConfig
    block: BiMambaBlock
    u: np.ndarray
    ref: dict[str, np.ndarray]
    calib: dict[str, np.ndarray]


def prepare(cfg: BiMambaConfig, steps: int, seed: int, calib_steps: int = 64) -> Prepared:
    """Synthetic checkpoint (seed), evaluation input (seed) and calibration input (seed + 1)."""
    sd = synthetic_state_dict(cfg, seed, n_layers=1)
    block = load_block(sd, cfg, 0, torch.float64)
    u = synthetic_residual(cfg, steps, seed)
    calib = calibrate(block, synthetic_residual(cfg, calib_steps, seed + 1))
    return Prepared(cfg, block, u, calibrate(block, u), calib)


def zero_mixer_db(p: Prepared) -> float:
    """layer_out SQNR of a model whose mixer outputs 0: the residual's share of layer_out."""
    return sqnr_db(p.u + p.ref["mixer_out"], p.u)


def evaluate(p: Prepared, spec: QuantSpec) -> dict[str, float]:
    """Export ``p.block`` with ``spec`` and return SQNR (dB) per stage over ``p.u``."""
    q = export_layer(p.block, spec, stats=p.calib)
    got = dequantize_trace(q, golden_trace(q, q.fmt["res"].quantize(p.u)))
    want = _reference_view(p.ref, p.u)
    return {k: sqnr_db(want[k], got[k]) for k in STAGES}


def _fmt_db(v: float) -> str:
    return f"{v:7.2f}" if np.isfinite(v) else f"{v:>7}"


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{name} takes integers separated by commas, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m model.golden",
        description="SQNR of the integer golden model against the float reference, per stage.",
    )
    ap.add_argument("--preset", default="780M", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--steps", type=int, default=256,
                    help=f"decode steps, 1 to {MAX_STEPS} (default 256)")
    ap.add_argument("--seed", type=int, default=0,
                    help=f"checkpoint and input seed, 0 to {MAX_SEED} (default 0)")
    ap.add_argument("--act-bits", type=int, default=None,
                    help=f"projection activation bits (default {QuantSpec.act_bits})")
    ap.add_argument("--state-bits", type=int, default=None,
                    help=f"SSM state bits (default {QuantSpec.state_bits})")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--sweep", action="store_true",
                    help="sweep --sweep-act x --sweep-state widths, print layer_out/mixer_out SQNR")
    ap.add_argument("--sweep-act", default="4,6,8,10,12", help="act_bits values for --sweep")
    ap.add_argument("--sweep-state", default="8,10,12,14,16", help="state_bits values for --sweep")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every stage reaches its floor (docs/fixed_point.md): "
                    + ", ".join(f"{k} {v:g}" for k, v in STAGE_FLOORS_DB.items()) + " dB")
    args = ap.parse_args(argv)
    try:
        cfg = get_preset(args.preset)
        if not 1 <= args.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_STEPS}], not {args.steps}")
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], not {args.seed}")
        if args.sweep and args.check:
            raise ValueError("--check gates the default widths and cannot be combined with --sweep")
        if args.sweep and (args.act_bits is not None or args.state_bits is not None):
            raise ValueError("--act-bits/--state-bits conflict with --sweep: give the widths "
                             "with --sweep-act/--sweep-state")
        widths = {k: v for k, v in (("act_bits", args.act_bits), ("state_bits", args.state_bits))
                  if v is not None}
        spec = QuantSpec(**widths)
        acts = _int_list(args.sweep_act, "--sweep-act")
        states = _int_list(args.sweep_state, "--sweep-state")
        for a in acts:
            replace(spec, act_bits=a)
        for st in states:
            replace(spec, state_bits=st)
    except ValueError as e:
        ap.error(str(e))
    print(f"seed={args.seed} preset={args.preset} steps={args.steps}", file=sys.stderr)
    t0 = time.perf_counter()
    p = prepare(cfg, args.steps, args.seed)

    if args.sweep:
        rows = []
        grid = [(a, st) for a in acts for st in states]
        for a, st in progress(grid, "sweep"):
            r = evaluate(p, replace(spec, act_bits=a, state_bits=st))
            rows.append({"act_bits": a, "state_bits": st, "layer_out": r["layer_out"],
                         "mixer_out": r["mixer_out"]})
            if not args.json:
                print(f"act_bits={a:2d} state_bits={st:2d}  layer_out {_fmt_db(r['layer_out'])} dB"
                      f"  mixer_out {_fmt_db(r['mixer_out'])} dB", flush=True)
        if args.json:
            print(json.dumps({"preset": args.preset, "steps": args.steps, "seed": args.seed,
                              "sweep": rows}, indent=2))
        return 0

    sq = evaluate(p, spec)
    zero = zero_mixer_db(p)
    ev = Evaluation(args.preset, args.steps, args.seed, asdict(spec), sq,
                    round(time.perf_counter() - t0, 2), zero)
    failed = failed_stages(sq)
    if args.json:
        doc = asdict(ev)
        doc["floors_db"] = STAGE_FLOORS_DB
        doc["failed_stages"] = failed
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'stage':<10} {'SQNR dB':>8} {'floor':>6}")
        for k, v in sq.items():
            mark = "" if k not in failed else "  BELOW FLOOR"
            print(f"{k:<10} {_fmt_db(v):>8} {STAGE_FLOORS_DB[k]:>6.1f}{mark}")
        print(f"(layer_out with the mixer output replaced by 0: {_fmt_db(zero).strip()} dB)")
        verdict = "PASS" if not failed else f"FAIL ({', '.join(failed)} below floor)"
        print(f"every stage at or above its floor: {verdict} ({ev.seconds} s)")
    return 0 if (not failed or not args.check) else 1


if __name__ == "__main__":
    # `python -m model.evaluate` scores the language model (bits per character);
    # `python -m model.golden` runs the per-layer SQNR CLI above.
    from .lm_eval import main as lm_main

    raise SystemExit(lm_main())
