"""A 2.7B-shaped whole model on the engine the estimator prices by default: two layers of
Mamba-2 2.7B's shape (d_model 2560, d_state 128, 80 heads of 64) and a 256-row head, the
array, lanes and memory paces of ``energy.estimator``'s default point (32 rows of 64 columns
at one 2048-bit beat every 6525/4622 cycles: the 94.66 GB/s that 102.4 GB/s of DDR5 sustains,
at the measured 522 MHz, with its 23-cycle latency), the state through the state port on the
same memory
(``shared``), at the paces the estimator gives it. Every logit against GoldenLM, every token's
last logit at the formula's cycle, and the first token's cycles (greedy decode's step) equal to
the estimator's cycles per token for this model."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from cosim.lm import LMCase, run_lm_case
from energy.estimator import Arch, estimate
from model.config import PRESETS
from model.golden.lm import export_lm
from model.golden.quantize import QuantSpec
from model.reference.lm import BiMambaLM as FloatLM
from rtl.lm import LMConfig


@pytest.mark.slow
def test_two_2p7b_layers_and_head_at_the_estimators_default_point():
    cfg = replace(PRESETS["2.7B"], n_layer=2, vocab_size=256)
    q = export_lm(FloatLM(cfg, binary=True).init_weights(0).eval(), QuantSpec(),
                  np.random.default_rng(0).integers(0, 256, 24))
    est = estimate(cfg, Arch())
    period, sp, cp = est.period, est.state_period, est.conv_period
    lc = est.layer
    # 256-byte beats at the 94.66 GB/s the memory sustains (92.44 % of 102.4) at 522 MHz
    assert (lc.pe, lc.simd, lc.lanes, period) == (32, 64, 128, Fraction(6525, 4622))
    assert est.latency_cycles == 23  # a 43.125 ns row miss
    lmc = LMConfig(q, lc.simd, lc.pe, lc.lanes, state="memory")
    assert lmc.section_beats() == est.lm.section_beats()
    toks = np.array([72, 105, 33])
    res = run_lm_case(LMCase("lm_2p7b_estimator_default", lmc, toks, period=period,
                             latency=est.latency_cycles, state_period=sp,
                             state_latency=est.latency_cycles, conv_period=cp,
                             shared=True))
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["row_mismatches"] == 0
    first = res["token_cycles"][0]
    assert [c - first for c in res["last_logit"]] == res["predicted_last_logit"]
    # The estimator's step is greedy decode's: the first token's handshake to the cycle after
    # its last logit (the formula's first token, measured here).
    assert res["cycles"][0] == res["predicted_first"] == est.cycles
    print(f"2.7B-shaped, 2 layers + head, {lc.pe} x {lc.simd}, {lc.lanes} lanes, "
          f"{period} cycles a beat, a shared memory ({sp} cycles an SSM word, {cp} a conv "
          f"word): cycles {res['cycles'][0]} first, then {res['spacing']}; formula "
          f"{res['predicted_first']} / {res['predicted_spacing']}; estimator {est.cycles}")
