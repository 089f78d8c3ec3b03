"""cocotb testbench of a unit with several input and output streams (the layer engine and its
stages).

The case pickle (``BIMAMBA_CASE``, from :mod:`cosim.dataflow`) names, per port:

* ``sources``: input streams ``{name: {"beats", "idle"}}``; all are driven at once, each by its
  own source with its own random idle cycles;
* ``memories``: weight streams ``[{"port", "beats", "latency", "period", "bubble"}]``, each
  driven by a :class:`~sim.streams.MemorySource`;
* ``sinks``: output streams ``{name: {"expected", "backpressure", "unchecked"}}``, compared
  beat for beat from beat ``unchecked`` on (the beats before are received, not compared);
* ``reset_at`` (optional): a cycle at which reset is asserted for two cycles, everything in
  flight dropped, and every stream sent again from its first beat (the expected outputs are
  those of the full run).

Figures (mismatches, the cycle of every handshake) go to ``BIMAMBA_RESULT``.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import FallingEdge, SimTimeoutError, Timer, with_timeout

from sim.harness import PERIOD_NS, assert_quiet, load_case, start, write_result
from sim.streams import MemorySource, StreamSink, StreamSource, random_pauses


def _drivers(dut, case: dict, rng: random.Random):
    sources = {name: StreamSource(dut, name, dut.clk, PERIOD_NS, random_pauses(s["idle"], rng))
               for name, s in case["sources"].items()}
    for mem in case["memories"]:
        sources[mem["port"]] = MemorySource(dut, mem["port"], dut.clk, PERIOD_NS,
                                            mem["latency"], mem["period"],
                                            random_pauses(mem["bubble"], rng))
    sinks = {name: StreamSink(dut, name, dut.clk, PERIOD_NS,
                              random_pauses(s["backpressure"], rng))
             for name, s in case["sinks"].items()}
    return sources, sinks


def _beats(case: dict) -> dict[str, list[int]]:
    out = {name: s["beats"] for name, s in case["sources"].items()}
    out.update({mem["port"]: mem["beats"] for mem in case["memories"]})
    return out


@cocotb.test()
async def dataflow_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d", case["name"], case["seed"])
    sources, sinks = _drivers(dut, case, rng)
    await start(dut)
    budget = case["timeout_cycles"] * PERIOD_NS
    words = _beats(case)

    if case.get("reset_at") is not None:
        # A first run, cut short by a reset in the middle of the work.
        tasks = [cocotb.start_soon(src.send(words[n])) for n, src in sources.items()]
        tasks += [cocotb.start_soon(snk.receive(len(case["sinks"][n]["expected"])))
                  for n, snk in sinks.items()]
        await Timer(case["reset_at"] * PERIOD_NS, "ns")
        for t in tasks:
            t.cancel()
        await FallingEdge(dut.clk)
        for src in sources.values():
            src.valid.value = 0
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        sources, sinks = _drivers(dut, case, rng)

    t0 = time.perf_counter()
    collectors = {n: cocotb.start_soon(snk.receive(len(case["sinks"][n]["expected"])))
                  for n, snk in sinks.items()}
    senders = {n: cocotb.start_soon(src.send(words[n])) for n, src in sources.items()}
    try:
        in_cycles = {n: await with_timeout(t, budget, "ns") for n, t in senders.items()}
        results = {n: await with_timeout(t, budget, "ns") for n, t in collectors.items()}
    except SimTimeoutError:
        progress = {n: f"{p.count}/{len(words[n])}" for n, p in sources.items()}
        progress.update({n: f"{p.count}/{len(case['sinks'][n]['expected'])}"
                         for n, p in sinks.items()})
        write_result({"name": case["name"], "seed": case["seed"], "timeout": progress,
                      "logs": {n: p.log for n, p in sources.items()}})
        raise
    wall = time.perf_counter() - t0
    for n in sinks:
        await assert_quiet(dut, getattr(dut, f"{n}__valid"), case.get("quiet_cycles", 64),
                           f"{n} beat")

    result = {"name": case["name"], "seed": case["seed"], "wall_s": wall, "mismatches": {},
              "first_mismatch": {}, "in_cycles": in_cycles, "out_cycles": {}}
    for n, (got, cycles) in results.items():
        exp = case["sinks"][n]["expected"]
        skip = case["sinks"][n].get("unchecked", 0)
        bad = [i for i, (g, e) in enumerate(zip(got, exp)) if i >= skip and g != e]
        result["mismatches"][n] = len(bad)
        result["out_cycles"][n] = cycles
        if bad:
            i = bad[0]
            result["first_mismatch"][n] = f"beat {i}: rtl {got[i]:#x} golden {exp[i]:#x}"
    write_result(result)
    assert not any(result["mismatches"].values()), result["first_mismatch"]
