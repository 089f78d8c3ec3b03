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
# period_den`` cycles a beat, ``latency``), the state port's (``s_period``, ``s_latency``;
# ``c_period`` for its conv channel, 0: ``s_period``), the probability of a bubble in
# 2**-16 (``bubble``) and the generator's seed.
CFG_LAYOUT = data.StructLayout({"period": 16, "latency": 16, "bubble": 17, "seed": 32,
                                "s_period": 16, "s_latency": 16, "period_den": 16,
                                "c_period": 16})


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

        # The pace (rtl.layer.Pace): p = period / period_den cycles a beat; the gap before
        # beat k of a token is floor(k p) - floor((k - 1) p) = q + (r + s >= den), q and s
        # the quotient and remainder of p, r = (k - 1) s mod den; ceil(p) before a token's
        # first. (q and s are registered in the first cycle after reset.)
        den = Mux(self.cfg.period_den == 0, 1, self.cfg.period_den)
        pq, ps, r = Signal(16), Signal(16), Signal(16)
        with m.If(~seeded):
            m.d.sync += [pq.eq(self.cfg.period // den), ps.eq(self.cfg.period % den)]
        last_hs = Signal(32)
        any_hs = Signal()  # a beat has been taken since reset
        started = bi != 0
        gap = Mux(started, pq + (r + ps >= den), pq + (ps != 0))
        paced = ~any_hs | (cyc >= last_hs + gap)
        due = Mux(started, 1, reqs.r_rdy & (cyc >= reqs.r_data + 1 + self.cfg.latency))
        mem = lm.mem
        m.d.comb += [
            mem.payload.eq(bursts.r_data.word_select(si, W)),
            mem.valid.eq(seeded & bursts.r_rdy & paced & due & ~bubble),
        ]
        take = mem.valid & mem.ready
        last_beat = bi == B - 1
        m.d.comb += [bursts.r_en.eq(take & ((si == K - 1) | last_beat)),
                     reqs.r_en.eq(take & last_beat)]
        with m.If(take):
            m.d.sync += [last_hs.eq(cyc), any_hs.eq(1),
                         r.eq(Mux(started, Mux(r + ps >= den, r + ps - den, r + ps), 0)),
                         si.eq(Mux((si == K - 1) | last_beat, 0, si + 1)),
                         bi.eq(Mux(last_beat, 0, bi + 1))]
        if c.state == "memory":
            self._state_memory(m, lm, cyc, seeded & (rnd[16:32] < self.cfg.bubble))
        return m

    def _state_memory(self, m: Module, lm: BiMambaLM, cyc, bubble) -> None:
        """The state port's memory: every layer's SSM and conv state (``state_words`` and
        ``conv_words`` words a layer, zero after power-up). Per request, on each channel the
        words of layer ``load`` in order, the first no earlier than ``s_latency + 1`` cycles
        after the request nor the channel's period (``s_period``; ``c_period`` for the conv
        channel) after its last word sent, each next one a period after the one before; the
        words coming back are written to layer ``save``, taken no more often than one a
        period."""
        c = self.config
        L, req = c.n_layer, lm.state_req
        slot_bits = len(req.payload.load)
        taken = req.valid & req.ready
        ready = []
        c_period = Mux(self.cfg.c_period == 0, self.cfg.s_period, self.cfg.c_period)
        for name, rd_port, wr_port, words, width, period in (
                ("ssm", lm.state_in, lm.state_out, c.state_words, c.state_word_bits,
                 self.cfg.s_period),
                ("conv", lm.conv_in, lm.conv_out, c.conv_words, c.conv_word_bits, c_period)):
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
            # Reads: layer `load`, word `ri`.
            ri = Signal(range(max(words, 2)), name=f"{name}_ri")
            r_last = Signal(32, name=f"{name}_r_last")
            r_any = Signal(name=f"{name}_r_any")
            due = Mux(ri == 0, cyc >= loads.r_data[:32] + 1 + self.cfg.s_latency, 1)
            paced = ~r_any | (cyc >= r_last + period)
            m.d.comb += [rd.addr.eq(loads.r_data[32:] * words + ri),
                         rd_port.payload.eq(rd.data),
                         rd_port.valid.eq(loads.r_rdy & due & paced & ~bubble)]
            r_take = rd_port.valid & rd_port.ready
            m.d.comb += loads.r_en.eq(r_take & (ri == words - 1))
            with m.If(r_take):
                m.d.sync += [ri.eq(Mux(ri == words - 1, 0, ri + 1)), r_last.eq(cyc),
                             r_any.eq(1)]
            # Writes: layer `save`, word `wi`.
            wi = Signal(range(max(words, 2)), name=f"{name}_wi")
            w_last = Signal(32, name=f"{name}_w_last")
            w_any = Signal(name=f"{name}_w_any")
            m.d.comb += wr_port.ready.eq(
                saves.r_rdy & (~w_any | (cyc >= w_last + period)) & ~bubble)
            w_take = wr_port.valid & wr_port.ready
            m.d.comb += [wr.addr.eq(saves.r_data * words + wi), wr.data.eq(wr_port.payload),
                         wr.en.eq(w_take), saves.r_en.eq(w_take & (wi == words - 1))]
            with m.If(w_take):
                m.d.sync += [wi.eq(Mux(wi == words - 1, 0, wi + 1)), w_last.eq(cyc),
                             w_any.eq(1)]
        m.d.comb += req.ready.eq(Cat(*ready).all())
