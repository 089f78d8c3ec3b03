"""Bad checkpoints: every one refused at load by the one reader of the format, in one line that
names the file, the key (or metadata entry), what was expected and what was found; the command
lines print it with exit status 2 before any long work.

The bad files are built here from a tiny random teacher and student (a few kB each), and one
from the shipped student."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import BiMambaConfig
from model.data.corpus import write_splits
from model.evaluate import __main__ as evaluate_cli
from model.evaluate import lm as lm_eval
from model.generate import __main__ as generate_cli
from model.reference.checkpoint import CheckpointError
from model.reference.lm import BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import (
    check_lm, expected_tensors, load_lm, load_lm_model, read_metadata, save_lm,
)

from .conftest import usage_error

# d_model 36: the in_proj rows have 4 padding bits in their last byte of signs.
CFG = BiMambaConfig(d_model=36, n_layer=2, d_state=8, headdim=12, vocab_size=256)
EXCERPT = Path(__file__).parent / "data" / "shakespeare"
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare"
L1 = "backbone.layers.1."


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A folder with a valid tiny teacher and its student."""
    root = tmp_path_factory.mktemp("good")
    teacher = BiMambaLM(CFG, binary=False).init_weights(3).eval()
    save_lm(teacher, root / "teacher.safetensors")
    save_lm(student_from_teacher(teacher), root / "student.safetensors")
    return root


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def rewrite(src: Path, dst: Path, tensors=None, meta=None) -> Path:
    """``src`` with ``tensors(t)`` / ``meta(m)`` applied (in place on the dicts), as ``dst``."""
    t, m = read(src)
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(dst), metadata=m)
    return dst


def config(**changes):
    def edit(m):
        c = json.loads(m["config"])
        c.update(changes)
        m["config"] = json.dumps(c)
    return edit


def poke(key: str, index: int, value: float):
    def edit(t):
        x = t[key].clone()
        x.view(-1)[index] = value
        t[key] = x
    return edit


# (case, file, binary the caller needs, how to break it, the message after "<path>: ")
CASES = [
    ("empty", "student", True, lambda p, d: d.write_bytes(b""),
     "not a safetensors file: expected an 8-byte header length and a JSON header, found a "
     "file of 0 bytes"),
    ("random", "student", True,
     lambda p, d: d.write_bytes(np.random.default_rng(0).bytes(3000)),
     "not a safetensors file: expected a header length of at most 100,000,000 bytes in the "
     "first 8, found {n_random:,}"),
    ("header_cut", "student", True,
     lambda p, d: d.write_bytes(p.read_bytes()[:200]),
     "truncated (or not a safetensors file): its first 8 bytes announce a header of "
     "{n_header:,} bytes, the file holds 192 after them"),
    ("header_past_end", "student", True,  # announces 4 bytes more than the file holds
     lambda p, d: d.write_bytes((p.stat().st_size - 4).to_bytes(8, "little")
                                + p.read_bytes()[8:]),
     "truncated (or not a safetensors file): its first 8 bytes announce a header of "
     "{size_less_4:,} bytes, the file holds {size_less_8:,} after them"),
    ("header_length_0", "student", True,
     lambda p, d: d.write_bytes(bytes(100)),
     "not a safetensors file: expected a JSON header, found a header length of 0"),
    ("header_not_json", "student", True,
     lambda p, d: d.write_bytes((12).to_bytes(8, "little") + b"not json at all"),
     "not a safetensors file: expected a JSON header of 12 bytes, found bytes that are not JSON"),
    ("truncated", "teacher", False,
     lambda p, d: d.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
     "truncated: expected a file of {size:,} bytes (its header places tensor data up to byte "
     "{data:,} after it), found {half:,} bytes"),
    ("extra_key", "student", True,
     lambda p, d: rewrite(p, d, tensors=lambda t: t.__setitem__(
         "backbone.extra.bias", torch.zeros(3, dtype=torch.float16))),
     "key 'backbone.extra.bias': unexpected (expected only the 28 keys of a Bi-Mamba student "
     "of this config, found this one too, float16 of shape (3,))"),
    ("dropped_key", "student", True,
     lambda p, d: rewrite(p, d, tensors=lambda t: t.pop(L1 + "mixer.dt_bias")),
     f"key '{L1}mixer.dt_bias' (layer 1): missing (expected float16 of shape (6,) in a "
     f"Bi-Mamba student of this config)"),
    ("wrong_shape", "teacher", False,
     lambda p, d: rewrite(p, d, tensors=lambda t: t.__setitem__(
         L1 + "mixer.conv1d.bias", t[L1 + "mixer.conv1d.bias"][:-1].clone())),
     f"key '{L1}mixer.conv1d.bias' (layer 1): expected shape (88,) (from the metadata config: "
     f"d_model 36, d_state 8, headdim 12, vocab_size 256), found (87,)"),
    ("wrong_dtype", "student", True,
     lambda p, d: rewrite(p, d, tensors=lambda t: t.__setitem__(
         L1 + "mixer.D", t[L1 + "mixer.D"].float())),
     f"key '{L1}mixer.D' (layer 1): expected float16, found float32"),
    ("packed_length", "student", True,
     lambda p, d: rewrite(p, d, tensors=lambda t: t.__setitem__(
         L1 + "mixer.in_proj.weight.signs", t[L1 + "mixer.in_proj.weight.signs"][:, :4].clone())),
     f"key '{L1}mixer.in_proj.weight.signs' (layer 1): expected shape (166, 5) (the packed "
     f"sign bits of a 166 x 36 weight, 8 a byte), found (166, 4)"),
    ("padding_bits", "student", True,
     lambda p, d: rewrite(p, d, tensors=lambda t: t[L1 + "mixer.in_proj.weight.signs"][
         :2, -1].bitwise_or_(0x80)),
     f"key '{L1}mixer.in_proj.weight.signs' (layer 1): expected padding bits 0 beyond column "
     f"36 of each row, found 2 rows with padding bits set"),
    ("binary_false", "student", True, lambda p, d: d.write_bytes(
        (p.parent / "teacher.safetensors").read_bytes()),
     "metadata 'binary': expected 'true' (a Bi-Mamba student is needed here), found 'false' "
     "(a float model)"),
    ("binary_true", "teacher", False, lambda p, d: d.write_bytes(
        (p.parent / "student.safetensors").read_bytes()),
     "metadata 'binary': expected 'false' (a float model is needed here), found 'true' "
     "(a Bi-Mamba student)"),
    ("binary_yes", "student", True,
     lambda p, d: rewrite(p, d, meta=lambda m: m.__setitem__("binary", "yes")),
     "metadata 'binary': expected 'true' or 'false', found 'yes'"),
    ("other_d_model", "student", True, lambda p, d: rewrite(p, d, meta=config(d_model=48)),
     "key 'backbone.embedding.weight': expected shape (256, 48) (from the metadata config: "
     "d_model 48, d_state 8, headdim 12, vocab_size 256), found (256, 36)"),
    ("fewer_layers", "teacher", False, lambda p, d: rewrite(p, d, meta=config(n_layer=1)),
     f"key '{L1}mixer.A_log' (layer 1): unexpected (expected only the 11 keys of a float "
     f"model of this config, found this one too, float16 of shape (6,); the metadata config "
     f"has n_layer = 1)"),
    ("more_layers", "student", True, lambda p, d: rewrite(p, d, meta=config(n_layer=3)),
     "key 'backbone.layers.2.norm.weight' (layer 2): missing (expected float16 of shape (36,) "
     "in a Bi-Mamba student of this config; 13 keys missing in all; the metadata config has "
     "n_layer = 3)"),
    ("unknown_field", "student", True, lambda p, d: rewrite(p, d, meta=config(dropout=0.1)),
     "metadata 'config': expected only the fields d_model, n_layer, d_state, expand, headdim, "
     "ngroups, d_conv, vocab_size, rms_eps, found the unknown field 'dropout'"),
    ("invalid_field", "student", True, lambda p, d: rewrite(p, d, meta=config(headdim=10)),
     "metadata 'config': headdim must divide d_inner = expand * d_model = 72, not 10"),
    ("config_not_json", "teacher", False,
     lambda p, d: rewrite(p, d, meta=lambda m: m.__setitem__("config", "{d_model: 36")),
     "metadata 'config': expected JSON, found text that is not (Expecting property name "
     "enclosed in double quotes: line 1 column 2 (char 1))"),
    ("no_format", "student", True, lambda p, d: rewrite(p, d, meta=lambda m: m.pop("format")),
     "is not a bimamba-lm/1 checkpoint (metadata 'format': expected 'bimamba-lm/1', found no "
     "'format' entry)"),
    ("packed_metadata", "student", True, lambda p, d: rewrite(p, d, meta=lambda m: m.__setitem__(
        "packed", json.dumps({**json.loads(m["packed"]),
                              L1 + "mixer.out_proj.weight.signs": [36, 71]}))),
     f"metadata 'packed': entry '{L1}mixer.out_proj.weight.signs': expected [36, 72] (from "
     f"the config), found [36, 71]"),
    ("nan_wscale", "student", True,
     lambda p, d: rewrite(p, d, tensors=poke(L1 + "mixer.in_proj.wscale", 17, float("nan"))),
     f"key '{L1}mixer.in_proj.wscale' (layer 1): expected finite values, found 1 non-finite "
     f"(NaN), the first at index (0, 17)"),
    ("nan_D", "student", True,
     lambda p, d: rewrite(p, d, tensors=poke(L1 + "mixer.D", 4, float("nan"))),
     f"key '{L1}mixer.D' (layer 1): expected finite values, found 1 non-finite (NaN), the "
     f"first at index (4,)"),
    ("inf_teacher", "teacher", False,
     lambda p, d: rewrite(p, d, tensors=poke("backbone.embedding.weight", 40, float("-inf"))),
     "key 'backbone.embedding.weight': expected finite values, found 1 non-finite (inf), the "
     "first at index (1, 4)"),
    ("folder", "student", True, lambda p, d: d.mkdir(),
     "is a folder, not a checkpoint file"),
]


def build(good: Path, tmp: Path, case: tuple) -> tuple[Path, str]:
    """The broken file of ``case`` in its own folder (beside an intact other file) and the
    exact message expected for it."""
    name, which, _, breaker, message = case
    folder = tmp / name
    folder.mkdir()
    for f in ("teacher", "student"):
        if f != which:
            (folder / f"{f}.safetensors").write_bytes((good / f"{f}.safetensors").read_bytes())
    src = good / f"{which}.safetensors"
    dst = folder / f"{which}.safetensors"
    breaker(src, dst)
    size = src.stat().st_size
    n_header = int.from_bytes(src.read_bytes()[:8], "little")
    rnd = np.random.default_rng(0).bytes(3000)
    message = message.format(size=size, data=size - 8 - n_header, half=size // 2, n_header=n_header,
                             size_less_4=size - 4, size_less_8=size - 8,
                             n_random=int.from_bytes(rnd[:8], "little"))
    return dst, f"{dst}: {message}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_file_is_refused_at_load_naming_file_key_expected_found(good, tmp_path, case):
    path, message = build(good, tmp_path, case)
    binary = case[2]
    with pytest.raises(CheckpointError) as e:
        load_lm(path, binary=binary)
    assert str(e.value) == message
    assert "\n" not in str(e.value)
    # Every loader is the same reader: the model loader and the checker say the same.
    for loader in (load_lm_model, check_lm):
        with pytest.raises(CheckpointError) as e2:
            loader(path, binary=binary)
        assert str(e2.value) == message


def test_the_good_files_load_and_the_key_table_is_the_models(good):
    for binary, name in ((True, "student"), (False, "teacher")):
        cfg, sd = load_lm(good / f"{name}.safetensors", binary=binary, cfg=CFG)
        assert cfg == CFG
        model_sd = BiMambaLM(CFG, binary).state_dict()
        assert {k: tuple(v.shape) for k, v in sd.items()} == \
            {k: tuple(v.shape) for k, v in model_sd.items()}
        table = expected_tensors(CFG, binary)
        assert len(table) == len(model_sd)
        assert set(table) == {k + ".signs" if binary and k.endswith(("in_proj.weight",
                                                                     "out_proj.weight")) else k
                              for k in model_sd}


def test_a_shape_other_than_the_callers_is_named_with_its_source(good):
    want = BiMambaConfig(d_model=36, n_layer=3, d_state=8, headdim=12, vocab_size=256)
    path = good / "student.safetensors"
    with pytest.raises(CheckpointError) as e:
        load_lm(path, cfg=want, cfg_source="the teacher's, t.safetensors")
    assert str(e.value) == (f"{path}: metadata 'config': n_layer expected 3 (the teacher's, "
                            f"t.safetensors), found 2")


def test_metadata_reader_checks_the_header_and_entries(good, tmp_path):
    bad = rewrite(good / "student.safetensors", tmp_path / "s.safetensors",
                  meta=lambda m: m.__setitem__("dtype", "bfloat16"))
    with pytest.raises(CheckpointError) as e:
        read_metadata(bad)
    assert str(e.value) == f"{bad}: metadata 'dtype': expected 'float16', found 'bfloat16'"
    missing = tmp_path / "none.safetensors"
    with pytest.raises(CheckpointError) as e:
        read_metadata(missing)
    assert str(e.value) == f"{missing}: not found (expected a .safetensors checkpoint file)"
    assert read_metadata(good / "student.safetensors")["binary"] == "true"


@pytest.mark.skipif(not (SHIPPED / "student.safetensors").is_file(), reason="no checkpoints")
def test_shipped_checkpoints_pass_the_checks():
    t = check_lm(SHIPPED / "teacher.safetensors", binary=False)
    assert check_lm(SHIPPED / "student.safetensors", binary=True, cfg=t) == t


# -- the command lines --------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_splits({p.name: p.read_bytes() for p in EXCERPT.glob("*_gut.txt")},
                 root / "shakespeare")
    return root


@pytest.fixture
def no_long_work(monkeypatch):
    """Calibration, export and scoring raise: an error must come before any of them."""
    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the input was refused")

    for name in ("shipped_golden", "export_lm", "calibrate_lm", "float_bits", "golden_bits"):
        monkeypatch.setattr(lm_eval, name, forbidden)


CLI_CASES = [c for c in CASES if c[0] in (
    "random", "truncated", "extra_key", "dropped_key", "packed_length", "binary_false",
    "binary_true", "other_d_model", "fewer_layers", "unknown_field", "nan_wscale", "nan_D",
    "inf_teacher", "folder")]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_evaluate_refuses_a_bad_checkpoint_before_any_work(good, tmp_path, data_root, capsys,
                                                            no_long_work, case):
    path, message = build(good, tmp_path, case)
    err = usage_error(capsys, evaluate_cli.main, ["--checkpoint", str(path.parent),
                                                  "--data-root", str(data_root)])
    assert err == f"python -m model.evaluate: error: {message}"


@pytest.mark.parametrize("case", [c for c in CLI_CASES if c[1] == "student"],
                         ids=[c[0] for c in CLI_CASES if c[1] == "student"])
@pytest.mark.parametrize("use_float", [False, True], ids=["golden", "float"])
def test_generate_refuses_a_bad_student_before_any_work(good, tmp_path, data_root, capsys,
                                                         no_long_work, monkeypatch, case,
                                                         use_float):
    from model.generate import sampling

    def forbidden(*args, **kwargs):
        raise AssertionError("the float student ran before the input was refused")

    monkeypatch.setattr(sampling, "generate_float", forbidden)
    path, message = build(good, tmp_path, case)
    argv = ["--prompt", "x", "--checkpoint", str(path.parent)]
    err = usage_error(capsys, generate_cli.main,
                      argv + (["--float"] if use_float else ["--data-root", str(data_root)]))
    assert err == f"python -m model.generate: error: {message}"


def test_evaluate_needs_the_students_shape_to_be_the_teachers(good, tmp_path, data_root,
                                                              capsys, no_long_work):
    other = BiMambaConfig(d_model=24, n_layer=2, d_state=8, headdim=12, vocab_size=256)
    (tmp_path / "teacher.safetensors").write_bytes((good / "teacher.safetensors").read_bytes())
    save_lm(student_from_teacher(BiMambaLM(other, False).init_weights(0)),
            tmp_path / "student.safetensors")
    err = usage_error(capsys, evaluate_cli.main, ["--checkpoint", str(tmp_path),
                                                  "--data-root", str(data_root)])
    assert err == (f"python -m model.evaluate: error: {tmp_path}/student.safetensors: metadata "
                   f"'config': d_model expected 36 (the teacher's, "
                   f"{tmp_path}/teacher.safetensors), found 24")


@pytest.mark.skipif(not (SHIPPED / "student.safetensors").is_file(), reason="no checkpoints")
def test_nan_in_the_shipped_student_is_named_by_the_command_with_exit_status_2(tmp_path):
    """A NaN in layer 4's D of the shipped student: ``python -m model.generate`` (a process of
    its own, so the exit status is the real one) names file, key and layer at load."""
    key = "backbone.layers.4.mixer.D"
    rewrite(SHIPPED / "student.safetensors", tmp_path / "student.safetensors",
            tensors=poke(key, 5, float("nan")))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    res = subprocess.run([sys.executable, "-m", "model.generate", "--prompt", "ROMEO:",
                          "--checkpoint", str(tmp_path), "--data-root", str(tmp_path / "none")],
                         capture_output=True, text=True, cwd="/", env=env, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (f"python -m model.generate: error: {tmp_path}/student.safetensors: "
                          f"key '{key}' (layer 4): expected finite values, found 1 non-finite "
                          f"(NaN), the first at index (5,)\n")
    assert not re.search("Traceback", res.stderr)
