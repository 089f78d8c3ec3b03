"""Co-simulation of multi-stream units (the layer engine and its stages): build, drive the
streams of a case through ``sim.dataflow_tb``, return the figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from .verilator import Phase, build, run_test, unit_dir, waves_requested

__all__ = ["Memory", "DataflowCase", "run_dataflow"]


@dataclass
class Memory:
    """The weight stream of a case: ``beats`` on ``port``, the first after ``latency`` cycles,
    then one per ``period`` cycles at most, with random bubbles of probability ``bubble``."""

    port: str
    beats: list[int]
    latency: int = 0
    period: int = 1
    bubble: float = 0.0


@dataclass
class DataflowCase:
    """Beats in and expected beats out, per port name (payloads as unsigned ints)."""

    name: str
    sources: dict[str, list[int]]
    expected: dict[str, list[int]]
    memories: list[Memory] = field(default_factory=list)
    idle: float = 0.0
    backpressure: float = 0.0
    seed: int = 0
    reset_at: int | None = None
    timeout_cycles: int = 1_000_000
    # Leading beats of a sink that are received but not compared (their expected beats are
    # placeholders): words of a RAM that reset leaves undefined.
    unchecked: dict[str, int] = field(default_factory=dict)


def run_dataflow(top, module: str, key: str, case: DataflowCase, waves: bool | None = None,
                 on_phase: Phase | None = None) -> dict:
    """Build ``top`` as ``module`` (cached by ``key``) and run ``case``; return the figures."""
    waves = waves_requested(waves)
    d = unit_dir(module, "df", key)
    runner, build_dir = build(top, module, d, waves, on_phase)
    payload = {
        "name": case.name, "seed": case.seed, "timeout_cycles": case.timeout_cycles,
        "reset_at": case.reset_at,
        "sources": {n: {"beats": [int(b) for b in v], "idle": case.idle}
                    for n, v in case.sources.items()},
        "sinks": {n: {"expected": [int(b) for b in v], "backpressure": case.backpressure,
                      "unchecked": case.unchecked.get(n, 0)}
                  for n, v in case.expected.items()},
    }
    payload["memories"] = [{"port": mm.port, "beats": [int(b) for b in mm.beats],
                            "latency": mm.latency, "period": mm.period, "bubble": mm.bubble}
                           for mm in case.memories]
    return run_test(runner, build_dir, module, "sim.dataflow_tb", d / case.name, payload,
                    case.seed, waves, on_phase)
