"""``python -m model.train``: train the float teacher, distil the Bi-Mamba student, or binarise
the teacher naively (:mod:`model.train.loop`; the recipe is in docs/real_model.md)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from model.data.corpus import DEFAULT_ROOT
from model.reference.lm import LM_CONFIG
from model.train.loop import MODELS, run

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train the float teacher, distil the Bi-Mamba student, or binarise the "
                    "teacher naively, on the byte-level Shakespeare split.")
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="teacher checkpoint (.safetensors), required for student and naive")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.1, help="AdamW weight decay on matrices")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=0.0,
                    help="student: weight of the data cross-entropy added to the KL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="default: cuda if available, else cpu")
    ap.add_argument("--d-model", type=int, default=LM_CONFIG.d_model)
    ap.add_argument("--n-layer", type=int, default=LM_CONFIG.n_layer)
    ap.add_argument("--d-state", type=int, default=LM_CONFIG.d_state)
    ap.add_argument("--headdim", type=int, default=LM_CONFIG.headdim)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-seqs", type=int, default=200,
                    help="validation windows of --seq bytes for checkpoint selection")
    ap.add_argument("--eval-batch", type=int, default=16,
                    help="streams (rows) per forward pass of the final evaluation")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_ROOT,
                    help="holds shakespeare/{train,val,test}.bin (make data)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop training after this many seconds (the best checkpoint is kept)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    return ap


def _check_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    for name in ("steps", "warmup"):
        if getattr(a, name) < 0:
            ap.error(f"--{name} must be >= 0, not {getattr(a, name)}")
    for name in ("batch", "seq", "eval_every", "eval_seqs", "eval_batch"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer, "
                     f"not {getattr(a, name)}")
    if not a.lr > 0:
        ap.error(f"--lr must be > 0, not {a.lr}")
    if a.model in ("student", "naive") and a.teacher is None:
        ap.error(f"--teacher is required for --model {a.model}")
    if a.model == "teacher" and a.teacher is not None:
        ap.error("--teacher is only for --model student or naive")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")


def main(argv: list[str] | None = None) -> int:
    ap = _build_parser()
    a = ap.parse_args(argv)
    _check_args(ap, a)
    command = "python -m model.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return run(a, command)
    except ValueError as e:
        ap.error(str(e))


if __name__ == "__main__":
    raise SystemExit(main())
