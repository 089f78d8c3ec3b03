"""Accuracy of the golden model against the float reference, per stage, in dB of SQNR.

The stage floors every gate checks (``make sim``, the tests, ``python -m model.evaluate``),
the golden model's trace and its dequantised view, and a synthetic layer prepared for
evaluation. ``python -m model.evaluate.layer`` (:mod:`model.evaluate.layer`) is the command
line over a synthetic layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.config import BiMambaConfig
from model.golden.layer import STAGES, GoldenLayer
from model.golden.quantize import QuantizedLayer, QuantSpec, calibrate, export_layer
from model.progress import progress
from model.reference.checkpoint import load_block, synthetic_residual, synthetic_state_dict
from model.reference.layer import BiMambaBlock

__all__ = [
    "sqnr_db",
    "golden_trace",
    "dequantize_trace",
    "Evaluation",
    "fmt_db",
    "reference_view",
    "prepare",
    "evaluate",
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

# The same floors for a layer of the trained language model (model/evaluate/lm.py), but for
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


def reference_view(ref: dict[str, np.ndarray], u: np.ndarray) -> dict[str, np.ndarray]:
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
    want = reference_view(p.ref, p.u)
    return {k: sqnr_db(want[k], got[k]) for k in STAGES}


def fmt_db(v: float) -> str:
    return f"{v:7.2f}" if np.isfinite(v) else f"{v:>7}"
