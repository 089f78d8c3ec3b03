"""Co-simulation of the layer engine's stage units against the golden model's stage functions:
the weight-streaming projection, the RMSNorm, conv and gate units (``rtl/stream_projection.py``,
``rtl/layer_units.py``). Each builder returns a :class:`~cosim.dataflow.DataflowCase` and the
unit to build; :func:`run_stage` runs it."""

from __future__ import annotations

import numpy as np

from model.golden import layer as G
from rtl.layer_units import ConvUnit, GateUnit, RmsNormUnit
from rtl.packer import conv_beats, norm_beats, pack_fields, projection_beats
from rtl.stream_projection import StreamProjection, StreamProjectionConfig

from .dataflow import DataflowCase, Memory, run_dataflow

__all__ = ["projection_case", "norm_case", "conv_case", "gate_case", "run_stage"]


def _beats(v: np.ndarray, pe: int, bits: int) -> list[int]:
    return [pack_fields(row[i * pe: (i + 1) * pe], bits) for row in v
            for i in range(v.shape[1] // pe)]


def projection_case(name: str, cfg: StreamProjectionConfig, p, tokens: np.ndarray, *,
                    rows=None, memory: dict | None = None, **stalls):
    """Tokens (T, d_in) through a streaming projection; outputs in ``rows`` order."""
    want = G.project(p, tokens)
    rows = np.arange(p.d_out) if rows is None else np.asarray(rows)
    pad = np.zeros((len(tokens), cfg.row_groups * cfg.pe), np.int64)
    pad[:, : p.d_out] = want[:, rows]
    case = DataflowCase(name, {"act": _beats(tokens, cfg.pe, cfg.act_bits)},
                        {"out": _beats(pad, cfg.pe, cfg.out_bits)},
                        [Memory("mem", projection_beats(cfg, p, rows) * len(tokens),
                                **(memory or {}))], **stalls)
    return StreamProjection(cfg), "stream_projection", repr(cfg) + p.signs.tobytes().hex()[:64], case


def norm_case(name: str, q, which: str, v: np.ndarray, pe: int, beat_bits: int, *,
              memory: dict | None = None, **stalls):
    """Vectors (T, n) through the block norm (``which="norm_in"``) or the gated norm."""
    n = q.norm_in if which == "norm_in" else q.norm_out
    case = DataflowCase(name, {"x": _beats(v, pe, n.in_fmt.bits)},
                        {"a": _beats(G.rmsnorm_act(q, n, v), pe, n.act.bits)},
                        [Memory("gain", norm_beats(n, pe, beat_bits) * len(v), **(memory or {}))],
                        **stalls)
    return (RmsNormUnit(n, q.rsqrt, pe, beat_bits), "rms_norm",
            f"{q.digest()}:{which}:{pe}:{beat_bits}", case)


def conv_case(name: str, q, xbc: np.ndarray, starts, pe: int, beat_bits: int, *,
              memory: dict | None = None, **stalls):
    """xBC tokens (T, conv_dim) through the conv unit, state reset where ``starts``."""
    K = q.cfg.d_conv
    state = np.zeros((q.cfg.conv_dim, K - 1), np.int64)
    want = []
    for t, x in enumerate(xbc):
        if starts[t]:
            state = np.zeros_like(state)
        cv, state = G.conv(q, x, state)
        want.append(G.conv_act(q, cv))
    case = DataflowCase(name, {"x": _conv_x(q, xbc, starts, pe)},
                        {"y": _beats(np.array(want), pe, q.fmt["xbc_act"].bits)},
                        [Memory("w", conv_beats(q, pe, beat_bits) * len(xbc), **(memory or {}))],
                        **stalls)
    return ConvUnit(q, pe, beat_bits), "conv_unit", f"{q.digest()}:{pe}:{beat_bits}", case


def _conv_x(q, xbc: np.ndarray, starts, pe: int) -> list[int]:
    """The conv unit's x beats: a group's pe inputs, the token's start flag in bit 0."""
    xb = q.fmt["xbc"].bits
    return [(pack_fields(x[g * pe: (g + 1) * pe], xb) << 1) | int(starts[t])
            for t, x in enumerate(xbc) for g in range(q.cfg.conv_dim // pe)]


def conv_port_case(name: str, q, xbc: np.ndarray, starts, restores: np.ndarray, pe: int,
                   beat_bits: int, *, memory: dict | None = None, **stalls):
    """xBC tokens (T, conv_dim) through the conv unit with its state port. Before token t the
    unit saves its state (token t-1's; before token 0 the RAM as reset left it, not compared)
    and restores ``restores[t]``
    ((T + 1, conv_dim, d_conv - 1)); token t starts from that state, or from zero where
    ``starts[t]`` and for the first token after reset. After the last token it saves once
    more, restoring ``restores[T]``."""
    K, C = q.cfg.d_conv, q.cfg.conv_dim
    xb = q.fmt["xbc"].bits
    if restores.shape != (len(xbc) + 1, C, K - 1):
        raise ValueError(f"restores must be ({len(xbc) + 1}, {C}, {K - 1}), not "
                         f"{restores.shape}")

    def words(state: np.ndarray) -> list[int]:  # a word a group: pe lanes of K - 1 inputs
        return [pack_fields(state[g * pe: (g + 1) * pe].reshape(-1), xb) for g in range(C // pe)]

    saved, want = [0] * (C // pe), []  # placeholders: the first save is not compared
    for t, x in enumerate(xbc):
        state = np.zeros((C, K - 1), np.int64) if starts[t] or t == 0 else restores[t]
        cv, state = G.conv(q, x, state)
        want.append(G.conv_act(q, cv))
        saved += words(state)
    case = DataflowCase(name, {"x": _conv_x(q, xbc, starts, pe), "restore": [w for r in restores for w in words(r)]},
                        {"y": _beats(np.array(want), pe, q.fmt["xbc_act"].bits), "save": saved},
                        [Memory("w", conv_beats(q, pe, beat_bits) * len(xbc), **(memory or {}))],
                        unchecked={"save": C // pe}, **stalls)
    return (ConvUnit(q, pe, beat_bits, port=True), "conv_unit_port",
            f"{q.digest()}:{pe}:{beat_bits}:port", case)


def gate_case(name: str, q, y: np.ndarray, z: np.ndarray, pe: int, **stalls):
    """y and z tokens (T, d_inner) through the gate unit."""
    Hd = q.cfg.headdim
    y_in = [pack_fields(row[h * Hd: (h + 1) * Hd], q.fmt["y"].bits) for row in y
            for h in range(q.cfg.nheads)]
    case = DataflowCase(name, {"y": y_in, "z": _beats(z, pe, q.fmt["z"].bits)},
                        {"g": _beats(G.gate(q, y, z), pe, q.fmt["gate"].bits)}, **stalls)
    return GateUnit(q, pe), "gate_unit", f"{q.digest()}:{pe}", case


def run_stage(built, waves: bool | None = None) -> dict:
    """Run a case from one of the builders above."""
    top, module, key, case = built
    return run_dataflow(top, module, key, case, waves)
