"""Progress of the long steps (loading, calibration, golden traces, sweeps, training).

On a terminal (stderr a tty) every open step is a transient tqdm bar on stderr, its clock kept
moving even while one long item runs, so the bars cover the whole wait. Anywhere else (a log,
a pipe, CI) there are no bars but plain lines on stderr: one when a :func:`stage` starts, and,
while any step is open, one line at least every :data:`LOG_SECONDS` seconds naming every open
step, outermost first, with its count and the time since the outermost began::

    model.evaluate: calibrating the integer model > calibrate layers 2/6 > float reference 9/32 (14 s)

and a closing line when the outermost step ends after running that long (``... done
(24 s)``). Short steps print
nothing off a terminal, so fast commands and tests stay quiet. The final tables are printed
by the callers either way.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

__all__ = ["LOG_SECONDS", "Bar", "progress", "stage"]

T = TypeVar("T")

# Off a terminal: the longest stretch without a line while a step is open.
LOG_SECONDS = 2.0
# How often the clock thread wakes (terminal bars are refreshed at this pace).
_TICK = 0.25

_lock = threading.RLock()
_open: list["Bar"] = []
_thread: threading.Thread | None = None
_last_line = 0.0


def _reset_after_fork() -> None:
    """A forked child has no clock thread and none of the parent's bars."""
    global _lock, _thread
    _lock = threading.RLock()
    _open.clear()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.1f} min"


def _clock() -> None:
    """The clock thread: refresh terminal bars, write a log line when one is due; ends when no
    step is open."""
    global _thread, _last_line
    while True:
        time.sleep(_TICK)
        with _lock:
            if not _open:
                _thread = None
                return
            now = time.monotonic()
            tty = [b for b in _open if b._bar is not None]
            logs = [b for b in _open if b._bar is None]
            for b in tty:
                try:
                    b._bar.refresh()
                except Exception:  # a closed stream must not kill the clock
                    pass
            if logs and now - max(_last_line, logs[0].t0) >= LOG_SECONDS:
                _last_line = now
                for b in logs:
                    b.logged = True
                try:
                    _say(" > ".join(b.text() for b in logs)
                         + f" ({_seconds(now - logs[0].t0)})")
                except Exception:
                    pass


class Bar:
    """One step of work: a tqdm bar on a terminal, log lines elsewhere (see the module).

    Parameters
    ----------
    desc : str
        What the step does.
    total : int, optional
        Items it will take (None: a step without a count, which shows its clock).
    unit : str
        Name of an item, for the bar.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "it") -> None:
        global _thread
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0
        self.postfix = ""
        self.t0 = time.monotonic()
        self.logged = False
        self._closed = False
        self._bar = None
        if _is_tty():
            fmt = None if total is not None else "{desc}: {elapsed}{postfix}"
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                             dynamic_ncols=True, bar_format=fmt)
        with _lock:
            _open.append(self)
            if _thread is None:
                _thread = threading.Thread(target=_clock, name="progress-clock", daemon=True)
                _thread.start()

    def text(self) -> str:
        count = (f" {self.n}/{self.total}" if self.total is not None
                 else f" {self.n} {self.unit}" if self.n else "")
        return self.desc + count + (f" [{self.postfix}]" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, text: str) -> None:
        """A short status after the count (``loss 2.31``)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def write(self, line: str, file=None) -> None:
        """Print ``line`` (to ``file``, default stdout) without breaking a terminal bar."""
        file = sys.stdout if file is None else file
        if self._bar is not None:
            tqdm.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _lock:
            if self in _open:
                _open.remove(self)
            if self._bar is not None:
                self._bar.close()
            elif self.logged and not any(b._bar is None and b.t0 <= self.t0 for b in _open):
                # the outermost step that was in a log line says when it ends
                count = f" {self.n}/{self.total}" if self.total is not None else ""
                _say(f"{self.desc}{count} done ({_seconds(time.monotonic() - self.t0)})")

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """``iterable``, its progress shown as a :class:`Bar` labelled ``desc`` while it runs."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Bar(desc, total)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()


@contextmanager
def stage(desc: str) -> Iterator[Bar]:
    """A step that is not a loop: its clock on a terminal; off a terminal a line when it
    starts (``desc ...``), lines while it runs and a closing line if it ran long."""
    if not _is_tty():
        _say(f"{desc} ...")
    bar = Bar(desc)
    try:
        yield bar
    finally:
        bar.close()
