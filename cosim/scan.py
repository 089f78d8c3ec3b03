"""Co-simulation of the SSM scan unit against the golden model's dt, decay and scan stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.golden import layer as G
from model.golden.quantize import QuantizedLayer
from rtl.ssm_scan import ConstTarget, ScanConfig, SsmScan

from .verilator import Phase, build, run_test, unit_dir, waves_requested

__all__ = ["ScanCase", "pack", "golden_scan", "random_scan_inputs", "run_scan_case"]


def pack(layout, values: dict) -> int:
    """Pack a ``StructLayout`` payload (fields: ints, or sequences for ``ArrayLayout``)."""
    word = 0
    for name, field in layout:
        v = values[name]
        shape = field.shape
        if hasattr(shape, "elem_shape"):  # ArrayLayout
            w = shape.elem_shape.width if hasattr(shape.elem_shape, "width") else shape.elem_shape.size
            part = 0
            for i, e in enumerate(v):
                part |= (int(e) & ((1 << w) - 1)) << (i * w)
        else:
            part = int(v) & ((1 << field.width) - 1)
        word |= part << field.offset
    return word


@dataclass
class ScanCase:
    """Tokens for the scan unit: dt_raw (T, H), x (T, H, P), B and C (T, N) in their formats,
    and ``start`` (T,) flags beginning a new sequence."""

    name: str
    config: ScanConfig
    dt_raw: np.ndarray
    x: np.ndarray
    B: np.ndarray
    C: np.ndarray
    start: np.ndarray
    idle: float = 0.0
    backpressure: float = 0.0
    seed: int = 0
    bc_idle: float = 0.0  # pauses of the bc source alone (B, C arriving late)


def golden_scan(q: QuantizedLayer, case: ScanCase, states: list | None = None) -> np.ndarray:
    """y (T, H, P) from the golden model's stages, state carried and reset at ``start``;
    ``states`` (optional) receives the state after each token."""
    c = q.cfg
    h = np.zeros((c.nheads, c.headdim, c.d_state), np.int64)
    ys = []
    for t in range(len(case.dt_raw)):
        if case.start[t]:
            h = np.zeros_like(h)
        dt = G.dt_softplus(q, case.dt_raw[t])
        dA = G.decay(q, dt)
        y, h = G.scan(q, case.x[t], case.B[t][None], case.C[t][None], dt, dA, h)
        ys.append(y)
        if states is not None:
            states.append(h)
    return np.stack(ys)


def random_scan_inputs(q: QuantizedLayer, tokens: int, rng: np.random.Generator,
                       spread: float = 0.25):
    """dt_raw, x, B, C codes spread over ``spread`` of their formats' ranges (wider inputs
    mostly saturate the state), with the format extremes mixed in."""
    c, f = q.cfg, q.fmt

    def codes(fmt, shape):
        lim = int(fmt.max_int * spread)
        v = rng.integers(-lim, lim + 1, shape)
        corner = rng.random(shape)
        v[corner < 0.01] = fmt.min_int
        v[corner > 0.99] = fmt.max_int
        return v

    return (codes(f["dt_raw"], (tokens, c.nheads)),
            codes(f["xbc_act"], (tokens, c.nheads, c.headdim)),
            codes(f["xbc_act"], (tokens, c.d_state)), codes(f["xbc_act"], (tokens, c.d_state)))


def run_scan_case(case: ScanCase, waves: bool | None = None,
                  on_phase: Phase | None = None, dsp: str = "generic") -> dict:
    """Build (cached) and run ``case``; return the testbench's figures.

    ``waves``, ``on_phase`` and ``dsp`` as for :func:`cosim.projection.run_case`.
    """
    waves = waves_requested(waves)
    cfg = case.config
    q = cfg.q
    d = unit_dir("ssm_scan", f"h{q.cfg.nheads}p{q.cfg.headdim}n{q.cfg.d_state}l{cfg.lanes}",
                 q.digest() + f"lanes={cfg.lanes}", dsp)
    top = SsmScan(cfg)
    runner, build_dir = build(top, "ssm_scan", d, waves, on_phase, dsp=dsp)
    case_dir = d / case.name
    H = q.cfg.nheads
    consts = []
    for sel, values in ((ConstTarget.DT_BIAS, q.dt_bias), (ConstTarget.AK, q.a2),
                        (ConstTarget.D, q.d_skip)):
        consts += [pack(cfg.cfg_layout, {"sel": sel, "addr": h, "data": int(values[h])})
                   for h in range(H)]
    T = len(case.dt_raw)
    y = golden_scan(q, case)
    payload = {
        "name": case.name, "seed": case.seed, "idle": case.idle, "bc_idle": case.bc_idle,
        "backpressure": case.backpressure, "cfg": consts,
        "bc": [pack(cfg.bc_layout, {"start": int(case.start[t]), "b": case.B[t], "c": case.C[t]})
               for t in range(T)],
        "head": [pack(cfg.head_layout, {"dt_raw": case.dt_raw[t, h], "x": case.x[t, h]})
                 for t in range(T) for h in range(H)],
        "expected": [pack_array(y[t, h], q.fmt["y"].bits) for t in range(T) for h in range(H)],
        "cycles_per_token": cfg.cycles_per_token, "latency": cfg.latency, "tokens": T,
        "heads": H,
    }
    return run_test(runner, build_dir, "ssm_scan", "sim.ssm_scan_tb", case_dir, payload,
                    case.seed, waves, on_phase)


def pack_array(values, bits: int) -> int:
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return word


def real_shape_case(preset: str, tokens: int, lanes: int, seed: int = 0) -> ScanCase:
    """The scan inputs of ``tokens`` decode steps of a synthetic-checkpoint ``preset`` layer,
    taken from the golden model's own trace (dt_raw, and x, B, C after the conv's SiLU)."""
    from model.config import get_preset
    from model.evaluate.sqnr import golden_trace, prepare
    from model.golden.quantize import QuantSpec, export_layer

    cfg = get_preset(preset)
    p = prepare(cfg, tokens, seed)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    tr = golden_trace(q, q.fmt["res"].quantize(p.u))
    E, N = cfg.d_inner, cfg.d_state
    xa = tr["xbc_act"]
    start = np.zeros(tokens, bool)
    start[0] = True
    return ScanCase(f"{preset}_scan", ScanConfig(q, lanes), tr["dt_raw"],
                    xa[:, :E].reshape(tokens, cfg.nheads, cfg.headdim), xa[:, E : E + N],
                    xa[:, E + N :], start, seed=seed)
