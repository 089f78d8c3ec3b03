"""Co-simulation of the layer engine (``rtl/layer.py``) against the golden model's
:class:`~model.golden.layer.GoldenLayer`: decode tokens through one layer or a chain of layers, the
weight stream from a memory model, every output beat compared and every token's cycles
compared with :meth:`rtl.layer.LayerConfig.schedule`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.golden.layer import GoldenLayer
from rtl.layer import BiMambaLayer, LayerChain, LayerConfig
from rtl.packer import layer_beats, pack_fields

from .dataflow import DataflowCase, Memory, run_dataflow
from .verilator import Phase

__all__ = ["LayerCase", "golden_outputs", "run_layer_case", "random_residual"]


@dataclass
class LayerCase:
    """Decode tokens ``u`` (T, d_model), residual format, through ``configs`` in series.

    ``starts`` (T,) marks tokens that begin a sequence (default: token 0 only); token 0 may
    come unmarked, and begins one anyway (the first token after reset does). ``idle``,
    ``backpressure`` and ``bubble`` are the probabilities of a pause on ``u``, on ``o`` and on
    each weight stream; ``period`` and ``latency`` describe the memory (a beat per ``period``
    cycles, the first after ``latency``); ``reset_at`` resets the engine at that cycle and
    starts over.
    """

    name: str
    configs: list[LayerConfig]
    u: np.ndarray
    starts: np.ndarray | None = None
    idle: float = 0.0
    backpressure: float = 0.0
    bubble: float = 0.0
    period: int = 1
    latency: int = 0
    reset_at: int | None = None
    seed: int = 0
    expected: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        T = len(self.u)
        if self.starts is None:
            self.starts = np.zeros(T, bool)
            self.starts[0] = True
        else:
            self.starts = np.asarray(self.starts, bool).copy()

    @property
    def stalls(self) -> bool:
        return bool(self.idle or self.backpressure or self.bubble or self.reset_at is not None)


def random_residual(q, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Residual tokens of about unit RMS (a block input's typical scale) in format ``res``."""
    return q.fmt["res"].quantize(rng.normal(0.0, 1.0, (tokens, q.cfg.d_model)))


def golden_outputs(configs: list[LayerConfig], u: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The golden model's output of the chain, token by token, state reset at ``starts``
    and at token 0 (marked or not)."""
    h = np.asarray(u, np.int64)
    for lc in configs:
        layer = GoldenLayer(lc.q)
        state, out = layer.initial_state(), []
        for t in range(len(h)):
            if starts[t] or t == 0:
                state = layer.initial_state()
            o, state = layer.step(h[t], state)
            out.append(o)
        h = np.stack(out)
    return h


def _beats(v: np.ndarray, pe: int, bits: int) -> list[int]:
    return [pack_fields(row[i * pe: (i + 1) * pe], bits) for row in v
            for i in range(v.shape[1] // pe)]


def run_layer_case(case: LayerCase, waves: bool | None = None,
                   on_phase: Phase | None = None) -> dict:
    """Build (cached) and run ``case``; return the testbench's figures plus ``tokens``,
    ``last_out`` (each token's last output handshake, counted from the first ``u``
    handshake), ``spacing`` (cycles between the ends of consecutive tokens' inputs) and, for
    one layer, the formula's ``predicted_first`` and ``predicted_spacing``."""
    lcs = case.configs
    lc0 = lcs[0]
    q0 = lc0.q
    P, rb, D = lc0.pe, q0.fmt["res"].bits, q0.cfg.d_model
    T = len(case.u)
    if case.expected is None:
        case.expected = golden_outputs(lcs, case.u, case.starts)
    u_beats = _beats(case.u, P, rb)
    for t in range(T):
        u_beats[t * (D // P)] = (u_beats[t * (D // P)] << 1) | int(case.starts[t])
        for i in range(1, D // P):
            u_beats[t * (D // P) + i] <<= 1
    mems = [Memory("mem" if len(lcs) == 1 else f"mem{i}", layer_beats(lc) * T, case.latency,
                   case.period, case.bubble) for i, lc in enumerate(lcs)]
    df = DataflowCase(case.name, {"u": u_beats}, {"o": _beats(case.expected, P, rb)}, mems,
                      case.idle, case.backpressure, case.seed, case.reset_at,
                      timeout_cycles=20 * T * sum(lc.schedule(case.period).token_cycles
                                                  for lc in lcs) + 10_000)
    top = BiMambaLayer(lc0) if len(lcs) == 1 else LayerChain(lcs)
    module = "bimamba_layer" if len(lcs) == 1 else f"bimamba_chain{len(lcs)}"
    key = "|".join(f"{lc.q.digest()}:{lc.simd}:{lc.pe}:{lc.lanes}:{lc.planes}" for lc in lcs)
    res = run_dataflow(top, module, key, df, waves, on_phase)
    oc = res["out_cycles"]["o"]
    uc = res["in_cycles"]["u"]
    n = D // P
    res["tokens"] = T
    t0 = uc[0]  # the formula counts from the first u handshake (cycle 0 after reset)
    res["last_out"] = [oc[(t + 1) * n - 1] - t0 for t in range(T)]
    res["u_last"] = [uc[(t + 1) * n - 1] - t0 for t in range(T)]
    if len(lcs) == 1:
        res["predicted_first"] = lc0.schedule(case.period, case.latency, first=True).last_out
        res["predicted_spacing"] = lc0.schedule(case.period).token_cycles
    res["spacing"] = [b - a for a, b in zip(res["u_last"], res["u_last"][1:])]
    return res
