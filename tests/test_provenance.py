"""Where the golden model's numbers come from, checked independently of the code that makes
them: every calibration byte is the training split's first ``calib_bytes`` (never the text
being scored), the calibration's float run carries every layer's state across its chunks,
``--max-bytes N`` scores exactly N bytes, and a NaN reaching any accuracy gate fails it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import model.evaluate.lm as lm_eval
from model.config import BiMambaConfig
from model.evaluate.sqnr import LM_STAGE_FLOORS_DB, STAGE_FLOORS_DB, failed_stages
from model.golden.lm import residual_streams
from model.golden.quantize import CALIB_CHUNK, QuantSpec
from model.reference.lm import BiMambaLM, student_from_teacher
from model.reference.lm_checkpoint import save_lm

CFG = BiMambaConfig(d_model=32, n_layer=2, d_state=16, headdim=16, vocab_size=256)
EXCERPT = Path(__file__).parent / "data" / "shakespeare"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A teacher and student and a corpus whose splits are different text, recorded as
    ``make data`` records them."""
    from model.data.corpus import write_splits

    root = tmp_path_factory.mktemp("provenance")
    teacher = BiMambaLM(CFG, binary=False).init_weights(3).eval()
    save_lm(teacher, root / "teacher.safetensors")
    save_lm(student_from_teacher(teacher).eval(), root / "student.safetensors")
    write_splits({p.name: p.read_bytes() for p in EXCERPT.glob("*_gut.txt")},
                 root / "data" / "shakespeare")
    return root


def _split_bytes(world: Path, name: str) -> bytes:
    return (world / "data" / "shakespeare" / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("calib_bytes", [1, 200, 777])
def test_calibration_reads_the_first_calib_bytes_of_the_training_split(world, monkeypatch,
                                                                        calib_bytes):
    seen: list[bytes] = []
    real = lm_eval.export_lm

    def recording(lm, spec, calib_tokens=None, **kw):
        seen.append(np.asarray(calib_tokens, np.uint8).tobytes())
        return real(lm, spec, calib_tokens, **kw)

    monkeypatch.setattr(lm_eval, "export_lm", recording)
    r = lm_eval.run(world, "test", QuantSpec(), data_root=world / "data", max_bytes=40,
                    calib_bytes=calib_bytes, streams=2, sqnr_bytes=16)
    train, test = _split_bytes(world, "train"), _split_bytes(world, "test")
    assert seen == [train[:calib_bytes]]
    assert calib_bytes == 1 or test[:calib_bytes] != train[:calib_bytes]  # distinct texts
    assert r["calibration"] == f"first {calib_bytes} bytes of the training split"


def test_the_sweep_calibrates_on_training_text_too(world, monkeypatch):
    seen: list[bytes] = []
    real = lm_eval.calibrate_lm

    def recording(lm, tokens):
        seen.append(np.asarray(tokens, np.uint8).tobytes())
        return real(lm, tokens)

    monkeypatch.setattr(lm_eval, "calibrate_lm", recording)
    lm_eval.sweep(world, [{"act_bits": 8}], data_root=world / "data", max_bytes=30,
                  calib_bytes=300, streams=2, sqnr_bytes=16)
    assert seen == [_split_bytes(world, "train")[:300]]


@pytest.mark.parametrize("max_bytes", [1, 17, 64])
def test_max_bytes_scores_exactly_that_many_bytes(world, monkeypatch, max_bytes):
    """N bytes scored: N targets, each predicted from the bytes before it, the first N + 1
    bytes of the split read; every model sees the same ones."""
    seen: dict[str, bytes] = {}
    real_float, real_golden = lm_eval.float_bits, lm_eval.golden_bits

    def float_rec(m, data, streams):
        seen.setdefault("float", np.asarray(data, np.uint8).tobytes())
        return real_float(m, data, streams)

    def golden_rec(g, rows):
        seen["golden_targets"] = sum(len(y) for _, y in rows)
        return real_golden(g, rows)

    monkeypatch.setattr(lm_eval, "float_bits", float_rec)
    monkeypatch.setattr(lm_eval, "golden_bits", golden_rec)
    r = lm_eval.run(world, "test", QuantSpec(), data_root=world / "data",
                    max_bytes=max_bytes, calib_bytes=64, streams=4, sqnr_bytes=8)
    assert r["bytes"] == max_bytes == seen["golden_targets"]
    assert seen["float"] == _split_bytes(world, "test")[: max_bytes + 1]


def test_calibration_stream_carries_every_layers_state_across_chunks():
    """The layer inputs of the calibration's chunked float run equal those of one forward pass
    over the whole text (hooks on each layer), for a text of several chunks."""
    lm = BiMambaLM(CFG, binary=True).init_weights(5).eval()
    rng = np.random.default_rng(11)
    print("seed=11")
    tokens = rng.integers(0, 256, 2 * CALIB_CHUNK + 37)
    streams = residual_streams(lm, tokens)

    m = lm.double()
    inputs: list[np.ndarray] = []
    hooks = [layer.register_forward_pre_hook(
        lambda mod, args: inputs.append(args[0].detach().numpy().copy()))
        for layer in m.backbone.layers]
    with torch.no_grad():
        h = m.backbone.embedding.weight[torch.from_numpy(tokens)]
        for layer in m.backbone.layers:
            h, _ = layer(h, None)
    for hk in hooks:
        hk.remove()
    assert len(streams) == CFG.n_layer + 1
    for i in range(CFG.n_layer):
        np.testing.assert_allclose(streams[i], inputs[i], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(streams[-1], h.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("floors", [STAGE_FLOORS_DB, LM_STAGE_FLOORS_DB],
                         ids=["layer", "lm"])
def test_a_nan_sqnr_fails_every_stage_gate(floors):
    for stage in floors:
        sq = {k: math.inf for k in floors}
        sq[stage] = math.nan
        assert failed_stages(sq, floors) == [stage]
        sq[stage] = -math.inf
        assert failed_stages(sq, floors) == [stage]
    assert failed_stages({k: math.inf for k in floors}, floors) == []


def test_a_nan_bits_per_character_fails_the_golden_gate(world, monkeypatch):
    monkeypatch.setattr(lm_eval, "golden_bits", lambda g, rows: math.nan)
    r = lm_eval.run(world, "test", QuantSpec(), data_root=world / "data", max_bytes=20,
                    calib_bytes=64, streams=2, sqnr_bytes=8)
    assert math.isnan(r["bpc"]["golden"])
    assert r["failed"][0].startswith("golden bpc >")


def test_a_nan_stage_in_the_model_fails_the_run(world, monkeypatch):
    """A stage whose SQNR comes out NaN in the whole-model run is named in ``failed``."""
    real = lm_eval.stage_sqnr

    def with_nan(student, q, data):
        layers = real(student, q, data)
        layers[1] = {**layers[1], "mixer_out": math.nan}
        return layers

    monkeypatch.setattr(lm_eval, "stage_sqnr", with_nan)
    r = lm_eval.run(world, "test", QuantSpec(), data_root=world / "data", max_bytes=20,
                    calib_bytes=64, streams=2, sqnr_bytes=8)
    assert "L1.mixer_out" in r["failed"]
