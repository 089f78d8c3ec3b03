"""Storage of a Bi-Mamba model: FP16 against 1-bit projections, from the checkpoint key table.

Every parameter is counted from :func:`model.reference.checkpoint.model_key_shapes`, so the figures follow
the same shapes the loader checks. Bi-Mamba binarises only ``in_proj.weight`` and
``out_proj.weight``; everything else (embedding, conv, norms, dt_bias, A_log, D and the FBI
per-column scales and shifts) stays FP16.

The paper's 2.7B figure (5.03 GB FP16 to 0.55 GB) is reproduced in GiB when the embedding has
the original Mamba-2 tokenizer's padded vocabulary, 50,288 rows: 5.04 GiB and 0.55 GiB. With
Bi-Mamba's own 32,000-row vocabulary the same accounting gives 4.95 and 0.46 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from model.reference.checkpoint import model_key_shapes
from model.config import BiMambaConfig

__all__ = ["MAMBA2_VOCAB", "Footprint", "footprint"]

GIB = 2**30
# The GPT-NeoX tokenizer of the released Mamba-2 checkpoints, padded to a multiple of 16.
MAMBA2_VOCAB = 50288


@dataclass(frozen=True)
class Footprint:
    """Parameter counts and bytes of one model (the embedding is tied to the LM head)."""

    params: int
    binarised_params: int
    embedding_params: int
    state_values: int  # SSM state elements over all layers, H * P * N * n_layer

    @property
    def other_params(self) -> int:
        return self.params - self.binarised_params - self.embedding_params

    @property
    def fp16_bytes(self) -> int:
        return 2 * self.params

    @property
    def bimamba_bytes(self) -> int:
        """1 bit per binarised weight (whole bytes per tensor row are not needed: the packed
        rows of every preset are multiples of 8), FP16 for the rest."""
        return self.binarised_params // 8 + 2 * (self.params - self.binarised_params)

    def gib(self, n_bytes: int) -> float:
        return n_bytes / GIB


def footprint(cfg: BiMambaConfig, vocab_size: int | None = None) -> Footprint:
    """Counts for ``cfg`` (optionally with another vocabulary size)."""
    if vocab_size is not None:
        cfg = replace(cfg, vocab_size=vocab_size)
    shapes = model_key_shapes(cfg)
    size = {k: int(np.prod(s)) for k, s in shapes.items()}
    binar = sum(v for k, v in size.items()
                if k.endswith("in_proj.weight") or k.endswith("out_proj.weight"))
    return Footprint(params=sum(size.values()), binarised_params=binar,
                     embedding_params=size["backbone.embedding.weight"],
                     state_values=cfg.state_size * cfg.n_layer)
