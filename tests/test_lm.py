"""The byte-level LM: paths against each other, key names, student init, shipped format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.reference.checkpoint import load_block, model_key_shapes
from model.config import BiMambaConfig
from model.reference.lm import LM_CONFIG, BiMambaLM, binary_keys, student_from_teacher
from model.reference.lm_checkpoint import (
    checkpoint_bytes, load_lm, load_lm_model, pack_signs, read_metadata, save_lm,
    unpack_signs,
)
from model.reference.layer import FBILinear

CFG = BiMambaConfig(d_model=32, n_layer=2, d_state=8, headdim=16, vocab_size=256)
SHIPPED = Path(__file__).parent.parent / "checkpoints" / "shakespeare"


def make(binary: bool, seed: int = 0, dtype: torch.dtype = torch.float64) -> BiMambaLM:
    return BiMambaLM(CFG, binary).init_weights(seed).to(dtype).eval()


def alpha_beta_free(keys) -> set[str]:
    return {k for k in keys if not k.endswith(("wscale", "wbias"))}


@pytest.mark.parametrize("binary", [True, False], ids=["student", "teacher"])
def test_batched_equals_each_sequence_equals_step(binary, seed):
    model = make(binary, seed)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 256, (3, 24), generator=g)
    with torch.no_grad():
        logits, states = model(idx)
        assert logits.shape == (3, 24, 256)
        scale = logits.abs().max()
        for b in range(3):
            lb, sb = model(idx[b])
            assert (lb - logits[b]).abs().max() <= 1e-13 * scale
            st = model.initial_state(torch.float64)
            for t in range(24):
                lt, st = model.step(idx[b, t], st)
                assert (lt - logits[b, t]).abs().max() <= 1e-12 * scale
            for layer in range(CFG.n_layer):
                assert torch.allclose(st[layer].ssm, states[layer].ssm[b], rtol=0, atol=1e-12)
                assert torch.allclose(sb[layer].ssm, states[layer].ssm[b], rtol=0, atol=1e-13)


def test_sequence_continues_from_batched_states():
    model = make(True)
    idx = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = model(idx)
        a, s = model(idx[:, :13])
        b, _ = model(idx[:, 13:], s)
    assert torch.allclose(torch.cat([a, b], 1), whole, rtol=0, atol=1e-12)


def test_state_dict_uses_bimamba_keys():
    student, teacher = make(True), make(False)
    want = model_key_shapes(CFG)
    assert {k: tuple(v.shape) for k, v in student.state_dict().items()} == want
    assert set(teacher.state_dict()) == alpha_beta_free(want)
    # The head is tied: no parameter beyond the checkpoint's.
    assert sum(p.numel() for p in teacher.parameters()) == sum(
        v.numel() for k, v in teacher.state_dict().items())


def test_head_is_the_embedding():
    model = make(False)
    h = torch.randn(5, CFG.d_model, dtype=torch.float64)
    want = model.backbone.norm_f(h) @ model.backbone.embedding.weight.T
    assert torch.allclose(model.logits(h), want)


def test_dropout_only_in_training():
    a = make(False)
    b = BiMambaLM(CFG, False, dropout=0.5).double()
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert torch.equal(a(idx)[0], b.eval()(idx)[0])
        assert not torch.equal(a(idx)[0], b.train()(idx)[0])
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), not 1.0"):
        BiMambaLM(CFG, False, dropout=1.0)


def test_init_is_seeded():
    assert all(torch.equal(x, y) for x, y in
               zip(make(False, 3).state_dict().values(), make(False, 3).state_dict().values()))
    assert not torch.equal(make(False, 3).backbone.embedding.weight,
                           make(False, 4).backbone.embedding.weight)


def test_student_from_teacher_copies_and_xnor_inits():
    teacher = make(False, 2)
    student = student_from_teacher(teacher)
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for k, v in t_sd.items():
        assert torch.equal(s_sd[k], v), k
    for m in student.modules():
        if isinstance(m, FBILinear):
            beta = m.weight.mean(0, keepdim=True)
            assert torch.allclose(m.wbias, beta)
            assert torch.allclose(m.wscale, (m.weight - beta).abs().mean(0, keepdim=True))
    with pytest.raises(ValueError, match="teacher must be a float model"):
        student_from_teacher(student)


# -- shipped format -----------------------------------------------------------------------

def test_sign_packing_layout():
    w = torch.tensor([[1.0, -1, -1, -1, -1, -1, -1, -1, 0.5, -0.0, 0.0],
                      [-1.0, 2, -1, -1, -1, -1, -1, -1, -3, -1, -1]])
    packed = pack_signs(w)
    # Little bit order along d_in, bit 1 = +1; -0.0 and 0.0 count as +1; padding bits 0.
    assert packed.tolist() == [[0b00000001, 0b00000111], [0b00000010, 0b00000000]]
    assert torch.equal(unpack_signs(packed, 11), torch.where(w >= 0, 1.0, -1.0))
    with pytest.raises(ValueError,
                       match=r"packed must be uint8 of shape \(d_out, 3\) for d_in = 17"):
        unpack_signs(packed, 17)


def test_student_round_trip_reproduces_signs_and_outputs(tmp_path):
    student = student_from_teacher(make(False, 5)).float()
    with torch.no_grad():
        w = student.backbone.layers[0].mixer.in_proj.weight
        w[0, :4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])  # zeros are +1
    path = tmp_path / "s.safetensors"
    size = save_lm(student, path, {"note": "x"})
    assert size - checkpoint_bytes(CFG, True) < 4096  # the rest is the JSON header
    cfg, sd = load_lm(path)
    assert cfg == CFG
    assert read_metadata(path)["note"] == "x"
    for key in binary_keys(CFG):
        assert torch.equal(sd[key], torch.where(student.state_dict()[key] >= 0, 1.0, -1.0))
    assert set(sd) == set(model_key_shapes(CFG))
    # The loaded model computes what the saved one does with FP16-rounded parameters.
    rounded = student_from_teacher(make(False, 5)).float()
    rounded.load_state_dict(student.state_dict())
    with torch.no_grad():
        for k, v in rounded.state_dict().items():
            if k not in binary_keys(CFG):
                v.copy_(v.half().float())
    loaded = load_lm_model(path)
    idx = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], rounded.eval()(idx)[0])
        # A layer of the student loads through the Bi-Mamba block loader unchanged.
        block = load_block(sd, cfg, 1)
        h = torch.randn(7, CFG.d_model)
        assert torch.equal(block(h)[0], loaded.backbone.layers[1](h)[0])


def test_teacher_round_trip_is_fp16(tmp_path):
    teacher = make(False, 6).float()
    path = tmp_path / "t.safetensors"
    save_lm(teacher, path)
    meta = read_metadata(path)
    assert meta["binary"] == "false" and json.loads(meta["packed"]) == {}
    cfg, sd = load_lm(path)
    assert set(sd) == set(teacher.state_dict())
    for k, v in teacher.state_dict().items():
        assert torch.equal(sd[k], v.half().float()), k


def test_foreign_file_is_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="is not a bimamba-lm/1 checkpoint"):
        load_lm(path)


def test_shipped_shape_fits_in_16_mb():
    teacher, student = checkpoint_bytes(LM_CONFIG, False), checkpoint_bytes(LM_CONFIG, True)
    n = sum(p.numel() for p in BiMambaLM(LM_CONFIG, False).parameters())
    print(f"{n:,} parameters: teacher {teacher:,} B, student {student:,} B")
    assert 5_000_000 < n < 7_000_000
    assert teacher + student <= 16_000_000


@pytest.mark.skipif(not (SHIPPED / "student.safetensors").is_file(),
                    reason="no shipped checkpoints")
def test_shipped_checkpoints_load():
    files = [SHIPPED / "teacher.safetensors", SHIPPED / "student.safetensors"]
    assert sum(f.stat().st_size for f in files) <= 16_000_000
    (t_cfg, t_sd), (s_cfg, s_sd) = (load_lm(f) for f in files)
    assert t_cfg == s_cfg == LM_CONFIG
    assert set(t_sd) == alpha_beta_free(s_sd)
    for key in binary_keys(LM_CONFIG):
        assert set(s_sd[key].unique().tolist()) <= {-1.0, 1.0}
