"""The weight-precision baselines of the estimator (INT8, INT4 beside FP16 and 1-bit): bytes,
cycles and MAC energy of the 2.7B decode step counted here from the shapes."""

import math

import pytest

from energy.estimator import Arch, estimate
from energy.report import preset_report
from energy.roofline import bytes_per_token
from model.config import get_preset

# 2.7B: d_model, d_inner, d_in_proj, heads, headdim, d_state, conv_dim, layers, vocabulary.
D, E, F, H, P, N, C, L, V = 2560, 5120, 10576, 80, 64, 128, 5376, 64, 32000


def by_hand(k: int) -> dict[str, float]:
    """Minimal DRAM bytes of one decode step with k-bit projection and head weights."""
    params = (D + E + C * 4 + C + 3 * H) * 2  # FP16: norms, conv, dt_bias / A_log / D
    return {
        "projection_weights": L * (D * F + E * D) * k / 8,
        "fp16_parameters": L * params,
        "hardware_constants": L * (F + D) * 2,  # an FP16 scale per output row
        "ssm_state": L * 2 * H * P * N * 2,
        "conv_state": L * 2 * C * 3 * 2,
        "embedding": V * D * k / 8 + (V + 2 * D) * 2,  # head rows, their scales, row, gain
    }


@pytest.mark.parametrize("k, design", [(8, "int8"), (4, "int4")])
def test_int_baselines_by_hand(k, design):
    cfg = get_preset("2.7B")
    need = by_hand(k)
    assert bytes_per_token(cfg, design) == need
    e = estimate(cfg, Arch(clock_hz=1e9), design)
    assert e.dram_bytes == pytest.approx(sum(need.values()))
    # The engine of 1 GHz, a 32 x 32 array: each projection as slow as its words or its bytes
    # at the 94.66 B/cycle the default DDR5 sustains (102.4 peak x 92.44 %); the scan's 128
    # lanes; the element-wise stages on 32 lanes; the state and the head (256 MACs a cycle,
    # or its bytes) after; the token's row 44 cycles after it is known (43.125 ns).
    bpc = 102.4 * 0.9244
    proj = (max(80 * 331, k / 8 * D * F / bpc) + max(160 * 80, k / 8 * E * D / bpc))
    layer = proj + H * P * N / 128 + (3 * D + 3 * E + C) / 32
    state = need["ssm_state"] + need["conv_state"]
    cycles = L * layer + state / bpc + max(V * D / 256, need["embedding"] / bpc) + 44
    assert e.cycles == math.ceil(cycles)
    # A k x 8-bit product (Horowitz: 0.2 pJ for 8 x 8, scaled by k * 8 / 64) and a 32-bit add
    # (0.1 pJ) a weight.
    mac = (0.2 * k * 8 / 64 + 0.1) * 1e-12
    assert e.energy_j[f"proj_{design}_mac"] == pytest.approx(L * (D * F + E * D) * mac)
    assert e.bound == "memory"


def test_report_names_the_strongest_baseline():
    """At 2.7B the INT4 design is the strongest baseline; the 1-bit design's saving over it
    is the energy ratio, near its byte ratio (2.58x: 1504.9 MB against 584.1 MB at the
    presets' 32,000 head rows)."""
    r = preset_report("2.7B", Arch())
    p = r["precision_baselines"]
    assert list(p) == ["fp16", "int8", "int4"]
    assert r["strongest_baseline"] == "int4"
    assert r["energy_saving_vs_strongest"] == pytest.approx(
        p["int4"]["energy_per_token_j"] / r["energy_per_token_j"])
    assert 2.3 < r["energy_saving_vs_strongest"] < 2.6
    e = [p[d]["energy_per_token_j"] for d in ("fp16", "int8", "int4")]
    assert e[0] > e[1] > e[2] > r["energy_per_token_j"]
    assert p["fp16"]["energy_per_token_j"] == r["energy_per_token_fp16_j"]
