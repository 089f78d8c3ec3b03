"""``python -m model.golden --preset 780M``: every tensor format and every accumulator width of
the golden model's export of a synthetic layer of that preset, as the markdown tables of
docs/fixed_point.md."""

from __future__ import annotations


import torch

from model.cli import CliParser
from model.config import PRESETS, get_preset
from model.golden.bounds import markdown
from model.golden.quantize import QuantSpec, export_layer
from model.reference.checkpoint import load_block, synthetic_residual, synthetic_state_dict

__all__ = ["main"]

# Calibration tokens of the synthetic layer: the count model.evaluate.sqnr.prepare uses, so the
# formats printed here are those of `python -m model.evaluate.layer` at the same seed.
CALIB_STEPS = 64


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(prog="python -m model.golden", description=__doc__)
    ap.add_argument("--preset", default="780M", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--seed", type=int, default=0, help="checkpoint seed (default 0)")
    args = ap.parse_args(argv)
    try:
        cfg = get_preset(args.preset)
    except ValueError as e:
        ap.error(str(e))
    block = load_block(synthetic_state_dict(cfg, args.seed, n_layers=1), cfg, 0, torch.float64)
    calib_u = synthetic_residual(cfg, CALIB_STEPS, args.seed + 1)
    q = export_layer(block, QuantSpec(), calib_u=calib_u)
    print(markdown(q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
