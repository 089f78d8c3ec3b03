"""Checkpoint format: synthetic generator, loader, and its errors."""

import re

import pytest
import torch

from model.checkpoint import (
    CheckpointError, load_block, load_stack, model_key_shapes, synthetic_state_dict,
)
from model.config import get_preset

CFG = get_preset("tiny")


def test_synthetic_has_exactly_the_checkpoint_keys_and_shapes():
    sd = synthetic_state_dict(CFG, 0)
    shapes = model_key_shapes(CFG)
    assert set(sd) == set(shapes)
    assert all(tuple(sd[k].shape) == s for k, s in shapes.items())


def test_synthetic_is_seeded():
    a, b, c = (synthetic_state_dict(CFG, s) for s in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.layers.0.mixer.in_proj.weight"],
                           c["backbone.layers.0.mixer.in_proj.weight"])


def test_synthetic_init_statistics():
    sd = synthetic_state_dict(CFG, 0)
    p = "backbone.layers.1.mixer."
    w = sd[p + "in_proj.weight"]
    beta = w.mean(0, keepdim=True)
    assert torch.allclose(sd[p + "in_proj.wbias"], beta)
    assert torch.allclose(sd[p + "in_proj.wscale"], (w - beta).abs().mean(0, keepdim=True))
    dt = torch.nn.functional.softplus(sd[p + "dt_bias"])
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-9
    a = torch.exp(sd[p + "A_log"])
    assert a.min() >= 1 and a.max() <= 16


def test_load_block_copies_every_parameter():
    sd = synthetic_state_dict(CFG, 0)
    block = load_block(sd, CFG, 1)
    for name, param in block.named_parameters():
        assert torch.equal(param, sd["backbone.layers.1." + name])


def test_load_stack_runs():
    sd = synthetic_state_dict(CFG, 0)
    stack = load_stack(sd, CFG)
    assert len(stack.layers) == CFG.n_layer
    with torch.no_grad():
        y, states = stack(torch.randn(5, CFG.d_model))
    assert y.shape == (5, CFG.d_model) and len(states) == CFG.n_layer


def test_missing_key_names_key_and_shape():
    sd = synthetic_state_dict(CFG, 0)
    del sd["backbone.layers.0.mixer.A_log"]
    with pytest.raises(CheckpointError, match=re.escape(
            "missing key 'backbone.layers.0.mixer.A_log' (expected shape (8,))")):
        load_block(sd, CFG, 0)


def test_misshaped_key_names_key_and_shapes():
    sd = synthetic_state_dict(CFG, 0)
    sd["backbone.layers.0.mixer.out_proj.wscale"] = torch.ones(128)
    with pytest.raises(CheckpointError, match=re.escape(
            "key 'backbone.layers.0.mixer.out_proj.wscale' has shape (128,), expected (1, 128)")):
        load_block(sd, CFG, 0)


@pytest.mark.parametrize("key", ["backbone.embedding.weight", "backbone.norm_f.weight"])
def test_stack_checks_model_level_keys(key):
    sd = synthetic_state_dict(CFG, 0)
    del sd[key]
    with pytest.raises(CheckpointError, match=re.escape(f"missing key '{key}'")):
        load_stack(sd, CFG)


def test_layer_index_out_of_range():
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\), not 2"):
        load_block(synthetic_state_dict(CFG, 0), CFG, 2)
