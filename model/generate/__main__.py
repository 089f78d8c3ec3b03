"""``python -m model.generate --prompt "ROMEO:" --bytes 300 --seed 0``: text from the shipped
student through the integer golden model (``--float``: the float student); the sampler is
:mod:`model.generate.sampling`."""

from __future__ import annotations

import json
import math
import sys

from model.cli import CliParser, fill_defaults, path_arg, refuse_unused
from model.data.corpus import DEFAULT_ROOT, DataError, load_split
from model.evaluate.lm import SHIPPED
from model.reference.lm import BYTE_VOCAB
from model.reference.lm_checkpoint import check_lm
from model.generate.sampling import (
    CALIB_BYTES, DEFAULT_TEMPERATURE, MAX_BYTES, SEED_MAX, run,
)

__all__ = ["main"]


def _prompt_bytes(prompt: str) -> bytes:
    if not prompt:
        raise ValueError("--prompt must not be empty")
    for i, ch in enumerate(prompt):
        if ord(ch) > 255:
            raise ValueError(f"--prompt must encode to latin-1 (code points 0..255), not "
                             f"{ch!r} (U+{ord(ch):04X}) at index {i}")
    return prompt.encode("latin-1")


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(
        prog="python -m model.generate",
        description="Generate text with the integer golden model of the shipped (or given) "
                    "Bi-Mamba student, or with the float student (--float).")
    ap.add_argument("--prompt", required=True,
                    help="text to continue (latin-1: every character one byte)")
    ap.add_argument("--bytes", type=int, default=300, dest="n",
                    help=f"bytes to generate, 1..{MAX_BYTES} (default 300)")
    ap.add_argument("--seed", type=int, default=None,
                    help=f"seed of the sampler, 0..{SEED_MAX} (default 0)")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                    help=f"softmax temperature, >= 0; 0 is greedy (default "
                         f"{DEFAULT_TEMPERATURE})")
    ap.add_argument("--top-k", type=int, default=None,
                    help="sample among the K most likely bytes only, 0..256; 0 is off "
                         "(default)")
    ap.add_argument("--float", action="store_true", dest="use_float",
                    help="generate with the float student instead (same sampler and seed; "
                         "needs no corpus)")
    ap.add_argument("--checkpoint", type=path_arg, default=SHIPPED,
                    help="folder holding student.safetensors (default: the shipped "
                         "checkpoints/shakespeare)")
    ap.add_argument("--data-root", type=path_arg, default=None,
                    help="where `make data` put the corpus (default build/data)")
    ap.add_argument("--calib-bytes", type=int, default=None,
                    help=f"training bytes the golden model's scales are calibrated on "
                         f"(default {CALIB_BYTES}, as model.evaluate.lm)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    # A flag the chosen mode cannot honour is refused, not ignored.
    if args.use_float:
        refuse_unused(ap, args, {f: "the float student is not calibrated and reads no corpus"
                                 for f in ("--data-root", "--calib-bytes")}, "--float")
    if args.temperature == 0:
        refuse_unused(ap, args, {"--top-k": "greedy decoding takes the most likely byte",
                                 "--seed": "greedy decoding draws no random number"},
                      "--temperature 0")
    fill_defaults(args, {"--seed": 0, "--top-k": 0, "--data-root": DEFAULT_ROOT,
                         "--calib-bytes": CALIB_BYTES})
    try:
        for opt, v, lo, hi in (("--bytes", args.n, 1, MAX_BYTES),
                               ("--top-k", args.top_k, 0, 256),
                               ("--seed", args.seed, 0, SEED_MAX),
                               ("--calib-bytes", args.calib_bytes, 1, 10**7)):
            if not lo <= v <= hi:
                raise ValueError(f"{opt} must be an integer in [{lo}, {hi}], not {v}")
        if not (math.isfinite(args.temperature) and args.temperature >= 0):
            raise ValueError(f"--temperature must be a finite number >= 0 (0 is greedy), "
                             f"not {args.temperature}")
        prompt = _prompt_bytes(args.prompt)
        student = args.checkpoint / "student.safetensors"
        if not student.exists():
            raise ValueError(f"--checkpoint must be a folder holding student.safetensors, "
                             f"not {args.checkpoint}")
        # The student and the corpus as their loaders will check them, before the calibration.
        cfg = check_lm(student, binary=True)
        if cfg.vocab_size > BYTE_VOCAB:
            raise ValueError(f"{student}: metadata 'config': vocab_size expected at most "
                             f"{BYTE_VOCAB} (a byte-level model), found {cfg.vocab_size}")
        if not args.use_float:
            load_split("train", args.data_root)
        result = run(args.checkpoint, prompt, args.n, seed=args.seed,
                     temperature=args.temperature, top_k=args.top_k, use_float=args.use_float,
                     data_root=args.data_root, calib_bytes=args.calib_bytes)
    except (ValueError, DataError) as e:
        ap.error(str(e))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        sys.stdout.write(result["prompt"] + result["text"] + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
