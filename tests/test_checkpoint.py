"""Checkpoint format: synthetic generator, loader, and its errors."""

import re

import pytest
import torch

from model.reference.checkpoint import (
    CheckpointError, CheckpointWarning, count_zero_weights, load_block, load_stack,
    model_key_shapes, synthetic_state_dict,
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
            "key 'backbone.layers.0.mixer.A_log' (layer 0): missing (expected shape (8,))")):
        load_block(sd, CFG, 0)


def test_misshaped_key_names_key_and_shapes():
    sd = synthetic_state_dict(CFG, 0)
    sd["backbone.layers.0.mixer.out_proj.wscale"] = torch.ones(128)
    with pytest.raises(CheckpointError, match=re.escape(
            "key 'backbone.layers.0.mixer.out_proj.wscale' (layer 0): expected shape (1, 128), "
            "found (128,)")):
        load_block(sd, CFG, 0)


@pytest.mark.parametrize("key", ["backbone.embedding.weight", "backbone.norm_f.weight"])
def test_stack_checks_model_level_keys(key):
    sd = synthetic_state_dict(CFG, 0)
    del sd[key]
    with pytest.raises(CheckpointError, match=re.escape(f"key '{key}': missing")):
        load_stack(sd, CFG)


def test_layer_index_out_of_range():
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\), not 2"):
        load_block(synthetic_state_dict(CFG, 0), CFG, 2)


@pytest.mark.parametrize("key, value", [
    ("mixer.in_proj.weight", float("nan")), ("mixer.D", float("inf")),
    ("mixer.conv1d.bias", float("-inf")), ("norm.weight", float("nan")),
])
def test_non_finite_values_are_refused_with_the_key(key, value):
    sd = synthetic_state_dict(CFG, 0)
    full = "backbone.layers.0." + key
    t = sd[full].clone()
    t.view(-1)[3] = value
    t.view(-1)[5] = value
    sd[full] = t
    first = tuple(int(i) for i in torch.nonzero(~torch.isfinite(t))[0])
    kind = "NaN" if value != value else "inf"
    with pytest.raises(CheckpointError, match="^" + re.escape(
            f"key '{full}' (layer 0): expected finite values, found 2 non-finite ({kind}), "
            f"the first at index {first}") + "$"):
        load_block(sd, CFG, 0)


def test_non_mapping_and_non_tensor_state_dicts_are_refused():
    with pytest.raises(CheckpointError, match="state dict must be a mapping of key -> tensor, "
                                              "not list"):
        load_block([1, 2], CFG, 0)
    sd = synthetic_state_dict(CFG, 0)
    sd["backbone.layers.0.mixer.D"] = [1.0] * 8
    with pytest.raises(CheckpointError, match=re.escape(
            "key 'backbone.layers.0.mixer.D' (layer 0): expected a torch.Tensor, found list")):
        load_block(sd, CFG, 0)
    sd = synthetic_state_dict(CFG, 0)
    sd["backbone.layers.0.mixer.D"] = torch.ones(8, dtype=torch.bool)
    with pytest.raises(CheckpointError, match=re.escape(
            "expected real numbers (a float or integer dtype), found torch.bool")):
        load_block(sd, CFG, 0)


def test_zero_weights_are_counted_and_the_policy_stated():
    sd = synthetic_state_dict(CFG, 0)
    assert count_zero_weights(sd, 0) == {"backbone.layers.0.mixer.in_proj.weight": 0,
                                         "backbone.layers.0.mixer.out_proj.weight": 0}
    w = sd["backbone.layers.0.mixer.in_proj.weight"].clone()
    w[0, :3] = 0.0
    w[5, 7] = -0.0  # negative zero is an exact zero too
    sd["backbone.layers.0.mixer.in_proj.weight"] = w
    with pytest.warns(CheckpointWarning, match=re.escape(
            "4 exact-zero binary weights (backbone.layers.0.mixer.in_proj.weight: 4) are taken "
            "as +1; Bi-Mamba's sign() would give 0 (W_hat = beta) for them")):
        block = load_block(sd, CFG, 0)
    # The policy is applied: each zero becomes +1 in the effective weight.
    fbi = block.mixer.in_proj
    w_hat = fbi.effective_weight().detach()
    assert torch.equal(w_hat[0, :3], (fbi.wscale + fbi.wbias)[0, :3])
    assert torch.equal(w_hat[5, 7], (fbi.wscale + fbi.wbias)[0, 7])
