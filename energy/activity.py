"""Logic energy from switching activity: the shipped model's engine in simulation, priced per
toggle, beside the estimator's action counts.

``python -m energy.activity`` decodes bytes of the test split with the shipped Shakespeare
student on the whole-model engine (:mod:`rtl.lm`) in Verilator, traces every signal into a SAIF
file (:mod:`cosim.activity`), checks the logits bit for bit against the golden model and
writes the counts of every module instance to a record (``bench/results/activity/``). The
record is priced here, from it alone:

* the clock: every register bit each cycle (``clock_ungated``: no clock gating), or only in
  the cycles a word-level clock gate could not skip (``clock_gated``: its width times the
  toggles of its busiest bit, a lower bound), at the energy of a DFF_X1 clock pin;
* each register bit's toggle (the capture on top of the clock, its output, its load), each
  named logic net's toggle (a NAND2_X1's output and its load), from
  ``energy/references/toggle_nangate45.json``;
* each bit a memory reads or writes, at the estimator's SRAM figure for the memory's size
  (``energy/tables``, the same table :func:`energy.estimator.estimate` prices SRAM with).

Units are grouped as the estimator's components are (:data:`GROUPS`), so each group's figure
stands beside the action count's. What the SAIF cannot see (glitches, an operator's internal
nodes, the clock tree) is listed in the record's pricing and in ``docs/estimator.md``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .estimator import Arch, _size_class, estimate
from .sources import REFERENCE_DIR
from .tables import load_table

__all__ = ["TOGGLE_TABLE", "RECORD", "GROUPS", "ToggleTable", "load_toggle_table", "group_of",
           "price", "action_groups", "compare", "summary", "measure", "main"]

TOGGLE_TABLE = REFERENCE_DIR / "toggle_nangate45.json"
ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "bench" / "results" / "activity" / "shakespeare_lm.json"

# The engine's units by instance path under the bench's top (first match wins), and the
# estimator's components that price the same work. The harness (the memory model and its
# FIFOs: the bench's own instances) is not the engine and is left out.
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "projections": (("lm/layer/in_proj", "lm/layer/out_proj"),
                    ("proj_xnor_popcount", "proj_accumulate", "proj_beta_requant",
                     "sram_activations")),
    "norms": (("lm/layer/norm_in", "lm/layer/norm_out"), ("norms",)),
    "conv and gate": (("lm/layer/conv", "lm/layer/gate"), ("conv", "gate", "tables")),
    "scan": (("lm/layer/scan",), ("scan", "tables_dt", "sram_state")),
    "buffers": (("lm/layer/ufifo", "lm/layer/xfifo", "lm/layer/zfifo", "lm/layer/dtfifo",
                 "lm/layer/start_conv", "lm/layer/start_scan"), ("sram_buffers",)),
    "head": (("lm/head", "lm/norm_f"), ("lm_head",)),
    "control and residual": (("lm/layer", "lm/starts", "lm"), ("residual",)),
}
PARTS = ("clock_ungated", "clock_gated", "registers", "nets", "memories")


@dataclass(frozen=True)
class ToggleTable:
    """The per-event energies (J) of :data:`TOGGLE_TABLE`, derived from its library figures."""

    name: str
    clock: float  # a register bit's clock pin, one cycle
    register_toggle: float  # a register bit's output toggle: capture, output, load
    net_toggle: float  # a logic net's toggle: a gate's output and its load
    load: float  # the load of a net, one transition (C V^2 / 2)


def load_toggle_table(path: Path | str = TOGGLE_TABLE) -> ToggleTable:
    """Read and derive the per-event energies.

    Raises
    ------
    ValueError
        If the file lacks an entry, an entry its value or unit, or the table its source.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} must be a readable JSON file: {e}") from None
    for k in ("name", "source", "entries"):
        if not doc.get(k):
            raise ValueError(f"{path} must have a {k!r}")
    units = {"vdd": "V", "dff_ck_idle_internal": "fJ", "dff_ck_capture_internal": "fJ",
             "dff_ck_cap": "fF", "dff_q_internal": "fJ", "nand2_internal": "fJ",
             "gate_input_cap": "fF", "wire_cap_fanout2": "fF", "fanout": "loads"}
    v = {}
    for k, unit in units.items():
        e = doc["entries"].get(k)
        if not isinstance(e, dict) or e.get("unit") != unit:
            raise ValueError(f"{path}: entry {k!r} must be an object with unit {unit!r}")
        x = e.get("value")
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
                or x <= 0:
            raise ValueError(f"{path}: entry {k!r} must have a positive value, not {x!r}")
        if not (e.get("quote") or e.get("derivation")):
            raise ValueError(f"{path}: entry {k!r} must say where it comes from (quote or "
                             f"derivation)")
        v[k] = float(x)
    fj = 1e-15
    vdd2 = v["vdd"] ** 2
    load = (v["fanout"] * v["gate_input_cap"] + v["wire_cap_fanout2"]) * vdd2 / 2 * fj
    return ToggleTable(
        name=doc["name"],
        clock=(v["dff_ck_idle_internal"] + v["dff_ck_cap"] * vdd2) * fj,
        register_toggle=(v["dff_q_internal"] + v["dff_ck_capture_internal"]
                         - v["dff_ck_idle_internal"]) * fj + load,
        net_toggle=v["nand2_internal"] * fj + load,
        load=load)


def group_of(path: str) -> str | None:
    """The :data:`GROUPS` name of an instance path relative to the bench's top (``lm/layer/
    scan/xfifo``), None for the harness."""
    for g, (prefixes, _) in GROUPS.items():
        for p in prefixes:
            if path == p or (path.startswith(p + "/") and p != "lm" and p != "lm/layer"):
                return g
    return None


def price(record: dict, table: ToggleTable | None = None,
          sram_table: str = "horowitz_45nm") -> dict[str, dict[str, float]]:
    """Joules a token by group and part (:data:`PARTS`) of the counts in ``record``, plus a
    ``"total"`` group."""
    table = table or load_toggle_table()
    sram = load_table(sram_table)
    T, cycles = record["tokens"], record["cycles"]
    out = {g: dict.fromkeys(PARTS, 0.0) for g in GROUPS}
    for a in record["instances"]:
        g = group_of(a["path"])
        if g is None:
            if a["path"] == "lm" or a["path"].startswith("lm/"):
                raise ValueError(f"instance {a['path']} of the engine is in no group of GROUPS "
                                 f"({', '.join(GROUPS)}): add it to one")
            continue
        p = out[g]
        p["clock_ungated"] += a["ff_bits"] * cycles * table.clock / T
        p["clock_gated"] += a["ff_gated_clocks"] * table.clock / T
        p["registers"] += a["ff_toggles"] * table.register_toggle / T
        p["nets"] += a["comb_toggles"] * table.net_toggle / T
        for w, depth, read, written in a["memories"].values():
            per_bit = sram[f"sram_read_64b_{_size_class(w * depth / 8)}"].joules / 64
            p["memories"] += (read + written) * per_bit / T
    out["total"] = {k: sum(out[g][k] for g in GROUPS) for k in PARTS}
    return out


def action_groups(energy_j: dict[str, float]) -> dict[str, float]:
    """The estimator's energy a token (``Estimate.energy_j``) summed by :data:`GROUPS`, plus
    ``"total"`` (the logic and on-chip memory: every component that is not DRAM or static)."""
    out = {g: sum(energy_j.get(c, 0.0) for c in comps) for g, (_, comps) in GROUPS.items()}
    out["total"] = sum(out.values())
    return out


def record_arch(record: dict) -> Arch:
    """The estimator's architecture of the recorded engine: its array, lanes, planes and
    where its state is."""
    e = record["engine"]
    return Arch(simd=e["simd"], pe=e["pe"], lanes=e["lanes"], planes=e["planes"] or 0,
                state_on_chip=e["state"] == "chip")


def compare(record: dict, table: ToggleTable | None = None) -> dict:
    """Per group: the activity-priced parts and the action count's energy a token; plus the
    DRAM and static energy of the estimate for the same model and engine, for scale."""
    from model.config import BiMambaConfig

    cfg = BiMambaConfig(**record["model_config"])
    est = estimate(cfg, record_arch(record))
    act = price(record, table)
    counted = action_groups(est.energy_j)
    rows = {g: {**act[g], "action_count": counted[g]} for g in (*GROUPS, "total")}
    rest = {k: v for k, v in est.energy_j.items() if k.startswith("dram") or k == "static"}
    return {"groups": rows, "estimate_dram_and_static_j": rest,
            "estimate_total_j": est.energy_per_token_j}


def summary(record: dict | None = None, table: ToggleTable | None = None) -> dict:
    """The record's totals a token beside the action count (for the report): the activity
    priced with an ideal word-level clock gate and with none, the action count, their ratios,
    and the share of the whole token's energy each would be beside the estimate's DRAM and
    static energy."""
    source = None
    if record is None:
        record, source = json.loads(RECORD.read_text()), str(RECORD.relative_to(ROOT))
    c = compare(record, table)
    t = c["groups"]["total"]
    rest = sum(c["estimate_dram_and_static_j"].values())
    gated = t["clock_gated"] + t["registers"] + t["nets"] + t["memories"]
    ungated = gated - t["clock_gated"] + t["clock_ungated"]
    e = record["engine"]
    return {"record": source,
            "model": record["model"], "tokens": record["tokens"],
            "engine": f"S{e['simd']} P{e['pe']}, lanes {e['lanes']}, state {e['state']}",
            "activity_j": gated, "activity_ungated_clock_j": ungated,
            "action_count_j": t["action_count"],
            "ratio": gated / t["action_count"], "ratio_ungated_clock": ungated / t["action_count"],
            "dram_and_static_j": rest,
            "logic_share": gated / (gated + rest),
            "logic_share_ungated_clock": ungated / (ungated + rest),
            "action_count_share": t["action_count"] / (t["action_count"] + rest)}


def measure(tokens: int, bytes_per_cycle: int, seed: int = 0) -> dict:
    """Decode the first ``tokens`` bytes of the test split with the shipped student on the
    engine sized for ``bytes_per_cycle`` (:func:`cosim.run.shipped_lm_case`), in a SAIF build;
    return the record (module docstring).

    Raises
    ------
    RuntimeError
        If a logit differs from the golden model's: activity of a wrong machine is no figure.
    """
    import dataclasses
    import datetime
    from importlib.metadata import version

    from cosim.activity import module_activity, parse_saif, parse_verilog
    from cosim.lm import run_lm_case
    from cosim.run import shipped_lm_case
    from sim.harness import PERIOD_NS

    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be an integer >= 1, not {tokens!r}")
    case = shipped_lm_case(tokens, bytes_per_cycle, seed)
    tokens = len(case.tokens)  # the split may be shorter
    res = run_lm_case(case, saif=True)
    if res["mismatches"] or res["row_mismatches"]:
        raise RuntimeError(f"the SAIF build is not bit-exact: {res['mismatches']} logits "
                           f"differ ({res.get('first_mismatch')}), {res['row_mismatches']} "
                           f"embedding rows asked wrongly")
    duration, unit, nets = parse_saif(res["saif"])
    period = PERIOD_NS * 1000 // unit
    mods = parse_verilog(Path(res["verilog"]).read_text())
    top = "bimamba_lm_bench"
    inst = module_activity(mods, nets, period, duration // period, top)
    lmc = case.config
    return {
        "what": "switching activity of the whole-model engine decoding the shipped student",
        "command": f"python -m energy.activity --measure --tokens {tokens} "
                   f"--bytes-per-cycle {bytes_per_cycle} --seed {seed}",
        "date": datetime.date.today().isoformat(),
        "versions": {"verilator": version("verilator"), "cocotb": version("cocotb")},
        "model": "checkpoints/shakespeare (student)",
        "model_config": dataclasses.asdict(lmc.cfg),
        "engine": {"simd": lmc.simd, "pe": lmc.pe, "lanes": lmc.lanes, "planes": lmc.planes,
                   "state": lmc.state, "beat_bits": lmc.beat_bits,
                   "bytes_per_cycle": bytes_per_cycle},
        "tokens": tokens,
        "text": bytes(int(t) for t in case.tokens).decode("latin-1"),
        "cycles": duration // period,
        "cycles_per_token": res["predicted_spacing"],
        "bit_exact": True,
        "instances": [
            {"path": a.path.split("/", 1)[1] if "/" in a.path else "", "ff_bits": a.ff_bits,
             "ff_toggles": a.ff_toggles, "ff_gated_clocks": a.ff_gated_clocks,
             "comb_bits": a.comb_bits, "comb_toggles": a.comb_toggles,
             "memories": a.memories, "untraced_bits": a.untraced_bits}
            for a in inst],
    }


def _fmt_uj(j: float) -> str:
    return f"{j * 1e6:,.2f}"


def markdown(record: dict, table: ToggleTable | None = None) -> str:
    c = compare(record, table)
    e = record["engine"]
    lines = [
        f"Switching activity of the shipped student on the whole-model engine "
        f"(S{e['simd']} P{e['pe']}, lanes {e['lanes']}, state {e['state']}), "
        f"{record['tokens']} bytes of test text, {record['cycles']:,} cycles, bit-exact; "
        f"priced with {load_toggle_table().name if table is None else table.name} "
        f"(µJ a token):",
        "",
        "| unit | clock, ungated | clock, gated (min) | registers | nets | memories "
        "| activity (gated) | action count |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g, r in c["groups"].items():
        act = r["clock_gated"] + r["registers"] + r["nets"] + r["memories"]
        lines.append(f"| {g} | {_fmt_uj(r['clock_ungated'])} | {_fmt_uj(r['clock_gated'])} | "
                     f"{_fmt_uj(r['registers'])} | {_fmt_uj(r['nets'])} | "
                     f"{_fmt_uj(r['memories'])} | {_fmt_uj(act)} | "
                     f"{_fmt_uj(r['action_count'])} |")
    dram = sum(c["estimate_dram_and_static_j"].values())
    lines += ["", f"The estimate's DRAM and static energy for the same engine: "
              f"{_fmt_uj(dram)} µJ a token (of {_fmt_uj(c['estimate_total_j'])})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import SEED_MAX, CliParser, int_in

    ap = CliParser(prog="python -m energy.activity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true",
                    help="simulate and write the record (else price the record there is)")
    ap.add_argument("--tokens", type=int_in(1, 1 << 20), default=8,
                    help="bytes of test text (default 8)")
    ap.add_argument("--bytes-per-cycle", type=int_in(1, 1 << 16), default=64,
                    help="the weight stream the engine is sized for (default 64)")
    ap.add_argument("--seed", type=int_in(0, SEED_MAX), default=0)
    ap.add_argument("--record", type=Path, default=RECORD, help=f"default {RECORD}")
    ap.add_argument("--format", choices=("md", "json"), default="md")
    args = ap.parse_args(argv)
    if args.measure:
        rec = measure(args.tokens, args.bytes_per_cycle, args.seed)
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(rec, indent=1) + "\n")
    rec = json.loads(args.record.read_text())
    if args.format == "json":
        print(json.dumps(compare(rec), indent=1))
    else:
        print(markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
