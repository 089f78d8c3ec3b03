"""``LMBench``: the whole-model engine behind a memory model written in RTL, for simulation.

A token's weight stream is 10^4 beats and more; a cocotb driver handing them over one by one
spends tens of microseconds of Python on each, several times the simulated engine's own cost.
Here the testbench pushes ``burst`` words of ``K`` beats instead, in token order, and the
memory model paces them into the engine's ``mem`` port cycle by cycle, in the simulator:

* a token's first beat is offered no earlier than ``latency + 1`` cycles after the engine's
  row request for it, nor ``period`` cycles after the previous token's last beat;
* every other beat no earlier than its gap after the previous handshake (the memory fetches
  one beat ahead, no more): ``period`` cycles, or for a pace of ``period / period_den`` cycles
  a beat the gaps of :class:`rtl.layer.Pace` (``5 / 4``: 1, 1, 1, 2, ...);
* in any cycle a beat is withheld with probability ``bubble / 2**16`` (a 32-bit xorshift
  generator seeded from ``seed``), as :class:`sim.streams.MemorySource`'s pauses.

``period``, ``latency``, ``bubble`` and ``seed`` are input ports the testbench sets before it
releases reset, so one build serves every memory. The last burst of a token is padded; the
model drops the padding (it counts ``beats_per_token``). The engine's row requests also leave
on ``row`` (always to be taken), so the testbench can check each against the token it sent.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.lm import BiMambaLM, LMConfig

__all__ = ["LMBench", "BURST_BEATS", "BURST_BITS", "CFG_LAYOUT", "burst_beats_for"]

BURST_BEATS = 64
# A burst's width at most (Amaranth numbers a design's top-level port bits in 16 bits: the
# burst of a 1024-bit beat is 32 beats).
BURST_BITS = 32768


def burst_beats_for(beat_bits: int) -> int:
    """Beats a burst: :data:`BURST_BEATS`, fewer for beats wider than ``BURST_BITS / 64``."""
    return max(1, min(BURST_BEATS, BURST_BITS // beat_bits))


# The memory model's parameters, set before reset: the weight stream's pacing (``period /
# period_den`` cycles a beat, ``latency``), the state port's (``s_period / s_period_den``
# cycles a word, ``s_latency``; ``c_period / c_period_den`` for its conv channel, 0:
# the SSM channel's), whether the state port shares the weight stream's memory
# (``shared``), the probability of a bubble in 2**-16 (``bubble``) and the generator's seed.
# A denominator of 0 reads as 1.
CFG_LAYOUT = data.StructLayout({"period": 16, "latency": 16, "bubble": 17, "seed": 32,
                                "s_period": 16, "s_latency": 16, "period_den": 16,
                                "c_period": 16, "s_period_den": 16, "c_period_den": 16,
                                "shared": 1})


def cfg_word(**values: int) -> int:
    """The integer a testbench writes to ``cfg``: ``values`` placed by :data:`CFG_LAYOUT`
    (fields not named are 0).

    Raises
    ------
    ValueError
        On a field the layout lacks or a value that does not fit its field.
    """
    fields = dict(CFG_LAYOUT)
    word = 0
    for name, v in values.items():
        if name not in fields:
            raise ValueError(f"cfg field must be one of {', '.join(fields)}, not {name!r}")
        f = fields[name]
        if not isinstance(v, int) or not 0 <= v < 1 << f.width:
            raise ValueError(f"cfg {name} must be an integer in [0, 2**{f.width}), not {v!r}")
        word |= v << f.offset
    return word


def _pace(m: Module, name: str, num, den, first, take, cyc):
    """Pacing of :class:`rtl.layer.Pace` for ``num / den`` cycles an item: ``paced`` is high
    once the item's gap has passed since the last handshake (``take``), the gap before an item
    with ``first`` high being ``ceil(num / den)``. Quotient and remainder are registered in the
    first cycles after reset (the caller holds its stream until ``ready``)."""
    d = Mux(den == 0, 1, den)
    q, s, r = (Signal(16, name=f"{name}_{x}") for x in ("q", "s", "r"))
    ok = Signal(name=f"{name}_ok")
    m.d.sync += [q.eq(num // d), s.eq(num % d), ok.eq(1)]
    last = Signal(32, name=f"{name}_last")
    any_ = Signal(name=f"{name}_any")  # an item has been taken since reset
    gap = Mux(first, q + (s != 0), q + (r + s >= d))
    with m.If(take):
        m.d.sync += [last.eq(cyc), any_.eq(1),
                     r.eq(Mux(first, 0, Mux(r + s >= d, r + s - d, r + s)))]
    return ok & (~any_ | (cyc >= last + gap))


class LMBench(wiring.Component):
    """:class:`~rtl.lm.BiMambaLM` fed by the memory model of the module docstring.

    Members
    -------
    token, logits : as :class:`~rtl.lm.BiMambaLM`
    row : ``Out(stream.Signature(unsigned(token_bits)))``, a copy of the engine's requests
    burst : ``In(stream.Signature(unsigned(K * beat_bits)))``, beat i at bits ``[i*W, (i+1)*W)``
    cfg : ``In(StructLayout({period, latency, bubble, seed}))``, held during a run
    """

    def __init__(self, config: LMConfig, burst_beats: int | None = None) -> None:
        self.config = config
        self.K = burst_beats_for(config.beat_bits) if burst_beats is None else burst_beats
        super().__init__({
            "token": In(stream.Signature(config.token_layout)),
            "row": Out(stream.Signature(unsigned(config.token_bits))),
            "burst": In(stream.Signature(unsigned(self.K * config.beat_bits))),
            "logits": Out(stream.Signature(signed(config.logit_bits))),
            "cfg": In(CFG_LAYOUT),
        })

    def elaborate(self, platform):
        c, K = self.config, self.K
        W, B = c.beat_bits, c.beats_per_token
        m = Module()
        m.submodules.lm = lm = BiMambaLM(c)
        wiring.connect(m, wiring.flipped(self.token), lm.token)
        wiring.connect(m, lm.logits, wiring.flipped(self.logits))

        cyc = Signal(32)
        m.d.sync += cyc.eq(cyc + 1)

        # Row requests: passed on, their cycles queued for the pacing of each token's start.
        # (SyncFIFO: an entry is readable the cycle after its write, when it is first due.)
        m.submodules.reqs = reqs = fifo.SyncFIFO(width=32, depth=4)
        m.d.comb += [
            self.row.payload.eq(lm.row.payload),
            self.row.valid.eq(lm.row.valid & reqs.w_rdy),
            lm.row.ready.eq(self.row.ready & reqs.w_rdy),
            reqs.w_data.eq(cyc), reqs.w_en.eq(lm.row.valid & lm.row.ready),
        ]

        # Bursts, and the beat within the burst and within the token.
        m.submodules.bursts = bursts = fifo.SyncFIFOBuffered(width=K * W, depth=4)
        m.d.comb += [bursts.w_data.eq(self.burst.payload),
                     bursts.w_en.eq(self.burst.valid & bursts.w_rdy),
                     self.burst.ready.eq(bursts.w_rdy)]
        si = Signal(range(K))
        bi = Signal(range(B))

        # The generator: xorshift32, seeded in the first cycle after reset.
        rnd = Signal(32)
        seeded = Signal()
        x1 = rnd ^ (rnd << 13)[:32]
        x2 = x1 ^ (x1 >> 17)
        x3 = x2 ^ (x2 << 5)[:32]
        with m.If(~seeded):
            m.d.sync += [rnd.eq(self.cfg.seed | 1), seeded.eq(1)]
        with m.Else():
            m.d.sync += rnd.eq(x3)
        bubble = seeded & (rnd[:16] < self.cfg.bubble)

        # The pace (rtl.layer.Pace): p = period / period_den cycles a beat; ceil(p) before a
        # token's first. With a shared state port, no beat while a swap is under way.
        started = bi != 0
        take = Signal()
        paced = _pace(m, "mem", self.cfg.period, self.cfg.period_den, ~started, take, cyc)
        self._swapping = Signal()
        due = Mux(started, 1, reqs.r_rdy & (cyc >= reqs.r_data + 1 + self.cfg.latency))
        mem = lm.mem
        m.d.comb += [
            mem.payload.eq(bursts.r_data.word_select(si, W)),
            mem.valid.eq(seeded & bursts.r_rdy & paced & due & ~bubble
                         & ~(self.cfg.shared & self._swapping)),
            take.eq(mem.valid & mem.ready),
        ]
        last_beat = bi == B - 1
        m.d.comb += [bursts.r_en.eq(take & ((si == K - 1) | last_beat)),
                     reqs.r_en.eq(take & last_beat)]
        with m.If(take):
            m.d.sync += [si.eq(Mux((si == K - 1) | last_beat, 0, si + 1)),
                         bi.eq(Mux(last_beat, 0, bi + 1))]
        if c.state == "memory":
            self._state_memory(m, lm, cyc, seeded & (rnd[16:32] < self.cfg.bubble), bi)
        return m

    def _state_memory(self, m: Module, lm: BiMambaLM, cyc, bubble, bi) -> None:
        """The state port's memory: every layer's SSM and conv state (``state_words`` and
        ``conv_words`` words a layer, zero after power-up). Per request, on each channel the
        words of layer ``load`` in order, the first no earlier than ``s_latency + 1`` cycles
        after the request nor the channel's pace (``s_period / s_period_den`` cycles a word,
        :class:`rtl.layer.Pace`; ``c_period / c_period_den`` for the conv channel) after its
        last word sent, each next one its gap after the one before; the words coming back are
        written to layer ``save``, paced the same way.

        ``shared``: one memory behind the weight stream and the port, serving them in turn. A
        swap's words move only while the weight stream stands at the first beat of layer
        ``load`` (every beat before it taken), and no weight beat moves from the swap's first
        word read to its last word written, on either channel."""
        c = self.config
        L, req = c.n_layer, lm.state_req
        E, Lb = c.section_beats()["embedding"], c.layer.beats_per_token
        slot_bits = len(req.payload.load)
        taken = req.valid & req.ready
        ready, swapping = [], []
        c_num = Mux(self.cfg.c_period == 0, self.cfg.s_period, self.cfg.c_period)
        c_den = Mux(self.cfg.c_period == 0, self.cfg.s_period_den, self.cfg.c_period_den)
        for name, rd_port, wr_port, words, width, num, den in (
                ("ssm", lm.state_in, lm.state_out, c.state_words, c.state_word_bits,
                 self.cfg.s_period, self.cfg.s_period_den),
                ("conv", lm.conv_in, lm.conv_out, c.conv_words, c.conv_word_bits, c_num,
                 c_den)):
            store = Memory(shape=unsigned(width), depth=L * words, init=[])
            m.submodules[f"{name}_store"] = store
            rd, wr = store.read_port(domain="comb"), store.write_port()
            loads = fifo.SyncFIFO(width=32 + slot_bits, depth=4)
            saves = fifo.SyncFIFO(width=slot_bits, depth=4)
            m.submodules[f"{name}_loads"], m.submodules[f"{name}_saves"] = loads, saves
            ready += [loads.w_rdy, saves.w_rdy]
            m.d.comb += [loads.w_data.eq(Cat(cyc, req.payload.load)),
                         saves.w_data.eq(req.payload.save),
                         loads.w_en.eq(taken), saves.w_en.eq(taken)]
            load = loads.r_data[32:]
            # Reads: layer `load`, word `ri`.
            ri = Signal(range(max(words, 2)), name=f"{name}_ri")
            r_take = Signal(name=f"{name}_r_take")
            r_paced = _pace(m, f"{name}_r", num, den, ri == 0, r_take, cyc)
            due = Mux(ri == 0, cyc >= loads.r_data[:32] + 1 + self.cfg.s_latency, 1)
            turn = ~self.cfg.shared | (bi == load * Lb + E)
            m.d.comb += [rd.addr.eq(load * words + ri),
                         rd_port.payload.eq(rd.data),
                         rd_port.valid.eq(loads.r_rdy & due & r_paced & turn & ~bubble),
                         r_take.eq(rd_port.valid & rd_port.ready)]
            m.d.comb += loads.r_en.eq(r_take & (ri == words - 1))
            with m.If(r_take):
                m.d.sync += ri.eq(Mux(ri == words - 1, 0, ri + 1))
            # Writes: layer `save`, word `wi`.
            wi = Signal(range(max(words, 2)), name=f"{name}_wi")
            w_take = Signal(name=f"{name}_w_take")
            w_paced = _pace(m, f"{name}_w", num, den, wi == 0, w_take, cyc)
            m.d.comb += [wr_port.ready.eq(saves.r_rdy & w_paced & ~bubble),
                         w_take.eq(wr_port.valid & wr_port.ready)]
            m.d.comb += [wr.addr.eq(saves.r_data * words + wi), wr.data.eq(wr_port.payload),
                         wr.en.eq(w_take), saves.r_en.eq(w_take & (wi == words - 1))]
            with m.If(w_take):
                m.d.sync += wi.eq(Mux(wi == words - 1, 0, wi + 1))
            # A swap is under way from its first word read to its last word written.
            busy = Signal(name=f"{name}_swapping")
            with m.If(r_take & (ri == 0)):
                m.d.sync += busy.eq(1)
            with m.Elif(w_take & (wi == words - 1)):
                m.d.sync += busy.eq(0)
            swapping.append(busy | (r_take & (ri == 0)))
        m.d.comb += [req.ready.eq(Cat(*ready).all()), self._swapping.eq(Cat(*swapping).any())]
