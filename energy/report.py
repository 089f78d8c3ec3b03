"""Memory, throughput and energy of Bi-Mamba 780M / 1.3B / 2.7B against FP16.

``python energy/report.py`` prints the tables for all three presets; ``--preset`` picks one,
``--format md|csv|json`` the output, ``--set name=value`` / ``--arch FILE`` change the
architecture, ``--memory NAME`` prices DRAM and sets its bandwidth from a DRAM technology of
``energy/references/dram.json``, ``--platform NAME`` ties everything to a platform of
``energy/platforms.json`` (clock, memory, static power, resources; whether the engine fits),
``--plot DIR`` writes PNG charts, ``--sweep`` joins the golden model's accuracy with the
estimated energy over activation widths.

Beside the estimate it prints the memory roofline (``energy/roofline.py``: the minimal DRAM
bytes per token by kind, the tokens/s the bandwidth allows, the design's share of it, the
speedup at equal bandwidth), the DRAM-only energy floor, the estimate under both energy tables
(Horowitz 45 nm, TPUv4i 7 nm), the measured GPU decode records of ``bench/results/`` and the
published anchors of ``energy/references/anchors.json``.

Every argument is checked before any work starts: architecture values against the limits of
the RTL generators and the quantisation spec (``Arch`` in energy/estimator.py), ``--seed`` and
``--sweep-steps`` against the golden model's own bounds (``MAX_SEED``, ``MAX_STEPS`` in
model/evaluate/sqnr.py), ``--prefill`` against ``MAX_PREFILL``, flags that would be ignored or
contradict each other, and the ``--plot`` folder, by writing a file into it. A bad one ends
the run with one line, ``report.py: error: <message>``, and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from dataclasses import asdict, replace
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

if __package__ in (None, ""):  # run as a script: python energy/report.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_decode import load_results  # noqa: E402
from energy.activity import summary as activity_summary  # noqa: E402
from energy.estimator import (  # noqa: E402
    STATIC_W, Arch, arch_from_args, check_lanes, dram_pj_per_bit, estimate, layer_config,
    resolve_table,
)
from energy.footprint import MAMBA2_VOCAB, footprint  # noqa: E402
from energy.asic_timing import TIMED, asic_clock  # noqa: E402
from energy.platforms import (  # noqa: E402
    PLATFORM_FIELDS, Platform, custom_platform, engine_area, load_platforms, platform_arch,
    platform_view,
)
from energy.roofline import (  # noqa: E402
    BYTE_KINDS, bytes_per_token, energy_floor_j, roofline_tokens_per_s,
)
from energy.sources import gpu_bandwidth, load_anchors, load_memories  # noqa: E402
from energy.tables import load_table, table_names  # noqa: E402
from model.config import get_preset  # noqa: E402
from model.evaluate.sqnr import MAX_SEED, MAX_STEPS  # noqa: E402
from model.golden.quantize import QuantSpec  # noqa: E402

PRESETS = ("780M", "1.3B", "2.7B")
# The Arch fields --memory sets (from its row of energy/references/dram.json).
MEMORY_FIELDS = ("dram_pj_per_bit", "dram_bytes_per_s", "dram_efficiency", "dram_latency_ns",
                 "dram_background_w")
GIB = 2**30
MAX_PREFILL = 2**20  # prefill length: a million tokens is past any context this models
# Values of each --plot-sweep; simd, pe and lanes go in powers of two (a log2 axis).
# Clocks of the ASIC point's table (Hz): what its figures rest on.
ASIC_CLOCKS = (100e6, 200e6, 300e6, 500e6, 700e6, 1000e6)
SWEEP_VALUES = {"act_bits": (2, 4, 6, 8, 10, 12, 16), "simd": (16, 32, 64, 128, 256),
                "pe": (4, 8, 16, 32, 64), "lanes": (4, 8, 16, 32, 64)}
PLOTS = ("energy_breakdown.png", "memory.png", "roofline.png")  # plus sweep_<param>.png
DESIGN_NAMES = {"bimamba": "Bi-Mamba", "fp16": "FP16"}
# The LM head's rows by default: Mamba-2's checkpoints' padded vocabulary (--vocab 32000 gives
# Bi-Mamba's own, the presets' figure).
DEFAULT_VOCAB = MAMBA2_VOCAB
MAX_VOCAB = 1 << 20


def preset_config(name: str, vocab: int = DEFAULT_VOCAB):
    """Preset ``name`` with a head (and embedding) of ``vocab`` rows."""
    return replace(get_preset(name), vocab_size=vocab)


def record_vocab(r: dict) -> int:
    """The head rows a measured record ran with: its shape's ``vocab_size``, else its
    preset's own."""
    return int((r.get("shape") or {}).get("vocab_size") or get_preset(r["preset"]).vocab_size)


def _baselines(name: str, records: list[dict], vocab: int = DEFAULT_VOCAB) -> list[dict]:
    """The measured records of preset ``name`` at a head of ``vocab`` rows (a record at
    another vocabulary is another model), each with the roofline of its own weights
    (``weights``: ``"fp16"`` for a record that does not say; the bytes a token the record
    counted, else the FP16 model's) at its GPU's bandwidth (where anchors.json has it), the
    measured share of that roofline (``roofline_fraction``) and of the bandwidth
    (``bandwidth_fraction``)."""
    cfg = preset_config(name, vocab)
    fp16 = sum(bytes_per_token(cfg, "fp16").values())
    out = []
    for r in records:
        if r["preset"] != name or record_vocab(r) != vocab:
            continue
        r = dict(r)
        r["weights"] = r.get("weights") or "fp16"
        need = r.get("bytes_per_token") or fp16
        bw = gpu_bandwidth(r["gpu"])
        r["bytes_per_token_fp16"] = fp16
        r["bytes_per_token"] = need
        r["gpu_bytes_per_s"] = None if bw is None else bw[0]
        r["gpu_bandwidth_source"] = None if bw is None else bw[1]
        r["roofline_tokens_per_s"] = None if bw is None else roofline_tokens_per_s(need, bw[0])
        r["roofline_fraction"] = (None if bw is None
                                  else r["tokens_per_s"] / r["roofline_tokens_per_s"])
        if r.get("bandwidth_fraction") is None:
            r["bandwidth_fraction"] = r["roofline_fraction"]
        out.append(r)
    return out


def _gpu_comparison(r: dict) -> dict | None:
    """The measured GPU records of a preset set against the 1-bit estimate: the best (lowest
    J/token) record of each weight kind at batch 1, and the estimate's energy saving over it."""
    best: dict[str, dict] = {}
    for g in r["baselines"]:
        if g["batch"] != 1 or g["j_per_token"] is None:
            continue
        w = g["weights"]
        if w not in best or g["j_per_token"] < best[w]["j_per_token"]:
            best[w] = g
    if not best:
        return None
    return {w: {"system": g["system"], "date": g["date"], "tokens_per_s": g["tokens_per_s"],
                "j_per_token": g["j_per_token"], "bandwidth_fraction": g["bandwidth_fraction"],
                "saving": g["j_per_token"] / r["energy_per_token_j"]}
            for w, g in sorted(best.items())}


def preset_report(name: str, arch: Arch, prefill: int = 512, memory: str | None = None,
                  records: list[dict] | None = None, vocab: int = DEFAULT_VOCAB) -> dict:
    """Every figure of one preset on ``arch`` (``memory``: the DRAM technology that set its
    DRAM figures, for the record; ``records``: measured GPU records to attach; ``vocab``: the
    head's rows)."""
    cfg = preset_config(name, vocab)
    fp = footprint(cfg)
    b, f = estimate(cfg, arch, "bimamba"), estimate(cfg, arch, "fp16")
    need = {d: bytes_per_token(cfg, d, arch.state_bits, arch.data_bits, arch.state_on_chip,
                               arch.spec)
            for d in ("bimamba", "fp16")}
    total = {d: sum(v.values()) for d, v in need.items()}
    roof = {d: roofline_tokens_per_s(total[d], arch.dram_bytes_per_s) for d in total}
    pj = dram_pj_per_bit(arch)
    floor = {d: energy_floor_j(total[d], pj) for d in total}
    by_table = {}
    for t in table_names():
        tb = replace(arch, table=t, node_nm=0.0)
        by_table[t] = {d: estimate(cfg, tb, d).energy_per_token_j for d in ("bimamba", "fp16")}
    bp, fpp = estimate(cfg, arch, "bimamba", prefill), estimate(cfg, arch, "fp16", prefill)
    # The weight-precision baselines: the same template with FP16, INT8, INT4 weights.
    precision = {}
    for d in ("fp16", "int8", "int4"):
        e = f if d == "fp16" else estimate(cfg, arch, d)
        nb = sum(bytes_per_token(cfg, d, arch.state_bits, arch.data_bits, arch.state_on_chip,
                                 arch.spec).values())
        precision[d] = {"tokens_per_s": e.tokens_per_s, "bound": e.bound,
                        "energy_per_token_j": e.energy_per_token_j,
                        "dram_bytes_per_token": e.dram_bytes,
                        "roofline_tokens_per_s": roofline_tokens_per_s(nb, arch.dram_bytes_per_s),
                        "energy_saving": e.energy_per_token_j / b.energy_per_token_j,
                        "speedup": b.tokens_per_s / e.tokens_per_s}
    strongest = min(precision, key=lambda d: precision[d]["energy_per_token_j"])
    state_bytes = fp.state_values * arch.state_bits // 8
    state_fp16 = fp.state_values * 2
    return {
        "weights_fp16_bytes": fp.fp16_bytes - 2 * fp.embedding_params,
        "weights_bimamba_bytes": fp.bimamba_bytes - 2 * fp.embedding_params,
        "embedding_bytes": 2 * fp.embedding_params,
        "state_bytes": state_bytes,
        "state_fp16_bytes": state_fp16,
        "total_fp16_bytes": fp.fp16_bytes + state_fp16,
        "total_bimamba_bytes": fp.bimamba_bytes + state_bytes,
        "tokens_per_s": b.tokens_per_s, "bound": b.bound,
        "tokens_per_s_fp16": f.tokens_per_s, "bound_fp16": f.bound,
        "cycles_per_token": b.cycles, "cycles_per_token_fp16": f.cycles,
        "dram_bytes_per_token": b.dram_bytes, "dram_bytes_per_token_fp16": f.dram_bytes,
        "energy_per_token_j": b.energy_per_token_j,
        "energy_per_token_fp16_j": f.energy_per_token_j,
        "energy_breakdown_j": b.energy_j, "energy_breakdown_fp16_j": f.energy_j,
        "energy_saving": f.energy_per_token_j / b.energy_per_token_j,
        "precision_baselines": precision,
        "strongest_baseline": strongest,
        "energy_saving_vs_strongest": precision[strongest]["energy_saving"],
        "weight_memory_saving": (fp.fp16_bytes - 2 * fp.embedding_params)
        / (fp.bimamba_bytes - 2 * fp.embedding_params),
        "speedup": b.tokens_per_s / f.tokens_per_s,
        "actions_per_token": b.actions, "actions_per_token_fp16": f.actions,
        "prefill_tokens": prefill,
        "prefill_tokens_per_s": bp.tokens_per_s, "prefill_bound": bp.bound,
        "prefill_energy_per_token_j": bp.energy_per_token_j,
        "prefill_energy_per_token_fp16_j": fpp.energy_per_token_j,
        "bytes_per_token": need,
        "minimal_bytes_per_token": total["bimamba"],
        "minimal_bytes_per_token_fp16": total["fp16"],
        "dram_pj_per_bit": pj, "dram_bytes_per_s": arch.dram_bytes_per_s, "memory": memory,
        "roofline_tokens_per_s": roof["bimamba"],
        "roofline_tokens_per_s_fp16": roof["fp16"],
        "compute_tokens_per_s": 1 / b.compute_s, "compute_tokens_per_s_fp16": 1 / f.compute_s,
        "roofline_fraction": b.tokens_per_s / roof["bimamba"],
        "roofline_fraction_fp16": f.tokens_per_s / roof["fp16"],
        "speedup_equal_bandwidth": roof["bimamba"] / roof["fp16"],
        "energy_floor_j": floor["bimamba"], "energy_floor_fp16_j": floor["fp16"],
        "estimate_over_floor": b.energy_per_token_j / floor["bimamba"],
        "estimate_over_floor_fp16": f.energy_per_token_j / floor["fp16"],
        "energy_per_token_by_table_j": by_table,
        "vocab_size": vocab,
        "memory_behaviour": {"efficiency": arch.dram_efficiency,
                             "sustained_bytes_per_s": arch.sustained_bytes_per_s,
                             "latency_ns": arch.dram_latency_ns,
                             "latency_cycles": b.latency_cycles,
                             "background_w": arch.dram_background_w},
        "baselines": (baselines := _baselines(name, records or [], vocab)),
        "measured_gpus": (gpus := _gpu_comparison({"baselines": baselines,
                                                   "energy_per_token_j": b.energy_per_token_j})),
        "saving_vs_strongest": _strongest(precision, gpus, b.energy_per_token_j),
        "design_point": _design_point(b),
        "notes": [],
    }


def _strongest_line(name: str, r: dict) -> str:
    s = r["saving_vs_strongest"]
    c = s["candidates"]
    gpu = c.get("gpu-1-bit")
    return (f"{name}: the strongest baseline is {s['baseline'].upper()} "
            f"({s['energy_per_token_j'] * 1e3:.1f} mJ a token, {s['kind']}); the 1-bit design "
            f"saves {s['saving']:.2f}x its energy per token (INT8 {c['int8']['saving']:.2f}x, "
            f"INT4 {c['int4']['saving']:.2f}x at equal bandwidth"
            + (f"; the GPU running the same 1-bit weights {gpu['saving']:.2f}x, measured at "
               f"batch 1" if gpu else "; no measured GPU 1-bit record at this shape") + ").")


def _strongest(precision: dict, gpus: dict | None, energy_j: float) -> dict:
    """The strongest baseline of the 1-bit design: the lowest energy per token among the INT8
    and INT4 designs (estimates on the same template and memory: equal bandwidth) and the GPU
    running the same packed 1-bit weights (measured at batch 1 on its own memory), and the
    1-bit estimate's saving over it."""
    cands = {d: {"kind": "estimate", "energy_per_token_j": precision[d]["energy_per_token_j"],
                 "equal_bandwidth": True} for d in ("int8", "int4")}
    if gpus and "1-bit" in gpus:
        g = gpus["1-bit"]
        cands["gpu-1-bit"] = {"kind": "measured", "energy_per_token_j": g["j_per_token"],
                              "equal_bandwidth": False, "system": g["system"]}
    best = min(cands, key=lambda k: cands[k]["energy_per_token_j"])
    return {"baseline": best, **cands[best],
            "saving": cands[best]["energy_per_token_j"] / energy_j,
            "candidates": {k: {**v, "saving": v["energy_per_token_j"] / energy_j}
                           for k, v in cands.items()}}


def _design_point(b) -> dict:
    """The engine the 1-bit estimate is made for: the layer engine (rtl/layer.py) inside the
    whole-model engine (rtl/lm.py), its memory's paces and its formula's cycles."""
    lc, lmc = b.layer, b.lm
    period = Fraction(b.period)
    moved = lmc.bytes_per_token + lmc.state_bytes_per_token
    return {"beat_bytes": lc.beat_bytes, "simd": lc.simd, "pe": lc.pe,
            "planes": lc.planes or lc.shape.act_bits, "lanes": lc.lanes, "state": lmc.state,
            "memory_cycles_per_beat": float(period), "memory_pace": str(period),
            "state_cycles_per_word": float(b.state_period), "state_pace": str(b.state_period),
            "conv_cycles_per_word": float(b.conv_period), "conv_pace": str(b.conv_period),
            "state_words_per_layer": lmc.state_words if lmc.state == "memory" else 0,
            "conv_words_per_layer": lmc.conv_words if lmc.state == "memory" else 0,
            "beats_per_layer_token": lc.beats_per_token,
            "layer_cycles_per_token": lc.schedule(period).token_cycles,
            "layer_roofline_fraction": float(lc.roofline_fraction(period)),
            "beats_per_token": lmc.beats_per_token, "beats_by_section": lmc.section_beats(),
            "state_bytes_per_token": lmc.state_bytes_per_token,
            "cycles_per_token": b.cycles, "simulated": b.simulated,
            # The memory's busy share: every byte the engine moves at the memory's rate.
            "memory_busy_fraction": float(moved / (b.dram_bytes_per_s / b.clock_hz) / b.cycles)}


def paper_storage_line() -> str:
    fp = footprint(get_preset("2.7B"), vocab_size=MAMBA2_VOCAB)
    return (f"Paper check, 2.7B storage: FP16 {fp.fp16_bytes / GIB:.2f} GiB -> Bi-Mamba "
            f"{fp.bimamba_bytes / GIB:.2f} GiB (paper: 5.03 -> 0.55 GB), counting every "
            f"checkpoint tensor, 1 bit per in_proj/out_proj weight and FP16 for the rest, with "
            f"the Mamba-2 tokenizer's {MAMBA2_VOCAB}-row embedding that the paper's figure "
            f"implies (the tables' default too; --vocab 32000 gives Bi-Mamba's own).")


def _md(reports: dict[str, dict], arch: Arch) -> str:
    table, _, tech = resolve_table(arch)
    if table.scaled_actions:
        tech += (f"; scaled linearly from 45 nm for want of a {table.node_nm:g} nm figure: "
                 f"{', '.join(table.scaled_actions)}")
    first = next(iter(reports.values()))
    mem = first["memory"]
    mb = first["memory_behaviour"]
    dram = (f"DRAM: {first['dram_pj_per_bit']:.3g} pJ/bit at "
            f"{first['dram_bytes_per_s'] / 1e9:g} GB/s peak, {mb['efficiency']:.1%} of it "
            f"sustained ({mb['sustained_bytes_per_s'] / 1e9:.1f} GB/s), a row miss "
            f"{mb['latency_ns']:g} ns ({mb['latency_cycles']} cycles), background "
            f"{mb['background_w']:g} W"
            + (f" ({mem}, --memory)" if mem else " (the architecture's figures)"))
    out = [f"Architecture: {json.dumps(asdict(arch))}", f"Energy table: {tech}", dram,
           _memory_sources_line(mem), f"LM head and embedding: {first['vocab_size']} rows"
           + (" (Mamba-2's checkpoints'; --vocab 32000 gives Bi-Mamba's own)"
              if first["vocab_size"] == MAMBA2_VOCAB else " (--vocab)"), ""]
    out += ["Whole-model engine (rtl/lm.py) of the 1-bit design, one layer engine (rtl/layer.py) "
            "serving every layer, its weights and its state on one memory served in turn; "
            "cycles per token from its formula (the one the tests check against Verilator), "
            "bytes from its packer and its state port:", "",
            "| model | beat | array (pe x simd, planes) | scan lanes | state | memory "
            "cycles/beat | cycles/word (SSM, conv) | beats/token | cycles/token | memory busy | "
            "layer share of its stream roofline |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        d = r["design_point"]
        words = (f"{d['state_pace']}, {d['conv_pace']}" if d["state"] == "memory" else "-")
        out.append(f"| {n} | {d['beat_bytes']:g} B | {d['pe']} x {d['simd']}, {d['planes']} | "
                   f"{d['lanes']} | {d['state']} | {d['memory_pace']} | {words} | "
                   f"{d['beats_per_token']} | {d['cycles_per_token']} | "
                   f"{d['memory_busy_fraction']:.1%} | {d['layer_roofline_fraction']:.1%} |")
    out.append("")
    notes = [f"{n}: {t}" for n, r in reports.items() for t in r["notes"]]
    if notes:
        out += [f"Note: {t}" for t in notes] + [""]
    out += ["| model | weights FP16 | weights Bi-Mamba | embedding (FP16) | SSM state | "
            "total FP16 | total Bi-Mamba |", "|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| {n} | {r['weights_fp16_bytes'] / GIB:.3f} GiB | "
                   f"{r['weights_bimamba_bytes'] / GIB:.3f} GiB | {r['embedding_bytes'] / GIB:.3f} GiB | "
                   f"{r['state_bytes'] / 2**20:.1f} MiB | {r['total_fp16_bytes'] / GIB:.3f} GiB | "
                   f"{r['total_bimamba_bytes'] / GIB:.3f} GiB |")
    out += ["", "| model | tokens/s Bi-Mamba (bound) | tokens/s FP16 (bound) | DRAM/token "
            "Bi-Mamba | DRAM/token FP16 | energy/token Bi-Mamba | energy/token FP16 | "
            "energy saving | weight memory saving |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| {n} | {r['tokens_per_s']:.1f} ({r['bound']}) | "
                   f"{r['tokens_per_s_fp16']:.1f} ({r['bound_fp16']}) | "
                   f"{r['dram_bytes_per_token'] / 1e6:.0f} MB | "
                   f"{r['dram_bytes_per_token_fp16'] / 1e6:.0f} MB | "
                   f"{r['energy_per_token_j'] * 1e3:.2f} mJ | "
                   f"{r['energy_per_token_fp16_j'] * 1e3:.2f} mJ | {r['energy_saving']:.2f}x | "
                   f"{r['weight_memory_saving']:.2f}x |")
    out += ["", "Weight-precision baselines: the same template (array, lanes, memory) with FP16, "
            "INT8 and INT4 weights (integer MACs, an FP16 scale a row; estimates, no RTL), "
            "and the 1-bit design's saving over each:", "",
            "| model | design | DRAM/token | tokens/s (bound) | energy/token | 1-bit saving | "
            "1-bit speedup |", "|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| {n} | Bi-Mamba (1-bit) | {r['dram_bytes_per_token'] / 1e6:.0f} MB | "
                   f"{r['tokens_per_s']:.1f} ({r['bound']}) | "
                   f"{r['energy_per_token_j'] * 1e3:.2f} mJ | - | - |")
        for d, p in r["precision_baselines"].items():
            out.append(f"| {n} | {d.upper()} | {p['dram_bytes_per_token'] / 1e6:.0f} MB | "
                       f"{p['tokens_per_s']:.1f} ({p['bound']}) | "
                       f"{p['energy_per_token_j'] * 1e3:.2f} mJ | {p['energy_saving']:.2f}x | "
                       f"{p['speedup']:.2f}x |")
    out += [""] + [_strongest_line(n, r) for n, r in reports.items()]
    out += ["", f"Prefill of {next(iter(reports.values()))['prefill_tokens']} tokens ("
            "the weights streamed for every token; state and LM head once per call), per "
            "token:", "",
            "| model | tokens/s (bound) | energy/token Bi-Mamba | energy/token FP16 |",
            "|---|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| {n} | {r['prefill_tokens_per_s']:.1f} ({r['prefill_bound']}) | "
                   f"{r['prefill_energy_per_token_j'] * 1e3:.2f} mJ | "
                   f"{r['prefill_energy_per_token_fp16_j'] * 1e3:.2f} mJ |")
    for n, r in reports.items():
        out += ["", f"Energy per token by component, {n} (mJ):", "",
                "| component | Bi-Mamba | FP16 |", "|---|---|---|"]
        keys = list(dict.fromkeys([*r["energy_breakdown_j"], *r["energy_breakdown_fp16_j"]]))
        for k in keys:
            b = r["energy_breakdown_j"].get(k)
            f = r["energy_breakdown_fp16_j"].get(k)
            out.append(f"| {k} | {'-' if b is None else f'{b * 1e3:.3f}'} | "
                       f"{'-' if f is None else f'{f * 1e3:.3f}'} |")
    out += _roofline_md(reports)
    out += _floor_md(reports)
    out += _baselines_md(reports)
    out += _activity_md(activity_summary())
    out += ["", paper_storage_line(), "",
            "Assumptions (energy/estimator.py, docs/estimator.md): decode at batch 1; one layer "
            "engine sized to the memory, every weight and constant streamed from DRAM every "
            "token, the state of the layer in flight on chip and swapped through the state "
            "port before each layer, on the same memory between the layers' weight streams, "
            "unless state_on_chip; the 1-bit design's final norm and LM head as built "
            f"({arch.head_bits}-bit integer weights and activations, exact sums); greedy "
            "decode (a token offered once the last one's logits are out: the row's latency "
            "exposed, the state swaps' hidden where the formula overlaps them); the memory "
            "sustaining its efficiency on every stream (refresh only: row misses and turnarounds "
            "not counted); its background power for the whole token; the prefill a projection "
            "from the layer formula (the "
            "engine has no prefill mode); FP16 baseline with as many FP16 MACs as the 1-bit "
            "array has XNOR lanes, fed by the stream of FP16 weights, and an FP16 LM head; "
            "the die's static power "
            f"{arch.static_w:g} W (1-bit) and {arch.static_fp16_w:g} W (FP16, INT8, INT4)"
            + (", the leakage of the default engine's netlist in 45 nm cells and SRAM "
               "(energy/leakage.py), the baselines given the same"
               if (arch.static_w, arch.static_fp16_w) == (STATIC_W, STATIC_W) else
               ", as set") + "."]
    return "\n".join(out)


def _activity_md(a: dict) -> list[str]:
    """The measured switching activity beside the action counts that price logic above."""
    return ["", f"Logic and on-chip memory above are action counts. Measured beside them "
            f"(energy/activity.py, {a['record']}: the switching activity of {a['model']} "
            f"on the whole-model engine, {a['engine']}, {a['tokens']} bytes in Verilator, "
            f"priced per toggle from NanGate 45 nm figures): "
            f"{a['activity_j'] * 1e6:.1f} µJ a token with ideal word-level clock gating, "
            f"{a['activity_ungated_clock_j'] * 1e6:.1f} µJ with none, against "
            f"{a['action_count_j'] * 1e6:.1f} µJ counted ({a['ratio']:.1f}x and "
            f"{a['ratio_ungated_clock']:.1f}x); beside that engine's DRAM and static "
            f"{a['dram_and_static_j'] * 1e6:.1f} µJ, logic is {a['logic_share']:.0%} "
            f"({a['logic_share_ungated_clock']:.0%} ungated) of the token, not the "
            f"{a['action_count_share']:.1%} the action count gives. docs/estimator.md says "
            f"what each leaves out."]


def _memory_sources_line(mem: str | None) -> str:
    """Where the memory's behaviour figures come from: the --memory technology's row, or the
    default memory's (when the architecture's figures are the defaults)."""
    from energy.estimator import _MEMORY

    m = load_memories()[mem] if mem else _MEMORY
    src = m.behaviour_sources
    return (f"Memory behaviour ({m.name}, energy/references/dram.json; figures other than "
            f"these defaults come from --set): efficiency {src['efficiency_status']}: "
            f"{src['efficiency_source']}; latency {src['latency_status']}: "
            f"{src['latency_source']}; background {src['background_status']}: "
            f"{src['background_source']}")


def _mb(v: float) -> str:
    return f"{v / 1e6:.1f}"


def _roofline_md(reports: dict[str, dict]) -> list[str]:
    bw = next(iter(reports.values()))["dram_bytes_per_s"]
    out = ["", f"Memory roofline at {bw / 1e9:g} GB/s: minimal DRAM MB per token by kind "
           "(energy/roofline.py: bytes_per_token), the tokens/s that bandwidth allows, the "
           "design's tokens/s and its share:", "",
           "| model | design | proj. weights | FP16 params | HW constants | SSM state | conv "
           "state | LM head + emb. | total MB | roofline tok/s | design tok/s | % of roofline |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        for d, sfx in (("bimamba", ""), ("fp16", "_fp16")):
            k = r["bytes_per_token"][d]
            out.append(f"| {n} | {DESIGN_NAMES[d]} | "
                       + " | ".join(_mb(k[kind]) for kind in BYTE_KINDS)
                       + f" | {_mb(sum(k.values()))} | {r['roofline_tokens_per_s' + sfx]:.1f} | "
                       f"{r['tokens_per_s' + sfx]:.1f} ({r['bound' + sfx]}) | "
                       f"{100 * r['roofline_fraction' + sfx]:.0f} % |")
    out += ["", "| model | speedup at the design point | speedup at equal bandwidth (roofline "
            "ratio) |", "|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| {n} | {r['speedup']:.2f}x | {r['speedup_equal_bandwidth']:.2f}x |")
    return out


def _floor_md(reports: dict[str, dict]) -> list[str]:
    out = ["", "DRAM-only energy floor (minimal bytes x pJ/bit, nothing else) beside the "
           "estimate, and the estimate under each energy table (same DRAM):", "",
           "| model | floor Bi-Mamba | estimate / floor | floor FP16 | estimate / floor | "
           + " | ".join(f"{t} Bi-Mamba / FP16" for t in table_names()) + " |",
           "|---|---|---|---|---|" + "---|" * len(table_names())]
    for n, r in reports.items():
        out.append(f"| {n} | {r['energy_floor_j'] * 1e3:.2f} mJ | "
                   f"{r['estimate_over_floor']:.2f}x | {r['energy_floor_fp16_j'] * 1e3:.2f} mJ | "
                   f"{r['estimate_over_floor_fp16']:.2f}x | "
                   + " | ".join(f"{v['bimamba'] * 1e3:.2f} / {v['fp16'] * 1e3:.2f} mJ"
                                for v in r["energy_per_token_by_table_j"].values()) + " |")
    for t in table_names():
        scaled = load_table(t).scaled_actions
        if scaled:
            out += ["", f"{t}: {', '.join(scaled)} scaled linearly from 45 nm (no "
                    f"{load_table(t).node_nm:g} nm figure in the table's source)."]
    last = list(reports)[-1]
    r = reports[last]
    tb = {d: sum(r["bytes_per_token"][d].values()) for d in ("bimamba", "fp16")}
    out += ["", f"DRAM technologies (energy/references/dram.json), {last}: roofline and floor "
            "of each, the rest of the architecture unchanged (--memory NAME re-runs the whole "
            "estimate with one):", "",
            "| memory | pJ/bit | GB/s (configuration) | status | roofline tok/s Bi-Mamba / "
            "FP16 | floor Bi-Mamba / FP16 |", "|---|---|---|---|---|---|"]
    for m in load_memories().values():
        out.append(f"| {m.name} | {m.pj_per_bit:g} | {m.bytes_per_s / 1e9:g} ({m.config}) | "
                   f"{m.status} | {roofline_tokens_per_s(tb['bimamba'], m.bytes_per_s):.0f} / "
                   f"{roofline_tokens_per_s(tb['fp16'], m.bytes_per_s):.0f} | "
                   f"{energy_floor_j(tb['bimamba'], m.pj_per_bit) * 1e3:.1f} / "
                   f"{energy_floor_j(tb['fp16'], m.pj_per_bit) * 1e3:.1f} mJ |")
    return out


def _baselines_md(reports: dict[str, dict]) -> list[str]:
    out = ["", "Beside real systems: the estimate, measured GPU decode (bench/results/, "
           "python -m bench.gpu_decode) and published anchors (energy/references/anchors.json):",
           "", "| system | model | kind | tokens/s | W | J/token | note |",
           "|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        out.append(f"| this estimate, Bi-Mamba | {n} | estimate | {r['tokens_per_s']:.1f} | "
                   f"{r['energy_per_token_j'] * r['tokens_per_s']:.2f} | "
                   f"{r['energy_per_token_j']:.4f} | chip + DRAM |")
        out.append(f"| this estimate, FP16 | {n} | estimate | {r['tokens_per_s_fp16']:.1f} | "
                   f"{r['energy_per_token_fp16_j'] * r['tokens_per_s_fp16']:.2f} | "
                   f"{r['energy_per_token_fp16_j']:.4f} | chip + DRAM |")
        for g in r["baselines"]:
            note = f"board power, idle {g['idle_power_w']:.0f} W" if g["idle_power_w"] else ""
            note = f"{g['weights']} weights" + (f", {note}" if note else "")
            if g["roofline_fraction"] is not None:
                note += (f"; {100 * g['roofline_fraction']:.0f} % of its roofline "
                         f"({g['bytes_per_token'] / 1e6:,.0f} MB a token at "
                         f"{g['gpu_bytes_per_s'] / 1e12:g} TB/s)")
            w = "-" if g["power_w"] is None else f"{g['power_w']:.0f}"
            j = "-" if g["j_per_token"] is None else f"{g['j_per_token']:.3f}"
            out.append(f"| {g['system']} ({g['date'][:10]}) | {n}, random weights | measured | "
                       f"{g['tokens_per_s']:.1f} | {w} | {j} | {note} |")
    for a in load_anchors():
        w = "-" if a["power_w"] is None else f"{a['power_w']:.3g}"
        j = "-" if a["j_per_token"] is None else f"{a['j_per_token']:.3g}"
        note = a["platform"] + ("; derived: " + "; ".join(a["derived"]) if a["derived"] else "")
        out.append(f"| {a['system']} | {a['model']} | {a['kind']} | {a['tokens_per_s']:g} | {w} | "
                   f"{j} | {note} |")
    out += ["", "Sources: " + "; ".join(dict.fromkeys(a["source"] for a in load_anchors()))
            + ". What each figure was checked against: anchors.json, field 'checked'."]
    for n, r in reports.items():  # the estimate against the best measured GPU of each kind
        for w, g in (r["measured_gpus"] or {}).items():
            out += ["", f"{n}: the estimate's {r['energy_per_token_j'] * 1e3:.1f} mJ a token "
                    f"against the measured GPU with {w} weights at batch 1 "
                    f"({g['tokens_per_s']:.1f} tokens/s, {g['j_per_token']:.3f} J/token board "
                    f"power, {g['bandwidth_fraction']:.0%} of its bandwidth): "
                    f"{g['saving']:.1f}x less energy (chip + DRAM estimated against a board "
                    f"measured)."]
    return out


def _csv(reports: dict[str, dict]) -> str:
    buf = io.StringIO()
    flat = {n: {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            for n, r in reports.items()}
    for n, r in reports.items():  # action counts as columns too
        flat[n].update({f"actions.{k}": v for k, v in r["actions_per_token"].items()})
        if "platform" in r:
            flat[n].update({f"platform.{k}": r["platform"][k]
                            for k in ("name", "clock_hz", "clock_source", "fits")})
    w = csv.DictWriter(buf, fieldnames=["preset", *next(iter(flat.values()))])
    w.writeheader()
    for n, r in flat.items():
        w.writerow({"preset": n, **r})
    return buf.getvalue()


def arch_sweep(presets: list[str], arch: Arch, param: str, values: tuple[int, ...],
               vocab: int = DEFAULT_VOCAB) -> tuple[dict[str, list[dict]], list[str]]:
    """Energy and throughput of the 1-bit design per preset over ``param``, the rest of
    ``arch`` fixed (simd and pe swept together with the other at its sized value). A point
    the engine cannot take (a lane count that does not divide the model) is left out and a
    note says why."""
    rows: dict[str, list[dict]] = {}
    notes = []
    for n in presets:
        cfg = preset_config(n, vocab)
        rows[n] = []
        base = layer_config(cfg, arch)
        for v in values:
            change = {param: v}
            if param in ("simd", "pe"):
                change = {"simd": base.simd, "pe": base.pe, param: v}
            try:
                e = estimate(cfg, replace(arch, **change))
            except ValueError as err:
                notes.append(f"{n} at {param} = {v}: {err}")
                continue
            rows[n].append({param: v, "energy_per_token_j": e.energy_per_token_j,
                            "tokens_per_s": e.tokens_per_s, "bound": e.bound,
                            "memory_tokens_per_s": 1 / e.memory_s})
    return rows, notes


def write_plots(reports: dict[str, dict], arch: Arch, out: Path, sweep_param: str,
                vocab: int = DEFAULT_VOCAB) -> list[Path]:
    """The breakdown, memory and ``sweep_<param>`` charts into ``out`` (which must exist)."""
    from energy.plots import plot_breakdown, plot_memory, plot_roofline, plot_sweep

    rows, notes = arch_sweep(list(reports), arch, sweep_param, SWEEP_VALUES[sweep_param],
                             vocab)
    return [plot_breakdown(reports, arch, out / PLOTS[0]),
            plot_memory(reports, arch, out / PLOTS[1]),
            plot_roofline(reports, arch, out / PLOTS[2]),
            plot_sweep(rows, arch, sweep_param, out / f"sweep_{sweep_param}.png", notes)]


def accuracy_energy_sweep(preset: str, arch: Arch, act_bits: list[int], steps: int,
                          seed: int, vocab: int = DEFAULT_VOCAB) -> list[dict]:
    """Golden-model SQNR (one synthetic layer of ``preset``, ``steps`` decode steps) beside the
    estimated energy and throughput of the whole model, per activation width.

    A width the golden model cannot export (an accumulator past its 62-bit limit) has no SQNR
    (None) and says why in ``note``."""
    from model.evaluate.sqnr import evaluate, prepare
    from model.golden.quantize import ExportError

    p = prepare(get_preset(preset), steps, seed)
    rows = []
    for a in act_bits:
        note = None
        try:
            sq = evaluate(p, QuantSpec(act_bits=a))
        except ExportError as e:
            sq, note = {"layer_out": None, "mixer_out": None}, f"no golden model: {e}"
        e = estimate(preset_config(preset, vocab), replace(arch, act_bits=a, planes=0))
        rows.append({"act_bits": a, "layer_out_db": sq["layer_out"],
                     "mixer_out_db": sq["mixer_out"], "energy_per_token_j": e.energy_per_token_j,
                     "tokens_per_s": e.tokens_per_s, "bound": e.bound, "note": note})
    return rows


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} dB"


def _bounded(flag: str, text: str, lo: int, hi: int) -> int:
    """``text`` as an integer in [lo, hi]."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ValueError(f"{flag} must be an integer in [{lo}, {hi}], not "
                         f"{text.strip() if value is not None else repr(text)}")
    return value


def _act_widths(text: str) -> list[int]:
    """``--sweep-act``: distinct widths, each one QuantSpec accepts."""
    try:
        acts = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--sweep-act takes activation widths separated by commas, not "
                         f"{text!r}") from None
    for a in acts:
        try:
            QuantSpec(act_bits=a)
        except ValueError as e:
            raise ValueError(f"--sweep-act: {e}") from None
    dup = next((a for i, a in enumerate(acts) if a in acts[:i]), None)
    if dup is not None:
        raise ValueError(f"--sweep-act must list each width once, not {dup} twice")
    return acts


def _writable_folder(folder: Path) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it (by writing one: the
    permission bits alone do not say, for root or on a read-only mount)."""
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(0, "a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"--plot must name a writable folder, not {str(folder)!r} "
                         f"({e.strerror or e})") from None
    return folder


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, ``report.py: error: <message>``, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="report.py", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help=f"one of {', '.join(PRESETS)} (repeatable)")
    ap.add_argument("--format", default="md", choices=["md", "csv", "json"])
    ap.add_argument("--arch", help="JSON file holding one object of architecture parameters")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override one architecture parameter (repeatable, once per name; "
                         "wins over --arch)")
    ap.add_argument("--memory", metavar="NAME",
                    help="DRAM technology of energy/references/dram.json that sets "
                         f"{', '.join(MEMORY_FIELDS)}")
    ap.add_argument("--vocab", metavar="ROWS",
                    help=f"rows of the LM head and embedding, 1 to {MAX_VOCAB} (default "
                         f"{DEFAULT_VOCAB}, Mamba-2's checkpoints'; 32000 is Bi-Mamba's own)")
    ap.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR (created if needed)")
    ap.add_argument("--plot-sweep", choices=list(SWEEP_VALUES),
                    help="parameter of the sweep chart (with --plot; default act_bits)")
    ap.add_argument("--sweep", action="store_true",
                    help="join golden-model SQNR with energy over activation widths "
                         "(--format md or json)")
    ap.add_argument("--sweep-act", help="activation widths of --sweep (default 4,6,8,10,12)")
    ap.add_argument("--sweep-steps", help=f"decode steps of --sweep, 1 to {MAX_STEPS} (default 64)")
    ap.add_argument("--seed", help=f"seed of --sweep, 0 to {MAX_SEED} (default 0)")
    ap.add_argument("--area", metavar="FPGA",
                    help="also estimate the FPGA resources (LUT4, FF, block RAM, DSP) of each "
                         "design point's XNOR array and scan on FPGA, from the fit of measured "
                         "place-and-route results in fpga/area.json (python -m fpga.area); "
                         "FPGA is the fit's device")
    ap.add_argument("--platform", metavar="NAME",
                    help="tie the estimate to a platform of energy/platforms.json: its clock "
                         "(an FPGA's the Fmax make fpga measured), memory bandwidth and energy, "
                         "static power and resources; an FPGA's engine is the largest that "
                         "fits it")
    ap.add_argument("--prefill", default="512",
                    help=f"prefill length L, 1 to {MAX_PREFILL} (default 512)")
    return ap


def _conflicts(args: argparse.Namespace) -> None:
    """Flags that would be ignored, or that ask for two things at once."""
    for flag, given in (("--sweep-act", args.sweep_act), ("--sweep-steps", args.sweep_steps),
                        ("--seed", args.seed)):
        if given is not None and not args.sweep:
            raise ValueError(f"{flag} needs --sweep")
    if args.plot_sweep is not None and not args.plot:
        raise ValueError("--plot-sweep needs --plot")
    if args.area and args.format == "csv":
        raise ValueError("--area needs --format md or json (csv holds the preset table only)")
    if args.sweep and args.format == "csv":
        raise ValueError("--sweep needs --format md or json (csv holds the preset table only)")
    dup = next((p for i, p in enumerate(args.preset or []) if p in args.preset[:i]), None)
    if dup is not None:
        raise ValueError(f"--preset must name each preset once, not {dup} twice")


def _with_memory(args: argparse.Namespace, arch: Arch) -> Arch:
    """``arch`` with the DRAM figures of ``--memory`` (refused beside a --set or --arch value
    for the same fields, which it would silently override)."""
    if args.memory is None:
        return arch
    memories = load_memories()
    if args.memory not in memories:
        raise ValueError(f"--memory must be one of {', '.join(memories)}, not {args.memory!r}")
    given = {item.split("=", 1)[0].strip() for item in args.set}
    if args.arch:
        given |= set(json.loads(Path(args.arch).read_text()))
    clash = [k for k in MEMORY_FIELDS if k in given]
    if clash:
        raise ValueError(f"--memory sets {', '.join(clash)}; leave {clash[0]} out of "
                         "--set and --arch")
    m = memories[args.memory]
    return replace(arch, dram_pj_per_bit=m.pj_per_bit, dram_bytes_per_s=m.bytes_per_s,
                   dram_efficiency=m.efficiency, dram_latency_ns=m.latency_ns,
                   dram_background_w=m.background_w)


def area_view(reports: dict[str, dict], device: str, arch: Arch,
              vocab: int = DEFAULT_VOCAB) -> dict[str, dict]:
    """FPGA resources of each preset's whole layer engine at its design point on ``device``:
    :func:`fpga.area.engine_estimate` (the whole-engine fit, with the state, buffers and FIFOs
    counted in block RAMs at the preset's shape: the layer being computed, or every layer with
    ``state_on_chip``), the device's capacity and the share used; beside it the projection
    and scan fits of the units alone (:func:`fpga.area.area_estimate`).

    Raises
    ------
    ValueError
        If ``fpga/area.json`` holds no fit for ``device``.
    """
    from fpga.area import RESOURCES, area_estimate, engine_estimate, load_area
    from fpga.flow import DEVICES

    area = load_area()
    if device != area["device"]:
        raise ValueError(f"--area must be a device with a fit in fpga/area.json "
                         f"({area['device']}), not {device!r}")
    cap = DEVICES[device].capacity
    capacity = {"lut4": cap["lc"], "ff": cap["lc"], "bram": cap["bram"], "dsp": cap["dsp"]}
    out = {}
    for n, r in reports.items():
        d = r["design_point"]
        eng = engine_estimate(preset_config(n, vocab), arch.spec, d["simd"], d["pe"],
                              d["lanes"], arch.state_on_chip, area)
        units = area_estimate(d["simd"], d["pe"], d["lanes"], area)
        est = {"simd": d["simd"], "pe": d["pe"], "lanes": d["lanes"],
               "total": {k: eng[k] for k in RESOURCES}, "bram_parts": eng["bram_parts"],
               "state_bits": eng["state_bits"], "state_on_chip": arch.state_on_chip,
               "extrapolated": eng["extrapolated"],
               "units": {k: units[k] for k in ("projection", "scan")}}
        est["capacity"] = capacity
        est["share"] = {k: est["total"][k] / capacity[k] for k in RESOURCES}
        est["fits"] = all(est["total"][k] <= capacity[k] for k in RESOURCES)
        out[n] = est
    return out


def _area_md(view: dict[str, dict], device: str) -> str:
    from fpga.area import load_area

    area = load_area()
    eng = area["layer_engine"]
    first = next(iter(view.values()))
    cap = first["capacity"]
    held = "; ".join(f"{p['build']}: " + ", ".join(f"{k} {p['rel_error'][k]:+.1%}"
                                                     for k in ("lut4", "ff", "dsp", "bram"))
                     for p in eng["held_out"])
    where = ("every layer's state on chip" if first["state_on_chip"] else
             "the state of the layer being computed (the others in memory)")
    out = [f"FPGA resources of the whole layer engine at the design point on {area['part']} "
           f"(--area {device}): the whole-engine fit of fpga/area.json (every unit of the "
           f"layer, measured at {len(eng['points'])} sizes of the "
           f"{eng['measured_on']['preset']} shape, worst error on them "
           f"{max(abs(e) for p in eng['checks'] for e in p['rel_error'].values()):.1%}; "
           f"held out: {held}); "
           f"its RAMs counted in block RAMs at the model's shape: the tables, {where}, the "
           "buffers and FIFOs. Extrapolated where the design point lies outside the measured "
           "sizes. Capacity: "
           f"{cap['lut4']:,} LUT4, {cap['ff']:,} FF, {cap['bram']} block RAMs, "
           f"{cap['dsp']} DSPs.", "",
           "| model | array (pe x simd) | scan lanes | LUT4 | FF | BRAM (tables, state, "
           "buffers) | DSP | fits | extrapolated |", "|---|---|---|---|---|---|---|---|---|"]
    for n, v in view.items():
        t, s, b = v["total"], v["share"], v["bram_parts"]
        out.append(f"| {n} | {v['pe']} x {v['simd']} | {v['lanes']} | {t['lut4']:,} "
                   f"({s['lut4']:.0%}) | {t['ff']:,} ({s['ff']:.0%}) | {t['bram']:,} "
                   f"({s['bram']:.0%}: {b['tables']}, {b['state']:,}, {b['buffers']}) | "
                   f"{t['dsp']} ({s['dsp']:.0%}) | "
                   f"{'yes' if v['fits'] else 'no'} | {'yes' if v['extrapolated'] else 'no'} |")
    return "\n".join(out)


def _platform_clash(args: argparse.Namespace) -> None:
    """``--platform`` sets the clock, the memory and static power: refused beside --memory,
    or beside a --set or --arch value for one of those fields (which it would override)."""
    if args.platform is None:
        return
    if args.memory is not None:
        raise ValueError("--platform sets the memory; leave --memory out")
    given = {item.split("=", 1)[0].strip() for item in args.set}
    if args.arch:
        given |= set(json.loads(Path(args.arch).read_text()))
    clash = [k for k in PLATFORM_FIELDS if k in given]
    if clash:
        raise ValueError(f"--platform {args.platform} sets {', '.join(clash)}; leave "
                         f"{clash[0]} out of --set and --arch")


def sized_for(p: Platform, cfg, arch: Arch) -> tuple[Arch, str]:
    """``arch`` on platform ``p``, and how its engine was sized. On an FPGA the engine sized
    to the memory may not fit the device: the largest power-of-two beat (at most the memory's
    bytes a cycle) whose whole engine fits its LUTs, flip-flops, DSPs and block RAMs is taken;
    if none fits, the smallest that sizes an engine (and ``fits`` says no). An array or beat
    the user gave is kept."""
    a = platform_arch(p, arch)
    if p.kind != "fpga" or arch.beat_bytes or arch.simd or arch.pe:
        return a, "as given" if (arch.beat_bytes or arch.simd or arch.pe) else "to the memory"
    bpc = p.bytes_per_s / p.clock_hz
    top = 1
    while top * 2 <= min(bpc, 65536) or top < bpc and top * 2 <= 65536:
        top *= 2
    smallest = None
    beat = top
    while beat >= 1:
        try:
            e = estimate(cfg, replace(a, beat_bytes=beat), "bimamba")
        except ValueError:
            beat //= 2
            continue
        lc = e.layer
        need, _, _ = engine_area(cfg, a.spec, lc.simd, lc.pe, lc.lanes, a.state_on_chip)
        smallest = beat
        if all(need[k] <= p.resources[k] for k in need):
            return (replace(a, beat_bytes=beat),
                    f"the largest engine that fits the device: a {beat}-byte beat (the memory "
                    f"delivers {bpc:,.1f} bytes a cycle at this clock)")
        beat //= 2
    if smallest is None:
        raise ValueError(f"no engine of a beat up to {top} bytes can be sized for this model")
    return (replace(a, beat_bytes=smallest),
            f"no engine fits the device; the smallest, a {smallest}-byte beat, is shown")


def clock_table(cfg, arch: Arch) -> list[dict]:
    """Tokens/s, energy per token and share of the roofline of the 1-bit design at each
    clock of :data:`ASIC_CLOCKS` and at ``arch``'s own, the rest of ``arch`` kept (the engine
    re-sized to the memory at each clock, as the estimator sizes it)."""
    rows = []
    need = sum(bytes_per_token(cfg, "bimamba", arch.state_bits, arch.data_bits,
                               arch.state_on_chip, arch.spec).values())
    roof = roofline_tokens_per_s(need, arch.dram_bytes_per_s)
    for hz in sorted({*ASIC_CLOCKS, arch.clock_hz}):
        try:
            e = estimate(cfg, replace(arch, clock_hz=hz), "bimamba")
        except ValueError as err:
            rows.append({"clock_hz": hz, "error": str(err)})
            continue
        rows.append({"clock_hz": hz, "tokens_per_s": e.tokens_per_s, "bound": e.bound,
                     "energy_per_token_j": e.energy_per_token_j,
                     "roofline_fraction": e.tokens_per_s / roof,
                     "beat_bytes": e.layer.beat_bytes, "simd": e.layer.simd, "pe": e.layer.pe,
                     "lanes": e.layer.lanes})
    return rows


def _platform_md(reports: dict[str, dict]) -> list[str]:
    out = ["", "Platform (energy/platforms.json; --platform NAME): clock, memory and whether "
           "the engine fits, per model:", "",
           "| model | platform | clock | bandwidth | engine | LUT4 | FF | DSP | BRAM | "
           "memory | fits | tokens/s | mJ/token | share of roofline |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for n, r in reports.items():
        v, d = r["platform"], r["design_point"]
        res = v["resources"]

        def cell(k: str) -> str:
            if k not in res:
                return "-"
            x = res[k]
            return f"{x['need']:,} / {x['have']:,}" + (" **over**" if x["need"] > x["have"]
                                                       else "")

        mem = ("-" if "memory_bytes" not in res else
               f"{res['memory_bytes']['need'] / 2**20:,.0f} / "
               f"{res['memory_bytes']['have'] / 2**20:,.0f} MiB"
               + (" **over**" if res["memory_bytes"]["need"] > res["memory_bytes"]["have"]
                  else ""))
        out.append(f"| {n} | {v['name']} | {v['clock_hz'] / 1e6:.1f} MHz ({v['clock_source']}) "
                   f"| {v['bandwidth_bytes_per_s'] / 1e9:g} GB/s | {d['pe']} x {d['simd']}, "
                   f"{d['lanes']} lanes | {cell('lut4')} | {cell('ff')} | {cell('dsp')} | "
                   f"{cell('bram')} | {mem} | {'yes' if v['fits'] else 'no'} | "
                   f"{v['tokens_per_s']:,.2f} | {v['energy_per_token_j'] * 1e3:,.2f} | "
                   f"{v['roofline_fraction']:.1%} |")
        for t in (v.get("sizing"), v["area_basis"], v["clock_note"]):
            if t and t not in notes:
                notes.append(t)
    out += [""] + [f"- {t}" for t in notes]
    sweeps = {n: r["clock_table"] for n, r in reports.items() if r.get("clock_table")}
    if sweeps:
        out += ["", "The ASIC point at its clock and others: tokens/s and mJ/token of the 1-bit "
                "design, the engine sized to the memory at each clock (the clock the netlist "
                "allows is below the table; the static power stays the default engine's):", "",
                "| model | " + " | ".join(f"{x['clock_hz'] / 1e6:g} MHz"
                                          for x in next(iter(sweeps.values()))) + " |",
                "|---|" + "---|" * len(next(iter(sweeps.values())))]
        for n, rows in sweeps.items():
            out.append(f"| {n} | " + " | ".join(
                "-" if "error" in x else
                f"{x['tokens_per_s']:,.1f} tok/s, {x['energy_per_token_j'] * 1e3:.1f} mJ"
                for x in rows) + " |")
        b = next(r["clock_bound"] for r in reports.values() if r.get("clock_bound"))
        m = b["macro"]
        out += ["", f"What the engine's own netlist allows (energy/asic_timing.py): "
                f"{b['clock_hz'] / 1e6:,.1f} MHz, set by its "
                f"{'logic' if b['set_by'] == 'logic' else 'SRAM'}: the layer engine's longest "
                f"register-to-register path is {b['logic_ns']:.2f} ns in NanGate 45 nm cells "
                f"(pre-layout: no wires), the fastest OpenRAM FreePDK45 macro's minimum period "
                f"{b['sram_ns']:.3f} ns ({m['words']} x {m['bits']}, the macro the RAMs would "
                f"be built from at that clock), timed with {TIMED['simd']} array columns; the "
                f"report's clock, "
                f"{next(iter(reports.values()))['platform']['clock_hz'] / 1e6:,.0f} MHz, is "
                + ("within it." if next(iter(reports.values()))["platform"]["clock_hz"]
                   <= b["clock_hz"] else "beyond it.")]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)

    try:  # every argument, before any work
        presets = args.preset or list(PRESETS)
        for p in presets:
            if p not in PRESETS:
                raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {p!r}")
        _conflicts(args)
        prefill = _bounded("--prefill", args.prefill, 1, MAX_PREFILL)
        vocab = _bounded("--vocab", str(DEFAULT_VOCAB) if args.vocab is None else args.vocab,
                         1, MAX_VOCAB)
        acts = _act_widths(args.sweep_act or "4,6,8,10,12")
        steps = _bounded("--sweep-steps", "64" if args.sweep_steps is None else args.sweep_steps,
                         1, MAX_STEPS)
        seed = _bounded("--seed", "0" if args.seed is None else args.seed, 0, MAX_SEED)
        arch = arch_from_args(args.arch, args.set)
        load_table(arch.table)
        _platform_clash(args)
        arch = _with_memory(args, arch)
        platform = None
        if args.platform is not None:
            platforms = load_platforms()
            if args.platform not in platforms:
                raise ValueError(f"--platform must be one of {', '.join(platforms)}, not "
                                 f"{args.platform!r}")
            platform = platforms[args.platform]
        if args.sweep:  # the engine's own limits on each width, before the sweep's work
            for a in acts:
                try:
                    replace(arch, act_bits=a, planes=0)
                except ValueError as e:
                    raise ValueError(f"--sweep-act: {e}") from None
        records = load_results()
        for p in presets:
            check_lanes(get_preset(p), arch.lanes)
    except ValueError as e:
        ap.error(str(e))
    reports = {}
    for p in presets:  # arithmetic only; refuses RAM sizes that do not hold this preset
        try:
            plat = platform or custom_platform(arch, preset_config(p, vocab))
            arch_p, sizing = (sized_for(platform, preset_config(p, vocab), arch) if platform
                              else (arch, "to the memory"))
            reports[p] = preset_report(p, arch_p, prefill, args.memory, records, vocab)
            reports[p]["platform"] = {**platform_view(plat, reports[p], arch_p,
                                                      preset_config(p, vocab)),
                                      "sizing": sizing}
            if plat.kind == "asic":
                reports[p]["clock_table"] = clock_table(preset_config(p, vocab), arch_p)
                reports[p]["clock_bound"] = asic_clock()
        except ValueError as e:
            ap.error(f"{p}: {e}")
    try:  # before the sweep and before anything is printed
        plot_dir = _writable_folder(Path(args.plot)) if args.plot else None
        area = area_view(reports, args.area, arch, vocab) if args.area else None
    except ValueError as e:
        ap.error(str(e))
    sweep = None
    if args.sweep:
        sweep = accuracy_energy_sweep(presets[0], arch, acts, steps, seed, vocab)
    if args.format == "json":
        doc = {"arch": asdict(arch), "presets": reports, "paper_check": paper_storage_line(),
               "energy_table": resolve_table(arch)[2],
               "memory_technologies": [asdict(m) for m in load_memories().values()],
               "anchors": load_anchors(), "activity": activity_summary()}
        if sweep:
            doc["sweep"] = sweep
        if area:
            doc["area"] = area
        print(json.dumps(doc, indent=2))
    elif args.format == "csv":
        for n, r in reports.items():
            for t in r["notes"]:
                print(f"{ap.prog}: note: {n}: {t}", file=sys.stderr)
        print(_csv(reports), end="")
    else:
        print(_md(reports, arch))
        print("\n".join(_platform_md(reports)))
        if area:
            print("\n" + _area_md(area, args.area))
        if sweep:
            print(f"\nAccuracy and energy over activation widths ({presets[0]}, "
                  f"{steps} steps, seed {seed}):\n")
            print("| act_bits | layer_out SQNR | mixer_out SQNR | energy/token | tokens/s |")
            print("|---|---|---|---|---|")
            notes = []
            for r in sweep:
                print(f"| {r['act_bits']} | {_db(r['layer_out_db'])} | {_db(r['mixer_out_db'])} | "
                      f"{r['energy_per_token_j'] * 1e3:.2f} mJ | "
                      f"{r['tokens_per_s']:.1f} ({r['bound']}) |")
                if r["note"]:
                    notes.append(f"Note: act_bits = {r['act_bits']}: {r['note']}.")
            if notes:
                print("\n" + "\n".join(notes))
    if plot_dir is not None:
        try:
            paths = write_plots(reports, arch, plot_dir, args.plot_sweep or "act_bits", vocab)
        except OSError as e:
            ap.error(f"--plot could not write into {str(plot_dir)!r}: {e.strerror or e}")
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
