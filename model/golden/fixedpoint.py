"""Integer fixed-point primitives shared by the golden model and the RTL generators.

Every function here works on ``np.int64`` arrays (or Python ints) and never on floats, except the
*builders* (:class:`QFormat.quantize`, table construction), which run once at export time.

Conventions (docs/fixed_point.md, section 1):

* ``Q(bits, frac)``: two's complement (or unsigned) integer ``v`` meaning ``v / 2**frac``.
* Rounding is **round half up**: ``rs(v, s) = floor((v + 2**(s-1)) / 2**s)``, i.e. add half an
  LSB and arithmetic-shift right. It costs one adder in hardware and is the only rule used.
* Saturation clips to the format's range; it is applied only where the spec says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "QFormat",
    "round_shift",
    "saturate",
    "signed_bits",
    "unsigned_bits",
    "frac_for_range",
    "bit_length",
    "PwlTable",
    "RsqrtTable",
    "Exp2Table",
]

Int = np.ndarray | int

# numpy shifts by >= 64 are undefined; every value of the spec is below 2**61 in magnitude, so a
# right shift by 62 already rounds it to 0 and larger shifts are clipped to it.
_MAX_SHIFT = 62


def round_shift(x: Int, s: Int) -> np.ndarray:
    """Round-half-up right shift ``floor(x / 2**s + 1/2)``; a negative ``s`` is an exact left shift.

    ``s`` may be an array (per-element variable shift, as after a leading-one detector).
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if s.ndim == 0:
        si = int(s)
        if si <= 0:
            return x << -si
        si = min(si, _MAX_SHIFT)
        return (x + (1 << (si - 1))) >> si
    right = np.clip(s, 0, _MAX_SHIFT)
    left = np.clip(-s, 0, None)
    return ((x << left) + ((np.int64(1) << right) >> 1)) >> right


def saturate(x: Int, bits: int, signed: bool = True) -> np.ndarray:
    """Clip ``x`` to the range of a ``bits``-wide signed or unsigned integer."""
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def signed_bits(bound: int) -> int:
    """Smallest two's complement width holding every integer in ``[-bound, bound]``."""
    return int(bound).bit_length() + 1


def unsigned_bits(bound: int) -> int:
    """Smallest unsigned width holding every integer in ``[0, bound]``."""
    return max(1, int(bound).bit_length())


def frac_for_range(max_abs: float, bits: int, signed: bool = True, max_frac: int = 40) -> int:
    """Largest fraction width such that ``max_abs`` fits a ``bits``-wide format.

    A zero range gets ``max_frac`` (any format represents it).
    """
    if not max_abs > 0:
        return max_frac
    int_bits = math.floor(math.log2(max_abs)) + 1  # bits left of the binary point
    return min(max_frac, bits - int(signed) - int_bits)


def bit_length(x: Int) -> np.ndarray:
    """Element-wise ``int.bit_length`` of non-negative int64 values, exact (no float rounding)."""
    x = np.asarray(x, dtype=np.int64)
    e = np.zeros(x.shape, dtype=np.int64)
    v = x.copy()
    for step in (32, 16, 8, 4, 2, 1):
        big = v >= (np.int64(1) << step)
        e = e + np.where(big, step, 0)
        v = np.where(big, v >> step, v)
    return e + (v > 0)


@dataclass(frozen=True)
class QFormat:
    """A fixed-point format ``Q(bits, frac)``.

    Parameters
    ----------
    bits : int
        Total width, sign included.
    frac : int
        Fraction bits (may be negative or exceed ``bits``).
    signed : bool
        Two's complement if true, else unsigned.

    Raises
    ------
    ValueError
        If ``bits`` is not in [1, 62].
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 62:
            raise ValueError(f"Width must be an integer in [1, 62], not {self.bits!r}")

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def quantize(self, x: np.ndarray | float) -> np.ndarray:
        """Float -> int64, round half up, saturating. Export-time only."""
        v = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** self.frac + 0.5)
        return np.clip(v, self.min_int, self.max_int).astype(np.int64)

    def dequantize(self, v: Int) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) * 2.0 ** -self.frac

    def saturate(self, v: Int) -> np.ndarray:
        return np.clip(np.asarray(v, dtype=np.int64), self.min_int, self.max_int)

    def __str__(self) -> str:
        return f"{'S' if self.signed else 'U'}Q({self.bits},{self.frac})"


@dataclass(frozen=True, eq=False)
class PwlTable:
    """Piecewise-linear function on a uniform grid: one table read pair, one multiply, one shift.

    The domain ``[lo, lo + 2**(seg_bits + shift))`` (in input LSBs) is cut into ``2**seg_bits``
    segments of ``2**shift`` LSBs. For ``x`` inside::

        i = (x - lo) >> shift;  r = (x - lo) & (2**shift - 1)
        y = T[i] + rs((T[i+1] - T[i]) * r, shift)

    Below the domain ``y = left``; at or above it ``y = right(x)``: either a constant or the input
    converted to the output format (``right_identity``, for SiLU and softplus whose tails are x).

    Members
    -------
    table : np.ndarray, shape (2**seg_bits + 1,)
        Breakpoint values ``round(f(lo + i * step))`` in the output format.
    """

    in_fmt: QFormat
    out_fmt: QFormat
    lo: int
    seg_bits: int
    shift: int
    table: np.ndarray = field(repr=False)
    left: int
    right_const: int | None  # None: right tail is the identity

    @classmethod
    def build(
        cls, fn: Callable[[np.ndarray], np.ndarray], in_fmt: QFormat, out_fmt: QFormat,
        lo: float, hi: float, seg_bits: int, left: float | None = None,
        right_identity: bool = False,
    ) -> "PwlTable":
        """Tabulate ``fn`` over ``[lo, hi)`` (real units), clipped to ``in_fmt``'s range.

        ``hi - lo`` must be a power of two times the input LSB; ``seg_bits`` is reduced when
        the domain holds fewer LSBs than segments (then every input has its own entry).
        """
        lo_i = max(int(round(lo * 2 ** in_fmt.frac)), in_fmt.min_int)
        hi_i = min(int(round(hi * 2 ** in_fmt.frac)), in_fmt.max_int + 1)
        width = hi_i - lo_i
        if width <= 0 or width & (width - 1):
            raise ValueError(
                f"PWL domain must span a power of two of input LSBs, not {width} ({in_fmt})"
            )
        total = width.bit_length() - 1
        seg = min(seg_bits, total)
        shift = total - seg
        xs = (lo_i + (np.arange((1 << seg) + 1, dtype=np.int64) << shift)) / 2.0 ** in_fmt.frac
        table = out_fmt.quantize(fn(xs))
        left_i = int(out_fmt.quantize(fn(np.array(lo)) if left is None else left))
        right_const = None if right_identity else int(table[-1])
        table.setflags(write=False)
        return cls(in_fmt, out_fmt, lo_i, seg, shift, table, left_i, right_const)

    @property
    def hi(self) -> int:
        return self.lo + (1 << (self.seg_bits + self.shift))

    def __call__(self, x: Int) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        off = np.clip(x - self.lo, 0, (1 << (self.seg_bits + self.shift)) - 1)
        i = off >> self.shift
        r = off & ((1 << self.shift) - 1)
        t0 = self.table[i]
        y = t0 + round_shift((self.table[i + 1] - t0) * r, self.shift)
        if self.right_const is None:
            right = round_shift(x, self.in_fmt.frac - self.out_fmt.frac)
        else:
            right = np.int64(self.right_const)
        y = np.where(x < self.lo, self.left, np.where(x >= self.hi, right, y))
        return self.out_fmt.saturate(y)


@dataclass(frozen=True, eq=False)
class RsqrtTable:
    """Reciprocal square root of a positive integer by leading-one detection and one table read.

    For ``s = 1.m * 2**e``: ``rsqrt(s) ~= T[e & 1][top (index_bits - 1) bits of m] * 2**-(out_bits
    + (e >> 1))``. Row 1 folds in the 1/sqrt(2) of an odd exponent. Entries sample the midpoint
    of their mantissa interval, so the relative error is at most about ``2**-(index_bits + 1)``.

    Members
    -------
    table : np.ndarray, shape (2, 2**(index_bits - 1)), unsigned ``out_bits`` wide, all < 1.0
    """

    index_bits: int
    out_bits: int
    table: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, index_bits: int, out_bits: int) -> "RsqrtTable":
        if not 2 <= index_bits <= 16:
            raise ValueError(f"rsqrt index bits must be in [2, 16], not {index_bits}")
        m = 1 + (np.arange(1 << (index_bits - 1)) + 0.5) / (1 << (index_bits - 1))
        rows = np.stack([1 / np.sqrt(m), 1 / np.sqrt(2 * m)])
        table = QFormat(out_bits, out_bits, signed=False).quantize(rows)
        table.setflags(write=False)
        return cls(index_bits, out_bits, table)

    def __call__(self, s: Int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(T, half)`` with ``1/sqrt(s) ~= T * 2**-(out_bits + half)``; ``s >= 1``."""
        s = np.asarray(s, dtype=np.int64)
        e = bit_length(s) - 1
        mb = self.index_bits - 1
        top = _shift_trunc(s, e - mb)
        idx = top & ((1 << mb) - 1)
        return self.table[e & 1, idx], e >> 1


def _shift_trunc(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Truncating shift: right by ``s`` where ``s >= 0``, left by ``-s`` otherwise (exact)."""
    return np.where(s >= 0, x >> np.clip(s, 0, _MAX_SHIFT), x << np.clip(-s, 0, None))


@dataclass(frozen=True, eq=False)
class Exp2Table:
    """``2**-t`` for ``t >= 0`` as a shift and a PWL mantissa: the exp unit of the SSM.

    ``t`` is unsigned with ``in_frac`` fraction bits; ``k = t >> in_frac``, ``f = t mod 1``,
    ``2**-t = 2**-f * 2**-k`` with ``2**-f`` in (0.5, 1] from a :class:`PwlTable` in
    ``UQ(out_frac + 1, out_frac)`` (1.0 itself is representable).
    """

    in_frac: int
    out_frac: int
    mantissa: PwlTable

    @classmethod
    def build(cls, in_frac: int, out_frac: int, seg_bits: int) -> "Exp2Table":
        in_fmt = QFormat(in_frac + 1, in_frac, signed=False)
        out_fmt = QFormat(out_frac + 1, out_frac, signed=False)
        mant = PwlTable.build(lambda f: 2.0 ** -f, in_fmt, out_fmt, 0.0, 1.0, seg_bits)
        return cls(in_frac, out_frac, mant)

    def __call__(self, t: Int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(m, k)``: ``2**-t ~= m * 2**-(out_frac + k)``."""
        t = np.asarray(t, dtype=np.int64)
        return self.mantissa(t & ((1 << self.in_frac) - 1)), t >> self.in_frac

    def value(self, t: Int) -> np.ndarray:
        """``2**-t`` in ``UQ(out_frac + 1, out_frac)``, rounded."""
        m, k = self(t)
        return round_shift(m, k)
