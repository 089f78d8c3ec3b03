"""The unit configurations the FPGA flow builds.

Each :class:`Build` names a unit, a configuration and the devices it is built for, and makes
the Amaranth component on demand (elaboration is fast; exports are cached per process).

Glossary: ``simd`` × ``pe`` is the XNOR array (input lanes × output rows, one array bit per
product), ``lanes`` the state elements the scan updates per cycle, H / P / N the scan's heads,
head dimension and state size.

* ``xnor_projection``: :class:`rtl.xnor_projection.XnorProjection`, d_in 256 × d_out 64, 8
  activation planes, 16-bit beta, multiplier and output (the ``rtl.emit`` defaults), at
  (simd, pe) = (8, 2), (16, 4), (32, 8) and (64, 16); and (8, 2) and (16, 4) with the tail
  shared by the rows (``tail_lanes`` 1, the ``_t1`` builds: one multiplier set instead of
  ``pe``), the configuration for the iCE40 UP5K and its 8 DSPs.
* ``ssm_scan``: :class:`rtl.ssm_scan.SsmScan` for H 2, P 8, N 16 (d_model 8, expand 2, from a
  synthetic checkpoint as ``tests/test_ssm_scan.py`` builds it), 1, 4 and 16 lanes.
* the layer engine on the ``tiny`` preset (d_model 64, N 16, P 16, H 8), exported as
  ``rtl.emit`` exports it (``model.evaluate.sqnr.prepare``, seed 0), ``LayerConfig(q, simd=16,
  pe=4, lanes=4)``: ``stream_projection`` (in_proj, out_proj), ``rms_norm`` (norm_in,
  norm_out), ``conv``, ``gate`` and the whole ``layer`` (:class:`rtl.layer.BiMambaLayer`).
* ``layer_s{simd}_p{pe}_l{lanes}``: the same whole layer engine at the sizes of
  :data:`LAYER_SIZES`, for the whole-engine area fit (:mod:`fpga.area`; ``--pack-only`` gives
  their resources in seconds of nextpnr). The fit's points span the XNOR array (32 to 256
  bits), ``pe`` (2 to 8) and the scan lanes (2 to 16) independently; one size inside that
  range and one beyond it are held out of the fit and checked against it.
* ``lm``: the whole-model engine (:class:`rtl.lm.BiMambaLM`: embedding, one layer engine for
  every layer, final norm, head) for the shipped Shakespeare student exported as ``make demo``
  exports it (calibrated on the first 4,096 bytes of the training split: ``make data`` first),
  at a 4-byte weight beat (:data:`LM_SHAPE`: 16 x 2, 4 lanes), every layer's state on chip,
  its multipliers floorplanned by unit (:data:`LM_FLOORPLAN`, :mod:`fpga.floorplan`).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Build", "BUILDS", "PROJ_SHAPE", "SCAN_SHAPE", "LAYER_SHAPE", "LAYER_SIZES",
           "LAYER_HELD_OUT", "LM_SHAPE", "LM_FLOORPLAN", "builds_named"]

# d_in, d_out, act_bits of the XNOR projection builds.
PROJ_SHAPE = {"d_in": 256, "d_out": 64, "act_bits": 8}
# BiMambaConfig arguments of the scan builds: H = expand * d_model / headdim = 2.
SCAN_SHAPE = {"d_model": 8, "expand": 2, "headdim": 8, "d_state": 16}
# The layer-engine builds: preset, seed and LayerConfig parameters.
LAYER_SHAPE = {"preset": "tiny", "seed": 0, "simd": 16, "pe": 4, "lanes": 4}
# (simd, pe, lanes) of the whole layer engines the area fit is made on (LAYER_SHAPE's size is
# the build "layer"), and those held out of it to check it: one inside the fitted range, one
# beyond it (twice the array and the pe of any fitted point).
LAYER_SIZES = ((8, 4, 2), (16, 4, 4), (16, 2, 8), (32, 4, 8), (16, 8, 16), (32, 8, 4))
LAYER_HELD_OUT = ((8, 8, 8), (32, 16, 8))
# The whole-model build: the shipped student's engine on one ECP5-85F, a 4-byte beat (the
# ULX3S's SDRAM gives 2.7 bytes a cycle at 125 MHz). The engine LMConfig.sized_for gives for
# 4 bytes a cycle (8 x 4, 8 lanes, the state on chip) needs 180 of the 156 MULT18X18D and 212
# of the 208 DP16KD (place-and-route, 2026-12-04). The same beat as 16 x 2 with 4 lanes fits
# with every layer's state on chip (120 multipliers, 197 block RAMs: 36 banks of the SSM
# state). Placed freely it did not route in 30 minutes (80,052 of 156,661 arcs left); with
# the multipliers floorplanned (LM_FLOORPLAN) it routes in 15 to 22 minutes. With the state
# through the state port in the board's SDRAM it takes 62 block RAMs, but the SDRAM then
# carries 0.65 MB of state a token beside 0.95 MB of weights.
LM_SHAPE = {"bytes_per_cycle": 4, "simd": 16, "pe": 2, "lanes": 4, "state": "chip"}
# The whole-model build's multipliers by unit, in dataflow order (fpga.floorplan): placed freely
# the top did not route in 30 minutes with its state on chip, nor in 38 with it in SDRAM;
# floorplanned, it routes in 15 and 7 (beside another build).
LM_FLOORPLAN = ("layer.norm_in", "layer.in_proj", "layer.conv", "layer.scan", "layer.gate",
                "layer.norm_out", "layer.out_proj", "norm_f", "head")


@dataclass(frozen=True)
class Build:
    """One unit at one configuration.

    Members
    -------
    name : str
        Unique id, also the folder and top module name (``xnor_projection_s16_p4``).
    unit : str
        The generator (``xnor_projection``, ``ssm_scan``, ``stream_projection``, ...).
    config : str
        The configuration in words, as the tables print it.
    params : dict
        The configuration as numbers (``simd``, ``pe``, ``lanes``...), for the area fit.
    devices : tuple of str
        Devices it is built for by default (keys of :data:`fpga.flow.DEVICES`).
    make : callable
        Returns a fresh component.
    sizing : bool
        A size point of the whole-engine area fit: left out of a run that names no builds
        (``make fpga`` packs them, ``--pack-only``, rather than placing them).
    floorplan : tuple of str
        Units (cell-name prefixes) in dataflow order whose multipliers :mod:`fpga.floorplan`
        locks to consecutive DSP sites before placement; empty: placed freely.
    seeds : tuple of int
        nextpnr's placement seeds when the command line names none: one, or a seed sweep
        whose fastest implementation is kept (:func:`fpga.flow.run_build`).
    pins : bool
        Placed in context rather than out of context (ECP5): every port bit on a package pin
        (placed by nextpnr; no board's pinout), the clock on a global network, and the
        routed design packed into a bitstream by ``ecppack``.
    by_default : bool
        Run by a command line that names no builds (``make fpga``); otherwise only when named.
    """

    name: str
    unit: str
    config: str
    params: dict = field(hash=False, compare=False)
    devices: tuple[str, ...]
    make: Callable = field(hash=False, compare=False, repr=False)
    sizing: bool = False
    floorplan: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1,)
    pins: bool = False
    by_default: bool = True


# The whole engines span the die, and where their handshakes land moves their Fmax by up to
# 23 MHz from one placement seed to the next (docs/fpga.md, "Speed grade 8"): they are placed
# at these seeds and the fastest implementation kept, every seed's result in the row.
ENGINE_SEEDS = (1, 2, 3)


@functools.cache
def _scan_export():
    import torch

    from model.reference.checkpoint import load_block, synthetic_state_dict
    from model.config import BiMambaConfig
    from model.reference.checkpoint import synthetic_residual
    from model.golden.quantize import QuantSpec, export_layer

    cfg = BiMambaConfig(n_layer=1, vocab_size=256, **SCAN_SHAPE)
    block = load_block(synthetic_state_dict(cfg, 0), cfg, 0, torch.float64)
    return export_layer(block, QuantSpec(), synthetic_residual(cfg, 32, 1))


@functools.cache
def _layer_export():
    from model.config import get_preset
    from model.evaluate.sqnr import prepare
    from model.golden.quantize import QuantSpec, export_layer

    p = prepare(get_preset(LAYER_SHAPE["preset"]), 1, LAYER_SHAPE["seed"])
    return export_layer(p.block, QuantSpec(), stats=p.calib)


@functools.cache
def _layer_config(simd: int = LAYER_SHAPE["simd"], pe: int = LAYER_SHAPE["pe"],
                  lanes: int = LAYER_SHAPE["lanes"]):
    from rtl.layer import LayerConfig

    return LayerConfig(_layer_export(), simd, pe, lanes)


def _xnor(simd: int, pe: int, tail_lanes: int | None = None):
    from rtl.xnor_projection import ProjectionConfig, XnorProjection

    return XnorProjection(ProjectionConfig(
        d_in=PROJ_SHAPE["d_in"], d_out=PROJ_SHAPE["d_out"], simd=simd, pe=pe,
        act_bits=PROJ_SHAPE["act_bits"], beta_bits=16, beta_frac=16, mult_bits=16,
        mult_frac=16, out_bits=16, tail_lanes=tail_lanes))


def _scan(lanes: int):
    from rtl.ssm_scan import ScanConfig, SsmScan

    return SsmScan(ScanConfig(_scan_export(), lanes))


def _stream_projection(which: str):
    from rtl.stream_projection import StreamProjection

    lc = _layer_config()
    return StreamProjection(lc.in_proj if which == "in_proj" else lc.out_proj)


def _gate():
    from rtl.layer_units import GateUnit

    lc = _layer_config()
    return GateUnit(lc.q, lc.pe)


def _layer(simd: int = LAYER_SHAPE["simd"], pe: int = LAYER_SHAPE["pe"],
           lanes: int = LAYER_SHAPE["lanes"]):
    from rtl.layer import BiMambaLayer

    return BiMambaLayer(_layer_config(simd, pe, lanes))


@functools.cache
def _lm_config():
    from model.evaluate.lm import shipped_golden
    from rtl.lm import LMConfig

    _, q = shipped_golden()
    m = LM_SHAPE
    c = LMConfig(q, m["simd"], m["pe"], m["lanes"], state=m["state"])
    if c.beat_bits != 8 * m["bytes_per_cycle"]:
        raise ValueError(f"LM_SHAPE's array {m['simd']} x {m['pe']} is a {c.beat_bits}-bit "
                         f"beat, not {m['bytes_per_cycle']} bytes")
    return c


def _lm():
    from rtl.lm import BiMambaLM

    return BiMambaLM(_lm_config())


def _builds() -> list[Build]:
    out = []
    proj = f"{PROJ_SHAPE['d_in']}x{PROJ_SHAPE['d_out']}, {PROJ_SHAPE['act_bits']} planes"
    for simd, pe in ((8, 2), (16, 4), (32, 8), (64, 16)):
        devices = ("ecp5-85k", "ice40-up5k") if simd * pe <= 64 else ("ecp5-85k",)
        out.append(Build(f"xnor_projection_s{simd}_p{pe}", "xnor_projection",
                         f"{proj}, simd {simd}, pe {pe}", {"simd": simd, "pe": pe},
                         devices, functools.partial(_xnor, simd, pe)))
    for simd, pe in ((8, 2), (16, 4)):
        out.append(Build(f"xnor_projection_s{simd}_p{pe}_t1", "xnor_projection",
                         f"{proj}, simd {simd}, pe {pe}, tail 1 row",
                         {"simd": simd, "pe": pe, "tail_lanes": 1},
                         ("ecp5-85k", "ice40-up5k"), functools.partial(_xnor, simd, pe, 1)))
    h = SCAN_SHAPE["expand"] * SCAN_SHAPE["d_model"] // SCAN_SHAPE["headdim"]
    scan = f"H{h} P{SCAN_SHAPE['headdim']} N{SCAN_SHAPE['d_state']}"
    for lanes in (1, 4, 16):
        devices = ("ecp5-85k", "ice40-up5k") if lanes == 1 else ("ecp5-85k",)
        out.append(Build(f"ssm_scan_l{lanes}", "ssm_scan", f"{scan}, {lanes} lane"
                         f"{'s' if lanes > 1 else ''}", {"lanes": lanes}, devices,
                         functools.partial(_scan, lanes)))
    s = LAYER_SHAPE
    layer = f"{s['preset']}, simd {s['simd']}, pe {s['pe']}"
    lp = {"simd": s["simd"], "pe": s["pe"], "lanes": s["lanes"]}
    for which in ("in_proj", "out_proj"):
        out.append(Build(f"stream_projection_{which}", "stream_projection",
                         f"{layer}, {which}", lp, ("ecp5-85k",),
                         functools.partial(_stream_projection, which)))
    for which in ("norm_in", "norm_out"):
        out.append(Build(f"rms_norm_{which}", "rms_norm", f"{layer}, {which}", lp,
                         ("ecp5-85k",),
                         lambda which=which: _layer_config().norm_unit(which)))
    out.append(Build("conv", "conv", layer, lp, ("ecp5-85k",),
                     lambda: _layer_config().conv_unit()))
    out.append(Build("gate", "gate", f"{s['preset']}, pe {s['pe']}", lp, ("ecp5-85k",), _gate))
    out.append(Build("layer", "layer", f"{layer}, lanes {s['lanes']}", lp, ("ecp5-85k",),
                     _layer, seeds=ENGINE_SEEDS))
    for simd, pe, lanes in LAYER_SIZES + LAYER_HELD_OUT:
        if (simd, pe, lanes) == (s["simd"], s["pe"], s["lanes"]):
            continue  # the build "layer"
        out.append(Build(f"layer_s{simd}_p{pe}_l{lanes}", "layer",
                         f"{s['preset']}, simd {simd}, pe {pe}, lanes {lanes}",
                         {"simd": simd, "pe": pe, "lanes": lanes}, ("ecp5-85k",),
                         functools.partial(_layer, simd, pe, lanes), sizing=True))
    m = LM_SHAPE
    where = "SDRAM" if m["state"] == "memory" else "block RAM"
    out.append(Build("lm", "lm", f"Shakespeare student, simd {m['simd']}, pe {m['pe']}, lanes "
                     f"{m['lanes']}, state in {where}",
                     {k: m[k] for k in ("simd", "pe", "lanes", "state")}, ("ecp5-85k",), _lm,
                     floorplan=LM_FLOORPLAN, seeds=ENGINE_SEEDS))
    # The same top in context on the OrangeCrab's grade: its 83 port bits on pins, a bitstream.
    # Named only: placed so (seed 1, 2026-12-06) it had not routed after 36 minutes of routing,
    # 7,300 to 9,500 arcs still left (out of context the top routes in 7 minutes).
    out.append(Build("lm_pins", "lm", f"Shakespeare student, simd {m['simd']}, pe {m['pe']}, "
                     f"lanes {m['lanes']}, state in {where}, streams on pins, bitstream",
                     {k: m[k] for k in ("simd", "pe", "lanes", "state")}, ("ecp5-85k-8",), _lm,
                     floorplan=LM_FLOORPLAN, pins=True, by_default=False))
    return out


BUILDS: dict[str, Build] = {b.name: b for b in _builds()}


def builds_named(names: list[str]) -> list[Build]:
    """The builds with these names or units (``ssm_scan`` selects every scan build), or whose
    names match a shell pattern (``'layer_s*'``: the size points of the area fit).

    Raises
    ------
    ValueError
        If a name is neither a build nor a unit; the message lists the allowed names.
    """
    units = {b.unit for b in BUILDS.values()}
    out: list[Build] = []
    for n in names:
        if n in BUILDS:
            sel = [BUILDS[n]]
        elif n in units:
            sel = [b for b in BUILDS.values() if b.unit == n]
        elif any(c in n for c in "*?[") and fnmatch.filter(BUILDS, n):
            sel = [BUILDS[b] for b in fnmatch.filter(BUILDS, n)]
        else:
            raise ValueError(f"{n!r} is not a build, a unit or a pattern that matches a "
                             f"build; allowed: {', '.join(sorted(units))}, {', '.join(BUILDS)}")
        out += [b for b in sel if b not in out]
    return out
