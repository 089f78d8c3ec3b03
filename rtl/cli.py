"""What the command lines of this project (``python -m rtl.emit``, ``python -m cosim.run``)
share: usage errors in one line with exit status 2, bounded integers, writable output folders.

Every usage error names the parameter, the value given and what is allowed, for example::

    python -m cosim.run: error: argument --seed: must be an integer in [0, 4294967295], not -1

and is raised before any slow work (export, emission, Verilator build) starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

# The one-line parser, the seed range and the writability probe are the model tools' own
# (rtl sits above model in the layering).
from model.cli import SEED_MAX, CliParser, writable_folder_problem

__all__ = ["SEED_MAX", "CliParser", "int_in", "unwritable_reason", "check_out_dir"]


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[lo, hi]``.

    The error reads ``argument --x: must be an integer in [lo, hi], not <value>``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer in [{lo}, {hi}], not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], not {value}")
        return value

    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


def unwritable_reason(path: Path) -> str | None:
    """Why files cannot be written under the folder ``path`` (made if missing), or None
    (:func:`model.cli.writable_folder_problem`: a real write into the folder or its nearest
    existing parent, which leaves nothing behind)."""
    return writable_folder_problem(path)


def check_out_dir(parser: argparse.ArgumentParser, flag: str, path: Path) -> Path:
    """``path`` if it can hold the output, else a usage error naming ``flag``."""
    reason = unwritable_reason(path)
    if reason is not None:
        parser.error(f"argument {flag}: {path} is not a writable folder ({reason})")
    return Path(path)
