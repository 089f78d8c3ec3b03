"""What every testbench here does around its stimulus: read the case, start the clock, reset,
check that nothing more comes out, write the figures."""

from __future__ import annotations

import json
import os
import pickle

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer

__all__ = ["PERIOD_NS", "load_case", "write_result", "start", "assert_quiet"]

PERIOD_NS = 10


def load_case() -> dict:
    """The case pickle named by ``BIMAMBA_CASE`` (written by ``cosim.*``)."""
    with open(os.environ["BIMAMBA_CASE"], "rb") as fh:
        return pickle.load(fh)


def write_result(result: dict) -> None:
    """Figures for the runner, into the JSON file named by ``BIMAMBA_RESULT``."""
    with open(os.environ["BIMAMBA_RESULT"], "w") as fh:
        json.dump(result, fh)


async def start(dut, reset_cycles: int = 2) -> None:
    """Start a free-running clock (no Python per cycle) and hold reset for ``reset_cycles``
    falling edges (at least 2: the rising edge between them is the one that resets, whatever
    level the clock starts at); returns at a falling edge with reset released."""
    if reset_cycles < 2:
        raise ValueError(f"reset_cycles must be >= 2, not {reset_cycles}")
    dut.rst.value = 1
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for _ in range(reset_cycles):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def assert_quiet(dut, valid, cycles: int, what: str) -> None:
    """Fail if ``valid`` is high now or rises within ``cycles`` (watched without a Python
    wake-up per cycle)."""
    await FallingEdge(dut.clk)
    assert not valid.value, f"{what} after the last expected one"
    hit = await First(RisingEdge(valid), Timer(cycles * PERIOD_NS, "ns"))
    assert isinstance(hit, Timer), f"{what} after the last expected one"
