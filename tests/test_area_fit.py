"""The FPGA area fit (``fpga/area.json``, :func:`fpga.area.area_estimate`) at points that were
not measured: between the measured sizes and beside them (flagged as extrapolated), each
figure recomputed here from the fit's coefficients as the JSON file states them (exact decimal
arithmetic, then LUT4 and FF rounded to the nearest, DSP rounded up), the block RAMs taken
from the measured build nearest on a log scale, written out by name.
"""

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from energy.report import main as report_main
from fpga.area import area_estimate

AREA = json.loads((Path(__file__).resolve().parent.parent / "fpga" / "area.json").read_text())
# The ECP5-85F's capacity, from its data sheet: 83,640 LUT4 and as many flip-flops, 208 DP16KD
# block RAMs, 156 18 x 18 multipliers.
ECP5_85F = {"lut4": 83640, "ff": 83640, "bram": 208, "dsp": 156}


def _dec(x: float) -> Fraction:
    """A coefficient of the JSON file as the decimal it is written as."""
    return Fraction(repr(x))


def _by_hand(unit: str, terms: dict[str, int]) -> dict[str, int]:
    """LUT4, FF and DSP of one unit from the fit's coefficients: base + sum(coef * term)."""
    out = {}
    for k in ("lut4", "ff", "dsp"):
        f = AREA[unit]["fit"][k]
        v = max(Fraction(0), _dec(f["base"]) + sum(_dec(f[t]) * n for t, n in terms.items()))
        if k == "dsp":
            out[k] = math.ceil(v)
        else:
            assert v - math.floor(v) != Fraction(1, 2)  # no tie to break
            out[k] = math.floor(v + Fraction(1, 2))
    return out


def test_the_measured_points_are_the_ones_written_here():
    """The measured sizes the expectations below are placed between and beside."""
    proj = [(p["build"], p["array_bit"], p["row"], p["bram"]) for p in AREA["xnor_lane"]["points"]]
    assert proj == [("xnor_projection_s8_p2", 16, 2, 6), ("xnor_projection_s16_p4", 64, 4, 6),
                    ("xnor_projection_s32_p8", 256, 8, 19),
                    ("xnor_projection_s64_p16", 1024, 16, 0)]
    scan = [(p["build"], p["lane"], p["bram"]) for p in AREA["scan_lane"]["points"]]
    assert scan == [("ssm_scan_l1", 1, 3), ("ssm_scan_l4", 4, 6), ("ssm_scan_l16", 16, 2)]


# (simd, pe, lanes), extrapolated, the projection's and the scan's nearest measured build
# (array bits, then lanes, on a log scale).
CASES = [
    # Between: 100 array bits (nearer 64 than 256), 5 rows; 3 lanes (nearer 4 than 1).
    ((20, 5, 3), False, "xnor_projection_s16_p4", "ssm_scan_l4"),
    # Between: 576 array bits (nearer 1024 than 256), 12 rows; 10 lanes (nearer 16 than 4).
    ((48, 12, 10), False, "xnor_projection_s64_p16", "ssm_scan_l16"),
    # Between: 64 array bits and 16 rows, both measured, but never together.
    ((4, 16, 6), False, "xnor_projection_s16_p4", "ssm_scan_l4"),
    # The measured ends are inside the range.
    ((8, 2, 1), False, "xnor_projection_s8_p2", "ssm_scan_l1"),
    ((64, 16, 16), False, "xnor_projection_s64_p16", "ssm_scan_l16"),
    # Beside, above: 4096 array bits, 32 rows, 32 lanes.
    ((128, 32, 32), True, "xnor_projection_s64_p16", "ssm_scan_l16"),
    # Beside, below: 4 array bits, 1 row.
    ((4, 1, 1), True, "xnor_projection_s8_p2", "ssm_scan_l1"),
    # Beside in the second term only: 256 array bits were measured, 1 row was not.
    ((256, 1, 4), True, "xnor_projection_s32_p8", "ssm_scan_l4"),
    # Beside in the scan only.
    ((16, 4, 64), True, "xnor_projection_s16_p4", "ssm_scan_l16"),
    # The 2.7B design point of 1 GHz (32 x 32, 128 lanes): the array inside, the lanes far beside.
    ((32, 32, 128), True, "xnor_projection_s64_p16", "ssm_scan_l16"),
]
BRAM = {p["build"]: p["bram"] for u in ("xnor_lane", "scan_lane") for p in AREA[u]["points"]}


@pytest.mark.parametrize("point, extrapolated, near_proj, near_scan", CASES)
def test_estimate_between_and_beside_the_measured_points(point, extrapolated, near_proj,
                                                         near_scan):
    simd, pe, lanes = point
    got = area_estimate(simd, pe, lanes)
    proj = {**_by_hand("xnor_lane", {"array_bit": simd * pe, "row": pe}),
            "bram": BRAM[near_proj]}
    scan = {**_by_hand("scan_lane", {"lane": lanes}), "bram": BRAM[near_scan]}
    assert got["projection"] == proj
    assert got["scan"] == scan
    assert got["total"] == {k: proj[k] + scan[k] for k in ("lut4", "ff", "bram", "dsp")}
    assert got["extrapolated"] is extrapolated
    assert got["bram_from"] == {"projection": near_proj, "scan": near_scan}
    assert got["device"] == "ecp5-85k"


def test_estimate_between_points_written_out():
    """One point between the measured ones as plain numbers (the fit of fpga/area.json):
    100 array bits and 5 rows, 3 lanes."""
    got = area_estimate(20, 5, 3)
    # 712.17 + 8.122 * 100 + 388.407 * 5 = 3466.405; 477.5 + 7.682 * 100 + 265.585 * 5 =
    # 2573.625; 2 DSPs a row. 4688.33 + 272.857 * 3 = 5506.901; 5285.17 + 594.024 * 3 =
    # 7067.242; 9 + 4 * 3 DSPs.
    assert got["projection"] == {"lut4": 3466, "ff": 2574, "bram": 6, "dsp": 10}
    assert got["scan"] == {"lut4": 5507, "ff": 7067, "bram": 6, "dsp": 21}


# A fit of another device, with coefficients that exercise the rounding: a DSP count a hair
# above a whole number in floating point (0.7 + 3 x 0.1), a negative base (a count below 0 is
# 0), fractional DSPs a row.
TOY = {
    "device": "toy",
    "xnor_lane": {
        "points": [{"build": "p10", "array_bit": 10, "row": 2, "bram": 1},
                   {"build": "p1000", "array_bit": 1000, "row": 20, "bram": 9}],
        "fit": {"lut4": {"base": -50.0, "array_bit": 2.5, "row": 10.1},
                "ff": {"base": 5.0, "array_bit": 0.5, "row": 0.0},
                "dsp": {"base": -3.0, "array_bit": 0.0, "row": 1.25}}},
    "scan_lane": {
        "points": [{"build": "s1", "lane": 1, "bram": 2}, {"build": "s8", "lane": 8, "bram": 4}],
        "fit": {"lut4": {"base": 100.0, "lane": 33.3},
                "ff": {"base": 10.0, "lane": 7.0},
                "dsp": {"base": 0.7, "lane": 0.1}}},
}


def test_rounding_and_clamping_of_another_fit():
    # 2 array bits, 1 row: LUT4 -50 + 5 + 10.1 < 0 -> 0; FF 6; DSP -3 + 1.25 < 0 -> 0.
    # 3 lanes: LUT4 199.9 -> 200; FF 31; DSP 0.7 + 0.3 = 1 exactly -> 1; block RAMs of the
    # 8-lane build (3 is nearer 8 than 1 on a log scale).
    got = area_estimate(2, 1, 3, TOY)
    assert got["device"] == "toy" and got["extrapolated"]
    assert got["projection"] == {"lut4": 0, "ff": 6, "bram": 1, "dsp": 0}
    assert got["scan"] == {"lut4": 200, "ff": 31, "bram": 4, "dsp": 1}
    assert got["bram_from"] == {"projection": "p10", "scan": "s8"}
    # 40 array bits, 4 rows: LUT4 -50 + 100 + 40.4 -> 90; FF 25; DSP -3 + 5 = 2.
    # 6 lanes: LUT4 299.8 -> 300; FF 52; DSP 1.3 -> 2.
    got = area_estimate(10, 4, 6, TOY)
    assert got["projection"] == {"lut4": 90, "ff": 25, "bram": 1, "dsp": 2}
    assert got["scan"] == {"lut4": 300, "ff": 52, "bram": 4, "dsp": 2}
    assert got["total"] == {"lut4": 390, "ff": 77, "bram": 5, "dsp": 4}
    assert not got["extrapolated"]
    # 30 array bits, 3 rows: LUT4 -50 + 75 + 30.3 -> 55; DSP -3 + 3.75 -> 1.
    got = area_estimate(10, 3, 6, TOY)
    assert (got["projection"]["lut4"], got["projection"]["dsp"]) == (55, 1)


def test_report_area_at_a_point_that_was_not_measured(capsys):
    """``energy/report.py --area``: the 780M engine on an array of 8 x 48 and 4 lanes: the
    whole engine (fpga.area.engine_estimate at the 780M shape, its state through the port),
    the units' fits beside it by hand, the shares of the ECP5-85F's capacity."""
    from energy.report import preset_config
    from fpga.area import engine_estimate
    from model.golden.quantize import QuantSpec

    assert report_main(["--preset", "780M", "--set", "simd=48", "--set", "pe=8",
                        "--set", "lanes=4", "--format", "json", "--area", "ecp5-85k"]) == 0
    a = json.loads(capsys.readouterr().out)["area"]["780M"]
    proj = {**_by_hand("xnor_lane", {"array_bit": 384, "row": 8}),
            "bram": BRAM["xnor_projection_s32_p8"]}
    scan = {**_by_hand("scan_lane", {"lane": 4}), "bram": BRAM["ssm_scan_l4"]}
    assert (a["simd"], a["pe"], a["lanes"]) == (48, 8, 4)
    assert a["units"] == {"projection": proj, "scan": scan}
    eng = engine_estimate(preset_config("780M"), QuantSpec(), 48, 8, 4)
    total = {k: eng[k] for k in ("lut4", "ff", "bram", "dsp")}
    assert a["total"] == total and a["bram_parts"] == eng["bram_parts"]
    # 2 DSPs a column, 21 a lane, 4 a scan lane, 9 more: 9 + 96 + 168 + 16.
    assert total["dsp"] == 289
    assert a["capacity"] == ECP5_85F
    assert a["share"] == {k: total[k] / ECP5_85F[k] for k in total}
    assert a["fits"] is False and a["state_on_chip"] is False
    assert report_main(["--preset", "780M", "--set", "simd=48", "--set", "pe=8",
                        "--set", "lanes=4", "--area", "ecp5-85k"]) == 0
    b = a["bram_parts"]
    assert (f"| 780M | 8 x 48 | 4 | {total['lut4']:,} ({total['lut4'] / 83640:.0%}) | "
            f"{total['ff']:,} ({total['ff'] / 83640:.0%}) | {total['bram']:,} "
            f"({total['bram'] / 208:.0%}: {b['tables']}, {b['state']:,}, {b['buffers']}) | "
            f"289 ({289 / 156:.0%}) | no | " in capsys.readouterr().out)


def test_report_area_of_a_design_point_that_does_not_fit(capsys):
    """The 2.7B engine at the default 522 MHz (64 columns x 32 rows, 128 lanes): 9 + 2 x 64 +
    21 x 32 + 4 x 128 = 1,321 DSPs of 156, and the layer's state alone 5 x 114 block RAMs of
    208."""
    assert report_main(["--preset", "2.7B", "--format", "json", "--area", "ecp5-85k"]) == 0
    a = json.loads(capsys.readouterr().out)["area"]["2.7B"]
    assert (a["simd"], a["pe"], a["lanes"]) == (64, 32, 128)
    assert a["total"]["dsp"] == 9 + 2 * 64 + 21 * 32 + 4 * 128 == 1321
    assert a["bram_parts"]["state"] >= 570
    assert a["fits"] is False and a["extrapolated"] is True
    assert a["share"]["dsp"] == 1321 / 156
