"""Bits per character of the shipped language model: float teacher, student, naive, and golden.

``python -m model.evaluate`` (``--checkpoint DIR --split test --json``) scores one split of the
Shakespeare corpus with four models, on exactly the same bytes:

* ``teacher``: the float Mamba-2 model (``DIR/teacher.safetensors``);
* ``student``: the float Bi-Mamba model (``DIR/student.safetensors``);
* ``naive``: the teacher binarised with FBI 'xnor' alpha/beta and no training;
* ``golden``: the student through the integer golden model (:mod:`model.golden_lm`), its
  scales calibrated on the first ``--calib-bytes`` of the *training* split.

The split is read as ``--streams`` contiguous streams (each from a zero state, the state
carried through it), the layout of :func:`model.train.evaluate_bpc`, so every byte but the
first of each stream is scored with its whole left context. It also reports the golden
model's per-stage SQNR against the float student, layer by layer, each layer fed the float
model's own residual stream over the first ``--sqnr-bytes`` of the split.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .data import DEFAULT_ROOT, DataError, load_split
from .evaluate import (
    GOLDEN_BPC_RATIO_MAX, LM_STAGE_FLOORS_DB, _fmt_db, dequantize_trace, failed_stages,
    golden_trace, sqnr_db,
)
from .golden import STAGES
from .golden_lm import (
    GoldenLM, QuantizedLM, bits_per_byte, calibrate_lm, export_lm, residual_streams,
)
from .lm import BiMambaLM, student_from_teacher
from .lm_checkpoint import load_lm_model
from .progress import progress
from .quantize import QuantSpec, calibrate
from .train import evaluate_bpc

__all__ = [
    "SHIPPED", "CALIB_BYTES", "GOLDEN_CHUNK", "shipped_golden", "stream_rows", "golden_bits",
    "float_bits", "stage_sqnr", "sweep", "run", "main",
]

# The model trained on the corpus and kept in the repository (docs/real_model.md).
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare"

# Tokens per golden-model chunk: bounds the int64 intermediates to a few hundred MB.
GOLDEN_CHUNK = 4096

# Training bytes the golden model's scales are calibrated on (the start of the training split).
CALIB_BYTES = 4096


def shipped_golden(checkpoint: Path = SHIPPED, spec: QuantSpec | None = None,
                   calib_bytes: int = CALIB_BYTES, data_root: Path = DEFAULT_ROOT
                   ) -> tuple[BiMambaLM, QuantizedLM]:
    """The float student of ``checkpoint`` and its integer export, calibrated on the first
    ``calib_bytes`` of the training split (never on evaluation text).

    Raises
    ------
    DataError
        If the corpus has not been prepared (``make data``).
    """
    train = load_split("train", data_root)
    student = load_lm_model(Path(checkpoint) / "student.safetensors")
    return student, export_lm(student, spec or QuantSpec(), train[:calib_bytes])


def stream_rows(data: np.ndarray, streams: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of each of ``streams`` contiguous streams covering ``data``.

    Byte ``t + 1`` is the target of byte ``t``; the last stream may be shorter. This is the
    layout of :func:`model.train.evaluate_bpc` in ``stream`` mode.
    """
    n = len(data) - 1
    rows = max(1, min(streams, n))
    T = -(-n // rows)
    return [(data[r * T: min((r + 1) * T, n)].astype(np.int64),
             data[r * T + 1: min((r + 1) * T, n) + 1].astype(np.int64)) for r in range(rows)
            if r * T < n]


def golden_bits(g: GoldenLM, rows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Total bits of every target under the integer model (host-side float64 softmax)."""
    total = 0.0
    scale = g.q.logit_scale
    chunks = [(x, y, c) for x, y in rows for c in range(0, len(x), GOLDEN_CHUNK)]
    states = None
    for x, y, c in progress(chunks, "golden model"):
        if c == 0:
            states = g.initial_state()
        logits, states = g.sequence(x[c: c + GOLDEN_CHUNK], states)
        total += bits_per_byte(logits * scale, y[c: c + GOLDEN_CHUNK])
    return total


def float_bits(model: BiMambaLM, data: np.ndarray, streams: int, seq: int = 64) -> float:
    """Total bits of every target under a float model (float32), in the layout of
    :func:`stream_rows`: :func:`model.train.evaluate_bpc` in ``stream`` mode."""
    r = evaluate_bpc(model, data, seq=seq, batch=streams, mode="stream")
    return r["bpc"] * r["bytes"]


def stage_sqnr(student: BiMambaLM, q: QuantizedLM, tokens: np.ndarray) -> list[dict[str, float]]:
    """Per layer, SQNR (dB) of every golden stage against the float student on real text.

    Each layer gets the float model's own input stream, quantised to the residual format, so
    a layer's figures are its own and not the accumulated error of the layers before it.
    """
    from .evaluate import _reference_view

    streams = residual_streams(student, tokens)
    out = []
    for block, lq, u in zip(student.backbone.layers, q.layers, streams):
        ref = calibrate(block, u)
        got = dequantize_trace(lq, golden_trace(lq, lq.fmt["res"].quantize(u)))
        want = _reference_view(ref, u)
        out.append({k: sqnr_db(want[k], got[k]) for k in STAGES})
    return out


def run(checkpoint: Path, split: str, spec: QuantSpec, *, data_root: Path = DEFAULT_ROOT,
        max_bytes: int | None = None, calib_bytes: int = CALIB_BYTES, streams: int = 16,
        sqnr_bytes: int = 256) -> dict:
    """Score ``split`` with the four models; see the module docstring. Returns a JSON-able dict."""
    t0 = time.perf_counter()
    data = load_split(split, data_root)
    if max_bytes is not None:
        data = data[: max_bytes + 1]
    teacher = load_lm_model(checkpoint / "teacher.safetensors")
    student, q = shipped_golden(checkpoint, spec, calib_bytes, data_root)
    naive = student_from_teacher(teacher).eval()
    rows = stream_rows(data, streams)
    n = sum(len(y) for _, y in rows)

    bits = {name: float_bits(m, data, streams)
            for name, m in progress([("teacher", teacher), ("student", student),
                                     ("naive", naive)], "float models")}
    bits["golden"] = golden_bits(GoldenLM(q), rows)
    bpc = {k: v / n for k, v in bits.items()}
    sq = stage_sqnr(student, q, data[:sqnr_bytes])
    failed = [f"L{i}.{k}" for i, lay in enumerate(sq)
              for k in failed_stages(lay, LM_STAGE_FLOORS_DB)]
    if not bpc["golden"] <= GOLDEN_BPC_RATIO_MAX * bpc["student"]:
        failed.insert(0, f"golden bpc > {GOLDEN_BPC_RATIO_MAX} x student")
    return {
        "split": split, "bytes": n, "streams": len(rows), "bpc": bpc,
        "golden_over_student": bpc["golden"] / bpc["student"],
        "student_over_teacher": bpc["student"] / bpc["teacher"],
        "spec": asdict(spec), "calibration": f"first {calib_bytes} bytes of the training split",
        "sqnr_db": {"bytes": min(sqnr_bytes, len(data)), "layers": sq,
                    "floors": LM_STAGE_FLOORS_DB},
        "failed": failed,
        "checkpoint": str(checkpoint), "seconds": round(time.perf_counter() - t0, 1),
    }


def sweep(checkpoint: Path, widths: list[dict[str, int]], *, data_root: Path = DEFAULT_ROOT,
          max_bytes: int = 16384, calib_bytes: int = CALIB_BYTES, streams: int = 16,
          sqnr_bytes: int = 256) -> dict:
    """Golden bpc and per-stage SQNR for each ``QuantSpec`` override in ``widths``.

    The float model runs once over the calibration text (:func:`calibrate_lm`) and once over
    the evaluation bytes; each point re-quantises from those statistics.
    """
    data = load_split("test", data_root)[: max_bytes + 1]
    train = load_split("train", data_root)
    student = load_lm_model(Path(checkpoint) / "student.safetensors")
    cal = calibrate_lm(student, train[:calib_bytes])
    rows = stream_rows(data, streams)
    n = sum(len(y) for _, y in rows)
    student_bpc = float_bits(student, data, streams) / n
    points = []
    for w in progress(widths, "sweep"):
        spec = replace(QuantSpec(), **w)
        q = export_lm(student, spec, calib=cal)
        sq = stage_sqnr(student, q, data[:sqnr_bytes])
        bpc = golden_bits(GoldenLM(q), rows) / n
        points.append({**w, "golden_bpc": bpc, "golden_over_student": bpc / student_bpc,
                       "mixer_out_db_min": min(lay["mixer_out"] for lay in sq),
                       "out_norm_db_min": min(lay["out_norm"] for lay in sq)})
    return {"split": "test", "bytes": n, "student_bpc": student_bpc, "points": points}


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
        lines.append(f"| {k} | " + " | ".join(_fmt_db(lay[k]).strip()
                                             for lay in r["sqnr_db"]["layers"])
                     + f" | {LM_STAGE_FLOORS_DB[k]:g} |")
    verdict = "PASS" if not r["failed"] else "FAIL: " + ", ".join(r["failed"])
    lines += ["", f"golden <= {GOLDEN_BPC_RATIO_MAX} x student bpc and every stage of every "
              f"layer at or above its floor: {verdict} ({r['seconds']} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m model.evaluate",
        description="Bits per character of the shipped (or given) model: teacher, student, "
                    "naive binarisation, and the integer golden model, on the same bytes.")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED,
                    help="folder holding teacher.safetensors and student.safetensors "
                         "(default: the shipped checkpoints/shakespeare)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--data-root", type=Path, default=DEFAULT_ROOT,
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
            if not (args.checkpoint / f).is_file():
                raise ValueError(f"--checkpoint must be a folder holding {f}, not {args.checkpoint}")
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
            r = sweep(args.checkpoint, points, data_root=args.data_root,
                      max_bytes=args.max_bytes or 16384, calib_bytes=args.calib_bytes,
                      streams=args.streams, sqnr_bytes=args.sqnr_bytes)
            print(json.dumps(r, indent=2) if args.json else _sweep_markdown(r))
            return 0
        result = run(args.checkpoint, args.split, spec, data_root=args.data_root,
                     max_bytes=args.max_bytes, calib_bytes=args.calib_bytes,
                     streams=args.streams, sqnr_bytes=args.sqnr_bytes)
    except (ValueError, DataError) as e:
        ap.error(str(e))
    print(json.dumps(result, indent=2) if args.json else _markdown(result))
    return 1 if (args.check and result["failed"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
