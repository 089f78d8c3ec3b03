"""cocotb testbench of the whole-model engine (``rtl/lm.py``): tokens in, logits out, the weight
stream from a memory that answers the engine's row requests.

The case pickle (``BIMAMBA_CASE``, from :mod:`cosim.lm`) holds:

* ``static``: the token-independent beats of a token's stream, and ``rows``: every embedding
  row's beats (``rows[token]``), so the memory sends ``rows[token] + static`` for each request;
* the memory's ``latency`` and ``period``: a token's first beat is offered at the latest of
  ``latency + 1`` cycles after its row request and ``period`` cycles after the previous
  token's last beat; each later beat ``period`` cycles after the previous handshake, with
  random bubbles of probability ``bubble``;
* either ``tokens`` and ``starts`` (all offered at once, back to back, with random idle cycles
  of probability ``idle``), or ``host``: ``"module:function"`` of a host that is called with
  ``host_args`` and returns an object with ``first() -> (token, start) | None`` and
  ``next(logits) -> (token, start) | None``: it reads each token's logits before it names the
  next one (sampling text);
* ``logit_bits``, ``vocab``; ``backpressure`` (pauses on ``logits``); ``reset_at`` (optional):
  a cycle at which reset is asserted, everything in flight dropped and every token sent again.

Figures to ``BIMAMBA_RESULT``: the logits of each token (signed), the tokens, the cycle of each
token handshake and of each token's last logit.
"""

from __future__ import annotations

import importlib
import random
import time

import cocotb
from cocotb.triggers import Event, FallingEdge, SimTimeoutError, Timer, with_timeout

from sim.harness import PERIOD_NS, assert_quiet, load_case, start, write_result
from sim.streams import StreamSink, StreamSource, random_pauses


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


class _Rows:
    """Collects the engine's row requests (always ready) with their cycles."""

    def __init__(self, dut) -> None:
        self.sink = StreamSink(dut, "row", dut.clk, PERIOD_NS)
        self.rows: list[int] = []
        self.cycles: list[int] = []
        self.arrived = Event()

    async def run(self) -> None:
        while True:
            words, cycles = await self.sink.receive(1)
            self.rows += words
            self.cycles += cycles
            self.arrived.set()  # wakes the memory in this time step (a falling edge)


class _Memory:
    """Answers row requests in order with ``rows[token] + static``."""

    def __init__(self, dut, case: dict, rows: _Rows, rng: random.Random) -> None:
        self.src = StreamSource(dut, "mem", dut.clk, PERIOD_NS,
                                random_pauses(case["bubble"], rng), gap=case["period"] - 1)
        self.case, self.requests = case, rows

    async def run(self) -> None:
        c, lat = self.case, self.case["latency"]
        served = 0
        while True:
            while len(self.requests.rows) <= served:
                self.requests.arrived.clear()
                await self.requests.arrived.wait()
            # At a falling edge: the earliest offer is latency + 1 after the request's cycle.
            wait = self.requests.cycles[served] + 1 + lat - self.src.cycle()
            if wait > 0:
                await Timer(wait * PERIOD_NS, "ns")
            await self.src.send(c["rows"][self.requests.rows[served]] + c["static"])
            served += 1


def _drivers(dut, case: dict, rng: random.Random):
    rows = _Rows(dut)
    mem = _Memory(dut, case, rows, rng)
    tok = StreamSource(dut, "token", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
    logits = StreamSink(dut, "logits", dut.clk, PERIOD_NS,
                        random_pauses(case["backpressure"], rng))
    return rows, mem, tok, logits


def _word(token: int, start: bool) -> int:
    return (int(token) << 1) | int(bool(start))  # {start: 1, id}


async def _stream(case: dict, tok: StreamSource, logits: StreamSink) -> dict:
    """Every token offered at once; the logits collected as they come."""
    V, bits = case["vocab"], case["logit_bits"]
    send = cocotb.start_soon(tok.send([_word(t, s) for t, s in zip(case["tokens"],
                                                                    case["starts"])]))
    words, cycles = await logits.receive(V * len(case["tokens"]))
    tok_cycles = await send
    out = [[_signed(w, bits) for w in words[i * V: (i + 1) * V]]
           for i in range(len(case["tokens"]))]
    return {"tokens": list(case["tokens"]), "logits": out, "token_cycles": tok_cycles,
            "last_logit": [cycles[(i + 1) * V - 1] for i in range(len(out))]}


async def _interactive(case: dict, tok: StreamSource, logits: StreamSink) -> dict:
    """The host names each token after reading the logits of the one before."""
    module, _, name = case["host"].partition(":")
    host = getattr(importlib.import_module(module), name)(**case["host_args"])
    V, bits = case["vocab"], case["logit_bits"]
    res = {"tokens": [], "logits": [], "token_cycles": [], "last_logit": []}
    nxt = host.first()
    while nxt is not None:
        t, s = nxt
        res["token_cycles"] += await tok.send([_word(t, s)])
        words, cycles = await logits.receive(V)
        lg = [_signed(w, bits) for w in words]
        res["tokens"].append(int(t))
        res["logits"].append(lg)
        res["last_logit"].append(cycles[-1])
        nxt = host.next(lg)
    res["host_out"] = [int(b) for b in getattr(host, "out", [])]
    return res


@cocotb.test()
async def lm_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d", case["name"], case["seed"])
    await start(dut)
    budget = case["timeout_cycles"] * PERIOD_NS
    run = _interactive if case.get("host") else _stream

    rows, mem, tok, logits = _drivers(dut, case, rng)
    if case.get("reset_at") is not None:
        tasks = [cocotb.start_soon(rows.run()), cocotb.start_soon(mem.run()),
                 cocotb.start_soon(run(case, tok, logits))]
        await Timer(case["reset_at"] * PERIOD_NS, "ns")
        for t in tasks:
            t.cancel()
        await FallingEdge(dut.clk)
        tok.valid.value = 0
        mem.src.valid.value = 0
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        rows, mem, tok, logits = _drivers(dut, case, rng)

    t0 = time.perf_counter()
    side = [cocotb.start_soon(rows.run()), cocotb.start_soon(mem.run())]
    try:
        res = await with_timeout(cocotb.start_soon(run(case, tok, logits)), budget, "ns")
    except SimTimeoutError:
        write_result({"name": case["name"], "seed": case["seed"],
                      "timeout": {"tokens": tok.count, "rows": len(rows.rows),
                                  "mem": mem.src.count, "logits": logits.count}})
        raise
    wall = time.perf_counter() - t0
    await assert_quiet(dut, dut.logits__valid, case.get("quiet_cycles", 64), "logit")
    for t in side:
        t.cancel()
    res.update({"name": case["name"], "seed": case["seed"], "wall_s": wall,
                "rows": rows.rows, "row_cycles": rows.cycles, "mem_beats": mem.src.count})
    write_result(res)
