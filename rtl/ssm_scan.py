"""Fixed-point SSM scan datapath: softplus(dt), exp(dt A), h = dA h + dt x B, y = h C + D x.

Computes, per token, exactly the golden model's ``dt_softplus``, ``decay`` and ``scan``
(docs/fixed_point.md, section 6) for all heads, with the state of every head in an on-chip RAM
that carries over from token to token.

Dataflow per token:

* ``bc`` (one beat): B and C of the token (N values each) and ``start``, which begins a new
  sequence (the state read for that token is taken as zero, so no clearing pass is needed).
  The first token after a reset also begins a new sequence, whatever its ``start``.
* ``head`` (H beats): ``dt_raw`` and the P values of x of one head. A *prep* pipeline adds
  ``dt_bias[h]``, runs the softplus and decay units (``rtl/nonlinear.py``) and queues
  ``{dt, dA, x}`` in a FIFO deep enough to hide its latency.
* The *scanner* walks ``(h, p, n-chunk)`` and updates ``lanes`` state elements per cycle:
  read ``lanes`` words of h, ``h' = sat(rs((dA h << s1) + (dtx B << s2), F - ssm_frac))``,
  write them back, and accumulate ``sum_n h' C``; after the last chunk of ``(h, p)``,
  ``y = sat(rs((acc << b1) + (D x << b2), F_y - y_frac))``.
* ``y`` (H beats): the P outputs of one head.

Cycles per token: ``H * P * N / lanes`` (one chunk per cycle, no bubble between heads or tokens
when the streams keep up). Per-head constants (dt_bias, A as ``Ak = exp(A_log) log2 e``, D) are
written through ``cfg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.golden.fixedpoint import signed_bits

if TYPE_CHECKING:
    # Both import torch (through model.golden.quantize). Kept out of this module's import so that a
    # command line can check a configuration with ScanConfig.check_shape in a fraction of a
    # second, before it exports a layer.
    from model.config import BiMambaConfig
    from model.golden.quantize import QuantizedLayer

from .bram import registered_ram
from .dsp import KEEP, MUL_LATENCY, pipelined_mul
from .nonlinear import (
    DECAY_LATENCY, SOFTPLUS_LATENCY, _delay, _reg, decay_stage, round_shift, saturate,
    softplus_stage,
)
from .stall import RegisteredFIFO, output_register
from .state_swap import state_swap
from .xnor_projection import _adder_tree

__all__ = ["SWAP_READ_LATENCY", "ScanConfig", "SsmScan", "ConstTarget", "scan_cycles_per_token",
           "scan_latency", "scan_depth", "lane_sum_stages", "MIN_TOKEN_CYCLES"]

PREP_LATENCY = 1 + SOFTPLUS_LATENCY + DECAY_LATENCY
QUEUE_LATENCY = 2 + 1  # FIFO written -> readable (SyncFIFOBuffered), its output buffer
# The state of a chunk is read RW_READ cycles after its issue and written back RW_WRITE cycles
# after it: a token must take at least RW_WRITE - RW_READ cycles, or it would read a state
# element before the previous token has written it.
DTX_STAGE = MUL_LATENCY + 1  # dt * x, then its rounding and saturation
# The state word is out of the RAM one cycle after the read and registered three times,
# arriving with dtx (dA h and dtx B finish together). A block RAM's clock-to-output is most of
# the cycle on the ECP5 (5.8 ns of 8), so the block's output register takes only that; the
# third register sits after the first level of the banks' multiplexer (rtl/bram.py: the RAM is
# the engine's largest, and holding every layer's state it spans the device); the read bypass
# (the word written in the same cycle) goes behind it.
RW_READ = DTX_STAGE - 4
RW_WRITE = DTX_STAGE + MUL_LATENCY + 2  # their aligned sum, then h' saturated
MIN_TOKEN_CYCLES = RW_WRITE - RW_READ
# The state port's read of the RAM (state in memory, rtl/state_swap.py): address, the block's
# output register, then the multiplexer's register.
SWAP_READ_LATENCY = 3


def lane_sum_stages(lanes: int) -> int:
    """Registers of the sum over lanes: two adder levels each, at least one."""
    levels = (lanes - 1).bit_length()
    return max(1, -(-levels // 2))


def scan_depth(lanes: int) -> int:
    """Issue of a (h, p) pair's last chunk -> its y in the output collector (see
    :attr:`ScanConfig.scan_depth`)."""
    return RW_WRITE + MUL_LATENCY + lane_sum_stages(lanes) + 3


def scan_latency(lanes: int) -> int:
    """Head beat -> y beat beyond the cycles per token (:attr:`ScanConfig.latency`)."""
    return PREP_LATENCY + QUEUE_LATENCY + 1 + scan_depth(lanes) + 1


def scan_cycles_per_token(nheads: int, headdim: int, d_state: int, lanes: int) -> int:
    """``nheads * headdim * d_state / lanes``: one chunk of ``lanes`` state elements a cycle."""
    if d_state % lanes:
        raise ValueError(f"lanes must divide d_state = {d_state}, not {lanes}")
    return nheads * headdim * (d_state // lanes)


class ConstTarget:
    """Values of the ``cfg`` stream's ``sel`` field."""

    DT_BIAS = 0  # in dt_raw's fraction
    AK = 1  # exp(A_log) * log2(e)
    D = 2


@dataclass(frozen=True)
class ScanConfig:
    """Generator parameters: the layer's export ``q``, the number of lanes, and ``slots``, the
    number of layers whose state the RAM holds (token after token the unit serves slot 0, 1,
    ..., ``slots - 1``, 0, ...: one engine running every layer of a model in turn); or
    ``port``: the RAM holds one layer and the others' state comes and goes through the
    ``restore`` and ``save`` streams between tokens (rtl/state_swap.py).

    Raises
    ------
    ValueError
        If ``lanes`` does not divide d_state, or a token would take fewer than
        :data:`MIN_TOKEN_CYCLES` cycles (the state RAM's read-to-write distance).
    """

    q: QuantizedLayer
    lanes: int
    slots: int = 1
    port: bool = False

    def __post_init__(self) -> None:
        self.check_shape(self.q.cfg, self.lanes)
        if not isinstance(self.slots, int) or isinstance(self.slots, bool) or self.slots < 1:
            raise ValueError(f"slots must be a positive integer, not {self.slots!r}")
        if not isinstance(self.port, bool):
            raise ValueError(f"port must be True or False, not {self.port!r}")
        if self.port and self.slots != 1:
            raise ValueError(f"slots must be 1 with the state port (the RAM holds the layer "
                             f"being computed; the others are in memory), not {self.slots}")
        q = self.q
        if q.spec.exp_bits + q.tail.out_fmt.frac - q.fmt["dt"].frac < 0:
            # The softplus tail's shift would be negative: the RTL shifts right only.
            raise ValueError(f"dt's fraction ({q.fmt['dt'].frac}) must be at most exp_bits + "
                             f"tail fraction ({q.spec.exp_bits + q.tail.out_fmt.frac})")
        if (q.a2 <= 0).any():
            raise ValueError("A_log gives a non-positive exp(A_log) * log2(e): decay needs A < 0")

    @staticmethod
    def check_shape(cfg: BiMambaConfig, lanes: int) -> None:
        """The checks of ``lanes`` against the model's shape alone, which need no export: a
        command line runs them before it spends time exporting a layer.

        Raises
        ------
        ValueError
            If ``lanes`` does not divide d_state, or a token would take fewer than
            :data:`MIN_TOKEN_CYCLES` cycles.
        """
        n = cfg.d_state
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1 or n % lanes:
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            raise ValueError(f"lanes must divide d_state = {n} (one of {divisors}), "
                             f"not {lanes!r}")
        cycles = scan_cycles_per_token(cfg.nheads, cfg.headdim, n, lanes)
        if cycles < MIN_TOKEN_CYCLES:
            raise ValueError(f"nheads * headdim * d_state / lanes must be >= {MIN_TOKEN_CYCLES} "
                             f"(the state's read-to-write distance), not {cycles}")

    @property
    def chunks(self) -> int:
        return self.q.cfg.d_state // self.lanes

    @property
    def state_words(self) -> int:
        """Words of one layer's state: ``nheads * headdim * d_state / lanes``."""
        return self.cycles_per_token

    @property
    def state_word_bits(self) -> int:
        """``lanes`` state elements of ``state_bits``: a word of the RAM and of the port."""
        return self.lanes * self.q.spec.state_bits

    @property
    def cycles_per_token(self) -> int:
        """``nheads * headdim * d_state / lanes``."""
        c = self.q.cfg
        return scan_cycles_per_token(c.nheads, c.headdim, c.d_state, self.lanes)

    @property
    def prep_latency(self) -> int:
        """head beat -> FIFO write: bias add (1), softplus, decay."""
        return PREP_LATENCY

    @property
    def fifo_depth(self) -> int:
        """Credits for a full round trip: accept, prep, FIFO (2), read, level update. With one
        fewer, a unit that spends one cycle per head (P * N / lanes = 1) would starve."""
        return self.prep_latency + 3

    @property
    def scan_depth(self) -> int:
        """Issue of a (h, p) pair's last chunk -> its y in the output collector, one register
        per step: dt x (1 to 4, :func:`rtl.dsp.pipelined_mul`), dtx (5), dtx B (6 to 9); in
        parallel the state read (issued at 1, the word out at 2, registered at 3, 4 and 5) and
        dA h (6 to 9); their aligned, rounded sum (10); h', saturated and written back (11); h' C
        (12 to 15); the sum over lanes (:func:`lane_sum_stages`); the y accumulator (1); the y
        sum with D x (1); y, saturated (1)."""
        return scan_depth(self.lanes)

    @property
    def latency(self) -> int:
        """Cycles of a lone token beyond :attr:`cycles_per_token`, first ``head`` handshake to
        last ``y`` handshake: the prep pipeline, the FIFO (``SyncFIFOBuffered``: written to
        readable, 2) and its output buffer (1), loading the head into the scanner (1),
        :attr:`scan_depth` and the output register (1). A burst of n tokens takes
        ``n * cycles_per_token + latency`` cycles."""
        return scan_latency(self.lanes)

    # widths ---------------------------------------------------------------------------------

    @property
    def y_acc_bits(self) -> int:
        q = self.q
        return signed_bits(q.cfg.d_state * (1 << (q.spec.state_bits - 1))
                           * (1 << (q.spec.data_bits - 1)))

    @property
    def bc_layout(self) -> data.StructLayout:
        n, db = self.q.cfg.d_state, self.q.spec.data_bits
        return data.StructLayout({"start": 1, "b": data.ArrayLayout(signed(db), n),
                                  "c": data.ArrayLayout(signed(db), n)})

    @property
    def head_layout(self) -> data.StructLayout:
        q = self.q
        return data.StructLayout({"dt_raw": signed(q.fmt["dt_raw"].bits),
                                  "x": data.ArrayLayout(signed(q.spec.data_bits),
                                                        q.cfg.headdim)})

    @property
    def y_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.q.fmt["y"].bits), self.q.cfg.headdim)

    @property
    def cfg_layout(self) -> data.StructLayout:
        q = self.q
        return data.StructLayout({
            "sel": unsigned(2), "addr": range(max(q.cfg.nheads, 2)),
            "data": signed(max(q.spec.param_bits, q.fmt["dt_in"].bits))})


class SsmScan(wiring.Component):
    """The scan datapath (see the module docstring).

    Members
    -------
    bc : ``In(stream.Signature(config.bc_layout))``
    head : ``In(stream.Signature(config.head_layout))``
    y : ``Out(stream.Signature(config.y_layout))``
    cfg : ``In(stream.Signature(config.cfg_layout))``, always ready
    restore, save, loaded : with ``config.port`` (:func:`rtl.state_swap.state_swap`):
        ``state_words`` words of ``state_word_bits`` in and out between tokens; a token's
        first head waits for ``loaded``.
    """

    def __init__(self, config: ScanConfig) -> None:
        if not isinstance(config, ScanConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a ScanConfig, not {config!r}")
        self.config = config
        members = {
            "bc": In(stream.Signature(config.bc_layout)),
            "head": In(stream.Signature(config.head_layout)),
            "y": Out(stream.Signature(config.y_layout)),
            "cfg": In(stream.Signature(config.cfg_layout)),
        }
        if config.port:
            members.update({
                "restore": In(stream.Signature(unsigned(config.state_word_bits))),
                "save": Out(stream.Signature(unsigned(config.state_word_bits))),
                "loaded": Out(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        c = self.config
        q = c.q
        H, P, L, K, S = q.cfg.nheads, q.cfg.headdim, c.lanes, c.chunks, c.slots
        f, s = q.fmt, q.spec
        from model.golden.bounds import scan_alignment

        al = scan_alignment(q)
        m = Module()

        # -- per-head constants ----------------------------------------------------------------
        consts = {}
        for sel, shape in ((ConstTarget.DT_BIAS, signed(f["dt_in"].bits)),
                           (ConstTarget.AK, signed(s.param_bits)),
                           (ConstTarget.D, signed(s.param_bits))):
            mem = Memory(shape=shape, depth=max(H, 2), init=[])
            m.submodules[f"const{sel}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.cfg.payload.addr), wp.data.eq(self.cfg.payload.data),
                         wp.en.eq(self.cfg.valid & (self.cfg.payload.sel == sel))]
            consts[sel] = mem
        m.d.comb += self.cfg.ready.eq(1)

        # -- head prep: dt_bias, softplus, decay, into a FIFO ---------------------------------
        entry = data.StructLayout({"dt": unsigned(f["dt"].bits), "dA": unsigned(f["dA"].bits),
                                   "x": data.ArrayLayout(signed(s.data_bits), P)})
        # dt and dA wait in hfifo once the prep pipeline has made them; x skips the pipeline
        # and waits in xfifo from the head beat on. Entries are read from both together.
        # x is written prep_latency cycles before its dt and dA, so its FIFO can take the
        # cycle more of a fabric output register (rtl.stall.RegisteredFIFO): a head's x is
        # P values wide (512 bits in the shipped model, block RAM), and the block's
        # clock-to-output with the way to the head buffer was the whole-model top's 85.5 MHz
        # path (11.7 ns).
        prep = data.StructLayout({"dt": unsigned(f["dt"].bits), "dA": unsigned(f["dA"].bits)})
        m.submodules.hfifo = hfifo = fifo.SyncFIFOBuffered(width=prep.size, depth=c.fifo_depth)
        m.submodules.xfifo = xfifo = RegisteredFIFO(width=P * s.data_bits, depth=c.fifo_depth)
        # Credits: `held` counts the heads taken and not yet read from hfifo (in the prep
        # pipeline or in the FIFO); `space` is held < fifo_depth, registered from the next
        # count so that head.ready is a flip-flop.
        held = Signal(range(c.fifo_depth + 1))
        space = Signal(init=1)
        m.d.comb += self.head.ready.eq(space)
        take = self.head.valid & self.head.ready
        m.d.comb += [xfifo.w_data.eq(self.head.payload.x), xfifo.w_en.eq(take)]
        hprep = Signal(range(max(H, 2)))
        with m.If(take):
            m.d.sync += hprep.eq(Mux(hprep == H - 1, 0, hprep + 1))
        bias_p = consts[ConstTarget.DT_BIAS].read_port(domain="comb")
        ak_p = consts[ConstTarget.AK].read_port(domain="comb")
        m.d.comb += [bias_p.addr.eq(hprep), ak_p.addr.eq(hprep)]
        one = Value.cast(1)
        x_in = _reg(m, self.head.payload.dt_raw + bias_p.data, one, "prep_x",
                    signed(f["dt_in"].bits))
        v0 = _reg(m, take, one, "prep_v0")
        ak = _reg(m, ak_p.data, one, "prep_ak")
        dt = softplus_stage(m, q, x_in, one, "sp")
        dA = decay_stage(m, q, dt, _delay(m, ak, SOFTPLUS_LATENCY, one, "ak"), one, "decay")
        dt_d = _delay(m, dt, DECAY_LATENCY, one, "dt")
        v_d = _delay(m, v0, SOFTPLUS_LATENCY + DECAY_LATENCY, one, "v")
        w = Signal(prep)
        m.d.comb += [w.dt.eq(dt_d), w.dA.eq(dA), hfifo.w_data.eq(w), hfifo.w_en.eq(v_d)]

        # -- B and C: the next token's beat waits while the current one is scanned -----------
        # Two slots: the scanner reads slot `bc_sel`, the next beat is written into the other,
        # and a token's start flips `bc_sel`. (Copying the waiting beat into a current one
        # would put the head-load decision on the enable of every bit of B and C.)
        slots = [Signal(c.bc_layout, name=f"bc_slot{i}") for i in range(2)]
        bc_sel = Signal()
        bc_full = Signal()
        m.d.comb += self.bc.ready.eq(~bc_full)
        for i, slot in enumerate(slots):
            with m.If(self.bc.valid & ~bc_full & (bc_sel == (1 - i))):
                m.d.sync += slot.eq(self.bc.payload)
        bc_next_start = Mux(bc_sel, slots[0].start, slots[1].start)

        def bc_chunk(field: str, k) -> Value:
            """Chunk ``k`` of B or C (``field``) of the current token."""
            width = s.data_bits * L
            return Mux(bc_sel, getattr(slots[1], field).as_value().word_select(k, width),
                       getattr(slots[0], field).as_value().word_select(k, width))

        # -- scanner -----------------------------------------------------------------------------
        # adv: a register (rtl/stall.py) enabling every register of the scanner; the head-load
        # and issue logic reads its own copy, placed beside it (measured at 16 lanes: 1.9 ns
        # of routing from the shared one).
        ctl_adv = Signal(init=1, name="ctl_adv", attrs=KEEP)
        adv, ovalid, opayload = output_register(m, self.y, adv_copies=[ctl_adv])
        h = Signal(range(max(H, 2)))
        p = Signal(range(max(P, 2)))
        k = Signal(range(max(K, 2)))
        # `base`: the first state word of the slot of the token in cur_* (its layer), stepped
        # as the token's last chunk issues.
        base = Signal(range(S * H * P * K))
        busy = Signal()  # a head is loaded in cur_*
        cur = Signal(entry)
        last_k, last_p, last_h = k == K - 1, p == P - 1, h == H - 1

        # Load the next head when idle or as the current one issues its last chunk.
        finishing = Signal()
        load = Signal()
        need_bc = Signal()
        # The FIFOs' heads pass through a two-entry buffer (rtl/stall.py) whose read enable is
        # a register, so the FIFOs' read logic is not in the cone of `load`.
        hq = stream.Signature(entry).create(path=("hq",))
        q_adv, q_valid, q_payload = output_register(m, hq, "hq")
        pop = q_adv & hfifo.r_rdy  # x was written before dt and dA: xfifo is readable too
        head = prep(hfifo.r_data)
        m.d.comb += [q_valid.eq(hfifo.r_rdy), q_payload.dt.eq(head.dt), q_payload.dA.eq(head.dA),
                     q_payload.x.eq(xfifo.r_data), hfifo.r_en.eq(pop), xfifo.r_en.eq(pop)]
        # held_next < depth, from comparisons of the register `held` and a choice by take
        # and pop (not behind held_next's carry chains)
        up, down = take & ~pop, pop & ~take
        m.d.sync += [held.eq(held + take - pop),
                     space.eq(Mux(up, held < c.fifo_depth - 1, down | (held < c.fifo_depth)))]

        # Flags of the counters, registered with them, so that the head load (which enables
        # every bit of B and C) is a few gates from flip-flops rather than behind comparators.
        at_last = Signal(init=int(K == 1 and P == 1))  # (k, p) is the head's last chunk
        h_first = Signal(init=1)  # h == 0
        h_last = Signal(init=int(H == 1))  # h == H - 1
        issue = Signal()
        m.d.comb += [issue.eq(ctl_adv & busy), finishing.eq(issue & at_last)]
        # The head counter `h` names the head in cur_*; `need_bc` must look at the head that
        # is about to be loaded, i.e. h after the finishing increment.
        m.d.comb += need_bc.eq(Mux(finishing, h_last, h_first))

        # Each flag the load decision reads is the register of its next-state value (`*_n`),
        # so that the decision itself is registered too: `can_load` is, one cycle ahead,
        # (idle and (no B, C needed or B, C waiting)) or (on the head's last chunk and the same
        # for the next head). The load is then one gate from flip-flops; it enables the head
        # buffer's registers and `cur`.
        k_next = Mux(last_k, 0, k + 1)
        p_next = Mux(last_k, Mux(last_p, 0, p + 1), p)
        h_next = Mux(last_h, 0, h + 1)
        step_h = issue & at_last
        busy_n = Mux(load, 1, Mux(finishing, 0, busy))
        at_last_n = Mux(issue, (k_next == K - 1) & (p_next == P - 1), at_last)
        h_first_n = Mux(step_h, h_next == 0, h_first)
        h_last_n = Mux(step_h, h_next == H - 1, h_last)
        bc_full_n = Mux(load & need_bc, 0, bc_full | (self.bc.valid & self.bc.ready))
        # With the state port, a token's first head also waits for its state (`swapped`: a
        # swap has filled the RAM since the last token began).
        token_ok_n = bc_full_n
        if c.port:
            in_token = Signal()  # from a token's first head load to its last chunk's issue
            with m.If(load & need_bc):
                m.d.sync += in_token.eq(1)
            with m.Elif(finishing & h_last):
                m.d.sync += in_token.eq(0)
            # The swap may begin once no chunk is still to be written (the metadata registers
            # up to the write, `at` below).
            pending = Signal()
            swap = state_swap(m, "state", restore=self.restore, save=self.save,
                              words=c.state_words, width=c.state_word_bits,
                              idle=~busy & ~in_token & ~pending, token_start=load & need_bc,
                              read_latency=SWAP_READ_LATENCY)
            m.d.comb += self.loaded.eq(swap.swapped)
            token_ok_n = bc_full_n & swap.swapped_n
        can_load = Signal()  # init 0: after reset the unit is idle and no B, C has arrived
        m.d.sync += [busy.eq(busy_n), at_last.eq(at_last_n), h_first.eq(h_first_n),
                     h_last.eq(h_last_n), bc_full.eq(bc_full_n),
                     can_load.eq((~busy_n & (~h_first_n | token_ok_n))
                                 | (busy_n & at_last_n & (~h_last_n | token_ok_n)))]
        m.d.comb += [load.eq(ctl_adv & hq.valid & can_load), hq.ready.eq(load)]
        with m.If(load):
            m.d.sync += cur.eq(hq.payload)
            with m.If(need_bc):  # loading head 0 starts a token: it takes the waiting B, C
                m.d.sync += bc_sel.eq(~bc_sel)
        with m.If(issue):
            m.d.sync += [k.eq(k_next), p.eq(p_next)]
            with m.If(at_last):
                m.d.sync += h.eq(h_next)
                if S > 1:
                    with m.If(h_last):
                        m.d.sync += base.eq(Mux(base == (S - 1) * H * P * K, 0,
                                                base + H * P * K))

        # The state RAM (rtl/bram.py): the read word registered twice, at the port and in an
        # output register (a block RAM's own on the ECP5). A read in the cycle that writes the
        # same word returns the old word; the bypass below substitutes the new one.
        words = data.ArrayLayout(signed(s.state_bits), L)
        depth = S * H * P * K
        st_waddr = Signal(range(depth))
        st_raddr = Signal(range(depth))
        st_wen = Signal()
        st_wdata = Signal(words)
        addr = Signal(range(depth))
        m.d.comb += addr.eq(base + (h * P + p) * K + k)

        start = Signal()  # the token in cur_* begins a sequence: read the state as zero
        fresh = Signal(init=1)  # no token since reset: the next one begins a sequence too
        with m.If(load & need_bc):
            m.d.sync += [start.eq(bc_next_start | fresh), fresh.eq(0)]

        # One register per step (ScanConfig.scan_depth lists them); `at[n]` is the chunk's
        # metadata in the cycle after register n, i.e. stage n.
        meta = data.StructLayout({"valid": 1, "last": 1, "first": 1, "h": range(max(H, 2)),
                                  "addr": range(depth), "zero": 1})
        m0 = Signal(meta)
        m.d.comb += [m0.valid.eq(issue), m0.last.eq(last_k), m0.first.eq(k == 0), m0.h.eq(h),
                     m0.addr.eq(addr), m0.zero.eq(start)]
        at = [m0]
        for n in range(1, c.scan_depth + 1):
            at.append(_reg(m, at[-1], adv, f"m{n}", meta))
        f_state, fh = al["f_state"], f["ssm"].frac

        # dt * x (MUL_LATENCY), then dtx (DTX_STAGE); then dtx * B per lane. B is selected at
        # issue and kept.
        dtx_p = pipelined_mul(m, cur.dt, cur.x[p], adv, "dtx")
        dtx = _reg(m, saturate(round_shift(dtx_p, f["dt"].frac + f["xbc_act"].frac
                                           - f["dtx"].frac), f["dtx"].min_int, f["dtx"].max_int),
                   adv, "dtx4", signed(s.dtx_bits))
        b = _delay(m, bc_chunk("b", k), DTX_STAGE, adv, "b")
        dA = _delay(m, cur.dA, DTX_STAGE, adv, "dA")
        pb = [pipelined_mul(m, dtx, b.word_select(lane, s.data_bits).as_signed(), adv,
                            f"pb{lane}") for lane in range(L)]

        # The state read RW_READ cycles after issue, the word registered three times (at
        # DTX_STAGE), then dA * h per lane, finishing with dtx * B.
        # Only a valid chunk's word is read: the RAM is the engine's largest, and a read every
        # cycle the pipeline advances would cost its read energy in idle cycles too
        # (energy/activity.py measured 4.5 reads for each one needed).
        m.d.comb += st_raddr.eq(at[RW_READ].addr)
        st_ren = adv & at[RW_READ].valid
        ram = dict(w_addr=st_waddr, w_data=st_wdata, w_en=st_wen, r_addr=st_raddr, r_en=st_ren,
                   o_en=adv, m_en=adv)
        if c.port:
            m.d.comb += pending.eq(Cat(*(a.valid for a in at[1: RW_WRITE + 1])).any())
            ram = dict(w_addr=Mux(swap.w_en, swap.w_addr, st_waddr),
                       w_data=Mux(swap.w_en, swap.w_data, st_wdata), w_en=st_wen | swap.w_en,
                       r_addr=Mux(swap.mode, swap.addr, st_raddr), r_en=st_ren | swap.mode,
                       o_en=adv | swap.after[0], m_en=adv | swap.after[1])
        ram_q = registered_ram(m, "state", words.size, depth, **ram)
        hraw = data.View(words, ram_q)
        # the read bypass: the word written in the read's cycle, when the addresses match
        hit = _delay(m, st_wen & (st_waddr == st_raddr), 3, adv, "st_hit")
        wbyp = _delay(m, st_wdata, 3, adv, "st_wbyp")
        hv = _reg(m, Mux(hit, wbyp, hraw), adv, "hv", words)
        pa = [pipelined_mul(m, dA, Mux(at[DTX_STAGE].zero, 0, hv[lane]), adv, f"pa{lane}")
              for lane in range(L)]

        # The aligned sum with the rounding constant; then h', saturated and written back
        # (RW_WRITE).
        hnew = []
        for lane in range(L):
            acc = _reg(m, (pa[lane] << al["s1"]) + (pb[lane] << al["s2"]) + (
                (1 << (f_state - fh - 1)) if f_state > fh else 0), adv, f"hsum{lane}")
            hnew.append(_reg(m, saturate(acc >> (f_state - fh), f["ssm"].min_int,
                                         f["ssm"].max_int), adv, f"hnew{lane}",
                             signed(s.state_bits)))
        # A chunk's h' is written in its first cycle at RW_WRITE, the enable a register of its
        # own (`st_fresh`), not `adv`: adv reaches every register of the scan, and behind it the
        # banks' write enables (the RAM spans the device) were an 11.1 ns path in the
        # whole-model top. Held by a stall, the chunk has been written before the edge it
        # leaves on, the only edge at which a read can see it: reads are at edges where adv is
        # high, and a read at that edge finds the word written (or, unstalled, in that cycle:
        # the bypass below). One write a chunk, as with adv.
        st_fresh = Signal(name="st_fresh")
        m.d.sync += st_fresh.eq(adv & at[RW_WRITE - 1].valid)
        m.d.comb += [st_waddr.eq(at[RW_WRITE].addr), st_wen.eq(st_fresh)]
        for lane in range(L):
            m.d.comb += st_wdata[lane].eq(hnew[lane])

        # h' C per lane; then the sum over lanes, two adder levels a register.
        cw = _delay(m, bc_chunk("c", k), RW_WRITE, adv, "c")
        terms = [pipelined_mul(m, hnew[lane], cw.word_select(lane, s.data_bits).as_signed(),
                               adv, f"hc{lane}") for lane in range(L)]
        psum, stages = _adder_tree(m, terms, 2, adv, "lanesum")
        assert stages == lane_sum_stages(L)
        n = RW_WRITE + MUL_LATENCY + stages

        # n + 1: accumulate over chunks.
        yacc = Signal(signed(c.y_acc_bits))
        with m.If(adv & at[n].valid):
            m.d.sync += yacc.eq(Mux(at[n].first, 0, yacc) + psum)

        # D x, from issue, aligned with the finished accumulator.
        d_p = consts[ConstTarget.D].read_port(domain="comb")
        m.d.comb += d_p.addr.eq(h)
        dx = _delay(m, pipelined_mul(m, d_p.data, cur.x[p], adv, "dx"), n + 1 - MUL_LATENCY,
                    adv, "dx")

        # n + 2: the aligned sum with the rounding constant; n + 3: y of (h, p), saturated.
        sh_y = al["f_y"] - f["y"].frac
        ysum = _reg(m, (yacc << al["b1"]) + (dx << al["b2"]) + (
            (1 << (sh_y - 1)) if sh_y > 0 else 0), adv, "ysum")
        y5 = _reg(m, saturate(ysum >> sh_y if sh_y > 0 else ysum << -sh_y, f["y"].min_int,
                              f["y"].max_int), adv, "y5", signed(f["y"].bits))
        assert n + 3 == c.scan_depth
        v5 = at[n + 3].valid & at[n + 3].last

        # Output collector: P values of a head, then one beat. The beat is the collected
        # P - 1 values and y5, taken by the output register.
        col = Signal(c.y_layout)
        cp = Signal(range(max(P, 2)))
        with m.If(adv & v5):
            for i in range(P - 1):
                with m.If(cp == i):
                    m.d.sync += col[i].eq(y5)
            m.d.sync += cp.eq(Mux(cp == P - 1, 0, cp + 1))
        m.d.comb += [ovalid.eq(v5 & (cp == P - 1)),
                     opayload.eq(Cat(col.as_value()[: (P - 1) * len(y5)], y5))]
        if c.port:
            swap.save_from(m, ram_q)
        return m
