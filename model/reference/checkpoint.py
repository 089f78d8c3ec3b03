"""Bi-Mamba checkpoints: expected keys and shapes, a loader, and a synthetic generator.

Keys follow the authors' state dict (prefix ``backbone.layers.{i}.``)::

    norm.weight                  (D,)
    mixer.in_proj.weight         (F, D)     mixer.in_proj.wscale (1, D)   mixer.in_proj.wbias (1, D)
    mixer.conv1d.weight          (C, 1, K)  mixer.conv1d.bias    (C,)
    mixer.dt_bias (H,)  mixer.A_log (H,)  mixer.D (H,)  mixer.norm.weight (E,)
    mixer.out_proj.weight        (D, E)     mixer.out_proj.wscale (1, E)  mixer.out_proj.wbias (1, E)

and at model level ``backbone.embedding.weight (vocab, D)``, ``backbone.norm_f.weight (D,)``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from model.config import BiMambaConfig
from model.reference.layer import BiMambaBlock, BiMambaStack

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "key_label",
    "nonfinite_problem",
    "count_zero_weights",
    "layer_key_shapes",
    "model_key_shapes",
    "load_block",
    "load_stack",
    "synthetic_state_dict",
    "synthetic_residual",
]


class CheckpointError(ValueError):
    """A state dict or a checkpoint file is not what the model needs: a key missing or
    unexpected, a tensor of the wrong shape, type or value, a file that is not a checkpoint.

    The message is one line naming the file (for a file), the key (with its layer), what was
    expected and what was found."""


class CheckpointWarning(UserWarning):
    """A checkpoint loads, but a value is interpreted by this project's policy (zero weights)."""


def layer_key_shapes(cfg: BiMambaConfig, layer: int) -> dict[str, tuple[int, ...]]:
    """Full key -> expected shape for one layer."""
    c = cfg
    p = f"backbone.layers.{layer}."
    return {
        p + "norm.weight": (c.d_model,),
        p + "mixer.in_proj.weight": (c.d_in_proj, c.d_model),
        p + "mixer.in_proj.wscale": (1, c.d_model),
        p + "mixer.in_proj.wbias": (1, c.d_model),
        p + "mixer.conv1d.weight": (c.conv_dim, 1, c.d_conv),
        p + "mixer.conv1d.bias": (c.conv_dim,),
        p + "mixer.dt_bias": (c.nheads,),
        p + "mixer.A_log": (c.nheads,),
        p + "mixer.D": (c.nheads,),
        p + "mixer.norm.weight": (c.d_inner,),
        p + "mixer.out_proj.weight": (c.d_model, c.d_inner),
        p + "mixer.out_proj.wscale": (1, c.d_inner),
        p + "mixer.out_proj.wbias": (1, c.d_inner),
    }


def model_key_shapes(cfg: BiMambaConfig, n_layers: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape for a whole model (or its first ``n_layers`` layers)."""
    shapes = {
        "backbone.embedding.weight": (cfg.vocab_size, cfg.d_model),
        "backbone.norm_f.weight": (cfg.d_model,),
    }
    for i in range(cfg.n_layer if n_layers is None else n_layers):
        shapes.update(layer_key_shapes(cfg, i))
    return shapes


# Integer tensors are accepted (a hand-made state dict); bool and complex are not.
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)

# Binary weights whose exact-zero latent values are counted: the two FBI-Linear matrices.
_BINARY_KEYS = ("mixer.in_proj.weight", "mixer.out_proj.weight")

_LAYER_KEY = re.compile(r"backbone\.layers\.(\d+)\.")


def key_label(key: str) -> str:
    """``key 'backbone.layers.3.mixer.D' (layer 3)``: how every checkpoint error names a key."""
    m = _LAYER_KEY.match(key)
    return f"key {key!r}" + (f" (layer {m.group(1)})" if m else "")


def nonfinite_problem(key: str, t: Tensor) -> str | None:
    """What is wrong with the values of tensor ``t`` stored under ``key``: None if every value
    is finite (or the tensor is not floating point), else one line naming the key, how many
    values are NaN or infinite and the index of the first."""
    if not t.is_floating_point():
        return None
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return None
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(bad.sum()) - n_nan
    kinds = " and ".join(k for k, c in (("NaN", n_nan), ("inf", n_inf)) if c)
    first = tuple(int(i) for i in bad.nonzero()[0])
    return (f"{key_label(key)}: expected finite values, found {n_nan + n_inf} non-finite "
            f"({kinds}), the first at index {first}")


def _check(sd: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every key of ``shapes`` present in ``sd`` as a finite real tensor of that shape."""
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"state dict must be a mapping of key -> tensor, not {type(sd).__name__}")
    for key, shape in shapes.items():
        if key not in sd:
            raise CheckpointError(f"{key_label(key)}: missing (expected shape {shape})")
        t = sd[key]
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{key_label(key)}: expected a torch.Tensor, found "
                                  f"{type(t).__name__}")
        got = tuple(t.shape)
        if got != shape:
            raise CheckpointError(f"{key_label(key)}: expected shape {shape}, found {got}")
        if not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise CheckpointError(f"{key_label(key)}: expected real numbers (a float or "
                                  f"integer dtype), found {t.dtype}")
        problem = nonfinite_problem(key, t)
        if problem:
            raise CheckpointError(problem)


def count_zero_weights(sd: Mapping[str, Tensor], layer: int) -> dict[str, int]:
    """Exact-zero latent weights of layer ``layer``'s binary projections, by full key.

    Bi-Mamba's own binariser is ``sign()``, which maps 0 to 0 (``W_hat = beta`` there); this
    project maps it to +1 (a 1-bit weight has no zero). The two agree wherever the count is 0.
    """
    p = f"backbone.layers.{layer}."
    return {p + k: int((sd[p + k] == 0).sum()) for k in _BINARY_KEYS}


def _block_params(block: BiMambaBlock) -> dict[str, torch.nn.Parameter]:
    return dict(block.named_parameters())


def load_block(
    sd: Mapping[str, Tensor], cfg: BiMambaConfig, layer: int = 0,
    dtype: torch.dtype = torch.float32,
) -> BiMambaBlock:
    """Build layer ``layer`` of a Bi-Mamba state dict as a :class:`BiMambaBlock`.

    Raises
    ------
    CheckpointError
        If a key is missing or mis-shaped (the message names the key and the expected shape).
    ValueError
        If ``layer`` is outside ``[0, cfg.n_layer)``.
    """
    if not 0 <= layer < cfg.n_layer:
        raise ValueError(f"layer must be in [0, {cfg.n_layer}), not {layer}")
    shapes = layer_key_shapes(cfg, layer)
    _check(sd, shapes)
    zeros = {k: n for k, n in count_zero_weights(sd, layer).items() if n}
    if zeros:
        counts = ", ".join(f"{k}: {n}" for k, n in zeros.items())
        warnings.warn(
            f"{sum(zeros.values())} exact-zero binary weights ({counts}) are taken as +1; "
            f"Bi-Mamba's sign() would give 0 (W_hat = beta) for them", CheckpointWarning,
            stacklevel=2)
    block = BiMambaBlock(cfg)
    prefix = f"backbone.layers.{layer}."
    params = _block_params(block)
    assert set(prefix + k for k in params) == set(shapes), "key table out of sync"
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(sd[prefix + name].to(param.dtype))
    return block.to(dtype).eval()


def load_stack(
    sd: Mapping[str, Tensor], cfg: BiMambaConfig, n_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> BiMambaStack:
    """Build the first ``n_layers`` layers (all by default) as a :class:`BiMambaStack`.

    The model-level keys (embedding, final norm) are checked too, so a truncated or foreign
    checkpoint fails here rather than in the layer that happens to read it.
    """
    n = cfg.n_layer if n_layers is None else n_layers
    if not 1 <= n <= cfg.n_layer:
        raise ValueError(f"n_layers must be in [1, {cfg.n_layer}], not {n}")
    _check(sd, {k: s for k, s in model_key_shapes(cfg, 0).items()})
    stack = BiMambaStack(cfg, n)
    for i in range(n):
        stack.layers[i] = load_block(sd, cfg, i, dtype)
    return stack.to(dtype).eval()


def synthetic_state_dict(
    cfg: BiMambaConfig, seed: int = 0, n_layers: int | None = None,
    dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4,
) -> dict[str, Tensor]:
    """A seeded Bi-Mamba state dict with Mamba-2 initialisation and FBI 'xnor' alpha/beta.

    in_proj, out_proj and conv1d use PyTorch's default (Kaiming-uniform) init, out_proj rescaled
    by 1/sqrt(n_layer) as Mamba's prenorm-residual rule does for blocks without an MLP (one
    residual branch per layer); dt_bias is the inverse softplus
    of a log-uniform dt in [dt_min, dt_max]; A_log = log U(1, 16); D = 1; norms = 1.
    alpha/beta are the column statistics of the latent weight (Bi-Mamba's init).

    Only the first ``n_layers`` layers are generated (all by default), plus the model-level keys.
    """
    n = cfg.n_layer if n_layers is None else n_layers
    if not 1 <= n <= cfg.n_layer:
        raise ValueError(f"n_layers must be in [1, {cfg.n_layer}], not {n}")
    gen = torch.Generator().manual_seed(seed)
    c = cfg

    def kaiming(shape: tuple[int, ...], fan_in: int) -> Tensor:
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) of nn.Linear / Conv1d
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    def fbi(weight: Tensor) -> tuple[Tensor, Tensor]:
        beta = weight.mean(dim=0, keepdim=True)
        alpha = (weight - beta).abs().mean(dim=0, keepdim=True)
        return alpha, beta

    sd: dict[str, Tensor] = {
        "backbone.embedding.weight": torch.randn(c.vocab_size, c.d_model, generator=gen) * 0.02,
        "backbone.norm_f.weight": torch.ones(c.d_model),
    }
    for i in range(n):
        p = f"backbone.layers.{i}."
        w_in = kaiming((c.d_in_proj, c.d_model), c.d_model)
        w_out = kaiming((c.d_model, c.d_inner), c.d_inner) / math.sqrt(c.n_layer)
        a_in, b_in = fbi(w_in)
        a_out, b_out = fbi(w_out)
        dt = torch.exp(
            torch.rand(c.nheads, generator=gen) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=dt_floor)
        sd.update({
            p + "norm.weight": torch.ones(c.d_model),
            p + "mixer.in_proj.weight": w_in,
            p + "mixer.in_proj.wscale": a_in,
            p + "mixer.in_proj.wbias": b_in,
            p + "mixer.conv1d.weight": kaiming((c.conv_dim, 1, c.d_conv), c.d_conv),
            p + "mixer.conv1d.bias": kaiming((c.conv_dim,), c.d_conv),
            p + "mixer.dt_bias": dt + torch.log(-torch.expm1(-dt)),
            p + "mixer.A_log": torch.log(1 + 15 * torch.rand(c.nheads, generator=gen)),
            p + "mixer.D": torch.ones(c.nheads),
            p + "mixer.norm.weight": torch.ones(c.d_inner),
            p + "mixer.out_proj.weight": w_out,
            p + "mixer.out_proj.wscale": a_out,
            p + "mixer.out_proj.wbias": b_out,
        })
    return sd


def synthetic_residual(cfg: BiMambaConfig, steps: int, seed: int) -> np.ndarray:
    """A residual stream (L, D): Gaussian tokens with log-normal per-channel scales.

    Real residual streams have channels of very different magnitude; the spread exercises the
    RMSNorm and the per-column folded gains.
    """
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0.0, 0.5, cfg.d_model))
    return rng.standard_normal((steps, cfg.d_model)) * scales
