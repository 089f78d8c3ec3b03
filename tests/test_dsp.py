"""rtl.dsp.pipelined_mul: the exact product, MUL_LATENCY cycles later, for operands of every
signedness and of widths that take one to three chunks; and the chunk counts."""

import re

import numpy as np
import pytest
from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from cosim.units import run_stream_unit
from rtl.dsp import (DSP_TARGETS, MUL_LATENCY, chunk_count, dsp_target, pipelined_mul,
                     registered_mul)
from rtl.emit import emit


def test_chunk_count():
    # a signed chunk may be 18 bits, an unsigned one 17; further chunks are 17 bits
    assert [chunk_count(w, True) for w in (1, 18, 19, 35, 36)] == [1, 1, 2, 2, 3]
    assert [chunk_count(w, False) for w in (1, 17, 18, 34, 35)] == [1, 1, 2, 2, 3]


def _draw(rng, shape):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    # the rails half of the time, else uniform
    return int(rng.choice([lo, hi])) if rng.random() < 0.5 else int(rng.integers(lo, hi + 1))


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

    pairs = [(_draw(rng, sa), _draw(rng, sb)) for _ in range(200)]
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


# Products of the Verilator bank: the pipelined shapes above, and registered_mul's one-block
# operands (the PWL slope product: signed slope, unsigned offset) with 2 and 3 stages.
BANK = [(signed(35), unsigned(16), None), (unsigned(17), signed(18), None),
        (signed(40), signed(36), None), (unsigned(1), signed(2), None),
        (signed(18), unsigned(17), 2), (signed(11), unsigned(9), 3)]


class MulBank(wiring.Component):
    """Every product of :data:`BANK` side by side, as a stream unit of latency MUL_LATENCY
    (``i``: the operands, packed; ``o``: the products, packed)."""

    latency = MUL_LATENCY

    def __init__(self):
        a_bits = sum(sa.width + sb.width for sa, sb, _ in BANK)
        p_bits = sum((Signal(sa) * Signal(sb)).shape().width for sa, sb, _ in BANK)
        super().__init__({"i": In(stream.Signature(a_bits)), "o": Out(stream.Signature(p_bits))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        pos, outs = 0, []
        for k, (sa, sb, stages) in enumerate(BANK):
            a = self.i.payload[pos: pos + sa.width]
            b = self.i.payload[pos + sa.width: pos + sa.width + sb.width]
            pos += sa.width + sb.width
            a = a.as_signed() if sa.signed else a
            b = b.as_signed() if sb.signed else b
            if stages is None:
                outs.append(pipelined_mul(m, a, b, en, f"mul{k}"))
            else:
                p = registered_mul(m, a, b, en, f"mul{k}", stages=stages)
                for d in range(MUL_LATENCY - stages):
                    q = Signal(p.shape(), name=f"mul{k}_d{d}")
                    with m.If(en):
                        m.d.sync += q.eq(p)
                    p = q
                outs.append(p)
        valid = self.i.valid
        for d in range(MUL_LATENCY):
            v = Signal(name=f"valid{d}")
            with m.If(en):
                m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(Cat(*outs))]
        return m


def _pack(fields):
    word, pos = 0, 0
    for v, w in fields:
        word |= (v & ((1 << w) - 1)) << pos
        pos += w
    return word


@pytest.mark.parametrize("dsp", DSP_TARGETS)
def test_bank_in_verilator(dsp):
    """Both targets in Verilator: ``ecp5`` runs every chunk product through the MULT18X18D
    model (fpga/models), with 30 % idle input and 30 % back-pressure."""
    seed = 5
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    inputs, want = [], []
    for _ in range(400):
        ops, prods = [], []
        for sa, sb, _ in BANK:
            x, y = _draw(rng, sa), _draw(rng, sb)
            ops += [(x, sa.width), (y, sb.width)]
            prods.append((x * y, (Signal(sa) * Signal(sb)).shape().width))
        inputs.append(_pack(ops))
        want.append(_pack(prods))
    res = run_stream_unit(MulBank(), "mul_bank", "bank", "random", inputs, want, idle=0.3,
                          backpressure=0.3, seed=seed, dsp=dsp)
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["vectors"] == len(inputs)


def test_ecp5_target_instantiates_the_blocks():
    """The ``ecp5`` target puts one MULT18X18D per chunk product, with its input and output
    registers on CLK0 (no pipeline register); the generic target none."""
    text = emit(MulBank(), "bank", dsp="ecp5")
    chunks = sum(chunk_count(sa.width, sa.signed) * chunk_count(sb.width, sb.signed)
                 for sa, sb, stages in BANK if stages is None)
    blocks = re.findall(r"MULT18X18D #\((.*?)\)\s*\w+\s*\(", text, re.S)
    assert len(blocks) == chunks + 2
    for b in blocks:
        assert re.search(r"REG_PIPELINE_CLK\(\"NONE\"\)", b), b
        for r in ("INPUTA", "INPUTB", "OUTPUT"):
            assert re.search(rf"REG_{r}_CLK\(\"CLK0\"\)", b), b
    assert "MULT18X18D" not in emit(MulBank(), "bank")


def test_target_and_operand_errors():
    with pytest.raises(ValueError, match="dsp target must be one of generic, ecp5, not 'xilinx'"):
        with dsp_target("xilinx"):
            pass
    m = Module()
    m._MustUse__silence = True  # only its errors are wanted
    with pytest.raises(ValueError, match="operand a .* must fit one signed 18-bit"):
        registered_mul(m, Signal(unsigned(18)), Signal(4), 1, "wide")
    with pytest.raises(ValueError, match="stages must be 2 or 3, not 4"):
        registered_mul(m, Signal(4), Signal(4), 1, "deep", stages=4)
