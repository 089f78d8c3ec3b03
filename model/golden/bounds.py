"""Every accumulator and intermediate product of the datapath, with the bound that sizes it.

:func:`accumulators` is the single list: :func:`~model.golden.quantize.export_layer` rejects an
export whose widths exceed :data:`MAX_BITS`, and ``python -m model.golden --preset 780M``
prints it as the table in docs/fixed_point.md. The RTL generators build the same operations on
the same formats, so Amaranth's exact arithmetic gives them these widths; the scan shares the
alignment shifts through :func:`scan_alignment`. A bound is the largest magnitude the operation can produce given the
formats of its operands (saturated inputs, worst-case signs), not a calibrated value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model.golden.fixedpoint import PwlTable, signed_bits
if TYPE_CHECKING:  # the export imports this module to check its widths; only types come back
    from model.golden.quantize import BinaryProjection, NormParams, QuantizedLayer

__all__ = ["MAX_BITS", "Accumulator", "accumulators", "scan_alignment", "markdown"]

# Two's complement width the golden model (int64, with a rounding constant added) and the
# spec allow for any intermediate: below 2**61 in magnitude.
MAX_BITS = 62


@dataclass(frozen=True)
class Accumulator:
    """One intermediate: where it is, how its bound is derived, and the bound itself."""

    name: str
    formula: str
    bound: int

    @property
    def bits(self) -> int:
        """Two's complement width holding ``[-bound, bound]``."""
        return signed_bits(self.bound)


def scan_alignment(q: QuantizedLayer) -> dict[str, int]:
    """Common fraction widths and left shifts of the scan's two sums (section 6)."""
    f = q.fmt
    fa, fh = f["xbc_act"].frac, f["ssm"].frac
    f_state = max(q.spec.exp_bits + fh, f["dtx"].frac + fa)
    f_y = max(fh + fa, q.d_frac + fa)
    return {
        "f_state": f_state, "s1": f_state - q.spec.exp_bits - fh, "s2": f_state - f["dtx"].frac - fa,
        "f_y": f_y, "b1": f_y - fh - fa, "b2": f_y - q.d_frac - fa,
    }


def _norm(prefix: str, n: NormParams, rsqrt_bits: int) -> list[Accumulator]:
    b = n.in_fmt.bits
    return [
        Accumulator(f"{prefix}.sum_sq", "n * 2^(2(b_in-1)) + eps_q",
                    n.n * (1 << (2 * (b - 1))) + n.eps_q),
        Accumulator(f"{prefix}.v_rsqrt", "2^(b_in-1) * (2^R - 1)",
                    (1 << (b - 1)) * ((1 << rsqrt_bits) - 1)),
        Accumulator(f"{prefix}.norm_gain", "2^(norm_bits-1) * 2^(gain_bits-1)",
                    (1 << (n.norm_fmt.bits - 1)) * (1 << (n.gain_fmt.bits - 1))),
    ]


def _proj(prefix: str, p: BinaryProjection) -> list[Accumulator]:
    return [
        Accumulator(f"{prefix}.popcount", "d_in (one bit-plane)", p.d_in),
        Accumulator(f"{prefix}.acc", "d_in * max|a|", p.acc_bound),
        Accumulator(f"{prefix}.sum", "(acc << beta_frac) + d_in * max|a| * 2^(beta_bits-1)",
                    p.sum_bound),
        Accumulator(f"{prefix}.prod", "sum * (2^mult_bits - 1)", p.prod_bound),
    ]


def _pwl(prefix: str, t: PwlTable) -> Accumulator:
    return Accumulator(f"{prefix}.interp", "2^out_bits * (2^shift - 1)  [(T[i+1]-T[i]) * r]",
                       (1 << t.out_fmt.bits) * ((1 << t.shift) - 1))


def accumulators(q: QuantizedLayer) -> list[Accumulator]:
    """All intermediates of one layer, in datapath order."""
    c, s, f = q.cfg, q.spec, q.fmt
    al = scan_alignment(q)
    half = lambda bits: 1 << (bits - 1)  # noqa: E731  largest |v| of a signed width
    dt_in_max = half(f["dt_raw"].bits) + int(np.max(np.abs(q.dt_bias)))
    return [
        *_norm("norm_in", q.norm_in, s.rsqrt_bits),
        *_proj("in_proj", q.in_proj),
        Accumulator("conv.acc", "K * 2^(xbc_bits-1) * 2^(w_bits-1) + max|bias|",
                    c.d_conv * half(f["xbc"].bits) * half(s.param_bits)
                    + int(np.max(np.abs(q.conv_b)))),
        _pwl("silu_conv", q.silu_conv),
        Accumulator("dt.x", "2^(dt_raw_bits-1) + max|dt_bias|", dt_in_max),
        Accumulator("dt.x_log2e", "max|x| * log2e_q", dt_in_max * q.log2e),
        _pwl("exp2", q.exp2.mantissa),
        _pwl("tail", q.tail),
        Accumulator("dt.mant_tail", "2^exp_bits * 2^tail_bits  [m * tail(E)]",
                    (1 << s.exp_bits) * (1 << q.tail.out_fmt.bits)),
        Accumulator("dt.sum", "(max|x| << max(0, dt_frac - x_frac)) + 2^dt_frac",
                    (dt_in_max << max(0, f["dt"].frac - f["dt_raw"].frac)) + (1 << f["dt"].frac)),
        Accumulator("dA.dt_Ak", "2^dt_bits * 2^(Ak_bits-1)", (1 << s.dt_bits) * half(s.param_bits)),
        Accumulator("scan.dt_x", "2^dt_bits * 2^(data_bits-1)", (1 << s.dt_bits) * half(s.data_bits)),
        Accumulator("scan.state", "(2^exp_bits * 2^(state_bits-1) << s1) + "
                    "(2^(dtx_bits-1) * 2^(data_bits-1) << s2)",
                    ((1 << s.exp_bits) * half(s.state_bits) << al["s1"])
                    + (half(s.dtx_bits) * half(s.data_bits) << al["s2"])),
        Accumulator("scan.y", "(N * 2^(state_bits-1) * 2^(data_bits-1) << b1) + "
                    "(2^(d_bits-1) * 2^(data_bits-1) << b2)",
                    (c.d_state * half(s.state_bits) * half(s.data_bits) << al["b1"])
                    + (half(s.param_bits) * half(s.data_bits) << al["b2"])),
        _pwl("silu_z", q.silu_z),
        Accumulator("gate.y_silu", "2^(data_bits-1) * 2^(data_bits-1)",
                    half(s.data_bits) * half(s.data_bits)),
        *_norm("norm_out", q.norm_out, s.rsqrt_bits),
        *_proj("out_proj", q.out_proj),
        Accumulator("residual.sum", "2 * 2^(res_bits-1)", 2 * half(s.res_bits)),
    ]


def markdown(q: QuantizedLayer) -> str:
    """Formats and accumulators of ``q`` as markdown tables."""
    lines = ["| tensor | format | LSB |", "|---|---|---|"]
    for k, v in sorted(q.fmt.items()):
        lines.append(f"| {k} | {v} | 2^-{v.frac} |")
    lines += ["", "| intermediate | bound | bits |", "|---|---|---|"]
    for a in accumulators(q):
        formula = a.formula.replace("|", "\\|")  # a literal | would split the cell
        lines.append(f"| {a.name} | {formula} | {a.bits} |")
    return "\n".join(lines)
