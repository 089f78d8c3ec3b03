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
* Technology scaling (``node_nm``): logic and SRAM energies scale by ``(node / table_node)``
  (capacitance linear in feature size at constant voltage: a first-order rule that ignores
  voltage scaling and wire energy); DRAM energy per bit does not scale.
* SRAM energy per access by the table's size class of the array (8 KB, 32 KB, 1 MB).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from model.checkpoint import layer_key_shapes
from model.config import BiMambaConfig
from rtl.ssm_scan import SCAN_LATENCY, scan_cycles_per_token
from rtl.xnor_projection import ProjectionConfig

from .footprint import footprint
from .tables import EnergyTable, load_table

__all__ = ["Arch", "Estimate", "estimate", "arch_from_args", "projection_burst_cycles",
           "scan_burst_cycles"]


def projection_burst_cycles(d_in: int, d_out: int, simd: int, pe: int, act_bits: int,
                            tokens: int) -> int:
    """First input to last output of ``tokens`` back-to-back tokens on the projection unit."""
    c = ProjectionConfig(d_in=d_in, d_out=d_out, simd=simd, pe=pe, act_bits=act_bits)
    return tokens * c.cycles_per_token + c.latency


def scan_burst_cycles(nheads: int, headdim: int, d_state: int, lanes: int, tokens: int) -> int:
    """First head beat to last y beat of ``tokens`` back-to-back tokens on the scan unit."""
    return tokens * scan_cycles_per_token(nheads, headdim, d_state, lanes) + SCAN_LATENCY


@dataclass(frozen=True)
class Arch:
    """The accelerator template. Every field can be overridden (``--set name=value`` or a JSON
    file).

    Raises
    ------
    ValueError
        On a non-positive size or rate, or a lane count that does not divide d_state (checked
        against the model in :func:`estimate`).
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
    node_nm: float = 45.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("table", "state_on_chip"):
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if f.type in (int, "int") and not isinstance(v, int):
                raise ValueError(f"{f.name} must be an integer, not {v!r}")
            if f.name == "dram_pj_per_bit":
                if not ok or v < 0:
                    raise ValueError(f"dram_pj_per_bit must be >= 0 (0: from the table), not {v!r}")
                continue
            if not ok or v <= 0:
                raise ValueError(f"{f.name} must be a positive number, not {v!r}")
        if not 1 <= self.act_bits <= 16:
            raise ValueError(f"act_bits must be an integer in [1, 16], not {self.act_bits}")


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

    def __init__(self, table: EnergyTable, arch: Arch) -> None:
        self.t = table
        self.logic_scale = arch.node_nm / table.node_nm
        self.dram_bit = (arch.dram_pj_per_bit * 1e-12 if arch.dram_pj_per_bit
                         else table["dram_64b_low"].joules / 64)

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


def _proj_cfg(arch: Arch, d_in: int, d_out: int) -> ProjectionConfig:
    return ProjectionConfig(d_in=d_in, d_out=d_out, simd=min(arch.simd, d_in),
                            pe=min(arch.pe, d_out), act_bits=arch.act_bits)


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
    if cfg.d_state % arch.lanes:
        raise ValueError(f"lanes must divide d_state = {cfg.d_state}, not {arch.lanes}")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    table = load_table(arch.table)
    pr = _Prices(table, arch)
    c = cfg
    D, E, C, H, P, N, F = (c.d_model, c.d_inner, c.conv_dim, c.nheads, c.headdim, c.d_state,
                           c.d_in_proj)
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
    cycles = 0.0
    weight_dram = 0.0  # bytes per layer and call
    for d_in, d_out in ((D, F), (E, D)):
        if design == "bimamba":
            pc = _proj_cfg(arch, d_in, d_out)
            B, words = arch.act_bits, pc.row_groups * pc.folds
            w_bytes = words * pc.pe * pc.simd / 8  # the unit's weight RAM, padding included
            amem = 2 * pc.folds * B * pc.simd / 8
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
            need = max(w_bytes, amem)
            if arch.weight_sram_bytes < w_bytes or arch.act_sram_bytes < amem:
                raise ValueError(
                    f"weight_sram_bytes must be >= {w_bytes:.0f} and act_sram_bytes >= "
                    f"{amem:.0f} for the {d_in}x{d_out} projection (largest {need:.0f})")
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
    # The scan reads and writes every state element of the layer once per token.
    act("sram_state", 2 * state_bytes, pr.sram(1, _size_class(state_bytes)), "sram_state_bytes")
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
    layer_params = sum(math.prod(s) for k, s in layer_key_shapes(c, 0).items()
                       if not k.endswith("proj.weight"))
    small = layer_params * 2  # FP16 constants of a layer (norms, conv, dt/A/D, FBI scales)
    if design == "bimamba":
        small += (D + E) * 2 + (F + D) * 4  # beta per column, multiplier and correction per row
    L = c.n_layer
    state_traffic = 0.0 if arch.state_on_chip else 2 * state_bytes  # fetch and write back
    est = Estimate(design, math.ceil(cycles * L),
                   (weight_dram + small + state_traffic) * L / tokens,
                   {k: v * L for k, v in e.items()}, arch.clock_hz, arch.dram_bytes_per_s)
    est.actions = {k: v * L for k, v in n.items()}
    est.energy_j["dram_weights"] = pr.dram((weight_dram + small) * L / tokens)
    if state_traffic:
        est.energy_j["dram_state"] = pr.dram(state_traffic * L / tokens)
    # An embedding row in; the final norm and the LM head once per call.
    emb_bytes = D * 2 + (fp.embedding_params + D) * 2 / tokens
    est.cycles += math.ceil(fp.embedding_params / arch.lm_head_macs / tokens)
    est.dram_bytes += emb_bytes
    est.energy_j["lm_head"] = fp.embedding_params * pr.fp16_mac() / tokens
    est.energy_j["dram_embedding"] = pr.dram(emb_bytes)
    est.actions["lm_head_fp16_macs"] = fp.embedding_params / tokens
    est.actions["dram_weight_bytes"] = (weight_dram + small) * L / tokens
    est.actions["dram_state_bytes"] = state_traffic * L / tokens
    est.actions["dram_embedding_bytes"] = emb_bytes
    return est


def _size_class(n_bytes: int) -> str:
    """The table's SRAM size class for an array of ``n_bytes``: 8KB, 32KB or 1MB."""
    return "8KB" if n_bytes <= 8 * 1024 else "32KB" if n_bytes <= 32 * 1024 else "1MB"


def arch_from_args(path: str | None, sets: list[str]) -> Arch:
    """An :class:`Arch` from defaults, an optional JSON file and ``name=value`` overrides."""
    values = {}
    if path:
        try:
            values.update(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--arch must name a readable JSON file: {e}") from None
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set takes name=value, not {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = v.strip()
    known = {f.name: f for f in fields(Arch)}
    out = {}
    for k, v in values.items():
        if k not in known:
            raise ValueError(f"architecture parameter must be one of {', '.join(known)}, not {k!r}")
        typ = type(getattr(Arch(), k))
        text = str(v).strip().lower()
        if typ is bool:
            if isinstance(v, bool):
                out[k] = v
            elif text in ("1", "true", "yes", "0", "false", "no"):
                out[k] = text in ("1", "true", "yes")
            else:
                raise ValueError(f"{k} must be true or false, not {v!r}")
            continue
        try:
            if typ is int:
                f = float(v)
                if not f.is_integer():
                    raise ValueError
                out[k] = int(f)
            else:
                out[k] = typ(v)
        except (TypeError, ValueError):
            raise ValueError(f"{k} must be a {typ.__name__}, not {v!r}") from None
    return replace(Arch(), **out)
