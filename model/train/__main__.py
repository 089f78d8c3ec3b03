"""``python -m model.train``: train the float teacher, distil the Bi-Mamba student, or binarise
the teacher naively (:mod:`model.train.loop`; the recipe is in docs/real_model.md).

Every argument is checked before the first step: numbers against their ranges, the model's
shape (``--headdim`` must divide ``2 * --d-model``), the corpus (present, as ``make data``
recorded it, each split longer than ``--seq``), the teacher (a valid float checkpoint, of the
shape given if one is given) and ``--out`` (a folder that can be written). A flag the chosen
``--model`` cannot honour is refused: the training flags with ``naive`` (no step is taken),
``--ce-weight`` with ``teacher``. Each refusal is one
line, ``python -m model.train: error: ...``, with exit status 2; so is a run whose loss becomes
NaN or infinite."""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from model.cli import (
    SEED_MAX, CliParser, check_float, check_int, fill_defaults, path_arg, refuse_unused,
    writable_folder_problem,
)
from model.config import BiMambaConfig
from model.data.corpus import DEFAULT_ROOT, SPLITS, DataError, load_split, split_path
from model.reference.checkpoint import CheckpointError
from model.reference.lm import BYTE_VOCAB, LM_CONFIG
from model.reference.lm_checkpoint import check_lm
from model.train.loop import MODELS, TrainingDiverged, run

__all__ = ["main"]

# Bounds of the integer options: wide enough for any run this model is trained with, narrow
# enough that a typo is caught (the SSD form's memory grows with the square of --seq).
MAX_SEQ = 8192
MAX_BATCH = 65536
MAX_STEPS = 10**9
# Shape options: flag -> BiMambaConfig field.
SHAPE_FLAGS = {"--d-model": "d_model", "--n-layer": "n_layer", "--d-state": "d_state",
               "--headdim": "headdim"}


def _build_parser() -> argparse.ArgumentParser:
    ap = CliParser(
        prog="python -m model.train",
        description="Train the float teacher, distil the Bi-Mamba student, or binarise the "
                    "teacher naively, on the byte-level Shakespeare split.")
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--out", type=path_arg, required=True, help="output folder")
    ap.add_argument("--teacher", type=path_arg, default=None,
                    help="teacher checkpoint (.safetensors), required for student and naive")
    ap.add_argument("--steps", type=int, default=None, help="default 4000")
    ap.add_argument("--batch", type=int, default=None, help="default 64")
    ap.add_argument("--seq", type=int, default=256,
                    help=f"window length in bytes, 1..{MAX_SEQ}, shorter than every split")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate, > 0 (default 2e-3)")
    ap.add_argument("--warmup", type=int, default=None, help="default 200")
    ap.add_argument("--wd", type=float, default=None,
                    help="AdamW weight decay on matrices, >= 0 (default 0.1)")
    ap.add_argument("--dropout", type=float, default=None, help="in [0, 1) (default 0.1)")
    ap.add_argument("--grad-clip", type=float, default=None,
                    help="gradient norm clip, >= 0 (0: off; default 1)")
    ap.add_argument("--ce-weight", type=float, default=None,
                    help="student: weight of the data cross-entropy added to the KL, >= 0 "
                         "(default 0)")
    ap.add_argument("--seed", type=int, default=0, help=f"0..{SEED_MAX}")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="default: cuda if available, else cpu")
    for flag, name in SHAPE_FLAGS.items():
        ap.add_argument(flag, type=int, default=None,
                        help=f"teacher: default {getattr(LM_CONFIG, name)}; student and naive: "
                             f"the teacher's (if given, it must be the teacher's)")
    ap.add_argument("--eval-every", type=int, default=None, help="default 250")
    ap.add_argument("--eval-seqs", type=int, default=200,
                    help="validation windows of --seq bytes for checkpoint selection")
    ap.add_argument("--eval-batch", type=int, default=16,
                    help="streams (rows) per forward pass of the final evaluation")
    ap.add_argument("--data-root", type=path_arg, default=DEFAULT_ROOT,
                    help="holds shakespeare/{train,val,test}.bin (make data; default: "
                         "build/data of the repository)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop training after this many seconds, > 0 (the best checkpoint is "
                         "kept)")
    ap.add_argument("--compile", action="store_true", default=None,
                    help="torch.compile the training forward")
    return ap


# Flags that only training honours, with their defaults (``--model naive`` takes no step).
TRAINING_DEFAULTS: dict[str, object] = {
    "--steps": 4000, "--batch": 64, "--lr": 2e-3, "--warmup": 200, "--wd": 0.1, "--dropout": 0.1,
    "--grad-clip": 1.0, "--ce-weight": 0.0, "--eval-every": 250, "--compile": False,
}


def _check_mode(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Refuse the flags the chosen ``--model`` cannot honour, then fill the defaults."""
    if a.model == "naive":
        refuse_unused(ap, a, {f: "the teacher binarised, no training steps"
                              for f in [*TRAINING_DEFAULTS, "--time-limit"]}, "--model naive")
    elif a.model == "teacher":
        refuse_unused(ap, a, {"--ce-weight": "it weights the data term of the student's "
                                             "distillation loss"}, "--model teacher")
    fill_defaults(a, TRAINING_DEFAULTS)


def _check_numbers(a: argparse.Namespace) -> None:
    check_int("--steps", a.steps, 0, MAX_STEPS)
    check_int("--warmup", a.warmup, 0, MAX_STEPS)
    check_int("--batch", a.batch, 1, MAX_BATCH)
    check_int("--seq", a.seq, 1, MAX_SEQ)
    check_int("--eval-every", a.eval_every, 1, MAX_STEPS)
    check_int("--eval-seqs", a.eval_seqs, 1, 10**6)
    check_int("--eval-batch", a.eval_batch, 1, MAX_BATCH)
    check_int("--seed", a.seed, 0, SEED_MAX)
    check_float("--lr", a.lr, lo=0, lo_open=True)
    check_float("--wd", a.wd, lo=0)
    check_float("--dropout", a.dropout, lo=0, hi=1, hi_open=True)
    check_float("--grad-clip", a.grad_clip, lo=0)
    check_float("--ce-weight", a.ce_weight, lo=0)
    if a.time_limit is not None:
        check_float("--time-limit", a.time_limit, lo=0, lo_open=True)
    for flag, name in SHAPE_FLAGS.items():
        v = getattr(a, name)
        if v is not None:
            check_int(flag, v, 1, 1 << 16)


def _shape(a: argparse.Namespace) -> BiMambaConfig:
    """The model's shape: the flags (teacher) or the teacher checkpoint's, checked."""
    given = {name: getattr(a, name) for name in SHAPE_FLAGS.values()
             if getattr(a, name) is not None}
    if a.model == "teacher":
        shape = {name: getattr(LM_CONFIG, name) for name in SHAPE_FLAGS.values()} | given
        d_inner = LM_CONFIG.expand * shape["d_model"]
        if d_inner % shape["headdim"]:
            raise ValueError(f"--headdim must divide d_inner = {LM_CONFIG.expand} * --d-model "
                             f"= {d_inner}, not {shape['headdim']}")
        return BiMambaConfig(**shape, vocab_size=BYTE_VOCAB)
    if not a.teacher.exists():
        raise ValueError(f"--teacher: {a.teacher} not found (expected the teacher's "
                         f".safetensors file)")
    try:
        cfg = check_lm(a.teacher, binary=False)
    except CheckpointError as e:
        raise ValueError(f"--teacher: {e}") from None
    if cfg.vocab_size > BYTE_VOCAB:
        raise ValueError(f"--teacher: {a.teacher}: metadata 'config': vocab_size expected at "
                         f"most {BYTE_VOCAB} (a byte-level model), found {cfg.vocab_size}")
    for flag, name in SHAPE_FLAGS.items():
        if name in given and given[name] != getattr(cfg, name):
            raise ValueError(f"{flag} {given[name]} is not the teacher's {name}, "
                             f"{getattr(cfg, name)} ({a.teacher}); leave {flag} out to take "
                             f"the teacher's shape")
    return cfg


def _check_data(a: argparse.Namespace) -> None:
    """Every split present, as `make data` recorded it, and longer than a window."""
    for name in SPLITS:
        data = load_split(name, a.data_root)
        # Training windows and the validation subset's are --seq + 1 bytes.
        if len(data) < a.seq + 1:
            raise ValueError(f"--seq must be shorter than every split: the {name} split "
                             f"({split_path(name, a.data_root)}) holds {len(data):,} bytes, "
                             f"--seq is {a.seq}")


def _check_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Every argument, before any work; a usage error (exit status 2) at the first bad one."""
    if a.model in ("student", "naive") and a.teacher is None:
        ap.error(f"--teacher is required for --model {a.model}")
    if a.model == "teacher" and a.teacher is not None:
        ap.error("--teacher is only for --model student or naive")
    _check_mode(ap, a)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    try:
        _check_numbers(a)
        cfg = _shape(a)
        _check_data(a)
    except (ValueError, DataError) as e:
        ap.error(str(e))
    problem = writable_folder_problem(a.out)
    if problem:
        ap.error(f"--out: {a.out} is not a writable folder ({problem})")
    for name in SHAPE_FLAGS.values():  # the shape the run uses, recorded in its summary
        setattr(a, name, getattr(cfg, name))


def main(argv: list[str] | None = None) -> int:
    ap = _build_parser()
    a = ap.parse_args(argv)
    _check_args(ap, a)
    command = "python -m model.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return run(a, command)
    except (ValueError, DataError, TrainingDiverged) as e:
        ap.error(str(e))


if __name__ == "__main__":
    raise SystemExit(main())
