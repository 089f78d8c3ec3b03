"""cocotb testbench of a fixed-latency stream unit (``i`` -> ``o``), e.g. the table units.

The case pickle named by ``BIMAMBA_CASE`` holds the input words and the expected output words
(unsigned payload ints, from the golden model; None where a word is not checked); every input
is sent back to back, every output compared. Figures go to ``BIMAMBA_RESULT``.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import FallingEdge, with_timeout
from cocotb.utils import get_sim_time

from sim.harness import PERIOD_NS, load_case, start, write_result
from sim.streams import StreamSink, StreamSource, random_pauses


async def _back_to_back(dut, inputs: list[int], n_out: int) -> tuple[list[int], list[int],
                                                                     list[int]]:
    """Every input on consecutive cycles, ``ready`` held high on the output: one Python
    wake-up a cycle (the stream drivers take four, in two coroutines), which is what makes an
    exhaustive table check over 2**16 codes and more cheap.

    At each falling edge the output and the input's ``ready`` are read before anything is
    written: a fixed-latency unit's outputs are registered, and its ``ready`` does not depend
    on the payload, so they are the values the next rising edge sees. Returns the outputs and
    the cycles of the input and output handshakes, numbered as :mod:`sim.streams` numbers
    them.
    """
    i_payload, i_valid, i_ready = dut.i__payload, dut.i__valid, dut.i__ready
    o_payload, o_valid = dut.o__payload, dut.o__valid
    dut.o__ready.value = 1
    got, in_cycles, out_cycles = [], [], []
    k, n_in = 0, len(inputs)
    cycle = int(get_sim_time("ns") // PERIOD_NS)  # start() returns at a falling edge
    while len(got) < n_out:
        # This cycle's output beat and ready, as the coming rising edge sees them.
        if o_valid.value:
            got.append(o_payload.value.to_unsigned())
            out_cycles.append(cycle)
        if k < n_in:
            i_payload.value = inputs[k]
            i_valid.value = 1
            if i_ready.value:  # taken at the coming rising edge
                in_cycles.append(cycle)
                k += 1
        else:
            i_valid.value = 0
        await FallingEdge(dut.clk)
        cycle += 1
    return got, in_cycles, out_cycles


@cocotb.test()
async def stream_unit_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d, %d vectors", case["name"], case["seed"], len(case["inputs"]))
    await start(dut)
    t0 = time.perf_counter()
    budget = (20 * len(case["inputs"]) + 1000) * PERIOD_NS  # fail on a hang, never spin
    if case["idle"] == 0 and case["backpressure"] == 0:
        got, in_cycles, out_cycles = await with_timeout(
            _back_to_back(dut, case["inputs"], len(case["expected"])), budget, "ns")
    else:
        source = StreamSource(dut, "i", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
        sink = StreamSink(dut, "o", dut.clk, PERIOD_NS,
                          random_pauses(case["backpressure"], rng))
        collector = cocotb.start_soon(sink.receive(len(case["expected"])))
        in_cycles = await with_timeout(source.send(case["inputs"]), budget, "ns")
        got, out_cycles = await with_timeout(collector, budget, "ns")
    wall = time.perf_counter() - t0
    bad = [i for i, (g, e) in enumerate(zip(got, case["expected"]))
           if e is not None and g != e]
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
