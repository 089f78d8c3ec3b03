"""Memory, throughput and energy of Bi-Mamba 780M / 1.3B / 2.7B against FP16.

``python energy/report.py`` prints the tables for all three presets; ``--preset`` picks one,
``--format md|csv|json`` the output, ``--set name=value`` / ``--arch FILE`` change the
architecture, ``--plot DIR`` writes PNG charts, ``--sweep`` joins the golden model's accuracy
with the estimated energy over activation widths.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python energy/report.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from energy.estimator import Arch, arch_from_args, estimate  # noqa: E402
from energy.footprint import MAMBA2_VOCAB, footprint  # noqa: E402
from energy.tables import load_table  # noqa: E402
from model.config import get_preset  # noqa: E402

PRESETS = ("780M", "1.3B", "2.7B")
GIB = 2**30


def preset_report(name: str, arch: Arch, prefill: int = 512) -> dict:
    cfg = get_preset(name)
    fp = footprint(cfg)
    b, f = estimate(cfg, arch, "bimamba"), estimate(cfg, arch, "fp16")
    bp, fpp = estimate(cfg, arch, "bimamba", prefill), estimate(cfg, arch, "fp16", prefill)
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
        "weight_memory_saving": (fp.fp16_bytes - 2 * fp.embedding_params)
        / (fp.bimamba_bytes - 2 * fp.embedding_params),
        "speedup": b.tokens_per_s / f.tokens_per_s,
        "actions_per_token": b.actions, "actions_per_token_fp16": f.actions,
        "prefill_tokens": prefill,
        "prefill_tokens_per_s": bp.tokens_per_s, "prefill_bound": bp.bound,
        "prefill_energy_per_token_j": bp.energy_per_token_j,
        "prefill_energy_per_token_fp16_j": fpp.energy_per_token_j,
    }


def paper_storage_line() -> str:
    fp = footprint(get_preset("2.7B"), vocab_size=MAMBA2_VOCAB)
    return (f"Paper check, 2.7B storage: FP16 {fp.fp16_bytes / GIB:.2f} GiB -> Bi-Mamba "
            f"{fp.bimamba_bytes / GIB:.2f} GiB (paper: 5.03 -> 0.55 GB), counting every "
            f"checkpoint tensor, 1 bit per in_proj/out_proj weight and FP16 for the rest, with "
            f"the Mamba-2 tokenizer's {MAMBA2_VOCAB}-row embedding that the paper's figure "
            f"implies; Bi-Mamba's own 32000-row vocabulary gives the tables' figures.")


def _md(reports: dict[str, dict], arch: Arch) -> str:
    table = load_table(arch.table)
    tech = f"{table.name} ({table.node_nm:g} nm)"
    if arch.node_nm != table.node_nm:
        tech += (f", scaled to {arch.node_nm:g} nm: logic and SRAM energy x "
                 f"{arch.node_nm / table.node_nm:.3f} (linear in feature size at constant "
                 f"voltage), DRAM unscaled")
    out = [f"Architecture: {json.dumps(asdict(arch))}", f"Energy table: {tech}", ""]
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
    out += ["", f"Prefill of {next(iter(reports.values()))['prefill_tokens']} tokens (weights, "
            "state and LM head fetched once), per token:", "",
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
    out += ["", paper_storage_line(), "",
            "Assumptions (energy/estimator.py): decode at batch 1; weights from DRAM into the "
            "unit's weight RAM every token, loaded while the unit is idle; SSM state from DRAM "
            "unless state_on_chip; FP16 baseline with as many FP16 MACs as the 1-bit array has "
            "XNOR lanes; FP16 LM head in both; Horowitz 45 nm energies, DDR-class DRAM."]
    return "\n".join(out)


def _csv(reports: dict[str, dict]) -> str:
    buf = io.StringIO()
    flat = {n: {k: v for k, v in r.items() if not isinstance(v, dict)} for n, r in reports.items()}
    for n, r in reports.items():  # action counts as columns too
        flat[n].update({f"actions.{k}": v for k, v in r["actions_per_token"].items()})
    w = csv.DictWriter(buf, fieldnames=["preset", *next(iter(flat.values()))])
    w.writeheader()
    for n, r in flat.items():
        w.writerow({"preset": n, **r})
    return buf.getvalue()


def _plot(reports: dict[str, dict], arch: Arch, out: Path, sweep_param: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    names = list(reports)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    comps = list(dict.fromkeys(k for r in reports.values()
                               for k in [*r["energy_breakdown_j"], *r["energy_breakdown_fp16_j"]]))
    x = range(2 * len(names))
    bottom = [0.0] * len(x)
    palette = plt.get_cmap("tab20").colors  # one colour per component, up to 20
    for i, comp in enumerate(comps):
        vals = []
        for n in names:
            vals += [reports[n]["energy_breakdown_j"].get(comp, 0) * 1e3,
                     reports[n]["energy_breakdown_fp16_j"].get(comp, 0) * 1e3]
        ax.bar(x, vals, bottom=bottom, label=comp, color=palette[i % len(palette)])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(list(x), [f"{n}\n{d}" for n in names for d in ("Bi-Mamba", "FP16")])
    ax.set_ylabel("energy per token (mJ)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "energy_breakdown.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, label) in enumerate((("total_fp16_bytes", "FP16"),
                                      ("total_bimamba_bytes", "Bi-Mamba"))):
        ax.bar([j + 0.4 * i for j in range(len(names))],
               [reports[n][key] / GIB for n in names], width=0.4, label=label)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names)
    ax.set_ylabel("weights + embedding + state (GiB)")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "memory.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    values = {"act_bits": [2, 4, 6, 8, 10, 12, 16], "simd": [16, 32, 64, 128, 256],
              "pe": [4, 8, 16, 32, 64], "lanes": [4, 8, 16, 32, 64]}[sweep_param]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax2 = ax1.twinx()
    for n in names:
        es, ts = [], []
        for v in values:
            a = replace(arch, **{sweep_param: v})
            e = estimate(get_preset(n), a)
            es.append(e.energy_per_token_j * 1e3)
            ts.append(e.tokens_per_s)
        ax1.plot(values, es, marker="o", label=f"{n} energy")
        ax2.plot(values, ts, marker="x", linestyle="--", label=f"{n} tokens/s")
    ax1.set_xlabel(sweep_param)
    ax1.set_ylabel("energy per token (mJ)")
    ax2.set_ylabel("tokens/s")
    ax1.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    paths.append(out / f"sweep_{sweep_param}.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def accuracy_energy_sweep(preset: str, arch: Arch, act_bits: list[int], steps: int,
                          seed: int) -> list[dict]:
    """Golden-model SQNR (one synthetic layer of ``preset``, ``steps`` decode steps) beside the
    estimated energy and throughput of the whole model, per activation width."""
    from model.evaluate import evaluate, prepare
    from model.quantize import QuantSpec

    p = prepare(get_preset(preset), steps, seed)
    rows = []
    for a in act_bits:
        sq = evaluate(p, QuantSpec(act_bits=a))
        e = estimate(get_preset(preset), replace(arch, act_bits=a))
        rows.append({"act_bits": a, "layer_out_db": sq["layer_out"],
                     "mixer_out_db": sq["mixer_out"], "energy_per_token_j": e.energy_per_token_j,
                     "tokens_per_s": e.tokens_per_s, "bound": e.bound})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python energy/report.py", description=__doc__)
    ap.add_argument("--preset", action="append", help=f"one of {', '.join(PRESETS)} (repeatable)")
    ap.add_argument("--format", default="md", choices=["md", "csv", "json"])
    ap.add_argument("--arch", help="JSON file of architecture parameters")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override one architecture parameter (repeatable)")
    ap.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    ap.add_argument("--plot-sweep", default="act_bits", choices=["act_bits", "simd", "pe", "lanes"])
    ap.add_argument("--sweep", action="store_true",
                    help="join golden-model SQNR with energy over activation widths")
    ap.add_argument("--sweep-act", default="4,6,8,10,12")
    ap.add_argument("--sweep-steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefill", type=int, default=512, help="prefill length L (default 512)")
    args = ap.parse_args(argv)
    try:
        presets = args.preset or list(PRESETS)
        for p in presets:
            if p not in PRESETS:
                raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {p!r}")
        arch = arch_from_args(args.arch, args.set)
        if args.prefill < 1:
            raise ValueError(f"prefill must be a positive integer, not {args.prefill}")
        reports = {p: preset_report(p, arch, args.prefill) for p in presets}
    except ValueError as e:
        ap.error(str(e))
    sweep = None
    if args.sweep:
        try:
            acts = [int(v) for v in args.sweep_act.split(",")]
            if args.sweep_steps < 1 or not all(1 <= a <= 16 for a in acts):
                raise ValueError
        except ValueError:
            ap.error(f"--sweep-act takes activation widths in [1, 16] separated by commas and "
                     f"--sweep-steps a positive integer, not {args.sweep_act!r} / {args.sweep_steps}")
        sweep = accuracy_energy_sweep(presets[0], arch, acts, args.sweep_steps, args.seed)
    if args.format == "json":
        doc = {"arch": asdict(arch), "presets": reports, "paper_check": paper_storage_line()}
        if sweep:
            doc["sweep"] = sweep
        print(json.dumps(doc, indent=2))
    elif args.format == "csv":
        print(_csv(reports), end="")
    else:
        print(_md(reports, arch))
        if sweep:
            print(f"\nAccuracy and energy over activation widths ({presets[0]}, "
                  f"{args.sweep_steps} steps, seed {args.seed}):\n")
            print("| act_bits | layer_out SQNR | mixer_out SQNR | energy/token | tokens/s |")
            print("|---|---|---|---|---|")
            for r in sweep:
                print(f"| {r['act_bits']} | {r['layer_out_db']:.1f} dB | "
                      f"{r['mixer_out_db']:.1f} dB | {r['energy_per_token_j'] * 1e3:.2f} mJ | "
                      f"{r['tokens_per_s']:.1f} ({r['bound']}) |")
    if args.plot:
        for path in _plot(reports, arch, Path(args.plot), args.plot_sweep):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
