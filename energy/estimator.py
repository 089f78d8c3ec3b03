"""Cycle and energy estimate of one decoded token (or a prefill) of a whole Bi-Mamba model.

Structure after Accelergy: an architecture (:class:`Arch`), action counts per component
(:func:`estimate`), and a per-action energy table (``energy/tables/*.json``) that prices them.
The same template is costed twice, with 1-bit projections (the units of ``rtl/``) and with FP16
weights and multiply-adds, so every saving is a ratio of two estimates made the same way.

The 1-bit design is the whole-model engine of ``rtl/lm.py`` (one layer engine of
``rtl/layer.py`` serving every layer, the embedding row, the final norm and the integer LM
head): its cycles per token are the engine's own formula (:meth:`rtl.lm.LMConfig.schedule`,
which the tests check against Verilator cycle for cycle, at this estimator's default point
included), and its DRAM bytes per token are the packer's beat counts
(:meth:`~rtl.lm.LMConfig.section_beats`, the beats ``rtl/packer.py`` writes) and the state
port's words (:attr:`~rtl.lm.LMConfig.state_bytes_per_token`), so the estimate and the RTL
share one source for both.

Assumptions (printed with every report):

* Decode at batch 1; the layers run one after another on one engine. By default the engine is
  sized to the memory (``simd = pe = lanes = 0``): a beat of the smallest power of two of bytes
  at or above ``dram_bytes_per_s / clock_hz``, split into ``pe x simd`` by
  :meth:`~rtl.layer.LayerConfig.array_for`, bit-parallel planes, and the fewest scan lanes
  that reach 90 % of the memory roofline. The memory delivers a beat every ``beat bytes /
  (dram_bytes_per_s / clock_hz)`` cycles (at least 1); the formula is evaluated at that
  period, a fraction where the bandwidth is not a whole number of beats a cycle.
* The model's weights do not fit on chip: every token each layer's weights and constants
  stream from DRAM once, straight into the array (no weight RAM). The layer in flight keeps
  its conv and SSM state on chip; before each layer the engine swaps that layer's state in
  and the last one's out through its state port, on the same memory, which serves the swap
  between the layers' weight streams (:func:`memory_paces`; unless ``state_on_chip``). The
  memory's latency is taken as hidden.
* The widths the engine's beats depend on and that an export calibrates (the conv bias, dt_raw
  plus dt_bias) are taken at :meth:`rtl.layer.LayerShape.assumed`'s bounds.
* The FP16 baseline is the same template: an array of ``pe x simd`` FP16 MACs fed by the
  weight stream (FP16 weights, two bytes each), the same scan lanes and element-wise lanes,
  and every stage costed with FP16 MACs. The INT8 and INT4 baselines are that template with
  integer weights (one byte, half a byte; an FP16 scale per output row, as the head's rows
  too): each weight a k x 8-bit multiply and a 32-bit add, each row's sum scaled by an FP16
  multiply-add; the other stages and the state as in the FP16 baseline. They are estimates
  only: no RTL of them exists here.
* The LM head (the tied embedding, ``vocab x d_model``): in the 1-bit design as built, rows of
  ``head_bits`` integers streamed against the final norm's ``head_bits`` outputs, exact sums;
  in the FP16 design an FP16 MAC unit of ``lm_head_macs`` per cycle.
* Logic energy from the table's anchors: an n-bit add costs ``int8_add * n / 8`` up to 8 bits
  and interpolates linearly to ``int32_add`` at 32; an a x b-bit multiply costs
  ``int8_mult * a * b / 64`` (the 32-bit anchor agrees within 3 %); one XNOR-popcount bit-op
  costs one 1-bit add. SRAM energy per 64-bit access by array size class.
* Technology (``table``, ``node_nm``): ``node_nm = 0`` prices with the table as it is. A
  ``node_nm`` other than the table's uses the shipped table made for that node where one
  exists (``tpuv4i_7nm`` for 7); only where none exists are the named table's logic and SRAM
  energies scaled by ``node / table_node`` (capacitance linear in feature size at constant
  voltage: a first-order rule that ignores voltage scaling and wire energy, and overstates
  the gain for logic and small SRAMs), and the report labels the figures as scaled. DRAM
  energy per bit never scales.
* SRAM energy per access by the table's size class of the array (8 KB, 32 KB, 1 MB).
* DRAM traffic: the 1-bit design's is the whole-model engine's beats (padding included) and
  its state port's words; the FP16 design's is :func:`energy.roofline.bytes_per_token`'s
  kinds.
* Static power (``static_w`` for the 1-bit design, ``static_fp16_w`` for FP16: leakage,
  clocking and DRAM background) times the time per token is its own component, ``static``.
  The default of both is the leakage of the engine this module prices by default, counted
  from its netlist and priced per 45 nm cell and SRAM bit (:mod:`energy.leakage`); the FP16,
  INT8 and INT4 dies are given the same, less than their larger multipliers would leak.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

from model.config import BiMambaConfig
from model.golden.quantize import QuantSpec
from rtl.layer import LayerConfig, LayerShape
from rtl.lm import LMConfig, LMShape
from rtl.ssm_scan import scan_cycles_per_token, scan_latency
from rtl.xnor_projection import ProjectionConfig

from .asic_timing import asic_clock, mhz_below
from .footprint import footprint
from .leakage import static_w as _leakage_w
from .roofline import bytes_per_token
from .sources import DEFAULT_MEMORY, check_behaviour, load_memories
from .tables import EnergyTable, load_table, table_for_node

__all__ = ["CLOCK_HZ", "STATIC_W", "DESIGNS", "WEIGHT_BYTES", "Arch", "Estimate", "estimate",
           "arch_from_args", "layer_config", "lm_config", "memory_period", "memory_paces",
           "bytes_per_cycle", "check_lanes", "dram_pj_per_bit", "latency_cycles",
           "projection_burst_cycles", "resolve_table", "scan_burst_cycles"]

# The default memory (energy/references/dram.json): its peak, the share of it sustained, the
# latency of a row miss and the background power of its ranks, each figure with its source.
_MEMORY = load_memories()[DEFAULT_MEMORY]
# The clock: the one the engine's netlist and its SRAM macros allow at 45 nm
# (energy/asic_timing.py, bench/results/timing/asic_45nm.json), to the MHz below it.
CLOCK_HZ = mhz_below(asic_clock()["clock_hz"])
# The die's static power: the leakage of the default engine's netlist (energy/leakage.py,
# bench/results/leakage/), to the milliwatt.
STATIC_W = round(_leakage_w(), 3)
# Arch fields that take a memory's behaviour, and the dram.json figure whose limits they keep.
_BEHAVIOUR_FIELDS = {"dram_efficiency": "efficiency", "dram_latency_ns": "latency_ns",
                     "dram_background_w": "background_w"}


def projection_burst_cycles(d_in: int, d_out: int, simd: int, pe: int, act_bits: int,
                            tokens: int) -> int:
    """First input to last output of ``tokens`` back-to-back tokens on the projection unit."""
    c = ProjectionConfig(d_in=d_in, d_out=d_out, simd=simd, pe=pe, act_bits=act_bits)
    return tokens * c.cycles_per_token + c.latency


def scan_burst_cycles(nheads: int, headdim: int, d_state: int, lanes: int, tokens: int) -> int:
    """First head beat to last y beat of ``tokens`` back-to-back tokens on the scan unit."""
    return tokens * scan_cycles_per_token(nheads, headdim, d_state, lanes) + scan_latency(lanes)


def _int0(name: str, hi: int) -> Callable[[object], object]:
    """A check for a count that may be 0 (sized to the memory) or in [1, hi]."""
    def check(v: object) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
            raise ValueError(f"{name} must be an integer in [0, {hi}] (0: sized to the memory), "
                             f"not {v!r}")
    return check


# Fields whose limits belong to a generator or to the quantisation spec. Each is checked by
# building that object, so the estimator accepts exactly what the RTL and the golden model
# accept and refuses the rest in their words (ValueError naming the field, range and value);
# the array's fit to a model is checked by LayerConfig in :func:`estimate`.
_OWNED_LIMITS: dict[str, tuple[Callable[[object], object], ...]] = {
    "simd": (_int0("simd", 4096),),
    "pe": (_int0("pe", 1024),),
    "lanes": (_int0("lanes", 4096),),
    "planes": (_int0("planes", 16),),
    "beat_bytes": (_int0("beat_bytes", 1 << 16),),
    "act_bits": (lambda v: QuantSpec(act_bits=v),
                 lambda v: ProjectionConfig(d_in=1, d_out=1, simd=1, pe=1, act_bits=v)),
    "state_bits": (lambda v: QuantSpec(state_bits=v),),
    "data_bits": (lambda v: QuantSpec(data_bits=v),),
    "head_bits": (lambda v: QuantSpec(head_bits=v),),
}


# Physical ranges of the technology and memory figures (a value outside is a typo, not a
# design): feature sizes from 1 um down to the smallest announced; clocks of digital logic;
# memory systems from a serial flash to many HBM stacks.
NODE_NM = (1.0, 1000.0)
PHYSICAL = {"clock_hz": (1e6, 1e11, "Hz"), "dram_bytes_per_s": (1e6, 1e15, "bytes/s")}


@dataclass(frozen=True)
class Arch:
    """The accelerator template. Every field can be overridden (``--set name=value`` or a JSON
    file).

    ``simd``, ``pe``, ``lanes``, ``planes`` and ``beat_bytes`` are 0 by default: the layer
    engine sized to the memory (module docstring). Given, they must fit the model as
    :class:`~rtl.layer.LayerConfig` requires (checked in :func:`estimate`); ``act_bits``,
    ``state_bits`` and ``data_bits`` are limited as :class:`~model.golden.quantize.QuantSpec` limits
    them (``act_bits`` >= 2 for the engine). Every other number must be positive and finite
    (``dram_pj_per_bit`` may be 0: the table's figure).

    Raises
    ------
    ValueError
        On a value out of its range or of the wrong type (a boolean where a number is meant
        included); the message names the field, the allowed range and the value.
    """

    clock_hz: float = CLOCK_HZ  # what the 45 nm netlist allows (energy/asic_timing.py)
    simd: int = 0  # projection array columns (0: sized to the memory)
    pe: int = 0  # projection array rows and element-wise lanes (0: sized)
    lanes: int = 0  # scan: state elements per cycle (0: sized)
    planes: int = 0  # activation bit-planes a cycle (0: all of them, bit-parallel)
    beat_bytes: int = 0  # weight-stream beat when sizing (0: from the bandwidth and clock)
    act_bits: int = 8  # bit-planes of the projection activations
    lm_head_macs: int = 256  # FP16 MACs per cycle for the FP16 design's LM head
    state_bits: int = 16
    data_bits: int = 16
    head_bits: int = 8  # the 1-bit design's head weights and activations (integers)
    dram_bytes_per_s: float = _MEMORY.bytes_per_s  # peak: two DDR5-6400 channels
    dram_pj_per_bit: float = _MEMORY.pj_per_bit  # DDR5's (0: the table's DRAM figure)
    dram_efficiency: float = _MEMORY.efficiency  # share of the peak sustained (DDR5: refresh)
    dram_latency_ns: float = _MEMORY.latency_ns  # a row miss (DDR5-6400: tRP + tRCD + CL)
    dram_background_w: float = _MEMORY.background_w  # standby + refresh of the ranks (DDR5)
    state_on_chip: bool = False
    state_sram_bytes: int = 128 * 2**20  # SSM state RAM, used when state_on_chip
    table: str = "horowitz_45nm"
    node_nm: float = 0.0  # 0: the table's own node
    static_w: float = STATIC_W  # the default engine's leakage (energy/leakage.py), W
    static_fp16_w: float = STATIC_W  # the FP16, INT8, INT4 dies: the same (less than theirs)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "table":
                if not isinstance(v, str) or not v:
                    raise ValueError(f"table must be a table name or a JSON path, not {v!r}")
            elif f.name == "state_on_chip":
                if not isinstance(v, bool):
                    raise ValueError(f"state_on_chip must be true or false, not {v!r}")
            elif f.name in _OWNED_LIMITS:
                for check in _OWNED_LIMITS[f.name]:
                    check(v)
            elif f.type in (int, "int"):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{f.name} must be a positive integer, not {v!r}")
            else:
                ok = (isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v))
                if f.name == "dram_pj_per_bit":
                    if not ok or v < 0:
                        raise ValueError(
                            f"dram_pj_per_bit must be a number >= 0 (0: from the table), not {v!r}")
                elif f.name == "node_nm":
                    if not ok or not (v == 0 or NODE_NM[0] <= v <= NODE_NM[1]):
                        raise ValueError(
                            f"node_nm must be 0 (the table's node) or a node in "
                            f"[{NODE_NM[0]:g}, {NODE_NM[1]:g}] nm, not {v!r}")
                elif f.name in _BEHAVIOUR_FIELDS:
                    check_behaviour(f.name, _BEHAVIOUR_FIELDS[f.name], v)
                elif f.name in PHYSICAL:
                    lo, hi, unit = PHYSICAL[f.name]
                    if not ok or not lo <= v <= hi:
                        raise ValueError(f"{f.name} must be a number of {unit} in [{lo:g}, "
                                         f"{hi:g}], not {v!r}")
                elif f.name in ("static_w", "static_fp16_w"):
                    if not ok or v < 0:
                        raise ValueError(f"{f.name} must be a number of watts >= 0, not {v!r}")
                elif not ok or v <= 0:
                    raise ValueError(f"{f.name} must be a positive number, not {v!r}")
        if self.act_bits < 2:
            raise ValueError(f"act_bits must be in [2, 16] for the layer engine, not "
                             f"{self.act_bits}")
        if self.planes > self.act_bits:
            raise ValueError(f"planes must be in [0, act_bits = {self.act_bits}] (0: all), not "
                             f"{self.planes}")

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(act_bits=self.act_bits, state_bits=self.state_bits,
                         data_bits=self.data_bits, head_bits=self.head_bits)

    @property
    def sustained_bytes_per_s(self) -> float:
        """What the memory delivers a second: its peak times its efficiency."""
        return self.dram_bytes_per_s * self.dram_efficiency

    @property
    def bytes_per_cycle(self) -> float:
        """What the memory delivers a cycle (sustained)."""
        return self.sustained_bytes_per_s / self.clock_hz


@dataclass
class Estimate:
    """Per-token figures of one design (:data:`DESIGNS`) of one model."""

    design: str
    cycles: int
    dram_bytes: float
    energy_j: dict[str, float] = field(default_factory=dict)  # by component
    clock_hz: float = 1.0
    dram_bytes_per_s: float = 1.0
    actions: dict[str, float] = field(default_factory=dict)  # action counts per token
    layer: LayerConfig | None = None  # the engine the estimate is made for
    period: float | Fraction = 1.0  # cycles per beat of the memory
    bound_by: str = ""  # what paces the weight stream ("memory" or "compute")
    lm: LMConfig | None = None  # the whole-model engine (1-bit design)
    state_period: Fraction | None = None  # cycles an SSM word on the shared memory
    conv_period: Fraction | None = None  # cycles a conv word
    simulated: bool = False  # a machine the tests simulate (the 1-bit design's decode step)
    latency_cycles: int = 0  # the memory's latency in cycles (a row miss)

    @property
    def compute_s(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def memory_s(self) -> float:
        return self.dram_bytes / self.dram_bytes_per_s

    @property
    def tokens_per_s(self) -> float:
        return 1.0 / max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        """``memory`` when the memory, not the array, sets the pace of the weight stream."""
        if self.bound_by:
            return self.bound_by
        return "memory" if self.memory_s >= self.compute_s else "compute"

    @property
    def energy_per_token_j(self) -> float:
        return sum(self.energy_j.values())


class _Prices:
    """Energy per action in joules, from a table, with the assumptions of the module docstring."""

    ACTIONS = ("int8_add", "int32_add", "int8_mult", "fp16_mult", "fp16_add", "dram_64b_low",
               "sram_read_64b_8KB", "sram_read_64b_32KB", "sram_read_64b_1MB")

    def __init__(self, arch: Arch) -> None:
        table, self.logic_scale, _ = resolve_table(arch)
        missing = [a for a in self.ACTIONS if a not in table.entries]
        if missing:
            raise ValueError(f"table must price {', '.join(self.ACTIONS)}; {table.name!r} "
                             f"lacks {', '.join(missing)}")
        self.t = table
        self.dram_bit = dram_pj_per_bit(arch, table) * 1e-12  # J per bit

    def add(self, bits: int) -> float:
        a8, a32 = self.t["int8_add"].joules, self.t["int32_add"].joules
        e = a8 * bits / 8 if bits <= 8 else a8 + (bits - 8) * (a32 - a8) / 24
        return e * self.logic_scale

    def mult(self, a: int, b: int) -> float:
        return self.t["int8_mult"].joules * a * b / 64 * self.logic_scale

    def fp16_mac(self) -> float:
        return (self.t["fp16_mult"].joules + self.t["fp16_add"].joules) * self.logic_scale

    def sram(self, n_bytes: float, size: str) -> float:
        return n_bytes / 8 * self.t[f"sram_read_64b_{size}"].joules * self.logic_scale

    def dram(self, n_bytes: float) -> float:
        return n_bytes * 8 * self.dram_bit


def resolve_table(arch: Arch) -> tuple[EnergyTable, float, str]:
    """The table that prices ``arch``, the factor its logic and SRAM energies are scaled by,
    and a label saying which (see the module docstring: a table made for the node wins over
    linear scaling)."""
    named = load_table(arch.table)
    node = arch.node_nm
    if node == 0 or node == named.node_nm:
        return named, 1.0, f"{named.name} ({named.node_nm:g} nm)"
    at_node = table_for_node(node)
    if at_node is not None:
        return at_node, 1.0, (f"{at_node.name} ({node:g} nm: the shipped table for this node, "
                              f"used instead of scaling {named.name})")
    return named, node / named.node_nm, (
        f"{named.name} ({named.node_nm:g} nm) scaled linearly to {node:g} nm: logic and SRAM "
        f"x {node / named.node_nm:.3f} (no table at this node), DRAM unscaled")


def dram_pj_per_bit(arch: Arch, table: EnergyTable | None = None) -> float:
    """DRAM energy per bit in pJ: ``arch.dram_pj_per_bit``, or the table's 64-bit access / 64
    when that is 0."""
    if arch.dram_pj_per_bit:
        return arch.dram_pj_per_bit
    return (table or load_table(arch.table))["dram_64b_low"].joules / 64 * 1e12


# The designs costed: the 1-bit engine, and the same template with FP16, INT8 or INT4 weights.
DESIGNS = ("bimamba", "fp16", "int8", "int4")
WEIGHT_BYTES = {"fp16": 2, "int8": 1, "int4": 0.5}


def _projections(cfg: BiMambaConfig) -> tuple[tuple[str, int, int], ...]:
    """(name, d_in, d_out) of the two binary projections of a layer."""
    return (("in_proj", cfg.d_model, cfg.d_in_proj), ("out_proj", cfg.d_inner, cfg.d_model))


BEAT_BYTES_MAX = 1 << 16


def _beat_for(cfg: BiMambaConfig, bytes_per_cycle: float, shape: LayerShape | None = None,
              planes: int | None = None) -> int:
    """The smallest power of two of bytes, at least ``bytes_per_cycle``, that the model's
    shape can split into an array (:meth:`~rtl.layer.LayerConfig.array_for`) and, given its
    ``shape``, into an engine (a slower memory then delivers a beat every few cycles)."""
    beat = 1
    while beat < bytes_per_cycle:
        beat *= 2
    while beat <= BEAT_BYTES_MAX:
        try:
            pe, simd = LayerConfig.array_for(cfg, beat)
            if shape is not None:
                LayerConfig(shape, simd, pe, 1, planes)
            return beat
        except ValueError:
            beat *= 2
    raise ValueError(f"no beat of up to {BEAT_BYTES_MAX} bytes splits into an array for "
                     f"d_model = {cfg.d_model}, d_inner = {cfg.d_inner}")


PACE_LIMIT = (1 << 16) - 1  # numerators and denominators of a pace (the RTL memory model's)


def _pace(x: Fraction) -> Fraction:
    """``x`` cycles an item, at least 1; where its numerator or denominator would not fit
    the RTL memory model's 16-bit fields, the nearest fraction above ``x`` that does (the
    memory never delivers faster than its bandwidth)."""
    x = max(Fraction(1), x)
    if x.numerator <= PACE_LIMIT and x.denominator <= PACE_LIMIT:
        return x
    den = max(1, min(PACE_LIMIT, PACE_LIMIT // math.ceil(x)))
    return Fraction(math.ceil(x * den), den)


def bytes_per_cycle(arch: Arch) -> Fraction:
    """What the memory sustains a cycle (peak times efficiency), as an exact fraction of the
    decimal figures given."""
    peak = Fraction(repr(float(arch.dram_bytes_per_s)))
    return peak * Fraction(repr(float(arch.dram_efficiency))) / Fraction(repr(float(arch.clock_hz)))


def latency_cycles(arch: Arch) -> int:
    """The memory's latency (``dram_latency_ns``) in whole cycles, rounded up."""
    ns = Fraction(repr(float(arch.dram_latency_ns)))
    return math.ceil(ns * Fraction(repr(float(arch.clock_hz))) / 10**9)


def memory_period(lc: LayerConfig | LMConfig, arch: Arch) -> Fraction:
    """Cycles per weight beat the memory needs (at least 1: the engine takes one beat a
    cycle), exact (:class:`~rtl.layer.Pace`)."""
    return _pace(Fraction(lc.beat_bits, 8) / bytes_per_cycle(arch))


def memory_paces(lmc: LMConfig, arch: Arch) -> tuple[Fraction, Fraction, Fraction]:
    """The paces of one memory shared by the weight stream and the state port (the RTL
    memory model's ``shared``): cycles a weight beat, an SSM word, a conv word.

    A swap moves every word of the layer's SSM and conv state both ways (read and written
    back) while the weight stream waits; the two channels split the bandwidth so that they
    end together, ``T = max(2 (SSM bytes + conv bytes) / bytes_per_cycle, SSM words, conv
    words)`` cycles a swap (the port takes a word a cycle at most). State on chip: no swap
    (1, 1)."""
    period = memory_period(lmc, arch)
    if lmc.state != "memory":
        return period, Fraction(1), Fraction(1)
    ns, nc = lmc.state_words, lmc.conv_words
    moved = Fraction(2 * (ns * lmc.state_word_bits + nc * lmc.conv_word_bits), 8)
    t = Fraction(max(moved / bytes_per_cycle(arch), ns, nc))
    return period, _pace(t / ns), _pace(t / nc)


def layer_config(cfg: BiMambaConfig, arch: Arch) -> LayerConfig:
    """The layer engine the estimate is made for: ``arch``'s array and lanes, or (0) sized to
    the memory: the beat of :func:`_beat_for` (or ``beat_bytes``), its array, and the fewest
    scan lanes that reach 90 % of the memory roofline at the memory's period.

    Raises
    ------
    ValueError
        If only one of simd and pe is given, or the array does not fit the model (the
        message of :class:`~rtl.layer.LayerConfig`).
    """
    shape = LayerShape.assumed(cfg, arch.spec)
    planes = arch.planes or None
    if bool(arch.simd) != bool(arch.pe):
        raise ValueError(f"simd and pe must be given together (or both 0: sized to the "
                         f"memory), not simd = {arch.simd} and pe = {arch.pe}")
    if arch.simd:
        pe, simd = arch.pe, arch.simd
    else:
        given = (f"beat_bytes = {arch.beat_bytes}" if arch.beat_bytes else
                 f"dram_bytes_per_s / clock_hz = {arch.bytes_per_cycle:.6g} bytes a cycle")
        try:
            pe, simd = LayerConfig.array_for(cfg, arch.beat_bytes or _beat_for(
                cfg, arch.bytes_per_cycle, shape, planes))
            LayerConfig(shape, simd, pe, 1, planes)
        except ValueError as e:
            raise ValueError(f"{given} sizes no engine for this model ({e}); give another "
                             f"{'beat_bytes' if arch.beat_bytes else 'bandwidth or clock'}, "
                             f"or the array (simd, pe)") from None
    if arch.lanes:
        return LayerConfig(shape, simd, pe, arch.lanes, planes)
    best = None
    for lanes in (d for d in range(1, cfg.d_state + 1) if cfg.d_state % d == 0):
        if cfg.nheads * cfg.headdim * (cfg.d_state // lanes) < 2:
            continue
        best = LayerConfig(shape, simd, pe, lanes, planes)
        if best.roofline_fraction(memory_period(best, arch)) >= 0.9:
            break
    return best


def lm_config(cfg: BiMambaConfig, arch: Arch) -> LMConfig:
    """The whole-model engine (:class:`rtl.lm.LMConfig`) the estimate is made for: the layer
    engine of :func:`layer_config`, the widths ``arch`` sets (:meth:`rtl.lm.LMShape.assumed`),
    the state in memory (on chip with ``state_on_chip``)."""
    lc = layer_config(cfg, arch)
    return LMConfig(LMShape.assumed(cfg, arch.spec), lc.simd, lc.pe, lc.lanes, lc.planes,
                    state="chip" if arch.state_on_chip else "memory")


def check_lanes(cfg: BiMambaConfig, lanes: int) -> None:
    """The scan unit's rule (:class:`~rtl.ssm_scan.ScanConfig`): ``lanes`` (0: sized) divides
    d_state."""
    n = cfg.d_state
    if lanes and n % lanes:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise ValueError(f"lanes must divide d_state = {n} (one of {divisors}), not {lanes!r}")


def estimate(cfg: BiMambaConfig, arch: Arch, design: str = "bimamba",
             tokens: int = 1) -> Estimate:
    """Cycles, DRAM bytes, action counts and energy by component, per token.

    ``tokens == 1`` is a decode step. For the 1-bit design it is the whole-model engine of
    ``rtl/lm.py`` (:func:`lm_config`) behind one memory that serves its weight stream and its
    state port in turn (:func:`memory_paces`): the cycles are that engine's formula
    (:meth:`rtl.lm.LMConfig.schedule`, ``shared``, which the tests check against Verilator),
    the DRAM bytes its packer's beats and its state port's words.

    ``tokens = L > 1`` is a prefill of L tokens processed one after another by the same
    engine: every token streams every layer's weights again (the engine keeps none), while
    the state is fetched and written back once per call and the final norm and LM head run
    for the last token only; the figures are per token of the prefill. The engine has no such
    mode: this is a projection from the layer engine's formula, not a simulated machine
    (:attr:`Estimate.simulated` is False).
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {design!r}")
    check_lanes(cfg, arch.lanes)
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    pr = _Prices(arch)
    c = cfg
    D, E, C, H, P, N, K = (c.d_model, c.d_inner, c.conv_dim, c.nheads, c.headdim, c.d_state,
                           c.d_conv)
    lc = layer_config(cfg, arch)
    lat = latency_cycles(arch)
    db, rb = arch.data_bits, arch.spec.res_bits
    sb = arch.state_bits if design == "bimamba" else 16
    state_vals = H * P * N
    state_bytes = state_vals * sb / 8  # one layer
    if arch.state_on_chip and state_bytes * c.n_layer > arch.state_sram_bytes:
        raise ValueError(f"state_sram_bytes must hold the state ({state_bytes * c.n_layer:.0f} "
                         f"bytes) when state_on_chip, not {arch.state_sram_bytes}")
    e: dict[str, float] = {}  # energy per layer and token, by component
    n: dict[str, float] = {}  # action counts per layer and token

    def act(component: str, count: float, unit_j: float, action: str) -> None:
        e[component] = e.get(component, 0.0) + count * unit_j
        n[action] = n.get(action, 0.0) + count

    fp = footprint(cfg)
    need = bytes_per_token(c, design, arch.state_bits, arch.data_bits, arch.state_on_chip,
                           arch.spec)
    period = memory_period(lc, arch)
    if design == "bimamba":
        lmc = lm_config(cfg, arch)
        period, s_period, c_period = memory_paces(lmc, arch)
        layer_cycles = lc.schedule(period).token_cycles
        stream_bytes = lc.bytes_per_token  # the packer's beats, padding included
        for pc in (lc.in_proj, lc.out_proj):
            words, B = pc.row_groups * pc.folds, pc.act_bits
            act("proj_xnor_popcount", words * pc.pe * pc.simd * B, pr.add(1), "binary_bit_ops")
            act("proj_accumulate", words * pc.pe * B, pr.add(pc.acc_bits),
                "popcount_accumulate_adds")
            act("proj_beta_requant", pc.d_in, pr.mult(pc.beta_bits, B), "beta_mults")
            act("proj_beta_requant", pc.d_in, pr.add(pc.beta_sum_bits), "beta_adds")
            act("proj_beta_requant", pc.row_groups * pc.pe, pr.mult(pc.sum_bits, pc.mult_bits),
                "requant_mults")
            # The activation buffer: written once, its fold word read once per weight beat.
            amem = pc.folds * B * pc.simd / 8
            act("sram_activations", pc.d_in * B / 8 + words * B * pc.simd / 8,
                pr.sram(1, _size_class(amem)), "sram_activation_bytes")
        # The norms (rtl/layer_units.py): a square and its sum per element, then v * T and
        # u * gain; the element buffer written and read once.
        for n_el, in_bits in ((D, rb), (E, db)):
            act("norms", n_el, pr.mult(in_bits, in_bits), "elementwise_mults")
            act("norms", n_el, pr.add(2 * in_bits + n_el.bit_length()), "elementwise_adds")
            act("norms", n_el, pr.mult(in_bits, 16) + pr.mult(16, 16), "elementwise_mults")
            act("sram_buffers", 2 * n_el * in_bits / 8,
                pr.sram(1, _size_class(n_el * in_bits / 8)), "sram_buffer_bytes")
        act("conv", C * K, pr.mult(db, 16), "elementwise_mults")  # the taps
        act("conv", C * K, pr.add(db + 16 + K.bit_length()), "elementwise_adds")
        act("tables", C + E, pr.mult(db, 16), "table_lookups")  # SiLU: conv and z
        act("gate", E, pr.mult(db, db), "elementwise_mults")
        act("residual", D, pr.add(rb), "elementwise_adds")
        fifo = (D * rb + (E + C + H) * db) / 8  # u, z, xBC and dt between the stages
        act("sram_buffers", 2 * fifo, pr.sram(1, _size_class(fifo)), "sram_buffer_bytes")
        conv_state = C * (K - 1) * db / 8
        act("sram_state", 2 * conv_state, pr.sram(1, _size_class(conv_state)),
            "sram_conv_state_bytes")
        act("sram_state", 2 * state_bytes, pr.sram(1, _size_class(state_bytes)),
            "sram_state_bytes")
        act("scan", state_vals * 3, pr.mult(20, sb), "scan_mults")  # dA h, dtx B, h C
        act("scan", state_vals * 2 + H * P, pr.add(40), "scan_adds")
        act("scan", H * P * 2, pr.mult(16, db), "scan_mults")  # dt x, D x
        act("tables_dt", H * 3, pr.mult(17, 16), "table_lookups")  # softplus (2), decay
    else:
        # The same array of pe x simd MACs, fed by the stream of weights: FP16 MACs on FP16
        # weights, or integer MACs (k-bit weights x 8-bit activations, 32-bit sums, an FP16
        # scale a row) on INT8 / INT4 weights; the other stages FP16 on the engine's lanes.
        bpc = arch.bytes_per_cycle
        wb = WEIGHT_BYTES[design]
        mac = pr.fp16_mac() if design == "fp16" else pr.mult(int(8 * wb), 8) + pr.add(32)
        layer_cycles = 0.0
        for _, d_in, d_out in _projections(c):
            words = math.ceil(d_in / lc.simd) * math.ceil(d_out / lc.pe)
            layer_cycles += max(words, wb * d_in * d_out / bpc)
            act(f"proj_{design}_mac", d_in * d_out, mac, f"{design}_macs")
            if design != "fp16":
                act("proj_dequant", d_out, pr.fp16_mac(), "fp16_macs")
            act("sram_activations", math.ceil(d_out / lc.pe) * d_in * 2,
                pr.sram(1, _size_class(d_in * 2)), "sram_activation_bytes")
        layer_cycles += scan_cycles_per_token(H, P, N, lc.lanes) + (3 * D + 3 * E + C) / lc.pe
        stream_bytes = (need["projection_weights"] + need["fp16_parameters"]
                        + need["hardware_constants"]) / c.n_layer
        conv_state = C * (K - 1) * 2
        act("sram_state", 2 * conv_state, pr.sram(1, _size_class(conv_state)),
            "sram_conv_state_bytes")
        act("sram_state", 2 * state_bytes, pr.sram(1, _size_class(state_bytes)),
            "sram_state_bytes")
        act("scan", state_vals * 3 + H * P * 2, pr.fp16_mac(), "fp16_macs")
        act("tables_dt", H * 3, pr.fp16_mac(), "fp16_macs")
        act("other_stages", (2 * D + 2 * E) * 2 + C * K + C + 2 * E + C + E, pr.fp16_mac(),
            "fp16_macs")
    L = c.n_layer
    if design == "bimamba":
        # The whole-model engine: the embedding row, the layers, the final norm's gains and
        # the head rows on the weight stream (the packer's beats); every layer's state
        # through the port, swapped before the layer (state in memory); the final norm and
        # the integer head (head_bits weights and activations, exact sums).
        bb = Fraction(lmc.beat_bits, 8)
        beats = lmc.section_beats()
        head_bytes = (beats["norm_f"] + beats["head"]) * bb / tokens
        emb_bytes = float(beats["embedding"] * bb + head_bytes)
        state_traffic = lmc.state_bytes_per_token / tokens
        if tokens == 1:
            # Greedy decode: a token is offered once the last one's logits are out (the next
            # row depends on them), so the step runs from the token's handshake to the cycle
            # after its last logit, its row's latency exposed; tokens offered back to back
            # (``token_cycles``) would hide it. On the shared memory this is the formula's
            # first token after reset (a later token's first swap also waits for its
            # embedding row), which the co-simulations measure.
            cycles = lmc.schedule(period, lat, s_period, lat, c_period,
                                  shared=True).last_logit + 1
        else:  # the projection of the docstring
            cycles = math.ceil(L * layer_cycles + (beats["embedding"] * period) + (
                (beats["norm_f"] + beats["head"]) * period + lat
                + lmc.state_bytes_per_token / bytes_per_cycle(arch)) / tokens)
        est = Estimate(design, int(cycles), L * stream_bytes + state_traffic + emb_bytes,
                       {k: v * L for k, v in e.items()}, arch.clock_hz,
                       arch.sustained_bytes_per_s)
        est.actions = {k: v * L for k, v in n.items()}
        hb, rb, V = arch.head_bits, arch.spec.res_bits, c.vocab_size
        norm_f = D * (pr.mult(rb, rb) + pr.add(2 * rb + D.bit_length()) + pr.mult(rb, 16)
                      + pr.mult(16, 16))
        head = V * D * (pr.mult(hb, hb) + pr.add(lmc.logit_bits))
        est.energy_j["lm_head"] = (norm_f + head) / tokens
        est.actions["lm_head_int_macs"] = V * D / tokens
        est.simulated = tokens == 1
    else:
        # DRAM: the stream every token; the state fetched before the call's first token and
        # written back after its last, after each layer's stream on the same memory; one
        # embedding row per token and the LM head once per call.
        state_traffic = (need["ssm_state"] + need["conv_state"]) / tokens
        emb_row = D * 2
        emb_bytes = emb_row + (need["embedding"] - emb_row) / tokens
        # One after another on the one memory: each layer's stream, the state moved between
        # layers, then the LM head, as fast as its MACs or its embedding read allow.
        cycles = L * layer_cycles + state_traffic / arch.bytes_per_cycle
        cycles += max(fp.embedding_params / arch.lm_head_macs / tokens,
                      emb_bytes / arch.bytes_per_cycle)
        cycles += lat / tokens  # the token's embedding row, requested once the token is known
        est = Estimate(design, math.ceil(cycles), L * stream_bytes + state_traffic + emb_bytes,
                       {k: v * L for k, v in e.items()}, arch.clock_hz,
                       arch.sustained_bytes_per_s)
        est.actions = {k: v * L for k, v in n.items()}
        est.energy_j["lm_head"] = fp.embedding_params * (mac + (
            pr.fp16_mac() / D if design != "fp16" else 0)) / tokens
        est.actions[f"lm_head_{design}_macs"] = fp.embedding_params / tokens
    est.energy_j["dram_weights"] = pr.dram(L * stream_bytes)
    if state_traffic:
        est.energy_j["dram_state"] = pr.dram(state_traffic)
    est.energy_j["dram_embedding"] = pr.dram(emb_bytes)
    est.actions["dram_weight_bytes"] = L * stream_bytes
    est.actions["dram_state_bytes"] = state_traffic
    if design == "bimamba":
        conv_moved = 2 * L * lmc.conv_words * lmc.conv_word_bits / 8 if lmc.state == "memory" else 0
    else:
        conv_moved = need["conv_state"]
    est.actions["dram_conv_state_bytes"] = conv_moved / tokens
    est.actions["dram_embedding_bytes"] = emb_bytes
    est.layer, est.period, est.latency_cycles = lc, period, lat
    if design == "bimamba":
        est.lm, est.state_period, est.conv_period = lmc, s_period, c_period
        # The memory sets the pace when it needs at least as long per beat as the array
        # holds one (cycles_per_weight: act_bits / planes).
        est.bound_by = ("memory" if lc.beat_bytes / arch.bytes_per_cycle
                        >= lc.in_proj.cycles_per_weight else "compute")
    else:
        w = sum(d_in * d_out for _, d_in, d_out in _projections(c))
        words = sum(math.ceil(d_in / lc.simd) * math.ceil(d_out / lc.pe)
                    for _, d_in, d_out in _projections(c))
        est.bound_by = "memory" if wb * w / arch.bytes_per_cycle >= words else "compute"
    # Static power over the time each token takes: the die's, and the memory's background
    # (standby and refresh of its ranks, whatever it moves).
    static_w = arch.static_w if design == "bimamba" else arch.static_fp16_w
    if static_w:
        est.energy_j["static"] = static_w / est.tokens_per_s
    if arch.dram_background_w:
        est.energy_j["dram_background"] = arch.dram_background_w / est.tokens_per_s
    return est


def _size_class(n_bytes: int) -> str:
    """The table's SRAM size class for an array of ``n_bytes``: 8KB, 32KB or 1MB."""
    return "8KB" if n_bytes <= 8 * 1024 else "32KB" if n_bytes <= 32 * 1024 else "1MB"


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


def _from_text(kind: str, text: str) -> object:
    """A ``--set`` value in the field's type where the text spells one; otherwise the text,
    which :class:`Arch` then refuses with the field's range."""
    t = text.strip()
    if kind == "str":
        return t
    if kind == "bool":
        low = t.lower()
        return low in ("1", "true", "yes") if low in ("1", "true", "yes", "0", "false", "no") else t
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _to_field(kind: str, v: object) -> object:
    """Integral numbers to ``int`` for integer fields, numbers to ``float`` for float fields;
    anything else (booleans included) is passed on for :class:`Arch` to judge."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    if kind == "int" and isinstance(v, float) and v.is_integer():
        return int(v)
    if kind == "float":
        return float(v)
    return v


def arch_from_args(path: str | None, sets: list[str]) -> Arch:
    """An :class:`Arch` from defaults, an optional JSON file and ``name=value`` overrides.

    The file must hold one JSON object; its values keep their JSON types (``true`` is not a
    number). ``--set`` values are text, read as the field's type; ``--set`` wins over the file,
    and a parameter may be set once. Everything is then checked by :class:`Arch`.

    Raises
    ------
    ValueError
        With a one-line message naming the parameter, the allowed values and the value given.
    """
    kinds = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(Arch)}
    values: dict[str, object] = {}
    if path:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"--arch must name a readable JSON file: {e}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"--arch must hold a JSON object of architecture parameters, not "
                             f"{_JSON_KINDS.get(type(doc), type(doc).__name__)}")
        values.update(doc)
    seen: set[str] = set()
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set takes name=value, not {item!r}")
        k, v = (part.strip() for part in item.split("=", 1))
        if k in seen:
            raise ValueError(f"--set must name each parameter once, not {k} twice")
        seen.add(k)
        values[k] = _from_text(kinds[k], v) if k in kinds else v
    out = {}
    for k, v in values.items():
        if k not in kinds:
            raise ValueError(f"architecture parameter must be one of {', '.join(kinds)}, not {k!r}")
        out[k] = _to_field(kinds[k], v)
    return replace(Arch(), **out)
