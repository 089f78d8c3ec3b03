"""The measured GPU baseline's script on a machine without a GPU: its argument checks, its
one-line refusal without CUDA, the record schema, a tiny CPU run, and the shipped records."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_decode import RECORD_FIELDS, check_record, load_results, main

ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m bench.gpu_decode: error: "


def error_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(PROG) and err.count("\n") == 1, err
    return err[len(PROG):-1]


@pytest.mark.parametrize("argv, msg", [
    (["--seconds", "0"], "argument --seconds: must be a number of seconds in (0, 300], not '0'"),
    (["--seconds", "nan"],
     "argument --seconds: must be a number of seconds in (0, 300], not 'nan'"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295], not '-1'"),
    (["--preset", "3B"], "argument --preset: invalid choice: '3B' (choose from 780M, 1.3B, "
                         "2.7B, tiny, small)"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from cuda, cpu)"),
    (["--preset", "tiny", "--preset", "tiny"], "--preset must name each preset once, not tiny "
                                               "twice"),
    (["--out", "/nonexistent/dir/x.json"],
     "--out must name a file in an existing folder, not '/nonexistent/dir/x.json'"),
])
def test_bad_arguments(argv, msg, capsys):
    # argparse quotes the choices from Python 3.12 on: compare without quotes.
    assert error_of(argv, capsys).replace("'", "") == msg.replace("'", "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_no_gpu_is_one_line_and_exit_2():
    res = subprocess.run([sys.executable, "-m", "bench.gpu_decode", "--seconds", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (PROG + "--device cuda needs a CUDA GPU, and none is visible "
                          "(torch.cuda.is_available() is False); --device cpu runs without "
                          "power\n")


def test_tiny_cpu_run_writes_a_valid_record(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    assert main(["--device", "cpu", "--preset", "tiny", "--seconds", "0.3", "--seed", "3",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    doc = json.loads(out.read_text())
    assert doc == printed
    (rec,) = doc["records"]
    assert check_record(rec) is rec
    assert set(rec) == set(RECORD_FIELDS)
    assert (rec["preset"], rec["device"], rec["batch"], rec["dtype"]) == (
        "tiny", "cpu", 1, "float32")
    assert rec["power_w"] is None and rec["j_per_token"] is None
    assert rec["tokens"] >= 3 and rec["tokens_per_s"] == pytest.approx(
        rec["tokens"] / rec["seconds"])
    assert rec["logits_finite"] and "seed 3" in rec["method"]


@pytest.mark.parametrize("change, msg", [
    ({"tokens_per_s": None}, "field 'tokens_per_s' must be float or int, not None"),
    ({"power_w": "300"}, "field 'power_w' must be float or int or null, not '300'"),
    ({"batch": True}, "field 'batch' must be int, not True"),
    ({"tokens_per_s": -1.0}, "field 'tokens_per_s' must be positive, not -1.0"),
    ({"schema": "other/1"}, "schema must be 'bimamba-hw/gpu-decode/1', not 'other/1'"),
])
def test_check_record_refuses(change, msg):
    rec = load_results()[0] | change
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        check_record(rec)
    with pytest.raises(ValueError, match="lacks field 'gpu'"):
        check_record({k: v for k, v in load_results()[0].items() if k != "gpu"})


def test_shipped_h200_records():
    recs = load_results()
    gpu = [r for r in recs if r["device"] == "cuda" and r["preset"] == "2.7B"]
    assert gpu, "bench/results/ holds a measured 2.7B GPU record"
    for r in gpu:
        assert r["gpu"] == "NVIDIA H200" and r["batch"] == 1 and r["dtype"] == "float16"
        assert r["j_per_token"] == pytest.approx(r["energy_j"] / r["tokens"])
        assert r["power_w"] == pytest.approx(r["energy_j"] / r["seconds"])
        assert r["idle_power_w"] < r["power_w"]
        assert r["logits_finite"]
