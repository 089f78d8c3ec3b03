"""Export: determinism, packing, errors, and the accumulator widths it proves."""

import numpy as np
import pytest
import torch

from model.checkpoint import load_block, synthetic_state_dict
from model.config import get_preset
from model.evaluate import synthetic_residual
from model.quantize import ExportError, QuantSpec, export_layer, pack_signs

from .conftest import make_layer


def test_export_is_deterministic(tmp_path):
    _, a = make_layer("tiny", 4)
    _, b = make_layer("tiny", 4)
    _, c = make_layer("tiny", 5)
    assert a.digest() == b.digest() != c.digest()
    a.save(tmp_path / "layer.npz")
    z = np.load(tmp_path / "layer.npz")
    assert np.array_equal(z["in_proj.signs"], a.in_proj.signs)
    assert int(z["scalars.in_proj.beta_frac"]) == a.in_proj.beta_frac


def test_pack_signs_layout():
    sign = -np.ones((2, 70), np.int64)
    sign[0, 0] = sign[0, 64] = sign[1, 69] = 1
    w = pack_signs(sign)
    assert w.dtype == np.uint64 and w.shape == (2, 2)
    assert w[0].tolist() == [1, 1] and w[1].tolist() == [0, 1 << 5]  # pad bits stay 0


def test_packed_signs_follow_weights_zero_is_plus_one():
    block, q = make_layer("tiny", 0)
    w = block.mixer.in_proj.weight.detach().clone()
    assert np.array_equal(q.in_proj.sign_matrix(), np.where(w.numpy() >= 0, 1, -1))
    assert q.in_proj.popcount_w.tolist() == (w.numpy() >= 0).sum(1).tolist()


def test_zero_fbi_scale_is_rejected():
    cfg = get_preset("tiny")
    sd = synthetic_state_dict(cfg, 0, n_layers=1)
    sd["backbone.layers.0.mixer.out_proj.wscale"][0, 3] = 0.0
    block = load_block(sd, cfg, 0, torch.float64)
    with pytest.raises(ExportError, match="mixer.out_proj.wscale is 0 at column 3"):
        export_layer(block, QuantSpec(), synthetic_residual(cfg, 8, 1))


def test_calibration_shape_is_checked():
    block, _ = make_layer("tiny", 0)
    with pytest.raises(ValueError, match=r"calib_u must have shape \(L >= 1, d_model=64\), not \(4, 65\)"):
        export_layer(block, QuantSpec(), np.zeros((4, 65)))
    with pytest.raises(ValueError, match=r"calib_u must have shape .* not None"):
        export_layer(block, QuantSpec())


@pytest.mark.parametrize("kw, msg", [
    (dict(act_bits=0), r"act_bits must be an integer in \[1, 16\], not 0"),
    (dict(act_bits=17), r"act_bits must be an integer in \[1, 16\], not 17"),
    (dict(state_bits=3), r"state_bits must be an integer in \[4, 32\], not 3"),
    (dict(res_frac=30), r"res_frac must be an integer in \[0, 24\], not 30"),
    (dict(res_bits=12, res_frac=12), r"res_frac must be in \[0, res_bits - 1\] = \[0, 11\]"),
    (dict(headroom=0.5), "headroom must be a number >= 1"),
])
def test_spec_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        QuantSpec(**kw)


def test_too_wide_accumulator_is_rejected():
    block, _ = make_layer("tiny", 0)
    spec = QuantSpec(res_bits=32, res_frac=24, act_bits=16, scale_bits=24, param_bits=24)
    with pytest.raises(ExportError, match=r"norm_in.sum_sq needs 70 bits \(> 62\): n \* 2\^\(2\(b_in-1\)\) \+ eps_q"):
        export_layer(block, spec, synthetic_residual(block.cfg, 8, 1))


def test_projection_acc_bound_is_reached(tiny_layer):
    # All weights +1 and every activation at its minimum reach the acc bound exactly.
    from model.golden import xnor_popcount_matvec
    from dataclasses import replace
    _, q = tiny_layer
    p = q.in_proj
    ones = pack_signs(np.ones((2, p.d_in)))
    p1 = replace(p, d_out=2, signs=ones, popcount_w=np.full(2, p.d_in))
    acc = xnor_popcount_matvec(p1, np.full(p.d_in, -p.act.max_abs))
    assert acc.tolist() == [-p.acc_bound] * 2


def test_every_accumulator_fits_and_is_listed(tiny_layer):
    from model.bounds import MAX_BITS, accumulators, markdown
    _, q = tiny_layer
    accs = accumulators(q)
    assert len({a.name for a in accs}) == len(accs)
    assert all(0 < a.bits <= MAX_BITS for a in accs)
    table = markdown(q)
    assert all(a.name in table for a in accs) and "| ssm | SQ(16," in table


@pytest.mark.parametrize("act_bits", [1, 4, 12])
def test_other_widths_export_and_run(act_bits):
    from model.golden import GoldenLayer
    _, q = make_layer("tiny", 0, QuantSpec(act_bits=act_bits, state_bits=12))
    layer = GoldenLayer(q)
    out, st = layer.step(q.fmt["res"].quantize(np.ones(64)), layer.initial_state())
    assert out.dtype == np.int64 and np.abs(st.ssm).max() < 1 << 11
