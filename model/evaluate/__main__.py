"""``python -m model.evaluate``: bits per character of the shipped (or a given) language model,
four models on the same bytes, and the golden model's per-stage SQNR layer by layer
(:mod:`model.evaluate.lm`)."""

from __future__ import annotations

import json
from dataclasses import replace

from model.cli import CliParser, fill_defaults, path_arg, refuse_unused
from model.data.corpus import DEFAULT_ROOT, DataError, load_split
from model.evaluate.lm import CALIB_BYTES, SHIPPED, run, sweep
from model.reference.lm_checkpoint import check_lm
from model.evaluate.sqnr import GOLDEN_BPC_RATIO_MAX, LM_STAGE_FLOORS_DB, fmt_db
from model.golden.layer import STAGES
from model.golden.quantize import QuantSpec

__all__ = ["main"]

def _sweep_markdown(r: dict) -> str:
    keys = [k for k in r["points"][0] if k.endswith("_bits")]
    lines = [f"Golden model over widths, test split, first {r['bytes']:,} bytes (float student: "
             f"{r['student_bpc']:.4f} bpc); SQNR is the worst layer's on the first 256 bytes:",
             "", "| " + " | ".join(keys) + " | golden bpc | / student | mixer_out dB | "
             "out_norm dB |", "|" + "---|" * (len(keys) + 4)]
    for p in r["points"]:
        lines.append("| " + " | ".join(str(p[k]) for k in keys)
                     + f" | {p['golden_bpc']:.4f} | {p['golden_over_student']:.4f} | "
                       f"{p['mixer_out_db_min']:.1f} | {p['out_norm_db_min']:.1f} |")
    return "\n".join(lines)


def _markdown(r: dict) -> str:
    b = r["bpc"]
    lines = [
        f"Bits per character, {r['split']} split, {r['bytes']:,} bytes ({r['streams']} streams), "
        f"every row on the same bytes:", "",
        "| model | arithmetic | bpc | vs student |", "|---|---|---|---|",
        f"| teacher | float32, float projections | {b['teacher']:.4f} | "
        f"{b['teacher'] / b['student']:.3f} |",
        f"| student (Bi-Mamba) | float32, FBI-Linear | {b['student']:.4f} | 1.000 |",
        f"| naive binarised teacher | float32, FBI-Linear, no training | {b['naive']:.4f} | "
        f"{b['naive'] / b['student']:.3f} |",
        f"| golden (integer student) | int64, act_bits {r['spec']['act_bits']}, head_bits "
        f"{r['spec']['head_bits']} | {b['golden']:.4f} | {r['golden_over_student']:.4f} |",
        "", f"Per-stage SQNR (dB) of the golden model against the float student, first "
        f"{r['sqnr_db']['bytes']} bytes, each layer on the float model's own input:", "",
        "| stage | " + " | ".join(f"L{i}" for i in range(len(r["sqnr_db"]["layers"])))
        + " | floor |",
        "|---|" + "---|" * (len(r["sqnr_db"]["layers"]) + 1),
    ]
    for k in STAGES:
        lines.append(f"| {k} | " + " | ".join(fmt_db(lay[k]).strip()
                                             for lay in r["sqnr_db"]["layers"])
                     + f" | {LM_STAGE_FLOORS_DB[k]:g} |")
    verdict = "PASS" if not r["failed"] else "FAIL: " + ", ".join(r["failed"])
    lines += ["", f"golden <= {GOLDEN_BPC_RATIO_MAX} x student bpc and every stage of every "
              f"layer at or above its floor: {verdict} ({r['seconds']} s)"]
    return "\n".join(lines)


def _check_inputs(args) -> None:
    """The checkpoints and the corpus, all of them, before any model runs: each file as its
    loader will check it (every key, shape and value of a checkpoint; a split against the
    record of ``make data``). Raises CheckpointError (a ValueError) or DataError."""
    student = args.checkpoint / "student.safetensors"
    splits = ["test", "train"]
    if args.sweep_act is None:
        teacher = args.checkpoint / "teacher.safetensors"
        cfg = check_lm(teacher, binary=False)
        check_lm(student, binary=True, cfg=cfg, cfg_source=f"the teacher's, {teacher}")
        splits = [args.split, "train"]
    else:
        check_lm(student, binary=True)
    for name in dict.fromkeys(splits):
        load_split(name, args.data_root)


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(
        prog="python -m model.evaluate",
        description="Bits per character of the shipped (or given) model: teacher, student, "
                    "naive binarisation, and the integer golden model, on the same bytes.")
    ap.add_argument("--checkpoint", type=path_arg, default=SHIPPED,
                    help="folder holding teacher.safetensors and student.safetensors "
                         "(default: the shipped checkpoints/shakespeare)")
    ap.add_argument("--split", default=None, choices=("train", "val", "test"),
                    help="the split scored (default test; --sweep-act scores test)")
    ap.add_argument("--data-root", type=path_arg, default=DEFAULT_ROOT,
                    help="where `make data` put the corpus (default build/data)")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="score only the first N bytes of the split (default: all)")
    ap.add_argument("--calib-bytes", type=int, default=CALIB_BYTES,
                    help="training bytes the golden model's scales are calibrated on")
    ap.add_argument("--streams", type=int, default=16, help="contiguous streams (default 16)")
    ap.add_argument("--sqnr-bytes", type=int, default=256,
                    help="bytes of the split for the per-stage SQNR table")
    ap.add_argument("--act-bits", type=int, default=None)
    ap.add_argument("--state-bits", type=int, default=None)
    ap.add_argument("--head-bits", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--sweep-act", default=None, metavar="BITS,...",
                    help="instead of the table: golden bpc for each activation width (on "
                         "--max-bytes, default 16384), e.g. 4,6,8,10,12")
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 unless golden bpc <= {GOLDEN_BPC_RATIO_MAX} x student bpc and "
                         f"every layer's stages reach their floors")
    args = ap.parse_args(argv)
    if args.sweep_act is not None:
        refuse_unused(ap, args, {"--split": "the sweep scores the test split"}, "--sweep-act")
    fill_defaults(args, {"--split": "test"})
    try:
        for name, lo, hi in (("max_bytes", 1, 10**9), ("calib_bytes", 1, 10**7),
                             ("streams", 1, 4096), ("sqnr_bytes", 1, 65536)):
            v = getattr(args, name)
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer in [{lo}, {hi}], "
                                 f"not {v}")
        widths = {k: getattr(args, k) for k in ("act_bits", "state_bits", "head_bits")
                  if getattr(args, k) is not None}
        spec = replace(QuantSpec(), **widths)
        for f in ("teacher.safetensors", "student.safetensors"):
            if not (args.checkpoint / f).exists():
                raise ValueError(f"--checkpoint must be a folder holding {f}, "
                                 f"not {args.checkpoint}")
        if args.sweep_act is not None:
            if args.check or args.act_bits is not None:
                raise ValueError("--sweep-act cannot be combined with --check or --act-bits")
            try:
                acts = [int(v) for v in args.sweep_act.split(",")]
            except ValueError:
                raise ValueError(f"--sweep-act takes integers separated by commas, "
                                 f"not {args.sweep_act!r}") from None
            points = [{"act_bits": a, **widths} for a in acts]
            for p in points:
                replace(spec, **p)  # every width checked before the float model runs
            _check_inputs(args)
            r = sweep(args.checkpoint, points, data_root=args.data_root,
                      max_bytes=args.max_bytes or 16384, calib_bytes=args.calib_bytes,
                      streams=args.streams, sqnr_bytes=args.sqnr_bytes)
            print(json.dumps(r, indent=2) if args.json else _sweep_markdown(r))
            return 0
        _check_inputs(args)
        result = run(args.checkpoint, args.split, spec, data_root=args.data_root,
                     max_bytes=args.max_bytes, calib_bytes=args.calib_bytes,
                     streams=args.streams, sqnr_bytes=args.sqnr_bytes)
    except (ValueError, DataError) as e:
        ap.error(str(e))
    print(json.dumps(result, indent=2) if args.json else _markdown(result))
    return 1 if (args.check and result["failed"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
