"""``python -m model.train`` checks every argument before the first step (ranges, the shape, the
corpus, the teacher, the output folder), each refusal one line with exit status 2, and stops
with an error naming the step when the loss becomes NaN or infinite. Also: its progress lines in
a log, and those of :mod:`model.progress` in general.

Everything runs on the excerpt in tests/data and a tiny model (D 32, one layer)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

import model.cli
import model.progress as progress_mod
from model.config import BiMambaConfig
from model.data.corpus import write_splits
from model.progress import progress, stage
from model.reference.lm import LM_CONFIG, BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import save_lm
from model.train import __main__ as train_cli
from model.train import loop

from .conftest import usage_error

PROG = "python -m model.train"
EXCERPT = Path(__file__).parent / "data" / "shakespeare"
TINY = ["--d-model", "32", "--n-layer", "1", "--d-state", "16", "--headdim", "16"]
CFG = BiMambaConfig(d_model=32, n_layer=1, d_state=16, headdim=16, vocab_size=256)
FAST = ["--batch", "4", "--seq", "32", "--eval-seqs", "4", "--eval-batch", "4", "--device",
        "cpu", "--dropout", "0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_splits({p.name: p.read_bytes() for p in EXCERPT.glob("*_gut.txt")},
                 root / "shakespeare")
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpts")
    teacher = BiMambaLM(CFG, binary=False).init_weights(0)
    save_lm(teacher, root / "teacher.safetensors")
    save_lm(student_from_teacher(teacher), root / "student.safetensors")
    return root


@pytest.fixture
def runs(monkeypatch) -> list:
    """``run`` replaced: an argument that gets through reaches it, and is recorded."""
    calls: list = []

    def fake_run(a, command):
        calls.append(a)
        return 0

    monkeypatch.setattr(train_cli, "run", fake_run)
    return calls


def teacher_argv(tmp_path: Path, data_root: Path, *extra: str) -> list[str]:
    return ["--model", "teacher", "--out", str(tmp_path / "out"), "--data-root",
            str(data_root), "--device", "cpu", *TINY, *extra]


def split_bytes(data_root: Path, name: str) -> int:
    return json.loads((data_root / "shakespeare" / "split.json").read_text())[
        "splits"][name]["bytes"]


RANGE_CASES = [
    (["--lr", "inf"], "--lr must be a finite number > 0, not inf"),
    (["--lr", "nan"], "--lr must be a finite number > 0, not nan"),
    (["--lr", "0"], "--lr must be a finite number > 0, not 0.0"),
    (["--wd", "-1"], "--wd must be a finite number >= 0, not -1.0"),
    (["--wd", "inf"], "--wd must be a finite number >= 0, not inf"),
    (["--time-limit", "-1"], "--time-limit must be a finite number > 0, not -1.0"),
    (["--time-limit", "0"], "--time-limit must be a finite number > 0, not 0.0"),
    (["--time-limit", "nan"], "--time-limit must be a finite number > 0, not nan"),
    (["--dropout", "1"], "--dropout must be a finite number in [0, 1), not 1.0"),
    (["--dropout", "-0.5"], "--dropout must be a finite number in [0, 1), not -0.5"),
    (["--grad-clip", "-1"], "--grad-clip must be a finite number >= 0, not -1.0"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967295], not -1"),
    (["--seed", str(2**32)], "--seed must be an integer in [0, 4294967295], not 4294967296"),
    (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    (["--seq", "0"], "--seq must be an integer in [1, 8192], not 0"),
    (["--seq", "9000"], "--seq must be an integer in [1, 8192], not 9000"),
    (["--batch", "0"], "--batch must be an integer in [1, 65536], not 0"),
    (["--steps", "-1"], "--steps must be an integer in [0, 1000000000], not -1"),
    (["--warmup", "-3"], "--warmup must be an integer in [0, 1000000000], not -3"),
    (["--eval-every", "0"], "--eval-every must be an integer in [1, 1000000000], not 0"),
    (["--eval-seqs", "0"], "--eval-seqs must be an integer in [1, 1000000], not 0"),
    (["--eval-batch", "0"], "--eval-batch must be an integer in [1, 65536], not 0"),
    (["--d-model", "0"], "--d-model must be an integer in [1, 65536], not 0"),
    (["--headdim", "24"], "--headdim must divide d_inner = 2 * --d-model = 64, not 24"),
    (["--out", ""], "argument --out: must name a path, not an empty string"),
]


@pytest.mark.parametrize("extra, message", RANGE_CASES, ids=[c[1][:30] for c in RANGE_CASES])
def test_out_of_range_arguments_are_refused_before_any_work(tmp_path, data_root, runs, capsys,
                                                            extra, message):
    argv = teacher_argv(tmp_path, data_root, *extra)
    assert usage_error(capsys, train_cli.main, argv) == f"{PROG}: error: {message}"
    assert runs == [] and not (tmp_path / "out").exists()


def test_seq_must_be_shorter_than_every_split(tmp_path, data_root, runs, capsys):
    n = split_bytes(data_root, "test")  # the shortest split of the excerpt
    assert n < split_bytes(data_root, "val") < split_bytes(data_root, "train")
    argv = teacher_argv(tmp_path, data_root, "--seq", str(n))
    assert usage_error(capsys, train_cli.main, argv) == (
        f"{PROG}: error: --seq must be shorter than every split: the test split "
        f"({data_root}/shakespeare/test.bin) holds {n:,} bytes, --seq is {n}")
    assert main_ok(train_cli, teacher_argv(tmp_path, data_root, "--seq", str(n - 1)), runs)


def main_ok(cli, argv, runs) -> bool:
    before = len(runs)
    return cli.main(argv) == 0 and len(runs) == before + 1


def test_missing_or_changed_corpus_is_refused(tmp_path, data_root, runs, capsys):
    argv = teacher_argv(tmp_path, tmp_path / "none")
    assert usage_error(capsys, train_cli.main, argv) == (
        f"{PROG}: error: {tmp_path}/none/shakespeare/train.bin not found: run `make data` first "
        f"(or pass the data root that holds shakespeare/train.bin)")
    root = tmp_path / "data"
    write_splits({p.name: p.read_bytes() for p in EXCERPT.glob("*_gut.txt")},
                 root / "shakespeare")
    val = root / "shakespeare" / "val.bin"
    n = val.stat().st_size
    val.write_bytes(val.read_bytes()[:100])
    assert usage_error(capsys, train_cli.main, teacher_argv(tmp_path, root)) == (
        f"{PROG}: error: {val}: expected {n:,} bytes (recorded in split.json by `make data`), "
        f"found 100: the file is truncated or changed; run `make data` to rebuild the split")
    assert runs == []


def test_teacher_must_be_a_valid_float_checkpoint(tmp_path, data_root, ckpts, runs, capsys):
    def err(teacher: Path, *extra: str) -> str:
        return usage_error(capsys, train_cli.main, [
            "--model", "student", "--teacher", str(teacher), "--out", str(tmp_path / "out"),
            "--data-root", str(data_root), "--device", "cpu", *extra])

    missing = tmp_path / "none.safetensors"
    assert err(missing) == (f"{PROG}: error: --teacher: {missing} not found (expected the "
                            f"teacher's .safetensors file)")
    student = ckpts / "student.safetensors"
    assert err(student) == (f"{PROG}: error: --teacher: {student}: metadata 'binary': expected "
                            f"'false' (a float model is needed here), found 'true' (a Bi-Mamba "
                            f"student)")
    good = ckpts / "teacher.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:5000])
    assert err(cut).startswith(f"{PROG}: error: --teacher: {cut}: truncated: expected a file "
                               f"of {good.stat().st_size:,} bytes")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), framework="pt") as f:
        t, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    t["backbone.layers.0.mixer.D"][2] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(t, str(nan), metadata=meta)
    assert err(nan) == (f"{PROG}: error: --teacher: {nan}: key 'backbone.layers.0.mixer.D' "
                        f"(layer 0): expected finite values, found 1 non-finite (NaN), the "
                        f"first at index (2,)")
    # A shape option with a student must be the teacher's.
    assert err(good, "--d-model", "64") == (
        f"{PROG}: error: --d-model 64 is not the teacher's d_model, 32 ({good}); leave "
        f"--d-model out to take the teacher's shape")
    assert runs == []
    assert main_ok(train_cli, ["--model", "naive", "--teacher", str(good), "--out",
                               str(tmp_path / "out"), "--data-root", str(data_root), *TINY],
                   runs)
    assert (runs[-1].d_model, runs[-1].n_layer) == (32, 1)


@pytest.mark.parametrize("flag, value", [
    ("--steps", "10"), ("--batch", "8"), ("--lr", "1e-3"), ("--warmup", "0"), ("--wd", "0"),
    ("--dropout", "0"), ("--grad-clip", "0"), ("--ce-weight", "1"), ("--eval-every", "5"),
    ("--time-limit", "60"), ("--compile", None)])
def test_training_flags_are_refused_for_the_naive_model(tmp_path, data_root, ckpts, runs, capsys,
                                                         flag, value):
    """``--model naive`` takes no training step: every flag of training is refused, even one
    given at its default value, instead of being ignored."""
    argv = ["--model", "naive", "--teacher", str(ckpts / "teacher.safetensors"), "--out",
            str(tmp_path / "out"), "--data-root", str(data_root), flag] + (
        [value] if value is not None else [])
    assert usage_error(capsys, train_cli.main, argv) == (
        f"{PROG}: error: {flag} has no effect with --model naive (the teacher binarised, no "
        f"training steps); leave it out")
    assert runs == []


def test_ce_weight_is_refused_for_the_teacher_and_taken_by_the_student(
        tmp_path, data_root, ckpts, runs, capsys):
    assert usage_error(capsys, train_cli.main,
                       teacher_argv(tmp_path, data_root, "--ce-weight", "0.5")) == (
        f"{PROG}: error: --ce-weight has no effect with --model teacher (it weights the data "
        f"term of the student's distillation loss); leave it out")
    assert runs == []
    argv = ["--model", "student", "--teacher", str(ckpts / "teacher.safetensors"), "--out",
            str(tmp_path / "out"), "--data-root", str(data_root), "--ce-weight"]
    assert usage_error(capsys, train_cli.main, argv + ["nan"]) == (
        f"{PROG}: error: --ce-weight must be a finite number >= 0, not nan")
    assert main_ok(train_cli, argv + ["0.5"], runs)
    assert runs[-1].ce_weight == 0.5


def test_training_defaults_are_filled_when_left_out(tmp_path, data_root, runs):
    assert main_ok(train_cli, teacher_argv(tmp_path, data_root), runs)
    a = runs[-1]
    assert (a.steps, a.batch, a.lr, a.warmup, a.wd, a.dropout, a.grad_clip, a.ce_weight,
            a.eval_every, a.compile, a.time_limit) == (4000, 64, 2e-3, 200, 0.1, 0.1, 1.0, 0.0,
                                                       250, False, None)


def test_shape_defaults_are_recorded(tmp_path, data_root, runs):
    argv = ["--model", "teacher", "--out", str(tmp_path / "o"), "--data-root", str(data_root),
            "--seq", "64"]
    assert main_ok(train_cli, argv, runs)
    a = runs[-1]
    assert (a.d_model, a.n_layer, a.d_state, a.headdim) == (
        LM_CONFIG.d_model, LM_CONFIG.n_layer, LM_CONFIG.d_state, LM_CONFIG.headdim)


def test_output_folder_must_be_writable(tmp_path, data_root, runs, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    for out, why in ((f, f"{f} is a file, not a folder"),
                     (f / "sub", f"{f} is a file, so no folder can be made under it")):
        argv = teacher_argv(tmp_path, data_root)
        argv[argv.index("--out") + 1] = str(out)
        assert usage_error(capsys, train_cli.main, argv) == (
            f"{PROG}: error: --out: {out} is not a writable folder ({why})")
    real = model.cli.tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == tmp_path:
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(model.cli.tempfile, "TemporaryFile", read_only)
    assert usage_error(capsys, train_cli.main, teacher_argv(tmp_path, data_root)) == (
        f"{PROG}: error: --out: {tmp_path / 'out'} is not a writable folder ({tmp_path} is not "
        f"writable (Read-only file system))")
    assert runs == []


# -- a loss that becomes NaN --------------------------------------------------------------


def diverging_loss_after(monkeypatch, calls: int) -> None:
    """The training loss (cross-entropy with reduction 'mean') becomes NaN from its ``calls``-th
    call on; the evaluation's (reduction 'none') is left alone."""
    real = loop.F.cross_entropy
    seen = [0]

    def ce(*args, reduction="mean", **kwargs):
        out = real(*args, reduction=reduction, **kwargs)
        if reduction == "mean":
            seen[0] += 1
            if seen[0] >= calls:
                return out * float("nan")
        return out

    monkeypatch.setattr(loop.F, "cross_entropy", ce)


def test_a_nan_loss_stops_the_run_at_its_step(tmp_path, data_root, capsys, monkeypatch):
    diverging_loss_after(monkeypatch, 3)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        train_cli.main(teacher_argv(tmp_path, data_root, "--steps", "20", "--eval-every", "10",
                                    *FAST))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(
        re.escape(f"{PROG}: error: training diverged: the training loss is nan at step 3 "
                  f"(--lr 0.002, --warmup 200, --grad-clip 1); the last checkpoint, step 0 "
                  f"(val_bpc ") + r"\d\.\d{4}" + re.escape(
            f"), is kept in {out}/teacher.safetensors, no summary was written; lower --lr, "
            f"raise --warmup"), err[-1]), err[-1]
    # Stopped at once: no evaluation after step 0, no summary.
    assert (out / "log.csv").read_text().splitlines()[1:][0].startswith("0,")
    assert len((out / "log.csv").read_text().splitlines()) == 2
    assert not (out / "summary.json").exists()


def test_a_real_divergence_is_caught(tmp_path, data_root, capsys):
    """No patching: a learning rate of 1e4 without clipping blows the loss up."""
    with pytest.raises(SystemExit) as e:
        train_cli.main(teacher_argv(tmp_path, data_root, "--steps", "40", "--eval-every", "20",
                                    "--lr", "1e4", "--warmup", "0", "--grad-clip", "0", *FAST))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(rf"{PROG}: error: training diverged: the training loss is (nan|inf|-inf) "
                    rf"at step \d+ \(--lr 10000, --warmup 0, --grad-clip 0\); ", err), err
    assert err.endswith("lower --lr, raise --warmup or set --grad-clip > 0")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_non_finite_validation_bpc_stops_the_run(tmp_path, data_root, capsys, monkeypatch):
    real = loop._subset_bpc
    calls = [0]

    def bpc(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs) if calls[0] == 1 else float("inf")

    monkeypatch.setattr(loop, "_subset_bpc", bpc)
    with pytest.raises(SystemExit) as e:
        train_cli.main(teacher_argv(tmp_path, data_root, "--steps", "8", "--eval-every", "4",
                                    *FAST))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"{PROG}: error: training diverged: the validation bits per "
                          f"character are inf at step 4 (--lr 0.002, --warmup 200, "
                          f"--grad-clip 1); the last checkpoint, step 0 (val_bpc ")


# -- progress in logs ---------------------------------------------------------------------


@pytest.fixture
def fast_clock(monkeypatch):
    """Log lines every 20 ms instead of 2 s (once the clock of earlier steps has stopped)."""
    wait_for_clock()
    monkeypatch.setattr(progress_mod, "LOG_SECONDS", 0.02)
    monkeypatch.setattr(progress_mod, "_TICK", 0.005)


def wait_for_clock() -> None:
    for _ in range(400):
        if progress_mod._thread is None:
            return
        time.sleep(0.005)
    raise AssertionError("the progress clock thread is still running with nothing open")


def test_progress_lines_off_a_terminal(capsys, fast_clock):
    with stage("tool: outer"):
        for _ in progress(range(4), "inner"):
            time.sleep(0.06)  # one item longer than the log interval: lines still come
    wait_for_clock()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tool: outer ..."
    beats = [line for line in err[1:-1]]
    assert len(beats) >= 4
    assert all(re.fullmatch(r"tool: outer( > inner [0-4]/4)? \(0 s\)", b) for b in beats), beats
    assert any(" > inner " in b for b in beats)
    assert err[-1] == "tool: outer done (0 s)"


def test_short_steps_stay_quiet(capsys):
    assert progress_mod.LOG_SECONDS == 2.0
    for _ in progress(range(100), "quick"):
        pass
    wait_for_clock()
    assert capsys.readouterr().err == ""


def test_training_writes_progress_lines(tmp_path, data_root, capsys, fast_clock):
    assert train_cli.main(teacher_argv(tmp_path, data_root, "--steps", "12", "--eval-every",
                                       "6", *FAST)) == 0
    wait_for_clock()
    out, err = capsys.readouterr()
    assert "step     6  train_loss" in out and "step    12  train_loss" in out
    steps = [line for line in err.splitlines() if re.match(r"teacher \d+/12", line)]
    assert steps, err
    counts = [int(re.match(r"teacher (\d+)/12", line).group(1)) for line in steps]
    assert counts == sorted(counts)
    assert any("final evaluation" in line for line in err.splitlines()), err
