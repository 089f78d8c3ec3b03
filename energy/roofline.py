"""Bytes per decoded token and the memory roofline they imply.

:func:`bytes_per_token` counts the minimal DRAM traffic of one decode step, by kind, from the
model's shapes and the quantisation widths: the roofline divides the bandwidth by their sum,
and the DRAM energy floor multiplies the sum by the energy per bit. What the 1-bit design
actually streams is the layer engine's packer (``rtl/packer.py``; beat counts from
:meth:`rtl.layer.LayerConfig.section_beats`), padding and the constants' engine form
included, which :func:`energy.estimator.estimate` charges in place of the weight and
constant kinds here; the state and embedding kinds it takes from here.

The count is the minimum a batch-1 decode step must move when nothing is kept on chip between
tokens (``state_on_chip=False``): every weight once, every other parameter once, the SSM state
and the conv state read and written back once, the LM head once. Kinds:

==================== ==========================================================================
projection_weights   in_proj and out_proj: 1 bit per weight (Bi-Mamba), 8 or 4 bits (INT8, INT4)
                     or FP16
fp16_parameters      block norm, conv weight and bias, dt_bias, A_log, D, gated-norm gain. In the
                     1-bit design FBI's alpha is folded into the two norm gains that precede
                     the projections, so the checkpoint's ``wscale`` is never fetched on its own
hardware_constants   1-bit design: the form the projection unit consumes, beta / alpha per
                     input column (FP16) and a multiplier and correction per output row (32 bits);
                     they replace the checkpoint's ``wscale`` / ``wbias``, which are not fetched.
                     INT8 / INT4 designs: an FP16 scale per output row. FP16: none
ssm_state            H x P x N per layer at ``state_bits`` (FP16 for the FP16 design), read and
                     written back
conv_state           C x (K - 1) per layer at ``data_bits`` (FP16 for the FP16 design), read and
                     written back
embedding            the tied LM head (V x D), one embedding row and the final norm gain: FP16 in
                     the FP16 design; in the 1-bit design as its engine reads them
                     (``rtl/lm.py``), the head at ``head_bits``, the row at ``res_bits`` and
                     the gains at ``param_bits`` (a QuantSpec's); INT8 / INT4: the head at 8 or
                     4 bits with an FP16 scale a row, row and gain FP16
==================== ==========================================================================
"""

from __future__ import annotations

from model.config import BiMambaConfig
from model.golden.quantize import QuantSpec

__all__ = ["BYTE_KINDS", "DESIGNS", "bytes_per_token", "roofline_tokens_per_s",
           "energy_floor_j"]

DESIGNS = ("bimamba", "fp16", "int8", "int4")
INT_WEIGHT_BITS = {"int8": 8, "int4": 4}
BYTE_KINDS = ("projection_weights", "fp16_parameters", "hardware_constants", "ssm_state",
              "conv_state", "embedding")
FP16_BYTES = 2
ROW_CONSTANT_BYTES = 4  # multiplier and correction of one output row of the projection unit


def bytes_per_token(cfg: BiMambaConfig, design: str = "bimamba", state_bits: int = 16,
                    data_bits: int = 16, state_on_chip: bool = False,
                    spec: QuantSpec | None = None) -> dict[str, float]:
    """DRAM bytes of one decode step of the whole model, by kind (keys :data:`BYTE_KINDS`).

    Parameters
    ----------
    cfg : BiMambaConfig
    design : str
        ``bimamba`` (1-bit projections), ``fp16`` (everything FP16, no FBI constants), or
        ``int8`` / ``int4`` (the FP16 design with k-bit projection and head weights and an
        FP16 scale per output row).
    state_bits, data_bits : int
        Widths of the SSM state and of the conv state (``QuantSpec.state_bits`` and
        ``data_bits``) in the 1-bit design; the FP16 design keeps both at 16 bits.
    state_on_chip : bool
        The SSM and conv states stay on chip between tokens (their kinds are then 0).
    spec : QuantSpec, optional
        The 1-bit design's widths of the head, the embedding row and the gains (default
        ``QuantSpec()``: 8, 24 and 16 bits).

    Raises
    ------
    ValueError
        On an unknown design or a width that is not a positive integer.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {design!r}")
    for name, v in (("state_bits", state_bits), ("data_bits", data_bits)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    spec = QuantSpec() if spec is None else spec
    c = cfg
    D, E, C, H, F, K, L = (c.d_model, c.d_inner, c.conv_dim, c.nheads, c.d_in_proj, c.d_conv,
                           c.n_layer)
    weights = D * F + E * D  # in_proj (F x D) and out_proj (D x E) of one layer
    binary = design == "bimamba"
    kb = INT_WEIGHT_BITS.get(design)  # INT8 / INT4: k-bit weights, an FP16 scale a row
    sb, db = (state_bits, data_bits) if binary else (16, 16)
    per_layer_params = D + C * K + C + 3 * H + E  # norm, conv w + b, dt_bias/A_log/D, gated norm
    out = {
        "projection_weights": L * (weights / 8 if binary else weights * kb / 8 if kb
                                   else weights * FP16_BYTES),
        "fp16_parameters": L * per_layer_params * FP16_BYTES,
        "hardware_constants": L * ((D + E) * FP16_BYTES + (F + D) * ROW_CONSTANT_BYTES)
        if binary else L * (F + D) * FP16_BYTES if kb else 0.0,
        "ssm_state": 0.0 if state_on_chip else L * 2 * c.state_size * sb / 8,
        "conv_state": 0.0 if state_on_chip else L * 2 * C * (K - 1) * db / 8,
        "embedding": ((c.vocab_size * D * spec.head_bits + D * spec.res_bits
                       + D * spec.param_bits) / 8 if binary
                      else c.vocab_size * D * kb / 8 + (c.vocab_size + D + D) * FP16_BYTES
                      if kb else (c.vocab_size * D + D + D) * FP16_BYTES),
    }
    return {k: float(v) for k, v in out.items()}


def roofline_tokens_per_s(total_bytes: float, bytes_per_s: float) -> float:
    """Tokens per second that ``bytes_per_s`` of DRAM bandwidth allows at ``total_bytes`` per
    token, with compute free: the memory roofline of batch-1 decode."""
    return bytes_per_s / total_bytes


def energy_floor_j(total_bytes: float, pj_per_bit: float) -> float:
    """DRAM-only energy floor of one token: the minimal bytes at ``pj_per_bit``, nothing else."""
    return total_bytes * 8 * pj_per_bit * 1e-12
