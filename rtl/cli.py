"""What the command lines of this project (``python -m rtl.emit``, ``python -m cosim.run``)
share: usage errors in one line with exit status 2, bounded integers, writable output folders.

Every usage error names the parameter, the value given and what is allowed, for example::

    python -m cosim.run: error: argument --seed: must be an integer in [0, 4294967295], not -1

and is raised before any slow work (export, emission, Verilator build) starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["SEED_MAX", "CliParser", "int_in", "unwritable_reason", "check_out_dir"]

# Seeds reach numpy, torch and random.Random, which take any of these, and Verilator's
# +verilator+seed+, which takes 1 to 2**31 - 1 (cosim.verilator folds the seed into that range).
SEED_MAX = 2**32 - 1


class CliParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line, ``<prog>: error: <message>``, with
    exit status 2 (argparse's default prints the whole usage block first; ``--help`` has it).
    Subparsers made with ``add_subparsers`` are of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    """Why files cannot be written under the folder ``path`` (made if missing), or None.

    Nothing is created: the folder, or its nearest existing parent, must be a writable folder.
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"{probe} does not exist"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def check_out_dir(parser: argparse.ArgumentParser, flag: str, path: Path) -> Path:
    """``path`` if it can hold the output, else a usage error naming ``flag``."""
    reason = unwritable_reason(path)
    if reason is not None:
        parser.error(f"argument {flag}: {path} is not a writable folder ({reason})")
    return Path(path)
