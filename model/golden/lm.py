"""Bit-exact integer golden model of a whole Bi-Mamba language model (docs/fixed_point.md §10).

One byte goes through the datapath as

1. **embedding**: ``h = E_q[token]``, the embedding row stored in the residual format ``res``
   (a table read; the float embedding rounded once at export);
2. **layers**: :meth:`~model.golden.layer.GoldenLayer.step` of every layer, residual in, residual out;
3. **final RMSNorm**: :func:`~model.golden.layer.rmsnorm_act` with the gain
   ``sqrt(D) / 2**q * norm_f.weight / s_head``, giving ``head_bits`` activations ``a``;
4. **LM head**: ``logits_int = W_q @ a``, where ``W_q`` is the tied embedding in its own
   per-tensor format ``SQ(head_bits, head_frac)``; the sum is exact in integers
   (``|logits_int| <= D * 2**(2 head_bits - 2)``).

Everything up to ``logits_int`` is integer. The host turns the logits into probabilities:
``logits = logits_int * s_head * 2**-head_frac`` and a float64 log-softmax, which is where the
bits per character (and the sampling of :mod:`model.generate.sampling`) are computed. Dimension letters
are those of :mod:`model.config`, plus V (vocabulary).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from model.golden.layer import GoldenLayer, GoldenState, exact_matmul, rmsnorm_act
from model.progress import progress
from model.golden.quantize import (
    CALIB_CHUNK, ActQuant, ExportError, NormParams, QuantizedLayer, QuantSpec, act_scale,
    common_fracs, norm_params, quantize_param, calibrate, export_layer, single_thread,
)

__all__ = [
    "QuantizedLM", "LMCalibration", "GoldenLM", "calibrate_lm", "export_lm",
    "residual_streams", "bits_per_byte",
]


@dataclass(frozen=True, eq=False)
class QuantizedLM:
    """Every integer parameter of a language model: its layers plus embedding, norm and head.

    Members
    -------
    layers : tuple of QuantizedLayer
        One export per layer, each calibrated on that layer's own input stream.
    embedding : np.ndarray, int64, shape (V, D)
        Embedding rows in the residual format ``layers[0].fmt['res']``.
    norm_f : NormParams
        Final RMSNorm, its output ``head_bits`` wide with scale ``norm_f.act.scale``.
    head : np.ndarray, int64, shape (V, D)
        The tied embedding in ``SQ(head_bits, head_frac)``.
    """

    spec: QuantSpec
    layers: tuple[QuantizedLayer, ...]
    embedding: np.ndarray = field(repr=False)
    norm_f: NormParams = field(repr=False)
    head: np.ndarray = field(repr=False)
    head_frac: int

    @property
    def cfg(self):
        return self.layers[0].cfg

    @property
    def shared(self) -> bool:
        """Every layer has the same engine constants (one engine can run them all)."""
        first = self.layers[0].engine_constants()
        return all(lq.engine_constants() == first for lq in self.layers[1:])

    def digest(self) -> str:
        """SHA-256 over every layer's digest and the embedding, final norm and head: equal
        digests mean identical exports."""
        import hashlib

        h = hashlib.sha256()
        for lq in self.layers:
            h.update(lq.digest().encode())
        nf = self.norm_f
        for a in (self.embedding, self.head, nf.gain):
            h.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
        h.update(repr((self.head_frac, nf.n, str(nf.in_fmt), nf.eps_q, nf.q, str(nf.norm_fmt),
                       str(nf.gain_fmt), nf.act.bits, nf.act.scale)).encode())
        return h.hexdigest()

    @property
    def logit_scale(self) -> float:
        """Real value of one unit of ``logits_int``: ``s_head * 2**-head_frac``."""
        return self.norm_f.act.scale * 2.0 ** -self.head_frac

    @property
    def head_bound(self) -> int:
        """``|logits_int| <= D * 2**(head_bits-1) * 2**(head_bits-1)``."""
        return self.cfg.d_model * (1 << (self.spec.head_bits - 1)) ** 2


def residual_streams(lm, tokens: np.ndarray) -> list[np.ndarray]:
    """Float64 inputs of every layer and the final residual: ``n_layer + 1`` arrays (L, D).

    ``lm`` is a :class:`~model.reference.lm.BiMambaLM`; it is copied, so its dtype is kept. The text
    runs in chunks of :data:`~model.golden.quantize.CALIB_CHUNK` bytes with every layer's state
    carried (the SSD form's decay matrix grows with the square of the length).
    """
    m = copy.deepcopy(lm).double().eval()
    tokens = np.asarray(tokens, np.int64)
    out: list[list[np.ndarray]] = [[] for _ in range(len(m.backbone.layers) + 1)]
    states = [None] * len(m.backbone.layers)
    with torch.no_grad(), single_thread():
        for c0 in progress(range(0, len(tokens), CALIB_CHUNK), "residual streams"):
            h = m.backbone.embedding.weight[torch.from_numpy(tokens[c0: c0 + CALIB_CHUNK])]
            for i, layer in enumerate(m.backbone.layers):
                out[i].append(h.numpy().copy())
                h, states[i] = layer(h, states[i])
            out[-1].append(h.numpy().copy())
    return [np.concatenate(o) for o in out]


@dataclass(frozen=True, eq=False)
class LMCalibration:
    """Float statistics of a calibration text: every layer's input stream and its traces.

    Computed once by :func:`calibrate_lm` and reused by :func:`export_lm` across specs (a
    width sweep re-quantises without re-running the float model).
    """

    streams: list[np.ndarray] = field(repr=False)  # n_layer + 1 arrays (L, D)
    stats: list[dict[str, np.ndarray]] = field(repr=False)  # calibrate() of each layer


def calibrate_lm(lm, tokens: np.ndarray) -> LMCalibration:
    """Run ``lm`` in float64 over ``tokens`` (L,) and collect what :func:`export_lm` needs."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(f"calib_tokens must have shape (L >= 1,), not {tokens.shape}")
    streams = residual_streams(lm, tokens)
    stats = [calibrate(block, u, keep_state=False) for block, u in
             progress(list(zip(lm.backbone.layers, streams)), "calibrate layers")]
    return LMCalibration(streams, stats)


def export_lm(lm, spec: QuantSpec, calib_tokens: np.ndarray | None = None,
              calib: LMCalibration | None = None, shared: bool = True) -> QuantizedLM:
    """Quantise a Bi-Mamba LM; every scale comes from a float run over ``calib_tokens`` (L,)
    (or a :class:`LMCalibration` made from them).

    Calibrate on training text only: the formats are then fixed before any evaluation byte is
    seen, as a deployed accelerator's would be.

    ``shared`` (the default) gives every layer the same engine constants: each layer is
    exported on its own, then all again with :func:`~model.golden.quantize.common_fracs` of
    those exports (per format the smallest fraction, per width the largest), so the formats,
    shifts and tables are one set that a single engine builds in, and only the streamed arrays
    (signs, gains, beta, multipliers, conv taps, dt_bias, A, D) differ between layers
    (docs/fixed_point.md §10). ``shared=False`` calibrates every layer's formats on its own.

    Raises
    ------
    ValueError
        If ``lm`` is not a binary (Bi-Mamba) model, or neither or both calibration inputs are
        given, or ``calib_tokens`` is empty.
    ExportError
        If the embedding does not fit the residual format, or a layer cannot be exported.
    """
    if not getattr(lm, "binary", False):
        raise ValueError("lm must be a Bi-Mamba model (binary=True): the golden model computes "
                         "the projections as XNOR-popcount over sign bits")
    if (calib_tokens is None) == (calib is None):
        raise ValueError("give exactly one of calib_tokens and calib")
    cal = calib if calib is not None else calibrate_lm(lm, calib_tokens)
    layers = tuple(export_layer(block, spec, stats=st) for block, st in
                   progress(list(zip(lm.backbone.layers, cal.stats)), "export layers"))
    if shared:
        fracs = common_fracs(list(layers))
        layers = tuple(export_layer(block, spec, stats=st, fracs=fracs, like=own)
                       for block, st, own in progress(
                           list(zip(lm.backbone.layers, cal.stats, layers)),
                           "export layers, shared formats"))
    res = layers[0].fmt["res"]
    emb = lm.backbone.embedding.weight.detach().double().numpy()
    peak = float(np.max(np.abs(emb)))
    if peak * 2.0**res.frac > res.max_int:
        raise ExportError(f"embedding peak {peak:.4g} does not fit the residual format {res}; "
                          f"increase res_bits or lower res_frac")
    embedding = res.quantize(emb)

    nf = lm.backbone.norm_f
    w_f = nf.weight.detach().double().numpy()
    h = cal.streams[-1]
    normed = h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + nf.eps) * w_f
    act = ActQuant(spec.head_bits, act_scale(normed, spec.head_bits))
    norm_f = norm_params(w_f, np.ones_like(w_f), res, nf.eps, act, spec, "norm_f")
    head, head_frac = quantize_param(emb, spec.head_bits, "head (tied embedding)")
    for a in (embedding, head):
        a.setflags(write=False)
    return QuantizedLM(spec, layers, embedding, norm_f, head, head_frac)


class GoldenLM:
    """A whole Bi-Mamba LM in integers: :meth:`step` (decode) and :meth:`sequence` (a text).

    Parameters
    ----------
    q : QuantizedLM
    """

    def __init__(self, q: QuantizedLM) -> None:
        self.q = q
        self.layers = [GoldenLayer(lq) for lq in q.layers]

    def initial_state(self) -> list[GoldenState]:
        return [layer.initial_state() for layer in self.layers]

    def _tokens(self, tokens: np.ndarray | int) -> np.ndarray:
        t = np.asarray(tokens)
        v = self.q.cfg.vocab_size
        if t.dtype.kind not in "iu":
            raise TypeError(f"tokens must be integers, not {t.dtype}")
        if t.size and (t.min() < 0 or t.max() >= v):
            raise ValueError(f"tokens must lie in [0, {v}), not [{t.min()}, {t.max()}]")
        return t.astype(np.int64)

    def head(self, h: np.ndarray) -> np.ndarray:
        """Final RMSNorm and LM head: residual (..., D) in ``res`` -> ``logits_int`` (..., V)."""
        a = rmsnorm_act(self.q.layers[0], self.q.norm_f, h)
        flat = a.reshape(-1, a.shape[-1])
        return exact_matmul(flat, self.q.head, self.q.head_bound).reshape(
            *a.shape[:-1], self.q.head.shape[0])

    def step(self, token: int, states: list[GoldenState]) -> tuple[np.ndarray, list[GoldenState]]:
        """One byte -> ``logits_int`` (V,) for the next byte, new states."""
        h = self.q.embedding[int(self._tokens(token))]
        new = []
        for layer, s in zip(self.layers, states):
            h, s = layer.step(h, s)
            new.append(s)
        return self.head(h), new

    def sequence(
        self, tokens: np.ndarray, states: list[GoldenState] | None = None
    ) -> tuple[np.ndarray, list[GoldenState]]:
        """Bytes (L,) -> ``logits_int`` (L, V), bit-identical to :meth:`step` L times."""
        t = self._tokens(tokens)
        if t.ndim != 1:
            raise ValueError(f"tokens must have shape (L,), not {t.shape}")
        states = states or self.initial_state()
        h = self.q.embedding[t]
        new = []
        for layer, s in zip(self.layers, states):
            h, s = layer.sequence(h, s)
            new.append(s)
        return self.head(h), new


def bits_per_byte(logits: np.ndarray, targets: np.ndarray) -> float:
    """Total bits of ``targets`` (L,) under ``softmax(logits)`` (L, V), in float64.

    Returns the sum, so chunks of one text add up; divide by the byte count for bpc.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = logp[np.arange(len(targets)), np.asarray(targets, np.int64)]
    return float(-picked.sum() / math.log(2))

