"""Co-simulation of the XNOR-popcount projection unit against the golden model.

:func:`run_case` emits the unit's Verilog for the case's configuration, builds it with Verilator
through ``cocotb_tools.runner`` (one compiled model per emitted Verilog, reused across cases),
writes the case (memory images, tokens, golden outputs) for the cocotb testbench
``sim.xnor_projection_tb`` and returns the figures the testbench measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.golden.layer import project
from model.golden.quantize import ActQuant, BinaryProjection, pack_signs
from .verilator import BUILD_ROOT, Phase, build, run_test, unit_dir, waves_requested
from rtl.xnor_projection import ProjectionConfig, XnorProjection, memory_images

__all__ = ["ProjectionCase", "random_projection", "run_case", "BUILD_ROOT"]


def random_projection(
    d_in: int, d_out: int, act_bits: int, rng: np.random.Generator, *,
    sign: np.ndarray | None = None, beta_frac: int = 12, mult_frac: int | None = None,
    out_bits: int = 16, beta_bits: int = 16, mult_bits: int = 16,
) -> BinaryProjection:
    """A projection with random signs, betas and multipliers (or the given sign matrix).

    With ``mult_frac=None`` the output shift is chosen so that a random token's outputs are
    typically about ``2**(out_bits - 3)``: every bit of the arithmetic shows, and only the
    tails saturate.
    """
    s = np.where(rng.random((d_out, d_in)) < 0.5, -1, 1) if sign is None else sign
    signs = pack_signs(s)
    hb = 1 << (beta_bits - 1)
    if mult_frac is None:
        a_rms = 1.0 if act_bits == 1 else 2 ** (act_bits - 1) / np.sqrt(3)
        t_rms = np.sqrt(d_in) * a_rms * np.hypot(2.0**beta_frac, hb / np.sqrt(3))
        mult_rms = (1 << mult_bits) / np.sqrt(3)
        mult_frac = max(0, int(round(np.log2(t_rms * mult_rms / 2 ** (out_bits - 3))))
                        - beta_frac)
    return BinaryProjection(
        d_in=d_in, d_out=d_out, act=ActQuant(act_bits, 1.0), signs=signs,
        popcount_w=np.bitwise_count(signs).sum(axis=1, dtype=np.int64),
        beta=rng.integers(-hb, hb, d_in), beta_frac=beta_frac,
        mult=rng.integers(1, 1 << mult_bits, d_out), mult_frac=mult_frac, out_bits=out_bits,
        beta_bits=beta_bits, mult_bits=mult_bits,
    )


def random_tokens(p: BinaryProjection, n: int, rng: np.random.Generator) -> np.ndarray:
    """Activation codes over the whole range of ``p.act``, with the extremes mixed in."""
    if p.act.bits == 1:
        return np.where(rng.random((n, p.d_in)) < 0.5, -1, 1)
    lo, hi = -(1 << (p.act.bits - 1)), (1 << (p.act.bits - 1)) - 1
    t = rng.integers(lo, hi + 1, (n, p.d_in))
    corners = rng.random((n, p.d_in))
    t[corners < 0.05] = lo
    t[corners > 0.95] = hi
    return t


@dataclass
class ProjectionCase:
    """One co-simulation run.

    Members
    -------
    name : str
    config : ProjectionConfig
    proj : BinaryProjection
        The integer projection; the golden model's :func:`~model.golden.layer.project` gives the
        expected outputs.
    tokens : np.ndarray, int64, shape (T, d_in)
        Activation codes, sent back to back.
    idle, backpressure : float
        Probability of an idle cycle on ``act`` and of ``ready`` low on ``out``.
    reset_mid_token : str
        "" (no reset), "load" (reset with a token half loaded) or "compute" (reset while a
        token is computed and its outputs are held back), then the tokens.
    seed : int
        Seeds the pause generators (printed by the testbench).
    """

    name: str
    config: ProjectionConfig
    proj: BinaryProjection
    tokens: np.ndarray
    idle: float = 0.0
    backpressure: float = 0.0
    reset_mid_token: str = ""
    seed: int = 0


def _config_dir(cfg: ProjectionConfig, dsp: str = "generic") -> Path:
    tag = f"{cfg.d_in}x{cfg.d_out}_s{cfg.simd}_p{cfg.pe}_b{cfg.act_bits}"
    return unit_dir("xnor_projection", tag, repr(cfg), dsp)


def run_case(case: ProjectionCase, waves: bool | None = None,
             on_phase: Phase | None = None, dsp: str = "generic") -> dict:
    """Build (if needed) and run ``case``; return the testbench's measurements.

    ``waves`` (default: the ``WAVES`` environment variable) dumps ``dump.fst`` in the case's
    directory (its path is the result's ``"fst"``). ``on_phase`` (optional) is told each step
    ("emit", "build", "simulate") as it starts. ``dsp`` is the target the unit is elaborated
    for (``rtl.dsp.DSP_TARGETS``; ``"ecp5"`` simulates the vendor cells' models).
    """
    waves = waves_requested(waves)
    cfg = case.config
    d = _config_dir(cfg, dsp)
    runner, build_dir = build(XnorProjection(cfg), "xnor_projection", d, waves, on_phase,
                              dsp=dsp)
    case_dir = d / case.name
    images = memory_images(cfg, case.proj)
    expected = project(case.proj, case.tokens)
    payload = {
        "name": case.name, "seed": case.seed, "idle": case.idle,
        "backpressure": case.backpressure, "reset_mid_token": case.reset_mid_token,
        "config": {
            "d_in": cfg.d_in, "d_out": cfg.d_out, "simd": cfg.simd, "pe": cfg.pe,
            "act_bits": cfg.act_bits, "out_bits": cfg.out_bits, "folds": cfg.folds,
            "row_groups": cfg.row_groups, "cycles_per_token": cfg.cycles_per_token,
            "latency": cfg.latency, "load_addr_bits": cfg.load_layout.members["addr"].width,
        },
        "beats": images.beats(),
        "tokens": [list(map(int, t)) for t in case.tokens],
        "expected": expected,
    }
    return run_test(runner, build_dir, "xnor_projection", "sim.xnor_projection_tb", case_dir,
                    payload, case.seed, waves, on_phase)


def directed_case(name: str, cfg: ProjectionConfig, rng: np.random.Generator, fill: int | None,
                  tokens: np.ndarray, **kw) -> ProjectionCase:
    """A case for ``cfg`` with all weights ``fill`` (+1 / -1; None: random) and ``tokens``."""
    sign = None if fill is None else np.full((cfg.d_out, cfg.d_in), fill)
    p = random_projection(cfg.d_in, cfg.d_out, cfg.act_bits, rng, sign=sign,
                          beta_frac=cfg.beta_frac, mult_frac=cfg.mult_frac,
                          out_bits=cfg.out_bits, beta_bits=cfg.beta_bits,
                          mult_bits=cfg.mult_bits)
    return ProjectionCase(name, cfg, p, np.asarray(tokens, np.int64), **kw)
