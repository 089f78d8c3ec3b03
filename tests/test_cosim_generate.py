"""``python -m cosim.generate``: its options checked before anything slow starts (one-line
errors, exit status 2). The generation itself is tests/test_lm_engine.py's (a tiny model) and
``make demo``'s (the shipped one)."""

import time

import pytest

from cosim.generate import BYTES_MAX, main

from .conftest import usage_error

PROG = "python -m cosim.generate"


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "R", "--bytes", "0"], f"--bytes must be an integer in [1, {BYTES_MAX}], not 0"),
    (["--prompt", "R", "--bytes", str(BYTES_MAX + 1)],
     f"--bytes must be an integer in [1, {BYTES_MAX}], not {BYTES_MAX + 1}"),
    (["--prompt", "R", "--top-k", "257"], "--top-k must be an integer in [0, 256], not 257"),
    (["--prompt", "R", "--seed", "-1"], "--seed must be an integer in [0, 4294967295], not -1"),
    (["--prompt", "R", "--temperature", "nan"],
     "--temperature must be a finite number >= 0, not nan"),
    (["--prompt", ""], "--prompt must be non-empty latin-1 text (code points 0..255)"),
    (["--prompt", "\u2603"], "--prompt must be non-empty latin-1 text (code points 0..255)"),
    (["--prompt", "R", "--bytes-per-cycle", "48"],
     "--bytes-per-cycle must be a power of two >= 1, not 48"),
    (["--prompt", "R", "--temperature", "0", "--top-k", "3"],
     "--top-k has no effect with --temperature 0 (greedy decoding takes the most likely byte); "
     "leave it out"),
    (["--prompt", "R", "--temperature", "0", "--seed", "1"],
     "--seed has no effect with --temperature 0 (greedy decoding draws no random number); "
     "leave it out"),
])
def test_argument_errors(capsys, argv, message):
    t0 = time.perf_counter()
    assert usage_error(capsys, main, argv) == f"{PROG}: error: {message}"
    assert time.perf_counter() - t0 < 1.0
