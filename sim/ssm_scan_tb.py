"""cocotb testbench of the SSM scan unit (``rtl/ssm_scan.py``).

The case pickle (``BIMAMBA_CASE``, from :mod:`cosim.scan`) holds the packed constant, ``bc``
and ``head`` beats and the golden model's y beats; ``bc`` and ``head`` are driven by two
independent sources, so neither waits for the other. Figures go to ``BIMAMBA_RESULT``.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import with_timeout

from sim.harness import PERIOD_NS, assert_quiet, load_case, start, write_result
from sim.streams import StreamSink, StreamSource, random_pauses


@cocotb.test()
async def scan_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d", case["name"], case["seed"])
    cfg = StreamSource(dut, "cfg", dut.clk, PERIOD_NS)
    bc = StreamSource(dut, "bc", dut.clk, PERIOD_NS,
                      random_pauses(max(case["idle"], case["bc_idle"]), rng))
    head = StreamSource(dut, "head", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
    sink = StreamSink(dut, "y", dut.clk, PERIOD_NS, random_pauses(case["backpressure"], rng))
    await start(dut)
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
    await assert_quiet(dut, dut.y__valid, case["cycles_per_token"] + case["latency"], "y beat")

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
    write_result(result)
    assert not bad, first
