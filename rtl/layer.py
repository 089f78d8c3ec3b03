"""``BiMambaLayer``: a whole Bi-Mamba block in RTL, a residual token in and a residual token out,
every weight and constant read from one memory stream at up to one beat a cycle.

The engine is the golden model's :class:`~model.golden.layer.GoldenLayer` bit for bit. Its stages are
stream units joined by FIFOs (docs/layer_engine.md has the block diagram and the schedule)::

    u ─┬─> RmsNormUnit ─> StreamProjection (in_proj) ─┬─> z FIFO ──────────────┐
       │                                             ├─> xBC FIFO ─> ConvUnit ─> feeder ─> SsmScan ─> GateUnit
       │                                             └─> dt FIFO ──────────────┘                        │
       │   ┌──────────────────────────────────────────────────────────────────────────────────────────┘
       │   └─> RmsNormUnit (gated norm) ─> StreamProjection (out_proj) ─┐
       └─> u FIFO ──────────────────────────────────────────────────────┴─> residual add ─> o

The ``mem`` stream carries six sections per token, in the order the stages need them (see
:data:`SECTIONS`); a demultiplexer counts beats and routes each section to its unit, so a
unit that is not ready stalls the stream and nothing else. Conv and SSM state stay on chip, in
the conv unit and the scan unit, for the layer this engine holds; the constants and tables that
are not on the stream (the PWL and rsqrt tables, the shifts of the number formats) are
generator parameters of the export ``q``.

in_proj's output rows leave in the order z, B, C, x, dt (the packer permutes its rows and the
conv's channels accordingly), so the conv emits B and C, which the scan needs first, before x.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import BiMambaConfig
from model.golden.fixedpoint import signed_bits

from .layer_units import (
    CONV_LATENCY, GATE_LATENCY, NORM_LATENCY, ConvUnit, GateUnit, norm_lead_cycles,
    RmsNormUnit, check_divides, conv_bias_bits, divisors,
)
from .nonlinear import saturate
from .stall import RegisteredFIFO, output_register, register_slice
from .ssm_scan import ScanConfig, SsmScan, scan_depth, scan_latency
from .stream_projection import StreamProjection, StreamProjectionConfig

if TYPE_CHECKING:
    from model.golden.quantize import QuantizedLayer

__all__ = ["LayerShape", "LayerConfig", "BiMambaLayer", "LayerChain", "Pace", "Schedule",
           "SECTIONS", "RESIDUAL_LATENCY", "section_demux"]

# The weight stream's sections per token, in stream order.
SECTIONS = ("norm_in", "in_proj", "scan", "conv", "norm_out", "out_proj")
# Cycles from out_proj's output beat to the residual sum's o beat: the sum's output register.
RESIDUAL_LATENCY = 1


@dataclass(frozen=True)
class Pace:
    """The memory's pace: a beat every ``period`` cycles, ``period`` a whole number, a
    :class:`~fractions.Fraction` (exact) or a float (fluid, the estimator's).

    Exact: beat ``k`` of a token's stream (``k >= 1``) is offered ``gap(k) = floor(k p) -
    floor((k - 1) p)`` cycles after the handshake of beat ``k - 1`` at the earliest (so
    ``floor(n p)`` cycles for ``n`` beats that the engine never holds up: a memory of
    ``1 / p`` beats a cycle, ``p = 5/4`` for 0.8), and a token's first beat ``gap(0) =
    ceil(p)`` after the previous token's last. Fluid: ``p`` every beat.
    """

    period: int | float | Fraction

    def __post_init__(self) -> None:
        p = self.period
        if isinstance(p, bool) or not isinstance(p, (int, float, Fraction)) or not p >= 1:
            raise ValueError(f"period must be a number >= 1, not {p!r} (cycles a beat)")

    @property
    def exact(self) -> bool:
        return not isinstance(self.period, float)

    def _floor(self, k: int) -> int:
        p = Fraction(self.period)
        return k * p.numerator // p.denominator

    def gap(self, k: int):
        """Cycles from beat ``k - 1``'s handshake to beat ``k``'s offer (``k = 0``: from the
        previous token's last beat)."""
        if not self.exact:
            return self.period
        if k == 0:
            return -(-Fraction(self.period).numerator // Fraction(self.period).denominator)
        return self._floor(k) - self._floor(k - 1)

    def span(self, j: int, k: int):
        """``gap(j + 1) + ... + gap(k)``: beats ``j + 1 .. k`` that the engine never holds up."""
        if not self.exact:
            return (k - j) * self.period
        return self._floor(k) - self._floor(j)


@dataclass(frozen=True)
class Schedule:
    """The cycle formula's answer for one token (:meth:`LayerConfig.schedule`).

    Members
    -------
    ends : dict
        Cycle of the last event of each phase: the last ``mem`` handshake of a section
        (norm_in, in_proj, scan constants, conv, norm_out, out_proj), the scan's last y
        handshake (``ssm``) and its last chunk's issue (``ssm_issue``), and the gate's last
        output (``gate``).
    last_out : int
        The token's last ``o`` handshake.
    token_cycles : int
        Cycles between the ends of back-to-back tokens.
    beats : int
        ``mem`` beats per token.
    period : int, float or Fraction
        Cycles per beat of the memory (:class:`Pace`).
    """

    ends: dict
    last_out: int
    token_cycles: int
    beats: int
    period: int | float | Fraction

    @property
    def memory_cycles(self) -> int:
        """The roofline: cycles the memory needs for a token's beats."""
        return self.beats * self.period


@dataclass(frozen=True)
class LayerShape:
    """What the engine's beat counts and cycle formula depend on: the model's shape and the
    widths of the values on the weight stream. :meth:`of` reads them from an export;
    :meth:`assumed` states them from a :class:`~model.golden.quantize.QuantSpec` alone, for estimates
    made without an export (the two widths that depend on calibrated values are then taken
    at their bounds).
    """

    cfg: BiMambaConfig
    act_bits: int
    param_bits: int  # norm gains, beta, conv taps, A, D
    scale_bits: int  # the projections' requantisation multipliers
    conv_bias_bits: int
    dt_in_bits: int

    @classmethod
    def of(cls, q: "QuantizedLayer") -> "LayerShape":
        return cls(q.cfg, q.spec.act_bits, q.spec.param_bits, q.spec.scale_bits,
                   conv_bias_bits(q), q.fmt["dt_in"].bits)

    @classmethod
    def assumed(cls, cfg: BiMambaConfig, spec) -> "LayerShape":
        """Without an export, two assumptions: the conv bias (accumulator units) no larger
        than one input-tap product, ``2^(data_bits-1) * 2^(param_bits-1)``; and ``dt_raw +
        dt_bias`` within two bits above ``data_bits`` (a synthetic 780M export at the default
        widths: 27 and 18 bits, against 32 and 18 assumed)."""
        bias = (1 << (spec.data_bits - 1)) * (1 << (spec.param_bits - 1))
        return cls(cfg, spec.act_bits, spec.param_bits, spec.scale_bits,
                   signed_bits(bias), spec.data_bits + 2)


@dataclass(frozen=True)
class LayerConfig:
    """Generator parameters of :class:`BiMambaLayer`.

    Parameters
    ----------
    q : QuantizedLayer or LayerShape
        The export the engine computes. A :class:`LayerShape` is enough for the beat counts
        and the cycle formula (the estimator's use); building the engine needs the export.
    simd, pe : int
        The projection array: ``pe`` rows x ``simd`` columns, one ``pe * simd``-bit weight
        beat; ``pe`` is also the lane count of every element-wise stage.
    planes : int, optional
        Activation bit-planes per cycle in the projections (default: all, bit-parallel).
    lanes : int
        State elements the scan updates per cycle.
    slots : int
        Layers the engine serves in turn (1: a layer engine of its own; the number of layers
        when one engine runs them all, :class:`rtl.lm.BiMambaLM`); with the state on chip,
        a slot each in the conv and scan RAMs.
    state_port : bool
        The conv and SSM state through ports instead (``restore`` and ``save`` of
        :class:`~rtl.ssm_scan.SsmScan` and :class:`~rtl.layer_units.ConvUnit`,
        rtl/state_swap.py): their RAMs hold the layer being computed.

    Raises
    ------
    ValueError
        If a parameter does not divide the dimension it must divide; the message names the
        parameter and the allowed values.
    """

    q: QuantizedLayer
    simd: int
    pe: int
    lanes: int
    planes: int | None = None
    slots: int = 1
    state_port: bool = False

    def __post_init__(self) -> None:
        sh = self.shape
        c = sh.cfg
        if not isinstance(self.state_port, bool):
            raise ValueError(f"state_port must be True or False, not {self.state_port!r}")
        for name in ("simd", "pe", "lanes", "slots"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if sh.act_bits < 2:
            raise ValueError(f"act_bits must be in [2, 16] for the layer engine, not "
                             f"{sh.act_bits}")
        if c.ngroups != 1:
            raise ValueError(f"ngroups must be 1 for the layer engine, not {c.ngroups}")
        check_divides("simd", self.simd, "d_model", c.d_model)
        check_divides("simd", self.simd, "d_inner", c.d_inner)
        check_divides("pe", self.pe, "simd", self.simd)
        check_divides("pe", self.pe, "d_state", c.d_state)
        check_divides("pe", self.pe, "headdim", c.headdim)
        ScanConfig.check_shape(c, self.lanes)
        if self.planes is not None and not 1 <= self.planes <= sh.act_bits:
            raise ValueError(f"planes must be in [1, act_bits = {sh.act_bits}], not "
                             f"{self.planes!r}")
        if self.beat_bits < self.scan_value_bits:
            raise ValueError(f"pe * simd = {self.beat_bits} must be >= {self.scan_value_bits}: a "
                             f"beat must hold one scan constant")

    # -- the units -------------------------------------------------------------------------

    @property
    def shape(self) -> LayerShape:
        return self.q if isinstance(self.q, LayerShape) else LayerShape.of(self.q)

    @property
    def cfg(self) -> BiMambaConfig:
        return self.shape.cfg

    @property
    def export(self) -> "QuantizedLayer":
        """The export (building the engine or packing its stream needs it)."""
        if isinstance(self.q, LayerShape):
            raise TypeError("this LayerConfig was made from a LayerShape: building the engine "
                            "or packing its weight stream needs the layer's export")
        return self.q

    def _projection(self, which: str) -> StreamProjectionConfig:
        if not isinstance(self.q, LayerShape):
            return StreamProjectionConfig.from_projection(getattr(self.q, which), self.simd,
                                                          self.pe, self.planes)
        sh = self.shape
        c = sh.cfg
        d_in, d_out = (c.d_model, c.d_in_proj) if which == "in_proj" else (c.d_inner,
                                                                           c.d_model)
        return StreamProjectionConfig(d_in, d_out, self.simd, self.pe, sh.act_bits,
                                      self.planes or sh.act_bits, beta_bits=sh.param_bits,
                                      mult_bits=sh.scale_bits)

    @property
    def beat_bits(self) -> int:
        return self.pe * self.simd

    @property
    def beat_bytes(self) -> int | float:
        """Bytes of a beat (a whole number whenever ``pe * simd`` is a multiple of 8)."""
        return self.beat_bits // 8 if self.beat_bits % 8 == 0 else self.beat_bits / 8

    @property
    def in_proj(self) -> StreamProjectionConfig:
        return self._projection("in_proj")

    @property
    def out_proj(self) -> StreamProjectionConfig:
        return self._projection("out_proj")

    @property
    def scan(self) -> ScanConfig:
        return ScanConfig(self.export, self.lanes, 1 if self.state_port else self.slots,
                          port=self.state_port)

    def in_proj_rows(self) -> np.ndarray:
        """in_proj's output rows in the order they leave the unit: z, B, C, x, dt."""
        c = self.cfg
        E, N, H = c.d_inner, c.d_state, c.nheads
        return np.concatenate([np.arange(E), np.arange(2 * E, 2 * E + 2 * N),
                               np.arange(E, 2 * E), np.arange(2 * E + 2 * N, 2 * E + 2 * N + H)])

    def conv_order(self) -> np.ndarray:
        """Conv channels (index into xBC) in processing order: B, C, then x."""
        c = self.cfg
        E, N = c.d_inner, c.d_state
        return np.concatenate([np.arange(E, E + 2 * N), np.arange(E)])

    @property
    def scan_value_bits(self) -> int:
        """A scan constant on the stream: dt_bias (dt_in bits) or A or D (param_bits)."""
        return max(self.shape.param_bits, self.shape.dt_in_bits)

    @property
    def scan_values_per_beat(self) -> int:
        return self.beat_bits // self.scan_value_bits

    # -- the stream ------------------------------------------------------------------------

    def norm_unit(self, which: str) -> RmsNormUnit:
        q = self.export
        n = q.norm_in if which == "norm_in" else q.norm_out
        return RmsNormUnit(n, q.rsqrt, self.pe, self.beat_bits)

    def conv_unit(self) -> ConvUnit:
        return ConvUnit(self.export, self.pe, self.beat_bits,
                        1 if self.state_port else self.slots, port=self.state_port)

    @property
    def conv_state_words(self) -> int:
        """Words of the conv unit's state RAM (a group of ``pe`` channels a word)."""
        return self.cfg.conv_dim // self.pe

    @property
    def conv_state_word_bits(self) -> int:
        """``d_conv - 1`` inputs of ``pe`` channels (``xbc`` bits each)."""
        return self.pe * (self.cfg.d_conv - 1) * self.export.fmt["xbc"].bits

    @property
    def gain_beats(self) -> dict[str, int]:
        """Beats of one record of ``pe`` gains, per norm."""
        n = -(-self.pe * self.shape.param_bits // self.beat_bits)  # the gains: param_bits
        return {"norm_in": n, "norm_out": n}

    @property
    def conv_beats(self) -> int:
        """Beats of one conv record (``pe`` channels)."""
        sh = self.shape
        return -(-self.pe * (sh.cfg.d_conv * sh.param_bits + sh.conv_bias_bits)
                 // self.beat_bits)

    def section_beats(self) -> dict[str, int]:
        """``mem`` beats per token, per section (:data:`SECTIONS` order)."""
        c = self.cfg
        return {
            "norm_in": c.d_model // self.pe * self.gain_beats["norm_in"],
            "in_proj": self.in_proj.mem_beats,
            "scan": -(-3 * c.nheads // self.scan_values_per_beat),
            "conv": c.conv_dim // self.pe * self.conv_beats,
            "norm_out": c.d_inner // self.pe * self.gain_beats["norm_out"],
            "out_proj": self.out_proj.mem_beats,
        }

    @property
    def beats_per_token(self) -> int:
        return sum(self.section_beats().values())

    @property
    def bytes_per_token(self) -> int:
        """Bytes the memory delivers per token: every beat, padding included."""
        return self.beats_per_token * self.beat_bits // 8

    # -- cycles ----------------------------------------------------------------------------

    def schedule(self, period: int | float | Fraction = 1, latency: int = 0,
                 first: bool = False, mem_at: int | float = 0, base: int = 0) -> "Schedule":
        """The engine's cycle formula: when each phase of a token ends (docs/layer_engine.md,
        section 4).

        Parameters
        ----------
        period : int, Fraction or float
            Cycles per ``mem`` beat (:class:`Pace`): 1 is a beat a cycle, ``Fraction(5, 4)``
            a memory of 0.8 beats a cycle, exactly as the RTL memory model paces it; a float
            gives the same formula for a fluid memory, as the estimator uses it.
        latency : int
            Cycles before the memory's first beat (only the first token waits for it).
        first : bool
            The first token after reset, its ``u`` beats from cycle 0 one a cycle: times are
            from cycle 0. Otherwise a token of a back-to-back burst (``u`` and the output never
            stalled): times are from the handshake of the token's last ``u`` beat.
        mem_at : int or float
            Not ``first``: the earliest time the token's first ``mem`` beat is offered (the
            whole-model engine's stream, where other sections come between layers).
        base : int
            The index of the layer's first beat in the token's stream (the whole-model
            engine's: the embedding and the layers before come first), for an exact pace.

        Returns
        -------
        Schedule
            Phase end times; ``token_cycles`` (the spacing of back-to-back tokens) and
            ``last_out`` (the last ``o`` handshake).
        """
        pace = Pace(period)
        if not isinstance(latency, int) or isinstance(latency, bool) or latency < 0:
            raise ValueError(f"latency must be an integer >= 0, not {latency!r}")
        c = self.cfg
        P = self.pe
        beats = self.section_beats()
        t: dict[str, int] = {}
        u_last = c.d_model // P - 1 if first else 0
        # Block norm: its sum of squares and rsqrt after the last input (norm_lead_cycles),
        # then a gain record per group.
        # `k` follows the index of the last beat taken.
        k = base
        start = max(u_last + 1 + norm_lead_cycles(P), latency if first else mem_at)
        t["norm_in"] = start + pace.span(k, k + beats["norm_in"] - 1)
        k += beats["norm_in"] - 1

        def projection(pc: StreamProjectionConfig, after, k: int):
            # The last activations leave the norm NORM_LATENCY after its last issue; the unit
            # computes from the next cycle. Beta and row-constant beats take their gap each; a
            # weight beat is used for cycles_per_weight cycles once it arrives.
            s0 = after + max(NORM_LATENCY + 1, pace.gap(k + 1))
            n = pc.mem_beats
            return (s0 + pace.span(k + 1, k + n)
                    + pc.row_groups * pc.folds * (pc.cycles_per_weight - 1)), k + n

        t["in_proj"], k = projection(self.in_proj, t["norm_in"], k)
        # Scan constants: a beat's values are written one a cycle once it arrives.
        v, n3 = self.scan_values_per_beat, 3 * c.nheads
        t["scan"] = t["in_proj"]
        for i in range(0, n3, v):
            k += 1
            t["scan"] += pace.gap(k) + min(v, n3 - i) - 1
        t["conv"] = t["scan"] + pace.span(k, k + beats["conv"])
        # The scan: head h reaches it when its last x group leaves the conv; the scanner takes
        # a head every headdim * d_state / lanes cycles, or waits for the next head.
        n_cv = self.conv_beats
        nbc, nh = 2 * c.d_state // P, c.headdim // P
        per_head = c.headdim * (c.d_state // self.lanes)
        free = None
        for h in range(c.nheads):
            ready = t["scan"] + pace.span(k, k + (nbc + (h + 1) * nh) * n_cv) \
                + CONV_LATENCY + 1
            free = ready if free is None else max(free + per_head, ready)
        t["ssm"] = free + per_head + scan_latency(self.lanes) - 1
        # (the scanner's last chunk issues scan_depth + 1 cycles before the last y)
        t["ssm_issue"] = t["ssm"] - scan_depth(self.lanes) - 1
        k += beats["conv"]
        # Gate: the last y beat's slices, one a cycle; the gated norm as the block norm.
        t["gate"] = t["ssm"] + nh + GATE_LATENCY
        t["norm_out"] = max(t["gate"] + 1 + norm_lead_cycles(P), t["conv"] + pace.gap(k + 1)) \
            + pace.span(k + 1, k + beats["norm_out"])
        k += beats["norm_out"]
        t["out_proj"], k = projection(self.out_proj, t["norm_out"], k)
        last_out = t["out_proj"] + self.out_proj.tail_latency + RESIDUAL_LATENCY
        # Back to back, a token follows the one before from its last out_proj beat: the
        # residual's register delays o, not the next token.
        return Schedule(t, last_out, last_out - RESIDUAL_LATENCY + 1 - u_last,
                        self.beats_per_token, period)

    def roofline_fraction(self, period: int = 1) -> float:
        """Back-to-back tokens per second as a fraction of the memory roofline: the beats of a
        token at ``period`` cycles each over the formula's cycles per token."""
        return self.beats_per_token * period / self.schedule(period).token_cycles

    @staticmethod
    def array_for(cfg, bytes_per_cycle: int) -> tuple[int, int]:
        """``(pe, simd)`` of an array that eats ``bytes_per_cycle`` of weight stream a cycle:
        a beat of ``8 * bytes_per_cycle = pe * simd`` bits, ``pe`` the largest divisor with
        ``pe * pe <= beat`` that the model's shape allows (``pe`` divides simd, d_state and
        headdim; ``simd`` divides d_model and d_inner). Needs the shape only.

        Raises
        ------
        ValueError
            If no split of the beat divides the model's dimensions.
        """
        if not isinstance(bytes_per_cycle, int) or isinstance(bytes_per_cycle, bool) \
                or bytes_per_cycle < 1:
            raise ValueError(f"bytes_per_cycle must be a positive integer, not "
                             f"{bytes_per_cycle!r}")
        bits = 8 * bytes_per_cycle
        for pe in sorted((d for d in divisors(bits) if d * d <= bits), reverse=True):
            simd = bits // pe
            if not (simd % pe or cfg.d_model % simd or cfg.d_inner % simd or cfg.d_state % pe
                    or cfg.headdim % pe):
                return pe, simd
        raise ValueError(f"bytes_per_cycle = {bytes_per_cycle}: no pe x simd = {bits} bits "
                         f"divides d_model = {cfg.d_model}, d_inner = {cfg.d_inner}, d_state = "
                         f"{cfg.d_state} and headdim = {cfg.headdim}")

    @classmethod
    def sized_for(cls, q: "QuantizedLayer", bytes_per_cycle: int, target: float = 0.9,
                  planes: int | None = None) -> "LayerConfig":
        """The engine sized for a memory of ``bytes_per_cycle``: the array of
        :meth:`array_for` (bit-parallel unless ``planes`` is given) and the fewest scan lanes
        whose formula reaches ``target`` of the memory roofline (else ``lanes = d_state``).

        Raises
        ------
        ValueError
            If no split of the beat divides the model's dimensions.
        """
        c = q.cfg
        pe, simd = cls.array_for(c, bytes_per_cycle)
        best = None
        for lanes in divisors(c.d_state):
            if c.nheads * c.headdim * (c.d_state // lanes) < 2:
                continue
            best = cls(q, simd, pe, lanes, planes)
            if best.roofline_fraction() >= target:
                break
        return best

    @property
    def u_layout(self) -> data.StructLayout:
        return data.StructLayout({"start": 1, "v": data.ArrayLayout(
            signed(self.export.fmt["res"].bits), self.pe)})

    @property
    def o_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.export.fmt["res"].bits), self.pe)


def section_demux(m: Module, mem, targets: list, beats: list[int]) -> None:
    """Route the stream ``mem`` to ``targets`` in turn: ``beats[i]`` beats to target i, then
    the next, wrapping after the last. A target that is not ready stalls the stream."""
    n = len(targets)
    if len(beats) != n or any(not isinstance(b, int) or b < 1 for b in beats):
        raise ValueError(f"beats must be {n} whole numbers >= 1 (one a target), not {beats!r}")
    sec = Signal(range(max(n, 2)), name="sec")
    nb = Signal(range(max(beats) + 1), name="sec_beat")
    ready = Signal(name="sec_ready")
    for i, t in enumerate(targets):
        m.d.comb += [t.payload.eq(mem.payload), t.valid.eq(mem.valid & (sec == i))]
        with m.If(sec == i):
            m.d.comb += ready.eq(t.ready)
    m.d.comb += mem.ready.eq(ready)
    with m.If(mem.valid & mem.ready):
        for i, b in enumerate(beats):
            with m.If(sec == i):
                with m.If(nb == b - 1):
                    m.d.sync += [nb.eq(0), sec.eq((i + 1) % n)]
                with m.Else():
                    m.d.sync += nb.eq(nb + 1)


def _held_flag(m: Module, f, name: str):
    """A stream of the 1-bit FIFO ``f``'s words from a holding register read ahead: the
    register loads whenever it is empty (``f``'s read enable from a register alone) and is
    emptied by the stream's handshake. The taker's word is known a cycle after it is in the
    FIFO, and its handshake drives the register, not the FIFO."""
    s = stream.Signature(unsigned(1)).create(path=(name,))
    with m.If(s.valid & s.ready):
        m.d.sync += s.valid.eq(0)
    with m.If(f.r_rdy & ~s.valid):
        m.d.sync += [s.payload.eq(f.r_data), s.valid.eq(1)]
    m.d.comb += f.r_en.eq(~s.valid)
    return s


class BiMambaLayer(wiring.Component):
    """The layer engine (see the module docstring).

    Members
    -------
    u : ``In(stream.Signature(config.u_layout))``
        ``d_model / pe`` beats a token; ``start`` on a token's first beat begins a new
        sequence (conv and SSM state taken as zero). The first token after reset does too.
    mem : ``In(stream.Signature(unsigned(config.beat_bits)))``
        The token's sections, :data:`SECTIONS` order (:func:`rtl.packer.layer_beats`).
    o : ``Out(stream.Signature(config.o_layout))``, ``d_model / pe`` beats a token.
    restore, save, conv_restore, conv_save, loaded : with ``config.state_port``, the scan
        unit's (:class:`~rtl.ssm_scan.SsmScan`: a token's SSM state in and the previous
        token's out, ``ScanConfig.state_words`` words each) and the conv unit's (its
        ``conv_dim / pe`` words of ``d_conv - 1`` inputs); ``loaded`` is high once both hold
        the next token's state.
    """

    def __init__(self, config: LayerConfig) -> None:
        if not isinstance(config, LayerConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a LayerConfig, not {config!r}")
        config.export  # a LayerShape is not enough to build the engine (TypeError)
        self.config = config
        members = {
            "u": In(stream.Signature(config.u_layout)),
            "mem": In(stream.Signature(unsigned(config.beat_bits))),
            "o": Out(stream.Signature(config.o_layout)),
        }
        if config.state_port:
            ws, wc = config.scan.state_word_bits, config.conv_state_word_bits
            members.update({"restore": In(stream.Signature(unsigned(ws))),
                            "save": Out(stream.Signature(unsigned(ws))),
                            "conv_restore": In(stream.Signature(unsigned(wc))),
                            "conv_save": Out(stream.Signature(unsigned(wc))),
                            "loaded": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        lc = self.config
        q = lc.q
        c, f = q.cfg, q.fmt
        P = lc.pe
        D, E, H, C = c.d_model, c.d_inner, c.nheads, c.conv_dim
        m = Module()

        m.submodules.norm_in = norm_in = lc.norm_unit("norm_in")
        m.submodules.in_proj = in_proj = StreamProjection(lc.in_proj)
        m.submodules.conv = conv = lc.conv_unit()
        m.submodules.scan = scan = SsmScan(lc.scan)
        m.submodules.gate = gate = GateUnit(q, P)
        m.submodules.norm_out = norm_out = lc.norm_unit("norm_out")
        m.submodules.out_proj = out_proj = StreamProjection(lc.out_proj)
        if lc.state_port:
            wiring.connect(m, wiring.flipped(self.restore), scan.restore)
            wiring.connect(m, scan.save, wiring.flipped(self.save))
            wiring.connect(m, wiring.flipped(self.conv_restore), conv.restore)
            wiring.connect(m, conv.save, wiring.flipped(self.conv_save))
            m.d.comb += self.loaded.eq(scan.loaded & conv.loaded)

        rb, db = f["res"].bits, q.spec.data_bits
        # The whole-model engine (slots > 1) feeds each layer's output back in as the next
        # layer's input. Without the residual's output register the u FIFO needed one entry
        # more than a token, so that a beat could enter as the one before it left (a full FIFO
        # would refuse it and the output beat would wait for its own input: a deadlock); with
        # it the entry is freed a cycle before the sum reaches u, and the spare entry is kept.
        # The u FIFO's word leaves from a fabric register (RegisteredFIFO): the block RAM's
        # read, the residual add and its saturation had been one path (14.8 ns on the ECP5 in
        # the whole-model top). Its room rises at the cycles SyncFIFOBuffered's would.
        loop = 1 if lc.slots > 1 else 0
        m.submodules.ufifo = ufifo = RegisteredFIFO(width=P * rb, depth=max(D // P + loop, 3))
        m.submodules.zfifo = zfifo = fifo.SyncFIFOBuffered(width=P * db, depth=max(E // P, 3))
        m.submodules.xfifo = xfifo = fifo.SyncFIFOBuffered(width=P * db, depth=max(C // P, 3))
        dt_groups = -(-H // P)
        m.submodules.dtfifo = dtfifo = fifo.SyncFIFOBuffered(width=P * db,
                                                             depth=max(dt_groups, 3))
        # (SyncFIFOBuffered needs a depth of 3 or more.) `start` of each token, for the conv
        # and for the scan's B/C beat. A token's flag waits there from its first u beat until
        # its conv and its scan take it; both come before its residual, so the token's first
        # beat is still in the u FIFO.
        # The start FIFOs thus never hold more flags than tokens can begin among those beats,
        # and with that many entries they are never full: their room is left out of u's
        # handshake (the u FIFO's level, the handshake and the start FIFOs' levels had been one
        # path routed across the engine, 11.0 ns on the ECP5).
        starts = max((ufifo.depth - 1) // (D // P) + 1, 4)
        m.submodules.start_conv = start_conv = fifo.SyncFIFO(width=1, depth=starts)
        m.submodules.start_scan = start_scan = fifo.SyncFIFO(width=1, depth=starts)
        # Each is read ahead into a register (one more flag held, within the bound above), so
        # that the unit taking the flag does not drive the FIFO's read: the feeder's B/C
        # handshake into start_scan's level had been the whole-model top's path (12.1 ns).
        conv_flag = _held_flag(m, start_conv, "conv_flag")
        scan_flag = _held_flag(m, start_scan, "scan_flag")

        # -- the weight stream: count beats, route each section to its unit ---------------------
        beats = lc.section_beats()
        unpack = self._scan_consts(m, scan)
        section_demux(m, self.mem, [norm_in.gain, in_proj.mem, unpack, conv.w, norm_out.gain,
                                    out_proj.mem], [beats[name] for name in SECTIONS])

        # -- u: into the block norm and the u FIFO (for the residual) --------------------------
        # The start flag is written a cycle after its beat is taken (start_w), into FIFOs that
        # cannot be full (above).
        ucnt = Signal(range(max(D // P, 2)))
        first = ucnt == 0
        take_u = self.u.valid & self.u.ready
        start_w, start_d = Signal(), Signal()
        m.d.sync += [start_w.eq(take_u & first), start_d.eq(self.u.payload.start)]
        m.d.comb += [
            self.u.ready.eq(norm_in.x.ready & ufifo.w_rdy),
            norm_in.x.valid.eq(self.u.valid & ufifo.w_rdy),
            norm_in.x.payload.eq(self.u.payload.v),
            ufifo.w_data.eq(self.u.payload.v), ufifo.w_en.eq(take_u),
            start_conv.w_data.eq(start_d), start_scan.w_data.eq(start_d),
            start_conv.w_en.eq(start_w), start_scan.w_en.eq(start_w),
        ]
        with m.If(take_u):
            m.d.sync += ucnt.eq(Mux(ucnt == D // P - 1, 0, ucnt + 1))

        # -- block norm -> in_proj -> z / xBC / dt FIFOs by row group --------------------------
        wiring.connect(m, norm_in.a, in_proj.act)
        rg = Signal(range(max(lc.in_proj.row_groups, 2)))
        to_z, to_x = rg < E // P, rg < (E + C) // P
        out = in_proj.out
        for ff in (zfifo, xfifo, dtfifo):
            m.d.comb += ff.w_data.eq(out.payload)
        m.d.comb += [
            zfifo.w_en.eq(out.valid & to_z), xfifo.w_en.eq(out.valid & ~to_z & to_x),
            dtfifo.w_en.eq(out.valid & ~to_x),
            out.ready.eq(Mux(to_z, zfifo.w_rdy, Mux(to_x, xfifo.w_rdy, dtfifo.w_rdy))),
        ]
        with m.If(out.valid & out.ready):
            m.d.sync += rg.eq(Mux(rg == lc.in_proj.row_groups - 1, 0, rg + 1))

        # -- conv: xBC groups with the token's start flag --------------------------------------
        G = C // P
        cg = Signal(range(max(G, 2)))
        m.d.comb += [
            conv.x.valid.eq(xfifo.r_rdy & conv_flag.valid),
            conv.x.payload.v.eq(xfifo.r_data), conv.x.payload.start.eq(conv_flag.payload),
            xfifo.r_en.eq(conv.x.valid & conv.x.ready),
            conv_flag.ready.eq(conv.x.valid & conv.x.ready & (cg == G - 1)),
        ]
        with m.If(conv.x.valid & conv.x.ready):
            m.d.sync += cg.eq(Mux(cg == G - 1, 0, cg + 1))

        self._feeder(m, conv, scan, dtfifo, scan_flag)

        # -- gate (y of a head, z from its FIFO) -> gated norm -> out_proj ---------------------
        wiring.connect(m, scan.y, gate.y)
        # z reaches the gate through a register slice: the FIFO's block RAM has no output
        # register, and its read ran through the gate's SiLU index into the slope table
        # (15.5 ns on the ECP5 in the whole-model top). z waits in its FIFO from in_proj's
        # first row groups until the scan's y, so the slice's cycle is never on the path.
        zs = stream.Signature(gate.z.payload.shape()).create(path=("zslice",))
        m.d.comb += [zs.payload.eq(zfifo.r_data), zs.valid.eq(zfifo.r_rdy),
                     zfifo.r_en.eq(zs.ready)]
        register_slice(m, zs, gate.z, "zslice")
        wiring.connect(m, gate.g, norm_out.x)
        wiring.connect(m, norm_out.a, out_proj.act)

        # -- residual: o = sat(u + out_proj), registered (RESIDUAL_LATENCY) ---------------------
        # The sum leaves from a register: in the whole-model engine o is the next layer's u, and
        # the u FIFO's block RAM read, the add and the next layer's squares would otherwise be
        # one path (17.2 ns on the ECP5).
        res = f["res"]
        mo = out_proj.out
        adv, o_valid, o_payload = output_register(m, self.o, "res")
        take_o = adv & mo.valid & ufifo.r_rdy
        m.d.comb += [o_valid.eq(mo.valid & ufifo.r_rdy), mo.ready.eq(adv & ufifo.r_rdy),
                     ufifo.r_en.eq(take_o)]
        for k in range(P):
            uk = ufifo.r_data[k * rb: (k + 1) * rb].as_signed()
            m.d.comb += o_payload[k].eq(saturate(uk + mo.payload[k], res.min_int, res.max_int))
        return m

    def _scan_consts(self, m: Module, scan: SsmScan):
        """The scan section: beats of packed constants, written one a cycle into the scan unit
        (dt_bias of every head, then A, then D). Returns the stream the demultiplexer feeds."""
        lc = self.config
        H = lc.q.cfg.nheads
        v, cw = lc.scan_values_per_beat, lc.scan_value_bits
        s = stream.Signature(unsigned(lc.beat_bits)).create(path=("scan_consts",))
        lane = Signal(range(max(v, 2)))
        sel = Signal(range(3))
        addr = Signal(range(max(H, 2)))
        last = (sel == 2) & (addr == H - 1)
        m.d.comb += [
            scan.cfg.valid.eq(s.valid), scan.cfg.payload.sel.eq(sel),
            scan.cfg.payload.addr.eq(addr),
            scan.cfg.payload.data.eq(Value.cast(s.payload).word_select(lane, cw).as_signed()),
            s.ready.eq((lane == v - 1) | last),
        ]
        with m.If(s.valid):  # scan.cfg is always ready
            m.d.sync += lane.eq(Mux((lane == v - 1) | last, 0, lane + 1))
            with m.If(addr == H - 1):
                m.d.sync += [addr.eq(0), sel.eq(Mux(sel == 2, 0, sel + 1))]
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        return s

    def _feeder(self, m: Module, conv: ConvUnit, scan: SsmScan, dtfifo, scan_flag) -> None:
        """Conv output (B, C, then x, ``pe`` channels a beat) into the scan's beats: one B/C
        beat with the token's start flag, then a beat per head of its x and dt_raw."""
        lc = self.config
        c = lc.q.cfg
        P, db = lc.pe, lc.q.fmt["xbc_act"].bits
        N, Hd, H = c.d_state, c.headdim, c.nheads
        nbc, nh = 2 * N // P, Hd // P
        y = conv.y
        beat = Value.cast(y.payload)
        # The beat counters' comparisons are flip-flops, set from the counters' next values: the
        # conv's ready is then two LUTs from registers, and a take enables the wide assembly
        # registers below (the layer engine's 95.9 MHz path ran from the counter, 10.4 ns).
        n = Signal(range(max(nbc + c.d_inner // P, 2)))
        in_bc = Signal(init=1)  # n < nbc
        bc_last = Signal(init=int(nbc == 1))  # n == nbc - 1
        take = y.valid & y.ready
        with m.If(take):
            n_next = Mux(n == nbc + c.d_inner // P - 1, 0, n + 1)
            m.d.sync += [n.eq(n_next), in_bc.eq(n_next < nbc), bc_last.eq(n_next == nbc - 1)]

        # B and C: shift in at the top, so the first beat ends up lowest.
        bc_asm = Signal(2 * N * db)
        bc_valid = Signal()
        bc_word = Cat(bc_asm[P * db:], beat) if nbc > 1 else beat
        with m.If(take & in_bc):
            m.d.sync += bc_asm.eq(bc_word)
        bc_out = Signal(scan.bc.payload.shape())
        with m.If(scan.bc.valid & scan.bc.ready):
            m.d.sync += bc_valid.eq(0)
        with m.If(take & bc_last):
            m.d.sync += [bc_valid.eq(1), Value.cast(bc_out).eq(Cat(scan_flag.payload, bc_word))]
        m.d.comb += [scan.bc.valid.eq(bc_valid), scan.bc.payload.eq(bc_out),
                     scan_flag.ready.eq(take & bc_last)]

        # x of a head (Hd / pe beats) with the head's dt_raw from the dt FIFO.
        hq = Signal(range(max(nh, 2)))
        h = Signal(range(max(H, 2)))
        dl = Signal(range(max(P, 2)))
        x_asm = Signal(Hd * db)
        x_word = Cat(x_asm[P * db:], beat) if nh > 1 else beat
        head_valid = Signal()
        head_out = Signal(scan.head.payload.shape())
        head_last = Signal(init=int(nh == 1))  # hq == nh - 1
        with m.If(scan.head.valid & scan.head.ready):
            m.d.sync += head_valid.eq(0)
        dt = dtfifo.r_data.word_select(dl, lc.q.spec.data_bits)
        done_head = take & ~in_bc & head_last
        with m.If(take & ~in_bc):
            hq_next = Mux(head_last, 0, hq + 1)
            m.d.sync += [x_asm.eq(x_word), hq.eq(hq_next), head_last.eq(hq_next == nh - 1)]
        with m.If(done_head):
            m.d.sync += [head_valid.eq(1), Value.cast(head_out).eq(Cat(dt, x_word)),
                         h.eq(Mux(h == H - 1, 0, h + 1)),
                         dl.eq(Mux((dl == P - 1) | (h == H - 1), 0, dl + 1))]
        m.d.comb += [
            dtfifo.r_en.eq(done_head & ((dl == P - 1) | (h == H - 1))),
            scan.head.valid.eq(head_valid), scan.head.payload.eq(head_out),
            y.ready.eq(Mux(in_bc, ~bc_last | ~bc_valid | scan.bc.ready,
                           ~head_last | ~head_valid | scan.head.ready)),
        ]


class LayerChain(wiring.Component):
    """Layers in series, each a :class:`BiMambaLayer` with its own weight stream: ``u`` into
    the first, each ``o`` into the next ``u`` (``start`` on the first beat of a token that
    begins a sequence, passed along), ``o`` of the last out.

    Members
    -------
    u : as :class:`BiMambaLayer`
    mem0, mem1, ... : ``In(stream.Signature(unsigned(beat_bits)))``, one per layer
    o : as :class:`BiMambaLayer`
    """

    def __init__(self, configs: list[LayerConfig]) -> None:
        if len(configs) < 1 or any(not isinstance(c, LayerConfig) for c in configs):
            self._MustUse__silence = True
            raise TypeError("configs must be a non-empty list of LayerConfig")
        shapes = {(c.pe, c.q.cfg.d_model, c.q.fmt["res"].bits) for c in configs}
        if len(shapes) != 1:
            self._MustUse__silence = True
            raise ValueError(f"chained layers need one pe, d_model and residual width, not "
                             f"{sorted(shapes)}")
        self.configs = configs
        members = {"u": In(stream.Signature(configs[0].u_layout))}
        members.update({f"mem{i}": In(stream.Signature(unsigned(c.beat_bits)))
                        for i, c in enumerate(configs)})
        members["o"] = Out(stream.Signature(configs[-1].o_layout))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        layers = []
        for i, c in enumerate(self.configs):
            layer = BiMambaLayer(c)
            m.submodules[f"layer{i}"] = layer
            wiring.connect(m, wiring.flipped(getattr(self, f"mem{i}")), layer.mem)
            layers.append(layer)
        wiring.connect(m, wiring.flipped(self.u), layers[0].u)
        D = self.configs[0].q.cfg.d_model // self.configs[0].pe
        for a, b in zip(layers, layers[1:]):
            # The start flag rides on a token's first beat; count beats to put it back.
            n = Signal(range(max(D, 2)))
            starts = fifo.SyncFIFO(width=1, depth=4)
            m.submodules[f"starts{len(layers)}_{layers.index(b)}"] = starts
            take_in = a.u.valid & a.u.ready
            m.d.comb += [b.u.payload.v.eq(a.o.payload), b.u.valid.eq(a.o.valid),
                         a.o.ready.eq(b.u.ready)]
            # The first layer's own count of input beats tells which token starts; a small
            # FIFO carries the flag from its input to its output.
            cin = Signal(range(max(D, 2)))
            with m.If(take_in):
                m.d.sync += cin.eq(Mux(cin == D - 1, 0, cin + 1))
            m.d.comb += [starts.w_data.eq(a.u.payload.start), starts.w_en.eq(take_in & (cin == 0))]
            take_out = b.u.valid & b.u.ready
            with m.If(take_out):
                m.d.sync += n.eq(Mux(n == D - 1, 0, n + 1))
            m.d.comb += [b.u.payload.start.eq(Mux(n == 0, starts.r_data, 0)),
                         starts.r_en.eq(take_out & (n == D - 1))]
        wiring.connect(m, layers[-1].o, wiring.flipped(self.o))
        return m
