"""rtl.bram.registered_ram on the ECP5 target, through the vendor cell's model
(fpga/models/DP16KD.v) in Verilator: one block, and a memory deeper than one block (banks
chosen by the high address bits, the bank of a read held through the port and output
registers), each also with the third register (``m_en``: after the first level of the banks'
multiplexer, groups of banks). Every read against a Python list of the same writes, back to
back and under stalls; a read of the word written in the same cycle returns the old word. And
the read-modify-write (``w_data`` a function of the word), whose banks each write back from
their own output register."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cosim.units import run_stream_unit
from rtl.bram import DP16KD_DEPTH, MAX_BANKS, bank_group, registered_ram
from rtl.dsp import dsp_target


class _Probe(wiring.Component):
    """A stream unit around one RAM of ``width`` x ``depth``: a command a beat in, a word out,
    every register advancing together (``en``: the output is free)."""

    def __init__(self, width: int, depth: int, fields: dict) -> None:
        self.width, self.depth = width, depth
        self.cmd = data.StructLayout(fields)
        super().__init__({"i": In(stream.Signature(self.cmd)),
                          "o": Out(stream.Signature(unsigned(width)))})

    def _enable(self, m: Module) -> Signal:
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        return en


def _abits(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


class RamProbe(_Probe):
    """Each input beat writes ``wdata`` at ``waddr`` (when ``we``) and reads ``raddr``; the
    output beat is that read, two cycles later (the port, then the output register; three with
    ``third``, the multiplexer's register), every register advancing with the pipeline."""

    def __init__(self, width: int, depth: int, third: bool = False) -> None:
        self.third = third
        self.latency = 3 if third else 2
        a = _abits(depth)
        super().__init__(width, depth, {"we": 1, "waddr": a, "wdata": width, "raddr": a})

    def elaborate(self, platform):
        m = Module()
        en = self._enable(m)
        c = self.i.payload
        go = en & self.i.valid
        q = registered_ram(m, "ram", self.width, self.depth, w_addr=c.waddr, w_data=c.wdata,
                           w_en=go & c.we, r_addr=c.raddr, r_en=en, o_en=en,
                           m_en=en if self.third else None)
        v = [self.i.valid] + [Signal(name=f"v{i + 1}") for i in range(self.latency)]
        with m.If(en):
            m.d.sync += [b.eq(a) for a, b in zip(v, v[1:])]
        m.d.comb += [self.o.valid.eq(v[-1]), self.o.payload.eq(q)]
        return m


class RmwProbe(_Probe):
    """A read-modify-write RAM: each input beat reads ``raddr``; two cycles later, as the word
    leaves the output register, the beat writes ``word ^ key`` back to ``raddr`` (when
    ``rmw``; ``key`` itself when ``set`` too) and outputs the word it read."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__(width, depth, {"rmw": 1, "set": 1, "raddr": _abits(depth),
                                        "key": width})

    def elaborate(self, platform):
        m = Module()
        en = self._enable(m)
        c = self.i.payload
        v1, v2 = Signal(), Signal()
        c1, c2 = Signal(self.cmd), Signal(self.cmd)
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1), c1.eq(c), c2.eq(c1)]
        q = registered_ram(m, "ram", self.width, self.depth, w_addr=c2.raddr,
                           w_data=lambda word: Mux(c2.set, c2.key, word ^ c2.key),
                           w_en=en & v2 & c2.rmw, r_addr=c.raddr, r_en=en, o_en=en)
        m.d.comb += [self.o.valid.eq(v2), self.o.payload.eq(q)]
        return m


def _rmw_commands(width: int, depth: int, n: int, seed: int) -> tuple[list[int], list[int]]:
    """Every address set once (in a random order: the RAM starts undefined, and the words read
    then are not checked), then random read-modify-writes and plain reads; packed, with the
    words a list model reads (None: unchecked). No beat reads an address that one of the two
    beats before it writes back (their writes land as it is read)."""
    rng = np.random.default_rng(seed)
    abits = _abits(depth)
    mem = [0] * depth
    ins, outs, recent = [], [], [None, None]
    order = [int(a) for a in rng.permutation(depth)]
    for i in range(n):
        rmw, ra = (1, order[i]) if i < depth else (int(rng.random() < 0.7), None)
        while ra is None or ra in recent:
            ra = int(rng.integers(0, depth))
        key = int(rng.integers(0, 1 << width))
        outs.append(None if i < depth else mem[ra])
        if i < depth:
            mem[ra] = key
        elif rmw:
            mem[ra] ^= key
        recent = [recent[1], ra if rmw else None]
        ins.append(rmw | (i < depth) << 1 | ra << 2 | key << (2 + abits))
    return ins, outs


# every address read several times over: 3 banks (and one) on the ecp5 target, and generic
@pytest.mark.parametrize("depth, dsp", [(2500, "ecp5"), (700, "ecp5"), (2500, "generic")])
@pytest.mark.parametrize("stalls", [False, True])
def test_read_modify_write_writes_each_bank_from_its_own_word(depth, dsp, stalls):
    width = 20
    seed = 60 + depth % 7 + 2 * stalls + 4 * (dsp == "ecp5")
    print(f"seed {seed}")
    ins, outs = _rmw_commands(width, depth, 6 * depth, seed)
    kw = dict(idle=0.3, backpressure=0.4, seed=seed) if stalls else {}
    res = run_stream_unit(RmwProbe(width, depth), "rmw_probe", f"{width}x{depth}",
                          f"rmw_{stalls}", ins, outs, dsp=dsp, **kw)
    assert res["mismatches"] == 0, res["first_mismatch"]
    if not stalls:
        assert res["latency_measured"] == 2


def test_read_modify_write_refuses_the_third_register():
    m = Module()
    m._MustUse__silence = True  # refused before anything is built
    s = {k: Signal(4) for k in ("wa", "ra")}
    with pytest.raises(ValueError, match="w_data may be a function of the read word only "
                                         "without m_en"):
        registered_ram(m, "ram", 8, 16, w_addr=s["wa"], w_data=lambda w: w, w_en=1,
                       r_addr=s["ra"], r_en=1, o_en=1, m_en=1)


def _commands(width: int, depth: int, n: int, seed: int) -> tuple[list[int], list[int]]:
    """Random writes and reads (a quarter of the reads at the address written in the same
    beat, so the old word must come back), packed; and the words a list model reads."""
    rng = np.random.default_rng(seed)
    abits = _abits(depth)
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


# 700 words: one bank; 2,500: three (1024, 1024, 452), groups of two with the third register;
# 9,300: ten, groups of four (4, 4, 2), the whole-model engine's two levels in small.
@pytest.mark.parametrize("width, depth, third", [(20, 700, False), (20, 2500, False),
                                                 (20, 700, True), (20, 2500, True),
                                                 (6, 9300, True)])
@pytest.mark.parametrize("stalls", [False, True])
def test_registered_ram_on_the_ecp5_target(width, depth, third, stalls):
    seed = 40 + depth % 7 + 2 * stalls + 4 * third
    print(f"seed {seed}")
    ins, outs = _commands(width, depth, min(3 * depth, 12000), seed)
    kw = dict(idle=0.3, backpressure=0.4, seed=seed) if stalls else {}
    probe = RamProbe(width, depth, third)
    res = run_stream_unit(probe, "ram_probe", f"{width}x{depth}{'m' * third}",
                          f"ram_{stalls}", ins, outs, dsp="ecp5", **kw)
    assert res["mismatches"] == 0, res["first_mismatch"]
    if not stalls:
        assert res["latency_measured"] == probe.latency


def test_bank_groups():
    """The first level's group: the least power of two whose square covers the banks."""
    assert [bank_group(b) for b in (1, 2, 3, 4, 5, 16, 17, 36, 64)] == [1, 2, 2, 2, 4, 4, 8,
                                                                        8, 8]
    with pytest.raises(ValueError, match="banks must be >= 1, not 0"):
        bank_group(0)


def test_the_ecp5_ram_is_banks_of_dp16kd():
    from rtl.emit import emit

    v = emit(RamProbe(20, 2500), "x", dsp="ecp5")
    # 3 banks (1024, 1024, 452 words) of 2 blocks (18 + 2 bits) each
    assert v.count("DP16KD") == 6
    # with the third register: a word register per group of two banks, then the groups'
    v = emit(RamProbe(20, 2500, True), "x", dsp="ecp5")
    assert v.count("DP16KD") == 6
    assert "ram_g0_m" in v and "ram_g1_m" in v and "ram_g2_m" not in v
    # a read-modify-write: each bank's write data from its own word
    v = emit(RmwProbe(20, 2500), "x", dsp="ecp5")
    assert all(f"ram_b{b}_wd" in v for b in range(3))
    with pytest.raises(ValueError, match=f"depth must be <= {MAX_BANKS * DP16KD_DEPTH}"):
        emit(RamProbe(20, MAX_BANKS * DP16KD_DEPTH + 1), "x", dsp="ecp5")


@pytest.mark.parametrize("depth, words", [(2500, ["ram_b0_q", "ram_b1_q", "ram_b2_q"]),
                                          (700, ["ram_q"])])
def test_read_modify_write_takes_each_banks_own_word(depth, words):
    """The function is given each bank's output register, not the banks' multiplexer (which
    computes the same words but is the long path the read-modify-write exists to avoid)."""
    seen = []
    m = Module()
    s = {k: Signal(12) for k in ("wa", "ra")}
    with dsp_target("ecp5"):
        q = registered_ram(m, "ram", 20, depth, w_addr=s["wa"],
                           w_data=lambda w: seen.append(w) or w, w_en=1, r_addr=s["ra"],
                           r_en=1, o_en=1)
    assert [w.name for w in seen] == words
    assert (q is seen[0]) == (depth <= DP16KD_DEPTH)  # one bank: its word is the output
    m._MustUse__silence = True  # built only to be inspected
