"""The host's sampler: the next byte from a model's logits, in float64 NumPy (no torch, so a
testbench host can import it: ``cosim.generate`` samples the RTL's logits with it)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_TEMPERATURE", "check_sampling", "sample_byte"]

DEFAULT_TEMPERATURE = 0.8


def check_sampling(temperature: float, top_k: int, vocab: int) -> None:
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, not {temperature}")
    if not 0 <= top_k <= vocab:
        raise ValueError(f"top_k must be an integer in [0, {vocab}], not {top_k}")


def sample_byte(logits: np.ndarray, scale: float, rng: np.random.Generator,
                temperature: float = DEFAULT_TEMPERATURE, top_k: int = 0) -> int:
    """Draw the next byte from ``softmax(logits * scale / temperature)``, in float64.

    Parameters
    ----------
    logits : np.ndarray, shape (V,)
        ``logits_int`` of the golden model, or a float model's logits.
    scale : float
        Real value of one logit unit (:attr:`QuantizedLM.logit_scale`; 1.0 for float logits).
    rng : np.random.Generator
        Source of the draw; not used when ``temperature == 0``.
    temperature : float
        Divides the logits; 0 means greedy (``argmax``, the lowest index among ties).
    top_k : int
        Keep only the ``top_k`` largest logits (ties broken towards the lower index, so
        ``top_k = 1`` is greedy); 0 keeps all V.

    Raises
    ------
    ValueError
        If ``temperature`` is negative or not finite, or ``top_k`` is not in [0, V].
    """
    z = np.asarray(logits, np.float64)
    check_sampling(temperature, top_k, z.shape[-1])
    if temperature == 0:
        return int(np.argmax(z))
    z = z * scale / temperature
    if top_k:
        # A stable sort on -z keeps the lower index first among equal logits, as argmax does.
        keep = np.argsort(-z, kind="stable")[:top_k]
        masked = np.full_like(z, -np.inf)
        masked[keep] = z[keep]
        z = masked
    e = np.exp(z - z.max())
    return int(rng.choice(len(e), p=e / e.sum()))
