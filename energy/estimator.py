"""Cycle and energy estimate of one decoded token (or a prefill) of a whole Bi-Mamba model.

Structure after Accelergy: an architecture (:class:`Arch`), action counts per component
(:func:`estimate`), and a per-action energy table (``energy/tables/*.json``) that prices them.
The same template is costed twice, with 1-bit projections (the units of ``rtl/``) and with FP16
weights and multiply-adds, so every saving is a ratio of two estimates made the same way.

Cycle counts come from the RTL generators' own formulas: ``ProjectionConfig.cycles_per_token``
(and ``latency``) for in_proj and out_proj, ``scan_cycles_per_token`` for the scan; the tests
check them against cycles measured in Verilator.

Assumptions (printed with every report):

* Decode at batch 1; the layers run one after another, and within a layer in_proj, the scan,
  out_proj and the element-wise stages (norms, conv, SiLU, gate: ``other_lanes`` elements a
  cycle) do too. Memory traffic overlaps compute: time per token is the larger of the two.
* The model's weights do not fit on chip: every token, each projection's weights come from
  DRAM (1 bit per binarised weight, FP16 for everything else) into the unit's weight RAM
  through its load port, one word a cycle while the unit is idle (as the RTL requires), and
  the array reads each word once. The scan reads and writes its state RAM every token; the
  state is fetched from and written back to DRAM unless ``state_on_chip``.
* The FP16 baseline is the same template: the array has ``simd x pe`` FP16 MACs where the 1-bit
  design has ``simd x pe`` XNOR lanes taking ``act_bits`` cycles per weight (equal lane count,
  far larger FP16 area), the same weight RAM flow, and an FP16 scan.
* The LM head (tied FP16 embedding, ``vocab x d_model``) runs on an FP16 MAC unit of
  ``lm_head_macs`` per cycle in both designs.
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
* DRAM traffic is :func:`energy.roofline.bytes_per_token` (every weight, parameter and
  FBI constant once, in the form the hardware consumes; SSM and conv state read and written
  back), with the projection weights at the size of the unit's weight RAM (its padding
  included).
* Static power (``static_w`` for the 1-bit design, ``static_fp16_w`` for FP16: leakage,
  clocking and DRAM background) times the time per token is its own component, ``static``.
  The defaults, 0.5 W each, are an assumption, not a sourced figure (docs/estimator.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from model.config import BiMambaConfig
from model.quantize import QuantSpec
from rtl.ssm_scan import SCAN_LATENCY, scan_cycles_per_token
from rtl.xnor_projection import ProjectionConfig

from .footprint import footprint
from .roofline import bytes_per_token
from .tables import EnergyTable, load_table, table_for_node

__all__ = ["Arch", "Estimate", "estimate", "arch_from_args", "array_notes", "buffer_needs",
           "check_lanes", "dram_pj_per_bit", "fit_buffers", "projection_burst_cycles",
           "resolve_table", "scan_burst_cycles"]


def projection_burst_cycles(d_in: int, d_out: int, simd: int, pe: int, act_bits: int,
                            tokens: int) -> int:
    """First input to last output of ``tokens`` back-to-back tokens on the projection unit."""
    c = ProjectionConfig(d_in=d_in, d_out=d_out, simd=simd, pe=pe, act_bits=act_bits)
    return tokens * c.cycles_per_token + c.latency


def scan_burst_cycles(nheads: int, headdim: int, d_state: int, lanes: int, tokens: int) -> int:
    """First head beat to last y beat of ``tokens`` back-to-back tokens on the scan unit."""
    return tokens * scan_cycles_per_token(nheads, headdim, d_state, lanes) + SCAN_LATENCY


def _room(v: object) -> int:
    """A matrix side that cannot be the reason a lane count is refused."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else 1


# Fields whose limits belong to a generator or to the quantisation spec. Each is checked by
# building that object, so the estimator accepts exactly what the RTL and the golden model
# accept and refuses the rest in their words (ValueError naming the field, range and value).
_OWNED_LIMITS: dict[str, tuple[Callable[[object], object], ...]] = {
    "simd": (lambda v: ProjectionConfig(d_in=_room(v), d_out=1, simd=v, pe=1),),
    "pe": (lambda v: ProjectionConfig(d_in=1, d_out=_room(v), simd=1, pe=v),),
    "act_bits": (lambda v: QuantSpec(act_bits=v),
                 lambda v: ProjectionConfig(d_in=1, d_out=1, simd=1, pe=1, act_bits=v)),
    "state_bits": (lambda v: QuantSpec(state_bits=v),),
    "data_bits": (lambda v: QuantSpec(data_bits=v),),
}


@dataclass(frozen=True)
class Arch:
    """The accelerator template. Every field can be overridden (``--set name=value`` or a JSON
    file).

    Limits: ``simd`` and ``pe`` are those of :class:`~rtl.xnor_projection.ProjectionConfig`
    (a lane count wider than a matrix runs that matrix on as many lanes as it has columns or
    rows; :func:`array_notes` says so), ``act_bits``, ``state_bits`` and ``data_bits`` those of
    :class:`~model.quantize.QuantSpec` (and ``act_bits`` of ``ProjectionConfig``); ``lanes``
    must divide the model's d_state, as :class:`~rtl.ssm_scan.ScanConfig` requires (checked
    against the model in :func:`estimate`). Every other number must be positive and finite
    (``dram_pj_per_bit`` may be 0: the table's figure).

    Raises
    ------
    ValueError
        On a value out of its range or of the wrong type (a boolean where a number is meant
        included); the message names the field, the allowed range and the value.
    """

    clock_hz: float = 1.0e9
    simd: int = 64  # projection array: weight columns per cycle
    pe: int = 16  # projection array: output rows per cycle
    act_bits: int = 8  # bit-planes of the projection activations
    lanes: int = 16  # scan: state elements per cycle
    other_lanes: int = 64  # element-wise stages: elements per cycle
    lm_head_macs: int = 256  # FP16 MACs per cycle for the LM head
    state_bits: int = 16
    data_bits: int = 16
    dram_bytes_per_s: float = 102.4e9  # two DDR5-6400 channels (DDR class, like the energy)
    dram_pj_per_bit: float = 0.0  # 0: the table's DRAM figure (Horowitz: 1.3 nJ / 64 bit)
    state_on_chip: bool = False
    act_sram_bytes: int = 16 * 1024  # activation buffer (two tokens of planes) of the projection unit
    weight_sram_bytes: int = 4 * 2**20  # weight RAM of the projection unit: one matrix
    state_sram_bytes: int = 128 * 2**20  # SSM state RAM, used when state_on_chip
    table: str = "horowitz_45nm"
    node_nm: float = 0.0  # 0: the table's own node
    static_w: float = 0.5  # assumption: static power of the 1-bit design (W)
    static_fp16_w: float = 0.5  # assumption: static power of the FP16 design (W)

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
                    if not ok or v < 0:
                        raise ValueError(
                            f"node_nm must be a number >= 0 (0: the table's node), not {v!r}")
                elif f.name in ("static_w", "static_fp16_w"):
                    if not ok or v < 0:
                        raise ValueError(f"{f.name} must be a number of watts >= 0, not {v!r}")
                elif not ok or v <= 0:
                    raise ValueError(f"{f.name} must be a positive number, not {v!r}")


@dataclass
class Estimate:
    """Per-token figures of one design (``bimamba`` or ``fp16``) of one model."""

    design: str
    cycles: int
    dram_bytes: float
    energy_j: dict[str, float] = field(default_factory=dict)  # by component
    clock_hz: float = 1.0
    dram_bytes_per_s: float = 1.0
    actions: dict[str, float] = field(default_factory=dict)  # action counts per token

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


def _projections(cfg: BiMambaConfig) -> tuple[tuple[str, int, int], ...]:
    """(name, d_in, d_out) of the two binary projections of a layer."""
    return (("in_proj", cfg.d_model, cfg.d_in_proj), ("out_proj", cfg.d_inner, cfg.d_model))


def _proj_cfg(arch: Arch, d_in: int, d_out: int) -> ProjectionConfig:
    # An array wider than the matrix runs it on d_in columns / d_out rows (array_notes).
    return ProjectionConfig(d_in=d_in, d_out=d_out, simd=min(arch.simd, d_in),
                            pe=min(arch.pe, d_out), act_bits=arch.act_bits)


def _proj_buffers(pc: ProjectionConfig) -> tuple[float, float]:
    """Bytes of the unit's weight RAM (padding included) and activation RAM (two tokens of
    ``act_bits`` planes, double-buffered) for one matrix."""
    return (pc.row_groups * pc.folds * pc.pe * pc.simd / 8,
            2 * pc.folds * pc.act_bits * pc.simd / 8)


def buffer_needs(cfg: BiMambaConfig, arch: Arch) -> dict[str, int]:
    """Smallest ``weight_sram_bytes`` and ``act_sram_bytes`` that hold both projections of
    ``cfg`` on ``arch`` (the 1-bit design; :func:`estimate` refuses anything smaller)."""
    w = a = 0.0
    for _, d_in, d_out in _projections(cfg):
        pw, pa = _proj_buffers(_proj_cfg(arch, d_in, d_out))
        w, a = max(w, pw), max(a, pa)
    return {"weight_sram_bytes": math.ceil(w), "act_sram_bytes": math.ceil(a)}


def fit_buffers(cfg: BiMambaConfig, arch: Arch) -> tuple[Arch, list[str]]:
    """``arch`` with its weight and activation RAMs grown to what ``cfg`` needs, and a note per
    RAM that grew. For sweeps: a sweep point that needs larger RAMs than the base
    architecture (more bit-planes, wider arrays) is costed with RAMs of its own size."""
    grown, notes = {}, []
    for name, need in buffer_needs(cfg, arch).items():
        have = getattr(arch, name)
        if need > have:
            grown[name] = need
            notes.append(f"{name} grown from {have} to {need} to hold the matrices")
    return replace(arch, **grown), notes


def array_notes(cfg: BiMambaConfig, arch: Arch) -> list[str]:
    """What :func:`estimate` assumes when the projection array is wider than a matrix."""
    notes = []
    for name, d_in, d_out in _projections(cfg):
        if arch.simd > d_in:
            notes.append(f"simd = {arch.simd} exceeds d_in = {d_in} of {name}: it runs on "
                         f"{d_in} columns")
        if arch.pe > d_out:
            notes.append(f"pe = {arch.pe} exceeds d_out = {d_out} of {name}: it runs on "
                         f"{d_out} rows")
    return notes


def check_lanes(cfg: BiMambaConfig, lanes: int) -> None:
    """The scan unit's rule (:class:`~rtl.ssm_scan.ScanConfig`): ``lanes`` divides d_state."""
    n = cfg.d_state
    if n % lanes:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise ValueError(f"lanes must divide d_state = {n} (one of {divisors}), not {lanes!r}")


def estimate(cfg: BiMambaConfig, arch: Arch, design: str = "bimamba",
             tokens: int = 1) -> Estimate:
    """Cycles, DRAM bytes, action counts and energy by component, per token.

    ``tokens == 1`` is a decode step. ``tokens = L > 1`` is a prefill of L tokens, processed one
    after another by the same units (compute and on-chip reads scale with L) while each layer's
    weights are loaded into the weight RAM once, the state is fetched and written back once,
    and the LM head runs for the last token only; the figures are per token of the prefill.
    """
    if design not in ("bimamba", "fp16"):
        raise ValueError(f"design must be one of bimamba, fp16, not {design!r}")
    check_lanes(cfg, arch.lanes)
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    pr = _Prices(arch)
    c = cfg
    D, E, C, H, P, N = c.d_model, c.d_inner, c.conv_dim, c.nheads, c.headdim, c.d_state
    db = arch.data_bits
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
    need = bytes_per_token(c, design, arch.state_bits, arch.data_bits, arch.state_on_chip)
    cycles = 0.0
    weight_dram = 0.0  # bytes per layer and call
    for _, d_in, d_out in _projections(c):
        if design == "bimamba":
            pc = _proj_cfg(arch, d_in, d_out)
            B, words = arch.act_bits, pc.row_groups * pc.folds
            w_bytes, amem = _proj_buffers(pc)
            if arch.weight_sram_bytes < w_bytes:
                raise ValueError(
                    f"weight_sram_bytes must be >= {math.ceil(w_bytes)} to hold the {d_in}x{d_out} "
                    f"projection, not {arch.weight_sram_bytes}")
            if arch.act_sram_bytes < amem:
                raise ValueError(
                    f"act_sram_bytes must be >= {math.ceil(amem)} to hold two tokens of the "
                    f"{d_in}x{d_out} projection at act_bits = {B}, not {arch.act_sram_bytes}")
            # Weights are written through `load` while the unit is idle: one word a cycle.
            cycles += pc.cycles_per_token + words / tokens
            act("proj_xnor_popcount", words * pc.pe * pc.simd * B, pr.add(1), "binary_bit_ops")
            act("proj_accumulate", words * pc.pe * B, pr.add(pc.acc_bits),
                "popcount_accumulate_adds")
            act("proj_beta_requant", d_in * B, pr.add(pc.beta_acc_bits), "beta_adds")
            act("proj_beta_requant", d_out, pr.mult(pc.sum_bits, 16), "requant_mults")
            # Each (row group, fold) word is read once and held for the B planes (the RTL
            # enables its read ports on plane 0 only).
            act("sram_weights", w_bytes, pr.sram(1, _size_class(arch.weight_sram_bytes)),
                "sram_weight_read_bytes")
            act("sram_weights", w_bytes / tokens, pr.sram(1, _size_class(arch.weight_sram_bytes)),
                "sram_weight_write_bytes")
            act("sram_activations", words * B * pc.simd / 8 + pc.folds * B * pc.simd / 8,
                pr.sram(1, _size_class(amem)), "sram_activation_bytes")
            act("sram_activations", pc.folds * pc.simd * 2 + pc.row_groups * pc.pe * 4,
                pr.sram(1, _size_class(pc.folds * pc.simd * 2)), "sram_constant_read_bytes")
            weight_dram += w_bytes
        else:
            words = math.ceil(d_in / arch.simd) * math.ceil(d_out / arch.pe)
            w_bytes = d_in * d_out * 2
            cycles += words + words / tokens  # compute, then the same word-a-cycle load
            act("proj_fp16_mac", d_in * d_out, pr.fp16_mac(), "fp16_macs")
            act("sram_weights", w_bytes, pr.sram(1, "1MB"), "sram_weight_read_bytes")
            act("sram_weights", w_bytes / tokens, pr.sram(1, "1MB"), "sram_weight_write_bytes")
            act("sram_activations", math.ceil(d_out / arch.pe) * d_in * 2,
                pr.sram(1, _size_class(d_in * 2)), "sram_activation_bytes")
            weight_dram += w_bytes
    cycles += scan_cycles_per_token(H, P, N, arch.lanes)
    cycles += math.ceil((2 * D + C + 3 * E) / arch.other_lanes)
    # The scan reads and writes every state element of the layer once per token; the conv
    # reads its K - 1 stored inputs per channel and writes the newest one back.
    act("sram_state", 2 * state_bytes, pr.sram(1, _size_class(state_bytes)), "sram_state_bytes")
    conv_bytes = C * (c.d_conv - 1) * (db if design == "bimamba" else 16) / 8
    act("sram_state", 2 * conv_bytes, pr.sram(1, _size_class(conv_bytes)), "sram_conv_state_bytes")
    if design == "bimamba":
        act("scan", state_vals * 3, pr.mult(20, sb), "scan_mults")  # dA h, dtx B, h C
        act("scan", state_vals * 2 + H * P, pr.add(40), "scan_adds")
        act("scan", H * P * 2, pr.mult(16, db), "scan_mults")  # dt x, D x
        act("tables_dt", H * 3, pr.mult(17, 16), "table_lookups")  # softplus (2), decay
        act("other_stages", (2 * D + 2 * E) * 2 + C * c.d_conv + C + 2 * E, pr.mult(db, 16),
            "elementwise_mults")
        act("other_stages", C + E, pr.mult(db, 16), "table_lookups")  # SiLU tables
    else:
        act("scan", state_vals * 3 + H * P * 2, pr.fp16_mac(), "fp16_macs")
        act("tables_dt", H * 3, pr.fp16_mac(), "fp16_macs")
        act("other_stages", (2 * D + 2 * E) * 2 + C * c.d_conv + C + 2 * E + C + E,
            pr.fp16_mac(), "fp16_macs")
    L = c.n_layer
    # DRAM: bytes_per_token's kinds, the projection weights at the weight RAM's (padded) size.
    # Weights and parameters come once per call, the state once per call (fetched before the
    # first token, written back after the last), one embedding row per token.
    weights = weight_dram * L + need["fp16_parameters"] + need["hardware_constants"]
    state_traffic = need["ssm_state"] + need["conv_state"]
    emb_row = D * 2
    emb_bytes = emb_row + (need["embedding"] - emb_row) / tokens
    est = Estimate(design, math.ceil(cycles * L),
                   (weights + state_traffic) / tokens + emb_bytes,
                   {k: v * L for k, v in e.items()}, arch.clock_hz, arch.dram_bytes_per_s)
    est.actions = {k: v * L for k, v in n.items()}
    est.energy_j["dram_weights"] = pr.dram(weights / tokens)
    if state_traffic:
        est.energy_j["dram_state"] = pr.dram(state_traffic / tokens)
    # The final norm and the LM head once per call.
    est.cycles += math.ceil(fp.embedding_params / arch.lm_head_macs / tokens)
    est.energy_j["lm_head"] = fp.embedding_params * pr.fp16_mac() / tokens
    est.energy_j["dram_embedding"] = pr.dram(emb_bytes)
    est.actions["lm_head_fp16_macs"] = fp.embedding_params / tokens
    est.actions["dram_weight_bytes"] = weights / tokens
    est.actions["dram_state_bytes"] = state_traffic / tokens
    est.actions["dram_conv_state_bytes"] = need["conv_state"] / tokens
    est.actions["dram_embedding_bytes"] = emb_bytes
    # Static power over the time each token takes (compute and memory overlap).
    static_w = arch.static_w if design == "bimamba" else arch.static_fp16_w
    if static_w:
        est.energy_j["static"] = static_w / est.tokens_per_s
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
