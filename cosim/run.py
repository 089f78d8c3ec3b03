"""``make sim``: co-simulate the RTL units on real shapes and print one summary table.

Projection unit: below. Scan unit: 64 decode steps of each preset's layer (dt_raw and the
conv output x, B, C from the golden model's trace), state carried across tokens.

For each preset the golden model runs a few decode steps of a synthetic-checkpoint layer; the
activations it feeds in_proj and out_proj are sent through the Verilated projection unit and
its outputs compared bit for bit with the golden projection outputs. A small random case with
idle cycles and backpressure runs too. ``WAVES=1`` dumps an FST waveform per case.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from model.config import get_preset
from model.evaluate import prepare
from model.golden import GoldenLayer
from model.quantize import QuantSpec, export_layer

from .projection import ProjectionCase, random_projection, random_tokens, run_case
from .scan import real_shape_case as scan_case, run_scan_case
from rtl.xnor_projection import ProjectionConfig

__all__ = ["real_shape_cases", "main"]


def real_shape_cases(preset: str, tokens: int, simd: int, pe: int, seed: int = 0):
    """in_proj and out_proj cases of ``preset`` with the golden model's own activations."""
    p = prepare(get_preset(preset), tokens, seed)
    q = export_layer(p.block, QuantSpec(), stats=p.calib)
    layer = GoldenLayer(q)
    state = layer.initial_state()
    a_in, a_out = [], []
    for u in q.fmt["res"].quantize(p.u):
        tr: dict = {}
        _, state = layer.step(u, state, tr)
        a_in.append(tr["norm"])
        a_out.append(tr["out_norm"])
    for name, proj, acts in (("in_proj", q.in_proj, a_in), ("out_proj", q.out_proj, a_out)):
        cfg = ProjectionConfig.from_projection(proj, simd, pe)
        yield ProjectionCase(f"{preset}_{name}", cfg, proj, np.stack(acts), seed=seed)


def _row(unit: str, case: ProjectionCase, res: dict, seconds: float) -> list[str]:
    c = case.config
    conf = f"{c.d_in}x{c.d_out} S{c.simd} P{c.pe} B{c.act_bits}"
    if case.idle or case.backpressure:
        conf += f" idle {case.idle:.0%} bp {case.backpressure:.0%}"
    steady = all(sp == c.cycles_per_token for sp in res["token_spacing"])
    ok = res["mismatches"] == 0 and (case.idle or case.backpressure or (
        res["cycles_measured"] == res["cycles_predicted"] and steady))
    rate = res["cycles_per_s"]
    return [unit, case.name, conf, f"{res['tokens']} x {c.d_out}", str(res["cycles_measured"]),
            str(res["cycles_predicted"]), f"{rate / 1e3:.0f}" if rate else "-",
            f"{seconds:.0f}", "PASS" if ok else f"FAIL ({res['mismatches']} mismatches)"]


def _scan_row(case, res: dict, seconds: float) -> list[str]:
    c = case.config
    qc = c.q.cfg
    conf = f"H{qc.nheads} P{qc.headdim} N{qc.d_state} lanes {c.lanes}"
    steady = all(sp == c.cycles_per_token for sp in res["token_spacing"])
    ok = res["mismatches"] == 0 and res["cycles_measured"] == res["cycles_predicted"] and steady
    rate = res["cycles_per_s"]
    return ["ssm_scan", case.name, conf, f"{res['tokens']} x {qc.d_inner}",
            str(res["cycles_measured"]), str(res["cycles_predicted"]),
            f"{rate / 1e3:.0f}" if rate else "-", f"{seconds:.0f}",
            "PASS" if ok else f"FAIL ({res['mismatches']} mismatches)"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosim.run", description=__doc__)
    ap.add_argument("--presets", default="780M,2.7B", help="comma-separated presets")
    ap.add_argument("--simd", type=int, default=64)
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lanes", type=int, default=16, help="scan unit lanes")
    ap.add_argument("--scan-tokens", type=int, default=64, help="scan tokens per preset")
    args = ap.parse_args(argv)
    print(f"seed={args.seed}", flush=True)
    t_all = time.perf_counter()
    cases = []
    for preset in args.presets.split(","):
        # Two tokens where a token is short enough, to show back-to-back steady state.
        tokens = 2 if get_preset(preset).d_model <= 2048 else 1
        cases += list(real_shape_cases(preset, tokens, args.simd, args.pe, args.seed))
    rng = np.random.default_rng(args.seed)
    p = random_projection(300, 70, 8, rng)
    cases.append(ProjectionCase("random_stalls", ProjectionConfig.from_projection(p, 32, 8), p,
                                random_tokens(p, 4, rng), idle=0.3, backpressure=0.3,
                                seed=args.seed))
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        res = run_case(case)
        rows.append(_row("xnor_projection", case, res, time.perf_counter() - t0))
        print("  ".join(rows[-1]), flush=True)
    for preset in args.presets.split(","):
        t0 = time.perf_counter()
        case = scan_case(preset, args.scan_tokens, args.lanes, args.seed)
        res = run_scan_case(case)
        rows.append(_scan_row(case, res, time.perf_counter() - t0))
        print("  ".join(rows[-1]), flush=True)

    head = ["unit", "case", "configuration", "vectors", "cycles measured", "cycles predicted",
            "k cycles/s", "s", "result"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: " | ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
    print()
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    return 0 if all(r[-1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
