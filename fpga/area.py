"""FPGA area of the whole layer engine, and per XNOR array bit and scan lane, measured, and
scaled to a design point.

``fpga/area.json`` holds, for one device, the flow's results (:mod:`fpga.flow`) of the XNOR
projection at several (simd, pe) and of the scan at several lane counts, and a least-squares
linear fit of each resource to the terms that scale:

* projection: ``base + array_bit * (simd * pe) + row * pe``. An array bit is one XNOR lane (its
  share of the popcount trees and weight memory); a row is one output lane's post-popcount
  tail (correction, beta term, requantising multiply: 2 DSPs a row). With LUT4 against array
  bits alone the worst residual on the measured points is 19 %; with the row term it is 2 %;
* scan: ``base + lane * lanes`` (a lane is one state element updated per cycle: its multiply
  and add; the softplus and exp2 tables are in the base).

:func:`area_estimate` evaluates those fits: it is a linear fit, nothing more, and each fit
keeps its worst residual. Block RAM is not fitted: whether a memory becomes block RAM or LUT RAM
is Yosys's choice by shape (the widest array maps every memory of the projection to LUT RAM),
not a count that grows with the array; the estimate takes the block RAMs of the nearest
measured point and says which.

The whole layer engine (``layer_engine``, :func:`fit_engine`): every unit of
:class:`rtl.layer.BiMambaLayer` (norms, projections, conv, scan, gate, FIFOs), measured at the
sizes of :data:`fpga.units.LAYER_SIZES` on the tiny shape (``make fpga`` packs them:
nextpnr's resource counts without placement), fitted per resource (LUT4, FF, DSP and block
RAM) to ``base + array_bit * (simd * pe) + row * pe + lane * lanes``, and checked against the
engines of :data:`fpga.units.LAYER_HELD_OUT` that were not fitted. :func:`engine_estimate`
takes it to a model's own shape: the RAMs that grow with the model (the SSM and conv state,
activation buffers and FIFOs; :func:`layer_memories`, compared with the elaborated engine by
the tests) are counted in block RAMs at that shape (:func:`ecp5_blocks`) in place of the tiny
engine's. At the tiny shape the block RAMs are the nonlinear tables (two per element-wise
lane) and the state's banks, a line in ``pe`` and the lanes.

``python -m fpga.area`` refits ``fpga/area.json`` from ``build/fpga/summary.json``;
``python -m fpga.area --simd 32 --pe 8 --lanes 4`` prints an estimate. Usage errors are one
line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["AREA_JSON", "RESOURCES", "FITTED", "TERMS", "ENGINE_TERMS", "fit_linear",
           "fit_area", "fit_engine", "load_area", "area_estimate", "engine_estimate",
           "layer_memories", "ecp5_blocks", "main"]

AREA_JSON = Path(__file__).with_name("area.json")
RESOURCES = ("lut4", "ff", "bram", "dsp")
FITTED = ("lut4", "ff", "dsp")  # block RAM is a mapping choice, not a line (module docstring)
# Fit terms per unit: name -> the design parameters it counts.
TERMS = {
    "xnor_lane": {"array_bit": lambda p: p["simd"] * p["pe"], "row": lambda p: p["pe"]},
    "scan_lane": {"lane": lambda p: p["lanes"]},
}


# Terms of the whole layer engine's fit (every unit: norms, projections, conv, scan, gate,
# FIFOs): the array's bits, its rows (pe is also the lane count of every element-wise unit, and
# each such lane has its own SiLU tables), the scan lanes.
ENGINE_TERMS = {"array_bit": lambda p: p["simd"] * p["pe"], "column": lambda p: p["simd"],
                "row": lambda p: p["pe"], "lane": lambda p: p["lanes"]}
# The ECP5's block RAM (DP16KD, 18 Kbit): its aspect ratios as depth x width, the 36-bit one
# pseudo-dual-port (PDPW16KD), as Yosys's memory mapping may use it.
ECP5_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def fit_linear(terms: dict[str, list[float]], ys: list[float]) -> dict:
    """Least-squares ``y = base + sum(coef[t] * terms[t])``, with the worst residual.

    Returns
    -------
    dict
        ``base``, one coefficient per term, ``max_residual`` and ``max_rel_residual`` (as a
        fraction of the measured value) over the points.

    Raises
    ------
    ValueError
        If there are fewer points than unknowns, or the terms do not vary independently.
    """
    names = list(terms)
    a = np.column_stack([np.ones(len(ys))] + [np.asarray(terms[t], float) for t in names])
    if len(ys) < a.shape[1] or np.linalg.matrix_rank(a) < a.shape[1]:
        raise ValueError(f"fitting base + {' + '.join(names)} needs at least {a.shape[1]} "
                         f"points where the terms vary independently, not {len(ys)}")
    y = np.asarray(ys, float)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    # + 0.0 turns a rounded -0.0 into 0.0
    out = {"base": round(float(coef[0]), 2) + 0.0}
    out.update({t: round(float(c), 3) + 0.0 for t, c in zip(names, coef[1:])})
    out["max_residual"] = round(float(np.abs(resid).max()), 1)
    out["max_rel_residual"] = round(float((np.abs(resid) / np.maximum(np.abs(y), 1)).max()), 3)
    return out


def _points(rows: list[dict], unit: str, device: str, key: str) -> list[dict]:
    pts = []
    for r in rows:
        # The projection fit is of the tail per row (tail_lanes = pe, the default).
        shared = r["params"].get("tail_lanes", r["params"].get("pe")) != r["params"].get("pe")
        if (r["unit"] == unit and r["device"] == device and r.get("fmax_mhz") is not None
                and not shared):
            pts.append({"build": r["build"], **r["params"],
                        **{t: f(r["params"]) for t, f in TERMS[key].items()},
                        **{k: r[k] for k in RESOURCES}, "lutram_lut4": r.get("lutram_lut4"),
                        "fmax_mhz": r["fmax_mhz"]})
    first = next(iter(TERMS[key]))
    return sorted(pts, key=lambda p: p[first])


def _fits(points: list[dict], key: str) -> dict:
    terms = {t: [p[t] for p in points] for t in TERMS[key]}
    return {k: fit_linear(terms, [p[k] for p in points]) for k in FITTED}


def fit_area(rows: list[dict], device: str = "ecp5-85k", previous: dict | None = None) -> dict:
    """The content of ``fpga/area.json`` from summary rows (:func:`fpga.flow.main`'s output).
    A fit whose builds are not among ``rows`` (a unit's, or the whole engine's) is kept from
    ``previous`` (the file being refitted), so that each can be redone from its own builds.

    Raises
    ------
    ValueError
        If the projection or the scan has too few results on ``device`` for its fit (and
        ``previous`` has none), or a whole engine of the fit is missing.
    """
    from .units import PROJ_SHAPE, SCAN_SHAPE

    out = {}
    for key, unit in (("xnor_lane", "xnor_projection"), ("scan_lane", "ssm_scan")):
        pts = _points(rows, unit, device, key)
        if not pts and previous and previous.get("device") == device and key in previous:
            out[key] = {"points": previous[key]["points"], "fit": previous[key]["fit"]}
            continue
        try:
            fit = _fits(pts, key)
        except ValueError as e:
            raise ValueError(f"{unit} on {device}: {e}; run python -m fpga.flow {unit}") \
                from None
        out[key] = {"points": pts, "fit": fit}
    dev_rows = [r for r in rows if r["device"] == device]
    if not dev_rows:
        raise ValueError(f"no result on {device}")
    part, tools = dev_rows[0]["part"], dev_rows[0]["tools"]
    nheads = SCAN_SHAPE["expand"] * SCAN_SHAPE["d_model"] // SCAN_SHAPE["headdim"]
    return {
        "device": device, "part": part, "tools": tools,
        "method": "least-squares linear fit per resource (lut4, ff, dsp) to the terms; block "
                  "RAM not fitted for the units (taken from the nearest measured point); the "
                  "whole engine's fitted for all four (layer_engine)",
        "xnor_lane": {
            "terms": {"array_bit": "simd * pe", "row": "pe"},
            "measured_on": {**PROJ_SHAPE, "beta_bits": 16, "mult_bits": 16, "out_bits": 16},
            **out["xnor_lane"],
        },
        "scan_lane": {
            "terms": {"lane": "lanes"},
            "measured_on": {**SCAN_SHAPE, "nheads": nheads},
            **out["scan_lane"],
        },
        "layer_engine": (previous["layer_engine"]
                         if previous and previous.get("device") == device
                         and "layer_engine" in previous
                         and not any(r["unit"] == "layer" and r["device"] == device
                                     for r in rows)
                         else fit_engine(rows, device)),
    }


def _engine_points(rows: list[dict], device: str, sizes) -> list[dict]:
    """The whole layer engines of ``rows`` at ``sizes`` ((simd, pe, lanes) tuples), with
    their terms and their tables in block RAM; packed-only rows count (their resources are a
    full build's), also those whose cells exceed the device (a count, not a placement)."""
    pts = []
    for r in rows:
        p = r["params"]
        counted = r.get("fits", True) or r.get("fit_note", "").endswith("(packed)")
        if (r["unit"] == "layer" and r["device"] == device and counted and r["lut4"] > 0
                and (p["simd"], p["pe"], p["lanes"]) in sizes):
            tables = sum(1 for m in r.get("memories", [])
                         if m["rom"] and m["kind"] == "block RAM")
            pts.append({"build": r["build"], "simd": p["simd"], "pe": p["pe"],
                        "lanes": p["lanes"],
                        **{t: f(p) for t, f in ENGINE_TERMS.items()},
                        **{k: r[k] for k in RESOURCES}, "table_bram": tables,
                        "lutram_lut4": r.get("lutram_lut4"), "fmax_mhz": r["fmax_mhz"]})
    return sorted(pts, key=lambda q: (q["array_bit"], q["row"], q["lane"]))


def fit_engine(rows: list[dict], device: str = "ecp5-85k") -> dict:
    """The whole layer engine's fit (``fpga/area.json``'s ``layer_engine``) over the engines
    of :data:`fpga.units.LAYER_SIZES`: a least-squares line per resource (LUT4, FF, DSP) in
    :data:`ENGINE_TERMS`, and one in ``pe`` for the nonlinear tables that Yosys put in block
    RAM (two per element-wise lane, and the norms' and scan's). Block RAM is then the tables
    plus the RAMs of :func:`layer_memories` counted by :func:`ram_blocks`, as
    :func:`engine_estimate` counts it at any shape. Every fitted engine gets its estimate
    and error (``checks``), and so do the engines of :data:`fpga.units.LAYER_HELD_OUT`,
    which the fit did not see (``held_out``).

    Raises
    ------
    ValueError
        If an engine of either list has no result on ``device``.
    """
    from .units import LAYER_HELD_OUT, LAYER_SHAPE, LAYER_SIZES

    pts = _engine_points(rows, device, set(LAYER_SIZES))
    held = _engine_points(rows, device, set(LAYER_HELD_OUT))
    for want, got, what in ((LAYER_SIZES, pts, "fitted"), (LAYER_HELD_OUT, held, "held out")):
        have = {(p["simd"], p["pe"], p["lanes"]) for p in got}
        miss = [f"layer (simd, pe, lanes) = {w}" for w in want if w not in have]
        if miss:
            raise ValueError(f"the whole-engine fit needs a result on {device} of every "
                             f"{what} engine; missing: {', '.join(miss)}; run python -m "
                             f"fpga.flow --device {device} --pack-only 'layer*'")
    terms = {t: [p[t] for p in pts] for t in ENGINE_TERMS}
    fit = {k: fit_linear(terms, [p[k] for p in pts]) for k in FITTED}
    fit["table_bram"] = fit_linear({"row": terms["row"]}, [p["table_bram"] for p in pts])
    eng = {"measured_on": {"preset": LAYER_SHAPE["preset"], "seed": LAYER_SHAPE["seed"]},
           "fit": fit}

    def check(p: dict) -> dict:
        from model.config import get_preset
        from model.golden.quantize import QuantSpec

        est = engine_estimate(get_preset(LAYER_SHAPE["preset"]), QuantSpec(), p["simd"],
                              p["pe"], p["lanes"], area={"layer_engine": {**eng,
                                                                          "points": pts}})
        return {"build": p["build"], "simd": p["simd"], "pe": p["pe"], "lanes": p["lanes"],
                "inside": all(min(q[t] for q in pts) <= p[t] <= max(q[t] for q in pts)
                              for t in ENGINE_TERMS),
                "measured": {k: p[k] for k in RESOURCES},
                "estimate": {k: est[k] for k in RESOURCES},
                "rel_error": {k: round((est[k] - p[k]) / max(p[k], 1), 3) for k in RESOURCES}}

    return {
        "terms": {"array_bit": "simd * pe", "column": "simd", "row": "pe", "lane": "lanes"},
        **eng, "points": pts, "checks": [check(p) for p in pts],
        "held_out": [check(p) for p in held],
    }


def _engine_line(fit: dict, simd: int, pe: int, lanes: int) -> dict[str, int]:
    x = {t: f({"simd": simd, "pe": pe, "lanes": lanes}) for t, f in ENGINE_TERMS.items()}
    out = {}
    for k in FITTED:
        v = max(0.0, fit[k]["base"] + sum(fit[k][t] * x[t] for t in x))
        out[k] = math.ceil(v - 1e-6) if k == "dsp" else round(v)
    t = fit["table_bram"]
    out["table_bram"] = math.ceil(max(0.0, t["base"] + t["row"] * pe) - 1e-6)
    return out


def ecp5_blocks(depth: int, width: int) -> int:
    """ECP5 block RAMs of a ``depth`` x ``width`` RAM left to Yosys, at its best aspect ratio
    (:data:`ECP5_BRAM_SHAPES`); none below :data:`rtl.bram.BLOCK_RAM_MIN_DEPTH` words, which
    are LUT RAM (counted in the LUT fit)."""
    from rtl.bram import BLOCK_RAM_MIN_DEPTH

    if depth < BLOCK_RAM_MIN_DEPTH:
        return 0
    return min(-(-depth // d) * -(-width // w) for d, w in ECP5_BRAM_SHAPES)


def ram_blocks(mem: dict) -> int:
    """Block RAMs of one RAM of :func:`layer_memories`: the SSM state as
    :func:`rtl.bram.registered_ram` builds it (:func:`rtl.bram.dp16kd_blocks`), any other as
    :func:`ecp5_blocks`."""
    from rtl.bram import dp16kd_blocks

    if mem["name"] == "scan.state":
        return dp16kd_blocks(mem["width"], mem["depth"])
    return ecp5_blocks(mem["depth"], mem["width"])


def layer_memories(cfg, spec, simd: int, pe: int, lanes: int, slots: int = 1,
                   state_port: bool = False, dt_in_bits: int | None = None) -> list[dict]:
    """The RAMs of :class:`rtl.layer.BiMambaLayer` (its tables aside) for model shape ``cfg``
    and widths ``spec`` (:class:`~model.golden.quantize.QuantSpec`): name, depth (words the
    storage holds), width, and ``kind``, ``"state"`` (the SSM and conv state) or
    ``"buffer"`` (activation buffers and FIFOs). Every one grows with the model's width.

    Written from the generators' sizes; ``tests/test_area_engine.py`` compares it with the
    memories of the elaborated engine. ``dt_in_bits`` (the dt bias's width, a calibrated
    format) defaults to :meth:`rtl.layer.LayerShape.assumed`'s ``data_bits + 2``.
    """
    from rtl.ssm_scan import PREP_LATENCY
    from rtl.state_swap import SAVE_FIFO_DEPTH

    D, E, C, H = cfg.d_model, cfg.d_inner, cfg.conv_dim, cfg.nheads
    P, N, K = cfg.headdim, cfg.d_state, cfg.d_conv
    rb, db, ab = spec.res_bits, spec.data_bits, spec.act_bits
    dt_in = spec.data_bits + 2 if dt_in_bits is None else dt_in_bits
    kept = 1 if state_port else slots
    loop = 1 if slots > 1 else 0
    u_depth = max(D // pe + loop, 3)
    starts = max((u_depth - 1) // (D // pe) + 1, 4)
    fifo_depth = PREP_LATENCY + 3  # rtl.ssm_scan.ScanConfig.fifo_depth
    state_word = lanes * spec.state_bits
    conv_word = pe * (K - 1) * db
    # (name, depth, width, kind); a SyncFIFOBuffered of depth n stores n - 1 words (the last
    # is its read register), a RegisteredFIFO and a SyncFIFO n.
    mems = [
        ("norm_in.buf", max(D // pe, 2), pe * rb, "buffer"),
        ("in_proj.amem", max(D // simd, 2), ab * simd, "buffer"),
        ("conv.state", max(kept * (C // pe), 2), conv_word, "state"),
        ("scan.const0", max(H, 2), dt_in, "buffer"),
        ("scan.const1", max(H, 2), spec.param_bits, "buffer"),
        ("scan.const2", max(H, 2), spec.param_bits, "buffer"),
        ("scan.hfifo.storage", fifo_depth - 1, spec.dt_bits + spec.exp_bits, "buffer"),
        ("scan.xfifo.storage", fifo_depth, P * db, "buffer"),  # rtl.stall.RegisteredFIFO
        ("scan.state", kept * H * P * N // lanes, state_word, "state"),
        ("norm_out.buf", max(E // pe, 2), pe * db, "buffer"),
        ("out_proj.amem", max(E // simd, 2), ab * simd, "buffer"),
        ("ufifo.storage", u_depth, pe * rb, "buffer"),
        ("zfifo.storage", max(E // pe, 3) - 1, pe * db, "buffer"),
        ("xfifo.storage", max(C // pe, 3) - 1, pe * db, "buffer"),
        ("dtfifo.storage", max(-(-H // pe), 3) - 1, pe * db, "buffer"),
        ("start_conv.storage", starts, 1, "buffer"),
        ("start_scan.storage", starts, 1, "buffer"),
    ]
    if state_port:
        mems += [("conv.state_save_fifo.storage", SAVE_FIFO_DEPTH - 1, conv_word, "buffer"),
                 ("scan.state_save_fifo.storage", SAVE_FIFO_DEPTH - 1, state_word, "buffer")]
    return [{"name": n, "depth": d, "width": w, "kind": k} for n, d, w, k in mems]


def engine_estimate(cfg, spec, simd: int, pe: int, lanes: int, state_on_chip: bool = False,
                    area: dict | None = None) -> dict:
    """FPGA resources of the whole layer engine (every unit) at (``simd``, ``pe``,
    ``lanes``) for model shape ``cfg`` and widths ``spec``: LUT4, FF and DSP by the
    whole-engine fit (``fpga/area.json``'s ``layer_engine``, measured at the tiny shape; the
    widths of a larger model are not in it), block RAM as the fitted tables plus the RAMs of
    :func:`layer_memories` at ``cfg``'s shape (:func:`ram_blocks`). With ``state_on_chip``
    the engine keeps every layer's state (``cfg.n_layer`` slots); else the layer being
    computed, the others in memory (the state port).

    Returns
    -------
    dict
        ``lut4``, ``ff``, ``dsp``, ``bram``; ``bram_parts`` (``tables``, ``state``,
        ``buffers``); ``state_bits``; ``extrapolated`` (a term outside the fitted sizes).

    Raises
    ------
    ValueError
        If a parameter is not a positive integer, or ``fpga/area.json`` has no whole-engine
        fit.
    """
    for name, v in (("simd", simd), ("pe", pe), ("lanes", lanes)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    area = area or load_area()
    if "layer_engine" not in area:
        raise ValueError("fpga/area.json has no whole-engine fit ('layer_engine'); run "
                         "python -m fpga.area")
    eng = area["layer_engine"]
    line = _engine_line(eng["fit"], simd, pe, lanes)
    pts = eng["points"]
    point = {"simd": simd, "pe": pe, "lanes": lanes}
    extrapolated = any(not min(p[t] for p in pts) <= f(point) <= max(p[t] for p in pts)
                       for t, f in ENGINE_TERMS.items())
    slots = cfg.n_layer if state_on_chip else 1
    parts = {"tables": line["table_bram"], "state": 0, "buffers": 0}
    for mem in layer_memories(cfg, spec, simd, pe, lanes, slots, not state_on_chip):
        parts["state" if mem["kind"] == "state" else "buffers"] += ram_blocks(mem)
    return {"lut4": line["lut4"], "ff": line["ff"], "dsp": line["dsp"],
            "bram": sum(parts.values()), "bram_parts": parts,
            "state_bits": slots * cfg.nheads * cfg.headdim * cfg.d_state * spec.state_bits,
            "extrapolated": extrapolated}


def load_area(path: Path | None = None) -> dict:
    """The fitted area data (default: ``fpga/area.json``)."""
    return json.loads(Path(path or AREA_JSON).read_text())


def area_estimate(simd: int, pe: int, lanes: int, area: dict | None = None) -> dict:
    """FPGA resources of one XNOR projection (``simd`` × ``pe``) and one scan unit (``lanes``)
    on the device of ``area`` (default: ``fpga/area.json``, the ECP5-85k), by the linear fits.

    Parameters
    ----------
    simd, pe : int
        XNOR array size: ``simd * pe`` array bits, ``pe`` output rows.
    lanes : int
        Scan lanes.
    area : dict, optional
        :func:`fit_area`'s output.

    Returns
    -------
    dict
        ``projection``, ``scan`` and ``total``, each ``{lut4, ff, bram, dsp}`` (LUT4 and FF
        rounded, DSP rounded up, BRAM of the nearest measured point, named in ``bram_from``),
        plus ``device`` and ``extrapolated`` (True if a term lies outside the measured range;
        the fit is then only a trend).

    Raises
    ------
    ValueError
        If a parameter is not a positive integer.
    """
    for name, v in (("simd", simd), ("pe", pe), ("lanes", lanes)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    area = area or load_area()
    out: dict = {"device": area["device"], "extrapolated": False, "bram_from": {}}
    point = {"simd": simd, "pe": pe, "lanes": lanes}
    for part, key in (("projection", "xnor_lane"), ("scan", "scan_lane")):
        fit, pts = area[key]["fit"], area[key]["points"]
        x = {t: f(point) for t, f in TERMS[key].items()}
        for t, v in x.items():
            out["extrapolated"] |= not min(p[t] for p in pts) <= v <= max(p[t] for p in pts)
        est = {}
        for k in FITTED:
            v = max(0.0, fit[k]["base"] + sum(fit[k][t] * x[t] for t in x))
            est[k] = math.ceil(v - 1e-6) if k == "dsp" else round(v)
        first = next(iter(x))
        near = min(pts, key=lambda p: abs(math.log(p[first]) - math.log(x[first])))
        est["bram"] = near["bram"]
        out["bram_from"][part] = near["build"]
        out[part] = {k: est[k] for k in RESOURCES}
    out["total"] = {k: out["projection"][k] + out["scan"][k] for k in RESOURCES}
    return out


def main(argv: list[str] | None = None) -> int:
    from rtl.cli import CliParser, int_in

    ap = CliParser(prog="python -m fpga.area", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", action="append",
                    help="the flow's summary to fit (repeatable, rows joined; default: "
                         "build/fpga/summary.json)")
    ap.add_argument("-o", "--out", default=str(AREA_JSON),
                    help=f"where to write the fit (default: {AREA_JSON})")
    ap.add_argument("--simd", type=int_in(1, 4096), help="estimate for this simd (with --pe "
                    "and --lanes; reads --out instead of fitting)")
    ap.add_argument("--pe", type=int_in(1, 1024))
    ap.add_argument("--lanes", type=int_in(1, 4096))
    args = ap.parse_args(argv)
    point = [args.simd, args.pe, args.lanes]
    if any(v is not None for v in point):
        if None in point:
            ap.error("arguments --simd, --pe, --lanes: give all three for an estimate, not "
                     + ", ".join(f"--{n}" for n, v in zip(("simd", "pe", "lanes"), point)
                                 if v is not None))
        est = area_estimate(args.simd, args.pe, args.lanes, load_area(Path(args.out)))
        print(json.dumps(est, indent=1))
        return 0
    rows = []
    for summary in map(Path, args.summary or ["build/fpga/summary.json"]):
        if not summary.is_file():
            ap.error(f"argument --summary: {summary} is not a file (run python -m fpga.flow)")
        rows += json.loads(summary.read_text())
    old = Path(args.out)
    previous = json.loads(old.read_text()) if old.is_file() else None
    try:
        area = fit_area(rows, previous=previous)
    except ValueError as e:
        ap.error(f"argument --summary: {e}")
    Path(args.out).write_text(json.dumps(area, indent=1) + "\n")
    for key in ("xnor_lane", "scan_lane"):
        for k, f in area[key]["fit"].items():
            terms = " + ".join(f"{f[t]:g} * {area[key]['terms'][t]}" for t in TERMS[key])
            print(f"{key} {k} = {f['base']:g} + {terms} (worst residual {f['max_residual']:g}, "
                  f"{f['max_rel_residual']:.1%})")
    eng = area["layer_engine"]
    for k in RESOURCES:
        f = eng["fit"][k if k != "bram" else "table_bram"]
        terms = " + ".join(f"{f[t]:g} * {eng['terms'][t]}" for t in ENGINE_TERMS if t in f)
        worst = max(abs(p["rel_error"][k]) for p in eng["checks"])
        held = ", ".join(f"{p['build']} {p['rel_error'][k]:+.1%}" for p in eng["held_out"])
        what = "tables in block RAM" if k == "bram" else k
        print(f"layer_engine {what} = {f['base']:g} + {terms} (worst error on the fitted "
              f"engines {worst:.1%}; held out: {held})")
    print(f"{args.out} written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
