"""rtl.stall.output_register: no result lost, duplicated or reordered under random stalls, full
throughput when the output is always taken, and an enable that is a register."""

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from rtl.stall import output_register


class _Pipe(wiring.Component):
    """A source of consecutive numbers behind output_register: one result per cycle of
    ``adv`` while ``go``."""

    out: Out(stream.Signature(unsigned(16)))
    go: Out(1)  # driven by the testbench (an Out port so that it is a plain signal)

    def elaborate(self, platform):
        m = Module()
        self.copy = Signal(init=1)
        adv, valid, payload = output_register(m, self.out, adv_copies=[self.copy])
        self.adv = adv
        count = Signal(16)
        m.d.comb += [valid.eq(self.go), payload.eq(count)]
        with m.If(adv & self.go):
            m.d.sync += count.eq(count + 1)
        return m


def _simulate(dut, tb) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def _run(ready_p: float, go_p: float, cycles: int, seed: int):
    dut = _Pipe()
    rng = np.random.default_rng(seed)
    got, produced, trace = [], [0], []

    async def tb(ctx):
        for _ in range(cycles):
            go, ready = int(rng.random() < go_p), int(rng.random() < ready_p)
            ctx.set(dut.go, go)
            ctx.set(dut.out.ready, ready)
            adv = ctx.get(dut.adv)
            assert ctx.get(dut.copy) == adv, f"seed {seed}: the copy of adv differs"
            if ctx.get(dut.out.valid) and ready:
                got.append(ctx.get(dut.out.payload))
            produced[0] += adv & go
            trace.append((adv, ready))
            await ctx.tick()

    _simulate(dut, tb)
    return got, produced[0], trace


@pytest.mark.parametrize("ready_p, go_p", [(0.5, 0.9), (0.2, 1.0), (0.9, 0.5)])
def test_random_stalls_lose_nothing(ready_p, go_p, seed):
    got, produced, _ = _run(ready_p, go_p, 2000, seed)
    print(f"seed {seed}: {produced} produced, {len(got)} taken")
    assert got == list(range(len(got)))  # in order, none lost or repeated
    assert produced - len(got) <= 2  # the rest is still in the buffer


def test_always_ready_is_full_throughput(seed):
    got, produced, trace = _run(1.0, 1.0, 300, seed)
    assert all(adv for adv, _ in trace)
    assert got == list(range(299))  # one a cycle, one cycle after it is produced


def test_enable_is_a_register():
    """adv changes only at clock edges: within a cycle it does not follow out.ready."""
    dut = _Pipe()
    seen = []

    async def tb(ctx):
        ctx.set(dut.go, 1)
        for ready in (0, 0, 0, 1, 0, 1, 1):
            ctx.set(dut.out.ready, 0)
            a0 = ctx.get(dut.adv)
            ctx.set(dut.out.ready, 1)
            a1 = ctx.get(dut.adv)
            ctx.set(dut.out.ready, ready)
            seen.append((a0, a1))
            await ctx.tick()

    _simulate(dut, tb)
    assert all(a0 == a1 for a0, a1 in seen)
    assert [a for a, _ in seen] == [1, 1, 0, 0, 1, 0, 1]  # stops once the spare is full


def test_adv_copies_must_be_one_bit_set_at_reset():
    m = Module()
    m._MustUse__silence = True  # only the error is wanted
    out = stream.Signature(unsigned(8)).create()
    with pytest.raises(ValueError, match="adv_copies must be 1-bit signals with init=1"):
        output_register(m, out, adv_copies=[Signal(2, init=1)])
    with pytest.raises(ValueError, match="adv_copies must be 1-bit signals with init=1"):
        output_register(m, out, adv_copies=[Signal()])
