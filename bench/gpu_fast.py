"""Tuned GPU decode of the 2.7B shape: FP16 weights, or 1-bit FBI-Linear weights from packed bits.

``python -m bench.gpu_fast`` decodes greedily, at batch 1 and a batch sweep, with the structure
of the float reference :class:`model.reference.lm.BiMambaLM` (embedding, ``n_layer`` blocks of
:mod:`model.reference.layer`, final RMSNorm, tied LM head) and as few kernels per layer as it
can: three Triton kernels a layer.

1. **in_proj**: one matrix-vector kernel whose input is the residual stream ``u``; the block's
   RMSNorm is folded in (``norm.weight`` multiplies ``u`` as it is loaded, the row's
   ``rsqrt(mean(u^2) + eps)``, summed in the same loop, multiplies the output).
2. **mixer**: one fused kernel for the depthwise causal conv (its state a ring of ``d_conv``
   slots, so no shift and no race between programs), SiLU, ``dt = softplus(dt_raw + dt_bias)``,
   ``dA = exp(-dt exp(A_log))``, the SSM state update ``h = dA h + dt x B^T``, the read-out
   ``y = h C + D x``, the gate ``y * silu(z)``, and the sum of squares of the gated output (by
   atomics) that the gated RMSNorm needs.
3. **out_proj**: one matrix-vector kernel on the gated output with the gated RMSNorm folded in
   (``mixer.norm.weight`` on the input, the row's rsqrt from the sums of step 2 on the output)
   and the residual add ``u += ...`` in its epilogue.

Around the layers: one kernel that gathers the embedding rows (and clears the sums, and moves
the ring's position), the final RMSNorm + LM head as one more matrix-vector kernel, and
``torch.argmax``: 3 n_layer + 3 kernels, the whole step captured as ONE CUDA graph and
replayed. The kernels can be launched with programmatic dependent launch (PDL, Hopper): each
lets the next start early and waits for the previous one (``griddepcontrol``) before touching
anything but weights, so a projection's first weight tile is in flight while the previous kernel
drains; the step is timed with and without it and the faster kept (with won at batch 1).

At batch 1 every projection multiplies and adds in float32 registers (two weight tiles in
flight). At batch > 1 a projection runs either one batch row a program the same way (the
programs of a weight tile side by side, so only the first reads it from HBM), or as tensor-core
dots over the whole batch (x in FP16 for FP16 weights; for the +-1 signs x as two FP16 halves,
hi + lo / 2048, about float32 precision). Which, and each kernel's tiles, are picked on the
device before capture by timing a few candidates as CUDA graphs over all layers, each candidate
first checked against the PyTorch algebra (:func:`_proj_torch`).

Weights (``--weights``):

* ``fp16``: dense FP16 in_proj/out_proj (the float Mamba-2 of the same shape, and what a float
  framework holds after materialising FBI's ``W_hat``).
* ``1-bit``: in_proj/out_proj are FBI-Linear, ``W_hat = alpha * sign(W) + beta`` with
  ``alpha``, ``beta`` one per input column (:class:`model.reference.layer.FBILinear`), stored as
  packed sign bits, 32 to an int32 word (bit ``j`` of word ``i`` of row ``n`` is 1 iff
  ``W[n, 32 i + j] >= 0``, FBI's sign with 0 -> +1), and ``alpha``, ``beta`` in FP16. The kernel
  computes ``W_hat x = S (alpha . x) + (beta . x)`` straight from the bits (``S`` the +-1 signs),
  never materialising ``W_hat``. Everything else (conv, norms, ``dt_bias``, ``A_log``, ``D``,
  the embedding and the tied LM head) stays FP16, as in the float model.

State is FP16 in both (the conv ring and the SSM state, as :mod:`bench.gpu_decode`); the
activation vectors between kernels are float32, and every kernel computes in float32.

The bytes of a step are the weights read (every projection, conv, norm and per-head vector,
the LM head) plus the state read and written; the share of HBM bandwidth is those bytes over
the step time over 4.8 TB/s, the H200's HBM3e peak by NVIDIA's H200 datasheet. Energy comes
from the board's NVML energy counter as in :mod:`bench.gpu_decode`, whose record fields,
check and NVML helpers this module reuses.

Before measuring, each weight kind's decode is checked against :class:`BiMambaLM` in float32
with the same (FP16-rounded) weights: the logits and the residual stream's sum of mixer outputs
over a few steps at batch 1 and 2 (on a GPU with and without PDL), within :data:`TOL_GPU`
(FP16 state) or :data:`TOL_CPU`. On a GPU each projection kernel is also checked alone against
``FBILinear(RMSNorm(x))`` (or the dense layer) in float64.

Records: the fields of :data:`bench.gpu_decode.RECORD_FIELDS` plus ``weights``,
``bandwidth_fraction``, ``bytes_per_token`` and more. The batch-1 records live in
``bench/results/`` (read by the energy report), the sweeps in ``bench/results/sweep/``.

``--device cpu`` runs the same decomposition in plain PyTorch (float32 weights and state, no
Triton, no CUDA graph, no power): for tests and quick checks on the small presets.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.gpu_decode import (SCHEMA, _idle_power, _Nvml, _positive_seconds, _seed,
                              check_record, timed_decode, timing_fields)
from rtl.cli import int_in

try:  # CI has no GPU and may have no Triton: only the cuda path needs it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None
    tl = None

__all__ = ["WEIGHT_KINDS", "HBM_BYTES_PER_S", "HBM_SOURCE", "pack_signs", "unpack_signs",
           "fbi_weight_from_packed", "fbi_linear_packed", "DecodeWeights", "prepare_weights",
           "step_bytes", "TorchDecoder", "TritonDecoder", "build_models", "check_decoder",
           "main"]

PRESET_NAMES = ("780M", "1.3B", "2.7B", "tiny", "small")  # model.config.PRESETS
WEIGHT_KINDS = ("fp16", "1-bit")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
MAX_BATCH = 1024
HBM_BYTES_PER_S = 4.8e12
HBM_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet: 141 GB HBM3e at 4.8 TB/s"
PERTURB = 0.3  # norms and D: 1 + PERTURB * N(0, 1), as a trained checkpoint would have them
CHECK_BATCH = 2
# Stated tolerances of the end-to-end check (relative L2 error against BiMambaLM in float32 with
# the same weights). FP16 state on the GPU: a few 1e-3 is expected; float32 on the CPU: ~1e-6.
TOL_GPU = {"logits": 1e-2, "mixer_sum": 3e-2}
TOL_CPU = {"logits": 1e-4, "mixer_sum": 1e-4}
TOL_TILE = 2e-3  # a tuning candidate against the PyTorch algebra (FP16 x in the FP16 dots)


# -- packed sign bits --------------------------------------------------------------------


def pack_signs(w: Tensor) -> Tensor:
    """FBI's signs of ``w`` (d_out, d_in) as int32 words (d_out, ceil(d_in / 32)).

    Bit ``j`` of word ``i`` of row ``n`` is 1 iff ``w[n, 32 i + j] >= 0`` (sign(0) = +1, as
    :func:`model.reference.layer.binarize_ste`); the padding bits past ``d_in`` are 0.

    Raises
    ------
    ValueError
        If ``w`` is not 2-D.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D (d_out, d_in), not of shape {tuple(w.shape)}")
    n, k = w.shape
    kw = -(-k // 32)
    bits = torch.zeros(n, kw * 32, dtype=torch.int64, device=w.device)
    bits[:, :k] = (w >= 0).to(torch.int64)
    words = (bits.view(n, kw, 32) << torch.arange(32, device=w.device)).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words)  # two's complement int32
    return words.to(torch.int32).contiguous()


def unpack_signs(packed: Tensor, d_in: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The +-1 signs (d_out, d_in) of :func:`pack_signs`' words, in ``dtype``.

    Raises
    ------
    ValueError
        If ``packed`` is not int32 (d_out, ceil(d_in / 32)).
    """
    if packed.dtype != torch.int32 or packed.dim() != 2 or packed.shape[1] != -(-d_in // 32):
        raise ValueError(f"packed must be int32 of shape (d_out, {-(-d_in // 32)}), not "
                         f"{packed.dtype} {tuple(packed.shape)}")
    shifts = torch.arange(32, device=packed.device)
    bits = (packed.to(torch.int64)[:, :, None] >> shifts) & 1
    bits = bits.reshape(packed.shape[0], -1)[:, :d_in]
    return torch.where(bits != 0, 1.0, -1.0).to(dtype)


def fbi_weight_from_packed(packed: Tensor, wscale: Tensor, wbias: Tensor) -> Tensor:
    """``W_hat = alpha * sign(W) + beta`` (d_out, d_in) from the packed signs, with the very
    expression of :meth:`FBILinear.effective_weight` (so equal to it bit for bit)."""
    return wscale * unpack_signs(packed, wscale.shape[-1], wscale.dtype) + wbias


def fbi_linear_packed(x: Tensor, packed: Tensor, wscale: Tensor, wbias: Tensor) -> Tensor:
    """``x @ W_hat.T`` as the kernel computes it: ``S (alpha . x) + (beta . x)``, (..., d_in)
    -> (..., d_out), in ``x``'s dtype (a torch reference of the Triton kernel's algebra)."""
    a = wscale.reshape(-1).to(x.dtype)
    b = wbias.reshape(-1).to(x.dtype)
    s = unpack_signs(packed, a.shape[0], x.dtype)
    return (x * a) @ s.T + (x * b).sum(-1, keepdim=True)


# -- the model in decode form --------------------------------------------------------------


@dataclass
class Proj:
    """One projection: dense ``w`` (d_out, d_in), or packed signs ``w`` (int32) with ``a``
    (alpha) and ``b`` (beta) of shape (d_in,)."""

    w: Tensor
    d_in: int
    d_out: int
    a: Tensor | None = None
    b: Tensor | None = None

    @property
    def binary(self) -> bool:
        return self.a is not None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.w, self.a, self.b)
                   if t is not None)


@dataclass
class Layer:
    norm: Tensor  # (D,)
    in_proj: Proj  # D -> F
    conv_w: Tensor  # (C, K)
    conv_b: Tensor  # (C,)
    dt_bias: Tensor  # (H,)
    A_log: Tensor  # (H,)
    D: Tensor  # (H,)
    gnorm: Tensor  # (E,)
    out_proj: Proj  # E -> D


@dataclass
class DecodeWeights:
    cfg: Any
    kind: str  # "fp16" or "1-bit"
    emb: Tensor  # (V, D), also the LM head
    norm_f: Tensor  # (D,)
    layers: list[Layer]

    def nbytes_layer_weights(self) -> int:
        n = 0
        for ly in self.layers:
            n += ly.in_proj.nbytes() + ly.out_proj.nbytes()
            n += sum(t.numel() * t.element_size() for t in (
                ly.norm, ly.conv_w, ly.conv_b, ly.dt_bias, ly.A_log, ly.D, ly.gnorm))
        return n


def prepare_weights(lm: Any, dtype: torch.dtype) -> DecodeWeights:
    """The decode form of ``lm`` (a :class:`BiMambaLM`): parameters in ``dtype`` (on ``lm``'s
    device); FBI-Linear projections of a binary ``lm`` as packed signs and alpha, beta."""
    c = lm.cfg
    layers = []
    for blk in lm.backbone.layers:
        m = blk.mixer

        def proj(mod: Any) -> Proj:
            if m.binary:
                return Proj(pack_signs(mod.weight.detach()), mod.d_in, mod.d_out,
                            mod.wscale.detach().reshape(-1).to(dtype).contiguous(),
                            mod.wbias.detach().reshape(-1).to(dtype).contiguous())
            return Proj(mod.weight.detach().to(dtype).contiguous(), mod.in_features,
                        mod.out_features)

        layers.append(Layer(
            norm=blk.norm.weight.detach().to(dtype).contiguous(),
            in_proj=proj(m.in_proj),
            conv_w=m.conv1d.weight.detach()[:, 0, :].to(dtype).contiguous(),
            conv_b=m.conv1d.bias.detach().to(dtype).contiguous(),
            dt_bias=m.dt_bias.detach().to(dtype).contiguous(),
            A_log=m.A_log.detach().to(dtype).contiguous(),
            D=m.D.detach().to(dtype).contiguous(),
            gnorm=m.norm.weight.detach().to(dtype).contiguous(),
            out_proj=proj(m.out_proj),
        ))
        assert layers[-1].conv_w.shape == (c.conv_dim, c.d_conv)
    return DecodeWeights(c, "1-bit" if lm.binary else "fp16",
                         lm.backbone.embedding.weight.detach().to(dtype).contiguous(),
                         lm.backbone.norm_f.weight.detach().to(dtype).contiguous(), layers)


def step_bytes(w: DecodeWeights, batch: int, state_itemsize: int) -> dict[str, int]:
    """Bytes of one decode step at ``batch``: the weights read once (every layer's, the LM
    head's, the embedding rows gathered) and the state read and written (conv ring: K - 1
    slots read, one written; SSM state read and written). The activation vectors between
    kernels (a few hundred kB, L2-resident) are left out."""
    c = w.cfg
    per_row_state = c.n_layer * state_itemsize * (
        (c.d_conv - 1) * c.conv_dim + c.conv_dim + 2 * c.state_size)
    return {
        "layer_weights": w.nbytes_layer_weights(),
        "lm_head": w.emb.numel() * w.emb.element_size() + w.norm_f.numel()
                   * w.norm_f.element_size(),
        "embedding_rows": batch * c.d_model * w.emb.element_size(),
        "state": batch * per_row_state,
    }


class State:
    """Decode state of a batch, on static buffers (the graph reads and writes them in place).

    ``conv`` (L, B, C, K) is a ring: the input of step ``t`` (counted from 0) is in slot
    ``t mod K``; ``pos`` holds the step being decoded (-1 before the first), moved on by the
    step itself."""

    def __init__(self, cfg: Any, batch: int, device: str, state_dtype: torch.dtype) -> None:
        c = cfg
        kw = dict(device=device)
        self.batch = batch
        self.tok = torch.zeros(batch, dtype=torch.long, **kw)
        self.h = torch.zeros(batch, c.d_model, dtype=torch.float32, **kw)
        self.conv = torch.zeros(c.n_layer, batch, c.conv_dim, c.d_conv, dtype=state_dtype, **kw)
        self.ssm = torch.zeros(c.n_layer, batch, c.nheads, c.headdim, c.d_state,
                               dtype=state_dtype, **kw)
        self.pos = torch.full((1,), -1, dtype=torch.int32, **kw)
        self.ssq = torch.zeros(c.n_layer, batch, dtype=torch.float32, **kw)
        self.zx = torch.zeros(batch, c.d_in_proj, dtype=torch.float32, **kw)
        self.g = torch.zeros(batch, c.d_inner, dtype=torch.float32, **kw)
        self.logits = torch.zeros(batch, c.vocab_size, dtype=torch.float32, **kw)


# -- plain PyTorch decode (the CPU path, and the algebra the kernels follow) ----------------


def _proj_torch(x: Tensor, nw: Tensor, p: Proj, eps: float) -> Tensor:
    """``p(RMSNorm(x))`` as the kernels fold it: the weight on the input, the row's rsqrt on
    the output. x: (B, d_in) float32 -> (B, d_out) float32."""
    s = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    xn = x * nw.float()
    if p.binary:
        y = fbi_linear_packed(xn, p.w, p.a.float(), p.b.float())
    else:
        y = xn @ p.w.float().T
    return y * s


class TorchDecoder:
    """One greedy decode step of :class:`DecodeWeights` in plain PyTorch, on a :class:`State`."""

    name = "torch"

    def __init__(self, w: DecodeWeights, s: State) -> None:
        self.w, self.s = w, s

    def kernels_per_step(self) -> None:
        return None

    def step(self) -> None:
        w, s, c = self.w, self.s, self.w.cfg
        E, N, H, P, K = c.d_inner, c.d_state, c.nheads, c.headdim, c.d_conv
        s.pos += 1
        slots = ((s.pos + 1 + torch.arange(K - 1, device=s.pos.device)) % K).long()
        cur = (s.pos % K).long()
        h = w.emb.index_select(0, s.tok).float()
        for i, ly in enumerate(w.layers):
            zx = _proj_torch(h, ly.norm, ly.in_proj, c.rms_eps)
            z, xbc, dtr = torch.split(zx, [E, c.conv_dim, H], dim=-1)
            ring = s.conv[i]  # (B, C, K)
            cw = ly.conv_w.float()
            co = ((ring.index_select(2, slots).float() * cw[:, :K - 1]).sum(-1)
                  + cw[:, K - 1] * xbc + ly.conv_b.float())
            ring.index_copy_(2, cur, xbc[..., None].to(ring.dtype))
            x, Bm, Cm = torch.split(F.silu(co), [E, N, N], dim=-1)
            x = x.reshape(-1, H, P)
            dt = F.softplus(dtr + ly.dt_bias.float())
            dA = torch.exp(dt * -torch.exp(ly.A_log.float()))
            st = (dA[:, :, None, None] * s.ssm[i].float()
                  + (dt[:, :, None] * x)[..., None] * Bm[:, None, None, :])
            s.ssm[i].copy_(st)
            y = torch.einsum("bhpn,bn->bhp", st, Cm) + ly.D.float()[:, None] * x
            g = y.reshape(-1, E) * F.silu(z)
            h = h + _proj_torch(g, ly.gnorm, ly.out_proj, c.rms_eps)
        s.h.copy_(h)
        s.logits.copy_(_proj_torch(h, w.norm_f, Proj(w.emb, c.d_model, c.vocab_size),
                                   c.rms_eps))
        s.tok.copy_(torch.argmax(s.logits, dim=-1))


# -- Triton kernels ------------------------------------------------------------------------
#
# Every kernel can be launched with programmatic dependent launch (PDL, Hopper): it then lets
# the next kernel start early (gdc_launch_dependents) and waits for the previous one
# (gdc_wait) before it reads or writes anything but weights, so the next projection's first
# weight tile is already in flight while the previous kernel drains.

if triton is not None:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    @triton.jit
    def _pdl_start(PDL: tl.constexpr):
        if PDL:
            gdc_launch_dependents()

    @triton.jit
    def _pdl_wait(PDL: tl.constexpr):
        if PDL:
            gdc_wait()

    @triton.jit
    def _begin_kernel(tok_ptr, emb_ptr, h_ptr, ssq_ptr, pos_ptr, D, L, n_batch,
                      BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, PDL: tl.constexpr):
        """h[b] = emb[tok[b]] (float32); ssq[:, b] = 0; program 0 moves pos on by one."""
        _pdl_start(PDL)
        _pdl_wait(PDL)
        b = tl.program_id(0)
        t = tl.load(tok_ptr + b)
        for d0 in range(0, D, BLOCK_D):
            r = d0 + tl.arange(0, BLOCK_D)
            m = r < D
            v = tl.load(emb_ptr + t * D + r, mask=m, other=0.0).to(tl.float32)
            tl.store(h_ptr + b * D + r, v, mask=m)
        for l0 in range(0, L, BLOCK_L):
            rl = l0 + tl.arange(0, BLOCK_L)
            tl.store(ssq_ptr + rl * n_batch + b, tl.zeros([BLOCK_L], tl.float32), mask=rl < L)
        if b == 0:
            tl.store(pos_ptr, tl.load(pos_ptr) + 1)

    @triton.jit
    def _wtile(w_ptr, rn, nmask, k0, k_hi, KW, K, BITS: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, UNPACK: tl.constexpr):
        """The weight tile of rows ``rn``, columns k0 .. k0 + BLOCK_K (masked past k_hi): FP16
        values (BITS 0), or the raw int32 words (BITS 1, UNPACK 0: BLOCK_K / 32 a row; UNPACK
        1: each column's word, the same address 32 times, served by the cache)."""
        if BITS:
            if UNPACK == 0:
                rw = k0 // 32 + tl.arange(0, BLOCK_K // 32)
                t = tl.load(w_ptr + rn[:, None] * KW + rw[None, :],
                            mask=nmask[:, None] & (rw[None, :] * 32 < k_hi), other=0)
            else:
                rk = k0 + tl.arange(0, BLOCK_K)
                t = tl.load(w_ptr + rn[:, None] * KW + (rk // 32)[None, :],
                            mask=nmask[:, None] & (rk[None, :] < k_hi), other=0)
        else:
            rk = k0 + tl.arange(0, BLOCK_K)
            t = tl.load(w_ptr + rn[:, None] * K + rk[None, :],
                        mask=nmask[:, None] & (rk[None, :] < k_hi), other=0.0)
        return t

    @triton.jit
    def _bits(t, k0, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNPACK: tl.constexpr):
        """0/1 sign bits (BLOCK_N, BLOCK_K) of a word tile of :func:`_wtile`."""
        if UNPACK == 0:
            b = (t[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
            b = tl.reshape(b, [BLOCK_N, BLOCK_K])
        else:
            rk = k0 + tl.arange(0, BLOCK_K)
            b = (t >> (rk % 32)[None, :]) & 1
        return b

    @triton.jit
    def _proj_kernel(x_ptr, nw_ptr, ssq_ptr, w_ptr, a_ptr, b_ptr, out_ptr,
                     N, K, KW, K_CHUNK, n_batch, eps,
                     BITS: tl.constexpr, SSQ: tl.constexpr, ACCUM: tl.constexpr,
                     ATOMIC: tl.constexpr, DOT: tl.constexpr, UNPACK: tl.constexpr,
                     SPLIT: tl.constexpr, HILO: tl.constexpr, PDL: tl.constexpr,
                     ROWFIRST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_B: tl.constexpr):
        """out[b, n] (+)= rsqrt(ss_b / K + eps) * (W (nw . x_b))[n], W dense FP16 (BITS 0) or
        FBI packed signs with alpha, beta (BITS 1: S (alpha . nw . x) + beta . (nw . x)).

        x (n_batch, K) float32; out (n_batch, N) float32. ss_b: the sum of x_b^2 taken in the
        loop (SSQ 0; needs the whole K in one program) or read from ssq[b] (SSQ 1). ACCUM: add
        to out (ATOMIC: by atomics, for a K split over programs). SPLIT 0: one program takes
        the whole K (bound K, whose divisibility the compiler knows, so masked loads stay
        vectorised); 1: K_CHUNK columns a program.

        DOT 0 (batch 1): one batch row a program, multiply-add in float32 registers, the next
        weight tile loaded while this one is used (two tiles in flight). DOT 1: BLOCK_B batch
        rows, tensor-core dots x (BLOCK_B, BLOCK_K) . W^T with x in FP16 (HILO 0) or split into
        two FP16 halves hi + lo / 2048 (HILO 1: about float32 precision).
        Grid: (cdiv(N, BLOCK_N), K splits, batch blocks), or with ROWFIRST (DOT 0 at batch > 1,
        one row a program) (batch, cdiv(N, BLOCK_N), K splits), so that the programs of one
        weight tile run side by side and the rows after the first read it from L2."""
        _pdl_start(PDL)
        if ROWFIRST:
            pid_b = tl.program_id(0)
            pid_n = tl.program_id(1)
            pid_k = tl.program_id(2)
        else:
            pid_n = tl.program_id(0)
            pid_k = tl.program_id(1)
            pid_b = tl.program_id(2)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        if SPLIT:
            k_lo = pid_k * K_CHUNK
            k_hi = tl.minimum(K, k_lo + K_CHUNK)
        else:
            k_lo = 0
            k_hi = K
        if DOT == 0:
            b = pid_b
            acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            ss = tl.zeros([BLOCK_K], tl.float32)
            bx = tl.zeros([BLOCK_K], tl.float32)
            wt = _wtile(w_ptr, rn, nmask, k_lo, k_hi, KW, K, BITS, BLOCK_N, BLOCK_K, UNPACK)
            _pdl_wait(PDL)  # the first weight tile is in flight across the wait
            for k0 in range(k_lo, k_hi, BLOCK_K):
                wn = _wtile(w_ptr, rn, nmask, k0 + BLOCK_K, k_hi, KW, K, BITS, BLOCK_N,
                            BLOCK_K, UNPACK)
                rk = k0 + tl.arange(0, BLOCK_K)
                km = rk < k_hi
                x = tl.load(x_ptr + b * K + rk, mask=km, other=0.0)
                if SSQ == 0:
                    ss += x * x
                xn = x * tl.load(nw_ptr + rk, mask=km, other=0.0).to(tl.float32)
                if BITS:
                    xa = xn * tl.load(a_ptr + rk, mask=km, other=0.0).to(tl.float32)
                    bx += xn * tl.load(b_ptr + rk, mask=km, other=0.0).to(tl.float32)
                    bits = _bits(wt, k0, BLOCK_N, BLOCK_K, UNPACK)
                    acc += tl.where(bits != 0, xa[None, :], -xa[None, :])
                else:
                    acc += wt.to(tl.float32) * xn[None, :]
                wt = wn
            y = tl.sum(acc, axis=1)
            if BITS:
                y += tl.sum(bx, axis=0)
            if SSQ == 0:
                sc = tl.rsqrt(tl.sum(ss, axis=0) / K + eps)
            else:
                sc = tl.rsqrt(tl.load(ssq_ptr + b) / K + eps)
            y = y * sc
            optr = out_ptr + b * N + rn
            if ACCUM:
                if ATOMIC:
                    tl.atomic_add(optr, y, mask=nmask)
                else:
                    tl.store(optr, tl.load(optr, mask=nmask, other=0.0) + y, mask=nmask)
            else:
                tl.store(optr, y, mask=nmask)
        else:
            _pdl_wait(PDL)
            rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
            bm = rb < n_batch
            acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
            acc2 = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
            ss = tl.zeros([BLOCK_B], tl.float32)
            bx = tl.zeros([BLOCK_B], tl.float32)
            for k0 in range(k_lo, k_hi, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                km = rk < k_hi
                xt = tl.load(x_ptr + rb[:, None] * K + rk[None, :],
                             mask=bm[:, None] & km[None, :], other=0.0)  # (BLOCK_B, BLOCK_K)
                if SSQ == 0:
                    ss += tl.sum(xt * xt, axis=1)
                xn = xt * tl.load(nw_ptr + rk, mask=km, other=0.0).to(tl.float32)[None, :]
                wt = _wtile(w_ptr, rn, nmask, k0, k_hi, KW, K, BITS, BLOCK_N, BLOCK_K, UNPACK)
                if BITS:
                    xa = xn * tl.load(a_ptr + rk, mask=km, other=0.0).to(tl.float32)[None, :]
                    bx += tl.sum(xn * tl.load(b_ptr + rk, mask=km,
                                              other=0.0).to(tl.float32)[None, :], axis=1)
                    bits = _bits(wt, k0, BLOCK_N, BLOCK_K, UNPACK)
                    w16 = tl.where(bits != 0, 1.0, -1.0).to(tl.float16)
                else:
                    xa = xn
                    w16 = wt.to(tl.float16)
                hi = xa.to(tl.float16)
                acc = tl.dot(hi, tl.trans(w16), acc)
                if HILO:  # x = hi + lo / 2048, lo scaled out of FP16's subnormals
                    lo = ((xa - hi.to(tl.float32)) * 2048.0).to(tl.float16)
                    acc2 = tl.dot(lo, tl.trans(w16), acc2)
            if HILO:
                acc += acc2 * (1.0 / 2048.0)
            if BITS:
                acc += bx[:, None]
            if SSQ == 0:
                sc = tl.rsqrt(ss / K + eps)
            else:
                sc = tl.rsqrt(tl.load(ssq_ptr + rb, mask=bm, other=0.0) / K + eps)
            y = acc * sc[:, None]
            optr = out_ptr + rb[:, None] * N + rn[None, :]
            om = bm[:, None] & nmask[None, :]
            if ACCUM:
                if ATOMIC:
                    tl.atomic_add(optr, y, mask=om)
                else:
                    tl.store(optr, tl.load(optr, mask=om, other=0.0) + y, mask=om)
            else:
                tl.store(optr, y, mask=om)

    @triton.jit
    def _conv_silu(ring_ptr, cw_ptr, cb_ptr, ch, xin, pos, KC: tl.constexpr):
        """SiLU of the depthwise causal conv of channels ``ch``: the K - 1 past inputs from the
        ring (window index k in slot (pos + 1 + k) mod K) and this step's ``xin``."""
        acc = (tl.load(cb_ptr + ch).to(tl.float32)
               + tl.load(cw_ptr + ch * KC + (KC - 1)).to(tl.float32) * xin)
        for k in tl.static_range(KC - 1):
            slot = (pos + 1 + k) % KC
            acc += (tl.load(cw_ptr + ch * KC + k).to(tl.float32)
                    * tl.load(ring_ptr + ch * KC + slot).to(tl.float32))
        return acc * tl.sigmoid(acc)

    @triton.jit
    def _mixer_kernel(zx_ptr, cw_ptr, cb_ptr, ring_ptr, pos_ptr, dtb_ptr, alog_ptr, d_ptr,
                      ssm_ptr, g_ptr, ssq_ptr,
                      E: tl.constexpr, N: tl.constexpr, H: tl.constexpr, P: tl.constexpr,
                      BP: tl.constexpr, KC: tl.constexpr, PDL: tl.constexpr):
        """Conv + SiLU + SSM step + D skip + gate of BP channels of one head of one batch row.
        Grid: (H * P / BP, batch). Writes g (B, E) and adds sum(g^2) to ssq[b]."""
        _pdl_start(PDL)
        _pdl_wait(PDL)
        pid = tl.program_id(0)
        b = tl.program_id(1)
        h = pid // (P // BP)
        pb = pid % (P // BP)
        C: tl.constexpr = E + 2 * N
        FF: tl.constexpr = 2 * E + 2 * N + H
        pos = tl.load(pos_ptr)
        cur = ((pos % KC) + KC) % KC
        zx = zx_ptr + b * FF
        ring = ring_ptr + b * C * KC
        cx = h * P + pb * BP + tl.arange(0, BP)
        xin = tl.load(zx + E + cx)
        xc = _conv_silu(ring, cw_ptr, cb_ptr, cx, xin, pos, KC)
        cB = E + tl.arange(0, N)
        bin_ = tl.load(zx + E + cB)
        Bv = _conv_silu(ring, cw_ptr, cb_ptr, cB, bin_, pos, KC)
        cC = E + N + tl.arange(0, N)
        cin = tl.load(zx + E + cC)
        Cv = _conv_silu(ring, cw_ptr, cb_ptr, cC, cin, pos, KC)
        # This step's inputs go to slot `cur`, which no program reads in this step.
        tl.store(ring + cx * KC + cur, xin.to(ring_ptr.dtype.element_ty))
        first = pid == 0
        tl.store(ring + cB * KC + cur, bin_.to(ring_ptr.dtype.element_ty),
                 mask=(cB >= 0) & first)
        tl.store(ring + cC * KC + cur, cin.to(ring_ptr.dtype.element_ty),
                 mask=(cC >= 0) & first)
        v = tl.load(zx + E + C + h) + tl.load(dtb_ptr + h).to(tl.float32)
        dt = tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(tl.minimum(v, 20.0))))
        dA = tl.exp(dt * -tl.exp(tl.load(alog_ptr + h).to(tl.float32)))
        rp = pb * BP + tl.arange(0, BP)
        sp = ssm_ptr + ((b * H + h) * P + rp[:, None]) * N + tl.arange(0, N)[None, :]
        st = tl.load(sp).to(tl.float32)
        st = dA * st + (dt * xc)[:, None] * Bv[None, :]
        tl.store(sp, st.to(ssm_ptr.dtype.element_ty))
        y = tl.sum(st * Cv[None, :], axis=1) + tl.load(d_ptr + h).to(tl.float32) * xc
        z = tl.load(zx + cx)
        g = y * z * tl.sigmoid(z)
        tl.store(g_ptr + b * E + cx, g)
        tl.atomic_add(ssq_ptr + b, tl.sum(g * g, axis=0))


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class ProjCfg:
    """Tiles of one projection launch: rows a program, K a loop step, programs along K (split,
    ATOMIC accumulation), warps, pipeline stages, and the sign-unpacking variant (1-bit)."""

    block_n: int
    block_k: int
    split: int = 1
    warps: int = 4
    unpack: int = 0
    stages: int = 2
    rowwise: bool = False  # batch > 1: one batch row a program, float32 registers, no dots

    def text(self) -> str:
        return (f"{self.block_n}x{self.block_k}" + (f"/split{self.split}" if self.split > 1
                                                     else "")
                + f"/w{self.warps}" + (f"/s{self.stages}" if self.stages != 2 else "")
                + (f"/u{self.unpack}" if self.unpack else "")
                + ("/rowwise" if self.rowwise else ""))


def _candidates(role: str, binary: bool, batch: int) -> list[ProjCfg]:
    """The tile candidates timed on the device for one projection (role in/out/head); the
    first is the default."""
    P = ProjCfg
    if binary:
        one = [P(32, 256), P(16, 512), P(32, 128), P(64, 128), P(16, 256, warps=2),
               P(32, 256, warps=8)]
        if role == "out":
            one += [P(16, 512, split=2), P(32, 256, split=2), P(16, 256, split=4)]
    else:
        one = [P(4, 512), P(8, 512), P(4, 1024), P(2, 1024, warps=2), P(4, 256, warps=2),
               P(8, 1024, warps=8), P(32, 128)]
        if role == "out":
            one += [P(4, 512, split=2), P(8, 512, split=2), P(4, 1024, split=2)]
    if batch == 1:
        return one
    rows = [P(c.block_n, c.block_k, c.split, c.warps, rowwise=True) for c in one[:3]]
    if binary:
        c = [P(128, 128, warps=8, stages=3), P(64, 128, stages=3), P(128, 64, stages=3)]
    else:
        c = [P(128, 64, stages=3), P(256, 64, warps=8, stages=3), P(128, 128, warps=8, stages=3),
             P(64, 64, stages=4)]
    if role == "out":
        c += [P(32, 256, stages=3), P(64, 128, split=2, stages=3), P(128, 64, split=4, stages=3)]
    return c + (rows if batch <= 8 else [])


def proj_how(tiles: dict[str, str], batch: int, binary: bool) -> str:
    """How each projection ran, from its tiles' text (:meth:`ProjCfg.text`), for a record's
    method."""
    names = {"in": "in_proj", "out": "out_proj", "head": "LM head"}
    parts = []
    for r in ("in", "out", "head"):
        bits = binary and r != "head"
        if batch == 1 or tiles[r].endswith("/rowwise"):
            parts.append(
                f"{names[r]} as "
                + ("float32 adds of +-(alpha . x) picked by the sign bits" if bits
                   else "float32 multiply-adds")
                + " in registers, two weight tiles in flight"
                + ("" if batch == 1 else ", one batch row a program (the programs of one "
                   "weight tile side by side, so the rows after the first read it from L2)"))
        else:
            parts.append(f"{names[r]} as tensor-core dots over the whole batch, x in "
                         + ("two FP16 halves (hi + lo / 2048, about float32 precision)"
                            if bits else "FP16") + ", float32 accumulation")
    return f"at batch {batch}: " + "; ".join(parts) + "; "


def _default_cfg(role: str, binary: bool, batch: int) -> ProjCfg:
    return _candidates(role, binary, batch)[0]


class TritonDecoder:
    """One greedy decode step of :class:`DecodeWeights` as Triton kernels on a :class:`State`
    (cuda only): 1 + 3 n_layer + 1 Triton launches and one ``torch.argmax``. ``pdl``: launch
    with programmatic dependent launch (Hopper)."""

    name = "triton"

    def __init__(self, w: DecodeWeights, s: State, cfgs: dict[str, ProjCfg] | None = None,
                 bp: int | None = None, pdl: bool = False) -> None:
        if triton is None:
            raise RuntimeError("the Triton decoder needs triton (import failed)")
        self.w, self.s = w, s
        binary = w.kind == "1-bit"
        self.cfgs = {r: _default_cfg(r, binary and r != "head", s.batch)
                     for r in ("in", "out", "head")}
        if cfgs:
            self.cfgs.update(cfgs)
        c = w.cfg
        self.bp = bp or min(16, c.headdim)
        self.pdl = pdl

    def kernels_per_step(self) -> int:
        return 3 + 3 * self.w.cfg.n_layer

    def _launch(self) -> dict:
        return {"launch_pdl": True} if self.pdl else {}

    def proj(self, x: Tensor, nw: Tensor, p: Proj, out: Tensor, cfg: ProjCfg, ssq: Tensor | None,
             accum: bool) -> None:
        """out (+)= p(RMSNorm(x)) with the folding of :func:`_proj_kernel`."""
        batch = x.shape[0]
        dot = batch > 1 and not cfg.rowwise
        rowfirst = batch > 1 and cfg.rowwise
        block_b = min(64, max(16, _pow2(batch))) if dot else 1
        split = cfg.split
        if ssq is None and split != 1:
            raise ValueError("a K split needs the sums of squares from ssq")
        if split > 1 and not accum:
            raise ValueError("a K split accumulates into out")
        k = p.d_in
        per = -(-k // split)
        chunk = -(-per // cfg.block_k) * cfg.block_k
        kw = p.w.shape[1] if p.binary else k
        grid = (triton.cdiv(p.d_out, cfg.block_n), triton.cdiv(k, chunk),
                triton.cdiv(batch, block_b))
        split_k = grid[1] > 1
        if rowfirst:
            grid = (batch, grid[0], grid[1])
        _proj_kernel[grid](
            x, nw, x if ssq is None else ssq, p.w, p.a if p.binary else nw,
            p.b if p.binary else nw, out, p.d_out, k, kw, chunk, batch, self.w.cfg.rms_eps,
            BITS=int(p.binary), SSQ=0 if ssq is None else 1, ACCUM=int(accum),
            ATOMIC=int(accum and split_k), DOT=int(dot), UNPACK=cfg.unpack,
            SPLIT=int(split_k), HILO=int(p.binary), PDL=int(self.pdl), ROWFIRST=int(rowfirst),
            BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, BLOCK_B=block_b,
            num_warps=cfg.warps, num_stages=cfg.stages, **self._launch())

    def mixer(self, i: int, bp: int | None = None) -> None:
        w, s, c = self.w, self.s, self.w.cfg
        ly = w.layers[i]
        bp = bp or self.bp
        _mixer_kernel[(c.nheads * (c.headdim // bp), s.batch)](
            s.zx, ly.conv_w, ly.conv_b, s.conv[i], s.pos, ly.dt_bias, ly.A_log, ly.D,
            s.ssm[i], s.g, s.ssq[i],
            E=c.d_inner, N=c.d_state, H=c.nheads, P=c.headdim, BP=bp, KC=c.d_conv,
            PDL=int(self.pdl), num_warps=4, **self._launch())

    def step(self) -> None:
        w, s, c = self.w, self.s, self.w.cfg
        _begin_kernel[(s.batch,)](s.tok, w.emb, s.h, s.ssq, s.pos, c.d_model, c.n_layer,
                                  s.batch, BLOCK_D=1024, BLOCK_L=64, PDL=int(self.pdl),
                                  **self._launch())
        for i, ly in enumerate(w.layers):
            self.proj(s.h, ly.norm, ly.in_proj, s.zx, self.cfgs["in"], None, False)
            self.mixer(i)
            self.proj(s.g, ly.gnorm, ly.out_proj, s.h, self.cfgs["out"], s.ssq[i], True)
        self.proj(s.h, w.norm_f, Proj(w.emb, c.d_model, c.vocab_size), s.logits,
                  self.cfgs["head"], None, False)
        torch.argmax(s.logits, dim=-1, out=s.tok)


def _graph(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` (run once eagerly first, so that its kernels are compiled) captured as a CUDA
    graph; its replay."""
    fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def _time_cuda(fn: Callable[[], None], reps: int = 5) -> float:
    """Median seconds of ``fn`` (events; one warm call first)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def tune(dec: TritonDecoder, say: Callable[[str], None]) -> None:
    """Pick each projection's tiles and the mixer's BP by timing the candidates as CUDA graphs
    of one launch a layer (so the weights stream from HBM, not L2, and launch costs are the
    graph's), on scratch copies of the state."""
    w, s, c = dec.w, dec.s, dec.w.cfg
    binary = w.kind == "1-bit"
    h0, zx0, g0, ssq0 = s.h.clone(), s.zx.clone(), s.g.clone(), s.ssq.clone()
    s.pos.fill_(0)  # the mixers below read it (the step's first kernel moves it from -1)
    pdl = dec.pdl
    dec.pdl = s.batch == 1  # time as the step will most likely run (PDL won at batch 1 only)
    s.h.normal_()
    s.g.normal_()
    s.ssq.copy_(s.g.pow(2).sum(-1).expand(c.n_layer, -1))
    head = Proj(w.emb, c.d_model, c.vocab_size)
    l0 = w.layers[0]
    one = {"in": (s.h, l0.norm, l0.in_proj, None), "out": (s.g, l0.gnorm, l0.out_proj, s.ssq[0]),
           "head": (s.h, w.norm_f, head, None)}

    def verify(role: str, cfg: ProjCfg) -> float:
        x, nw, p, ssq = one[role]
        o = torch.zeros(s.batch, p.d_out, device=x.device)
        dec.proj(x, nw, p, o, cfg, ssq, ssq is not None)
        ref = _proj_torch(x, nw, p, c.rms_eps)
        return float((o - ref).norm() / ref.norm())

    scratch = torch.zeros(s.batch, c.d_model, device=s.h.device)
    n_head = 8
    runs = {
        "in": lambda cfg: [dec.proj(s.h, ly.norm, ly.in_proj, s.zx, cfg, None, False)
                           for ly in w.layers],
        "out": lambda cfg: [dec.proj(s.g, ly.gnorm, ly.out_proj, scratch, cfg, s.ssq[i], True)
                            for i, ly in enumerate(w.layers)],
        "head": lambda cfg: [dec.proj(s.h, w.norm_f, head, s.logits, cfg, None, False)
                             for _ in range(n_head)],
    }
    for role, run in runs.items():
        best = None
        n = n_head if role == "head" else c.n_layer
        for cfg in _candidates(role, binary and role != "head", s.batch):
            try:
                err = verify(role, cfg)
                if not err <= TOL_TILE:
                    say(f"  {role} {cfg.text()}: wrong (relative L2 error {err:.1e}), skipped")
                    continue
                t = _time_cuda(_graph(lambda: run(cfg)))
            except Exception as e:  # a tile the compiler refuses: skip it, say so
                say(f"  {role} {cfg.text()}: failed ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:120] if str(e) else ''})")
                continue
            p = head if role == "head" else w.layers[0].in_proj if role == "in" \
                else w.layers[0].out_proj
            say(f"  {role} {cfg.text()}: {t / n * 1e6:.2f} us "
                f"({p.nbytes() * n / t / 1e12:.2f} TB/s of weights)")
            if best is None or t < best[0]:
                best = (t, cfg)
        if best is not None:
            dec.cfgs[role] = best[1]
    best = None
    for bp in sorted({min(b, c.headdim) for b in (16, 32, 64)}):
        t = _time_cuda(_graph(lambda: [dec.mixer(i, bp) for i in range(c.n_layer)]))
        say(f"  mixer BP={bp}: {t / c.n_layer * 1e6:.2f} us")
        if best is None or t < best[0]:
            best = (t, bp)
    dec.bp = best[1]
    dec.pdl = pdl
    s.h.copy_(h0)
    s.zx.copy_(zx0)
    s.g.copy_(g0)
    s.ssq.copy_(ssq0)
    s.conv.zero_()
    s.ssm.zero_()
    s.pos.fill_(-1)


# -- models, checks ------------------------------------------------------------------------


def build_models(preset: str, device: str, seed: int,
                 vocab: int | None = None) -> tuple[Any, Any]:
    """The float reference LM and its Bi-Mamba student (a head of ``vocab`` rows, by default
    the preset's), float32 on ``device``, with the random
    weights of :mod:`bench.gpu_decode` (same init, same seed) whose norms and D are perturbed
    by ``1 + 0.3 N(0, 1)`` (seed + 100); every parameter is rounded to FP16 (alpha, beta of the
    student too), so the float32 references hold exactly the values the decoders read."""
    from bench.gpu_decode import _build
    from model.reference.lm import student_from_teacher

    lm, _ = _build(preset, device, seed, vocab)
    lm = lm.float()
    gen = torch.Generator(device=device).manual_seed(seed + 100)
    with torch.no_grad():
        for blk in lm.backbone.layers:
            for t in (blk.norm.weight, blk.mixer.norm.weight, blk.mixer.D):
                t.mul_(1 + PERTURB * torch.randn(t.shape, generator=gen, device=device))
        lm.backbone.norm_f.weight.mul_(
            1 + PERTURB * torch.randn(lm.cfg.d_model, generator=gen, device=device))
        for p in lm.parameters():
            p.copy_(p.half().float())
        student = student_from_teacher(lm)
        for name, p in student.named_parameters():
            if name.endswith(("wscale", "wbias")):
                p.copy_(p.half().float())
    return lm.eval(), student.eval()


@torch.no_grad()
def check_decoder(lm: Any, makers: dict[str, Callable[[State], Any]],
                  state_dtype: torch.dtype, device: str, steps: int, seed: int,
                  batch: int = CHECK_BATCH) -> dict[str, dict]:
    """Decode ``steps`` tokens at ``batch`` with each decoder that ``makers[name](state)``
    returns and with ``lm``'s layer steps in float32 on the same tokens; for each, the largest
    relative L2 errors of the logits and of the sum of mixer outputs (final residual minus the
    embedding row), and whether the greedy tokens agree."""
    from model.reference.layer import MixerState

    c = lm.cfg
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, c.vocab_size, (batch,), generator=gen)
    runs = {}
    for name, make in makers.items():
        s = State(c, batch, device, state_dtype)
        s.tok.copy_(start)
        runs[name] = (s, make(s), {"logits": 0.0, "mixer_sum": 0.0, "agree": True})
    refs = [lm.initial_state(torch.float32, device=device) for _ in range(batch)]
    emb = lm.backbone.embedding.weight
    toks = start.clone()

    def rel(a: Tensor, r: Tensor) -> float:
        return float((a.double() - r.double()).norm() / r.double().norm())

    for _ in range(steps):
        for s, dec, _ in runs.values():
            s.tok.copy_(toks)  # every decoder on the reference's greedy tokens
            dec.step()
        if device == "cuda":
            torch.cuda.synchronize()
        nxt = toks.clone()
        for b in range(batch):
            h = e0 = emb[int(toks[b])]
            new = []
            for layer, st in zip(lm.backbone.layers, refs[b]):
                h, st = layer.step(h, MixerState(st.conv, st.ssm))
                new.append(st)
            refs[b] = new
            ref_logits = lm.logits(h)
            nxt[b] = int(torch.argmax(ref_logits))
            for s, _, err in runs.values():
                err["logits"] = max(err["logits"], rel(s.logits[b], ref_logits))
                err["mixer_sum"] = max(err["mixer_sum"], rel(s.h[b] - e0, h - e0))
                err["agree"] &= int(s.tok[b]) == int(nxt[b])
        toks = nxt
    return {name: {"steps": steps, "batch": batch, "max_rel_l2_logits": err["logits"],
                   "max_rel_l2_mixer_sum": err["mixer_sum"], "argmax_agrees": bool(err["agree"])}
            for name, (_, _, err) in runs.items()}


@torch.no_grad()
def check_projections(lm: Any, student: Any, say: Callable[[str], None]) -> dict:
    """Each projection kernel alone (layer 0's in_proj and out_proj, dense FP16 and 1-bit
    packed; batch 1 and 4; default tiles and fresh random x) against RMSNorm + the reference
    layer (nn.Linear / FBILinear) in float64. The largest relative L2 error of each weight kind
    at batch 1 (float32 multiply-adds) and batch 4 (tensor-core dots: x in FP16 for FP16
    weights, x as two FP16 halves for the 1-bit signs)."""
    c = lm.cfg
    out: dict[str, dict[str, float]] = {}
    gen = torch.Generator(device="cuda").manual_seed(1234)
    for kind, model in (("fp16", lm), ("1-bit", student)):
        w = prepare_weights(model, torch.float16)
        blk = model.backbone.layers[0]
        out[kind] = {}
        for batch in (1, 4):
            s = State(c, batch, "cuda", torch.float16)
            dec = TritonDecoder(w, s)
            worst = 0.0
            for role, mod, nw, p in (("in", blk.mixer.in_proj, blk.norm, w.layers[0].in_proj),
                                     ("out", blk.mixer.out_proj, blk.mixer.norm,
                                      w.layers[0].out_proj)):
                x = torch.randn(batch, p.d_in, device="cuda", generator=gen)
                o = torch.full((batch, p.d_out), float("nan"), device="cuda")
                ssq = None
                if role == "out":
                    o.zero_()
                    ssq = x.pow(2).sum(-1)
                dec.proj(x, nw.weight.half(), p, o, dec.cfgs[role], ssq, role == "out")
                xn = (x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True)
                                               + c.rms_eps) * nw.weight.double())
                if kind == "1-bit":
                    ref = F.linear(xn, mod.effective_weight().double())
                else:
                    ref = F.linear(xn, mod.weight.double())
                e = float((o.double() - ref).norm() / ref.norm())
                say(f"  proj check {kind} {role} batch {batch}: rel L2 {e:.2e}")
                worst = max(worst, e)
            out[kind][f"batch{batch}"] = worst
    return out


# -- measurement ------------------------------------------------------------------------


def measure(w: DecodeWeights, preset: str, batch: int, device: str, seconds: float, seed: int,
            nvml: _Nvml | None, idle_w: float | None, check: dict, proj_check: dict | None,
            tuned: bool, say: Callable[[str], None], pdl: bool | None = None) -> dict:
    """Decode for about ``seconds`` at ``batch`` after warm-up; the record. On cuda the
    tiles are tuned (``tuned``) and the whole step is timed as a graph with and without PDL
    (``pdl`` None; True or False forces one), the faster kept."""
    c = w.cfg
    sdtype = torch.float16 if device == "cuda" else torch.float32
    s = State(c, batch, device, sdtype)
    s.tok.copy_(torch.arange(batch) % c.vocab_size)
    if device == "cuda":
        dec: Any = TritonDecoder(w, s)
        if tuned:
            say(f"{w.kind} batch {batch}: tuning")
            tune(dec, say)
        pdl_ms = {}
        for p in ((False, True) if pdl is None else (pdl,)):
            dec.pdl = p
            try:
                pdl_ms[p] = _time_cuda(_graph(dec.step), 10) * 1e3
                say(f"  whole step as a graph, PDL {'on' if p else 'off'}: {pdl_ms[p]:.3f} ms")
            except Exception as e:
                say(f"  whole step, PDL {'on' if p else 'off'}: failed ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:120] if str(e) else ''})")
        if not pdl_ms:
            raise RuntimeError("the step ran neither with nor without PDL")
        dec.pdl = min(pdl_ms, key=pdl_ms.get)
        s.conv.zero_()
        s.ssm.zero_()
        s.pos.fill_(-1)
        s.tok.copy_(torch.arange(batch) % c.vocab_size)
    else:
        dec = TorchDecoder(w, s)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    graph = device == "cuda"
    with torch.no_grad():
        for _ in range(3):
            dec.step()
        sync()
        t = timed_decode(dec.step, graph=graph, seconds=seconds, nvml=nvml, sync=sync,
                         side_warmups=2, calib_s=1.5)
        steps, elapsed, energy = t["steps"], t["elapsed"], t["energy_j"]
        samples, clocks = t["samples"], t["clocks"]
        finite = bool(torch.isfinite(s.logits).all())
    tokens = steps * batch
    nb = step_bytes(w, batch, s.ssm.element_size())
    total = sum(nb.values())
    if device == "cuda":
        gpu = torch.cuda.get_device_name()
    else:
        gpu = f"CPU ({platform.processor() or platform.machine()}, " \
              f"{torch.get_num_threads()} threads)"
    binary = w.kind == "1-bit"
    wtext = ("1-bit FBI-Linear in_proj/out_proj (W_hat = alpha * sign(W) + beta, alpha and beta "
             "per input column, FP16), signs packed 32 to an int32 word, projections computed "
             "from the bits (S (alpha . x) + beta . x, no W_hat materialised); conv, norms, "
             "dt_bias, A_log, D and the tied embedding / LM head FP16"
             if binary else
             "dense FP16 in_proj/out_proj (the float Mamba-2 of the shape; FBI's materialised "
             "W_hat has this shape), conv, norms, dt_bias, A_log, D and the tied embedding / "
             "LM head FP16")
    if device == "cuda":
        cf = dec.cfgs
        how = (f"per layer 3 Triton kernels: in_proj matrix-vector with the block RMSNorm "
               f"folded in (tiles {cf['in'].text()}); one fused kernel for the depthwise conv "
               f"(a {c.d_conv}-slot ring) + SiLU + dt softplus + SSM state update + C read-out "
               f"+ D skip + SiLU(z) gate + the gated norm's sum of squares (atomics; "
               f"{dec.bp} channels of a head a program); out_proj matrix-vector with the "
               f"gated RMSNorm and the residual add folded in (tiles {cf['out'].text()}); then "
               f"final RMSNorm + LM head matrix-vector (Triton, tiles {cf['head'].text()}) and "
               f"torch.argmax; "
               + proj_how({r: cf[r].text() for r in cf}, batch, binary)
               + f"the whole step ({dec.kernels_per_step()} kernels) captured as ONE CUDA graph "
               f"and replayed, launched " + ("with" if dec.pdl else "without")
               + " programmatic dependent launch (PDL: each kernel starts its first weight "
                 "loads while the previous one drains; the faster of with/without, timed "
                 + ", ".join(f"{'with' if k else 'without'} {v:.3f} ms"
                             for k, v in pdl_ms.items()) + " a step); tiles "
               + ("picked by timing a few candidates (each checked against the PyTorch "
                  "algebra) as CUDA graphs on the device before capture"
                  if tuned else "defaults (not tuned)"))
    else:
        how = "plain PyTorch, eager (the kernels' algebra, no Triton, no CUDA graph)"
    chk = (f"logits checked against BiMambaLM{' (binary=True)' if binary else ''} layer steps "
           f"in float32 with the same weights ({check['what']}): max relative L2 error "
           f"{check['max_rel_l2_logits']:.2e} (logits), {check['max_rel_l2_mixer_sum']:.2e} "
           f"(sum of mixer outputs), tolerance {check['tolerance_rel_l2']['logits']:g} and "
           f"{check['tolerance_rel_l2']['mixer_sum']:g}, "
           + ("passed" if check["passed"] else "FAILED") + ", greedy tokens "
           + ("agree" if check["argmax_agrees"] else "differ"))
    if proj_check is not None:
        chk += (f"; each projection kernel against RMSNorm + "
                f"{'FBILinear' if binary else 'nn.Linear'} in float64: max relative L2 error "
                + ", ".join(f"{v:.1e} at {k.replace('batch', 'batch ')}"
                            for k, v in proj_check.items()))
    method = (f"greedy decode at batch {batch} of model.reference.lm.BiMambaLM's structure "
              f"({preset} shape; random weights of bench.gpu_decode's Mamba-2 init, seed {seed}, "
              f"norm weights and D times 1 + {PERTURB} N(0, 1)"
              + (", FBI 'xnor' alpha/beta from the latent weights" if binary else "")
              + f"); {wtext}; {str(sdtype).removeprefix('torch.')} state (conv ring and SSM "
              f"state), float32 activations between kernels; {how}; {steps} steps "
              f"({tokens} tokens) timed after warm-up, wall clock around the loop; bytes per "
              f"step = weights read + state read and written ({total / 1e6:.1f} MB), "
              f"bandwidth share against {HBM_BYTES_PER_S / 1e12:g} TB/s ({HBM_SOURCE}); {chk}")
    software = {"torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        software["cuda"] = torch.version.cuda
        software["triton"] = triton.__version__
    if nvml is not None:
        software["driver"] = nvml.driver
        software["clocks_mhz_at_end"] = clocks
    params = (sum(ly.in_proj.d_in * ly.in_proj.d_out + ly.out_proj.d_in * ly.out_proj.d_out
                  + sum(t.numel() for t in (ly.norm, ly.conv_w, ly.conv_b, ly.dt_bias,
                                            ly.A_log, ly.D, ly.gnorm))
                  + (2 * (ly.in_proj.d_in + ly.out_proj.d_in) if binary else 0)
                  for ly in w.layers) + w.emb.numel() + w.norm_f.numel())
    sysname = ("1-bit FBI-Linear (packed signs) + FP16" if binary else "FP16")
    step_s = elapsed / steps
    dec_pdl = getattr(dec, "pdl", False)
    dec_cfgs = {k: v.text() for k, v in dec.cfgs.items()} if device == "cuda" else None
    del dec
    if device == "cuda":  # (the graph was timed_decode's and went with it)
        torch.cuda.empty_cache()
    pdl_used = bool(device == "cuda" and dec_pdl)
    rec = {
        "schema": SCHEMA,
        "kind": "measured",
        "system": f"{gpu}, {sysname}, "
                  + ("Triton fused kernels + one CUDA graph" if device == "cuda" else "eager"),
        "gpu": gpu,
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "shape": {"d_model": c.d_model, "n_layer": c.n_layer, "d_state": c.d_state,
                  "headdim": c.headdim, "vocab_size": c.vocab_size},
        "params": params,
        "dtype": str(sdtype).removeprefix("torch."),
        "batch": batch,
        "method": method,
        **timing_fields(tokens, elapsed, energy, samples, idle_w, nvml),
        "logits_finite": finite,
        "software": software,
        # beyond RECORD_FIELDS
        "weights": w.kind,
        "steps": steps,
        "ms_per_step": step_s * 1e3,
        "bytes_per_step": total,
        "bytes_per_step_parts": nb,
        "bytes_per_token": total / batch,
        "bandwidth_fraction": total / step_s / HBM_BYTES_PER_S,
        "hbm_bytes_per_s": HBM_BYTES_PER_S,
        "bandwidth_source": HBM_SOURCE,
        "kernels_per_step": None if device != "cuda" else 3 + 3 * c.n_layer,
        "lm_head": "FP16 (tied embedding)",
        "pdl": pdl_used,
        "tiles": dec_cfgs,
        "check": check | ({"proj_max_rel_l2_float64": proj_check}
                          if proj_check is not None else {}),
    }
    return check_record(rec)


# -- command line ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, ``<prog>: error: <message>``, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _batch(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {MAX_BATCH}], not {text!r}")
    return v


def _steps(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 64], not {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m bench.gpu_fast", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="2.7B", choices=PRESET_NAMES,
                    help="model shape (default 2.7B)")
    ap.add_argument("--weights", action="append", choices=WEIGHT_KINDS,
                    help="fp16 or 1-bit (repeatable; default both)")
    ap.add_argument("--batch", action="append", type=_batch,
                    help="batch size (repeatable; default 1 2 4 8 16 32 64 on cuda, 1 on cpu)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default; Triton, CUDA graph, NVML power) or cpu (plain PyTorch, "
                         "no power; small presets)")
    ap.add_argument("--seconds", type=_positive_seconds, default=4.0,
                    help="length of each timed decode window (default 4)")
    ap.add_argument("--idle-seconds", type=_positive_seconds, default=5.0,
                    help="length of the idle-power window (cuda; default 5)")
    ap.add_argument("--seed", type=_seed, default=0, help="seed of the random weights")
    ap.add_argument("--vocab", type=int_in(1, 1 << 20), default=None,
                    help="rows of the head and embedding (default: the preset's; 50288 is "
                         "Mamba-2's checkpoints')")
    ap.add_argument("--check-steps", type=_steps, default=4,
                    help="tokens of the check against BiMambaLM (default 4)")
    ap.add_argument("--no-tune", action="store_true",
                    help="default tiles instead of timing candidates (cuda)")
    ap.add_argument("--out", metavar="FILE",
                    help="write {\"records\": [...]} to FILE (default: stdout only)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    kinds = args.weights or list(WEIGHT_KINDS)
    batches = args.batch or (list(BATCHES) if args.device == "cuda" else [1])
    for name, vals in (("--weights", kinds), ("--batch", batches)):
        dup = next((v for i, v in enumerate(vals) if v in vals[:i]), None)
        if dup is not None:
            ap.error(f"{name} must name each value once, not {dup} twice")
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            ap.error(f"--out must name a file in an existing folder, not {args.out!r}")
    nvml = None
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda needs a CUDA GPU, and none is visible "
                     "(torch.cuda.is_available() is False); --device cpu runs without "
                     "Triton and power")
        if triton is None:
            ap.error("--device cuda needs Triton (import triton failed)")
        try:
            nvml = _Nvml(torch.cuda.current_device())
        except Exception as e:  # ImportError, or an NVMLError of the driver
            ap.error(f"--device cuda needs NVML for board power (pynvml, package "
                     f"nvidia-ml-py): {type(e).__name__}: {e}")
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    idle_w = None if nvml is None else _idle_power(nvml, args.idle_seconds)
    t0 = time.perf_counter()
    lm, student = build_models(args.preset, args.device, args.seed, args.vocab)
    say(f"built {args.preset} in {time.perf_counter() - t0:.1f} s")
    dev = args.device
    wdtype = torch.float16 if dev == "cuda" else torch.float32
    proj = {}
    if dev == "cuda":
        proj = check_projections(lm, student, say)
    records = []
    for kind in kinds:
        model = student if kind == "1-bit" else lm
        w = prepare_weights(model, wdtype)
        if dev == "cuda":
            makers = {"triton": lambda s, w=w: TritonDecoder(w, s),
                      "triton+pdl": lambda s, w=w: TritonDecoder(w, s, pdl=True)}
            sdt, tol = torch.float16, TOL_GPU
            what = "the Triton decoder without and with PDL, default tiles, eager launches"
        else:
            makers = {"torch": lambda s, w=w: TorchDecoder(w, s)}
            sdt, tol = torch.float32, TOL_CPU
            what = "the PyTorch decoder"
        runs = {}
        for cb in (1, CHECK_BATCH):
            for name, r in check_decoder(model, makers, sdt, dev, args.check_steps, args.seed,
                                         cb).items():
                runs[f"{name}, batch {cb}"] = r
        chk = {"what": f"{what}, {args.check_steps} steps at batch 1 and {CHECK_BATCH}",
               "max_rel_l2_logits": max(r["max_rel_l2_logits"] for r in runs.values()),
               "max_rel_l2_mixer_sum": max(r["max_rel_l2_mixer_sum"] for r in runs.values()),
               "argmax_agrees": all(r["argmax_agrees"] for r in runs.values()),
               "tolerance_rel_l2": tol, "runs": runs}
        chk["passed"] = (chk["max_rel_l2_logits"] <= tol["logits"]
                         and chk["max_rel_l2_mixer_sum"] <= tol["mixer_sum"])
        say(f"{kind}: check {json.dumps(chk)}")
        for b in batches:
            rec = measure(w, args.preset, b, dev, args.seconds, args.seed, nvml, idle_w, chk,
                          proj.get(kind), not args.no_tune, say)
            records.append(rec)
            if args.out is not None:  # as it goes, so a stopped run keeps what it measured
                Path(args.out).write_text(json.dumps({"records": records}, indent=2) + "\n")
            pw = "" if rec["power_w"] is None else \
                f", {rec['power_w']:.0f} W, {rec['j_per_token']:.4f} J/token"
            say(f"{kind} batch {b}: {rec['tokens_per_s']:.1f} tokens/s "
                f"({rec['ms_per_step']:.3f} ms/step){pw}, "
                f"{100 * rec['bandwidth_fraction']:.1f} % of HBM, "
                f"{rec['bytes_per_token'] / 1e6:.1f} MB/token")
        del w
        if dev == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps({"records": records}, indent=2)
    if args.out is not None:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if all(r["check"]["passed"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
