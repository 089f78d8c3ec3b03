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

from amaranth import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.fixedpoint import signed_bits

if TYPE_CHECKING:
    # Both import torch (through model.quantize). Kept out of this module's import so that a
    # command line can check a configuration with ScanConfig.check_shape in a fraction of a
    # second, before it exports a layer.
    from model.config import BiMambaConfig
    from model.quantize import QuantizedLayer

from .nonlinear import (
    DECAY_LATENCY, SOFTPLUS_LATENCY, _delay, _reg, decay_stage, round_shift, saturate,
    softplus_stage,
)

__all__ = ["ScanConfig", "SsmScan", "ConstTarget", "scan_cycles_per_token", "SCAN_LATENCY"]

# Head beat -> y beat beyond cycles_per_token (ScanConfig.latency explains each term).
PREP_LATENCY = 1 + SOFTPLUS_LATENCY + DECAY_LATENCY
SCAN_DEPTH = 5
SCAN_LATENCY = PREP_LATENCY + 2 + 1 + SCAN_DEPTH + 1


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
    """Generator parameters: the layer's export ``q`` and the number of lanes.

    Raises
    ------
    ValueError
        If ``lanes`` does not divide d_state, or a token would take fewer than 2 cycles (the
        state RAM's read-after-write distance).
    """

    q: QuantizedLayer
    lanes: int

    def __post_init__(self) -> None:
        self.check_shape(self.q.cfg, self.lanes)
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
            If ``lanes`` does not divide d_state, or a token would take fewer than 2 cycles.
        """
        n = cfg.d_state
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1 or n % lanes:
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            raise ValueError(f"lanes must divide d_state = {n} (one of {divisors}), "
                             f"not {lanes!r}")
        cycles = scan_cycles_per_token(cfg.nheads, cfg.headdim, n, lanes)
        if cycles < 2:
            raise ValueError(f"nheads * headdim * d_state / lanes must be >= 2, not {cycles}")

    @property
    def chunks(self) -> int:
        return self.q.cfg.d_state // self.lanes

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
        """Issue of a (h, p) pair's last chunk -> its y in the output collector:
        state read (1), update (1), h' C products and lane sum (1), y accumulate (1), y (1)."""
        return SCAN_DEPTH

    @property
    def latency(self) -> int:
        """Cycles of a lone token beyond :attr:`cycles_per_token`, first ``head`` handshake to
        last ``y`` handshake: the prep pipeline, the FIFO (``SyncFIFOBuffered``: written to
        readable, 2), loading the head into the scanner (1), :attr:`scan_depth` and the output
        register (1). A burst of n tokens takes ``n * cycles_per_token + latency`` cycles."""
        return SCAN_LATENCY

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
    """

    def __init__(self, config: ScanConfig) -> None:
        if not isinstance(config, ScanConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a ScanConfig, not {config!r}")
        self.config = config
        super().__init__({
            "bc": In(stream.Signature(config.bc_layout)),
            "head": In(stream.Signature(config.head_layout)),
            "y": Out(stream.Signature(config.y_layout)),
            "cfg": In(stream.Signature(config.cfg_layout)),
        })

    def elaborate(self, platform):
        c = self.config
        q = c.q
        H, P, L, K = q.cfg.nheads, q.cfg.headdim, c.lanes, c.chunks
        f, s = q.fmt, q.spec
        from model.bounds import scan_alignment

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
        m.submodules.hfifo = hfifo = fifo.SyncFIFOBuffered(width=entry.size, depth=c.fifo_depth)
        inflight = Signal(range(c.fifo_depth + 1))
        space = Signal()
        m.d.comb += space.eq(hfifo.level + inflight < c.fifo_depth)
        m.d.comb += self.head.ready.eq(space)
        take = self.head.valid & self.head.ready
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
        xs = _reg(m, self.head.payload.x, one, "prep_xs")
        dt = softplus_stage(m, q, x_in, one, "sp")
        dA = decay_stage(m, q, dt, _delay(m, ak, SOFTPLUS_LATENCY, one, "ak"), one, "decay")
        dt_d = _delay(m, dt, DECAY_LATENCY, one, "dt")
        x_d = _delay(m, xs, SOFTPLUS_LATENCY + DECAY_LATENCY, one, "x")
        v_d = _delay(m, v0, SOFTPLUS_LATENCY + DECAY_LATENCY, one, "v")
        w = Signal(entry)
        m.d.comb += [w.dt.eq(dt_d), w.dA.eq(dA), w.x.eq(x_d),
                     hfifo.w_data.eq(w), hfifo.w_en.eq(v_d)]
        m.d.sync += inflight.eq(inflight + take - v_d)

        # -- B and C: the next token's beat waits while the current one is scanned -----------
        bc_next = Signal(c.bc_layout)
        bc_full = Signal()
        bc_cur = Signal(c.bc_layout)
        m.d.comb += self.bc.ready.eq(~bc_full)
        with m.If(self.bc.valid & self.bc.ready):
            m.d.sync += [bc_next.eq(self.bc.payload), bc_full.eq(1)]

        # -- scanner -----------------------------------------------------------------------------
        adv = Signal()
        m.d.comb += adv.eq(~self.y.valid | self.y.ready)
        h = Signal(range(max(H, 2)))
        p = Signal(range(max(P, 2)))
        k = Signal(range(max(K, 2)))
        busy = Signal()  # a head is loaded in cur_*
        cur = Signal(entry)
        last_k, last_p, last_h = k == K - 1, p == P - 1, h == H - 1

        # Load the next head when idle or as the current one issues its last chunk.
        finishing = Signal()
        load = Signal()
        need_bc = Signal()
        m.d.comb += load.eq(adv & hfifo.r_rdy & (~busy | finishing) & (~need_bc | bc_full))
        m.d.comb += [hfifo.r_en.eq(load)]
        with m.If(load):
            m.d.sync += [cur.eq(hfifo.r_data), busy.eq(1)]
            with m.If(need_bc):  # loading head 0 starts a token: it takes the waiting B, C
                m.d.sync += [bc_cur.eq(bc_next), bc_full.eq(0)]
        with m.Elif(finishing):
            m.d.sync += busy.eq(0)

        issue = Signal()
        m.d.comb += [issue.eq(adv & busy), finishing.eq(issue & last_k & last_p)]
        with m.If(issue):
            m.d.sync += k.eq(Mux(last_k, 0, k + 1))
            with m.If(last_k):
                m.d.sync += p.eq(Mux(last_p, 0, p + 1))
                with m.If(last_p):
                    m.d.sync += h.eq(Mux(last_h, 0, h + 1))

        # The head counter `h` names the head in cur_*; `need_bc` must look at the head that
        # is about to be loaded, i.e. h after the finishing increment.
        nxt_h = Signal(range(max(H, 2)))
        m.d.comb += nxt_h.eq(Mux(finishing, Mux(last_h, 0, h + 1), h))
        m.d.comb += need_bc.eq(nxt_h == 0)

        state = Memory(shape=data.ArrayLayout(signed(s.state_bits), L), depth=H * P * K,
                       init=[])
        m.submodules.state = state
        st_w = state.write_port()
        st_r = state.read_port(transparent_for=(st_w,))
        addr = Signal(range(H * P * K))
        m.d.comb += [addr.eq((h * P + p) * K + k), st_r.addr.eq(addr), st_r.en.eq(adv)]

        start = Signal()  # the token in cur_* begins a sequence: read the state as zero
        fresh = Signal(init=1)  # no token since reset: the next one begins a sequence too
        with m.If(load & need_bc):
            m.d.sync += [start.eq(bc_next.start | fresh), fresh.eq(0)]

        # Stage 1: operands of the lane update (state word arrives from the RAM).
        dtx = Signal(signed(s.dtx_bits))
        xp = Signal(signed(s.data_bits))
        m.d.comb += [xp.eq(cur.x[p]),
                     dtx.eq(saturate(round_shift(cur.dt * xp,
                                                 f["dt"].frac + f["xbc_act"].frac - f["dtx"].frac),
                                     f["dtx"].min_int, f["dtx"].max_int))]
        meta = data.StructLayout({"valid": 1, "last": 1, "first": 1, "h": range(max(H, 2)),
                                  "addr": range(H * P * K), "zero": 1, "k": range(max(K, 2))})
        m0 = Signal(meta)
        m.d.comb += [m0.valid.eq(issue), m0.last.eq(last_k), m0.first.eq(k == 0), m0.h.eq(h),
                     m0.addr.eq(addr), m0.zero.eq(start), m0.k.eq(k)]
        m1 = _reg(m, m0, adv, "m1", meta)
        dA1 = _reg(m, cur.dA, adv, "dA1")
        dtx1 = _reg(m, dtx, adv, "dtx1")
        x1 = _reg(m, xp, adv, "x1")
        b1 = _reg(m, bc_cur.b.as_value().word_select(k, s.data_bits * L), adv, "b1")
        c1 = _reg(m, bc_cur.c.as_value().word_select(k, s.data_bits * L), adv, "c1")

        # Stage 2: h' per lane.
        f_state, fh = al["f_state"], f["ssm"].frac
        hnew = []
        for lane in range(L):
            hv = Mux(m1.zero, 0, st_r.data[lane])
            bl = b1.word_select(lane, s.data_bits).as_signed()
            acc = ((dA1 * hv) << al["s1"]) + ((dtx1 * bl) << al["s2"])
            hnew.append(_reg(m, saturate(round_shift(acc, f_state - fh), f["ssm"].min_int,
                                         f["ssm"].max_int), adv, f"hnew{lane}",
                             signed(s.state_bits)))
        m2 = _reg(m, m1, adv, "m2", meta)
        c2 = _reg(m, c1, adv, "c2")
        x2 = _reg(m, x1, adv, "x2")
        m.d.comb += [st_w.addr.eq(m2.addr), st_w.en.eq(adv & m2.valid)]
        for lane in range(L):
            m.d.comb += st_w.data[lane].eq(hnew[lane])

        # Stage 3: sum over lanes of h' C.
        terms = [hnew[lane] * c2.word_select(lane, s.data_bits).as_signed() for lane in range(L)]
        lane_sum = terms[0]
        for t in terms[1:]:
            lane_sum = lane_sum + t
        psum = _reg(m, lane_sum, adv, "psum", signed(c.y_acc_bits))
        m3 = _reg(m, m2, adv, "m3", meta)
        x3 = _reg(m, x2, adv, "x3")

        # Stage 4: accumulate over chunks.
        yacc = Signal(signed(c.y_acc_bits))
        with m.If(adv & m3.valid):
            m.d.sync += yacc.eq(Mux(m3.first, 0, yacc) + psum)
        m4 = _reg(m, m3, adv, "m4", meta)
        x4 = _reg(m, x3, adv, "x4")
        d_p = consts[ConstTarget.D].read_port(domain="comb")
        m.d.comb += d_p.addr.eq(m4.h)

        # Stage 5: y of (h, p).
        yv = Signal(signed(f["y"].bits))
        m.d.comb += yv.eq(saturate(round_shift((yacc << al["b1"]) + ((d_p.data * x4) << al["b2"]),
                                               al["f_y"] - f["y"].frac),
                                   f["y"].min_int, f["y"].max_int))
        y5 = _reg(m, yv, adv, "y5")
        v5 = _reg(m, m4.valid & m4.last, adv, "v5")

        # Output collector: P values of a head, then one beat.
        col = Signal(c.y_layout)
        cp = Signal(range(max(P, 2)))
        with m.If(adv):
            with m.If(v5):
                for i in range(P):
                    with m.If(cp == i):
                        m.d.sync += col[i].eq(y5)
                m.d.sync += cp.eq(Mux(cp == P - 1, 0, cp + 1))
            m.d.sync += self.y.valid.eq(v5 & (cp == P - 1))
        m.d.comb += self.y.payload.eq(col)
        return m
