"""Fixed-point primitives: rounding and saturation corners, tables against their functions."""

import math

import numpy as np
import pytest

from model.golden.fixedpoint import (
    Exp2Table, PwlTable, QFormat, RsqrtTable, bit_length, frac_for_range, round_shift, saturate,
    signed_bits,
)


@pytest.mark.parametrize("x, s, want", [
    (3, 1, 2), (-3, 1, -1), (1, 1, 1), (-1, 1, 0),  # exact halves round up (towards +inf)
    (5, 2, 1), (6, 2, 2), (-6, 2, -1), (-7, 2, -2),
    (7, 0, 7), (7, -3, 56), (-(1 << 40), 200, 0), ((1 << 60), 62, 0),
])
def test_round_shift_scalar(x, s, want):
    assert int(round_shift(x, s)) == want


def test_round_shift_matches_exact_rational(rng):
    x = rng.integers(-(1 << 40), 1 << 40, 2000)
    s = rng.integers(-4, 30, 2000)
    got = round_shift(x, s)
    want = [math.floor(int(a) / 2 ** int(b) + 0.5) if b > 0 else int(a) << int(-b)
            for a, b in zip(x, s)]
    assert got.tolist() == want


def test_saturate_corners():
    assert saturate([-129, -128, 127, 128], 8).tolist() == [-128, -128, 127, 127]
    assert saturate([-1, 0, 255, 256], 8, signed=False).tolist() == [0, 0, 255, 255]


def test_qformat_quantize_rounds_half_up_and_saturates():
    f = QFormat(8, 4)
    assert f.quantize([0.03125, -0.03125, 7.9375, 8.0, -8.0, -9.0]).tolist() == [
        1, 0, 127, 127, -128, -128]
    assert str(f) == "SQ(8,4)" and f.max_int == 127 and f.min_int == -128


def test_qformat_rejects_bad_width():
    with pytest.raises(ValueError, match=r"Width must be an integer in \[1, 62\], not 0"):
        QFormat(0, 0)


def test_widths_from_bounds():
    assert signed_bits(127) == 8 and signed_bits(128) == 9
    assert frac_for_range(1.0, 16) == 14  # 1.0 needs one integer bit plus the sign
    assert frac_for_range(0.99, 16) == 15


def test_bit_length_exact(rng):
    x = np.concatenate([rng.integers(1, 1 << 62, 1000), [0, 1, 2, 3, (1 << 62) - 1, 1 << 62]])
    assert bit_length(x).tolist() == [int(v).bit_length() for v in x]


def silu(x):
    return x / (1 + np.exp(-x))


def test_pwl_exact_at_breakpoints_and_bounded_between():
    in_fmt, out_fmt = QFormat(16, 11), QFormat(16, 12)
    t = PwlTable.build(silu, in_fmt, out_fmt, -8, 8, 8, left=0.0, right_identity=True)
    assert t.shift == 7 and t.seg_bits == 8  # 16 real units = 2**15 LSBs in 256 segments
    xs = np.arange(in_fmt.min_int, in_fmt.max_int + 1)  # exhaustive over the input format
    got = out_fmt.dequantize(t(xs))
    want = silu(in_fmt.dequantize(xs))
    inside = (xs >= t.lo) & (xs < t.hi)
    # PWL error h^2/8 max|f''| (h = 1/16, |silu''| <= 0.5) plus one output LSB of rounding.
    assert np.max(np.abs(got - want)[inside]) <= (1 / 16) ** 2 / 8 * 0.5 + 2 ** -12
    assert np.array_equal(t(t.lo + (np.arange(257) << 7))[:-1], t.table[:-1])
    # Tails: 0 on the left (|silu| < 0.0027 there), identity on the right.
    assert np.all(t(xs[xs < t.lo]) == 0)
    right = xs[xs >= t.hi]
    assert np.array_equal(t(right), out_fmt.saturate(round_shift(right, 11 - 12)))


def test_pwl_rejects_non_power_of_two_domain():
    with pytest.raises(ValueError, match="power of two"):
        PwlTable.build(silu, QFormat(16, 8), QFormat(16, 8), -3, 3, 4)


@pytest.mark.parametrize("index_bits", [6, 10])
def test_rsqrt_relative_error(index_bits, rng):
    t = RsqrtTable.build(index_bits, 16)
    s = np.concatenate([rng.integers(1, 1 << 62, 5000), 1 << np.arange(62),
                        (1 << np.arange(1, 62)) - 1])
    m, half = t(s)
    approx = m * 2.0 ** -(16 + half)
    rel = np.abs(approx * np.sqrt(s.astype(np.float64)) - 1)
    assert rel.max() <= 2.0 ** -(index_bits + 1) + 2 ** -15


def test_exp2_exhaustive_small_and_random_large(rng):
    e = Exp2Table.build(in_frac=10, out_frac=16, seg_bits=7)
    t = np.arange(0, 40 << 10)  # every input up to 2**-40
    got = e.value(t) / 2**16
    want = 2.0 ** -(t / 2**10)
    assert np.max(np.abs(got - want)) <= 1.5 * 2**-16
    m, k = e(t)
    assert np.all((m >= 1 << 15) & (m <= 1 << 16))
    assert int(e.value(0)) == 1 << 16
