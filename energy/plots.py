"""PNG charts of the energy report: energy by component, memory, and one architecture sweep.

Reading rules the charts follow: the two designs keep one colour each in every chart (Okabe-Ito
blue for Bi-Mamba, orange for FP16) and the presets one colour and marker each; energies by
component sit on a log axis, so a 1-bit term a thousand times smaller than the DRAM traffic
still shows; sweeps over powers of two use a log2 axis; legends sit outside the data; every
title names what is held fixed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .estimator import Arch, dram_pj_per_bit  # noqa: E402

__all__ = ["POW2_SWEEPS", "arch_caption", "plot_breakdown", "plot_memory", "plot_roofline",
           "plot_sweep"]

GIB = 2**30
DPI = 120
# Okabe & Ito's colour-blind-safe qualitative palette.
DESIGN_COLOURS = {"Bi-Mamba": "#0072B2", "FP16": "#E69F00"}
# The weight-precision baselines, drawn on the roofline chart only.
BASELINE_COLOURS = {"int8": "#CC79A7", "int4": "#009E73"}
PRESET_STYLES = [("#0072B2", "o"), ("#D55E00", "s"), ("#009E73", "^"), ("#CC79A7", "D"),
                 ("#56B4E9", "v"), ("#000000", "P")]
POW2_SWEEPS = ("simd", "pe", "lanes")
# Components by kind, in the order the breakdown lists them (top to bottom).
GROUPS = (
    ("DRAM", ("dram_weights", "dram_state", "dram_embedding")),
    ("static", ("static",)),
    ("SRAM", ("sram_activations", "sram_buffers", "sram_state")),
    ("logic", ("proj_xnor_popcount", "proj_accumulate", "proj_beta_requant", "proj_fp16_mac",
               "norms", "conv", "tables", "gate", "residual", "scan", "tables_dt",
               "other_stages", "lm_head")),
)


def arch_caption(arch: Arch, skip: tuple[str, ...] = (), width: int = 110) -> str:
    """The architecture in a few words, leaving out the parameters in ``skip`` (swept); lines
    break between items, never inside one."""
    parts = []
    sized = lambda v: v or "sized"  # noqa: E731  0: sized to the memory
    if "simd" not in skip and "pe" not in skip:
        parts.append(f"SIMD {sized(arch.simd)} × PE {sized(arch.pe)}")
    elif "simd" not in skip:
        parts.append(f"SIMD {sized(arch.simd)}")
    elif "pe" not in skip:
        parts.append(f"PE {sized(arch.pe)}")
    if "act_bits" not in skip:
        parts.append(f"{arch.act_bits}-bit activations")
    if "lanes" not in skip:
        parts.append(f"{sized(arch.lanes)} scan lanes")
    parts.append(f"{arch.state_bits}-bit state {'on chip' if arch.state_on_chip else 'in DRAM'}")
    parts.append(f"{arch.clock_hz / 1e6:g} MHz")
    parts.append(f"DRAM {dram_pj_per_bit(arch):.3g} pJ/bit at {arch.dram_bytes_per_s / 1e9:g} GB/s")
    parts.append(arch.table if not arch.node_nm else f"{arch.table} at {arch.node_nm:g} nm")
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += ", " + part
    return "\n".join(lines)


def _mj(v: float) -> str:
    """An energy in mJ for a bar label: whole numbers from 10 up, two digits below."""
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}"


def _components(reports: dict[str, dict]) -> list[str]:
    present = {k for r in reports.values()
               for k in (*r["energy_breakdown_j"], *r["energy_breakdown_fp16_j"])}
    known = [k for _, ks in GROUPS for k in ks]
    return [k for k in known if k in present] + sorted(present - set(known))


def plot_breakdown(reports: dict[str, dict], arch: Arch, path: Path) -> Path:
    """One panel per preset: each component's energy per token, Bi-Mamba beside FP16, on a
    log axis shared by the panels."""
    comps = _components(reports)
    names = list(reports)
    fig_w = 4.2 * len(names) + 1.6
    fig, axes = plt.subplots(1, len(names), figsize=(fig_w, 6.4), sharey=True, sharex=True,
                             squeeze=False, layout="constrained")
    y = list(range(len(comps)))
    h = 0.38
    vals = [v * 1e3 for r in reports.values()
            for v in (*r["energy_breakdown_j"].values(), *r["energy_breakdown_fp16_j"].values())
            if v > 0]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)) + 0.3)
    for ax, n in zip(axes[0], names):
        r = reports[n]
        for off, key, design in ((-h / 2, "energy_breakdown_j", "Bi-Mamba"),
                                 (h / 2, "energy_breakdown_fp16_j", "FP16")):
            e = [r[key].get(c, 0.0) * 1e3 for c in comps]
            ax.barh([i + off for i in y], e, height=h, left=lo / 10,
                    color=DESIGN_COLOURS[design])
            for i, v in zip(y, e):
                if v > 0:
                    ax.text(v * 1.15, i + off, _mj(v), va="center", fontsize=6.5)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.grid(axis="x", which="major", color="0.85", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title(f"{n}: Bi-Mamba {r['energy_per_token_j'] * 1e3:.2f} mJ, FP16 "
                     f"{r['energy_per_token_fp16_j'] * 1e3:.2f} mJ ({r['energy_saving']:.2f}×)",
                     fontsize=9.5)
        ax.set_xlabel("energy per token (mJ, log scale)")
        start = 0
        for _, ks in GROUPS:  # a rule between DRAM, SRAM and logic
            start += sum(1 for c in comps if c in ks)
            if 0 < start < len(comps):
                ax.axhline(start - 0.5, color="0.6", linewidth=0.6, linestyle=":")
    ax0 = axes[0][0]
    ax0.set_yticks(y, comps)
    ax0.invert_yaxis()
    ax0.set_ylim(len(comps) - 0.5, -0.5)
    handles = [Patch(color=c, label=d) for d, c in DESIGN_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Energy per decoded token by component (batch 1)\n"
                 + arch_caption(arch, width=int(fig_w * 14)), fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_memory(reports: dict[str, dict], arch: Arch, path: Path) -> Path:
    """Weights, embedding and SSM state per preset, stacked: FP16 beside Bi-Mamba on the left,
    Bi-Mamba alone on its own scale on the right (its state and embedding are a thin sliver
    next to FP16 weights)."""
    names = list(reports)
    fig, (ax, az) = plt.subplots(1, 2, figsize=(max(7.5, 3.4 + 2.4 * len(names)), 5.0),
                                 width_ratios=(3, 2), layout="constrained")
    w = 0.38
    parts = (("weights", "weights_fp16_bytes", "weights_bimamba_bytes", ""),
             ("embedding (FP16)", "embedding_bytes", "embedding_bytes", "///"),
             ("SSM state", "state_fp16_bytes", "state_bytes", "xx"))

    def stack(axis, x, r, design, width, label_parts):
        bottom = 0.0
        for _, fp_key, bm_key, hatch in parts:
            v = r[fp_key if design == "FP16" else bm_key] / GIB
            axis.bar(x, v, width=width, bottom=bottom, color=DESIGN_COLOURS[design],
                     hatch=hatch, edgecolor="white", linewidth=0.8)
            if label_parts:
                axis.text(x + width / 2 + 0.03, bottom + v / 2, f"{v * 1024:.0f} MiB",
                          va="center", fontsize=7.5)
            bottom += v
        axis.text(x, bottom, f"{bottom:.2f} GiB", ha="center", va="bottom", fontsize=8)

    for j, n in enumerate(names):
        stack(ax, j - w / 2 - 0.01, reports[n], "FP16", w, False)
        stack(ax, j + w / 2 + 0.01, reports[n], "Bi-Mamba", w, False)
        stack(az, j, reports[n], "Bi-Mamba", 0.5, True)
    for axis in (ax, az):
        axis.set_xticks(range(len(names)), names)
        axis.set_ylabel("GiB")
        axis.margins(y=0.08)
        axis.grid(axis="y", color="0.88", linewidth=0.6)
        axis.set_axisbelow(True)
    az.set_xlim(-0.5, len(names) - 0.1)
    ax.set_title("FP16 beside Bi-Mamba", fontsize=9.5)
    az.set_title("Bi-Mamba alone, own scale", fontsize=9.5)
    handles = [Patch(color=c, label=d) for d, c in DESIGN_COLOURS.items()]
    handles += [Patch(facecolor="0.45", edgecolor="white", hatch=hatch, label=label)
                for label, _, _, hatch in parts]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               fontsize=9)
    fig.suptitle("Memory: weights + embedding + SSM state (decode, batch 1)\nBi-Mamba: 1-bit "
                 f"in_proj/out_proj, FP16 rest, {arch.state_bits}-bit state; FP16: everything "
                 "16-bit", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_roofline(reports: dict[str, dict], arch: Arch, path: Path) -> Path:
    """One panel per preset: tokens/s over DRAM bandwidth (log-log). Each design's memory
    roofline (bandwidth / minimal bytes per token) meets its compute ceiling (clock / cycles
    per token); the dot is the design at the report's bandwidth, the dotted verticals the DRAM
    technologies of energy/references/dram.json, a cross a measured GPU record."""
    from .sources import load_memories

    names = list(reports)
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names) + 1.4, 5.2), sharey=True,
                             squeeze=False, layout="constrained")
    memories = list(load_memories().values())
    gpu_bw = [g["gpu_bytes_per_s"] for r in reports.values() for g in r["baselines"]
              if g["gpu_bytes_per_s"]]
    lo = 10e9
    hi = max([5e12, *gpu_bw, *(m.bytes_per_s * 2 for m in memories)])
    bws = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for ax, n in zip(axes[0], names):
        r = reports[n]
        for d, sfx, label in (("bimamba", "", "Bi-Mamba"), ("fp16", "_fp16", "FP16")):
            total = sum(r["bytes_per_token"][d].values())
            ceiling = r["compute_tokens_per_s" + sfx]
            colour = DESIGN_COLOURS[label]
            ax.plot([b / 1e9 for b in bws], [min(b / total, ceiling) for b in bws],
                    color=colour, linewidth=1.6)
            ax.plot([b / 1e9 for b in bws], [b / total for b in bws], color=colour,
                    linewidth=0.8, linestyle="--")
            ax.plot([r["dram_bytes_per_s"] / 1e9], [r["tokens_per_s" + sfx]], marker="o",
                    color=colour, markersize=7, linestyle="none")
            ax.annotate(f"{r['tokens_per_s' + sfx]:.0f} tok/s\n"
                        f"({100 * r['roofline_fraction' + sfx]:.0f} % of roofline)",
                        (r["dram_bytes_per_s"] / 1e9, r["tokens_per_s" + sfx]),
                        xytext=(6, -4 if d == "bimamba" else -22), textcoords="offset points",
                        fontsize=7, color=colour)
        for d, colour in BASELINE_COLOURS.items():  # INT8 / INT4: roofline and design point
            p = r.get("precision_baselines", {}).get(d)
            if p is None:
                continue
            total = r["dram_bytes_per_s"] / p["roofline_tokens_per_s"]
            ax.plot([b / 1e9 for b in bws], [b / total for b in bws], color=colour,
                    linewidth=0.8, linestyle="--")
            ax.plot([r["dram_bytes_per_s"] / 1e9], [p["tokens_per_s"]], marker="o",
                    color=colour, markersize=5, linestyle="none")
        for g in r["baselines"]:
            if g["gpu_bytes_per_s"]:
                ax.plot([g["gpu_bytes_per_s"] / 1e9], [g["tokens_per_s"]], marker="X",
                        color=DESIGN_COLOURS["FP16"], markeredgecolor="black", markersize=7,
                        linestyle="none")
        at: dict[float, list[str]] = {}
        for m in memories:  # one line and one label per bandwidth
            at.setdefault(m.bytes_per_s, []).append(m.name)
        for bw, ms in at.items():
            ax.axvline(bw / 1e9, color="0.75", linewidth=0.6, linestyle=":")
            ax.text(bw / 1e9, 0.02, " / ".join(ms), rotation=90, fontsize=6, color="0.4",
                    transform=ax.get_xaxis_transform(), ha="right", va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(which="major", color="0.88", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel("DRAM bandwidth (GB/s, log)")
        strong = r.get("strongest_baseline")
        vs = ""
        if strong and strong != "fp16":
            ratio = (r["roofline_tokens_per_s"]
                     / r["precision_baselines"][strong]["roofline_tokens_per_s"])
            vs = f", {ratio:.1f}x {strong.upper()}"
        ax.set_title(f"{n}: at equal bandwidth Bi-Mamba is {r['speedup_equal_bandwidth']:.1f}x "
                     f"FP16{vs};\nat this design point {r['speedup']:.2f}x FP16", fontsize=9)
    axes[0][0].set_ylabel("tokens/s (log)")
    handles = [Line2D([], [], color=c, label=d) for d, c in DESIGN_COLOURS.items()]
    handles += [Line2D([], [], color=c, linestyle="--", linewidth=0.8,
                       label=f"{d.upper()} (estimate)") for d, c in BASELINE_COLOURS.items()]
    handles += [Line2D([], [], color="0.3", linestyle="--", linewidth=0.8,
                       label="memory roofline alone"),
                Line2D([], [], color="0.3", marker="o", linestyle="none",
                       label="design at the report's bandwidth"),
                Line2D([], [], color=DESIGN_COLOURS["FP16"], marker="X", markeredgecolor="black",
                       linestyle="none", label="measured GPU, FP16 (bench/results)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               fontsize=8)
    fig.suptitle("Batch-1 decode roofline: min(bandwidth / minimal bytes per token, compute "
                 "ceiling)\n" + arch_caption(arch, width=int((4.4 * len(names) + 1.4) * 14)),
                 fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_sweep(rows: dict[str, list[dict]], arch: Arch, param: str, path: Path,
               notes: Sequence[str] = ()) -> Path:
    """Energy per token and tokens/s of the 1-bit design over one parameter, a line per preset;
    filled markers are compute-bound points, open ones memory-bound, and the dashed lines the
    tokens/s that DRAM bandwidth alone would allow."""
    fig, (ax_e, ax_t) = plt.subplots(2, 1, figsize=(8.5, 6.4), sharex=True,
                                     layout="constrained")
    values = sorted({r[param] for rs in rows.values() for r in rs})
    for (n, rs), (colour, marker) in zip(rows.items(), PRESET_STYLES):
        xs = [r[param] for r in rs]
        for ax, key, scale in ((ax_e, "energy_per_token_j", 1e3), (ax_t, "tokens_per_s", 1)):
            ys = [r[key] * scale for r in rs]
            ax.plot(xs, ys, color=colour, linewidth=1.4)
            for x, v, r in zip(xs, ys, rs):
                ax.plot([x], [v], marker=marker, color=colour, markersize=6, linestyle="none",
                        markerfacecolor=colour if r["bound"] == "compute" else "white")
        ax_t.plot(xs, [r["memory_tokens_per_s"] for r in rs], color=colour, linewidth=1.0,
                  linestyle="--")
        es = [r["energy_per_token_j"] * 1e3 for r in rs]
        ax_e.annotate(f"{es[0]:.2f} → {es[-1]:.2f} mJ", (xs[-1], es[-1]), xytext=(0, 5),
                      textcoords="offset points", ha="right", va="bottom", fontsize=7.5,
                      color=colour)
    for ax in (ax_e, ax_t):
        if param in POW2_SWEEPS:
            ax.set_xscale("log", base=2)
        ax.axvline(getattr(arch, param), color="0.5", linewidth=0.8, linestyle=":")
        ax.grid(color="0.88", linewidth=0.6)
        ax.set_axisbelow(True)
    ax_t.set_xticks(values, [str(v) for v in values])
    ax_t.minorticks_off()
    ax_e.set_ylabel("energy per token (mJ)")
    ax_e.margins(y=0.15)
    ax_t.set_ylabel("tokens/s")
    ax_t.set_xlabel(f"{param}" + (" (log2 axis)" if param in POW2_SWEEPS else "")
                    + f"; dotted: the report's {param} = {getattr(arch, param)}")
    handles = [Line2D([], [], color=c, marker=m, label=n)
               for n, (c, m) in zip(rows, PRESET_STYLES)]
    handles += [Line2D([], [], color="0.3", marker="o", linestyle="none", label="compute-bound"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white",
                       linestyle="none", label="memory-bound"),
                Line2D([], [], color="0.3", linestyle="--", linewidth=1.0,
                       label="DRAM ceiling\n(tokens/s)")]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    ax_e.set_title(f"Bi-Mamba decode over {param}, batch 1; fixed:\n"
                   + arch_caption(arch, skip=(param,), width=90), fontsize=9.5)
    if notes:
        fig.supxlabel(_wrap("Note: " + "; ".join(notes), 150), x=0.01, ha="left", fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` broken at spaces to at most ``width`` characters."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
