"""cocotb testbench of the whole-model engine (``rtl/lm.py``) in its simulation harness
(``cosim/bench.py``: the memory model in RTL): tokens in, logits out.

The case pickle (``BIMAMBA_CASE``, from :mod:`cosim.lm`) holds:

* ``static``: the token-independent beats of a token's stream, and ``rows``: every embedding
  row's beats, so the testbench pushes ``rows[token] + static`` for each token, in
  ``burst_beats``-beat words of ``beat_bits`` beats, into the harness, which paces them into
  the engine (``latency``, ``period``, ``bubble``: the harness's ``cfg``, set before reset);
* either ``tokens`` and ``starts`` (all offered at once, back to back, with random idle cycles
  of probability ``idle``), or ``host``: ``"module:function"`` of a host that is called with
  ``host_args`` and returns an object with ``first() -> (token, start) | None`` and
  ``next(logits) -> (token, start) | None``: it reads each token's logits before it names the
  next one (sampling text);
* ``logit_bits``, ``vocab``; ``backpressure`` (pauses on ``logits``); ``reset_at`` (optional):
  a cycle at which reset is asserted, everything in flight dropped and every token sent again.

Figures to ``BIMAMBA_RESULT``: the logits of each token (signed), the tokens, the engine's row
requests, the cycle of each token handshake and of each token's last logit.
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

    async def run(self) -> None:
        while True:
            words, cycles = await self.sink.receive(1)
            self.rows += words
            self.cycles += cycles


# Cycles from a burst's handshake to its first beat being offerable (the harness's burst FIFO,
# lib.fifo.SyncFIFOBuffered: written -> readable, 2, and its output register).
BURST_LATENCY = 3


class _Memory:
    """Pushes each token's beats, ``burst_beats`` to a word, into the harness. The memory
    holds the weights before the engine asks for them: a token is offered only once its first
    burst can be read (:meth:`ready_for`), so the harness's pacing alone sets the timing."""

    def __init__(self, dut, case: dict) -> None:
        self.src = StreamSource(dut, "burst", dut.clk, PERIOD_NS)
        self.case = case
        self.first_in = Event()
        self.tokens_in = 0

    def words(self, token: int) -> list[int]:
        c = self.case
        beats = c["rows"][token] + c["static"]
        K, W = c["burst_beats"], c["beat_bits"]
        out = []
        for i in range(0, len(beats), K):
            w = 0
            for j, b in enumerate(beats[i: i + K]):
                w |= b << (j * W)
            out.append(w)
        return out

    async def send(self, tokens: list[int]) -> None:
        for t in tokens:
            words = self.words(t)
            await self.src.send(words[:1])
            self.tokens_in += 1
            self.first_in.set()
            await self.src.send(words[1:])

    async def ready_for(self, n: int) -> None:
        """Return once the first burst of the ``n``-th token (from 1) can be read."""
        while self.tokens_in < n:
            self.first_in.clear()
            await self.first_in.wait()
        await Timer(BURST_LATENCY * PERIOD_NS, "ns")
        await FallingEdge(self.src.clk)


def _drivers(dut, case: dict, rng: random.Random):
    tok = StreamSource(dut, "token", dut.clk, PERIOD_NS, random_pauses(case["idle"], rng))
    logits = StreamSink(dut, "logits", dut.clk, PERIOD_NS,
                        random_pauses(case["backpressure"], rng))
    return _Rows(dut), _Memory(dut, case), tok, logits


def _word(token: int, start: bool) -> int:
    return (int(token) << 1) | int(bool(start))  # {start: 1, id}


async def _stream(case: dict, mem: _Memory, tok: StreamSource, logits: StreamSink,
                  tasks: list) -> dict:
    """Every token offered at once; the logits collected as they come. The tasks it starts go
    into ``tasks`` (a reset cancels them with it)."""
    V, bits, toks = case["vocab"], case["logit_bits"], case["tokens"]
    push = cocotb.start_soon(mem.send(toks))
    tasks.append(push)
    await mem.ready_for(1)
    send = cocotb.start_soon(tok.send([_word(t, s) for t, s in zip(toks, case["starts"])]))
    tasks.append(send)
    words, cycles = await logits.receive(V * len(toks))
    tok_cycles = await send
    await push
    out = [[_signed(w, bits) for w in words[i * V: (i + 1) * V]] for i in range(len(toks))]
    return {"tokens": list(toks), "logits": out, "token_cycles": tok_cycles,
            "last_logit": [cycles[(i + 1) * V - 1] for i in range(len(out))]}


async def _interactive(case: dict, mem: _Memory, tok: StreamSource, logits: StreamSink,
                       tasks: list) -> dict:
    """The host names each token after reading the logits of the one before."""
    module, _, name = case["host"].partition(":")
    host = getattr(importlib.import_module(module), name)(**case["host_args"])
    V, bits = case["vocab"], case["logit_bits"]
    res = {"tokens": [], "logits": [], "token_cycles": [], "last_logit": []}
    nxt = host.first()
    while nxt is not None:
        t, s = nxt
        push = cocotb.start_soon(mem.send([t]))
        tasks.append(push)
        await mem.ready_for(len(res["tokens"]) + 1)
        res["token_cycles"] += await tok.send([_word(t, s)])
        words, cycles = await logits.receive(V)
        await push
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
    dut.cfg.value = case["cfg"]  # the memory model's parameters (cosim.bench.cfg_word)
    await start(dut)
    budget = case["timeout_cycles"] * PERIOD_NS
    run = _interactive if case.get("host") else _stream

    rows, mem, tok, logits = _drivers(dut, case, rng)
    if case.get("reset_at") is not None:
        # Every task of the first run, the ones it starts included, is cancelled at the reset:
        # a sender left running would drive its port beside the second run's.
        tasks: list = []
        tasks += [cocotb.start_soon(rows.run()),
                  cocotb.start_soon(run(case, mem, tok, logits, tasks))]
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
    side = cocotb.start_soon(rows.run())
    try:
        res = await with_timeout(cocotb.start_soon(run(case, mem, tok, logits, [])), budget,
                                 "ns")
    except SimTimeoutError:
        write_result({"name": case["name"], "seed": case["seed"],
                      "timeout": {"tokens": tok.count, "rows": len(rows.rows),
                                  "bursts": mem.src.count, "logits": logits.count}})
        raise
    wall = time.perf_counter() - t0
    await assert_quiet(dut, dut.logits__valid, case.get("quiet_cycles", 64), "logit")
    side.cancel()
    res.update({"name": case["name"], "seed": case["seed"], "wall_s": wall,
                "rows": rows.rows, "row_cycles": rows.cycles})
    write_result(res)
