"""Co-simulation of fixed-latency stream units (the table units of the scan datapath)."""

from __future__ import annotations

import json
import os
import pickle

from .verilator import build, unit_dir

__all__ = ["run_stream_unit"]


def run_stream_unit(top, module: str, key: str, name: str, inputs: list[int],
                    expected: list[int], *, idle: float = 0.0, backpressure: float = 0.0,
                    seed: int = 0, waves: bool | None = None) -> dict:
    """Build ``top`` (cached by ``key``), stream ``inputs`` through it, compare with ``expected``.

    Words are unsigned payload ints. Returns the testbench's figures (mismatches, latency).
    """
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    d = unit_dir(module, "unit", key)
    runner, build_dir = build(top, module, d, waves)
    case_dir = d / name
    case_dir.mkdir(parents=True, exist_ok=True)
    case_file, result_file = case_dir / "case.pkl", case_dir / "result.json"
    with open(case_file, "wb") as fh:
        pickle.dump({"name": name, "seed": seed, "idle": idle, "backpressure": backpressure,
                     "inputs": [int(v) for v in inputs],
                     "expected": [int(v) for v in expected]}, fh)
    result_file.unlink(missing_ok=True)
    runner.test(hdl_toplevel=module, test_module="sim.stream_unit_tb", build_dir=build_dir,
                test_dir=case_dir, waves=waves, log_file=case_dir / "sim.log",
                plusargs=["+verilator+rand+reset+2", f"+verilator+seed+{seed + 1}"],
                extra_env={"BIMAMBA_CASE": str(case_file), "BIMAMBA_RESULT": str(result_file)})
    if not result_file.exists():
        raise RuntimeError(f"simulation of {name} left no result; see {case_dir / 'sim.log'}")
    return json.loads(result_file.read_text())
