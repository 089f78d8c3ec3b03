"""A one-write, one-read RAM whose read word is registered twice: the port, then an output
register.

A block RAM's clock-to-output is most of a cycle on the ECP5 (5.83 ns of the 8 ns at 125 MHz in
nextpnr's model of a ``DP16KD`` without its output register), so the first register after it
must sit beside it; nextpnr's placer puts it 13 to 19 rows away (1.4 to 2.5 ns of routing,
measured on every projection and scan that uses block RAM). The block has an output register
of its own (``REGMODE "OUTREG"``) that Yosys's memory mapping never enables. Here the two
registers are explicit, and the target (:func:`rtl.dsp.dsp_target`) chooses how they are built:

* ``generic`` (and every memory shallower than :data:`BLOCK_RAM_MIN_DEPTH`): an Amaranth
  ``Memory`` with a synchronous read port, then a fabric register; Yosys maps the memory as it
  chooses (LUT RAM when shallow).
* ``ecp5``, :data:`BLOCK_RAM_MIN_DEPTH` words or more: ``DP16KD`` blocks of 1024 x 18, port A
  writing, port B reading into its output register (``OCEB`` the output register's enable).
  A memory deeper than 1024 words is banks of 1024: the write goes to the bank its high
  address bits name; every bank reads at the low bits, and the high bits of the read, held
  through the same two registers (port and output), choose the bank's word after them (a
  multiplexer behind the output registers, no extra cycle). ``fpga/models/DP16KD.v`` is a
  behavioural model of the instance as used here, for Verilator.

A RAM of many banks is as wide on the die as the block RAM rows it fills, and its multiplexer
reaches every bank: the whole-model engine's SSM state on the ECP5-85F (36 banks, 180 blocks)
routed 65 columns from a bank into it (13.1 ns with the multiplexer, a 76.4 MHz path).
``m_en`` adds a third register (enabled by it) after the multiplexer's first level: banks in
groups of :func:`bank_group` (a power of two, about the square root of the banks), each
group's word registered, then the groups' multiplexer behind that register. The word is out a
cycle later; with one bank, or on the ``generic`` target, the third register is a plain delay
of the word, so the latency does not depend on the target or the depth.

A read-modify-write (``w_data`` a function of the word; the conv unit's state) writes back a
word computed from the word just read: a bank's write data would be the function of the
multiplexer's output, a path from every bank's output register through the multiplexer to every
bank's data input (the whole-model top's 85.5 MHz path, 11.7 ns, its conv state's three banks).
Where the caller's write that depends on the word goes to the bank it was read from, each bank
can take the function of its own output register's word instead: the multiplexer is then out
of the write path, and the words are the same.

Both: the word at ``r_addr`` is read at a clock edge where ``r_en`` is high and held until the
next such edge; the output register takes it at edges where ``o_en`` is high and is cleared by
the domain's reset (the third register, if any, at edges where ``m_en`` is high). A read of the
word written in the same cycle returns the old word (callers that need the new one bypass it).
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, ResetSignal, Signal, Value, unsigned
from amaranth.lib.memory import Memory

from .dsp import current_dsp_target

__all__ = ["BLOCK_RAM_MIN_DEPTH", "DP16KD_DEPTH", "DP16KD_WIDTH", "MAX_BANKS", "bank_group",
           "dp16kd_blocks", "registered_ram"]

BLOCK_RAM_MIN_DEPTH = 64  # shallower memories are left to synthesis (LUT RAM on the ECP5)
DP16KD_DEPTH = 1024  # one DP16KD with 18-bit ports
DP16KD_WIDTH = 18
MAX_BANKS = 64  # 64 Ki words (the shipped model's state on chip at 4 lanes: 36 banks)


def dp16kd_blocks(width: int, depth: int) -> int:
    """``DP16KD`` blocks :func:`registered_ram` builds for a ``depth`` x ``width`` RAM on the
    ``ecp5`` target: banks of :data:`DP16KD_DEPTH` words, each :data:`DP16KD_WIDTH` bits a
    block; none below :data:`BLOCK_RAM_MIN_DEPTH` words (left to synthesis)."""
    if depth < BLOCK_RAM_MIN_DEPTH:
        return 0
    return -(-depth // DP16KD_DEPTH) * -(-width // DP16KD_WIDTH)


def bank_group(banks: int) -> int:
    """Banks a first-level group of the multiplexer has with ``m_en``
    (:func:`registered_ram`): the least power of two whose square is at least ``banks``
    (36 banks: 8, so five groups), so neither level is much wider than the other."""
    if banks < 1:
        raise ValueError(f"banks must be >= 1, not {banks}")
    g = 1
    while g * g < banks:
        g *= 2
    return g


def registered_ram(m: Module, name: str, width: int, depth: int, *, w_addr, w_data, w_en,
                   r_addr, r_en, o_en, m_en=None) -> Signal:
    """A ``depth`` x ``width`` RAM named ``name``; returns the output register's word, or with
    ``m_en`` the third register's (a cycle later, see the module docstring).

    ``w_data`` is the word to write, or a function of the output register's word that gives it
    (a read-modify-write, see the module docstring). Each bank is given the function of its own
    output register's word: the caller guarantees that a write whose data depends on the word
    goes to the bank the word was read from (the same address, or at least the same
    :data:`DP16KD_DEPTH`-word bank).

    Raises
    ------
    ValueError
        If ``width`` or ``depth`` is below 1, or, on the ``ecp5`` target, over
        :data:`MAX_BANKS` banks of :data:`DP16KD_DEPTH` words deep; or if ``w_data`` is a
        function and ``m_en`` is given (its word is the third register's, a cycle too late).
    """
    if width < 1 or depth < 1:
        raise ValueError(f"{name}: width and depth must be >= 1, not {width} x {depth}")
    rmw = callable(w_data)
    if rmw and m_en is not None:
        raise ValueError(f"{name}: w_data may be a function of the read word only without "
                         f"m_en (the output register's word is written back), not with both")
    out = Signal(width, name=f"{name}_q")

    def data_for(word: Signal):  # the write data, given the word the write goes back to
        return w_data(word) if rmw else w_data

    def delayed(word: Signal) -> Signal:  # the third register as a plain delay
        if m_en is None:
            return word
        q = Signal(width, name=f"{name}_m")
        with m.If(m_en):
            m.d.sync += q.eq(word)
        return q

    if current_dsp_target() != "ecp5" or depth < BLOCK_RAM_MIN_DEPTH:
        mem = Memory(shape=unsigned(width), depth=depth, init=[])
        m.submodules[name] = mem
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(data_for(out)), wp.en.eq(w_en),
                     rp.addr.eq(r_addr), rp.en.eq(r_en)]
        with m.If(o_en):
            m.d.sync += out.eq(rp.data)
        return delayed(out)
    banks = -(-depth // DP16KD_DEPTH)
    if banks > MAX_BANKS:
        raise ValueError(f"{name}: depth must be <= {MAX_BANKS * DP16KD_DEPTH} ({MAX_BANKS} "
                         f"banks of {DP16KD_DEPTH}) on the ecp5 target, not {depth}")
    if banks == 1:
        _bank(m, name, width, depth, Value.cast(w_addr), data_for(out), w_en,
              Value.cast(r_addr), r_en, o_en, out)
        return delayed(out)
    lo_bits = (DP16KD_DEPTH - 1).bit_length()
    hi_bits = (banks - 1).bit_length()
    wa, ra = Value.cast(w_addr), Value.cast(r_addr)
    w_bank, r_bank = wa[lo_bits: lo_bits + hi_bits], ra[lo_bits: lo_bits + hi_bits]
    # The read's bank, registered as the word is: at the port (r_en), then the output (o_en).
    sel_p = Signal(hi_bits, name=f"{name}_bank_p")
    sel_q = Signal(hi_bits, name=f"{name}_bank_q")
    with m.If(r_en):
        m.d.sync += sel_p.eq(r_bank)
    with m.If(o_en):
        m.d.sync += sel_q.eq(sel_p)
    words = []
    for b in range(banks):
        q = Signal(width, name=f"{name}_b{b}_q")
        # a read-modify-write's bank writes the function of its own word (the module docstring)
        wd = data_for(q)
        if rmw:  # named, so that the netlist shows each bank's own
            named = Signal(width, name=f"{name}_b{b}_wd")
            m.d.comb += named.eq(wd)
            wd = named
        _bank(m, f"{name}_b{b}", width, min(DP16KD_DEPTH, depth - b * DP16KD_DEPTH),
              wa[:lo_bits], wd, w_en & (w_bank == Const(b, hi_bits)), ra[:lo_bits], r_en,
              o_en, q)
        words.append(q)
    if m_en is None:
        _select(m, out, sel_q, words)
        return out
    # The first level: each group's word, registered; then the groups' multiplexer, its
    # select (the bank's high bits) registered alongside.
    g = bank_group(banks)
    gb = (g - 1).bit_length()
    groups = [words[i: i + g] for i in range(0, banks, g)]
    sel_m = Signal(max(1, hi_bits - gb), name=f"{name}_group_m")
    with m.If(m_en):
        m.d.sync += sel_m.eq(sel_q[gb:] if hi_bits > gb else 0)
    firsts = []
    for i, grp in enumerate(groups):
        w = Signal(width, name=f"{name}_g{i}_w")
        q = Signal(width, name=f"{name}_g{i}_m")
        _select(m, w, sel_q[:gb], grp)
        with m.If(m_en):
            m.d.sync += q.eq(w)
        firsts.append(q)
    _select(m, out, sel_m, firsts)
    return out


def _select(m: Module, out: Signal, sel: Value, words: list) -> None:
    """``out`` = ``words[sel]``; the last word for every code past it (never read)."""
    if len(words) == 1:
        m.d.comb += out.eq(words[0])
        return
    with m.Switch(sel):
        for b, q in enumerate(words[:-1]):
            with m.Case(b):
                m.d.comb += out.eq(q)
        with m.Default():
            m.d.comb += out.eq(words[-1])


def _bank(m: Module, name: str, width: int, depth: int, wa: Value, w_data, w_en, ra: Value,
          r_en, o_en, out: Signal) -> None:
    """One bank of at most 1024 words: ``DP16KD`` blocks side by side, 18 bits each."""
    abits = max(1, (depth - 1).bit_length())
    wa, ra = wa[:abits], ra[:abits]
    wd = Value.cast(w_data)
    for t in range(-(-width // DP16KD_WIDTH)):
        lo = t * DP16KD_WIDTH
        w = min(DP16KD_WIDTH, width - lo)
        din = Signal(DP16KD_WIDTH, name=f"{name}_di{t}")
        dout = Signal(DP16KD_WIDTH, name=f"{name}_do{t}")
        m.d.comb += [din.eq(wd[lo: lo + w]), out[lo: lo + w].eq(dout[:w])]
        # 18-bit ports: the word address on AD13:4, AD1:0 the byte enables (both written)
        ada = [Const(1, 1)] * 2 + [Const(0, 1)] * 2 + [wa[i] if i < abits else Const(0, 1)
                                                        for i in range(10)]
        adb = [Const(0, 1)] * 4 + [ra[i] if i < abits else Const(0, 1) for i in range(10)]
        ports = {f"i_ADA{i}": ada[i] for i in range(14)}
        ports.update({f"i_ADB{i}": adb[i] for i in range(14)})
        ports.update({f"i_DIA{i}": din[i] for i in range(DP16KD_WIDTH)})
        ports.update({f"i_DIB{i}": 0 for i in range(DP16KD_WIDTH)})
        ports.update({f"o_DOB{i}": dout[i] for i in range(DP16KD_WIDTH)})
        doa = Signal(DP16KD_WIDTH, name=f"{name}_doa{t}")  # port A only writes
        ports.update({f"o_DOA{i}": doa[i] for i in range(DP16KD_WIDTH)})
        m.submodules[f"{name}_{t}"] = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=DP16KD_WIDTH, p_DATA_WIDTH_B=DP16KD_WIDTH, p_REGMODE_A="NOREG",
            p_REGMODE_B="OUTREG", p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
            p_CSDECODE_A="0b000", p_CSDECODE_B="0b000", p_CLKAMUX="CLKA", p_CLKBMUX="CLKB",
            p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
            i_CLKA=ClockSignal(), i_CEA=1, i_OCEA=1, i_WEA=w_en, i_RSTA=0,
            i_CSA0=0, i_CSA1=0, i_CSA2=0,
            i_CLKB=ClockSignal(), i_CEB=r_en, i_OCEB=o_en, i_WEB=0, i_RSTB=ResetSignal(),
            i_CSB0=0, i_CSB1=0, i_CSB2=0, **ports)
