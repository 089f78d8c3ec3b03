"""rtl.dsp.pipelined_mul: the exact product, MUL_LATENCY cycles later, for operands of every
signedness and of widths that take one to three chunks; and the chunk counts."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from rtl.dsp import MUL_LATENCY, chunk_count, pipelined_mul


def test_chunk_count():
    # a signed chunk may be 18 bits, an unsigned one 17; further chunks are 17 bits
    assert [chunk_count(w, True) for w in (1, 18, 19, 35, 36)] == [1, 1, 2, 2, 3]
    assert [chunk_count(w, False) for w in (1, 17, 18, 34, 35)] == [1, 1, 2, 2, 3]


@pytest.mark.parametrize("sa, sb", [
    (signed(35), unsigned(16)),   # the projection tail: t * mult
    (unsigned(17), signed(18)),   # one chunk each
    (signed(40), signed(36)),     # three by three
    (unsigned(1), signed(2)),
])
def test_product_and_latency(sa, sb, seed):
    rng = np.random.default_rng(seed)
    a, b, en = Signal(sa), Signal(sb), Signal(init=1)
    m = Module()
    p = pipelined_mul(m, a, b, en, "mul")

    def draw(shape):
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
        # the rails half of the time, else uniform
        return int(rng.choice([lo, hi])) if rng.random() < 0.5 else int(rng.integers(lo, hi + 1))

    pairs = [(draw(sa), draw(sb)) for _ in range(200)]
    stalls = [bool(rng.random() < 0.3) for _ in pairs]

    async def tb(ctx):
        sent = []  # products whose operands the pipeline took, oldest first
        for (x, y), stall in zip(pairs, stalls):
            ctx.set(en, 0 if stall else 1)
            ctx.set(a, x)
            ctx.set(b, y)
            if not stall:
                sent.append(x * y)
                if len(sent) > MUL_LATENCY:
                    assert ctx.get(p) == sent[-1 - MUL_LATENCY], f"seed {seed}"
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
