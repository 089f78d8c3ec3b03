"""Export of a float Bi-Mamba layer to the integer parameters of the fixed-point spec.

:class:`QuantSpec` holds the widths a user chooses; :func:`export_layer` turns a float
:class:`~model.reference.layer.BiMambaBlock` plus a calibration sequence into a frozen
:class:`QuantizedLayer`: packed sign bits, folded per-column scales, requantisation multipliers,
lookup tables and every tensor's :class:`~model.golden.fixedpoint.QFormat`. The golden model, the RTL
generators and the estimator all read that one object (docs/fixed_point.md).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from model.config import BiMambaConfig
from model.golden.bounds import MAX_BITS, accumulators
from model.golden.fixedpoint import (
    Exp2Table, PwlTable, QFormat, RsqrtTable, frac_for_range, signed_bits,
)
from model.progress import progress
from model.reference.layer import BiMambaBlock

__all__ = [
    "QuantSpec",
    "ActQuant",
    "NormParams",
    "BinaryProjection",
    "QuantizedLayer",
    "ExportError",
    "pack_signs",
    "calibrate",
    "single_thread",
    "CALIB_CHUNK",
    "export_layer",
    "ENGINE_FRACS",
    "engine_fracs",
    "common_fracs",
    "act_scale",
    "quantize_param",
    "norm_params",
]

LOG2E = math.log2(math.e)


class ExportError(ValueError):
    """The float parameters cannot be represented by the chosen spec."""


# Allowed range of every integer field of QuantSpec.
_SPEC_RANGES: dict[str, tuple[int, int]] = {
    "act_bits": (1, 16), "state_bits": (4, 32), "data_bits": (6, 24), "dt_bits": (6, 24),
    "dtx_bits": (8, 32), "exp_bits": (6, 24), "exp_in_frac": (4, 24), "res_bits": (8, 32),
    "res_frac": (0, 24), "param_bits": (4, 24), "norm_bits": (8, 24),
    "rsqrt_index_bits": (2, 16), "rsqrt_bits": (6, 24), "scale_bits": (4, 24),
    "silu_seg_bits": (1, 12), "exp_seg_bits": (1, 12), "tail_seg_bits": (1, 12),
    "head_bits": (2, 16),
}


@dataclass(frozen=True)
class QuantSpec:
    """Widths of the fixed-point datapath. Defaults reach >= 30 dB at layer_out (README).

    Parameters
    ----------
    act_bits : int
        Bits of the activations entering in_proj and out_proj, i.e. the number of bit-planes
        of the XNOR-popcount array. 1 means bipolar {-1, +1} activations.
    state_bits : int
        SSM state h.
    data_bits : int
        Internal activations: in_proj outputs z / xBC / dt, conv, SiLU, y, gate.
    dt_bits : int
        dt after softplus (unsigned).
    dtx_bits : int
        The per-(head, channel) product dt * x that feeds the state update.
    exp_bits : int
        Fraction bits of dA and of the exp2 mantissa.
    exp_in_frac : int
        Fraction bits of the exp2 argument.
    res_bits, res_frac : int
        Residual stream format (block input and output, out_proj output).
    param_bits : int
        Per-column / per-channel / per-head constants (folded norm gains, beta/alpha, conv
        weights, A, D, the softplus tail table).
    norm_bits : int
        The normalised value inside an RMSNorm, before its per-column gain.
    rsqrt_index_bits, rsqrt_bits : int
        rsqrt table: index bits (one of them the exponent parity) and entry width.
    scale_bits : int
        Unsigned requantisation multiplier after each projection.
    silu_seg_bits, exp_seg_bits, tail_seg_bits : int
        log2 of the PWL segment counts of SiLU (over [-8, 8)), 2**-f (over [0, 1)) and the
        softplus tail log1p(E)/E (over [0, 1]).
    head_bits : int
        Language model only (:mod:`model.golden.lm`): the final RMSNorm's output activations
        and the LM head's weights (the tied embedding), both signed ``head_bits`` wide.
    headroom : float
        Calibrated formats cover ``headroom`` times the largest value seen.

    Raises
    ------
    ValueError
        If a width is out of its allowed range (the message names it and the range).
    """

    act_bits: int = 8
    state_bits: int = 16
    data_bits: int = 16
    dt_bits: int = 16
    dtx_bits: int = 24
    exp_bits: int = 16
    exp_in_frac: int = 16
    res_bits: int = 24
    res_frac: int = 12
    param_bits: int = 16
    norm_bits: int = 16
    rsqrt_index_bits: int = 10
    rsqrt_bits: int = 16
    scale_bits: int = 16
    silu_seg_bits: int = 8
    exp_seg_bits: int = 7
    tail_seg_bits: int = 6
    head_bits: int = 8
    headroom: float = 2.0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _SPEC_RANGES.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
        if self.res_frac >= self.res_bits:
            raise ValueError(
                f"res_frac must be in [0, res_bits - 1] = [0, {self.res_bits - 1}], "
                f"not {self.res_frac}"
            )
        if not (isinstance(self.headroom, (int, float)) and self.headroom >= 1):
            raise ValueError(f"headroom must be a number >= 1, not {self.headroom!r}")



@dataclass(frozen=True)
class ActQuant:
    """Projection input activation: ``act_bits`` integers meaning ``a * scale``.

    ``bits == 1`` is bipolar: the single bit b means ``2 b - 1``.
    """

    bits: int
    scale: float

    @property
    def max_abs(self) -> int:
        return 1 if self.bits == 1 else 1 << (self.bits - 1)

    def plane_weights(self) -> tuple[list[int], int]:
        """Bit-plane weights ``c_k`` and offset ``o`` with ``a = sum_k c_k b_k + o``."""
        if self.bits == 1:
            return [2], -1
        return [1 << k for k in range(self.bits - 1)] + [-(1 << (self.bits - 1))], 0


@dataclass(frozen=True, eq=False)
class NormParams:
    """Integer RMSNorm producing projection activations (docs/fixed_point.md, section 3).

    Members
    -------
    n : int
        Normalised width.
    in_fmt : QFormat
        Format of the input v.
    eps_q : int
        ``n * eps`` in the units of ``sum(v**2)``.
    q : int
        ``floor(log2(sqrt(n)))``; the normalised value ``v / ||v|| * 2**q`` fits ``norm_fmt``.
    norm_fmt : QFormat
        ``Q(norm_bits, norm_bits - 2 - q)``.
    gain : np.ndarray, shape (n,)
        ``sqrt(n) / 2**q * weight * alpha / act.scale`` in ``gain_fmt``.
    act : ActQuant
        Output activation.
    """

    n: int
    in_fmt: QFormat
    eps_q: int
    q: int
    norm_fmt: QFormat
    gain: np.ndarray = field(repr=False)
    gain_fmt: QFormat
    act: ActQuant


@dataclass(frozen=True, eq=False)
class BinaryProjection:
    """An FBI-Linear layer in the XNOR-popcount form (docs/fixed_point.md, section 4).

    ``y_i = sat(rs((acc_i << beta_frac) + sum_j beta_j a_j) * mult_i, beta_frac + mult_frac))``
    with ``acc_i = sum_j s_ij a_j`` computed from packed sign bits.

    Members
    -------
    d_in, d_out : int
    signs : np.ndarray, uint64, shape (d_out, ceil(d_in / 64))
        Bit j of row i (little-endian words) is 1 iff the weight sign is +1; pad bits are 0.
    popcount_w : np.ndarray, int64, shape (d_out,)
        Set bits per row (derived from ``signs``; stored because the RTL stores it).
    beta : np.ndarray, int64, shape (d_in,)
        ``beta_j / alpha_j`` in ``Q(param_bits, beta_frac)``.
    mult : np.ndarray, int64, shape (d_out,)
        ``act.scale / out_lsb_i`` in ``UQ(scale_bits, mult_frac)``.
    out_bits : int
        Saturation width of the output.
    beta_bits, mult_bits : int
        Widths of ``beta`` (signed) and ``mult`` (unsigned).
    """

    d_in: int
    d_out: int
    act: ActQuant
    signs: np.ndarray = field(repr=False)
    popcount_w: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)
    beta_frac: int
    mult: np.ndarray = field(repr=False)
    mult_frac: int
    out_bits: int
    beta_bits: int
    mult_bits: int

    @property
    def acc_bound(self) -> int:
        """``|acc| <= d_in * max|a|``: every sign agrees with every activation."""
        return self.d_in * self.act.max_abs

    @property
    def sum_bound(self) -> int:
        """``|(acc << beta_frac) + sum_j beta_j a_j| <= (acc_bound << beta_frac) + d_in max|a| max|beta|``."""
        return (self.acc_bound << self.beta_frac) + self.d_in * self.act.max_abs * (
            1 << (self.beta_bits - 1))

    @property
    def prod_bound(self) -> int:
        """``|sum * mult| <= sum_bound * (2**mult_bits - 1)``."""
        return self.sum_bound * ((1 << self.mult_bits) - 1)

    @property
    def words(self) -> int:
        return self.signs.shape[1]

    def sign_matrix(self) -> np.ndarray:
        """Unpacked signs in {-1, +1}, int64, shape (d_out, d_in)."""
        bits = np.unpackbits(self.signs.view(np.uint8), axis=1, bitorder="little")[:, : self.d_in]
        return bits.astype(np.int64) * 2 - 1


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    """Every integer parameter, table and format of one layer. Frozen; see :func:`export_layer`.

    Formats (``fmt``) are keyed by tensor name: res, z, xbc, dt_raw, dt_in, conv, xbc_act, dt,
    dA, dtx, ssm, y, silu_z, gate.
    """

    cfg: BiMambaConfig
    spec: QuantSpec
    fmt: dict[str, QFormat]
    norm_in: NormParams
    in_proj: BinaryProjection
    conv_w: np.ndarray = field(repr=False)  # (C, K) in Q(param_bits, conv_w_frac)
    conv_w_frac: int
    conv_b: np.ndarray = field(repr=False)  # (C,) in accumulator units
    silu_conv: PwlTable
    dt_bias: np.ndarray = field(repr=False)  # (H,) with frac fmt['dt_raw'].frac
    log2e: int  # log2(e) in Q(param_bits, log2e_frac)
    log2e_frac: int
    exp2: Exp2Table
    tail: PwlTable  # log1p(E) / E for E in [0, 1]
    a2: np.ndarray = field(repr=False)  # (H,) exp(A_log) * log2(e), Q(param_bits, a2_frac)
    a2_frac: int
    d_skip: np.ndarray = field(repr=False)  # (H,) D, Q(param_bits, d_frac)
    d_frac: int
    silu_z: PwlTable
    norm_out: NormParams
    out_proj: BinaryProjection
    rsqrt: RsqrtTable
    conv_b_bits: int = 0  # width of conv_b on the weight stream (>= what its values need)

    def __post_init__(self) -> None:
        need = signed_bits(int(np.max(np.abs(self.conv_b)))) if self.conv_b.size else 1
        if self.conv_b_bits < need:
            object.__setattr__(self, "conv_b_bits", need)

    def engine_constants(self) -> dict[str, object]:
        """What an RTL engine builds in as constants rather than reading from the weight stream:
        every scalar (formats, shifts, widths, table geometry) except the activation scales
        (folded into the streamed gains and multipliers), and the tables' contents. Layers with
        equal engine constants can share one engine (:func:`common_fracs`)."""
        out = {k: v for k, v in self.scalars().items() if not k.endswith(".act")}
        for name in ("norm_in", "in_proj", "norm_out", "out_proj"):
            out[f"{name}.act_bits"] = getattr(self, name).act.bits
        out["conv_b_bits"] = self.conv_b_bits
        for k, v in self.arrays().items():
            if k.endswith(".table"):
                out[k] = tuple(int(x) for x in np.asarray(v).ravel())
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every integer array of the export, by a stable name (what an RTL memory holds)."""
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
            elif isinstance(v, (NormParams, BinaryProjection)):
                for g in fields(v):
                    w = getattr(v, g.name)
                    if isinstance(w, np.ndarray):
                        out[f"{f.name}.{g.name}"] = w
            elif isinstance(v, PwlTable):
                out[f"{f.name}.table"] = v.table
            elif isinstance(v, Exp2Table):
                out[f"{f.name}.table"] = v.mantissa.table
            elif isinstance(v, RsqrtTable):
                out[f"{f.name}.table"] = v.table
        return out

    def scalars(self) -> dict[str, object]:
        """Every scalar of the export (spec, formats, shifts, widths, table geometry), by name."""
        out: dict[str, object] = {f"spec.{k}": v for k, v in asdict(self.spec).items()}
        out.update({f"fmt.{k}": str(v) for k, v in sorted(self.fmt.items())})
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f.name] = v
            elif isinstance(v, (NormParams, BinaryProjection)):
                for g in fields(v):
                    w = getattr(v, g.name)
                    if isinstance(w, (int, float, QFormat, ActQuant)):
                        out[f"{f.name}.{g.name}"] = str(w) if not isinstance(w, int) else w
            elif isinstance(v, (PwlTable, Exp2Table)):
                t = v.mantissa if isinstance(v, Exp2Table) else v
                if isinstance(v, Exp2Table):
                    out[f"{f.name}.in_frac"], out[f"{f.name}.out_frac"] = v.in_frac, v.out_frac
                out.update({
                    f"{f.name}.in_fmt": str(t.in_fmt), f"{f.name}.out_fmt": str(t.out_fmt),
                    f"{f.name}.lo": t.lo, f"{f.name}.seg_bits": t.seg_bits,
                    f"{f.name}.shift": t.shift, f"{f.name}.left": t.left,
                    f"{f.name}.right": "identity" if t.right_const is None else t.right_const,
                })
            elif isinstance(v, RsqrtTable):
                out[f"{f.name}.index_bits"], out[f"{f.name}.out_bits"] = v.index_bits, v.out_bits
        return out

    def digest(self) -> str:
        """SHA-256 over every array and scalar: equal digests mean identical exports."""
        h = hashlib.sha256()
        for k, v in sorted(self.arrays().items()):
            h.update(k.encode())
            h.update(str(v.dtype).encode() + str(v.shape).encode())
            h.update(np.ascontiguousarray(v).tobytes())
        h.update(repr(sorted(self.scalars().items())).encode())
        return h.hexdigest()

    def save(self, path: str) -> None:
        """Write arrays and scalars to an ``.npz`` file (scalars under ``scalars.*``)."""
        payload = {k: v for k, v in self.arrays().items()}
        for k, v in self.scalars().items():
            payload[f"scalars.{k}"] = np.array(v)
        np.savez(path, **payload)


def pack_signs(sign: np.ndarray) -> np.ndarray:
    """Signs in {-1, +1} (or {0, 1} bits), shape (d_out, d_in) -> uint64 (d_out, ceil(d_in/64))."""
    bits = (np.asarray(sign) > 0).astype(np.uint8)
    d_out, d_in = bits.shape
    words = -(-d_in // 64)
    padded = np.zeros((d_out, words * 64), dtype=np.uint8)
    padded[:, :d_in] = bits
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


# -- calibration ---------------------------------------------------------------------------


# Tokens per sequence-path call in :func:`calibrate`: the SSD form builds (H, L, L) decay
# matrices, so its cost per token grows with the chunk; 128 keeps them small (3 MB for 24
# heads in float64) while the per-call overhead stays a few percent.
CALIB_CHUNK = 128


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    The calibration forward is thousands of small float64 ops; with two OpenMP threads on a
    two-core machine that is also running anything else, the threads spin-wait on each other
    and a 1,024-byte calibration of the shipped model took 25.7 s instead of 3.4 s.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def calibrate(block: BiMambaBlock, u: np.ndarray, keep_state: bool = True) -> dict[str, np.ndarray]:
    """Run the float reference over ``u`` (L, D) and collect every traced tensor.

    The sequence path runs in chunks of :data:`CALIB_CHUNK` tokens with the state carried,
    and the per-token state ``ssm`` (which the SSD form never materialises) follows from the
    recurrence ``h_t = dA_t h_(t-1) + (dt_t x_t) B_t`` in NumPy: the decode step's values to
    float64 rounding (tested), at a small fraction of a Python step per token.

    Returns name -> array of shape (L, ...) in float64: the keys of
    :meth:`~model.reference.layer.BiMambaMixer.step`'s trace plus norm and mixer_out, and ``a_in`` /
    ``a_out`` (the FBI activations ``norm * alpha``), ``silu_z`` and ``dtx``.

    ``keep_state=False`` keeps, instead of ``ssm`` (L, H, P, N: 800 MB for 4,096 tokens of the
    shipped model, most of the time spent here), only ``ssm_peak``, its largest magnitude per
    element over the tokens (H, P, N): all an export needs. The recurrence is computed in place
    either way, with the same operations in the same order (the same float64 values).
    """
    block = copy.deepcopy(block).double()  # the caller's block keeps its dtype
    u = np.asarray(u, np.float64)
    rec: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), single_thread():
        state = None
        for c0 in progress(range(0, u.shape[0], CALIB_CHUNK), "float reference"):
            tr: dict[str, torch.Tensor] = {}
            _, state = block(torch.as_tensor(u[c0: c0 + CALIB_CHUNK]), state, tr)
            for k, v in tr.items():
                rec.setdefault(k, []).append(v.numpy().copy())
    out = {k: np.concatenate(v) for k, v in rec.items()}
    m = block.mixer
    c = block.cfg
    E, gn, rep = c.d_inner, c.ngroups * c.d_state, c.nheads // c.ngroups
    x = out["xbc_act"][:, :E].reshape(-1, c.nheads, c.headdim)
    Bh = np.repeat(out["xbc_act"][:, E: E + gn].reshape(-1, c.ngroups, c.d_state), rep, axis=1)
    out["dtx"] = out["dt"][:, :, None] * x
    shape = (c.nheads, c.headdim, c.d_state)
    ssm = np.empty((u.shape[0], *shape)) if keep_state else None
    h, tmp, peak = np.zeros(shape), np.empty(shape), np.zeros(shape)
    for t in range(u.shape[0]):
        np.multiply(out["dA"][t][:, None, None], h, out=h)
        np.multiply(out["dtx"][t][:, :, None], Bh[t][:, None, :], out=tmp)
        h += tmp
        if keep_state:
            ssm[t] = h
        else:
            np.maximum(peak, np.abs(h, out=tmp), out=peak)
    if keep_state:
        out["ssm"] = ssm
    else:
        out["ssm_peak"] = peak
    out["a_in"] = out["norm"] * m.in_proj.wscale.detach().numpy()[0]
    out["a_out"] = out["out_norm"] * m.out_proj.wscale.detach().numpy()[0]
    out["silu_z"] = out["z"] * 0.5 * (1 + np.tanh(out["z"] / 2))  # silu, no exp overflow
    return out


def act_scale(x: np.ndarray, bits: int) -> float:
    """Scale minimising the quantisation MSE of ``x`` over a grid of clipping levels."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if bits == 1:
        return float(np.mean(np.abs(x))) or 1.0
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return 1.0
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    best, best_s = math.inf, peak / hi
    for i in range(64):
        s = peak * 2.0 ** (-i / 8) / hi
        err = np.mean((np.clip(np.floor(x / s + 0.5), lo, hi) * s - x) ** 2)
        if err < best:
            best, best_s = err, s
    return best_s


def param_frac(x: np.ndarray, bits: int, name: str, max_frac: int = 40) -> int:
    """The largest fraction width of a ``bits``-wide signed format that holds the peak of the
    constant tensor ``x`` without saturation (rounding included)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ExportError(f"{name} has non-finite values")
    peak = float(np.max(np.abs(x)))
    frac = frac_for_range(peak, bits, max_frac=max_frac)
    if np.floor(peak * 2.0**frac + 0.5) > (1 << (bits - 1)) - 1:
        frac -= 1  # the peak would round up onto the rail: one bit less, no saturation
    return frac


def quantize_param(x: np.ndarray, bits: int, name: str, max_frac: int = 40,
                   frac: int | None = None) -> tuple[np.ndarray, int]:
    """Quantise a constant tensor with the largest frac that holds its peak (no saturation),
    or with ``frac`` when given (it must be at most that largest frac: a smaller one gives up
    precision, never range)."""
    best = param_frac(x, bits, name, max_frac)
    if frac is None:
        frac = best
    elif frac > best:
        raise ExportError(f"{name}: the pinned fraction {frac} exceeds the largest that holds "
                          f"its peak, {best}")
    return QFormat(bits, frac).quantize(np.asarray(x, np.float64)), frac


# -- export --------------------------------------------------------------------------------


def norm_params(
    weight: np.ndarray, alpha: np.ndarray, in_fmt: QFormat, eps: float, act: ActQuant,
    spec: QuantSpec, name: str, gain_frac: int | None = None,
) -> NormParams:
    """An RMSNorm's integer parameters: its gain (``weight * alpha`` folded with the
    activation scale of ``act``) in ``spec.param_bits`` (with ``gain_frac`` fraction bits when
    given, else the most that hold its peak), over inputs in ``in_fmt``."""
    n = weight.shape[0]
    q = int(math.floor(math.log2(math.sqrt(n))))
    norm_fmt = QFormat(spec.norm_bits, spec.norm_bits - 2 - q)
    gain_real = math.sqrt(n) / 2**q * weight * alpha / act.scale
    gain, gain_frac = quantize_param(gain_real, spec.param_bits, f"{name} gain", frac=gain_frac)
    eps_q = int(np.floor(n * eps * 2.0 ** (2 * in_fmt.frac) + 0.5))
    return NormParams(n, in_fmt, eps_q, q, norm_fmt, gain, QFormat(spec.param_bits, gain_frac), act)


def _projection(
    fbi, act: ActQuant, out_fracs: np.ndarray, out_bits: int, spec: QuantSpec, name: str,
    beta_frac: int | None = None, mult_frac: int | None = None,
) -> BinaryProjection:
    w = fbi.weight.detach().double().numpy()
    alpha = fbi.wscale.detach().double().numpy()[0]
    beta = fbi.wbias.detach().double().numpy()[0]
    d_out, d_in = w.shape
    zero = np.flatnonzero(alpha == 0)
    if zero.size:
        raise ExportError(
            f"{name}.wscale is 0 at column {int(zero[0])}: folding alpha into the activation "
            f"needs a nonzero scale per column"
        )
    signs = pack_signs(np.where(w >= 0, 1, -1))
    pc = np.bitwise_count(signs).sum(axis=1, dtype=np.int64)
    beta_q, beta_frac = quantize_param(beta / alpha, spec.param_bits, f"{name} beta/alpha",
                                       max_frac=24, frac=beta_frac)
    if beta_frac < 0:
        raise ExportError(
            f"{name}: max |wbias / wscale| = {np.max(np.abs(beta / alpha)):.4g} needs more than "
            f"param_bits = {spec.param_bits} integer bits; increase param_bits"
        )
    mult_real = act.scale * 2.0 ** out_fracs  # (d_out,)
    best = frac_for_range(float(np.max(mult_real)), spec.scale_bits, signed=False)
    if mult_frac is not None and mult_frac > best:
        raise ExportError(f"{name}: the pinned multiplier fraction {mult_frac} exceeds the "
                          f"largest that holds its peak, {best}")
    mult_frac = best if mult_frac is None else mult_frac
    mult = QFormat(spec.scale_bits, mult_frac, signed=False).quantize(mult_real)
    if np.any(mult == 0):
        raise ExportError(
            f"{name}: output scale underflows {spec.scale_bits} multiplier bits; "
            f"increase scale_bits or reduce the output fraction"
        )
    for a in (signs, pc, beta_q, mult):
        a.setflags(write=False)
    return BinaryProjection(
        d_in, d_out, act, signs, pc, beta_q, beta_frac, mult, mult_frac, out_bits,
        spec.param_bits, spec.scale_bits,
    )


# The fraction widths (and two widths) of an export that an engine builds in: calibrated per
# layer by default, pinned to one value for every layer by :func:`common_fracs` so that one
# engine serves them all. ``*_bits`` entries are widths (the common one is the largest), the
# others fraction widths (the common one is the smallest: every layer keeps its range and gives
# up precision where another layer needs more range).
DATA_FORMATS = ("z", "xbc", "dt_raw", "conv", "xbc_act", "dt", "dtx", "ssm", "y", "silu_z",
                "gate")
ENGINE_FRACS = tuple(f"fmt.{k}" for k in DATA_FORMATS) + (
    "dt_in_bits", "conv_w_frac", "conv_b_bits", "a2_frac", "d_frac", "norm_in.gain_frac",
    "norm_out.gain_frac", "in_proj.beta_frac", "in_proj.mult_frac", "out_proj.beta_frac",
    "out_proj.mult_frac")


def engine_fracs(q: QuantizedLayer) -> dict[str, int]:
    """The :data:`ENGINE_FRACS` of an export."""
    out = {f"fmt.{k}": q.fmt[k].frac for k in DATA_FORMATS}
    out.update({
        "dt_in_bits": q.fmt["dt_in"].bits, "conv_w_frac": q.conv_w_frac,
        "conv_b_bits": q.conv_b_bits, "a2_frac": q.a2_frac, "d_frac": q.d_frac,
        "norm_in.gain_frac": q.norm_in.gain_fmt.frac,
        "norm_out.gain_frac": q.norm_out.gain_fmt.frac,
        "in_proj.beta_frac": q.in_proj.beta_frac, "in_proj.mult_frac": q.in_proj.mult_frac,
        "out_proj.beta_frac": q.out_proj.beta_frac, "out_proj.mult_frac": q.out_proj.mult_frac,
    })
    return out


def common_fracs(layers: list[QuantizedLayer]) -> dict[str, int]:
    """One value of every :data:`ENGINE_FRACS` entry that suits all ``layers``: the largest
    width, the smallest fraction. Exporting every layer with it (``export_layer(...,
    fracs=)``) makes their :meth:`~QuantizedLayer.engine_constants` equal."""
    if not layers:
        raise ValueError("layers must not be empty")
    each = [engine_fracs(q) for q in layers]
    return {k: (max if k.endswith("_bits") else min)(e[k] for e in each) for k in ENGINE_FRACS}


def export_layer(
    block: BiMambaBlock, spec: QuantSpec, calib_u: np.ndarray | None = None,
    stats: dict[str, np.ndarray] | None = None, fracs: dict[str, int] | None = None,
    like: QuantizedLayer | None = None,
) -> QuantizedLayer:
    """Quantise ``block`` per ``spec``; formats come from a float run over ``calib_u`` (L, D).

    Deterministic: the same block, spec and calibration input give the same
    :meth:`QuantizedLayer.digest`. ``stats`` (from :func:`calibrate`) may be passed instead of
    ``calib_u`` to reuse one calibration run across several specs. ``fracs`` pins the entries
    of :data:`ENGINE_FRACS` it names (see :func:`common_fracs`); each pinned fraction must be
    at most, each pinned width at least, what the layer's own calibration gives. ``like``, an
    export of the same block and stats, lends its calibrated formats and activation scales so
    that a re-export with ``fracs`` does not recompute them.

    Raises
    ------
    ExportError
        If a parameter cannot be represented (zero FBI scale, an accumulator over 62 bits), or
        a pinned value would cut a range the layer needs.
    ValueError
        If ``fracs`` names an entry that is not in :data:`ENGINE_FRACS`.
    """
    pin = dict(fracs or {})
    unknown = sorted(set(pin) - set(ENGINE_FRACS))
    if unknown:
        raise ValueError(f"fracs has unknown entries {unknown}; allowed: {list(ENGINE_FRACS)}")
    cfg = block.cfg
    if stats is None:
        if calib_u is None or calib_u.ndim != 2 or calib_u.shape[1] != cfg.d_model or not len(
                calib_u):
            shape = None if calib_u is None else tuple(calib_u.shape)
            raise ValueError(
                f"calib_u must have shape (L >= 1, d_model={cfg.d_model}), not {shape}"
            )
        stats = calibrate(block, calib_u)
    st = stats
    m = block.mixer
    g = lambda t: t.detach().double().numpy()  # noqa: E731
    hr = spec.headroom

    def data_fmt(name: str, bits: int = spec.data_bits, signed: bool = True) -> QFormat:
        if like is not None:
            peak, frac = math.nan, like.fmt[name].frac
        else:
            peak = float(np.max(np.abs(st[name] if name in st else st[f"{name}_peak"]))) * hr
            frac = frac_for_range(peak, bits, signed=signed)
        want = pin.get(f"fmt.{name}", frac)
        if want > frac:
            raise ExportError(f"fmt.{name}: the pinned fraction {want} exceeds the calibrated "
                              f"{frac} (range {peak:.4g} with headroom)")
        return QFormat(bits, want, signed)

    E, C, H = cfg.d_inner, cfg.conv_dim, cfg.nheads
    fmt: dict[str, QFormat] = {
        "res": QFormat(spec.res_bits, spec.res_frac),
        "z": data_fmt("z"), "xbc": data_fmt("xbc"), "dt_raw": data_fmt("dt_raw"),
        "conv": data_fmt("conv"), "xbc_act": data_fmt("xbc_act"),
        "dt": data_fmt("dt", spec.dt_bits, signed=False),
        "dA": QFormat(spec.exp_bits, spec.exp_bits, signed=False),
        "dtx": data_fmt("dtx", spec.dtx_bits), "ssm": data_fmt("ssm", spec.state_bits),
        "y": data_fmt("y"), "silu_z": data_fmt("silu_z"), "gate": data_fmt("gate"),
    }

    # Block RMSNorm folded with in_proj's alpha.
    act_in = like.norm_in.act if like is not None else ActQuant(
        spec.act_bits, act_scale(st["a_in"], spec.act_bits))
    norm_in = norm_params(
        g(block.norm.weight), g(m.in_proj.wscale)[0], fmt["res"], block.norm.eps, act_in,
        spec, "norm", pin.get("norm_in.gain_frac"),
    )
    out_fracs = np.concatenate([
        np.full(E, fmt["z"].frac), np.full(C, fmt["xbc"].frac), np.full(H, fmt["dt_raw"].frac),
    ])
    in_proj = _projection(m.in_proj, act_in, out_fracs, spec.data_bits, spec, "mixer.in_proj",
                          pin.get("in_proj.beta_frac"), pin.get("in_proj.mult_frac"))

    # Depthwise conv: accumulator frac = xbc.frac + conv_w_frac.
    conv_w, conv_w_frac = quantize_param(g(m.conv1d.weight)[:, 0, :], spec.param_bits,
                                         "conv1d.weight", frac=pin.get("conv_w_frac"))
    acc_frac = fmt["xbc"].frac + conv_w_frac
    conv_b = np.floor(g(m.conv1d.bias) * 2.0**acc_frac + 0.5).astype(np.int64)
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    silu_conv = PwlTable.build(
        silu, fmt["conv"], fmt["xbc_act"], -8.0, 8.0, spec.silu_seg_bits, left=0.0,
        right_identity=True,
    )

    # dt: softplus(dt_raw + dt_bias) = max(x, 0) + log1p(2**-(|x| log2 e)).
    dt_bias = np.floor(g(m.dt_bias) * 2.0 ** fmt["dt_raw"].frac + 0.5).astype(np.int64)
    dt_in_bound = (1 << (spec.data_bits - 1)) + int(np.max(np.abs(dt_bias)))
    dt_in_bits = signed_bits(dt_in_bound)
    if pin.get("dt_in_bits", dt_in_bits) < dt_in_bits:
        raise ExportError(f"dt_in_bits: the pinned width {pin['dt_in_bits']} is below the "
                          f"{dt_in_bits} bits dt_raw + dt_bias needs")
    fmt["dt_in"] = QFormat(pin.get("dt_in_bits", dt_in_bits), fmt["dt_raw"].frac)
    log2e_frac = spec.param_bits - 2
    log2e = int(QFormat(spec.param_bits, log2e_frac).quantize(LOG2E))
    exp2 = Exp2Table.build(spec.exp_in_frac, spec.exp_bits, spec.exp_seg_bits)
    tail_in = QFormat(spec.exp_bits + 1, spec.exp_bits, signed=False)
    tail = PwlTable.build(
        lambda e: np.where(e > 0, np.log1p(e) / np.where(e > 0, e, 1), 1.0),
        tail_in, QFormat(spec.param_bits, spec.param_bits - 1, signed=False),
        0.0, 1.0, spec.tail_seg_bits,  # E = 1.0 exactly takes the right constant, log(2)
    )
    a2, a2_frac = quantize_param(np.exp(g(m.A_log)) * LOG2E, spec.param_bits, "A_log",
                                 frac=pin.get("a2_frac"))
    d_skip, d_frac = quantize_param(g(m.D), spec.param_bits, "D", frac=pin.get("d_frac"))

    silu_z = PwlTable.build(
        silu, fmt["z"], fmt["silu_z"], -8.0, 8.0, spec.silu_seg_bits, left=0.0,
        right_identity=True,
    )
    act_out = like.norm_out.act if like is not None else ActQuant(
        spec.act_bits, act_scale(st["a_out"], spec.act_bits))
    norm_out = norm_params(
        g(m.norm.weight), g(m.out_proj.wscale)[0], fmt["gate"], m.norm.eps, act_out, spec,
        "mixer.norm", pin.get("norm_out.gain_frac"),
    )
    out_proj = _projection(
        m.out_proj, act_out, np.full(cfg.d_model, spec.res_frac), spec.res_bits, spec,
        "mixer.out_proj", pin.get("out_proj.beta_frac"), pin.get("out_proj.mult_frac"),
    )
    for a in (conv_w, conv_b, dt_bias, a2, d_skip, norm_in.gain, norm_out.gain):
        a.setflags(write=False)
    q = QuantizedLayer(
        cfg=cfg, spec=spec, fmt=fmt, norm_in=norm_in, in_proj=in_proj,
        conv_w=conv_w, conv_w_frac=conv_w_frac, conv_b=conv_b,
        silu_conv=silu_conv, dt_bias=dt_bias,
        log2e=log2e, log2e_frac=log2e_frac, exp2=exp2, tail=tail, a2=a2, a2_frac=a2_frac,
        d_skip=d_skip, d_frac=d_frac, silu_z=silu_z, norm_out=norm_out, out_proj=out_proj,
        rsqrt=RsqrtTable.build(spec.rsqrt_index_bits, spec.rsqrt_bits),
        conv_b_bits=pin.get("conv_b_bits", 0),
    )
    for acc in accumulators(q):
        if acc.bits > MAX_BITS:
            raise ExportError(
                f"{acc.name} needs {acc.bits} bits (> {MAX_BITS}): {acc.formula}; "
                f"reduce the widths that enter it"
            )
    return q
