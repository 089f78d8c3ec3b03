"""``BiMambaLM``: a whole Bi-Mamba language model on one layer engine, a byte in and its 256
integer logits out, every weight read from one memory stream.

One decode step (docs/layer_engine.md, section 6)::

    token ──> row request ──> memory
                               │ mem: embedding row | layer 0 | ... | layer L-1 | norm_f | head rows
                               v
    embedding row ─> BiMambaLayer ─┬─> (o fed back as u: the next layer) ──┐
                     ^             │                                        │
                     └─────────────┼────────────────────────────────────────┘
                                   └─> (last layer) RmsNormUnit (norm_f) ─> HeadUnit ─> logits

The layer engine (:class:`rtl.layer.BiMambaLayer`) runs the ``n_layer`` layers of the token one
after another: its output is its own next input, and the weight stream carries each layer's six
sections in turn. It keeps the conv and SSM state of every layer on chip, one slot a layer
(:class:`~rtl.layer.LayerConfig` ``slots``), and its scan and conv units step from slot to slot
token by token. Whatever the engine builds in as a constant (formats, shifts, tables) is common to
all layers: the export is made with ``shared`` formats (:func:`model.golden.lm.export_lm`), and
:class:`LMConfig` refuses one that is not.

The embedding row of the token is the first section of the token's stream: the engine asks the
memory for it on ``row`` (the token's byte) as it takes the token. The final RMSNorm is an
:class:`~rtl.layer_units.RmsNormUnit` with ``head_bits`` outputs; the head (:class:`HeadUnit`) holds
those ``d_model`` activations and reduces each streamed row of the tied embedding (``head_bits``
integers) against them exactly: ``logits_int = W_q @ a`` of :class:`~model.golden.lm.GoldenLM`.
The host turns the logits into probabilities and samples, as :mod:`model.generate` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import BiMambaConfig
from model.golden.fixedpoint import signed_bits

from .layer import BiMambaLayer, LayerConfig, LayerShape, Pace, section_demux
from .layer_units import CONV_SWAP_READ_LATENCY, CONV_WRITE_STAGE, NORM_LATENCY, RmsNormUnit, norm_lead_cycles
from .ssm_scan import RW_WRITE, SWAP_READ_LATENCY
from .stall import output_register
from .state_swap import save_delay
from .stream_projection import gather
from .xnor_projection import _adder_tree

if TYPE_CHECKING:
    from model.golden.lm import QuantizedLM

__all__ = ["LMConfig", "LMShape", "LMSchedule", "BiMambaLM", "HeadUnit", "LM_SECTIONS", "STATE_CHOICES",
           "head_latency"]

# The weight stream's sections per token, in stream order ("layers" is every layer's six
# sections, layer after layer).
LM_SECTIONS = ("embedding", "layers", "norm_f", "head")

# Where the SSM state of the layers waits between their turns (LMConfig.state).
STATE_CHOICES = ("chip", "memory")


def head_latency(values_per_beat: int) -> int:
    """A head row's last beat (its handshake) -> that row's logit handshake: the operands (1),
    the products (1), the adder tree (two levels a register), the row accumulator (1), the
    output register (1)."""
    levels = (values_per_beat - 1).bit_length()
    return 4 + max(1, -(-levels // 2))


@dataclass(frozen=True)
class LMSchedule:
    """The cycle formula's answer for one token (:meth:`LMConfig.schedule`).

    Members
    -------
    ends : dict
        ``embedding`` (the row's last beat, = the first layer's last ``u``), ``layer{i}`` (the
        last output of layer i), ``norm_f`` (its last gain beat), ``head`` (the last row beat).
    last_logit : int
        The token's last ``logits`` handshake.
    token_cycles : int
        Cycles between the last logits of back-to-back tokens.
    beats : int
        ``mem`` beats per token.
    period : int, float or Fraction
        Cycles per beat of the memory (:class:`~rtl.layer.Pace`).
    """

    ends: dict
    last_logit: int
    token_cycles: int
    beats: int
    period: int | float | Fraction

    @property
    def memory_cycles(self) -> int:
        """The roofline: cycles the memory needs for a token's beats."""
        return self.beats * self.period


@dataclass(frozen=True)
class LMShape:
    """What the whole-model engine's beat counts and cycle formula depend on: the model's
    shape and the widths on its streams (an export's, :meth:`of`, or the widths a
    :class:`~model.golden.quantize.QuantSpec` sets, :meth:`assumed`). Enough for the
    estimator; building the engine or packing its stream needs the export."""

    cfg: BiMambaConfig
    layer: LayerShape
    res_bits: int  # the residual stream (embedding rows)
    head_bits: int  # head weights and activations
    gain_bits: int  # the final norm's gains
    state_bits: int  # an SSM state element
    xbc_bits: int  # a conv input (the conv state)
    logit_bits: int

    @classmethod
    def of(cls, q: "QuantizedLM") -> "LMShape":
        l0 = q.layers[0]
        return cls(q.cfg, LayerShape.of(l0), l0.fmt["res"].bits, q.spec.head_bits,
                   q.norm_f.gain_fmt.bits, q.spec.state_bits, l0.fmt["xbc"].bits,
                   signed_bits(q.head_bound))

    @classmethod
    def assumed(cls, cfg: BiMambaConfig, spec) -> "LMShape":
        """The widths of an export made with ``spec`` (:meth:`LayerShape.assumed` for the
        layer; the logits at their bound, ``d_model 2^(2 head_bits - 2)``)."""
        return cls(cfg, LayerShape.assumed(cfg, spec), spec.res_bits, spec.head_bits,
                   spec.param_bits, spec.state_bits, spec.data_bits,
                   signed_bits(cfg.d_model << (2 * spec.head_bits - 2)))


@dataclass(frozen=True)
class LMConfig:
    """Generator parameters of :class:`BiMambaLM`.

    Parameters
    ----------
    q : QuantizedLM or LMShape
        A shared-format export (:func:`model.golden.lm.export_lm`, ``shared=True``); an
        :class:`LMShape` is enough for the beat counts and the cycle formula (any vocabulary
        size), building the engine needs the export (a byte vocabulary).
    simd, pe, lanes, planes
        The layer engine's (:class:`~rtl.layer.LayerConfig`); ``pe`` is also the lane count of
        the final norm.
    state : str
        Where the layers' SSM state lives between their turns (:data:`STATE_CHOICES`):
        ``"chip"``, a slot a layer in the scan unit's RAM; ``"memory"``, behind the state
        port, the RAM holding the layer being computed (docs/lm_engine.md, section 1).

    Raises
    ------
    ValueError
        If the layers' engine constants differ (the message names the first that does), a
        parameter does not divide what it must, or the vocabulary is not bytes.
    """

    q: QuantizedLM
    simd: int
    pe: int
    lanes: int
    planes: int | None = None
    state: str = "chip"

    def __post_init__(self) -> None:
        q = self.q
        if self.state not in STATE_CHOICES:
            raise ValueError(f"state must be one of {list(STATE_CHOICES)}, not {self.state!r}")
        if not isinstance(q, LMShape):
            first = q.layers[0].engine_constants()
            for i, lq in enumerate(q.layers[1:], 1):
                other = lq.engine_constants()
                diff = [k for k in first if first[k] != other.get(k)]
                if diff:
                    raise ValueError(f"layer {i} differs from layer 0 in {diff[0]} "
                                     f"({first[diff[0]]} vs {other[diff[0]]}): one engine needs "
                                     f"every layer's formats and tables equal; export with "
                                     f"shared=True")
            if not 2 <= q.cfg.vocab_size <= 256:
                raise ValueError(f"vocab_size must be in [2, 256] (bytes), not "
                                 f"{q.cfg.vocab_size}")
        elif self.cfg.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, not {self.cfg.vocab_size}")
        self.layer  # the layer engine's own checks
        if self.beat_bits < self.shape.head_bits:
            raise ValueError(f"pe * simd = {self.beat_bits} must be >= head_bits = "
                             f"{self.shape.head_bits}: a beat must hold one head weight")

    @classmethod
    def sized_for(cls, q: "QuantizedLM | LMShape", bytes_per_cycle: int, target: float = 0.9,
                  planes: int | None = None, state: str = "chip") -> "LMConfig":
        """The engine of :meth:`rtl.layer.LayerConfig.sized_for` (the array for a memory of
        ``bytes_per_cycle``, the fewest scan lanes reaching ``target`` of a layer's roofline)."""
        layer = q.layer if isinstance(q, LMShape) else q.layers[0]
        lc = LayerConfig.sized_for(layer, bytes_per_cycle, target, planes)
        return cls(q, lc.simd, lc.pe, lc.lanes, lc.planes, state)

    # -- the units ---------------------------------------------------------------------------

    @property
    def shape(self) -> LMShape:
        return self.q if isinstance(self.q, LMShape) else LMShape.of(self.q)

    @property
    def export(self) -> "QuantizedLM":
        """The export (building the engine or packing its stream needs it)."""
        if isinstance(self.q, LMShape):
            raise TypeError("this LMConfig was made from an LMShape: building the engine or "
                            "packing its weight stream needs the model's export")
        return self.q

    @property
    def cfg(self) -> BiMambaConfig:
        return self.q.cfg

    @property
    def n_layer(self) -> int:
        return self.cfg.n_layer

    def layer_config(self, i: int = 0) -> LayerConfig:
        """The engine's configuration with layer ``i``'s export (for packing its sections), or
        the layer's shape."""
        layer = self.q.layer if isinstance(self.q, LMShape) else self.q.layers[i]
        return LayerConfig(layer, self.simd, self.pe, self.lanes, self.planes,
                           slots=self.n_layer, state_port=self.state == "memory")

    @property
    def layer(self) -> LayerConfig:
        """The layer engine (built from layer 0's export; every layer's constants are equal)."""
        return self.layer_config(0)

    @property
    def beat_bits(self) -> int:
        return self.pe * self.simd

    @property
    def res_bits(self) -> int:
        return self.shape.res_bits

    @property
    def token_bits(self) -> int:
        return max(1, (self.cfg.vocab_size - 1).bit_length())

    @property
    def emb_record_beats(self) -> int:
        """Beats of one embedding record (``pe`` residual values)."""
        return -(-self.pe * self.res_bits // self.beat_bits)

    @property
    def head_values_per_beat(self) -> int:
        return self.beat_bits // self.shape.head_bits

    @property
    def head_row_beats(self) -> int:
        """Beats of one head row: ``d_model`` weights, ``head_values_per_beat`` a beat."""
        return -(-self.cfg.d_model // self.head_values_per_beat)

    @property
    def logit_bits(self) -> int:
        return self.shape.logit_bits

    @property
    def state_words(self) -> int:
        """Words of a layer's SSM state on the state port (``state="memory"``): ``nheads x
        headdim x d_state / lanes``."""
        c = self.cfg
        return c.nheads * c.headdim * (c.d_state // self.lanes)

    @property
    def state_word_bits(self) -> int:
        """``lanes`` state elements."""
        return self.lanes * self.shape.state_bits

    @property
    def conv_words(self) -> int:
        """Words of a layer's conv state on the conv state port (a group of ``pe`` channels
        a word)."""
        return self.cfg.conv_dim // self.pe

    @property
    def conv_word_bits(self) -> int:
        """``d_conv - 1`` conv inputs of ``pe`` channels."""
        return self.pe * (self.cfg.d_conv - 1) * self.shape.xbc_bits

    @property
    def state_bytes_per_token(self) -> int:
        """Bytes through the state ports a token: every layer's SSM and conv state read and
        written (0 with the state on chip)."""
        if self.state != "memory":
            return 0
        return 2 * self.n_layer * (self.state_words * self.state_word_bits
                                   + self.conv_words * self.conv_word_bits) // 8

    @property
    def state_req_layout(self) -> data.StructLayout:
        """A swap's addresses: the layer whose state the port reads (``load``) and the one
        whose state it writes (``save``)."""
        slot = range(max(self.n_layer, 2))
        return data.StructLayout({"load": slot, "save": slot})

    def section_beats(self) -> dict[str, int]:
        """``mem`` beats per token, per section (:data:`LM_SECTIONS` order)."""
        D, P = self.cfg.d_model, self.pe
        return {
            "embedding": D // P * self.emb_record_beats,
            "layers": self.n_layer * self.layer.beats_per_token,
            "norm_f": D // P * -(-P * self.shape.gain_bits // self.beat_bits),
            "head": self.cfg.vocab_size * self.head_row_beats,
        }

    @property
    def beats_per_token(self) -> int:
        return sum(self.section_beats().values())

    @property
    def bytes_per_token(self) -> int:
        return self.beats_per_token * self.beat_bits // 8

    # -- cycles ------------------------------------------------------------------------------

    def schedule(self, period=1, latency: int = 0, state_period=1, state_latency: int = 0,
                 conv_period=None, shared: bool = False) -> LMSchedule:
        """The whole model's cycle formula (docs/lm_engine.md, section 4): the first token
        after reset, and the spacing of back-to-back tokens after it.

        The token is taken at cycle 0 and its row request at once; the memory offers the first
        beat ``1 + latency`` cycles later, then one beat per ``period`` cycles at most
        (:class:`~rtl.layer.Pace`: a whole number or a Fraction, each beat offered its gap
        after the previous handshake). Every later phase follows from
        the layer engine's formula (:meth:`~rtl.layer.LayerConfig.schedule`, a layer's input
        being the output of the one before) and the norm and head units. With the state in
        memory, a layer's first weight beat also waits for its state (the swap before it,
        whose words come ``state_latency + 1`` cycles after its request and then one per
        ``state_period`` cycles at most on the SSM channel, one per ``conv_period``, by default
        ``state_period``, on the conv channel; each a whole number or a Fraction, paced as
        the weight stream is). ``shared``: the state port and the weight stream are one
        memory, which serves a swap between the last weight beat before the layer and the
        layer's first, and the layer's first beat after the swap's last saved word (section 5).

        Back to back (the next token's request made before this token's last beat), the next
        row's first beat follows this token's last head beat by ``period``: ``token_cycles``
        is the spacing of the last logits of the second and third tokens (the fourth's is
        checked to be the same).
        """
        times = self.token_times(4, period, latency, state_period, state_latency, conv_period,
                                 shared)
        gaps = [b["last_logit"] - a["last_logit"] for a, b in zip(times, times[1:])]
        if gaps[1] != gaps[2]:
            raise AssertionError(f"the formula's token spacing does not settle: {gaps}")
        t0 = times[0]
        ends = {k: v for k, v in t0.items() if k != "last_logit"}
        return LMSchedule(ends, t0["last_logit"], gaps[1], self.beats_per_token, period)

    def token_times(self, n: int, period=1, latency: int = 0, state_period=1,
                    state_latency: int = 0, conv_period=None, shared: bool = False) -> list[dict]:
        """The formula's event times (cycles from the first token's handshake) for ``n``
        tokens offered back to back from reset: per token the ends of :class:`LMSchedule`,
        ``swap{i}`` (the last state word of layer i's swap taken on both channels, state in
        memory) and ``last_logit``."""
        pace = Pace(period)
        if conv_period is None:
            conv_period = state_period
        for name, v, lo in (("latency", latency, 0), ("state_latency", state_latency, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, not {v!r}")
        for name, v in (("state_period", state_period), ("conv_period", conv_period)):
            if isinstance(v, bool) or not isinstance(v, (int, Fraction)) or v < 1:
                raise ValueError(f"{name} must be a whole number or a Fraction >= 1 (cycles a "
                                 f"word), not {v!r}")
        if not isinstance(shared, bool):
            raise ValueError(f"shared must be True or False, not {shared!r}")
        beats = self.section_beats()
        E, Lb = beats["embedding"], self.layer.beats_per_token
        kn = E + self.n_layer * Lb  # the final norm's first beat
        lc = self.layer
        memory = self.state == "memory"
        # The state channels: words a layer; when the unit is free to swap after its layer
        # (its last state write done): the scan RW_WRITE + 1 after its last issue, the conv
        # CONV_WRITE_STAGE + 1 after its last group's issue (with its record's last beat); the pace; a word's
        # step to its save handshake.
        channels = {"ssm": (self.state_words if memory else 0, "ssm_issue", RW_WRITE + 1,
                            Pace(state_period), save_delay(SWAP_READ_LATENCY)),
                    "conv": (self.conv_words if memory else 0, "conv", CONV_WRITE_STAGE + 1, Pace(conv_period),
                             save_delay(CONV_SWAP_READ_LATENCY))}
        out = []
        a0 = 1 + latency  # the token's first beat
        swap = None  # per channel (its last word of the last swap, its unit free), and
        #              the request of the next swap
        for _ in range(n):
            t: dict[str, int] = {}
            # The embedding: a u beat a record, the engine's block norm taking one a cycle.
            t["embedding"] = a0 + pace.span(0, E - 1)
            u_last, mem_last = t["embedding"], t["embedding"]
            for i in range(self.n_layer):
                mem_at = mem_last + pace.gap(E + i * Lb)
                if memory:
                    # The swap before layer i: requested the cycle after the last swap's last
                    # word on both channels (the first after reset: the cycle after the
                    # token); on each channel its first word once the unit has written the
                    # layer before, `state_latency + 1` after the request and a period after
                    # the channel's last word (shared: and after the weight beat before the
                    # layer), then a word a period.
                    req = 1 if swap is None else swap["req"]
                    ends = {}
                    for ch, (words, _, _, sp, _) in channels.items():
                        prev, free = swap[ch] if swap else (None, 0)
                        first = max(free, req + 1 + state_latency,
                                    prev + sp.gap(0) if prev is not None else 0,
                                    mem_last + 1 if shared else 0)
                        ends[ch] = first + sp.span(0, words - 1)
                    t[f"swap{i}"] = max(ends.values())
                    mem_at = max(mem_at, t[f"swap{i}"] + 1)
                    if shared:  # and after the last saved word
                        mem_at = max(mem_at, max(ends[ch] + channels[ch][4]
                                                 for ch in channels) + 1)
                s = lc.schedule(period, first=False, mem_at=mem_at - u_last, base=E + i * Lb)
                t[f"layer{i}"] = u_last + s.last_out
                if memory:
                    swap = {ch: (ends[ch], u_last + s.ends[key] + after)
                            for ch, (_, key, after, _, _) in channels.items()}
                    swap["req"] = t[f"swap{i}"] + 1
                mem_last = u_last + s.ends["out_proj"]
                u_last = t[f"layer{i}"]
            # The final norm: its gains once the last layer's output is in and its sum of
            # squares and rsqrt are done.
            start = max(u_last + 1 + norm_lead_cycles(self.pe), mem_last + pace.gap(kn))
            kh = kn + beats["norm_f"]  # the head's first beat
            t["norm_f"] = start + pace.span(kn, kh - 1)
            # The head: rows once the last activation is in (NORM_LATENCY after its gain
            # record).
            s0 = t["norm_f"] + max(NORM_LATENCY + 1, pace.gap(kh))
            t["head"] = s0 + pace.span(kh, kh + beats["head"] - 1)
            t["last_logit"] = t["head"] + head_latency(self.head_values_per_beat)
            out.append(t)
            a0 = t["head"] + pace.gap(0)
        return out

    def roofline_fraction(self, period: int = 1) -> float:
        """Back-to-back tokens per second as a fraction of the memory roofline."""
        return self.beats_per_token * period / self.schedule(period).token_cycles

    # -- ports -------------------------------------------------------------------------------

    @property
    def token_layout(self) -> data.StructLayout:
        return data.StructLayout({"start": 1, "id": unsigned(self.token_bits)})


class HeadUnit(wiring.Component):
    """The LM head: ``logits_int[v] = sum_j W_q[v, j] a[j]``, exact.

    Members
    -------
    a : ``In(stream.Signature(ArrayLayout(signed(head_bits), pe)))``, ``d_model / pe`` beats a
        token: the final norm's activations, held until the token's last row.
    w : ``In(stream.Signature(unsigned(beat_bits)))``, ``vocab * row_beats`` beats a token: row
        after row, ``values_per_beat`` weights of ``head_bits`` a beat (zero padded).
    logits : ``Out(stream.Signature(signed(logit_bits)))``, one a row.
    """

    def __init__(self, config: LMConfig) -> None:
        self.config = config
        c = config
        hb = c.q.spec.head_bits
        super().__init__({
            "a": In(stream.Signature(data.ArrayLayout(signed(hb), c.pe))),
            "w": In(stream.Signature(unsigned(c.beat_bits))),
            "logits": Out(stream.Signature(signed(c.logit_bits))),
        })

    def elaborate(self, platform):
        c = self.config
        hb, P, D, V = c.q.spec.head_bits, c.pe, c.cfg.d_model, c.cfg.vocab_size
        R, n = c.head_row_beats, c.head_values_per_beat
        m = Module()

        # The activations: D values shifted in at the top (the first beat ends lowest), zero
        # padded to R * n.
        areg = Signal(D * hb)
        abuf = Cat(areg, Value.cast(0).replicate(R * n * hb - D * hb)) if R * n > D else areg
        ai = Signal(range(max(D // P, 2)))
        a_full = Signal()
        m.d.comb += self.a.ready.eq(~a_full)
        with m.If(self.a.valid & self.a.ready):
            m.d.sync += [areg.eq(Cat(areg[P * hb:], Value.cast(self.a.payload))),
                         ai.eq(Mux(ai == D // P - 1, 0, ai + 1))]
            with m.If(ai == D // P - 1):
                m.d.sync += a_full.eq(1)

        adv, ovalid, opayload = output_register(m, self.logits, "head_ob")
        j = Signal(range(max(R, 2)))
        r = Signal(range(max(V, 2)))
        issue = Signal()
        m.d.comb += [self.w.ready.eq(a_full & adv), issue.eq(self.w.valid & self.w.ready)]
        last_j = j == R - 1
        with m.If(issue):
            m.d.sync += j.eq(Mux(last_j, 0, j + 1))
            with m.If(last_j):
                m.d.sync += r.eq(Mux(r == V - 1, 0, r + 1))
                with m.If(r == V - 1):
                    m.d.sync += a_full.eq(0)

        # The operands (1), the products (1), the tree, the row accumulator (1), the output
        # register (1). The operands are registered: the chunk's word, selected by j out of
        # the whole activation register, and the weight stream would otherwise run straight
        # into the multipliers (16.4 ns on the ECP5). They are taken only on issue: w is the
        # weight stream, a head row only then.
        acts = abuf.word_select(j, n * hb) if R > 1 else abuf
        wq = Signal(n * hb, name="head_wq")
        aq = Signal(n * hb, name="head_aq")
        with m.If(issue):
            m.d.sync += [wq.eq(self.w.payload), aq.eq(acts)]
        prods = []
        for i in range(n):
            pr = Signal(signed(2 * hb), name=f"prod{i}")
            with m.If(adv):
                m.d.sync += pr.eq(wq[i * hb: (i + 1) * hb].as_signed()
                                  * aq[i * hb: (i + 1) * hb].as_signed())
            prods.append(pr)
        meta = data.StructLayout({"valid": 1, "first": 1, "last": 1})
        mq, m0 = Signal(meta), Signal(meta)
        with m.If(adv):
            m.d.sync += [mq.valid.eq(issue), mq.first.eq(j == 0), mq.last.eq(last_j),
                         m0.eq(mq)]
        total, stages = _adder_tree(m, prods, 2, adv, "hsum")
        mt = m0
        for s in range(stages):
            nxt = Signal(meta, name=f"hmeta{s}")
            with m.If(adv):
                m.d.sync += nxt.eq(mt)
            mt = nxt
        acc = Signal(signed(c.logit_bits))
        done = Signal()
        with m.If(adv):
            m.d.sync += done.eq(mt.valid & mt.last)
            with m.If(mt.valid):
                m.d.sync += acc.eq(Mux(mt.first, 0, acc) + total)
        m.d.comb += [ovalid.eq(done), opayload.eq(acc)]
        assert 4 + stages == head_latency(n)
        return m


class BiMambaLM(wiring.Component):
    """The whole-model engine (see the module docstring).

    Members
    -------
    token : ``In(stream.Signature(config.token_layout))``
        A byte a token; ``start`` begins a new sequence (every layer's state taken as zero).
        The first token after reset does too.
    row : ``Out(stream.Signature(unsigned(token_bits)))``
        The embedding row the token's stream must begin with (the memory's address).
    mem : ``In(stream.Signature(unsigned(config.beat_bits)))``
        Per token the sections of :data:`LM_SECTIONS` (:func:`rtl.packer.lm_beats`).
    logits : ``Out(stream.Signature(signed(config.logit_bits)))``, ``vocab_size`` beats a token.
    state_req, state_in, state_out, conv_in, conv_out : with ``config.state == "memory"``,
        the state port. A swap a layer: ``state_req`` names the layer whose state the memory
        must send (``load``) and the one whose state the engine sends back (``save``: the
        layer computed before); then ``state_words`` words of SSM state in on ``state_in`` and
        as many out on ``state_out``, and ``conv_words`` of conv state on ``conv_in`` and
        ``conv_out``, each in word order. The memory must have written the words of a swap
        before it reads those of the next. The first request follows the first token after
        reset; each next one, the last word in of the swap before (on both channels).
    """

    def __init__(self, config: LMConfig) -> None:
        if not isinstance(config, LMConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be an LMConfig, not {config!r}")
        config.export  # an LMShape is not enough to build the engine (TypeError)
        self.config = config
        members = {
            "token": In(stream.Signature(config.token_layout)),
            "row": Out(stream.Signature(unsigned(config.token_bits))),
            "mem": In(stream.Signature(unsigned(config.beat_bits))),
            "logits": Out(stream.Signature(signed(config.logit_bits))),
        }
        if config.state == "memory":
            ws, wc = config.state_word_bits, config.conv_word_bits
            members.update({
                "state_req": Out(stream.Signature(config.state_req_layout)),
                "state_in": In(stream.Signature(unsigned(ws))),
                "state_out": Out(stream.Signature(unsigned(ws))),
                "conv_in": In(stream.Signature(unsigned(wc))),
                "conv_out": Out(stream.Signature(unsigned(wc))),
            })
        super().__init__(members)

    def elaborate(self, platform):
        c = self.config
        q = c.q
        P, D, L, rb = c.pe, c.cfg.d_model, c.n_layer, c.res_bits
        G = D // P
        m = Module()
        m.submodules.layer = layer = BiMambaLayer(c.layer)
        m.submodules.norm_f = norm_f = RmsNormUnit(q.norm_f, q.layers[0].rsqrt, P, c.beat_bits)
        m.submodules.head = head = HeadUnit(c)

        # -- token -> row request; its start flag waits for the token's first u beat ---------
        m.submodules.starts = starts = fifo.SyncFIFO(width=1, depth=2)
        m.d.comb += [
            self.row.payload.eq(self.token.payload.id),
            self.row.valid.eq(self.token.valid & starts.w_rdy),
            self.token.ready.eq(self.row.ready & starts.w_rdy),
            starts.w_data.eq(self.token.payload.start),
            starts.w_en.eq(self.token.valid & self.token.ready),
        ]

        # -- the weight stream: count beats, route each section ------------------------------
        beats = c.section_beats()
        emb = stream.Signature(unsigned(c.beat_bits)).create(path=("emb",))
        mem = self._state_port(m, layer) if c.state == "memory" else self.mem
        section_demux(m, mem, [emb, layer.mem, norm_f.gain, head.w],
                      [beats[name] for name in LM_SECTIONS])

        # -- the layer engine's input: the embedding row (layer 0) or its own output ---------
        upass = Signal(range(max(L, 2)))  # the layer whose input u carries now
        ucnt = Signal(range(max(G, 2)))
        opass = Signal(range(max(L, 2)))  # the layer whose output o carries now
        ocnt = Signal(range(max(G, 2)))
        fresh = Signal(init=1)  # no token since reset: the next begins a sequence
        tok_start = Signal()  # the start flag of the token in the engine
        take_u = Signal()
        emb_rec, emb_valid = gather(m, emb, c.emb_record_beats, c.emb_record_beats,
                                    take_u & (upass == 0), 1, "emb")
        from_emb = upass == 0
        first_beat = ucnt == 0
        start_now = Mux(from_emb, starts.r_data | fresh, tok_start)
        o_last = opass == L - 1
        loop_valid = layer.o.valid & ~o_last
        m.d.comb += [
            layer.u.valid.eq(Mux(from_emb, emb_valid & (~first_beat | starts.r_rdy),
                                 loop_valid)),
            layer.u.payload.v.eq(Mux(from_emb, emb_rec[: P * rb], Value.cast(layer.o.payload))),
            layer.u.payload.start.eq(first_beat & start_now),
            take_u.eq(layer.u.valid & layer.u.ready),
            starts.r_en.eq(take_u & from_emb & first_beat),
        ]
        with m.If(take_u):
            m.d.sync += ucnt.eq(Mux(ucnt == G - 1, 0, ucnt + 1))
            with m.If(ucnt == G - 1):
                m.d.sync += upass.eq(Mux(upass == L - 1, 0, upass + 1))
            with m.If(from_emb & first_beat):
                m.d.sync += [tok_start.eq(start_now), fresh.eq(0)]

        # -- the layer engine's output: the next layer's input, or the final norm ------------
        m.d.comb += [
            norm_f.x.valid.eq(layer.o.valid & o_last),
            norm_f.x.payload.eq(layer.o.payload),
            layer.o.ready.eq(Mux(o_last, norm_f.x.ready, layer.u.ready & ~from_emb)),
        ]
        with m.If(layer.o.valid & layer.o.ready):
            m.d.sync += ocnt.eq(Mux(ocnt == G - 1, 0, ocnt + 1))
            with m.If(ocnt == G - 1):
                m.d.sync += opass.eq(Mux(opass == L - 1, 0, opass + 1))

        wiring.connect(m, norm_f.a, head.a)
        wiring.connect(m, head.logits, wiring.flipped(self.logits))
        return m

    def _state_port(self, m: Module, layer: BiMambaLayer):
        """The state port's sequencer: a request a swap (``load`` layer i, ``save`` layer
        i - 1), the words passed to and from the scan unit; and the weight stream held at each
        layer's first beat until the scan holds that layer's state. Returns the weight stream
        as the demultiplexer sees it."""
        c = self.config
        L = c.n_layer
        wiring.connect(m, wiring.flipped(self.state_in), layer.restore)
        wiring.connect(m, layer.save, wiring.flipped(self.state_out))
        wiring.connect(m, wiring.flipped(self.conv_in), layer.conv_restore)
        wiring.connect(m, layer.conv_save, wiring.flipped(self.conv_out))

        # Requests: the first once a token is taken after reset, then one as each swap's last
        # word comes in (the memory has all the words it saves before it reads the next).
        req_valid = Signal()
        armed = Signal(init=1)  # no token since reset
        load = Signal(range(max(L, 2)))
        save = Signal(range(max(L, 2)), init=L - 1)
        m.d.comb += [self.state_req.valid.eq(req_valid),
                     self.state_req.payload.load.eq(load), self.state_req.payload.save.eq(save)]
        with m.If(self.state_req.valid & self.state_req.ready):
            m.d.sync += req_valid.eq(0)
        with m.If(armed & self.token.valid & self.token.ready):
            m.d.sync += [req_valid.eq(1), armed.eq(0)]
        # Each channel's words in: the swap is in once both have their last.
        ins = []
        for name, port, n in (("ssm", self.state_in, c.state_words),
                               ("conv", self.conv_in, c.conv_words)):
            words = Signal(range(max(n, 2)), name=f"{name}_words")
            got = Signal(name=f"{name}_got")
            last = port.valid & port.ready & (words == n - 1)
            with m.If(port.valid & port.ready):
                m.d.sync += words.eq(Mux(words == n - 1, 0, words + 1))
            with m.If(last):
                m.d.sync += got.eq(1)
            ins.append((got, last))
        with m.If(ins[0][0] | ins[0][1]):
            with m.If(ins[1][0] | ins[1][1]):
                m.d.sync += [req_valid.eq(1), save.eq(load),
                             load.eq(Mux(load == L - 1, 0, load + 1)),
                             ins[0][0].eq(0), ins[1][0].eq(0)]

        # The weight stream: `togo` beats to the next layer's first beat (`left` layers to go
        # in the token); at that beat the stream waits for `loaded`.
        E, Lb, B = c.section_beats()["embedding"], c.layer.beats_per_token, c.beats_per_token
        pos = Signal(range(B))
        togo = Signal(range(max(E, Lb) + 1), init=E)
        left = Signal(range(L + 1), init=L)
        gated = (togo == 0) & (left != 0) & ~layer.loaded
        mem = stream.Signature(unsigned(c.beat_bits)).create(path=("mem_gated",))
        m.d.comb += [mem.valid.eq(self.mem.valid & ~gated), mem.payload.eq(self.mem.payload),
                     self.mem.ready.eq(mem.ready & ~gated)]
        with m.If(mem.valid & mem.ready):
            m.d.sync += pos.eq(Mux(pos == B - 1, 0, pos + 1))
            with m.If(pos == B - 1):
                m.d.sync += [togo.eq(E), left.eq(L)]
            with m.Elif((togo == 0) & (left != 0)):
                m.d.sync += [togo.eq(Lb - 1), left.eq(left - 1)]
            with m.Elif(togo != 0):
                m.d.sync += togo.eq(togo - 1)
        return mem
