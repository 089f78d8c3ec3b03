"""cocotb 2.x drivers for Amaranth ``lib.stream`` ports (``<name>__payload/valid/ready``).

Both classes drive at falling clock edges and then sample in that time step's ReadOnly phase,
once every write of the step (theirs and the other side's) has propagated: a ``ready`` that
depends combinationally on the far end's ``ready`` is seen as the rising edge will see it. A
handshake seen there completes at the next rising edge; its cycle number is
``floor(sim time / period)``.

With no pause generator the classes wake only when something can happen: a source whose
``ready`` is low waits for its rising edge, a sink whose ``valid`` is low waits for its rising
edge. A long computation between beats therefore costs no Python per clock cycle, which is what
keeps a whole-token simulation of a real-shaped layer fast.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

__all__ = ["random_pauses", "StreamSource", "StreamSink", "MemorySource"]

Pause = Callable[[], bool]


def random_pauses(probability: float, rng: random.Random) -> Pause | None:
    """A pause generator: each call is True (insert a pause cycle) with ``probability``."""
    if probability <= 0:
        return None
    return lambda: rng.random() < probability


class _Port:
    def __init__(self, dut, name: str, clk, period_ns: float) -> None:
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clk = clk
        self.period_ns = period_ns
        self.count = 0  # handshakes so far (what a timeout report shows)
        self.log: list[int] = []  # their cycles

    def cycle(self) -> int:
        return int(get_sim_time("ns") // self.period_ns)

    async def _rose(self, signal) -> bool:
        """Wait for ``signal`` to rise; True if it rose while the clock is low.

        A rise in the clock's low half comes from a write at a falling edge (a combinational
        path from the other side of the port): nothing changes it before the next rising edge,
        which completes the handshake, so it must be counted now. A rise at a rising edge is
        checked again at the next falling edge, as usual.
        """
        await RisingEdge(signal)
        await ReadOnly()
        return not self.clk.value and bool(signal.value)


class StreamSource(_Port):
    """Drives ``payload``/``valid`` of an input stream; ``pause`` inserts idle cycles, ``gap``
    idle cycles after every handshake."""

    def __init__(self, dut, name: str, clk, period_ns: float, pause: Pause | None = None,
                 gap: int = 0) -> None:
        super().__init__(dut, name, clk, period_ns)
        self.pause, self.gap = pause, gap
        self.valid.value = 0

    async def send(self, words: list[int]) -> list[int]:
        """Send ``words`` (unsigned payload ints); return the cycle of each handshake.

        Must be called at a falling edge (or before the first rising edge).
        """
        cycles = []
        for w in words:
            while self.pause is not None and self.pause():
                self.valid.value = 0
                await FallingEdge(self.clk)
            self.payload.value = w
            self.valid.value = 1
            await ReadOnly()
            while not self.ready.value:
                if self.pause is None and await self._rose(self.ready):
                    break  # rose while the clock is low: final for the coming edge
                await FallingEdge(self.clk)
                await ReadOnly()
            cycles.append(self.cycle())
            self.count += 1
            self.log.append(cycles[-1])
            await FallingEdge(self.clk)
            if self.gap:
                self.valid.value = 0
                await Timer(self.gap * self.period_ns, "ns")
        self.valid.value = 0
        return cycles


class StreamSink(_Port):
    """Accepts beats of an output stream; ``pause`` deasserts ``ready`` (backpressure)."""

    def __init__(self, dut, name: str, clk, period_ns: float, pause: Pause | None = None) -> None:
        super().__init__(dut, name, clk, period_ns)
        self.pause = pause
        self.ready.value = 1

    async def receive(self, n: int) -> tuple[list[int], list[int]]:
        """Collect ``n`` beats; return their payloads (unsigned ints) and handshake cycles.

        Must be called at a falling edge.
        """
        words, cycles = [], []
        while len(words) < n:
            ready = not (self.pause is not None and self.pause())
            self.ready.value = int(ready)
            await ReadOnly()
            if self.valid.value:
                if ready:
                    words.append(self.payload.value.to_unsigned())
                    cycles.append(self.cycle())
                    self.count += 1
            elif self.pause is None:
                if await self._rose(self.valid):  # ready is 1 here: the beat is taken
                    words.append(self.payload.value.to_unsigned())
                    cycles.append(self.cycle())
                    self.count += 1
                await FallingEdge(self.clk)
                continue
            await FallingEdge(self.clk)
        self.ready.value = 1
        return words, cycles


class MemorySource(StreamSource):
    """A memory feeding a stream of beats: the first beat is offered ``latency`` cycles after
    :meth:`send` starts, each later one ``period`` cycles after the previous handshake at the
    earliest (``period`` = beat bits / bytes per cycle / 8: ``period = 1`` delivers a whole
    beat every cycle), and ``pause`` adds random bubbles on top. It fetches one beat ahead, no
    more: a consumer that stops taking beats for a while does not find a backlog waiting.
    """

    def __init__(self, dut, name: str, clk, period_ns: float, latency: int = 0,
                 period: int = 1, pause: Pause | None = None) -> None:
        super().__init__(dut, name, clk, period_ns, pause, gap=period - 1)
        self.latency = latency

    async def send(self, words: list[int]) -> list[int]:
        if self.latency:
            await Timer(self.latency * self.period_ns, "ns")
        return await super().send(words)
