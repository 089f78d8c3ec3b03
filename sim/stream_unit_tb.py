"""cocotb testbench of a fixed-latency stream unit (``i`` -> ``o``), e.g. the table units.

The case pickle named by ``BIMAMBA_CASE`` holds the input words and the expected output words
(unsigned payload ints, from the golden model); every input is sent back to back, every output
compared. Figures go to ``BIMAMBA_RESULT``.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import with_timeout

from sim.harness import PERIOD_NS, load_case, start, write_result
from sim.streams import StreamSink, StreamSource, random_pauses


@cocotb.test()
async def stream_unit_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d, %d vectors", case["name"], case["seed"], len(case["inputs"]))
    source = StreamSource(dut, "i", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
    sink = StreamSink(dut, "o", dut.clk, PERIOD_NS, random_pauses(case["backpressure"], rng))
    await start(dut)
    collector = cocotb.start_soon(sink.receive(len(case["expected"])))
    t0 = time.perf_counter()
    budget = (20 * len(case["inputs"]) + 1000) * PERIOD_NS  # fail on a hang, never spin
    in_cycles = await with_timeout(source.send(case["inputs"]), budget, "ns")
    got, out_cycles = await with_timeout(collector, budget, "ns")
    wall = time.perf_counter() - t0
    bad = [i for i, (g, e) in enumerate(zip(got, case["expected"])) if g != e]
    first = None
    if bad:
        i = bad[0]
        first = f"vector {i}: input {case['inputs'][i]:#x} rtl {got[i]:#x} golden {case['expected'][i]:#x}"
    result = {"name": case["name"], "seed": case["seed"], "vectors": len(got),
              "mismatches": len(bad), "first_mismatch": first,
              "latency_measured": out_cycles[0] - in_cycles[0],
              "cycles": out_cycles[-1] - in_cycles[0] + 1, "wall_s": wall}
    write_result(result)
    assert not bad, first
