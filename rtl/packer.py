"""The weight stream: every weight and constant of a layer as the beats the engine reads.

One function per stream section turns an export (:class:`~model.golden.quantize.QuantizedLayer`) into
``mem`` beats, little-endian: field i of a record at bits ``[i*w, (i+1)*w)``, a record wider
than a beat split over consecutive beats (beat b holds record bits ``[b*W, (b+1)*W)``). The
layout is docs/layer_engine.md, section 2. :func:`layer_stream` concatenates the sections of a
whole layer in the order the engine consumes them; its beat counts, from
:class:`rtl.layer.LayerConfig`, are what the estimator reads as bytes per token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["pack_fields", "split_record", "projection_beats", "norm_beats", "conv_beats", "scan_beats",
           "layer_sections", "layer_beats", "embedding_beats", "head_beats",
           "lm_static_beats", "lm_beats"]


def pack_fields(values: Iterable[int], bits: int) -> int:
    """Little-endian concatenation of ``values``, ``bits`` each (two's complement)."""
    word, mask = 0, (1 << bits) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def split_record(record: int, n_beats: int, beat_bits: int) -> list[int]:
    """A record of up to ``n_beats * beat_bits`` bits as ``n_beats`` beats, low bits first."""
    if record >> (n_beats * beat_bits):
        raise ValueError(f"record of {record.bit_length()} bits does not fit {n_beats} beats "
                         f"of {beat_bits} bits")
    mask = (1 << beat_bits) - 1
    return [(record >> (b * beat_bits)) & mask for b in range(n_beats)]


def projection_beats(cfg, p, rows: Sequence[int] | None = None) -> list[int]:
    """The beats of one token of a :class:`~rtl.stream_projection.StreamProjection`.

    Parameters
    ----------
    cfg : StreamProjectionConfig
    p : BinaryProjection
        The export the unit computes.
    rows : sequence of int, optional
        The order in which output rows leave the unit (a permutation of ``range(d_out)``);
        row group r carries rows ``rows[r*pe : (r+1)*pe]``, the last one padded with zero rows.

    Returns
    -------
    list of int
        ``folds`` beta records, then per row group ``folds`` weight beats and one row-constant
        record: ``cfg.mem_beats`` beats of ``cfg.beat_bits`` bits.
    """
    from model.golden.layer import row_correction

    if (cfg.d_in, cfg.d_out, cfg.act_bits) != (p.d_in, p.d_out, p.act.bits):
        raise ValueError(f"config {cfg} does not match the projection ({p.d_in} x {p.d_out}, "
                         f"{p.act.bits}-bit activations)")
    rows = np.arange(p.d_out) if rows is None else np.asarray(rows)
    if sorted(rows.tolist()) != list(range(p.d_out)):
        raise ValueError("rows must be a permutation of range(d_out)")
    S, P, W, F = cfg.simd, cfg.pe, cfg.beat_bits, cfg.folds
    beats: list[int] = []
    for f in range(F):
        beats += split_record(pack_fields(p.beta[f * S: (f + 1) * S], cfg.beta_bits),
                              cfg.beta_beats, W)
    sign = np.zeros((cfg.row_groups * P, p.d_in), np.uint8)  # pad rows stay zero
    sign[: p.d_out] = p.sign_matrix()[rows] > 0
    corr = np.zeros(cfg.row_groups * P, np.int64)
    corr[: p.d_out] = row_correction(p)[rows]
    mult = np.zeros(cfg.row_groups * P, np.int64)
    mult[: p.d_out] = p.mult[rows]
    # (R, P, F, S) -> (R, F, P, S): a weight beat is one (row group, fold), lane p at p*S.
    words = sign.reshape(cfg.row_groups, P, F, S).transpose(0, 2, 1, 3).reshape(
        cfg.row_groups, F, P * S)
    packed = np.packbits(words, axis=2, bitorder="little")
    cmask = (1 << cfg.corr_bits) - 1
    for r in range(cfg.row_groups):
        beats += [int.from_bytes(packed[r, f].tobytes(), "little") for f in range(F)]
        rc = [(int(corr[i]) & cmask) | (int(mult[i]) << cfg.corr_bits)
              for i in range(r * P, (r + 1) * P)]
        beats += split_record(pack_fields(rc, cfg.rc_bits), cfg.rc_beats, W)
    return beats


def norm_beats(n, pe: int, beat_bits: int) -> list[int]:
    """The gains of an :class:`~rtl.layer_units.RmsNormUnit`: a record of ``pe`` gains per
    group of ``pe`` channels."""
    gb = n.gain_fmt.bits
    n_beats = -(-pe * gb // beat_bits)
    out: list[int] = []
    for g in range(n.n // pe):
        out += split_record(pack_fields(n.gain[g * pe: (g + 1) * pe], gb), n_beats, beat_bits)
    return out


def conv_beats(q, pe: int, beat_bits: int, order: Sequence[int] | None = None) -> list[int]:
    """The weights and biases of a :class:`~rtl.layer_units.ConvUnit`, channels in ``order``
    (a permutation of ``range(conv_dim)``): per lane the ``d_conv`` taps, oldest first
    (``param_bits`` each), then the bias (the export's exact width)."""
    C, K, pb = q.cfg.conv_dim, q.cfg.d_conv, q.spec.param_bits
    order = np.arange(C) if order is None else np.asarray(order)
    bb = q.conv_b_bits
    lane_bits = K * pb + bb
    n_beats = -(-pe * lane_bits // beat_bits)
    out: list[int] = []
    for g in range(C // pe):
        rec = 0
        for lane, ch in enumerate(order[g * pe: (g + 1) * pe]):
            word = pack_fields(q.conv_w[ch], pb) | ((int(q.conv_b[ch]) & ((1 << bb) - 1))
                                                    << (K * pb))
            rec |= word << (lane * lane_bits)
        out += split_record(rec, n_beats, beat_bits)
    return out


def scan_beats(q, values_per_beat: int, value_bits: int, beat_bits: int) -> list[int]:
    """The scan's per-head constants: dt_bias of every head, then ``A`` (``exp(A_log)
    log2 e``), then ``D``; ``values_per_beat`` values of ``value_bits`` a beat."""
    values = np.concatenate([q.dt_bias, q.a2, q.d_skip])
    return [pack_fields(values[i: i + values_per_beat], value_bits)
            for i in range(0, len(values), values_per_beat)]


def layer_sections(lc) -> dict[str, list[int]]:
    """One token's beats of a :class:`~rtl.layer.BiMambaLayer`, per section."""
    q, W = lc.q, lc.beat_bits
    return {
        "norm_in": norm_beats(q.norm_in, lc.pe, W),
        "in_proj": projection_beats(lc.in_proj, q.in_proj, lc.in_proj_rows()),
        "scan": scan_beats(q, lc.scan_values_per_beat, lc.scan_value_bits, W),
        "conv": conv_beats(q, lc.pe, W, lc.conv_order()),
        "norm_out": norm_beats(q.norm_out, lc.pe, W),
        "out_proj": projection_beats(lc.out_proj, q.out_proj),
    }


def layer_beats(lc) -> list[int]:
    """One token's ``mem`` beats of a :class:`~rtl.layer.BiMambaLayer`, in stream order.

    Raises
    ------
    ValueError
        If a section's length differs from the count the engine's demultiplexer expects.
    """
    from .layer import SECTIONS

    sections = layer_sections(lc)
    want = lc.section_beats()
    for name in SECTIONS:
        if len(sections[name]) != want[name]:
            raise ValueError(f"section {name}: {len(sections[name])} beats packed, the engine "
                             f"reads {want[name]}")
    return [b for name in SECTIONS for b in sections[name]]


def embedding_beats(lmc, token: int) -> list[int]:
    """The embedding row of ``token`` for :class:`~rtl.lm.BiMambaLM`: a record of ``pe``
    residual values per group of ``pe`` columns."""
    row = lmc.export.embedding[int(token)]
    out: list[int] = []
    for g in range(len(row) // lmc.pe):
        out += split_record(pack_fields(row[g * lmc.pe: (g + 1) * lmc.pe], lmc.res_bits),
                            lmc.emb_record_beats, lmc.beat_bits)
    return out


def head_beats(lmc) -> list[int]:
    """The head rows (the tied embedding in ``head_bits``), row after row, each
    ``head_row_beats`` beats of ``head_values_per_beat`` weights (the last zero padded)."""
    hb, n = lmc.export.spec.head_bits, lmc.head_values_per_beat
    out: list[int] = []
    for row in lmc.export.head:
        out += [pack_fields(row[i: i + n], hb) for i in range(0, len(row), n)]
    return out


def lm_static_beats(lmc) -> list[int]:
    """The part of a token's stream that does not depend on the token: every layer's sections,
    the final norm's gains, the head rows."""
    beats: list[int] = []
    for i in range(lmc.n_layer):
        beats += layer_beats(lmc.layer_config(i))
    beats += norm_beats(lmc.export.norm_f, lmc.pe, lmc.beat_bits)
    beats += head_beats(lmc)
    return beats


def lm_beats(lmc, token: int, static: list[int] | None = None) -> list[int]:
    """One token's ``mem`` beats of a :class:`~rtl.lm.BiMambaLM` (``static``:
    :func:`lm_static_beats`, computed once for many tokens).

    Raises
    ------
    ValueError
        If a section's length differs from the count the engine's demultiplexer expects.
    """
    static = lm_static_beats(lmc) if static is None else static
    emb = embedding_beats(lmc, token)
    want = lmc.section_beats()
    if len(emb) != want["embedding"] or len(static) != lmc.beats_per_token - len(emb):
        raise ValueError(f"packed {len(emb)} + {len(static)} beats, the engine reads "
                         f"{want['embedding']} + {lmc.beats_per_token - want['embedding']}")
    return emb + static
