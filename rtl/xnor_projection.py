"""Bit-serial XNOR-popcount projection unit: a binary-weight matrix times a multi-bit vector.

Computes FBI-Linear exactly as the golden model's :func:`model.golden.layer.project` does
(docs/fixed_point.md, section 4): per token, ``y = sat(rs(((S a + corr) << beta_frac + beta·a)
* mult, beta_frac + mult_frac))`` with ``S`` in {-1, +1} stored as bits.

Schedule: the array holds ``pe`` rows × ``simd`` columns. For each row group ``r`` (``pe`` output
rows), each fold ``f`` (``simd`` input columns) and each activation bit-plane ``k``, one cycle
computes ``pe`` popcounts of ``XNOR(w[r, f], b_k[f])`` and shift-accumulates them with the
plane weight. A token therefore takes ``ceil(d_in/simd) * ceil(d_out/pe) * act_bits`` cycles;
the weight word of ``(r, f)`` is read once and reused for the ``act_bits`` planes. While row
group 0 runs, a masked adder tree accumulates the beta term ``sum_j beta_j a_j`` (no
multipliers): on plane cycle ``k`` of fold ``f`` it takes slice ``k`` of the fold's columns
(``beta_lanes = ceil(simd / act_bits)`` of them) with every bit-plane of their activations, so
beta is read ``beta_lanes`` values a cycle from a deep, narrow memory. Activations are
double-buffered, so the next token loads while the current one computes and back-to-back tokens
leave no idle cycle.

The tail (row correction, beta term, requantising multiply, rounding, saturation) takes
``tail_lanes`` rows a cycle: all ``pe`` by default, or fewer, sharing its multipliers among the
rows over ``pe / tail_lanes`` cycles of the next row group (the small-FPGA configuration).

Padding: ``d_in`` and ``d_out`` need not be multiples of ``simd`` and ``pe``. Pad columns have
weight bit 0 and activation 0 (the unit zeroes the unused lanes of a token's last input beat);
the row correction constant accounts for them. Pad rows have zero constants and output 0.

Weights and constants are written through the ``load`` stream while the unit is idle
(:func:`memory_images` builds the words from an export).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.golden.fixedpoint import signed_bits

from .bram import registered_ram
from .dsp import KEEP, MUL_LATENCY, pipelined_mul
from .nonlinear import _delay, _reg
from .stall import output_register

if TYPE_CHECKING:
    # model.golden.layer and model.golden.quantize import torch; kept out of this module's import so that a
    # command line can check a ProjectionConfig in a fraction of a second.
    from model.golden.quantize import BinaryProjection

__all__ = ["LoadTarget", "ProjectionConfig", "XnorProjection", "memory_images"]


class LoadTarget:
    """Values of the ``load`` stream's ``sel`` field."""

    WEIGHTS = 0  # addr = r * folds + f; data = pe * simd sign bits, row p at bits [p*simd, (p+1)*simd)
    BETA = 1  # addr = f * act_bits + k; data = beta_lanes signed beta values (slice k of fold f)
    ROWS = 2  # addr = r * tail_slices + s; data = {corr[tail_rows], mult[tail_rows]}
    OFFSET = 3  # data = beta offset (bipolar activations only: -sum beta)


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (
        hi is None or value <= hi)
    if not ok:
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer in {rng}, not {value!r}")
    return value


def check_array_fields(c, act_bits_min: int) -> None:
    """The limits shared by the projection units' configurations: shape, array, activation
    width and the constants' widths (``tree_levels_per_stage`` too)."""
    _check_int("d_in", c.d_in, 1)
    _check_int("d_out", c.d_out, 1)
    _check_int("simd", c.simd, 1, 4096)
    _check_int("pe", c.pe, 1, 1024)
    _check_int("act_bits", c.act_bits, act_bits_min, 16)
    _check_int("beta_bits", c.beta_bits, 2, 32)
    _check_int("beta_frac", c.beta_frac, 0, 40)
    _check_int("mult_bits", c.mult_bits, 1, 32)
    _check_int("mult_frac", c.mult_frac, 0, 40)
    _check_int("out_bits", c.out_bits, 2, 48)
    _check_int("tree_levels_per_stage", c.tree_levels_per_stage, 1, 16)


@dataclass(frozen=True)
class ProjectionConfig:
    """Generator parameters of :class:`XnorProjection`.

    Parameters
    ----------
    d_in, d_out : int
        Matrix shape (columns = activation length, rows = outputs).
    simd : int
        Weight columns per cycle (input lanes).
    pe : int
        Output rows per cycle (output lanes).
    act_bits : int
        Activation bits, 1 to 16; 1 is bipolar ({-1, +1} coded as {0, 1}).
    beta_bits, mult_bits : int
        Widths of the beta/alpha constants (signed) and the requantisation multiplier (unsigned).
    beta_frac, mult_frac : int
        Fraction bits of beta and of the multiplier; the output shift is their sum.
    out_bits : int
        Output saturation width.
    tree_levels_per_stage : int
        Adder-tree levels between pipeline registers in the popcount and beta trees.
    tail_lanes : int or None
        Rows the tail (correction, beta, multiply, requantise) takes per cycle; a divisor of
        ``pe``; None (the default) is ``pe`` (:attr:`tail_rows`, kept None so that a copy with
        another ``pe`` keeps a tail per row). Fewer lanes share the tail's multipliers among
        the rows: ``pe / tail_lanes`` cycles per row group, which must not exceed the row
        group's ``folds * act_bits`` cycles, and as many cycles more latency.

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names it and the allowed values.
    """

    d_in: int
    d_out: int
    simd: int
    pe: int
    act_bits: int = 8
    beta_bits: int = 16
    beta_frac: int = 16
    mult_bits: int = 16
    mult_frac: int = 16
    out_bits: int = 16
    tree_levels_per_stage: int = 2
    tail_lanes: int | None = None

    def __post_init__(self) -> None:
        check_array_fields(self, act_bits_min=1)
        if self.simd > self.d_in:
            raise ValueError(f"simd must be in [1, d_in = {self.d_in}], not {self.simd}")
        if self.pe > self.d_out:
            raise ValueError(f"pe must be in [1, d_out = {self.d_out}], not {self.pe}")
        if self.tail_lanes is None:
            return
        _check_int("tail_lanes", self.tail_lanes, 1, self.pe)
        divisors = [d for d in range(1, self.pe + 1) if self.pe % d == 0]
        if self.pe % self.tail_lanes:
            raise ValueError(f"tail_lanes must divide pe = {self.pe} (one of {divisors}), "
                             f"not {self.tail_lanes}")
        cycles = self.folds * self.act_bits
        if self.tail_slices > cycles:
            fast = [d for d in divisors if self.pe // d <= cycles]
            raise ValueError(
                f"tail_lanes must be one of {fast}: the tail takes pe / tail_lanes = "
                f"{self.tail_slices} cycles per row group, and a row group lasts folds * "
                f"act_bits = {cycles} cycles; not {self.tail_lanes}")

    @classmethod
    def from_projection(cls, p: BinaryProjection, simd: int, pe: int, **kw) -> "ProjectionConfig":
        """Parameters of the unit that computes the export ``p`` exactly."""
        return cls(d_in=p.d_in, d_out=p.d_out, simd=simd, pe=pe, act_bits=p.act.bits,
                   beta_bits=p.beta_bits, beta_frac=p.beta_frac, mult_bits=p.mult_bits,
                   mult_frac=p.mult_frac, out_bits=p.out_bits, **kw)

    # -- derived sizes ---------------------------------------------------------------------

    @property
    def folds(self) -> int:
        """``ceil(d_in / simd)``: input beats per token."""
        return -(-self.d_in // self.simd)

    @property
    def row_groups(self) -> int:
        """``ceil(d_out / pe)``: output beats per token."""
        return -(-self.d_out // self.pe)

    @property
    def cycles_per_token(self) -> int:
        """Steady-state cycles per token: ``folds * row_groups * act_bits``."""
        return self.folds * self.row_groups * self.act_bits

    @property
    def beta_lanes(self) -> int:
        """``ceil(simd / act_bits)``: beta values read per cycle. Fold ``f``'s betas are read
        over its ``act_bits`` plane cycles, slice ``k`` on plane ``k``, each with every bit of
        its lanes' activations."""
        return -(-self.simd // self.act_bits)

    @property
    def tail_rows(self) -> int:
        """Rows the tail takes per cycle: ``tail_lanes``, or ``pe`` if that is None."""
        return self.pe if self.tail_lanes is None else self.tail_lanes

    @property
    def tail_slices(self) -> int:
        """``pe / tail_rows``: cycles the tail takes per row group."""
        return self.pe // self.tail_rows

    @property
    def tree_stages(self) -> int:
        """Pipeline registers of the popcount and beta adder trees (the longer of the two; the
        shorter is delayed to it): ``simd`` leaves and ``beta_lanes * act_bits`` leaves."""
        return max(_tree_stages(self.simd, self.tree_levels_per_stage),
                   _tree_stages(self.beta_lanes * self.act_bits, self.tree_levels_per_stage))

    @property
    def pipeline_depth(self) -> int:
        """Cycles from issuing the last (fold, plane) of a row group to its output beat.

        issue -> memory read (1) -> the read words registered (1) -> operand registers (1) ->
        adder tree (tree_stages) -> plane weight (1) -> accumulate (1) -> the tail
        (:data:`TAIL_LATENCY`: correction, beta, multiply, round, saturate); with a shared
        tail (``tail_slices`` > 1) the accumulators are held (1) and the row slices enter the
        tail one a cycle (``tail_slices - 1`` more).
        """
        serial = self.tail_slices if self.tail_slices > 1 else 0
        return 3 + self.tree_stages + 2 + TAIL_LATENCY + serial

    @property
    def latency(self) -> int:
        """Extra cycles of a lone token over :attr:`cycles_per_token`: filling the activation
        buffer (``folds`` beats) plus :attr:`pipeline_depth`. A burst of n back-to-back tokens
        takes ``n * cycles_per_token + latency`` cycles from first input to last output beat.
        """
        return self.folds + self.pipeline_depth

    @property
    def corr_bits(self) -> int:
        """|corr| <= 2 * folds * simd (bipolar case; the two's complement case is half)."""
        return signed_bits(2 * self.folds * self.simd)

    @property
    def plane_coef_max(self) -> int:
        return 2 if self.act_bits == 1 else (1 << self.act_bits) - 1

    @property
    def acc_bits(self) -> int:
        """``|sum_k c_k pc_k| <= sum_k |c_k| * folds * simd``."""
        return signed_bits(self.plane_coef_max * self.folds * self.simd)

    @property
    def beta_acc_bits(self) -> int:
        """``|sum_k c_k sum_j beta_j b_kj| + |offset| <= (sum_k |c_k| + 1) * n * 2^(beta_bits-1)``."""
        return signed_bits((self.plane_coef_max + 1) * self.folds * self.simd
                           * (1 << (self.beta_bits - 1)))

    @property
    def sum_bits(self) -> int:
        """``((acc + corr) << beta_frac) + beta term``."""
        return tail_sum_bits(self.acc_bits, self.corr_bits, self.beta_acc_bits, self.beta_frac)

    @property
    def prod_bits(self) -> int:
        return tail_prod_bits(self.sum_bits, self.mult_bits)

    @property
    def out_shift(self) -> int:
        return self.beta_frac + self.mult_frac

    # -- stream payload layouts ------------------------------------------------------------

    @property
    def act_layout(self) -> data.ArrayLayout:
        lane = unsigned(1) if self.act_bits == 1 else signed(self.act_bits)
        return data.ArrayLayout(lane, self.simd)

    @property
    def out_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.out_bits), self.pe)

    @property
    def rows_layout(self) -> data.StructLayout:
        """A row-constant word: ``tail_rows`` rows' correction and multiplier."""
        return data.StructLayout({
            "corr": data.ArrayLayout(signed(self.corr_bits), self.tail_rows),
            "mult": data.ArrayLayout(unsigned(self.mult_bits), self.tail_rows),
        })

    @property
    def load_data_bits(self) -> int:
        return max(self.pe * self.simd, self.beta_lanes * self.beta_bits,
                   self.rows_layout.size, self.beta_acc_bits)

    @property
    def load_layout(self) -> data.StructLayout:
        depth = max(self.row_groups * self.folds, self.folds * self.act_bits,
                    self.row_groups * self.tail_slices, 2)
        return data.StructLayout({
            "sel": unsigned(2),
            "addr": unsigned(math.ceil(math.log2(depth))),
            "data": unsigned(self.load_data_bits),
        })


@dataclass(frozen=True)
class MemoryImages:
    """Words to write through ``load`` (see :class:`LoadTarget`), as Python ints."""

    weights: list[int]
    beta: list[int]
    rows: list[int]
    beta_offset: int

    def beats(self) -> list[tuple[int, int, int]]:
        """All writes as ``(sel, addr, data)``, data as an unsigned int."""
        out = [(LoadTarget.WEIGHTS, a, w) for a, w in enumerate(self.weights)]
        out += [(LoadTarget.BETA, a, w) for a, w in enumerate(self.beta)]
        out += [(LoadTarget.ROWS, a, w) for a, w in enumerate(self.rows)]
        return out + [(LoadTarget.OFFSET, 0, self.beta_offset)]


def _pack(values, bits: int) -> int:
    """Little-endian concatenation of ``values`` (two's complement, ``bits`` each)."""
    word = 0
    mask = (1 << bits) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def memory_images(cfg: ProjectionConfig, p: BinaryProjection) -> MemoryImages:
    """The memory contents that make the unit compute ``p`` (weights, beta, rows, offset).

    Raises
    ------
    ValueError
        If ``cfg`` was not made for ``p`` (shapes or constant widths differ).
    """
    from model.golden.layer import row_correction

    want = ProjectionConfig.from_projection(p, cfg.simd, cfg.pe,
                                            tree_levels_per_stage=cfg.tree_levels_per_stage,
                                            tail_lanes=cfg.tail_lanes)
    if want != cfg:
        raise ValueError(f"config {cfg} does not match the projection's {want}")
    F, R, S, P, B = cfg.folds, cfg.row_groups, cfg.simd, cfg.pe, cfg.act_bits
    L, T = cfg.beta_lanes, cfg.tail_rows
    sign = np.zeros((R * P, F * S), np.uint8)
    sign[: p.d_out, : p.d_in] = p.sign_matrix() > 0
    weights = []
    for r in range(R):
        for f in range(F):
            block = sign[r * P : (r + 1) * P, f * S : (f + 1) * S]  # (P, S)
            weights.append(int.from_bytes(
                np.packbits(block.reshape(-1), bitorder="little").tobytes(), "little"))
    beta = np.zeros((F, B * L), np.int64)  # fold f, lane j (lanes simd and up are padding)
    padded = np.zeros(F * S, np.int64)
    padded[: p.d_in] = p.beta
    beta[:, :S] = padded.reshape(F, S)
    beta_words = [_pack(beta[f, k * L : (k + 1) * L], cfg.beta_bits)
                  for f in range(F) for k in range(B)]
    corr = np.zeros(R * P, np.int64)
    corr[: p.d_out] = row_correction(p, F * S)
    mult = np.zeros(R * P, np.int64)
    mult[: p.d_out] = p.mult
    rows = [  # row slice i = rows [i * T, (i + 1) * T), i = r * tail_slices + s
        _pack(corr[i * T : (i + 1) * T], cfg.corr_bits)
        | (_pack(mult[i * T : (i + 1) * T], cfg.mult_bits) << (T * cfg.corr_bits))
        for i in range(R * cfg.tail_slices)
    ]
    _, offset = p.act.plane_weights()
    beta_offset = offset * int(p.beta.sum())
    return MemoryImages(weights, beta_words, rows,
                        beta_offset & ((1 << cfg.load_data_bits) - 1))


def _tree_stages(leaves: int, levels_per_stage: int) -> int:
    """Registers of :func:`_adder_tree` and :func:`_popcount_tree` over ``leaves`` leaves."""
    levels = math.ceil(math.log2(leaves)) if leaves > 1 else 0
    return max(1, math.ceil(levels / levels_per_stage))


def _adder_tree(m: Module, leaves: list, levels_per_stage: int, enable, name: str):
    """Sum ``leaves`` pairwise, registering every ``levels_per_stage`` levels (at least once).

    Returns the registered sum and the number of register stages.
    """
    values = list(leaves)
    level = stages = 0
    while len(values) > 1 or stages == 0:
        if len(values) > 1:
            nxt = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
            if len(values) % 2:
                nxt.append(values[-1])
            values = nxt
            level += 1
        if level % levels_per_stage == 0 or len(values) == 1:
            regs = []
            for i, v in enumerate(values):
                reg = Signal(v.shape(), name=f"{name}_s{stages}_{i}")
                with m.If(enable):
                    m.d.sync += reg.eq(v)
                regs.append(reg)
            values = regs
            stages += 1
    return values[0], stages


SEGMENT_BITS = 16  # longest carry chain of a popcount level, unless a field is wider


def _popcount_tree(m: Module, bits, width: int, levels_per_stage: int, enable, name: str):
    """Population count of ``bits`` (``width`` wide) as a pipelined tree of adders.

    Level l adds adjacent fields of 2^(l-1) bits into fields of 2^l bits. The adders of a level
    are written as masked adds of whole segments of fields (:data:`SEGMENT_BITS`, or one field
    when fields are wider): each field has a spare top bit, so no carry crosses a field
    boundary and a segment add is exactly its fields' independent adders. (Few operations per
    level keep a 16 x 64 array simulating at full speed; segments keep the FPGA's carry chains
    short: a 64-bit chain alone takes 2.6 ns on the ECP5.) A register follows every
    ``levels_per_stage`` levels and the last.
    """
    levels = max(1, math.ceil(math.log2(width))) if width > 1 else 0
    span = 1 << levels
    v = Value.cast(bits)
    v = Cat(v, Const(0, span - len(v))) if len(v) < span else v
    stages = 0
    for level in range(1, levels + 1):
        half = 1 << (level - 1)
        # One add per segment of fields: no carry crosses a field boundary, so cutting the
        # word at field boundaries changes nothing but the length of the carry chains.
        field = 2 * half
        seg = max(field, SEGMENT_BITS)
        parts = []
        for lo in range(0, span, seg):
            w = min(seg, span - lo)
            mask = sum(((1 << half) - 1) << (i * field) for i in range(w // field))
            x = v[lo: lo + w]
            parts.append(((x & mask) + ((x >> half) & mask))[:w])
        v = Cat(*parts)
        if level % levels_per_stage == 0 or level == levels:
            reg = Signal(span, name=f"{name}_s{stages}")
            with m.If(enable):
                m.d.sync += reg.eq(v)
            v, stages = reg, stages + 1
    if stages == 0:
        reg = Signal(1, name=f"{name}_s0")
        with m.If(enable):
            m.d.sync += reg.eq(v)
        v, stages = reg, 1
    return v[: max(1, width.bit_length())], stages


def tail_sum_bits(acc_bits: int, corr_bits: int, beta_term_bits: int, beta_frac: int) -> int:
    """Width of ``((acc + corr) << beta_frac) + beta term`` from its operands' widths."""
    acc = (1 << (acc_bits - 1)) + (1 << (corr_bits - 1))
    return signed_bits((acc << beta_frac) + (1 << (beta_term_bits - 1)))


def tail_prod_bits(sum_bits: int, mult_bits: int) -> int:
    """Width of ``sum * mult`` (``mult`` unsigned)."""
    return signed_bits((1 << (sum_bits - 1)) * ((1 << mult_bits) - 1))


REQUANT_LATENCY = 2  # round half up (1), saturate into the output register (1)
TAIL_LATENCY = 2 + MUL_LATENCY + REQUANT_LATENCY  # requant_tail's registers


def requant_output(m: Module, c, prods: list, valid, payload, pvalid, adv) -> None:
    """The projections' last two stages: each product rounded half up by ``c.out_shift`` and
    registered, then saturated to ``c.out_bits`` onto ``payload`` (combinational, for
    :func:`rtl.stall.output_register`, whose head register is the second stage), ``valid``
    from ``pvalid``; the registers are enabled by ``adv``."""
    lo, hi = -(1 << (c.out_bits - 1)), (1 << (c.out_bits - 1)) - 1
    v = Signal(name="rnd_valid")
    with m.If(adv):
        m.d.sync += v.eq(pvalid)
    m.d.comb += valid.eq(v)
    for p, prod in enumerate(prods):
        # A shift wider than the product leaves 0 or -1: keep two bits for it.
        rounded = Signal(signed(max(c.prod_bits - c.out_shift + 1, 2)), name=f"rnd{p}")
        with m.If(adv):
            if c.out_shift > 0:
                m.d.sync += rounded.eq((prod + (1 << (c.out_shift - 1))) >> c.out_shift)
            else:
                m.d.sync += rounded.eq(prod)
        m.d.comb += payload[p].eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded)))


def requant_tail(m: Module, c, accs: list, corrs: list, beta, mults: list, valid, sink,
                 adv) -> None:
    """The projections' tail, from a row group's finished accumulators to ``sink`` (the
    ``(valid, payload)`` of :func:`rtl.stall.output_register`), one register per step
    (:data:`TAIL_LATENCY` in all, the last the output register, every one enabled by ``adv``):

    1. ``acc + corr`` per row; the beta term and the multipliers held;
    2. ``t = ((acc + corr) << beta_frac) + beta``, ``c.sum_bits`` wide;
    3. to 6. ``t * mult`` (:func:`rtl.dsp.pipelined_mul`, :data:`rtl.dsp.MUL_LATENCY`);
    7. and 8. :func:`requant_output`.
    """
    b1 = _reg(m, beta, adv, "tail_beta")
    prods = []
    for p, (acc, corr, mult) in enumerate(zip(accs, corrs, mults)):
        ac = _reg(m, acc + corr, adv, f"tail_ac{p}")
        t = _reg(m, (ac << c.beta_frac) + b1, adv, f"t{p}", signed(c.sum_bits))
        prod = pipelined_mul(m, t, _delay(m, mult, 2, adv, f"tail_mult{p}"), adv, f"prod{p}")
        prods.append(prod[: c.prod_bits].as_signed())
    requant_output(m, c, prods, *sink, _delay(m, valid, 2 + MUL_LATENCY, adv, "tail_v"), adv)


class XnorProjection(wiring.Component):
    """Bit-serial XNOR-popcount projection (see the module docstring for the schedule).

    Parameters
    ----------
    config : ProjectionConfig

    Members
    -------
    act : ``In(stream.Signature(config.act_layout))``
        ``folds`` beats per token, ``simd`` activations each (column ``f*simd + j`` in lane j).
    out : ``Out(stream.Signature(config.out_layout))``
        ``row_groups`` beats per token, ``pe`` outputs each (row ``r*pe + p`` in lane p).
    load : ``In(stream.Signature(config.load_layout))``
        Memory writes; always ready. Write only while no token is in flight.
    """

    def __init__(self, config: ProjectionConfig) -> None:
        if not isinstance(config, ProjectionConfig):
            self._MustUse__silence = True  # never elaborated; no "unused" warning for it
            raise TypeError(f"config must be a ProjectionConfig, not {config!r}")
        self.config = config
        super().__init__({
            "act": In(stream.Signature(config.act_layout)),
            "out": Out(stream.Signature(config.out_layout)),
            "load": In(stream.Signature(config.load_layout)),
        })

    def elaborate(self, platform):
        c = self.config
        F, R, B, S, P = c.folds, c.row_groups, c.act_bits, c.simd, c.pe
        L, n = c.beta_lanes, c.tail_slices
        m = Module()

        # Depth >= 2 keeps every address at least one bit wide when a dimension is 1.
        # (The memories are made with their read logic below.) Beta, and with a shared tail the
        # row constants, are read a slice a cycle (beta_lanes values, tail_rows rows), so their
        # memories are deep and narrow rather than shallow and wide: an iCE40 block RAM is 16
        # bits wide whatever its depth.
        ld = self.load.payload

        # -- load path ---------------------------------------------------------------------
        # Loaded state, like the memories: a reset must not clear it.
        beta_offset = Signal(signed(c.beta_acc_bits), reset_less=True)
        m.d.comb += self.load.ready.eq(1)
        rows_load = (ld.addr, ld.data[: c.rows_layout.size],
                     self.load.valid & (ld.sel == LoadTarget.ROWS))
        with m.If(self.load.valid & (ld.sel == LoadTarget.OFFSET)):
            m.d.sync += beta_offset.eq(ld.data[: c.beta_acc_bits])

        # -- activation input: transpose each beat into bit-planes, double-buffered ----------
        full = Signal(2)
        wbuf = Signal()
        wfold = Signal(range(max(F, 2)))  # counters keep one bit when a dimension is 1
        a_wen = Signal()
        a_waddr = Signal(range(2 * F))
        lanes = []
        for j in range(S):
            lane = Value.cast(self.act.payload[j])
            if F * S > c.d_in and j >= c.d_in - (F - 1) * S:
                lane = Mux(wfold == F - 1, 0, lane)  # pad columns of the last fold
            lanes.append(lane)
        planes = [Cat(*(lane[k] for lane in lanes)) for k in range(B)]
        m.d.comb += [
            self.act.ready.eq(~full.bit_select(wbuf, 1)),
            a_waddr.eq(wbuf * F + wfold),
            a_wen.eq(self.act.valid & self.act.ready),
        ]
        set_full = Signal(2)
        with m.If(self.act.valid & self.act.ready):
            with m.If(wfold == F - 1):
                m.d.sync += [wfold.eq(0), wbuf.eq(~wbuf)]
                m.d.comb += set_full.eq(Mux(wbuf, 0b10, 0b01))
            with m.Else():
                m.d.sync += wfold.eq(wfold + 1)

        # -- issue: (r, f, k) counters -------------------------------------------------------
        # Global pipeline enable, a register: low only while the output is stalled.
        adv, *sink = output_register(m, self.out)
        rbuf = Signal()
        r = Signal(range(max(R, 2)))
        f = Signal(range(max(F, 2)))
        k = Signal(range(max(B, 2)))
        issue = Signal()
        clr_full = Signal(2)
        m.d.comb += issue.eq(adv & full.bit_select(rbuf, 1))
        last_k, last_f, last_r = k == B - 1, f == F - 1, r == R - 1
        with m.If(issue):
            m.d.sync += k.eq(Mux(last_k, 0, k + 1))
            with m.If(last_k):
                m.d.sync += f.eq(Mux(last_f, 0, f + 1))
                with m.If(last_f):
                    m.d.sync += r.eq(Mux(last_r, 0, r + 1))
                    with m.If(last_r):
                        m.d.sync += rbuf.eq(~rbuf)
                        m.d.comb += clr_full.eq(Mux(rbuf, 0b10, 0b01))
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # The weights, the activation buffer (two tokens, one word per fold holding its B
        # bit-planes) and beta: RAMs whose read word is registered twice (rtl/bram.py), so that
        # on the ECP5 a block RAM's own output register takes it. A block RAM's
        # clock-to-output is most of a cycle there (5.8 ns of 8).
        # A (row group, fold) word serves all B planes: read it on plane 0 and let the read
        # ports hold it for the other planes (a synchronous port keeps its data while disabled),
        # so each weight bit leaves the RAM once per token. Beta is needed in row group 0 only,
        # slice k of fold f on plane k.
        first_plane = Signal()
        m.d.comb += first_plane.eq(k == 0)
        wraw = registered_ram(m, "wmem", P * S, max(R * F, 2), w_addr=ld.addr,
                              w_data=ld.data[: P * S],
                              w_en=self.load.valid & (ld.sel == LoadTarget.WEIGHTS),
                              r_addr=r * F + f, r_en=adv & first_plane, o_en=adv)
        araw = registered_ram(m, "amem", B * S, 2 * F, w_addr=a_waddr, w_data=Cat(*planes),
                              w_en=a_wen, r_addr=rbuf * F + f, r_en=adv & first_plane,
                              o_en=adv)
        bq = registered_ram(m, "bmem", L * c.beta_bits, max(F * B, 2), w_addr=ld.addr,
                            w_data=ld.data[: L * c.beta_bits],
                            w_en=self.load.valid & (ld.sel == LoadTarget.BETA),
                            r_addr=f * B + k, r_en=adv & (r == 0), o_en=adv)
        braw = data.View(data.ArrayLayout(signed(c.beta_bits), L), bq)

        meta_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "beta": 1, "k": range(max(B, 2)),
            "r": range(max(R, 2))})
        meta0 = Signal(meta_layout)
        m.d.comb += [
            meta0.valid.eq(issue), meta0.first.eq((f == 0) & (k == 0)),
            meta0.last.eq(last_f & last_k), meta0.beta.eq(r == 0), meta0.k.eq(k), meta0.r.eq(r),
        ]
        meta1 = Signal(meta_layout)
        with m.If(adv):
            m.d.sync += meta1.eq(meta0)

        # -- the read words, registered as they leave the RAMs (stage 2) ----------------------
        meta_r = Signal(meta_layout)
        with m.If(adv):
            m.d.sync += meta_r.eq(meta1)

        # -- operand registers: the plane of this cycle, the weight word and beta (stage 3) --
        # The plane select (a B:1 multiplexer on every lane) gets a cycle of its own, so the
        # first adders of the trees start from flip-flops.
        # The plane is registered once per row tree (KEEP: apart in synthesis too): one
        # register per bit would drive P trees spread over the chip (measured on the (64, 16)
        # array: 3.6 ns of routing from one register to a distant tree).
        planes = [Signal(S, name=f"plane{p}", attrs=KEEP) for p in range(P)]
        # The beta leaves: slice k of the fold, lanes [k L, (k + 1) L), each lane's beta
        # masked by each bit b of its activation (lanes past simd are 0) and, for the top
        # plane's negative weight, negated. Registered here as the tree's leaves, so the
        # tree's first stage starts from flip-flops as the popcount trees' do.
        wword = Signal(P * S)
        meta2 = Signal(meta_layout)
        slices = []
        for kk in range(B):
            slices += [araw[b * S + kk * L + lane] if kk * L + lane < S else Const(0, 1)
                       for b in range(B) for lane in range(L)]
        abits = Cat(*slices).word_select(meta_r.k, L * B)  # bit b L + l: lane l, plane b
        bleaves = []
        with m.If(adv):
            m.d.sync += [wword.eq(wraw), meta2.eq(meta_r)]
            m.d.sync += [pl.eq(araw.word_select(meta_r.k, S)) for pl in planes]
            for b in range(B):
                top = B > 1 and b == B - 1
                for lane in range(L):
                    leaf = Signal(signed(c.beta_bits + top), name=f"beta_leaf{b}_{lane}")
                    m.d.sync += leaf.eq(Mux(abits[b * L + lane],
                                            -braw[lane] if top else braw[lane], 0))
                    bleaves.append(leaf)

        # -- XNOR-popcount and masked beta trees (stage 4 onwards) ---------------------------
        # The beta leaves weigh c_b (2^b, the top plane -2^(B-1) by its negated leaves, bipolar
        # 2); their sum is sum_j beta_j a_j over the slice's lanes. There are at least as many
        # as popcount leaves: the popcounts are delayed to the beta tree.
        popcounts = []
        for p in range(P):
            xnor = ~(wword[p * S : (p + 1) * S] ^ planes[p])
            pc, stages = _popcount_tree(m, xnor, S, c.tree_levels_per_stage, adv, f"pc{p}")
            popcounts.append(_delay(m, pc, c.tree_stages - stages, adv, f"pc{p}_al"))
        shifts = [1 if B == 1 else b for b in range(B) for _ in range(L)]
        leaves = [leaf << sh for leaf, sh in zip(bleaves, shifts)]
        bsum, bstages = _adder_tree(m, leaves, c.tree_levels_per_stage, adv, "beta")
        assert bstages == c.tree_stages  # beta_lanes * act_bits >= simd leaves
        meta_t = meta2
        for i in range(c.tree_stages):
            nxt = Signal(meta_layout, name=f"meta_tree{i}")
            with m.If(adv):
                m.d.sync += nxt.eq(meta_t)
            meta_t = nxt

        # -- shift-accumulate with the plane weight c_k --------------------------------------
        # Plane k weighs 2^k, the top plane -2^(B-1); bipolar planes (B = 1) weigh 2 (a = 2b -
        # 1, the -1 is in the row and beta constants). The shifted popcounts are registered
        # with the sign of their plane; the accumulator adds or subtracts them (two adders
        # and a multiplexer: no negation in front of the carry chain).
        meta_w = Signal(meta_layout)
        neg = Signal()
        terms = [Signal(c.acc_bits - 1, name=f"term{p}") for p in range(P)]
        bterm = Signal(signed(c.beta_acc_bits))
        with m.If(adv):
            m.d.sync += [meta_w.eq(meta_t), neg.eq((meta_t.k == B - 1) & (B > 1))]
            for p in range(P):
                m.d.sync += terms[p].eq(popcounts[p] << (1 if B == 1 else meta_t.k))
            m.d.sync += bterm.eq(bsum)

        def accumulate(acc, term):
            base = Mux(meta_w.first, 0, acc)
            return Mux(neg, base - term, base + term)

        accs = [Signal(signed(c.acc_bits), name=f"acc{p}") for p in range(P)]
        cacc = Signal(signed(c.beta_acc_bits))
        with m.If(adv & meta_w.valid):
            for p in range(P):
                m.d.sync += accs[p].eq(accumulate(accs[p], terms[p]))
            with m.If(meta_w.beta):
                m.d.sync += cacc.eq(Mux(meta_w.first, 0, cacc) + bterm)
        meta_a = Signal(meta_layout)
        with m.If(adv):
            m.d.sync += meta_a.eq(meta_w)

        # -- beta term of the token, then the tail (correction, beta, multiply, requantise) --
        ctok = Signal(signed(c.beta_acc_bits))  # beta term of the token in flight
        cfin = Signal(signed(c.beta_acc_bits))
        m.d.comb += cfin.eq(Mux(meta_a.beta, cacc + beta_offset, ctok))
        done = adv & meta_a.valid & meta_a.last
        with m.If(done & meta_a.beta):
            m.d.sync += ctok.eq(cfin)
        if n == 1:
            # Row constants arrive with the finished accumulators (a shallow memory, R words).
            cmem = Memory(shape=c.rows_layout, depth=max(R, 2), init=[])
            m.submodules.cmem = cmem
            wp, cp_r = cmem.write_port(), cmem.read_port()
            m.d.comb += [wp.addr.eq(rows_load[0]), Value.cast(wp.data).eq(rows_load[1]),
                         wp.en.eq(rows_load[2]), cp_r.addr.eq(meta_w.r), cp_r.en.eq(adv)]
            requant_tail(m, c, accs, [cp_r.data.corr[p] for p in range(P)], cfin,
                         [cp_r.data.mult[p] for p in range(P)], meta_a.valid & meta_a.last,
                         sink, adv)
        else:
            _shared_tail(m, c, accs, cfin, rows_load, adv & meta_w.valid & meta_w.last, done,
                         sink, adv)
        return m


def _shared_tail(m: Module, c: ProjectionConfig, accs: list, beta, rows_load, wdone, done,
                 sink, adv) -> None:
    """A tail of ``tail_lanes`` rows shared by the row group's ``pe`` rows.

    At ``done`` the accumulators and the beta term are held (the array goes on with the next
    row group); then the held rows shift into the tail ``tail_lanes`` a cycle, each slice with
    its row constants. Those are read in order (the slices of the row groups follow each
    other, so the address is a counter) from a RAM whose word is registered twice
    (:func:`rtl.bram.registered_ram`: ``row_groups * tail_slices`` words may be a block RAM),
    so slice 0 is read a cycle before ``done`` (``wdone``: the row group's last accumulate
    is issued). The tail's results shift into a gather register, and the last slice's
    results join them in the output beat: ``tail_slices`` cycles after the parallel tail's.
    """
    P, T, n, R = c.pe, c.tail_rows, c.tail_slices, c.row_groups
    hold = [Signal(signed(c.acc_bits), name=f"hold{p}") for p in range(P)]
    hbeta = Signal(signed(c.beta_acc_bits))
    active = Signal()  # a slice is in front of the tail
    slot = Signal(range(n))  # which
    caddr = Signal(range(R * n))
    last = Signal()
    m.d.comb += last.eq(slot == n - 1)
    # Slice s is read two cycles before it is in front of the tail: slice 0 at wdone, 1 at
    # done, s >= 2 while slice s - 2 is.
    read = Signal()
    ahead = active & (slot < n - 2) if n > 2 else Const(0, 1)
    m.d.comb += read.eq(wdone | done | (adv & ahead))
    rows = data.View(c.rows_layout, registered_ram(
        m, "cmem", c.rows_layout.size, R * n, w_addr=rows_load[0], w_data=rows_load[1],
        w_en=rows_load[2], r_addr=caddr, r_en=read, o_en=adv))
    with m.If(read):
        m.d.sync += caddr.eq(Mux(caddr == R * n - 1, 0, caddr + 1))
    with m.If(done):
        m.d.sync += [active.eq(1), slot.eq(0), hbeta.eq(beta)]
        m.d.sync += [h.eq(a) for h, a in zip(hold, accs)]
    with m.Elif(adv & active):
        m.d.sync += [slot.eq(slot + 1), active.eq(~last)]
        m.d.sync += [hold[i].eq(hold[i + T]) for i in range(P - T)]

    tvalid = Signal(name="tail_valid")
    tpay = Signal(data.ArrayLayout(signed(c.out_bits), T), name="tail_out")
    requant_tail(m, c, hold[:T], [rows.corr[t] for t in range(T)], hbeta,
                 [rows.mult[t] for t in range(T)], active, (tvalid, tpay), adv)
    tlast = _delay(m, active & last, TAIL_LATENCY - 1, adv, "tail_last")
    gathered = (n - 1) * T
    gather = [Signal(signed(c.out_bits), name=f"gather{i}") for i in range(gathered)]
    incoming = gather[T:] + [tpay[t] for t in range(T)]
    with m.If(adv & tvalid):
        m.d.sync += [g.eq(v) for g, v in zip(gather, incoming)]
    valid, payload = sink
    m.d.comb += valid.eq(tvalid & tlast)
    m.d.comb += [payload[i].eq(v) for i, v in enumerate(gather + [tpay[t] for t in range(T)])]
