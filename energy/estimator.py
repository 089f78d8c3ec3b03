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
* Weights do not fit on chip and stream from DRAM every token (1 bit per binarised weight,
  FP16 for everything else). The SSM state stays in DRAM too unless ``state_on_chip``.
* The LM head (tied FP16 embedding, ``vocab x d_model``) runs on an FP16 MAC unit of
  ``lm_head_macs`` per cycle in both designs.
* Logic energy from the table's anchors: an n-bit add costs ``int8_add * n / 8`` up to 8 bits
  and interpolates linearly to ``int32_add`` at 32; an a x b-bit multiply costs
  ``int8_mult * a * b / 64`` (the 32-bit anchor agrees within 3 %); one XNOR-popcount bit-op
  costs one 1-bit add. SRAM energy per 64-bit access by array size class.
* Technology scaling (``node_nm``): logic and SRAM energies scale by ``(node / table_node)``
  (a C V^2 rule at constant voltage, which overstates modern savings); DRAM does not scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

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
    dram_bytes_per_s: float = 819.2e9  # one HBM2E stack
    dram_pj_per_bit: float = 1300.0 / 64  # Horowitz 64-bit DRAM access, low end
    state_on_chip: bool = False
    table: str = "horowitz_45nm"
    node_nm: float = 45.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("table", "state_on_chip"):
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
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
        self.dram_bit = arch.dram_pj_per_bit * 1e-12

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


def estimate(cfg: BiMambaConfig, arch: Arch, design: str = "bimamba") -> Estimate:
    """Cycles, DRAM bytes and energy by component of one decoded token of the whole model."""
    if design not in ("bimamba", "fp16"):
        raise ValueError(f"design must be one of bimamba, fp16, not {design!r}")
    if cfg.d_state % arch.lanes:
        raise ValueError(f"lanes must divide d_state = {cfg.d_state}, not {arch.lanes}")
    pr = _Prices(load_table(arch.table), arch)
    c = cfg
    D, E, C, H, P, N, F = (c.d_model, c.d_inner, c.conv_dim, c.nheads, c.headdim, c.d_state,
                           c.d_in_proj)
    db, sb = arch.data_bits, arch.state_bits
    e: dict[str, float] = {}
    fp = footprint(cfg)
    bin_weights = fp.binarised_params // c.n_layer  # per layer

    cycles = 0
    for d_in, d_out in ((D, F), (E, D)):
        if design == "bimamba":
            pc = _proj_cfg(arch, d_in, d_out)
            cycles += pc.cycles_per_token
            B = arch.act_bits
            e["proj_xnor_popcount"] = e.get("proj_xnor_popcount", 0) + (
                pr.add(1) * pc.folds * pc.simd * pc.row_groups * pc.pe * B)
            e["proj_accumulate"] = e.get("proj_accumulate", 0) + (
                pr.add(pc.acc_bits) * pc.row_groups * pc.pe * pc.folds * B)
            e["proj_beta_requant"] = e.get("proj_beta_requant", 0) + (
                pr.add(pc.beta_acc_bits) * d_in * B + pr.mult(pc.sum_bits, 16) * d_out)
            # Activation planes re-read once per row group from an 8 KB buffer.
            e["sram_activations"] = e.get("sram_activations", 0) + pr.sram(
                pc.row_groups * pc.folds * B * pc.simd / 8, "8KB")
        else:
            cycles += math.ceil(d_in / arch.simd) * math.ceil(d_out / arch.pe)
            e["proj_fp16_mac"] = e.get("proj_fp16_mac", 0) + pr.fp16_mac() * d_in * d_out
            e["sram_activations"] = e.get("sram_activations", 0) + pr.sram(
                math.ceil(d_out / arch.pe) * d_in * 2, "8KB")
    cycles += scan_cycles_per_token(H, P, N, arch.lanes)
    cycles += math.ceil((2 * D + C + 3 * E) / arch.other_lanes)
    state_vals = H * P * N
    if design == "bimamba":
        e["scan"] = state_vals * (pr.mult(16, sb) + pr.mult(24, db) + pr.add(40)
                                  + pr.mult(sb, db) + pr.add(40)) + H * P * pr.mult(16, db) * 2
        e["tables_dt"] = H * (3 * pr.mult(17, 16) + 6 * pr.add(32))
        e["other_stages"] = (2 * D + 2 * E) * pr.mult(24, 16) + C * c.d_conv * pr.mult(db, 16) + (
            C + E) * pr.mult(db, 16) + E * pr.mult(db, db) + D * pr.add(24)
    else:
        e["scan"] = state_vals * 2 * pr.fp16_mac() + H * P * pr.fp16_mac()
        e["tables_dt"] = H * 4 * pr.fp16_mac()
        e["other_stages"] = (2 * D + 2 * E + C * c.d_conv + C + 2 * E + D) * pr.fp16_mac()
    state_bytes = state_vals * (sb if design == "bimamba" else 16) / 8
    weight_bytes = (bin_weights / 8 if design == "bimamba" else bin_weights * 2)
    small = (fp.other_params / c.n_layer) * 2  # FP16 constants per layer
    if design == "bimamba":
        small += (F + D) * 4  # per-row multiplier and correction constants
    L = c.n_layer
    state_traffic = 0.0 if arch.state_on_chip else 2 * state_bytes  # read and write back
    if arch.state_on_chip:
        e["sram_state"] = pr.sram(2 * state_bytes, "1MB")
    est = Estimate(design, cycles * L, (weight_bytes + small + state_traffic) * L,
                   {k: v * L for k, v in e.items()}, arch.clock_hz, arch.dram_bytes_per_s)
    est.energy_j["dram_weights"] = pr.dram((weight_bytes + small) * L)
    if state_traffic:
        est.energy_j["dram_state"] = pr.dram(state_traffic * L)
    # Model level: one embedding row in, the tied LM head out (FP16 in both designs).
    emb_bytes = fp.embedding_params * 2 + D * 2
    est.cycles += math.ceil(fp.embedding_params / arch.lm_head_macs)
    est.dram_bytes += emb_bytes
    est.energy_j["lm_head"] = fp.embedding_params * pr.fp16_mac()
    est.energy_j["dram_embedding"] = pr.dram(emb_bytes)
    return est


def arch_from_args(path: str | None, sets: list[str]) -> Arch:
    """An :class:`Arch` from defaults, an optional JSON file and ``name=value`` overrides."""
    values = {}
    if path:
        values.update(json.loads(Path(path).read_text()))
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
        if typ is bool:
            out[k] = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
        else:
            try:
                out[k] = typ(v) if typ is not int else int(float(v))
            except (TypeError, ValueError):
                raise ValueError(f"{k} must be a {typ.__name__}, not {v!r}") from None
    return replace(Arch(), **out)
