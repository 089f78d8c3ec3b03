"""Train the byte-level teacher and the Bi-Mamba student on the Shakespeare split.

``python -m model.train --model teacher|student|naive --out DIR ...``

* ``teacher``: a float Mamba-2 LM (:class:`~model.reference.lm.BiMambaLM` with ``binary=False``)
  trained from the Mamba-2 initialisation with cross-entropy on next bytes.
* ``student``: the Bi-Mamba LM (FBI-Linear in_proj/out_proj) initialised from a trained
  teacher (``--teacher``: latent weights copied, FBI 'xnor' alpha/beta) and trained by
  distillation: the loss is KL(teacher || student) over the next-byte distribution at every
  position, plus ``--ce-weight`` times the cross-entropy on the data (0 by default: pure
  distillation, Bi-Mamba's recipe). The teacher runs in eval mode, without gradients.
* ``naive``: the teacher binarised with the same init and no training (the post-training
  binarisation baseline); only evaluated and saved.

Training samples windows of ``--seq + 1`` bytes at uniformly random offsets of the training
split (seeded), uses AdamW with a linear warm-up and a cosine decay to a tenth of ``--lr``,
gradient clipping, and bf16 autocast on CUDA. Every ``--eval-every`` steps the validation
bits per byte (bpc) is measured on a fixed subset (``--eval-seqs`` windows evenly spaced over
the validation split, each from a zero state) and the best model so far is written to
``DIR/<model>.safetensors`` (:mod:`model.reference.lm_checkpoint` format). At the end the best
checkpoint is read back and evaluated over the whole validation and test splits (see
:func:`evaluate_bpc`), so the reported numbers are those of the shipped file. Outputs in
``DIR``: ``<model>.safetensors``, ``log.csv`` (step, train_loss, val_bpc, lr, seconds) and
``summary.json``. A loss (or validation bpc) that becomes NaN or infinite stops the run with
:class:`TrainingDiverged`, naming the step and the checkpoint kept; no summary is written.

Imports only torch, numpy, safetensors, tqdm and this package, so it runs on a machine that
has those but not this project's environment (``PYTHONPATH=. python3 -m model.train ...``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import BiMambaConfig
from model.data.corpus import load_split
from model.reference.lm import BYTE_VOCAB, BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import load_lm_model, save_lm
from model.reference.layer import FBILinear
from model.progress import Bar, progress

__all__ = [
    "MODELS",
    "EVAL_MODES",
    "lr_at",
    "param_groups",
    "sample_batch",
    "subset_windows",
    "nll_sum",
    "evaluate_bpc",
    "distill_loss",
    "TrainingDiverged",
    "run",
]

MODELS = ("teacher", "student", "naive")
EVAL_MODES = ("stream", "windows")
LN2 = math.log(2.0)


def lr_at(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, then cosine to ``min_ratio * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if steps <= warmup:
        return lr
    frac = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """AdamW groups: weight decay on the matrices (embedding, projections, conv), not on
    vectors (norms, dt_bias, A_log, D, conv bias) nor on FBI alpha/beta, which are scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if name.endswith("weight") and p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def sample_batch(data: Tensor, batch: int, seq: int, rng: np.random.Generator
                 ) -> tuple[Tensor, Tensor]:
    """Random training windows.

    Parameters
    ----------
    data : Tensor of uint8, shape (n,)
        A split, on the training device.
    batch, seq : int
    rng : numpy Generator
        Draws the offsets (uniform over every window that fits).

    Returns
    -------
    x, y : LongTensor, shape (batch, seq)
        Inputs and next-byte targets.
    """
    n = data.shape[0]
    if n < seq + 1:
        raise ValueError(f"seq must be < the split length {n}, not {seq}")
    off = torch.from_numpy(rng.integers(0, n - seq, size=batch)).to(data.device)
    idx = off[:, None] + torch.arange(seq + 1, device=data.device)
    w = data[idx].long()
    return w[:, :-1], w[:, 1:]


def subset_windows(data: np.ndarray, n_windows: int, seq: int) -> tuple[Tensor, Tensor]:
    """``n_windows`` windows evenly spaced over ``data`` (deterministic), as (x, y).

    Returns
    -------
    x, y : LongTensor, shape (n_windows', seq)
        n_windows' = min(n_windows, len(data) - seq) windows, inputs and targets.
    """
    last = len(data) - seq - 1
    if last < 0:
        raise ValueError(f"seq must be < the split length {len(data)}, not {seq}")
    off = np.unique(np.linspace(0, last, n_windows).round().astype(np.int64))
    w = torch.from_numpy(np.stack([data[o:o + seq + 1] for o in off]).astype(np.int64))
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def nll_sum(model: BiMambaLM, x: Tensor, y: Tensor, mask: Tensor | None, seq: int,
            batch: int, carry: bool, device: torch.device) -> tuple[float, int]:
    """Summed next-byte negative log-likelihood (nats) over the unmasked positions.

    Parameters
    ----------
    x, y : LongTensor, shape (S, T)
        S rows of inputs and targets.
    mask : BoolTensor, shape (S, T), optional
        Positions to score (all if omitted).
    seq : int
        Length of the windows each row is cut into.
    batch : int
        Rows per forward pass.
    carry : bool
        True: each row is one stream and the state is carried from window to window (the
        model reads the whole row, as a decoder would). False: each window starts from zero.
    device : torch.device

    Returns
    -------
    nll : float
    count : int
        Number of scored positions.
    """
    if mask is None:
        mask = torch.ones_like(y, dtype=torch.bool)
    # FBI-Linear caches its weight for inference, keyed by version counters that some
    # optimizers do not bump; drop the caches so an evaluation between optimizer steps can
    # never see a stale weight.
    for m in model.modules():
        if isinstance(m, FBILinear):
            m.clear_cache()
    total, count = 0.0, 0
    # Row blocks of ``batch`` rows, each read window by window (the state carried or not).
    windows = [(r0, c0) for r0 in range(0, x.shape[0], batch)
               for c0 in range(0, x.shape[1], seq)]
    xs = ys = ms = states = None
    for r0, c0 in progress(windows, "bits per character, windows"):
        if c0 == 0:
            xs, ys, ms = (t[r0:r0 + batch].to(device) for t in (x, y, mask))
            states = None
        logits, states = model(xs[:, c0:c0 + seq], states if carry else None)
        # At least float32 for the log-softmax; float64 models keep float64.
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        nll = F.cross_entropy(logits.flatten(0, 1), ys[:, c0:c0 + seq].flatten(),
                              reduction="none")
        m = ms[:, c0:c0 + seq].flatten()
        total += float(nll[m].double().sum())
        count += int(m.sum())
    return total, count


def evaluate_bpc(model: BiMambaLM, data: np.ndarray, seq: int = 256, batch: int = 16,
                 mode: str = "stream", device: torch.device | str = "cpu") -> dict:
    """Bits per byte of ``model`` over a whole split: every byte after the first is scored.

    Parameters
    ----------
    model : BiMambaLM
        Evaluated in eval mode, float32 as given (no autocast).
    data : ndarray of uint8, shape (n,)
    seq : int
        Window length of each forward pass.
    batch : int
        ``stream``: the split is cut into ``batch`` contiguous streams read in parallel, each
        from a zero state with the state carried across windows, so only the first byte of
        each stream is read without context (what a decoder reading the text computes).
        ``windows``: windows per forward pass.
    mode : str
        ``stream`` or ``windows`` (non-overlapping windows of ``seq`` bytes, each from a zero
        state, as in training).
    device : torch.device or str

    Returns
    -------
    dict
        ``bpc``, ``bytes`` (scored), ``mode``, ``seq``.

    Raises
    ------
    ValueError
        If ``mode`` is unknown or ``data`` has fewer than 2 bytes.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {', '.join(EVAL_MODES)}, not {mode!r}")
    n = len(data) - 1
    if n < 1:
        raise ValueError(f"data must hold at least 2 bytes, not {len(data)}")
    if mode == "stream":
        rows = max(1, min(batch, n))
        T = -(-n // rows)
    else:
        rows, T = -(-n // seq), seq
    pad = rows * T - n
    inp = np.concatenate([data[:-1], np.zeros(pad, np.uint8)]).astype(np.int64)
    tgt = np.concatenate([data[1:], np.zeros(pad, np.uint8)]).astype(np.int64)
    mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    x, y, m = (torch.from_numpy(a.reshape(rows, T)) for a in (inp, tgt, mask))
    was_training = model.training
    model.eval()
    try:
        nll, count = nll_sum(model, x, y, m, seq, batch, mode == "stream",
                             torch.device(device))
    finally:
        model.train(was_training)
    return {"bpc": nll / count / LN2, "bytes": count, "mode": mode, "seq": seq}


def distill_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over positions of KL(teacher || student) on the next-byte distribution, in nats.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor, shape (..., V)
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s = F.log_softmax(student_logits.to(dtype).flatten(0, -2), dim=-1)
    t = F.log_softmax(teacher_logits.to(dtype).flatten(0, -2), dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def _subset_bpc(model: BiMambaLM, xy: tuple[Tensor, Tensor], seq: int, batch: int,
                device: torch.device) -> float:
    was_training = model.training
    model.eval()
    try:
        nll, count = nll_sum(model, xy[0], xy[1], None, seq, batch, False, device)
    finally:
        model.train(was_training)
    return nll / count / LN2


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class TrainingDiverged(RuntimeError):
    """The training loss (or the validation bits per character) became NaN or infinite."""


def run(a: argparse.Namespace, command: str) -> int:
    """Train (or binarise) as the options ``a`` of ``python -m model.train`` say; write the
    checkpoint, ``log.csv`` and the summary into ``a.out``. ``command`` is recorded in the
    summary.

    The loss of every step is checked (on a GPU every 25 steps and at every evaluation, so
    the device is not waited for each step): a NaN or infinite loss, or validation bits per
    character, stops the run with :class:`TrainingDiverged`, naming the step and what was
    kept, and no summary is written.

    Raises
    ------
    CheckpointError
        (a ValueError) If the teacher checkpoint is not a valid float model.
    TrainingDiverged
        If the loss or the validation bpc becomes non-finite.
    """
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t_start = time.perf_counter()

    splits = {name: load_split(name, a.data_root) for name in ("train", "val", "test")}
    train_data = torch.from_numpy(splits["train"]).to(device)
    val_xy = subset_windows(splits["val"], a.eval_seqs, a.seq)

    teacher: BiMambaLM | None = None
    if a.model == "teacher":
        cfg = BiMambaConfig(d_model=a.d_model, n_layer=a.n_layer, d_state=a.d_state,
                            headdim=a.headdim, vocab_size=BYTE_VOCAB)
        model = BiMambaLM(cfg, binary=False, dropout=a.dropout).init_weights(a.seed)
    else:
        teacher = load_lm_model(a.teacher, binary=False).to(device).eval()
        teacher.requires_grad_(False)
        cfg = teacher.cfg
        model = student_from_teacher(teacher, dropout=a.dropout)
    model.to(device)
    steps = 0 if a.model == "naive" else a.steps
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else nullcontext())

    def train_logits(x: Tensor) -> Tensor:
        return model(x)[0]  # the states are not needed in training

    fwd = torch.compile(train_logits) if a.compile else train_logits

    a.out.mkdir(parents=True, exist_ok=True)
    ckpt = a.out / f"{a.model}.safetensors"
    log_path = a.out / "log.csv"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{a.model}: {n_params:,} parameters, {cfg}, device {device}", flush=True)

    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=a.lr, betas=(0.9, 0.95)
                            ) if steps else None
    best = (math.inf, -1)
    # Losses stay on the device between checks: reading one back every step would wait for
    # the GPU each time (on the CPU there is nothing to wait for, so every step is checked).
    losses: list[Tensor] = []
    loss_steps: list[int] = []
    check_every = 1 if device.type == "cpu" else 25

    def diverged(what: str, step: int) -> TrainingDiverged:
        kept = (f"the last checkpoint, step {best[1]} (val_bpc {best[0]:.4f}), is kept in "
                f"{ckpt}" if best[1] >= 0 else "no checkpoint was written")
        return TrainingDiverged(
            f"training diverged: {what} at step {step} (--lr {a.lr:g}, --warmup {a.warmup}, "
            f"--grad-clip {a.grad_clip:g}); {kept}, no summary was written; lower --lr, "
            f"raise --warmup" + (" or set --grad-clip > 0" if not a.grad_clip > 0 else ""))

    def check_losses() -> None:
        if not losses:
            return
        finite = torch.isfinite(torch.stack(losses))
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            raise diverged(f"the training loss is {float(losses[i])}", loss_steps[i])

    t_train = time.perf_counter()
    step = 0
    bar = Bar(a.model, total=steps, unit="step")
    with bar, open(log_path, "w", newline="") as f_log:
        log = csv.writer(f_log)
        log.writerow(["step", "train_loss", "val_bpc", "lr", "seconds"])

        def evaluate(step: int, lr: float) -> None:
            nonlocal best
            check_losses()
            bpc = _subset_bpc(model, val_xy, a.seq, a.eval_batch * 4, device)
            train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
            losses.clear()
            loss_steps.clear()
            seconds = time.perf_counter() - t_train
            log.writerow([step, f"{train_loss:.5f}", f"{bpc:.5f}", f"{lr:.3e}",
                          f"{seconds:.1f}"])
            f_log.flush()
            if not math.isfinite(bpc):
                raise diverged(f"the validation bits per character are {bpc}", step)
            mark = ""
            if bpc < best[0] or best[1] < 0:  # the first evaluation always writes a file
                best = (bpc, step)
                save_lm(model, ckpt)
                mark = " *"
            bar.write(f"step {step:5d}  train_loss {train_loss:.4f}  val_bpc {bpc:.4f}  "
                      f"lr {lr:.2e}  {seconds:6.1f} s{mark}")

        evaluate(0, lr_at(0, a.lr, a.warmup, steps) if steps else 0.0)
        model.train()
        for step in range(steps):
            lr = lr_at(step, a.lr, a.warmup, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = sample_batch(train_data, a.batch, a.seq, rng)
            with amp:
                logits = fwd(x)
                if teacher is None:
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                else:
                    with torch.no_grad():
                        t_logits, _ = teacher(x)
                    loss = distill_loss(logits, t_logits)
                    if a.ce_weight:
                        loss = loss + a.ce_weight * F.cross_entropy(
                            logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
            opt.step()
            losses.append(loss.detach())
            loss_steps.append(step + 1)
            if (step + 1) % check_every == 0:
                check_losses()
            bar.update()
            if step % 20 == 0:
                bar.set_postfix(f"loss {float(losses[-1]):.3f}, best val_bpc {best[0]:.3f}")
            timed_out = a.time_limit is not None and time.perf_counter() - t_train > a.time_limit
            if (step + 1) % a.eval_every == 0 or step + 1 == steps or timed_out:
                evaluate(step + 1, lr)
            if timed_out:
                bar.write(f"time limit of {a.time_limit} s reached after {step + 1} steps")
                break
        steps_done = step + 1 if steps else 0
    train_seconds = time.perf_counter() - t_train

    # The reported numbers are those of the file: read it back (FP16, packed signs).
    final = load_lm_model(ckpt).to(device)
    t_eval = time.perf_counter()
    final_evals = {
        "val_bpc_subset": lambda: _subset_bpc(final, val_xy, a.seq, a.eval_batch * 4, device),
        "val": lambda: evaluate_bpc(final, splits["val"], a.seq, a.eval_batch, "stream",
                                    device),
        "test": lambda: evaluate_bpc(final, splits["test"], a.seq, a.eval_batch, "stream",
                                     device),
        "val_windows": lambda: evaluate_bpc(final, splits["val"], a.seq, a.eval_batch * 4,
                                            "windows", device),
        "test_windows": lambda: evaluate_bpc(final, splits["test"], a.seq, a.eval_batch * 4,
                                             "windows", device),
    }
    results = {k: f() for k, f in progress(list(final_evals.items()), "final evaluation")}
    eval_seconds = time.perf_counter() - t_eval
    summary = {
        "model": a.model,
        "config": asdict(cfg),
        "parameters": n_params,
        "val_bpc": results["val"]["bpc"],
        "test_bpc": results["test"]["bpc"],
        "val_bpc_windows": results["val_windows"]["bpc"],
        "test_bpc_windows": results["test_windows"]["bpc"],
        "val_bpc_subset": results["val_bpc_subset"],
        "val_bytes": results["val"]["bytes"],
        "test_bytes": results["test"]["bytes"],
        "best_step": best[1],
        "steps": steps_done,
        "tokens": steps_done * a.batch * a.seq,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "max_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                           if device.type == "cuda" else None),
        "torch": torch.__version__,
        "seed": a.seed,
        "command": command,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "loss": ("cross-entropy" if a.model == "teacher" else
                 "none" if a.model == "naive" else
                 "KL(teacher || student)" + (f" + {a.ce_weight} * cross-entropy"
                                             if a.ce_weight else "")),
        "teacher_sha256": _sha256(a.teacher) if a.teacher is not None else None,
        "checkpoint": str(ckpt),
    }
    split_json = Path(a.data_root) / "shakespeare" / "split.json"
    if split_json.is_file():
        summary["split_sha256"] = {k: v["sha256"] for k, v in
                                   json.loads(split_json.read_text())["splits"].items()}
    # Re-save the selected model with its summary in the metadata (same tensors).
    summary["checkpoint_bytes"] = save_lm(final, ckpt, {"train": json.dumps(summary)})
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{a.model}: best step {best[1]}, val {summary['val_bpc']:.4f} bpc, "
          f"test {summary['test_bpc']:.4f} bpc (windows of {a.seq}: val "
          f"{summary['val_bpc_windows']:.4f}, test {summary['test_bpc_windows']:.4f}), "
          f"{steps_done} steps, {summary['tokens']:,} tokens, {train_seconds:.1f} s training "
          f"on {summary['device']}; {ckpt} ({summary['checkpoint_bytes']:,} bytes)",
          flush=True)
    return 0
