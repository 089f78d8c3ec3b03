"""Bits per character of the shipped language model: float teacher, student, naive, and golden.

``python -m model.evaluate`` (``--checkpoint DIR --split test --json``) scores one split of the
Shakespeare corpus with four models, on exactly the same bytes:

* ``teacher``: the float Mamba-2 model (``DIR/teacher.safetensors``);
* ``student``: the float Bi-Mamba model (``DIR/student.safetensors``);
* ``naive``: the teacher binarised with FBI 'xnor' alpha/beta and no training;
* ``golden``: the student through the integer golden model (:mod:`model.golden.lm`), its
  scales calibrated on the first ``--calib-bytes`` of the *training* split.

The split is read as ``--streams`` contiguous streams (each from a zero state, the state
carried through it), the layout of :func:`model.train.loop.evaluate_bpc`, so every byte but the
first of each stream is scored with its whole left context. It also reports the golden
model's per-stage SQNR against the float student, layer by layer, each layer fed the float
model's own residual stream over the first ``--sqnr-bytes`` of the split.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from model.data.corpus import DEFAULT_ROOT, load_split
from model.evaluate.sqnr import (
    GOLDEN_BPC_RATIO_MAX, LM_STAGE_FLOORS_DB, dequantize_trace, failed_stages,
    golden_trace, reference_view, sqnr_db,
)
from model.golden.layer import STAGES
from model.golden.lm import (
    GoldenLM, QuantizedLM, bits_per_byte, calibrate_lm, export_lm, residual_streams,
)
from model.reference.lm import BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import check_lm, load_lm_model
from model.progress import progress, stage
from model.golden.quantize import QuantSpec, calibrate
from model.paths import SHIPPED
from model.train.loop import evaluate_bpc

__all__ = [
    "SHIPPED", "CALIB_BYTES", "GOLDEN_CHUNK", "shipped_golden", "stream_rows", "golden_bits",
    "float_bits", "stage_sqnr", "sweep", "run",
]

# SHIPPED: the model trained on the corpus and kept in the repository (docs/real_model.md),
# resolved from the package (model.paths), so it is found from any folder.

PROG = "model.evaluate"

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
    student = load_lm_model(Path(checkpoint) / "student.safetensors", binary=True)
    return student, export_lm(student, spec or QuantSpec(), train[:calib_bytes])


def stream_rows(data: np.ndarray, streams: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of each of ``streams`` contiguous streams covering ``data``.

    Byte ``t + 1`` is the target of byte ``t``; the last stream may be shorter. This is the
    layout of :func:`model.train.loop.evaluate_bpc` in ``stream`` mode.
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
    :func:`stream_rows`: :func:`model.train.loop.evaluate_bpc` in ``stream`` mode."""
    r = evaluate_bpc(model, data, seq=seq, batch=streams, mode="stream")
    return r["bpc"] * r["bytes"]


def stage_sqnr(student: BiMambaLM, q: QuantizedLM, tokens: np.ndarray) -> list[dict[str, float]]:
    """Per layer, SQNR (dB) of every golden stage against the float student on real text.

    Each layer gets the float model's own input stream, quantised to the residual format, so
    a layer's figures are its own and not the accumulated error of the layers before it.
    """

    streams = residual_streams(student, tokens)
    out = []
    for block, lq, u in progress(list(zip(student.backbone.layers, q.layers, streams)),
                                 "per-stage SQNR, layers"):
        ref = calibrate(block, u)
        got = dequantize_trace(lq, golden_trace(lq, lq.fmt["res"].quantize(u)))
        want = reference_view(ref, u)
        out.append({k: sqnr_db(want[k], got[k]) for k in STAGES})
    return out


def run(checkpoint: Path, split: str, spec: QuantSpec, *, data_root: Path = DEFAULT_ROOT,
        max_bytes: int | None = None, calib_bytes: int = CALIB_BYTES, streams: int = 16,
        sqnr_bytes: int = 256) -> dict:
    """Score ``split`` with the four models; see the module docstring. Returns a JSON-able dict.

    Raises
    ------
    CheckpointError
        (a ValueError) If a checkpoint is not a valid teacher / student of one shape; raised
        before any model runs.
    DataError
        If a split is missing or not the one ``make data`` recorded; raised first.
    """
    t0 = time.perf_counter()
    data = load_split(split, data_root)
    if max_bytes is not None:
        data = data[: max_bytes + 1]
    teacher_path = Path(checkpoint) / "teacher.safetensors"
    teacher = load_lm_model(teacher_path, binary=False)
    # The student is compared with the teacher and its naive binarisation: the same shape.
    check_lm(Path(checkpoint) / "student.safetensors", binary=True, cfg=teacher.cfg,
             cfg_source=f"the teacher's, {teacher_path}")
    with stage(f"{PROG}: calibrating the integer model on training text"):
        student, q = shipped_golden(checkpoint, spec, calib_bytes, data_root)
    naive = student_from_teacher(teacher).eval()
    rows = stream_rows(data, streams)
    n = sum(len(y) for _, y in rows)

    with stage(f"{PROG}: bits per character of the float models"):
        bits = {name: float_bits(m, data, streams)
                for name, m in progress([("teacher", teacher), ("student", student),
                                         ("naive", naive)], "float models")}
    with stage(f"{PROG}: bits per character of the golden model"):
        bits["golden"] = golden_bits(GoldenLM(q), rows)
    bpc = {k: v / n for k, v in bits.items()}
    with stage(f"{PROG}: per-stage SQNR"):
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
    student = load_lm_model(Path(checkpoint) / "student.safetensors", binary=True)
    with stage(f"{PROG}: calibrating the integer model on training text"):
        cal = calibrate_lm(student, train[:calib_bytes])
    rows = stream_rows(data, streams)
    n = sum(len(y) for _, y in rows)
    with stage(f"{PROG}: bits per character of the float student"):
        student_bpc = float_bits(student, data, streams) / n
    points = []
    for w in progress(widths, f"{PROG}: sweep"):
        spec = replace(QuantSpec(), **w)
        q = export_lm(student, spec, calib=cal)
        sq = stage_sqnr(student, q, data[:sqnr_bytes])
        bpc = golden_bits(GoldenLM(q), rows) / n
        points.append({**w, "golden_bpc": bpc, "golden_over_student": bpc / student_bpc,
                       "mixer_out_db_min": min(lay["mixer_out"] for lay in sq),
                       "out_norm_db_min": min(lay["out_norm"] for lay in sq)})
    return {"split": "test", "bytes": n, "student_bpc": student_bpc, "points": points}
