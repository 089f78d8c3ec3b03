"""Integer golden model: popcount identity, stage corners, step == sequence, accuracy budget."""

import json
from dataclasses import replace

import numpy as np
import pytest

from model.golden import layer as G
from model.evaluate.sqnr import (
    LAYER_OUT_BUDGET_DB, STAGE_FLOORS_DB, evaluate, failed_stages, golden_trace, prepare,
)
from model.evaluate.layer import main
from model.config import get_preset
from model.golden.quantize import ActQuant, QuantSpec, pack_signs

from .conftest import make_layer


def _proj(q, sign, bits):
    """A BinaryProjection with the given sign matrix and activation width."""
    d_out, d_in = sign.shape
    packed = pack_signs(sign)
    return replace(q.in_proj, d_in=d_in, d_out=d_out, act=ActQuant(bits, 1.0), signs=packed,
                   popcount_w=np.bitwise_count(packed).sum(1, dtype=np.int64),
                   beta=np.zeros(d_in, np.int64), mult=np.ones(d_out, np.int64))


def _act_range(bits):
    return (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


@pytest.mark.parametrize("bits", [1, 2, 3, 8, 12, 16])
@pytest.mark.parametrize("d_in", [1, 63, 64, 65, 200])
def test_xnor_popcount_equals_integer_matmul(tiny_layer, bits, d_in, rng):
    _, q = tiny_layer
    sign = np.where(rng.random((7, d_in)) < 0.5, -1, 1)
    p = _proj(q, sign, bits)
    lo, hi = _act_range(bits)
    for a in (rng.integers(lo, hi + 1, d_in), np.full(d_in, lo), np.full(d_in, hi),
              np.zeros(d_in, np.int64) + (1 if bits == 1 else 0)):
        if bits == 1:
            a = np.where(a >= 0, 1, -1)
        got = G.xnor_popcount_matvec(p, a)
        # Independent check: Python integers straight from the +-1 signs.
        want = [sum(int(s) * int(x) for s, x in zip(row, a)) for row in sign]
        assert got.tolist() == want
        assert G.integer_matvec(p, a).tolist() == want


@pytest.mark.parametrize("bits, d_in", [(8, 200), (16, 65), (16, 1024), (1, 64), (12, 4096)])
def test_batched_sign_matmul_equals_per_token_xnor_popcount(tiny_layer, bits, d_in, rng):
    """The batch form of project() gives the XNOR-popcount integers, at the rails too."""
    _, q = tiny_layer
    sign = np.where(rng.random((5, d_in)) < 0.5, -1, 1)
    p = _proj(q, sign, bits)
    lo, hi = _act_range(bits)
    a = rng.integers(lo, hi + 1, (G.BATCH_TOKENS + 3, d_in))
    a[0], a[1] = lo, hi
    if bits == 1:
        a = np.where(a >= 0, 1, -1)
    per_token = np.stack([G.xnor_popcount_matvec(p, t) for t in a])
    assert np.array_equal(G.sign_matmul(p, a), per_token)
    assert np.array_equal(G.project(p, a), np.stack([G.project(p, t[None])[0] for t in a]))


@pytest.mark.parametrize("fill", [1, -1])
def test_projection_all_equal_weights_at_extremes(tiny_layer, fill):
    _, q = tiny_layer
    d_in = 100
    p = _proj(q, np.full((3, d_in), fill), 8)
    for a, val in ((np.full(d_in, 127), 127), (np.full(d_in, -128), -128)):
        assert G.xnor_popcount_matvec(p, a).tolist() == [fill * val * d_in] * 3
    single = np.zeros(d_in, np.int64)
    single[37] = 1
    assert G.xnor_popcount_matvec(p, single).tolist() == [fill] * 3


def test_project_full_path_and_saturation(tiny_layer, rng):
    _, q = tiny_layer
    p = q.in_proj
    a = rng.integers(-128, 128, (5, p.d_in))
    s = p.sign_matrix()
    total = (a @ s.T << p.beta_frac) + (a @ p.beta)[:, None]
    want = G.round_shift(total * p.mult, p.beta_frac + p.mult_frac)
    got = G.project(p, a)
    assert np.array_equal(got, np.clip(want, -(1 << 15), (1 << 15) - 1))
    # Push every row to the rails: a huge multiplier must saturate, not wrap.
    big = replace(p, mult=np.full(p.d_out, (1 << q.spec.scale_bits) - 1))
    out = G.project(big, np.full(p.d_in, 127))
    assert out.max() <= (1 << 15) - 1 and out.min() >= -(1 << 15)
    assert np.any(np.abs(out) == (1 << 15) - 1) or np.any(out == -(1 << 15))


def test_project_rejects_out_of_range_and_float(tiny_layer):
    _, q = tiny_layer
    with pytest.raises(ValueError, match=r"activation must lie in \[-128, 127\]"):
        G.project(q.in_proj, np.full(q.in_proj.d_in, 128))
    with pytest.raises(TypeError, match="must be an integer array"):
        G.project(q.in_proj, np.zeros(q.in_proj.d_in))
    with pytest.raises(ValueError, match="last dimension 64"):
        G.project(q.in_proj, np.zeros(3, np.int64))


def test_bipolar_projection_takes_only_plus_minus_one(tiny_layer):
    _, q = tiny_layer
    p = _proj(q, np.ones((2, 8), np.int64), 1)
    assert G.project(p, np.array([1, -1] * 4)).tolist() == [0, 0]
    with pytest.raises(ValueError, match="must be -1 or \\+1 for act_bits=1"):
        G.project(p, np.zeros(8, np.int64))


def test_rmsnorm_corners(tiny_layer):
    _, q = tiny_layer
    n = q.norm_in
    assert np.all(G.block_norm(q, np.zeros(n.n, np.int64)) == 0)
    # One-hot at the residual's maximum: the normalised value sits at 2**q, gains map it to
    # a saturated activation in the column's direction.
    for v in (q.fmt["res"].max_int, q.fmt["res"].min_int):
        u = np.zeros(n.n, np.int64)
        u[5] = v
        a = G.block_norm(q, u)
        assert np.count_nonzero(a) == 1 and abs(int(a[5])) in (127, 128)
        assert np.sign(a[5]) == np.sign(v) * np.sign(n.gain[5])


def test_rmsnorm_is_scale_invariant_and_accurate(tiny_layer, rng):
    _, q = tiny_layer
    n = q.norm_in
    u = rng.integers(-(1 << 14), 1 << 14, (16, n.n))
    a1, a2 = G.block_norm(q, u), G.block_norm(q, u << 4)
    assert np.abs(a1 - a2).max() <= 1  # only the rsqrt table's mantissa index moves
    x = u / np.sqrt((u.astype(float) ** 2).mean(-1, keepdims=True))
    want = x * n.gain / 2.0 ** n.gain_fmt.frac * 2.0 ** n.q / np.sqrt(n.n)
    want = np.clip(want, -128, 127)
    # Final rounding (half an LSB) plus the rsqrt table's relative error (2**-11) and the
    # normalised value's own rounding.
    assert np.all(np.abs(a1 - want) <= 0.5 + 2e-3 * np.abs(want))


def test_dt_softplus_exhaustive(tiny_layer):
    _, q = tiny_layer
    f = q.fmt["dt_raw"]
    raw = np.arange(f.min_int, f.max_int + 1)  # every dt_raw code, every head
    dt = G.dt_softplus(q, np.repeat(raw[:, None], q.cfg.nheads, 1))
    x = f.dequantize(raw)[:, None] + f.dequantize(q.dt_bias)[None, :]
    want = np.logaddexp(0, x)
    got = q.fmt["dt"].dequantize(dt)
    ok = want < q.fmt["dt"].dequantize(q.fmt["dt"].max_int)
    # Absolute: a few dt LSBs; relative: 2**-12 wherever dt spans many LSBs (tail precision).
    err = np.abs(got - want)[ok]
    assert err.max() <= 4 * q.fmt["dt"].lsb
    big = want[ok] > 1024 * q.fmt["dt"].lsb
    assert (err[big] / want[ok][big]).max() < 2**-10
    assert np.all(dt[~ok] == q.fmt["dt"].max_int)  # saturates, never wraps


def test_decay_exhaustive(tiny_layer):
    _, q = tiny_layer
    f = q.fmt["dt"]
    dt = np.arange(0, f.max_int + 1, 7)
    dA = G.decay(q, np.repeat(dt[:, None], q.cfg.nheads, 1))
    a = q.a2 / 2.0**q.a2_frac  # exp(A_log) * log2(e), as quantised
    want = 2.0 ** -(f.dequantize(dt)[:, None] * a[None, :])
    got = q.fmt["dA"].dequantize(dA)
    assert np.abs(got - want).max() <= 3 * 2.0 ** -q.spec.exp_bits
    assert dA.max() == (1 << q.spec.exp_bits) - 1  # dt = 0: 1.0 saturates below one


def test_scan_saturation_and_zero_input(tiny_layer):
    _, q = tiny_layer
    c = q.cfg
    f = q.fmt
    mx = f["xbc_act"].max_int
    x = np.full((c.nheads, c.headdim), mx)
    B = np.full((c.ngroups, c.d_state), mx)
    C = np.full((c.ngroups, c.d_state), mx)
    dt = np.full(c.nheads, f["dt"].max_int)
    dA = np.full(c.nheads, f["dA"].max_int)
    h = np.full((c.nheads, c.headdim, c.d_state), f["ssm"].max_int)
    y, h2 = G.scan(q, x, B, C, dt, dA, h)
    assert np.all(h2 == f["ssm"].max_int) and np.all(y == f["y"].max_int)
    y, h3 = G.scan(q, -x, B, C, dt, dA, -h - 1)
    assert np.all(h3 == f["ssm"].min_int) and np.all(y == f["y"].min_int)
    # Zero input: the state only decays, towards zero, never past it.
    z = np.zeros_like(x)
    y, h4 = G.scan(q, z, B * 0, C, dt * 0 + 100, np.full(c.nheads, 1 << 15), h)
    assert np.all(h4 == G.round_shift(h * (1 << 15), q.spec.exp_bits))


def _rs(v: int, s: int) -> int:
    """Round half up with Python integers (independent of numpy shifts)."""
    return (v + (1 << (s - 1))) >> s if s > 0 else v << -s


def _clip(v: int, f) -> int:
    return max(f.min_int, min(f.max_int, v))


def test_scan_in_range_matches_python_integers(tiny_layer, rng):
    _, q = tiny_layer
    c, f = q.cfg, q.fmt
    from model.golden.bounds import scan_alignment
    al = scan_alignment(q)
    x = rng.integers(-3000, 3000, (c.nheads, c.headdim))
    B = rng.integers(-3000, 3000, (1, c.d_state))
    C = rng.integers(-3000, 3000, (1, c.d_state))
    dt = rng.integers(0, 1 << 12, c.nheads)
    dA = rng.integers(1 << 15, 1 << 16, c.nheads)
    h = rng.integers(-(1 << 13), 1 << 13, (c.nheads, c.headdim, c.d_state))
    y, h2 = G.scan(q, x, B, C, dt, dA, h)
    fa = f["xbc_act"].frac
    for hh, pp in ((0, 0), (3, 7), (c.nheads - 1, c.headdim - 1)):
        dtx = _clip(_rs(int(dt[hh]) * int(x[hh, pp]), f["dt"].frac + fa - f["dtx"].frac), f["dtx"])
        row = [_clip(_rs((int(dA[hh]) * int(h[hh, pp, n]) << al["s1"])
                         + (dtx * int(B[0, n]) << al["s2"]), al["f_state"] - f["ssm"].frac),
                     f["ssm"]) for n in range(c.d_state)]
        assert h2[hh, pp].tolist() == row
        acc = (sum(r * int(C[0, n]) for n, r in enumerate(row)) << al["b1"]) + (
            int(q.d_skip[hh]) * int(x[hh, pp]) << al["b2"])
        assert int(y[hh, pp]) == _clip(_rs(acc, al["f_y"] - f["y"].frac), f["y"])


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_scan_matches_dequantised_float_arithmetic(preset, seed):
    """The scan's sums recomputed in real units from the dequantised operands.

    Independent of the alignment shifts (``scan_alignment``) that the golden model and the RTL
    share: every product and sum here is exact in float64 at these widths, so a requantised
    value may differ from the golden one by at most the float rounding at a tie, one LSB.
    """
    _, q = make_layer(preset, seed)
    c, f = q.cfg, q.fmt
    rng = np.random.default_rng(seed)
    u = q.fmt["res"].quantize(rng.standard_normal((24, c.d_model)) * 2)
    tr = golden_trace(q, u)
    gn = c.ngroups * c.d_state
    xa = f["xbc_act"].dequantize(tr["conv_act"])  # (L, C)
    x = xa[:, : c.d_inner].reshape(-1, c.nheads, c.headdim)
    B, C = xa[:, c.d_inner : c.d_inner + gn], xa[:, c.d_inner + gn :]  # G = 1: (L, N)
    dt, dA = f["dt"].dequantize(tr["dt"]), f["dA"].dequantize(tr["dA"])  # (L, H)
    d = q.d_skip * 2.0 ** -q.d_frac
    h_prev = np.zeros((c.nheads, c.headdim, c.d_state))
    for t in range(u.shape[0]):
        dtx = f["dtx"].dequantize(f["dtx"].quantize(dt[t][:, None] * x[t]))
        h_real = dA[t][:, None, None] * h_prev + dtx[:, :, None] * B[t][None, None, :]
        h_int = tr["ssm"][t]
        assert np.abs(h_int - f["ssm"].quantize(h_real)).max() <= 1, t
        h_prev = f["ssm"].dequantize(h_int)
        y_real = (h_prev @ C[t]) + d[:, None] * x[t]  # (H, P)
        y_int = tr["y"][t].reshape(c.nheads, c.headdim)
        assert np.abs(y_int - f["y"].quantize(y_real)).max() <= 1, t
    # The trace is not trivially small: the check above would pass on zeros.
    assert np.abs(tr["y"]).max() > 64 and np.abs(tr["ssm"]).max() > 64


def test_gate_and_residual_exact_and_saturating(tiny_layer, rng):
    _, q = tiny_layer
    f = q.fmt
    y = rng.integers(f["y"].min_int, f["y"].max_int + 1, 200)
    z = rng.integers(f["z"].min_int, f["z"].max_int + 1, 200)
    g = G.gate(q, y, z)
    sz = q.silu_z(z)
    sh = f["y"].frac + f["silu_z"].frac - f["gate"].frac
    assert g.tolist() == [_clip(_rs(int(a) * int(b), sh), f["gate"]) for a, b in zip(y, sz)]
    r = f["res"]
    u = np.array([r.max_int, r.min_int, 5, -5])
    assert G.residual(q, u, np.array([1, -1, 7, -7])).tolist() == [r.max_int, r.min_int, 12, -12]


def test_out_path_matches_its_definition(tiny_layer, rng):
    _, q = tiny_layer
    g = rng.integers(-(1 << 12), 1 << 12, (3, q.cfg.d_inner))
    a = G.out_norm(q, g)
    assert np.array_equal(a, G.rmsnorm_act(q, q.norm_out, g))
    assert a.min() >= -128 and a.max() <= 127
    out = G.out_proj(q, a)
    p = q.out_proj
    total = ((a @ p.sign_matrix().T) << p.beta_frac) + (a @ p.beta)[:, None]
    assert np.array_equal(out, q.fmt["res"].saturate(G.round_shift(total * p.mult,
                                                                    p.beta_frac + p.mult_frac)))


def test_conv_exact_and_state(tiny_layer, rng):
    _, q = tiny_layer
    c = q.cfg
    f = q.fmt["xbc"]
    xs = rng.integers(f.min_int, f.max_int + 1, (9, c.conv_dim))
    state = rng.integers(f.min_int, f.max_int + 1, (c.conv_dim, c.d_conv - 1))
    out, st = G.conv(q, xs, state)
    ext = np.concatenate([state.T, xs])
    for t in (0, 8):
        acc = (q.conv_w * ext[t : t + c.d_conv].T).sum(1) + q.conv_b
        want = q.fmt["conv"].saturate(
            G.round_shift(acc, f.frac + q.conv_w_frac - q.fmt["conv"].frac))
        assert np.array_equal(out[t], want)
    assert np.array_equal(st, xs[-(c.d_conv - 1):].T)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_step_equals_sequence_bit_exact(preset, seed):
    _, q = make_layer(preset, seed)
    layer = G.GoldenLayer(q)
    rng = np.random.default_rng(seed)
    u = q.fmt["res"].quantize(rng.standard_normal((20, q.cfg.d_model)) * 2)
    seq, st_seq = layer.sequence(u[:13])
    seq2, st_seq = layer.sequence(u[13:], st_seq)
    st = layer.initial_state()
    outs = []
    for t in range(20):
        o, st = layer.step(u[t], st)
        outs.append(o)
    assert np.array_equal(np.concatenate([seq, seq2]), np.stack(outs))
    assert np.array_equal(st.ssm, st_seq.ssm) and np.array_equal(st.conv, st_seq.conv)


def test_step_shape_errors(tiny_layer):
    _, q = tiny_layer
    layer = G.GoldenLayer(q)
    with pytest.raises(ValueError, match=r"u must have shape \(64,\)"):
        layer.step(np.zeros(65, np.int64), layer.initial_state())
    with pytest.raises(TypeError, match="integer array"):
        layer.step(np.zeros(64), layer.initial_state())


@pytest.mark.parametrize("preset, steps", [("tiny", 64), ("780M", 24)])
def test_accuracy_budget_default_spec(preset, steps):
    p = prepare(get_preset(preset), steps, 0, calib_steps=32)
    sq = evaluate(p, QuantSpec())
    print(sq)
    assert failed_stages(sq) == [], {k: (sq[k], STAGE_FLOORS_DB[k]) for k in failed_stages(sq)}
    assert sq["layer_out"] >= LAYER_OUT_BUDGET_DB
    assert sq["mixer_out"] >= 20  # the mixer alone, without the residual's help
    # More activation bits must help: the SQNR follows the quantiser, not a constant.
    assert evaluate(p, QuantSpec(act_bits=12))["mixer_out"] > sq["mixer_out"] + 6


@pytest.mark.slow
def test_accuracy_budget_780M_256_steps():
    sq = evaluate(prepare(get_preset("780M"), 256, 0), QuantSpec())
    assert sq["layer_out"] >= LAYER_OUT_BUDGET_DB


def test_cli_json(capsys):
    assert main(["--preset", "tiny", "--steps", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(G.STAGES) <= set(out["sqnr_db"]) and out["sqnr_db"]["layer_out"] > 30


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "3B"])
    assert "preset must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--act-bits", "0"])
    assert "act_bits must be an integer in [1, 16], not 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--steps", "0"], "steps must be an integer in [1, 65536], not 0"),
    (["--steps", "70000"], "steps must be an integer in [1, 65536], not 70000"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295], not -1"),
    (["--seed", str(2**32)], f"seed must be an integer in [0, 4294967295], not {2**32}"),
    (["--sweep", "--check"], "--check gates the default widths and cannot be combined with --sweep"),
    (["--sweep", "--act-bits", "6"], "--act-bits/--state-bits conflict with --sweep"),
    (["--sweep-act", "4,x"], "--sweep-act takes integers separated by commas, not '4,x'"),
    (["--state-bits", "3"], "state_bits must be an integer in [4, 32], not 3"),
])
def test_cli_bounds_and_conflicts(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "tiny", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_check_fails_on_any_stage_below_its_floor(monkeypatch, capsys):
    """A broken middle stage fails --check even when mixer_out and layer_out look healthy."""
    import model.evaluate.layer as ev

    real = ev.evaluate

    def broken_y(p, spec):
        sq = real(p, spec)
        return {**sq, "y": 0.04}

    monkeypatch.setattr(ev, "evaluate", broken_y)
    assert ev.main(["--preset", "tiny", "--steps", "8", "--check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL (y below floor)" in out and "BELOW FLOOR" in out
    assert ev.main(["--preset", "tiny", "--steps", "8"]) == 0  # reported, not gated


def test_spec_floor_table_matches_the_gates():
    from pathlib import Path
    import re

    doc = (Path(__file__).parent.parent / "docs" / "fixed_point.md").read_text()
    rows = re.findall(r"^\| (\w+)[^|]* \| [\d.]+ \| ([\d.]+) \|$", doc, re.M)
    assert {k: float(v) for k, v in rows} == STAGE_FLOORS_DB
