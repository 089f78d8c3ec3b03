"""``python -m model.evaluate.layer``: per-stage SQNR of the golden model against the float
reference on a synthetic layer.

``--preset 780M --steps 256 --seed 0`` prints the table (``--check`` exits 1 if a stage is
below its floor); ``--json`` prints ``{"sqnr_db": {stage: dB, ...}, ...}``; ``--sweep``
prints layer_out and mixer_out SQNR over a grid of activation and state widths.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace

from model.cli import CliParser
from model.config import PRESETS, get_preset
from model.evaluate.sqnr import (
    MAX_SEED, MAX_STEPS, STAGE_FLOORS_DB, Evaluation, evaluate, failed_stages, fmt_db, prepare,
    zero_mixer_db,
)
from model.golden.quantize import QuantSpec
from model.progress import progress, stage

__all__ = ["main"]

PROG = "model.evaluate.layer"


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{name} takes integers separated by commas, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(
        prog="python -m model.evaluate.layer",
        description="SQNR of the integer golden model against the float reference, per stage.",
    )
    ap.add_argument("--preset", default="780M", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--steps", type=int, default=256,
                    help=f"decode steps, 1 to {MAX_STEPS} (default 256)")
    ap.add_argument("--seed", type=int, default=0,
                    help=f"checkpoint and input seed, 0 to {MAX_SEED} (default 0)")
    ap.add_argument("--act-bits", type=int, default=None,
                    help=f"projection activation bits (default {QuantSpec.act_bits})")
    ap.add_argument("--state-bits", type=int, default=None,
                    help=f"SSM state bits (default {QuantSpec.state_bits})")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--sweep", action="store_true",
                    help="sweep --sweep-act x --sweep-state widths, print layer_out/mixer_out SQNR")
    ap.add_argument("--sweep-act", default="4,6,8,10,12", help="act_bits values for --sweep")
    ap.add_argument("--sweep-state", default="8,10,12,14,16", help="state_bits values for --sweep")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every stage reaches its floor (docs/fixed_point.md): "
                    + ", ".join(f"{k} {v:g}" for k, v in STAGE_FLOORS_DB.items()) + " dB")
    args = ap.parse_args(argv)
    try:
        cfg = get_preset(args.preset)
        if not 1 <= args.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_STEPS}], not {args.steps}")
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], not {args.seed}")
        if args.sweep and args.check:
            raise ValueError("--check gates the default widths and cannot be combined with --sweep")
        if args.sweep and (args.act_bits is not None or args.state_bits is not None):
            raise ValueError("--act-bits/--state-bits conflict with --sweep: give the widths "
                             "with --sweep-act/--sweep-state")
        widths = {k: v for k, v in (("act_bits", args.act_bits), ("state_bits", args.state_bits))
                  if v is not None}
        spec = QuantSpec(**widths)
        acts = _int_list(args.sweep_act, "--sweep-act")
        states = _int_list(args.sweep_state, "--sweep-state")
        for a in acts:
            replace(spec, act_bits=a)
        for st in states:
            replace(spec, state_bits=st)
    except ValueError as e:
        ap.error(str(e))
    print(f"seed={args.seed} preset={args.preset} steps={args.steps}", file=sys.stderr)
    t0 = time.perf_counter()
    with stage(f"{PROG}: synthetic {args.preset} layer, float reference over {args.steps} "
               f"steps"):
        p = prepare(cfg, args.steps, args.seed)

    if args.sweep:
        rows = []
        grid = [(a, st) for a in acts for st in states]
        for a, st in progress(grid, f"{PROG}: sweep"):
            r = evaluate(p, replace(spec, act_bits=a, state_bits=st))
            rows.append({"act_bits": a, "state_bits": st, "layer_out": r["layer_out"],
                         "mixer_out": r["mixer_out"]})
            if not args.json:
                print(f"act_bits={a:2d} state_bits={st:2d}  layer_out {fmt_db(r['layer_out'])} dB"
                      f"  mixer_out {fmt_db(r['mixer_out'])} dB", flush=True)
        if args.json:
            print(json.dumps({"preset": args.preset, "steps": args.steps, "seed": args.seed,
                              "sweep": rows}, indent=2))
        return 0

    with stage(f"{PROG}: golden model and SQNR"):
        sq = evaluate(p, spec)
        zero = zero_mixer_db(p)
    ev = Evaluation(args.preset, args.steps, args.seed, asdict(spec), sq,
                    round(time.perf_counter() - t0, 2), zero)
    failed = failed_stages(sq)
    if args.json:
        doc = asdict(ev)
        doc["floors_db"] = STAGE_FLOORS_DB
        doc["failed_stages"] = failed
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'stage':<10} {'SQNR dB':>8} {'floor':>6}")
        for k, v in sq.items():
            mark = "" if k not in failed else "  BELOW FLOOR"
            print(f"{k:<10} {fmt_db(v):>8} {STAGE_FLOORS_DB[k]:>6.1f}{mark}")
        print(f"(layer_out with the mixer output replaced by 0: {fmt_db(zero).strip()} dB)")
        verdict = "PASS" if not failed else f"FAIL ({', '.join(failed)} below floor)"
        print(f"every stage at or above its floor: {verdict} ({ev.seconds} s)")
    return 0 if (not failed or not args.check) else 1


if __name__ == "__main__":
    raise SystemExit(main())
