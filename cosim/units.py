"""Co-simulation of fixed-latency stream units (the table units of the scan datapath)."""

from __future__ import annotations

from .verilator import build, run_test, unit_dir, waves_requested

__all__ = ["run_stream_unit"]


def run_stream_unit(top, module: str, key: str, name: str, inputs: list[int],
                    expected: list[int], *, idle: float = 0.0, backpressure: float = 0.0,
                    seed: int = 0, waves: bool | None = None, dsp: str = "generic") -> dict:
    """Build ``top`` (cached by ``key``), stream ``inputs`` through it, compare with ``expected``.

    Words are unsigned payload ints; an expected word of None is not checked (a word the RTL
    reads from memory it has not yet written). ``dsp`` is the :mod:`rtl.dsp` target the unit
    is built for. Returns the testbench's figures (mismatches, latency).
    """
    d = unit_dir(module, "unit", key, dsp)
    waves = waves_requested(waves)
    runner, build_dir = build(top, module, d, waves, dsp=dsp)
    payload = {"name": name, "seed": seed, "idle": idle, "backpressure": backpressure,
               "inputs": [int(v) for v in inputs],
               "expected": [None if v is None else int(v) for v in expected]}
    return run_test(runner, build_dir, module, "sim.stream_unit_tb", d / name, payload, seed,
                    waves)
