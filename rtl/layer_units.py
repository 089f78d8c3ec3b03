"""The stages of a Bi-Mamba layer around the projections and the scan, as stream units.

Each unit computes one golden-model stage bit for bit (docs/fixed_point.md; docs/layer_engine.md
gives the schedule), ``pe`` elements a cycle, with one pipeline enable (``adv``: low only while
the output is stalled):

* :class:`RmsNormUnit`: ``rmsnorm_act`` (the block norm and the gated norm): a pass over the
  input (sum of squares, kept in a buffer), the rsqrt table, and a pass over the buffer with
  the per-channel gains read from the weight stream.
* :class:`ConvUnit`: ``conv`` then ``conv_act``: the causal depthwise conv over the last
  ``d_conv`` tokens, its state of ``d_conv - 1`` inputs per channel on chip, and the SiLU table.
* :class:`GateUnit`: ``gate``: ``y * SiLU(z)``.

The tables are those of the export (:class:`~model.golden.fixedpoint.PwlTable`,
:class:`~model.golden.fixedpoint.RsqrtTable`), read by :func:`rtl.nonlinear.pwl_stage` and
:func:`rsqrt_stage`. Constants that the weight stream carries arrive on a ``mem`` port of
``beat_bits`` bits per beat, a record split over consecutive beats (``rtl/packer.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.golden.fixedpoint import signed_bits

from .dsp import MUL_LATENCY, pipelined_mul
from .nonlinear import (
    PWL_LATENCY, ROUND_VAR_LATENCY, _delay, _reg, _StreamUnit, pwl_stage, round_shift,
    round_shift_var_stage, saturate,
)
from .bram import registered_ram
from .stall import output_register
from .state_swap import state_swap
from .stream_projection import divisors, gather
from .xnor_projection import _adder_tree

if TYPE_CHECKING:
    from model.golden.fixedpoint import RsqrtTable
    from model.golden.quantize import NormParams, QuantizedLayer

__all__ = ["CONV_SWAP_READ_LATENCY", "CONV_WRITE_STAGE", "norm_lead_cycles", "RmsNormUnit", "ConvUnit", "GateUnit", "PwlUnit", "RsqrtUnit",
           "gain_record_beats", "conv_bias_bits", "conv_record_beats", "NORM_RSQRT_CYCLES", "NORM_LATENCY",
           "CONV_LATENCY", "GATE_LATENCY", "rsqrt_stage", "check_divides", "divisors"]

# sum of squares -> (leading one of each byte) -> (e) -> (mantissa) -> (table read, half)
NORM_RSQRT_CYCLES = 4
LEAD_CHUNK = 8  # bits a chunk of the leading-one search
# issue of a group -> its output handshake: the buffer read; v * T (rtl.dsp.pipelined_mul);
# its variable rounding shift (rtl.nonlinear.round_shift_var_stage); the saturation to u (its
# two comparisons, then the choice); u * gain (pipelined_mul); its rounding and saturation
NORM_LATENCY = 1 + MUL_LATENCY + ROUND_VAR_LATENCY + 2 + MUL_LATENCY + 1
SUM_LEVELS_PER_STAGE = 2  # adder levels between registers in the sum of squares of a beat


def _sum_stages(pe: int) -> int:
    """Register stages of the adder tree over ``pe`` squares (rtl.xnor_projection._adder_tree
    with :data:`SUM_LEVELS_PER_STAGE` levels a stage; at least one)."""
    levels = max(pe - 1, 0).bit_length()
    return max(1, -(-levels // SUM_LEVELS_PER_STAGE))


def norm_lead_cycles(pe: int) -> int:
    """Cycles from the handshake of a vector's last ``x`` beat to its first group's earliest
    issue in :class:`RmsNormUnit`: the squares (``MUL_LATENCY``), their sum
    (:func:`_sum_stages`), the accumulation, then the rsqrt (``NORM_RSQRT_CYCLES``)."""
    return MUL_LATENCY + _sum_stages(pe) + NORM_RSQRT_CYCLES
# issue -> handshake: the state read, its word registered twice (rtl.bram.registered_ram: the
# port, then the output register); the taps' products (rtl.dsp.pipelined_mul); their sum with
# the bias; its rounding and saturation; the SiLU table; the output buffer's head register
# (rtl.stall.output_register)
CONV_LATENCY = 2 + MUL_LATENCY + 2 + PWL_LATENCY + 1
# slice issue -> handshake: the SiLU table, y * SiLU(z) (rtl.dsp.pipelined_mul), then its
# rounding and saturation in a register of their own
GATE_LATENCY = PWL_LATENCY + MUL_LATENCY + 1
CONV_SWAP_READ_LATENCY = 2  # the conv state port's read of the state RAM (rtl/state_swap.py)
CONV_WRITE_STAGE = 2  # the conv stage that writes a group's new state (its issue is stage 0)


def gain_record_beats(n: NormParams, pe: int, beat_bits: int) -> int:
    """Beats of one record of ``pe`` gains of an :class:`RmsNormUnit`."""
    return -(-pe * n.gain_fmt.bits // beat_bits)


def conv_bias_bits(q: QuantizedLayer) -> int:
    """Width of the export's conv bias (accumulator units) on the weight stream: what its
    values need, or the width pinned for every layer of a model (:func:`common_fracs`)."""
    return q.conv_b_bits


def conv_record_beats(q: QuantizedLayer, pe: int, beat_bits: int) -> int:
    """Beats of one record of a :class:`ConvUnit`: per lane ``d_conv`` taps and the bias."""
    lane = q.cfg.d_conv * q.spec.param_bits + conv_bias_bits(q)
    return -(-pe * lane // beat_bits)


def check_divides(name: str, value: int, what: str, n: int) -> None:
    """Refuse ``value`` unless it is a positive integer dividing ``n``, naming the allowed ones."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or n % value:
        raise ValueError(f"{name} must divide {what} = {n} (one of {divisors(n)}), not {value!r}")


def _lanes(v: Value, n: int, bits: int) -> list[Value]:
    return [v[i * bits: (i + 1) * bits].as_signed() for i in range(n)]


def rsqrt_stage(m: Module, table: RsqrtTable, ss: Value, en, name: str) -> tuple[Signal, Signal]:
    """``(T, half) = rsqrt(ss)`` of :class:`~model.golden.fixedpoint.RsqrtTable`,
    ``NORM_RSQRT_CYCLES`` (4) registers later.

    Cycle 1: for each :data:`LEAD_CHUNK`-bit chunk of ``ss``, whether it holds a one and where
    its leading one is. Cycle 2: ``e = bit_length(ss) - 1`` from the highest chunk holding a
    one. Cycle 3: the top ``index_bits - 1`` mantissa bits below the leading one,
    ``(ss << mb) >> e`` (a truncating shift either way). Cycle 4: they index the row ``e & 1``
    of the table; ``half = e >> 1``.
    """
    ss = Value.cast(ss)
    width = len(ss)
    chunks = range(0, width, LEAD_CHUNK)
    anys, poss = [], []
    for j, lo in enumerate(chunks):
        ch = ss[lo: min(lo + LEAD_CHUNK, width)]
        pos = Signal(range(LEAD_CHUNK), name=f"{name}_pos{j}_c")
        for b in range(len(ch)):
            with m.If(ch[b]):
                m.d.comb += pos.eq(b)
        anys.append(_reg(m, ch.any(), en, f"{name}_any{j}"))
        poss.append(_reg(m, pos, en, f"{name}_pos{j}"))
    ss1 = _reg(m, ss, en, f"{name}_ss1")
    e = Signal(range(max(width, 2)), name=f"{name}_e_c")
    for j, lo in enumerate(chunks):
        with m.If(anys[j]):
            m.d.comb += e.eq(lo + poss[j])
    e_r = _reg(m, e, en, f"{name}_e")
    ss_r = _reg(m, ss1, en, f"{name}_ss")
    mb = table.index_bits - 1
    top = _reg(m, ((ss_r << mb) >> e_r)[:mb], en, f"{name}_top")
    e_2 = _reg(m, e_r, en, f"{name}_e2")
    rom = Memory(shape=unsigned(table.out_bits), depth=2 << mb,
                 init=[int(v) for v in table.table.reshape(-1)])
    m.submodules[f"{name}_rom"] = rom
    rp = rom.read_port(domain="comb")
    m.d.comb += rp.addr.eq(Cat(top, e_2[0]))
    return _reg(m, rp.data, en, f"{name}_t"), _reg(m, e_2 >> 1, en, f"{name}_half")


class RmsNormUnit(wiring.Component):
    """Integer RMSNorm with the FBI alpha folded into its gain (golden ``rmsnorm_act``).

    Parameters
    ----------
    n : NormParams
    rsqrt : RsqrtTable
    pe : int
        Elements a cycle; divides ``n.n``.
    beat_bits : int
        Width of a ``gain`` beat; a record of ``pe`` gains takes ``gain_beats`` beats.

    Members
    -------
    x : ``In(stream.Signature(ArrayLayout(signed(in_bits), pe)))``, ``n / pe`` beats a vector
    gain : ``In(stream.Signature(unsigned(beat_bits)))``, ``n / pe`` records a vector
    a : ``Out(stream.Signature(ArrayLayout(signed(act_bits), pe)))``, ``n / pe`` beats

    Schedule per vector: the ``x`` beats (one a cycle; each beat's squares in DSP blocks,
    summed by a registered adder tree and accumulated), the rsqrt once the last beat's sum is
    in (:func:`norm_lead_cycles` after the last beat), then one group a record
    (``gain_beats`` cycles), each out ``NORM_LATENCY`` cycles after its issue. The next
    vector's ``x`` is accepted once the last group is issued.
    """

    def __init__(self, n: NormParams, rsqrt: RsqrtTable, pe: int, beat_bits: int) -> None:
        check_divides("pe", pe, "the norm width", n.n)
        if n.act.bits < 2:
            raise ValueError(f"act_bits must be in [2, 16] for the layer engine, not {n.act.bits}")
        if rsqrt.out_bits + 2 < n.norm_fmt.bits:
            raise ValueError(f"rsqrt_bits + 2 must be >= norm_bits = {n.norm_fmt.bits}, not "
                             f"{rsqrt.out_bits + 2}: the normalising shift would be negative")
        self.n, self.rsqrt, self.pe, self.beat_bits = n, rsqrt, pe, beat_bits
        super().__init__({
            "x": In(stream.Signature(data.ArrayLayout(signed(n.in_fmt.bits), pe))),
            "gain": In(stream.Signature(unsigned(beat_bits))),
            "a": Out(stream.Signature(data.ArrayLayout(signed(n.act.bits), pe))),
        })

    @property
    def gain_beats(self) -> int:
        return gain_record_beats(self.n, self.pe, self.beat_bits)

    @property
    def groups(self) -> int:
        return self.n.n // self.pe

    @property
    def ss_bits(self) -> int:
        n = self.n
        return signed_bits(n.n * (1 << (2 * (n.in_fmt.bits - 1))) + n.eps_q)

    def elaborate(self, platform):
        n, P, G = self.n, self.pe, self.groups
        ib, gb, R = n.in_fmt.bits, n.gain_fmt.bits, self.rsqrt.out_bits
        m = Module()
        buf = Memory(shape=unsigned(P * ib), depth=max(G, 2), init=[])
        m.submodules.buf = buf
        wp, rp = buf.write_port(), buf.read_port()

        LOAD, SUM, RS1, RS2, RS3, RS4, NORM = range(7)
        st = Signal(range(7), init=LOAD)
        i = Signal(range(max(G, 2)))
        last_i = i == G - 1
        ss = Signal(unsigned(self.ss_bits))
        # The pipeline's enable is a register (rtl.stall.output_register): no ready from
        # downstream reaches the unit's registers in the same cycle.
        adv, ob_valid, ob_payload = output_register(m, self.a, "ob")

        # -- pass 1: buffer the input, sum of squares ------------------------------------------
        # Free-running: each beat's squares (DSP blocks), their registered sum, tagged with
        # whether the beat was taken, first or last; the sum accumulates as the tags arrive.
        xs = [Value.cast(self.x.payload[k]) for k in range(P)]
        take_x = self.x.valid & self.x.ready
        sqs = [pipelined_mul(m, v, v, 1, f"sq{k}") for k, v in enumerate(xs)]
        sq, stages = _adder_tree(m, sqs, SUM_LEVELS_PER_STAGE, 1, "ssum")
        assert stages == _sum_stages(P)
        d = MUL_LATENCY + stages
        tv = _delay(m, take_x, d, 1, "ss_v")
        tf = _delay(m, take_x & (i == 0), d, 1, "ss_f")
        tl = _delay(m, take_x & last_i, d, 1, "ss_l")
        m.d.comb += [self.x.ready.eq(st == LOAD), wp.addr.eq(i), wp.data.eq(Cat(*xs)),
                     wp.en.eq(take_x)]
        with m.If(take_x):
            m.d.sync += i.eq(Mux(last_i, 0, i + 1))
            with m.If(last_i):
                m.d.sync += st.eq(SUM)
        with m.If(tv):  # eps_q enters with the first beat: no add before the rsqrt
            m.d.sync += ss.eq(Mux(tf, n.eps_q, ss) + sq)
        with m.If((st == SUM) & tl):  # the last beat's sum is added in this cycle
            m.d.sync += st.eq(RS1)

        # -- rsqrt: NORM_RSQRT_CYCLES, free-running (its inputs hold while it runs) -----------
        # ss >= eps_q >= 1, unless eps_q = 0 and the input is all zero (then 1 is taken)
        t, half = rsqrt_stage(m, self.rsqrt, ss if n.eps_q else Mux(ss == 0, 1, ss), 1, "rsqrt")
        with m.If(st == RS1):
            m.d.sync += st.eq(RS2)
        with m.If(st == RS2):
            m.d.sync += st.eq(RS3)
        with m.If(st == RS3):
            m.d.sync += st.eq(RS4)
        with m.If(st == RS4):
            m.d.sync += st.eq(NORM)

        # -- pass 2: one group per gain record --------------------------------------------------
        take = Signal()
        record, rec_valid = gather(m, self.gain, self.gain_beats, self.gain_beats, take,
                                   adv & (st == NORM), "gain")
        issue = Signal()
        m.d.comb += [issue.eq(adv & (st == NORM) & rec_valid), take.eq(issue),
                     rp.addr.eq(i), rp.en.eq(issue)]  # read only what is issued
        with m.If(issue):
            m.d.sync += i.eq(Mux(last_i, 0, i + 1))
            with m.If(last_i):
                m.d.sync += st.eq(LOAD)
        # The token's T and shift travel with each group: the next vector's rsqrt may run
        # while this one's last groups are stalled.
        shift = R - n.norm_fmt.bits + 2
        t1 = _reg(m, t, adv, "t1")
        sh1 = _reg(m, half + shift, adv, "sh1")
        g1 = _reg(m, record[: P * gb], issue, "g1")  # held between records (see ConvUnit)
        v1 = _reg(m, issue, adv, "v1")
        nf = n.norm_fmt
        # v * T in DSP blocks; the variable rounding shift in its registered steps; u
        # saturated; u * gain in DSP blocks; its rounding and saturation.
        prods = [pipelined_mul(m, v, t1, adv, f"nt{k}")
                 for k, v in enumerate(_lanes(rp.data, P, ib))]
        sh_m = _delay(m, sh1, MUL_LATENCY, adv, "sh_m")
        shifted = [round_shift_var_stage(m, p, sh_m, len(p) + 1, adv, f"nr{k}")
                   for k, p in enumerate(prods)]
        us = []
        for k, r in enumerate(shifted):  # the comparisons, then the choice
            over = _reg(m, r > nf.max_int, adv, f"uo{k}")
            under = _reg(m, r < nf.min_int, adv, f"uu{k}")
            low = _reg(m, r[: nf.bits], adv, f"ul{k}")
            us.append(_reg(m, Mux(over, nf.max_int, Mux(under, nf.min_int, low.as_signed())),
                           adv, f"u{k}", signed(nf.bits)))
        g2 = _delay(m, g1, MUL_LATENCY + ROUND_VAR_LATENCY + 2, adv, "g2")
        pg = [pipelined_mul(m, u, g, adv, f"ng{k}") for k, (u, g) in
              enumerate(zip(us, _lanes(g2, P, gb)))]
        v2 = _delay(m, v1, 2 * MUL_LATENCY + ROUND_VAR_LATENCY + 2, adv, "v2")
        lo, hi = -(1 << (n.act.bits - 1)), (1 << (n.act.bits - 1)) - 1
        m.d.comb += ob_valid.eq(v2)
        for k, p in enumerate(pg):  # rounded and saturated into the buffer's head register
            m.d.comb += ob_payload[k].eq(
                saturate(round_shift(p, nf.frac + n.gain_fmt.frac), lo, hi))
        return m


class ConvUnit(wiring.Component):
    """Causal depthwise conv1d with its state, then SiLU (golden ``conv`` and ``conv_act``).

    Parameters
    ----------
    q : QuantizedLayer
    pe : int
        Channels a cycle; divides ``conv_dim``.
    beat_bits : int
        Width of a ``w`` beat. A record holds, per channel lane, the ``d_conv`` weights
        (``param_bits`` each, oldest tap first) and the bias (``bias_bits``).
    order : sequence of int, optional
        The channel order of the ``x`` beats (a permutation of ``range(conv_dim)``); only the
        packer needs it, the unit processes group after group.

    Members
    -------
    x : ``In(stream.Signature({start, v: ArrayLayout(signed(xbc_bits), pe)}))``
        ``conv_dim / pe`` beats a token; ``start`` (read on every beat of a token) begins a new
        sequence: the state is taken as zero. The first token after reset does too.
    w : ``In(stream.Signature(unsigned(beat_bits)))``, one record a group
    y : ``Out(stream.Signature(ArrayLayout(signed(xbc_act_bits), pe)))``
    restore, save, loaded : with ``port`` (:func:`rtl.state_swap.state_swap`): the state of a
        token's layer in and the previous one's out, ``conv_dim / pe`` words of
        :attr:`state_word_bits`; a token's first group waits for ``loaded``.
    """

    def __init__(self, q: QuantizedLayer, pe: int, beat_bits: int, slots: int = 1,
                 port: bool = False) -> None:
        check_divides("pe", pe, "conv_dim", q.cfg.conv_dim)
        if q.cfg.d_conv < 2:
            raise ValueError(f"d_conv must be >= 2 for the conv unit, not {q.cfg.d_conv}")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be a positive integer, not {slots!r}")
        if port and slots != 1:
            raise ValueError(f"slots must be 1 with the state port, not {slots}")
        if slots * (q.cfg.conv_dim // pe) < 3:
            # a group's state is written two enabled cycles after its issue, and read again
            # (ahead) after the issue slots * conv_dim / pe - 1 issues later
            raise ValueError(f"the conv unit needs slots * conv_dim / pe >= 3 state words, not "
                             f"{slots} * {q.cfg.conv_dim} / {pe}")
        self.q, self.pe, self.beat_bits, self.slots, self.port = q, pe, beat_bits, slots, port
        xb = q.fmt["xbc"].bits
        members = {
            "x": In(stream.Signature(data.StructLayout({
                "start": 1, "v": data.ArrayLayout(signed(xb), pe)}))),
            "w": In(stream.Signature(unsigned(beat_bits))),
            "y": Out(stream.Signature(data.ArrayLayout(signed(q.fmt["xbc_act"].bits), pe))),
        }
        if port:
            members.update({"restore": In(stream.Signature(unsigned(self.state_word_bits))),
                            "save": Out(stream.Signature(unsigned(self.state_word_bits))),
                            "loaded": Out(1)})
        super().__init__(members)

    @property
    def state_word_bits(self) -> int:
        """A word of the state RAM (and of the state port): ``d_conv - 1`` inputs of ``pe``
        channels."""
        return self.pe * (self.q.cfg.d_conv - 1) * self.q.fmt["xbc"].bits

    @property
    def bias_bits(self) -> int:
        return conv_bias_bits(self.q)

    @property
    def lane_bits(self) -> int:
        return self.q.cfg.d_conv * self.q.spec.param_bits + self.bias_bits

    @property
    def record_beats(self) -> int:
        return conv_record_beats(self.q, self.pe, self.beat_bits)

    @property
    def groups(self) -> int:
        return self.q.cfg.conv_dim // self.pe

    def elaborate(self, platform):
        q, P, G = self.q, self.pe, self.groups
        K, pb, xb = q.cfg.d_conv, q.spec.param_bits, q.fmt["xbc"].bits
        m = Module()
        adv, ob_valid, ob_payload = output_register(m, self.y, "ob")  # a registered enable

        S = self.slots
        sbits = P * (K - 1) * xb
        # The state RAM (rtl.bram.registered_ram): a group's words are read by its issue (ahead
        # of it, below) and reach stage 2 through the port and the output register. Without
        # the second register the block RAM's read (5.8 ns clock-to-out on the ECP5), the
        # multiplexer of its banks and the way to the tap multipliers were one path (14.7 ns in
        # the whole-model top).
        # A group's new state is written from stage 2, so the next read of the same word, after
        # the issue S * G - 1 issues later, finds it written: S * G >= 3 (checked in
        # __init__). It is written to the word it was read from, so each bank of the RAM
        # writes back from its own output register, not through the banks' multiplexer (a
        # read-modify-write, rtl.bram).
        st = dict(w_addr=Signal(range(max(S * G, 2)), name="st_waddr"),
                  w_en=Signal(name="st_wen"),
                  r_addr=Signal(range(max(S * G, 2)), name="st_raddr"), r_en=Signal(name="st_ren"),
                  o_en=Signal(name="st_oen"))
        g = Signal(range(max(G, 2)))
        base = Signal(range(max(S * G, 2)))  # the token's slot (its layer): base = slot * G
        fresh = Signal(init=1)  # no token since reset: the next one begins a sequence
        take = Signal()
        record, rec_valid = gather(m, self.w, self.record_beats, self.record_beats, take,
                                   adv & self.x.valid, "w")
        issue = Signal()
        v1, v2 = Signal(), Signal()
        can = adv & self.x.valid & rec_valid
        if self.port:
            # A token's first group waits for its state; the swap waits for the last group's
            # state write (v1, then v2).
            in_token = Signal()
            swap = state_swap(m, "state", restore=self.restore, save=self.save, words=G,
                              width=self.state_word_bits, idle=~in_token & ~v1 & ~v2,
                              token_start=issue & (g == 0),
                              read_latency=CONV_SWAP_READ_LATENCY)
            m.d.comb += self.loaded.eq(swap.swapped)
            can = can & (in_token | swap.swapped)
            with m.If(issue & (g == 0)):
                m.d.sync += in_token.eq(1)
            with m.If(issue & (g == G - 1)):
                m.d.sync += in_token.eq(0)
        m.d.comb += [issue.eq(can), take.eq(issue), self.x.ready.eq(issue)]
        # The next group's state word is read ahead, as soon as the port may change, not at its
        # issue: the issue waits on the weight record's last beat straight from the stream, and
        # as the read enable it reached every block of the RAM (the whole-model top's 89.9 MHz
        # path, 11.1 ns). The read enable comes from registers alone. A word is read once a
        # group (and while reset holds the flags; with the port, word 0 again after the swap):
        # ``ahead`` while the port does not hold the word at ``base + g`` (``rd_ok``) and no
        # issued group's word still waits in it for the output register (``rd_hold``: from the
        # issue to the next enabled edge, where the output register takes the port's word as a
        # read replaces it; the value of ``v1``, as an issue implies ``adv``). Reading early is
        # safe: the word at ``base + g`` was last written two enabled cycles after its issue,
        # at or before the issue before this one (S * G >= 3), and the unit's next write to it
        # comes after this group's issue; the swap's restore writes it too, but every read of
        # the swap clears ``rd_ok``, so the word is read again after the swap.
        rd_ok, rd_hold = Signal(name="st_rd_ok"), Signal(name="st_rd_hold")
        ahead = ~rd_ok & (~rd_hold | adv)
        mode = swap.mode if self.port else Const(0)
        with m.If(issue | mode):  # a new group's address, or the swap's reads
            m.d.sync += rd_ok.eq(0)
        with m.Elif(ahead):
            m.d.sync += rd_ok.eq(1)
        with m.If(issue):
            m.d.sync += rd_hold.eq(1)
        with m.Elif(adv):
            m.d.sync += rd_hold.eq(0)
        if self.port:
            m.d.comb += [st["r_addr"].eq(Mux(mode, swap.addr, base + g)),
                         st["r_en"].eq(ahead | mode), st["o_en"].eq(adv | swap.after[0])]
        else:
            m.d.comb += [st["r_addr"].eq(base + g), st["r_en"].eq(ahead), st["o_en"].eq(adv)]
        with m.If(issue):
            m.d.sync += g.eq(Mux(g == G - 1, 0, g + 1))
            with m.If(g == G - 1):
                m.d.sync += fresh.eq(0)
                if S > 1:
                    m.d.sync += base.eq(Mux(base == (S - 1) * G, 0, base + G))
        # Stage 1 takes its operands only when a group issues: the record's last beat is the
        # weight stream itself, which carries other units' beats in between, and taps fed from
        # it would switch every cycle for nothing (energy/activity.py measured it). Stage 2
        # waits beside the state word's output register.
        x1 = _reg(m, self.x.payload.v, issue, "x1")
        w1 = _reg(m, record[: P * self.lane_bits], issue, "w1")
        z1 = _reg(m, self.x.payload.start | fresh, issue, "z1")
        a1 = _reg(m, base + g, issue, "a1", range(max(S * G, 2)))
        x2, w2, z2 = _reg(m, x1, adv, "x2"), _reg(m, w1, adv, "w2"), _reg(m, z1, adv, "z2")
        a2 = _reg(m, a1, adv, "a2", range(max(S * G, 2)))
        with m.If(adv):
            m.d.sync += [v1.eq(issue), v2.eq(v1)]

        def written(word: Value) -> Value:
            """The word written at stage 2 from the group's old ``word``: its last ``d_conv - 2``
            inputs a lane (zero where the sequence starts), then the new one; or a restore."""
            new = Cat(*[e for k in range(P) for e in
                        [Mux(z2, 0, o)[:xb] for o in
                         _lanes(word[k * (K - 1) * xb: (k + 1) * (K - 1) * xb], K - 1, xb)[1:]]
                        + [x2[k * xb: (k + 1) * xb]]])
            return Mux(swap.w_en, swap.w_data, new) if self.port else new

        state_q = registered_ram(m, "state", sbits, max(S * G, 2), w_data=written, **st)
        if self.port:
            swap.save_from(m, state_q)

        f = q.fmt
        shift = f["xbc"].frac + q.conv_w_frac - f["conv"].frac
        ys = []
        for k in range(P):
            lane = w2[k * self.lane_bits: (k + 1) * self.lane_bits]
            taps = _lanes(lane, K, pb)
            bias = lane[K * pb:].as_signed()
            old = _lanes(state_q[k * (K - 1) * xb: (k + 1) * (K - 1) * xb], K - 1, xb)
            ext = [Mux(z2, 0, o) for o in old] + [x2[k * xb: (k + 1) * xb].as_signed()]
            # Each tap's product in DSP blocks with their own registers; the bias waits beside.
            prods = [pipelined_mul(m, w, e, adv, f"tap{k}_{j}")
                     for j, (w, e) in enumerate(zip(taps, ext))]
            acc = _reg(m, sum(prods, _delay(m, bias, MUL_LATENCY, adv, f"bias{k}")), adv,
                       f"acc{k}")
            cvs = _reg(m, saturate(round_shift(acc, shift), f["conv"].min_int, f["conv"].max_int),
                       adv, f"conv{k}", signed(f["conv"].bits))
            ys.append(pwl_stage(m, q.silu_conv, cvs, adv, f"silu{k}"))
        if self.port:
            m.d.comb += [st["w_addr"].eq(Mux(swap.w_en, swap.w_addr, a2)),
                         st["w_en"].eq((adv & v2) | swap.w_en)]
        else:
            m.d.comb += [st["w_addr"].eq(a2), st["w_en"].eq(adv & v2)]
        m.d.comb += [Value.cast(ob_payload).eq(Cat(*ys)),
                     ob_valid.eq(_delay(m, v2, MUL_LATENCY + 2 + PWL_LATENCY, adv, "vy"))]
        return m


class GateUnit(wiring.Component):
    """``g = sat(rs(y * SiLU(z), y.frac + silu_z.frac - gate.frac))`` (golden ``gate``).

    Members
    -------
    y : ``In(stream.Signature(ArrayLayout(signed(y_bits), headdim)))``, a head a beat
    z : ``In(stream.Signature(ArrayLayout(signed(z_bits), pe)))``
    g : ``Out(stream.Signature(ArrayLayout(signed(gate_bits), pe)))``

    A ``y`` beat is taken into a register (once the last one's slices have all issued) and
    used over ``headdim / pe`` cycles, one ``z`` beat each; slice i of a beat taken at cycle
    t issues at ``t + 1 + i`` and its output handshakes ``GATE_LATENCY`` cycles later: the
    SiLU table (``PWL_LATENCY``), the product ``y * SiLU(z)`` in DSP blocks with their own
    registers (``MUL_LATENCY``), then the rounding shift and saturation (one register).
    """

    def __init__(self, q: QuantizedLayer, pe: int) -> None:
        check_divides("pe", pe, "headdim", q.cfg.headdim)
        self.q, self.pe = q, pe
        f = q.fmt
        super().__init__({
            "y": In(stream.Signature(data.ArrayLayout(signed(f["y"].bits), q.cfg.headdim))),
            "z": In(stream.Signature(data.ArrayLayout(signed(f["z"].bits), pe))),
            "g": Out(stream.Signature(data.ArrayLayout(signed(f["gate"].bits), pe))),
        })

    def elaborate(self, platform):
        q, P = self.q, self.pe
        f = q.fmt
        S = q.cfg.headdim // P
        m = Module()
        adv, ob_valid, ob_payload = output_register(m, self.g, "ob")  # a registered enable
        # The y beat is taken into a register when the register is free, and used over S
        # cycles. Its ready is that register's state alone: a ready that also waited on z and
        # on the pipeline's enable ran from here through the z FIFO into the scan's control
        # (10.5 ns across the whole engine). It costs no cycle: the scan gives a head at most
        # every headdim * d_state / lanes >= 2 S cycles, so the register is free again long
        # before the next y (only under a stall can a y wait the one cycle of the emptying).
        ybuf = Signal(len(Value.cast(self.y.payload)))
        have = Signal()
        s = Signal(range(max(S, 2)))
        issue = Signal()
        last = s == S - 1
        m.d.comb += [issue.eq(adv & have & self.z.valid), self.z.ready.eq(issue),
                     self.y.ready.eq(~have)]
        with m.If(issue):
            m.d.sync += s.eq(Mux(last, 0, s + 1))
            with m.If(last):
                m.d.sync += have.eq(0)
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += [ybuf.eq(self.y.payload), have.eq(1)]
        yb = f["y"].bits
        ys = ybuf.word_select(s, P * yb)
        y_d = _delay(m, ys, PWL_LATENCY, adv, "y")
        shift = f["y"].frac + f["silu_z"].frac - f["gate"].frac
        gf = f["gate"]
        szs = [pwl_stage(m, q.silu_z, self.z.payload[k], adv, f"silu{k}") for k in range(P)]
        prods = [pipelined_mul(m, y_d[k * yb: (k + 1) * yb].as_signed(), sz, adv, f"gp{k}")
                 for k, sz in enumerate(szs)]
        valid = _delay(m, issue, PWL_LATENCY + MUL_LATENCY, adv, "v")
        m.d.comb += ob_valid.eq(valid)
        for k, pr in enumerate(prods):  # rounded and saturated into the buffer's head register
            m.d.comb += ob_payload[k].eq(saturate(round_shift(pr, shift), gf.min_int, gf.max_int))
        return m


class PwlUnit(_StreamUnit):
    """Stream unit around one PWL table of the export (``"silu_conv"`` or ``"silu_z"``), for
    exhaustive verification: a code in, the table's value out ``PWL_LATENCY`` cycles later."""

    latency = PWL_LATENCY

    def __init__(self, q: QuantizedLayer, table: str) -> None:
        if table not in ("silu_conv", "silu_z"):
            self._MustUse__silence = True
            raise ValueError(f"table must be one of silu_conv, silu_z, not {table!r}")
        self.table = getattr(q, table)
        t = self.table
        super().__init__(q, signed(t.in_fmt.bits) if t.in_fmt.signed else unsigned(t.in_fmt.bits),
                         signed(t.out_fmt.bits) if t.out_fmt.signed else unsigned(t.out_fmt.bits))

    def _pipeline(self, m, en):
        return pwl_stage(m, self.table, self.i.payload, en, "pwl")


class RsqrtUnit(_StreamUnit):
    """Stream unit around :func:`rsqrt_stage`: a sum of squares in (``ss_bits`` unsigned, >= 1),
    ``{t, half}`` out ``NORM_RSQRT_CYCLES`` later."""

    latency = NORM_RSQRT_CYCLES

    def __init__(self, q: QuantizedLayer, ss_bits: int) -> None:
        self.ss_bits = ss_bits
        r = q.rsqrt
        super().__init__(q, unsigned(ss_bits), data.StructLayout({
            "t": unsigned(r.out_bits), "half": unsigned(max(1, (ss_bits - 1).bit_length()))}))

    def _pipeline(self, m, en):
        t, half = rsqrt_stage(m, self.q.rsqrt, self.i.payload, en, "rsqrt")
        return Cat(t, half)
