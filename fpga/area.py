"""FPGA area per XNOR array bit and per scan lane, measured, and scaled to a design point.

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

__all__ = ["AREA_JSON", "RESOURCES", "FITTED", "TERMS", "fit_linear", "fit_area", "load_area",
           "area_estimate", "main"]

AREA_JSON = Path(__file__).with_name("area.json")
RESOURCES = ("lut4", "ff", "bram", "dsp")
FITTED = ("lut4", "ff", "dsp")  # block RAM is a mapping choice, not a line (module docstring)
# Fit terms per unit: name -> the design parameters it counts.
TERMS = {
    "xnor_lane": {"array_bit": lambda p: p["simd"] * p["pe"], "row": lambda p: p["pe"]},
    "scan_lane": {"lane": lambda p: p["lanes"]},
}


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


def fit_area(rows: list[dict], device: str = "ecp5-85k") -> dict:
    """The content of ``fpga/area.json`` from summary rows (:func:`fpga.flow.main`'s output).

    Raises
    ------
    ValueError
        If the projection or the scan has too few results on ``device`` for its fit.
    """
    from .units import PROJ_SHAPE, SCAN_SHAPE

    out = {}
    for key, unit in (("xnor_lane", "xnor_projection"), ("scan_lane", "ssm_scan")):
        pts = _points(rows, unit, device, key)
        try:
            out[key] = _fits(pts, key)
        except ValueError as e:
            raise ValueError(f"{unit} on {device}: {e}; run python -m fpga.flow {unit}") \
                from None
        out[key] = {"points": pts, "fit": out[key]}
    part = next(r["part"] for r in rows if r["device"] == device)
    tools = next(r["tools"] for r in rows if r["device"] == device)
    nheads = SCAN_SHAPE["expand"] * SCAN_SHAPE["d_model"] // SCAN_SHAPE["headdim"]
    return {
        "device": device, "part": part, "tools": tools,
        "method": "least-squares linear fit per resource (lut4, ff, dsp) to the terms; block "
                  "RAM not fitted (taken from the nearest measured point)",
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
    }


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
    ap.add_argument("--summary", default="build/fpga/summary.json",
                    help="the flow's summary to fit (default: build/fpga/summary.json)")
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
    summary = Path(args.summary)
    if not summary.is_file():
        ap.error(f"argument --summary: {summary} is not a file (run python -m fpga.flow)")
    try:
        area = fit_area(json.loads(summary.read_text()))
    except ValueError as e:
        ap.error(f"argument --summary: {e}")
    Path(args.out).write_text(json.dumps(area, indent=1) + "\n")
    for key in ("xnor_lane", "scan_lane"):
        for k, f in area[key]["fit"].items():
            terms = " + ".join(f"{f[t]:g} * {area[key]['terms'][t]}" for t in TERMS[key])
            print(f"{key} {k} = {f['base']:g} + {terms} (worst residual {f['max_residual']:g}, "
                  f"{f['max_rel_residual']:.1%})")
    print(f"{args.out} written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
