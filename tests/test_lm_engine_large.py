"""A 2.7B-shaped whole model on the engine the estimator prices by default: two layers of
Mamba-2 2.7B's shape (d_model 2560, d_state 128, 80 heads of 64) and a 256-row head, the
array, lanes and memory pace of ``energy.estimator``'s default point (a 32 x 32 array at one
1024-bit beat every 1.25 cycles: 102.4 GB/s at 1 GHz), the SSM state through the state port.
Every logit against GoldenLM, every token's last logit at the formula's cycle."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from cosim.lm import LMCase, run_lm_case
from energy.estimator import Arch, layer_config, memory_period
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
    arch = Arch()
    lc = layer_config(cfg, arch)
    period = Fraction(memory_period(lc, arch)).limit_denominator(64)
    assert (lc.pe, lc.simd, period) == (32, 32, Fraction(5, 4))
    lmc = LMConfig(q, lc.simd, lc.pe, lc.lanes, state="memory")
    toks = np.array([72, 105, 33])
    res = run_lm_case(LMCase("lm_2p7b_estimator_default", lmc, toks, period=period,
                             latency=40, state_latency=40))
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["row_mismatches"] == 0
    first = res["token_cycles"][0]
    assert [c - first for c in res["last_logit"]] == res["predicted_last_logit"]
    print(f"2.7B-shaped, 2 layers + head, {lc.pe} x {lc.simd}, {lc.lanes} lanes, "
          f"{float(period)} cycles a beat: cycles {res['cycles'][0]} first, then "
          f"{res['spacing']}; formula {res['predicted_first']} / {res['predicted_spacing']}")
