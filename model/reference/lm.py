"""A whole byte-level language model around the Bi-Mamba blocks of :mod:`model.reference.layer`.

``BiMambaLM`` is the Mamba-2 language model of the Bi-Mamba checkpoints: a byte embedding
(vocabulary V = 256) tied to the LM head, n :class:`~model.reference.layer.BiMambaBlock`, a final
RMSNorm. Its state dict uses the checkpoint key names::

    backbone.embedding.weight   (V, D)
    backbone.layers.{i}.*       as in model/reference/checkpoint.py
    backbone.norm_f.weight      (D,)

With ``binary=False`` the blocks' in_proj and out_proj are plain linear layers (the float
Mamba-2 teacher; same keys minus ``wscale``/``wbias``). Dimension letters are those of
:mod:`model.config`, plus Bt for a batch of sequences and V for the vocabulary.

Two paths, tested against each other: :meth:`BiMambaLM.forward` (a batch of whole sequences,
the training path) and :meth:`BiMambaLM.step` (one byte at a time, the decode path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.reference.checkpoint import synthetic_state_dict
from model.config import BiMambaConfig
from model.reference.layer import BiMambaBlock, FBILinear, MixerState, RMSNorm

__all__ = ["LM_CONFIG", "BYTE_VOCAB", "BiMambaLM", "student_from_teacher", "binary_keys"]

BYTE_VOCAB = 256

# The shape trained on the Shakespeare corpus and shipped: about 5.6 M parameters.
LM_CONFIG = BiMambaConfig(d_model=384, n_layer=6, d_state=32, headdim=32,
                          vocab_size=BYTE_VOCAB)


def binary_keys(cfg: BiMambaConfig) -> list[str]:
    """The latent-weight keys that are binarised in a Bi-Mamba model, layer by layer."""
    return [f"backbone.layers.{i}.mixer.{p}.weight"
            for i in range(cfg.n_layer) for p in ("in_proj", "out_proj")]


class _Backbone(nn.Module):
    """Holds the parameters under ``backbone.`` so the state dict has the checkpoint keys."""

    def __init__(self, cfg: BiMambaConfig, binary: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(BiMambaBlock(cfg, binary) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.rms_eps)


class BiMambaLM(nn.Module):
    """Byte-level Mamba-2 LM; Bi-Mamba when ``binary``.

    Parameters
    ----------
    cfg : BiMambaConfig
        Shape; ``vocab_size`` is the embedding's row count (256 for bytes).
    binary : bool
        True: FBI-Linear in_proj/out_proj (the Bi-Mamba student). False: float projections
        (the teacher).
    dropout : float
        Dropout probability on the embedding output and on every mixer output before it is
        added to the residual stream; active in training mode only, so evaluation and
        :meth:`step` are unaffected.

    Raises
    ------
    ValueError
        If ``dropout`` is not in [0, 1).

    Notes
    -----
    Parameters are left as the modules create them (FBILinear's latent weight uninitialised);
    call :meth:`init_weights` or load a state dict before use.
    """

    def __init__(self, cfg: BiMambaConfig, binary: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.cfg = cfg
        self.binary = binary
        self.backbone = _Backbone(cfg, binary)
        self.drop = nn.Dropout(dropout)

    # -- set-up -------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, seed: int) -> "BiMambaLM":
        """Mamba-2 initialisation (as :func:`model.reference.checkpoint.synthetic_state_dict`), seeded.

        Embedding N(0, 0.02); in_proj, out_proj and conv Kaiming-uniform, out_proj scaled by
        1/sqrt(n_layer); dt_bias from a log-uniform dt in [1e-3, 0.1]; A_log = log U(1, 16);
        D and norms 1; FBI 'xnor' alpha/beta when binary. Returns ``self``.
        """
        sd = synthetic_state_dict(self.cfg, seed)
        own = self.state_dict()
        self.load_state_dict({k: sd[k] for k in own})
        return self

    def initial_state(
        self, dtype: torch.dtype = torch.float32, batch: int | None = None,
        device: torch.device | str | None = None,
    ) -> list[MixerState]:
        """Zero decode state of every layer (with a leading ``batch`` for :meth:`forward`)."""
        return [layer.initial_state(dtype, batch, device) for layer in self.backbone.layers]

    # -- paths --------------------------------------------------------------------------

    def logits(self, h: Tensor) -> Tensor:
        """Final norm and tied LM head: (..., D) -> (..., V)."""
        return F.linear(self.backbone.norm_f(h), self.backbone.embedding.weight)

    def forward(
        self, idx: Tensor, states: list[MixerState] | None = None
    ) -> tuple[Tensor, list[MixerState]]:
        """Logits for every position of a batch of byte sequences.

        Parameters
        ----------
        idx : LongTensor, shape (Bt, L) or (L,)
            Byte values in [0, V).
        states : list of MixerState, optional
            Per-layer states to continue from (batched like ``idx``); zeros if omitted.

        Returns
        -------
        logits : Tensor, shape (Bt, L, V) or (L, V)
            ``logits[..., t, :]`` scores the byte after ``idx[..., t]``.
        states : list of MixerState
            Per-layer states after the last position.

        Raises
        ------
        ValueError
            If ``idx`` is not 1-D or 2-D.
        """
        if idx.dim() not in (1, 2):
            raise ValueError(f"idx must have shape (L,) or (Bt, L), not {tuple(idx.shape)}")
        h = self.drop(self.backbone.embedding(idx))
        states = states or [None] * self.cfg.n_layer  # type: ignore[list-item]
        new_states = []
        for layer, s in zip(self.backbone.layers, states):
            # The block's residual written out, so dropout can sit on the mixer's branch.
            out, s = layer.mixer(layer.norm(h), s)
            h = h + self.drop(out)
            new_states.append(s)
        return self.logits(h), new_states

    def step(
        self, token: int | Tensor, states: list[MixerState]
    ) -> tuple[Tensor, list[MixerState]]:
        """One decode step.

        Parameters
        ----------
        token : int or 0-d LongTensor
            The current byte.
        states : list of MixerState
            Unbatched per-layer states (from :meth:`initial_state` without ``batch``); not
            modified.

        Returns
        -------
        logits : Tensor, shape (V,)
            Scores of the next byte.
        states : list of MixerState
        """
        w = self.backbone.embedding.weight
        h = w[int(token)]
        new_states = []
        for layer, s in zip(self.backbone.layers, states):
            h, s = layer.step(h, s)
            new_states.append(s)
        return self.logits(h), new_states


@torch.no_grad()
def student_from_teacher(teacher: BiMambaLM, dropout: float = 0.0) -> BiMambaLM:
    """A Bi-Mamba LM whose latent weights are the teacher's, alpha/beta by FBI 'xnor' init.

    Every teacher parameter is copied under the same key; each FBI-Linear then sets
    beta = column mean and alpha = column mean of ``|W - beta|`` of its latent weight. With no
    further training this is the naive binarised baseline.

    Parameters
    ----------
    teacher : BiMambaLM
        A float model (``binary=False``).
    dropout : float
        Dropout of the returned student.

    Raises
    ------
    ValueError
        If ``teacher`` is already binary.
    """
    if teacher.binary:
        raise ValueError("teacher must be a float model (binary=False), not a Bi-Mamba model")
    p = next(teacher.parameters())
    student = BiMambaLM(teacher.cfg, binary=True, dropout=dropout).to(p.device, p.dtype)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("wscale", "wbias")) for k in missing)
    for m in student.modules():
        if isinstance(m, FBILinear):
            m.init_xnor_()
    return student
