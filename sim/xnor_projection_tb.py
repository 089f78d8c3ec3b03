"""cocotb testbench of the XNOR-popcount projection unit (``rtl/xnor_projection.py``).

The case (configuration, memory images, activation tokens, expected outputs from the golden
model, stream pause probabilities, seed) comes from the pickle named by ``BIMAMBA_CASE``, written
by :mod:`cosim.projection`; the measured figures go to the JSON file named by
``BIMAMBA_RESULT``. Every output lane of every beat is compared bit for bit.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import FallingEdge, with_timeout

from sim.harness import PERIOD_NS, assert_quiet, load_case, start, write_result
from sim.streams import StreamSink, StreamSource, random_pauses


def _pack(values, bits: int) -> int:
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def _unpack_signed(word: int, bits: int, n: int) -> list[int]:
    out = []
    for i in range(n):
        v = (word >> (i * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


class ProjectionDriver:
    """Packs activation tokens into ``act`` beats and memory images into ``load`` beats."""

    def __init__(self, dut, case: dict, pause) -> None:
        self.case = case
        self.cfg = case["config"]
        self.act = StreamSource(dut, "act", dut.clk, PERIOD_NS, pause)
        self.load = StreamSource(dut, "load", dut.clk, PERIOD_NS)

    def token_beats(self, token) -> list[int]:
        c = self.cfg
        simd, bits = c["simd"], c["act_bits"]
        codes = [(1 if a > 0 else 0) for a in token] if bits == 1 else list(token)
        # Lanes past d_in in the last beat carry junk on purpose: the unit must ignore them.
        codes += [-1] * (c["folds"] * simd - len(codes))
        return [_pack(codes[f * simd : (f + 1) * simd], bits) for f in range(c["folds"])]

    async def load_memories(self) -> None:
        aw = self.cfg["load_addr_bits"]
        await self.load.send([sel | (addr << 2) | (word << (2 + aw))
                              for sel, addr, word in self.case["beats"]])


class ProjectionMonitor:
    """Collects ``out`` beats and unpacks them into signed lanes."""

    def __init__(self, dut, cfg: dict, pause) -> None:
        self.cfg = cfg
        self.sink = StreamSink(dut, "out", dut.clk, PERIOD_NS, pause)

    async def collect(self, tokens: int) -> tuple[list[list[int]], list[int]]:
        c = self.cfg
        words, cycles = await self.sink.receive(tokens * c["row_groups"])
        rows = []
        for t in range(tokens):
            lanes = []
            for w in words[t * c["row_groups"] : (t + 1) * c["row_groups"]]:
                lanes += _unpack_signed(w, c["out_bits"], c["pe"])
            rows.append(lanes)
        return rows, cycles


def check(got: list[list[int]], expected, d_out: int) -> tuple[int, str | None]:
    """Count mismatching outputs (pad lanes must be 0); describe the first."""
    bad, first = 0, None
    for t, (g, e) in enumerate(zip(got, expected)):
        want = list(map(int, e)) + [0] * (len(g) - d_out)
        for i, (a, b) in enumerate(zip(g, want)):
            if a != b:
                bad += 1
                if first is None:
                    first = f"token {t} row {i}: rtl {a} != golden {b}"
    return bad, first


@cocotb.test()
async def projection_case(dut):
    case = load_case()
    cfg = case["config"]
    rng = random.Random(case["seed"])
    dut._log.info("case %s seed=%d", case["name"], case["seed"])
    driver = ProjectionDriver(dut, case, random_pauses(case["idle"], rng))
    monitor = ProjectionMonitor(dut, cfg, random_pauses(case["backpressure"], rng))
    await start(dut, reset_cycles=2)
    await driver.load_memories()

    if case["reset_mid_token"]:
        # A reset with a token half loaded ("load") or being computed with its first outputs
        # held back by backpressure ("compute"): the unit must drop it, keep its weights and
        # constants, and compute the next tokens.
        beats = driver.token_beats(case["tokens"][0])
        if case["reset_mid_token"] == "load":
            await driver.act.send(beats[: max(1, len(beats) // 2)])
            wait = 3
        else:
            dut.out__ready.value = 0
            await driver.act.send(beats + driver.token_beats(case["tokens"][0]))
            wait = cfg["cycles_per_token"] // 2 + cfg["latency"]
        for _ in range(wait):
            await FallingEdge(dut.clk)
        dut.rst.value = 1
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    tokens = case["tokens"]
    collector = cocotb.start_soon(monitor.collect(len(tokens)))
    t0 = time.perf_counter()
    in_cycles = []
    for token in tokens:
        in_cycles += await driver.act.send(driver.token_beats(token))
    # A hang must fail, not wait forever: allow ten times the stall-free time.
    budget = 10 * (len(tokens) * cfg["cycles_per_token"] + cfg["latency"]) + 1000
    got, out_cycles = await with_timeout(collector, budget * PERIOD_NS, "ns")
    wall = time.perf_counter() - t0
    # Nothing more may come out for one more token's time.
    await assert_quiet(dut, dut.out__valid, cfg["cycles_per_token"] + cfg["latency"],
                       "output beat")

    mismatches, first = check(got, case["expected"], cfg["d_out"])
    n = len(tokens)
    measured = out_cycles[-1] - in_cycles[0] + 1
    rg = cfg["row_groups"]
    spacing = [out_cycles[(t + 1) * rg - 1] - out_cycles[t * rg - 1] for t in range(1, n)]
    result = {
        "name": case["name"], "seed": case["seed"], "tokens": n,
        "outputs": n * cfg["d_out"], "mismatches": mismatches, "first_mismatch": first,
        "cycles_measured": measured,
        "cycles_predicted": n * cfg["cycles_per_token"] + cfg["latency"],
        "token_spacing": spacing, "wall_s": wall,
        "sim_cycles": measured, "cycles_per_s": measured / wall if wall > 0 else None,
    }
    write_result(result)
    assert mismatches == 0, first
    if not (case["idle"] or case["backpressure"]):
        assert measured == result["cycles_predicted"], result
        assert all(s == cfg["cycles_per_token"] for s in spacing), spacing
