"""Weight-streaming XNOR-popcount projection (rtl/stream_projection.py) and its packer:
bit-exact against the golden projection, every bit-plane grouping, stalls on every stream, and
cycles equal to the unit's formula."""

import numpy as np
import pytest

from cosim.projection import random_projection, random_tokens
from cosim.stages import projection_case, run_stage
from rtl.emit import emit, lint, write_if_changed
from rtl.packer import projection_beats, split_record
from rtl.stream_projection import StreamProjection, StreamProjectionConfig


def _case(d_in, d_out, simd, pe, planes, act_bits=8, tokens=3, seed=0, rows=None, sign=None,
          **kw):
    rng = np.random.default_rng(seed)
    p = random_projection(d_in, d_out, act_bits, rng, sign=sign)
    cfg = StreamProjectionConfig.from_projection(p, simd, pe, planes)
    toks = random_tokens(p, tokens, rng)
    return cfg, p, toks, run_stage(projection_case(
        f"p{d_in}x{d_out}s{simd}p{pe}k{planes}b{act_bits}_{seed}_{len(kw)}", cfg, p, toks,
        rows=rows, seed=seed, **kw))


@pytest.mark.parametrize("d_in,d_out,simd,pe,planes,act_bits", [
    (64, 40, 16, 4, 8, 8),   # bit-parallel, a padded last row group
    (64, 40, 16, 4, 1, 8),   # bit-serial
    (64, 40, 16, 4, 3, 8),   # 3 + 3 + 2 planes: the last group is partial
    (96, 33, 32, 8, 2, 6),
    (32, 16, 2, 1, 2, 2),    # two-bit activations, one row a beat
])
def test_bit_exact_and_cycles(d_in, d_out, simd, pe, planes, act_bits):
    cfg, p, toks, res = _case(d_in, d_out, simd, pe, planes, act_bits)
    assert res["mismatches"]["out"] == 0, res["first_mismatch"]
    out = res["out_cycles"]["out"]
    R = cfg.row_groups
    t0 = res["in_cycles"]["act"][0]
    lasts = [out[(t + 1) * R - 1] - t0 for t in range(len(toks))]
    assert lasts[0] == cfg.token_cycles + cfg.latency
    assert all(b - a == cfg.token_cycles for a, b in zip(lasts, lasts[1:]))
    # Every weight bit crosses the stream once per token.
    assert res["in_cycles"]["mem"][-1] - res["in_cycles"]["mem"][0] + 1 >= cfg.mem_beats


def test_stalls_on_every_stream_never_change_a_bit():
    cfg, p, toks, res = _case(64, 40, 16, 4, 8, seed=3, idle=0.3, backpressure=0.3,
                              memory=dict(bubble=0.3))
    assert res["mismatches"]["out"] == 0, res["first_mismatch"]


def test_output_stalls_longer_than_several_row_groups():
    """The output held for many row groups at a time (97 % backpressure): the array must stop
    with its two-entry output buffer full rather than accumulate on, and not a bit changes."""
    cfg, p, toks, res = _case(64, 40, 16, 4, 8, tokens=2, seed=5, backpressure=0.97)
    print("seed=5")
    assert res["mismatches"]["out"] == 0, res["first_mismatch"]
    out = res["out_cycles"]["out"]
    group = cfg.folds * cfg.cycles_per_weight + cfg.rc_beats  # cycles of one row group
    assert max(b - a for a, b in zip(out, out[1:])) > 4 * group


def test_slow_memory_and_row_order():
    """A beat every 3 cycles after a latency of 5; rows leave in a permuted order."""
    rows = np.random.default_rng(1).permutation(7)
    cfg, p, toks, res = _case(48, 7, 8, 8, 4, act_bits=4, rows=rows, memory=dict(period=3,
                                                                                 latency=5))
    assert res["mismatches"]["out"] == 0, res["first_mismatch"]
    mem = res["in_cycles"]["mem"]
    assert min(b - a for a, b in zip(mem, mem[1:])) == 3 and mem[0] >= 5


def test_rails():
    """All weights +1 against the most negative codes: |acc| at its bound."""
    sign = np.ones((24, 64), np.int64)
    cfg, p, toks, res = _case(64, 24, 16, 8, 8, sign=sign, tokens=2)
    assert res["mismatches"]["out"] == 0, res["first_mismatch"]


def test_packer_layout_independently():
    """Bit p*simd + j of the beat of (row group r, fold f) is the sign of row r*pe + p,
    column f*simd + j; read back from the beats without the packer's own helpers."""
    rng = np.random.default_rng(2)
    p = random_projection(64, 10, 8, rng)
    cfg = StreamProjectionConfig.from_projection(p, 16, 4)
    beats = projection_beats(cfg, p)
    assert len(beats) == cfg.mem_beats
    S, P, F = 16, 4, 4
    sign = p.sign_matrix() > 0
    base = F * cfg.beta_beats
    for r in range(cfg.row_groups):
        for f in range(F):
            word = beats[base + r * (F + cfg.rc_beats) + f]
            for lane in range(P):
                row = r * P + lane
                for j in range(S):
                    bit = (word >> (lane * S + j)) & 1
                    assert bit == (sign[row, f * S + j] if row < p.d_out else 0)
    # beta of column 0 is the low beta_bits of the first beat, two's complement
    b0 = beats[0] & ((1 << cfg.beta_bits) - 1)
    assert b0 - ((b0 >> (cfg.beta_bits - 1)) << cfg.beta_bits) == p.beta[0]
    with pytest.raises(ValueError, match="does not fit 1 beats of 8 bits"):
        split_record(1 << 8, 1, 8)


def test_config_errors():
    with pytest.raises(ValueError, match=r"simd must divide d_in = 48 \(one of \[1, 2, 3, 4, 6, 8, "
                                         r"12, 16, 24, 48\]\), not 32"):
        StreamProjectionConfig(48, 8, 32, 4)
    with pytest.raises(ValueError, match=r"pe must divide simd = 16 .*, not 3"):
        StreamProjectionConfig(48, 8, 16, 3)
    with pytest.raises(ValueError, match=r"planes must be an integer in \[1, 4\], not 5"):
        StreamProjectionConfig(48, 8, 16, 4, act_bits=4, planes=5)
    with pytest.raises(ValueError, match=r"act_bits must be an integer in \[2, 16\], not 1"):
        StreamProjectionConfig(48, 8, 16, 4, act_bits=1, planes=1)
    with pytest.raises(TypeError, match="config must be a StreamProjectionConfig"):
        StreamProjection("x")


def test_mem_beats_formula():
    c = StreamProjectionConfig(2560, 10576, 32, 16, beta_bits=16, mult_bits=16)
    # 80 folds of one beta beat; 661 row groups of 80 weight beats and a 2-beat record
    assert (c.folds, c.row_groups, c.beta_beats, c.corr_bits, c.rc_beats) == (80, 661, 1, 20, 2)
    assert c.mem_beats == 80 + 661 * 82
    assert StreamProjectionConfig(2560, 10576, 32, 16, planes=1).slot_cycles == 80 + 661 * (
        80 * 8 + 2)


def test_lint_clean(tmp_path):
    cfg = StreamProjectionConfig(64, 40, 16, 4, planes=3)
    path = tmp_path / "out" / "sp.v"
    write_if_changed(path, emit(StreamProjection(cfg), "sp"))
    lint(path)
