"""Float PyTorch reference of a Bi-Mamba layer: FBI-Linear projections around a Mamba-2 mixer.

Dimension letters are those of :mod:`model.config` (L, D, E, H, P, N, G, C, K, F). One layout
is kept throughout: tokens first, no batch dimension (a decode step works on one token).

Two evaluation paths exist on purpose and are tested against each other:

* :meth:`BiMambaMixer.forward` runs a whole sequence at once: ``conv1d`` over time and the
  scan in its quadratic "SSD" form (an explicit L x L decay matrix), with no recurrence.
* :meth:`BiMambaMixer.step` is the recurrent decode step with a rolling conv state and an
  SSM state, the form an accelerator implements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import BiMambaConfig

__all__ = [
    "binarize_ste",
    "FBILinear",
    "RMSNorm",
    "MixerState",
    "BiMambaMixer",
    "BiMambaBlock",
    "BiMambaStack",
]


class _SignSTE(torch.autograd.Function):
    """sign() with a straight-through (identity) gradient, as Bi-Mamba trains it."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        # A 1-bit weight has no zero: sign(0) is taken as +1 (PyTorch's sign(0) = 0 would
        # need a third level that the hardware cannot store).
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def binarize_ste(w: Tensor) -> Tensor:
    """Return ``sign(w)`` in {-1, +1} (zero maps to +1) with an identity gradient."""
    return _SignSTE.apply(w)


class FBILinear(nn.Module):
    """FBI-Linear: ``y = x @ W_hat.T`` with ``W_hat = alpha * sign(W) + beta``.

    ``alpha`` (``wscale``) and ``beta`` (``wbias``) have shape (1, d_in): one scale and one
    shift per input column, the Bi-Mamba 'column' pattern. No bias.

    Parameters
    ----------
    d_in, d_out : int
        Input and output features.

    Members
    -------
    weight : Parameter, shape (d_out, d_in)
        Latent real weight; only its sign is used in the forward pass.
    wscale : Parameter, shape (1, d_in)
        alpha.
    wbias : Parameter, shape (1, d_in)
        beta.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in = d_in
        self.d_out = d_out
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.wscale = nn.Parameter(torch.ones(1, d_in))
        self.wbias = nn.Parameter(torch.zeros(1, d_in))
        self._cache: tuple[tuple[int, ...], Tensor] | None = None

    @torch.no_grad()
    def init_xnor_(self) -> None:
        """FBI 'xnor' init from the latent weight: beta = column mean, alpha = mean |W - beta|."""
        beta = self.weight.mean(dim=0, keepdim=True)
        self.wbias.copy_(beta)
        self.wscale.copy_((self.weight - beta).abs().mean(dim=0, keepdim=True))

    def effective_weight(self) -> Tensor:
        """``W_hat = alpha * sign(W) + beta``, shape (d_out, d_in)."""
        return self.wscale * binarize_ste(self.weight) + self.wbias

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., d_in) -> (..., d_out)."""
        if self.training or torch.is_grad_enabled():
            return F.linear(x, self.effective_weight())
        # Inference: W_hat is materialised once and reused until a parameter changes, as a
        # deployed float model would store it.
        versions = (
            self.weight._version, self.wscale._version, self.wbias._version,
            self.weight.data_ptr(), int(self.weight.dtype.itemsize),
        )
        if self._cache is None or self._cache[0] != versions:
            self._cache = (versions, self.effective_weight())
        return F.linear(x, self._cache[1])


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dimension."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


@dataclass
class MixerState:
    """Decode state of one mixer.

    Members
    -------
    conv : Tensor, shape (C, K - 1)
        The last K - 1 xBC inputs, oldest first.
    ssm : Tensor, shape (H, P, N)
        The SSM state h.
    """

    conv: Tensor
    ssm: Tensor

    def clone(self) -> "MixerState":
        return MixerState(self.conv.clone(), self.ssm.clone())


class BiMambaMixer(nn.Module):
    """Mamba-2 mixer whose in_proj and out_proj are :class:`FBILinear`.

    Parameters mirror the checkpoint keys under ``backbone.layers.{i}.mixer.``.
    """

    def __init__(self, cfg: BiMambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_proj = FBILinear(cfg.d_model, cfg.d_in_proj)
        self.conv1d = nn.Conv1d(
            cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim,
            padding=cfg.d_conv - 1, bias=True,
        )
        self.dt_bias = nn.Parameter(torch.zeros(cfg.nheads))
        self.A_log = nn.Parameter(torch.zeros(cfg.nheads))
        self.D = nn.Parameter(torch.ones(cfg.nheads))
        self.norm = RMSNorm(cfg.d_inner, cfg.rms_eps)
        self.out_proj = FBILinear(cfg.d_inner, cfg.d_model)

    # -- shared pieces ------------------------------------------------------------------

    def _split_zxbcdt(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.nheads], dim=-1)

    def _split_xbc(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        gn = c.ngroups * c.d_state
        return torch.split(xbc, [c.d_inner, gn, gn], dim=-1)

    def _head_groups(self, t: Tensor) -> Tensor:
        """(..., G, N) -> (..., H, N): repeat each group's B or C for its heads."""
        return t.repeat_interleave(self.cfg.nheads // self.cfg.ngroups, dim=-2)

    def _gate_and_project(self, y: Tensor, z: Tensor, trace: dict | None) -> Tensor:
        g = y * F.silu(z)
        g_n = self.norm(g)
        if trace is not None:
            trace["gate"] = g
            trace["out_norm"] = g_n
        return self.out_proj(g_n)

    def initial_state(self, dtype: torch.dtype = torch.float32) -> MixerState:
        c = self.cfg
        return MixerState(
            conv=torch.zeros(c.conv_dim, c.d_conv - 1, dtype=dtype),
            ssm=torch.zeros(c.nheads, c.headdim, c.d_state, dtype=dtype),
        )

    # -- sequence path ------------------------------------------------------------------

    def forward(
        self, u: Tensor, state: MixerState | None = None, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """Run a sequence without recurrence.

        Parameters
        ----------
        u : Tensor, shape (L, D)
            Mixer input (already normalised by the block).
        state : MixerState, optional
            State to continue from; zeros if omitted.
        trace : dict, optional
            Filled with intermediate tensors (same keys as :meth:`step`, with a leading L).

        Returns
        -------
        y : Tensor, shape (L, D)
        state : MixerState
            State after the last token.
        """
        c = self.cfg
        L = u.shape[0]
        if state is None:
            state = self.initial_state(u.dtype)
        z, xbc, dt_raw = self._split_zxbcdt(self.in_proj(u))

        # Causal depthwise conv, prefixed with the carried inputs.
        xbc_ext = torch.cat([state.conv.T, xbc], dim=0)  # (K-1+L, C)
        conv = F.conv1d(
            xbc_ext.T.unsqueeze(0), self.conv1d.weight, self.conv1d.bias, groups=c.conv_dim
        )[0].T  # (L, C)
        xbc_act = F.silu(conv)
        x, B, C = self._split_xbc(xbc_act)
        x = x.reshape(L, c.nheads, c.headdim)
        B = self._head_groups(B.reshape(L, c.ngroups, c.d_state))  # (L, H, N)
        C = self._head_groups(C.reshape(L, c.ngroups, c.d_state))

        dt = F.softplus(dt_raw + self.dt_bias)  # (L, H)
        A = -torch.exp(self.A_log)  # (H,)
        dtA = dt * A
        cum = torch.cumsum(dtA, dim=0)  # (L, H)
        # decay[h, t, s] = exp(sum_{r=s+1..t} dtA[r]) for s <= t, else 0.
        seg = cum.T[:, :, None] - cum.T[:, None, :]
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        decay = torch.exp(seg.masked_fill(~causal, float("-inf")))
        cb = torch.einsum("thn,shn->hts", C, B)
        y = torch.einsum("hts,sh,shp->thp", decay * cb, dt, x)
        # Contribution of the carried state h0.
        y = y + torch.einsum("th,thn,hpn->thp", torch.exp(cum), C, state.ssm)
        y = y + self.D[:, None] * x
        w_end = torch.exp(cum[-1][None, :] - cum) * dt  # (L, H)
        h_last = torch.exp(cum[-1])[:, None, None] * state.ssm + torch.einsum(
            "sh,shp,shn->hpn", w_end, x, B
        )
        y = y.reshape(L, c.d_inner)
        if trace is not None:
            trace.update(z=z, xbc=xbc, dt_raw=dt_raw, conv=conv, xbc_act=xbc_act, dt=dt,
                         dA=torch.exp(dtA), y=y)
        out = self._gate_and_project(y, z, trace)
        new_conv = xbc_ext[-(c.d_conv - 1):].T.clone()
        return out, MixerState(conv=new_conv, ssm=h_last)

    # -- recurrent path -----------------------------------------------------------------

    def step(
        self, u: Tensor, state: MixerState, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """One decode step.

        Parameters
        ----------
        u : Tensor, shape (D,)
        state : MixerState
            Not modified; the new state is returned.
        trace : dict, optional
            Filled with ``z (E) xbc (C) dt_raw (H) conv (C) xbc_act (C) dt (H) dA (H)
            ssm (H, P, N) y (E) gate (E) out_norm (E)``.

        Returns
        -------
        out : Tensor, shape (D,)
        state : MixerState
        """
        c = self.cfg
        z, xbc, dt_raw = self._split_zxbcdt(self.in_proj(u))
        window = torch.cat([state.conv, xbc[:, None]], dim=1)  # (C, K)
        conv = (window * self.conv1d.weight[:, 0, :]).sum(-1) + self.conv1d.bias
        xbc_act = F.silu(conv)
        x, B, C = self._split_xbc(xbc_act)
        x = x.reshape(c.nheads, c.headdim)
        B = self._head_groups(B.reshape(c.ngroups, c.d_state))  # (H, N)
        C = self._head_groups(C.reshape(c.ngroups, c.d_state))
        dt = F.softplus(dt_raw + self.dt_bias)  # (H,)
        dA = torch.exp(dt * -torch.exp(self.A_log))
        h = dA[:, None, None] * state.ssm + (dt[:, None] * x)[:, :, None] * B[:, None, :]
        y = torch.einsum("hpn,hn->hp", h, C) + self.D[:, None] * x
        y = y.reshape(c.d_inner)
        if trace is not None:
            trace.update(z=z, xbc=xbc, dt_raw=dt_raw, conv=conv, xbc_act=xbc_act, dt=dt,
                         dA=dA, ssm=h, y=y)
        out = self._gate_and_project(y, z, trace)
        return out, MixerState(conv=window[:, 1:], ssm=h)


class BiMambaBlock(nn.Module):
    """``residual + mixer(rmsnorm(residual))``; keys ``norm.weight`` and ``mixer.*``."""

    def __init__(self, cfg: BiMambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.mixer = BiMambaMixer(cfg)

    def initial_state(self, dtype: torch.dtype = torch.float32) -> MixerState:
        return self.mixer.initial_state(dtype)

    def forward(
        self, u: Tensor, state: MixerState | None = None, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """u: (L, D) residual stream -> (L, D) residual stream, final state."""
        un = self.norm(u)
        if trace is not None:
            trace["norm"] = un
        out, state = self.mixer(un, state, trace)
        if trace is not None:
            trace["mixer_out"] = out
        return u + out, state

    def step(
        self, u: Tensor, state: MixerState, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """u: (D,) residual stream -> (D,), new state."""
        un = self.norm(u)
        if trace is not None:
            trace["norm"] = un
        out, state = self.mixer.step(un, state, trace)
        if trace is not None:
            trace["mixer_out"] = out
        return u + out, state


class BiMambaStack(nn.Module):
    """A stack of :class:`BiMambaBlock` (``backbone.layers``), no embedding or final norm."""

    def __init__(self, cfg: BiMambaConfig, n_layers: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(BiMambaBlock(cfg) for _ in range(n_layers))

    def initial_state(self, dtype: torch.dtype = torch.float32) -> list[MixerState]:
        return [layer.initial_state(dtype) for layer in self.layers]

    def forward(
        self, u: Tensor, states: list[MixerState] | None = None
    ) -> tuple[Tensor, list[MixerState]]:
        states = states or [None] * len(self.layers)  # type: ignore[list-item]
        out = []
        for layer, s in zip(self.layers, states):
            u, s = layer(u, s)
            out.append(s)
        return u, out

    def step(
        self, u: Tensor, states: list[MixerState]
    ) -> tuple[Tensor, list[MixerState]]:
        out = []
        for layer, s in zip(self.layers, states):
            u, s = layer.step(u, s)
            out.append(s)
        return u, out
