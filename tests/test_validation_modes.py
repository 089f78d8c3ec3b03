"""A flag that a command of ``model/`` cannot honour in the mode chosen is refused (one line,
exit status 2, naming the flag, the mode and why), never silently ignored; left out, it takes
its documented default. The refusals come before any file is read, so these need no corpus and
no checkpoint."""

from __future__ import annotations

import pytest

from model.evaluate import __main__ as evaluate_cli
from model.generate import __main__ as generate_cli
from model.generate import sampling

from .conftest import usage_error

GEN = "python -m model.generate"
EVAL = "python -m model.evaluate"


@pytest.fixture
def generate_calls(monkeypatch) -> list:
    """``model.generate``'s checks of files and its run replaced: what gets through is
    recorded."""
    calls: list = []
    monkeypatch.setattr(generate_cli, "check_lm", lambda *a, **k: type(
        "Cfg", (), {"vocab_size": 256})())
    monkeypatch.setattr(generate_cli, "load_split", lambda *a, **k: b"")
    monkeypatch.setattr(generate_cli, "run", lambda *a, **k: calls.append((a, k)) or {
        "prompt": "x", "text": "y"})
    return calls


@pytest.mark.parametrize("flag, value", [("--data-root", "/tmp"), ("--calib-bytes", "4096")])
def test_generate_float_refuses_the_golden_models_flags(capsys, generate_calls, flag, value):
    err = usage_error(capsys, generate_cli.main, ["--prompt", "x", "--float", flag, value])
    assert err == (f"{GEN}: error: {flag} has no effect with --float (the float student is not "
                   f"calibrated and reads no corpus); leave it out")
    assert generate_calls == []


@pytest.mark.parametrize("flag, value, why", [
    ("--top-k", "5", "greedy decoding takes the most likely byte"),
    ("--top-k", "0", "greedy decoding takes the most likely byte"),
    ("--seed", "7", "greedy decoding draws no random number")])
def test_greedy_generation_refuses_sampler_flags(capsys, generate_calls, flag, value, why):
    for t in ("0", "0.0", "-0"):
        err = usage_error(capsys, generate_cli.main, ["--prompt", "x", "--temperature", t,
                                                      flag, value])
        assert err == (f"{GEN}: error: {flag} has no effect with --temperature 0 ({why}); "
                       f"leave it out")
    assert generate_calls == []


def test_generate_fills_the_defaults_of_flags_left_out(capsys, generate_calls):
    from model.data.corpus import DEFAULT_ROOT

    assert generate_cli.main(["--prompt", "x"]) == 0
    (args, kw), = generate_calls
    assert (kw["seed"], kw["top_k"], kw["data_root"], kw["calib_bytes"]) == (
        0, 0, DEFAULT_ROOT, sampling.CALIB_BYTES)
    # Given where they are honoured, they reach the run.
    assert generate_cli.main(["--prompt", "x", "--seed", "3", "--top-k", "4", "--temperature",
                              "0.5"]) == 0
    assert (generate_calls[-1][1]["seed"], generate_calls[-1][1]["top_k"]) == (3, 4)
    assert generate_cli.main(["--prompt", "x", "--temperature", "0"]) == 0
    assert generate_calls[-1][1]["temperature"] == 0
    capsys.readouterr()


def test_evaluate_sweep_refuses_a_split(capsys):
    err = usage_error(capsys, evaluate_cli.main, ["--sweep-act", "6,8", "--split", "val"])
    assert err == (f"{EVAL}: error: --split has no effect with --sweep-act (the sweep scores the "
                   f"test split); leave it out")
