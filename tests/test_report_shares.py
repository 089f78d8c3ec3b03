"""The report's shares at memory periods other than one beat a cycle: the memory's busy share,
the layer's share of its stream roofline and the design's share of the memory roofline
(``energy/report.py``: ``_design_point``, ``roofline_fraction``), each recomputed here from
bytes, bandwidth and cycles.

The engine is the 2.7B one of 1 GHz (128-byte beats, 32 x 32, 128 scan lanes), pinned so that its
stream stays the one counted by hand while the bandwidth changes: at 102.4 GB/s and 1 GHz the
memory delivers a beat every 5/4 cycles, at 51.2 GB/s every 5/2, at 128 GB/s every cycle, and at
204.8 GB/s still every cycle (the engine takes at most one). A share computed as if the memory
delivered a beat every cycle fails here at the first three.

The memory is ideal here (its whole peak sustained, no latency, no background power: the
arithmetic of the shares, counted by hand, is what is checked) and the head has Bi-Mamba's
32,000 rows; tests/test_memory_realism.py checks the memory's behaviour.
"""

import math
from fractions import Fraction

import pytest

from energy.estimator import Arch, estimate
from energy.report import main as report_main
from energy.report import preset_report
from model.config import get_preset

# 2.7B: d_model, d_inner, d_in_proj, heads, headdim, d_state, conv_dim, layers; vocabulary.
D, E, F, H, P, N, C, L = 2560, 5120, 10576, 80, 64, 128, 5376, 64
V = 32000
CLOCK = 10**9
BEAT = 128  # bytes: 32 x 32 bits
# One layer's stream of 1024-bit beats, counted from the stream layout (norm gains, in_proj's
# beta, row groups of folds and row constants, out_proj's, the scan and conv constants) in
# tests/test_energy.py (stream_beats_27b_by_hand).
LAYER_BEATS = 41091
# The whole model's: the embedding row (2560 24-bit values, 32 a beat), the layers, the final
# norm's gains (2560 of 16 bits, 32 a beat), the head (32000 rows of 2560 bytes, 20 beats each).
BEATS = 80 + L * LAYER_BEATS + 80 + V * 20
# Each layer's SSM state (16 bits) and conv state (3 inputs a channel, 16 bits), out and back.
SSM_BYTES, CONV_BYTES = H * P * N * 2, C * 3 * 2
STATE = L * 2 * (SSM_BYTES + CONV_BYTES)
SSM_WORDS, CONV_WORDS = H * P * N // 128, C // 32  # 128 lanes of state, 32 channels a word
# The minimal bytes of a token (tests/test_roofline.py): the 1-bit design and FP16.
MIN_BYTES, MIN_BYTES_FP16 = 584_088_064, 5_483_470_848
IDEAL = {"dram_efficiency": 1.0, "dram_latency_ns": 0.0, "dram_background_w": 0.0}
ENGINE = {"clock_hz": CLOCK, "simd": 32, "pe": 32, "lanes": 128, **IDEAL}

# (bandwidth in bytes/s, the memory's cycles per 128-byte beat at 1 GHz)
PERIODS = [(102.4e9, Fraction(5, 4)), (51.2e9, Fraction(5, 2)), (128e9, Fraction(1)),
           (204.8e9, Fraction(1))]


def _bytes_per_cycle(bw: float) -> Fraction:
    return Fraction(repr(bw)) / CLOCK


_REPORTS: dict[float, dict] = {}


def _report(bw: float) -> dict:
    if bw not in _REPORTS:
        _REPORTS[bw] = preset_report("2.7B", Arch(dram_bytes_per_s=bw, **ENGINE), vocab=V)
    return _REPORTS[bw]


def test_the_periods_are_the_bandwidths():
    for bw, period in PERIODS:
        assert max(Fraction(1), BEAT / _bytes_per_cycle(bw)) == period


@pytest.mark.parametrize("bw, period", PERIODS)
def test_the_memory_pace_and_the_layer_share(bw, period):
    """A layer's token takes at least its beats at the memory's period and at most the scan's
    5120 cycles more (the stream waits for the scan between in_proj and out_proj); its share of
    the stream roofline is those beats at that period over its cycles."""
    r = _report(bw)
    d = r["design_point"]
    assert (d["beat_bytes"], d["pe"], d["simd"], d["lanes"]) == (BEAT, 32, 32, 128)
    # The array holds a beat one cycle (8 planes at once): the memory sets the pace when it
    # needs at least that long for a beat (at 128 GB/s exactly as long).
    assert r["bound"] == ("memory" if BEAT / _bytes_per_cycle(bw) >= 1 else "compute")
    assert d["memory_pace"] == str(period) and d["memory_cycles_per_beat"] == float(period)
    assert d["beats_per_layer_token"] == LAYER_BEATS
    layer = d["layer_cycles_per_token"]
    assert LAYER_BEATS * period < layer <= LAYER_BEATS * period + H * P * N // 128
    assert d["layer_roofline_fraction"] == pytest.approx(
        float(LAYER_BEATS * period / layer), rel=1e-12)


@pytest.mark.parametrize("bw, period", PERIODS)
def test_the_memory_busy_share(bw, period):
    """Every byte the engine moves at the memory's bytes a cycle, over the token's cycles; the
    token takes at least every beat at the memory's period and every swap (SSM and conv words
    out and back at the memory's rate, a word a cycle at most), and at most 8 % more (the
    pipeline's fill around each swap and the head)."""
    r = _report(bw)
    d = r["design_point"]
    bpc = _bytes_per_cycle(bw)
    assert d["beats_per_token"] == BEATS
    assert d["state_bytes_per_token"] == STATE
    assert r["dram_bytes_per_token"] == BEATS * BEAT + STATE
    cycles = d["cycles_per_token"]
    assert r["cycles_per_token"] == cycles
    swap = max(2 * (SSM_BYTES + CONV_BYTES) / bpc, SSM_WORDS, CONV_WORDS)
    busy = BEATS * period + L * swap
    assert busy <= cycles <= Fraction(108, 100) * busy
    assert d["memory_busy_fraction"] == pytest.approx(
        float((BEATS * BEAT + STATE) / bpc / cycles), rel=1e-12)


def _fp16_cycles(bw: float) -> Fraction:
    """The FP16 baseline's cycles on the same 32 x 32 array and 128 lanes: each projection as
    fast as its words (80 x 331 and 160 x 80) or its FP16 weights' bytes allow, the scan, the
    element-wise stages on 32 lanes; the state out and back; the LM head as fast as its 256 MACs
    or its bytes allow."""
    bpc = _bytes_per_cycle(bw)
    layer = (max(80 * 331, 2 * D * F / bpc) + max(160 * 80, 2 * E * D / bpc)
             + Fraction(H * P * N, 128) + Fraction(3 * D + 3 * E + C, 32))
    state = 2 * (H * P * N * 2 + C * 3 * 2) * L
    emb = (V * D + 2 * D) * 2
    return L * layer + state / bpc + max(Fraction(V * D, 256), emb / bpc)


@pytest.mark.parametrize("bw, period", PERIODS)
def test_the_share_of_the_memory_roofline(bw, period):
    """The roofline is the bandwidth over the minimal bytes; the design's tokens/s are the clock
    over its cycles (never faster than its own bytes allow); the share is their ratio. The same
    for FP16, its cycles counted here."""
    r = _report(bw)
    cycles = r["design_point"]["cycles_per_token"]
    bw_exact = Fraction(repr(bw))
    assert r["roofline_tokens_per_s"] == pytest.approx(float(bw_exact / MIN_BYTES), rel=1e-12)
    tps = min(Fraction(CLOCK, cycles), bw_exact / (BEATS * BEAT + STATE))
    assert tps == Fraction(CLOCK, cycles)  # the memory's bytes are inside the cycles
    assert r["tokens_per_s"] == pytest.approx(float(tps), rel=1e-12)
    assert r["roofline_fraction"] == pytest.approx(float(tps * MIN_BYTES / bw_exact), rel=1e-12)
    # FP16: memory-bound on its weights, so its own stream's bytes set its pace.
    f_cycles = _fp16_cycles(bw)
    assert abs(r["cycles_per_token_fp16"] - f_cycles) <= 1  # rounded up, in floating point
    f_tps = min(CLOCK / f_cycles, bw_exact / MIN_BYTES_FP16)
    assert r["dram_bytes_per_token_fp16"] == MIN_BYTES_FP16
    assert r["tokens_per_s_fp16"] == pytest.approx(float(f_tps), rel=1e-7)
    assert r["roofline_fraction_fp16"] == pytest.approx(
        float(f_tps * MIN_BYTES_FP16 / bw_exact), rel=1e-7)
    assert r["speedup"] == pytest.approx(float(tps / f_tps), rel=1e-7)
    assert r["speedup_equal_bandwidth"] == pytest.approx(MIN_BYTES_FP16 / MIN_BYTES, rel=1e-12)


def test_the_shares_printed_at_a_beat_every_five_halves_cycles(capsys):
    """The Markdown report prints the pace and the shares computed here."""
    bw = 51.2e9
    assert report_main(["--preset", "2.7B", "--set", f"clock_hz={CLOCK}", "--set", "simd=32",
                        "--set", "pe=32",
                        "--set", "lanes=128", "--set", f"dram_bytes_per_s={bw:g}",
                        "--vocab", str(V)] + [a for k, v in IDEAL.items()
                                              for a in ("--set", f"{k}={v}")]) == 0
    out = capsys.readouterr().out
    d = _report(bw)["design_point"]
    cycles, layer = d["cycles_per_token"], d["layer_cycles_per_token"]
    busy = float((BEATS * BEAT + STATE) / _bytes_per_cycle(bw) / cycles)
    share = float(LAYER_BEATS * Fraction(5, 2) / layer)
    # A swap: 2 x 1,342,976 bytes at 51.2 a cycle, 52,460 cycles, over 5120 SSM words
    # (2623/256 cycles each) and 168 conv words (13115/42).
    swap = 2 * (SSM_BYTES + CONV_BYTES) / _bytes_per_cycle(bw)
    paces = f"{swap / SSM_WORDS}, {swap / CONV_WORDS}"
    assert paces == "2623/256, 13115/42"
    assert f"| 5/2 | {paces} | {BEATS} | {cycles} | {busy:.1%} | {share:.1%} |" in out
    roof = float(Fraction(CLOCK, cycles) * MIN_BYTES / Fraction(repr(bw)))
    roof_line = next(line for line in out.splitlines()
                     if line.startswith("| 2.7B | Bi-Mamba | ") and line.endswith(" % |"))
    assert roof_line.endswith(f"| {100 * roof:.0f} % |")


@pytest.mark.parametrize("bw, period", PERIODS[:2])
def test_the_prefill_at_the_memory_period(bw, period):
    """A prefill of 512 tokens (the report's default), per token: every layer's stream at the
    memory's period, the embedding row, and once per call the final norm's gains, the head rows
    and the state's swaps; its DRAM bytes likewise (energy/estimator.py's projection)."""
    T = 512
    r = _report(bw)
    bpc = _bytes_per_cycle(bw)
    layer = r["design_point"]["layer_cycles_per_token"]
    once = 80 + V * 20  # the final norm's gains and the head rows, in beats
    cycles = math.ceil(L * layer + 80 * period + (once * period + STATE / bpc) / T)
    dram = L * LAYER_BEATS * BEAT + Fraction(STATE, T) + 80 * BEAT + Fraction(once * BEAT, T)
    e = estimate(get_preset("2.7B"), Arch(dram_bytes_per_s=bw, **ENGINE), tokens=T)
    assert get_preset("2.7B").vocab_size == V
    assert e.cycles == cycles
    assert e.dram_bytes == pytest.approx(float(dram), rel=1e-12)
    assert e.actions["dram_embedding_bytes"] == pytest.approx(
        float(80 * BEAT + Fraction(once * BEAT, T)), rel=1e-12)
    assert e.actions["dram_state_bytes"] == pytest.approx(STATE / T, rel=1e-12)
    tps = min(Fraction(CLOCK, cycles), Fraction(repr(bw)) / dram)
    assert r["prefill_tokens"] == T
    assert r["prefill_tokens_per_s"] == pytest.approx(float(tps), rel=1e-12)
