"""cocotb testbench of the SSM scan unit (``rtl/ssm_scan.py``).

The case pickle (``BIMAMBA_CASE``, from :mod:`cosim.scan`) holds the packed constant, ``bc``
and ``head`` beats and the golden model's y beats; ``bc`` and ``head`` are driven by two
independent sources, so neither waits for the other. Figures go to ``BIMAMBA_RESULT``.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer, with_timeout

from sim.streams import StreamSink, StreamSource, random_pauses

PERIOD_NS = 10


@cocotb.test()
async def scan_case(dut):
    with open(os.environ["BIMAMBA_CASE"], "rb") as fh:
        case = pickle.load(fh)
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d", case["name"], case["seed"])
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    cfg = StreamSource(dut, "cfg", dut.clk, PERIOD_NS)
    bc = StreamSource(dut, "bc", dut.clk, PERIOD_NS,
                      random_pauses(max(case["idle"], case["bc_idle"]), rng))
    head = StreamSource(dut, "head", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
    sink = StreamSink(dut, "y", dut.clk, PERIOD_NS, random_pauses(case["backpressure"], rng))
    dut.rst.value = 1
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await cfg.send(case["cfg"])

    n = len(case["expected"])
    collector = cocotb.start_soon(sink.receive(n))
    bc_task = cocotb.start_soon(bc.send(case["bc"]))
    t0 = time.perf_counter()
    # A deadlock must fail, not spin the clock forever: ten times the stall-free time.
    budget = (10 * (case["tokens"] * case["cycles_per_token"] + case["latency"]) + 1000) * PERIOD_NS
    head_cycles = await with_timeout(head.send(case["head"]), budget, "ns")
    await with_timeout(bc_task, budget, "ns")
    got, out_cycles = await with_timeout(collector, budget, "ns")
    wall = time.perf_counter() - t0
    await FallingEdge(dut.clk)
    assert not dut.y__valid.value, "y beat after the last expected one"
    extra = await First(RisingEdge(dut.y__valid),
                        Timer((case["cycles_per_token"] + case["latency"]) * PERIOD_NS, "ns"))
    assert isinstance(extra, Timer), "y beat after the last expected one"

    bad = [i for i, (g, e) in enumerate(zip(got, case["expected"])) if g != e]
    first = None
    if bad:
        i = bad[0]
        first = (f"token {i // case['heads']} head {i % case['heads']}: "
                 f"rtl {got[i]:#x} golden {case['expected'][i]:#x}")
    H = case["heads"]
    measured = out_cycles[-1] - head_cycles[0] + 1
    spacing = [out_cycles[(t + 1) * H - 1] - out_cycles[t * H - 1]
               for t in range(1, case["tokens"])]
    result = {"name": case["name"], "seed": case["seed"], "tokens": case["tokens"],
              "beats": n, "mismatches": len(bad), "first_mismatch": first,
              "cycles_measured": measured,
              "cycles_predicted": case["tokens"] * case["cycles_per_token"] + case["latency"],
              "token_spacing": spacing, "wall_s": wall,
              "cycles_per_s": measured / wall if wall > 0 else None}
    with open(os.environ["BIMAMBA_RESULT"], "w") as fh:
        json.dump(result, fh)
    assert not bad, first
