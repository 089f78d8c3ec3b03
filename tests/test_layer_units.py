"""The layer engine's stage units (rtl/layer_units.py) bit-exact against the golden model's
stage functions: table units exhaustively, the norm, conv and gate units on real activations,
corner values and random stalls."""

import numpy as np
import pytest

from cosim.stages import conv_case, conv_port_case, gate_case, norm_case, run_stage
from cosim.units import run_stream_unit
from model.evaluate.sqnr import golden_trace
from model.golden.fixedpoint import bit_length
from rtl.emit import emit, lint, write_if_changed
from rtl.layer_units import (
    CONV_LATENCY, GATE_LATENCY, NORM_LATENCY, NORM_RSQRT_CYCLES, PWL_LATENCY, ConvUnit,
    GateUnit, PwlUnit, RmsNormUnit, RsqrtUnit, norm_lead_cycles,
)

from .conftest import make_layer

T = 6  # tokens per case


@pytest.fixture(scope="module")
def layer():
    return make_layer("tiny", 0)[1]


@pytest.fixture(scope="module")
def trace(layer):
    """Golden trace of T tokens of random residuals with corner tokens mixed in (``u`` too)."""
    q = layer
    rng = np.random.default_rng(7)
    u = q.fmt["res"].quantize(rng.normal(0, 1, (T, q.cfg.d_model)))
    u[2] = q.fmt["res"].max_int  # every lane at the rail
    u[3, ::2] = q.fmt["res"].min_int
    tr = golden_trace(q, u)
    tr["u"] = u
    return tr


def _unsigned(v, bits):
    return [int(x) & ((1 << bits) - 1) for x in v]


@pytest.mark.parametrize("table", ["silu_conv", "silu_z"])
def test_silu_tables_exhaustive(layer, table):
    q = layer
    t = getattr(q, table)
    x = np.arange(t.in_fmt.min_int, t.in_fmt.max_int + 1)  # every input code
    res = run_stream_unit(PwlUnit(q, table), f"pwl_{table}", q.digest(), "exhaustive",
                          _unsigned(x, t.in_fmt.bits), _unsigned(t(x), t.out_fmt.bits))
    assert res["mismatches"] == 0, res["first_mismatch"]
    # index and slope read; the slope in the fabric; the multiplier's operand and product
    # registers; the interpolation; the tails and saturation: 6 registers from input to output
    assert res["vectors"] == 1 << t.in_fmt.bits and res["latency_measured"] == PWL_LATENCY == 6


def test_rsqrt_every_entry_and_bucket_edge(layer):
    """Both ends of every mantissa bucket at every exponent of a norm's sum of squares: every
    table entry is read at its edges and the leading-one detector sees every position."""
    q = layer
    bits = RmsNormUnit(q.norm_in, q.rsqrt, 4, 64).ss_bits
    mb = q.rsqrt.index_bits - 1
    ss = {1}
    for e in range(1, bits):
        for idx in range(1 << mb):
            lo = (1 << e) + ((idx << e) >> mb)
            hi = (1 << e) + (((idx + 1) << e) >> mb) - 1
            ss.update(v for v in (lo, hi) if (1 << e) <= v < (2 << e))
    ss = np.array(sorted(ss), np.int64)
    assert set((bit_length(ss) - 1).tolist()) == set(range(bits))
    t, half = q.rsqrt(ss)
    res = run_stream_unit(RsqrtUnit(q, bits), "rsqrt", f"{q.digest()}:{bits}", "edges",
                          [int(v) for v in ss],
                          [int(a) | (int(b) << q.rsqrt.out_bits) for a, b in zip(t, half)])
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["latency_measured"] == NORM_RSQRT_CYCLES


@pytest.mark.parametrize("which,pe,beat,stalls", [
    ("norm_in", 4, 32, False), ("norm_in", 8, 128, True), ("norm_out", 4, 32, True)])
def test_norm_units(layer, trace, which, pe, beat, stalls):
    q = layer
    v = trace["u"] if which == "norm_in" else trace["gate"]
    if which == "norm_out":
        v = v.copy()
        v[4] = 0  # an all-zero vector: the sum of squares is eps alone
    kw = dict(idle=0.3, backpressure=0.3, memory=dict(bubble=0.3), seed=3) if stalls else {}
    res = run_stage(norm_case(f"{which}_{pe}_{beat}_{int(stalls)}", q, which, v, pe, beat, **kw))
    assert res["mismatches"]["a"] == 0, res["first_mismatch"]
    if not stalls:
        # From the first vector's last x beat to its first output: one cycle, the squares (4:
        # DSP blocks), their sum (1 register for 4 lanes), the accumulation (1), the rsqrt
        # (4), the gain record's second 32-bit beat (1), then the group: buffer read (1),
        # v * T (4), the variable rounding (3), the saturation (2), u * gain (4), the rounding
        # and saturation (1): 26 cycles.
        groups = len(v[0]) // pe
        first = res["out_cycles"]["a"][0] - res["in_cycles"]["x"][groups - 1]
        assert first == 1 + norm_lead_cycles(pe) + 1 + NORM_LATENCY == 26


@pytest.mark.parametrize("pe,beat,stalls", [(4, 32, False), (8, 128, True), (4, 512, False)])
def test_conv_unit(layer, trace, pe, beat, stalls):
    """Sequences restart at tokens 0 and 4; xBC includes both rails. At a 512-bit beat a
    group's record is one beat and the groups issue back to back."""
    q = layer
    xbc = trace["xbc"].copy()
    xbc[1, ::3] = q.fmt["xbc"].max_int
    xbc[2, ::5] = q.fmt["xbc"].min_int
    starts = [1, 0, 0, 0, 1, 0]
    kw = dict(idle=0.3, backpressure=0.3, memory=dict(bubble=0.3), seed=4) if stalls else {}
    res = run_stage(conv_case(f"conv_{pe}_{beat}_{int(stalls)}", q, xbc, starts, pe, beat, **kw))
    assert res["mismatches"]["y"] == 0, res["first_mismatch"]
    if not stalls:
        # Each group's output handshakes the state read and its output register (2), the
        # taps' DSP products (4), the
        # sum (1), the rounding and saturation (1), the SiLU table (6, counted in
        # test_silu_tables_exhaustive) and the output buffer's head
        # register (1) after its x beat.
        xy = [y - x for y, x in zip(res["out_cycles"]["y"], res["in_cycles"]["x"])]
        assert xy == [CONV_LATENCY] * len(xy) and CONV_LATENCY == 15


@pytest.mark.parametrize("beat,stalls", [(32, False), (512, False), (512, True)])
def test_conv_unit_state_port(layer, trace, beat, stalls):
    """The conv unit with its state port (the whole-model engine's state in memory): before
    each token its state is saved and another restored. Every y and every saved word
    bit-exact. A 512-bit beat holds a group's record, so groups issue back to back (a
    group's state is written while the next is read), and with the output held at random a
    group's state write waits in stage 2 while the swap begins."""
    q, pe, T = layer, 4, 12
    seed = 11
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    f = q.fmt["xbc"]
    xbc = np.concatenate([trace["xbc"]] * -(-T // len(trace["xbc"])))[:T].copy()
    restores = rng.integers(f.min_int, f.max_int + 1, (T + 1, q.cfg.conv_dim, q.cfg.d_conv - 1))
    starts = [0] * T
    starts[5] = 1
    kw = dict(idle=0.2, backpressure=0.6, memory=dict(bubble=0.2), seed=seed) if stalls else {}
    res = run_stage(conv_port_case(f"conv_port_{beat}_{int(stalls)}", q, xbc, starts, restores,
                                   pe, beat, **kw))
    assert res["mismatches"]["y"] == 0 and res["mismatches"]["save"] == 0, res["first_mismatch"]


@pytest.mark.parametrize("pe,stalls", [(4, False), (16, True)])
def test_gate_unit(layer, trace, pe, stalls):
    q = layer
    y, z = trace["y"].copy(), trace["z"].copy()
    y[1], z[1] = q.fmt["y"].max_int, q.fmt["z"].max_int
    y[2], z[2] = q.fmt["y"].min_int, q.fmt["z"].min_int
    kw = dict(idle=0.3, backpressure=0.3, seed=5) if stalls else {}
    res = run_stage(gate_case(f"gate_{pe}_{int(stalls)}", q, y, z, pe, **kw))
    assert res["mismatches"]["g"] == 0, res["first_mismatch"]
    if not stalls:
        # Each slice's output handshakes the SiLU table (6), the DSP product (4) and the
        # rounding register (1) after its z beat: 11 cycles.
        gz = [g - t for g, t in zip(res["out_cycles"]["g"], res["in_cycles"]["z"])]
        assert gz == [GATE_LATENCY] * len(gz) and GATE_LATENCY == 11


def test_unit_errors(layer):
    q = layer
    with pytest.raises(ValueError, match=r"pe must divide the norm width = 64 \(one of \[1, 2, 4, 8, "
                                         r"16, 32, 64\]\), not 3"):
        RmsNormUnit(q.norm_in, q.rsqrt, 3, 64)
    with pytest.raises(ValueError, match=r"pe must divide conv_dim = 160 .*, not 7"):
        ConvUnit(q, 7, 64)
    # two groups: a group's state would be read again before its write from stage 2
    with pytest.raises(ValueError, match=r"the conv unit needs slots \* conv_dim / pe >= 3 "
                                         r"state words, not 1 \* 160 / 80"):
        ConvUnit(q, 80, 64)
    ConvUnit(q, 80, 64, slots=2)  # four words: a slot a layer
    ConvUnit(q, 40, 64)  # four groups
    with pytest.raises(ValueError, match=r"pe must divide headdim = 16 .*, not 5"):
        GateUnit(q, 5)
    with pytest.raises(ValueError, match="table must be one of silu_conv, silu_z"):
        PwlUnit(q, "tail")


@pytest.mark.parametrize("make", [
    lambda q: RmsNormUnit(q.norm_in, q.rsqrt, 4, 64), lambda q: ConvUnit(q, 4, 64),
    lambda q: GateUnit(q, 4)], ids=["norm", "conv", "gate"])
def test_units_lint_clean(layer, make, tmp_path):
    path = tmp_path / "rtl" / "unit.v"
    write_if_changed(path, emit(make(layer), "unit"))
    lint(path)
