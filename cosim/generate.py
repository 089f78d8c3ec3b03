"""``python -m cosim.generate --prompt "ROMEO:" --bytes 64 --seed 0``: text written by the RTL.

The shipped student's integer export (calibrated as :mod:`model.evaluate.lm` calibrates it, with
the formats shared by all layers) runs on the whole-model engine (:class:`rtl.lm.BiMambaLM`) in
Verilator. A host inside the simulation (:class:`cosim.host.SamplingHost`) feeds the prompt,
reads each token's 256 integer logits from the engine and samples the next byte exactly as
``python -m model.generate`` does. Afterwards every token's logits are compared with
:class:`~model.golden.lm.GoldenLM`'s and the text with the golden model's own generation for the
same prompt, byte count and seed; either differing is an error (exit 1).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["main", "run"]

BYTES_MAX = 4096
DEFAULT_BYTES_PER_CYCLE = 64


def _progress(path: Path, n: int, done: threading.Event) -> None:
    """A line on stderr whenever more bytes have been generated (at most every 2 s)."""
    shown = -1
    while not done.wait(2.0):
        k = path.stat().st_size if path.exists() else 0
        if k != shown:
            print(f"cosim.generate: {k}/{n} bytes from the RTL", file=sys.stderr, flush=True)
            shown = k


def run(prompt: bytes, n: int, *, seed: int = 0, temperature: float = 0.8, top_k: int = 0,
        bytes_per_cycle: int = DEFAULT_BYTES_PER_CYCLE, checkpoint: Path | None = None,
        data_root: Path | None = None, calib_bytes: int | None = None,
        verbose: bool = True) -> dict:
    """Generate ``n`` bytes after ``prompt`` on the RTL; return a JSON-able dict (see
    :func:`main`)."""
    import numpy as np

    from model.data.corpus import DEFAULT_ROOT
    from model.evaluate.lm import CALIB_BYTES, SHIPPED, shipped_golden
    from model.generate.sampling import generate
    from model.golden.lm import GoldenLM
    from rtl.lm import LMConfig

    from .lm import LMCase, run_lm_case

    t0 = time.perf_counter()

    def say(text: str) -> None:
        if verbose:
            print(f"cosim.generate: {text} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)

    say("calibrating the integer model on training text")
    _, q = shipped_golden(checkpoint or SHIPPED, calib_bytes=calib_bytes or CALIB_BYTES,
                          data_root=data_root or DEFAULT_ROOT)
    lmc = LMConfig.sized_for(q, bytes_per_cycle)
    with tempfile.TemporaryDirectory() as tmp:
        prog = Path(tmp) / "bytes"
        case = LMCase("generate", lmc, host="cosim.host:SamplingHost", max_tokens=len(prompt) + n,
                      seed=seed, host_args=dict(prompt=list(prompt), n=n, seed=seed,
                                                temperature=temperature, top_k=top_k,
                                                scale=q.logit_scale, progress_file=str(prog)))
        # The golden model's own text, in a thread beside the simulation (a process of its
        # own, on the other core).
        golden: list[bytes] = []
        gthread = threading.Thread(target=lambda: golden.append(generate(
            GoldenLM(q), prompt, n, np.random.default_rng(seed), temperature, top_k)),
            daemon=True)
        done = threading.Event()
        watcher = threading.Thread(target=_progress, args=(prog, n, done), daemon=True)
        phases = {"emit": "emitting Verilog", "build": "building the Verilator model (cached)",
                  "simulate": "simulating"}
        try:
            def phase(p: str) -> None:
                say(phases.get(p, p))
                if p == "simulate":  # the simulator runs in a process of its own
                    gthread.start()
                    if verbose:
                        watcher.start()

            res = run_lm_case(case, on_phase=phase)
        finally:
            done.set()
    tokens = res["tokens"]
    rtl_text = bytes(res["host_out"])  # the bytes the host drew from the engine's logits
    gthread.join()
    if not golden:
        raise RuntimeError("the golden model's generation failed (see the traceback above)")
    golden = golden[0]
    cycles = res["cycles"]
    sched = lmc.schedule()
    out = {
        "prompt": prompt.decode("latin-1"), "text": rtl_text.decode("latin-1"), "bytes": n,
        "seed": seed, "temperature": temperature, "top_k": top_k,
        "logits_bit_exact": res["mismatches"] == 0,
        "golden_text_equal": rtl_text == golden,
        "tokens": len(tokens),
        "cycles_per_token": round(float(np.mean(cycles)), 1),
        "cycles_per_token_max": int(max(cycles)),
        "cycles_formula": sched.last_logit + 1,
        "cycles_back_to_back_formula": sched.token_cycles,
        "engine": {"simd": lmc.simd, "pe": lmc.pe, "lanes": lmc.lanes,
                   "beat_bytes": lmc.beat_bits // 8, "layers": lmc.n_layer,
                   "beats_per_token": lmc.beats_per_token},
        "simulated_cycles": int(res["last_logit"][-1]),
        "simulation_s": round(res["wall_s"], 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if res["mismatches"]:
        out["first_mismatch"] = res["first_mismatch"]
    return out


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser

    ap = CliParser(
        prog="python -m cosim.generate",
        description="Generate text with the shipped Bi-Mamba student running on the "
                    "whole-model RTL engine in Verilator; every logit is checked against the "
                    "integer golden model.")
    ap.add_argument("--prompt", required=True, help="text to continue (latin-1)")
    ap.add_argument("--bytes", type=int, default=64, dest="n",
                    help=f"bytes to generate, 1..{BYTES_MAX} (default 64)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the sampler (default 0)")
    ap.add_argument("--temperature", type=float, default=0.8,
                    help="softmax temperature, >= 0; 0 is greedy (default 0.8)")
    ap.add_argument("--top-k", type=int, default=None, help="0..256; 0 is off (default)")
    ap.add_argument("--bytes-per-cycle", type=int, default=DEFAULT_BYTES_PER_CYCLE,
                    help=f"the engine's weight beat in bytes (default "
                         f"{DEFAULT_BYTES_PER_CYCLE}): its array and lanes are sized for it")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    from model.cli import fill_defaults, refuse_unused
    from model.data.corpus import DataError

    if args.temperature == 0:  # as model.generate: greedy takes no sampler flag
        refuse_unused(ap, args, {"--top-k": "greedy decoding takes the most likely byte",
                                 "--seed": "greedy decoding draws no random number"},
                      "--temperature 0")
    fill_defaults(args, {"--seed": 0, "--top-k": 0})

    try:
        if not 1 <= args.n <= BYTES_MAX:
            raise ValueError(f"--bytes must be an integer in [1, {BYTES_MAX}], not {args.n}")
        if not 0 <= args.top_k <= 256:
            raise ValueError(f"--top-k must be an integer in [0, 256], not {args.top_k}")
        if not 0 <= args.seed <= 2**32 - 1:
            raise ValueError(f"--seed must be an integer in [0, {2**32 - 1}], not {args.seed}")
        if not (math.isfinite(args.temperature) and args.temperature >= 0):
            raise ValueError(f"--temperature must be a finite number >= 0, not "
                             f"{args.temperature}")
        if not args.prompt or any(ord(ch) > 255 for ch in args.prompt):
            raise ValueError("--prompt must be non-empty latin-1 text (code points 0..255)")
        if args.bytes_per_cycle < 1 or args.bytes_per_cycle & (args.bytes_per_cycle - 1):
            raise ValueError(f"--bytes-per-cycle must be a power of two >= 1, not "
                             f"{args.bytes_per_cycle}")
        out = run(args.prompt.encode("latin-1"), args.n, seed=args.seed,
                  temperature=args.temperature, top_k=args.top_k,
                  bytes_per_cycle=args.bytes_per_cycle)
    except (ValueError, DataError) as e:
        ap.error(str(e))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        sys.stdout.write(out["prompt"] + out["text"] + "\n")
        print(f"cosim.generate: {out['tokens']} tokens, logits bit-exact: "
              f"{out['logits_bit_exact']}, text = golden model's: {out['golden_text_equal']}, "
              f"{out['cycles_per_token']:.0f} cycles a token (formula "
              f"{out['cycles_formula']})", file=sys.stderr)
    ok = out["logits_bit_exact"] and out["golden_text_equal"]
    if not ok:
        print(f"cosim.generate: the RTL differs from the golden model: "
              f"{out.get('first_mismatch', 'text differs')}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
