"""python -m model.evaluate on a tiny model and corpus: same bytes for every row, golden bits
equal to a decode by steps, the stream layout of model.train.loop, and the CLI's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.config import BiMambaConfig
from model.golden.lm import GoldenLM, bits_per_byte, export_lm
from model.reference.lm import BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import save_lm
from model.evaluate.__main__ import main
from model.evaluate.lm import float_bits, golden_bits, stream_rows
from model.golden.quantize import QuantSpec
from model.train.loop import evaluate_bpc

CFG = BiMambaConfig(d_model=64, n_layer=2, d_state=16, headdim=16, vocab_size=256)
EXCERPT = Path(__file__).parent / "data" / "shakespeare"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint folder (teacher, student) and a data root with train/test splits."""
    root = tmp_path_factory.mktemp("lm_eval")
    teacher = BiMambaLM(CFG, binary=False).init_weights(1).eval()
    student = student_from_teacher(teacher).eval()
    save_lm(teacher, root / "teacher.safetensors")
    save_lm(student, root / "student.safetensors")
    text = b"".join(p.read_bytes() for p in sorted(EXCERPT.glob("*_gut.txt")))
    data = root / "data" / "shakespeare"
    data.mkdir(parents=True)
    (data / "train.bin").write_bytes(text[:3000])
    (data / "test.bin").write_bytes(text[3000:3700])
    return root


def test_stream_rows_cover_every_target_once():
    data = np.arange(101, dtype=np.uint8)
    rows = stream_rows(data, 7)
    xs = np.concatenate([x for x, _ in rows])
    ys = np.concatenate([y for _, y in rows])
    assert np.array_equal(xs, data[:-1]) and np.array_equal(ys, data[1:])
    assert len(rows) == 7 and len({len(x) for x, _ in rows[:-1]}) == 1


def test_golden_bits_equal_a_decode_by_steps(world):
    from model.reference.lm_checkpoint import load_lm_model

    student = load_lm_model(world / "student.safetensors")
    data = np.fromfile(world / "data" / "shakespeare" / "test.bin", np.uint8)[:61]
    q = export_lm(student, QuantSpec(), np.fromfile(world / "data" / "shakespeare" / "train.bin",
                                                    np.uint8)[:200])
    g = GoldenLM(q)
    rows = stream_rows(data, 3)
    want = 0.0
    for x, y in rows:  # each stream from a zero state, one byte at a time
        s = g.initial_state()
        for t, target in zip(x, y):
            logits, s = g.step(int(t), s)
            want += bits_per_byte(logits[None] * q.logit_scale, np.array([target]))
    assert golden_bits(g, rows) == pytest.approx(want, rel=1e-12)
    # The float rows use model.train.loop's stream layout over the same bytes.
    r = evaluate_bpc(student, data, seq=64, batch=3, mode="stream")
    assert r["bytes"] == sum(len(y) for _, y in rows)
    assert float_bits(student, data, 3) == pytest.approx(r["bpc"] * r["bytes"], rel=1e-9)


def test_cli_json_on_a_tiny_world(world, capsys):
    argv = ["--checkpoint", str(world), "--data-root", str(world / "data"), "--calib-bytes",
            "256", "--sqnr-bytes", "48", "--streams", "4", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bytes"] == 699 and set(r["bpc"]) == {"teacher", "student", "naive", "golden"}
    # The student of this world is the naive binarised teacher (its alpha and beta rounded to
    # FP16 by the file): the two rows agree to that rounding.
    assert r["bpc"]["naive"] == pytest.approx(r["bpc"]["student"], rel=1e-5)
    assert math.isclose(r["golden_over_student"], r["bpc"]["golden"] / r["bpc"]["student"])
    assert len(r["sqnr_db"]["layers"]) == CFG.n_layer
    # An untrained tiny model: near-uniform predictions, so near 8 bits per byte.
    assert 6 < r["bpc"]["teacher"] < 9


@pytest.mark.parametrize("argv, msg", [
    (["--max-bytes", "0"], "--max-bytes must be an integer in [1, 1000000000], not 0"),
    (["--streams", "5000"], "--streams must be an integer in [1, 4096], not 5000"),
    (["--act-bits", "40"], "act_bits must be an integer in [1, 16], not 40"),
    (["--sweep-act", "4", "--check"], "--sweep-act cannot be combined with --check or --act-bits"),
    (["--sweep-act", "4,x"], "--sweep-act takes integers separated by commas, not '4,x'"),
])
def test_cli_errors(world, argv, msg, capsys):
    err = usage_error_lines(capsys, ["--checkpoint", str(world), *argv])
    assert msg in err and "Traceback" not in err


def test_cli_missing_checkpoint_and_corpus(world, tmp_path, capsys):
    err = usage_error_lines(capsys, ["--checkpoint", str(tmp_path)])
    assert f"--checkpoint must be a folder holding teacher.safetensors, not {tmp_path}" in err
    err = usage_error_lines(capsys, ["--checkpoint", str(world), "--data-root", str(tmp_path)])
    assert "not found: run `make data` first" in err


def usage_error_lines(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err




def test_cli_announces_each_step_in_a_log(world, capsys):
    """Off a terminal every long step of the run is announced on stderr, in order."""
    argv = ["--checkpoint", str(world), "--data-root", str(world / "data"), "--calib-bytes",
            "256", "--sqnr-bytes", "48", "--streams", "4", "--json"]
    assert main(argv) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.endswith(" ...")]
    assert err == [f"model.evaluate: {step} ..." for step in (
        "calibrating the integer model on training text",
        "bits per character of the float models",
        "bits per character of the golden model", "per-stage SQNR")]
