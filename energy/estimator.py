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
  (capacitance linear in feature size at constant voltage: a first-order rule that ignores
  voltage scaling and wire energy); DRAM energy per bit does not scale.
* SRAM energy per access by the table's size class of the array (8 KB, 32 KB, 1 MB).
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
    act_sram_bytes: int = 8 * 1024  # activation buffer of the projection unit
    state_sram_bytes: int = 128 * 2**20  # SSM state RAM, used when state_on_chip
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


def estimate(cfg: BiMambaConfig, arch: Arch, design: str = "bimamba",
             tokens: int = 1) -> Estimate:
    """Cycles, DRAM bytes, action counts and energy by component, per token.

    ``tokens == 1`` is a decode step. ``tokens = L > 1`` is a prefill of L tokens, processed one
    after another by the same units (so compute scales with L) while the weights, the state and
    the LM head are fetched once for the whole prefill (the activations of all L tokens are
    assumed to stay on chip); the returned figures are per token of the prefill.
    """
    if design not in ("bimamba", "fp16"):
        raise ValueError(f"design must be one of bimamba, fp16, not {design!r}")
    if cfg.d_state % arch.lanes:
        raise ValueError(f"lanes must divide d_state = {cfg.d_state}, not {arch.lanes}")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    pr = _Prices(load_table(arch.table), arch)
    c = cfg
    D, E, C, H, P, N, F = (c.d_model, c.d_inner, c.conv_dim, c.nheads, c.headdim, c.d_state,
                           c.d_in_proj)
    db, sb = arch.data_bits, arch.state_bits
    state_bytes = H * P * N * (sb if design == "bimamba" else 16) / 8
    if arch.state_on_chip and state_bytes * c.n_layer > arch.state_sram_bytes:
        raise ValueError(f"state_sram_bytes must hold the state ({state_bytes * c.n_layer:.0f} "
                         f"bytes) when state_on_chip, not {arch.state_sram_bytes}")
    e: dict[str, float] = {}  # energy per layer per token, by component
    n: dict[str, float] = {}  # action counts per layer per token

    def act(component: str, count: float, unit_j: float, action: str) -> None:
        e[component] = e.get(component, 0.0) + count * unit_j
        n[action] = n.get(action, 0.0) + count

    fp = footprint(cfg)
    act_sram = _size_class(arch.act_sram_bytes)
    cycles = 0
    for d_in, d_out in ((D, F), (E, D)):
        if design == "bimamba":
            pc = _proj_cfg(arch, d_in, d_out)
            B = arch.act_bits
            cycles += pc.cycles_per_token
            act("proj_xnor_popcount", pc.folds * pc.simd * pc.row_groups * pc.pe * B,
                pr.add(1), "binary_bit_ops")
            act("proj_accumulate", pc.row_groups * pc.pe * pc.folds * B, pr.add(pc.acc_bits),
                "popcount_accumulate_adds")
            act("proj_beta_requant", d_in * B, pr.add(pc.beta_acc_bits), "beta_adds")
            act("proj_beta_requant", d_out, pr.mult(pc.sum_bits, 16), "requant_mults")
            # Activation planes re-read once per row group.
            act("sram_activations", pc.row_groups * pc.folds * B * pc.simd / 8,
                pr.sram(1, act_sram), "sram_bytes")
        else:
            cycles += math.ceil(d_in / arch.simd) * math.ceil(d_out / arch.pe)
            act("proj_fp16_mac", d_in * d_out, pr.fp16_mac(), "fp16_macs")
            act("sram_activations", math.ceil(d_out / arch.pe) * d_in * 2, pr.sram(1, act_sram),
                "sram_bytes")
    cycles += scan_cycles_per_token(H, P, N, arch.lanes)
    cycles += math.ceil((2 * D + C + 3 * E) / arch.other_lanes)
    state_vals = H * P * N
    if design == "bimamba":
        act("scan", state_vals * 3, pr.mult(20, sb), "scan_mults")  # dA h, dtx B, h C
        act("scan", state_vals * 2 + H * P, pr.add(40), "scan_adds")
        act("scan", H * P * 2, pr.mult(16, db), "scan_mults")  # dt x, D x
        act("tables_dt", H * 3, pr.mult(17, 16), "table_lookups")  # softplus (2), decay
        act("other_stages", (2 * D + 2 * E) * 2 + C * c.d_conv + C + 2 * E, pr.mult(db, 16),
            "elementwise_mults")
        act("other_stages", C + E, pr.mult(db, 16), "table_lookups")  # SiLU tables
    else:
        act("scan", state_vals * 2 + H * P, pr.fp16_mac(), "fp16_macs")
        act("tables_dt", H * 4, pr.fp16_mac(), "fp16_macs")
        act("other_stages", 2 * D + 2 * E + C * c.d_conv + C + 2 * E + D, pr.fp16_mac(),
            "fp16_macs")
    bin_weights = fp.binarised_params // c.n_layer
    weight_bytes = bin_weights / 8 if design == "bimamba" else bin_weights * 2
    small = (fp.other_params / c.n_layer) * 2  # FP16 constants per layer
    if design == "bimamba":
        small += (F + D) * 4  # per-row multiplier and correction constants
    L = c.n_layer
    state_traffic = 0.0 if arch.state_on_chip else 2 * state_bytes  # read and write back
    if arch.state_on_chip:
        act("sram_state", 2 * state_bytes, pr.sram(1, _size_class(arch.state_sram_bytes)),
            "sram_bytes")

    # Compute every token; weights, state and LM head once per call (per token in decode).
    est = Estimate(design, cycles * L, (weight_bytes + small + state_traffic) * L / tokens,
                   {k: v * L for k, v in e.items()}, arch.clock_hz, arch.dram_bytes_per_s)
    est.actions = {k: v * L for k, v in n.items()}
    est.energy_j["dram_weights"] = pr.dram((weight_bytes + small) * L / tokens)
    if state_traffic:
        est.energy_j["dram_state"] = pr.dram(state_traffic * L / tokens)
    emb_bytes = D * 2 + fp.embedding_params * 2 / tokens
    est.cycles += math.ceil(fp.embedding_params / arch.lm_head_macs / tokens)
    est.dram_bytes += emb_bytes
    est.energy_j["lm_head"] = fp.embedding_params * pr.fp16_mac() / tokens
    est.energy_j["dram_embedding"] = pr.dram(emb_bytes)
    est.actions["lm_head_fp16_macs"] = fp.embedding_params / tokens
    est.actions["dram_bytes"] = est.dram_bytes
    return est


def _size_class(n_bytes: int) -> str:
    """The table's SRAM size class for an array of ``n_bytes``: 8KB, 32KB or 1MB."""
    return "8KB" if n_bytes <= 8 * 1024 else "32KB" if n_bytes <= 32 * 1024 else "1MB"


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
