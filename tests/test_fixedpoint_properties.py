"""Property tests of the integer primitives against exact rational arithmetic (``Fraction``).

Hypothesis draws the cases; on a failure it prints the falsifying example and the seed to
replay it (``pytest --hypothesis-seed=N``), plus a ``@reproduce_failure`` blob. The expected
values are derived here from their definitions in docs/fixed_point.md, never from the helpers
under test.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st

from model.golden.fixedpoint import PwlTable, QFormat, RsqrtTable, round_shift, saturate

settings.register_profile("bimamba", deadline=None, max_examples=300, print_blob=True)
settings.load_profile("bimamba")

HALF = Fraction(1, 2)


def rs_exact(x: int, s: int) -> int:
    """Round half up of ``x / 2**s`` (an exact left shift for ``s <= 0``)."""
    return math.floor(Fraction(x, 2**s) + HALF) if s > 0 else x * 2**-s


def clip(x: int, lo: int, hi: int) -> int:
    return lo if x < lo else hi if x > hi else x


# Operands of the datapath stay below 2**61 in magnitude (model.golden.bounds.MAX_BITS).
values = st.integers(-(2**61), 2**61 - 1)


@given(values, st.integers(1, 80))
def test_round_shift_right_is_round_half_up(x, s):
    assert int(round_shift(x, s)) == rs_exact(x, s)


@given(st.integers(0, 40).flatmap(
    lambda k: st.tuples(st.integers(-(2 ** (61 - k)), 2 ** (61 - k) - 1), st.just(-k))))
def test_round_shift_left_is_exact(xs):
    x, s = xs
    assert int(round_shift(x, s)) == x * 2**-s


@given(st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(-20, 62)),
                min_size=1, max_size=50))
def test_round_shift_per_element_shifts(pairs):
    x = np.array([p[0] for p in pairs], np.int64)
    s = np.array([p[1] for p in pairs], np.int64)
    assert round_shift(x, s).tolist() == [rs_exact(a, b) for a, b in pairs]


@given(values, st.integers(1, 62), st.booleans())
def test_saturate_clips_to_the_format(x, bits, signed):
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    assert int(saturate(x, bits, signed)) == clip(x, lo, hi)
    f = QFormat(bits, 0, signed)
    assert int(f.saturate(x)) == clip(x, lo, hi)


def _silu(v: np.ndarray) -> np.ndarray:
    return v / (1 + np.exp(-v))


@st.composite
def pwl_cases(draw):
    """A SiLU or 2**-x table on random formats, and inputs across the whole input format."""
    in_bits = draw(st.integers(8, 20))
    in_frac = draw(st.integers(max(0, in_bits - 8), in_bits - 4))  # domain [-8, 8) fits
    out_bits = draw(st.integers(8, 20))
    out_frac = draw(st.integers(out_bits - 6, out_bits - 2))
    seg_bits = draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["silu", "exp2"]))
    in_fmt, out_fmt = QFormat(in_bits, in_frac), QFormat(out_bits, out_frac)
    if kind == "silu":
        t = PwlTable.build(_silu, in_fmt, out_fmt, -8.0, 8.0, seg_bits, left=0.0,
                           right_identity=True)
    else:
        t = PwlTable.build(lambda f: 2.0**-f, in_fmt, out_fmt, 0.0, 1.0, seg_bits)
    xs = draw(st.lists(st.integers(in_fmt.min_int, in_fmt.max_int), min_size=1, max_size=40))
    return t, xs


def pwl_exact(t: PwlTable, x: int) -> int:
    """docs/fixed_point.md section 2: T[i] + rs((T[i+1] - T[i]) r, shift), tails, saturation."""
    span = 2 ** (t.seg_bits + t.shift)
    table = [int(v) for v in t.table]
    if x < t.lo:
        y = t.left
    elif x >= t.lo + span:
        y = (rs_exact(x, t.in_fmt.frac - t.out_fmt.frac) if t.right_const is None
             else t.right_const)
    else:
        i, r = divmod(x - t.lo, 2**t.shift)
        y = table[i] + math.floor(Fraction((table[i + 1] - table[i]) * r, 2**t.shift) + HALF)
    return clip(y, t.out_fmt.min_int, t.out_fmt.max_int)


@given(pwl_cases())
def test_pwl_table_is_its_definition(case):
    t, xs = case
    assert t(np.array(xs, np.int64)).tolist() == [pwl_exact(t, x) for x in xs]


@given(st.integers(2, 16), st.integers(6, 24),
       st.lists(st.integers(1, 2**62 - 1), min_size=1, max_size=30))
def test_rsqrt_within_its_relative_error_bound(index_bits, out_bits, ss):
    """``T * 2**-(out_bits + half)`` is within ``2**-(index_bits+1)`` (mantissa midpoint) plus
    the entry's rounding of ``1/sqrt(s)``, checked on squares so that it stays rational."""
    t = RsqrtTable.build(index_bits, out_bits)
    m, half = t(np.array(ss, np.int64))
    mb = index_bits - 1
    for s, mi, hi in zip(ss, m.tolist(), half.tolist()):
        e = s.bit_length() - 1
        assert hi == e // 2
        # The entry the definition selects: row e & 1, the top mb mantissa bits of s.
        idx = (s >> (e - mb) if e >= mb else s << (mb - e)) & (2**mb - 1)
        assert mi == int(t.table[e & 1, idx])
        approx = Fraction(mi, 2 ** (out_bits + hi))
        # |approx * sqrt(s) - 1| <= eps  <=>  (1 - eps)^2 <= approx^2 s <= (1 + eps)^2.
        eps = Fraction(1, 2 ** (index_bits + 1)) + Fraction(1, 2 ** (out_bits - 1))
        sq = approx * approx * s
        assert (1 - eps) ** 2 <= sq <= (1 + eps) ** 2, (s, mi, hi)
