"""Multipliers cut to the size of an FPGA DSP block, with a register on each side.

A product that synthesis maps on its own (``a * b`` of a 35-bit and a 17-bit operand) becomes
two 18 x 18 multipliers whose partial products are added in the fabric, in the same cycle as
whatever feeds the multiplier and whatever reads it: the longest path of the unit. Here the
operands are cut into chunks that each fit one signed 18 x 18 multiplier (ECP5 ``MULT18X18D``;
the iCE40 UP5K's ``SB_MAC16`` takes 16 x 16), every partial product is registered, and their
shifted sum is registered in the next cycle:

* stage 1: each multiplier's operand chunks, registered (a copy per multiplier);
* stage 2: the chunk products ``a_i * b_j`` (one multiplier each), registered;
* stage 3: the chunk products again;
* stage 4: ``sum_ij a_i b_j 2^(CHUNK (i + j))``, registered, exactly ``a * b``.

The registers on both sides of a multiplier only feed it or are only fed by it, so the placer
can put them next to the DSP block even when the operands come from across the chip and the
sum sits between two DSP blocks far apart (the ECP5's DSP blocks sit in a few rows; measured
on the (64, 16) projection: 2 to 3 ns of routing into a multiplier shared with another and
3.2 ns out of it into the sum's register).

The operand registers carry the ``keep`` attribute (:data:`KEEP`). Operands of different
multipliers are often equal in part: the projection's ``t = ((acc + corr) << beta_frac) +
beta`` of every row has the same low ``beta_frac`` bits, those of the token's beta term.
Synthesis merges flip-flops with equal inputs, and one flip-flop then drives a multiplier in
every row across the chip (4 ns of routing, measured). ``fpga.flow`` passes the attribute
from these registers to their flip-flops, which Yosys's ``opt_merge`` leaves apart.

Chunks: the low chunks of an operand are ``CHUNK = 17`` unsigned bits (an 18-bit signed input
with a zero sign bit); the top chunk keeps the operand's signedness and is at most 18 bits when
signed, 17 when unsigned.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value

__all__ = ["MUL_LATENCY", "CHUNK", "KEEP", "pipelined_mul", "chunk_count"]

MUL_LATENCY = 4
KEEP = {"keep": 1}  # attribute of a register that synthesis must not merge with an equal one
CHUNK = 17  # unsigned bits of a low chunk: one signed 18-bit multiplier input


def chunk_count(width: int, is_signed: bool) -> int:
    """Chunks of a ``width``-bit operand: a signed top chunk may be 18 bits, an unsigned 17."""
    if width <= CHUNK + (1 if is_signed else 0):
        return 1
    return 1 + -(-(width - CHUNK - (1 if is_signed else 0)) // CHUNK)


def _chunks(v: Value) -> list[tuple[Value, int]]:
    shape = v.shape()
    n = chunk_count(shape.width, shape.signed)
    out = []
    for i in range(n):
        lo = i * CHUNK
        if i < n - 1:
            out.append((v[lo: lo + CHUNK].as_unsigned(), lo))
        else:
            top = v[lo:]
            out.append((top.as_signed() if shape.signed else top.as_unsigned(), lo))
    return out


def pipelined_mul(m: Module, a, b, en, name: str) -> Signal:
    """``a * b`` (Amaranth's product shape), registered :data:`MUL_LATENCY` cycles later,
    every register enabled by ``en``."""
    a, b = Value.cast(a), Value.cast(b)
    shape = (a * b).shape()
    out = Signal(shape, name=f"{name}_p")
    parts = []
    for ai, sa in _chunks(a):
        for bj, sb in _chunks(b):
            i = len(parts)
            # each multiplier's own operand registers, kept apart by synthesis (KEEP)
            ra = Signal(ai.shape(), name=f"{name}_a{i}", attrs=KEEP)
            rb = Signal(bj.shape(), name=f"{name}_b{i}", attrs=KEEP)
            pp = Signal((ai * bj).shape(), name=f"{name}_pp{i}")
            pp2 = Signal(pp.shape(), name=f"{name}_pq{i}")
            with m.If(en):
                m.d.sync += [ra.eq(ai), rb.eq(bj), pp.eq(ra * rb), pp2.eq(pp)]
            parts.append((pp2, sa + sb))
    total = sum((pp << s for pp, s in parts), Value.cast(0))
    with m.If(en):
        m.d.sync += out.eq(total)
    return out
