"""Table units of the SSM datapath: PWL lookup, exp2, softplus and decay.

Each unit is built from the very table objects the golden model evaluates
(:class:`~model.golden.fixedpoint.PwlTable`, :class:`~model.golden.fixedpoint.Exp2Table` and the constants of a
:class:`~model.golden.quantize.QuantizedLayer`), so the two cannot disagree on a breakpoint. The
arithmetic follows docs/fixed_point.md section 6 line by line.

The ``*_stage`` functions elaborate a unit into a parent module behind an enable (the parent's
pipeline advance), so the scan datapath embeds them; the ``Softplus`` and ``Decay`` components
wrap them with ``lib.stream`` ports for stand-alone, exhaustive verification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.golden.fixedpoint import PwlTable, signed_bits

from .dsp import MUL_LATENCY, pipelined_mul, registered_mul

if TYPE_CHECKING:  # model.golden.quantize imports torch; the generators need it only at run time
    from model.golden.quantize import QuantizedLayer

__all__ = [
    "round_shift", "saturate", "pwl_stage", "exp2_stage", "exp2_value", "softplus_stage",
    "decay_stage", "Softplus", "Decay", "PWL_LATENCY", "SOFTPLUS_LATENCY", "DECAY_LATENCY",
    "ROUND_VAR_LATENCY", "round_shift_var_stage", "pwl_slopes",
]

# One register per step, each step at most one carry chain or one DSP multiply deep (see
# docs/fpga.md: a hop of routing on the ECP5 costs about as much as a LUT).
# index and fraction (the slope table read into a register: a block RAM's output, when synthesis
# maps the table there), the slope again in the fabric, the multiplier's operand and product
# registers, interpolation, saturation
PWL_LATENCY = 6
ROUND_VAR_LATENCY = 3  # round_shift_var_stage: clamp, rounding add, barrel shift
# |x| log2 e (rtl.dsp.pipelined_mul), its rounding; the exp2 mantissa; exp2's value; the tail
# table; the tail product (pipelined_mul); its variable shift; the sum with max(x, 0); its
# saturation.
SOFTPLUS_LATENCY = (MUL_LATENCY + 1 + PWL_LATENCY + ROUND_VAR_LATENCY + PWL_LATENCY
                    + MUL_LATENCY + ROUND_VAR_LATENCY + 2)
# dt * Ak (pipelined_mul) and its rounding; the exp2 mantissa; exp2's value; saturation.
DECAY_LATENCY = MUL_LATENCY + 1 + PWL_LATENCY + ROUND_VAR_LATENCY + 1


def round_shift(v: Value, s: int) -> Value:
    """Round half up by a constant shift (``s <= 0``: exact left shift)."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << -s


def round_shift_var(v: Value, s: Value, limit: int) -> Value:
    """Round half up by a variable shift ``s >= 0``; shifts of ``limit`` or more give the value
    that ``limit`` gives (0 for any ``|v| < 2**(limit - 1)``), which keeps the barrel small."""
    s = Value.cast(s)
    sc = Mux(s > limit, limit, s)[: max(1, limit.bit_length())].as_unsigned()  # s >= 0 here
    return (v + ((Value.cast(1) << sc) >> 1)) >> sc


def round_shift_var_stage(m: Module, v: Value, s: Value, limit: int, en, name: str) -> Signal:
    """:func:`round_shift_var` in registered steps (:data:`ROUND_VAR_LATENCY`): the clamp of
    the shift, the rounding add (its constant decoded from the clamped shift), the barrel
    shift."""
    s = Value.cast(s)
    sc = _reg(m, Mux(s > limit, limit, s)[: max(1, limit.bit_length())].as_unsigned(), en,
              f"{name}_sc")
    vs = _reg(m, v, en, f"{name}_vd")  # v aligned with sc
    # The rounding constant 2^(sc - 1) <= 2^(limit - 1) fits limit bits: the add is no wider
    # than v (a full-width variable shift would make it 2^len(sc) bits).
    half = ((Value.cast(1) << sc) >> 1)[:limit]
    summed = _reg(m, vs + half, en, f"{name}_sum")
    sc2 = _reg(m, sc, en, f"{name}_sc2")
    return _reg(m, summed >> sc2, en, f"{name}_out")


def saturate(v: Value, lo: int, hi: int) -> Value:
    """Clip to ``[lo, hi]``; a bound the value's signedness already guarantees is not compared
    (Verilator flags such constant comparisons)."""
    v = Value.cast(v)
    if not v.shape().signed and lo <= 0:
        return Mux(v > hi, hi, v)
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def _reg(m: Module, v, en, name: str, shape=None) -> Signal:
    r = Signal(shape if shape is not None else Value.cast(v).shape(), name=name)
    with m.If(en):
        m.d.sync += r.eq(v)
    return r


def _delay(m: Module, v, n: int, en, name: str):
    for i in range(n):
        v = _reg(m, v, en, f"{name}_d{i}")
    return v


def pwl_slopes(t: PwlTable) -> list[int]:
    """``T[i+1] - T[i]`` for every segment: the slope table read beside ``T[i]``, so the
    interpolation needs no second address and no subtraction."""
    return [int(t.table[i + 1]) - int(t.table[i]) for i in range(len(t.table) - 1)]


def pwl_stage(m: Module, t: PwlTable, x: Value, en, name: str) -> Signal:
    """Evaluate ``t`` on ``x`` (format ``t.in_fmt``); result registered ``PWL_LATENCY`` later.

    ``y = sat(T[i] + rs((T[i+1] - T[i]) * r, shift))`` inside the domain, ``left`` below it,
    the constant or ``x`` converted to the output format above it. Registered steps: the
    segment index ``i``, offset ``r`` and slope ``T[i+1] - T[i]`` (read from its ROM at the
    index before its register), and the range flags; ``T[i]`` (a second ROM), and the slope
    and offset in fabric registers; the slope and offset again (a multiplier's input
    registers); ``slope * r``; ``T[i] + rs(slope * r, shift)``; the tails' selection and
    saturation.
    """
    span = 1 << (t.seg_bits + t.shift)
    x = Value.cast(x).as_signed() if t.in_fmt.signed else Value.cast(x)
    can_be_below = t.in_fmt.signed or t.lo > 0
    off = x - t.lo
    off_c = saturate(off, 0, span - 1)
    i = _reg(m, off_c >> t.shift, en, f"{name}_i", unsigned(max(1, t.seg_bits)))
    r = _reg(m, off_c & ((1 << t.shift) - 1), en, f"{name}_r", unsigned(max(1, t.shift)))
    below = _reg(m, (x < t.lo) if can_be_below else 0, en, f"{name}_below", unsigned(1))
    above = _reg(m, x >= t.hi, en, f"{name}_above")
    if t.right_const is None:
        right = _reg(m, round_shift(x, t.in_fmt.frac - t.out_fmt.frac), en, f"{name}_right")
    else:
        right = Value.cast(t.right_const)

    # 2: the two tables
    slopes = pwl_slopes(t)
    base_rom = Memory(shape=signed(t.out_fmt.bits + 1), depth=len(slopes),
                      init=[int(v) for v in t.table[:-1]])
    slope_rom = Memory(shape=signed(signed_bits(max(max(slopes), -min(slopes), 1))),
                       depth=len(slopes), init=slopes)
    m.submodules[f"{name}_rom"], m.submodules[f"{name}_slope_rom"] = base_rom, slope_rom
    base_p, slope_p = base_rom.read_port(domain="comb"), slope_rom.read_port(domain="comb")
    # The slope is read in step 1, from the index before its register, and registered
    # there: the table's logic then ends in a fabric register, not in the input register of
    # a DSP block rows away (measured on the 16-lane scan: 121.4 MHz).
    m.d.comb += [base_p.addr.eq(i), slope_p.addr.eq(off_c >> t.shift)]
    slope = _reg(m, slope_p.data, en, f"{name}_slope")
    # T[i] waits beside the product of step 3 as ``T[i] * 2**shift + 2**(shift - 1)`` (the
    # rounding constant in its low bits, no adder): ``T[i] + rs(p, shift)`` is then
    # ``(that + p) >> shift``, one carry chain after the DSP block instead of two.
    if t.shift:
        base = Cat(Const(1 << (t.shift - 1), t.shift), base_p.data).as_signed()
    else:
        base = base_p.data
    t0 = _delay(m, base, 3, en, f"{name}_t0")
    # 3: slope times offset. Synthesis folds the slope register into the table when it maps
    # the table to a block RAM (a synchronous read); a fabric register then stands between the
    # RAM's slow output and the multiplier's own operand registers, which may sit rows away
    # (the whole tiny engine, straight from the RAM: 9.9 ns, 101.3 MHz).
    prod = registered_mul(m, slope, r, en, f"{name}_prod", stages=3)
    # 4: interpolation
    interp = _reg(m, (t0 + prod) >> t.shift if t.shift else t0, en, f"{name}_interp")
    # 5: tails and saturation, the range flags (and x) held since step 1
    below = _delay(m, below, 4, en, f"{name}_below")
    above = _delay(m, above, 4, en, f"{name}_above")
    if t.right_const is None:
        right = _delay(m, right, 4, en, f"{name}_right")
    y = Mux(below, t.left, Mux(above, right, interp))
    f = t.out_fmt
    return _reg(m, saturate(y, f.min_int, f.max_int), en, f"{name}_y",
                signed(f.bits) if f.signed else unsigned(f.bits))


def exp2_stage(m: Module, q: QuantizedLayer, t: Value, en, name: str) -> tuple[Signal, Signal]:
    """``2**-t = m * 2**-(exp_bits + k)``: mantissa ``m`` and exponent ``k``, PWL_LATENCY later."""
    e = q.exp2
    frac = Value.cast(t)[: e.in_frac]
    k = _delay(m, Value.cast(t) >> e.in_frac, PWL_LATENCY, en, f"{name}_k")
    return pwl_stage(m, e.mantissa, frac, en, f"{name}_mant"), k


def exp2_value(q: QuantizedLayer, mant: Value, k: Value) -> Value:
    """``rs(m, k)``: the exp2 value in ``UQ(exp_bits + 1, exp_bits)`` (combinational)."""
    return round_shift_var(mant, k, q.exp2.out_frac + 2)


def exp2_value_stage(m: Module, q: QuantizedLayer, mant: Value, k: Value, en,
                     name: str) -> Signal:
    """:func:`exp2_value`, registered ``ROUND_VAR_LATENCY`` later."""
    return round_shift_var_stage(m, mant, k, q.exp2.out_frac + 2, en, name)


def softplus_stage(m: Module, q: QuantizedLayer, x: Value, en, name: str) -> Signal:
    """``dt = softplus(x)`` for ``x = dt_raw + dt_bias`` (format ``dt_in``); SOFTPLUS_LATENCY.

    ``max(x, 0) + rs(m * TAIL(E), k + exp_bits + tail_frac - dt_frac)``, ``E = rs(m, k)``,
    ``(m, k) = exp2(rs(|x| * log2e, x_frac + log2e_frac - exp_in_frac))``.
    """
    f_x, f_dt = q.fmt["dt_raw"].frac, q.fmt["dt"].frac
    x = Value.cast(x).as_signed()
    tp = pipelined_mul(m, Mux(x < 0, -x, x), Const(q.log2e), en, f"{name}_tp")
    pos = _reg(m, round_shift(Mux(x < 0, 0, x), f_x - f_dt), en, f"{name}_pos")
    t = _reg(m, round_shift(tp, f_x + q.log2e_frac - q.spec.exp_in_frac), en, f"{name}_t")
    pos = _delay(m, pos, MUL_LATENCY, en, f"{name}_pos_t")
    mant, k = exp2_stage(m, q, t, en, f"{name}_exp2")
    pos = _delay(m, pos, PWL_LATENCY, en, f"{name}_pos_a")
    e = exp2_value_stage(m, q, mant, k, en, f"{name}_e")
    g = pwl_stage(m, q.tail, e, en, f"{name}_tail")
    wait = ROUND_VAR_LATENCY + PWL_LATENCY
    mant = _delay(m, mant, wait, en, f"{name}_mant_b")
    # the tail's shift, computed while the table runs
    sh = _delay(m, _reg(m, k + (q.spec.exp_bits + q.tail.out_fmt.frac - f_dt), en,
                        f"{name}_sh"), wait - 1, en, f"{name}_sh_b")
    pos = _delay(m, pos, wait, en, f"{name}_pos_b")
    prod = pipelined_mul(m, mant, g, en, f"{name}_prod")
    sh = _delay(m, sh, MUL_LATENCY, en, f"{name}_sh_c")
    tail = round_shift_var_stage(m, prod, sh, len(prod) + 1, en, f"{name}_tailsh")
    pos = _delay(m, pos, MUL_LATENCY + ROUND_VAR_LATENCY, en, f"{name}_pos_c")
    dt_fmt = q.fmt["dt"]
    total = _reg(m, pos + tail, en, f"{name}_sum")
    return _reg(m, saturate(total, dt_fmt.min_int, dt_fmt.max_int), en, f"{name}_dt",
                unsigned(dt_fmt.bits))


def decay_stage(m: Module, q: QuantizedLayer, dt: Value, ak: Value, en, name: str) -> Signal:
    """``dA = sat(exp2(rs(dt * Ak, dt_frac + Ak_frac - exp_in_frac)))``; DECAY_LATENCY."""
    tp = pipelined_mul(m, dt, Value.cast(ak).as_signed(), en, f"{name}_tp")
    t = _reg(m, round_shift(tp, q.fmt["dt"].frac + q.a2_frac - q.spec.exp_in_frac), en,
             f"{name}_t")
    mant, k = exp2_stage(m, q, t[: len(t) - 1], en, f"{name}_exp2")  # t >= 0: drop the sign
    e = exp2_value_stage(m, q, mant, k, en, f"{name}_e")
    f = q.fmt["dA"]
    return _reg(m, saturate(e, f.min_int, f.max_int), en, f"{name}_dA", unsigned(f.bits))


class _StreamUnit(wiring.Component):
    """A pipeline of fixed latency between an input and an output stream (global stall)."""

    def __init__(self, q: QuantizedLayer, in_shape, out_shape) -> None:
        from model.golden.quantize import QuantizedLayer

        if not isinstance(q, QuantizedLayer):
            raise TypeError(f"q must be a QuantizedLayer, not {q!r}")
        self.q = q
        super().__init__({"i": In(stream.Signature(in_shape)),
                          "o": Out(stream.Signature(out_shape))})

    def _pipeline(self, m: Module, en) -> Value:
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        y = self._pipeline(m, en)
        valid = _delay(m, self.i.valid, self.latency, en, "valid")
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(y)]
        return m


class Softplus(_StreamUnit):
    """Stream unit: ``x`` (format ``dt_in``) in, ``dt`` out, ``latency`` cycles later."""

    latency = SOFTPLUS_LATENCY

    def __init__(self, q: QuantizedLayer) -> None:
        super().__init__(q, signed(q.fmt["dt_in"].bits), unsigned(q.fmt["dt"].bits))

    def _pipeline(self, m, en):
        return softplus_stage(m, self.q, self.i.payload, en, "sp")


class Decay(_StreamUnit):
    """Stream unit: ``{dt, ak}`` in, ``dA`` out, ``latency`` cycles later."""

    latency = DECAY_LATENCY

    def __init__(self, q: QuantizedLayer) -> None:
        layout = data.StructLayout({"dt": unsigned(q.fmt["dt"].bits),
                                    "ak": signed(q.spec.param_bits)})
        super().__init__(q, layout, unsigned(q.fmt["dA"].bits))

    def _pipeline(self, m, en):
        return decay_stage(m, self.q, self.i.payload.dt, self.i.payload.ak, en, "decay")
