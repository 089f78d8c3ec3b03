"""Decode-step time of the golden model vs the float reference on one layer of a preset.

Both run in the same process, interleaved round by round, so machine noise hits both alike;
the ratio of medians is the figure to quote. The float reference runs in float32 with its
binarised weights materialised once (its inference form, the faster baseline).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.reference.checkpoint import load_block, synthetic_state_dict
from model.config import PRESETS, get_preset
from model.reference.checkpoint import synthetic_residual
from model.golden.layer import GoldenLayer
from model.golden.quantize import QuantSpec, export_layer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.step_bench", description=__doc__)
    ap.add_argument("--preset", default="2.7B", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = get_preset(args.preset)
    print(f"preset={args.preset} seed={args.seed} torch threads={torch.get_num_threads()}")

    sd = synthetic_state_dict(cfg, args.seed, n_layers=1)
    block32 = load_block(sd, cfg, 0, torch.float32)
    q = export_layer(load_block(sd, cfg, 0, torch.float64), QuantSpec(),
                     synthetic_residual(cfg, 16, args.seed + 1))
    golden = GoldenLayer(q)
    u = synthetic_residual(cfg, args.rounds + 2, args.seed)
    u32 = torch.as_tensor(u, dtype=torch.float32)
    u_int = q.fmt["res"].quantize(u)

    fs, gs = block32.initial_state(), golden.initial_state()
    t_float, t_gold = [], []
    with torch.no_grad():
        for r in range(args.rounds + 2):
            t0 = time.perf_counter()
            _, fs = block32.step(u32[r], fs)
            t1 = time.perf_counter()
            _, gs = golden.step(u_int[r], gs)
            t2 = time.perf_counter()
            if r >= 2:  # the first rounds materialise W_hat and warm caches
                t_float.append(t1 - t0)
                t_gold.append(t2 - t1)
    mf, mg = statistics.median(t_float), statistics.median(t_gold)
    print(f"{'path':<28}{'median ms':>10}{'min ms':>10}")
    print(f"{'float reference step (fp32)':<28}{mf * 1e3:>10.2f}{min(t_float) * 1e3:>10.2f}")
    print(f"{'golden step (int64)':<28}{mg * 1e3:>10.2f}{min(t_gold) * 1e3:>10.2f}")
    print(f"ratio golden / float: {mg / mf:.2f} (target <= 2.00)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
