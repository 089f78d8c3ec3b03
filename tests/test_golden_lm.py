"""Integer golden model of the whole language model: step == sequence, head exactness, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import BiMambaConfig
from model.evaluate.sqnr import sqnr_db
from model.golden.layer import rmsnorm_act
from model.golden.lm import GoldenLM, bits_per_byte, export_lm
from model.reference.lm import BiMambaLM
from model.golden.quantize import ExportError, QuantSpec

CFG = BiMambaConfig(d_model=64, n_layer=2, d_state=16, headdim=16, vocab_size=256)


def _trained_looking(lm: BiMambaLM, seed: int) -> BiMambaLM:
    """Norm gains and D away from their Mamba-2 init of 1, as a trained model has them, so a
    dropped or misplaced gain cannot pass unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", "mixer.D")):
                p.mul_(1 + 0.4 * torch.randn(p.shape, generator=g))
    return lm


@pytest.fixture(scope="module")
def lm_and_q():
    lm = _trained_looking(BiMambaLM(CFG, binary=True).init_weights(3).eval(), 3)
    calib = np.random.default_rng(7).integers(0, 256, 160)
    return lm, export_lm(lm, QuantSpec(), calib)


def test_step_equals_sequence_bit_exact(lm_and_q, rng):
    _, q = lm_and_q
    g = GoldenLM(q)
    toks = rng.integers(0, 256, 40)
    a, st = g.sequence(toks[:25])
    b, st = g.sequence(toks[25:], st)
    s = g.initial_state()
    outs = []
    for t in toks:
        o, s = g.step(int(t), s)
        outs.append(o)
    assert np.array_equal(np.concatenate([a, b]), np.stack(outs))
    for x, y in zip(s, st):
        assert np.array_equal(x.ssm, y.ssm) and np.array_equal(x.conv, y.conv)


def test_head_is_an_exact_integer_product(lm_and_q, rng):
    _, q = lm_and_q
    g = GoldenLM(q)
    res = q.layers[0].fmt["res"]
    h = rng.integers(res.min_int // 64, res.max_int // 64, (3, CFG.d_model))
    a = rmsnorm_act(q.layers[0], q.norm_f, h)
    assert a.min() >= -(1 << 7) and a.max() < 1 << 7
    want = [[sum(int(x) * int(w) for x, w in zip(row, wrow)) for wrow in q.head] for row in a]
    assert g.head(h).tolist() == want


def test_logits_track_the_float_model(lm_and_q, rng):
    lm, q = lm_and_q
    toks = rng.integers(0, 256, 64)
    got, _ = GoldenLM(q).sequence(toks)
    with torch.no_grad():
        ref, _ = lm(torch.as_tensor(toks))
    ref = ref.double().numpy()
    # The head sees the whole datapath: embedding, both layers, norm_f and its 8-bit head.
    assert sqnr_db(ref, got * q.logit_scale) > 25
    # Fewer head bits must cost accuracy: the SQNR follows the head's quantiser.
    calib = np.random.default_rng(7).integers(0, 256, 160)
    q4 = export_lm(lm, QuantSpec(head_bits=4), calib)
    got4, _ = GoldenLM(q4).sequence(toks)
    assert sqnr_db(ref, got4 * q4.logit_scale) < sqnr_db(ref, got * q.logit_scale) - 6


def test_bits_per_byte_is_cross_entropy_in_bits(rng):
    logits = rng.standard_normal((50, 256)) * 4
    targets = rng.integers(0, 256, 50)
    want = torch.nn.functional.cross_entropy(
        torch.as_tensor(logits), torch.as_tensor(targets), reduction="sum").item() / math.log(2)
    assert bits_per_byte(logits, targets) == pytest.approx(want, rel=1e-12)
    # A uniform model costs exactly 8 bits per byte.
    assert bits_per_byte(np.zeros((10, 256)), targets[:10]) == pytest.approx(80.0)


def test_export_and_input_errors(lm_and_q):
    lm, q = lm_and_q
    teacher = BiMambaLM(CFG, binary=False).init_weights(0)
    with pytest.raises(ValueError, match=r"lm must be a Bi-Mamba model \(binary=True\)"):
        export_lm(teacher, QuantSpec(), np.arange(10))
    with pytest.raises(ValueError, match=r"calib_tokens must have shape \(L >= 1,\), not \(0,\)"):
        export_lm(lm, QuantSpec(), np.array([], np.int64))
    big = _trained_looking(BiMambaLM(CFG, binary=True).init_weights(3).eval(), 3)
    with torch.no_grad():
        big.backbone.embedding.weight[5, 0] = 5000.0
    with pytest.raises(ExportError, match="embedding peak 5000 does not fit the residual format"):
        export_lm(big, QuantSpec(), np.arange(10))
    g = GoldenLM(q)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 256\), not \[0, 256\]"):
        g.sequence(np.array([0, 256]))
    with pytest.raises(TypeError, match="tokens must be integers, not float64"):
        g.sequence(np.array([1.0]))


def test_embedding_and_head_tables_round_the_float_embedding(lm_and_q):
    """Both tables are the tied embedding, each within half an LSB of its own format."""
    lm, q = lm_and_q
    emb = lm.backbone.embedding.weight.detach().double().numpy()
    res = q.layers[0].fmt["res"]
    assert np.abs(q.embedding * 2.0**-res.frac - emb).max() <= 2.0 ** -(res.frac + 1)
    assert np.abs(q.head * 2.0**-q.head_frac - emb).max() <= 2.0 ** -(q.head_frac + 1)
    # The head format uses its width: the peak needs the top bit of head_bits - 1.
    assert np.abs(q.head).max() >= 1 << (q.spec.head_bits - 2)
