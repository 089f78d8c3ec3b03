"""Export: determinism, packing, errors, and the accumulator widths it proves."""

import numpy as np
import pytest
import torch

from model.reference.checkpoint import load_block, synthetic_state_dict
from model.config import get_preset
from model.reference.checkpoint import synthetic_residual
from model.golden.quantize import ExportError, QuantSpec, export_layer, pack_signs

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
    block, _ = make_layer("tiny", 0)
    with torch.no_grad():
        block.mixer.in_proj.weight[0, :4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
    q = export_layer(block, QuantSpec(), synthetic_residual(block.cfg, 8, 1))
    w = block.mixer.in_proj.weight.detach().numpy()
    assert q.in_proj.sign_matrix()[0, :4].tolist() == [1, 1, 1, -1]  # +0 and -0 both +1
    assert np.array_equal(q.in_proj.sign_matrix(), np.where(w >= 0, 1, -1))
    assert q.in_proj.popcount_w.tolist() == (w >= 0).sum(1).tolist()


def test_beta_over_param_range_is_rejected():
    block, _ = make_layer("tiny", 0)
    with torch.no_grad():
        block.mixer.in_proj.wbias[0, 7] = 4e4 * block.mixer.in_proj.wscale[0, 7]
    with pytest.raises(ExportError, match=r"mixer.in_proj: max \|wbias / wscale\| = 4e\+04"):
        export_layer(block, QuantSpec(), synthetic_residual(block.cfg, 8, 1))


def test_digest_covers_spec_and_tables():
    block, a = make_layer("tiny", 0)
    b = export_layer(block, QuantSpec(exp_in_frac=10), synthetic_residual(block.cfg, 32, 1))
    assert a.digest() != b.digest()
    assert a.scalars()["spec.exp_in_frac"] == 16 and a.scalars()["exp2.in_frac"] == 16
    assert a.scalars()["silu_conv.right"] == "identity"


def test_constants_never_saturate():
    from model.golden.quantize import quantize_param
    q, frac = quantize_param(np.array([0.99999, -0.5]), 16, "c")
    # Q(16, 15) would round 0.99999 onto the rail (32767 = 0.99997, error > half an LSB).
    assert abs(q[0] / 2**frac - 0.99999) <= 2**-(frac + 1)


def test_calibrate_leaves_the_block_alone():
    from model.golden.quantize import calibrate
    block, _ = make_layer("tiny", 0)
    block = block.float()
    calibrate(block, synthetic_residual(block.cfg, 2, 0))
    assert block.mixer.in_proj.weight.dtype == torch.float32


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
    from model.golden.layer import xnor_popcount_matvec
    from dataclasses import replace
    _, q = tiny_layer
    p = q.in_proj
    ones = pack_signs(np.ones((2, p.d_in)))
    p1 = replace(p, d_out=2, signs=ones, popcount_w=np.full(2, p.d_in))
    acc = xnor_popcount_matvec(p1, np.full(p.d_in, -p.act.max_abs))
    assert acc.tolist() == [-p.acc_bound] * 2


def test_every_accumulator_fits_and_is_listed(tiny_layer):
    from model.golden.bounds import MAX_BITS, accumulators, markdown
    _, q = tiny_layer
    accs = accumulators(q)
    assert len({a.name for a in accs}) == len(accs)
    assert all(0 < a.bits <= MAX_BITS for a in accs)
    table = markdown(q)
    assert all(a.name in table for a in accs) and "| ssm | SQ(16," in table


@pytest.mark.parametrize("act_bits", [1, 4, 12])
def test_other_widths_export_and_run(act_bits):
    from model.golden.layer import GoldenLayer
    _, q = make_layer("tiny", 0, QuantSpec(act_bits=act_bits, state_bits=12))
    layer = GoldenLayer(q)
    out, st = layer.step(q.fmt["res"].quantize(np.ones(64)), layer.initial_state())
    assert out.dtype == np.int64 and np.abs(st.ssm).max() < 1 << 11


def test_spec_document_lists_the_computed_widths(capsys):
    # docs/fixed_point.md section 9 is generated by `python -m model.golden --preset 780M`;
    # it must not drift from the code.
    from pathlib import Path

    from model.config import get_preset
    from model.evaluate.sqnr import prepare
    from model.golden.__main__ import main

    assert main(["--preset", "780M"]) == 0
    table = capsys.readouterr().out
    doc = (Path(__file__).parent.parent / "docs" / "fixed_point.md").read_text()
    headers = {"| tensor | format | LSB |", "| intermediate | bound | bits |"}
    rows = [r for r in table.splitlines()
            if r.startswith("| ") and r not in headers and "2^-" not in r]
    missing = [r for r in rows if r not in doc]
    assert len(rows) == 29 and not missing, missing
    # The format table of section 10 (written two formats per row), of the export that
    # `python -m model.evaluate.layer` evaluates at the same seed.
    p = prepare(get_preset("780M"), 1, 0)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    for name, f in q.fmt.items():
        assert f"| {name} | {f} |" in doc, name
    assert f"| {q.fmt['dt']} | 2^-{q.fmt['dt'].frac} |" in table


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_calibration_trace_equals_the_decode_step(preset):
    """calibrate() runs the chunked sequence path plus a NumPy state recurrence; every traced
    tensor must be the decode step's, across chunk boundaries, to float64 rounding."""
    import copy

    from model.golden.quantize import CALIB_CHUNK, calibrate

    block, _ = make_layer(preset, 0)
    u = synthetic_residual(block.cfg, CALIB_CHUNK + 37, 3)
    fast = calibrate(block, u)
    b = copy.deepcopy(block).double()
    rec: dict = {}
    with torch.no_grad():
        st = b.initial_state(torch.float64)
        for t in range(u.shape[0]):
            tr: dict = {}
            _, st = b.step(torch.as_tensor(u[t]), st, tr)
            for k, v in tr.items():
                rec.setdefault(k, []).append(v.numpy().copy())
    for k, v in rec.items():
        want = np.stack(v)
        assert fast[k].shape == want.shape, k
        assert np.abs(fast[k] - want).max() <= 1e-12 * np.abs(want).max(), k
