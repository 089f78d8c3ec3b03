"""Weight-streaming XNOR-popcount projection: FBI-Linear with its weights read from a stream.

Computes exactly what the golden model's :func:`model.golden.layer.project` computes
(docs/fixed_point.md, section 4), like :class:`rtl.xnor_projection.XnorProjection`, but holds no
weight matrix: every weight bit arrives on ``mem`` while the unit computes and is used once.
This is the form batch-1 decode needs, where each weight is used once per token and a model's
weights fit no chip (docs/layer_engine.md).

Per token:

1. ``act``: ``d_in / pe`` beats of ``pe`` activation codes fill the activation buffer (one
   word of ``act_bits x simd`` bits per fold, stored as bit-planes).
2. ``mem``, beta records: for each fold, ``simd`` values of ``beta`` (``beta_beats`` beats);
   the unit accumulates the scalar ``sum_j beta_j a_j`` (``simd`` multiplies a cycle).
3. ``mem``, for each row group (``pe`` output rows): ``folds`` weight beats, each exactly
   ``pe x simd`` sign bits (row p in bits ``[p*simd, (p+1)*simd)``), then one row-constant
   record (``corr`` and ``mult`` of the ``pe`` rows, ``rc_beats`` beats). A weight beat is held
   for ``ceil(act_bits / planes)`` cycles: ``planes`` activation bit-planes are processed per
   cycle (1 = bit-serial, ``act_bits`` = bit-parallel), so the array eats one beat a cycle when
   ``planes = act_bits``. The row-constant record follows the last weight beat down the
   pipeline and finishes the row group: ``y = sat(rs(((acc + corr) << beta_frac + beta.a) *
   mult, beta_frac + mult_frac))``.
4. ``out``: one beat of ``pe`` outputs per row group.

A stall on ``mem`` (a memory bubble) or on ``out`` (backpressure) delays the pipeline and never
changes a result bit: every stage advances on one enable. :func:`pack_projection` (in
``rtl/packer.py``) writes the beats.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.golden.fixedpoint import signed_bits

from .dsp import MUL_LATENCY, pipelined_mul
from .stall import output_register
from .xnor_projection import (
    TAIL_LATENCY, _adder_tree, _check_int, _popcount_tree, _tree_stages, check_array_fields,
    requant_tail, tail_prod_bits, tail_sum_bits,
)

__all__ = ["StreamProjectionConfig", "StreamProjection", "PROJ_TAIL_LATENCY", "divisors", "gather"]

# RC slot issue -> output handshake beyond the popcount tree's stages: operand register (1),
# then the tail (rtl.xnor_projection.requant_tail) from the finished accumulators.
PROJ_TAIL_LATENCY = 1 + TAIL_LATENCY


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, for error messages that list the allowed values."""
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class StreamProjectionConfig:
    """Generator parameters of :class:`StreamProjection`.

    Parameters
    ----------
    d_in, d_out : int
        Matrix shape. ``simd`` must divide ``d_in``; ``d_out`` is padded to a multiple of
        ``pe`` with zero rows.
    simd, pe : int
        Weight columns and rows per beat: a ``mem`` beat is ``pe * simd`` bits. ``pe`` must
        divide ``simd`` (the activation buffer takes ``pe`` codes a cycle).
    act_bits : int
        Activation bits, 2 to 16 (two's complement bit-planes).
    planes : int
        Activation bit-planes per cycle, 1 to ``act_bits``.
    beta_bits, beta_frac, mult_bits, mult_frac, out_bits : int
        As :class:`~rtl.xnor_projection.ProjectionConfig`.
    tree_levels_per_stage : int
        Popcount-tree adder levels between pipeline registers.

    Raises
    ------
    ValueError
        If a parameter is out of range or a dimension does not divide; the message names the
        parameter and the allowed values.
    """

    d_in: int
    d_out: int
    simd: int
    pe: int
    act_bits: int = 8
    planes: int = 8
    beta_bits: int = 16
    beta_frac: int = 16
    mult_bits: int = 16
    mult_frac: int = 16
    out_bits: int = 16
    tree_levels_per_stage: int = 2

    def __post_init__(self) -> None:
        check_array_fields(self, act_bits_min=2)
        _check_int("planes", self.planes, 1, self.act_bits)
        if self.d_in % self.simd:
            raise ValueError(f"simd must divide d_in = {self.d_in} (one of "
                             f"{divisors(self.d_in)}), not {self.simd}")
        if self.simd % self.pe:
            raise ValueError(f"pe must divide simd = {self.simd} (one of "
                             f"{divisors(self.simd)}), not {self.pe}")

    @classmethod
    def from_projection(cls, p, simd: int, pe: int, planes: int | None = None,
                        **kw) -> "StreamProjectionConfig":
        """The unit that computes the export ``p`` (a ``BinaryProjection``) exactly."""
        return cls(d_in=p.d_in, d_out=p.d_out, simd=simd, pe=pe, act_bits=p.act.bits,
                   planes=p.act.bits if planes is None else planes, beta_bits=p.beta_bits,
                   beta_frac=p.beta_frac, mult_bits=p.mult_bits, mult_frac=p.mult_frac,
                   out_bits=p.out_bits, **kw)

    # -- shapes of the stream --------------------------------------------------------------

    @property
    def beat_bits(self) -> int:
        """Width of a ``mem`` beat: one weight word, ``pe x simd`` sign bits."""
        return self.pe * self.simd

    @property
    def folds(self) -> int:
        return self.d_in // self.simd

    @property
    def row_groups(self) -> int:
        return -(-self.d_out // self.pe)

    @property
    def act_beats(self) -> int:
        """``act`` beats per token: ``d_in / pe``."""
        return self.d_in // self.pe

    @property
    def cycles_per_weight(self) -> int:
        """Cycles a weight beat is held: ``ceil(act_bits / planes)``."""
        return -(-self.act_bits // self.planes)

    @property
    def corr_bits(self) -> int:
        """``|corr| <= d_in * 2^(act_bits-1)`` (two's complement planes, no pad columns)."""
        return signed_bits(self.d_in * (1 << (self.act_bits - 1)))

    @property
    def rc_bits(self) -> int:
        """One row's constants: ``corr`` (signed) then ``mult`` (unsigned)."""
        return self.corr_bits + self.mult_bits

    @property
    def beta_beats(self) -> int:
        """Beats of one fold's ``simd`` beta values."""
        return -(-self.simd * self.beta_bits // self.beat_bits)

    @property
    def rc_beats(self) -> int:
        """Beats of one row group's constants."""
        return -(-self.pe * self.rc_bits // self.beat_bits)

    @property
    def mem_beats(self) -> int:
        """``mem`` beats per token."""
        return self.folds * self.beta_beats + self.row_groups * (self.folds + self.rc_beats)

    @property
    def slot_cycles(self) -> int:
        """Issue cycles per token once the activations are in: beta records, weight beats held
        ``cycles_per_weight`` cycles each, row-constant records."""
        return self.folds * self.beta_beats + self.row_groups * (
            self.folds * self.cycles_per_weight + self.rc_beats)

    @property
    def token_cycles(self) -> int:
        """Cycles between back-to-back tokens of the unit alone (activations and weights never
        late): the activation fill, then the slots; the next fill starts after the last."""
        return self.act_beats + self.slot_cycles

    @property
    def latency(self) -> int:
        """A lone token's first ``act`` handshake to its last ``out`` handshake, minus
        :attr:`token_cycles`: the row constants' trip down the pipeline."""
        return self.tail_latency - 1

    @property
    def pop_stages(self) -> int:
        """Register stages of a popcount tree over ``simd`` bits."""
        return _tree_stages(self.simd, self.tree_levels_per_stage)

    @property
    def beta_stages(self) -> int:
        """Register stages of the beta dot product: the ``simd`` products in DSP blocks
        (:data:`rtl.dsp.MUL_LATENCY`), then their adder tree, ``tree_levels_per_stage``
        levels a stage (at least one)."""
        levels = max(self.simd - 1, 0).bit_length()
        return MUL_LATENCY + max(1, -(-levels // self.tree_levels_per_stage))

    @property
    def plane_stages(self) -> int:
        """Register stages of the sum of a row's ``planes`` weighted popcounts (an adder tree,
        ``tree_levels_per_stage`` levels a stage, at least one)."""
        levels = max(self.planes - 1, 0).bit_length()
        return max(1, -(-levels // self.tree_levels_per_stage))

    @property
    def tree_stages(self) -> int:
        """Stage 1 to the accumulators: the longer of the popcount trees with the sum of their
        planes, and the beta dot product (the other is delayed to match)."""
        return max(self.pop_stages + self.plane_stages, self.beta_stages)

    @property
    def tail_latency(self) -> int:
        """Issue of a row group's constants -> its output handshake."""
        return self.tree_stages + PROJ_TAIL_LATENCY

    # -- widths ----------------------------------------------------------------------------

    @property
    def acc_bits(self) -> int:
        """``|sum_k c_k popcount_k| <= (2^act_bits - 1) * d_in``."""
        return signed_bits(((1 << self.act_bits) - 1) * self.d_in)

    @property
    def beta_sum_bits(self) -> int:
        """``|sum_j beta_j a_j| <= d_in * 2^(act_bits-1) * 2^(beta_bits-1)``."""
        return signed_bits(self.d_in * (1 << (self.act_bits - 1)) * (1 << (self.beta_bits - 1)))

    @property
    def sum_bits(self) -> int:
        return tail_sum_bits(self.acc_bits, self.corr_bits, self.beta_sum_bits, self.beta_frac)

    @property
    def prod_bits(self) -> int:
        return tail_prod_bits(self.sum_bits, self.mult_bits)

    @property
    def out_shift(self) -> int:
        return self.beta_frac + self.mult_frac

    @property
    def act_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.act_bits), self.pe)

    @property
    def out_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.out_bits), self.pe)


def gather(m: Module, s, n_max: int, n, take, enable, name: str) -> tuple[Value, Value]:
    """Collect records of ``n`` beats (``n <= n_max``, a Value or int) from stream ``s``.

    Beats before the last of a record are stored as they arrive (while ``enable``); the last is
    taken when ``take``, which the caller drives from the returned ``valid``. Returns
    ``(record, valid)``: beat i of the record in bits ``[i*W, (i+1)*W)``, valid while the
    record's last beat is on the stream.
    """
    W = len(Value.cast(s.payload))
    if n_max == 1:
        m.d.comb += s.ready.eq(take)
        return Value.cast(s.payload), s.valid
    idx = Signal(range(n_max), name=f"{name}_idx")
    held = [Signal(W, name=f"{name}_held{i}") for i in range(n_max - 1)]
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(idx == n - 1)
    m.d.comb += s.ready.eq(Mux(last, take, enable))
    with m.If(s.valid & s.ready):
        with m.If(last):
            m.d.sync += idx.eq(0)
        with m.Else():
            m.d.sync += idx.eq(idx + 1)
            for i in range(n_max - 1):
                with m.If(idx == i):
                    m.d.sync += held[i].eq(s.payload)
    words = [Mux(idx == i, s.payload, held[i]) if i < n_max - 1 else Value.cast(s.payload)
             for i in range(n_max)]
    return Cat(*words), s.valid & last


class StreamProjection(wiring.Component):
    """Weight-streaming projection (see the module docstring).

    Members
    -------
    act : ``In(stream.Signature(config.act_layout))``
        ``d_in / pe`` beats per token, ``pe`` codes each (column ``i*pe + j`` in lane j).
    mem : ``In(stream.Signature(unsigned(config.beat_bits)))``
        Beta records, then per row group its weight beats and row constants.
    out : ``Out(stream.Signature(config.out_layout))``
        ``row_groups`` beats per token (row ``r*pe + p`` in lane p).
    """

    def __init__(self, config: StreamProjectionConfig) -> None:
        if not isinstance(config, StreamProjectionConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a StreamProjectionConfig, not {config!r}")
        self.config = config
        super().__init__({
            "act": In(stream.Signature(config.act_layout)),
            "mem": In(stream.Signature(unsigned(config.beat_bits))),
            "out": Out(stream.Signature(config.out_layout)),
        })

    def elaborate(self, platform):
        c = self.config
        F, R, B, S, P, NP = c.folds, c.row_groups, c.act_bits, c.simd, c.pe, c.planes
        J = c.cycles_per_weight
        m = Module()

        # -- activation buffer: one word per fold, plane-major (plane k in bits [k*S, (k+1)*S))
        chunks = S // P
        amem = Memory(shape=unsigned(B * S), depth=max(F, 2), init=[])
        m.submodules.amem = amem
        ap_w = amem.write_port(granularity=P)
        computing = Signal()  # low: filling the activation buffer
        ai = Signal(range(max(F * chunks, 2)))
        fold_w = Signal(range(max(F, 2)))
        chunk_w = Signal(range(max(chunks, 2)))
        m.d.comb += self.act.ready.eq(~computing)
        codes = [Value.cast(self.act.payload[j]) for j in range(P)]
        planes_in = [Cat(*(code[k] for code in codes)) for k in range(B)]
        m.d.comb += [ap_w.addr.eq(fold_w),
                     ap_w.data.eq(Cat(*(Cat(*([pl] * chunks)) for pl in planes_in)))]
        fill = self.act.valid & self.act.ready
        for k in range(B):
            for ch in range(chunks):
                m.d.comb += ap_w.en[k * chunks + ch].eq(fill & (chunk_w == ch))
        last_fill = ai == F * chunks - 1
        with m.If(fill):
            m.d.sync += ai.eq(Mux(last_fill, 0, ai + 1))
            if chunks > 1:
                m.d.sync += chunk_w.eq(Mux(chunk_w == chunks - 1, 0, chunk_w + 1))
                with m.If(chunk_w == chunks - 1):
                    m.d.sync += fold_w.eq(Mux(fold_w == F - 1, 0, fold_w + 1))
            else:
                m.d.sync += fold_w.eq(Mux(fold_w == F - 1, 0, fold_w + 1))
            with m.If(last_fill):
                m.d.sync += computing.eq(1)

        # -- issue: beta records, then per row group F weight beats (J cycles each) and one
        # row-constant record -------------------------------------------------------------
        # The pipeline's one enable, a register: low only while the output is stalled.
        adv, *sink = output_register(m, self.out)
        in_beta = Signal(init=1)
        in_rc = Signal()
        f = Signal(range(max(F, 2)))
        r = Signal(range(max(R, 2)))
        j = Signal(range(max(J, 2)))
        n_beats = Signal(range(max(c.beta_beats, c.rc_beats, 1) + 1))
        m.d.comb += n_beats.eq(Mux(in_beta, c.beta_beats, Mux(in_rc, c.rc_beats, 1)))
        take = Signal()
        record, rec_valid = gather(m, self.mem, max(c.beta_beats, c.rc_beats, 1), n_beats, take,
                                   adv & computing, "mem")
        weight_slot = ~in_beta & ~in_rc
        issue = Signal()
        m.d.comb += [
            issue.eq(adv & computing & rec_valid),
            # A weight beat is taken on its last plane cycle; records when issued.
            take.eq(issue & (~weight_slot | (j == J - 1))),
        ]
        last_f, last_r, last_j = f == F - 1, r == R - 1, j == J - 1
        with m.If(issue):
            with m.If(in_beta):
                m.d.sync += f.eq(Mux(last_f, 0, f + 1))
                with m.If(last_f):
                    m.d.sync += in_beta.eq(0)
            with m.Elif(in_rc):
                m.d.sync += [in_rc.eq(0), r.eq(Mux(last_r, 0, r + 1))]
                with m.If(last_r):
                    m.d.sync += [in_beta.eq(1), computing.eq(0)]
            with m.Else():
                m.d.sync += j.eq(Mux(last_j, 0, j + 1))
                with m.If(last_j):
                    m.d.sync += f.eq(Mux(last_f, 0, f + 1))
                    with m.If(last_f):
                        m.d.sync += in_rc.eq(1)

        ap_r = amem.read_port()
        # Read only for an issued slot: a free-running read would cost the RAM's read energy every
        # cycle (energy/activity.py measured it); the word holds between issues.
        m.d.comb += [ap_r.addr.eq(f), ap_r.en.eq(issue)]
        meta_layout = data.StructLayout({
            "valid": 1, "beta": 1, "rc": 1, "first": 1, "j": range(max(J, 2))})
        meta0 = Signal(meta_layout)
        m.d.comb += [meta0.valid.eq(issue), meta0.beta.eq(in_beta), meta0.rc.eq(in_rc),
                     meta0.first.eq((f == 0) & (j == 0)), meta0.j.eq(j)]
        rec_w = max(S * c.beta_bits, P * c.rc_bits, c.beat_bits)
        meta1 = Signal(meta_layout)
        pay1 = Signal(rec_w)
        # The record is captured only when issued: its last beat is the weight stream itself,
        # which carries other units' beats in between (energy/activity.py).
        with m.If(adv):
            m.d.sync += meta1.eq(meta0)
        with m.If(issue):
            m.d.sync += pay1.eq(record[:rec_w])

        # -- stage 1: XNOR-popcount of the held planes; beta dot product ----------------------
        word = ap_r.data
        pcs = []  # pcs[p][i]: popcount of row p against plane j*NP + i
        for p in range(P):
            row = pay1[p * S: (p + 1) * S]
            pcs.append([])
            for i in range(NP):
                # plane j*NP + i; one past the top plane (B % NP != 0) is masked in plane_term
                plane = word[i * S: (i + 1) * S] if J == 1 else \
                    word.word_select(meta1.j * NP + i, S)
                pc, stages = _popcount_tree(m, ~(row ^ plane), S, c.tree_levels_per_stage, adv,
                                            f"pc{p}_{i}")
                assert stages == c.pop_stages
                pcs[p].append(self._delay(m, pc, c.tree_stages - c.plane_stages
                                          - c.pop_stages, adv, f"pc{p}_{i}_d"))
        # The beta dot product: each column's product in DSP blocks with their own registers,
        # then a registered adder tree; aligned with the popcounts.
        code_of = [Cat(*(word[k * S + jj] for k in range(B))).as_signed() for jj in range(S)]
        prods = [pipelined_mul(m, pay1[jj * c.beta_bits: (jj + 1) * c.beta_bits].as_signed(),
                               code_of[jj], adv, f"bp{jj}") for jj in range(S)]
        bpart, stages = _adder_tree(m, prods, c.tree_levels_per_stage, adv, "bdot")
        assert MUL_LATENCY + stages == c.beta_stages
        bpart = self._delay(m, bpart, c.tree_stages - c.beta_stages, adv, "bdot_d")
        metas, rc_t = [meta1], pay1[: P * c.rc_bits]
        for i in range(c.tree_stages):
            nm = Signal(meta_layout, name=f"meta_t{i}")
            nr = Signal(P * c.rc_bits, name=f"rc_t{i}")
            with m.If(adv):
                m.d.sync += [nm.eq(metas[-1]), nr.eq(rc_t)]
            metas.append(nm)
            rc_t = nr
        meta_t = metas[-1]

        # -- the plane weights: each row's popcounts summed in a registered adder tree ---------
        mj = metas[c.tree_stages - c.plane_stages]  # the meta beside the delayed popcounts

        def plane_term(pc, i):
            # plane k = j*NP + i weighs 2^k, the top plane -2^(B-1); k >= B does not exist.
            if J == 1:
                return -(pc << i) if i == B - 1 else pc << i
            k = mj.j * NP + i
            v = pc << k
            return Mux(k == B - 1, -v, Mux(k < B, v, 0))

        totals = []
        for p in range(P):
            total, stages = _adder_tree(m, [plane_term(pcs[p][i], i) for i in range(NP)],
                                        c.tree_levels_per_stage, adv, f"ps{p}")
            assert stages == c.plane_stages
            totals.append(total)

        accs = [Signal(signed(c.acc_bits), name=f"acc{p}") for p in range(P)]
        bsum = Signal(signed(c.beta_sum_bits))
        weight_t = meta_t.valid & ~meta_t.beta & ~meta_t.rc
        with m.If(adv):
            with m.If(weight_t):
                for p in range(P):
                    m.d.sync += accs[p].eq(Mux(meta_t.first, 0, accs[p]) + totals[p])
            with m.If(meta_t.valid & meta_t.beta):
                m.d.sync += bsum.eq(Mux(meta_t.first, 0, bsum) + bpart)
        # -- the row constants finish the row group: correction, beta, multiply, requantise --
        rb = c.rc_bits
        corrs = [rc_t[p * rb: p * rb + c.corr_bits].as_signed() for p in range(P)]
        mults = [rc_t[p * rb + c.corr_bits: (p + 1) * rb] for p in range(P)]
        requant_tail(m, c, accs, corrs, bsum, mults, meta_t.valid & meta_t.rc, sink, adv)
        return m

    @staticmethod
    def _delay(m: Module, v, n: int, en, name: str):
        for i in range(n):
            r = Signal(Value.cast(v).shape(), name=f"{name}{i}")
            with m.If(en):
                m.d.sync += r.eq(v)
            v = r
        return v
