"""Checkpoint packing at awkward sizes: a student whose projections' d_in are both not
multiples of 8 round-trips bit for bit (its file as long as the packed rows imply, computed
here), and a projection saved unpacked (the latent FP16 weight instead of its sign bits) is
refused naming the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import BiMambaConfig
from model.reference.checkpoint import model_key_shapes
from model.reference.lm import BiMambaLM, binary_keys
from model.reference.lm_checkpoint import CheckpointError, load_lm, load_lm_model, save_lm

# in_proj: d_in = d_model = 10 (10 % 8 = 2); out_proj: d_in = d_inner = 20 (20 % 8 = 4).
CFG = BiMambaConfig(d_model=10, n_layer=2, d_state=4, headdim=5, vocab_size=256)


@pytest.fixture
def student():
    m = BiMambaLM(CFG, binary=True).init_weights(7).eval()
    rng = np.random.default_rng(7)
    print("seed=7")
    with torch.no_grad():
        for key in binary_keys(CFG):
            w = dict(m.named_parameters())[key]
            flat = w.view(-1)
            # Exact zeros of both signs in every row: they count as +1.
            idx = rng.choice(flat.numel(), size=2 * w.shape[0], replace=False)
            flat[idx[::2]] = 0.0
            flat[idx[1::2]] = -0.0
    return m


def test_awkward_d_in_round_trips_bit_for_bit(tmp_path, student):
    path = tmp_path / "s.safetensors"
    size = save_lm(student, path)
    _, sd = load_lm(path)
    params = dict(student.named_parameters())
    for key in binary_keys(CFG):
        w = params[key].detach()
        d_out, d_in = w.shape
        assert d_in % 8, key
        want = torch.where(w.lt(0), -1.0, 1.0)  # -0.0 is not < 0: +1
        assert torch.equal(sd[key], want), key
        # The row bytes by hand: bit j of byte i is column 8 i + j, 1 for +1, padding 0.
        with safe_open(str(path), "pt") as f:
            packed = f.get_tensor(key + ".signs").numpy()
        bits = (want > 0).numpy().astype(np.uint8)
        for r in range(d_out):
            row = [sum(int(bits[r, 8 * i + j]) << j for j in range(8) if 8 * i + j < d_in)
                   for i in range(-(-d_in // 8))]
            assert packed[r].tolist() == row, (key, r)
    # The packed tensors' share of the file: d_out x ceil(d_in / 8) bytes each.
    shapes = model_key_shapes(CFG)
    packed_bytes = sum(shapes[k][0] * -(-shapes[k][1] // 8) for k in binary_keys(CFG))
    fp16_bytes = sum(2 * int(np.prod(s)) for k, s in shapes.items()
                     if k not in binary_keys(CFG))
    assert size > packed_bytes + fp16_bytes  # plus the header
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    assert size == 8 + header + packed_bytes + fp16_bytes
    # The loaded model holds exactly those signs.
    loaded = dict(load_lm_model(path, binary=True).named_parameters())
    for key in binary_keys(CFG):
        assert torch.equal(torch.where(loaded[key].lt(0), -1.0, 1.0),
                           torch.where(params[key].detach().lt(0), -1.0, 1.0)), key


def test_a_projection_saved_unpacked_is_refused(tmp_path, student):
    path = tmp_path / "s.safetensors"
    save_lm(student, path)
    key = "backbone.layers.1.mixer.out_proj.weight"
    with safe_open(str(path), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    t.pop(key + ".signs")
    t[key] = dict(student.named_parameters())[key].detach().half()
    bad = tmp_path / "unpacked.safetensors"
    save_file(t, str(bad), metadata=meta)
    with pytest.raises(CheckpointError) as e:
        load_lm(bad)
    assert str(e.value) == (
        f"{bad}: key '{key}.signs' (layer 1): missing (expected uint8 of shape (10, 3) in a "
        f"Bi-Mamba student of this config)")
