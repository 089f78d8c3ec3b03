"""rtl.bram.registered_ram on the ECP5 target, through the vendor cell's model
(fpga/models/DP16KD.v) in Verilator: one block, and a memory deeper than one block (banks
chosen by the high address bits, the bank of a read held through the port and output
registers). Every read against a Python list of the same writes, back to back and under
stalls; a read of the word written in the same cycle returns the old word."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cosim.units import run_stream_unit
from rtl.bram import DP16KD_DEPTH, MAX_BANKS, registered_ram


class RamProbe(wiring.Component):
    """A stream unit around one RAM: each input beat writes ``wdata`` at ``waddr`` (when
    ``we``) and reads ``raddr``; the output beat is that read, two cycles later (the port,
    then the output register), every register advancing with the pipeline."""

    latency = 2

    def __init__(self, width: int, depth: int) -> None:
        self.width, self.depth = width, depth
        abits = max(1, (depth - 1).bit_length())
        self.cmd = data.StructLayout({"we": 1, "waddr": abits, "wdata": width,
                                      "raddr": abits})
        super().__init__({"i": In(stream.Signature(self.cmd)),
                          "o": Out(stream.Signature(unsigned(width)))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        c = self.i.payload
        go = en & self.i.valid
        q = registered_ram(m, "ram", self.width, self.depth, w_addr=c.waddr, w_data=c.wdata,
                           w_en=go & c.we, r_addr=c.raddr, r_en=en, o_en=en)
        v1, v2 = Signal(), Signal()
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1)]
        m.d.comb += [self.o.valid.eq(v2), self.o.payload.eq(q)]
        return m


def _commands(width: int, depth: int, n: int, seed: int) -> tuple[list[int], list[int]]:
    """Random writes and reads (a quarter of the reads at the address written in the same
    beat, so the old word must come back), packed; and the words a list model reads."""
    rng = np.random.default_rng(seed)
    abits = max(1, (depth - 1).bit_length())
    mem = [0] * depth  # the block RAM's initial contents are zero
    ins, outs = [], []
    for i in range(n):
        we = int(rng.random() < 0.6) if i >= depth // 4 else 1  # fill a quarter first
        wa = int(rng.integers(0, depth))
        wd = int(rng.integers(0, 1 << width))
        ra = wa if rng.random() < 0.25 else int(rng.integers(0, depth))
        outs.append(mem[ra])  # read before the write of the same beat
        if we:
            mem[wa] = wd
        ins.append(we | wa << 1 | wd << (1 + abits) | ra << (1 + abits + width))
    return ins, outs


@pytest.mark.parametrize("width, depth", [(20, 700), (20, 2500)])
@pytest.mark.parametrize("stalls", [False, True])
def test_registered_ram_on_the_ecp5_target(width, depth, stalls):
    seed = 40 + depth % 7 + 2 * stalls
    print(f"seed {seed}")
    ins, outs = _commands(width, depth, 3 * depth, seed)
    kw = dict(idle=0.3, backpressure=0.4, seed=seed) if stalls else {}
    res = run_stream_unit(RamProbe(width, depth), "ram_probe", f"{width}x{depth}",
                          f"ram_{stalls}", ins, outs, dsp="ecp5", **kw)
    assert res["mismatches"] == 0, res["first_mismatch"]
    if not stalls:
        assert res["latency_measured"] == RamProbe.latency


def test_the_ecp5_ram_is_banks_of_dp16kd():
    from rtl.emit import emit

    v = emit(RamProbe(20, 2500), "x", dsp="ecp5")
    # 3 banks (1024, 1024, 452 words) of 2 blocks (18 + 2 bits) each
    assert v.count("DP16KD") == 6
    with pytest.raises(ValueError, match=f"depth must be <= {MAX_BANKS * DP16KD_DEPTH}"):
        emit(RamProbe(20, MAX_BANKS * DP16KD_DEPTH + 1), "x", dsp="ecp5")
