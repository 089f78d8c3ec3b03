"""What the command lines of ``model/`` share (``python -m model.data``, ``model.train``,
``model.evaluate``, ``model.generate``): usage errors in one line with exit status 2, checks of
numbers against their allowed range, writable output folders.

Every error names the parameter or the file, what was expected and what was found::

    python -m model.train: error: --lr must be a finite number > 0, not inf
    python -m model.evaluate: error: checkpoints/x/student.safetensors: key
        'backbone.layers.3.mixer.D' (layer 3): expected finite values, found 1 NaN ...

(one line in the terminal), and is raised before any slow work starts. ``rtl.cli`` builds on
this module (its ``CliParser`` is this one): the same one-line format for every command of the
project, without the usage block that argparse prints by default (``--help`` shows it).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = ["SEED_MAX", "CliParser", "path_arg", "check_int", "check_float",
           "writable_folder_problem", "refuse_unused", "fill_defaults"]

# Seeds reach numpy, torch and random.Random, which all take these, and Verilator's
# +verilator+seed+, which takes 1 to 2**31 - 1 (cosim.verilator folds the seed into that range).
SEED_MAX = 2**32 - 1


class CliParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line, ``<prog>: error: <message>``, with
    exit status 2."""

    def error(self, message: str) -> NoReturn:
        # One line, whatever the message held (a tool's multi-line output joined).
        message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
        self.exit(2, f"{self.prog}: error: {message}\n")


def path_arg(text: str) -> Path:
    """An argparse ``type`` for paths that refuses an empty string (which ``Path`` would take
    as the current folder): ``argument --out: must name a path, not an empty string``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a path, not an empty string")
    return Path(text)


def check_int(flag: str, value: int, lo: int, hi: int | None = None) -> None:
    """Raise ValueError unless ``lo <= value <= hi`` (no upper bound if ``hi`` is None)."""
    if hi is None:
        if not value >= lo:
            raise ValueError(f"{flag} must be an integer >= {lo}, not {value}")
    elif not lo <= value <= hi:
        raise ValueError(f"{flag} must be an integer in [{lo}, {hi}], not {value}")


def check_float(flag: str, value: float, *, lo: float | None = None, lo_open: bool = False,
                hi: float | None = None, hi_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is finite and within the bounds given.

    The message states the allowed range: ``--lr must be a finite number > 0, not inf``,
    ``--dropout must be a finite number in [0, 1), not 1.0``.
    """
    ok = math.isfinite(value)
    if lo is not None:
        ok = ok and (value > lo if lo_open else value >= lo)
    if hi is not None:
        ok = ok and (value < hi if hi_open else value <= hi)
    if ok:
        return
    if lo is not None and hi is not None:
        rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        rng = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        rng = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        rng = ""
    raise ValueError(f"{flag} must be a finite number{(' ' + rng) if rng else ''}, not {value}")


def writable_folder_problem(path: Path) -> str | None:
    """Why files cannot be written into the folder ``path`` (made later if missing), or None.

    Nothing is left behind: the folder, or its nearest existing parent, must be a folder in
    which a temporary file can be written (a real write: permission bits do not tell for root
    or on a read-only mount).
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            return f"{probe} does not exist"
        probe = probe.parent
    if not probe.is_dir():
        return (f"{probe} is a file, not a folder" if probe == path
                else f"{probe} is a file, so no folder can be made under it")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        return f"{probe} is not writable ({e.strerror or e})"
    return None


def refuse_unused(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  unused: dict[str, str], mode: str) -> None:
    """A usage error for the first flag of ``unused`` the user gave: a flag the command cannot
    honour in ``mode`` is refused, never silently ignored.

    ``unused`` maps each flag (``"--lr"``) to why it has no effect in the mode (``"no training
    steps"``). A flag counts as given when its value is not None, so such flags take
    ``default=None`` in the parser (``store_true`` ones too) and get their real defaults from
    :func:`fill_defaults` afterwards. The error reads ``--lr has no effect with --model naive
    (no training steps); leave it out``.
    """
    for flag, why in unused.items():
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
            parser.error(f"{flag} has no effect with {mode} ({why}); leave it out")


def fill_defaults(args: argparse.Namespace, defaults: dict[str, object]) -> None:
    """Set each flag of ``defaults`` (``"--lr": 2e-3``) that the user left out (None)."""
    for flag, value in defaults.items():
        dest = flag.lstrip("-").replace("-", "_")
        if getattr(args, dest) is None:
            setattr(args, dest, value)
