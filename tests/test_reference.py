"""Float reference: FBI-Linear as defined, and sequence path == recurrent decode step."""

import pytest
import torch

from model.checkpoint import load_block, synthetic_state_dict
from model.config import get_preset
from model.reference import FBILinear, binarize_ste


def test_sign_of_zero_is_plus_one_and_gradient_is_identity():
    w = torch.tensor([-0.5, 0.0, 0.25], requires_grad=True)
    s = binarize_ste(w)
    assert s.tolist() == [-1.0, 1.0, 1.0]
    s.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0]


def test_fbi_effective_weight_and_xnor_init():
    torch.manual_seed(0)
    lin = FBILinear(5, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 5))
    lin.init_xnor_()
    beta = lin.weight.mean(0, keepdim=True)
    assert torch.allclose(lin.wbias, beta)
    assert torch.allclose(lin.wscale, (lin.weight - beta).abs().mean(0, keepdim=True))
    w_hat = lin.wscale * torch.where(lin.weight >= 0, 1.0, -1.0) + lin.wbias
    x = torch.randn(4, 5)
    assert torch.allclose(lin(x), x @ w_hat.T)


def test_fbi_inference_cache_follows_weight_updates():
    lin = FBILinear(4, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        x = torch.ones(4)
        before = lin(x).clone()
        lin.weight.fill_(-1.0)
        after = lin(x)
    assert torch.allclose(after, -before)


@pytest.mark.parametrize("preset, L", [("tiny", 40), ("small", 24)])
def test_step_matches_sequence(preset, L, seed):
    cfg = get_preset(preset)
    block = load_block(synthetic_state_dict(cfg, seed, n_layers=1), cfg, 0, torch.float64)
    u = torch.randn(L, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y_seq, st_seq = block(u)
        st = block.initial_state(torch.float64)
        ys = []
        for t in range(L):
            y, st = block.step(u[t], st)
            ys.append(y)
        y_rec = torch.stack(ys)
    scale = y_seq.abs().max()
    assert (y_seq - y_rec).abs().max() <= 1e-12 * scale
    assert torch.allclose(st_seq.ssm, st.ssm, rtol=0, atol=1e-12)
    assert torch.allclose(st_seq.conv, st.conv, rtol=0, atol=1e-12)


def test_sequence_continues_from_state():
    cfg = get_preset("tiny")
    block = load_block(synthetic_state_dict(cfg, 3, n_layers=1), cfg, 0, torch.float64)
    u = torch.randn(30, cfg.d_model, dtype=torch.float64)
    with torch.no_grad():
        whole, s_whole = block(u)
        a, s = block(u[:11])
        b, s = block(u[11:], s)
    assert torch.allclose(torch.cat([a, b]), whole, atol=1e-12)
    assert torch.allclose(s.ssm, s_whole.ssm, atol=1e-12)


def test_sequence_path_is_not_the_step_path():
    # Guard against the two paths silently sharing code: breaking the step's decay must
    # break the agreement.
    cfg = get_preset("tiny")
    block = load_block(synthetic_state_dict(cfg, 0, n_layers=1), cfg, 0, torch.float64)
    u = torch.randn(8, cfg.d_model, dtype=torch.float64)
    with torch.no_grad():
        y_seq, _ = block(u)
        block.mixer.A_log.add_(0.5)
        st = block.initial_state(torch.float64)
        y = None
        for t in range(8):
            y, st = block.step(u[t], st)
    assert not torch.allclose(y, y_seq[-1], atol=1e-6)
