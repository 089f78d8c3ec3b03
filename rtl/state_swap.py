"""The state port of a unit whose RAM holds one layer's state (the whole-model engine with its
state in memory, :class:`rtl.lm.LMConfig` ``state="memory"``): between two tokens of the unit,
the next token's state comes in on ``restore`` and the one just computed leaves on ``save``,
word by word in address order.

A *step* takes restore word ``a`` and reads word ``a`` of the RAM (the old state); the restore
word is written a cycle later, so no word is read in the cycle that writes it. The read word
reaches the RAM's output ``read_latency`` cycles after the step and goes into a FIFO of
:data:`SAVE_FIFO_DEPTH` words in front of ``save``; a step waits while the FIFO could not take
its word. A swap begins when the unit is ``idle`` (between tokens, nothing left to write), the
last swap's words have all left, and the RAM does not already hold the next token's state
(``swapped``, cleared as the unit begins a token).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, Value
from amaranth.lib import fifo

__all__ = ["SAVE_FIFO_DEPTH", "StateSwap", "save_delay", "state_swap"]

# Words the save side holds (stepped, in the RAM's registers or in its FIFO): at a word a cycle
# both ways, a step's word leaves about six cycles later, so eight never stall.
SAVE_FIFO_DEPTH = 8


def save_delay(read_latency: int) -> int:
    """Cycles from a step to its word on ``save`` (when the FIFO is empty): the RAM's
    ``read_latency``, the FIFO's write, and its output register."""
    return read_latency + 2


@dataclass
class StateSwap:
    """The swap's signals (:func:`state_swap`).

    Members
    -------
    swapped, swapped_n : the RAM holds the next token's state (a register, and its next value)
    mode : the swap drives the RAM's read port (a step may come)
    step : a word is taken (restore) and read (save) at address ``addr``
    addr : the word of the next step
    w_addr, w_data, w_en : the RAM write of the word taken a cycle before
    last_step : the swap's last word is taken
    after : ``step`` delayed by 1 .. ``read_latency`` cycles (the read word's way out)
    """

    swapped: Signal
    swapped_n: Value
    mode: Value
    step: Signal
    addr: Signal
    w_addr: Signal
    w_data: Signal
    w_en: Signal
    last_step: Value
    after: list
    _fifo: fifo.SyncFIFOBuffered
    _save: object

    def save_from(self, m: Module, data) -> None:
        """Connect the RAM's read word (``read_latency`` cycles after a step) to ``save``."""
        f, save = self._fifo, self._save
        m.d.comb += [f.w_data.eq(data), save.valid.eq(f.r_rdy), save.payload.eq(f.r_data),
                     f.r_en.eq(save.ready)]


def state_swap(m: Module, name: str, *, restore, save, words: int, width: int, idle,
               token_start, read_latency: int) -> StateSwap:
    """Add the swap of a ``words`` x ``width`` state RAM to ``m`` (see the module docstring).

    ``restore`` and ``save`` are the unit's streams; ``idle`` is high while the unit is between
    tokens with no state write pending; ``token_start`` as it begins a token (which then needs
    ``swapped``); ``read_latency`` the cycles from a read's address to its word at the RAM's
    output.

    Raises
    ------
    ValueError
        If the RAM has fewer than two words (the unit's first read after a swap would meet the
        swap's last write) or ``read_latency`` is not 1 or more.
    """
    if words < 2:
        raise ValueError(f"{name}: the state port needs a RAM of 2 or more words, not {words}")
    if read_latency < 1:
        raise ValueError(f"{name}: read_latency must be >= 1, not {read_latency}")
    F = SAVE_FIFO_DEPTH
    m.submodules[f"{name}_save_fifo"] = sfifo = fifo.SyncFIFOBuffered(width=width, depth=F)
    pend = Signal(range(F + 1), name=f"{name}_pend")  # steps whose words have not left
    addr = Signal(range(words), name=f"{name}_addr")
    swap_on = Signal(name=f"{name}_swap_on")
    swapped = Signal(name=f"{name}_swapped")
    mode = swap_on | (~swapped & idle & (pend == 0))
    step = Signal(name=f"{name}_step")
    last_step = step & (addr == words - 1)
    m.d.comb += [restore.ready.eq(mode & (pend < F)), step.eq(restore.valid & restore.ready)]
    swapped_n = Mux(last_step, 1, Mux(token_start, 0, swapped))
    m.d.sync += swapped.eq(swapped_n)
    with m.If(step):
        m.d.sync += [addr.eq(Mux(addr == words - 1, 0, addr + 1)),
                     swap_on.eq(addr != words - 1)]
    w_data = Signal(width, name=f"{name}_w_data")
    w_addr = Signal(range(words), name=f"{name}_w_addr")
    w_en = Signal(name=f"{name}_w_en")
    m.d.sync += [w_en.eq(step), pend.eq(pend + step - (save.valid & save.ready))]
    with m.If(step):
        m.d.sync += [w_data.eq(restore.payload), w_addr.eq(addr)]
    after = []
    for i in range(read_latency):
        after.append(Signal(name=f"{name}_sd{i + 1}"))
        m.d.sync += after[-1].eq(after[-2] if i else step)
    m.d.comb += sfifo.w_en.eq(after[-1])
    return StateSwap(swapped, swapped_n, mode, step, addr, w_addr, w_data, w_en, last_step,
                     after, sfifo, save)
