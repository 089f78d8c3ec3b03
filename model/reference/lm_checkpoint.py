"""Shipped language-model checkpoints: safetensors with the Bi-Mamba key names.

Format (one ``.safetensors`` file per model):

* Every tensor is stored under its Bi-Mamba key (``backbone.embedding.weight``,
  ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f.weight``) in FP16, except:
* for a Bi-Mamba (binary) model, each FBI-Linear latent weight ``...{in,out}_proj.weight``
  of shape (d_out, d_in) is replaced by its sign bits under ``...{in,out}_proj.weight.signs``:
  uint8 of shape (d_out, ceil(d_in / 8)); column j of row i is bit ``j % 8`` (least
  significant first, "little" bit order) of byte ``[i, j // 8]``; bit 1 means +1, bit 0
  means -1, and padding bits are 0. A latent weight of exactly zero (either sign of zero)
  counts as +1, as :func:`model.reference.layer.binarize_ste` does. The latent magnitudes are not
  stored: inference only uses the signs, alpha (``wscale``) and beta (``wbias``).
* The safetensors metadata (string to string) holds ``format`` (``bimamba-lm/1``),
  ``binary`` (``true``/``false``), ``config`` (JSON of the :class:`BiMambaConfig` fields),
  ``packed`` (JSON: signs key -> [d_out, d_in]), ``dtype`` (``float16``) and any extra
  entries the caller passes (training summary, command line).

:func:`load_lm` returns float32 tensors under the original keys, the binary weights as the
±1 sign matrix, so :func:`model.reference.checkpoint.load_block` reads a layer of a student directly and
a loaded model computes exactly what the saved one computed with FP16-rounded parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from model.config import BiMambaConfig
from model.reference.lm import BiMambaLM, binary_keys

__all__ = [
    "FORMAT",
    "SIGNS_SUFFIX",
    "pack_signs",
    "unpack_signs",
    "save_lm",
    "load_lm",
    "read_metadata",
    "load_lm_model",
    "checkpoint_bytes",
]

FORMAT = "bimamba-lm/1"
SIGNS_SUFFIX = ".signs"
_STORE_DTYPE = torch.float16


def pack_signs(w: Tensor) -> Tensor:
    """Sign bits of ``w`` packed along its last dimension.

    Parameters
    ----------
    w : Tensor, shape (d_out, d_in)
        Latent weight; ``w >= 0`` (including -0.0) is +1.

    Returns
    -------
    Tensor of uint8, shape (d_out, ceil(d_in / 8))
        Little bit order along d_in, bit 1 = +1, padding bits 0.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D (d_out, d_in), not shape {tuple(w.shape)}")
    bits = (w.detach() >= 0).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=-1, bitorder="little"))


def unpack_signs(packed: Tensor, d_in: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs`: the ±1 matrix of shape (d_out, d_in) in ``dtype``.

    Raises
    ------
    ValueError
        If ``packed`` is not uint8 of shape (d_out, ceil(d_in / 8)).
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != -(-d_in // 8):
        raise ValueError(f"packed must be uint8 of shape (d_out, {-(-d_in // 8)}) for "
                         f"d_in = {d_in}, not {packed.dtype} {tuple(packed.shape)}")
    bits = np.unpackbits(packed.numpy(), axis=-1, count=d_in, bitorder="little")
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1).to(dtype)


def save_lm(model: BiMambaLM, path: Path | str,
            metadata: Mapping[str, str] | None = None) -> int:
    """Write ``model`` to ``path`` in the format of this module; return the file size in bytes.

    The model's ``binary`` flag decides the format (latent weights packed as sign bits for a
    Bi-Mamba model, FP16 for a float one).

    Parameters
    ----------
    model : BiMambaLM
    path : path-like
    metadata : mapping of str -> str, optional
        Extra metadata entries (must not reuse the format's own names).

    Raises
    ------
    ValueError
        If an extra metadata entry reuses a reserved name or is not a string.
    """
    cfg = model.cfg
    sd = model.state_dict()
    packed_keys = set(binary_keys(cfg)) if model.binary else set()
    tensors: dict[str, Tensor] = {}
    packed: dict[str, list[int]] = {}
    for key, t in sd.items():
        if key in packed_keys:
            tensors[key + SIGNS_SUFFIX] = pack_signs(t).contiguous()
            packed[key + SIGNS_SUFFIX] = list(t.shape)
        else:
            tensors[key] = t.detach().to("cpu", _STORE_DTYPE).contiguous()
    meta = {
        "format": FORMAT,
        "binary": "true" if model.binary else "false",
        "config": json.dumps(asdict(cfg)),
        "packed": json.dumps(packed),
        "dtype": "float16",
    }
    for k, v in (metadata or {}).items():
        if k in meta or not isinstance(v, str):
            raise ValueError(f"metadata entry {k!r} must be a str under a name other than "
                             f"{', '.join(meta)}, not {type(v).__name__}")
        meta[k] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path.stat().st_size


def read_metadata(path: Path | str) -> dict[str, str]:
    """The safetensors metadata of a checkpoint written by :func:`save_lm`.

    Raises
    ------
    ValueError
        If the file is not in this module's format.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format "
                         f"{meta.get('format')!r})")
    return dict(meta)


def load_lm(path: Path | str) -> tuple[BiMambaConfig, dict[str, Tensor]]:
    """Read a checkpoint written by :func:`save_lm`.

    Returns
    -------
    cfg : BiMambaConfig
        From the metadata.
    state_dict : dict of str -> Tensor
        float32 tensors under the Bi-Mamba keys; a binary model's ``in_proj.weight`` and
        ``out_proj.weight`` are the ±1 sign matrices (d_out, d_in).

    Raises
    ------
    ValueError
        If the file is not in this module's format or a packed tensor's shape disagrees with
        its recorded shape.
    """
    meta = read_metadata(path)
    cfg = BiMambaConfig(**json.loads(meta["config"]))
    packed: dict[str, list[int]] = json.loads(meta["packed"])
    sd: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            if key in packed:
                d_out, d_in = packed[key]
                signs = unpack_signs(t, d_in)
                if signs.shape[0] != d_out:
                    raise ValueError(f"{key!r} has {signs.shape[0]} rows, metadata says {d_out}")
                sd[key[: -len(SIGNS_SUFFIX)]] = signs
            else:
                sd[key] = t.to(torch.float32)
    return cfg, sd


def load_lm_model(path: Path | str, dtype: torch.dtype = torch.float32,
                  dropout: float = 0.0) -> BiMambaLM:
    """A :class:`BiMambaLM` (in eval mode) built from a checkpoint written by :func:`save_lm`."""
    meta = read_metadata(path)
    cfg, sd = load_lm(path)
    model = BiMambaLM(cfg, binary=meta["binary"] == "true", dropout=dropout)
    model.load_state_dict(sd)
    return model.to(dtype).eval()


def checkpoint_bytes(cfg: BiMambaConfig, binary: bool) -> int:
    """Tensor bytes :func:`save_lm` writes for ``cfg`` (excluding the small header).

    FP16 for every tensor, except one bit per latent weight (rows padded to whole bytes)
    for the binary projections of a Bi-Mamba model.
    """
    model = BiMambaLM(cfg, binary)
    packed = set(binary_keys(cfg)) if binary else set()
    total = 0
    for key, t in model.state_dict().items():
        if key in packed:
            total += t.shape[0] * -(-t.shape[1] // 8)
        else:
            total += t.numel() * 2
    return total
