"""Bit-exact integer golden model of a Bi-Mamba layer (docs/fixed_point.md).

Every stage is a function ``stage(q, ...int arrays) -> int arrays`` of a
:class:`~model.golden.quantize.QuantizedLayer` ``q``; the RTL units are checked against these one by
one. Inputs and outputs are ``np.int64`` arrays; no float appears in the datapath. Stages accept
any leading token dimensions except the scan, which is sequential by nature.

Dimension letters are those of :mod:`model.config`.

Run ``python -m model.evaluate.layer --help`` for the accuracy CLI (per-stage SQNR against the float
reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.golden.bounds import scan_alignment
from model.golden.fixedpoint import round_shift, saturate
from model.golden.quantize import BinaryProjection, NormParams, QuantizedLayer

__all__ = [
    "GoldenState",
    "bit_planes",
    "row_correction",
    "xnor_popcount_matvec",
    "integer_matvec",
    "exact_matmul",
    "sign_matmul",
    "BATCH_TOKENS",
    "project",
    "rmsnorm_act",
    "block_norm",
    "in_proj",
    "split_zxbcdt",
    "conv",
    "conv_act",
    "dt_softplus",
    "softplus_core",
    "decay",
    "scan",
    "gate",
    "out_norm",
    "out_proj",
    "residual",
    "GoldenLayer",
    "STAGES",
]

# Trace keys of a layer, in datapath order (the CLI reports SQNR for each).
STAGES = (
    "norm", "in_proj", "conv", "conv_act", "dt", "dA", "ssm", "y", "gate", "out_norm",
    "mixer_out", "layer_out",
)


def _ints(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    return a.astype(np.int64, copy=False)


def _last_dim(a: np.ndarray, n: int, name: str) -> None:
    if a.ndim < 1 or a.shape[-1] != n:
        raise ValueError(f"{name} must have last dimension {n}, not shape {a.shape}")


@dataclass
class GoldenState:
    """Integer decode state.

    Members
    -------
    conv : np.ndarray, int64, shape (C, K - 1)
        Last K - 1 xBC inputs (format ``xbc``), oldest first.
    ssm : np.ndarray, int64, shape (H, P, N)
        State h (format ``ssm``).
    """

    conv: np.ndarray
    ssm: np.ndarray

    @classmethod
    def zeros(cls, q: QuantizedLayer) -> "GoldenState":
        c = q.cfg
        return cls(
            np.zeros((c.conv_dim, c.d_conv - 1), np.int64),
            np.zeros((c.nheads, c.headdim, c.d_state), np.int64),
        )

    def copy(self) -> "GoldenState":
        return GoldenState(self.conv.copy(), self.ssm.copy())


# -- binary projection ---------------------------------------------------------------------


def bit_planes(p: BinaryProjection, a: np.ndarray) -> np.ndarray:
    """Activation vector (d_in,) -> packed bit-planes, uint64 (act_bits, words).

    Plane k holds bit k of the two's complement code (or the single bipolar bit, 1 for +1).
    """
    bits = p.act.bits
    if bits == 1:
        planes = (a > 0)[None, :]
    else:
        code = a & ((1 << bits) - 1)
        planes = (code[None, :] >> np.arange(bits, dtype=np.int64)[:, None]) & 1
    padded = np.zeros((planes.shape[0], p.words * 64), np.uint8)
    padded[:, : p.d_in] = planes
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def row_correction(p: BinaryProjection, n_cols: int | None = None) -> np.ndarray:
    """Per-row constant added to ``sum_k c_k popcount(XNOR(w_i, b_k))`` to give ``acc_i``.

    ``n_cols >= d_in`` is the number of columns the XNOR counts run over (an array that pads
    d_in to a multiple of its width counts the pad columns, whose weight and activation bits
    are both 0, as matches)::

        corr_i = (popcount(w_i) - d_in) * sum_k c_k + o * (2 popcount(w_i) - d_in)
                 - (n_cols - d_in) * sum_k c_k
    """
    n_cols = p.d_in if n_cols is None else n_cols
    if n_cols < p.d_in:
        raise ValueError(f"n_cols must be >= d_in = {p.d_in}, not {n_cols}")
    coef, offset = p.act.plane_weights()
    pc = p.popcount_w
    return (pc - p.d_in) * sum(coef) + offset * (2 * pc - p.d_in) - (n_cols - p.d_in) * sum(coef)


def xnor_popcount_matvec(p: BinaryProjection, a: np.ndarray) -> np.ndarray:
    """``acc = S @ a`` for one token by bit-serial XNOR-popcount; (d_in,) -> (d_out,).

    Per plane k: ``x_k,i = popcount(XNOR(w_i, b_k))`` over the d_in real bits (the padding is 0
    in both operands, so it is counted through ``d_in - popcount(XOR)``). Then, with plane
    weights ``c_k`` and offset ``o`` (``a = sum_k c_k b_k + o``)::

        acc_i = sum_k c_k x_k,i + (popcount(w_i) - d_in) * sum_k c_k + o * (2 popcount(w_i) - d_in)

    The last two terms are the per-row correction, a constant of the weights.
    """
    coef, _ = p.act.plane_weights()
    planes = bit_planes(p, a)
    acc = np.zeros(p.d_out, np.int64)
    for k, ck in enumerate(coef):
        mismatches = np.bitwise_count(p.signs ^ planes[k]).sum(axis=1, dtype=np.int64)
        acc += ck * (p.d_in - mismatches)
    return acc + row_correction(p)


def integer_matvec(p: BinaryProjection, a: np.ndarray) -> np.ndarray:
    """Plain ``S @ a`` with the unpacked sign matrix: the check on :func:`xnor_popcount_matvec`."""
    return p.sign_matrix() @ _ints(a, "a")


# From this many tokens on, :func:`project` forms ``acc`` for all of them with one matrix
# product (:func:`sign_matmul`) instead of one XNOR-popcount pass per token. The two give the
# same integers (tests/test_golden.py); the batch form makes whole-text evaluation (10^5 bytes
# through every layer) take seconds instead of hours.
BATCH_TOKENS = 8


def exact_matmul(a: np.ndarray, w: np.ndarray, bound: int) -> np.ndarray:
    """Integer ``a @ w.T`` for (T, n) x (m, n) -> (T, m), given ``bound >= sum_j |a_tj w_ij|``.

    The product runs in BLAS floating point, which is exact here: every partial sum is an
    integer of magnitude at most ``bound``, and float32 (float64) holds every integer up to
    2**24 (2**53); the format is chosen from the bound, with int64 arithmetic beyond it.
    """
    dt = np.float32 if bound <= 2**24 else np.float64 if bound <= 2**53 else np.int64
    return (_ints(a, "a").astype(dt) @ _ints(w, "w").T.astype(dt)).astype(np.int64)


def sign_matmul(p: BinaryProjection, a: np.ndarray) -> np.ndarray:
    """``acc = a @ S.T`` for a batch of tokens (T, d_in) -> (T, d_out), exactly.

    Every partial sum is bounded by ``acc_bound = d_in * max|a|`` (see :func:`exact_matmul`).
    """
    return exact_matmul(a, p.sign_matrix(), p.acc_bound)


def project(p: BinaryProjection, a: np.ndarray) -> np.ndarray:
    """FBI-Linear on quantised activations: (..., d_in) -> (..., d_out).

    ``y_i = sat_out(rs(((acc_i << beta_frac) + sum_j beta_j a_j) * mult_i, beta_frac + mult_frac))``
    """
    a = _ints(a, "a")
    _last_dim(a, p.d_in, "activation")
    if p.act.bits == 1:
        if a.size and not np.all(np.abs(a) == 1):
            raise ValueError("activation must be -1 or +1 for act_bits=1 (bipolar)")
    else:
        lo, hi = -p.act.max_abs, p.act.max_abs - 1
        if a.size and (a.min() < lo or a.max() > hi):
            raise ValueError(f"activation must lie in [{lo}, {hi}] for act_bits={p.act.bits}")
    flat = a.reshape(-1, p.d_in)
    if flat.shape[0] >= BATCH_TOKENS:
        acc = sign_matmul(p, flat)
    elif flat.shape[0]:
        acc = np.stack([xnor_popcount_matvec(p, t) for t in flat])
    else:
        acc = np.zeros((0, p.d_out), np.int64)
    total = (acc << p.beta_frac) + (flat @ p.beta)[:, None]
    y = saturate(round_shift(total * p.mult, p.beta_frac + p.mult_frac), p.out_bits)
    return y.reshape(*a.shape[:-1], p.d_out)


# -- RMSNorm -------------------------------------------------------------------------------


def rmsnorm_act(q: QuantizedLayer, n: NormParams, v: np.ndarray) -> np.ndarray:
    """Integer RMSNorm with the FBI alpha folded into its gain: (..., n) -> activations (..., n).

    ``ss = sum v^2 + eps_q``; ``(T, half) = rsqrt(ss)``;
    ``u = sat_norm(rs(v * T, rsqrt_bits + half - norm_bits + 2))`` (= v / ||v|| * 2**q);
    ``a = sat_act(rs(u * gain, norm_frac + gain_frac))``, or ``sign`` when act_bits = 1.
    """
    v = _ints(v, "v")
    _last_dim(v, n.n, "norm input")
    ss = np.maximum((v * v).sum(axis=-1) + n.eps_q, 1)
    t, half = q.rsqrt(ss)
    shift = q.rsqrt.out_bits + half - n.norm_fmt.bits + 2
    u = n.norm_fmt.saturate(round_shift(v * t[..., None], shift[..., None]))
    prod = u * n.gain
    if n.act.bits == 1:
        return np.where(prod >= 0, 1, -1).astype(np.int64)
    return saturate(round_shift(prod, n.norm_fmt.frac + n.gain_fmt.frac), n.act.bits)


def block_norm(q: QuantizedLayer, u: np.ndarray) -> np.ndarray:
    """Residual (..., D) in ``res`` -> in_proj activations (..., D)."""
    return rmsnorm_act(q, q.norm_in, u)


def in_proj(q: QuantizedLayer, a: np.ndarray) -> np.ndarray:
    """Activations (..., D) -> zxbcdt (..., F), segments in formats z, xbc, dt_raw."""
    return project(q.in_proj, a)


def split_zxbcdt(q: QuantizedLayer, zxbcdt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = q.cfg
    e, ce = c.d_inner, c.d_inner + c.conv_dim
    return zxbcdt[..., :e], zxbcdt[..., e:ce], zxbcdt[..., ce:]


# -- conv and SiLU -------------------------------------------------------------------------


def conv(q: QuantizedLayer, xbc: np.ndarray, conv_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal depthwise conv over tokens.

    Parameters
    ----------
    xbc : (L, C) or (C,) in format ``xbc``
    conv_state : (C, K - 1), the previous inputs

    Returns
    -------
    conv : same shape as ``xbc``, format ``conv``:
        ``sat(rs(sum_k w[c, k] x[t - K + 1 + k, c] + b[c], xbc.frac + w_frac - conv.frac))``
    conv_state : (C, K - 1) after the last token
    """
    xbc = _ints(xbc, "xbc")
    single = xbc.ndim == 1
    x2 = xbc[None] if single else xbc
    _last_dim(x2, q.cfg.conv_dim, "xbc")
    k = q.cfg.d_conv
    ext = np.concatenate([conv_state.T, x2], axis=0)  # (K-1+L, C)
    acc = np.broadcast_to(q.conv_b, x2.shape).copy()
    for j in range(k):
        acc += q.conv_w[:, j] * ext[j : j + x2.shape[0]]
    shift = q.fmt["xbc"].frac + q.conv_w_frac - q.fmt["conv"].frac
    out = q.fmt["conv"].saturate(round_shift(acc, shift))
    new_state = ext[ext.shape[0] - (k - 1):].T.copy()
    return (out[0] if single else out), new_state


def conv_act(q: QuantizedLayer, c: np.ndarray) -> np.ndarray:
    """SiLU of the conv output, PWL table: format ``conv`` -> ``xbc_act``."""
    return q.silu_conv(_ints(c, "conv"))


# -- dt, decay, scan -----------------------------------------------------------------------


def dt_softplus(q: QuantizedLayer, dt_raw: np.ndarray) -> np.ndarray:
    """``dt = softplus(dt_raw + dt_bias)`` as ``max(x, 0) + log1p(E)``, ``E = 2**-(|x| log2 e)``.

    ``log1p(E) = E * tail(E)`` keeps its relative precision for small E: the exp2 mantissa is
    multiplied by the tail table before the exponent shift is applied.
    (..., H) in ``dt_raw`` -> (..., H) in ``dt`` (unsigned).
    """
    return softplus_core(q, _ints(dt_raw, "dt_raw") + q.dt_bias)


def softplus_core(q: QuantizedLayer, x: np.ndarray) -> np.ndarray:
    """softplus of ``x = dt_raw + dt_bias`` in format ``dt_in`` -> ``dt``; see :func:`dt_softplus`."""
    x = _ints(x, "x")
    f_x, f_dt = q.fmt["dt_raw"].frac, q.fmt["dt"].frac
    sp = q.spec
    t = round_shift(np.abs(x) * q.log2e, f_x + q.log2e_frac - sp.exp_in_frac)
    m, k = q.exp2(t)
    e = round_shift(m, k)
    g = q.tail(e)
    tail = round_shift(m * g, k + sp.exp_bits + q.tail.out_fmt.frac - f_dt)
    pos = round_shift(np.maximum(x, 0), f_x - f_dt)
    return q.fmt["dt"].saturate(pos + tail)


def decay(q: QuantizedLayer, dt: np.ndarray) -> np.ndarray:
    """``dA = exp(-dt * exp(A_log)) = 2**-(dt * a2)``: ``dt`` -> ``dA`` (UQ(exp_bits, exp_bits)).

    1.0 (dt = 0) saturates to ``1 - 2**-exp_bits``.
    """
    t = round_shift(_ints(dt, "dt") * q.a2, q.fmt["dt"].frac + q.a2_frac - q.spec.exp_in_frac)
    return q.fmt["dA"].saturate(q.exp2.value(t))


def scan(
    q: QuantizedLayer, x: np.ndarray, B: np.ndarray, C: np.ndarray, dt: np.ndarray,
    dA: np.ndarray, h: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One token of the SSM recurrence with the D skip.

    Parameters
    ----------
    x : (H, P), B : (G, N), C : (G, N) in ``xbc_act``; dt : (H,) in ``dt``; dA : (H,) in ``dA``;
    h : (H, P, N) in ``ssm``.

    Returns
    -------
    y : (H, P) in ``y``
    h : (H, P, N) in ``ssm``

    Arithmetic (F = state alignment, docs/fixed_point.md section 6)::

        dtx = sat_dtx(rs(dt * x, dt.frac + act.frac - dtx.frac))
        h'  = sat_ssm(rs((dA * h << s1) + (dtx * B << s2), F - ssm.frac))
        y   = sat_y(rs((sum_n h' C << b1) + (D * x << b2), F_y - y.frac))
    """
    c = q.cfg
    f = q.fmt
    rep = c.nheads // c.ngroups
    Bh = np.repeat(_ints(B, "B"), rep, axis=0)  # (H, N)
    Ch = np.repeat(_ints(C, "C"), rep, axis=0)
    x, dt, dA, h = _ints(x, "x"), _ints(dt, "dt"), _ints(dA, "dA"), _ints(h, "h")
    fa = f["xbc_act"].frac
    al = scan_alignment(q)
    dtx = f["dtx"].saturate(round_shift(dt[:, None] * x, f["dt"].frac + fa - f["dtx"].frac))
    acc = ((dA[:, None, None] * h) << al["s1"]) + ((dtx[:, :, None] * Bh[:, None, :]) << al["s2"])
    h_new = f["ssm"].saturate(round_shift(acc, al["f_state"] - f["ssm"].frac))
    yacc = (np.einsum("hpn,hn->hp", h_new, Ch) << al["b1"]) + ((q.d_skip[:, None] * x) << al["b2"])
    y = f["y"].saturate(round_shift(yacc, al["f_y"] - f["y"].frac))
    return y, h_new


# -- gate, out_norm, out_proj, residual ----------------------------------------------------


def gate(q: QuantizedLayer, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``g = sat(rs(y * silu(z), y.frac + silu_z.frac - gate.frac))``; (..., E) -> (..., E)."""
    sz = q.silu_z(_ints(z, "z"))
    f = q.fmt
    return f["gate"].saturate(
        round_shift(_ints(y, "y") * sz, f["y"].frac + f["silu_z"].frac - f["gate"].frac))


def out_norm(q: QuantizedLayer, g: np.ndarray) -> np.ndarray:
    """Gated RMSNorm (norm after gate) with out_proj's alpha folded: (..., E) -> activations."""
    return rmsnorm_act(q, q.norm_out, g)


def out_proj(q: QuantizedLayer, a: np.ndarray) -> np.ndarray:
    """Activations (..., E) -> mixer output (..., D) in ``res``."""
    return project(q.out_proj, a)


def residual(q: QuantizedLayer, u: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``sat_res(u + out)``."""
    return q.fmt["res"].saturate(_ints(u, "u") + _ints(out, "out"))


# -- the layer -----------------------------------------------------------------------------


class GoldenLayer:
    """A whole Bi-Mamba block in integers: decode :meth:`step` and :meth:`sequence`.

    Parameters
    ----------
    q : QuantizedLayer
    """

    def __init__(self, q: QuantizedLayer) -> None:
        self.q = q

    def initial_state(self) -> GoldenState:
        return GoldenState.zeros(self.q)

    def _split_xbc(self, xa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.q.cfg
        gn = c.ngroups * c.d_state
        x = xa[..., : c.d_inner].reshape(*xa.shape[:-1], c.nheads, c.headdim)
        B = xa[..., c.d_inner : c.d_inner + gn].reshape(*xa.shape[:-1], c.ngroups, c.d_state)
        C = xa[..., c.d_inner + gn :].reshape(*xa.shape[:-1], c.ngroups, c.d_state)
        return x, B, C

    def step(
        self, u: np.ndarray, state: GoldenState, trace: dict | None = None
    ) -> tuple[np.ndarray, GoldenState]:
        """One token: u (D,) in ``res`` -> layer output (D,) in ``res``, new state.

        ``trace`` (optional) receives every stage output under the keys of :data:`STAGES`
        plus z, xbc, dt_raw, xbc_act, silu_z.
        """
        q = self.q
        u = _ints(u, "u")
        if u.shape != (q.cfg.d_model,):
            raise ValueError(f"u must have shape ({q.cfg.d_model},), not {u.shape}")
        a_in = block_norm(q, u)
        zxbcdt = in_proj(q, a_in)
        z, xbc, dt_raw = split_zxbcdt(q, zxbcdt)
        cv, conv_state = conv(q, xbc, state.conv)
        xa = conv_act(q, cv)
        x, B, C = self._split_xbc(xa)
        dt = dt_softplus(q, dt_raw)
        dA = decay(q, dt)
        y, h = scan(q, x, B, C, dt, dA, state.ssm)
        y = y.reshape(q.cfg.d_inner)
        g = gate(q, y, z)
        a_out = out_norm(q, g)
        mo = out_proj(q, a_out)
        out = residual(q, u, mo)
        if trace is not None:
            trace.update(
                norm=a_in, in_proj=zxbcdt, z=z, xbc=xbc, dt_raw=dt_raw, conv=cv, conv_act=xa,
                xbc_act=xa, dt=dt, dA=dA, ssm=h, y=y, gate=g, out_norm=a_out, mixer_out=mo,
                layer_out=out,
            )
        return out, GoldenState(conv_state, h)

    def sequence(
        self, u: np.ndarray, state: GoldenState | None = None
    ) -> tuple[np.ndarray, GoldenState]:
        """A sequence u (L, D) -> (L, D): token-parallel stages vectorised, the scan in order.

        Bit-identical to calling :meth:`step` L times.
        """
        q = self.q
        u = _ints(u, "u")
        if u.ndim != 2 or u.shape[1] != q.cfg.d_model:
            raise ValueError(f"u must have shape (L, {q.cfg.d_model}), not {u.shape}")
        state = state or self.initial_state()
        z, xbc, dt_raw = split_zxbcdt(q, in_proj(q, block_norm(q, u)))
        cv, conv_state = conv(q, xbc, state.conv)
        x, B, C = self._split_xbc(conv_act(q, cv))
        dt = dt_softplus(q, dt_raw)
        dA = decay(q, dt)
        h = state.ssm
        ys = np.empty((u.shape[0], q.cfg.d_inner), np.int64)
        for t in range(u.shape[0]):
            y, h = scan(q, x[t], B[t], C[t], dt[t], dA[t], h)
            ys[t] = y.reshape(-1)
        out = residual(q, u, out_proj(q, out_norm(q, gate(q, ys, z))))
        return out, GoldenState(conv_state, h)
