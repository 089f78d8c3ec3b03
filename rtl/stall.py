"""A registered stall for pipelines with one global enable.

A pipeline whose registers all advance together (``adv``) stalls when its output stream is not
taken. Written as ``adv = ~out.valid | out.ready``, the enable is a gate behind an input port
and drives the clock enable of every register of the unit: 11,000 flip-flops in the (64, 16)
projection. :func:`output_register` makes ``adv`` a flip-flop instead. The last stage of the
pipeline is a two-entry buffer: the head register drives ``out``, and a spare register takes
the one result that the pipeline can still produce in the cycle after ``out.ready`` falls
(``adv`` is known only from the previous cycle's state). ``adv`` is low exactly while the
spare is full.

With ``out.ready`` high, each result is in the head register one cycle after the pipeline
produces it, as with a plain output register, so the unit's cycle counts do not change; a
stall costs no throughput.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.lib import fifo
from amaranth.lib.memory import Memory

from .bram import BLOCK_RAM_MIN_DEPTH
from .dsp import current_dsp_target

__all__ = ["RegisteredFIFO", "output_register", "register_slice"]


def output_register(m: Module, out, name: str = "ob",
                    adv_copies: Sequence[Signal] = ()) -> tuple[Signal, Signal, Signal]:
    """Drive the stream ``out`` from a two-entry buffer.

    Returns ``(adv, valid, payload)``: ``adv`` is the pipeline's enable (a register); the
    pipeline presents its last stage's result on ``valid`` and ``payload`` (combinational),
    and the buffer takes it in every cycle with ``adv & valid``. ``adv_copies`` are further
    registers (1 bit, initial value 1, made by the caller) that get exactly ``adv``'s value:
    ``adv`` enables every register of a pipeline, so its routing is long, and the control
    logic of a unit can take its own copy (marked ``rtl.dsp.KEEP`` so that synthesis keeps it
    apart).
    """
    for c in adv_copies:
        if len(c) != 1 or c.init != 1:
            raise ValueError(f"adv_copies must be 1-bit signals with init=1, not {c!r}")
    adv = Signal(init=1, name=f"{name}_adv")
    advs = [adv, *adv_copies]
    valid = Signal(name=f"{name}_valid")
    payload = Signal.like(out.payload, name=f"{name}_payload")
    spare = Signal.like(out.payload, name=f"{name}_spare")
    spare_valid = Signal(name=f"{name}_spare_valid")
    head = Signal.like(out.payload, name=f"{name}_head")
    head_valid = Signal(name=f"{name}_head_valid")
    m.d.comb += [out.valid.eq(head_valid), out.payload.eq(head)]

    push = adv & valid
    with m.If(~head_valid | out.ready):  # the head is free in the next cycle
        with m.If(spare_valid):  # (adv is low: nothing is pushed)
            m.d.sync += [head.eq(spare), spare_valid.eq(0), *(a.eq(1) for a in advs)]
        with m.Else():
            m.d.sync += head_valid.eq(push)
            with m.If(push):
                m.d.sync += head.eq(payload)
    with m.Elif(push):  # the head stays: the result goes to the spare, and the pipeline stops
        m.d.sync += [spare.eq(payload), spare_valid.eq(1), *(a.eq(0) for a in advs)]
    return adv, valid, payload


def register_slice(m: Module, src, dst, name: str) -> None:
    """Connect stream ``src`` to stream ``dst`` through a two-entry register slice.

    ``dst.valid`` and ``dst.payload`` come from registers, and so does ``src.ready`` (the
    buffer's ``adv``): no combinational path crosses the slice in either direction. A beat
    taken from ``src`` is offered on ``dst`` one cycle later; with ``dst.ready`` high the slice
    passes a beat every cycle.
    """
    adv, valid, payload = output_register(m, dst, name)
    m.d.comb += [valid.eq(src.valid), payload.eq(src.payload), src.ready.eq(adv)]


class RegisteredFIFO(fifo.FIFOInterface, Elaboratable):
    """A synchronous FIFO whose ``r_data`` is a fabric register, with the room of
    :class:`amaranth.lib.fifo.SyncFIFOBuffered` of the same ``depth``.

    ``SyncFIFOBuffered`` reads its RAM ahead into the RAM's own read register, and ``r_data``
    is that register's output: on the ECP5 a block RAM's clock-to-output (5.6 ns), before any
    logic the reader puts behind it. Here the word read ahead moves on into a fabric register
    that drives ``r_data``. ``w_rdy`` is a register: the FIFO holds fewer than ``depth`` words.
    Written and read in the same cycles, ``SyncFIFOBuffered`` has exactly that room on every
    cycle (its ``w_rdy`` is low only with ``depth - 1`` words in its RAM and one in its read
    register); a word written into an empty FIFO reaches ``r_data`` a cycle later than there,
    three cycles after its write. The RAM has ``depth`` entries, so it cannot overflow however
    the words are spread over it and the two registers.

    On the ``ecp5`` target (:func:`rtl.dsp.dsp_target`) a RAM shallower than
    :data:`rtl.bram.BLOCK_RAM_MIN_DEPTH` is asked of Yosys as LUT RAM (``ram_style``
    ``"distributed"``), as :func:`rtl.bram.registered_ram` leaves such memories: Yosys's own
    choice put the scan's 48 x 512 x FIFO in 15 block RAMs, whose read (5.8 ns clock-to-out)
    then crossed 48 columns to the fabric register (the whole-model top's 87.2 MHz path,
    11.5 ns), while the device's block RAM was 95 % full. From LUT RAM the read is a few LUTs.
    """

    def __init__(self, *, width: int, depth: int) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 3:
            self._MustUse__silence = True
            raise ValueError(f"depth must be an integer >= 3, not {depth!r}")
        super().__init__(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        d = self.depth
        count = Signal(range(d + 1))  # words held: the RAM's and the two registers'
        level = Signal(range(d + 1))  # words in the RAM
        a_valid = Signal()  # the RAM's read register holds a word
        lut_ram = current_dsp_target() == "ecp5" and d < BLOCK_RAM_MIN_DEPTH
        m.submodules.storage = storage = Memory(
            shape=self.width, depth=d, init=[],
            attrs={"ram_style": "distributed"} if lut_ram else None)
        wp, rp = storage.write_port(), storage.read_port(domain="sync")
        produce, consume = Signal(range(d)), Signal(range(d))
        do_write = self.w_rdy & self.w_en
        take = self.r_rdy & self.r_en
        move = a_valid & (~self.r_rdy | self.r_en)  # the RAM's word into the fabric register
        do_read = (level != 0) & (~a_valid | move)  # the RAM reads ahead
        m.d.comb += [self.w_rdy.eq(count != d),
                     wp.addr.eq(produce), wp.data.eq(self.w_data), wp.en.eq(do_write),
                     rp.addr.eq(consume), rp.en.eq(do_read),
                     self.w_level.eq(count), self.r_level.eq(count)]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == d - 1, 0, produce + 1))
        with m.If(do_read):
            m.d.sync += consume.eq(Mux(consume == d - 1, 0, consume + 1))
        with m.If(do_write & ~do_read):
            m.d.sync += level.eq(level + 1)
        with m.Elif(do_read & ~do_write):
            m.d.sync += level.eq(level - 1)
        with m.If(do_write & ~take):
            m.d.sync += count.eq(count + 1)
        with m.Elif(take & ~do_write):
            m.d.sync += count.eq(count - 1)
        with m.If(do_read):
            m.d.sync += a_valid.eq(1)
        with m.Elif(move):
            m.d.sync += a_valid.eq(0)
        with m.If(move):
            m.d.sync += [self.r_data.eq(rp.data), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m
