"""Co-simulation of the whole-model engine (``rtl/lm.py``) against
:class:`~model.golden.lm.GoldenLM`: tokens in, every logit of every token compared bit for bit,
every token's cycles compared with :meth:`rtl.lm.LMConfig.schedule`."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from model.golden.lm import GoldenLM
from rtl.lm import LMConfig
from rtl.packer import embedding_beats, lm_static_beats

from .bench import LMBench, burst_beats_for, cfg_word
from .verilator import Phase, build, run_test, unit_dir, waves_requested

__all__ = ["LMCase", "golden_logits", "run_lm_case"]


@dataclass
class LMCase:
    """Decode ``tokens`` through the engine of ``config``, or let ``host`` name them.

    ``starts`` marks tokens that begin a sequence (default: token 0 only); the first token
    after reset begins one whether marked or not. ``idle``,
    ``backpressure`` and ``bubble`` are the probabilities of a pause on ``token``, on
    ``logits`` and on the weight stream and the state port; ``period`` (cycles a beat, a whole
    number or a Fraction: ``Fraction(5, 4)`` for 0.8 beats a cycle) and ``latency`` describe
    the memory, ``state_period`` (cycles a word, a whole number or a Fraction),
    ``state_latency`` and ``conv_period`` its state port (an engine with ``state="memory"``),
    ``shared`` that the port and the weight stream are one memory served in turn;
    ``reset_at`` resets the engine at that cycle and starts over. ``host`` is
    ``"module:function"`` (see ``sim/lm_tb.py``) called with ``host_args``; then ``tokens`` is
    ignored and the host's choice is returned.
    """

    name: str
    config: LMConfig
    tokens: np.ndarray | None = None
    starts: np.ndarray | None = None
    idle: float = 0.0
    backpressure: float = 0.0
    bubble: float = 0.0
    period: int | Fraction = 1
    latency: int = 0
    state_period: int | Fraction = 1
    state_latency: int = 0
    conv_period: int | Fraction | None = None
    shared: bool = False
    reset_at: int | None = None
    seed: int = 0
    host: str | None = None
    host_args: dict | None = None
    max_tokens: int | None = None  # the host's, for the timeout

    def __post_init__(self) -> None:
        if self.host is None:
            self.tokens = np.asarray(self.tokens, np.int64)
            if self.tokens.ndim != 1 or not len(self.tokens):
                raise ValueError(f"tokens must have shape (T >= 1,), not {self.tokens.shape}")
            T = len(self.tokens)
            if self.starts is None:
                self.starts = np.zeros(T, bool)
                self.starts[0] = True
            else:  # token 0 may come without start: the engine starts afresh after reset
                self.starts = np.asarray(self.starts, bool).copy()

    @property
    def stalls(self) -> bool:
        return bool(self.idle or self.backpressure or self.bubble or self.reset_at is not None)


def golden_logits(q, tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """:class:`GoldenLM`'s ``logits_int`` (T, V) of ``tokens``, state reset at ``starts``."""
    g = GoldenLM(q)
    out, state = [], None
    for t, s in zip(tokens, starts):
        if s or state is None:
            state = g.initial_state()
        lg, state = g.step(int(t), state)
        out.append(lg)
    return np.stack(out)


def run_lm_case(case: LMCase, waves: bool | None = None, on_phase: Phase | None = None,
                saif: bool = False) -> dict:
    """Build (cached) and run ``case``; return the testbench's figures (``tokens``, ``logits``
    (T, V), the cycles of every token and last logit) plus ``mismatches`` (logits that differ
    from :class:`GoldenLM`'s, on the tokens the engine saw), ``first_mismatch``, ``cycles``
    (each token: its handshake to its last logit, inclusive) and the formula's
    ``predicted_first`` and ``predicted_spacing``, and for a token list
    ``predicted_last_logit`` (each token's, back to back from reset, from the first token's
    handshake)."""
    lmc = case.config
    q = lmc.q
    V = q.cfg.vocab_size
    n = case.max_tokens if case.host else len(case.tokens)
    port = (case.state_period, case.state_latency, case.conv_period, case.shared)
    sched = lmc.schedule(case.period, case.latency, *port)
    if not case.host:
        times = lmc.token_times(len(case.tokens), case.period, case.latency, *port)
    p, sp = Fraction(case.period), Fraction(case.state_period)
    cp = Fraction(case.conv_period or 0)
    cfg = cfg_word(period=p.numerator, period_den=p.denominator, latency=case.latency,
                   s_period=sp.numerator, s_period_den=sp.denominator,
                   s_latency=case.state_latency, c_period=cp.numerator,
                   c_period_den=cp.denominator, shared=int(case.shared),
                   bubble=round(case.bubble * 65536), seed=case.seed & 0xFFFFFFFF)
    payload = {
        "name": case.name, "seed": case.seed, "reset_at": case.reset_at,
        "static": [int(b) for b in lm_static_beats(lmc)],
        "rows": [[int(b) for b in embedding_beats(lmc, t)] for t in range(V)],
        "cfg": cfg,
        "idle": case.idle, "backpressure": case.backpressure, "vocab": V,
        "logit_bits": lmc.logit_bits, "burst_beats": burst_beats_for(lmc.beat_bits), "beat_bits": lmc.beat_bits,
        "timeout_cycles": 20 * (n + 1) * sched.token_cycles + 10_000,
    }
    if case.host:
        payload.update(host=case.host, host_args=case.host_args or {})
    else:
        payload.update(tokens=[int(t) for t in case.tokens],
                       starts=[bool(s) for s in case.starts])
    waves = waves_requested(waves)
    key = f"{q.digest()}:{lmc.simd}:{lmc.pe}:{lmc.lanes}:{lmc.planes}:{lmc.state}"
    d = unit_dir("bimamba_lm", "bench", key)
    runner, build_dir = build(LMBench(lmc), "bimamba_lm_bench", d, waves, on_phase, saif=saif)
    res = run_test(runner, build_dir, "bimamba_lm_bench", "sim.lm_tb",
                   d / (case.name + ("_saif" if saif else "")), payload, case.seed, waves,
                   on_phase, saif=saif)
    res["verilog"] = str(build_dir.parent / "rtl" / "bimamba_lm_bench.v")
    tokens = np.asarray(res["tokens"], np.int64)
    starts = (np.zeros(len(tokens), bool) if case.host else case.starts).copy()
    if case.host:
        starts[0] = True
    got = np.asarray(res["logits"], np.int64).reshape(len(tokens), V)
    want = golden_logits(q, tokens, starts)
    bad = np.argwhere(got != want)
    res["logits"] = got
    res["row_mismatches"] = int(sum(r != t for r, t in zip(res["rows"], tokens))
                                + abs(len(res["rows"]) - len(tokens)))
    res["mismatches"] = int(len(bad))
    if len(bad):
        t, v = bad[0]
        res["first_mismatch"] = f"token {t} logit {v}: rtl {got[t, v]} golden {want[t, v]}"
    res["cycles"] = [b - a + 1 for a, b in zip(res["token_cycles"], res["last_logit"])]
    res["spacing"] = [b - a for a, b in zip(res["last_logit"], res["last_logit"][1:])]
    res["predicted_first"] = sched.last_logit + 1
    res["predicted_spacing"] = sched.token_cycles
    if not case.host:  # the formula's last logits, from the first token's handshake
        res["predicted_last_logit"] = [t["last_logit"] for t in times]
    return res
