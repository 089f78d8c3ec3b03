"""The layer engine (rtl/layer.py) bit-exact against GoldenLayer, its cycles against its
formula, and the packer's weight stream (rtl/packer.py)."""

from pathlib import Path

import numpy as np
import pytest
from amaranth import Fragment, Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from cosim.layer import LayerCase, random_residual, run_layer_case
from model.golden.quantize import QuantSpec
from rtl.emit import emit, lint, write_if_changed
from rtl.layer import SECTIONS, BiMambaLayer, LayerConfig, section_demux
from rtl.packer import layer_beats, layer_sections

from .conftest import SEEDS, make_layer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def q():
    return make_layer("tiny", 0)[1]


@pytest.fixture(scope="module")
def lc(q):
    return LayerConfig(q, simd=16, pe=4, lanes=4)


def _check(res, case_tokens):
    assert res["mismatches"]["o"] == 0, res["first_mismatch"]
    assert len(res["last_out"]) == case_tokens


def test_64_decode_tokens_bit_exact_cycles_equal_formula(q, lc):
    rng = np.random.default_rng(0)
    res = run_layer_case(LayerCase("tiny_64", [lc], random_residual(q, 64, rng)))
    _check(res, 64)
    assert res["last_out"][0] == res["predicted_first"]
    assert res["spacing"] == [res["predicted_spacing"]] * 63


def test_stalls_and_sequence_restarts(q, lc, seed):
    """Random pauses on u, o and the weight stream; new sequences at tokens 0 and 5."""
    rng = np.random.default_rng(seed)
    starts = np.zeros(8, bool)
    starts[5] = True
    res = run_layer_case(LayerCase(f"tiny_stalls_{seed}", [lc], random_residual(q, 8, rng),
                                   starts, idle=0.3, backpressure=0.3, bubble=0.3, seed=seed))
    _check(res, 8)


def test_reset_mid_token(q, lc):
    """Reset inside token 1 (its in_proj), then the whole run again from token 0: no state
    survives the reset (the first token after it begins a sequence)."""
    rng = np.random.default_rng(5)
    at = lc.schedule(first=True).last_out + lc.schedule().ends["in_proj"] // 2
    res = run_layer_case(LayerCase("tiny_reset", [lc], random_residual(q, 3, rng),
                                   reset_at=at, seed=5))
    _check(res, 3)


def test_heads_not_a_multiple_of_pe_lanes_at_d_state_first_token_unmarked(q):
    """A configuration the others never reach: 16 element-wise lanes for 8 heads (the last
    group of a head's lanes is partly idle), 16 scan lanes (all of d_state), a square 16 x 16
    array. Token 0 comes without start, before and after a reset inside token 2 (the RAMs
    start random, so only the units' own first-token rule gives zero state); outputs held
    for long runs (95 % backpressure: a hold outlasts a row group's folds) and pauses on u and
    the weight stream."""
    seed = SEEDS[-1]  # one seed: the case is slow under its long holds
    print(f"seed={seed} (replay with BIMAMBA_SEED={seed})")
    lc16 = LayerConfig(q, simd=16, pe=16, lanes=16)
    assert q.cfg.nheads % lc16.pe != 0 and lc16.lanes == q.cfg.d_state
    rng = np.random.default_rng(seed)
    starts = np.zeros(6, bool)
    starts[4] = True
    u = random_residual(q, 6, rng)
    res = run_layer_case(LayerCase("tiny_pe16", [lc16], u, starts))
    _check(res, 6)
    assert res["last_out"][0] == res["predicted_first"]
    assert res["spacing"] == [res["predicted_spacing"]] * 5
    at = 2 * lc16.schedule().token_cycles + lc16.schedule().ends["in_proj"] // 2
    res = run_layer_case(LayerCase(f"tiny_pe16_stalls_{seed}", [lc16], u, starts, idle=0.3,
                                   backpressure=0.95, bubble=0.3, reset_at=at, seed=seed))
    _check(res, 6)


def test_memory_bound_and_compute_bound(q, lc):
    """A beat every 2 cycles after 9 cycles of latency (memory-bound), and 2 planes a cycle
    (compute-bound: each weight beat held 4 cycles): cycles equal the formula in both."""
    rng = np.random.default_rng(6)
    u = random_residual(q, 3, rng)
    slow = run_layer_case(LayerCase("tiny_slow_memory", [lc], u, period=2, latency=9))
    _check(slow, 3)
    assert slow["last_out"][0] == slow["predicted_first"]
    assert slow["spacing"][1:] == [slow["predicted_spacing"]]
    lc2 = LayerConfig(q, simd=16, pe=4, lanes=4, planes=2)
    serial = run_layer_case(LayerCase("tiny_planes2", [lc2], u))
    _check(serial, 3)
    assert serial["last_out"][0] == serial["predicted_first"]
    assert serial["spacing"] == [serial["predicted_spacing"]] * 2
    assert lc2.schedule().token_cycles > lc.schedule().token_cycles


def test_two_chained_layers(q, lc):
    q1 = make_layer("tiny", 1)[1]
    lc1 = LayerConfig(q1, simd=16, pe=4, lanes=2)
    rng = np.random.default_rng(7)
    starts = np.zeros(4, bool)
    starts[2] = True
    res = run_layer_case(LayerCase("tiny_chain", [lc, lc1], random_residual(q, 4, rng), starts,
                                   backpressure=0.2, bubble=0.2, seed=7))
    _check(res, 4)


def test_section_beats_by_hand(q, lc):
    """tiny (D 64, E 128, N 16, H 8, K 4), pe 4 x simd 16 = 64-bit beats, 8-bit activations."""
    c = q.cfg
    assert (c.d_model, c.d_inner, c.d_state, c.nheads, c.d_conv) == (64, 128, 16, 8, 4)
    F = 2 * 128 + 2 * 16 + 8  # in_proj rows
    gain = -(-4 * 16 // 64)  # 4 gains of 16 bits a record
    corr_in, corr_out = (64 * 128).bit_length() + 1, (128 * 128).bit_length() + 1
    rc_in, rc_out = -(-4 * (corr_in + 16) // 64), -(-4 * (corr_out + 16) // 64)
    beta = -(-16 * 16 // 64)
    cw = max(16, q.fmt["dt_in"].bits)
    bias = int(np.abs(q.conv_b).max()).bit_length() + 1
    want = {
        "norm_in": 64 // 4 * gain,
        "in_proj": 64 // 16 * beta + -(-F // 4) * (64 // 16 + rc_in),
        "scan": -(-3 * 8 // (64 // cw)),
        "conv": (128 + 32) // 4 * -(-4 * (4 * 16 + bias) // 64),
        "norm_out": 128 // 4 * gain,
        "out_proj": 128 // 16 * beta + 64 // 4 * (128 // 16 + rc_out),
    }
    assert lc.section_beats() == want
    assert lc.bytes_per_token == sum(want.values()) * 8
    beats = layer_beats(lc)
    assert len(beats) == sum(want.values()) and all(0 <= b < 1 << 64 for b in beats)


def test_packed_sections_read_back(q, lc):
    """Fields read back from the beats by offset: gains, the in_proj row order (z, B, C, x,
    dt) and the conv's channel order (B, C, then x)."""
    sec = layer_sections(lc)
    g = q.norm_in.gain
    for i in (0, 5, 63):
        v = (sec["norm_in"][i // 4] >> (16 * (i % 4))) & 0xFFFF
        assert v - ((v >> 15) << 16) == g[i]
    E, N = 128, 16
    order = lc.in_proj_rows()
    assert list(order[:E]) == list(range(E))  # z
    assert list(order[E:E + 2 * N]) == list(range(2 * E, 2 * E + 2 * N))  # B, C
    assert list(order[E + 2 * N:E + 2 * N + E]) == list(range(E, 2 * E))  # x
    sign = q.in_proj.sign_matrix() > 0
    beta_beats = 4 * 4
    rc = -(-4 * ((64 * 128).bit_length() + 1 + 16) // 64)
    r = E // 4  # the first row group of B
    word = sec["in_proj"][beta_beats + r * (4 + rc)]
    assert all(((word >> (lane * 16 + j)) & 1) == sign[2 * E + lane, j]
               for lane in range(4) for j in range(16))
    conv = lc.conv_order()
    assert list(conv[:2 * N]) == list(range(E, E + 2 * N)) and list(conv[2 * N:]) == list(range(E))
    w0 = sec["conv"][0] & 0xFFFF  # tap 0 of the first channel: B[0], i.e. xBC channel E
    assert w0 - ((w0 >> 15) << 16) == q.conv_w[E, 0]


def test_config_errors(q):
    with pytest.raises(ValueError, match=r"simd must divide d_model = 64 \(one of \[1, 2, 4, 8, 16, "
                                         r"32, 64\]\), not 24"):
        LayerConfig(q, simd=24, pe=4, lanes=4)
    with pytest.raises(ValueError, match=r"pe must divide simd = 16 .*, not 3"):
        LayerConfig(q, simd=16, pe=3, lanes=4)
    with pytest.raises(ValueError, match=r"lanes must divide d_state = 16 .*, not 5"):
        LayerConfig(q, simd=16, pe=4, lanes=5)
    with pytest.raises(ValueError, match=r"planes must be in \[1, act_bits = 8\], not 9"):
        LayerConfig(q, simd=16, pe=4, lanes=4, planes=9)
    with pytest.raises(ValueError, match=r"simd must be a positive integer, not 0"):
        LayerConfig(q, simd=0, pe=4, lanes=4)
    q1 = make_layer("tiny", 0, QuantSpec(act_bits=1))[1]
    with pytest.raises(ValueError, match=r"act_bits must be in \[2, 16\] for the layer engine, not 1"):
        LayerConfig(q1, simd=16, pe=4, lanes=4)
    with pytest.raises(ValueError, match="period must be a number >= 1, not 0"):
        LayerConfig(q, simd=16, pe=4, lanes=4).schedule(period=0)
    with pytest.raises(TypeError, match="config must be a LayerConfig"):
        BiMambaLayer(q)


def test_sized_for_reaches_the_roofline():
    """Sized for 64 bytes a cycle, a 2.7B-shaped layer's formula gives >= 90 % of the memory
    roofline; the array eats one 512-bit beat a cycle, bit-parallel."""
    q27 = make_layer("2.7B", 0, perturb=False)[1]
    lc = LayerConfig.sized_for(q27, 64)
    assert (lc.pe * lc.simd, lc.planes, lc.beat_bits) == (512, None, 512)
    s = lc.schedule()
    assert s.memory_cycles == lc.beats_per_token
    assert lc.roofline_fraction() >= 0.9
    assert s.token_cycles >= lc.beats_per_token  # never faster than the memory
    with pytest.raises(ValueError, match="bytes_per_cycle = 3: no pe x simd = 24 bits divides"):
        LayerConfig.sized_for(q27, 3)


def test_lint_clean(lc, tmp_path):
    path = tmp_path / "anywhere" / "layer.v"
    write_if_changed(path, emit(BiMambaLayer(lc), "layer"))
    lint(path)


def test_sections_order_matches_stream():
    assert SECTIONS == ("norm_in", "in_proj", "scan", "conv", "norm_out", "out_proj")


@pytest.mark.slow
@pytest.mark.parametrize("preset,tokens", [("780M", 2), ("2.7B", 1)])
def test_real_shape_layers(preset, tokens):
    """The engine sized for 64 bytes a cycle on a synthetic 780M- and 2.7B-shaped layer: every
    output bit, and cycles equal to the formula (make sim runs the 2.7B one)."""
    from cosim.run import preset_layer_case

    case = preset_layer_case(preset, tokens, 64)
    res = run_layer_case(case)
    _check(res, tokens)
    assert res["last_out"][0] == res["predicted_first"]
    assert res["spacing"] == [res["predicted_spacing"]] * (tokens - 1)
    assert case.configs[0].roofline_fraction() >= 0.9


class _Demux(wiring.Component):
    """section_demux between one stream and four targets, every port driven by a testbench."""

    def __init__(self, beats: list[int]) -> None:
        self.beats = beats
        super().__init__({"mem": In(stream.Signature(unsigned(16))),
                          **{f"t{i}": Out(stream.Signature(unsigned(16)))
                             for i in range(len(beats))}})

    def elaborate(self, platform):
        m = Module()
        section_demux(m, self.mem, [getattr(self, f"t{i}") for i in range(len(self.beats))],
                      self.beats)
        return m


@pytest.mark.parametrize("beats", [[1, 3, 1, 2], [2, 1, 1, 1], [4, 2, 5, 3], [1, 1, 1, 1]])
def test_section_demux_routes_each_beat_to_its_section(beats, seed):
    """Random valid and readies: beat k of the stream (numbered) goes to the target whose
    section holds k mod the beats of a round, nothing else is offered to any other target,
    and the stream is ready exactly when that target is (sections of one beat included)."""
    print(f"seed {seed}, beats {beats}")
    dut = _Demux(beats)
    n, total = len(beats), sum(beats)
    owner = [i for i, b in enumerate(beats) for _ in range(b)]  # target of each beat in a round
    rng = np.random.default_rng(seed)
    got = [[] for _ in range(n)]

    async def tb(ctx):
        k = 0
        for _ in range(400):
            valid = int(rng.random() < 0.7)
            readies = [int(rng.random() < 0.6) for _ in range(n)]
            ctx.set(dut.mem.valid, valid)
            ctx.set(dut.mem.payload, k)
            for i in range(n):
                ctx.set(getattr(dut, f"t{i}").ready, readies[i])
            want = owner[k % total]
            for i in range(n):
                t = getattr(dut, f"t{i}")
                assert ctx.get(t.valid) == (valid and i == want), (seed, k, i)
                if ctx.get(t.valid) and readies[i]:
                    got[i].append(ctx.get(t.payload))
            assert ctx.get(dut.mem.ready) == readies[want], (seed, k)
            if valid and readies[want]:
                k += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for i in range(n):
        assert got[i] and all(owner[b % total] == i for b in got[i]), (seed, i)


def test_section_demux_refuses_bad_beats():
    with pytest.raises(ValueError, match=r"beats must be 2 whole numbers >= 1 \(one a target\), "
                                         r"not \[3, 0\]"):
        Fragment.get(_Demux([3, 0]), None)
