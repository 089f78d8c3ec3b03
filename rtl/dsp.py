"""Multipliers cut to the size of an FPGA DSP block, with a register on each side.

A product that synthesis maps on its own (``a * b`` of a 35-bit and a 17-bit operand) becomes
two 18 x 18 multipliers whose partial products are added in the fabric, in the same cycle as
whatever feeds the multiplier and whatever reads it: the longest path of the unit. Here the
operands are cut into chunks that each fit one signed 18 x 18 multiplier (ECP5 ``MULT18X18D``;
the iCE40 UP5K's ``SB_MAC16`` takes 16 x 16), every partial product is registered, and their
shifted sum is registered in the next cycle:

* stage 1: each multiplier's operand chunks, registered (a copy per multiplier);
* stage 2: the operand chunks again (a DSP block's input registers);
* stage 3: the chunk products ``a_i * b_j`` (one multiplier each), registered (its output
  register);
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

Targets (:data:`DSP_TARGETS`, chosen at elaboration with :func:`dsp_target`):

* ``generic`` (the default, and what the simulations run): the registers and ``*`` above, for
  synthesis to map;
* ``ecp5``: each chunk product is one ECP5 ``MULT18X18D`` with its own input and output
  registers (stages 2 and 3), clock-enabled by ``en`` and reset with the domain; the operand
  registers of stage 1 stay in the fabric. Yosys maps ``*`` to an unregistered ``MULT18X18D``
  and has no pass that moves fabric registers into it; with the fabric registers on both
  sides, nextpnr-ecp5 places the DSP block rows away from them (2.6 + 2.4 ns of routing on
  the (64, 16) projection). With the registers inside, the block is a timing start and end
  point of its own (nextpnr's ``MULT18X18D_REGS_ALL``), and the paths into and out of it are
  routing alone: the DSP blocks sit in a few rows, up to 3.5 ns from the logic that computes
  an operand (measured on the scan's softplus), so that logic ends in a fabric register. The
  multiply between the block's input and output registers is not timed by nextpnr; unregistered,
  nextpnr's model gives it 3.93 ns, half the ECP5's 8 ns.
  ``fpga/models/MULT18X18D.v`` is a behavioural model of the instance as used here, for
  Verilator; ``tests/test_dsp.py`` runs both targets against the exact product.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from amaranth import ClockSignal, Instance, Module, ResetSignal, Signal, Value, signed

__all__ = ["MUL_LATENCY", "CHUNK", "KEEP", "DSP_TARGETS", "dsp_target", "current_dsp_target",
           "pipelined_mul", "registered_mul", "chunk_count"]

MUL_LATENCY = 4
KEEP = {"keep": 1}  # attribute of a register that synthesis must not merge with an equal one
CHUNK = 17  # unsigned bits of a low chunk: one signed 18-bit multiplier input
DSP_TARGETS = ("generic", "ecp5")
ECP5_WIDTH = 18  # MULT18X18D: signed 18 x 18 -> 36
_target: ContextVar[str] = ContextVar("dsp_target", default="generic")


@contextlib.contextmanager
def dsp_target(name: str) -> Iterator[str]:
    """Elaborate the multipliers for ``name`` (one of :data:`DSP_TARGETS`) inside the block.

    Amaranth elaborates a design when it is converted, so the block must enclose the
    conversion (``rtl.emit.emit(..., dsp=name)`` does).
    """
    if name not in DSP_TARGETS:
        raise ValueError(f"dsp target must be one of {', '.join(DSP_TARGETS)}, not {name!r}")
    token = _target.set(name)
    try:
        yield name
    finally:
        _target.reset(token)


def current_dsp_target() -> str:
    """The target that multipliers elaborated now are built for."""
    return _target.get()


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


def _fits_one_block(shape) -> bool:
    return shape.width <= ECP5_WIDTH - (0 if shape.signed else 1)


def _ecp5_mult(m: Module, a: Value, b: Value, out: Signal, en, name: str):
    """``out`` = ``a * b`` through one MULT18X18D: its input registers, the product, its output
    register (two cycles)."""
    a18, b18 = Signal(signed(ECP5_WIDTH), name=f"{name}_A"), Signal(signed(ECP5_WIDTH),
                                                                      name=f"{name}_B")
    p = Signal(signed(2 * ECP5_WIDTH), name=f"{name}_P")
    m.d.comb += [a18.eq(a), b18.eq(b), out.eq(p[: len(out)])]  # a, b extended by their sign
    regs = {f"p_REG_{r}_{k}": ("CLK0" if k == "CLK" else f"{k}0")
            for r in ("INPUTA", "INPUTB", "OUTPUT") for k in ("CLK", "CE", "RST")}
    regs.update({"p_REG_PIPELINE_CLK": "NONE", "p_REG_PIPELINE_CE": "CE0",
                 "p_REG_PIPELINE_RST": "RST0"})
    ports = {f"i_A{k}": a18[k] for k in range(ECP5_WIDTH)}
    ports.update({f"i_B{k}": b18[k] for k in range(ECP5_WIDTH)})
    ports.update({f"i_C{k}": 0 for k in range(ECP5_WIDTH)})
    ports.update({f"o_P{k}": p[k] for k in range(2 * ECP5_WIDTH)})
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTC_CLK="NONE", p_CLK0_DIV="ENABLED", p_HIGHSPEED_CLK="NONE",
        p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT",
        p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC", **regs,
        i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
        i_CLK0=ClockSignal(), i_CE0=en, i_RST0=ResetSignal(), **ports)


def registered_mul(m: Module, a, b, en, name: str, stages: int = 2) -> Signal:
    """``a * b`` of operands that fit one signed 18 x 18 multiplier: the operands registered,
    the product registered ``stages - 1`` times (2 or 3), every register enabled by ``en``.

    On the ``ecp5`` target the registers of the last two stages are the multiplier's own (with
    3 stages the operands are registered in the fabric first); on ``generic`` all are fabric
    registers around ``*``.

    Raises
    ------
    ValueError
        If an operand does not fit (an unsigned operand over 17 bits, a signed one over 18),
        or ``stages`` is not 2 or 3.
    """
    a, b = Value.cast(a), Value.cast(b)
    for what, v in (("a", a), ("b", b)):
        if not _fits_one_block(v.shape()):
            raise ValueError(f"{name}: operand {what} ({v.shape()}) must fit one signed "
                             f"{ECP5_WIDTH}-bit multiplier input (signed <= 18 bits, unsigned "
                             "<= 17); use pipelined_mul")
    if stages not in (2, 3):
        raise ValueError(f"{name}: stages must be 2 or 3, not {stages}")
    out = Signal((a * b).shape(), name=f"{name}_pq" if stages == 3 else f"{name}_pp")
    if stages == 3:
        # each multiplier's own operand registers, kept apart by synthesis (KEEP)
        ra = Signal(a.shape(), name=f"{name}_a", attrs=KEEP)
        rb = Signal(b.shape(), name=f"{name}_b", attrs=KEEP)
        with m.If(en):
            m.d.sync += [ra.eq(a), rb.eq(b)]
        a, b = ra, rb
    if current_dsp_target() == "ecp5":
        _ecp5_mult(m, a, b, out, en, name)
        return out
    ra = Signal(a.shape(), name=f"{name}_in_a")
    rb = Signal(b.shape(), name=f"{name}_in_b")
    with m.If(en):
        m.d.sync += [ra.eq(a), rb.eq(b), out.eq(ra * rb)]
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
            pp = registered_mul(m, ai, bj, en, f"{name}_m{len(parts)}", stages=3)
            parts.append((pp, sa + sb))
    total = sum((pp << s for pp, s in parts), Value.cast(0))
    with m.If(en):
        m.d.sync += out.eq(total)
    return out
