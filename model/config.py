"""Shapes of a Bi-Mamba (Mamba-2 with FBI-Linear projections) model.

Glossary of dimension letters, used in every docstring of ``model/``:

====  ===========================================================
L     sequence length (tokens)
D     d_model, width of the residual stream
E     d_inner = expand * D, width of the SSM branch
H     nheads = E / P
P     headdim
N     d_state
G     ngroups (B and C are shared by the H / G heads of a group)
C     conv_dim = E + 2 * G * N, channels of the depthwise conv
K     d_conv, taps of the causal conv
F     d_in_proj = 2 * E + 2 * G * N + H, rows of in_proj
====  ===========================================================

Only the independent hyper-parameters are stored; every derived size is a property, so a
preset cannot disagree with itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["BiMambaConfig", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class BiMambaConfig:
    """Hyper-parameters of a Bi-Mamba model (Mamba-2 defaults where the paper is silent).

    Parameters
    ----------
    d_model : int
        Residual stream width D.
    n_layer : int
        Number of mixer blocks.
    d_state : int
        SSM state size N per head.
    expand : int
        E = expand * D.
    headdim : int
        P, channels per head. Must divide E.
    ngroups : int
        G, groups of heads sharing B and C. Only 1 is supported (all released sizes).
    d_conv : int
        K, causal conv taps.
    vocab_size : int
        Embedding rows (tied to the LM head).
    rms_eps : float
        Epsilon of both RMSNorms.

    Raises
    ------
    ValueError
        If a size is not a positive integer or a divisibility constraint fails.
    """

    d_model: int
    n_layer: int
    d_state: int = 128
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    d_conv: int = 4
    vocab_size: int = 32000
    rms_eps: float = 1e-5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rms_eps":
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not (math.isfinite(value) and value > 0)):
                    raise ValueError(f"rms_eps must be a positive float, finite, not {value!r}")
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{f.name} must be a positive integer, not {value!r}")
        if self.d_inner % self.headdim:
            raise ValueError(
                f"headdim must divide d_inner = expand * d_model = {self.d_inner}, "
                f"not {self.headdim}"
            )
        if self.ngroups != 1:
            # Mamba-2 normalises y in groups of E / G; both models here normalise over all of E,
            # which is the same thing only for G = 1 (every released Bi-Mamba size).
            raise ValueError(f"ngroups must be 1 (grouped gated RMSNorm is not implemented), "
                             f"not {self.ngroups}")

    @property
    def d_inner(self) -> int:
        """E = expand * D."""
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        """H = E / P."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """C = E + 2 G N: channels of xBC, the input of the depthwise conv."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:
        """F = 2 E + 2 G N + H: in_proj rows, split as [z (E), xBC (C), dt (H)]."""
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    @property
    def state_size(self) -> int:
        """SSM state elements per layer, H * P * N."""
        return self.nheads * self.headdim * self.d_state


PRESETS: dict[str, BiMambaConfig] = {
    # Released Bi-Mamba sizes (authors' mamba_config/bimamba2_*.json).
    "780M": BiMambaConfig(d_model=1536, n_layer=48),
    "1.3B": BiMambaConfig(d_model=2048, n_layer=48),
    "2.7B": BiMambaConfig(d_model=2560, n_layer=64),
    # Small shapes with the same structure, for tests and quick runs.
    "tiny": BiMambaConfig(d_model=64, n_layer=2, d_state=16, headdim=16, vocab_size=256),
    "small": BiMambaConfig(d_model=256, n_layer=2, d_state=32, headdim=32, vocab_size=1024),
}


def get_preset(name: str) -> BiMambaConfig:
    """Return the preset called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`PRESETS`.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"preset must be one of {', '.join(PRESETS)}, not {name!r}"
        ) from None
