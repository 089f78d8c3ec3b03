"""Progress bars for the long loops (calibration, golden traces, sweeps, training).

Bars go to stderr and only when stderr is a terminal (``disable=None``), so logs and pipes
stay clean; the final tables are printed by the callers either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """``iterable`` wrapped in a transient tqdm bar labelled ``desc`` (silent off a terminal)."""
    return iter(tqdm(iterable, desc=desc, total=total, disable=None, leave=False,
                     file=sys.stderr, dynamic_ncols=True))
