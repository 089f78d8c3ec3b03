"""Float PyTorch reference of a Bi-Mamba layer: FBI-Linear projections around a Mamba-2 mixer.

Dimension letters are those of :mod:`model.config` (L, D, E, H, P, N, G, C, K, F), plus Bt
for a batch of independent sequences. One layout is kept throughout: tokens first, then
features; the sequence path also accepts a leading Bt (for training), a decode step works on
one token.

Two evaluation paths exist on purpose and are tested against each other:

* :meth:`BiMambaMixer.forward` runs a whole sequence at once: ``conv1d`` over time and the
  scan in its quadratic "SSD" form (an explicit L x L decay matrix built by :func:`segsum`),
  with no recurrence.
* :meth:`BiMambaMixer.step` is the recurrent decode step with a rolling conv state and an
  SSM state, the form an accelerator implements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import BiMambaConfig

__all__ = [
    "binarize_ste",
    "segsum",
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


def segsum(x: Tensor) -> Tensor:
    """Segment sums of ``x`` along its last dimension, as a lower-triangular matrix.

    ``out[..., t, s] = x[..., s+1] + ... + x[..., t]`` for ``s <= t`` (0 on the diagonal) and
    ``-inf`` above it, so ``exp(out)`` is the causal decay matrix of the SSD form.

    Each entry is a running sum that starts at ``x[s+1]`` (a cumulative sum over a masked,
    repeated copy of ``x``, as mamba_ssm's ``segsum``), not a difference of two prefix sums:
    the rounding error is relative to the segment itself rather than to the whole prefix,
    which grows with the position and cancels catastrophically in ``cum[t] - cum[s]``.

    Parameters
    ----------
    x : Tensor, shape (..., L)

    Returns
    -------
    Tensor, shape (..., L, L)
    """
    L = x.shape[-1]
    rep = x[..., :, None].expand(*x.shape, L)  # rep[..., r, s] = x[..., r]
    strict = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)  # r > s
    out = torch.cumsum(rep.masked_fill(~strict, 0.0), dim=-2)
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    return out.masked_fill(~causal, float("-inf"))


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

    def clear_cache(self) -> None:
        """Forget the materialised inference weight (it is rebuilt on the next call)."""
        self._cache = None

    def effective_weight(self) -> Tensor:
        """``W_hat = alpha * sign(W) + beta``, shape (d_out, d_in)."""
        return self.wscale * binarize_ste(self.weight) + self.wbias

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., d_in) -> (..., d_out)."""
        if self.training or torch.is_grad_enabled():
            return F.linear(x, self.effective_weight())
        # Inference: W_hat is materialised once and reused until a parameter changes, as a
        # deployed float model would store it. A change is seen through the tensors' version
        # counters, which fused optimizers (AdamW(fused=True)) do not bump: code that
        # evaluates between such steps calls clear_cache().
        versions = (
            self.weight._version, self.wscale._version, self.wbias._version,
            self.weight.data_ptr(), int(self.weight.dtype.itemsize),
        )
        if self._cache is None or self._cache[0] != versions:
            self._cache = (versions, self.effective_weight())
        return F.linear(x, self._cache[1])


def _linear(d_in: int, d_out: int) -> nn.Linear:
    """A float projection with FBILinear's signature: ``nn.Linear(d_in, d_out, bias=False)``."""
    return nn.Linear(d_in, d_out, bias=False)


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
    conv : Tensor, shape (C, K - 1) or (Bt, C, K - 1)
        The last K - 1 xBC inputs, oldest first.
    ssm : Tensor, shape (H, P, N) or (Bt, H, P, N)
        The SSM state h. The leading Bt is there for a batched sequence path only; the
        decode step takes the unbatched form.
    """

    conv: Tensor
    ssm: Tensor

    def clone(self) -> "MixerState":
        return MixerState(self.conv.clone(), self.ssm.clone())


class BiMambaMixer(nn.Module):
    """Mamba-2 mixer whose in_proj and out_proj are :class:`FBILinear`.

    Parameters mirror the checkpoint keys under ``backbone.layers.{i}.mixer.``.

    Parameters
    ----------
    cfg : BiMambaConfig
    binary : bool
        True (Bi-Mamba): in_proj and out_proj are :class:`FBILinear`. False: plain
        ``nn.Linear(bias=False)`` with the same ``weight`` keys and no ``wscale``/``wbias``,
        the float Mamba-2 mixer a Bi-Mamba student is distilled from.
    """

    def __init__(self, cfg: BiMambaConfig, binary: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.binary = binary
        lin = FBILinear if binary else _linear
        self.in_proj = lin(cfg.d_model, cfg.d_in_proj)
        self.conv1d = nn.Conv1d(
            cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim,
            padding=cfg.d_conv - 1, bias=True,
        )
        self.dt_bias = nn.Parameter(torch.zeros(cfg.nheads))
        self.A_log = nn.Parameter(torch.zeros(cfg.nheads))
        self.D = nn.Parameter(torch.ones(cfg.nheads))
        self.norm = RMSNorm(cfg.d_inner, cfg.rms_eps)
        self.out_proj = lin(cfg.d_inner, cfg.d_model)

    # -- shared pieces ------------------------------------------------------------------

    def _split_zxbcdt(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.nheads], dim=-1)

    def _split_xbc(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        gn = c.ngroups * c.d_state
        return torch.split(xbc, [c.d_inner, gn, gn], dim=-1)

    def _head_groups(self, t: Tensor, dim: int = -2) -> Tensor:
        """Repeat each group's slice along ``dim`` (of size G) for its H / G heads.

        (..., G, N) -> (..., H, N) by default: B or C for every head.
        """
        return t.repeat_interleave(self.cfg.nheads // self.cfg.ngroups, dim=dim)

    def _gate_and_project(self, y: Tensor, z: Tensor, trace: dict | None) -> Tensor:
        g = y * F.silu(z)
        g_n = self.norm(g)
        if trace is not None:
            trace["gate"] = g
            trace["out_norm"] = g_n
        return self.out_proj(g_n)

    def initial_state(
        self, dtype: torch.dtype = torch.float32, batch: int | None = None,
        device: torch.device | str | None = None,
    ) -> MixerState:
        """Zero state: conv (C, K - 1) and ssm (H, P, N), with a leading ``batch`` if given."""
        c = self.cfg
        lead = () if batch is None else (batch,)
        if device is None:
            device = self.A_log.device
        return MixerState(
            conv=torch.zeros(*lead, c.conv_dim, c.d_conv - 1, dtype=dtype, device=device),
            ssm=torch.zeros(*lead, c.nheads, c.headdim, c.d_state, dtype=dtype, device=device),
        )

    # -- sequence path ------------------------------------------------------------------

    def forward(
        self, u: Tensor, state: MixerState | None = None, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """Run a sequence, or a batch of sequences, without recurrence.

        Parameters
        ----------
        u : Tensor, shape (L, D) or (Bt, L, D)
            Mixer input (already normalised by the block); Bt independent sequences when 3-D.
        state : MixerState, optional
            State to continue from (with a leading Bt on both tensors when ``u`` is 3-D);
            zeros if omitted.
        trace : dict, optional
            Filled with intermediate tensors (same keys as :meth:`step`, with a leading L, or
            (Bt, L) when batched).

        Returns
        -------
        y : Tensor, shape (L, D) or (Bt, L, D)
        state : MixerState
            State after the last token (batched like ``u``).

        Raises
        ------
        ValueError
            If ``u`` is not 2-D or 3-D with last dimension D.
        """
        c = self.cfg
        if u.dim() not in (2, 3) or u.shape[-1] != c.d_model:
            raise ValueError(f"u must have shape (L, {c.d_model}) or (Bt, L, {c.d_model}), "
                             f"not {tuple(u.shape)}")
        single = u.dim() == 2
        if single:
            u = u[None]
            if state is not None:
                state = MixerState(state.conv[None], state.ssm[None])
        Bt, L = u.shape[0], u.shape[1]
        if state is None:
            state = self.initial_state(u.dtype, batch=Bt)
        z, xbc, dt_raw = self._split_zxbcdt(self.in_proj(u))

        # Causal depthwise conv, prefixed with the carried inputs.
        xbc_ext = torch.cat([state.conv.transpose(1, 2), xbc], dim=1)  # (Bt, K-1+L, C)
        conv = F.conv1d(
            xbc_ext.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, groups=c.conv_dim
        ).transpose(1, 2)  # (Bt, L, C)
        xbc_act = F.silu(conv)
        x, B, C = self._split_xbc(xbc_act)
        x = x.reshape(Bt, L, c.nheads, c.headdim)
        B = B.reshape(Bt, L, c.ngroups, c.d_state)
        C = C.reshape(Bt, L, c.ngroups, c.d_state)

        dt = F.softplus(dt_raw + self.dt_bias)  # (Bt, L, H)
        A = -torch.exp(self.A_log)  # (H,)
        dtA = dt * A
        # decay[b, h, t, s] = exp(dtA[s+1] + ... + dtA[t]) for s <= t, else 0. Each exponent
        # is summed directly (segsum), not as a difference of two long prefix sums, which in
        # float32 would lose ~eps * |prefix| (6e-5 relative at L = 1024).
        seg = segsum(dtA.transpose(1, 2))  # (Bt, H, L, L)
        decay = torch.exp(seg)
        # C_t . B_s once per group, then shared by the group's heads.
        cb = self._head_groups(torch.einsum("btgn,bsgn->bgts", C, B), dim=1)  # (Bt, H, L, L)
        y = torch.einsum("bhts,bsh,bshp->bthp", decay * cb, dt, x)
        # Contribution of the carried state h0: decays by the prefix sum up to t (no
        # cancellation: a plain running sum of same-signed terms).
        cum = torch.cumsum(dtA, dim=1)  # (Bt, L, H)
        ssm0 = state.ssm
        C_h = self._head_groups(C)  # (Bt, L, H, N)
        y = y + torch.einsum("bth,bthn,bhpn->bthp", torch.exp(cum), C_h, ssm0)
        y = y + self.D[:, None] * x
        # Weight of each input in the final state: the last row of the decay matrix.
        w_end = decay[:, :, -1, :].transpose(1, 2) * dt  # (Bt, L, H)
        h_last = torch.exp(cum[:, -1])[..., None, None] * ssm0 + torch.einsum(
            "bsh,bshp,bshn->bhpn", w_end, x, self._head_groups(B)
        )
        y = y.reshape(Bt, L, c.d_inner)
        tr: dict | None = None
        if trace is not None:
            tr = dict(z=z, xbc=xbc, dt_raw=dt_raw, conv=conv, xbc_act=xbc_act, dt=dt,
                      dA=torch.exp(dtA), y=y)
        out = self._gate_and_project(y, z, tr)
        new_conv = xbc_ext[:, -(c.d_conv - 1):].transpose(1, 2).clone()
        if trace is not None:
            trace.update({k: v[0] for k, v in tr.items()} if single else tr)
        if single:
            return out[0], MixerState(conv=new_conv[0], ssm=h_last[0])
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
    """``residual + mixer(rmsnorm(residual))``; keys ``norm.weight`` and ``mixer.*``.

    ``binary`` is passed to :class:`BiMambaMixer` (False: the float Mamba-2 block).
    """

    def __init__(self, cfg: BiMambaConfig, binary: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.mixer = BiMambaMixer(cfg, binary)

    def initial_state(
        self, dtype: torch.dtype = torch.float32, batch: int | None = None,
        device: torch.device | str | None = None,
    ) -> MixerState:
        return self.mixer.initial_state(dtype, batch, device)

    def forward(
        self, u: Tensor, state: MixerState | None = None, trace: dict | None = None
    ) -> tuple[Tensor, MixerState]:
        """u: (L, D) or (Bt, L, D) residual stream -> same shape, final state."""
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
