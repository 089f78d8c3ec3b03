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

from amaranth import Module, Signal

__all__ = ["output_register"]


def output_register(m: Module, out, name: str = "ob") -> tuple[Signal, Signal, Signal]:
    """Drive the stream ``out`` from a two-entry buffer.

    Returns ``(adv, valid, payload)``: ``adv`` is the pipeline's enable (a register); the
    pipeline presents its last stage's result on ``valid`` and ``payload`` (combinational),
    and the buffer takes it in every cycle with ``adv & valid``.
    """
    adv = Signal(init=1, name=f"{name}_adv")
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
            m.d.sync += [head.eq(spare), spare_valid.eq(0), adv.eq(1)]
        with m.Else():
            m.d.sync += head_valid.eq(push)
            with m.If(push):
                m.d.sync += head.eq(payload)
    with m.Elif(push):  # the head stays: the result goes to the spare, and the pipeline stops
        m.d.sync += [spare.eq(payload), spare_valid.eq(1), adv.eq(0)]
    return adv, valid, payload
