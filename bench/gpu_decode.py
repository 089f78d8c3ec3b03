"""Measured GPU baseline: batch-1 FP16 decode of the float reference, with board power.

``python -m bench.gpu_decode`` builds the float reference of a whole Bi-Mamba language model
(:class:`model.reference.lm.BiMambaLM`: embedding, ``n_layer`` blocks of :mod:`model.reference.layer`, final
norm, tied LM head) at a preset's shape with random weights, casts it to FP16 (weights, state
and activations), and decodes one token at a time, greedily, at batch 1. The whole step (every
layer, the LM head and the argmax that picks the next token) is captured once as a CUDA graph
and replayed, so the figure is the GPU's and not the Python interpreter's; with ``--compile``
(the default on cuda) each block's step is first compiled by ``torch.compile`` (one graph shared
by all layers, element-wise stages fused) and the compiled kernels are what the CUDA graph holds.
The projections are dense FP16 matrices (``binary=False``, the float Mamba-2 of the same shape):
a float framework running a Bi-Mamba checkpoint materialises ``W_hat = alpha * sign(W) + beta``
into exactly such matrices, so the cost is the same.

Board power comes from NVML (``pynvml``, the ``nvidia-ml-py`` package): the board's energy
counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules) read at the start and end of the
timed window gives the joules per token; power samples (``nvmlDeviceGetPowerUsage``) every
50 ms during the same window give the mean and peak watts beside it. Idle power is the energy
counter over a window with the GPU idle and the first model not yet built.

The record (one per preset) is JSON with the fields of :data:`RECORD_FIELDS`; the energy report
(``energy/report.py``) reads every file in ``bench/results/`` and prints the records beside
its estimate. ``--device cpu`` runs the same code without a GPU and without power (for tests
and quick checks on the small presets); the default, ``--device cuda``, stops with a one-line
error and exit status 2 when no CUDA GPU is visible or NVML is missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["SCHEMA", "RECORD_FIELDS", "check_record", "load_results", "timed_decode", "timing_fields", "main"]

SCHEMA = "bimamba-hw/gpu-decode/1"
RESULTS_DIR = Path(__file__).with_name("results")
PRESET_NAMES = ("780M", "1.3B", "2.7B", "tiny", "small")  # model.config.PRESETS
MAX_SECONDS = 300.0
MAX_SEED = 2**32 - 1
SAMPLE_S = 0.05

# field -> (types allowed, may be None). The report and the tests check records against this.
RECORD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((str,), False),
    "kind": ((str,), False),  # "measured"
    "system": ((str,), False),  # e.g. "NVIDIA H200, FP16, CUDA graph"
    "gpu": ((str,), False),
    "device": ((str,), False),  # cuda or cpu
    "date": ((str,), False),  # UTC, ISO 8601
    "preset": ((str,), False),
    "shape": ((dict,), False),
    "params": ((int,), False),
    "dtype": ((str,), False),
    "batch": ((int,), False),
    "method": ((str,), False),
    "tokens": ((int,), False),
    "seconds": ((float, int), False),
    "tokens_per_s": ((float, int), False),
    "ms_per_token": ((float, int), False),
    "power_w": ((float, int), True),
    "power_peak_w": ((float, int), True),
    "energy_j": ((float, int), True),
    "j_per_token": ((float, int), True),
    "idle_power_w": ((float, int), True),
    "power_method": ((str,), False),
    "logits_finite": ((bool,), False),
    "software": ((dict,), False),
}


def check_record(rec: object) -> dict:
    """``rec`` if it is a well-formed record of :data:`RECORD_FIELDS`.

    Raises
    ------
    ValueError
        Naming the first missing or mistyped field, or a non-positive rate.
    """
    if not isinstance(rec, dict):
        raise ValueError(f"a GPU decode record must be a JSON object, not {type(rec).__name__}")
    for name, (types, nullable) in RECORD_FIELDS.items():
        if name not in rec:
            raise ValueError(f"GPU decode record lacks field {name!r}")
        v = rec[name]
        if v is None and nullable:
            continue
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            want = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise ValueError(f"GPU decode record field {name!r} must be {want}, not {v!r}")
    if rec["schema"] != SCHEMA:
        raise ValueError(f"GPU decode record schema must be {SCHEMA!r}, not {rec['schema']!r}")
    for name in ("tokens_per_s", "seconds", "tokens"):
        if not (math.isfinite(rec[name]) and rec[name] > 0):
            raise ValueError(f"GPU decode record field {name!r} must be positive, not "
                             f"{rec[name]!r}")
    return rec


def timed_decode(step, *, graph: bool, seconds: float, nvml, sync, side_warmups: int = 3,
                 calib_s: float = 2.0) -> dict:
    """Time ``step`` (one decode step, already warmed up) as the GPU benchmarks do.

    With ``graph`` the step is captured once as a CUDA graph (``side_warmups`` steps on a side
    stream first, as capture needs) and the graph is replayed. A calibration window of
    ``min(calib_s, seconds / 4)`` s (at least 3 steps) sizes the timed window to ``seconds``;
    ``nvml`` (None: no power) reads the board's energy counter around it and samples power.
    Returns ``steps``, ``elapsed`` (s), ``energy_j``, ``samples`` and ``clocks`` (None without
    ``nvml``).
    """
    import torch

    run = step
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(side_warmups):
                step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        run = g.replay
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < min(calib_s, seconds / 4) or n < 3:
        run()
        n += 1
        sync()
    steps = max(3, int(seconds / ((time.perf_counter() - t0) / n)))
    e0 = samples = clocks = energy = None
    if nvml is not None:
        nvml.start()
        e0 = nvml.energy_j()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    elapsed = time.perf_counter() - t0
    if nvml is not None:
        energy = nvml.energy_j() - e0
        samples = nvml.stop()
        clocks = nvml.clocks_mhz()
    return {"steps": steps, "elapsed": elapsed, "energy_j": energy, "samples": samples,
            "clocks": clocks}


def timing_fields(tokens: int, elapsed: float, energy: float | None, samples, idle_w, nvml
                  ) -> dict:
    """The record fields of a timed window (:data:`RECORD_FIELDS`): tokens, seconds, rates,
    and the power fields from the NVML counter (null without ``nvml``)."""
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "ms_per_token": elapsed / tokens * 1e3,
        "power_w": None if nvml is None else energy / elapsed,
        "power_peak_w": None if nvml is None or not samples else max(samples),
        "energy_j": energy,
        "j_per_token": None if nvml is None else energy / tokens,
        "idle_power_w": idle_w,
        "power_method": ("NVML board energy counter (nvmlDeviceGetTotalEnergyConsumption) "
                         "over the timed window; peak from nvmlDeviceGetPowerUsage every "
                         f"{SAMPLE_S * 1e3:g} ms; idle: the counter over an idle window before "
                         "the first model is built" if nvml is not None
                         else "none (no GPU): power fields are null"),
    }


def load_results(folder: Path = RESULTS_DIR) -> list[dict]:
    """Every record in ``folder/*.json`` (files hold ``{"records": [...]}``), checked, in file
    and record order.

    Raises
    ------
    ValueError
        Naming the file of a record that :func:`check_record` refuses.
    """
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            recs = doc["records"]
            if not isinstance(recs, list):
                raise ValueError("'records' must be a list")
            out += [check_record(r) for r in recs]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
                ValueError) as e:
            raise ValueError(f"{path.name}: not a GPU decode result file: {e}") from None
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, ``<prog>: error: <message>``, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and 0 < v <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, {MAX_SECONDS:g}], "
                                         f"not {text!r}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], not {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m bench.gpu_decode", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=PRESET_NAMES,
                    help="model shape (repeatable; default 2.7B)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default; power through NVML) or cpu (no power; small presets)")
    ap.add_argument("--seconds", type=_positive_seconds, default=10.0,
                    help="length of each timed decode window (default 10)")
    ap.add_argument("--idle-seconds", type=_positive_seconds, default=5.0,
                    help="length of the idle-power window (cuda; default 5)")
    ap.add_argument("--seed", type=_seed, default=0, help="seed of the random weights")
    ap.add_argument("--no-graph", action="store_true",
                    help="eager decode (one kernel launch at a time) instead of a CUDA graph")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the block step (default: on for cuda, off for cpu)")
    ap.add_argument("--out", metavar="FILE",
                    help="write {\"records\": [...]} to FILE (default: stdout only)")
    return ap


# -- the model ---------------------------------------------------------------------------


def _build(preset: str, device: str, seed: int, vocab: int | None = None) -> Any:
    """The float reference LM of ``preset`` (its head and embedding of ``vocab`` rows, by
    default the preset's) in FP16 (float32 on cpu) with random weights of Mamba-2's
    initialisation (as :func:`model.reference.checkpoint.synthetic_state_dict`), drawn on the
    device so that a 2.7B model takes seconds, not minutes."""
    from dataclasses import replace

    import torch

    from model.config import get_preset
    from model.reference.lm import BiMambaLM

    cfg = get_preset(preset)
    if vocab is not None:
        cfg = replace(cfg, vocab_size=vocab)
    dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.device(device):
        lm = BiMambaLM(cfg, binary=False)
    gen = torch.Generator(device=device).manual_seed(seed)
    c = cfg

    def uniform_(t: torch.Tensor, bound: float) -> None:
        t.uniform_(-bound, bound, generator=gen)

    with torch.no_grad():
        lm.backbone.embedding.weight.normal_(0.0, 0.02, generator=gen)
        for layer in lm.backbone.layers:
            m = layer.mixer
            uniform_(m.in_proj.weight, 1 / math.sqrt(c.d_model))
            uniform_(m.out_proj.weight, 1 / math.sqrt(c.d_inner) / math.sqrt(c.n_layer))
            uniform_(m.conv1d.weight, 1 / math.sqrt(c.d_conv))
            uniform_(m.conv1d.bias, 1 / math.sqrt(c.d_conv))
            dt = torch.exp(torch.rand(c.nheads, generator=gen, device=device)
                           * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            m.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            m.A_log.copy_(torch.log(1 + 15 * torch.rand(c.nheads, generator=gen, device=device)))
    return lm.to(dtype).eval(), dtype


def _block_step(layer: Any, h: Any, conv: Any, ssm: Any) -> Any:
    """``layer.step`` with the state written back in place: (D,) -> (D,)."""
    from model.reference.layer import MixerState

    h, new = layer.step(h, MixerState(conv, ssm))
    conv.copy_(new.conv)
    ssm.copy_(new.ssm)
    return h


class _Decoder:
    """One greedy decode step of ``lm`` on static buffers: the token in ``tok`` and the state
    in ``states`` are read and overwritten in place, so the step can be captured as a graph.
    ``compile``: the block step goes through ``torch.compile`` (modules are inlined, so the 64
    blocks of a 2.7B model share one compiled graph)."""

    def __init__(self, lm: Any, dtype: Any, device: str, compile: bool = False) -> None:
        import torch

        self.lm = lm
        self.tok = torch.zeros((), dtype=torch.long, device=device)
        self.states = lm.initial_state(dtype, device=device)
        self.logits = None
        self.block_step = torch.compile(_block_step, dynamic=False) if compile else _block_step

    def step(self) -> None:
        import torch

        lm = self.lm
        # index_select, not w[tok]: no host sync, so the step can be captured
        h = torch.index_select(lm.backbone.embedding.weight, 0, self.tok.view(1))[0]
        for layer, s in zip(lm.backbone.layers, self.states):
            h = self.block_step(layer, h, s.conv, s.ssm)
        self.logits = lm.logits(h)
        self.tok.copy_(torch.argmax(self.logits))


# -- power ---------------------------------------------------------------------------------


class _Nvml:
    """Board energy counter and power samples of GPU ``index`` through pynvml."""

    def __init__(self, index: int) -> None:
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        self.name = _text(pynvml.nvmlDeviceGetName(self.h))
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def energy_j(self) -> float:
        return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h) / 1e3

    def power_w(self) -> float:
        return self.nv.nvmlDeviceGetPowerUsage(self.h) / 1e3

    def clocks_mhz(self) -> dict[str, int]:
        nv = self.nv
        return {"sm": nv.nvmlDeviceGetClockInfo(self.h, nv.NVML_CLOCK_SM),
                "memory": nv.nvmlDeviceGetClockInfo(self.h, nv.NVML_CLOCK_MEM)}

    def start(self) -> None:
        self.samples = []
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                self.samples.append(self.power_w())
                time.sleep(SAMPLE_S)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _idle_power(nvml: _Nvml, seconds: float) -> float:
    e0, t0 = nvml.energy_j(), time.perf_counter()
    time.sleep(seconds)
    return (nvml.energy_j() - e0) / (time.perf_counter() - t0)


# -- one measurement -------------------------------------------------------------------


def measure(preset: str, device: str, seconds: float, seed: int, graph: bool,
            nvml: _Nvml | None, idle_w: float | None, compile: bool = False) -> dict:
    """Decode for about ``seconds`` after warm-up and return the record."""
    import torch

    from model.config import get_preset

    cfg = get_preset(preset)
    lm, dtype = _build(preset, device, seed)
    dec = _Decoder(lm, dtype, device, compile)
    t_compile = time.perf_counter()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(3):  # materialises W_hat, loads kernels
            dec.step()
        sync()
        t_compile = time.perf_counter() - t_compile
        t = timed_decode(dec.step, graph=graph and device == "cuda", seconds=seconds,
                         nvml=nvml, sync=sync)
        tokens, elapsed, energy = t["steps"], t["elapsed"], t["energy_j"]
        samples, clocks = t["samples"], t["clocks"]
        finite = bool(torch.isfinite(dec.logits).all())
    params = sum(p.numel() for p in lm.parameters())
    if device == "cuda":
        gpu = torch.cuda.get_device_name()
    else:
        gpu = f"CPU ({platform.processor() or platform.machine()}, "\
              f"{torch.get_num_threads()} threads)"
    method = (f"batch-1 greedy decode of model.reference.lm.BiMambaLM ({preset} shape, random Mamba-2 "
              f"init, seed {seed}), {str(dtype).removeprefix('torch.')} weights, state and "
              f"activations, dense projections (one GEMV each, the shape of FBI's materialised "
              f"W_hat); "
              + (f"block step through torch.compile (inductor; {t_compile:.0f} s to compile "
                 f"and warm up); " if compile else "")
              + ("whole step (all layers, LM head, argmax) captured as one CUDA graph and "
                 "replayed" if graph and device == "cuda" else "eager PyTorch")
              + f"; {tokens} tokens timed after warm-up, wall clock around the loop")
    software = {"torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        software["cuda"] = torch.version.cuda
    if nvml is not None:
        software["driver"] = nvml.driver
        software["clocks_mhz_at_end"] = clocks
    del dec, lm
    if device == "cuda":
        torch.cuda.empty_cache()
    return check_record({
        "schema": SCHEMA,
        "kind": "measured",
        "system": f"{gpu}, {str(dtype).removeprefix('torch.').upper()}, "
                  + ("torch.compile + " if compile else "")
                  + ("CUDA graph" if graph and device == "cuda" else "eager"),
        "gpu": gpu,
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "shape": {"d_model": cfg.d_model, "n_layer": cfg.n_layer, "d_state": cfg.d_state,
                  "headdim": cfg.headdim, "vocab_size": cfg.vocab_size},
        "params": params,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": 1,
        "method": method,
        **timing_fields(tokens, elapsed, energy, samples, idle_w, nvml),
        "logits_finite": finite,
        "software": software,
    })


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    presets = args.preset or ["2.7B"]
    dup = next((p for i, p in enumerate(presets) if p in presets[:i]), None)
    if dup is not None:
        ap.error(f"--preset must name each preset once, not {dup} twice")
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            ap.error(f"--out must name a file in an existing folder, not {args.out!r}")
    try:
        import torch
    except ImportError:
        ap.error("needs PyTorch (import torch failed)")
    nvml = None
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda needs a CUDA GPU, and none is visible "
                     "(torch.cuda.is_available() is False); --device cpu runs without power")
        try:
            nvml = _Nvml(torch.cuda.current_device())
        except Exception as e:  # ImportError, or an NVMLError of the driver
            ap.error(f"--device cuda needs NVML for board power (pynvml, package "
                     f"nvidia-ml-py): {type(e).__name__}: {e}")
    idle_w = None if nvml is None else _idle_power(nvml, args.idle_seconds)
    records = []
    for p in presets:
        compile = args.device == "cuda" if args.compile is None else args.compile
        rec = measure(p, args.device, args.seconds, args.seed, not args.no_graph, nvml, idle_w,
                      compile)
        records.append(rec)
        w = "" if rec["power_w"] is None else \
            f", {rec['power_w']:.0f} W, {rec['j_per_token']:.3f} J/token (idle {idle_w:.0f} W)"
        print(f"{p}: {rec['tokens_per_s']:.1f} tokens/s ({rec['ms_per_token']:.3f} ms/token)"
              f"{w} on {rec['gpu']}", file=sys.stderr)
    doc = {"records": records}
    text = json.dumps(doc, indent=2)
    if args.out is not None:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
