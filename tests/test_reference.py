"""Float reference: FBI-Linear as defined, sequence path == recurrent decode step (batched or
not), and the accuracy of the stable segment sum."""

import math

import pytest
import torch

from model.reference.checkpoint import layer_key_shapes, load_block, synthetic_state_dict
from model.config import get_preset
from model.reference.layer import BiMambaBlock, FBILinear, MixerState, binarize_ste, segsum


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


# -- stable segment sum -------------------------------------------------------------------

def test_segsum_is_the_sum_over_each_segment():
    x = torch.randn(2, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = segsum(x)
    for t in range(7):
        for s in range(7):
            want = x[:, s + 1:t + 1].sum(-1) if s <= t else torch.full((2,), float("-inf"),
                                                                        dtype=x.dtype)
            assert torch.allclose(out[:, t, s], want, rtol=0, atol=1e-15)


def _decay_inputs(L: int, H: int, seed: int) -> torch.Tensor:
    """dt * A per head, (H, L): dt log-uniform in [1e-3, 0.1], A in [-16, -1] (Mamba-2 init)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(1e-3), math.log(0.1)
    dt = torch.exp(torch.rand(H, L, dtype=torch.float64, generator=g) * (hi - lo) + lo)
    A = -(1 + 15 * torch.rand(H, 1, dtype=torch.float64, generator=g))
    return (dt * A).float()


def test_float32_decay_at_1024_is_accurate(seed):
    # The SSD decay exp(dtA[s+1] + ... + dtA[t]) in float32 against float64 on the same
    # float32 inputs, over the entries above 1e-6 (smaller ones vanish next to the diagonal).
    # The segment sum keeps ~1e-6 relative or better; a difference of two prefix sums (the
    # old way) loses ~eps * |prefix| and is an order of magnitude worse at this length.
    L = 1024
    dtA = _decay_inputs(L, 8, seed)
    ref = torch.exp(segsum(dtA.double()))
    new = torch.exp(segsum(dtA)).double()
    cum = torch.cumsum(dtA, -1)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    old = torch.exp((cum[:, :, None] - cum[:, None, :]).masked_fill(~causal, float("-inf")))
    keep = ref > 1e-6
    rel_new = ((new - ref).abs() / ref)[keep].max().item()
    rel_old = ((old.double() - ref).abs() / ref)[keep].max().item()
    print(f"max relative error: segsum {rel_new:.2e}, prefix difference {rel_old:.2e}")
    assert rel_new <= 1e-6
    assert rel_old >= 10 * rel_new


# -- batched sequence path ----------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["bimamba", "float"])
def test_batched_sequence_equals_each_sequence_and_the_step(binary, seed):
    cfg = get_preset("tiny")
    block = BiMambaBlock(cfg, binary).double()
    sd = synthetic_state_dict(cfg, seed, n_layers=1)
    block.load_state_dict({k[len("backbone.layers.0."):]: v for k, v in sd.items()
                           if k.startswith("backbone.layers.0.")
                           and (binary or not k.endswith(("wscale", "wbias")))})
    block.eval()
    g = torch.Generator().manual_seed(seed)
    Bt, L = 3, 17
    u = torch.randn(Bt, L, cfg.d_model, dtype=torch.float64, generator=g)
    # A different non-zero starting state per sequence, to check the carried-state terms.
    with torch.no_grad():
        _, s0 = block(torch.randn(Bt, 5, cfg.d_model, dtype=torch.float64, generator=g))
        y, s = block(u, s0)
        assert y.shape == (Bt, L, cfg.d_model)
        assert s.conv.shape == (Bt, cfg.conv_dim, cfg.d_conv - 1)
        assert s.ssm.shape == (Bt, cfg.nheads, cfg.headdim, cfg.d_state)
        scale = y.abs().max()
        for b in range(Bt):
            yb, sb = block(u[b], MixerState(s0.conv[b], s0.ssm[b]))
            assert (yb - y[b]).abs().max() <= 1e-13 * scale
            assert torch.allclose(sb.ssm, s.ssm[b], rtol=0, atol=1e-13)
            st = MixerState(s0.conv[b], s0.ssm[b])
            for t in range(L):
                yt, st = block.step(u[b, t], st)
                assert (yt - y[b, t]).abs().max() <= 1e-12 * scale
            assert torch.allclose(st.ssm, s.ssm[b], rtol=0, atol=1e-12)
            assert torch.allclose(st.conv, s.conv[b], rtol=0, atol=1e-12)


def test_float_block_has_the_checkpoint_keys_without_alpha_beta():
    cfg = get_preset("tiny")
    keys = {"backbone.layers.0." + k for k in BiMambaBlock(cfg, binary=False).state_dict()}
    want = {k for k in layer_key_shapes(cfg, 0) if not k.endswith(("wscale", "wbias"))}
    assert keys == want


def test_sequence_input_shape_is_checked():
    block = BiMambaBlock(get_preset("tiny"))
    with pytest.raises(ValueError, match=r"u must have shape \(L, 64\) or \(Bt, L, 64\)"):
        block.mixer(torch.zeros(64))


def test_clear_cache_rebuilds_the_inference_weight():
    # A fused optimizer updates parameters without bumping their version counters, so the
    # cached inference weight cannot see it; clear_cache() is how evaluation code refreshes.
    lin = FBILinear(8, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 8))
    lin.init_xnor_()
    x = torch.randn(8)
    with torch.no_grad():
        lin(x)
    opt = torch.optim.AdamW(lin.parameters(), lr=1.0, fused=True)
    lin(x).square().sum().backward()
    opt.step()
    lin.clear_cache()
    with torch.no_grad():
        got = lin(x)
    assert torch.allclose(got, x @ lin.effective_weight().T)
