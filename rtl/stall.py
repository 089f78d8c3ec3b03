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

from amaranth import Module, Signal

__all__ = ["output_register"]


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
