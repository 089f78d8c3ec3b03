"""rtl.stall: output_register (no result lost, duplicated or reordered under random stalls, full
throughput when the output is always taken, an enable that is a register), register_slice (the
same through a slice with no combinational path across it) and RegisteredFIFO (the room of
SyncFIFOBuffered, cycle for cycle)."""

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from rtl.bram import BLOCK_RAM_MIN_DEPTH
from rtl.dsp import dsp_target
from rtl.stall import RegisteredFIFO, output_register, register_slice


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


class _Pair(Elaboratable):
    """A RegisteredFIFO beside a SyncFIFOBuffered of the same depth, written alike."""

    def __init__(self, depth: int) -> None:
        self.reg = RegisteredFIFO(width=16, depth=depth)
        self.ref = fifo.SyncFIFOBuffered(width=16, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reg, m.submodules.ref = self.reg, self.ref
        return m


@pytest.mark.parametrize("depth", [3, 4, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_registered_fifo_has_the_room_of_sync_fifo_buffered(depth, seed):
    """Both FIFOs written alike, and read alike: a read in a cycle where the reader is ready and
    both hold a word (as the layer's residual reads its u FIFO: long after the word came).
    w_rdy is equal on every cycle, and every word comes out once, in order."""
    print(f"seed={seed} depth={depth}")
    dut = _Pair(depth)
    rng = np.random.default_rng(seed)
    out = []

    async def tb(ctx):
        n = 0
        for cycle in range(800):
            w = int(rng.random() < 0.6)
            ready = int(rng.random() < (0.9 if cycle % 200 < 100 else 0.2))
            both = ctx.get(dut.reg.r_rdy) & ctx.get(dut.ref.r_rdy)
            room = ctx.get(dut.reg.w_rdy)
            assert room == ctx.get(dut.ref.w_rdy), f"seed {seed}: w_rdy differs at {cycle}"
            for f in (dut.reg, dut.ref):
                ctx.set(f.w_data, n)
                ctx.set(f.w_en, w)
                ctx.set(f.r_en, ready & both)
            if ready and both:
                got = ctx.get(dut.reg.r_data)
                assert got == ctx.get(dut.ref.r_data), f"seed {seed}: word differs at {cycle}"
                out.append(got)
            n += w & room
            await ctx.tick()

    _simulate(dut, tb)
    assert len(out) > 200
    assert out == list(range(len(out)))


def test_registered_fifo_latency_from_empty():
    dut = RegisteredFIFO(width=8, depth=4)

    async def tb(ctx):
        ctx.set(dut.r_en, 1)
        ctx.set(dut.w_data, 42)
        ctx.set(dut.w_en, 1)
        await ctx.tick()
        ctx.set(dut.w_en, 0)
        seen = []
        for _ in range(4):
            seen.append(ctx.get(dut.r_rdy))
            await ctx.tick()
        assert seen == [0, 0, 1, 0]  # three cycles after the write, for one cycle

    _simulate(dut, tb)


@pytest.mark.parametrize("depth", [2, 0, True])
def test_registered_fifo_depth_is_checked(depth):
    with pytest.raises(ValueError, match="depth must be an integer >= 3"):
        RegisteredFIFO(width=8, depth=depth)


class _Slice(wiring.Component):
    src: In(stream.Signature(unsigned(16)))
    dst: Out(stream.Signature(unsigned(16)))

    def elaborate(self, platform):
        m = Module()
        register_slice(m, self.src, self.dst, "s")
        return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_register_slice_passes_every_beat_once_in_order(seed):
    """Random valid and ready: every beat once, in order; neither ready nor valid follows the
    other side within a cycle (both registers); a beat a cycle with ready always high."""
    print(f"seed={seed}")
    dut = _Slice()
    rng = np.random.default_rng(seed)
    got, sent = [], [0]

    async def tb(ctx):
        for cycle in range(1500):
            always = cycle >= 1200
            v, r = int(always or rng.random() < 0.7), int(always or rng.random() < 0.6)
            before = (ctx.get(dut.src.ready), ctx.get(dut.dst.valid), ctx.get(dut.dst.payload))
            ctx.set(dut.src.valid, v)
            ctx.set(dut.src.payload, sent[0])
            ctx.set(dut.dst.ready, r)
            after = (ctx.get(dut.src.ready), ctx.get(dut.dst.valid), ctx.get(dut.dst.payload))
            assert before == after, f"seed {seed}: a combinational path at cycle {cycle}"
            if r and after[1]:
                got.append(after[2])
            if v and after[0]:
                sent[0] += 1
            if cycle > 1210:  # both sides always ready: full throughput
                assert after[0] and after[1] and r
            await ctx.tick()

    _simulate(dut, tb)
    assert got == list(range(len(got))) and len(got) >= sent[0] - 2 and len(got) > 900


@pytest.mark.parametrize("depth", [4, 6])
def test_registered_fifo_streams_a_word_a_cycle(depth):
    """Written every cycle it has room and read every cycle it has a word: after the three
    cycles of the first word, a word every cycle, in order, never refusing a write (three
    words in flight: a depth of 4 or more)."""
    dut = RegisteredFIFO(width=16, depth=depth)
    out, refused = [], []

    async def tb(ctx):
        n = 0
        for cycle in range(200):
            ctx.set(dut.w_data, n)
            ctx.set(dut.w_en, 1)
            ctx.set(dut.r_en, 1)
            if ctx.get(dut.r_rdy):
                out.append((cycle, ctx.get(dut.r_data)))
            if ctx.get(dut.w_rdy):
                n += 1
            else:
                refused.append(cycle)
            await ctx.tick()

    _simulate(dut, tb)
    assert refused == []
    assert out == [(c, c - 3) for c in range(3, 200)]


@pytest.mark.parametrize("target,depth,lut_ram", [
    ("ecp5", 48, True), ("ecp5", BLOCK_RAM_MIN_DEPTH - 1, True),
    ("ecp5", BLOCK_RAM_MIN_DEPTH, False), ("generic", 48, False)])
def test_registered_fifo_asks_for_lut_ram_when_shallow_on_the_ecp5(target, depth, lut_ram):
    """Below the block RAM's depth on the ECP5 the RAM is marked for LUT RAM (Yosys put the
    scan's 48 x 512 FIFO in block RAM); elsewhere Yosys chooses."""
    f = RegisteredFIFO(width=512, depth=depth)
    with dsp_target(target):
        text = verilog.convert(f, name="fifo", emit_src=False, ports=[
            f.w_data, f.w_en, f.w_rdy, f.r_data, f.r_en, f.r_rdy])
    assert text.count('(* ram_style = "distributed" *)') == int(lut_ram)
    assert f"reg [511:0] storage [{depth - 1}:0];" in text
